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
//! Invariants:
//! - the vote and appended entries are durable (a redb commit with
//!   immediate durability) before `save_vote` returns / the append callback
//!   fires;
//! - every write is one redb transaction, and writes are serialised (they
//!   take `&mut self` and complete before returning), so the log never has
//!   a hole: entries are contiguous from `last_purged + 1` to the last one;
//! - purging records `last_purged` in the same transaction that deletes the
//!   entries.
//!
//! It does not apply anything: that is the state machine's job.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::codec;
use crate::error::{Error, Result};
use crate::file::{self, FileKind, META};
use crate::types::{Entry, LogId, TypeConfig, Vote};

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

struct Inner {
    db: redb::Database,
    path: PathBuf,
}

/// The Raft log store: vote, log entries, purge and truncation, in one redb
/// file of its own. Open it with [`LogStore::open`]; hand it to openraft.
pub struct LogStore {
    inner: Arc<Inner>,
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
        });
        // Read everything once, so a damaged record is reported at open.
        inner.log_state()?;
        inner.read_vote()?;
        inner.read_committed()?;
        Ok(LogStore { inner })
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

    /// Runs a write on a blocking thread (redb commits fsync) and waits.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || write(&inner))
            .await
            .map_err(|join| io::Error::other(format!("log store write task failed: {join}")))?
            .map_err(Error::into_io)
    }
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

    fn entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>> {
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
        let last_log_id = match last {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
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

    /// Appends `entries` (contiguous, ascending) in one durable transaction.
    /// Refuses, writing nothing, an append that would leave a hole after the
    /// last entry (or after `last_purged` when the log is empty).
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<()> {
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut log = txn
                .open_table(LOG)
                .map_err(|e| self.engine("appending")(e.into()))?;
            let last = log
                .last()
                .map_err(|e| self.engine("appending")(e.into()))?
                .map(|(index, _)| index.value());
            let last = match last {
                Some(last) => Some(last),
                None => self.read_log_id(META_LAST_PURGED)?.map(|id| id.index),
            };
            let mut expected = last.map(|last| last.saturating_add(1));
            for (index, _) in &entries {
                if let Some(expected) = expected
                    && *index > expected
                {
                    return Err(Error::LogHole {
                        path: self.path.clone(),
                        expected,
                        found: *index,
                    });
                }
                expected = Some(index.saturating_add(1));
            }
            for (index, bytes) in &entries {
                log.insert(*index, bytes.as_slice())
                    .map_err(|e| self.engine("appending")(e.into()))?;
            }
        }
        txn.commit()
            .map_err(|e| self.engine("committing")(e.into()))
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
        self.write(move |inner| inner.put_meta(META_VOTE, &bytes, Durability::Immediate))
            .await
    }

    /// Persisted without waiting for the disk: `committed` is only a hint
    /// for re-applying on restart, and a value that lags is safe. It
    /// becomes durable with the next vote or log write.
    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let Some(committed) = committed else {
            return Ok(());
        };
        let bytes = codec::encode_log_id(&committed);
        self.write(move |inner| inner.put_meta(META_COMMITTED, &bytes, Durability::None))
            .await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.inner.read_committed().map_err(Error::into_io)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.log_id.index, codec::encode_entry(&entry)))
            .collect();
        if entries.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let result = self.write(move |inner| inner.append(entries)).await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = match &last_log_id {
            Some(log_id) => Bound::Excluded(log_id.index),
            None => Bound::Unbounded,
        };
        self.write(move |inner| inner.delete((from, Bound::Unbounded), None))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        self.write(move |inner| {
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
        .await
    }
}
