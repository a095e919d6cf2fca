//! Storage benchmarks: the cost of a durable commit, and group commit's
//! throughput under concurrency.
//!
//! Run: `cargo bench -p shoal-storage --bench storage -- --warm-up-time 1 --measurement-time 3`
//!
//! - `raw_redb_commit`: the floor — one redb write transaction inserting
//!   ~100 bytes with immediate durability, committed;
//! - `redb_storage_commit/one_caller`: `RedbStorage::commit` of a small batch
//!   (state put + journal append) from one caller;
//! - `redb_storage_commit/64_callers` (and `_no_group_commit`): batches/s
//!   with 64 concurrent callers, with group commit on (default) and off
//!   (`group_commit_batches_max(1)`), to show what sharing fsyncs buys;
//! - `memory_storage_commit/one_caller`: the in-memory backend, for scale;
//! - `redb_storage_commit_group/64_batches`: batches/s applied by one
//!   caller through `commit_group` (64 small batches and a meta record per
//!   transaction: how a Raft state machine applies), against `one_caller`;
//! - `redb_snapshot/export_10k`, `redb_snapshot/import_10k`: bytes/s of a
//!   full export (stream drained) and of importing it back (10 000 entities
//!   of 1 KiB).
//!
//! Data files live in a temporary directory on the default temp filesystem
//! (`TMPDIR`): put it on the disk you want to measure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redb::{Durability, TableDefinition};
use shoal_storage::{
    EntityKey, Epoch, MemoryStorage, MetaKey, RedbConfig, RedbStorage, RequestId, ShardId,
    ShardRange, StepIndex, Storage, WriteBatch, snapshot,
};

const CALLERS: u64 = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small batch like one activity's: a state put and a journal append.
fn small_batch(n: u64) -> WriteBatch {
    let shard = ShardId::new((n % 16) as u32);
    let key = EntityKey::new(shard, "Counter", format!("c{}", n % 1024)).expect("valid key");
    let mut batch = WriteBatch::new(shard, Epoch::ZERO);
    batch.put_state(&key, Bytes::from(vec![7u8; 64]));
    batch.append_journal(
        &key,
        RequestId::new(u128::from(n)),
        StepIndex::new(0),
        Bytes::from(vec![1u8; 32]),
    );
    batch
}

fn raw_redb_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::create(dir.path().join("raw.redb")).expect("creates");
    let table: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("bench");
    let value = [42u8; 100];
    let mut n = 0u64;
    c.bench_function("raw_redb_commit", |b| {
        b.iter(|| {
            n += 1;
            let mut txn = db.begin_write().expect("write txn");
            txn.set_durability(Durability::Immediate)
                .expect("durability");
            txn.open_table(table)
                .expect("table")
                .insert(n, value.as_slice())
                .expect("insert");
            txn.commit().expect("commit");
        });
    });
}

fn open_redb(dir: &tempfile::TempDir, name: &str, batches_max: usize) -> RedbStorage {
    let config = RedbConfig::builder(dir.path().join(name))
        .group_commit_batches_max(batches_max)
        .build()
        .expect("valid config");
    RedbStorage::open(config).expect("opens")
}

/// Commits `total` batches from `CALLERS` concurrent tasks; returns the time.
async fn concurrent_commits(
    storage: Arc<dyn Storage>,
    counter: Arc<AtomicU64>,
    total: u64,
) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let share = total / CALLERS + u64::from(caller < total % CALLERS);
        let storage = Arc::clone(&storage);
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                storage.commit(small_batch(n)).await.expect("commits");
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller task");
    }
    start.elapsed()
}

fn redb_storage_commit(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("redb_storage_commit");
    group.throughput(Throughput::Elements(1));

    let storage: Arc<dyn Storage> = Arc::new(open_redb(&dir, "one.redb", 1024));
    let counter = Arc::new(AtomicU64::new(0));
    group.bench_function("one_caller", |b| {
        b.to_async(&rt).iter(|| {
            let storage = Arc::clone(&storage);
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move { storage.commit(small_batch(n)).await.expect("commits") }
        });
    });

    for (name, batches_max) in [("64_callers", 1024), ("64_callers_no_group_commit", 1)] {
        let storage: Arc<dyn Storage> =
            Arc::new(open_redb(&dir, &format!("{name}.redb"), batches_max));
        let counter = Arc::new(AtomicU64::new(0));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                concurrent_commits(Arc::clone(&storage), Arc::clone(&counter), iters)
            });
        });
    }
    group.finish();
}

fn memory_storage_commit(c: &mut Criterion) {
    let rt = runtime();
    let storage = MemoryStorage::new();
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("memory_storage_commit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_caller", |b| {
        b.to_async(&rt).iter(|| {
            let storage = storage.clone();
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move { storage.commit(small_batch(n)).await.expect("commits") }
        });
    });
    group.finish();
}

fn redb_storage_commit_group(c: &mut Criterion) {
    const BATCHES: u64 = 64;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(open_redb(&dir, "group.redb", 1024));
    let applied = MetaKey::new("applied").expect("valid key");
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("redb_storage_commit_group");
    group.throughput(Throughput::Elements(BATCHES));
    group.bench_function("64_batches", |b| {
        b.to_async(&rt).iter(|| {
            let storage = Arc::clone(&storage);
            let first = counter.fetch_add(BATCHES, Ordering::Relaxed);
            let batches = (first..first + BATCHES).map(small_batch).collect();
            let meta = Some((applied.clone(), Bytes::from(first.to_be_bytes().to_vec())));
            async move { storage.commit_group(batches, meta).await.expect("commits") }
        });
    });
    group.finish();
}

fn redb_snapshot(c: &mut Criterion) {
    const ENTITIES: u32 = 10_000;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(open_redb(&dir, "snapshot.redb", 1024));
    rt.block_on(async {
        for shard in 0..16u32 {
            let mut batch = WriteBatch::new(ShardId::new(shard), Epoch::ZERO);
            for n in (shard..ENTITIES).step_by(16) {
                let key = EntityKey::new(ShardId::new(shard), "Bench", format!("e{n}"))
                    .expect("valid key");
                batch.put_state(&key, Bytes::from(vec![n as u8; 1024]));
            }
            storage.commit(batch).await.expect("commits");
        }
    });
    let exported = rt.block_on(async {
        let stream = storage.export(ShardRange::ALL).await.expect("exports");
        snapshot::read_to_end(stream).await.expect("drains")
    });
    let mut group = c.benchmark_group("redb_snapshot");
    group.throughput(Throughput::Bytes(exported.len() as u64));
    group.sample_size(10);
    group.bench_function("export_10k", |b| {
        b.to_async(&rt).iter(|| {
            let storage = Arc::clone(&storage);
            async move {
                let mut stream = storage.export(ShardRange::ALL).await.expect("exports");
                let mut bytes = 0usize;
                while let Some(chunk) =
                    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
                {
                    bytes += chunk.expect("chunk").len();
                }
                bytes
            }
        });
    });
    let exported = Bytes::from(exported);
    group.bench_function("import_10k", |b| {
        b.to_async(&rt).iter(|| {
            let storage = Arc::clone(&storage);
            let chunks = (0..exported.len())
                .step_by(256 * 1024)
                .map(|at| Ok(exported.slice(at..exported.len().min(at + 256 * 1024))))
                .collect();
            async move {
                storage
                    .import(snapshot::stream_from_chunks(chunks))
                    .await
                    .expect("imports")
            }
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    raw_redb_commit,
    redb_storage_commit,
    memory_storage_commit,
    redb_storage_commit_group,
    redb_snapshot
);
criterion_main!(benches);
