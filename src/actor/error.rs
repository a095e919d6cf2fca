//! Errors of the actor runtime. Each enum is `#[non_exhaustive]`, so new
//! failure modes can be added without breaking callers.

use super::supervisor::Failure;

/// Why a message could not be delivered or answered.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The mailbox is at capacity ([`crate::actor::Addr::try_send`] only; the
    /// other send methods wait for room).
    #[error("the actor's mailbox is full")]
    MailboxFull,
    /// The actor has stopped and accepts no more messages.
    #[error("the actor's mailbox is closed: the actor has stopped")]
    MailboxClosed,
    /// The deadline given to [`crate::actor::Addr::send_timeout`] passed.
    #[error("timed out waiting for the actor")]
    Timeout,
    /// The handler panicked while handling this message.
    #[error("the actor failed while handling the message: {0}")]
    ActorFailed(Failure),
    /// The message was accepted, but the actor stopped before handling it.
    #[error("the actor stopped before answering")]
    NoReply,
}

impl SendError {
    /// Whether trying again later could succeed (the mailbox was full or the
    /// deadline passed); the other errors mean the actor is gone or failed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::MailboxFull | SendError::Timeout)
    }
}

/// Why a name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another live actor already holds the name.
    #[error("the name {0:?} is already registered")]
    NameTaken(String),
    /// The actor has already stopped.
    #[error("the actor has already stopped")]
    ActorStopped,
}

/// An invalid [`crate::actor::ActorSystemBuilder`] setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A mailbox must hold at least one message.
    #[error("mailbox capacity must be at least 1")]
    ZeroMailboxCapacity,
    /// No tokio runtime was given and none is running on this thread.
    #[error("no tokio runtime: build the actor system inside a runtime or pass a handle")]
    NoRuntime,
}
