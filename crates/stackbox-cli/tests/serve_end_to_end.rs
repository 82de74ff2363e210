//! End-to-end against `stackbox serve` over a real socket, with a real store (SQLite in a
//! temporary data directory) and a real Docker engine: tokens, creating a client through the
//! API, the server killed with SIGKILL in the middle of deployments and started again (each
//! deployment completes, exactly one copy of each stack on the engine), read-only client
//! tokens, metrics, and a confirmed delete down to nothing.
//!
//! Needs the engine and the local test images (`scripts/test.sh` provides both).

use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::containers_of;
use support::server::{client_body, finished, poll, running_step, Server};

const EDGE: &str = "stackbox-serve-test-edge";

fn new_server(images: &str) -> Server {
    Server::new(images, EDGE, 28082, 28445)
}

#[test]
fn serve_survives_sigkill_mid_deployment_and_keeps_one_stack() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let mut server = new_server(&images);
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
