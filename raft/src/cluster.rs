//! [`ClusterState`]: the replicated cluster metadata — which nodes own
//! shards (the placement, with its history of generations), which are
//! down, joining, leaving or retired — and the shard → owner / epoch rules
//! derived from it.
//!
//! The state machine maintains it deterministically from the applied log:
//! membership entries (`EntryPayload::Membership`) and
//! [`Command::Cluster`](crate::Command::Cluster) commands
//! ([`ClusterCommand`]). It is persisted inside the applied marker (so it
//! commits atomically with `last_applied` and travels in snapshots).
//!
//! # Placement
//! The placement set is every node of the current Raft membership (voters
//! and learners) minus the nodes marked down, leaving or joining (and
//! minus retired ids, which a membership should never contain). Whenever
//! applying a log entry changes that set, a new entry (generation, set) is
//! pushed on the placement history; its generation is the log index of
//! that entry, so generations are unique and increase. At most
//! [`PLACEMENT_HISTORY_MAX`] entries are kept (the oldest go).
//!
//! # Shard owner: rendezvous hashing (a stable format)
//! The owner of a shard is the node of the placement set with the highest
//! [`placement_score`]: `xxh3_64` (seed 0) of the 12 bytes
//! `shard (u32, big-endian) ‖ node (u64, big-endian)`; equal scores go to
//! the lower node id. Adding a node moves to it only the shards it now
//! wins; removing one moves only its own shards. This function is part of
//! the replicated format: every replica must compute the same owner, in
//! every release. Golden vectors pin it (tests of this module).
//!
//! # Shard epoch
//! A shard's epoch ([`ClusterState::epoch`]) is the generation at which its
//! current owner acquired it: walking the placement history back from the
//! newest entry while the owner computed from the entry is the current
//! owner, the generation of the oldest such entry (the oldest kept entry if
//! the walk reaches it). It changes exactly when the shard's ownership
//! moves. A write batch is applied only if it carries exactly its shard's
//! epoch (fencing: a deposed owner's writes are refused on every replica).

use std::collections::{BTreeSet, VecDeque};

use openraft::{BasicNode, Membership};
use shoal_storage::{Epoch, ShardId};

use crate::types::{ClusterCommand, NodeId, Rejected, Response};

/// How many placement history entries a [`ClusterState`] keeps.
pub const PLACEMENT_HISTORY_MAX: usize = 256;

/// The rendezvous score of `node` for `shard`: `xxh3_64` (seed 0) of
/// `shard.get()` as 4 big-endian bytes followed by `node` as 8 big-endian
/// bytes. The owner of a shard is the placement node with the highest
/// score, ties to the lower id. A stable, documented format.
pub fn placement_score(shard: ShardId, node: NodeId) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&shard.get().to_be_bytes());
    bytes[4..].copy_from_slice(&node.to_be_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// The owner of `shard` among `nodes` by rendezvous hashing (see
/// [`placement_score`]); `None` if `nodes` is empty.
pub fn rendezvous_owner<'a>(
    shard: ShardId,
    nodes: impl IntoIterator<Item = &'a NodeId>,
) -> Option<NodeId> {
    let mut best: Option<(u64, NodeId)> = None;
    for &node in nodes {
        let score = placement_score(shard, node);
        best = match best {
            // Strictly greater wins; an equal score keeps the lower id.
            Some((s, n)) if s > score || (s == score && n < node) => Some((s, n)),
            _ => Some((score, node)),
        };
    }
    best.map(|(_, node)| node)
}

/// One placement: the set of nodes that own shards from `generation` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The log index of the entry whose apply made this the placement.
    pub generation: u64,
    /// The nodes that own shards.
    pub nodes: BTreeSet<NodeId>,
}

/// The replicated cluster metadata (see the module docs). Every replica
/// that applied the same log prefix holds an equal `ClusterState`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// The ids of the current Raft membership (voters and learners).
    members: BTreeSet<NodeId>,
    /// Placement history, oldest first, at most [`PLACEMENT_HISTORY_MAX`].
    placements: VecDeque<Placement>,
    down: BTreeSet<NodeId>,
    leaving: BTreeSet<NodeId>,
    joining: BTreeSet<NodeId>,
    retired: BTreeSet<NodeId>,
}

static EMPTY: BTreeSet<NodeId> = BTreeSet::new();

impl ClusterState {
    /// Rebuilds a state from its parts (the decoder's job); `members` are
    /// the ids of the current membership. Checks nothing: the decoder
    /// validates.
    pub(crate) fn from_parts(
        members: BTreeSet<NodeId>,
        placements: VecDeque<Placement>,
        down: BTreeSet<NodeId>,
        leaving: BTreeSet<NodeId>,
        joining: BTreeSet<NodeId>,
        retired: BTreeSet<NodeId>,
    ) -> Self {
        ClusterState {
            members,
            placements,
            down,
            leaving,
            joining,
            retired,
        }
    }

    /// The state of a membership of `members` with nothing else known (no
    /// placement yet).
    pub(crate) fn with_members(members: BTreeSet<NodeId>) -> Self {
        ClusterState {
            members,
            ..ClusterState::default()
        }
    }

    /// The generation of the newest placement (0 if there is none yet).
    pub fn generation(&self) -> u64 {
        self.placements.back().map_or(0, |p| p.generation)
    }

    /// The nodes that own shards now (empty if there is no placement yet).
    pub fn placement(&self) -> &BTreeSet<NodeId> {
        self.placements.back().map_or(&EMPTY, |p| &p.nodes)
    }

    /// The placement history, oldest first (at most
    /// [`PLACEMENT_HISTORY_MAX`] entries).
    pub fn history(&self) -> impl ExactSizeIterator<Item = &Placement> + DoubleEndedIterator + '_ {
        self.placements.iter()
    }

    /// The owner of `shard`: rendezvous hashing over [`placement`](Self::placement)
    /// (see [`placement_score`]); `None` if the placement is empty.
    pub fn owner(&self, shard: ShardId) -> Option<NodeId> {
        rendezvous_owner(shard, self.placement())
    }

    /// The epoch of `shard`: the generation at which its current owner
    /// acquired it (see the module docs); `None` if it has no owner.
    pub fn epoch(&self, shard: ShardId) -> Option<Epoch> {
        let mut entries = self.placements.iter().rev();
        let newest = entries.next()?;
        let owner = rendezvous_owner(shard, &newest.nodes)?;
        let mut generation = newest.generation;
        for entry in entries {
            if rendezvous_owner(shard, &entry.nodes) != Some(owner) {
                break;
            }
            generation = entry.generation;
        }
        Some(Epoch::new(generation))
    }

    /// The ids of the current Raft membership (voters and learners).
    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    /// Whether `id` is in the current Raft membership (voter or learner).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.contains(&id)
    }

    /// Members marked down (by a failure detector): they own no shards.
    pub fn down(&self) -> &BTreeSet<NodeId> {
        &self.down
    }

    /// Members on their way out: they own no shards.
    pub fn leaving(&self) -> &BTreeSet<NodeId> {
        &self.leaving
    }

    /// Ids being added (catching up as learners): they own no shards yet.
    pub fn joining(&self) -> &BTreeSet<NodeId> {
        &self.joining
    }

    /// Ids that left or were removed: never accepted again.
    pub fn retired(&self) -> &BTreeSet<NodeId> {
        &self.retired
    }

    /// Applies a membership entry at log index `index`: the members become
    /// `membership`'s nodes; a leaving node it removes is retired, and a
    /// down mark of a node it removes is dropped.
    pub(crate) fn apply_membership(
        &mut self,
        index: u64,
        membership: &Membership<NodeId, BasicNode>,
    ) {
        self.members = membership.nodes().map(|(id, _)| *id).collect();
        let gone: Vec<NodeId> = self
            .leaving
            .iter()
            .filter(|id| !self.members.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.retire(id);
        }
        let members = &self.members;
        self.down.retain(|id| members.contains(id));
        self.update_placement(index);
    }

    /// Whether applying `command` would be refused, and why
    /// (deterministic: depends only on the state).
    pub(crate) fn check(&self, command: &ClusterCommand) -> Result<(), Rejected> {
        let invalid = |reason: String| Err(Rejected::Invalid { reason });
        match *command {
            ClusterCommand::MarkDown(id)
            | ClusterCommand::MarkUp(id)
            | ClusterCommand::Leaving(id)
                if !self.is_member(id) =>
            {
                invalid(format!("{command}: node {id} is not a member"))
            }
            ClusterCommand::Joining(id) if self.retired.contains(&id) => invalid(format!(
                "{command}: node id {id} is retired and never accepted again"
            )),
            ClusterCommand::Joining(id) if self.is_member(id) && !self.joining.contains(&id) => {
                invalid(format!("{command}: node {id} is already a member"))
            }
            ClusterCommand::Joined(id) if !self.is_member(id) => invalid(format!(
                "{command}: node {id} is not a member (add it as a learner first)"
            )),
            ClusterCommand::Retire(id) if self.is_member(id) => invalid(format!(
                "{command}: node {id} is still a member (remove it first)"
            )),
            _ => Ok(()),
        }
    }

    /// Applies `command` (which [`check`](Self::check) accepted) at log
    /// index `index`.
    pub(crate) fn apply_command(&mut self, index: u64, command: &ClusterCommand) {
        match *command {
            ClusterCommand::MarkDown(id) => {
                self.down.insert(id);
            }
            ClusterCommand::MarkUp(id) => {
                self.down.remove(&id);
            }
            ClusterCommand::Joining(id) => {
                self.joining.insert(id);
            }
            ClusterCommand::Joined(id) => {
                self.joining.remove(&id);
            }
            ClusterCommand::Leaving(id) => {
                self.leaving.insert(id);
            }
            ClusterCommand::Retire(id) => self.retire(id),
        }
        self.update_placement(index);
    }

    /// Checks and applies `command` at `index`, answering what the
    /// proposer gets.
    pub(crate) fn execute(&mut self, index: u64, command: &ClusterCommand) -> Response {
        match self.check(command) {
            Ok(()) => {
                self.apply_command(index, command);
                Response::Empty
            }
            Err(rejected) => Response::Rejected(rejected),
        }
    }

    fn retire(&mut self, id: NodeId) {
        self.retired.insert(id);
        self.down.remove(&id);
        self.leaving.remove(&id);
        self.joining.remove(&id);
    }

    /// Pushes a placement at generation `index` if the set changed.
    fn update_placement(&mut self, index: u64) {
        let nodes: BTreeSet<NodeId> = self
            .members
            .iter()
            .filter(|id| {
                !self.down.contains(id)
                    && !self.leaving.contains(id)
                    && !self.joining.contains(id)
                    && !self.retired.contains(id)
            })
            .copied()
            .collect();
        if &nodes == self.placement() {
            return;
        }
        self.placements.push_back(Placement {
            generation: index,
            nodes,
        });
        while self.placements.len() > PLACEMENT_HISTORY_MAX {
            self.placements.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn membership(ids: &[NodeId]) -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = ids
            .iter()
            .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{id}"))))
            .collect();
        Membership::new(vec![ids.iter().copied().collect()], nodes).expect("membership")
    }

    const SHARDS: u32 = 2048;

    fn owners(state: &ClusterState) -> Vec<Option<NodeId>> {
        (0..SHARDS).map(|s| state.owner(ShardId::new(s))).collect()
    }

    fn epochs(state: &ClusterState) -> Vec<Option<Epoch>> {
        (0..SHARDS).map(|s| state.epoch(ShardId::new(s))).collect()
    }

    /// Golden vectors (checked against an independent xxh3 implementation,
    /// Python's `xxhash`): the owner function is a replicated format.
    #[test]
    fn the_score_is_a_stable_format() {
        assert_eq!(
            placement_score(ShardId::new(0), 1),
            xxhash_rust::xxh3::xxh3_64(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(placement_score(ShardId::new(0), 1), 0xe7f8_a348_5c49_4918);
        assert_eq!(placement_score(ShardId::new(5), 2), 0x5391_348d_fe09_0bfe);
        assert_eq!(
            placement_score(ShardId::new(2047), 3),
            0xcef7_6dae_3f50_bcb8
        );
        let nodes = BTreeSet::from([1, 2, 3]);
        let golden: Vec<Option<NodeId>> = (0..8)
            .map(|s| rendezvous_owner(ShardId::new(s), &nodes))
            .collect();
        assert_eq!(
            golden,
            vec![
                Some(1),
                Some(2),
                Some(3),
                Some(1),
                Some(2),
                Some(1),
                Some(2),
                Some(2)
            ]
        );
        assert_eq!(rendezvous_owner(ShardId::new(1), &BTreeSet::new()), None);
    }

    #[test]
    fn adding_or_removing_a_node_moves_only_its_shards() {
        let mut state = ClusterState::default();
        state.apply_membership(1, &membership(&[1, 2, 3]));
        assert_eq!(state.generation(), 1);
        let before = owners(&state);
        let epochs_before = epochs(&state);
        assert!(epochs_before.iter().all(|e| *e == Some(Epoch::new(1))));

        // Joining: a member that owns nothing yet.
        state.apply_command(5, &ClusterCommand::Joining(4));
        state.apply_membership(6, &membership(&[1, 2, 3, 4]));
        assert_eq!(state.generation(), 1, "a joining node changes nothing");
        assert_eq!(owners(&state), before);
        state.apply_command(9, &ClusterCommand::Joined(4));
        assert_eq!(state.generation(), 9);
        let after = owners(&state);
        let epochs_after = epochs(&state);
        let mut moved = 0;
        for s in 0..SHARDS as usize {
            if before[s] == after[s] {
                assert_eq!(epochs_after[s], Some(Epoch::new(1)), "shard {s} kept");
            } else {
                moved += 1;
                assert_eq!(after[s], Some(4), "shard {s} moved, only to the new node");
                assert_eq!(epochs_after[s], Some(Epoch::new(9)), "shard {s} epoch rose");
            }
        }
        // About a quarter of the shards move.
        assert!((350..700).contains(&moved), "{moved}");

        // Down: only node 2's shards move, each to someone else.
        state.apply_command(12, &ClusterCommand::MarkDown(2));
        assert_eq!(state.placement(), &BTreeSet::from([1, 3, 4]));
        let down = owners(&state);
        let epochs_down = epochs(&state);
        for s in 0..SHARDS as usize {
            if after[s] == Some(2) {
                assert_ne!(down[s], Some(2));
                assert_eq!(epochs_down[s], Some(Epoch::new(12)));
            } else {
                assert_eq!(down[s], after[s]);
                assert_eq!(epochs_down[s], epochs_after[s]);
            }
        }

        // Up again: its shards come back at a newer epoch; the others keep theirs.
        state.apply_command(15, &ClusterCommand::MarkUp(2));
        assert_eq!(owners(&state), after);
        for (s, epoch) in epochs(&state).into_iter().enumerate() {
            if after[s] == Some(2) {
                assert_eq!(epoch, Some(Epoch::new(15)));
            } else {
                assert_eq!(epoch, epochs_after[s], "shard {s}");
            }
        }
        assert_eq!(state.history().len(), 4);
    }

    #[test]
    fn commands_are_checked_deterministically() {
        let mut state = ClusterState::default();
        state.apply_membership(0, &membership(&[1, 2]));
        assert_eq!(state.epoch(ShardId::new(3)), Some(Epoch::new(0)));
        for bad in [
            ClusterCommand::MarkDown(9),
            ClusterCommand::MarkUp(9),
            ClusterCommand::Leaving(9),
            ClusterCommand::Joined(9),
            ClusterCommand::Joining(1),
            ClusterCommand::Retire(2),
        ] {
            let before = state.clone();
            assert!(
                matches!(
                    state.execute(4, &bad),
                    Response::Rejected(Rejected::Invalid { .. })
                ),
                "{bad}"
            );
            assert_eq!(state, before, "{bad} changed nothing");
        }
        // Leave node 2: leaving, removed (retired by the membership), then
        // Retire confirms it; it can never join again.
        assert_eq!(
            state.execute(5, &ClusterCommand::Leaving(2)),
            Response::Empty
        );
        assert_eq!(state.placement(), &BTreeSet::from([1]));
        state.apply_membership(7, &membership(&[1]));
        assert!(state.retired().contains(&2));
        assert!(state.leaving().is_empty());
        assert_eq!(
            state.execute(8, &ClusterCommand::Retire(2)),
            Response::Empty
        );
        assert!(matches!(
            state.execute(9, &ClusterCommand::Joining(2)),
            Response::Rejected(_)
        ));
        // Everything down: no owner, no epoch.
        assert_eq!(
            state.execute(10, &ClusterCommand::MarkDown(1)),
            Response::Empty
        );
        assert_eq!(state.owner(ShardId::new(3)), None);
        assert_eq!(state.epoch(ShardId::new(3)), None);
        assert_eq!(state.generation(), 10);
    }

    #[test]
    fn the_epoch_walk_stops_at_a_different_owner_and_the_history_is_bounded() {
        let mut state = ClusterState::default();
        state.apply_membership(0, &membership(&[1, 2, 3]));
        let shard = (0..SHARDS)
            .map(ShardId::new)
            .find(|s| state.owner(*s) == Some(1))
            .expect("node 1 owns a shard");
        // Flapping node 2 does not move node 1's shard: its epoch stays.
        for i in 0..10u64 {
            state.apply_command(10 + 2 * i, &ClusterCommand::MarkDown(2));
            state.apply_command(11 + 2 * i, &ClusterCommand::MarkUp(2));
        }
        assert_eq!(state.epoch(shard), Some(Epoch::new(0)));
        // Node 1 goes down and comes back: a new epoch, at its return.
        state.apply_command(100, &ClusterCommand::MarkDown(1));
        assert_ne!(state.owner(shard), Some(1));
        assert_eq!(state.epoch(shard), Some(Epoch::new(100)));
        state.apply_command(101, &ClusterCommand::MarkUp(1));
        assert_eq!(state.epoch(shard), Some(Epoch::new(101)));

        // The history keeps the last PLACEMENT_HISTORY_MAX entries; a walk
        // reaching the oldest kept entry uses its generation.
        for i in 0..400u64 {
            state.apply_command(1000 + 2 * i, &ClusterCommand::MarkDown(2));
            state.apply_command(1001 + 2 * i, &ClusterCommand::MarkUp(2));
        }
        assert_eq!(state.history().len(), PLACEMENT_HISTORY_MAX);
        let oldest = state.history().next().map(|p| p.generation);
        assert_eq!(state.epoch(shard).map(Epoch::get), oldest);
        let generations: Vec<u64> = state.history().map(|p| p.generation).collect();
        assert!(generations.windows(2).all(|w| w[0] < w[1]));
    }
}
