//! Activation, passivation, persistence across restarts, atomicity,
//! idempotency keys, mailbox limits and state evolution.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal::entity::{
    Activity, ActivityContext, Entity, EntityError, Handlers, Rpc, RpcContext, Visibility,
};
use shoal::{Config, Node};

use crate::fixtures::{Add, AddThenFail, AddThenPanic, Count, Counter, Get, GetDoubled, Pay, Wait};
use crate::within;

async fn node_at(dir: &std::path::Path, counter: Counter, config: Config) -> Node {
    within(
        "node start",
        Node::builder()
            .data_dir(dir)
            .config(config)
            .register(counter)
            .start(),
    )
    .await
    .expect("node starts")
}

#[tokio::test]
async fn rpc_activity_and_method_on_memory_and_redb() {
    let dir = tempfile::tempdir().unwrap();
    for node in [
        Node::builder()
            .register(Counter::new())
            .start()
            .await
            .unwrap(),
        node_at(dir.path(), Counter::new(), Config::default()).await,
    ] {
        let c = node.client::<Counter>("c-1");
        assert_eq!(c.call(Get, ()).await.unwrap(), 0);
        assert_eq!(c.call(Add, 5).await.unwrap(), Ok(5));
        assert_eq!(c.call(Add, -2).await.unwrap(), Ok(3));
        assert_eq!(c.call(GetDoubled, ()).await.unwrap(), 6);
        // Entities are independent.
        assert_eq!(
            node.client::<Counter>("c-2").call(Get, ()).await.unwrap(),
            0
        );
        assert_eq!(node.active_entities(), 2);
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn state_survives_passivation() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::builder()
        .entity_max_idle_time(Duration::from_millis(50))
        .build()
        .unwrap();
    let node = node_at(dir.path(), Counter::new(), config).await;
    let c = node.client::<Counter>("idle");
    assert_eq!(c.call(Add, 7).await.unwrap(), Ok(7));
    assert_eq!(node.active_entities(), 1);
    tracing::info!("--- wait for passivation");
    within("passivation", async {
        while node.active_entities() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tracing::info!("--- reactivate: the state comes back from storage");
    assert_eq!(c.call(Get, ()).await.unwrap(), 7);
    assert_eq!(c.call(Add, 1).await.unwrap(), Ok(8));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_survives_a_restart_of_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_at(dir.path(), Counter::new(), Config::default()).await;
    for i in 0..20 {
        node.client::<Counter>(format!("e-{i}"))
            .call(Add, i)
            .await
            .unwrap()
            .unwrap();
    }
    node.shutdown().await.unwrap();
    // After shutdown, calls are refused clearly.
    assert!(matches!(
        node.client::<Counter>("e-1").call(Get, ()).await,
        Err(EntityError::ShuttingDown)
    ));
    let node = node_at(dir.path(), Counter::new(), Config::default()).await;
    for i in 0..20 {
        assert_eq!(
            node.client::<Counter>(format!("e-{i}"))
                .call(Get, ())
                .await
                .unwrap(),
            i
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failing_or_panicking_activity_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_at(dir.path(), Counter::new(), Config::default()).await;
    let c = node.client::<Counter>("atomic");
    assert_eq!(c.call(Add, 10).await.unwrap(), Ok(10));

    tracing::info!("--- an activity returning Err");
    assert_eq!(
        c.call(AddThenFail, 5).await.unwrap(),
        Err("refused 5".to_owned())
    );
    assert_eq!(c.call(Get, ()).await.unwrap(), 10);

    tracing::info!("--- an activity that panics fails only that call");
    match c.call(AddThenPanic, 5).await {
        Err(EntityError::HandlerPanicked { handler, message }) => {
            assert_eq!(handler, "add_then_panic");
            assert!(message.contains("add_then_panic(5)"), "{message}");
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert_eq!(c.call(Get, ()).await.unwrap(), 10);
    assert_eq!(c.call(Add, 1).await.unwrap(), Ok(11));
    node.shutdown().await.unwrap();

    tracing::info!("--- and nothing half-done reached the disk");
    let node = node_at(dir.path(), Counter::new(), Config::default()).await;
    let c = node.client::<Counter>("atomic");
    assert_eq!(c.call(Get, ()).await.unwrap(), 11);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idempotency_key_runs_the_body_once_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let counter = Counter::new();
    let node = node_at(dir.path(), counter.clone(), Config::default()).await;
    let c = node.client::<Counter>("idem");
    assert_eq!(c.call_with_key(Add, 5, "k1").await.unwrap(), Ok(5));
    assert_eq!(c.call_with_key(Add, 5, "k1").await.unwrap(), Ok(5));
    assert_eq!(c.call_with_key(Add, 5, "k2").await.unwrap(), Ok(10));
    // A failed result is stored too: the same key gives the same answer.
    assert_eq!(
        c.call_with_key(AddThenFail, 1, "k3").await.unwrap(),
        Err("refused 1".into())
    );
    assert_eq!(counter.runs.load(Ordering::SeqCst), 2);
    node.shutdown().await.unwrap();

    let node = node_at(dir.path(), counter.clone(), Config::default()).await;
    let c = node.client::<Counter>("idem");
    assert_eq!(
        c.call_with_key(Add, 5, "k1").await.unwrap(),
        Ok(5),
        "the stored result"
    );
    assert_eq!(c.call(Get, ()).await.unwrap(), 10);
    assert_eq!(
        counter.runs.load(Ordering::SeqCst),
        2,
        "the body never ran again"
    );
    // Keys are per entity.
    assert_eq!(
        node.client::<Counter>("other")
            .call_with_key(Add, 5, "k1")
            .await
            .unwrap(),
        Ok(5)
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_handler_can_name_its_own_idempotency_key() {
    let counter = Counter::new();
    let node = Node::builder()
        .register(counter.clone())
        .start()
        .await
        .unwrap();
    let c = node.client::<Counter>("payee");
    assert_eq!(c.call(Pay, ("p-1".into(), 5)).await.unwrap(), Ok(5));
    // Same payment id, even with other parameters: the stored result.
    assert_eq!(c.call(Pay, ("p-1".into(), 7)).await.unwrap(), Ok(5));
    assert_eq!(c.call(Pay, ("p-2".into(), 7)).await.unwrap(), Ok(12));
    // A key given per call takes precedence over the handler's.
    assert_eq!(
        c.call_with_key(Pay, ("p-1".into(), 1), "manual")
            .await
            .unwrap(),
        Ok(13)
    );
    assert_eq!(counter.runs.load(Ordering::SeqCst), 3);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_mailbox_applies_backpressure() {
    let counter = Counter::new();
    let config = Config::builder()
        .entity_mailbox_capacity(2)
        .build()
        .unwrap();
    let node = Node::builder()
        .config(config)
        .register(counter.clone())
        .start()
        .await
        .unwrap();
    let c = node.client::<Counter>("busy");
    // One call blocks in the handler, two fill the mailbox, the rest wait.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.call(Wait, ()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        calls.iter().all(|t| !t.is_finished()),
        "all wait while the entity is blocked"
    );
    counter.gate.add_permits(6);
    let mut results = Vec::new();
    for call in calls {
        results.push(within("call", call).await.unwrap().unwrap().unwrap());
    }
    results.sort_unstable();
    assert_eq!(
        results,
        vec![1, 2, 3, 4, 5, 6],
        "each ran exactly once, one at a time"
    );
    node.shutdown().await.unwrap();
}

/// The same entity type, older: without the `note` field.
struct NotesV1;
#[derive(Default, Serialize, Deserialize)]
struct NotesStateV1 {
    count: u32,
}
impl Entity for NotesV1 {
    const NAME: &'static str = "Notes";
    type State = NotesStateV1;
    fn handlers(h: &mut Handlers<Self>) {
        h.activity(BumpV1);
    }
}
struct BumpV1;
impl Activity<NotesV1> for BumpV1 {
    const NAME: &'static str = "bump";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = ();
    type Output = u32;
    type Error = ();
    async fn run(&self, ctx: &mut ActivityContext<'_, NotesV1>, (): ()) -> Result<u32, ()> {
        ctx.state_mut().count += 1;
        Ok(ctx.state().count)
    }
}

/// Newer: a field added with `#[serde(default)]`.
struct NotesV2;
#[derive(Default, Serialize, Deserialize)]
struct NotesStateV2 {
    count: u32,
    #[serde(default)]
    note: String,
}
impl Entity for NotesV2 {
    const NAME: &'static str = "Notes";
    type State = NotesStateV2;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(Read);
    }
}
struct Read;
impl Rpc<NotesV2> for Read {
    const NAME: &'static str = "read";
    type Params = ();
    type Output = (u32, String);
    async fn run(&self, ctx: &RpcContext<'_, NotesV2>, (): ()) -> (u32, String) {
        (ctx.state().count, ctx.state().note.clone())
    }
}

#[tokio::test]
async fn a_state_field_added_with_serde_default_reads_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .data_dir(dir.path())
        .register(NotesV1)
        .start()
        .await
        .unwrap();
    node.client::<NotesV1>("n")
        .call(BumpV1, ())
        .await
        .unwrap()
        .unwrap();
    node.client::<NotesV1>("n")
        .call(BumpV1, ())
        .await
        .unwrap()
        .unwrap();
    node.shutdown().await.unwrap();
    let node = Node::builder()
        .data_dir(dir.path())
        .register(NotesV2)
        .start()
        .await
        .unwrap();
    assert_eq!(
        node.client::<NotesV2>("n").call(Read, ()).await.unwrap(),
        (2, String::new())
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreadable_state_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_at(dir.path(), Counter::new(), Config::default()).await;
    node.client::<Counter>("x")
        .call(Add, 3)
        .await
        .unwrap()
        .unwrap();
    node.shutdown().await.unwrap();
    // `Count` stored; a type that needs a field `Count` lacks cannot read it.
    struct Strict;
    #[derive(Default, Serialize, Deserialize)]
    struct StrictState {
        #[allow(dead_code)]
        required: String,
    }
    impl Entity for Strict {
        const NAME: &'static str = "Counter";
        type State = StrictState;
        fn handlers(h: &mut Handlers<Self>) {
            h.rpc(StrictGet);
        }
    }
    struct StrictGet;
    impl Rpc<Strict> for StrictGet {
        const NAME: &'static str = "get";
        type Params = ();
        type Output = ();
        async fn run(&self, _ctx: &RpcContext<'_, Strict>, (): ()) {}
    }
    let node = Node::builder()
        .data_dir(dir.path())
        .register(Strict)
        .start()
        .await
        .unwrap();
    let err = node
        .client::<Strict>("x")
        .call(StrictGet, ())
        .await
        .unwrap_err();
    assert!(matches!(err, EntityError::StateUnreadable { .. }), "{err}");
    assert!(err.to_string().contains("Counter/x"), "{err}");
    node.shutdown().await.unwrap();
    // The original data is intact.
    let node = node_at(dir.path(), Counter::new(), Config::default()).await;
    assert_eq!(node.client::<Counter>("x").call(Get, ()).await.unwrap(), 3);
    let _ = Count::default();
    node.shutdown().await.unwrap();
}

/// A reply type whose serialization fails.
#[derive(Debug, Deserialize)]
struct Unencodable;
impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this reply cannot be encoded"))
    }
}

struct Fragile;
#[derive(Default, Serialize, Deserialize)]
struct FragileState {
    value: i64,
}
impl Entity for Fragile {
    const NAME: &'static str = "Fragile";
    type State = FragileState;
    fn handlers(h: &mut Handlers<Self>) {
        h.activity(BumpBadReply).rpc(ReadFragile);
    }
}
struct BumpBadReply;
impl Activity<Fragile> for BumpBadReply {
    const NAME: &'static str = "bump";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = ();
    type Output = Unencodable;
    type Error = String;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Fragile>,
        (): (),
    ) -> Result<Unencodable, String> {
        ctx.state_mut().value += 1;
        Ok(Unencodable)
    }
}
struct ReadFragile;
impl Rpc<Fragile> for ReadFragile {
    const NAME: &'static str = "read";
    type Params = ();
    type Output = i64;
    async fn run(&self, ctx: &RpcContext<'_, Fragile>, (): ()) -> i64 {
        ctx.state().value
    }
}

#[tokio::test]
async fn an_activity_whose_reply_cannot_be_encoded_changes_nothing() {
    let node = Node::builder().register(Fragile).start().await.unwrap();
    let f = node.client::<Fragile>("f");
    let err = f.call(BumpBadReply, ()).await.unwrap_err();
    assert!(matches!(err, EntityError::Encode { .. }), "{err}");
    assert_eq!(
        f.call(ReadFragile, ()).await.unwrap(),
        0,
        "the change was not kept"
    );
    node.shutdown().await.unwrap();
}
