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

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use shoal_storage::{EntityKey, Epoch, RequestId, Storage, WriteBatch};
use tokio::time::Instant;

use super::codec::{decode, encode};
use super::error::EntityError;
use super::handlers::{HandlerKind, Handlers, Registered};
use super::traits::{Entity, Visibility};
use crate::Config;
use crate::actor::{Actor, ActorSystem, Addr, Context, Handler, Message, SendError};
use crate::shard::{self, ShardGroup};

/// Stripes of the active-entity map: calls to different entities rarely
/// contend on one lock.
const STRIPES: usize = 64;

/// How often a call follows an entity that stops under it (passivation,
/// shutdown) before giving up with [`EntityError::Unavailable`].
const ACTIVATION_ATTEMPTS_MAX: usize = 8;

/// What every entity type on a node shares.
pub(crate) struct Runtime {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) system: ActorSystem,
    pub(crate) config: Config,
    pub(crate) shutting_down: AtomicBool,
}

/// One registered entity type and its active entities.
pub(crate) struct EntityType<E: Entity> {
    entity: E,
    handlers: Handlers<E>,
    group: ShardGroup,
    runtime: Arc<Runtime>,
    active: Vec<Mutex<HashMap<String, Addr<EntityActor<E>>>>>,
}

/// Who is calling: clients see only public handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Client,
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
        }
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
    /// the encoded output.
    pub(crate) async fn invoke(
        self: &Arc<Self>,
        key: &EntityKey,
        handler: &str,
        params: Bytes,
        request: Option<RequestId>,
        caller: Caller,
    ) -> Result<Bytes, EntityError> {
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
        for _ in 0..ACTIVATION_ATTEMPTS_MAX {
            let addr = self.activate(key);
            let invoke = Invoke {
                handler: registered.clone(),
                params: params.clone(),
                request,
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
        Err(EntityError::Unavailable(format!(
            "{}/{}",
            E::NAME,
            key.entity_id()
        )))
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one map operation: a poisoned map is intact.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

    fn entity_name(&self) -> String {
        format!("{}/{}", E::NAME, self.key.entity_id())
    }

    async fn handle_invoke(&mut self, invoke: Invoke<E>) -> Result<Bytes, EntityError> {
        let ty = self.ty.clone();
        let runtime = &ty.runtime;
        let is_activity = invoke.handler.kind == HandlerKind::Activity;
        let request = invoke.request.filter(|_| is_activity);
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
                    entity: format!("{}/{}", E::NAME, self.key.entity_id()),
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
            Ok(Ok(outcome)) => outcome,
            // Parameters did not decode: the handler never ran.
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                if is_activity {
                    self.restore();
                }
                let failure = crate::actor::Failure::from_panic(panic);
                tracing::warn!(entity = %self.entity_name(), handler = invoke.handler.name, %failure, "handler panicked");
                return Err(EntityError::HandlerPanicked {
                    handler: invoke.handler.name.to_owned(),
                    message: failure.message().to_owned(),
                });
            }
        };
        if !is_activity {
            return Ok(outcome.reply);
        }
        let mut batch = WriteBatch::new(self.key.shard(), Epoch::ZERO);
        let new_state = if outcome.commit {
            match &self.state {
                Loaded::Ready(state) => match encode(state, "state") {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        self.restore();
                        return Err(e);
                    }
                },
                _ => None,
            }
        } else {
            // The activity failed: discard whatever it changed.
            self.restore();
            None
        };
        if let Some(bytes) = &new_state {
            batch.put_state(&self.key, bytes.clone());
        }
        if let Some(request) = request {
            batch.ack(request, outcome.reply.clone());
        }
        if !batch.is_empty()
            && let Err(e) = runtime.storage.commit(batch).await
        {
            self.restore();
            return Err(e.into());
        }
        if new_state.is_some() {
            self.committed = new_state;
        }
        Ok(outcome.reply)
    }
}

impl<E: Entity> Actor for EntityActor<E> {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        self.state = match self.ty.runtime.storage.load_state(&self.key).await {
            Ok(None) => Loaded::Ready(E::State::default()),
            Ok(Some(bytes)) => match decode(&bytes, "state") {
                Ok(state) => {
                    self.committed = Some(bytes);
                    Loaded::Ready(state)
                }
                Err(e) => {
                    tracing::error!(entity = %self.entity_name(), error = %e, "stored state is unreadable");
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
