//! The entity runtime of one entity type: activation, dispatch, persistence
//! and passivation, on top of the actor runtime.
//!
//! Each active entity is one actor ([`EntityActor`]), so its handlers run one
//! at a time and its state needs no lock. [`EntityType`] keeps the map of
//! active entities (striped by the entity's hash), activates an entity on its
//! first call, and re-activates it when a call races a passivation.
//!
//! Invariants:
//! - an activity's state change and its reply are in one `WriteBatch`, and
//!   the caller hears back only after that batch is durable;
//! - a handler that panics, or an activity that returns `Err`, leaves the
//!   entity at its last committed state — nothing half-done is persisted
//!   or kept in memory;
//! - a call is retried on a fresh activation only when it is known not to
//!   have run (the actor stopped before handling it).

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use shoal_storage::{
    DeferredValue, EntityKey, Epoch, Message as StoredMessage, RequestId, ShardId, SkipReason,
    StepIndex, Storage, Timestamp, WriteBatch,
};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::client::{KeySource, PersistedSend, request_id};
use super::codec::{decode, encode};
use super::delivery::Deliverer;
use super::error::EntityError;
use super::handlers::{HandlerKind, Handlers, Outcome, Registered};
use super::traits::{Entity, Visibility};
use super::workflow::{JournalRecord, WorkflowContext};
pub(crate) use super::writes::WritePath;
use crate::Config;
use crate::actor::{Actor, ActorSystem, Addr, Context, Handler, Message, SendError};
use crate::cluster::serve::Op;
use crate::shard::{self, ShardGroup};
use crate::sync::{Waiters, lock};

/// Stripes of the active-entity map: calls to different entities rarely
/// contend on one lock.
const STRIPES: usize = 64;

/// How long a forwarded call may run at its owner (a workflow can run for
/// long; a dead owner is noticed by the transport well before).
const FORWARDED_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one wait for a persisted message's outcome blocks at the
/// shard's owner before the caller asks again (perhaps another owner).
const OUTCOME_WAIT: Duration = Duration::from_secs(2);

/// How often a call follows an entity that stops under it (passivation,
/// shutdown) before giving up with [`EntityError::Unavailable`].
const ACTIVATION_ATTEMPTS_MAX: usize = 8;

/// What every entity type on a node shares.
pub(crate) struct Runtime {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) system: ActorSystem,
    pub(crate) config: Config,
    pub(crate) shutting_down: AtomicBool,
    /// Every registered entity type (shared with the deliverer).
    pub(crate) types: Arc<TypeRegistry>,
    /// Delivers persisted messages (and resumes pending workflows).
    pub(crate) deliverer: Arc<Deliverer>,
    /// Where every write goes.
    pub(crate) writes: Arc<WritePath>,
}

impl Runtime {
    /// The registered entity type `F`.
    pub(crate) fn entity_type<F: Entity>(&self) -> Result<Arc<EntityType<F>>, EntityError> {
        self.any_type(F::NAME)
            .and_then(|ty| ty.clone().as_any().downcast::<EntityType<F>>().ok())
            .ok_or_else(|| EntityError::UnknownEntityType(F::NAME.to_owned()))
    }

    /// The registered entity type called `name`.
    pub(crate) fn any_type(&self, name: &str) -> Option<&Arc<dyn AnyEntityType>> {
        self.types.get().and_then(|types| types.get(name))
    }

    /// Every registered entity type.
    pub(crate) fn all_types(
        &self,
    ) -> impl Iterator<Item = (&'static str, &Arc<dyn AnyEntityType>)> {
        self.types
            .get()
            .into_iter()
            .flatten()
            .map(|(name, ty)| (*name, ty))
    }
}

/// Every registered entity type, by name: set once at start, before any
/// call can run.
pub(crate) type TypeRegistry = OnceLock<HashMap<&'static str, Arc<dyn AnyEntityType>>>;

/// A running workflow execution: its shared result, its task, its shard.
type Execution = (
    Shared<BoxFuture<'static, Result<Bytes, EntityError>>>,
    AbortHandle,
    ShardId,
);

/// One registered entity type and its active entities.
pub(crate) struct EntityType<E: Entity> {
    entity: E,
    handlers: Handlers<E>,
    group: ShardGroup,
    runtime: Arc<Runtime>,
    active: Vec<Mutex<HashMap<String, Addr<EntityActor<E>>>>>,
    /// Workflow executions running in this process, by execution id.
    running: Mutex<HashMap<RequestId, Execution>>,
    /// Workflows waiting on deferreds, by (entity id, deferred name).
    deferred_waiters: Waiters<(String, String)>,
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A client (or another entity's workflow): public handlers only.
    Client,
    /// A workflow of the same entity, as a journaled step.
    Workflow(JournalSlot),
}

/// Where a workflow step is journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JournalSlot {
    pub(crate) execution: RequestId,
    pub(crate) step: StepIndex,
}

impl<E: Entity> EntityType<E> {
    pub(crate) fn new(entity: E, handlers: Handlers<E>, runtime: Arc<Runtime>) -> Self {
        let group = entity.shard_group();
        EntityType {
            entity,
            handlers,
            group,
            runtime,
            active: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            running: Mutex::new(HashMap::new()),
            deferred_waiters: Waiters::new(),
        }
    }

    /// Workflows waiting on deferreds, by (entity id, deferred name).
    pub(crate) fn deferred_waiters(&self) -> &Waiters<(String, String)> {
        &self.deferred_waiters
    }

    /// Resolves deferred `name` of `key`: the first resolution wins.
    pub(crate) async fn resolve_deferred(
        self: &Arc<Self>,
        key: &EntityKey,
        name: &str,
        value: DeferredValue,
    ) -> Result<(), EntityError> {
        self.routed(
            key,
            Op::Resolve {
                name: name.to_owned(),
                value,
            },
        )
        .await
        .map(drop)
    }

    /// [`resolve_deferred`](Self::resolve_deferred) on this node.
    async fn resolve_deferred_local(
        &self,
        key: &EntityKey,
        name: &str,
        value: DeferredValue,
    ) -> Result<(), EntityError> {
        if self.runtime.shutting_down.load(Ordering::Acquire) {
            return Err(EntityError::ShuttingDown);
        }
        let mut batch = self.runtime.writes.batch(key.shard())?;
        let op = batch.resolve_deferred(key, name, value);
        let outcome = self.runtime.writes.commit(batch).await?;
        self.deferred_waiters
            .wake(&(key.entity_id().to_owned(), name.to_owned()));
        if outcome.skip_reason(op) == Some(SkipReason::DeferredResolved) {
            return Err(EntityError::DeferredAlreadyResolved {
                entity: label::<E>(key),
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// The value the type was registered with.
    pub(crate) fn entity(&self) -> &E {
        &self.entity
    }

    /// What the node's entity types share.
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The storage key of entity `id`.
    pub(crate) fn key(&self, id: &str) -> Result<EntityKey, EntityError> {
        if id.is_empty() {
            return Err(EntityError::InvalidEntityId(
                "an entity id must not be empty".into(),
            ));
        }
        let shard = shard::shard_of(self.group, id, self.runtime.config.shards_per_group());
        EntityKey::new(shard, E::NAME, id).map_err(|e| EntityError::InvalidEntityId(e.to_string()))
    }

    /// Calls `handler` on entity `key` with encoded `params`; answers with
    /// the encoded output. In a cluster, a client's call runs on the
    /// shard's owner (a workflow's own steps run where the workflow does).
    pub(crate) async fn invoke(
        self: &Arc<Self>,
        key: &EntityKey,
        handler: &str,
        params: Bytes,
        request: Option<RequestId>,
        caller: Caller,
    ) -> Result<Bytes, EntityError> {
        match caller {
            Caller::Client if self.runtime.writes.cluster().is_some() => {
                let op = Op::Call {
                    handler: handler.to_owned(),
                    params,
                    request,
                };
                self.routed(key, op).await.map(Option::unwrap_or_default)
            }
            _ => {
                self.invoke_local(key, handler, params, request, caller)
                    .await
            }
        }
    }

    /// Runs `op` on `key`'s shard owner: here on a single node or when
    /// this node owns the shard, forwarded otherwise (see
    /// [`crate::cluster`]).
    async fn routed(
        self: &Arc<Self>,
        key: &EntityKey,
        op: Op,
    ) -> Result<Option<Bytes>, EntityError> {
        let Some(core) = self.runtime.writes.cluster() else {
            return self.run_local(key, op).await;
        };
        let timeout = match op {
            Op::Call { .. } => FORWARDED_CALL_TIMEOUT,
            _ => core.config.commit_timeout + OUTCOME_WAIT,
        };
        // Built only if the shard's owner is another node.
        let request = OnceLock::new();
        core.route(
            key.shard(),
            || self.idempotent(&op),
            || self.run_local(key, op.clone()),
            |owner| {
                let request = request.get_or_init(|| op.to_request(E::NAME, key.entity_id()));
                core.forward(owner, key.shard(), request, timeout)
            },
        )
        .await
    }

    /// Whether `op` may run twice with one effect, so that a forwarded
    /// attempt with an unknown outcome can be retried: a read-only handler,
    /// a call with a request id (its reply is stored and answered again)
    /// or a handler deriving its own idempotency key, a persisted send
    /// (keyed by its request id), an outcome wait. Resolving a deferred is
    /// not: a second attempt would report the first one's resolution as
    /// someone else's.
    fn idempotent(&self, op: &Op) -> bool {
        match op {
            Op::Call {
                handler,
                params,
                request,
            } => {
                request.is_some()
                    || self.handlers.get(handler).is_some_and(|registered| {
                        registered.kind == HandlerKind::Rpc
                            || registered.kind == HandlerKind::Workflow
                            || registered.custom_key(params).ok().flatten().is_some()
                    })
            }
            Op::Send { .. } | Op::Outcome { .. } => true,
            Op::Resolve { .. } => false,
        }
    }

    /// Runs `op` here, without routing; `Ok(None)`: an outcome not there
    /// yet.
    pub(crate) async fn run_local(
        self: &Arc<Self>,
        key: &EntityKey,
        op: Op,
    ) -> Result<Option<Bytes>, EntityError> {
        match op {
            Op::Call {
                handler,
                params,
                request,
            } => self
                .invoke_local(key, &handler, params, request, Caller::Client)
                .await
                .map(Some),
            Op::Send {
                handler,
                params,
                request,
                at,
            } => {
                self.send_persisted_local(key, &handler, params, request, at)
                    .await?;
                Ok(Some(Bytes::new()))
            }
            Op::Resolve { name, value } => {
                self.resolve_deferred_local(key, &name, value).await?;
                Ok(Some(Bytes::new()))
            }
            Op::Outcome { request, wait } => {
                if !self.runtime.writes.owns(key.shard()) {
                    return Err(EntityError::NotOwner {
                        shard: key.shard().get(),
                    });
                }
                let send = PersistedSend::new(request, key.shard());
                match tokio::time::timeout(wait, self.persisted_outcome_local(&send)).await {
                    Ok(outcome) => outcome.map(Some),
                    Err(_) => Ok(None),
                }
            }
        }
    }

    /// [`invoke`](Self::invoke) on this node.
    async fn invoke_local(
        self: &Arc<Self>,
        key: &EntityKey,
        handler: &str,
        params: Bytes,
        request: Option<RequestId>,
        caller: Caller,
    ) -> Result<Bytes, EntityError> {
        let registered = self.callable(handler, caller)?;
        // A handler's own key, unless the caller gave one or a workflow
        // journal deduplicates the step.
        let custom = match (request, caller) {
            (None, Caller::Client) => registered
                .custom_key(&params)?
                .map(|custom| request_id(key, handler, KeySource::Key(&custom))),
            _ => None,
        };
        let request = request.or(custom);
        if registered.kind == HandlerKind::Workflow {
            let request =
                request.unwrap_or_else(|| request_id(key, handler, KeySource::Params(&params)));
            return self
                .run_workflow(key, registered.clone(), params, request)
                .await;
        }
        let journal = match caller {
            Caller::Workflow(slot) => Some(slot),
            Caller::Client => None,
        };
        for _ in 0..ACTIVATION_ATTEMPTS_MAX {
            let addr = self.activate(key);
            let invoke = Invoke {
                handler: registered.clone(),
                params: params.clone(),
                request,
                journal,
            };
            match addr.send(invoke).await {
                Ok(result) => return result,
                // The actor stopped before handling the call (passivated,
                // or its state could not be loaded): the call did not run,
                // so a fresh activation may take it.
                Err(SendError::MailboxClosed | SendError::NoReply) => {
                    self.forget(key.entity_id(), &addr);
                    if self.runtime.shutting_down.load(Ordering::Acquire) {
                        return Err(EntityError::ShuttingDown);
                    }
                }
                Err(SendError::ActorFailed(failure)) => {
                    return Err(EntityError::HandlerPanicked {
                        handler: handler.to_owned(),
                        message: failure.message().to_owned(),
                    });
                }
                Err(_) => break,
            }
        }
        Err(EntityError::Unavailable(label::<E>(key)))
    }

    /// The handler `handler`, if `caller` may call it.
    fn callable(&self, handler: &str, caller: Caller) -> Result<&Arc<Registered<E>>, EntityError> {
        if self.runtime.shutting_down.load(Ordering::Acquire) {
            return Err(EntityError::ShuttingDown);
        }
        let registered = self
            .handlers
            .get(handler)
            .ok_or_else(|| EntityError::UnknownHandler {
                entity_type: E::NAME.to_owned(),
                handler: handler.to_owned(),
            })?;
        if caller == Caller::Client
            && (registered.visibility != Visibility::Public
                || registered.kind == HandlerKind::Method)
        {
            return Err(EntityError::NotCallable {
                entity_type: E::NAME.to_owned(),
                handler: handler.to_owned(),
                visibility: registered.visibility,
            });
        }
        Ok(registered)
    }

    /// Records a persisted message for `handler` of `key`, due at `at` (now
    /// if `None`); durable when this returns. A repeated request id is the
    /// same message.
    pub(crate) async fn send_persisted(
        self: &Arc<Self>,
        key: &EntityKey,
        handler: &str,
        params: Bytes,
        request: Option<RequestId>,
        at: Option<Timestamp>,
    ) -> Result<PersistedSend, EntityError> {
        self.callable(handler, Caller::Client)?;
        let request =
            request.unwrap_or_else(|| request_id(key, handler, KeySource::Params(&params)));
        let op = Op::Send {
            handler: handler.to_owned(),
            params,
            request,
            at,
        };
        self.routed(key, op).await?;
        Ok(PersistedSend::new(request, key.shard()))
    }

    /// [`send_persisted`](Self::send_persisted) on this node, with the
    /// request id the sender fixed.
    async fn send_persisted_local(
        &self,
        key: &EntityKey,
        handler: &str,
        params: Bytes,
        request: RequestId,
        at: Option<Timestamp>,
    ) -> Result<(), EntityError> {
        self.callable(handler, Caller::Client)?;
        let now = now();
        let message = StoredMessage::new(request, key.clone(), handler, params, now)
            .with_next_attempt_at(at.unwrap_or(now));
        let mut batch = self.runtime.writes.batch(key.shard())?;
        batch.enqueue(message);
        // A skipped enqueue is the same message sent before: nothing to do.
        self.runtime.writes.commit(batch).await?;
        self.runtime.deliverer.enqueued(key.shard());
        Ok(())
    }

    /// Waits for the outcome of a persisted message: its reply, or its
    /// dead letter.
    pub(crate) async fn persisted_outcome(
        self: &Arc<Self>,
        key: &EntityKey,
        send: &PersistedSend,
    ) -> Result<Bytes, EntityError> {
        if self.runtime.writes.cluster().is_none() {
            return self.persisted_outcome_local(send).await;
        }
        // In bounded waits at the owner of the moment: the shard may move.
        loop {
            let op = Op::Outcome {
                request: send.request_id(),
                wait: OUTCOME_WAIT,
            };
            if let Some(reply) = self.routed(key, op).await? {
                return Ok(reply);
            }
        }
    }

    /// [`persisted_outcome`](Self::persisted_outcome) on this node.
    async fn persisted_outcome_local(&self, send: &PersistedSend) -> Result<Bytes, EntityError> {
        let deliverer = &self.runtime.deliverer;
        let (shard, request) = (send.shard(), send.request_id());
        let waiter = deliverer.replies().waiter(request);
        waiter
            .wait_for(|| async {
                if let Some(reply) = self.runtime.storage.read_reply(shard, request).await? {
                    return Ok(Some(Ok(reply)));
                }
                if let Some(letter) = deliverer.dead_letter(shard, request).await? {
                    return Ok(Some(Err(EntityError::DeadLettered {
                        reason: letter.reason,
                    })));
                }
                if deliverer.is_stopping() {
                    return Ok(Some(Err(EntityError::ShuttingDown)));
                }
                Ok::<_, EntityError>(None)
            })
            .await?
    }

    /// Runs (or joins, or answers from storage) the workflow execution
    /// `request`. The execution runs as its own task, so it goes on when a
    /// caller gives up waiting.
    pub(crate) async fn run_workflow(
        self: &Arc<Self>,
        key: &EntityKey,
        registered: Arc<Registered<E>>,
        params: Bytes,
        request: RequestId,
    ) -> Result<Bytes, EntityError> {
        if let Some(reply) = self
            .runtime
            .storage
            .read_reply(key.shard(), request)
            .await?
        {
            return Ok(reply);
        }
        let execution = {
            let mut running = lock(&self.running);
            match running.get(&request) {
                Some((shared, _, _)) => shared.clone(),
                None => {
                    let ty = self.clone();
                    let shard = key.shard();
                    let key = key.clone();
                    let task = tokio::spawn(async move {
                        let result = ty.execute(&key, &registered, params, request).await;
                        lock(&ty.running).remove(&request);
                        result
                    });
                    let abort = task.abort_handle();
                    let runtime = self.runtime.clone();
                    let shared = async move {
                        match task.await {
                            Ok(result) => result,
                            // Aborted at shutdown, or because the shard
                            // moved: the execution stays pending and
                            // resumes on the next start, or at the owner.
                            Err(_) if runtime.shutting_down.load(Ordering::Acquire) => {
                                Err(EntityError::ShuttingDown)
                            }
                            Err(_) => Err(EntityError::NotOwner { shard: shard.get() }),
                        }
                    }
                    .boxed()
                    .shared();
                    running.insert(request, (shared.clone(), abort, shard));
                    shared
                }
            }
        };
        execution.await
    }

    /// One run of a workflow execution: record it as pending, replay its
    /// journal and run the rest, then store the result and forget the
    /// journal in one batch.
    async fn execute(
        self: &Arc<Self>,
        key: &EntityKey,
        registered: &Registered<E>,
        params: Bytes,
        request: RequestId,
    ) -> Result<Bytes, EntityError> {
        let storage = &self.runtime.storage;
        let mut batch = self.runtime.writes.batch(key.shard())?;
        let pending =
            StoredMessage::new(request, key.clone(), registered.name, params.clone(), now());
        let record = batch.enqueue(pending);
        let outcome = self.runtime.writes.commit(batch).await?;
        match outcome.skip_reason(record) {
            // Finished by another run in the meantime.
            Some(SkipReason::MessageReplied) => {
                if let Some(reply) = storage.read_reply(key.shard(), request).await? {
                    return Ok(reply);
                }
            }
            // Dead-lettered earlier: it runs again only when replayed.
            Some(SkipReason::MessageDeadLettered) => {
                let letter = self
                    .runtime
                    .deliverer
                    .dead_letter(key.shard(), request)
                    .await?;
                return Err(EntityError::DeadLettered {
                    reason: letter.map_or_else(|| "dead-lettered".to_owned(), |l| l.reason),
                });
            }
            _ => {}
        }
        let Some(workflow) = registered.workflow() else {
            return Err(EntityError::UnknownHandler {
                entity_type: E::NAME.to_owned(),
                handler: registered.name.to_owned(),
            });
        };
        let journal = storage.read_journal(key, request).await?;
        let mut ctx = WorkflowContext::new(self.clone(), key.clone(), request, journal)?;
        let run = AssertUnwindSafe(workflow.run(&mut ctx, &params))
            .catch_unwind()
            .await;
        if let Some(interruption) = ctx.take_interruption() {
            tracing::warn!(entity = %key.entity_id(), workflow = registered.name, error = %interruption, "workflow interrupted; it stays pending");
            if !matches!(interruption, EntityError::ShuttingDown) {
                // The deliverer retries it with backoff.
                self.runtime.deliverer.enqueued(key.shard());
            }
            return Err(interruption);
        }
        let reply = match run {
            Ok(Ok(reply)) => reply,
            // Undecodable parameters or a panicking body: running again
            // would fail again, so the execution is dead-lettered.
            Ok(Err(error)) => return Err(self.dead_letter(key, request, error).await),
            Err(panic) => {
                let failure = crate::actor::Failure::from_panic(panic);
                let error = EntityError::HandlerPanicked {
                    handler: registered.name.to_owned(),
                    message: failure.message().to_owned(),
                };
                return Err(self.dead_letter(key, request, error).await);
            }
        };
        let mut batch = self.runtime.writes.batch(key.shard())?;
        batch.ack(request, reply.clone());
        batch.delete_journal(key, request);
        self.runtime.writes.commit(batch).await?;
        Ok(reply)
    }

    async fn dead_letter(
        &self,
        key: &EntityKey,
        request: RequestId,
        error: EntityError,
    ) -> EntityError {
        tracing::error!(entity = %key.entity_id(), %error, "workflow execution dead-lettered");
        let committed = match self.runtime.writes.batch(key.shard()) {
            Ok(mut batch) => {
                batch.dead_letter(request, error.to_string(), now());
                self.runtime.writes.commit(batch).await.map(drop)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            return e;
        }
        error
    }

    /// Stops every running workflow task (they stay pending in storage).
    pub(crate) fn abort_workflows(&self) {
        for (_, (_, abort, _)) in lock(&self.running).drain() {
            abort.abort();
        }
    }

    /// How many entities of this type are in memory.
    pub(crate) fn active_count(&self) -> usize {
        self.active.iter().map(|stripe| lock(stripe).len()).sum()
    }

    fn stripe(&self, id: &str) -> &Mutex<HashMap<String, Addr<EntityActor<E>>>> {
        // A different hash than the shard's would do; reusing it is cheap.
        &self.active[(shard::entity_hash(id) % STRIPES as u64) as usize]
    }

    fn activate(self: &Arc<Self>, key: &EntityKey) -> Addr<EntityActor<E>> {
        let mut active = lock(self.stripe(key.entity_id()));
        if let Some(addr) = active.get(key.entity_id())
            && addr.is_alive()
        {
            return addr.clone();
        }
        let actor = EntityActor {
            ty: self.clone(),
            key: key.clone(),
            epoch: None,
            state: Loaded::Pending,
            committed: None,
            last_used: Instant::now(),
        };
        let addr = self
            .runtime
            .system
            .spawn_with_capacity(actor, self.runtime.config.entity_mailbox_capacity());
        active.insert(key.entity_id().to_owned(), addr.clone());
        addr
    }

    /// Removes `addr` from the map if it is still the entry for `id`.
    fn forget(&self, id: &str, addr: &Addr<EntityActor<E>>) -> bool {
        let mut active = lock(self.stripe(id));
        if active.get(id) == Some(addr) {
            active.remove(id);
            true
        } else {
            false
        }
    }
}

/// The state of an active entity.
enum Loaded<S> {
    /// `started` has not loaded it yet.
    Pending,
    Ready(S),
    /// The stored bytes do not decode into `S`; calls are refused so the
    /// data is never overwritten.
    Unreadable(String),
    /// Loading failed; the actor answers this error once and stops, so the
    /// next call tries again.
    LoadFailed(EntityError),
}

/// One active entity.
pub(crate) struct EntityActor<E: Entity> {
    ty: Arc<EntityType<E>>,
    key: EntityKey,
    /// The epoch at which this node owned the shard when the state was
    /// loaded; every write is fenced with it, and a call finding the
    /// shard's epoch changed (the shard moved away, perhaps and back) stops
    /// the actor instead of serving state another owner may have changed.
    epoch: Option<Epoch>,
    state: Loaded<E::State>,
    /// The last committed state as stored, to go back to after a failed
    /// activity (`None`: nothing stored yet, i.e. the default state).
    committed: Option<Bytes>,
    last_used: Instant,
}

impl<E: Entity> EntityActor<E> {
    fn restore(&mut self) {
        self.state = match &self.committed {
            None => Loaded::Ready(E::State::default()),
            Some(bytes) => match decode(bytes, "state") {
                Ok(state) => Loaded::Ready(state),
                Err(e) => Loaded::Unreadable(e.to_string()),
            },
        };
    }

    async fn handle_invoke(&mut self, invoke: Invoke<E>) -> Result<Bytes, EntityError> {
        let ty = self.ty.clone();
        let runtime = &ty.runtime;
        if self.epoch.is_none() || runtime.writes.epoch(self.key.shard()) != self.epoch {
            return Err(EntityError::NotOwner {
                shard: self.key.shard().get(),
            });
        }
        let is_activity = invoke.handler.kind == HandlerKind::Activity;
        let request = invoke.request.filter(|_| is_activity);
        let journal = invoke.journal.filter(|_| is_activity);
        if let Some(slot) = journal {
            // A step journaled by an earlier run answers from the journal.
            let entries = runtime
                .storage
                .read_journal(&self.key, slot.execution)
                .await?;
            if let Some(entry) = entries.into_iter().find(|e| e.step == slot.step) {
                return Ok(decode::<JournalRecord>(&entry.entry, "journal entry")?.reply);
            }
        }
        if let Some(request) = request
            && let Some(reply) = runtime
                .storage
                .read_reply(self.key.shard(), request)
                .await?
        {
            return Ok(reply);
        }
        let state = match &mut self.state {
            Loaded::Ready(state) => state,
            Loaded::Unreadable(reason) => {
                return Err(EntityError::StateUnreadable {
                    entity: label::<E>(&self.key),
                    reason: reason.clone(),
                });
            }
            Loaded::Pending => unreachable!("state is loaded in `started`"),
            Loaded::LoadFailed(e) => return Err(e.clone()),
        };
        let run = invoke
            .handler
            .call(&self.ty.entity, &self.key, state, &invoke.params);
        let outcome = match AssertUnwindSafe(run).catch_unwind().await {
            Ok(Ok(outcome)) if !is_activity => return Ok(outcome.reply),
            Ok(Ok(outcome)) => {
                self.commit_activity(&invoke, outcome, request, journal)
                    .await
            }
            // Undecodable parameters (the handler never ran) or an
            // unencodable reply (it ran).
            Ok(Err(e)) => Err(e),
            Err(panic) => {
                let failure = crate::actor::Failure::from_panic(panic);
                tracing::warn!(entity = %label::<E>(&self.key), handler = invoke.handler.name, %failure, "handler panicked");
                Err(EntityError::HandlerPanicked {
                    handler: invoke.handler.name.to_owned(),
                    message: failure.message().to_owned(),
                })
            }
        };
        // An activity that did not commit leaves nothing behind in memory
        // either: the entity goes on from its last committed state.
        if outcome.is_err() && is_activity {
            self.restore();
        }
        outcome
    }

    /// Persists what an activity did: on `Ok`, its new state; with a
    /// request id, its reply; in a workflow, its journal entry — all in one
    /// batch. An activity that returned `Err` keeps none of its changes
    /// (its reply and journal entry are still recorded).
    async fn commit_activity(
        &mut self,
        invoke: &Invoke<E>,
        outcome: Outcome,
        request: Option<RequestId>,
        journal: Option<JournalSlot>,
    ) -> Result<Bytes, EntityError> {
        let writes = self.ty.runtime.writes.clone();
        let epoch = self.epoch.ok_or(EntityError::NotOwner {
            shard: self.key.shard().get(),
        })?;
        let mut batch = WriteBatch::new(self.key.shard(), epoch);
        let new_state = match (&self.state, outcome.commit) {
            (Loaded::Ready(state), true) => Some(encode(state, "state")?),
            _ => None,
        };
        if !outcome.commit {
            self.restore();
        }
        if let Some(bytes) = &new_state {
            batch.put_state(&self.key, bytes.clone());
        }
        if let Some(request) = request {
            batch.ack(request, outcome.reply.clone());
        }
        if let Some(slot) = journal {
            let record = JournalRecord {
                handler: invoke.handler.name.to_owned(),
                target: String::new(),
                reply: outcome.reply.clone(),
            };
            batch.append_journal(&self.key, slot.execution, slot.step, record.encode()?);
        }
        if !batch.is_empty() {
            writes.commit(batch).await?;
        }
        if new_state.is_some() {
            self.committed = new_state;
        }
        Ok(outcome.reply)
    }
}

impl<E: Entity> Actor for EntityActor<E> {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        // The epoch first: the state read afterwards includes every write
        // made before this node acquired the shard.
        self.epoch = self.ty.runtime.writes.epoch(self.key.shard());
        if self.epoch.is_none() {
            self.state = Loaded::LoadFailed(EntityError::NotOwner {
                shard: self.key.shard().get(),
            });
            return;
        }
        self.state = match self.ty.runtime.storage.load_state(&self.key).await {
            Ok(None) => Loaded::Ready(E::State::default()),
            Ok(Some(bytes)) => match decode(&bytes, "state") {
                Ok(state) => {
                    self.committed = Some(bytes);
                    Loaded::Ready(state)
                }
                Err(e) => {
                    tracing::error!(entity = %label::<E>(&self.key), error = %e, "stored state is unreadable");
                    Loaded::Unreadable(e.to_string())
                }
            },
            Err(e) => Loaded::LoadFailed(e.into()),
        };
        self.last_used = Instant::now();
        ctx.run_later(self.ty.runtime.config.entity_max_idle_time(), CheckIdle);
    }
}

/// A call of one handler with encoded parameters.
pub(crate) struct Invoke<E: Entity> {
    handler: Arc<Registered<E>>,
    params: Bytes,
    request: Option<RequestId>,
    journal: Option<JournalSlot>,
}

impl<E: Entity> Message for Invoke<E> {
    type Result = Result<Bytes, EntityError>;
}

impl<E: Entity> Handler<Invoke<E>> for EntityActor<E> {
    async fn handle(
        &mut self,
        invoke: Invoke<E>,
        ctx: &mut Context<Self>,
    ) -> Result<Bytes, EntityError> {
        self.last_used = Instant::now();
        let result = self.handle_invoke(invoke).await;
        if let Err(error @ EntityError::NotOwner { .. }) = &result {
            // The shard moved: this activation must not serve again.
            self.state = Loaded::LoadFailed(error.clone());
        }
        if matches!(self.state, Loaded::LoadFailed(_)) {
            // Let the next call load afresh.
            self.ty.forget(self.key.entity_id(), &ctx.address());
            ctx.stop();
        }
        result
    }
}

/// Passivates the entity once it has been idle for `entity_max_idle_time`.
struct CheckIdle;

impl Message for CheckIdle {
    type Result = ();
}

impl<E: Entity> Handler<CheckIdle> for EntityActor<E> {
    async fn handle(&mut self, _: CheckIdle, ctx: &mut Context<Self>) {
        let max_idle = self.ty.runtime.config.entity_max_idle_time();
        let idle = self.last_used.elapsed();
        if idle >= max_idle {
            // Leave the map first: a call that still finds this actor and
            // queues behind the stop gets `NoReply` and activates afresh.
            self.ty.forget(self.key.entity_id(), &ctx.address());
            ctx.stop();
        } else {
            ctx.run_later(
                max_idle.saturating_sub(idle).max(Duration::from_millis(1)),
                CheckIdle,
            );
        }
    }
}

/// Now, as a storage timestamp.
pub(crate) fn now() -> Timestamp {
    timestamp(SystemTime::now())
}

/// `at` as a storage timestamp (Unix milliseconds; before 1970 is 0).
pub(crate) fn timestamp(at: SystemTime) -> Timestamp {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_ms(ms)
}

/// How errors and logs name an entity: `Type/id`.
pub(crate) fn label<E: Entity>(key: &EntityKey) -> String {
    format!("{}/{}", E::NAME, key.entity_id())
}

/// An entity type without its Rust type: what the node (calls by name)
/// and the deliverer (persisted messages) need.
pub(crate) trait AnyEntityType: Send + Sync {
    /// The storage key of entity `id`.
    fn key(&self, id: &str) -> Result<EntityKey, EntityError>;
    /// Calls `handler` of entity `key` with encoded `params`, as a client
    /// (public handlers only), with an optional request id.
    fn invoke_raw(
        self: Arc<Self>,
        key: EntityKey,
        handler: &str,
        params: Bytes,
        request: Option<RequestId>,
    ) -> BoxFuture<'static, Result<Bytes, EntityError>>;
    /// Runs a forwarded operation on entity `key`, here.
    fn run_local_raw(
        self: Arc<Self>,
        key: EntityKey,
        op: Op,
    ) -> BoxFuture<'static, Result<Option<Bytes>, EntityError>>;
    /// Passivates the active entities, and stops the workflow tasks, of
    /// the shards `lost` says this node no longer owns.
    fn release(&self, lost: &dyn Fn(ShardId) -> bool);
    fn active_count(&self) -> usize;
    fn group(&self) -> ShardGroup;
    fn abort_workflows(&self);
    /// Itself, for a downcast to its `EntityType<E>`.
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<E: Entity> AnyEntityType for EntityType<E> {
    fn key(&self, id: &str) -> Result<EntityKey, EntityError> {
        EntityType::key(self, id)
    }

    fn invoke_raw(
        self: Arc<Self>,
        key: EntityKey,
        handler: &str,
        params: Bytes,
        request: Option<RequestId>,
    ) -> BoxFuture<'static, Result<Bytes, EntityError>> {
        let handler = handler.to_owned();
        Box::pin(async move {
            self.invoke(&key, &handler, params, request, Caller::Client)
                .await
        })
    }

    fn run_local_raw(
        self: Arc<Self>,
        key: EntityKey,
        op: Op,
    ) -> BoxFuture<'static, Result<Option<Bytes>, EntityError>> {
        Box::pin(async move { self.run_local(&key, op).await })
    }

    fn release(&self, lost: &dyn Fn(ShardId) -> bool) {
        for stripe in &self.active {
            let released: Vec<Addr<EntityActor<E>>> = lock(stripe)
                .extract_if(|id, _| self.key(id).is_ok_and(|key| lost(key.shard())))
                .map(|(_, addr)| addr)
                .collect();
            for addr in released {
                addr.stop();
            }
        }
        let mut running = lock(&self.running);
        running.retain(|_, (_, abort, shard)| {
            if lost(*shard) {
                abort.abort();
                false
            } else {
                true
            }
        });
    }

    fn active_count(&self) -> usize {
        EntityType::active_count(self)
    }

    fn group(&self) -> ShardGroup {
        self.group
    }

    fn abort_workflows(&self) {
        EntityType::abort_workflows(self);
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
