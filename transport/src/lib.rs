//! Shoal transport: every byte between Shoal nodes, and between the CLI and
//! a node, goes over QUIC (quinn) with mutual TLS 1.3 (rustls, ring).
//!
//! # Layout
//! * [`id`]: [`NodeId`], [`Peer`] (identity read from a certificate) and the
//!   route discriminator [`Kind`].
//! * [`tls`]: the cluster CA ([`Ca`]), node and client [`Identity`]s, the
//!   rustls configurations, [`dev_bootstrap`].
//! * [`config`]: the validated [`Config`] (limits, timeouts, ALPN).
//! * [`frame`]: the pure frame codec (`u32` length prefix + protobuf
//!   [`proto::Envelope`]), fuzzed.
//! * [`router`]: the server-side [`Router`] of handlers by [`Kind`].
//! * [`endpoint`]: the [`Endpoint`] handle, its builder and lifecycle;
//!   `call` (client paths: [`Endpoint::request`],
//!   [`Endpoint::send_one_way`], [`Endpoint::request_stream`]) and `server`
//!   (accept loop, per-stream dispatch) are its two halves.
//! * `pool`: address book and one reusable connection per destination.
//! * [`faults`]: [`NetFaults`], UDP-level fault injection for tests.
//!
//! # Wire format
//! * QUIC v1, TLS 1.3 only, ALPN `shoal/1` ([`ALPN`]; configurable), a
//!   certificate required on both sides and verified against the cluster
//!   CA only.
//! * Each request travels on its own QUIC stream, which is what correlates
//!   it with its answer. Unary and streaming requests use a bidirectional
//!   stream, one-way messages a unidirectional one.
//! * Each stream carries frames: `u32` big-endian length, then one
//!   protobuf `shoal.transport.v1.Envelope` whose `body` is one of
//!   `request`, `one_way`, `stream_request`, `reply`, `stream_item`,
//!   `stream_end`, `failure`.
//! * Unary: `request` → `reply` | `failure`. Streaming: `stream_request` →
//!   `stream_item`* then `stream_end` | `failure`. One-way: `one_way`, no
//!   answer. The sender finishes its side after its request frame.
//! * Failures carry an [`ErrorCode`]; the same numbers are the QUIC stream
//!   stop/reset codes. Connection close codes are in
//!   [`endpoint::close_code`].
//!
//! # What this crate does not do
//! It knows nothing about entities, shards or Raft: payloads are opaque
//! bytes routed by a numeric [`Kind`]. It does not retry calls that may
//! have reached the peer, and does not keep messages across restarts.
//!
//! # Example
//! ```
//! use bytes::Bytes;
//! use futures::StreamExt;
//! use shoal_transport::{Ca, Endpoint, Kind, NodeId, RemoteError, Router, Validity};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), shoal_transport::Error> {
//! const GREET: Kind = Kind(1);
//! const COUNT: Kind = Kind(2);
//! let ca = Ca::generate("example")?;
//! let router = Router::new()
//!     .unary(GREET, |req| async move {
//!         Ok::<_, RemoteError>(Bytes::from(format!("hello {}", req.peer)))
//!     })
//!     .streaming(COUNT, |_req| async {
//!         Ok::<_, RemoteError>(futures::stream::iter((0..3u8).map(|i| Ok(Bytes::from(vec![i])))))
//!     });
//! let server = Endpoint::builder(ca.issue_node(NodeId::new(1), Validity::days(1))?)
//!     .router(router)
//!     .bind("127.0.0.1:0".parse().unwrap())?;
//!
//! // A CLI-style client dials by address and learns which node answered.
//! let cli = Endpoint::builder(ca.issue_client("ops", Validity::days(1))?)
//!     .bind("127.0.0.1:0".parse().unwrap())?;
//! let reply = cli.request(server.local_addr(), GREET, Bytes::new()).await?;
//! assert_eq!(&reply[..], b"hello client-ops");
//! let items: Vec<_> = cli.request_stream(server.local_addr(), COUNT, Bytes::new()).await?
//!     .collect().await;
//! assert_eq!(items.len(), 3);
//!
//! cli.shutdown().await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod call;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod faults;
pub mod frame;
pub mod id;
mod pool;
pub mod router;
mod server;
pub mod tls;

/// Generated protobuf types of the wire envelope
/// (`proto/shoal/transport/v1/envelope.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/shoal.transport.v1.rs"));
}

pub use call::ReplyStream;
pub use config::{ALPN, Config, ConfigBuilder};
pub use endpoint::{Endpoint, EndpointBuilder};
pub use error::{Error, ErrorCode, RemoteError, Result};
pub use faults::{LinkFault, NetFaults};
pub use frame::FrameError;
pub use id::{Kind, NodeId, Peer};
pub use pool::Dest;
pub use router::{ReplyItems, Request, Router};
pub use tls::{Ca, Identity, Validity, dev_bootstrap};
