//! What a handler sees while it runs: the entity's identity, its state, and
//! the registered entity value.

use shoal_storage::EntityKey;

use super::traits::{Composes, Entity, EntityTrait, Method};

/// The context of an [`super::Rpc`] (and of a [`Method`]): read-only state.
pub struct RpcContext<'a, E: Entity> {
    pub(crate) entity: &'a E,
    pub(crate) key: &'a EntityKey,
    pub(crate) state: &'a E::State,
}

impl<'a, E: Entity> RpcContext<'a, E> {
    /// The entity's state.
    pub fn state(&self) -> &E::State {
        self.state
    }

    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        self.key.entity_id()
    }

    /// The value the entity type was registered with.
    pub fn entity(&self) -> &E {
        self.entity
    }

    /// The entity's storage key (its shard, type and id).
    pub fn key(&self) -> &EntityKey {
        self.key
    }

    /// Runs one of this entity's [`Method`]s.
    pub async fn method<M: Method<E>>(&self, method: &M, params: M::Params) -> M::Output {
        method.run(self, params).await
    }

    /// The state of composed entity trait `T`.
    pub fn trait_state<T: EntityTrait>(&self) -> &T::State
    where
        E: Composes<T>,
    {
        E::trait_state(self.state)
    }
}

/// The context of an [`super::Activity`]: the state may be changed; the
/// change commits only if the activity returns `Ok`.
pub struct ActivityContext<'a, E: Entity> {
    pub(crate) entity: &'a E,
    pub(crate) key: &'a EntityKey,
    pub(crate) state: &'a mut E::State,
}

impl<'a, E: Entity> ActivityContext<'a, E> {
    /// The entity's state.
    pub fn state(&self) -> &E::State {
        self.state
    }

    /// The entity's state, to change.
    pub fn state_mut(&mut self) -> &mut E::State {
        self.state
    }

    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        self.key.entity_id()
    }

    /// The value the entity type was registered with.
    pub fn entity(&self) -> &E {
        self.entity
    }

    /// The entity's storage key (its shard, type and id).
    pub fn key(&self) -> &EntityKey {
        self.key
    }

    /// The state of composed entity trait `T`.
    pub fn trait_state<T: EntityTrait>(&self) -> &T::State
    where
        E: Composes<T>,
    {
        E::trait_state(self.state)
    }

    /// The state of composed entity trait `T`, to change; it commits with
    /// the rest of the entity's state.
    pub fn trait_state_mut<T: EntityTrait>(&mut self) -> &mut T::State
    where
        E: Composes<T>,
    {
        E::trait_state_mut(self.state)
    }

    /// Runs one of this entity's [`Method`]s on the current (uncommitted)
    /// state.
    pub async fn method<M: Method<E>>(&self, method: &M, params: M::Params) -> M::Output {
        let ctx = RpcContext {
            entity: self.entity,
            key: self.key,
            state: &*self.state,
        };
        method.run(&ctx, params).await
    }
}
