//! [`RedbStorage`]: the default backend, one redb data file with group commit.
//!
//! # On-disk layout (format version [`FORMAT_VERSION`])
//! One redb file. Table `meta` (`&str` → bytes) holds `"magic"` =
//! [`MAGIC`] and `"format_version"` = [`FORMAT_VERSION`] as a big-endian
//! `u32`; a file whose version differs fails to open with
//! [`Error::UnsupportedFormat`], one without them with [`Error::Corrupt`].
//! Every other table maps byte keys to byte values, and every key starts
//! with the shard as a big-endian `u32`, so each shard is one contiguous
//! range per table. All integers are big-endian; `entity` is
//! `shard u32 · type_len u8 · type · id_len u16 · id`.
//!
//! | table          | key                                              | value                            |
//! |----------------|--------------------------------------------------|----------------------------------|
//! | `shard_epochs` | shard u32                                        | epoch u64                        |
//! | `state`        | entity                                           | state bytes                      |
//! | `journal`      | entity · execution u128 · step u32               | entry bytes                      |
//! | `messages`     | shard u32 · request u128                         | protobuf `shoal.storage.v1.Message`       |
//! | `message_due`  | shard u32 · next_attempt_at_ms u64 · request u128 | empty (due-time index of `messages`) |
//! | `replies`      | shard u32 · request u128                         | reply bytes                      |
//! | `dead_letters` | shard u32 · request u128                         | protobuf `shoal.storage.v1.DeadLetter`    |
//! | `timers`       | shard u32 · due_ms u64 · timer u128              | payload bytes                    |
//! | `deferreds`    | entity · name_len u8 · name                      | protobuf `shoal.storage.v1.DeferredValue` |
//! | `node_meta`    | [`MetaKey`] UTF-8 bytes (not shard-prefixed) | opaque bytes (e.g. the Raft applied marker) |
//!
//! `node_meta` is the node-metadata namespace written by
//! [`Storage::commit_group`] in the same transaction as its batches; no
//! batch op and no data read touches it. A version-1 file from before it
//! existed gets the (empty) table added at open; older builds ignore it, so
//! the format version did not change.
//!
//! # Writes: group commit
//! [`Storage::commit`] validates the batch on the caller's task, then queues
//! it (bounded by [`RedbConfig::queue_capacity`]) for one writer thread,
//! which applies everything queued (up to
//! [`RedbConfig::group_commit_batches_max`] batches and
//! [`RedbConfig::group_commit_bytes_max`] payload bytes) in one write
//! transaction with immediate durability and answers every caller after the
//! commit returns. Concurrent callers therefore share one fsync; a lone
//! caller pays one and never waits for company. Under concurrent load the
//! writer waits briefly ([`RedbConfig::group_commit_wait_max`], at most half
//! a commit) for the callers it just answered, so groups stay full. Batches
//! apply in arrival order, each seeing the ones before; a batch rejected for
//! a stale epoch gets its error without affecting its group; if a group
//! fails fatally, each of its batches is retried alone. Cancelling a
//! `commit` future does not cancel its batch once queued.
//!
//! [`Storage::commit_group`] is queued like a commit but runs alone on the
//! writer, in queue order: the commits queued before it are committed
//! first, then its batches and its `node_meta` record are applied in ONE
//! write transaction with immediate durability (one fsync); a fatal error
//! aborts that transaction, so the group applies all or nothing.
//!
//! [`Storage::commit_group_with`] with
//! [`Durability::Deferred`] runs the same way
//! but commits its transaction with redb's `Durability::None`: atomic and
//! visible at once, no fsync. The writer makes it durable with the next
//! durable transaction it commits (plain commits, immediate groups and
//! imports are all durable), at [`Storage::flush`] and when it stops, and
//! at the latest [`RedbConfig::deferred_durability_max`] (100 ms by
//! default) after the oldest non-durable commit: a deferred group arriving
//! past that bound commits durably, and an idle writer commits an empty
//! durable transaction at the bound. A `kill -9` reopens the file at its
//! last durable commit: a deferred group is there whole or not at all
//! (`tests/conformance/redb_deferred.rs`). Regular durable commits also
//! let redb reuse the pages that only the last durable state still
//! references, so the file does not grow under a stream of deferred groups.
//!
//! # Export and import
//! [`Storage::export`] opens one redb read transaction (an MVCC snapshot)
//! and hands it to a blocking thread that encodes it into chunks, a few
//! ahead of the consumer; the snapshot lives until the stream is drained or
//! dropped, and commits go on meanwhile.
//!
//! [`Storage::import`] runs alone on the writer thread, in queue order, as
//! ONE write transaction: it clears the snapshot's shard range in every
//! data table (and `node_meta`, for a full snapshot), writes the rows as
//! the caller's task feeds the chunks through a bounded channel (a few
//! chunks ahead), checks the trailer, and only then commits with immediate
//! durability. Any error — bad input, a failing stream, the caller going
//! away — aborts the transaction. Commits queued meanwhile wait for it.
//!
//! Why one transaction rather than writing a new file and renaming it over
//! the old: redb commits are atomic and crash-safe (copy-on-write pages; the
//! new root becomes current only when the commit's header write lands, after
//! the data is synced), and the old pages are not reused before that commit.
//! So a process killed mid-import reopens with exactly the old dataset, a
//! completed import with exactly the new one — the `kill -9` test in
//! `tests/conformance/redb_files.rs` checks the first. A rename would need
//! the open `Database` (and its file lock) swapped under live readers and
//! the writer, plus a directory fsync and stale temporary files to clean
//! up, for the same guarantee. The cost is the same as for a rename: the
//! file briefly holds both datasets. redb keeps a transaction's dirty pages
//! within half its page cache ([`RedbConfig::cache_bytes`]) and writes the
//! excess to the file before the commit, so an import does not need RAM
//! for the dataset either.
//!
//! # Reads
//! Reads open a redb read transaction (an MVCC snapshot: cheap, never
//! blocked by the writer) and run inline on the calling task: point reads
//! take microseconds and scans are bounded by their `limit`, so they are not
//! moved to a blocking pool.
//!
//! Closing (or dropping the last handle) stops the writer after its queue
//! and releases the file.

mod config;
mod file;
mod kv;
mod writer;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use redb::ReadableDatabase;
use tokio::sync::{mpsc, oneshot};

pub use self::config::{
    CACHE_BYTES_DEFAULT, DEFERRED_DURABILITY_MAX_DEFAULT, DEFERRED_DURABILITY_MAX_LIMIT,
    GROUP_COMMIT_BATCHES_MAX_DEFAULT, GROUP_COMMIT_BYTES_MAX_DEFAULT,
    GROUP_COMMIT_WAIT_MAX_DEFAULT, QUEUE_CAPACITY_DEFAULT, RedbConfig, RedbConfigBuilder,
};
use self::file::engine_error;
pub use self::file::{FORMAT_VERSION, MAGIC};
use self::kv::ReadKv;
use self::writer::{Command, Job, Pending, Transactions, WriteLock, Writer};
use crate::batch::{CommitOutcome, WriteBatch};
use crate::engine;
use crate::error::{Error, Result};
use crate::limits;
use crate::snapshot::{self, ChunkStream, Decoder, ShardRange, SnapshotInfo};
use crate::storage::{Durability, Storage};
use crate::types::{
    DeadLetter, DeferredValue, EntityKey, Epoch, JournalEntry, Message, MetaKey, RequestId,
    ShardId, ShardScope, Timer, Timestamp,
};

/// The redb backend: one data file, group commit, durable acknowledgements
/// (except for groups committed with
/// [`Durability::Deferred`], durable soon after).
///
/// Cloning gives another handle to the same open file.
///
/// ```
/// use bytes::Bytes;
/// use shoal_storage::{EntityKey, Epoch, RedbConfig, RedbStorage, ShardId, Storage, WriteBatch};
///
/// # let dir = tempfile::tempdir()?;
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let config = RedbConfig::builder(dir.path().join("data.redb")).build()?;
/// let storage = RedbStorage::open(config)?;
///
/// let key = EntityKey::new(ShardId::new(0), "Counter", "c1")?;
/// let mut batch = WriteBatch::new(key.shard(), Epoch::ZERO);
/// batch.put_state(&key, Bytes::from_static(b"\x2a"));
/// storage.commit(batch).await?; // durable when this returns
///
/// assert_eq!(storage.load_state(&key).await?, Some(Bytes::from_static(b"\x2a")));
/// storage.close().await?;
/// # Ok::<(), shoal_storage::Error>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RedbStorage {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    /// `None` once closed: the file is released when in-flight reads end.
    db: RwLock<Option<Arc<redb::Database>>>,
    /// `None` once closed: the writer drains its queue and stops.
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// The right to write, shared with the writer thread (a small deferred
    /// group may commit on its caller's thread: see `writer`).
    write_lock: WriteLock,
}

impl RedbStorage {
    /// Opens the data file (creating it if missing and allowed), checks its
    /// format, and starts the writer thread.
    ///
    /// Blocking: it does file I/O and, after a crash, redb's repair. Call it
    /// before starting the runtime or through `spawn_blocking`.
    ///
    /// Errors name the path: [`Error::Corrupt`] for garbage, a truncated or
    /// foreign file, [`Error::UnsupportedFormat`] for another format
    /// version, [`Error::Locked`] if the file is already open,
    /// [`Error::Io`] for I/O failures.
    pub fn open(config: RedbConfig) -> Result<Self> {
        let db = Arc::new(file::open(&config)?);
        let (sender, commands) = mpsc::channel(config.queue_capacity());
        let write_lock: WriteLock =
            Arc::new(Mutex::new(Pending::new(config.deferred_durability_max())));
        let writer = Writer {
            db: Arc::clone(&db),
            commands,
            batches_max: config.group_commit_batches_max(),
            bytes_max: config.group_commit_bytes_max(),
            wait_max: config.group_commit_wait_max(),
            pending: Arc::clone(&write_lock),
        };
        let handle = std::thread::Builder::new()
            .name("shoal-storage-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| Error::Io {
                path: config.path().to_owned(),
                source,
            })?;
        tracing::debug!(path = %config.path().display(), "storage opened");
        Ok(RedbStorage {
            shared: Arc::new(Shared {
                path: config.path().to_owned(),
                db: RwLock::new(Some(db)),
                commands: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(handle)),
                closed: AtomicBool::new(false),
                write_lock,
            }),
        })
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn snapshot(&self) -> Result<ReadKv> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let db = self
            .shared
            .db
            .read()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or(Error::Closed)?;
        let txn = db
            .begin_read()
            .map_err(|e| engine_error("starting a read transaction")(e.into()))?;
        Ok(ReadKv::new(txn))
    }

    /// Runs a read on a fresh snapshot. A panic inside the storage engine
    /// (which a damaged file can cause) is reported as corruption instead
    /// of unwinding into the caller's task.
    fn read<T>(&self, read: impl FnOnce(&ReadKv) -> Result<T>) -> Result<T> {
        let snapshot = self.snapshot()?;
        panic::catch_unwind(AssertUnwindSafe(|| read(&snapshot))).unwrap_or_else(|_| {
            Err(Error::Corrupt {
                path: self.shared.path.clone(),
                reason: "the storage engine panicked while reading (damaged file?)".to_owned(),
            })
        })
    }

    /// Commits a small deferred group on this thread when the writer is
    /// free (see `writer`, "Small deferred groups commit on the caller's
    /// thread"); `None`: queue it.
    fn commit_deferred_here(
        &self,
        batches: &[WriteBatch],
        meta: Option<&(MetaKey, Bytes)>,
    ) -> Option<Result<Vec<Result<CommitOutcome>>>> {
        let bytes: usize = batches.iter().map(WriteBatch::payload_bytes).sum();
        if batches.len() > writer::HERE_BATCHES_MAX || bytes > writer::HERE_BYTES_MAX {
            return None;
        }
        let db = self.shared.db.read().ok()?.clone()?;
        let (result, woken) = writer::commit_deferred_here(
            &db,
            &self.shared.write_lock,
            &self.shared.closed,
            |kv| engine::apply_group(kv, batches, meta),
        )?;
        if woken && let Ok(sender) = self.sender() {
            // A full queue keeps the writer busy: it reads the deadline
            // again after that anyway.
            let _ = sender.try_send(Command::Wake);
        }
        Some(result)
    }

    fn sender(&self) -> Result<mpsc::Sender<Command>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.shared
            .commands
            .lock()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or(Error::Closed)
    }

    /// The error for a writer that went away while we were waiting on it.
    fn writer_gone(&self) -> Error {
        if self.shared.closed.load(Ordering::Acquire) {
            Error::Closed
        } else {
            Error::Backend {
                context: "waiting for the group-commit writer",
                source: "the writer thread stopped unexpectedly (see the log)".into(),
            }
        }
    }

    /// Test access to the raw tables, to plant damaged records.
    #[cfg(test)]
    fn raw_put(&self, table: crate::keys::Table, key: &[u8], value: &[u8]) {
        let db = self.shared.db.read().expect("lock").clone().expect("open");
        let txn = db.begin_write().expect("write txn");
        {
            let mut table = txn.open_table(file::data_table(table)).expect("table");
            table.insert(key, value).expect("insert");
        }
        txn.commit().expect("commit");
    }
}

fn poisoned() -> Error {
    Error::Backend {
        context: "locking the storage handle",
        source: "lock poisoned by a panic".into(),
    }
}

impl Shared {
    /// Stops accepting work and returns the writer to join, if not yet taken.
    fn shut(&self) -> Option<JoinHandle<()>> {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut commands) = self.commands.lock() {
            commands.take();
        }
        self.writer.lock().ok().and_then(|mut writer| writer.take())
    }

    fn release_file(&self) {
        if let Ok(mut db) = self.db.write() {
            db.take();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(writer) = self.shut() {
            // Finish the queued commits so nothing acknowledged-to-be is lost
            // silently, and release the file lock before returning.
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "storage writer thread panicked");
            }
        }
        self.release_file();
    }
}

#[async_trait]
impl Storage for RedbStorage {
    async fn commit(&self, batch: WriteBatch) -> Result<CommitOutcome> {
        batch.validate()?;
        let sender = self.sender()?;
        let (reply, outcome) = oneshot::channel();
        sender
            .send(Command::Commit { batch, reply })
            .await
            .map_err(|_| self.writer_gone())?;
        outcome.await.map_err(|_| self.writer_gone())?
    }

    async fn commit_group(
        &self,
        batches: Vec<WriteBatch>,
        meta: Option<(MetaKey, Bytes)>,
    ) -> Result<Vec<Result<CommitOutcome>>> {
        self.commit_group_with(batches, meta, Durability::Immediate)
            .await
    }

    async fn commit_group_with(
        &self,
        batches: Vec<WriteBatch>,
        meta: Option<(MetaKey, Bytes)>,
        durability: Durability,
    ) -> Result<Vec<Result<CommitOutcome>>> {
        engine::check_group(&batches, meta.as_ref())?;
        if durability == Durability::Deferred
            && let Some(result) = self.commit_deferred_here(&batches, meta.as_ref())
        {
            return result;
        }
        let sender = self.sender()?;
        let (reply, outcome) = oneshot::channel();
        let job: Job = Box::new(move |txns: &mut Transactions<'_>| {
            let result = txns.write("applying a commit group", durability, |kv| {
                engine::apply_group(kv, &batches, meta.as_ref())
            });
            // The caller may have stopped waiting; the group is committed anyway.
            let _ = reply.send(result);
        });
        sender
            .send(Command::Exclusive(job))
            .await
            .map_err(|_| self.writer_gone())?;
        outcome.await.map_err(|_| self.writer_gone())?
    }

    async fn read_meta(&self, key: &MetaKey) -> Result<Option<Bytes>> {
        self.read(|kv| engine::read_meta(kv, key))
    }

    async fn export(&self, shards: ShardRange) -> Result<ChunkStream> {
        // The read transaction is the snapshot; the export thread owns it.
        Ok(snapshot::spawn_export(self.snapshot()?, shards))
    }

    async fn import(&self, mut snapshot: ChunkStream) -> Result<SnapshotInfo> {
        let sender = self.sender()?;
        let (chunks, mut received) = mpsc::channel::<Result<Bytes>>(limits::SNAPSHOT_CHUNKS_AHEAD);
        let (reply, outcome) = oneshot::channel();
        let job: Job = Box::new(move |txns: &mut Transactions<'_>| {
            let result = txns.write("importing a snapshot", Durability::Immediate, |kv| {
                let mut decoder = Decoder::new();
                // A closed channel without a trailer (the caller went away)
                // fails `finish`: the transaction is aborted.
                while let Some(chunk) = received.blocking_recv() {
                    decoder.feed(&chunk?, &mut |event| snapshot::apply_event(kv, event))?;
                }
                decoder.finish()
            });
            let _ = reply.send(result);
        });
        sender
            .send(Command::Exclusive(job))
            .await
            .map_err(|_| self.writer_gone())?;
        while let Some(item) = snapshot::next_chunk(&mut snapshot).await {
            let failed = item.is_err();
            // A send error means the writer stopped reading: it has its answer.
            if chunks.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(chunks);
        let info = outcome.await.map_err(|_| self.writer_gone())??;
        tracing::info!(
            path = %self.shared.path.display(),
            shards = %info.shards,
            records = info.records,
            "snapshot imported"
        );
        Ok(info)
    }

    async fn load_state(&self, entity: &EntityKey) -> Result<Option<Bytes>> {
        self.read(|kv| engine::load_state(kv, entity))
    }

    async fn read_journal(
        &self,
        entity: &EntityKey,
        execution: RequestId,
    ) -> Result<Vec<JournalEntry>> {
        self.read(|kv| engine::read_journal(kv, entity, execution))
    }

    async fn read_reply(&self, shard: ShardId, request: RequestId) -> Result<Option<Bytes>> {
        self.read(|kv| engine::read_reply(kv, shard, request))
    }

    async fn read_message(&self, shard: ShardId, request: RequestId) -> Result<Option<Message>> {
        self.read(|kv| engine::read_message(kv, shard, request))
    }

    async fn due_messages(
        &self,
        shard: ShardId,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Message>> {
        self.read(|kv| engine::due_messages(kv, shard, up_to, limit))
    }

    async fn next_message_due(&self, shard: ShardId) -> Result<Option<Timestamp>> {
        self.read(|kv| engine::next_message_due(kv, shard))
    }

    async fn dead_letters(
        &self,
        shard: ShardId,
        after: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.read(|kv| engine::dead_letters(kv, shard, after, limit))
    }

    async fn due_timers(
        &self,
        scope: ShardScope,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Timer>> {
        self.read(|kv| engine::due_timers(kv, scope, up_to, limit))
    }

    async fn next_timer_due(&self, scope: ShardScope) -> Result<Option<Timestamp>> {
        self.read(|kv| engine::next_timer_due(kv, scope))
    }

    async fn read_deferred(&self, entity: &EntityKey, name: &str) -> Result<Option<DeferredValue>> {
        self.read(|kv| engine::read_deferred(kv, entity, name))
    }

    async fn shard_epoch(&self, shard: ShardId) -> Result<Epoch> {
        self.read(|kv| engine::shard_epoch(kv, shard))
    }

    async fn flush(&self) -> Result<()> {
        let sender = self.sender()?;
        let (reply, done) = oneshot::channel();
        sender
            .send(Command::Flush { reply })
            .await
            .map_err(|_| self.writer_gone())?;
        done.await.map_err(|_| self.writer_gone())?
    }

    async fn close(&self) -> Result<()> {
        let Some(writer) = self.shared.shut() else {
            return Ok(()); // already closed
        };
        let joined = tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|error| Error::Backend {
                context: "joining the storage writer",
                source: Box::new(error),
            })?;
        self.shared.release_file();
        joined.map_err(|_| Error::Backend {
            context: "closing storage",
            source: "the writer thread panicked".into(),
        })?;
        tracing::debug!(path = %self.shared.path.display(), "storage closed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, Table};
    use std::time::{Duration, Instant};

    fn open(dir: &tempfile::TempDir) -> RedbStorage {
        let config = RedbConfig::builder(dir.path().join("data.redb"))
            .build()
            .expect("valid config");
        RedbStorage::open(config).expect("opens")
    }

    #[tokio::test]
    async fn a_bad_batch_does_not_poison_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(&dir);
        let shard = ShardId::new(1);
        let damaged = RequestId::new(13);
        storage.raw_put(
            Table::Messages,
            &keys::request_key(shard, damaged),
            b"\xff\xff damaged",
        );

        // Many concurrent batches, one of which hits the damaged record:
        // they share group commits, and only the bad one fails.
        let mut tasks = Vec::new();
        for i in 0..32u32 {
            let storage = storage.clone();
            tasks.push(tokio::spawn(async move {
                let entity = EntityKey::new(shard, "T", format!("e{i}")).expect("valid key");
                let mut batch = WriteBatch::new(shard, Epoch::ZERO);
                batch.put_state(&entity, Bytes::from(format!("v{i}")));
                if i == 16 {
                    batch.reschedule(damaged, Timestamp::from_unix_ms(1));
                }
                (i, entity, storage.commit(batch).await)
            }));
        }
        for task in tasks {
            let (i, entity, result) = task.await.expect("task");
            let state = storage.load_state(&entity).await.expect("reads");
            if i == 16 {
                let error = result.expect_err("damaged record");
                assert!(matches!(error, Error::CorruptRecord { .. }), "{error:?}");
                assert_eq!(state, None, "the failed batch applied nothing");
            } else {
                result.expect("commits");
                assert_eq!(state, Some(Bytes::from(format!("v{i}"))));
            }
        }
        storage.close().await.expect("closes");
    }

    #[tokio::test]
    async fn close_releases_the_file_and_rejects_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(&dir);
        storage.flush().await.expect("flushes");
        storage.close().await.expect("closes");
        storage.close().await.expect("closing twice is fine");
        let batch = WriteBatch::new(ShardId::new(0), Epoch::ZERO);
        assert!(matches!(storage.commit(batch).await, Err(Error::Closed)));
        assert!(matches!(
            storage.shard_epoch(ShardId::new(0)).await,
            Err(Error::Closed)
        ));
        // The file is free again while the old handle still exists.
        let reopened = open(&dir);
        reopened.close().await.expect("closes");
    }

    /// A small deferred group commits on the caller's thread only when the
    /// write lock is free, the storage open and the group not overdue; the
    /// first one since everything was durable asks to wake the writer.
    #[tokio::test]
    async fn a_deferred_group_commits_here_only_when_it_may() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(&dir);
        let shared = &storage.shared;
        let db = shared.db.read().expect("lock").clone().expect("open");
        let key = EntityKey::new(ShardId::new(0), "Cell", "c").expect("key");
        let mut batch = WriteBatch::new(ShardId::new(0), Epoch::ZERO);
        batch.put_state(&key, Bytes::from_static(b"v"));
        let here = || {
            writer::commit_deferred_here(&db, &shared.write_lock, &shared.closed, |kv| {
                engine::apply_group(kv, std::slice::from_ref(&batch), None)
            })
        };

        // The writer holds the lock (a transaction of its own): queue.
        let held = shared.write_lock.lock().expect("lock");
        assert!(here().is_none());
        drop(held);

        let (result, woken) = here().expect("commits here");
        assert!(result.expect("commits").iter().all(Result::is_ok));
        assert!(woken, "the first non-durable commit wakes the writer");
        let (_, woken) = here().expect("commits here");
        assert!(!woken, "the writer already knows");
        assert_eq!(
            storage.load_state(&key).await.expect("reads"),
            Some(Bytes::from_static(b"v"))
        );

        // Overdue for durability: the writer commits it durably.
        shared.write_lock.lock().expect("lock").since =
            Some(Instant::now() - Duration::from_secs(3600));
        assert!(here().is_none());

        // Closing: nothing commits outside the writer any more.
        storage.flush().await.expect("flushes");
        shared.closed.store(true, Ordering::Release);
        assert!(here().is_none());
        shared.closed.store(false, Ordering::Release);
        storage.close().await.expect("closes");
    }
}
