//! Crash safety with a real process: a child runs a one-node Raft on real
//! files and prints every acknowledged write; the parent SIGKILLs it after a
//! random number of acknowledgements, restarts it on the same files, and
//! finally checks that every acknowledged write is in the storage backend,
//! exactly once.
//!
//! The state machine applies with deferred durability, so a kill loses the
//! last applies (the first and third rounds: within the default 100 ms
//! bound; the second: a 10 s bound, so nothing applied in that round is
//! durable in the backend unless a restart's re-application made it so):
//! restart must re-apply them from the log, each once. Every write also
//! reschedules one message, whose attempt count therefore equals the
//! number of writes applied — one more re-application would show.
//!
//! The child is this test binary, running the ignored test
//! `t05_crash::crash_child` (selected by name).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openraft::BasicNode;
use shoal_raft::{Command, Response};
use shoal_storage::{EntityKey, Epoch, Message, RequestId, ShardId, Timestamp, WriteBatch};

const DIR_VAR: &str = "SHOAL_RAFT_CRASH_DIR";
const FROM_VAR: &str = "SHOAL_RAFT_CRASH_FROM";
const DEFERRED_MS_VAR: &str = "SHOAL_RAFT_CRASH_DEFERRED_MS";
const SHARD: ShardId = ShardId::new(7);

/// The message every write reschedules (once per write: its attempts count
/// the writes applied).
const COUNTED: RequestId = RequestId::new(1 << 100);

fn write(k: u64, epoch: Epoch) -> anyhow::Result<WriteBatch> {
    let entity = EntityKey::new(SHARD, "Item", format!("i-{k}"))?;
    let mut batch = WriteBatch::new(SHARD, epoch);
    if k == 0 {
        let target = EntityKey::new(SHARD, "Counted", "m")?;
        batch.enqueue(Message::new(
            COUNTED,
            target,
            "count",
            Bytes::new(),
            Timestamp::from_unix_ms(1),
        ));
    }
    batch.put_state(&entity, k.to_be_bytes().to_vec());
    batch.ack(RequestId::new(u128::from(k)), b"ok".to_vec());
    batch.reschedule(COUNTED, Timestamp::from_unix_ms(1 + k));
    Ok(batch)
}

/// The child's workload: writes `from`, `from + 1`, … through Raft until
/// killed, printing `ACK k` after each `client_write` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of `acknowledged_writes_survive_kill_9`"]
async fn crash_child() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::var(DIR_VAR)?);
    let from: u64 = std::env::var(FROM_VAR)?.parse()?;
    let deferred_ms: u64 = std::env::var(DEFERRED_MS_VAR)?.parse()?;
    let (raft, _storage, cluster) =
        crate::t04_single_node::start_with(&dir, Duration::from_millis(deferred_ms)).await?;
    if !raft.is_initialized().await? {
        raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:7000"))]))
            .await?;
    }
    raft.wait(Some(Duration::from_secs(20)))
        .current_leader(1, "leads")
        .await?;
    let epoch = crate::t04_single_node::epoch_of(&raft, &cluster, SHARD).await?;
    let mut out = std::io::stdout().lock();
    // libtest's "test … " prefix shares the first line: start a fresh one.
    writeln!(out, "READY")?;
    for k in from.. {
        let written = raft.client_write(Command::Batch(write(k, epoch)?)).await?;
        anyhow::ensure!(matches!(written.data, Response::Applied(_)));
        writeln!(out, "ACK {k}")?;
        out.flush()?;
    }
    Ok(())
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() -> anyhow::Result<()> {
    crate::init_tracing();
    let dir = tempfile::tempdir()?;
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1;
    tracing::warn!("raft crash test seed: {seed}");
    let exe = std::env::current_exe()?;
    let mut acked_all: Vec<u64> = Vec::new();
    for round in 0..3 {
        // Skip the one write that may have been in flight at the kill
        // (committed or not): writing its key again would be a second entry.
        let from = acked_all.last().map_or(0, |k| k + 2);
        let kill_after = 5 + next(&mut seed) % 40;
        let deferred_ms = if round == 1 { 10_000 } else { 100 };
        tracing::info!(
            "--- round {round}: writes from {from}, kill after {kill_after} acks, \
             applies durable within {deferred_ms} ms"
        );
        let mut child = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "t05_crash::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .env(FROM_VAR, from.to_string())
            .env(DEFERRED_MS_VAR, deferred_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let deadline = Instant::now() + Duration::from_secs(30);
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("ACK ")
                    && let Ok(k) = k.parse::<u64>()
                {
                    acks.push(k);
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
        let acks = tokio::task::spawn_blocking(move || reader.join())
            .await?
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
        child.kill()?; // SIGKILL
        child.wait()?;
        assert_eq!(
            acks.len() as u64,
            kill_after,
            "the child acknowledged only {} writes before the deadline",
            acks.len()
        );
        assert_eq!(acks.first(), Some(&from));
        acked_all.extend(acks);
    }

    tracing::info!("--- restart in-process: every acknowledged write is there, once");
    let last_acked = *acked_all.last().expect("three rounds");
    let (raft, storage, _cluster) = crate::t04_single_node::start(dir.path()).await?;
    raft.wait(Some(Duration::from_secs(20)))
        .current_leader(1, "leads again")
        .await?;
    // A blank entry from the new term commits (and applies) everything before it.
    raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
        .await?;
    for &k in &acked_all {
        let entity = EntityKey::new(SHARD, "Item", format!("i-{k}"))?;
        assert_eq!(
            storage.load_state(&entity).await?,
            Some(Bytes::copy_from_slice(&k.to_be_bytes())),
            "acknowledged write {k} lost"
        );
        assert_eq!(
            storage
                .read_reply(SHARD, RequestId::new(u128::from(k)))
                .await?,
            Some(Bytes::from_static(b"ok"))
        );
    }
    // The write in flight at each kill may have been committed too: count
    // every write present.
    let mut applied = 0;
    let mut last_applied = 0;
    for k in 0..=last_acked + 1 {
        let entity = EntityKey::new(SHARD, "Item", format!("i-{k}"))?;
        if storage.load_state(&entity).await?.is_some() {
            applied += 1;
            last_applied = k;
        }
    }
    let counted = storage
        .read_message(SHARD, COUNTED)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the counted message is gone"))?;
    assert_eq!(
        u64::from(counted.attempts),
        applied,
        "{applied} writes applied, each rescheduling the message once"
    );
    assert_eq!(
        counted.next_attempt_at,
        Timestamp::from_unix_ms(1 + last_applied)
    );
    raft.shutdown().await?;
    Ok(())
}
