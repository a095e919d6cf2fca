//! The storage model's vocabulary: identifiers, keys and stored records.
//!
//! Every identifier is a newtype so a shard id cannot be passed where an
//! epoch is expected. Keys validate their limits when constructed
//! ([`EntityKey::new`]), so an existing key always encodes. These are plain
//! values: no I/O, no clocks (times are always given by the caller, which
//! keeps every apply deterministic, as a replicated state machine needs).

use std::fmt;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::limits;

/// A shard: the unit of ownership, fencing and (later) replication.
///
/// Every data key is prefixed by its shard, so a shard's data is one
/// contiguous key range per table. How entities map to shards is decided by
/// the layer above (a stable hash of the entity id); storage only records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(u32);

impl ShardId {
    /// The shard with this number.
    pub const fn new(shard: u32) -> Self {
        ShardId(shard)
    }

    /// The shard's number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A shard's ownership epoch: raised each time the shard changes owner.
///
/// A write batch carries the epoch its writer owns the shard at; a batch
/// older than the shard's stored epoch is rejected (fencing). Single-node
/// mode runs everything at [`Epoch::ZERO`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// The initial epoch of every shard.
    pub const ZERO: Epoch = Epoch(0);

    /// The epoch with this number.
    pub const fn new(epoch: u64) -> Self {
        Epoch(epoch)
    }

    /// The epoch's number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next epoch (saturating at `u64::MAX`).
    pub const fn next(self) -> Self {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies a request: a persisted message, its reply, and a workflow
/// execution (whose journal is keyed by it).
///
/// 128 bits, because the layer above derives it as a stable hash of the
/// idempotency key (by default hash(method name, serialized params)); with
/// 128 bits an accidental collision between two different requests of one
/// shard is negligible (birthday bound ~2^64 requests). Stored as 16
/// big-endian bytes; displayed as 32 hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u128);

impl RequestId {
    /// The request id with this value.
    pub const fn new(id: u128) -> Self {
        RequestId(id)
    }

    /// The id's value.
    pub const fn get(self) -> u128 {
        self.0
    }

    /// The id from its 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        RequestId(u128::from_be_bytes(bytes))
    }

    /// The id's 16 big-endian bytes (its stored form).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Identifies a durable timer within its shard and due time.
///
/// 128 bits for the same reason as [`RequestId`]: the layer above derives it
/// from a stable hash (e.g. of the workflow execution and step), so
/// re-scheduling the same sleep on replay writes the same key again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(u128);

impl TimerId {
    /// The timer id with this value.
    pub const fn new(id: u128) -> Self {
        TimerId(id)
    }

    /// The id's value.
    pub const fn get(self) -> u128 {
        self.0
    }

    /// The id from its 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        TimerId(u128::from_be_bytes(bytes))
    }

    /// The id's 16 big-endian bytes (its stored form).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The index of a step in a workflow execution's journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepIndex(u32);

impl StepIndex {
    /// The step with this index.
    pub const fn new(step: u32) -> Self {
        StepIndex(step)
    }

    /// The step's index.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for StepIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point in time: milliseconds since the Unix epoch.
///
/// Storage never reads a clock: every time is given by the caller, so
/// applying a batch is deterministic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// The latest representable time.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The time `unix_ms` milliseconds after the Unix epoch.
    pub const fn from_unix_ms(unix_ms: u64) -> Self {
        Timestamp(unix_ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_ms(self) -> u64 {
        self.0
    }

    /// This time plus `delta_ms` milliseconds (saturating).
    pub const fn saturating_add_ms(self, delta_ms: u64) -> Self {
        Timestamp(self.0.saturating_add(delta_ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The address of one entity: its shard, type name and id.
///
/// The shard is part of the key (rather than recomputed by storage) because
/// the sharding function belongs to the layer above; storage only relies on
/// it to prefix every key.
///
/// ```
/// use shoal_storage::{EntityKey, ShardId};
///
/// let key = EntityKey::new(ShardId::new(3), "Counter", "c-42")?;
/// assert_eq!(key.entity_id(), "c-42");
/// assert!(EntityKey::new(ShardId::new(3), "", "c-42").is_err());
/// # Ok::<(), shoal_storage::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityKey {
    shard: ShardId,
    entity_type: String,
    entity_id: String,
}

impl EntityKey {
    /// The key of entity `entity_id` of type `entity_type` in `shard`.
    ///
    /// Fails with [`Error::Invalid`] if the type is empty or longer than
    /// [`limits::ENTITY_TYPE_BYTES_MAX`], or the id is longer than
    /// [`limits::ENTITY_ID_BYTES_MAX`].
    pub fn new(
        shard: ShardId,
        entity_type: impl Into<String>,
        entity_id: impl Into<String>,
    ) -> Result<Self> {
        let entity_type = entity_type.into();
        let entity_id = entity_id.into();
        if entity_type.is_empty() {
            return Err(Error::invalid("entity type is empty"));
        }
        if entity_type.len() > limits::ENTITY_TYPE_BYTES_MAX {
            return Err(Error::invalid(format!(
                "entity type is {} bytes, the limit is {}",
                entity_type.len(),
                limits::ENTITY_TYPE_BYTES_MAX
            )));
        }
        if entity_id.len() > limits::ENTITY_ID_BYTES_MAX {
            return Err(Error::invalid(format!(
                "entity id is {} bytes, the limit is {}",
                entity_id.len(),
                limits::ENTITY_ID_BYTES_MAX
            )));
        }
        Ok(EntityKey {
            shard,
            entity_type,
            entity_id,
        })
    }

    /// The entity's shard.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The entity's type name.
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}@shard {}",
            self.entity_type, self.entity_id, self.shard
        )
    }
}

/// One entry of a workflow execution's journal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalEntry {
    /// The step the entry records.
    pub step: StepIndex,
    /// The entry's bytes (opaque to storage).
    pub entry: Bytes,
}

impl JournalEntry {
    /// An entry for `step`.
    pub fn new(step: StepIndex, entry: Bytes) -> Self {
        JournalEntry { step, entry }
    }
}

/// A persisted message in a shard's durable mailbox.
///
/// Its shard is its target's shard. Messages are deduplicated by
/// `request_id` within the shard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// Identifies the request; also the key of its reply.
    pub request_id: RequestId,
    /// The entity the message is for.
    pub target: EntityKey,
    /// The handler (method) to call.
    pub handler: String,
    /// The serialized arguments (opaque to storage).
    pub payload: Bytes,
    /// How many delivery attempts have been rescheduled so far.
    pub attempts: u32,
    /// When the message is next due for delivery.
    pub next_attempt_at: Timestamp,
    /// When the message was first enqueued.
    pub enqueued_at: Timestamp,
}

impl Message {
    /// A new message, due at `enqueued_at`, with no attempt made yet.
    pub fn new(
        request_id: RequestId,
        target: EntityKey,
        handler: impl Into<String>,
        payload: Bytes,
        enqueued_at: Timestamp,
    ) -> Self {
        Message {
            request_id,
            target,
            handler: handler.into(),
            payload,
            attempts: 0,
            next_attempt_at: enqueued_at,
            enqueued_at,
        }
    }

    /// The same message, first due at `next_attempt_at` instead.
    pub fn with_next_attempt_at(mut self, next_attempt_at: Timestamp) -> Self {
        self.next_attempt_at = next_attempt_at;
        self
    }

    /// The message's shard (its target's).
    pub fn shard(&self) -> ShardId {
        self.target.shard()
    }
}

/// A message that was given up on, with why and when.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The message as it was when dead-lettered.
    pub message: Message,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: Timestamp,
}

/// The key of a durable timer: shard, due time, id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    /// The timer's shard.
    pub shard: ShardId,
    /// When the timer fires.
    pub due: Timestamp,
    /// The timer's id (unique within shard and due time).
    pub id: TimerId,
}

impl TimerKey {
    /// The key of timer `id` in `shard`, due at `due`.
    pub const fn new(shard: ShardId, due: Timestamp, id: TimerId) -> Self {
        TimerKey { shard, due, id }
    }
}

/// A durable timer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timer {
    /// Where and when it fires.
    pub key: TimerKey,
    /// What it carries (opaque to storage).
    pub payload: Bytes,
}

/// The value a deferred was resolved with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeferredValue {
    /// Resolved successfully with these bytes (opaque to storage).
    Success(Bytes),
    /// Resolved with a failure and its message.
    Failure(String),
}

/// A key of the node-metadata namespace (`node_meta`): a small set of
/// node-level records, such as the Raft state machine's applied marker,
/// written atomically with a group of batches by
/// [`Storage::commit_group`](crate::Storage::commit_group) and read by
/// [`Storage::read_meta`](crate::Storage::read_meta).
///
/// The namespace is separate from every data table: no [`WriteBatch`](crate::WriteBatch)
/// op can read or write it, and no data read ever returns it. A key is 1 to
/// [`limits::META_KEY_BYTES_MAX`](crate::limits::META_KEY_BYTES_MAX) bytes of UTF-8.
///
/// ```
/// use shoal_storage::MetaKey;
///
/// let key = MetaKey::new("raft.applied")?;
/// assert_eq!(key.as_str(), "raft.applied");
/// assert!(MetaKey::new("").is_err());
/// # Ok::<(), shoal_storage::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetaKey(String);

impl MetaKey {
    /// A metadata key; errs with [`Error::Invalid`](crate::Error::Invalid)
    /// if `name` is empty or longer than
    /// [`limits::META_KEY_BYTES_MAX`](crate::limits::META_KEY_BYTES_MAX).
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::invalid("a meta key is empty"));
        }
        if name.len() > limits::META_KEY_BYTES_MAX {
            return Err(Error::invalid(format!(
                "a meta key is {} bytes, the limit is {}",
                name.len(),
                limits::META_KEY_BYTES_MAX
            )));
        }
        Ok(MetaKey(name))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which shards a cross-shard scan covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardScope {
    /// Every shard with data.
    All,
    /// One shard.
    One(ShardId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_bytes_in_big_endian() {
        let id = RequestId::new(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        assert_eq!(id.to_bytes()[0], 0x01);
        assert_eq!(RequestId::from_bytes(id.to_bytes()), id);
        assert_eq!(id.to_string(), "0102030405060708090a0b0c0d0e0f10");
        let timer = TimerId::new(u128::MAX);
        assert_eq!(TimerId::from_bytes(timer.to_bytes()), timer);
    }

    #[test]
    fn entity_key_enforces_limits() {
        let shard = ShardId::new(1);
        assert!(EntityKey::new(shard, "T", "").is_ok());
        assert!(EntityKey::new(shard, "", "id").is_err());
        let long_type = "t".repeat(limits::ENTITY_TYPE_BYTES_MAX + 1);
        assert!(EntityKey::new(shard, long_type, "id").is_err());
        let long_id = "i".repeat(limits::ENTITY_ID_BYTES_MAX + 1);
        assert!(EntityKey::new(shard, "T", long_id).is_err());
        let max_id = "i".repeat(limits::ENTITY_ID_BYTES_MAX);
        assert!(EntityKey::new(shard, "T", max_id).is_ok());
    }

    #[test]
    fn epoch_next_saturates() {
        assert_eq!(Epoch::ZERO.next(), Epoch::new(1));
        assert_eq!(Epoch::new(u64::MAX).next(), Epoch::new(u64::MAX));
    }
}
