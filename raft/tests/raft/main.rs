//! Integration tests of `shoal-raft`: openraft's storage suite against the
//! redb log store and the state machine, then reopen, bad-file and apply
//! behaviour, the Raft network over QUIC, bootstrap, and three-node
//! clusters (`cluster`: the in-process harness). One test binary; a file
//! per topic.

mod t01_suite;
mod t02_log_store;
mod t03_state_machine;
mod t04_single_node;
mod t05_crash;
mod t06_network;
mod t07_bootstrap;
mod t08_cluster;
mod t09_partition;
mod t10_snapshot;
mod t11_large_appends;
mod t12_membership;

mod cluster;

use std::sync::Arc;

use shoal_raft::{LogStore, StateMachine};
use shoal_storage::{MemoryStorage, Storage};
use tempfile::TempDir;

/// Logs to the test output once per binary (`RUST_LOG` filters).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A log store and a state machine over a fresh memory backend, in a temp dir.
pub async fn fresh() -> anyhow::Result<(TempDir, LogStore, StateMachine, Arc<dyn Storage>)> {
    let dir = tempfile::tempdir()?;
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let log = LogStore::open(dir.path().join("raft-log.redb"))?;
    let sm = StateMachine::open(dir.path(), storage.clone()).await?;
    Ok((dir, log, sm, storage))
}
