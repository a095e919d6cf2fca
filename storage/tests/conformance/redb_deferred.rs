//! Deferred durability in the redb backend: a commit group made with
//! `Durability::Deferred` is durable after `flush`, after the bound
//! (`RedbConfig::deferred_durability_max`) without any call, and after a
//! drop; a `kill -9` before then loses it whole, never part of it, and what
//! survives is a prefix of the commit order. Durable commits following
//! regularly keep the file from growing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_storage::{
    Durability, EntityKey, Epoch, MetaKey, RedbConfig, RedbStorage, ShardId, Storage, WriteBatch,
};

use crate::child::{self, say};

const DIR_ENV: &str = "SHOAL_STORAGE_DEFERRED_DIR";
const MODE_ENV: &str = "SHOAL_STORAGE_DEFERRED_MODE";

/// Shards every group writes to (one batch each).
const SHARDS: u32 = 8;

/// Groups between two flushes in the `stream` child.
const FLUSH_EVERY: u64 = 100;

/// The `stream` child is killed at the first group at or past this one.
const KILL_AT: u64 = 350;

fn open(path: &Path, deferred_max: Duration) -> RedbStorage {
    RedbStorage::open(
        RedbConfig::builder(path)
            .cache_bytes(8 << 20)
            .deferred_durability_max(deferred_max)
            .build()
            .expect("valid config"),
    )
    .expect("opens")
}

fn marker() -> MetaKey {
    MetaKey::new("deferred.applied").expect("valid meta key")
}

/// The entity every group overwrites in `shard`.
fn cell(shard: u32) -> EntityKey {
    EntityKey::new(ShardId::new(shard), "Cell", "cell").expect("valid key")
}

/// The entity only group `g` writes in `shard`.
fn own(shard: u32, g: u64) -> EntityKey {
    EntityKey::new(ShardId::new(shard), "Group", format!("g{g}")).expect("valid key")
}

/// Group `g`: one batch per shard (its cell and its own entity set to
/// `g`), with the marker `g`, as one deferred commit group.
async fn commit_group(storage: &RedbStorage, g: u64) {
    let value = Bytes::from(g.to_be_bytes().to_vec());
    let batches = (0..SHARDS)
        .map(|shard| {
            let mut batch = WriteBatch::new(ShardId::new(shard), Epoch::ZERO);
            batch.put_state(&cell(shard), value.clone());
            batch.put_state(&own(shard, g), value.clone());
            batch
        })
        .collect();
    let results = storage
        .commit_group_with(batches, Some((marker(), value)), Durability::Deferred)
        .await
        .expect("the group commits");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// The marker: the last group the file holds.
async fn last_group(storage: &RedbStorage) -> Option<u64> {
    let bytes = storage.read_meta(&marker()).await.expect("reads")?;
    let bytes: [u8; 8] = bytes.as_ref().try_into().expect("an 8-byte marker");
    Some(u64::from_be_bytes(bytes))
}

/// Asserts the file holds exactly groups `1..=last`, each whole, and
/// nothing of the `after` groups following it.
async fn assert_prefix(storage: &RedbStorage, last: u64, after: u64) {
    for shard in 0..SHARDS {
        let expected = (last > 0).then(|| Bytes::from(last.to_be_bytes().to_vec()));
        assert_eq!(
            storage.load_state(&cell(shard)).await.expect("reads"),
            expected,
            "shard {shard}'s cell disagrees with the marker {last}"
        );
        for g in 1..=last {
            assert_eq!(
                storage.load_state(&own(shard, g)).await.expect("reads"),
                Some(Bytes::from(g.to_be_bytes().to_vec())),
                "group {g} (at or before the marker {last}) lacks shard {shard}"
            );
        }
        for g in last + 1..=last + after {
            assert_eq!(
                storage.load_state(&own(shard, g)).await.expect("reads"),
                None,
                "group {g} (after the marker {last}) is partly there: shard {shard}"
            );
        }
    }
}

/// The child side of the `kill -9` tests; does nothing unless started by
/// one of them. Modes:
/// - `stream` (bound 20 ms): deferred groups 1, 2, … in a loop, printing
///   `GROUP g` after each and `FLUSHED g` after every hundredth's flush;
/// - `bound` (bound 1 s): a flush, group 1, a wait of 2.5 s, `ONE`; group
///   2, `TWO`; then it stalls until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the deferred-durability kill -9 tests"]
async fn deferred_crash_child() {
    let (Some(dir), Some(mode)) = (std::env::var_os(DIR_ENV), std::env::var(MODE_ENV).ok()) else {
        return;
    };
    let path = PathBuf::from(dir).join("data.redb");
    match mode.as_str() {
        "stream" => {
            let storage = open(&path, Duration::from_millis(20));
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut g = 0;
            while Instant::now() < deadline {
                g += 1;
                commit_group(&storage, g).await;
                say(&format!("GROUP {g}"));
                if g % FLUSH_EVERY == 0 {
                    storage.flush().await.expect("flushes");
                    say(&format!("FLUSHED {g}"));
                }
            }
        }
        "bound" => {
            let storage = open(&path, Duration::from_secs(1));
            // The writer thread has run and waits with nothing to make
            // durable: group 1, small enough to commit on this thread, must
            // wake it to arm the bound.
            storage.flush().await.expect("flushes");
            commit_group(&storage, 1).await;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            say("ONE");
            commit_group(&storage, 2).await;
            say("TWO");
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Runs the child in `mode` on `dir`, kills it (SIGKILL) at the first line
/// `kill_at` accepts, and returns the lines it printed.
fn run_and_kill(dir: &Path, mode: &str, kill_at: impl Fn(&str) -> bool) -> Vec<String> {
    let child::Run {
        lines,
        killed,
        status,
    } = child::run_and_kill(
        "redb_deferred::deferred_crash_child",
        &[(DIR_ENV, dir.as_os_str()), (MODE_ENV, OsStr::new(mode))],
        kill_at,
    );
    assert!(killed, "the child ended ({status}) before the kill point");
    lines
}

/// A stream of deferred groups, flushed every hundred, killed mid-stream:
/// the file reopens with every flushed group and exactly a prefix of the
/// groups — each whole, the marker naming the last one.
#[tokio::test]
async fn a_deferred_stream_killed_keeps_a_whole_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = run_and_kill(dir.path(), "stream", |line| {
        line.strip_prefix("GROUP ")
            .and_then(|g| g.parse::<u64>().ok())
            .is_some_and(|g| g >= KILL_AT)
    });
    let flushed = lines
        .iter()
        .filter_map(|line| line.strip_prefix("FLUSHED ")?.parse::<u64>().ok())
        .max()
        .expect("the child flushed");
    let printed = lines
        .iter()
        .filter_map(|line| line.strip_prefix("GROUP ")?.parse::<u64>().ok())
        .max()
        .expect("the child committed");

    let storage = open(&dir.path().join("data.redb"), Duration::from_millis(20));
    let last = last_group(&storage).await.expect("a marker");
    eprintln!("killed after group {printed}; flushed {flushed}; reopened at group {last}");
    assert!(
        last >= flushed,
        "flushed group {flushed} was lost: the file ends at {last}"
    );
    assert_prefix(&storage, last, printed.saturating_sub(last) + 50).await;
    storage.close().await.expect("closes");
}

/// With no call at all, a deferred group is durable once the bound passed
/// (group 1 survives the kill); one not yet durable (group 2, killed well
/// within the bound) is lost whole — the group really was deferred.
#[tokio::test]
async fn deferred_groups_are_durable_after_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_and_kill(dir.path(), "bound", |line| line == "TWO");
    let storage = open(&dir.path().join("data.redb"), Duration::from_secs(1));
    assert_eq!(last_group(&storage).await, Some(1));
    assert_prefix(&storage, 1, 1).await;
    storage.close().await.expect("closes");
}

/// Dropping the last handle (or closing) makes deferred groups durable.
#[tokio::test]
async fn deferred_groups_survive_drop_and_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let max = Duration::from_secs(10);
    let storage = open(&path, max);
    commit_group(&storage, 1).await;
    drop(storage);
    let storage = open(&path, max);
    assert_eq!(last_group(&storage).await, Some(1));
    commit_group(&storage, 2).await;
    storage.close().await.expect("closes");
    let storage = open(&path, max);
    assert_eq!(last_group(&storage).await, Some(2));
    assert_prefix(&storage, 2, 1).await;
    storage.close().await.expect("closes");
}

/// Thousands of deferred groups overwriting the same records: the durable
/// commits the bound forces let redb reuse the freed pages, so the file
/// stays small.
#[tokio::test]
async fn a_stream_of_deferred_groups_does_not_grow_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.redb");
    let storage = open(&path, Duration::from_millis(5));
    let value = Bytes::from(vec![7u8; 2048]);
    for g in 0..3_000u64 {
        let batches = (0..SHARDS)
            .map(|shard| {
                let mut batch = WriteBatch::new(ShardId::new(shard), Epoch::ZERO);
                batch.put_state(&cell(shard), value.clone());
                batch
            })
            .collect();
        storage
            .commit_group_with(
                batches,
                Some((marker(), Bytes::from(g.to_be_bytes().to_vec()))),
                Durability::Deferred,
            )
            .await
            .expect("commits");
    }
    let bytes = std::fs::metadata(&path).expect("stat").len();
    eprintln!("file after 3000 deferred groups: {bytes} bytes");
    assert!(bytes < 8 << 20, "the file grew to {bytes} bytes");
    storage.close().await.expect("closes");
}
