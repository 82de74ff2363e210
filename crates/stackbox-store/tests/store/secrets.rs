use stackbox_core::plan::Plan;
use stackbox_core::secrets::{SecretKey, Secrets, TestRandom};
use stackbox_store::{ClientState, MasterKey, StoreError};

use crate::harness::{
    add_client, assert_path_mode, client_id, contains, on_both_engines, Engine, TestDb,
};

on_both_engines!(
    secrets_round_trip_through_the_store,
    secrets_do_not_decrypt_with_another_master_key,
    a_secrets_blob_moved_to_another_client_does_not_decrypt,
    the_stored_secrets_hold_no_plaintext,
    secrets_for_an_unknown_client_are_refused,
    the_store_notices_a_master_key_other_than_the_one_it_first_saw,
);

fn enterprise_secrets(seed: u64) -> Secrets {
    let mut secrets = Secrets::new();
    secrets.fill_missing(
        &SecretKey::needed_for(&Plan::Enterprise.apps()),
        &mut TestRandom(seed),
    );
    secrets
}

async fn secrets_round_trip_through_the_store(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let client = add_client(&store, 1, "enterprise", ClientState::Provisioning).await;
    assert_eq!(store.get_secrets(&client.id, &key).await.unwrap(), None);
    let secrets = enterprise_secrets(7);
    store.put_secrets(&client.id, &secrets, &key).await.unwrap();
    assert_eq!(
        store.get_secrets(&client.id, &key).await.unwrap(),
        Some(secrets.clone())
    );
    let first_blob = db.raw_bytes("SELECT sealed FROM client_secrets").await;
    // Writing the same secrets again uses a new nonce: the blob changes, the secrets do not.
    store.put_secrets(&client.id, &secrets, &key).await.unwrap();
    assert_ne!(
        db.raw_bytes("SELECT sealed FROM client_secrets").await,
        first_blob
    );
    let rotated = enterprise_secrets(8);
    store.put_secrets(&client.id, &rotated, &key).await.unwrap();
    assert_eq!(
        store.get_secrets(&client.id, &key).await.unwrap(),
        Some(rotated)
    );
    // A store reopened with the key read back from text still decrypts.
    store.close().await;
    let store = db.open().await;
    let same_key = MasterKey::parse(&key.to_base64()).unwrap();
    assert!(store
        .get_secrets(&client.id, &same_key)
        .await
        .unwrap()
        .is_some());
}

async fn secrets_do_not_decrypt_with_another_master_key(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let client = add_client(&store, 1, "enterprise", ClientState::Running).await;
    let secrets = enterprise_secrets(7);
    store.put_secrets(&client.id, &secrets, &key).await.unwrap();
    let wrong = MasterKey::generate().unwrap();
    let error = store.get_secrets(&client.id, &wrong).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Decrypt { client: c } if *c == client.id),
        "{error:?}"
    );
    let shown = format!("{error} {error:?}");
    assert!(shown.contains(client.id.as_str()), "{shown}");
    for (_, value) in secrets.iter() {
        assert!(!shown.contains(value), "the error shows a secret");
    }
    for key in [&key, &wrong] {
        assert!(!shown.contains(key.to_base64().as_str()));
        assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
    }
}

async fn a_secrets_blob_moved_to_another_client_does_not_decrypt(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let source = add_client(&store, 1, "enterprise", ClientState::Running).await;
    let target = add_client(&store, 2, "enterprise", ClientState::Running).await;
    store
        .put_secrets(&source.id, &enterprise_secrets(1), &key)
        .await
        .unwrap();
    store
        .put_secrets(&target.id, &enterprise_secrets(2), &key)
        .await
        .unwrap();
    db.raw_execute(&format!(
        "UPDATE client_secrets SET sealed = \
         (SELECT sealed FROM client_secrets WHERE client_id = '{}') WHERE client_id = '{}'",
        source.id, target.id
    ))
    .await;
    let error = store.get_secrets(&target.id, &key).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Decrypt { client } if *client == target.id),
        "{error:?}"
    );
    assert_eq!(
        store.get_secrets(&source.id, &key).await.unwrap(),
        Some(enterprise_secrets(1))
    );
    // A single flipped byte is noticed too.
    db.raw_execute(&format!(
        "UPDATE client_secrets SET sealed = {} WHERE client_id = '{}'",
        db.bytes_literal(&[1; 80]),
        source.id
    ))
    .await;
    assert!(matches!(
        store.get_secrets(&source.id, &key).await,
        Err(StoreError::Decrypt { .. })
    ));
}

async fn the_stored_secrets_hold_no_plaintext(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let client = add_client(&store, 1, "enterprise", ClientState::Running).await;
    let secrets = enterprise_secrets(11);
    store.put_secrets(&client.id, &secrets, &key).await.unwrap();
    let blobs = db.raw_bytes("SELECT sealed FROM client_secrets").await;
    assert_eq!(blobs.len(), 1);
    let mut haystacks = blobs;
    if db.engine == Engine::Sqlite {
        // Every byte SQLite wrote, before and after the WAL is folded into the file.
        haystacks.push(db.sqlite_file_bytes());
        store.close().await;
        haystacks.push(db.sqlite_file_bytes());
        // The control: the file is read correctly and stores text as is.
        assert!(contains(
            haystacks.last().unwrap(),
            client.domain.as_str().as_bytes()
        ));
    }
    for haystack in &haystacks {
        for (name, value) in secrets.iter() {
            assert!(
                !contains(haystack, value.as_bytes()),
                "{} is stored in plaintext",
                name.env_name()
            );
        }
        assert!(!contains(haystack, b"ADMIN_PASSWORD"));
    }
}

async fn secrets_for_an_unknown_client_are_refused(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let missing = client_id("missing", 3);
    let error = store
        .put_secrets(&missing, &enterprise_secrets(1), &key)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientNotFound { client } if *client == missing),
        "{error:?}"
    );
}

async fn the_store_notices_a_master_key_other_than_the_one_it_first_saw(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    assert!(store.check_master_key(&key).await.unwrap(), "first use");
    assert!(!store.check_master_key(&key).await.unwrap(), "known key");
    let other = MasterKey::generate().unwrap();
    let error = store.check_master_key(&other).await.unwrap_err();
    match &error {
        StoreError::MasterKeyMismatch { expected, given } => {
            assert_eq!(expected, &key.fingerprint());
            assert_eq!(given, &other.fingerprint());
        }
        other => panic!("expected MasterKeyMismatch, got {other:?}"),
    }
    assert!(!error.to_string().contains(other.to_base64().as_str()));
}

#[test]
fn a_master_key_file_is_created_once_private_and_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new-data-dir").join("master.key");
    let (created_key, created) = MasterKey::load_or_create(&path).unwrap();
    assert!(created);
    assert_path_mode(&path, 0o600);
    assert_path_mode(path.parent().unwrap(), 0o700);
    let (loaded_key, created_again) = MasterKey::load_or_create(&path).unwrap();
    assert!(!created_again);
    assert_eq!(loaded_key.fingerprint(), created_key.fingerprint());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim_end(), created_key.to_base64().as_str());
    assert_eq!(
        MasterKey::parse(&text).unwrap().fingerprint(),
        created_key.fingerprint()
    );
    // No temporary file is left beside it.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn a_damaged_master_key_file_is_refused_naming_the_file_not_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    std::fs::write(&path, "not-a-key-SECRETISH-CONTENT\n").unwrap();
    let error = MasterKey::load_or_create(&path).unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidMasterKey { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!message.contains("SECRETISH"), "{message}");
    // The damaged file is left for the operator to look at, not replaced by a new key.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("SECRETISH"));
}

#[test]
fn debug_output_never_shows_a_master_key() {
    let key = MasterKey::generate().unwrap();
    let shown = format!("{key:?}");
    assert_eq!(shown, "MasterKey(<redacted>)");
}
