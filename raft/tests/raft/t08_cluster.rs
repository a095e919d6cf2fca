//! Three nodes over loopback QUIC: a leader is elected, 100 writes reach
//! every node's storage; the leader is killed during a stream of writes, a
//! new one is elected within a bounded wait, writes continue and no
//! acknowledged write is lost; the old leader restarts and catches up.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_raft::{Command, Response};

use crate::cluster::{Cluster, WAIT, has_item, item_batch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_survive_the_leader() -> anyhow::Result<()> {
    crate::init_tracing();
    tracing::info!("--- three nodes elect a leader");
    let mut cluster = Cluster::start(&[1, 2, 3]).await?;
    let leader = cluster.leader(&[]).await?;
    tracing::info!(leader, "leader elected");

    tracing::info!("--- 100 writes through client_write reach all three storages");
    let mut last = 0;
    for k in 0..100 {
        last = cluster.write(k, &[]).await?;
    }
    for id in [1, 2, 3] {
        cluster.wait_applied(id, last).await?;
    }
    cluster.check_items(0..100).await?;

    tracing::info!("--- kill the leader during a stream of writes");
    let raft = cluster.node(leader)?.raft.clone();
    let epoch = cluster.epoch(leader)?;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for k in 100..1000u64 {
                let Ok(batch) = item_batch(k, epoch) else {
                    break;
                };
                match tokio::time::timeout(
                    Duration::from_secs(3),
                    raft.client_write(Command::Batch(batch)),
                )
                .await
                {
                    Ok(Ok(written)) if matches!(written.data, Response::Applied(_)) => {
                        acked.lock().unwrap_or_else(|p| p.into_inner()).insert(k);
                    }
                    _ => break,
                }
            }
        })
    };
    let deadline = Instant::now() + WAIT;
    while acked.lock().unwrap_or_else(|p| p.into_inner()).len() < 20 {
        anyhow::ensure!(Instant::now() < deadline, "the writer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = Instant::now();
    cluster.kill(leader).await?;
    tokio::time::timeout(WAIT, writer).await??;
    let acked: Vec<u64> = acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .collect();
    tracing::info!(acked = acked.len(), "acknowledged before the kill");

    tracing::info!("--- a new leader within a bounded wait; writes continue");
    let new_leader = cluster.leader(&[]).await?;
    let elected_in = killed_at.elapsed();
    tracing::info!(new_leader, ?elected_in, "new leader");
    assert_ne!(new_leader, leader);
    assert!(elected_in < Duration::from_secs(10), "{elected_in:?}");
    for k in 1000..1020 {
        last = cluster.write(k, &[]).await?;
    }
    let survivors: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in &survivors {
        cluster.wait_applied(*id, last).await?;
    }

    tracing::info!("--- no acknowledged write is lost");
    for id in &survivors {
        let storage = &cluster.node(*id)?.storage;
        for &k in &acked {
            anyhow::ensure!(has_item(storage, k).await?, "node {id} lost acked item {k}");
        }
    }
    cluster.check_items((0..100).chain(1000..1020)).await?;

    tracing::info!("--- the old leader restarts and catches up");
    cluster.restart(leader).await?;
    cluster.wait_applied(leader, last).await?;
    let storage = &cluster.node(leader)?.storage;
    for &k in &acked {
        anyhow::ensure!(has_item(storage, k).await?, "restarted node lacks item {k}");
    }
    cluster.check_items((0..100).chain(1000..1020)).await?;
    cluster.shutdown().await
}
