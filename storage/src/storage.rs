//! The [`Storage`] trait: the contract every backend implements and the
//! conformance suite (`testing::conformance`, feature `test-util`) checks.
//!
//! It is dyn-compatible (the runtime holds an `Arc<dyn Storage>`) and async
//! (a later PostgreSQL backend does network I/O). It says nothing about how
//! a backend stores data; only about what reads observe after commits.

use async_trait::async_trait;
use bytes::Bytes;

use crate::batch::{CommitOutcome, WriteBatch};
use crate::error::Result;
use crate::types::{
    DeadLetter, DeferredValue, EntityKey, Epoch, JournalEntry, Message, RequestId, ShardId,
    ShardScope, Timer, Timestamp,
};

/// A storage backend: entity state, workflow journals, the durable mailbox
/// (messages, replies, dead letters), timers, deferreds and shard epochs.
///
/// ### To ensure correctness, an implementation must:
/// - apply a [`WriteBatch`] atomically: after `commit` returns `Ok`, every
///   op not reported as skipped is visible to every later read; after it
///   returns `Err`, none is, ever;
/// - acknowledge nothing before it is durable (for a persistent backend:
///   `commit` returns only once the batch survives a crash);
/// - validate the batch ([`WriteBatch::validate`]) and return its error
///   without applying anything;
/// - fence: reject with [`Error::StaleEpoch`](crate::Error::StaleEpoch) a
///   batch whose epoch is older than the shard's current epoch, applying
///   nothing; raise the shard's epoch to the batch's when it is newer;
/// - apply ops in order and concurrent batches in some serial order, each
///   seeing all effects of the batches before it;
/// - implement each op's documented semantics ([`Op`](crate::Op)), in
///   particular insert-if-absent ops report skips in the [`CommitOutcome`];
/// - keep shards apart: nothing written to one shard is ever returned by a
///   read or scan of another;
/// - after `close`, answer every call with [`Error::Closed`](crate::Error::Closed).
///
/// Run `shoal_storage::testing::conformance` (feature `test-util`) against
/// any new implementation.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Applies `batch` atomically and durably; see the trait contract.
    async fn commit(&self, batch: WriteBatch) -> Result<CommitOutcome>;

    /// An entity's state, if it has one.
    async fn load_state(&self, entity: &EntityKey) -> Result<Option<Bytes>>;

    /// Every journal entry of one workflow execution, in step order.
    async fn read_journal(
        &self,
        entity: &EntityKey,
        execution: RequestId,
    ) -> Result<Vec<JournalEntry>>;

    /// The stored reply of a request (the idempotency store).
    async fn read_reply(&self, shard: ShardId, request: RequestId) -> Result<Option<Bytes>>;

    /// A pending message.
    async fn read_message(&self, shard: ShardId, request: RequestId) -> Result<Option<Message>>;

    /// Pending messages of `shard` due at or before `up_to`, earliest first
    /// (ties by request id), at most `limit` (clamped to
    /// [`limits::SCAN_ITEMS_MAX`](crate::limits::SCAN_ITEMS_MAX)).
    async fn due_messages(
        &self,
        shard: ShardId,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Message>>;

    /// When the earliest pending message of `shard` is due.
    async fn next_message_due(&self, shard: ShardId) -> Result<Option<Timestamp>>;

    /// Dead letters of `shard` in request id order, starting after `after`
    /// (for paging), at most `limit` (clamped to
    /// [`limits::SCAN_ITEMS_MAX`](crate::limits::SCAN_ITEMS_MAX)).
    async fn dead_letters(
        &self,
        shard: ShardId,
        after: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Timers in `scope` due at or before `up_to`, earliest first (ties by
    /// shard, then id), at most `limit` (clamped to
    /// [`limits::SCAN_ITEMS_MAX`](crate::limits::SCAN_ITEMS_MAX)). Firing a
    /// timer is the caller's job: delete it in the batch that records its
    /// effect.
    async fn due_timers(
        &self,
        scope: ShardScope,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Timer>>;

    /// When the earliest timer in `scope` is due, so a scheduler can sleep
    /// until then.
    async fn next_timer_due(&self, scope: ShardScope) -> Result<Option<Timestamp>>;

    /// The value deferred `name` of `entity` was resolved with, if resolved.
    async fn read_deferred(&self, entity: &EntityKey, name: &str) -> Result<Option<DeferredValue>>;

    /// The shard's current epoch ([`Epoch::ZERO`] for a shard never fenced).
    async fn shard_epoch(&self, shard: ShardId) -> Result<Epoch>;

    /// Waits until every batch submitted before the call is durable. (Every
    /// acknowledged commit already is; this drains commits in flight.)
    async fn flush(&self) -> Result<()>;

    /// Finishes the commits in flight, then stops serving: every later call
    /// gets [`Error::Closed`](crate::Error::Closed). Closing twice is fine.
    async fn close(&self) -> Result<()>;
}
