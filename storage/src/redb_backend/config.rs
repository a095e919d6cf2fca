//! [`RedbConfig`]: the validated configuration of [`RedbStorage`](super::RedbStorage).
//!
//! Built with [`RedbConfig::builder`]; [`RedbConfigBuilder::build`] checks
//! every value, so a `RedbConfig` that exists is valid. No I/O here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Default most batches one group commit applies.
pub const GROUP_COMMIT_BATCHES_MAX_DEFAULT: usize = 1024;
/// Default most payload bytes one group commit applies (soft: a group always
/// takes at least one batch).
pub const GROUP_COMMIT_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;
/// Default longest wait for more batches before a group commit.
pub const GROUP_COMMIT_WAIT_MAX_DEFAULT: Duration = Duration::from_millis(1);
/// Default most commits queued for the writer before callers wait.
pub const QUEUE_CAPACITY_DEFAULT: usize = 4096;
/// Default redb page cache size.
pub const CACHE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// Default longest time a deferred commit group stays non-durable.
pub const DEFERRED_DURABILITY_MAX_DEFAULT: Duration = Duration::from_millis(100);
/// The largest accepted [`RedbConfigBuilder::deferred_durability_max`].
pub const DEFERRED_DURABILITY_MAX_LIMIT: Duration = Duration::from_secs(10);

/// Configuration of a [`RedbStorage`](super::RedbStorage).
///
/// ```
/// use shoal_storage::RedbConfig;
///
/// let config = RedbConfig::builder("/var/lib/shoal/data.redb")
///     .group_commit_batches_max(256)
///     .cache_bytes(16 << 20)
///     .build()?;
/// assert_eq!(config.group_commit_batches_max(), 256);
/// assert!(RedbConfig::builder("x.redb").queue_capacity(0).build().is_err());
/// # Ok::<(), shoal_storage::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RedbConfig {
    path: PathBuf,
    create_if_missing: bool,
    group_commit_batches_max: usize,
    group_commit_bytes_max: usize,
    group_commit_wait_max: Duration,
    queue_capacity: usize,
    cache_bytes: usize,
    deferred_durability_max: Duration,
}

impl RedbConfig {
    /// A builder for a data file at `path`, with every other value at its default.
    pub fn builder(path: impl Into<PathBuf>) -> RedbConfigBuilder {
        RedbConfigBuilder {
            config: RedbConfig {
                path: path.into(),
                create_if_missing: true,
                group_commit_batches_max: GROUP_COMMIT_BATCHES_MAX_DEFAULT,
                group_commit_bytes_max: GROUP_COMMIT_BYTES_MAX_DEFAULT,
                group_commit_wait_max: GROUP_COMMIT_WAIT_MAX_DEFAULT,
                queue_capacity: QUEUE_CAPACITY_DEFAULT,
                cache_bytes: CACHE_BYTES_DEFAULT,
                deferred_durability_max: DEFERRED_DURABILITY_MAX_DEFAULT,
            },
        }
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether opening creates a missing file (default `true`).
    pub fn create_if_missing(&self) -> bool {
        self.create_if_missing
    }

    /// Most batches applied in one write transaction.
    pub fn group_commit_batches_max(&self) -> usize {
        self.group_commit_batches_max
    }

    /// Most payload bytes applied in one write transaction (a group always
    /// takes at least one batch, however large).
    pub fn group_commit_bytes_max(&self) -> usize {
        self.group_commit_bytes_max
    }

    /// Longest the writer waits for more batches before committing a group;
    /// see [`RedbConfigBuilder::group_commit_wait_max`].
    pub fn group_commit_wait_max(&self) -> Duration {
        self.group_commit_wait_max
    }

    /// Most commits waiting for the writer; further callers wait (backpressure).
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// redb page cache size in bytes.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Longest a deferred commit group stays non-durable; see
    /// [`RedbConfigBuilder::deferred_durability_max`].
    pub fn deferred_durability_max(&self) -> Duration {
        self.deferred_durability_max
    }
}

/// Builds a [`RedbConfig`]; see [`RedbConfig::builder`].
#[derive(Clone, Debug)]
pub struct RedbConfigBuilder {
    config: RedbConfig,
}

impl RedbConfigBuilder {
    /// Whether opening creates a missing file (default `true`).
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.config.create_if_missing = create;
        self
    }

    /// Most batches applied in one write transaction (default
    /// [`GROUP_COMMIT_BATCHES_MAX_DEFAULT`]; 1 disables group commit).
    pub fn group_commit_batches_max(mut self, batches: usize) -> Self {
        self.config.group_commit_batches_max = batches;
        self
    }

    /// Most payload bytes applied in one write transaction (default
    /// [`GROUP_COMMIT_BYTES_MAX_DEFAULT`]).
    pub fn group_commit_bytes_max(mut self, bytes: usize) -> Self {
        self.config.group_commit_bytes_max = bytes;
        self
    }

    /// Longest the writer waits for more batches before committing a group
    /// (default [`GROUP_COMMIT_WAIT_MAX_DEFAULT`]; zero never waits).
    ///
    /// The writer waits only under concurrent load: when the previous group
    /// held several batches, it waits for as many (at most this long, and at
    /// most half the previous commit's duration), so callers that were just
    /// answered share the next fsync instead of one of them paying for it
    /// alone. A lone caller never waits. Must be at most one second.
    pub fn group_commit_wait_max(mut self, wait: Duration) -> Self {
        self.config.group_commit_wait_max = wait;
        self
    }

    /// Most commits waiting for the writer (default [`QUEUE_CAPACITY_DEFAULT`]).
    pub fn queue_capacity(mut self, commits: usize) -> Self {
        self.config.queue_capacity = commits;
        self
    }

    /// redb page cache size in bytes (default [`CACHE_BYTES_DEFAULT`]).
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.config.cache_bytes = bytes;
        self
    }

    /// Longest a commit group made with
    /// [`Durability::Deferred`](crate::Durability::Deferred) stays
    /// non-durable (default [`DEFERRED_DURABILITY_MAX_DEFAULT`], at most
    /// [`DEFERRED_DURABILITY_MAX_LIMIT`]).
    ///
    /// Deferred groups commit as redb transactions with
    /// `Durability::None` (no fsync). The writer makes them durable with
    /// the next transaction it commits with immediate durability; if none
    /// comes within this time of the oldest non-durable one, it commits an
    /// empty durable transaction itself (under a steady stream of deferred
    /// groups, it commits the next group durably instead). This also bounds
    /// the file's growth: redb reuses pages that a durable state still
    /// references only after the next durable commit. Zero commits every
    /// group with immediate durability.
    pub fn deferred_durability_max(mut self, max: Duration) -> Self {
        self.config.deferred_durability_max = max;
        self
    }

    /// Validates and returns the configuration: the path must be non-empty
    /// and not end in `..`, every count limit must be at least 1, and
    /// `group_commit_wait_max` and `deferred_durability_max` must be within
    /// their limits.
    pub fn build(self) -> Result<RedbConfig> {
        let config = self.config;
        let reject = |reason: String| Err(Error::Config { reason });
        if config.path.as_os_str().is_empty() {
            return reject("the data file path is empty".to_owned());
        }
        if config.path.file_name().is_none() {
            return reject(format!(
                "the data file path {} does not name a file",
                config.path.display()
            ));
        }
        for (name, value) in [
            ("group_commit_batches_max", config.group_commit_batches_max),
            ("group_commit_bytes_max", config.group_commit_bytes_max),
            ("queue_capacity", config.queue_capacity),
        ] {
            if value == 0 {
                return reject(format!("{name} must be at least 1"));
            }
        }
        if config.group_commit_wait_max > Duration::from_secs(1) {
            return reject(format!(
                "group_commit_wait_max is {:?}, the limit is 1s",
                config.group_commit_wait_max
            ));
        }
        if config.deferred_durability_max > DEFERRED_DURABILITY_MAX_LIMIT {
            return reject(format!(
                "deferred_durability_max is {:?}, the limit is {:?}",
                config.deferred_durability_max, DEFERRED_DURABILITY_MAX_LIMIT
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = RedbConfig::builder("data.redb").build().expect("valid");
        assert_eq!(config.path(), Path::new("data.redb"));
        assert!(config.create_if_missing());
        assert_eq!(
            config.group_commit_batches_max(),
            GROUP_COMMIT_BATCHES_MAX_DEFAULT
        );
        assert_eq!(config.queue_capacity(), QUEUE_CAPACITY_DEFAULT);
        assert_eq!(
            config.deferred_durability_max(),
            DEFERRED_DURABILITY_MAX_DEFAULT
        );
    }

    #[test]
    fn invalid_values_are_rejected_with_their_name() {
        let error = RedbConfig::builder("").build().expect_err("empty path");
        assert!(error.to_string().contains("empty"), "{error}");
        let error = RedbConfig::builder("/tmp/..")
            .build()
            .expect_err("no file name");
        assert!(
            error.to_string().contains("does not name a file"),
            "{error}"
        );
        let error = RedbConfig::builder("d.redb")
            .group_commit_batches_max(0)
            .build()
            .expect_err("zero batches");
        assert!(
            error.to_string().contains("group_commit_batches_max"),
            "{error}"
        );
        assert!(
            RedbConfig::builder("d.redb")
                .group_commit_bytes_max(0)
                .build()
                .is_err()
        );
        assert!(
            RedbConfig::builder("d.redb")
                .group_commit_wait_max(Duration::from_secs(2))
                .build()
                .is_err()
        );
        let error = RedbConfig::builder("d.redb")
            .deferred_durability_max(Duration::from_secs(11))
            .build()
            .expect_err("too long");
        assert!(
            error.to_string().contains("deferred_durability_max"),
            "{error}"
        );
    }
}
