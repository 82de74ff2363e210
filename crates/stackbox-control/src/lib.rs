//! The control plane's pipeline: every deployment is a journal of idempotent steps.
//!
//! A request (create, redeploy, stop, start, destroy) becomes a deployment row with its steps
//! in the store; a worker runs the steps in order, recording each start, result and error.
//! Every step's effect is idempotent (render writes the same bundle, the engine steps converge
//! the desired state), so a control plane killed at any moment resumes each unfinished
//! deployment at the step that was running: re-running it finishes its effect instead of
//! doubling it, and a step recorded as succeeded never runs again (the store refuses it). A
//! failed create is compensated (its containers and networks removed, volumes kept). One
//! unfinished deployment per client is enforced by the store; different clients run in
//! parallel up to a limit.
//!
//! The engine's lifecycle futures are not `Send` (they share progress callbacks), so the
//! steps run on one dedicated thread with a local task set; callers talk to it through a
//! channel and the store.

mod admin_password;
mod alerts;
mod backups;
mod changes;
mod cloud;
mod monitor;
mod onboarding;
mod probes;
mod rollout;
mod rotation;
mod steps;
mod upgrade;
mod usage;

pub use usage::{ClientSnapshot, ClientUsage, UsageSnapshot};

pub use steps::{step_names, steps_for, CloudMysql, Step, StepOutput};

pub use cloud::{CloudInfra, CloudOutcome};

pub use admin_password::{AdminPasswordReset, AppReset};

pub use onboarding::{
    retry_delay, MailFailure, Mailer, Onboarding, Page, Payments, SignupOutcome, WebhookResult,
    MAX_MAIL_ATTEMPTS,
};

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use stackbox_bundle::{BundleStore, OsRandom};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::deploy::{desired_state, OverallState};
use stackbox_core::infra::effective_provider;
use stackbox_core::operator::OperatorConfig;
use stackbox_core::stack::Placement;

use stackbox_core::secrets::{SecretKey, Secrets};
use stackbox_engine::lifecycle::{self, DeployOptions, Deployment as EngineDeployment};
use stackbox_engine::{DockerRuntime, EngineError};
use stackbox_store::{
    ClientState, Deployment, DeploymentId, DeploymentKind, DeploymentStatus, MasterKey, StepStatus,
    Store, StoreError,
};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tracing::Instrument;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Core(#[from] stackbox_core::CoreError),
    #[error(transparent)]
    Bundle(#[from] stackbox_bundle::BundleError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("domain: {domain} already belongs to client {owner}")]
    DomainTaken { domain: String, owner: ClientId },
    #[error("client {client} is not known")]
    UnknownClient { client: ClientId },
    #[error("step {step} failed: {problem}")]
    Step { step: String, problem: String },
    #[error("the control plane's worker has stopped")]
    WorkerGone,
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("no mail server (STACKBOX_SMTP_URL, STACKBOX_MAIL_FROM) is configured on this server")]
    MailDisabled,
    #[error("sign-ups are not taken here: no payment provider is configured")]
    OnboardingDisabled,
    #[error("webhook refused: {0}")]
    BadWebhook(String),
    #[error("the payment provider refused or failed: {problem}")]
    Payment { transient: bool, problem: String },
    #[error("client {client} has a deployment running; retry when it has finished")]
    Busy { client: ClientId },
    #[error(
        "client {client}'s configuration changed while this change was being made; read it \
         again and retry"
    )]
    ConfigurationChanged { client: ClientId },
    #[error("client {client} is {state}, not running; start it first")]
    NotRunning { client: ClientId, state: String },
}

/// A step changed: what the deployment's event stream carries.
#[derive(Debug, Clone, Serialize)]
pub struct StepUpdate {
    pub deployment_id: String,
    pub step: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True on the last update of a deployment.
    pub finished: bool,
    /// How far the running step is (backup events); `None` on a status change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
}

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Bundles live in `<data_dir>/bundles`.
    pub data_dir: PathBuf,
    pub operator: OperatorConfig,
    /// Deployments of different clients that run at once.
    pub max_parallel: usize,
    /// Overrides every service's health timeout.
    pub health_timeout: Option<Duration>,
    /// Sign-ups, payments, mail; off by default.
    pub onboarding: Onboarding,
    /// The `aws` provider's phase; clients on it fail their `cloud` step without one.
    pub cloud: Option<std::sync::Arc<dyn CloudInfra>>,
    /// How often the backup schedule looks for due backups, verifies and expired retention.
    pub backup_tick: Duration,
    /// The delay before an alert webhook's first retry, doubled each attempt up to an hour
    /// (30 s; tests shorten it).
    pub webhook_retry_base: Duration,
}

/// What creating a client returns: the only time its password is shown.
#[derive(Debug, Clone)]
pub struct CreatedClient {
    pub client_id: ClientId,
    pub deployment: Deployment,
    pub admin_password: String,
    pub urls: Vec<(String, String)>,
}

struct Inner {
    store: Store,
    key: MasterKey,
    config: ControlConfig,
    bundles: BundleStore,
    jobs: mpsc::UnboundedSender<DeploymentId>,
    watchers: Mutex<HashMap<String, broadcast::Sender<StepUpdate>>>,
    /// Per client: whether a deployment runs now, and a counter bumped when one starts or
    /// ends. The monitor writes a state only if neither changed while it looked.
    activity: Mutex<HashMap<ClientId, (bool, u64)>>,
    /// Woken when a mail is queued, so it goes out at once rather than at the next tick.
    mail_waiting: tokio::sync::Notify,
    /// Woken when an alert's webhook notice is queued.
    webhook_waiting: tokio::sync::Notify,
    /// What the usage collector, the probes and the alert rules last saw.
    observations: Mutex<usage::Observations>,
}

/// The control plane: cheap to clone, shared by the API handlers.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

impl Control {
    /// Starts the worker and resumes every deployment a previous run left unfinished.
    pub async fn start(
        store: Store,
        key: MasterKey,
        config: ControlConfig,
    ) -> Result<Control, ControlError> {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let bundles = BundleStore::new(config.data_dir.join("bundles"));
        let control = Control {
            inner: Arc::new(Inner {
                store,
                key,
                config,
                bundles,
                jobs,
                watchers: Mutex::new(HashMap::new()),
                activity: Mutex::new(HashMap::new()),
                mail_waiting: tokio::sync::Notify::new(),
                webhook_waiting: tokio::sync::Notify::new(),
                observations: Mutex::new(usage::Observations::default()),
            }),
        };
        let worker = control.clone();
        std::thread::Builder::new()
            .name("stackbox-pipeline".into())
            .spawn(move || worker.run_worker(receiver))
            .map_err(|_| ControlError::WorkerGone)?;
        control.forget_destroyed().await?;
        for deployment in control.inner.store.unfinished_deployments().await? {
            control.enqueue(&deployment.id)?;
        }
        Ok(control)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// `DomainTaken` when `domain` is another client's than `except`: its current domain, or
    /// a previous one whose hostnames still redirect to it (two clients would then claim the
    /// same hostnames at the edge).
    pub(crate) async fn domain_free(
        &self,
        domain: &stackbox_core::client::Domain,
        except: Option<&ClientId>,
    ) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let current = store.client_by_domain(domain).await?.into_iter();
        let redirecting = store.clients_redirecting(domain).await?.into_iter();
        match current
            .chain(redirecting)
            .find(|owner| Some(&owner.id) != except)
        {
            Some(owner) => Err(ControlError::DomainTaken {
                domain: domain.to_string(),
                owner: owner.id,
            }),
            None => Ok(()),
        }
    }

    fn enqueue(&self, id: &DeploymentId) -> Result<(), ControlError> {
        self.inner
            .jobs
            .send(id.clone())
            .map_err(|_| ControlError::WorkerGone)
    }

    /// Accepts a new client: id, secrets (encrypted in the store) and its create deployment.
    pub async fn create_client(&self, spec: ClientSpec) -> Result<CreatedClient, ControlError> {
        let store = &self.inner.store;
        self.domain_free(&spec.domain, None).await?;
        let id = match &spec.client_id {
            Some(id) => id.clone(),
            None => {
                let mut bytes = [0u8; 4];
                stackbox_core::secrets::RandomSource::fill(&mut OsRandom, &mut bytes);
                ClientId::new(&spec.company_name, u32::from_be_bytes(bytes))
            }
        };
        let mut spec = spec;
        spec.client_id = Some(id.clone());
        // A new client runs the newest release; it keeps it until an upgrade moves it.
        if spec.release.is_none() {
            spec.release = Some(self.inner.config.operator.latest_release().to_string());
        }
        self.inner
            .config
            .operator
            .release_catalog(spec.release.as_deref())?;
        let mut secrets = Secrets::new();
        secrets.fill_missing(&SecretKey::needed_for(&spec.apps()), &mut OsRandom);
        store
            .insert_client(&id, &spec, ClientState::Provisioning)
            .await?;
        store.put_secrets(&id, &secrets, &self.inner.key).await?;
        let provider = effective_provider(&spec, &self.inner.config.operator);
        let deployment = store
            .create_deployment(
                &id,
                DeploymentKind::Create,
                &names(steps_for(DeploymentKind::Create, provider)),
            )
            .await?;
        self.enqueue(&deployment.id)?;
        let admin_password = secrets
            .get(SecretKey::AdminPassword)
            .unwrap_or_default()
            .to_string();
        let urls = stackbox_core::stack::service_urls(&spec)
            .into_iter()
            .map(|u| (u.name.to_string(), u.url))
            .collect();
        Ok(CreatedClient {
            client_id: id,
            deployment,
            admin_password,
            urls,
        })
    }

    /// Queues a stop, start, redeploy or destroy of an existing client.
    pub async fn request(
        &self,
        client: &ClientId,
        kind: DeploymentKind,
    ) -> Result<Deployment, ControlError> {
        self.request_with(client, kind, None).await
    }

    /// Queues a destroy; its backups are kept for the operator's retention unless
    /// `delete_backups`.
    pub async fn request_destroy(
        &self,
        client: &ClientId,
        delete_backups: bool,
    ) -> Result<Deployment, ControlError> {
        let params = serde_json::json!({ "delete_backups": delete_backups });
        self.request_with(client, DeploymentKind::Destroy, Some(&params))
            .await
    }

    async fn request_with(
        &self,
        client: &ClientId,
        kind: DeploymentKind,
        params: Option<&serde_json::Value>,
    ) -> Result<Deployment, ControlError> {
        let store = &self.inner.store;
        let Some(record) = store.client(client).await? else {
            return Err(ControlError::UnknownClient {
                client: client.clone(),
            });
        };
        let provider = effective_provider(&record.spec()?, &self.inner.config.operator);
        let deployment = store
            .create_deployment_with_params(client, kind, &names(steps_for(kind, provider)), params)
            .await?;
        if kind == DeploymentKind::Destroy {
            store
                .set_client_state(client, ClientState::Destroying, None)
                .await?;
        }
        self.enqueue(&deployment.id)?;
        Ok(deployment)
    }

    /// Live step updates of a deployment (past ones are in the store).
    pub fn subscribe(&self, deployment: &DeploymentId) -> broadcast::Receiver<StepUpdate> {
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        watchers
            .entry(deployment.as_str().to_string())
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }

    fn set_active(&self, client: &ClientId, active: bool) {
        let mut activity = self
            .inner
            .activity
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = activity.entry(client.clone()).or_insert((false, 0));
        *entry = (active, entry.1 + 1);
    }

    /// `None` while a deployment of the client runs; else a token that changes whenever one
    /// starts or ends.
    pub(crate) fn quiet_generation(&self, client: &ClientId) -> Option<u64> {
        let activity = self
            .inner
            .activity
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match activity.get(client) {
            Some((true, _)) => None,
            Some((false, generation)) => Some(*generation),
            None => Some(0),
        }
    }

    fn publish(&self, update: StepUpdate) {
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = watchers.get(&update.deployment_id) {
            let _ = sender.send(update.clone());
        }
        if update.finished {
            watchers.remove(&update.deployment_id);
        }
    }

    /// Clients whose destroy finished but whose record a crash kept.
    async fn forget_destroyed(&self) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let filter = stackbox_store::ClientFilter {
            state: Some(ClientState::Destroying),
            plan: None,
        };
        let page = store.list_clients(filter, None, 500).await?;
        for client in page.clients {
            let latest = store.deployments_of_client(&client.id, 1).await?;
            let done = latest.first().is_some_and(|d| {
                d.kind == DeploymentKind::Destroy && d.status == DeploymentStatus::Succeeded
            });
            if done {
                self.inner.bundles.remove_client(&client.id)?;
                store.delete_client(&client.id).await?;
            }
        }
        Ok(())
    }

    fn run_worker(self, mut jobs: mpsc::UnboundedReceiver<DeploymentId>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let limit = Rc::new(Semaphore::new(self.inner.config.max_parallel.max(1)));
            tokio::task::spawn_local(monitor::follow(self.clone()));
            tokio::task::spawn_local(onboarding::run(self.clone()));
            tokio::task::spawn_local(backups::run(self.clone()));
            tokio::task::spawn_local(rollout::run(self.clone()));
            tokio::task::spawn_local(usage::run(self.clone()));
            tokio::task::spawn_local(alerts::run(self.clone()));
            tokio::task::spawn_local(alerts::deliver_webhooks(self.clone()));
            tokio::task::spawn_local(probes::run(self.clone()));
            while let Some(id) = jobs.recv().await {
                let control = self.clone();
                let limit = limit.clone();
                tokio::task::spawn_local(async move {
                    let Ok(_permit) = limit.acquire().await else {
                        return;
                    };
                    control.run_deployment(&id).await;
                });
            }
        });
    }

    async fn run_deployment(&self, id: &DeploymentId) {
        let store = &self.inner.store;
        let deployment = match store.deployment(id).await {
            Ok(Some(deployment)) => deployment,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(deployment = %id, %error, "the deployment could not be read from the journal; it runs at the next start");
                return;
            }
        };
        if deployment.status.is_finished() {
            return;
        }
        // Every log line of the run, the engine's included, carries the deployment.
        let span = tracing::info_span!(
            "deployment",
            id = %id,
            client = %deployment.client_id,
            kind = deployment.kind.as_str()
        );
        self.run_deployment_traced(deployment)
            .instrument(span)
            .await
    }

    async fn run_deployment_traced(&self, deployment: Deployment) {
        let store = &self.inner.store;
        let id = &deployment.id;
        let client = &deployment.client_id;
        let started = std::time::Instant::now();
        tracing::info!(steps = deployment.steps.len(), "deployment started");
        self.set_active(client, true);
        let outcome = self.run_steps(&deployment).await;
        let (status, error) = match &outcome {
            Ok(()) => (DeploymentStatus::Succeeded, None),
            Err((compensated, error)) => (
                if *compensated {
                    DeploymentStatus::Compensated
                } else {
                    DeploymentStatus::Failed
                },
                Some(error.clone()),
            ),
        };
        let seconds = started.elapsed().as_secs_f64();
        match &error {
            None => tracing::info!(status = status.as_str(), seconds, "deployment finished"),
            Some(error) => {
                tracing::warn!(status = status.as_str(), seconds, %error, "deployment finished")
            }
        }
        // The journal is the truth after a crash: a write it refused is logged, not dropped
        // (the deployment then runs again at the next start, its steps being idempotent).
        if let Err(failure) = store.finish_deployment(id, status, error.as_deref()).await {
            tracing::error!(error = %failure, "the deployment's end could not be recorded in the journal");
        }
        match (&outcome, deployment.kind) {
            (Ok(()), DeploymentKind::Destroy) => {
                self.forget_usage(client);
                if let Err(failure) = self.inner.bundles.remove_client(client) {
                    tracing::error!(error = %failure, "the destroyed client's bundle could not be removed");
                }
                if let Err(failure) = store.delete_client(client).await {
                    tracing::error!(error = %failure, "the destroyed client could not be deleted from the store");
                }
            }
            (Ok(()), DeploymentKind::Stop) => {
                if let Err(failure) = store
                    .set_client_state(client, ClientState::Stopped, None)
                    .await
                {
                    tracing::error!(error = %failure, "the stopped client's state could not be recorded");
                }
            }
            (Ok(()), _) => {}
            // A change to a live client that was undone put it back as it was and recorded
            // its state (a failed first deployment leaves nothing running: failed).
            (Err((true, _)), kind)
                if !matches!(kind, DeploymentKind::Create | DeploymentKind::Clone) => {}
            (Err((_, error)), _) => {
                if let Err(failure) = store
                    .set_client_state(client, ClientState::Failed, Some(error))
                    .await
                {
                    tracing::error!(error = %failure, "the failed client's state could not be recorded");
                }
            }
        }
        self.set_active(client, false);
        self.publish(StepUpdate {
            deployment_id: id.as_str().to_string(),
            step: String::new(),
            status: status.as_str(),
            error,
            finished: true,
            progress: None,
        });
    }

    /// Runs the steps not yet done; on failure says whether it was compensated.
    async fn run_steps(&self, deployment: &Deployment) -> Result<(), (bool, String)> {
        let store = &self.inner.store;
        let fail = |e: &dyn std::fmt::Display| (false, e.to_string());
        let mut context = match self.context(&deployment.client_id).await {
            Ok(context) => context,
            Err(e) => return Err(fail(&e)),
        };
        for step in &deployment.steps {
            // A name this release does not know (journaled by a newer one) stops the
            // deployment rather than skipping work.
            let Some(kind) = Step::from_name(&step.name) else {
                return Err(fail(&format!(
                    "step {}: not a step this release of StackBox knows; upgrade it",
                    step.name
                )));
            };
            match step.status {
                StepStatus::Succeeded if kind == Step::Cloud => {
                    // Resumed after the phase: its endpoint and the secrets it stored.
                    if deployment.kind != DeploymentKind::Destroy {
                        let record: steps::CloudRecord = step
                            .output
                            .clone()
                            .and_then(|output| serde_json::from_value(output).ok())
                            .unwrap_or_default();
                        if let Err(e) = self.load_cloud(&record, deployment, &mut context).await {
                            return Err(fail(&e));
                        }
                    }
                    continue;
                }
                StepStatus::Succeeded | StepStatus::Skipped => continue,
                // Interrupted while running: run it again (its effect is idempotent).
                StepStatus::Running => store.resume_step(&deployment.id, &step.name).await,
                _ => store.mark_step_running(&deployment.id, &step.name).await,
            }
            .map_err(|e| fail(&e))?;
            self.publish(StepUpdate {
                deployment_id: deployment.id.as_str().to_string(),
                step: step.name.clone(),
                status: StepStatus::Running.as_str(),
                error: None,
                finished: false,
                progress: None,
            });
            let span = tracing::info_span!("step", name = %step.name);
            let step_started = std::time::Instant::now();
            span.in_scope(|| tracing::info!("step started"));
            let outcome = self
                .execute(kind, deployment, &mut context)
                .instrument(span.clone())
                .await;
            let seconds = step_started.elapsed().as_secs_f64();
            match outcome {
                Ok(output) => {
                    span.in_scope(|| tracing::info!(seconds, "step succeeded"));
                    store
                        .mark_step_succeeded(&deployment.id, &step.name, Some(&output.to_json()))
                        .await
                        .map_err(|e| fail(&e))?;
                    self.publish(StepUpdate {
                        deployment_id: deployment.id.as_str().to_string(),
                        step: step.name.clone(),
                        status: StepStatus::Succeeded.as_str(),
                        error: None,
                        finished: false,
                        progress: None,
                    });
                }
                Err(error) => {
                    let message = error.to_string();
                    span.in_scope(|| tracing::warn!(seconds, error = %message, "step failed"));
                    if let Err(failure) = store
                        .mark_step_failed(&deployment.id, &step.name, &message)
                        .await
                    {
                        span.in_scope(|| {
                            tracing::error!(error = %failure, "the step's failure could not be recorded in the journal")
                        });
                    }
                    self.publish(StepUpdate {
                        deployment_id: deployment.id.as_str().to_string(),
                        step: step.name.clone(),
                        status: StepStatus::Failed.as_str(),
                        error: Some(message.clone()),
                        finished: false,
                        progress: None,
                    });
                    let compensated = self
                        .compensate(deployment, &context)
                        .instrument(tracing::info_span!("compensate"))
                        .await;
                    tracing::info!(compensated, "compensation finished");
                    return Err((compensated, message));
                }
            }
        }
        Ok(())
    }

    async fn context(&self, client: &ClientId) -> Result<StepContext, ControlError> {
        let store = &self.inner.store;
        let record = store
            .client(client)
            .await?
            .ok_or_else(|| ControlError::UnknownClient {
                client: client.clone(),
            })?;
        let spec = record.spec()?;
        let secrets = store
            .get_secrets(client, &self.inner.key)
            .await?
            .unwrap_or_default();
        Ok(StepContext {
            spec,
            secrets,
            placement: Placement::default(),
            docker: None,
            admin_password_set: Vec::new(),
        })
    }

    /// One step's effect. Every effect is idempotent.
    async fn execute(
        &self,
        step: Step,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<StepOutput, ControlError> {
        let operator = &self.inner.config.operator;
        let id = &deployment.client_id;
        let quiet = |_event: lifecycle::Event| {};
        let step_error = |problem: String| ControlError::Step {
            step: step.name().into(),
            problem,
        };
        match step {
            Step::Render => {
                if let Some(rotation) = rotation::Rotation::of(deployment) {
                    self.apply_rotation(&rotation, deployment, context).await?;
                }
                if let Some(upgrade) = upgrade::Upgrade::of(deployment) {
                    self.apply_upgrade(&upgrade, deployment, context).await?;
                }
                if let Some(reset) = admin_password::AdminReset::of(deployment) {
                    self.apply_admin_password(&reset, deployment, context)
                        .await?;
                }
                let rendered = self.render_for(id, context)?;
                self.inner.bundles.write_bundle(id, &rendered.bundle)?;
                Ok(StepOutput::Rendered {
                    files: rendered.bundle.files.len(),
                })
            }
            Step::Infrastructure | Step::Containers => {
                let docker = context.docker().await?;
                let desired = self.desired(id, context)?;
                let edge = self.inner.bundles.edge_router(operator)?;
                let options = DeployOptions {
                    health_timeout: self.inner.config.health_timeout,
                };
                let run =
                    EngineDeployment::prepare(&docker, &desired, edge.as_ref(), options).await?;
                if step == Step::Infrastructure {
                    run.check_images(&quiet).await?;
                    run.infrastructure(&quiet).await?;
                    Ok(StepOutput::Infrastructure {
                        networks: desired.networks.len(),
                        volumes: desired.volumes.len(),
                    })
                } else {
                    match run.services(&quiet).await {
                        Ok(outcome) => Ok(StepOutput::Containers(
                            serde_json::to_value(outcome).unwrap_or_default(),
                        )),
                        Err(error) => {
                            // Put back what this step replaced; the step's error is reported,
                            // and a rollback that failed too is logged (the engine may be left
                            // half-converged, which the operator needs to know).
                            if let Err(rollback) = run.rollback(&quiet).await {
                                tracing::error!(error = %rollback, "the containers step's rollback failed");
                            }
                            Err(error.into())
                        }
                    }
                }
            }
            Step::Health => {
                let docker = context.docker().await?;
                let expected =
                    stackbox_core::stack::service_names_placed(&context.spec, &context.placement);
                let status = lifecycle::status(&docker, id, &expected).await?;
                match status.state {
                    OverallState::Running | OverallState::Starting => {
                        self.inner
                            .store
                            .set_client_state(id, ClientState::from(status.state), None)
                            .await?;
                        Ok(StepOutput::Health {
                            state: serde_json::to_value(status.state).unwrap_or_default(),
                            services: status.services.len(),
                        })
                    }
                    other => Err(step_error(format!(
                        "the client is {} after its containers were started",
                        serde_json::to_value(other)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    ))),
                }
            }
            Step::Configure => {
                // The apps are configured through their environment at first start (admin
                // accounts, database settings, site URLs); what is left is to record where
                // the client's services answer.
                let services = stackbox_core::stack::service_urls(&context.spec)
                    .into_iter()
                    .map(|u| (u.name.to_string(), u.url))
                    .collect();
                Ok(StepOutput::Configured { services })
            }
            Step::Notify => {
                // The welcome e-mail, once per client (the outbox's dedupe key): a redeploy
                // or a resumed step does not send it again, and a client whose first
                // deployment failed gets it when a redeploy first makes it healthy.
                self.queue_welcome(id, &context.spec)
                    .await
                    .map(StepOutput::Other)
            }
            Step::Cloud => {
                let cloud = self.cloud(step.name())?;
                if deployment.kind == DeploymentKind::Destroy {
                    return cloud
                        .destroy(id)
                        .await
                        .map(StepOutput::Other)
                        .map_err(step_error);
                }
                let request = stackbox_core::infra::InfraRequest::for_client(
                    &context.spec,
                    id,
                    operator,
                    &context.secrets,
                )?;
                let outcome = cloud.apply(&request).await.map_err(step_error)?;
                let mysql = outcome.mysql.map(|(host, port, databases)| CloudMysql {
                    host,
                    port,
                    databases,
                });
                let record = steps::CloudRecord {
                    mysql: mysql.clone(),
                };
                self.load_cloud(&record, deployment, context).await?;
                Ok(StepOutput::Cloud {
                    mysql,
                    resources: outcome.record,
                })
            }
            Step::Stop => {
                let docker = context.docker().await?;
                match lifecycle::stop(&docker, id, &quiet).await {
                    Ok(stopped) => Ok(StepOutput::Stopped { stopped }),
                    // Nothing on the engine: nothing to stop.
                    Err(EngineError::ClientAbsent { .. }) => Ok(StepOutput::Stopped { stopped: 0 }),
                    Err(e) => Err(e.into()),
                }
            }
            Step::Remove => {
                let docker = context.docker().await?;
                let router = operator.ingress.edge_router_name();
                let removed = lifecycle::cleanup(&docker, id, router, true, &quiet).await?;
                Ok(StepOutput::Removed(
                    serde_json::to_value(removed).unwrap_or_default(),
                ))
            }
            Step::FinalBackup => self.final_backup(deployment, context).await,
            Step::Backup => {
                self.backup_step(deployment, context, stackbox_store::BackupReason::Manual)
                    .await
            }
            Step::SafetyBackup => self.safety_backup_step(deployment, context).await,
            Step::Restore => self.restore_step(deployment, context).await,
            Step::Verify => self.verify_step(deployment, context).await,
            Step::Clone => self.clone_step(deployment, context).await,
            Step::AdminPassword => self.admin_password_step(deployment, context).await,
        }
    }

    /// The client's stack and bundle as the context places it.
    fn render_for(
        &self,
        id: &ClientId,
        context: &StepContext,
    ) -> Result<stackbox_core::render::Rendered, ControlError> {
        Ok(stackbox_core::render::render_placed(
            &context.spec,
            id,
            &context.secrets,
            &self.inner.config.operator,
            &context.placement,
        )?)
    }

    /// The client's desired containers, with its bundle's absolute path.
    fn desired(
        &self,
        id: &ClientId,
        context: &StepContext,
    ) -> Result<stackbox_core::deploy::DesiredState, ControlError> {
        let rendered = self.render_for(id, context)?;
        let bundle_dir = std::path::absolute(self.inner.bundles.client_dir(id)).map_err(|e| {
            ControlError::Step {
                step: "render".into(),
                problem: e.to_string(),
            }
        })?;
        Ok(desired_state(
            &rendered.stack,
            &context.secrets,
            &rendered.bundle,
            &bundle_dir.display().to_string(),
            &|name| std::env::var(name).ok(),
        )?)
    }

    fn cloud(&self, step: &str) -> Result<&std::sync::Arc<dyn CloudInfra>, ControlError> {
        self.inner
            .config
            .cloud
            .as_ref()
            .ok_or_else(|| ControlError::Step {
                step: step.into(),
                problem: "this client is on the aws provider, and this server was started \
                          without it (build with `--features aws` and give the operator file \
                          an [aws] section)"
                    .into(),
            })
    }

    /// Takes the `cloud` step's output into the context: where MySQL is, no secrets in files,
    /// and the secrets as the provider's secret store holds them (what the containers get).
    async fn load_cloud(
        &self,
        record: &steps::CloudRecord,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<(), ControlError> {
        let endpoint = record
            .mysql
            .as_ref()
            .map(|m| (m.host.as_str(), m.port, &m.databases));
        context.placement = stackbox_core::infra::aws_placement(endpoint)?;
        let stored = self
            .cloud("cloud")?
            .read_secrets(&deployment.client_id)
            .await
            .map_err(|problem| ControlError::Step {
                step: "cloud".into(),
                problem,
            })?;
        if let Some(secrets) = stored {
            context.secrets = secrets;
        }
        Ok(())
    }

    /// Undoes a failed create: its containers and networks go, its volumes stay. Other kinds
    /// leave the engine as the failed step left it (the engine step rolled its own part back).
    async fn compensate(&self, deployment: &Deployment, context: &StepContext) -> bool {
        if let Some(rotation) = rotation::Rotation::of(deployment) {
            return self.undo_rotation(&rotation, deployment, context).await;
        }
        if let Some(upgrade) = upgrade::Upgrade::of(deployment) {
            return self.undo_upgrade(&upgrade, deployment, context).await;
        }
        if let Some(reset) = admin_password::AdminReset::of(deployment) {
            return self.undo_admin_password(&reset, deployment, context).await;
        }
        // A clone is a new client's first deployment too.
        if !matches!(
            deployment.kind,
            DeploymentKind::Create | DeploymentKind::Clone
        ) {
            return false;
        }
        // A failed first deployment leaves nothing billable behind: its cloud resources go too
        // (they hold no data yet).
        // A deployment with a `cloud` step is a client on the cloud provider; its destroy is
        // idempotent, so it is safe whether or not the step got to make anything.
        let on_cloud = deployment
            .steps
            .iter()
            .any(|step| Step::from_name(&step.name) == Some(Step::Cloud));
        if on_cloud {
            if let Some(cloud) = &self.inner.config.cloud {
                if let Err(problem) = cloud.destroy(&deployment.client_id).await {
                    tracing::error!(%problem, "the failed create's cloud resources could not be removed");
                    return false;
                }
            }
        }
        let Some(docker) = context.docker.clone() else {
            return true; // nothing reached the engine
        };
        match lifecycle::cleanup(
            &docker,
            &deployment.client_id,
            self.inner.config.operator.ingress.edge_router_name(),
            false,
            &|_| {},
        )
        .await
        {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(%error, "the failed create's containers and networks could not be removed");
                false
            }
        }
    }
}

/// The journal's names of a kind's steps.
fn names(steps: &[Step]) -> Vec<&'static str> {
    steps.iter().map(|step| step.name()).collect()
}

#[derive(Clone)]
struct StepContext {
    spec: ClientSpec,
    secrets: Secrets,
    /// Where MySQL is and whether bundle files may hold secrets: local until the `cloud`
    /// step says otherwise.
    placement: Placement,
    docker: Option<DockerRuntime>,
    /// The apps an admin password reset has given the new password in this run and that
    /// have not been set back (the `admin-password` step's record, for its compensation).
    admin_password_set: Vec<stackbox_core::plan::App>,
}

/// A core validation error as the API's field error (422 naming the field); other core
/// errors as they are.
fn field_error(error: stackbox_core::CoreError) -> ControlError {
    match error {
        stackbox_core::CoreError::InvalidField { field, problem } => {
            ControlError::Invalid { field, problem }
        }
        other => other.into(),
    }
}

impl StepContext {
    async fn docker(&mut self) -> Result<DockerRuntime, ControlError> {
        if let Some(docker) = &self.docker {
            return Ok(docker.clone());
        }
        let docker = DockerRuntime::connect().await?;
        self.docker = Some(docker.clone());
        Ok(docker)
    }
}
