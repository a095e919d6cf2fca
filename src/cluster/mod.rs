//! Cluster mode: one Raft group replicates every write, shards are owned
//! by members, and any node serves any entity.
//!
//! A clustered [`Node`](crate::Node) is started with
//! [`NodeBuilder::cluster`](crate::NodeBuilder::cluster) and a
//! [`ClusterConfig`]. Its pieces:
//!
//! - **Replication.** The entity runtime's write batches go through the
//!   node's Raft group (`shoal-raft`): proposed on the leader (forwarded to
//!   it over QUIC when this node is not the leader), acknowledged to the
//!   caller only once committed by a majority *and* applied to this node's
//!   redb file. Every acknowledged write survives the loss of any minority.
//! - **Ownership.** The replicated cluster state (`shoal_raft::ClusterState`)
//!   places every shard on one live member by rendezvous hashing, with an
//!   epoch: the log index at which the owner acquired the shard. Only the
//!   owner activates the shard's entities and writes to it, each batch
//!   fenced with its epoch; the state machine refuses a batch whose epoch
//!   is no longer the shard's, on every replica alike, so two activations
//!   of one entity on two nodes never both commit. The owner reads its own
//!   writes locally.
//! - **Routing.** A call for an entity this node does not own is forwarded
//!   to the owner (`FORWARD` requests); a call that races a shard move
//!   (`NotOwner`), finds no owner, or cannot reach the owner before sending
//!   is retried, on the owner of the moment, until
//!   [`ClusterConfig::route_timeout`]. A call whose outcome is unknown (the
//!   connection dropped after it was sent) is not retried: it fails with
//!   [`EntityError::ClusterUnavailable`](crate::entity::EntityError::ClusterUnavailable)`{ outcome_unknown: true }`.
//! - **Failure detection.** The leader watches when each member last
//!   acknowledged its heartbeats; one silent for
//!   [`ClusterConfig::down_after`] is marked down (its shards move to the
//!   others), and marked up again when it answers.
//! - **Membership.** The initial members bootstrap by the lowest-id rule
//!   (`shoal_raft::bootstrap`); a node started with
//!   [`ClusterConfigBuilder::join`] asks a member to add it: it joins as a
//!   learner, becomes a voter once caught up while there are fewer than 5
//!   voters, and receives shards only then. [`Node::leave`](crate::Node::leave)
//!   moves a node's shards away and removes it; its id is never accepted
//!   again.
//!
//! Persisted messages and pending workflow executions of a shard are
//! delivered by its owner: a node that gains a shard scans it, one that
//! loses a shard stops delivering it and passivates its entities.

mod core;
mod proto;
pub(crate) mod serve;
pub(crate) mod start;
pub(crate) mod tasks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_transport::{Identity, NetFaults};

pub(crate) use self::core::Core;
pub use self::core::{ClusterStatus, MemberState, MemberStatus};
pub use self::start::RAFT_LOG_FILE;

/// How long a member may be silent before the leader marks it down.
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_millis(1500);

/// How long a call keeps looking for the owner of its shard.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write waits to be committed and applied.
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Raft heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The Raft election timeout range (a random value in it per term).
pub const DEFAULT_ELECTION_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(400), Duration::from_millis(800));

/// How a node takes part in a cluster. Build it with
/// [`ClusterConfig::builder`].
///
/// ```
/// use std::net::SocketAddr;
/// use shoal::cluster::ClusterConfig;
/// use shoal_transport::{Ca, NodeId, Validity};
///
/// let ca = Ca::generate("demo")?;
/// let identity = ca.issue_node(NodeId::new(1), Validity::days(1))?;
/// let me: SocketAddr = "127.0.0.1:7401".parse()?;
/// let config = ClusterConfig::builder(identity)
///     .listen(me)
///     .peer(1, me)
///     .peer(2, "127.0.0.1:7402".parse()?)
///     .peer(3, "127.0.0.1:7403".parse()?)
///     .build()?;
/// assert_eq!(config.node_id(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub(crate) identity: Identity,
    pub(crate) node_id: u64,
    pub(crate) listen: SocketAddr,
    pub(crate) advertise: SocketAddr,
    pub(crate) peers: BTreeMap<u64, SocketAddr>,
    pub(crate) join: Vec<SocketAddr>,
    pub(crate) down_after: Duration,
    pub(crate) route_timeout: Duration,
    pub(crate) commit_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) election_timeout: (Duration, Duration),
    pub(crate) transport: Option<shoal_transport::Config>,
    pub(crate) faults: Option<NetFaults>,
}

impl ClusterConfig {
    /// A builder for the node whose certificate is `identity` (a node
    /// certificate of the cluster's CA; its node id is this node's id).
    pub fn builder(identity: Identity) -> ClusterConfigBuilder {
        ClusterConfigBuilder {
            identity,
            listen: None,
            advertise: None,
            peers: BTreeMap::new(),
            join: Vec::new(),
            down_after: DEFAULT_DOWN_AFTER,
            route_timeout: DEFAULT_ROUTE_TIMEOUT,
            commit_timeout: DEFAULT_COMMIT_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
            transport: None,
            faults: None,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The address the node listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The address the other nodes reach this one at.
    pub fn advertise(&self) -> SocketAddr {
        self.advertise
    }

    /// The initial members (empty for a node that joins).
    pub fn peers(&self) -> &BTreeMap<u64, SocketAddr> {
        &self.peers
    }

    /// How long a member may be silent before it is marked down.
    pub fn down_after(&self) -> Duration {
        self.down_after
    }

    /// How long a call keeps looking for its shard's owner.
    pub fn route_timeout(&self) -> Duration {
        self.route_timeout
    }

    /// How long a write waits to be committed and applied locally.
    pub fn commit_timeout(&self) -> Duration {
        self.commit_timeout
    }
}

/// Builds a [`ClusterConfig`]; [`build`](Self::build) validates it.
#[derive(Debug)]
pub struct ClusterConfigBuilder {
    identity: Identity,
    listen: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    peers: BTreeMap<u64, SocketAddr>,
    join: Vec<SocketAddr>,
    down_after: Duration,
    route_timeout: Duration,
    commit_timeout: Duration,
    heartbeat_interval: Duration,
    election_timeout: (Duration, Duration),
    transport: Option<shoal_transport::Config>,
    faults: Option<NetFaults>,
}

impl ClusterConfigBuilder {
    /// The address to listen on (required). Port 0 picks a free port
    /// (then the node must [`join`](Self::join), since its peers cannot
    /// know it in advance).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The address the other nodes reach this one at (default: the listen
    /// address, which must then not be unspecified like `0.0.0.0`).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// An initial member (include this node itself). Every initial member
    /// must be started with the same list: the lowest id initialises the
    /// cluster, once.
    pub fn peer(mut self, id: u64, addr: SocketAddr) -> Self {
        self.peers.insert(id, addr);
        self
    }

    /// Joins a running cluster through the member at `addr` (any member;
    /// several may be given, tried in turn) instead of bootstrapping.
    pub fn join(mut self, addr: SocketAddr) -> Self {
        self.join.push(addr);
        self
    }

    /// How long a member may be silent before the leader marks it down and
    /// moves its shards (default [`DEFAULT_DOWN_AFTER`]).
    pub fn down_after(mut self, silence: Duration) -> Self {
        self.down_after = silence;
        self
    }

    /// How long a call keeps looking for its shard's owner (default
    /// [`DEFAULT_ROUTE_TIMEOUT`]).
    pub fn route_timeout(mut self, timeout: Duration) -> Self {
        self.route_timeout = timeout;
        self
    }

    /// How long a write waits to be committed and applied (default
    /// [`DEFAULT_COMMIT_TIMEOUT`]).
    pub fn commit_timeout(mut self, timeout: Duration) -> Self {
        self.commit_timeout = timeout;
        self
    }

    /// The Raft heartbeat interval (default
    /// [`DEFAULT_HEARTBEAT_INTERVAL`]).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// The Raft election timeout range (default
    /// [`DEFAULT_ELECTION_TIMEOUT`]).
    pub fn election_timeout(mut self, min: Duration, max: Duration) -> Self {
        self.election_timeout = (min, max);
        self
    }

    /// The transport settings (default: the transport's defaults with
    /// keep-alive 1 s, idle timeout 4 s and connect timeout 1 s, so that a
    /// crashed peer's connection is given up within seconds).
    pub fn transport(mut self, config: shoal_transport::Config) -> Self {
        self.transport = Some(config);
        self
    }

    /// Routes every packet through `faults`, for partition tests.
    pub fn faults(mut self, faults: NetFaults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<ClusterConfig, crate::ConfigError> {
        let invalid = |reason: String| crate::ConfigError::Cluster(reason);
        let node_id = self
            .identity
            .peer()
            .node_id()
            .ok_or_else(|| invalid("a cluster node needs a node certificate".into()))?
            .get();
        let listen = self
            .listen
            .ok_or_else(|| invalid("a cluster node needs a listen address".into()))?;
        let advertise = self.advertise.unwrap_or(listen);
        if advertise.ip().is_unspecified() {
            return Err(invalid(format!(
                "the advertised address {advertise} is unspecified; set one the other nodes can reach"
            )));
        }
        match (self.peers.is_empty(), self.join.is_empty()) {
            (true, true) => {
                return Err(invalid(
                    "a cluster node needs initial peers or a member to join through".into(),
                ));
            }
            (false, false) => {
                return Err(invalid(
                    "give either initial peers or members to join through, not both".into(),
                ));
            }
            _ => {}
        }
        if !self.peers.is_empty() && !self.peers.contains_key(&node_id) {
            return Err(invalid(format!(
                "the initial peers {:?} do not include this node ({node_id})",
                self.peers.keys().collect::<Vec<_>>()
            )));
        }
        let (min, max) = self.election_timeout;
        if self.heartbeat_interval.is_zero() || min <= self.heartbeat_interval || max <= min {
            return Err(invalid(format!(
                "need 0 < heartbeat ({:?}) < election timeout min ({min:?}) < max ({max:?})",
                self.heartbeat_interval
            )));
        }
        if self.down_after <= max {
            return Err(invalid(format!(
                "down_after ({:?}) must exceed the election timeout ({max:?})",
                self.down_after
            )));
        }
        for (what, value) in [
            ("route_timeout", self.route_timeout),
            ("commit_timeout", self.commit_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(format!("{what} must be positive")));
            }
        }
        Ok(ClusterConfig {
            identity: self.identity,
            node_id,
            listen,
            advertise,
            peers: self.peers,
            join: self.join,
            down_after: self.down_after,
            route_timeout: self.route_timeout,
            commit_timeout: self.commit_timeout,
            heartbeat_interval: self.heartbeat_interval,
            election_timeout: self.election_timeout,
            transport: self.transport,
            faults: self.faults,
        })
    }
}
