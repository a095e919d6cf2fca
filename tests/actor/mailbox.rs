//! Bounded mailboxes: `MailboxFull`, backpressure, timeouts.

use std::time::Duration;

use shoal::actor::{Actor, ActorSystem, Context, Handler, Message, SendError};
use tokio::sync::watch;

use crate::within;

/// Blocks in its handler until the gate opens, so its mailbox fills up.
struct Gated {
    gate: watch::Receiver<bool>,
    handled: u64,
}
impl Actor for Gated {}

struct Work;
impl Message for Work {
    type Result = u64;
}
impl Handler<Work> for Gated {
    async fn handle(&mut self, _: Work, _ctx: &mut Context<Self>) -> u64 {
        let _ = self.gate.wait_for(|open| *open).await;
        self.handled += 1;
        self.handled
    }
}

fn gated(
    system: &ActorSystem,
    capacity: usize,
) -> (shoal::actor::Addr<Gated>, watch::Sender<bool>) {
    let (open, gate) = watch::channel(false);
    let addr = system.spawn_with_capacity(Gated { gate, handled: 0 }, capacity);
    (addr, open)
}

#[tokio::test]
async fn try_send_fails_at_once_when_full() {
    let system = ActorSystem::new();
    let (addr, open) = gated(&system, 4);
    // The first message is taken into the handler (blocked on the gate); the
    // next four fill the mailbox.
    addr.try_send(Work).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..4 {
        addr.try_send(Work).unwrap();
    }
    assert_eq!(addr.free_capacity(), 0);
    assert!(matches!(addr.try_send(Work), Err(SendError::MailboxFull)));
    assert!(SendError::MailboxFull.is_retryable());
    open.send(true).unwrap();
    // All five accepted messages are handled.
    assert_eq!(within("drain", addr.send(Work)).await.unwrap(), 6);
}

#[tokio::test]
async fn do_send_waits_for_room() {
    let system = ActorSystem::new();
    let (addr, open) = gated(&system, 2);
    addr.do_send(Work).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    addr.do_send(Work).await.unwrap();
    addr.do_send(Work).await.unwrap();
    // The mailbox is full: the next do_send waits instead of failing.
    let waiting = tokio::spawn({
        let addr = addr.clone();
        async move { addr.do_send(Work).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "do_send must wait while the mailbox is full"
    );
    open.send(true).unwrap();
    within("do_send completes", waiting).await.unwrap().unwrap();
    assert_eq!(within("drain", addr.send(Work)).await.unwrap(), 5);
}

#[tokio::test]
async fn send_timeout_gives_up() {
    let system = ActorSystem::new();
    let (addr, open) = gated(&system, 8);
    let r = addr.send_timeout(Work, Duration::from_millis(30)).await;
    assert!(matches!(r, Err(SendError::Timeout)), "{r:?}");
    open.send(true).unwrap();
    // The timed-out message was accepted and still gets handled.
    assert_eq!(within("next", addr.send(Work)).await.unwrap(), 2);
}

#[tokio::test]
async fn default_capacity_is_256_and_configurable() {
    assert_eq!(shoal::actor::DEFAULT_MAILBOX_CAPACITY, 256);
    let system = ActorSystem::new();
    let (addr, _open) = gated(&system, 256);
    assert_eq!(addr.free_capacity(), 256);
    let small = ActorSystem::builder().mailbox_capacity(3).build().unwrap();
    let (gate_tx, gate) = watch::channel(false);
    let addr = small.spawn(Gated { gate, handled: 0 });
    assert_eq!(addr.free_capacity(), 3);
    drop(gate_tx);
}
