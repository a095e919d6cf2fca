//! Singletons: named, long-running tasks with exactly one running instance
//! — per node today, per cluster once clustering lands — restarted under a
//! supervision policy when they panic and stopped gracefully through a
//! cancellation signal.
//!
//! Register one on the builder ([`crate::NodeBuilder::singleton`]), with the
//! builder form ([`singleton`]`("name").strategy(…).register(&node, f)`), or
//! with the direct function ([`register_singleton`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! let node = shoal::Node::builder().start().await?;
//! shoal::register_singleton(&node, "janitor", |ctx| async move {
//!     while !ctx.is_cancelled() {
//!         // … periodic work, calling entities through `ctx.node()` …
//!         tokio::select! {
//!             () = ctx.cancelled() => break,
//!             () = tokio::time::sleep(Duration::from_secs(60)) => {}
//!         }
//!     }
//! })
//! .await?;
//! node.shutdown().await?; // signals `cancelled()` and waits for the janitor
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::actor::supervisor::{Decision, Supervision};
use crate::actor::{Failure, SupervisorStrategy};
use crate::{Node, NodeError};

/// The default supervision of a singleton: up to 10 restarts a minute.
pub const DEFAULT_SINGLETON_STRATEGY: SupervisorStrategy = SupervisorStrategy::Restart {
    max_restarts: 10,
    within: Duration::from_secs(60),
};

/// The default pause before a failed singleton is restarted.
pub const DEFAULT_SINGLETON_RESTART_DELAY: Duration = Duration::from_millis(100);

type Body = Arc<dyn Fn(SingletonContext) -> BoxFuture<'static, ()> + Send + Sync>;

/// A singleton, ready to register.
#[derive(Clone)]
pub struct Singleton {
    pub(crate) name: Arc<str>,
    /// In a cluster, it runs on the owner of the shard this key hashes to
    /// (its name, unless set).
    pub(crate) placement: Arc<str>,
    body: Body,
    strategy: SupervisorStrategy,
    restart_delay: Duration,
}

impl fmt::Debug for Singleton {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Singleton")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("restart_delay", &self.restart_delay)
            .finish()
    }
}

/// Builds a [`Singleton`]; start with [`singleton`].
#[derive(Debug, Clone)]
pub struct SingletonBuilder {
    name: Arc<str>,
    strategy: SupervisorStrategy,
    restart_delay: Duration,
}

/// Starts building a singleton called `name`.
pub fn singleton(name: impl Into<String>) -> SingletonBuilder {
    SingletonBuilder {
        name: name.into().into(),
        strategy: DEFAULT_SINGLETON_STRATEGY,
        restart_delay: DEFAULT_SINGLETON_RESTART_DELAY,
    }
}

impl SingletonBuilder {
    /// What to do when it panics (default [`DEFAULT_SINGLETON_STRATEGY`];
    /// `Escalate` acts as `Stop`).
    pub fn strategy(mut self, strategy: SupervisorStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The pause before a restart (default 100 ms).
    pub fn restart_delay(mut self, delay: Duration) -> Self {
        self.restart_delay = delay;
        self
    }

    /// The singleton running `body`, which is called again for every
    /// restart.
    pub fn build<F, Fut>(self, body: F) -> Singleton
    where
        F: Fn(SingletonContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Singleton {
            placement: self.name.clone(),
            name: self.name,
            body: Arc::new(move |ctx| body(ctx).boxed()),
            strategy: self.strategy,
            restart_delay: self.restart_delay,
        }
    }

    /// Builds it and starts it on `node`.
    pub async fn register<F, Fut>(self, node: &Node, body: F) -> Result<(), NodeError>
    where
        F: Fn(SingletonContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        node.start_singleton(self.build(body))
    }
}

/// Starts a singleton called `name` on `node`, with the default supervision.
pub async fn register_singleton<F, Fut>(
    node: &Node,
    name: impl Into<String>,
    body: F,
) -> Result<(), NodeError>
where
    F: Fn(SingletonContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    singleton(name).register(node, body).await
}

/// What a running singleton sees.
#[derive(Clone)]
pub struct SingletonContext {
    name: Arc<str>,
    node: Node,
    cancel: watch::Receiver<bool>,
    restarts: u32,
}

impl SingletonContext {
    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node it runs on, to call entities.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// How often it was restarted after a failure.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Whether it has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves once it has been asked to stop (node shutdown): finish up
    /// and return.
    pub async fn cancelled(&self) {
        let mut cancel = self.cancel.clone();
        // An error means the sender is gone, which also means stop.
        let _ = cancel.wait_for(|stop| *stop).await;
    }
}

impl fmt::Debug for SingletonContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingletonContext")
            .field("name", &self.name)
            .field("restarts", &self.restarts)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Runs `singleton` until it returns, is cancelled, or fails for good.
pub(crate) async fn supervise(singleton: Singleton, node: Node, cancel: watch::Receiver<bool>) {
    let strategy = match singleton.strategy {
        SupervisorStrategy::Restart { .. } => singleton.strategy,
        _ => SupervisorStrategy::Stop,
    };
    let mut supervision = Supervision::new(strategy, true);
    let mut restarts = 0;
    loop {
        let ctx = SingletonContext {
            name: singleton.name.clone(),
            node: node.clone(),
            cancel: cancel.clone(),
            restarts,
        };
        let run = AssertUnwindSafe((singleton.body)(ctx)).catch_unwind().await;
        let Err(panic) = run else {
            tracing::info!(singleton = %singleton.name, "singleton finished");
            return;
        };
        let failure = Failure::from_panic(panic);
        if *cancel.borrow() {
            return;
        }
        match supervision.on_failure(Instant::now()) {
            Decision::Restart => {
                restarts += 1;
                tracing::warn!(singleton = %singleton.name, %failure, restarts, "singleton failed; restarting");
                let mut stop = cancel.clone();
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(singleton.restart_delay) => {}
                }
            }
            Decision::Stop | Decision::Escalate => {
                tracing::error!(singleton = %singleton.name, %failure, restarts, "singleton failed too often; stopped");
                return;
            }
        }
    }
}
