//! What the API sends and receives: the data transfer objects, with their JSON form (serde)
//! and their OpenAPI schema (utoipa) derived from the same definitions.
//!
//! The inputs ([`NewClient`], [`CloneRequest`]) refuse unknown fields. Outputs derive `Deserialize` too, so that a
//! Rust client (the CLI's `--server` mode) reads responses with the very types the server
//! writes; they accept unknown fields, so that a server may add fields without breaking older
//! clients.
//!
//! Secrets: [`Credentials`] is the only type that carries one, and only [`CreatedClient`] and
//! [`AdminPasswordReset`] hold it: the responses to `POST /v1/clients` and `POST
//! /v1/clients/{id}/admin-password`, each sent once for the password it generated.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::plan::{App, Plan};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::time::Timestamp;

/// Declares a closed set of lowercase names with `ALL`, `as_str` and `from_name`, serialized
/// as those names, and documented in the OpenAPI document as a string enum.
macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:tt,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses a name as written on the wire; `None` for anything else.
            pub fn from_name(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

name_enum!(
    /// Where a client stands, as the control plane last saw it (the store's `ClientState`).
    ClientState {
        /// Accepted; its first deployment has not finished yet.
        Provisioning = "provisioning",
        /// Every service running and healthy.
        Running = "running",
        /// Every service running, some still passing their first health checks.
        Starting = "starting",
        /// Some services running, others missing, stopped or unhealthy.
        Degraded = "degraded",
        /// Stopped on purpose; data kept.
        Stopped = "stopped",
        /// Nothing serves, or the last deployment failed.
        Failed = "failed",
        /// No container on the engine.
        Absent = "absent",
        /// A destroy is under way.
        Destroying = "destroying",
    }
);

name_enum!(
    /// What a deployment does.
    DeploymentKind {
        Create = "create",
        Redeploy = "redeploy",
        Stop = "stop",
        Start = "start",
        Destroy = "destroy",
        /// A backup of the client's databases and volumes, checked before it counts.
        Backup = "backup",
        /// The client's data replaced with a snapshot's (after a safety backup).
        Restore = "restore",
        /// A snapshot restored into a throwaway copy and compared with its manifest.
        Verify = "verify",
        /// A new client made from another's snapshot (the deployment is the new client's).
        Clone = "clone",
    }
);

name_enum!(
    /// Where a deployment stands. `pending` and `running` are unfinished.
    DeploymentStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Failed, and what it had done was undone.
        Compensated = "compensated",
    }
);

impl DeploymentStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, DeploymentStatus::Pending | DeploymentStatus::Running)
    }
}

name_enum!(
    /// How a finished deployment ended: the `outcome` label of `stackbox_deployments_total`.
    DeploymentOutcome {
        Succeeded = "succeeded",
        Failed = "failed",
        Compensated = "compensated",
    }
);

name_enum!(
    /// Why a backup was taken.
    BackupReason {
        /// Asked for (`POST /v1/clients/{id}/backups`, `stackbox backup create`).
        Manual = "manual",
        /// The operator's schedule.
        Scheduled = "scheduled",
        /// Taken before a restore, so that the restore can be undone.
        Safety = "safety",
        /// Taken before the client was destroyed.
        PreDestroy = "pre-destroy",
    }
);

name_enum!(
    /// Where a backup stands. `succeeded` only once it was uploaded and the repository checked.
    BackupStatus {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
);

name_enum!(
    /// Where one step of a deployment stands.
    StepStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
    }
);

name_enum!(
    /// What an API token may do.
    TokenRole {
        /// Everything.
        Operator = "operator",
        /// Read its one client, its deployments and its backups.
        Client = "client",
    }
);

name_enum!(
    /// Who asked for a deployment, in kind.
    RequesterKind {
        /// A request through this API: `token_id` and `role` say with which token.
        Token = "token",
        /// The backup schedule of `stackbox serve`.
        Schedule = "schedule",
    }
);

name_enum!(
    /// A service's container as the engine reports it, or `missing` when the client should
    /// have the service and the engine holds no container for it.
    ServiceState {
        Created = "created",
        Running = "running",
        Paused = "paused",
        Restarting = "restarting",
        Removing = "removing",
        Exited = "exited",
        Dead = "dead",
        Missing = "missing",
    }
);

name_enum!(
    /// A container's health-check status.
    HealthStatus {
        Starting = "starting",
        Healthy = "healthy",
        Unhealthy = "unhealthy",
    }
);

/// The error body of every 4xx and 5xx response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong. `code` is stable and meant for programs; `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `bad_request`, `malformed_json`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `payload_too_large`, `unsupported_media_type`,
    /// `invalid_field`, `internal`, `unavailable`.
    #[schema(example = "invalid_field")]
    pub code: String,
    /// What is wrong and how to fix it. A 500's message is generic: details go to the log.
    #[schema(example = "domain: has an empty label (two dots in a row)")]
    pub message: String,
    /// The field at fault (`domain`, `features.calcom`, `limit`, `confirm`, …), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "domain")]
    pub field: Option<String>,
}

/// The body of `POST /v1/clients`: the client configuration, with the same fields as a
/// client's TOML file. Validation is the core's (`ClientSpec::from_file`), so the API and the
/// CLI accept exactly the same configurations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// Pins the client id (`<slug>-<8 hex digits>`); assigned by StackBox when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "smithrealestate-e11f059b")]
    pub client_id: Option<String>,
    /// The business's name: any printable Unicode, at most 100 characters.
    #[schema(required = true, value_type = String, example = "Smith Real Estate")]
    pub company_name: Option<String>,
    /// The client's domain; every service is a subdomain of it.
    #[schema(required = true, value_type = String, example = "smithrealestate.stackbox.io")]
    pub domain: Option<String>,
    /// `starter`, `professional` or `enterprise`.
    #[schema(required = true, value_type = String, example = "professional")]
    pub plan: Option<String>,
    /// The administrator's e-mail address.
    #[schema(required = true, value_type = String, example = "owner@smithrealestate.com")]
    pub admin_email: Option<String>,
    /// `#rrggbb` or `#rgb`; a default blue when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "#003366")]
    pub brand_color: Option<String>,
    /// `local` (containers on this host) or `aws` (certificate, database, secrets, load
    /// balancer, CDN and DNS on AWS); the operator's default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "local")]
    pub infrastructure: Option<String>,
    /// Apps of the plan switched off (or on) by key: `espocrm`, `nextcloud`, `calcom`,
    /// `plausible`, `mailtrain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = features_schema)]
    pub features: Option<BTreeMap<String, bool>>,
}

/// The body of `PATCH /v1/clients/{id}`: a JSON merge patch (RFC 7386) of the client's
/// configuration, whose fields are those of [`NewClient`]. A field left out stays as it is;
/// `null` removes it (an optional one takes its default: `brand_color` the default blue,
/// `infrastructure` the operator's provider, an app switch the plan's choice); `features`
/// merges app by app. The result is validated exactly like a new client's configuration.
/// `client_id` may only repeat the client's id. (This type documents the body; the server
/// reads it as a patch.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPatch {
    /// Only the client's own id: the id cannot change.
    #[schema(nullable = false, example = "smithrealestate-e11f059b")]
    pub client_id: Option<String>,
    #[schema(nullable = false, example = "Smith & Sons Real Estate")]
    pub company_name: Option<String>,
    /// Another client's domain is refused with 409.
    #[schema(nullable = false, example = "smithandsons.stackbox.io")]
    pub domain: Option<String>,
    /// `starter`, `professional` or `enterprise`; apps switched on above the plan are refused.
    #[schema(nullable = false, example = "enterprise")]
    pub plan: Option<String>,
    #[schema(nullable = false, example = "office@smithrealestate.com")]
    pub admin_email: Option<String>,
    /// `null` sets the default blue back.
    #[schema(example = "#aa0000")]
    pub brand_color: Option<String>,
    /// The provider the client runs on cannot change (its data is there).
    pub infrastructure: Option<String>,
    /// App key → on/off, merged app by app; `null` for an app gives it back to the plan.
    #[schema(schema_with = feature_patch_schema)]
    pub features: Option<BTreeMap<String, Option<bool>>>,
}

/// The one-time login of a new client's apps. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(example = "admin")]
    pub admin_username: String,
    pub admin_password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("admin_username", &self.admin_username)
            .field("admin_password", &"<redacted>")
            .finish()
    }
}

/// The answer to `POST /v1/clients` (202): the only response that ever carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedClient {
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-e11f059b")]
    pub client_id: ClientId,
    /// Follow it at `/v1/deployments/{deployment_id}` and its `/events`.
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub deployment_id: String,
    /// Service name (`website` or an app key) → URL, such as `espocrm` →
    /// `https://crm.smithrealestate.stackbox.io`: `stackbox_core::stack::service_urls`, as the
    /// CLI prints them.
    pub services: BTreeMap<String, String>,
    /// Shown once: never returned again.
    pub credentials: Credentials,
}

name_enum!(
    /// What an admin password reset does to one app.
    AdminResetOutcome {
        /// Set with the app's own command in its running container (Nextcloud's `occ
        /// user:resetpassword`, EspoCRM's `set-password`).
        Set = "set",
        /// Set by recreating the app with the new value in its environment, which it applies
        /// on every start (Mailtrain).
        Recreated = "recreated",
        /// The app has no admin account (Cal.com, Plausible: the first registered account
        /// owns them); `reason` says so.
        NotApplicable = "not-applicable",
    }
);

/// One app in an admin password reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppPasswordReset {
    /// The app's key (`nextcloud`, `espocrm`, `mailtrain`, `calcom`, `plausible`).
    #[schema(example = "nextcloud")]
    pub app: String,
    pub outcome: AdminResetOutcome,
    /// Why nothing happens, for `not-applicable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to `POST /v1/clients/{id}/admin-password` (202): the new password, shown this
/// once, and what the reset does in each app. Follow the deployment for the outcome: when it
/// does not succeed, the apps keep the previous password (or its error names the app that
/// could not be set back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminPasswordReset {
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-e11f059b")]
    pub client_id: ClientId,
    /// Follow it at `/v1/deployments/{deployment_id}` and its `/events`.
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub deployment_id: String,
    /// Shown once: never returned again.
    pub credentials: Credentials,
    /// Every app of the client, in the order the reset goes through them.
    pub apps: Vec<AppPasswordReset>,
}

/// One row of `GET /v1/clients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientSummary {
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-e11f059b")]
    pub client_id: ClientId,
    pub company_name: String,
    pub domain: String,
    #[schema(schema_with = plan_schema)]
    pub plan: Plan,
    pub state: ClientState,
    pub created_at: Timestamp,
}

/// A client's configuration as stored, without its id (beside it) and without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientConfiguration {
    pub company_name: String,
    pub domain: String,
    #[schema(schema_with = plan_schema)]
    pub plan: Plan,
    pub admin_email: String,
    pub brand_color: String,
    /// The provider the configuration names (`local` or `aws`); absent when it names none
    /// and the operator's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "local")]
    pub infrastructure: Option<String>,
    /// Explicit app switches, by app key.
    #[schema(schema_with = features_schema)]
    pub features: BTreeMap<App, bool>,
}

impl ClientConfiguration {
    /// The configuration of a validated spec (the spec holds no secret).
    pub fn from_spec(spec: &ClientSpec) -> ClientConfiguration {
        ClientConfiguration {
            company_name: spec.company_name.as_str().to_string(),
            domain: spec.domain.as_str().to_string(),
            plan: spec.plan,
            admin_email: spec.admin_email.as_str().to_string(),
            brand_color: spec.brand_color.as_str().to_string(),
            infrastructure: spec.infrastructure.map(|p| p.key().to_string()),
            features: spec.features.clone(),
        }
    }
}

/// One service of a client as the engine (or the health monitor) last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceHealth {
    /// The compose service name (`traefik`, `website`, `espocrm`, …).
    pub service: String,
    pub state: ServiceState,
    /// The health check's verdict; absent when the service has none or is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u64>,
    /// For people: why it is unhealthy, the engine's one-line status, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /v1/clients/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientDetail {
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-e11f059b")]
    pub client_id: ClientId,
    pub configuration: ClientConfiguration,
    pub state: ClientState,
    /// Why the client is in its state (a failed service, a failed step), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// Service name (`website` or an app key) → URL, as in [`CreatedClient::services`].
    pub services: BTreeMap<String, String>,
    /// Per-service state and health.
    pub health: Vec<ServiceHealth>,
    /// The client's newest deployment, so that a client token can find its deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_deployment_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The client's backups at a glance (`missing` when the last successful one is too old);
    /// absent when the control plane does not back clients up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupState>,
}

/// One backup of a client (one restic snapshot once it succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupView {
    #[schema(example = "bkp_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub id: String,
    /// The snapshot's id in the client's repository (64 hex digits); absent until the upload
    /// finished. Restore, verify and clone take it, or its first 8 or more digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "4f9c2a7be0d14c3a9b8e7f6d5c4b3a2918e7d6c5b4a39281f0e1d2c3b4a59687")]
    pub snapshot: Option<String>,
    pub reason: BackupReason,
    pub status: BackupStatus,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why it failed, for people (never an internal error text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes this backup added to the repository (after deduplication and compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    /// Bytes of data the snapshot holds (dumps and volumes, before deduplication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Files the snapshot holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_total: Option<u64>,
    /// When the snapshot was last verified (restored into a throwaway copy and compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<Timestamp>,
    /// The last verification's verdict; absent when never verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_ok: Option<bool>,
    /// What the last verification found wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// The deployment that took it; absent for one taken outside the API (the CLI, the
    /// schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub deployment_id: Option<String>,
}

/// A client's backups summed up: also the `backup` of `GET /v1/clients/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupState {
    /// When the last successful backup started: the point in time its data is from. Absent
    /// when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Timestamp>,
    /// When a snapshot of the client was last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_at: Option<Timestamp>,
    /// That verification's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify_ok: Option<bool>,
    /// The last successful backup is older than the operator's schedule allows (without one,
    /// the client's creation is).
    pub missing: bool,
}

/// Which output stream of a container a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStreamKind {
    Stdout,
    Stderr,
}

/// One line of a client's container log, as the app wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// The service (`website`, `nextcloud`, …).
    pub service: String,
    pub stream: LogStreamKind,
    /// The engine's RFC 3339 timestamp of the line (UTC, up to nanoseconds).
    pub time: String,
    pub line: String,
}

/// `GET /v1/clients/{id}/logs` without `follow`: the last lines, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLines {
    pub lines: Vec<LogLine>,
}

/// `GET /v1/clients/{id}/backups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupList {
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-e11f059b")]
    pub client_id: ClientId,
    pub state: BackupState,
    /// Newest first.
    pub backups: Vec<BackupView>,
}

/// The body of `POST /v1/clients/{id}/clone`: a new client with the same configuration and a
/// snapshot's data, at another domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    /// The new client's domain (validated like a client's `domain`).
    #[schema(example = "staging.smithrealestate.stackbox.io")]
    pub domain: String,
    /// The snapshot to clone (an id, 8 or more of its digits, or `latest`); the latest
    /// successful backup when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "latest")]
    pub snapshot: Option<String>,
}

/// The body of `POST /v1/clients/{id}/rotate-secrets` (optional: no body rotates every secret
/// that can be rotated while the client runs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationRequest {
    /// Only these secrets, by their `.env` names; every one that can be rotated live when
    /// empty or left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!(["MYSQL_ROOT_PASSWORD"]))]
    pub only: Vec<String>,
}

/// The body of `POST /v1/clients/{id}/upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The release to move to (`stackbox releases` lists them; `base` is the catalog itself).
    #[schema(example = "2027.01")]
    pub to: String,
}

/// The answer to `POST /v1/clients/{id}/clone` (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClonedClient {
    /// The new client.
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-5a1e9c03")]
    pub client_id: ClientId,
    /// Follow it at `/v1/deployments/{deployment_id}` and its `/events`.
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub deployment_id: String,
}

/// The answer to every request that starts a deployment (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentRef {
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub deployment_id: String,
}

/// One step of a deployment: also the `data` of each server-sent event of
/// `GET /v1/deployments/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// `render`, `infrastructure`, `containers`, `health`, `configure`, `notify`, …
    pub name: String,
    pub status: StepStatus,
    /// How many times the step was started; above 1 when an interrupted run was resumed.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// What went wrong, for people (never an internal error text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the step did, as journaled: files written, networks and volumes, services
    /// created or kept, the AWS resources made (names and ARNs), the welcome e-mail queued.
    /// Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
}

/// `GET /v1/deployments/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentView {
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub id: String,
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-e11f059b")]
    pub client_id: ClientId,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    /// In order.
    pub steps: Vec<StepView>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// What went wrong, for people (never an internal error text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Who asked for a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestedBy {
    pub by: RequesterKind,
    /// The API token's id (never the token), for `by = token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "tok_4f9c2a7be0d14c3a")]
    pub token_id: Option<String>,
    /// That token's role, for `by = token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<TokenRole>,
}

/// One field of a client's configuration as a change found it and left it; `null` for a
/// field that was not set (an app switch not written, the operator's default provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldChange {
    #[schema(example = "#003366")]
    pub from: serde_json::Value,
    #[schema(example = "#aa0000")]
    pub to: serde_json::Value,
}

/// A deployment's steps in brief: how many stand where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepsSummary {
    pub total: u32,
    pub pending: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
    /// The step that failed, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "health")]
    pub failed_step: Option<String>,
}

impl StepsSummary {
    /// The summary of these steps.
    pub fn of(steps: &[StepView]) -> StepsSummary {
        let mut summary = StepsSummary {
            total: u32::try_from(steps.len()).unwrap_or(u32::MAX),
            ..StepsSummary::default()
        };
        for step in steps {
            let count = match step.status {
                StepStatus::Pending => &mut summary.pending,
                StepStatus::Running => &mut summary.running,
                StepStatus::Succeeded => &mut summary.succeeded,
                StepStatus::Failed => &mut summary.failed,
                StepStatus::Skipped => &mut summary.skipped,
            };
            *count += 1;
            if step.status == StepStatus::Failed && summary.failed_step.is_none() {
                summary.failed_step = Some(step.name.clone());
            }
        }
        summary
    }
}

/// One deployment of `GET /v1/clients/{id}/deployments`: what it did, how it went, who asked,
/// and for a configuration change, the change (its steps in full are at
/// `/v1/deployments/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentSummary {
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub id: String,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// What went wrong, for people (never an internal error text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: StepsSummary,
    /// Absent when not recorded: deployments the control plane starts on its own account
    /// (billing) and those made before StackBox recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<RequestedBy>,
    /// For a change of the client's configuration (`PATCH /v1/clients/{id}`): each changed
    /// field (`company_name`, `features.calcom`, …) with its old and new value. Empty
    /// (left out) for other deployments. Never a secret: a configuration holds none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, FieldChange>,
}

/// The answer to a `PATCH /v1/clients/{id}` that changed something (202): the redeploy that
/// applies the change, and the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientChange {
    /// Follow it at `/v1/deployments/{deployment_id}` and its `/events`.
    #[schema(example = "dep_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub deployment_id: String,
    /// Each changed field with its old and new value.
    pub changes: BTreeMap<String, FieldChange>,
}

/// An API token as `GET /v1/tokens` lists it: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// What `DELETE /v1/tokens/{id}` and `stackbox token revoke` take.
    #[schema(example = "tok_4f9c2a7be0d14c3a")]
    pub id: String,
    pub role: TokenRole,
    /// The client a client token reads; absent for operator tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "smithrealestate-e11f059b")]
    pub client_id: Option<String>,
    pub created_at: Timestamp,
    /// When the token was last used, to within a minute; absent when never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// Oldest first.
    pub tokens: Vec<TokenView>,
}

/// The `data` of the last server-sent event of a deployment's stream (`event: end`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentEnd {
    pub status: DeploymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a deployment's event stream yields: step changes, then the end. In JSON (the `data`
/// of a server-sent event) each is its payload alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DeploymentEvent {
    /// A step was created, started, finished, failed or skipped. Sent as `data: <StepView>`.
    Step(StepView),
    /// How far a running step is (a backup's dumps and upload: bytes and files). Sent as
    /// `event: progress` with `data: <StepProgress>`; not replayed to a late subscriber.
    Progress(StepProgress),
    /// The deployment finished. Sent as `event: end` with `data: <DeploymentEnd>`; the API
    /// closes the stream after it.
    End(DeploymentEnd),
}

/// Progress of a running step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepProgress {
    /// The step's name (`backup`, `restore`, …).
    pub step: String,
    /// What happened: `{"event": "phase", "phase": "upload"}`, `{"event": "dumped", "service":
    /// "mysql", "database": "espocrm", "bytes": 3178, "tables": 2}`, `{"event": "upload",
    /// "percent": 0.4, "files_done": 10, "total_files": 25, "bytes_done": …, "total_bytes": …}`, …
    #[schema(value_type = Object)]
    pub progress: serde_json::Value,
}

/// One page of a list, with the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass it as `after` to get the next page; `null` on the last page.
    pub next: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// A plan's name, as an OpenAPI string enum made from [`Plan::ALL`].
pub(crate) fn plan_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Plan::ALL.iter().map(|plan| plan.key())))
        .into()
}

/// The `features` map: app key → on/off, keys from [`App::ALL`].
fn features_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(App::ALL.iter().map(|app| app.key()))),
        ))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::Boolean)))
        .into()
}

/// The `features` of a patch: app key → on, off or `null` (back to the plan's choice).
fn feature_patch_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(App::ALL.iter().map(|app| app.key()))),
        ))
        .additional_properties(Some(
            ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Boolean, Type::Null])),
        ))
        .into()
}

name_enum!(
    /// Where a fleet rollout stands: `running` until it `succeeded` (every client finished
    /// well) or `halted` (a client failed, or the operator halted it).
    RolloutStatus {
        Running = "running",
        Halted = "halted",
        Succeeded = "succeeded",
    }
);

name_enum!(
    /// Where one client of a rollout stands.
    RolloutMemberStatus {
        /// Not started yet.
        Pending = "pending",
        /// Its upgrade runs.
        Running = "running",
        /// Upgraded and running healthy on the new release.
        Succeeded = "succeeded",
        /// Its upgrade failed (it was put back on its release), or it finished unhealthy.
        Failed = "failed",
        /// Left out, with the reason in `detail`.
        Skipped = "skipped",
    }
);

/// The body of `POST /v1/rollouts`: a release for many clients, in waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The release to move the clients to.
    #[schema(example = "2027.01")]
    pub to: String,
    /// Only these clients (every client when left out). Clients that cannot move now are
    /// listed as `skipped` with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub clients: Option<Vec<String>>,
    /// Clients upgraded alone first (1 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub canary: Option<usize>,
    /// Each later wave is this many times the one before (2 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10)]
    pub growth: Option<usize>,
    /// The largest wave (50 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_wave: Option<usize>,
    /// Upgrades running at once within a wave (4 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 32)]
    pub concurrency: Option<usize>,
}

/// One client of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutMemberView {
    #[serde(with = "client_id_serde")]
    #[schema(value_type = String, example = "smithrealestate-e11f059b")]
    pub client_id: ClientId,
    /// 0 is the canary wave.
    pub wave: u32,
    /// The release it ran when the rollout was planned.
    pub from_release: String,
    pub status: RolloutMemberStatus,
    /// Its upgrade's deployment, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How many clients of a rollout stand where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutCounts {
    pub pending: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// `GET /v1/rollouts/{id}`: a rollout and every client's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    #[schema(example = "rol_0195501e2c4a9f3b2d7e8c1a0b4d")]
    pub id: String,
    /// The release the clients move to.
    pub to: String,
    pub status: RolloutStatus,
    pub canary: usize,
    pub growth: usize,
    pub max_wave: usize,
    pub concurrency: usize,
    /// Why it stopped starting upgrades (the first failed client, or the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    pub counts: RolloutCounts,
    /// In the rollout's order (waves in turn).
    pub clients: Vec<RolloutMemberView>,
}

/// `GET /v1/rollouts`: the newest rollouts first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutList {
    pub rollouts: Vec<RolloutView>,
}

/// `ClientId` has `Serialize` in the core but no `Deserialize`: this reads it through
/// `ClientId::parse`, so a response can only hold a valid id.
pub(crate) mod client_id_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use stackbox_core::client::ClientId;

    pub fn serialize<S: Serializer>(id: &ClientId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(id.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ClientId, D::Error> {
        let text = String::deserialize(deserializer)?;
        ClientId::parse(&text).map_err(serde::de::Error::custom)
    }
}
