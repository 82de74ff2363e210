//! The alert and webhook-outbox queries, written once.
//!
//! Compiled twice like `sql.rs` (as `sqlite::alerts_sql` and `postgres::alerts_sql`), with the
//! same rules: `$N` placeholders, standard types, one SQL text for both engines. Every change
//! of an alert is one guarded `UPDATE … WHERE …` on its open row.

use std::collections::BTreeMap;

use stackbox_core::alerts::{AlertKind, OpenAlert};

use super::sql::{get, get_name, get_optional_time, get_time, is_unique_violation, Pool, Row};
use crate::alerts::{AlertRecord, WebhookRecord};
use crate::error::StoreError;
use crate::model::Timestamp;

const ALERT_COLUMNS: &str = "id, alert_key, kind, client_id, summary, since, fired_at, resolved_at";

fn alert_from_row(row: &Row) -> Result<AlertRecord, StoreError> {
    const T: &str = "alerts";
    Ok(AlertRecord {
        id: get(row, T, "id")?,
        key: get(row, T, "alert_key")?,
        kind: get_name(row, T, "kind", AlertKind::from_name)?,
        client_id: get(row, T, "client_id")?,
        summary: get(row, T, "summary")?,
        since: get_time(row, T, "since")?,
        fired_at: get_optional_time(row, T, "fired_at")?,
        resolved_at: get_optional_time(row, T, "resolved_at")?,
    })
}

pub(crate) async fn insert_alert(
    pool: &Pool,
    id: &str,
    alert: &OpenAlert,
    since: Timestamp,
    fired_at: Option<Timestamp>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO alerts (id, alert_key, kind, client_id, summary, since, fired_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&alert.key)
    .bind(alert.kind.as_str())
    .bind(alert.client.as_deref())
    .bind(&alert.summary)
    .bind(since.unix_millis())
    .bind(fired_at.map(Timestamp::unix_millis))
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(error) if is_unique_violation(&error) => Ok(false),
        Err(error) => Err(StoreError::database("recording an alert")(error)),
    }
}

pub(crate) async fn open_alerts(pool: &Pool) -> Result<Vec<AlertRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE resolved_at IS NULL ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading the open alerts"))?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn alerts(
    pool: &Pool,
    open_only: bool,
    client: Option<&str>,
    limit: u32,
) -> Result<Vec<AlertRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts \
         WHERE ($1 = 0 OR resolved_at IS NULL) AND ($2 IS NULL OR client_id = $2) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(i64::from(open_only))
    .bind(client)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("listing alerts"))?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn fire_alert(
    pool: &Pool,
    key: &str,
    at: Timestamp,
) -> Result<Option<AlertRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "UPDATE alerts SET fired_at = $2 \
         WHERE alert_key = $1 AND resolved_at IS NULL AND fired_at IS NULL \
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(key)
    .bind(at.unix_millis())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("firing an alert"))?;
    row.as_ref().map(alert_from_row).transpose()
}

pub(crate) async fn resolve_alert(
    pool: &Pool,
    key: &str,
    at: Timestamp,
) -> Result<Option<AlertRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "UPDATE alerts SET resolved_at = $2 \
         WHERE alert_key = $1 AND resolved_at IS NULL AND fired_at IS NOT NULL \
         RETURNING {ALERT_COLUMNS}"
    ))
    .bind(key)
    .bind(at.unix_millis())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("resolving an alert"))?;
    row.as_ref().map(alert_from_row).transpose()
}

pub(crate) async fn drop_pending_alert(pool: &Pool, key: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "DELETE FROM alerts WHERE alert_key = $1 AND resolved_at IS NULL AND fired_at IS NULL",
    )
    .bind(key)
    .execute(pool)
    .await
    .map_err(StoreError::database("dropping a pending alert"))?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn insert_webhook(
    pool: &Pool,
    id: &str,
    dedupe_key: &str,
    body: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_outbox (id, dedupe_key, body, status, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, 'pending', $4, $4)",
    )
    .bind(id)
    .bind(dedupe_key)
    .bind(body)
    .bind(now.unix_millis())
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(error) if is_unique_violation(&error) => Ok(false),
        Err(error) => Err(StoreError::database("queueing a webhook")(error)),
    }
}

pub(crate) async fn due_webhooks(
    pool: &Pool,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<WebhookRecord>, StoreError> {
    const T: &str = "webhook_outbox";
    let rows = sqlx::query(
        "SELECT id, dedupe_key, body, attempts FROM webhook_outbox \
         WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
    )
    .bind(now.unix_millis())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading the due webhooks"))?;
    rows.iter()
        .map(|row| {
            let attempts: i64 = get(row, T, "attempts")?;
            Ok(WebhookRecord {
                id: get(row, T, "id")?,
                dedupe_key: get(row, T, "dedupe_key")?,
                body: get(row, T, "body")?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            })
        })
        .collect()
}

pub(crate) async fn retry_webhook(
    pool: &Pool,
    id: &str,
    next: Timestamp,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = $2, \
         last_error = $3 WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(next.unix_millis())
    .bind(error)
    .execute(pool)
    .await
    .map_err(StoreError::database("scheduling a webhook's retry"))?;
    Ok(())
}

pub(crate) async fn finish_webhook(
    pool: &Pool,
    id: &str,
    status: &str,
    error: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_outbox SET status = $2, attempts = attempts + 1, \
         last_error = COALESCE($3, last_error), sent_at = CASE WHEN $2 = 'sent' THEN $4 END \
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("recording a webhook's delivery"))?;
    Ok(())
}

pub(crate) async fn count_webhooks_by_status(
    pool: &Pool,
) -> Result<BTreeMap<String, u64>, StoreError> {
    const T: &str = "webhook_outbox";
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM webhook_outbox GROUP BY status")
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("counting webhooks"))?;
    let mut counts = BTreeMap::new();
    for row in &rows {
        let status: String = get(row, T, "status")?;
        let n: i64 = get(row, T, "n")?;
        counts.insert(status, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}
