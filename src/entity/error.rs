//! [`EntityError`]: why a call to an entity did not produce the handler's
//! answer.

use std::sync::Arc;

use super::traits::Visibility;

/// Why a call to an entity failed. Errors the handler itself returns (an
/// activity's `Err`) are not here: they are part of the handler's output.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EntityError {
    /// No entity type with this name is registered on the node.
    #[error("unknown entity type {0:?}")]
    UnknownEntityType(String),
    /// The entity type has no handler with this name.
    #[error("entity type {entity_type:?} has no handler {handler:?}")]
    UnknownHandler {
        /// The entity type.
        entity_type: String,
        /// The handler asked for.
        handler: String,
    },
    /// The handler exists but clients may not call it.
    #[error("handler {handler:?} of {entity_type:?} is {visibility:?}, not callable by clients")]
    NotCallable {
        /// The entity type.
        entity_type: String,
        /// The handler asked for.
        handler: String,
        /// Its visibility.
        visibility: Visibility,
    },
    /// The entity id or type is not a valid storage key (empty, too long).
    #[error("invalid entity id: {0}")]
    InvalidEntityId(String),
    /// Parameters, a reply, or a stored state could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A value could not be encoded (a `Serialize` impl failed).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encoder's complaint.
        reason: String,
    },
    /// The handler panicked. The entity went on from its last committed
    /// state; nothing of this call was persisted.
    #[error("handler {handler:?} panicked: {message}")]
    HandlerPanicked {
        /// The handler.
        handler: String,
        /// The panic message.
        message: String,
    },
    /// The stored state of this entity cannot be decoded into the current
    /// `State` type; the entity refuses calls rather than overwrite it.
    #[error("the stored state of {entity} cannot be decoded: {reason}")]
    StateUnreadable {
        /// The entity (type/id).
        entity: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The storage backend failed; nothing of this call was acknowledged.
    #[error("storage: {0}")]
    Storage(Arc<shoal_storage::Error>),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A resumed workflow asked for a different step than its journal
    /// recorded: its code changed while an execution was in flight. The
    /// execution stops and stays pending; deploy code that replays the
    /// journal, or remove the execution.
    #[error(
        "workflow execution {execution} diverged from its journal at step {step}: journaled {journaled}, now {requested}"
    )]
    JournalDivergence {
        /// The execution id (hex).
        execution: String,
        /// The step index.
        step: u32,
        /// What the journal recorded at that step.
        journaled: String,
        /// What the code asked for now.
        requested: String,
    },
    /// A persisted message was dead-lettered: every delivery attempt failed,
    /// or it could never succeed. It can be replayed.
    #[error("the message was dead-lettered: {reason}")]
    DeadLettered {
        /// Why.
        reason: String,
    },
    /// The deferred was already resolved; the first resolution stands.
    #[error("deferred {name:?} of {entity} was already resolved; the first resolution stands")]
    DeferredAlreadyResolved {
        /// The entity (type/id).
        entity: String,
        /// The deferred's name.
        name: String,
    },
    /// The entity could not be reached after repeated attempts (it kept
    /// being passivated or restarted under the call).
    #[error("entity {0} unavailable")]
    Unavailable(String),
    /// This node does not own the entity's shard (any more): nothing of the
    /// call was applied. Calls made through a node's clients are retried
    /// on the shard's owner transparently; this surfaces only when the
    /// retries ran out.
    #[error("this node does not own shard {shard}")]
    NotOwner {
        /// The shard.
        shard: u32,
    },
    /// The cluster cannot serve the call now: no shard owner, no leader or
    /// no quorum, or the owner cannot be reached. The call may or may not
    /// have been applied if `outcome_unknown` (a write whose commit was not
    /// confirmed in time); otherwise nothing was applied.
    #[error("the cluster cannot serve this call: {reason}")]
    ClusterUnavailable {
        /// Why.
        reason: String,
        /// Whether a write may have been applied although it was not
        /// acknowledged.
        outcome_unknown: bool,
    },
    /// Another node failed the forwarded call with an error this build
    /// does not map to a variant of its own.
    #[error("node {node}: {message}")]
    Remote {
        /// The node that failed the call.
        node: u64,
        /// Its error message.
        message: String,
    },
}

impl EntityError {
    /// Whether retrying the same call later could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EntityError::Storage(e) => !e.is_fatal(),
            EntityError::Unavailable(_)
            | EntityError::NotOwner { .. }
            | EntityError::ClusterUnavailable { .. } => true,
            _ => false,
        }
    }
}

impl EntityError {
    /// Errors that must not become a workflow execution's recorded result:
    /// the execution stays pending and resumes later instead.
    pub(crate) fn interrupts_workflow(&self) -> bool {
        matches!(
            self,
            EntityError::Storage(_)
                | EntityError::ShuttingDown
                | EntityError::Unavailable(_)
                | EntityError::NotOwner { .. }
                | EntityError::ClusterUnavailable { .. }
                | EntityError::JournalDivergence { .. }
        )
    }
}

impl From<shoal_storage::Error> for EntityError {
    fn from(e: shoal_storage::Error) -> Self {
        EntityError::Storage(Arc::new(e))
    }
}
