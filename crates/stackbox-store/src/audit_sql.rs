//! The audit log's queries, written once.
//!
//! Compiled twice like `sql.rs` (as `sqlite::audit_sql` and `postgres::audit_sql`), with the
//! same rules: `$N` placeholders, standard types, one SQL text for both engines. Only INSERT
//! and SELECT: the log is append-only.

use super::sql::{get, get_name, get_time, Pool, Row};
use crate::audit::{ActorKind, AuditOutcome, AuditRecord};
use crate::error::StoreError;

const COLUMNS: &str =
    "id, at, actor_kind, token_id, action, client_id, status, outcome, deployment_id";

fn from_row(row: &Row) -> Result<AuditRecord, StoreError> {
    const T: &str = "audit_log";
    let status: i64 = get(row, T, "status")?;
    Ok(AuditRecord {
        id: get(row, T, "id")?,
        at: get_time(row, T, "at")?,
        actor_kind: get_name(row, T, "actor_kind", ActorKind::from_name)?,
        token_id: get(row, T, "token_id")?,
        action: get(row, T, "action")?,
        client_id: get(row, T, "client_id")?,
        status: u16::try_from(status).map_err(|error| StoreError::corrupt(T, "status", error))?,
        outcome: get_name(row, T, "outcome", AuditOutcome::from_name)?,
        deployment_id: get(row, T, "deployment_id")?,
    })
}

pub(crate) async fn insert(pool: &Pool, record: &AuditRecord) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&record.id)
    .bind(record.at.unix_millis())
    .bind(record.actor_kind.as_str())
    .bind(record.token_id.as_deref())
    .bind(&record.action)
    .bind(record.client_id.as_deref())
    .bind(i64::from(record.status))
    .bind(record.outcome.as_str())
    .bind(record.deployment_id.as_deref())
    .execute(pool)
    .await
    .map_err(StoreError::database("appending to the audit log"))?;
    Ok(())
}

pub(crate) async fn entries(
    pool: &Pool,
    client: Option<&str>,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_log \
         WHERE ($1 IS NULL OR client_id = $1) AND ($2 IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(client)
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading the audit log"))?;
    rows.iter().map(from_row).collect()
}
