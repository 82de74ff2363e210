//! End-to-end against `stackbox serve` over a real socket, with a real store (SQLite in a
//! temporary data directory) and a real Docker engine: tokens, creating a client through the
//! API, the server killed with SIGKILL in the middle of deployments and started again (each
//! deployment completes, exactly one copy of each stack on the engine), read-only client
//! tokens, metrics, and a confirmed delete down to nothing.
//!
//! Needs the engine and the local test images (`scripts/test.sh` provides both).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::containers_of;

const EDGE: &str = "stackbox-serve-test-edge";

struct Server {
    data: tempfile::TempDir,
    operator: PathBuf,
    images: String,
    port: u16,
    child: Option<Child>,
    /// Clients made through the API, cleaned from the engine if an assertion fails.
    made: std::cell::RefCell<Vec<String>>,
}

impl Server {
    fn new() -> Server {
        let images = std::env::var("STACKBOX_TEST_IMAGES").expect(
            "STACKBOX_TEST_IMAGES is not set: run scripts/test.sh, which starts the engine and \
             builds the local test images",
        );
        let data = tempfile::tempdir().unwrap();
        let hard_limit = support::hard_open_files_limit();
        let operator = data.path().join("stackbox.toml");
        std::fs::write(
            &operator,
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 28082\nhttps_port = 28445\n\
                 [host]\nmax_open_files = {hard_limit}\n"
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
            made: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
        command
            .env("STACKBOX_DATA_DIR", self.data.path().join("data"))
            .env("STACKBOX_OPERATOR_CONFIG", &self.operator)
            .env("STACKBOX_IMAGES", &self.images)
            .env_remove("STACKBOX_DATABASE_URL")
            .env_remove("STACKBOX_MASTER_KEY");
        command
    }

    fn start(&mut self) {
        let child = self
            .command()
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
    fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn token(&self, args: &[&str]) -> String {
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

    fn try_http(
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

    fn http(
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
        support::remove_from_engine(EDGE, &self.made.borrow());
    }
}

fn client_body(company: &str, domain: &str) -> String {
    serde_json::json!({
        "company_name": company,
        "domain": domain,
        "plan": "starter",
        "admin_email": format!("owner@{domain}"),
    })
    .to_string()
}

/// Polls a deployment until `done` says so; returns the last view.
fn poll(
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

fn running_step(view: &serde_json::Value) -> Option<String> {
    view["steps"]
        .as_array()?
        .iter()
        .find(|s| s["status"] == "running")
        .and_then(|s| s["name"].as_str().map(String::from))
}

fn finished(view: &serde_json::Value) -> bool {
    matches!(
        view["status"].as_str(),
        Some("succeeded" | "failed" | "compensated")
    )
}

#[test]
fn serve_survives_sigkill_mid_deployment_and_keeps_one_stack() {
    let mut server = Server::new();
    server.start();
    let operator = server.token(&["--operator"]);
    assert!(operator.len() > 20);

    // Unauthenticated and wrongly authenticated calls are refused.
    let (status, _) = server.try_http("GET", "/v1/clients", None, None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = server.http("GET", "/v1/clients", "sbx_not-a-token", None);
    assert_eq!(status, 401);

    // Kill the server while different steps run; each deployment must complete after restart.
    let mut killed_at = Vec::new();
    let mut clients = Vec::new();
    for (n, target) in ["infrastructure", "containers", "health"]
        .iter()
        .enumerate()
    {
        let domain = format!("crash{n}.example");
        let (status, created) = server.http(
            "POST",
            "/v1/clients",
            &operator,
            Some(&client_body(&format!("Crash Test {n}"), &domain)),
        );
        assert_eq!(status, 202, "{created}");
        let id = created["client_id"].as_str().unwrap().to_string();
        server.made.borrow_mut().push(id.clone());
        let deployment = created["deployment_id"].as_str().unwrap().to_string();
        assert!(
            created["credentials"]["admin_password"]
                .as_str()
                .unwrap()
                .len()
                >= 16
        );
        let view = poll(
            &server,
            &operator,
            &deployment,
            Duration::from_secs(60),
            |v| running_step(v).as_deref() == Some(target) || finished(v),
        );
        killed_at.push(running_step(&view).unwrap_or_else(|| "after the end".into()));
        server.kill_hard();
        server.start();
        let view = poll(
            &server,
            &operator,
            &deployment,
            Duration::from_secs(180),
            finished,
        );
        assert_eq!(view["status"], "succeeded", "killed at {target}: {view}");
        let containers = containers_of(&id);
        assert_eq!(containers.len(), 9, "one copy of the stack: {containers:?}");
        assert!(
            containers
                .iter()
                .all(|c| c.ends_with(" running") && !c.contains("-replaced")),
            "{containers:?}"
        );
        clients.push((id, deployment));
    }
    assert!(
        killed_at.iter().any(|s| s != "after the end"),
        "at least one kill must land inside a step: {killed_at:?}"
    );

    // Secrets are shown once: never in GET responses.
    let (id, _) = &clients[0];
    let (status, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(status, 200, "{detail}");
    assert!(!detail.to_string().contains("password"), "{detail}");
    let state = detail["state"].as_str().unwrap_or_default();
    assert!(state == "running" || state == "starting", "{detail}");
    // The health monitor follows the engine's health events to `running`.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
        if detail["state"] == "running" {
            let health = detail["health"].as_array().unwrap();
            assert_eq!(health.len(), 9, "{detail}");
            break;
        }
        assert!(Instant::now() < deadline, "never running: {detail}");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("server killed during: {killed_at:?}");

    // A client token reads its own client only, and writes nothing.
    let client_token = server.token(&["--client", id]);
    let (status, _) = server.http("GET", &format!("/v1/clients/{id}"), &client_token, None);
    assert_eq!(status, 200);
    let (other, _) = &clients[1];
    let (status, _) = server.http("GET", &format!("/v1/clients/{other}"), &client_token, None);
    assert_eq!(status, 404);
    let (status, _) = server.http(
        "POST",
        &format!("/v1/clients/{id}/stop"),
        &client_token,
        None,
    );
    assert_eq!(status, 403);

    // Metrics count the deployments.
    let (status, metrics) = server.try_http("GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("stackbox_deployments_total{outcome=\"succeeded\"} 3"),
        "{metrics}"
    );

    // The CLI's lifecycle commands through the server (--server, --token).
    let remote = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_stackbox"))
            .args([
                "--server",
                &format!("http://127.0.0.1:{}", server.port),
                "--token",
                &operator,
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let listed: serde_json::Value =
        serde_json::from_str(&remote(&["status", "--all", "--json"])).unwrap();
    assert_eq!(listed["clients"].as_array().unwrap().len(), 3, "{listed}");
    remote(&["stop", other]);
    let stopped: serde_json::Value =
        serde_json::from_str(&remote(&["status", other, "--json"])).unwrap();
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    remote(&["start", other]);
    assert!(containers_of(other).iter().all(|c| c.ends_with(" running")));

    // Delete needs the confirmation; then everything of the client goes.
    for (id, _) in &clients {
        let (status, _) = server.http("DELETE", &format!("/v1/clients/{id}"), &operator, None);
        assert_eq!(status, 400);
        let (status, body) = server.http(
            "DELETE",
            &format!("/v1/clients/{id}?confirm={id}"),
            &operator,
            None,
        );
        assert_eq!(status, 202, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (id, _) in &clients {
        while !containers_of(id).is_empty()
            || server
                .http("GET", &format!("/v1/clients/{id}"), &operator, None)
                .0
                != 404
        {
            assert!(Instant::now() < deadline, "{id} not destroyed");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
