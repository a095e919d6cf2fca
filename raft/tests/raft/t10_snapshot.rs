//! A snapshot replicated over the network: the leader builds a snapshot,
//! purges its log, and a new learner can then only be caught up by
//! snapshot — sent as chunked requests and installed through
//! `RaftService` — after which it follows by log. (No data is written
//! before the snapshot: a snapshot carries no entity data yet, and the
//! state machine refuses one that would need it; see the crate docs.)

use std::time::Duration;

use openraft::BasicNode;

use crate::cluster::{Cluster, WAIT, has_item};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_learner_is_caught_up_by_snapshot() -> anyhow::Result<()> {
    crate::init_tracing();
    let mut cluster = Cluster::start(&[1, 2, 3]).await?;
    let leader = cluster.leader(&[]).await?;
    let raft = cluster.node(leader)?.raft.clone();

    tracing::info!("--- the leader snapshots and purges its log");
    raft.trigger().snapshot().await?;
    let metrics = raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "snapshot built")
        .await?;
    let upto = metrics.snapshot.map(|log_id| log_id.index).unwrap_or(0);
    raft.trigger().purge_log(upto).await?;
    raft.wait(Some(WAIT))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= upto), "log purged")
        .await?;

    tracing::info!(
        upto,
        "--- a fresh node joins as a learner: only a snapshot can catch it up"
    );
    cluster.launch(4).await?;
    let addr = cluster.peers()[&4].clone();
    tokio::time::timeout(WAIT, raft.add_learner(4, BasicNode::new(addr.addr), true)).await??;
    let learner = &cluster.node(4)?.raft;
    let metrics = learner
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= upto),
            "learner installed the snapshot",
        )
        .await?;
    assert!(metrics.last_applied.is_some_and(|a| a.index >= upto));

    tracing::info!("--- then it follows by log");
    let mut last = 0;
    for k in 0..5 {
        last = cluster.write(k, &[4]).await?;
    }
    cluster.wait_applied(4, last).await?;
    for k in 0..5 {
        assert!(has_item(&cluster.node(4)?.storage, k).await?);
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    cluster.shutdown().await
}
