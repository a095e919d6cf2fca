//! The [`Endpoint`]: one UDP socket, one QUIC endpoint, an accept loop
//! task serving a [`Router`], and a pool of outgoing connections.
//!
//! Shape: [`EndpointBuilder`] (identity, validated [`Config`], router,
//! optional [`NetFaults`]) → `bind` spawns the accept loop → the returned
//! [`Endpoint`] is a cheap-to-clone handle. [`Endpoint::shutdown`] signals
//! every task, closes every connection, then waits for the tasks (bounded
//! by `Config::shutdown_timeout`). Dropping the last handle signals too.
//!
//! Invariants: every task spawned by the endpoint is tracked and ends after
//! shutdown; a connection is only used after the peer's certificate chain
//! was verified against the cluster CA and its identity read from it; a
//! node dialed by id must present that id's certificate.
//! This module does not interpret payloads; the request paths live in
//! `call` (client side) and `server` (server side).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::faults::{FaultySocket, NetFaults};
use crate::id::{self, NodeId, Peer};
use crate::pool::{Dest, Pool};
use crate::router::Router;
use crate::server;
use crate::tls::Identity;

/// QUIC application close codes used by Shoal (connection level).
pub mod close_code {
    /// Normal close: shutdown, address change, peer removed.
    pub const NORMAL: u32 = 0;
    /// The peer's certificate or ALPN was accepted by TLS but its identity
    /// is not acceptable (no identity name of this cluster, wrong node,
    /// a client where a node was required, wrong ALPN).
    pub const IDENTITY_REFUSED: u32 = 1;
}

/// Shared state of an endpoint; tasks hold it, handles hold a guard on it.
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) quic: quinn::Endpoint,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) cluster: String,
    pub(crate) local: Peer,
    pub(crate) local_addr: SocketAddr,
    pub(crate) router: Option<Arc<Router>>,
    pub(crate) pool: Pool,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) faults: Option<NetFaults>,
    /// Incoming connections being served.
    pub(crate) connections: AtomicUsize,
    /// Bytes of incoming requests being received or handled.
    pub(crate) inbound_budget: Arc<tokio::sync::Semaphore>,
}

impl Inner {
    /// Signals shutdown and closes the socket's connections; idempotent.
    fn signal_shutdown(&self) {
        self.shutdown.cancel();
        self.quic.close(
            quinn::VarInt::from_u32(close_code::NORMAL),
            b"endpoint shutting down",
        );
        self.pool.close_all();
        if let Some(faults) = &self.faults {
            faults.unregister(self.local_addr);
        }
    }
}

/// Signals shutdown when the last user handle goes away.
struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.signal_shutdown();
        self.0.tasks.close();
    }
}

/// A Shoal transport endpoint: serves requests to its [`Router`] and sends
/// requests, one-way messages and stream requests to other endpoints.
/// Cheap to clone; all clones share the socket and connections.
///
/// Call [`shutdown`](Self::shutdown) to stop it. Dropping the last handle
/// also signals shutdown, but a handle captured by a handler of the
/// endpoint's own router keeps it alive: shut such endpoints down
/// explicitly.
///
/// ```
/// use bytes::Bytes;
/// use shoal_transport::{Ca, Endpoint, Kind, NodeId, RemoteError, Router, Validity};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), shoal_transport::Error> {
/// const ECHO: Kind = Kind(1);
/// let ca = Ca::generate("doc")?;
/// let localhost = "127.0.0.1:0".parse().unwrap();
///
/// let server = Endpoint::builder(ca.issue_node(NodeId::new(1), Validity::days(1))?)
///     .router(Router::new().unary(ECHO, |req| async move { Ok::<_, RemoteError>(req.payload) }))
///     .bind(localhost)?;
/// let client = Endpoint::builder(ca.issue_node(NodeId::new(2), Validity::days(1))?)
///     .bind(localhost)?;
///
/// client.add_peer(NodeId::new(1), server.local_addr());
/// let reply = client.request(NodeId::new(1), ECHO, Bytes::from_static(b"hi")).await?;
/// assert_eq!(&reply[..], b"hi");
///
/// client.shutdown().await;
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

impl Endpoint {
    /// Starts building an endpoint for `identity`.
    pub fn builder(identity: Identity) -> EndpointBuilder {
        EndpointBuilder {
            identity,
            config: Config::default(),
            router: None,
            faults: None,
        }
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This endpoint's own identity.
    pub fn identity(&self) -> &Peer {
        &self.inner.local
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Records (or changes) the address of `node`, for [`Dest::Node`].
    /// Changing it closes the pooled connection to the old address.
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) {
        self.inner.pool.add_peer(node, addr);
    }

    /// Forgets `node` and closes the pooled connection to it.
    pub fn remove_peer(&self, node: NodeId) {
        self.inner.pool.remove_peer(node);
    }

    /// Makes sure a connection to `dest` is open (dialing if needed) and
    /// returns the identity the server proved.
    pub async fn connect(&self, dest: impl Into<Dest>) -> Result<Peer> {
        let conn = self.connection(dest.into()).await?;
        server::peer_identity(&conn, &self.inner.cluster).map_err(Error::Protocol)
    }

    /// Signals every task to stop, closes all connections (peers see a
    /// normal close and retryable errors), then waits for the tasks, at
    /// most `Config::shutdown_timeout`. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.signal_shutdown();
        inner.tasks.close();
        let limit = inner.config.shutdown_timeout();
        if tokio::time::timeout(limit, inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                tasks = inner.tasks.len(),
                ?limit,
                "shutdown: tasks still running after the limit"
            );
        }
        // Lets the close frames go out before the socket is dropped.
        let _ = tokio::time::timeout(limit, inner.quic.wait_idle()).await;
        debug!(addr = %inner.local_addr, "endpoint shut down");
    }

    /// The pooled connection to `dest`, dialing if there is none.
    pub(crate) async fn connection(&self, dest: Dest) -> Result<quinn::Connection> {
        let slot = self.inner.pool.slot(dest);
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let seen = slot.dials_done();
        let _dialing = slot.dial_lock().await;
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        // A dial ran while we waited and failed: share its outcome.
        if slot.dials_done() != seen
            && let Some(failure) = slot.failure()
        {
            return Err(failure);
        }
        match self.dial(dest).await {
            Ok(conn) => {
                slot.set(conn.clone());
                slot.dial_done(None);
                Ok(conn)
            }
            Err(e) => {
                slot.dial_done(Some(&e));
                Err(e)
            }
        }
    }

    /// Forgets `conn` for `dest` after it failed.
    pub(crate) fn forget(&self, dest: Dest, conn: &quinn::Connection) {
        self.inner.pool.slot(dest).forget(conn);
    }

    async fn dial(&self, dest: Dest) -> Result<quinn::Connection> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let (addr, server_name, expected) = match dest {
            Dest::Node(node) => (
                inner.pool.addr(node).ok_or(Error::UnknownNode(node))?,
                id::node_dns_name(node, &inner.cluster),
                Some(node),
            ),
            Dest::Addr(addr) => (addr, id::cluster_dns_name(&inner.cluster), None),
        };
        let connecting = inner
            .quic
            .connect_with(inner.client_config.clone(), addr, &server_name)
            .map_err(|e| Error::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let limit = inner.config.connect_timeout();
        let conn = match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                let error = connect_error(addr, e);
                if matches!(error, Error::Refused { .. }) {
                    warn!(remote = %addr, %error, "outgoing connection refused");
                }
                return Err(error);
            }
            Err(_) => {
                return Err(Error::Connect {
                    addr,
                    reason: format!("no handshake within {limit:?}"),
                });
            }
        };
        // TLS already checked the server name; this also catches a node
        // certificate that is missing its identity name.
        let peer = server::peer_identity(&conn, &inner.cluster);
        let acceptable = match (&peer, expected) {
            (Ok(Peer::Node(id)), Some(want)) => *id == want,
            (Ok(Peer::Node(_)), None) => true,
            _ => false,
        };
        if !acceptable {
            let reason = format!("server identity {peer:?} is not the expected {dest:?}");
            warn!(remote = %addr, %reason, "outgoing connection refused");
            conn.close(
                quinn::VarInt::from_u32(close_code::IDENTITY_REFUSED),
                b"unexpected server identity",
            );
            return Err(Error::Refused { addr, reason });
        }
        debug!(remote = %addr, ?dest, "connected");
        Ok(conn)
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("identity", &self.inner.local)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

/// Classifies a failed handshake.
fn connect_error(addr: SocketAddr, error: quinn::ConnectionError) -> Error {
    refusal(addr, &error).unwrap_or_else(|| match error {
        quinn::ConnectionError::LocallyClosed => Error::Shutdown,
        other => Error::Connect {
            addr,
            reason: other.to_string(),
        },
    })
}

/// Classifies a connection that failed after the handshake.
pub(crate) fn connection_error(addr: SocketAddr, error: quinn::ConnectionError) -> Error {
    if let Some(refused) = refusal(addr, &error) {
        warn!(remote = %addr, error = %refused, "connection refused by peer");
        return refused;
    }
    match error {
        quinn::ConnectionError::LocallyClosed => Error::Shutdown,
        other => Error::ConnectionLost(other.to_string()),
    }
}

/// `Some(Refused)` if `error` means a side refused the other's certificate,
/// identity or ALPN. In TLS 1.3 the server judges the client certificate
/// after the client considers the handshake done, so this can surface on
/// the first request rather than at connect.
fn refusal(addr: SocketAddr, error: &quinn::ConnectionError) -> Option<Error> {
    use quinn::ConnectionError as E;
    let is_crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    let reason = match error {
        // TLS alerts: a certificate, name or ALPN was refused by either side.
        E::TransportError(e) if is_crypto(e.code) => e.to_string(),
        E::ConnectionClosed(close) if is_crypto(close.error_code) => {
            format!("peer refused: {close}")
        }
        E::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(close_code::IDENTITY_REFUSED) =>
        {
            format!("peer refused: {close}")
        }
        E::VersionMismatch => error.to_string(),
        _ => return None,
    };
    Some(Error::Refused { addr, reason })
}

/// Builds an [`Endpoint`].
#[derive(Debug)]
pub struct EndpointBuilder {
    identity: Identity,
    config: Config,
    router: Option<Router>,
    faults: Option<NetFaults>,
}

impl EndpointBuilder {
    /// Limits and timeouts (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Serve incoming requests with `router`. Without a router the endpoint
    /// only dials out (like the CLI) and refuses incoming connections.
    pub fn router(mut self, router: Router) -> Self {
        self.router = Some(router);
        self
    }

    /// Route this endpoint's outgoing datagrams through `faults` (tests).
    /// Requires a node identity.
    pub fn faults(mut self, faults: NetFaults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Binds the UDP socket and starts serving. Must run inside a Tokio
    /// runtime.
    pub fn bind(self, addr: SocketAddr) -> Result<Endpoint> {
        let EndpointBuilder {
            identity,
            config,
            router,
            faults,
        } = self;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "Endpoint::bind must be called inside a Tokio runtime".into(),
            ));
        }
        let node = identity.peer().node_id();
        if router.is_some() && node.is_none() {
            return Err(Error::Config(
                "only a node identity can serve (client certificates lack server auth)".into(),
            ));
        }
        let transport = config.transport_config();
        let alpn = config.alpn();

        let client_crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_tls_config(alpn)?)
                .map_err(|e| Error::Certificate(e.to_string()))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport.clone());

        let server_config = match &router {
            Some(_) => {
                let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(
                    identity.server_tls_config(alpn)?,
                )
                .map_err(|e| Error::Certificate(e.to_string()))?;
                let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
                server_config
                    .transport_config(transport)
                    .max_incoming(config.connections_max());
                Some(server_config)
            }
            None => None,
        };

        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|e| Error::io(format!("binding UDP {addr}"), e))?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let endpoint_config = quinn::EndpointConfig::default();
        let quic = match (&faults, node) {
            (Some(faults), Some(node)) => {
                let inner_socket = runtime
                    .wrap_udp_socket(socket)
                    .map_err(|e| Error::io("wrapping the UDP socket", e))?;
                let socket = Arc::new(FaultySocket::new(inner_socket, node, faults.clone()));
                quinn::Endpoint::new_with_abstract_socket(
                    endpoint_config,
                    server_config,
                    socket,
                    runtime,
                )
            }
            (Some(_), None) => {
                return Err(Error::Config(
                    "fault injection needs a node identity".into(),
                ));
            }
            (None, _) => quinn::Endpoint::new(endpoint_config, server_config, socket, runtime),
        }
        .map_err(|e| Error::io("creating the QUIC endpoint", e))?;
        let local_addr = quic
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        if let (Some(faults), Some(node)) = (&faults, node) {
            faults.register(local_addr, node);
        }

        let serving = router.is_some();
        let inbound_budget = Arc::new(tokio::sync::Semaphore::new(config.inbound_bytes_max()));
        let inner = Arc::new(Inner {
            inbound_budget,
            config,
            quic,
            client_config,
            cluster: identity.cluster().to_owned(),
            local: identity.peer().clone(),
            local_addr,
            router: router.map(Arc::new),
            pool: Pool::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            faults,
            connections: AtomicUsize::new(0),
        });
        if serving {
            inner.tasks.spawn(server::accept_loop(inner.clone()));
        }
        info!(addr = %local_addr, identity = %inner.local, cluster = %inner.cluster, serving, "endpoint bound");
        Ok(Endpoint {
            _guard: Arc::new(Guard(inner.clone())),
            inner,
        })
    }
}
