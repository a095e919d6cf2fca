//! Three `shoal run` processes forming a cluster, driven through the real
//! CLI: status through every node, writes through rotating nodes while a
//! node is `kill -9`ed, SIGSTOPped or restarted, and SIGTERM (leave).
//! Every acknowledged write must read back from every node. Every wait is
//! bounded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// The bound on every wait for the cluster to reach a state.
const WAIT: Duration = Duration::from_secs(30);

/// The bound on one CLI command.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `shoal run` and the lines it printed so far.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    /// Waits for a line containing `needle`; every line read is kept.
    fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {within:?}; printed: {:?}",
                    self.seen
                ),
            }
        }
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Collect what it printed last.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// One member as `shoal status` prints it.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    id: u64,
    voter: bool,
    state: String,
    shards: u64,
}

#[derive(Debug, Clone)]
struct Status {
    leader: Option<u64>,
    applied: u64,
    members: Vec<Member>,
}

fn parse_status(text: &str) -> Status {
    let mut status = Status {
        leader: None,
        applied: 0,
        members: Vec::new(),
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["leader", id, ..] => status.leader = id.parse().ok(),
            ["applied", index, ..] => status.applied = index.parse().unwrap_or(0),
            [id, _addr, role, state, shards, ..] if line.starts_with("  ") => {
                if let Ok(id) = id.parse() {
                    status.members.push(Member {
                        id,
                        voter: *role == "voter",
                        state: (*state).to_owned(),
                        shards: shards.parse().unwrap(),
                    });
                }
            }
            _ => {}
        }
    }
    status
}

/// Runs the CLI against `addr`; `Err` with stderr if it fails or hangs.
fn cli_at(addr: SocketAddr, certs: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(SHOAL)
        .args(args)
        .arg("--node")
        .arg(addr.to_string())
        .arg("--tls")
        .arg(certs)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("shoal {args:?} at {addr} hung"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    if status.success() {
        Ok(out.trim().to_owned())
    } else {
        Err(format!("shoal {args:?} at {addr}: {}", err.trim()))
    }
}

/// Three `shoal run` processes on loopback sharing one CA directory.
struct Cluster {
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, SocketAddr>,
    nodes: BTreeMap<u64, Process>,
    extra: Vec<&'static str>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.nodes.values_mut() {
            let _ = process.child.kill(); // SIGKILL also ends a stopped process
            let _ = process.child.wait();
        }
    }
}

impl Cluster {
    /// Starts nodes 1, 2 and 3 at once (they race to create the CA).
    fn start(extra: &[&'static str]) -> Cluster {
        // Hold every socket until all ports are picked, so they differ.
        let sockets: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs = (1..=3u64)
            .zip(&sockets)
            .map(|(id, s)| (id, s.local_addr().unwrap()))
            .collect();
        drop(sockets);
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            addrs,
            nodes: BTreeMap::new(),
            extra: extra.to_vec(),
        };
        for id in 1..=3 {
            cluster.spawn(id);
        }
        for id in 1..=3 {
            cluster.process(id).wait_line("listening on", WAIT);
        }
        cluster.wait_converged(&[1, 2, 3]);
        cluster
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    fn data(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn peers(&self) -> String {
        self.addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn run_command(&self, id: u64) -> Command {
        let mut command = Command::new(SHOAL);
        command
            .args(["run", "--id", &id.to_string(), "--peers", &self.peers()])
            .arg("--data")
            .arg(self.data(id))
            .arg("--ca-dir")
            .arg(self.certs())
            .args(&self.extra)
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LOG", "warn");
        command
    }

    /// Spawns node `id` (its output drained by a thread).
    fn spawn(&mut self, id: u64) {
        let mut child = self
            .run_command(id)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shoal run");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.nodes.insert(
            id,
            Process {
                child,
                lines: rx,
                seen: Vec::new(),
            },
        );
    }

    /// Starts node `id` again on its data directory and waits until it serves.
    fn restart(&mut self, id: u64) {
        assert!(!self.nodes.contains_key(&id), "node {id} still runs");
        self.spawn(id);
        self.process(id).wait_line("listening on", WAIT);
    }

    fn process(&mut self, id: u64) -> &mut Process {
        self.nodes.get_mut(&id).expect("a running node")
    }

    /// `kill -9`.
    fn kill9(&mut self, id: u64) {
        let mut process = self.nodes.remove(&id).expect("a running node");
        process.child.kill().unwrap();
        process.child.wait().unwrap();
    }

    fn cli(&self, id: u64, args: &[&str]) -> Result<String, String> {
        cli_at(self.addrs[&id], &self.certs(), args)
    }

    fn status(&self, id: u64) -> Result<Status, String> {
        self.cli(id, &["status"]).map(|text| parse_status(&text))
    }

    /// Polls `probe` until it answers `Some`, at most [`WAIT`].
    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every node of `up` reports the same leader (one of
    /// `up`), every node of `up` as an up member owning shards, and every
    /// other member as down and owning none.
    fn wait_converged(&self, up: &[u64]) -> Status {
        self.wait_for(&format!("nodes {up:?} to converge"), || {
            let statuses: Vec<Status> = up
                .iter()
                .map(|id| self.status(*id).ok())
                .collect::<Option<_>>()?;
            let first = statuses.first()?.clone();
            let leader = first.leader.filter(|l| up.contains(l))?;
            let agreed = statuses.iter().all(|s| {
                s.leader == Some(leader)
                    && s.members.len() == first.members.len()
                    && s.members.iter().all(|m| {
                        let live = up.contains(&m.id);
                        (live && m.state == "up" && m.shards > 0)
                            || (!live && m.state == "down" && m.shards == 0)
                    })
            });
            agreed.then_some(first)
        })
    }

    /// Waits until node `id` has applied at least `index`.
    fn wait_applied(&self, id: u64, index: u64) {
        self.wait_for(&format!("node {id} to apply {index}"), || {
            (self.status(id).ok()?.applied >= index).then_some(())
        });
    }

    /// Reads every key of `expected` through node `id`.
    fn check_keys(&self, id: u64, expected: &[(String, String)]) {
        for chunk in expected.chunks(200) {
            let mut args = vec!["kv", "get"];
            args.extend(chunk.iter().map(|(k, _)| k.as_str()));
            let out = self
                .cli(id, &args)
                .unwrap_or_else(|e| panic!("reading through node {id}: {e}"));
            let got: Vec<&str> = out.lines().collect();
            let want: Vec<&str> = chunk.iter().map(|(_, v)| v.as_str()).collect();
            assert_eq!(got, want, "the acknowledged keys read through node {id}");
        }
    }
}

/// Writes distinct keys through rotating target nodes from a thread,
/// keeping the acknowledged ones.
struct Writer {
    targets: Arc<Mutex<Vec<u64>>>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(cluster: &Cluster, prefix: &str) -> Writer {
        let targets = Arc::new(Mutex::new(
            cluster.addrs.keys().copied().collect::<Vec<_>>(),
        ));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (targets, acked, failed, stop) =
                (targets.clone(), acked.clone(), failed.clone(), stop.clone());
            let addrs = cluster.addrs.clone();
            let certs = cluster.certs();
            let prefix = prefix.to_owned();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let target = {
                        let targets = targets.lock().unwrap();
                        if targets.is_empty() {
                            None
                        } else {
                            Some(targets[i as usize % targets.len()])
                        }
                    };
                    let Some(target) = target else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let (key, value) = (format!("{prefix}-{i}"), format!("v{i}@{target}"));
                    match cli_at(addrs[&target], &certs, &["kv", "set", &key, &value]) {
                        Ok(previous) => {
                            assert_eq!(previous, "(nil)", "{key} was new");
                            acked.lock().unwrap().push((key, value));
                        }
                        Err(error) => failed.lock().unwrap().push(error),
                    }
                    i += 1;
                }
            })
        };
        Writer {
            targets,
            acked,
            failed,
            stop,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn set_targets(&self, targets: &[u64]) {
        *self.targets.lock().unwrap() = targets.to_vec();
    }

    /// Waits until `more` further writes are acknowledged.
    fn wait_more(&self, cluster: &Cluster, more: usize, what: &str) {
        let goal = self.acked() + more;
        cluster.wait_for(&format!("{more} more acknowledged writes {what}"), || {
            (self.acked() >= goal).then_some(())
        });
    }

    /// Stops writing; the acknowledged writes.
    fn finish(mut self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("the writer");
        let failed = self.failed.lock().unwrap();
        eprintln!(
            "writer: {} acknowledged, {} failed{}",
            self.acked(),
            failed.len(),
            failed
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        self.acked.lock().unwrap().clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn three_processes_form_a_cluster_and_sigterm_makes_one_leave() {
    let mut cluster = Cluster::start(&[]);
    // Status through each node: three voters up, one leader, shards spread.
    let mut leaders = Vec::new();
    for id in 1..=3 {
        let status = cluster.status(id).unwrap();
        assert_eq!(status.members.len(), 3, "{status:?}");
        assert!(status.members.iter().all(|m| m.voter && m.state == "up"));
        assert!(status.members.iter().all(|m| m.shards > 0), "{status:?}");
        // One shard group (the built-ins share group 0): 2048 shards.
        assert_eq!(status.members.iter().map(|m| m.shards).sum::<u64>(), 2048);
        leaders.push(status.leader.expect("a leader"));
    }
    assert!(leaders.windows(2).all(|w| w[0] == w[1]), "{leaders:?}");
    // Every node serves every key.
    assert_eq!(cluster.cli(1, &["kv", "set", "k", "v"]).unwrap(), "(nil)");
    assert_eq!(cluster.cli(3, &["counter", "add", "c", "2"]).unwrap(), "2");
    assert_eq!(cluster.cli(2, &["counter", "add", "c", "3"]).unwrap(), "5");
    for id in 1..=3 {
        assert_eq!(cluster.cli(id, &["kv", "get", "k"]).unwrap(), "v");
    }

    // SIGTERM: node 3 leaves, exits 0 and says so; two members remain.
    cluster.process(3).signal("-TERM");
    let status = cluster.process(3).wait_exit(WAIT);
    assert!(
        status.success(),
        "{status:?}: {:?}",
        cluster.process(3).seen
    );
    cluster.process(3).wait_line("left the cluster", WAIT);
    cluster.nodes.remove(&3);
    for id in [1, 2] {
        let status = cluster.wait_for("two members", || {
            let status = cluster.status(id).ok()?;
            (status.members.len() == 2).then_some(status)
        });
        assert!(status.members.iter().all(|m| m.id != 3 && m.state == "up"));
        assert_eq!(status.members.iter().map(|m| m.shards).sum::<u64>(), 2048);
        assert_eq!(cluster.cli(id, &["kv", "get", "k"]).unwrap(), "v");
        assert_eq!(cluster.cli(id, &["counter", "get", "c"]).unwrap(), "5");
    }
    // Its id is retired: the same data directory refuses to start again.
    let output = cluster.run_command(3).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retired"), "{stderr}");
}

#[test]
fn writes_continue_while_the_leader_is_killed_and_it_catches_up_after_restart() {
    let mut cluster = Cluster::start(&[]);
    let writer = Writer::start(&cluster, "b");
    writer.wait_more(&cluster, 10, "before the crash");
    let leader = cluster.status(1).unwrap().leader.unwrap();
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    writer.set_targets(&survivors);
    cluster.kill9(leader);
    writer.wait_more(&cluster, 10, "through the survivors");
    cluster.wait_converged(&survivors);

    cluster.restart(leader);
    cluster.wait_converged(&[1, 2, 3]);
    writer.set_targets(&[1, 2, 3]);
    writer.wait_more(&cluster, 5, "after the restart");
    let acked = writer.finish();
    let applied = cluster.status(survivors[0]).unwrap().applied;
    cluster.wait_applied(leader, applied);
    for id in 1..=3 {
        cluster.check_keys(id, &acked);
    }
}

#[test]
fn a_stopped_node_is_marked_down_writes_go_on_and_it_rejoins_after_sigcont() {
    let mut cluster = Cluster::start(&[]);
    let writer = Writer::start(&cluster, "c");
    writer.wait_more(&cluster, 10, "before the stop");
    let leader = cluster.status(1).unwrap().leader.unwrap();
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    writer.set_targets(&others);
    cluster.process(victim).signal("-STOP");
    cluster.wait_converged(&others);
    writer.wait_more(&cluster, 10, "with the node stopped");

    cluster.process(victim).signal("-CONT");
    cluster.wait_converged(&[1, 2, 3]);
    writer.set_targets(&[1, 2, 3]);
    writer.wait_more(&cluster, 5, "after SIGCONT");
    let acked = writer.finish();
    let applied = cluster.status(leader).unwrap().applied;
    cluster.wait_applied(victim, applied);
    for id in 1..=3 {
        cluster.check_keys(id, &acked);
    }
}

#[test]
fn a_rolling_restart_under_writes_loses_no_acknowledged_write() {
    // `--on-term stop`: SIGTERM stops a node without leaving the cluster.
    let mut cluster = Cluster::start(&["--on-term", "stop"]);
    let writer = Writer::start(&cluster, "d");
    writer.wait_more(&cluster, 5, "before the rolling restart");
    for id in 1..=3 {
        let others: Vec<u64> = (1..=3).filter(|other| *other != id).collect();
        writer.set_targets(&others);
        cluster.process(id).signal("-TERM");
        let status = cluster.process(id).wait_exit(WAIT);
        assert!(status.success(), "{status:?}");
        cluster
            .process(id)
            .wait_line("stopping without leaving", WAIT);
        cluster.nodes.remove(&id);
        writer.wait_more(&cluster, 3, &format!("with node {id} stopped"));
        cluster.restart(id);
        cluster.wait_converged(&[1, 2, 3]);
        writer.set_targets(&[1, 2, 3]);
        writer.wait_more(&cluster, 3, &format!("after node {id} restarted"));
    }
    let acked = writer.finish();
    for id in 1..=3 {
        cluster.check_keys(id, &acked);
    }
}
