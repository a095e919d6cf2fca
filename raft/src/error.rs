//! [`enum@Error`]: everything that can go wrong in the consensus layer's own
//! files (the Raft log file, the snapshot file, an older build's
//! applied-state file being migrated) and when applying replicated
//! batches.
//!
//! Fatal errors (I/O, corruption, an unknown format, an engine failure, a
//! storage backend failure) mean the node must stop using the file; the rest
//! are expected outcomes. openraft's storage traits speak `std::io::Error`:
//! [`Error::into_io`] wraps an [`enum@Error`] without losing it, so a caller
//! can downcast it back.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the consensus layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file was written in a format version this build does not read.
    #[error(
        "{}: unsupported {kind} format version {found} (this build reads version {expected})",
        path.display()
    )]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// What kind of file it claims to be (`raft log`, `raft applied state`).
        kind: &'static str,
        /// The version stored in the file.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The file is not a Shoal file of the expected kind, or is damaged
    /// (garbage, truncated, another program's redb database).
    #[error("{}: not a valid shoal {kind} file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What kind of file was expected.
        kind: &'static str,
        /// What was found wrong.
        reason: String,
    },
    /// A stored record (a log entry, the vote, the applied marker) could
    /// not be decoded: the file is damaged.
    #[error("{}: corrupt {what}: {reason}", path.display())]
    CorruptRecord {
        /// The file holding the record.
        path: PathBuf,
        /// Which record.
        what: String,
        /// What was found wrong.
        reason: String,
    },
    /// The file is already open, by this process or another one.
    #[error("{}: already open (by this process or another one)", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// An I/O error on the file.
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The embedded database engine (redb) failed.
    #[error("{}: storage engine failure while {context}: {source}", path.display())]
    Engine {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The engine's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// An append would leave a hole in the log (a bug in the caller: openraft
    /// appends right after the last entry). Nothing was written.
    #[error("{}: refusing to append log entry {found}: the next entry must be {expected}", path.display())]
    LogHole {
        /// The log file.
        path: PathBuf,
        /// The index the next entry must have.
        expected: u64,
        /// The index it had.
        found: u64,
    },
    /// The storage backend the state machine applies batches into failed
    /// with a fatal error (or was closed): the batch may not be applied, so
    /// the state machine stops.
    #[error("applying a replicated batch failed: {0}")]
    Storage(#[source] shoal_storage::Error),
    /// A configuration value is invalid (for example a zero limit in
    /// `NetworkConfig`, or a transport endpoint without a node identity).
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// A command is too large to replicate: one AppendEntries carrying it
    /// would exceed the transport's message limit. Nothing was proposed.
    #[error("command needs {bytes} bytes on the wire, over the message limit of {max} bytes")]
    CommandTooLarge {
        /// Encoded size of an AppendEntries carrying only this command.
        bytes: usize,
        /// The transport's `message_bytes_max`.
        max: usize,
    },
    /// A node was asked to bootstrap from a peer list that does not
    /// contain it.
    #[error("node {node} is not in the initial peer list {peers:?}")]
    NotAPeer {
        /// This node.
        node: u64,
        /// The listed ids.
        peers: Vec<u64>,
    },
    /// The local openraft node failed or has stopped.
    #[error("raft failed while {context}: {source}")]
    Raft {
        /// What was being done.
        context: &'static str,
        /// openraft's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A membership operation or cluster command was sent to a node that
    /// is not the leader; `leader` is the leader it knows of, if any.
    #[error("not the leader (the leader is {})", leader.map_or_else(|| "unknown".to_owned(), |id| format!("node {id}")))]
    NotLeader {
        /// The current leader, if known.
        leader: Option<u64>,
    },
    /// The node id left the cluster or was removed: it is never accepted
    /// again (give the node a new id).
    #[error("node id {node} is retired: it left the cluster and is never accepted again")]
    IdRetired {
        /// The retired id.
        node: u64,
    },
    /// The node is not a member of the cluster.
    #[error("node {node} is not a member of the cluster")]
    NotAMember {
        /// The id.
        node: u64,
    },
    /// Removing the node would leave the cluster without a voter.
    #[error("node {node} is the last voter: it cannot leave")]
    LastVoter {
        /// The id.
        node: u64,
    },
    /// A committed command was answered `Response::Rejected` (the state
    /// machine refused it, on every replica alike).
    #[error("{command} was rejected: {rejected}")]
    Rejected {
        /// The command, displayed.
        command: String,
        /// Why.
        rejected: crate::types::Rejected,
    },
    /// A snapshot cannot be installed: its data does not import, or its
    /// data's applied marker disagrees with its meta (see the state
    /// machine's docs).
    #[error("cannot install snapshot: {reason}")]
    SnapshotUnsupported {
        /// Why.
        reason: String,
    },
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the error is fatal: the file or the storage backend can no
    /// longer be trusted, and the Raft node should stop.
    ///
    /// [`Error::Locked`] (another process holds the file; opening may be
    /// retried later), [`Error::Config`], [`Error::NotAPeer`],
    /// [`Error::CommandTooLarge`] (fix the input) and the outcomes of
    /// membership operations ([`Error::NotLeader`], [`Error::IdRetired`],
    /// [`Error::NotAMember`], [`Error::LastVoter`], [`Error::Rejected`])
    /// are not.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Locked { .. }
                | Error::Config(_)
                | Error::NotAPeer { .. }
                | Error::CommandTooLarge { .. }
                | Error::NotLeader { .. }
                | Error::IdRetired { .. }
                | Error::NotAMember { .. }
                | Error::LastVoter { .. }
                | Error::Rejected { .. }
        )
    }

    /// Wraps the error into the `std::io::Error` openraft's storage traits
    /// return; `get_ref()` / `downcast` give the [`enum@Error`] back.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            Error::Io { source, .. } => source.kind(),
            Error::Corrupt { .. } | Error::CorruptRecord { .. } => io::ErrorKind::InvalidData,
            Error::UnsupportedFormat { .. } | Error::SnapshotUnsupported { .. } => {
                io::ErrorKind::Unsupported
            }
            Error::Locked { .. } => io::ErrorKind::ResourceBusy,
            Error::LogHole { .. } => io::ErrorKind::InvalidInput,
            Error::Config(_)
            | Error::NotAPeer { .. }
            | Error::CommandTooLarge { .. }
            | Error::IdRetired { .. }
            | Error::NotAMember { .. }
            | Error::LastVoter { .. }
            | Error::Rejected { .. } => io::ErrorKind::InvalidInput,
            Error::NotLeader { .. } => io::ErrorKind::NotConnected,
            Error::Engine { .. } | Error::Storage(_) | Error::Raft { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }

    pub(crate) fn engine(
        path: &std::path::Path,
        context: &'static str,
        source: impl Into<redb::Error>,
    ) -> Self {
        let source: redb::Error = source.into();
        match source {
            redb::Error::Io(source) => Error::Io {
                path: path.to_owned(),
                source,
            },
            redb::Error::DatabaseAlreadyOpen => Error::Locked {
                path: path.to_owned(),
            },
            source => Error::Engine {
                path: path.to_owned(),
                context,
                source: Box::new(source),
            },
        }
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        error.into_io()
    }
}
