//! Crash safety with a real process: a child runs a one-node Raft on real
//! files and prints every acknowledged write; the parent SIGKILLs it after a
//! random number of acknowledgements, restarts it on the same files, and
//! finally checks that every acknowledged write is in the storage backend.
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
use shoal_storage::{EntityKey, Epoch, RequestId, ShardId, WriteBatch};

const DIR_VAR: &str = "SHOAL_RAFT_CRASH_DIR";
const FROM_VAR: &str = "SHOAL_RAFT_CRASH_FROM";
const SHARD: ShardId = ShardId::new(7);

fn write(k: u64, epoch: Epoch) -> anyhow::Result<WriteBatch> {
    let entity = EntityKey::new(SHARD, "Item", format!("i-{k}"))?;
    let mut batch = WriteBatch::new(SHARD, epoch);
    batch.put_state(&entity, k.to_be_bytes().to_vec());
    batch.ack(RequestId::new(u128::from(k)), b"ok".to_vec());
    Ok(batch)
}

/// The child's workload: writes `from`, `from + 1`, … through Raft until
/// killed, printing `ACK k` after each `client_write` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of `acknowledged_writes_survive_kill_9`"]
async fn crash_child() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::var(DIR_VAR)?);
    let from: u64 = std::env::var(FROM_VAR)?.parse()?;
    let (raft, _storage, cluster) = crate::t04_single_node::start(&dir).await?;
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
    let mut acked_through: Option<u64> = None;
    for round in 0..3 {
        let from = acked_through.map_or(0, |k| k + 1);
        let kill_after = 5 + next(&mut seed) % 40;
        tracing::info!("--- round {round}: writes from {from}, kill after {kill_after} acks");
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
        acked_through = acks.last().copied();
    }

    tracing::info!("--- restart in-process: every acknowledged write is there");
    let acked = acked_through.expect("three rounds") + 1;
    let (raft, storage, _cluster) = crate::t04_single_node::start(dir.path()).await?;
    raft.wait(Some(Duration::from_secs(20)))
        .current_leader(1, "leads again")
        .await?;
    // A blank entry from the new term commits (and applies) everything before it.
    raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
        .await?;
    for k in 0..acked {
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
    raft.shutdown().await?;
    Ok(())
}
