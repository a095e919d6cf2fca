//! Durable workflows: journaled steps, idempotent executions, resume after a
//! restart by replay, divergence detection, and a kill -9 crash loop.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal::Node;
use shoal::entity::{
    Activity, ActivityContext, Entity, EntityError, Handlers, Rpc, RpcContext, Visibility,
    Workflow, WorkflowContext,
};
use tokio::sync::Semaphore;

use crate::within;

/// A wallet whose every change is logged, so a step applied twice shows.
#[derive(Clone)]
pub struct Wallet {
    applied: Arc<AtomicUsize>,
    /// `TwoStep` waits on this between its steps.
    gate: Arc<Semaphore>,
    /// `Explode` panics while this is set.
    explode: Arc<std::sync::atomic::AtomicBool>,
}

impl Wallet {
    pub(crate) fn new(gate_permits: usize) -> Self {
        Wallet {
            applied: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(gate_permits)),
            explode: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WalletState {
    balance: i64,
    log: Vec<String>,
}

impl Entity for Wallet {
    const NAME: &'static str = "Wallet";
    type State = WalletState;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(Log)
            .activity(Apply)
            .workflow(Move)
            .workflow(TwoStep)
            .workflow(Nap)
            .workflow(Approval)
            .workflow(SlowMove)
            .workflow(Explode);
    }
}

pub(crate) struct Log;
impl Rpc<Wallet> for Log {
    const NAME: &'static str = "log";
    type Params = ();
    type Output = (i64, Vec<String>);
    async fn run(&self, ctx: &RpcContext<'_, Wallet>, (): ()) -> (i64, Vec<String>) {
        (ctx.state().balance, ctx.state().log.clone())
    }
}

/// Adds `delta` and logs `entry`.
pub(crate) struct Apply;
impl Activity<Wallet> for Apply {
    const NAME: &'static str = "apply";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = (String, i64);
    type Output = i64;
    type Error = String;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Wallet>,
        (entry, delta): (String, i64),
    ) -> Result<i64, String> {
        ctx.entity().applied.fetch_add(1, Ordering::SeqCst);
        let state = ctx.state_mut();
        if state.balance + delta < 0 {
            return Err(format!("insufficient funds for {entry}"));
        }
        state.balance += delta;
        state.log.push(entry);
        Ok(state.balance)
    }
}

/// Moves `amount` from this wallet to `to`: a journaled own activity, then a
/// journaled call to the other entity.
struct Move;
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoveParams {
    id: u64,
    to: String,
    amount: i64,
}
impl Workflow<Wallet> for Move {
    const NAME: &'static str = "move";
    type Params = MoveParams;
    type Output = i64;
    type Error = String;
    async fn run(&self, ctx: &mut WorkflowContext<Wallet>, p: MoveParams) -> Result<i64, String> {
        let debit = ctx
            .activity(Apply, (format!("{}-debit", p.id), -p.amount))
            .await
            .map_err(|e| e.to_string())??;
        ctx.call::<Wallet, _, _>(&p.to, Apply, (format!("{}-credit", p.id), p.amount))
            .await
            .map_err(|e| e.to_string())??;
        Ok(debit)
    }
}

/// `Move` with a durable sleep and a deferred wait between its two steps,
/// so a kill lands in each kind of step.
struct SlowMove;
impl Workflow<Wallet> for SlowMove {
    const NAME: &'static str = "slow_move";
    type Params = MoveParams;
    type Output = i64;
    type Error = String;
    async fn run(&self, ctx: &mut WorkflowContext<Wallet>, p: MoveParams) -> Result<i64, String> {
        let debit = ctx
            .activity(Apply, (format!("{}-debit", p.id), -p.amount))
            .await
            .map_err(|e| e.to_string())??;
        ctx.sleep("settle", Duration::from_millis(4))
            .await
            .map_err(|e| e.to_string())?;
        let (): () = ctx
            .deferred(&format!("go-{}", p.id))
            .await
            .map_err(|e| e.to_string())??;
        ctx.call::<Wallet, _, _>(&p.to, Apply, (format!("{}-credit", p.id), p.amount))
            .await
            .map_err(|e| e.to_string())??;
        Ok(debit)
    }
}

/// Logs a step, then panics while the wallet's `explode` flag is set.
struct Explode;
impl Workflow<Wallet> for Explode {
    const NAME: &'static str = "explode";
    type Params = String;
    type Output = String;
    type Error = String;
    async fn run(&self, ctx: &mut WorkflowContext<Wallet>, tag: String) -> Result<String, String> {
        ctx.activity(Apply, (format!("{tag}-before"), 1))
            .await
            .map_err(|e| e.to_string())??;
        if ctx.entity().explode.load(Ordering::SeqCst) {
            panic!("exploded at {tag}");
        }
        Ok(tag)
    }
}

/// Two own steps with a wait on the entity's gate between them.
struct TwoStep;
impl Workflow<Wallet> for TwoStep {
    const NAME: &'static str = "two_step";
    type Params = String;
    type Output = Vec<String>;
    type Error = String;
    async fn run(
        &self,
        ctx: &mut WorkflowContext<Wallet>,
        tag: String,
    ) -> Result<Vec<String>, String> {
        ctx.activity(Apply, (format!("{tag}-a"), 1))
            .await
            .map_err(|e| e.to_string())??;
        if !ctx.is_replaying() {
            let permit = ctx
                .entity()
                .gate
                .acquire()
                .await
                .map_err(|e| e.to_string())?;
            permit.forget();
        }
        ctx.activity(Apply, (format!("{tag}-b"), 1))
            .await
            .map_err(|e| e.to_string())??;
        Ok(vec![format!("{tag}-a"), format!("{tag}-b")])
    }
}

/// Sleeps durably, then logs.
pub(crate) struct Nap;
impl Workflow<Wallet> for Nap {
    const NAME: &'static str = "nap";
    type Params = (String, u64);
    type Output = ();
    type Error = String;
    async fn run(
        &self,
        ctx: &mut WorkflowContext<Wallet>,
        (tag, ms): (String, u64),
    ) -> Result<(), String> {
        ctx.sleep("nap", Duration::from_millis(ms))
            .await
            .map_err(|e| e.to_string())?;
        ctx.activity(Apply, (tag, 1))
            .await
            .map_err(|e| e.to_string())??;
        Ok(())
    }
}

/// Waits for a deferred decision, then logs it.
pub(crate) struct Approval;
impl Workflow<Wallet> for Approval {
    const NAME: &'static str = "approval";
    type Params = String;
    type Output = String;
    type Error = String;
    async fn run(&self, ctx: &mut WorkflowContext<Wallet>, name: String) -> Result<String, String> {
        let decision: String = ctx.deferred(&name).await.map_err(|e| e.to_string())??;
        ctx.activity(Apply, (format!("{name}:{decision}"), 1))
            .await
            .map_err(|e| e.to_string())??;
        Ok(decision)
    }
}

async fn start(dir: &std::path::Path, wallet: Wallet) -> Node {
    within(
        "start",
        Node::builder().data_dir(dir).register(wallet).start(),
    )
    .await
    .expect("node starts")
}

async fn log(node: &Node, id: &str) -> (i64, Vec<String>) {
    node.client::<Wallet>(id).call(Log, ()).await.unwrap()
}

#[tokio::test]
async fn a_workflow_runs_its_steps_and_an_identical_call_is_answered_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::new(100);
    let node = start(dir.path(), wallet.clone()).await;
    let alice = node.client::<Wallet>("alice");
    alice
        .call(Apply, ("seed".into(), 100))
        .await
        .unwrap()
        .unwrap();
    let params = MoveParams {
        id: 1,
        to: "bob".into(),
        amount: 30,
    };
    assert_eq!(
        within("move", alice.call(Move, params.clone()))
            .await
            .unwrap(),
        Ok(70)
    );
    assert_eq!(log(&node, "bob").await, (30, vec!["1-credit".to_owned()]));
    assert_eq!(wallet.applied.load(Ordering::SeqCst), 3);

    tracing::info!("--- the same parameters: the stored result, nothing runs");
    assert_eq!(alice.call(Move, params.clone()).await.unwrap(), Ok(70));
    assert_eq!(wallet.applied.load(Ordering::SeqCst), 3);

    tracing::info!("--- a failed execution is a result too");
    let too_much = MoveParams {
        id: 2,
        to: "bob".into(),
        amount: 1_000,
    };
    let failed = alice.call(Move, too_much.clone()).await.unwrap();
    let reason = failed.unwrap_err();
    assert!(
        reason.contains("insufficient funds for 2-debit"),
        "{reason}"
    );
    let applied = wallet.applied.load(Ordering::SeqCst);
    assert_eq!(
        alice.call(Move, too_much).await.unwrap(),
        Err(reason),
        "the recorded failure"
    );
    assert_eq!(
        wallet.applied.load(Ordering::SeqCst),
        applied,
        "and nothing ran again"
    );

    tracing::info!("--- a key given per call names the execution");
    let again = MoveParams {
        id: 3,
        to: "bob".into(),
        amount: 10,
    };
    assert_eq!(
        alice
            .call_with_key(Move, again.clone(), "m-3")
            .await
            .unwrap(),
        Ok(60)
    );
    assert_eq!(
        alice.call_with_key(Move, again, "m-3").await.unwrap(),
        Ok(60)
    );
    assert_eq!(log(&node, "alice").await.0, 60);
    node.shutdown().await.unwrap();

    tracing::info!("--- and the results survive a restart");
    let node = start(dir.path(), wallet.clone()).await;
    let before = wallet.applied.load(Ordering::SeqCst);
    assert_eq!(
        node.client::<Wallet>("alice")
            .call(Move, params)
            .await
            .unwrap(),
        Ok(70)
    );
    assert_eq!(wallet.applied.load(Ordering::SeqCst), before);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unfinished_workflow_resumes_on_restart_without_repeating_steps() {
    let dir = tempfile::tempdir().unwrap();
    tracing::info!("--- first run: step a commits, then the workflow waits");
    let closed = Wallet::new(0);
    let node = start(dir.path(), closed.clone()).await;
    let w = node.client::<Wallet>("w");
    let pending = tokio::spawn(async move { w.call(TwoStep, "t1".to_owned()).await });
    within("step a", async {
        while closed.applied.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    node.shutdown().await.unwrap();
    assert!(matches!(
        within("aborted call", pending).await.unwrap(),
        Err(EntityError::ShuttingDown)
    ));

    tracing::info!("--- second run: resumed at start, step a replayed, step b runs");
    let open = Wallet::new(10);
    let node = start(dir.path(), open.clone()).await;
    let result = within(
        "resumed",
        node.client::<Wallet>("w").call(TwoStep, "t1".to_owned()),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        Ok(vec!["t1-a".to_owned(), "t1-b".to_owned()])
    );
    assert_eq!(
        log(&node, "w").await,
        (2, vec!["t1-a".to_owned(), "t1-b".to_owned()])
    );
    assert_eq!(
        open.applied.load(Ordering::SeqCst),
        1,
        "only step b ran in the second run"
    );
    node.shutdown().await.unwrap();
}

/// The same entity type after a code change: `two_step` now starts with a
/// different step.
#[derive(Clone)]
struct WalletV2;
impl Entity for WalletV2 {
    const NAME: &'static str = "Wallet";
    type State = WalletState;
    fn handlers(h: &mut Handlers<Self>) {
        h.activity(Noop).workflow(TwoStepV2);
    }
}
struct Noop;
impl Activity<WalletV2> for Noop {
    const NAME: &'static str = "noop";
    type Params = ();
    type Output = ();
    type Error = ();
    async fn run(&self, _ctx: &mut ActivityContext<'_, WalletV2>, (): ()) -> Result<(), ()> {
        Ok(())
    }
}
struct TwoStepV2;
impl Workflow<WalletV2> for TwoStepV2 {
    const NAME: &'static str = "two_step";
    type Params = String;
    type Output = Vec<String>;
    type Error = String;
    async fn run(
        &self,
        ctx: &mut WorkflowContext<WalletV2>,
        _tag: String,
    ) -> Result<Vec<String>, String> {
        ctx.activity(Noop, ())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|()| "noop".to_owned())?;
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn replay_that_diverges_from_the_journal_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let closed = Wallet::new(0);
    let node = start(dir.path(), closed.clone()).await;
    let w = node.client::<Wallet>("w");
    let pending = tokio::spawn(async move { w.call(TwoStep, "t1".to_owned()).await });
    within("step a", async {
        while closed.applied.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    node.shutdown().await.unwrap();
    let _ = pending.await;

    let node = within(
        "start v2",
        Node::builder()
            .data_dir(dir.path())
            .register(WalletV2)
            .start(),
    )
    .await
    .unwrap();
    let err = within(
        "call v2",
        node.client::<WalletV2>("w")
            .call(TwoStepV2, "t1".to_owned()),
    )
    .await
    .unwrap_err();
    match &err {
        EntityError::JournalDivergence {
            step,
            journaled,
            requested,
            ..
        } => {
            assert_eq!(*step, 0);
            assert_eq!(journaled, "apply");
            assert_eq!(requested, "noop");
        }
        other => panic!("expected JournalDivergence, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("diverged from its journal at step 0"),
        "{err}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_durable_sleep_keeps_its_original_deadline_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), Wallet::new(0)).await;
    let began = Instant::now();
    let w = node.client::<Wallet>("sleepy");
    let pending = tokio::spawn(async move { w.call(Nap, ("woke".to_owned(), 2_000)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.shutdown().await.unwrap();
    let _ = pending.await;
    tracing::info!(
        "--- the node is down past the deadline; a restart finishes at once, not 2 s later"
    );
    tokio::time::sleep(Duration::from_millis(2_200).saturating_sub(began.elapsed())).await;
    let node = start(dir.path(), Wallet::new(0)).await;
    let restarted = Instant::now();
    let result = within(
        "resumed nap",
        node.client::<Wallet>("sleepy")
            .call(Nap, ("woke".to_owned(), 2_000)),
    )
    .await;
    assert_eq!(result.unwrap(), Ok(()));
    assert!(
        began.elapsed() >= Duration::from_millis(2_000),
        "woke before the deadline"
    );
    assert!(
        restarted.elapsed() < Duration::from_millis(1_500),
        "the sleep was reset by the restart ({:?} after it)",
        restarted.elapsed()
    );
    assert_eq!(log(&node, "sleepy").await.1, vec!["woke".to_owned()]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_deferred_wakes_its_workflow_and_the_first_resolution_wins() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), Wallet::new(0)).await;
    let w = node.client::<Wallet>("desk");
    let waiting = tokio::spawn({
        let w = w.clone();
        async move { w.call(Approval, "order-1".to_owned()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "the workflow waits for its deferred"
    );
    w.resolve_deferred("order-1", Ok("approved".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        within("approval", waiting).await.unwrap().unwrap(),
        Ok("approved".to_owned())
    );
    let late = w
        .resolve_deferred("order-1", Ok("rejected".to_owned()))
        .await
        .unwrap_err();
    assert!(
        matches!(late, EntityError::DeferredAlreadyResolved { .. }),
        "{late}"
    );

    tracing::info!("--- resolved before anyone waits: the workflow goes straight on");
    w.resolve_deferred::<String>("order-2", Err("no stock".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        w.call(Approval, "order-2".to_owned()).await.unwrap(),
        Err("no stock".to_owned())
    );

    tracing::info!("--- the wait survives a restart");
    let pending = tokio::spawn({
        let w = w.clone();
        async move { w.call(Approval, "order-3".to_owned()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    node.shutdown().await.unwrap();
    let _ = pending.await;
    let node = start(dir.path(), Wallet::new(0)).await;
    let w = node.client::<Wallet>("desk");
    w.resolve_deferred("order-3", Ok("approved".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        within("resumed approval", w.call(Approval, "order-3".to_owned()))
            .await
            .unwrap(),
        Ok("approved".to_owned())
    );
    assert_eq!(
        log(&node, "desk").await.1,
        vec!["order-1:approved".to_owned(), "order-3:approved".to_owned()]
    );
    node.shutdown().await.unwrap();
}

const DIR_VAR: &str = "SHOAL_WF_CHILD_DIR";
const FROM_VAR: &str = "SHOAL_WF_CHILD_FROM";
const WALLETS: u64 = 4;
const SEED_CENTS: i64 = 1_000_000;

fn move_for(k: u64) -> (String, MoveParams) {
    let from = format!("w{}", k % WALLETS);
    let to = format!("w{}", (k + 1) % WALLETS);
    (
        from,
        MoveParams {
            id: k,
            to,
            amount: 1 + (k % 7) as i64,
        },
    )
}

/// The child's workload: workflow k = 0, 1, 2, … until killed; each one's
/// deferred is resolved a moment after it starts.
#[tokio::test]
#[ignore = "the child process of `workflows_finish_exactly_once_across_kill_9`"]
async fn workflow_crash_child() {
    let dir = std::env::var(DIR_VAR).expect("run by the crash test");
    let from: u64 = std::env::var(FROM_VAR)
        .expect("run by the crash test")
        .parse()
        .unwrap();
    let node = Node::builder()
        .data_dir(&dir)
        .register(Wallet::new(0))
        .start()
        .await
        .unwrap();
    for w in 0..WALLETS {
        let c = node.client::<Wallet>(format!("w{w}"));
        c.call_with_key(Apply, ("seed".into(), SEED_CENTS), "seed")
            .await
            .unwrap()
            .unwrap();
    }
    let mut out = std::io::stdout().lock();
    for k in from.. {
        let (wallet, params) = move_for(k);
        let client = node.client::<Wallet>(wallet);
        let resolver = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let _ = resolver.resolve_deferred(&format!("go-{k}"), Ok(())).await;
        });
        client.call(SlowMove, params).await.unwrap().unwrap();
        writeln!(out, "DONE {k}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workflows_finish_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = crate::seed("workflow crash test");
    let mut next_from = 0;
    for round in 0..20 {
        let kill_after = 1 + crate::next(&mut seed) % 12;
        tracing::info!("--- round {round}: workflows from {next_from}, kill after {kill_after}");
        let env = [
            (DIR_VAR, dir.path().display().to_string()),
            (FROM_VAR, next_from.to_string()),
        ];
        // Most likely killed in the middle of a workflow: an activity, a
        // durable sleep or a deferred wait.
        let done = crate::run_child_until_killed(
            "workflows::workflow_crash_child",
            &env,
            "DONE ",
            kill_after,
        )
        .await;
        next_from = done.last().unwrap() + 1;
    }

    tracing::info!("--- restart: interrupted workflows resume; every one finishes exactly once");
    let node = start(dir.path(), Wallet::new(0)).await;
    // Workflow `next_from` may have been in flight at the last kill; call
    // every workflow again: finished ones answer from storage, an
    // interrupted one resumes (or joins its resumed run).
    for k in 0..=next_from {
        let (wallet, params) = move_for(k);
        let client = node.client::<Wallet>(wallet);
        match client.resolve_deferred(&format!("go-{k}"), Ok(())).await {
            Ok(()) | Err(EntityError::DeferredAlreadyResolved { .. }) => {}
            Err(e) => panic!("resolving go-{k}: {e}"),
        }
        let result = within("re-call", client.call(SlowMove, params)).await;
        assert!(matches!(result, Ok(Ok(_))), "workflow {k}: {result:?}");
    }
    let mut total = 0;
    let mut entries = std::collections::HashMap::<String, usize>::new();
    for w in 0..WALLETS {
        let (balance, log) = log(&node, &format!("w{w}")).await;
        total += balance;
        for entry in log {
            *entries.entry(entry).or_default() += 1;
        }
    }
    for k in 0..=next_from {
        for side in ["debit", "credit"] {
            assert_eq!(
                entries.get(&format!("{k}-{side}")),
                Some(&1),
                "workflow {k} {side} applied other than once"
            );
        }
    }
    assert_eq!(
        total,
        WALLETS as i64 * SEED_CENTS,
        "money appeared or vanished"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_workflow_is_dead_lettered_and_runs_again_only_when_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let wallet = Wallet::new(0);
    wallet.explode.store(true, Ordering::SeqCst);
    let node = start(dir.path(), wallet.clone()).await;
    let w = node.client::<Wallet>("boom");
    let err = within("first run", w.call(Explode, "e1".to_owned()))
        .await
        .unwrap_err();
    assert!(matches!(err, EntityError::HandlerPanicked { .. }), "{err}");
    tracing::info!("--- the same call again: the dead letter, not another run");
    let again = within("second call", w.call(Explode, "e1".to_owned()))
        .await
        .unwrap_err();
    match &again {
        EntityError::DeadLettered { reason } => {
            assert!(reason.contains("exploded at e1"), "{reason}")
        }
        other => panic!("expected DeadLettered, got {other}"),
    }
    assert_eq!(
        wallet.applied.load(Ordering::SeqCst),
        1,
        "the body ran once"
    );
    let letters = node.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);

    tracing::info!("--- fixed and replayed: it resumes from its journal and finishes");
    wallet.explode.store(false, Ordering::SeqCst);
    node.replay_dead_letter(&letters[0]).await.unwrap();
    within("replayed", async {
        loop {
            if let Ok(result) = w.call(Explode, "e1".to_owned()).await {
                assert_eq!(result, Ok("e1".to_owned()));
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        log(&node, "boom").await.1,
        vec!["e1-before".to_owned()],
        "the journaled step did not run again"
    );
    assert!(node.dead_letters(10).await.unwrap().is_empty());
    node.shutdown().await.unwrap();
}
