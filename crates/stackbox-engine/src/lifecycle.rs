//! The lifecycle operations: deploy (converge), stop, cleanup, destroy and status.
//!
//! Deploy is the one path for change: observe → [`plan`] → idempotent actions. Services start
//! as soon as everything they depend on is healthy (in parallel otherwise). Readiness is the
//! service's own health-check command, run by StackBox as soon as the container is up and
//! then every few hundred milliseconds, rather than waiting for the engine's next periodic
//! check (every 10 s). A deploy that fails or is interrupted puts back what was there before.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use stackbox_core::client::ClientId;
use stackbox_core::deploy::{
    overall_state, plan, ContainerConfig, ContainerState, Converge, DeployPlan, DesiredState,
    EdgeRouter, Health, Observed, ObservedContainer, OverallState, ServiceAction, ServiceStep,
    REPLACED_SUFFIX,
};
use stackbox_core::plan::ServiceKind;

use crate::runtime::{ContainerDetails, ContainerRuntime};
use crate::EngineError;

/// A step of an operation, for progress displays (`--json` prints each as one line).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// What a deploy is going to do.
    Plan {
        client: String,
        create: Vec<String>,
        replace: Vec<String>,
        start: Vec<String>,
        unchanged: Vec<String>,
    },
    /// A service moved to a new phase.
    Service {
        service: String,
        phase: Phase,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

/// Where a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Pulling,
    Waiting,
    Creating,
    Starting,
    CheckingHealth,
    /// Healthy, and being told what the image applies only on a first start (see
    /// `Converge`): a database server's databases, users and passwords.
    Converging,
    Healthy,
    Unchanged,
    Failed,
    RollingBack,
    Restored,
    Stopping,
    Stopped,
    Removing,
    Removed,
}

impl Phase {
    /// True when the service has reached an end.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Healthy
                | Phase::Unchanged
                | Phase::Failed
                | Phase::Restored
                | Phase::Stopped
                | Phase::Removed
        )
    }
}

fn service_event(service: &str, phase: Phase, detail: Option<String>) -> Event {
    Event::Service {
        service: service.to_string(),
        phase,
        detail,
    }
}

/// The name suffix of a start-first replacement while it starts beside the container it
/// replaces.
const NEXT_SUFFIX: &str = "-next";

/// How long a start-first replacement and the container it replaces both serve.
const START_FIRST_HANDOVER: Duration = Duration::from_secs(1);

/// Tunables of a deploy.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Overrides every service's health timeout (default: its start period plus its
    /// retries × interval, at least 30 s).
    pub health_timeout: Option<Duration>,
}

/// What happened to one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceOutcome {
    pub service: String,
    /// `created`, `replaced`, `started` or `unchanged`.
    pub action: &'static str,
    pub seconds: f64,
}

/// The result of a successful deploy.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    pub services: Vec<ServiceOutcome>,
    /// Containers of the client that were removed (services no longer in its plan, leftovers).
    pub removed: Vec<String>,
    /// Nothing needed doing.
    pub unchanged: bool,
    /// Volumes kept although no service of the plan uses them any more (see
    /// `DeployPlan::kept_volumes`).
    pub kept_volumes: Vec<String>,
}

/// What a deploy changed, so a failure or interruption can put it back.
#[derive(Default)]
struct Journal {
    /// Networks this deploy created.
    networks: Vec<String>,
    /// Volumes this deploy created: they hold nothing but what this deploy's own containers
    /// wrote (a database's half-finished first initialisation, which would fail the next
    /// start), so a rollback removes them. Volumes that existed before are never touched.
    volumes: Vec<String>,
    /// Containers set aside for their replacement: (container, was running).
    set_aside: Vec<(ObservedContainer, bool)>,
    /// Stopped containers this deploy started.
    started: Vec<String>,
    /// Networks a container set aside for a start-first replacement was detached from
    /// (container id, attachment), attached again by a rollback.
    detached: Vec<(String, stackbox_core::deploy::NetworkAttachment)>,
}

/// One deploy of one client: prepared (observed and planned), then run, then rolled back if
/// it fails or is interrupted.
pub struct Deployment<'a, R: ContainerRuntime> {
    runtime: &'a R,
    desired: &'a DesiredState,
    edge: Option<&'a EdgeRouter>,
    options: DeployOptions,
    before: Observed,
    plan: DeployPlan,
    journal: RefCell<Journal>,
    /// Set once the deploy asked the engine to change something.
    touched: Cell<bool>,
}

impl<'a, R: ContainerRuntime> Deployment<'a, R> {
    /// Reads the engine and computes the plan; changes nothing.
    #[tracing::instrument(level = "debug", name = "engine.prepare", skip_all, fields(client = %desired.client_id), err(level = "debug", Display))]
    pub async fn prepare(
        runtime: &'a R,
        desired: &'a DesiredState,
        edge: Option<&'a EdgeRouter>,
        options: DeployOptions,
    ) -> Result<Deployment<'a, R>, EngineError> {
        let before = runtime.observe(&desired.client_id).await?;
        let plan = plan(desired, &before);
        Ok(Deployment {
            runtime,
            desired,
            edge,
            options,
            before,
            plan,
            journal: RefCell::new(Journal::default()),
            touched: Cell::new(false),
        })
    }

    pub fn plan(&self) -> &DeployPlan {
        &self.plan
    }

    /// False while the deploy has only looked (a missing image stops it there).
    pub fn changed_anything(&self) -> bool {
        self.touched.get()
    }

    /// Brings the engine to the desired state. On error the caller calls [`Self::rollback`].
    #[tracing::instrument(level = "debug", name = "engine.deploy", skip_all, fields(client = %self.desired.client_id), err(level = "debug", Display))]
    pub async fn run(&self, events: &dyn Fn(Event)) -> Result<DeployOutcome, EngineError> {
        self.check_images(events).await?;
        self.infrastructure(events).await?;
        self.services(events).await
    }

    /// Phase 1: every image the plan needs is on the engine (pulled if it can be); changes
    /// nothing, so a missing image stops a deploy before it starts.
    #[tracing::instrument(level = "debug", name = "engine.check_images", skip_all, fields(client = %self.desired.client_id), err(level = "debug", Display))]
    pub async fn check_images(&self, events: &dyn Fn(Event)) -> Result<(), EngineError> {
        let names = |pick: fn(&ServiceAction) -> bool| -> Vec<String> {
            self.plan
                .services
                .iter()
                .filter(|s| pick(&s.action))
                .map(|s| s.config.service.name().to_string())
                .collect()
        };
        events(Event::Plan {
            client: self.desired.client_id.to_string(),
            create: names(|a| matches!(a, ServiceAction::Create)),
            replace: names(|a| matches!(a, ServiceAction::Replace { .. })),
            start: names(|a| matches!(a, ServiceAction::Start { .. })),
            unchanged: names(|a| matches!(a, ServiceAction::Keep { .. })),
        });

        // Every image first, so a missing one stops the deploy before anything changes.
        let mut images: Vec<(&str, &str)> = Vec::new();
        for step in &self.plan.services {
            if matches!(
                step.action,
                ServiceAction::Create | ServiceAction::Replace { .. }
            ) {
                images.push((step.config.service.name(), &step.config.image));
            }
        }
        if let Some(edge) = self.edge {
            images.push(("edge", &edge.container.image));
        }
        let checks: FuturesUnordered<_> = images
            .iter()
            .map(|(service, image)| async move {
                events(service_event(
                    service,
                    Phase::Pulling,
                    Some(image.to_string()),
                ));
                self.runtime.ensure_image(image).await.map_err(|e| match e {
                    EngineError::ImageUnavailable { image, problem, .. } => {
                        EngineError::ImageUnavailable {
                            image,
                            for_service: format!(" (service {service})"),
                            problem,
                        }
                    }
                    other => other,
                })
            })
            .collect();
        for result in checks.collect::<Vec<_>>().await {
            result?;
        }
        Ok(())
    }

    /// Phase 2: the client's networks and volumes, and the shared edge router linked to it.
    #[tracing::instrument(level = "debug", name = "engine.infrastructure", skip_all, fields(client = %self.desired.client_id), err(level = "debug", Display))]
    pub async fn infrastructure(&self, events: &dyn Fn(Event)) -> Result<(), EngineError> {
        self.touched.set(true);
        for network in &self.plan.create_networks {
            self.runtime.create_network(network).await?;
            self.journal
                .borrow_mut()
                .networks
                .push(network.name.clone());
        }
        for volume in &self.plan.create_volumes {
            self.runtime.create_volume(volume).await?;
            self.journal.borrow_mut().volumes.push(volume.name.clone());
        }
        if let Some(edge) = self.edge {
            self.ensure_edge(edge, events).await?;
        }
        Ok(())
    }

    /// Phase 3: every service converged and healthy, each as soon as the services it depends
    /// on are; then what was set aside and what no service owns any more is removed.
    #[tracing::instrument(level = "debug", name = "engine.services", skip_all, fields(client = %self.desired.client_id), err(level = "debug", Display))]
    pub async fn services(&self, events: &dyn Fn(Event)) -> Result<DeployOutcome, EngineError> {
        self.touched.set(true);
        // Each service as soon as the services it depends on are healthy.
        let present: BTreeSet<ServiceKind> = self
            .plan
            .services
            .iter()
            .map(|s| s.config.service)
            .collect();
        let mut done: BTreeSet<ServiceKind> = BTreeSet::new();
        let mut pending: Vec<&ServiceStep> = self.plan.services.iter().collect();
        let mut running = FuturesUnordered::new();
        let mut outcomes = Vec::new();
        for step in &pending {
            if !matches!(step.action, ServiceAction::Keep { .. }) {
                events(service_event(
                    step.config.service.name(),
                    Phase::Waiting,
                    None,
                ));
            }
        }
        loop {
            pending.retain(|step| {
                let ready = step
                    .config
                    .depends_on
                    .iter()
                    .all(|d| done.contains(d) || !present.contains(d));
                if ready {
                    running.push(self.converge_service(step, events));
                }
                !ready
            });
            match running.next().await {
                None => break,
                Some(Ok(outcome)) => {
                    done.insert(outcome.0);
                    outcomes.push(outcome.1);
                }
                Some(Err(error)) => return Err(error),
            }
        }

        // Healthy: what was set aside and what no service owns any more can go.
        let mut removed = Vec::new();
        let set_aside: Vec<ObservedContainer> = self
            .journal
            .borrow()
            .set_aside
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        for container in set_aside.iter().chain(&self.plan.remove_after) {
            events(service_event(
                container.service.as_deref().unwrap_or(&container.name),
                Phase::Removing,
                Some(container.name.clone()),
            ));
            self.runtime.remove_container(&container.id).await?;
            if self.plan.remove_after.contains(container) {
                removed.push(container.name.clone());
            }
        }
        self.journal.borrow_mut().set_aside.clear();
        outcomes.sort_by_key(|o: &ServiceOutcome| {
            self.plan
                .services
                .iter()
                .position(|s| s.config.service.name() == o.service)
        });
        Ok(DeployOutcome {
            unchanged: self.plan.is_noop(),
            services: outcomes,
            removed,
            kept_volumes: self.plan.kept_volumes.clone(),
        })
    }

    #[tracing::instrument(level = "debug", name = "engine.converge_service", skip_all, fields(container = %step.config.name), err(level = "debug", Display))]
    async fn converge_service(
        &self,
        step: &ServiceStep,
        events: &dyn Fn(Event),
    ) -> Result<(ServiceKind, ServiceOutcome), EngineError> {
        let config = &step.config;
        let name = config.service.name();
        let started = Instant::now();
        // A service that converges is healthy only once it has: its "healthy" or "unchanged"
        // is held back until then, so a progress display never sees it finish twice.
        let converges = config.converge.is_some();
        let outer = events;
        let held = |event: Event| {
            let settled = matches!(
                &event,
                Event::Service {
                    phase: Phase::Healthy | Phase::Unchanged,
                    ..
                }
            );
            if !(converges && settled) {
                outer(event);
            }
        };
        let events: &dyn Fn(Event) = &held;
        let mut previous_holder = None;
        let (action, id) = match &step.action {
            ServiceAction::Keep { id } => {
                // Running with this configuration; if the engine has not seen it healthy yet
                // (a deploy moments ago), check it like a new one.
                let observed = self.before.containers.iter().find(|c| &c.id == id);
                if observed.and_then(|c| c.health) != Some(Health::Healthy) {
                    self.wait_healthy(config, id, events).await?;
                }
                events(service_event(name, Phase::Unchanged, None));
                ("unchanged", id.clone())
            }
            ServiceAction::Start { id } => {
                events(service_event(name, Phase::Starting, None));
                self.journal.borrow_mut().started.push(id.clone());
                self.runtime.start_container(id).await?;
                self.wait_healthy(config, id, events).await?;
                ("started", id.clone())
            }
            ServiceAction::Create => ("created", self.create_and_start(config, events).await?),
            ServiceAction::Replace { old, reason }
                if config.service.replaced_start_first()
                    && config.ports.is_empty()
                    && old.state == ContainerState::Running =>
            {
                // Start-first: the new container runs beside the old one under a temporary
                // name until it is healthy (both answer under the service's alias and Traefik
                // balances over both meanwhile), then the old one is set aside and the new
                // one takes the name. A rollback finds the temporary one by its labels.
                let next = ContainerConfig {
                    name: format!("{}{NEXT_SUFFIX}", config.name),
                    ..config.clone()
                };
                let detail = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from));
                let id = self.create_and_start(&next, events).await?;
                // A moment for routers that follow the engine's events (the client's Traefik)
                // to add the new container, then the old one leaves its networks (their DNS
                // stops naming it) and gets a moment to finish what it serves before it stops.
                tokio::time::sleep(START_FIRST_HANDOVER).await;
                events(service_event(name, Phase::Stopping, detail));
                self.journal
                    .borrow_mut()
                    .set_aside
                    .push((old.clone(), true));
                for attachment in &config.networks {
                    if self
                        .runtime
                        .disconnect_network(&attachment.network, &old.id)
                        .await
                        .is_ok()
                    {
                        self.journal
                            .borrow_mut()
                            .detached
                            .push((old.id.clone(), attachment.clone()));
                    }
                }
                tokio::time::sleep(START_FIRST_HANDOVER / 2).await;
                self.runtime.stop_container(&old.id).await?;
                self.runtime
                    .rename_container(&old.id, &format!("{}{REPLACED_SUFFIX}", config.name))
                    .await?;
                self.runtime.rename_container(&id, &config.name).await?;
                previous_holder = Some(old.id.clone());
                ("replaced", id)
            }
            ServiceAction::Replace { old, reason } => {
                let detail = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from));
                events(service_event(name, Phase::Stopping, detail));
                let was_running = old.state == ContainerState::Running;
                self.journal
                    .borrow_mut()
                    .set_aside
                    .push((old.clone(), was_running));
                self.runtime.stop_container(&old.id).await?;
                self.runtime
                    .rename_container(&old.id, &format!("{}{REPLACED_SUFFIX}", config.name))
                    .await?;
                previous_holder = Some(old.id.clone());
                ("replaced", self.create_and_start(config, events).await?)
            }
        };
        if let Some(converge) = &config.converge {
            // The superuser password the data may still hold: the replaced container's.
            let previous = match &previous_holder {
                Some(old) => self
                    .runtime
                    .container_env(old, converge.previous_login)
                    .await?
                    .unwrap_or_default(),
                None => String::new(),
            };
            self.run_converge(config, converge, &id, &previous, events)
                .await?;
            let settled = if action == "unchanged" {
                Phase::Unchanged
            } else {
                Phase::Healthy
            };
            outer(service_event(name, settled, None));
        }
        Ok((
            config.service,
            ServiceOutcome {
                service: name.to_string(),
                action,
                seconds: started.elapsed().as_secs_f64(),
            },
        ))
    }

    async fn create_and_start(
        &self,
        config: &ContainerConfig,
        events: &dyn Fn(Event),
    ) -> Result<String, EngineError> {
        let name = config.service.name();
        events(service_event(name, Phase::Creating, None));
        let id = self.runtime.create_container(config).await?;
        events(service_event(name, Phase::Starting, None));
        self.runtime.start_container(&id).await?;
        self.wait_healthy_fresh(config, &id, events).await?;
        Ok(id)
    }

    /// Runs the service's converge command in its running, healthy container (see
    /// [`Converge`]); `previous` is written to its standard input.
    // Only the container: the converge command and what it is fed can hold secrets.
    #[tracing::instrument(level = "debug", name = "engine.converge", skip_all, fields(container = %config.name), err(level = "debug", Display))]
    async fn run_converge(
        &self,
        config: &ContainerConfig,
        converge: &Converge,
        id: &str,
        previous: &str,
        events: &dyn Fn(Event),
    ) -> Result<(), EngineError> {
        let name = config.service.name();
        events(service_event(
            name,
            Phase::Converging,
            Some(converge.what.to_string()),
        ));
        let mut input = std::io::Cursor::new(format!("{previous}\n").into_bytes());
        let mut output: Vec<u8> = Vec::new();
        let outcome = self
            .runtime
            .exec_streaming(id, &converge.command, Some(&mut input), &mut output)
            .await?;
        if outcome.succeeded() {
            return Ok(());
        }
        let mut text = outcome.stderr.trim_end().to_string();
        let stdout = String::from_utf8_lossy(&output);
        if !stdout.trim().is_empty() {
            text = format!("{text}\n{}", stdout.trim_end());
        }
        // Belt and braces: the commands never print a password, but the value handed over
        // is known here, so it cannot slip into a message either.
        if !previous.is_empty() {
            text = text.replace(previous, "[redacted]");
        }
        for pair in &config.env {
            if let Some((_, value)) = pair.split_once('=') {
                if value.len() >= 8 {
                    text = text.replace(value, "[redacted]");
                }
            }
        }
        events(service_event(
            name,
            Phase::Failed,
            Some(format!("{} not converged", converge.what)),
        ));
        Err(EngineError::ConvergeFailed {
            service: name.to_string(),
            what: converge.what.to_string(),
            exit: outcome.exit_code.unwrap_or(-1),
            output: indent(if text.trim().is_empty() {
                "(no output)"
            } else {
                text.trim()
            }),
        })
    }

    fn health_timeout(&self, config: &ContainerConfig) -> Duration {
        self.options.health_timeout.unwrap_or_else(|| {
            let check = &config.healthcheck;
            let seconds =
                check.start_period_seconds + check.interval_seconds * check.retries.max(1);
            Duration::from_secs(u64::from(seconds.max(30)))
        })
    }

    /// Runs the service's health check until it passes, the container exits, or the
    /// timeout; the error carries the check's output and the container's last log lines.
    async fn wait_healthy(
        &self,
        config: &ContainerConfig,
        id: &str,
        events: &dyn Fn(Event),
    ) -> Result<(), EngineError> {
        self.wait_healthy_since(config, id, None, events).await
    }

    /// [`Self::wait_healthy`] for a container this deploy just created: any restart counts.
    async fn wait_healthy_fresh(
        &self,
        config: &ContainerConfig,
        id: &str,
        events: &dyn Fn(Event),
    ) -> Result<(), EngineError> {
        self.wait_healthy_since(config, id, Some(0), events).await
    }

    async fn wait_healthy_since(
        &self,
        config: &ContainerConfig,
        id: &str,
        restarts_before: Option<u64>,
        events: &dyn Fn(Event),
    ) -> Result<(), EngineError> {
        let name = config.service.name();
        events(service_event(name, Phase::CheckingHealth, None));
        let timeout = self.health_timeout(config);
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(150);
        let mut last_output = String::new();
        let mut restarts_at_start = restarts_before;
        let reason = loop {
            let details = self.runtime.inspect_container(id).await?;
            // A container that exits under a restart policy is started again by the engine:
            // it never shows as exited for long, so its restart count is what tells.
            let restarts = *restarts_at_start.get_or_insert(details.restart_count);
            if details.restart_count > restarts {
                break format!(
                    "the container exited (code {}) and the engine restarted it; it does not stay up",
                    details.exit_code.unwrap_or(-1)
                );
            }
            match details.state {
                ContainerState::Exited | ContainerState::Dead => {
                    break format!(
                        "the container exited (code {})",
                        details.exit_code.unwrap_or(-1)
                    );
                }
                ContainerState::Running => {
                    let probe = self.runtime.probe(id, &config.healthcheck).await?;
                    if probe.passed {
                        events(service_event(name, Phase::Healthy, None));
                        return Ok(());
                    }
                    last_output = probe.output;
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                break format!("its health check still fails after {} s", timeout.as_secs());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(2));
        };
        let logs = self
            .runtime
            .logs_tail(id, 20)
            .await
            .unwrap_or_else(|e| format!("(logs unavailable: {e})"));
        let mut health_output = last_output;
        if let Ok(details) = self.runtime.inspect_container(id).await {
            if let Some(last) = details.health_log.last() {
                health_output = format!("{health_output}\n(engine) {last}");
            }
        }
        if health_output.trim().is_empty() {
            health_output = "(no output)".into();
        }
        events(service_event(name, Phase::Failed, Some(reason.clone())));
        Err(EngineError::Unhealthy {
            service: name.to_string(),
            within: String::new(),
            reason,
            health_output: indent(&health_output),
            logs: indent(logs.trim_end()),
        })
    }

    /// The host's shared edge router: created or updated when needed, then linked to this
    /// client's edge network.
    #[tracing::instrument(level = "debug", name = "engine.edge", skip_all, fields(container = %edge.container.name), err(level = "debug", Display))]
    async fn ensure_edge(
        &self,
        edge: &EdgeRouter,
        events: &dyn Fn(Event),
    ) -> Result<(), EngineError> {
        let config = &edge.container;
        self.runtime.create_network(&edge.network).await?;
        let client_edge = self
            .desired
            .networks
            .iter()
            .find(|n| n.key == "edge")
            .map(|n| n.name.clone());
        // Deploys of other clients may be doing the same at this moment (the router is shared):
        // a router that vanishes or appears under our feet is looked at again, a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .converge_edge_once(edge, client_edge.as_deref(), events)
                .await
            {
                Ok(()) => break,
                Err(EngineError::NotFound { .. } | EngineError::Refused { status: 409, .. })
                    if attempt < 5 =>
                {
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let mut pause = Duration::from_millis(150);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = self
                .runtime
                .probe(&config.name, &config.healthcheck)
                .await?;
            if probe.passed {
                events(service_event("edge", Phase::Healthy, None));
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs = self
                    .runtime
                    .logs_tail(&config.name, 20)
                    .await
                    .unwrap_or_default();
                return Err(EngineError::Unhealthy {
                    service: "edge".into(),
                    within: " within 60 s".into(),
                    reason: "the shared edge router's health check fails".into(),
                    health_output: indent(&probe.output),
                    logs: indent(logs.trim_end()),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(2));
        }
    }

    async fn converge_edge_once(
        &self,
        edge: &EdgeRouter,
        client_edge: Option<&str>,
        events: &dyn Fn(Event),
    ) -> Result<(), EngineError> {
        let config = &edge.container;
        let current = match self.runtime.inspect_container(&config.name).await {
            Ok(details) => Some(details),
            Err(EngineError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let usable = current
            .as_ref()
            .is_some_and(|d| d.config_hash.as_deref() == Some(&config.config_hash));
        let started =
            if usable && current.as_ref().map(|d| d.state) == Some(ContainerState::Running) {
                true
            } else if usable {
                // Stopped: start it; if it cannot start (its configuration file was in a bundle
                // root that is gone), make it anew below.
                self.runtime.start_container(&config.name).await.is_ok()
            } else {
                false
            };
        if !started {
            if current.is_some() {
                events(service_event(
                    "edge",
                    Phase::Stopping,
                    Some("replacing".into()),
                ));
                self.runtime.remove_container(&config.name).await?;
            }
            events(service_event("edge", Phase::Creating, None));
            let id = self.runtime.create_container(config).await?;
            // Reconnect every client's edge network the old router had.
            let clients = self.runtime.list_client_containers(None).await?;
            let mut linked = BTreeSet::new();
            for (client, _) in clients {
                if !client.is_empty() && linked.insert(client.clone()) {
                    let network = format!("{client}_edge");
                    let _ = self.runtime.connect_network(&network, &id, &[]).await;
                }
            }
            self.runtime.start_container(&id).await?;
        }
        if let Some(network) = client_edge {
            self.runtime
                .connect_network(network, &config.name, &[])
                .await?;
        }
        Ok(())
    }

    /// Puts the engine back as it was before this deploy: containers it created are removed,
    /// containers it set aside are renamed back and restarted, containers it started are
    /// stopped, networks and volumes it created are removed. Volumes that existed before always
    /// stay.
    #[tracing::instrument(level = "debug", name = "engine.rollback", skip_all, fields(client = %self.desired.client_id), err(level = "debug", Display))]
    pub async fn rollback(&self, events: &dyn Fn(Event)) -> Result<(), EngineError> {
        let client = &self.desired.client_id;
        let before: BTreeSet<&str> = self
            .before
            .containers
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        // Whatever this deploy created, whether or not it got to record it. A request the
        // interrupted deploy had already sent may still complete on the engine after a first
        // look, so look again until two looks in a row find nothing new.
        let mut quiet_looks = 0;
        let mut now = self.runtime.observe(client).await?;
        for _ in 0..20 {
            let extra: Vec<&ObservedContainer> = now
                .containers
                .iter()
                .filter(|c| !before.contains(c.id.as_str()))
                .collect();
            if extra.is_empty() {
                quiet_looks += 1;
                if quiet_looks >= 2 {
                    break;
                }
            } else {
                quiet_looks = 0;
            }
            for container in extra {
                let service = container.service.as_deref().unwrap_or(&container.name);
                events(service_event(
                    service,
                    Phase::RollingBack,
                    Some(container.name.clone()),
                ));
                self.runtime.remove_container(&container.id).await?;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            now = self.runtime.observe(client).await?;
        }
        let journal = std::mem::take(&mut *self.journal.borrow_mut());
        for (old, was_running) in &journal.set_aside {
            let service = old.service.as_deref().unwrap_or(&old.name);
            self.runtime.rename_container(&old.id, &old.name).await?;
            for (_, attachment) in journal.detached.iter().filter(|(id, _)| *id == old.id) {
                self.runtime
                    .connect_network(&attachment.network, &old.id, &attachment.aliases)
                    .await?;
            }
            if *was_running {
                self.runtime.start_container(&old.id).await?;
                self.converge_restored(old, events).await?;
            }
            events(service_event(
                service,
                Phase::Restored,
                Some(old.name.clone()),
            ));
        }
        for id in &journal.started {
            self.runtime.stop_container(id).await?;
        }
        for network in journal
            .networks
            .iter()
            .filter(|n| !self.before.networks.contains(n))
        {
            if let Some(edge) = self.edge {
                self.runtime
                    .disconnect_network(network, &edge.container.name)
                    .await?;
            }
            self.runtime.remove_network(network).await?;
        }
        for volume in journal
            .volumes
            .iter()
            .filter(|v| !self.before.volumes.contains(v))
        {
            self.runtime.remove_volume(volume).await?;
        }
        Ok(())
    }
}

impl<R: ContainerRuntime> Deployment<'_, R> {
    /// A database server put back by a rollback gets its own passwords again: the replacement
    /// may already have set the new ones (a rotation), which the restored apps do not know.
    /// Its converge command is the replacement's (the same image contract), run once it is
    /// healthy, with the replacement's superuser password as the previous one.
    async fn converge_restored(
        &self,
        old: &ObservedContainer,
        events: &dyn Fn(Event),
    ) -> Result<(), EngineError> {
        let Some(config) = self
            .desired
            .containers
            .iter()
            .find(|c| Some(c.service.name()) == old.service.as_deref())
        else {
            return Ok(());
        };
        let Some(converge) = &config.converge else {
            return Ok(());
        };
        let prefix = format!("{}=", converge.previous_login);
        let previous = config
            .env
            .iter()
            .find_map(|pair| pair.strip_prefix(&prefix))
            .unwrap_or_default()
            .to_string();
        // The restored container's own health check and environment, not the replacement's.
        let restored = ContainerConfig {
            env: Vec::new(),
            ..config.clone()
        };
        self.wait_healthy(&restored, &old.id, events).await?;
        self.run_converge(&restored, converge, &old.id, &previous, events)
            .await
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Services that hold data: stopped last, after everything that writes to them.
fn is_data_store(service: Option<ServiceKind>) -> bool {
    matches!(
        service,
        Some(
            ServiceKind::Mysql
                | ServiceKind::Redis
                | ServiceKind::Postgres
                | ServiceKind::PlausibleEventsDb
                | ServiceKind::MailtrainRedis
                | ServiceKind::MailtrainMongo
        )
    )
}

/// Stops every container of the client (apps first, then data stores); data stays.
#[tracing::instrument(level = "debug", name = "engine.stop", skip_all, fields(client = %client), err(level = "debug", Display))]
pub async fn stop<R: ContainerRuntime>(
    runtime: &R,
    client: &ClientId,
    events: &dyn Fn(Event),
) -> Result<usize, EngineError> {
    let observed = runtime.observe(client).await?;
    if observed.containers.is_empty() {
        return Err(EngineError::ClientAbsent {
            client: client.to_string(),
        });
    }
    let mut stopped = 0;
    for data_wave in [false, true] {
        let wave: FuturesUnordered<_> = observed
            .containers
            .iter()
            .filter(|c| is_data_store(c.service_kind()) == data_wave)
            .filter(|c| c.state != ContainerState::Exited && c.state != ContainerState::Created)
            .map(|c| async move {
                let service = c.service.as_deref().unwrap_or(&c.name);
                events(service_event(service, Phase::Stopping, None));
                runtime.stop_container(&c.id).await?;
                events(service_event(service, Phase::Stopped, None));
                Ok::<(), EngineError>(())
            })
            .collect();
        for result in wave.collect::<Vec<_>>().await {
            result?;
            stopped += 1;
        }
    }
    Ok(stopped)
}

/// What a cleanup removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// Removes the client's containers and networks (and its volumes when asked): what a failed
/// or partial deployment left, or everything for a destroy.
#[tracing::instrument(level = "debug", name = "engine.cleanup", skip_all, fields(client = %client, delete_volumes = delete_volumes), err(level = "debug", Display))]
pub async fn cleanup<R: ContainerRuntime>(
    runtime: &R,
    client: &ClientId,
    edge_router: Option<&str>,
    delete_volumes: bool,
    events: &dyn Fn(Event),
) -> Result<Removed, EngineError> {
    let observed = runtime.observe(client).await?;
    let mut removed = Removed::default();
    let removals: FuturesUnordered<_> = observed
        .containers
        .iter()
        .map(|c| async move {
            let service = c.service.as_deref().unwrap_or(&c.name);
            events(service_event(service, Phase::Removing, None));
            runtime.remove_container(&c.id).await?;
            events(service_event(service, Phase::Removed, None));
            Ok::<String, EngineError>(c.name.clone())
        })
        .collect();
    for result in removals.collect::<Vec<_>>().await {
        removed.containers.push(result?);
    }
    for network in &observed.networks {
        if let Some(edge) = edge_router {
            runtime.disconnect_network(network, edge).await?;
        }
        runtime.remove_network(network).await?;
        removed.networks.push(network.clone());
    }
    if delete_volumes {
        for volume in &observed.volumes {
            runtime.remove_volume(volume).await?;
            removed.volumes.push(volume.clone());
        }
    }
    removed.containers.sort();
    Ok(removed)
}

/// One service's state.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    pub container: String,
    pub state: ContainerState,
    pub health: Option<Health>,
    /// The engine's one-line status, which carries the uptime (`Up 3 minutes (healthy)`).
    pub status: String,
    pub image: String,
    /// Unix seconds.
    pub created: i64,
    /// Only for single-client status (the engine's list does not carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u64>,
}

/// A client's state.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    pub client_id: String,
    pub state: OverallState,
    pub services: Vec<ServiceStatus>,
}

fn service_status(container: ObservedContainer) -> ServiceStatus {
    ServiceStatus {
        service: container.service.clone().unwrap_or_default(),
        container: container.name,
        state: container.state,
        health: container.health,
        status: container.status,
        image: container.image,
        created: container.created,
        restart_count: None,
    }
}

/// Removes the client's volumes that no service of its stack mounts (`wanted`: the stack's
/// volume names), returning their names; with `dry_run`, only names them. A volume a
/// container still uses is refused by the engine, so nothing in use is ever removed.
#[tracing::instrument(level = "debug", name = "engine.prune_volumes", skip_all, fields(client = %client, dry_run = dry_run), err(level = "debug", Display))]
pub async fn prune_volumes<R: ContainerRuntime>(
    runtime: &R,
    client: &ClientId,
    wanted: &[&str],
    dry_run: bool,
) -> Result<Vec<String>, EngineError> {
    let observed = runtime.observe(client).await?;
    let unused = stackbox_core::deploy::unused_volumes(wanted, &observed);
    if !dry_run {
        for volume in &unused {
            runtime.remove_volume(volume).await?;
        }
    }
    Ok(unused)
}

/// One client's state: one list query, then the restart counts (which only the engine's
/// per-container inspect carries) fetched concurrently.
#[tracing::instrument(level = "debug", name = "engine.status", skip_all, fields(client = %client), err(level = "debug", Display))]
pub async fn status<R: ContainerRuntime>(
    runtime: &R,
    client: &ClientId,
    expected: &[String],
) -> Result<ClientStatus, EngineError> {
    let containers: Vec<ObservedContainer> = runtime
        .list_client_containers(Some(client))
        .await?
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| !c.is_set_aside())
        .collect();
    let details: Vec<Option<ContainerDetails>> = futures_util::future::join_all(
        containers
            .iter()
            .map(|c| async move { runtime.inspect_container(&c.id).await.ok() }),
    )
    .await;
    // The engine reports "starting" until its first check after the start, up to an interval
    // later, although a deploy that just ran the same check saw the service healthy: a
    // running container the engine has not judged yet is checked once here, with its own
    // health check, so `status` right after `deploy` or `start` says what the deploy saw.
    let checked: Vec<Option<Health>> =
        futures_util::future::join_all(containers.iter().zip(&details).map(
            |(c, details)| async move {
                let check = details.as_ref().and_then(|d| d.healthcheck.as_ref())?;
                if c.state != ContainerState::Running || c.health != Some(Health::Starting) {
                    return None;
                }
                match runtime.probe(&c.id, check).await {
                    Ok(probe) if probe.passed => Some(Health::Healthy),
                    _ => None,
                }
            },
        ))
        .await;
    let containers: Vec<ObservedContainer> = containers
        .into_iter()
        .zip(checked)
        .map(|(c, checked)| ObservedContainer {
            health: checked.or(c.health),
            ..c
        })
        .collect();
    let state = overall_state(expected, &containers);
    let counts: Vec<Option<u64>> = details
        .iter()
        .map(|d| d.as_ref().map(|d| d.restart_count))
        .collect();
    let mut services: Vec<ServiceStatus> = containers
        .into_iter()
        .zip(counts)
        .map(|(c, count)| ServiceStatus {
            restart_count: count,
            ..service_status(c)
        })
        .collect();
    sort_services(&mut services);
    Ok(ClientStatus {
        client_id: client.to_string(),
        state,
        services,
    })
}

fn sort_services(services: &mut [ServiceStatus]) {
    services.sort_by_key(|s| {
        (
            ServiceKind::from_name(&s.service)
                .and_then(|k| ServiceKind::ALL.iter().position(|x| *x == k))
                .unwrap_or(usize::MAX),
            s.container.clone(),
        )
    });
}

/// Every client on the engine, from one list query.
pub async fn status_all<R: ContainerRuntime>(
    runtime: &R,
) -> Result<Vec<ClientStatus>, EngineError> {
    let mut by_client: std::collections::BTreeMap<String, Vec<ObservedContainer>> =
        std::collections::BTreeMap::new();
    for (client, container) in runtime.list_client_containers(None).await? {
        if !container.is_set_aside() {
            by_client.entry(client).or_default().push(container);
        }
    }
    Ok(by_client
        .into_iter()
        .map(|(client, containers)| {
            let state = overall_state(&[], &containers);
            let mut services: Vec<ServiceStatus> =
                containers.into_iter().map(service_status).collect();
            sort_services(&mut services);
            ClientStatus {
                client_id: client,
                state,
                services,
            }
        })
        .collect())
}
