//! What a user implements: [`Entity`] for the type, and one of [`Rpc`],
//! [`Activity`] or [`Method`] for each handler.
//!
//! Each handler is a small type of its own with an `async fn run`. That is
//! the shape a later `#[entity]` attribute macro generates from methods
//! (`#[rpc] async fn balance(&self)`, `#[activity] async fn deposit(&mut
//! self, amount: i64)`), and it keeps hand-written code typed end to end:
//! `client.call(Deposit, 100)` only compiles with a `Deposit`'s parameters
//! and yields its output type.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{ActivityContext, RpcContext};
use super::handlers::Handlers;
use super::workflow::WorkflowContext;
use crate::shard::ShardGroup;

/// A value that crosses the entity boundary (parameters, outputs, errors):
/// encoded as MessagePack with field names.
pub trait Payload: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Payload for T {}

/// The state of an entity: stored as MessagePack *with field names*, so a
/// field added later with `#[serde(default)]` keeps old data readable.
pub trait State: Serialize + DeserializeOwned + Default + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Default + Send + Sync + 'static> State for T {}

/// An entity type: a stable name, a state, and handlers.
///
/// The value registered with the node (e.g. `node_builder.register(Bank {
/// fees })`) is shared by every activation of the type, so it can hold
/// configuration and clients of other services; per-entity data belongs in
/// [`Entity::State`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use shoal::entity::{Activity, ActivityContext, Entity, Handlers, Rpc, RpcContext, Visibility};
///
/// struct Counter;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Count {
///     value: i64,
/// }
///
/// impl Entity for Counter {
///     const NAME: &'static str = "Counter";
///     type State = Count;
///     fn handlers(h: &mut Handlers<Self>) {
///         h.rpc(Get);
///         h.activity(Add);
///     }
/// }
///
/// struct Get;
/// impl Rpc<Counter> for Get {
///     const NAME: &'static str = "get";
///     type Params = ();
///     type Output = i64;
///     async fn run(&self, ctx: &RpcContext<'_, Counter>, (): ()) -> i64 {
///         ctx.state().value
///     }
/// }
///
/// struct Add;
/// impl Activity<Counter> for Add {
///     const NAME: &'static str = "add";
///     const VISIBILITY: Visibility = Visibility::Public;
///     type Params = i64;
///     type Output = i64;
///     type Error = String;
///     async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, String> {
///         ctx.state_mut().value += by;
///         Ok(ctx.state().value)
///     }
/// }
/// ```
pub trait Entity: Send + Sync + Sized + 'static {
    /// The stable name of the type: part of every stored key and of the
    /// wire protocol, so never rename it once data exists.
    const NAME: &'static str;

    /// The per-entity state, loaded on activation and saved by activities.
    type State: State;

    /// Registers the type's handlers.
    fn handlers(handlers: &mut Handlers<Self>);

    /// The shard group the type's entities are placed in.
    fn shard_group(&self) -> ShardGroup {
        ShardGroup::DEFAULT
    }
}

/// A reusable behaviour — handlers and state of its own — composed into
/// several entity types (e.g. an `Auditable` trait keeping an audit log).
///
/// The trait's state lives inside each composing entity's state (a field,
/// exposed through [`Composes`]), so a trait activity's change commits
/// atomically with the entity like any other. Its handlers are generic over
/// the composing entity (`impl<E: Composes<Auditable>> Activity<E> for
/// Record`), registered with [`Handlers::compose`], and callable through
/// each entity's client. A trait's [`Visibility::Protected`] handlers are
/// callable by the entity and its traits, not by clients.
pub trait EntityTrait: Send + Sync + 'static {
    /// The trait's stable name (for logs and errors).
    const NAME: &'static str;
    /// The trait's own state.
    type State: State;

    /// Registers the trait's handlers on an entity type that composes it.
    fn handlers<E: Composes<Self>>(handlers: &mut Handlers<E>)
    where
        Self: Sized;
}

/// An entity type composing trait `T`: says where `T`'s state lives inside
/// the entity's state (typically a `#[serde(default)]` field, so adding a
/// trait to an entity keeps its old data readable).
pub trait Composes<T: EntityTrait>: Entity {
    /// The trait's state.
    fn trait_state(state: &Self::State) -> &T::State;
    /// The trait's state, to change.
    fn trait_state_mut(state: &mut Self::State) -> &mut T::State;
}

/// Who may call a handler (the seed's visibility rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Visibility {
    /// Callable by clients (the default for rpcs and workflows).
    Public,
    /// Callable within the entity and by traits composed into it.
    Protected,
    /// Callable only within the entity (the default for activities and
    /// methods).
    Private,
}

/// A read-only handler: sees the state, changes nothing, is never
/// journaled, and is callable by clients by default.
pub trait Rpc<E: Entity>: Send + Sync + 'static {
    /// The handler's stable name on the wire.
    const NAME: &'static str;
    /// Who may call it.
    const VISIBILITY: Visibility = Visibility::Public;
    /// What the caller sends.
    type Params: Payload;
    /// What the caller gets back.
    type Output: Payload;

    /// Answers one call.
    fn run(
        &self,
        ctx: &RpcContext<'_, E>,
        params: Self::Params,
    ) -> impl Future<Output = Self::Output> + Send;
}

/// A mutating handler. When it returns `Ok`, the changed state and the
/// result commit atomically before the caller hears back; when it returns
/// `Err` or panics, its changes are discarded and the entity goes on from
/// its last committed state. Private by default (the seed's rule): make it
/// [`Visibility::Public`] to let clients call it directly.
pub trait Activity<E: Entity>: Send + Sync + 'static {
    /// The handler's stable name on the wire.
    const NAME: &'static str;
    /// Who may call it.
    const VISIBILITY: Visibility = Visibility::Private;
    /// What the caller sends.
    type Params: Payload;
    /// The result of a successful run.
    type Output: Payload;
    /// The result of a failed run (its changes are discarded).
    type Error: Payload;

    /// The idempotency key of a client call with `params`, when the handler
    /// has one (e.g. a payment id inside them): calls with the same key run
    /// once and get the stored result. `None` (the default) means every call
    /// runs — an `add(1)` called twice adds twice — unless the caller gives
    /// a key ([`super::EntityClient::call_with_key`], which takes
    /// precedence). Calls from workflows are deduplicated by the journal.
    fn idempotency_key(&self, params: &Self::Params) -> Option<String> {
        let _ = params;
        None
    }

    /// Runs once per call (once per idempotency key when there is one).
    fn run(
        &self,
        ctx: &mut ActivityContext<'_, E>,
        params: Self::Params,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// A durable orchestration: calls activities of its own entity and handlers
/// of other entities through its [`WorkflowContext`], each step journaled
/// before the workflow goes on. After a crash, an unfinished execution
/// resumes by replay: completed steps return their journaled results without
/// running again; the rest run. Public by default.
///
/// An execution is identified by its idempotency key — by default a stable
/// hash of the handler name and the serialized parameters — so calling a
/// workflow again with the same parameters returns the first execution's
/// result (see [`super::EntityClient::call`]).
///
/// The body must be deterministic given its parameters and the results of
/// its steps: replay re-runs it and feeds it the journaled results. A body
/// that asks for a different step than the journal recorded (the code
/// changed in between) fails with [`super::EntityError::JournalDivergence`].
pub trait Workflow<E: Entity>: Send + Sync + 'static {
    /// The handler's stable name on the wire.
    const NAME: &'static str;
    /// Who may call it.
    const VISIBILITY: Visibility = Visibility::Public;
    /// What the caller sends.
    type Params: Payload;
    /// The result of a successful execution.
    type Output: Payload;
    /// The result of a failed execution (also recorded: a repeated call gets
    /// it back).
    type Error: Payload;

    /// The idempotency key of a call with `params`, when the handler has a
    /// better one than the default (a hash of the serialized parameters),
    /// e.g. an order id inside them. A key given per call takes precedence.
    fn idempotency_key(&self, params: &Self::Params) -> Option<String> {
        let _ = params;
        None
    }

    /// Runs (or replays) one execution.
    fn run(
        &self,
        ctx: &mut WorkflowContext<E>,
        params: Self::Params,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// An internal, read-only helper: never callable by clients, invoked from
/// other handlers with [`RpcContext::method`] or [`ActivityContext::method`].
pub trait Method<E: Entity>: Send + Sync + 'static {
    /// The handler's stable name.
    const NAME: &'static str;
    /// Who may call it besides the entity itself.
    const VISIBILITY: Visibility = Visibility::Private;
    /// What the caller passes.
    type Params: Send + 'static;
    /// What it returns.
    type Output: Send + 'static;

    /// Runs the helper.
    fn run(
        &self,
        ctx: &RpcContext<'_, E>,
        params: Self::Params,
    ) -> impl Future<Output = Self::Output> + Send;
}

/// Marker types that tell [`Callable`] impls apart (inferred, never named by
/// callers).
pub mod kind {
    /// [`super::Rpc`] handlers.
    #[derive(Debug)]
    pub struct Rpc;
    /// [`super::Activity`] handlers.
    #[derive(Debug)]
    pub struct Activity;
    /// [`super::Workflow`] handlers.
    #[derive(Debug)]
    pub struct Workflow;
}

/// A handler a client can address: implemented for every [`Rpc`],
/// [`Activity`] and [`Workflow`]; the `K` marker is inferred.
pub trait Callable<E: Entity, K>: Send + Sync + 'static {
    /// The handler's name.
    const NAME: &'static str;
    /// What the caller sends.
    type Params: Payload;
    /// What the caller gets back (`Result<Output, Error>` for activities).
    type Output: Payload;
}

impl<E: Entity, H: Rpc<E>> Callable<E, kind::Rpc> for H {
    const NAME: &'static str = <H as Rpc<E>>::NAME;
    type Params = H::Params;
    type Output = H::Output;
}

impl<E: Entity, H: Activity<E>> Callable<E, kind::Activity> for H {
    const NAME: &'static str = <H as Activity<E>>::NAME;
    type Params = H::Params;
    type Output = Result<H::Output, H::Error>;
}

impl<E: Entity, H: Workflow<E>> Callable<E, kind::Workflow> for H {
    const NAME: &'static str = <H as Workflow<E>>::NAME;
    type Params = H::Params;
    type Output = Result<H::Output, H::Error>;
}
