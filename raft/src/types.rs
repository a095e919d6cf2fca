//! The openraft type configuration ([`TypeConfig`]) and what the replicated
//! log carries: [`Command`]s in, [`Response`]s out.
//!
//! Node ids are plain `u64` (openraft's default), the same number that
//! `shoal_transport::NodeId` wraps: this crate does not depend on the
//! transport yet, so the conversion happens where the Raft network is wired.
//! A node's info is [`openraft::BasicNode`]: its address string.
//!
//! Invariant: a [`Command`]'s canonical form is its protobuf encoding
//! (`codec`); its serde form (openraft's `serde` feature requires one) is
//! exactly those bytes, so there is one format to keep compatible.

use std::fmt;

use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, StoredMembershipOf, VoteOf};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_storage::{OpIndex, SkipReason, WriteBatch};

openraft::declare_raft_types!(
    /// Shoal's openraft type configuration: `u64` node ids, [`openraft::BasicNode`]
    /// (an address) as node info, [`Command`] in the log, [`Response`] out
    /// of the state machine, tokio runtime.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A Raft node id.
pub type NodeId = u64;
/// A log id (leader term and node, index).
pub type LogId = LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = EntryOf<TypeConfig>;
/// A membership config with the log id it was written at.
pub type StoredMembership = StoredMembershipOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

/// What a normal log entry carries: one replicated write.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// A storage write batch, applied to the node's storage backend exactly
    /// as `Storage::commit` would apply it locally.
    Batch(WriteBatch),
    /// A change of the replicated cluster metadata
    /// ([`ClusterState`](crate::ClusterState)); answered `Response::Empty`,
    /// or `Response::Rejected(Rejected::Invalid { .. })` when the state
    /// does not allow it (the same on every replica).
    Cluster(ClusterCommand),
}

/// A change of the cluster metadata ([`ClusterState`](crate::ClusterState)),
/// replicated as [`Command::Cluster`]. See [`crate::membership`] for the
/// operations that commit them in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClusterCommand {
    /// A failure detector found the member unreachable: it owns no shards
    /// until marked up. Refused for a non-member.
    MarkDown(NodeId),
    /// The member is reachable again. Refused for a non-member.
    MarkUp(NodeId),
    /// The id is being added (it will catch up as a learner first): it owns
    /// no shards until `Joined`. Refused for a retired id or a member that
    /// is not joining.
    Joining(NodeId),
    /// The member has caught up and takes shards. Refused for a non-member.
    Joined(NodeId),
    /// The member is leaving: its shards move away before it is removed.
    /// Refused for a non-member.
    Leaving(NodeId),
    /// The id left or was removed and is never accepted again (also clears
    /// its down, leaving and joining marks). Refused for a current member.
    Retire(NodeId),
}

impl ClusterCommand {
    /// The node the command is about.
    pub fn node(&self) -> NodeId {
        match *self {
            ClusterCommand::MarkDown(id)
            | ClusterCommand::MarkUp(id)
            | ClusterCommand::Joining(id)
            | ClusterCommand::Joined(id)
            | ClusterCommand::Leaving(id)
            | ClusterCommand::Retire(id) => id,
        }
    }
}

impl fmt::Display for ClusterCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ClusterCommand::MarkDown(_) => "mark-down",
            ClusterCommand::MarkUp(_) => "mark-up",
            ClusterCommand::Joining(_) => "joining",
            ClusterCommand::Joined(_) => "joined",
            ClusterCommand::Leaving(_) => "leaving",
            ClusterCommand::Retire(_) => "retire",
        };
        write!(f, "{name}({})", self.node())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Batch(batch) => write!(
                f,
                "batch(shard {}, epoch {}, {} ops)",
                batch.shard().get(),
                batch.epoch().get(),
                batch.len()
            ),
            Command::Cluster(command) => write!(f, "cluster {command}"),
        }
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&crate::codec::encode_command(self))
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the protobuf encoding of a shoal raft command")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(bytes)
            }
        }
        let bytes = deserializer.deserialize_bytes(BytesVisitor)?;
        crate::codec::decode_command(&bytes).map_err(serde::de::Error::custom)
    }
}

/// What applying one log entry produced, handed back to the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// The entry carried no command (a leader's blank entry, a membership
    /// change).
    #[default]
    Empty,
    /// The batch was applied; the listed ops were skipped (see
    /// [`Applied::skip_reason`]).
    Applied(Applied),
    /// The batch was refused as a whole and applied nothing, on every node
    /// alike (the refusal is deterministic).
    Rejected(Rejected),
}

/// A batch that applied: which ops were skipped, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// (op index, [`skip_code`] of the reason).
    skipped: Vec<(u32, u8)>,
}

impl Applied {
    pub(crate) fn from_outcome(outcome: &shoal_storage::CommitOutcome) -> Self {
        Applied {
            skipped: outcome
                .skipped()
                .iter()
                .map(|skipped| (skipped.op.get(), skip_code(skipped.reason)))
                .collect(),
        }
    }

    /// Whether every op had its effect.
    pub fn applied_all(&self) -> bool {
        self.skipped.is_empty()
    }

    /// The skipped ops and why, in op order. A reason this build does not
    /// know (from a newer node) is reported as `None`.
    pub fn skipped(&self) -> impl Iterator<Item = (OpIndex, Option<SkipReason>)> + '_ {
        self.skipped
            .iter()
            .map(|&(op, code)| (OpIndex::new(op), skip_reason(code)))
    }

    /// Why op `op` was skipped; `None` if it applied (or the reason is
    /// unknown to this build).
    pub fn skip_reason(&self, op: OpIndex) -> Option<SkipReason> {
        self.skipped
            .iter()
            .find(|&&(index, _)| index == op.get())
            .and_then(|&(_, code)| skip_reason(code))
    }
}

/// Why a command applied nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rejected {
    /// Fenced: the batch's epoch is not the shard's current epoch in the
    /// replicated [`ClusterState`](crate::ClusterState) (or the shard has
    /// no owner: `current` is then 0), or is older than the epoch the
    /// storage backend holds for the shard.
    StaleEpoch {
        /// The shard.
        shard: u32,
        /// The batch's epoch.
        batch: u64,
        /// The shard's current epoch.
        current: u64,
    },
    /// The batch breaks a storage rule (`WriteBatch::validate`), or a
    /// cluster command is not allowed in the current cluster state.
    Invalid {
        /// The storage layer's explanation.
        reason: String,
    },
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::StaleEpoch {
                shard,
                batch,
                current,
            } => write!(
                f,
                "stale epoch: shard {shard} is at epoch {current}, the batch carries {batch}"
            ),
            Rejected::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

/// A stable code per [`SkipReason`] (0 = a reason this build does not know).
fn skip_code(reason: SkipReason) -> u8 {
    match reason {
        SkipReason::JournalStepExists => 1,
        SkipReason::MessagePending => 2,
        SkipReason::MessageReplied => 3,
        SkipReason::MessageDeadLettered => 4,
        SkipReason::MessageNotFound => 5,
        SkipReason::ReplyExists => 6,
        SkipReason::DeadLetterNotFound => 7,
        SkipReason::DeferredResolved => 8,
        _ => 0,
    }
}

fn skip_reason(code: u8) -> Option<SkipReason> {
    Some(match code {
        1 => SkipReason::JournalStepExists,
        2 => SkipReason::MessagePending,
        3 => SkipReason::MessageReplied,
        4 => SkipReason::MessageDeadLettered,
        5 => SkipReason::MessageNotFound,
        6 => SkipReason::ReplyExists,
        7 => SkipReason::DeadLetterNotFound,
        8 => SkipReason::DeferredResolved,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_codes_round_trip() {
        for code in 1..=8u8 {
            let reason = skip_reason(code).expect("known code");
            assert_eq!(skip_code(reason), code);
        }
        assert_eq!(skip_reason(0), None);
        assert_eq!(skip_reason(200), None);
    }
}
