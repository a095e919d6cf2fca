//! [`StateMachine`]: batches land in the storage backend together with the
//! applied marker (exactly once: nothing is applied twice, across reopen and
//! a failed group), stale epochs are refused, `last_applied` and membership
//! survive a reopen, an older build's applied-state file is migrated, and
//! snapshots carry the data: a fresh node installs the leader's dataset.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::testing::{blank_ent, log_id, membership_ent};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use shoal_raft::{APPLIED_MARKER, Command, Entry, SNAPSHOT_FILE, StateMachine, TypeConfig};
use shoal_storage::{
    EntityKey, Epoch, MemoryStorage, Message, MetaKey, RedbConfig, RedbStorage, RequestId, ShardId,
    ShardRange, StepIndex, Storage, Timestamp, WriteBatch,
};

fn batch_entry(index: u64, batch: WriteBatch) -> Entry {
    Entry {
        log_id: log_id::<TypeConfig>(1, 1, index),
        payload: EntryPayload::Normal(Command::Batch(batch)),
    }
}

async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) -> anyhow::Result<()> {
    let items = entries.into_iter().map(|entry| Ok((entry, None)));
    sm.apply(futures::stream::iter(items)).await?;
    Ok(())
}

fn memory() -> Arc<dyn Storage> {
    Arc::new(MemoryStorage::new())
}

fn redb(path: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(Arc::new(RedbStorage::open(
        RedbConfig::builder(path).build()?,
    )?))
}

async fn export(storage: &Arc<dyn Storage>) -> anyhow::Result<Vec<u8>> {
    Ok(shoal_storage::snapshot::read_to_end(storage.export(ShardRange::ALL).await?).await?)
}

/// Writes an applied-state file as builds before the applied marker did
/// (magic `shoal-raft-state`, version 1), with `last_applied` =
/// (term 1, node 1, `index`) if given.
pub fn write_legacy_state_file(path: &Path, index: Option<u64>) -> anyhow::Result<()> {
    let db = redb::Database::create(path)?;
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))?;
        meta.insert("magic", b"shoal-raft-state".as_slice())?;
        meta.insert("format_version", 1u32.to_be_bytes().as_slice())?;
        if let Some(index) = index {
            // protobuf LogId { term = 1; node_id = 2; index = 3 }
            let index = u8::try_from(index)?;
            meta.insert("last_applied", [0x08, 1, 0x10, 1, 0x18, index].as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

#[tokio::test]
async fn batches_apply_fence_and_survive_reopen() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let storage = memory();
    let shard = ShardId::new(4);
    let counter = EntityKey::new(shard, "Counter", "c-1")?;

    tracing::info!(
        "--- membership (placement generation 1), a batch at epoch 1, one at a stale \
         epoch 0 and one at epoch 2, a blank"
    );
    {
        let mut sm = StateMachine::open(dir.path(), storage.clone()).await?;
        let mut fresh = WriteBatch::new(shard, Epoch::new(1));
        fresh.put_state(&counter, b"one".to_vec());
        let mut stale = WriteBatch::new(shard, Epoch::new(0));
        stale.put_state(&counter, b"stale".to_vec());
        let mut ahead = WriteBatch::new(shard, Epoch::new(2));
        ahead.put_state(&counter, b"ahead".to_vec());
        apply(
            &mut sm,
            vec![
                membership_ent::<TypeConfig>(1, 1, 1, vec![BTreeSet::from([1, 2, 3])]),
                batch_entry(2, fresh),
                batch_entry(3, stale),
                batch_entry(4, ahead),
                blank_ent::<TypeConfig>(1, 1, 5),
            ],
        )
        .await?;
        assert_eq!(
            storage.load_state(&counter).await?,
            Some(Bytes::from_static(b"one"))
        );
        assert_eq!(storage.shard_epoch(shard).await?, Epoch::new(1));
        assert_eq!(sm.cluster_state().epoch(shard), Some(Epoch::new(1)));
        assert!(
            storage
                .read_meta(&MetaKey::new(APPLIED_MARKER)?)
                .await?
                .is_some()
        );
    }

    tracing::info!("--- reopen: last_applied and membership are back, from storage");
    let mut sm = StateMachine::open(dir.path(), storage.clone()).await?;
    let (applied, membership) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 5)));
    assert_eq!(sm.cluster_state().generation(), 1);
    assert_eq!(*sm.cluster().borrow(), sm.cluster_state());
    assert_eq!(membership.log_id(), &Some(log_id::<TypeConfig>(1, 1, 1)));
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    tracing::info!("--- a fresh backend has no marker: nothing applied");
    let other = tempfile::tempdir()?;
    let mut fresh = StateMachine::open(other.path(), memory()).await?;
    assert_eq!(fresh.applied_state().await?.0, None);
    Ok(())
}

/// A membership of node 1 (epoch 1), a workflow step, a reply, a state
/// write, a reschedule, then a membership of node 2 alone (the shard moves:
/// epoch 4) and a batch at that epoch: every op kind that re-applying
/// could double-count, and a fence raise.
fn workflow_entries(shard: ShardId) -> anyhow::Result<Vec<Entry>> {
    let [first, second, third] = workflow_batches(shard)?;
    Ok(vec![
        membership_ent::<TypeConfig>(1, 1, 1, vec![BTreeSet::from([1])]),
        batch_entry(2, first),
        batch_entry(3, second),
        membership_ent::<TypeConfig>(1, 1, 4, vec![BTreeSet::from([2])]),
        batch_entry(5, third),
    ])
}

fn workflow_batches(shard: ShardId) -> anyhow::Result<[WriteBatch; 3]> {
    let order = EntityKey::new(shard, "Order", "o-1")?;
    let mailbox = EntityKey::new(shard, "Mailbox", "m-1")?;
    let request = RequestId::new(42);
    let mut first = WriteBatch::new(shard, Epoch::new(1));
    first.enqueue(Message::new(
        request,
        order.clone(),
        "pay",
        Bytes::from_static(b"args"),
        Timestamp::from_unix_ms(1_000),
    ));
    first.append_journal(&order, request, StepIndex::new(0), b"charged".to_vec());
    first.enqueue(Message::new(
        RequestId::new(5),
        mailbox,
        "handle",
        Bytes::new(),
        Timestamp::from_unix_ms(10),
    ));
    let mut second = WriteBatch::new(shard, Epoch::new(1));
    second.put_state(&order, b"paid".to_vec());
    second.ack(request, b"ok".to_vec());
    second.delete_journal(&order, request);
    second.reschedule(RequestId::new(5), Timestamp::from_unix_ms(20));
    let mut third = WriteBatch::new(shard, Epoch::new(4));
    third.append_journal(
        &order,
        RequestId::new(43),
        StepIndex::new(0),
        b"next".to_vec(),
    );
    Ok([first, second, third])
}

async fn check_workflow(storage: &Arc<dyn Storage>, shard: ShardId) -> anyhow::Result<()> {
    let order = EntityKey::new(shard, "Order", "o-1")?;
    assert_eq!(
        storage.load_state(&order).await?,
        Some(Bytes::from_static(b"paid"))
    );
    assert_eq!(
        storage.read_reply(shard, RequestId::new(42)).await?,
        Some(Bytes::from_static(b"ok"))
    );
    assert_eq!(storage.read_message(shard, RequestId::new(42)).await?, None);
    assert!(
        storage
            .read_journal(&order, RequestId::new(42))
            .await?
            .is_empty()
    );
    assert_eq!(
        storage
            .read_journal(&order, RequestId::new(43))
            .await?
            .len(),
        1
    );
    assert_eq!(storage.shard_epoch(shard).await?, Epoch::new(4));
    let rescheduled = storage
        .read_message(shard, RequestId::new(5))
        .await?
        .ok_or_else(|| anyhow::anyhow!("message 5 is gone"))?;
    assert_eq!(rescheduled.attempts, 1, "one reschedule, counted once");
    Ok(())
}

/// The batches and the applied marker commit together: after a reopen
/// (redb, closed and reopened: what a crash after `apply` leaves), the
/// marker covers exactly the entries in storage, so re-applying the same
/// entries is skipped and no op — not even `RescheduleMessage` — counts
/// twice; a group that fails advances neither data nor marker.
#[tokio::test]
async fn batches_and_the_applied_marker_commit_together() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("shoal.redb");
    let shard = ShardId::new(1);
    let entries = workflow_entries(shard)?;

    tracing::info!("--- apply once, close the backend");
    {
        let storage = redb(&data)?;
        let mut sm = StateMachine::open(dir.path(), storage.clone()).await?;
        apply(&mut sm, entries.clone()).await?;
        check_workflow(&storage, shard).await?;
        storage.close().await?;
    }

    tracing::info!("--- reopen: the marker is at entry 5; the same entries again change nothing");
    let storage = redb(&data)?;
    let before = export(&storage).await?;
    let mut sm = StateMachine::open(dir.path(), storage.clone()).await?;
    assert_eq!(
        sm.applied_state().await?.0,
        Some(log_id::<TypeConfig>(1, 1, 5))
    );
    let cluster = sm.cluster_state();
    assert_eq!(cluster.generation(), 4, "the cluster state is back too");
    apply(&mut sm, entries.clone()).await?;
    assert_eq!(sm.cluster_state(), cluster);
    check_workflow(&storage, shard).await?;
    assert_eq!(export(&storage).await?, before, "nothing re-applied");

    tracing::info!("--- a group that fails lands nothing, marker included");
    let order = EntityKey::new(shard, "Order", "o-1")?;
    let mut later = WriteBatch::new(shard, Epoch::new(4));
    later.put_state(&order, b"refunded".to_vec());
    storage.close().await?;
    assert!(apply(&mut sm, vec![batch_entry(6, later)]).await.is_err());
    drop(sm);
    let storage = redb(&data)?;
    assert_eq!(export(&storage).await?, before);
    let mut sm = StateMachine::open(dir.path(), storage.clone()).await?;
    assert_eq!(
        sm.applied_state().await?.0,
        Some(log_id::<TypeConfig>(1, 1, 5))
    );
    storage.close().await?;
    Ok(())
}

#[tokio::test]
async fn an_older_applied_state_file_is_migrated() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let legacy = dir.path().join("raft-state.redb");
    write_legacy_state_file(&legacy, Some(7))?;
    let storage = memory();
    let mut sm = StateMachine::open(dir.path(), storage.clone()).await?;
    assert_eq!(
        sm.applied_state().await?.0,
        Some(log_id::<TypeConfig>(1, 1, 7))
    );
    assert!(!legacy.exists());
    assert!(dir.path().join("raft-state.redb.migrated").exists());
    drop(sm);
    let mut again = StateMachine::open(dir.path(), storage).await?;
    assert_eq!(
        again.applied_state().await?.0,
        Some(log_id::<TypeConfig>(1, 1, 7)),
        "the marker is in storage now"
    );

    tracing::info!("--- a damaged one is an error naming it");
    let other = tempfile::tempdir()?;
    let bad = other.path().join("raft-state.redb");
    std::fs::write(&bad, b"not a redb file at all, just some bytes")?;
    let error = match StateMachine::open(other.path(), memory()).await {
        Err(error) => error,
        Ok(_) => anyhow::bail!("a damaged legacy file was accepted"),
    };
    assert!(error.to_string().contains("raft-state.redb"), "{error}");
    Ok(())
}

#[tokio::test]
async fn snapshots_carry_the_data() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let shard = ShardId::new(2);
    let entity = EntityKey::new(shard, "Counter", "c")?;
    let mut batch = WriteBatch::new(shard, Epoch::new(1));
    batch.put_state(&entity, b"1".to_vec());
    let entries = vec![
        membership_ent::<TypeConfig>(1, 1, 1, vec![BTreeSet::from([1])]),
        batch_entry(2, batch),
        blank_ent::<TypeConfig>(1, 1, 3),
    ];

    tracing::info!("--- the leader builds a snapshot at entry 3");
    let leader_storage = memory();
    let leader_dir = dir.path().join("leader");
    let mut leader = StateMachine::open(&leader_dir, leader_storage.clone()).await?;
    apply(&mut leader, entries.clone()).await?;
    let mut builder = leader
        .try_create_snapshot_builder(true)
        .await
        .ok_or_else(|| anyhow::anyhow!("no builder"))?;
    // Applied after the builder was made: not in the snapshot.
    let mut after = WriteBatch::new(shard, Epoch::new(1));
    after.put_state(&entity, b"2".to_vec());
    apply(&mut leader, vec![batch_entry(4, after)]).await?;
    let snapshot = builder.build_snapshot().await?;
    assert_eq!(
        snapshot.meta.last_log_id,
        Some(log_id::<TypeConfig>(1, 1, 3))
    );
    assert!(leader_dir.join(SNAPSHOT_FILE).exists());
    let current = leader
        .get_current_snapshot()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no current snapshot"))?;
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(current.snapshot, snapshot.snapshot);

    tracing::info!("--- garbage data is an error, not a panic, and changes nothing");
    let storage = memory();
    let node_dir = dir.path().join("new");
    let mut node = StateMachine::open(&node_dir, storage.clone()).await?;
    let error = node
        .install_snapshot(&snapshot.meta, Bytes::from_static(b"\xff\xff\xff"))
        .await
        .expect_err("must refuse");
    assert_eq!(error.kind(), std::io::ErrorKind::Unsupported, "{error}");
    assert_eq!(node.applied_state().await?.0, None);
    assert!(node.get_current_snapshot().await?.is_none());
    assert_eq!(storage.load_state(&entity).await?, None);

    tracing::info!("--- a new node installs it: the leader's data at entry 3");
    node.install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await?;
    let (applied, membership) = node.applied_state().await?;
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 3)));
    assert_eq!(membership, snapshot.meta.last_membership);
    let watched = node.cluster();
    assert_eq!(
        node.cluster_state(),
        leader.cluster_state(),
        "the cluster state came with the snapshot"
    );
    assert_eq!(*watched.borrow(), node.cluster_state(), "and was published");
    assert_eq!(node.cluster_state().epoch(shard), Some(Epoch::new(1)));
    assert_eq!(
        storage.load_state(&entity).await?,
        Some(Bytes::from_static(b"1"))
    );
    assert_eq!(export(&storage).await?, snapshot.snapshot.to_vec());
    drop(node);
    let mut reopened = StateMachine::open(&node_dir, storage.clone()).await?;
    assert_eq!(
        reopened.applied_state().await?.0,
        Some(log_id::<TypeConfig>(1, 1, 3))
    );
    let installed = reopened
        .get_current_snapshot()
        .await?
        .ok_or_else(|| anyhow::anyhow!("installed snapshot not kept"))?;
    assert_eq!(installed.meta, snapshot.meta);

    tracing::info!("--- a crash after the import, before the rename: open completes it");
    drop(reopened);
    std::fs::rename(
        node_dir.join(SNAPSHOT_FILE),
        node_dir.join("raft-snapshot.installing"),
    )?;
    std::fs::write(node_dir.join("raft-snapshot.building.1.2"), b"half")?;
    let mut recovered = StateMachine::open(&node_dir, storage.clone()).await?;
    let current = recovered
        .get_current_snapshot()
        .await?
        .ok_or_else(|| anyhow::anyhow!("interrupted install not completed"))?;
    assert_eq!(current.meta, snapshot.meta);
    assert!(!node_dir.join("raft-snapshot.installing").exists());
    assert!(!node_dir.join("raft-snapshot.building.1.2").exists());

    tracing::info!("--- a meta that disagrees with the data's marker is refused");
    let mut wrong = snapshot.meta.clone();
    wrong.last_log_id = Some(log_id::<TypeConfig>(1, 1, 9));
    let mut third = StateMachine::open(dir.path().join("third"), memory()).await?;
    let error = third
        .install_snapshot(&wrong, snapshot.snapshot.clone())
        .await
        .expect_err("must refuse");
    assert!(error.to_string().contains("applied marker"), "{error}");
    Ok(())
}
