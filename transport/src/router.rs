//! Server-side dispatch: a [`Router`] maps each message [`Kind`] to one
//! user handler, unary, one-way or streaming.
//!
//! Invariant: a kind has exactly one handler of exactly one shape; a
//! request whose kind is missing, or registered with another shape, is
//! answered with an `UnknownKind` failure (never a panic, never silence on
//! a stream that expects an answer).
//! This module knows nothing about QUIC; `server` drives it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};

use crate::error::{ErrorCode, RemoteError};
use crate::id::{Kind, Peer};

/// An incoming message as a handler sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// Who sent it, from its verified certificate.
    pub peer: Peer,
    /// The sender's UDP address.
    pub remote_addr: SocketAddr,
    /// Route discriminator.
    pub kind: Kind,
    /// Opaque payload.
    pub payload: Bytes,
}

/// The items of a streamed reply.
pub type ReplyItems = BoxStream<'static, Result<Bytes, RemoteError>>;

type UnaryFn = dyn Fn(Request) -> BoxFuture<'static, Result<Bytes, RemoteError>> + Send + Sync;
type OneWayFn = dyn Fn(Request) -> BoxFuture<'static, ()> + Send + Sync;
type StreamFn =
    dyn Fn(Request) -> BoxFuture<'static, Result<ReplyItems, RemoteError>> + Send + Sync;

/// The shape of a request, as announced by its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Unary,
    OneWay,
    Streaming,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Unary => "unary",
            Shape::OneWay => "one-way",
            Shape::Streaming => "streaming",
        })
    }
}

enum Route {
    Unary(Box<UnaryFn>),
    OneWay(Box<OneWayFn>),
    Streaming(Box<StreamFn>),
}

impl Route {
    fn shape(&self) -> Shape {
        match self {
            Route::Unary(_) => Shape::Unary,
            Route::OneWay(_) => Shape::OneWay,
            Route::Streaming(_) => Shape::Streaming,
        }
    }
}

/// Handlers by message kind, given to `EndpointBuilder::router`.
///
/// Each handler runs in its own task per request; a panic in a handler
/// becomes an `Internal` failure for that request only.
///
/// ```
/// use bytes::Bytes;
/// use futures::stream;
/// use shoal_transport::{Kind, RemoteError, Router};
///
/// const ECHO: Kind = Kind(1);
/// const LOG: Kind = Kind(2);
/// const COUNT: Kind = Kind(3);
///
/// let router = Router::new()
///     .unary(ECHO, |req| async move { Ok::<_, RemoteError>(req.payload) })
///     .one_way(LOG, |req| async move { tracing::info!(len = req.payload.len(), "log") })
///     .streaming(COUNT, |_req| async move {
///         let items = (0..3u8).map(|i| Ok(Bytes::from(vec![i])));
///         Ok::<_, RemoteError>(stream::iter(items))
///     });
/// assert_eq!(router.len(), 3);
/// ```
#[derive(Default)]
pub struct Router {
    routes: HashMap<Kind, Route>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a request/reply handler for `kind`.
    ///
    /// # Panics
    /// If `kind` already has a handler (a programming error).
    pub fn unary<F, Fut>(self, kind: Kind, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.insert(
            kind,
            Route::Unary(Box::new(move |request| handler(request).boxed())),
        )
    }

    /// Registers a one-way handler for `kind`; nothing is answered.
    ///
    /// # Panics
    /// If `kind` already has a handler.
    pub fn one_way<F, Fut>(self, kind: Kind, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.insert(
            kind,
            Route::OneWay(Box::new(move |request| handler(request).boxed())),
        )
    }

    /// Registers a streaming handler for `kind`: it resolves to a stream of
    /// items (or fails before the first). Items are sent as the stream yields
    /// them, paced by QUIC flow control; an `Err` item ends the reply with
    /// that failure.
    ///
    /// # Panics
    /// If `kind` already has a handler.
    pub fn streaming<F, Fut, S>(self, kind: Kind, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, RemoteError>> + Send + 'static,
        S: Stream<Item = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.insert(
            kind,
            Route::Streaming(Box::new(move |request| {
                handler(request).map(|r| r.map(StreamExt::boxed)).boxed()
            })),
        )
    }

    /// Number of registered kinds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no kind is registered.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn insert(mut self, kind: Kind, route: Route) -> Self {
        let previous = self.routes.insert(kind, route);
        assert!(previous.is_none(), "{kind} registered twice");
        self
    }

    fn route(&self, kind: Kind, shape: Shape) -> Result<&Route, RemoteError> {
        match self.routes.get(&kind) {
            Some(route) if route.shape() == shape => Ok(route),
            Some(route) => Err(RemoteError::new(
                ErrorCode::UnknownKind,
                format!("{kind} has a {} handler, not {shape}", route.shape()),
            )),
            None => Err(RemoteError::new(
                ErrorCode::UnknownKind,
                format!("no handler for {kind}"),
            )),
        }
    }

    /// Runs the unary handler of `request.kind`.
    pub(crate) fn call_unary(
        &self,
        request: Request,
    ) -> BoxFuture<'static, Result<Bytes, RemoteError>> {
        match self.route(request.kind, Shape::Unary) {
            Ok(Route::Unary(handler)) => invoke(|| handler(request)),
            Ok(_) => unreachable!("route() checked the shape"),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }

    /// Runs the one-way handler of `request.kind`.
    pub(crate) fn call_one_way(
        &self,
        request: Request,
    ) -> Result<BoxFuture<'static, ()>, RemoteError> {
        match self.route(request.kind, Shape::OneWay)? {
            Route::OneWay(handler) => {
                let started =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(request)));
                let future = match started {
                    Ok(future) => future,
                    Err(_) => return Err(panicked()),
                };
                Ok(std::panic::AssertUnwindSafe(future)
                    .catch_unwind()
                    .map(|outcome| {
                        if outcome.is_err() {
                            tracing::warn!("one-way handler panicked");
                        }
                    })
                    .boxed())
            }
            _ => unreachable!("route() checked the shape"),
        }
    }

    /// Runs the streaming handler of `request.kind`.
    pub(crate) fn call_streaming(
        &self,
        request: Request,
    ) -> BoxFuture<'static, Result<ReplyItems, RemoteError>> {
        match self.route(request.kind, Shape::Streaming) {
            Ok(Route::Streaming(handler)) => invoke(|| handler(request)),
            Ok(_) => unreachable!("route() checked the shape"),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<_> = self
            .routes
            .iter()
            .map(|(kind, route)| (kind.0, route.shape()))
            .collect();
        kinds.sort_by_key(|(kind, _)| *kind);
        f.debug_struct("Router").field("kinds", &kinds).finish()
    }
}

fn panicked() -> RemoteError {
    RemoteError::new(ErrorCode::Internal, "handler panicked")
}

/// Starts a handler and turns a panic, when called or while running, into
/// an `Internal` failure for this request only.
fn invoke<T: Send + 'static>(
    start: impl FnOnce() -> BoxFuture<'static, Result<T, RemoteError>>,
) -> BoxFuture<'static, Result<T, RemoteError>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(start)) {
        Ok(future) => std::panic::AssertUnwindSafe(future)
            .catch_unwind()
            .map(|outcome| outcome.unwrap_or_else(|_| Err(panicked())))
            .boxed(),
        Err(_) => futures::future::ready(Err(panicked())).boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: u32) -> Request {
        Request {
            peer: Peer::Client("t".into()),
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            kind: Kind(kind),
            payload: Bytes::from_static(b"x"),
        }
    }

    fn block<T>(future: BoxFuture<'static, T>) -> T {
        futures::executor::block_on(future)
    }

    #[test]
    fn dispatches_by_kind_and_shape() {
        let router = Router::new()
            .unary(Kind(1), |r| async move { Ok(r.payload) })
            .one_way(Kind(2), |_| async {})
            .streaming(Kind(3), |_| async {
                Ok(futures::stream::iter([Ok(Bytes::from_static(b"a"))]))
            });
        assert_eq!(
            block(router.call_unary(request(1))),
            Ok(Bytes::from_static(b"x"))
        );
        assert!(router.call_one_way(request(2)).is_ok());
        let items = block(router.call_streaming(request(3))).unwrap();
        assert_eq!(block(items.collect::<Vec<_>>().boxed()).len(), 1);

        let wrong_shape = block(router.call_unary(request(2))).unwrap_err();
        assert_eq!(wrong_shape.code, ErrorCode::UnknownKind);
        let missing = block(router.call_unary(request(9))).unwrap_err();
        assert_eq!(missing.code, ErrorCode::UnknownKind);
        assert!(router.call_one_way(request(1)).is_err());
    }

    #[test]
    fn handler_panic_is_an_internal_failure() {
        let router = Router::new().unary(Kind(1), |_| async { panic!("boom") });
        let failure = block(router.call_unary(request(1))).unwrap_err();
        assert_eq!(failure.code, ErrorCode::Internal);
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_kind_panics() {
        let _ = Router::new()
            .one_way(Kind(1), |_| async {})
            .one_way(Kind(1), |_| async {});
    }
}
