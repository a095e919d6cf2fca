//! Durable workflows: execution records, the step journal, replay.
//!
//! An execution is identified by a [`RequestId`] derived from its
//! idempotency key. Before its body runs, the execution is recorded as a
//! pending message in its entity's shard; when the body returns, its result
//! is stored as the reply and the pending record and journal are removed, in
//! one batch. A pending execution left by a crash is found on the next start
//! and resumed.
//!
//! Each step (an activity of the workflow's own entity, or a call to another
//! entity) is journaled under (entity, execution, step index) before the
//! workflow goes on:
//! - an own activity's state change and its journal entry commit in one
//!   batch, inside the entity's actor;
//! - a call to another entity carries a request id derived from (execution,
//!   step), so the callee runs it at most once even if the journal entry is
//!   lost to a crash; then the result is journaled.
//!
//! Replay: a resumed body asks for its steps in order; a journaled step
//! answers from the journal without running. A step that differs from the
//! journal (another handler or target) is a divergence: the execution stops
//! and stays pending, and the caller gets [`EntityError::JournalDivergence`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_storage::{DeferredValue, EntityKey, JournalEntry, RequestId, StepIndex, Timestamp};

use super::client::{KeySource, request_id};
use super::codec::{decode, encode};
use super::error::EntityError;
use super::runtime::{Caller, EntityType, JournalSlot, now};
use super::traits::{Activity, Callable, Entity, Payload};

/// One journaled step: what was called and what it answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JournalRecord {
    /// The handler called.
    pub(crate) handler: String,
    /// `""` for the workflow's own entity, else `Type/id`.
    pub(crate) target: String,
    /// The encoded answer.
    pub(crate) reply: Bytes,
}

impl JournalRecord {
    pub(crate) fn encode(&self) -> Result<Bytes, EntityError> {
        encode(self, "journal entry")
    }
}

/// What a workflow body sees: its identity, and durable steps.
pub struct WorkflowContext<E: Entity> {
    ty: Arc<EntityType<E>>,
    key: EntityKey,
    execution: RequestId,
    /// Journaled steps, by step index.
    journal: Vec<Option<JournalRecord>>,
    next_step: u32,
    /// Set when a step failed for a reason that must not become the
    /// execution's result (storage, shutdown, divergence): the execution
    /// stays pending and resumes later.
    interrupted: Option<EntityError>,
}

impl<E: Entity> WorkflowContext<E> {
    pub(crate) fn new(
        ty: Arc<EntityType<E>>,
        key: EntityKey,
        execution: RequestId,
        entries: Vec<JournalEntry>,
    ) -> Result<Self, EntityError> {
        let mut journal = Vec::new();
        for entry in entries {
            let index = entry.step.get() as usize;
            if journal.len() <= index {
                journal.resize(index + 1, None);
            }
            journal[index] = Some(decode::<JournalRecord>(&entry.entry, "journal entry")?);
        }
        Ok(WorkflowContext {
            ty,
            key,
            execution,
            journal,
            next_step: 0,
            interrupted: None,
        })
    }

    /// The id of the entity the workflow runs on.
    pub fn entity_id(&self) -> &str {
        self.key.entity_id()
    }

    /// The value the entity type was registered with.
    pub fn entity(&self) -> &E {
        self.ty.entity()
    }

    /// This execution's id (derived from its idempotency key).
    pub fn execution_id(&self) -> RequestId {
        self.execution
    }

    /// Whether the next step will be answered from the journal.
    pub fn is_replaying(&self) -> bool {
        self.journal
            .get(self.next_step as usize)
            .is_some_and(Option::is_some)
    }

    pub(crate) fn take_interruption(&mut self) -> Option<EntityError> {
        self.interrupted.take()
    }

    /// Runs an activity of this workflow's own entity as a journaled step:
    /// the activity's state change and the journal entry commit together;
    /// on replay the journaled result is returned and the activity does not
    /// run. Private activities may be called.
    pub async fn activity<H: Activity<E>>(
        &mut self,
        handler: H,
        params: H::Params,
    ) -> Result<Result<H::Output, H::Error>, EntityError> {
        let _ = handler;
        let step = self.begin_step(H::NAME, "")?;
        let reply = match self.journaled(step) {
            Some(reply) => reply,
            None => {
                let params = encode(&params, "parameters")?;
                let slot = JournalSlot {
                    execution: self.execution,
                    step,
                };
                let result = self
                    .ty
                    .invoke(&self.key, H::NAME, params, None, Caller::Workflow(slot))
                    .await;
                self.check(result)?
            }
        };
        decode(&reply, "journaled reply")
    }

    /// Calls a public handler of another entity as a journaled step. The
    /// callee receives a request id derived from this execution and step,
    /// so an activity or workflow there runs at most once even across
    /// crashes; on replay the journaled answer is returned.
    pub async fn call<F, H, K>(
        &mut self,
        entity_id: &str,
        handler: H,
        params: H::Params,
    ) -> Result<H::Output, EntityError>
    where
        F: Entity,
        H: Callable<F, K>,
    {
        let _ = handler;
        let target = format!("{}/{entity_id}", F::NAME);
        let step = self.begin_step(H::NAME, &target)?;
        if let Some(reply) = self.journaled(step) {
            return decode(&reply, "journaled reply");
        }
        let result = self
            .call_and_journal::<F>(
                entity_id,
                H::NAME,
                &target,
                step,
                encode(&params, "parameters")?,
            )
            .await;
        let reply = self.check(result)?;
        decode(&reply, "reply")
    }

    async fn call_and_journal<F: Entity>(
        &self,
        entity_id: &str,
        handler: &str,
        target: &str,
        step: StepIndex,
        params: Bytes,
    ) -> Result<Bytes, EntityError> {
        let callee = self.ty.runtime().entity_type::<F>()?;
        let callee_key = callee.key(entity_id)?;
        let request = request_id(
            &callee_key,
            handler,
            KeySource::Key(&format!("{:032x}/{}", self.execution.get(), step.get())),
        );
        let reply = callee
            .invoke(&callee_key, handler, params, Some(request), Caller::Client)
            .await?;
        self.journal_step(step, handler, target, reply.clone())
            .await?;
        Ok(reply)
    }

    /// Sleeps durably: the deadline is fixed (and journaled) when the step
    /// first runs, so a restart neither resets nor loses it — a resumed
    /// execution sleeps only what is left, or not at all once the deadline
    /// has passed. `name` identifies the step for replay checks.
    pub async fn sleep(&mut self, name: &str, duration: Duration) -> Result<(), EntityError> {
        let step = self.begin_step(&format!("sleep {name}"), "")?;
        let deadline = match self.journaled(step) {
            Some(reply) => Timestamp::from_unix_ms(decode::<u64>(&reply, "journaled deadline")?),
            None => {
                let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                let deadline = now().saturating_add_ms(duration_ms);
                let result = self
                    .journal_step(
                        step,
                        &format!("sleep {name}"),
                        "",
                        encode(&deadline.as_unix_ms(), "deadline")?,
                    )
                    .await;
                self.check(result.map(|()| Bytes::new()))?;
                deadline
            }
        };
        let left = deadline.as_unix_ms().saturating_sub(now().as_unix_ms());
        tokio::time::sleep(Duration::from_millis(left)).await;
        Ok(())
    }

    /// Waits until deferred `name` of this entity is resolved (by any
    /// client, with [`super::EntityClient::resolve_deferred`]) and returns
    /// its value, or the failure it was resolved with. The wait survives
    /// restarts: a resumed execution finds the stored resolution.
    pub async fn deferred<T: Payload>(
        &mut self,
        name: &str,
    ) -> Result<Result<T, String>, EntityError> {
        let label = format!("deferred {name}");
        let step = self.begin_step(&label, "")?;
        let reply = match self.journaled(step) {
            Some(reply) => reply,
            None => {
                let result = self.wait_deferred(name, step, &label).await;
                self.check(result)?
            }
        };
        match decode::<Result<Bytes, String>>(&reply, "journaled deferred")? {
            Ok(bytes) => Ok(Ok(decode(&bytes, "deferred value")?)),
            Err(failure) => Ok(Err(failure)),
        }
    }

    async fn wait_deferred(
        &self,
        name: &str,
        step: StepIndex,
        label: &str,
    ) -> Result<Bytes, EntityError> {
        let storage = &self.ty.runtime().storage;
        let waiter = self
            .ty
            .deferred_waiters()
            .waiter((self.key.entity_id().to_owned(), name.to_owned()));
        let value = waiter
            .wait_for(|| storage.read_deferred(&self.key, name))
            .await?;
        drop(waiter);
        let reply = match value {
            DeferredValue::Success(bytes) => encode(&Ok::<Bytes, String>(bytes), "deferred")?,
            DeferredValue::Failure(failure) => encode(&Err::<Bytes, String>(failure), "deferred")?,
            other => {
                return Err(EntityError::Decode {
                    what: "deferred value".into(),
                    reason: format!("a kind of resolution this version does not know: {other:?}"),
                });
            }
        };
        self.journal_step(step, label, "", reply.clone()).await?;
        Ok(reply)
    }

    /// Journals a step the workflow task itself performed.
    async fn journal_step(
        &self,
        step: StepIndex,
        handler: &str,
        target: &str,
        reply: Bytes,
    ) -> Result<(), EntityError> {
        let record = JournalRecord {
            handler: handler.to_owned(),
            target: target.to_owned(),
            reply,
        };
        let writes = &self.ty.runtime().writes;
        let mut batch = writes.batch(self.key.shard())?;
        batch.append_journal(&self.key, self.execution, step, record.encode()?);
        writes.commit(batch).await?;
        Ok(())
    }

    /// Claims the next step index and checks it against the journal.
    fn begin_step(&mut self, handler: &str, target: &str) -> Result<StepIndex, EntityError> {
        if let Some(e) = &self.interrupted {
            // An earlier step was interrupted: the execution will resume
            // later, so nothing more may run now.
            return Err(e.clone());
        }
        let step = StepIndex::new(self.next_step);
        self.next_step += 1;
        if let Some(Some(record)) = self.journal.get(step.get() as usize)
            && (record.handler != handler || record.target != target)
        {
            let describe = |h: &str, t: &str| {
                if t.is_empty() {
                    h.to_owned()
                } else {
                    format!("{t}.{h}")
                }
            };
            let error = EntityError::JournalDivergence {
                execution: format!("{:032x}", self.execution.get()),
                step: step.get(),
                journaled: describe(&record.handler, &record.target),
                requested: describe(handler, target),
            };
            self.interrupted = Some(error.clone());
            return Err(error);
        }
        Ok(step)
    }

    fn journaled(&self, step: StepIndex) -> Option<Bytes> {
        self.journal
            .get(step.get() as usize)
            .and_then(Option::as_ref)
            .map(|record| record.reply.clone())
    }

    /// Passes a step's result on; errors that must not become the
    /// execution's result also interrupt it.
    fn check(&mut self, result: Result<Bytes, EntityError>) -> Result<Bytes, EntityError> {
        result.inspect_err(|e| {
            if e.interrupts_workflow() && self.interrupted.is_none() {
                self.interrupted = Some(e.clone());
            }
        })
    }
}

impl<E: Entity> std::fmt::Debug for WorkflowContext<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowContext")
            .field("entity", &self.key)
            .field("execution", &format_args!("{:032x}", self.execution.get()))
            .field("next_step", &self.next_step)
            .field("journaled_steps", &self.journal.len())
            .finish()
    }
}
