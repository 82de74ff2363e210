//! The driver on a local repository with the real restic binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use stackbox_restic::{Location, Redacted, Repository, ResticError, Retention};

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

#[tokio::test]
async fn init_twice_backup_twice_restore_list_forget_and_keep_last_on_a_local_repository() {
    if !restic_tier().ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let site = sample_tree(&base);
    let repository = local_repository(dir.path(), PASSWORD);

    assert!(repository.init_if_missing().await.unwrap(), "first init");
    assert!(
        !repository.init_if_missing().await.unwrap(),
        "second init is a no-op"
    );
    // restic makes its directories 0700, and so does the driver with the cache.
    assert_eq!(mode_of(&dir.path().join("repo")), 0o700);
    assert_eq!(mode_of(&dir.path().join("repo/data")), 0o700);
    assert_eq!(mode_of(&dir.path().join("cache")), 0o700);

    let mut first_progress = Vec::new();
    let first = repository
        .backup(
            &base,
            std::slice::from_ref(&site),
            &tags(&["daily", "acme-0badcafe"]),
            "host-a",
            &mut recorder(&mut first_progress),
        )
        .await
        .unwrap();
    assert!(!first_progress.is_empty(), "progress was never called");
    let last = first_progress.last().unwrap();
    assert_eq!(last.percent_done, 1.0);
    assert_eq!(last.files_done, SAMPLE_FILES);
    assert_eq!(first.files_new, SAMPLE_FILES, "{first:?}");
    assert_eq!(first.files_changed, 0);
    assert_eq!(first.files_unmodified, 0);
    assert_eq!(first.total_files_processed, SAMPLE_FILES);
    let bytes = 15 + 1024 * 1024 + 600 + 21;
    assert_eq!(first.total_bytes_processed, bytes);
    assert!(first.data_added >= 1024 * 1024, "{first:?}");
    assert_eq!(first.snapshot_id.len(), 64, "the full id: {first:?}");

    let mut second_progress = Vec::new();
    let second = repository
        .backup(
            &base,
            std::slice::from_ref(&site),
            &tags(&["daily", "acme-0badcafe"]),
            "host-a",
            &mut recorder(&mut second_progress),
        )
        .await
        .unwrap();
    assert!(!second_progress.is_empty());
    assert_eq!(second.files_unmodified, SAMPLE_FILES, "{second:?}");
    assert_eq!(second.files_new, 0);
    assert!(
        second.data_added * 10 < first.data_added,
        "an unchanged tree added {} bytes after {}",
        second.data_added,
        first.data_added
    );

    // Restore into a new directory: every file's bytes and mode, the link and the dirs.
    let target = dir.path().join("restored");
    repository
        .restore(&first.snapshot_id, &target, &[])
        .await
        .unwrap();
    assert_eq!(
        read_tree(&target),
        read_tree(&base),
        "the restored tree differs from the backed-up one"
    );
    assert!(
        target.join("site/data/secret.key").is_file(),
        "paths are relative to the base"
    );
    assert_eq!(mode_of(&target.join("site/data/secret.key")), 0o600);

    let snapshots = repository.snapshots(None).await.unwrap();
    let ids: Vec<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [first.snapshot_id.as_str(), second.snapshot_id.as_str()]
    );
    for snapshot in &snapshots {
        assert_eq!(snapshot.tags, tags(&["daily", "acme-0badcafe"]));
        assert_eq!(snapshot.hostname, "host-a");
        assert_eq!(
            snapshot.paths,
            [base.join("site").display().to_string()],
            "restic 0.14 records absolute paths in the metadata"
        );
        assert!(snapshot.id.starts_with(&snapshot.short_id));
        assert!(snapshot.unix_time().is_some(), "{}", snapshot.time);
    }
    assert_eq!(repository.snapshots(Some("daily")).await.unwrap().len(), 2);
    assert!(repository
        .snapshots(Some("weekly"))
        .await
        .unwrap()
        .is_empty());
    assert!(repository.stored_bytes().await.unwrap() >= 1024 * 1024);

    // Forget one (by short id); forgetting it again is done work, not an error.
    repository
        .forget(std::slice::from_ref(&snapshots[0].short_id))
        .await
        .unwrap();
    repository
        .forget(std::slice::from_ref(&snapshots[0].id))
        .await
        .unwrap();
    let left = repository.snapshots(None).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, second.snapshot_id);

    // Two more, then keep the last one of the tag.
    std::fs::write(base.join("site/index.html"), b"<h1>changed</h1>\n").unwrap();
    let third = repository
        .backup(
            &base,
            std::slice::from_ref(&site),
            &tags(&["daily", "acme-0badcafe"]),
            "host-a",
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(third.files_changed, 1, "{third:?}");
    let policy = Retention {
        keep_last: 1,
        ..Retention::default()
    };
    let outcome = repository
        .apply_retention(&policy, Some("daily"))
        .await
        .unwrap();
    assert_eq!(outcome.kept, [third.snapshot_id.as_str()]);
    assert_eq!(outcome.removed, [second.snapshot_id.as_str()]);
    let left = repository.snapshots(None).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, third.snapshot_id);
    assert!(repository
        .apply_retention(&Retention::default(), None)
        .await
        .is_err());
    repository.check(false).await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_wrong_password_and_no_error_shows_either_password() {
    if !restic_tier().ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repository = local_repository(dir.path(), PASSWORD);
    repository.init_if_missing().await.unwrap();
    let wrong_password = "not the password 91c4";
    let wrong = local_repository(dir.path(), wrong_password);

    let errors = vec![
        wrong.snapshots(None).await.unwrap_err(),
        wrong.init_if_missing().await.unwrap_err(),
        wrong.check(false).await.unwrap_err(),
    ];
    for error in &errors {
        assert!(
            matches!(error, ResticError::WrongPassword { .. }),
            "{error:?}"
        );
    }
    // Other failures carry restic's stderr: none shows a password either.
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let missing = Repository::new(
        Location::Local(dir.path().join("nothing-here")),
        Redacted::new(PASSWORD),
        dir.path().join("cache"),
    );
    let missing_error = missing.snapshots(None).await.unwrap_err();
    assert!(
        matches!(missing_error, ResticError::RepositoryMissing { .. }),
        "{missing_error:?}"
    );
    let restore_error = repository
        .restore("0123abcd", &dir.path().join("target"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            restore_error,
            ResticError::Failed {
                command: "restore",
                ..
            }
        ),
        "{restore_error:?}"
    );
    for error in errors.iter().chain([&missing_error, &restore_error]) {
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(PASSWORD), "{text}");
            assert!(!text.contains(wrong_password), "{text}");
        }
    }
    assert!(!format!("{wrong:?}").contains(wrong_password));
}

/// A restic that echoes its password to stderr, standing in for any restic output that could
/// hold it: the driver's errors must show `[redacted]` instead.
#[tokio::test]
async fn restic_output_holding_the_password_is_scrubbed_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("leaky-restic");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"Fatal: something about $RESTIC_PASSWORD went wrong\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let repository = local_repository(dir.path(), PASSWORD).with_binary(script);
    let error = repository.snapshots(None).await.unwrap_err();
    let ResticError::Failed { stderr, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(stderr, "Fatal: something about [redacted] went wrong");
    assert!(!error.to_string().contains(PASSWORD));
    assert!(!format!("{error:?}").contains(PASSWORD));
}

#[tokio::test]
async fn check_with_read_data_passes_then_fails_once_bytes_of_a_data_pack_are_flipped() {
    if !restic_tier().ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let site = sample_tree(&base);
    let repository = local_repository(dir.path(), PASSWORD);
    repository.init_if_missing().await.unwrap();
    repository
        .backup(&base, &[site], &tags(&["daily"]), "host-a", &mut |_| {})
        .await
        .unwrap();
    repository.check(true).await.unwrap();

    let pack = largest_file_below(&dir.path().join("repo/data"));
    // restic writes its files 0400.
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(&pack, bytes).unwrap();

    let error = repository.check(true).await.unwrap_err();
    let ResticError::CheckFailed { output } = &error else {
        panic!("{error:?}")
    };
    assert!(output.contains("repository contains errors"), "{output}");
    assert!(output.len() <= 5000, "{}", output.len());
    assert!(!error.to_string().contains(PASSWORD));
    assert!(!format!("{error:?}").contains(PASSWORD));
}

fn largest_file_below(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if best.as_ref().is_none_or(|(size, _)| meta.len() > *size) {
                best = Some((meta.len(), entry.path()));
            }
        }
    }
    best.expect("no file in the repository's data").1
}

/// A restic run on the test's repository by hand (for what the driver does not offer).
fn raw_restic(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("restic");
    command
        .args(args)
        .env("RESTIC_REPOSITORY", dir.join("repo"))
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("RESTIC_CACHE_DIR", dir.join("cache"));
    command
}

/// The repository's locks, as restic lists them (not the files: a half-written one is none).
fn locks(dir: &Path) -> Vec<String> {
    let out = raw_restic(dir, &["list", "locks", "--no-lock"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A backup from stdin, which holds its lock while it waits for input; returned once restic
/// lists that lock.
fn restic_holding_a_lock(dir: &Path) -> std::process::Child {
    let restic = raw_restic(dir, &["backup", "--stdin", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while locks(dir).is_empty() {
        assert!(start.elapsed().as_secs() < 30, "restic never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    restic
}

#[tokio::test]
async fn a_stale_lock_left_by_a_killed_restic_is_removed_before_check() {
    if !restic_tier().ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repository = local_repository(dir.path(), PASSWORD);
    repository.init_if_missing().await.unwrap();
    let mut restic = restic_holding_a_lock(dir.path());
    // SIGKILL: restic cannot remove its lock.
    restic.kill().unwrap();
    restic.wait().unwrap();
    assert_eq!(locks(dir.path()).len(), 1);

    // check takes an exclusive lock, which the stale one would refuse.
    repository.check(false).await.unwrap();
    assert!(locks(dir.path()).is_empty());
}

#[tokio::test]
async fn a_live_lock_is_locked_not_removed() {
    if !restic_tier().ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repository = local_repository(dir.path(), PASSWORD);
    repository.init_if_missing().await.unwrap();
    let mut restic = restic_holding_a_lock(dir.path());
    let error = repository.check(false).await.unwrap_err();
    let still_locked = locks(dir.path()).len();
    restic.kill().unwrap();
    restic.wait().unwrap();
    assert!(
        matches!(
            error,
            ResticError::Locked {
                command: "check",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(still_locked, 1, "unlock removed a live lock");
}

/// A restic that cannot read a 0000 file even as root: the bounding set loses the two
/// capabilities that let root read anything (as another user, the mode alone does it).
fn restic_without_read_override(dir: &Path) -> PathBuf {
    let script = dir.join("restic-no-dac");
    std::fs::write(
        &script,
        "#!/bin/sh\nif [ \"$(id -u)\" = 0 ]; then\n  exec setpriv --bounding-set -dac_override,-dac_read_search -- restic \"$@\"\nfi\nexec restic \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn an_unreadable_file_makes_the_backup_incomplete_and_its_partial_snapshot_is_forgotten() {
    if !restic_tier()
        .program("setpriv", "apt-get install util-linux")
        .ready()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let site = sample_tree(&base);
    let locked = base.join("site/data/locked.db");
    std::fs::write(&locked, b"cannot read me").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let repository = local_repository(dir.path(), PASSWORD)
        .with_binary(restic_without_read_override(dir.path()));
    repository.init_if_missing().await.unwrap();

    let error = repository
        .backup(&base, &[site], &tags(&["daily"]), "host-a", &mut |_| {})
        .await
        .unwrap_err();
    let ResticError::IncompleteBackup {
        unreadable,
        snapshot_id,
        snapshot_forgotten,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(
        unreadable[0].contains("locked.db") && unreadable[0].contains("Permission denied"),
        "{unreadable:?}"
    );
    assert!(snapshot_id.is_some());
    assert!(*snapshot_forgotten);
    assert!(repository.snapshots(None).await.unwrap().is_empty());
    assert!(error.to_string().contains("locked.db"), "{error}");
}

#[tokio::test]
async fn backup_refuses_missing_absolute_and_parent_paths_before_running_restic() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    sample_tree(&base);
    // No repository at all: the paths are refused before restic would say so.
    let repository = local_repository(dir.path(), PASSWORD);
    for path in ["missing", "/etc", "../base"] {
        let error = repository
            .backup(&base, &[PathBuf::from(path)], &[], "host-a", &mut |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(error, ResticError::InvalidArgument { .. }),
            "{path}: {error:?}"
        );
    }
}

#[tokio::test]
async fn restore_with_include_restores_only_that_subtree_and_dot_backs_up_the_base_contents() {
    if !restic_tier().ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    sample_tree(&base);
    let repository = local_repository(dir.path(), PASSWORD);
    repository.init_if_missing().await.unwrap();
    let summary = repository
        .backup(&base, &[PathBuf::from(".")], &[], "host-a", &mut |_| {})
        .await
        .unwrap();

    let target = dir.path().join("partial");
    repository
        .restore(
            &summary.snapshot_id[..8],
            &target,
            &["site/data/nested".to_string()],
        )
        .await
        .unwrap();
    let restored: Vec<PathBuf> = read_tree(&target).into_keys().collect();
    assert_eq!(
        restored,
        [
            "site",
            "site/data",
            "site/data/nested",
            "site/data/nested/deeper",
            "site/data/nested/deeper/notes.txt"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(mode_of(&target), 0o700, "a created target is private");

    let whole = dir.path().join("whole");
    repository.restore("latest", &whole, &[]).await.unwrap();
    assert_eq!(read_tree(&whole), read_tree(&base));
}

#[tokio::test]
async fn version_reports_the_installed_restic() {
    if !restic_tier().ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let version = local_repository(dir.path(), PASSWORD)
        .version()
        .await
        .unwrap();
    let mut parts = version.split('.');
    let major: u32 = parts.next().unwrap().parse().unwrap();
    let minor: u32 = parts.next().unwrap().parse().unwrap();
    assert!((major, minor) >= (0, 14), "{version}");
}
