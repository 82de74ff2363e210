//! The rollout queries, written once.
//!
//! Compiled twice like `sql.rs` (as `sqlite::rollouts_sql` and `postgres::rollouts_sql`), with
//! the same rules: `$N` placeholders, standard types, one SQL text for both engines. Every
//! change of status is one guarded `UPDATE … WHERE status = …`.

use stackbox_core::rollout::{MemberStatus, RolloutSettings};

use super::begin_write;
use super::sql::{
    get, get_client_id, get_json, get_name, get_optional_time, get_time, is_unique_violation, Pool,
    Row,
};
use crate::error::StoreError;
use crate::model::{DeploymentId, RolloutId, RolloutStatus, Timestamp};
use crate::rollouts::{NewRolloutMember, RolloutMember, RolloutRecord};

const ROLLOUT_COLUMNS: &str =
    "id, to_release, status, settings, requested_by, halt_reason, created_at, finished_at";
const MEMBER_COLUMNS: &str =
    "position, client_id, wave, from_release, status, deployment_id, detail, updated_at";

fn member_from_row(row: &Row) -> Result<RolloutMember, StoreError> {
    const T: &str = "rollout_members";
    let position: i64 = get(row, T, "position")?;
    let wave: i64 = get(row, T, "wave")?;
    let deployment_id: Option<String> = get(row, T, "deployment_id")?;
    Ok(RolloutMember {
        position: u32::try_from(position).map_err(|e| StoreError::corrupt(T, "position", e))?,
        client_id: get_client_id(row, T, "client_id")?,
        wave: u32::try_from(wave).map_err(|e| StoreError::corrupt(T, "wave", e))?,
        from_release: get(row, T, "from_release")?,
        status: get_name(row, T, "status", MemberStatus::from_name)?,
        deployment_id: deployment_id.map(DeploymentId::from_trusted),
        detail: get(row, T, "detail")?,
        updated_at: get_time(row, T, "updated_at")?,
    })
}

async fn with_members(pool: &Pool, row: &Row) -> Result<RolloutRecord, StoreError> {
    const T: &str = "rollouts";
    let id = RolloutId::from_trusted(get(row, T, "id")?);
    let settings = get_json(row, T, "settings")?.unwrap_or_default();
    let settings: RolloutSettings =
        serde_json::from_value(settings).map_err(|e| StoreError::corrupt(T, "settings", e))?;
    let rows = sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM rollout_members WHERE rollout_id = $1 ORDER BY position"
    ))
    .bind(id.as_str())
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading a rollout's members"))?;
    Ok(RolloutRecord {
        to_release: get(row, T, "to_release")?,
        status: get_name(row, T, "status", RolloutStatus::from_name)?,
        settings,
        requested_by: get_json(row, T, "requested_by")?,
        halt_reason: get(row, T, "halt_reason")?,
        created_at: get_time(row, T, "created_at")?,
        finished_at: get_optional_time(row, T, "finished_at")?,
        members: rows.iter().map(member_from_row).collect::<Result<_, _>>()?,
        id,
    })
}

pub(crate) async fn insert_rollout(
    pool: &Pool,
    id: &RolloutId,
    to_release: &str,
    settings: &RolloutSettings,
    requested_by: Option<&serde_json::Value>,
    members: &[NewRolloutMember],
    now: Timestamp,
) -> Result<(), StoreError> {
    let action = StoreError::database;
    let mut tx = begin_write(pool)
        .await
        .map_err(action("starting to record a rollout"))?;
    let settings = serde_json::to_string(settings).unwrap_or_default();
    let inserted = sqlx::query(
        "INSERT INTO rollouts (id, to_release, status, settings, requested_by, created_at) \
         VALUES ($1, $2, 'running', $3, $4, $5)",
    )
    .bind(id.as_str())
    .bind(to_release)
    .bind(settings)
    .bind(requested_by.map(serde_json::Value::to_string))
    .bind(now.unix_millis())
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            tx.rollback()
                .await
                .map_err(action("abandoning a conflicting rollout"))?;
            let running = running_rollout(pool).await?;
            return Err(match running {
                Some(running) => StoreError::RolloutRunning {
                    rollout: running.id,
                },
                None => action("recording a rollout")(error),
            });
        }
        Err(error) => return Err(action("recording a rollout")(error)),
    }
    for (position, member) in members.iter().enumerate() {
        let status = if member.skipped.is_some() {
            MemberStatus::Skipped
        } else {
            MemberStatus::Pending
        };
        sqlx::query(
            "INSERT INTO rollout_members (rollout_id, position, client_id, wave, from_release, \
             status, detail, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.as_str())
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(member.client_id.as_str())
        .bind(i64::from(member.wave))
        .bind(&member.from_release)
        .bind(status.as_str())
        .bind(member.skipped.as_deref())
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(action("recording a rollout's members"))?;
    }
    tx.commit().await.map_err(action("recording a rollout"))?;
    Ok(())
}

pub(crate) async fn rollout(
    pool: &Pool,
    id: &RolloutId,
) -> Result<Option<RolloutRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("reading a rollout"))?;
    match row {
        Some(row) => Ok(Some(with_members(pool, &row).await?)),
        None => Ok(None),
    }
}

pub(crate) async fn rollouts(pool: &Pool, limit: u32) -> Result<Vec<RolloutRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY id DESC LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("listing rollouts"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(with_members(pool, row).await?);
    }
    Ok(out)
}

pub(crate) async fn running_rollout(pool: &Pool) -> Result<Option<RolloutRecord>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE status = 'running'"
    ))
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("looking for the running rollout"))?;
    match row {
        Some(row) => Ok(Some(with_members(pool, &row).await?)),
        None => Ok(None),
    }
}

pub(crate) async fn move_member(
    pool: &Pool,
    id: &RolloutId,
    position: u32,
    (from, to): (MemberStatus, MemberStatus),
    deployment: Option<&DeploymentId>,
    detail: Option<&str>,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE rollout_members SET status = $4, \
         deployment_id = COALESCE($5, deployment_id), detail = COALESCE($6, detail), \
         updated_at = $7 WHERE rollout_id = $1 AND position = $2 AND status = $3",
    )
    .bind(id.as_str())
    .bind(i64::from(position))
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(deployment.map(DeploymentId::as_str))
    .bind(detail)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("moving a rollout member"))?;
    if updated.rows_affected() > 0 {
        return Ok(true);
    }
    match rollout(pool, id).await? {
        Some(_) => Ok(false),
        None => Err(StoreError::RolloutNotFound {
            rollout: id.clone(),
        }),
    }
}

pub(crate) async fn set_halt_reason(
    pool: &Pool,
    id: &RolloutId,
    reason: &str,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE rollouts SET halt_reason = $2 \
         WHERE id = $1 AND status = 'running' AND halt_reason IS NULL",
    )
    .bind(id.as_str())
    .bind(reason)
    .execute(pool)
    .await
    .map_err(StoreError::database("halting a rollout"))?;
    Ok(updated.rows_affected() > 0)
}

pub(crate) async fn finish(
    pool: &Pool,
    id: &RolloutId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE rollouts SET finished_at = $2, \
         status = CASE WHEN halt_reason IS NULL THEN 'succeeded' ELSE 'halted' END \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id.as_str())
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("finishing a rollout"))?;
    Ok(updated.rows_affected() > 0)
}
