//! Alerts and the signed-webhook outbox.
//!
//! # What it guarantees
//!
//! - At most one open (pending or firing) alert per condition key: a unique partial index, so
//!   two evaluators cannot both open one. [`Store::open_alert`] answers `false` for the second.
//! - An alert moves only pending → firing → resolved, each by a guarded `UPDATE`; a pending
//!   alert can be dropped (its condition went before it fired), a firing one never.
//! - A webhook notice is queued once per dedupe key (one per alert occurrence and notice).

use stackbox_core::alerts::{AlertKind, OpenAlert};

use crate::model::Timestamp;
use crate::{checked_limit, postgres, sqlite, time_ordered_id, Pool, Store, StoreError};

/// An alert as kept: open (`resolved_at` none) or resolved history.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub id: String,
    pub key: String,
    pub kind: AlertKind,
    pub client_id: Option<String>,
    pub summary: String,
    pub since: Timestamp,
    pub fired_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
}

impl AlertRecord {
    /// The core's view of an open alert (times in Unix seconds).
    pub fn as_open(&self) -> OpenAlert {
        OpenAlert {
            key: self.key.clone(),
            kind: self.kind,
            client: self.client_id.clone(),
            summary: self.summary.clone(),
            since: self.since.unix_millis().div_euclid(1000),
            fired_at: self.fired_at.map(|t| t.unix_millis().div_euclid(1000)),
        }
    }
}

/// A webhook delivery due to be attempted.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    pub id: String,
    pub dedupe_key: String,
    pub body: String,
    pub attempts: u32,
}

/// The longest alert key and summary kept.
const MAX_KEY_CHARS: usize = 300;
const MAX_SUMMARY_CHARS: usize = 1000;

impl Store {
    /// Records a new open alert. `false` when one with the same key is open already.
    pub async fn open_alert(&self, alert: &OpenAlert) -> Result<bool, StoreError> {
        crate::onboarding::checked_line("alert.key", &alert.key, MAX_KEY_CHARS)?;
        let summary: String = alert
            .summary
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_SUMMARY_CHARS)
            .collect();
        let since = Timestamp::from_unix_millis(alert.since.saturating_mul(1000));
        let id = time_ordered_id("alr_", since)?;
        let fired = alert
            .fired_at
            .map(|s| Timestamp::from_unix_millis(s.saturating_mul(1000)));
        let alert = OpenAlert {
            summary,
            ..alert.clone()
        };
        on_backend!(self, alerts_sql::insert_alert(&id, &alert, since, fired))
    }

    /// Every open alert (pending and firing), oldest first.
    pub async fn open_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        on_backend!(self, alerts_sql::open_alerts())
    }

    /// Open and recent resolved alerts, newest first: `open_only`, of one client, at most
    /// `limit`.
    pub async fn alerts(
        &self,
        open_only: bool,
        client: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, alerts_sql::alerts(open_only, client, limit))
    }

    /// A pending alert fires. `None` when it was not pending (already fired, or gone).
    pub async fn fire_alert(
        &self,
        key: &str,
        at: Timestamp,
    ) -> Result<Option<AlertRecord>, StoreError> {
        on_backend!(self, alerts_sql::fire_alert(key, at))
    }

    /// A firing alert resolves. `None` when it was not firing.
    pub async fn resolve_alert(
        &self,
        key: &str,
        at: Timestamp,
    ) -> Result<Option<AlertRecord>, StoreError> {
        on_backend!(self, alerts_sql::resolve_alert(key, at))
    }

    /// Forgets a pending alert whose condition went before it fired. `false` when it was
    /// not pending.
    pub async fn drop_pending_alert(&self, key: &str) -> Result<bool, StoreError> {
        on_backend!(self, alerts_sql::drop_pending_alert(key))
    }

    /// Queues a webhook body, due now. `false` when its dedupe key was queued before.
    pub async fn enqueue_webhook(&self, dedupe_key: &str, body: &str) -> Result<bool, StoreError> {
        crate::onboarding::checked_line("dedupe_key", dedupe_key, crate::MAX_DEDUPE_KEY_CHARS)?;
        let now = Timestamp::now();
        let id = time_ordered_id("whk_", now)?;
        on_backend!(self, alerts_sql::insert_webhook(&id, dedupe_key, body, now))
    }

    /// Pending webhooks whose next attempt is due at `now`, oldest first, at most `limit`.
    pub async fn due_webhooks(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, alerts_sql::due_webhooks(now, limit))
    }

    /// A delivery was accepted by the receiver.
    pub async fn mark_webhook_sent(&self, id: &str) -> Result<(), StoreError> {
        on_backend!(
            self,
            alerts_sql::finish_webhook(id, "sent", None, Timestamp::now())
        )
    }

    /// An attempt failed; the next is due at `next`.
    pub async fn mark_webhook_retry(
        &self,
        id: &str,
        next: Timestamp,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = crate::onboarding::shortened(error);
        on_backend!(self, alerts_sql::retry_webhook(id, next, error))
    }

    /// Given up after the last attempt.
    pub async fn mark_webhook_failed(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let error = crate::onboarding::shortened(error);
        on_backend!(
            self,
            alerts_sql::finish_webhook(id, "failed", Some(error), Timestamp::now())
        )
    }

    /// How many webhook deliveries are in each status (for `/metrics` and alerts).
    pub async fn count_webhooks_by_status(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        on_backend!(self, alerts_sql::count_webhooks_by_status())
    }
}
