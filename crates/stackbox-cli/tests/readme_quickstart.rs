//! The README is executable: its quickstart blocks (fenced ```` ```sh quickstart ````, and
//! ```` ```sh quickstart background ```` for the server) are run as written, in order, with
//! bash, on the local engine, against the binary just built: the stand-in images built, `stackbox
//! serve`, a token, a client created with curl and followed until it is `running`, and the
//! CLI deploy of the example. The test fails when the README and the program disagree: a block
//! that exits non-zero, a deployment that fails, or a client that does not run in time.
//!
//! What differs from a newcomer's terminal, and only so that the test shares nothing with the
//! machine or with other tests running at the same time:
//! - `stackbox` on `PATH` is this build's binary (the README installs it with `cargo install`);
//! - `HOME` is a fresh directory (so the default data directory, master key and the images'
//!   catalog under `~/.cache` are the test's own), and the working directory is a fresh one
//!   holding the repository's `examples` and `tests` (the README runs from the repository);
//! - the API listens on a free port: `127.0.0.1:8080` in the blocks is replaced by it;
//! - `STACKBOX_OPERATOR_CONFIG` names a file with only an `[ingress]` table: the test's own edge
//!   router name and host ports instead of `stackbox-edge` on 80/443.
//!
//! Everything the blocks made is removed at the end (the CLI's client destroyed, the server's
//! deleted through the API, the server stopped), also when the test fails.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const EDGE: &str = "stackbox-readme-test-edge";
const EDGE_HTTP_PORT: u16 = 28190;
const EDGE_HTTPS_PORT: u16 = 28553;
/// Where the README's commands reach `stackbox serve`.
const README_ADDRESS: &str = "127.0.0.1:8080";
/// How long one block may take (a professional client on a loaded 2-core machine).
const BLOCK_LIMIT: Duration = Duration::from_secs(20 * 60);

/// A fenced block of the README marked `quickstart`.
#[derive(Debug)]
struct Block {
    /// The README line of its opening fence.
    line: usize,
    background: bool,
    script: String,
}

/// The quickstart blocks, in the README's order. Every fenced block is skipped to its closing
/// fence, so a fence in another block's body is never read as an opening.
fn quickstart_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // Inside a fenced block: `Some(Some(block))` for a quickstart one, `Some(None)` otherwise.
    let mut inside: Option<Option<Block>> = None;
    for (n, line) in readme.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match inside.take() {
            Some(block) if fence => blocks.extend(block),
            Some(mut block) => {
                if let Some(block) = block.as_mut() {
                    block.script.push_str(line);
                    block.script.push('\n');
                }
                inside = Some(block);
            }
            None if fence => {
                let info: Vec<&str> = line.trim_start()[3..].split_whitespace().collect();
                inside = Some(info.contains(&"quickstart").then(|| Block {
                    line: n + 1,
                    background: info.contains(&"background"),
                    script: String::new(),
                }));
            }
            None => {}
        }
    }
    blocks
}

fn readme() -> String {
    std::fs::read_to_string(support::repo_root().join("README.md")).unwrap()
}

#[test]
fn the_readme_marks_its_quickstart_blocks_the_server_among_them() {
    let blocks = quickstart_blocks(&readme());
    let servers: Vec<&Block> = blocks.iter().filter(|b| b.background).collect();
    assert_eq!(
        servers.len(),
        1,
        "one background block, the server: {blocks:#?}"
    );
    assert!(servers[0].script.contains("stackbox serve"), "{servers:#?}");
    // The test's server listens where the test says: the README names the address.
    assert!(servers[0].script.contains(README_ADDRESS), "{servers:#?}");
    let all: String = blocks.iter().map(|b| b.script.as_str()).collect();
    for command in [
        "token create",
        "/v1/clients",
        "\"running\"",
        "stackbox deploy examples/",
    ] {
        assert!(all.contains(command), "no quickstart block has {command:?}");
    }
    // The address the test replaces is the one the README uses.
    assert!(all.contains(README_ADDRESS), "{all}");
    assert!(
        !all.contains("cargo run"),
        "the quickstart runs the installed binary"
    );
}

#[test]
fn the_readme_quickstart_runs_as_written_on_the_test_engine() {
    let Some(_images) = stackbox_testkit::Tier::engine()
        .program("bash", "apt-get install bash")
        .program("curl", "apt-get install curl")
        .program("jq", "apt-get install jq")
        .program("zstd", "apt-get install zstd")
        .images()
    else {
        return;
    };
    let blocks = quickstart_blocks(&readme());
    let mut run = Quickstart::new();
    for block in &blocks {
        let script = block
            .script
            .replace(README_ADDRESS, &format!("127.0.0.1:{}", run.port));
        if block.background {
            run.start_server(block, &script);
        } else {
            run.run(block, &script);
        }
    }
    // The server's client runs (the README polled for it), and so does the CLI's.
    let token = run.token.clone().expect("a server block ran");
    for id in run.server_clients() {
        let (status, client) = run.http("GET", &format!("/v1/clients/{id}"), &token);
        assert_eq!(status, 200, "{client}");
        assert_eq!(client["state"], "running", "{client:#}");
    }
    let cli_clients = run.cli_clients();
    assert_eq!(cli_clients.len(), 1, "{cli_clients:?}");
    eprintln!("{}", run.transcript);
}

/// One run of the quickstart: its directories, environment, server and what to clean up.
struct Quickstart {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
    /// An operator token of the test's own, for its checks and the cleanup.
    token: Option<String>,
    /// What each block printed, for a failure's report.
    transcript: String,
}

impl Quickstart {
    fn new() -> Quickstart {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "work"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let repo = support::repo_root().canonicalize().unwrap();
        for shared in ["examples", "tests"] {
            std::os::unix::fs::symlink(repo.join(shared), dir.path().join("work").join(shared))
                .unwrap();
        }
        std::fs::write(
            dir.path().join("stackbox.toml"),
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = {EDGE_HTTP_PORT}\nhttps_port = {EDGE_HTTPS_PORT}\n"
            ),
        )
        .unwrap();
        Quickstart {
            dir,
            port: support::free_port(),
            server: None,
            token: None,
            transcript: String::new(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A command in the quickstart's environment: a newcomer's shell on a fresh home, with
    /// this build's `stackbox` first on PATH and the test's ingress.
    fn command(&self, program: &str) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_stackbox")).parent().unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)),
        )
        .unwrap();
        // build.sh's cache of the base root file system (and its lock) stays the machine's.
        let cache = std::env::var_os("STACKBOX_CACHE_DIR").unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/stackbox")
                .into_os_string()
        });
        let mut command = Command::new(program);
        command.current_dir(self.work());
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().to_string();
            if name.starts_with("STACKBOX_") || name.starts_with("XDG_") {
                command.env_remove(&name);
            }
        }
        command
            .env("PATH", path)
            .env("HOME", self.home())
            .env("STACKBOX_CACHE_DIR", cache)
            .env(
                "STACKBOX_OPERATOR_CONFIG",
                self.dir.path().join("stackbox.toml"),
            );
        command
    }

    fn bash(&self, script: &str, errexit: bool, log: &Path) -> Child {
        let log = std::fs::File::create(log).unwrap();
        let mut command = self.command("bash");
        if errexit {
            command.args(["-e", "-o", "pipefail"]);
        }
        command
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: a timeout ends the block's children too.
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn start_server(&mut self, block: &Block, script: &str) {
        let log = self.dir.path().join("serve.log");
        self.server = Some(self.bash(script, false, &log));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(self.try_http("GET", "/healthz", None), Ok((200, _))) {
            let exited = self.server.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                self.fail(
                    block,
                    &format!("the server did not answer /healthz ({exited:?})"),
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let output = self
            .command(env!("CARGO_BIN_EXE_stackbox"))
            .args(["token", "create", "--operator"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.token = Some(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }

    /// Runs a block to its end; the test fails on a non-zero exit, a failed deployment of
    /// the server's, or the time limit.
    fn run(&mut self, block: &Block, script: &str) {
        let log = self.dir.path().join(format!("block-{}.log", block.line));
        let mut child = self.bash(script, true, &log);
        let deadline = Instant::now() + BLOCK_LIMIT;
        let mut next_check = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                self.record(block, &log);
                self.fail(block, &format!("it did not end within {BLOCK_LIMIT:?}"));
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + Duration::from_secs(5);
                if let Some(failed) = self.failed_deployment() {
                    kill_group(&mut child);
                    self.record(block, &log);
                    self.fail(
                        block,
                        &format!("a deployment of the server failed: {failed:#}"),
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        self.record(block, &log);
        if !status.success() {
            self.fail(block, &format!("it exited with {status}"));
        }
    }

    fn record(&mut self, block: &Block, log: &Path) {
        let output = std::fs::read_to_string(log).unwrap_or_default();
        self.transcript.push_str(&format!(
            "--- README.md line {}:\n{}--- output:\n{output}\n",
            block.line, block.script
        ));
    }

    fn fail(&self, block: &Block, why: &str) -> ! {
        let serve = std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default();
        let tail: Vec<&str> = serve.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "the README's quickstart block at README.md line {} failed: {why}\n\n{}\n--- the server's log (last lines):\n{}",
            block.line,
            self.transcript,
            tail.join("\n")
        );
    }

    /// The server's newest failed or compensated deployment, if any.
    fn failed_deployment(&self) -> Option<Value> {
        let token = self.token.as_deref()?;
        for id in self.server_clients() {
            let (_, client) = self.http("GET", &format!("/v1/clients/{id}"), token);
            let Some(deployment) = client["latest_deployment_id"].as_str() else {
                continue;
            };
            let (_, view) = self.http("GET", &format!("/v1/deployments/{deployment}"), token);
            if matches!(view["status"].as_str(), Some("failed" | "compensated")) {
                return Some(serde_json::json!({"client": client, "deployment": view}));
            }
        }
        None
    }

    fn server_clients(&self) -> Vec<String> {
        let Some(token) = self.token.as_deref() else {
            return Vec::new();
        };
        let (_, page) = self.http("GET", "/v1/clients", token);
        page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["client_id"].as_str().map(String::from))
            .collect()
    }

    /// The clients under a bundle root (`ROOT/clients/<id>`).
    fn clients_under(root: &Path) -> Vec<String> {
        std::fs::read_dir(root.join("clients"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|name| !name.starts_with('.'))
            .collect()
    }

    fn cli_clients(&self) -> Vec<String> {
        Self::clients_under(&self.work().join("deployments"))
    }

    fn try_http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n"
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn http(&self, method: &str, path: &str, token: &str) -> (u16, Value) {
        match self.try_http(method, path, Some(token)) {
            Ok((status, body)) => (
                status,
                serde_json::from_str(&body).unwrap_or(Value::String(body)),
            ),
            Err(error) => (0, Value::String(error.to_string())),
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let mut everyone = self.cli_clients();
        // The CLI's client, as the README's reader would remove it.
        for id in self.cli_clients() {
            let _ = self
                .command(env!("CARGO_BIN_EXE_stackbox"))
                .args(["destroy", &id, "--yes", "--out", "deployments"])
                .output();
        }
        // The server's, through its API, each followed until it is gone.
        if let Some(token) = self.token.clone() {
            let ids = self.server_clients();
            for id in &ids {
                self.http("DELETE", &format!("/v1/clients/{id}?confirm={id}"), &token);
            }
            let deadline = Instant::now() + Duration::from_secs(300);
            while Instant::now() < deadline
                && ids.iter().any(|id| {
                    let (status, _) = self.http("GET", &format!("/v1/clients/{id}"), &token);
                    status != 404 && status != 0
                })
            {
                std::thread::sleep(Duration::from_secs(2));
            }
            everyone.extend(ids);
        }
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", server.id())])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            if server.try_wait().ok().flatten().is_none() {
                kill_group(&mut server);
            }
        }
        // Whatever a failure left: the bundles name every client either side made.
        everyone.extend(Self::clients_under(
            &self.home().join(".local/share/stackbox/bundles"),
        ));
        everyone.sort();
        everyone.dedup();
        support::remove_from_engine(EDGE, &everyone);
        let _ = Command::new("docker")
            .args(["network", "rm", EDGE])
            .output();
    }
}

/// SIGKILL to the child's process group (the block's shell and what it started).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}
