//! Cluster mode with the in-process `TestCluster`: replicated writes,
//! routing from any node, leader and owner failures, partitions, restarts
//! and membership changes under load. Every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use shoal::NodeBuilder;
use shoal::builtin::{Counter, CounterAdd, CounterGet, Kv, KvGet, KvSet};
use shoal::cluster::MemberState;
use shoal::testing::TestCluster;
use tokio::sync::Mutex;

use crate::within;

async fn cluster(n: usize) -> TestCluster {
    start(n, |node| node.with_builtins()).await
}

/// A started cluster of `n` nodes, each configured by `configure`.
async fn start(
    n: usize,
    configure: impl Fn(NodeBuilder) -> NodeBuilder + Send + Sync + 'static,
) -> TestCluster {
    within(
        "the cluster to start",
        TestCluster::builder().nodes(n).configure(configure).start(),
    )
    .await
    .expect("cluster starts")
}

/// The running nodes that run the singleton `name`.
fn hosts(cluster: &TestCluster, name: &str) -> Vec<u64> {
    cluster
        .running()
        .into_iter()
        .filter(|id| cluster.node(*id).unwrap().singleton_running(name))
        .collect()
}

/// Writes `key-{k}` = `v{k}` through node `via`; returns whether it was
/// acknowledged.
async fn put(cluster: &TestCluster, via: u64, k: u64) -> bool {
    match cluster.node(via) {
        Ok(node) => write(node, k).await,
        Err(_) => false,
    }
}

/// Writes `key-{k}` = `v{k}` through `node`, giving up after 10 s;
/// returns whether it was acknowledged.
async fn write(node: &shoal::Node, k: u64) -> bool {
    let client = node.client::<Kv>(format!("key-{k}"));
    let write = client.call(KvSet, format!("v{k}"));
    matches!(
        tokio::time::timeout(Duration::from_secs(10), write).await,
        Ok(Ok(Ok(_)))
    )
}

/// Reads every key of `acked` through every running node.
async fn check_all(cluster: &TestCluster, acked: &[u64]) {
    for id in cluster.running() {
        let node = cluster.node(id).unwrap();
        for k in acked {
            let got = within(
                "a read",
                node.client::<Kv>(format!("key-{k}")).call(KvGet, ()),
            )
            .await
            .unwrap_or_else(|e| panic!("node {id} reading key-{k}: {e}"));
            assert_eq!(got, Some(format!("v{k}")), "node {id}, key-{k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_entity() {
    let cluster = cluster(3).await;
    for k in 0..30u64 {
        let via = 1 + k % 3;
        let total = within(
            "an add",
            cluster
                .node(via)
                .unwrap()
                .client::<Counter>("c-1")
                .call(CounterAdd, 1),
        )
        .await
        .expect("routed")
        .expect("applied");
        assert_eq!(total, k as i64 + 1);
    }
    for id in cluster.running() {
        let got = within(
            "a get",
            cluster
                .node(id)
                .unwrap()
                .client::<Counter>("c-1")
                .call(CounterGet, ()),
        )
        .await
        .unwrap();
        assert_eq!(got, 30);
    }
    // Entities spread over the nodes: each owns some shards.
    let status = cluster.node(1).unwrap().cluster_status().unwrap();
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.shards > 0), "{status:?}");
    assert_eq!(status.members.iter().map(|m| m.shards).sum::<usize>(), 2048);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_writes_loses_no_acknowledged_write() {
    let mut cluster = cluster(3).await;
    let leader = cluster.leader().await.unwrap();
    let load = Load::start(&cluster);
    load.wait_acked(&cluster, 10).await;
    cluster.kill(leader).await.unwrap();
    load.follow(&cluster);
    // Writes go on through the survivors.
    let before = load.acked.lock().unwrap().len();
    load.wait_acked(&cluster, before + 10).await;
    let acked = load.stop().await;
    let new_leader = cluster.leader().await.unwrap();
    assert_ne!(new_leader, leader);
    within("convergence", cluster.wait_converged())
        .await
        .unwrap();
    check_all(&cluster, &acked).await;
    // The old leader comes back and catches up.
    cluster.restart(leader).await.unwrap();
    within("convergence", cluster.wait_converged())
        .await
        .unwrap();
    check_all(&cluster, &acked).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_makes_no_progress_and_heals() {
    let cluster = cluster(3).await;
    let leader = cluster.leader().await.unwrap();
    let minority = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let majority: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != minority)
        .collect();
    // An entity the minority node owns, active there.
    let lonely = cluster.node(minority).unwrap().clone();
    let probe = (0..)
        .map(|n| format!("probe-{n}"))
        .find(|id| lonely.entity_owner("shoal.Kv", id) == Some(minority))
        .unwrap();
    within(
        "a write",
        lonely.client::<Kv>(&probe).call(KvSet, "before".to_owned()),
    )
    .await
    .unwrap()
    .unwrap();
    cluster.partition(&[minority], &majority);
    // Cut off, it stops serving its shards once its lease runs out —
    // reads included — although it still believes it owns them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(lonely.entity_owner("shoal.Kv", &probe), Some(minority));
    let read = tokio::time::timeout(
        Duration::from_secs(1),
        lonely.client::<Kv>(&probe).call(KvGet, ()),
    )
    .await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "served after its lease: {read:?}"
    );
    // The majority marks the silent node down and takes its shards over.
    let watcher = cluster.node(majority[0]).unwrap().clone();
    within(
        "the minority marked down",
        cluster.wait_for("the minority marked down", || {
            let status = watcher.cluster_status()?;
            let member = status.members.iter().find(|m| m.id == minority)?;
            (member.state == MemberState::Down
                && status
                    .members
                    .iter()
                    .all(|m| (m.shards > 0) == (m.id != minority)))
            .then_some(())
        }),
    )
    .await
    .unwrap();
    // Through the majority, every key is served.
    let mut acked = Vec::new();
    for k in 0..40 {
        if put(&cluster, majority[k as usize % 2], k).await {
            acked.push(k);
        }
    }
    assert_eq!(acked.len(), 40, "the majority serves every key");
    // The minority cannot commit anything.
    let lonely = tokio::time::timeout(
        Duration::from_secs(3),
        cluster
            .node(minority)
            .unwrap()
            .client::<Kv>("isolated")
            .call(KvSet, "x".to_owned()),
    )
    .await;
    assert!(!matches!(lonely, Ok(Ok(Ok(_)))), "{lonely:?}");
    cluster.heal();
    within("convergence", cluster.wait_converged())
        .await
        .unwrap();
    check_all(&cluster, &acked).await;
    cluster.shutdown().await.unwrap();
}

/// A steady write load through clones of the running nodes.
struct Load {
    nodes: Arc<std::sync::Mutex<Vec<shoal::Node>>>,
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::Mutex<Vec<u64>>>,
    writer: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(cluster: &TestCluster) -> Load {
        let nodes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let load = Load {
            nodes: nodes.clone(),
            stop: stop.clone(),
            acked: acked.clone(),
            writer: tokio::spawn(async move {
                let mut k = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let node = {
                        let nodes = nodes.lock().unwrap();
                        if nodes.is_empty() {
                            None
                        } else {
                            Some(nodes[k as usize % nodes.len()].clone())
                        }
                    };
                    let Some(node) = node else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if write(&node, k).await {
                        acked.lock().unwrap().push(k);
                    }
                    k += 1;
                }
            }),
        };
        load.follow(cluster);
        load
    }

    /// Writes through the nodes running now.
    fn follow(&self, cluster: &TestCluster) {
        *self.nodes.lock().unwrap() = cluster
            .running()
            .into_iter()
            .map(|id| cluster.node(id).unwrap().clone())
            .collect();
    }

    /// Waits until `count` writes in all were acknowledged.
    async fn wait_acked(&self, cluster: &TestCluster, count: usize) {
        cluster
            .wait_for(&format!("{count} acknowledged writes"), || {
                (self.acked.lock().unwrap().len() >= count).then_some(())
            })
            .await
            .unwrap();
    }

    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Release);
        within("the load to stop", self.writer).await.unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_five_to_three_nodes_under_load() {
    let mut cluster = cluster(3).await;
    let load = Load::start(&cluster);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = within("a join", cluster.add_node()).await.unwrap();
        load.follow(&cluster);
        let status = cluster.node(id).unwrap().cluster_status().unwrap();
        assert!(
            status.members.iter().any(|m| m.id == id && m.placed),
            "{status:?}"
        );
    }
    let status = cluster.node(1).unwrap().cluster_status().unwrap();
    assert_eq!(
        status.members.iter().filter(|m| m.voter).count(),
        5,
        "{status:?}"
    );
    for id in [4, 5] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Stop writing through it first: it is going away.
        let remaining: Vec<u64> = cluster.running().into_iter().filter(|n| *n != id).collect();
        *load.nodes.lock().unwrap() = remaining
            .iter()
            .map(|n| cluster.node(*n).unwrap().clone())
            .collect();
        within("a leave", cluster.remove_node(id)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = load.stop().await;
    within("convergence", cluster.wait_converged())
        .await
        .unwrap();
    let status = cluster.node(1).unwrap().cluster_status().unwrap();
    assert_eq!(status.members.len(), 3, "{status:?}");
    assert!(
        acked.len() >= 10,
        "only {} writes acknowledged",
        acked.len()
    );
    check_all(&cluster, &acked).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_nothing() {
    let mut cluster = cluster(3).await;
    let load = Load::start(&cluster);
    for id in [1, 2, 3] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(id).await.unwrap();
        load.follow(&cluster);
        tokio::time::sleep(Duration::from_millis(500)).await;
        within("a restart", cluster.restart(id)).await.unwrap();
        within("convergence", cluster.wait_converged())
            .await
            .unwrap();
        load.follow(&cluster);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = load.stop().await;
    assert!(
        acked.len() >= 10,
        "only {} writes acknowledged",
        acked.len()
    );
    check_all(&cluster, &acked).await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_killed_mid_workload_applies_every_activity_exactly_once() {
    let cluster = cluster(3).await;
    // A busy counter whose owner is not node 1 (through which we call).
    let id = (0..)
        .map(|n| format!("busy-{n}"))
        .find(|id| {
            let owner = cluster.node(1).unwrap().entity_owner("shoal.Counter", id);
            owner.is_some() && owner != Some(1)
        })
        .unwrap();
    let owner = cluster
        .node(1)
        .unwrap()
        .entity_owner("shoal.Counter", &id)
        .unwrap();
    let shared = Arc::new(Mutex::new(cluster));
    let adds = 60u64;
    let worker = {
        let shared = shared.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut retries = 0;
            for k in 0..adds {
                // Retried with the same key until acknowledged: applied
                // once, whatever happened to the attempts before.
                loop {
                    let guard = shared.lock().await;
                    let client = guard.node(1).unwrap().client::<Counter>(&id);
                    let attempt = client
                        .call_with_key(CounterAdd, 1, &format!("add-{k}"))
                        .await;
                    drop(guard);
                    match attempt {
                        Ok(Ok(_)) => break,
                        _ => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            retries
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    shared.lock().await.kill(owner).await.unwrap();
    let retries = within("the workload", worker).await.unwrap();
    let cluster = Arc::into_inner(shared).unwrap().into_inner();
    eprintln!("{retries} retried attempts");
    let new_owner = cluster.node(1).unwrap().entity_owner("shoal.Counter", &id);
    assert!(
        new_owner.is_some() && new_owner != Some(owner),
        "{new_owner:?}"
    );
    for via in cluster.running() {
        let total = within(
            "a get",
            cluster
                .node(via)
                .unwrap()
                .client::<Counter>(&id)
                .call(CounterGet, ()),
        )
        .await
        .unwrap();
        assert_eq!(total, adds as i64, "through node {via}");
    }
    cluster.shutdown().await.unwrap();
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST_AT_ONCE: AtomicUsize = AtomicUsize::new(0);
static STARTS: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_singleton_runs_once_and_moves_when_its_node_dies() {
    let mut cluster = start(3, |node| {
        node.singleton("watchdog", |ctx| async move {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
            STARTS.fetch_add(1, Ordering::SeqCst);
            // Decrements when cancelled or aborted (dropped).
            struct Running;
            impl Drop for Running {
                fn drop(&mut self) {
                    RUNNING.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _running = Running;
            ctx.cancelled().await;
        })
    })
    .await;
    let host = cluster
        .wait_for("the singleton to start", || {
            hosts(&cluster, "watchdog").first().copied()
        })
        .await
        .unwrap();
    assert_eq!(RUNNING.load(Ordering::SeqCst), 1);
    cluster.kill(host).await.unwrap();
    let next = cluster
        .wait_for("the singleton to move", || {
            hosts(&cluster, "watchdog").first().copied()
        })
        .await
        .unwrap();
    assert_ne!(next, host);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(RUNNING.load(Ordering::SeqCst), 1);
    assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), 1, "never two at once");
    assert_eq!(STARTS.load(Ordering::SeqCst), 2);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_messages_and_deferreds_survive_their_owners_death() {
    use crate::workflows::{Apply, Approval, Log, Nap, Wallet};
    let wallet = Wallet::new(0);
    let mut cluster = start(3, move |node| node.register(wallet.clone())).await;
    let via = cluster.node(1).unwrap().clone();
    let id = (0..)
        .map(|n| format!("w-{n}"))
        .find(|id| via.entity_owner("Wallet", id).is_some_and(|o| o != 1))
        .unwrap();
    let owner = via.entity_owner("Wallet", &id).unwrap();
    let wallet = via.client::<Wallet>(&id);
    // A durable sleep that outlives the owner, a workflow waiting on a
    // deferred, and a persisted message due after the crash.
    within(
        "sends",
        wallet.send_persisted(Nap, ("napped".to_owned(), 1500)),
    )
    .await
    .unwrap();
    within("sends", wallet.send_persisted(Approval, "deal".to_owned()))
        .await
        .unwrap();
    within(
        "sends",
        wallet.send_persisted_at(
            Apply,
            ("scheduled".to_owned(), 1),
            None,
            std::time::SystemTime::now() + Duration::from_millis(1200),
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(owner).await.unwrap();
    // The deferred is resolved while the shard is moving.
    within("the deferred", async {
        loop {
            match wallet.resolve_deferred("deal", Ok("yes".to_owned())).await {
                Ok(()) => break,
                Err(error) if error.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(error) => panic!("{error}"),
            }
        }
    })
    .await;
    let new_owner = via.entity_owner("Wallet", &id).unwrap();
    assert_ne!(new_owner, owner);
    let log = within("every effect", async {
        loop {
            if let Ok((_, log)) = wallet.call(Log, ()).await
                && log.len() >= 3
            {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut log = log;
    log.sort();
    assert_eq!(
        log,
        ["deal:yes", "napped", "scheduled"],
        "each exactly once"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_job_fires_once_per_time_and_survives_its_nodes_death() {
    use crate::cron::{Fired, Ticks, every_second};
    let mut cluster = start(3, |node| node.register(Ticks).cron(every_second())).await;
    let host = cluster
        .wait_for("the cron job to start", || {
            let hosts = hosts(&cluster, "cron:every-second");
            (hosts.len() == 1).then(|| hosts[0])
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cluster.kill(host).await.unwrap();
    let via = cluster.node(cluster.running()[0]).unwrap().clone();
    let before = within("a read", via.client::<Ticks>("t").call(Fired, ()))
        .await
        .unwrap()
        .len();
    // Another node takes the job over and fires on.
    let fired = within("fires after the move", async {
        loop {
            if let Ok(fired) = via.client::<Ticks>("t").call(Fired, ()).await
                && fired.len() >= before + 3
            {
                break fired;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let hosts = hosts(&cluster, "cron:every-second");
    assert_eq!(hosts.len(), 1, "one host: {hosts:?}");
    assert_ne!(hosts[0], host);
    let mut unique = fired.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        fired.len(),
        "a fire time ran twice: {fired:?}"
    );
    cluster.shutdown().await.unwrap();
}
