//! The task that runs one actor: its message loop, supervision and orderly
//! termination.
//!
//! Invariants: the actor handles one envelope at a time; control messages
//! (stop, watch, escalation, termination notices) are served before mailbox
//! messages and are never refused for lack of room; on termination the
//! mailbox is closed first, then owned children and timers stop, the
//! `stopped` hook runs, the control channel closes, and only then are the
//! parent and the watchers told.

use std::any::{Any, type_name};
use std::panic::AssertUnwindSafe;
use std::task::Poll;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::addr::Addr;
use super::context::Context;
use super::control::{self, ControlReceiver, ControlSender};
use super::envelope::Envelope;
use super::supervisor::{
    Decision, Failure, StopReason, Supervision, SupervisorStrategy, Terminated,
};
use super::system::{ActorId, ActorSystem};
use super::traits::Actor;

/// Builds a fresh actor instance for a supervised restart.
pub(crate) type Factory<A> = Box<dyn FnMut() -> A + Send>;

/// Messages to the runner itself, outside the bounded mailbox.
pub(crate) enum Control {
    Stop,
    Watch(Box<dyn FnOnce(Terminated) + Send>),
    ChildStopped(ActorId),
    ChildFailed {
        id: ActorId,
        failure: Failure,
    },
    /// An `Envelope<A>` of the receiving actor's type that must not be lost.
    Deliver(Box<dyn Any + Send>),
}

pub(crate) struct Spawn<A: Actor> {
    pub(crate) system: ActorSystem,
    pub(crate) actor: A,
    pub(crate) factory: Option<Factory<A>>,
    pub(crate) capacity: usize,
    pub(crate) strategy: SupervisorStrategy,
    pub(crate) parent: Option<ControlSender>,
}

/// Starts an actor's task; the join handle lets a parent wait for a child.
pub(crate) fn spawn<A: Actor>(spawn: Spawn<A>) -> (Addr<A>, JoinHandle<()>) {
    assert!(
        spawn.capacity > 0,
        "an actor's mailbox capacity must be at least 1"
    );
    let (mailbox, mailbox_rx) = mpsc::channel(spawn.capacity);
    let (control, control_rx) = control::channel();
    let id = spawn.system.track(&control);
    let ctx = Context::new(
        id,
        spawn.system.clone(),
        mailbox.downgrade(),
        control.clone(),
        spawn.parent,
    );
    let runner = Runner {
        supervision: Supervision::new(spawn.strategy, spawn.factory.is_some()),
        actor: spawn.actor,
        factory: spawn.factory,
        ctx,
        mailbox: mailbox_rx,
        control: control_rx,
        watchers: Vec::new(),
    };
    // Held until `started` has run, so the hook can start timers and streams
    // even if the caller dropped the address at once.
    let join = spawn.system.runtime().spawn(runner.run(mailbox.clone()));
    (
        Addr {
            mailbox,
            control,
            id,
        },
        join,
    )
}

struct Runner<A: Actor> {
    actor: A,
    factory: Option<Factory<A>>,
    ctx: Context<A>,
    mailbox: mpsc::Receiver<Envelope<A>>,
    control: ControlReceiver,
    supervision: Supervision,
    watchers: Vec<Box<dyn FnOnce(Terminated) + Send>>,
}

enum Event<A: Actor> {
    Control(Control),
    Message(Option<Envelope<A>>),
}

/// Tells the system the task has ended, even if it unwinds.
struct Finished(ActorSystem);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished();
    }
}

impl<A: Actor> Runner<A> {
    async fn run(mut self, keepalive: mpsc::Sender<Envelope<A>>) {
        let _finished = Finished(self.ctx.system().clone());
        let mut result = self.start(None, Some(keepalive)).await;
        let reason = loop {
            match result {
                Ok(()) => match self.serve().await {
                    Ok(()) => break StopReason::Normal,
                    Err(failure) => result = Err(failure),
                },
                Err(failure) => {
                    tracing::warn!(actor = %self.ctx.id(), kind = type_name::<A>(), %failure, "actor failed");
                    match self.supervision.on_failure(Instant::now()) {
                        Decision::Restart => {
                            self.ctx.stop_owned().await;
                            self.ctx.stopping = false;
                            let Some(factory) = self.factory.as_mut() else {
                                break StopReason::Failed(failure);
                            };
                            match std::panic::catch_unwind(AssertUnwindSafe(factory)) {
                                Ok(fresh) => {
                                    self.actor = fresh;
                                    tracing::info!(actor = %self.ctx.id(), kind = type_name::<A>(), "actor restarted");
                                    result = self.start(Some(&failure), None).await;
                                }
                                Err(panic) => break StopReason::Failed(Failure::from_panic(panic)),
                            }
                        }
                        Decision::Stop => break StopReason::Failed(failure),
                        Decision::Escalate => {
                            if let Some(parent) = &self.ctx.parent {
                                let _ = parent.send(Control::ChildFailed {
                                    id: self.ctx.id(),
                                    failure: failure.clone(),
                                });
                            }
                            break StopReason::Failed(failure);
                        }
                    }
                }
            }
        };
        Box::pin(self.terminate(reason)).await;
    }

    /// Runs the `restarted` (after a restart) and `started` hooks, keeping
    /// the actor reachable while they run.
    async fn start(
        &mut self,
        restarted_after: Option<&Failure>,
        keepalive: Option<mpsc::Sender<Envelope<A>>>,
    ) -> Result<(), Failure> {
        let _keepalive = keepalive.or_else(|| self.ctx.mailbox_sender());
        let Runner { actor, ctx, .. } = self;
        AssertUnwindSafe(async {
            if let Some(failure) = restarted_after {
                actor.restarted(failure, ctx).await;
            }
            actor.started(ctx).await;
        })
        .catch_unwind()
        .await
        .map_err(Failure::from_panic)
    }

    /// Handles messages until the actor stops (`Ok`) or fails (`Err`).
    async fn serve(&mut self) -> Result<(), Failure> {
        loop {
            if self.ctx.stopping {
                return Ok(());
            }
            // Control first, so a stop or an escalation overtakes a full
            // mailbox. Both `poll_recv`s take part in tokio's cooperative
            // budget, so a busy actor still yields to its neighbours.
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(control) = self.control.poll_recv(cx) {
                    return Poll::Ready(Event::Control(control));
                }
                self.mailbox.poll_recv(cx).map(Event::Message)
            })
            .await;
            match event {
                Event::Message(Some(envelope)) => {
                    envelope.dispatch(&mut self.actor, &mut self.ctx).await?;
                }
                // No sender is left: nothing can reach the actor any more.
                Event::Message(None) => return Ok(()),
                Event::Control(control) => self.on_control(control).await?,
            }
        }
    }

    async fn on_control(&mut self, control: Control) -> Result<(), Failure> {
        match control {
            Control::Stop => self.ctx.stopping = true,
            Control::Watch(notify) => self.watchers.push(notify),
            Control::ChildStopped(id) => self.ctx.forget_child(id),
            Control::ChildFailed { id, failure } => {
                self.ctx.forget_child(id);
                return Err(Failure::escalated(id, &failure));
            }
            Control::Deliver(envelope) => {
                if let Ok(envelope) = envelope.downcast::<Envelope<A>>() {
                    envelope.dispatch(&mut self.actor, &mut self.ctx).await?;
                }
            }
        }
        Ok(())
    }

    async fn terminate(mut self, reason: StopReason) {
        let id = self.ctx.id();
        // Refuse new messages at once and fail the queued ones.
        self.mailbox.close();
        while self.mailbox.try_recv().is_ok() {}
        self.ctx.stop_owned().await;
        let stopped = AssertUnwindSafe(self.actor.stopped(&mut self.ctx))
            .catch_unwind()
            .await;
        if let Err(panic) = stopped {
            let failure = Failure::from_panic(panic);
            tracing::warn!(actor = %id, kind = type_name::<A>(), %failure, "stopped hook failed");
        }
        // Whatever the hook started must not outlive the actor either.
        self.ctx.stop_owned().await;
        self.control.close();
        while let Some(control) = self.control.try_recv() {
            if let Control::Watch(notify) = control {
                self.watchers.push(notify);
            }
        }
        let system = self.ctx.system().clone();
        system.untrack(id);
        if let Some(parent) = &self.ctx.parent {
            let _ = parent.send(Control::ChildStopped(id));
        }
        let notice = Terminated { id, reason };
        for notify in self.watchers.drain(..) {
            notify(notice.clone());
        }
    }
}
