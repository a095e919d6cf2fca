//! [`Addr`]: the sending side of an actor's mailbox.

use std::fmt;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::control::ControlSender;
use super::envelope::{Envelope, Reply};
use super::error::SendError;
use super::runner::Control;
use super::system::ActorId;
use super::traits::{Actor, Handler, Message};

/// The address of an actor: send it messages, stop it, watch it. Cheap to
/// clone; stays valid across supervised restarts.
///
/// While any `Addr` exists the actor is reachable and is not stopped for
/// lack of senders.
pub struct Addr<A: Actor> {
    pub(crate) mailbox: mpsc::Sender<Envelope<A>>,
    pub(crate) control: ControlSender,
    pub(crate) id: ActorId,
}

impl<A: Actor> Addr<A> {
    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// Sends `msg` and waits for the handler's result. Waits for room when
    /// the mailbox is full.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, SendError>
    where
        A: Handler<M>,
        M: Message,
    {
        let (tx, rx) = oneshot::channel();
        self.mailbox
            .send(Envelope::message(msg, Some(tx)))
            .await
            .map_err(|_| SendError::MailboxClosed)?;
        receive::<M>(rx).await
    }

    /// [`Addr::send`] with a deadline covering both the wait for mailbox room
    /// and the wait for the reply. After a timeout the message may still be
    /// handled.
    pub async fn send_timeout<M>(&self, msg: M, timeout: Duration) -> Result<M::Result, SendError>
    where
        A: Handler<M>,
        M: Message,
    {
        match tokio::time::timeout(timeout, self.send(msg)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout),
        }
    }

    /// Sends `msg` without waiting for it to be handled; waits for room when
    /// the mailbox is full (backpressure).
    pub async fn do_send<M>(&self, msg: M) -> Result<(), SendError>
    where
        A: Handler<M>,
        M: Message,
    {
        self.mailbox
            .send(Envelope::message(msg, None))
            .await
            .map_err(|_| SendError::MailboxClosed)
    }

    /// Sends `msg` without waiting at all: fails with
    /// [`SendError::MailboxFull`] when the mailbox is at capacity. Usable
    /// from synchronous code.
    pub fn try_send<M>(&self, msg: M) -> Result<(), SendError>
    where
        A: Handler<M>,
        M: Message,
    {
        self.mailbox
            .try_send(Envelope::message(msg, None))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::MailboxFull,
                mpsc::error::TrySendError::Closed(_) => SendError::MailboxClosed,
            })
    }

    /// Asks the actor to stop after the message it is handling; messages
    /// still queued are dropped and their senders get
    /// [`SendError::NoReply`].
    pub fn stop(&self) {
        let _ = self.control.send(Control::Stop);
    }

    /// Whether the actor is still running (it may stop right after).
    pub fn is_alive(&self) -> bool {
        !self.control.is_closed()
    }

    /// Waits until the actor has stopped: its `stopped` hook has run and its
    /// mailbox is closed.
    pub async fn stopped(&self) {
        self.control.closed().await;
    }

    /// Messages that can be sent now without waiting.
    pub fn free_capacity(&self) -> usize {
        self.mailbox.capacity()
    }
}

async fn receive<M: Message>(rx: oneshot::Receiver<Reply<M>>) -> Result<M::Result, SendError> {
    match rx.await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(failure)) => Err(SendError::ActorFailed(failure)),
        Err(_) => Err(SendError::NoReply),
    }
}

impl<A: Actor> Clone for Addr<A> {
    fn clone(&self) -> Self {
        Addr {
            mailbox: self.mailbox.clone(),
            control: self.control.clone(),
            id: self.id,
        }
    }
}

impl<A: Actor> PartialEq for Addr<A> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<A: Actor> Eq for Addr<A> {}

impl<A: Actor> std::hash::Hash for Addr<A> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl<A: Actor> fmt::Debug for Addr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Addr")
            .field("actor", &std::any::type_name::<A>())
            .field("id", &self.id)
            .field("alive", &self.is_alive())
            .finish()
    }
}
