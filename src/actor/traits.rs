//! The traits a user implements: [`Actor`], [`Message`], [`Handler`] and
//! [`StreamHandler`].
//!
//! Handlers and hooks return `impl Future + Send`, so an implementation can be
//! written as a plain `async fn`; the compiler checks that it is `Send`, which
//! lets the runtime run every actor on a multi-threaded tokio runtime.

use std::future::Future;

use super::context::Context;
use super::supervisor::Failure;

/// A unit of state and behaviour that handles messages one at a time.
///
/// All hooks have empty defaults. A panic in a hook counts as the actor's
/// failure, like a panic in a handler.
pub trait Actor: Sized + Send + 'static {
    /// Runs once before the first message is handled (and again on every fresh
    /// instance after a supervised restart).
    fn started(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Runs once when the actor stops for good: after [`Context::stop`], a
    /// stop request, or a failure that is not restarted. Children have already
    /// stopped and timers and streams are cancelled. Not called on an
    /// instance that is replaced by a supervised restart.
    fn stopped(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Runs on the fresh instance created by a supervised restart, before
    /// [`Actor::started`]; `failure` is what ended the previous instance.
    fn restarted(
        &mut self,
        failure: &Failure,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (failure, ctx);
        async {}
    }
}

/// A value sent to an actor, with the type of its reply.
pub trait Message: Send + 'static {
    /// What the handler answers with (`()` for fire-and-forget messages).
    type Result: Send + 'static;
}

/// An actor's behaviour for one message type.
///
/// ```
/// use shoal::actor::{Actor, Context, Handler, Message};
///
/// struct Echo;
/// impl Actor for Echo {}
///
/// struct Say(String);
/// impl Message for Say {
///     type Result = String;
/// }
///
/// impl Handler<Say> for Echo {
///     async fn handle(&mut self, msg: Say, _ctx: &mut Context<Self>) -> String {
///         msg.0
///     }
/// }
/// ```
pub trait Handler<M: Message>: Actor {
    /// Handles one message. The actor handles nothing else until the returned
    /// future completes, so awaiting I/O here pauses only this actor.
    fn handle(&mut self, msg: M, ctx: &mut Context<Self>)
    -> impl Future<Output = M::Result> + Send;
}

/// An actor's behaviour for the items of a stream attached with
/// [`Context::add_stream`].
///
/// Items pass through the actor's mailbox, so a slow actor slows the stream
/// down instead of buffering without bound.
pub trait StreamHandler<I: Send + 'static>: Actor {
    /// Handles one item of the stream.
    fn handle(&mut self, item: I, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send;

    /// Runs once when the stream has ended (not when it was cancelled or the
    /// actor stopped first).
    fn finished(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}
