//! Supervision strategies: restart keeps the address, restarts are bounded,
//! escalation restarts the parent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal::actor::{
    Actor, ActorSystem, Addr, Context, Handler, Message, SendError, SupervisorStrategy,
};

use crate::lifecycle::{Add, Hooks, Panic, Probe};
use crate::within;

#[tokio::test]
async fn restart_on_panic_keeps_the_address_valid() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let h = hooks.clone();
    let addr = system.spawn_with_strategy(
        move || Probe::new(&h),
        SupervisorStrategy::restart(5, Duration::from_secs(10)),
    );
    assert_eq!(addr.send(Add(10)).await.unwrap(), 10);
    assert!(matches!(
        addr.send(Panic).await,
        Err(SendError::ActorFailed(_))
    ));
    // Same address, fresh state, started again; stopped not called on the
    // replaced instance.
    assert_eq!(within("after restart", addr.send(Add(1))).await.unwrap(), 1);
    assert_eq!(hooks.started.load(Ordering::SeqCst), 2);
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 0);
    assert!(addr.is_alive());
}

#[tokio::test]
async fn stops_after_max_restarts_within_the_window() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let h = hooks.clone();
    let addr = system.spawn_with_strategy(
        move || Probe::new(&h),
        SupervisorStrategy::restart(2, Duration::from_secs(60)),
    );
    for _ in 0..2 {
        let _ = addr.send(Panic).await;
        assert_eq!(within("restarted", addr.send(Add(1))).await.unwrap(), 1);
    }
    // The third failure within the window is one too many.
    let _ = addr.send(Panic).await;
    within("final stop", addr.stopped()).await;
    assert_eq!(hooks.started.load(Ordering::SeqCst), 3);
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 1);
    assert!(matches!(
        addr.send(Add(1)).await,
        Err(SendError::MailboxClosed)
    ));
}

/// Fails on demand via its child: the child escalates.
struct Supervisor {
    starts: Arc<AtomicUsize>,
    child: Option<Addr<Probe>>,
    child_strategy: SupervisorStrategy,
}
impl Actor for Supervisor {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        self.starts.fetch_add(1, Ordering::SeqCst);
        let hooks = Hooks::default();
        self.child =
            Some(ctx.spawn_child_with_strategy(move || Probe::new(&hooks), self.child_strategy));
    }
}
struct GetChild;
impl Message for GetChild {
    type Result = Addr<Probe>;
}
impl Handler<GetChild> for Supervisor {
    async fn handle(&mut self, _: GetChild, _ctx: &mut Context<Self>) -> Addr<Probe> {
        self.child.clone().expect("child spawned in started")
    }
}

#[tokio::test]
async fn escalate_restarts_the_parent() {
    let system = ActorSystem::new();
    let starts = Arc::new(AtomicUsize::new(0));
    let s = starts.clone();
    let parent = system.spawn_with_strategy(
        move || Supervisor {
            starts: s.clone(),
            child: None,
            child_strategy: SupervisorStrategy::Escalate,
        },
        SupervisorStrategy::restart(3, Duration::from_secs(10)),
    );
    let first_child = parent.send(GetChild).await.unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    let _ = first_child.send(Panic).await;
    // The parent fails and restarts: its started hook runs again and spawns
    // a new child; the failed child is gone.
    within("parent restarted", async {
        while starts.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    within("old child stopped", first_child.stopped()).await;
    let second_child = within("new child", parent.send(GetChild)).await.unwrap();
    assert_ne!(second_child.id(), first_child.id());
    assert_eq!(second_child.send(Add(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_restarting_child_does_not_disturb_its_parent() {
    let system = ActorSystem::new();
    let starts = Arc::new(AtomicUsize::new(0));
    let parent = system.spawn(Supervisor {
        starts: starts.clone(),
        child: None,
        child_strategy: SupervisorStrategy::restart(1, Duration::from_secs(10)),
    });
    let child = parent.send(GetChild).await.unwrap();
    let _ = child.send(Panic).await;
    assert_eq!(
        within("child restarted", child.send(Add(2))).await.unwrap(),
        2
    );
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert!(parent.is_alive());
}

/// Panics in `started`: counts as a failure and goes through supervision.
struct BadStart(Arc<AtomicUsize>);
impl Actor for BadStart {
    async fn started(&mut self, _ctx: &mut Context<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("cannot start");
    }
}

#[tokio::test]
async fn a_panicking_started_hook_is_a_bounded_failure() {
    let system = ActorSystem::new();
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let addr = system.spawn_with_strategy(
        move || BadStart(t.clone()),
        SupervisorStrategy::restart(3, Duration::from_secs(10)),
    );
    within("gives up", addr.stopped()).await;
    assert_eq!(tries.load(Ordering::SeqCst), 4);
}
