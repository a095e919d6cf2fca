//! [`config`]: the openraft `Config` a Shoal Raft group must run with,
//! given what the state machine can and cannot do today.
//!
//! Invariant: no snapshot policy that purges the log. A snapshot of this
//! state machine carries no entity data (the storage layer has no
//! export/import yet), so a node that lags behind a purged log could not be
//! caught up; with `SnapshotPolicy::Never` the log is never purged and every
//! node catches up by log replay. The price is a log that grows without
//! bound until snapshots carry data.
//!
//! Pre-vote is on: a node that was partitioned or restarted first asks
//! whether it could win before raising its term, so rejoining does not
//! depose a healthy leader (the network carries `PRE_VOTE` RPCs).

use openraft::{Config, ConfigError, SnapshotPolicy};

/// openraft's defaults for timeouts and batching, with `cluster_name`,
/// `SnapshotPolicy::Never` and pre-vote on (see the module docs),
/// validated.
///
/// Callers may change timeouts and limits; they must not set a snapshot
/// policy that purges the log.
pub fn config(cluster_name: impl Into<String>) -> Result<Config, ConfigError> {
    Config {
        cluster_name: cluster_name.into(),
        snapshot_policy: SnapshotPolicy::Never,
        enable_pre_vote: Some(true),
        ..Config::default()
    }
    .validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_snapshots_by_policy() -> Result<(), ConfigError> {
        let config = config("shoal")?;
        assert_eq!(config.cluster_name, "shoal");
        assert!(matches!(config.snapshot_policy, SnapshotPolicy::Never));
        assert_eq!(config.enable_pre_vote, Some(true));
        Ok(())
    }
}
