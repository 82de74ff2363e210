//! An in-memory control plane: the API tier's stand-in for the real pipeline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use futures_util::stream::{self, BoxStream, StreamExt};
use stackbox_api::{
    Authenticated, BackupList, BackupReason, BackupState, BackupStatus, BackupView, ClientAction,
    ClientChange, ClientConfiguration, ClientDetail, ClientMetrics, ClientState, ClientSummary,
    ClientUsageView, ClonedClient, ControlError, ControlPlane, CreatedClient, Credentials,
    DeploymentEnd, DeploymentEvent, DeploymentKind, DeploymentOutcome, DeploymentQuery,
    DeploymentRef, DeploymentStatus, DeploymentSummary, DeploymentView, DurationHistogram,
    FieldChange, HealthStatus, ListQuery, LogLine, LogQuery, LogStreamKind, MetricsSnapshot, Page,
    Principal, RequestedBy, RequesterKind, ServiceHealth, ServiceState, ServiceUsageView,
    StepStatus, StepView, StepsSummary, Timestamp, TokenList, TokenRole, TokenView, UsagePointView,
};
use stackbox_core::client::{ClientId, ClientSpec, Domain};
use tokio::sync::mpsc;

pub const OPERATOR: &str = "operator-token";
/// The token of [`CLIENT_A`].
pub const TOKEN_A: &str = "client-a-token";
/// The token of [`CLIENT_B`].
pub const TOKEN_B: &str = "client-b-token";
/// The ids of [`OPERATOR`], [`TOKEN_A`] and [`TOKEN_B`].
pub const OPERATOR_TOKEN_ID: &str = "tok_000000000000000f";
pub const TOKEN_A_ID: &str = "tok_000000000000000a";
pub const TOKEN_B_ID: &str = "tok_000000000000000b";
pub const CLIENT_A: &str = "alpha-0000000a";
pub const CLIENT_B: &str = "bravo-0000000b";
/// A's finished deployment and B's.
pub const DEPLOYMENT_A: &str = "dep_00000000000a0000000000000001";
pub const DEPLOYMENT_B: &str = "dep_00000000000b0000000000000002";
/// A deployment of A whose events the test drives through [`Fake::live`].
pub const LIVE_DEPLOYMENT: &str = "dep_00000000000a0000000000000003";

/// Every password the fake generates starts with this, so a test can look for it anywhere.
pub const PASSWORD_PREFIX: &str = "SECRETpw";

/// A's one successful (and verified) backup; B has none, so B is missing a backup.
pub const SNAPSHOT_A: &str = "4f9c2a7be0d14c3a9b8e7f6d5c4b3a2918e7d6c5b4a39281f0e1d2c3b4a59687";
/// A's backup that failed, newer than [`SNAPSHOT_A`]'s.
pub const FAILED_BACKUP_A: &str = "bkp_00000000000a0000000000000002";

/// "Now" for the fake's backup figures: a backup older than a day before it is missing.
const NOW_SECONDS: i64 = 100;
const BACKUP_MAX_AGE_SECONDS: i64 = 24 * 3600;

/// The services the fake's clients have logs for.
pub const FAKE_LOG_SERVICES: [&str; 2] = ["website", "mysql"];

pub fn id(text: &str) -> ClientId {
    ClientId::parse(text).expect("test id")
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_740_830_400_000 + seconds * 1000)
}

struct Stored {
    spec: ClientSpec,
    state: ClientState,
    created_at: Timestamp,
}

pub struct Fake {
    /// Every `client_logs` query the API passed on.
    pub log_queries: Mutex<Vec<LogQuery>>,
    /// The windows (seconds) `client_usage` was asked for.
    pub usage_windows: Mutex<Vec<u64>>,
    /// Every change the audit layer passed on, oldest first.
    pub audit: Mutex<Vec<stackbox_api::AuditEntry>>,
    /// Every `list_alerts` query the API passed on.
    pub alert_queries: Mutex<Vec<stackbox_api::AlertQuery>>,
    clients: Mutex<BTreeMap<ClientId, Stored>>,
    deployments: Mutex<BTreeMap<String, DeploymentView>>,
    counter: AtomicU32,
    /// The next call to any method but `verify_token` fails with this.
    pub fail_next: Mutex<Option<ControlError>>,
    /// `get_client` panics while set.
    pub panic_on_get_client: AtomicBool,
    /// `verify_token` fails with `Unavailable` while set.
    pub tokens_unavailable: AtomicBool,
    /// The sender the live deployment's stream reads from, set when a stream is opened.
    live: Mutex<Option<mpsc::UnboundedSender<DeploymentEvent>>>,
    /// Every `ListQuery` the API passed on.
    pub list_queries: Mutex<Vec<ListQuery>>,
    /// Every webhook delivery passed on: (signature header, body).
    pub webhooks: Mutex<Vec<(Option<String>, Vec<u8>)>>,
    /// Every sign-up passed on.
    pub signups: Mutex<Vec<ClientSpec>>,
    /// Each client's backups, in the order taken.
    backups: Mutex<BTreeMap<ClientId, Vec<BackupView>>>,
    /// Every restore and verify passed on: (`"restore"` or `"verify"`, client, snapshot as
    /// the API passed it).
    pub snapshot_calls: Mutex<Vec<(&'static str, ClientId, String)>>,
    /// Every clone passed on: (source, domain, snapshot).
    pub clones: Mutex<Vec<(ClientId, Domain, Option<String>)>>,
    /// Clients deleted with `delete_backups`.
    deleted_with_backups: Mutex<Vec<String>>,
    /// The live tokens: token → who holds it. Revoking removes one.
    tokens: Mutex<BTreeMap<String, Authenticated>>,
    /// Who asked for each deployment made through the API, and what a change changed.
    requested_by: Mutex<BTreeMap<String, Authenticated>>,
    changes: Mutex<BTreeMap<String, BTreeMap<String, FieldChange>>>,
    /// Every spec `update_client` was given.
    pub updates: Mutex<Vec<ClientSpec>>,
    /// The rollouts asked for, oldest first.
    rollouts: Mutex<Vec<stackbox_api::RolloutView>>,
}

/// The one signature header the fake accepts, and the one credentials token it knows.
pub const GOOD_SIGNATURE: &str = "t=1,v1=good";
pub const GOOD_LINK: &str = "gooD-link_0123456789abcdefghijklmnopqrstuvw";

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn step(name: &str, status: StepStatus, started: Option<i64>, finished: Option<i64>) -> StepView {
    StepView {
        name: name.to_string(),
        status,
        attempts: u32::from(started.is_some()),
        started_at: started.map(at),
        finished_at: finished.map(at),
        error: None,
        output: None,
    }
}

impl Fake {
    /// Two clients, A (professional, running) and B (starter, stopped), each with one finished
    /// deployment, and A with one running deployment.
    pub fn new() -> Fake {
        let fake = Fake {
            log_queries: Mutex::new(Vec::new()),
            clients: Mutex::new(BTreeMap::new()),
            usage_windows: Mutex::new(Vec::new()),
            alert_queries: Mutex::new(Vec::new()),
            audit: Mutex::new(Vec::new()),
            deployments: Mutex::new(BTreeMap::new()),
            counter: AtomicU32::new(100),
            fail_next: Mutex::new(None),
            panic_on_get_client: AtomicBool::new(false),
            tokens_unavailable: AtomicBool::new(false),
            live: Mutex::new(None),
            list_queries: Mutex::new(Vec::new()),
            webhooks: Mutex::new(Vec::new()),
            signups: Mutex::new(Vec::new()),
            backups: Mutex::new(BTreeMap::new()),
            snapshot_calls: Mutex::new(Vec::new()),
            clones: Mutex::new(Vec::new()),
            deleted_with_backups: Mutex::new(Vec::new()),
            rollouts: Mutex::new(Vec::new()),
            tokens: Mutex::new(BTreeMap::from([
                (
                    OPERATOR.to_string(),
                    Authenticated {
                        token_id: OPERATOR_TOKEN_ID.to_string(),
                        principal: Principal::Operator,
                    },
                ),
                (
                    TOKEN_A.to_string(),
                    Authenticated {
                        token_id: TOKEN_A_ID.to_string(),
                        principal: Principal::Client(id(CLIENT_A)),
                    },
                ),
                (
                    TOKEN_B.to_string(),
                    Authenticated {
                        token_id: TOKEN_B_ID.to_string(),
                        principal: Principal::Client(id(CLIENT_B)),
                    },
                ),
            ])),
            requested_by: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(BTreeMap::new()),
            updates: Mutex::new(Vec::new()),
        };
        lock(&fake.backups).insert(
            id(CLIENT_A),
            vec![
                BackupView {
                    id: "bkp_00000000000a0000000000000001".to_string(),
                    snapshot: Some(SNAPSHOT_A.to_string()),
                    reason: BackupReason::Scheduled,
                    status: BackupStatus::Succeeded,
                    started_at: at(60),
                    finished_at: Some(at(90)),
                    error: None,
                    bytes_added: Some(1_048_576),
                    bytes_total: Some(52_428_800),
                    files_total: Some(1234),
                    verified_at: Some(at(95)),
                    verify_ok: Some(true),
                    verify_error: None,
                    deployment_id: None,
                },
                BackupView {
                    id: FAILED_BACKUP_A.to_string(),
                    snapshot: None,
                    reason: BackupReason::Manual,
                    status: BackupStatus::Failed,
                    started_at: at(70),
                    finished_at: Some(at(75)),
                    error: Some("the backup destination did not answer".to_string()),
                    bytes_added: None,
                    bytes_total: None,
                    files_total: None,
                    verified_at: None,
                    verify_ok: None,
                    verify_error: None,
                    deployment_id: None,
                },
            ],
        );
        for (client, domain, plan, state) in [
            (
                CLIENT_A,
                "alpha.example.com",
                "professional",
                ClientState::Running,
            ),
            (
                CLIENT_B,
                "bravo.example.com",
                "starter",
                ClientState::Stopped,
            ),
        ] {
            let spec = ClientSpec::from_toml(&format!(
                "client_id = \"{client}\"\ncompany_name = \"{client}\"\ndomain = \"{domain}\"\n\
                 plan = \"{plan}\"\nadmin_email = \"owner@{domain}\"\n"
            ))
            .expect("test spec");
            lock(&fake.clients).insert(
                id(client),
                Stored {
                    spec,
                    state,
                    created_at: at(0),
                },
            );
        }
        for (deployment, client) in [(DEPLOYMENT_A, CLIENT_A), (DEPLOYMENT_B, CLIENT_B)] {
            fake.insert_deployment(DeploymentView {
                id: deployment.to_string(),
                client_id: id(client),
                kind: DeploymentKind::Create,
                status: DeploymentStatus::Succeeded,
                steps: vec![
                    step("render", StepStatus::Succeeded, Some(1), Some(2)),
                    step("containers", StepStatus::Succeeded, Some(2), Some(30)),
                ],
                created_at: at(0),
                started_at: Some(at(1)),
                finished_at: Some(at(30)),
                error: None,
            });
        }
        fake.insert_deployment(DeploymentView {
            id: LIVE_DEPLOYMENT.to_string(),
            client_id: id(CLIENT_A),
            kind: DeploymentKind::Redeploy,
            status: DeploymentStatus::Running,
            steps: vec![
                step("render", StepStatus::Succeeded, Some(40), Some(41)),
                step("containers", StepStatus::Running, Some(41), None),
            ],
            created_at: at(40),
            started_at: Some(at(40)),
            finished_at: None,
            error: None,
        });
        fake
    }

    fn insert_deployment(&self, view: DeploymentView) {
        lock(&self.deployments).insert(view.id.clone(), view);
    }

    fn injected(&self) -> Result<(), ControlError> {
        match lock(&self.fail_next).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn next_number(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    fn new_deployment(
        &self,
        client: &ClientId,
        kind: DeploymentKind,
    ) -> Result<DeploymentRef, ControlError> {
        let busy = lock(&self.deployments)
            .values()
            .any(|d| &d.client_id == client && !d.status.is_finished() && d.id != LIVE_DEPLOYMENT);
        if busy {
            return Err(ControlError::Conflict(format!(
                "client {client} is busy with another deployment; wait for it to finish"
            )));
        }
        let deployment_id = format!("dep_{:028x}", self.next_number());
        self.insert_deployment(DeploymentView {
            id: deployment_id.clone(),
            client_id: client.clone(),
            kind,
            status: DeploymentStatus::Pending,
            steps: Vec::new(),
            created_at: at(100),
            started_at: None,
            finished_at: None,
            error: None,
        });
        Ok(DeploymentRef { deployment_id })
    }

    /// A client's backups summed up. Simpler than the real rule (which, without a backup,
    /// counts from the client's creation): no successful backup is missing one.
    fn backup_state(&self, client: &ClientId) -> BackupState {
        let backups = lock(&self.backups);
        let backups = backups.get(client).map(Vec::as_slice).unwrap_or_default();
        let last_success_at = backups
            .iter()
            .filter(|b| b.status == BackupStatus::Succeeded)
            .map(|b| b.started_at)
            .max();
        let last_verified = backups
            .iter()
            .filter(|b| b.verified_at.is_some())
            .max_by_key(|b| b.verified_at);
        BackupState {
            last_success_at,
            last_verified_at: last_verified.and_then(|b| b.verified_at),
            last_verify_ok: last_verified.and_then(|b| b.verify_ok),
            missing: last_success_at.is_none_or(|at_| {
                at_.unix_millis() < at(NOW_SECONDS - BACKUP_MAX_AGE_SECONDS).unix_millis()
            }),
        }
    }

    /// The full snapshot id that `snapshot` (an id, its first digits, or `latest`) names among
    /// the client's successful backups.
    fn resolve_snapshot(&self, client: &ClientId, snapshot: &str) -> Result<String, ControlError> {
        let backups = lock(&self.backups);
        let mut successful: Vec<&BackupView> = backups
            .get(client)
            .map(|list| {
                list.iter()
                    .filter(|b| b.status == BackupStatus::Succeeded)
                    .collect()
            })
            .unwrap_or_default();
        successful.sort_by_key(|b| std::cmp::Reverse(b.started_at));
        successful
            .iter()
            .filter_map(|b| b.snapshot.as_deref())
            .find(|full| snapshot == "latest" || full.starts_with(snapshot))
            .map(str::to_string)
            .ok_or(ControlError::NotFound)
    }

    fn require_client(&self, client: &ClientId) -> Result<(), ControlError> {
        if lock(&self.clients).contains_key(client) {
            Ok(())
        } else {
            Err(ControlError::NotFound)
        }
    }

    /// Sends an event into the live deployment's open stream.
    /// The clients deleted with their backups.
    pub fn deleted_with_backups(&self) -> Vec<String> {
        lock(&self.deleted_with_backups).clone()
    }

    pub fn live(&self, event: DeploymentEvent) {
        if let Some(sender) = lock(&self.live).as_ref() {
            let _ = sender.send(event);
        }
    }

    /// Whether a stream of the live deployment is open.
    pub fn live_stream_open(&self) -> bool {
        lock(&self.live).is_some()
    }

    /// Field → old and new value, from the two configurations' JSON (good enough for a fake:
    /// the real diff is the control plane's).
    fn diff(before: &ClientSpec, after: &ClientSpec) -> BTreeMap<String, FieldChange> {
        let flat = |spec: &ClientSpec| -> BTreeMap<String, serde_json::Value> {
            let json = serde_json::to_value(ClientConfiguration::from_spec(spec)).expect("JSON");
            let mut fields = BTreeMap::new();
            for (field, value) in json.as_object().expect("object") {
                match value.as_object() {
                    Some(features) => {
                        for (app, on) in features {
                            fields.insert(format!("{field}.{app}"), on.clone());
                        }
                    }
                    None => {
                        fields.insert(field.clone(), value.clone());
                    }
                }
            }
            fields
        };
        let (old, new) = (flat(before), flat(after));
        old.keys()
            .chain(new.keys())
            .filter_map(|field| {
                let from = old.get(field).cloned().unwrap_or_default();
                let to = new.get(field).cloned().unwrap_or_default();
                (from != to).then(|| (field.clone(), FieldChange { from, to }))
            })
            .collect()
    }

    fn services(spec: &ClientSpec) -> BTreeMap<String, String> {
        stackbox_core::stack::service_urls(spec)
            .into_iter()
            .map(|url| (url.name.to_string(), url.url))
            .collect()
    }
}

impl ControlPlane for Fake {
    async fn verify_token(&self, bearer: &str) -> Result<Option<Authenticated>, ControlError> {
        if self.tokens_unavailable.load(Ordering::SeqCst) {
            return Err(ControlError::Unavailable(
                "token store unreachable".to_string(),
            ));
        }
        Ok(lock(&self.tokens).get(bearer).cloned())
    }

    async fn create_client(&self, spec: ClientSpec) -> Result<CreatedClient, ControlError> {
        self.injected()?;
        let number = self.next_number();
        let client_id = spec
            .client_id
            .clone()
            .unwrap_or_else(|| ClientId::new(&spec.company_name, number));
        {
            let clients = lock(&self.clients);
            if let Some(taken) = clients.values().find(|c| c.spec.domain == spec.domain) {
                return Err(ControlError::Conflict(format!(
                    "the domain {} is taken by another client",
                    taken.spec.domain
                )));
            }
            if clients.contains_key(&client_id) {
                return Err(ControlError::Conflict(format!(
                    "the client id {client_id} is taken"
                )));
            }
        }
        let services = Fake::services(&spec);
        lock(&self.clients).insert(
            client_id.clone(),
            Stored {
                spec,
                state: ClientState::Provisioning,
                created_at: at(50),
            },
        );
        let deployment = self.new_deployment(&client_id, DeploymentKind::Create)?;
        Ok(CreatedClient {
            client_id,
            deployment_id: deployment.deployment_id,
            services,
            credentials: Credentials {
                admin_username: "admin".to_string(),
                admin_password: format!("{PASSWORD_PREFIX}{number:08}"),
            },
        })
    }

    async fn list_clients(&self, query: ListQuery) -> Result<Page<ClientSummary>, ControlError> {
        self.injected()?;
        lock(&self.list_queries).push(query.clone());
        let clients = lock(&self.clients);
        let mut rows = clients
            .iter()
            .filter(|(id, _)| query.after.as_ref().is_none_or(|after| *id > after))
            .filter(|(_, c)| query.state.is_none_or(|state| c.state == state))
            .filter(|(_, c)| query.plan.is_none_or(|plan| c.spec.plan == plan))
            .take(query.limit as usize + 1)
            .map(|(id, c)| ClientSummary {
                client_id: id.clone(),
                company_name: c.spec.company_name.as_str().to_string(),
                domain: c.spec.domain.to_string(),
                plan: c.spec.plan,
                state: c.state,
                created_at: c.created_at,
            })
            .collect::<Vec<_>>();
        let next = if rows.len() > query.limit as usize {
            rows.truncate(query.limit as usize);
            rows.last().map(|row| row.client_id.to_string())
        } else {
            None
        };
        Ok(Page { items: rows, next })
    }

    async fn get_client(&self, client: &ClientId) -> Result<ClientDetail, ControlError> {
        self.injected()?;
        if self.panic_on_get_client.load(Ordering::SeqCst) {
            panic!("the fake control plane panics (db password=hunter2)");
        }
        let clients = lock(&self.clients);
        let stored = clients.get(client).ok_or(ControlError::NotFound)?;
        let latest = lock(&self.deployments)
            .values()
            .filter(|d| &d.client_id == client)
            .map(|d| d.id.clone())
            .max();
        Ok(ClientDetail {
            client_id: client.clone(),
            configuration: ClientConfiguration::from_spec(&stored.spec),
            state: stored.state,
            state_reason: (stored.state == ClientState::Stopped)
                .then(|| "stopped by the operator".to_string()),
            services: Fake::services(&stored.spec),
            health: vec![
                ServiceHealth {
                    service: "traefik".to_string(),
                    state: ServiceState::Running,
                    health: Some(HealthStatus::Healthy),
                    restart_count: Some(0),
                    detail: None,
                },
                ServiceHealth {
                    service: "espocrm".to_string(),
                    state: ServiceState::Missing,
                    health: None,
                    restart_count: None,
                    detail: Some("no container".to_string()),
                },
            ],
            latest_deployment_id: latest,
            created_at: stored.created_at,
            updated_at: stored.created_at,
            backup: Some(self.backup_state(client)),
        })
    }

    async fn client_action(
        &self,
        client: &ClientId,
        action: ClientAction,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        self.injected()?;
        if !lock(&self.clients).contains_key(client) {
            return Err(ControlError::NotFound);
        }
        let kind = match action {
            ClientAction::Stop => DeploymentKind::Stop,
            ClientAction::Start => DeploymentKind::Start,
            ClientAction::Redeploy => DeploymentKind::Redeploy,
        };
        let deployment = self.new_deployment(client, kind)?;
        lock(&self.requested_by).insert(deployment.deployment_id.clone(), requested_by.clone());
        Ok(deployment)
    }

    /// A rotation is a redeploy; `only` naming `ADMIN_PASSWORD` is refused as the real control
    /// plane refuses a secret bound to the apps' data.
    async fn rotate_secrets(
        &self,
        client: &ClientId,
        only: Vec<String>,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        self.injected()?;
        if !lock(&self.clients).contains_key(client) {
            return Err(ControlError::NotFound);
        }
        if only.iter().any(|k| k == "ADMIN_PASSWORD") {
            return Err(ControlError::Invalid {
                field: "only".into(),
                problem: "ADMIN_PASSWORD cannot be rotated on a running client".into(),
            });
        }
        let deployment = self.new_deployment(client, DeploymentKind::Redeploy)?;
        lock(&self.requested_by).insert(deployment.deployment_id.clone(), requested_by.clone());
        Ok(deployment)
    }

    /// An admin password reset is a redeploy that answers a new password, different each
    /// time; a stopped client is refused as the real control plane refuses it.
    async fn reset_admin_password(
        &self,
        client: &ClientId,
        requested_by: &Authenticated,
    ) -> Result<stackbox_api::AdminPasswordReset, ControlError> {
        self.injected()?;
        let Some(stored) = lock(&self.clients)
            .get(client)
            .map(|c| (c.spec.clone(), c.state))
        else {
            return Err(ControlError::NotFound);
        };
        let (spec, state) = stored;
        if state != ClientState::Running {
            return Err(ControlError::Conflict(format!(
                "client {client} is {state}, not running; start it first"
            )));
        }
        let deployment = self.new_deployment(client, DeploymentKind::Redeploy)?;
        lock(&self.requested_by).insert(deployment.deployment_id.clone(), requested_by.clone());
        let number = self.next_number();
        let apps = stackbox_core::admin::reset_plan(&spec.apps())
            .map_err(|e| ControlError::Invalid {
                field: "apps".into(),
                problem: e.to_string(),
            })?
            .into_iter()
            .map(|(app, mechanism)| stackbox_api::AppPasswordReset {
                app: app.key().to_string(),
                outcome: stackbox_api::AdminResetOutcome::from_name(mechanism.outcome().as_str())
                    .expect("the API names every outcome"),
                reason: mechanism.reason().map(str::to_string),
            })
            .collect();
        Ok(stackbox_api::AdminPasswordReset {
            client_id: client.clone(),
            deployment_id: deployment.deployment_id,
            credentials: Credentials {
                admin_username: "admin".into(),
                admin_password: format!("{PASSWORD_PREFIX}{number:08}"),
            },
            apps,
        })
    }

    /// Only release `r2` exists; every client (or the ones named) is planned pending, in id
    /// order, in the settings' waves; one rollout runs at a time.
    async fn create_rollout(
        &self,
        to: String,
        clients: Option<Vec<ClientId>>,
        settings: stackbox_core::rollout::RolloutSettings,
        _requested_by: &Authenticated,
    ) -> Result<stackbox_api::RolloutView, ControlError> {
        use stackbox_api::{RolloutCounts, RolloutMemberStatus, RolloutMemberView, RolloutStatus};
        self.injected()?;
        if to != "r2" {
            return Err(ControlError::Invalid {
                field: "to".into(),
                problem: format!("{to:?} is not one of the operator's releases (base, r2)"),
            });
        }
        let known: Vec<ClientId> = lock(&self.clients).keys().cloned().collect();
        let chosen = match clients {
            Some(ids) => {
                if ids.iter().any(|id| !known.contains(id)) {
                    return Err(ControlError::NotFound);
                }
                ids
            }
            None => known,
        };
        let mut rollouts = lock(&self.rollouts);
        if rollouts.iter().any(|r| r.status == RolloutStatus::Running) {
            return Err(ControlError::Conflict("another rollout is running".into()));
        }
        let waves = settings.waves(chosen.len());
        let view = stackbox_api::RolloutView {
            id: format!("rol_{:028x}", rollouts.len() + 1),
            to,
            status: RolloutStatus::Running,
            canary: settings.canary,
            growth: settings.growth,
            max_wave: settings.max_wave,
            concurrency: settings.concurrency,
            halt_reason: None,
            created_at: at(5),
            finished_at: None,
            counts: RolloutCounts {
                pending: chosen.len() as u32,
                ..RolloutCounts::default()
            },
            clients: chosen
                .into_iter()
                .zip(waves)
                .map(|(client_id, wave)| RolloutMemberView {
                    client_id,
                    wave: wave as u32,
                    from_release: "base".into(),
                    status: RolloutMemberStatus::Pending,
                    deployment_id: None,
                    detail: None,
                })
                .collect(),
        };
        rollouts.push(view.clone());
        Ok(view)
    }

    async fn list_rollouts(&self) -> Result<stackbox_api::RolloutList, ControlError> {
        self.injected()?;
        let mut rollouts = lock(&self.rollouts).clone();
        rollouts.reverse();
        Ok(stackbox_api::RolloutList { rollouts })
    }

    async fn get_rollout(&self, id: &str) -> Result<stackbox_api::RolloutView, ControlError> {
        self.injected()?;
        lock(&self.rollouts)
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or(ControlError::NotFound)
    }

    async fn halt_rollout(&self, id: &str) -> Result<stackbox_api::RolloutView, ControlError> {
        self.injected()?;
        let mut rollouts = lock(&self.rollouts);
        let rollout = rollouts
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(ControlError::NotFound)?;
        if rollout.status == stackbox_api::RolloutStatus::Running {
            rollout.status = stackbox_api::RolloutStatus::Halted;
            rollout.halt_reason = Some("halted by the operator".into());
        }
        Ok(rollout.clone())
    }

    /// An upgrade is a redeploy; only release `r2` exists.
    async fn upgrade_client(
        &self,
        client: &ClientId,
        to: String,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        self.injected()?;
        if !lock(&self.clients).contains_key(client) {
            return Err(ControlError::NotFound);
        }
        if to != "r2" {
            return Err(ControlError::Invalid {
                field: "to".into(),
                problem: format!("{to:?} is not one of the operator's releases (base, r2)"),
            });
        }
        let deployment = self.new_deployment(client, DeploymentKind::Redeploy)?;
        lock(&self.requested_by).insert(deployment.deployment_id.clone(), requested_by.clone());
        Ok(deployment)
    }

    async fn delete_client(
        &self,
        client: &ClientId,
        delete_backups: bool,
        requested_by: &Authenticated,
    ) -> Result<DeploymentRef, ControlError> {
        self.injected()?;
        if delete_backups {
            lock(&self.deleted_with_backups).push(client.to_string());
        }
        if !lock(&self.clients).contains_key(client) {
            return Err(ControlError::NotFound);
        }
        let deployment = self.new_deployment(client, DeploymentKind::Destroy)?;
        lock(&self.requested_by).insert(deployment.deployment_id.clone(), requested_by.clone());
        if let Some(stored) = lock(&self.clients).get_mut(client) {
            stored.state = ClientState::Destroying;
        }
        Ok(deployment)
    }

    async fn client_spec(&self, client: &ClientId) -> Result<ClientSpec, ControlError> {
        self.injected()?;
        lock(&self.clients)
            .get(client)
            .map(|stored| stored.spec.clone())
            .ok_or(ControlError::NotFound)
    }

    async fn update_client(
        &self,
        client: &ClientId,
        spec: ClientSpec,
        requested_by: &Authenticated,
    ) -> Result<Option<ClientChange>, ControlError> {
        self.injected()?;
        lock(&self.updates).push(spec.clone());
        let current = self.client_spec(client).await?;
        if current == spec {
            return Ok(None);
        }
        if let Some((owner, _)) = lock(&self.clients)
            .iter()
            .find(|(owner, c)| *owner != client && c.spec.domain == spec.domain)
        {
            return Err(ControlError::Conflict(format!(
                "domain {} already belongs to client {owner}",
                spec.domain
            )));
        }
        let changes = Fake::diff(&current, &spec);
        let deployment = self.new_deployment(client, DeploymentKind::Redeploy)?;
        if let Some(stored) = lock(&self.clients).get_mut(client) {
            stored.spec = spec;
        }
        lock(&self.requested_by).insert(deployment.deployment_id.clone(), requested_by.clone());
        lock(&self.changes).insert(deployment.deployment_id.clone(), changes.clone());
        Ok(Some(ClientChange {
            deployment_id: deployment.deployment_id,
            changes,
        }))
    }

    async fn client_deployments(
        &self,
        client: &ClientId,
        query: DeploymentQuery,
    ) -> Result<Page<DeploymentSummary>, ControlError> {
        self.injected()?;
        self.require_client(client)?;
        let mut views: Vec<DeploymentView> = lock(&self.deployments)
            .values()
            .filter(|d| &d.client_id == client)
            .cloned()
            .collect();
        views.sort_by(|a, b| {
            (b.created_at.unix_millis(), &b.id).cmp(&(a.created_at.unix_millis(), &a.id))
        });
        if let Some(after) = &query.after {
            let Some(position) = views.iter().position(|d| &d.id == after) else {
                return Err(ControlError::Invalid {
                    field: "after".into(),
                    problem: "is not a deployment of this client".into(),
                });
            };
            views.drain(..=position);
        }
        let more = views.len() > query.limit as usize;
        views.truncate(query.limit as usize);
        let requested_by = lock(&self.requested_by);
        let changes = lock(&self.changes);
        let items: Vec<DeploymentSummary> = views
            .into_iter()
            .map(|view| DeploymentSummary {
                steps: StepsSummary::of(&view.steps),
                requested_by: requested_by.get(&view.id).map(|by| RequestedBy {
                    by: RequesterKind::Token,
                    token_id: Some(by.token_id.clone()),
                    role: Some(match by.principal {
                        Principal::Operator => TokenRole::Operator,
                        Principal::Client(_) => TokenRole::Client,
                    }),
                }),
                changes: changes.get(&view.id).cloned().unwrap_or_default(),
                id: view.id,
                kind: view.kind,
                status: view.status,
                created_at: view.created_at,
                started_at: view.started_at,
                finished_at: view.finished_at,
                error: view.error,
            })
            .collect();
        let next = if more {
            items.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn list_tokens(&self) -> Result<TokenList, ControlError> {
        self.injected()?;
        let tokens = lock(&self.tokens)
            .values()
            .map(|holder| TokenView {
                id: holder.token_id.clone(),
                role: match holder.principal {
                    Principal::Operator => TokenRole::Operator,
                    Principal::Client(_) => TokenRole::Client,
                },
                client_id: match &holder.principal {
                    Principal::Operator => None,
                    Principal::Client(client) => Some(client.to_string()),
                },
                created_at: at(0),
                last_used_at: Some(at(99)),
            })
            .collect();
        Ok(TokenList { tokens })
    }

    async fn revoke_token(&self, token_id: &str) -> Result<(), ControlError> {
        self.injected()?;
        let mut tokens = lock(&self.tokens);
        let before = tokens.len();
        tokens.retain(|_, holder| holder.token_id != token_id);
        if tokens.len() == before {
            return Err(ControlError::NotFound);
        }
        Ok(())
    }

    async fn get_deployment(&self, deployment: &str) -> Result<DeploymentView, ControlError> {
        self.injected()?;
        lock(&self.deployments)
            .get(deployment)
            .cloned()
            .ok_or(ControlError::NotFound)
    }

    async fn deployment_events(
        &self,
        deployment: &str,
    ) -> Result<BoxStream<'static, DeploymentEvent>, ControlError> {
        self.injected()?;
        let view = lock(&self.deployments)
            .get(deployment)
            .cloned()
            .ok_or(ControlError::NotFound)?;
        let past = stream::iter(view.steps.clone().into_iter().map(DeploymentEvent::Step));
        if view.status.is_finished() {
            let end = DeploymentEvent::End(DeploymentEnd {
                status: view.status,
                finished_at: view.finished_at,
                error: view.error.clone(),
            });
            return Ok(past.chain(stream::iter([end])).boxed());
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        *lock(&self.live) = Some(sender);
        let live = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|event| (event, receiver))
        });
        Ok(past.chain(live).boxed())
    }

    async fn metrics(&self) -> Result<MetricsSnapshot, ControlError> {
        self.injected()?;
        let mut snapshot = MetricsSnapshot::default();
        snapshot.clients_by_state.insert(ClientState::Running, 7);
        snapshot.clients_by_state.insert(ClientState::Stopped, 2);
        snapshot
            .deployments_by_outcome
            .insert(DeploymentOutcome::Succeeded, 12);
        snapshot
            .deployments_by_outcome
            .insert(DeploymentOutcome::Failed, 1);
        snapshot.deployment_duration =
            DurationHistogram::from_samples([12.0, 45.5, 61.0, 300.0, 4000.0]);
        snapshot.mail_by_status.insert("sent", 5);
        snapshot.mail_by_status.insert("failed", 1);
        snapshot.step_duration.insert(
            "render".to_string(),
            DurationHistogram::from_samples([0.01, 0.02, 0.3]),
        );
        snapshot.step_duration.insert(
            "containers".to_string(),
            DurationHistogram::from_samples([20.0, 40.0]),
        );
        // The backup figures, from the backups held.
        let clients: Vec<ClientId> = lock(&self.clients).keys().cloned().collect();
        let states: Vec<BackupState> = clients.iter().map(|c| self.backup_state(c)).collect();
        snapshot.clients_missing_backup = states.iter().filter(|s| s.missing).count() as u64;
        for backup in lock(&self.backups).values().flatten() {
            *snapshot
                .backups_by_status
                .entry(backup.status.as_str())
                .or_default() += 1;
        }
        snapshot.oldest_successful_backup_age_seconds = states
            .iter()
            .filter_map(|s| s.last_success_at)
            .min()
            .map(|oldest| (at(NOW_SECONDS).unix_millis() - oldest.unix_millis()) as f64 / 1000.0);
        // Per client: A has readings and volumes, B only a state (no backup, not measured).
        snapshot.clients = vec![
            ClientMetrics {
                client: CLIENT_A.to_string(),
                state: "running",
                last_backup_age_seconds: Some(40.0),
                services: fake_services(),
                volumes: BTreeMap::from([
                    ("mysql_data".to_string(), 4096),
                    ("nextcloud_data".to_string(), 1_048_576),
                ]),
                probes: vec![
                    stackbox_api::ProbeMetrics {
                        hostname: "alpha.example".to_string(),
                        up: true,
                        duration_seconds: 0.25,
                        certificate_expires_at: Some(1_800_000_000),
                    },
                    stackbox_api::ProbeMetrics {
                        hostname: "crm.alpha.example".to_string(),
                        up: false,
                        duration_seconds: 10.0,
                        certificate_expires_at: None,
                    },
                ],
            },
            ClientMetrics {
                client: CLIENT_B.to_string(),
                state: "degraded",
                ..ClientMetrics::default()
            },
        ];
        snapshot.engine_disk = Some((60_000_000_000, 250_000_000_000));
        // A hostile step name: the exposition must escape it.
        snapshot.step_duration.insert(
            "we\"ird\\step\nname".to_string(),
            DurationHistogram::from_samples([1.0]),
        );
        Ok(snapshot)
    }

    async fn create_backup(&self, client: &ClientId) -> Result<DeploymentRef, ControlError> {
        self.injected()?;
        self.require_client(client)?;
        let deployment = self.new_deployment(client, DeploymentKind::Backup)?;
        let number = self.next_number();
        lock(&self.backups)
            .entry(client.clone())
            .or_default()
            .push(BackupView {
                id: format!("bkp_{number:028x}"),
                snapshot: None,
                reason: BackupReason::Manual,
                status: BackupStatus::Running,
                started_at: at(NOW_SECONDS),
                finished_at: None,
                error: None,
                bytes_added: None,
                bytes_total: None,
                files_total: None,
                verified_at: None,
                verify_ok: None,
                verify_error: None,
                deployment_id: Some(deployment.deployment_id.clone()),
            });
        Ok(deployment)
    }

    async fn record_audit(&self, entry: stackbox_api::AuditEntry) -> Result<(), ControlError> {
        lock(&self.audit).push(entry);
        Ok(())
    }

    async fn list_audit(
        &self,
        query: stackbox_api::AuditQuery,
    ) -> Result<stackbox_api::AuditList, ControlError> {
        self.injected()?;
        let entries = lock(&self.audit)
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, e)| match &query.client {
                Some(client) => e.client_id.as_deref() == Some(client.as_str()),
                None => true,
            })
            .take(query.limit as usize)
            .map(|(n, e)| stackbox_api::AuditEntryView {
                id: format!("aud_{n:04}"),
                at: at(n as i64),
                actor: e.actor,
                token_id: e.token_id.clone(),
                action: e.action.clone(),
                client_id: e.client_id.clone(),
                status: e.status,
                outcome: match e.status {
                    0..=399 => "accepted",
                    400..=499 => "refused",
                    _ => "failed",
                }
                .to_string(),
                deployment_id: e.deployment_id.clone(),
            })
            .collect();
        Ok(stackbox_api::AuditList {
            entries,
            next: None,
        })
    }

    async fn list_alerts(
        &self,
        query: stackbox_api::AlertQuery,
    ) -> Result<stackbox_api::AlertList, ControlError> {
        self.injected()?;
        lock(&self.alert_queries).push(query.clone());
        // A's firing memory alert, the host's disk alert, B's resolved backup alert: newest
        // first, filtered as the store filters.
        let alert =
            |id: &str, key: &str, client: Option<&str>, resolved: bool| stackbox_api::AlertView {
                id: id.to_string(),
                key: key.to_string(),
                kind: key.split(':').next().unwrap_or_default().to_string(),
                state: if resolved { "resolved" } else { "firing" }.to_string(),
                client_id: client.map(str::to_string),
                summary: format!("{key} summary"),
                since: at(10),
                fired_at: Some(at(130)),
                resolved_at: resolved.then(|| at(400)),
            };
        let all = [
            alert(
                "alr_3",
                &format!("memory-near-limit:{CLIENT_A}:website"),
                Some(CLIENT_A),
                false,
            ),
            alert("alr_2", "disk-near-full", None, false),
            alert(
                "alr_1",
                &format!("backup-failed:{CLIENT_B}"),
                Some(CLIENT_B),
                true,
            ),
        ];
        let alerts = all
            .into_iter()
            .filter(|a| !query.open_only || a.resolved_at.is_none())
            .filter(|a| match &query.client {
                Some(client) => a.client_id.as_deref() == Some(client.as_str()),
                None => true,
            })
            .take(query.limit as usize)
            .collect();
        Ok(stackbox_api::AlertList { alerts })
    }

    async fn client_usage(
        &self,
        client: &ClientId,
        window_seconds: u64,
    ) -> Result<ClientUsageView, ControlError> {
        self.injected()?;
        self.require_client(client)?;
        lock(&self.usage_windows).push(window_seconds);
        // Readings every 60 s; only those inside the window come back.
        let points: Vec<UsagePointView> = (0..10u64)
            .filter(|n| (10 - n) * 60 <= window_seconds)
            .map(|n| UsagePointView {
                at: at(NOW_SECONDS + n as i64 * 60),
                cpu_cores: 0.1 * (n + 1) as f64,
                memory_working_set_bytes: 100_000_000 + n * 1_000,
                network_receive_bytes_per_second: 10.0,
                network_transmit_bytes_per_second: 5.0,
                block_read_bytes_per_second: 0.0,
                block_write_bytes_per_second: 1.0,
                storage_bytes: Some(1_052_672),
            })
            .collect();
        let cores: Vec<f64> = points.iter().map(|p| p.cpu_cores).collect();
        Ok(ClientUsageView {
            client_id: client.as_str().to_string(),
            window_seconds,
            interval_seconds: 60,
            kept_seconds: 6 * 3600,
            cpu_cores_avg: if cores.is_empty() {
                0.0
            } else {
                cores.iter().sum::<f64>() / cores.len() as f64
            },
            cpu_cores_max: cores.iter().cloned().fold(0.0, f64::max),
            memory_working_set_bytes_max: points
                .iter()
                .map(|p| p.memory_working_set_bytes)
                .max()
                .unwrap_or(0),
            storage_bytes: Some(1_052_672),
            points,
            services: fake_services(),
            volumes: BTreeMap::from([("mysql_data".to_string(), 4096)]),
        })
    }

    async fn client_logs(
        &self,
        client: &ClientId,
        query: LogQuery,
    ) -> Result<BoxStream<'static, LogLine>, ControlError> {
        self.injected()?;
        self.require_client(client)?;
        lock(&self.log_queries).push(query.clone());
        if let Some(service) = &query.service {
            if !FAKE_LOG_SERVICES.contains(&service.as_str()) {
                return Err(ControlError::Invalid {
                    field: "service".to_string(),
                    problem: format!("{service:?} is not one of this client's services"),
                });
            }
        }
        let mut lines = Vec::new();
        for service in FAKE_LOG_SERVICES {
            if query.service.as_deref().is_some_and(|only| only != service) {
                continue;
            }
            let mine: Vec<LogLine> = (0..3)
                .map(|n| LogLine {
                    service: service.to_string(),
                    stream: if service == "mysql" {
                        LogStreamKind::Stderr
                    } else {
                        LogStreamKind::Stdout
                    },
                    time: format!(
                        "2025-03-01T12:00:0{}.000000000Z",
                        n * 2 + usize::from(service == "mysql")
                    ),
                    line: format!("{service} line {n}"),
                })
                .collect();
            let skip = mine.len().saturating_sub(query.tail as usize);
            lines.extend(mine.into_iter().skip(skip));
        }
        // With `follow`, the fake's containers stop after their lines: the stream ends.
        Ok(stream::iter(lines).boxed())
    }

    async fn list_backups(&self, client: &ClientId) -> Result<BackupList, ControlError> {
        self.injected()?;
        self.require_client(client)?;
        let state = self.backup_state(client);
        let mut backups = lock(&self.backups).get(client).cloned().unwrap_or_default();
        backups.sort_by_key(|b| std::cmp::Reverse(b.started_at));
        Ok(BackupList {
            client_id: client.clone(),
            state,
            backups,
        })
    }

    async fn restore_backup(
        &self,
        client: &ClientId,
        snapshot: &str,
    ) -> Result<DeploymentRef, ControlError> {
        self.injected()?;
        lock(&self.snapshot_calls).push(("restore", client.clone(), snapshot.to_string()));
        self.require_client(client)?;
        self.resolve_snapshot(client, snapshot)?;
        self.new_deployment(client, DeploymentKind::Restore)
    }

    async fn verify_backup(
        &self,
        client: &ClientId,
        snapshot: &str,
    ) -> Result<DeploymentRef, ControlError> {
        self.injected()?;
        lock(&self.snapshot_calls).push(("verify", client.clone(), snapshot.to_string()));
        self.require_client(client)?;
        self.resolve_snapshot(client, snapshot)?;
        self.new_deployment(client, DeploymentKind::Verify)
    }

    async fn clone_client(
        &self,
        client: &ClientId,
        domain: Domain,
        snapshot: Option<String>,
    ) -> Result<ClonedClient, ControlError> {
        self.injected()?;
        lock(&self.clones).push((client.clone(), domain.clone(), snapshot.clone()));
        let source = lock(&self.clients)
            .get(client)
            .map(|stored| stored.spec.clone())
            .ok_or(ControlError::NotFound)?;
        match &snapshot {
            Some(snapshot) => {
                self.resolve_snapshot(client, snapshot)?;
            }
            None => {
                self.resolve_snapshot(client, "latest").map_err(|_| {
                    ControlError::Conflict(format!(
                        "client {client} has no successful backup to clone; back it up first"
                    ))
                })?;
            }
        }
        let number = self.next_number();
        let new_id = ClientId::new(&source.company_name, number);
        {
            let mut clients = lock(&self.clients);
            if clients.values().any(|c| c.spec.domain == domain) {
                return Err(ControlError::Conflict(format!(
                    "the domain {domain} is taken by another client"
                )));
            }
            let mut spec = source;
            spec.domain = domain;
            spec.client_id = Some(new_id.clone());
            clients.insert(
                new_id.clone(),
                Stored {
                    spec,
                    state: ClientState::Provisioning,
                    created_at: at(NOW_SECONDS),
                },
            );
        }
        let deployment = self.new_deployment(&new_id, DeploymentKind::Clone)?;
        Ok(ClonedClient {
            client_id: new_id,
            deployment_id: deployment.deployment_id,
        })
    }

    async fn signup(&self, spec: ClientSpec) -> Result<stackbox_api::SignupAccepted, ControlError> {
        if let Some(error) = lock(&self.fail_next).take() {
            return Err(error);
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        lock(&self.signups).push(spec);
        Ok(stackbox_api::SignupAccepted {
            signup_id: format!("sgn_{n:028}"),
            checkout_url: format!("https://checkout.stripe.com/c/pay/cs_test_{n}"),
        })
    }

    async fn stripe_webhook(
        &self,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> Result<stackbox_api::WebhookOutcome, ControlError> {
        lock(&self.webhooks).push((signature.clone(), body));
        if signature.as_deref() != Some(GOOD_SIGNATURE) {
            return Err(ControlError::BadRequest(
                "the signature does not match the body".into(),
            ));
        }
        if let Some(error) = lock(&self.fail_next).take() {
            return Err(error);
        }
        Ok(stackbox_api::WebhookOutcome::Processed)
    }

    async fn resend_welcome(&self, id: &ClientId) -> Result<(), ControlError> {
        self.injected()?;
        if lock(&self.clients).contains_key(id) {
            Ok(())
        } else {
            Err(ControlError::NotFound)
        }
    }

    async fn credentials_page(
        &self,
        token: String,
        reveal: bool,
    ) -> Result<stackbox_api::HtmlPage, ControlError> {
        Ok(if token == GOOD_LINK {
            stackbox_api::HtmlPage {
                status: 200,
                html: format!("<p>{}</p>", if reveal { "revealed" } else { "confirm" }),
            }
        } else {
            stackbox_api::HtmlPage {
                status: 410,
                html: "<p>gone</p>".into(),
            }
        })
    }
}

/// The latest reading of two services, as the fake's usage and metrics report them.
fn fake_services() -> Vec<ServiceUsageView> {
    vec![
        ServiceUsageView {
            service: "website".to_string(),
            cpu_cores: 0.25,
            cpu_seconds_total: 12.5,
            memory_working_set_bytes: 20_000_000,
            memory_limit_bytes: Some(268_435_456),
            network_receive_bytes_total: 1000,
            network_transmit_bytes_total: 2000,
            block_read_bytes_total: 0,
            block_write_bytes_total: 4096,
        },
        ServiceUsageView {
            service: "mysql".to_string(),
            cpu_cores: 0.05,
            cpu_seconds_total: 3.0,
            memory_working_set_bytes: 80_000_000,
            memory_limit_bytes: None,
            network_receive_bytes_total: 10,
            network_transmit_bytes_total: 20,
            block_read_bytes_total: 512,
            block_write_bytes_total: 8192,
        },
    ]
}
