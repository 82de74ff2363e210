//! `stackbox serve` as the binary's end-to-end tests drive it: its own data directory and
//! operator file, started and killed with SIGKILL, tokens, and HTTP over a real socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub data: tempfile::TempDir,
    pub operator: PathBuf,
    images: String,
    pub port: u16,
    child: Option<Child>,
    edge: &'static str,
    /// Clients made through the API, cleaned from the engine if an assertion fails.
    pub made: std::cell::RefCell<Vec<String>>,
    /// More environment for `serve` and every command (SMTP, retry bases).
    pub env: Vec<(String, String)>,
}

/// The operator file's probes, off: the Traefik stand-ins answer plain HTTP on their TLS
/// entry point, so a probe through the edge would fail and mark every client degraded after
/// a few minutes. The probes test replaces this with its own table and a real TLS server.
pub const PROBES_OFF: &str = "[probes]\nenabled = false\n";

impl Server {
    /// A server on the test images' catalog (`stackbox_testkit::engine_images()`, the engine
    /// tier's guard, gives it) with its own data directory, edge router name and edge ports
    /// (each test file its own, so that test binaries running in parallel never share them).
    pub fn new(images: &str, edge: &'static str, http_port: u16, https_port: u16) -> Server {
        let images = images.to_string();
        let data = tempfile::tempdir().unwrap();
        let hard_limit = super::hard_open_files_limit();
        let operator = data.path().join("stackbox.toml");
        std::fs::write(
            &operator,
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{edge}\"\nhttp_port = {http_port}\nhttps_port = {https_port}\n\
                 [host]\nmax_open_files = {hard_limit}\n{PROBES_OFF}"
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Server {
            data,
            operator,
            images,
            port,
            child: None,
            edge,
            made: std::cell::RefCell::new(Vec::new()),
            env: Vec::new(),
        }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
        command
            .env("STACKBOX_DATA_DIR", self.data.path().join("data"))
            .env("STACKBOX_OPERATOR_CONFIG", &self.operator)
            .env("STACKBOX_IMAGES", &self.images)
            .env_remove("STACKBOX_DATABASE_URL")
            .env_remove("STACKBOX_MASTER_KEY")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    pub fn start(&mut self) {
        let child = self
            .command()
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            // STACKBOX_TEST_SERVE_LOG=1 shows the server's log while debugging a test.
            .stderr(if std::env::var_os("STACKBOX_TEST_SERVE_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.try_http("GET", "/healthz", None, None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("stackbox serve did not answer /healthz within 20 s");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn token(&self, args: &[&str]) -> String {
        let output = self
            .command()
            .args(["token", "create"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn try_http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
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

    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, body) = self.try_http(method, path, Some(token), body).unwrap();
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_hard();
        super::remove_from_engine(self.edge, &self.made.borrow());
    }
}

pub fn client_body(company: &str, domain: &str) -> String {
    serde_json::json!({
        "company_name": company,
        "domain": domain,
        "plan": "starter",
        "admin_email": format!("owner@{domain}"),
    })
    .to_string()
}

/// Polls a deployment until `done` says so; returns the last view.
pub fn poll(
    server: &Server,
    token: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, view) = server.http("GET", &format!("/v1/deployments/{id}"), token, None);
        assert_eq!(status, 200, "{view}");
        if done(&view) || Instant::now() > deadline {
            return view;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn running_step(view: &serde_json::Value) -> Option<String> {
    view["steps"]
        .as_array()?
        .iter()
        .find(|s| s["status"] == "running")
        .and_then(|s| s["name"].as_str().map(String::from))
}

pub fn finished(view: &serde_json::Value) -> bool {
    matches!(
        view["status"].as_str(),
        Some("succeeded" | "failed" | "compensated")
    )
}
