//! The group-commit writer: one std thread that owns all writes to the file.
//!
//! It blocks for the next command, drains whatever else is queued (up to
//! `group_commit_batches_max` batches / `group_commit_bytes_max` payload
//! bytes) — under concurrent load, waiting up to `group_commit_wait_max`
//! (and at most half the last commit's duration) for as many batches as the
//! previous group had — applies the batches in arrival order in ONE redb write
//! transaction with `Durability::Immediate`, commits (one fsync for the whole
//! group), and only then answers every waiter. So concurrent writers share
//! fsyncs, and nothing is acknowledged before it is durable.
//!
//! Invariants:
//! - a batch rejected by the engine with an expected error (a stale epoch)
//!   wrote nothing (see `engine`) and gets its error; the others in its
//!   group are unaffected;
//! - if the group fails fatally (I/O, a corrupt record) the transaction is
//!   aborted and each of its batches is retried alone, in order, in its own
//!   transaction, so one bad batch cannot fail the others;
//! - a [`Command::Exclusive`] job (a `commit_group`, an import) runs alone,
//!   in queue order: the writer first commits the batches queued before it,
//!   then runs it (it opens its own write transaction), and takes the
//!   commands queued after it only once it is done;
//! - the thread stops when every sender is gone, after finishing the queue
//!   and making every deferred group durable.
//!
//! # Deferred durability
//! A commit group with [`Durability::Deferred`](crate::Durability::Deferred)
//! (the Raft state machine's apply) commits its ONE transaction with redb's
//! `Durability::None`: no fsync; readers see it at once; a crash rolls the
//! file back to the last durable commit, so such a group is lost whole or
//! kept whole. The writer remembers since when it holds non-durable
//! commits ([`Pending`]) and makes them durable — an fsync covers every
//! commit before it — with:
//! - the next transaction it commits with immediate durability (a group of
//!   plain commits, an immediate commit group, an import);
//! - a [`Command::Flush`], and its own exit (close, or the last handle
//!   dropped): an empty durable transaction if needed;
//! - the bound `deferred_max`: a deferred group arriving when the oldest
//!   non-durable commit is that old commits durably instead; and when the
//!   queue is idle, the writer waits for commands only until that bound,
//!   then commits an empty durable transaction.
//!
//! So a durable commit follows every non-durable one within `deferred_max`
//! (plus one transaction's time), which also keeps the file from growing:
//! redb may reuse a page the last durable state still references only
//! after the next durable commit.
//!
//! # Small deferred groups commit on the caller's thread
//! A deferred group commits without an fsync, in tens of microseconds,
//! so handing it to this thread and back (two thread wake-ups) would cost
//! more than the commit. The right to write is a lock ([`WriteLock`]:
//! the [`Pending`] record), which this thread takes for each of its
//! transactions (and jobs); a caller with a deferred group of at most
//! [`HERE_BATCHES_MAX`] batches and [`HERE_BYTES_MAX`] bytes that finds it
//! free — and the group not overdue for durability — commits the group
//! itself, without waiting ([`commit_deferred_here`]); anything else
//! (the lock is taken, the group is larger or overdue) is queued as
//! before. Having committed the first non-durable group since the last
//! durable commit, the caller wakes this thread ([`Command::Wake`]) so that
//! it makes it durable within the bound. A group committed this way may
//! overtake commands other callers queued before it (calls are not
//! ordered between callers, only each caller's own, which awaits each
//! call). Once the storage is closing, nothing commits outside this
//! thread: the caller checks under the lock, and this thread takes the
//! lock for its last sync after the storage was marked closed.
//!
//! It is a plain thread, not a tokio task: redb calls block (fsync), and a
//! blocked tokio worker would stall unrelated tasks. Waiting with a timeout
//! polls the tokio receiver with a waker that unparks this thread.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use redb::Durability;
use tokio::sync::{mpsc, oneshot};

use super::file::engine_error;
use super::kv::WriteKv;
use crate::batch::{CommitOutcome, WriteBatch};
use crate::engine;
use crate::error::{Error, Result};

/// Most batches a deferred group may have to commit on the caller's thread
/// (see the module docs).
pub(crate) const HERE_BATCHES_MAX: usize = 16;

/// Most payload bytes a deferred group may have to commit on the caller's
/// thread.
pub(crate) const HERE_BYTES_MAX: usize = 64 * 1024;

/// The right to write the file, with the record of non-durable commits:
/// shared by the writer thread and callers committing a small deferred
/// group themselves.
pub(crate) type WriteLock = Arc<Mutex<Pending>>;

/// What the writer is asked to do.
pub(crate) enum Command {
    /// Apply a validated batch; answer with its outcome once durable.
    Commit {
        batch: WriteBatch,
        reply: oneshot::Sender<Result<CommitOutcome>>,
    },
    /// Answer once every command queued before this one is done and every
    /// deferred group committed before it is durable.
    Flush { reply: oneshot::Sender<Result<()>> },
    /// Run a job alone on the writer thread, in queue order; the job opens
    /// its own transaction (through [`Transactions::write`]) and answers
    /// its own caller.
    Exclusive(Job),
    /// A deferred group was committed outside the writer thread while
    /// everything was durable: look at the durability deadline again.
    Wake,
}

/// A job for [`Command::Exclusive`].
pub(crate) type Job = Box<dyn FnOnce(&mut Transactions<'_>) + Send>;

pub(crate) struct Writer {
    pub(crate) db: Arc<redb::Database>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) batches_max: usize,
    pub(crate) bytes_max: usize,
    pub(crate) wait_max: Duration,
    pub(crate) pending: WriteLock,
}

/// The writer's record of commits that are not durable yet, and the bound
/// on how long they may stay so.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Longest a deferred group stays non-durable (zero: never deferred).
    max: Duration,
    /// Since when the file holds non-durable commits (`None`: everything
    /// committed is durable).
    pub(crate) since: Option<Instant>,
}

impl Pending {
    pub(crate) fn new(max: Duration) -> Self {
        Pending { max, since: None }
    }

    /// When the pending commits must be durable.
    fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + self.max)
    }

    /// How to commit a transaction asked for with `requested`: a deferred
    /// one with redb's `Durability::None`, unless the oldest non-durable
    /// commit is already `max` old (or the bound is zero) — then durably,
    /// which makes everything before it durable too.
    fn durability(&self, requested: crate::Durability) -> Durability {
        let overdue = self
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline);
        match requested {
            crate::Durability::Deferred if !self.max.is_zero() && !overdue => Durability::None,
            _ => Durability::Immediate,
        }
    }

    fn committed(&mut self, durability: Durability) {
        match durability {
            Durability::Immediate => self.since = None,
            _ => {
                self.since.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// What the writer commits through (its own group commits and syncs, and
/// every exclusive [`Job`]): the database and the record of non-durable
/// commits, whose lock it holds.
pub(crate) struct Transactions<'a> {
    db: &'a redb::Database,
    pending: MutexGuard<'a, Pending>,
}

impl Transactions<'_> {
    /// [`guarded_write_transaction`] with the requested durability, as
    /// [`Pending::durability`] resolves it, keeping [`Pending`] up to date.
    pub(crate) fn write<T>(
        &mut self,
        context: &'static str,
        durability: crate::Durability,
        work: impl FnOnce(&mut WriteKv<'_>) -> Result<T>,
    ) -> Result<T> {
        let durability = self.pending.durability(durability);
        let result = guarded_write_transaction(self.db, context, durability, work);
        if result.is_ok() {
            self.pending.committed(durability);
        }
        result
    }
}

/// What waiting for the next command gave.
enum Received {
    Command(Command),
    /// Every sender is gone and the queue is empty.
    Closed,
    TimedOut,
}

/// Wakes the writer thread parked in [`Writer::recv_until`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

type Waiter = oneshot::Sender<Result<CommitOutcome>>;

/// The commands gathered for one group commit.
#[derive(Default)]
struct Group {
    commits: Vec<(WriteBatch, Waiter)>,
    flushes: Vec<oneshot::Sender<Result<()>>>,
    /// Runs after `commits`; closes the group.
    exclusive: Option<Job>,
    bytes: usize,
}

impl Group {
    fn push(&mut self, command: Command) {
        match command {
            Command::Commit { batch, reply } => {
                self.bytes = self.bytes.saturating_add(batch.payload_bytes());
                self.commits.push((batch, reply));
            }
            Command::Flush { reply } => self.flushes.push(reply),
            Command::Exclusive(job) => self.exclusive = Some(job),
            // Only wakes the writer: the loop reads the deadline again.
            Command::Wake => {}
        }
    }
}

/// How often the writer looks for late arrivals while gathering a group.
const GATHER_POLL: Duration = Duration::from_micros(50);

impl Writer {
    /// Runs until every sender is dropped and the queue is drained, then
    /// makes every deferred group durable.
    pub(crate) fn run(mut self) {
        let mut group = Group::default();
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        // The previous group's size and commit time drive the gather wait.
        let mut last_len = 0usize;
        let mut last_commit = Duration::ZERO;
        while let Some(first) = self.next_command(&waker) {
            group.push(first);
            let mut open = self.drain(&mut group);
            // Callers answered by the previous commit are usually just about
            // to send their next batch: if that commit carried several
            // batches, wait (a fraction of a commit, at most `wait_max`) for
            // as many to arrive, rather than paying a whole fsync for the
            // first one alone. A lone caller (last group of 1) never waits.
            let target = last_len.min(self.batches_max);
            let wait = self.wait_max.min(last_commit / 2);
            if open && group.commits.len() < target && !wait.is_zero() {
                let deadline = Instant::now() + wait;
                while open
                    && group.commits.len() < target
                    && !self.full(&group)
                    && Instant::now() < deadline
                {
                    std::thread::sleep(GATHER_POLL);
                    open = self.drain(&mut group);
                }
            }
            if !group.commits.is_empty() {
                last_len = group.commits.len();
                let started = Instant::now();
                self.commit_group(&mut group.commits);
                last_commit = started.elapsed();
            }
            if let Some(job) = group.exclusive.take() {
                job(&mut self.transactions());
            }
            if !group.flushes.is_empty() {
                let synced = self.sync();
                for flush in group.flushes.drain(..) {
                    let _ =
                        flush.send(synced.as_ref().map(|_| ()).map_err(|error| Error::Backend {
                            context: "making deferred commits durable",
                            source: error.to_string().into(),
                        }));
                }
            }
            group.bytes = 0;
        }
        self.sync_or_log();
        tracing::debug!("storage writer stopped: every handle is gone");
    }

    /// The next command; `None` once every sender is gone and the queue is
    /// drained. While commits are pending durability, waits only until
    /// their deadline (not at all once it passed), then makes them durable
    /// and waits on. A command already queued is taken first: whatever it
    /// commits is durable, or made so by [`Pending::durability`].
    fn next_command(&mut self, waker: &Waker) -> Option<Command> {
        while let Some(deadline) = self.deadline() {
            match self.recv_until(deadline, waker) {
                Received::Command(command) => return Some(command),
                Received::Closed => return None,
                Received::TimedOut => self.sync_or_log(),
            }
        }
        self.commands.blocking_recv()
    }

    /// Waits for a command until `deadline`, parking the thread.
    fn recv_until(&mut self, deadline: Instant, waker: &Waker) -> Received {
        let mut context = Context::from_waker(waker);
        loop {
            match self.commands.poll_recv(&mut context) {
                Poll::Ready(Some(command)) => return Received::Command(command),
                Poll::Ready(None) => return Received::Closed,
                Poll::Pending => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Received::TimedOut;
            }
            // Woken early by a sender (or spuriously): poll again.
            std::thread::park_timeout(deadline - now);
        }
    }

    /// When the pending non-durable commits must be durable.
    fn deadline(&self) -> Option<Instant> {
        lock(&self.pending).deadline()
    }

    fn transactions(&self) -> Transactions<'_> {
        Transactions {
            db: &self.db,
            pending: lock(&self.pending),
        }
    }

    /// Makes every non-durable commit durable: an empty transaction with
    /// immediate durability (redb persists everything committed before it).
    fn sync(&self) -> Result<()> {
        let mut txns = self.transactions();
        if txns.pending.since.is_none() {
            return Ok(());
        }
        txns.write(
            "making deferred commits durable",
            crate::Durability::Immediate,
            |_| Ok(()),
        )
    }

    /// [`sync`](Self::sync), logging a failure (retried at the next deadline).
    fn sync_or_log(&self) {
        if let Err(error) = self.sync() {
            tracing::error!(%error, "making deferred commits durable failed");
            // Try again a bound later, not in a busy loop.
            lock(&self.pending).since = Some(Instant::now());
        }
    }

    fn full(&self, group: &Group) -> bool {
        group.exclusive.is_some()
            || group.commits.len() >= self.batches_max
            || group.bytes >= self.bytes_max
    }

    /// Takes queued commands into `group` until it is full or the queue is
    /// empty. Returns `false` once every sender is gone.
    fn drain(&mut self, group: &mut Group) -> bool {
        while !self.full(group) {
            match self.commands.try_recv() {
                Ok(command) => group.push(command),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// Commits a group (durably, so every deferred commit before it becomes
    /// durable too) and answers its waiters; empties `commits`.
    fn commit_group(&self, commits: &mut Vec<(WriteBatch, Waiter)>) {
        let batches: Vec<&WriteBatch> = commits.iter().map(|(batch, _)| batch).collect();
        let results = match self.apply_in_one_transaction(&batches) {
            Ok(results) => results,
            Err(error) if batches.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(
                    %error,
                    batches = batches.len(),
                    "group commit failed; retrying each batch alone"
                );
                batches
                    .iter()
                    .map(|batch| match self.apply_in_one_transaction(&[batch]) {
                        Ok(mut results) => results
                            .pop()
                            .unwrap_or_else(|| unreachable!("one batch gives one result")),
                        Err(error) => Err(error),
                    })
                    .collect()
            }
        };
        debug_assert_eq!(results.len(), commits.len());
        for ((_, reply), result) in commits.drain(..).zip(results) {
            // The caller may have stopped waiting; its batch is committed anyway.
            let _ = reply.send(result);
        }
    }

    /// Applies `batches` in order in one durable transaction. The outer error
    /// is fatal (the transaction was aborted); inner errors are per batch.
    /// A panic inside the engine (a damaged file can cause one) fails the
    /// group instead of killing the writer and stranding every waiter.
    fn apply_in_one_transaction(
        &self,
        batches: &[&WriteBatch],
    ) -> Result<Vec<Result<CommitOutcome>>> {
        let durable = crate::Durability::Immediate;
        self.transactions()
            .write("applying a group commit", durable, |kv| {
                let mut results = Vec::with_capacity(batches.len());
                for batch in batches {
                    match engine::apply(kv, batch) {
                        Ok(outcome) => results.push(Ok(outcome)),
                        Err(error) if !error.is_fatal() => results.push(Err(error)),
                        Err(error) => return Err(error),
                    }
                }
                Ok(results)
            })
    }
}

/// Runs `work` in one write transaction over every table and commits it with
/// `durability` if `work` returns `Ok`; aborts it (nothing applied) if
/// `work` fails. Runs only under the write lock (on the writer thread,
/// directly or in a [`Job`], or in [`commit_deferred_here`]), so it never
/// waits for another writer.
fn in_write_transaction<T>(
    db: &redb::Database,
    durability: Durability,
    work: impl FnOnce(&mut WriteKv<'_>) -> Result<T>,
) -> Result<T> {
    let mut txn = db
        .begin_write()
        .map_err(|e| engine_error("starting a write transaction")(e.into()))?;
    txn.set_durability(durability)
        .map_err(|e| engine_error("setting durability")(e.into()))?;
    let done = WriteKv::open(&txn).and_then(|mut kv| work(&mut kv));
    match done {
        Ok(value) => {
            txn.commit()
                .map_err(|e| engine_error("committing a write transaction")(e.into()))?;
            Ok(value)
        }
        Err(error) => {
            if let Err(abort_error) = txn.abort() {
                tracing::warn!(%abort_error, "aborting a failed write transaction");
            }
            Err(error)
        }
    }
}

/// [`in_write_transaction`], with a panic inside the storage engine (a
/// damaged file can cause one) reported as an error instead of unwinding.
fn guarded_write_transaction<T>(
    db: &redb::Database,
    context: &'static str,
    durability: Durability,
    work: impl FnOnce(&mut WriteKv<'_>) -> Result<T>,
) -> Result<T> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        in_write_transaction(db, durability, work)
    }))
    .unwrap_or_else(|_| {
        Err(Error::Backend {
            context,
            source: "the storage engine panicked (damaged file?)".into(),
        })
    })
}

/// Takes the write lock whether or not a panicking holder poisoned it: the
/// record it guards is updated only after a transaction, in one statement.
fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Commits a deferred group with `work` on the calling thread, if the
/// write lock is free, the group is not overdue for durability and
/// `closed` is not set (read under the lock): `Some(result)`, and whether
/// it was the first non-durable commit since the last durable one (the
/// writer must then be woken: [`Command::Wake`]). `None`: nothing was
/// done; queue the group for the writer thread. See the module docs.
pub(crate) fn commit_deferred_here<T>(
    db: &redb::Database,
    pending: &Mutex<Pending>,
    closed: &std::sync::atomic::AtomicBool,
    work: impl FnOnce(&mut WriteKv<'_>) -> Result<T>,
) -> Option<(Result<T>, bool)> {
    let pending = match pending.try_lock() {
        Ok(pending) => pending,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    if closed.load(std::sync::atomic::Ordering::Acquire)
        || !matches!(
            pending.durability(crate::Durability::Deferred),
            Durability::None
        )
    {
        return None;
    }
    let first = pending.since.is_none();
    let result = Transactions { db, pending }.write(
        "applying a commit group",
        crate::Durability::Deferred,
        work,
    );
    let woken = first && result.is_ok();
    Some((result, woken))
}
