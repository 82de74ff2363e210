//! `stackbox serve` and `stackbox token`: the control plane (store, pipeline, engine) behind
//! the REST API. This module is the glue: it implements the API's `ControlPlane` trait with
//! the store and the pipeline, converting between their types and the API's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{self, BoxStream, StreamExt};
use stackbox_api::Timestamp as ApiTime;
use stackbox_api::{
    Authenticated, ClientAction, ControlError, ControlPlane, DeploymentQuery, ListQuery,
    MetricsSnapshot, Principal,
};
use stackbox_api::{
    ClientConfiguration, ClientDetail, ClientState as ApiState, ClientSummary, CreatedClient,
    Credentials, DeploymentEnd, DeploymentEvent, DeploymentKind as ApiKind, DeploymentOutcome,
    DeploymentRef, DeploymentStatus as ApiStatus, DeploymentView, HealthStatus, Page,
    ServiceHealth, ServiceState, StepStatus as ApiStepStatus, StepView,
};
use stackbox_control::{Control, ControlConfig};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::stack::{service_urls, ADMIN_USERNAME};
use stackbox_engine::lifecycle;
use stackbox_engine::DockerRuntime;
use stackbox_store::{
    ClientFilter, ClientState, Deployment, DeploymentId, DeploymentKind, MasterKey, RequestedBy,
    Store, StoreError, TokenId, TokenRole,
};

/// Where the data directory is: `--data-dir`, `STACKBOX_DATA_DIR`, else the per-user one.
pub fn data_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("stackbox")
    })
}

pub async fn open_store(data_dir: &Path) -> Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    Ok(match std::env::var("STACKBOX_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Store::open(&url).await?,
        _ => Store::open_data_dir(data_dir).await?,
    })
}

/// The master key: `--master-key-file`, `STACKBOX_MASTER_KEY`, else `<data>/master.key`
/// (created on first start, with a warning to back it up).
pub fn master_key(data_dir: &Path, file: Option<&Path>) -> Result<MasterKey> {
    if let Some(path) = file {
        return Ok(MasterKey::load(path)?);
    }
    if let Some(key) = MasterKey::from_env() {
        return Ok(key?);
    }
    let path = data_dir.join("master.key");
    let (key, created) = MasterKey::load_or_create(&path)?;
    if created {
        eprintln!(
            "warning: generated a new master key in {} (mode 0600). Client secrets are \
             encrypted with it: back it up; without it they cannot be read.",
            path.display()
        );
    }
    Ok(key)
}

pub struct ServeArgs {
    pub listen: String,
    pub data_dir: PathBuf,
    pub master_key_file: Option<PathBuf>,
    pub max_parallel: usize,
    /// Overrides every service's health timeout (tests).
    pub health_timeout: Option<Duration>,
}

/// The server's log on stderr: `STACKBOX_LOG` (or `RUST_LOG`) targets, `info` by default.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("STACKBOX_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let targets: tracing_subscriber::filter::Targets = spec.parse().unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(targets)
        .try_init();
}

/// The alert webhook's signing secret: a file only its owner reads, not empty. Checked at
/// start so a loose or missing file is refused before any notice is signed with it.
fn check_webhook_secret_file(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let field = "alerts.webhook_secret_file";
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{field}: {} cannot be read", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{field}: {} is readable by others (mode {mode:o}); it holds the webhook's signing \
             secret: chmod 600 it",
            path.display()
        );
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("{field}: {} cannot be read", path.display()))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        anyhow::bail!(
            "{field}: {} is empty; write a long random secret into it (for example \
             `openssl rand -hex 32 > FILE`)",
            path.display()
        );
    }
    Ok(())
}

pub fn serve(operator: OperatorConfig, args: ServeArgs) -> Result<()> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // `stackbox doctor`'s checks, one log line each; a failure is logged, not refused.
        crate::doctor::log_at_start(&operator, &args.data_dir, args.master_key_file.as_deref())
            .await;
        if let Some(file) = &operator.alerts.webhook_secret_file {
            check_webhook_secret_file(std::path::Path::new(file))?;
        }
        if let Some(file) = operator
            .probes
            .ca_file
            .as_ref()
            .filter(|_| operator.probes.enabled)
        {
            let pem = std::fs::read_to_string(file)
                .with_context(|| format!("probes.ca_file: {file} cannot be read"))?;
            anyhow::ensure!(
                pem.contains("-----BEGIN CERTIFICATE-----"),
                "probes.ca_file: {file} holds no PEM certificate; give the CA's certificate \
                 (-----BEGIN CERTIFICATE-----), or leave the setting out"
            );
        }
        let store = open_store(&args.data_dir).await?;
        let key = master_key(&args.data_dir, args.master_key_file.as_deref())?;
        // Refuses a key other than the one the store's secrets were sealed with (the store
        // keeps the key's fingerprint from the first start).
        store.check_master_key(&key).await?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let onboarding = onboarding(operator.onboarding.clone(), listener.local_addr()?)?;
        if operator.alerts.email.is_some() && operator.onboarding.mail.is_none() {
            tracing::warn!(
                "[alerts] email is set but no SMTP server is configured (STACKBOX_SMTP_URL): \
                 alert notices will not be mailed"
            );
        }
        let operator_for_cloud = operator.clone();
        let control = Control::start(
            store.clone(),
            key,
            ControlConfig {
                data_dir: args.data_dir.clone(),
                operator,
                max_parallel: args.max_parallel,
                health_timeout: args.health_timeout,
                onboarding,
                cloud: crate::cloud::adapter(&operator_for_cloud).await?,
                // How often the backup schedule looks (the schedule itself is `[backup]`).
                backup_tick: std::env::var("STACKBOX_BACKUP_TICK_SECONDS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(std::time::Duration::from_secs)
                    .unwrap_or(std::time::Duration::from_secs(60)),
                webhook_retry_base: std::env::var("STACKBOX_WEBHOOK_RETRY_BASE_SECONDS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|s| *s > 0)
                    .map(std::time::Duration::from_secs)
                    .unwrap_or(std::time::Duration::from_secs(30)),
            },
        )
        .await?;
        eprintln!(
            "stackbox serve: listening on http://{} (data: {})",
            listener.local_addr()?,
            args.data_dir.display()
        );
        let served = Served {
            control,
            store,
            operator: operator_for_cloud,
            docker: tokio::sync::Mutex::new(None),
            outcome_floor: std::sync::Mutex::new(BTreeMap::new()),
            unknown_tokens: std::sync::Mutex::new(HashMap::new()),
            list_cache: std::sync::Mutex::new(HashMap::new()),
        };
        let options = stackbox_api::ApiOptions {
            metrics_access: if served.operator.monitor.metrics_need_operator_token {
                stackbox_api::MetricsAccess::Operator
            } else {
                stackbox_api::MetricsAccess::Public
            },
            ..stackbox_api::ApiOptions::default()
        };
        stackbox_api::serve_with(listener, Arc::new(served), options, shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `stackbox token create`.
pub fn create_token(data_dir: &Path, client: Option<&str>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = open_store(data_dir).await?;
        let (role, client) = match client {
            Some(id) => {
                let id = ClientId::parse(id)?;
                if store.client(&id).await?.is_none() {
                    bail!("client {id} is not known to this control plane");
                }
                (TokenRole::Client, Some(id))
            }
            None => (TokenRole::Operator, None),
        };
        let token = store.create_token(role, client.as_ref()).await?;
        println!("{}", token.token.expose());
        eprintln!(
            "token {} ({}) created; it is shown once and stored only as a hash",
            token.info.id.as_str(),
            role.as_str()
        );
        Ok(())
    })
}

/// `stackbox token list`: every token of the data directory's store, never a secret.
pub fn list_tokens(data_dir: &Path, json: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = open_store(data_dir).await?;
        let tokens = store.tokens().await?;
        if json {
            let list = stackbox_api::TokenList {
                tokens: tokens.iter().map(token_view).collect(),
            };
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(());
        }
        if tokens.is_empty() {
            eprintln!("no tokens; make one with `stackbox token create --operator`");
            return Ok(());
        }
        println!(
            "{:<20} {:<9} {:<32} {:<24} LAST USED",
            "ID", "ROLE", "CLIENT", "CREATED"
        );
        for token in &tokens {
            println!(
                "{:<20} {:<9} {:<32} {:<24} {}",
                token.id.as_str(),
                token.role.as_str(),
                token.client_id.as_ref().map_or("-", |c| c.as_str()),
                token.created_at.to_string(),
                token
                    .last_used_at
                    .map_or_else(|| "never".to_string(), |t| t.to_string())
            );
        }
        Ok(())
    })
}

/// `stackbox token revoke ID`: the token stops working at once, also for a running server
/// (which keeps no verified token).
pub fn revoke_token(data_dir: &Path, id: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let id = TokenId::parse(id).with_context(|| {
            format!("{id:?} is not a token id; `stackbox token list` shows them (tok_…)")
        })?;
        let store = open_store(data_dir).await?;
        store.revoke_token(&id).await.map_err(|error| match error {
            StoreError::TokenNotFound { .. } => anyhow::anyhow!(
                "token {id} is not known to this control plane; `stackbox token list` shows \
                 the tokens"
            ),
            other => other.into(),
        })?;
        eprintln!("token {id} revoked; it is refused from the next request on");
        Ok(())
    })
}

fn token_view(token: &stackbox_store::TokenRecord) -> stackbox_api::TokenView {
    stackbox_api::TokenView {
        id: token.id.as_str().to_string(),
        role: match token.role {
            TokenRole::Operator => stackbox_api::TokenRole::Operator,
            TokenRole::Client => stackbox_api::TokenRole::Client,
        },
        client_id: token.client_id.as_ref().map(|c| c.as_str().to_string()),
        created_at: time(token.created_at),
        last_used_at: token.last_used_at.map(time),
    }
}

struct Served {
    control: Control,
    store: Store,
    operator: OperatorConfig,
    /// One engine connection for live health, made on first use (connecting negotiates the
    /// API version, a round trip per request otherwise); an engine that did not answer is
    /// asked again next time.
    docker: tokio::sync::Mutex<Option<DockerRuntime>>,
    /// The highest count seen per outcome: a destroy removes the client's deployment rows,
    /// and a Prometheus counter must not go down while the process runs.
    outcome_floor: std::sync::Mutex<BTreeMap<DeploymentOutcome, u64>>,
    /// Tokens recently found unknown (by SHA-256 of the token, never the token), so that a
    /// client retrying a bad token is not one database read per request; entries live
    /// [`UNKNOWN_TOKEN_TTL`]. Verified tokens are never kept: a revoked token is refused on
    /// the next request, whichever process revoked it (the API, or `stackbox token revoke`
    /// beside the server).
    unknown_tokens: std::sync::Mutex<HashMap<[u8; 32], Instant>>,
    /// Pages of `GET /v1/clients` for up to [`LIST_CACHE_TTL`], dropped whenever a request
    /// through this API changes a client; changes the pipeline and the monitor make show
    /// within that time.
    list_cache: std::sync::Mutex<HashMap<String, (Page<ClientSummary>, Instant)>>,
}

const LIST_CACHE_TTL: Duration = Duration::from_secs(1);

const UNKNOWN_TOKEN_TTL: Duration = Duration::from_secs(30);

/// The most unknown tokens remembered.
const UNKNOWN_TOKENS_KEPT: usize = 10_000;

fn internal(error: impl std::error::Error + 'static) -> ControlError {
    ControlError::internal(&error)
}

fn store_error(error: StoreError) -> ControlError {
    match error {
        StoreError::ClientBusy { .. } => {
            ControlError::Conflict("the client has another deployment in progress".into())
        }
        StoreError::DomainTaken { domain, owner } => {
            ControlError::Conflict(format!("domain {domain} already belongs to client {owner}"))
        }
        StoreError::ClientExists { client } => {
            ControlError::Conflict(format!("client {client} already exists"))
        }
        StoreError::ClientNotFound { .. } => ControlError::NotFound,
        StoreError::RolloutNotFound { .. } => ControlError::NotFound,
        error @ StoreError::RolloutRunning { .. } => ControlError::Conflict(error.to_string()),
        other => internal(other),
    }
}

fn control_error(error: stackbox_control::ControlError) -> ControlError {
    match error {
        stackbox_control::ControlError::Store(e) => store_error(e),
        stackbox_control::ControlError::DomainTaken { domain, owner } => {
            ControlError::Conflict(format!("domain {domain} already belongs to client {owner}"))
        }
        stackbox_control::ControlError::UnknownClient { .. } => ControlError::NotFound,
        stackbox_control::ControlError::WorkerGone => {
            ControlError::Unavailable("the pipeline worker has stopped".into())
        }
        stackbox_control::ControlError::OnboardingDisabled => ControlError::NotFound,
        error @ stackbox_control::ControlError::MailDisabled => {
            ControlError::Conflict(error.to_string())
        }
        stackbox_control::ControlError::BadWebhook(problem) => ControlError::BadRequest(problem),
        stackbox_control::ControlError::Invalid { field, problem } => {
            ControlError::Invalid { field, problem }
        }
        error @ stackbox_control::ControlError::ConfigurationChanged { .. } => {
            ControlError::Conflict(error.to_string())
        }
        error @ stackbox_control::ControlError::NotRunning { .. } => {
            ControlError::Conflict(error.to_string())
        }
        // Stripe retries a webhook answered 503; a buyer is told to retry.
        error @ (stackbox_control::ControlError::Busy { .. }
        | stackbox_control::ControlError::Payment {
            transient: true, ..
        }) => ControlError::Unavailable(error.to_string()),
        other => internal(other),
    }
}

fn time(t: stackbox_store::Timestamp) -> ApiTime {
    ApiTime::from_unix_millis(t.unix_millis())
}

pub(crate) fn alert_view(record: &stackbox_store::AlertRecord) -> stackbox_api::AlertView {
    let state = match (record.fired_at, record.resolved_at) {
        (_, Some(_)) => "resolved",
        (Some(_), None) => "firing",
        (None, None) => "pending",
    };
    stackbox_api::AlertView {
        id: record.id.clone(),
        key: record.key.clone(),
        kind: record.kind.as_str().to_string(),
        state: state.to_string(),
        client_id: record.client_id.clone(),
        summary: record.summary.clone(),
        since: time(record.since),
        fired_at: record.fired_at.map(time),
        resolved_at: record.resolved_at.map(time),
    }
}

fn api_state(state: ClientState) -> ApiState {
    ApiState::from_name(state.as_str()).unwrap_or(ApiState::Failed)
}

fn view(deployment: &Deployment) -> DeploymentView {
    DeploymentView {
        id: deployment.id.as_str().to_string(),
        client_id: deployment.client_id.clone(),
        kind: api_kind(deployment.kind),
        status: ApiStatus::from_name(deployment.status.as_str()).unwrap_or(ApiStatus::Failed),
        steps: deployment.steps.iter().map(step_view).collect(),
        created_at: time(deployment.created_at),
        started_at: deployment.started_at.map(time),
        finished_at: deployment.finished_at.map(time),
        error: deployment.error.clone(),
    }
}

/// The store's kind of deployment as the API names it: exhaustive, so a new kind is a compile
/// error here until it is mapped.
fn api_kind(kind: DeploymentKind) -> ApiKind {
    match kind {
        DeploymentKind::Create => ApiKind::Create,
        DeploymentKind::Redeploy => ApiKind::Redeploy,
        DeploymentKind::Stop => ApiKind::Stop,
        DeploymentKind::Start => ApiKind::Start,
        DeploymentKind::Destroy => ApiKind::Destroy,
        DeploymentKind::Backup => ApiKind::Backup,
        DeploymentKind::Restore => ApiKind::Restore,
        DeploymentKind::Verify => ApiKind::Verify,
        DeploymentKind::Clone => ApiKind::Clone,
    }
}

/// Who asked, as the control plane journals it.
fn requested(caller: &Authenticated) -> Result<RequestedBy, ControlError> {
    let id = TokenId::parse(&caller.token_id).map_err(internal)?;
    let role = match caller.principal {
        Principal::Operator => TokenRole::Operator,
        Principal::Client(_) => TokenRole::Client,
    };
    Ok(RequestedBy::Token { id, role })
}

/// A deployment's parameters holding only who asked, for the requests that add their own.
fn requested_params(
    caller: &Authenticated,
) -> Result<serde_json::Map<String, serde_json::Value>, ControlError> {
    let mut params = serde_json::Map::new();
    params.insert(
        stackbox_store::REQUESTED_BY_PARAM.to_string(),
        requested(caller)?.to_json(),
    );
    Ok(params)
}

/// A rollout as the API shows it.
fn rollout_view(rollout: &stackbox_store::RolloutRecord) -> stackbox_api::RolloutView {
    use stackbox_api::{RolloutCounts, RolloutMemberStatus, RolloutMemberView, RolloutStatus};
    use stackbox_core::rollout::MemberStatus;
    let mut counts = RolloutCounts::default();
    let clients = rollout
        .members
        .iter()
        .map(|member| {
            let (status, count) = match member.status {
                MemberStatus::Pending => (RolloutMemberStatus::Pending, &mut counts.pending),
                MemberStatus::Running => (RolloutMemberStatus::Running, &mut counts.running),
                MemberStatus::Succeeded => (RolloutMemberStatus::Succeeded, &mut counts.succeeded),
                MemberStatus::Failed => (RolloutMemberStatus::Failed, &mut counts.failed),
                MemberStatus::Skipped => (RolloutMemberStatus::Skipped, &mut counts.skipped),
            };
            *count += 1;
            RolloutMemberView {
                client_id: member.client_id.clone(),
                wave: member.wave,
                from_release: member.from_release.clone(),
                status,
                deployment_id: member
                    .deployment_id
                    .as_ref()
                    .map(|d| d.as_str().to_string()),
                detail: member.detail.clone(),
            }
        })
        .collect();
    stackbox_api::RolloutView {
        id: rollout.id.as_str().to_string(),
        to: rollout.to_release.clone(),
        status: match rollout.status {
            stackbox_store::RolloutStatus::Running => RolloutStatus::Running,
            stackbox_store::RolloutStatus::Halted => RolloutStatus::Halted,
            stackbox_store::RolloutStatus::Succeeded => RolloutStatus::Succeeded,
        },
        canary: rollout.settings.canary,
        growth: rollout.settings.growth,
        max_wave: rollout.settings.max_wave,
        concurrency: rollout.settings.concurrency,
        halt_reason: rollout.halt_reason.clone(),
        created_at: time(rollout.created_at),
        finished_at: rollout.finished_at.map(time),
        counts,
        clients,
    }
}

/// A deployment in a client's history.
fn summary(deployment: &Deployment) -> stackbox_api::DeploymentSummary {
    use stackbox_api::{RequesterKind, TokenRole as ApiRole};
    let full = view(deployment);
    stackbox_api::DeploymentSummary {
        steps: stackbox_api::StepsSummary::of(&full.steps),
        id: full.id,
        kind: full.kind,
        status: full.status,
        created_at: full.created_at,
        started_at: full.started_at,
        finished_at: full.finished_at,
        error: full.error,
        requested_by: deployment.requested_by().map(|by| match by {
            RequestedBy::Token { id, role } => stackbox_api::RequestedBy {
                by: RequesterKind::Token,
                token_id: Some(id.as_str().to_string()),
                role: Some(match role {
                    TokenRole::Operator => ApiRole::Operator,
                    TokenRole::Client => ApiRole::Client,
                }),
            },
            RequestedBy::Schedule => stackbox_api::RequestedBy {
                by: RequesterKind::Schedule,
                token_id: None,
                role: None,
            },
        }),
        changes: changes_view(deployment),
    }
}

fn changes_view(deployment: &Deployment) -> BTreeMap<String, stackbox_api::FieldChange> {
    deployment
        .changes()
        .into_iter()
        .map(|(field, change)| {
            (
                field,
                stackbox_api::FieldChange {
                    from: change.from,
                    to: change.to,
                },
            )
        })
        .collect()
}

fn backup_view(record: &stackbox_store::BackupRecord) -> stackbox_api::BackupView {
    use stackbox_api::{BackupReason as ApiReason, BackupStatus as ApiBackupStatus};
    use stackbox_store::{BackupReason, BackupStatus};
    stackbox_api::BackupView {
        id: record.id.as_str().to_string(),
        snapshot: record.snapshot_id.clone(),
        reason: match record.reason {
            BackupReason::Manual => ApiReason::Manual,
            BackupReason::Scheduled => ApiReason::Scheduled,
            BackupReason::Safety => ApiReason::Safety,
            BackupReason::PreDestroy => ApiReason::PreDestroy,
        },
        status: match record.status {
            BackupStatus::Running => ApiBackupStatus::Running,
            BackupStatus::Succeeded => ApiBackupStatus::Succeeded,
            BackupStatus::Failed => ApiBackupStatus::Failed,
        },
        started_at: time(record.started_at),
        finished_at: record.finished_at.map(time),
        error: record.error.clone(),
        bytes_added: record.bytes_added,
        bytes_total: record.bytes_total,
        files_total: record.files_total,
        verified_at: record.verified_at.map(time),
        verify_ok: record.verify_ok,
        verify_error: record.verify_error.clone(),
        deployment_id: record
            .deployment_id
            .as_ref()
            .map(|d| d.as_str().to_string()),
    }
}

fn step_view(step: &stackbox_store::Step) -> StepView {
    StepView {
        name: step.name.clone(),
        status: ApiStepStatus::from_name(step.status.as_str()).unwrap_or(ApiStepStatus::Failed),
        attempts: step.attempts.max(0) as u32,
        started_at: step.started_at.map(time),
        finished_at: step.finished_at.map(time),
        error: step.error.clone(),
        output: step.output.clone(),
    }
}

impl Served {
    async fn docker(&self) -> Option<DockerRuntime> {
        let mut slot = self.docker.lock().await;
        if slot.is_none() {
            *slot = DockerRuntime::connect().await.ok();
        }
        slot.clone()
    }

    async fn list_clients_from_store(
        &self,
        query: ListQuery,
    ) -> Result<Page<ClientSummary>, ControlError> {
        let filter = ClientFilter {
            state: query.state.and_then(|s| ClientState::from_name(s.as_str())),
            plan: query.plan,
        };
        let page = self
            .store
            .list_clients(filter, query.after.as_ref(), query.limit)
            .await
            .map_err(store_error)?;
        Ok(Page {
            items: page
                .clients
                .into_iter()
                .map(|c| ClientSummary {
                    client_id: c.id,
                    company_name: c.company_name.as_str().to_string(),
                    domain: c.domain.to_string(),
                    plan: c.plan,
                    state: api_state(c.state),
                    created_at: time(c.created_at),
                })
                .collect(),
            next: page.next.map(|id| id.to_string()),
        })
    }

    fn forget_lists(&self) {
        self.list_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    async fn verify_token_in_store(
        &self,
        bearer: &str,
    ) -> Result<Option<Authenticated>, ControlError> {
        // A store that cannot answer is a 503, not a 401: the caller keeps its token.
        let Some(info) = self
            .store
            .verify_token(bearer)
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?
        else {
            return Ok(None);
        };
        let principal = match (info.role, info.client_id) {
            (TokenRole::Operator, _) => Principal::Operator,
            (TokenRole::Client, Some(client)) => Principal::Client(client),
            (TokenRole::Client, None) => return Ok(None),
        };
        Ok(Some(Authenticated {
            token_id: info.id.as_str().to_string(),
            principal,
        }))
    }
}

impl Served {
    /// A client's backups in brief: last success, last verified restore, and whether it is
    /// missing a backup (its last success, or its creation, is older than the schedule allows).
    async fn backup_state(
        &self,
        record: &stackbox_store::ClientRecord,
    ) -> Result<stackbox_api::BackupState, ControlError> {
        let last = self
            .store
            .latest_succeeded_backup(&record.id)
            .await
            .map_err(store_error)?;
        let verified = self
            .store
            .last_verification(&record.id)
            .await
            .map_err(store_error)?;
        let now = stackbox_store::Timestamp::now().unix_millis() / 1000;
        let missing = record.state == ClientState::Running
            && stackbox_core::backup::backup_missing(
                last.as_ref().map(|r| r.started_at.unix_millis() / 1000),
                record.created_at.unix_millis() / 1000,
                now,
                self.operator.backup.every_hours,
            );
        Ok(stackbox_api::BackupState {
            last_success_at: last.as_ref().map(|r| time(r.started_at)),
            last_verified_at: verified.as_ref().and_then(|r| r.verified_at.map(time)),
            last_verify_ok: verified.as_ref().and_then(|r| r.verify_ok),
            missing,
        })
    }
}

impl ControlPlane for Served {
    async fn verify_token(&self, bearer: &str) -> Result<Option<Authenticated>, ControlError> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(bearer.as_bytes()).into();
        {
            let unknown = self
                .unknown_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if unknown
                .get(&key)
                .is_some_and(|at| at.elapsed() < UNKNOWN_TOKEN_TTL)
            {
                return Ok(None);
            }
        }
        // Every known token is looked up: one indexed read, and a write at most once a
        // minute per token (its last use).
        let verified = self.verify_token_in_store(bearer).await?;
        if verified.is_none() {
            let mut unknown = self
                .unknown_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if unknown.len() >= UNKNOWN_TOKENS_KEPT {
                unknown.retain(|_, at| at.elapsed() < UNKNOWN_TOKEN_TTL);
            }
            if unknown.len() < UNKNOWN_TOKENS_KEPT {
                unknown.insert(key, Instant::now());
            }
        }
        Ok(verified)
    }

    async fn create_client(&self, spec: ClientSpec) -> Result<CreatedClient, ControlError> {
        let created = self
            .control
            .create_client(spec)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(CreatedClient {
            client_id: created.client_id,
            deployment_id: created.deployment.id.as_str().to_string(),
            services: created.urls.into_iter().collect(),
            credentials: Credentials {
                admin_username: ADMIN_USERNAME.to_string(),
                admin_password: created.admin_password,
            },
        })
    }

    async fn list_clients(&self, query: ListQuery) -> Result<Page<ClientSummary>, ControlError> {
        let key = format!("{query:?}");
        if let Some((page, at)) = self
            .list_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if at.elapsed() < LIST_CACHE_TTL {
                return Ok(page.clone());
            }
        }
        let page = self.list_clients_from_store(query).await?;
        let mut cache = self.list_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 1_000 {
            cache.clear();
        }
        cache.insert(key, (page.clone(), Instant::now()));
        Ok(page)
    }
    async fn get_client(&self, id: &ClientId) -> Result<ClientDetail, ControlError> {
        let record = self
            .store
            .client(id)
            .await
            .map_err(store_error)?
            .ok_or(ControlError::NotFound)?;
        let spec = record.spec().map_err(store_error)?;
        let expected = stackbox_core::infra::expected_service_names(&spec, &self.operator);
        // Live health from the engine: one list query (and restart counts). An engine that
        // does not answer leaves the list empty rather than failing the request.
        let mut health = Vec::new();
        if let Some(docker) = self.docker().await {
            if let Ok(status) = lifecycle::status(&docker, id, &expected).await {
                for service in status.services {
                    health.push(ServiceHealth {
                        service: service.service.clone(),
                        state: serde_json::to_value(service.state)
                            .ok()
                            .and_then(|v| v.as_str().and_then(ServiceState::from_name))
                            .unwrap_or(ServiceState::Dead),
                        health: service.health.and_then(|h| {
                            serde_json::to_value(h)
                                .ok()
                                .and_then(|v| v.as_str().and_then(HealthStatus::from_name))
                        }),
                        restart_count: service.restart_count,
                        detail: Some(service.status),
                    });
                }
            }
        }
        let latest = self
            .store
            .deployments_of_client(id, 1)
            .await
            .map_err(store_error)?;
        let on_host = stackbox_core::infra::effective_provider(&spec, &self.operator)
            == stackbox_core::infra::ProviderKind::Local;
        let backup = if on_host {
            Some(self.backup_state(&record).await?)
        } else {
            None
        };
        Ok(ClientDetail {
            client_id: record.id.clone(),
            configuration: ClientConfiguration::from_spec(&spec),
            state: api_state(record.state),
            state_reason: record.state_reason.clone(),
            services: service_urls(&spec)
                .into_iter()
                .map(|u| (u.name.to_string(), u.url))
                .collect(),
            health,
            latest_deployment_id: latest.first().map(|d| d.id.as_str().to_string()),
            created_at: time(record.created_at),
            updated_at: time(record.updated_at),
            backup,
        })
    }

    async fn client_action(
        &self,
        id: &ClientId,
        action: ClientAction,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        let kind = match action {
            ClientAction::Stop => DeploymentKind::Stop,
            ClientAction::Start => DeploymentKind::Start,
            ClientAction::Redeploy => DeploymentKind::Redeploy,
        };
        let deployment = self
            .control
            .request_by(id, kind, &requested(requested_by)?)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(DeploymentRef {
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn delete_client(
        &self,
        id: &ClientId,
        delete_backups: bool,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        let deployment = self
            .control
            .request_destroy_by(id, delete_backups, &requested(requested_by)?)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(DeploymentRef {
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn client_spec(&self, id: &ClientId) -> Result<ClientSpec, ControlError> {
        self.store
            .client(id)
            .await
            .map_err(store_error)?
            .ok_or(ControlError::NotFound)?
            .spec()
            .map_err(store_error)
    }

    async fn update_client(
        &self,
        id: &ClientId,
        spec: ClientSpec,
        requested_by: &Authenticated,
    ) -> Result<Option<stackbox_api::ClientChange>, ControlError> {
        let deployment = self
            .control
            .update_client(id, spec, &requested(requested_by)?)
            .await
            .map_err(control_error)?;
        let Some(deployment) = deployment else {
            return Ok(None);
        };
        self.forget_lists();
        Ok(Some(stackbox_api::ClientChange {
            deployment_id: deployment.id.as_str().to_string(),
            changes: changes_view(&deployment),
        }))
    }

    async fn client_deployments(
        &self,
        id: &ClientId,
        query: DeploymentQuery,
    ) -> Result<Page<stackbox_api::DeploymentSummary>, ControlError> {
        let after = query
            .after
            .as_deref()
            .map(DeploymentId::parse)
            .transpose()
            .map_err(|_| ControlError::Invalid {
                field: "after".into(),
                problem: "is not a deployment id; pass the `next` of the previous page".into(),
            })?;
        if self.store.client(id).await.map_err(store_error)?.is_none() {
            return Err(ControlError::NotFound);
        }
        let page = self
            .store
            .deployment_page_of_client(id, after.as_ref(), query.limit)
            .await
            .map_err(store_error)?;
        Ok(Page {
            items: page.deployments.iter().map(summary).collect(),
            next: page.next.map(|id| id.as_str().to_string()),
        })
    }

    async fn list_tokens(&self) -> Result<stackbox_api::TokenList, ControlError> {
        let tokens = self.store.tokens().await.map_err(store_error)?;
        Ok(stackbox_api::TokenList {
            tokens: tokens.iter().map(token_view).collect(),
        })
    }

    async fn revoke_token(&self, id: &str) -> Result<(), ControlError> {
        let id = TokenId::parse(id).map_err(|_| ControlError::NotFound)?;
        match self.store.revoke_token(&id).await {
            Ok(()) => Ok(()),
            Err(StoreError::TokenNotFound { .. }) => Err(ControlError::NotFound),
            Err(other) => Err(store_error(other)),
        }
    }

    async fn get_deployment(&self, id: &str) -> Result<DeploymentView, ControlError> {
        let id = DeploymentId::parse(id).map_err(|_| ControlError::NotFound)?;
        let deployment = self
            .store
            .deployment(&id)
            .await
            .map_err(store_error)?
            .ok_or(ControlError::NotFound)?;
        Ok(view(&deployment))
    }

    async fn deployment_events(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, DeploymentEvent>, ControlError> {
        let id = DeploymentId::parse(id).map_err(|_| ControlError::NotFound)?;
        // Subscribe before reading, so no change falls between the two.
        let updates = self.control.subscribe(&id);
        let deployment = self
            .store
            .deployment(&id)
            .await
            .map_err(store_error)?
            .ok_or(ControlError::NotFound)?;
        let end = |d: &Deployment| {
            DeploymentEvent::End(DeploymentEnd {
                status: ApiStatus::from_name(d.status.as_str()).unwrap_or(ApiStatus::Failed),
                finished_at: d.finished_at.map(time),
                error: d.error.clone(),
            })
        };
        let mut first: Vec<DeploymentEvent> = deployment
            .steps
            .iter()
            .map(|s| DeploymentEvent::Step(step_view(s)))
            .collect();
        if deployment.status.is_finished() {
            first.push(end(&deployment));
            return Ok(stream::iter(first).boxed());
        }
        let store = self.store.clone();
        let live = stream::unfold(
            (updates, store, id, false),
            move |(mut updates, store, id, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let update = match updates.recv().await {
                        Ok(update) => update,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    };
                    // Progress needs no read of the journal.
                    if let Some(progress) = update.progress {
                        let event = DeploymentEvent::Progress(stackbox_api::StepProgress {
                            step: update.step,
                            progress,
                        });
                        return Some((event, (updates, store, id, false)));
                    }
                    let current = store.deployment(&id).await.ok().flatten()?;
                    if update.finished {
                        let event = end(&current);
                        return Some((event, (updates, store, id, true)));
                    }
                    if let Some(step) = current.step(&update.step) {
                        let event = DeploymentEvent::Step(step_view(step));
                        return Some((event, (updates, store, id, false)));
                    }
                }
            },
        );
        Ok(stream::iter(first).chain(live).boxed())
    }

    async fn metrics(&self) -> Result<MetricsSnapshot, ControlError> {
        let mut snapshot = MetricsSnapshot::default();
        for (state, count) in self
            .store
            .count_clients_by_state()
            .await
            .map_err(store_error)?
        {
            snapshot.clients_by_state.insert(api_state(state), count);
        }
        for (status, count) in self
            .store
            .count_deployments_by_status()
            .await
            .map_err(store_error)?
        {
            if let Some(outcome) = DeploymentOutcome::from_name(status.as_str()) {
                let mut floor = self.outcome_floor.lock().unwrap_or_else(|p| p.into_inner());
                let seen = floor.entry(outcome).or_insert(0);
                *seen = (*seen).max(count);
                snapshot.deployments_by_outcome.insert(outcome, *seen);
            }
        }
        for deployment in self
            .store
            .finished_deployments(None)
            .await
            .map_err(store_error)?
        {
            if let Some(started) = deployment.started_at {
                snapshot
                    .deployment_duration
                    .observe(deployment.finished_at.seconds_since(started));
            }
        }
        let mut steps: BTreeMap<String, stackbox_api::DurationHistogram> = BTreeMap::new();
        for step in self.store.finished_steps(None).await.map_err(store_error)? {
            steps
                .entry(step.name.clone())
                .or_default()
                .observe(step.finished_at.seconds_since(step.started_at));
        }
        snapshot.step_duration = steps;
        for (status, count) in self
            .store
            .count_mail_by_status()
            .await
            .map_err(store_error)?
        {
            if let Some(name) = stackbox_api::MAIL_STATUSES
                .into_iter()
                .find(|name| *name == status.as_str())
            {
                snapshot.mail_by_status.insert(name, count);
            }
        }
        for (status, count) in self
            .store
            .count_backups_by_status()
            .await
            .map_err(store_error)?
        {
            if let Some(name) = ["running", "succeeded", "failed"]
                .into_iter()
                .find(|name| *name == status.as_str())
            {
                snapshot.backups_by_status.insert(name, count);
            }
        }
        // Missing a backup: running clients on this host whose last success (or creation) is
        // older than the schedule allows. One query for the times, a page walk for the clients.
        let last: std::collections::HashMap<ClientId, i64> = self
            .store
            .last_succeeded_backup_times()
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|(id, at)| (id, at.unix_millis() / 1000))
            .collect();
        let now = stackbox_store::Timestamp::now().unix_millis() / 1000;
        let mut usage = self.control.usage_snapshot();
        let mut probes = self.control.probe_snapshot();
        snapshot.engine_disk = usage.engine_disk;
        let mut after: Option<ClientId> = None;
        loop {
            let filter = ClientFilter {
                state: None,
                plan: None,
            };
            let page = self
                .store
                .list_clients(filter, after.as_ref(), 500)
                .await
                .map_err(store_error)?;
            for client in &page.clients {
                let since = client.created_at.unix_millis() / 1000;
                let last_success = last.get(&client.id).copied();
                let readings = usage.clients.remove(client.id.as_str()).unwrap_or_default();
                snapshot.clients.push(stackbox_api::ClientMetrics {
                    client: client.id.to_string(),
                    state: client.state.as_str(),
                    last_backup_age_seconds: last_success.map(|at| (now - at).max(0) as f64),
                    services: readings
                        .services
                        .iter()
                        .map(crate::monitoring::service_view)
                        .collect(),
                    volumes: readings.volumes,
                    probes: probes
                        .remove(client.id.as_str())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(hostname, probe)| stackbox_api::ProbeMetrics {
                            hostname,
                            up: probe.last.is_up(),
                            duration_seconds: probe.last.latency_ms as f64 / 1000.0,
                            certificate_expires_at: probe.last.certificate_expires_at,
                        })
                        .collect(),
                });
                if client.state == ClientState::Running
                    && stackbox_core::backup::backup_missing(
                        last_success,
                        since,
                        now,
                        self.operator.backup.every_hours,
                    )
                {
                    snapshot.clients_missing_backup += 1;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        snapshot.oldest_successful_backup_age_seconds = last
            .values()
            .min()
            .map(|oldest| (now - oldest).max(0) as f64);
        Ok(snapshot)
    }

    async fn rotate_secrets(
        &self,
        id: &ClientId,
        only: Vec<String>,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        let params = requested_params(requested_by)?;
        let deployment = self
            .control
            .request_rotation(id, &only, params)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(DeploymentRef {
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn reset_admin_password(
        &self,
        id: &ClientId,
        requested_by: &Authenticated,
    ) -> Result<stackbox_api::AdminPasswordReset, ControlError> {
        let params = requested_params(requested_by)?;
        let reset = self
            .control
            .request_admin_password(id, params)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(stackbox_api::AdminPasswordReset {
            client_id: id.clone(),
            deployment_id: reset.deployment.id.as_str().to_string(),
            credentials: stackbox_api::Credentials {
                admin_username: reset.admin_username.to_string(),
                admin_password: reset.admin_password.clone(),
            },
            apps: reset
                .apps
                .iter()
                .map(|app| stackbox_api::AppPasswordReset {
                    app: app.app.key().to_string(),
                    outcome: match app.outcome {
                        stackbox_core::admin::ResetOutcome::Set => {
                            stackbox_api::AdminResetOutcome::Set
                        }
                        stackbox_core::admin::ResetOutcome::Recreated => {
                            stackbox_api::AdminResetOutcome::Recreated
                        }
                        stackbox_core::admin::ResetOutcome::NotApplicable => {
                            stackbox_api::AdminResetOutcome::NotApplicable
                        }
                    },
                    reason: app.reason.map(str::to_string),
                })
                .collect(),
        })
    }

    async fn upgrade_client(
        &self,
        id: &ClientId,
        to: String,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        let params = requested_params(requested_by)?;
        let deployment = self
            .control
            .request_upgrade(id, &to, params)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(DeploymentRef {
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn create_rollout(
        &self,
        to: String,
        clients: Option<Vec<ClientId>>,
        settings: stackbox_core::rollout::RolloutSettings,
        requested_by: &Authenticated,
    ) -> Result<stackbox_api::RolloutView, ControlError> {
        let by = requested(requested_by)?.to_json();
        let rollout = self
            .control
            .request_rollout(&to, settings, clients.as_deref(), Some(by))
            .await
            .map_err(control_error)?;
        Ok(rollout_view(&rollout))
    }

    async fn list_rollouts(&self) -> Result<stackbox_api::RolloutList, ControlError> {
        let rollouts = self
            .control
            .store()
            .rollouts(20)
            .await
            .map_err(store_error)?;
        Ok(stackbox_api::RolloutList {
            rollouts: rollouts.iter().map(rollout_view).collect(),
        })
    }

    async fn get_rollout(&self, id: &str) -> Result<stackbox_api::RolloutView, ControlError> {
        let id = stackbox_store::RolloutId::parse(id).map_err(|_| ControlError::NotFound)?;
        match self
            .control
            .store()
            .rollout(&id)
            .await
            .map_err(store_error)?
        {
            Some(rollout) => Ok(rollout_view(&rollout)),
            None => Err(ControlError::NotFound),
        }
    }

    async fn halt_rollout(&self, id: &str) -> Result<stackbox_api::RolloutView, ControlError> {
        let id = stackbox_store::RolloutId::parse(id).map_err(|_| ControlError::NotFound)?;
        self.control
            .halt_rollout(&id, "halted by the operator")
            .await
            .map_err(control_error)?;
        self.get_rollout(id.as_str()).await
    }

    async fn create_backup(&self, id: &ClientId) -> Result<DeploymentRef, ControlError> {
        let deployment = self
            .control
            .request_backup(id, stackbox_store::BackupReason::Manual)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(DeploymentRef {
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn client_logs(
        &self,
        id: &ClientId,
        query: stackbox_api::LogQuery,
    ) -> Result<futures_util::stream::BoxStream<'static, stackbox_api::LogLine>, ControlError> {
        let record = self
            .store
            .client(id)
            .await
            .map_err(store_error)?
            .ok_or(ControlError::NotFound)?;
        let spec = record.spec().map_err(store_error)?;
        let services = stackbox_core::infra::expected_service_names(&spec, &self.operator);
        let docker = self.docker().await.ok_or_else(|| {
            ControlError::Unavailable("the container engine does not answer".to_string())
        })?;
        crate::logs::client_logs(&docker, id, &services, &query)
            .await
            .map_err(|error| match error {
                crate::logs::LogsError::UnknownService(problem) => ControlError::Invalid {
                    field: "service".to_string(),
                    problem,
                },
                crate::logs::LogsError::Engine(error) => ControlError::internal(&error),
            })
    }

    async fn client_usage(
        &self,
        id: &ClientId,
        window_seconds: u64,
    ) -> Result<stackbox_api::ClientUsageView, ControlError> {
        if self.store.client(id).await.map_err(store_error)?.is_none() {
            return Err(ControlError::NotFound);
        }
        let usage = self.control.client_usage(id, window_seconds);
        Ok(crate::monitoring::usage_view(usage, window_seconds))
    }

    async fn record_audit(&self, entry: stackbox_api::AuditEntry) -> Result<(), ControlError> {
        let actor_kind = match entry.actor {
            stackbox_api::AuditActor::Operator => stackbox_store::ActorKind::Operator,
            stackbox_api::AuditActor::Client => stackbox_store::ActorKind::Client,
            stackbox_api::AuditActor::Public => stackbox_store::ActorKind::Public,
        };
        self.store
            .append_audit(&stackbox_store::NewAuditEntry {
                actor_kind,
                token_id: entry.token_id,
                action: entry.action,
                client_id: entry.client_id,
                status: entry.status,
                deployment_id: entry.deployment_id,
            })
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn list_audit(
        &self,
        query: stackbox_api::AuditQuery,
    ) -> Result<stackbox_api::AuditList, ControlError> {
        let records = self
            .store
            .audit_entries(
                query.client.as_ref().map(|c| c.as_str()),
                query.before.as_deref(),
                query.limit,
            )
            .await
            .map_err(store_error)?;
        let next = (records.len() == query.limit as usize)
            .then(|| records.last().map(|r| r.id.clone()))
            .flatten();
        let entries = records
            .into_iter()
            .map(|record| stackbox_api::AuditEntryView {
                id: record.id,
                at: time(record.at),
                actor: match record.actor_kind {
                    stackbox_store::ActorKind::Operator => stackbox_api::AuditActor::Operator,
                    stackbox_store::ActorKind::Client => stackbox_api::AuditActor::Client,
                    stackbox_store::ActorKind::Public => stackbox_api::AuditActor::Public,
                },
                token_id: record.token_id,
                action: record.action,
                client_id: record.client_id,
                status: record.status,
                outcome: record.outcome.as_str().to_string(),
                deployment_id: record.deployment_id,
            })
            .collect();
        Ok(stackbox_api::AuditList { entries, next })
    }

    async fn list_alerts(
        &self,
        query: stackbox_api::AlertQuery,
    ) -> Result<stackbox_api::AlertList, ControlError> {
        let records = self
            .store
            .alerts(
                query.open_only,
                query.client.as_ref().map(|c| c.as_str()),
                query.limit,
            )
            .await
            .map_err(store_error)?;
        Ok(stackbox_api::AlertList {
            alerts: records.iter().map(alert_view).collect(),
        })
    }

    async fn list_backups(&self, id: &ClientId) -> Result<stackbox_api::BackupList, ControlError> {
        let record = self
            .store
            .client(id)
            .await
            .map_err(store_error)?
            .ok_or(ControlError::NotFound)?;
        let backups = self
            .store
            .backups_of_client(id, 200)
            .await
            .map_err(store_error)?;
        Ok(stackbox_api::BackupList {
            client_id: id.clone(),
            state: self.backup_state(&record).await?,
            backups: backups.iter().map(backup_view).collect(),
        })
    }

    async fn restore_backup(
        &self,
        id: &ClientId,
        snapshot: &str,
    ) -> Result<DeploymentRef, ControlError> {
        let deployment = self
            .control
            .request_snapshot_action(id, DeploymentKind::Restore, snapshot)
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(DeploymentRef {
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn verify_backup(
        &self,
        id: &ClientId,
        snapshot: &str,
    ) -> Result<DeploymentRef, ControlError> {
        let deployment = self
            .control
            .request_snapshot_action(id, DeploymentKind::Verify, snapshot)
            .await
            .map_err(control_error)?;
        Ok(DeploymentRef {
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn clone_client(
        &self,
        id: &ClientId,
        domain: stackbox_core::client::Domain,
        snapshot: Option<String>,
    ) -> Result<stackbox_api::ClonedClient, ControlError> {
        let (client_id, deployment) = self
            .control
            .clone_client(id, domain, snapshot.as_deref())
            .await
            .map_err(control_error)?;
        self.forget_lists();
        Ok(stackbox_api::ClonedClient {
            client_id,
            deployment_id: deployment.id.as_str().to_string(),
        })
    }

    async fn signup(&self, spec: ClientSpec) -> Result<stackbox_api::SignupAccepted, ControlError> {
        let outcome = self.control.signup(spec).await.map_err(control_error)?;
        Ok(stackbox_api::SignupAccepted {
            signup_id: outcome.signup_id,
            checkout_url: outcome.checkout_url,
        })
    }

    async fn stripe_webhook(
        &self,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> Result<stackbox_api::WebhookOutcome, ControlError> {
        let result = self
            .control
            .stripe_webhook(signature.as_deref(), &body)
            .await
            .map_err(control_error)?;
        // Billing may have queued stops, starts and plan changes.
        self.list_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(match result {
            stackbox_control::WebhookResult::Processed => stackbox_api::WebhookOutcome::Processed,
            stackbox_control::WebhookResult::Duplicate => stackbox_api::WebhookOutcome::Duplicate,
            stackbox_control::WebhookResult::Ignored => stackbox_api::WebhookOutcome::Ignored,
        })
    }

    async fn resend_welcome(&self, id: &ClientId) -> Result<(), ControlError> {
        self.control.resend_welcome(id).await.map_err(control_error)
    }

    async fn credentials_page(
        &self,
        token: String,
        reveal: bool,
    ) -> Result<stackbox_api::HtmlPage, ControlError> {
        let page = self
            .control
            .credentials_page(&token, reveal)
            .await
            .map_err(control_error)?;
        Ok(stackbox_api::HtmlPage {
            status: page.status,
            html: page.html,
        })
    }
}

/// Onboarding from the operator's settings: the Stripe client and the SMTP sender when
/// configured. The public URL defaults to the listening address (fine on a laptop; an
/// operator sets `STACKBOX_PUBLIC_URL` to the address people reach).
pub fn onboarding(
    mut settings: stackbox_core::onboarding::OnboardingSettings,
    listening: std::net::SocketAddr,
) -> Result<stackbox_control::Onboarding> {
    if settings.public_url.is_none() {
        settings.public_url = Some(format!("http://{listening}"));
    }
    let payments: Option<Arc<dyn stackbox_control::Payments>> = match &settings.stripe {
        Some(stripe) => Some(Arc::new(
            stackbox_billing::StripeClient::new(
                stripe.api_base.clone(),
                stripe.secret_key.expose().to_string(),
            )
            .context("STACKBOX_STRIPE_SECRET_KEY / STACKBOX_STRIPE_API_BASE")?,
        )),
        None => None,
    };
    let mailer: Option<Arc<dyn stackbox_control::Mailer>> = match &settings.mail {
        Some(mail) => Some(Arc::new(
            stackbox_mail::SmtpMailer::from_url(mail.smtp_url.expose(), mail.from.as_str())
                .context("STACKBOX_SMTP_URL")?,
        )),
        None => None,
    };
    let mut onboarding = stackbox_control::Onboarding::new(settings);
    onboarding.payments = payments;
    onboarding.mailer = mailer;
    // How often deadlines and due mail are looked at, and the first mail retry's wait: 30 s
    // each by default; shorter for tests and demonstrations.
    for (variable, slot) in [
        ("STACKBOX_ONBOARDING_TICK", &mut onboarding.tick),
        ("STACKBOX_MAIL_RETRY_BASE", &mut onboarding.mail_retry_base),
    ] {
        if let Ok(text) = std::env::var(variable) {
            let seconds = stackbox_core::onboarding::duration(variable, &text)?;
            *slot = Duration::from_secs(seconds.max(1));
        }
    }
    Ok(onboarding)
}
