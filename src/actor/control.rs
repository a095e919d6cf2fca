//! The control channel of an actor: an unbounded, rarely used queue for
//! stop requests, watches, escalations and termination notices.
//!
//! A plain `tokio::sync::mpsc::unbounded_channel` allocates its first block
//! eagerly (over a kilobyte per actor); this queue allocates nothing until a
//! control message is sent, and its emptiness check on the hot path is one
//! atomic load.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::Notify;

use super::runner::Control;
use crate::sync::lock;

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct ControlSender(Arc<Shared>);

/// The receiving side, owned by the actor's runner.
pub(crate) struct ControlReceiver(Arc<Shared>);

struct Shared {
    queue: Mutex<VecDeque<Control>>,
    len: AtomicUsize,
    closed: AtomicBool,
    waker: AtomicWaker,
    on_close: Notify,
}

pub(crate) fn channel() -> (ControlSender, ControlReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        len: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        on_close: Notify::new(),
    });
    (ControlSender(shared.clone()), ControlReceiver(shared))
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Control>> {
        lock(&self.queue)
    }
}

impl ControlSender {
    /// Queues `control`; gives it back if the actor has stopped.
    pub(crate) fn send(&self, control: Control) -> Result<(), Control> {
        {
            let mut queue = self.0.queue();
            // Checked under the lock: `close` sets the flag under it too, so
            // nothing is queued after the receiver's final drain.
            if self.0.closed.load(Ordering::Acquire) {
                return Err(control);
            }
            queue.push_back(control);
            self.0.len.fetch_add(1, Ordering::SeqCst);
        }
        self.0.waker.wake();
        Ok(())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Resolves once the receiver has closed the channel.
    pub(crate) async fn closed(&self) {
        loop {
            let mut notified = pin!(self.0.on_close.notified());
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl ControlReceiver {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Control> {
        if self.0.len.load(Ordering::SeqCst) == 0 {
            self.0.waker.register(cx.waker());
            // A send between the first check and the registration would have
            // woken the old waker; check again now that ours is in place.
            if self.0.len.load(Ordering::SeqCst) == 0 {
                return Poll::Pending;
            }
        }
        match self.try_recv() {
            Some(control) => Poll::Ready(control),
            None => Poll::Pending,
        }
    }

    pub(crate) fn try_recv(&mut self) -> Option<Control> {
        let mut queue = self.0.queue();
        let control = queue.pop_front()?;
        self.0.len.fetch_sub(1, Ordering::SeqCst);
        Some(control)
    }

    /// Refuses further sends; queued messages can still be drained with
    /// [`ControlReceiver::try_recv`].
    pub(crate) fn close(&mut self) {
        {
            let _queue = self.0.queue();
            self.0.closed.store(true, Ordering::Release);
        }
        self.0.on_close.notify_waiters();
    }
}

impl Drop for ControlReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn delivers_in_order_and_refuses_after_close() {
        let (tx, mut rx) = channel();
        tx.send(Control::Stop).map_err(|_| ()).unwrap();
        tx.send(Control::ChildStopped(crate::actor::ActorId::for_tests(7)))
            .map_err(|_| ())
            .unwrap();
        assert!(matches!(
            poll_fn(|cx| rx.poll_recv(cx)).await,
            Control::Stop
        ));
        assert!(matches!(rx.try_recv(), Some(Control::ChildStopped(_))));
        assert!(rx.try_recv().is_none());
        let waiter = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        rx.close();
        assert!(tx.is_closed());
        assert!(tx.send(Control::Stop).is_err());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("closed() resolves")
            .unwrap();
    }

    #[tokio::test]
    async fn a_send_wakes_a_waiting_receiver() {
        let (tx, mut rx) = channel();
        let recv =
            tokio::spawn(
                async move { matches!(poll_fn(|cx| rx.poll_recv(cx)).await, Control::Stop) },
            );
        tokio::task::yield_now().await;
        tx.send(Control::Stop).map_err(|_| ()).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), recv).await;
        assert!(got.expect("woken").unwrap());
    }
}
