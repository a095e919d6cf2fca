//! Singletons: one instance per name, restarted on panic under a policy,
//! stopped gracefully at shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use shoal::actor::SupervisorStrategy;
use shoal::{Node, NodeError};

use crate::fixtures::{Add, Counter, Get};
use crate::within;

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_singleton_runs_calls_entities_and_stops_gracefully_at_shutdown() {
    let stopped_cleanly = Arc::new(AtomicBool::new(false));
    let flag = stopped_cleanly.clone();
    let node = Node::builder()
        .register(Counter::new())
        .singleton("ticker", move |ctx| {
            let flag = flag.clone();
            async move {
                let counter = ctx.node().client::<Counter>("ticks");
                while !ctx.is_cancelled() {
                    let _ = counter.call(Add, 1).await;
                    tokio::select! {
                        () = ctx.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                flag.store(true, Ordering::SeqCst);
            }
        })
        .start()
        .await
        .unwrap();
    assert!(node.singleton_running("ticker"));
    let ticks = node.client::<Counter>("ticks");
    within("ticks", async {
        while ticks.call(Get, ()).await.unwrap() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    within("shutdown", node.shutdown()).await.unwrap();
    assert!(
        stopped_cleanly.load(Ordering::SeqCst),
        "the singleton saw the cancellation and returned"
    );
    assert!(!node.singleton_running("ticker"));
}

#[tokio::test]
async fn a_panicking_singleton_is_restarted_until_the_policy_gives_up() {
    let node = Node::builder().start().await.unwrap();

    tracing::info!("--- fails twice, then runs");
    let runs = Arc::new(AtomicUsize::new(0));
    let restarts_seen = Arc::new(AtomicUsize::new(0));
    let (r, seen) = (runs.clone(), restarts_seen.clone());
    shoal::singleton("flaky")
        .restart_delay(Duration::from_millis(1))
        .register(&node, move |ctx| {
            let (r, seen) = (r.clone(), seen.clone());
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("not yet");
                }
                seen.store(ctx.restarts() as usize, Ordering::SeqCst);
                ctx.cancelled().await;
            }
        })
        .await
        .unwrap();
    eventually("third run", || runs.load(Ordering::SeqCst) == 3).await;
    eventually("restart count", || {
        restarts_seen.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(node.singleton_running("flaky"));

    tracing::info!("--- always fails: stopped after max_restarts");
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    shoal::singleton("doomed")
        .strategy(SupervisorStrategy::restart(2, Duration::from_secs(60)))
        .restart_delay(Duration::from_millis(1))
        .register(&node, move |_ctx| {
            let t = t.clone();
            async move {
                t.fetch_add(1, Ordering::SeqCst);
                panic!("always");
            }
        })
        .await
        .unwrap();
    eventually("given up", || !node.singleton_running("doomed")).await;
    assert_eq!(
        tries.load(Ordering::SeqCst),
        3,
        "the first run and two restarts"
    );

    tracing::info!("--- one instance per name; the direct function works too");
    let err = shoal::register_singleton(&node, "flaky", |ctx| async move { ctx.cancelled().await })
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::DuplicateSingleton(ref n) if n == "flaky"),
        "{err}"
    );
    shoal::register_singleton(&node, "other", |ctx| async move { ctx.cancelled().await })
        .await
        .unwrap();
    assert!(node.singleton_running("other"));
    within("shutdown", node.shutdown()).await.unwrap();
    let err = shoal::register_singleton(&node, "late", |_ctx| async {})
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::ShuttingDown), "{err}");
}
