//! Every query of the store, written once.
//!
//! This file is compiled twice, as `sqlite::sql` and as `postgres::sql`; `Db` and the few
//! backend differences (`begin_write`, `lock_schema`, `FOR_UPDATE`, and `BACKEND`, which picks
//! a migration's engine companion) come from the parent module. The SQL text is the same for
//! both engines: `$N` placeholders (which SQLite accepts as numbered parameters), standard
//! types, `ON CONFLICT … DO UPDATE/NOTHING`.

use std::collections::BTreeMap;

use sqlx::Row as _;
use stackbox_core::client::{ClientId, ClientSpec, CompanyName, Domain};
use stackbox_core::plan::Plan;

use super::{begin_write, lock_schema, Db, BACKEND, FOR_UPDATE};
use crate::error::StoreError;
use crate::migrations::{latest_version, MIGRATIONS, SCHEMA_TABLE};
use crate::model::{
    ClientFilter, ClientPage, ClientRecord, ClientState, Deployment, DeploymentId, DeploymentKind,
    DeploymentPage, DeploymentStatus, FinishedDeployment, FinishedStep, Step, StepChange,
    StepStatus, Timestamp, TokenId, TokenInfo, TokenRecord, TokenRole,
};

pub(super) type Pool = sqlx::Pool<Db>;
pub(super) type Row = <Db as sqlx::Database>::Row;
type Connection = <Db as sqlx::Database>::Connection;

// ---------------------------------------------------------------------------------------------
// Reading rows

/// One column, decoded; a value of the wrong type means the database was changed by hand.
pub(super) fn get<'r, T>(
    row: &'r Row,
    table: &'static str,
    column: &'static str,
) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get(column)
        .map_err(|error| StoreError::corrupt(table, column, error))
}

pub(super) fn get_client_id(
    row: &Row,
    table: &'static str,
    column: &'static str,
) -> Result<ClientId, StoreError> {
    let text: String = get(row, table, column)?;
    ClientId::parse(&text).map_err(|error| StoreError::corrupt(table, column, error))
}

pub(super) fn get_time(
    row: &Row,
    table: &'static str,
    column: &'static str,
) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_unix_millis(get(row, table, column)?))
}

pub(super) fn get_optional_time(
    row: &Row,
    table: &'static str,
    column: &'static str,
) -> Result<Option<Timestamp>, StoreError> {
    let millis: Option<i64> = get(row, table, column)?;
    Ok(millis.map(Timestamp::from_unix_millis))
}

/// A JSON column (a step's output, a deployment's parameters, a backup's manifest).
pub(super) fn get_json(
    row: &Row,
    table: &'static str,
    column: &'static str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = get(row, table, column)?;
    text.map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|error| StoreError::corrupt(table, column, error))
}

/// A closed-set value (state, status, kind, role) stored as its name.
pub(super) fn get_name<T>(
    row: &Row,
    table: &'static str,
    column: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = get(row, table, column)?;
    parse(&text)
        .ok_or_else(|| StoreError::corrupt(table, column, format!("unknown value {text:?}")))
}

pub(super) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_unique_violation())
}

pub(super) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_foreign_key_violation())
}

// ---------------------------------------------------------------------------------------------
// Schema

/// Applies every embedded migration the database has not seen, in one transaction. Running it
/// again on an up-to-date database only reads the version table.
pub(crate) async fn migrate(pool: &Pool, now: Timestamp) -> Result<(), StoreError> {
    let action = StoreError::database;
    let mut tx = begin_write(pool)
        .await
        .map_err(action("starting the schema migration"))?;
    lock_schema(&mut tx)
        .await
        .map_err(action("waiting for another server's schema migration"))?;
    sqlx::raw_sql(SCHEMA_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(action("creating the schema version table"))?;
    let applied = sqlx::query("SELECT version, checksum FROM stackbox_schema ORDER BY version")
        .fetch_all(&mut *tx)
        .await
        .map_err(action("reading the schema version"))?;
    let mut applied_versions = Vec::new();
    for row in &applied {
        let version: i64 = get(row, "stackbox_schema", "version")?;
        let checksum: Vec<u8> = get(row, "stackbox_schema", "checksum")?;
        match MIGRATIONS.iter().find(|m| m.version == version) {
            Some(migration) if migration.checksum(BACKEND) != checksum => {
                return Err(StoreError::MigrationChanged {
                    version,
                    name: migration.name,
                });
            }
            Some(_) => applied_versions.push(version),
            None => {
                return Err(StoreError::SchemaTooNew {
                    found: version,
                    known: latest_version(),
                });
            }
        }
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|m| !applied_versions.contains(&m.version))
    {
        let failed = |source| StoreError::Migration {
            version: migration.version,
            name: migration.name,
            source,
        };
        for part in migration.parts(BACKEND) {
            sqlx::raw_sql(part)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        sqlx::query(
            "INSERT INTO stackbox_schema (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(migration.checksum(BACKEND))
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    }
    tx.commit()
        .await
        .map_err(action("committing the schema migration"))
}

/// The applied schema versions, oldest first.
pub(crate) async fn schema_versions(pool: &Pool) -> Result<Vec<i64>, StoreError> {
    sqlx::query_scalar("SELECT version FROM stackbox_schema ORDER BY version")
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("reading the schema version"))
}

/// Records `fingerprint` as the master key's on first use; afterwards returns the recorded one.
pub(crate) async fn remember_master_key(
    pool: &Pool,
    fingerprint: &str,
) -> Result<(bool, String), StoreError> {
    let action = StoreError::database("recording the master key's fingerprint");
    let inserted = sqlx::query(
        "INSERT INTO store_meta (name, value) VALUES ('master_key_fingerprint', $1) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(fingerprint)
    .execute(pool)
    .await
    .map_err(action)?;
    let recorded: String =
        sqlx::query_scalar("SELECT value FROM store_meta WHERE name = 'master_key_fingerprint'")
            .fetch_one(pool)
            .await
            .map_err(StoreError::database("reading the master key's fingerprint"))?;
    Ok((inserted.rows_affected() == 1, recorded))
}

// ---------------------------------------------------------------------------------------------
// Clients

/// The columns `client_from_row` reads, as a literal so `concat!` can use it.
macro_rules! client_columns {
    () => {
        "id, domain, company_name, plan, spec, state, state_reason, created_at, updated_at"
    };
}

fn client_from_row(row: &Row) -> Result<ClientRecord, StoreError> {
    const T: &str = "clients";
    let domain: String = get(row, T, "domain")?;
    let company_name: String = get(row, T, "company_name")?;
    Ok(ClientRecord {
        id: get_client_id(row, T, "id")?,
        domain: Domain::parse(&domain).map_err(|e| StoreError::corrupt(T, "domain", e))?,
        company_name: CompanyName::parse(&company_name)
            .map_err(|e| StoreError::corrupt(T, "company_name", e))?,
        plan: get_name(row, T, "plan", Plan::from_key)?,
        spec_toml: get(row, T, "spec")?,
        state: get_name(row, T, "state", ClientState::from_name)?,
        state_reason: get(row, T, "state_reason")?,
        created_at: get_time(row, T, "created_at")?,
        updated_at: get_time(row, T, "updated_at")?,
    })
}

pub(crate) async fn insert_client(
    pool: &Pool,
    id: &ClientId,
    spec: &ClientSpec,
    state: ClientState,
    now: Timestamp,
) -> Result<ClientRecord, StoreError> {
    let record = ClientRecord {
        id: id.clone(),
        domain: spec.domain.clone(),
        company_name: spec.company_name.clone(),
        plan: spec.plan,
        spec_toml: spec.to_toml(id),
        state,
        state_reason: None,
        created_at: now,
        updated_at: now,
    };
    let inserted = sqlx::query(
        "INSERT INTO clients \
         (id, domain, company_name, plan, spec, state, state_reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $7)",
    )
    .bind(id.as_str())
    .bind(record.domain.as_str())
    .bind(record.company_name.as_str())
    .bind(record.plan.key())
    .bind(&record.spec_toml)
    .bind(state.as_str())
    .bind(now.unix_millis())
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(record),
        // Which uniqueness failed is read back rather than parsed from the engine's message,
        // which differs between SQLite and PostgreSQL.
        Err(error) if is_unique_violation(&error) => {
            if let Some(owner) = client_by_domain(pool, &record.domain).await? {
                if owner.id != *id {
                    return Err(StoreError::DomainTaken {
                        domain: record.domain.as_str().to_string(),
                        owner: owner.id,
                    });
                }
            }
            if client(pool, id).await?.is_some() {
                return Err(StoreError::ClientExists { client: id.clone() });
            }
            Err(StoreError::database("inserting a client")(error))
        }
        Err(error) => Err(StoreError::database("inserting a client")(error)),
    }
}

pub(crate) async fn client(pool: &Pool, id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("reading a client"))?
    .as_ref()
    .map(client_from_row)
    .transpose()
}

pub(crate) async fn client_by_domain(
    pool: &Pool,
    domain: &Domain,
) -> Result<Option<ClientRecord>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients WHERE domain = $1"
    ))
    .bind(domain.as_str())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("reading a client by domain"))?
    .as_ref()
    .map(client_from_row)
    .transpose()
}

/// The clients whose stored configuration names `domain` as one of its previous domains
/// (found by the quoted name in the TOML, then confirmed on the parsed configuration).
pub(crate) async fn clients_redirecting(
    pool: &Pool,
    domain: &Domain,
) -> Result<Vec<ClientRecord>, StoreError> {
    // A domain holds only [a-z0-9.-]: no LIKE wildcard.
    let pattern = format!("%\"{}\"%", domain.as_str());
    let rows = sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients WHERE spec LIKE $1"
    ))
    .bind(pattern)
    .fetch_all(pool)
    .await
    .map_err(StoreError::database(
        "looking for clients redirecting a domain",
    ))?;
    let mut out = Vec::new();
    for row in &rows {
        let record = client_from_row(row)?;
        if record
            .spec()?
            .previous_domains
            .iter()
            .any(|p| &p.domain == domain)
        {
            out.push(record);
        }
    }
    Ok(out)
}

/// The clients whose stored configuration has previous domains (found by the TOML table's
/// name, then confirmed on the parsed configuration), in id order.
pub(crate) async fn clients_with_previous_domains(
    pool: &Pool,
) -> Result<Vec<ClientRecord>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients WHERE spec LIKE '%[[previous_domains]]%' ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database(
        "looking for clients with previous domains",
    ))?;
    let mut out = Vec::new();
    for row in &rows {
        let record = client_from_row(row)?;
        if !record.spec()?.previous_domains.is_empty() {
            out.push(record);
        }
    }
    Ok(out)
}

/// One page in id order after `after`. Asks for one row more than the page to know whether
/// another page follows, so the last page never costs an empty extra request.
pub(crate) async fn list_clients(
    pool: &Pool,
    filter: ClientFilter,
    after: Option<&ClientId>,
    limit: u32,
) -> Result<ClientPage, StoreError> {
    let mut conditions = Vec::new();
    let mut parameters = 0;
    let mut parameter = || {
        parameters += 1;
        format!("${parameters}")
    };
    if filter.state.is_some() {
        conditions.push(format!("state = {}", parameter()));
    }
    if filter.plan.is_some() {
        conditions.push(format!("plan = {}", parameter()));
    }
    if after.is_some() {
        conditions.push(format!("id > {}", parameter()));
    }
    let limit_parameter = parameter();
    // Lists leave the configuration out: it is most of a row's bytes, and a page of
    // summaries does not need it (`Store::client` returns it).
    let mut sql = String::from(concat!(
        "SELECT id, domain, company_name, plan, '' AS spec, state, state_reason, created_at, updated_at",
        " FROM clients"
    ));
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {limit_parameter}"));

    let mut query = sqlx::query(&sql);
    if let Some(state) = filter.state {
        query = query.bind(state.as_str());
    }
    if let Some(plan) = filter.plan {
        query = query.bind(plan.key());
    }
    if let Some(after) = after {
        query = query.bind(after.as_str());
    }
    let rows = query
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("listing clients"))?;
    let mut clients = rows
        .iter()
        .map(client_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if clients.len() > limit {
        clients.truncate(limit);
        clients.last().map(|client| client.id.clone())
    } else {
        None
    };
    Ok(ClientPage { clients, next })
}

/// Replaces a client's configuration (and the columns taken from it), keeping its state.
pub(crate) async fn update_client_spec(
    pool: &Pool,
    id: &ClientId,
    spec: &ClientSpec,
    now: Timestamp,
) -> Result<ClientRecord, StoreError> {
    let row = sqlx::query(concat!(
        "UPDATE clients SET domain = $2, company_name = $3, plan = $4, spec = $5, \
         updated_at = $6 WHERE id = $1 RETURNING ",
        client_columns!()
    ))
    .bind(id.as_str())
    .bind(spec.domain.as_str())
    .bind(spec.company_name.as_str())
    .bind(spec.plan.key())
    .bind(spec.to_toml(id))
    .bind(now.unix_millis())
    .fetch_optional(pool)
    .await;
    match row {
        Ok(Some(row)) => client_from_row(&row),
        Ok(None) => Err(StoreError::ClientNotFound { client: id.clone() }),
        Err(error) if is_unique_violation(&error) => {
            match client_by_domain(pool, &spec.domain).await? {
                Some(owner) if owner.id != *id => Err(StoreError::DomainTaken {
                    domain: spec.domain.as_str().to_string(),
                    owner: owner.id,
                }),
                _ => Err(StoreError::database("changing a client's configuration")(
                    error,
                )),
            }
        }
        Err(error) => Err(StoreError::database("changing a client's configuration")(
            error,
        )),
    }
}

pub(crate) async fn set_client_state(
    pool: &Pool,
    id: &ClientId,
    state: ClientState,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let updated = sqlx::query(
        "UPDATE clients SET state = $2, state_reason = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(state.as_str())
    .bind(reason)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("changing a client's state"))?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::ClientNotFound { client: id.clone() });
    }
    Ok(())
}

/// The id of the client's unfinished deployment, if any.
async fn unfinished_deployment_of(
    connection: &mut Connection,
    client: &ClientId,
) -> Result<Option<DeploymentId>, StoreError> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM deployments WHERE client_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(client.as_str())
    .fetch_optional(connection)
    .await
    .map_err(StoreError::database("looking for an unfinished deployment"))?;
    Ok(id.map(DeploymentId::from_trusted))
}

/// Deletes a client and, by cascade, its secrets, tokens and finished deployments. Refused
/// while a deployment is unfinished: the pipeline would lose its journal mid-way.
pub(crate) async fn delete_client(pool: &Pool, id: &ClientId) -> Result<(), StoreError> {
    let action = StoreError::database;
    let mut tx = begin_write(pool)
        .await
        .map_err(action("starting to delete a client"))?;
    // Locks the client row on PostgreSQL, so a deployment cannot be created between the check
    // below and the delete (its foreign key check waits for this lock).
    let exists: Option<String> =
        sqlx::query_scalar(&format!("SELECT id FROM clients WHERE id = $1{FOR_UPDATE}"))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(action("reading a client"))?;
    if exists.is_none() {
        return Err(StoreError::ClientNotFound { client: id.clone() });
    }
    if let Some(deployment) = unfinished_deployment_of(&mut tx, id).await? {
        return Err(StoreError::ClientBusy {
            client: id.clone(),
            deployment,
        });
    }
    sqlx::query("DELETE FROM clients WHERE id = $1")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(action("deleting a client"))?;
    tx.commit().await.map_err(action("deleting a client"))
}

pub(crate) async fn count_clients_by_state(
    pool: &Pool,
) -> Result<BTreeMap<ClientState, u64>, StoreError> {
    let rows = sqlx::query("SELECT state, COUNT(*) AS count FROM clients GROUP BY state")
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("counting clients"))?;
    let mut counts: BTreeMap<ClientState, u64> =
        ClientState::ALL.iter().map(|state| (*state, 0)).collect();
    for row in &rows {
        let state = get_name(row, "clients", "state", ClientState::from_name)?;
        let count: i64 = get(row, "clients", "count")?;
        counts.insert(state, u64::try_from(count).unwrap_or(0));
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------
// Secrets

pub(crate) async fn put_sealed_secrets(
    pool: &Pool,
    client: &ClientId,
    sealed: &[u8],
    now: Timestamp,
) -> Result<(), StoreError> {
    let stored = sqlx::query(
        "INSERT INTO client_secrets (client_id, sealed, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (client_id) DO UPDATE SET sealed = excluded.sealed, \
         updated_at = excluded.updated_at",
    )
    .bind(client.as_str())
    .bind(sealed)
    .bind(now.unix_millis())
    .execute(pool)
    .await;
    match stored {
        Ok(_) => Ok(()),
        Err(error) if is_foreign_key_violation(&error) => Err(StoreError::ClientNotFound {
            client: client.clone(),
        }),
        Err(error) => Err(StoreError::database("storing a client's secrets")(error)),
    }
}

pub(crate) async fn sealed_secrets(
    pool: &Pool,
    client: &ClientId,
) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar("SELECT sealed FROM client_secrets WHERE client_id = $1")
        .bind(client.as_str())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::database("reading a client's secrets"))
}

// ---------------------------------------------------------------------------------------------
// Deployments

/// Deployments joined with their steps, in one statement so that a deployment and its steps
/// come from the same snapshot on both engines.
fn deployments_sql(condition: &str, order: &str) -> String {
    format!(
        "SELECT d.id, d.client_id, d.kind, d.status, d.created_at, d.started_at, \
         d.finished_at, d.error, d.params, s.position, s.name, s.status AS step_status, \
         s.attempts, s.started_at AS step_started_at, s.finished_at AS step_finished_at, \
         s.error AS step_error, s.output \
         FROM deployments d LEFT JOIN deployment_steps s ON s.deployment_id = d.id \
         WHERE {condition} ORDER BY d.id {order}, s.position"
    )
}

/// Groups joined rows (ordered by deployment) into deployments with their steps.
fn deployments_from_rows(rows: &[Row]) -> Result<Vec<Deployment>, StoreError> {
    const D: &str = "deployments";
    const S: &str = "deployment_steps";
    let mut deployments: Vec<Deployment> = Vec::new();
    for row in rows {
        let id: String = get(row, D, "id")?;
        if deployments.last().is_none_or(|last| last.id.as_str() != id) {
            deployments.push(Deployment {
                id: DeploymentId::from_trusted(id),
                client_id: get_client_id(row, D, "client_id")?,
                kind: get_name(row, D, "kind", DeploymentKind::from_name)?,
                status: get_name(row, D, "status", DeploymentStatus::from_name)?,
                created_at: get_time(row, D, "created_at")?,
                started_at: get_optional_time(row, D, "started_at")?,
                finished_at: get_optional_time(row, D, "finished_at")?,
                error: get(row, D, "error")?,
                params: get_json(row, D, "params")?,
                steps: Vec::new(),
            });
        }
        let position: Option<i64> = get(row, S, "position")?;
        let (Some(position), Some(deployment)) = (position, deployments.last_mut()) else {
            continue;
        };
        deployment.steps.push(Step {
            position,
            name: get(row, S, "name")?,
            status: get_name(row, S, "step_status", StepStatus::from_name)?,
            attempts: get(row, S, "attempts")?,
            started_at: get_optional_time(row, S, "step_started_at")?,
            finished_at: get_optional_time(row, S, "step_finished_at")?,
            error: get(row, S, "step_error")?,
            output: get_json(row, S, "output")?,
        });
    }
    Ok(deployments)
}

async fn deployment_on(
    connection: &mut Connection,
    id: &DeploymentId,
) -> Result<Option<Deployment>, StoreError> {
    let rows = sqlx::query(&deployments_sql("d.id = $1", "ASC"))
        .bind(id.as_str())
        .fetch_all(connection)
        .await
        .map_err(StoreError::database("reading a deployment"))?;
    Ok(deployments_from_rows(&rows)?.pop())
}

pub(crate) async fn deployment(
    pool: &Pool,
    id: &DeploymentId,
) -> Result<Option<Deployment>, StoreError> {
    let mut connection = pool
        .acquire()
        .await
        .map_err(StoreError::database("reading a deployment"))?;
    deployment_on(&mut connection, id).await
}

/// Creates a pending deployment with its pending steps. The partial unique index refuses a
/// second unfinished deployment for the client; the one that is there is then named.
pub(crate) async fn create_deployment(
    pool: &Pool,
    client: &ClientId,
    kind: DeploymentKind,
    steps: &[&str],
    params: Option<&serde_json::Value>,
    now: Timestamp,
) -> Result<Deployment, StoreError> {
    let action = StoreError::database;
    let mut last_conflict = None;
    // A conflict whose winner has already finished when we look for it is retried; three
    // rounds are plenty (each needs a whole deployment to finish in between).
    for _ in 0..3 {
        let id = crate::new_deployment_id(now)?;
        let mut tx = begin_write(pool)
            .await
            .map_err(action("starting to create a deployment"))?;
        let inserted = sqlx::query(
            "INSERT INTO deployments (id, client_id, kind, status, created_at, params) \
             VALUES ($1, $2, $3, 'pending', $4, $5)",
        )
        .bind(id.as_str())
        .bind(client.as_str())
        .bind(kind.as_str())
        .bind(now.unix_millis())
        .bind(params.map(serde_json::Value::to_string))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => {
                tx.rollback()
                    .await
                    .map_err(action("abandoning a conflicting deployment"))?;
                let mut connection = pool
                    .acquire()
                    .await
                    .map_err(action("looking for an unfinished deployment"))?;
                if let Some(deployment) = unfinished_deployment_of(&mut connection, client).await? {
                    return Err(StoreError::ClientBusy {
                        client: client.clone(),
                        deployment,
                    });
                }
                last_conflict = Some(error);
                continue;
            }
            Err(error) if is_foreign_key_violation(&error) => {
                return Err(StoreError::ClientNotFound {
                    client: client.clone(),
                });
            }
            Err(error) => return Err(action("creating a deployment")(error)),
        }
        let mut created_steps = Vec::with_capacity(steps.len());
        for (position, name) in steps.iter().enumerate() {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO deployment_steps (deployment_id, position, name, status, attempts) \
                 VALUES ($1, $2, $3, 'pending', 0)",
            )
            .bind(id.as_str())
            .bind(position)
            .bind(*name)
            .execute(&mut *tx)
            .await
            .map_err(action("creating a deployment's steps"))?;
            created_steps.push(Step {
                position,
                name: name.to_string(),
                status: StepStatus::Pending,
                attempts: 0,
                started_at: None,
                finished_at: None,
                error: None,
                output: None,
            });
        }
        tx.commit()
            .await
            .map_err(action("committing a new deployment"))?;
        return Ok(Deployment {
            id,
            client_id: client.clone(),
            kind,
            status: DeploymentStatus::Pending,
            created_at: now,
            started_at: None,
            finished_at: None,
            error: None,
            params: params.cloned(),
            steps: created_steps,
        });
    }
    Err(match last_conflict {
        Some(error) => action("creating a deployment")(error),
        None => StoreError::Corrupt {
            table: "deployments",
            column: "id",
            problem: "no deployment could be created".to_string(),
        },
    })
}

/// The client's deployments, newest first.
pub(crate) async fn deployments_of_client(
    pool: &Pool,
    client: &ClientId,
    limit: u32,
) -> Result<Vec<Deployment>, StoreError> {
    let sql = deployments_sql(
        "d.id IN (SELECT id FROM deployments WHERE client_id = $1 ORDER BY id DESC LIMIT $2)",
        "DESC",
    );
    let rows = sqlx::query(&sql)
        .bind(client.as_str())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("listing a client's deployments"))?;
    deployments_from_rows(&rows)
}

/// One page of the client's deployments, newest first: those older than `after` (ids sort by
/// creation time), at most `limit`, and the cursor of the next page.
pub(crate) async fn deployment_page_of_client(
    pool: &Pool,
    client: &ClientId,
    after: Option<&DeploymentId>,
    limit: u32,
) -> Result<DeploymentPage, StoreError> {
    // One more than asked for, to know whether another page follows.
    let rows = match after {
        None => {
            let sql = deployments_sql(
                "d.id IN (SELECT id FROM deployments WHERE client_id = $1 \
                 ORDER BY id DESC LIMIT $2)",
                "DESC",
            );
            sqlx::query(&sql)
                .bind(client.as_str())
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await
        }
        Some(after) => {
            let sql = deployments_sql(
                "d.id IN (SELECT id FROM deployments WHERE client_id = $1 AND id < $3 \
                 ORDER BY id DESC LIMIT $2)",
                "DESC",
            );
            sqlx::query(&sql)
                .bind(client.as_str())
                .bind(i64::from(limit) + 1)
                .bind(after.as_str())
                .fetch_all(pool)
                .await
        }
    }
    .map_err(StoreError::database("listing a client's deployments"))?;
    let mut deployments = deployments_from_rows(&rows)?;
    let next = if deployments.len() > limit as usize {
        deployments.truncate(limit as usize);
        deployments.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok(DeploymentPage { deployments, next })
}

/// Every pending or running deployment, oldest first: what a restarted server resumes.
pub(crate) async fn unfinished_deployments(pool: &Pool) -> Result<Vec<Deployment>, StoreError> {
    let rows = sqlx::query(&deployments_sql(
        "d.status IN ('pending', 'running')",
        "ASC",
    ))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("listing unfinished deployments"))?;
    deployments_from_rows(&rows)
}

/// Reads (and on PostgreSQL locks) a deployment's status inside a write transaction; refuses a
/// missing or finished deployment.
async fn lock_unfinished_deployment(
    connection: &mut Connection,
    id: &DeploymentId,
) -> Result<DeploymentStatus, StoreError> {
    let status: Option<String> = sqlx::query_scalar(&format!(
        "SELECT status FROM deployments WHERE id = $1{FOR_UPDATE}"
    ))
    .bind(id.as_str())
    .fetch_optional(connection)
    .await
    .map_err(StoreError::database("reading a deployment's status"))?;
    let status = status.ok_or_else(|| StoreError::DeploymentNotFound {
        deployment: id.clone(),
    })?;
    let status = DeploymentStatus::from_name(&status).ok_or_else(|| {
        StoreError::corrupt("deployments", "status", format!("unknown value {status:?}"))
    })?;
    if status.is_finished() {
        return Err(StoreError::DeploymentFinished {
            deployment: id.clone(),
            status,
        });
    }
    Ok(status)
}

/// Moves one step from the status the change expects to its new one, or explains why not.
/// Read, check and write happen in one write transaction with the deployment locked, so two
/// callers cannot both start the same step.
pub(crate) async fn change_step(
    pool: &Pool,
    deployment: &DeploymentId,
    step: &str,
    change: StepChange<'_>,
    now: Timestamp,
) -> Result<Step, StoreError> {
    let action = StoreError::database;
    let mut tx = begin_write(pool)
        .await
        .map_err(action("starting to change a step"))?;
    lock_unfinished_deployment(&mut tx, deployment).await?;
    let current: Option<String> = sqlx::query_scalar(
        "SELECT status FROM deployment_steps WHERE deployment_id = $1 AND name = $2",
    )
    .bind(deployment.as_str())
    .bind(step)
    .fetch_optional(&mut *tx)
    .await
    .map_err(action("reading a step's status"))?;
    let current = current.ok_or_else(|| StoreError::StepNotFound {
        deployment: deployment.clone(),
        step: step.to_string(),
    })?;
    let current = StepStatus::from_name(&current).ok_or_else(|| {
        StoreError::corrupt(
            "deployment_steps",
            "status",
            format!("unknown value {current:?}"),
        )
    })?;
    let refused = || StoreError::StepTransition {
        deployment: deployment.clone(),
        step: step.to_string(),
        from: current,
        to: change.to(),
    };
    if current != change.from() {
        return Err(refused());
    }
    let starts = matches!(change, StepChange::Start | StepChange::Resume);
    let (error, output) = match change {
        StepChange::Fail(error) => (Some(error), None),
        StepChange::Succeed(output) => (None, output.map(|value| value.to_string())),
        _ => (None, None),
    };
    let updated = sqlx::query(
        "UPDATE deployment_steps SET status = $3, attempts = attempts + $4, \
         started_at = COALESCE($5, started_at), finished_at = $6, error = $7, output = $8 \
         WHERE deployment_id = $1 AND name = $2 AND status = $9",
    )
    .bind(deployment.as_str())
    .bind(step)
    .bind(change.to().as_str())
    .bind(i64::from(starts))
    .bind(starts.then_some(now.unix_millis()))
    .bind((!starts).then_some(now.unix_millis()))
    .bind(error)
    .bind(output)
    .bind(current.as_str())
    .execute(&mut *tx)
    .await
    .map_err(action("changing a step's status"))?;
    if updated.rows_affected() != 1 {
        return Err(refused());
    }
    if starts {
        sqlx::query(
            "UPDATE deployments SET status = 'running', started_at = COALESCE(started_at, $2) \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(deployment.as_str())
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(action("marking a deployment running"))?;
    }
    let changed = deployment_on(&mut tx, deployment)
        .await?
        .and_then(|deployment| deployment.steps.into_iter().find(|s| s.name == step))
        .ok_or_else(|| StoreError::StepNotFound {
            deployment: deployment.clone(),
            step: step.to_string(),
        })?;
    tx.commit()
        .await
        .map_err(action("committing a step's status"))?;
    Ok(changed)
}

/// Ends an unfinished deployment. `succeeded` needs every step succeeded or skipped.
pub(crate) async fn finish_deployment(
    pool: &Pool,
    id: &DeploymentId,
    status: DeploymentStatus,
    error: Option<&str>,
    now: Timestamp,
) -> Result<Deployment, StoreError> {
    let action = StoreError::database;
    let mut tx = begin_write(pool)
        .await
        .map_err(action("starting to finish a deployment"))?;
    lock_unfinished_deployment(&mut tx, id).await?;
    if status == DeploymentStatus::Succeeded {
        let unfinished: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM deployment_steps WHERE deployment_id = $1 \
             AND status NOT IN ('succeeded', 'skipped') ORDER BY position",
        )
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(action("checking a deployment's steps"))?;
        if !unfinished.is_empty() {
            return Err(StoreError::UnfinishedSteps {
                deployment: id.clone(),
                steps: unfinished,
            });
        }
    }
    sqlx::query("UPDATE deployments SET status = $2, error = $3, finished_at = $4 WHERE id = $1")
        .bind(id.as_str())
        .bind(status.as_str())
        .bind(error)
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(action("finishing a deployment"))?;
    let finished =
        deployment_on(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::DeploymentNotFound {
                deployment: id.clone(),
            })?;
    tx.commit()
        .await
        .map_err(action("committing a finished deployment"))?;
    Ok(finished)
}

pub(crate) async fn count_deployments_by_status(
    pool: &Pool,
) -> Result<BTreeMap<DeploymentStatus, u64>, StoreError> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS count FROM deployments GROUP BY status")
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("counting deployments"))?;
    let mut counts: BTreeMap<DeploymentStatus, u64> = DeploymentStatus::ALL
        .iter()
        .map(|status| (*status, 0))
        .collect();
    for row in &rows {
        let status = get_name(row, "deployments", "status", DeploymentStatus::from_name)?;
        let count: i64 = get(row, "deployments", "count")?;
        counts.insert(status, u64::try_from(count).unwrap_or(0));
    }
    Ok(counts)
}

pub(crate) async fn finished_deployments(
    pool: &Pool,
    finished_after: Option<Timestamp>,
) -> Result<Vec<FinishedDeployment>, StoreError> {
    const D: &str = "deployments";
    let rows = sqlx::query(
        "SELECT id, kind, status, created_at, started_at, finished_at FROM deployments \
         WHERE finished_at IS NOT NULL AND finished_at > $1 ORDER BY finished_at, id",
    )
    .bind(finished_after.map_or(i64::MIN, Timestamp::unix_millis))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading finished deployments"))?;
    rows.iter()
        .map(|row| {
            Ok(FinishedDeployment {
                id: DeploymentId::from_trusted(get(row, D, "id")?),
                kind: get_name(row, D, "kind", DeploymentKind::from_name)?,
                status: get_name(row, D, "status", DeploymentStatus::from_name)?,
                created_at: get_time(row, D, "created_at")?,
                started_at: get_optional_time(row, D, "started_at")?,
                finished_at: get_time(row, D, "finished_at")?,
            })
        })
        .collect()
}

pub(crate) async fn finished_steps(
    pool: &Pool,
    finished_after: Option<Timestamp>,
) -> Result<Vec<FinishedStep>, StoreError> {
    const S: &str = "deployment_steps";
    let rows = sqlx::query(
        "SELECT deployment_id, name, status, started_at, finished_at FROM deployment_steps \
         WHERE finished_at IS NOT NULL AND started_at IS NOT NULL AND finished_at > $1 \
         ORDER BY finished_at, deployment_id, position",
    )
    .bind(finished_after.map_or(i64::MIN, Timestamp::unix_millis))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading finished steps"))?;
    rows.iter()
        .map(|row| {
            Ok(FinishedStep {
                deployment_id: DeploymentId::from_trusted(get(row, S, "deployment_id")?),
                name: get(row, S, "name")?,
                status: get_name(row, S, "status", StepStatus::from_name)?,
                started_at: get_time(row, S, "started_at")?,
                finished_at: get_time(row, S, "finished_at")?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tokens

pub(crate) async fn insert_token(
    pool: &Pool,
    id: &TokenId,
    hash: &[u8],
    role: TokenRole,
    client: Option<&ClientId>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO tokens (id, hash, role, client_id, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.as_str())
    .bind(hash)
    .bind(role.as_str())
    .bind(client.map(ClientId::as_str))
    .bind(now.unix_millis())
    .execute(pool)
    .await;
    match (inserted, client) {
        (Ok(_), _) => Ok(()),
        (Err(error), Some(client)) if is_foreign_key_violation(&error) => {
            Err(StoreError::ClientNotFound {
                client: client.clone(),
            })
        }
        (Err(error), _) => Err(StoreError::database("storing a token")(error)),
    }
}

/// The token whose hash this is: what it may do, its stored hash (for the constant-time
/// comparison) and when it was last used.
pub(crate) async fn token_by_hash(
    pool: &Pool,
    hash: &[u8],
) -> Result<Option<(TokenInfo, Vec<u8>, Option<Timestamp>)>, StoreError> {
    const T: &str = "tokens";
    let row =
        sqlx::query("SELECT id, hash, role, client_id, last_used_at FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::database("looking up a token"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let client_id: Option<String> = get(&row, T, "client_id")?;
    let info = TokenInfo {
        id: TokenId::from_trusted(get(&row, T, "id")?),
        role: get_name(&row, T, "role", TokenRole::from_name)?,
        client_id: client_id
            .map(|text| ClientId::parse(&text))
            .transpose()
            .map_err(|error| StoreError::corrupt(T, "client_id", error))?,
    };
    Ok(Some((
        info,
        get(&row, T, "hash")?,
        get_optional_time(&row, T, "last_used_at")?,
    )))
}

pub(crate) async fn touch_token(
    pool: &Pool,
    id: &TokenId,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
        .bind(id.as_str())
        .bind(now.unix_millis())
        .execute(pool)
        .await
        .map_err(StoreError::database("recording a token's use"))?;
    Ok(())
}

pub(crate) async fn delete_token(pool: &Pool, id: &TokenId) -> Result<(), StoreError> {
    let deleted = sqlx::query("DELETE FROM tokens WHERE id = $1")
        .bind(id.as_str())
        .execute(pool)
        .await
        .map_err(StoreError::database("revoking a token"))?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::TokenNotFound { token: id.clone() });
    }
    Ok(())
}

pub(crate) async fn tokens(pool: &Pool) -> Result<Vec<TokenRecord>, StoreError> {
    const T: &str = "tokens";
    let rows = sqlx::query(
        "SELECT id, role, client_id, created_at, last_used_at FROM tokens ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("listing tokens"))?;
    rows.iter()
        .map(|row| {
            let client_id: Option<String> = get(row, T, "client_id")?;
            Ok(TokenRecord {
                id: TokenId::from_trusted(get(row, T, "id")?),
                role: get_name(row, T, "role", TokenRole::from_name)?,
                client_id: client_id
                    .map(|text| ClientId::parse(&text))
                    .transpose()
                    .map_err(|error| StoreError::corrupt(T, "client_id", error))?,
                created_at: get_time(row, T, "created_at")?,
                last_used_at: get_optional_time(row, T, "last_used_at")?,
            })
        })
        .collect()
}
