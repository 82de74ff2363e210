//! The backup queries: backup repository keys, the backups journal and retained destroyed
//! clients, written once.
//!
//! Compiled twice like `sql.rs` (as `sqlite::backups_sql` and `postgres::backups_sql`), with
//! the same rules: `$N` placeholders, standard types, one SQL text for both engines. Every
//! guarded change is one `UPDATE … WHERE status = …` (or `… IS NULL`), so of two callers only
//! one changes the row, and the other learns that it did not.

use std::collections::BTreeMap;

use stackbox_core::client::{ClientId, Domain};

use super::begin_write;
use super::sql::{get, get_client_id, get_json, get_name, get_optional_time, get_time, Pool, Row};
use crate::backups::SucceededBackup;
use crate::error::StoreError;
use crate::model::{
    BackupId, BackupReason, BackupRecord, BackupStatus, DeploymentId, RetainedClient, Timestamp,
};

// ---------------------------------------------------------------------------------------------
// Backup repository keys

/// Stores the sealed key unless the client has one, then returns the one stored: of racing
/// callers, the first insert wins and everyone reads the winner's blob.
pub(crate) async fn put_sealed_backup_key_if_absent(
    pool: &Pool,
    client: &ClientId,
    sealed: &[u8],
    now: Timestamp,
) -> Result<Vec<u8>, StoreError> {
    sqlx::query(
        "INSERT INTO backup_keys (client_id, sealed, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (client_id) DO NOTHING",
    )
    .bind(client.as_str())
    .bind(sealed)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("storing a backup repository key"))?;
    // A separate statement, so that on PostgreSQL it sees the winner's committed row even
    // when this insert waited for it (READ COMMITTED takes a new snapshot per statement).
    sqlx::query_scalar("SELECT sealed FROM backup_keys WHERE client_id = $1")
        .bind(client.as_str())
        .fetch_one(pool)
        .await
        .map_err(StoreError::database("reading a backup repository key"))
}

pub(crate) async fn sealed_backup_key(
    pool: &Pool,
    client: &ClientId,
) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar("SELECT sealed FROM backup_keys WHERE client_id = $1")
        .bind(client.as_str())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::database("reading a backup repository key"))
}

// ---------------------------------------------------------------------------------------------
// Backups

const BACKUP_COLUMNS: &str = "id, client_id, deployment_id, reason, status, snapshot_id, \
     started_at, finished_at, error, manifest, bytes_added, bytes_total, files_total, \
     verified_at, verify_ok, verify_error, forgotten_at";

/// A byte or file count: never negative as stored by the store.
fn get_count(
    row: &Row,
    table: &'static str,
    column: &'static str,
) -> Result<Option<u64>, StoreError> {
    let count: Option<i64> = get(row, table, column)?;
    count
        .map(u64::try_from)
        .transpose()
        .map_err(|error| StoreError::corrupt(table, column, error))
}

fn backup_from_row(row: &Row) -> Result<BackupRecord, StoreError> {
    const T: &str = "backups";
    let deployment_id: Option<String> = get(row, T, "deployment_id")?;
    let verify_ok: Option<i64> = get(row, T, "verify_ok")?;
    Ok(BackupRecord {
        id: BackupId::from_trusted(get(row, T, "id")?),
        client_id: get_client_id(row, T, "client_id")?,
        deployment_id: deployment_id.map(DeploymentId::from_trusted),
        reason: get_name(row, T, "reason", BackupReason::from_name)?,
        status: get_name(row, T, "status", BackupStatus::from_name)?,
        snapshot_id: get(row, T, "snapshot_id")?,
        started_at: get_time(row, T, "started_at")?,
        finished_at: get_optional_time(row, T, "finished_at")?,
        error: get(row, T, "error")?,
        manifest: get_json(row, T, "manifest")?,
        bytes_added: get_count(row, T, "bytes_added")?,
        bytes_total: get_count(row, T, "bytes_total")?,
        files_total: get_count(row, T, "files_total")?,
        verified_at: get_optional_time(row, T, "verified_at")?,
        verify_ok: verify_ok.map(|ok| ok != 0),
        verify_error: get(row, T, "verify_error")?,
        forgotten_at: get_optional_time(row, T, "forgotten_at")?,
    })
}

async fn backups_where(
    pool: &Pool,
    condition_and_order: &str,
    binds: &[&str],
    action: &'static str,
) -> Result<Vec<BackupRecord>, StoreError> {
    let sql = format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE {condition_and_order}");
    let mut query = sqlx::query(&sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let rows = query
        .fetch_all(pool)
        .await
        .map_err(StoreError::database(action))?;
    rows.iter().map(backup_from_row).collect()
}

pub(crate) async fn insert_backup(pool: &Pool, backup: &BackupRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO backups (id, client_id, deployment_id, reason, status, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(backup.id.as_str())
    .bind(backup.client_id.as_str())
    .bind(backup.deployment_id.as_ref().map(DeploymentId::as_str))
    .bind(backup.reason.as_str())
    .bind(backup.status.as_str())
    .bind(backup.started_at.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("recording a new backup"))?;
    Ok(())
}

/// Whether a guarded change that touched no row missed because the backup is not there.
async fn changed_or_missing(pool: &Pool, id: &BackupId, changed: u64) -> Result<bool, StoreError> {
    if changed > 0 {
        return Ok(true);
    }
    match backup(pool, id).await? {
        Some(_) => Ok(false),
        None => Err(StoreError::BackupNotFound { backup: id.clone() }),
    }
}

pub(crate) async fn finish_backup(
    pool: &Pool,
    id: &BackupId,
    outcome: &SucceededBackup<'_>,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE backups SET status = 'succeeded', finished_at = $2, snapshot_id = $3, \
         manifest = $4, bytes_added = $5, bytes_total = $6, files_total = $7, error = NULL \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id.as_str())
    .bind(now.unix_millis())
    .bind(outcome.snapshot_id)
    .bind(outcome.manifest.to_string())
    .bind(outcome.bytes_added)
    .bind(outcome.bytes_total)
    .bind(outcome.files_total)
    .execute(pool)
    .await
    .map_err(StoreError::database("recording a succeeded backup"))?;
    changed_or_missing(pool, id, updated.rows_affected()).await
}

pub(crate) async fn fail_backup(
    pool: &Pool,
    id: &BackupId,
    error: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE backups SET status = 'failed', finished_at = $2, error = $3 \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id.as_str())
    .bind(now.unix_millis())
    .bind(error)
    .execute(pool)
    .await
    .map_err(StoreError::database("recording a failed backup"))?;
    changed_or_missing(pool, id, updated.rows_affected()).await
}

pub(crate) async fn backup(pool: &Pool, id: &BackupId) -> Result<Option<BackupRecord>, StoreError> {
    Ok(
        backups_where(pool, "id = $1", &[id.as_str()], "reading a backup")
            .await?
            .pop(),
    )
}

/// Newest first; forgotten backups left out.
pub(crate) async fn backups_of_client(
    pool: &Pool,
    client: &ClientId,
    limit: u32,
) -> Result<Vec<BackupRecord>, StoreError> {
    let sql = format!(
        "SELECT {BACKUP_COLUMNS} FROM backups WHERE client_id = $1 AND forgotten_at IS NULL \
         ORDER BY started_at DESC, id DESC LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(client.as_str())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("listing a client's backups"))?;
    rows.iter().map(backup_from_row).collect()
}

/// The client's backups whose snapshot id starts with `prefix`, newest first. Compared with
/// `substr` rather than `LIKE`, whose case rules differ between the engines.
pub(crate) async fn backups_by_snapshot_prefix(
    pool: &Pool,
    client: &ClientId,
    prefix: &str,
) -> Result<Vec<BackupRecord>, StoreError> {
    let sql = format!(
        "SELECT {BACKUP_COLUMNS} FROM backups WHERE client_id = $1 \
         AND snapshot_id IS NOT NULL AND substr(snapshot_id, 1, $3) = $2 \
         ORDER BY started_at DESC, id DESC"
    );
    // An INTEGER, not a BIGINT: PostgreSQL has no substr(text, integer, bigint).
    let length = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
    let rows = sqlx::query(&sql)
        .bind(client.as_str())
        .bind(prefix)
        .bind(length)
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("looking up a backup by snapshot"))?;
    rows.iter().map(backup_from_row).collect()
}

pub(crate) async fn latest_succeeded_backup(
    pool: &Pool,
    client: &ClientId,
) -> Result<Option<BackupRecord>, StoreError> {
    Ok(backups_where(
        pool,
        "client_id = $1 AND status = 'succeeded' AND forgotten_at IS NULL \
         ORDER BY started_at DESC, id DESC LIMIT 1",
        &[client.as_str()],
        "reading a client's latest backup",
    )
    .await?
    .pop())
}

/// Records a restore test of a succeeded backup (again if it was tested before).
pub(crate) async fn record_verification(
    pool: &Pool,
    id: &BackupId,
    ok: bool,
    error: Option<&str>,
    now: Timestamp,
) -> Result<BackupRecord, StoreError> {
    let sql = format!(
        "UPDATE backups SET verified_at = $2, verify_ok = $3, verify_error = $4 \
         WHERE id = $1 AND status = 'succeeded' RETURNING {BACKUP_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .bind(now.unix_millis())
        .bind(i64::from(ok))
        .bind(error)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::database("recording a backup's verification"))?;
    match row {
        Some(row) => backup_from_row(&row),
        None => match backup(pool, id).await? {
            Some(found) => Err(StoreError::BackupNotVerifiable {
                backup: id.clone(),
                status: found.status,
            }),
            None => Err(StoreError::BackupNotFound { backup: id.clone() }),
        },
    }
}

pub(crate) async fn last_verification(
    pool: &Pool,
    client: &ClientId,
) -> Result<Option<BackupRecord>, StoreError> {
    Ok(backups_where(
        pool,
        "client_id = $1 AND verified_at IS NOT NULL ORDER BY verified_at DESC, id DESC LIMIT 1",
        &[client.as_str()],
        "reading a client's last verified backup",
    )
    .await?
    .pop())
}

pub(crate) async fn mark_backup_forgotten(
    pool: &Pool,
    id: &BackupId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated =
        sqlx::query("UPDATE backups SET forgotten_at = $2 WHERE id = $1 AND forgotten_at IS NULL")
            .bind(id.as_str())
            .bind(now.unix_millis())
            .execute(pool)
            .await
            .map_err(StoreError::database("marking a backup forgotten"))?;
    changed_or_missing(pool, id, updated.rows_affected()).await
}

pub(crate) async fn backups_running_for_deployment(
    pool: &Pool,
    deployment: &DeploymentId,
) -> Result<Vec<BackupRecord>, StoreError> {
    backups_where(
        pool,
        "deployment_id = $1 AND status = 'running' ORDER BY started_at, id",
        &[deployment.as_str()],
        "looking for a deployment's running backups",
    )
    .await
}

pub(crate) async fn fail_running_backups_of_client(
    pool: &Pool,
    client: &ClientId,
    error: &str,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let updated = sqlx::query(
        "UPDATE backups SET status = 'failed', finished_at = $2, error = $3 \
         WHERE client_id = $1 AND status = 'running'",
    )
    .bind(client.as_str())
    .bind(now.unix_millis())
    .bind(error)
    .execute(pool)
    .await
    .map_err(StoreError::database("failing a client's running backups"))?;
    Ok(updated.rows_affected())
}

pub(crate) async fn clients_with_backups(pool: &Pool) -> Result<Vec<ClientId>, StoreError> {
    let rows = sqlx::query(
        "SELECT DISTINCT client_id FROM backups WHERE forgotten_at IS NULL ORDER BY client_id",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("listing the clients with backups"))?;
    rows.iter()
        .map(|row| get_client_id(row, "backups", "client_id"))
        .collect()
}

pub(crate) async fn last_succeeded_backup_times(
    pool: &Pool,
) -> Result<Vec<(ClientId, Timestamp)>, StoreError> {
    let rows = sqlx::query(
        "SELECT client_id, MAX(started_at) AS last_started_at FROM backups \
         WHERE status = 'succeeded' AND forgotten_at IS NULL GROUP BY client_id ORDER BY client_id",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::database(
        "reading the last backup of each client",
    ))?;
    rows.iter()
        .map(|row| {
            Ok((
                get_client_id(row, "backups", "client_id")?,
                get_time(row, "backups", "last_started_at")?,
            ))
        })
        .collect()
}

pub(crate) async fn latest_backup_failures(
    pool: &Pool,
) -> Result<Vec<(ClientId, Timestamp, Option<String>)>, StoreError> {
    // The newest finished backup of each client, kept only when it failed: one query for
    // every client, so the alert rules do not read each client's journal.
    let rows = sqlx::query(
        "SELECT b.client_id, b.started_at, b.error FROM backups b \
         WHERE b.status = 'failed' AND b.forgotten_at IS NULL AND b.started_at = \
         (SELECT MAX(c.started_at) FROM backups c WHERE c.client_id = b.client_id \
          AND c.status <> 'running' AND c.forgotten_at IS NULL) \
         ORDER BY b.client_id",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::database(
        "reading the clients whose last backup failed",
    ))?;
    let mut failures: Vec<(ClientId, Timestamp, Option<String>)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let client = get_client_id(row, "backups", "client_id")?;
        if failures.last().is_some_and(|(last, _, _)| *last == client) {
            continue; // two backups started in the same millisecond: one alert
        }
        failures.push((
            client,
            get_time(row, "backups", "started_at")?,
            get::<Option<String>>(row, "backups", "error")?,
        ));
    }
    Ok(failures)
}

pub(crate) async fn count_backups_by_status(
    pool: &Pool,
) -> Result<BTreeMap<BackupStatus, u64>, StoreError> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS count FROM backups WHERE forgotten_at IS NULL GROUP BY status",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("counting backups"))?;
    let mut counts: BTreeMap<BackupStatus, u64> = BackupStatus::ALL
        .iter()
        .map(|status| (*status, 0))
        .collect();
    for row in &rows {
        let status = get_name(row, "backups", "status", BackupStatus::from_name)?;
        let count: i64 = get(row, "backups", "count")?;
        counts.insert(status, u64::try_from(count).unwrap_or(0));
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------
// Retained destroyed clients

const RETAINED_COLUMNS: &str = "client_id, domain, spec, destroyed_at, retain_until";

fn retained_from_row(row: &Row) -> Result<RetainedClient, StoreError> {
    const T: &str = "retained_clients";
    let domain: String = get(row, T, "domain")?;
    Ok(RetainedClient {
        client_id: get_client_id(row, T, "client_id")?,
        domain: Domain::parse(&domain).map_err(|error| StoreError::corrupt(T, "domain", error))?,
        spec_toml: get(row, T, "spec")?,
        destroyed_at: get_time(row, T, "destroyed_at")?,
        retain_until: get_time(row, T, "retain_until")?,
    })
}

/// Records (or updates) a retained client; a repeated call keeps the first `destroyed_at`.
pub(crate) async fn retain_client(
    pool: &Pool,
    retained: &RetainedClient,
) -> Result<RetainedClient, StoreError> {
    let sql = format!(
        "INSERT INTO retained_clients ({RETAINED_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (client_id) DO UPDATE SET domain = excluded.domain, spec = excluded.spec, \
         retain_until = excluded.retain_until RETURNING {RETAINED_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(retained.client_id.as_str())
        .bind(retained.domain.as_str())
        .bind(&retained.spec_toml)
        .bind(retained.destroyed_at.unix_millis())
        .bind(retained.retain_until.unix_millis())
        .fetch_one(pool)
        .await
        .map_err(StoreError::database("recording a retained client"))?;
    retained_from_row(&row)
}

pub(crate) async fn retained_client(
    pool: &Pool,
    client: &ClientId,
) -> Result<Option<RetainedClient>, StoreError> {
    let sql = format!("SELECT {RETAINED_COLUMNS} FROM retained_clients WHERE client_id = $1");
    sqlx::query(&sql)
        .bind(client.as_str())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::database("reading a retained client"))?
        .as_ref()
        .map(retained_from_row)
        .transpose()
}

pub(crate) async fn retained_clients_due(
    pool: &Pool,
    now: Timestamp,
) -> Result<Vec<RetainedClient>, StoreError> {
    let sql = format!(
        "SELECT {RETAINED_COLUMNS} FROM retained_clients WHERE retain_until <= $1 \
         ORDER BY retain_until, client_id"
    );
    let rows = sqlx::query(&sql)
        .bind(now.unix_millis())
        .fetch_all(pool)
        .await
        .map_err(StoreError::database(
            "listing retained clients that are due",
        ))?;
    rows.iter().map(retained_from_row).collect()
}

/// Deletes a destroyed client's retained record, backup rows and backup key, in one
/// transaction; refused while the client exists (its key still guards a live repository).
pub(crate) async fn release_retained_client(
    pool: &Pool,
    client: &ClientId,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM retained_clients WHERE client_id = $1")
        .bind(client.as_str())
        .execute(pool)
        .await
        .map_err(StoreError::database("releasing a retained client"))?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn forget_retained_client(
    pool: &Pool,
    client: &ClientId,
) -> Result<bool, StoreError> {
    let action = StoreError::database;
    let mut tx = begin_write(pool)
        .await
        .map_err(action("starting to forget a retained client"))?;
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM clients WHERE id = $1")
        .bind(client.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(action("checking that a client was destroyed"))?;
    if exists.is_some() {
        return Err(StoreError::ClientNotDestroyed {
            client: client.clone(),
        });
    }
    let mut removed = 0;
    for (sql, what) in [
        (
            "DELETE FROM backups WHERE client_id = $1",
            "deleting a retained client's backups",
        ),
        (
            "DELETE FROM backup_keys WHERE client_id = $1",
            "deleting a retained client's backup key",
        ),
        (
            "DELETE FROM retained_clients WHERE client_id = $1",
            "deleting a retained client",
        ),
    ] {
        removed += sqlx::query(sql)
            .bind(client.as_str())
            .execute(&mut *tx)
            .await
            .map_err(action(what))?
            .rows_affected();
    }
    tx.commit()
        .await
        .map_err(action("committing a forgotten retained client"))?;
    Ok(removed > 0)
}
