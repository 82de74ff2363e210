//! Building restic's command line and environment, and reading what it says when it fails.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::error::ResticError;
use crate::location::Location;

/// How much of restic's output an error keeps.
pub(crate) const OUTPUT_LIMIT: usize = 4096;

/// What replaces a secret in restic's output.
const REDACTED: &str = "[redacted]";

/// The inherited variables that are removed from restic's environment: restic reads its
/// repository, password, password file or command and options from `RESTIC_*`, and the S3
/// backend its credentials and endpoint from `AWS_*` (and `MINIO_*`), so an operator's shell
/// could otherwise redirect a client's backup or hand it other credentials.
fn is_cleared(key: &OsStr) -> bool {
    let key = key.to_string_lossy();
    ["RESTIC_", "AWS_", "MINIO_"]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Everything one restic run needs besides its arguments.
pub(crate) struct Setup<'a> {
    pub binary: &'a Path,
    pub location: &'a Location,
    pub password: &'a str,
    pub cache_dir: &'a Path,
}

/// `restic --repo <repository> <args…>` with the password and credentials in the environment
/// only (never an argument: arguments are visible to every user through `ps`), inherited
/// `RESTIC_*`/`AWS_*`/`MINIO_*` variables removed (`inherited` lists the parent's variables).
pub(crate) fn command(
    setup: &Setup<'_>,
    args: &[OsString],
    current_dir: Option<&Path>,
    inherited: impl IntoIterator<Item = OsString>,
) -> std::process::Command {
    let mut command = std::process::Command::new(setup.binary);
    for key in inherited {
        if is_cleared(&key) {
            command.env_remove(key);
        }
    }
    command.env("RESTIC_PASSWORD", setup.password);
    command.env("RESTIC_CACHE_DIR", setup.cache_dir);
    // restic's default with --json is 60 status lines a second; ten is plenty for a display.
    command.env("RESTIC_PROGRESS_FPS", "10");
    if let Location::S3 {
        region,
        access_key_id,
        secret_access_key,
        ..
    } = setup.location
    {
        if !access_key_id.is_empty() {
            command.env("AWS_ACCESS_KEY_ID", access_key_id);
            command.env("AWS_SECRET_ACCESS_KEY", secret_access_key.expose());
        }
        if !region.is_empty() {
            command.env("AWS_DEFAULT_REGION", region);
        }
    }
    command
        .arg("--repo")
        .arg(setup.location.repository_string());
    command.args(args);
    if let Some(dir) = current_dir {
        command.current_dir(dir);
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// `text` with every occurrence of every non-empty secret replaced by `[redacted]`.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    // Longest first, so that a secret containing another is replaced whole.
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        if text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    text
}

/// At most about `limit` bytes of `text` (already scrubbed): its beginning and its end, where
/// restic says what went wrong first and the `Fatal:` line that ended it.
pub(crate) fn trim(text: &str, limit: usize) -> String {
    let text = text.trim();
    if text.len() <= limit {
        return text.to_string();
    }
    let head_end = floor_char_boundary(text, limit / 4);
    let tail_start = ceil_char_boundary(text, text.len() - (limit - limit / 4));
    format!(
        "{}\n[… {} bytes left out …]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// The error a failed restic run stands for, from what it printed (restic 0.14 exits with 1
/// for every fatal error, so its words are all there is to tell them apart). `stderr` is
/// already scrubbed.
pub(crate) fn classify(
    command: &'static str,
    repository: &str,
    status: Option<i32>,
    stderr: &str,
) -> ResticError {
    if stderr.contains("wrong password or no key found") {
        return ResticError::WrongPassword {
            repository: repository.to_string(),
        };
    }
    // "Is there a repository at the following location?" follows every failure to read the
    // config file, connection errors included; only these say the file (or bucket) is absent.
    let missing = [
        "no such file or directory",
        "The specified key does not exist",
        "The specified bucket does not exist",
        "NoSuchBucket",
    ];
    if stderr.contains("unable to open config file") && missing.iter().any(|m| stderr.contains(m)) {
        return ResticError::RepositoryMissing {
            repository: repository.to_string(),
        };
    }
    if stderr.contains("unable to create lock") || stderr.contains("repository is already locked") {
        return ResticError::Locked {
            command,
            repository: repository.to_string(),
            stderr: trim(stderr, OUTPUT_LIMIT),
        };
    }
    ResticError::Failed {
        command,
        status,
        stderr: trim(stderr, OUTPUT_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::location::Redacted;

    fn s3() -> Location {
        Location::S3 {
            endpoint: "http://127.0.0.1:5000".to_string(),
            bucket: "bucket".to_string(),
            prefix: "pre/acme-0badcafe".to_string(),
            region: "eu-west-1".to_string(),
            access_key_id: "AKIATEST".to_string(),
            secret_access_key: Redacted::new("s3-secret-key"),
        }
    }

    fn built(location: &Location, inherited: Vec<&str>) -> std::process::Command {
        let setup = Setup {
            binary: Path::new("/usr/bin/restic"),
            location,
            password: "the-password",
            cache_dir: Path::new("/var/cache/stackbox/restic"),
        };
        command(
            &setup,
            &["snapshots".into(), "--json".into()],
            None,
            inherited.into_iter().map(OsString::from),
        )
    }

    fn env_of(command: &std::process::Command, key: &str) -> Option<Option<String>> {
        command
            .get_envs()
            .find(|(k, _)| *k == OsStr::new(key))
            .map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn password_and_secret_key_are_in_the_environment_and_never_in_the_arguments() {
        let command = built(&s3(), vec![]);
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--repo",
                "s3:http://127.0.0.1:5000/bucket/pre/acme-0badcafe",
                "snapshots",
                "--json"
            ]
        );
        for arg in &args {
            assert!(!arg.contains("the-password"), "{arg}");
            assert!(!arg.contains("s3-secret-key"), "{arg}");
        }
        assert_eq!(
            env_of(&command, "RESTIC_PASSWORD"),
            Some(Some("the-password".to_string()))
        );
        assert_eq!(
            env_of(&command, "AWS_SECRET_ACCESS_KEY"),
            Some(Some("s3-secret-key".to_string()))
        );
        assert_eq!(
            env_of(&command, "AWS_ACCESS_KEY_ID"),
            Some(Some("AKIATEST".to_string()))
        );
        assert_eq!(
            env_of(&command, "AWS_DEFAULT_REGION"),
            Some(Some("eu-west-1".to_string()))
        );
        assert_eq!(
            env_of(&command, "RESTIC_CACHE_DIR"),
            Some(Some("/var/cache/stackbox/restic".to_string()))
        );
    }

    #[test]
    fn inherited_restic_aws_and_minio_variables_are_removed_and_others_kept() {
        let local = Location::Local(PathBuf::from("/srv/backups/acme-0badcafe"));
        let command = built(
            &local,
            vec![
                "RESTIC_REPOSITORY",
                "RESTIC_PASSWORD_FILE",
                "AWS_PROFILE",
                "AWS_SECRET_ACCESS_KEY",
                "MINIO_ACCESS_KEY",
                "HOME",
                "HTTPS_PROXY",
            ],
        );
        for cleared in [
            "RESTIC_REPOSITORY",
            "RESTIC_PASSWORD_FILE",
            "AWS_PROFILE",
            "AWS_SECRET_ACCESS_KEY",
            "MINIO_ACCESS_KEY",
        ] {
            assert_eq!(env_of(&command, cleared), Some(None), "{cleared}");
        }
        assert_eq!(env_of(&command, "HOME"), None);
        assert_eq!(env_of(&command, "HTTPS_PROXY"), None);
        // The password set afterwards wins over the removal of an inherited one.
        assert_eq!(
            env_of(&command, "RESTIC_PASSWORD"),
            Some(Some("the-password".to_string()))
        );
    }

    #[test]
    fn scrub_replaces_every_secret_and_leaves_empty_secrets_alone() {
        let text = "Fatal: pw=hunter2 key=hunter2-long and hunter2";
        assert_eq!(
            scrub(text, &["hunter2", "hunter2-long", ""]),
            "Fatal: pw=[redacted] key=[redacted] and [redacted]"
        );
        assert_eq!(scrub("nothing", &[""]), "nothing");
    }

    #[test]
    fn trim_keeps_the_beginning_and_the_fatal_end_within_the_limit() {
        let text = format!("first error\n{}\nFatal: the end", "é".repeat(5000));
        let trimmed = trim(&text, OUTPUT_LIMIT);
        assert!(trimmed.len() <= OUTPUT_LIMIT + 64, "{}", trimmed.len());
        assert!(trimmed.starts_with("first error"));
        assert!(trimmed.ends_with("Fatal: the end"));
        assert!(trimmed.contains("bytes left out"));
        assert_eq!(trim("  short \n", OUTPUT_LIMIT), "short");
    }

    #[test]
    fn classify_tells_wrong_password_missing_repository_lock_and_other_failures_apart() {
        let repo = "/srv/r";
        assert!(matches!(
            classify(
                "snapshots",
                repo,
                Some(1),
                "Fatal: wrong password or no key found\n"
            ),
            ResticError::WrongPassword { .. }
        ));
        assert!(matches!(
            classify(
                "cat",
                repo,
                Some(1),
                "Fatal: unable to open config file: stat /srv/r/config: no such file or directory\nIs there a repository at the following location?\n/srv/r"
            ),
            ResticError::RepositoryMissing { .. }
        ));
        assert!(matches!(
            classify(
                "cat",
                repo,
                Some(1),
                "Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the following location?"
            ),
            ResticError::RepositoryMissing { .. }
        ));
        assert!(matches!(
            classify(
                "forget",
                repo,
                Some(1),
                "unable to create lock in backend: repository is already locked by PID 30381 on vm by root"
            ),
            ResticError::Locked { .. }
        ));
        // A connection failure also asks "Is there a repository…?" but is not a missing one.
        let refused = classify(
            "cat",
            repo,
            Some(1),
            "Fatal: unable to open config file: Stat: Head \"http://127.0.0.1:5399/bkt/x/config\": dial tcp 127.0.0.1:5399: connect: connection refused\nIs there a repository at the following location?",
        );
        assert!(
            matches!(
                refused,
                ResticError::Failed {
                    command: "cat",
                    status: Some(1),
                    ..
                }
            ),
            "{refused:?}"
        );
    }
}
