//! Persisted messages: sends that are durable before they are acknowledged,
//! delivered at least once, and applied exactly once.
//!
//! A persisted send is a pending `Message` in its target's shard, keyed by
//! its request id (insert-if-absent, so a repeated send is one message). The
//! [`Deliverer`] — one task per node — delivers due messages by calling the
//! handler with the message's request id. An activity's state change and the
//! message's acknowledgement (its reply) commit in one batch, so a message
//! delivered twice (a crash between the commit and the deliverer hearing of
//! it) applies once: the second delivery finds the stored reply.
//!
//! Delivery is event-driven: a send wakes the deliverer, which then sleeps
//! until the earliest pending message is due, or at most
//! `storage_poll_interval` (the back-up sweep). A failed delivery is retried
//! with exponential backoff (`storage_message_retry_backoff`, doubling, at
//! most 60 s) up to `storage_message_max_retries` attempts, then
//! dead-lettered with the reason; an error that retrying cannot fix (an
//! unknown handler, undecodable parameters) is dead-lettered at once. Dead
//! letters can be listed and replayed.
//!
//! Pending workflow executions are messages too, so the deliverer also
//! resumes executions a crash left behind.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_storage::{DeadLetter, Message as StoredMessage, RequestId, ShardId, Storage, Timestamp};
use tokio::sync::Notify;

use super::error::EntityError;
use super::runtime::TypeRegistry;
use super::runtime::now;
use super::writes::WritePath;
use crate::Config;
use crate::sync::{Waiters, lock};

/// Due messages read from one shard per pass.
const DUE_SCAN_ITEMS_MAX: usize = 256;

/// The longest retry delay.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The node's delivery task and what it shares with senders.
pub(crate) struct Deliverer {
    storage: Arc<dyn Storage>,
    writes: Arc<WritePath>,
    poll_interval: Duration,
    max_retries: u32,
    retry_backoff: Duration,
    /// The entity types to deliver to (the runtime's registry).
    types: Arc<TypeRegistry>,
    /// Shards that may hold pending messages, with a generation bumped by
    /// every send, so a pass forgets a shard only if nothing arrived since.
    shards: Mutex<HashMap<ShardId, u64>>,
    generation: AtomicU64,
    in_flight: Mutex<HashSet<RequestId>>,
    /// Senders waiting for a message's outcome.
    replies: Waiters<RequestId>,
    wake: Notify,
    stopping: AtomicBool,
}

impl Deliverer {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        writes: Arc<WritePath>,
        types: Arc<TypeRegistry>,
        config: &Config,
    ) -> Arc<Self> {
        Arc::new(Deliverer {
            storage,
            writes,
            types,
            poll_interval: config.storage_poll_interval(),
            max_retries: config.storage_message_max_retries(),
            retry_backoff: config.storage_message_retry_backoff(),
            shards: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            in_flight: Mutex::new(HashSet::new()),
            replies: Waiters::new(),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Notes that `shard` has a new pending message and wakes the task.
    pub(crate) fn enqueued(&self, shard: ShardId) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        lock(&self.shards).insert(shard, generation);
        self.wake.notify_one();
    }

    /// Finds every shard in `shards` holding pending messages (at start-up).
    pub(crate) async fn scan(
        &self,
        shards: impl IntoIterator<Item = ShardId>,
    ) -> Result<usize, EntityError> {
        let mut found = 0;
        for shard in shards {
            if self.storage.next_message_due(shard).await?.is_some() {
                lock(&self.shards).insert(shard, 0);
                found += 1;
            }
        }
        if found > 0 {
            self.wake.notify_one();
        }
        Ok(found)
    }

    /// Runs until [`Deliverer::stop`].
    pub(crate) async fn run(self: Arc<Self>) {
        while !self.stopping.load(Ordering::Acquire) {
            let mut woken = pin!(self.wake.notified());
            woken.as_mut().enable();
            let next_due = self.pass().await;
            let mut wait = self.poll_interval;
            if let Some(due) = next_due {
                let until_due = due.as_unix_ms().saturating_sub(now().as_unix_ms());
                wait = wait.min(Duration::from_millis(until_due));
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Stops the task; pending messages stay in storage.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        self.replies.wake_all();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Starts the delivery of every due message; returns when the next
    /// pending one is due.
    async fn pass(self: &Arc<Self>) -> Option<Timestamp> {
        let now = now();
        let shards: Vec<(ShardId, u64)> =
            lock(&self.shards).iter().map(|(s, g)| (*s, *g)).collect();
        let mut earliest: Option<Timestamp> = None;
        for (shard, generation) in shards {
            if !self.writes.owns(shard) {
                // Another node owns it now; it resumes these messages.
                lock(&self.shards).remove(&shard);
                continue;
            }
            match self
                .storage
                .due_messages(shard, now, DUE_SCAN_ITEMS_MAX)
                .await
            {
                Ok(due) => {
                    for message in due {
                        if lock(&self.in_flight).insert(message.request_id) {
                            tokio::spawn(self.clone().deliver(message));
                        }
                    }
                }
                Err(error) => tracing::warn!(%shard, %error, "cannot read due messages"),
            }
            match self.storage.next_message_due(shard).await {
                Ok(None) => {
                    let mut shards = lock(&self.shards);
                    if shards.get(&shard) == Some(&generation) {
                        shards.remove(&shard);
                    }
                }
                Ok(Some(due)) if due > now => earliest = Some(earliest.map_or(due, |e| e.min(due))),
                Ok(Some(_)) => {}
                Err(error) => tracing::warn!(%shard, %error, "cannot read the next due message"),
            }
        }
        earliest
    }

    async fn deliver(self: Arc<Self>, message: StoredMessage) {
        let request = message.request_id;
        let shard = message.shard();
        let target = self
            .types
            .get()
            .and_then(|types| types.get(message.target.entity_type()))
            .cloned();
        let result = match target {
            Some(target) => {
                let key = message.target.clone();
                target
                    .invoke_raw(
                        key,
                        &message.handler,
                        message.payload.clone(),
                        Some(request),
                    )
                    .await
            }
            None if self.is_stopping() => Err(EntityError::ShuttingDown),
            None => Err(EntityError::UnknownEntityType(
                message.target.entity_type().to_owned(),
            )),
        };
        // Only the shard's owner records outcomes; a node that lost the
        // shard meanwhile leaves the message to its new owner.
        let mut batch = match self.writes.batch(shard) {
            Ok(batch) => batch,
            Err(_) => {
                lock(&self.in_flight).remove(&request);
                return;
            }
        };
        match result {
            // Already acknowledged with the state change for an activity;
            // a repeated ack is skipped.
            Ok(reply) => {
                batch.ack(request, reply);
            }
            // Not an attempt: the message waits for the next start, or
            // for the shard's new owner.
            Err(EntityError::ShuttingDown | EntityError::NotOwner { .. }) => {
                lock(&self.in_flight).remove(&request);
                return;
            }
            Err(error) if !error.is_worth_retrying() => {
                batch.dead_letter(request, error.to_string(), now());
            }
            Err(error) => {
                let attempts = message.attempts.saturating_add(1);
                if attempts >= self.max_retries {
                    let reason = format!("gave up after {attempts} attempts: {error}");
                    tracing::warn!(%shard, handler = %message.handler, %reason, "message dead-lettered");
                    batch.dead_letter(request, reason, now());
                } else {
                    let delay = self.backoff(message.attempts);
                    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    tracing::debug!(%shard, handler = %message.handler, %error, attempts, ?delay, "delivery failed; retrying");
                    batch.reschedule(request, now().saturating_add_ms(delay_ms));
                }
            }
        }
        if let Err(error) = self.writes.commit(batch).await {
            tracing::warn!(%shard, %error, "cannot record a delivery outcome; it will be retried");
        }
        lock(&self.in_flight).remove(&request);
        self.replies.wake(&request);
        self.wake.notify_one();
    }

    fn backoff(&self, attempts_before: u32) -> Duration {
        let factor = 2_u32.saturating_pow(attempts_before.min(20));
        self.retry_backoff
            .saturating_mul(factor)
            .min(RETRY_BACKOFF_MAX)
    }

    /// Senders waiting for a message's outcome, by request id.
    pub(crate) fn replies(&self) -> &Waiters<RequestId> {
        &self.replies
    }

    /// The dead letter of `request` in `shard`, if it was dead-lettered.
    pub(crate) async fn dead_letter(
        &self,
        shard: ShardId,
        request: RequestId,
    ) -> Result<Option<DeadLetter>, EntityError> {
        let after = request.get().checked_sub(1).map(RequestId::new);
        let letters = self.storage.dead_letters(shard, after, 1).await?;
        Ok(letters
            .into_iter()
            .find(|d| d.message.request_id == request))
    }
}

impl EntityError {
    /// Whether delivering the same message again could succeed.
    fn is_worth_retrying(&self) -> bool {
        !matches!(
            self,
            EntityError::UnknownEntityType(_)
                | EntityError::UnknownHandler { .. }
                | EntityError::NotCallable { .. }
                | EntityError::InvalidEntityId(_)
                | EntityError::Decode { .. }
                | EntityError::Encode { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let config = Config::builder()
            .storage_message_retry_backoff(Duration::from_millis(100))
            .build()
            .unwrap();
        let storage: Arc<dyn Storage> = Arc::new(shoal_storage::MemoryStorage::new());
        let d = Deliverer::new(
            storage.clone(),
            WritePath::local(storage),
            Arc::new(std::sync::OnceLock::new()),
            &config,
        );
        assert_eq!(d.backoff(0), Duration::from_millis(100));
        assert_eq!(d.backoff(1), Duration::from_millis(200));
        assert_eq!(d.backoff(5), Duration::from_millis(3_200));
        assert_eq!(d.backoff(10), Duration::from_secs(60));
        assert_eq!(d.backoff(u32::MAX), Duration::from_secs(60));
    }
}
