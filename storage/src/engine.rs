//! The deterministic core every key-value backend shares: how a
//! [`WriteBatch`] applies to tables of byte keys, and how reads and scans
//! walk them.
//!
//! Backends provide only [`KvRead`] / [`KvWrite`] (get, ordered scan, put,
//! delete, range clear over the tables of `keys`) and transaction
//! boundaries; all storage semantics — fencing, insert-if-absent, mailbox
//! moves, scan order, commit groups with their `node_meta` record — live
//! here once (and the snapshot format in `snapshot`), so the memory and
//! redb backends cannot drift apart.
//!
//! Invariants:
//! - `apply` checks the epoch before its first write; after that the only
//!   possible errors are fatal (I/O, corrupt records), on which the caller
//!   must discard the whole transaction. So a batch applies all or nothing.
//! - `apply` reads no clock and no randomness: the same batch applied to the
//!   same data has the same effect on every replica.
//!
//! It does no I/O of its own, no locking and no validation of limits (a
//! batch is validated by [`WriteBatch::validate`] before it gets here).

use std::ops::ControlFlow;

use bytes::Bytes;

use crate::batch::{CommitOutcome, Op, SkipReason, WriteBatch};
use crate::error::{Error, Result};
use crate::keys::{self, Table};
use crate::limits;
use crate::proto;
use crate::types::{
    DeadLetter, DeferredValue, EntityKey, Epoch, JournalEntry, Message, MetaKey, RequestId,
    ShardId, ShardScope, Timer, Timestamp,
};

/// A scan visitor: gets each key and value, says whether to go on.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// Read access to the data tables (a snapshot, or a write transaction).
pub(crate) trait KvRead {
    /// The value at `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>>;

    /// Whether `key` is present.
    fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.get(table, key)?.is_some())
    }

    /// Visits the entries with `start <= key < end` (no `end`: to the end of
    /// the table) in ascending key order until `visit` breaks.
    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()>;
}

/// Write access to the data tables, inside one transaction.
pub(crate) trait KvWrite: KvRead {
    /// Sets `key` to `value`.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key` (absent is fine).
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()>;

    /// Removes every entry with `start <= key < end` (no `end`: to the end
    /// of the table). The default deletes key by key.
    fn clear(&mut self, table: Table, start: &[u8], end: Option<&[u8]>) -> Result<()> {
        let mut doomed = Vec::new();
        self.scan(table, start, end, &mut |key, _| {
            doomed.push(key.to_vec());
            Ok(ControlFlow::Continue(()))
        })?;
        for key in doomed {
            self.delete(table, &key)?;
        }
        Ok(())
    }
}

// ---- Writes ----

/// Applies a validated batch. See the module invariants for atomicity.
pub(crate) fn apply(kv: &mut impl KvWrite, batch: &WriteBatch) -> Result<CommitOutcome> {
    let shard = batch.shard();
    let current = shard_epoch(kv, shard)?;
    if batch.epoch() < current {
        return Err(Error::StaleEpoch {
            shard,
            batch: batch.epoch(),
            current,
        });
    }
    if batch.epoch() > current {
        kv.put(
            Table::ShardEpochs,
            &keys::epoch_key(shard),
            &batch.epoch().get().to_be_bytes(),
        )?;
    }
    let mut outcome = CommitOutcome::default();
    for (index, op) in batch.ops().iter().enumerate() {
        if let Some(reason) = apply_op(kv, shard, op)? {
            outcome.skip(index, reason);
        }
    }
    Ok(outcome)
}

/// Checks the limits of a whole group (batch count, total payload bytes,
/// meta value size) before anything of it is applied. Each batch's own
/// validation happens in [`apply_group`], reported per batch.
pub(crate) fn check_group(batches: &[WriteBatch], meta: Option<&(MetaKey, Bytes)>) -> Result<()> {
    if batches.len() > limits::GROUP_BATCHES_MAX {
        return Err(Error::invalid(format!(
            "group has {} batches, the limit is {}",
            batches.len(),
            limits::GROUP_BATCHES_MAX
        )));
    }
    let bytes = batches
        .iter()
        .map(WriteBatch::payload_bytes)
        .fold(0usize, usize::saturating_add);
    if bytes > limits::GROUP_BYTES_MAX {
        return Err(Error::invalid(format!(
            "group payloads add up to {bytes} bytes, the limit is {}",
            limits::GROUP_BYTES_MAX
        )));
    }
    if let Some((key, value)) = meta
        && value.len() > limits::VALUE_BYTES_MAX
    {
        return Err(Error::invalid(format!(
            "meta value of `{key}` is {} bytes, the limit is {}",
            value.len(),
            limits::VALUE_BYTES_MAX
        )));
    }
    Ok(())
}

/// Applies a group of batches in order, then writes `meta`, all in the
/// caller's one transaction. A batch that is invalid or fenced off gets its
/// error in its slot and applies nothing; the others are unaffected. A fatal
/// error is returned as the outer error: the caller must discard the whole
/// transaction (so the group, meta included, applies all or nothing).
pub(crate) fn apply_group(
    kv: &mut impl KvWrite,
    batches: &[WriteBatch],
    meta: Option<&(MetaKey, Bytes)>,
) -> Result<Vec<Result<CommitOutcome>>> {
    let mut results = Vec::with_capacity(batches.len());
    for batch in batches {
        match batch.validate().and_then(|()| apply(kv, batch)) {
            Err(error) if error.is_fatal() => return Err(error),
            result => results.push(result),
        }
    }
    if let Some((key, value)) = meta {
        kv.put(Table::NodeMeta, key.as_str().as_bytes(), value)?;
    }
    Ok(results)
}

fn apply_op(kv: &mut impl KvWrite, shard: ShardId, op: &Op) -> Result<Option<SkipReason>> {
    match op {
        Op::PutState { entity, state } => {
            kv.put(Table::State, &keys::state_key(entity), state)?;
        }
        Op::DeleteState { entity } => {
            kv.delete(Table::State, &keys::state_key(entity))?;
        }
        Op::AppendJournal {
            entity,
            execution,
            step,
            entry,
        } => {
            let key = keys::journal_key(entity, *execution, *step);
            if kv.contains(Table::Journal, &key)? {
                return Ok(Some(SkipReason::JournalStepExists));
            }
            kv.put(Table::Journal, &key, entry)?;
        }
        Op::DeleteJournal { entity, execution } => {
            let prefix = keys::journal_prefix(entity, *execution);
            let end = prefix_end(&prefix);
            let mut doomed = Vec::new();
            kv.scan(Table::Journal, &prefix, end.as_deref(), &mut |key, _| {
                doomed.push(key.to_vec());
                Ok(ControlFlow::Continue(()))
            })?;
            for key in doomed {
                kv.delete(Table::Journal, &key)?;
            }
        }
        Op::EnqueueMessage { message } => {
            let key = keys::request_key(shard, message.request_id);
            if kv.contains(Table::Messages, &key)? {
                return Ok(Some(SkipReason::MessagePending));
            }
            if kv.contains(Table::Replies, &key)? {
                return Ok(Some(SkipReason::MessageReplied));
            }
            if kv.contains(Table::DeadLetters, &key)? {
                return Ok(Some(SkipReason::MessageDeadLettered));
            }
            put_message(kv, shard, message)?;
        }
        Op::RescheduleMessage {
            request_id,
            next_attempt_at,
        } => {
            let Some(mut message) = read_message(kv, shard, *request_id)? else {
                return Ok(Some(SkipReason::MessageNotFound));
            };
            remove_message(kv, shard, &message)?;
            message.attempts = message.attempts.saturating_add(1);
            message.next_attempt_at = *next_attempt_at;
            put_message(kv, shard, &message)?;
        }
        Op::AckMessage { request_id, reply } => {
            if let Some(message) = read_message(kv, shard, *request_id)? {
                remove_message(kv, shard, &message)?;
            }
            let key = keys::request_key(shard, *request_id);
            if kv.contains(Table::Replies, &key)? {
                return Ok(Some(SkipReason::ReplyExists));
            }
            kv.put(Table::Replies, &key, reply)?;
        }
        Op::DeleteReply { request_id } => {
            kv.delete(Table::Replies, &keys::request_key(shard, *request_id))?;
        }
        Op::DeadLetterMessage {
            request_id,
            reason,
            at,
        } => {
            let Some(message) = read_message(kv, shard, *request_id)? else {
                return Ok(Some(SkipReason::MessageNotFound));
            };
            remove_message(kv, shard, &message)?;
            kv.put(
                Table::DeadLetters,
                &keys::request_key(shard, *request_id),
                &proto::encode_dead_letter(&message, reason, *at),
            )?;
        }
        Op::ReplayDeadLetter {
            request_id,
            next_attempt_at,
        } => {
            let key = keys::request_key(shard, *request_id);
            let Some(dead) = kv.get(Table::DeadLetters, &key)? else {
                return Ok(Some(SkipReason::DeadLetterNotFound));
            };
            if kv.contains(Table::Messages, &key)? {
                return Ok(Some(SkipReason::MessagePending));
            }
            let mut message = proto::decode_dead_letter(&dead)?.message;
            kv.delete(Table::DeadLetters, &key)?;
            message.attempts = 0;
            message.next_attempt_at = *next_attempt_at;
            put_message(kv, shard, &message)?;
        }
        Op::DeleteDeadLetter { request_id } => {
            kv.delete(Table::DeadLetters, &keys::request_key(shard, *request_id))?;
        }
        Op::PutTimer { key, payload } => {
            kv.put(Table::Timers, &keys::timer_key(key), payload)?;
        }
        Op::DeleteTimer { key } => {
            kv.delete(Table::Timers, &keys::timer_key(key))?;
        }
        Op::ResolveDeferred {
            entity,
            name,
            value,
        } => {
            let key = keys::deferred_key(entity, name);
            if kv.contains(Table::Deferreds, &key)? {
                return Ok(Some(SkipReason::DeferredResolved));
            }
            kv.put(Table::Deferreds, &key, &proto::encode_deferred(value))?;
        }
        Op::DeleteDeferred { entity, name } => {
            kv.delete(Table::Deferreds, &keys::deferred_key(entity, name))?;
        }
    }
    Ok(None)
}

/// Writes a message and its due-index entry.
fn put_message(kv: &mut impl KvWrite, shard: ShardId, message: &Message) -> Result<()> {
    kv.put(
        Table::Messages,
        &keys::request_key(shard, message.request_id),
        &proto::encode_message(message),
    )?;
    kv.put(
        Table::MessageDue,
        &keys::message_due_key(shard, message.next_attempt_at, message.request_id),
        &[],
    )
}

/// Removes a message and its due-index entry.
fn remove_message(kv: &mut impl KvWrite, shard: ShardId, message: &Message) -> Result<()> {
    kv.delete(
        Table::Messages,
        &keys::request_key(shard, message.request_id),
    )?;
    kv.delete(
        Table::MessageDue,
        &keys::message_due_key(shard, message.next_attempt_at, message.request_id),
    )
}

/// The first key after every key starting with `prefix`, or `None` if
/// there is none (a prefix of only 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

// ---- Reads ----

/// A shard's current epoch ([`Epoch::ZERO`] if it never had a batch above 0).
pub(crate) fn shard_epoch(kv: &impl KvRead, shard: ShardId) -> Result<Epoch> {
    let Some(value) = kv.get(Table::ShardEpochs, &keys::epoch_key(shard))? else {
        return Ok(Epoch::ZERO);
    };
    let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| {
        Error::corrupt_record(
            Table::ShardEpochs.name(),
            format!(
                "epoch of shard {shard} is {} bytes, expected 8",
                value.len()
            ),
        )
    })?;
    Ok(Epoch::new(u64::from_be_bytes(bytes)))
}

/// A node-metadata record.
pub(crate) fn read_meta(kv: &impl KvRead, key: &MetaKey) -> Result<Option<Bytes>> {
    kv.get(Table::NodeMeta, key.as_str().as_bytes())
}

pub(crate) fn load_state(kv: &impl KvRead, entity: &EntityKey) -> Result<Option<Bytes>> {
    kv.get(Table::State, &keys::state_key(entity))
}

pub(crate) fn read_journal(
    kv: &impl KvRead,
    entity: &EntityKey,
    execution: RequestId,
) -> Result<Vec<JournalEntry>> {
    let prefix = keys::journal_prefix(entity, execution);
    let end = prefix_end(&prefix);
    let mut entries = Vec::new();
    kv.scan(
        Table::Journal,
        &prefix,
        end.as_deref(),
        &mut |key, value| {
            let step = keys::journal_step(prefix.len(), key)?;
            entries.push(JournalEntry::new(step, Bytes::copy_from_slice(value)));
            Ok(ControlFlow::Continue(()))
        },
    )?;
    Ok(entries)
}

pub(crate) fn read_reply(
    kv: &impl KvRead,
    shard: ShardId,
    request: RequestId,
) -> Result<Option<Bytes>> {
    kv.get(Table::Replies, &keys::request_key(shard, request))
}

pub(crate) fn read_message(
    kv: &impl KvRead,
    shard: ShardId,
    request: RequestId,
) -> Result<Option<Message>> {
    kv.get(Table::Messages, &keys::request_key(shard, request))?
        .map(|bytes| proto::decode_message(&bytes))
        .transpose()
}

pub(crate) fn due_messages(
    kv: &impl KvRead,
    shard: ShardId,
    up_to: Timestamp,
    limit: usize,
) -> Result<Vec<Message>> {
    let limit = limit.min(limits::SCAN_ITEMS_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut due: Vec<RequestId> = Vec::new();
    let start = keys::timed_lower_bound(shard, Timestamp::ZERO);
    let end = keys::timed_upper_bound(shard, up_to);
    kv.scan(Table::MessageDue, &start, Some(&end), &mut |key, _| {
        let (_, _, request) = keys::split_message_due_key(key)?;
        due.push(request);
        Ok(if due.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    due.into_iter()
        .map(|request| {
            read_message(kv, shard, request)?.ok_or_else(|| {
                Error::corrupt_record(
                    Table::MessageDue.name(),
                    format!("due index names request {request}, which has no message"),
                )
            })
        })
        .collect()
}

pub(crate) fn next_message_due(kv: &impl KvRead, shard: ShardId) -> Result<Option<Timestamp>> {
    let start = keys::shard_prefix(shard);
    let end = keys::next_shard_prefix(shard);
    first_key(
        kv,
        Table::MessageDue,
        &start,
        end.as_ref().map(|e| e.as_slice()),
    )?
    .map(|key| keys::split_message_due_key(&key).map(|(_, due, _)| due))
    .transpose()
}

pub(crate) fn dead_letters(
    kv: &impl KvRead,
    shard: ShardId,
    after: Option<RequestId>,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    let limit = limit.min(limits::SCAN_ITEMS_MAX);
    let mut letters = Vec::new();
    let start_id = match after {
        None => RequestId::new(0),
        Some(after) => match after.get().checked_add(1) {
            Some(next) => RequestId::new(next),
            None => return Ok(letters),
        },
    };
    if limit == 0 {
        return Ok(letters);
    }
    let start = keys::request_key(shard, start_id);
    let end = keys::next_shard_prefix(shard);
    kv.scan(
        Table::DeadLetters,
        &start,
        end.as_ref().map(|e| e.as_slice()),
        &mut |_, value| {
            letters.push(proto::decode_dead_letter(value)?);
            Ok(if letters.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        },
    )?;
    Ok(letters)
}

pub(crate) fn due_timers(
    kv: &impl KvRead,
    scope: ShardScope,
    up_to: Timestamp,
    limit: usize,
) -> Result<Vec<Timer>> {
    let limit = limit.min(limits::SCAN_ITEMS_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    match scope {
        ShardScope::One(shard) => shard_due_timers(kv, shard, up_to, limit),
        ShardScope::All => {
            // Take the earliest `limit` of each shard, merge, keep the
            // earliest `limit` overall: global due order, bounded memory.
            let mut due: Vec<Timer> = Vec::new();
            for_each_shard(kv, Table::Timers, |shard| {
                let cutoff = if due.len() >= limit {
                    due.last().map_or(up_to, |timer| timer.key.due.min(up_to))
                } else {
                    up_to
                };
                due.extend(shard_due_timers(kv, shard, cutoff, limit)?);
                due.sort_by_key(|timer| (timer.key.due, timer.key.shard, timer.key.id));
                due.truncate(limit);
                Ok(())
            })?;
            Ok(due)
        }
    }
}

fn shard_due_timers(
    kv: &impl KvRead,
    shard: ShardId,
    up_to: Timestamp,
    limit: usize,
) -> Result<Vec<Timer>> {
    let mut due = Vec::new();
    let start = keys::timed_lower_bound(shard, Timestamp::ZERO);
    let end = keys::timed_upper_bound(shard, up_to);
    kv.scan(Table::Timers, &start, Some(&end), &mut |key, value| {
        due.push(Timer {
            key: keys::split_timer_key(key)?,
            payload: Bytes::copy_from_slice(value),
        });
        Ok(if due.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    Ok(due)
}

pub(crate) fn next_timer_due(kv: &impl KvRead, scope: ShardScope) -> Result<Option<Timestamp>> {
    match scope {
        ShardScope::One(shard) => shard_next_timer(kv, shard),
        ShardScope::All => {
            let mut earliest: Option<Timestamp> = None;
            for_each_shard(kv, Table::Timers, |shard| {
                if let Some(due) = shard_next_timer(kv, shard)? {
                    earliest = Some(earliest.map_or(due, |earliest| earliest.min(due)));
                }
                Ok(())
            })?;
            Ok(earliest)
        }
    }
}

fn shard_next_timer(kv: &impl KvRead, shard: ShardId) -> Result<Option<Timestamp>> {
    let start = keys::shard_prefix(shard);
    let end = keys::next_shard_prefix(shard);
    first_key(
        kv,
        Table::Timers,
        &start,
        end.as_ref().map(|e| e.as_slice()),
    )?
    .map(|key| keys::split_timer_key(&key).map(|timer| timer.due))
    .transpose()
}

pub(crate) fn read_deferred(
    kv: &impl KvRead,
    entity: &EntityKey,
    name: &str,
) -> Result<Option<DeferredValue>> {
    if name.len() > limits::DEFERRED_NAME_BYTES_MAX {
        return Err(Error::invalid(format!(
            "deferred name is {} bytes, the limit is {}",
            name.len(),
            limits::DEFERRED_NAME_BYTES_MAX
        )));
    }
    kv.get(Table::Deferreds, &keys::deferred_key(entity, name))?
        .map(|bytes| proto::decode_deferred(&bytes))
        .transpose()
}

/// The first key in `[start, end)`.
fn first_key(
    kv: &impl KvRead,
    table: Table,
    start: &[u8],
    end: Option<&[u8]>,
) -> Result<Option<Vec<u8>>> {
    let mut first = None;
    kv.scan(table, start, end, &mut |key, _| {
        first = Some(key.to_vec());
        Ok(ControlFlow::Break(()))
    })?;
    Ok(first)
}

/// Calls `each` for every shard that has at least one key in `table`, in
/// shard order, seeking from one shard's range to the next (cost: one seek
/// per non-empty shard, whatever the number of keys).
fn for_each_shard(
    kv: &impl KvRead,
    table: Table,
    mut each: impl FnMut(ShardId) -> Result<()>,
) -> Result<()> {
    let mut cursor = Some(keys::shard_prefix(ShardId::new(0)));
    while let Some(start) = cursor {
        let Some(key) = first_key(kv, table, &start, None)? else {
            break;
        };
        let shard = keys::shard_of(table, &key)?;
        each(shard)?;
        cursor = keys::next_shard_prefix(shard);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(&[1, 2, 3]), Some(vec![1, 2, 4]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
