//! SQLite: the default store, one file under the data directory.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Transaction};

use crate::error::StoreError;

pub(crate) type Db = sqlx::Sqlite;

/// The shared queries, compiled here with `Db = Sqlite` (see the crate docs).
// Deliberately the same file as `postgres::sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "sql.rs"]
pub(crate) mod sql;

/// The onboarding queries (sign-ups, Stripe events, billing, the outbox, credential links),
/// compiled here like [`sql`].
// Deliberately the same file as `postgres::onboarding_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "onboarding_sql.rs"]
pub(crate) mod onboarding_sql;

/// The backup queries (backup keys, the backups journal, retained destroyed clients),
/// compiled here like [`sql`].
// Deliberately the same file as `postgres::backups_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "backups_sql.rs"]
pub(crate) mod backups_sql;

/// The rollout queries (rollouts and their members), compiled here like [`sql`].
// Deliberately the same file as `postgres::rollouts_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "rollouts_sql.rs"]
pub(crate) mod rollouts_sql;

/// The alert and webhook-outbox queries, compiled here like [`sql`].
// Deliberately the same file as `postgres::alerts_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "alerts_sql.rs"]
pub(crate) mod alerts_sql;

/// The audit log's queries, compiled here like [`sql`].
// Deliberately the same file as `postgres::audit_sql`; see the crate docs.
#[allow(clippy::duplicate_mod)]
#[path = "audit_sql.rs"]
pub(crate) mod audit_sql;

/// Which engine this module is, for the migration runner's engine companions.
pub(crate) const BACKEND: crate::Backend = crate::Backend::Sqlite;

/// SQLite has no row locks, and needs none: one `UPDATE … RETURNING` statement holds the
/// database's one write lock from its read to its write, so two claimers never take the same
/// row.
pub(crate) const SKIP_LOCKED: &str = "";

/// SQLite has no row locks: `BEGIN IMMEDIATE` (see [`begin_write`]) already holds the
/// database's one write lock for the whole transaction.
pub(crate) const FOR_UPDATE: &str = "";

/// Starts a transaction that takes the write lock at once. A deferred `BEGIN` would take it at
/// the first write, and two transactions that both read first would then fail with "database
/// is locked" instead of waiting their turn.
pub(crate) async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Nothing to do: the migration transaction's `BEGIN IMMEDIATE` already excludes other writers.
pub(crate) async fn lock_schema(_tx: &mut Transaction<'static, Db>) -> Result<(), sqlx::Error> {
    Ok(())
}

/// How long a writer waits for another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL lets readers work beside the one writer. Each connection is a thread of its own: on a
/// 2-core host, 3 (one writer, two readers) served `GET /v1/clients` faster than 8 (fewer
/// context switches; BENCHMARKS.md).
const MAX_CONNECTIONS: u32 = 3;

pub(crate) async fn connect(path: &Path, shown_as: &str) -> Result<Pool<Db>, StoreError> {
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::DatabaseFile { path, source }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(file_error(parent))?;
        }
    }
    // The file holds sealed secrets and token hashes: create it 0600 before SQLite does
    // (SQLite would use 0644 and gives its -wal and -shm files the database file's mode).
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(file_error(path)(source)),
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL syncs the WAL at every commit: a journal entry the pipeline acted on survives a
        // power cut, not only a crash of the process. Writes are few (a handful per step).
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    // Switching a new database to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY
    // at once, without calling the busy handler, when another connection doing the same could
    // deadlock with it: two servers opening one new file together then fail at random. Such a
    // refusal is retried until the busy timeout, as a lock wait would be.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(20);
    loop {
        match SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(source) if is_busy(&source) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(source) => {
                return Err(StoreError::Connect {
                    url: shown_as.to_string(),
                    source,
                })
            }
        }
    }
}

/// Whether SQLite refused for a lock another connection held (SQLITE_BUSY and its extended
/// codes, which keep 5 in their low byte).
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 5),
        _ => false,
    }
}
