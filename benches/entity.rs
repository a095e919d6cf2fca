//! Entity runtime benchmarks, each next to its reference measured in the
//! same run:
//!
//! - `durable/activity_one_caller` vs `durable/raw_redb_commit`: one durable
//!   activity (state + commit with immediate durability) against a bare redb
//!   write transaction of the same bytes with immediate durability;
//! - `durable_64_callers`: throughput of activities from 64 concurrent
//!   callers on 64 different entities (group commit shares the fsyncs);
//! - `rpc/warm_entity` vs `rpc/actor_request_reply`: an rpc to an active
//!   entity against a plain actor request/reply;
//! - `activation/cold`: the first call to an entity whose state is on disk;
//! - `durable_execution/workflow_two_steps`: a workflow running two journaled
//!   activities, from call to recorded result;
//! - `durable_execution/persisted_message`: a persisted send until its
//!   delivery's reply is stored.
//!
//! Run: `cargo bench --bench entity` (add `-- --quick` for a smoke run).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use redb::{Durability, TableDefinition};
use serde::{Deserialize, Serialize};
use shoal::Node;
use shoal::actor::{self, ActorSystem};
use shoal::entity::{
    Activity, ActivityContext, Entity, Handlers, Rpc, RpcContext, Visibility, Workflow,
    WorkflowContext,
};
use tokio::runtime::Runtime;

struct Counter;

#[derive(Default, Serialize, Deserialize)]
struct Count {
    value: i64,
}

impl Entity for Counter {
    const NAME: &'static str = "Counter";
    type State = Count;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(Get).activity(Add).workflow(AddTwice);
    }
}

struct Get;
impl Rpc<Counter> for Get {
    const NAME: &'static str = "get";
    type Params = ();
    type Output = i64;
    async fn run(&self, ctx: &RpcContext<'_, Counter>, (): ()) -> i64 {
        ctx.state().value
    }
}

struct Add;
impl Activity<Counter> for Add {
    const NAME: &'static str = "add";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = i64;
    type Output = i64;
    type Error = ();
    async fn run(&self, ctx: &mut ActivityContext<'_, Counter>, by: i64) -> Result<i64, ()> {
        ctx.state_mut().value += by;
        Ok(ctx.state().value)
    }
}

/// Two journaled steps.
struct AddTwice;
impl Workflow<Counter> for AddTwice {
    const NAME: &'static str = "add_twice";
    type Params = u64;
    type Output = i64;
    type Error = ();
    async fn run(&self, ctx: &mut WorkflowContext<Counter>, _run: u64) -> Result<i64, ()> {
        ctx.activity(Add, 1).await.map_err(|_| ())??;
        ctx.activity(Add, 1).await.map_err(|_| ())?
    }
}

/// The actor-runtime reference for the rpc figure.
struct Plain(i64);
impl actor::Actor for Plain {}
struct PlainGet;
impl actor::Message for PlainGet {
    type Result = i64;
}
impl actor::Handler<PlainGet> for Plain {
    async fn handle(&mut self, _: PlainGet, _ctx: &mut actor::Context<Self>) -> i64 {
        self.0
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn start(dir: &Path) -> Node {
    Node::builder()
        .data_dir(dir)
        .register(Counter)
        .start()
        .await
        .expect("node")
}

fn durable(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(start(dir.path()));
    let mut group = c.benchmark_group("durable");

    // The bytes one activity stores: the state, keyed like an entity.
    let state = rmp_serde::to_vec_named(&Count { value: 12_345 }).expect("encode");
    let raw = redb::Database::create(dir.path().join("raw.redb")).expect("raw db");
    let table: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("state");
    let mut n = 0_u64;
    group.bench_function("raw_redb_commit", |b| {
        b.iter(|| {
            n += 1;
            let key = format!("\0\0\0\x07Counter/c-{n}");
            let mut txn = raw.begin_write().expect("write txn");
            txn.set_durability(Durability::Immediate)
                .expect("durability");
            txn.open_table(table)
                .expect("table")
                .insert(key.as_bytes(), state.as_slice())
                .expect("insert");
            txn.commit().expect("commit");
        });
    });

    let client = node.client::<Counter>("c-1");
    group.bench_function("activity_one_caller", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(client.call(Add, 1).await.expect("call")) });
    });
    group.finish();

    let mut group = c.benchmark_group("durable_64_callers");
    let per_caller = 16_u64;
    group.throughput(Throughput::Elements(64 * per_caller));
    let clients: Vec<_> = (0..64)
        .map(|i| node.client::<Counter>(format!("caller-{i}")))
        .collect();
    group.bench_function("activities", |b| {
        b.to_async(&rt).iter(|| {
            join_all(clients.iter().map(|client| async move {
                for _ in 0..per_caller {
                    client.call(Add, 1).await.expect("call").expect("ok");
                }
            }))
        });
    });
    group.finish();
    rt.block_on(node.shutdown()).expect("shutdown");
}

fn rpc(c: &mut Criterion) {
    let rt = runtime();
    let node = rt
        .block_on(Node::builder().register(Counter).start())
        .expect("node");
    let client = node.client::<Counter>("warm");
    rt.block_on(client.call(Get, ())).expect("activate");
    let system = rt.block_on(async { ActorSystem::new() });
    let plain = rt.block_on(async { system.spawn(Plain(7)) });

    let mut group = c.benchmark_group("rpc");
    group.bench_function("warm_entity", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(client.call(Get, ()).await.expect("call")) });
    });
    group.bench_function("actor_request_reply", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(plain.send(PlainGet).await.expect("send")) });
    });
    group.finish();
    rt.block_on(node.shutdown()).expect("shutdown");
}

fn activation(c: &mut Criterion) {
    const ENTITIES: usize = 2_000;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    // Store the state of ENTITIES entities, then restart so all are cold.
    rt.block_on(async {
        let node = start(dir.path()).await;
        for chunk in (0..ENTITIES).collect::<Vec<_>>().chunks(64) {
            join_all(chunk.iter().map(|i| {
                let client = node.client::<Counter>(format!("cold-{i}"));
                async move { client.call(Add, 1).await.expect("call").expect("ok") }
            }))
            .await;
        }
        node.shutdown().await.expect("shutdown");
    });
    let mut group = c.benchmark_group("activation");
    group.bench_function("cold", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let dir = dir.path().to_path_buf();
            async move {
                let mut total = Duration::ZERO;
                let mut node = start(&dir).await;
                let mut next = 0;
                for _ in 0..iters {
                    if next == ENTITIES {
                        // Every entity is warm now: restart, untimed.
                        node.shutdown().await.expect("shutdown");
                        node = start(&dir).await;
                        next = 0;
                    }
                    let client = node.client::<Counter>(format!("cold-{next}"));
                    next += 1;
                    let began = Instant::now();
                    let value = client.call(Get, ()).await.expect("call");
                    total += began.elapsed();
                    assert_eq!(value, 1, "the stored state was loaded");
                }
                node.shutdown().await.expect("shutdown");
                total
            }
        });
    });
    group.finish();
}

fn durable_execution(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(start(dir.path()));
    let client = node.client::<Counter>("wf");
    let mut group = c.benchmark_group("durable_execution");
    let mut run = 0_u64;
    group.bench_function("workflow_two_steps", |b| {
        b.to_async(&rt).iter(|| {
            run += 1;
            // New parameters each time: a new execution, not a stored result.
            let params = run;
            let client = client.clone();
            async move {
                black_box(
                    client
                        .call(AddTwice, params)
                        .await
                        .expect("call")
                        .expect("ok"),
                )
            }
        });
    });
    let mut sent = 0_u64;
    group.bench_function("persisted_message", |b| {
        b.to_async(&rt).iter(|| {
            sent += 1;
            let key = format!("m-{sent}");
            let client = client.clone();
            async move {
                let send = client
                    .send_persisted_with_key(Add, 1, &key)
                    .await
                    .expect("send");
                black_box(
                    client
                        .persisted_reply(Add, &send)
                        .await
                        .expect("reply")
                        .expect("ok"),
                )
            }
        });
    });
    group.finish();
    rt.block_on(node.shutdown()).expect("shutdown");
}

criterion_group!(benches, durable, rpc, activation, durable_execution);
criterion_main!(benches);
