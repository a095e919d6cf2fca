//! Shoal's consensus layer: the openraft wiring that replicates storage
//! write batches through one Raft group.
//!
//! # What is here
//! - [`TypeConfig`]: the openraft type configuration — `u64` node ids,
//!   [`openraft::BasicNode`] (an address) as node info, [`Command`] as the
//!   log's application data, [`Response`] as what applying returns;
//! - [`LogStore`] (and its [`LogReader`]): the Raft log and vote in a redb
//!   file of their own, durable before acknowledged;
//! - [`StateMachine`]: applies committed [`Command::Batch`]es — the same
//!   `shoal_storage::WriteBatch`es the storage layer commits locally — into
//!   an `Arc<dyn shoal_storage::Storage>` exactly once: each apply call is
//!   one deferred-durability commit group (`Storage::commit_group_with`;
//!   the entries are already durable in the log) carrying the applied marker
//!   ([`APPLIED_MARKER`]: `last_applied`, membership, [`ClusterState`]) in
//!   the same transaction; a batch whose epoch is not its shard's current
//!   epoch is answered [`Rejected::StaleEpoch`] on every replica and
//!   applies nothing (fencing); snapshots are storage exports of the whole
//!   dataset, kept in [`SNAPSHOT_FILE`] in the Raft data directory and
//!   installed with `Storage::import`;
//! - [`ClusterState`] (module [`cluster`]): the replicated cluster
//!   metadata the state machine derives from membership entries and
//!   [`Command::Cluster`] commands ([`ClusterCommand`]): the placement (the
//!   members minus those down, leaving or joining) with its history of
//!   generations (log indexes), the shard owner by rendezvous hashing
//!   ([`placement_score`], a stable format), each shard's epoch (the
//!   generation at which its owner acquired it), and the down / leaving /
//!   joining / retired sets; watch it with [`StateMachine::cluster`];
//! - [`membership`]: [`join`] (learner, caught up, voter while there are
//!   fewer than [`MAX_VOTERS`], then owner), [`leave`] (shards move away,
//!   removed, id retired forever), [`mark_down`] / [`mark_up`], called on
//!   the leader;
//! - [`config()`]: the openraft `Config` to run with (a snapshot every
//!   [`SNAPSHOT_LOGS_SINCE_LAST`] entries, pre-vote on; see its docs);
//! - [`Network`] / [`NetworkClient`] (openraft's network factory and
//!   per-target client) and [`RaftService`] (the server-side handlers):
//!   the Raft RPCs over `shoal-transport` (QUIC + mutual TLS), route kinds
//!   in [`network::kind`];
//! - [`bootstrap()`]: the deterministic bootstrap rule — the lowest id of
//!   the initial peer list, and only it, initialises the cluster;
//! - [`Raft`]: the openraft handle type these pieces make up;
//! - [`enum@Error`]: this layer's errors.
//!
//! Both pass `openraft::testing::log::Suite` (see `tests/raft/`).
//!
//! # Layout
//! - `types`: type config, [`Command`], [`Response`];
//! - `codec`: the protobuf encoding of entries, votes, log ids, memberships
//!   and commands (the one on-disk and on-wire form);
//! - `file`: opening a redb file with the magic / format-version check;
//! - `log_store`, `state_machine`: the two openraft storage traits;
//! - `cluster`: [`ClusterState`], placement, owners and epochs;
//! - `membership`: join, leave, mark down / up;
//! - `config`: the openraft configuration;
//! - `network`: the Raft network over the transport, client and server;
//! - `pipeline`: pipelined append-entries, the leader's and the
//!   follower's side;
//! - `bootstrap`: the bootstrap rule;
//! - `error`: [`enum@Error`].
//!
//! # Starting a node
//! Create a [`RaftService`], register it on the transport `Router`, bind
//! the `Endpoint` with that router, build a [`Network`] on the endpoint,
//! open the [`LogStore`] and [`StateMachine`], start `Raft::new`, hand the
//! handle to [`RaftService::serve`], then run [`bootstrap()`] with the
//! initial peer list (`tests/raft/cluster.rs` does exactly this).
//!
//! # Not here
//! The failure detector (which calls [`mark_down`] / [`mark_up`]), leases
//! (measured from [`RaftService::last_leader_contact`]) and singleton
//! placement live in the main crate (`shoal::cluster`). Not yet anywhere:
//! streaming snapshots to and from disk (a snapshot is held in memory while
//! built, sent and installed). This crate knows nothing of entity handlers
//! and never opens the storage layer's data tables: it only calls the
//! `Storage` trait.
//!
//! ```
//! use std::sync::Arc;
//! use shoal_raft::{LogStore, StateMachine};
//! use shoal_storage::{MemoryStorage, Storage};
//!
//! let dir = tempfile::tempdir()?;
//! let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let log = LogStore::open(dir.path().join("raft-log.redb"))?;
//! let state = StateMachine::open(dir.path(), storage).await?;
//! // Hand `log` and `state` to `openraft::Raft::new` with a network.
//! # drop((log, state));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bootstrap;
pub mod cluster;
mod codec;
mod config;
mod error;
mod file;
mod log_store;
pub mod membership;
pub mod network;
mod pipeline;
mod state_machine;
mod types;

pub use bootstrap::{Bootstrap, bootstrap};
pub use cluster::{ClusterState, PLACEMENT_HISTORY_MAX, Placement, placement_score};
pub use config::{SNAPSHOT_LOGS_SINCE_LAST, config};
pub use error::{Error, Result};
pub use log_store::{LogReader, LogStore};
pub use membership::{Joined, MAX_VOTERS, join, leave, mark_down, mark_up};
pub use network::{Network, NetworkClient, NetworkConfig, RaftService};
pub use pipeline::{COMMIT_HOLD_MAX, CommitWait, CommitWaiters};
pub use state_machine::{APPLIED_MARKER, SNAPSHOT_FILE, Snapshot, SnapshotBuilder, StateMachine};
pub use types::{
    Applied, ClusterCommand, Command, Entry, LogId, NodeId, Rejected, Response, SnapshotMeta,
    StoredMembership, TypeConfig, Vote,
};

/// The openraft node handle this crate's pieces make up: [`TypeConfig`]
/// with the [`StateMachine`]. Cheap to clone.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Takes `mutex` whether or not a panicking holder poisoned it: every
/// mutex of this crate guards data that each critical section leaves
/// consistent (a few collection operations).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
