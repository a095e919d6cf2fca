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
//! message Command { oneof kind { bytes batch = 1; } }   // batch: shoal.storage.v1.WriteBatch bytes
//! message Membership { repeated VoterSet configs = 1; repeated Node nodes = 2; }
//! message VoterSet   { repeated uint64 voters = 1; }
//! message Node       { uint64 id = 1; string addr = 2; }
//! message StoredMembership { LogId log_id = 1; Membership membership = 2; }
//! message SnapshotData     { uint32 format_version = 1; LogId last_data_log_id = 2; }
//! ```
//!
//! Invariant: fields are only ever added, never renumbered. Decoding never
//! panics: missing required parts, a membership whose voters are not among
//! its nodes, or an undecodable write batch are [`DecodeError`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use openraft::vote::{RaftLeaderId, RaftLeaderIdExt, RaftVote};
use openraft::{BasicNode, EntryPayload, Membership};
use prost::Message as _;
use shoal_storage::WriteBatch;

use crate::types::{Command, Entry, LogId, NodeId, StoredMembership, Vote};

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
    #[prost(oneof = "CommandKindPb", tags = "1")]
    kind: Option<CommandKindPb>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum CommandKindPb {
    #[prost(bytes = "vec", tag = "1")]
    Batch(Vec<u8>),
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
struct SnapshotDataPb {
    #[prost(uint32, tag = "1")]
    format_version: u32,
    #[prost(message, optional, tag = "2")]
    last_data_log_id: Option<LogIdPb>,
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
    VotePb {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
    .encode_to_vec()
}

/// Decodes a vote.
pub(crate) fn decode_vote(bytes: &[u8]) -> Result<Vote, DecodeError> {
    let pb = VotePb::decode(bytes).map_err(|e| err(format!("vote: {e}")))?;
    Ok(Vote::from_leader_id(
        openraft::vote::leader_id_adv::LeaderId::new(pb.term, pb.node_id),
        pb.committed,
    ))
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
        None => Err(err("command: no kind (written by a newer version?)")),
    }
}

/// Encodes a log entry.
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    let payload = match &entry.payload {
        EntryPayload::Blank => PayloadPb::Blank(BlankPb {}),
        EntryPayload::Normal(command) => PayloadPb::Normal(command_to_pb(command)),
        EntryPayload::Membership(membership) => PayloadPb::Membership(membership_to_pb(membership)),
    };
    EntryPb {
        log_id: Some(log_id_to_pb(&entry.log_id)),
        payload: Some(payload),
    }
    .encode_to_vec()
}

/// Decodes a log entry.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let pb = EntryPb::decode(bytes).map_err(|e| err(format!("log entry: {e}")))?;
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

/// Encodes a stored membership.
pub(crate) fn encode_stored_membership(membership: &StoredMembership) -> Vec<u8> {
    StoredMembershipPb {
        log_id: membership.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(membership.membership())),
    }
    .encode_to_vec()
}

/// Decodes a stored membership.
pub(crate) fn decode_stored_membership(bytes: &[u8]) -> Result<StoredMembership, DecodeError> {
    let pb = StoredMembershipPb::decode(bytes).map_err(|e| err(format!("membership: {e}")))?;
    let membership = membership_from_pb(
        pb.membership
            .ok_or_else(|| err("stored membership: no membership"))?,
    )?;
    Ok(StoredMembership::new(
        pb.log_id.as_ref().map(log_id_from_pb),
        membership,
    ))
}

/// Encodes a snapshot's data: its format version and the log id of the
/// last data-carrying entry it covers.
pub(crate) fn encode_snapshot_data(format_version: u32, last_data: Option<&LogId>) -> Vec<u8> {
    SnapshotDataPb {
        format_version,
        last_data_log_id: last_data.map(log_id_to_pb),
    }
    .encode_to_vec()
}

/// Decodes a snapshot's data into (format version, last data log id).
pub(crate) fn decode_snapshot_data(bytes: &[u8]) -> Result<(u32, Option<LogId>), DecodeError> {
    let pb = SnapshotDataPb::decode(bytes).map_err(|e| err(format!("snapshot: {e}")))?;
    Ok((
        pb.format_version,
        pb.last_data_log_id.as_ref().map(log_id_from_pb),
    ))
}

#[cfg(test)]
mod tests {
    use shoal_storage::{EntityKey, Epoch, ShardId};

    use super::*;

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
}
