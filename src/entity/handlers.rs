//! [`Handlers`]: an entity type's table of handlers, and the type-erased
//! calls the runtime dispatches through.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use shoal_storage::EntityKey;

use super::codec::{decode, encode};
use super::context::{ActivityContext, RpcContext};
use super::error::EntityError;
use super::traits::{Activity, Composes, Entity, EntityTrait, Method, Rpc, Visibility, Workflow};
use super::workflow::WorkflowContext;

/// The kind of a registered handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerKind {
    /// Read-only, not journaled.
    Rpc,
    /// Mutating; state and result commit atomically.
    Activity,
    /// Internal read-only helper.
    Method,
    /// Durable orchestration, journaled and replayed.
    Workflow,
}

/// What a handler produced, before the runtime persists anything.
pub(crate) struct Outcome {
    pub(crate) reply: Bytes,
    /// An activity that returned `Ok`: its state change must commit.
    pub(crate) commit: bool,
}

/// A registered handler, callable with encoded parameters.
pub(crate) struct Registered<E: Entity> {
    pub(crate) name: &'static str,
    pub(crate) kind: HandlerKind,
    pub(crate) visibility: Visibility,
    body: Body<E>,
}

enum Body<E: Entity> {
    /// Runs inside the entity's actor.
    Call(Box<dyn ErasedCall<E>>),
    /// Runs as its own task, stepping through the entity's actor.
    Workflow(Box<dyn ErasedWorkflow<E>>),
}

impl<E: Entity> Registered<E> {
    pub(crate) fn call<'a>(
        &'a self,
        entity: &'a E,
        key: &'a EntityKey,
        state: &'a mut E::State,
        params: &'a [u8],
    ) -> BoxFuture<'a, Result<Outcome, EntityError>> {
        match &self.body {
            Body::Call(call) => call.call(entity, key, state, params),
            Body::Workflow(_) => {
                let error = EntityError::UnknownHandler {
                    entity_type: E::NAME.to_owned(),
                    handler: format!("{} (a workflow, not an actor call)", self.name),
                };
                Box::pin(async move { Err(error) })
            }
        }
    }

    /// The handler's own idempotency key for these parameters, if any.
    pub(crate) fn custom_key(&self, params: &[u8]) -> Result<Option<String>, EntityError> {
        match &self.body {
            Body::Call(call) => call.custom_key(params),
            Body::Workflow(workflow) => workflow.custom_key(params),
        }
    }

    pub(crate) fn workflow(&self) -> Option<&dyn ErasedWorkflow<E>> {
        match &self.body {
            Body::Workflow(workflow) => Some(workflow.as_ref()),
            Body::Call(_) => None,
        }
    }
}

/// A registered workflow, callable with encoded parameters.
pub(crate) trait ErasedWorkflow<E: Entity>: Send + Sync {
    /// The handler's own idempotency key for these parameters, if it
    /// defines one.
    fn custom_key(&self, params: &[u8]) -> Result<Option<String>, EntityError>;

    /// Runs (or replays) the body; answers with the encoded
    /// `Result<Output, Error>`.
    fn run<'a>(
        &'a self,
        ctx: &'a mut WorkflowContext<E>,
        params: &'a [u8],
    ) -> BoxFuture<'a, Result<Bytes, EntityError>>;
}

trait ErasedCall<E: Entity>: Send + Sync {
    fn custom_key(&self, _params: &[u8]) -> Result<Option<String>, EntityError> {
        Ok(None)
    }

    fn call<'a>(
        &'a self,
        entity: &'a E,
        key: &'a EntityKey,
        state: &'a mut E::State,
        params: &'a [u8],
    ) -> BoxFuture<'a, Result<Outcome, EntityError>>;
}

/// An entity type's handlers, filled in by [`Entity::handlers`].
pub struct Handlers<E: Entity> {
    table: HashMap<&'static str, Arc<Registered<E>>>,
    duplicates: Vec<&'static str>,
}

impl<E: Entity> Handlers<E> {
    pub(crate) fn collect() -> Self {
        let mut handlers = Handlers {
            table: HashMap::new(),
            duplicates: Vec::new(),
        };
        E::handlers(&mut handlers);
        handlers
    }

    /// Registers a read-only handler.
    pub fn rpc<H: Rpc<E>>(&mut self, handler: H) -> &mut Self {
        self.insert(
            H::NAME,
            HandlerKind::Rpc,
            H::VISIBILITY,
            Body::Call(Box::new(RpcCall(handler))),
        )
    }

    /// Registers a durable workflow.
    pub fn workflow<H: Workflow<E>>(&mut self, handler: H) -> &mut Self {
        self.insert(
            H::NAME,
            HandlerKind::Workflow,
            H::VISIBILITY,
            Body::Workflow(Box::new(WorkflowCall(handler))),
        )
    }

    /// Registers a mutating handler.
    pub fn activity<H: Activity<E>>(&mut self, handler: H) -> &mut Self {
        self.insert(
            H::NAME,
            HandlerKind::Activity,
            H::VISIBILITY,
            Body::Call(Box::new(ActivityCall(handler))),
        )
    }

    /// Composes entity trait `T`: registers its handlers on this type.
    pub fn compose<T: EntityTrait>(&mut self) -> &mut Self
    where
        E: Composes<T>,
    {
        T::handlers(self);
        self
    }

    /// Registers an internal helper. It is never callable by clients; the
    /// registration records its name and visibility for composed traits.
    pub fn method<H: Method<E>>(&mut self, handler: H) -> &mut Self {
        self.insert(
            H::NAME,
            HandlerKind::Method,
            H::VISIBILITY,
            Body::Call(Box::new(MethodCall(handler))),
        )
    }

    fn insert(
        &mut self,
        name: &'static str,
        kind: HandlerKind,
        visibility: Visibility,
        body: Body<E>,
    ) -> &mut Self {
        match self.table.entry(name) {
            Entry::Occupied(_) => self.duplicates.push(name),
            Entry::Vacant(slot) => {
                slot.insert(Arc::new(Registered {
                    name,
                    kind,
                    visibility,
                    body,
                }));
            }
        }
        self
    }

    /// Names registered more than once (a start-up error).
    pub(crate) fn duplicates(&self) -> &[&'static str] {
        &self.duplicates
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Registered<E>>> {
        self.table.get(name)
    }

    /// The registered handlers: name, kind and visibility.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, HandlerKind, Visibility)> + '_ {
        self.table.values().map(|h| (h.name, h.kind, h.visibility))
    }
}

struct RpcCall<H>(H);

impl<E: Entity, H: Rpc<E>> ErasedCall<E> for RpcCall<H> {
    fn call<'a>(
        &'a self,
        entity: &'a E,
        key: &'a EntityKey,
        state: &'a mut E::State,
        params: &'a [u8],
    ) -> BoxFuture<'a, Result<Outcome, EntityError>> {
        Box::pin(async move {
            let params: H::Params = decode(params, "parameters")?;
            let ctx = RpcContext {
                entity,
                key,
                state: &*state,
            };
            let output = self.0.run(&ctx, params).await;
            Ok(Outcome {
                reply: encode(&output, "reply")?,
                commit: false,
            })
        })
    }
}

struct ActivityCall<H>(H);

impl<E: Entity, H: Activity<E>> ErasedCall<E> for ActivityCall<H> {
    fn custom_key(&self, params: &[u8]) -> Result<Option<String>, EntityError> {
        let params: H::Params = decode(params, "parameters")?;
        Ok(self.0.idempotency_key(&params))
    }

    fn call<'a>(
        &'a self,
        entity: &'a E,
        key: &'a EntityKey,
        state: &'a mut E::State,
        params: &'a [u8],
    ) -> BoxFuture<'a, Result<Outcome, EntityError>> {
        Box::pin(async move {
            let params: H::Params = decode(params, "parameters")?;
            let mut ctx = ActivityContext { entity, key, state };
            let result = self.0.run(&mut ctx, params).await;
            Ok(Outcome {
                commit: result.is_ok(),
                reply: encode(&result, "reply")?,
            })
        })
    }
}

/// Methods are dispatched directly ([`RpcContext::method`]); this entry only
/// exists so the table knows the name. Calling it through the table is
/// refused before it gets here, but answer sanely regardless.
struct MethodCall<H>(H);

impl<E: Entity, H: Method<E>> ErasedCall<E> for MethodCall<H> {
    fn call<'a>(
        &'a self,
        _entity: &'a E,
        key: &'a EntityKey,
        _state: &'a mut E::State,
        _params: &'a [u8],
    ) -> BoxFuture<'a, Result<Outcome, EntityError>> {
        let error = EntityError::NotCallable {
            entity_type: key.entity_type().to_owned(),
            handler: H::NAME.to_owned(),
            visibility: H::VISIBILITY,
        };
        Box::pin(async move { Err(error) })
    }
}

struct WorkflowCall<H>(H);

impl<E: Entity, H: Workflow<E>> ErasedWorkflow<E> for WorkflowCall<H> {
    fn custom_key(&self, params: &[u8]) -> Result<Option<String>, EntityError> {
        let params: H::Params = decode(params, "parameters")?;
        Ok(self.0.idempotency_key(&params))
    }

    fn run<'a>(
        &'a self,
        ctx: &'a mut WorkflowContext<E>,
        params: &'a [u8],
    ) -> BoxFuture<'a, Result<Bytes, EntityError>> {
        Box::pin(async move {
            let params: H::Params = decode(params, "parameters")?;
            let result = self.0.run(ctx, params).await;
            encode(&result, "reply")
        })
    }
}
