//! [`config`]: the openraft `Config` a Shoal Raft group runs with.
//!
//! Snapshots carry the whole dataset (`StateMachine`'s docs: a storage
//! export, applied marker included), so the log can be purged: a node that
//! lags behind the purged log, or a new one, catches up by snapshot. The
//! policy is [`SnapshotPolicy::LogsSinceLast`]`(`[`SNAPSHOT_LOGS_SINCE_LAST`]`)`:
//! a snapshot every 100,000 applied entries (etcd's default snapshot
//! count). That bounds the log at about 100,000 entries (tens of MB on
//! disk) plus openraft's `max_in_snapshot_log_to_keep` (1,000 by default,
//! kept so that slightly lagging followers still catch up by log) while
//! keeping snapshots rare: each one exports the whole dataset and is held
//! in memory while it is built, sent and installed, so on a large dataset
//! it costs far more than replicating 100,000 batches does (at 10,000, a
//! sustained write load spent a visible share of its time exporting).
//!
//! `broadcast_submitted_on_append` is on: the leader hands new entries to
//! the replication tasks as soon as `LogStore::append` has queued them,
//! so followers write them while the leader's own fsync runs (otherwise
//! replication waits for the next event the Raft core handles, with a lone
//! proposer the leader's fsync completion). Acknowledgements still wait
//! for durability: the leader counts itself only once its append callback
//! fired, a follower answers only after its own.
//!
//! Pre-vote is on: a node that was partitioned or restarted first asks
//! whether it could win before raising its term, so rejoining does not
//! depose a healthy leader (the network carries `PRE_VOTE` RPCs).

use openraft::{Config, ConfigError, SnapshotPolicy};

/// Applied log entries between two snapshots (see the module docs).
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 100_000;

/// openraft's defaults for timeouts and batching, with `cluster_name`,
/// `SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST)`, pre-vote on
/// and submitted entries broadcast on append (see the module docs),
/// validated.
///
/// Callers may change timeouts, limits and the snapshot policy.
pub fn config(cluster_name: impl Into<String>) -> Result<Config, ConfigError> {
    Config {
        cluster_name: cluster_name.into(),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST),
        enable_pre_vote: Some(true),
        broadcast_submitted_on_append: Some(true),
        ..Config::default()
    }
    .validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_every_hundred_thousand_entries() -> Result<(), ConfigError> {
        let config = config("shoal")?;
        assert_eq!(config.cluster_name, "shoal");
        assert!(matches!(
            config.snapshot_policy,
            SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST)
        ));
        assert_eq!(config.enable_pre_vote, Some(true));
        assert_eq!(config.broadcast_submitted_on_append, Some(true));
        Ok(())
    }
}
