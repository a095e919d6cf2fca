//! [`StateMachine`]: batches land in the storage backend, stale epochs are
//! refused, `last_applied` and membership survive a reopen, re-applying
//! after a lost applied-state record converges (except for the documented
//! `RescheduleMessage` case), and snapshots without the data are refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::testing::{blank_ent, log_id, membership_ent};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use shoal_raft::{Command, Entry, StateMachine, TypeConfig};
use shoal_storage::{
    EntityKey, Epoch, MemoryStorage, Message, RequestId, ShardId, StepIndex, Storage, Timestamp,
    WriteBatch,
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

#[tokio::test]
async fn batches_apply_fence_and_survive_reopen() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raft-state.redb");
    let storage = memory();
    let shard = ShardId::new(4);
    let counter = EntityKey::new(shard, "Counter", "c-1")?;

    tracing::info!("--- membership, a batch at epoch 2, a stale one at epoch 1, a blank");
    {
        let mut sm = StateMachine::open(&path, storage.clone())?;
        let mut fresh = WriteBatch::new(shard, Epoch::new(2));
        fresh.put_state(&counter, b"two".to_vec());
        let mut stale = WriteBatch::new(shard, Epoch::new(1));
        stale.put_state(&counter, b"stale".to_vec());
        apply(
            &mut sm,
            vec![
                membership_ent::<TypeConfig>(1, 1, 1, vec![BTreeSet::from([1, 2, 3])]),
                batch_entry(2, fresh),
                batch_entry(3, stale),
                blank_ent::<TypeConfig>(1, 1, 4),
            ],
        )
        .await?;
        assert_eq!(
            storage.load_state(&counter).await?,
            Some(Bytes::from_static(b"two"))
        );
        assert_eq!(storage.shard_epoch(shard).await?, Epoch::new(2));
    }

    tracing::info!("--- reopen: last_applied and membership are back");
    let mut sm = StateMachine::open(&path, storage.clone())?;
    let (applied, membership) = sm.applied_state().await?;
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 4)));
    assert_eq!(membership.log_id(), &Some(log_id::<TypeConfig>(1, 1, 1)));
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    Ok(())
}

/// A workflow step, a reply, a state write, a timer-free fence: the ops a
/// crash between the backend's commit and the applied-state commit makes
/// openraft apply a second time.
fn workflow_batches(shard: ShardId) -> anyhow::Result<Vec<WriteBatch>> {
    let order = EntityKey::new(shard, "Order", "o-1")?;
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
    let mut second = WriteBatch::new(shard, Epoch::new(1));
    second.put_state(&order, b"paid".to_vec());
    second.ack(request, b"ok".to_vec());
    second.delete_journal(&order, request);
    let mut third = WriteBatch::new(shard, Epoch::new(2));
    third.append_journal(
        &order,
        RequestId::new(43),
        StepIndex::new(0),
        b"next".to_vec(),
    );
    Ok(vec![first, second, third])
}

#[tokio::test]
async fn re_applying_after_a_lost_applied_record_converges() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let shard = ShardId::new(1);
    let order = EntityKey::new(shard, "Order", "o-1")?;
    let storage = memory();
    let entries: Vec<Entry> = workflow_batches(shard)?
        .into_iter()
        .enumerate()
        .map(|(i, batch)| batch_entry(i as u64 + 1, batch))
        .collect();

    tracing::info!("--- apply once");
    let mut sm = StateMachine::open(dir.path().join("a.redb"), storage.clone())?;
    apply(&mut sm, entries.clone()).await?;

    tracing::info!("--- the applied-state record is lost: openraft applies all of it again");
    let mut again = StateMachine::open(dir.path().join("b.redb"), storage.clone())?;
    apply(&mut again, entries).await?;

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
    assert_eq!(storage.shard_epoch(shard).await?, Epoch::new(2));
    Ok(())
}

/// Pins the documented exception: a re-applied `RescheduleMessage` counts
/// an attempt twice. If the storage layer makes it idempotent (or gains an
/// atomic applied marker), this test should change with the docs.
#[tokio::test]
async fn re_applied_reschedule_counts_an_attempt_twice() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let shard = ShardId::new(1);
    let target = EntityKey::new(shard, "Mailbox", "m-1")?;
    let request = RequestId::new(5);
    let storage = memory();
    let mut enqueue = WriteBatch::new(shard, Epoch::new(1));
    enqueue.enqueue(Message::new(
        request,
        target,
        "handle",
        Bytes::new(),
        Timestamp::from_unix_ms(10),
    ));
    let mut reschedule = WriteBatch::new(shard, Epoch::new(1));
    reschedule.reschedule(request, Timestamp::from_unix_ms(20));
    let entries = vec![batch_entry(1, enqueue), batch_entry(2, reschedule)];

    let mut sm = StateMachine::open(dir.path().join("a.redb"), storage.clone())?;
    apply(&mut sm, entries.clone()).await?;
    let mut again = StateMachine::open(dir.path().join("b.redb"), storage.clone())?;
    apply(&mut again, entries).await?;

    let message = storage
        .read_message(shard, request)
        .await?
        .expect("still pending");
    assert_eq!(message.attempts, 2, "one reschedule, counted twice");
    Ok(())
}

#[tokio::test]
async fn snapshots_without_the_data_are_refused() -> anyhow::Result<()> {
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

    tracing::info!("--- the leader builds a snapshot at entry 3 (data up to entry 2)");
    let mut leader = StateMachine::open(dir.path().join("leader.redb"), memory())?;
    apply(&mut leader, entries.clone()).await?;
    let snapshot = leader
        .try_create_snapshot_builder(true)
        .await
        .expect("always builds")
        .build_snapshot()
        .await?;
    assert_eq!(
        snapshot.meta.last_log_id,
        Some(log_id::<TypeConfig>(1, 1, 3))
    );
    let current = leader.get_current_snapshot().await?.expect("stored");
    assert_eq!(current.meta, snapshot.meta);

    tracing::info!("--- a new node lacks the data: refused, nothing changes");
    let mut empty = StateMachine::open(dir.path().join("empty.redb"), memory())?;
    let error = empty
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await
        .expect_err("must refuse");
    assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
    assert!(error.to_string().contains("cannot transfer"), "{error}");
    assert_eq!(empty.applied_state().await?.0, None);
    assert!(empty.get_current_snapshot().await?.is_none());

    tracing::info!("--- garbage snapshot data is an error, not a panic");
    let error = empty
        .install_snapshot(&snapshot.meta, Bytes::from_static(b"\xff\xff\xff"))
        .await
        .expect_err("must refuse");
    assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);

    tracing::info!("--- a follower that applied the data entry installs it");
    let mut follower = StateMachine::open(dir.path().join("follower.redb"), memory())?;
    apply(&mut follower, entries[..2].to_vec()).await?;
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
        .await?;
    let (applied, membership) = follower.applied_state().await?;
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 3)));
    assert_eq!(membership, snapshot.meta.last_membership);
    Ok(())
}
