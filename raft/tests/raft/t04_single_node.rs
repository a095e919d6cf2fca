//! A one-node openraft cluster on the real files — redb log and a
//! `RedbStorage` data file (holding the applied marker): writes are answered with the state
//! machine's [`Response`], and survive a restart on the same files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use shoal_raft::{
    ClusterState, Command, LogStore, Rejected, Response, StateMachine, TypeConfig, Vote,
};
use shoal_storage::{EntityKey, Epoch, RedbConfig, RedbStorage, ShardId, Storage, WriteBatch};
use tokio::sync::watch;

/// A network with no peers: a single node never sends anything.
pub(crate) struct NoPeers;

#[derive(Debug)]
struct NoPeer;

impl std::fmt::Display for NoPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("single-node test cluster: no peers")
    }
}

impl std::error::Error for NoPeer {}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeersClient;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoPeersClient {
        NoPeersClient
    }
}

pub(crate) struct NoPeersClient;

impl RaftNetworkV2<TypeConfig> for NoPeersClient {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer)))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: shoal_raft::Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(Unreachable::new(&NoPeer)))
    }
}

/// Opens a file, retrying while it is still locked: openraft's shutdown
/// does not wait for a storage write already handed to a blocking thread,
/// and the file is released when that write finishes (milliseconds).
pub(crate) async fn open_retrying<T>(
    mut open: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut attempts = 0;
    loop {
        match open() {
            Err(error) if is_locked(&error) && attempts < 250 => {
                attempts += 1;
                tracing::info!(attempts, %error, "still held after shutdown");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

fn is_locked(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<shoal_raft::Error>(),
        Some(shoal_raft::Error::Locked { .. })
    ) || matches!(
        error.downcast_ref::<shoal_storage::Error>(),
        Some(shoal_storage::Error::Locked { .. })
    )
}

/// The node's Raft handle, storage and applied cluster state.
pub(crate) type Started = (
    Raft<TypeConfig, StateMachine>,
    Arc<dyn Storage>,
    watch::Receiver<Arc<ClusterState>>,
);

/// The epoch of `shard` once everything committed is applied.
pub(crate) async fn epoch_of(
    raft: &Raft<TypeConfig, StateMachine>,
    cluster: &watch::Receiver<Arc<ClusterState>>,
    shard: ShardId,
) -> anyhow::Result<Epoch> {
    raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
        .await?;
    cluster
        .borrow()
        .epoch(shard)
        .ok_or_else(|| anyhow::anyhow!("shard {shard:?} has no owner"))
}

pub(crate) async fn start(dir: &std::path::Path) -> anyhow::Result<Started> {
    start_with(
        dir,
        shoal_storage::redb_backend::DEFERRED_DURABILITY_MAX_DEFAULT,
    )
    .await
}

/// [`start`] with the storage's `deferred_durability_max` (how long an
/// apply may stay non-durable) set to `deferred_max`.
pub(crate) async fn start_with(
    dir: &std::path::Path,
    deferred_max: Duration,
) -> anyhow::Result<Started> {
    let storage: Arc<dyn Storage> = open_retrying(|| {
        Ok(Arc::new(RedbStorage::open(
            RedbConfig::builder(dir.join("shoal.redb"))
                .deferred_durability_max(deferred_max)
                .build()?,
        )?))
    })
    .await?;
    let log = open_retrying(|| Ok(LogStore::open(dir.join("raft-log.redb"))?)).await?;
    let sm = StateMachine::open(&dir, storage.clone()).await?;
    let cluster = sm.cluster();
    let config = Arc::new(shoal_raft::config("shoal-test")?);
    let raft = Raft::new(1, config, NoPeers, log, sm).await?;
    Ok((raft, storage, cluster))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_writes_answer_and_survive_restart() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let shard = ShardId::new(3);
    let counter = EntityKey::new(shard, "Counter", "c-1")?;
    let wait = Some(Duration::from_secs(10));

    tracing::info!("--- initialise a one-node cluster and write through Raft");
    let last_index = {
        let (raft, storage, cluster) = start(dir.path()).await?;
        raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:7000"))]))
            .await?;
        raft.wait(wait).current_leader(1, "node 1 leads").await?;
        // The initial membership (log index 0) made the first placement:
        // every shard is node 1's at epoch 0.
        let epoch = epoch_of(&raft, &cluster, shard).await?;
        assert_eq!(epoch, Epoch::new(0));
        assert_eq!(cluster.borrow().owner(shard), Some(1));

        let mut batch = WriteBatch::new(shard, epoch);
        batch.put_state(&counter, b"1".to_vec());
        let written = raft.client_write(Command::Batch(batch)).await?;
        assert!(
            matches!(&written.data, Response::Applied(applied) if applied.applied_all()),
            "{:?}",
            written.data
        );

        let mut wrong = WriteBatch::new(shard, epoch.next());
        wrong.put_state(&counter, b"wrong".to_vec());
        let refused = raft.client_write(Command::Batch(wrong)).await?;
        assert_eq!(
            refused.data,
            Response::Rejected(Rejected::StaleEpoch {
                shard: 3,
                batch: 1,
                current: 0
            })
        );
        assert_eq!(
            storage.load_state(&counter).await?,
            Some(Bytes::from_static(b"1"))
        );
        raft.shutdown().await?;
        drop(raft);
        storage.close().await?;
        refused.log_id.index
    };

    tracing::info!("--- restart on the same files: the node leads again, nothing lost");
    let (raft, storage, cluster) = start(dir.path()).await?;
    raft.wait(wait)
        .current_leader(1, "node 1 leads again")
        .await?;
    assert_eq!(
        cluster.borrow().generation(),
        0,
        "the cluster state is back"
    );
    raft.wait(wait)
        .applied_index_at_least(Some(last_index), "applied what it had")
        .await?;
    assert_eq!(
        storage.load_state(&counter).await?,
        Some(Bytes::from_static(b"1"))
    );
    let mut batch = WriteBatch::new(shard, epoch_of(&raft, &cluster, shard).await?);
    batch.put_state(&counter, b"2".to_vec());
    let written = raft.client_write(Command::Batch(batch)).await?;
    assert!(written.log_id.index > last_index);
    assert_eq!(
        storage.load_state(&counter).await?,
        Some(Bytes::from_static(b"2"))
    );
    raft.shutdown().await?;
    Ok(())
}
