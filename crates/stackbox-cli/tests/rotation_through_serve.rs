//! Secret rotation through `stackbox serve`, on a real store and engine: the API refuses what
//! cannot be rotated live (naming `only`) and client tokens; a rotation is a journaled
//! deployment after which MariaDB takes only the new root password and every service is
//! healthy; a rotation that fails half-way (a name on the engine that blocks setting a
//! replaced container aside) ends `compensated` with the client running on the previous
//! secrets. No secret appears in any answer.

mod support;

use std::process::Command;
use std::time::Duration;

use support::server::{client_body, finished, poll, Server};

const EDGE: &str = "stackbox-rotation-serve-test-edge";

fn container_env(container: &str, name: &str) -> String {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .Config.Env}}{{println .}}{{end}}",
            container,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{container} has no {name}"))
        .to_string()
}

fn root_logs_in(id: &str, password: &str) -> bool {
    Command::new("docker")
        .args([
            "exec",
            &format!("{id}-mysql-1"),
            "sh",
            "-c",
            &format!("MYSQL_PWD='{password}' mariadb -h127.0.0.1 -uroot -e 'SELECT 1'"),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

fn wait(server: &Server, token: &str, deployment: &str) -> serde_json::Value {
    poll(
        server,
        token,
        deployment,
        Duration::from_secs(300),
        finished,
    )
}

#[test]
fn a_rotation_through_the_api_replaces_live_secrets_and_a_failed_one_is_compensated() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let mut server = Server::new(&images, EDGE, 28187, 28550);
    server.start();
    let operator = server.token(&["--operator"]);
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body(
            "Serve Rotation Shop",
            "serve-rotation.example",
        )),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    let view = wait(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["status"], "succeeded", "{view}");
    let path = format!("/v1/clients/{id}/rotate-secrets");

    // Refusals.
    let client_token = server.token(&["--client", &id]);
    let (status, _) = server.http("POST", &path, &client_token, None);
    assert_eq!(status, 403);
    for (body, field) in [
        (r#"{"only": ["ADMIN_PASSWORD"]}"#, "only"),
        (r#"{"only": ["NOPE"]}"#, "only"),
        (r#"{"only": ["CALCOM_DB_PASSWORD"]}"#, "only"),
        (r#"{"every": true}"#, "every"),
    ] {
        let (status, error) = server.http("POST", &path, &operator, Some(body));
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let (status, _) = server.http(
        "POST",
        "/v1/clients/nobody-00000000/rotate-secrets",
        &operator,
        None,
    );
    assert_eq!(status, 404);

    // A rotation.
    let mysql = format!("{id}-mysql-1");
    let before = container_env(&mysql, "MARIADB_ROOT_PASSWORD");
    let (status, accepted) = server.http("POST", &path, &operator, None);
    assert_eq!(status, 202, "{accepted}");
    let view = wait(
        &server,
        &operator,
        accepted["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["status"], "succeeded", "{view}");
    let after = container_env(&mysql, "MARIADB_ROOT_PASSWORD");
    assert_ne!(before, after);
    assert!(
        root_logs_in(&id, &after),
        "the new root password does not work"
    );
    assert!(
        !root_logs_in(&id, &before),
        "the old root password still works"
    );
    let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(detail["state"], "running", "{detail}");
    let (_, history) = server.http(
        "GET",
        &format!("/v1/clients/{id}/deployments"),
        &operator,
        None,
    );
    for text in [view.to_string(), history.to_string(), detail.to_string()] {
        assert!(
            !text.contains(&after) && !text.contains(&before),
            "a secret in an answer"
        );
    }

    // A rotation that fails after MariaDB took the new password: setting Nextcloud's
    // container aside (it uses Redis's rotated password) is blocked by a name on the engine.
    let blocker = format!("{id}-nextcloud-1-replaced");
    let website_image = String::from_utf8_lossy(
        &Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.Config.Image}}",
                &format!("{id}-website-1"),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let made = Command::new("docker")
        .args(["create", "--name", &blocker, &website_image])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (status, accepted) = server.http("POST", &path, &operator, None);
    assert_eq!(status, 202, "{accepted}");
    let view = wait(
        &server,
        &operator,
        accepted["deployment_id"].as_str().unwrap(),
    );
    let _ = Command::new("docker").args(["rm", "-f", &blocker]).output();
    assert_eq!(view["status"], "compensated", "{view}");
    assert_eq!(container_env(&mysql, "MARIADB_ROOT_PASSWORD"), after);
    assert!(
        root_logs_in(&id, &after),
        "the previous root password no longer works"
    );
    let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(detail["state"], "running", "{detail}");
    // The store kept the previous secrets: a redeploy changes nothing.
    let (status, accepted) = server.http(
        "POST",
        &format!("/v1/clients/{id}/redeploy"),
        &operator,
        None,
    );
    assert_eq!(status, 202);
    let view = wait(
        &server,
        &operator,
        accepted["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(container_env(&mysql, "MARIADB_ROOT_PASSWORD"), after);
}
