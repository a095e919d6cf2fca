//! A bank on Shoal: accounts are entities; deposits and transfers are
//! durable activities. Everything persists in one data directory.
//!
//! Run: `cargo run --example bank -- [--data DIR] [--rounds N] [--delay-ms MS]`
//! (defaults: `./shoal-data/bank`, 200 rounds, 10 ms between rounds).
//!
//! Try it: run it twice on the same directory and watch the balances carry
//! over. Then `kill -9` it mid-run (or press Ctrl-\) and run it again: the
//! total it starts with is at least the last "bank holds" figure it printed
//! before dying — every acknowledged deposit is there — and a transfer cut
//! in half by the kill resumes by itself on start-up, so no money appears
//! or vanishes.
//!
//! A transfer is a durable workflow on the source account: it moves the
//! amount into the account's `pending_out`, deposits it into the target (a
//! journaled call), then clears the pending entry. Each step is journaled;
//! after a crash the node replays the finished steps from the journal and
//! runs the rest. Until the last step the money is counted in
//! `pending_out`, so the bank's total is right at every moment.

#![allow(clippy::print_stdout)] // An example talks to its user.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shoal::Node;
use shoal::entity::{
    Activity, ActivityContext, Entity, EntityError, Handlers, Rpc, RpcContext, Visibility,
    Workflow, WorkflowContext,
};

const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const DEPOSIT_CENTS: i64 = 1_000;

struct Account;

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountState {
    balance_cents: i64,
    /// Outgoing transfers not yet completed: id → (to, amount).
    #[serde(default)]
    pending_out: BTreeMap<String, (String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum BankError {
    #[error("amounts must be positive, got {0}")]
    InvalidAmount(i64),
    #[error("insufficient funds: {balance} < {wanted}")]
    InsufficientFunds { balance: i64, wanted: i64 },
    #[error("the bank is unavailable: {0}")]
    Unavailable(String),
}

impl From<EntityError> for BankError {
    fn from(e: EntityError) -> Self {
        BankError::Unavailable(e.to_string())
    }
}

impl Entity for Account {
    const NAME: &'static str = "Account";
    type State = AccountState;
    fn handlers(h: &mut Handlers<Self>) {
        h.rpc(Balance)
            .rpc(Pending)
            .activity(Deposit)
            .activity(StartTransfer)
            .activity(FinishTransfer)
            .workflow(Transfer);
    }
}

struct Balance;
impl Rpc<Account> for Balance {
    const NAME: &'static str = "balance";
    type Params = ();
    type Output = (i64, i64);
    /// (balance, total in pending outgoing transfers)
    async fn run(&self, ctx: &RpcContext<'_, Account>, (): ()) -> (i64, i64) {
        let state = ctx.state();
        (
            state.balance_cents,
            state.pending_out.values().map(|(_, a)| a).sum(),
        )
    }
}

struct Pending;
impl Rpc<Account> for Pending {
    const NAME: &'static str = "pending";
    type Params = ();
    type Output = Vec<(String, String, i64)>;
    async fn run(&self, ctx: &RpcContext<'_, Account>, (): ()) -> Vec<(String, String, i64)> {
        let pending = &ctx.state().pending_out;
        pending
            .iter()
            .map(|(id, (to, a))| (id.clone(), to.clone(), *a))
            .collect()
    }
}

struct Deposit;
impl Activity<Account> for Deposit {
    const NAME: &'static str = "deposit";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = i64;
    type Output = i64;
    type Error = BankError;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Account>,
        cents: i64,
    ) -> Result<i64, BankError> {
        if cents <= 0 {
            return Err(BankError::InvalidAmount(cents));
        }
        ctx.state_mut().balance_cents += cents;
        Ok(ctx.state().balance_cents)
    }
}

/// Step 1 of a transfer: take the money out into `pending_out`.
struct StartTransfer;
impl Activity<Account> for StartTransfer {
    const NAME: &'static str = "start_transfer";
    type Params = (String, String, i64);
    type Output = ();
    type Error = BankError;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Account>,
        (id, to, cents): (String, String, i64),
    ) -> Result<(), BankError> {
        if cents <= 0 {
            return Err(BankError::InvalidAmount(cents));
        }
        let state = ctx.state_mut();
        if state.balance_cents < cents {
            return Err(BankError::InsufficientFunds {
                balance: state.balance_cents,
                wanted: cents,
            });
        }
        state.balance_cents -= cents;
        state.pending_out.insert(id, (to, cents));
        Ok(())
    }
}

/// Step 3 of a transfer: the target has the money; forget the pending entry.
struct FinishTransfer;
impl Activity<Account> for FinishTransfer {
    const NAME: &'static str = "finish_transfer";
    type Params = String;
    type Output = ();
    type Error = BankError;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Account>,
        id: String,
    ) -> Result<(), BankError> {
        ctx.state_mut().pending_out.remove(&id);
        Ok(())
    }
}

/// A transfer from this account: a durable workflow. Its execution is
/// identified by its parameters (the transfer id is among them), so asking
/// for the same transfer twice moves the money once.
struct Transfer;
impl Workflow<Account> for Transfer {
    const NAME: &'static str = "transfer";
    type Params = (String, String, i64);
    type Output = ();
    type Error = BankError;
    async fn run(
        &self,
        ctx: &mut WorkflowContext<Account>,
        (id, to, cents): (String, String, i64),
    ) -> Result<(), BankError> {
        ctx.activity(StartTransfer, (id.clone(), to.clone(), cents))
            .await??;
        ctx.call::<Account, _, _>(&to, Deposit, cents).await??;
        ctx.activity(FinishTransfer, id).await??;
        Ok(())
    }
}

async fn total(node: &Node) -> anyhow::Result<i64> {
    let mut total = 0;
    for name in ACCOUNTS {
        let (balance, pending) = node.client::<Account>(name).call(Balance, ()).await?;
        total += balance + pending;
    }
    Ok(total)
}

struct Args {
    data: PathBuf,
    rounds: u64,
    delay: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        data: PathBuf::from("shoal-data/bank"),
        rounds: 200,
        delay: Duration::from_millis(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--data" => args.data = value()?.into(),
            "--rounds" => args.rounds = value()?.parse()?,
            "--delay-ms" => args.delay = Duration::from_millis(value()?.parse()?),
            other => anyhow::bail!("unknown argument {other}; see the header of examples/bank.rs"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let node = Node::builder()
        .data_dir(&args.data)
        .register(Account)
        .start()
        .await?;
    println!("data in {}", args.data.display());

    // Transfers a previous run left half done resume by themselves; until
    // they finish, their money is counted in `pending_out`.
    let mut in_flight = 0;
    for from in ACCOUNTS {
        in_flight += node.client::<Account>(from).call(Pending, ()).await?.len();
    }
    if in_flight > 0 {
        println!("{in_flight} transfer(s) interrupted by the last run are resuming");
    }
    for name in ACCOUNTS {
        let (balance, _) = node.client::<Account>(name).call(Balance, ()).await?;
        println!("  {name:>6}: {:>10.2}", balance as f64 / 100.0);
    }
    let mut holds = total(&node).await?;
    println!("bank holds {:.2} at start", holds as f64 / 100.0);

    // A unique prefix per run, so this run's keys never collide with an
    // earlier run's.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut seed = (run as u64) | 1;
    let mut random = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut transfers = 0;
    for round in 0..args.rounds {
        let to = ACCOUNTS[random(ACCOUNTS.len())];
        node.client::<Account>(to)
            .call_with_key(Deposit, DEPOSIT_CENTS, &format!("dep-{run}-{round}"))
            .await??;
        holds += DEPOSIT_CENTS;
        println!(
            "acknowledged: deposit {round} into {to}; bank holds {:.2}",
            holds as f64 / 100.0
        );
        if round % 3 == 2 {
            let from = ACCOUNTS[random(ACCOUNTS.len())];
            let to = ACCOUNTS[random(ACCOUNTS.len())];
            let cents = 100 * (1 + random(20) as i64);
            if from != to {
                let id = format!("tx-{run}-{round}");
                match node
                    .client::<Account>(from)
                    .call(Transfer, (id, to.to_owned(), cents))
                    .await?
                {
                    Ok(()) => transfers += 1,
                    Err(BankError::InsufficientFunds { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        tokio::time::sleep(args.delay).await;
    }

    // Let transfers resumed at start finish before the final count.
    let settle = std::time::Instant::now();
    loop {
        let mut pending = 0;
        for from in ACCOUNTS {
            pending += node.client::<Account>(from).call(Pending, ()).await?.len();
        }
        if pending == 0 || settle.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = total(&node).await?;
    println!("{} deposits and {transfers} transfers done", args.rounds);
    for name in ACCOUNTS {
        let (balance, _) = node.client::<Account>(name).call(Balance, ()).await?;
        println!("  {name:>6}: {:>10.2}", balance as f64 / 100.0);
    }
    println!(
        "bank holds {:.2} (expected {:.2})",
        end as f64 / 100.0,
        holds as f64 / 100.0
    );
    anyhow::ensure!(end == holds, "money appeared or vanished: {end} != {holds}");
    node.shutdown().await?;
    Ok(())
}
