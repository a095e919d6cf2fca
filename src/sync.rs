//! Small synchronisation helpers shared by the runtime.
//!
//! [`lock`]: every mutex in Shoal guards data that each critical section
//! leaves consistent (one insert, remove or push), so a poisoned lock — a
//! panic elsewhere while it was held — still guards intact data and is
//! simply taken.
//!
//! [`Waiters`]: tasks waiting for something identified by a key (a
//! deferred's resolution, a message's delivery outcome), woken when it
//! happens. An entry exists only while someone waits on it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Takes `mutex`, whether or not a panicking holder poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tasks waiting on keyed events.
pub(crate) struct Waiters<K> {
    waiting: Mutex<HashMap<K, Arc<Notify>>>,
}

/// A registration in [`Waiters`]; dropping it leaves (the last one out
/// removes the entry).
pub(crate) struct Waiter<'a, K: Eq + Hash + Clone> {
    waiters: &'a Waiters<K>,
    key: K,
    notify: Arc<Notify>,
}

impl<K: Eq + Hash + Clone> Waiters<K> {
    pub(crate) fn new() -> Self {
        Waiters {
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Registers interest in `key`. Create the waiter before checking the
    /// condition, then [`Waiter::wait`] if it does not hold yet: an event in
    /// between is not lost.
    pub(crate) fn waiter(&self, key: K) -> Waiter<'_, K> {
        let notify = lock(&self.waiting).entry(key.clone()).or_default().clone();
        Waiter {
            waiters: self,
            key,
            notify,
        }
    }

    /// Wakes everyone waiting on `key`.
    pub(crate) fn wake(&self, key: &K) {
        if let Some(notify) = lock(&self.waiting).get(key) {
            notify.notify_waiters();
        }
    }

    /// Wakes everyone (e.g. at shutdown, so they re-check and leave).
    pub(crate) fn wake_all(&self) {
        for notify in lock(&self.waiting).values() {
            notify.notify_waiters();
        }
    }
}

impl<K: Eq + Hash + Clone> Waiter<'_, K> {
    /// Evaluates `ready` until it yields a value, waiting for a wake-up
    /// between evaluations; no wake-up between an evaluation and the wait
    /// is missed.
    pub(crate) async fn wait_for<T, E, F, Fut>(&self, mut ready: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        loop {
            let mut notified = std::pin::pin!(self.notify.notified());
            notified.as_mut().enable();
            if let Some(value) = ready().await? {
                return Ok(value);
            }
            notified.await;
        }
    }
}

impl<K: Eq + Hash + Clone> Drop for Waiter<'_, K> {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiters.waiting);
        // The map's reference and ours: nobody else waits on this key.
        if waiting
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
            && Arc::strong_count(&self.notify) == 2
        {
            waiting.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_a_waiter_and_the_entry_goes_with_the_last_one() {
        let waiters = Arc::new(Waiters::<u32>::new());
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let (waiters, ready) = (waiters.clone(), ready.clone());
            async move {
                let waiter = waiters.waiter(7);
                waiter
                    .wait_for(|| {
                        let ready = ready.clone();
                        async move {
                            Ok::<_, ()>(
                                ready
                                    .load(std::sync::atomic::Ordering::SeqCst)
                                    .then_some(()),
                            )
                        }
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished());
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        waiters.wake(&7);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            lock(&waiters.waiting).is_empty(),
            "the last waiter removed the entry"
        );
    }
}
