//! The health monitor: follows the engine's event stream (one long-lived request, not a poll
//! per container) and keeps each client's state in the store current. A service whose health
//! check turns unhealthy is restarted; one that turns unhealthy again and again is left alone
//! and its client marked degraded, with the reason.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use stackbox_core::client::ClientId;
use tracing::Instrument;

use stackbox_engine::lifecycle;
use stackbox_engine::{ContainerEvent, ContainerRuntime, DockerRuntime};
use stackbox_store::ClientState;

use crate::Control;

/// Restarts allowed per container within [`WINDOW`] before giving up on it.
const RESTARTS: usize = 3;
const WINDOW: Duration = Duration::from_secs(600);

/// Runs until the process ends; reconnects when the engine goes away.
pub(crate) async fn follow(control: Control) {
    let mut failures: HashMap<String, Vec<Instant>> = HashMap::new();
    loop {
        let Ok(docker) = DockerRuntime::connect().await else {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        let mut events = Box::pin(docker.container_events());
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            let span = tracing::debug_span!(
                "monitor.event",
                client = %event.client,
                service = %event.service,
                action = %event.action
            );
            handle(&control, &docker, &mut failures, event)
                .instrument(span)
                .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn handle(
    control: &Control,
    docker: &DockerRuntime,
    failures: &mut HashMap<String, Vec<Instant>>,
    event: ContainerEvent,
) {
    let Ok(client) = ClientId::parse(&event.client) else {
        return;
    };
    let mut reason = None;
    // A deployment of the client (a stop, a destroy, a redeploy) owns its containers: a
    // restart in the middle of it would race its own stops and removals.
    let owned_by_deployment = control.quiet_generation(&client).is_none();
    if event.action == "die" && !owned_by_deployment {
        record_stop(control, &client, &event.service);
    }
    if event.action == "health_status: unhealthy" && !owned_by_deployment {
        let now = Instant::now();
        let recent = failures.entry(event.container.clone()).or_default();
        recent.retain(|t| now.duration_since(*t) < WINDOW);
        recent.push(now);
        if recent.len() <= RESTARTS {
            let _ = docker.stop_container(&event.container).await;
            // A deployment that began while the container stopped decides what runs.
            if control.quiet_generation(&client).is_some() {
                let _ = docker.start_container(&event.container).await;
            }
        } else {
            reason = Some(format!(
                "service {} keeps failing its health check ({} restarts in {} minutes)",
                event.service,
                RESTARTS,
                WINDOW.as_secs() / 60
            ));
        }
    }
    refresh(control, docker, &client, reason).await;
}

/// Notes an unplanned stop of one of the client's services (a crash, an OOM kill, the
/// monitor's own restart of an unhealthy one) for the restart-loop alert; keeps only those
/// within the alert's window, so the record stays small however long a loop goes on.
fn record_stop(control: &Control, client: &ClientId, service: &str) {
    let within = control.inner.config.operator.alerts.restarts_within_seconds as i64;
    let now = stackbox_store::Timestamp::now()
        .unix_millis()
        .div_euclid(1000);
    let mut observations = control.observations();
    let stops = observations
        .restarts
        .entry(client.clone())
        .or_default()
        .entry(service.to_string())
        .or_default();
    stops.push_back(now);
    while stops.front().is_some_and(|at| now - at > within) {
        stops.pop_front();
    }
}

/// Sets the client's state from the engine, unless a deployment owns the client right now or
/// it was stopped or is being destroyed on purpose.
pub(crate) async fn refresh(
    control: &Control,
    docker: &DockerRuntime,
    client: &ClientId,
    reason: Option<String>,
) {
    let store = control.store();
    let Some(generation) = control.quiet_generation(client) else {
        return;
    };
    let Ok(Some(record)) = store.client(client).await else {
        return;
    };
    if matches!(
        record.state,
        ClientState::Stopped | ClientState::Destroying | ClientState::Provisioning
    ) {
        return;
    }
    if control.busy(client).await.unwrap_or(false) {
        return;
    }
    let Ok(spec) = record.spec() else { return };
    let expected =
        stackbox_core::infra::expected_service_names(&spec, &control.inner.config.operator);
    let Ok(status) = lifecycle::status(docker, client, &expected).await else {
        return;
    };
    let (state, reason) = match reason {
        Some(reason) => (ClientState::Degraded, Some(reason)),
        None => match ClientState::from(status.state) {
            // Running on the engine but not reachable from outside: degraded, saying which
            // hostname fails and how.
            ClientState::Running => match control.probe_failure(client) {
                Some(reason) => (ClientState::Degraded, Some(reason)),
                None => (ClientState::Running, None),
            },
            other => (other, None),
        },
    };
    // A deployment that started or ended while we looked owns the state.
    if control.quiet_generation(client) != Some(generation) {
        return;
    }
    if let Err(error) = store
        .set_client_state(client, state, reason.as_deref())
        .await
    {
        tracing::error!(client = %client, %error, "the client's observed state could not be recorded");
    } else if state == ClientState::Degraded && record.state != ClientState::Degraded {
        tracing::warn!(client = %client, reason = reason.as_deref().unwrap_or(""), "client degraded");
    }
}
