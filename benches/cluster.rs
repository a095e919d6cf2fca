//! Cluster-mode benchmarks: three clustered nodes in this process on
//! loopback QUIC (mTLS), each with its own temp-dir redb file and Raft log.
//!
//! - `forwarded_rpc/get_via_non_owner` vs `forwarded_rpc/get_on_owner`: a
//!   read-only rpc (`shoal.Counter` `get`) sent to a node that does not own
//!   the entity's shard (forwarded over QUIC to the owner), one call at a
//!   time, against the same rpc sent to the owner itself;
//! - `forwarded_rpc/add_via_non_owner` vs `forwarded_rpc/add_on_owner`: a
//!   replicated write (`add`: committed through Raft by the owner, which
//!   is not the leader either, so its proposal is forwarded to the leader);
//! - `forwarded_rpc_64_callers/get_via_non_owner`: throughput of forwarded
//!   rpcs from 64 concurrent callers on 64 entities of one owner;
//! - `failover/<settings>/<who>`: from the moment the owner of an entity is
//!   killed (`Node::shutdown` without leaving: to the others a crash) to
//!   the first successful call on that entity through a surviving node.
//!   `<who>` is `follower_owner` (the owner is not the Raft leader) or
//!   `leader_owner` (it is: the failover includes an election).
//!   `<settings>` is `defaults` (every `ClusterConfig` and transport
//!   setting at its default: heartbeat 100 ms, election 400–800 ms,
//!   `down_after` 1.5 s, a clustered node's default transport: connect
//!   timeout 1 s, idle timeout 4 s) or `test_cluster`
//!   (`shoal::testing::TestCluster`'s timings — heartbeat 50 ms, election
//!   300–600 ms, connect timeout 500 ms — with the default `down_after`).
//!   Each sample is one failover of a fresh cluster; the cluster start and
//!   stop are not timed. After each variant a line on stderr splits the
//!   median failover into its phases, as seen from the calling survivor.
//! - `failover_kill9/defaults/<who>`: the same with three real `shoal run`
//!   processes (default settings, the binary built with the benchmark) and
//!   a real crash: the owner is SIGKILLed (`kill -9`), so the others see it
//!   go silent rather than close its connections; the call goes through a
//!   survivor with a CLI client certificate (`shoal::server::Client`).
//!
//! Run: `cargo bench --bench cluster` (add `-- --quick` for a smoke run,
//! `-- failover` for the failover figures alone).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use shoal::Node;
use shoal::builtin::{Counter, CounterAdd, CounterGet};
use shoal::cluster::{ClusterConfig, DEFAULT_DOWN_AFTER, MemberState};
use shoal::shard::{ShardGroup, shard_of};
use shoal::testing::TestCluster;
use shoal_transport::{Ca, NodeId, Validity};
use tempfile::TempDir;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The owner of `entity_id` (a `shoal.Counter`, default shard group) among
/// `placement`, computed as the cluster does: rendezvous hashing over the
/// nodes that own shards.
fn owner_in(shards_per_group: u32, entity_id: &str, placement: &[u64]) -> u64 {
    let shard = shard_of(ShardGroup::DEFAULT, entity_id, shards_per_group);
    shoal_raft::cluster::rendezvous_owner(shard, placement).expect("a placement")
}

/// The nodes that own shards, as `node` sees the cluster.
fn placement(node: &Node) -> Vec<u64> {
    let status = node.cluster_status().expect("clustered");
    status
        .members
        .iter()
        .filter(|m| m.state == MemberState::Up && m.shards > 0)
        .map(|m| m.id)
        .collect()
}

/// `n` entity ids (with `prefix`) for which `select(owner now, owner once
/// `gone` is out of the placement)` holds.
fn entity_ids(
    node: &Node,
    prefix: &str,
    n: usize,
    gone: Option<u64>,
    select: impl Fn(u64, u64) -> bool,
) -> Vec<String> {
    let all = placement(node);
    let rest: Vec<u64> = all.iter().copied().filter(|&id| Some(id) != gone).collect();
    assert!(
        !rest.is_empty(),
        "{node:?} sees no placement without {gone:?}"
    );
    let shards = node.config().shards_per_group();
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|id| select(owner_in(shards, id, &all), owner_in(shards, id, &rest)))
        .take(n)
        .collect()
}

fn forwarded_rpc(c: &mut Criterion) {
    let rt = runtime();
    let cluster = rt
        .block_on(
            TestCluster::builder()
                .nodes(3)
                .configure(|node| node.with_builtins())
                .start(),
        )
        .expect("cluster");
    // Owner and caller are both followers: the leader's own work (its
    // heartbeats) stays off both ends.
    let leader = rt.block_on(cluster.leader()).expect("leader");
    let followers: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (owner_id, caller_id) = (followers[0], followers[1]);
    let owner = cluster.node(owner_id).expect("owner").clone();
    let caller = cluster.node(caller_id).expect("caller").clone();
    let ids = entity_ids(&caller, "fwd", 65, None, |now, _| now == owner_id);

    // Check the computed owner once: a call through the caller activates
    // the entity on the owner only.
    let (before_owner, before_caller) = (owner.active_entities(), caller.active_entities());
    rt.block_on(caller.client::<Counter>(&ids[0]).call(CounterGet, ()))
        .expect("first call");
    assert_eq!(
        owner.active_entities(),
        before_owner + 1,
        "activated on the owner"
    );
    assert_eq!(caller.active_entities(), before_caller, "not on the caller");

    let via_caller = caller.client::<Counter>(&ids[0]);
    let on_owner = owner.client::<Counter>(&ids[0]);
    let mut group = c.benchmark_group("forwarded_rpc");
    group.bench_function("get_via_non_owner", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(via_caller.call(CounterGet, ()).await.expect("call")) });
    });
    group.bench_function("get_on_owner", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(on_owner.call(CounterGet, ()).await.expect("call")) });
    });
    group.bench_function("add_via_non_owner", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                via_caller
                    .call(CounterAdd, 1)
                    .await
                    .expect("call")
                    .expect("ok"),
            )
        });
    });
    group.bench_function("add_on_owner", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                on_owner
                    .call(CounterAdd, 1)
                    .await
                    .expect("call")
                    .expect("ok"),
            )
        });
    });
    group.finish();

    let callers: Vec<_> = ids[1..]
        .iter()
        .map(|id| caller.client::<Counter>(id))
        .collect();
    // Activate the 64 entities on the owner, untimed.
    rt.block_on(join_all(callers.iter().map(|c| c.call(CounterGet, ()))));
    let per_caller = 16_u64;
    let mut group = c.benchmark_group("forwarded_rpc_64_callers");
    group.throughput(Throughput::Elements(callers.len() as u64 * per_caller));
    group.bench_function("get_via_non_owner", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let callers = &callers;
            async move {
                let began = Instant::now();
                for _ in 0..iters {
                    join_all(callers.iter().map(|client| async move {
                        for _ in 0..per_caller {
                            black_box(client.call(CounterGet, ()).await.expect("call"));
                        }
                    }))
                    .await;
                }
                began.elapsed()
            }
        });
    });
    group.finish();
    rt.block_on(cluster.shutdown()).expect("shutdown");
}

/// Which cluster settings a failover runs with.
#[derive(Clone, Copy, Debug)]
enum Settings {
    /// Every `ClusterConfig` and transport default.
    Defaults,
    /// `TestCluster` as it is, with the default `down_after`.
    TestCluster,
}

/// Three nodes under test, built either way.
enum Nodes {
    Test(Box<TestCluster>),
    Own {
        nodes: BTreeMap<u64, Node>,
        _dirs: Vec<TempDir>,
    },
}

impl Nodes {
    async fn start(settings: Settings) -> Nodes {
        match settings {
            Settings::TestCluster => Nodes::Test(Box::new(
                TestCluster::builder()
                    .nodes(3)
                    .down_after(DEFAULT_DOWN_AFTER)
                    .configure(|node| node.with_builtins())
                    .start()
                    .await
                    .expect("cluster"),
            )),
            Settings::Defaults => {
                let ca = Ca::generate("shoal-bench").expect("ca");
                let addrs: BTreeMap<u64, SocketAddr> = (1..=3)
                    .map(|id| {
                        let socket = UdpSocket::bind(("127.0.0.1", 0)).expect("port");
                        (id, socket.local_addr().expect("addr"))
                    })
                    .collect();
                let dirs: Vec<TempDir> = (1..=3)
                    .map(|_| tempfile::tempdir().expect("tempdir"))
                    .collect();
                let starts = (1..=3_u64).map(|id| {
                    let identity = ca
                        .issue_node(NodeId::new(id), Validity::days(1))
                        .expect("identity");
                    let mut config = ClusterConfig::builder(identity).listen(addrs[&id]);
                    for (peer, addr) in &addrs {
                        config = config.peer(*peer, *addr);
                    }
                    let config = config.build().expect("config");
                    Node::builder()
                        .data_dir(dirs[id as usize - 1].path())
                        .cluster(config)
                        .with_builtins()
                        .start()
                });
                let nodes = join_all(starts)
                    .await
                    .into_iter()
                    .zip(1..)
                    .map(|(node, id)| (id, node.expect("node")))
                    .collect();
                let nodes = Nodes::Own { nodes, _dirs: dirs };
                nodes.converged().await;
                nodes
            }
        }
    }

    fn node(&self, id: u64) -> &Node {
        match self {
            Nodes::Test(cluster) => cluster.node(id).expect("running"),
            Nodes::Own { nodes, .. } => &nodes[&id],
        }
    }

    fn running(&self) -> Vec<u64> {
        match self {
            Nodes::Test(cluster) => cluster.running(),
            Nodes::Own { nodes, .. } => nodes.keys().copied().collect(),
        }
    }

    /// Waits until every node follows one leader, agrees on the placement,
    /// and every node owns shards; the leader.
    async fn converged(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statuses: Vec<_> = self
                .running()
                .into_iter()
                .map(|id| self.node(id).cluster_status().expect("clustered"))
                .collect();
            let first = &statuses[0];
            let agreed = statuses.iter().all(|s| {
                s.leader.is_some() && s.leader == first.leader && s.generation == first.generation
            });
            let placed = first.members.len() == statuses.len()
                && first
                    .members
                    .iter()
                    .all(|m| m.state == MemberState::Up && m.shards > 0);
            if agreed && placed {
                return first.leader.expect("leader");
            }
            assert!(Instant::now() < deadline, "the cluster did not converge");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn kill(&mut self, id: u64) {
        match self {
            Nodes::Test(cluster) => cluster.kill(id).await.expect("kill"),
            Nodes::Own { nodes, .. } => {
                let node = nodes.remove(&id).expect("running");
                node.shutdown().await.expect("kill");
            }
        }
    }

    async fn shutdown(self) {
        match self {
            Nodes::Test(cluster) => cluster.shutdown().await.expect("shutdown"),
            Nodes::Own { nodes, .. } => {
                // Together: each waits up to the transport's shutdown
                // timeout for its connections to close.
                for stopped in join_all(nodes.values().map(Node::shutdown)).await {
                    stopped.expect("shutdown");
                }
            }
        }
    }
}

/// The phases of one failover, each measured from the kill.
#[derive(Clone, Debug, Default)]
struct Phases {
    /// `Node::shutdown` of the owner returned.
    killed: Duration,
    /// The calling survivor follows a new leader (leader variant only).
    new_leader: Option<Duration>,
    /// The calling survivor applied the placement without the dead owner.
    placement: Option<Duration>,
    /// The first call succeeded (the measured figure).
    served: Duration,
    /// Calls that failed before it, and the first error.
    failed_calls: usize,
    first_error: Option<String>,
}

/// One failover on a fresh cluster: kills the owner of an entity (the
/// leader or not) and times the first successful call on it through a
/// survivor.
async fn failover_once(settings: Settings, kill_leader: bool) -> Phases {
    let mut nodes = Nodes::start(settings).await;
    // Under load a member can be marked down for a moment: start from a
    // placement on all three.
    let leader = loop {
        let leader = nodes.converged().await;
        if nodes
            .running()
            .iter()
            .all(|id| placement(nodes.node(*id)).len() == 3)
        {
            break leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let running = nodes.running();
    let victim = if kill_leader {
        leader
    } else {
        *running
            .iter()
            .find(|id| **id != leader)
            .expect("a follower")
    };
    let survivors: Vec<u64> = running.into_iter().filter(|id| *id != victim).collect();
    // The call goes through the lower survivor and is forwarded, after the
    // failover, to the other one.
    let (via, heir) = (survivors[0], survivors[1]);
    let caller = nodes.node(via).clone();
    let id = entity_ids(&caller, "failover", 1, Some(victim), |now, then| {
        now == victim && then == heir
    })
    .remove(0);
    let client = caller.client::<Counter>(&id);
    assert_eq!(client.call(CounterAdd, 1).await.expect("call"), Ok(1));
    assert_eq!(client.call(CounterGet, ()).await.expect("call"), 1);
    let status = caller.cluster_status().expect("clustered");

    // Watch the survivor's view of the cluster while the owner dies.
    let watch = {
        let caller = caller.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let (mut new_leader, mut placement) = (None, None);
            while placement.is_none() || (kill_leader && new_leader.is_none()) {
                let now = caller.cluster_status().expect("clustered");
                if new_leader.is_none() && now.leader.is_some_and(|l| l != status.leader.unwrap()) {
                    new_leader = Some(began.elapsed());
                }
                if placement.is_none() && now.generation != status.generation {
                    placement = Some(began.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (new_leader, placement)
        })
    };
    let began = Instant::now();
    nodes.kill(victim).await;
    let killed = began.elapsed();
    let mut phases = Phases {
        killed,
        ..Phases::default()
    };
    loop {
        match client.call(CounterGet, ()).await {
            Ok(value) => {
                assert_eq!(value, 1, "the state survived");
                break;
            }
            Err(error) => {
                phases.failed_calls += 1;
                phases.first_error.get_or_insert_with(|| error.to_string());
                assert!(began.elapsed() < Duration::from_secs(60), "no failover");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    phases.served = began.elapsed();
    let (new_leader, placement) = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("the placement changed")
        .expect("watcher");
    phases.new_leader = new_leader;
    phases.placement = placement;
    nodes.shutdown().await;
    phases
}

fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

fn failover(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("failover");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (settings, name) in [
        (Settings::Defaults, "defaults"),
        (Settings::TestCluster, "test_cluster"),
    ] {
        for (kill_leader, who) in [(false, "follower_owner"), (true, "leader_owner")] {
            let runs: Arc<Mutex<Vec<Phases>>> = Arc::default();
            group.bench_function(format!("{name}/{who}"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let runs = runs.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let phases = failover_once(settings, kill_leader).await;
                            total += phases.served;
                            runs.lock().unwrap().push(phases);
                        }
                        total
                    }
                });
            });
            let runs = runs.lock().unwrap();
            if runs.is_empty() {
                continue;
            }
            let ms = |d: Option<Duration>| {
                d.map_or_else(
                    || "-".to_owned(),
                    |d| format!("{:.0} ms", d.as_secs_f64() * 1e3),
                )
            };
            let of =
                |f: fn(&Phases) -> Option<Duration>| median(runs.iter().filter_map(f).collect());
            let errors: BTreeMap<&str, usize> =
                runs.iter().fold(BTreeMap::new(), |mut errors, run| {
                    let error = run.first_error.as_deref().unwrap_or("none");
                    *errors.entry(error).or_default() += 1;
                    errors
                });
            eprintln!(
                "failover/{name}/{who}: {} runs; medians from the kill: shutdown returned {}, \
                 new leader seen {}, placement changed {}, first call served {}; \
                 failed calls before it: {:?}; first error: {errors:?}",
                runs.len(),
                ms(of(|p| Some(p.killed))),
                ms(of(|p| p.new_leader)),
                ms(of(|p| p.placement)),
                ms(of(|p| Some(p.served))),
                runs.iter().map(|p| p.failed_calls).collect::<Vec<_>>(),
            );
        }
    }
    group.finish();
}

/// The `shoal` binary, for the `kill -9` failovers.
const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Three `shoal run` processes with default settings, on loopback, sharing
/// one CA directory; killed (SIGKILL) when dropped.
struct Processes {
    dir: TempDir,
    addrs: BTreeMap<u64, SocketAddr>,
    children: BTreeMap<u64, std::process::Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    fn start() -> Processes {
        // Hold every socket until all ports are picked, so they differ.
        let sockets: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("port"))
            .collect();
        let addrs: BTreeMap<u64, SocketAddr> = (1..=3u64)
            .zip(&sockets)
            .map(|(id, s)| (id, s.local_addr().expect("address")))
            .collect();
        drop(sockets);
        let dir = tempfile::tempdir().expect("temp dir");
        let peers = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let children = addrs
            .keys()
            .map(|&id| {
                let child = std::process::Command::new(SHOAL)
                    .args(["run", "--id", &id.to_string(), "--peers", &peers])
                    .arg("--data")
                    .arg(dir.path().join(format!("n{id}")))
                    .arg("--ca-dir")
                    .arg(dir.path().join("certs"))
                    .env("RUST_LOG", "error")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn shoal run");
                (id, child)
            })
            .collect();
        Processes {
            dir,
            addrs,
            children,
        }
    }

    /// A client of node `id` with a certificate of the cluster's CA (which
    /// the nodes create on their first start).
    async fn client(&self, id: u64) -> shoal::server::Client {
        let certs = self.dir.path().join("certs");
        let deadline = Instant::now() + Duration::from_secs(30);
        let ca = loop {
            if let Ok(ca) = Ca::load(&certs.join("ca.pem"), &certs.join("ca.key")) {
                break ca;
            }
            assert!(Instant::now() < deadline, "no CA");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let identity = ca
            .issue_client("bench", Validity::days(1))
            .expect("client identity");
        shoal::server::Client::new(identity, self.addrs[&id]).expect("client")
    }

    fn kill9(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

/// One `kill -9` failover: three fresh `shoal run` processes; the owner of
/// a counter (the leader or not) is SIGKILLed, and the time to the first
/// successful call on it through a survivor is returned.
async fn failover_kill9_once(kill_leader: bool) -> Duration {
    let mut processes = Processes::start();
    let mut clients = BTreeMap::new();
    for &id in processes.addrs.keys() {
        clients.insert(id, processes.client(id).await);
    }
    // Converged: one leader and one placement seen by all, on all three.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (leader, shards_per_group) = loop {
        let mut statuses = Vec::new();
        for client in clients.values() {
            if let Ok(status) = client.status().await {
                statuses.push(status);
            }
        }
        let agreed = statuses.len() == 3
            && statuses.iter().all(|s| {
                s.leader.is_some()
                    && s.leader == statuses[0].leader
                    && s.generation == statuses[0].generation
                    && s.members.len() == 3
                    && s.members.iter().all(|m| m.state == "up" && m.shards > 0)
            });
        if agreed {
            break (
                statuses[0].leader.expect("leader"),
                statuses[0].shards_per_group,
            );
        }
        assert!(Instant::now() < deadline, "the processes did not converge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = if kill_leader {
        leader
    } else {
        *processes
            .addrs
            .keys()
            .find(|&&id| id != leader)
            .expect("a follower")
    };
    let survivors: Vec<u64> = processes
        .addrs
        .keys()
        .copied()
        .filter(|&id| id != victim)
        .collect();
    let (via, heir) = (survivors[0], survivors[1]);
    let entity = (0..)
        .map(|i| format!("kill9-{i}"))
        .find(|id| {
            owner_in(shards_per_group, id, &[1, 2, 3]) == victim
                && owner_in(shards_per_group, id, &survivors) == heir
        })
        .expect("an entity of the victim");
    let client = &clients[&via];
    let added = client
        .call::<Counter, _, _>(&entity, CounterAdd, 1)
        .await
        .expect("call");
    assert_eq!(added, Ok(1));

    let began = Instant::now();
    processes.kill9(victim);
    loop {
        match client.call::<Counter, _, _>(&entity, CounterGet, ()).await {
            Ok(value) => {
                assert_eq!(value, 1, "the state survived");
                break;
            }
            Err(_) => {
                assert!(began.elapsed() < Duration::from_secs(60), "no failover");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let served = began.elapsed();
    for client in clients.values() {
        client.shutdown().await;
    }
    served
}

/// `failover_kill9/defaults/<who>`: [`failover_kill9_once`] per sample.
fn failover_kill9(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("failover_kill9");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (kill_leader, who) in [(false, "follower_owner"), (true, "leader_owner")] {
        group.bench_function(format!("defaults/{who}"), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += failover_kill9_once(kill_leader).await;
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, forwarded_rpc, failover, failover_kill9);
criterion_main!(benches);
