//! The redb backend's file handling: what was acknowledged is there after a
//! reopen (and after `kill -9` of a writing process), and every kind of bad
//! file fails to open with a clear error naming the path — never a panic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_storage::redb_backend::FORMAT_VERSION;
use shoal_storage::snapshot;
use shoal_storage::{
    EntityKey, Epoch, Error, Message, MetaKey, RedbConfig, RedbStorage, RequestId, ShardId,
    ShardRange, ShardScope, StepIndex, Storage, TimerId, TimerKey, Timestamp, WriteBatch,
};

use crate::child::{self, say};

fn config(path: &Path) -> RedbConfig {
    RedbConfig::builder(path)
        .cache_bytes(8 << 20)
        .build()
        .expect("valid config")
}

fn open(path: &Path) -> shoal_storage::Result<RedbStorage> {
    RedbStorage::open(config(path))
}

/// Asserts `result` is a fatal open error whose message names `path`.
fn assert_open_error(result: shoal_storage::Result<RedbStorage>, path: &Path) -> Error {
    let error = match result {
        Ok(_) => panic!("{} opened, but it should not", path.display()),
        Err(error) => error,
    };
    let text = error.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "the error should name the path: {text}"
    );
    assert!(error.is_fatal(), "{error:?}");
    error
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn write_sample_data(storage: &RedbStorage, entities: u32) {
    let shard = ShardId::new(3);
    for i in 0..entities {
        let key = EntityKey::new(shard, "Account", format!("a{i}")).expect("valid key");
        let mut batch = WriteBatch::new(shard, Epoch::new(2));
        batch.put_state(&key, Bytes::from(vec![i as u8; 512]));
        batch.append_journal(
            &key,
            RequestId::new(u128::from(i)),
            StepIndex::new(0),
            Bytes::from_static(b"j"),
        );
        storage.commit(batch).await.expect("commits");
    }
}

#[tokio::test]
async fn acknowledged_commits_survive_drop_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let shard = ShardId::new(1);
    let key = EntityKey::new(shard, "Order", "o1").expect("valid key");
    let timer = TimerKey::new(shard, Timestamp::from_unix_ms(99), TimerId::new(5));
    {
        let storage = open(&path).expect("creates");
        let mut batch = WriteBatch::new(shard, Epoch::new(7));
        batch.put_state(&key, Bytes::from_static(b"paid"));
        batch.append_journal(
            &key,
            RequestId::new(1),
            StepIndex::new(0),
            Bytes::from_static(b"charged"),
        );
        batch.enqueue(Message::new(
            RequestId::new(2),
            key.clone(),
            "ship",
            Bytes::from_static(b"{}"),
            Timestamp::from_unix_ms(50),
        ));
        batch.ack(RequestId::new(1), Bytes::from_static(b"ok"));
        batch.put_timer(timer, Bytes::from_static(b"remind"));
        storage.commit(batch).await.expect("commits");
        // Dropped without close: the drop finishes the writer and frees the file.
    }
    let storage = open(&path).expect("reopens");
    assert_eq!(
        storage.shard_epoch(shard).await.expect("reads"),
        Epoch::new(7)
    );
    assert_eq!(
        storage.load_state(&key).await.expect("reads"),
        Some(Bytes::from_static(b"paid"))
    );
    assert_eq!(
        storage
            .read_journal(&key, RequestId::new(1))
            .await
            .expect("reads")
            .len(),
        1
    );
    assert_eq!(
        storage
            .read_reply(shard, RequestId::new(1))
            .await
            .expect("reads"),
        Some(Bytes::from_static(b"ok"))
    );
    let due = storage
        .due_messages(shard, Timestamp::MAX, 10)
        .await
        .expect("reads");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].handler, "ship");
    assert_eq!(
        storage
            .next_timer_due(ShardScope::All)
            .await
            .expect("reads"),
        Some(Timestamp::from_unix_ms(99))
    );
    storage.close().await.expect("closes");

    // And once more after a clean close.
    let storage = open(&path).expect("reopens after close");
    assert_eq!(
        storage.shard_epoch(shard).await.expect("reads"),
        Epoch::new(7)
    );
    storage.close().await.expect("closes");
}

#[tokio::test]
async fn a_commit_group_and_its_meta_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let applied = MetaKey::new("raft.applied").expect("valid meta key");
    let key = EntityKey::new(ShardId::new(4), "Order", "o1").expect("valid key");
    {
        let storage = open(&path).expect("creates");
        let mut batch = WriteBatch::new(key.shard(), Epoch::new(1));
        batch.put_state(&key, Bytes::from_static(b"grouped"));
        let results = storage
            .commit_group(
                vec![batch],
                Some((applied.clone(), Bytes::from_static(b"7"))),
            )
            .await
            .expect("commits");
        assert!(results[0].is_ok());
        storage.close().await.expect("closes");
    }
    let storage = open(&path).expect("reopens");
    assert_eq!(
        storage.load_state(&key).await.expect("reads"),
        Some(Bytes::from_static(b"grouped"))
    );
    assert_eq!(
        storage.read_meta(&applied).await.expect("reads"),
        Some(Bytes::from_static(b"7"))
    );
    storage.close().await.expect("closes");
}

/// A version-1 file written before the `node_meta` table existed opens; the
/// table is added, its data kept.
#[tokio::test]
async fn a_file_without_node_meta_gets_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let storage = open(&path).expect("creates");
    write_sample_data(&storage, 3).await;
    storage.close().await.expect("closes");
    {
        let db = ::redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("write txn");
        let node_meta: ::redb::TableDefinition<'_, &[u8], &[u8]> =
            ::redb::TableDefinition::new("node_meta");
        assert!(txn.delete_table(node_meta).expect("deletes"));
        txn.commit().expect("commits");
    }
    let storage = open(&path).expect("opens the older file");
    let key = EntityKey::new(ShardId::new(3), "Account", "a1").expect("valid key");
    assert!(storage.load_state(&key).await.expect("reads").is_some());
    let applied = MetaKey::new("applied").expect("valid meta key");
    assert_eq!(storage.read_meta(&applied).await.expect("reads"), None);
    storage
        .commit_group(
            Vec::new(),
            Some((applied.clone(), Bytes::from_static(b"1"))),
        )
        .await
        .expect("commits");
    assert_eq!(
        storage.read_meta(&applied).await.expect("reads"),
        Some(Bytes::from_static(b"1"))
    );
    storage.close().await.expect("closes");
}

#[test]
fn garbage_files_fail_to_open_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, len) in [
        ("tiny.redb", 7),
        ("small.redb", 1_000),
        ("large.redb", 256 * 1024),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, noise(len as u64, len)).expect("writes garbage");
        let error = assert_open_error(open(&path), &path);
        eprintln!("{name}: {error}");
        assert!(matches!(error, Error::Corrupt { .. }), "{name}: {error:?}");
    }
    let path = dir.path().join("text.redb");
    std::fs::write(&path, "this is not a database\n".repeat(500)).expect("writes text");
    assert_open_error(open(&path), &path);
}

#[tokio::test]
async fn truncated_files_fail_to_open_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let storage = open(&path).expect("creates");
    write_sample_data(&storage, 200).await;
    storage.close().await.expect("closes");
    let full = std::fs::read(&path).expect("reads the file");
    assert!(
        full.len() > 64 * 1024,
        "a file worth truncating: {} bytes",
        full.len()
    );

    for keep in [full.len() / 2, full.len() / 10, 512, 1] {
        let cut = dir.path().join(format!("cut-{keep}.redb"));
        std::fs::write(&cut, &full[..keep]).expect("writes the truncated copy");
        let error = assert_open_error(open(&cut), &cut);
        eprintln!("kept {keep} of {} bytes: {error}", full.len());
    }
}

#[tokio::test]
async fn a_future_format_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    open(&path).expect("creates").close().await.expect("closes");

    let meta: ::redb::TableDefinition<'_, &str, &[u8]> = ::redb::TableDefinition::new("meta");
    {
        let db = ::redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("write txn");
        txn.open_table(meta)
            .expect("meta")
            .insert(
                "format_version",
                (FORMAT_VERSION + 1).to_be_bytes().as_slice(),
            )
            .expect("writes");
        txn.commit().expect("commits");
    }

    let error = assert_open_error(open(&path), &path);
    match error {
        Error::UnsupportedFormat {
            found, expected, ..
        } => {
            assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
    let text = assert_open_error(open(&path), &path).to_string();
    assert!(
        text.contains("unsupported storage format version"),
        "{text}"
    );

    let db = ::redb::Database::open(&path).expect("raw open");
    let txn = ::redb::ReadableDatabase::begin_read(&db).expect("read txn");
    let stored = txn
        .open_table(meta)
        .expect("meta")
        .get("format_version")
        .expect("reads")
        .map(|value| value.value().to_vec());
    assert_eq!(
        stored,
        Some((FORMAT_VERSION + 1).to_be_bytes().to_vec()),
        "the refused file was not rewritten"
    );
}

#[test]
fn a_foreign_redb_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other-app.redb");
    {
        let db = ::redb::Database::create(&path).expect("raw create");
        let txn = db.begin_write().expect("write txn");
        let users: ::redb::TableDefinition<'_, u64, &str> = ::redb::TableDefinition::new("users");
        txn.open_table(users)
            .expect("table")
            .insert(1, "ada")
            .expect("writes");
        txn.commit().expect("commits");
    }
    let error = assert_open_error(open(&path), &path);
    assert!(error.to_string().contains("meta"), "{error}");
}

#[tokio::test]
async fn a_file_open_elsewhere_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let first = open(&path).expect("opens");
    let error = assert_open_error(open(&path), &path);
    assert!(matches!(error, Error::Locked { .. }), "{error:?}");
    first.close().await.expect("closes");
    open(&path).expect("free again after close");
}

#[test]
fn missing_files_and_directories_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.redb");
    let result = RedbStorage::open(
        RedbConfig::builder(&missing)
            .create_if_missing(false)
            .build()
            .expect("valid config"),
    );
    let error = assert_open_error(result, &missing);
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(!missing.exists(), "nothing was created");

    let error = assert_open_error(open(dir.path()), dir.path());
    assert!(matches!(error, Error::Io { .. }), "{error:?}");

    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").expect("creates an empty file");
    drop(open(&empty).expect("an empty file is initialised"));
}

// ---- kill -9 ----

const CRASH_DIR_ENV: &str = "SHOAL_STORAGE_CRASH_DIR";
const CRASH_ACKS_BEFORE_KILL: usize = 300;

/// Entity of crash-test commit `n` (each commit writes its own entity).
fn crash_key(n: u64) -> EntityKey {
    EntityKey::new(ShardId::new((n % 8) as u32), "Crash", format!("c{n}")).expect("valid key")
}

/// The child side of `acknowledged_commits_survive_kill_9`: commits from 16
/// concurrent tasks and prints `ACK n` after each acknowledged commit, until
/// killed (or a bound of commits and time is reached). Does nothing unless
/// started by that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_commits_survive_kill_9"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let storage = open(&PathBuf::from(dir).join("data.redb")).expect("child opens");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..2_000u64 {
                if Instant::now() > deadline {
                    break;
                }
                let n = i * 16 + task;
                let key = crash_key(n);
                let mut batch = WriteBatch::new(key.shard(), Epoch::ZERO);
                batch.put_state(&key, Bytes::from(n.to_be_bytes().to_vec()));
                batch.ack(RequestId::new(u128::from(n)), Bytes::from_static(b"ok"));
                storage.commit(batch).await.expect("child commits");
                say(&format!("ACK {n}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("child task");
    }
}

#[tokio::test]
async fn acknowledged_commits_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acks = 0;
    let child::Run {
        lines,
        killed,
        status,
    } = child::run_and_kill(
        "redb_files::crash_child",
        &[(CRASH_DIR_ENV, dir.path().as_os_str())],
        |line| {
            acks += usize::from(line.starts_with("ACK "));
            acks >= CRASH_ACKS_BEFORE_KILL
        },
    );
    let acked: Vec<u64> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("ACK "))
        .map(|n| n.parse::<u64>().expect("ack number"))
        .collect();
    eprintln!("child {status} after {} acknowledged commits", acked.len());
    assert!(
        killed,
        "the child stopped early ({status}) after {} acks",
        acked.len()
    );

    let storage = open(&dir.path().join("data.redb")).expect("reopens after the crash");
    for n in &acked {
        let key = crash_key(*n);
        assert_eq!(
            storage.load_state(&key).await.expect("reads"),
            Some(Bytes::from(n.to_be_bytes().to_vec())),
            "acknowledged commit {n} was lost"
        );
        assert!(
            storage
                .read_reply(key.shard(), RequestId::new(u128::from(*n)))
                .await
                .expect("reads")
                .is_some(),
            "the reply of acknowledged commit {n} was lost"
        );
    }
    storage.close().await.expect("closes");
}

/// Overwrites one page of a valid file with noise, 40 times over. redb
/// either refuses the file or opens it; either way no panic may escape (redb
/// itself can panic on a damaged page: the backend catches it), and every
/// read and write afterwards returns a result.
#[tokio::test]
async fn damaged_pages_never_panic() {
    const PAGE_BYTES: usize = 4096;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let storage = open(&path).expect("creates");
    write_sample_data(&storage, 200).await;
    storage.close().await.expect("closes");
    let full = std::fs::read(&path).expect("reads the file");
    let pages = full.len() / PAGE_BYTES;

    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for seed in 1..=40u64 {
        let mut damaged = full.clone();
        let page = noise(seed, 8).iter().fold(0usize, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(usize::from(*b))
        }) % pages;
        let at = page * PAGE_BYTES;
        damaged[at..at + PAGE_BYTES].copy_from_slice(&noise(seed + 1_000, PAGE_BYTES));
        let copy = dir.path().join(format!("damaged-{seed}.redb"));
        std::fs::write(&copy, &damaged).expect("writes the damaged copy");
        let outcome = match open(&copy) {
            Err(error) => {
                assert!(error.is_fatal(), "{error:?}");
                "refused at open"
            }
            Ok(storage) => {
                let mut outcome = "opened, reads and writes ok";
                for i in 0..200 {
                    let key = EntityKey::new(ShardId::new(3), "Account", format!("a{i}"))
                        .expect("valid key");
                    let journal = storage.read_journal(&key, RequestId::new(i)).await;
                    if storage.load_state(&key).await.is_err() || journal.is_err() {
                        outcome = "opened, a read failed";
                    }
                }
                if storage
                    .due_timers(ShardScope::All, Timestamp::MAX, 100)
                    .await
                    .is_err()
                {
                    outcome = "opened, a read failed";
                }
                let key = EntityKey::new(ShardId::new(3), "Account", "new").expect("valid key");
                let mut batch = WriteBatch::new(key.shard(), Epoch::new(2));
                batch.put_state(&key, Bytes::from_static(b"x"));
                if storage.commit(batch).await.is_err() {
                    outcome = "opened, a write failed";
                }
                outcome
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("damaged-page outcomes: {outcomes:?}");
}

// ---- Import crash safety ----

const IMPORT_DIR_ENV: &str = "SHOAL_STORAGE_IMPORT_CRASH_DIR";

/// A stream fed through a channel, so the child can stall it half-way.
struct Fed(tokio::sync::mpsc::Receiver<shoal_storage::Result<Bytes>>);

impl futures_core::Stream for Fed {
    type Item = shoal_storage::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The child side of `an_import_killed_half_way_leaves_the_old_data`:
/// imports `snapshot.bin` into `data.redb`, feeding half the chunks, then
/// prints `HALF` and stalls until killed. Does nothing unless started by
/// that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of an_import_killed_half_way_leaves_the_old_data"]
async fn import_crash_child() {
    let Some(dir) = std::env::var_os(IMPORT_DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let snapshot = std::fs::read(dir.join("snapshot.bin")).expect("reads the snapshot");
    let storage = open(&dir.join("data.redb")).expect("child opens");
    let (feed, fed) = tokio::sync::mpsc::channel(1);
    let import = tokio::spawn({
        let storage = storage.clone();
        async move { storage.import(Box::pin(Fed(fed))).await }
    });
    let chunks: Vec<&[u8]> = snapshot.chunks(64 * 1024).collect();
    for chunk in &chunks[..chunks.len() / 2] {
        feed.send(Ok(Bytes::copy_from_slice(chunk)))
            .await
            .expect("the import reads on");
    }
    // Give the writer time to apply (and spill) what it was fed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    say("HALF");
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop((feed, import));
}

async fn export_all(storage: &RedbStorage) -> Vec<u8> {
    let stream = storage.export(ShardRange::ALL).await.expect("exports");
    snapshot::read_to_end(stream)
        .await
        .expect("reads the export")
}

/// `kill -9` of a process in the middle of an import: on reopen the file
/// holds exactly the old dataset (the import is one redb write transaction,
/// never committed), not a mix.
#[tokio::test]
async fn an_import_killed_half_way_leaves_the_old_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The new dataset: big enough that its import spans many chunks.
    let source = open(&dir.path().join("source.redb")).expect("creates");
    for i in 0..8u32 {
        let shard = ShardId::new(i);
        let mut batch = WriteBatch::new(shard, Epoch::new(5));
        for n in 0..256u32 {
            let key = EntityKey::new(shard, "New", format!("n{n}")).expect("valid key");
            batch.put_state(&key, Bytes::from(vec![n as u8; 4096]));
        }
        source.commit(batch).await.expect("commits");
    }
    let snapshot = export_all(&source).await;
    source.close().await.expect("closes");
    std::fs::write(dir.path().join("snapshot.bin"), &snapshot).expect("writes the snapshot");

    // The old dataset, in the file the child imports into.
    let path = dir.path().join("data.redb");
    let storage = open(&path).expect("creates");
    write_sample_data(&storage, 50).await;
    storage
        .commit_group(
            Vec::new(),
            Some((
                MetaKey::new("applied").expect("valid key"),
                Bytes::from_static(b"old"),
            )),
        )
        .await
        .expect("commits meta");
    let old = export_all(&storage).await;
    storage.close().await.expect("closes");

    let child::Run { killed, status, .. } = child::run_and_kill(
        "redb_files::import_crash_child",
        &[(IMPORT_DIR_ENV, dir.path().as_os_str())],
        |line| line.ends_with("HALF"),
    );
    assert!(
        killed,
        "the child ended ({status}) before reaching half-way"
    );

    let storage = open(&path).expect("reopens after the crash");
    assert!(
        export_all(&storage).await == old,
        "after a crash mid-import the file must hold exactly the old data"
    );
    // And a completed import is durable across reopen.
    let chunks = snapshot
        .chunks(64 * 1024)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    storage
        .import(snapshot::stream_from_chunks(chunks))
        .await
        .expect("imports");
    drop(storage);
    let storage = open(&path).expect("reopens");
    assert!(export_all(&storage).await == snapshot);
    storage.close().await.expect("closes");
}
