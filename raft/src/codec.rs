//! The protobuf encoding of everything this crate persists: log entries,
//! the vote, log ids, membership configs, and [`Command`]s.
//!
//! The messages are declared here with `prost` derives (no `.proto` build
//! step); their schema, for other implementations, is:
//!
//! ```text
//! message LogId   { uint64 term = 1; uint64 node_id = 2; uint64 index = 3; }
//! message Vote    { uint64 term = 1; uint64 node_id = 2; bool committed = 3; }
//! message Entry   { LogId log_id = 1;
//!                   oneof payload { Blank blank = 2; Command normal = 3; Membership membership = 4; } }
//! message Blank   {}
//! message Command { oneof kind { bytes batch = 1;          // shoal.storage.v1.WriteBatch bytes
//!                                 ClusterCommand cluster = 2; } }
//! message ClusterCommand { oneof kind { uint64 mark_down = 1; uint64 mark_up = 2; uint64 joining = 3;
//!                                       uint64 joined = 4; uint64 leaving = 5; uint64 retire = 6; } }
//! message Membership { repeated VoterSet configs = 1; repeated Node nodes = 2; }
//! message VoterSet   { repeated uint64 voters = 1; }
//! message Node       { uint64 id = 1; string addr = 2; }
//! message StoredMembership { LogId log_id = 1; Membership membership = 2; }
//! // The state machine's applied marker (storage `node_meta` "raft.applied"):
//! message AppliedMarker    { LogId last_applied = 1; LogId last_data = 2; StoredMembership membership = 3;
//!                            ClusterState cluster = 4; }   // absent (older builds): the default state
//! // The replicated cluster metadata (see `cluster`); members come from the marker's membership.
//! message ClusterState { repeated Placement placements = 1;   // oldest first, generations increasing, <= 256
//!                        repeated uint64 down = 2; repeated uint64 leaving = 3;
//!                        repeated uint64 joining = 4; repeated uint64 retired = 5; }  // each ascending, no repeats
//! message Placement    { uint64 generation = 1; repeated uint64 nodes = 2; }      // nodes ascending
//! // The header of a snapshot file (`raft-snapshot.bin`) is a SnapshotMeta (below).
//!
//! // Raft RPCs (see `network`):
//! message AppendEntriesRequest  { Vote vote = 1; LogId prev_log_id = 2; repeated Entry entries = 3;
//!                                 LogId leader_commit = 4; }
//! message AppendEntriesResponse { oneof result { Empty success = 1; PartialSuccess partial_success = 2;
//!                                                Empty conflict = 3; Vote higher_vote = 4; } }
//! message PartialSuccess        { LogId matching = 1; }
//! message Empty                 {}
//! message VoteRequest           { Vote vote = 1; LogId last_log_id = 2; bool leadership_transfer = 3; }
//! message VoteResponse          { Vote vote = 1; bool vote_granted = 2; LogId last_log_id = 3; }
//! message SnapshotChunk         { Vote vote = 1; uint64 transfer_id = 2; uint64 offset = 3;
//!                                 uint64 total_bytes = 4; bytes data = 5; SnapshotMeta meta = 6; }
//! message SnapshotMeta          { LogId last_log_id = 1; StoredMembership last_membership = 2; }
//! message SnapshotAck           { uint64 received_bytes = 1; Vote vote = 2; }  // vote: after the last chunk
//! ```
//!
//! Invariant: fields are only ever added, never renumbered. Decoding never
//! panics: missing required parts, a membership whose voters are not among
//! its nodes, or an undecodable write batch are [`DecodeError`]s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::vote::{RaftLeaderId, RaftLeaderIdExt, RaftVote};
use openraft::{BasicNode, EntryPayload, Membership};
use prost::Message as _;
use shoal_storage::WriteBatch;

use crate::cluster::{ClusterState, PLACEMENT_HISTORY_MAX, Placement};
use crate::types::{
    ClusterCommand, Command, Entry, LogId, NodeId, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err(reason: impl Into<String>) -> DecodeError {
    DecodeError(reason.into())
}

#[derive(Clone, PartialEq, prost::Message)]
struct LogIdPb {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    node_id: u64,
    #[prost(uint64, tag = "3")]
    index: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct VotePb {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    node_id: u64,
    #[prost(bool, tag = "3")]
    committed: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryPb {
    #[prost(message, optional, tag = "1")]
    log_id: Option<LogIdPb>,
    #[prost(oneof = "PayloadPb", tags = "2, 3, 4")]
    payload: Option<PayloadPb>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum PayloadPb {
    #[prost(message, tag = "2")]
    Blank(BlankPb),
    #[prost(message, tag = "3")]
    Normal(CommandPb),
    #[prost(message, tag = "4")]
    Membership(MembershipPb),
}

#[derive(Clone, PartialEq, prost::Message)]
struct BlankPb {}

#[derive(Clone, PartialEq, prost::Message)]
struct CommandPb {
    #[prost(oneof = "CommandKindPb", tags = "1, 2")]
    kind: Option<CommandKindPb>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum CommandKindPb {
    #[prost(bytes = "vec", tag = "1")]
    Batch(Vec<u8>),
    #[prost(message, tag = "2")]
    Cluster(ClusterCommandPb),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClusterCommandPb {
    #[prost(oneof = "ClusterCommandKindPb", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<ClusterCommandKindPb>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ClusterCommandKindPb {
    #[prost(uint64, tag = "1")]
    MarkDown(u64),
    #[prost(uint64, tag = "2")]
    MarkUp(u64),
    #[prost(uint64, tag = "3")]
    Joining(u64),
    #[prost(uint64, tag = "4")]
    Joined(u64),
    #[prost(uint64, tag = "5")]
    Leaving(u64),
    #[prost(uint64, tag = "6")]
    Retire(u64),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClusterStatePb {
    #[prost(message, repeated, tag = "1")]
    placements: Vec<PlacementPb>,
    #[prost(uint64, repeated, tag = "2")]
    down: Vec<u64>,
    #[prost(uint64, repeated, tag = "3")]
    leaving: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    joining: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    retired: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PlacementPb {
    #[prost(uint64, tag = "1")]
    generation: u64,
    #[prost(uint64, repeated, tag = "2")]
    nodes: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MembershipPb {
    #[prost(message, repeated, tag = "1")]
    configs: Vec<VoterSetPb>,
    #[prost(message, repeated, tag = "2")]
    nodes: Vec<NodePb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct VoterSetPb {
    #[prost(uint64, repeated, tag = "1")]
    voters: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodePb {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    addr: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredMembershipPb {
    #[prost(message, optional, tag = "1")]
    log_id: Option<LogIdPb>,
    #[prost(message, optional, tag = "2")]
    membership: Option<MembershipPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AppliedMarkerPb {
    #[prost(message, optional, tag = "1")]
    last_applied: Option<LogIdPb>,
    #[prost(message, optional, tag = "2")]
    last_data: Option<LogIdPb>,
    #[prost(message, optional, tag = "3")]
    membership: Option<StoredMembershipPb>,
    /// An encoded `ClusterStatePb` (kept as bytes so that the state
    /// machine can cache its encoding between markers).
    #[prost(bytes = "vec", optional, tag = "4")]
    cluster: Option<Vec<u8>>,
}

fn log_id_to_pb(log_id: &LogId) -> LogIdPb {
    LogIdPb {
        term: log_id.leader_id.term,
        node_id: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

fn log_id_from_pb(pb: &LogIdPb) -> LogId {
    LogId::new(
        openraft::vote::leader_id_adv::LeaderId::new_committed(pb.term, pb.node_id),
        pb.index,
    )
}

fn membership_to_pb(membership: &Membership<NodeId, BasicNode>) -> MembershipPb {
    MembershipPb {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|set| VoterSetPb {
                voters: set.iter().copied().collect(),
            })
            .collect(),
        nodes: membership
            .nodes()
            .map(|(id, node)| NodePb {
                id: *id,
                addr: node.addr.clone(),
            })
            .collect(),
    }
}

fn membership_from_pb(pb: MembershipPb) -> Result<Membership<NodeId, BasicNode>, DecodeError> {
    let configs: Vec<BTreeSet<NodeId>> = pb
        .configs
        .into_iter()
        .map(|set| set.voters.into_iter().collect())
        .collect();
    let mut nodes = BTreeMap::new();
    for node in pb.nodes {
        if nodes
            .insert(node.id, BasicNode { addr: node.addr })
            .is_some()
        {
            return Err(err(format!("membership lists node {} twice", node.id)));
        }
    }
    Membership::new(configs, nodes).map_err(|e| err(format!("invalid membership: {e}")))
}

fn vote_to_pb(vote: &Vote) -> VotePb {
    VotePb {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

fn vote_from_pb(pb: &VotePb) -> Vote {
    Vote::from_leader_id(
        openraft::vote::leader_id_adv::LeaderId::new(pb.term, pb.node_id),
        pb.committed,
    )
}

/// Encodes a log id.
pub(crate) fn encode_log_id(log_id: &LogId) -> Vec<u8> {
    log_id_to_pb(log_id).encode_to_vec()
}

/// Decodes a log id.
pub(crate) fn decode_log_id(bytes: &[u8]) -> Result<LogId, DecodeError> {
    let pb = LogIdPb::decode(bytes).map_err(|e| err(format!("log id: {e}")))?;
    Ok(log_id_from_pb(&pb))
}

/// Encodes a vote.
pub(crate) fn encode_vote(vote: &Vote) -> Vec<u8> {
    vote_to_pb(vote).encode_to_vec()
}

/// Decodes a vote.
pub(crate) fn decode_vote(bytes: &[u8]) -> Result<Vote, DecodeError> {
    let pb = VotePb::decode(bytes).map_err(|e| err(format!("vote: {e}")))?;
    Ok(vote_from_pb(&pb))
}

/// Encodes a command.
pub(crate) fn encode_command(command: &Command) -> Vec<u8> {
    command_to_pb(command).encode_to_vec()
}

fn command_to_pb(command: &Command) -> CommandPb {
    match command {
        Command::Batch(batch) => CommandPb {
            kind: Some(CommandKindPb::Batch(batch.encode())),
        },
        Command::Cluster(command) => CommandPb {
            kind: Some(CommandKindPb::Cluster(ClusterCommandPb {
                kind: Some(match *command {
                    ClusterCommand::MarkDown(id) => ClusterCommandKindPb::MarkDown(id),
                    ClusterCommand::MarkUp(id) => ClusterCommandKindPb::MarkUp(id),
                    ClusterCommand::Joining(id) => ClusterCommandKindPb::Joining(id),
                    ClusterCommand::Joined(id) => ClusterCommandKindPb::Joined(id),
                    ClusterCommand::Leaving(id) => ClusterCommandKindPb::Leaving(id),
                    ClusterCommand::Retire(id) => ClusterCommandKindPb::Retire(id),
                }),
            })),
        },
    }
}

/// Decodes a command.
pub(crate) fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    let pb = CommandPb::decode(bytes).map_err(|e| err(format!("command: {e}")))?;
    command_from_pb(pb)
}

fn command_from_pb(pb: CommandPb) -> Result<Command, DecodeError> {
    match pb.kind {
        Some(CommandKindPb::Batch(bytes)) => WriteBatch::decode(bytes.as_slice())
            .map(Command::Batch)
            .map_err(|e| err(format!("command: {e}"))),
        Some(CommandKindPb::Cluster(command)) => Ok(Command::Cluster(match command.kind {
            Some(ClusterCommandKindPb::MarkDown(id)) => ClusterCommand::MarkDown(id),
            Some(ClusterCommandKindPb::MarkUp(id)) => ClusterCommand::MarkUp(id),
            Some(ClusterCommandKindPb::Joining(id)) => ClusterCommand::Joining(id),
            Some(ClusterCommandKindPb::Joined(id)) => ClusterCommand::Joined(id),
            Some(ClusterCommandKindPb::Leaving(id)) => ClusterCommand::Leaving(id),
            Some(ClusterCommandKindPb::Retire(id)) => ClusterCommand::Retire(id),
            None => {
                return Err(err(
                    "cluster command: no kind (written by a newer version?)",
                ));
            }
        })),
        None => Err(err("command: no kind (written by a newer version?)")),
    }
}

fn entry_to_pb(entry: &Entry) -> EntryPb {
    let payload = match &entry.payload {
        EntryPayload::Blank => PayloadPb::Blank(BlankPb {}),
        EntryPayload::Normal(command) => PayloadPb::Normal(command_to_pb(command)),
        EntryPayload::Membership(membership) => PayloadPb::Membership(membership_to_pb(membership)),
    };
    EntryPb {
        log_id: Some(log_id_to_pb(&entry.log_id)),
        payload: Some(payload),
    }
}

/// Encodes a log entry.
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    entry_to_pb(entry).encode_to_vec()
}

/// Decodes a log entry.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let pb = EntryPb::decode(bytes).map_err(|e| err(format!("log entry: {e}")))?;
    entry_from_pb(pb)
}

fn entry_from_pb(pb: EntryPb) -> Result<Entry, DecodeError> {
    let log_id = pb
        .log_id
        .as_ref()
        .map(log_id_from_pb)
        .ok_or_else(|| err("log entry: no log id"))?;
    let payload = match pb.payload {
        Some(PayloadPb::Blank(_)) => EntryPayload::Blank,
        Some(PayloadPb::Normal(command)) => EntryPayload::Normal(command_from_pb(command)?),
        Some(PayloadPb::Membership(membership)) => {
            EntryPayload::Membership(membership_from_pb(membership)?)
        }
        None => return Err(err("log entry: no payload (written by a newer version?)")),
    };
    Ok(Entry { log_id, payload })
}

/// Encodes a stored membership (the older applied-state file's form;
/// decoding it is what the migration needs).
#[cfg(test)]
pub(crate) fn encode_stored_membership(membership: &StoredMembership) -> Vec<u8> {
    stored_membership_to_pb(membership).encode_to_vec()
}

fn stored_membership_to_pb(membership: &StoredMembership) -> StoredMembershipPb {
    StoredMembershipPb {
        log_id: membership.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(membership.membership())),
    }
}

/// Decodes a stored membership.
pub(crate) fn decode_stored_membership(bytes: &[u8]) -> Result<StoredMembership, DecodeError> {
    let pb = StoredMembershipPb::decode(bytes).map_err(|e| err(format!("membership: {e}")))?;
    stored_membership_from_pb(pb)
}

fn stored_membership_from_pb(pb: StoredMembershipPb) -> Result<StoredMembership, DecodeError> {
    let membership = membership_from_pb(
        pb.membership
            .ok_or_else(|| err("stored membership: no membership"))?,
    )?;
    Ok(StoredMembership::new(
        pb.log_id.as_ref().map(log_id_from_pb),
        membership,
    ))
}

/// A decoded applied marker.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AppliedMarker {
    /// The last applied log id.
    pub(crate) last_applied: Option<LogId>,
    /// The last applied log id that carried a command.
    pub(crate) last_data: Option<LogId>,
    /// The last applied membership.
    pub(crate) membership: StoredMembership,
    /// The cluster metadata (the default state, with the membership's
    /// members, if the marker has none: written by an older build).
    pub(crate) cluster: ClusterState,
}

/// Encodes the state machine's applied marker: the last applied log id,
/// the last applied log id that carried a command, the membership, and the
/// cluster state as encoded by [`encode_cluster_state`].
pub(crate) fn encode_applied_marker(
    last_applied: Option<&LogId>,
    last_data: Option<&LogId>,
    membership: &StoredMembership,
    cluster: &[u8],
) -> Vec<u8> {
    AppliedMarkerPb {
        last_applied: last_applied.map(log_id_to_pb),
        last_data: last_data.map(log_id_to_pb),
        membership: Some(stored_membership_to_pb(membership)),
        cluster: Some(cluster.to_vec()),
    }
    .encode_to_vec()
}

/// Decodes an applied marker.
pub(crate) fn decode_applied_marker(bytes: &[u8]) -> Result<AppliedMarker, DecodeError> {
    let what = "applied marker";
    let pb = AppliedMarkerPb::decode(bytes).map_err(|e| err(format!("{what}: {e}")))?;
    let membership = pb
        .membership
        .ok_or_else(|| err(format!("{what}: no membership")))?;
    let membership = stored_membership_from_pb(membership)?;
    let members: BTreeSet<NodeId> = membership.membership().nodes().map(|(id, _)| *id).collect();
    let cluster = match pb.cluster {
        None => ClusterState::with_members(members),
        Some(bytes) => decode_cluster_state(&bytes, members)?,
    };
    Ok(AppliedMarker {
        last_applied: pb.last_applied.as_ref().map(log_id_from_pb),
        last_data: pb.last_data.as_ref().map(log_id_from_pb),
        membership,
        cluster,
    })
}

/// Encodes a cluster state, without its members (the marker's membership
/// carries them).
pub(crate) fn encode_cluster_state(state: &ClusterState) -> Vec<u8> {
    ClusterStatePb {
        placements: state
            .history()
            .map(|p| PlacementPb {
                generation: p.generation,
                nodes: p.nodes.iter().copied().collect(),
            })
            .collect(),
        down: state.down().iter().copied().collect(),
        leaving: state.leaving().iter().copied().collect(),
        joining: state.joining().iter().copied().collect(),
        retired: state.retired().iter().copied().collect(),
    }
    .encode_to_vec()
}

/// A strictly ascending id list as a set.
fn id_set(what: &str, ids: Vec<u64>) -> Result<BTreeSet<NodeId>, DecodeError> {
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(err(format!(
            "cluster state: {what} ids are not strictly ascending: {ids:?}"
        )));
    }
    Ok(ids.into_iter().collect())
}

/// Decodes a cluster state whose membership has the ids `members`;
/// refuses one breaking its invariants (unordered or repeated ids, too
/// long a history, generations not increasing, a retired id still marked
/// down, leaving or joining).
pub(crate) fn decode_cluster_state(
    bytes: &[u8],
    members: BTreeSet<NodeId>,
) -> Result<ClusterState, DecodeError> {
    let what = "cluster state";
    let pb = ClusterStatePb::decode(bytes).map_err(|e| err(format!("{what}: {e}")))?;
    if pb.placements.len() > PLACEMENT_HISTORY_MAX {
        return Err(err(format!(
            "{what}: {} placements, over the limit of {PLACEMENT_HISTORY_MAX}",
            pb.placements.len()
        )));
    }
    if pb
        .placements
        .windows(2)
        .any(|w| w[0].generation >= w[1].generation)
    {
        return Err(err(format!(
            "{what}: placement generations are not increasing"
        )));
    }
    let mut placements = VecDeque::with_capacity(pb.placements.len());
    for placement in pb.placements {
        placements.push_back(Placement {
            generation: placement.generation,
            nodes: id_set("placement", placement.nodes)?,
        });
    }
    let down = id_set("down", pb.down)?;
    let leaving = id_set("leaving", pb.leaving)?;
    let joining = id_set("joining", pb.joining)?;
    let retired = id_set("retired", pb.retired)?;
    if let Some(id) = retired
        .iter()
        .find(|id| down.contains(id) || leaving.contains(id) || joining.contains(id))
    {
        return Err(err(format!(
            "{what}: retired node {id} is still marked down, leaving or joining"
        )));
    }
    Ok(ClusterState::from_parts(
        members, placements, down, leaving, joining, retired,
    ))
}

/// Encodes a snapshot's metadata (the header of a snapshot file).
pub(crate) fn encode_snapshot_meta(meta: &SnapshotMeta) -> Vec<u8> {
    SnapshotMetaPb {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_pb),
        last_membership: Some(stored_membership_to_pb(&meta.last_membership)),
    }
    .encode_to_vec()
}

/// Decodes a snapshot's metadata.
pub(crate) fn decode_snapshot_meta(bytes: &[u8]) -> Result<SnapshotMeta, DecodeError> {
    let what = "snapshot meta";
    let pb = SnapshotMetaPb::decode(bytes).map_err(|e| err(format!("{what}: {e}")))?;
    let membership = pb
        .last_membership
        .ok_or_else(|| err(format!("{what}: no membership")))?;
    Ok(SnapshotMeta {
        last_log_id: pb.last_log_id.as_ref().map(log_id_from_pb),
        last_membership: stored_membership_from_pb(membership)?,
    })
}

// ---------------------------------------------------------------------------
// Raft RPCs
// ---------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
struct AppendEntriesRequestPb {
    #[prost(message, optional, tag = "1")]
    vote: Option<VotePb>,
    #[prost(message, optional, tag = "2")]
    prev_log_id: Option<LogIdPb>,
    #[prost(message, repeated, tag = "3")]
    entries: Vec<EntryPb>,
    #[prost(message, optional, tag = "4")]
    leader_commit: Option<LogIdPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AppendEntriesResponsePb {
    #[prost(oneof = "AppendResultPb", tags = "1, 2, 3, 4")]
    result: Option<AppendResultPb>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum AppendResultPb {
    #[prost(message, tag = "1")]
    Success(EmptyPb),
    #[prost(message, tag = "2")]
    PartialSuccess(PartialSuccessPb),
    #[prost(message, tag = "3")]
    Conflict(EmptyPb),
    #[prost(message, tag = "4")]
    HigherVote(VotePb),
}

#[derive(Clone, PartialEq, prost::Message)]
struct EmptyPb {}

#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccessPb {
    #[prost(message, optional, tag = "1")]
    matching: Option<LogIdPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct VoteRequestPb {
    #[prost(message, optional, tag = "1")]
    vote: Option<VotePb>,
    #[prost(message, optional, tag = "2")]
    last_log_id: Option<LogIdPb>,
    #[prost(bool, tag = "3")]
    leadership_transfer: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct VoteResponsePb {
    #[prost(message, optional, tag = "1")]
    vote: Option<VotePb>,
    #[prost(bool, tag = "2")]
    vote_granted: bool,
    #[prost(message, optional, tag = "3")]
    last_log_id: Option<LogIdPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotChunkPb {
    #[prost(message, optional, tag = "1")]
    vote: Option<VotePb>,
    #[prost(uint64, tag = "2")]
    transfer_id: u64,
    #[prost(uint64, tag = "3")]
    offset: u64,
    #[prost(uint64, tag = "4")]
    total_bytes: u64,
    #[prost(bytes = "bytes", tag = "5")]
    data: bytes::Bytes,
    #[prost(message, optional, tag = "6")]
    meta: Option<SnapshotMetaPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotMetaPb {
    #[prost(message, optional, tag = "1")]
    last_log_id: Option<LogIdPb>,
    #[prost(message, optional, tag = "2")]
    last_membership: Option<StoredMembershipPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotAckPb {
    #[prost(uint64, tag = "1")]
    received_bytes: u64,
    #[prost(message, optional, tag = "2")]
    vote: Option<VotePb>,
}

fn required_vote(what: &str, vote: Option<&VotePb>) -> Result<Vote, DecodeError> {
    vote.map(vote_from_pb)
        .ok_or_else(|| err(format!("{what}: no vote")))
}

/// Bytes a length-delimited field of `len` bytes takes in its message:
/// one tag byte (field numbers < 16) and the varint length.
fn field_bytes(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Encodes an AppendEntries request, after `header` (a framing of the
/// caller's, copied as is; empty for a plain request), whose encoding is at
/// most `bytes_max` bytes (the header not counted): all its entries if they
/// fit, else the longest prefix of them that does. Returns the bytes and
/// the number of entries included (0 when not even the first entry fits,
/// or when there are none).
pub(crate) fn encode_append_request_after(
    header: &[u8],
    rpc: &AppendEntriesRequest<TypeConfig>,
    bytes_max: usize,
) -> (Vec<u8>, usize) {
    let mut pb = AppendEntriesRequestPb {
        vote: Some(vote_to_pb(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_pb),
        entries: Vec::new(),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to_pb),
    };
    let mut len = pb.encoded_len();
    for entry in &rpc.entries {
        let entry = entry_to_pb(entry);
        let added = field_bytes(entry.encoded_len());
        if len + added > bytes_max {
            break;
        }
        len += added;
        pb.entries.push(entry);
    }
    let included = pb.entries.len();
    let mut bytes = Vec::with_capacity(header.len() + len);
    bytes.extend_from_slice(header);
    pb.encode(&mut bytes).expect("a Vec grows as needed");
    (bytes, included)
}

/// The largest encoding of an AppendEntries request carrying `command` as
/// its only entry (every id and term at its widest varint).
pub(crate) fn append_request_bytes_max(command: &Command) -> usize {
    let widest = log_id_from_pb(&LogIdPb {
        term: u64::MAX,
        node_id: u64::MAX,
        index: u64::MAX,
    });
    let vote = VotePb {
        term: u64::MAX,
        node_id: u64::MAX,
        committed: true,
    };
    AppendEntriesRequestPb {
        vote: Some(vote),
        prev_log_id: Some(log_id_to_pb(&widest)),
        entries: vec![EntryPb {
            log_id: Some(log_id_to_pb(&widest)),
            payload: Some(PayloadPb::Normal(command_to_pb(command))),
        }],
        leader_commit: Some(log_id_to_pb(&widest)),
    }
    .encoded_len()
}

/// Decodes an AppendEntries request.
pub(crate) fn decode_append_request(
    bytes: &[u8],
) -> Result<AppendEntriesRequest<TypeConfig>, DecodeError> {
    let what = "append-entries request";
    let pb = AppendEntriesRequestPb::decode(bytes).map_err(|e| err(format!("{what}: {e}")))?;
    let entries = pb
        .entries
        .into_iter()
        .map(entry_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: required_vote(what, pb.vote.as_ref())?,
        prev_log_id: pb.prev_log_id.as_ref().map(log_id_from_pb),
        entries,
        leader_commit: pb.leader_commit.as_ref().map(log_id_from_pb),
    })
}

/// Encodes an AppendEntries response.
pub(crate) fn encode_append_response(response: &AppendEntriesResponse<TypeConfig>) -> Vec<u8> {
    let result = match response {
        AppendEntriesResponse::Success => AppendResultPb::Success(EmptyPb {}),
        AppendEntriesResponse::PartialSuccess(matching) => {
            AppendResultPb::PartialSuccess(PartialSuccessPb {
                matching: matching.as_ref().map(log_id_to_pb),
            })
        }
        AppendEntriesResponse::Conflict => AppendResultPb::Conflict(EmptyPb {}),
        AppendEntriesResponse::HigherVote(vote) => AppendResultPb::HigherVote(vote_to_pb(vote)),
    };
    AppendEntriesResponsePb {
        result: Some(result),
    }
    .encode_to_vec()
}

/// Decodes an AppendEntries response.
pub(crate) fn decode_append_response(
    bytes: &[u8],
) -> Result<AppendEntriesResponse<TypeConfig>, DecodeError> {
    let pb = AppendEntriesResponsePb::decode(bytes)
        .map_err(|e| err(format!("append-entries response: {e}")))?;
    Ok(match pb.result {
        Some(AppendResultPb::Success(_)) => AppendEntriesResponse::Success,
        Some(AppendResultPb::PartialSuccess(partial)) => {
            AppendEntriesResponse::PartialSuccess(partial.matching.as_ref().map(log_id_from_pb))
        }
        Some(AppendResultPb::Conflict(_)) => AppendEntriesResponse::Conflict,
        Some(AppendResultPb::HigherVote(vote)) => {
            AppendEntriesResponse::HigherVote(vote_from_pb(&vote))
        }
        None => return Err(err("append-entries response: no result")),
    })
}

/// Encodes a (pre-)vote request.
pub(crate) fn encode_vote_request(rpc: &VoteRequest<TypeConfig>) -> Vec<u8> {
    VoteRequestPb {
        vote: Some(vote_to_pb(&rpc.vote)),
        last_log_id: rpc.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: rpc.leadership_transfer,
    }
    .encode_to_vec()
}

/// Decodes a (pre-)vote request.
pub(crate) fn decode_vote_request(bytes: &[u8]) -> Result<VoteRequest<TypeConfig>, DecodeError> {
    let what = "vote request";
    let pb = VoteRequestPb::decode(bytes).map_err(|e| err(format!("{what}: {e}")))?;
    let mut rpc = VoteRequest::new(
        required_vote(what, pb.vote.as_ref())?,
        pb.last_log_id.as_ref().map(log_id_from_pb),
    );
    rpc.leadership_transfer = pb.leadership_transfer;
    Ok(rpc)
}

/// Encodes a (pre-)vote response.
pub(crate) fn encode_vote_response(response: &VoteResponse<TypeConfig>) -> Vec<u8> {
    VoteResponsePb {
        vote: Some(vote_to_pb(&response.vote)),
        vote_granted: response.vote_granted,
        last_log_id: response.last_log_id.as_ref().map(log_id_to_pb),
    }
    .encode_to_vec()
}

/// Decodes a (pre-)vote response.
pub(crate) fn decode_vote_response(bytes: &[u8]) -> Result<VoteResponse<TypeConfig>, DecodeError> {
    let what = "vote response";
    let pb = VoteResponsePb::decode(bytes).map_err(|e| err(format!("{what}: {e}")))?;
    Ok(VoteResponse::new(
        required_vote(what, pb.vote.as_ref())?,
        pb.last_log_id.as_ref().map(log_id_from_pb),
        pb.vote_granted,
    ))
}

/// One piece of a snapshot transfer (see `network`): bytes
/// `offset..offset + data.len()` of a snapshot of `total_bytes` bytes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SnapshotChunk {
    /// The sending leader's vote.
    pub(crate) vote: Vote,
    /// Identifies one transfer of one sender.
    pub(crate) transfer_id: u64,
    /// Where `data` starts in the snapshot.
    pub(crate) offset: u64,
    /// The whole snapshot's length.
    pub(crate) total_bytes: u64,
    /// This chunk's bytes.
    pub(crate) data: bytes::Bytes,
    /// The snapshot's metadata (carried by every chunk; small).
    pub(crate) meta: SnapshotMeta,
}

/// Encodes a snapshot chunk.
pub(crate) fn encode_snapshot_chunk(chunk: &SnapshotChunk) -> Vec<u8> {
    SnapshotChunkPb {
        vote: Some(vote_to_pb(&chunk.vote)),
        transfer_id: chunk.transfer_id,
        offset: chunk.offset,
        total_bytes: chunk.total_bytes,
        data: chunk.data.clone(),
        meta: Some(SnapshotMetaPb {
            last_log_id: chunk.meta.last_log_id.as_ref().map(log_id_to_pb),
            last_membership: Some(stored_membership_to_pb(&chunk.meta.last_membership)),
        }),
    }
    .encode_to_vec()
}

/// Decodes a snapshot chunk; refuses a chunk reaching past `total_bytes`.
pub(crate) fn decode_snapshot_chunk(bytes: bytes::Bytes) -> Result<SnapshotChunk, DecodeError> {
    let what = "snapshot chunk";
    let pb = SnapshotChunkPb::decode(bytes).map_err(|e| err(format!("{what}: {e}")))?;
    let meta = pb.meta.ok_or_else(|| err(format!("{what}: no metadata")))?;
    let membership = meta
        .last_membership
        .ok_or_else(|| err(format!("{what}: no membership")))?;
    let end = pb.offset.checked_add(pb.data.len() as u64);
    if end.is_none_or(|end| end > pb.total_bytes) {
        return Err(err(format!(
            "{what}: {} bytes at offset {} exceed the snapshot's {} bytes",
            pb.data.len(),
            pb.offset,
            pb.total_bytes
        )));
    }
    Ok(SnapshotChunk {
        vote: required_vote(what, pb.vote.as_ref())?,
        transfer_id: pb.transfer_id,
        offset: pb.offset,
        total_bytes: pb.total_bytes,
        data: pb.data,
        meta: SnapshotMeta {
            last_log_id: meta.last_log_id.as_ref().map(log_id_from_pb),
            last_membership: stored_membership_from_pb(membership)?,
        },
    })
}

/// Encodes a snapshot chunk's acknowledgement: the bytes received so far,
/// and after the last chunk the receiver's vote (openraft's
/// `SnapshotResponse`).
pub(crate) fn encode_snapshot_ack(received_bytes: u64, vote: Option<&Vote>) -> Vec<u8> {
    SnapshotAckPb {
        received_bytes,
        vote: vote.map(vote_to_pb),
    }
    .encode_to_vec()
}

/// Decodes a snapshot chunk's acknowledgement.
pub(crate) fn decode_snapshot_ack(bytes: &[u8]) -> Result<(u64, Option<Vote>), DecodeError> {
    let pb = SnapshotAckPb::decode(bytes).map_err(|e| err(format!("snapshot ack: {e}")))?;
    Ok((pb.received_bytes, pb.vote.as_ref().map(vote_from_pb)))
}

#[cfg(test)]
mod tests {
    use shoal_storage::{EntityKey, Epoch, ShardId};

    use super::*;

    /// A plain AppendEntries request (no header).
    fn encode_append_request(
        rpc: &AppendEntriesRequest<TypeConfig>,
        bytes_max: usize,
    ) -> (Vec<u8>, usize) {
        encode_append_request_after(&[], rpc, bytes_max)
    }

    /// `count` pseudo-random inputs (xorshift from `seed`) of lengths 0, 1,
    /// …, `count - 1`.
    fn random_inputs(mut seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
        (0..count).map(move |len| {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        })
    }

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            openraft::vote::leader_id_adv::LeaderId::new_committed(term, node),
            index,
        )
    }

    #[test]
    fn entries_round_trip() {
        let shard = ShardId::new(3);
        let entity = EntityKey::new(shard, "Counter", "c-1").expect("key");
        let mut batch = WriteBatch::new(shard, Epoch::new(2));
        batch.put_state(&entity, b"state".to_vec());
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([
                (1, BasicNode::new("10.0.0.1:7000")),
                (2, BasicNode::new("10.0.0.2:7000")),
                (3, BasicNode::new("10.0.0.3:7000")),
            ]),
        )
        .expect("membership");
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Command::Batch(batch)),
            EntryPayload::Membership(membership),
        ] {
            let entry = Entry {
                log_id: log_id(4, 1, 9),
                payload,
            };
            let decoded = decode_entry(&encode_entry(&entry)).expect("decodes");
            assert_eq!(decoded, entry);
        }
    }

    #[test]
    fn votes_round_trip() {
        for vote in [Vote::new(7, 3), Vote::new_committed(7, 3)] {
            assert_eq!(decode_vote(&encode_vote(&vote)).expect("decodes"), vote);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let inputs: [&[u8]; 5] = [
            b"",
            b"\xff\xff\xff\xff",
            b"\x0a\x05\x08",
            b"\x1a\x03\x0a\x01\xff",
            b"\x22\x04\x12\x02\x08\x05",
        ];
        for input in inputs {
            // Must not panic; an empty message decodes to an entry without a log id.
            assert!(decode_entry(input).is_err(), "{input:?}");
            let _ = decode_vote(input);
            let _ = decode_command(input);
            let _ = decode_stored_membership(input);
        }
        // A membership whose voter is not among its nodes is refused.
        let bad = MembershipPb {
            configs: vec![VoterSetPb { voters: vec![9] }],
            nodes: vec![],
        };
        assert!(membership_from_pb(bad).is_err());
    }

    #[test]
    fn cluster_commands_round_trip() {
        for command in [
            ClusterCommand::MarkDown(1),
            ClusterCommand::MarkUp(2),
            ClusterCommand::Joining(3),
            ClusterCommand::Joined(u64::MAX),
            ClusterCommand::Leaving(0),
            ClusterCommand::Retire(9),
        ] {
            let command = Command::Cluster(command);
            assert_eq!(
                decode_command(&encode_command(&command)).expect("decodes"),
                command
            );
            let entry = Entry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Normal(command),
            };
            assert_eq!(decode_entry(&encode_entry(&entry)).expect("decodes"), entry);
        }
    }

    #[test]
    fn cluster_garbage_is_an_error_not_a_panic() {
        let members = || BTreeSet::from([1, 2]);
        // A cluster command without a kind; a command whose cluster field
        // is not a message.
        assert!(decode_command(&[0x12, 0x00]).is_err());
        assert!(decode_command(&[0x12, 0x02, 0x08]).is_err());
        assert!(decode_command(&[0x12, 0x01, 0xff]).is_err());
        assert!(decode_cluster_state(b"\xff\xff\xff", members()).is_err());
        assert!(decode_cluster_state(&[0x0a, 0x05, 0x08], members()).is_err());
        let placement = |generation, nodes: Vec<u64>| PlacementPb { generation, nodes };
        let bad_states = [
            // Generations not increasing.
            ClusterStatePb {
                placements: vec![placement(5, vec![1]), placement(5, vec![2])],
                ..ClusterStatePb::default()
            },
            // Unordered / repeated ids.
            ClusterStatePb {
                placements: vec![placement(1, vec![2, 1])],
                ..ClusterStatePb::default()
            },
            ClusterStatePb {
                down: vec![1, 1],
                ..ClusterStatePb::default()
            },
            ClusterStatePb {
                retired: vec![3, 2],
                ..ClusterStatePb::default()
            },
            // A retired id still leaving.
            ClusterStatePb {
                leaving: vec![4],
                retired: vec![4],
                ..ClusterStatePb::default()
            },
            // Too long a history.
            ClusterStatePb {
                placements: (0..=PLACEMENT_HISTORY_MAX as u64)
                    .map(|g| placement(g, vec![1]))
                    .collect(),
                ..ClusterStatePb::default()
            },
        ];
        for bad in bad_states {
            assert!(
                decode_cluster_state(&bad.encode_to_vec(), members()).is_err(),
                "{bad:?}"
            );
        }
        // A marker whose cluster state is garbage is refused.
        let membership = StoredMembership::default();
        let marker = encode_applied_marker(None, None, &membership, b"\x0a\x05\x08");
        assert!(decode_applied_marker(&marker).is_err());
        // Random bytes never panic.
        for bytes in random_inputs(0x2545_f491_4f6c_dd1d, 256) {
            let _ = decode_cluster_state(&bytes, members());
            let _ = decode_applied_marker(&bytes);
            let _ = decode_command(&bytes);
        }
    }

    fn sample_entries() -> Vec<Entry> {
        let shard = ShardId::new(3);
        let entity = EntityKey::new(shard, "Counter", "c-1").expect("key");
        (1..=5)
            .map(|i| {
                let mut batch = WriteBatch::new(shard, Epoch::new(2));
                batch.put_state(&entity, vec![i as u8; 100]);
                Entry {
                    log_id: log_id(2, 1, i),
                    payload: EntryPayload::Normal(Command::Batch(batch)),
                }
            })
            .collect()
    }

    #[test]
    fn rpcs_round_trip() {
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 1, 0)),
            entries: sample_entries(),
            leader_commit: Some(log_id(2, 1, 3)),
        };
        let (bytes, included) = encode_append_request(&append, usize::MAX);
        assert_eq!(included, 5);
        let decoded = decode_append_request(&bytes).expect("decodes");
        assert_eq!(decoded.vote, append.vote);
        assert_eq!(decoded.prev_log_id, append.prev_log_id);
        assert_eq!(decoded.entries, append.entries);
        assert_eq!(decoded.leader_commit, append.leader_commit);

        for response in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(log_id(2, 1, 4))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(5, 2)),
        ] {
            let bytes = encode_append_response(&response);
            assert_eq!(decode_append_response(&bytes).expect("decodes"), response);
        }

        let mut vote = VoteRequest::<TypeConfig>::new(Vote::new(3, 2), Some(log_id(2, 1, 7)));
        vote.leadership_transfer = true;
        assert_eq!(
            decode_vote_request(&encode_vote_request(&vote)).expect("decodes"),
            vote
        );
        let answer = VoteResponse::<TypeConfig>::new(Vote::new(3, 2), Some(log_id(2, 1, 7)), true);
        assert_eq!(
            decode_vote_response(&encode_vote_response(&answer)).expect("decodes"),
            answer
        );

        let membership = StoredMembership::new(
            Some(log_id(1, 1, 0)),
            Membership::new(
                vec![BTreeSet::from([1])],
                BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]),
            )
            .expect("membership"),
        );
        assert_eq!(
            decode_stored_membership(&encode_stored_membership(&membership)).expect("decodes"),
            membership
        );
        let mut cluster = ClusterState::default();
        cluster.apply_membership(0, membership.membership());
        cluster.apply_command(3, &ClusterCommand::Joining(7));
        cluster.apply_command(4, &ClusterCommand::MarkDown(1));
        let marker = encode_applied_marker(
            Some(&log_id(2, 1, 9)),
            Some(&log_id(2, 1, 8)),
            &membership,
            &encode_cluster_state(&cluster),
        );
        let decoded = decode_applied_marker(&marker).expect("decodes");
        assert_eq!(decoded.last_applied, Some(log_id(2, 1, 9)));
        assert_eq!(decoded.last_data, Some(log_id(2, 1, 8)));
        assert_eq!(decoded.membership, membership);
        assert_eq!(decoded.cluster, cluster);
        assert_eq!(decoded.cluster.generation(), 4);
        // An older build's marker (no cluster field): the default state,
        // with the membership's members.
        let old = AppliedMarkerPb {
            last_applied: Some(log_id_to_pb(&log_id(2, 1, 9))),
            last_data: None,
            membership: Some(stored_membership_to_pb(&membership)),
            cluster: None,
        }
        .encode_to_vec();
        let decoded = decode_applied_marker(&old).expect("decodes");
        assert_eq!(
            decoded.cluster,
            ClusterState::with_members(BTreeSet::from([1]))
        );
        assert_eq!(decoded.cluster.generation(), 0);
        assert!(decoded.cluster.placement().is_empty());
        assert!(decode_applied_marker(b"").is_err(), "no membership");
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 1, 7)),
            last_membership: membership.clone(),
        };
        assert_eq!(
            decode_snapshot_meta(&encode_snapshot_meta(&meta)).expect("decodes"),
            meta
        );
        let chunk = SnapshotChunk {
            vote: Vote::new_committed(2, 1),
            transfer_id: 9,
            offset: 4,
            total_bytes: 10,
            data: bytes::Bytes::from_static(b"abcdef"),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 1, 7)),
                last_membership: membership,
            },
        };
        let decoded = decode_snapshot_chunk(encode_snapshot_chunk(&chunk).into()).expect("decodes");
        assert_eq!(decoded, chunk);
        let vote = Vote::new_committed(2, 1);
        assert_eq!(
            decode_snapshot_ack(&encode_snapshot_ack(10, Some(&vote))).expect("decodes"),
            (10, Some(vote))
        );
    }

    #[test]
    fn append_requests_are_cut_to_the_size_limit() {
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 1, 0)),
            entries: sample_entries(),
            leader_commit: None,
        };
        let (all, _) = encode_append_request(&append, usize::MAX);
        for limit in [0, 20, 200, 400, all.len() - 1, all.len()] {
            let (bytes, included) = encode_append_request(&append, limit);
            if included > 0 {
                assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
            }
            let decoded = decode_append_request(&bytes).expect("decodes");
            assert_eq!(decoded.entries, append.entries[..included]);
        }
        assert_eq!(encode_append_request(&append, all.len()).1, 5);
        assert_eq!(encode_append_request(&append, all.len() - 1).1, 4);
    }

    #[test]
    fn the_size_bound_covers_any_single_entry_append() {
        for entry in sample_entries() {
            let EntryPayload::Normal(command) = &entry.payload else {
                continue;
            };
            let bound = append_request_bytes_max(command);
            let append = AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(u64::MAX, u64::MAX),
                prev_log_id: Some(log_id(u64::MAX, u64::MAX, u64::MAX - 1)),
                entries: vec![Entry {
                    log_id: log_id(u64::MAX, u64::MAX, u64::MAX),
                    payload: entry.payload.clone(),
                }],
                leader_commit: Some(log_id(u64::MAX, u64::MAX, u64::MAX)),
            };
            let (bytes, included) = encode_append_request(&append, bound);
            assert_eq!(included, 1);
            assert!(bytes.len() <= bound);
        }
    }

    #[test]
    fn rpc_garbage_is_an_error_not_a_panic() {
        let inputs: [&[u8]; 7] = [
            b"",
            b"\xff\xff\xff\xff",
            b"\x0a\x05\x08",
            b"\x1a\x03\x0a\x01\xff",
            b"\x22\x04\x12\x02\x08\x05",
            b"\x0a\x00\x1a\x02\x0a\x01",
            &[0x80; 32],
        ];
        for input in inputs {
            // Every request needs a vote: all of these fail.
            assert!(decode_append_request(input).is_err(), "{input:?}");
            assert!(decode_vote_request(input).is_err(), "{input:?}");
            let _ = decode_append_response(input);
            let _ = decode_vote_response(input);
            assert!(
                decode_snapshot_chunk(bytes::Bytes::copy_from_slice(input)).is_err(),
                "{input:?}"
            );
            let _ = decode_snapshot_ack(input);
        }
        // A response without a result or a vote is refused.
        assert!(decode_append_response(b"").is_err());
        assert!(decode_vote_response(b"").is_err());
        // A chunk claiming bytes past the snapshot's end is refused.
        let vote = Vote::new_committed(1, 1);
        let chunk = SnapshotChunk {
            vote,
            transfer_id: 1,
            offset: u64::MAX,
            total_bytes: 3,
            data: bytes::Bytes::from_static(b"abc"),
            meta: SnapshotMeta::default(),
        };
        assert!(decode_snapshot_chunk(encode_snapshot_chunk(&chunk).into()).is_err());
        // Random bytes never panic any decoder.
        for bytes in random_inputs(0x9e37_79b9_7f4a_7c15, 512) {
            let _ = decode_append_request(&bytes);
            let _ = decode_append_response(&bytes);
            let _ = decode_vote_request(&bytes);
            let _ = decode_vote_response(&bytes);
            let _ = decode_snapshot_chunk(bytes::Bytes::from(bytes.clone()));
            let _ = decode_snapshot_ack(&bytes);
        }
    }
}
