//! One restic repository and the commands run on it.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::ResticError;
use crate::location::{Location, Redacted};
use crate::output::{self, BackupLine, BackupProgress, BackupSummary, Snapshot};
use crate::process::{self, Setup, OUTPUT_LIMIT};

/// The most unreadable items an [`ResticError::IncompleteBackup`] lists.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// How much of restic's stderr is kept while it runs (the error keeps [`OUTPUT_LIMIT`] of it).
const STDERR_KEPT: usize = 64 * 1024;

/// A retention policy: how many snapshots to keep per period (0 = that rule is not used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

/// What [`Repository::apply_retention`] did: full snapshot ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionOutcome {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

/// A restic repository: where it is, its password, restic's cache directory and the binary.
///
/// Every method runs one or more `restic` processes. A dropped future kills its process
/// (`kill_on_drop`); the lock that process may leave behind is removed by the next
/// [`Repository::unlock`], which every locking command runs first.
#[derive(Debug, Clone)]
pub struct Repository {
    location: Location,
    password: Redacted,
    cache_dir: PathBuf,
    binary: PathBuf,
}

struct Captured {
    status: Option<i32>,
    stdout: Vec<u8>,
    /// Scrubbed of the secrets.
    stderr: String,
}

impl Captured {
    fn success(&self) -> bool {
        self.status == Some(0)
    }
}

impl Repository {
    /// A relative local path or cache directory is made absolute here: `backup` runs restic in
    /// the backup's base directory, where a relative one would mean something else.
    pub fn new(location: Location, password: Redacted, cache_dir: PathBuf) -> Repository {
        let location = match location {
            Location::Local(path) => Location::Local(absolute(path)),
            s3 => s3,
        };
        Repository {
            location,
            password,
            cache_dir: absolute(cache_dir),
            binary: PathBuf::from("restic"),
        }
    }

    /// The restic binary to run (default: `restic`, found on `PATH`).
    pub fn with_binary(self, path: PathBuf) -> Repository {
        // A bare name is looked up on PATH; a relative path with a directory is made absolute
        // for the same reason as in `new`.
        let binary = if path.components().count() > 1 {
            absolute(path)
        } else {
            path
        };
        Repository { binary, ..self }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// restic's version, such as "0.14.0".
    pub async fn version(&self) -> Result<String, ResticError> {
        let out = self.run("version", &["version".into()], None).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .filter(|_| text.starts_with("restic "))
            .map(str::to_string)
            .ok_or_else(|| ResticError::UnexpectedOutput {
                command: "version",
                problem: format!("not \"restic X.Y.Z …\": {:?}", text.trim()),
            })
    }

    /// Creates the repository if it does not exist yet (idempotent); true if it created it. For
    /// S3 the bucket must exist or be creatable by restic (restic creates it).
    ///
    /// Existence is read with `restic cat config`: `init` itself cannot tell "exists" from a
    /// failure (and says it in different words for local and S3 repositories). Two callers
    /// racing both see "missing"; the one whose `init` loses gets false.
    pub async fn init_if_missing(&self) -> Result<bool, ResticError> {
        let config = self
            .run("cat", &["cat".into(), "config".into()], None)
            .await?;
        if config.success() {
            return Ok(false);
        }
        match self.failure("cat", &config) {
            ResticError::RepositoryMissing { .. } => {}
            other => return Err(other),
        }
        let init = self.run("init", &["init".into()], None).await?;
        if init.success() {
            return Ok(true);
        }
        // Local: "config file already exists"; S3: "repository master key and config already
        // initialized".
        if init.stderr.contains("config file already exists")
            || init.stderr.contains("already initialized")
        {
            return Ok(false);
        }
        Err(self.failure("init", &init))
    }

    /// Removes stale locks a killed restic left (`restic unlock`), called at the start of
    /// backup/restore/forget/check. restic only removes locks whose process is gone (same
    /// host) or that are older than 30 minutes, so a running restic keeps its lock.
    pub async fn unlock(&self) -> Result<(), ResticError> {
        let out = self.run("unlock", &["unlock".into()], None).await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.failure("unlock", &out))
        }
    }

    /// `restic backup --json --host HOST --tag T... PATHS` run in `base` with RELATIVE
    /// `paths`, so that the snapshot's tree holds them relative to `base` (`data/db` is
    /// `/data/db` in the tree, restored as `TARGET/data/db`), the same on every machine. The
    /// snapshot's `paths` metadata still lists them absolute (`base/data/db`): restic 0.14
    /// always records absolute paths there. `.` backs up `base`'s contents at the tree's root.
    ///
    /// `progress` gets every `status` line (about ten a second) and, last, one at 100 %.
    ///
    /// Every path must exist (restic 0.14 skips a missing one and still succeeds). A backup
    /// that cannot read everything (restic's exit status 3) is an
    /// [`ResticError::IncompleteBackup`], and its partial snapshot is forgotten.
    pub async fn backup(
        &self,
        base: &Path,
        paths: &[PathBuf],
        tags: &[String],
        host: &str,
        progress: &mut dyn FnMut(BackupProgress),
    ) -> Result<BackupSummary, ResticError> {
        validate_host(host)?;
        for tag in tags {
            validate_tag(tag)?;
        }
        validate_backup_paths(base, paths)?;
        self.unlock().await?;

        let mut args: Vec<OsString> = vec!["backup".into(), "--json".into()];
        args.push(format!("--host={host}").into());
        args.extend(
            tags.iter()
                .map(|tag| OsString::from(format!("--tag={tag}"))),
        );
        // Everything after `--` is a path, even one that starts with `-`.
        args.push("--".into());
        args.extend(paths.iter().map(|p| p.clone().into_os_string()));
        let mut child = self.spawn("backup", &args, Some(base))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let mut summary: Option<BackupSummary> = None;
        let mut unreadable: Vec<String> = Vec::new();
        let mut unreadable_count = 0usize;
        let note = |text: String, list: &mut Vec<String>, count: &mut usize| {
            *count += 1;
            if list.len() < MAX_REPORTED_ERRORS {
                list.push(text);
            }
        };
        let mut stderr_unreadable: Vec<String> = Vec::new();
        let mut stderr_count = 0usize;
        let mut stderr_text = String::new();
        let read_stdout = async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await? {
                match output::parse_backup_line(&line) {
                    BackupLine::Status(status) => progress(status),
                    BackupLine::Summary(parsed) => summary = Some(parsed),
                    BackupLine::Error(text) => note(text, &mut unreadable, &mut unreadable_count),
                    BackupLine::Other => {}
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let read_stderr = async {
            let mut lines = BufReader::new(stderr).lines();
            while let Some(line) = lines.next_line().await? {
                // restic 0.14 prints item errors as JSON on stderr, and a path that does not
                // exist as text ("x does not exist, skipping") without failing.
                let item = match output::parse_backup_line(&line) {
                    BackupLine::Error(text) => Some(text),
                    _ => line
                        .strip_suffix(" does not exist, skipping")
                        .map(|path| format!("{path}: does not exist")),
                };
                match item {
                    Some(text) => {
                        stderr_count += 1;
                        if stderr_unreadable.len() < MAX_REPORTED_ERRORS {
                            stderr_unreadable.push(text);
                        }
                    }
                    None if stderr_text.len() < STDERR_KEPT => {
                        stderr_text.push_str(&line);
                        stderr_text.push('\n');
                    }
                    None => {}
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let (read_out, read_err) = tokio::join!(read_stdout, read_stderr);
        let status = child
            .wait()
            .await
            .map_err(|error| ResticError::io("waiting for restic backup", error))?;
        read_out.map_err(|error| ResticError::io("reading restic backup's output", error))?;
        read_err.map_err(|error| ResticError::io("reading restic backup's errors", error))?;

        for text in stderr_unreadable {
            note(text, &mut unreadable, &mut unreadable_count);
        }
        unreadable_count += stderr_count.saturating_sub(MAX_REPORTED_ERRORS);
        let code = status.code();
        let captured = Captured {
            status: code,
            stdout: Vec::new(),
            stderr: self.scrub(&stderr_text),
        };
        if code != Some(0) && code != Some(3) {
            return Err(self.failure("backup", &captured));
        }
        if code == Some(3) || unreadable_count > 0 {
            if unreadable_count > unreadable.len() {
                unreadable.push(format!(
                    "… and {} more",
                    unreadable_count - unreadable.len()
                ));
            }
            if unreadable.is_empty() {
                unreadable.push(process::trim(&captured.stderr, OUTPUT_LIMIT));
            }
            let unreadable = unreadable.iter().map(|u| self.scrub(u)).collect();
            let snapshot_id = summary.map(|s| s.snapshot_id);
            let snapshot_forgotten = match &snapshot_id {
                Some(id) => self.forget_without_prune(id).await.is_ok(),
                None => false,
            };
            return Err(ResticError::IncompleteBackup {
                unreadable,
                snapshot_id,
                snapshot_forgotten,
            });
        }
        let Some(mut summary) = summary else {
            return Err(ResticError::UnexpectedOutput {
                command: "backup",
                problem: "restic succeeded without printing a summary line".to_string(),
            });
        };
        summary.snapshot_id = self.full_id(&summary.snapshot_id).await?;
        progress(BackupProgress {
            percent_done: 1.0,
            total_files: summary.total_files_processed,
            files_done: summary.total_files_processed,
            total_bytes: summary.total_bytes_processed,
            bytes_done: summary.total_bytes_processed,
        });
        Ok(summary)
    }

    /// The snapshots, oldest first; only those carrying `tag` when given.
    pub async fn snapshots(&self, tag: Option<&str>) -> Result<Vec<Snapshot>, ResticError> {
        let mut args: Vec<OsString> = vec!["snapshots".into(), "--json".into()];
        if let Some(tag) = tag {
            validate_tag(tag)?;
            args.push(format!("--tag={tag}").into());
        }
        let out = self.run("snapshots", &args, None).await?;
        if !out.success() {
            return Err(self.failure("snapshots", &out));
        }
        output::parse_snapshots("snapshots", &out.stdout)
    }

    /// `restic check` (plus `--read-data` when asked, which reads and verifies every pack):
    /// Ok(()) or Err(ResticError::CheckFailed { output }) with restic's output (trimmed to a
    /// few KiB). A wrong password, a missing repository or a live lock keep their own errors.
    pub async fn check(&self, read_data: bool) -> Result<(), ResticError> {
        self.unlock().await?;
        let mut args: Vec<OsString> = vec!["check".into()];
        if read_data {
            args.push("--read-data".into());
        }
        let out = self.run("check", &args, None).await?;
        if out.success() {
            return Ok(());
        }
        match self.failure("check", &out) {
            ResticError::Failed { .. } => {
                // The findings are on stderr; stdout has the steps that led to them.
                let stdout = self.scrub(&String::from_utf8_lossy(&out.stdout));
                let output = format!("{}\n{}", out.stderr.trim(), stdout.trim());
                Err(ResticError::CheckFailed {
                    output: process::trim(&output, OUTPUT_LIMIT),
                })
            }
            other => Err(other),
        }
    }

    /// Restores a snapshot (id, short id or "latest") into `target` (created, 0700, if
    /// missing), optionally only the `include` paths: paths of the snapshot's tree, which are
    /// relative to the backup's base (`data/db` or `/data/db`; restic patterns such as `*.sql`
    /// work too). A path without a leading `/` is anchored at the tree's root here (restic
    /// would match it at any depth). restic 0.14's restore prints no JSON, so there is no
    /// progress; an `include` that matches nothing restores nothing and still succeeds.
    pub async fn restore(
        &self,
        snapshot: &str,
        target: &Path,
        include: &[String],
    ) -> Result<(), ResticError> {
        validate_snapshot_id(snapshot)?;
        for pattern in include {
            if pattern.trim().is_empty() {
                return Err(ResticError::invalid("an include pattern is empty"));
            }
        }
        create_private_dir(target, "creating the restore target")?;
        self.unlock().await?;
        let mut target_arg = OsString::from("--target=");
        target_arg.push(target.as_os_str());
        let mut args: Vec<OsString> = vec!["restore".into(), target_arg];
        for pattern in include {
            let anchored = if pattern.starts_with('/') {
                pattern.clone()
            } else {
                format!("/{pattern}")
            };
            args.push(format!("--include={anchored}").into());
        }
        args.push("--".into());
        args.push(snapshot.into());
        let out = self.run("restore", &args, None).await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.failure("restore", &out))
        }
    }

    /// Forgets the given snapshots (ids or short ids) and prunes the data only they used.
    /// A snapshot that is already gone is not an error (a retried call finds its work done).
    pub async fn forget(&self, snapshots: &[String]) -> Result<(), ResticError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        for id in snapshots {
            validate_snapshot_id(id)?;
            if id == "latest" {
                return Err(ResticError::invalid(
                    "forget takes snapshot ids, not \"latest\"",
                ));
            }
        }
        self.unlock().await?;
        let mut args: Vec<OsString> = vec!["forget".into(), "--prune".into(), "--".into()];
        args.extend(snapshots.iter().map(OsString::from));
        let out = self.run("forget", &args, None).await?;
        if !out.success() {
            return Err(self.failure("forget", &out));
        }
        // restic 0.14 exits 0 after `Ignoring "x": …` for an id it did not find; an ambiguous
        // prefix is the one such case that is an error.
        let ignored: Vec<&str> = out
            .stderr
            .lines()
            .filter(|line| line.starts_with("Ignoring ") && !line.contains("no matching ID found"))
            .collect();
        if !ignored.is_empty() {
            return Err(ResticError::Failed {
                command: "forget",
                status: Some(0),
                stderr: process::trim(&ignored.join("\n"), OUTPUT_LIMIT),
            });
        }
        Ok(())
    }

    /// `restic forget --keep-daily D --keep-weekly W --keep-monthly M [--keep-last L] --tag TAG
    /// --group-by host,tags --prune --json`: returns the ids removed and the ids kept. Rules
    /// that are 0 are left out; a policy of only zeros is refused (restic would keep
    /// everything and say nothing). Each host and tag set is its own group, kept by the
    /// policy separately.
    pub async fn apply_retention(
        &self,
        policy: &Retention,
        tag: Option<&str>,
    ) -> Result<RetentionOutcome, ResticError> {
        let rules = [
            ("--keep-last", policy.keep_last),
            ("--keep-daily", policy.keep_daily),
            ("--keep-weekly", policy.keep_weekly),
            ("--keep-monthly", policy.keep_monthly),
        ];
        if rules.iter().all(|(_, count)| *count == 0) {
            return Err(ResticError::invalid(
                "the retention policy keeps nothing (every rule is 0); keep at least one \
                 snapshot, or forget snapshots by id",
            ));
        }
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        self.unlock().await?;
        let mut args: Vec<OsString> = vec![
            "forget".into(),
            "--json".into(),
            "--prune".into(),
            "--group-by=host,tags".into(),
        ];
        for (flag, count) in rules {
            if count > 0 {
                args.push(format!("{flag}={count}").into());
            }
        }
        if let Some(tag) = tag {
            args.push(format!("--tag={tag}").into());
        }
        let out = self.run("forget", &args, None).await?;
        if !out.success() {
            return Err(self.failure("forget", &out));
        }
        let (kept, removed) = output::parse_forget(&out.stdout)?;
        Ok(RetentionOutcome { removed, kept })
    }

    /// Sum of the repository's stored size (`restic stats --json --mode raw-data`): bytes of
    /// the blobs the snapshots reference, after deduplication and compression. Data no
    /// snapshot references any more (before a prune) and pack headers are not counted.
    pub async fn stored_bytes(&self) -> Result<u64, ResticError> {
        let args: Vec<OsString> = vec!["stats".into(), "--json".into(), "--mode=raw-data".into()];
        let out = self.run("stats", &args, None).await?;
        if !out.success() {
            return Err(self.failure("stats", &out));
        }
        output::parse_stats(&out.stdout)
    }

    /// The full id of the snapshot with this short id (restic 0.14's backup summary prints
    /// the short one only).
    async fn full_id(&self, short: &str) -> Result<String, ResticError> {
        let args: Vec<OsString> = vec![
            "snapshots".into(),
            "--json".into(),
            "--".into(),
            short.into(),
        ];
        let out = self.run("snapshots", &args, None).await?;
        if !out.success() {
            return Err(self.failure("snapshots", &out));
        }
        output::parse_snapshots("snapshots", &out.stdout)?
            .into_iter()
            .map(|snapshot| snapshot.id)
            .find(|id| id.starts_with(short))
            .ok_or_else(|| ResticError::UnexpectedOutput {
                command: "backup",
                problem: format!("the new snapshot {short} is not in the repository"),
            })
    }

    /// Forgets one snapshot without pruning (its data stays for the next backup to reuse).
    async fn forget_without_prune(&self, id: &str) -> Result<(), ResticError> {
        let args: Vec<OsString> = vec!["forget".into(), "--".into(), id.into()];
        let out = self.run("forget", &args, None).await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.failure("forget", &out))
        }
    }

    fn scrub(&self, text: &str) -> String {
        let mut secrets = vec![self.password.expose()];
        secrets.extend(self.location.secret());
        process::scrub(text, &secrets)
    }

    fn failure(&self, command: &'static str, out: &Captured) -> ResticError {
        process::classify(command, &self.location.to_string(), out.status, &out.stderr)
    }

    fn spawn(
        &self,
        command: &'static str,
        args: &[OsString],
        current_dir: Option<&Path>,
    ) -> Result<tokio::process::Child, ResticError> {
        self.location.validate()?;
        if self.password.expose().is_empty() {
            // restic would read a password from its (empty) stdin instead.
            return Err(ResticError::invalid(
                "the repository password is empty; restic needs one",
            ));
        }
        create_private_dir(&self.cache_dir, "creating restic's cache directory")?;
        let setup = Setup {
            binary: &self.binary,
            location: &self.location,
            password: self.password.expose(),
            cache_dir: &self.cache_dir,
        };
        let inherited = std::env::vars_os().map(|(key, _)| key);
        let mut child =
            tokio::process::Command::from(process::command(&setup, args, current_dir, inherited));
        child.kill_on_drop(true);
        child.spawn().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                ResticError::NotInstalled {
                    binary: self.binary.clone(),
                }
            }
            _ => ResticError::io(format!("starting restic {command}"), error),
        })
    }

    async fn run(
        &self,
        command: &'static str,
        args: &[OsString],
        current_dir: Option<&Path>,
    ) -> Result<Captured, ResticError> {
        let child = self.spawn(command, args, current_dir)?;
        let output = child
            .wait_with_output()
            .await
            .map_err(|error| ResticError::io(format!("running restic {command}"), error))?;
        Ok(Captured {
            status: output.status.code(),
            stdout: output.stdout,
            stderr: self.scrub(&String::from_utf8_lossy(&output.stderr)),
        })
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        std::path::absolute(&path).unwrap_or(path)
    }
}

/// Creates `dir` (and its missing parents) with mode 0700; an existing one is left as it is.
fn create_private_dir(dir: &Path, action: &str) -> Result<(), ResticError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| ResticError::io(format!("{action} {}", dir.display()), error))
}

fn validate_host(host: &str) -> Result<(), ResticError> {
    if host.trim().is_empty() || host.chars().any(char::is_control) {
        return Err(ResticError::invalid(format!(
            "the backup host {host:?} is empty or has control characters"
        )));
    }
    Ok(())
}

/// restic splits a tag list at commas (`--tag a,b` is two tags when backing up, and means "both"
/// when filtering), so a tag with a comma would not be one tag.
fn validate_tag(tag: &str) -> Result<(), ResticError> {
    if tag.is_empty() || tag.contains(',') || tag.chars().any(char::is_control) {
        return Err(ResticError::invalid(format!(
            "the tag {tag:?} is empty or has a comma or a control character"
        )));
    }
    Ok(())
}

/// A full or short snapshot id (hex), or "latest".
fn validate_snapshot_id(id: &str) -> Result<(), ResticError> {
    let hex = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if hex || id == "latest" {
        Ok(())
    } else {
        Err(ResticError::invalid(format!(
            "{id:?} is not a snapshot id (hex, such as \"11554f0c\") or \"latest\""
        )))
    }
}

fn validate_backup_paths(base: &Path, paths: &[PathBuf]) -> Result<(), ResticError> {
    if !base.is_dir() {
        return Err(ResticError::invalid(format!(
            "the backup base {} is not a directory",
            base.display()
        )));
    }
    if paths.is_empty() {
        return Err(ResticError::invalid(
            "nothing to back up: give at least one path (\".\" for the whole base)",
        ));
    }
    for path in paths {
        let relative = !path.as_os_str().is_empty()
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !relative {
            return Err(ResticError::invalid(format!(
                "the backup path {} is not relative to the base without `..`; snapshots hold \
                 paths relative to the base",
                path.display()
            )));
        }
        if std::fs::symlink_metadata(base.join(path)).is_err() {
            return Err(ResticError::invalid(format!(
                "the backup path {} does not exist in {}",
                path.display(),
                base.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_paths_must_be_relative_existing_and_without_parent_components() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let ok = |paths: &[&str]| {
            let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            validate_backup_paths(dir.path(), &paths).is_ok()
        };
        assert!(ok(&["data"]));
        assert!(ok(&["."]));
        assert!(ok(&["./data"]));
        assert!(!ok(&[]));
        assert!(!ok(&["missing"]));
        assert!(!ok(&["/etc"]));
        assert!(!ok(&["../data"]));
        assert!(!ok(&["data/../data"]));
        assert!(!ok(&[""]));
    }

    #[test]
    fn tags_hosts_and_snapshot_ids_that_restic_would_misread_are_refused() {
        assert!(validate_tag("daily").is_ok());
        assert!(validate_tag("-x").is_ok());
        assert!(validate_tag("a,b").is_err());
        assert!(validate_tag("").is_err());
        assert!(validate_host("web-1").is_ok());
        assert!(validate_host("").is_err());
        assert!(validate_host("a\nb").is_err());
        assert!(validate_snapshot_id("11554f0c").is_ok());
        assert!(validate_snapshot_id(&"a".repeat(64)).is_ok());
        assert!(validate_snapshot_id("latest").is_ok());
        assert!(validate_snapshot_id("--prune").is_err());
        assert!(validate_snapshot_id("").is_err());
        assert!(validate_snapshot_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn repository_debug_shows_neither_the_password_nor_the_secret_key() {
        let location = Location::S3 {
            endpoint: "http://127.0.0.1:5000".to_string(),
            bucket: "b".to_string(),
            prefix: String::new(),
            region: "eu-west-1".to_string(),
            access_key_id: "AKIA".to_string(),
            secret_access_key: Redacted::new("secret-key-xyz"),
        };
        let repository = Repository::new(
            location,
            Redacted::new("password-xyz"),
            PathBuf::from("/tmp/cache"),
        );
        let debug = format!("{repository:?}");
        assert!(!debug.contains("secret-key-xyz"), "{debug}");
        assert!(!debug.contains("password-xyz"), "{debug}");
    }

    #[test]
    fn new_makes_a_relative_local_path_and_cache_dir_absolute() {
        let repository = Repository::new(
            Location::Local(PathBuf::from("backups/acme")),
            Redacted::new("pw"),
            PathBuf::from("cache"),
        );
        let Location::Local(path) = repository.location() else {
            panic!("not local")
        };
        assert!(path.is_absolute());
        assert!(path.ends_with("backups/acme"));
        assert!(repository.cache_dir.is_absolute());
    }

    /// The futures can run on any runtime thread (`backup`'s is not `Send` only because its
    /// progress callback is a plain `&mut dyn FnMut`).
    #[test]
    fn every_future_but_backups_is_send() {
        fn send<T: Send>(_: T) {}
        let repository = Repository::new(
            Location::Local(PathBuf::from("/nonexistent")),
            Redacted::new("pw"),
            PathBuf::from("/nonexistent-cache"),
        );
        send(repository.init_if_missing());
        send(repository.unlock());
        send(repository.snapshots(Some("daily")));
        send(repository.check(true));
        send(repository.restore("latest", Path::new("/nonexistent"), &[]));
        send(repository.forget(&[]));
        send(repository.apply_retention(&Retention::default(), None));
        send(repository.stored_bytes());
        send(repository.version());
    }

    #[tokio::test]
    async fn a_missing_binary_is_not_installed_with_the_fix_in_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let repository = Repository::new(
            Location::Local(dir.path().join("repo")),
            Redacted::new("pw"),
            dir.path().join("cache"),
        )
        .with_binary(PathBuf::from("/nonexistent/restic"));
        let error = repository.init_if_missing().await.unwrap_err();
        assert!(
            matches!(error, ResticError::NotInstalled { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("apt-get install restic"));
    }
}
