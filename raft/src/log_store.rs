//! [`LogStore`]: the Raft log and vote in their own redb file, implementing
//! openraft's `RaftLogStorage` (and [`LogReader`], its `RaftLogReader`).
//!
//! On disk (format version 1; every value protobuf, see `codec`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `magic` | `shoal-raft-log` |
//! | `meta` | `format_version` | u32 big-endian |
//! | `meta` | `vote` | `Vote` |
//! | `meta` | `committed` | `LogId` (optional hint, may lag) |
//! | `meta` | `last_purged` | `LogId` |
//! | `log` | index u64 | `Entry` |
//!
//! # Writes: one writer thread, group commit
//! Every write goes, in call order, through one queue to a writer thread
//! of the store. `append` only checks the entries (no hole), makes them
//! readable from memory and queues them: it returns at once, as openraft
//! asks, so that the Raft core can replicate the entries while they are
//! being written, and its callback fires once they are durable. The writer
//! takes everything queued at once (up to [`OPS_PER_ROUND_MAX`] operations)
//! and commits a run of appends (with the latest `committed` hint) in ONE
//! redb transaction with immediate durability: appends queued while an
//! fsync runs share the next one. Under load (the last commit carried
//! several appends) it first waits a little for more (half the last
//! commit's time, at most [`LINGER_MAX`]); a lone proposer never waits. A
//! vote, a truncation or a purge first commits the run queued before it,
//! then commits alone, and its call returns when it is durable. The
//! `committed` hint is never written on its own: it goes with the next
//! write at most once per [`COMMITTED_HINT_INTERVAL`] (and at close). It
//! only spares a restarted node part of its wait for the leader's commit
//! index (openraft re-applies the log up to it at startup); writing it with
//! every append would add one more page to every commit — a scattered
//! write more for each fsync — for a hint that may lag anyway.
//!
//! Invariants:
//! - the vote and appended entries are durable (a redb commit with
//!   immediate durability) before `save_vote` returns / the append callback
//!   fires;
//! - writes are applied in call order, each in a redb transaction (a run
//!   of appends sharing one), so the log never has a hole: entries are
//!   contiguous from `last_purged + 1` to the last one; an append that
//!   would leave one is refused when it is called (and, should one reach
//!   the writer, there too), writing nothing;
//! - an entry handed to `append` is readable (from memory) from the moment
//!   `append` returns until it is in the file, and from the file after;
//! - purging records `last_purged` in the same transaction that deletes the
//!   entries.
//!
//! It does not apply anything: that is the state machine's job.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::file::{self, FileKind, META};
use crate::types::{Entry, LogId, TypeConfig, Vote};
use crate::{codec, lock};

/// The log file's identity: magic `shoal-raft-log`, format version 1.
const KIND: FileKind = FileKind {
    name: "raft log",
    magic: b"shoal-raft-log",
    format_version: 1,
};

const LOG: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("log");
const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_LAST_PURGED: &str = "last_purged";

/// Most queued operations the writer takes in one round.
const OPS_PER_ROUND_MAX: usize = 1024;

/// The longest the writer waits for more appends to share an fsync.
const LINGER_MAX: Duration = Duration::from_millis(1);

/// The `committed` hint goes with an append at most this often.
const COMMITTED_HINT_INTERVAL: Duration = Duration::from_millis(50);

struct Inner {
    db: redb::Database,
    path: PathBuf,
    /// Entries handed to `append` that are not in the file yet, by index,
    /// with the sequence number of their append (a later append of the same
    /// index replaces them).
    pending: Mutex<BTreeMap<u64, (u64, Entry)>>,
}

/// A write that commits alone, on the writer thread.
type AloneWrite = Box<dyn FnOnce(&Inner) -> Result<()> + Send>;

/// One queued `append` call.
struct Append {
    /// The append's sequence number (its entries carry it in
    /// `Inner::pending`).
    seq: u64,
    /// Its entries: (index, encoding).
    entries: Vec<(u64, Vec<u8>)>,
    /// To fire once they are durable (or failed).
    callback: IOFlushed<TypeConfig>,
}

/// One queued write.
enum Op {
    Append(Append),
    /// The latest `committed` hint, encoded.
    Committed(Vec<u8>),
    /// A write that commits alone (vote, truncation, purge) and whose
    /// caller waits for it.
    Alone(AloneWrite, tokio::sync::oneshot::Sender<Result<()>>),
}

/// The Raft log store: vote, log entries, purge and truncation, in one redb
/// file of its own. Open it with [`LogStore::open`]; hand it to openraft.
///
/// Dropping it waits for its queued writes and releases the file (unless a
/// [`LogReader`] still holds it).
pub struct LogStore {
    inner: Arc<Inner>,
    /// The writer thread's queue; `None` only while dropping.
    queue: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    /// Index of the last entry (queued ones included), or of the last
    /// purged one if there is none: where the next append must continue.
    last: Option<u64>,
    /// The last `committed` hint given (it may not be in the file yet).
    committed: Option<LogId>,
    /// Sequence number of the next append.
    next_append: u64,
}

/// A cheap, cloneable reader of a [`LogStore`] (openraft's
/// `RaftLogReader`), used by replication tasks.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Inner>,
}

impl LogStore {
    /// Opens the log file at `path`, creating it if missing.
    ///
    /// Fails with [`Error::Corrupt`] for garbage, a truncated file or
    /// another program's (or another Shoal component's) redb file,
    /// [`Error::UnsupportedFormat`] for another format version,
    /// [`Error::Locked`] if the file is already open; each names the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let db = file::open(path, &KIND, |txn| {
            txn.open_table(LOG)?;
            Ok(())
        })?;
        let inner = Arc::new(Inner {
            db,
            path: path.to_owned(),
            pending: Mutex::new(BTreeMap::new()),
        });
        // Read everything once, so a damaged record is reported at open.
        let state = inner.log_state()?;
        inner.read_vote()?;
        let committed = inner.read_committed()?;
        let (queue, ops) = mpsc::channel();
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || inner.run_writer(ops))
                .map_err(|source| Error::Io {
                    path: path.to_owned(),
                    source,
                })?
        };
        Ok(LogStore {
            inner,
            queue: Some(queue),
            writer: Some(writer),
            last: state.last_log_id.map(|id| id.index),
            committed,
            next_append: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A reader sharing this store's file.
    pub fn reader(&self) -> LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    fn enqueue(&self, op: Op) -> io::Result<()> {
        self.queue
            .as_ref()
            .and_then(|queue| queue.send(op).ok())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "the writer of the raft log {} has stopped",
                    self.inner.path.display()
                ))
            })
    }

    /// Runs `write` on the writer thread, alone in its transaction, after
    /// everything queued before it, and waits for it.
    async fn write_alone(
        &self,
        write: impl FnOnce(&Inner) -> Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.enqueue(Op::Alone(Box::new(write), done))?;
        result
            .await
            .map_err(|_| io::Error::other("the raft log writer stopped before the write"))?
            .map_err(Error::into_io)
    }

    /// After a truncation or a purge: where the log now ends.
    fn reload_last(&mut self) -> io::Result<()> {
        self.last = self
            .inner
            .log_state()
            .map_err(Error::into_io)?
            .last_log_id
            .map(|id| id.index);
        Ok(())
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // The writer finishes what is queued, then ends (and lets go of the
        // file, unless readers hold it).
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// How long the writer waits for more appends before committing: nothing
/// unless the last commit carried several appends (a lone proposer never
/// waits), then half of that commit's time, at most [`LINGER_MAX`].
fn linger_wait(loaded: bool, last_commit: Duration) -> Duration {
    if loaded {
        (last_commit / 2).min(LINGER_MAX)
    } else {
        Duration::ZERO
    }
}

/// Where an append of entries at `indexes` after a log ending at `last`
/// leaves a hole: (the index that was expected, the one found).
fn hole(last: Option<u64>, indexes: impl IntoIterator<Item = u64>) -> Option<(u64, u64)> {
    let mut expected = last.map(|last| last.saturating_add(1));
    for index in indexes {
        if let Some(expected) = expected
            && index > expected
        {
            return Some((expected, index));
        }
        expected = Some(index.saturating_add(1));
    }
    None
}

impl Inner {
    fn engine(&self, context: &'static str) -> impl Fn(redb::Error) -> Error + '_ {
        move |error| Error::engine(&self.path, context, error)
    }

    fn corrupt(&self, what: impl Into<String>) -> impl FnOnce(codec::DecodeError) -> Error + '_ {
        let what = what.into();
        move |error| Error::CorruptRecord {
            path: self.path.clone(),
            what,
            reason: error.0,
        }
    }

    fn read_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let read = self
            .db
            .begin_read()
            .map_err(|e| self.engine("reading")(e.into()))?;
        let meta = read
            .open_table(META)
            .map_err(|e| self.engine("reading")(e.into()))?;
        Ok(meta
            .get(key)
            .map_err(|e| self.engine("reading")(e.into()))?
            .map(|value| value.value().to_vec()))
    }

    fn read_log_id(&self, key: &str) -> Result<Option<LogId>> {
        match self.read_meta(key)? {
            None => Ok(None),
            Some(bytes) => codec::decode_log_id(&bytes)
                .map(Some)
                .map_err(self.corrupt(format!("`{key}` log id"))),
        }
    }

    fn read_vote(&self) -> Result<Option<Vote>> {
        match self.read_meta(META_VOTE)? {
            None => Ok(None),
            Some(bytes) => codec::decode_vote(&bytes)
                .map(Some)
                .map_err(self.corrupt("vote")),
        }
    }

    fn read_committed(&self) -> Result<Option<LogId>> {
        self.read_log_id(META_COMMITTED)
    }

    fn decode_entry(&self, index: u64, bytes: &[u8]) -> Result<Entry> {
        let entry =
            codec::decode_entry(bytes).map_err(self.corrupt(format!("log entry {index}")))?;
        if entry.log_id.index != index {
            return Err(Error::CorruptRecord {
                path: self.path.clone(),
                what: format!("log entry {index}"),
                reason: format!("it says it is entry {}", entry.log_id.index),
            });
        }
        Ok(entry)
    }

    /// The entries in `range`: the file's, and the queued ones over them.
    fn entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>> {
        // Queued entries first: one the writer removes after this is in the
        // file by then, so the read below finds it.
        let queued: Vec<Entry> = lock(&self.pending)
            .iter()
            .filter(|(index, _)| range.contains(*index))
            .map(|(_, (_, entry))| entry.clone())
            .collect();
        let stored = self.stored_entries(range)?;
        if queued.is_empty() {
            return Ok(stored);
        }
        let mut merged: BTreeMap<u64, Entry> = stored
            .into_iter()
            .map(|entry| (entry.log_id.index, entry))
            .collect();
        merged.extend(queued.into_iter().map(|entry| (entry.log_id.index, entry)));
        Ok(merged.into_values().collect())
    }

    fn stored_entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>> {
        let read = self
            .db
            .begin_read()
            .map_err(|e| self.engine("reading")(e.into()))?;
        let log = read
            .open_table(LOG)
            .map_err(|e| self.engine("reading")(e.into()))?;
        let mut entries = Vec::new();
        for item in log
            .range(range)
            .map_err(|e| self.engine("reading")(e.into()))?
        {
            let (index, bytes) = item.map_err(|e| self.engine("reading")(e.into()))?;
            entries.push(self.decode_entry(index.value(), bytes.value())?);
        }
        Ok(entries)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>> {
        // Queued entries (first, as in `entries`) come after the file's.
        let queued_last = lock(&self.pending)
            .last_key_value()
            .map(|(_, (_, entry))| entry.log_id);
        let last_purged_log_id = self.read_log_id(META_LAST_PURGED)?;
        let read = self
            .db
            .begin_read()
            .map_err(|e| self.engine("reading")(e.into()))?;
        let log = read
            .open_table(LOG)
            .map_err(|e| self.engine("reading")(e.into()))?;
        let last = log
            .last()
            .map_err(|e| self.engine("reading")(e.into()))?
            .map(|(index, bytes)| self.decode_entry(index.value(), bytes.value()))
            .transpose()?;
        let last_log_id = match (queued_last, last) {
            (Some(queued), _) => Some(queued),
            (None, Some(entry)) => Some(entry.log_id),
            (None, None) => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    fn begin_write(&self, durability: Durability) -> Result<redb::WriteTransaction> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| self.engine("writing")(e.into()))?;
        txn.set_durability(durability)
            .map_err(|e| self.engine("writing")(e.into()))?;
        Ok(txn)
    }

    fn put_meta(&self, key: &str, value: &[u8], durability: Durability) -> Result<()> {
        let txn = self.begin_write(durability)?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.engine("writing")(e.into()))?;
            meta.insert(key, value)
                .map_err(|e| self.engine("writing")(e.into()))?;
        }
        txn.commit()
            .map_err(|e| self.engine("committing")(e.into()))
    }

    /// The writer thread: takes what is queued, in order, committing runs
    /// of appends together; ends when the store is dropped.
    fn run_writer(&self, ops: mpsc::Receiver<Op>) {
        let mut appends = Vec::new();
        let mut committed = None;
        // How long the last commit of appends took, and whether it carried
        // more than one append (appends are arriving faster than fsyncs).
        let mut last_commit = Duration::ZERO;
        let mut loaded = false;
        // When the `committed` hint was last written.
        let mut hinted = Instant::now();
        while let Ok(first) = ops.recv() {
            let mut round = vec![first];
            round.extend(ops.try_iter().take(OPS_PER_ROUND_MAX - 1));
            let linger = linger_wait(loaded, last_commit);
            if !linger.is_zero() {
                // Under load, the next appends arrive within a fraction of
                // an fsync: wait for them so that one fsync carries them.
                let deadline = Instant::now() + linger;
                while round.len() < OPS_PER_ROUND_MAX {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match ops.recv_timeout(left) {
                        Ok(op) => round.push(op),
                        Err(_) => break,
                    }
                }
            }
            for op in round {
                match op {
                    Op::Append(append) => appends.push(append),
                    Op::Committed(bytes) => committed = Some(bytes),
                    Op::Alone(write, done) => {
                        self.commit_appends(std::mem::take(&mut appends), committed.take());
                        let _ = done.send(write(self));
                    }
                }
            }
            // A `committed` hint alone waits for a later write: it may lag.
            if !appends.is_empty() {
                loaded = appends.len() > 1;
                let started = Instant::now();
                let hint = committed.take_if(|_| hinted.elapsed() >= COMMITTED_HINT_INTERVAL);
                if hint.is_some() {
                    hinted = started;
                }
                self.commit_appends(std::mem::take(&mut appends), hint);
                last_commit = started.elapsed();
            }
        }
        // The store is gone: keep its last hint.
        if let Some(committed) = committed
            && let Err(error) = self.put_meta(META_COMMITTED, &committed, Durability::Immediate)
        {
            tracing::warn!(%error, "saving the committed hint at close failed");
        }
    }

    /// Commits a run of appends (and the latest `committed` hint) in one
    /// transaction — durable if it has entries — then fires their
    /// callbacks. An append that would leave a hole writes nothing and
    /// fails (so do the ones after it, which then leave one too).
    fn commit_appends(&self, appends: Vec<Append>, committed: Option<Vec<u8>>) {
        if appends.is_empty() && committed.is_none() {
            return;
        }
        let durability = if appends.is_empty() {
            // `committed` alone is a hint: durable with the next write.
            Durability::None
        } else {
            Durability::Immediate
        };
        let outcome = (|| -> Result<Vec<Result<()>>> {
            let txn = self.begin_write(durability)?;
            let mut outcomes = Vec::with_capacity(appends.len());
            {
                let mut log = txn
                    .open_table(LOG)
                    .map_err(|e| self.engine("appending")(e.into()))?;
                let mut last = log
                    .last()
                    .map_err(|e| self.engine("appending")(e.into()))?
                    .map(|(index, _)| index.value());
                if last.is_none() {
                    last = self.read_log_id(META_LAST_PURGED)?.map(|id| id.index);
                }
                for append in &appends {
                    if let Some((expected, found)) =
                        hole(last, append.entries.iter().map(|(index, _)| *index))
                    {
                        outcomes.push(Err(Error::LogHole {
                            path: self.path.clone(),
                            expected,
                            found,
                        }));
                        continue;
                    }
                    for (index, bytes) in &append.entries {
                        log.insert(*index, bytes.as_slice())
                            .map_err(|e| self.engine("appending")(e.into()))?;
                        last = Some(*index);
                    }
                    outcomes.push(Ok(()));
                }
                if let Some(committed) = &committed {
                    let mut meta = txn
                        .open_table(META)
                        .map_err(|e| self.engine("writing")(e.into()))?;
                    meta.insert(META_COMMITTED, committed.as_slice())
                        .map_err(|e| self.engine("writing")(e.into()))?;
                }
            }
            txn.commit()
                .map_err(|e| self.engine("committing")(e.into()))?;
            Ok(outcomes)
        })();
        // Durable (or failed): the file answers for these entries now.
        {
            let mut pending = lock(&self.pending);
            for append in &appends {
                for (index, _) in &append.entries {
                    if pending
                        .get(index)
                        .is_some_and(|(seq, _)| *seq == append.seq)
                    {
                        pending.remove(index);
                    }
                }
            }
        }
        let outcomes: Vec<io::Result<()>> = match outcome {
            Ok(outcomes) => outcomes
                .into_iter()
                .map(|outcome| outcome.map_err(Error::into_io))
                .collect(),
            Err(error) => {
                tracing::error!(%error, "writing raft log entries failed");
                let error = error.into_io();
                appends
                    .iter()
                    .map(|_| Err(io::Error::new(error.kind(), error.to_string())))
                    .collect()
            }
        };
        for (append, outcome) in appends.into_iter().zip(outcomes) {
            append.callback.io_completed(outcome);
        }
    }

    /// Deletes every entry with an index in `range`; with `purged`, records
    /// it as `last_purged` in the same transaction.
    fn delete(&self, range: (Bound<u64>, Bound<u64>), purged: Option<&LogId>) -> Result<()> {
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut log = txn
                .open_table(LOG)
                .map_err(|e| self.engine("deleting")(e.into()))?;
            log.retain_in(range, |_, _| false)
                .map_err(|e| self.engine("deleting")(e.into()))?;
            if let Some(purged) = purged {
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| self.engine("purging")(e.into()))?;
                meta.insert(META_LAST_PURGED, codec::encode_log_id(purged).as_slice())
                    .map_err(|e| self.engine("purging")(e.into()))?;
            }
        }
        txn.commit()
            .map_err(|e| self.engine("committing")(e.into()))
    }
}

fn owned_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        self.inner
            .entries(owned_bounds(&range))
            .map_err(Error::into_io)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.inner.read_vote().map_err(Error::into_io)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        self.inner.log_state().map_err(Error::into_io)
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = codec::encode_vote(vote);
        self.write_alone(move |inner| inner.put_meta(META_VOTE, &bytes, Durability::Immediate))
            .await
    }

    /// Queued without waiting for the disk: `committed` is only a hint for
    /// re-applying on restart, and a value that lags is safe. It is written
    /// with the next run of appends, vote, truncation or purge (durable
    /// with it), or when the store is dropped.
    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let Some(committed) = committed else {
            return Ok(());
        };
        self.enqueue(Op::Committed(codec::encode_log_id(&committed)))?;
        self.committed = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.committed)
    }

    /// Checks the entries, makes them readable and queues them for the
    /// writer; returns at once. The callback fires once they are durable.
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|entry| entry.log_id.index) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        if let Some((expected, found)) =
            hole(self.last, entries.iter().map(|entry| entry.log_id.index))
        {
            let error = Error::LogHole {
                path: self.inner.path.clone(),
                expected,
                found,
            }
            .into_io();
            callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
            return Err(error);
        }
        let seq = self.next_append;
        self.next_append += 1;
        let encoded = entries
            .iter()
            .map(|entry| (entry.log_id.index, codec::encode_entry(entry)))
            .collect();
        {
            let mut pending = lock(&self.inner.pending);
            for entry in entries {
                pending.insert(entry.log_id.index, (seq, entry));
            }
        }
        if let Err(error) = self.enqueue(Op::Append(Append {
            seq,
            entries: encoded,
            callback,
        })) {
            // Never written: not readable either.
            lock(&self.inner.pending).retain(|_, (queued, _)| *queued != seq);
            return Err(error);
        }
        self.last = Some(last);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = match &last_log_id {
            Some(log_id) => Bound::Excluded(log_id.index),
            None => Bound::Unbounded,
        };
        self.write_alone(move |inner| inner.delete((from, Bound::Unbounded), None))
            .await?;
        self.reload_last()
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        self.write_alone(move |inner| {
            let previous = inner.read_log_id(META_LAST_PURGED)?;
            if previous
                .as_ref()
                .is_some_and(|previous| *previous >= log_id)
            {
                return Ok(());
            }
            inner.delete(
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some(&log_id),
            )
        })
        .await?;
        self.reload_last()
    }
}
