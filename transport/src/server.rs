//! Server side: the accept loop, one task per connection, one task per
//! stream, and the dispatch of each stream's first frame to the [`Router`].
//!
//! Invariants: a refused connection (TLS failure, unknown identity, wrong
//! ALPN, too many connections) is logged at `warn` with the remote address
//! and the reason. Bad input on a stream (garbage, truncation, oversize
//! length, unknown or unexpected frame) fails that stream only, with a
//! `Failure` envelope where the stream can carry one and a stop-sending
//! code; the connection and every other stream keep working. Every task
//! ends when the endpoint shuts down.
//! This module does not dial out and does not decode payloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::endpoint::{Inner, close_code};
use crate::error::{ErrorCode, RemoteError};
use crate::frame::{FrameError, FrameReader, ReadError, encode_frame, envelope};
use crate::id::{Kind, Peer};
use crate::proto::{self, envelope::Body};
use crate::router::Request;
use crate::tls;

/// Accepts connections until shutdown; one task per connection.
pub(crate) async fn accept_loop(inner: Arc<Inner>) {
    loop {
        let incoming = tokio::select! {
            () = inner.shutdown.cancelled() => break,
            incoming = inner.quic.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        inner.tasks.spawn(serve_connection(inner.clone(), incoming));
    }
    debug!(addr = %inner.local_addr, "accept loop stopped");
}

/// Counts an incoming connection while it is served.
struct ConnectionPermit<'a>(&'a Inner);

impl<'a> ConnectionPermit<'a> {
    fn acquire(inner: &'a Inner) -> Option<Self> {
        let max = inner.config.connections_max();
        inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(inner))
    }
}

impl Drop for ConnectionPermit<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let Some(_permit) = ConnectionPermit::acquire(&inner) else {
        warn!(%remote, max = inner.config.connections_max(), "refused connection: too many connections");
        incoming.refuse();
        return;
    };
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            warn!(%remote, reason = %e, "refused connection");
            return;
        }
    };
    let limit = inner.config.connect_timeout();
    let handshake = tokio::select! {
        () = inner.shutdown.cancelled() => return,
        handshake = tokio::time::timeout(limit, connecting) => handshake,
    };
    let conn = match handshake {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            // The TLS alert text says why: unknown issuer, expired, no
            // certificate, no common application protocol...
            warn!(%remote, reason = %e, "refused connection: handshake failed");
            return;
        }
        Err(_) => {
            warn!(%remote, ?limit, "refused connection: handshake timed out");
            return;
        }
    };
    let peer = match check_client(&inner, &conn) {
        Ok(peer) => peer,
        Err(reason) => {
            warn!(%remote, %reason, "refused connection");
            conn.close(
                quinn::VarInt::from_u32(close_code::IDENTITY_REFUSED),
                reason.as_bytes(),
            );
            return;
        }
    };
    debug!(%remote, %peer, "accepted connection");
    let stream = StreamContext {
        inner: inner.clone(),
        peer,
        remote,
    };
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => {
                conn.close(quinn::VarInt::from_u32(close_code::NORMAL), b"endpoint shutting down");
                break;
            }
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    let stream = stream.clone();
                    inner.tasks.spawn(async move { stream.serve_bi(send, recv).await });
                }
                Err(e) => {
                    debug!(%remote, peer = %stream.peer, reason = %e, "connection closed");
                    break;
                }
            },
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    let stream = stream.clone();
                    inner.tasks.spawn(async move { stream.serve_uni(recv).await });
                }
                Err(e) => {
                    debug!(%remote, peer = %stream.peer, reason = %e, "connection closed");
                    break;
                }
            },
        }
    }
}

/// The identity of an established connection's peer, from its verified
/// certificate chain.
pub(crate) fn peer_identity(conn: &quinn::Connection, cluster: &str) -> Result<Peer, String> {
    let chain = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| "peer presented no certificate".to_owned())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "peer presented an empty certificate chain".to_owned())?;
    tls::peer_of_certificate(leaf, cluster)
}

/// Checks ALPN and identity of an accepted connection.
fn check_client(inner: &Inner, conn: &quinn::Connection) -> Result<Peer, String> {
    let protocol = conn
        .handshake_data()
        .and_then(|any| any.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    if protocol.as_deref() != Some(inner.config.alpn()) {
        return Err(format!(
            "wrong ALPN {:?}",
            protocol.map(|p| String::from_utf8_lossy(&p).into_owned())
        ));
    }
    peer_identity(conn, &inner.cluster)
}

/// What a stream task needs to know about its connection.
#[derive(Clone)]
struct StreamContext {
    inner: Arc<Inner>,
    peer: Peer,
    remote: SocketAddr,
}

impl StreamContext {
    fn request(&self, request: proto::Request) -> Request {
        Request {
            peer: self.peer.clone(),
            remote_addr: self.remote,
            kind: Kind(request.kind),
            payload: request.payload,
        }
    }

    /// Reads the first frame of a stream, bounded by the request timeout.
    /// On failure logs, stops the stream and returns the failure to answer.
    async fn first_frame(&self, reader: &mut FrameReader) -> Result<Body, Option<RemoteError>> {
        let limit = self.inner.config.request_timeout();
        let read = tokio::time::timeout(limit, reader.next()).await;
        let (code, message) = match read {
            Ok(Ok(Some(envelope))) => match envelope.body {
                Some(body) => return Ok(body),
                None => (
                    ErrorCode::UnknownFrame,
                    FrameError::UnknownFrame.to_string(),
                ),
            },
            Ok(Ok(None)) => (
                ErrorCode::Truncated,
                "stream ended before a request".to_owned(),
            ),
            Ok(Err(ReadError::Frame(e))) => (frame_error_code(&e), e.to_string()),
            Ok(Err(ReadError::Stream(e))) => {
                debug!(remote = %self.remote, peer = %self.peer, reason = %e, "stream aborted by peer");
                return Err(None);
            }
            Err(_) => (
                ErrorCode::Timeout,
                format!("request not received within {limit:?}"),
            ),
        };
        warn!(remote = %self.remote, peer = %self.peer, ?code, reason = %message, "bad request stream");
        reader.stop(code.var_int());
        Err(Some(RemoteError::new(code, message)))
    }

    /// Serves one bidirectional stream: a unary or streaming request.
    async fn serve_bi(self, mut send: quinn::SendStream, recv: quinn::RecvStream) {
        let shutdown = self.inner.shutdown.clone();
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = send.reset(ErrorCode::ShuttingDown.var_int());
            }
            () = self.answer_bi(&mut send, recv) => {}
        }
    }

    async fn answer_bi(&self, send: &mut quinn::SendStream, recv: quinn::RecvStream) {
        let mut reader = FrameReader::new(recv, self.inner.config.frame_bytes_max())
            .with_budget(self.inner.inbound_budget.clone());
        let body = match self.first_frame(&mut reader).await {
            Ok(body) => body,
            Err(Some(failure)) => {
                self.finish_with(send, Body::Failure(failure.to_proto()))
                    .await;
                return;
            }
            Err(None) => return,
        };
        // The request stays charged to the inbound budget until answered.
        let _charge = reader.take_permit();
        // Nothing more is expected from the client on this stream.
        reader.release();
        let Some(router) = self.inner.router.clone() else {
            let failure = RemoteError::new(ErrorCode::UnknownKind, "endpoint serves no requests");
            self.finish_with(send, Body::Failure(failure.to_proto()))
                .await;
            return;
        };
        match body {
            Body::Request(request) => {
                let reply = router.call_unary(self.request(request)).await;
                let body = match reply.and_then(|payload| self.check_reply(payload)) {
                    Ok(payload) => Body::Reply(proto::Reply { payload }),
                    Err(failure) => Body::Failure(failure.to_proto()),
                };
                self.finish_with(send, body).await;
            }
            Body::StreamRequest(request) => {
                let items = match router.call_streaming(self.request(request)).await {
                    Ok(items) => items,
                    Err(failure) => {
                        self.finish_with(send, Body::Failure(failure.to_proto()))
                            .await;
                        return;
                    }
                };
                let mut items = std::panic::AssertUnwindSafe(items).catch_unwind();
                loop {
                    let item = match items.next().await {
                        Some(Ok(Ok(payload))) => payload,
                        Some(Ok(Err(failure))) => {
                            self.finish_with(send, Body::Failure(failure.to_proto()))
                                .await;
                            return;
                        }
                        Some(Err(_panic)) => {
                            let failure =
                                RemoteError::new(ErrorCode::Internal, "stream handler panicked");
                            self.finish_with(send, Body::Failure(failure.to_proto()))
                                .await;
                            return;
                        }
                        None => break,
                    };
                    let body = match self.check_reply(item) {
                        Ok(payload) => Body::StreamItem(proto::Reply { payload }),
                        Err(failure) => {
                            self.finish_with(send, Body::Failure(failure.to_proto()))
                                .await;
                            return;
                        }
                    };
                    if !self.write(send, body).await {
                        return;
                    }
                }
                self.finish_with(send, Body::StreamEnd(proto::StreamEnd {}))
                    .await;
            }
            other => {
                let failure = RemoteError::new(
                    ErrorCode::UnexpectedFrame,
                    format!("{} cannot open a bidirectional stream", body_name(&other)),
                );
                warn!(remote = %self.remote, peer = %self.peer, reason = %failure.message, "bad request stream");
                self.finish_with(send, Body::Failure(failure.to_proto()))
                    .await;
            }
        }
    }

    /// Serves one unidirectional stream: a one-way message.
    async fn serve_uni(self, recv: quinn::RecvStream) {
        let shutdown = self.inner.shutdown.clone();
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = self.answer_uni(recv) => {}
        }
    }

    async fn answer_uni(&self, recv: quinn::RecvStream) {
        let mut reader = FrameReader::new(recv, self.inner.config.frame_bytes_max())
            .with_budget(self.inner.inbound_budget.clone());
        let body = match self.first_frame(&mut reader).await {
            Ok(body) => body,
            // Nobody to answer on a one-way stream: logged and stopped.
            Err(_) => return,
        };
        let (code, reason) = match (body, &self.inner.router) {
            (Body::OneWay(message), Some(router)) => {
                match router.call_one_way(self.request(message)) {
                    Ok(handler) => {
                        let _charge = reader.take_permit();
                        reader.release();
                        handler.await;
                        return;
                    }
                    Err(failure) => (failure.code, failure.message),
                }
            }
            (Body::OneWay(_), None) => (
                ErrorCode::UnknownKind,
                "endpoint serves no requests".to_owned(),
            ),
            (other, _) => (
                ErrorCode::UnexpectedFrame,
                format!("{} cannot open a unidirectional stream", body_name(&other)),
            ),
        };
        warn!(remote = %self.remote, peer = %self.peer, ?code, %reason, "one-way message dropped");
        reader.stop(code.var_int());
    }

    /// Enforces the payload limit on what a handler answers.
    fn check_reply(&self, payload: Bytes) -> Result<Bytes, RemoteError> {
        let max = self.inner.config.message_bytes_max();
        if payload.len() > max {
            warn!(remote = %self.remote, peer = %self.peer, len = payload.len(), max, "handler reply exceeds the message limit");
            return Err(RemoteError::new(
                ErrorCode::Internal,
                format!(
                    "reply of {} bytes exceeds the limit of {max} bytes",
                    payload.len()
                ),
            ));
        }
        Ok(payload)
    }

    /// Writes one frame; false if the stream is gone.
    async fn write(&self, send: &mut quinn::SendStream, body: Body) -> bool {
        let max = self.inner.config.frame_bytes_max();
        // Payloads were bounded by check_reply; only a failure with huge
        // application details can still be too large: send it without them.
        let frame = encode_frame(&envelope(body), max).or_else(|e| {
            warn!(remote = %self.remote, peer = %self.peer, error = %e, "answer too large, sending a failure instead");
            let failure = RemoteError::new(ErrorCode::Internal, format!("answer too large: {e}"));
            encode_frame(&envelope(Body::Failure(failure.to_proto())), max)
        });
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                warn!(error = %e, "could not encode a failure frame");
                let _ = send.reset(ErrorCode::Internal.var_int());
                return false;
            }
        };
        match send.write_chunk(frame).await {
            Ok(()) => true,
            Err(e) => {
                debug!(remote = %self.remote, peer = %self.peer, reason = %e, "reply not delivered");
                false
            }
        }
    }

    /// Writes a last frame and finishes the stream.
    async fn finish_with(&self, send: &mut quinn::SendStream, body: Body) {
        if self.write(send, body).await {
            // Fails only if the stream was already reset or finished.
            let _ = send.finish();
        }
    }
}

/// Maps a frame error to its wire code.
pub(crate) fn frame_error_code(error: &FrameError) -> ErrorCode {
    match error {
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        FrameError::Malformed(_) => ErrorCode::MalformedFrame,
        FrameError::UnknownFrame => ErrorCode::UnknownFrame,
        FrameError::Truncated { .. } => ErrorCode::Truncated,
    }
}

/// Name of a body for error messages.
pub(crate) fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Request(_) => "a request",
        Body::OneWay(_) => "a one-way message",
        Body::StreamRequest(_) => "a stream request",
        Body::Reply(_) => "a reply",
        Body::StreamItem(_) => "a stream item",
        Body::StreamEnd(_) => "a stream end",
        Body::Failure(_) => "a failure",
    }
}
