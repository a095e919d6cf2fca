//! Three nodes, one follower cut off with `NetFaults`: the majority keeps
//! committing, the isolated node commits nothing; healed, it catches up to
//! the same data. Then a node restarts on its directories and catches up
//! by log (no snapshot is ever installed).

use std::time::Duration;

use openraft::rt::watch::WatchReceiver as _;

use shoal_raft::Command;

use crate::cluster::{Cluster, has_item, item_batch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heal_and_restart() -> anyhow::Result<()> {
    crate::init_tracing();
    let mut cluster = Cluster::start(&[1, 2, 3]).await?;
    let leader = cluster.leader(&[]).await?;
    let mut last = 0;
    for k in 0..10 {
        last = cluster.write(k, &[]).await?;
    }
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    cluster.wait_applied(follower, last).await?;

    tracing::info!(
        follower,
        "--- isolate a follower; the majority keeps committing"
    );
    cluster
        .faults
        .isolate(shoal_transport::NodeId::new(follower));
    let applied_before = cluster
        .node(follower)?
        .raft
        .metrics()
        .borrow_watched()
        .last_applied;
    for k in 10..40 {
        last = cluster.write(k, &[follower]).await?;
    }
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != follower).collect();
    for id in &majority {
        cluster.wait_applied(*id, last).await?;
    }

    tracing::info!("--- the isolated node cannot commit");
    let isolated = cluster.node(follower)?;
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        isolated
            .raft
            .client_write(Command::Batch(item_batch(9999, cluster.epoch(follower)?)?)),
    )
    .await;
    assert!(!matches!(attempt, Ok(Ok(_))), "the isolated node committed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        isolated.raft.metrics().borrow_watched().last_applied,
        applied_before
    );
    for k in 10..40 {
        assert!(
            !has_item(&isolated.storage, k).await?,
            "isolated node has item {k}"
        );
    }
    assert!(!has_item(&isolated.storage, 9999).await?);

    tracing::info!("--- heal: it catches up to the same data");
    cluster.faults.heal_all();
    cluster.wait_applied(follower, last).await?;
    cluster.check_items(0..40).await?;
    for id in [1, 2, 3] {
        assert!(!has_item(&cluster.node(id)?.storage, 9999).await?);
    }

    tracing::info!("--- restart a node on its directories: it catches up by log");
    let leader = cluster.leader(&[]).await?;
    let restarted = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    cluster.kill(restarted).await?;
    for k in 40..60 {
        last = cluster.write(k, &[]).await?;
    }
    cluster.restart(restarted).await?;
    cluster.wait_applied(restarted, last).await?;
    let metrics = cluster
        .node(restarted)?
        .raft
        .metrics()
        .borrow_watched()
        .clone();
    assert_eq!(metrics.snapshot, None, "caught up by snapshot, not by log");
    cluster.check_items(0..60).await?;
    cluster.shutdown().await
}
