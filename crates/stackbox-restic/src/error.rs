//! The crate's one error enum.

use std::path::PathBuf;

/// Everything that can go wrong while driving restic.
///
/// No variant ever holds the repository password or the S3 secret access key: restic's output
/// is scrubbed of both (each occurrence becomes `[redacted]`) before it is stored here, and
/// trimmed to about 4 KiB.
#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    /// The restic binary cannot be started.
    #[error(
        "restic cannot be run from `{}`: it is not installed or not executable \
         (install it with `apt-get install restic`, or point Repository::with_binary at it)",
        binary.display()
    )]
    NotInstalled { binary: PathBuf },

    /// restic said "wrong password or no key found".
    #[error(
        "the password does not open the restic repository {repository} (wrong password or no \
         key found); use the password the repository was created with"
    )]
    WrongPassword { repository: String },

    /// There is no repository at the location (no `config` file, or no bucket).
    #[error(
        "there is no restic repository at {repository}; create it first \
         (Repository::init_if_missing)"
    )]
    RepositoryMissing { repository: String },

    /// Another restic process holds a lock that conflicts with the command (a live one: stale
    /// locks are removed before every command that takes an exclusive lock).
    #[error(
        "restic {command} could not lock the repository {repository}: another restic is using \
         it; retry when it has finished. restic said: {stderr}"
    )]
    Locked {
        command: &'static str,
        repository: String,
        stderr: String,
    },

    /// `restic check` failed: the repository is damaged, or could not be read completely.
    #[error("restic check found the repository damaged or unreadable: {output}")]
    CheckFailed { output: String },

    /// The backup ran but could not read everything it was asked to (restic's exit status 3).
    /// A backup that missed files is not a success: the snapshot restic wrote anyway is
    /// forgotten again (when `snapshot_forgotten`), so that it can never be mistaken for a
    /// complete one, nor keep a complete one out of a retention policy.
    #[error(
        "the backup could not read {} item(s), so it does not count as a backup{}: {}",
        unreadable.len(),
        if *snapshot_forgotten { " (its partial snapshot was forgotten)" } else { "" },
        unreadable.join("; ")
    )]
    IncompleteBackup {
        /// `path: reason`, at most [`crate::MAX_REPORTED_ERRORS`] of them.
        unreadable: Vec<String>,
        /// The partial snapshot restic wrote, if it wrote one.
        snapshot_id: Option<String>,
        snapshot_forgotten: bool,
    },

    /// restic failed for another reason; `stderr` is what it said.
    #[error("restic {command} failed ({}): {stderr}", describe_status(*status))]
    Failed {
        command: &'static str,
        /// The exit code, `None` when restic was killed by a signal.
        status: Option<i32>,
        stderr: String,
    },

    /// restic succeeded but printed something this driver cannot read (a restic version whose
    /// JSON differs from 0.14's).
    #[error("restic {command} printed output this driver cannot read: {problem}")]
    UnexpectedOutput {
        command: &'static str,
        problem: String,
    },

    /// The caller asked for something restic must not be run with (checked before running it).
    #[error("{problem}")]
    InvalidArgument { problem: String },

    /// A local file operation around restic failed (the cache directory, a restore target, …).
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

fn describe_status(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    }
}

impl ResticError {
    pub(crate) fn invalid(problem: impl Into<String>) -> ResticError {
        ResticError::InvalidArgument {
            problem: problem.into(),
        }
    }

    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> ResticError {
        ResticError::Io {
            action: action.into(),
            source,
        }
    }
}
