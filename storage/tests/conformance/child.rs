//! The `kill -9` harness: a test runs one of this binary's ignored tests as
//! a child process, reads the lines it prints (with [`say`]) and kills it
//! (SIGKILL on Unix) at a line of its choosing.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};

/// Prints `line` to stdout at once, for the parent to read.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("writes stdout");
    out.flush().expect("flushes stdout");
}

/// What a child printed, and how it ended.
pub(crate) struct Run {
    /// Every line it printed, without what libtest may print before the
    /// first one on the same line.
    pub(crate) lines: Vec<String>,
    /// Whether it was killed; `false` if it ended before the kill point.
    pub(crate) killed: bool,
    pub(crate) status: ExitStatus,
}

/// Runs the ignored test `test` (its path in this binary) as a child with
/// the environment `env`, kills it at the first line `kill_at` accepts,
/// reads the rest of its output and reaps it.
pub(crate) fn run_and_kill(
    test: &str,
    env: &[(&str, &OsStr)],
    mut kill_at: impl FnMut(&str) -> bool,
) -> Run {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        // libtest may print `test … ` on the same line first.
        let line = line.expect("reads child output");
        let line = line.rsplit("... ").next().unwrap_or_default().to_owned();
        if !killed && kill_at(&line) {
            child.kill().expect("kill -9"); // SIGKILL on Unix
            killed = true;
        }
        lines.push(line);
    }
    let status = child.wait().expect("reaps the child");
    Run {
        lines,
        killed,
        status,
    }
}
