//! Persisted messages: durable sends applied exactly once, retries with
//! backoff, dead letters and their replay, scheduled delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use shoal::entity::{
    Activity, ActivityContext, Entity, EntityError, Handlers, Rpc, RpcContext, Visibility,
};
use shoal::{Config, Node};

use crate::within;

/// Records every message it receives; panics while `failures` is above 0.
#[derive(Clone)]
struct Inbox {
    failures: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

impl Inbox {
    fn new(failures: usize) -> Self {
        Inbox {
            failures: Arc::new(AtomicUsize::new(failures)),
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct InboxState {
    received: Vec<String>,
}

impl Entity for Inbox {
    const NAME: &'static str = "Inbox";
    type State = InboxState;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(Received).activity(Receive);
    }
}

struct Received;
impl Rpc<Inbox> for Received {
    const NAME: &'static str = "received";
    type Params = ();
    type Output = Vec<String>;
    async fn run(&self, ctx: &RpcContext<'_, Inbox>, (): ()) -> Vec<String> {
        ctx.state().received.clone()
    }
}

struct Receive;
impl Activity<Inbox> for Receive {
    const NAME: &'static str = "receive";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = String;
    type Output = usize;
    type Error = String;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Inbox>,
        text: String,
    ) -> Result<usize, String> {
        ctx.entity().runs.fetch_add(1, Ordering::SeqCst);
        let failures = &ctx.entity().failures;
        if failures.load(Ordering::SeqCst) > 0 {
            failures.fetch_sub(1, Ordering::SeqCst);
            panic!("inbox is broken");
        }
        ctx.state_mut().received.push(text);
        Ok(ctx.state().received.len())
    }
}

fn fast_retries(max_retries: u32) -> Config {
    Config::builder()
        .storage_message_max_retries(max_retries)
        .storage_message_retry_backoff(Duration::from_millis(2))
        .storage_poll_interval(Duration::from_millis(50))
        .build()
        .unwrap()
}

async fn start(dir: &std::path::Path, inbox: Inbox, config: Config) -> Node {
    within(
        "start",
        Node::builder()
            .data_dir(dir)
            .config(config)
            .register(inbox)
            .start(),
    )
    .await
    .expect("node starts")
}

#[tokio::test]
async fn a_persisted_message_is_delivered_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::new(0);
    let node = start(dir.path(), inbox.clone(), fast_retries(10)).await;
    let c = node.client::<Inbox>("i");
    let send = c.send_persisted(Receive, "hello".to_owned()).await.unwrap();
    // The same message again (same handler and parameters) is the same send.
    assert_eq!(
        c.send_persisted(Receive, "hello".to_owned()).await.unwrap(),
        send
    );
    assert_eq!(
        within("reply", c.persisted_reply(Receive, &send))
            .await
            .unwrap(),
        Ok(1)
    );
    let other = c
        .send_persisted_with_key(Receive, "hello".to_owned(), "second")
        .await
        .unwrap();
    assert_eq!(
        within("reply", c.persisted_reply(Receive, &other))
            .await
            .unwrap(),
        Ok(2)
    );
    assert_eq!(c.call(Received, ()).await.unwrap(), vec!["hello", "hello"]);
    assert_eq!(inbox.runs.load(Ordering::SeqCst), 2);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_deliveries_are_retried_until_they_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::new(3);
    let node = start(dir.path(), inbox.clone(), fast_retries(10)).await;
    let c = node.client::<Inbox>("flaky");
    let send = c
        .send_persisted(Receive, "eventually".to_owned())
        .await
        .unwrap();
    assert_eq!(
        within("reply", c.persisted_reply(Receive, &send))
            .await
            .unwrap(),
        Ok(1)
    );
    assert_eq!(
        inbox.runs.load(Ordering::SeqCst),
        4,
        "three failures, then one success"
    );
    assert_eq!(c.call(Received, ()).await.unwrap(), vec!["eventually"]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_and_can_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::new(usize::MAX);
    let node = start(dir.path(), inbox.clone(), fast_retries(4)).await;
    let c = node.client::<Inbox>("broken");
    let send = c
        .send_persisted(Receive, "doomed".to_owned())
        .await
        .unwrap();
    let err = within("dead letter", c.persisted_reply(Receive, &send))
        .await
        .unwrap_err();
    match &err {
        EntityError::DeadLettered { reason } => {
            assert!(reason.contains("gave up after 4 attempts"), "{reason}");
            assert!(reason.contains("inbox is broken"), "{reason}");
        }
        other => panic!("expected DeadLettered, got {other}"),
    }
    assert_eq!(inbox.runs.load(Ordering::SeqCst), 4);
    let letters = node.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message.request_id, send.request_id());
    assert_eq!(letters[0].message.handler, "receive");

    tracing::info!("--- fixed, replayed, delivered");
    inbox.failures.store(0, Ordering::SeqCst);
    node.replay_dead_letter(&letters[0]).await.unwrap();
    assert_eq!(
        within("replayed", c.persisted_reply(Receive, &send))
            .await
            .unwrap(),
        Ok(1)
    );
    assert!(node.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(c.call(Received, ()).await.unwrap(), vec!["doomed"]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_scheduled_message_arrives_when_due_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), Inbox::new(0), fast_retries(10)).await;
    let c = node.client::<Inbox>("later");
    let sent = Instant::now();
    let soon = c
        .send_persisted_at(
            Receive,
            "soon".to_owned(),
            None,
            SystemTime::now() + Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(
        c.call(Received, ()).await.unwrap().is_empty(),
        "not before it is due"
    );
    assert_eq!(
        within("due", c.persisted_reply(Receive, &soon))
            .await
            .unwrap(),
        Ok(1)
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "delivered early"
    );

    tracing::info!("--- scheduled, then the node stops before it is due");
    let due_at = SystemTime::now() + Duration::from_millis(700);
    let later = c
        .send_persisted_at(Receive, "after restart".to_owned(), Some("l-1"), due_at)
        .await
        .unwrap();
    node.shutdown().await.unwrap();
    let node = start(dir.path(), Inbox::new(0), fast_retries(10)).await;
    let c = node.client::<Inbox>("later");
    assert_eq!(
        within("due after restart", c.persisted_reply(Receive, &later))
            .await
            .unwrap(),
        Ok(2)
    );
    assert!(SystemTime::now() >= due_at, "delivered early");
    assert_eq!(
        c.call(Received, ()).await.unwrap(),
        vec!["soon", "after restart"]
    );
    node.shutdown().await.unwrap();
}

const DIR_VAR: &str = "SHOAL_MSG_CHILD_DIR";
const FROM_VAR: &str = "SHOAL_MSG_CHILD_FROM";

/// The child's workload: persisted sends 0, 1, 2, … until killed; each is
/// printed once acknowledged (durable), before it is necessarily delivered.
#[tokio::test]
#[ignore = "the child process of `acknowledged_persisted_messages_survive_kill_9`"]
async fn persisted_message_crash_child() {
    use std::io::Write;
    let dir = std::env::var(DIR_VAR).expect("run by the crash test");
    let from: u64 = std::env::var(FROM_VAR)
        .expect("run by the crash test")
        .parse()
        .unwrap();
    let node = Node::builder()
        .data_dir(&dir)
        .config(fast_retries(10))
        .register(Inbox::new(0))
        .start()
        .await
        .unwrap();
    let mut out = std::io::stdout().lock();
    for k in from.. {
        let inbox = node.client::<Inbox>(format!("box-{}", k % 3));
        inbox
            .send_persisted_with_key(Receive, format!("m{k}"), &format!("m{k}"))
            .await
            .unwrap();
        writeln!(out, "SENT {k}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_persisted_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = crate::seed("persisted message crash test");
    let mut next = 0;
    for round in 0..6 {
        let kill_after = 1 + crate::next(&mut seed) % 25;
        tracing::info!("--- round {round}: sends from {next}, kill after {kill_after}");
        let env = [
            (DIR_VAR, dir.path().display().to_string()),
            (FROM_VAR, next.to_string()),
        ];
        let sent = crate::run_child_until_killed(
            "messages::persisted_message_crash_child",
            &env,
            "SENT ",
            kill_after,
        )
        .await;
        next = sent.last().unwrap() + 1;
    }

    tracing::info!("--- restart: every acknowledged message is delivered, exactly once");
    let node = start(dir.path(), Inbox::new(0), fast_retries(10)).await;
    let mut received = Vec::new();
    within("deliveries", async {
        loop {
            received.clear();
            for b in 0..3 {
                received.extend(
                    node.client::<Inbox>(format!("box-{b}"))
                        .call(Received, ())
                        .await
                        .unwrap(),
                );
            }
            let delivered = (0..next)
                .filter(|k| received.contains(&format!("m{k}")))
                .count() as u64;
            if delivered == next {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut sorted = received.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        received.len(),
        "a message was applied twice: {received:?}"
    );
    // A send in flight at a kill may have been recorded without its
    // acknowledgement being read: at most one per round beyond `next`.
    assert!(
        received.len() as u64 <= next + 6,
        "{} deliveries for {next} sends",
        received.len()
    );
    node.shutdown().await.unwrap();
}
