//! The driver on S3: a private moto server on loopback, the bucket created by restic's init.
//! Without moto or restic the test skips with one line, and fails where every tier is
//! required (`STACKBOX_REQUIRE_ALL_TIERS=1`, CI): it never skips silently.

mod common;

use std::path::PathBuf;

use common::*;
use stackbox_restic::{Location, Redacted, Repository, ResticError, Retention, S3Credentials};

const SECRET_KEY: &str = "moto-secret-access-key-5d2e";

#[tokio::test]
async fn init_backup_restore_list_check_and_retention_on_s3_through_moto() {
    if !s3_tier().ready() {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let site = sample_tree(&base);

    let operator = Location::parse(
        &format!("s3:{}/stackbox-backups/clients", moto.endpoint),
        Some(S3Credentials {
            region: "eu-west-1".to_string(),
            access_key_id: "testing".to_string(),
            secret_access_key: Redacted::new(SECRET_KEY),
        }),
    )
    .unwrap();
    let location = operator.join_client("acme-0badcafe");
    assert_eq!(
        location.to_string(),
        format!(
            "s3:{}/stackbox-backups/clients/acme-0badcafe",
            moto.endpoint
        )
    );
    let repository = Repository::new(location, Redacted::new(PASSWORD), dir.path().join("cache"));

    let missing = repository.snapshots(None).await.unwrap_err();
    assert!(
        matches!(missing, ResticError::RepositoryMissing { .. }),
        "before init, with no bucket yet: {missing:?}"
    );
    assert!(
        repository.init_if_missing().await.unwrap(),
        "init creates the bucket"
    );
    assert!(!repository.init_if_missing().await.unwrap());

    // A second client in the same bucket is a repository of its own.
    let other = Repository::new(
        operator.join_client("other-12345678"),
        Redacted::new("another password"),
        dir.path().join("cache"),
    );
    assert!(other.init_if_missing().await.unwrap());

    let mut progress = Vec::new();
    let started = std::time::Instant::now();
    let summary = repository
        .backup(
            &base,
            std::slice::from_ref(&site),
            &["daily".to_string()],
            "host-a",
            &mut recorder(&mut progress),
        )
        .await
        .unwrap();
    eprintln!(
        "backup of about 1 MiB to moto: {:?} (restic: {:.2} s)",
        started.elapsed(),
        summary.total_duration
    );
    assert!(!progress.is_empty());
    assert_eq!(summary.files_new, SAMPLE_FILES);
    assert!(summary.data_added >= 1024 * 1024);

    let second = repository
        .backup(
            &base,
            std::slice::from_ref(&site),
            &["daily".to_string()],
            "host-a",
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(second.files_unmodified, SAMPLE_FILES);
    assert!(second.data_added * 10 < summary.data_added);

    let snapshots = repository.snapshots(Some("daily")).await.unwrap();
    assert_eq!(
        snapshots.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        [summary.snapshot_id.clone(), second.snapshot_id.clone()]
    );
    assert!(other.snapshots(None).await.unwrap().is_empty());

    let target = dir.path().join("restored");
    repository
        .restore(&summary.snapshot_id, &target, &[])
        .await
        .unwrap();
    assert_eq!(read_tree(&target), read_tree(&base));
    assert!(target.join(PathBuf::from("site/data/big.bin")).is_file());

    repository.check(true).await.unwrap();
    assert!(repository.stored_bytes().await.unwrap() >= 1024 * 1024);

    let outcome = repository
        .apply_retention(
            &Retention {
                keep_last: 1,
                ..Retention::default()
            },
            Some("daily"),
        )
        .await
        .unwrap();
    assert_eq!(outcome.kept, [second.snapshot_id.as_str()]);
    assert_eq!(outcome.removed, [summary.snapshot_id.as_str()]);
    repository.check(false).await.unwrap();

    // The other client's password does not open this client's repository.
    let wrong = Repository::new(
        repository.location().clone(),
        Redacted::new("another password"),
        dir.path().join("cache"),
    );
    let error = wrong.snapshots(None).await.unwrap_err();
    assert!(
        matches!(error, ResticError::WrongPassword { .. }),
        "{error:?}"
    );
    for text in [
        error.to_string(),
        format!("{error:?}"),
        format!("{wrong:?}"),
    ] {
        assert!(!text.contains(SECRET_KEY), "{text}");
        assert!(!text.contains("another password"), "{text}");
    }
    drop(moto);
}
