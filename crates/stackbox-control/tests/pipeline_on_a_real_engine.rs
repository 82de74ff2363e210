//! The pipeline against a real store (SQLite) and a real Docker engine: a create runs every
//! step and leaves one healthy stack; a deployment interrupted in the middle of a step (the
//! journal as a crash leaves it) is resumed by the next start and completes without a second
//! stack; stop, start and destroy go through the same journal.
//!
//! Needs the engine and the local test images (`scripts/test.sh` provides both and sets
//! `STACKBOX_TEST_IMAGES`); without them the test skips with one line.

use std::process::Command;
use std::time::Duration;

use stackbox_control::{step_names, Control, ControlConfig};
use stackbox_core::client::ClientSpec;
use stackbox_core::operator::OperatorConfig;
use stackbox_store::{DeploymentKind, DeploymentStatus, MasterKey, StepStatus, Store};

const EDGE: &str = "stackbox-pipeline-test-edge";

/// The operator settings on the test images' catalog (the engine tier's guard gives it).
fn operator(images: &str) -> OperatorConfig {
    let hard_limit = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(1 << 20);
    let text = format!(
        "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 28081\nhttps_port = 28444\n\
         [host]\nmax_open_files = {hard_limit}\n"
    );
    let mut operator = OperatorConfig::from_toml(&text, "test operator").unwrap();
    operator.images = operator
        .images
        .with_overrides_toml(&std::fs::read_to_string(images).unwrap(), images)
        .unwrap();
    operator
}

fn spec(company: &str, domain: &str) -> ClientSpec {
    ClientSpec::from_toml(&format!(
        "company_name = \"{company}\"\ndomain = \"{domain}\"\nplan = \"starter\"\nadmin_email = \"owner@{domain}\"\n"
    ))
    .unwrap()
}

fn containers_of(id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.stackbox.client={id}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

async fn wait_finished(
    store: &Store,
    id: &stackbox_store::DeploymentId,
) -> stackbox_store::Deployment {
    wait_finished_or_forgotten(store, id)
        .await
        .expect("the deployment record is kept until its client is destroyed")
}

/// A destroy's record goes with its client once it succeeded: `None` then.
async fn wait_finished_or_forgotten(
    store: &Store,
    id: &stackbox_store::DeploymentId,
) -> Option<stackbox_store::Deployment> {
    for _ in 0..600 {
        let deployment = store.deployment(id).await.unwrap()?;
        if deployment.status.is_finished() {
            return Some(deployment);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("deployment {} did not finish within 120 s", id.as_str());
}

async fn wait_for_state(
    store: &Store,
    client: &stackbox_core::client::ClientId,
    state: &str,
    seconds: u64,
) {
    for _ in 0..seconds * 5 {
        let record = store.client(client).await.unwrap().unwrap();
        if record.state.as_str() == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let record = store.client(client).await.unwrap().unwrap();
    panic!(
        "client never became {state}: {:?} ({:?})",
        record.state, record.state_reason
    );
}

/// Removes what a failed assertion left on the engine: every container, network and volume
/// of the clients this test made (their ids are recorded as they are made).
struct Leftovers(std::sync::Mutex<Vec<String>>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let ids = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        for id in ids {
            let filter = format!("label=io.stackbox.client={id}");
            for (list, remove) in [
                (vec!["ps", "-aq"], vec!["rm", "-f"]),
                (vec!["network", "ls", "-q"], vec!["network", "rm"]),
                (vec!["volume", "ls", "-q"], vec!["volume", "rm"]),
            ] {
                if list[0] == "network" {
                    let _ = Command::new("docker").args(["rm", "-f", EDGE]).output();
                }
                let mut args = list.clone();
                args.extend(["--filter", &filter]);
                let out = Command::new("docker").args(&args).output().unwrap();
                for object in String::from_utf8_lossy(&out.stdout).lines() {
                    let mut args = remove.clone();
                    args.push(object);
                    let _ = Command::new("docker").args(&args).output();
                }
            }
        }
    }
}

/// One span as opened, or one event of StackBox's own code: its name, its fields as text
/// (values recorded later included) and the span it opened in.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    is_event: bool,
    fields: std::collections::BTreeMap<String, String>,
    /// The index in the recording of the span this one opened in.
    parent: Option<usize>,
}

#[derive(Default)]
struct Recording {
    seen: Vec<Seen>,
    /// Each live span's index in `seen`, for the values recorded after it opened.
    index_of_span: std::collections::HashMap<tracing::span::Id, usize>,
}

impl Recording {
    /// Whether the entry at `index` opened inside the entry at `ancestor`, at any depth.
    fn descends_from(&self, index: usize, ancestor: usize) -> bool {
        let mut current = self.seen[index].parent;
        while let Some(parent) = current {
            if parent == ancestor {
                return true;
            }
            current = self.seen[parent].parent;
        }
        false
    }
}

/// A tracing layer that keeps every span the process opens and every event StackBox's crates
/// log (the worker thread's included: it is installed as the global default).
struct SpanRecorder(std::sync::Arc<std::sync::Mutex<Recording>>);

struct FieldText<'a>(&'a mut std::collections::BTreeMap<String, String>);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanRecorder
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = std::collections::BTreeMap::new();
        attrs.record(&mut FieldText(&mut fields));
        let parent_id = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id());
        let mut recording = self.0.lock().unwrap();
        let parent = parent_id.and_then(|parent| recording.index_of_span.get(&parent).copied());
        let index = recording.seen.len();
        recording.seen.push(Seen {
            name: attrs.metadata().name(),
            is_event: false,
            fields,
            parent,
        });
        recording.index_of_span.insert(id.clone(), index);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut recording = self.0.lock().unwrap();
        if let Some(index) = recording.index_of_span.get(id).copied() {
            values.record(&mut FieldText(&mut recording.seen[index].fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        // Only StackBox's own lines: the HTTP client's trace output is not this test's subject.
        if !event.metadata().target().starts_with("stackbox") {
            return;
        }
        let mut fields = std::collections::BTreeMap::new();
        event.record(&mut FieldText(&mut fields));
        let parent_id = ctx.event_span(event).map(|span| span.id());
        let mut recording = self.0.lock().unwrap();
        let parent = parent_id.and_then(|parent| recording.index_of_span.get(&parent).copied());
        recording.seen.push(Seen {
            name: event.metadata().name(),
            is_event: true,
            fields,
            parent,
        });
    }

    fn on_close(&self, id: tracing::span::Id, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        // Span ids are reused once closed: a later span must not inherit this one's entry.
        self.0.lock().unwrap().index_of_span.remove(&id);
    }
}

fn record_spans() -> std::sync::Arc<std::sync::Mutex<Recording>> {
    use tracing_subscriber::layer::SubscriberExt;
    let recording = std::sync::Arc::new(std::sync::Mutex::new(Recording::default()));
    let subscriber = tracing_subscriber::registry().with(SpanRecorder(recording.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber per test binary");
    recording
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_resume_stop_start_and_destroy_through_the_journal() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let spans = record_spans();
    let data = tempfile::tempdir().unwrap();
    let config = ControlConfig {
        data_dir: data.path().to_path_buf(),
        operator: operator(&images),
        max_parallel: 4,
        health_timeout: Some(Duration::from_secs(60)),
        onboarding: Default::default(),
        cloud: None,
        backup_tick: std::time::Duration::from_secs(60),
        webhook_retry_base: std::time::Duration::from_secs(30),
    };
    let store = Store::open_data_dir(data.path()).await.unwrap();
    let key = MasterKey::generate().unwrap();
    let control = Control::start(store.clone(), key.clone(), config.clone())
        .await
        .unwrap();
    let leftovers = Leftovers(std::sync::Mutex::new(Vec::new()));

    // Create: every step recorded as succeeded, one healthy stack.
    let created = control
        .create_client(spec("Pipeline Bakery", "pipeline-bakery.example"))
        .await
        .unwrap();
    assert!(
        created.admin_password.len() >= 16,
        "admin password too short"
    );
    let id = created.client_id.to_string();
    leftovers.0.lock().unwrap().push(id.clone());
    let done = wait_finished(&store, &created.deployment.id).await;
    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    let names: Vec<&str> = done.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, step_names(DeploymentKind::Create));
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Succeeded));
    let first = containers_of(&id);
    assert_eq!(first.len(), 9, "{first:?}");
    // The secrets in the store are encrypted; the bundle holds the same password.
    let env = std::fs::read_to_string(data.path().join("bundles/clients").join(&id).join(".env"))
        .unwrap();
    assert!(env.contains(&format!("ADMIN_PASSWORD={}", created.admin_password)));

    // Tracing: one span for the deployment (its id, client and kind), one per journal step
    // inside it, engine spans inside it naming the client's containers; no field holds a
    // secret (the client's secrets as the store holds them, and every secret-like line of its
    // bundle; read before the recording is locked, as the store is awaited).
    let mut secrets: Vec<String> = store
        .get_secrets(&created.client_id, &key)
        .await
        .unwrap()
        .expect("the client's secrets are in the store")
        .iter()
        .map(|(_, value)| value.to_string())
        .collect();
    secrets.extend(
        env.lines()
            .filter(|l| l.contains("PASSWORD=") || l.contains("SECRET") || l.contains("KEY="))
            .filter_map(|l| l.split_once('=').map(|(_, v)| v.to_string())),
    );
    secrets.retain(|secret| secret.len() >= 12);
    assert!(
        secrets.iter().any(|s| s == &created.admin_password),
        "the admin password is among the secrets looked for"
    );
    {
        let recording = spans.lock().unwrap();
        let seen = &recording.seen;
        let deployment_span = seen
            .iter()
            .position(|s| {
                !s.is_event
                    && s.name == "deployment"
                    && s.fields.get("id").map(String::as_str)
                        == Some(created.deployment.id.as_str())
            })
            .unwrap_or_else(|| panic!("no deployment span: {seen:?}"));
        assert_eq!(seen[deployment_span].fields["client"], id);
        assert_eq!(seen[deployment_span].fields["kind"], "create");
        for step in &done.steps {
            assert!(
                seen.iter().any(|s| !s.is_event
                    && s.name == "step"
                    && s.fields.get("name") == Some(&step.name)
                    && s.parent == Some(deployment_span)),
                "no span for step {} inside the deployment's",
                step.name
            );
        }
        let created_containers: Vec<&String> = seen
            .iter()
            .enumerate()
            .filter(|(index, s)| {
                !s.is_event
                    && s.name == "engine"
                    && s.fields.contains_key("image")
                    && recording.descends_from(*index, deployment_span)
            })
            .filter_map(|(_, s)| s.fields.get("container"))
            .filter(|name| name.starts_with(&id))
            .collect();
        assert!(
            created_containers.len() >= first.len(),
            "engine spans name {created_containers:?}"
        );
        assert!(seen
            .iter()
            .any(|s| s.name == "engine.services" && s.fields.get("client") == Some(&id)));
        assert!(
            seen.iter().any(|s| s.name == "engine"
                && !s.fields.contains_key("container")
                && s.fields.get("image").is_some_and(|image| !image.is_empty())),
            "no image check's engine span names its image"
        );
        for entry in seen {
            for (field, value) in &entry.fields {
                assert!(
                    !value.contains("PASSWORD=")
                        && !secrets.iter().any(|secret| value.contains(secret.as_str())),
                    "a secret in {} {}'s field {field}",
                    if entry.is_event { "event" } else { "span" },
                    entry.name
                );
            }
        }
    }

    // A second client's deployment, left as a crash leaves it: `containers` was running.
    let second = spec("Resume Florist", "resume-florist.example");
    let crashed = control.create_client(second).await.unwrap();
    let second_id = crashed.client_id.to_string();
    leftovers.0.lock().unwrap().push(second_id.clone());
    wait_finished(&store, &crashed.deployment.id).await;
    // Journal of a redeploy interrupted in its `containers` step.
    let redeploy = store
        .create_deployment(
            &crashed.client_id,
            DeploymentKind::Redeploy,
            &step_names(DeploymentKind::Redeploy),
        )
        .await
        .unwrap();
    for step in ["render", "infrastructure"] {
        store.mark_step_running(&redeploy.id, step).await.unwrap();
        store
            .mark_step_succeeded(&redeploy.id, step, None)
            .await
            .unwrap();
    }
    store
        .mark_step_running(&redeploy.id, "containers")
        .await
        .unwrap();
    let before_resume = containers_of(&second_id);

    // A new control plane on the same store resumes it.
    let restarted = Control::start(store.clone(), key.clone(), config.clone())
        .await
        .unwrap();
    let resumed = wait_finished(&store, &redeploy.id).await;
    assert_eq!(resumed.status, DeploymentStatus::Succeeded, "{resumed:?}");
    let containers_step = resumed.step("containers").unwrap();
    assert_eq!(
        containers_step.attempts, 2,
        "resumed, not restarted from scratch"
    );
    assert_eq!(
        resumed.step("render").unwrap().attempts,
        1,
        "a done step never runs again"
    );
    assert_eq!(
        containers_of(&second_id),
        before_resume,
        "exactly one stack, nothing recreated"
    );

    // Stop and start through the journal.
    let stop = restarted
        .request(&crashed.client_id, DeploymentKind::Stop)
        .await
        .unwrap();
    assert_eq!(
        wait_finished(&store, &stop.id).await.status,
        DeploymentStatus::Succeeded
    );
    let state = store
        .client(&crashed.client_id)
        .await
        .unwrap()
        .unwrap()
        .state;
    assert_eq!(state.as_str(), "stopped");
    let start = restarted
        .request(&crashed.client_id, DeploymentKind::Start)
        .await
        .unwrap();
    assert_eq!(
        wait_finished(&store, &start.id).await.status,
        DeploymentStatus::Succeeded
    );

    // One unfinished deployment per client.
    let busy_a = restarted
        .request(&crashed.client_id, DeploymentKind::Redeploy)
        .await;
    let busy_b = restarted
        .request(&crashed.client_id, DeploymentKind::Redeploy)
        .await;
    assert!(
        busy_a.is_ok() != busy_b.is_ok(),
        "exactly one of two concurrent requests is accepted"
    );
    let accepted = busy_a.or(busy_b).unwrap();
    wait_finished(&store, &accepted.id).await;

    // The health monitor: the state follows the engine's health events to `running`; a
    // service whose health check fails (Redis told to want another password) is restarted by
    // the monitor and comes back healthy with its configured password.
    wait_for_state(&store, &crashed.client_id, "running", 60).await;
    let redis = format!("{second_id}-redis-1");
    let started = |name: &str| {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.StartedAt}}", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first_start = started(&redis);
    let broken = Command::new("docker")
        .args([
            "exec",
            &redis,
            "redis-cli",
            "CONFIG",
            "SET",
            "requirepass",
            "another-password",
        ])
        .output()
        .unwrap();
    assert!(
        broken.status.success(),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while started(&redis) == first_start {
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor never restarted {redis}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pong = Command::new("docker")
        .args(["exec", &redis, "sh", "-c", "redis-cli ping"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pong.stdout).trim(), "PONG");

    // Destroy both: nothing left on the engine or in the store.
    for client in [&created.client_id, &crashed.client_id] {
        let destroy = restarted
            .request(client, DeploymentKind::Destroy)
            .await
            .unwrap();
        if let Some(done) = wait_finished_or_forgotten(&store, &destroy.id).await {
            assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
        }
    }
    for _ in 0..50 {
        if store.client(&created.client_id).await.unwrap().is_none()
            && store.client(&crashed.client_id).await.unwrap().is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.client(&created.client_id).await.unwrap().is_none());
    assert!(containers_of(&id).is_empty() && containers_of(&second_id).is_empty());
    let _ = Command::new("docker").args(["rm", "-f", EDGE]).output();
    let _ = Command::new("docker")
        .args(["network", "rm", EDGE])
        .output();
}
