//! Behaviour tests of the entity runtime and `Node`, one file per topic.
//! Every wait is bounded, so a hang fails instead of stalling.

mod cli;
mod cli_cluster;
mod cluster;
mod crash;
mod cron;
mod errors;
mod fixtures;
mod lifecycle;
mod messages;
mod singletons;
mod traits;
mod workflows;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Awaits `fut`, failing the test if it takes longer than 20 s.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(20), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A fresh random seed, printed so a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{test} seed: {seed}");
    seed
}

/// The next number of a small deterministic generator (xorshift).
pub fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Runs this test binary again as a child process executing the ignored
/// test `test` with `env`, reads the numbers it prints after `prefix` on
/// stdout, and kills it with SIGKILL once it has printed `count` of them
/// (or after 60 s). Returns the numbers read.
pub async fn run_child_until_killed(
    test: &str,
    env: &[(&str, String)],
    prefix: &'static str,
    count: u64,
) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix(prefix) {
                seen.push(k.parse::<u64>().unwrap());
                if seen.len() as u64 >= count || Instant::now() > deadline {
                    break;
                }
            }
        }
        seen
    })
    .await
    .unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        seen.len() as u64,
        count,
        "the child printed too few lines before the deadline"
    );
    seen
}
