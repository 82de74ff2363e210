//! Backups: each client's sealed backup repository key, the journal of backup runs (with
//! their restore tests), and destroyed clients whose backups are kept for a while.
//!
//! # What each part guarantees
//!
//! - **Backup repository keys** are sealed with the master key like secrets, but under
//!   associated data of their own (`stackbox backup key v1`, NUL, the client id), so neither a
//!   client's secrets blob nor another client's key opens in their place.
//!   [`Store::put_backup_key_if_absent`] is an insert-if-absent followed by a read: however
//!   many callers race to create a client's first key, they all get the one that was stored,
//!   and a key once stored is never replaced (the repository it opens would become
//!   unreadable).
//! - **Backups** move only running → succeeded (with a snapshot id) or running → failed, each
//!   one guarded `UPDATE`: a late or repeated finish reports `false` and changes nothing. A
//!   backup step re-entered after the control plane was killed finds the row its interrupted
//!   run left with [`Store::backups_running_for_deployment`] (or fails them all with
//!   [`Store::fail_running_backups_of_client`]), so no row stays `running` for ever.
//! - **Nothing here references `clients`**: a destroyed client's backups, key and retained
//!   configuration stay until [`Store::forget_retained_client`] removes them, which is
//!   refused while the client exists.

use stackbox_core::client::{ClientId, ClientSpec, Domain};
use zeroize::Zeroizing;

use crate::model::{
    BackupId, BackupReason, BackupRecord, BackupStatus, DeploymentId, RetainedClient, Timestamp,
};
use crate::onboarding::{checked_line, shortened};
use crate::StoreError;
use crate::{checked_limit, crypto, postgres, sqlite, time_ordered_id, MasterKey, Pool, Store};

/// The longest snapshot id (or prefix) accepted; restic's are 64 hex digits.
pub const MAX_SNAPSHOT_ID_CHARS: usize = 128;
/// The longest backup repository key accepted.
pub const MAX_BACKUP_KEY_CHARS: usize = 1024;

/// A snapshot id as the repository prints it: ASCII letters and digits only (restic's are
/// lowercase hex), so it is safe in URLs and in the prefix comparison.
fn checked_snapshot_id(field: &'static str, text: &str) -> Result<(), StoreError> {
    checked_line(field, text, MAX_SNAPSHOT_ID_CHARS)?;
    if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StoreError::InvalidValue {
            field,
            problem: "it may only hold ASCII letters and digits".to_string(),
        });
    }
    Ok(())
}

/// What a succeeded backup records, checked (the counts fit a BIGINT); one type for both
/// engines' copies of the queries.
pub(crate) struct SucceededBackup<'a> {
    pub(crate) snapshot_id: &'a str,
    pub(crate) manifest: &'a serde_json::Value,
    pub(crate) bytes_added: i64,
    pub(crate) bytes_total: i64,
    pub(crate) files_total: i64,
}

/// A byte or file count as stored (a BIGINT).
fn checked_count(field: &'static str, count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| StoreError::InvalidValue {
        field,
        problem: format!("{count} is larger than {}", i64::MAX),
    })
}

impl Store {
    // -- Backup repository keys ---------------------------------------------------------------

    /// Stores `key` as the client's backup repository key unless it already has one, and
    /// returns the key in force: `key` if it was stored now, the earlier one otherwise (so
    /// callers that race to create the first key all get the same one). The key is sealed
    /// with `master`; a stored key that does not open with it fails with
    /// [`StoreError::DecryptBackupKey`]. The client need not exist in `clients`.
    pub async fn put_backup_key_if_absent(
        &self,
        client: &ClientId,
        key: &str,
        master: &MasterKey,
    ) -> Result<Zeroizing<String>, StoreError> {
        if key.is_empty() || key.chars().count() > MAX_BACKUP_KEY_CHARS {
            return Err(StoreError::InvalidValue {
                field: "backup repository key",
                problem: format!("it must have 1 to {MAX_BACKUP_KEY_CHARS} characters"),
            });
        }
        let sealed = crypto::seal_backup_key(master, client, key)?;
        let stored = on_backend!(
            self,
            backups_sql::put_sealed_backup_key_if_absent(client, &sealed, Timestamp::now())
        )?;
        crypto::open_backup_key(master, client, &stored)
    }

    /// The client's backup repository key, decrypted with `master`; `None` when it has none.
    pub async fn backup_key(
        &self,
        client: &ClientId,
        master: &MasterKey,
    ) -> Result<Option<Zeroizing<String>>, StoreError> {
        let sealed = on_backend!(self, backups_sql::sealed_backup_key(client))?;
        sealed
            .map(|blob| crypto::open_backup_key(master, client, &blob))
            .transpose()
    }

    // -- Backups ------------------------------------------------------------------------------

    /// Records a backup that starts now, `running`, made by `deployment` if a deployment's
    /// step takes it.
    pub async fn start_backup(
        &self,
        client: &ClientId,
        deployment: Option<&DeploymentId>,
        reason: BackupReason,
    ) -> Result<BackupRecord, StoreError> {
        let now = Timestamp::now();
        let backup = BackupRecord {
            id: BackupId::from_trusted(time_ordered_id(BackupId::PREFIX, now)?),
            client_id: client.clone(),
            deployment_id: deployment.cloned(),
            reason,
            status: BackupStatus::Running,
            snapshot_id: None,
            started_at: now,
            finished_at: None,
            error: None,
            manifest: None,
            bytes_added: None,
            bytes_total: None,
            files_total: None,
            verified_at: None,
            verify_ok: None,
            verify_error: None,
            forgotten_at: None,
        };
        on_backend!(self, backups_sql::insert_backup(&backup))?;
        Ok(backup)
    }

    /// running → succeeded, with the snapshot made and what it holds. Returns whether the
    /// backup changed: `false` when it had already finished (a repeated or late report), which
    /// then keeps what it had. A missing backup is [`StoreError::BackupNotFound`].
    pub async fn finish_backup(
        &self,
        id: &BackupId,
        snapshot_id: &str,
        manifest: &serde_json::Value,
        bytes_added: u64,
        bytes_total: u64,
        files_total: u64,
    ) -> Result<bool, StoreError> {
        checked_snapshot_id("snapshot_id", snapshot_id)?;
        let outcome = SucceededBackup {
            snapshot_id,
            manifest,
            bytes_added: checked_count("bytes_added", bytes_added)?,
            bytes_total: checked_count("bytes_total", bytes_total)?,
            files_total: checked_count("files_total", files_total)?,
        };
        on_backend!(
            self,
            backups_sql::finish_backup(id, &outcome, Timestamp::now())
        )
    }

    /// running → failed, with the error as people should read it (cut to 2000 characters).
    /// Returns whether the backup changed, like [`Store::finish_backup`].
    pub async fn fail_backup(&self, id: &BackupId, error: &str) -> Result<bool, StoreError> {
        on_backend!(
            self,
            backups_sql::fail_backup(id, shortened(error), Timestamp::now())
        )
    }

    pub async fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, StoreError> {
        on_backend!(self, backups_sql::backup(id))
    }

    /// The client's backups, newest first, at most `limit` (1 to [`crate::MAX_PAGE_LIMIT`]),
    /// without the forgotten ones (their snapshots are gone).
    pub async fn backups_of_client(
        &self,
        client: &ClientId,
        limit: u32,
    ) -> Result<Vec<BackupRecord>, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, backups_sql::backups_of_client(client, limit))
    }

    /// The client's backup whose snapshot id is `snapshot`, or starts with it (as restic
    /// accepts a short id). Forgotten backups are included: check `forgotten_at` before
    /// restoring. A prefix of several snapshots' ids fails with
    /// [`StoreError::AmbiguousSnapshot`]; an id that is whole wins over longer ones it
    /// starts.
    pub async fn backup_by_snapshot(
        &self,
        client: &ClientId,
        snapshot: &str,
    ) -> Result<Option<BackupRecord>, StoreError> {
        checked_snapshot_id("snapshot id", snapshot)?;
        let mut found = on_backend!(
            self,
            backups_sql::backups_by_snapshot_prefix(client, snapshot)
        )?;
        if let Some(exact) = found
            .iter()
            .position(|backup| backup.snapshot_id.as_deref() == Some(snapshot))
        {
            return Ok(Some(found.swap_remove(exact)));
        }
        let distinct: std::collections::BTreeSet<&str> = found
            .iter()
            .filter_map(|backup| backup.snapshot_id.as_deref())
            .collect();
        if distinct.len() > 1 {
            return Err(StoreError::AmbiguousSnapshot {
                client: client.clone(),
                prefix: snapshot.to_string(),
                matches: distinct.len(),
            });
        }
        // Newest first: one snapshot recorded twice gives its newest row.
        Ok(found.into_iter().next())
    }

    /// The client's newest succeeded backup that is not forgotten: what a restore uses when no
    /// snapshot is named.
    pub async fn latest_succeeded_backup(
        &self,
        client: &ClientId,
    ) -> Result<Option<BackupRecord>, StoreError> {
        on_backend!(self, backups_sql::latest_succeeded_backup(client))
    }

    /// Records a restore test of a succeeded backup now: passed (`ok`, no error) or failed
    /// with why. A later test replaces an earlier one. A backup that did not succeed is
    /// [`StoreError::BackupNotVerifiable`]; a missing one [`StoreError::BackupNotFound`].
    pub async fn record_verification(
        &self,
        id: &BackupId,
        ok: bool,
        error: Option<&str>,
    ) -> Result<BackupRecord, StoreError> {
        if ok && error.is_some() {
            return Err(StoreError::InvalidValue {
                field: "verify_error",
                problem: "a verification that passed has no error; give none, or ok = false"
                    .to_string(),
            });
        }
        on_backend!(
            self,
            backups_sql::record_verification(id, ok, error.map(shortened), Timestamp::now())
        )
    }

    /// The client's most recently verified backup (forgotten ones included: the test still
    /// happened), or `None` if none was ever verified.
    pub async fn last_verification(
        &self,
        client: &ClientId,
    ) -> Result<Option<BackupRecord>, StoreError> {
        on_backend!(self, backups_sql::last_verification(client))
    }

    /// Records that retention removed the backup's snapshot from the repository. Returns
    /// whether it changed (`false` if it was already forgotten); a missing backup is
    /// [`StoreError::BackupNotFound`].
    pub async fn mark_backup_forgotten(&self, id: &BackupId) -> Result<bool, StoreError> {
        on_backend!(
            self,
            backups_sql::mark_backup_forgotten(id, Timestamp::now())
        )
    }

    /// The backups still `running` that `deployment` started, oldest first: what its backup
    /// step, re-entered after an interruption, left behind.
    pub async fn backups_running_for_deployment(
        &self,
        deployment: &DeploymentId,
    ) -> Result<Vec<BackupRecord>, StoreError> {
        on_backend!(
            self,
            backups_sql::backups_running_for_deployment(deployment)
        )
    }

    /// Fails every `running` backup of the client with `error`; returns how many. For a step
    /// that starts over after an interruption (only one deployment runs per client at a time,
    /// so a running backup of the client is the interrupted one's).
    pub async fn fail_running_backups_of_client(
        &self,
        client: &ClientId,
        error: &str,
    ) -> Result<u64, StoreError> {
        on_backend!(
            self,
            backups_sql::fail_running_backups_of_client(client, shortened(error), Timestamp::now())
        )
    }

    /// Every client id with a backup that is not forgotten, in id order, whether the client
    /// still exists or not: what retention walks.
    pub async fn clients_with_backups(&self) -> Result<Vec<ClientId>, StoreError> {
        on_backend!(self, backups_sql::clients_with_backups())
    }

    /// For each client with a succeeded backup that is not forgotten, when the newest one
    /// started (the time its data is from), in client id order; one query, for the "missing a
    /// backup" metric.
    pub async fn last_succeeded_backup_times(
        &self,
    ) -> Result<Vec<(ClientId, Timestamp)>, StoreError> {
        on_backend!(self, backups_sql::last_succeeded_backup_times())
    }

    /// The clients whose newest finished backup failed: when it started and why, in client
    /// id order; one query, for the "backup failed" alert.
    pub async fn latest_backup_failures(
        &self,
    ) -> Result<Vec<(ClientId, Timestamp, Option<String>)>, StoreError> {
        on_backend!(self, backups_sql::latest_backup_failures())
    }

    /// Backups that are not forgotten, by status (every status, 0 when none): a metric.
    pub async fn count_backups_by_status(
        &self,
    ) -> Result<std::collections::BTreeMap<BackupStatus, u64>, StoreError> {
        on_backend!(self, backups_sql::count_backups_by_status())
    }

    // -- Retained destroyed clients -----------------------------------------------------------

    /// Records that a destroyed client's backups are kept until `until`, with its domain and
    /// configuration (`ClientSpec::to_toml`'s text, which must parse) to restore it from them.
    /// Repeating it (a resumed destroy) updates the domain, configuration and date and keeps
    /// the first `destroyed_at`.
    pub async fn retain_client(
        &self,
        id: &ClientId,
        domain: &Domain,
        spec_toml: &str,
        until: Timestamp,
    ) -> Result<RetainedClient, StoreError> {
        ClientSpec::from_toml(spec_toml).map_err(|error| StoreError::InvalidValue {
            field: "spec",
            problem: error.to_string(),
        })?;
        let retained = RetainedClient {
            client_id: id.clone(),
            domain: domain.clone(),
            spec_toml: spec_toml.to_string(),
            destroyed_at: Timestamp::now(),
            retain_until: until,
        };
        on_backend!(self, backups_sql::retain_client(&retained))
    }

    pub async fn retained_client(
        &self,
        id: &ClientId,
    ) -> Result<Option<RetainedClient>, StoreError> {
        on_backend!(self, backups_sql::retained_client(id))
    }

    /// Retained clients whose `retain_until` is at or before `now`, soonest first.
    pub async fn retained_clients_due(
        &self,
        now: Timestamp,
    ) -> Result<Vec<RetainedClient>, StoreError> {
        on_backend!(self, backups_sql::retained_clients_due(now))
    }

    /// A destroyed client came back (restored from its backups): its retention ends without
    /// deleting anything; its backups are its own again. Returns whether it was retained.
    pub async fn release_retained_client(&self, id: &ClientId) -> Result<bool, StoreError> {
        on_backend!(self, backups_sql::release_retained_client(id))
    }

    /// Deletes a destroyed client's retained record, every backup row and its backup key, at
    /// once; returns whether anything was there. Refused with
    /// [`StoreError::ClientNotDestroyed`] while the client exists. Forget its snapshots in the
    /// repository first: without the key they cannot be read any more.
    pub async fn forget_retained_client(&self, id: &ClientId) -> Result<bool, StoreError> {
        on_backend!(self, backups_sql::forget_retained_client(id))
    }
}
