//! A typed driver for the restic backup tool (Debian's restic 0.14 and later), run as a
//! subprocess with `--json`: nothing of restic is reimplemented here.
//!
//! One [`Repository`] per client ([`Location::join_client`]): on a local disk or any
//! S3-compatible store (`s3:<endpoint>/<bucket>/<prefix>/<client>`, the bucket created by
//! restic when missing).
//!
//! # Secrets
//!
//! The repository password goes to restic in `RESTIC_PASSWORD` only, the S3 credentials in
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and the region in `AWS_DEFAULT_REGION`): never
//! an argument (`ps` shows arguments to everyone) and never a file. Every inherited `RESTIC_*`,
//! `AWS_*` and `MINIO_*` variable is removed from restic's environment, so the caller's shell
//! cannot point a client's backup elsewhere. Errors carry restic's stderr scrubbed of the
//! password and the secret key and trimmed to about 4 KiB; `Debug` shows `[redacted]`.
//!
//! # Locks
//!
//! restic's own locking is used. A killed restic leaves its lock behind, so backup, restore,
//! forget, retention and check run `restic unlock` first (which removes stale locks only); a
//! live conflicting lock is [`ResticError::Locked`].
//!
//! # Paths in snapshots
//!
//! [`Repository::backup`] runs restic in the backup's base directory with relative paths, so
//! the snapshot's tree holds them relative to the base (`data/db` is `/data/db`), and a
//! restore into `TARGET` gives `TARGET/data/db` on any machine.

mod error;
mod location;
mod output;
mod process;
mod repository;

pub use error::ResticError;
pub use location::{Location, Redacted, S3Credentials};
pub use output::{BackupProgress, BackupSummary, Snapshot};
pub use repository::{Repository, Retention, RetentionOutcome, MAX_REPORTED_ERRORS};
