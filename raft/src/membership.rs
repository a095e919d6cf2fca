//! Membership operations: adding a node ([`join`]), removing one
//! ([`leave`]) and the failure detector's marks ([`mark_down`],
//! [`mark_up`]). Each is a sequence of committed steps — cluster commands
//! ([`ClusterCommand`]) and openraft membership changes — so that shards
//! move only to nodes that have caught up, and away from a node before it
//! is removed. All are called on the LEADER (elsewhere they fail with
//! [`Error::NotLeader`]); run one at a time (they read the membership and
//! then change it, so two concurrent joins could both add a voter).
//!
//! # Join
//! `Joining(id)` (the id owns no shards yet) → `add_learner` (blocking until
//! the learner has caught up, by log or by snapshot) → if the cluster has
//! fewer than [`MAX_VOTERS`] voters, a membership change making it a voter
//! → `Joined(id)`: only now does it enter the placement, taking the shards
//! it wins at a new epoch. A retired id is refused ([`Error::IdRetired`]);
//! a member that finished joining is answered at once (idempotent); a join
//! interrupted half-way is completed by calling `join` again.
//!
//! # Leave
//! `Leaving(id)` (its shards move to the others at once, at new epochs) →
//! a membership change removing it (a voter: `RemoveVoters`, promoting the
//! lowest-id healthy learner if the voters drop below [`MAX_VOTERS`]; a
//! learner: `RemoveNodes`) — applying that change retires the id on every
//! node, since it was leaving — → `Retire(id)` (confirming it). A retired id
//! is never accepted again. Calling `leave` for a retired id does nothing.
//!
//! **The leader leaving itself:** the leader replicates its own removal;
//! once that membership is committed and applied (so the id is retired on
//! every replica) it keeps leading for openraft's
//! `removed_leader_step_down` delay (150 ms by default), then transfers
//! leadership to the most up-to-date voter and becomes a learner outside
//! the membership: it gets no more entries, and should be shut down. The
//! final `Retire` is committed if it still leads; if it already stepped
//! down (`NotLeader`), `leave` still succeeds, as the retirement is already
//! applied everywhere.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use openraft::error::{ForwardToLeader, RaftError};
use openraft::rt::watch::WatchReceiver as _;
use openraft::{BasicNode, ChangeMembers, ReadPolicy, TryAsRef};

use crate::Raft;
use crate::cluster::ClusterState;
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::types::{ClusterCommand, Command, NodeId, Response, StoredMembership, TypeConfig};

/// The most voters a cluster gets from [`join`]; further nodes join as
/// learners (they own shards all the same, and are promoted when a voter
/// leaves).
pub const MAX_VOTERS: usize = 5;

/// What a node became by [`join`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Joined {
    /// A voter.
    Voter,
    /// A learner: the cluster already had [`MAX_VOTERS`] voters.
    Learner,
}

/// Adds node `id`, reachable at `addr`, to the cluster (see the module
/// docs): as a voter if there are fewer than [`MAX_VOTERS`], else as a
/// learner. Call on the leader. Blocks until the node has caught up (bound
/// it with a timeout: an unreachable node never does; calling `join` again
/// later completes the join).
///
/// Errors: [`Error::IdRetired`] for an id that left the cluster,
/// [`Error::NotLeader`], [`Error::Rejected`] (a concurrent change made a
/// step invalid), [`Error::Raft`].
pub async fn join(raft: &Raft, id: NodeId, addr: String) -> Result<Joined> {
    let state = applied_cluster(raft).await?;
    if state.retired().contains(&id) {
        return Err(Error::IdRetired { node: id });
    }
    let membership = latest_membership(raft);
    let is_voter =
        |membership: &StoredMembership| membership.membership().voter_ids().any(|v| v == id);
    if state.is_member(id) && !state.joining().contains(&id) {
        return Ok(if is_voter(&membership) {
            Joined::Voter
        } else {
            Joined::Learner
        });
    }
    if !state.joining().contains(&id) {
        commit(raft, ClusterCommand::Joining(id)).await?;
    }
    if !membership.membership().nodes().any(|(n, _)| *n == id) {
        tracing::info!(id, %addr, "adding a learner");
        raft.add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(|e| raft_error("adding a learner", e))?;
    }
    let membership = latest_membership(raft);
    let voters = membership.membership().voter_ids().count();
    let role = if is_voter(&membership) {
        Joined::Voter
    } else if voters < MAX_VOTERS {
        tracing::info!(id, voters, "promoting the learner to voter");
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| raft_error("promoting a learner", e))?;
        Joined::Voter
    } else {
        Joined::Learner
    };
    commit(raft, ClusterCommand::Joined(id)).await?;
    tracing::info!(id, ?role, "joined");
    Ok(role)
}

/// Removes node `id` from the cluster gracefully (see the module docs):
/// its shards move away first, then it leaves the membership, and its id
/// is retired. Call on the leader; the leader may remove itself.
///
/// Errors: [`Error::NotAMember`], [`Error::LastVoter`] (the only voter
/// cannot leave), [`Error::NotLeader`], [`Error::Rejected`],
/// [`Error::Raft`]. `Ok` at once for an already retired id.
pub async fn leave(raft: &Raft, id: NodeId) -> Result<()> {
    let state = applied_cluster(raft).await?;
    if state.retired().contains(&id) {
        return Ok(());
    }
    let membership = latest_membership(raft);
    let membership = membership.membership();
    if !membership.nodes().any(|(n, _)| *n == id) {
        return Err(Error::NotAMember { node: id });
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.len() == 1 && voters.contains(&id) {
        return Err(Error::LastVoter { node: id });
    }
    if !state.leaving().contains(&id) {
        commit(raft, ClusterCommand::Leaving(id)).await?;
    }
    let change = if voters.contains(&id) {
        let mut changes = vec![ChangeMembers::RemoveVoters(BTreeSet::from([id]))];
        if voters.len() - 1 < MAX_VOTERS
            && let Some(learner) = membership.learner_ids().find(|l| {
                *l != id
                    && !state.down().contains(l)
                    && !state.leaving().contains(l)
                    && !state.joining().contains(l)
            })
        {
            tracing::info!(
                id,
                learner,
                "promoting a learner in place of a leaving voter"
            );
            changes.push(ChangeMembers::AddVoterIds(BTreeSet::from([learner])));
        }
        ChangeMembers::Batch(changes)
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    tracing::info!(id, %change, "removing a node");
    raft.change_membership(change, false)
        .await
        .map_err(|e| raft_error("removing a node", e))?;
    // Applying that change already retired `id` (it was leaving).
    let me = raft.metrics().borrow_watched().id;
    match commit(raft, ClusterCommand::Retire(id)).await {
        Err(Error::NotLeader { .. }) if id == me => {
            tracing::info!(id, "the leader removed itself and stepped down");
            Ok(())
        }
        other => other,
    }
}

/// Commits `MarkDown(id)`: the member owns no shards until [`mark_up`]
/// (its shards move to the others at new epochs). For the failure
/// detector; call on the leader.
pub async fn mark_down(raft: &Raft, id: NodeId) -> Result<()> {
    commit(raft, ClusterCommand::MarkDown(id)).await
}

/// Commits `MarkUp(id)`: the member owns shards again (those it wins, at
/// new epochs). Call on the leader.
pub async fn mark_up(raft: &Raft, id: NodeId) -> Result<()> {
    commit(raft, ClusterCommand::MarkUp(id)).await
}

/// Commits `command`; a rejection is [`Error::Rejected`].
async fn commit(raft: &Raft, command: ClusterCommand) -> Result<()> {
    let written = raft
        .client_write(Command::Cluster(command))
        .await
        .map_err(|e| raft_error("committing a cluster command", e))?;
    match written.data {
        Response::Rejected(rejected) => Err(Error::Rejected {
            command: command.to_string(),
            rejected,
        }),
        _ => Ok(()),
    }
}

/// The leader's cluster state with every entry committed so far applied
/// (a linearizable read: fails with [`Error::NotLeader`] elsewhere).
async fn applied_cluster(raft: &Raft) -> Result<Arc<ClusterState>> {
    raft.ensure_linearizable(ReadPolicy::ReadIndex)
        .await
        .map_err(|e| raft_error("reading the cluster state", e))?;
    raft.with_state_machine(|sm: &mut StateMachine| {
        let state = sm.cluster_state();
        Box::pin(async move { state })
    })
    .await
    .map_err(|e| Error::Raft {
        context: "reading the cluster state",
        source: Box::new(e),
    })
}

/// The latest membership the node knows (maybe not committed yet).
fn latest_membership(raft: &Raft) -> StoredMembership {
    raft.metrics()
        .borrow_watched()
        .membership_config
        .as_ref()
        .clone()
}

fn raft_error<E>(context: &'static str, error: RaftError<TypeConfig, E>) -> Error
where
    E: std::error::Error + Debug + Send + Sync + 'static + TryAsRef<ForwardToLeader<TypeConfig>>,
{
    if let Some(forward) = error.forward_to_leader() {
        return Error::NotLeader {
            leader: forward.leader_id,
        };
    }
    Error::Raft {
        context,
        source: Box::new(error),
    }
}
