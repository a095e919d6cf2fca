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
//! - the thread stops when every sender is gone, after finishing the queue.
//!
//! It is a plain thread, not a tokio task: redb calls block (fsync), and a
//! blocked tokio worker would stall unrelated tasks.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::Durability;
use tokio::sync::{mpsc, oneshot};

use super::file::engine_error;
use super::kv::WriteKv;
use crate::batch::{CommitOutcome, WriteBatch};
use crate::engine;
use crate::error::{Error, Result};

/// What the writer is asked to do.
pub(crate) enum Command {
    /// Apply a validated batch; answer with its outcome once durable.
    Commit {
        batch: WriteBatch,
        reply: oneshot::Sender<Result<CommitOutcome>>,
    },
    /// Answer once every command queued before this one is done.
    Flush { reply: oneshot::Sender<()> },
    /// Run a job alone on the writer thread, in queue order; the job opens
    /// its own transaction and answers its own caller.
    Exclusive(Job),
}

/// A job for [`Command::Exclusive`].
pub(crate) type Job = Box<dyn FnOnce(&redb::Database) + Send>;

pub(crate) struct Writer {
    pub(crate) db: Arc<redb::Database>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) batches_max: usize,
    pub(crate) bytes_max: usize,
    pub(crate) wait_max: Duration,
}

type Waiter = oneshot::Sender<Result<CommitOutcome>>;

/// The commands gathered for one group commit.
#[derive(Default)]
struct Group {
    commits: Vec<(WriteBatch, Waiter)>,
    flushes: Vec<oneshot::Sender<()>>,
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
        }
    }
}

/// How often the writer looks for late arrivals while gathering a group.
const GATHER_POLL: Duration = Duration::from_micros(50);

impl Writer {
    /// Runs until every sender is dropped and the queue is drained.
    pub(crate) fn run(mut self) {
        let mut group = Group::default();
        // The previous group's size and commit time drive the gather wait.
        let mut last_len = 0usize;
        let mut last_commit = Duration::ZERO;
        while let Some(first) = self.commands.blocking_recv() {
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
                job(&self.db);
            }
            for flush in group.flushes.drain(..) {
                let _ = flush.send(());
            }
            group.bytes = 0;
        }
        tracing::debug!("storage writer stopped: every handle is gone");
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

    /// Commits a group and answers its waiters; empties `commits`.
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
    fn apply_in_one_transaction(
        &self,
        batches: &[&WriteBatch],
    ) -> Result<Vec<Result<CommitOutcome>>> {
        // A panic inside the engine (a damaged file can cause one) fails the
        // group instead of killing the writer and stranding every waiter.
        panic::catch_unwind(AssertUnwindSafe(|| self.apply_unguarded(batches))).unwrap_or_else(
            |_| {
                Err(Error::Backend {
                    context: "applying a group commit",
                    source: "the storage engine panicked (damaged file?)".into(),
                })
            },
        )
    }

    fn apply_unguarded(&self, batches: &[&WriteBatch]) -> Result<Vec<Result<CommitOutcome>>> {
        in_write_transaction(&self.db, |kv| {
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
/// immediate durability if `work` returns `Ok`; aborts it (nothing applied)
/// if `work` fails. Runs on the writer thread only (directly or in a
/// [`Job`]), so it never waits for another writer.
pub(crate) fn in_write_transaction<T>(
    db: &redb::Database,
    work: impl FnOnce(&mut WriteKv<'_>) -> Result<T>,
) -> Result<T> {
    let mut txn = db
        .begin_write()
        .map_err(|e| engine_error("starting a write transaction")(e.into()))?;
    txn.set_durability(Durability::Immediate)
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
pub(crate) fn guarded_write_transaction<T>(
    db: &redb::Database,
    context: &'static str,
    work: impl FnOnce(&mut WriteKv<'_>) -> Result<T>,
) -> Result<T> {
    panic::catch_unwind(AssertUnwindSafe(|| in_write_transaction(db, work))).unwrap_or_else(|_| {
        Err(Error::Backend {
            context,
            source: "the storage engine panicked (damaged file?)".into(),
        })
    })
}
