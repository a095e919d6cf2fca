//! [`Config`]: the validated settings of the entity runtime, with the
//! defaults users of Cruster expect.

use std::time::Duration;

use crate::shard::{DEFAULT_SHARDS_PER_GROUP, MAX_SHARDS_PER_GROUP};

/// Default idle time after which an entity is passivated (evicted from
/// memory; its state stays in storage).
pub const DEFAULT_ENTITY_MAX_IDLE_TIME: Duration = Duration::from_secs(60);

/// Default number of messages an entity's mailbox holds.
pub const DEFAULT_ENTITY_MAILBOX_CAPACITY: usize = 100;

/// Default interval of the sweep that backs up event-driven delivery of
/// persisted messages.
pub const DEFAULT_STORAGE_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Default number of delivery attempts of a persisted message before it is
/// dead-lettered.
pub const DEFAULT_STORAGE_MESSAGE_MAX_RETRIES: u32 = 10;

/// Default first retry delay of a persisted message; each retry doubles it,
/// up to 60 s.
pub const DEFAULT_STORAGE_MESSAGE_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Validated entity-runtime settings. Build one with [`Config::builder`].
///
/// ```
/// use std::time::Duration;
/// let config = shoal::Config::builder()
///     .entity_max_idle_time(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(config.shards_per_group(), 2048);
/// assert_eq!(config.entity_mailbox_capacity(), 100);
/// # Ok::<(), shoal::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    shards_per_group: u32,
    entity_max_idle_time: Duration,
    entity_mailbox_capacity: usize,
    storage_poll_interval: Duration,
    storage_message_max_retries: u32,
    storage_message_retry_backoff: Duration,
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                shards_per_group: DEFAULT_SHARDS_PER_GROUP,
                entity_max_idle_time: DEFAULT_ENTITY_MAX_IDLE_TIME,
                entity_mailbox_capacity: DEFAULT_ENTITY_MAILBOX_CAPACITY,
                storage_poll_interval: DEFAULT_STORAGE_POLL_INTERVAL,
                storage_message_max_retries: DEFAULT_STORAGE_MESSAGE_MAX_RETRIES,
                storage_message_retry_backoff: DEFAULT_STORAGE_MESSAGE_RETRY_BACKOFF,
            },
        }
    }

    /// Shards in each shard group (default 2048). Part of the data layout:
    /// changing it for existing data moves entities between shards.
    pub fn shards_per_group(&self) -> u32 {
        self.shards_per_group
    }

    /// How long an entity stays in memory without messages (default 60 s).
    pub fn entity_max_idle_time(&self) -> Duration {
        self.entity_max_idle_time
    }

    /// Messages an entity's mailbox holds (default 100).
    pub fn entity_mailbox_capacity(&self) -> usize {
        self.entity_mailbox_capacity
    }

    /// How often pending persisted messages are swept for delivery, as a
    /// back-up to event-driven delivery (default 500 ms).
    pub fn storage_poll_interval(&self) -> Duration {
        self.storage_poll_interval
    }

    /// Delivery attempts of a persisted message before it is dead-lettered
    /// (default 10).
    pub fn storage_message_max_retries(&self) -> u32 {
        self.storage_message_max_retries
    }

    /// The first retry delay of a persisted message (default 100 ms); each
    /// retry doubles it, up to 60 s.
    pub fn storage_message_retry_backoff(&self) -> Duration {
        self.storage_message_retry_backoff
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::builder().build().expect("the defaults are valid")
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates every setting.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// See [`Config::shards_per_group`]; 1 to 65,536.
    pub fn shards_per_group(mut self, shards: u32) -> Self {
        self.config.shards_per_group = shards;
        self
    }

    /// See [`Config::entity_max_idle_time`]; more than zero.
    pub fn entity_max_idle_time(mut self, idle: Duration) -> Self {
        self.config.entity_max_idle_time = idle;
        self
    }

    /// See [`Config::entity_mailbox_capacity`]; at least 1.
    pub fn entity_mailbox_capacity(mut self, capacity: usize) -> Self {
        self.config.entity_mailbox_capacity = capacity;
        self
    }

    /// See [`Config::storage_poll_interval`]; more than zero.
    pub fn storage_poll_interval(mut self, interval: Duration) -> Self {
        self.config.storage_poll_interval = interval;
        self
    }

    /// See [`Config::storage_message_max_retries`]; at least 1.
    pub fn storage_message_max_retries(mut self, retries: u32) -> Self {
        self.config.storage_message_max_retries = retries;
        self
    }

    /// See [`Config::storage_message_retry_backoff`]; more than zero.
    pub fn storage_message_retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.storage_message_retry_backoff = backoff;
        self
    }

    /// Checks every setting.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = &self.config;
        if !(1..=MAX_SHARDS_PER_GROUP).contains(&c.shards_per_group) {
            return Err(ConfigError::ShardsPerGroup(c.shards_per_group));
        }
        if c.entity_max_idle_time.is_zero() {
            return Err(ConfigError::ZeroIdleTime);
        }
        if c.entity_mailbox_capacity == 0 {
            return Err(ConfigError::ZeroMailboxCapacity);
        }
        if c.storage_poll_interval.is_zero() {
            return Err(ConfigError::ZeroPollInterval);
        }
        if c.storage_message_max_retries == 0 {
            return Err(ConfigError::ZeroMaxRetries);
        }
        if c.storage_message_retry_backoff.is_zero() {
            return Err(ConfigError::ZeroRetryBackoff);
        }
        Ok(self.config)
    }
}

/// An invalid [`Config`] setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `shards_per_group` must be within 1..=65,536.
    #[error("shards_per_group must be within 1..={MAX_SHARDS_PER_GROUP}, got {0}")]
    ShardsPerGroup(u32),
    /// `entity_max_idle_time` must be more than zero.
    #[error("entity_max_idle_time must be more than zero")]
    ZeroIdleTime,
    /// `entity_mailbox_capacity` must be at least 1.
    #[error("entity_mailbox_capacity must be at least 1")]
    ZeroMailboxCapacity,
    /// `storage_poll_interval` must be more than zero.
    #[error("storage_poll_interval must be more than zero")]
    ZeroPollInterval,
    /// `storage_message_max_retries` must be at least 1.
    #[error("storage_message_max_retries must be at least 1")]
    ZeroMaxRetries,
    /// `storage_message_retry_backoff` must be more than zero.
    #[error("storage_message_retry_backoff must be more than zero")]
    ZeroRetryBackoff,
    /// An invalid cluster setting ([`crate::cluster::ClusterConfig`]).
    #[error("cluster: {0}")]
    Cluster(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed() {
        let c = Config::default();
        assert_eq!(c.shards_per_group(), 2048);
        assert_eq!(c.entity_max_idle_time(), Duration::from_secs(60));
        assert_eq!(c.entity_mailbox_capacity(), 100);
        assert_eq!(c.storage_poll_interval(), Duration::from_millis(500));
        assert_eq!(c.storage_message_max_retries(), 10);
    }

    #[test]
    fn bad_settings_are_refused() {
        let b = Config::builder;
        assert_eq!(
            b().shards_per_group(0).build(),
            Err(ConfigError::ShardsPerGroup(0))
        );
        assert_eq!(
            b().shards_per_group(70_000).build(),
            Err(ConfigError::ShardsPerGroup(70_000))
        );
        assert!(b().shards_per_group(65_536).build().is_ok());
        assert_eq!(
            b().entity_max_idle_time(Duration::ZERO).build(),
            Err(ConfigError::ZeroIdleTime)
        );
        assert_eq!(
            b().entity_mailbox_capacity(0).build(),
            Err(ConfigError::ZeroMailboxCapacity)
        );
        assert_eq!(
            b().storage_poll_interval(Duration::ZERO).build(),
            Err(ConfigError::ZeroPollInterval)
        );
        assert_eq!(
            b().storage_message_max_retries(0).build(),
            Err(ConfigError::ZeroMaxRetries)
        );
        assert_eq!(
            b().storage_message_retry_backoff(Duration::ZERO).build(),
            Err(ConfigError::ZeroRetryBackoff)
        );
    }
}
