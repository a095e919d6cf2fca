//! The local actor runtime: typed actors with bounded mailboxes, supervision,
//! timers, streams, a registry and termination watches.
//!
//! Everything above it in Shoal (entities, workflows, singletons) runs on this
//! layer, and it is usable on its own, with the names users of actix and
//! cineyma know: [`Actor`], [`Message`], [`Handler`], [`Addr`], [`Context`],
//! [`ActorSystem`].
//!
//! # Model
//! Each actor is one tokio task that owns the actor value, its [`Context`] and
//! the receiving end of its mailbox. Messages are handled one at a time, in
//! order, so an actor's state needs no locks; an async handler may await I/O,
//! which pauses only that actor. Mailboxes are bounded (default
//! [`DEFAULT_MAILBOX_CAPACITY`]): [`Addr::do_send`] and [`Addr::send`] wait for
//! room, [`Addr::try_send`] fails at once with [`SendError::MailboxFull`].
//!
//! A panic in a handler or hook is caught at the actor boundary. It never takes
//! the runtime down: the caller waiting on [`Addr::send`] gets
//! [`SendError::ActorFailed`], and the actor's [`SupervisorStrategy`] decides
//! what happens next (stop, restart a fresh instance behind the same address,
//! or escalate to the parent).
//!
//! An actor stops when it calls [`Context::stop`], when someone calls
//! [`Addr::stop`] or [`ActorSystem::shutdown`], when it fails and is not
//! restarted, or when nothing can reach it any more: no [`Addr`], timer,
//! stream or registry entry is left.
//!
//! # Example
//! ```
//! use shoal::actor::{Actor, ActorSystem, Context, Handler, Message};
//!
//! struct Counter(u64);
//! impl Actor for Counter {}
//!
//! struct Add(u64);
//! impl Message for Add {
//!     type Result = u64;
//! }
//!
//! impl Handler<Add> for Counter {
//!     async fn handle(&mut self, msg: Add, _ctx: &mut Context<Self>) -> u64 {
//!         self.0 += msg.0;
//!         self.0
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), shoal::actor::SendError> {
//! let system = ActorSystem::new();
//! let counter = system.spawn(Counter(0));
//! counter.do_send(Add(2)).await?;
//! assert_eq!(counter.send(Add(3)).await?, 5);
//! system.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Latency
//! On a multi-threaded runtime, a request/reply round trip from a task outside
//! the actor's worker costs about one cross-thread wake-up each way, which is
//! what a bare `mpsc` + `oneshot` pair costs too. To go below that, run the
//! callers and the actors on a current-thread runtime (or a `LocalSet`): the
//! wake-ups then stay on one thread and a round trip is a few hundred
//! nanoseconds. `benches/actor.rs` measures both.

mod addr;
mod context;
mod control;
mod envelope;
mod error;
mod runner;
pub(crate) mod supervisor;
mod system;
mod traits;

pub use addr::Addr;
pub use context::{Context, SpawnHandle};
pub use error::{ConfigError, RegistryError, SendError};
pub use supervisor::{Failure, StopReason, SupervisorStrategy, Terminated};
pub use system::{ActorId, ActorSystem, ActorSystemBuilder, DEFAULT_MAILBOX_CAPACITY};
pub use traits::{Actor, Handler, Message, StreamHandler};
