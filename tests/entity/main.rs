//! Behaviour tests of the entity runtime and `Node`, one file per topic.
//! Every wait is bounded, so a hang fails instead of stalling.

mod crash;
mod cron;
mod errors;
mod fixtures;
mod lifecycle;
mod messages;
mod singletons;
mod traits;
mod workflows;

use std::future::Future;
use std::time::Duration;

/// Awaits `fut`, failing the test if it takes longer than 20 s.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(20), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
