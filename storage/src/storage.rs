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
use crate::snapshot::{ChunkStream, ShardRange, SnapshotInfo};
use crate::types::{
    DeadLetter, DeferredValue, EntityKey, Epoch, JournalEntry, Message, MetaKey, RequestId,
    ShardId, ShardScope, Timer, Timestamp,
};

/// How durable a [`Storage::commit_group_with`] must be when the call
/// returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Durable before the call returns: it survives a crash (for redb: the
    /// transaction commits with an fsync). What
    /// [`commit_group`](Storage::commit_group) does.
    #[default]
    Immediate,
    /// Applied and visible to every read when the call returns, but maybe
    /// not durable yet. The group is still ONE atomic transaction, batches
    /// and meta record together; it becomes durable
    ///
    /// - with the next immediate commit of the backend (any `commit`,
    ///   immediate group or import: durability covers everything committed
    ///   before it),
    /// - when [`flush`](Storage::flush) or [`close`](Storage::close)
    ///   returns, or
    /// - at the latest a bounded time after the call returned (redb:
    ///   [`RedbConfig::deferred_durability_max`](crate::RedbConfig::deferred_durability_max),
    ///   100 ms by default), without any further call.
    ///
    /// A crash (power loss, `kill -9`) before then may lose it — always
    /// whole, never part of it (no batch without the others, no batch
    /// without its meta record, nor the reverse) — and then also every
    /// deferred group committed after it: what survives is a prefix of the
    /// commit order. Use it when the caller can redo the work from a
    /// durable record of its own, like a Raft state machine whose log is
    /// durable and whose meta record says how far it applied.
    Deferred,
}

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
/// - apply a [`commit_group`](Storage::commit_group) in ONE atomic, durable
///   transaction: its batches in order (each validated and fenced on its
///   own, exactly as `commit` would, a rejected one applying nothing of
///   itself) and its meta record, or — on a fatal error — nothing at all;
/// - apply a [`commit_group_with`](Storage::commit_group_with) with
///   [`Durability::Deferred`] just as atomically and visibly, and make it
///   durable — whole, never in part — no later than the next immediate
///   commit, `flush` or `close`, or a bounded time after it returned (see
///   [`Durability::Deferred`]); a crash may lose only deferred groups not
///   yet durable, newest first;
/// - keep the node-metadata namespace ([`MetaKey`]) apart from the data: no
///   batch reads or writes it, no data read returns it;
/// - [`export`](Storage::export) from ONE consistent snapshot, in bounded
///   memory; [`import`](Storage::import) atomically and durably: after
///   `Ok` the covered data (and `node_meta`, for a full snapshot) is
///   exactly the snapshot's; after `Err`, nothing changed — also when the
///   process dies mid-import;
/// - after `close`, answer every call with [`Error::Closed`](crate::Error::Closed).
///
/// Run `shoal_storage::testing::conformance` (feature `test-util`) against
/// any new implementation.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Applies `batch` atomically and durably; see the trait contract.
    async fn commit(&self, batch: WriteBatch) -> Result<CommitOutcome>;

    /// Applies `batches` in order and writes `meta`, all in ONE atomic,
    /// durable transaction (for redb: one write transaction, one fsync).
    ///
    /// Each batch is validated and fenced on its own, exactly like
    /// [`commit`](Storage::commit): its slot in the returned `Vec` (same
    /// order as `batches`) holds its [`CommitOutcome`], or the expected
    /// error ([`Error::Invalid`](crate::Error::Invalid),
    /// [`Error::StaleEpoch`](crate::Error::StaleEpoch)) with which it
    /// applied nothing of itself while the other batches still applied.
    /// Batches may target different shards (each is still single-shard).
    ///
    /// `meta` (a [`MetaKey`] and opaque bytes, e.g. the Raft `last_applied`
    /// log id and membership) is written in the same transaction whatever
    /// the per-batch outcomes, so a marker of what was applied commits
    /// exactly when the data does: a crash leaves both or neither. It
    /// overwrites the key's previous value; read it with
    /// [`read_meta`](Storage::read_meta).
    ///
    /// The outer error means nothing of the call was applied, meta
    /// included: [`Error::Invalid`](crate::Error::Invalid) if the group
    /// breaks [`limits::GROUP_BATCHES_MAX`](crate::limits::GROUP_BATCHES_MAX),
    /// [`limits::GROUP_BYTES_MAX`](crate::limits::GROUP_BYTES_MAX) or a meta
    /// value breaks [`limits::VALUE_BYTES_MAX`](crate::limits::VALUE_BYTES_MAX);
    /// [`Error::Closed`](crate::Error::Closed); or a fatal error. An empty
    /// group with `meta` writes just the meta record.
    async fn commit_group(
        &self,
        batches: Vec<WriteBatch>,
        meta: Option<(MetaKey, Bytes)>,
    ) -> Result<Vec<Result<CommitOutcome>>>;

    /// [`commit_group`](Storage::commit_group) with a choice of
    /// [`Durability`]: [`Durability::Immediate`] is exactly `commit_group`;
    /// with [`Durability::Deferred`] the call returns once the group is
    /// applied and visible, before it is durable — see
    /// [`Durability::Deferred`] for when it becomes durable and what a crash
    /// may lose. Everything else (atomicity, per-batch results, the meta
    /// record in the same transaction, the outer errors) is as for
    /// `commit_group`.
    ///
    /// The default implementation commits immediately (allowed: a deferred
    /// group may become durable as early as the backend likes); a backend
    /// with cheaper non-durable commits overrides it.
    async fn commit_group_with(
        &self,
        batches: Vec<WriteBatch>,
        meta: Option<(MetaKey, Bytes)>,
        durability: Durability,
    ) -> Result<Vec<Result<CommitOutcome>>> {
        let _ = durability;
        self.commit_group(batches, meta).await
    }

    /// The node-metadata record at `key`, as last written by
    /// [`commit_group`](Storage::commit_group) (or brought by an import).
    async fn read_meta(&self, key: &MetaKey) -> Result<Option<Bytes>>;

    /// Exports the data of `shards` (for [`ShardRange::ALL`]: every data
    /// table and `node_meta`, i.e. the whole dataset with its applied
    /// marker) as a snapshot stream (format: [`snapshot`](crate::snapshot)),
    /// read from ONE consistent snapshot: commits that land while the
    /// stream is consumed are not in it.
    ///
    /// The stream is produced lazily, a few chunks
    /// ([`limits::SNAPSHOT_CHUNKS_AHEAD`](crate::limits::SNAPSHOT_CHUNKS_AHEAD))
    /// ahead of its consumer, so memory stays bounded for any dataset size
    /// (the memory backend copies its maps under the lock first). Dropping
    /// the stream stops the export. A read failure ends the stream with an
    /// `Err` item (an importer then rejects the incomplete stream).
    async fn export(&self, shards: ShardRange) -> Result<ChunkStream>;

    /// Replaces the data a snapshot covers with the snapshot's, atomically:
    /// every row of its shards in every data table (and, for a snapshot of
    /// all shards, the whole `node_meta` namespace) is removed, then its
    /// rows are written, in ONE durable transaction. Other shards are left
    /// alone.
    ///
    /// The stream is decoded and checked while it is read (magic, version,
    /// every frame's checksum, frame order, row order, rows inside the
    /// header's shards, the trailer's count and whole-stream checksum, no
    /// trailing bytes); any failure — or an `Err` item from `snapshot` —
    /// aborts the import with nothing changed:
    /// [`Error::Decode`](crate::Error::Decode),
    /// [`Error::UnsupportedSnapshot`](crate::Error::UnsupportedSnapshot), or
    /// the stream's own error. Commits wait while an import runs (redb:
    /// the import holds the writer); reads see the old data until it commits.
    async fn import(&self, snapshot: ChunkStream) -> Result<SnapshotInfo>;

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

    /// Waits until every batch submitted before the call is durable: drains
    /// the commits in flight and makes every
    /// [deferred](Durability::Deferred) group committed before it durable.
    /// (Every other acknowledged commit already is.)
    async fn flush(&self) -> Result<()>;

    /// Finishes the commits in flight and makes every
    /// [deferred](Durability::Deferred) group durable, then stops serving:
    /// every later call gets [`Error::Closed`](crate::Error::Closed).
    /// Closing twice is fine.
    async fn close(&self) -> Result<()>;
}
