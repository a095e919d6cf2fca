//! [`MemoryStorage`]: the in-memory backend, for tests and for nodes that
//! need no durability.
//!
//! The same tables and byte keys as the redb backend (`keys`) in
//! `BTreeMap`s behind one `RwLock`, with the shared `engine` applying
//! batches, so both backends have exactly the same semantics. A commit holds
//! the write lock for the whole batch and keeps an undo log, so a batch that
//! fails half-way (which only a corrupt record could cause) is rolled back:
//! all or nothing. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::batch::{CommitOutcome, WriteBatch};
use crate::engine::{self, KvRead, KvWrite, Visit};
use crate::error::{Error, Result};
use crate::keys::Table;
use crate::snapshot::{self, ChunkStream, Decoder, ShardRange, SnapshotInfo};
use crate::storage::Storage;
use crate::types::{
    DeadLetter, DeferredValue, EntityKey, Epoch, JournalEntry, Message, MetaKey, RequestId,
    ShardId, ShardScope, Timer, Timestamp,
};

/// The in-memory backend. Cloning gives another handle to the same data.
///
/// ```
/// use bytes::Bytes;
/// use shoal_storage::{EntityKey, Epoch, MemoryStorage, RequestId, ShardId, Storage, WriteBatch};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let storage = MemoryStorage::new();
/// let shard = ShardId::new(0);
/// let counter = EntityKey::new(shard, "Counter", "c1")?;
/// let request = RequestId::new(1);
///
/// // State change and reply commit together.
/// let mut batch = WriteBatch::new(shard, Epoch::ZERO);
/// batch.put_state(&counter, Bytes::from_static(b"\x01"));
/// batch.ack(request, Bytes::from_static(b"ok"));
/// let outcome = storage.commit(batch).await?;
/// assert!(outcome.applied_all());
///
/// assert_eq!(storage.load_state(&counter).await?, Some(Bytes::from_static(b"\x01")));
/// assert_eq!(storage.read_reply(shard, request).await?, Some(Bytes::from_static(b"ok")));
/// # Ok::<(), shoal_storage::Error>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: RwLock<Tables>,
    closed: AtomicBool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Tables {
    maps: [BTreeMap<Vec<u8>, Bytes>; Table::COUNT],
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Tables>> {
        self.check_open()?;
        self.inner.tables.read().map_err(|_| poisoned())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Tables>> {
        self.check_open()?;
        self.inner.tables.write().map_err(|_| poisoned())
    }

    /// Applies `batch` under the write lock; on error, undoes what it wrote.
    fn commit_now(&self, batch: &WriteBatch) -> Result<CommitOutcome> {
        batch.validate()?;
        let mut tables = self.write()?;
        let mut txn = UndoTxn {
            tables: &mut tables,
            undo: Vec::new(),
        };
        match engine::apply(&mut txn, batch) {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                txn.rollback();
                Err(error)
            }
        }
    }

    /// Applies a group and its meta record under one write lock; on a fatal
    /// error, undoes all of it.
    fn commit_group_now(
        &self,
        batches: &[WriteBatch],
        meta: Option<&(MetaKey, Bytes)>,
    ) -> Result<Vec<Result<CommitOutcome>>> {
        engine::check_group(batches, meta)?;
        let mut tables = self.write()?;
        let mut txn = UndoTxn {
            tables: &mut tables,
            undo: Vec::new(),
        };
        match engine::apply_group(&mut txn, batches, meta) {
            Ok(results) => Ok(results),
            Err(error) => {
                txn.rollback();
                Err(error)
            }
        }
    }

    /// Decodes the whole stream (checking everything) before touching the
    /// maps, then replaces what it covers under one write lock.
    async fn import_now(&self, mut chunks: ChunkStream) -> Result<SnapshotInfo> {
        self.check_open()?;
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        while let Some(chunk) = snapshot::next_chunk(&mut chunks).await {
            decoder.feed(&chunk?, &mut |event| {
                events.push(event);
                Ok(())
            })?;
        }
        let info = decoder.finish()?;
        let mut tables = self.write()?;
        let mut txn = UndoTxn {
            tables: &mut tables,
            undo: Vec::new(),
        };
        for event in events {
            if let Err(error) = snapshot::apply_event(&mut txn, event) {
                txn.rollback();
                return Err(error);
            }
        }
        Ok(info)
    }

    #[cfg(test)]
    fn raw_put(&self, table: Table, key: &[u8], value: &[u8]) {
        let mut tables = self.write().expect("open");
        tables.maps[table.index()].insert(key.to_vec(), Bytes::copy_from_slice(value));
    }
}

fn poisoned() -> Error {
    Error::Backend {
        context: "locking the memory tables",
        source: "lock poisoned by a panic during an earlier commit".into(),
    }
}

impl KvRead for Tables {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.maps[table.index()].get(key).cloned())
    }

    fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.maps[table.index()].contains_key(key))
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        if end.is_some_and(|end| end <= start) {
            return Ok(());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        for (key, value) in
            self.maps[table.index()].range::<[u8], _>((Bound::Included(start), upper))
        {
            if visit(key, value)?.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// A write transaction over the maps that remembers how to undo itself.
struct UndoTxn<'a> {
    tables: &'a mut Tables,
    undo: Vec<(Table, Vec<u8>, Option<Bytes>)>,
}

impl UndoTxn<'_> {
    fn rollback(self) {
        for (table, key, previous) in self.undo.into_iter().rev() {
            let map = &mut self.tables.maps[table.index()];
            match previous {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
    }
}

impl KvRead for UndoTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>> {
        self.tables.get(table, key)
    }

    fn contains(&self, table: Table, key: &[u8]) -> Result<bool> {
        self.tables.contains(table, key)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        self.tables.scan(table, start, end, visit)
    }
}

impl KvWrite for UndoTxn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let previous =
            self.tables.maps[table.index()].insert(key.to_vec(), Bytes::copy_from_slice(value));
        self.undo.push((table, key.to_vec(), previous));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        if let Some(previous) = self.tables.maps[table.index()].remove(key) {
            self.undo.push((table, key.to_vec(), Some(previous)));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn commit(&self, batch: WriteBatch) -> Result<CommitOutcome> {
        self.commit_now(&batch)
    }

    async fn commit_group(
        &self,
        batches: Vec<WriteBatch>,
        meta: Option<(MetaKey, Bytes)>,
    ) -> Result<Vec<Result<CommitOutcome>>> {
        self.commit_group_now(&batches, meta.as_ref())
    }

    async fn read_meta(&self, key: &MetaKey) -> Result<Option<Bytes>> {
        engine::read_meta(&*self.read()?, key)
    }

    async fn export(&self, shards: ShardRange) -> Result<ChunkStream> {
        let copy = self.read()?.clone();
        Ok(snapshot::spawn_export(copy, shards))
    }

    async fn import(&self, snapshot: ChunkStream) -> Result<SnapshotInfo> {
        self.import_now(snapshot).await
    }

    async fn load_state(&self, entity: &EntityKey) -> Result<Option<Bytes>> {
        engine::load_state(&*self.read()?, entity)
    }

    async fn read_journal(
        &self,
        entity: &EntityKey,
        execution: RequestId,
    ) -> Result<Vec<JournalEntry>> {
        engine::read_journal(&*self.read()?, entity, execution)
    }

    async fn read_reply(&self, shard: ShardId, request: RequestId) -> Result<Option<Bytes>> {
        engine::read_reply(&*self.read()?, shard, request)
    }

    async fn read_message(&self, shard: ShardId, request: RequestId) -> Result<Option<Message>> {
        engine::read_message(&*self.read()?, shard, request)
    }

    async fn due_messages(
        &self,
        shard: ShardId,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Message>> {
        engine::due_messages(&*self.read()?, shard, up_to, limit)
    }

    async fn next_message_due(&self, shard: ShardId) -> Result<Option<Timestamp>> {
        engine::next_message_due(&*self.read()?, shard)
    }

    async fn dead_letters(
        &self,
        shard: ShardId,
        after: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        engine::dead_letters(&*self.read()?, shard, after, limit)
    }

    async fn due_timers(
        &self,
        scope: ShardScope,
        up_to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Timer>> {
        engine::due_timers(&*self.read()?, scope, up_to, limit)
    }

    async fn next_timer_due(&self, scope: ShardScope) -> Result<Option<Timestamp>> {
        engine::next_timer_due(&*self.read()?, scope)
    }

    async fn read_deferred(&self, entity: &EntityKey, name: &str) -> Result<Option<DeferredValue>> {
        engine::read_deferred(&*self.read()?, entity, name)
    }

    async fn shard_epoch(&self, shard: ShardId) -> Result<Epoch> {
        engine::shard_epoch(&*self.read()?, shard)
    }

    async fn flush(&self) -> Result<()> {
        // Commits apply synchronously under the lock: nothing is in flight.
        self.check_open()
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Tables holding `rows`, for tests of the shared code.
#[cfg(test)]
pub(crate) fn tables_with(rows: Vec<(Table, Vec<u8>, Vec<u8>)>) -> Tables {
    let mut tables = Tables::default();
    for (table, key, value) in rows {
        tables.maps[table.index()].insert(key, Bytes::from(value));
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    #[tokio::test]
    async fn a_batch_failing_half_way_is_rolled_back() {
        let storage = MemoryStorage::new();
        let shard = ShardId::new(1);
        let entity = EntityKey::new(shard, "T", "a").expect("valid key");
        let request = RequestId::new(5);
        // A damaged message record: rescheduling it must fail.
        storage.raw_put(
            Table::Messages,
            &keys::request_key(shard, request),
            b"\xff\xff damaged",
        );

        let mut before = WriteBatch::new(shard, Epoch::ZERO);
        before.put_state(&entity, Bytes::from_static(b"old"));
        storage.commit(before).await.expect("commits");

        let mut batch = WriteBatch::new(shard, Epoch::new(3));
        batch.put_state(&entity, Bytes::from_static(b"new"));
        batch.ack(RequestId::new(6), Bytes::from_static(b"reply"));
        batch.reschedule(request, Timestamp::from_unix_ms(1));
        let error = storage.commit(batch).await.expect_err("corrupt record");
        assert!(
            matches!(
                error,
                Error::CorruptRecord {
                    table: "messages",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.is_fatal());

        // Nothing of the failed batch is visible, not even its epoch.
        assert_eq!(
            storage.load_state(&entity).await.expect("reads"),
            Some(Bytes::from_static(b"old"))
        );
        assert_eq!(
            storage
                .read_reply(shard, RequestId::new(6))
                .await
                .expect("reads"),
            None
        );
        assert_eq!(
            storage.shard_epoch(shard).await.expect("reads"),
            Epoch::ZERO
        );
    }

    #[tokio::test]
    async fn clones_share_data_and_close() {
        let storage = MemoryStorage::new();
        let other = storage.clone();
        let shard = ShardId::new(0);
        storage
            .commit(WriteBatch::new(shard, Epoch::new(2)))
            .await
            .expect("commits");
        assert_eq!(
            other.shard_epoch(shard).await.expect("reads"),
            Epoch::new(2)
        );
        other.close().await.expect("closes");
        assert!(matches!(
            storage.shard_epoch(shard).await,
            Err(Error::Closed)
        ));
    }
}
