//! A fleet rollout through `stackbox serve` on a real engine: five clients moved to a release
//! in waves (a canary, then growing batches), the third one's upgrade failing (a name on the
//! engine blocks setting its website aside). The rollout halts there: the two before it run
//! the new release, the third is back on its release and running, the last two were never
//! touched. The server is killed in the middle and carries on after its restart. A second
//! rollout, with the block gone, skips the two already moved and moves the other three.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::server::{client_body, Server};

const EDGE: &str = "stackbox-rollout-serve-test-edge";

fn catalog_image(images: &str, key: &str) -> String {
    let catalog = std::fs::read_to_string(images).unwrap();
    catalog
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
        .map(|rest| rest.trim_end_matches('"').to_string())
        .unwrap_or_else(|| panic!("{key} is not in the test catalog"))
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn image_of(container: &str) -> String {
    docker(&["inspect", "-f", "{{.Config.Image}}", container])
}

/// Polls the rollout until `done` says so (or ten minutes pass); returns the last view.
fn poll_rollout(
    server: &Server,
    token: &str,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, view) = server.http("GET", &format!("/v1/rollouts/{id}"), token, None);
        assert_eq!(status, 200, "{view}");
        if done(&view) || Instant::now() > deadline {
            return view;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn statuses(view: &serde_json::Value) -> Vec<String> {
    view["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_rollout_halts_at_the_first_failed_client_leaves_the_rest_untouched_and_resumes_after_a_restart(
) {
    let Some(images) = stackbox_testkit::Tier::engine()
        .program("restic", "apt-get install restic")
        .images()
    else {
        return;
    };
    let nginx = catalog_image(&images, "nginx");
    let nginx_r2 = format!("{}:rollout-r2", nginx.split(':').next().unwrap());
    docker(&["tag", &nginx, &nginx_r2]);
    let mut server = Server::new(&images, EDGE, 28194, 28557);
    server.start();
    let operator = server.token(&["--operator"]);

    // Five clients, deployed side by side.
    let mut accepted = Vec::new();
    for n in 0..5 {
        let (status, created) = server.http(
            "POST",
            "/v1/clients",
            &operator,
            Some(&client_body(
                &format!("Fleet Shop {n}"),
                &format!("fleet{n}.example"),
            )),
        );
        assert_eq!(status, 202, "{created}");
        server
            .made
            .borrow_mut()
            .push(created["client_id"].as_str().unwrap().to_string());
        accepted.push(created);
    }
    for created in &accepted {
        let view = support::server::poll(
            &server,
            &operator,
            created["deployment_id"].as_str().unwrap(),
            Duration::from_secs(600),
            support::server::finished,
        );
        assert_eq!(view["status"], "succeeded", "{view}");
    }
    let mut ids: Vec<String> = server.made.borrow().clone();
    ids.sort();

    // The release arrives after the clients.
    server.kill_hard();
    let text = std::fs::read_to_string(&server.operator).unwrap();
    std::fs::write(
        &server.operator,
        format!("{text}\n[[releases]]\nname = \"r2\"\n[releases.images]\nnginx = \"{nginx_r2}\"\n"),
    )
    .unwrap();
    server.start();

    // Refusals name their field; a client token may not roll out.
    for (body, field) in [
        (r#"{"to": "r9"}"#, "to"),
        (r#"{"to": "r2", "concurrency": 0}"#, "concurrency"),
        (r#"{"to": "r2", "clients": ["not an id"]}"#, "clients[0]"),
        (r#"{"to": "r2", "waves": 3}"#, "waves"),
        (r#"{}"#, "to"),
    ] {
        let (status, error) = server.http("POST", "/v1/rollouts", &operator, Some(body));
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let client_token = server.token(&["--client", &ids[0]]);
    let (status, _) = server.http(
        "POST",
        "/v1/rollouts",
        &client_token,
        Some(r#"{"to": "r2"}"#),
    );
    assert_eq!(status, 403);

    // The third client's upgrade will fail: setting its website aside is blocked.
    let third = &ids[2];
    let blocker = format!("{third}-website-1-replaced");
    docker(&["create", "--name", &blocker, &nginx]);

    let (status, rollout) = server.http(
        "POST",
        "/v1/rollouts",
        &operator,
        Some(r#"{"to": "r2", "canary": 1, "growth": 2, "concurrency": 1}"#),
    );
    assert_eq!(status, 202, "{rollout}");
    let rollout_id = rollout["id"].as_str().unwrap().to_string();
    let waves: Vec<u64> = rollout["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["wave"].as_u64().unwrap())
        .collect();
    assert_eq!(waves, [0, 1, 1, 2, 2], "{rollout}");
    let order: Vec<&str> = rollout["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let (status, busy) = server.http("POST", "/v1/rollouts", &operator, Some(r#"{"to": "r2"}"#));
    assert_eq!(status, 409, "a second rollout beside the first: {busy}");

    // Killed while the canary upgrades; the restarted server carries on.
    let view = poll_rollout(&server, &operator, &rollout_id, |v| {
        statuses(v)[0] != "pending"
    });
    assert_eq!(statuses(&view)[1..], ["pending"; 4], "{view}");
    server.kill_hard();
    server.start();
    let view = poll_rollout(&server, &operator, &rollout_id, |v| {
        v["status"] != "running"
    });
    let _ = Command::new("docker").args(["rm", "-f", &blocker]).output();

    assert_eq!(view["status"], "halted", "{view}");
    assert_eq!(
        statuses(&view),
        ["succeeded", "succeeded", "failed", "skipped", "skipped"],
        "{view}"
    );
    let failed = &view["clients"][2];
    assert!(
        failed["detail"].as_str().unwrap().contains("undone"),
        "{failed}"
    );
    assert!(
        view["halt_reason"]
            .as_str()
            .unwrap()
            .contains(third.as_str()),
        "{view}"
    );
    assert!(
        view["clients"][3]["detail"]
            .as_str()
            .unwrap()
            .contains("halted"),
        "{view}"
    );
    // Exactly one upgrade per started client, even across the restart.
    for (index, id) in ids.iter().enumerate() {
        let (_, history) = server.http(
            "GET",
            &format!("/v1/clients/{id}/deployments"),
            &operator,
            None,
        );
        let upgrades = history["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "redeploy")
            .count();
        assert_eq!(upgrades, usize::from(index < 3), "{id}: {history}");
        let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
        assert_eq!(detail["state"], "running", "{id}: {detail}");
        let expected = if index < 2 { &nginx_r2 } else { &nginx };
        assert_eq!(&image_of(&format!("{id}-website-1")), expected, "{id}");
    }
    let (_, list) = server.http("GET", "/v1/rollouts", &operator, None);
    assert_eq!(list["rollouts"][0]["id"], rollout_id.as_str(), "{list}");
    assert_eq!(list["rollouts"][0]["counts"]["failed"], 1, "{list}");

    // Again with the block gone: the two on r2 are skipped, the other three move.
    let (status, again) = server.http(
        "POST",
        "/v1/rollouts",
        &operator,
        Some(r#"{"to": "r2", "concurrency": 2}"#),
    );
    assert_eq!(status, 202, "{again}");
    let again_id = again["id"].as_str().unwrap().to_string();
    assert_eq!(
        statuses(&again),
        ["skipped", "skipped", "pending", "pending", "pending"],
        "{again}"
    );
    let view = poll_rollout(&server, &operator, &again_id, |v| v["status"] != "running");
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(
        statuses(&view),
        ["skipped", "skipped", "succeeded", "succeeded", "succeeded"],
        "{view}"
    );
    for id in &ids {
        assert_eq!(image_of(&format!("{id}-website-1")), nginx_r2, "{id}");
    }
    // Halting a finished rollout changes nothing; an unknown one is 404.
    let (status, halted) = server.http(
        "POST",
        &format!("/v1/rollouts/{again_id}/halt"),
        &operator,
        None,
    );
    assert_eq!(status, 200, "{halted}");
    assert_eq!(halted["status"], "succeeded");
    let (status, _) = server.http(
        "GET",
        "/v1/rollouts/rol_0000000000000000000000000000",
        &operator,
        None,
    );
    assert_eq!(status, 404);
    let _ = Command::new("docker").args(["rmi", &nginx_r2]).output();
}
