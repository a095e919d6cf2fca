//! Actor runtime benchmarks: cineyma's scenarios, side by side with the floor
//! (bare tokio `mpsc` + `oneshot`, bare `tokio::spawn` + channel).
//!
//! Run: `cargo bench --bench actor` (add `-- --quick` for a smoke run).
//!
//! Every message scenario times messages sent *and handled*: the clock stops
//! only when the last message's effect is observed through a reply. Nothing
//! sleeps inside a timed section. The default runtime is tokio's
//! multi-threaded one with one worker per core, driven from the bench thread
//! (`block_on`), so each request/reply crosses threads both ways, for us and
//! for the floor alike. The `current_thread` group shows the way below that
//! floor: callers and actors on one thread.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use shoal::actor::{Actor, ActorSystem, Addr, Context, Handler, Message};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

struct Counter(u64);
impl Actor for Counter {}

struct Inc;
impl Message for Inc {
    type Result = ();
}
impl Handler<Inc> for Counter {
    async fn handle(&mut self, _: Inc, _ctx: &mut Context<Self>) {
        self.0 += 1;
    }
}

/// A synchronous handler: no await inside.
struct Get;
impl Message for Get {
    type Result = u64;
}
impl Handler<Get> for Counter {
    async fn handle(&mut self, _: Get, _ctx: &mut Context<Self>) -> u64 {
        self.0
    }
}

/// An asynchronous handler: yields to the runtime once, as a handler awaiting
/// ready I/O would (no timer, so the measurement is not tokio's 1 ms step).
struct GetAsync;
impl Message for GetAsync {
    type Result = u64;
}
impl Handler<GetAsync> for Counter {
    async fn handle(&mut self, _: GetAsync, _ctx: &mut Context<Self>) -> u64 {
        tokio::task::yield_now().await;
        self.0
    }
}

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits (untimed) until every actor of `system` has stopped.
async fn drained(system: &ActorSystem) {
    while system.actor_count() > 0 {
        tokio::task::yield_now().await;
    }
}

fn spawn(c: &mut Criterion) {
    let rt = multi_thread();
    let system = rt.block_on(async { ActorSystem::new() });
    let mut group = c.benchmark_group("spawn");
    for n in [1_u64, 10, 100, 1_000] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("actors", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| {
                let system = system.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut addrs = Vec::with_capacity(n as usize);
                        let start = Instant::now();
                        for _ in 0..n {
                            addrs.push(system.spawn(Counter(0)));
                        }
                        total += start.elapsed();
                        // Dropping the addresses stops the actors and frees
                        // them; wait for that outside the clock.
                        drop(addrs);
                        drained(&system).await;
                    }
                    total
                }
            });
        });
        group.bench_with_input(BenchmarkId::new("floor_tokio_spawn", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut senders = Vec::with_capacity(n as usize);
                    let mut joins = Vec::with_capacity(n as usize);
                    let start = Instant::now();
                    for _ in 0..n {
                        let (tx, mut rx) = mpsc::channel::<u64>(256);
                        joins.push(tokio::spawn(
                            async move { while rx.recv().await.is_some() {} },
                        ));
                        senders.push(tx);
                    }
                    total += start.elapsed();
                    drop(senders);
                    join_all(joins).await;
                }
                total
            });
        });
    }
    group.finish();
}

fn messages(c: &mut Criterion) {
    let rt = multi_thread();
    let system = rt.block_on(async { ActorSystem::new() });
    let mut group = c.benchmark_group("messages");
    for n in [100_u64, 1_000, 10_000] {
        group.throughput(Throughput::Elements(n));
        let addr = rt.block_on(async { system.spawn(Counter(0)) });
        group.bench_with_input(BenchmarkId::new("one_actor", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| {
                let addr = addr.clone();
                async move {
                    for _ in 0..n {
                        addr.do_send(Inc).await.expect("send");
                    }
                    black_box(addr.send(Get).await.expect("get"))
                }
            });
        });
    }
    // 100 actors x 1k messages, one producer task per actor.
    let n_actors = 100_usize;
    let per_actor = 1_000_u64;
    group.throughput(Throughput::Elements(n_actors as u64 * per_actor));
    let addrs: Vec<Addr<Counter>> =
        rt.block_on(async { (0..n_actors).map(|_| system.spawn(Counter(0))).collect() });
    group.bench_function("100_actors_x_1k", |b| {
        b.to_async(&rt).iter(|| {
            let addrs = addrs.clone();
            async move {
                let producers = addrs.into_iter().map(|addr| {
                    tokio::spawn(async move {
                        for _ in 0..per_actor {
                            addr.do_send(Inc).await.expect("send");
                        }
                        addr.send(Get).await.expect("get")
                    })
                });
                black_box(join_all(producers).await)
            }
        });
    });
    // The floor for the same shape: 100 bare tasks draining bounded channels.
    group.bench_function("100_actors_x_1k/floor_mpsc", |b| {
        b.to_async(&rt).iter(|| async move {
            let producers = (0..n_actors).map(|_| {
                let (tx, mut rx) = mpsc::channel::<Result<(), oneshot::Sender<u64>>>(256);
                tokio::spawn(async move {
                    let mut count = 0_u64;
                    while let Some(m) = rx.recv().await {
                        match m {
                            Ok(()) => count += 1,
                            Err(reply) => {
                                let _ = reply.send(count);
                            }
                        }
                    }
                });
                tokio::spawn(async move {
                    for _ in 0..per_actor {
                        tx.send(Ok(())).await.expect("send");
                    }
                    let (reply, rx) = oneshot::channel();
                    tx.send(Err(reply)).await.expect("send");
                    rx.await.expect("reply")
                })
            });
            black_box(join_all(producers.collect::<Vec<_>>()).await)
        });
    });
    group.finish();
}

/// A bare tokio task answering `u64` requests: the request/reply floor.
fn floor_server(rt: &Runtime, yield_first: bool) -> mpsc::Sender<oneshot::Sender<u64>> {
    let (tx, mut rx) = mpsc::channel::<oneshot::Sender<u64>>(256);
    rt.spawn(async move {
        while let Some(reply) = rx.recv().await {
            if yield_first {
                tokio::task::yield_now().await;
            }
            let _ = reply.send(1);
        }
    });
    tx
}

async fn floor_request(tx: &mpsc::Sender<oneshot::Sender<u64>>) -> u64 {
    let (reply, rx) = oneshot::channel();
    tx.send(reply).await.expect("send");
    rx.await.expect("reply")
}

fn request_reply(c: &mut Criterion) {
    for (name, rt) in [
        ("multi_thread", multi_thread()),
        ("current_thread", current_thread()),
    ] {
        let system = rt.block_on(async { ActorSystem::new() });
        let addr = rt.block_on(async { system.spawn(Counter(0)) });
        let floor = rt.block_on(async { floor_server(&rt, false) });
        let floor_async = rt.block_on(async { floor_server(&rt, true) });
        let mut group = c.benchmark_group(format!("request_reply/{name}"));
        group.bench_function("sync_handler", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(addr.send(Get).await.expect("send")) });
        });
        group.bench_function("floor_mpsc_oneshot", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(floor_request(&floor).await) });
        });
        group.bench_function("async_handler", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(addr.send(GetAsync).await.expect("send")) });
        });
        group.bench_function("floor_async", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(floor_request(&floor_async).await) });
        });
        group.finish();
    }
}

fn concurrent(c: &mut Criterion) {
    let rt = multi_thread();
    let system = rt.block_on(async { ActorSystem::new() });
    let addr = rt.block_on(async { system.spawn(Counter(0)) });
    let floor = rt.block_on(async { floor_server(&rt, false) });
    let mut group = c.benchmark_group("concurrent_requests");
    for n in [10_u64, 100] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("actor", n), &n, |b, &n| {
            b.to_async(&rt)
                .iter(|| async { black_box(join_all((0..n).map(|_| addr.send(Get))).await) });
        });
        group.bench_with_input(BenchmarkId::new("floor", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| async {
                black_box(join_all((0..n).map(|_| floor_request(&floor))).await)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, spawn, messages, request_reply, concurrent);
criterion_main!(benches);
