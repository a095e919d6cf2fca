//! [`EntityClient`]: a typed handle on one entity.

use std::marker::PhantomData;
use std::sync::Arc;

use std::time::SystemTime;

use shoal_storage::{DeferredValue, EntityKey, RequestId, ShardId, Timestamp};

use super::codec::{decode, encode};
use super::error::EntityError;
use super::runtime::{Caller, EntityType, timestamp};
use super::traits::{Callable, Entity, Payload};

/// A typed handle on one entity, from [`crate::Node::client`]. Cheap to
/// clone. Calls activate the entity on demand; they wait when its mailbox
/// is full (backpressure).
pub struct EntityClient<E: Entity> {
    target: Result<(Arc<EntityType<E>>, EntityKey), EntityError>,
    _entity: PhantomData<fn() -> E>,
}

impl<E: Entity> EntityClient<E> {
    pub(crate) fn new(ty: Result<Arc<EntityType<E>>, EntityError>, id: &str) -> Self {
        let target = ty.and_then(|ty| {
            let key = ty.key(id)?;
            Ok((ty, key))
        });
        EntityClient {
            target,
            _entity: PhantomData,
        }
    }

    /// The entity's storage key (shard, type, id), if the type is registered
    /// and the id valid.
    pub fn key(&self) -> Option<&EntityKey> {
        self.target.as_ref().ok().map(|(_, key)| key)
    }

    /// Calls `handler` with `params`. An activity's or workflow's output is
    /// its `Result<Output, Error>`, so `call(Deposit, 10).await??` reads both
    /// layers. A workflow called without a key is identified by its
    /// parameters ([`default_request_id`]): calling it again with the same
    /// parameters returns the first execution's result.
    pub async fn call<H, K>(&self, handler: H, params: H::Params) -> Result<H::Output, EntityError>
    where
        H: Callable<E, K>,
    {
        let _ = handler;
        self.call_inner::<H, K>(params, None).await
    }

    /// Calls `handler` with an idempotency key: the first call with this key
    /// runs the activity and stores its result; every later call with the
    /// same key (also after a restart) returns the stored result without
    /// running it again. Keys are per entity. Only activities are
    /// deduplicated; an rpc ignores the key.
    ///
    /// The stored request id is XXH3-128 over the length-prefixed entity
    /// type, entity id, handler name and key (see
    /// [`idempotency_request_id`]). For a workflow, the key names the
    /// execution: the same key joins or returns the same execution.
    pub async fn call_with_key<H, K>(
        &self,
        handler: H,
        params: H::Params,
        key: &str,
    ) -> Result<H::Output, EntityError>
    where
        H: Callable<E, K>,
    {
        let _ = handler;
        let (_, entity) = self.target.as_ref().map_err(Clone::clone)?;
        let request = idempotency_request_id(entity, H::NAME, key);
        self.call_inner::<H, K>(params, Some(request)).await
    }

    /// Resolves deferred `name` of this entity with `value` (or a failure
    /// message), waking any workflow waiting on it. The first resolution
    /// wins: a later one gets [`EntityError::DeferredAlreadyResolved`].
    pub async fn resolve_deferred<T: Payload>(
        &self,
        name: &str,
        value: Result<T, String>,
    ) -> Result<(), EntityError> {
        let (ty, key) = self.target.as_ref().map_err(Clone::clone)?;
        let value = match value {
            Ok(value) => DeferredValue::Success(encode(&value, "deferred value")?),
            Err(failure) => DeferredValue::Failure(failure),
        };
        ty.resolve_deferred(key, name, value).await
    }

    /// Sends `handler` as a persisted message: durable when this returns,
    /// delivered at least once (retried with backoff, dead-lettered after
    /// `storage_message_max_retries` attempts), its effect applied exactly
    /// once. The request id, by default derived from the handler and the
    /// parameters like a workflow's, deduplicates repeated sends.
    pub async fn send_persisted<H, K>(
        &self,
        handler: H,
        params: H::Params,
    ) -> Result<PersistedSend, EntityError>
    where
        H: Callable<E, K>,
    {
        self.send_persisted_inner::<H, K>(handler, params, None, None)
            .await
    }

    /// [`EntityClient::send_persisted`] with an idempotency key.
    pub async fn send_persisted_with_key<H, K>(
        &self,
        handler: H,
        params: H::Params,
        key: &str,
    ) -> Result<PersistedSend, EntityError>
    where
        H: Callable<E, K>,
    {
        self.send_persisted_inner::<H, K>(handler, params, Some(key), None)
            .await
    }

    /// Schedules `handler` for delivery at `at` (at once if `at` has
    /// passed), as a persisted message: it survives restarts and is delivered
    /// when due.
    pub async fn send_persisted_at<H, K>(
        &self,
        handler: H,
        params: H::Params,
        key: Option<&str>,
        at: SystemTime,
    ) -> Result<PersistedSend, EntityError>
    where
        H: Callable<E, K>,
    {
        self.send_persisted_inner::<H, K>(handler, params, key, Some(timestamp(at)))
            .await
    }

    async fn send_persisted_inner<H, K>(
        &self,
        handler: H,
        params: H::Params,
        key: Option<&str>,
        at: Option<Timestamp>,
    ) -> Result<PersistedSend, EntityError>
    where
        H: Callable<E, K>,
    {
        let _ = handler;
        self.send_persisted_typed::<H, K>(params, key, at).await
    }

    /// A persisted send named by the handler's type alone.
    pub(crate) async fn send_persisted_typed<H, K>(
        &self,
        params: H::Params,
        key: Option<&str>,
        at: Option<Timestamp>,
    ) -> Result<PersistedSend, EntityError>
    where
        H: Callable<E, K>,
    {
        let (ty, entity) = self.target.as_ref().map_err(Clone::clone)?;
        let request = key.map(|key| idempotency_request_id(entity, H::NAME, key));
        let params = encode(&params, "parameters")?;
        ty.send_persisted(entity, H::NAME, params, request, at)
            .await
    }

    /// Waits for the outcome of a persisted message sent to this entity:
    /// the handler's output, or [`EntityError::DeadLettered`]. Wrap it in a
    /// timeout to bound the wait.
    pub async fn persisted_reply<H, K>(
        &self,
        handler: H,
        send: &PersistedSend,
    ) -> Result<H::Output, EntityError>
    where
        H: Callable<E, K>,
    {
        let _ = handler;
        let (ty, key) = self.target.as_ref().map_err(Clone::clone)?;
        let reply = ty.persisted_outcome(key, send).await?;
        decode(&reply, "reply")
    }

    async fn call_inner<H, K>(
        &self,
        params: H::Params,
        request: Option<RequestId>,
    ) -> Result<H::Output, EntityError>
    where
        H: Callable<E, K>,
    {
        let (ty, key) = self.target.as_ref().map_err(Clone::clone)?;
        let params = encode(&params, "parameters")?;
        let reply = ty
            .invoke(key, H::NAME, params, request, Caller::Client)
            .await?;
        decode(&reply, "reply")
    }
}

impl<E: Entity> Clone for EntityClient<E> {
    fn clone(&self) -> Self {
        EntityClient {
            target: self.target.clone(),
            _entity: PhantomData,
        }
    }
}

impl<E: Entity> std::fmt::Debug for EntityClient<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityClient")
            .field("entity_type", &E::NAME)
            .field("key", &self.key())
            .finish()
    }
}

/// A persisted message that was recorded: what to wait on for its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistedSend {
    request: RequestId,
    shard: ShardId,
}

impl PersistedSend {
    pub(crate) fn new(request: RequestId, shard: ShardId) -> Self {
        PersistedSend { request, shard }
    }

    /// The message's request id.
    pub fn request_id(&self) -> RequestId {
        self.request
    }

    /// The shard it is stored in (its target's).
    pub fn shard(&self) -> ShardId {
        self.shard
    }
}

/// Where a request id comes from: a key given by the caller, or the
/// serialized parameters (the default for workflows).
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeySource<'a> {
    Key(&'a str),
    Params(&'a [u8]),
}

/// The request id of a call: XXH3-128 (seed 0) over, in order, the entity
/// type, the entity id, the handler name, a tag (`k` for a caller's key, `p`
/// for serialized parameters) and the key or parameter bytes, each as a
/// little-endian u32 byte length followed by the bytes.
pub(crate) fn request_id(entity: &EntityKey, handler: &str, source: KeySource<'_>) -> RequestId {
    let (tag, body): (&[u8], &[u8]) = match source {
        KeySource::Key(key) => (b"k", key.as_bytes()),
        KeySource::Params(params) => (b"p", params),
    };
    let parts: [&[u8]; 5] = [
        entity.entity_type().as_bytes(),
        entity.entity_id().as_bytes(),
        handler.as_bytes(),
        tag,
        body,
    ];
    let mut bytes = Vec::with_capacity(20 + parts.iter().map(|p| p.len()).sum::<usize>());
    for part in parts {
        // Parts are bounded far below 4 GiB by the storage and payload
        // limits; saturate rather than wrap regardless.
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(part);
    }
    RequestId::new(xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// The request id under which a call with idempotency key `key` stores its
/// result. Keys are per entity and per handler.
///
/// The derivation is stable across platforms and releases (pinned by golden
/// vectors): XXH3-128 (seed 0) over, in order, the entity type, the entity
/// id, the handler name, a tag (`k` for a caller's key, `p` for serialized
/// parameters — see [`default_request_id`]) and the key or parameter bytes,
/// each as a little-endian u32 byte length followed by the bytes.
pub fn idempotency_request_id(entity: &EntityKey, handler: &str, key: &str) -> RequestId {
    request_id(entity, handler, KeySource::Key(key))
}

/// The request id of a workflow call without a key: derived from the
/// handler name and the serialized (MessagePack, named) parameters (tag
/// `p`), so the same call twice is one execution.
pub fn default_request_id(entity: &EntityKey, handler: &str, params: &[u8]) -> RequestId {
    request_id(entity, handler, KeySource::Params(params))
}

#[cfg(test)]
mod tests {
    use shoal_storage::ShardId;

    use super::*;

    #[test]
    fn default_ids_hash_the_parameters() {
        let alice = EntityKey::new(ShardId::new(1712), "Account", "alice").unwrap();
        // ("bob", 30) in MessagePack: fixarray(2), fixstr "bob", 30.
        let params = [0x92, 0xa3, b'b', b'o', b'b', 0x1e];
        let id = default_request_id(&alice, "transfer", &params);
        assert_eq!(id.get(), GOLDEN_TRANSFER, "{:#x}", id.get());
        // A caller's key equal to the parameter bytes is a different id.
        assert_ne!(
            idempotency_request_id(&alice, "transfer", "bob"),
            default_request_id(&alice, "transfer", b"bob")
        );
    }

    #[test]
    fn idempotency_ids_are_pinned_and_unambiguous() {
        let alice = EntityKey::new(ShardId::new(1712), "Account", "alice").unwrap();
        let id = idempotency_request_id(&alice, "deposit", "dep-1");
        assert_eq!(id.get(), GOLDEN_DEP_1, "{:#x}", id.get());
        // Moving bytes between parts changes the id (length prefixes).
        let other = EntityKey::new(ShardId::new(1712), "Account", "alic").unwrap();
        assert_ne!(idempotency_request_id(&other, "edeposit", "dep-1"), id);
        assert_ne!(idempotency_request_id(&alice, "deposit", "dep-2"), id);
        assert_ne!(idempotency_request_id(&alice, "withdraw", "dep-1"), id);
        // The shard is not part of the id: it already scopes the reply.
        let elsewhere = EntityKey::new(ShardId::new(3), "Account", "alice").unwrap();
        assert_eq!(idempotency_request_id(&elsewhere, "deposit", "dep-1"), id);
    }

    /// XXH3-128 of the encodings above, from the independent Python `xxhash`
    /// package; never edit.
    const GOLDEN_DEP_1: u128 = 0xdbd0ac05bc1082f46f264c0aaab3fd2f;
    const GOLDEN_TRANSFER: u128 = 0xfb3a68a6498537a5009f00977c6c207e;
}
