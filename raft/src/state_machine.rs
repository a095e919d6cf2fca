//! [`StateMachine`]: openraft's `RaftStateMachine`, applying replicated
//! [`Command`]s (storage `WriteBatch`es) to the node's
//! `shoal_storage::Storage` backend, with `last_applied`, the last
//! membership and the current snapshot kept in a small redb file of this
//! crate (the *applied-state file*).
//!
//! On disk (format version 1; values protobuf, see `codec`):
//!
//! | table `meta` key | value |
//! |---|---|
//! | `magic` / `format_version` | `shoal-raft-state` / u32 big-endian |
//! | `last_applied` | `LogId` |
//! | `last_data` | `LogId` of the last applied entry carrying a command |
//! | `membership` | `StoredMembership` |
//! | `snapshot_last_log_id`, `snapshot_membership`, `snapshot_data` | the current snapshot |
//!
//! # Crash consistency
//! `Storage` has no way to commit `last_applied` in the same transaction as
//! a batch, so `apply` commits each batch to the storage backend (durably,
//! in log order, one after the other), then records `last_applied` for the
//! whole call in one durable transaction of the applied-state file, and
//! only then answers the proposers. A crash in between leaves the backend
//! *ahead* of `last_applied`: on restart openraft re-applies the entries
//! after `last_applied`, in order, over a state that already holds (some
//! of) their effects. That is harmless when re-applying a suffix of batches
//! in order converges to the same state, which holds per op (checked
//! against `storage/src/engine.rs`):
//! - overwrite ops (`PutState`, `DeleteState`, `DeleteJournal`,
//!   `DeleteReply`, `DeleteDeadLetter`, `PutTimer`, `DeleteTimer`,
//!   `DeleteDeferred`) converge, since the later writes are re-applied too;
//! - insert-if-absent ops (`AppendJournal`, `EnqueueMessage`, the reply of
//!   `AckMessage`, `ResolveDeferred`) are skipped when their key exists, and
//!   any later delete/re-insert of that key is re-applied after them;
//! - `DeadLetterMessage` and `ReplayDeadLetter` are skipped when the message
//!   already moved;
//! - fencing: a re-applied batch whose shard a later batch already raised to
//!   a newer epoch is rejected as stale, which is correct since its effects
//!   are already there;
//! - **does not hold for `RescheduleMessage`**: it increments the message's
//!   `attempts` unconditionally, so a re-applied reschedule counts one
//!   delivery attempt twice (the message may dead-letter one retry early).
//!   The window is one `apply` call, between the backend's commit and the
//!   applied-state commit.
//! - the *responses* of re-applied entries may differ (skips instead of
//!   applies), but nobody waits for them: proposers are answered only after
//!   `last_applied` is durable, and a restarted node has no proposers.
//!
//! # Snapshots
//! `Storage` cannot export or import a whole dataset yet, so a snapshot
//! carries no entity data: its data is a format version and the log id of
//! the last data-carrying entry it covers (`last_data`). Installing one is
//! allowed only when the local backend already holds that data (local
//! `last_applied` ≥ the snapshot's `last_data`); otherwise it fails with
//! [`Error::SnapshotUnsupported`] rather than silently skipping data. So
//! until the storage layer gets export/import, a cluster must not purge log
//! entries a lagging or new node still needs: run with
//! [`config()`](crate::config()) (`SnapshotPolicy::Never`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Durability, ReadableDatabase};
use shoal_storage::Storage;

use crate::codec;
use crate::error::{Error, Result};
use crate::file::{self, FileKind, META};
use crate::types::{
    Applied, Command, LogId, Rejected, Response, SnapshotMeta, StoredMembership, TypeConfig,
};

/// The applied-state file's identity: magic `shoal-raft-state`, version 1.
const KIND: FileKind = FileKind {
    name: "raft applied state",
    magic: b"shoal-raft-state",
    format_version: 1,
};

/// The format of a snapshot's data (`SnapshotData.format_version`).
const SNAPSHOT_FORMAT_VERSION: u32 = 1;

const META_LAST_APPLIED: &str = "last_applied";
const META_LAST_DATA: &str = "last_data";
const META_MEMBERSHIP: &str = "membership";
const META_SNAPSHOT_LAST_LOG_ID: &str = "snapshot_last_log_id";
const META_SNAPSHOT_MEMBERSHIP: &str = "snapshot_membership";
const META_SNAPSHOT_DATA: &str = "snapshot_data";

/// A snapshot as openraft sees it: metadata plus [`Bytes`] of data.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Bytes>;

/// What [`StateMachine`] remembers across restarts.
#[derive(Clone, Debug, Default)]
struct AppliedState {
    last_applied: Option<LogId>,
    last_data: Option<LogId>,
    membership: StoredMembership,
}

struct AppliedFile {
    db: redb::Database,
    path: PathBuf,
}

/// The replicated state machine: applies committed log entries to a
/// storage backend. Open it with [`StateMachine::open`]; hand it to
/// openraft.
pub struct StateMachine {
    storage: Arc<dyn Storage>,
    file: Arc<AppliedFile>,
    state: AppliedState,
}

/// Builds a snapshot of a [`StateMachine`] (openraft's
/// `RaftSnapshotBuilder`); it captured the state when it was created.
pub struct SnapshotBuilder {
    file: Arc<AppliedFile>,
    state: AppliedState,
}

impl StateMachine {
    /// Opens the applied-state file at `path` (creating it if missing) for a
    /// state machine applying into `storage`.
    ///
    /// The file must belong to that backend: a fresh file with a non-empty
    /// backend would re-apply the whole log over it (see the module docs).
    /// Fails like [`LogStore::open`](crate::LogStore::open) on a foreign,
    /// damaged or unknown-version file.
    pub fn open(path: impl AsRef<Path>, storage: Arc<dyn Storage>) -> Result<Self> {
        let path = path.as_ref();
        let db = file::open(path, &KIND, |_| Ok(()))?;
        let file = Arc::new(AppliedFile {
            db,
            path: path.to_owned(),
        });
        let state = file.read_state()?;
        file.read_snapshot()?;
        Ok(StateMachine {
            storage,
            file,
            state,
        })
    }

    /// The applied-state file's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// The storage backend batches are applied to.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The id of the last applied log entry.
    pub fn last_applied(&self) -> Option<&LogId> {
        self.state.last_applied.as_ref()
    }

    /// Applies one command; `Err` only for a failure that must stop the
    /// state machine (the batch may or may not be in the backend).
    async fn apply_command(&self, command: Command) -> Result<Response> {
        match command {
            Command::Batch(batch) => match self.storage.commit(batch).await {
                Ok(outcome) => Ok(Response::Applied(Applied::from_outcome(&outcome))),
                Err(shoal_storage::Error::StaleEpoch {
                    shard,
                    batch,
                    current,
                }) => Ok(Response::Rejected(Rejected::StaleEpoch {
                    shard: shard.get(),
                    batch: batch.get(),
                    current: current.get(),
                })),
                Err(
                    error @ (shoal_storage::Error::Invalid { .. }
                    | shoal_storage::Error::Decode { .. }),
                ) => Ok(Response::Rejected(Rejected::Invalid {
                    reason: error.to_string(),
                })),
                Err(error) => Err(Error::Storage(error)),
            },
        }
    }

    async fn persist(&self) -> io::Result<()> {
        let file = self.file.clone();
        let state = self.state.clone();
        blocking(move || file.write(Some(&state), None)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| io::Error::other(format!("applied-state write task failed: {join}")))?
        .map_err(Error::into_io)
}

impl AppliedFile {
    fn engine(&self, context: &'static str) -> impl Fn(redb::Error) -> Error + '_ {
        move |error| Error::engine(&self.path, context, error)
    }

    fn corrupt(&self, what: &str, error: codec::DecodeError) -> Error {
        Error::CorruptRecord {
            path: self.path.clone(),
            what: what.to_owned(),
            reason: error.0,
        }
    }

    fn read_all(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let read = self
            .db
            .begin_read()
            .map_err(|e| self.engine("reading")(e.into()))?;
        let meta = read
            .open_table(META)
            .map_err(|e| self.engine("reading")(e.into()))?;
        keys.iter()
            .map(|key| {
                Ok(meta
                    .get(*key)
                    .map_err(|e| self.engine("reading")(e.into()))?
                    .map(|value| value.value().to_vec()))
            })
            .collect()
    }

    fn decode_log_id(&self, what: &str, bytes: Option<Vec<u8>>) -> Result<Option<LogId>> {
        bytes
            .map(|bytes| codec::decode_log_id(&bytes).map_err(|e| self.corrupt(what, e)))
            .transpose()
    }

    fn decode_membership(&self, what: &str, bytes: Option<Vec<u8>>) -> Result<StoredMembership> {
        match bytes {
            None => Ok(StoredMembership::default()),
            Some(bytes) => {
                codec::decode_stored_membership(&bytes).map_err(|e| self.corrupt(what, e))
            }
        }
    }

    fn read_state(&self) -> Result<AppliedState> {
        let mut values = self
            .read_all(&[META_LAST_APPLIED, META_LAST_DATA, META_MEMBERSHIP])?
            .into_iter();
        Ok(AppliedState {
            last_applied: self.decode_log_id("last applied log id", values.next().flatten())?,
            last_data: self.decode_log_id("last data log id", values.next().flatten())?,
            membership: self.decode_membership("membership", values.next().flatten())?,
        })
    }

    fn read_snapshot(&self) -> Result<Option<Snapshot>> {
        let mut values = self
            .read_all(&[
                META_SNAPSHOT_LAST_LOG_ID,
                META_SNAPSHOT_MEMBERSHIP,
                META_SNAPSHOT_DATA,
            ])?
            .into_iter();
        let last_log_id = self.decode_log_id("snapshot last log id", values.next().flatten())?;
        let membership = self.decode_membership("snapshot membership", values.next().flatten())?;
        let Some(data) = values.next().flatten() else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id,
                last_membership: membership,
            },
            snapshot: Bytes::from(data),
        }))
    }

    /// Writes the applied state and/or the current snapshot, in one durable
    /// transaction.
    fn write(&self, state: Option<&AppliedState>, snapshot: Option<&Snapshot>) -> Result<()> {
        let engine = self.engine("writing");
        let mut txn = self.db.begin_write().map_err(|e| engine(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| engine(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| engine(e.into()))?;
            let mut put_log_id = |key: &str, log_id: Option<&LogId>| match log_id {
                Some(log_id) => meta
                    .insert(key, codec::encode_log_id(log_id).as_slice())
                    .map(drop),
                None => meta.remove(key).map(drop),
            };
            if let Some(state) = state {
                put_log_id(META_LAST_APPLIED, state.last_applied.as_ref())
                    .map_err(|e| engine(e.into()))?;
                put_log_id(META_LAST_DATA, state.last_data.as_ref())
                    .map_err(|e| engine(e.into()))?;
            }
            if let Some(snapshot) = snapshot {
                put_log_id(
                    META_SNAPSHOT_LAST_LOG_ID,
                    snapshot.meta.last_log_id.as_ref(),
                )
                .map_err(|e| engine(e.into()))?;
            }
            if let Some(state) = state {
                meta.insert(
                    META_MEMBERSHIP,
                    codec::encode_stored_membership(&state.membership).as_slice(),
                )
                .map_err(|e| engine(e.into()))?;
            }
            if let Some(snapshot) = snapshot {
                meta.insert(
                    META_SNAPSHOT_MEMBERSHIP,
                    codec::encode_stored_membership(&snapshot.meta.last_membership).as_slice(),
                )
                .map_err(|e| engine(e.into()))?;
                meta.insert(META_SNAPSHOT_DATA, snapshot.snapshot.as_ref())
                    .map_err(|e| engine(e.into()))?;
            }
        }
        txn.commit()
            .map_err(|e| self.engine("committing")(e.into()))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.state.last_applied,
                last_membership: self.state.membership.clone(),
            },
            snapshot: Bytes::from(codec::encode_snapshot_data(
                SNAPSHOT_FORMAT_VERSION,
                self.state.last_data.as_ref(),
            )),
        };
        let file = self.file.clone();
        let stored = snapshot.clone();
        blocking(move || file.write(None, Some(&stored))).await?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let applied_before = self.state.last_applied;
        let mut answers = Vec::new();
        let mut failure = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = match item {
                Ok(item) => item,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let log_id = entry.log_id;
            let response = match entry.payload {
                EntryPayload::Blank => Response::Empty,
                EntryPayload::Normal(command) => match self.apply_command(command).await {
                    Ok(response) => {
                        self.state.last_data = Some(log_id);
                        response
                    }
                    Err(error) => {
                        tracing::error!(%log_id, %error, "applying a replicated batch failed");
                        failure = Some(error.into_io());
                        break;
                    }
                },
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(log_id), membership);
                    Response::Empty
                }
            };
            self.state.last_applied = Some(log_id);
            if let Some(responder) = responder {
                answers.push((responder, response));
            }
        }
        // Record what did apply, even when stopping on a failure.
        if self.state.last_applied != applied_before {
            self.persist().await?;
        }
        if let Some(error) = failure {
            return Err(error);
        }
        for (responder, response) in answers {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            file: self.file.clone(),
            state: self.state.clone(),
        }
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> io::Result<()> {
        let unsupported = |reason: String| Error::SnapshotUnsupported { reason }.into_io();
        let (version, last_data) = codec::decode_snapshot_data(&snapshot)
            .map_err(|e| unsupported(format!("undecodable snapshot data: {e}")))?;
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(unsupported(format!(
                "snapshot data format version {version}, this build reads {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        if last_data > self.state.last_applied {
            return Err(unsupported(format!(
                "it covers data up to log entry {} but this node has applied only up to {}; \
                 the storage layer cannot transfer entity data yet",
                display(last_data.as_ref()),
                display(self.state.last_applied.as_ref()),
            )));
        }
        if self.state.last_applied > meta.last_log_id {
            return Err(unsupported(format!(
                "it ends at log entry {} but this node has applied up to {}",
                display(meta.last_log_id.as_ref()),
                display(self.state.last_applied.as_ref()),
            )));
        }
        let mut state = self.state.clone();
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        let stored = Snapshot {
            meta: meta.clone(),
            snapshot,
        };
        let file = self.file.clone();
        let written = state.clone();
        blocking(move || file.write(Some(&written), Some(&stored))).await?;
        self.state = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        self.file.read_snapshot().map_err(Error::into_io)
    }
}

fn display(log_id: Option<&LogId>) -> String {
    match log_id {
        Some(log_id) => log_id.to_string(),
        None => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use shoal_storage::{EntityKey, Epoch, MemoryStorage, RequestId, ShardId, WriteBatch};

    use super::*;

    #[tokio::test]
    async fn responses_report_skips_and_deterministic_rejections() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let sm = StateMachine::open(dir.path().join("state.redb"), storage)?;
        let shard = ShardId::new(1);

        let mut batch = WriteBatch::new(shard, Epoch::new(2));
        batch.ack(RequestId::new(7), b"first".to_vec());
        let second = batch.ack(RequestId::new(7), b"second".to_vec());
        let Response::Applied(applied) = sm.apply_command(Command::Batch(batch)).await? else {
            panic!("expected Applied");
        };
        assert!(!applied.applied_all());
        assert_eq!(
            applied.skip_reason(second),
            Some(shoal_storage::SkipReason::ReplyExists)
        );

        let stale = WriteBatch::new(shard, Epoch::new(1));
        assert_eq!(
            sm.apply_command(Command::Batch(stale)).await?,
            Response::Rejected(Rejected::StaleEpoch {
                shard: 1,
                batch: 1,
                current: 2
            })
        );

        let other = EntityKey::new(ShardId::new(9), "T", "x")?;
        let mut invalid = WriteBatch::new(shard, Epoch::new(2));
        invalid.put_state(&other, b"wrong shard".to_vec());
        assert!(matches!(
            sm.apply_command(Command::Batch(invalid)).await?,
            Response::Rejected(Rejected::Invalid { .. })
        ));

        sm.storage().close().await?;
        let closed = WriteBatch::new(shard, Epoch::new(2));
        assert!(matches!(
            sm.apply_command(Command::Batch(closed)).await,
            Err(Error::Storage(shoal_storage::Error::Closed))
        ));
        Ok(())
    }
}
