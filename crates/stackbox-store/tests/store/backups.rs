use std::time::Duration;

use serde_json::json;
use stackbox_core::client::{ClientId, Domain};
use stackbox_store::{
    BackupId, BackupReason, BackupRecord, BackupStatus, ClientState, DeploymentKind, MasterKey,
    Store, StoreError, Timestamp, MAX_DEPLOYMENT_PARAMS_BYTES,
};

use crate::harness::{add_client, client_id, contains, on_both_engines, Engine, TestDb};

on_both_engines!(
    a_backup_key_is_stored_once_and_the_first_key_stays_in_force,
    callers_racing_to_create_a_backup_key_all_get_the_one_that_was_stored,
    a_backup_key_is_sealed_and_opens_only_for_its_client_with_its_master_key,
    a_secrets_blob_copied_into_a_backup_key_row_does_not_open_nor_the_other_way_round,
    a_backup_moves_from_running_to_succeeded_once_with_its_snapshot_and_manifest,
    a_failed_backup_keeps_its_error_and_cannot_succeed_afterwards,
    finishing_a_backup_refuses_malformed_snapshot_ids_and_unknown_backups,
    a_clients_backups_are_listed_newest_first_without_the_forgotten_ones,
    a_backup_is_found_by_its_snapshot_id_or_by_a_prefix_naming_one_snapshot,
    the_latest_succeeded_backup_skips_running_failed_and_forgotten_ones,
    a_verification_is_recorded_only_for_a_succeeded_backup_and_the_newest_one_is_the_last,
    a_backup_step_resumed_after_a_crash_finds_and_fails_the_row_it_left_running,
    backups_and_their_key_outlive_a_destroyed_client_and_are_counted_per_client,
    a_destroyed_client_is_retained_until_its_date_then_forgotten_with_its_backups_and_key,
    a_destroyed_client_that_came_back_is_released_with_its_backups_and_key_kept,
    deployments_of_the_backup_kinds_carry_their_params,
    the_backups_table_refuses_rows_that_break_its_rules,
);

const SNAPSHOT_A: &str = "4bd1c7a29e0f4d6a8b3c2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b";
const SNAPSHOT_B: &str = "4bd1ffff9e0f4d6a8b3c2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b";
const SNAPSHOT_C: &str = "77aa00119e0f4d6a8b3c2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b";

/// A repository key as the backup adapter would make one.
const REPOSITORY_KEY: &str = "restic-repository-key-Zq3vX9pL2mN8rT4wY6bC1dF5gH7jK0";

fn manifest() -> serde_json::Value {
    json!({"volumes": ["wordpress_data", "mariadb_data"], "database_dump": "db.sql.zst"})
}

/// Start times are milliseconds: consecutive backups in one millisecond would have no order.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// Starts a backup and finishes it with `snapshot`.
async fn succeeded_backup(store: &Store, client: &ClientId, snapshot: &str) -> BackupRecord {
    let backup = store
        .start_backup(client, None, BackupReason::Scheduled)
        .await
        .unwrap();
    assert!(store
        .finish_backup(&backup.id, snapshot, &manifest(), 10, 100, 7)
        .await
        .unwrap());
    next_millisecond().await;
    store.backup(&backup.id).await.unwrap().unwrap()
}

async fn a_backup_key_is_stored_once_and_the_first_key_stays_in_force(db: &TestDb) {
    let store = db.open().await;
    let master = MasterKey::generate().unwrap();
    // No client row is needed: the key must outlive its client.
    let client = client_id("keyed", 1);
    assert_eq!(store.backup_key(&client, &master).await.unwrap(), None);
    let in_force = store
        .put_backup_key_if_absent(&client, REPOSITORY_KEY, &master)
        .await
        .unwrap();
    assert_eq!(in_force.as_str(), REPOSITORY_KEY);
    let again = store
        .put_backup_key_if_absent(&client, "a-different-key", &master)
        .await
        .unwrap();
    assert_eq!(again.as_str(), REPOSITORY_KEY, "the first key stays");
    assert_eq!(
        store
            .backup_key(&client, &master)
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some(REPOSITORY_KEY)
    );
    assert_eq!(
        store
            .backup_key(&client_id("keyed", 2), &master)
            .await
            .unwrap(),
        None
    );
    let error = store
        .put_backup_key_if_absent(&client_id("keyed", 3), "", &master)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidValue { .. }),
        "{error:?}"
    );
}

async fn callers_racing_to_create_a_backup_key_all_get_the_one_that_was_stored(db: &TestDb) {
    let store = db.open().await;
    let master = MasterKey::generate().unwrap();
    for round in 0..3 {
        let client = client_id("raced", round);
        let mut tasks = tokio::task::JoinSet::new();
        for caller in 0..8 {
            let (store, master, client) = (store.clone(), master.clone(), client.clone());
            tasks.spawn(async move {
                let proposed = format!("key-of-caller-{caller}");
                let in_force = store
                    .put_backup_key_if_absent(&client, &proposed, &master)
                    .await
                    .unwrap();
                in_force.to_string()
            });
        }
        let mut keys = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            keys.push(joined.unwrap());
        }
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            1,
            "round {round}: one key for everyone: {keys:?}"
        );
        assert!(keys[0].starts_with("key-of-caller-"));
        assert_eq!(
            store
                .backup_key(&client, &master)
                .await
                .unwrap()
                .map(|key| key.to_string()),
            Some(keys[0].clone())
        );
    }
    assert_eq!(db.raw_integer("SELECT COUNT(*) FROM backup_keys").await, 3);
}

async fn a_backup_key_is_sealed_and_opens_only_for_its_client_with_its_master_key(db: &TestDb) {
    let store = db.open().await;
    let master = MasterKey::generate().unwrap();
    let (first, second) = (client_id("sealed", 1), client_id("sealed", 2));
    store
        .put_backup_key_if_absent(&first, REPOSITORY_KEY, &master)
        .await
        .unwrap();
    store
        .put_backup_key_if_absent(&second, "the-second-clients-key", &master)
        .await
        .unwrap();

    let mut haystacks = db
        .raw_bytes("SELECT sealed FROM backup_keys ORDER BY client_id")
        .await;
    assert_eq!(haystacks.len(), 2);
    if db.engine == Engine::Sqlite {
        haystacks.push(db.sqlite_file_bytes());
    }
    for haystack in &haystacks {
        assert!(
            !contains(haystack, REPOSITORY_KEY.as_bytes()),
            "stored in plaintext"
        );
    }

    let wrong = MasterKey::generate().unwrap();
    let error = store.backup_key(&first, &wrong).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::DecryptBackupKey { client } if *client == first),
        "{error:?}"
    );
    assert!(!format!("{error} {error:?}").contains(REPOSITORY_KEY));
    // With the wrong master key, even the idempotent put reports the failure rather than
    // replacing the key.
    assert!(matches!(
        store
            .put_backup_key_if_absent(&first, "replacement", &wrong)
            .await,
        Err(StoreError::DecryptBackupKey { .. })
    ));

    // The first client's blob in the second client's row: the client id is authenticated.
    db.raw_execute(&format!(
        "UPDATE backup_keys SET sealed = \
         (SELECT sealed FROM backup_keys WHERE client_id = '{first}') WHERE client_id = '{second}'"
    ))
    .await;
    let error = store.backup_key(&second, &master).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::DecryptBackupKey { client } if *client == second),
        "{error:?}"
    );
    assert_eq!(
        store
            .backup_key(&first, &master)
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        REPOSITORY_KEY
    );
}

async fn a_secrets_blob_copied_into_a_backup_key_row_does_not_open_nor_the_other_way_round(
    db: &TestDb,
) {
    let store = db.open().await;
    let master = MasterKey::generate().unwrap();
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let mut secrets = stackbox_core::secrets::Secrets::new();
    secrets.fill_missing(
        &stackbox_core::secrets::SecretKey::needed_for(&stackbox_core::plan::Plan::Starter.apps()),
        &mut stackbox_core::secrets::TestRandom(3),
    );
    store
        .put_secrets(&client.id, &secrets, &master)
        .await
        .unwrap();
    store
        .put_backup_key_if_absent(&client.id, REPOSITORY_KEY, &master)
        .await
        .unwrap();
    let secrets_blob = db
        .raw_bytes("SELECT sealed FROM client_secrets")
        .await
        .remove(0);
    let key_blob = db
        .raw_bytes("SELECT sealed FROM backup_keys")
        .await
        .remove(0);
    db.raw_execute(&format!(
        "UPDATE backup_keys SET sealed = {}; UPDATE client_secrets SET sealed = {}",
        db.bytes_literal(&secrets_blob),
        db.bytes_literal(&key_blob)
    ))
    .await;
    assert!(matches!(
        store.backup_key(&client.id, &master).await,
        Err(StoreError::DecryptBackupKey { .. })
    ));
    assert!(matches!(
        store.get_secrets(&client.id, &master).await,
        Err(StoreError::Decrypt { .. })
    ));
}

async fn a_backup_moves_from_running_to_succeeded_once_with_its_snapshot_and_manifest(db: &TestDb) {
    let store = db.open().await;
    let client = client_id("backed", 1);
    let before = Timestamp::now();
    let backup = store
        .start_backup(&client, None, BackupReason::Manual)
        .await
        .unwrap();
    assert_eq!(BackupId::parse(backup.id.as_str()).unwrap(), backup.id);
    assert_eq!(backup.status, BackupStatus::Running);
    assert_eq!(backup.reason, BackupReason::Manual);
    assert_eq!(backup.client_id, client);
    assert!(backup.started_at >= before);
    assert_eq!(
        (
            backup.finished_at,
            backup.snapshot_id.as_ref(),
            backup.manifest.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(
        store.backup(&backup.id).await.unwrap(),
        Some(backup.clone())
    );

    assert!(store
        .finish_backup(
            &backup.id,
            SNAPSHOT_A,
            &manifest(),
            1_234,
            98_765_432_100,
            4_321
        )
        .await
        .unwrap());
    let finished = store.backup(&backup.id).await.unwrap().unwrap();
    assert_eq!(finished.status, BackupStatus::Succeeded);
    assert_eq!(finished.snapshot_id.as_deref(), Some(SNAPSHOT_A));
    assert_eq!(finished.manifest, Some(manifest()));
    assert_eq!(
        (
            finished.bytes_added,
            finished.bytes_total,
            finished.files_total
        ),
        (Some(1_234), Some(98_765_432_100), Some(4_321))
    );
    assert!(finished.finished_at.unwrap() >= finished.started_at);
    assert_eq!(finished.error, None);
    assert_eq!(
        (
            finished.verified_at,
            finished.verify_ok,
            finished.forgotten_at
        ),
        (None, None, None)
    );

    // A repeated or late report changes nothing and says so.
    assert!(!store
        .finish_backup(&backup.id, SNAPSHOT_B, &json!({}), 1, 1, 1)
        .await
        .unwrap());
    assert!(!store.fail_backup(&backup.id, "too late").await.unwrap());
    assert_eq!(store.backup(&backup.id).await.unwrap(), Some(finished));
}

async fn a_failed_backup_keeps_its_error_and_cannot_succeed_afterwards(db: &TestDb) {
    let store = db.open().await;
    let client = client_id("backed", 1);
    let backup = store
        .start_backup(&client, None, BackupReason::Safety)
        .await
        .unwrap();
    assert!(store
        .fail_backup(&backup.id, "restic: repository is locked")
        .await
        .unwrap());
    let failed = store.backup(&backup.id).await.unwrap().unwrap();
    assert_eq!(failed.status, BackupStatus::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("restic: repository is locked")
    );
    assert!(failed.finished_at.is_some());
    assert_eq!(failed.snapshot_id, None);
    assert!(!store
        .finish_backup(&backup.id, SNAPSHOT_A, &manifest(), 1, 1, 1)
        .await
        .unwrap());
    assert!(!store.fail_backup(&backup.id, "again").await.unwrap());
    assert_eq!(store.backup(&backup.id).await.unwrap(), Some(failed));
    // A long error is cut, not refused.
    let long = store
        .start_backup(&client, None, BackupReason::Safety)
        .await
        .unwrap();
    store
        .fail_backup(&long.id, &"x".repeat(10_000))
        .await
        .unwrap();
    let cut = store
        .backup(&long.id)
        .await
        .unwrap()
        .unwrap()
        .error
        .unwrap();
    assert_eq!(cut.chars().count(), 2000);
}

async fn finishing_a_backup_refuses_malformed_snapshot_ids_and_unknown_backups(db: &TestDb) {
    let store = db.open().await;
    let backup = store
        .start_backup(&client_id("backed", 1), None, BackupReason::Manual)
        .await
        .unwrap();
    for bad in ["", "4bd1 c7a2", "4bd1%", "snap_1", &"a".repeat(129)] {
        let error = store
            .finish_backup(&backup.id, bad, &manifest(), 1, 1, 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::InvalidValue {
                    field: "snapshot_id",
                    ..
                }
            ),
            "{bad:?}: {error:?}"
        );
    }
    let error = store
        .finish_backup(&backup.id, SNAPSHOT_A, &manifest(), u64::MAX, 1, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InvalidValue {
                field: "bytes_added",
                ..
            }
        ),
        "{error:?}"
    );
    // Nothing was written by the refused calls.
    assert_eq!(
        store.backup(&backup.id).await.unwrap().unwrap().status,
        BackupStatus::Running
    );

    let unknown = BackupId::parse("bkp_0000000000000000000000000000").unwrap();
    for error in [
        store
            .finish_backup(&unknown, SNAPSHOT_A, &manifest(), 1, 1, 1)
            .await
            .unwrap_err(),
        store.fail_backup(&unknown, "x").await.unwrap_err(),
        store.mark_backup_forgotten(&unknown).await.unwrap_err(),
        store
            .record_verification(&unknown, true, None)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(&error, StoreError::BackupNotFound { backup } if *backup == unknown),
            "{error:?}"
        );
        assert!(error.to_string().contains(unknown.as_str()), "{error}");
    }
    assert_eq!(store.backup(&unknown).await.unwrap(), None);
    assert!(BackupId::parse("dep_0000000000000000000000000000").is_err());
}

async fn a_clients_backups_are_listed_newest_first_without_the_forgotten_ones(db: &TestDb) {
    let store = db.open().await;
    let client = client_id("listed", 1);
    let other = client_id("listed", 2);
    let oldest = succeeded_backup(&store, &client, SNAPSHOT_A).await;
    let middle = succeeded_backup(&store, &client, SNAPSHOT_B).await;
    succeeded_backup(&store, &other, SNAPSHOT_A).await;
    let running = store
        .start_backup(&client, None, BackupReason::Manual)
        .await
        .unwrap();

    let ids = |backups: Vec<BackupRecord>| backups.into_iter().map(|b| b.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.backups_of_client(&client, 10).await.unwrap()),
        vec![running.id.clone(), middle.id.clone(), oldest.id.clone()]
    );
    assert_eq!(
        ids(store.backups_of_client(&client, 2).await.unwrap()),
        vec![running.id.clone(), middle.id.clone()]
    );
    assert!(matches!(
        store.backups_of_client(&client, 0).await,
        Err(StoreError::InvalidLimit { limit: 0 })
    ));

    assert!(store.mark_backup_forgotten(&middle.id).await.unwrap());
    assert!(
        !store.mark_backup_forgotten(&middle.id).await.unwrap(),
        "once"
    );
    assert_eq!(
        ids(store.backups_of_client(&client, 10).await.unwrap()),
        vec![running.id.clone(), oldest.id.clone()]
    );
    // Still readable by id, with when it was forgotten.
    let forgotten = store.backup(&middle.id).await.unwrap().unwrap();
    assert!(forgotten.forgotten_at.is_some());
    assert_eq!(
        store
            .latest_succeeded_backup(&client)
            .await
            .unwrap()
            .map(|b| b.id),
        Some(oldest.id)
    );
}

async fn a_backup_is_found_by_its_snapshot_id_or_by_a_prefix_naming_one_snapshot(db: &TestDb) {
    let store = db.open().await;
    let client = client_id("snapped", 1);
    let a = succeeded_backup(&store, &client, SNAPSHOT_A).await;
    let b = succeeded_backup(&store, &client, SNAPSHOT_B).await;
    let c = succeeded_backup(&store, &client, SNAPSHOT_C).await;
    let found = |snapshot: &'static str| {
        let (store, client) = (store.clone(), client.clone());
        async move {
            store
                .backup_by_snapshot(&client, snapshot)
                .await
                .map(|backup| backup.map(|backup| backup.id))
        }
    };
    assert_eq!(found(SNAPSHOT_A).await.unwrap(), Some(a.id.clone()));
    assert_eq!(found(&SNAPSHOT_B[..8]).await.unwrap(), Some(b.id));
    assert_eq!(found("4bd1c").await.unwrap(), Some(a.id));
    assert_eq!(found("77").await.unwrap(), Some(c.id));
    assert_eq!(found("0000").await.unwrap(), None);
    match found("4bd1").await.unwrap_err() {
        StoreError::AmbiguousSnapshot {
            client: named,
            prefix,
            matches,
        } => {
            assert_eq!(
                (named, prefix.as_str(), matches),
                (client.clone(), "4bd1", 2)
            );
        }
        other => panic!("expected AmbiguousSnapshot, got {other:?}"),
    }
    // Case matters on both engines (SQLite's LIKE would not have cared).
    assert_eq!(found("4BD1C").await.unwrap(), None);
    // Another client's snapshots are not this client's.
    assert_eq!(
        store
            .backup_by_snapshot(&client_id("snapped", 2), SNAPSHOT_A)
            .await
            .unwrap(),
        None
    );
    for bad in ["", "4bd1%", "4bd1_", "'"] {
        assert!(
            matches!(found(bad).await, Err(StoreError::InvalidValue { .. })),
            "{bad:?}"
        );
    }
}

async fn the_latest_succeeded_backup_skips_running_failed_and_forgotten_ones(db: &TestDb) {
    let store = db.open().await;
    let client = client_id("latest", 1);
    assert_eq!(store.latest_succeeded_backup(&client).await.unwrap(), None);
    let good = succeeded_backup(&store, &client, SNAPSHOT_A).await;
    let forgotten = succeeded_backup(&store, &client, SNAPSHOT_B).await;
    store.mark_backup_forgotten(&forgotten.id).await.unwrap();
    let failed = store
        .start_backup(&client, None, BackupReason::Scheduled)
        .await
        .unwrap();
    store.fail_backup(&failed.id, "disk full").await.unwrap();
    store
        .start_backup(&client, None, BackupReason::Scheduled)
        .await
        .unwrap();
    assert_eq!(
        store.latest_succeeded_backup(&client).await.unwrap(),
        Some(good)
    );
}

async fn a_verification_is_recorded_only_for_a_succeeded_backup_and_the_newest_one_is_the_last(
    db: &TestDb,
) {
    let store = db.open().await;
    let client = client_id("verified", 1);
    assert_eq!(store.last_verification(&client).await.unwrap(), None);
    let running = store
        .start_backup(&client, None, BackupReason::Scheduled)
        .await
        .unwrap();
    let failed = store
        .start_backup(&client, None, BackupReason::Scheduled)
        .await
        .unwrap();
    store.fail_backup(&failed.id, "no space").await.unwrap();
    for (backup, status) in [
        (&running, BackupStatus::Running),
        (&failed, BackupStatus::Failed),
    ] {
        let error = store
            .record_verification(&backup.id, true, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::BackupNotVerifiable { backup: b, status: s }
                if *b == backup.id && *s == status),
            "{error:?}"
        );
    }

    let older = succeeded_backup(&store, &client, SNAPSHOT_A).await;
    let newer = succeeded_backup(&store, &client, SNAPSHOT_B).await;
    let passed = store
        .record_verification(&newer.id, true, None)
        .await
        .unwrap();
    assert_eq!(passed.verify_ok, Some(true));
    assert_eq!(passed.verify_error, None);
    assert!(passed.verified_at.is_some());
    assert_eq!(store.backup(&newer.id).await.unwrap(), Some(passed.clone()));
    assert_eq!(
        store.last_verification(&client).await.unwrap(),
        Some(passed)
    );

    // The older snapshot is tested later and fails: it is now the last verification.
    next_millisecond().await;
    let failed_test = store
        .record_verification(&older.id, false, Some("wp-config.php is missing"))
        .await
        .unwrap();
    assert_eq!(failed_test.verify_ok, Some(false));
    assert_eq!(
        failed_test.verify_error.as_deref(),
        Some("wp-config.php is missing")
    );
    assert_eq!(
        store.last_verification(&client).await.unwrap(),
        Some(failed_test)
    );
    // A test again replaces the earlier result.
    next_millisecond().await;
    let retested = store
        .record_verification(&older.id, true, None)
        .await
        .unwrap();
    assert_eq!(
        (retested.verify_ok, retested.verify_error.as_deref()),
        (Some(true), None)
    );
    assert!(matches!(
        store
            .record_verification(&older.id, true, Some("passed but with an error?"))
            .await,
        Err(StoreError::InvalidValue { .. })
    ));
    assert_eq!(
        store
            .last_verification(&client_id("verified", 2))
            .await
            .unwrap(),
        None
    );
}

async fn a_backup_step_resumed_after_a_crash_finds_and_fails_the_row_it_left_running(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let neighbour = add_client(&store, 2, "starter", ClientState::Running).await;
    let deployment = store
        .create_deployment(&client.id, DeploymentKind::Backup, &["backup"])
        .await
        .unwrap();
    store
        .mark_step_running(&deployment.id, "backup")
        .await
        .unwrap();
    let interrupted = store
        .start_backup(&client.id, Some(&deployment.id), BackupReason::Scheduled)
        .await
        .unwrap();
    assert_eq!(interrupted.deployment_id.as_ref(), Some(&deployment.id));
    let neighbours = store
        .start_backup(&neighbour.id, None, BackupReason::Scheduled)
        .await
        .unwrap();
    // The control plane is killed here; after the restart the step is resumed.
    store.close().await;
    let store = db.open().await;
    store.resume_step(&deployment.id, "backup").await.unwrap();
    assert_eq!(
        store
            .backups_running_for_deployment(&deployment.id)
            .await
            .unwrap(),
        vec![interrupted.clone()]
    );
    assert_eq!(
        store
            .fail_running_backups_of_client(&client.id, "interrupted by a restart")
            .await
            .unwrap(),
        1
    );
    let failed = store.backup(&interrupted.id).await.unwrap().unwrap();
    assert_eq!(failed.status, BackupStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("interrupted by a restart"));
    assert!(store
        .backups_running_for_deployment(&deployment.id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .fail_running_backups_of_client(&client.id, "again")
            .await
            .unwrap(),
        0
    );
    // Another client's running backup is left alone.
    assert_eq!(
        store.backup(&neighbours.id).await.unwrap().unwrap().status,
        BackupStatus::Running
    );
}

async fn backups_and_their_key_outlive_a_destroyed_client_and_are_counted_per_client(db: &TestDb) {
    let store = db.open().await;
    let master = MasterKey::generate().unwrap();
    let destroyed = add_client(&store, 1, "starter", ClientState::Running).await;
    let live = add_client(&store, 2, "starter", ClientState::Running).await;
    let never_succeeded = client_id("client", 3);
    store
        .put_backup_key_if_absent(&destroyed.id, REPOSITORY_KEY, &master)
        .await
        .unwrap();
    let first = succeeded_backup(&store, &destroyed.id, SNAPSHOT_A).await;
    let last = succeeded_backup(&store, &destroyed.id, SNAPSHOT_B).await;
    let live_backup = succeeded_backup(&store, &live.id, SNAPSHOT_C).await;
    let later_failure = store
        .start_backup(&live.id, None, BackupReason::Scheduled)
        .await
        .unwrap();
    store.fail_backup(&later_failure.id, "x").await.unwrap();
    store
        .start_backup(&never_succeeded, None, BackupReason::Manual)
        .await
        .unwrap();

    store.delete_client(&destroyed.id).await.unwrap();
    assert_eq!(store.client(&destroyed.id).await.unwrap(), None);
    assert_eq!(
        store
            .backups_of_client(&destroyed.id, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .backup_key(&destroyed.id, &master)
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        REPOSITORY_KEY
    );

    assert_eq!(
        store.clients_with_backups().await.unwrap(),
        vec![
            destroyed.id.clone(),
            live.id.clone(),
            never_succeeded.clone()
        ]
    );
    assert_eq!(
        store.last_succeeded_backup_times().await.unwrap(),
        vec![
            (destroyed.id.clone(), last.started_at),
            (live.id.clone(), live_backup.started_at)
        ]
    );
    assert!(first.started_at < last.started_at);

    // Forgotten backups no longer count.
    store.mark_backup_forgotten(&last.id).await.unwrap();
    assert_eq!(
        store.last_succeeded_backup_times().await.unwrap()[0],
        (destroyed.id.clone(), first.started_at)
    );
    store.mark_backup_forgotten(&first.id).await.unwrap();
    assert_eq!(
        store.clients_with_backups().await.unwrap(),
        vec![live.id.clone(), never_succeeded]
    );
    assert_eq!(
        store.last_succeeded_backup_times().await.unwrap(),
        vec![(live.id, live_backup.started_at)]
    );
}

async fn a_destroyed_client_is_retained_until_its_date_then_forgotten_with_its_backups_and_key(
    db: &TestDb,
) {
    let store = db.open().await;
    let master = MasterKey::generate().unwrap();
    let client = add_client(&store, 1, "professional", ClientState::Running).await;
    let live = add_client(&store, 2, "starter", ClientState::Running).await;
    for id in [&client.id, &live.id] {
        store
            .put_backup_key_if_absent(id, REPOSITORY_KEY, &master)
            .await
            .unwrap();
        succeeded_backup(&store, id, SNAPSHOT_A).await;
        store
            .start_backup(id, None, BackupReason::PreDestroy)
            .await
            .unwrap();
    }
    store.delete_client(&client.id).await.unwrap();

    let until = Timestamp::now().plus(Duration::from_secs(30 * 86_400));
    let retained = store
        .retain_client(&client.id, &client.domain, &client.spec_toml, until)
        .await
        .unwrap();
    assert_eq!(retained.client_id, client.id);
    assert_eq!(retained.domain, client.domain);
    assert_eq!(retained.spec_toml, client.spec_toml);
    assert_eq!(retained.retain_until, until);
    assert_eq!(retained.spec().unwrap().domain, client.domain);
    assert_eq!(
        store.retained_client(&client.id).await.unwrap(),
        Some(retained.clone())
    );
    assert_eq!(store.retained_client(&live.id).await.unwrap(), None);

    // A resumed destroy repeats it: the first destruction time stays, the date may move.
    next_millisecond().await;
    let extended = until.plus(Duration::from_secs(86_400));
    let again = store
        .retain_client(&client.id, &client.domain, &client.spec_toml, extended)
        .await
        .unwrap();
    assert_eq!(again.destroyed_at, retained.destroyed_at);
    assert_eq!(again.retain_until, extended);

    assert!(store
        .retained_clients_due(Timestamp::now())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.retained_clients_due(extended).await.unwrap(),
        vec![again]
    );

    // The live client's key and backups are never forgotten this way.
    let error = store.forget_retained_client(&live.id).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientNotDestroyed { client } if *client == live.id),
        "{error:?}"
    );

    assert!(store.forget_retained_client(&client.id).await.unwrap());
    assert_eq!(store.retained_client(&client.id).await.unwrap(), None);
    assert_eq!(store.backup_key(&client.id, &master).await.unwrap(), None);
    assert_eq!(
        db.raw_integer(&format!(
            "SELECT COUNT(*) FROM backups WHERE client_id = '{}'",
            client.id
        ))
        .await,
        0
    );
    assert!(
        !store.forget_retained_client(&client.id).await.unwrap(),
        "once"
    );
    assert_eq!(
        store.backups_of_client(&live.id, 10).await.unwrap().len(),
        2
    );
    assert!(store.backup_key(&live.id, &master).await.unwrap().is_some());

    let error = store
        .retain_client(
            &client_id("broken", 1),
            &Domain::parse("broken.example.com").unwrap(),
            "this is not a configuration",
            until,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidValue { field: "spec", .. }),
        "{error:?}"
    );
}

async fn deployments_of_the_backup_kinds_carry_their_params(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let target = client_id("clone", 7);
    for (kind, params) in [
        (DeploymentKind::Backup, None),
        (
            DeploymentKind::Restore,
            Some(json!({"snapshot_id": SNAPSHOT_A, "safety_backup": true})),
        ),
        (
            DeploymentKind::Verify,
            Some(json!({"snapshot_id": SNAPSHOT_B})),
        ),
        (
            DeploymentKind::Clone,
            Some(json!({"target": target.as_str(), "domain": "staging.example.com"})),
        ),
    ] {
        let created = store
            .create_deployment_with_params(&client.id, kind, &["run"], params.as_ref())
            .await
            .unwrap();
        assert_eq!(
            (created.kind, created.params.as_ref()),
            (kind, params.as_ref())
        );
        assert_eq!(
            store.deployment(&created.id).await.unwrap(),
            Some(created.clone())
        );
        assert_eq!(
            store.unfinished_deployments().await.unwrap(),
            vec![created.clone()]
        );
        store
            .finish_deployment(&created.id, stackbox_store::DeploymentStatus::Failed, None)
            .await
            .unwrap();
        assert_eq!(
            store.deployments_of_client(&client.id, 1).await.unwrap()[0].params,
            params
        );
        assert_eq!(DeploymentKind::from_name(kind.as_str()), Some(kind));
    }
    let plain = store
        .create_deployment(&client.id, DeploymentKind::Redeploy, &["render"])
        .await
        .unwrap();
    assert_eq!(plain.params, None);
    assert_eq!(
        store.deployment(&plain.id).await.unwrap().unwrap().params,
        None
    );
    store
        .finish_deployment(&plain.id, stackbox_store::DeploymentStatus::Failed, None)
        .await
        .unwrap();

    let huge = json!({"padding": "x".repeat(MAX_DEPLOYMENT_PARAMS_BYTES)});
    let error = store
        .create_deployment_with_params(&client.id, DeploymentKind::Clone, &["run"], Some(&huge))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InvalidValue {
                field: "deployment params",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(store.unfinished_deployments().await.unwrap().is_empty());
}

async fn the_backups_table_refuses_rows_that_break_its_rules(db: &TestDb) {
    db.open().await.close().await;
    let insert = |columns: &str, values: &str| {
        format!(
            "INSERT INTO backups (id, client_id, started_at, {columns}) VALUES \
             ('bkp_0000000000000000000000000001', 'rules-00000001', 1, {values})"
        )
    };
    for (columns, values) in [
        ("reason, status", "'whim', 'running'"),
        ("reason, status", "'manual', 'paused'"),
        // Finished without a finish time, running with one.
        ("reason, status", "'manual', 'failed'"),
        ("reason, status, finished_at", "'manual', 'running', 2"),
        // Succeeded without a snapshot.
        ("reason, status, finished_at", "'manual', 'succeeded', 2"),
        // A verification half recorded, or not 0/1.
        ("reason, status, verified_at", "'manual', 'running', 2"),
        (
            "reason, status, verified_at, verify_ok",
            "'manual', 'running', 2, 2",
        ),
    ] {
        assert!(
            db.raw_try_execute(&insert(columns, values)).await.is_err(),
            "stored: {columns} = {values}"
        );
    }
    // The control: a well-formed row is accepted.
    db.raw_execute(&insert(
        "reason, status, finished_at, snapshot_id, verified_at, verify_ok",
        "'pre-destroy', 'succeeded', 2, 'abc', 3, 1",
    ))
    .await;
    let store = db.open().await;
    let stored = store
        .backup(&BackupId::parse("bkp_0000000000000000000000000001").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.reason, BackupReason::PreDestroy);
    assert_eq!(stored.verify_ok, Some(true));
}

#[test]
fn the_master_key_seals_blobs_that_open_only_with_the_same_associated_data() {
    let key = MasterKey::generate().unwrap();
    let plaintext = b"a restic repository password worth protecting";
    let for_acme = b"backup-manifest:acme-0000002a";
    let sealed = key.seal(plaintext, for_acme).unwrap();
    assert!(
        !contains(&sealed, plaintext),
        "the sealed bytes hold the plaintext"
    );
    assert_eq!(key.open(&sealed, for_acme).unwrap().as_slice(), plaintext);
    // A fresh nonce every time.
    assert_ne!(key.seal(plaintext, for_acme).unwrap(), sealed);

    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let refusals = [
        key.open(&sealed, b"backup-manifest:other-0000002b")
            .unwrap_err(),
        key.open(&sealed, b"").unwrap_err(),
        key.open(&tampered, for_acme).unwrap_err(),
        key.open(&sealed[..10], for_acme).unwrap_err(),
        key.open(&[], for_acme).unwrap_err(),
        MasterKey::generate()
            .unwrap()
            .open(&sealed, for_acme)
            .unwrap_err(),
    ];
    for error in refusals {
        assert!(matches!(error, StoreError::DecryptBlob), "{error:?}");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("restic repository password"), "{shown}");
        assert!(error.to_string().contains("associated data"), "{error}");
    }
    // Empty plaintext and associated data are fine.
    let empty = key.seal(b"", b"").unwrap();
    assert!(key.open(&empty, b"").unwrap().is_empty());
}

async fn a_destroyed_client_that_came_back_is_released_with_its_backups_and_key_kept(db: &TestDb) {
    let store = db.open().await;
    let master = MasterKey::generate().unwrap();
    let client = add_client(&store, 1, "professional", ClientState::Running).await;
    store
        .put_backup_key_if_absent(&client.id, REPOSITORY_KEY, &master)
        .await
        .unwrap();
    succeeded_backup(&store, &client.id, SNAPSHOT_A).await;
    store.delete_client(&client.id).await.unwrap();
    let until = Timestamp::now().plus(Duration::from_secs(86_400));
    store
        .retain_client(&client.id, &client.domain, &client.spec_toml, until)
        .await
        .unwrap();

    assert!(store.release_retained_client(&client.id).await.unwrap());
    assert_eq!(store.retained_client(&client.id).await.unwrap(), None);
    assert!(store
        .backup_key(&client.id, &master)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.backups_of_client(&client.id, 10).await.unwrap().len(),
        1
    );
    assert!(
        !store.release_retained_client(&client.id).await.unwrap(),
        "once"
    );
}
