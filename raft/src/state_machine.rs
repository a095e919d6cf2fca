//! [`StateMachine`]: openraft's `RaftStateMachine`, applying replicated
//! [`Command`]s (storage `WriteBatch`es) to the node's
//! `shoal_storage::Storage` backend, exactly once, and snapshots that carry
//! the whole dataset.
//!
//! # The applied marker: exactly-once apply
//! What has been applied lives *in the storage backend*, in its node
//! metadata namespace: the record [`APPLIED_MARKER`] (`raft.applied`),
//! protobuf `AppliedMarker { last_applied, last_data, membership, cluster }`
//! (see `codec`; `cluster` is the [`ClusterState`], absent in an older
//! build's marker, which then reads as the default state with no
//! placement). Each `apply` call commits the batches of its committed entries
//! with ONE `Storage::commit_group_with(batches, Some((raft.applied,
//! marker)), Durability::Deferred)` (split only when a call exceeds the
//! storage group limits, each part carrying the marker of its last entry):
//! the batches and the marker land in one atomic transaction, so the
//! backend holds both or neither — also after a crash — and openraft
//! re-applies exactly the entries after `last_applied` — none of which is
//! in the backend. No op is ever applied twice (a `RescheduleMessage`
//! counts its attempt once); an entry at or below `last_applied` handed to
//! `apply` again is skipped (answered `Response::Empty`). Each batch's slot
//! of the group result becomes its [`Response`]: `Applied` (with skips),
//! `Rejected` for a stale epoch or an invalid batch (deterministic, the
//! same on every replica, nothing of it applied); any other per-batch error
//! stops the state machine. Proposers are answered once the group (with its
//! marker) is applied — visible to every read of the backend —, not once it
//! is durable.
//!
//! # Durability rests on the log
//! The apply is deferred-durable (no fsync of its own): the entries it
//! applies are already durable in the Raft log of a majority (the log store
//! fsyncs before an append is acknowledged), so the apply only has to be
//! atomic with its marker, not durable. The backend makes it durable with
//! its next durable commit, `flush`, `close`, or within a bound (redb:
//! `RedbConfig::deferred_durability_max`, 100 ms). A crash may lose the
//! last applies — each whole, batches and marker together, a prefix
//! surviving — and restart then works from the older marker: openraft
//! installs the snapshot if it is newer than `last_applied`
//! (`restore_from_snapshot`) and re-applies the committed entries after
//! `last_applied` from the log, up to the log store's saved `committed`
//! hint at startup and the rest once it learns the commit index from the
//! leader (or commits one as leader). The log is never purged past a
//! snapshot that is on disk (openraft purges only up to the current
//! snapshot's last log id, which is fsynced before it becomes current), so
//! every lost entry is in the log or in the snapshot. Until that catch-up
//! completes, the backend of a restarted node may lack writes it applied —
//! and acknowledged — before the crash: a reader that must see them (an
//! owner activating an entity after a restart) waits until the node's
//! `last_applied` reaches the commit index it learned.
//!
//! Everything else stays immediate: the migration's marker, and snapshot
//! installs (`Storage::import`, which also makes every earlier deferred
//! apply durable).
//!
//! # Cluster state and fencing
//! Membership entries and [`Command::Cluster`] commands update the
//! [`ClusterState`] (see [`crate::cluster`]) in log order; it is part of
//! the marker, so it commits with the entries that changed it. A
//! [`Command::Batch`] is fenced before it joins the group: unless its epoch
//! equals its shard's epoch in the cluster state at that point of the log,
//! it is answered [`Rejected::StaleEpoch`] (`current` = the shard's epoch,
//! 0 if it has no owner) and applies nothing — on every replica alike.
//! (The storage backend's own monotonic epoch check stays; a legitimate
//! owner never trips it, as epochs only rise.) Per-shard epochs are cached
//! until the placement changes. [`StateMachine::cluster`] publishes the
//! state after each apply call that changed it (once applied), and after a
//! snapshot install.
//!
//! [`StateMachine::open`] reads the marker back; a backend without one has
//! applied nothing (a fresh node). There is no applied-state file any more.
//! **Migration:** a `raft-state.redb` left in the directory by an older
//! build (magic `shoal-raft-state`) is read once when the backend has no
//! marker: its `last_applied`, `last_data` and membership become the marker
//! (one `commit_group` with no batches), then the file is renamed to
//! `raft-state.redb.migrated`. (That older build could leave the backend
//! ahead of its file by one apply call, which openraft then re-applies once
//! more, as it would have anyway.) When the backend already has a marker,
//! the old file is only renamed.
//!
//! # Snapshots
//! A snapshot is the whole dataset: `Storage::export(ShardRange::ALL)`,
//! which includes `node_meta`, i.e. the applied marker of exactly the
//! entries the data reflects. The export is started in
//! `get_snapshot_builder`, which openraft calls between `apply` calls, so
//! its read snapshot and the builder's `last_applied` / membership (the
//! snapshot meta) are the same point of the log. The export reads the
//! backend's latest commits, durable or not: the snapshot file itself is
//! fsynced before it becomes current, so it never depends on the
//! deferred applies it contains being durable in the backend.
//!
//! On disk, the current snapshot is one file in the directory,
//! [`SNAPSHOT_FILE`] (`raft-snapshot.bin`): magic `SHOALRSN` · format
//! version u32 BE (1) · header length u32 BE · protobuf `SnapshotMeta`
//! (last log id, membership) · the storage snapshot stream (self-checking:
//! per-frame and whole-stream xxh3, see `shoal_storage::snapshot`). It is
//! written to a temp file in the same directory, fsynced, renamed over the
//! old one and the directory fsynced, so the snapshot on disk is complete
//! or absent. openraft's snapshot data (`Bytes`) is the storage stream
//! alone; the meta travels beside it.
//!
//! Installing one (`install_snapshot`, with a snapshot received from the
//! leader, or the current one again when openraft restores at startup):
//! the data goes to the temp file `raft-snapshot.installing` first (fsynced),
//! then `Storage::import` replaces the dataset atomically (marker
//! included), then the marker is read back and must agree with the
//! snapshot meta (same last log id and membership) — a disagreement is
//! [`Error::SnapshotUnsupported`] and stops the state machine; only then
//! is the temp file renamed into place. A crash after the import but
//! before the rename is repaired by [`StateMachine::open`]: an installing
//! file whose meta matches the backend's marker is renamed into place;
//! other leftover temp files are deleted. A snapshot that does not
//! decode or import leaves the dataset and the current snapshot as they
//! were.
//!
//! Snapshot bytes are held in memory while built, sent and installed
//! (the network receives them into one buffer, bounded by its configured
//! maximum); writing and reading the file is the only disk I/O.

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use openraft::storage::{ApplyResponder, EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::ReadableDatabase;
use shoal_storage::{
    ChunkStream, Durability, Epoch, MetaKey, ShardId, ShardRange, Storage, WriteBatch,
};
use tokio::sync::watch;

use crate::cluster::ClusterState;
use crate::codec;
use crate::error::{Error, Result};
use crate::file::{self, FileKind, META};
use crate::types::{
    Applied, Command, LogId, Rejected, Response, SnapshotMeta, StoredMembership, TypeConfig,
};

/// The storage `node_meta` key of the applied marker.
pub const APPLIED_MARKER: &str = "raft.applied";

/// The current snapshot's file name, in the state machine's directory.
pub const SNAPSHOT_FILE: &str = "raft-snapshot.bin";

/// The temp file an installed snapshot is written to before its import.
const INSTALLING_FILE: &str = "raft-snapshot.installing";

/// Prefix of the temp files a built snapshot is written to.
const BUILDING_PREFIX: &str = "raft-snapshot.building";

/// The applied-state file of older builds, migrated at open.
const LEGACY_FILE: &str = "raft-state.redb";

const SNAPSHOT_MAGIC: &[u8; 8] = b"SHOALRSN";
const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// magic · version · header length.
const SNAPSHOT_PREFIX_BYTES: usize = 8 + 4 + 4;
/// A bound on the snapshot file's header (a meta with a few members).
const SNAPSHOT_HEADER_BYTES_MAX: usize = 1024 * 1024;

/// The older builds' applied-state file.
const LEGACY_KIND: FileKind = FileKind {
    name: "raft applied state",
    magic: b"shoal-raft-state",
    format_version: 1,
};

/// A snapshot as openraft sees it: metadata plus [`Bytes`] of data (a
/// storage snapshot stream).
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Bytes>;

/// What [`StateMachine`] has applied (the applied marker).
#[derive(Clone, Debug, Default, PartialEq)]
struct AppliedState {
    last_applied: Option<LogId>,
    last_data: Option<LogId>,
    membership: StoredMembership,
    /// Shared with the watch channel and the previous state: cloned only
    /// when changed (`Arc::make_mut`).
    cluster: Arc<ClusterState>,
}

impl AppliedState {
    /// The marker's bytes, with the cluster state already encoded.
    fn encode(&self, cluster: &[u8]) -> Bytes {
        Bytes::from(codec::encode_applied_marker(
            self.last_applied.as_ref(),
            self.last_data.as_ref(),
            &self.membership,
            cluster,
        ))
    }
}

/// The directory holding the current snapshot, shared with the builders.
struct SnapshotDir {
    dir: PathBuf,
    /// Serialises replacing the current snapshot file (a build may finish
    /// while an install runs).
    replace: tokio::sync::Mutex<()>,
    /// Distinguishes the temp files of builds.
    builds: AtomicU64,
}

/// The replicated state machine: applies committed log entries to a
/// storage backend, exactly once (see the module docs). Open it with
/// [`StateMachine::open`]; hand it to openraft.
pub struct StateMachine {
    storage: Arc<dyn Storage>,
    marker_key: MetaKey,
    snapshots: Arc<SnapshotDir>,
    state: AppliedState,
    /// The last published cluster state (see [`StateMachine::cluster`]).
    cluster_tx: watch::Sender<Arc<ClusterState>>,
    /// The encoding of a cluster state (re-encoded only when the state
    /// changed: the marker carries it at every apply).
    cluster_encoded: (Arc<ClusterState>, Vec<u8>),
    /// Per-shard epochs (the fence of every batch), computed for the
    /// placement of the given generation (`None`: no placement); cleared
    /// when a lookup finds the placement changed.
    epochs: (Option<u64>, HashMap<ShardId, Option<Epoch>>),
}

/// Builds a snapshot of a [`StateMachine`] (openraft's
/// `RaftSnapshotBuilder`): the export it holds was started when it was
/// created, at the same log position as its meta.
pub struct SnapshotBuilder {
    snapshots: Arc<SnapshotDir>,
    meta: SnapshotMeta,
    /// (A `Mutex` only to make the builder `Sync`, as openraft requires.)
    export: std::sync::Mutex<Option<shoal_storage::Result<ChunkStream>>>,
}

impl StateMachine {
    /// Opens the state machine of the Raft data directory `dir` (created if
    /// missing; it holds the current snapshot file) over `storage`, reading
    /// the applied marker from `storage` (none: nothing applied).
    ///
    /// Migrates an older build's `raft-state.redb` and finishes or cleans up
    /// an interrupted snapshot install (see the module docs). Fails on an
    /// undecodable marker ([`Error::CorruptRecord`]), a storage failure, a
    /// foreign or damaged legacy file, or an I/O error, naming the path.
    pub async fn open(dir: impl AsRef<Path>, storage: Arc<dyn Storage>) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let marker_key = MetaKey::new(APPLIED_MARKER).map_err(Error::Storage)?;
        let mut state = read_marker(&storage, &marker_key, &dir).await?;
        let legacy = dir.join(LEGACY_FILE);
        if legacy.exists() {
            if state.is_none() {
                let migrated = read_legacy(&legacy)?;
                tracing::info!(path = %legacy.display(), ?migrated, "migrating the applied state into storage");
                commit_marker(&storage, &marker_key, &migrated).await?;
                state = Some(migrated);
            }
            let target = dir.join(format!("{LEGACY_FILE}.migrated"));
            std::fs::rename(&legacy, &target).map_err(|source| Error::Io {
                path: legacy.clone(),
                source,
            })?;
        }
        let state = state.unwrap_or_default();
        let snapshots = Arc::new(SnapshotDir {
            dir,
            replace: tokio::sync::Mutex::new(()),
            builds: AtomicU64::new(0),
        });
        snapshots.recover(&state)?;
        let (cluster_tx, _) = watch::channel(state.cluster.clone());
        let cluster_encoded = (
            state.cluster.clone(),
            codec::encode_cluster_state(&state.cluster),
        );
        Ok(StateMachine {
            storage,
            marker_key,
            snapshots,
            state,
            cluster_tx,
            cluster_encoded,
            epochs: (None, HashMap::new()),
        })
    }

    /// A receiver of the applied [`ClusterState`]: the state as of open,
    /// then updated after each apply call that changed it (once it is
    /// applied) and after a snapshot install. Callable before the state
    /// machine is handed to `Raft::new`; any number of receivers.
    pub fn cluster(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.cluster_tx.subscribe()
    }

    /// The applied [`ClusterState`] (what [`cluster`](Self::cluster)
    /// publishes, or newer by the entries of an apply call in progress).
    pub fn cluster_state(&self) -> Arc<ClusterState> {
        self.state.cluster.clone()
    }

    /// Publishes the applied cluster state to the watchers if it changed.
    fn publish_cluster(&self) {
        let cluster = &self.state.cluster;
        self.cluster_tx.send_if_modified(|current| {
            if *current == *cluster {
                false
            } else {
                *current = cluster.clone();
                true
            }
        });
    }

    /// The epoch a batch of `shard` must carry now (cached until the
    /// placement changes: a new placement has a new generation).
    fn epoch_of(&mut self, shard: ShardId) -> Option<Epoch> {
        let cluster = &self.state.cluster;
        let placement = cluster.history().next_back().map(|p| p.generation);
        let (cached_for, epochs) = &mut self.epochs;
        if *cached_for != placement {
            epochs.clear();
            *cached_for = placement;
        }
        *epochs.entry(shard).or_insert_with(|| cluster.epoch(shard))
    }

    /// The applied marker of `self.state`.
    fn marker(&mut self) -> Bytes {
        if !Arc::ptr_eq(&self.cluster_encoded.0, &self.state.cluster) {
            self.cluster_encoded = (
                self.state.cluster.clone(),
                codec::encode_cluster_state(&self.state.cluster),
            );
        }
        self.state.encode(&self.cluster_encoded.1)
    }

    /// The Raft data directory (the current snapshot's file is in it).
    pub fn dir(&self) -> &Path {
        &self.snapshots.dir
    }

    /// The storage backend batches are applied to.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The id of the last applied log entry.
    pub fn last_applied(&self) -> Option<&LogId> {
        self.state.last_applied.as_ref()
    }

    /// Commits `batches` with the marker of `self.state` in one storage
    /// transaction, deferred-durable (see the module docs: durability rests
    /// on the log); `Err`: nothing landed. Per-batch results inside.
    async fn commit_group(
        &mut self,
        batches: Vec<WriteBatch>,
    ) -> Result<Vec<shoal_storage::Result<shoal_storage::CommitOutcome>>> {
        let marker = self.marker();
        self.storage
            .commit_group_with(
                batches,
                Some((self.marker_key.clone(), marker)),
                Durability::Deferred,
            )
            .await
            .map_err(Error::Storage)
    }

    /// Commits the pending `batches` (taken) with the marker of
    /// `self.state`, returning their responses; on a failure of the whole
    /// group, rolls `self.state` back to `committed` (nothing landed).
    async fn flush(
        &mut self,
        batches: &mut Vec<WriteBatch>,
        committed: &AppliedState,
    ) -> io::Result<Vec<Response>> {
        let group = std::mem::take(batches);
        let results = match self.commit_group(group).await {
            Ok(results) => results,
            Err(error) => {
                tracing::error!(
                    last_applied = %show(committed.last_applied.as_ref()),
                    %error,
                    "committing replicated entries failed"
                );
                self.state = committed.clone();
                return Err(error.into_io());
            }
        };
        // The group and its marker are applied (visible) from here on; they
        // are durable soon, and recoverable from the log until then.
        self.publish_cluster();
        results
            .into_iter()
            .map(response)
            .collect::<Result<Vec<_>>>()
            .map_err(|error| {
                tracing::error!(
                    last_applied = %show(self.state.last_applied.as_ref()),
                    %error,
                    "a replicated batch failed in a way that is not deterministic"
                );
                error.into_io()
            })
    }
}

/// The response to one batch of a group, or the error that must stop the
/// state machine.
fn response(result: shoal_storage::Result<shoal_storage::CommitOutcome>) -> Result<Response> {
    match result {
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
            error @ (shoal_storage::Error::Invalid { .. } | shoal_storage::Error::Decode { .. }),
        ) => Ok(Response::Rejected(Rejected::Invalid {
            reason: error.to_string(),
        })),
        Err(error) => Err(Error::Storage(error)),
    }
}

async fn read_marker(
    storage: &Arc<dyn Storage>,
    key: &MetaKey,
    dir: &Path,
) -> Result<Option<AppliedState>> {
    let Some(bytes) = storage.read_meta(key).await.map_err(Error::Storage)? else {
        return Ok(None);
    };
    decode_marker(&bytes, dir).map(Some)
}

fn decode_marker(bytes: &[u8], dir: &Path) -> Result<AppliedState> {
    let marker = codec::decode_applied_marker(bytes).map_err(|e| Error::CorruptRecord {
        path: dir.to_owned(),
        what: format!("storage meta record {APPLIED_MARKER}"),
        reason: e.0,
    })?;
    Ok(AppliedState {
        last_applied: marker.last_applied,
        last_data: marker.last_data,
        membership: marker.membership,
        cluster: Arc::new(marker.cluster),
    })
}

async fn commit_marker(
    storage: &Arc<dyn Storage>,
    key: &MetaKey,
    state: &AppliedState,
) -> Result<()> {
    let cluster = codec::encode_cluster_state(&state.cluster);
    storage
        .commit_group(Vec::new(), Some((key.clone(), state.encode(&cluster))))
        .await
        .map_err(Error::Storage)?;
    Ok(())
}

/// Reads an older build's applied-state file.
fn read_legacy(path: &Path) -> Result<AppliedState> {
    let db = file::open(path, &LEGACY_KIND, |_| Ok(()))?;
    let engine = |e: redb::Error| Error::engine(path, "reading", e);
    let read = db.begin_read().map_err(|e| engine(e.into()))?;
    let meta = read.open_table(META).map_err(|e| engine(e.into()))?;
    let get = |key: &str| -> Result<Option<Vec<u8>>> {
        Ok(meta
            .get(key)
            .map_err(|e| engine(e.into()))?
            .map(|value| value.value().to_vec()))
    };
    let corrupt = |what: &str, e: codec::DecodeError| Error::CorruptRecord {
        path: path.to_owned(),
        what: what.to_owned(),
        reason: e.0,
    };
    let log_id = |key: &str| -> Result<Option<LogId>> {
        get(key)?
            .map(|bytes| codec::decode_log_id(&bytes).map_err(|e| corrupt(key, e)))
            .transpose()
    };
    let membership = match get("membership")? {
        None => StoredMembership::default(),
        Some(bytes) => {
            codec::decode_stored_membership(&bytes).map_err(|e| corrupt("membership", e))?
        }
    };
    let cluster = Arc::new(ClusterState::with_members(
        membership.membership().nodes().map(|(id, _)| *id).collect(),
    ));
    Ok(AppliedState {
        last_applied: log_id("last_applied")?,
        last_data: log_id("last_data")?,
        membership,
        cluster,
    })
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The bytes of a snapshot file: prefix, header, data.
fn snapshot_file_bytes(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let header = codec::encode_snapshot_meta(meta);
    let mut out = Vec::with_capacity(SNAPSHOT_PREFIX_BYTES + header.len() + data.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
    // The header is a few hundred bytes (a membership); it always fits.
    out.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Parses a snapshot file; never panics on its contents.
fn parse_snapshot_file(path: &Path, bytes: Bytes) -> Result<Snapshot> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        kind: "raft snapshot",
        reason,
    };
    if bytes.len() < SNAPSHOT_PREFIX_BYTES {
        return Err(corrupt(format!(
            "{} bytes, shorter than its prefix",
            bytes.len()
        )));
    }
    if &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt("wrong magic".to_owned()));
    }
    let word = |at: usize| {
        let mut four = [0u8; 4];
        four.copy_from_slice(&bytes[at..at + 4]);
        u32::from_be_bytes(four)
    };
    let version = word(8);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            kind: "raft snapshot",
            found: version,
            expected: SNAPSHOT_FORMAT_VERSION,
        });
    }
    let header_len = word(12) as usize;
    if header_len > SNAPSHOT_HEADER_BYTES_MAX || SNAPSHOT_PREFIX_BYTES + header_len > bytes.len() {
        return Err(corrupt(format!(
            "header of {header_len} bytes does not fit"
        )));
    }
    let data_at = SNAPSHOT_PREFIX_BYTES + header_len;
    let meta = codec::decode_snapshot_meta(&bytes[SNAPSHOT_PREFIX_BYTES..data_at])
        .map_err(|e| corrupt(e.0))?;
    Ok(Snapshot {
        meta,
        snapshot: bytes.slice(data_at..),
    })
}

/// Writes `bytes` to `path` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(io_at(path))?;
    file.write_all(bytes).map_err(io_at(path))?;
    file.sync_all().map_err(io_at(path))
}

/// Fsyncs a directory (so a rename in it is durable).
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

impl SnapshotDir {
    fn current(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// The current snapshot, if any.
    fn read_current(&self) -> Result<Option<Snapshot>> {
        read_snapshot_file(&self.current())
    }

    /// Renames `temp` (complete and fsynced) over the current snapshot,
    /// unless the current one is newer (then `temp` is removed).
    async fn replace(&self, temp: PathBuf, meta: SnapshotMeta) -> io::Result<()> {
        let _guard = self.replace.lock().await;
        let current = self.current();
        let dir = self.dir.clone();
        blocking(move || {
            if let Some(existing) = read_snapshot_file(&current)?
                && existing.meta.last_log_id > meta.last_log_id
            {
                std::fs::remove_file(&temp).map_err(io_at(&temp))?;
                return Ok(());
            }
            std::fs::rename(&temp, &current).map_err(io_at(&temp))?;
            sync_dir(&dir)
        })
        .await
    }

    /// At open: an install interrupted after its import (its temp file
    /// matches the backend's marker) is completed; other temp files go.
    fn recover(&self, state: &AppliedState) -> Result<()> {
        let installing = self.dir.join(INSTALLING_FILE);
        // A damaged temp file (the crash hit its write) is just removed.
        if let Some(snapshot) = read_snapshot_file(&installing).unwrap_or(None)
            && snapshot.meta.last_log_id.is_some()
            && snapshot.meta.last_log_id == state.last_applied
            && snapshot.meta.last_membership == state.membership
            && self
                .read_current()
                .unwrap_or(None)
                .is_none_or(|c| c.meta.last_log_id < snapshot.meta.last_log_id)
        {
            tracing::info!(path = %installing.display(), "completing an interrupted snapshot install");
            std::fs::rename(&installing, self.current()).map_err(io_at(&installing))?;
            sync_dir(&self.dir)?;
        }
        let entries = std::fs::read_dir(&self.dir).map_err(io_at(&self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_at(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == INSTALLING_FILE || name.starts_with(BUILDING_PREFIX) {
                std::fs::remove_file(entry.path()).map_err(io_at(&entry.path()))?;
            }
        }
        Ok(())
    }
}

fn read_snapshot_file(path: &Path) -> Result<Option<Snapshot>> {
    match std::fs::read(path) {
        Ok(bytes) => parse_snapshot_file(path, Bytes::from(bytes)).map(Some),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| io::Error::other(format!("snapshot file task failed: {join}")))?
        .map_err(Error::into_io)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let export = self
            .export
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let mut stream = match export {
            Some(Ok(stream)) => stream,
            Some(Err(error)) => return Err(Error::Storage(error).into_io()),
            None => return Err(io::Error::other("snapshot builder used twice")),
        };
        let mut data = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.map_err(|e| Error::Storage(e).into_io())?);
        }
        let data = data.freeze();
        let n = self.snapshots.builds.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .snapshots
            .dir
            .join(format!("{BUILDING_PREFIX}.{}.{n}", std::process::id()));
        let bytes = snapshot_file_bytes(&self.meta, &data);
        let written = temp.clone();
        blocking(move || write_synced(&written, &bytes)).await?;
        self.snapshots.replace(temp, self.meta.clone()).await?;
        tracing::info!(last_log_id = %show(self.meta.last_log_id.as_ref()), bytes = data.len(), "built a snapshot");
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: data,
        })
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
        /// An entry's answer: known now, or the response of batch `i` of
        /// the pending group.
        enum Answer {
            Now(Response),
            Batch(usize),
        }
        let mut committed = self.state.clone();
        let mut batches: Vec<WriteBatch> = Vec::new();
        let mut bytes = 0usize;
        let mut answers: Vec<(ApplyResponder<TypeConfig>, Answer)> = Vec::new();
        let mut failure = None;
        loop {
            let item = match entries.next().await {
                None => None,
                Some(Ok(item)) => Some(item),
                Some(Err(error)) => {
                    failure = Some(error);
                    None
                }
            };
            // Flush the group at the end, or before it would break a limit.
            let flush = match &item {
                None => true,
                Some((entry, _)) => match &entry.payload {
                    EntryPayload::Normal(Command::Batch(batch)) => {
                        !batches.is_empty()
                            && (batches.len() >= shoal_storage::limits::GROUP_BATCHES_MAX
                                || bytes + batch.payload_bytes()
                                    > shoal_storage::limits::GROUP_BYTES_MAX)
                    }
                    _ => false,
                },
            };
            if flush {
                let responses = if self.state == committed {
                    // Nothing new (only already-applied entries, if any).
                    Vec::new()
                } else {
                    self.flush(&mut batches, &committed).await?
                };
                committed = self.state.clone();
                for (responder, answer) in answers.drain(..) {
                    let response = match answer {
                        Answer::Now(response) => response,
                        Answer::Batch(i) => responses.get(i).cloned().unwrap_or_default(),
                    };
                    responder.send(response);
                }
                bytes = 0;
            }
            let Some((entry, responder)) = item else {
                break;
            };
            let log_id = entry.log_id;
            if Some(log_id) <= self.state.last_applied {
                // Already in storage (openraft never re-sends these; a
                // caller might): applying it again would double-count.
                tracing::warn!(%log_id, "skipping an entry that is already applied");
                if let Some(responder) = responder {
                    answers.push((responder, Answer::Now(Response::Empty)));
                }
                continue;
            }
            let answer = match entry.payload {
                EntryPayload::Blank => Answer::Now(Response::Empty),
                EntryPayload::Normal(Command::Batch(batch)) => {
                    self.state.last_data = Some(log_id);
                    let current = self.epoch_of(batch.shard());
                    if current == Some(batch.epoch()) {
                        bytes += batch.payload_bytes();
                        batches.push(batch);
                        Answer::Batch(batches.len() - 1)
                    } else {
                        // Fenced, the same way on every replica.
                        Answer::Now(Response::Rejected(Rejected::StaleEpoch {
                            shard: batch.shard().get(),
                            batch: batch.epoch().get(),
                            current: current.map_or(0, Epoch::get),
                        }))
                    }
                }
                EntryPayload::Normal(Command::Cluster(command)) => {
                    self.state.last_data = Some(log_id);
                    let response =
                        Arc::make_mut(&mut self.state.cluster).execute(log_id.index, &command);
                    Answer::Now(response)
                }
                EntryPayload::Membership(membership) => {
                    Arc::make_mut(&mut self.state.cluster)
                        .apply_membership(log_id.index, &membership);
                    self.state.membership = StoredMembership::new(Some(log_id), membership);
                    Answer::Now(Response::Empty)
                }
            };
            self.state.last_applied = Some(log_id);
            if let Some(responder) = responder {
                answers.push((responder, answer));
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            snapshots: self.snapshots.clone(),
            meta: SnapshotMeta {
                last_log_id: self.state.last_applied,
                last_membership: self.state.membership.clone(),
            },
            // Started here, between apply calls: the export's read snapshot
            // is exactly `meta`'s log position.
            export: std::sync::Mutex::new(Some(self.storage.export(ShardRange::ALL).await)),
        }
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> io::Result<()> {
        let refuse = |reason: String| Error::SnapshotUnsupported { reason }.into_io();
        let temp = self.snapshots.dir.join(INSTALLING_FILE);
        let bytes = snapshot_file_bytes(meta, &snapshot);
        let written = temp.clone();
        blocking(move || write_synced(&written, &bytes)).await?;

        let stream = shoal_storage::snapshot::stream_from_chunks(vec![Ok(snapshot)]);
        if let Err(error) = self.storage.import(stream).await {
            let _ = std::fs::remove_file(&temp);
            return Err(match error {
                error @ (shoal_storage::Error::Decode { .. }
                | shoal_storage::Error::UnsupportedSnapshot { .. }) => {
                    refuse(format!("its data does not import: {error}"))
                }
                error => Error::Storage(error).into_io(),
            });
        }
        // The dataset is now the snapshot's, marker included.
        let imported = read_marker(&self.storage, &self.marker_key, &self.snapshots.dir)
            .await
            .map_err(Error::into_io)?
            .unwrap_or_default();
        self.state = imported;
        if self.state.last_applied != meta.last_log_id
            || self.state.membership != meta.last_membership
        {
            let _ = std::fs::remove_file(&temp);
            return Err(refuse(format!(
                "its meta says log entry {} but its data's applied marker says {} \
                 (or the memberships differ); the imported data stays",
                show(meta.last_log_id.as_ref()),
                show(self.state.last_applied.as_ref()),
            )));
        }
        self.snapshots.replace(temp, meta.clone()).await?;
        self.publish_cluster();
        tracing::info!(last_log_id = %show(meta.last_log_id.as_ref()), "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let snapshots = self.snapshots.clone();
        blocking(move || snapshots.read_current()).await
    }
}

fn show(log_id: Option<&LogId>) -> String {
    match log_id {
        Some(log_id) => log_id.to_string(),
        None => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use shoal_storage::{EntityKey, MemoryStorage, RequestId};

    use super::*;

    async fn group(sm: &mut StateMachine, batches: Vec<WriteBatch>) -> Result<Vec<Response>> {
        sm.commit_group(batches)
            .await?
            .into_iter()
            .map(response)
            .collect()
    }

    #[tokio::test]
    async fn responses_report_skips_and_deterministic_rejections() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut sm = StateMachine::open(dir.path(), storage).await?;
        let shard = ShardId::new(1);

        let mut batch = WriteBatch::new(shard, Epoch::new(2));
        batch.ack(RequestId::new(7), b"first".to_vec());
        let second = batch.ack(RequestId::new(7), b"second".to_vec());
        let stale = WriteBatch::new(shard, Epoch::new(1));
        let other = EntityKey::new(ShardId::new(9), "T", "x")?;
        let mut invalid = WriteBatch::new(shard, Epoch::new(2));
        invalid.put_state(&other, b"wrong shard".to_vec());

        let responses = group(&mut sm, vec![batch, stale, invalid]).await?;
        let Response::Applied(applied) = &responses[0] else {
            panic!("expected Applied: {responses:?}");
        };
        assert!(!applied.applied_all());
        assert_eq!(
            applied.skip_reason(second),
            Some(shoal_storage::SkipReason::ReplyExists)
        );
        assert_eq!(
            responses[1],
            Response::Rejected(Rejected::StaleEpoch {
                shard: 1,
                batch: 1,
                current: 2
            })
        );
        assert!(matches!(
            responses[2],
            Response::Rejected(Rejected::Invalid { .. })
        ));

        sm.storage().close().await?;
        let closed = WriteBatch::new(shard, Epoch::new(2));
        assert!(matches!(
            group(&mut sm, vec![closed]).await,
            Err(Error::Storage(shoal_storage::Error::Closed))
        ));
        Ok(())
    }

    #[test]
    fn damaged_snapshot_files_are_errors() {
        let path = Path::new("raft-snapshot.bin");
        let meta = SnapshotMeta::default();
        let good = snapshot_file_bytes(&meta, b"data");
        let parsed = parse_snapshot_file(path, Bytes::from(good.clone())).expect("parses");
        assert_eq!(parsed.meta, meta);
        assert_eq!(parsed.snapshot, Bytes::from_static(b"data"));
        for cut in 0..SNAPSHOT_PREFIX_BYTES {
            assert!(parse_snapshot_file(path, Bytes::copy_from_slice(&good[..cut])).is_err());
        }
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        assert!(parse_snapshot_file(path, Bytes::from(bad_magic)).is_err());
        let mut bad_version = good.clone();
        bad_version[11] = 9;
        assert!(matches!(
            parse_snapshot_file(path, Bytes::from(bad_version)),
            Err(Error::UnsupportedFormat { found: 9, .. })
        ));
        let mut huge_header = good;
        huge_header[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_snapshot_file(path, Bytes::from(huge_header)).is_err());
    }
}
