//! The protobuf messages of the node API (`shoal.api.v1`), declared with
//! prost derives. Schema:
//!
//! ```text
//! message CallRequest { string entity_type = 1; string entity_id = 2; string handler = 3; bytes params = 4; }
//! message StatusReply { uint64 node_id = 1; string cluster = 2; repeated string entity_types = 3;
//!                       uint64 active_entities = 4; uint32 shards_per_group = 5; string data_file = 6;
//!                       repeated string singletons = 7;
//!                       // Cluster mode (all unset on a single node):
//!                       bool clustered = 8; optional uint64 leader = 9; uint64 term = 10;
//!                       optional uint64 last_applied = 11; uint64 generation = 12;
//!                       repeated Member members = 13; }
//! message Member      { uint64 id = 1; string addr = 2; bool voter = 3; string state = 4;
//!                       uint64 shards = 5; }
//! ```
//!
//! Fields are only ever added, never renumbered.

/// A call to an entity handler by name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CallRequest {
    /// The entity type's name.
    #[prost(string, tag = "1")]
    pub entity_type: String,
    /// The entity id.
    #[prost(string, tag = "2")]
    pub entity_id: String,
    /// The handler's name.
    #[prost(string, tag = "3")]
    pub handler: String,
    /// MessagePack parameters.
    #[prost(bytes = "bytes", tag = "4")]
    pub params: bytes::Bytes,
}

/// A node's status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusReply {
    /// The node's id.
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
    /// The cluster's name (from its CA).
    #[prost(string, tag = "2")]
    pub cluster: String,
    /// Registered entity types.
    #[prost(string, repeated, tag = "3")]
    pub entity_types: Vec<String>,
    /// Entities in memory.
    #[prost(uint64, tag = "4")]
    pub active_entities: u64,
    /// Shards per shard group.
    #[prost(uint32, tag = "5")]
    pub shards_per_group: u32,
    /// The data file, if any.
    #[prost(string, tag = "6")]
    pub data_file: String,
    /// Singletons running on the node.
    #[prost(string, repeated, tag = "7")]
    pub singletons: Vec<String>,
    /// Whether the node runs in a cluster (the fields below are set only then).
    #[prost(bool, tag = "8")]
    pub clustered: bool,
    /// The leader the node follows, if it knows one.
    #[prost(uint64, optional, tag = "9")]
    pub leader: Option<u64>,
    /// The node's Raft term.
    #[prost(uint64, tag = "10")]
    pub term: u64,
    /// The last log index the node applied.
    #[prost(uint64, optional, tag = "11")]
    pub last_applied: Option<u64>,
    /// The placement generation (log index of the last change of owners).
    #[prost(uint64, tag = "12")]
    pub generation: u64,
    /// Every member of the cluster, as this node sees it.
    #[prost(message, repeated, tag = "13")]
    pub members: Vec<Member>,
}

/// A cluster member in a [`StatusReply`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Member {
    /// Its node id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The address the others reach it at.
    #[prost(string, tag = "2")]
    pub addr: String,
    /// A voter (otherwise a learner).
    #[prost(bool, tag = "3")]
    pub voter: bool,
    /// `up`, `down`, `joining` or `leaving`.
    #[prost(string, tag = "4")]
    pub state: String,
    /// How many shards it owns (over the registered types' shard groups).
    #[prost(uint64, tag = "5")]
    pub shards: u64,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = CallRequest::decode(&bytes[..]);
            let _ = StatusReply::decode(&bytes[..]);
        }
        assert!(
            CallRequest::decode(&[0x0a, 0x05, b'a'][..]).is_err(),
            "truncated"
        );
        let request = CallRequest {
            entity_type: "shoal.Kv".into(),
            entity_id: "k".into(),
            handler: "get".into(),
            params: bytes::Bytes::from_static(b"\xc0"),
        };
        assert_eq!(
            CallRequest::decode(&request.encode_to_vec()[..]).unwrap(),
            request
        );
    }
}
