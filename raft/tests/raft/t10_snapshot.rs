//! A snapshot replicated over the network, carrying the data: batches are
//! written, the leader builds a snapshot (a storage export) and purges its
//! log, and a new learner with an empty directory can then only be caught
//! up by snapshot — sent as chunked requests, installed through
//! `RaftService` with `Storage::import` — after which its storage holds
//! exactly the leader's dataset (same export bytes, applied marker and so
//! cluster state included) and it follows by log.

use std::time::Duration;

use openraft::BasicNode;
use openraft::rt::watch::WatchReceiver as _;

use std::collections::BTreeSet;
use std::sync::Arc;

use shoal_storage::{ShardRange, Storage};

use crate::cluster::{Cluster, WAIT, has_item};

async fn export(storage: &Arc<dyn Storage>) -> anyhow::Result<Vec<u8>> {
    Ok(shoal_storage::snapshot::read_to_end(storage.export(ShardRange::ALL).await?).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_learner_is_caught_up_by_snapshot() -> anyhow::Result<()> {
    crate::init_tracing();
    let mut cluster = Cluster::start(&[1, 2, 3]).await?;
    let leader = cluster.leader(&[]).await?;
    let raft = cluster.node(leader)?.raft.clone();

    tracing::info!("--- data first");
    let mut written = 0;
    for k in 0..20 {
        written = cluster.write(k, &[]).await?;
    }
    cluster.wait_applied(leader, written).await?;

    tracing::info!("--- the leader snapshots and purges its log");
    let upto = cluster.snapshot_and_purge(leader).await?;

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
    let learner_storage = cluster.node(4)?.storage.clone();
    for k in 0..20 {
        assert!(
            has_item(&learner_storage, k).await?,
            "item {k} came with the snapshot"
        );
    }
    let applied = raft
        .metrics()
        .borrow_watched()
        .last_applied
        .map(|a| a.index);
    cluster.wait_applied(4, applied.unwrap_or(0)).await?;
    assert_eq!(
        export(&learner_storage).await?,
        export(&cluster.node(leader)?.storage).await?,
        "the learner's dataset (applied marker included) is the leader's"
    );
    let state = cluster.cluster_state(4)?;
    assert_eq!(
        state,
        cluster.cluster_state(leader)?,
        "the learner's cluster state came with the snapshot"
    );
    // A raw `add_learner` (not `shoal_raft::join`, which marks it joining
    // until caught up) puts the learner in the placement at once.
    assert!(state.is_member(4), "a learner is a member");
    assert_eq!(
        state.placement(),
        &BTreeSet::from([1, 2, 3, 4]),
        "{state:?}"
    );

    tracing::info!("--- then it follows by log");
    let mut last = 0;
    for k in 20..25 {
        last = cluster.write(k, &[4]).await?;
    }
    cluster.wait_applied(4, last).await?;
    for k in 0..25 {
        assert!(has_item(&cluster.node(4)?.storage, k).await?);
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    cluster.shutdown().await
}
