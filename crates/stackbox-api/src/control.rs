//! What the API needs from the control plane: [`ControlPlane`], defined here where it is used.
//!
//! The API never touches a database or an engine: the control plane (`stackbox-control`,
//! the provisioning pipeline over the store and the engine) implements this trait, and the
//! API's tests implement it in memory.

use std::collections::BTreeMap;
use std::future::Future;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use stackbox_core::client::{ClientId, ClientSpec, Domain};
use stackbox_core::plan::Plan;

use crate::dto::AdminPasswordReset;
use crate::dto::{
    BackupList, ClientChange, ClientDetail, ClientState, ClientSummary, ClonedClient,
    CreatedClient, DeploymentEvent, DeploymentOutcome, DeploymentRef, DeploymentSummary,
    DeploymentView, LogLine, Page, RolloutList, RolloutView, TokenList,
};
use crate::metrics::DurationHistogram;

/// Who is calling, as the control plane recognised the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Everything.
    Operator,
    /// Read-only, and only this client and its deployments.
    Client(ClientId),
}

/// A bearer token the control plane recognised: whose it is, and its id (never the token),
/// which the control plane journals as who asked for a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The token's id, as `stackbox token list` and `GET /v1/tokens` show it.
    pub token_id: String,
    pub principal: Principal,
}

/// A lifecycle action on an existing client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Stop the containers; data kept.
    Stop,
    /// Start again, back to healthy.
    Start,
    /// Render and converge again (recreates only what changed).
    Redeploy,
}

/// `GET /v1/clients`, validated by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub state: Option<ClientState>,
    pub plan: Option<Plan>,
    /// Keyset cursor: only clients whose id sorts after this one (ascending id order).
    pub after: Option<ClientId>,
    /// Between 1 and [`ListQuery::MAX_LIMIT`]; [`ListQuery::DEFAULT_LIMIT`] when not given.
    pub limit: u32,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;
}

/// `GET /v1/clients/{id}/logs`, validated by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Only this service's container (the control plane answers `Invalid` naming `service`
    /// for one the client does not have).
    pub service: Option<String>,
    /// Only lines from this Unix second on.
    pub since: Option<i64>,
    /// The last this many lines per container, 1 to [`stackbox_core::logs::MAX_TAIL`].
    pub tail: u32,
    /// Keep streaming new lines until the client's containers stop.
    pub follow: bool,
}

/// `GET /v1/clients/{id}/deployments`, validated by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentQuery {
    /// Keyset cursor: only deployments older than this one (the `next` of the previous page),
    /// as written in the URL (at most 64 characters of `[A-Za-z0-9_-]`): answer
    /// [`ControlError::Invalid`] naming `after` for one that is not a deployment id.
    pub after: Option<String>,
    /// Between 1 and [`ListQuery::MAX_LIMIT`]; [`ListQuery::DEFAULT_LIMIT`] when not given.
    pub limit: u32,
}

/// The figures behind `GET /metrics`. Every client state and every outcome is written, with 0
/// for those missing from the maps, so that every series exists from the first scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Current clients by state (a gauge).
    pub clients_by_state: BTreeMap<ClientState, u64>,
    /// Finished deployments by outcome since the store began (a counter: it must never go
    /// down, so count deployments of destroyed clients too).
    pub deployments_by_outcome: BTreeMap<DeploymentOutcome, u64>,
    /// Durations of finished deployments, from start to finish.
    pub deployment_duration: DurationHistogram,
    /// Durations of finished steps, by step name.
    pub step_duration: BTreeMap<String, DurationHistogram>,
    /// Mail in the outbox by status (`pending`, `sending`, `sent`, `failed`); a gauge.
    pub mail_by_status: BTreeMap<&'static str, u64>,
    /// Clients missing a backup (a gauge): those whose [`crate::BackupState`] says `missing`.
    pub clients_missing_backup: u64,
    /// Backup records by status (`running`, `succeeded`, `failed`:
    /// [`crate::BACKUP_STATUSES`]); a gauge, since retention forgets old ones.
    pub backups_by_status: BTreeMap<&'static str, u64>,
    /// The age of the oldest "last successful backup" across clients, in seconds: one number
    /// rather than one series per client, so that the label set stays bounded. `None` when no
    /// client has a successful backup (the series is then left out).
    pub oldest_successful_backup_age_seconds: Option<f64>,
    /// Per client: state, last backup age, resource use and volumes (bounded labels: each
    /// client has a fixed, small set of services and volumes).
    pub clients: Vec<crate::monitoring::ClientMetrics>,
    /// Used and total bytes of the engine's data filesystem, when it is on this host.
    pub engine_disk: Option<(u64, u64)>,
}

/// Why the control plane refused or failed a request. The API maps each variant to one status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such client or deployment → 404.
    #[error("not found")]
    NotFound,
    /// The request contradicts the current state: the domain or pinned id is taken, the client
    /// is busy with another deployment, … → 409. The message is sent to the caller, so it must
    /// be written for them (no internal detail).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A value is not acceptable → 422 naming `field`. Sent to the caller as written.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    /// The request is wrong in a way that is not a field's value (a webhook's signature that
    /// does not verify, a body that is not the expected event) → 400. Sent as written.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Temporarily unable (store or engine unreachable, deployment capacity full) → 503 with
    /// `Retry-After`. The text is logged, not sent.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else → 500 with a generic message. The text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    /// An [`ControlError::Internal`] from any error, keeping its whole chain for the log.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> ControlError {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        ControlError::Internal(text)
    }
}

/// The control plane as the API sees it.
///
/// Every future must be `Send` (the server runs on a multi-threaded runtime). Methods take
/// validated input: ids in paths are parsed `ClientId`s, the body of `POST /v1/clients` is a
/// `ClientSpec` validated by the core, list parameters are within bounds. Deployment ids are
/// passed as written in the URL (at most 64 characters of `[A-Za-z0-9_-]`): return
/// [`ControlError::NotFound`] for one that is malformed or unknown.
///
/// Authorization is the API's: the control plane only says who a token belongs to. The API
/// checks a client token's scope before calling any other method (for deployments, by the
/// `client_id` of [`ControlPlane::get_deployment`]).
pub trait ControlPlane: Send + Sync + 'static {
    /// Who holds this bearer token: `Ok(None)` for an unknown or revoked one (401), an error
    /// when it cannot be checked (a store outage answers 503, not a misleading 401). Compare in
    /// constant time (the store keeps hashes). Called on every `/v1` request: keep it cheap,
    /// but a token revoked (through [`ControlPlane::revoke_token`] or `stackbox token revoke`)
    /// must be refused from the next request on, so do not keep verified tokens.
    fn verify_token(
        &self,
        bearer: &str,
    ) -> impl Future<Output = Result<Option<Authenticated>, ControlError>> + Send;

    /// Stores the client, generates its secrets and starts its first deployment; returns as
    /// soon as the deployment is journaled (the API answers 202).
    fn create_client(
        &self,
        spec: ClientSpec,
    ) -> impl Future<Output = Result<CreatedClient, ControlError>> + Send;

    /// One page of clients in ascending id order, filtered. `next` is the last item's id when
    /// more clients follow (fetch `limit + 1` rows to know), else `None`.
    fn list_clients(
        &self,
        query: ListQuery,
    ) -> impl Future<Output = Result<Page<ClientSummary>, ControlError>> + Send;

    fn get_client(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = Result<ClientDetail, ControlError>> + Send;

    /// Journals a stop, start or redeploy, recording who asked; `Conflict` when the client
    /// already has an unfinished deployment.
    fn client_action(
        &self,
        id: &ClientId,
        action: ClientAction,
        requested_by: &Authenticated,
    ) -> impl Future<Output = Result<DeploymentRef, ControlError>> + Send;

    /// Journals a destroy (containers, networks, volumes, bundle, stored secrets), recording
    /// who asked. The API has already checked the `confirm` parameter. The client's backups
    /// are kept for the operator's retention unless `delete_backups`.
    fn delete_client(
        &self,
        id: &ClientId,
        delete_backups: bool,
        requested_by: &Authenticated,
    ) -> impl Future<Output = Result<DeploymentRef, ControlError>> + Send;

    /// The client's configuration as stored: what `PATCH /v1/clients/{id}` merges its patch
    /// into.
    fn client_spec(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = Result<ClientSpec, ControlError>> + Send;

    /// `PATCH /v1/clients/{id}` (operator): stores `spec` (the stored configuration with the
    /// patch merged in, validated by the core like a new client's, with the client's id),
    /// generates the secrets its apps need and journals the redeploy that applies it, with
    /// who asked and what changed. `Ok(None)` when `spec` is the stored configuration:
    /// nothing is stored or queued. `Conflict` while another deployment of the client is
    /// unfinished and when the domain is another client's; `Invalid` naming the field for a
    /// change a client cannot make (its id, its provider).
    fn update_client(
        &self,
        id: &ClientId,
        spec: ClientSpec,
        requested_by: &Authenticated,
    ) -> impl Future<Output = Result<Option<ClientChange>, ControlError>> + Send;

    /// `GET /v1/clients/{id}/deployments` (operator, or that client's token): one page of the
    /// client's deployments, newest first. `next` is the last item's id when older ones
    /// follow, else `None`.
    fn client_deployments(
        &self,
        id: &ClientId,
        query: DeploymentQuery,
    ) -> impl Future<Output = Result<Page<DeploymentSummary>, ControlError>> + Send;

    /// `GET /v1/tokens` (operator): every API token, oldest first, without its secret.
    fn list_tokens(&self) -> impl Future<Output = Result<TokenList, ControlError>> + Send;

    /// `DELETE /v1/tokens/{id}` (operator): revokes the token with this id (as written in the
    /// URL; `NotFound` for a malformed or unknown one). [`ControlPlane::verify_token`] refuses
    /// it from the next request on.
    fn revoke_token(&self, id: &str) -> impl Future<Output = Result<(), ControlError>> + Send;

    fn get_deployment(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<DeploymentView, ControlError>> + Send;

    /// The deployment's step changes: every step as it stands now first (so a late subscriber
    /// misses nothing), then each change as it happens, then [`DeploymentEvent::End`] once the
    /// deployment has finished; the stream ends after it. For a deployment already finished,
    /// that is its steps and `End` at once. A stream that ends without `End` makes the API
    /// close the connection without the `end` event (the client reconnects).
    fn deployment_events(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<BoxStream<'static, DeploymentEvent>, ControlError>> + Send;

    fn metrics(&self) -> impl Future<Output = Result<MetricsSnapshot, ControlError>> + Send;

    /// `POST /v1/clients/{id}/backups` (operator): journals a `backup` deployment and returns
    /// once it is journaled (202); `Conflict` when the client is busy with another deployment.
    /// The default answers 404: a control plane without backups has no such route.
    /// Journals a rotation of the client's secrets (every one that can be rotated while it
    /// runs, or exactly `only`), recording who asked; `Invalid` naming `only` for a secret
    /// that cannot be rotated.
    fn rotate_secrets(
        &self,
        id: &ClientId,
        only: Vec<String>,
        requested_by: &Authenticated,
    ) -> impl Future<Output = Result<DeploymentRef, ControlError>> + Send {
        let _ = (id, only, requested_by);
        async { Err(ControlError::NotFound) }
    }

    /// Journals an upgrade of the client to another release, recording who asked;
    /// `Invalid` naming `to` when the move is not allowed.
    fn upgrade_client(
        &self,
        id: &ClientId,
        to: String,
        requested_by: &Authenticated,
    ) -> impl Future<Output = Result<DeploymentRef, ControlError>> + Send {
        let _ = (id, to, requested_by);
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/clients/{id}/admin-password` (operator): generates a new admin password,
    /// journals its reset in every app of the client that has an admin (recording who asked)
    /// and returns it, the only time it is ever shown. `Conflict` when the client is busy or
    /// not running; `Invalid` when none of its apps has an admin.
    fn reset_admin_password(
        &self,
        id: &ClientId,
        requested_by: &Authenticated,
    ) -> impl Future<Output = Result<AdminPasswordReset, ControlError>> + Send {
        let _ = (id, requested_by);
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/rollouts` (operator): plans and journals a rollout of release `to` over
    /// `clients` (every client when `None`) in waves; `Invalid` naming `to` or a settings
    /// field, `Conflict` while another rollout runs. `settings` is already validated.
    fn create_rollout(
        &self,
        to: String,
        clients: Option<Vec<ClientId>>,
        settings: stackbox_core::rollout::RolloutSettings,
        requested_by: &Authenticated,
    ) -> impl Future<Output = Result<RolloutView, ControlError>> + Send {
        let _ = (to, clients, settings, requested_by);
        async { Err(ControlError::NotFound) }
    }

    /// `GET /v1/rollouts` (operator): the newest rollouts first.
    fn list_rollouts(&self) -> impl Future<Output = Result<RolloutList, ControlError>> + Send {
        async { Err(ControlError::NotFound) }
    }

    /// `GET /v1/rollouts/{id}` (operator); `NotFound` for a malformed or unknown id.
    fn get_rollout(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<RolloutView, ControlError>> + Send {
        let _ = id;
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/rollouts/{id}/halt` (operator): nothing new starts, the upgrades running
    /// finish; the rollout as it stands.
    fn halt_rollout(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<RolloutView, ControlError>> + Send {
        let _ = id;
        async { Err(ControlError::NotFound) }
    }

    fn create_backup(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = Result<DeploymentRef, ControlError>> + Send {
        let _ = id;
        async { Err(ControlError::NotFound) }
    }

    /// `GET /v1/clients/{id}/backups` (operator, or that client's token): the client's
    /// backups, newest first, and their summary.
    fn list_backups(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = Result<BackupList, ControlError>> + Send {
        let _ = id;
        async { Err(ControlError::NotFound) }
    }

    /// `GET /v1/clients/{id}/logs` (operator, or that client's token): the client's container
    /// log lines, the last `tail` of each container (in time order), then with `follow`
    /// every new one until its containers stop. The app's lines are passed as they are.
    /// The default answers 404: a control plane without an engine has no logs.
    fn client_logs(
        &self,
        id: &ClientId,
        query: LogQuery,
    ) -> impl Future<Output = Result<BoxStream<'static, LogLine>, ControlError>> + Send {
        let _ = (id, query);
        async { Err(ControlError::NotFound) }
    }

    /// `GET /v1/clients/{id}/usage` (operator, or that client's token): the client's
    /// resource use over the last `window_seconds`. The default answers 404: a control plane
    /// without a collector has no readings.
    fn client_usage(
        &self,
        id: &ClientId,
        window_seconds: u64,
    ) -> impl Future<Output = Result<crate::monitoring::ClientUsageView, ControlError>> + Send {
        let _ = (id, window_seconds);
        async { Err(ControlError::NotFound) }
    }

    /// `GET /v1/alerts` (operator; a client token gets its own client's): alerts newest
    /// first. The default answers an empty list: a control plane without alert rules has
    /// none.
    fn list_alerts(
        &self,
        query: crate::monitoring::AlertQuery,
    ) -> impl Future<Output = Result<crate::monitoring::AlertList, ControlError>> + Send {
        let _ = query;
        async { Ok(crate::monitoring::AlertList { alerts: Vec::new() }) }
    }

    /// Appends a change asked through the API to the audit log, once it was answered. The
    /// default keeps nothing: a control plane without a store has no log.
    fn record_audit(
        &self,
        entry: crate::audit::AuditEntry,
    ) -> impl Future<Output = Result<(), ControlError>> + Send {
        let _ = entry;
        async { Ok(()) }
    }

    /// `GET /v1/audit` (operator; a client token gets its own client's): newest first. The
    /// default answers an empty log.
    fn list_audit(
        &self,
        query: crate::audit::AuditQuery,
    ) -> impl Future<Output = Result<crate::audit::AuditList, ControlError>> + Send {
        let _ = query;
        async {
            Ok(crate::audit::AuditList {
                entries: Vec::new(),
                next: None,
            })
        }
    }

    /// `POST /v1/clients/{id}/backups/{snapshot}/restore` (operator): journals a `restore`
    /// (a safety backup first, then the client's data replaced by the snapshot's). The API
    /// has already checked the `confirm` parameter. `Conflict` when busy.
    fn restore_backup(
        &self,
        id: &ClientId,
        snapshot: &str,
    ) -> impl Future<Output = Result<DeploymentRef, ControlError>> + Send {
        let _ = (id, snapshot);
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/clients/{id}/backups/{snapshot}/verify` (operator): journals a `verify` (the
    /// snapshot restored into a throwaway copy and compared with its manifest). `Conflict`
    /// when busy.
    fn verify_backup(
        &self,
        id: &ClientId,
        snapshot: &str,
    ) -> impl Future<Output = Result<DeploymentRef, ControlError>> + Send {
        let _ = (id, snapshot);
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/clients/{id}/clone` (operator): stores a new client with `id`'s
    /// configuration at `domain` (validated by the core) and journals its `clone` deployment
    /// from `snapshot` (`None`: the latest successful backup). `Conflict` when the domain is
    /// taken or `id` has no successful backup.
    fn clone_client(
        &self,
        id: &ClientId,
        domain: Domain,
        snapshot: Option<String>,
    ) -> impl Future<Output = Result<ClonedClient, ControlError>> + Send {
        let _ = (id, domain, snapshot);
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/signup` (public): stores a pending sign-up for a validated configuration
    /// (its `admin_email` is the contact address) and opens a payment session for it. The
    /// default answers 404: a control plane without onboarding has no such route.
    fn signup(
        &self,
        spec: ClientSpec,
    ) -> impl Future<Output = Result<SignupAccepted, ControlError>> + Send {
        let _ = spec;
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/webhooks/stripe` (public, authenticated by its signature): `signature` is the
    /// `Stripe-Signature` header, `body` the raw bytes that were signed. A signature that does
    /// not verify is [`ControlError::BadRequest`]; an event already handled is
    /// [`WebhookOutcome::Duplicate`].
    fn stripe_webhook(
        &self,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<WebhookOutcome, ControlError>> + Send {
        let _ = (signature, body);
        async { Err(ControlError::NotFound) }
    }

    /// `POST /v1/clients/{id}/welcome` (operator): the welcome e-mail again, with a new
    /// one-time link; earlier links stop working. `Conflict` when no mail server is set up.
    fn resend_welcome(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = Result<(), ControlError>> + Send {
        let _ = id;
        async { Err(ControlError::NotFound) }
    }

    /// `GET` (`reveal = false`) and `POST` (`reveal = true`) `/welcome/{token}`: the one-time
    /// page with a client's admin credentials. The token is passed as written in the URL.
    fn credentials_page(
        &self,
        token: String,
        reveal: bool,
    ) -> impl Future<Output = Result<HtmlPage, ControlError>> + Send {
        let _ = (token, reveal);
        async { Err(ControlError::NotFound) }
    }
}

/// What `POST /v1/signup` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SignupAccepted {
    /// The pending sign-up (`sgn_…`).
    pub signup_id: String,
    /// Where to send the buyer: the payment provider's checkout page.
    pub checkout_url: String,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Handled now.
    Processed,
    /// Handled before (a redelivery): nothing done again.
    Duplicate,
    /// A kind of event StackBox does not act on.
    Ignored,
}

/// An HTML page for a person (not a program), with its status (200, or 410 for a link that is
/// used up or expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlPage {
    pub status: u16,
    pub html: String,
}

/// [`ControlPlane`] made object-safe (boxed futures), so the handlers are plain functions over
/// one state type: what `utoipa-axum` needs to register them, and one monomorphisation only.
pub(crate) trait DynControl: Send + Sync + 'static {
    fn verify_token<'a>(
        &'a self,
        bearer: &'a str,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, ControlError>>;
    fn create_client(&self, spec: ClientSpec)
        -> BoxFuture<'_, Result<CreatedClient, ControlError>>;
    fn list_clients(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, Result<Page<ClientSummary>, ControlError>>;
    fn get_client<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<ClientDetail, ControlError>>;
    fn client_action<'a>(
        &'a self,
        id: &'a ClientId,
        action: ClientAction,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>>;
    fn delete_client<'a>(
        &'a self,
        id: &'a ClientId,
        delete_backups: bool,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>>;
    fn client_spec<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<ClientSpec, ControlError>>;
    fn update_client<'a>(
        &'a self,
        id: &'a ClientId,
        spec: ClientSpec,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<Option<ClientChange>, ControlError>>;
    fn client_deployments<'a>(
        &'a self,
        id: &'a ClientId,
        query: DeploymentQuery,
    ) -> BoxFuture<'a, Result<Page<DeploymentSummary>, ControlError>>;
    fn list_tokens(&self) -> BoxFuture<'_, Result<TokenList, ControlError>>;
    fn revoke_token<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ControlError>>;
    fn get_deployment<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<DeploymentView, ControlError>>;
    fn deployment_events<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, DeploymentEvent>, ControlError>>;
    fn metrics(&self) -> BoxFuture<'_, Result<MetricsSnapshot, ControlError>>;
    fn signup(&self, spec: ClientSpec) -> BoxFuture<'_, Result<SignupAccepted, ControlError>>;
    fn stripe_webhook(
        &self,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<WebhookOutcome, ControlError>>;
    fn credentials_page(
        &self,
        token: String,
        reveal: bool,
    ) -> BoxFuture<'_, Result<HtmlPage, ControlError>>;
    fn resend_welcome<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<(), ControlError>>;
    fn rotate_secrets<'a>(
        &'a self,
        id: &'a ClientId,
        only: Vec<String>,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>>;
    fn upgrade_client<'a>(
        &'a self,
        id: &'a ClientId,
        to: String,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>>;
    fn reset_admin_password<'a>(
        &'a self,
        id: &'a ClientId,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<AdminPasswordReset, ControlError>>;
    fn create_rollout<'a>(
        &'a self,
        to: String,
        clients: Option<Vec<ClientId>>,
        settings: stackbox_core::rollout::RolloutSettings,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<RolloutView, ControlError>>;
    fn list_rollouts(&self) -> BoxFuture<'_, Result<RolloutList, ControlError>>;
    fn get_rollout<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RolloutView, ControlError>>;
    fn halt_rollout<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RolloutView, ControlError>>;
    fn create_backup<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>>;
    fn list_backups<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<BackupList, ControlError>>;
    fn client_logs<'a>(
        &'a self,
        id: &'a ClientId,
        query: LogQuery,
    ) -> BoxFuture<'a, Result<BoxStream<'static, LogLine>, ControlError>>;
    fn client_usage<'a>(
        &'a self,
        id: &'a ClientId,
        window_seconds: u64,
    ) -> BoxFuture<'a, Result<crate::monitoring::ClientUsageView, ControlError>>;
    fn list_alerts(
        &self,
        query: crate::monitoring::AlertQuery,
    ) -> BoxFuture<'_, Result<crate::monitoring::AlertList, ControlError>>;
    fn record_audit(
        &self,
        entry: crate::audit::AuditEntry,
    ) -> BoxFuture<'_, Result<(), ControlError>>;
    fn list_audit(
        &self,
        query: crate::audit::AuditQuery,
    ) -> BoxFuture<'_, Result<crate::audit::AuditList, ControlError>>;
    fn restore_backup<'a>(
        &'a self,
        id: &'a ClientId,
        snapshot: &'a str,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>>;
    fn verify_backup<'a>(
        &'a self,
        id: &'a ClientId,
        snapshot: &'a str,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>>;
    fn clone_client<'a>(
        &'a self,
        id: &'a ClientId,
        domain: Domain,
        snapshot: Option<String>,
    ) -> BoxFuture<'a, Result<ClonedClient, ControlError>>;
}

impl<C: ControlPlane> DynControl for C {
    fn verify_token<'a>(
        &'a self,
        bearer: &'a str,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, ControlError>> {
        Box::pin(ControlPlane::verify_token(self, bearer))
    }
    fn create_client(
        &self,
        spec: ClientSpec,
    ) -> BoxFuture<'_, Result<CreatedClient, ControlError>> {
        Box::pin(ControlPlane::create_client(self, spec))
    }
    fn list_clients(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, Result<Page<ClientSummary>, ControlError>> {
        Box::pin(ControlPlane::list_clients(self, query))
    }
    fn get_client<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<ClientDetail, ControlError>> {
        Box::pin(ControlPlane::get_client(self, id))
    }
    fn client_action<'a>(
        &'a self,
        id: &'a ClientId,
        action: ClientAction,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>> {
        Box::pin(ControlPlane::client_action(self, id, action, requested_by))
    }
    fn delete_client<'a>(
        &'a self,
        id: &'a ClientId,
        delete_backups: bool,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>> {
        Box::pin(ControlPlane::delete_client(
            self,
            id,
            delete_backups,
            requested_by,
        ))
    }
    fn client_spec<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<ClientSpec, ControlError>> {
        Box::pin(ControlPlane::client_spec(self, id))
    }
    fn update_client<'a>(
        &'a self,
        id: &'a ClientId,
        spec: ClientSpec,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<Option<ClientChange>, ControlError>> {
        Box::pin(ControlPlane::update_client(self, id, spec, requested_by))
    }
    fn client_deployments<'a>(
        &'a self,
        id: &'a ClientId,
        query: DeploymentQuery,
    ) -> BoxFuture<'a, Result<Page<DeploymentSummary>, ControlError>> {
        Box::pin(ControlPlane::client_deployments(self, id, query))
    }
    fn list_tokens(&self) -> BoxFuture<'_, Result<TokenList, ControlError>> {
        Box::pin(ControlPlane::list_tokens(self))
    }
    fn revoke_token<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(ControlPlane::revoke_token(self, id))
    }
    fn get_deployment<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<DeploymentView, ControlError>> {
        Box::pin(ControlPlane::get_deployment(self, id))
    }
    fn deployment_events<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, DeploymentEvent>, ControlError>> {
        Box::pin(ControlPlane::deployment_events(self, id))
    }
    fn metrics(&self) -> BoxFuture<'_, Result<MetricsSnapshot, ControlError>> {
        Box::pin(ControlPlane::metrics(self))
    }
    fn signup(&self, spec: ClientSpec) -> BoxFuture<'_, Result<SignupAccepted, ControlError>> {
        Box::pin(ControlPlane::signup(self, spec))
    }
    fn stripe_webhook(
        &self,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<WebhookOutcome, ControlError>> {
        Box::pin(ControlPlane::stripe_webhook(self, signature, body))
    }
    fn credentials_page(
        &self,
        token: String,
        reveal: bool,
    ) -> BoxFuture<'_, Result<HtmlPage, ControlError>> {
        Box::pin(ControlPlane::credentials_page(self, token, reveal))
    }
    fn resend_welcome<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(ControlPlane::resend_welcome(self, id))
    }
    fn rotate_secrets<'a>(
        &'a self,
        id: &'a ClientId,
        only: Vec<String>,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>> {
        Box::pin(ControlPlane::rotate_secrets(self, id, only, requested_by))
    }
    fn upgrade_client<'a>(
        &'a self,
        id: &'a ClientId,
        to: String,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>> {
        Box::pin(ControlPlane::upgrade_client(self, id, to, requested_by))
    }
    fn reset_admin_password<'a>(
        &'a self,
        id: &'a ClientId,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<AdminPasswordReset, ControlError>> {
        Box::pin(ControlPlane::reset_admin_password(self, id, requested_by))
    }
    fn create_rollout<'a>(
        &'a self,
        to: String,
        clients: Option<Vec<ClientId>>,
        settings: stackbox_core::rollout::RolloutSettings,
        requested_by: &'a Authenticated,
    ) -> BoxFuture<'a, Result<RolloutView, ControlError>> {
        Box::pin(ControlPlane::create_rollout(
            self,
            to,
            clients,
            settings,
            requested_by,
        ))
    }
    fn list_rollouts(&self) -> BoxFuture<'_, Result<RolloutList, ControlError>> {
        Box::pin(ControlPlane::list_rollouts(self))
    }
    fn get_rollout<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RolloutView, ControlError>> {
        Box::pin(ControlPlane::get_rollout(self, id))
    }
    fn halt_rollout<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RolloutView, ControlError>> {
        Box::pin(ControlPlane::halt_rollout(self, id))
    }
    fn create_backup<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>> {
        Box::pin(ControlPlane::create_backup(self, id))
    }
    fn list_backups<'a>(
        &'a self,
        id: &'a ClientId,
    ) -> BoxFuture<'a, Result<BackupList, ControlError>> {
        Box::pin(ControlPlane::list_backups(self, id))
    }
    fn client_logs<'a>(
        &'a self,
        id: &'a ClientId,
        query: LogQuery,
    ) -> BoxFuture<'a, Result<BoxStream<'static, LogLine>, ControlError>> {
        Box::pin(ControlPlane::client_logs(self, id, query))
    }
    fn client_usage<'a>(
        &'a self,
        id: &'a ClientId,
        window_seconds: u64,
    ) -> BoxFuture<'a, Result<crate::monitoring::ClientUsageView, ControlError>> {
        Box::pin(ControlPlane::client_usage(self, id, window_seconds))
    }
    fn list_alerts(
        &self,
        query: crate::monitoring::AlertQuery,
    ) -> BoxFuture<'_, Result<crate::monitoring::AlertList, ControlError>> {
        Box::pin(ControlPlane::list_alerts(self, query))
    }
    fn record_audit(
        &self,
        entry: crate::audit::AuditEntry,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        Box::pin(ControlPlane::record_audit(self, entry))
    }
    fn list_audit(
        &self,
        query: crate::audit::AuditQuery,
    ) -> BoxFuture<'_, Result<crate::audit::AuditList, ControlError>> {
        Box::pin(ControlPlane::list_audit(self, query))
    }
    fn restore_backup<'a>(
        &'a self,
        id: &'a ClientId,
        snapshot: &'a str,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>> {
        Box::pin(ControlPlane::restore_backup(self, id, snapshot))
    }
    fn verify_backup<'a>(
        &'a self,
        id: &'a ClientId,
        snapshot: &'a str,
    ) -> BoxFuture<'a, Result<DeploymentRef, ControlError>> {
        Box::pin(ControlPlane::verify_backup(self, id, snapshot))
    }
    fn clone_client<'a>(
        &'a self,
        id: &'a ClientId,
        domain: Domain,
        snapshot: Option<String>,
    ) -> BoxFuture<'a, Result<ClonedClient, ControlError>> {
        Box::pin(ControlPlane::clone_client(self, id, domain, snapshot))
    }
}
