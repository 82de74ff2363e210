//! Alerts through `stackbox serve` on a real engine: a website holding most of its memory
//! limit opens one alert that fires after the hold time, sends exactly one e-mail to a real
//! SMTP server (aiosmtpd) and one signed webhook (its signature checked by a Python receiver,
//! not by our code; the receiver refuses the first attempt, so the retry is seen too), shows
//! in `GET /v1/alerts` and `stackbox alerts`, and when the memory is freed resolves with
//! exactly one recovery notice of each kind. A loose webhook secret file is refused at start,
//! and the audit log holds the one change the test made, with the token that made it.
//!
//! Needs the engine, the local test images, python3 with aiosmtpd (`scripts/test.sh`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::server::{client_body, finished, poll, Server};
use support::{free_port, numbered_files, python_tool, wait_until};

const EDGE: &str = "stackbox-alerts-serve-test-edge";
const OPERATOR_MAILBOX: &str = "ops@operator.test";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The mails to the operator's mailbox: (subject, text as received). The welcome mail to
/// the client's owner goes to the same sink and is left out.
fn operator_mails(dir: &Path) -> Vec<(String, String)> {
    numbered_files(dir, ".json")
        .into_iter()
        .filter_map(|envelope| {
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&envelope).ok()?).ok()?;
            let to_operator = json["rcpt_tos"]
                .as_array()?
                .iter()
                .any(|r| r == OPERATOR_MAILBOX);
            if !to_operator {
                return None;
            }
            let eml = envelope.with_extension("eml");
            let text = std::fs::read_to_string(eml).ok()?;
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string();
            Some((subject, text))
        })
        .collect()
}

fn webhooks(dir: &Path) -> Vec<serde_json::Value> {
    numbered_files(dir, ".json")
        .into_iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn memory_near_its_limit_fires_one_alert_with_one_mail_and_one_signed_webhook_then_resolves() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .python_modules(&["aiosmtpd"], "python3 -m pip install 'aiosmtpd>=1.4,<2'")
        .images()
    else {
        return;
    };
    let mut server = Server::new(&images, EDGE, 18620, 18983);
    let secret_file = server.data.path().join("webhook-secret");
    std::fs::write(&secret_file, "whsec-alerts-test-0123456789abcdef\n").unwrap();
    let mail_dir = server.data.path().join("mail");
    let hook_dir = server.data.path().join("hooks");
    std::fs::create_dir_all(&mail_dir).unwrap();
    std::fs::create_dir_all(&hook_dir).unwrap();
    let smtp_port = free_port();
    let hook_port = free_port();
    // Held 3 s, evaluated every second, readings every second; near = 60 % of the limit (the
    // website may hold 64 MiB: 40 MiB in its tmpfs is over, its idle few MiB are not).
    let mut operator_file = std::fs::read_to_string(&server.operator).unwrap();
    operator_file.push_str(&format!(
        "[monitor]\nusage_interval = \"1s\"\n\
         [alerts]\nfor = \"3s\"\nevery = \"1s\"\nmemory_ratio = 0.6\nemail = \"{OPERATOR_MAILBOX}\"\n\
         webhook_url = \"http://127.0.0.1:{hook_port}/stackbox\"\nwebhook_secret_file = \"{}\"\n",
        secret_file.display()
    ));
    std::fs::write(&server.operator, operator_file).unwrap();
    server.env = vec![
        (
            "STACKBOX_SMTP_URL".into(),
            format!("smtp://127.0.0.1:{smtp_port}"),
        ),
        ("STACKBOX_MAIL_FROM".into(), "alerts@operator.test".into()),
        ("STACKBOX_ONBOARDING_TICK".into(), "1s".into()),
        ("STACKBOX_WEBHOOK_RETRY_BASE_SECONDS".into(), "1".into()),
    ];

    // A secret file others may read is refused before anything starts, naming the field.
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = server
        .command()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", server.port)])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("alerts.webhook_secret_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("whsec-alerts-test"),
        "the secret leaked: {stderr}"
    );
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let _smtp = python_tool(
        "smtp_sink.py",
        &[
            "--port",
            &smtp_port.to_string(),
            "--dir",
            mail_dir.to_str().unwrap(),
        ],
    );
    let _hooks = python_tool(
        "webhook_sink.py",
        &[
            "--port",
            &hook_port.to_string(),
            "--dir",
            hook_dir.to_str().unwrap(),
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--fail-first",
            "1",
        ],
    );
    server.start();
    let operator = server.token(&["--operator"]);
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Alert Shop", "alert-shop.example")),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    let view = poll(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
        Duration::from_secs(300),
        finished,
    );
    assert_eq!(view["status"], "succeeded", "{view}");

    // A healthy new client: no alert at all, for several evaluations.
    std::thread::sleep(Duration::from_secs(4));
    let (status, open) = server.http("GET", "/v1/alerts", &operator, None);
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["alerts"], serde_json::json!([]), "{open}");

    let website = format!("{id}-website-1");
    docker(&[
        "exec",
        &website,
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/hog",
        "bs=1M",
        "count=40",
    ]);
    let key = format!("memory-near-limit:{id}:website");
    let alert = wait_until("the memory alert to fire", Duration::from_secs(60), || {
        let (_, open) = server.http("GET", "/v1/alerts", &operator, None);
        open["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key.as_str() && a["state"] == "firing")
            .cloned()
    });
    assert_eq!(alert["kind"], "memory-near-limit");
    assert_eq!(alert["client_id"], id.as_str());
    assert!(
        alert["summary"].as_str().unwrap().contains("64.0 MiB"),
        "{alert}"
    );
    // Held for the hold time before it fired.
    let since = alert["since"].as_str().unwrap();
    let fired = alert["fired_at"].as_str().unwrap();
    assert!(fired > since, "{alert}");

    // One mail; one webhook notice, refused once then delivered again under the same id.
    let firing_mail = wait_until("the firing mail", Duration::from_secs(60), || {
        operator_mails(&mail_dir).into_iter().next()
    });
    assert!(firing_mail.0.contains("FIRING"), "{}", firing_mail.0);
    assert!(
        firing_mail.0.contains("memory near its limit"),
        "{}",
        firing_mail.0
    );
    assert!(firing_mail.1.contains(&key), "{}", firing_mail.1);
    let attempts = wait_until("the webhook retry", Duration::from_secs(60), || {
        let hooks = webhooks(&hook_dir);
        (hooks.len() >= 2).then_some(hooks)
    });
    for attempt in &attempts[..2] {
        assert_eq!(attempt["verified"], true, "{attempt}");
        assert!(
            attempt["age_seconds"].as_f64().unwrap().abs() < 60.0,
            "{attempt}"
        );
        assert_eq!(attempt["path"], "/stackbox");
        assert_eq!(attempt["body"]["event"], "alert.firing", "{attempt}");
        assert_eq!(attempt["body"]["alert"]["key"], key.as_str(), "{attempt}");
        assert_eq!(attempt["body"]["alert"]["client_id"], id.as_str());
    }
    assert_eq!(
        attempts[0]["delivery"], attempts[1]["delivery"],
        "a retry is the same delivery"
    );

    // The condition holds on: no second alert, mail or webhook.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(operator_mails(&mail_dir).len(), 1);
    assert_eq!(webhooks(&hook_dir).len(), 2);
    let (_, open) = server.http("GET", "/v1/alerts", &operator, None);
    let same: Vec<_> = open["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["key"] == key.as_str())
        .collect();
    assert_eq!(same.len(), 1, "{open}");

    // The client's own token sees its alert; the CLI lists it.
    let own = server.token(&["--client", &id]);
    let (status, mine) = server.http("GET", "/v1/alerts", &own, None);
    assert_eq!(status, 200);
    assert!(
        mine["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["client_id"] == id.as_str()),
        "{mine}"
    );
    let url = format!("http://127.0.0.1:{}", server.port);
    let listed = server
        .command()
        .args(["--server", &url, "--token", &operator, "alerts"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("firing") && table.contains("memory-near-limit") && table.contains(&id),
        "{table}"
    );

    // Freed: resolved once, with one recovery mail and one recovery webhook.
    docker(&["exec", &website, "rm", "-f", "/dev/shm/hog"]);
    let resolved = wait_until("the alert to resolve", Duration::from_secs(60), || {
        let (_, all) = server.http("GET", "/v1/alerts?open=false", &operator, None);
        all["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key.as_str() && a["state"] == "resolved")
            .cloned()
    });
    assert!(resolved["resolved_at"].as_str().unwrap() >= fired);
    let mails = wait_until("the recovery mail", Duration::from_secs(60), || {
        let mails = operator_mails(&mail_dir);
        (mails.len() >= 2).then_some(mails)
    });
    assert!(mails[1].0.contains("RESOLVED"), "{}", mails[1].0);
    let hooks = wait_until("the recovery webhook", Duration::from_secs(60), || {
        let hooks = webhooks(&hook_dir);
        (hooks.len() >= 3).then_some(hooks)
    });
    assert_eq!(hooks[2]["verified"], true);
    assert_eq!(hooks[2]["body"]["event"], "alert.resolved", "{}", hooks[2]);
    assert_ne!(hooks[2]["delivery"], hooks[0]["delivery"]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        operator_mails(&mail_dir).len(),
        2,
        "a notice was sent twice"
    );
    assert_eq!(webhooks(&hook_dir).len(), 3, "a notice was sent twice");
    let (_, open) = server.http("GET", "/v1/alerts", &operator, None);
    assert_eq!(open["alerts"], serde_json::json!([]), "{open}");

    // The audit log holds the change this test made, with the token that made it; reads and
    // the evaluator's own work are not changes.
    let (status, audit) = server.http("GET", "/v1/audit", &operator, None);
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["action"], "POST /v1/clients");
    assert_eq!(entries[0]["actor"], "operator");
    assert_eq!(entries[0]["client_id"], id.as_str());
    assert_eq!(entries[0]["status"], 202);
    assert_eq!(entries[0]["outcome"], "accepted");
    assert_eq!(entries[0]["deployment_id"], created["deployment_id"]);
    let token_id = entries[0]["token_id"].as_str().unwrap();
    assert!(token_id.starts_with("tok_"), "{audit}");
    assert!(
        !audit.to_string().contains(&operator),
        "a token in the log: {audit}"
    );
    let listed = server
        .command()
        .args(["--server", &url, "--token", &operator, "audit"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("POST /v1/clients") && table.contains(token_id),
        "{table}"
    );
}
