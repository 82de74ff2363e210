//! What the binary's end-to-end tests share: free ports, the repository root, the engine's view
//! of a client, removing a client's engine objects after a failed test, and the Python tools of
//! `tests/tools` (SMTP sink, webhook receiver, fake Stripe) started and killed. Each test file is
//! its own crate and uses part of it.
#![allow(dead_code)]

pub mod cli;
pub mod server;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// This host's hard open-files limit, for the operator's `[host] max_open_files` (a sandboxed
/// dockerd cannot raise containers above it).
pub fn hard_open_files_limit() -> u64 {
    Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(1 << 20)
}

/// `name state` of each of the client's containers, sorted.
pub fn containers_of(id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.stackbox.client={id}"),
            "--format",
            "{{.Names}} {{.State}}",
        ])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// Removes the edge router and every container, network and volume of these clients: what a
/// test that failed half-way leaves on the engine.
pub fn remove_from_engine(edge: &str, clients: &[String]) {
    let _ = Command::new("docker").args(["rm", "-f", edge]).output();
    for id in clients {
        let filter = format!("label=io.stackbox.client={id}");
        for (list, remove) in [
            (["ps", "-aq"].as_slice(), ["rm", "-f"].as_slice()),
            (&["network", "ls", "-q"], &["network", "rm"]),
            (&["volume", "ls", "-q"], &["volume", "rm"]),
        ] {
            let mut args = list.to_vec();
            args.extend(["--filter", &filter]);
            let Ok(out) = Command::new("docker").args(&args).output() else {
                continue;
            };
            for object in String::from_utf8_lossy(&out.stdout).lines() {
                let mut args = remove.to_vec();
                args.push(object);
                let _ = Command::new("docker").args(&args).output();
            }
        }
    }
}

/// A child process killed when dropped (with its stdout kept open, so that a late write of
/// the child does not fail on a closed pipe).
pub struct Process(pub Child, pub Option<std::process::ChildStdout>);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `probe` every 300 ms until it gives a value; past `timeout` the test fails naming
/// `what` and what `explain` says of the last state.
pub fn wait_until_or<T>(
    what: &str,
    timeout: std::time::Duration,
    mut probe: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}{}",
            explain()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

pub fn wait_until<T>(
    what: &str,
    timeout: std::time::Duration,
    probe: impl FnMut() -> Option<T>,
) -> T {
    wait_until_or(what, timeout, probe, String::new)
}

/// The files `<n><suffix>` of `dir`, in the order the sinks of tests/tools numbered them.
pub fn numbered_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let n = path
                .file_name()?
                .to_str()?
                .strip_suffix(suffix)?
                .parse()
                .ok()?;
            Some((n, path))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Starts a Python tool from tests/tools and waits for its "ready" line.
pub fn python_tool(script: &str, args: &[&str]) -> Process {
    let mut child = std::process::Command::new("python3")
        .arg(repo_root().join("tests/tools").join(script))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        match stdout.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => panic!(
                "{script} ended before it was ready: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    Process(child, Some(stdout))
}
