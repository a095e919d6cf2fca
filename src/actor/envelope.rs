//! Type-erased mailbox items: a message, its reply channel, and the code that
//! dispatches it to the right `Handler` impl.
//!
//! Invariant: a panic inside a handler is caught here, reported to the caller
//! through its reply channel, and returned to the runner as a [`Failure`]; it
//! never unwinds into the runner.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::context::Context;
use super::supervisor::Failure;
use super::traits::{Actor, Handler, Message, StreamHandler};

/// What a reply channel carries: the handler's result, or its failure.
pub(crate) type Reply<M> = Result<<M as Message>::Result, Failure>;

/// One item in an actor's mailbox.
pub(crate) struct Envelope<A: Actor>(Box<dyn Dispatch<A>>);

impl<A: Actor> Envelope<A> {
    pub(crate) fn message<M>(msg: M, reply: Option<oneshot::Sender<Reply<M>>>) -> Self
    where
        A: Handler<M>,
        M: Message,
    {
        Envelope(Box::new(MessageItem {
            msg,
            reply,
            cancelled: None,
        }))
    }

    /// A timer's message: dropped unhandled if `cancelled` is set by then.
    pub(crate) fn timer<M>(msg: M, cancelled: Arc<AtomicBool>) -> Self
    where
        A: Handler<M>,
        M: Message,
    {
        Envelope(Box::new(MessageItem {
            msg,
            reply: None,
            cancelled: Some(cancelled),
        }))
    }

    pub(crate) fn stream_item<I>(item: I) -> Self
    where
        A: StreamHandler<I>,
        I: Send + 'static,
    {
        Envelope(Box::new(StreamItem(item)))
    }

    pub(crate) fn stream_finished<I>() -> Self
    where
        A: StreamHandler<I>,
        I: Send + 'static,
    {
        Envelope(Box::new(StreamFinished::<I>(PhantomData)))
    }

    /// Runs the handler; `Err` means it panicked (and the caller was told).
    pub(crate) fn dispatch<'a>(
        self,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.0.dispatch(actor, ctx)
    }
}

trait Dispatch<A: Actor>: Send {
    fn dispatch<'a>(
        self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Failure>>;
}

struct MessageItem<M: Message> {
    msg: M,
    reply: Option<oneshot::Sender<Reply<M>>>,
    cancelled: Option<Arc<AtomicBool>>,
}

impl<A, M> Dispatch<A> for MessageItem<M>
where
    A: Handler<M>,
    M: Message,
{
    fn dispatch<'a>(
        self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        let MessageItem {
            msg,
            reply,
            cancelled,
        } = *self;
        Box::pin(async move {
            if cancelled.is_some_and(|c| c.load(Ordering::Acquire)) {
                return Ok(());
            }
            match AssertUnwindSafe(actor.handle(msg, ctx))
                .catch_unwind()
                .await
            {
                Ok(result) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(result));
                    }
                    Ok(())
                }
                Err(panic) => {
                    let failure = Failure::from_panic(panic);
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(failure.clone()));
                    }
                    Err(failure)
                }
            }
        })
    }
}

struct StreamItem<I>(I);

impl<A, I> Dispatch<A> for StreamItem<I>
where
    A: StreamHandler<I>,
    I: Send + 'static,
{
    fn dispatch<'a>(
        self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        let item = self.0;
        Box::pin(async move {
            AssertUnwindSafe(StreamHandler::handle(actor, item, ctx))
                .catch_unwind()
                .await
                .map_err(Failure::from_panic)
        })
    }
}

struct StreamFinished<I>(PhantomData<fn() -> I>);

impl<A, I> Dispatch<A> for StreamFinished<I>
where
    A: StreamHandler<I>,
    I: Send + 'static,
{
    fn dispatch<'a>(
        self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            AssertUnwindSafe(StreamHandler::<I>::finished(actor, ctx))
                .catch_unwind()
                .await
                .map_err(Failure::from_panic)
        })
    }
}
