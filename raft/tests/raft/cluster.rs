//! An in-process cluster for the tests: N real nodes in one process, each
//! with its own temp dir (redb Raft log, the state machine's snapshot
//! file and a `RedbStorage` data file holding the applied marker), talking over loopback QUIC with certificates
//! from one dev CA, every endpoint behind one shared `NetFaults` table.
//! Nodes bootstrap by the crate's rule; they can be killed (Raft, endpoint
//! and storage shut down) and restarted on the same directories and port.
//!
//! Every wait is bounded: a hang fails the test instead of stalling it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use openraft::rt::watch::WatchReceiver as _;
use openraft::{BasicNode, ServerState};
use shoal_raft::{
    Bootstrap, ClusterState, Command, LogStore, Network, NetworkConfig, Raft, RaftService,
    Rejected, Response, StateMachine,
};
use shoal_storage::{EntityKey, Epoch, RedbConfig, RedbStorage, ShardId, Storage, WriteBatch};
use shoal_transport::{Ca, Endpoint, NetFaults, NodeId, Router, Validity};
use tempfile::TempDir;
use tokio::sync::watch;

use crate::t04_single_node::open_retrying;

/// The shard every test item lives in.
pub const SHARD: ShardId = ShardId::new(5);

/// The transport's default message limit.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A bound on every wait for the cluster to reach a state.
pub const WAIT: Duration = Duration::from_secs(15);

/// Short timeouts so that elections take well under a second.
pub fn raft_config() -> anyhow::Result<Arc<openraft::Config>> {
    let mut config = shoal_raft::config("shoal-test")?;
    config.heartbeat_interval = 100;
    config.election_timeout_min = 400;
    config.election_timeout_max = 800;
    config.install_snapshot_timeout = 2000;
    Ok(Arc::new(config.validate()?))
}

fn transport_config(message_bytes_max: usize) -> anyhow::Result<shoal_transport::Config> {
    Ok(shoal_transport::Config::builder()
        .message_bytes_max(message_bytes_max)
        .connect_timeout(Duration::from_millis(500))
        .idle_timeout(Duration::from_secs(3))
        .keep_alive_interval(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(2))
        .build()?)
}

/// The key of test item `k`.
pub fn item_key(k: u64) -> anyhow::Result<EntityKey> {
    Ok(EntityKey::new(SHARD, "Item", format!("i-{k}"))?)
}

/// A batch writing item `k` at `epoch` (idempotent: retrying it is
/// harmless).
pub fn item_batch(k: u64, epoch: Epoch) -> anyhow::Result<WriteBatch> {
    let mut batch = WriteBatch::new(SHARD, epoch);
    batch.put_state(&item_key(k)?, k.to_be_bytes().to_vec());
    Ok(batch)
}

/// Whether `storage` holds item `k` with its value.
pub async fn has_item(storage: &Arc<dyn Storage>, k: u64) -> anyhow::Result<bool> {
    Ok(storage.load_state(&item_key(k)?).await? == Some(Bytes::from(k.to_be_bytes().to_vec())))
}

/// One running node.
pub struct Node {
    pub raft: Raft,
    /// The state machine's applied cluster state.
    pub cluster: watch::Receiver<Arc<ClusterState>>,
    pub storage: Arc<dyn Storage>,
    pub endpoint: Endpoint,
    service: RaftService,
}

/// The cluster.
pub struct Cluster {
    ca: Ca,
    /// The transport message limit of every node.
    message_bytes_max: usize,
    pub faults: NetFaults,
    config: Arc<openraft::Config>,
    dirs: BTreeMap<u64, TempDir>,
    addrs: BTreeMap<u64, SocketAddr>,
    pub nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    /// Starts nodes `ids` and applies the bootstrap rule on each.
    pub async fn start(ids: &[u64]) -> anyhow::Result<Cluster> {
        Cluster::start_with(ids, MESSAGE_BYTES_MAX).await
    }

    /// [`start`](Self::start) with a transport message limit.
    pub async fn start_with(ids: &[u64], message_bytes_max: usize) -> anyhow::Result<Cluster> {
        let cluster = Cluster::launch_all_with(ids, message_bytes_max).await?;
        let peers = cluster.peers();
        for &id in ids {
            let outcome = shoal_raft::bootstrap(&cluster.node(id)?.raft, id, &peers).await?;
            tracing::info!(id, ?outcome, "bootstrap");
        }
        Ok(cluster)
    }

    /// Starts nodes `ids` without bootstrapping them.
    pub async fn launch_all(ids: &[u64]) -> anyhow::Result<Cluster> {
        Cluster::launch_all_with(ids, MESSAGE_BYTES_MAX).await
    }

    async fn launch_all_with(ids: &[u64], message_bytes_max: usize) -> anyhow::Result<Cluster> {
        let seed = 0x5eed_u64 + ids.len() as u64;
        tracing::info!(seed, "net faults seed");
        let mut cluster = Cluster {
            ca: Ca::generate("raft-test")?,
            message_bytes_max,
            faults: NetFaults::new(seed),
            config: raft_config()?,
            dirs: BTreeMap::new(),
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        for &id in ids {
            cluster.dirs.insert(id, tempfile::tempdir()?);
            cluster
                .addrs
                .insert(id, SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        for &id in ids {
            cluster.launch(id).await?;
        }
        Ok(cluster)
    }

    /// The cluster's CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The initial peer list: every node with its address.
    pub fn peers(&self) -> BTreeMap<u64, BasicNode> {
        self.addrs
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
            .collect()
    }

    /// A running node.
    pub fn node(&self, id: u64) -> anyhow::Result<&Node> {
        self.nodes
            .get(&id)
            .with_context(|| format!("node {id} is not running"))
    }

    /// Binds the endpoint (on the node's previous port, if any), opens the
    /// files (in a new temp dir for a new id) and starts the Raft node
    /// `id`, without bootstrapping it.
    pub async fn launch(&mut self, id: u64) -> anyhow::Result<()> {
        let identity = self.ca.issue_node(NodeId::new(id), Validity::days(1))?;
        let service = RaftService::new(NetworkConfig::default())?;
        if let std::collections::btree_map::Entry::Vacant(slot) = self.dirs.entry(id) {
            slot.insert(tempfile::tempdir()?);
        }
        let want = *self
            .addrs
            .entry(id)
            .or_insert(SocketAddr::from(([127, 0, 0, 1], 0)));
        let deadline = Instant::now() + WAIT;
        let endpoint = loop {
            let bound = Endpoint::builder(identity.clone())
                .config(transport_config(self.message_bytes_max)?)
                .router(service.register(Router::new()))
                .faults(self.faults.clone())
                .bind(want);
            match bound {
                Ok(endpoint) => break endpoint,
                // The port of a node just shut down may take a moment to free.
                Err(error) if Instant::now() < deadline => {
                    tracing::info!(id, %error, "rebinding");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        self.addrs.insert(id, endpoint.local_addr());
        let dir = self.dirs[&id].path().to_owned();
        let storage: Arc<dyn Storage> = open_retrying(|| {
            Ok(Arc::new(RedbStorage::open(
                RedbConfig::builder(dir.join("shoal.redb")).build()?,
            )?))
        })
        .await?;
        let log = open_retrying(|| Ok(LogStore::open(dir.join("raft-log.redb"))?)).await?;
        let sm = StateMachine::open(&dir, storage.clone()).await?;
        let cluster = sm.cluster();
        let network = Network::new(endpoint.clone(), NetworkConfig::default())?;
        let raft = Raft::new(id, self.config.clone(), network, log, sm).await?;
        service.serve(raft.clone());
        self.nodes.insert(
            id,
            Node {
                raft,
                cluster,
                storage,
                endpoint,
                service,
            },
        );
        // Every running endpoint learns every address (membership carries
        // them too; this covers the window before it is replicated).
        for (node, addr) in &self.addrs {
            for running in self.nodes.values() {
                running.endpoint.add_peer(NodeId::new(*node), *addr);
            }
        }
        Ok(())
    }

    /// Shuts node `id` down: Raft, endpoint (peers see the connection
    /// close) and storage; its directories stay.
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self
            .nodes
            .remove(&id)
            .with_context(|| format!("node {id} is not running"))?;
        node.service.stop();
        node.raft.shutdown().await?;
        node.endpoint.shutdown().await;
        drop(node.raft);
        node.storage.close().await?;
        Ok(())
    }

    /// Restarts node `id` on its directories and port; it must find its
    /// log initialised.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.launch(id).await?;
        let outcome = shoal_raft::bootstrap(&self.node(id)?.raft, id, &self.peers()).await?;
        anyhow::ensure!(
            outcome == Bootstrap::AlreadyInitialized,
            "restarted node {id}: {outcome:?}"
        );
        Ok(())
    }

    /// Waits for a leader that another running node acknowledges, among
    /// the running nodes other than `excluded`.
    pub async fn leader(&self, excluded: &[u64]) -> anyhow::Result<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            for (id, node) in &self.nodes {
                if excluded.contains(id) {
                    continue;
                }
                let metrics = node.raft.metrics().borrow_watched().clone();
                let followed = self.nodes.iter().any(|(other, n)| {
                    other != id
                        && !excluded.contains(other)
                        && n.raft.metrics().borrow_watched().current_leader == Some(*id)
                });
                if metrics.state == ServerState::Leader && followed {
                    return Ok(*id);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader among {:?} within {WAIT:?}", self.nodes.keys());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The epoch of [`SHARD`] in node `id`'s applied cluster state (0 if
    /// it has no owner).
    pub fn epoch(&self, id: u64) -> anyhow::Result<Epoch> {
        Ok(self
            .node(id)?
            .cluster
            .borrow()
            .epoch(SHARD)
            .unwrap_or(Epoch::ZERO))
    }

    /// The applied cluster state of node `id`.
    pub fn cluster_state(&self, id: u64) -> anyhow::Result<ClusterState> {
        Ok(ClusterState::clone(&self.node(id)?.cluster.borrow()))
    }

    /// Writes item `k` through the current leader (not one of
    /// `excluded`), retrying on leader changes and stale epochs; returns
    /// the log index it was committed at once acknowledged.
    pub async fn write(&self, k: u64, excluded: &[u64]) -> anyhow::Result<u64> {
        self.write_batch(|epoch| item_batch(k, epoch), excluded)
            .await
    }

    /// Writes the batch `make(epoch)` (which must be idempotent), at the
    /// epoch of [`SHARD`] the leader knows, like [`write`](Self::write).
    pub async fn write_batch(
        &self,
        make: impl Fn(Epoch) -> anyhow::Result<WriteBatch>,
        excluded: &[u64],
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader(excluded).await?;
            let raft = &self.node(leader)?.raft;
            let batch = make(self.epoch(leader)?)?;
            let attempt = tokio::time::timeout(
                Duration::from_secs(3),
                raft.client_write(Command::Batch(batch.clone())),
            )
            .await;
            match attempt {
                Ok(Ok(written))
                    if matches!(
                        written.data,
                        Response::Rejected(Rejected::StaleEpoch { .. })
                    ) =>
                {
                    // Ownership moved under it: retry at the new epoch.
                    tracing::info!(leader, ?written.data, "stale epoch; retrying");
                }
                Ok(Ok(written)) => {
                    anyhow::ensure!(
                        matches!(&written.data, Response::Applied(a) if a.applied_all()),
                        "{batch:?}: {:?}",
                        written.data
                    );
                    return Ok(written.log_id.index);
                }
                Ok(Err(error)) => tracing::info!(leader, %error, "write failed; retrying"),
                Err(_) => tracing::info!(leader, "write timed out; retrying"),
            }
            if Instant::now() > deadline {
                bail!("batch not acknowledged within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` has applied up to `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) -> anyhow::Result<()> {
        self.node(id)?
            .raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
            .await?;
        Ok(())
    }

    /// Makes node `id` build a snapshot and purge its log up to it; returns
    /// the snapshot's last log index.
    pub async fn snapshot_and_purge(&self, id: u64) -> anyhow::Result<u64> {
        let raft = &self.node(id)?.raft;
        raft.trigger().snapshot().await?;
        let metrics = raft
            .wait(Some(WAIT))
            .metrics(|m| m.snapshot.is_some(), "snapshot built")
            .await?;
        let upto = metrics.snapshot.map_or(0, |s| s.index);
        raft.trigger().purge_log(upto).await?;
        raft.wait(Some(WAIT))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= upto), "log purged")
            .await?;
        Ok(upto)
    }

    /// Checks that every running node's storage holds items `items`.
    pub async fn check_items(
        &self,
        items: impl Iterator<Item = u64> + Clone,
    ) -> anyhow::Result<()> {
        for (id, node) in &self.nodes {
            for k in items.clone() {
                anyhow::ensure!(
                    has_item(&node.storage, k).await?,
                    "node {id} lacks item {k}"
                );
            }
        }
        Ok(())
    }

    /// Shuts every node down.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await?;
        }
        Ok(())
    }
}
