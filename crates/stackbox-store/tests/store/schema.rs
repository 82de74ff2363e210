use sha2::{Digest, Sha256};
use stackbox_core::plan::Plan;
use stackbox_store::{Billing, ClientState, DeploymentStatus, Store, StoreError};

use crate::harness::{
    add_client, assert_path_mode, client_id, on_both_engines, spec, Engine, TestDb,
};

on_both_engines!(
    reopening_the_store_reruns_migrations_harmlessly_and_keeps_the_data,
    two_servers_opening_one_new_database_at_once_both_succeed,
    a_database_migrated_by_a_newer_stackbox_is_refused,
    a_migration_changed_after_it_was_applied_is_refused,
    a_version_1_database_is_migrated_to_version_2_keeping_its_data,
);

async fn reopening_the_store_reruns_migrations_harmlessly_and_keeps_the_data(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    store.close().await;
    for _ in 0..2 {
        let store = db.open().await;
        assert_eq!(store.schema_versions().await.unwrap(), vec![1, 2]);
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
    assert_eq!(first.schema_versions().await.unwrap(), vec![1, 2]);
    assert_eq!(second.schema_versions().await.unwrap(), vec![1, 2]);
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
                known: 2
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

/// The first migration exactly as released, and the runner's table as it creates it: what a
/// database left by the release before onboarding holds.
const MIGRATION_0001: &str = include_str!("../../migrations/0001_initial.sql");
const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS stackbox_schema (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum BYTEA NOT NULL,
    applied_at BIGINT NOT NULL
)";

async fn a_version_1_database_is_migrated_to_version_2_keeping_its_data(db: &TestDb) {
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
    assert_eq!(store.schema_versions().await.unwrap(), vec![1, 2]);
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
    assert_eq!(store.schema_versions().await.unwrap(), vec![1, 2]);
}
