//! The one error type of the storage layer.
//!
//! Variants fall in two groups, told apart by [`Error::is_fatal`]:
//! - *expected outcomes* the caller handles as part of normal operation
//!   (a stale epoch after losing a shard, invalid input, a closed backend);
//!   nothing was written when one of these is returned;
//! - *fatal* failures (I/O, corruption, an unknown format, an engine failure)
//!   after which the backend should be considered unusable.
//!
//! Outcomes that are not failures at all — an insert-if-absent operation
//! that found its key taken — are not errors: they are reported in
//! [`CommitOutcome`](crate::CommitOutcome).

use std::path::PathBuf;

use crate::types::{Epoch, ShardId};

/// `Result` with the storage [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The batch was fenced off: its epoch is older than the shard's current
    /// epoch, so another owner has taken the shard. Nothing was applied.
    #[error(
        "stale epoch for shard {shard}: the batch has epoch {batch}, the shard is at {current}"
    )]
    StaleEpoch {
        /// The shard the batch was for.
        shard: ShardId,
        /// The epoch the batch carried.
        batch: Epoch,
        /// The shard's current (newer) epoch.
        current: Epoch,
    },

    /// An argument or a batch breaks a documented rule (a key too long, an
    /// operation on another shard than its batch, …). Nothing was applied.
    #[error("invalid input: {reason}")]
    Invalid {
        /// What rule was broken.
        reason: String,
    },

    /// Bytes handed to a decoder (such as [`WriteBatch::decode`](crate::WriteBatch::decode))
    /// are not a valid encoding.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },

    /// A snapshot stream was written in a snapshot format version this
    /// build does not read. Nothing was imported.
    #[error("unsupported snapshot format version {found} (this build reads version {expected})")]
    UnsupportedSnapshot {
        /// The version in the stream.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },

    /// A backend configuration failed validation.
    #[error("invalid storage configuration: {reason}")]
    Config {
        /// What is wrong with it.
        reason: String,
    },

    /// The backend was closed; no further reads or writes are served.
    #[error("storage is closed")]
    Closed,

    /// The data file was written in a format version this build does not read.
    #[error(
        "{}: unsupported storage format version {found} (this build reads version {expected})",
        path.display()
    )]
    UnsupportedFormat {
        /// The data file.
        path: PathBuf,
        /// The version stored in the file.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },

    /// The data file is not a Shoal storage file, or is damaged (garbage,
    /// truncated, or refused by the storage engine).
    #[error("{}: not a valid shoal storage file: {reason}", path.display())]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// What was found wrong.
        reason: String,
    },

    /// A stored record could not be decoded: the data is damaged.
    #[error("corrupt record in table `{table}`: {reason}")]
    CorruptRecord {
        /// The table holding the record.
        table: &'static str,
        /// What was found wrong.
        reason: String,
    },

    /// The data file is already open, by this process or another one.
    #[error("{}: already open (by this process or another one)", path.display())]
    Locked {
        /// The data file.
        path: PathBuf,
    },

    /// An I/O error on the data file.
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        /// The data file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The storage engine failed (for redb: any error not mapped above).
    #[error("storage engine failure while {context}: {source}")]
    Backend {
        /// What the backend was doing.
        context: &'static str,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether the error is fatal: I/O, corruption, an unknown format or an
    /// engine failure. A backend that returned a fatal error should be closed.
    ///
    /// Non-fatal errors ([`Error::StaleEpoch`], [`Error::Invalid`],
    /// [`Error::Decode`], [`Error::UnsupportedSnapshot`], [`Error::Config`],
    /// [`Error::Closed`]) are expected outcomes; when a commit or an import
    /// returns one, nothing of it was applied.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::StaleEpoch { .. }
            | Error::Invalid { .. }
            | Error::Decode { .. }
            | Error::UnsupportedSnapshot { .. }
            | Error::Config { .. }
            | Error::Closed => false,
            Error::UnsupportedFormat { .. }
            | Error::Corrupt { .. }
            | Error::CorruptRecord { .. }
            | Error::Locked { .. }
            | Error::Io { .. }
            | Error::Backend { .. } => true,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::Invalid {
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt_record(table: &'static str, reason: impl Into<String>) -> Self {
        Error::CorruptRecord {
            table,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_epoch_is_expected_and_names_everything() {
        let error = Error::StaleEpoch {
            shard: ShardId::new(7),
            batch: Epoch::new(2),
            current: Epoch::new(3),
        };
        assert!(!error.is_fatal());
        let text = error.to_string();
        assert!(text.contains("shard 7"), "{text}");
        assert!(text.contains("epoch 2"), "{text}");
        assert!(text.contains("at 3"), "{text}");
    }

    #[test]
    fn file_errors_are_fatal_and_name_the_path() {
        let error = Error::UnsupportedFormat {
            path: PathBuf::from("/data/shoal.redb"),
            found: 9,
            expected: 1,
        };
        assert!(error.is_fatal());
        let text = error.to_string();
        assert!(text.contains("/data/shoal.redb"), "{text}");
        assert!(text.contains("version 9"), "{text}");
    }
}
