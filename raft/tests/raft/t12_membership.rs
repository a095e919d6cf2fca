//! Replicated cluster metadata and membership on real three- to
//! seven-node clusters: fencing by shard epoch on every replica (a stale
//! or future epoch applies nothing; marking the owner down moves only its
//! shards to a new epoch), a 4th node joining under a stream of writes
//! (learner, then voter; no acknowledged write missing anywhere), a
//! graceful leave whose id can never rejoin, the leader leaving itself,
//! six nodes giving five voters and a learner, and the `ClusterState`
//! identical everywhere, across a restart (read back from storage) and on
//! a node caught up by snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::rt::watch::WatchReceiver as _;
use shoal_raft::{ClusterState, Command, Error, Joined, MAX_VOTERS, Rejected, Response};
use shoal_storage::{EntityKey, Epoch, ShardId, WriteBatch};

use crate::cluster::{Cluster, SHARD, WAIT, has_item, item_batch};

/// A bound on one membership operation.
const OP_WAIT: Duration = Duration::from_secs(30);

fn shard_batch(shard: ShardId, epoch: Epoch, value: &[u8]) -> anyhow::Result<WriteBatch> {
    let mut batch = WriteBatch::new(shard, epoch);
    batch.put_state(&EntityKey::new(shard, "Probe", "p")?, value.to_vec());
    Ok(batch)
}

async fn probe(cluster: &Cluster, id: u64, shard: ShardId) -> anyhow::Result<Option<Bytes>> {
    Ok(cluster
        .node(id)?
        .storage
        .load_state(&EntityKey::new(shard, "Probe", "p")?)
        .await?)
}

/// Waits until every running node has applied what `leader` has, then
/// checks that they all hold the same `ClusterState`, which it returns.
async fn settle(cluster: &Cluster, leader: u64) -> anyhow::Result<ClusterState> {
    let raft = &cluster.node(leader)?.raft;
    tokio::time::timeout(
        WAIT,
        raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex),
    )
    .await??;
    let applied = raft
        .metrics()
        .borrow_watched()
        .last_applied
        .map_or(0, |a| a.index);
    for id in cluster.nodes.keys() {
        cluster.wait_applied(*id, applied).await?;
    }
    let state = cluster.cluster_state(leader)?;
    for id in cluster.nodes.keys() {
        assert_eq!(
            cluster.cluster_state(*id)?,
            state,
            "node {id}'s cluster state differs from leader {leader}'s"
        );
    }
    Ok(state)
}

fn voters(cluster: &Cluster, id: u64) -> anyhow::Result<BTreeSet<u64>> {
    Ok(cluster
        .node(id)?
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_fenced_by_the_shard_epoch_on_every_replica() -> anyhow::Result<()> {
    crate::init_tracing();
    let cluster = Cluster::start(&[1, 2, 3]).await?;
    let leader = cluster.leader(&[]).await?;
    let raft = cluster.node(leader)?.raft.clone();
    let state = settle(&cluster, leader).await?;
    assert_eq!(state.placement(), &BTreeSet::from([1, 2, 3]));
    let owner = state.owner(SHARD).expect("an owner");
    let epoch = state.epoch(SHARD).expect("an epoch");

    tracing::info!(
        owner,
        ?epoch,
        "--- the right epoch applies; a wrong one nowhere"
    );
    let written = raft
        .client_write(Command::Batch(shard_batch(SHARD, epoch, b"right")?))
        .await?;
    assert!(
        matches!(written.data, Response::Applied(_)),
        "{:?}",
        written.data
    );
    let wrong = raft
        .client_write(Command::Batch(shard_batch(SHARD, epoch.next(), b"ahead")?))
        .await?;
    assert_eq!(
        wrong.data,
        Response::Rejected(Rejected::StaleEpoch {
            shard: SHARD.get(),
            batch: epoch.get() + 1,
            current: epoch.get()
        })
    );
    settle(&cluster, leader).await?;
    for id in [1, 2, 3] {
        assert_eq!(
            probe(&cluster, id, SHARD).await?,
            Some(Bytes::from_static(b"right")),
            "node {id}"
        );
    }

    tracing::info!("--- the owner is marked down: only its shards move, at a new epoch");
    let moved_from = |s: &ClusterState| {
        (0..2048)
            .map(ShardId::new)
            .filter(|shard| s.owner(*shard) == Some(owner))
            .collect::<Vec<_>>()
    };
    let owned = moved_from(&state);
    let kept = (0..2048)
        .map(ShardId::new)
        .find(|shard| state.owner(*shard) != Some(owner))
        .expect("another node owns a shard");
    let kept_epoch = state.epoch(kept).expect("an epoch");
    tokio::time::timeout(OP_WAIT, shoal_raft::mark_down(&raft, owner)).await??;
    let after = settle(&cluster, leader).await?;
    assert!(after.down().contains(&owner));
    assert!(!after.placement().contains(&owner));
    for shard in &owned {
        assert_ne!(after.owner(*shard), Some(owner));
        assert_eq!(after.epoch(*shard), Some(Epoch::new(after.generation())));
    }
    for shard in (0..2048).map(ShardId::new) {
        if state.owner(shard) != Some(owner) {
            assert_eq!(after.owner(shard), state.owner(shard));
            assert_eq!(after.epoch(shard), state.epoch(shard), "{shard:?}");
        }
    }
    let new_epoch = after.epoch(SHARD).expect("an epoch");
    assert!(new_epoch > epoch);
    let stale = raft
        .client_write(Command::Batch(shard_batch(SHARD, epoch, b"deposed")?))
        .await?;
    assert_eq!(
        stale.data,
        Response::Rejected(Rejected::StaleEpoch {
            shard: SHARD.get(),
            batch: epoch.get(),
            current: new_epoch.get()
        })
    );
    let untouched = raft
        .client_write(Command::Batch(shard_batch(kept, kept_epoch, b"kept")?))
        .await?;
    assert!(
        matches!(untouched.data, Response::Applied(_)),
        "{:?}",
        untouched.data
    );
    let fresh = raft
        .client_write(Command::Batch(shard_batch(SHARD, new_epoch, b"new owner")?))
        .await?;
    assert!(
        matches!(fresh.data, Response::Applied(_)),
        "{:?}",
        fresh.data
    );
    settle(&cluster, leader).await?;
    for id in [1, 2, 3] {
        assert_eq!(
            probe(&cluster, id, SHARD).await?,
            Some(Bytes::from_static(b"new owner")),
            "node {id}: the deposed owner's write applied nowhere"
        );
        assert_eq!(
            probe(&cluster, id, kept).await?,
            Some(Bytes::from_static(b"kept"))
        );
        assert_eq!(
            cluster.node(id)?.storage.shard_epoch(SHARD).await?,
            new_epoch
        );
    }

    tracing::info!("--- marked up: its shards come back at yet another epoch");
    tokio::time::timeout(OP_WAIT, shoal_raft::mark_up(&raft, owner)).await??;
    let up = settle(&cluster, leader).await?;
    assert_eq!(up.owner(SHARD), Some(owner));
    assert!(up.epoch(SHARD).expect("an epoch") > new_epoch);
    assert!(matches!(
        shoal_raft::mark_down(&raft, 42).await,
        Err(Error::Rejected { .. })
    ));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_under_writes_and_nodes_leave() -> anyhow::Result<()> {
    crate::init_tracing();
    let mut cluster = Cluster::start(&[1, 2, 3]).await?;
    let leader = cluster.leader(&[]).await?;
    let raft = cluster.node(leader)?.raft.clone();
    settle(&cluster, leader).await?;

    tracing::info!("--- a stream of writes (retried at the new epoch when ownership moves)");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let raft = raft.clone();
        let watched = cluster.node(leader)?.cluster.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut k = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let epoch = watched.borrow().epoch(SHARD).unwrap_or(Epoch::ZERO);
                let batch = item_batch(k, epoch)?;
                let written = tokio::time::timeout(
                    Duration::from_secs(5),
                    raft.client_write(Command::Batch(batch)),
                )
                .await??;
                match written.data {
                    Response::Applied(_) => {
                        acked.push(k);
                        k += 1;
                    }
                    Response::Rejected(Rejected::StaleEpoch { .. }) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    other => anyhow::bail!("item {k}: {other:?}"),
                }
            }
            Ok::<_, anyhow::Error>(acked)
        })
    };

    tracing::info!("--- node 4 joins: learner, caught up, then voter and owner");
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.launch(4).await?;
    let addr = cluster.peers()[&4].addr.clone();
    let joined = tokio::time::timeout(OP_WAIT, shoal_raft::join(&raft, 4, addr.clone())).await??;
    assert_eq!(joined, Joined::Voter);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = tokio::time::timeout(WAIT, writer).await???;
    tracing::info!(acked = acked.len(), "acknowledged writes");
    assert!(
        acked.len() > 10,
        "the writer made progress: {}",
        acked.len()
    );
    let state = settle(&cluster, leader).await?;
    assert_eq!(state.placement(), &BTreeSet::from([1, 2, 3, 4]));
    assert!(state.joining().is_empty());
    assert_eq!(voters(&cluster, leader)?, BTreeSet::from([1, 2, 3, 4]));
    for id in [1, 2, 3, 4] {
        for &k in &acked {
            anyhow::ensure!(
                has_item(&cluster.node(id)?.storage, k).await?,
                "node {id} lacks acknowledged item {k}"
            );
        }
    }
    // Joining again is idempotent.
    assert_eq!(
        tokio::time::timeout(OP_WAIT, shoal_raft::join(&raft, 4, addr)).await??,
        Joined::Voter
    );

    tracing::info!("--- a follower leaves gracefully; its id can never rejoin");
    let leaving = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    tokio::time::timeout(OP_WAIT, shoal_raft::leave(&raft, leaving)).await??;
    cluster.kill(leaving).await?;
    let state = settle(&cluster, leader).await?;
    assert!(state.retired().contains(&leaving));
    assert!(!state.is_member(leaving));
    assert!(!state.placement().contains(&leaving));
    assert!(state.leaving().is_empty());
    assert!(!voters(&cluster, leader)?.contains(&leaving));
    let again = shoal_raft::join(&raft, leaving, "127.0.0.1:9".to_owned()).await;
    assert!(
        matches!(again, Err(Error::IdRetired { node }) if node == leaving),
        "{again:?}"
    );
    // Leaving twice is a no-op.
    tokio::time::timeout(OP_WAIT, shoal_raft::leave(&raft, leaving)).await??;
    let last = cluster.write(10_000, &[]).await?;
    for id in cluster.nodes.keys() {
        cluster.wait_applied(*id, last).await?;
    }

    tracing::info!("--- the leader leaves itself: a new leader takes over, writes go on");
    tokio::time::timeout(OP_WAIT, shoal_raft::leave(&raft, leader)).await??;
    let new_leader = cluster.leader(&[leader]).await?;
    assert_ne!(new_leader, leader);
    cluster.kill(leader).await?;
    let state = settle(&cluster, new_leader).await?;
    assert!(state.retired().contains(&leader), "{state:?}");
    assert_eq!(state.placement().len(), 2);
    let last = cluster.write(10_001, &[]).await?;
    for id in cluster.nodes.keys() {
        cluster.wait_applied(*id, last).await?;
    }
    cluster
        .check_items(acked.iter().copied().chain([10_000, 10_001]))
        .await?;
    // Not on a follower.
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != new_leader)
        .expect("a follower");
    let refused = shoal_raft::mark_down(&cluster.node(follower)?.raft, new_leader).await;
    assert!(
        matches!(refused, Err(Error::NotLeader { .. })),
        "{refused:?}"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_have_five_voters_and_the_state_survives_restart_and_snapshot()
-> anyhow::Result<()> {
    crate::init_tracing();
    let mut cluster = Cluster::start(&[1, 2, 3]).await?;
    let leader = cluster.leader(&[]).await?;
    let raft = cluster.node(leader)?.raft.clone();

    tracing::info!("--- nodes 4 and 5 join as voters, node 6 as a learner");
    for (id, role) in [(4, Joined::Voter), (5, Joined::Voter), (6, Joined::Learner)] {
        cluster.launch(id).await?;
        let addr = cluster.peers()[&id].addr.clone();
        let joined = tokio::time::timeout(OP_WAIT, shoal_raft::join(&raft, id, addr)).await??;
        assert_eq!(joined, role, "node {id}");
    }
    let state = settle(&cluster, leader).await?;
    assert_eq!(voters(&cluster, leader)?.len(), MAX_VOTERS);
    assert!(!voters(&cluster, leader)?.contains(&6));
    assert_eq!(state.placement(), &BTreeSet::from([1, 2, 3, 4, 5, 6]));
    for k in 0..10 {
        cluster.write(k, &[]).await?;
    }

    tracing::info!("--- a restarted node reads its cluster state back from storage");
    let state = settle(&cluster, leader).await?;
    let follower = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.kill(follower).await?;
    cluster.restart(follower).await?;
    assert_eq!(
        cluster.cluster_state(follower)?,
        state,
        "the state as of open, before any new entry"
    );

    tracing::info!("--- a voter leaves: the learner is promoted");
    tokio::time::timeout(OP_WAIT, shoal_raft::leave(&raft, 5)).await??;
    cluster.kill(5).await?;
    settle(&cluster, leader).await?;
    let now = voters(&cluster, leader)?;
    assert_eq!(now.len(), MAX_VOTERS);
    assert!(now.contains(&6), "{now:?}");

    tracing::info!("--- snapshot + purge; node 7 can only catch up by snapshot");
    let upto = cluster.snapshot_and_purge(leader).await?;
    cluster.launch(7).await?;
    let addr = cluster.peers()[&7].addr.clone();
    let joined = tokio::time::timeout(OP_WAIT, shoal_raft::join(&raft, 7, addr)).await??;
    assert_eq!(joined, Joined::Learner);
    cluster
        .node(7)?
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= upto),
            "node 7 installed the snapshot",
        )
        .await?;
    let state = settle(&cluster, leader).await?;
    assert!(state.placement().contains(&7));
    assert!(state.retired().contains(&5));
    cluster.check_items(0..10).await?;
    cluster.shutdown().await
}
