//! The protobuf messages nodes exchange for clustering (`shoal.cluster.v1`),
//! declared with prost derives. Schema:
//!
//! ```text
//! message ForwardRequest { uint32 op = 1; string entity_type = 2; string entity_id = 3;
//!                          string handler = 4; bytes params = 5; bytes request_id = 6;
//!                          optional uint64 at_ms = 7; uint32 wait_ms = 8;
//!                          optional string deferred_failure = 9; }
//! message ForwardReply   { bytes ok = 1; WireError error = 2; bool pending = 3; }
//! message WireError      { uint32 code = 1; string message = 2; uint32 shard = 3;
//!                          bool outcome_unknown = 4; }
//! message ProposeReply   { uint64 index = 1; bytes response = 2; bool not_leader = 3; }
//! message JoinRequest    { uint64 node_id = 1; string addr = 2; }
//! message LeaveRequest   { uint64 node_id = 1; }
//! message MembershipReply { string error = 1; bool not_leader = 2; string joined_as = 3; }
//! ```
//!
//! A propose request is the protobuf `WriteBatch` of `shoal-storage`
//! itself; `ProposeReply.response` is the MessagePack form of
//! `shoal_raft::Response`. Fields are only ever added, never renumbered.

/// An entity operation forwarded to the shard's owner.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ForwardRequest {
    /// What to do: one of [`op`].
    #[prost(uint32, tag = "1")]
    pub op: u32,
    /// The entity type's name.
    #[prost(string, tag = "2")]
    pub entity_type: String,
    /// The entity id.
    #[prost(string, tag = "3")]
    pub entity_id: String,
    /// The handler's (or, for a deferred, the deferred's) name.
    #[prost(string, tag = "4")]
    pub handler: String,
    /// MessagePack parameters (or a deferred's success value).
    #[prost(bytes = "bytes", tag = "5")]
    pub params: bytes::Bytes,
    /// The request id, 16 bytes big-endian, or empty for none.
    #[prost(bytes = "bytes", tag = "6")]
    pub request_id: bytes::Bytes,
    /// A persisted send's due time (Unix ms).
    #[prost(uint64, optional, tag = "7")]
    pub at_ms: Option<u64>,
    /// How long an outcome wait may block at the owner.
    #[prost(uint32, tag = "8")]
    pub wait_ms: u32,
    /// A deferred resolved with a failure: its message.
    #[prost(string, optional, tag = "9")]
    pub deferred_failure: Option<String>,
}

/// The operations of a [`ForwardRequest`].
pub(crate) mod op {
    /// A call of a public handler.
    pub(crate) const CALL: u32 = 1;
    /// A persisted send.
    pub(crate) const SEND: u32 = 2;
    /// Resolving a deferred.
    pub(crate) const RESOLVE: u32 = 3;
    /// Waiting (a bounded time) for a persisted message's outcome.
    pub(crate) const OUTCOME: u32 = 4;
}

/// The answer to a [`ForwardRequest`]: `ok`, an `error`, or (for an
/// outcome wait) `pending`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ForwardReply {
    /// The operation's MessagePack answer.
    #[prost(bytes = "bytes", tag = "1")]
    pub ok: bytes::Bytes,
    /// Its error, if it failed.
    #[prost(message, optional, tag = "2")]
    pub error: Option<WireError>,
    /// The outcome is not there yet.
    #[prost(bool, tag = "3")]
    pub pending: bool,
}

/// An [`crate::entity::EntityError`] on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WireError {
    /// Which error: one of [`code`].
    #[prost(uint32, tag = "1")]
    pub code: u32,
    /// Its message (the variant's payload where it has one).
    #[prost(string, tag = "2")]
    pub message: String,
    /// The shard, for `NOT_OWNER`.
    #[prost(uint32, tag = "3")]
    pub shard: u32,
    /// For `CLUSTER_UNAVAILABLE`: the write may have been applied.
    #[prost(bool, tag = "4")]
    pub outcome_unknown: bool,
}

/// The codes of a [`WireError`]; anything else is `OTHER`.
pub(crate) mod code {
    /// Any other error: only its message travels.
    pub(crate) const OTHER: u32 = 0;
    /// `EntityError::NotOwner`.
    pub(crate) const NOT_OWNER: u32 = 1;
    /// `EntityError::ClusterUnavailable`.
    pub(crate) const CLUSTER_UNAVAILABLE: u32 = 2;
    /// `EntityError::ShuttingDown`.
    pub(crate) const SHUTTING_DOWN: u32 = 3;
    /// `EntityError::DeadLettered`.
    pub(crate) const DEAD_LETTERED: u32 = 4;
    /// `EntityError::DeferredAlreadyResolved` (message: the deferred).
    pub(crate) const DEFERRED_RESOLVED: u32 = 5;
    /// `EntityError::Unavailable`.
    pub(crate) const UNAVAILABLE: u32 = 6;
    /// `EntityError::UnknownEntityType`.
    pub(crate) const UNKNOWN_TYPE: u32 = 7;
}

/// The answer to a propose request.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProposeReply {
    /// The log index the batch was committed at.
    #[prost(uint64, tag = "1")]
    pub index: u64,
    /// The state machine's `Response`, in MessagePack.
    #[prost(bytes = "bytes", tag = "2")]
    pub response: bytes::Bytes,
    /// The receiver is not the leader: nothing was proposed.
    #[prost(bool, tag = "3")]
    pub not_leader: bool,
}

/// A node asking to join.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct JoinRequest {
    /// Its id.
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
    /// The address the others reach it at.
    #[prost(string, tag = "2")]
    pub addr: String,
}

/// A node asking to leave (or to be removed).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaveRequest {
    /// Its id.
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
}

/// The answer to a join or leave request.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MembershipReply {
    /// Why it failed (empty: it succeeded).
    #[prost(string, tag = "1")]
    pub error: String,
    /// The receiver is not the leader: nothing was done.
    #[prost(bool, tag = "2")]
    pub not_leader: bool,
    /// For a join: `voter` or `learner`.
    #[prost(string, tag = "3")]
    pub joined_as: String,
}
