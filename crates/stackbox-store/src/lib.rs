//! The control plane's durable state: clients, their encrypted secrets, the deployment journal,
//! API tokens, onboarding (sign-ups, Stripe events, billing, the mail outbox and one-time
//! credential links), and backups (each client's sealed repository key, the journal of backup
//! runs and their restore tests, destroyed clients kept for their retention period).
//!
//! # Backends
//!
//! [`Store::open`] takes `sqlite://PATH`, `sqlite:PATH` or a plain path for SQLite (the default:
//! one file under the data directory, created 0600 with its folder if missing, WAL journal,
//! foreign keys on, `synchronous=FULL`), or a `postgres://` / `postgresql://` URL for
//! PostgreSQL. Both run the same migrations (`migrations/*.sql`, embedded), applied by a small
//! versioned runner at every open, all pending ones in one transaction: an up-to-date database
//! is left alone, an edited migration or a database from a newer StackBox is refused.
//!
//! A migration is one file for both engines, `NNNN_name.sql`. Where the engines cannot share
//! a statement, it has a companion per engine, `NNNN_name.sqlite.sql` and
//! `NNNN_name.postgres.sql`, which runs just before the shared file in the same transaction;
//! the checksum recorded for the version is that of what ran on the engine (companion, then
//! shared file), so an edit to either is refused like an edited migration (see
//! `migrations.rs`). Version 3 is the one so far: SQLite cannot alter a CHECK constraint, so
//! its companion rebuilds `deployments` to accept the backup kinds. It copies `deployments`
//! and `deployment_steps` aside and drops the child before the parent, because foreign keys
//! stay on inside the migration's transaction and dropping `deployments` first would run the
//! steps' `ON DELETE CASCADE`; then it creates both as before (indexes included, the partial
//! unique index among them) and copies every row back. PostgreSQL's companion replaces the
//! constraint in place.
//!
//! # One set of SQL for two engines
//!
//! Every query is written once, in `sql.rs`, with PostgreSQL's `$N` placeholders, which SQLite
//! (and sqlx's SQLite driver) accept as numbered parameters, and with types both engines take
//! (TEXT, BIGINT milliseconds for times, BYTEA for bytes). That file is compiled twice, as
//! `sqlite::sql` and `postgres::sql`, each with its own `Db` type, and [`Store`] is an enum over
//! the two pools that dispatches each call. The few real differences live in `sqlite.rs` and
//! `postgres.rs`: how a write transaction begins (`BEGIN IMMEDIATE` on SQLite, so writers queue
//! on the busy timeout instead of failing), row locks (`FOR UPDATE` on PostgreSQL only) and the
//! advisory lock around migrations.
//!
//! Why not sqlx's `Any` driver: it would hide the per-engine connection options this store
//! relies on (WAL, foreign keys, busy timeout, the file's mode), move every value through its
//! own intermediate types, and still not translate placeholders. Why not generics over
//! `sqlx::Database`: the bounds (`for<'q> Encode<'q, DB>` for every bound type, `Executor` for
//! connections and transactions) would have to be repeated on every function, because Rust does
//! not imply them from a helper trait. Compiling one concrete file twice has neither problem,
//! and the compiler checks both copies.
//!
//! PostgreSQL is reached without TLS (sqlx's TLS features are not compiled in, to keep the
//! build small): use a local socket or loopback address, or a TLS-terminating proxy.
//!
//! # Guarantees the control plane relies on
//!
//! - At most one unfinished (pending or running) deployment per client, enforced by a partial
//!   unique index; a second one is refused with [`StoreError::ClientBusy`] naming the first.
//! - A step moves only pending → running → succeeded or failed, or pending → skipped; anything
//!   else (such as starting a step that already succeeded) is refused, so no step's effect is
//!   run twice through the journal. A step found running after a crash is re-entered only
//!   explicitly, with [`Store::resume_step`], which counts the attempt.
//! - Secrets are stored as one XChaCha20-Poly1305 blob per client (format byte, random 24-byte
//!   nonce, ciphertext and tag), with the client id in the associated data so a blob moved to
//!   another client's row does not decrypt. The [`MasterKey`] comes from a file
//!   ([`MasterKey::load_or_create`], 0600, written as Base64) or from `STACKBOX_MASTER_KEY`
//!   (64 hex digits or standard Base64; [`MasterKey::from_env`]). [`Store::check_master_key`]
//!   records the key's fingerprint on first use and refuses another key afterwards.
//! - Tokens are stored as SHA-256 hashes only and compared in constant time.
//!
//! - Onboarding (see `onboarding.rs`): a sign-up is claimed for provisioning by exactly one
//!   caller; a Stripe event id is recorded once; a mail's dedupe key is queued once, a due
//!   mail is claimed by one sender at a time (a lease; a crashed sender's mail is taken over
//!   when the lease runs out), and its bodies are sealed like secrets (the mail id as
//!   associated data); a credential link is consumed once, and only its SHA-256 is stored.
//! - A deployment may carry parameters (JSON, [`Deployment::params`]), stored with it so a
//!   resumed restore or clone still knows its snapshot or target, and, for its history, who
//!   asked for it and what configuration change it applies (`params.rs`:
//!   [`Deployment::requested_by`], [`Deployment::changes`]).
//! - Backups (see `backups.rs`): a client's backup repository key is sealed like secrets but
//!   under associated data of its own, so a secrets blob does not open in its place; the first
//!   key stored stays (racing [`Store::put_backup_key_if_absent`] callers all get it). A backup
//!   moves only running → succeeded or failed, each a guarded `UPDATE` that reports whether it
//!   changed; a step resumed after a crash finds the row it left running. Backup rows, keys
//!   and retained clients have no foreign key to `clients`: they outlive a destroyed client
//!   until [`Store::forget_retained_client`], which is refused while the client exists.
//! - [`MasterKey::seal`] and [`MasterKey::open`] seal other components' blobs the same way,
//!   with a label in the associated data that none of the store's own blobs uses.
//!
//! The schema is `migrations/0001_initial.sql` (`clients`, `client_secrets`, `deployments`,
//! `deployment_steps`, `tokens`, `store_meta`), `migrations/0002_onboarding.sql`
//! (`signups`, `stripe_events`, `billing`, `outbox`, `credential_links`) and
//! `migrations/0003_backups.sql` with its two companions (the wider `deployments.kind`,
//! `deployments.params`, `backup_keys`, `backups`, `retained_clients`), with the runner's
//! `stackbox_schema`.
//!
//! Nothing here logs, and no `Debug` or error message contains a secret, a token, a backup
//! repository key or the master key.

mod crypto;
mod error;
mod migrations;
mod model;
mod params;
mod postgres;
mod sqlite;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sqlx::{PgPool, SqlitePool};
use stackbox_core::client::{ClientId, ClientSpec, Domain};
use stackbox_core::secrets::Secrets;
use subtle::ConstantTimeEq;

pub use crypto::{MasterKey, MASTER_KEY_ENV, TOKEN_PREFIX};
pub use error::StoreError;
pub use model::{
    BackupId, BackupReason, BackupRecord, BackupStatus, Billing, BillingChange, BillingStatus,
    BillingTransition, ClientFilter, ClientPage, ClientRecord, ClientState, Deployment,
    DeploymentId, DeploymentKind, DeploymentPage, DeploymentStatus, FinishedDeployment,
    FinishedStep, MailBody, MailId, MailRecord, MailStatus, NewMail, NewToken, OutboxMail,
    PlaintextToken, RetainedClient, RolloutId, RolloutStatus, Signup, SignupId, SignupStatus, Step,
    StepStatus, Timestamp, TokenId, TokenInfo, TokenRecord, TokenRole,
};

pub use params::{FieldChange, RequestedBy, CHANGES_PARAM, REQUESTED_BY_PARAM};

use model::StepChange;

/// The most items one page or listing returns; larger limits are lowered to it.
pub const MAX_PAGE_LIMIT: u32 = 500;

/// The SQLite file's name inside a data directory (see [`Store::open_data_dir`]).
pub const SQLITE_FILE_NAME: &str = "stackbox.db";

/// The longest step name accepted.
pub const MAX_STEP_NAME_CHARS: usize = 100;

/// The most bytes a deployment's parameters take as JSON: they name a snapshot or a target,
/// not data.
pub const MAX_DEPLOYMENT_PARAMS_BYTES: usize = 16 * 1024;

/// How stale `last_used_at` may get: verifying a token writes only when the recorded use is
/// older than this, so that reads under load do not all queue for SQLite's one write lock.
const TOKEN_USE_RESOLUTION_MILLIS: i64 = 60_000;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The state store. Cheap to clone (the pool is shared); every method is safe to call from
/// many tasks at once.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Calls the same function of `sql.rs` on whichever backend the store has.
macro_rules! on_backend {
    ($store:expr, $module:ident :: $function:ident($($argument:expr),* $(,)?)) => {
        match &$store.pool {
            Pool::Sqlite(pool) => sqlite::$module::$function(pool, $($argument),*).await,
            Pool::Postgres(pool) => postgres::$module::$function(pool, $($argument),*).await,
        }
    };
    ($store:expr, $function:ident($($argument:expr),* $(,)?)) => {
        match &$store.pool {
            Pool::Sqlite(pool) => sqlite::sql::$function(pool, $($argument),*).await,
            Pool::Postgres(pool) => postgres::sql::$function(pool, $($argument),*).await,
        }
    };
}

// After `on_backend!`, which their `impl Store` uses.
mod alerts;
mod audit;
mod backups;
mod onboarding;
mod rollouts;

pub use alerts::{AlertRecord, WebhookRecord};
pub use audit::{ActorKind, AuditOutcome, AuditRecord, NewAuditEntry};
pub use backups::{MAX_BACKUP_KEY_CHARS, MAX_SNAPSHOT_ID_CHARS};
pub use onboarding::{MAX_DEDUPE_KEY_CHARS, MAX_EXTERNAL_ID_CHARS, MAX_SUBJECT_CHARS};
pub use rollouts::{NewRolloutMember, RolloutMember, RolloutRecord};

/// Where a store lives, parsed from what `Store::open` was given.
enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

fn parse_location(url: &str) -> Result<Location, StoreError> {
    let unsupported = || StoreError::UnsupportedUrl {
        url: redact_url(url),
    };
    let trimmed = url.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return Ok(Location::Postgres(trimmed.to_string()));
    }
    // `sqlite:///abs/path` and `sqlite://relative/path`, as sqlx writes them, and `sqlite:PATH`.
    let path = trimmed
        .strip_prefix("sqlite://")
        .or_else(|| trimmed.strip_prefix("sqlite:"))
        .unwrap_or(trimmed);
    if path.is_empty() || path.contains("://") || path.starts_with(':') || path.contains('?') {
        return Err(unsupported());
    }
    Ok(Location::Sqlite(PathBuf::from(path)))
}

/// The URL with any password replaced by `***`, for messages.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(end) => rest.split_at(end),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A new deployment id: creation time (48 bits of milliseconds, enough until the year 10889)
/// then 64 random bits.
pub(crate) fn new_deployment_id(now: Timestamp) -> Result<DeploymentId, StoreError> {
    Ok(DeploymentId::from_trusted(time_ordered_id(
        DeploymentId::PREFIX,
        now,
    )?))
}

/// `prefix`, 12 hex digits of `now` in milliseconds, then 16 random hex digits: the form of
/// deployment, sign-up and mail ids, which sort by creation time.
pub(crate) fn time_ordered_id(prefix: &str, now: Timestamp) -> Result<String, StoreError> {
    let millis = now.unix_millis().clamp(0, 0xffff_ffff_ffff);
    Ok(format!("{prefix}{millis:012x}{}", crypto::random_hex(8)?))
}

fn checked_limit(limit: u32) -> Result<u32, StoreError> {
    if limit == 0 {
        return Err(StoreError::InvalidLimit { limit });
    }
    Ok(limit.min(MAX_PAGE_LIMIT))
}

impl Store {
    /// Opens (and creates, for SQLite) the store at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let pool = match parse_location(url)? {
            Location::Sqlite(path) => {
                Pool::Sqlite(sqlite::connect(&path, &path.display().to_string()).await?)
            }
            Location::Postgres(url) => {
                Pool::Postgres(postgres::connect(&url, &redact_url(&url)).await?)
            }
        };
        let store = Store { pool };
        on_backend!(store, migrate(Timestamp::now()))?;
        Ok(store)
    }

    /// Opens the SQLite store [`SQLITE_FILE_NAME`] in `data_dir`, creating both if missing.
    pub async fn open_data_dir(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(SQLITE_FILE_NAME);
        let pool = sqlite::connect(&path, &path.display().to_string()).await?;
        let store = Store {
            pool: Pool::Sqlite(pool),
        };
        on_backend!(store, migrate(Timestamp::now()))?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Waits for open connections to finish and closes them (SQLite checkpoints its WAL).
    /// Clones share the pool, so this closes them too.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// The schema versions applied to this database, oldest first.
    pub async fn schema_versions(&self) -> Result<Vec<i64>, StoreError> {
        on_backend!(self, schema_versions())
    }

    /// Checks that `key` is the master key this database's secrets use: the first call records
    /// the key's fingerprint (and returns `true`), later calls with another key fail with
    /// [`StoreError::MasterKeyMismatch`]. Call it at start-up, so a lost or replaced key file is
    /// noticed before any client's secrets fail to decrypt.
    pub async fn check_master_key(&self, key: &MasterKey) -> Result<bool, StoreError> {
        let given = key.fingerprint();
        let (recorded_now, expected) = on_backend!(self, remember_master_key(&given))?;
        if expected != given {
            return Err(StoreError::MasterKeyMismatch { expected, given });
        }
        Ok(recorded_now)
    }

    // -- Clients ----------------------------------------------------------------------------

    /// Stores a new client. A domain already used by another client fails with
    /// [`StoreError::DomainTaken`] naming that client; an existing id with
    /// [`StoreError::ClientExists`].
    pub async fn insert_client(
        &self,
        id: &ClientId,
        spec: &ClientSpec,
        state: ClientState,
    ) -> Result<ClientRecord, StoreError> {
        if let Some(spec_id) = spec.client_id.as_ref().filter(|spec_id| *spec_id != id) {
            return Err(StoreError::ClientIdMismatch {
                id: id.clone(),
                spec_id: spec_id.clone(),
            });
        }
        on_backend!(self, insert_client(id, spec, state, Timestamp::now()))
    }

    pub async fn client(&self, id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        on_backend!(self, client(id))
    }

    pub async fn client_by_domain(
        &self,
        domain: &Domain,
    ) -> Result<Option<ClientRecord>, StoreError> {
        on_backend!(self, client_by_domain(domain))
    }

    /// The clients whose previous domains (still redirected to their current one) include
    /// `domain`: it is not free for another client until their redirect ends.
    pub async fn clients_with_previous_domains(&self) -> Result<Vec<ClientRecord>, StoreError> {
        on_backend!(self, clients_with_previous_domains())
    }

    pub async fn clients_redirecting(
        &self,
        domain: &Domain,
    ) -> Result<Vec<ClientRecord>, StoreError> {
        on_backend!(self, clients_redirecting(domain))
    }

    /// Clients matching `filter`, in id order, starting after `after` (keyset pagination: a
    /// page stays correct while clients are added or removed). `limit` must be at least 1 and
    /// is lowered to [`MAX_PAGE_LIMIT`].
    pub async fn list_clients(
        &self,
        filter: ClientFilter,
        after: Option<&ClientId>,
        limit: u32,
    ) -> Result<ClientPage, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, list_clients(filter, after, limit))
    }

    /// Every client matching `filter`, in id order, read page by page: for the control plane's
    /// own passes over the fleet (a rollout's plan, the alert rules), not for the API.
    pub async fn every_client(
        &self,
        filter: ClientFilter,
    ) -> Result<Vec<ClientRecord>, StoreError> {
        let mut clients = Vec::new();
        let mut after: Option<ClientId> = None;
        loop {
            let page = self
                .list_clients(filter, after.as_ref(), MAX_PAGE_LIMIT)
                .await?;
            clients.extend(page.clients);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(clients),
            }
        }
    }

    /// Replaces a client's configuration (a plan change, a new brand colour), keeping its
    /// id, state, secrets and history; returns the record as stored. A domain another client
    /// uses fails with [`StoreError::DomainTaken`]; a configuration pinned to another id with
    /// [`StoreError::ClientIdMismatch`]; a missing client with [`StoreError::ClientNotFound`].
    pub async fn update_client_spec(
        &self,
        id: &ClientId,
        spec: &ClientSpec,
    ) -> Result<ClientRecord, StoreError> {
        if let Some(spec_id) = spec.client_id.as_ref().filter(|spec_id| *spec_id != id) {
            return Err(StoreError::ClientIdMismatch {
                id: id.clone(),
                spec_id: spec_id.clone(),
            });
        }
        on_backend!(self, update_client_spec(id, spec, Timestamp::now()))
    }

    /// Records a client's state and why (`None` clears the reason).
    pub async fn set_client_state(
        &self,
        id: &ClientId,
        state: ClientState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        on_backend!(self, set_client_state(id, state, reason, Timestamp::now()))
    }

    /// Deletes a client with its secrets, tokens and deployment history. Refused with
    /// [`StoreError::ClientBusy`] while one of its deployments is unfinished.
    pub async fn delete_client(&self, id: &ClientId) -> Result<(), StoreError> {
        on_backend!(self, delete_client(id))
    }

    /// How many clients are in each state; every state is present, zeros included.
    pub async fn count_clients_by_state(&self) -> Result<BTreeMap<ClientState, u64>, StoreError> {
        on_backend!(self, count_clients_by_state())
    }

    // -- Secrets ----------------------------------------------------------------------------

    /// Encrypts the client's secrets with `key` (a fresh random nonce every time, the client id
    /// as associated data) and stores them as one blob, replacing earlier ones.
    pub async fn put_secrets(
        &self,
        client: &ClientId,
        secrets: &Secrets,
        key: &MasterKey,
    ) -> Result<(), StoreError> {
        let sealed = crypto::seal_secrets(key, client, secrets)?;
        on_backend!(self, put_sealed_secrets(client, &sealed, Timestamp::now()))
    }

    /// The client's secrets, decrypted; `None` when none are stored. A wrong key, or a blob
    /// that was altered or belongs to another client, fails with [`StoreError::Decrypt`].
    pub async fn get_secrets(
        &self,
        client: &ClientId,
        key: &MasterKey,
    ) -> Result<Option<Secrets>, StoreError> {
        let sealed = on_backend!(self, sealed_secrets(client))?;
        sealed
            .map(|blob| crypto::open_secrets(key, client, &blob))
            .transpose()
    }

    // -- Deployments ------------------------------------------------------------------------

    /// Creates a pending deployment whose steps, pending, run in the given order. Step names
    /// must be unique, non-empty and at most [`MAX_STEP_NAME_CHARS`] characters, and there must
    /// be at least one. Its `params` are `None`; see
    /// [`Store::create_deployment_with_params`].
    pub async fn create_deployment(
        &self,
        client: &ClientId,
        kind: DeploymentKind,
        steps: &[&str],
    ) -> Result<Deployment, StoreError> {
        self.create_deployment_with_params(client, kind, steps, None)
            .await
    }

    /// [`Store::create_deployment`], with what the deployment is asked to do beyond its kind
    /// (JSON, at most [`MAX_DEPLOYMENT_PARAMS_BYTES`]): a restore's snapshot id, a clone's
    /// target. Stored with the deployment and returned in [`Deployment::params`], so a resumed
    /// deployment knows them.
    pub async fn create_deployment_with_params(
        &self,
        client: &ClientId,
        kind: DeploymentKind,
        steps: &[&str],
        params: Option<&serde_json::Value>,
    ) -> Result<Deployment, StoreError> {
        if let Some(params) = params {
            let bytes = params.to_string().len();
            if bytes > MAX_DEPLOYMENT_PARAMS_BYTES {
                return Err(StoreError::InvalidValue {
                    field: "deployment params",
                    problem: format!(
                        "they take {bytes} bytes as JSON, more than \
                         {MAX_DEPLOYMENT_PARAMS_BYTES}"
                    ),
                });
            }
        }
        let invalid = |problem: String| Err(StoreError::InvalidSteps { problem });
        if steps.is_empty() {
            return invalid("a deployment needs at least one step".to_string());
        }
        let mut seen = BTreeSet::new();
        for name in steps {
            if name.trim().is_empty() {
                return invalid("a step name is empty".to_string());
            }
            if name.chars().count() > MAX_STEP_NAME_CHARS {
                return invalid(format!(
                    "step name {name:?} is longer than {MAX_STEP_NAME_CHARS} characters"
                ));
            }
            if !seen.insert(*name) {
                return invalid(format!("step name {name:?} appears twice"));
            }
        }
        on_backend!(
            self,
            create_deployment(client, kind, steps, params, Timestamp::now())
        )
    }

    /// A deployment with its steps in order.
    pub async fn deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
        on_backend!(self, deployment(id))
    }

    /// The client's deployments, newest first, at most `limit` (1 to [`MAX_PAGE_LIMIT`]).
    pub async fn deployments_of_client(
        &self,
        client: &ClientId,
        limit: u32,
    ) -> Result<Vec<Deployment>, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, deployments_of_client(client, limit))
    }

    /// One page of the client's deployments, newest first, with their steps: those older than
    /// `after` (the `next` of the previous page), at most `limit` (1 to [`MAX_PAGE_LIMIT`]).
    /// A cursor stays correct while new deployments are added.
    pub async fn deployment_page_of_client(
        &self,
        client: &ClientId,
        after: Option<&DeploymentId>,
        limit: u32,
    ) -> Result<DeploymentPage, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, deployment_page_of_client(client, after, limit))
    }

    /// Every pending or running deployment, oldest first, with its steps: what a restarted
    /// control plane resumes or compensates.
    pub async fn unfinished_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        on_backend!(self, unfinished_deployments())
    }

    /// pending → running, and the deployment with it (its `started_at` is set on the first).
    /// Refused for a step in any other status: a step that succeeded never runs again.
    pub async fn mark_step_running(
        &self,
        deployment: &DeploymentId,
        step: &str,
    ) -> Result<Step, StoreError> {
        self.change_step(deployment, step, StepChange::Start).await
    }

    /// running → running, for a step found running after a restart (its run was interrupted,
    /// so its effect may have partly happened). Counts the attempt in [`Step::attempts`].
    pub async fn resume_step(
        &self,
        deployment: &DeploymentId,
        step: &str,
    ) -> Result<Step, StoreError> {
        self.change_step(deployment, step, StepChange::Resume).await
    }

    /// running → succeeded, with what the step reports (JSON).
    pub async fn mark_step_succeeded(
        &self,
        deployment: &DeploymentId,
        step: &str,
        output: Option<&serde_json::Value>,
    ) -> Result<Step, StoreError> {
        self.change_step(deployment, step, StepChange::Succeed(output))
            .await
    }

    /// running → failed, with the error as people should read it.
    pub async fn mark_step_failed(
        &self,
        deployment: &DeploymentId,
        step: &str,
        error: &str,
    ) -> Result<Step, StoreError> {
        self.change_step(deployment, step, StepChange::Fail(error))
            .await
    }

    /// pending → skipped.
    pub async fn mark_step_skipped(
        &self,
        deployment: &DeploymentId,
        step: &str,
    ) -> Result<Step, StoreError> {
        self.change_step(deployment, step, StepChange::Skip).await
    }

    async fn change_step(
        &self,
        deployment: &DeploymentId,
        step: &str,
        change: StepChange<'_>,
    ) -> Result<Step, StoreError> {
        on_backend!(
            self,
            change_step(deployment, step, change, Timestamp::now())
        )
    }

    /// Ends an unfinished deployment with `succeeded` (every step succeeded or skipped),
    /// `failed` or `compensated`, and an error for people. A finished deployment never changes
    /// again.
    pub async fn finish_deployment(
        &self,
        id: &DeploymentId,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> Result<Deployment, StoreError> {
        if !status.is_finished() {
            return Err(StoreError::NotAFinalStatus { status });
        }
        on_backend!(self, finish_deployment(id, status, error, Timestamp::now()))
    }

    /// How many deployments are in each status; every status is present, zeros included.
    pub async fn count_deployments_by_status(
        &self,
    ) -> Result<BTreeMap<DeploymentStatus, u64>, StoreError> {
        on_backend!(self, count_deployments_by_status())
    }

    /// Finished deployments (finished strictly after `finished_after`, if given), oldest
    /// finish first: to fill the duration histogram at start-up.
    pub async fn finished_deployments(
        &self,
        finished_after: Option<Timestamp>,
    ) -> Result<Vec<FinishedDeployment>, StoreError> {
        on_backend!(self, finished_deployments(finished_after))
    }

    /// Finished steps that ran (not skipped ones), like [`Store::finished_deployments`].
    pub async fn finished_steps(
        &self,
        finished_after: Option<Timestamp>,
    ) -> Result<Vec<FinishedStep>, StoreError> {
        on_backend!(self, finished_steps(finished_after))
    }

    // -- Tokens -----------------------------------------------------------------------------

    /// Creates a token: an operator token with `client: None`, a client token with the client
    /// it may read. The plaintext is returned here only; the store keeps its SHA-256.
    pub async fn create_token(
        &self,
        role: TokenRole,
        client: Option<&ClientId>,
    ) -> Result<NewToken, StoreError> {
        match (role, client) {
            (TokenRole::Operator, None) | (TokenRole::Client, Some(_)) => {}
            _ => return Err(StoreError::TokenScope { role }),
        }
        let id = TokenId::from_trusted(format!("{}{}", TokenId::PREFIX, crypto::random_hex(8)?));
        let token = crypto::new_token()?;
        let hash = crypto::token_hash(&token);
        on_backend!(
            self,
            insert_token(&id, &hash, role, client, Timestamp::now())
        )?;
        Ok(NewToken {
            info: TokenInfo {
                id,
                role,
                client_id: client.cloned(),
            },
            token: PlaintextToken::new(token.to_string()),
        })
    }

    /// What the token may do, or `None` if it is not a live token. Looks the token up by its
    /// SHA-256 and compares the stored hash in constant time. Records the use, to within a
    /// minute (`last_used_at`).
    pub async fn verify_token(&self, plaintext: &str) -> Result<Option<TokenInfo>, StoreError> {
        if !crypto::looks_like_token(plaintext) {
            return Ok(None);
        }
        let hash = crypto::token_hash(plaintext);
        let Some((info, stored, last_used)) = on_backend!(self, token_by_hash(&hash))? else {
            return Ok(None);
        };
        if !bool::from(stored.as_slice().ct_eq(hash.as_slice())) {
            return Ok(None);
        }
        let now = Timestamp::now();
        let stale = last_used.is_none_or(|last| {
            now.unix_millis().saturating_sub(last.unix_millis()) >= TOKEN_USE_RESOLUTION_MILLIS
        });
        if stale {
            on_backend!(self, touch_token(&info.id, now))?;
        }
        Ok(Some(info))
    }

    /// Deletes a token; it stops verifying at once.
    pub async fn revoke_token(&self, id: &TokenId) -> Result<(), StoreError> {
        on_backend!(self, delete_token(id))
    }

    /// Every token (never the tokens themselves), oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        on_backend!(self, tokens())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://stackbox:s3cret@db.internal:5432/stackbox?sslmode=disable"),
            "postgres://stackbox:***@db.internal:5432/stackbox?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://db/stackbox?user=a&password=s3cret"),
            "postgres://db/stackbox?user=a&password=***"
        );
        assert_eq!(
            redact_url("postgres://stackbox@db/stackbox"),
            "postgres://stackbox@db/stackbox"
        );
    }

    #[test]
    fn sqlite_locations_accept_urls_and_plain_paths() {
        for (given, expected) in [
            (
                "sqlite:///var/lib/stackbox/stackbox.db",
                "/var/lib/stackbox/stackbox.db",
            ),
            ("sqlite://data/stackbox.db", "data/stackbox.db"),
            ("sqlite:stackbox.db", "stackbox.db"),
            ("/srv/stackbox.db", "/srv/stackbox.db"),
        ] {
            match parse_location(given) {
                Ok(Location::Sqlite(path)) => assert_eq!(path, Path::new(expected)),
                _ => panic!("{given} is not read as a SQLite path"),
            }
        }
        for refused in [
            "",
            "mysql://db/stackbox",
            "sqlite::memory:",
            "sqlite://x.db?mode=ro",
        ] {
            assert!(
                matches!(
                    parse_location(refused),
                    Err(StoreError::UnsupportedUrl { .. })
                ),
                "{refused}"
            );
        }
    }
}
