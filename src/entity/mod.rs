//! Entities: addressable units of state and behaviour, activated on demand,
//! persisted, and (with clustering) sharded across nodes.
//!
//! An entity type implements [`Entity`] (a stable name, a [`State`], a table
//! of handlers) and one small type per handler:
//!
//! | kind | trait | sees | journaled | callable by clients |
//! |---|---|---|---|---|
//! | rpc | [`Rpc`] | `&State` | no | yes (public by default) |
//! | activity | [`Activity`] | `&mut State` | yes: state + result commit atomically | only if made public |
//! | method | [`Method`] | `&State` | no | never (internal helper) |
//! | workflow | [`Workflow`] | steps via [`WorkflowContext`] | every step; replayed after a crash | yes (public by default) |
//!
//! Reusable behaviours are [`EntityTrait`]s: handlers and state of their
//! own, composed into several entity types with [`Handlers::compose`].
//!
//! Clients are typed: `node.client::<Account>("alice").call(Deposit, 100)`
//! only compiles with `Deposit`'s parameter type and yields its output.
//! Values crossing the boundary, and the state itself, are MessagePack with
//! field names, so a field added with `#[serde(default)]` keeps old data
//! readable.
//!
//! Each active entity is an actor of [`crate::actor`]: one handler at a
//! time, a mailbox bounded by [`crate::Config::entity_mailbox_capacity`],
//! passivated after [`crate::Config::entity_max_idle_time`] without calls
//! and re-activated with its state from storage on the next call.

mod client;
pub(crate) mod codec;
mod context;
pub(crate) mod delivery;
mod error;
mod handlers;
pub(crate) mod runtime;
mod traits;
mod workflow;
mod writes;

pub use client::{EntityClient, PersistedSend, default_request_id, idempotency_request_id};
pub use context::{ActivityContext, RpcContext};
pub use error::EntityError;
pub use handlers::{HandlerKind, Handlers};
pub use traits::{
    Activity, Callable, Composes, Entity, EntityTrait, Method, Payload, Rpc, State, Visibility,
    Workflow, kind,
};
pub use workflow::WorkflowContext;
