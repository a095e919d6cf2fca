//! Behaviour tests of the actor runtime (`shoal::actor`), one file per topic.
//! Every wait is bounded by [`within`], so a hang fails instead of stalling.

mod lifecycle;
mod mailbox;
mod registry;
mod streams;
mod supervision;
mod timers;

use std::future::Future;
use std::time::Duration;

/// Awaits `fut`, failing the test if it takes longer than 10 s.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` every millisecond until it holds, for at most 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}
