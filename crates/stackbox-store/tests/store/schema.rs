use serde_json::json;
use sha2::{Digest, Sha256};
use stackbox_core::plan::Plan;
use stackbox_store::{
    Billing, ClientState, Deployment, DeploymentId, DeploymentKind, DeploymentStatus, Step,
    StepStatus, Store, StoreError, Timestamp,
};

use crate::harness::{
    add_client, assert_path_mode, client_id, on_both_engines, spec, Engine, TestDb,
};

/// Every schema version this build applies.
const LATEST: [i64; 7] = [1, 2, 3, 4, 5, 6, 7];

on_both_engines!(
    reopening_the_store_reruns_migrations_harmlessly_and_keeps_the_data,
    two_servers_opening_one_new_database_at_once_both_succeed,
    a_database_migrated_by_a_newer_stackbox_is_refused,
    a_migration_changed_after_it_was_applied_is_refused,
    an_edited_engine_companion_of_a_migration_is_refused_like_an_edited_migration,
    the_recorded_checksum_of_a_migration_covers_its_engine_companion,
    a_version_1_database_is_migrated_to_the_latest_version_keeping_its_data,
    a_version_2_database_with_deployments_and_steps_keeps_every_row_through_version_3,
);

async fn reopening_the_store_reruns_migrations_harmlessly_and_keeps_the_data(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    store.close().await;
    for _ in 0..2 {
        let store = db.open().await;
        assert_eq!(store.schema_versions().await.unwrap(), LATEST.to_vec());
        assert_eq!(
            store.client(&client.id).await.unwrap(),
            Some(client.clone())
        );
        store.close().await;
    }
}

async fn two_servers_opening_one_new_database_at_once_both_succeed(db: &TestDb) {
    let (first, second) = tokio::join!(Store::open(&db.url), Store::open(&db.url));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.schema_versions().await.unwrap(), LATEST.to_vec());
    assert_eq!(second.schema_versions().await.unwrap(), LATEST.to_vec());
}

async fn a_database_migrated_by_a_newer_stackbox_is_refused(db: &TestDb) {
    db.open().await.close().await;
    db.raw_execute(&format!(
        "INSERT INTO stackbox_schema (version, name, checksum, applied_at) \
         VALUES (999, 'from the future', {}, 0)",
        db.bytes_literal(b"x")
    ))
    .await;
    let error = Store::open(&db.url).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SchemaTooNew {
                found: 999,
                known: 7
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("version 999"), "{error}");
}

async fn a_migration_changed_after_it_was_applied_is_refused(db: &TestDb) {
    db.open().await.close().await;
    db.raw_execute(&format!(
        "UPDATE stackbox_schema SET checksum = {} WHERE version = 1",
        db.bytes_literal(&[0; 32])
    ))
    .await;
    let error = Store::open(&db.url).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::MigrationChanged {
                version: 1,
                name: "initial"
            }
        ),
        "{error:?}"
    );
}

async fn an_edited_engine_companion_of_a_migration_is_refused_like_an_edited_migration(
    db: &TestDb,
) {
    db.open().await.close().await;
    // What the checksum would be had only the shared file run (the companion edited away).
    db.raw_execute(&format!(
        "UPDATE stackbox_schema SET checksum = {} WHERE version = 3",
        db.bytes_literal(&Sha256::digest(MIGRATION_0003.as_bytes()))
    ))
    .await;
    let error = Store::open(&db.url).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::MigrationChanged {
                version: 3,
                name: "backups"
            }
        ),
        "{error:?}"
    );
}

async fn the_recorded_checksum_of_a_migration_covers_its_engine_companion(db: &TestDb) {
    db.open().await.close().await;
    let companion = match db.engine {
        Engine::Sqlite => MIGRATION_0003_SQLITE,
        Engine::Postgres => MIGRATION_0003_POSTGRES,
    };
    let expected = Sha256::new()
        .chain_update(companion)
        .chain_update(MIGRATION_0003)
        .finalize()
        .to_vec();
    assert_eq!(
        db.raw_bytes("SELECT checksum FROM stackbox_schema WHERE version = 3")
            .await,
        vec![expected]
    );
    // And migrations without companions keep the checksum of their file alone.
    assert_eq!(
        db.raw_bytes("SELECT checksum FROM stackbox_schema WHERE version = 1")
            .await,
        vec![Sha256::digest(MIGRATION_0001.as_bytes()).to_vec()]
    );
}

#[tokio::test]
async fn a_new_sqlite_store_is_a_private_wal_file_in_a_directory_it_creates() {
    let db = TestDb::new(Engine::Sqlite).await;
    let path = db.sqlite_path.clone().unwrap();
    assert!(!path.parent().unwrap().exists());
    let store = db.open().await;
    assert_path_mode(path.parent().unwrap(), 0o700);
    assert_path_mode(&path, 0o600);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert_path_mode(std::path::Path::new(&wal), 0o600);
    store.close().await;
    assert_eq!(db.raw_text("PRAGMA journal_mode").await, vec!["wal"]);
}

#[tokio::test]
async fn a_store_opens_from_a_plain_path_and_from_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    let store = Store::open(plain.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), stackbox_store::Backend::Sqlite);
    store.close().await;
    assert!(plain.exists());
    let data_dir = dir.path().join("data-dir");
    Store::open_data_dir(&data_dir).await.unwrap().close().await;
    assert!(data_dir.join(stackbox_store::SQLITE_FILE_NAME).exists());
}

#[tokio::test]
async fn unsupported_database_urls_are_refused_without_showing_passwords() {
    for url in [
        "mysql://stackbox:hunter2@db/stackbox",
        "",
        "sqlite::memory:",
    ] {
        let error = Store::open(url).await.unwrap_err();
        assert!(
            matches!(error, StoreError::UnsupportedUrl { .. }),
            "{error:?}"
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(error.to_string().contains("postgres://"), "{error}");
    }
}

#[tokio::test]
async fn a_postgres_connection_error_shows_the_url_without_its_password() {
    if !crate::harness::postgres_tier() {
        return;
    }
    let server = crate::harness::postgres_server();
    let url = crate::harness::with_database(&server.url, "no_such_database_here");
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user_info, host) = rest.split_once('@').unwrap();
    let user = user_info.split(':').next().unwrap();
    let url = format!("{scheme}://{user}:hunter2-not-shown@{host}");
    let error = Store::open(&url).await.unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains("hunter2-not-shown"), "{message}");
    assert!(message.contains(":***@"), "{message}");
}

/// The migrations exactly as released, and the runner's table as it creates it: what a
/// database left by an earlier release holds.
const MIGRATION_0001: &str = include_str!("../../migrations/0001_initial.sql");
const MIGRATION_0002: &str = include_str!("../../migrations/0002_onboarding.sql");
const MIGRATION_0003: &str = include_str!("../../migrations/0003_backups.sql");
const MIGRATION_0003_SQLITE: &str = include_str!("../../migrations/0003_backups.sqlite.sql");
const MIGRATION_0003_POSTGRES: &str = include_str!("../../migrations/0003_backups.postgres.sql");
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS stackbox_schema (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum BYTEA NOT NULL,
    applied_at BIGINT NOT NULL
)";

async fn a_version_1_database_is_migrated_to_the_latest_version_keeping_its_data(db: &TestDb) {
    // Builds the database the previous release left, by hand (that release's runner cannot
    // be run from here): its schema, its version row, and data in each kind of table.
    if let Some(path) = &db.sqlite_path {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(path).unwrap();
    }
    let id = client_id("legacy", 1);
    let spec_toml = spec("Legacy Ltd", "legacy.example.com", "professional").to_toml(&id);
    db.raw_execute(&format!(
        "{SCHEMA_TABLE};\n{MIGRATION_0001}\n\
         INSERT INTO stackbox_schema (version, name, checksum, applied_at) \
         VALUES (1, 'initial', {}, 1700000000000);\n\
         INSERT INTO clients (id, domain, company_name, plan, spec, state, state_reason, \
         created_at, updated_at) VALUES ('{id}', 'legacy.example.com', 'Legacy Ltd', \
         'professional', '{}', 'running', NULL, 1700000000000, 1700000000000);\n\
         INSERT INTO deployments (id, client_id, kind, status, created_at, started_at, \
         finished_at) VALUES ('dep_018bcfe56800aaaaaaaaaaaaaaaa', '{id}', 'create', \
         'succeeded', 1700000000000, 1700000000001, 1700000000002);",
        db.bytes_literal(&Sha256::digest(MIGRATION_0001.as_bytes())),
        spec_toml.replace('\'', "''"),
    ))
    .await;

    let store = db.open().await;
    assert_eq!(store.schema_versions().await.unwrap(), LATEST.to_vec());
    let client = store
        .client(&id)
        .await
        .unwrap()
        .expect("the client survives");
    assert_eq!(client.state, ClientState::Running);
    assert_eq!(client.plan, Plan::Professional);
    assert_eq!(client.spec_toml, spec_toml);
    let deployments = store.deployments_of_client(&id, 10).await.unwrap();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0].status, DeploymentStatus::Succeeded);
    // The new tables work for the old client.
    let billing = store
        .upsert_billing(&Billing::active(
            id.clone(),
            "cus_legacy",
            "sub_legacy",
            Plan::Professional,
        ))
        .await
        .unwrap();
    assert_eq!(store.billing(&id).await.unwrap(), Some(billing));
    store.close().await;
    // And the applied version 1 is still the released one: reopening accepts it.
    let store = db.open().await;
    assert_eq!(store.schema_versions().await.unwrap(), LATEST.to_vec());
}

/// One step as a version 2 database holds it, and as the store should read it back.
struct LegacyStep {
    name: &'static str,
    status: StepStatus,
    attempts: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    error: Option<&'static str>,
    output: Option<&'static str>,
}

/// One deployment as a version 2 database holds it.
struct LegacyDeployment {
    id: &'static str,
    client: u32,
    kind: DeploymentKind,
    status: DeploymentStatus,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    error: Option<&'static str>,
    steps: Vec<LegacyStep>,
}

fn sql_text(text: Option<&str>) -> String {
    text.map_or("NULL".to_string(), |text| {
        format!("'{}'", text.replace('\'', "''"))
    })
}

fn sql_integer(value: Option<i64>) -> String {
    value.map_or("NULL".to_string(), |value| value.to_string())
}

fn step(
    name: &'static str,
    status: StepStatus,
    attempts: i64,
    times: (Option<i64>, Option<i64>),
    error: Option<&'static str>,
    output: Option<&'static str>,
) -> LegacyStep {
    LegacyStep {
        name,
        status,
        attempts,
        started_at: times.0,
        finished_at: times.1,
        error,
        output,
    }
}

/// Every status of deployments and steps, errors, outputs, a resumed step and an unfinished
/// deployment (which the partial unique index must still guard after the rebuild).
fn legacy_deployments() -> Vec<LegacyDeployment> {
    use DeploymentStatus as D;
    use StepStatus as S;
    let t = 1_700_000_000_000;
    vec![
        LegacyDeployment {
            id: "dep_018bcfe56800aaaaaaaaaaaaaaa1",
            client: 1,
            kind: DeploymentKind::Create,
            status: D::Succeeded,
            created_at: t,
            started_at: Some(t + 1),
            finished_at: Some(t + 9),
            error: None,
            steps: vec![
                step(
                    "render",
                    S::Succeeded,
                    1,
                    (Some(t + 1), Some(t + 2)),
                    None,
                    Some(r#"{"files":12}"#),
                ),
                step(
                    "containers",
                    S::Succeeded,
                    1,
                    (Some(t + 2), Some(t + 8)),
                    None,
                    Some(r#"{"started":["web","db"],"note":"it's fine"}"#),
                ),
                step("notify", S::Skipped, 0, (None, Some(t + 9)), None, None),
            ],
        },
        LegacyDeployment {
            id: "dep_018bcfe56900aaaaaaaaaaaaaaa2",
            client: 1,
            kind: DeploymentKind::Redeploy,
            status: D::Failed,
            created_at: t + 100,
            started_at: Some(t + 101),
            finished_at: Some(t + 130),
            error: Some("containers: web did not start"),
            steps: vec![
                step(
                    "render",
                    S::Succeeded,
                    1,
                    (Some(t + 101), Some(t + 102)),
                    None,
                    None,
                ),
                step(
                    "containers",
                    S::Failed,
                    2,
                    (Some(t + 110), Some(t + 130)),
                    Some("web did not start"),
                    None,
                ),
                step("notify", S::Pending, 0, (None, None), None, None),
            ],
        },
        LegacyDeployment {
            id: "dep_018bcfe56a00aaaaaaaaaaaaaaa3",
            client: 2,
            kind: DeploymentKind::Destroy,
            status: D::Compensated,
            created_at: t + 200,
            started_at: Some(t + 201),
            finished_at: Some(t + 220),
            error: Some("remove failed; restarted"),
            steps: vec![step(
                "stop",
                S::Succeeded,
                1,
                (Some(t + 201), Some(t + 205)),
                None,
                None,
            )],
        },
        LegacyDeployment {
            id: "dep_018bcfe56b00aaaaaaaaaaaaaaa4",
            client: 2,
            kind: DeploymentKind::Stop,
            status: D::Running,
            created_at: t + 300,
            started_at: Some(t + 301),
            finished_at: None,
            error: None,
            steps: vec![
                step("stop", S::Running, 3, (Some(t + 301), None), None, None),
                step("after", S::Pending, 0, (None, None), None, None),
            ],
        },
    ]
}

fn expected_deployment(legacy: &LegacyDeployment) -> Deployment {
    let time = |millis: Option<i64>| millis.map(Timestamp::from_unix_millis);
    Deployment {
        id: DeploymentId::parse(legacy.id).unwrap(),
        client_id: client_id("legacy", legacy.client),
        kind: legacy.kind,
        status: legacy.status,
        created_at: Timestamp::from_unix_millis(legacy.created_at),
        started_at: time(legacy.started_at),
        finished_at: time(legacy.finished_at),
        error: legacy.error.map(str::to_string),
        params: None,
        steps: legacy
            .steps
            .iter()
            .enumerate()
            .map(|(position, step)| Step {
                position: position as i64,
                name: step.name.to_string(),
                status: step.status,
                attempts: step.attempts,
                started_at: time(step.started_at),
                finished_at: time(step.finished_at),
                error: step.error.map(str::to_string),
                output: step.output.map(|text| serde_json::from_str(text).unwrap()),
            })
            .collect(),
    }
}

/// The indexes of the two rebuilt tables, by name.
async fn deployment_index_names(db: &TestDb) -> Vec<String> {
    match db.engine {
        Engine::Sqlite => {
            db.raw_text(
                "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name IN ('deployments', 'deployment_steps') ORDER BY name",
            )
            .await
        }
        Engine::Postgres => {
            db.raw_text(
                "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' \
                 AND tablename IN ('deployments', 'deployment_steps') ORDER BY indexname",
            )
            .await
        }
    }
}

/// The names of the tables in the database, sorted.
async fn table_names(db: &TestDb) -> Vec<String> {
    match db.engine {
        Engine::Sqlite => {
            db.raw_text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .await
        }
        Engine::Postgres => {
            db.raw_text(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                 ORDER BY tablename",
            )
            .await
        }
    }
}

async fn a_version_2_database_with_deployments_and_steps_keeps_every_row_through_version_3(
    db: &TestDb,
) {
    // The database the release before backups left, built by hand like the version 1 test:
    // that release's schema and version rows, then clients, billing, deployments and steps
    // in every status.
    if let Some(path) = &db.sqlite_path {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(path).unwrap();
    }
    let mut sql = format!(
        "{SCHEMA_TABLE};\n{MIGRATION_0001}\n{MIGRATION_0002}\n\
         INSERT INTO stackbox_schema (version, name, checksum, applied_at) VALUES \
         (1, 'initial', {}, 1700000000000), (2, 'onboarding', {}, 1700000000000);\n",
        db.bytes_literal(&Sha256::digest(MIGRATION_0001.as_bytes())),
        db.bytes_literal(&Sha256::digest(MIGRATION_0002.as_bytes())),
    );
    for n in [1, 2] {
        let id = client_id("legacy", n);
        let domain = format!("legacy{n}.example.com");
        let spec_toml = spec(&format!("Legacy {n}"), &domain, "starter").to_toml(&id);
        sql.push_str(&format!(
            "INSERT INTO clients (id, domain, company_name, plan, spec, state, state_reason, \
             created_at, updated_at) VALUES ('{id}', '{domain}', 'Legacy {n}', 'starter', {}, \
             'running', NULL, 1700000000000, 1700000000000);\n\
             INSERT INTO billing (client_id, customer_id, subscription_id, plan, status, \
             updated_at) VALUES ('{id}', 'cus_{n}', 'sub_{n}', 'starter', 'active', \
             1700000000000);\n",
            sql_text(Some(&spec_toml)),
        ));
    }
    let legacy = legacy_deployments();
    for deployment in &legacy {
        sql.push_str(&format!(
            "INSERT INTO deployments (id, client_id, kind, status, created_at, started_at, \
             finished_at, error) VALUES ('{}', '{}', '{}', '{}', {}, {}, {}, {});\n",
            deployment.id,
            client_id("legacy", deployment.client),
            deployment.kind,
            deployment.status,
            deployment.created_at,
            sql_integer(deployment.started_at),
            sql_integer(deployment.finished_at),
            sql_text(deployment.error),
        ));
        for (position, step) in deployment.steps.iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO deployment_steps (deployment_id, position, name, status, attempts, \
                 started_at, finished_at, error, output) VALUES \
                 ('{}', {position}, '{}', '{}', {}, {}, {}, {}, {});\n",
                deployment.id,
                step.name,
                step.status,
                step.attempts,
                sql_integer(step.started_at),
                sql_integer(step.finished_at),
                sql_text(step.error),
                sql_text(step.output),
            ));
        }
    }
    db.raw_execute(&sql).await;
    let tables_before = table_names(db).await;
    let indexes_before = deployment_index_names(db).await;

    let store = db.open().await;
    assert_eq!(store.schema_versions().await.unwrap(), LATEST.to_vec());

    // Every deployment and step reads back exactly as it was.
    for deployment in &legacy {
        let expected = expected_deployment(deployment);
        assert_eq!(
            store.deployment(&expected.id).await.unwrap().as_ref(),
            Some(&expected),
            "{}",
            deployment.id
        );
    }
    let of_client_1 = store
        .deployments_of_client(&client_id("legacy", 1), 10)
        .await
        .unwrap();
    assert_eq!(
        of_client_1,
        vec![
            expected_deployment(&legacy[1]),
            expected_deployment(&legacy[0])
        ]
    );
    assert_eq!(
        store.unfinished_deployments().await.unwrap(),
        vec![expected_deployment(&legacy[3])]
    );
    assert_eq!(
        db.raw_integer("SELECT COUNT(*) FROM deployment_steps")
            .await,
        legacy.iter().map(|d| d.steps.len() as i64).sum::<i64>()
    );
    assert_eq!(store.finished_steps(None).await.unwrap().len(), 5);

    // Nothing is left of the rebuild (the tables of versions 3 to 7 aside), and the tables
    // have the indexes they had (the partial
    // unique index among them), on SQLite with every foreign key satisfied.
    let mut tables_after = table_names(db).await;
    tables_after.retain(|name| {
        ![
            "backup_keys",
            "backups",
            "retained_clients",
            "rollouts",
            "rollout_members",
            "alerts",
            "webhook_outbox",
            "audit_log",
        ]
        .contains(&name.as_str())
    });
    assert_eq!(tables_after, tables_before);
    assert_eq!(deployment_index_names(db).await, indexes_before);
    if db.engine == Engine::Sqlite {
        assert_eq!(db.raw_text("PRAGMA integrity_check").await, vec!["ok"]);
        assert_eq!(
            db.raw_integer("SELECT COUNT(*) FROM pragma_foreign_key_check")
                .await,
            0
        );
    }

    // The guarantees hold on the rebuilt tables: one unfinished deployment per client...
    let busy = store
        .create_deployment(&client_id("legacy", 2), DeploymentKind::Backup, &["backup"])
        .await
        .unwrap_err();
    assert!(
        matches!(&busy, StoreError::ClientBusy { deployment, .. }
            if deployment.as_str() == legacy[3].id),
        "{busy:?}"
    );
    // ... the new kinds and parameters are accepted, unknown kinds still refused ...
    let restore = store
        .create_deployment_with_params(
            &client_id("legacy", 1),
            DeploymentKind::Restore,
            &["safety_backup", "restore"],
            Some(&json!({"snapshot_id": "4bd1c7a2"})),
        )
        .await
        .unwrap();
    assert_eq!(
        store.deployment(&restore.id).await.unwrap(),
        Some(restore.clone())
    );
    let refused = db
        .raw_try_execute(&format!(
            "INSERT INTO deployments (id, client_id, kind, status, created_at) VALUES \
             ('dep_018bcfe56c00aaaaaaaaaaaaaaa5', '{}', 'teleport', 'succeeded', 0)",
            client_id("legacy", 1)
        ))
        .await;
    assert!(refused.is_err(), "an unknown kind is stored");
    // ... a step still needs its deployment ...
    let orphan = db
        .raw_try_execute(
            "INSERT INTO deployment_steps (deployment_id, position, name, status) VALUES \
             ('dep_ffffffffffffffffffffffffffff', 0, 'x', 'pending')",
        )
        .await;
    assert!(orphan.is_err(), "a step without its deployment is stored");
    // ... and deleting a client still takes its deployments' steps with it, only its own.
    store
        .finish_deployment(&restore.id, DeploymentStatus::Failed, Some("test"))
        .await
        .unwrap();
    store.delete_client(&client_id("legacy", 1)).await.unwrap();
    assert_eq!(
        db.raw_integer("SELECT COUNT(*) FROM deployment_steps")
            .await,
        legacy[2].steps.len() as i64 + legacy[3].steps.len() as i64
    );
    assert_eq!(
        store
            .billing(&client_id("legacy", 2))
            .await
            .unwrap()
            .map(|billing| billing.subscription_id),
        Some("sub_2".to_string())
    );
    store.close().await;

    // Reopening accepts what was applied.
    let store = db.open().await;
    assert_eq!(store.schema_versions().await.unwrap(), LATEST.to_vec());
    assert_eq!(
        store
            .deployment(&expected_deployment(&legacy[3]).id)
            .await
            .unwrap(),
        Some(expected_deployment(&legacy[3]))
    );
}
