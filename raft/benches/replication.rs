//! Replication benchmarks: a write through a three-node Raft group against
//! the local durable commit it replaces, measured in the same run.
//!
//! Three in-process nodes on loopback QUIC with mutual TLS (one dev CA),
//! each with its own temp dir holding its redb `LogStore` and a
//! `RedbStorage` with its default configuration, running
//! [`shoal_raft::config`] unchanged: a write is fsynced in the log of a
//! majority before it is acknowledged, and the state machine applies it
//! with deferred durability (no fsync of its own; see `StateMachine`):
//!
//! - `local_commit`: one `RedbStorage::commit` of a small batch (one
//!   `put_state` of ~100 bytes) on a storage of its own — the reference;
//! - `replicated_write/1_client`: one `Raft::client_write` of the same kind
//!   of batch on the leader, one at a time (compare its median with the
//!   reference's);
//! - `replicated_write/64_clients`: throughput of 64 concurrent clients
//!   each writing in a loop (criterion reports writes/s).
//!
//! Every write goes to a distinct entity, so nothing is deduplicated; the
//! batches carry [`bench_epoch`].
//!
//! Run: `cargo bench -p shoal-raft --bench replication -- --warm-up-time 2 --measurement-time 8`
//!
//! Targets: replicated median <= 3x the local commit's median; >= 20,000
//! replicated writes/s with 64 clients.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use openraft::BasicNode;
use openraft::ServerState;
use openraft::rt::watch::WatchReceiver as _;
use shoal_raft::{
    Command, LogStore, Network, NetworkConfig, Raft, RaftService, Response, StateMachine,
};
use shoal_storage::{EntityKey, Epoch, RedbConfig, RedbStorage, ShardId, Storage, WriteBatch};
use shoal_transport::{Ca, Endpoint, NodeId, Router, Validity};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// The shard every benchmark write goes to.
const SHARD: ShardId = ShardId::new(0);

/// Concurrent clients of `replicated_write/64_clients`.
const CLIENTS: u64 = 64;

/// Bytes of entity state per write.
const STATE_BYTES: usize = 100;

/// Bound on waiting for a leader.
const WAIT: Duration = Duration::from_secs(30);

/// The epoch every benchmark batch carries: one the state machine's fence
/// accepts for [`SHARD`], i.e. the shard's epoch in its `ClusterState`. The
/// bootstrap's membership (log index 0, all three nodes) makes the only
/// placement the benchmark ever sees, so every shard's epoch is 0 (writes
/// that were refused would fail the `Applied` check in [`write`]).
fn bench_epoch() -> Epoch {
    Epoch::ZERO
}

/// A batch writing ~100 bytes of state to entity `k` (a distinct key per
/// `k`, so no write is deduplicated).
fn batch(k: u64) -> WriteBatch {
    let key = EntityKey::new(SHARD, "BenchItem", format!("item-{k}")).expect("valid key");
    let mut batch = WriteBatch::new(SHARD, bench_epoch());
    let mut state = vec![0x5a_u8; STATE_BYTES];
    state[..8].copy_from_slice(&k.to_be_bytes());
    batch.put_state(&key, state);
    batch
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One running node.
struct Node {
    raft: Raft,
    storage: Arc<dyn Storage>,
    endpoint: Endpoint,
    service: RaftService,
    _dir: TempDir,
}

/// Three nodes, bootstrapped, with an elected leader.
struct Cluster {
    nodes: BTreeMap<u64, Node>,
    leader: u64,
}

impl Cluster {
    async fn start() -> Cluster {
        let ids = [1_u64, 2, 3];
        let ca = Ca::generate("raft-bench").expect("CA");
        let config = Arc::new(shoal_raft::config("shoal-bench").expect("raft config"));
        let mut nodes = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in ids {
            let identity = ca
                .issue_node(NodeId::new(id), Validity::days(1))
                .expect("node identity");
            let service = RaftService::new(NetworkConfig::default()).expect("service");
            let endpoint = Endpoint::builder(identity)
                .router(service.register(Router::new()))
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("bind");
            addrs.insert(id, endpoint.local_addr());
            let dir = tempfile::tempdir().expect("temp dir");
            let storage: Arc<dyn Storage> = Arc::new(
                RedbStorage::open(
                    RedbConfig::builder(dir.path().join("shoal.redb"))
                        .build()
                        .expect("redb config"),
                )
                .expect("open storage"),
            );
            let log = LogStore::open(dir.path().join("raft-log.redb")).expect("open log");
            let sm = StateMachine::open(dir.path(), storage.clone())
                .await
                .expect("open state machine");
            let network =
                Network::new(endpoint.clone(), NetworkConfig::default()).expect("network");
            let raft = Raft::new(id, config.clone(), network, log, sm)
                .await
                .expect("raft");
            service.serve(raft.clone());
            nodes.insert(
                id,
                Node {
                    raft,
                    storage,
                    endpoint,
                    service,
                    _dir: dir,
                },
            );
        }
        for node in nodes.values() {
            for (id, addr) in &addrs {
                node.endpoint.add_peer(NodeId::new(*id), *addr);
            }
        }
        let peers: BTreeMap<u64, BasicNode> = addrs
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
            .collect();
        for (id, node) in &nodes {
            shoal_raft::bootstrap(&node.raft, *id, &peers)
                .await
                .expect("bootstrap");
        }
        let leader = leader(&nodes).await;
        Cluster { nodes, leader }
    }

    fn leader(&self) -> &Raft {
        &self.nodes[&self.leader].raft
    }

    async fn shutdown(self) {
        for node in self.nodes.into_values() {
            node.service.stop();
            let _ = node.raft.shutdown().await;
            node.endpoint.shutdown().await;
            drop(node.raft);
            let _ = node.storage.close().await;
        }
    }
}

/// Waits for a leader that every node follows.
async fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        for (id, node) in nodes {
            let leads = node.raft.metrics().borrow_watched().state == ServerState::Leader;
            let followed = nodes
                .values()
                .all(|n| n.raft.metrics().borrow_watched().current_leader == Some(*id));
            if leads && followed {
                return *id;
            }
        }
        assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `k` through `raft` and checks that it applied.
async fn write(raft: &Raft, k: u64) {
    let written = raft
        .client_write(Command::Batch(batch(k)))
        .await
        .expect("client_write");
    assert!(
        matches!(&written.data, Response::Applied(applied) if applied.applied_all()),
        "write {k}: {:?}",
        written.data
    );
    black_box(written);
}

fn local_commit(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = RedbStorage::open(
        RedbConfig::builder(dir.path().join("local.redb"))
            .build()
            .expect("redb config"),
    )
    .expect("open storage");
    let next = AtomicU64::new(0);
    c.bench_function("local_commit", |b| {
        b.to_async(&runtime).iter(|| {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let storage = &storage;
            async move {
                black_box(storage.commit(batch(k)).await.expect("commit"));
            }
        })
    });
    runtime.block_on(async { storage.close().await.expect("close") });
}

fn replicated_write(c: &mut Criterion) {
    let runtime = runtime();
    let cluster = runtime.block_on(Cluster::start());
    let raft = cluster.leader().clone();
    // Keys are never reused, across both benchmarks.
    let next = Arc::new(AtomicU64::new(0));

    let mut group = c.benchmark_group("replicated_write");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_client", |b| {
        b.to_async(&runtime).iter(|| {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let raft = &raft;
            async move { write(raft, k).await }
        })
    });
    group.bench_function("64_clients", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let raft = raft.clone();
            let next = next.clone();
            async move {
                // 64 clients write until `iters` writes are done.
                let remaining = Arc::new(AtomicU64::new(iters));
                let started = Instant::now();
                let clients: Vec<_> = (0..CLIENTS)
                    .map(|_| {
                        let raft = raft.clone();
                        let next = next.clone();
                        let remaining = remaining.clone();
                        tokio::spawn(async move {
                            while remaining
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok()
                            {
                                write(&raft, next.fetch_add(1, Ordering::Relaxed)).await;
                            }
                        })
                    })
                    .collect();
                for client in clients {
                    client.await.expect("client task");
                }
                started.elapsed()
            }
        })
    });
    group.finish();
    runtime.block_on(cluster.shutdown());
}

criterion_group!(benches, local_commit, replicated_write);
criterion_main!(benches);
