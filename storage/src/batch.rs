//! [`WriteBatch`]: the unit of atomic, fenced writes, and [`CommitOutcome`].
//!
//! A batch is a plain data value — a shard, an epoch and an ordered list of
//! [`Op`]s — with a stable protobuf encoding, so a replicated log can carry
//! it and every replica applies the same bytes to the same effect. It applies
//! all or nothing; ops apply in order, so a later op sees an earlier one's
//! writes. Invariant: every op of a batch touches only the batch's shard
//! (checked by [`WriteBatch::validate`]), so a shard's data stays a unit.
//! This module builds, validates and encodes batches; applying them is the
//! backends' job (see `engine`).

use bytes::{Buf, Bytes};
use prost::Message as _;

use crate::error::{Error, Result};
use crate::limits;
use crate::proto::{self, pb};
use crate::types::{
    DeferredValue, EntityKey, Epoch, Message, RequestId, ShardId, StepIndex, TimerKey, Timestamp,
};

/// One write operation of a [`WriteBatch`].
///
/// Insert-if-absent operations (`AppendJournal`, `EnqueueMessage`, the reply
/// of `AckMessage`, `ResolveDeferred`) never overwrite: when their key is
/// taken they are skipped and the skip is reported in [`CommitOutcome`].
/// Operations on a missing message are skipped and reported the same way,
/// which makes applying a batch twice harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Sets an entity's state (overwrites).
    PutState {
        /// The entity.
        entity: EntityKey,
        /// Its new state (opaque bytes).
        state: Bytes,
    },
    /// Removes an entity's state.
    DeleteState {
        /// The entity.
        entity: EntityKey,
    },
    /// Records step `step` of workflow execution `execution` of `entity`.
    /// Insert-if-absent: skipped with [`SkipReason::JournalStepExists`] if
    /// the step is already journaled (the first entry stays).
    AppendJournal {
        /// The entity running the workflow.
        entity: EntityKey,
        /// The execution (the request that started the workflow).
        execution: RequestId,
        /// The step.
        step: StepIndex,
        /// The entry (opaque bytes).
        entry: Bytes,
    },
    /// Removes every journal entry of one execution.
    DeleteJournal {
        /// The entity running the workflow.
        entity: EntityKey,
        /// The execution.
        execution: RequestId,
    },
    /// Persists a message in its target's shard mailbox. Insert-if-absent by
    /// request id: skipped if the request is already pending
    /// ([`SkipReason::MessagePending`]), answered ([`SkipReason::MessageReplied`]:
    /// read the stored reply) or dead-lettered ([`SkipReason::MessageDeadLettered`]).
    EnqueueMessage {
        /// The message; its target's shard must be the batch's shard.
        message: Message,
    },
    /// Records a failed delivery attempt: `attempts` + 1 and a new due time.
    /// Skipped with [`SkipReason::MessageNotFound`] if no such message is pending.
    RescheduleMessage {
        /// The pending message.
        request_id: RequestId,
        /// When to try again.
        next_attempt_at: Timestamp,
    },
    /// Completes a request: removes its pending message, if any, and stores
    /// its reply. The reply is first-wins: if one is already stored it is
    /// kept and the op is reported as [`SkipReason::ReplyExists`] (the message
    /// is still removed). The reply table doubles as the idempotency store:
    /// an ack with no pending message just records the reply.
    AckMessage {
        /// The request.
        request_id: RequestId,
        /// Its reply (opaque bytes).
        reply: Bytes,
    },
    /// Forgets a stored reply (e.g. when its idempotency window has passed).
    DeleteReply {
        /// The request.
        request_id: RequestId,
    },
    /// Moves a pending message to the dead-letter table. Skipped with
    /// [`SkipReason::MessageNotFound`] if no such message is pending. To give
    /// callers a failure reply, follow it with an `AckMessage` in the same batch.
    DeadLetterMessage {
        /// The pending message.
        request_id: RequestId,
        /// Why it is given up on.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// Moves a dead letter back to the mailbox with `attempts` reset to 0.
    /// Skipped with [`SkipReason::DeadLetterNotFound`] if there is no such
    /// dead letter. (A failure reply stored with the dead letter is not
    /// touched: add a `DeleteReply` to the batch to let the retry answer.)
    ReplayDeadLetter {
        /// The dead letter.
        request_id: RequestId,
        /// When the message is next due.
        next_attempt_at: Timestamp,
    },
    /// Purges a dead letter.
    DeleteDeadLetter {
        /// The dead letter.
        request_id: RequestId,
    },
    /// Sets a durable timer (overwrites one with the same key).
    PutTimer {
        /// Shard, due time and id; the shard must be the batch's shard.
        key: TimerKey,
        /// What it carries (opaque bytes).
        payload: Bytes,
    },
    /// Removes a timer (after it fired, or to cancel it).
    DeleteTimer {
        /// The timer.
        key: TimerKey,
    },
    /// Resolves deferred `name` of `entity`. First-wins: if it is already
    /// resolved the first value stays and the op is reported as
    /// [`SkipReason::DeferredResolved`].
    ResolveDeferred {
        /// The entity owning the deferred.
        entity: EntityKey,
        /// The deferred's name.
        name: String,
        /// The value it resolves with.
        value: DeferredValue,
    },
    /// Removes a deferred (resolved or not).
    DeleteDeferred {
        /// The entity owning the deferred.
        entity: EntityKey,
        /// The deferred's name.
        name: String,
    },
}

/// The position of an [`Op`] in its [`WriteBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpIndex(u32);

impl OpIndex {
    /// The op at `index`.
    pub const fn new(index: u32) -> Self {
        OpIndex(index)
    }

    /// The position.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for OpIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why an op of a committed batch had no effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// `AppendJournal`: the step was already journaled.
    JournalStepExists,
    /// `EnqueueMessage`: a message with this request id is already pending.
    MessagePending,
    /// `EnqueueMessage`: this request already has a stored reply.
    MessageReplied,
    /// `EnqueueMessage`: this request is in the dead-letter table.
    MessageDeadLettered,
    /// `RescheduleMessage`, `DeadLetterMessage`: no such pending message.
    MessageNotFound,
    /// `AckMessage`: a reply was already stored and was kept.
    ReplyExists,
    /// `ReplayDeadLetter`: no such dead letter.
    DeadLetterNotFound,
    /// `ResolveDeferred`: the deferred was already resolved; the first value
    /// was kept.
    DeferredResolved,
}

/// An op that was skipped, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Skipped {
    /// Which op.
    pub op: OpIndex,
    /// Why.
    pub reason: SkipReason,
}

/// What a successful commit did: every op applied except the skipped ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    skipped: Vec<Skipped>,
}

/// An outcome from its skipped ops, e.g. as a replicated state machine
/// reports it back to the proposer.
impl FromIterator<(OpIndex, SkipReason)> for CommitOutcome {
    fn from_iter<I: IntoIterator<Item = (OpIndex, SkipReason)>>(skips: I) -> Self {
        let mut skipped: Vec<Skipped> = skips
            .into_iter()
            .map(|(op, reason)| Skipped { op, reason })
            .collect();
        skipped.sort_by_key(|skipped| skipped.op);
        CommitOutcome { skipped }
    }
}

impl CommitOutcome {
    pub(crate) fn skip(&mut self, op: usize, reason: SkipReason) {
        let op = u32::try_from(op).expect("a validated batch has at most BATCH_OPS_MAX ops");
        self.skipped.push(Skipped {
            op: OpIndex(op),
            reason,
        });
    }

    /// Whether every op had its effect.
    pub fn applied_all(&self) -> bool {
        self.skipped.is_empty()
    }

    /// The skipped ops, in op order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Why op `op` was skipped, or `None` if it applied.
    pub fn skip_reason(&self, op: OpIndex) -> Option<SkipReason> {
        self.skipped
            .iter()
            .find(|skipped| skipped.op == op)
            .map(|skipped| skipped.reason)
    }
}

/// An atomic, fenced group of writes to one shard.
///
/// Build it with the op methods (each returns the op's [`OpIndex`], to look
/// up in the [`CommitOutcome`]), then hand it to
/// [`Storage::commit`](crate::Storage::commit). It applies all or nothing;
/// if its epoch is older than the shard's, it is rejected with
/// [`Error::StaleEpoch`]; if newer, it raises the shard's epoch.
///
/// ```
/// use bytes::Bytes;
/// use shoal_storage::{EntityKey, Epoch, RequestId, ShardId, StepIndex, WriteBatch};
///
/// let shard = ShardId::new(1);
/// let counter = EntityKey::new(shard, "Counter", "c1")?;
/// let request = RequestId::new(42);
///
/// let mut batch = WriteBatch::new(shard, Epoch::ZERO);
/// batch.put_state(&counter, Bytes::from_static(b"\x05"));
/// batch.append_journal(&counter, request, StepIndex::new(0), Bytes::from_static(b"done"));
/// let ack = batch.ack(request, Bytes::from_static(b"ok"));
///
/// // The encoding is stable: what a replicated log would carry.
/// let decoded = WriteBatch::decode(batch.encode().as_slice())?;
/// assert_eq!(decoded, batch);
/// assert_eq!(ack.get(), 2);
/// # Ok::<(), shoal_storage::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBatch {
    shard: ShardId,
    epoch: Epoch,
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch for `shard`, written at `epoch`. Committed empty, it
    /// only raises the shard's epoch (a fence).
    pub fn new(shard: ShardId, epoch: Epoch) -> Self {
        WriteBatch {
            shard,
            epoch,
            ops: Vec::new(),
        }
    }

    /// The shard every op writes to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The epoch the batch is written at.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The ops, in apply order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// How many ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends `op`. Limits and shard membership are checked at commit (or
    /// by [`WriteBatch::validate`]), not here.
    pub fn push(&mut self, op: Op) -> OpIndex {
        let index = OpIndex(u32::try_from(self.ops.len()).unwrap_or(u32::MAX));
        self.ops.push(op);
        index
    }

    /// Appends [`Op::PutState`].
    pub fn put_state(&mut self, entity: &EntityKey, state: impl Into<Bytes>) -> OpIndex {
        self.push(Op::PutState {
            entity: entity.clone(),
            state: state.into(),
        })
    }

    /// Appends [`Op::DeleteState`].
    pub fn delete_state(&mut self, entity: &EntityKey) -> OpIndex {
        self.push(Op::DeleteState {
            entity: entity.clone(),
        })
    }

    /// Appends [`Op::AppendJournal`].
    pub fn append_journal(
        &mut self,
        entity: &EntityKey,
        execution: RequestId,
        step: StepIndex,
        entry: impl Into<Bytes>,
    ) -> OpIndex {
        self.push(Op::AppendJournal {
            entity: entity.clone(),
            execution,
            step,
            entry: entry.into(),
        })
    }

    /// Appends [`Op::DeleteJournal`].
    pub fn delete_journal(&mut self, entity: &EntityKey, execution: RequestId) -> OpIndex {
        self.push(Op::DeleteJournal {
            entity: entity.clone(),
            execution,
        })
    }

    /// Appends [`Op::EnqueueMessage`].
    pub fn enqueue(&mut self, message: Message) -> OpIndex {
        self.push(Op::EnqueueMessage { message })
    }

    /// Appends [`Op::RescheduleMessage`].
    pub fn reschedule(&mut self, request_id: RequestId, next_attempt_at: Timestamp) -> OpIndex {
        self.push(Op::RescheduleMessage {
            request_id,
            next_attempt_at,
        })
    }

    /// Appends [`Op::AckMessage`]: remove the pending message, store the reply.
    pub fn ack(&mut self, request_id: RequestId, reply: impl Into<Bytes>) -> OpIndex {
        self.push(Op::AckMessage {
            request_id,
            reply: reply.into(),
        })
    }

    /// Appends [`Op::DeleteReply`].
    pub fn delete_reply(&mut self, request_id: RequestId) -> OpIndex {
        self.push(Op::DeleteReply { request_id })
    }

    /// Appends [`Op::DeadLetterMessage`].
    pub fn dead_letter(
        &mut self,
        request_id: RequestId,
        reason: impl Into<String>,
        at: Timestamp,
    ) -> OpIndex {
        self.push(Op::DeadLetterMessage {
            request_id,
            reason: reason.into(),
            at,
        })
    }

    /// Appends [`Op::ReplayDeadLetter`].
    pub fn replay_dead_letter(
        &mut self,
        request_id: RequestId,
        next_attempt_at: Timestamp,
    ) -> OpIndex {
        self.push(Op::ReplayDeadLetter {
            request_id,
            next_attempt_at,
        })
    }

    /// Appends [`Op::DeleteDeadLetter`].
    pub fn delete_dead_letter(&mut self, request_id: RequestId) -> OpIndex {
        self.push(Op::DeleteDeadLetter { request_id })
    }

    /// Appends [`Op::PutTimer`].
    pub fn put_timer(&mut self, key: TimerKey, payload: impl Into<Bytes>) -> OpIndex {
        self.push(Op::PutTimer {
            key,
            payload: payload.into(),
        })
    }

    /// Appends [`Op::DeleteTimer`].
    pub fn delete_timer(&mut self, key: TimerKey) -> OpIndex {
        self.push(Op::DeleteTimer { key })
    }

    /// Appends [`Op::ResolveDeferred`].
    pub fn resolve_deferred(
        &mut self,
        entity: &EntityKey,
        name: impl Into<String>,
        value: DeferredValue,
    ) -> OpIndex {
        self.push(Op::ResolveDeferred {
            entity: entity.clone(),
            name: name.into(),
            value,
        })
    }

    /// Appends [`Op::DeleteDeferred`].
    pub fn delete_deferred(&mut self, entity: &EntityKey, name: impl Into<String>) -> OpIndex {
        self.push(Op::DeleteDeferred {
            entity: entity.clone(),
            name: name.into(),
        })
    }

    /// Checks the batch against the rules every backend enforces before
    /// applying anything: at most [`limits::BATCH_OPS_MAX`] ops, every op on
    /// the batch's shard, names and values within [`limits`], payloads adding
    /// up to at most [`limits::BATCH_BYTES_MAX`].
    pub fn validate(&self) -> Result<()> {
        if self.ops.len() > limits::BATCH_OPS_MAX {
            return Err(Error::invalid(format!(
                "batch has {} ops, the limit is {}",
                self.ops.len(),
                limits::BATCH_OPS_MAX
            )));
        }
        let mut total_bytes = 0usize;
        for (index, op) in self.ops.iter().enumerate() {
            self.validate_op(op)
                .map_err(|reason| Error::invalid(format!("op {index}: {reason}")))?;
            total_bytes = total_bytes.saturating_add(op_payload_bytes(op));
        }
        if total_bytes > limits::BATCH_BYTES_MAX {
            return Err(Error::invalid(format!(
                "batch payloads add up to {total_bytes} bytes, the limit is {}",
                limits::BATCH_BYTES_MAX
            )));
        }
        Ok(())
    }

    fn validate_op(&self, op: &Op) -> std::result::Result<(), String> {
        match op {
            Op::PutState { entity, state } => {
                self.check_shard(entity.shard())?;
                check_value("state", state)
            }
            Op::DeleteState { entity } | Op::DeleteJournal { entity, .. } => {
                self.check_shard(entity.shard())
            }
            Op::AppendJournal { entity, entry, .. } => {
                self.check_shard(entity.shard())?;
                check_value("journal entry", entry)
            }
            Op::EnqueueMessage { message } => {
                self.check_shard(message.shard())?;
                check_name(
                    "handler name",
                    &message.handler,
                    limits::HANDLER_NAME_BYTES_MAX,
                )?;
                check_value("message payload", &message.payload)
            }
            Op::AckMessage { reply, .. } => check_value("reply", reply),
            Op::DeadLetterMessage { reason, .. } => check_reason(reason),
            Op::RescheduleMessage { .. }
            | Op::DeleteReply { .. }
            | Op::ReplayDeadLetter { .. }
            | Op::DeleteDeadLetter { .. } => Ok(()),
            Op::PutTimer { key, payload } => {
                self.check_shard(key.shard)?;
                check_value("timer payload", payload)
            }
            Op::DeleteTimer { key } => self.check_shard(key.shard),
            Op::ResolveDeferred {
                entity,
                name,
                value,
            } => {
                self.check_shard(entity.shard())?;
                check_name("deferred name", name, limits::DEFERRED_NAME_BYTES_MAX)?;
                match value {
                    DeferredValue::Success(bytes) => check_value("deferred value", bytes),
                    DeferredValue::Failure(message) => check_reason(message),
                }
            }
            Op::DeleteDeferred { entity, name } => {
                self.check_shard(entity.shard())?;
                check_name("deferred name", name, limits::DEFERRED_NAME_BYTES_MAX)
            }
        }
    }

    fn check_shard(&self, shard: ShardId) -> std::result::Result<(), String> {
        if shard == self.shard {
            Ok(())
        } else {
            Err(format!(
                "writes to shard {shard} but the batch is for shard {}",
                self.shard
            ))
        }
    }

    /// Sum of the op payload sizes: what group commit counts against its
    /// byte limit (an estimate of the bytes written, not the encoded size).
    pub fn payload_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(op_payload_bytes)
            .fold(0usize, usize::saturating_add)
    }

    /// The batch's stable protobuf encoding (`shoal.storage.v1.WriteBatch`).
    pub fn encode(&self) -> Vec<u8> {
        pb::WriteBatch {
            shard: self.shard.get(),
            epoch: self.epoch.get(),
            ops: self.ops.iter().map(proto::op_to_pb).collect(),
        }
        .encode_to_vec()
    }

    /// Decodes and validates a batch from its encoding.
    ///
    /// Any input — truncated, garbage, too long, or a batch breaking
    /// [`WriteBatch::validate`] — gives [`Error::Decode`], never a panic.
    /// Given a [`Bytes`], payloads are zero-copy slices of it.
    pub fn decode(mut bytes: impl Buf) -> Result<Self> {
        let decode_error = |reason: String| Error::Decode {
            what: "write batch",
            reason,
        };
        if bytes.remaining() > limits::BATCH_BYTES_MAX {
            return Err(decode_error(format!(
                "{} bytes, the limit is {}",
                bytes.remaining(),
                limits::BATCH_BYTES_MAX
            )));
        }
        let encoded =
            pb::WriteBatch::decode(&mut bytes).map_err(|e| decode_error(e.to_string()))?;
        if encoded.ops.len() > limits::BATCH_OPS_MAX {
            return Err(decode_error(format!(
                "{} ops, the limit is {}",
                encoded.ops.len(),
                limits::BATCH_OPS_MAX
            )));
        }
        let ops = encoded
            .ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| {
                proto::op_from_pb(op)
                    .map_err(|reason| decode_error(format!("op {index}: {reason}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = WriteBatch {
            shard: ShardId::new(encoded.shard),
            epoch: Epoch::new(encoded.epoch),
            ops,
        };
        batch
            .validate()
            .map_err(|error| decode_error(error.to_string()))?;
        Ok(batch)
    }
}

fn check_value(what: &str, value: &Bytes) -> std::result::Result<(), String> {
    if value.len() > limits::VALUE_BYTES_MAX {
        return Err(format!(
            "{what} is {} bytes, the limit is {}",
            value.len(),
            limits::VALUE_BYTES_MAX
        ));
    }
    Ok(())
}

fn check_name(what: &str, name: &str, max: usize) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > max {
        return Err(format!(
            "{what} is {} bytes, the limit is {max}",
            name.len()
        ));
    }
    Ok(())
}

fn check_reason(reason: &str) -> std::result::Result<(), String> {
    if reason.len() > limits::REASON_BYTES_MAX {
        return Err(format!(
            "reason is {} bytes, the limit is {}",
            reason.len(),
            limits::REASON_BYTES_MAX
        ));
    }
    Ok(())
}

fn op_payload_bytes(op: &Op) -> usize {
    const KEY_ESTIMATE: usize = 32;
    KEY_ESTIMATE
        + match op {
            Op::PutState { state, .. } => state.len(),
            Op::AppendJournal { entry, .. } => entry.len(),
            Op::EnqueueMessage { message } => message.payload.len() + message.handler.len(),
            Op::AckMessage { reply, .. } => reply.len(),
            Op::DeadLetterMessage { reason, .. } => reason.len(),
            Op::PutTimer { payload, .. } => payload.len(),
            Op::ResolveDeferred { value, .. } => match value {
                DeferredValue::Success(bytes) => bytes.len(),
                DeferredValue::Failure(message) => message.len(),
            },
            Op::DeleteState { .. }
            | Op::DeleteJournal { .. }
            | Op::RescheduleMessage { .. }
            | Op::DeleteReply { .. }
            | Op::ReplayDeadLetter { .. }
            | Op::DeleteDeadLetter { .. }
            | Op::DeleteTimer { .. }
            | Op::DeleteDeferred { .. } => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TimerId;

    /// A batch with one op of every kind.
    fn every_op_batch() -> WriteBatch {
        let shard = ShardId::new(9);
        let entity = EntityKey::new(shard, "Order", "o-1").expect("valid key");
        let request = RequestId::new(0xabcdef);
        let timer = TimerKey::new(shard, Timestamp::from_unix_ms(500), TimerId::new(3));
        let mut batch = WriteBatch::new(shard, Epoch::new(4));
        batch.put_state(&entity, Bytes::from_static(b"state"));
        batch.delete_state(&entity);
        batch.append_journal(
            &entity,
            request,
            StepIndex::new(2),
            Bytes::from_static(b"e"),
        );
        batch.delete_journal(&entity, request);
        batch.enqueue(Message::new(
            request,
            entity.clone(),
            "pay",
            Bytes::from_static(b"args"),
            Timestamp::from_unix_ms(10),
        ));
        batch.reschedule(request, Timestamp::from_unix_ms(20));
        batch.ack(request, Bytes::from_static(b"reply"));
        batch.delete_reply(request);
        batch.dead_letter(request, "gave up", Timestamp::from_unix_ms(30));
        batch.replay_dead_letter(request, Timestamp::from_unix_ms(40));
        batch.delete_dead_letter(request);
        batch.put_timer(timer, Bytes::from_static(b"wake"));
        batch.delete_timer(timer);
        batch.resolve_deferred(&entity, "approval", DeferredValue::Failure("no".into()));
        batch.resolve_deferred(
            &entity,
            "signal",
            DeferredValue::Success(Bytes::from_static(b"yes")),
        );
        batch.delete_deferred(&entity, "approval");
        batch
    }

    /// Deterministic xorshift64*: every random input comes from a printed seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    #[test]
    fn every_op_round_trips_through_the_encoding() {
        let batch = every_op_batch();
        assert!(batch.validate().is_ok());
        let encoded = batch.encode();
        assert_eq!(
            WriteBatch::decode(encoded.as_slice()).expect("decodes"),
            batch
        );
        assert_eq!(
            WriteBatch::decode(Bytes::from(encoded)).expect("decodes from Bytes"),
            batch
        );
    }

    /// Pins the wire format: a replicated log written by one release must
    /// decode in the next. If this fails, the encoding changed incompatibly.
    #[test]
    fn encoding_is_stable() {
        let shard = ShardId::new(1);
        let entity = EntityKey::new(shard, "T", "e").expect("valid key");
        let mut batch = WriteBatch::new(shard, Epoch::new(2));
        batch.put_state(&entity, Bytes::from_static(b"s"));
        batch.ack(RequestId::new(3), Bytes::from_static(b"r"));
        let hex: String = batch
            .encode()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(hex, GOLDEN_BATCH_HEX);
        let golden: Vec<u8> = (0..GOLDEN_BATCH_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&GOLDEN_BATCH_HEX[i..i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(
            WriteBatch::decode(golden.as_slice()).expect("decodes"),
            batch
        );
    }

    const GOLDEN_BATCH_HEX: &str = "080110021a0f0a0d0a0808011201541a01651201731a173a150a1000000000000000000000000000000003120172";

    #[test]
    fn empty_input_is_an_empty_batch_of_shard_zero() {
        // Protobuf defaults: an empty message is a valid, empty batch.
        let batch = WriteBatch::decode(&[][..]).expect("decodes");
        assert_eq!(batch, WriteBatch::new(ShardId::new(0), Epoch::ZERO));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for garbage in [
            &[0xff_u8, 0xff, 0xff, 0xff][..],
            b"not a batch at all",
            &[0x1a, 0x05, 0x0a],
        ] {
            let error = WriteBatch::decode(garbage).expect_err("garbage must not decode");
            assert!(matches!(error, Error::Decode { .. }), "{error:?}");
        }
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let encoded = every_op_batch().encode();
        for cut in 0..encoded.len() {
            // A prefix may happen to be a valid shorter batch; it must never panic.
            let _ = WriteBatch::decode(&encoded[..cut]);
        }
        assert!(WriteBatch::decode(&encoded[..encoded.len() - 1]).is_err());
    }

    #[test]
    fn random_bytes_and_mutations_never_panic() {
        let seed = 0x5eed_0001_u64;
        eprintln!("seed {seed:#x}");
        let mut rng = Rng(seed);
        let valid = every_op_batch().encode();
        for _ in 0..20_000 {
            let len = rng.below(256);
            let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = WriteBatch::decode(random.as_slice());

            let mut mutated = valid.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(mutated.len());
                mutated[at] = rng.next() as u8;
            }
            if let Ok(batch) = WriteBatch::decode(mutated.as_slice()) {
                // Whatever decodes is valid by construction.
                assert!(batch.validate().is_ok());
            }
        }
    }

    #[test]
    fn an_unknown_op_kind_is_rejected_not_skipped() {
        let unknown = pb::WriteBatch {
            shard: 1,
            epoch: 0,
            ops: vec![pb::Op { op: None }],
        }
        .encode_to_vec();
        let error = WriteBatch::decode(unknown.as_slice()).expect_err("must be rejected");
        assert!(error.to_string().contains("unknown kind"), "{error}");
    }

    #[test]
    fn validation_rejects_foreign_shards_and_oversized_input() {
        let shard = ShardId::new(1);
        let other = EntityKey::new(ShardId::new(2), "T", "x").expect("valid key");
        let mut batch = WriteBatch::new(shard, Epoch::ZERO);
        batch.put_state(&other, Bytes::new());
        let error = batch.validate().expect_err("foreign shard");
        assert!(error.to_string().contains("shard 2"), "{error}");
        // The same rule applies to decoded batches.
        assert!(WriteBatch::decode(batch.encode().as_slice()).is_err());

        let mine = EntityKey::new(shard, "T", "x").expect("valid key");
        let mut batch = WriteBatch::new(shard, Epoch::ZERO);
        batch.put_state(&mine, vec![0u8; limits::VALUE_BYTES_MAX + 1]);
        assert!(batch.validate().is_err());

        let mut batch = WriteBatch::new(shard, Epoch::ZERO);
        batch.resolve_deferred(&mine, "", DeferredValue::Success(Bytes::new()));
        assert!(batch.validate().is_err(), "empty deferred name");

        let mut batch = WriteBatch::new(shard, Epoch::ZERO);
        batch.put_timer(
            TimerKey::new(ShardId::new(3), Timestamp::ZERO, TimerId::new(1)),
            Bytes::new(),
        );
        assert!(batch.validate().is_err(), "timer on another shard");
    }

    #[test]
    fn outcome_reports_skips_by_index() {
        let mut outcome = CommitOutcome::default();
        assert!(outcome.applied_all());
        outcome.skip(3, SkipReason::DeferredResolved);
        assert!(!outcome.applied_all());
        assert_eq!(
            outcome.skip_reason(OpIndex::new(3)),
            Some(SkipReason::DeferredResolved)
        );
        assert_eq!(outcome.skip_reason(OpIndex::new(2)), None);
    }
}
