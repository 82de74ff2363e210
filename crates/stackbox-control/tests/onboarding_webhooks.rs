//! Onboarding's webhook handling on a real store (SQLite) with mail through a real SMTP server
//! (aiosmtpd on loopback), without containers: the clients here are on the aws provider and
//! this control plane has no cloud adapter, so their deployments stop at the first step and
//! never reach the engine. What is checked is the part the end-to-end test cannot reach
//! cheaply: a missing or forged signature, an event from the other Stripe mode, events about
//! subscriptions that are not StackBox's, a redelivery, two paid sign-ups racing for one
//! domain, and a plan change of a client that is not running (no redeploy).
//!
//! Needs python3 with aiosmtpd (`scripts/test.sh` installs it).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stackbox_control::{Control, ControlConfig, ControlError, Onboarding, WebhookResult};
use stackbox_core::client::{ClientSpec, Email};
use stackbox_core::onboarding::OnboardingFile;
use stackbox_core::operator::OperatorConfig;
use stackbox_store::{BillingStatus, MasterKey, Store};

const WEBHOOK_SECRET: &str = "whsec_control_tier";

struct Sink {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_sink() -> (Sink, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/tools/smtp_sink.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 tests/tools/smtp_sink.py");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "the SMTP sink ended");
        seen.push(byte[0]);
    }
    std::mem::forget(stdout);
    (Sink { child, dir }, port)
}

/// The subjects of the messages the sink received.
fn subjects(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let message = std::fs::read_to_string(path.with_extension("eml")).unwrap();
            let subject = message
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string();
            found.push(subject);
        }
    }
    found
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed(event: &serde_json::Value) -> (String, Vec<u8>) {
    let body = event.to_string().into_bytes();
    let header = stackbox_billing::signature::sign(&body, WEBHOOK_SECRET, now());
    (header, body)
}

fn event(id: &str, kind: &str, livemode: bool, object: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "id": id, "object": "event", "created": now(), "livemode": livemode,
        "type": kind, "data": { "object": object },
    })
}

fn completed(id: &str, signup: &str, customer: &str, subscription: &str) -> serde_json::Value {
    event(
        id,
        "checkout.session.completed",
        false,
        serde_json::json!({
            "id": format!("cs_test_{id}"), "object": "checkout.session", "mode": "subscription",
            "client_reference_id": signup, "customer": customer, "subscription": subscription,
        }),
    )
}

fn spec(company: &str, domain: &str) -> ClientSpec {
    ClientSpec::from_toml(&format!(
        "company_name = \"{company}\"\ndomain = \"{domain}\"\nplan = \"starter\"\n\
         admin_email = \"owner@{domain}\"\n"
    ))
    .unwrap()
}

async fn control(data: &Path, smtp_port: u16) -> (Control, Store) {
    // Every client on the aws provider, and no cloud adapter: deployments fail at their first
    // step (`cloud`) without touching the engine.
    let operator = OperatorConfig::from_toml(
        "[infrastructure]\nprovider = \"aws\"\n[aws]\nregion = \"eu-west-1\"\n\
         listener_arn = \"arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shared/1/2\"\n\
         vpc_id = \"vpc-0123456789abcdef0\"\ntarget = \"10.0.1.15\"\n\
         shared_db_instance = \"stackbox-shared\"\nshared_db_master_secret = \"stackbox/master\"\n",
        "test operator",
    )
    .unwrap();
    let env = |name: &str| -> Option<String> {
        match name {
            "STACKBOX_STRIPE_SECRET_KEY" => Some("sk_test_control".into()),
            "STACKBOX_STRIPE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.into()),
            "STACKBOX_STRIPE_PRICE_STARTER" => Some("price_starter".into()),
            "STACKBOX_STRIPE_PRICE_PROFESSIONAL" => Some("price_professional".into()),
            "STACKBOX_PUBLIC_URL" => Some("http://127.0.0.1:9".into()),
            _ => None,
        }
    };
    let settings =
        stackbox_core::onboarding::OnboardingSettings::resolve(OnboardingFile::default(), &env)
            .unwrap();
    let mut onboarding = Onboarding::new(settings);
    onboarding.tick = Duration::from_millis(200);
    onboarding.mail_retry_base = Duration::from_secs(1);
    onboarding.mailer = Some(Arc::new(
        stackbox_mail::SmtpMailer::from_url(
            &format!("smtp://127.0.0.1:{smtp_port}"),
            "hello@operator.test",
        )
        .unwrap(),
    ));
    let store = Store::open_data_dir(data).await.unwrap();
    let config = ControlConfig {
        data_dir: data.to_path_buf(),
        operator,
        max_parallel: 2,
        health_timeout: Some(Duration::from_secs(5)),
        onboarding,
        cloud: None,
        backup_tick: std::time::Duration::from_secs(60),
        webhook_retry_base: std::time::Duration::from_secs(30),
    };
    let control = Control::start(store.clone(), MasterKey::generate().unwrap(), config)
        .await
        .unwrap();
    (control, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_idempotent_scoped_and_survive_a_domain_race() {
    if !stackbox_testkit::Tier::new("smtp")
        .python_modules(&["aiosmtpd"], "python3 -m pip install 'aiosmtpd>=1.4,<2'")
        .ready()
    {
        return;
    }
    let (sink, smtp_port) = smtp_sink();
    let data = tempfile::tempdir().unwrap();
    let (control, store) = control(data.path(), smtp_port).await;

    // Two sign-ups for one domain, both paid (the form checked the domain when each began).
    let email = Email::parse("admin_email", "owner@race.example.com").unwrap();
    let first = store
        .create_signup(&email, &spec("First Bakery", "race.example.com"))
        .await
        .unwrap();
    let second = store
        .create_signup(&email, &spec("Second Bakery", "race.example.com"))
        .await
        .unwrap();

    // No signature, a forged one, a stale one: refused before anything is read.
    let (_, body) = signed(&completed("evt_1", first.id.as_str(), "cus_1", "sub_1"));
    let refused = control.stripe_webhook(None, &body).await;
    assert!(
        matches!(refused, Err(ControlError::BadWebhook(_))),
        "{refused:?}"
    );
    let forged = stackbox_billing::signature::sign(&body, "whsec_other", now());
    let refused = control.stripe_webhook(Some(&forged), &body).await;
    assert!(
        matches!(refused, Err(ControlError::BadWebhook(_))),
        "{refused:?}"
    );
    let stale = stackbox_billing::signature::sign(&body, WEBHOOK_SECRET, now() - 600);
    let refused = control.stripe_webhook(Some(&stale), &body).await;
    assert!(
        matches!(refused, Err(ControlError::BadWebhook(_))),
        "{refused:?}"
    );
    assert!(store
        .list_clients(Default::default(), None, 10)
        .await
        .unwrap()
        .clients
        .is_empty());

    // A live-mode event on a test key is not for this account.
    let live = event(
        "evt_live",
        "invoice.paid",
        true,
        serde_json::json!({ "id": "in_1", "object": "invoice", "subscription": "sub_1" }),
    );
    let (header, body) = signed(&live);
    assert_eq!(
        control.stripe_webhook(Some(&header), &body).await.unwrap(),
        WebhookResult::Ignored
    );

    // The first paid sign-up is provisioned; its redelivery does nothing more.
    let (header, body) = signed(&completed("evt_1", first.id.as_str(), "cus_1", "sub_1"));
    assert_eq!(
        control.stripe_webhook(Some(&header), &body).await.unwrap(),
        WebhookResult::Processed
    );
    assert_eq!(
        control.stripe_webhook(Some(&header), &body).await.unwrap(),
        WebhookResult::Duplicate
    );
    let clients = store
        .list_clients(Default::default(), None, 10)
        .await
        .unwrap()
        .clients;
    assert_eq!(clients.len(), 1);
    let client = clients[0].id.clone();
    let billing = store.billing(&client).await.unwrap().unwrap();
    assert_eq!(billing.status, BillingStatus::Active);
    assert_eq!(billing.subscription_id, "sub_1");

    // The second one lost the race: no second client, the buyer is told, Stripe gets a 200
    // (an error would make it redeliver for days to no end).
    let (header, body) = signed(&completed("evt_2", second.id.as_str(), "cus_2", "sub_2"));
    assert_eq!(
        control.stripe_webhook(Some(&header), &body).await.unwrap(),
        WebhookResult::Processed
    );
    assert_eq!(
        store
            .list_clients(Default::default(), None, 10)
            .await
            .unwrap()
            .clients
            .len(),
        1
    );

    // The lost sign-up stays paid, and the alert rules open an alert about it (pending for
    // the hold time) that names what the operator must do.
    let stuck = store.paid_signups_not_provisioned().await.unwrap();
    assert_eq!(
        stuck.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str()]
    );
    control.evaluate_alerts().await.unwrap();
    let key = format!("signup-not-provisioned:{}", second.id);
    let open = store.open_alerts().await.unwrap();
    let lost = open
        .iter()
        .find(|a| a.key == key)
        .unwrap_or_else(|| panic!("no alert {key}: {open:?}"));
    assert!(lost.client_id.is_none());
    assert!(
        lost.summary.contains("race.example.com") && lost.summary.contains("refund"),
        "{}",
        lost.summary
    );
    // The operator refunds and cancels: Stripe's cancellation closes the sign-up (no client
    // to stop), and the next evaluation drops the alert.
    let cancelled = event(
        "evt_lost_cancelled",
        "customer.subscription.deleted",
        false,
        serde_json::json!({ "id": "sub_2", "object": "subscription", "customer": "cus_2" }),
    );
    let (header, body) = signed(&cancelled);
    assert_eq!(
        control.stripe_webhook(Some(&header), &body).await.unwrap(),
        WebhookResult::Processed
    );
    assert_eq!(
        store.signup(&second.id).await.unwrap().unwrap().status,
        stackbox_store::SignupStatus::Expired
    );
    assert!(store
        .paid_signups_not_provisioned()
        .await
        .unwrap()
        .is_empty());
    control.evaluate_alerts().await.unwrap();
    assert!(
        store
            .open_alerts()
            .await
            .unwrap()
            .iter()
            .all(|a| a.key != key),
        "the alert stayed open"
    );

    // Events about subscriptions that are not StackBox's are acknowledged and ignored.
    let foreign = event(
        "evt_foreign",
        "invoice.payment_failed",
        false,
        serde_json::json!({ "id": "in_9", "object": "invoice", "subscription": "sub_unknown",
                            "attempt_count": 1 }),
    );
    let (header, body) = signed(&foreign);
    assert_eq!(
        control.stripe_webhook(Some(&header), &body).await.unwrap(),
        WebhookResult::Ignored
    );

    // Wait until the first create has failed at its `cloud` step (no adapter), so that the
    // client is not running: a plan change then updates the configuration without a redeploy.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let latest = store.deployments_of_client(&client, 1).await.unwrap();
        if latest.first().is_some_and(|d| d.status.is_finished()) {
            break;
        }
        assert!(Instant::now() < deadline, "the create never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deployments_before = store
        .deployments_of_client(&client, 10)
        .await
        .unwrap()
        .len();
    let upgraded = event(
        "evt_upgrade",
        "customer.subscription.updated",
        false,
        serde_json::json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "items": { "data": [ { "price": { "id": "price_professional" } } ] },
        }),
    );
    let (header, body) = signed(&upgraded);
    assert_eq!(
        control.stripe_webhook(Some(&header), &body).await.unwrap(),
        WebhookResult::Processed
    );
    let record = store.client(&client).await.unwrap().unwrap();
    assert_eq!(record.spec().unwrap().plan.key(), "professional");
    assert_eq!(
        store.billing(&client).await.unwrap().unwrap().plan.key(),
        "professional"
    );
    assert_eq!(
        store
            .deployments_of_client(&client, 10)
            .await
            .unwrap()
            .len(),
        deployments_before,
        "a client that is not running is not redeployed by a plan change"
    );
    let secrets = store
        .get_secrets(&client, &MasterKey::generate().unwrap())
        .await;
    assert!(
        secrets.is_err(),
        "another master key must not open the secrets"
    );

    // Stripe retries a failing invoice: each attempt is its own event, but the owner hears
    // of the arrears once. A cancellation delivered twice (two event ids) is one notice too.
    for attempt in 1..=2 {
        let failed = event(
            &format!("evt_failed_{attempt}"),
            "invoice.payment_failed",
            false,
            serde_json::json!({ "id": "in_1", "object": "invoice", "customer": "cus_1",
                                "subscription": "sub_1", "attempt_count": attempt }),
        );
        let (header, body) = signed(&failed);
        assert_eq!(
            control.stripe_webhook(Some(&header), &body).await.unwrap(),
            WebhookResult::Processed
        );
    }
    assert_eq!(
        store.billing(&client).await.unwrap().unwrap().status,
        BillingStatus::PastDue
    );
    for delivery in 1..=2 {
        // The first one queues a stop; the second must find the client idle.
        let deadline = Instant::now() + Duration::from_secs(30);
        while store
            .deployments_of_client(&client, 1)
            .await
            .unwrap()
            .first()
            .is_some_and(|d| !d.status.is_finished())
        {
            assert!(Instant::now() < deadline, "the stop never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deleted = event(
            &format!("evt_deleted_{delivery}"),
            "customer.subscription.deleted",
            false,
            serde_json::json!({ "id": "sub_1", "object": "subscription", "customer": "cus_1" }),
        );
        let (header, body) = signed(&deleted);
        assert_eq!(
            control.stripe_webhook(Some(&header), &body).await.unwrap(),
            WebhookResult::Processed
        );
    }
    assert_eq!(
        store.billing(&client).await.unwrap().unwrap().status,
        BillingStatus::Cancelled
    );

    // Mail: the lost race, the plan change, the arrears and the cancellation, each once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = subjects(sink.dir.path());
        if found.len() >= 4 {
            assert_eq!(found.len(), 4, "{found:?}");
            assert!(
                found.iter().any(|s| s.contains("could not set up")),
                "{found:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "mail never arrived: {found:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(subjects(sink.dir.path()).len(), 4);
}
