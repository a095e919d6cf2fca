//! Client side: unary requests, one-way messages and stream requests, each
//! on its own QUIC stream of a pooled connection.
//!
//! Invariants: an outgoing payload above `Config::message_bytes_max` is
//! refused before anything is sent; every call is bounded by a timeout; a
//! stream that could not even be opened (the connection died while idle)
//! is retried once on a fresh connection, because nothing was sent; a
//! call that failed after sending is never retried here (the caller knows
//! whether it is idempotent).
//! This module does not serve requests (see `server`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;

use crate::endpoint::{Endpoint, connection_error};
use crate::error::{Error, ErrorCode, RemoteError, Result};
use crate::frame::{FrameReader, ReadError, encode_frame, envelope};
use crate::id::Kind;
use crate::pool::Dest;
use crate::proto::{self, envelope::Body};
use crate::server::{body_name, frame_error_code};

impl Endpoint {
    /// Sends a request and waits for its reply, at most
    /// `Config::request_timeout`.
    ///
    /// Errors: [`Error::MessageTooLarge`] (nothing sent),
    /// [`Error::Remote`] (the handler or the peer's transport failed it),
    /// retryable [`Error::Timeout`] / [`Error::ConnectionLost`] /
    /// [`Error::Connect`], fatal [`Error::Refused`].
    pub async fn request(
        &self,
        dest: impl Into<Dest>,
        kind: Kind,
        payload: Bytes,
    ) -> Result<Bytes> {
        self.request_with_timeout(dest, kind, payload, self.inner.config.request_timeout())
            .await
    }

    /// [`request`](Self::request) with an explicit timeout.
    pub async fn request_with_timeout(
        &self,
        dest: impl Into<Dest>,
        kind: Kind,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        let dest = dest.into();
        let frame = self.request_frame(Body::Request(proto::Request {
            kind: kind.0,
            payload,
        }))?;
        let call = async {
            let (mut send, recv, addr) = self.open_bi(dest).await?;
            send_request(&mut send, frame, addr).await?;
            let mut reader = FrameReader::new(recv, self.inner.config.frame_bytes_max());
            match read_answer(&mut reader, addr).await? {
                Some(Body::Reply(reply)) => {
                    reader.release();
                    Ok(reply.payload)
                }
                Some(Body::Failure(failure)) => {
                    reader.release();
                    Err(Error::Remote(RemoteError::from_proto(failure)))
                }
                Some(other) => {
                    reader.stop(ErrorCode::UnexpectedFrame.var_int());
                    Err(Error::Protocol(format!(
                        "{} in answer to a request",
                        body_name(&other)
                    )))
                }
                None => Err(Error::Protocol("stream ended without a reply".into())),
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(Error::Timeout(timeout)))
    }

    /// Sends a one-way message. Returns once QUIC has accepted it for
    /// sending (not when the peer has handled it), at most
    /// `Config::request_timeout`.
    pub async fn send_one_way(
        &self,
        dest: impl Into<Dest>,
        kind: Kind,
        payload: Bytes,
    ) -> Result<()> {
        let dest = dest.into();
        let frame = self.request_frame(Body::OneWay(proto::Request {
            kind: kind.0,
            payload,
        }))?;
        let timeout = self.inner.config.request_timeout();
        let call = async {
            let (mut send, addr) = self.open_uni(dest).await?;
            send.write_chunk(frame)
                .await
                .map_err(|e| write_error(e, addr))?;
            // Fails only if already finished or reset.
            let _ = send.finish();
            Ok(())
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(Error::Timeout(timeout)))
    }

    /// Sends a stream request; the answer arrives as a [`ReplyStream`].
    /// Opening is bounded by `Config::request_timeout`, and so is the wait
    /// for each item.
    pub async fn request_stream(
        &self,
        dest: impl Into<Dest>,
        kind: Kind,
        payload: Bytes,
    ) -> Result<ReplyStream> {
        let dest = dest.into();
        let frame = self.request_frame(Body::StreamRequest(proto::Request {
            kind: kind.0,
            payload,
        }))?;
        let timeout = self.inner.config.request_timeout();
        let open = async {
            let (mut send, recv, addr) = self.open_bi(dest).await?;
            send_request(&mut send, frame, addr).await?;
            Ok((recv, addr))
        };
        let (recv, addr) = tokio::time::timeout(timeout, open)
            .await
            .unwrap_or(Err(Error::Timeout(timeout)))?;
        let reader = FrameReader::new(recv, self.inner.config.frame_bytes_max());
        Ok(ReplyStream::new(reader, addr, timeout))
    }

    /// Encodes a request frame after checking the payload limit.
    fn request_frame(&self, body: Body) -> Result<Bytes> {
        let max = self.inner.config.message_bytes_max();
        let len = match &body {
            Body::Request(r) | Body::OneWay(r) | Body::StreamRequest(r) => r.payload.len(),
            _ => 0,
        };
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        Ok(encode_frame(
            &envelope(body),
            self.inner.config.frame_bytes_max(),
        )?)
    }

    async fn open_bi(
        &self,
        dest: Dest,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, SocketAddr)> {
        let conn = self.connection(dest).await?;
        match conn.open_bi().await {
            Ok((send, recv)) => Ok((send, recv, conn.remote_address())),
            Err(e) => {
                self.forget(dest, &conn);
                if let error @ (Error::Refused { .. } | Error::Shutdown) =
                    connection_error(conn.remote_address(), e)
                {
                    return Err(error);
                }
                let conn = self.connection(dest).await?;
                let addr = conn.remote_address();
                let (send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| connection_error(addr, e))?;
                Ok((send, recv, addr))
            }
        }
    }

    async fn open_uni(&self, dest: Dest) -> Result<(quinn::SendStream, SocketAddr)> {
        let conn = self.connection(dest).await?;
        match conn.open_uni().await {
            Ok(send) => Ok((send, conn.remote_address())),
            Err(e) => {
                self.forget(dest, &conn);
                if let error @ (Error::Refused { .. } | Error::Shutdown) =
                    connection_error(conn.remote_address(), e)
                {
                    return Err(error);
                }
                let conn = self.connection(dest).await?;
                let addr = conn.remote_address();
                let send = conn
                    .open_uni()
                    .await
                    .map_err(|e| connection_error(addr, e))?;
                Ok((send, addr))
            }
        }
    }
}

/// Writes the request frame and finishes the send side. If the peer
/// stopped the stream, its answer (a failure) is still read by the caller.
async fn send_request(send: &mut quinn::SendStream, frame: Bytes, addr: SocketAddr) -> Result<()> {
    match send.write_chunk(frame).await {
        Ok(()) => {
            let _ = send.finish();
            Ok(())
        }
        Err(quinn::WriteError::Stopped(_)) => Ok(()),
        Err(e) => Err(write_error(e, addr)),
    }
}

/// Reads the next frame of an answer, mapping errors.
async fn read_answer(reader: &mut FrameReader, addr: SocketAddr) -> Result<Option<Body>> {
    match reader.next().await {
        Ok(Some(envelope)) => Ok(envelope.body),
        Ok(None) => Ok(None),
        Err(ReadError::Frame(e)) => {
            reader.stop(frame_error_code(&e).var_int());
            Err(Error::Frame(e))
        }
        Err(ReadError::Stream(e)) => Err(read_error(e, addr)),
    }
}

fn write_error(error: quinn::WriteError, addr: SocketAddr) -> Error {
    match error {
        quinn::WriteError::ConnectionLost(e) => connection_error(addr, e),
        quinn::WriteError::Stopped(code) => {
            Error::ConnectionLost(format!("peer stopped the stream with code {code}"))
        }
        other => Error::ConnectionLost(other.to_string()),
    }
}

fn read_error(error: quinn::ReadError, addr: SocketAddr) -> Error {
    match error {
        quinn::ReadError::ConnectionLost(e) => connection_error(addr, e),
        // Codes of ours (0 is quinn's default for an abandoned stream).
        quinn::ReadError::Reset(code) if code.into_inner() > 0 && code.into_inner() <= 255 => {
            let code = ErrorCode::from_wire(code.into_inner() as i32);
            Error::Remote(RemoteError::new(code, "peer reset the stream"))
        }
        quinn::ReadError::Reset(code) => {
            Error::ConnectionLost(format!("peer reset the stream with code {code}"))
        }
        other => Error::ConnectionLost(other.to_string()),
    }
}

/// The items of a streamed reply: `Ok` items until the server ends the
/// stream; an `Err` item (a remote failure, a timeout, a lost connection)
/// is always the last one.
///
/// ```no_run
/// # async fn demo(endpoint: shoal_transport::Endpoint) -> Result<(), shoal_transport::Error> {
/// use futures::StreamExt;
/// use shoal_transport::{Kind, NodeId};
/// let mut items = endpoint.request_stream(NodeId::new(1), Kind(3), bytes::Bytes::new()).await?;
/// while let Some(item) = items.next().await {
///     let chunk = item?;
///     # let _ = chunk;
/// }
/// # Ok(())
/// # }
/// ```
pub struct ReplyStream {
    inner: BoxStream<'static, Result<Bytes>>,
}

impl ReplyStream {
    fn new(reader: FrameReader, addr: SocketAddr, timeout: Duration) -> Self {
        let inner = futures::stream::unfold(Some(reader), move |reader| async move {
            let mut reader = reader?;
            let next = tokio::time::timeout(timeout, read_answer(&mut reader, addr))
                .await
                .unwrap_or(Err(Error::Timeout(timeout)));
            let item = match next {
                Ok(Some(Body::StreamItem(item))) => return Some((Ok(item.payload), Some(reader))),
                Ok(Some(Body::StreamEnd(_))) => {
                    reader.release();
                    return None;
                }
                Ok(Some(Body::Failure(failure))) => {
                    Err(Error::Remote(RemoteError::from_proto(failure)))
                }
                Ok(Some(other)) => {
                    reader.stop(ErrorCode::UnexpectedFrame.var_int());
                    Err(Error::Protocol(format!(
                        "{} in a streamed reply",
                        body_name(&other)
                    )))
                }
                Ok(None) => Err(Error::Protocol(
                    "streamed reply ended without an end frame".into(),
                )),
                Err(e) => Err(e),
            };
            Some((item, None))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for ReplyStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;
    use crate::id::NodeId;
    use crate::router::Router;
    use crate::tls::{Ca, Validity};

    const ECHO: Kind = Kind(1);
    const ITEMS: Kind = Kind(2);
    const NOTE: Kind = Kind(3);

    fn bind(ca: &Ca, id: u64, router: Option<Router>) -> Endpoint {
        let identity = ca
            .issue_node(NodeId::new(id), Validity::days(1))
            .expect("identity");
        let mut builder = Endpoint::builder(identity);
        if let Some(router) = router {
            builder = builder.router(router);
        }
        builder
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind")
    }

    /// Completed requests, replies, streams and one-way messages close
    /// their QUIC streams without asking the peer to stop sending: each
    /// side reads the other's end of stream (sent with its last frame).
    #[tokio::test]
    async fn completed_exchanges_send_no_stop_sending() {
        let ca = Ca::generate("test").expect("CA");
        let router = Router::new()
            .unary(ECHO, |request| async move { Ok(request.payload) })
            .streaming(ITEMS, |_request| async move {
                Ok(futures::stream::iter([
                    Ok(Bytes::from_static(b"a")),
                    Ok(Bytes::from_static(b"b")),
                ])
                .boxed())
            })
            .one_way(NOTE, |_request| async move {});
        let server = bind(&ca, 1, Some(router));
        let caller = bind(&ca, 2, None);
        let to = NodeId::new(1);
        caller.add_peer(to, server.local_addr());
        let work = async {
            for _ in 0..20 {
                let reply = caller.request(to, ECHO, Bytes::from_static(b"x")).await;
                assert_eq!(reply.expect("echo"), Bytes::from_static(b"x"));
                let items: Vec<_> = caller
                    .request_stream(to, ITEMS, Bytes::new())
                    .await
                    .expect("stream")
                    .collect()
                    .await;
                assert_eq!(items.len(), 2);
                caller
                    .send_one_way(to, NOTE, Bytes::from_static(b"n"))
                    .await
                    .expect("one-way");
            }
            // Let the last frames arrive.
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::timeout(Duration::from_secs(20), work)
            .await
            .expect("bounded");
        let conn = caller
            .inner
            .pool
            .slot(Dest::Node(to))
            .live()
            .expect("a pooled connection");
        let stats = conn.stats();
        assert_eq!(
            stats.frame_tx.stop_sending, 0,
            "the caller stopped a stream"
        );
        assert_eq!(
            stats.frame_rx.stop_sending, 0,
            "the server stopped a stream"
        );
        assert!(stats.frame_tx.stream >= 60, "{:?}", stats.frame_tx);
        caller.shutdown().await;
        server.shutdown().await;
    }
}
