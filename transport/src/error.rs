//! The crate's one error type, [`Error`], and the failure carried back in a
//! reply envelope, [`RemoteError`] with its [`ErrorCode`].
//!
//! Invariant: every variant says whether retrying can help
//! ([`Error::is_retryable`]); configuration and certificate problems never
//! are, a lost connection or a timeout always is.
//! This module does not log; callers decide what is worth a log line.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::frame::FrameError;
use crate::id::NodeId;
use crate::proto;

/// Longest failure message put on the wire; longer ones are cut.
pub(crate) const FAILURE_MESSAGE_BYTES_MAX: usize = 1024;

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid. Fatal.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// A certificate or key could not be created, parsed or used. Fatal.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// A local I/O operation failed (socket bind, certificate files).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No address is known for this node; see `Endpoint::add_peer`.
    #[error("no address known for {0}")]
    UnknownNode(NodeId),
    /// An outgoing message exceeds `Config::message_bytes_max`; nothing was
    /// sent and the connection is untouched.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Payload length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The peer could not be reached (timeout, I/O). Retryable.
    #[error("could not connect to {addr}: {reason}")]
    Connect {
        /// Address dialed.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The TLS handshake or identity check failed: wrong CA, expired
    /// certificate, wrong node, wrong ALPN. Not retryable without a fix.
    #[error("connection to {addr} refused: {reason}")]
    Refused {
        /// Address dialed.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection or stream broke while a request was in flight; the
    /// request may or may not have been handled. Retryable.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// No answer within the deadline; the request may or may not have been
    /// handled. Retryable.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A frame could not be decoded or exceeded the limit.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a well-formed frame that makes no sense here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The remote side answered with a failure (application error, unknown
    /// kind, rejected frame...).
    #[error("remote failure: {0}")]
    Remote(RemoteError),
    /// The endpoint was shut down.
    #[error("endpoint is shut down")]
    Shutdown,
}

impl Error {
    /// Whether the same call may succeed if retried later (possibly on a new
    /// connection). Callers must still consider idempotency: a lost
    /// connection or timeout says nothing about whether the peer acted.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::ConnectionLost(_) | Error::Timeout(_) => true,
            Error::Remote(remote) => {
                matches!(remote.code, ErrorCode::ShuttingDown | ErrorCode::Timeout)
            }
            _ => false,
        }
    }

    /// A copy of a dial failure, handed to the callers that waited on that
    /// dial; `None` for errors a dial does not produce.
    pub(crate) fn replay(&self) -> Option<Error> {
        Some(match self {
            Error::Connect { addr, reason } => Error::Connect {
                addr: *addr,
                reason: reason.clone(),
            },
            Error::Refused { addr, reason } => Error::Refused {
                addr: *addr,
                reason: reason.clone(),
            },
            Error::UnknownNode(node) => Error::UnknownNode(*node),
            Error::Shutdown => Error::Shutdown,
            _ => return None,
        })
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Class of a remote failure; mirrors the wire enum `ErrorCode`. The same
/// numbers are used as QUIC stream reset / stop-sending codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The application handler returned an error.
    Application,
    /// No handler for this kind and request shape.
    UnknownKind,
    /// The frame could not be decoded.
    MalformedFrame,
    /// The frame exceeded the receiver's size limit.
    FrameTooLarge,
    /// The frame had no body the receiver knows.
    UnknownFrame,
    /// A frame arrived where another was expected.
    UnexpectedFrame,
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The receiver did not get the whole request in time.
    Timeout,
    /// The receiver is shutting down.
    ShuttingDown,
    /// Handler panic or internal error, including unset or unknown codes.
    Internal,
}

impl ErrorCode {
    /// Wire value (also the QUIC stream error code).
    pub fn as_u32(self) -> u32 {
        self.to_proto() as u32
    }

    pub(crate) fn to_proto(self) -> proto::ErrorCode {
        use proto::ErrorCode as P;
        match self {
            ErrorCode::Application => P::Application,
            ErrorCode::UnknownKind => P::UnknownKind,
            ErrorCode::MalformedFrame => P::MalformedFrame,
            ErrorCode::FrameTooLarge => P::FrameTooLarge,
            ErrorCode::UnknownFrame => P::UnknownFrame,
            ErrorCode::UnexpectedFrame => P::UnexpectedFrame,
            ErrorCode::Truncated => P::Truncated,
            ErrorCode::Timeout => P::Timeout,
            ErrorCode::ShuttingDown => P::ShuttingDown,
            ErrorCode::Internal => P::Internal,
        }
    }

    /// Decodes a wire value; unknown values (a newer peer) map to `Internal`.
    pub(crate) fn from_wire(value: i32) -> Self {
        use proto::ErrorCode as P;
        match P::try_from(value).unwrap_or(P::Unspecified) {
            P::Application => ErrorCode::Application,
            P::UnknownKind => ErrorCode::UnknownKind,
            P::MalformedFrame => ErrorCode::MalformedFrame,
            P::FrameTooLarge => ErrorCode::FrameTooLarge,
            P::UnknownFrame => ErrorCode::UnknownFrame,
            P::UnexpectedFrame => ErrorCode::UnexpectedFrame,
            P::Truncated => ErrorCode::Truncated,
            P::Timeout => ErrorCode::Timeout,
            P::ShuttingDown => ErrorCode::ShuttingDown,
            P::Unspecified | P::Internal => ErrorCode::Internal,
        }
    }

    pub(crate) fn var_int(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self.as_u32())
    }
}

/// A failure answered by the remote side, carried in a `Failure` envelope.
///
/// Handlers return it to fail a request; callers receive it as
/// [`Error::Remote`].
///
/// ```
/// use shoal_transport::{ErrorCode, RemoteError};
/// let e = RemoteError::application("no such entity").with_details(b"e-17".as_slice());
/// assert_eq!(e.code, ErrorCode::Application);
/// assert_eq!(&e.details[..], b"e-17");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteError {
    /// Class of the failure.
    pub code: ErrorCode,
    /// Human-readable description (at most 1 KiB on the wire).
    pub message: String,
    /// Application-defined detail, opaque to the transport.
    pub details: Bytes,
}

impl RemoteError {
    /// A failure of class `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Bytes::new(),
        }
    }

    /// An application failure (the usual thing for a handler to return).
    pub fn application(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Application, message)
    }

    /// Attaches application-defined detail bytes.
    pub fn with_details(mut self, details: impl Into<Bytes>) -> Self {
        self.details = details.into();
        self
    }

    pub(crate) fn to_proto(&self) -> proto::Failure {
        proto::Failure {
            code: self.code.to_proto() as i32,
            message: truncate_utf8(&self.message, FAILURE_MESSAGE_BYTES_MAX).to_owned(),
            details: self.details.clone(),
        }
    }

    pub(crate) fn from_proto(failure: proto::Failure) -> Self {
        Self {
            code: ErrorCode::from_wire(failure.code),
            message: failure.message,
            details: failure.details,
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for RemoteError {}

/// Longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_maps_to_internal() {
        for code in [
            ErrorCode::Application,
            ErrorCode::UnknownKind,
            ErrorCode::MalformedFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::UnknownFrame,
            ErrorCode::UnexpectedFrame,
            ErrorCode::Truncated,
            ErrorCode::Timeout,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_wire(code.as_u32() as i32), code);
        }
        assert_eq!(ErrorCode::from_wire(0), ErrorCode::Internal);
        assert_eq!(ErrorCode::from_wire(9999), ErrorCode::Internal);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let message = "é".repeat(FAILURE_MESSAGE_BYTES_MAX);
        let wire = RemoteError::application(message).to_proto();
        assert!(wire.message.len() <= FAILURE_MESSAGE_BYTES_MAX);
        assert!(wire.message.len() >= FAILURE_MESSAGE_BYTES_MAX - 1);
    }

    #[test]
    fn retryable_split() {
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(Error::ConnectionLost("x".into()).is_retryable());
        assert!(!Error::Config("x".into()).is_retryable());
        assert!(!Error::MessageTooLarge { len: 2, max: 1 }.is_retryable());
        assert!(!Error::Remote(RemoteError::application("x")).is_retryable());
        assert!(Error::Remote(RemoteError::new(ErrorCode::ShuttingDown, "bye")).is_retryable());
    }
}
