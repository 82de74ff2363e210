//! Backups through `stackbox serve` on a real engine with real restic: journaled `backup`,
//! `restore`, `verify` and `clone` deployments over the REST API, a backup interrupted by
//! SIGKILL of the server and resumed, the backup state and metrics, and a destroy that keeps
//! the client's backups.

mod support;

use std::process::Command;
use std::time::Duration;

use support::server::{client_body, finished, poll, running_step, Server};

const EDGE: &str = "stackbox-backup-serve-test-edge";

fn sh(container: &str, script: &str) -> String {
    let output = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{container}: {script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn mariadb(id: &str, sql: &str) -> String {
    sh(
        &format!("{id}-mysql-1"),
        &format!("MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb -uroot -N -B -e \"{sql}\""),
    )
}

fn marker_rows(id: &str) -> String {
    mariadb(id, "SELECT COUNT(*) FROM espocrm.stackbox_marker")
}

fn marker_file(id: &str) -> bool {
    Command::new("docker")
        .args([
            "exec",
            &format!("{id}-nextcloud-1"),
            "test",
            "-f",
            "/var/www/html/data/marker.txt",
        ])
        .status()
        .unwrap()
        .success()
}

fn wait(server: &Server, token: &str, deployment: &str) -> serde_json::Value {
    let view = poll(
        server,
        token,
        deployment,
        Duration::from_secs(300),
        finished,
    );
    assert_eq!(view["status"], "succeeded", "{view}");
    view
}

#[test]
fn backups_restores_verifies_and_clones_are_journaled_deployments_of_serve() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .program("restic", "apt-get install restic")
        .images()
    else {
        return;
    };
    let mut server = Server::new(&images, EDGE, 28182, 28545);
    server.start();
    let operator = server.token(&["--operator"]);
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Serve Backup Shop", "serve-backup.example")),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    wait(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
    );
    let client_token = server.token(&["--client", &id]);

    mariadb(
        &id,
        "CREATE TABLE espocrm.stackbox_marker (id INT PRIMARY KEY); \
         INSERT INTO espocrm.stackbox_marker VALUES (1), (2), (3);",
    );
    sh(
        &format!("{id}-nextcloud-1"),
        "mkdir -p /var/www/html/data && echo kept > /var/www/html/data/marker.txt",
    );

    // A backup, journaled; a client token may read the list but not start one.
    let (status, _) = server.http(
        "POST",
        &format!("/v1/clients/{id}/backups"),
        &client_token,
        None,
    );
    assert_eq!(status, 403);
    let (status, started) = server.http(
        "POST",
        &format!("/v1/clients/{id}/backups"),
        &operator,
        None,
    );
    assert_eq!(status, 202, "{started}");
    let view = wait(
        &server,
        &operator,
        started["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["kind"], "backup", "{view}");
    let output = &view["steps"][0]["output"];
    assert!(output["snapshot"].as_str().unwrap().len() >= 8, "{view}");
    assert!(output["rows"].as_u64().unwrap() >= 3, "{view}");

    let (status, list) = server.http(
        "GET",
        &format!("/v1/clients/{id}/backups"),
        &client_token,
        None,
    );
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["backups"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["backups"][0]["status"], "succeeded");
    assert_eq!(list["state"]["missing"], false);
    assert!(list["state"]["last_success_at"].is_string());
    // The CLI's --server mode reads the same list.
    let listed = server
        .command()
        .args(["--server", &format!("http://127.0.0.1:{}", server.port)])
        .args(["--token", &operator, "backup", "list", &id, "--json"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["backups"][0]["status"], "succeeded", "{listed}");
    let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(detail["backup"]["missing"], false, "{detail}");

    // SIGKILL of the server while a backup runs: after the restart it completes, and every
    // service of the client is still running.
    let (status, second) = server.http(
        "POST",
        &format!("/v1/clients/{id}/backups"),
        &operator,
        None,
    );
    assert_eq!(status, 202, "{second}");
    let second = second["deployment_id"].as_str().unwrap().to_string();
    poll(&server, &operator, &second, Duration::from_secs(60), |v| {
        running_step(v).is_some() || finished(v)
    });
    server.kill_hard();
    let running = support::containers_of(&id).len();
    assert!(running >= 7, "{running} containers of {id} after the kill");
    server.start();
    let resumed = wait(&server, &operator, &second);
    assert!(
        resumed["steps"][0]["attempts"].as_u64().unwrap() >= 1,
        "{resumed}"
    );
    let with_markers = resumed["steps"][0]["output"]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    // Lose the markers; a restore needs its confirmation, then brings them back.
    mariadb(&id, "DROP TABLE espocrm.stackbox_marker;");
    sh(
        &format!("{id}-nextcloud-1"),
        "rm -f /var/www/html/data/marker.txt",
    );
    let (status, refused) = server.http(
        "POST",
        &format!("/v1/clients/{id}/backups/latest/restore"),
        &operator,
        None,
    );
    assert_eq!(status, 400, "{refused}");
    let (status, restore) = server.http(
        "POST",
        &format!("/v1/clients/{id}/backups/latest/restore?confirm={id}"),
        &operator,
        None,
    );
    assert_eq!(status, 202, "{restore}");
    let view = wait(
        &server,
        &operator,
        restore["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["kind"], "restore");
    assert_eq!(marker_rows(&id), "3");
    assert!(marker_file(&id));

    // Verify: a throwaway copy, compared, removed; the result is on the backup's record.
    let (status, verify) = server.http(
        "POST",
        &format!("/v1/clients/{id}/backups/latest/verify"),
        &operator,
        None,
    );
    assert_eq!(status, 202, "{verify}");
    wait(
        &server,
        &operator,
        verify["deployment_id"].as_str().unwrap(),
    );
    let (_, list) = server.http("GET", &format!("/v1/clients/{id}/backups"), &operator, None);
    assert_eq!(list["state"]["last_verify_ok"], true, "{list}");
    let leftovers = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            "name=^verify-",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&leftovers.stdout).trim().is_empty());

    // Clone under a new domain: a client of its own with the data. The newest backup is now
    // the restore's safety backup (without the markers), so name the snapshot.
    let body = serde_json::json!({"domain": "serve-backup-copy.example", "snapshot": with_markers});
    let (status, cloned) = server.http(
        "POST",
        &format!("/v1/clients/{id}/clone"),
        &operator,
        Some(&body.to_string()),
    );
    assert_eq!(status, 202, "{cloned}");
    let clone_id = cloned["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(clone_id.clone());
    let view = wait(
        &server,
        &operator,
        cloned["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["kind"], "clone");
    assert_eq!(marker_rows(&clone_id), "3");
    mariadb(&clone_id, "INSERT INTO espocrm.stackbox_marker VALUES (4);");
    assert_eq!(
        marker_rows(&id),
        "3",
        "the original is not changed by its clone"
    );
    let (status, _) = server.http(
        "POST",
        &format!("/v1/clients/{id}/clone"),
        &operator,
        Some(r#"{"domain": "serve-backup-copy.example"}"#),
    );
    assert_eq!(status, 409, "a domain already taken");

    // Metrics: backups by status, no client missing one.
    let (status, metrics) = server
        .try_http("GET", "/metrics", Some(&operator), None)
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("stackbox_clients_missing_backup 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("stackbox_backups{status=\"succeeded\"} 0"),
        "{metrics}"
    );

    // A destroy keeps the backups: the final step says so, and the list stays readable in
    // the store for a come-back.
    let (status, destroy) = server.http(
        "DELETE",
        &format!("/v1/clients/{id}?confirm={id}"),
        &operator,
        None,
    );
    assert_eq!(status, 202, "{destroy}");
    // The journal goes with the client at the end of a destroy: read the first step before.
    let view = poll(
        &server,
        &operator,
        destroy["deployment_id"].as_str().unwrap(),
        Duration::from_secs(300),
        |v| v["steps"][0]["status"] != "pending" && v["steps"][0]["status"] != "running",
    );
    let first = &view["steps"][0];
    assert_eq!(first["name"], "final-backup", "{view}");
    assert_eq!(first["status"], "succeeded", "{view}");
    assert!(
        first["output"]["skipped"]
            .as_str()
            .unwrap()
            .contains("kept"),
        "{view}"
    );
    gone(&server, &operator, &id);
    let repository = server.data.path().join("data/backups").join(&id);
    assert!(repository.join("config").exists(), "the repository is kept");

    let (status, destroy) = server.http(
        "DELETE",
        &format!("/v1/clients/{clone_id}?confirm={clone_id}"),
        &operator,
        None,
    );
    assert_eq!(status, 202, "{destroy}");
    gone(&server, &operator, &clone_id);
}

/// Waits until a destroyed client is no longer known.
fn gone(server: &Server, token: &str, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let (status, _) = server.http("GET", &format!("/v1/clients/{id}"), token, None);
        if status == 404 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("client {id} was not destroyed within 120 s");
}
