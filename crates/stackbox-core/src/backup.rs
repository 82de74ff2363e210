//! Backups, pure: what a client's restore point holds, how each database is dumped and loaded
//! back, what a manifest records and how two manifests compare, the operator's schedule and
//! retention, and which secrets a clone keeps.
//!
//! A restore point is one restic snapshot of a staging folder laid out as
//!
//! ```text
//! <staging>/stackbox/manifest.json          what the snapshot holds (tables and rows, files
//!                                           and bytes, images, where each part is)
//! <staging>/stackbox/client.sealed          the client's spec and secrets, sealed with the
//!                                           operator's master key
//! <staging>/databases/<service>/<db>.<ext>  one logical dump per database
//! <volume mountpoint>/…                     every data volume's files, read in place
//! ```
//!
//! The staging folder and the volumes keep their paths from one backup to the next, so restic
//! finds the previous snapshot of the same paths and reads only files that changed.
//!
//! Database data directories are never copied as files: a live data directory copied file by
//! file is not consistent, a logical dump is (MariaDB `--single-transaction`, `pg_dump`'s
//! snapshot). Caches and queues that the apps rebuild (Redis, ClickHouse's own logs) are left
//! out, and the plan says so.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::client::ClientId;
use crate::error::CoreError;
use crate::plan::ServiceKind;
use crate::secrets::{RandomSource, SecretKey, Secrets};
use crate::stack::Stack;

/// The manifest's format; a restore refuses a manifest of a newer format.
pub const MANIFEST_FORMAT: u32 = 1;
/// Where the manifest is inside a snapshot.
pub const MANIFEST_PATH: &str = "stackbox/manifest.json";
/// Where the sealed spec and secrets are inside a snapshot.
pub const SEALED_CLIENT_PATH: &str = "stackbox/client.sealed";
/// The folder of the database dumps inside a snapshot.
pub const DATABASES_DIR: &str = "databases";
/// The folder of the volumes inside a snapshot.
pub const VOLUMES_DIR: &str = "volumes";

/// The database engines StackBox dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpEngine {
    Mariadb,
    Postgres,
    Clickhouse,
    Mongo,
}

/// One logical database dump: where it runs, the commands, and where it goes in the snapshot.
///
/// Every command runs inside the service's own container through the engine (`exec`), with
/// the tools its image ships; passwords come from the container's environment (`sh -c`
/// expands them there), so no secret is part of a command the engine records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseDump {
    pub service: ServiceKind,
    pub engine: DumpEngine,
    /// The database's name (`espocrm`, `calcom`, …; `all` for MongoDB, dumped whole).
    pub database: String,
    /// Path of the dump inside the snapshot.
    pub file: String,
    /// Writes the dump on standard output.
    pub dump: Vec<String>,
    /// Reads a dump on standard input and replaces the database's contents with it.
    pub restore: Vec<String>,
    /// Prints `table<TAB>rows` lines, exact counts.
    pub inventory: Vec<String>,
    /// Prints the server's time, then each table with its creation and last-change times: a
    /// previous dump whose fingerprint says nothing changed since it was taken is reused (see
    /// [`dump_still_valid`]). `None` where the engine keeps no such times.
    pub fingerprint: Option<Vec<String>>,
}

/// A data volume copied file by file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeCopy {
    /// The volume's key in the stack (`nextcloud-html`, …): its folder in the snapshot.
    pub key: &'static str,
    /// The engine's volume name (`<client>_nextcloud-html`).
    pub name: String,
    /// The services that mount it (stopped during a restore of the volume).
    pub services: Vec<ServiceKind>,
}

/// A volume that is not copied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeLeftOut {
    pub key: &'static str,
    pub reason: &'static str,
}

/// Everything a backup of one client takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupPlan {
    pub client_id: ClientId,
    pub dumps: Vec<DatabaseDump>,
    pub volumes: Vec<VolumeCopy>,
    pub left_out: Vec<VolumeLeftOut>,
    /// The image of every service, recorded in the manifest.
    pub images: BTreeMap<String, String>,
}

impl BackupPlan {
    /// The services that hold no dumped database: the ones a restore stops while it replaces
    /// data, and starts again afterwards.
    pub fn app_services(&self, stack: &Stack) -> Vec<ServiceKind> {
        let databases: BTreeSet<ServiceKind> = self.dumps.iter().map(|d| d.service).collect();
        stack
            .services
            .iter()
            .map(|s| s.kind)
            .filter(|kind| !databases.contains(kind))
            .collect()
    }
}

/// Why a volume is not copied as files.
fn left_out_reason(key: &str) -> Option<&'static str> {
    match key {
        "mysql-data" => {
            Some("MariaDB's data directory: backed up as one logical dump per database")
        }
        "postgres-data" => {
            Some("PostgreSQL's data directory: backed up as one pg_dump per database")
        }
        "plausible-events-data" => {
            Some("ClickHouse's data directory: backed up as a dump of its tables")
        }
        "mailtrain-mongo-data" => {
            Some("MongoDB's data directory: backed up as a mongodump archive")
        }
        "plausible-events-logs" => Some("ClickHouse's own server logs"),
        "redis-data" => {
            Some("Nextcloud's Redis holds only its cache and file locks, rebuilt on start")
        }
        "mailtrain-redis-data" => {
            Some("Mailtrain's Redis holds only transient queues and sessions")
        }
        _ => None,
    }
}

fn sh(script: String) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script]
}

const MARIADB_LOGIN: &str = "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\"";

fn mariadb_dump(database: &str) -> DatabaseDump {
    // `--databases` writes CREATE DATABASE and USE, `--add-drop-database` a DROP first, so a
    // restore replaces the database whole; users and grants are the deploy's (init script),
    // not the dump's, so a clone keeps its own passwords.
    DatabaseDump {
        service: ServiceKind::Mysql,
        engine: DumpEngine::Mariadb,
        database: database.to_string(),
        file: format!("{DATABASES_DIR}/mysql/{database}.sql"),
        dump: sh(format!(
            "{MARIADB_LOGIN} exec mariadb-dump -uroot --single-transaction --quick --routines \
             --triggers --events --hex-blob --add-drop-database --databases {database}"
        )),
        restore: sh(format!("{MARIADB_LOGIN} exec mariadb -uroot")),
        // Exact counts (information_schema's table_rows is an estimate for InnoDB): one
        // UNION ALL of COUNT(*) per table, built by the server itself.
        inventory: sh(format!(
            "set -e; export {MARIADB_LOGIN}; \
             q=$(mariadb -uroot -N -B -e \"SET SESSION group_concat_max_len = 16777216; \
             SELECT GROUP_CONCAT(CONCAT('SELECT ', QUOTE(table_name), ', COUNT(*) FROM \\`', \
             table_schema, '\\`.\\`', table_name, '\\`') SEPARATOR ' UNION ALL ') \
             FROM information_schema.tables WHERE table_schema = '{database}' \
             AND table_type = 'BASE TABLE'\"); \
             if [ \"$q\" != NULL ] && [ -n \"$q\" ]; then mariadb -uroot -N -B -e \"$q\"; fi"
        )),
        // InnoDB keeps each table's last commit time (in memory: NULL after a restart, which
        // makes the next backup dump again).
        fingerprint: Some(sh(format!(
            "{MARIADB_LOGIN} exec mariadb -uroot -N -B -e \"SELECT NOW(); \
             SELECT table_name, create_time, IFNULL(update_time, 'NULL'), engine \
             FROM information_schema.tables WHERE table_schema = '{database}' ORDER BY table_name\""
        ))),
    }
}

/// Whether a dump taken right after fingerprint `previous` still holds the database that
/// fingerprint `current` describes: the same tables, created at the same times, and every
/// table's last change known and in a second strictly before `previous` was taken (a change
/// within that second, or during the dump, could be newer than the dump's snapshot). Anything
/// unknown, malformed or different means dump again.
pub fn dump_still_valid(previous: &str, current: &str) -> bool {
    let mut lines = previous.lines();
    let Some(taken) = lines.next().map(str::trim) else {
        return false;
    };
    // `YYYY-MM-DD HH:MM:SS`: compared as text, which orders like time.
    if taken.len() != 19 {
        return false;
    }
    let tables: Vec<&str> = lines.collect();
    let current_tables: Vec<&str> = current.lines().skip(1).collect();
    if tables != current_tables {
        return false;
    }
    tables.iter().all(|line| {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            [_, _, updated, _] => updated.len() == 19 && *updated < taken,
            _ => false,
        }
    })
}

const POSTGRES_LOGIN: &str = "PGPASSWORD=\"$POSTGRES_PASSWORD\"";

fn postgres_dump(database: &str) -> DatabaseDump {
    DatabaseDump {
        service: ServiceKind::Postgres,
        engine: DumpEngine::Postgres,
        database: database.to_string(),
        file: format!("{DATABASES_DIR}/postgres/{database}.dump"),
        dump: sh(format!(
            "{POSTGRES_LOGIN} exec pg_dump -U postgres -Fc -d {database}"
        )),
        // PostgreSQL's statistics lag its commits: no safe "unchanged" test, dump every time.
        fingerprint: None,
        // One transaction: a restore that fails half-way changes nothing.
        restore: sh(format!(
            "{POSTGRES_LOGIN} exec pg_restore -U postgres -d {database} --clean --if-exists \
             --single-transaction --exit-on-error"
        )),
        // Exact counts through query_to_xml: one statement, no loop in the shell.
        inventory: sh(format!(
            "{POSTGRES_LOGIN} exec psql -U postgres -d {database} -X -A -t -F \"$(printf '\\t')\" \
             -v ON_ERROR_STOP=1 -c \"SELECT table_schema || '.' || table_name, \
             (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', \
             table_schema, table_name), false, true, '')))[1]::text \
             FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
             AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1\""
        )),
    }
}

const CLICKHOUSE_CLIENT: &str = "clickhouse-client --user \"$CLICKHOUSE_USER\" \
     --password \"$CLICKHOUSE_PASSWORD\" --database \"$CLICKHOUSE_DB\"";

fn clickhouse_dump() -> DatabaseDump {
    let c = CLICKHOUSE_CLIENT;
    DatabaseDump {
        service: ServiceKind::PlausibleEventsDb,
        engine: DumpEngine::Clickhouse,
        database: "plausible_events_db".into(),
        file: format!("{DATABASES_DIR}/plausible-events-db/plausible_events_db.tar"),
        // Per table its CREATE statement and its rows in ClickHouse's Native format, as one
        // tar on standard output (the image has sh and tar).
        dump: sh(format!(
            "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; \
             for t in $({c} --query 'SHOW TABLES'); do \
             {c} --format TSVRaw --query \"SHOW CREATE TABLE \\`$t\\`\" > \"$d/$t.sql\"; \
             {c} --query \"SELECT * FROM \\`$t\\` FORMAT Native\" > \"$d/$t.native\"; done; \
             cd \"$d\"; tar -cf - ."
        )),
        restore: sh(format!(
            "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; cd \"$d\"; tar -xf -; \
             for f in $(ls -A); do case \"$f\" in *.sql) ;; *) continue ;; esac; t=${{f%.sql}}; \
             {c} --query \"DROP TABLE IF EXISTS \\`$t\\`\"; \
             {c} --query \"$(cat \"$f\")\"; \
             {c} --query \"INSERT INTO \\`$t\\` FORMAT Native\" < \"$t.native\"; done"
        )),
        inventory: sh(format!(
            "exec {c} --query \"SELECT name, total_rows FROM system.tables WHERE database = \
             currentDatabase() ORDER BY name FORMAT TSV\""
        )),
        fingerprint: None,
    }
}

/// The mongo shell's inventory script: `db.collection<TAB>count` for every collection.
pub const MONGO_INVENTORY_SCRIPT: &str = "db.getMongo().getDBNames().filter(function(n){return ['admin','local','config'].indexOf(n)<0}).forEach(function(d){var s=db.getSiblingDB(d);s.getCollectionNames().forEach(function(c){print(d+'.'+c+'\\t'+s.getCollection(c).countDocuments({}))})})";

fn mongo_dump() -> DatabaseDump {
    DatabaseDump {
        service: ServiceKind::MailtrainMongo,
        engine: DumpEngine::Mongo,
        database: "all".into(),
        file: format!("{DATABASES_DIR}/mailtrain-mongo/all.archive"),
        dump: vec!["mongodump".into(), "--archive".into(), "--quiet".into()],
        restore: vec![
            "mongorestore".into(),
            "--archive".into(),
            "--drop".into(),
            "--quiet".into(),
        ],
        inventory: vec![
            "mongo".into(),
            "--quiet".into(),
            "--eval".into(),
            MONGO_INVENTORY_SCRIPT.into(),
        ],
        fingerprint: None,
    }
}

/// What a backup of this stack takes: a dump per database, the data volumes, the images.
pub fn backup_plan(stack: &Stack) -> BackupPlan {
    let kinds: BTreeSet<ServiceKind> = stack.services.iter().map(|s| s.kind).collect();
    let apps: BTreeSet<crate::plan::App> = crate::plan::App::ALL
        .into_iter()
        .filter(|app| kinds.contains(&app_service(*app)))
        .collect();
    let mut dumps = Vec::new();
    if kinds.contains(&ServiceKind::Mysql) {
        for (_, database, _) in crate::render::sql::mysql_apps(&apps) {
            dumps.push(mariadb_dump(database));
        }
    }
    if kinds.contains(&ServiceKind::Postgres) {
        for (_, database, _) in crate::render::sql::postgres_apps(&apps) {
            dumps.push(postgres_dump(database));
        }
    }
    if kinds.contains(&ServiceKind::PlausibleEventsDb) {
        dumps.push(clickhouse_dump());
    }
    if kinds.contains(&ServiceKind::MailtrainMongo) {
        dumps.push(mongo_dump());
    }
    let mut volumes = Vec::new();
    let mut left_out = Vec::new();
    for volume in &stack.volumes {
        if let Some(reason) = left_out_reason(volume.key) {
            left_out.push(VolumeLeftOut {
                key: volume.key,
                reason,
            });
            continue;
        }
        let services = stack
            .services
            .iter()
            .filter(|s| {
                s.mounts.iter().any(|m| {
                    matches!(m, crate::stack::Mount::Volume { volume: key, .. } if *key == volume.key)
                })
            })
            .map(|s| s.kind)
            .collect();
        volumes.push(VolumeCopy {
            key: volume.key,
            name: volume.name.clone(),
            services,
        });
    }
    let images = stack
        .services
        .iter()
        .map(|s| (s.kind.name().to_string(), s.image.clone()))
        .collect();
    BackupPlan {
        client_id: stack.client_id.clone(),
        dumps,
        volumes,
        left_out,
        images,
    }
}

/// The app's main service (present when the app is enabled).
fn app_service(app: crate::plan::App) -> ServiceKind {
    use crate::plan::App;
    match app {
        App::Espocrm => ServiceKind::Espocrm,
        App::Nextcloud => ServiceKind::Nextcloud,
        App::Calcom => ServiceKind::Calcom,
        App::Plausible => ServiceKind::Plausible,
        App::Mailtrain => ServiceKind::Mailtrain,
    }
}

/// Parses an inventory command's output: `table<TAB>rows` lines (blank lines ignored).
pub fn parse_inventory(output: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut tables = BTreeMap::new();
    for line in output.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (name, rows) = line
            .rsplit_once('\t')
            .ok_or_else(|| format!("expected `table<TAB>rows`, got {:?}", truncate(line)))?;
        let rows = rows.trim().parse::<u64>().map_err(|_| {
            format!(
                "row count of {name:?} is not a number: {:?}",
                truncate(rows)
            )
        })?;
        tables.insert(name.to_string(), rows);
    }
    Ok(tables)
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// One database in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseEntry {
    pub service: String,
    pub engine: DumpEngine,
    pub database: String,
    pub file: String,
    /// The dump's size and SHA-256 (hex).
    pub bytes: u64,
    pub sha256: String,
    /// Table → exact row count when the dump was taken.
    pub tables: BTreeMap<String, u64>,
}

/// One volume in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    pub key: String,
    pub files: u64,
    pub bytes: u64,
    /// Where the volume's files were on the engine's host: their path inside the snapshot.
    #[serde(default)]
    pub source_path: String,
}

/// What a restore point holds, written into it and kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub client_id: String,
    pub domain: String,
    pub plan: String,
    /// RFC 3339, UTC, given by the caller (the core reads no clock).
    pub created_at: String,
    pub stackbox_version: String,
    /// The staging folder the dumps and this manifest were in: their path inside the snapshot.
    #[serde(default)]
    pub staging_path: String,
    pub databases: Vec<DatabaseEntry>,
    pub volumes: Vec<VolumeEntry>,
    /// Service → image reference.
    pub images: BTreeMap<String, String>,
}

impl Manifest {
    pub fn total_rows(&self) -> u64 {
        self.databases.iter().flat_map(|d| d.tables.values()).sum()
    }

    pub fn total_files(&self) -> u64 {
        self.volumes.iter().map(|v| v.files).sum()
    }

    /// Parses a manifest read back from a snapshot, refusing formats this StackBox does not know.
    pub fn parse(text: &[u8]) -> Result<Manifest, CoreError> {
        let manifest: Manifest = serde_json::from_slice(text).map_err(|e| CoreError::Syntax {
            origin: MANIFEST_PATH.to_string(),
            message: e.to_string(),
        })?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(CoreError::invalid(
                "manifest.format",
                format!(
                    "is {}, newer than this StackBox reads ({MANIFEST_FORMAT}); restore with a newer release",
                    manifest.format
                ),
            ));
        }
        Ok(manifest)
    }
}

/// A difference between what a backup recorded and what a restored copy holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// `mysql/espocrm.account`, `volume nextcloud-html`, …
    pub what: String,
    pub expected: String,
    pub found: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.what, self.expected, self.found
        )
    }
}

/// Compares a restored copy's databases and volumes with the manifest; empty when they agree.
pub fn compare(
    expected: &Manifest,
    databases: &[DatabaseEntry],
    volumes: &[VolumeEntry],
) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    for want in &expected.databases {
        let label = format!("{}/{}", want.service, want.database);
        let Some(got) = databases
            .iter()
            .find(|d| d.service == want.service && d.database == want.database)
        else {
            mismatches.push(Mismatch {
                what: label,
                expected: format!("{} tables", want.tables.len()),
                found: "no database".into(),
            });
            continue;
        };
        for (table, rows) in &want.tables {
            match got.tables.get(table) {
                Some(found) if found == rows => {}
                Some(found) => mismatches.push(Mismatch {
                    what: format!("{label}.{table}"),
                    expected: format!("{rows} rows"),
                    found: format!("{found} rows"),
                }),
                None => mismatches.push(Mismatch {
                    what: format!("{label}.{table}"),
                    expected: format!("{rows} rows"),
                    found: "no table".into(),
                }),
            }
        }
        for table in got.tables.keys() {
            if !want.tables.contains_key(table) {
                mismatches.push(Mismatch {
                    what: format!("{label}.{table}"),
                    expected: "no table".into(),
                    found: "a table".into(),
                });
            }
        }
    }
    for want in &expected.volumes {
        let label = format!("volume {}", want.key);
        match volumes.iter().find(|v| v.key == want.key) {
            None => mismatches.push(Mismatch {
                what: label,
                expected: format!("{} files", want.files),
                found: "no volume".into(),
            }),
            Some(got) if got.files != want.files || got.bytes != want.bytes => {
                mismatches.push(Mismatch {
                    what: label,
                    expected: format!("{} files, {} bytes", want.files, want.bytes),
                    found: format!("{} files, {} bytes", got.files, got.bytes),
                })
            }
            Some(_) => {}
        }
    }
    mismatches
}

/// How many restore points to keep (restic's `forget --keep-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

impl Default for RetentionPolicy {
    fn default() -> RetentionPolicy {
        RetentionPolicy {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
        }
    }
}

/// Where restore points go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Destination {
    /// `<data_dir>/backups/<client>`: the embedded default.
    DataDir,
    /// A local folder (a mounted disk, an NFS share): `<folder>/<client>`.
    Folder(String),
    /// An S3-compatible bucket: `s3:<endpoint>/<bucket>[/<prefix>]/<client>`.
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
    },
}

/// `[backup]` in the operator file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSettings {
    pub destination: Destination,
    /// How often the control plane backs up each running client.
    pub every_hours: u32,
    /// How often a restore is proven by `verify` (0: never automatically).
    pub verify_every_days: u32,
    pub retention: RetentionPolicy,
    /// Days a destroyed client's backups are kept (0: deleted with the client).
    pub keep_after_destroy_days: u32,
}

impl Default for BackupSettings {
    fn default() -> BackupSettings {
        BackupSettings {
            destination: Destination::DataDir,
            every_hours: 24,
            verify_every_days: 7,
            retention: RetentionPolicy::default(),
            keep_after_destroy_days: 30,
        }
    }
}

/// The `[backup]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupFile {
    destination: Option<String>,
    every_hours: Option<u32>,
    verify_every_days: Option<u32>,
    keep_last: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_after_destroy_days: Option<u32>,
}

impl BackupFile {
    pub(crate) fn validate(self) -> Result<BackupSettings, CoreError> {
        let mut settings = BackupSettings::default();
        if let Some(text) = self.destination {
            settings.destination = parse_destination(&text)?;
        }
        if let Some(hours) = self.every_hours {
            if hours == 0 || hours > 24 * 31 {
                return Err(CoreError::invalid(
                    "backup.every_hours",
                    "must be between 1 and 744 (a month); the default is 24",
                ));
            }
            settings.every_hours = hours;
        }
        if let Some(days) = self.verify_every_days {
            settings.verify_every_days = days;
        }
        let r = &mut settings.retention;
        r.keep_last = self.keep_last.unwrap_or(r.keep_last);
        r.keep_daily = self.keep_daily.unwrap_or(r.keep_daily);
        r.keep_weekly = self.keep_weekly.unwrap_or(r.keep_weekly);
        r.keep_monthly = self.keep_monthly.unwrap_or(r.keep_monthly);
        if r.keep_last == 0 && r.keep_daily == 0 && r.keep_weekly == 0 && r.keep_monthly == 0 {
            return Err(CoreError::invalid(
                "backup.keep_last",
                "every keep_* is 0, which would forget every backup; keep at least one",
            ));
        }
        if let Some(days) = self.keep_after_destroy_days {
            settings.keep_after_destroy_days = days;
        }
        Ok(settings)
    }
}

/// `"/srv/backups"` or `"s3:https://host[:port]/bucket[/prefix]"`.
pub fn parse_destination(text: &str) -> Result<Destination, CoreError> {
    let field = "backup.destination";
    if let Some(rest) = text.strip_prefix("s3:") {
        let (scheme, rest) = rest
            .split_once("://")
            .filter(|(scheme, _)| *scheme == "http" || *scheme == "https")
            .ok_or_else(|| {
                CoreError::invalid(
                    field,
                    "an S3 destination is s3:https://HOST[:PORT]/BUCKET[/PREFIX]",
                )
            })?;
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().unwrap_or_default();
        let bucket = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default().trim_end_matches('/');
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c));
        let prefix_ok = prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !host_ok {
            return Err(CoreError::invalid(
                field,
                "the S3 endpoint's host is missing or not a host name",
            ));
        }
        if !bucket_ok {
            return Err(CoreError::invalid(
                field,
                "the bucket must be 3-63 characters of a-z, 0-9, '.' and '-'",
            ));
        }
        if !prefix_ok {
            return Err(CoreError::invalid(
                field,
                "the prefix may hold A-Z a-z 0-9 - _ . / only",
            ));
        }
        return Ok(Destination::S3 {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    if !text.starts_with('/') || text.contains('\0') || text.contains('\n') {
        return Err(CoreError::invalid(
            field,
            "give an absolute folder (\"/srv/stackbox-backups\") or s3:https://HOST/BUCKET[/PREFIX]",
        ));
    }
    Ok(Destination::Folder(text.trim_end_matches('/').to_string()))
}

/// Whether a client's backup is due: never backed up, or the last success is a period old.
/// Times are seconds since the epoch.
pub fn backup_due(last_success: Option<i64>, now: i64, every_hours: u32) -> bool {
    match last_success {
        None => true,
        Some(at) => now - at >= i64::from(every_hours) * 3600,
    }
}

/// Whether a client is *missing a backup*: its last successful backup (or, with none, its
/// creation) is older than its schedule allows, with an hour of slack for a backup that runs.
pub fn backup_missing(
    last_success: Option<i64>,
    client_since: i64,
    now: i64,
    every_hours: u32,
) -> bool {
    let allowed = i64::from(every_hours) * 3600 + 3600;
    now - last_success.unwrap_or(client_since) > allowed
}

/// One client as the backup schedule sees it (times in seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledClient {
    pub id: ClientId,
    pub created_at: i64,
    pub last_success: Option<i64>,
    pub last_verified: Option<i64>,
    /// A deployment of the client runs now.
    pub busy: bool,
}

/// What the schedule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduledAction {
    Backup(ClientId),
    /// A verified restore of the latest successful backup.
    Verify(ClientId),
}

/// The schedule's decisions for running clients, at most `limit`: a backup when the last
/// success (or, before the first, the creation) is a period old; else a verify of the latest
/// backup when the last verified restore (or the first backup) is a verify period old. A
/// client with a deployment running is left for the next pass.
pub fn schedule(
    clients: &[ScheduledClient],
    now: i64,
    settings: &BackupSettings,
    limit: usize,
) -> Vec<ScheduledAction> {
    let mut actions = Vec::new();
    for client in clients {
        if actions.len() >= limit {
            break;
        }
        if client.busy {
            continue;
        }
        let since = client.last_success.unwrap_or(client.created_at);
        if backup_due(Some(since), now, settings.every_hours) {
            actions.push(ScheduledAction::Backup(client.id.clone()));
            continue;
        }
        if settings.verify_every_days == 0 {
            continue;
        }
        let Some(first_success) = client.last_success else {
            continue;
        };
        let verified = client.last_verified.unwrap_or(first_success);
        if now - verified >= i64::from(settings.verify_every_days) * 86_400 {
            actions.push(ScheduledAction::Verify(client.id.clone()));
        }
    }
    actions
}

/// Whether a secret is bound to the client's data, so that a clone (which carries that data)
/// must keep it: passwords written into the apps' own files, hashed into their databases, or
/// keys that encrypt stored values. Everything else a clone generates anew.
pub fn tied_to_data(key: SecretKey) -> bool {
    match key {
        // Hashed into EspoCRM's, Nextcloud's and Mailtrain's user tables.
        SecretKey::AdminPassword => true,
        // Encrypt values stored in the databases (Cal.com's credentials, Plausible's TOTP).
        SecretKey::CalcomEncryptionKey | SecretKey::PlausibleTotpVaultKey => true,
        // Set from the environment on every start, or only sessions (users sign in again).
        // EspoCRM's and Nextcloud's installers wrote theirs into config files in the copied
        // volumes, but the stack sets them from the environment on every start.
        SecretKey::EspocrmDbPassword
        | SecretKey::NextcloudDbPassword
        | SecretKey::MysqlRootPassword
        | SecretKey::MailtrainDbPassword
        | SecretKey::RedisPassword
        | SecretKey::PostgresPassword
        | SecretKey::CalcomDbPassword
        | SecretKey::PlausibleDbPassword
        | SecretKey::ClickhousePassword
        | SecretKey::CalcomNextauthSecret
        | SecretKey::PlausibleSecretKeyBase
        | SecretKey::MailtrainWwwSecret => false,
    }
}

/// A clone's secrets: the source's where they are tied to the data, new ones otherwise.
pub fn clone_secrets(
    source: &Secrets,
    needed: &BTreeSet<SecretKey>,
    random: &mut dyn RandomSource,
) -> Secrets {
    let mut secrets = Secrets::new();
    for (key, value) in source.iter() {
        if tied_to_data(key) {
            secrets.insert(key, value.to_string());
        }
    }
    secrets.fill_missing(needed, random);
    secrets
}

/// The throwaway copy `verify` restores into: the same services without the client's router
/// (no route from the edge router or the host, which would serve the real client's hostnames),
/// every network internal (no mail or webhooks leave a copy), under its own id, so its
/// networks, volumes and containers are its own.
pub fn isolated_copy(stack: &Stack, copy_id: &ClientId) -> Stack {
    let mut copy = stack.clone();
    let from = format!("{}_", stack.client_id);
    let to = format!("{copy_id}_");
    copy.client_id = copy_id.clone();
    copy.services.retain(|s| s.kind != ServiceKind::Traefik);
    for service in &mut copy.services {
        service
            .labels
            .retain(|key, _| !key.starts_with("traefik.") && key != crate::stack::ROLE_LABEL);
        for value in service.labels.values_mut() {
            if *value == stack.client_id.as_str() {
                *value = copy_id.to_string();
            }
        }
        service.ports.clear();
        service
            .depends_on
            .retain(|kind| *kind != ServiceKind::Traefik);
    }
    let used: BTreeSet<&'static str> = copy
        .services
        .iter()
        .flat_map(|s| s.networks.iter().copied())
        .collect();
    copy.networks.retain(|n| used.contains(n.key));
    for network in &mut copy.networks {
        network.internal = true;
        network.name = network.name.replacen(&from, &to, 1);
    }
    for volume in &mut copy.volumes {
        volume.name = volume.name.replacen(&from, &to, 1);
    }
    copy
}

/// Hex SHA-256, for dump checksums.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientSpec;
    use crate::operator::OperatorConfig;

    fn stack_of(plan: &str) -> Stack {
        let spec = ClientSpec::from_toml(&format!(
            "company_name = \"Smith Real Estate\"\ndomain = \"smith.example.com\"\n\
                 plan = \"{plan}\"\nadmin_email = \"owner@smith.example.com\"\n"
        ))
        .unwrap();
        let id = ClientId::parse("smithrealestate-0a1b2c3d").unwrap();
        crate::stack::build(&spec, &id, &OperatorConfig::default())
    }

    #[test]
    fn enterprise_backup_plan_dumps_every_database_and_copies_only_data_volumes() {
        let plan = backup_plan(&stack_of("enterprise"));
        let dumps: Vec<(ServiceKind, &str)> = plan
            .dumps
            .iter()
            .map(|d| (d.service, d.database.as_str()))
            .collect();
        assert_eq!(
            dumps,
            vec![
                (ServiceKind::Mysql, "espocrm"),
                (ServiceKind::Mysql, "nextcloud"),
                (ServiceKind::Mysql, "mailtrain"),
                (ServiceKind::Postgres, "calcom"),
                (ServiceKind::Postgres, "plausible"),
                (ServiceKind::PlausibleEventsDb, "plausible_events_db"),
                (ServiceKind::MailtrainMongo, "all"),
            ]
        );
        let copied: Vec<&str> = plan.volumes.iter().map(|v| v.key).collect();
        assert_eq!(
            copied,
            vec![
                "espocrm-data",
                "espocrm-custom",
                "espocrm-client-custom",
                "nextcloud-html",
                "plausible-data",
                "mailtrain-files"
            ]
            .into_iter()
            .filter(|k| copied.contains(k))
            .collect::<Vec<_>>()
        );
        for key in ["espocrm-data", "nextcloud-html", "mailtrain-files"] {
            assert!(copied.contains(&key), "{key} is copied");
        }
        for key in [
            "mysql-data",
            "postgres-data",
            "plausible-events-data",
            "mailtrain-mongo-data",
        ] {
            assert!(!copied.contains(&key), "{key} is dumped, not copied");
            assert!(plan.left_out.iter().any(|l| l.key == key));
        }
        assert_eq!(plan.images.len(), stack_of("enterprise").services.len());
    }

    #[test]
    fn starter_backup_plan_has_no_postgres_or_clickhouse() {
        let plan = backup_plan(&stack_of("starter"));
        assert!(plan.dumps.iter().all(|d| d.engine == DumpEngine::Mariadb));
        assert_eq!(plan.dumps.len(), 2);
    }

    #[test]
    fn dump_commands_hold_no_secret_value_only_environment_references() {
        for dump in backup_plan(&stack_of("enterprise")).dumps {
            for argv in [&dump.dump, &dump.restore, &dump.inventory] {
                let text = argv.join(" ");
                assert!(
                    !text.contains("--password=") && !text.contains("-p'"),
                    "{text}"
                );
            }
        }
        let mysql = &backup_plan(&stack_of("starter")).dumps[0];
        assert!(mysql.dump[2].contains("--single-transaction"));
        assert!(mysql.dump[2].contains("$MARIADB_ROOT_PASSWORD"));
    }

    #[test]
    fn inventory_output_parses_and_bad_lines_are_named() {
        let parsed = parse_inventory("account\t12\nemail\t0\n\n").unwrap();
        assert_eq!(parsed.get("account"), Some(&12));
        assert_eq!(parsed.len(), 2);
        assert!(parse_inventory("account 12")
            .unwrap_err()
            .contains("table<TAB>rows"));
        assert!(parse_inventory("account\tmany")
            .unwrap_err()
            .contains("account"));
    }

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            client_id: "c".into(),
            domain: "d".into(),
            plan: "starter".into(),
            created_at: "2026-12-03T00:00:00Z".into(),
            stackbox_version: "0".into(),
            staging_path: "/staging".into(),
            databases: vec![DatabaseEntry {
                service: "mysql".into(),
                engine: DumpEngine::Mariadb,
                database: "espocrm".into(),
                file: "databases/mysql/espocrm.sql".into(),
                bytes: 10,
                sha256: "00".into(),
                tables: [("account".to_string(), 3)].into_iter().collect(),
            }],
            volumes: vec![VolumeEntry {
                key: "espocrm-data".into(),
                files: 2,
                bytes: 100,
                source_path: "/v".into(),
            }],
            images: BTreeMap::new(),
        }
    }

    #[test]
    fn compare_finds_missing_rows_tables_and_files() {
        let m = manifest();
        assert!(compare(&m, &m.databases, &m.volumes).is_empty());
        let mut fewer = m.databases.clone();
        fewer[0].tables.insert("account".into(), 2);
        fewer[0].tables.insert("extra".into(), 1);
        let mut volumes = m.volumes.clone();
        volumes[0].files = 1;
        let found = compare(&m, &fewer, &volumes);
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 3, "{text:?}");
        assert!(text[0].contains("mysql/espocrm.account: expected 3 rows, found 2 rows"));
        assert!(compare(&m, &[], &[]).len() == 2);
    }

    #[test]
    fn manifest_round_trips_and_a_newer_format_is_refused() {
        let m = manifest();
        let text = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let mut newer = m;
        newer.format = MANIFEST_FORMAT + 1;
        let error = Manifest::parse(&serde_json::to_vec(&newer).unwrap()).unwrap_err();
        assert!(error.to_string().contains("newer"));
    }

    #[test]
    fn destinations_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            parse_destination("/srv/b/").unwrap(),
            Destination::Folder("/srv/b".into())
        );
        assert_eq!(
            parse_destination("s3:http://127.0.0.1:9000/stackbox-backups/eu").unwrap(),
            Destination::S3 {
                endpoint: "http://127.0.0.1:9000".into(),
                bucket: "stackbox-backups".into(),
                prefix: "eu".into()
            }
        );
        for bad in [
            "relative/dir",
            "s3:ftp://x/b",
            "s3:https://host/B_AD",
            "s3:https:///bucket",
        ] {
            let error = parse_destination(bad).unwrap_err().to_string();
            assert!(error.starts_with("backup.destination"), "{bad}: {error}");
        }
    }

    #[test]
    fn schedule_says_due_and_missing() {
        let day = 24 * 3600;
        assert!(backup_due(None, 0, 24));
        assert!(!backup_due(Some(1000), 1000 + day - 1, 24));
        assert!(backup_due(Some(1000), 1000 + day, 24));
        assert!(!backup_missing(Some(0), 0, day + 3599, 24));
        assert!(backup_missing(Some(0), 0, day + 3601, 24));
        assert!(backup_missing(None, 0, day + 3601, 24));
        assert!(!backup_missing(None, day, day + 10, 24));
    }

    #[test]
    fn schedule_backs_up_after_a_period_verifies_weekly_and_skips_busy_clients() {
        let hour = 3600;
        let day = 24 * hour;
        let settings = BackupSettings::default();
        let id = |n: u32| ClientId::parse(&format!("client-{n:08x}")).unwrap();
        let client = |n, created_at, last_success, last_verified, busy| ScheduledClient {
            id: id(n),
            created_at,
            last_success,
            last_verified,
            busy,
        };
        let now = 100 * day;
        let clients = [
            // New an hour ago: its first backup comes one period after creation.
            client(1, now - hour, None, None, false),
            // Created two days ago, never backed up: due.
            client(2, now - 2 * day, None, None, false),
            // Backed up 25 h ago: due.
            client(
                3,
                now - 50 * day,
                Some(now - 25 * hour),
                Some(now - day),
                false,
            ),
            // Backed up an hour ago, verified 8 days ago: a verify.
            client(
                4,
                now - 50 * day,
                Some(now - hour),
                Some(now - 8 * day),
                false,
            ),
            // Backed up an hour ago, never verified, first backup counted: verify is due only
            // a week after it.
            client(5, now - 50 * day, Some(now - hour), None, false),
            // Due, but a deployment runs.
            client(6, now - 50 * day, None, None, true),
        ];
        assert_eq!(
            schedule(&clients, now, &settings, 10),
            vec![
                ScheduledAction::Backup(id(2)),
                ScheduledAction::Backup(id(3)),
                ScheduledAction::Verify(id(4)),
            ]
        );
        assert_eq!(schedule(&clients, now, &settings, 1).len(), 1);
        let no_verify = BackupSettings {
            verify_every_days: 0,
            ..BackupSettings::default()
        };
        assert_eq!(schedule(&clients, now, &no_verify, 10).len(), 2);
    }

    #[test]
    fn a_dump_is_reused_only_when_every_table_is_unchanged_since_a_second_before_it() {
        let taken =
            "2026-12-03 12:00:10\naccount\t2026-12-01 08:00:00\t2026-12-03 12:00:05\tInnoDB\n";
        let later =
            "2026-12-03 13:00:00\naccount\t2026-12-01 08:00:00\t2026-12-03 12:00:05\tInnoDB\n";
        assert!(dump_still_valid(taken, later));
        // A change since.
        let changed = later.replace("12:00:05", "12:30:00");
        assert!(!dump_still_valid(taken, &changed));
        // A change in the very second the fingerprint was taken may postdate the dump.
        let same_second = taken.replace("12:00:05", "12:00:10");
        assert!(!dump_still_valid(&same_second, &same_second));
        // Unknown change time (after a restart), a new table, a recreated one: dump again.
        let unknown = taken.replace("2026-12-03 12:00:05", "NULL");
        assert!(!dump_still_valid(&unknown, &unknown));
        let added = format!("{later}email\t2026-12-03 12:40:00\t2026-12-03 12:40:00\tInnoDB\n");
        assert!(!dump_still_valid(taken, &added));
        let recreated = later.replace("2026-12-01 08:00:00", "2026-12-03 12:50:00");
        assert!(!dump_still_valid(taken, &recreated));
        assert!(!dump_still_valid("", later));
        assert!(!dump_still_valid("garbage", later));
    }

    struct Counter(u8);
    impl RandomSource for Counter {
        fn fill(&mut self, bytes: &mut [u8]) {
            for b in bytes {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    #[test]
    fn clone_keeps_only_the_secrets_tied_to_data() {
        let needed: BTreeSet<SecretKey> = SecretKey::ALL.into_iter().collect();
        let mut source = Secrets::new();
        source.fill_missing(&needed, &mut Counter(0));
        let clone = clone_secrets(&source, &needed, &mut Counter(100));
        for key in SecretKey::ALL {
            assert_eq!(
                clone.get(key) == source.get(key),
                tied_to_data(key),
                "{key:?}"
            );
            assert!(clone.get(key).is_some());
        }
    }

    #[test]
    fn isolated_copy_has_no_router_no_egress_and_its_own_names() {
        let stack = stack_of("professional");
        let copy_id = ClientId::parse("verify-00c0ffee").unwrap();
        let copy = isolated_copy(&stack, &copy_id);
        assert!(copy.service(ServiceKind::Traefik).is_none());
        assert!(copy
            .networks
            .iter()
            .all(|n| n.internal && n.name.starts_with("verify-00c0ffee_")));
        assert!(copy
            .volumes
            .iter()
            .all(|v| v.name.starts_with("verify-00c0ffee_")));
        for service in &copy.services {
            assert!(
                service.labels.keys().all(|k| !k.starts_with("traefik.")),
                "{:?}",
                service.kind
            );
            assert!(service.ports.is_empty());
            assert!(!service
                .labels
                .values()
                .any(|v| v == stack.client_id.as_str()));
        }
        assert_eq!(copy.services.len(), stack.services.len() - 1);
    }

    #[test]
    fn backup_settings_validate_with_field_names() {
        let settings: BackupFile = toml::from_str("every_hours = 6\nkeep_daily = 3").unwrap();
        let settings = settings.validate().unwrap();
        assert_eq!(settings.every_hours, 6);
        assert_eq!(settings.retention.keep_daily, 3);
        let zero: BackupFile =
            toml::from_str("keep_last = 0\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0")
                .unwrap();
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("backup.keep_last"));
        let bad: BackupFile = toml::from_str("every_hours = 0").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("backup.every_hours"));
    }
}
