//! Integration tests of `shoal-transport`: real QUIC endpoints on loopback.
//!
//! One test binary (link once); topics in numbered modules. Every test is
//! bounded by [`bounded`]; the whole binary runs in a few seconds.

#![allow(clippy::unwrap_used, missing_docs)]

mod t01_tls;
mod t02_calls;
mod t03_bad_input;
mod t04_faults;
mod t05_lifecycle;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use shoal_transport::{
    Ca, Config, Endpoint, Identity, Kind, NetFaults, NodeId, RemoteError, Router, Validity,
};

pub const ECHO: Kind = Kind(1);
pub const FAIL: Kind = Kind(2);
pub const COUNT: Kind = Kind(3);
pub const NOTE: Kind = Kind(4);
pub const SLOW: Kind = Kind(5);
pub const WHO: Kind = Kind(6);
pub const BIG: Kind = Kind(7);
pub const CHUNKS: Kind = Kind(8);

pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs a test body with a hard time limit, so a hang fails fast.
pub async fn bounded<F: Future<Output = T>, T>(body: F) -> T {
    init_logging();
    tokio::time::timeout(Duration::from_secs(20), body)
        .await
        .expect("test exceeded its 20 s bound")
}

/// Short timeouts so failures and partitions show quickly.
pub fn test_config() -> Config {
    Config::builder()
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(3))
        .keep_alive_interval(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_secs(2))
        .message_bytes_max(64 * 1024)
        .build()
        .unwrap()
}

/// What one-way handlers received: (kind, payload).
pub type Notes = Arc<Mutex<Vec<Bytes>>>;

/// A router exercising every handler shape.
pub fn test_router(notes: Notes) -> Router {
    Router::new()
        .unary(ECHO, |req| async move { Ok(req.payload) })
        .unary(FAIL, |_| async {
            Err(RemoteError::application("refused on purpose").with_details(&b"why"[..]))
        })
        .unary(
            WHO,
            |req| async move { Ok(Bytes::from(req.peer.to_string())) },
        )
        .unary(SLOW, |req| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(req.payload)
        })
        .unary(BIG, |_| async { Ok(Bytes::from(vec![0u8; 65 * 1024])) })
        .one_way(NOTE, move |req| {
            let notes = notes.clone();
            async move { notes.lock().unwrap().push(req.payload) }
        })
        .streaming(CHUNKS, |req| async move {
            // A snapshot-like transfer: payload[0] chunks of 64 KiB.
            let n = req.payload.first().copied().unwrap_or(0);
            let chunk = Bytes::from(vec![0x42u8; 64 * 1024]);
            Ok(futures::stream::iter(
                (0..n).map(move |_| Ok(chunk.clone())),
            ))
        })
        .streaming(COUNT, |req| async move {
            let n = req.payload.first().copied().unwrap_or(0);
            if n == 255 {
                return Err(RemoteError::application("no stream for you"));
            }
            let items = (0..n).map(|i| Ok(Bytes::from(vec![i])));
            // 254 ends with a failure after the items.
            let tail = (n == 254).then(|| Err(RemoteError::application("broke midway")));
            Ok(futures::stream::iter(items.chain(tail)))
        })
}

/// A serving node with the test router.
pub struct Node {
    pub endpoint: Endpoint,
    pub notes: Notes,
}

pub fn node(ca: &Ca, id: u64, faults: Option<&NetFaults>) -> Node {
    let identity = ca.issue_node(NodeId::new(id), Validity::days(1)).unwrap();
    node_with(identity, test_config(), faults)
}

pub fn node_with(identity: Identity, config: Config, faults: Option<&NetFaults>) -> Node {
    let notes = Notes::default();
    let mut builder = Endpoint::builder(identity)
        .config(config)
        .router(test_router(notes.clone()));
    if let Some(faults) = faults {
        builder = builder.faults(faults.clone());
    }
    Node {
        endpoint: builder.bind(localhost()).unwrap(),
        notes,
    }
}

/// A client-only endpoint for `identity`.
pub fn client(identity: Identity) -> Endpoint {
    Endpoint::builder(identity)
        .config(test_config())
        .bind(localhost())
        .unwrap()
}

/// Collects a stream request's items.
pub async fn collect(
    endpoint: &Endpoint,
    dest: impl Into<shoal_transport::Dest>,
    n: u8,
) -> Vec<Result<Bytes, shoal_transport::Error>> {
    endpoint
        .request_stream(dest, COUNT, Bytes::from(vec![n]))
        .await
        .unwrap()
        .collect()
        .await
}

/// Captured log output of the whole test binary.
fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(Default::default)
}

#[derive(Clone)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "shoal_transport=debug".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Whether some captured log line contains every one of `needles`.
pub fn logged(needles: &[&str]) -> bool {
    let buffer = log_buffer().lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&buffer)
        .lines()
        .any(|line| needles.iter().all(|n| line.contains(n)))
}

/// Waits until `logged(needles)` (log lines can trail the event a little).
pub async fn wait_logged(needles: &[&str]) {
    for _ in 0..100 {
        if logged(needles) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|p| p.into_inner()))
        .into_owned();
    panic!("no log line with {needles:?}; log:\n{log}");
}
