//! [`ActorSystem`]: spawns top-level actors, keeps the name registry, and
//! shuts everything down.
//!
//! Invariant: every spawned actor is tracked from before its task starts until
//! after its watchers are notified, so [`ActorSystem::shutdown`] returns only
//! once every actor's task has finished.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::addr::Addr;
use super::control::ControlSender;
use super::error::{ConfigError, RegistryError};
use super::runner::{self, Control, Spawn};
use super::supervisor::SupervisorStrategy;
use super::traits::Actor;
use crate::sync::lock;

/// The mailbox capacity of actors spawned without an explicit one.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 256;

/// An actor's identity, unique within its [`ActorSystem`] and stable across
/// supervised restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(u64);

impl ActorId {
    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(id: u64) -> Self {
        ActorId(id)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actor#{}", self.0)
    }
}

/// The runtime that owns a set of actors. Cheap to clone: clones share the
/// same actors and registry.
///
/// Dropping every clone does not stop the actors; call
/// [`ActorSystem::shutdown`] for that.
#[derive(Clone)]
pub struct ActorSystem {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Handle,
    mailbox_capacity: usize,
    next_id: AtomicU64,
    /// Control channels of live actors, for shutdown.
    actors: Mutex<HashMap<ActorId, ControlSender>>,
    registry: Mutex<Registry>,
    live: AtomicUsize,
    all_stopped: Notify,
    shutting_down: AtomicBool,
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<String, Registered>,
    names_of: HashMap<ActorId, Vec<String>>,
}

struct Registered {
    id: ActorId,
    addr: Box<dyn Any + Send + Sync>,
}

/// Builds an [`ActorSystem`] with validated settings.
#[derive(Debug, Clone)]
pub struct ActorSystemBuilder {
    mailbox_capacity: usize,
    runtime: Option<Handle>,
}

impl ActorSystemBuilder {
    /// The default mailbox capacity for actors spawned without one
    /// (default [`DEFAULT_MAILBOX_CAPACITY`]).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    /// The tokio runtime actors run on (default: the current one).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Validates the settings and creates the system.
    pub fn build(self) -> Result<ActorSystem, ConfigError> {
        if self.mailbox_capacity == 0 {
            return Err(ConfigError::ZeroMailboxCapacity);
        }
        let runtime = match self.runtime {
            Some(handle) => handle,
            None => Handle::try_current().map_err(|_| ConfigError::NoRuntime)?,
        };
        Ok(ActorSystem {
            inner: Arc::new(Inner {
                runtime,
                mailbox_capacity: self.mailbox_capacity,
                next_id: AtomicU64::new(1),
                actors: Mutex::new(HashMap::new()),
                registry: Mutex::new(Registry::default()),
                live: AtomicUsize::new(0),
                all_stopped: Notify::new(),
                shutting_down: AtomicBool::new(false),
            }),
        })
    }
}

impl ActorSystem {
    /// A system with default settings on the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime; use [`ActorSystem::builder`] with
    /// [`ActorSystemBuilder::runtime`] there.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("ActorSystem::new must be called inside a tokio runtime")
    }

    /// A builder for a system with custom settings.
    pub fn builder() -> ActorSystemBuilder {
        ActorSystemBuilder {
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            runtime: None,
        }
    }

    /// Spawns a top-level actor with the default mailbox capacity and the
    /// [`SupervisorStrategy::Stop`] strategy.
    pub fn spawn<A: Actor>(&self, actor: A) -> Addr<A> {
        self.spawn_with_capacity(actor, self.inner.mailbox_capacity)
    }

    /// Spawns a top-level actor with a mailbox of `capacity` messages.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn spawn_with_capacity<A: Actor>(&self, actor: A, capacity: usize) -> Addr<A> {
        runner::spawn(Spawn {
            system: self.clone(),
            actor,
            factory: None,
            capacity,
            strategy: SupervisorStrategy::Stop,
            parent: None,
        })
        .0
    }

    /// Spawns a top-level actor built by `factory`, which builds a fresh
    /// instance again whenever `strategy` restarts it.
    pub fn spawn_with_strategy<A, F>(&self, factory: F, strategy: SupervisorStrategy) -> Addr<A>
    where
        A: Actor,
        F: FnMut() -> A + Send + 'static,
    {
        self.spawn_with_strategy_and_capacity(factory, strategy, self.inner.mailbox_capacity)
    }

    /// [`ActorSystem::spawn_with_strategy`] with a mailbox of `capacity`.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn spawn_with_strategy_and_capacity<A, F>(
        &self,
        mut factory: F,
        strategy: SupervisorStrategy,
        capacity: usize,
    ) -> Addr<A>
    where
        A: Actor,
        F: FnMut() -> A + Send + 'static,
    {
        let actor = factory();
        runner::spawn(Spawn {
            system: self.clone(),
            actor,
            factory: Some(Box::new(factory)),
            capacity,
            strategy,
            parent: None,
        })
        .0
    }

    /// Registers `addr` under `name`. The entry vanishes when the actor
    /// stops; it survives supervised restarts (the address stays valid).
    /// The registry keeps the actor reachable, so a registered actor is not
    /// stopped for lack of addresses.
    pub fn register<A: Actor>(
        &self,
        name: impl Into<String>,
        addr: &Addr<A>,
    ) -> Result<(), RegistryError> {
        let name = name.into();
        let mut registry = self.registry();
        // Checked under the lock: a stopping actor closes its control channel
        // before it takes this lock to remove its names.
        if !addr.is_alive() {
            return Err(RegistryError::ActorStopped);
        }
        if let Some(existing) = registry.by_name.get(&name) {
            if existing.id == addr.id() {
                return Ok(());
            }
            return Err(RegistryError::NameTaken(name));
        }
        registry
            .names_of
            .entry(addr.id())
            .or_default()
            .push(name.clone());
        registry.by_name.insert(
            name,
            Registered {
                id: addr.id(),
                addr: Box::new(addr.clone()),
            },
        );
        Ok(())
    }

    /// The address registered under `name`, if it is an `A` and still alive.
    pub fn lookup<A: Actor>(&self, name: &str) -> Option<Addr<A>> {
        let registry = self.registry();
        let entry = registry.by_name.get(name)?;
        entry.addr.downcast_ref::<Addr<A>>().cloned()
    }

    /// Removes `name` from the registry; returns whether it was there.
    pub fn unregister(&self, name: &str) -> bool {
        let mut registry = self.registry();
        let Some(entry) = registry.by_name.remove(name) else {
            return false;
        };
        if let Some(names) = registry.names_of.get_mut(&entry.id) {
            names.retain(|n| n != name);
            if names.is_empty() {
                registry.names_of.remove(&entry.id);
            }
        }
        true
    }

    /// How many actors are running (or still stopping).
    pub fn actor_count(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Stops every actor and waits until all of them have finished: each
    /// finishes the message it is handling, its children stop, its `stopped`
    /// hook runs, and its watchers are told. Actors spawned meanwhile are
    /// stopped too. Wrap it in `tokio::time::timeout` to bound a handler
    /// that never returns.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        let controls: Vec<_> = self.actors().values().cloned().collect();
        for control in controls {
            let _ = control.send(Control::Stop);
        }
        self.wait_all_stopped().await;
    }

    async fn wait_all_stopped(&self) {
        loop {
            let mut notified = pin!(self.inner.all_stopped.notified());
            notified.as_mut().enable();
            if self.inner.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.inner.runtime
    }

    pub(crate) fn default_capacity(&self) -> usize {
        self.inner.mailbox_capacity
    }

    /// Starts tracking a new actor; called before its task is spawned.
    pub(crate) fn track(&self, control: &ControlSender) -> ActorId {
        let id = ActorId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        self.actors().insert(id, control.clone());
        // Checked after the insert, so a concurrent shutdown either sees the
        // actor in the map or is seen here.
        if self.inner.shutting_down.load(Ordering::Acquire) {
            let _ = control.send(Control::Stop);
        }
        id
    }

    /// Forgets a stopping actor's control channel and registry names.
    pub(crate) fn untrack(&self, id: ActorId) {
        {
            let mut actors = self.actors();
            actors.remove(&id);
            // Give the memory of a burst of actors back once they are gone;
            // halving keeps this amortised O(1).
            if actors.capacity() > 1024 && actors.len() * 4 < actors.capacity() {
                let len = actors.len();
                actors.shrink_to(len * 2);
            }
        }
        let mut registry = self.registry();
        if let Some(names) = registry.names_of.remove(&id) {
            for name in names {
                registry.by_name.remove(&name);
            }
        }
    }

    /// The last step of an actor's task.
    pub(crate) fn finished(&self) {
        if self.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.all_stopped.notify_waiters();
        }
    }

    fn actors(&self) -> MutexGuard<'_, HashMap<ActorId, ControlSender>> {
        lock(&self.inner.actors)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.inner.registry)
    }
}

impl Default for ActorSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorSystem")
            .field("actors", &self.actor_count())
            .field("mailbox_capacity", &self.inner.mailbox_capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_rejects_bad_settings() {
        assert_eq!(
            ActorSystem::builder().mailbox_capacity(0).build().err(),
            Some(ConfigError::ZeroMailboxCapacity)
        );
        // No runtime on this thread.
        assert_eq!(
            ActorSystem::builder().build().err(),
            Some(ConfigError::NoRuntime)
        );
    }
}
