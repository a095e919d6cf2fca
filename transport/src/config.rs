//! Endpoint configuration: every limit and timeout of the transport.
//!
//! Invariant: a [`Config`] can only be obtained from [`Config::default`] or
//! [`ConfigBuilder::build`], which validates it, so code holding a `Config`
//! never re-checks it (no zero limits, keep-alive below the idle timeout,
//! windows that can carry the largest frame eventually).
//! This module does not touch quinn objects except to translate the limits
//! into a `quinn::TransportConfig`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame;

/// Default ALPN protocol id: the wire protocol version.
pub const ALPN: &[u8] = b"shoal/1";

/// Validated transport configuration.
///
/// ```
/// use std::time::Duration;
/// use shoal_transport::Config;
/// let config = Config::builder()
///     .message_bytes_max(1 << 20)
///     .request_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.message_bytes_max(), 1 << 20);
/// assert!(Config::builder().streams_max(0).build().is_err());
/// # Ok::<(), shoal_transport::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    alpn: Vec<u8>,
    message_bytes_max: usize,
    streams_max: u32,
    uni_streams_max: u32,
    connections_max: usize,
    inbound_bytes_max: usize,
    stream_window_bytes: u32,
    connection_window_bytes: u32,
    send_window_bytes: u64,
    idle_timeout: Duration,
    keep_alive_interval: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            alpn: ALPN.to_vec(),
            message_bytes_max: 16 * 1024 * 1024,
            streams_max: 1024,
            uni_streams_max: 1024,
            connections_max: 1024,
            inbound_bytes_max: 256 * 1024 * 1024,
            stream_window_bytes: 4 * 1024 * 1024,
            connection_window_bytes: 32 * 1024 * 1024,
            send_window_bytes: 32 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// ALPN protocol id offered and required (default `shoal/1`).
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    /// Largest payload of one message, request, reply or stream item
    /// (default 16 MiB). Larger outgoing messages fail locally with
    /// [`Error::MessageTooLarge`]; larger incoming frames close that stream.
    pub fn message_bytes_max(&self) -> usize {
        self.message_bytes_max
    }

    /// Largest frame (payload limit plus envelope overhead).
    pub fn frame_bytes_max(&self) -> usize {
        frame::frame_bytes_max(self.message_bytes_max)
    }

    /// Concurrent bidirectional streams (requests in flight) a peer may
    /// open on one connection (default 1024). Further requests wait.
    pub fn streams_max(&self) -> u32 {
        self.streams_max
    }

    /// Concurrent one-way streams a peer may open on one connection
    /// (default 1024).
    pub fn uni_streams_max(&self) -> u32 {
        self.uni_streams_max
    }

    /// Incoming connections served at once (default 1024); more are refused.
    pub fn connections_max(&self) -> usize {
        self.connections_max
    }

    /// Bytes of incoming requests buffered or being handled at once, all
    /// connections together (default 256 MiB). Each request frame is
    /// charged its size from the moment its length prefix arrives until its
    /// handler finishes; when the budget is spent, reading pauses and QUIC
    /// flow control holds the senders back. At least one whole frame
    /// (`frame_bytes_max` plus the 4-byte prefix).
    pub fn inbound_bytes_max(&self) -> usize {
        self.inbound_bytes_max
    }

    /// Bytes a peer may send on one stream before we read them (flow
    /// control; default 4 MiB).
    pub fn stream_window_bytes(&self) -> u32 {
        self.stream_window_bytes
    }

    /// Bytes a peer may send on one connection, all streams together,
    /// before we read them (default 32 MiB).
    pub fn connection_window_bytes(&self) -> u32 {
        self.connection_window_bytes
    }

    /// Bytes we buffer for sending per connection (default 32 MiB).
    pub fn send_window_bytes(&self) -> u64 {
        self.send_window_bytes
    }

    /// A connection with no traffic for this long is closed (default 30 s).
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Keep-alive ping interval on idle connections (default 5 s).
    pub fn keep_alive_interval(&self) -> Duration {
        self.keep_alive_interval
    }

    /// Limit on establishing a connection, handshake included (default 5 s).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Default limit on one request, from opening the stream to the reply;
    /// for streamed replies, on the wait for each item. The server also uses
    /// it as the limit for receiving a whole request (default 30 s).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Limit on waiting for tasks and connections to finish at shutdown
    /// (default 5 s).
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.alpn.is_empty() || self.alpn.len() > 255 {
            return fail("alpn must be 1 to 255 bytes".into());
        }
        // The frame length travels as a u32.
        let frame_limit = u32::MAX as usize - frame::ENVELOPE_OVERHEAD_BYTES;
        if self.message_bytes_max == 0 || self.message_bytes_max > frame_limit {
            return fail(format!(
                "message_bytes_max must be 1 to {frame_limit}, got {}",
                self.message_bytes_max
            ));
        }
        if self.streams_max == 0 || self.uni_streams_max == 0 {
            return fail("streams_max and uni_streams_max must be at least 1".into());
        }
        if self.connections_max == 0 {
            return fail("connections_max must be at least 1".into());
        }
        let frame_with_prefix = self.frame_bytes_max() + frame::FRAME_PREFIX_BYTES;
        if self.inbound_bytes_max < frame_with_prefix
            || self.inbound_bytes_max > tokio::sync::Semaphore::MAX_PERMITS
        {
            return fail(format!(
                "inbound_bytes_max must hold at least one whole frame ({frame_with_prefix} bytes)"
            ));
        }
        const WINDOW_MIN: u32 = 16 * 1024;
        if self.stream_window_bytes < WINDOW_MIN
            || self.connection_window_bytes < self.stream_window_bytes
            || self.send_window_bytes < u64::from(WINDOW_MIN)
        {
            return fail(format!(
                "windows must be at least {WINDOW_MIN} bytes and \
                 connection_window_bytes >= stream_window_bytes"
            ));
        }
        for (name, value) in [
            ("idle_timeout", self.idle_timeout),
            ("keep_alive_interval", self.keep_alive_interval),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if value.is_zero() {
                return fail(format!("{name} must be positive"));
            }
        }
        if quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return fail("idle_timeout is too large".into());
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return fail("keep_alive_interval must be shorter than idle_timeout".into());
        }
        Ok(())
    }

    /// The quinn transport parameters for these limits.
    pub(crate) fn transport_config(&self) -> Arc<quinn::TransportConfig> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.streams_max))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(self.uni_streams_max))
            .stream_receive_window(quinn::VarInt::from_u32(self.stream_window_bytes))
            .receive_window(quinn::VarInt::from_u32(self.connection_window_bytes))
            .send_window(self.send_window_bytes)
            // Validated above.
            .max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok())
            .keep_alive_interval(Some(self.keep_alive_interval))
            // Unreliable datagrams are not part of the protocol.
            .datagram_receive_buffer_size(None);
        Arc::new(transport)
    }
}

/// Builder for [`Config`]; [`build`](ConfigBuilder::build) validates.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl ConfigBuilder {
    setters! {
        /// See [`Config::message_bytes_max`].
        message_bytes_max: usize;
        /// See [`Config::streams_max`].
        streams_max: u32;
        /// See [`Config::uni_streams_max`].
        uni_streams_max: u32;
        /// See [`Config::connections_max`].
        connections_max: usize;
        /// See [`Config::inbound_bytes_max`].
        inbound_bytes_max: usize;
        /// See [`Config::stream_window_bytes`].
        stream_window_bytes: u32;
        /// See [`Config::connection_window_bytes`].
        connection_window_bytes: u32;
        /// See [`Config::send_window_bytes`].
        send_window_bytes: u64;
        /// See [`Config::idle_timeout`].
        idle_timeout: Duration;
        /// See [`Config::keep_alive_interval`].
        keep_alive_interval: Duration;
        /// See [`Config::connect_timeout`].
        connect_timeout: Duration;
        /// See [`Config::request_timeout`].
        request_timeout: Duration;
        /// See [`Config::shutdown_timeout`].
        shutdown_timeout: Duration;
    }

    /// See [`Config::alpn`].
    pub fn alpn(mut self, alpn: impl Into<Vec<u8>>) -> Self {
        self.config.alpn = alpn.into();
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().message_bytes_max(), 16 * 1024 * 1024);
    }

    #[test]
    fn invalid_values_are_refused() {
        let zero = Duration::ZERO;
        let cases = [
            Config::builder().message_bytes_max(0),
            Config::builder().message_bytes_max(usize::MAX),
            Config::builder().streams_max(0),
            Config::builder().uni_streams_max(0),
            Config::builder().connections_max(0),
            Config::builder().inbound_bytes_max(1024),
            Config::builder().stream_window_bytes(1),
            Config::builder().connection_window_bytes(1 << 20),
            Config::builder().send_window_bytes(0),
            Config::builder().idle_timeout(zero),
            Config::builder().connect_timeout(zero),
            Config::builder().request_timeout(zero),
            Config::builder().shutdown_timeout(zero),
            Config::builder().keep_alive_interval(Duration::from_secs(60)),
            Config::builder().alpn(Vec::new()),
        ];
        for case in cases {
            let debug = format!("{case:?}");
            assert!(
                matches!(case.build(), Err(Error::Config(_))),
                "accepted {debug}"
            );
        }
    }
}
