//! Framing: length-prefixed protobuf envelopes on a QUIC stream.
//!
//! Layout of one frame: `u32` big-endian length `n`, then `n` bytes of one
//! encoded [`Envelope`]. [`decode_frame`] and [`encode_frame`] are pure
//! functions on bytes (this is what the fuzz target drives); `FrameReader`
//! is the thin async shell that feeds a stream's chunks to the decoder.
//!
//! Invariants: a length above the limit is rejected as soon as the 4-byte
//! prefix is seen, before any allocation for the body; a frame that decodes
//! but carries no known body is an error ([`FrameError::UnknownFrame`]),
//! never a panic. Buffers grow only as bytes actually arrive, so a peer
//! that announces a large frame costs memory only for what QUIC flow
//! control lets it send.
//! This module does not interpret frames (see `call` and `server`).

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::FutureExt as _;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::proto::{Envelope, envelope::Body};

/// Bytes of the length prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Room for everything in an envelope except the payload (tags, lengths,
/// kind, a failure message). The frame limit is the payload limit plus this.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 4096;

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix exceeds the receiver's (or sender's) limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced or encoded length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The body is not a valid protobuf `Envelope`.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The envelope has no body this endpoint knows (garbage, or a newer
    /// peer).
    #[error("envelope carries no known message kind")]
    UnknownFrame,
    /// The stream ended in the middle of a frame.
    #[error("stream ended after {received} bytes of a frame")]
    Truncated {
        /// Bytes of the partial frame (prefix included).
        received: usize,
    },
}

/// The frame length limit for a payload limit of `message_bytes_max`.
pub fn frame_bytes_max(message_bytes_max: usize) -> usize {
    message_bytes_max.saturating_add(ENVELOPE_OVERHEAD_BYTES)
}

/// Encodes `envelope` as one frame.
///
/// Errors with [`FrameError::TooLarge`] if the encoded envelope is longer
/// than `frame_bytes_max`; nothing is allocated in that case.
///
/// ```
/// use shoal_transport::frame::{decode_frame, encode_frame};
/// use shoal_transport::proto::{Envelope, Reply, envelope::Body};
/// let envelope = Envelope { body: Some(Body::Reply(Reply { payload: "hi".into() })) };
/// let frame = encode_frame(&envelope, 1024)?;
/// let mut buf = bytes::BytesMut::from(&frame[..]);
/// assert_eq!(decode_frame(&mut buf, 1024)?, Some(envelope));
/// assert!(buf.is_empty());
/// # Ok::<(), shoal_transport::frame::FrameError>(())
/// ```
pub fn encode_frame(envelope: &Envelope, frame_bytes_max: usize) -> Result<Bytes, FrameError> {
    let len = envelope.encoded_len();
    if len > frame_bytes_max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    let mut buf = BytesMut::with_capacity(FRAME_PREFIX_BYTES + len);
    buf.put_u32(len as u32);
    // A `BytesMut` grows on demand, so this cannot run out of room.
    envelope
        .encode(&mut buf)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    debug_assert_eq!(buf.len(), FRAME_PREFIX_BYTES + len);
    Ok(buf.freeze())
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (nothing is
/// consumed), `Ok(Some(envelope))` after consuming exactly one frame, or an
/// error for an oversize length, undecodable bytes, or an envelope without a
/// known body. After an error the stream is unusable: framing is lost.
pub fn decode_frame(
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Envelope>, FrameError> {
    let Some(prefix) = buf.get(..FRAME_PREFIX_BYTES) else {
        return Ok(None);
    };
    let mut prefix_bytes = [0u8; FRAME_PREFIX_BYTES];
    prefix_bytes.copy_from_slice(prefix);
    let len = u32::from_be_bytes(prefix_bytes) as usize;
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    if buf.len() - FRAME_PREFIX_BYTES < len {
        return Ok(None);
    }
    buf.advance(FRAME_PREFIX_BYTES);
    // `freeze` keeps the payload fields as zero-copy slices of this frame.
    let body = buf.split_to(len).freeze();
    let envelope = Envelope::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if envelope.body.is_none() {
        return Err(FrameError::UnknownFrame);
    }
    Ok(Some(envelope))
}

/// Shorthand for a frame with the given body.
pub(crate) fn envelope(body: Body) -> Envelope {
    Envelope { body: Some(body) }
}

/// Why reading a frame from a stream failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The bytes were bad.
    Frame(FrameError),
    /// The stream or connection failed.
    Stream(quinn::ReadError),
}

/// Reads frames from one QUIC receive stream.
pub(crate) struct FrameReader {
    stream: quinn::RecvStream,
    buf: BytesMut,
    frame_bytes_max: usize,
    /// Memory budget shared by the endpoint's incoming requests, if any.
    budget: Option<Arc<Semaphore>>,
    /// This reader's share of the budget: the current frame's size.
    permit: Option<OwnedSemaphorePermit>,
}

impl FrameReader {
    pub(crate) fn new(stream: quinn::RecvStream, frame_bytes_max: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            frame_bytes_max,
            budget: None,
            permit: None,
        }
    }

    /// Charges each frame to `budget` (one permit per byte) before its body
    /// is buffered; waits while the budget is exhausted, which stops reading
    /// the stream and so, through QUIC flow control, the sender.
    pub(crate) fn with_budget(mut self, budget: Arc<Semaphore>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Hands over the budget held for the last frame (to keep it while the
    /// frame is being handled).
    pub(crate) fn take_permit(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permit.take()
    }

    /// Once a frame's length is known, reserves that many bytes of budget.
    async fn reserve(&mut self) {
        let (Some(budget), None) = (&self.budget, &self.permit) else {
            return;
        };
        let Some(prefix) = self.buf.get(..FRAME_PREFIX_BYTES) else {
            return;
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len as usize > self.frame_bytes_max {
            return; // The decoder refuses it without buffering anything.
        }
        let permits = len.saturating_add(FRAME_PREFIX_BYTES as u32);
        let budget = budget.clone();
        let permit = match budget.clone().try_acquire_many_owned(permits) {
            Ok(permit) => Ok(permit),
            Err(_) => budget.acquire_many_owned(permits).await,
        };
        // The semaphore is never closed.
        self.permit = permit.ok();
    }

    /// The next frame, or `None` at a clean end of stream between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Envelope>, ReadError> {
        loop {
            self.reserve().await;
            if let Some(envelope) =
                decode_frame(&mut self.buf, self.frame_bytes_max).map_err(ReadError::Frame)?
            {
                return Ok(Some(envelope));
            }
            match self.stream.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => {
                    return Err(ReadError::Frame(FrameError::Truncated {
                        received: self.buf.len(),
                    }));
                }
                Err(e) => return Err(ReadError::Stream(e)),
            }
        }
    }

    /// Lets the stream go once its last expected frame has been read. If
    /// the peer's end of stream has already arrived (it is sent with the
    /// last frame), reading it now lets the stream close quietly; otherwise
    /// (or if more bytes came) dropping the stream asks the peer to stop
    /// sending, as any unread stream does. The quiet close saves a
    /// STOP_SENDING frame — often a packet of its own, and its
    /// acknowledgement — on every request and every reply.
    pub(crate) fn release(mut self) {
        if self.buf.is_empty() {
            let _ = self.stream.read_chunk(usize::MAX, true).now_or_never();
        }
    }

    /// Asks the peer to stop sending on this stream (after a bad frame).
    pub(crate) fn stop(&mut self, code: quinn::VarInt) {
        // Fails only if the stream is already finished or stopped.
        let _ = self.stream.stop(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Failure, Reply, Request, StreamEnd};

    fn sample(body: Body) -> Envelope {
        envelope(body)
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = [
            Body::Request(Request {
                kind: 7,
                payload: Bytes::from_static(b"req"),
            }),
            Body::OneWay(Request {
                kind: u32::MAX,
                payload: Bytes::new(),
            }),
            Body::StreamRequest(Request {
                kind: 0,
                payload: Bytes::from(vec![1u8; 1000]),
            }),
            Body::Reply(Reply {
                payload: Bytes::from_static(b"rep"),
            }),
            Body::StreamItem(Reply {
                payload: Bytes::new(),
            }),
            Body::StreamEnd(StreamEnd {}),
            Body::Failure(Failure {
                code: 3,
                message: "bad".into(),
                details: Bytes::from_static(b"d"),
            }),
        ];
        let mut buf = BytesMut::new();
        for body in &bodies {
            let frame = encode_frame(&sample(body.clone()), 4096).unwrap();
            buf.extend_from_slice(&frame);
        }
        for body in bodies {
            assert_eq!(decode_frame(&mut buf, 4096).unwrap(), Some(sample(body)));
        }
        assert!(buf.is_empty());
        assert_eq!(decode_frame(&mut buf, 4096).unwrap(), None);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let frame = encode_frame(
            &sample(Body::Reply(Reply {
                payload: Bytes::from_static(b"hello"),
            })),
            64,
        )
        .unwrap();
        let mut buf = BytesMut::new();
        for (i, byte) in frame.iter().enumerate() {
            assert_eq!(decode_frame(&mut buf, 64).unwrap(), None, "at byte {i}");
            buf.put_u8(*byte);
        }
        assert!(decode_frame(&mut buf, 64).unwrap().is_some());
    }

    #[test]
    fn oversize_prefix_is_rejected_before_the_body_arrives() {
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            decode_frame(&mut buf, 1 << 20),
            Err(FrameError::TooLarge {
                len: 0x7fff_ffff,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn oversize_envelope_is_refused_by_the_encoder() {
        let big = sample(Body::Request(Request {
            kind: 1,
            payload: Bytes::from(vec![0u8; 100]),
        }));
        assert!(matches!(
            encode_frame(&big, 50),
            Err(FrameError::TooLarge { max: 50, .. })
        ));
    }

    #[test]
    fn garbage_and_empty_bodies_are_errors() {
        // Length 3, then bytes that are not a valid protobuf message.
        let mut garbage = BytesMut::from(&[0, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut garbage, 64),
            Err(FrameError::Malformed(_))
        ));
        // A zero-length envelope decodes to "no body".
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut empty, 64), Err(FrameError::UnknownFrame));
        // Field 99 (unknown to this version) is skipped, leaving no body.
        let mut unknown = BytesMut::from(&[0, 0, 0, 3, 0x98, 0x06, 0x01][..]);
        assert_eq!(
            decode_frame(&mut unknown, 64),
            Err(FrameError::UnknownFrame)
        );
    }
}
