//! Cluster bootstrap from a static peer list: a deterministic rule, so
//! that nodes started with the same list never initialise two clusters.
//!
//! **The rule:** every node is started with the same initial peer list
//! (node id → address). The node with the *lowest id* in that list, and
//! only it, calls `Raft::initialize` with every listed node as a voter,
//! and only if its log is empty (`Raft::is_initialized` is false). Every
//! other node does nothing and waits: it becomes a member when the leader
//! elected from the initial membership replicates to it.
//!
//! Why it is safe: openraft's `initialize` writes the initial membership
//! as log entry 0; two clusters from one peer list would need two nodes to
//! each write such an entry, and only one node ever does. A restarted
//! initialiser finds its log non-empty and skips. The price: the cluster
//! forms only once the lowest-id node is up. A lowest-id node whose data
//! was wiped must not rejoin under the same id (node ids are never
//! reused): it would initialise a fresh, empty log, which the others, with
//! longer logs, never vote for — a stuck node, not a second history.
//!
//! The decision itself is the pure function [`initializer`]; [`bootstrap`]
//! is the thin I/O shell around it.

use std::collections::BTreeMap;

use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};

use crate::Raft;
use crate::error::{Error, Result};
use crate::types::NodeId;

/// What [`bootstrap`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bootstrap {
    /// This node is the initialiser and wrote the initial membership.
    Initialized,
    /// The node's log already holds a membership (a restart, or the
    /// initialiser already replicated to it): nothing was done.
    AlreadyInitialized,
    /// Another node (the returned one, the lowest id) initialises; this
    /// node waits to be replicated to.
    Waiting {
        /// The initialiser.
        initializer: NodeId,
    },
}

/// The node that initialises a cluster started from `peers`: the lowest
/// id; `None` for an empty list.
pub fn initializer(peers: &BTreeMap<NodeId, BasicNode>) -> Option<NodeId> {
    peers.keys().next().copied()
}

/// Applies the bootstrap rule (module docs) for node `me`: initialises
/// the cluster with every peer as a voter if `me` is the lowest id and
/// its log is empty; otherwise does nothing.
///
/// Fails with [`Error::NotAPeer`] if `me` is not in `peers` (an empty list
/// included), and with [`Error::Raft`] if the Raft node has stopped.
pub async fn bootstrap(
    raft: &Raft,
    me: NodeId,
    peers: &BTreeMap<NodeId, BasicNode>,
) -> Result<Bootstrap> {
    if !peers.contains_key(&me) {
        return Err(Error::NotAPeer {
            node: me,
            peers: peers.keys().copied().collect(),
        });
    }
    let first = initializer(peers).ok_or_else(|| Error::NotAPeer {
        node: me,
        peers: Vec::new(),
    })?;
    let initialized = raft.is_initialized().await.map_err(|e| Error::Raft {
        context: "reading whether the log is initialised",
        source: Box::new(e),
    })?;
    if initialized {
        return Ok(Bootstrap::AlreadyInitialized);
    }
    if first != me {
        tracing::info!(
            node = me,
            initializer = first,
            "waiting for the initialiser"
        );
        return Ok(Bootstrap::Waiting { initializer: first });
    }
    match raft.initialize(peers.clone()).await {
        Ok(()) => {
            tracing::info!(node = me, voters = ?peers.keys().collect::<Vec<_>>(), "cluster initialised");
            Ok(Bootstrap::Initialized)
        }
        // Its log filled up meanwhile: someone replicated to it.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            Ok(Bootstrap::AlreadyInitialized)
        }
        Err(e) => Err(Error::Raft {
            context: "initialising the cluster",
            source: Box::new(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_initializer_whatever_the_order() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200 {
            let mut peers = BTreeMap::new();
            let n = 1 + (seed % 7) as usize;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                peers.insert(seed % 1000, BasicNode::new("127.0.0.1:1"));
            }
            let min = *peers.keys().min().expect("non-empty");
            // Every node evaluates the rule on the same list: one says yes.
            let yes: Vec<_> = peers
                .keys()
                .filter(|me| initializer(&peers) == Some(**me))
                .collect();
            assert_eq!(yes, vec![&min]);
        }
        assert_eq!(initializer(&BTreeMap::new()), None);
    }
}
