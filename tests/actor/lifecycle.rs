//! Starting, stopping, hooks, watches, children and system shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal::actor::{
    Actor, ActorSystem, Addr, Context, Handler, Message, SendError, StopReason, Terminated,
};
use tokio::sync::mpsc;

use crate::{eventually, within};

/// Counts hook calls so tests can see what ran.
#[derive(Default, Clone)]
pub struct Hooks {
    pub started: Arc<AtomicUsize>,
    pub stopped: Arc<AtomicUsize>,
}

pub struct Probe {
    pub hooks: Hooks,
    pub value: u64,
}

impl Probe {
    pub fn new(hooks: &Hooks) -> Self {
        Probe {
            hooks: hooks.clone(),
            value: 0,
        }
    }
}

impl Actor for Probe {
    async fn started(&mut self, _ctx: &mut Context<Self>) {
        self.hooks.started.fetch_add(1, Ordering::SeqCst);
    }
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.hooks.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct Add(pub u64);
impl Message for Add {
    type Result = u64;
}
impl Handler<Add> for Probe {
    async fn handle(&mut self, msg: Add, _ctx: &mut Context<Self>) -> u64 {
        self.value += msg.0;
        self.value
    }
}

pub struct Panic;
impl Message for Panic {
    type Result = ();
}
impl Handler<Panic> for Probe {
    async fn handle(&mut self, _: Panic, _ctx: &mut Context<Self>) {
        panic!("probe asked to panic");
    }
}

pub struct StopSelf;
impl Message for StopSelf {
    type Result = ();
}
impl Handler<StopSelf> for Probe {
    async fn handle(&mut self, _: StopSelf, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Waits on I/O-like work inside the handler.
pub struct SlowAdd(pub u64, pub Duration);
impl Message for SlowAdd {
    type Result = u64;
}
impl Handler<SlowAdd> for Probe {
    async fn handle(&mut self, msg: SlowAdd, _ctx: &mut Context<Self>) -> u64 {
        tokio::time::sleep(msg.1).await;
        self.value += msg.0;
        self.value
    }
}

#[tokio::test]
async fn send_do_send_and_hooks() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let addr = system.spawn(Probe::new(&hooks));
    addr.do_send(Add(1)).await.unwrap();
    addr.try_send(Add(1)).unwrap();
    assert_eq!(addr.send(Add(1)).await.unwrap(), 3);
    assert_eq!(hooks.started.load(Ordering::SeqCst), 1);
    addr.stop();
    within("stop", addr.stopped()).await;
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stopped_actor_rejects_sends() {
    let system = ActorSystem::new();
    let addr = system.spawn(Probe::new(&Hooks::default()));
    addr.send(StopSelf).await.unwrap();
    within("stop", addr.stopped()).await;
    assert!(!addr.is_alive());
    assert!(matches!(
        addr.send(Add(1)).await,
        Err(SendError::MailboxClosed)
    ));
    assert!(matches!(
        addr.do_send(Add(1)).await,
        Err(SendError::MailboxClosed)
    ));
    assert!(matches!(
        addr.try_send(Add(1)),
        Err(SendError::MailboxClosed)
    ));
}

#[tokio::test]
async fn async_handlers_do_not_block_other_actors() {
    let system = ActorSystem::new();
    let slow = system.spawn(Probe::new(&Hooks::default()));
    let fast = system.spawn(Probe::new(&Hooks::default()));
    let pending = tokio::spawn({
        let slow = slow.clone();
        async move { slow.send(SlowAdd(1, Duration::from_secs(3))).await }
    });
    // The fast actor answers while the slow one is still waiting.
    for _ in 0..100 {
        within("fast actor", fast.send(Add(1))).await.unwrap();
    }
    assert!(!pending.is_finished());
    assert_eq!(within("slow actor", pending).await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn a_panic_fails_only_that_call_and_never_hangs_the_caller() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let addr = system.spawn(Probe::new(&hooks));
    let other = system.spawn(Probe::new(&Hooks::default()));
    match within("panicking send", addr.send(Panic)).await {
        Err(SendError::ActorFailed(f)) => assert!(f.message().contains("probe asked to panic")),
        other => panic!("expected ActorFailed, got {other:?}"),
    }
    // Default strategy is Stop: the actor is gone, its stopped hook ran.
    within("stop", addr.stopped()).await;
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 1);
    // The runtime and other actors are unaffected.
    assert_eq!(other.send(Add(5)).await.unwrap(), 5);
}

#[tokio::test]
async fn dropping_every_address_stops_the_actor() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let addr = system.spawn(Probe::new(&hooks));
    addr.send(Add(1)).await.unwrap();
    drop(addr);
    eventually("unreachable actor stops", || {
        hooks.stopped.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("actor count drops", || system.actor_count() == 0).await;
}

/// Records termination notices.
struct Watcher {
    seen: mpsc::UnboundedSender<Terminated>,
}
impl Actor for Watcher {}
impl Handler<Terminated> for Watcher {
    async fn handle(&mut self, msg: Terminated, _ctx: &mut Context<Self>) {
        let _ = self.seen.send(msg);
    }
}
struct Watch(Addr<Probe>);
impl Message for Watch {
    type Result = ();
}
impl Handler<Watch> for Watcher {
    async fn handle(&mut self, msg: Watch, ctx: &mut Context<Self>) {
        ctx.watch(&msg.0);
    }
}

#[tokio::test]
async fn watch_delivers_termination() {
    let system = ActorSystem::new();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let watcher = system.spawn(Watcher { seen: tx });

    tracing::info!("--- a normal stop");
    let a = system.spawn(Probe::new(&Hooks::default()));
    watcher.send(Watch(a.clone())).await.unwrap();
    a.stop();
    let notice = within("notice", seen.recv()).await.unwrap();
    assert_eq!(notice.id, a.id());
    assert_eq!(notice.reason, StopReason::Normal);

    tracing::info!("--- a failure");
    let b = system.spawn(Probe::new(&Hooks::default()));
    watcher.send(Watch(b.clone())).await.unwrap();
    let _ = b.send(Panic).await;
    let notice = within("notice", seen.recv()).await.unwrap();
    assert_eq!(notice.id, b.id());
    assert!(matches!(notice.reason, StopReason::Failed(ref f) if f.message().contains("panic")));

    tracing::info!("--- watching an actor that has already stopped");
    within("stop", b.stopped()).await;
    watcher.send(Watch(b.clone())).await.unwrap();
    let notice = within("notice", seen.recv()).await.unwrap();
    assert_eq!(notice.reason, StopReason::AlreadyStopped);
}

/// A parent that spawns `n` children in `started` and hands out their
/// addresses.
struct Parent {
    n: usize,
    hooks: Hooks,
    children: Vec<Addr<Probe>>,
}
impl Actor for Parent {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        for _ in 0..self.n {
            let child = ctx.spawn_child(Probe::new(&self.hooks));
            self.children.push(child);
        }
    }
}
struct Children;
impl Message for Children {
    type Result = Vec<Addr<Probe>>;
}
impl Handler<Children> for Parent {
    async fn handle(&mut self, _: Children, _ctx: &mut Context<Self>) -> Vec<Addr<Probe>> {
        self.children.clone()
    }
}

#[tokio::test]
async fn children_stop_with_their_parent() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let parent = system.spawn(Parent {
        n: 5,
        hooks: hooks.clone(),
        children: Vec::new(),
    });
    let children = parent.send(Children).await.unwrap();
    assert_eq!(children.len(), 5);
    for c in &children {
        assert_eq!(c.send(Add(1)).await.unwrap(), 1);
    }
    parent.stop();
    within("parent stop", parent.stopped()).await;
    // The parent waits for its children before it is stopped itself.
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 5);
    for c in &children {
        assert!(!c.is_alive());
    }
}

#[tokio::test]
async fn shutdown_waits_for_every_actor() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let mut addrs = Vec::new();
    for _ in 0..50 {
        addrs.push(system.spawn(Probe::new(&hooks)));
    }
    let parent = system.spawn(Parent {
        n: 10,
        hooks: hooks.clone(),
        children: Vec::new(),
    });
    parent.send(Children).await.unwrap();
    // One actor is busy in a slow handler when shutdown starts.
    let busy = addrs[0].clone();
    let slow = tokio::spawn(async move { busy.send(SlowAdd(1, Duration::from_millis(200))).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    within("shutdown", system.shutdown()).await;
    assert_eq!(system.actor_count(), 0);
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 60);
    // The busy handler was allowed to finish and answer.
    assert_eq!(within("slow reply", slow).await.unwrap().unwrap(), 1);
    // Spawning after shutdown gives an actor that stops at once.
    let late = system.spawn(Probe::new(&hooks));
    within("late actor stops", late.stopped()).await;
}

#[tokio::test]
async fn queued_messages_of_a_stopping_actor_get_no_reply() {
    let system = ActorSystem::new();
    let addr = system.spawn(Probe::new(&Hooks::default()));
    // Occupy the actor, queue a message behind it, then stop it.
    let busy = tokio::spawn({
        let a = addr.clone();
        async move { a.send(SlowAdd(1, Duration::from_millis(100))).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let queued = tokio::spawn({
        let a = addr.clone();
        async move { a.send(Add(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    addr.stop();
    assert_eq!(within("busy", busy).await.unwrap().unwrap(), 1);
    assert!(matches!(
        within("queued", queued).await.unwrap(),
        Err(SendError::NoReply)
    ));
}
