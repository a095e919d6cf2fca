//! [`Core`]: what a clustered node's runtime consults and calls — shard
//! ownership from the replicated cluster state, the replicated write path,
//! and forwarding to other nodes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use openraft::Instant as _;
use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};
use openraft::rt::watch::WatchReceiver as _;
use prost::Message as _;
use shoal_raft::{ClusterState, Command, CommitWaiters, Raft, RaftService, Rejected, Response};
use shoal_storage::{CommitOutcome, Epoch, ShardId, WriteBatch};
use shoal_transport::{Endpoint, Kind, NodeId, RemoteError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::ClusterConfig;
use super::proto::{
    ForwardReply, ForwardRequest, JoinRequest, LeaveRequest, MembershipReply, ProposeReply,
    WireError, code,
};
use crate::entity::EntityError;
use crate::entity::codec;

/// Request kinds between nodes. Ranges: `0x01xx` Raft (`shoal_raft::network::kind`),
/// `0x02xx` the node API (`crate::server`), `0x03xx` these.
pub(crate) mod kind {
    use shoal_transport::Kind;
    /// An entity operation forwarded to its shard's owner.
    pub(crate) const FORWARD: Kind = Kind(0x0300);
    /// A write batch proposed to the leader.
    pub(crate) const PROPOSE: Kind = Kind(0x0301);
    /// A node asking to join.
    pub(crate) const JOIN: Kind = Kind(0x0302);
    /// A node asking to leave.
    pub(crate) const LEAVE: Kind = Kind(0x0303);
}

/// How long a join (which waits for the new node to catch up) or a leave
/// may take.
pub(crate) const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(120);

/// The first and longest pause between two routing attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(250));

/// A clustered node's view of the cluster and its ways into it.
pub(crate) struct Core {
    pub(crate) me: u64,
    pub(crate) raft: Raft,
    /// The Raft RPC handlers (for when a leader last reached this node).
    pub(crate) service: RaftService,
    pub(crate) state: watch::Receiver<Arc<ClusterState>>,
    /// Taken at shutdown, so the socket closes although the runtime (and
    /// with it this core) may outlive the node by a moment.
    endpoint: std::sync::RwLock<Option<Endpoint>>,
    pub(crate) config: ClusterConfig,
    /// Shard epochs of one cluster state, computed once each (walking the
    /// placement history is not free, and every call and write asks).
    epochs: std::sync::Mutex<EpochCache>,
    /// Whether this node has applied everything committed before it
    /// started serving (see [`Core::serving`]).
    caught_up: AtomicBool,
    /// Serialises the membership changes this node makes as the leader.
    membership_changes: tokio::sync::Mutex<()>,
    /// The nodes waiting, through [`Core::propose_here`], for entries they
    /// forwarded to apply on them: the Raft network sends them each new
    /// commit index at once.
    commit_waiters: CommitWaiters,
}

/// The shard epochs of one cluster state.
type EpochCache = (Arc<ClusterState>, HashMap<ShardId, Option<Epoch>>);

/// The outcome of one routing attempt, for the retry loop.
fn reroutable(error: &EntityError) -> bool {
    matches!(
        error,
        EntityError::NotOwner { .. }
            | EntityError::ClusterUnavailable {
                outcome_unknown: false,
                ..
            }
    )
}

/// An attempt that may or may not have been applied.
fn outcome_unknown(error: &EntityError) -> bool {
    matches!(
        error,
        EntityError::ClusterUnavailable {
            outcome_unknown: true,
            ..
        }
    )
}

fn unavailable(reason: impl Into<String>, outcome_unknown: bool) -> EntityError {
    EntityError::ClusterUnavailable {
        reason: reason.into(),
        outcome_unknown,
    }
}

impl Core {
    pub(crate) fn new(
        me: u64,
        raft: Raft,
        service: RaftService,
        state: watch::Receiver<Arc<ClusterState>>,
        endpoint: Endpoint,
        config: ClusterConfig,
        commit_waiters: CommitWaiters,
    ) -> Self {
        let view = state.borrow().clone();
        Core {
            me,
            raft,
            service,
            state,
            endpoint: std::sync::RwLock::new(Some(endpoint)),
            config,
            epochs: std::sync::Mutex::new((view, HashMap::new())),
            caught_up: AtomicBool::new(false),
            membership_changes: tokio::sync::Mutex::new(()),
            commit_waiters,
        }
    }

    /// The node's transport endpoint, until the node shuts down.
    pub(crate) fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes the endpoint out (at shutdown).
    pub(crate) fn take_endpoint(&self) -> Option<Endpoint> {
        self.endpoint
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The cluster state as last applied here.
    pub(crate) fn view(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// The owner of `shard`, as far as this node knows.
    pub(crate) fn owner(&self, shard: ShardId) -> Option<u64> {
        self.view().owner(shard)
    }

    /// How long this node keeps serving its shards without hearing from
    /// the quorum: the minimum election timeout, well below `down_after`
    /// (after which the leader moves the shards of a silent node).
    pub(crate) fn lease(&self) -> Duration {
        self.config.election_timeout.0
    }

    /// Whether this node is in contact with the quorum and caught up: it
    /// has applied every entry it knows to be committed, and it is a leader
    /// whose majority acknowledged it within the lease, or a follower or
    /// learner that accepted a leader's append or heartbeat within the
    /// lease. A
    /// node cut off from the quorum stops serving its shards when its lease
    /// runs out, before the leader gives them to another node.
    pub(crate) fn serving(&self) -> bool {
        let lease = self.lease();
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leads = metrics.state == ServerState::Leader;
        // Caught up first, once after start: a node restarted after a crash
        // may have lost its last (deferred-durability) applies, which it
        // re-applies from the log only once it learns the commit index from
        // a leader (or, leading, once its first entry commits); until then
        // its storage can lack writes it acknowledged itself. (Afterwards a
        // lag is harmless: only the owner writes its shards, and a shard
        // that moved away and back has a new epoch.)
        if !self.caught_up.load(Ordering::Acquire) {
            let applied = metrics.last_applied.as_ref().map(|id| id.index);
            let committed = metrics
                .local_committed
                .as_ref()
                .max(metrics.cluster_committed.as_ref())
                .map(|id| id.index);
            let informed = if leads {
                metrics
                    .local_committed
                    .as_ref()
                    .is_some_and(|id| id.leader_id.term == metrics.current_term)
            } else {
                self.service.last_leader_contact().is_some()
            };
            if !informed || applied < committed {
                return false;
            }
            self.caught_up.store(true, Ordering::Release);
        }
        if leads {
            let voters = metrics.membership_config.membership().voter_ids().count();
            return voters <= 1
                || metrics
                    .last_quorum_acked
                    .as_ref()
                    .is_some_and(|at| (*at).into_inner().elapsed() < lease);
        }
        metrics.current_leader.is_some()
            && self
                .service
                .last_leader_contact()
                .is_some_and(|at| at.elapsed() < lease)
    }

    /// The epoch this node owns `shard` at, if it owns it (and is in
    /// contact with the quorum: see [`serving`](Self::serving)).
    pub(crate) fn my_epoch(&self, shard: ShardId) -> Option<Epoch> {
        let view = self.view();
        if view.owner(shard) != Some(self.me) || !self.serving() {
            return None;
        }
        let mut epochs = crate::sync::lock(&self.epochs);
        if !Arc::ptr_eq(&epochs.0, &view) {
            *epochs = (view.clone(), HashMap::new());
        }
        *epochs.1.entry(shard).or_insert_with(|| view.epoch(shard))
    }

    /// The current leader, as far as this node knows.
    pub(crate) fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Runs an operation on `shard`'s owner: `local()` here when this node
    /// owns it, `remote(owner)` otherwise, again (on the owner of the
    /// moment) while the attempt fails without having been applied, until
    /// the route timeout.
    ///
    /// `idempotent()`: whether the operation may run twice with one effect
    /// (a read, or a write deduplicated by its request id), so that an
    /// attempt whose outcome is unknown is retried too; asked only then.
    pub(crate) async fn route<T, I, L, LF, R, RF>(
        &self,
        shard: ShardId,
        idempotent: I,
        mut local: L,
        mut remote: R,
    ) -> Result<T, EntityError>
    where
        I: Fn() -> bool,
        L: FnMut() -> LF,
        LF: Future<Output = Result<T, EntityError>>,
        R: FnMut(u64) -> RF,
        RF: Future<Output = Result<T, EntityError>>,
    {
        let deadline = Instant::now() + self.config.route_timeout;
        let mut backoff = BACKOFF.0;
        loop {
            let attempt = match self.owner(shard) {
                Some(owner) if owner == self.me => local().await,
                Some(owner) => remote(owner).await,
                None => Err(unavailable(format!("shard {shard} has no owner"), false)),
            };
            match attempt {
                Err(error)
                    if (reroutable(&error) || (outcome_unknown(&error) && idempotent()))
                        && Instant::now() + backoff < deadline =>
                {
                    tracing::debug!(%shard, %error, "rerouting");
                    let mut changed = self.state.clone();
                    // Wake early when the placement changes (a closed
                    // channel — the node stopping — waits the backoff out).
                    let started = Instant::now();
                    if let Ok(Err(_)) = tokio::time::timeout(backoff, changed.changed()).await {
                        tokio::time::sleep_until(started + backoff).await;
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
                other => return other,
            }
        }
    }

    /// Sends `request` to node `node` and reads its answer; `Ok(None)` for
    /// an outcome still pending.
    pub(crate) async fn forward(
        &self,
        node: u64,
        shard: ShardId,
        request: &ForwardRequest,
        timeout: Duration,
    ) -> Result<Option<Bytes>, EntityError> {
        let payload = Bytes::from(request.encode_to_vec());
        // A crashed owner is noticed by the failure detector well before
        // the connection times out: give up on it once it is marked down
        // or has lost the shard.
        let mut state = self.state.clone();
        let gone = async move {
            loop {
                let moved = {
                    let view = state.borrow_and_update();
                    view.down().contains(&node) || view.owner(shard) != Some(node)
                };
                if moved || state.changed().await.is_err() {
                    return;
                }
            }
        };
        let reply = tokio::select! {
            reply = self.request(node, kind::FORWARD, payload, timeout) => reply?,
            () = gone => {
                return Err(unavailable(
                    format!("node {node} went down or lost shard {shard} during the call"),
                    true,
                ));
            }
        };
        let reply = ForwardReply::decode(reply).map_err(|e| EntityError::Remote {
            node,
            message: format!("malformed forward reply: {e}"),
        })?;
        match (reply.error, reply.pending) {
            (Some(error), _) => Err(from_wire(node, error)),
            (None, true) => Ok(None),
            (None, false) => Ok(Some(reply.ok)),
        }
    }

    /// A request to another node; a failure before the request left is
    /// retryable, one after it is an unknown outcome.
    async fn request(
        &self,
        node: u64,
        kind: Kind,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, EntityError> {
        let endpoint = self.endpoint().ok_or(EntityError::ShuttingDown)?;
        endpoint
            .request_with_timeout(NodeId::new(node), kind, payload, timeout)
            .await
            .map_err(|error| {
                use shoal_transport::Error as T;
                let sent = !matches!(
                    error,
                    T::Connect { .. } | T::UnknownNode(_) | T::MessageTooLarge { .. }
                );
                unavailable(format!("node {node}: {error}"), sent)
            })
    }

    /// Proposes `batch` through Raft and waits until it is applied here.
    pub(crate) async fn commit(&self, batch: WriteBatch) -> Result<CommitOutcome, EntityError> {
        let shard = batch.shard();
        if self.my_epoch(shard) != Some(batch.epoch()) {
            return Err(EntityError::NotOwner { shard: shard.get() });
        }
        let deadline = Instant::now() + self.config.commit_timeout;
        let (index, response) = self.propose(batch, deadline).await?;
        let wait = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "a replicated write applies locally")
            .await
            .map_err(|e| unavailable(format!("not applied locally in time: {e}"), true))?;
        match response {
            Response::Applied(applied) => Ok(applied
                .skipped()
                .filter_map(|(op, reason)| reason.map(|reason| (op, reason)))
                .collect()),
            Response::Rejected(Rejected::StaleEpoch { shard, .. }) => {
                Err(EntityError::NotOwner { shard })
            }
            Response::Rejected(Rejected::Invalid { reason }) => Err(EntityError::Storage(
                Arc::new(shoal_storage::Error::Invalid { reason }),
            )),
            other => Err(unavailable(
                format!("unexpected answer to a write: {other:?}"),
                true,
            )),
        }
    }

    /// Gets `batch` committed by the leader: (its log index, the state
    /// machine's answer).
    async fn propose(
        &self,
        batch: WriteBatch,
        deadline: Instant,
    ) -> Result<(u64, Response), EntityError> {
        let mut backoff = BACKOFF.0;
        let mut encoded: Option<Bytes> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.leader() {
                Some(leader) if leader == self.me => {
                    match tokio::time::timeout(
                        left,
                        self.raft.client_write(Command::Batch(batch.clone())),
                    )
                    .await
                    {
                        Ok(Ok(written)) => return Ok((written.log_id.index, written.data)),
                        // Lost the leadership before appending: not proposed.
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                        Ok(Err(error)) => {
                            return Err(unavailable(format!("raft: {error}"), true));
                        }
                        Err(_) => {
                            return Err(unavailable("the write was not committed in time", true));
                        }
                    }
                }
                Some(leader) => {
                    let payload = encoded
                        .get_or_insert_with(|| Bytes::from(batch.encode()))
                        .clone();
                    match self.request(leader, kind::PROPOSE, payload, left).await {
                        Ok(reply) => {
                            let reply = ProposeReply::decode(reply).map_err(|e| {
                                unavailable(format!("malformed propose reply: {e}"), true)
                            })?;
                            if !reply.not_leader {
                                let response =
                                    codec::decode::<Response>(&reply.response, "raft response")
                                        .map_err(|e| unavailable(e.to_string(), true))?;
                                return Ok((reply.index, response));
                            }
                        }
                        Err(error) if reroutable(&error) => {}
                        Err(error) => return Err(error),
                    }
                }
                None => {}
            }
            if Instant::now() + backoff >= deadline {
                return Err(unavailable("no leader to commit the write", false));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Proposes a batch received from node `from` (this node should be the
    /// leader). `from` answers its caller once the entry applied on it too,
    /// so it gets the new commit index as soon as the entry commits, not
    /// with the next entries.
    ///
    /// Answers `not_leader` only when the batch was not proposed (this node
    /// does not lead), so that `from` may propose it again elsewhere; any
    /// other failure — the proposal may have been appended, or even
    /// committed — is an error, which `from` reports with the outcome
    /// unknown, as [`Core::propose`] does for a local proposal.
    pub(crate) async fn propose_here(
        &self,
        from: u64,
        batch: WriteBatch,
    ) -> Result<ProposeReply, RemoteError> {
        let _waits = self.commit_waiters.wait_on(from);
        match self.raft.client_write(Command::Batch(batch)).await {
            Ok(written) => match codec::encode(&written.data, "raft response") {
                Ok(response) => Ok(ProposeReply {
                    index: written.log_id.index,
                    response,
                    not_leader: false,
                }),
                Err(error) => {
                    tracing::error!(%error, "cannot encode a raft response");
                    Err(RemoteError::application(format!(
                        "the write committed at index {}, but its answer could not be \
                         encoded: {error}",
                        written.log_id.index
                    )))
                }
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                tracing::debug!("forwarded proposal refused: not the leader");
                Ok(ProposeReply {
                    not_leader: true,
                    ..ProposeReply::default()
                })
            }
            Err(error) => Err(RemoteError::application(format!("raft: {error}"))),
        }
    }

    /// Adds node `id` (reachable at `addr`) to the cluster: on the leader
    /// directly, otherwise through it.
    pub(crate) async fn join_here(&self, id: u64, addr: String) -> MembershipReply {
        self.membership_here(
            kind::JOIN,
            JoinRequest {
                node_id: id,
                addr: addr.clone(),
            }
            .encode_to_vec(),
            || async move {
                shoal_raft::membership::join(&self.raft, id, addr)
                    .await
                    .map(|joined| format!("{joined:?}").to_lowercase())
            },
        )
        .await
    }

    /// Moves node `id`'s shards away and removes it from the cluster: on
    /// the leader directly, otherwise through it.
    pub(crate) async fn leave_here(&self, id: u64) -> MembershipReply {
        self.membership_here(
            kind::LEAVE,
            LeaveRequest { node_id: id }.encode_to_vec(),
            || async move {
                shoal_raft::membership::leave(&self.raft, id)
                    .await
                    .map(|()| String::new())
            },
        )
        .await
    }

    async fn membership_here<F, Fut>(
        &self,
        kind: Kind,
        request: Vec<u8>,
        on_leader: F,
    ) -> MembershipReply
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, shoal_raft::Error>>,
    {
        let failed = |error: String| MembershipReply {
            error,
            ..MembershipReply::default()
        };
        match self.leader() {
            // One at a time: each reads the membership, then changes it
            // (two joins at once could both add a voter past the limit).
            Some(leader) if leader == self.me => match async {
                let _one_at_a_time = self.membership_changes.lock().await;
                on_leader().await
            }
            .await
            {
                Ok(joined_as) => MembershipReply {
                    joined_as,
                    ..MembershipReply::default()
                },
                Err(error) => failed(error.to_string()),
            },
            Some(leader) => {
                match self
                    .request(leader, kind, Bytes::from(request), MEMBERSHIP_TIMEOUT)
                    .await
                {
                    Ok(reply) => MembershipReply::decode(reply)
                        .unwrap_or_else(|e| failed(format!("malformed reply: {e}"))),
                    Err(error) => failed(error.to_string()),
                }
            }
            None => MembershipReply {
                error: "no leader".into(),
                not_leader: true,
                ..MembershipReply::default()
            },
        }
    }

    /// The cluster as this node sees it.
    pub(crate) fn status(&self, shard_ids: &[ShardId]) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let view = self.view();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                state: if view.down().contains(id) {
                    MemberState::Down
                } else if view.leaving().contains(id) {
                    MemberState::Leaving
                } else if view.joining().contains(id) {
                    MemberState::Joining
                } else {
                    MemberState::Up
                },
                placed: view.placement().contains(id),
                shards: 0,
            })
            .collect();
        for shard in shard_ids {
            if let Some(owner) = view.owner(*shard)
                && let Some(member) = members.iter_mut().find(|m| m.id == owner)
            {
                member.shards += 1;
            }
        }
        ClusterStatus {
            node: self.me,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_applied: metrics.last_applied.map(|id| id.index),
            generation: view.generation(),
            members,
        }
    }
}

/// A member's state in the cluster ([`MemberStatus::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberState {
    /// Serving its shards.
    Up,
    /// Silent beyond `down_after`: its shards are elsewhere.
    Down,
    /// Catching up before it receives shards.
    Joining,
    /// Leaving: its shards are moving away.
    Leaving,
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Up => "up",
            MemberState::Down => "down",
            MemberState::Joining => "joining",
            MemberState::Leaving => "leaving",
        })
    }
}

/// One member, as [`ClusterStatus`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStatus {
    /// Its node id.
    pub id: u64,
    /// Its address.
    pub addr: String,
    /// Whether it votes (otherwise it is a learner).
    pub voter: bool,
    /// Its state.
    pub state: MemberState,
    /// Whether shards are placed on it (it is up, not joining or leaving).
    pub placed: bool,
    /// How many shards (of the registered types' groups) it owns.
    pub shards: usize,
}

/// The cluster as one node sees it ([`crate::Node::cluster_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// The node reporting.
    pub node: u64,
    /// The leader it follows, if it knows one.
    pub leader: Option<u64>,
    /// Its Raft term.
    pub term: u64,
    /// The last log index it applied.
    pub last_applied: Option<u64>,
    /// The placement generation (the log index of the last change of the
    /// set of shard owners).
    pub generation: u64,
    /// Every member.
    pub members: Vec<MemberStatus>,
}

/// `error` as it travels to the node that forwarded the call.
pub(crate) fn to_wire(error: &EntityError) -> WireError {
    let (code, message, shard, outcome_unknown) = match error {
        EntityError::NotOwner { shard } => (code::NOT_OWNER, String::new(), *shard, false),
        EntityError::ClusterUnavailable {
            reason,
            outcome_unknown,
        } => (
            code::CLUSTER_UNAVAILABLE,
            reason.clone(),
            0,
            *outcome_unknown,
        ),
        EntityError::ShuttingDown => (code::SHUTTING_DOWN, String::new(), 0, false),
        EntityError::DeadLettered { reason } => (code::DEAD_LETTERED, reason.clone(), 0, false),
        EntityError::DeferredAlreadyResolved { entity, name } => (
            code::DEFERRED_RESOLVED,
            format!("{entity}\n{name}"),
            0,
            false,
        ),
        EntityError::Unavailable(entity) => (code::UNAVAILABLE, entity.clone(), 0, false),
        EntityError::UnknownEntityType(name) => (code::UNKNOWN_TYPE, name.clone(), 0, false),
        other => (code::OTHER, other.to_string(), 0, false),
    };
    WireError {
        code,
        message,
        shard,
        outcome_unknown,
    }
}

/// The error `node` answered a forwarded call with.
pub(crate) fn from_wire(node: u64, error: WireError) -> EntityError {
    match error.code {
        code::NOT_OWNER => EntityError::NotOwner { shard: error.shard },
        code::CLUSTER_UNAVAILABLE => unavailable(error.message, error.outcome_unknown),
        // It refused before running anything: another owner may take it.
        code::SHUTTING_DOWN => unavailable(format!("node {node} is shutting down"), false),
        code::DEAD_LETTERED => EntityError::DeadLettered {
            reason: error.message,
        },
        code::DEFERRED_RESOLVED => {
            let (entity, name) = error
                .message
                .split_once('\n')
                .map(|(e, n)| (e.to_owned(), n.to_owned()))
                .unwrap_or((error.message.clone(), String::new()));
            EntityError::DeferredAlreadyResolved { entity, name }
        }
        code::UNAVAILABLE => EntityError::Unavailable(error.message),
        code::UNKNOWN_TYPE => EntityError::UnknownEntityType(error.message),
        _ => EntityError::Remote {
            node,
            message: error.message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_wire() {
        let errors = [
            EntityError::NotOwner { shard: 7 },
            unavailable("no leader", false),
            unavailable("lost", true),
            EntityError::DeadLettered {
                reason: "gave up".into(),
            },
            EntityError::DeferredAlreadyResolved {
                entity: "Order/o-1".into(),
                name: "approval".into(),
            },
            EntityError::Unavailable("Order/o-1".into()),
            EntityError::UnknownEntityType("Nope".into()),
        ];
        for error in errors {
            let back = from_wire(
                3,
                WireError::decode(to_wire(&error).encode_to_vec().as_slice()).unwrap(),
            );
            assert_eq!(back.to_string(), error.to_string());
        }
        // Refusing at shutdown reroutes.
        assert!(reroutable(&from_wire(
            3,
            to_wire(&EntityError::ShuttingDown)
        )));
        // Anything else keeps its message.
        let other = from_wire(3, to_wire(&EntityError::InvalidEntityId("empty".into())));
        assert!(matches!(other, EntityError::Remote { node: 3, .. }));
        assert!(other.to_string().contains("empty"));
    }

    #[test]
    fn garbage_replies_are_errors() {
        // A length running past the end, a bad wire type, a truncated varint.
        for bytes in [&[0x0a_u8, 0x10, 0x01][..], &[0x0f, 0x01], &[0x08, 0xff]] {
            assert!(ForwardReply::decode(bytes).is_err(), "{bytes:?}");
            assert!(ProposeReply::decode(bytes).is_err(), "{bytes:?}");
        }
        assert!(codec::decode::<Response>(&[0xc1, 0x00], "raft response").is_err());
    }
}
