//! The `shoal` binary as a user runs it: a node process, the CLI talking to
//! it over QUIC + mutual TLS, `kill -9`, restart, SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// A running `shoal run` process and the address it listens on.
struct NodeProcess {
    child: Child,
    addr: String,
}

impl NodeProcess {
    fn start(data: &Path) -> NodeProcess {
        let mut child = Command::new(SHOAL)
            .args(["run", "--id", "1", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shoal run");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining: the node must never block on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the node prints its address");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        NodeProcess { child, addr }
    }

    fn cli(&self, data: &Path, args: &[&str]) -> String {
        let output = Command::new(SHOAL)
            .args(args)
            .args(["--node", &self.addr, "--tls"])
            .arg(data.join("tls"))
            .output()
            .expect("run the CLI");
        assert!(
            output.status.success(),
            "shoal {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    fn wait(mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the node did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn the_binary_serves_the_builtin_entities_and_keeps_them_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node1");
    let node = NodeProcess::start(&data);
    assert_eq!(
        node.cli(&data, &["kv", "set", "greeting", "hello"]),
        "(nil)"
    );
    assert_eq!(node.cli(&data, &["kv", "set", "greeting", "hi"]), "hello");
    assert_eq!(node.cli(&data, &["kv", "get", "greeting"]), "hi");
    assert_eq!(node.cli(&data, &["counter", "add", "visits", "5"]), "5");
    assert_eq!(node.cli(&data, &["counter", "add", "visits", "-2"]), "3");
    let status = node.cli(&data, &["status"]);
    assert!(status.contains("node      1"), "{status}");
    assert!(status.contains("shoal.Kv"), "{status}");

    // kill -9, then restart on the same data: every acknowledged write is there.
    let mut crashed = node;
    crashed.child.kill().unwrap();
    crashed.child.wait().unwrap();
    let node = NodeProcess::start(&data);
    assert_eq!(node.cli(&data, &["kv", "get", "greeting"]), "hi");
    assert_eq!(node.cli(&data, &["counter", "get", "visits"]), "3");
    assert_eq!(node.cli(&data, &["kv", "del", "greeting"]), "true");
    assert_eq!(node.cli(&data, &["kv", "get", "greeting"]), "(nil)");

    // SIGTERM: a graceful shutdown and a clean exit.
    let pid = node.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    assert!(node.wait(Duration::from_secs(30)).success());
}

#[test]
fn certificates_from_ca_init_and_cert_issue_work_and_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(SHOAL).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ca = dir.path().join("ca");
    let data = dir.path().join("n7");
    let ops = dir.path().join("ops");
    run(&[
        "ca",
        "init",
        "--dir",
        ca.to_str().unwrap(),
        "--cluster",
        "dev",
    ]);
    run(&[
        "cert",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--node",
        "1",
        "--out",
        data.join("tls").to_str().unwrap(),
    ]);
    run(&[
        "cert",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--client",
        "ops",
        "--out",
        ops.to_str().unwrap(),
    ]);
    // The node finds its prepared certificate and needs no CA key.
    let node = NodeProcess::start(&data);
    assert!(!data.join("tls").join("ca.key").exists());
    let output = Command::new(SHOAL)
        .args([
            "counter",
            "add",
            "c",
            "--node",
            &node.addr,
            "--tls",
            ops.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");

    // A client of another CA is refused.
    let other = dir.path().join("other");
    run(&[
        "ca",
        "init",
        "--dir",
        other.to_str().unwrap(),
        "--cluster",
        "dev",
    ]);
    let output = Command::new(SHOAL)
        .args([
            "counter",
            "get",
            "c",
            "--node",
            &node.addr,
            "--tls",
            other.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a certificate from another CA must be refused"
    );
    let pid = node.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(node.wait(Duration::from_secs(30)).success());
}

#[test]
fn run_takes_a_toml_config_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-config");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "id = 3\nlisten = \"127.0.0.1:0\"\ndata = {:?}\ncluster = \"dev\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(SHOAL)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the node starts");
    assert!(
        line.starts_with("shoal node 3 listening on 127.0.0.1:"),
        "{line}"
    );
    let node = NodeProcess {
        child,
        addr: line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned(),
    };
    assert_eq!(node.cli(&data, &["counter", "add", "c", "2"]), "2");
    let pid = node.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(node.wait(Duration::from_secs(30)).success());

    // An unknown key is refused with a message naming the file.
    std::fs::write(&config, "id = 3\nport = 7\n").unwrap();
    let output = Command::new(SHOAL)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node.toml"), "{stderr}");
}
