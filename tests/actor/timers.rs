//! `run_later` and `run_interval`: timers fire, cancelled timers don't.
//! Time is paused, so these tests are exact and fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal::actor::{Actor, ActorSystem, Addr, Context, Handler, Message, SpawnHandle};
use tokio::sync::oneshot;

pub struct Ticker {
    ticks: Arc<AtomicUsize>,
}
impl Actor for Ticker {}

#[derive(Clone)]
struct Tick;
impl Message for Tick {
    type Result = ();
}
impl Handler<Tick> for Ticker {
    async fn handle(&mut self, _: Tick, _ctx: &mut Context<Self>) {
        self.ticks.fetch_add(1, Ordering::SeqCst);
    }
}

enum Schedule {
    Later(Duration),
    Every(Duration),
}
impl Message for Schedule {
    type Result = SpawnHandle;
}
impl Handler<Schedule> for Ticker {
    async fn handle(&mut self, msg: Schedule, ctx: &mut Context<Self>) -> SpawnHandle {
        match msg {
            Schedule::Later(d) => ctx.run_later(d, Tick),
            Schedule::Every(d) => ctx.run_interval(d, Tick),
        }
    }
}

/// Holds the actor busy until released.
struct Block(oneshot::Receiver<()>);
impl Message for Block {
    type Result = ();
}
impl Handler<Block> for Ticker {
    async fn handle(&mut self, msg: Block, _ctx: &mut Context<Self>) {
        let _ = msg.0.await;
    }
}

fn ticker(system: &ActorSystem) -> (Addr<Ticker>, Arc<AtomicUsize>) {
    let ticks = Arc::new(AtomicUsize::new(0));
    let addr = system.spawn(Ticker {
        ticks: ticks.clone(),
    });
    (addr, ticks)
}

#[tokio::test(start_paused = true)]
async fn run_later_fires_once_after_the_delay() {
    let system = ActorSystem::new();
    let (addr, ticks) = ticker(&system);
    addr.send(Schedule::Later(Duration::from_secs(5)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_timers_do_not_fire() {
    let system = ActorSystem::new();
    let (addr, ticks) = ticker(&system);
    let later = addr
        .send(Schedule::Later(Duration::from_secs(1)))
        .await
        .unwrap();
    later.cancel();
    assert!(later.is_cancelled());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_timer_cancelled_after_it_queued_its_message_still_does_not_fire() {
    let system = ActorSystem::new();
    let (addr, ticks) = ticker(&system);
    let later = addr
        .send(Schedule::Later(Duration::from_millis(10)))
        .await
        .unwrap();
    let (release, blocked) = oneshot::channel();
    addr.do_send(Block(blocked)).await.unwrap();
    // The timer fires while the actor is blocked: its Tick waits in the mailbox.
    tokio::time::sleep(Duration::from_millis(50)).await;
    later.cancel();
    release.send(()).unwrap();
    // A round trip after the queued Tick: it was dropped, not handled.
    addr.send(Schedule::Later(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(ticks.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn run_interval_repeats_until_cancelled() {
    let system = ActorSystem::new();
    let (addr, ticks) = ticker(&system);
    let every = addr
        .send(Schedule::Every(Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 5);
    every.cancel();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn timers_end_when_the_actor_stops() {
    let system = ActorSystem::new();
    let (addr, ticks) = ticker(&system);
    addr.send(Schedule::Every(Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 2);
    addr.stop();
    addr.stopped().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), 2);
    // Nothing the actor started is still running.
    assert_eq!(system.actor_count(), 0);
}
