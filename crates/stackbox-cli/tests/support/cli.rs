//! The binary run on the local engine with the test images: a temporary bundle root, data
//! directory and operator file whose edge router and host ports are the test's own, so test
//! files never share engine objects. Dropping it removes what its clients left on the engine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

pub struct CliEnv {
    pub root: tempfile::TempDir,
    pub operator: PathBuf,
    pub edge: String,
    images: String,
}

impl CliEnv {
    /// On the test images' catalog (`stackbox_testkit::engine_images()`, the engine tier's
    /// guard, gives it); `extra` is appended to the operator file (TOML sections of the
    /// test's own).
    pub fn new(images: &str, edge: &str, http_port: u16, https_port: u16, extra: &str) -> CliEnv {
        let root = tempfile::tempdir().unwrap();
        let operator = root.path().join("stackbox.toml");
        std::fs::write(
            &operator,
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{edge}\"\nhttp_port = {http_port}\nhttps_port = {https_port}\n\
                 [host]\nmax_open_files = {}\n{extra}",
                super::hard_open_files_limit()
            ),
        )
        .unwrap();
        CliEnv {
            root,
            operator,
            edge: edge.to_string(),
            images: images.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The binary with this environment and no `--out` (commands on an existing client find
    /// its bundle themselves).
    pub fn bare(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
        // In the root: a default bundle root (relative) never lands in the source tree.
        command
            .args(args)
            .current_dir(self.path())
            .env("STACKBOX_OPERATOR_CONFIG", &self.operator)
            .env("STACKBOX_IMAGES", &self.images)
            .env("STACKBOX_DATA_DIR", self.path().join("data"))
            .env_remove("STACKBOX_MASTER_KEY")
            .env_remove("STACKBOX_DATABASE_URL");
        command
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.bare(args);
        command.args(["--out", self.path().to_str().unwrap()]);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "stackbox {args:?} failed:\n{}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// The last JSON line a `--json` command printed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        last_json(&self.ok(args))
    }

    /// A client file under the root, for `deploy`.
    pub fn client_file(&self, name: &str, toml: &str) -> String {
        let path = self.path().join(name);
        std::fs::write(&path, toml).unwrap();
        path.display().to_string()
    }

    pub fn env_file(&self, id: &str) -> PathBuf {
        self.path().join("clients").join(id).join(".env")
    }

    /// One value of the client's `.env`.
    pub fn secret(&self, id: &str, name: &str) -> String {
        let text = std::fs::read_to_string(self.env_file(id)).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} is not in {id}'s .env"))
            .trim_matches('"')
            .to_string()
    }

    pub fn state(&self, id: &str) -> String {
        let out = self.ok(&["status", id, "--json"]);
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["state"].as_str().unwrap_or_default().to_string()
    }

    /// The state once the engine's own health checks caught up (not needed by `status`,
    /// which checks what the engine has not judged yet; kept for states other than running).
    pub fn settled_state(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = self.state(id);
            if state != "starting" || Instant::now() > deadline {
                return state;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

impl Drop for CliEnv {
    fn drop(&mut self) {
        let mut clients = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.path().join("clients")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') {
                    clients.push(name);
                }
            }
        }
        super::remove_from_engine(&self.edge, &clients);
    }
}

pub fn last_json(out: &str) -> serde_json::Value {
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Runs a shell script inside a container: (succeeded, standard output and error).
pub fn try_exec(container: &str, script: &str) -> (bool, String) {
    let output = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    (
        output.status.success(),
        format!("{}{}", text(&output.stdout), text(&output.stderr))
            .trim()
            .to_string(),
    )
}

/// Runs a shell script inside a container; its output, or the test fails.
pub fn exec(container: &str, script: &str) -> String {
    let (ok, out) = try_exec(container, script);
    assert!(ok, "docker exec {container} {script}: {out}");
    out
}
