//! Starting a clustered node's consensus side: the transport endpoint
//! (Raft, cluster and node-API routes), the Raft log and state machine in
//! the data directory, the Raft node, and the bootstrap or join.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use prost::Message as _;
use shoal_raft::{LogStore, Network, NetworkConfig, Raft, RaftService, StateMachine};
use shoal_storage::Storage;
use shoal_transport::{Endpoint, NodeId, Router};

use super::ClusterConfig;
use super::core::{Core, MEMBERSHIP_TIMEOUT, kind};
use super::proto::{JoinRequest, MembershipReply};
use super::serve::{self, Slot};
use crate::node::NodeError;

/// The Raft log's file name inside the data directory.
pub const RAFT_LOG_FILE: &str = "raft-log.redb";

/// What [`open`] started.
pub(crate) struct Started {
    pub(crate) core: Arc<Core>,
    pub(crate) slot: Arc<Slot>,
}

fn failed(what: &str, error: impl std::fmt::Display) -> NodeError {
    NodeError::Cluster(format!("{what}: {error}"))
}

/// Binds the endpoint and starts the Raft node over `storage`, keeping the
/// Raft files in `dir`.
pub(crate) async fn open(
    config: ClusterConfig,
    dir: &Path,
    storage: Arc<dyn Storage>,
) -> Result<Started, NodeError> {
    let service =
        RaftService::new(NetworkConfig::default()).map_err(|e| failed("raft service", e))?;
    let slot = Arc::new(Slot::default());
    let router = serve::register(service.register(Router::new()), slot.clone());
    let transport = match &config.transport {
        Some(transport) => transport.clone(),
        None => default_transport().map_err(|e| failed("transport config", e))?,
    };
    let mut builder = Endpoint::builder(config.identity.clone())
        .router(router)
        .config(transport);
    if let Some(faults) = &config.faults {
        builder = builder.faults(faults.clone());
    }
    let endpoint = builder
        .bind(config.listen)
        .map_err(|e| failed(&format!("cannot listen on {}", config.listen), e))?;
    for (id, addr) in &config.peers {
        endpoint.add_peer(NodeId::new(*id), *addr);
    }
    let log_path = dir.join(RAFT_LOG_FILE);
    let log = tokio::task::spawn_blocking(move || LogStore::open(log_path))
        .await
        .map_err(|_| NodeError::NoRuntime)?
        .map_err(|e| failed("raft log", e))?;
    let state_machine = StateMachine::open(dir, storage)
        .await
        .map_err(|e| failed("raft state machine", e))?;
    let state = state_machine.cluster();
    let network = Network::new(endpoint.clone(), NetworkConfig::default())
        .map_err(|e| failed("raft network", e))?;
    let commit_waiters = network.commit_waiters();
    let raft_config = raft_config(&config)?;
    let raft = Raft::new(config.node_id, raft_config, network, log, state_machine)
        .await
        .map_err(|e| failed("raft", e))?;
    service.serve(raft.clone());
    let core = Arc::new(Core::new(
        config.node_id,
        raft,
        service,
        state,
        endpoint,
        config,
        commit_waiters,
    ));
    Ok(Started { core, slot })
}

/// The transport settings of a clustered node unless configured: the
/// transport's defaults with a dead peer's connection given up within
/// seconds (keep-alive 1 s, idle timeout 4 s, connect timeout 1 s), so a
/// request in flight to a crashed node fails soon after the crash.
pub(crate) fn default_transport() -> shoal_transport::Result<shoal_transport::Config> {
    shoal_transport::Config::builder()
        .keep_alive_interval(Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(4))
        .connect_timeout(Duration::from_secs(1))
        .build()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn raft_config(config: &ClusterConfig) -> Result<Arc<openraft::Config>, NodeError> {
    let mut raft = shoal_raft::config("shoal").map_err(|e| failed("raft config", e))?;
    raft.heartbeat_interval = millis(config.heartbeat_interval);
    raft.election_timeout_min = millis(config.election_timeout.0);
    raft.election_timeout_max = millis(config.election_timeout.1);
    Ok(Arc::new(
        raft.validate().map_err(|e| failed("raft config", e))?,
    ))
}

/// The initial members as Raft sees them.
pub(crate) fn initial_members(config: &ClusterConfig) -> BTreeMap<u64, BasicNode> {
    config
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
        .collect()
}

/// Asks the members in `config.join` to add this node, in turn, until one
/// succeeds (or `attempts` rounds failed).
pub(crate) async fn join(core: &Core, attempts: usize) -> Result<String, NodeError> {
    let request = JoinRequest {
        node_id: core.me,
        addr: core.config.advertise.to_string(),
    }
    .encode_to_vec();
    let mut last = String::from("no member to join through");
    for round in 0..attempts {
        for addr in &core.config.join {
            let endpoint = core
                .endpoint()
                .ok_or_else(|| NodeError::Cluster("shut down while joining".into()))?;
            let reply = endpoint
                .request_with_timeout(
                    *addr,
                    kind::JOIN,
                    bytes::Bytes::from(request.clone()),
                    MEMBERSHIP_TIMEOUT,
                )
                .await;
            match reply.map(MembershipReply::decode) {
                Ok(Ok(reply)) if reply.error.is_empty() => return Ok(reply.joined_as),
                Ok(Ok(reply)) => last = format!("{addr}: {}", reply.error),
                Ok(Err(e)) => last = format!("{addr}: malformed reply: {e}"),
                Err(e) => last = format!("{addr}: {e}"),
            }
            tracing::info!(round, reason = %last, "join attempt failed");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(NodeError::Cluster(format!("cannot join: {last}")))
}
