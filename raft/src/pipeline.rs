//! Pipelined AppendEntries: up to [`IN_FLIGHT_MAX`] requests in flight to
//! one follower, handed to the follower's Raft in the order the leader
//! sent them.
//!
//! openraft replicates to a follower through a *stream* of AppendEntries
//! requests (`RaftNetworkV2::stream_append`, one call per replication
//! session). Sent one at a time, a new entry waits for the previous
//! round trip — often a commit-index-only request sent just before — so
//! [`NetworkClient`](crate::NetworkClient) sends the next request as soon
//! as openraft produces it and yields the responses in request order.
//!
//! # Wire
//! A session is one `stream_append` call of the leader; `seq` numbers its
//! requests from 0. Request 0 is a plain `APPEND_ENTRIES` and goes alone:
//! a heartbeat (a stream of one request) never opens a session on the
//! follower, and a replication stream pipelines only once its first
//! request succeeded. Requests 1, 2, … are kind
//! [`APPEND_PIPELINED`](crate::network::kind::APPEND_PIPELINED): a unary
//! request whose payload is `session u64 BE ‖ seq u64 BE ‖
//! AppendEntriesRequest` (the protobuf of `APPEND_ENTRIES`), answered with
//! an `AppendEntriesResponse`. Session ids only grow for one sender (they
//! start at its clock, in nanoseconds, when its network was created).
//!
//! # Order on the follower
//! Each unary request is its own QUIC stream, and the streams of one
//! connection are handled concurrently, so they may reach the handler out
//! of order. The follower keeps one [`Session`] per sending node: requests
//! wait (at most [`EARLY_MAX`] of them, for at most [`ORDER_WAIT_MAX`])
//! until every earlier `seq` of their session has been handed on, and are
//! then handed to the local Raft in order ([`submit`]); each handler awaits
//! its own request's response, with no task in between. A newer session of
//! the sender replaces the current one (its waiting requests fail); an
//! older one is refused, unless the current one has been idle for
//! [`STALE_AFTER`] (a sender that restarted with a clock behind its
//! previous run).
//!
//! A failure is a retryable transport error on the leader's side (a
//! `RemoteError` with code `Timeout`, mapped to `RPCError::Network`), and
//! ends the leader's stream at the first failed request; openraft then
//! starts a new session from what the follower acknowledged.
//!
//! # Commit-only requests wait for the next entries
//! When the leader commits an entry and has no newer one to send, openraft
//! tells each follower the new commit index with a request of its own,
//! without entries. The next request with entries carries the commit index
//! as well, and a follower only needs it to apply (its own state machine),
//! so the pipe holds such a request back, for at most [`COMMIT_HOLD_MAX`]:
//! a newer request replaces it (it carries the same or a later commit
//! index, from the same position in the log), otherwise it goes when the
//! time is up (or when the stream ends). That keeps a follower's apply,
//! and two RPCs per follower, out of the moment the leader applies the
//! entry and answers its client — with one client writing in a loop, the
//! next entry is always sent within the hold. A follower that someone
//! waits on to apply a commit — a node that forwarded a proposal to the
//! leader and answers its own caller once it applied it locally — is
//! marked in [`CommitWaiters`] for that time, and gets every commit-only
//! request at once. A held request that is replaced is never sent and gets
//! no response; openraft does not need one per request: a response
//! acknowledges every request up to the log id it matched.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use openraft::base::BoxFuture;
use openraft::error::{RPCError, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};
use shoal_transport::{ErrorCode, RemoteError};
use tokio::sync::oneshot;

use crate::codec::{self, DecodeError};
use crate::types::{NodeId, TypeConfig};
use crate::{Raft, lock};

/// Most AppendEntries one leader keeps in flight to one follower.
pub(crate) const IN_FLIGHT_MAX: usize = 16;

/// Most requests of one session a follower holds while an earlier one has
/// not arrived.
pub(crate) const EARLY_MAX: u64 = 64;

/// How long a follower keeps a session nobody sends to before an older
/// session id of the same sender may replace it.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(2);

/// The longest a request waits on the follower for the requests before it
/// (which may never arrive: the connection that carried them died).
const ORDER_WAIT_MAX: Duration = Duration::from_secs(10);

/// Bytes before the request: session and sequence number.
pub(crate) const HEADER_BYTES: usize = 16;

/// The longest the leader holds a commit-only request back (see the module
/// docs).
pub const COMMIT_HOLD_MAX: Duration = Duration::from_millis(1);

/// The followers that some caller waits on to apply new commits: they get
/// every commit index at once, not only with the next entries (see the
/// module docs, "Commit-only requests wait for the next entries").
///
/// Get it from [`Network::commit_waiters`](crate::Network::commit_waiters)
/// before the network goes to `Raft::new`, and hold a [`CommitWait`] while
/// a node waits for an entry it proposed through this leader to apply on
/// it.
///
/// ```
/// let waiters = shoal_raft::CommitWaiters::default();
/// let wait = waiters.wait_on(2);
/// assert!(waiters.waited_on(2));
/// assert!(!waiters.waited_on(3));
/// drop(wait);
/// assert!(!waiters.waited_on(2));
/// ```
#[derive(Clone, Debug, Default)]
pub struct CommitWaiters(Arc<Mutex<HashMap<NodeId, usize>>>);

impl CommitWaiters {
    /// Marks `node` as waited on until the returned guard is dropped.
    pub fn wait_on(&self, node: NodeId) -> CommitWait {
        *lock(&self.0).entry(node).or_default() += 1;
        CommitWait {
            waiters: self.clone(),
            node,
        }
    }

    /// Whether someone waits on `node` to apply new commits.
    pub fn waited_on(&self, node: NodeId) -> bool {
        lock(&self.0).contains_key(&node)
    }
}

/// A caller waiting on a node to apply new commits (see
/// [`CommitWaiters::wait_on`]); dropping it ends the wait.
#[derive(Debug)]
#[must_use = "the wait ends when the guard is dropped"]
pub struct CommitWait {
    waiters: CommitWaiters,
    node: NodeId,
}

impl Drop for CommitWait {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiters.0);
        if let Some(count) = waiting.get_mut(&self.node) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.node);
            }
        }
    }
}

/// Mints session ids: increasing for this process, and starting at the
/// clock so that a restarted node's sessions are newer than its last run's.
#[derive(Debug)]
pub(crate) struct SessionIds(AtomicU64);

impl SessionIds {
    pub(crate) fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        SessionIds(AtomicU64::new(now))
    }

    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// `session ‖ seq`, the header of a pipelined request (see the module
/// docs); the request's encoding follows it.
pub(crate) fn header(session: u64, seq: u64) -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[..8].copy_from_slice(&session.to_be_bytes());
    header[8..].copy_from_slice(&seq.to_be_bytes());
    header
}

/// Splits a pipelined payload into session, sequence number and request.
pub(crate) fn unframe(
    payload: &[u8],
) -> Result<(u64, u64, AppendEntriesRequest<TypeConfig>), DecodeError> {
    if payload.len() < HEADER_BYTES {
        return Err(DecodeError(format!(
            "pipelined append: {} bytes, shorter than its {HEADER_BYTES}-byte header",
            payload.len()
        )));
    }
    let (session, rest) = payload.split_at(8);
    let (seq, request) = rest.split_at(8);
    let number = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
    let request = codec::decode_append_request(request)?;
    Ok((number(session), number(seq), request))
}

/// A failure the leader retries with a new session.
fn retry(reason: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::Timeout, reason.into())
}

/// The reply of one pipelined append, as openraft's stream wants it.
pub(crate) type AppendFuture =
    BoxFuture<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>;

/// The leader's side: a response stream over requests sent as soon as they
/// come, at most [`IN_FLIGHT_MAX`] at once, answered in order.
pub(crate) struct Pipe<S> {
    input: S,
    /// Whether `input` may give more requests (it has not ended, and no
    /// request was cut short).
    open: bool,
    in_flight: FuturesOrdered<AppendFuture>,
    /// Whether the first request was answered: until then it is the only
    /// one in flight.
    started: bool,
    /// Set once a failure was yielded: the stream ends.
    done: bool,
    /// Whether a commit-only request may be held back now: nobody waits on
    /// the follower to apply it.
    may_hold: Box<dyn Fn() -> bool + Send + Sync>,
    /// The commit-only request held back, and when it must go at the
    /// latest (on tokio's clock, which its timer runs on).
    held: Option<(AppendEntriesRequest<TypeConfig>, tokio::time::Instant)>,
}

impl<S> Pipe<S>
where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    /// A pipe over `input`; `may_hold` tells whether a commit-only request
    /// may be held back now (see the module docs).
    pub(crate) fn new(input: S, may_hold: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Pipe {
            input,
            open: true,
            in_flight: FuturesOrdered::new(),
            started: false,
            done: false,
            may_hold: Box::new(may_hold),
            held: None,
        }
    }

    /// The next response, sending the requests that come meanwhile with
    /// `send` (which returns the request's future and whether it carries
    /// the whole request: a request cut short ends the pipeline after it,
    /// since the next one would not follow on). The first request goes
    /// alone; the others follow once it was answered. A commit-only request
    /// after the first may be held back (see the module docs).
    pub(crate) async fn next(
        &mut self,
        mut send: impl FnMut(AppendEntriesRequest<TypeConfig>) -> (AppendFuture, bool),
    ) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        if self.done {
            return None;
        }
        loop {
            let limit = if self.started { IN_FLIGHT_MAX } else { 1 };
            let can_send = self.open && self.in_flight.len() < limit;
            let due = self.held.as_ref().map(|(_, due)| *due);
            tokio::select! {
                biased;
                request = self.input.next(), if can_send => match request {
                    Some(request) if self.started && request.entries.is_empty() && (self.may_hold)() => {
                        // Replaces a held one (same position, same or later
                        // commit), keeping its deadline.
                        let due =
                            due.unwrap_or_else(|| tokio::time::Instant::now() + COMMIT_HOLD_MAX);
                        self.held = Some((request, due));
                    }
                    Some(request) => {
                        // Carries the held one's commit, or a later one.
                        self.held = None;
                        self.dispatch(request, &mut send);
                    }
                    None => {
                        self.open = false;
                        self.dispatch_held(&mut send);
                    }
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)),
                    if due.is_some() && self.in_flight.len() < limit =>
                {
                    self.dispatch_held(&mut send);
                }
                result = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    let result = result?;
                    if matches!(result, Ok(Ok(_))) {
                        self.started = true;
                    } else {
                        self.done = true;
                    }
                    return Some(result);
                }
                else => return None,
            }
        }
    }
}

impl<S> Pipe<S> {
    /// Sends `request`; one cut short closes the pipe after it.
    fn dispatch(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        send: &mut impl FnMut(AppendEntriesRequest<TypeConfig>) -> (AppendFuture, bool),
    ) {
        let (future, whole) = send(request);
        self.in_flight.push_back(future);
        self.open &= whole;
    }

    /// Sends the held commit-only request, if any.
    fn dispatch_held(
        &mut self,
        send: &mut impl FnMut(AppendEntriesRequest<TypeConfig>) -> (AppendFuture, bool),
    ) {
        if let Some((request, _)) = self.held.take() {
            self.dispatch(request, send);
        }
    }
}

/// The follower's side: one [`Session`] per sending node.
#[derive(Default)]
pub(crate) struct Sessions {
    by_sender: Mutex<HashMap<NodeId, Session>>,
}

/// A request handed to the follower's Raft: the future of its response.
pub(crate) type Submitted =
    BoxFuture<'static, Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>>;

/// One sender's current session on the follower.
struct Session {
    id: u64,
    /// The next sequence number to hand to Raft.
    next_seq: u64,
    last_request: Instant,
    /// Requests waiting for an earlier one, by sequence number, with where
    /// to send their submitted futures.
    early: BTreeMap<u64, (AppendEntriesRequest<TypeConfig>, oneshot::Sender<Submitted>)>,
}

/// Hands `request` to `raft` now: `Raft::append_entries` queues it to the
/// Raft core when first polled — on a bounded channel whose waiting
/// senders are served first come, first served — so polling each request
/// once, in order, queues them in order. The caller awaits the returned
/// future for the response.
///
/// Should the core ever take them out of order, a request arriving before
/// the one it follows is answered `Conflict`, which only makes the leader
/// start over from what this node acknowledged.
fn submit(raft: &Raft, request: AppendEntriesRequest<TypeConfig>) -> Submitted {
    let raft = raft.clone();
    let mut submitted: Submitted = Box::pin(async move { raft.append_entries(request).await });
    let mut queued = Context::from_waker(futures::task::noop_waker_ref());
    match submitted.as_mut().poll(&mut queued) {
        Poll::Ready(response) => Box::pin(std::future::ready(response)),
        Poll::Pending => submitted,
    }
}

impl Session {
    fn new(id: u64, now: Instant) -> Session {
        Session {
            id,
            // Request 0 went alone, as a plain append.
            next_seq: 1,
            last_request: now,
            early: BTreeMap::new(),
        }
    }

    /// Submits every request that is next in order.
    fn feed(&mut self, submit: &mut impl FnMut(AppendEntriesRequest<TypeConfig>) -> Submitted) {
        while let Some((request, reply)) = self.early.remove(&self.next_seq) {
            self.next_seq += 1;
            // A handler that went away drops its request's response.
            let _ = reply.send(submit(request));
        }
    }
}

impl Sessions {
    /// Drops every session (their waiting requests fail).
    pub(crate) fn clear(&self) {
        lock(&self.by_sender).clear();
    }

    /// Hands request `seq` of `session` from `sender` to `raft` in order
    /// and waits for its response.
    pub(crate) async fn append(
        &self,
        raft: &Raft,
        sender: NodeId,
        session: u64,
        seq: u64,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>, RemoteError> {
        self.append_with(
            |request| submit(raft, request),
            sender,
            session,
            seq,
            request,
        )
        .await
    }

    /// [`append`](Self::append), handing requests on with `submit`.
    async fn append_with(
        &self,
        mut submit: impl FnMut(AppendEntriesRequest<TypeConfig>) -> Submitted,
        sender: NodeId,
        session: u64,
        seq: u64,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>, RemoteError> {
        let submitted = {
            let mut sessions = lock(&self.by_sender);
            let now = Instant::now();
            let replace = match sessions.get(&sender) {
                None => true,
                Some(current) => {
                    session > current.id
                        || (session < current.id
                            && now.duration_since(current.last_request) > STALE_AFTER)
                }
            };
            if replace {
                sessions.insert(sender, Session::new(session, now));
            }
            let current = sessions.get_mut(&sender).expect("inserted above");
            if current.id != session {
                return Err(retry(format!(
                    "append session {session} of node {sender} is older than its session {}",
                    current.id
                )));
            }
            current.last_request = now;
            if seq < current.next_seq || current.early.contains_key(&seq) {
                return Err(retry(format!(
                    "append {seq} of session {session} of node {sender} arrived twice"
                )));
            }
            if seq - current.next_seq >= EARLY_MAX {
                return Err(retry(format!(
                    "append {seq} of session {session} of node {sender} is more than \
                     {EARLY_MAX} ahead of the next one in order ({})",
                    current.next_seq
                )));
            }
            let (reply, submitted) = oneshot::channel();
            current.early.insert(seq, (request, reply));
            current.feed(&mut submit);
            submitted
        };
        let submitted = match tokio::time::timeout(ORDER_WAIT_MAX, submitted).await {
            Ok(Ok(submitted)) => submitted,
            Ok(Err(_)) => {
                return Err(retry(format!(
                    "append session {session} of node {sender} was replaced before \
                     request {seq} could follow on"
                )));
            }
            Err(_) => {
                return Err(retry(format!(
                    "append {seq} of session {session} of node {sender}: the requests \
                     before it did not arrive in {ORDER_WAIT_MAX:?}"
                )));
            }
        };
        Ok(submitted.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use openraft::vote::RaftLeaderIdExt as _;

    use crate::types::{LogId, Vote};

    fn log_id(index: u64) -> LogId {
        LogId::new(
            openraft::vote::leader_id_adv::LeaderId::new_committed(1, 1),
            index,
        )
    }

    fn request(index: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(index)),
            leader_commit: None,
            entries: Vec::new(),
        }
    }

    /// Drives a pipe over `n` requests whose replies take longer the
    /// earlier they were sent (so they complete in reverse order); request
    /// `fail` (if any) fails. Returns the results and the most replies that
    /// were in flight at once.
    async fn drive(n: u64, fail: Option<u64>, cut: Option<u64>) -> (Vec<Option<u64>>, usize) {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let input = futures::stream::iter((0..n).map(request));
        let mut pipe = Pipe::new(input, || false);
        let mut results = Vec::new();
        loop {
            let next = pipe
                .next(|rpc| {
                    let index = rpc.prev_log_id.expect("set").index;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let in_flight = in_flight.clone();
                    let reply: AppendFuture = Box::pin(async move {
                        tokio::time::sleep(Duration::from_millis(20 - index)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if Some(index) == fail {
                            let error = openraft::error::Unreachable::from_string("down");
                            return Err(RPCError::Unreachable(error));
                        }
                        Ok(Ok(Some(log_id(index))))
                    });
                    (reply, Some(index) != cut)
                })
                .await;
            match next {
                None => break,
                Some(Ok(Ok(matched))) => results.push(matched.map(|id| id.index)),
                Some(_) => results.push(None),
            }
        }
        (results, most.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_pipe_sends_ahead_and_answers_in_order() {
        let (results, most) = drive(6, None, None).await;
        assert_eq!(results, (0..6).map(Some).collect::<Vec<_>>());
        // The first went alone, the other five together.
        assert_eq!(most, 5);
    }

    #[tokio::test]
    async fn a_pipe_ends_at_its_first_failure() {
        let (results, _) = drive(6, Some(3), None).await;
        assert_eq!(results, vec![Some(0), Some(1), Some(2), None]);
    }

    #[tokio::test]
    async fn a_request_cut_short_is_the_last_one_sent() {
        let (results, _) = drive(6, None, Some(2)).await;
        assert_eq!(results, vec![Some(0), Some(1), Some(2)]);
    }

    /// A request from `index` on: with `entries` entries (blank), or a
    /// commit-only one.
    fn appending(index: u64, entries: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            entries: (index + 1..=index + entries)
                .map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i))
                .collect(),
            ..request(index)
        }
    }

    /// A pipe fed by hand, driven in a task of its own: what it sent (the
    /// request's `prev_log_id` index and entry count) and how many
    /// responses it yielded. Replies come at once.
    struct Fed {
        input: futures::channel::mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
        sent: Arc<Mutex<Vec<(u64, usize)>>>,
        driver: tokio::task::JoinHandle<usize>,
    }

    impl Fed {
        fn new(may_hold: bool) -> Self {
            let (input, requests) = futures::channel::mpsc::unbounded();
            let sent: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
            let recorded = sent.clone();
            let driver = tokio::spawn(async move {
                let mut pipe = Pipe::new(requests, move || may_hold);
                let mut responses = 0;
                while let Some(response) = pipe
                    .next(|rpc| {
                        let index = rpc.prev_log_id.expect("set").index;
                        let last = index + rpc.entries.len() as u64;
                        lock(&recorded).push((index, rpc.entries.len()));
                        let reply: AppendFuture =
                            Box::pin(std::future::ready(Ok(Ok(Some(log_id(last))))));
                        (reply, true)
                    })
                    .await
                {
                    assert!(matches!(response, Ok(Ok(_))), "{response:?}");
                    responses += 1;
                }
                responses
            });
            Fed {
                input,
                sent,
                driver,
            }
        }

        /// A pipe whose first request (one entry after index 0) was sent
        /// and answered.
        async fn started(may_hold: bool) -> Self {
            let fed = Fed::new(may_hold);
            fed.put(appending(0, 1)).await;
            fed
        }

        fn feed(&self, request: AppendEntriesRequest<TypeConfig>) {
            self.input.unbounded_send(request).expect("pipe running");
        }

        /// Feeds `request` and lets the pipe act on it.
        async fn put(&self, request: AppendEntriesRequest<TypeConfig>) {
            self.feed(request);
            settle().await;
        }

        fn sent(&self) -> Vec<(u64, usize)> {
            lock(&self.sent).clone()
        }

        /// Ends the input: the number of responses the pipe yielded, and
        /// everything it sent.
        async fn finish(self) -> (usize, Vec<(u64, usize)>) {
            self.input.close_channel();
            let responses = self.driver.await.expect("driver");
            (responses, lock(&self.sent).clone())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_only_request_is_replaced_by_the_next_entries() {
        let fed = Fed::started(true).await;
        // A commit-only request (held), then new entries from the same
        // position: only those go.
        fed.put(appending(1, 0)).await;
        assert_eq!(fed.sent(), vec![(0, 1)]);
        fed.put(appending(1, 2)).await;
        assert_eq!(fed.sent(), vec![(0, 1), (1, 2)]);
        assert_eq!(fed.finish().await.0, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_request_goes_when_its_hold_is_up_or_the_stream_ends() {
        // The clock is paused and moved by hand: a sleep would round up to
        // the timer's millisecond.
        let wait = |by| async move {
            tokio::time::advance(by).await;
            settle().await;
        };
        let fed = Fed::started(true).await;
        fed.put(appending(1, 0)).await;
        wait(COMMIT_HOLD_MAX / 2).await;
        // A second one keeps the first one's deadline.
        fed.put(appending(1, 0)).await;
        wait(COMMIT_HOLD_MAX / 4).await;
        assert_eq!(fed.sent(), vec![(0, 1)]);
        wait(COMMIT_HOLD_MAX / 2).await;
        assert_eq!(fed.sent(), vec![(0, 1), (1, 0)]);
        // Held when the stream ends (at once): it goes then, not when its
        // hold is up (the clock is paused: only waits move it).
        fed.feed(appending(1, 0));
        let ending = tokio::time::Instant::now();
        let (responses, sent) = fed.finish().await;
        assert!(ending.elapsed() < COMMIT_HOLD_MAX, "{:?}", ending.elapsed());
        assert_eq!(responses, 3);
        assert_eq!(sent, vec![(0, 1), (1, 0), (1, 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn commit_only_requests_go_at_once_to_a_follower_waited_on() {
        let fed = Fed::started(false).await;
        fed.put(appending(1, 0)).await;
        assert_eq!(fed.sent(), vec![(0, 1), (1, 0)]);
        assert_eq!(fed.finish().await.0, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_is_never_held() {
        let fed = Fed::new(true);
        fed.put(appending(0, 0)).await;
        assert_eq!(fed.sent(), vec![(0, 0)]);
        assert_eq!(fed.finish().await.0, 1);
    }

    #[test]
    fn commit_waiters_count_overlapping_waits() {
        let waiters = CommitWaiters::default();
        let first = waiters.wait_on(2);
        let second = waiters.wait_on(2);
        drop(first);
        assert!(waiters.waited_on(2), "one wait is left");
        drop(second);
        assert!(!waiters.waited_on(2));
    }

    /// A follower-side harness: `Sessions` whose submissions are recorded
    /// (by the request's `prev_log_id` index) and answered at once.
    struct Follower {
        sessions: Arc<Sessions>,
        submitted: Arc<Mutex<Vec<u64>>>,
    }

    impl Follower {
        fn new() -> Self {
            Follower {
                sessions: Arc::new(Sessions::default()),
                submitted: Arc::default(),
            }
        }

        /// Sends request `seq` of `session` (its `prev_log_id` index is
        /// `seq`) from node 1 in a task of its own.
        fn send(
            &self,
            session: u64,
            seq: u64,
        ) -> tokio::task::JoinHandle<Result<AppendEntriesResponse<TypeConfig>, RemoteError>>
        {
            let sessions = self.sessions.clone();
            let submitted = self.submitted.clone();
            tokio::spawn(async move {
                let submit = |request: AppendEntriesRequest<TypeConfig>| -> Submitted {
                    let index = request.prev_log_id.expect("set").index;
                    lock(&submitted).push(index);
                    Box::pin(std::future::ready(Ok(AppendEntriesResponse::Success)))
                };
                let response = sessions
                    .append_with(submit, 1, session, seq, request(seq))
                    .await?;
                Ok(response.expect("answered"))
            })
        }

        fn submitted(&self) -> Vec<u64> {
            lock(&self.submitted).clone()
        }
    }

    /// Lets spawned tasks run up to their next wait.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_follower_hands_requests_on_in_sequence_order() {
        let follower = Follower::new();
        let late = [follower.send(7, 3), follower.send(7, 2)];
        settle().await;
        assert!(follower.submitted().is_empty(), "1 has not arrived");
        let first = follower.send(7, 1);
        for handler in std::iter::once(first).chain(late) {
            assert_eq!(
                handler.await.expect("task"),
                Ok(AppendEntriesResponse::Success)
            );
        }
        assert_eq!(follower.submitted(), vec![1, 2, 3]);
        // Once in order, a request goes straight on.
        let next = follower.send(7, 4).await.expect("task");
        assert_eq!(next, Ok(AppendEntriesResponse::Success));
        assert_eq!(follower.submitted(), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_newer_session_replaces_the_waiting_one_and_an_older_is_refused() {
        let follower = Follower::new();
        // Session 7 waits for its request 1, which never comes.
        let stranded = follower.send(7, 2);
        settle().await;
        let newer = follower.send(8, 1).await.expect("task");
        assert_eq!(newer, Ok(AppendEntriesResponse::Success));
        let stranded = stranded.await.expect("task");
        assert!(
            stranded
                .as_ref()
                .is_err_and(|e| e.code == ErrorCode::Timeout),
            "{stranded:?}"
        );
        // Session 7 is older than the current one (8, not idle): refused.
        let older = follower.send(7, 1).await.expect("task");
        assert!(older.is_err(), "{older:?}");
        assert_eq!(follower.submitted(), vec![1]);
    }

    #[tokio::test]
    async fn duplicates_and_requests_too_far_ahead_are_refused() {
        let follower = Follower::new();
        assert!(follower.send(9, 1).await.expect("task").is_ok());
        // Request 1 again.
        assert!(follower.send(9, 1).await.expect("task").is_err());
        // 64 past the next one in order (2).
        assert!(
            follower
                .send(9, 2 + EARLY_MAX)
                .await
                .expect("task")
                .is_err()
        );
        assert_eq!(follower.submitted(), vec![1]);
    }

    #[test]
    fn garbage_payloads_are_refused() {
        assert!(unframe(&[]).is_err());
        assert!(unframe(&[0; HEADER_BYTES - 1]).is_err());
        let mut junk = [header(1, 2).as_slice(), &[0xff; 40]].concat();
        assert!(unframe(&junk).is_err());
        junk.truncate(HEADER_BYTES);
        // An empty protobuf is a request without a vote: refused too.
        assert!(unframe(&junk).is_err());
    }

    #[test]
    fn session_ids_grow() {
        let ids = SessionIds::new();
        let a = ids.next();
        assert!(ids.next() > a);
        assert!(SessionIds::new().next() > a);
    }
}
