//! The bootstrap rule on real nodes: with the same peer list, only the
//! lowest id initialises; a node started before it waits (and stays
//! uninitialised, forming no cluster of its own); concurrent bootstraps
//! and re-runs after the fact end in one cluster with one initial
//! membership.

use std::time::Duration;

use openraft::rt::watch::WatchReceiver as _;

use shoal_raft::Bootstrap;

use crate::cluster::{Cluster, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_peer_list_never_makes_two_clusters() -> anyhow::Result<()> {
    crate::init_tracing();
    let mut cluster = Cluster::launch_all(&[1, 2]).await?;
    let peers = cluster.peers();

    tracing::info!("--- node 2 alone: it waits for node 1 and forms nothing");
    cluster.kill(1).await?;
    let outcome = shoal_raft::bootstrap(&cluster.node(2)?.raft, 2, &peers).await?;
    assert_eq!(outcome, Bootstrap::Waiting { initializer: 1 });
    // Several election timeouts pass: still no cluster, no leader.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let node2 = cluster.node(2)?;
    assert!(!node2.raft.is_initialized().await?);
    assert_eq!(node2.raft.metrics().borrow_watched().current_leader, None);

    tracing::info!("--- node 1 comes up; both bootstrap concurrently");
    cluster.launch(1).await?;
    let (one, two) = tokio::join!(
        shoal_raft::bootstrap(&cluster.node(1)?.raft, 1, &peers),
        shoal_raft::bootstrap(&cluster.node(2)?.raft, 2, &peers),
    );
    assert_eq!(one?, Bootstrap::Initialized);
    assert!(matches!(
        two?,
        Bootstrap::Waiting { initializer: 1 } | Bootstrap::AlreadyInitialized
    ));
    let leader = cluster.leader(&[]).await?;

    tracing::info!("--- one cluster: same leader, same membership entry, both voters");
    for id in [1, 2] {
        let raft = &cluster.node(id)?.raft;
        raft.wait(Some(WAIT))
            .current_leader(leader, format!("node {id} follows {leader}"))
            .await?;
    }
    let m1 = cluster
        .node(1)?
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .clone();
    let m2 = cluster
        .node(2)?
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .clone();
    assert_eq!(m1, m2);
    assert_eq!(m1.membership().voter_ids().collect::<Vec<_>>(), vec![1, 2]);

    tracing::info!("--- re-running the rule (a restart) changes nothing");
    for id in [1, 2] {
        let outcome = shoal_raft::bootstrap(&cluster.node(id)?.raft, id, &peers).await?;
        assert_eq!(outcome, Bootstrap::AlreadyInitialized);
    }
    let index = cluster.write(1, &[]).await?;
    cluster.wait_applied(1, index).await?;
    cluster.wait_applied(2, index).await?;
    cluster.check_items(1..2).await?;

    tracing::info!("--- a node outside the list is refused");
    assert!(matches!(
        shoal_raft::bootstrap(&cluster.node(1)?.raft, 9, &peers).await,
        Err(shoal_raft::Error::NotAPeer { node: 9, .. })
    ));
    cluster.shutdown().await
}
