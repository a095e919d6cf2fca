//! The Raft network over `shoal-transport` (QUIC + mutual TLS): the client
//! side ([`Network`], openraft's `RaftNetworkFactory`, and its per-target
//! [`NetworkClient`], a `RaftNetworkV2`) and the server side
//! ([`RaftService`], which registers handlers on a transport `Router` and
//! hands incoming RPCs to the local [`Raft`]).
//!
//! # Wire
//! Every RPC is a transport unary request; payloads are the protobuf
//! messages of `codec` (schema in its docs). The route [`Kind`]s are in
//! [`kind`]:
//! - append-entries and heartbeats: one request, one response, pipelined:
//!   a leader keeps up to 16 requests in flight to a follower, each
//!   carrying its replication session and sequence number, and the
//!   follower hands them to its Raft in that order (see `pipeline` for
//!   the framing and the ordering rules; the plain one-at-a-time kind
//!   `APPEND_ENTRIES` is still served). An append whose encoding would
//!   exceed the transport's `message_bytes_max` carries the longest
//!   prefix of its entries that fits and reports `PartialSuccess` up to
//!   the last one sent (and ends the pipeline: the next request would not
//!   follow on); an entry that does not fit alone can never be replicated
//!   (it is reported as `Unreachable`): proposers must check each command
//!   with [`Network::check_command`] before proposing it;
//! - vote and pre-vote: one request, one response each;
//! - snapshot: the transport has server-streamed replies but no
//!   client-streamed requests, so a snapshot travels as a sequence of
//!   **chunked unary requests** (`SnapshotChunk`, at most
//!   [`NetworkConfig::snapshot_chunk_bytes`] of data each, in order, each
//!   acknowledged with the bytes received so far). The receiver assembles
//!   the chunks of one transfer per sender in memory (bounded by
//!   [`NetworkConfig::snapshot_bytes_max`]) and calls
//!   `Raft::install_full_snapshot` after the last one; its answer carries
//!   the receiver's vote. A chunk out of order, or of another transfer,
//!   drops the partial transfer and fails; the leader starts over from
//!   offset 0. Each chunk is bounded by the RPC's soft TTL; openraft's
//!   `cancel` signal is checked between chunks.
//!
//! # Who may call
//! Only peers that proved a *node* identity of the cluster (a certificate
//! from the cluster CA) are served; CLI client certificates are refused.
//! A request whose vote names another node than the certificate's (a
//! node speaking for another) is refused too.
//!
//! # Errors
//! No transport failure is fatal to Raft. A timeout becomes
//! `RPCError::Timeout`; a connection lost mid-request (or a peer that did
//! not get the whole request in time) becomes `RPCError::Network` (retry
//! soon, on a fresh connection); everything else — the peer cannot be
//! dialed, is shutting down, refuses our identity, answers garbage —
//! becomes `RPCError::Unreachable`, which makes openraft back off.
//!
//! # Addresses
//! Node ids are the transport's `NodeId` numbers. The address of a target
//! is its membership entry's `BasicNode::addr` (a socket address), put in
//! the endpoint's address book whenever openraft creates a client for it;
//! an address that does not parse leaves the address book as the
//! application set it with `Endpoint::add_peer`. TLS proves the target's
//! node id on every connection.
//!
//! This module does not bootstrap clusters (see `bootstrap`) and owns no
//! task: the transport endpoint serves, openraft drives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openraft::BasicNode;
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use shoal_transport::{Endpoint, ErrorCode, Kind, Peer, RemoteError, Request, Router};
use tracing::{debug, warn};

use crate::codec::{self, SnapshotChunk};
use crate::error::{Error, Result};
use crate::pipeline::{self, CommitWaiters};
use crate::types::{Command, NodeId, TypeConfig, Vote};
use crate::{Raft, Snapshot, lock};

/// The transport route [`Kind`]s of the Raft RPCs. Shoal reserves kinds
/// `0x0100..=0x01FF` for `shoal-raft`; numbers are never reused.
pub mod kind {
    use shoal_transport::Kind;

    /// AppendEntries (and heartbeats): `AppendEntriesRequest` →
    /// `AppendEntriesResponse`.
    pub const APPEND_ENTRIES: Kind = Kind(0x0101);
    /// RequestVote: `VoteRequest` → `VoteResponse`.
    pub const VOTE: Kind = Kind(0x0102);
    /// Pre-vote (same messages as [`VOTE`]; nothing is persisted).
    pub const PRE_VOTE: Kind = Kind(0x0103);
    /// One chunk of a snapshot transfer: `SnapshotChunk` → `SnapshotAck`.
    pub const SNAPSHOT_CHUNK: Kind = Kind(0x0104);
    /// A pipelined AppendEntries: `session u64 ‖ seq u64 ‖
    /// AppendEntriesRequest` → `AppendEntriesResponse`.
    pub const APPEND_PIPELINED: Kind = Kind(0x0105);
}

/// Room kept in a snapshot chunk message for everything but its data
/// (vote, ids, the metadata with its membership).
const CHUNK_OVERHEAD_BYTES: usize = 64 * 1024;

/// Limits of the Raft network, client and server side.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkConfig {
    /// Snapshot data bytes per chunk request (default 1 MiB); also capped
    /// by the transport's `message_bytes_max` minus 64 KiB of room for the
    /// chunk's metadata.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot a node accepts, in bytes (default 1 GiB). A node
    /// holds at most one partial transfer per sending node in memory.
    pub snapshot_bytes_max: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_bytes_max: 1024 * 1024 * 1024,
        }
    }
}

impl NetworkConfig {
    /// Checks the limits: both must be positive.
    pub fn validate(self) -> Result<Self> {
        if self.snapshot_chunk_bytes == 0 || self.snapshot_bytes_max == 0 {
            return Err(Error::Config(
                "snapshot_chunk_bytes and snapshot_bytes_max must be positive".into(),
            ));
        }
        Ok(self)
    }
}

/// The client side of the Raft network: openraft's `RaftNetworkFactory`
/// over a transport [`Endpoint`]. Cheap to clone.
///
/// Hand it to `openraft::Raft::new`; the same endpoint must serve a router
/// built with [`RaftService::register`] so that peers can reach this node.
#[derive(Clone)]
pub struct Network {
    endpoint: Endpoint,
    config: NetworkConfig,
    local: NodeId,
    sessions: Arc<pipeline::SessionIds>,
    waiters: CommitWaiters,
}

impl Network {
    /// A network sending from `endpoint`, which must have a node identity
    /// (its id is this Raft node's id).
    pub fn new(endpoint: Endpoint, config: NetworkConfig) -> Result<Self> {
        let config = config.validate()?;
        let local = endpoint.identity().node_id().ok_or_else(|| {
            Error::Config(format!(
                "the Raft network needs a node identity, not {}",
                endpoint.identity()
            ))
        })?;
        Ok(Network {
            endpoint,
            config,
            local: local.get(),
            sessions: Arc::new(pipeline::SessionIds::new()),
            waiters: CommitWaiters::default(),
        })
    }

    /// The followers that callers wait on to apply new commits: while a
    /// node is marked, it gets every new commit index at once; otherwise a
    /// commit-only update waits up to [`COMMIT_HOLD_MAX`](crate::COMMIT_HOLD_MAX)
    /// for the next entries to carry it (see [`CommitWaiters`]). Take it
    /// before handing the network to `Raft::new`.
    pub fn commit_waiters(&self) -> CommitWaiters {
        self.waiters.clone()
    }

    /// Checks that `command` can be replicated: an AppendEntries carrying
    /// it alone must fit in one transport message. Proposers call this
    /// before `Raft::client_write`: an entry that cannot be sent would sit
    /// in the leader's log uncommitted, and every later entry behind it.
    pub fn check_command(&self, command: &Command) -> Result<()> {
        let bytes = codec::append_request_bytes_max(command);
        let max = self.endpoint.config().message_bytes_max();
        if bytes > max {
            return Err(Error::CommandTooLarge { bytes, max });
        }
        Ok(())
    }

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.local
    }

    /// The transport endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NetworkClient {
        match node.addr.parse::<SocketAddr>() {
            Ok(addr) => self
                .endpoint
                .add_peer(shoal_transport::NodeId::new(target), addr),
            Err(error) => warn!(
                target,
                addr = %node.addr,
                %error,
                "membership address of a node is not a socket address; using the address book"
            ),
        }
        NetworkClient {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            local: self.local,
            target,
            sessions: self.sessions.clone(),
            waiters: self.waiters.clone(),
        }
    }
}

/// Sends Raft RPCs to one target node (openraft's `RaftNetworkV2`).
#[derive(Clone)]
pub struct NetworkClient {
    endpoint: Endpoint,
    config: NetworkConfig,
    local: NodeId,
    target: NodeId,
    sessions: Arc<pipeline::SessionIds>,
    waiters: CommitWaiters,
}

/// How a failed call maps onto openraft's error kinds (see module docs).
enum Failure {
    Timeout(Duration),
    Network(NetworkError<TypeConfig>),
    Unreachable(Unreachable<TypeConfig>),
}

fn classify(error: shoal_transport::Error) -> Failure {
    use shoal_transport::Error as E;
    match &error {
        E::Timeout(after) => Failure::Timeout(*after),
        E::ConnectionLost(_) => Failure::Network(NetworkError::new(&error)),
        E::Remote(remote) if remote.code == ErrorCode::Timeout => {
            Failure::Network(NetworkError::new(&error))
        }
        _ => Failure::Unreachable(Unreachable::new(&error)),
    }
}

impl NetworkClient {
    /// The target node's id.
    pub fn target(&self) -> NodeId {
        self.target
    }

    fn timeout(&self, action: RPCTypes, after: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.local,
            target: self.target,
            timeout: after,
        }
    }

    fn rpc_error(&self, action: RPCTypes, error: shoal_transport::Error) -> RPCError<TypeConfig> {
        debug!(target = self.target, %action, %error, "raft rpc failed");
        match classify(error) {
            Failure::Timeout(after) => RPCError::Timeout(self.timeout(action, after)),
            Failure::Network(e) => RPCError::Network(e),
            Failure::Unreachable(e) => RPCError::Unreachable(e),
        }
    }

    fn streaming_error(&self, error: shoal_transport::Error) -> StreamingError<TypeConfig> {
        debug!(target = self.target, %error, "snapshot chunk failed");
        match classify(error) {
            Failure::Timeout(after) => {
                StreamingError::Timeout(self.timeout(RPCTypes::InstallSnapshot, after))
            }
            Failure::Network(e) => StreamingError::Network(e),
            Failure::Unreachable(e) => StreamingError::Unreachable(e),
        }
    }

    fn bad_reply(&self, error: &dyn std::fmt::Display) -> Unreachable<TypeConfig> {
        warn!(target = self.target, %error, "undecodable raft reply");
        Unreachable::from_string(format!("node {} sent a bad reply: {error}", self.target))
    }

    async fn call(
        &self,
        kind: Kind,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> std::result::Result<Bytes, shoal_transport::Error> {
        self.endpoint
            .request_with_timeout(
                shoal_transport::NodeId::new(self.target),
                kind,
                Bytes::from(payload),
                option.soft_ttl(),
            )
            .await
    }

    /// Sends an AppendEntries: plain (`pipelined` is `None`) or as request
    /// `seq` of pipeline `session`. Returns the reply's future — the
    /// response and the last log id sent — and whether the request went
    /// whole: an append whose encoding would exceed the transport's message
    /// limit carries the longest prefix of its entries that fits, and its
    /// `Success` is reported as `PartialSuccess` up to the last one sent.
    fn send_append(
        &self,
        pipelined: Option<(u64, u64)>,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> (AppendReply, bool) {
        let (kind, header) = match pipelined {
            Some((session, seq)) => (kind::APPEND_PIPELINED, Some(pipeline::header(session, seq))),
            None => (kind::APPEND_ENTRIES, None),
        };
        let header: &[u8] = match &header {
            Some(header) => header,
            None => &[],
        };
        let bytes_max = self
            .endpoint
            .config()
            .message_bytes_max()
            .saturating_sub(header.len());
        let (payload, included) = codec::encode_append_request_after(header, &rpc, bytes_max);
        if included == 0
            && let Some(first) = rpc.entries.first()
        {
            let error = format!(
                "log entry {} does not fit in one transport message ({bytes_max} bytes)",
                first.log_id
            );
            warn!(target = self.target, %error, "cannot replicate");
            let failed = RPCError::Unreachable(Unreachable::from_string(error));
            return (Box::pin(std::future::ready(Err(failed))), false);
        }
        let whole = included == rpc.entries.len();
        if !whole {
            debug!(
                target = self.target,
                included,
                entries = rpc.entries.len(),
                bytes_max,
                "append cut to the message limit"
            );
        }
        let sent_last = match included.checked_sub(1) {
            Some(last) => Some(rpc.entries[last].log_id),
            None => rpc.prev_log_id,
        };
        let client = self.clone();
        let option = option.clone();
        let reply = async move {
            let reply = client
                .call(kind, payload, &option)
                .await
                .map_err(|e| client.rpc_error(RPCTypes::AppendEntries, e))?;
            let mut response = codec::decode_append_response(&reply)
                .map_err(|e| RPCError::Unreachable(client.bad_reply(&e)))?;
            if !whole && response == AppendEntriesResponse::Success {
                // Only a prefix was sent: report how far it got.
                response = AppendEntriesResponse::PartialSuccess(sent_last);
            }
            Ok((response, sent_last))
        };
        (Box::pin(reply), whole)
    }

    async fn vote_rpc(
        &self,
        kind: Kind,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let reply = self
            .call(kind, codec::encode_vote_request(&rpc), &option)
            .await
            .map_err(|e| self.rpc_error(RPCTypes::Vote, e))?;
        codec::decode_vote_response(&reply).map_err(|e| RPCError::Unreachable(self.bad_reply(&e)))
    }
}

/// The reply of one AppendEntries: the response and the last log id sent.
type AppendReply = BoxFuture<
    'static,
    std::result::Result<
        (
            AppendEntriesResponse<TypeConfig>,
            Option<crate::types::LogId>,
        ),
        RPCError<TypeConfig>,
    >,
>;

impl RaftNetworkV2<TypeConfig> for NetworkClient {
    type SnapshotData = Bytes;

    /// Pipelined: sends each request as soon as openraft produces it (up
    /// to 16 in flight) and yields the responses in order; ends at the
    /// first failure (see the module docs).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        std::result::Result<
            BoxStream<
                's,
                std::result::Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>,
            >,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        let session = self.sessions.next();
        let client = self.clone();
        let (waiters, target) = (self.waiters.clone(), self.target);
        let pipe = pipeline::Pipe::new(input, move || !waiters.waited_on(target));
        let responses =
            futures::stream::unfold((pipe, client, 0_u64), move |(mut pipe, client, mut seq)| {
                let option = option.clone();
                async move {
                    let next = pipe
                        .next(|rpc| {
                            // Request 0 goes alone, as a plain append.
                            let pipelined = (seq > 0).then_some((session, seq));
                            let prev = rpc.prev_log_id;
                            let (reply, whole) = client.send_append(pipelined, rpc, &option);
                            seq += 1;
                            let reply: pipeline::AppendFuture = Box::pin(async move {
                                let (response, sent_last) = reply.await?;
                                Ok(response.into_stream_result(prev, sent_last))
                            });
                            (reply, whole)
                        })
                        .await?;
                    Some((next, (pipe, client, seq)))
                }
            });
        Box::pin(std::future::ready(Ok(
            Box::pin(responses) as BoxStream<'s, _>
        )))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (reply, _) = self.send_append(None, rpc, &option);
        reply.await.map(|(response, _)| response)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(kind::VOTE, rpc, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(kind::PRE_VOTE, rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> std::result::Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot;
        let total = data.len();
        let chunk_max = self
            .config
            .snapshot_chunk_bytes
            .min(
                self.endpoint
                    .config()
                    .message_bytes_max()
                    .saturating_sub(CHUNK_OVERHEAD_BYTES),
            )
            .max(1);
        let transfer_id = next_transfer_id();
        tokio::pin!(cancel);
        let mut offset = 0;
        loop {
            let end = total.min(offset + chunk_max);
            let chunk = SnapshotChunk {
                vote,
                transfer_id,
                offset: offset as u64,
                total_bytes: total as u64,
                data: data.slice(offset..end),
                meta: snapshot.meta.clone(),
            };
            let payload = codec::encode_snapshot_chunk(&chunk);
            let reply = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                reply = self.call(kind::SNAPSHOT_CHUNK, payload, &option) => reply,
            }
            .map_err(|e| self.streaming_error(e))?;
            let (received, answer) = codec::decode_snapshot_ack(&reply)
                .map_err(|e| StreamingError::Unreachable(self.bad_reply(&e)))?;
            if received != end as u64 {
                return Err(StreamingError::Unreachable(self.bad_reply(&format!(
                    "acknowledged {received} snapshot bytes, {end} were sent"
                ))));
            }
            if end == total {
                return match answer {
                    Some(vote) => Ok(SnapshotResponse::new(vote)),
                    None => Err(StreamingError::Unreachable(
                        self.bad_reply(&"no vote after the last snapshot chunk"),
                    )),
                };
            }
            offset = end;
        }
    }
}

/// A fresh id for a snapshot transfer: distinct within this process, and
/// very likely across restarts (it starts from the clock).
fn next_transfer_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let _ = NEXT.compare_exchange(0, start.max(1), Ordering::AcqRel, Ordering::Acquire);
    NEXT.fetch_add(1, Ordering::AcqRel)
}

/// The server side of the Raft network: transport handlers that decode
/// incoming RPCs and hand them to the local [`Raft`]. Cheap to clone.
///
/// The endpoint must exist before the Raft (the Raft's network sends
/// through it) and its router is fixed at bind time, so the service is
/// created first, registered on the router, and given the Raft handle with
/// [`serve`](Self::serve) once it exists. Until then, and after
/// [`stop`](Self::stop), RPCs are answered with a retryable
/// `ShuttingDown` failure.
///
/// The service holds the Raft handle and the endpoint's router holds the
/// service: call [`stop`](Self::stop) and shut the endpoint down
/// explicitly when the node stops.
#[derive(Clone, Default)]
pub struct RaftService {
    inner: Arc<ServiceInner>,
}

#[derive(Default)]
struct ServiceInner {
    raft: RwLock<Option<Raft>>,
    /// When an append-entries (or heartbeat) from a current leader was
    /// last accepted: what a follower's lease is measured from.
    leader_contact: Mutex<Option<std::time::Instant>>,
    /// One partial snapshot transfer per sending node.
    transfers: Mutex<HashMap<NodeId, Transfer>>,
    /// One pipelined append session per sending node.
    sessions: pipeline::Sessions,
    config: NetworkConfig,
}

struct Transfer {
    id: u64,
    total_bytes: u64,
    data: Vec<u8>,
}

impl RaftService {
    /// A service with no Raft attached yet.
    pub fn new(config: NetworkConfig) -> Result<Self> {
        Ok(RaftService {
            inner: Arc::new(ServiceInner {
                raft: RwLock::new(None),
                leader_contact: Mutex::new(None),
                transfers: Mutex::new(HashMap::new()),
                sessions: pipeline::Sessions::default(),
                config: config.validate()?,
            }),
        })
    }

    /// Registers the Raft RPC handlers (every kind in [`kind`]) on
    /// `router`.
    ///
    /// # Panics
    /// If `router` already has a handler for one of those kinds.
    pub fn register(&self, router: Router) -> Router {
        let append = self.clone();
        let pipelined = self.clone();
        let vote = self.clone();
        let pre_vote = self.clone();
        let snapshot = self.clone();
        router
            .unary(kind::APPEND_ENTRIES, move |req| {
                let service = append.clone();
                async move { service.append_entries(req).await }
            })
            .unary(kind::APPEND_PIPELINED, move |req| {
                let service = pipelined.clone();
                async move { service.append_pipelined(req).await }
            })
            .unary(kind::VOTE, move |req| {
                let service = vote.clone();
                async move { service.vote(req, false).await }
            })
            .unary(kind::PRE_VOTE, move |req| {
                let service = pre_vote.clone();
                async move { service.vote(req, true).await }
            })
            .unary(kind::SNAPSHOT_CHUNK, move |req| {
                let service = snapshot.clone();
                async move { service.snapshot_chunk(req).await }
            })
    }

    /// When this node last accepted an append-entries or heartbeat from a
    /// leader (the instant the request arrived); `None` if never. A
    /// follower that heard nothing for a while may be cut off from the
    /// quorum: the application's leases are measured from this.
    pub fn last_leader_contact(&self) -> Option<std::time::Instant> {
        *lock(&self.inner.leader_contact)
    }

    /// Starts handing incoming RPCs to `raft` (replacing any previous one).
    pub fn serve(&self, raft: Raft) {
        *self
            .inner
            .raft
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(raft);
    }

    /// Stops serving: drops the Raft handle and every partial snapshot;
    /// later RPCs are answered `ShuttingDown`.
    pub fn stop(&self) {
        self.inner
            .raft
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        self.transfers().clear();
        self.inner.sessions.clear();
    }

    fn raft(&self) -> std::result::Result<Raft, RemoteError> {
        self.inner
            .raft
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| RemoteError::new(ErrorCode::ShuttingDown, "raft is not running here"))
    }

    fn transfers(&self) -> MutexGuard<'_, HashMap<NodeId, Transfer>> {
        // Every critical section is a few map operations; a panicking
        // holder leaves at worst a partial transfer, which the sender redoes.
        lock(&self.inner.transfers)
    }

    async fn append_entries(&self, req: Request) -> std::result::Result<Bytes, RemoteError> {
        let sender = sender_node(&req)?;
        let rpc = codec::decode_append_request(&req.payload).map_err(|e| refuse(&req, &e))?;
        check_vote(&req, sender, &rpc.vote)?;
        let sent = std::time::Instant::now();
        let response = self
            .raft()?
            .append_entries(rpc)
            .await
            .map_err(raft_failure)?;
        self.answered_append(&response, sent);
        Ok(Bytes::from(codec::encode_append_response(&response)))
    }

    async fn append_pipelined(&self, req: Request) -> std::result::Result<Bytes, RemoteError> {
        let sender = sender_node(&req)?;
        let (session, seq, rpc) = pipeline::unframe(&req.payload).map_err(|e| refuse(&req, &e))?;
        check_vote(&req, sender, &rpc.vote)?;
        let sent = std::time::Instant::now();
        let raft = self.raft()?;
        let response = self
            .inner
            .sessions
            .append(&raft, sender, session, seq, rpc)
            .await?
            .map_err(raft_failure)?;
        self.answered_append(&response, sent);
        Ok(Bytes::from(codec::encode_append_response(&response)))
    }

    /// Records the leader contact an append answered with `response`
    /// (received at `sent`) proves.
    fn answered_append(
        &self,
        response: &AppendEntriesResponse<TypeConfig>,
        sent: std::time::Instant,
    ) {
        if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
            // The sender leads at a vote this node accepts: contact, as of
            // when the request arrived.
            let mut contact = lock(&self.inner.leader_contact);
            if contact.is_none_or(|at| at < sent) {
                *contact = Some(sent);
            }
        }
    }

    async fn vote(&self, req: Request, pre_vote: bool) -> std::result::Result<Bytes, RemoteError> {
        let sender = sender_node(&req)?;
        let rpc = codec::decode_vote_request(&req.payload).map_err(|e| refuse(&req, &e))?;
        check_vote(&req, sender, &rpc.vote)?;
        let raft = self.raft()?;
        let response = if pre_vote {
            raft.pre_vote(rpc).await
        } else {
            raft.vote(rpc).await
        }
        .map_err(raft_failure)?;
        Ok(Bytes::from(codec::encode_vote_response(&response)))
    }

    async fn snapshot_chunk(&self, req: Request) -> std::result::Result<Bytes, RemoteError> {
        let sender = sender_node(&req)?;
        let chunk =
            codec::decode_snapshot_chunk(req.payload.clone()).map_err(|e| refuse(&req, &e))?;
        check_vote(&req, sender, &chunk.vote)?;
        let limit = self.inner.config.snapshot_bytes_max;
        if chunk.total_bytes > limit {
            return Err(refuse(
                &req,
                &format!(
                    "snapshot of {} bytes exceeds the limit of {limit} bytes",
                    chunk.total_bytes
                ),
            ));
        }
        let complete = {
            let mut transfers = self.transfers();
            if chunk.offset == 0 {
                transfers.insert(
                    sender,
                    Transfer {
                        id: chunk.transfer_id,
                        total_bytes: chunk.total_bytes,
                        data: Vec::new(),
                    },
                );
            }
            let in_order = transfers.get(&sender).is_some_and(|t| {
                t.id == chunk.transfer_id
                    && t.total_bytes == chunk.total_bytes
                    && t.data.len() as u64 == chunk.offset
            });
            if !in_order {
                transfers.remove(&sender);
                return Err(refuse(
                    &req,
                    &format!(
                        "snapshot chunk at offset {} of transfer {} is not the next one; \
                         restart the transfer",
                        chunk.offset, chunk.transfer_id
                    ),
                ));
            }
            let Some(transfer) = transfers.get_mut(&sender) else {
                return Err(refuse(&req, &"snapshot transfer vanished"));
            };
            transfer.data.extend_from_slice(&chunk.data);
            let received = transfer.data.len() as u64;
            if received < transfer.total_bytes {
                return Ok(Bytes::from(codec::encode_snapshot_ack(received, None)));
            }
            transfers
                .remove(&sender)
                .map(|t| t.data)
                .unwrap_or_default()
        };
        let snapshot = Snapshot {
            meta: chunk.meta,
            snapshot: Bytes::from(complete),
        };
        let response = self
            .raft()?
            .install_full_snapshot(chunk.vote, snapshot)
            .await
            .map_err(fatal_failure)?;
        Ok(Bytes::from(codec::encode_snapshot_ack(
            chunk.total_bytes,
            Some(&response.vote),
        )))
    }
}

/// The node that sent `req`, from its certificate; clients are refused.
fn sender_node(req: &Request) -> std::result::Result<NodeId, RemoteError> {
    match &req.peer {
        Peer::Node(node) => Ok(node.get()),
        other => Err(refuse(
            req,
            &format!("raft RPCs are only accepted from cluster nodes, not {other}"),
        )),
    }
}

/// Refuses a request whose vote speaks for another node than its sender.
fn check_vote(req: &Request, sender: NodeId, vote: &Vote) -> std::result::Result<(), RemoteError> {
    let claimed = vote.leader_id.node_id;
    if claimed == sender {
        return Ok(());
    }
    Err(refuse(
        req,
        &format!("node {sender} sent a raft RPC carrying the vote of node {claimed}"),
    ))
}

fn refuse(req: &Request, reason: &dyn std::fmt::Display) -> RemoteError {
    warn!(peer = %req.peer, remote = %req.remote_addr, kind = %req.kind, %reason, "raft RPC refused");
    RemoteError::application(format!("raft RPC refused: {reason}"))
}

fn raft_failure(error: RaftError<TypeConfig>) -> RemoteError {
    match error {
        RaftError::Fatal(fatal) => fatal_failure(fatal),
        other => RemoteError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn fatal_failure(fatal: Fatal<TypeConfig>) -> RemoteError {
    match fatal {
        Fatal::Stopped => RemoteError::new(ErrorCode::ShuttingDown, "raft stopped"),
        other => RemoteError::new(ErrorCode::Internal, format!("raft failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_map_to_retryable_kinds() {
        use shoal_transport::Error as E;
        assert!(matches!(
            classify(E::Timeout(Duration::from_millis(5))),
            Failure::Timeout(_)
        ));
        assert!(matches!(
            classify(E::ConnectionLost("reset".into())),
            Failure::Network(_)
        ));
        assert!(matches!(
            classify(E::Remote(RemoteError::new(ErrorCode::Timeout, "slow"))),
            Failure::Network(_)
        ));
        for error in [
            E::Connect {
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                reason: "no handshake".into(),
            },
            E::UnknownNode(shoal_transport::NodeId::new(3)),
            E::Shutdown,
            E::Remote(RemoteError::new(ErrorCode::ShuttingDown, "bye")),
            E::Remote(RemoteError::application("refused")),
            E::MessageTooLarge { len: 2, max: 1 },
        ] {
            assert!(matches!(classify(error), Failure::Unreachable(_)));
        }
    }

    #[test]
    fn transfer_ids_are_distinct() {
        let a = next_transfer_id();
        let b = next_transfer_id();
        assert_ne!(a, b);
    }

    #[test]
    fn config_is_validated() {
        assert!(NetworkConfig::default().validate().is_ok());
        let zero = NetworkConfig {
            snapshot_chunk_bytes: 0,
            ..NetworkConfig::default()
        };
        assert!(zero.validate().is_err());
    }
}
