//! Transport benchmarks: request/reply latency and pipelined throughput
//! over loopback QUIC with mutual TLS, and the frame codec by payload size
//! (cineyma's serialization table).
//!
//! Run: `cargo bench -p shoal-transport --bench transport -- --warm-up-time 1 --measurement-time 3`
//!
//! Targets: 64 B request/reply median <= 100 us; >= 50,000 requests/s with
//! 64 in flight on one connection; 64 B encode + decode <= 200 ns.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use shoal_transport::frame::{decode_frame, encode_frame, frame_bytes_max};
use shoal_transport::proto::{self, envelope::Body};
use shoal_transport::{Ca, Endpoint, Kind, NodeId, RemoteError, Router, Validity};

const ECHO: Kind = Kind(1);
const IN_FLIGHT: u64 = 64;

struct Pair {
    server: Endpoint,
    client: Endpoint,
}

fn pair(runtime: &tokio::runtime::Runtime) -> Pair {
    runtime.block_on(async {
        let ca = Ca::generate("bench").unwrap();
        let localhost = "127.0.0.1:0".parse().unwrap();
        let server = Endpoint::builder(ca.issue_node(NodeId::new(1), Validity::days(1)).unwrap())
            .router(
                Router::new().unary(ECHO, |req| async move { Ok::<_, RemoteError>(req.payload) }),
            )
            .bind(localhost)
            .unwrap();
        let client = Endpoint::builder(ca.issue_node(NodeId::new(2), Validity::days(1)).unwrap())
            .bind(localhost)
            .unwrap();
        client.add_peer(NodeId::new(1), server.local_addr());
        client.connect(NodeId::new(1)).await.unwrap();
        Pair { server, client }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn request_reply(c: &mut Criterion) {
    let runtime = runtime();
    let Pair { server, client } = pair(&runtime);
    let payload = Bytes::from(vec![0xabu8; 64]);

    let mut group = c.benchmark_group("request_reply");
    group.throughput(Throughput::Elements(1));
    group.bench_function("64B", |b| {
        b.to_async(&runtime).iter(|| {
            let client = client.clone();
            let payload = payload.clone();
            async move {
                black_box(client.request(NodeId::new(1), ECHO, payload).await.unwrap());
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(1));
    group.bench_function("64B_64_in_flight", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let client = client.clone();
            let payload = payload.clone();
            async move {
                // 64 workers keep 64 requests in flight until `iters` are done.
                let remaining = Arc::new(AtomicU64::new(iters));
                let started = Instant::now();
                let workers: Vec<_> = (0..IN_FLIGHT)
                    .map(|_| {
                        let client = client.clone();
                        let payload = payload.clone();
                        let remaining = remaining.clone();
                        tokio::spawn(async move {
                            while remaining
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok()
                            {
                                black_box(
                                    client
                                        .request(NodeId::new(1), ECHO, payload.clone())
                                        .await
                                        .unwrap(),
                                );
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    worker.await.unwrap();
                }
                started.elapsed()
            }
        })
    });
    group.finish();

    runtime.block_on(async {
        client.shutdown().await;
        server.shutdown().await;
    });
}

fn request_envelope(payload: Bytes) -> proto::Envelope {
    proto::Envelope {
        body: Some(Body::Request(proto::Request {
            kind: ECHO.0,
            payload,
        })),
    }
}

fn codec(c: &mut Criterion) {
    let max = frame_bytes_max(16 * 1024 * 1024);
    let mut group = c.benchmark_group("codec");
    for (name, size) in [
        ("64B", 64),
        ("1KiB", 1024),
        ("16KiB", 16 * 1024),
        ("256KiB", 256 * 1024),
    ] {
        let payload = Bytes::from(vec![0x5au8; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_frame(&request_envelope(black_box(payload.clone())), max).unwrap())
        });
        let frame = encode_frame(&request_envelope(payload.clone()), max).unwrap();
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&frame[..]),
                |mut buf| decode_frame(black_box(&mut buf), max).unwrap().unwrap(),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("round_trip/{name}"), |b| {
            b.iter(|| {
                let frame =
                    encode_frame(&request_envelope(black_box(payload.clone())), max).unwrap();
                let mut buf = BytesMut::from(frame);
                decode_frame(&mut buf, max).unwrap().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = codec, request_reply
}
criterion_main!(benches);
