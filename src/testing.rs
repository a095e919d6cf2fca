//! [`TestCluster`]: several real clustered nodes in one process, for your
//! own tests of code that runs on a Shoal cluster.
//!
//! Each node is a full [`Node`] in cluster mode: its own temp data
//! directory (redb data file, Raft log, snapshots), its own QUIC endpoint
//! on loopback with a certificate from one test CA, every endpoint behind
//! one shared fault table, so the tests can cut links. Nodes can be killed
//! (stopped without leaving: to the others it is a crash), restarted on
//! the same directory and port, added (they join) and removed (they
//! leave). Every wait is bounded by [`TestClusterBuilder::wait`] so a
//! hang fails instead of stalling.
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # use shoal::entity::{Activity, ActivityContext, Entity, Handlers, Visibility};
//! # struct Counter;
//! # #[derive(Default, Serialize, Deserialize)]
//! # struct Count { value: i64 }
//! # impl Entity for Counter {
//! #     const NAME: &'static str = "Counter";
//! #     type State = Count;
//! #     fn handlers(h: &mut Handlers<Self>) { h.activity(Add); }
//! # }
//! # struct Add;
//! # impl Activity<Counter> for Add {
//! #     const NAME: &'static str = "add";
//! #     const VISIBILITY: Visibility = Visibility::Public;
//! #     type Params = i64;
//! #     type Output = i64;
//! #     type Error = String;
//! #     async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, String> {
//! #         ctx.state_mut().value += by;
//! #         Ok(ctx.state().value)
//! #     }
//! # }
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal::testing::TestCluster;
//!
//! let mut cluster = TestCluster::builder()
//!     .nodes(3)
//!     .configure(|node| node.register(Counter))
//!     .start()
//!     .await?;
//! let leader = cluster.leader().await?;
//! // Any node serves any entity: calls are forwarded to the owner.
//! assert_eq!(cluster.node(1)?.client::<Counter>("c-1").call(Add, 2).await??, 2);
//! cluster.kill(leader).await?;
//! let survivor = cluster.running().into_iter().next().unwrap();
//! assert_eq!(cluster.node(survivor)?.client::<Counter>("c-1").call(Add, 3).await??, 5);
//! cluster.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::rt::watch::WatchReceiver as _;
use shoal_transport::{Ca, NetFaults, NodeId, Validity};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::cluster::ClusterConfig;
use crate::{Node, NodeBuilder, NodeError};

/// Why a [`TestCluster`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestClusterError {
    /// A node could not start or stop.
    #[error("node {node}: {source}")]
    Node {
        /// The node.
        node: u64,
        /// What failed.
        source: NodeError,
    },
    /// No node with this id is running.
    #[error("node {0} is not running")]
    NotRunning(u64),
    /// A wait ran out.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// Setting the test up failed (certificates, temp dirs, sockets).
    #[error("setup: {0}")]
    Setup(String),
}

type Configure = Arc<dyn Fn(NodeBuilder) -> NodeBuilder + Send + Sync>;

/// Raft timings of every test node: quicker than a real cluster's defaults.
const HEARTBEAT: Duration = Duration::from_millis(50);
const ELECTION: (Duration, Duration) = (Duration::from_millis(300), Duration::from_millis(600));

fn setup(error: impl fmt::Display) -> TestClusterError {
    TestClusterError::Setup(error.to_string())
}

/// Builds a [`TestCluster`].
pub struct TestClusterBuilder {
    nodes: usize,
    configure: Configure,
    wait: Duration,
    down_after: Duration,
}

impl fmt::Debug for TestClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClusterBuilder")
            .field("nodes", &self.nodes)
            .field("wait", &self.wait)
            .field("down_after", &self.down_after)
            .finish_non_exhaustive()
    }
}

impl TestClusterBuilder {
    /// How many nodes form the initial cluster (default 3), with ids
    /// `1..=n`.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// What every node registers: entity types, singletons, settings
    /// (called once per node start, restarts included).
    pub fn configure(
        mut self,
        configure: impl Fn(NodeBuilder) -> NodeBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Arc::new(configure);
        self
    }

    /// The bound on every wait (default 20 s).
    pub fn wait(mut self, bound: Duration) -> Self {
        self.wait = bound;
        self
    }

    /// How long a silent node stays up before its shards move (default
    /// 1 s; shorter than a real cluster's default to keep tests quick).
    pub fn down_after(mut self, silence: Duration) -> Self {
        self.down_after = silence;
        self
    }

    /// Starts the nodes, waits for a leader and for every node to own its
    /// shards.
    pub async fn start(self) -> Result<TestCluster, TestClusterError> {
        let initial = self.nodes as u64;
        let mut cluster = TestCluster {
            ca: Ca::generate("shoal-test").map_err(setup)?,
            faults: NetFaults::new(0x5eed),
            configure: self.configure,
            wait: self.wait,
            down_after: self.down_after,
            dirs: BTreeMap::new(),
            addrs: BTreeMap::new(),
            initial,
            nodes: BTreeMap::new(),
        };
        for id in 1..=initial {
            cluster.make_room(id)?;
        }
        // Concurrently: every initial member waits for the initialiser.
        let starts: Vec<_> = (1..=initial).map(|id| cluster.start_node(id)).collect();
        let started = futures::future::join_all(starts).await;
        for (id, node) in (1..=initial).zip(started) {
            cluster.nodes.insert(id, node?);
        }
        cluster.wait_converged().await?;
        Ok(cluster)
    }
}

/// N clustered nodes in one process (see the [module docs](self)).
pub struct TestCluster {
    ca: Ca,
    faults: NetFaults,
    configure: Configure,
    wait: Duration,
    down_after: Duration,
    dirs: BTreeMap<u64, TempDir>,
    addrs: BTreeMap<u64, SocketAddr>,
    /// Nodes `1..=initial` are the initial members (every one's peer list);
    /// a later node joins.
    initial: u64,
    nodes: BTreeMap<u64, Node>,
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("running", &self.running())
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> std::io::Result<SocketAddr> {
    UdpSocket::bind(("127.0.0.1", 0))?.local_addr()
}

impl TestCluster {
    /// A builder: 3 nodes registering nothing.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            nodes: 3,
            configure: Arc::new(|node| node),
            wait: Duration::from_secs(20),
            down_after: Duration::from_secs(1),
        }
    }

    /// A loopback port and a temp data directory for node `id`.
    fn make_room(&mut self, id: u64) -> Result<(), TestClusterError> {
        self.addrs.insert(id, free_port().map_err(setup)?);
        self.dirs.insert(id, tempfile::tempdir().map_err(setup)?);
        Ok(())
    }

    /// Starts node `id`: an initial member with the initial peer list, a
    /// later one joining through the running nodes (a node that joined once
    /// is in the membership: asking to join again is harmless).
    fn start_node(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Node, TestClusterError>> + 'static {
        let prepared = (|| {
            let identity = self
                .ca
                .issue_node(NodeId::new(id), Validity::days(1))
                .map_err(setup)?;
            let addr = self.addrs[&id];
            let transport = shoal_transport::Config::builder()
                .connect_timeout(Duration::from_millis(500))
                .idle_timeout(Duration::from_secs(3))
                .keep_alive_interval(Duration::from_millis(500))
                .request_timeout(Duration::from_secs(5))
                .shutdown_timeout(Duration::from_secs(1))
                .build()
                .map_err(setup)?;
            let mut config = ClusterConfig::builder(identity)
                .listen(addr)
                .down_after(self.down_after)
                .heartbeat_interval(HEARTBEAT)
                .election_timeout(ELECTION.0, ELECTION.1)
                .route_timeout(self.wait)
                .transport(transport)
                .faults(self.faults.clone());
            if id > self.initial {
                for (other, addr) in &self.addrs {
                    if *other != id && self.nodes.contains_key(other) {
                        config = config.join(*addr);
                    }
                }
            } else {
                for (peer, addr) in self.addrs.range(1..=self.initial) {
                    config = config.peer(*peer, *addr);
                }
            }
            let config = config.build().map_err(setup)?;
            Ok::<_, TestClusterError>((config, self.dirs[&id].path().to_owned()))
        })();
        let wait = self.wait;
        let configure = self.configure.clone();
        async move {
            let (config, dir) = prepared?;
            let deadline = Instant::now() + wait;
            loop {
                let builder = configure(Node::builder().data_dir(&dir).cluster(config.clone()));
                match builder.start().await {
                    Ok(node) => return Ok(node),
                    // The port of a node just stopped may take a moment.
                    Err(error)
                        if Instant::now() < deadline && error.to_string().contains("listen") =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(source) => return Err(TestClusterError::Node { node: id, source }),
                }
            }
        }
    }

    /// The ids of the running nodes, ascending.
    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Running node `id`.
    pub fn node(&self, id: u64) -> Result<&Node, TestClusterError> {
        self.nodes.get(&id).ok_or(TestClusterError::NotRunning(id))
    }

    /// The address node `id` listens on (running or not).
    pub fn addr(&self, id: u64) -> Option<SocketAddr> {
        self.addrs.get(&id).copied()
    }

    /// The cluster's CA (to issue client certificates).
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The fault table every endpoint sends through.
    pub fn faults(&self) -> &NetFaults {
        &self.faults
    }

    /// Stops node `id` without leaving the cluster: to the others it has
    /// crashed. Its directory stays for [`restart`](Self::restart).
    pub async fn kill(&mut self, id: u64) -> Result<(), TestClusterError> {
        self.take(id)?
            .shutdown()
            .await
            .map_err(|source| TestClusterError::Node { node: id, source })
    }

    /// Restarts node `id` on its directory and port.
    pub async fn restart(&mut self, id: u64) -> Result<(), TestClusterError> {
        if self.nodes.contains_key(&id) {
            return Ok(());
        }
        let node = self.start_node(id).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Starts a new node (the next free id) that joins the cluster, and
    /// waits until it owns shards.
    pub async fn add_node(&mut self) -> Result<u64, TestClusterError> {
        let id = self.addrs.keys().max().copied().unwrap_or(0) + 1;
        self.make_room(id)?;
        let node = self.start_node(id).await?;
        self.nodes.insert(id, node);
        self.wait_converged().await?;
        Ok(id)
    }

    /// Node `id` leaves gracefully (its shards move, it is removed, its id
    /// retired) and stops.
    pub async fn remove_node(&mut self, id: u64) -> Result<(), TestClusterError> {
        self.take(id)?
            .leave()
            .await
            .map_err(|source| TestClusterError::Node { node: id, source })
    }

    /// Running node `id`, no longer counted as running.
    fn take(&mut self, id: u64) -> Result<Node, TestClusterError> {
        self.nodes
            .remove(&id)
            .ok_or(TestClusterError::NotRunning(id))
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        for x in a {
            for y in b {
                self.faults.partition(NodeId::new(*x), NodeId::new(*y));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.faults.heal_all();
    }

    /// Waits for a leader that another running node follows; its id.
    pub async fn leader(&self) -> Result<u64, TestClusterError> {
        self.leader_among(&self.running()).await
    }

    /// Waits for a leader among `ids` followed by another of `ids`.
    pub async fn leader_among(&self, ids: &[u64]) -> Result<u64, TestClusterError> {
        self.wait_for(&format!("a leader among {ids:?}"), || {
            ids.iter().copied().find(|id| {
                let Some(raft) = self.nodes.get(id).and_then(Node::raft) else {
                    return false;
                };
                let leads = raft.metrics().borrow_watched().state == ServerState::Leader;
                let followed = ids.len() == 1
                    || ids.iter().any(|other| {
                        other != id
                            && self.nodes.get(other).and_then(Node::raft).is_some_and(|r| {
                                r.metrics().borrow_watched().current_leader == Some(*id)
                            })
                    });
                leads && followed
            })
        })
        .await
    }

    /// Waits until every running node follows one leader and has applied
    /// the same cluster state, in which shards are placed on every running
    /// member that is up and on no stopped one.
    pub async fn wait_converged(&self) -> Result<(), TestClusterError> {
        let running = self.running();
        self.wait_for("the cluster to converge", || {
            let statuses: Vec<_> = running
                .iter()
                .filter_map(|id| self.nodes.get(id).and_then(Node::cluster_status))
                .collect();
            let first = statuses.first()?;
            let agreed = statuses.iter().all(|s| {
                s.leader.is_some()
                    && s.leader == first.leader
                    && s.generation == first.generation
                    && s.members == first.members
            });
            let placed = first.members.iter().all(|m| {
                let runs = running.contains(&m.id);
                m.placed == (runs && m.state == crate::cluster::MemberState::Up)
            });
            (agreed && placed && first.leader.is_some_and(|l| running.contains(&l))).then_some(())
        })
        .await
    }

    /// Polls `probe` until it answers `Some`, at most the cluster's wait
    /// bound.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Result<T, TestClusterError> {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(found) = probe() {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(TestClusterError::Timeout {
                    what: what.to_owned(),
                    timeout: self.wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> Result<(), TestClusterError> {
        for id in self.running() {
            self.kill(id).await?;
        }
        Ok(())
    }
}
