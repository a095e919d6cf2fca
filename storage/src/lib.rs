//! Shoal's storage layer: the storage model for sharded entities and durable
//! workflows, and its backends.
//!
//! # The model
//! Everything is keyed by [`ShardId`] first, so a shard's data can later be
//! replicated or moved as a unit:
//! - **entity state**: opaque bytes per [`EntityKey`];
//! - **workflow journal**: entries per (entity, execution [`RequestId`],
//!   [`StepIndex`]), read back in step order for replay;
//! - **durable mailbox**: persisted [`Message`]s, deduplicated by request
//!   id, listed by due time, rescheduled, acknowledged together with their
//!   **reply** (which doubles as the idempotency store), dead-lettered and
//!   replayed;
//! - **timers**: (shard, due time, [`TimerId`]) → payload, scanned by due
//!   time, with the next deadline for an event-driven scheduler;
//! - **deferreds**: (entity, name) → [`DeferredValue`], first resolution wins;
//! - **shard epochs**: the fencing token of each shard;
//! - **node metadata**: a small namespace of [`MetaKey`] → opaque bytes,
//!   apart from all data (e.g. the Raft applied marker).
//!
//! All writes go through one [`WriteBatch`] — a plain, encodable value — that
//! applies atomically and is fenced by its shard's [`Epoch`]. A state change,
//! its journal entry, a reply and a message acknowledgement commit together
//! or not at all.
//!
//! [`Storage::commit_group`] applies many batches (any shards, each fenced
//! and validated on its own) plus one node-metadata record in ONE durable
//! transaction: a replicated state machine commits the entries it applies
//! together with its applied marker, exactly once, one fsync per group.
//!
//! [`Storage::export`] streams a consistent snapshot of every table (or of a
//! [`ShardRange`]) in a versioned, checksummed format ([`snapshot`]), in
//! bounded memory; [`Storage::import`] replaces what a snapshot covers,
//! atomically, and rejects damaged or foreign input changing nothing.
//!
//! # Backends
//! Both implement the [`Storage`] trait (dyn-compatible, async):
//! - [`RedbStorage`]: the default, one redb data file, group commit (see
//!   [`redb_backend`] for the on-disk layout and format version);
//! - [`MemoryStorage`]: `BTreeMap`s behind a lock, same semantics.
//!
//! With the `test-util` feature, `testing::conformance` is the suite every
//! backend must pass.
//!
//! # Layout
//! - `types`, `limits`: identifiers, keys, records, and the limits on them;
//! - `batch`: [`WriteBatch`], [`Op`], [`CommitOutcome`]; `proto`: their
//!   protobuf encoding (`proto/shoal/storage/v1/storage.proto`);
//! - [`snapshot`]: the export/import stream format, its encoder and its
//!   validating decoder;
//! - `keys`: table names and key byte layouts; `engine`: how batches apply
//!   and scans walk, over an abstract ordered key-value store — shared by
//!   both backends;
//! - `storage`: the [`Storage`] trait; `memory`, [`redb_backend`]: backends;
//! - `error`: [`enum@Error`], fatal vs expected.
//!
//! This crate knows nothing of networking, Raft or entity handlers.
//!
//! ```
//! use bytes::Bytes;
//! use shoal_storage::{
//!     EntityKey, Epoch, MemoryStorage, RequestId, ShardId, SkipReason, Storage, WriteBatch,
//! };
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(MemoryStorage::new());
//! let shard = ShardId::new(7);
//! let order = EntityKey::new(shard, "Order", "o-1")?;
//!
//! // The owner of shard 7 at epoch 1 writes.
//! let mut batch = WriteBatch::new(shard, Epoch::new(1));
//! batch.put_state(&order, Bytes::from_static(b"paid"));
//! batch.ack(RequestId::new(10), Bytes::from_static(b"ok"));
//! storage.commit(batch).await?;
//!
//! // A second reply for the same request loses: the first is kept.
//! let mut retry = WriteBatch::new(shard, Epoch::new(1));
//! let ack = retry.ack(RequestId::new(10), Bytes::from_static(b"other"));
//! let outcome = storage.commit(retry).await?;
//! assert_eq!(outcome.skip_reason(ack), Some(SkipReason::ReplyExists));
//!
//! // A new owner fences the shard at epoch 2; the old owner is rejected.
//! storage.commit(WriteBatch::new(shard, Epoch::new(2))).await?;
//! let stale = storage.commit(WriteBatch::new(shard, Epoch::new(1))).await;
//! assert!(matches!(stale, Err(shoal_storage::Error::StaleEpoch { .. })));
//! # Ok::<(), shoal_storage::Error>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod engine;
mod error;
mod keys;
pub mod limits;
mod memory;
mod proto;
pub mod redb_backend;
pub mod snapshot;
mod storage;
#[cfg(feature = "test-util")]
pub mod testing;
mod types;

pub use batch::{CommitOutcome, Op, OpIndex, SkipReason, Skipped, WriteBatch};
pub use error::{Error, Result};
pub use memory::MemoryStorage;
pub use redb_backend::{RedbConfig, RedbConfigBuilder, RedbStorage};
pub use snapshot::{ChunkStream, ShardRange, SnapshotInfo};
pub use storage::{Durability, Storage};
pub use types::{
    DeadLetter, DeferredValue, EntityKey, Epoch, JournalEntry, Message, MetaKey, RequestId,
    ShardId, ShardScope, StepIndex, Timer, TimerId, TimerKey, Timestamp,
};
