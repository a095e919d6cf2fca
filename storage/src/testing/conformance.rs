//! The conformance suite: one async function per rule of the [`Storage`]
//! contract, each taking a fresh, empty [`Fixture`] and panicking with a
//! descriptive message on a violation.
//!
//! Run it with one test per case (readable failures), from a test crate
//! that depends on `tokio` with the `macros` and `rt-multi-thread` features:
//!
//! ```ignore
//! use shoal_storage::testing::Fixture;
//! use shoal_storage::MemoryStorage;
//!
//! shoal_storage::conformance_tests!(|| async { Fixture::new(MemoryStorage::new()) });
//! ```
//!
//! or all at once with [`run_all`]. Cases use shards, ids and times of their
//! own and check only what the contract promises, so they hold for any
//! correct backend. They do not test durability across restarts or file
//! handling (nor when a [`Durability::Deferred`] group reaches the disk):
//! those are backend-specific.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::Fixture;
use crate::batch::{CommitOutcome, OpIndex, SkipReason, WriteBatch};
use crate::error::Error;
use crate::limits;
use crate::snapshot::{self, ShardRange};
use crate::storage::{Durability, Storage};
use crate::types::{
    DeferredValue, EntityKey, Epoch, Message, MetaKey, RequestId, ShardId, ShardScope, StepIndex,
    TimerId, TimerKey, Timestamp,
};

/// A conformance case, boxed so cases can sit in one table.
pub type Case = fn(Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name, in the order [`run_all`] runs them.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |fixture| Box::pin($name(fixture)))),*
        ];
    };
}

cases![
    state_put_load_delete,
    state_is_per_entity,
    journal_reads_in_step_order,
    journal_append_is_first_wins,
    enqueue_dedups_by_request_id,
    due_messages_in_due_order_with_limit,
    reschedule_bumps_attempts_and_due_time,
    ack_commits_with_state_and_journal,
    reply_is_first_wins_and_deletable,
    stale_epoch_applies_nothing,
    epochs_are_per_shard_and_only_rise,
    invalid_batch_applies_nothing,
    ops_apply_in_order,
    dead_letters_list_page_and_replay,
    timers_scan_by_due_time,
    timers_across_shards,
    deferred_is_first_wins,
    shards_are_isolated,
    decoded_batch_applies_the_same,
    concurrent_commits_are_all_visible,
    concurrent_first_wins_has_one_winner,
    group_applies_in_order_with_per_batch_fencing,
    group_meta_alone_overwrites_and_reads_back,
    group_over_limits_applies_nothing,
    deferred_group_is_atomic_visible_and_flushed,
    meta_namespace_is_isolated_from_data,
    export_import_round_trip_replaces_everything,
    export_of_a_shard_range_replaces_only_it,
    import_of_bad_input_changes_nothing,
    close_rejects_further_calls,
];

/// Runs every case in [`CASES`], each on a fresh fixture from `fixture`.
pub async fn run_all<F, Fut>(fixture: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Fixture>,
{
    for (name, case) in CASES {
        tracing::info!("--- conformance case {name}");
        case(fixture().await).await;
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each calling
/// `$fixture()` (an async closure or function returning a
/// [`Fixture`](crate::testing::Fixture)) for a fresh backend.
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@cases $fixture;
            state_put_load_delete,
            state_is_per_entity,
            journal_reads_in_step_order,
            journal_append_is_first_wins,
            enqueue_dedups_by_request_id,
            due_messages_in_due_order_with_limit,
            reschedule_bumps_attempts_and_due_time,
            ack_commits_with_state_and_journal,
            reply_is_first_wins_and_deletable,
            stale_epoch_applies_nothing,
            epochs_are_per_shard_and_only_rise,
            invalid_batch_applies_nothing,
            ops_apply_in_order,
            dead_letters_list_page_and_replay,
            timers_scan_by_due_time,
            timers_across_shards,
            deferred_is_first_wins,
            shards_are_isolated,
            decoded_batch_applies_the_same,
            concurrent_commits_are_all_visible,
            concurrent_first_wins_has_one_winner,
            group_applies_in_order_with_per_batch_fencing,
            group_meta_alone_overwrites_and_reads_back,
            group_over_limits_applies_nothing,
            deferred_group_is_atomic_visible_and_flushed,
            meta_namespace_is_isolated_from_data,
            export_import_round_trip_replaces_everything,
            export_of_a_shard_range_replaces_only_it,
            import_of_bad_input_changes_nothing,
            close_rejects_further_calls,
        );
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = ($fixture)().await;
                $crate::testing::conformance::$case(fixture).await;
            }
        )*

        /// Fails if the suite gained a case this macro does not expand.
        #[test]
        fn conformance_suite_is_complete() {
            let expanded: &[&str] = &[$(stringify!($case)),*];
            let listed: Vec<&str> = $crate::testing::conformance::CASES
                .iter()
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(expanded, listed.as_slice());
        }
    };
}

// ---- Helpers ----

fn shard(n: u32) -> ShardId {
    ShardId::new(n)
}

fn at(unix_ms: u64) -> Timestamp {
    Timestamp::from_unix_ms(unix_ms)
}

fn req(id: u128) -> RequestId {
    RequestId::new(id)
}

fn entity(shard_id: u32, entity_type: &str, id: &str) -> EntityKey {
    EntityKey::new(shard(shard_id), entity_type, id).expect("valid entity key")
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn message(target: &EntityKey, id: u128, due_ms: u64) -> Message {
    Message::new(
        req(id),
        target.clone(),
        "handle",
        bytes(&format!("payload-{id}")),
        at(due_ms),
    )
}

fn batch(shard_id: u32) -> WriteBatch {
    WriteBatch::new(shard(shard_id), Epoch::ZERO)
}

async fn commit(storage: &Arc<dyn Storage>, batch: WriteBatch) -> CommitOutcome {
    let described = format!("{batch:?}");
    match storage.commit(batch).await {
        Ok(outcome) => outcome,
        Err(error) => panic!("commit failed: {error}\nbatch: {described}"),
    }
}

async fn commit_all_applied(storage: &Arc<dyn Storage>, batch: WriteBatch) {
    let outcome = commit(storage, batch).await;
    assert!(
        outcome.applied_all(),
        "expected every op to apply, got skips {:?}",
        outcome.skipped()
    );
}

fn request_ids(messages: &[Message]) -> Vec<u128> {
    messages.iter().map(|m| m.request_id.get()).collect()
}

// ---- Entity state ----

/// State is stored, overwritten and deleted per entity.
pub async fn state_put_load_delete(fixture: Fixture) {
    let storage = fixture.storage();
    let counter = entity(1, "Counter", "c1");
    assert_eq!(storage.load_state(&counter).await.expect("reads"), None);

    let mut b = batch(1);
    b.put_state(&counter, bytes("one"));
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.load_state(&counter).await.expect("reads"),
        Some(bytes("one"))
    );

    let mut b = batch(1);
    b.put_state(&counter, bytes("two"));
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.load_state(&counter).await.expect("reads"),
        Some(bytes("two")),
        "put_state overwrites"
    );

    let mut b = batch(1);
    b.put_state(&counter, Bytes::new());
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.load_state(&counter).await.expect("reads"),
        Some(Bytes::new()),
        "an empty state is a state, not an absence"
    );

    let mut b = batch(1);
    b.delete_state(&counter);
    b.delete_state(&entity(1, "Counter", "never-written"));
    commit_all_applied(storage, b).await;
    assert_eq!(storage.load_state(&counter).await.expect("reads"), None);
}

/// Keys that differ in type, id or by a prefix never alias.
pub async fn state_is_per_entity(fixture: Fixture) {
    let storage = fixture.storage();
    let keys = [
        entity(2, "A", "x"),
        entity(2, "A", "xy"),
        entity(2, "A", ""),
        entity(2, "AB", "x"),
        entity(2, "B", "x"),
        entity(2, "Ax", ""),
    ];
    let mut b = batch(2);
    for (i, key) in keys.iter().enumerate() {
        b.put_state(key, bytes(&format!("state-{i}")));
    }
    commit_all_applied(storage, b).await;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            storage.load_state(key).await.expect("reads"),
            Some(bytes(&format!("state-{i}"))),
            "state of {key}"
        );
    }
}

// ---- Journal ----

/// Journal entries come back in step order (numeric, not insertion order),
/// per execution; deleting an execution deletes only its entries.
pub async fn journal_reads_in_step_order(fixture: Fixture) {
    let storage = fixture.storage();
    let workflow = entity(3, "Order", "o1");
    let other_entity = entity(3, "Order", "o10");
    let (run, other_run) = (req(100), req(101));

    for steps in [[256u32, 2], [0, 10], [1, 255]] {
        let mut b = batch(3);
        for step in steps {
            b.append_journal(
                &workflow,
                run,
                StepIndex::new(step),
                bytes(&format!("s{step}")),
            );
        }
        b.append_journal(
            &workflow,
            other_run,
            StepIndex::new(steps[0]),
            bytes("other run"),
        );
        b.append_journal(
            &other_entity,
            run,
            StepIndex::new(steps[1]),
            bytes("other entity"),
        );
        commit_all_applied(storage, b).await;
    }

    let entries = storage.read_journal(&workflow, run).await.expect("reads");
    let steps: Vec<u32> = entries.iter().map(|e| e.step.get()).collect();
    assert_eq!(steps, [0, 1, 2, 10, 255, 256], "step order");
    for entry in &entries {
        assert_eq!(entry.entry, bytes(&format!("s{}", entry.step)));
    }
    assert_eq!(
        storage
            .read_journal(&workflow, other_run)
            .await
            .expect("reads")
            .len(),
        3
    );
    assert_eq!(
        storage
            .read_journal(&other_entity, run)
            .await
            .expect("reads")
            .len(),
        3
    );
    assert!(
        storage
            .read_journal(&workflow, req(999))
            .await
            .expect("reads")
            .is_empty()
    );

    let mut b = batch(3);
    b.delete_journal(&workflow, run);
    commit_all_applied(storage, b).await;
    assert!(
        storage
            .read_journal(&workflow, run)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        storage
            .read_journal(&workflow, other_run)
            .await
            .expect("reads")
            .len(),
        3,
        "other executions survive"
    );
    assert_eq!(
        storage
            .read_journal(&other_entity, run)
            .await
            .expect("reads")
            .len(),
        3,
        "other entities survive"
    );
}

/// A journaled step is never overwritten; the skip is reported.
pub async fn journal_append_is_first_wins(fixture: Fixture) {
    let storage = fixture.storage();
    let workflow = entity(4, "W", "w");
    let run = req(7);
    let mut b = batch(4);
    b.append_journal(&workflow, run, StepIndex::new(0), bytes("first"));
    commit_all_applied(storage, b).await;

    let mut b = batch(4);
    let again = b.append_journal(&workflow, run, StepIndex::new(0), bytes("second"));
    let next = b.append_journal(&workflow, run, StepIndex::new(1), bytes("next"));
    let outcome = commit(storage, b).await;
    assert_eq!(
        outcome.skip_reason(again),
        Some(SkipReason::JournalStepExists)
    );
    assert_eq!(outcome.skip_reason(next), None);
    let entries = storage.read_journal(&workflow, run).await.expect("reads");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].entry, bytes("first"));
}

// ---- Mailbox ----

/// Enqueue is insert-if-absent by request id, and also refuses requests
/// that were answered or dead-lettered.
pub async fn enqueue_dedups_by_request_id(fixture: Fixture) {
    let storage = fixture.storage();
    let target = entity(5, "Inbox", "i1");

    let mut b = batch(5);
    b.enqueue(message(&target, 1, 10));
    commit_all_applied(storage, b).await;
    assert_eq!(
        outcome_of_enqueue(storage, &target, 1).await,
        Some(SkipReason::MessagePending)
    );
    let stored = storage
        .read_message(shard(5), req(1))
        .await
        .expect("reads")
        .expect("message is pending");
    assert_eq!(
        stored.payload,
        bytes("payload-1"),
        "the first message is kept"
    );
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.handler, "handle");
    assert_eq!(stored.target, target);

    let mut b = batch(5);
    b.ack(req(1), bytes("reply-1"));
    commit_all_applied(storage, b).await;
    assert_eq!(
        outcome_of_enqueue(storage, &target, 1).await,
        Some(SkipReason::MessageReplied)
    );
    assert_eq!(
        storage.read_reply(shard(5), req(1)).await.expect("reads"),
        Some(bytes("reply-1")),
        "a duplicate reads the stored reply"
    );

    let mut b = batch(5);
    b.enqueue(message(&target, 2, 10));
    b.dead_letter(req(2), "poison", at(20));
    commit_all_applied(storage, b).await;
    assert_eq!(
        outcome_of_enqueue(storage, &target, 2).await,
        Some(SkipReason::MessageDeadLettered)
    );
    assert_eq!(outcome_of_enqueue(storage, &target, 3).await, None);
}

async fn outcome_of_enqueue(
    storage: &Arc<dyn Storage>,
    target: &EntityKey,
    id: u128,
) -> Option<SkipReason> {
    let mut b = WriteBatch::new(target.shard(), Epoch::ZERO);
    let op = b.enqueue(message(target, id, 10));
    commit(storage, b).await.skip_reason(op)
}

/// Pending messages list by due time (inclusive bound, ties by request id),
/// bounded by the limit; the next due time is the earliest.
pub async fn due_messages_in_due_order_with_limit(fixture: Fixture) {
    let storage = fixture.storage();
    let target = entity(6, "Inbox", "i");
    assert!(
        storage
            .due_messages(shard(6), Timestamp::MAX, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        storage.next_message_due(shard(6)).await.expect("reads"),
        None
    );

    let mut b = batch(6);
    for (id, due) in [(5, 300), (4, 100), (3, 200), (2, 100), (1, 1_000)] {
        b.enqueue(message(&target, id, due));
    }
    commit_all_applied(storage, b).await;

    let due = storage
        .due_messages(shard(6), at(200), 10)
        .await
        .expect("reads");
    assert_eq!(
        request_ids(&due),
        [2, 4, 3],
        "due order, ties by id, bound inclusive"
    );
    let due = storage
        .due_messages(shard(6), at(199), 10)
        .await
        .expect("reads");
    assert_eq!(request_ids(&due), [2, 4]);
    let due = storage
        .due_messages(shard(6), Timestamp::MAX, 3)
        .await
        .expect("reads");
    assert_eq!(request_ids(&due), [2, 4, 3], "limit");
    let due = storage
        .due_messages(shard(6), Timestamp::MAX, 0)
        .await
        .expect("reads");
    assert!(due.is_empty(), "limit 0");
    let due = storage
        .due_messages(shard(6), at(99), 10)
        .await
        .expect("reads");
    assert!(due.is_empty(), "nothing due yet");
    assert_eq!(
        storage.next_message_due(shard(6)).await.expect("reads"),
        Some(at(100))
    );

    let all = storage
        .due_messages(shard(6), Timestamp::MAX, usize::MAX)
        .await
        .expect("a huge limit is clamped, not an error");
    assert_eq!(all.len(), 5);
}

/// Rescheduling bumps attempts and moves the message in due order; a
/// missing message is reported, not an error.
pub async fn reschedule_bumps_attempts_and_due_time(fixture: Fixture) {
    let storage = fixture.storage();
    let target = entity(7, "Inbox", "i");
    let mut b = batch(7);
    b.enqueue(message(&target, 1, 100));
    b.enqueue(message(&target, 2, 200));
    commit_all_applied(storage, b).await;

    for (attempt, due) in [(1, 500), (2, 150)] {
        let mut b = batch(7);
        b.reschedule(req(1), at(due));
        commit_all_applied(storage, b).await;
        let stored = storage
            .read_message(shard(7), req(1))
            .await
            .expect("reads")
            .expect("still pending");
        assert_eq!(stored.attempts, attempt);
        assert_eq!(stored.next_attempt_at, at(due));
        assert_eq!(stored.enqueued_at, at(100), "enqueue time is kept");
    }
    let due = storage
        .due_messages(shard(7), Timestamp::MAX, 10)
        .await
        .expect("reads");
    assert_eq!(
        request_ids(&due),
        [1, 2],
        "one index entry per message, at its new time"
    );
    assert_eq!(
        storage.next_message_due(shard(7)).await.expect("reads"),
        Some(at(150))
    );

    let mut b = batch(7);
    let missing = b.reschedule(req(9), at(1));
    let outcome = commit(storage, b).await;
    assert_eq!(
        outcome.skip_reason(missing),
        Some(SkipReason::MessageNotFound)
    );
    assert_eq!(
        storage.read_message(shard(7), req(9)).await.expect("reads"),
        None
    );
}

/// A state change, its journal entry, the reply and the acknowledgement
/// commit together.
pub async fn ack_commits_with_state_and_journal(fixture: Fixture) {
    let storage = fixture.storage();
    let account = entity(8, "Account", "a1");
    let mut b = batch(8);
    b.enqueue(message(&account, 1, 10));
    b.enqueue(message(&account, 2, 20));
    commit_all_applied(storage, b).await;

    let mut b = batch(8);
    b.put_state(&account, bytes("balance=5"));
    b.append_journal(&account, req(1), StepIndex::new(0), bytes("deposited 5"));
    b.ack(req(1), bytes("ok"));
    commit_all_applied(storage, b).await;

    assert_eq!(
        storage.load_state(&account).await.expect("reads"),
        Some(bytes("balance=5"))
    );
    assert_eq!(
        storage
            .read_journal(&account, req(1))
            .await
            .expect("reads")
            .len(),
        1
    );
    assert_eq!(
        storage.read_reply(shard(8), req(1)).await.expect("reads"),
        Some(bytes("ok"))
    );
    assert_eq!(
        storage.read_message(shard(8), req(1)).await.expect("reads"),
        None
    );
    let due = storage
        .due_messages(shard(8), Timestamp::MAX, 10)
        .await
        .expect("reads");
    assert_eq!(
        request_ids(&due),
        [2],
        "the acknowledged message left the due index"
    );

    // An ack with no pending message just records the reply (idempotency).
    let mut b = batch(8);
    b.ack(req(50), bytes("direct"));
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.read_reply(shard(8), req(50)).await.expect("reads"),
        Some(bytes("direct"))
    );
}

/// The first reply wins (the message is still acknowledged); replies can be
/// forgotten.
pub async fn reply_is_first_wins_and_deletable(fixture: Fixture) {
    let storage = fixture.storage();
    let target = entity(9, "T", "t");
    let mut b = batch(9);
    b.ack(req(1), bytes("first"));
    b.enqueue(message(&target, 2, 10));
    commit(storage, b).await;

    let mut b = batch(9);
    let again = b.ack(req(1), bytes("second"));
    let pending = b.ack(req(2), bytes("reply-2"));
    let outcome = commit(storage, b).await;
    assert_eq!(outcome.skip_reason(again), Some(SkipReason::ReplyExists));
    assert_eq!(outcome.skip_reason(pending), None);
    assert_eq!(
        storage.read_reply(shard(9), req(1)).await.expect("reads"),
        Some(bytes("first")),
        "the first reply is kept"
    );

    // A message pending while its reply exists (replayed after a failure
    // reply): a later ack keeps the first reply but still removes the message.
    let mut b = batch(9);
    b.enqueue(message(&target, 3, 10));
    b.dead_letter(req(3), "failed", at(11));
    b.ack(req(3), bytes("failure reply"));
    b.replay_dead_letter(req(3), at(12));
    commit_all_applied(storage, b).await;
    assert!(
        storage
            .read_message(shard(9), req(3))
            .await
            .expect("reads")
            .is_some()
    );
    let mut b = batch(9);
    let late = b.ack(req(3), bytes("late"));
    let outcome = commit(storage, b).await;
    assert_eq!(outcome.skip_reason(late), Some(SkipReason::ReplyExists));
    assert_eq!(
        storage.read_message(shard(9), req(3)).await.expect("reads"),
        None
    );
    assert_eq!(
        storage.read_reply(shard(9), req(3)).await.expect("reads"),
        Some(bytes("failure reply"))
    );

    let mut b = batch(9);
    b.delete_reply(req(1));
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.read_reply(shard(9), req(1)).await.expect("reads"),
        None
    );
    let mut b = batch(9);
    b.ack(req(1), bytes("after delete"));
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.read_reply(shard(9), req(1)).await.expect("reads"),
        Some(bytes("after delete"))
    );
}

// ---- Fencing ----

/// A batch older than the shard's epoch is rejected whole.
pub async fn stale_epoch_applies_nothing(fixture: Fixture) {
    let storage = fixture.storage();
    let s = shard(10);
    let key = entity(10, "T", "t");
    commit_all_applied(storage, WriteBatch::new(s, Epoch::new(5))).await;
    assert_eq!(storage.shard_epoch(s).await.expect("reads"), Epoch::new(5));

    let mut stale = WriteBatch::new(s, Epoch::new(4));
    stale.put_state(&key, bytes("stale"));
    stale.append_journal(&key, req(1), StepIndex::new(0), bytes("stale"));
    stale.enqueue(message(&key, 2, 10));
    stale.ack(req(3), bytes("stale"));
    stale.put_timer(TimerKey::new(s, at(1), TimerId::new(1)), bytes("stale"));
    stale.resolve_deferred(&key, "d", DeferredValue::Success(bytes("stale")));
    match storage.commit(stale).await {
        Err(Error::StaleEpoch {
            shard,
            batch,
            current,
        }) => {
            assert_eq!((shard, batch, current), (s, Epoch::new(4), Epoch::new(5)));
        }
        other => panic!("expected StaleEpoch, got {other:?}"),
    }

    assert_eq!(storage.load_state(&key).await.expect("reads"), None);
    assert!(
        storage
            .read_journal(&key, req(1))
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(storage.read_message(s, req(2)).await.expect("reads"), None);
    assert_eq!(storage.read_reply(s, req(3)).await.expect("reads"), None);
    assert_eq!(
        storage
            .next_timer_due(ShardScope::One(s))
            .await
            .expect("reads"),
        None
    );
    assert_eq!(storage.read_deferred(&key, "d").await.expect("reads"), None);
    assert_eq!(storage.shard_epoch(s).await.expect("reads"), Epoch::new(5));

    let mut current = WriteBatch::new(s, Epoch::new(5));
    current.put_state(&key, bytes("current"));
    commit_all_applied(storage, current).await;
    assert_eq!(
        storage.load_state(&key).await.expect("reads"),
        Some(bytes("current"))
    );
}

/// Epochs are per shard, start at zero, rise with newer batches and never fall.
pub async fn epochs_are_per_shard_and_only_rise(fixture: Fixture) {
    let storage = fixture.storage();
    let (a, b) = (shard(11), shard(12));
    assert_eq!(storage.shard_epoch(a).await.expect("reads"), Epoch::ZERO);
    commit_all_applied(storage, WriteBatch::new(a, Epoch::ZERO)).await;
    assert_eq!(storage.shard_epoch(a).await.expect("reads"), Epoch::ZERO);

    let key = entity(11, "T", "t");
    let mut raise = WriteBatch::new(a, Epoch::new(3));
    raise.put_state(&key, bytes("at 3"));
    commit_all_applied(storage, raise).await;
    assert_eq!(storage.shard_epoch(a).await.expect("reads"), Epoch::new(3));
    assert_eq!(
        storage.shard_epoch(b).await.expect("reads"),
        Epoch::ZERO,
        "other shards keep their epoch"
    );
    commit_all_applied(storage, WriteBatch::new(b, Epoch::new(1))).await;

    let result = storage.commit(WriteBatch::new(a, Epoch::ZERO)).await;
    assert!(
        matches!(result, Err(Error::StaleEpoch { .. })),
        "{result:?}"
    );
    assert_eq!(storage.shard_epoch(a).await.expect("reads"), Epoch::new(3));
    commit_all_applied(storage, WriteBatch::new(a, Epoch::new(u64::MAX))).await;
    assert_eq!(
        storage.shard_epoch(a).await.expect("reads"),
        Epoch::new(u64::MAX)
    );
    assert_eq!(storage.shard_epoch(b).await.expect("reads"), Epoch::new(1));
}

/// A batch breaking a rule is rejected whole, before anything applies.
pub async fn invalid_batch_applies_nothing(fixture: Fixture) {
    let storage = fixture.storage();
    let mine = entity(13, "T", "mine");
    let foreign = entity(14, "T", "foreign");

    let mut b = batch(13);
    b.put_state(&mine, bytes("should not land"));
    b.put_state(&foreign, bytes("wrong shard"));
    let result = storage.commit(b).await;
    assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}");

    let mut b = batch(13);
    b.put_state(&mine, bytes("should not land"));
    b.put_state(&mine, vec![0u8; limits::VALUE_BYTES_MAX + 1]);
    let result = storage.commit(b).await;
    assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}");

    let mut b = batch(13);
    b.put_state(&mine, bytes("should not land"));
    b.resolve_deferred(&mine, "", DeferredValue::Success(Bytes::new()));
    let result = storage.commit(b).await;
    assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}");

    assert_eq!(storage.load_state(&mine).await.expect("reads"), None);
    assert_eq!(storage.load_state(&foreign).await.expect("reads"), None);
}

/// Ops apply in order: each sees the effects of the ones before it.
pub async fn ops_apply_in_order(fixture: Fixture) {
    let storage = fixture.storage();
    let key = entity(15, "T", "t");
    let mut b = batch(15);
    b.put_state(&key, bytes("gone"));
    b.delete_state(&key);
    b.enqueue(message(&key, 1, 10));
    b.reschedule(req(1), at(20));
    b.enqueue(message(&key, 2, 10));
    b.ack(req(2), bytes("done"));
    let dup = b.enqueue(message(&key, 2, 10));
    b.resolve_deferred(&key, "d", DeferredValue::Success(bytes("v1")));
    b.delete_deferred(&key, "d");
    b.resolve_deferred(&key, "d", DeferredValue::Success(bytes("v2")));
    let outcome = commit(storage, b).await;
    assert_eq!(outcome.skipped().len(), 1, "{:?}", outcome.skipped());
    assert_eq!(outcome.skip_reason(dup), Some(SkipReason::MessageReplied));

    assert_eq!(storage.load_state(&key).await.expect("reads"), None);
    let pending = storage
        .read_message(shard(15), req(1))
        .await
        .expect("reads")
        .expect("pending");
    assert_eq!((pending.attempts, pending.next_attempt_at), (1, at(20)));
    assert_eq!(
        storage
            .read_message(shard(15), req(2))
            .await
            .expect("reads"),
        None
    );
    assert_eq!(
        storage.read_deferred(&key, "d").await.expect("reads"),
        Some(DeferredValue::Success(bytes("v2")))
    );
}

// ---- Dead letters ----

/// Dead letters leave the due list, list in request order with paging,
/// and replay back into the mailbox with attempts reset.
pub async fn dead_letters_list_page_and_replay(fixture: Fixture) {
    let storage = fixture.storage();
    let s = shard(16);
    let target = entity(16, "T", "t");
    let mut b = batch(16);
    for id in 1..=5 {
        b.enqueue(message(&target, id, 10 * id as u64));
    }
    b.reschedule(req(4), at(100));
    commit_all_applied(storage, b).await;

    let mut b = batch(16);
    b.dead_letter(req(4), "handler failed 10 times", at(1_000));
    b.dead_letter(req(2), "unknown handler", at(1_001));
    b.dead_letter(req(5), "payload does not decode", at(1_002));
    // A failure reply for the callers of request 5, in the same batch.
    b.ack(req(5), bytes("failed: payload does not decode"));
    commit_all_applied(storage, b).await;

    let due = storage
        .due_messages(s, Timestamp::MAX, 10)
        .await
        .expect("reads");
    assert_eq!(request_ids(&due), [1, 3]);
    assert_eq!(
        storage.read_reply(s, req(5)).await.expect("reads"),
        Some(bytes("failed: payload does not decode"))
    );

    let letters = storage.dead_letters(s, None, 10).await.expect("reads");
    let ids: Vec<u128> = letters.iter().map(|d| d.message.request_id.get()).collect();
    assert_eq!(ids, [2, 4, 5]);
    assert_eq!(letters[1].reason, "handler failed 10 times");
    assert_eq!(letters[1].dead_lettered_at, at(1_000));
    assert_eq!(letters[1].message.attempts, 1, "kept as it was");
    assert_eq!(letters[1].message.payload, bytes("payload-4"));

    let page = storage.dead_letters(s, None, 2).await.expect("reads");
    assert_eq!(page.len(), 2);
    let rest = storage
        .dead_letters(s, Some(page[1].message.request_id), 2)
        .await
        .expect("reads");
    let ids: Vec<u128> = rest.iter().map(|d| d.message.request_id.get()).collect();
    assert_eq!(ids, [5], "paging resumes after the last id");
    assert!(
        storage
            .dead_letters(s, Some(req(u128::MAX)), 10)
            .await
            .expect("reads")
            .is_empty()
    );

    let mut b = batch(16);
    b.replay_dead_letter(req(4), at(5));
    let missing_letter = b.replay_dead_letter(req(77), at(5));
    let missing_message = b.dead_letter(req(77), "nope", at(5));
    b.delete_dead_letter(req(2));
    let outcome = commit(storage, b).await;
    assert_eq!(
        outcome.skip_reason(missing_letter),
        Some(SkipReason::DeadLetterNotFound)
    );
    assert_eq!(
        outcome.skip_reason(missing_message),
        Some(SkipReason::MessageNotFound)
    );
    let replayed = storage
        .read_message(s, req(4))
        .await
        .expect("reads")
        .expect("back in the mailbox");
    assert_eq!((replayed.attempts, replayed.next_attempt_at), (0, at(5)));
    let due = storage
        .due_messages(s, Timestamp::MAX, 10)
        .await
        .expect("reads");
    assert_eq!(request_ids(&due), [4, 1, 3]);
    let letters = storage.dead_letters(s, None, 10).await.expect("reads");
    let ids: Vec<u128> = letters.iter().map(|d| d.message.request_id.get()).collect();
    assert_eq!(ids, [5], "replayed and deleted letters are gone");
}

// ---- Timers ----

/// Timers of a shard scan in due order up to a time, bounded by the limit;
/// the next deadline is the earliest; deleted timers are gone.
pub async fn timers_scan_by_due_time(fixture: Fixture) {
    let storage = fixture.storage();
    let s = shard(17);
    let scope = ShardScope::One(s);
    assert_eq!(storage.next_timer_due(scope).await.expect("reads"), None);
    assert!(
        storage
            .due_timers(scope, Timestamp::MAX, 10)
            .await
            .expect("reads")
            .is_empty()
    );

    let key = |due: u64, id: u128| TimerKey::new(s, at(due), TimerId::new(id));
    let mut b = batch(17);
    for (due, id) in [(300, 1), (100, 9), (200, 2), (100, 3), (u64::MAX, 4)] {
        b.put_timer(key(due, id), bytes(&format!("t{id}")));
    }
    commit_all_applied(storage, b).await;

    let due = storage.due_timers(scope, at(200), 10).await.expect("reads");
    let keys: Vec<TimerKey> = due.iter().map(|t| t.key).collect();
    assert_eq!(keys, [key(100, 3), key(100, 9), key(200, 2)]);
    assert_eq!(due[0].payload, bytes("t3"));
    let due = storage
        .due_timers(scope, at(1_000), 2)
        .await
        .expect("reads");
    assert_eq!(due.len(), 2, "limit");
    let due = storage
        .due_timers(scope, Timestamp::MAX, 10)
        .await
        .expect("reads");
    assert_eq!(due.len(), 5, "the end of time is inclusive");
    assert_eq!(
        storage.next_timer_due(scope).await.expect("reads"),
        Some(at(100))
    );

    let mut b = batch(17);
    b.delete_timer(key(100, 3));
    b.delete_timer(key(100, 9));
    b.put_timer(key(200, 2), bytes("rewritten"));
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.next_timer_due(scope).await.expect("reads"),
        Some(at(200))
    );
    let due = storage.due_timers(scope, at(200), 10).await.expect("reads");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].payload, bytes("rewritten"), "put_timer overwrites");
}

/// Scans over all shards return the globally earliest timers, in due order.
pub async fn timers_across_shards(fixture: Fixture) {
    let storage = fixture.storage();
    let entries = [
        (18, 500, 1),
        (18, 50, 2),
        (19, 10, 3),
        (19, 400, 4),
        (u32::MAX, 20, 5),
        (0, 300, 6),
    ];
    for (shard_id, due, id) in entries {
        let mut b = batch(shard_id);
        b.put_timer(
            TimerKey::new(shard(shard_id), at(due), TimerId::new(id)),
            bytes("x"),
        );
        commit_all_applied(storage, b).await;
    }
    let due = storage
        .due_timers(ShardScope::All, at(400), 10)
        .await
        .expect("reads");
    let order: Vec<(u32, u64)> = due
        .iter()
        .map(|t| (t.key.shard.get(), t.key.due.as_unix_ms()))
        .collect();
    assert_eq!(
        order,
        [(19, 10), (u32::MAX, 20), (18, 50), (0, 300), (19, 400)]
    );

    let due = storage
        .due_timers(ShardScope::All, Timestamp::MAX, 3)
        .await
        .expect("reads");
    let ids: Vec<u128> = due.iter().map(|t| t.key.id.get()).collect();
    assert_eq!(ids, [3, 5, 2], "the limit keeps the globally earliest");
    assert_eq!(
        storage
            .next_timer_due(ShardScope::All)
            .await
            .expect("reads"),
        Some(at(10))
    );
    assert_eq!(
        storage
            .next_timer_due(ShardScope::One(shard(18)))
            .await
            .expect("reads"),
        Some(at(50))
    );
}

// ---- Deferreds ----

/// The first resolution wins; later ones are reported; deleting re-arms.
pub async fn deferred_is_first_wins(fixture: Fixture) {
    let storage = fixture.storage();
    let key = entity(20, "Approval", "a1");
    let other = entity(20, "Approval", "a2");
    assert_eq!(
        storage
            .read_deferred(&key, "approved")
            .await
            .expect("reads"),
        None
    );

    let mut b = batch(20);
    b.resolve_deferred(&key, "approved", DeferredValue::Success(bytes("yes")));
    b.resolve_deferred(&key, "rejected", DeferredValue::Failure("timed out".into()));
    commit_all_applied(storage, b).await;

    let mut b = batch(20);
    let late = b.resolve_deferred(&key, "approved", DeferredValue::Failure("too late".into()));
    let elsewhere = b.resolve_deferred(&other, "approved", DeferredValue::Success(bytes("no")));
    let outcome = commit(storage, b).await;
    assert_eq!(
        outcome.skip_reason(late),
        Some(SkipReason::DeferredResolved)
    );
    assert_eq!(outcome.skip_reason(elsewhere), None);

    assert_eq!(
        storage
            .read_deferred(&key, "approved")
            .await
            .expect("reads"),
        Some(DeferredValue::Success(bytes("yes")))
    );
    assert_eq!(
        storage
            .read_deferred(&key, "rejected")
            .await
            .expect("reads"),
        Some(DeferredValue::Failure("timed out".into()))
    );
    assert_eq!(
        storage
            .read_deferred(&other, "approved")
            .await
            .expect("reads"),
        Some(DeferredValue::Success(bytes("no")))
    );

    let mut b = batch(20);
    b.delete_deferred(&key, "approved");
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage
            .read_deferred(&key, "approved")
            .await
            .expect("reads"),
        None
    );
    let too_long = "n".repeat(limits::DEFERRED_NAME_BYTES_MAX + 1);
    assert!(matches!(
        storage.read_deferred(&key, &too_long).await,
        Err(Error::Invalid { .. })
    ));
}

// ---- Shards ----

/// The same ids in two shards are different records; scans never leak.
pub async fn shards_are_isolated(fixture: Fixture) {
    let storage = fixture.storage();
    let (one, two) = (shard(21), shard(22));
    let key_one = entity(21, "T", "same");
    let key_two = entity(22, "T", "same");

    let mut b = batch(21);
    b.put_state(&key_one, bytes("one"));
    b.append_journal(&key_one, req(1), StepIndex::new(0), bytes("one"));
    b.enqueue(message(&key_one, 1, 10));
    b.enqueue(message(&key_one, 2, 10));
    b.dead_letter(req(2), "x", at(11));
    b.ack(req(3), bytes("one"));
    b.put_timer(TimerKey::new(one, at(10), TimerId::new(1)), bytes("one"));
    b.resolve_deferred(&key_one, "d", DeferredValue::Success(bytes("one")));
    commit_all_applied(storage, b).await;
    commit_all_applied(storage, WriteBatch::new(one, Epoch::new(9))).await;

    assert_eq!(storage.load_state(&key_two).await.expect("reads"), None);
    assert!(
        storage
            .read_journal(&key_two, req(1))
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        storage.read_message(two, req(1)).await.expect("reads"),
        None
    );
    assert!(
        storage
            .due_messages(two, Timestamp::MAX, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(storage.next_message_due(two).await.expect("reads"), None);
    assert!(
        storage
            .dead_letters(two, None, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(storage.read_reply(two, req(3)).await.expect("reads"), None);
    assert!(
        storage
            .due_timers(ShardScope::One(two), Timestamp::MAX, 10)
            .await
            .expect("reads")
            .is_empty()
    );
    assert_eq!(
        storage
            .next_timer_due(ShardScope::One(two))
            .await
            .expect("reads"),
        None
    );
    assert_eq!(
        storage.read_deferred(&key_two, "d").await.expect("reads"),
        None
    );
    assert_eq!(storage.shard_epoch(two).await.expect("reads"), Epoch::ZERO);

    // The same request id enqueued in shard two is a new message there.
    let mut b = batch(22);
    b.enqueue(message(&key_two, 1, 10));
    b.enqueue(message(&key_two, 3, 10));
    commit_all_applied(storage, b).await;
    let mut b = batch(22);
    b.ack(req(1), bytes("two"));
    commit_all_applied(storage, b).await;
    assert!(
        storage
            .read_message(one, req(1))
            .await
            .expect("reads")
            .is_some(),
        "acking in shard two leaves shard one alone"
    );
    assert_eq!(
        storage.read_reply(one, req(3)).await.expect("reads"),
        Some(bytes("one"))
    );
}

// ---- Encoding ----

/// A batch that went through its encoding applies exactly like the original.
pub async fn decoded_batch_applies_the_same(fixture: Fixture) {
    let storage = fixture.storage();
    let s = shard(23);
    let key = entity(23, "T", "t");
    let mut original = WriteBatch::new(s, Epoch::new(2));
    original.put_state(&key, bytes("state"));
    original.append_journal(&key, req(1), StepIndex::new(3), bytes("entry"));
    original.enqueue(message(&key, 2, 10));
    original.ack(req(1), bytes("reply"));
    original.put_timer(TimerKey::new(s, at(5), TimerId::new(6)), bytes("timer"));
    original.resolve_deferred(&key, "d", DeferredValue::Failure("failed".into()));
    let decoded = WriteBatch::decode(original.encode().as_slice()).expect("decodes");
    assert_eq!(decoded, original);
    commit_all_applied(storage, decoded).await;

    assert_eq!(storage.shard_epoch(s).await.expect("reads"), Epoch::new(2));
    assert_eq!(
        storage.load_state(&key).await.expect("reads"),
        Some(bytes("state"))
    );
    let journal = storage.read_journal(&key, req(1)).await.expect("reads");
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].step, StepIndex::new(3));
    assert_eq!(
        storage
            .read_message(s, req(2))
            .await
            .expect("reads")
            .map(|m| m.payload),
        Some(bytes("payload-2"))
    );
    assert_eq!(
        storage.read_reply(s, req(1)).await.expect("reads"),
        Some(bytes("reply"))
    );
    assert_eq!(
        storage
            .next_timer_due(ShardScope::One(s))
            .await
            .expect("reads"),
        Some(at(5))
    );
    assert_eq!(
        storage.read_deferred(&key, "d").await.expect("reads"),
        Some(DeferredValue::Failure("failed".into()))
    );
}

// ---- Concurrency ----

/// Many tasks committing at once: every acknowledged batch is visible.
pub async fn concurrent_commits_are_all_visible(fixture: Fixture) {
    const TASKS: u32 = 64;
    const BATCHES: u32 = 8;
    let storage = fixture.storage();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let storage = Arc::clone(storage);
        tasks.push(tokio::spawn(async move {
            let s = task % 4;
            for n in 0..BATCHES {
                let key = entity(s, "T", &format!("{task}-{n}"));
                let mut b = batch(s);
                b.put_state(&key, bytes(&format!("v{task}-{n}")));
                b.ack(req(u128::from(task * 1_000 + n)), bytes("ok"));
                commit_all_applied(&storage, b).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("committer task");
    }
    for task in 0..TASKS {
        let s = task % 4;
        for n in 0..BATCHES {
            let key = entity(s, "T", &format!("{task}-{n}"));
            assert_eq!(
                storage.load_state(&key).await.expect("reads"),
                Some(bytes(&format!("v{task}-{n}"))),
                "state of {key}"
            );
            assert_eq!(
                storage
                    .read_reply(shard(s), req(u128::from(task * 1_000 + n)))
                    .await
                    .expect("reads"),
                Some(bytes("ok"))
            );
        }
    }
}

/// Concurrent resolutions of one deferred: exactly one wins, and the
/// stored value is the winner's.
pub async fn concurrent_first_wins_has_one_winner(fixture: Fixture) {
    const TASKS: u32 = 32;
    let storage = fixture.storage();
    let key = entity(24, "T", "race");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let storage = Arc::clone(storage);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = batch(24);
            let op: OpIndex = b.resolve_deferred(
                &key,
                "winner",
                DeferredValue::Success(bytes(&task.to_string())),
            );
            let outcome = commit(&storage, b).await;
            (task, outcome.skip_reason(op).is_none())
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (task, won) = task.await.expect("resolver task");
        if won {
            winners.push(task);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
    assert_eq!(
        storage.read_deferred(&key, "winner").await.expect("reads"),
        Some(DeferredValue::Success(bytes(&winners[0].to_string())))
    );
}

// ---- Commit groups and node metadata ----

fn meta_key(name: &str) -> MetaKey {
    MetaKey::new(name).expect("valid meta key")
}

/// A group applies its batches in order in one call, across shards; a stale
/// or invalid batch gets its own error and applies nothing of itself, the
/// others apply; the meta record is written with the group.
pub async fn group_applies_in_order_with_per_batch_fencing(fixture: Fixture) {
    let storage = fixture.storage();
    let (a, b) = (entity(30, "T", "a"), entity(31, "T", "b"));
    commit_all_applied(storage, WriteBatch::new(shard(31), Epoch::new(5))).await;

    let mut first = batch(30);
    first.put_state(&a, bytes("first"));
    first.append_journal(&a, req(1), StepIndex::new(0), bytes("j0"));
    let mut stale = WriteBatch::new(shard(31), Epoch::new(1));
    stale.put_state(&b, bytes("stale"));
    let mut second = batch(30);
    second.put_state(&a, bytes("second"));
    let repeat = second.append_journal(&a, req(1), StepIndex::new(0), bytes("again"));
    let mut invalid = batch(30);
    invalid.put_state(&b, bytes("foreign shard"));
    let mut current = WriteBatch::new(shard(31), Epoch::new(5));
    current.ack(req(2), bytes("ok"));

    let results = storage
        .commit_group(
            vec![first, stale, second, invalid, current],
            Some((meta_key("conformance.applied"), bytes("log-7"))),
        )
        .await
        .expect("the group commits");
    assert_eq!(results.len(), 5, "one result per batch");
    assert!(results[0].as_ref().is_ok_and(CommitOutcome::applied_all));
    assert!(
        matches!(
            results[1],
            Err(Error::StaleEpoch { current, .. }) if current == Epoch::new(5)
        ),
        "{:?}",
        results[1]
    );
    match &results[2] {
        Ok(outcome) => assert_eq!(
            outcome.skip_reason(repeat),
            Some(SkipReason::JournalStepExists),
            "the second batch sees the first"
        ),
        Err(error) => panic!("third batch failed: {error}"),
    }
    assert!(
        matches!(results[3], Err(Error::Invalid { .. })),
        "{:?}",
        results[3]
    );
    assert!(results[4].is_ok(), "{:?}", results[4]);

    assert_eq!(
        storage.load_state(&a).await.expect("reads"),
        Some(bytes("second"))
    );
    assert_eq!(storage.load_state(&b).await.expect("reads"), None);
    assert_eq!(
        storage.read_reply(shard(31), req(2)).await.expect("reads"),
        Some(bytes("ok"))
    );
    assert_eq!(
        storage.shard_epoch(shard(31)).await.expect("reads"),
        Epoch::new(5)
    );
    assert_eq!(
        storage
            .read_meta(&meta_key("conformance.applied"))
            .await
            .expect("reads"),
        Some(bytes("log-7"))
    );
    // An empty group without meta is a no-op.
    let results = storage
        .commit_group(Vec::new(), None)
        .await
        .expect("commits");
    assert!(results.is_empty());
}

/// Meta alone (an empty group) is written; a later group overwrites it;
/// other keys stay unset.
pub async fn group_meta_alone_overwrites_and_reads_back(fixture: Fixture) {
    let storage = fixture.storage();
    let (applied, other) = (meta_key("applied"), meta_key("applied.other"));
    assert_eq!(storage.read_meta(&applied).await.expect("reads"), None);
    let results = storage
        .commit_group(Vec::new(), Some((applied.clone(), bytes("1"))))
        .await
        .expect("commits");
    assert!(results.is_empty());
    assert_eq!(
        storage.read_meta(&applied).await.expect("reads"),
        Some(bytes("1"))
    );
    let key = entity(34, "T", "t");
    let mut b = batch(34);
    b.put_state(&key, bytes("v"));
    storage
        .commit_group(vec![b], Some((applied.clone(), bytes("2"))))
        .await
        .expect("commits");
    assert_eq!(
        storage.read_meta(&applied).await.expect("reads"),
        Some(bytes("2"))
    );
    assert_eq!(storage.read_meta(&other).await.expect("reads"), None);
    // A plain commit leaves meta alone.
    let mut b = batch(34);
    b.delete_state(&key);
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.read_meta(&applied).await.expect("reads"),
        Some(bytes("2"))
    );
}

/// A group over a limit is refused as a whole: no batch and no meta applies.
pub async fn group_over_limits_applies_nothing(fixture: Fixture) {
    let storage = fixture.storage();
    let key = entity(35, "T", "t");
    let applied = meta_key("applied");
    let mut b = batch(35);
    b.put_state(&key, bytes("v"));
    let oversized = Bytes::from(vec![0u8; limits::VALUE_BYTES_MAX + 1]);
    let result = storage
        .commit_group(vec![b], Some((applied.clone(), oversized)))
        .await;
    assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}");
    let too_many = (0..=limits::GROUP_BATCHES_MAX).map(|_| batch(35)).collect();
    let result = storage
        .commit_group(too_many, Some((applied.clone(), bytes("x"))))
        .await;
    assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}");
    assert_eq!(storage.load_state(&key).await.expect("reads"), None);
    assert_eq!(storage.read_meta(&applied).await.expect("reads"), None);
}

/// A deferred group is a commit group like any other, except when it is
/// durable: validated, fenced and applied per batch, atomic with its meta
/// record, visible to every read (and to later commits and exports) when
/// the call returns, refused whole over a limit; `flush` then succeeds and
/// changes nothing visible. Deferred groups and plain commits from many
/// tasks at once all land.
pub async fn deferred_group_is_atomic_visible_and_flushed(fixture: Fixture) {
    let storage = fixture.storage();
    let applied = meta_key("conformance.deferred");
    let (a, b) = (entity(36, "T", "a"), entity(37, "T", "b"));
    commit_all_applied(storage, WriteBatch::new(shard(37), Epoch::new(5))).await;

    let mut first = batch(36);
    first.put_state(&a, bytes("deferred"));
    first.append_journal(&a, req(1), StepIndex::new(0), bytes("j0"));
    let mut stale = WriteBatch::new(shard(37), Epoch::new(1));
    stale.put_state(&b, bytes("stale"));
    let mut invalid = batch(36);
    invalid.put_state(&b, bytes("foreign shard"));
    let mut current = WriteBatch::new(shard(37), Epoch::new(5));
    current.put_state(&b, bytes("current"));
    current.ack(req(2), bytes("ok"));
    let results = storage
        .commit_group_with(
            vec![first, stale, invalid, current],
            Some((applied.clone(), bytes("d1"))),
            Durability::Deferred,
        )
        .await
        .expect("the deferred group commits");
    assert_eq!(results.len(), 4, "one result per batch");
    assert!(results[0].as_ref().is_ok_and(CommitOutcome::applied_all));
    assert!(
        matches!(results[1], Err(Error::StaleEpoch { current, .. }) if current == Epoch::new(5)),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(Error::Invalid { .. })),
        "{:?}",
        results[2]
    );
    assert!(results[3].is_ok(), "{:?}", results[3]);

    // Visible at once, meta included.
    assert_eq!(
        storage.load_state(&a).await.expect("reads"),
        Some(bytes("deferred"))
    );
    assert_eq!(
        storage.load_state(&b).await.expect("reads"),
        Some(bytes("current"))
    );
    assert_eq!(
        storage.read_reply(shard(37), req(2)).await.expect("reads"),
        Some(bytes("ok"))
    );
    assert_eq!(
        storage.read_meta(&applied).await.expect("reads"),
        Some(bytes("d1"))
    );
    // An export reads it.
    let exported = export_bytes(storage, ShardRange::one(shard(36))).await;
    // A later plain commit sees it.
    let mut again = batch(36);
    let repeat = again.append_journal(&a, req(1), StepIndex::new(0), bytes("again"));
    let outcome = commit(storage, again).await;
    assert_eq!(
        outcome.skip_reason(repeat),
        Some(SkipReason::JournalStepExists),
        "the commit sees the deferred group"
    );

    // Over a limit: refused whole, meta included.
    let mut big = batch(36);
    big.put_state(&a, bytes("over the limit"));
    let oversized = Bytes::from(vec![0u8; limits::VALUE_BYTES_MAX + 1]);
    let result = storage
        .commit_group_with(
            vec![big],
            Some((applied.clone(), oversized)),
            Durability::Deferred,
        )
        .await;
    assert!(matches!(result, Err(Error::Invalid { .. })), "{result:?}");
    assert_eq!(
        storage.load_state(&a).await.expect("reads"),
        Some(bytes("deferred"))
    );

    // Deferred groups and plain commits from many tasks at once.
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            let key = entity(38, "T", &format!("e{i}"));
            let mut b = batch(38);
            b.put_state(&key, bytes(&format!("v{i}")));
            if i % 2 == 0 {
                let results = storage
                    .commit_group_with(
                        vec![b],
                        Some((meta_key(&format!("conformance.deferred.{i}")), bytes("m"))),
                        Durability::Deferred,
                    )
                    .await
                    .expect("the deferred group commits");
                assert!(results[0].is_ok(), "{:?}", results[0]);
            } else {
                storage.commit(b).await.expect("commits");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    for i in 0..16u32 {
        assert_eq!(
            storage
                .load_state(&entity(38, "T", &format!("e{i}")))
                .await
                .expect("reads"),
            Some(bytes(&format!("v{i}"))),
            "write {i}"
        );
    }

    // Immediate through the same method is `commit_group`.
    let mut last = batch(36);
    last.put_state(&a, bytes("immediate"));
    storage
        .commit_group_with(
            vec![last],
            Some((applied.clone(), bytes("d2"))),
            Durability::Immediate,
        )
        .await
        .expect("commits");
    storage.flush().await.expect("flushes");
    assert_eq!(
        storage.load_state(&a).await.expect("reads"),
        Some(bytes("immediate"))
    );
    assert_eq!(
        storage.read_meta(&applied).await.expect("reads"),
        Some(bytes("d2"))
    );
    import_bytes(storage, &exported, 4096)
        .await
        .expect("the export of the deferred group imports");
    assert_eq!(
        storage.load_state(&a).await.expect("reads"),
        Some(bytes("deferred")),
        "the export held the deferred group"
    );
}

/// Meta keys never collide with data: a meta key spelling a data key's bytes
/// is invisible to data reads, and data writes leave it alone.
pub async fn meta_namespace_is_isolated_from_data(fixture: Fixture) {
    let storage = fixture.storage();
    let key = entity(32, "T", "x");
    // The byte image of `key`'s state key, and of shard 33's epoch key.
    let state_image = meta_key("\u{0}\u{0}\u{0}\u{20}\u{1}T\u{0}\u{1}x");
    let epoch_image = meta_key("\u{0}\u{0}\u{0}\u{21}");
    storage
        .commit_group(
            Vec::new(),
            Some((
                state_image.clone(),
                Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9]),
            )),
        )
        .await
        .expect("commits");
    storage
        .commit_group(
            Vec::new(),
            Some((
                epoch_image.clone(),
                Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9]),
            )),
        )
        .await
        .expect("commits");
    assert_eq!(storage.load_state(&key).await.expect("reads"), None);
    assert_eq!(
        storage.shard_epoch(shard(33)).await.expect("reads"),
        Epoch::ZERO
    );
    let mut b = batch(32);
    b.put_state(&key, bytes("data"));
    commit_all_applied(storage, b).await;
    let mut b = batch(32);
    b.delete_state(&key);
    commit_all_applied(storage, b).await;
    assert_eq!(
        storage.read_meta(&state_image).await.expect("reads"),
        Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9]))
    );
    commit_all_applied(storage, WriteBatch::new(shard(33), Epoch::new(2))).await;
    assert_eq!(
        storage.read_meta(&epoch_image).await.expect("reads"),
        Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9]))
    );
}

// ---- Export and import ----

/// Writes a little of everything to shards 40..=43 and a meta record; big
/// enough (about 1.5 MiB) to span several export chunks.
async fn fill_for_export(storage: &Arc<dyn Storage>) {
    for s in 40..=43u32 {
        let mut b = WriteBatch::new(shard(s), Epoch::new(u64::from(s)));
        for i in 0..90 {
            let key = entity(s, "T", &format!("e{i}"));
            b.put_state(&key, Bytes::from(vec![i as u8; 4096]));
            b.append_journal(&key, req(1), StepIndex::new(i), bytes("entry"));
        }
        let target = entity(s, "T", "e0");
        b.enqueue(message(&target, 1, 10));
        b.enqueue(message(&target, 2, 20));
        b.dead_letter(req(2), "gave up", at(21));
        b.ack(req(3), bytes("reply"));
        b.put_timer(TimerKey::new(shard(s), at(50), TimerId::new(1)), bytes("t"));
        b.resolve_deferred(&target, "d", DeferredValue::Success(bytes("yes")));
        commit_all_applied(storage, b).await;
    }
    storage
        .commit_group(Vec::new(), Some((meta_key("applied"), bytes("log-1"))))
        .await
        .expect("commits meta");
}

async fn export_bytes(storage: &Arc<dyn Storage>, shards: ShardRange) -> Vec<u8> {
    let stream = storage.export(shards).await.expect("export starts");
    snapshot::read_to_end(stream)
        .await
        .expect("export completes")
}

/// Import `bytes` split into chunks of `chunk` bytes.
async fn import_bytes(
    storage: &Arc<dyn Storage>,
    bytes: &[u8],
    chunk: usize,
) -> crate::Result<crate::SnapshotInfo> {
    let chunks = bytes
        .chunks(chunk)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    storage.import(snapshot::stream_from_chunks(chunks)).await
}

/// An export reads one consistent snapshot (commits made while it is
/// consumed are not in it); importing it into a changed, non-empty store
/// makes that store equal to the exported one, `node_meta` included.
pub async fn export_import_round_trip_replaces_everything(fixture: Fixture) {
    let storage = fixture.storage();
    fill_for_export(storage).await;
    let stream = storage
        .export(ShardRange::ALL)
        .await
        .expect("export starts");

    // Change things before the stream is consumed.
    let kept = entity(40, "T", "e1");
    let added = entity(44, "T", "new");
    let mut b = WriteBatch::new(shard(40), Epoch::new(99));
    b.put_state(&kept, bytes("changed"));
    b.delete_journal(&entity(40, "T", "e2"), req(1));
    b.ack(req(1), bytes("acked later"));
    commit_all_applied(storage, b).await;
    let mut b = batch(44);
    b.put_state(&added, bytes("added"));
    commit_all_applied(storage, b).await;
    storage
        .commit_group(Vec::new(), Some((meta_key("applied"), bytes("log-2"))))
        .await
        .expect("commits meta");
    storage
        .commit_group(Vec::new(), Some((meta_key("other"), bytes("x"))))
        .await
        .expect("commits meta");

    let exported = snapshot::read_to_end(stream)
        .await
        .expect("export completes");
    assert!(
        exported.len() > 4 * limits::SNAPSHOT_CHUNK_BYTES,
        "the snapshot spans more chunks than the export buffers: {} bytes",
        exported.len()
    );
    let info = import_bytes(storage, &exported, 100_003)
        .await
        .expect("imports");
    assert_eq!(info.shards, ShardRange::ALL);
    assert!(info.node_meta);

    assert_eq!(
        storage.load_state(&kept).await.expect("reads"),
        Some(Bytes::from(vec![1u8; 4096]))
    );
    assert_eq!(storage.load_state(&added).await.expect("reads"), None);
    assert_eq!(
        storage
            .read_journal(&entity(40, "T", "e2"), req(1))
            .await
            .expect("reads")
            .len(),
        1
    );
    assert!(
        storage
            .read_message(shard(40), req(1))
            .await
            .expect("reads")
            .is_some(),
        "the message acked after the export is pending again"
    );
    assert_eq!(
        storage.shard_epoch(shard(40)).await.expect("reads"),
        Epoch::new(40)
    );
    assert_eq!(
        storage
            .read_meta(&meta_key("applied"))
            .await
            .expect("reads"),
        Some(bytes("log-1"))
    );
    assert_eq!(
        storage.read_meta(&meta_key("other")).await.expect("reads"),
        None
    );
    assert_eq!(
        storage
            .dead_letters(shard(41), None, 10)
            .await
            .expect("reads")
            .len(),
        1
    );
    assert_eq!(
        storage
            .due_timers(ShardScope::All, Timestamp::MAX, 10)
            .await
            .expect("reads")
            .len(),
        4
    );
    // Byte-for-byte: the store now exports exactly what was imported.
    assert!(
        export_bytes(storage, ShardRange::ALL).await == exported,
        "the imported store differs from the exported one"
    );
}

/// A shard-range export carries only those shards; importing it replaces
/// only them, leaving other shards and `node_meta` alone.
pub async fn export_of_a_shard_range_replaces_only_it(fixture: Fixture) {
    let storage = fixture.storage();
    fill_for_export(storage).await;
    let range = ShardRange::new(shard(41), shard(42)).expect("valid range");
    let exported = export_bytes(storage, range).await;
    let whole = export_bytes(storage, ShardRange::ALL).await;
    assert!(exported.len() < whole.len());

    let (inside, outside) = (entity(41, "T", "e1"), entity(43, "T", "e1"));
    let fresh = entity(42, "T", "fresh");
    let mut b = WriteBatch::new(shard(41), Epoch::new(99));
    b.put_state(&inside, bytes("changed"));
    commit_all_applied(storage, b).await;
    let mut b = WriteBatch::new(shard(42), Epoch::new(99));
    b.put_state(&fresh, bytes("fresh"));
    commit_all_applied(storage, b).await;
    let mut b = WriteBatch::new(shard(43), Epoch::new(99));
    b.put_state(&outside, bytes("changed"));
    commit_all_applied(storage, b).await;
    storage
        .commit_group(Vec::new(), Some((meta_key("applied"), bytes("log-9"))))
        .await
        .expect("commits meta");

    let info = import_bytes(storage, &exported, 4096)
        .await
        .expect("imports");
    assert_eq!(info.shards, range);
    assert!(!info.node_meta);
    assert_eq!(
        storage.load_state(&inside).await.expect("reads"),
        Some(Bytes::from(vec![1u8; 4096]))
    );
    assert_eq!(storage.load_state(&fresh).await.expect("reads"), None);
    assert_eq!(
        storage.shard_epoch(shard(41)).await.expect("reads"),
        Epoch::new(41),
        "the epoch comes back with the shard"
    );
    assert_eq!(
        storage.load_state(&outside).await.expect("reads"),
        Some(bytes("changed"))
    );
    assert_eq!(
        storage.shard_epoch(shard(43)).await.expect("reads"),
        Epoch::new(99)
    );
    assert_eq!(
        storage
            .read_meta(&meta_key("applied"))
            .await
            .expect("reads"),
        Some(bytes("log-9"))
    );
    assert!(export_bytes(storage, range).await == exported);
}

/// Garbage, truncation, a wrong version, damage, trailing bytes and a
/// failing stream are rejected with a clear error, and change nothing.
pub async fn import_of_bad_input_changes_nothing(fixture: Fixture) {
    let storage = fixture.storage();
    fill_for_export(storage).await;
    let valid = export_bytes(storage, ShardRange::ALL).await;
    // Something to lose if a failed import cleared anything.
    let mut b = batch(45);
    b.put_state(&entity(45, "T", "t"), bytes("after export"));
    commit_all_applied(storage, b).await;
    let before = export_bytes(storage, ShardRange::ALL).await;

    let mut wrong_version = valid.clone();
    wrong_version[8..12].copy_from_slice(&(snapshot::FORMAT_VERSION + 1).to_be_bytes());
    let mut damaged = valid.clone();
    let middle = valid.len() / 2;
    damaged[middle] ^= 0x5a;
    let mut trailing = valid.clone();
    trailing.extend_from_slice(b"junk");
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("garbage".into(), garbage),
        ("wrong version".into(), wrong_version),
        ("damaged".into(), damaged),
        ("trailing bytes".into(), trailing),
    ];
    for cut in [5, 12, 100, middle, valid.len() - 9, valid.len() - 1] {
        cases.push((format!("truncated to {cut}"), valid[..cut].to_vec()));
    }
    for (name, input) in cases {
        let error = import_bytes(storage, &input, 65_536)
            .await
            .expect_err(&name);
        assert!(!error.is_fatal(), "{name}: {error:?}");
        if name == "wrong version" {
            assert!(
                matches!(error, Error::UnsupportedSnapshot { .. }),
                "{name}: {error:?}"
            );
        } else {
            assert!(matches!(error, Error::Decode { .. }), "{name}: {error:?}");
        }
        assert!(
            export_bytes(storage, ShardRange::ALL).await == before,
            "{name}: a failed import changed the store"
        );
    }

    // A stream failing half-way (a broken connection) aborts the import.
    let mut chunks: Vec<crate::Result<Bytes>> = valid[..middle]
        .chunks(65_536)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    chunks.push(Err(Error::invalid("connection lost")));
    let error = storage
        .import(snapshot::stream_from_chunks(chunks))
        .await
        .expect_err("a failing stream");
    assert!(error.to_string().contains("connection lost"), "{error}");
    assert!(export_bytes(storage, ShardRange::ALL).await == before);

    // The store still works, and the valid snapshot still imports.
    import_bytes(storage, &valid, 65_536)
        .await
        .expect("imports");
    assert_eq!(
        storage
            .load_state(&entity(45, "T", "t"))
            .await
            .expect("reads"),
        None
    );
}

// ---- Lifecycle ----

/// After close, every call answers `Closed`; closing twice is fine.
pub async fn close_rejects_further_calls(fixture: Fixture) {
    let storage = fixture.storage();
    let key = entity(25, "T", "t");
    let mut b = batch(25);
    b.put_state(&key, bytes("before close"));
    commit_all_applied(storage, b).await;
    storage.flush().await.expect("flushes");
    storage.close().await.expect("closes");
    storage.close().await.expect("closing twice is fine");

    let result = storage.commit(batch(25)).await;
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert!(matches!(storage.load_state(&key).await, Err(Error::Closed)));
    assert!(matches!(
        storage.due_timers(ShardScope::All, Timestamp::MAX, 1).await,
        Err(Error::Closed)
    ));
    assert!(matches!(storage.flush().await, Err(Error::Closed)));
    assert!(matches!(
        storage.commit_group(vec![batch(25)], None).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        storage.read_meta(&meta_key("applied")).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        storage.export(ShardRange::ALL).await,
        Err(Error::Closed)
    ));
    let empty = snapshot::stream_from_chunks(Vec::new());
    assert!(matches!(storage.import(empty).await, Err(Error::Closed)));
}
