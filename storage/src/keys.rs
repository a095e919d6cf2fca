//! The tables and the byte layout of every key (shared by all key-value
//! backends, so memory and redb store byte-identical keys).
//!
//! Invariant: every key of every data table starts with the shard as a
//! big-endian `u32`, so a shard's data is one contiguous range per table
//! (`[shard_be, (shard+1)_be)`) and can be scanned, copied or dropped as a
//! unit. Variable-length parts carry a fixed-width length prefix, so every
//! encoding is self-delimiting: a prefix scan for one entity never matches
//! another entity. All integers are big-endian, so byte order is numeric
//! order (due times and step indices scan in time/step order).
//!
//! | table          | key                                                   | value                    |
//! |----------------|-------------------------------------------------------|--------------------------|
//! | `shard_epochs` | shard u32                                             | epoch u64 BE             |
//! | `state`        | entity                                                | state bytes              |
//! | `journal`      | entity · execution u128 · step u32                    | entry bytes              |
//! | `messages`     | shard u32 · request u128                              | protobuf `Message`       |
//! | `message_due`  | shard u32 · next_attempt_at_ms u64 · request u128     | empty (index)            |
//! | `replies`      | shard u32 · request u128                              | reply bytes              |
//! | `dead_letters` | shard u32 · request u128                              | protobuf `DeadLetter`    |
//! | `timers`       | shard u32 · due_ms u64 · timer u128                   | payload bytes            |
//! | `deferreds`    | entity · name_len u8 · name                           | protobuf `DeferredValue` |
//! | `node_meta`    | meta key (UTF-8, not shard-prefixed)                  | opaque bytes             |
//!
//! where `entity` = shard u32 · type_len u8 · type (UTF-8) · id_len u16 · id (UTF-8).
//! `node_meta` is not a data table: the shard-prefix invariant below is
//! about the other nine.
//!
//! This module only encodes and decodes; it does no I/O.

use crate::error::{Error, Result};
use crate::limits;
use crate::types::{EntityKey, RequestId, ShardId, StepIndex, TimerId, TimerKey, Timestamp};

/// The tables the engine manages: the nine shard-prefixed data tables and
/// `node_meta`, the node-metadata namespace ([`MetaKey`](crate::MetaKey) →
/// opaque bytes) written by `Storage::commit_group`. `node_meta` keys are
/// not shard-prefixed and no batch op ever touches them. The `meta` table of
/// the redb backend (magic, format version) is none of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Table {
    ShardEpochs,
    State,
    Journal,
    Messages,
    MessageDue,
    Replies,
    DeadLetters,
    Timers,
    Deferreds,
    NodeMeta,
}

impl Table {
    /// Every shard-prefixed data table, in index order.
    pub(crate) const DATA: [Table; 9] = [
        Table::ShardEpochs,
        Table::State,
        Table::Journal,
        Table::Messages,
        Table::MessageDue,
        Table::Replies,
        Table::DeadLetters,
        Table::Timers,
        Table::Deferreds,
    ];

    /// Every table, in index order: the data tables, then `node_meta`.
    pub(crate) const ALL: [Table; 10] = [
        Table::ShardEpochs,
        Table::State,
        Table::Journal,
        Table::Messages,
        Table::MessageDue,
        Table::Replies,
        Table::DeadLetters,
        Table::Timers,
        Table::Deferreds,
        Table::NodeMeta,
    ];

    /// Number of data tables.
    pub(crate) const COUNT: usize = Table::ALL.len();

    /// The table's stored name (part of the on-disk format).
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Table::ShardEpochs => "shard_epochs",
            Table::State => "state",
            Table::Journal => "journal",
            Table::Messages => "messages",
            Table::MessageDue => "message_due",
            Table::Replies => "replies",
            Table::DeadLetters => "dead_letters",
            Table::Timers => "timers",
            Table::Deferreds => "deferreds",
            Table::NodeMeta => "node_meta",
        }
    }

    /// The table's position in [`Table::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// Length of the shard prefix.
pub(crate) const SHARD_BYTES: usize = 4;
const U64_BYTES: usize = 8;
const ID_BYTES: usize = 16;
const STEP_BYTES: usize = 4;

/// The 4-byte prefix of every key of `shard`.
pub(crate) fn shard_prefix(shard: ShardId) -> [u8; SHARD_BYTES] {
    shard.get().to_be_bytes()
}

/// The first key after every key of `shard`, or `None` for the last shard.
pub(crate) fn next_shard_prefix(shard: ShardId) -> Option<[u8; SHARD_BYTES]> {
    shard.get().checked_add(1).map(u32::to_be_bytes)
}

/// The shard a key belongs to.
pub(crate) fn shard_of(table: Table, key: &[u8]) -> Result<ShardId> {
    let prefix = key
        .get(..SHARD_BYTES)
        .ok_or_else(|| Error::corrupt_record(table.name(), "key shorter than its shard prefix"))?;
    let mut bytes = [0u8; SHARD_BYTES];
    bytes.copy_from_slice(prefix);
    Ok(ShardId::new(u32::from_be_bytes(bytes)))
}

pub(crate) fn epoch_key(shard: ShardId) -> [u8; SHARD_BYTES] {
    shard_prefix(shard)
}

fn push_entity(key: &mut Vec<u8>, entity: &EntityKey) {
    let entity_type = entity.entity_type().as_bytes();
    let entity_id = entity.entity_id().as_bytes();
    // EntityKey::new enforces these; a violation would corrupt key order.
    assert!(entity_type.len() <= limits::ENTITY_TYPE_BYTES_MAX);
    assert!(entity_id.len() <= limits::ENTITY_ID_BYTES_MAX);
    key.extend_from_slice(&shard_prefix(entity.shard()));
    key.push(entity_type.len() as u8);
    key.extend_from_slice(entity_type);
    key.extend_from_slice(&(entity_id.len() as u16).to_be_bytes());
    key.extend_from_slice(entity_id);
}

fn entity_len(entity: &EntityKey) -> usize {
    SHARD_BYTES + 1 + entity.entity_type().len() + 2 + entity.entity_id().len()
}

pub(crate) fn state_key(entity: &EntityKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(entity_len(entity));
    push_entity(&mut key, entity);
    key
}

/// Prefix of every journal key of one execution.
pub(crate) fn journal_prefix(entity: &EntityKey, execution: RequestId) -> Vec<u8> {
    let mut key = Vec::with_capacity(entity_len(entity) + ID_BYTES + STEP_BYTES);
    push_entity(&mut key, entity);
    key.extend_from_slice(&execution.to_bytes());
    key
}

pub(crate) fn journal_key(entity: &EntityKey, execution: RequestId, step: StepIndex) -> Vec<u8> {
    let mut key = journal_prefix(entity, execution);
    key.extend_from_slice(&step.get().to_be_bytes());
    key
}

/// The step of a journal key found under `journal_prefix`.
pub(crate) fn journal_step(prefix_len: usize, key: &[u8]) -> Result<StepIndex> {
    let step: [u8; STEP_BYTES] = key
        .get(prefix_len..)
        .and_then(|rest| rest.try_into().ok())
        .ok_or_else(|| {
            Error::corrupt_record(Table::Journal.name(), "journal key has a malformed step")
        })?;
    Ok(StepIndex::new(u32::from_be_bytes(step)))
}

/// Key of `messages`, `replies` and `dead_letters`.
pub(crate) fn request_key(shard: ShardId, request: RequestId) -> [u8; SHARD_BYTES + ID_BYTES] {
    let mut key = [0u8; SHARD_BYTES + ID_BYTES];
    key[..SHARD_BYTES].copy_from_slice(&shard_prefix(shard));
    key[SHARD_BYTES..].copy_from_slice(&request.to_bytes());
    key
}

const TIMED_KEY_BYTES: usize = SHARD_BYTES + U64_BYTES + ID_BYTES;

fn timed_key(shard: ShardId, at: Timestamp, id: [u8; ID_BYTES]) -> [u8; TIMED_KEY_BYTES] {
    let mut key = [0u8; TIMED_KEY_BYTES];
    key[..SHARD_BYTES].copy_from_slice(&shard_prefix(shard));
    key[SHARD_BYTES..SHARD_BYTES + U64_BYTES].copy_from_slice(&at.as_unix_ms().to_be_bytes());
    key[SHARD_BYTES + U64_BYTES..].copy_from_slice(&id);
    key
}

fn split_timed_key(table: Table, key: &[u8]) -> Result<(ShardId, Timestamp, [u8; ID_BYTES])> {
    if key.len() != TIMED_KEY_BYTES {
        return Err(Error::corrupt_record(
            table.name(),
            format!("key is {} bytes, expected {TIMED_KEY_BYTES}", key.len()),
        ));
    }
    let shard = shard_of(table, key)?;
    let mut at = [0u8; U64_BYTES];
    at.copy_from_slice(&key[SHARD_BYTES..SHARD_BYTES + U64_BYTES]);
    let mut id = [0u8; ID_BYTES];
    id.copy_from_slice(&key[SHARD_BYTES + U64_BYTES..]);
    Ok((shard, Timestamp::from_unix_ms(u64::from_be_bytes(at)), id))
}

/// The first key at or after time `at` in `shard` of a time-ordered table
/// (`message_due`, `timers`).
pub(crate) fn timed_lower_bound(shard: ShardId, at: Timestamp) -> [u8; TIMED_KEY_BYTES] {
    timed_key(shard, at, [0u8; ID_BYTES])
}

/// The first key strictly after time `at` in `shard`, or the end of the
/// shard if `at` is the last representable time.
pub(crate) fn timed_upper_bound(shard: ShardId, at: Timestamp) -> Vec<u8> {
    match at.as_unix_ms().checked_add(1) {
        Some(next) => timed_lower_bound(shard, Timestamp::from_unix_ms(next)).to_vec(),
        None => match next_shard_prefix(shard) {
            Some(prefix) => prefix.to_vec(),
            // Last shard at the end of time: one byte longer than any timed
            // key and all 0xff, so it sorts after every key of the table.
            None => vec![0xff; TIMED_KEY_BYTES + 1],
        },
    }
}

pub(crate) fn message_due_key(
    shard: ShardId,
    due: Timestamp,
    request: RequestId,
) -> [u8; TIMED_KEY_BYTES] {
    timed_key(shard, due, request.to_bytes())
}

pub(crate) fn split_message_due_key(key: &[u8]) -> Result<(ShardId, Timestamp, RequestId)> {
    let (shard, due, id) = split_timed_key(Table::MessageDue, key)?;
    Ok((shard, due, RequestId::from_bytes(id)))
}

pub(crate) fn timer_key(key: &TimerKey) -> [u8; TIMED_KEY_BYTES] {
    timed_key(key.shard, key.due, key.id.to_bytes())
}

pub(crate) fn split_timer_key(key: &[u8]) -> Result<TimerKey> {
    let (shard, due, id) = split_timed_key(Table::Timers, key)?;
    Ok(TimerKey::new(shard, due, TimerId::from_bytes(id)))
}

pub(crate) fn deferred_key(entity: &EntityKey, name: &str) -> Vec<u8> {
    // Checked by batch validation and by the read path.
    assert!(name.len() <= limits::DEFERRED_NAME_BYTES_MAX);
    let mut key = Vec::with_capacity(entity_len(entity) + 1 + name.len());
    push_entity(&mut key, entity);
    key.push(name.len() as u8);
    key.extend_from_slice(name.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(shard: u32, entity_type: &str, id: &str) -> EntityKey {
        EntityKey::new(ShardId::new(shard), entity_type, id).expect("valid key")
    }

    #[test]
    fn every_key_starts_with_its_shard_big_endian() {
        let shard = ShardId::new(0x0102_0304);
        let e = entity(0x0102_0304, "T", "id");
        let request = RequestId::new(9);
        let keys: Vec<Vec<u8>> = vec![
            epoch_key(shard).to_vec(),
            state_key(&e),
            journal_key(&e, request, StepIndex::new(1)),
            request_key(shard, request).to_vec(),
            message_due_key(shard, Timestamp::from_unix_ms(5), request).to_vec(),
            timer_key(&TimerKey::new(shard, Timestamp::ZERO, TimerId::new(1))).to_vec(),
            deferred_key(&e, "d"),
        ];
        for key in keys {
            assert_eq!(&key[..4], &[1, 2, 3, 4]);
        }
    }

    #[test]
    fn entity_layout_is_length_prefixed() {
        let key = state_key(&entity(1, "Ab", "xyz"));
        assert_eq!(key, [0, 0, 0, 1, 2, b'A', b'b', 0, 3, b'x', b'y', b'z']);
    }

    #[test]
    fn journal_keys_order_by_step_and_stay_under_their_prefix() {
        let e = entity(1, "T", "a");
        let other = entity(1, "T", "ab");
        let execution = RequestId::new(7);
        let prefix = journal_prefix(&e, execution);
        let k1 = journal_key(&e, execution, StepIndex::new(1));
        let k256 = journal_key(&e, execution, StepIndex::new(256));
        assert!(k1 < k256);
        assert!(k1.starts_with(&prefix));
        assert!(!journal_key(&other, execution, StepIndex::new(0)).starts_with(&prefix));
        assert_eq!(
            journal_step(prefix.len(), &k256).expect("step"),
            StepIndex::new(256)
        );
        assert!(journal_step(prefix.len(), &prefix).is_err());
    }

    #[test]
    fn timed_keys_order_by_time_then_id_and_round_trip() {
        let shard = ShardId::new(2);
        let early = TimerKey::new(shard, Timestamp::from_unix_ms(10), TimerId::new(u128::MAX));
        let late = TimerKey::new(shard, Timestamp::from_unix_ms(11), TimerId::new(0));
        assert!(timer_key(&early) < timer_key(&late));
        assert_eq!(split_timer_key(&timer_key(&late)).expect("decodes"), late);
        assert!(split_timer_key(&[0, 0, 0, 2]).is_err());
        let upper = timed_upper_bound(shard, Timestamp::from_unix_ms(10));
        assert!(timer_key(&early).as_slice() < upper.as_slice());
        assert!(timer_key(&late).as_slice() >= upper.as_slice());
    }

    #[test]
    fn upper_bound_at_end_of_time_covers_the_whole_shard() {
        let last = ShardId::new(u32::MAX);
        let key = timer_key(&TimerKey::new(
            last,
            Timestamp::MAX,
            TimerId::new(u128::MAX),
        ));
        assert!(key.as_slice() < timed_upper_bound(last, Timestamp::MAX).as_slice());
        let shard = ShardId::new(5);
        let key = timer_key(&TimerKey::new(
            shard,
            Timestamp::MAX,
            TimerId::new(u128::MAX),
        ));
        let upper = timed_upper_bound(shard, Timestamp::MAX);
        assert!(key.as_slice() < upper.as_slice());
        assert_eq!(upper, 6u32.to_be_bytes().to_vec());
    }

    #[test]
    fn table_indices_match_their_position() {
        for (position, table) in Table::ALL.iter().enumerate() {
            assert_eq!(table.index(), position);
        }
    }
}
