//! [`Context`]: an actor's handle to the runtime while it runs: its address,
//! children, timers, streams and watches.
//!
//! Invariant: everything a context starts (children, timers, stream pumps)
//! ends when the actor stops or is restarted; nothing outlives its owner.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};

use super::addr::Addr;
use super::control::ControlSender;
use super::envelope::Envelope;
use super::runner::{self, Control, Spawn};
use super::supervisor::{StopReason, SupervisorStrategy, Terminated};
use super::system::{ActorId, ActorSystem};
use super::traits::{Actor, Handler, Message, StreamHandler};

/// An actor's handle to the runtime, passed to every handler and hook.
pub struct Context<A: Actor> {
    id: ActorId,
    system: ActorSystem,
    /// Weak, so that the context alone does not keep the actor reachable.
    mailbox: mpsc::WeakSender<Envelope<A>>,
    control: ControlSender,
    pub(crate) parent: Option<ControlSender>,
    pub(crate) stopping: bool,
    children: Vec<Child>,
    tasks: Vec<SpawnHandle>,
    prune_tasks_at: usize,
}

struct Child {
    id: ActorId,
    control: ControlSender,
    join: JoinHandle<()>,
}

/// A handle to a timer or stream started from a [`Context`].
#[derive(Debug, Clone)]
pub struct SpawnHandle {
    abort: Option<AbortHandle>,
    cancelled: Arc<AtomicBool>,
}

impl SpawnHandle {
    /// Cancels it. For a timer: once `cancel` has returned, its message is
    /// never handled, even if it was already queued. For a stream: no item
    /// is read from it any more (items already queued are still handled).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }

    /// Whether it was cancelled (or could not start: the actor was stopping).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn is_finished(&self) -> bool {
        self.abort.as_ref().is_none_or(|a| a.is_finished())
    }

    fn inert() -> Self {
        SpawnHandle {
            abort: None,
            cancelled: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(
        id: ActorId,
        system: ActorSystem,
        mailbox: mpsc::WeakSender<Envelope<A>>,
        control: ControlSender,
        parent: Option<ControlSender>,
    ) -> Self {
        Context {
            id,
            system,
            mailbox,
            control,
            parent,
            stopping: false,
            children: Vec::new(),
            tasks: Vec::new(),
            prune_tasks_at: 16,
        }
    }

    /// This actor's id.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// The system this actor runs in.
    pub fn system(&self) -> &ActorSystem {
        &self.system
    }

    /// This actor's own address. If nothing else could reach the actor any
    /// more (it is about to stop), the address is already closed.
    pub fn address(&self) -> Addr<A> {
        let mailbox = self.mailbox.upgrade().unwrap_or_else(|| {
            // A sender whose receiver is gone: every send fails with
            // `MailboxClosed`, which is the truth for a stopping actor.
            mpsc::channel(1).0
        });
        Addr {
            mailbox,
            control: self.control.clone(),
            id: self.id,
        }
    }

    pub(crate) fn mailbox_sender(&self) -> Option<mpsc::Sender<Envelope<A>>> {
        self.mailbox.upgrade()
    }

    /// Stops the actor once the current handler returns. Queued messages are
    /// dropped and their senders get [`crate::actor::SendError::NoReply`].
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Whether [`Context::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Spawns a child with the default mailbox capacity. Children stop when
    /// their parent stops or restarts.
    pub fn spawn_child<C: Actor>(&mut self, child: C) -> Addr<C> {
        let capacity = self.system.default_capacity();
        self.spawn_child_with_capacity(child, capacity)
    }

    /// Spawns a child with a mailbox of `capacity` messages.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn spawn_child_with_capacity<C: Actor>(&mut self, child: C, capacity: usize) -> Addr<C> {
        self.spawn_child_inner(child, None, capacity, SupervisorStrategy::Stop)
    }

    /// Spawns a child built by `factory`, supervised with `strategy`; a
    /// restart builds a fresh instance with `factory` behind the same address.
    pub fn spawn_child_with_strategy<C, F>(
        &mut self,
        factory: F,
        strategy: SupervisorStrategy,
    ) -> Addr<C>
    where
        C: Actor,
        F: FnMut() -> C + Send + 'static,
    {
        let capacity = self.system.default_capacity();
        self.spawn_child_with_strategy_and_capacity(factory, strategy, capacity)
    }

    /// [`Context::spawn_child_with_strategy`] with a mailbox of `capacity`.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn spawn_child_with_strategy_and_capacity<C, F>(
        &mut self,
        mut factory: F,
        strategy: SupervisorStrategy,
        capacity: usize,
    ) -> Addr<C>
    where
        C: Actor,
        F: FnMut() -> C + Send + 'static,
    {
        let child = factory();
        self.spawn_child_inner(child, Some(Box::new(factory)), capacity, strategy)
    }

    fn spawn_child_inner<C: Actor>(
        &mut self,
        actor: C,
        factory: Option<runner::Factory<C>>,
        capacity: usize,
        strategy: SupervisorStrategy,
    ) -> Addr<C> {
        let (addr, join) = runner::spawn(Spawn {
            system: self.system.clone(),
            actor,
            factory,
            capacity,
            strategy,
            parent: Some(self.control.clone()),
        });
        self.children.push(Child {
            id: addr.id(),
            control: addr.control.clone(),
            join,
        });
        addr
    }

    /// Delivers `msg` to this actor after `delay`.
    pub fn run_later<M>(&mut self, delay: Duration, msg: M) -> SpawnHandle
    where
        A: Handler<M>,
        M: Message,
    {
        let Some(mailbox) = self.mailbox.upgrade() else {
            return SpawnHandle::inert();
        };
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let task = self.system.runtime().spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = mailbox.send(Envelope::timer(msg, flag)).await;
        });
        self.keep(task.abort_handle(), cancelled)
    }

    /// Delivers a clone of `msg` to this actor every `period`, first after
    /// one period. Ticks that would pile up behind a busy actor are delayed,
    /// not bunched.
    ///
    /// # Panics
    /// If `period` is zero.
    pub fn run_interval<M>(&mut self, period: Duration, msg: M) -> SpawnHandle
    where
        A: Handler<M>,
        M: Message + Clone,
    {
        assert!(!period.is_zero(), "run_interval needs a non-zero period");
        let Some(mailbox) = self.mailbox.upgrade() else {
            return SpawnHandle::inert();
        };
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let task = self.system.runtime().spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if mailbox
                    .send(Envelope::timer(msg.clone(), flag.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        self.keep(task.abort_handle(), cancelled)
    }

    /// Feeds every item of `stream` to this actor's [`StreamHandler`], then
    /// calls [`StreamHandler::finished`]. Items go through the mailbox, so a
    /// busy actor slows the stream down.
    pub fn add_stream<S>(&mut self, stream: S) -> SpawnHandle
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
        A: StreamHandler<S::Item>,
    {
        let Some(mailbox) = self.mailbox.upgrade() else {
            return SpawnHandle::inert();
        };
        let task = self.system.runtime().spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if mailbox.send(Envelope::stream_item(item)).await.is_err() {
                    return;
                }
            }
            let _ = mailbox.send(Envelope::stream_finished::<S::Item>()).await;
        });
        self.keep(task.abort_handle(), Arc::new(AtomicBool::new(false)))
    }

    /// Delivers a [`Terminated`] notice to this actor when `other` stops (at
    /// once if it has already stopped). The notice bypasses the mailbox limit.
    pub fn watch<B: Actor>(&mut self, other: &Addr<B>)
    where
        A: Handler<Terminated>,
    {
        let me = self.control.clone();
        let notify: Box<dyn FnOnce(Terminated) + Send> = Box::new(move |notice| {
            let envelope = Envelope::<A>::message(notice, None);
            let _ = me.send(Control::Deliver(Box::new(envelope)));
        });
        if let Err(Control::Watch(notify)) = other.control.send(Control::Watch(notify)) {
            notify(Terminated {
                id: other.id(),
                reason: StopReason::AlreadyStopped,
            });
        }
    }

    fn keep(&mut self, abort: AbortHandle, cancelled: Arc<AtomicBool>) -> SpawnHandle {
        if self.tasks.len() >= self.prune_tasks_at {
            self.tasks.retain(|t| !t.is_finished());
            self.prune_tasks_at = (self.tasks.len() * 2).max(16);
        }
        let handle = SpawnHandle {
            abort: Some(abort),
            cancelled,
        };
        self.tasks.push(handle.clone());
        handle
    }

    pub(crate) fn forget_child(&mut self, id: ActorId) {
        if let Some(i) = self.children.iter().position(|c| c.id == id) {
            self.children.swap_remove(i);
        }
    }

    /// Stops every child (waiting for each to finish) and cancels every
    /// timer and stream.
    pub(crate) async fn stop_owned(&mut self) {
        for task in self.tasks.drain(..) {
            task.cancel();
        }
        if self.children.is_empty() {
            return;
        }
        let children = std::mem::take(&mut self.children);
        for child in &children {
            let _ = child.control.send(Control::Stop);
        }
        futures::future::join_all(children.into_iter().map(|c| c.join)).await;
    }
}

impl<A: Actor> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("actor", &std::any::type_name::<A>())
            .field("id", &self.id)
            .field("stopping", &self.stopping)
            .field("children", &self.children.len())
            .finish()
    }
}
