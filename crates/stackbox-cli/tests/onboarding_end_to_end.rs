//! Onboarding end to end, through `stackbox serve` over a real socket: a public sign-up opens
//! a Checkout session on a stand-in for Stripe's API (which checks every request), signed
//! webhooks drive the subscription (completed checkout → a healthy stack on the real engine;
//! failed payment → grace → suspended; paid → resumed; plan change → services added; deleted →
//! stopped, then destroyed after the retention period), and every e-mail goes through the
//! durable outbox to a real SMTP server (aiosmtpd) that is down at first: the welcome e-mail
//! arrives once it is up, exactly once, and its one-time link shows the password once.
//!
//! Needs the engine, the local test images, python3 with aiosmtpd (`scripts/test.sh`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod support;
use support::{containers_of, free_port, python_tool, repo_root, Process};

const EDGE: &str = "stackbox-onboarding-test-edge";
const STRIPE_KEY: &str = "sk_test_onboarding_e2e";
const WEBHOOK_SECRET: &str = "whsec_onboarding_e2e";

struct Http {
    port: u16,
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Http {
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Reply {
            status,
            headers: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    fn get(&self, path: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.request("GET", path, &[("Authorization", &auth)], "")
    }

    fn signup(&self, body: &serde_json::Value) -> Reply {
        self.request(
            "POST",
            "/v1/signup",
            &[("Content-Type", "application/json")],
            &body.to_string(),
        )
    }

    fn webhook(&self, event: &serde_json::Value) -> Reply {
        let body = event.to_string();
        let header = stackbox_billing::signature::sign(body.as_bytes(), WEBHOOK_SECRET, now());
        self.request(
            "POST",
            "/v1/webhooks/stripe",
            &[
                ("Content-Type", "application/json"),
                ("Stripe-Signature", &header),
            ],
            &body,
        )
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn event(id: &str, kind: &str, object: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": now(),
        "livemode": false,
        "type": kind,
        "data": { "object": object },
    })
}

/// The messages the SMTP sink has written, by file name.
fn mails(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            // The sink writes `<n>.json` (the envelope) once `<n>.eml` is complete.
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".json") {
                let message = entry.path().with_file_name(format!("{stem}.eml"));
                found.insert(format!("{stem}.eml"), decoded(&message));
            }
        }
    }
    found
}

/// Waits until the sink holds `count` messages; returns them in arrival order.
fn wait_for_mails(dir: &Path, count: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let found = mails(dir);
        if found.len() >= count || Instant::now() > deadline {
            let mut list: Vec<(u64, String)> = found
                .into_iter()
                .map(|(name, text)| {
                    let n = name.trim_end_matches(".eml").parse().unwrap_or(0);
                    (n, text)
                })
                .collect();
            list.sort();
            assert_eq!(
                list.len(),
                count,
                "expected {count} mails within {limit:?}, subjects: {:?}",
                list.iter().map(|(_, t)| subject(t)).collect::<Vec<_>>()
            );
            return list.into_iter().map(|(_, t)| t).collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn subject(mail: &str) -> String {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_string()
}

/// A received message as "Name: value" header lines and its decoded parts, read by Python's
/// own e-mail parser (through the sink's `--parse`), independent of the sender's library.
fn decoded(path: &Path) -> String {
    let output = Command::new("python3")
        .arg(repo_root().join("tests/tools/smtp_sink.py"))
        .arg("--parse")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let message: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut text = String::new();
    for header in message["headers"].as_array().unwrap() {
        text.push_str(&format!(
            "{}: {}\n",
            header[0].as_str().unwrap(),
            header[1].as_str().unwrap()
        ));
    }
    for part in message["parts"].as_array().unwrap() {
        text.push_str(&format!(
            "\n--- {}\n",
            part["content_type"].as_str().unwrap()
        ));
        text.push_str(part["content"].as_str().unwrap_or(""));
    }
    text
}

fn client_state(http: &Http, token: &str, id: &str) -> Option<String> {
    let reply = http.get(&format!("/v1/clients/{id}"), token);
    if reply.status == 404 {
        return None;
    }
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["state"].as_str().map(String::from)
}

fn wait_for_state(http: &Http, token: &str, id: &str, want: Option<&str>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let state = client_state(http, token, id);
        if state.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client {id} is {state:?} after {limit:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes a client's engine objects if the test fails half-way.
struct EngineCleanup(std::cell::RefCell<Vec<String>>);

impl Drop for EngineCleanup {
    fn drop(&mut self) {
        support::remove_from_engine(EDGE, &self.0.borrow());
    }
}

#[test]
fn signup_payment_webhooks_and_welcome_mail_from_checkout_to_destroy() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .python_modules(&["aiosmtpd"], "python3 -m pip install 'aiosmtpd>=1.4,<2'")
        .images()
    else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let hard_limit = support::hard_open_files_limit();
    let operator = data.path().join("stackbox.toml");
    std::fs::write(
        &operator,
        format!(
            "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 28083\nhttps_port = 28446\n\
             [host]\nmax_open_files = {hard_limit}\n\
             [onboarding]\ngrace_period = \"2s\"\nretention = \"4s\"\n[probes]\nenabled = false\n"
        ),
    )
    .unwrap();
    let cleanup = EngineCleanup(std::cell::RefCell::new(Vec::new()));

    let stripe_port = free_port();
    let stripe_log = data.path().join("stripe.jsonl");
    let _stripe = python_tool(
        "fake_stripe.py",
        &[
            "--port",
            &stripe_port.to_string(),
            "--key",
            STRIPE_KEY,
            "--log",
            stripe_log.to_str().unwrap(),
        ],
    );
    // The SMTP server is down at first: its port is chosen, nothing listens on it yet.
    let smtp_port = free_port();
    let mail_dir = data.path().join("mail");
    std::fs::create_dir_all(&mail_dir).unwrap();

    let port = free_port();
    let stackbox = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
        command
            .args(args)
            .env("STACKBOX_DATA_DIR", data.path().join("data"))
            .env("STACKBOX_OPERATOR_CONFIG", &operator)
            .env("STACKBOX_IMAGES", &images)
            .env("STACKBOX_STRIPE_SECRET_KEY", STRIPE_KEY)
            .env("STACKBOX_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env(
                "STACKBOX_STRIPE_API_BASE",
                format!("http://127.0.0.1:{stripe_port}"),
            )
            .env("STACKBOX_STRIPE_PRICE_STARTER", "price_starter_e2e")
            .env(
                "STACKBOX_STRIPE_PRICE_PROFESSIONAL",
                "price_professional_e2e",
            )
            .env("STACKBOX_SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
            .env("STACKBOX_MAIL_FROM", "hello@operator.test")
            .env("STACKBOX_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("STACKBOX_ONBOARDING_TICK", "1s")
            .env("STACKBOX_MAIL_RETRY_BASE", "1s")
            .env_remove("STACKBOX_DATABASE_URL")
            .env_remove("STACKBOX_MASTER_KEY");
        command
    };
    let token_output = stackbox(&["token", "create", "--operator"])
        .output()
        .unwrap();
    assert!(token_output.status.success());
    let token = String::from_utf8_lossy(&token_output.stdout)
        .trim()
        .to_string();
    let server_log = data.path().join("serve.log");
    let _server = Process(
        stackbox(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&server_log).unwrap())
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap(),
        None,
    );
    let http = Http { port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "stackbox serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Sign-up: refused inputs first, each naming its field.
    let domain = "bakery.onboarding-e2e.test";
    let form = serde_json::json!({
        "company_name": "Bäckerei \"Zur Brezel\" <Süd>",
        "domain": domain,
        "plan": "starter",
        "admin_email": "owner@bakery.example",
    });
    let mut pinned = form.clone();
    pinned["client_id"] = "bakery-00000001".into();
    let reply = http.signup(&pinned);
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"]["field"], "client_id");
    let mut unsold = form.clone();
    unsold["plan"] = "enterprise".into();
    let reply = http.signup(&unsold);
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.json()["error"]["field"], "plan");

    let reply = http.signup(&form);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let accepted = reply.json();
    let signup_id = accepted["signup_id"].as_str().unwrap().to_string();
    assert!(signup_id.starts_with("sgn_"), "{signup_id}");
    let checkout_url = accepted["checkout_url"].as_str().unwrap();
    assert!(
        checkout_url.starts_with("https://checkout.stripe.com/"),
        "{checkout_url}"
    );

    // What reached "Stripe": exactly one request, authenticated, with the plan's price.
    let log = std::fs::read_to_string(&stripe_log).unwrap();
    let requests: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(requests.len(), 1, "{log}");
    let request = &requests[0];
    assert_eq!(request["authorization_ok"], true);
    assert_eq!(request["path"], "/v1/checkout/sessions");
    assert_eq!(request["idempotency_key"], signup_id.as_str());
    let sent = &request["form"];
    assert_eq!(sent["mode"], "subscription");
    assert_eq!(sent["line_items[0][price]"], "price_starter_e2e");
    assert_eq!(sent["line_items[0][quantity]"], "1");
    assert_eq!(sent["client_reference_id"], signup_id.as_str());
    assert_eq!(sent["customer_email"], "owner@bakery.example");
    let session_id = format!(
        "cs_test_{}",
        checkout_url.rsplit("cs_test_").next().unwrap()
    );

    // Rate limit per e-mail address: 3 an hour by default (the first one counted above).
    let mut other = form.clone();
    other["domain"] = "other.onboarding-e2e.test".into();
    for _ in 0..2 {
        assert_eq!(http.signup(&other).status, 201);
    }
    let reply = http.signup(&other);
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(reply.headers.contains("retry-after:"), "{}", reply.headers);

    // Webhooks: a bad signature, a stale one and a missing one are refused with 400.
    let completed = event(
        "evt_checkout_1",
        "checkout.session.completed",
        serde_json::json!({
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "client_reference_id": signup_id,
            "customer": "cus_e2e",
            "subscription": "sub_e2e",
            "customer_email": "owner@bakery.example",
            "metadata": { "signup_id": signup_id },
        }),
    );
    let body = completed.to_string();
    let forged = stackbox_billing::signature::sign(body.as_bytes(), "whsec_wrong", now());
    let stale = stackbox_billing::signature::sign(body.as_bytes(), WEBHOOK_SECRET, now() - 3600);
    for header in [forged.as_str(), stale.as_str()] {
        let reply = http.request(
            "POST",
            "/v1/webhooks/stripe",
            &[("Stripe-Signature", header)],
            &body,
        );
        assert_eq!(reply.status, 400, "{}", reply.body);
    }
    let reply = http.request("POST", "/v1/webhooks/stripe", &[], &body);
    assert_eq!(reply.status, 400, "{}", reply.body);
    let tampered_header = stackbox_billing::signature::sign(body.as_bytes(), WEBHOOK_SECRET, now());
    let reply = http.request(
        "POST",
        "/v1/webhooks/stripe",
        &[("Stripe-Signature", &tampered_header)],
        &body.replace("cus_e2e", "cus_evil"),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);

    // The real delivery provisions; its redelivery does nothing more.
    let reply = http.webhook(&completed);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["outcome"], "processed");
    let reply = http.webhook(&completed);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["outcome"], "duplicate");

    let list = http.get("/v1/clients", &token).json();
    let clients: Vec<&serde_json::Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["domain"] == domain)
        .collect();
    assert_eq!(clients.len(), 1, "{list}");
    let client = clients[0]["client_id"].as_str().unwrap().to_string();
    cleanup.0.borrow_mut().push(client.clone());
    wait_for_state(
        &http,
        &token,
        &client,
        Some("running"),
        Duration::from_secs(180),
    );

    // The SMTP server was down: nothing delivered. It comes up; the welcome arrives once.
    std::thread::sleep(Duration::from_secs(2));
    assert!(mails(&mail_dir).is_empty());
    let _smtp = python_tool(
        "smtp_sink.py",
        &[
            "--port",
            &smtp_port.to_string(),
            "--dir",
            mail_dir.to_str().unwrap(),
        ],
    );
    let welcome = wait_for_mails(&mail_dir, 1, Duration::from_secs(60)).remove(0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mails(&mail_dir).len(), 1, "the welcome was sent twice");
    let text = welcome.clone();
    assert!(text.contains("To: owner@bakery.example"), "{text}");
    assert!(
        text.contains("From: hello@operator.test") || text.contains("<hello@operator.test>"),
        "{text}"
    );
    for host in [
        format!("https://crm.{domain}"),
        format!("https://files.{domain}"),
        format!("https://{domain}"),
    ] {
        assert!(
            text.contains(&host),
            "{host} missing from the welcome e-mail"
        );
    }
    let link_prefix = format!("http://127.0.0.1:{port}/welcome/");
    let at = text.find(&link_prefix).expect("the one-time link");
    let token_part: String = text[at + link_prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(token_part.len() >= 32, "{token_part}");
    let link = format!("/welcome/{token_part}");

    // The link: GET shows a button and burns nothing; POST reveals once; then 410.
    for _ in 0..2 {
        let page = http.request("GET", &link, &[], "");
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("method=\"post\""), "{}", page.body);
        assert!(page.headers.contains("cache-control: no-store"));
        assert!(page.headers.contains("referrer-policy: no-referrer"));
    }
    let reveal = http.request("POST", &link, &[], "");
    assert_eq!(reveal.status, 200, "{}", reveal.body);
    assert!(reveal.body.contains("admin"), "{}", reveal.body);
    let password: String = reveal
        .body
        .split("<code class=\"secret\">")
        .nth(1)
        .expect("the password on the page")
        .chars()
        .take_while(|c| *c != '<')
        .collect();
    assert!(password.len() >= 12, "{password}");
    assert!(
        !text.contains(&password),
        "the e-mail must not carry the password"
    );
    assert_eq!(http.request("POST", &link, &[], "").status, 410);
    assert_eq!(http.request("GET", &link, &[], "").status, 410);

    // The operator sends the welcome again: a new link that works, the old one stays dead.
    let auth = format!("Bearer {token}");
    let reply = http.request(
        "POST",
        &format!("/v1/clients/{client}/welcome"),
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let again = wait_for_mails(&mail_dir, 2, Duration::from_secs(30)).remove(1);
    let at = again.find(&link_prefix).expect("the new one-time link");
    let new_token: String = again[at + link_prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_ne!(new_token, token_part);
    let renewed = http.request("POST", &format!("/welcome/{new_token}"), &[], "");
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert!(
        renewed.body.contains(&password),
        "the same password, shown again once"
    );
    assert_eq!(http.request("POST", &link, &[], "").status, 410);

    // A failed payment: the owner is told, the grace period (2 s) runs out, the client stops.
    let failed = event(
        "evt_invoice_failed_1",
        "invoice.payment_failed",
        serde_json::json!({
            "id": "in_e2e_1", "object": "invoice", "customer": "cus_e2e",
            "subscription": "sub_e2e", "attempt_count": 1, "next_payment_attempt": now() + 86400,
        }),
    );
    assert_eq!(http.webhook(&failed).status, 200);
    wait_for_state(
        &http,
        &token,
        &client,
        Some("stopped"),
        Duration::from_secs(60),
    );
    let all = wait_for_mails(&mail_dir, 4, Duration::from_secs(30));
    assert!(
        subject(&all[2]).to_lowercase().contains("payment"),
        "{}",
        subject(&all[2])
    );
    assert!(
        subject(&all[3]).to_lowercase().contains("suspend")
            || subject(&all[3]).to_lowercase().contains("paused"),
        "{}",
        subject(&all[3])
    );
    assert!(containers_of(&client)
        .iter()
        .all(|c| !c.ends_with(" running")));

    // Paid: started again, told so.
    let paid = event(
        "evt_invoice_paid_1",
        "invoice.paid",
        serde_json::json!({
            "id": "in_e2e_1", "object": "invoice", "customer": "cus_e2e", "subscription": "sub_e2e",
        }),
    );
    assert_eq!(http.webhook(&paid).status, 200);
    wait_for_state(
        &http,
        &token,
        &client,
        Some("running"),
        Duration::from_secs(120),
    );
    wait_for_mails(&mail_dir, 5, Duration::from_secs(30));

    // A plan change adds the plan's services, keeping the data.
    let upgraded = event(
        "evt_sub_updated_1",
        "customer.subscription.updated",
        serde_json::json!({
            "id": "sub_e2e", "object": "subscription", "customer": "cus_e2e", "status": "active",
            "cancel_at_period_end": false,
            "items": { "object": "list", "data": [ { "id": "si_1", "price": { "id": "price_professional_e2e" } } ] },
        }),
    );
    assert_eq!(http.webhook(&upgraded).status, 200);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let detail = http.get(&format!("/v1/clients/{client}"), &token).json();
        if detail["configuration"]["plan"] == "professional"
            && detail["state"] == "running"
            && containers_of(&client)
                .iter()
                .any(|c| c.contains("-calcom-1 running"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no upgrade: {detail}");
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_for_mails(&mail_dir, 6, Duration::from_secs(30));

    // Cancelled: stopped at once, told so, destroyed after the retention period (4 s).
    let deleted = event(
        "evt_sub_deleted_1",
        "customer.subscription.deleted",
        serde_json::json!({ "id": "sub_e2e", "object": "subscription", "customer": "cus_e2e", "status": "canceled" }),
    );
    assert_eq!(http.webhook(&deleted).status, 200);
    wait_for_state(&http, &token, &client, None, Duration::from_secs(120));
    assert!(
        containers_of(&client).is_empty(),
        "{:?}",
        containers_of(&client)
    );
    let all = wait_for_mails(&mail_dir, 7, Duration::from_secs(30));
    let last = subject(&all[6]).to_lowercase();
    assert!(last.contains("ended") || last.contains("cancel"), "{last}");
    // Every message went out once: seven distinct Message-IDs.
    let ids: std::collections::BTreeSet<String> = all
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .map(String::from)
        })
        .collect();
    assert_eq!(ids.len(), 7);
    let metrics = http.request("GET", "/metrics", &[], "").body;
    assert!(
        metrics.contains("stackbox_mail{status=\"sent\"} 7\n"),
        "{metrics}"
    );
    assert!(metrics.contains("stackbox_mail{status=\"failed\"} 0\n"));
    let log = std::fs::read_to_string(&server_log).unwrap_or_default();
    for secret in [STRIPE_KEY, WEBHOOK_SECRET] {
        assert!(!log.contains(secret), "the server log shows {secret}");
    }
}
