//! Crash safety with a real process: a child node makes deposits, each with
//! its own idempotency key, and prints every acknowledgement; the parent
//! kills it with SIGKILL at random points, restarts it on the same data, and
//! finally checks that every acknowledged deposit is there exactly once.
//!
//! The child is this very test binary, running the ignored test
//! `crash::crash_child` (selected by name), so no other binary is needed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal::Node;

use crate::fixtures::{Add, Counter, Get};

const ACCOUNTS: u64 = 8;
const DIR_VAR: &str = "SHOAL_CRASH_CHILD_DIR";
const FROM_VAR: &str = "SHOAL_CRASH_CHILD_FROM";

fn account(deposit: u64) -> String {
    format!("acct-{}", deposit % ACCOUNTS)
}

/// The child's workload: deposits `from`, `from + 1`, … until killed.
#[tokio::test]
#[ignore = "the child process of `acknowledged_deposits_survive_kill_9`"]
async fn crash_child() {
    let dir = std::env::var(DIR_VAR).expect("run by the crash test");
    let from: u64 = std::env::var(FROM_VAR)
        .expect("run by the crash test")
        .parse()
        .unwrap();
    let node = Node::builder()
        .data_dir(&dir)
        .register(Counter::new())
        .start()
        .await
        .unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    for k in from.. {
        let client = node.client::<Counter>(account(k));
        client
            .call_with_key(Add, 1, &format!("dep-{k}"))
            .await
            .unwrap()
            .unwrap();
        writeln!(out, "ACK {k}").unwrap();
        out.flush().unwrap();
    }
}

/// A small deterministic generator, so a failing run can be replayed from
/// the printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_deposits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed: {seed}");
    let exe = std::env::current_exe().unwrap();
    let mut acked_through: Option<u64> = None;
    for round in 0..4 {
        let from = acked_through.map_or(0, |k| k + 1);
        let kill_after = 5 + next(&mut seed) % 60;
        tracing::info!("--- round {round}: deposits from {from}, kill after {kill_after} acks");
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .env(FROM_VAR, from.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("ACK ") {
                    acks.push(k.parse::<u64>().unwrap());
                    if acks.len() as u64 >= kill_after {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    break;
                }
            }
            acks
        });
        let acks = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(
            acks.len() as u64,
            kill_after,
            "the child acknowledged {} deposits before the deadline",
            acks.len()
        );
        assert_eq!(acks.first(), Some(&from));
        acked_through = acks.last().copied();
    }

    tracing::info!("--- every acknowledged deposit is there, exactly once");
    let acked = acked_through.unwrap() + 1; // deposits 0..acked were acknowledged
    let node = Node::builder()
        .data_dir(dir.path())
        .register(Counter::new())
        .start()
        .await
        .unwrap();
    let mut total = 0;
    for a in 0..ACCOUNTS {
        total += node
            .client::<Counter>(format!("acct-{a}"))
            .call(Get, ())
            .await
            .unwrap();
    }
    // A deposit in flight when the child was killed may have committed
    // without its acknowledgement being read: at most one per round.
    assert!(
        total as u64 >= acked,
        "lost acknowledged deposits: {total} < {acked}"
    );
    assert!(
        total as u64 <= acked + 4,
        "deposits applied twice: {total} > {acked} + 4"
    );
    // Replaying every acknowledged key changes nothing: each ran once.
    for k in 0..acked {
        node.client::<Counter>(account(k))
            .call_with_key(Add, 1, &format!("dep-{k}"))
            .await
            .unwrap()
            .unwrap();
    }
    let mut after = 0;
    for a in 0..ACCOUNTS {
        after += node
            .client::<Counter>(format!("acct-{a}"))
            .call(Get, ())
            .await
            .unwrap();
    }
    assert_eq!(after, total, "a replayed key ran its activity again");
    node.shutdown().await.unwrap();
}
