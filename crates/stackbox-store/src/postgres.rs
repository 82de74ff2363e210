//! PostgreSQL: for operators who run one, given as a `postgres://` URL.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Transaction};

use crate::error::StoreError;

pub(crate) type Db = sqlx::Postgres;

/// The shared queries, compiled here with `Db = Postgres` (see the crate docs).
// Deliberately the same file as `sqlite::sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "sql.rs"]
pub(crate) mod sql;

/// The onboarding queries (sign-ups, Stripe events, billing, the outbox, credential links),
/// compiled here like [`sql`].
// Deliberately the same file as `sqlite::onboarding_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "onboarding_sql.rs"]
pub(crate) mod onboarding_sql;

/// The backup queries (backup keys, the backups journal, retained destroyed clients),
/// compiled here like [`sql`].
// Deliberately the same file as `sqlite::backups_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "backups_sql.rs"]
pub(crate) mod backups_sql;

/// The rollout queries (rollouts and their members), compiled here like [`sql`].
// Deliberately the same file as `sqlite::rollouts_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "rollouts_sql.rs"]
pub(crate) mod rollouts_sql;

/// The alert and webhook-outbox queries, compiled here like [`sql`].
// Deliberately the same file as `sqlite::alerts_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "alerts_sql.rs"]
pub(crate) mod alerts_sql;

/// The audit log's queries, compiled here like [`sql`].
// Deliberately the same file as `sqlite::audit_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "audit_sql.rs"]
pub(crate) mod audit_sql;

/// Which engine this module is, for the migration runner's engine companions.
pub(crate) const BACKEND: crate::Backend = crate::Backend::Postgres;

/// Claiming rows (the mail outbox): a claimer skips the rows another one has locked instead of
/// waiting for them, and the claiming `UPDATE` re-checks each row's status, so two claimers
/// never take the same row.
pub(crate) const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

/// Reading a deployment's status with this suffix locks its row until the transaction ends,
/// which serializes step changes and `finish` on one deployment (READ COMMITTED alone would
/// let two of them read the same status).
pub(crate) const FOR_UPDATE: &str = " FOR UPDATE";

pub(crate) async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
    pool.begin().await
}

/// Any fixed number shared by every StackBox; it only has to be the same for all of them.
const MIGRATION_LOCK: i64 = 0x5354_4b42_4f58; // "STKBOX"

/// Two servers starting at once would otherwise both create the same tables; the second
/// waits here and then finds the migrations applied.
pub(crate) async fn lock_schema(tx: &mut Transaction<'static, Db>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

const MAX_CONNECTIONS: u32 = 10;

pub(crate) async fn connect(url: &str, shown_as: &str) -> Result<Pool<Db>, StoreError> {
    let connect_error = |source| StoreError::Connect {
        url: shown_as.to_string(),
        source,
    };
    let options = PgConnectOptions::from_str(url).map_err(connect_error)?;
    PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await
        .map_err(connect_error)
}
