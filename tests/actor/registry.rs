//! The name registry: lookups, cleanup on death, stability across restarts.

use std::time::Duration;

use shoal::actor::{ActorSystem, RegistryError, SupervisorStrategy};

use crate::lifecycle::{Add, Hooks, Panic, Probe};
use crate::{eventually, within};

#[tokio::test]
async fn register_lookup_and_cleanup_on_death() {
    let system = ActorSystem::new();
    let addr = system.spawn(Probe::new(&Hooks::default()));
    system.register("store", &addr).unwrap();
    let found = system.lookup::<Probe>("store").expect("registered");
    assert_eq!(found, addr);
    assert_eq!(found.send(Add(2)).await.unwrap(), 2);
    // A lookup with the wrong type finds nothing.
    assert!(system.lookup::<crate::timers::Ticker>("store").is_none());
    // The name is taken while the actor lives.
    let other = system.spawn(Probe::new(&Hooks::default()));
    assert_eq!(
        system.register("store", &other),
        Err(RegistryError::NameTaken("store".into()))
    );
    addr.stop();
    within("stop", addr.stopped()).await;
    eventually("entry removed", || {
        system.lookup::<Probe>("store").is_none()
    })
    .await;
    // Now the name is free, and a stopped actor cannot take one.
    system.register("store", &other).unwrap();
    assert_eq!(
        system.register("gone", &addr),
        Err(RegistryError::ActorStopped)
    );
    assert!(system.unregister("store"));
    assert!(!system.unregister("store"));
}

#[tokio::test]
async fn registry_entry_survives_restarts() {
    let system = ActorSystem::new();
    let hooks = Hooks::default();
    let h = hooks.clone();
    let addr = system.spawn_with_strategy(
        move || Probe::new(&h),
        SupervisorStrategy::restart(3, Duration::from_secs(10)),
    );
    system.register("svc", &addr).unwrap();
    let _ = addr.send(Panic).await;
    let found = system
        .lookup::<Probe>("svc")
        .expect("entry kept across restart");
    // The same address reaches the fresh instance (state reset to 0).
    assert_eq!(
        within("send after restart", found.send(Add(1)))
            .await
            .unwrap(),
        1
    );
}
