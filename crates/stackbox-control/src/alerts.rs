//! The alert rules and the webhook sender, two tasks of `serve`.
//!
//! Every `alerts.every` the evaluator gathers the conditions that hold now (clients the
//! monitor marked degraded, services near their memory limit, the engine's disk nearly full,
//! running clients missing a backup or whose last backup failed, mail given up), lets the
//! core's [`stackbox_core::alerts::evaluate`] say what changes against the open alerts in the
//! store, and applies it: the store's guarded updates make each transition happen once even
//! with two evaluators, and only the caller whose update changed the row queues the notice.
//! Notices go through outboxes (the mail outbox, the webhook outbox), each de-duplicated by
//! the alert occurrence, so a crash between the transition and the send loses nothing and
//! sends nothing twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use stackbox_core::alerts::{
    evaluate, notice_body, notice_dedupe_key, notice_mail, AlertKind, Condition, NoticeKind,
    OpenAlert, Transition,
};
use stackbox_core::client::ClientId;
use stackbox_core::notify;
use stackbox_store::{ClientFilter, ClientRecord, ClientState, MailStatus, Timestamp};
use stackbox_webhook::{WebhookClient, WebhookOptions};

use crate::{Control, ControlError};

/// Webhook attempts before a notice is given up (about a day with the back-off below).
const WEBHOOK_ATTEMPTS: u32 = 30;
/// The longest delay between two attempts.
const WEBHOOK_MAX_DELAY_SECONDS: i64 = 3600;
/// Deliveries attempted per round.
const WEBHOOK_BATCH: u32 = 20;

/// Seconds between a failed webhook attempt `attempts` (0 for the first) and the next:
/// `base` doubled each attempt, at most an hour.
pub(crate) fn webhook_retry_delay_seconds(base: i64, attempts: u32) -> i64 {
    base.max(1)
        .saturating_mul(1i64 << attempts.min(20))
        .min(WEBHOOK_MAX_DELAY_SECONDS)
}

pub(crate) async fn run(control: Control) {
    let every = Duration::from_secs(control.inner.config.operator.alerts.every_seconds.max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = control.evaluate_alerts().await {
            tracing::warn!(%error, "could not evaluate the alert rules");
        }
    }
}

/// Sends the queued webhook notices, at once when one is queued, else every few seconds.
pub(crate) async fn deliver_webhooks(control: Control) {
    let settings = control.inner.config.operator.alerts.clone();
    let (Some(url), Some(secret_file)) = (settings.webhook_url, settings.webhook_secret_file)
    else {
        return;
    };
    let client = match WebhookClient::new(WebhookOptions::default()) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "the alert webhook cannot be sent");
            return;
        }
    };
    let poll = Duration::from_secs(5).min(control.inner.config.webhook_retry_base);
    loop {
        let _ = tokio::time::timeout(poll, control.inner.webhook_waiting.notified()).await;
        if let Err(error) = control
            .deliver_due_webhooks(&client, &url, &secret_file)
            .await
        {
            tracing::warn!(%error, "could not read the webhook outbox");
        }
    }
}

impl Control {
    /// One evaluation of the alert rules: conditions now → transitions → store and notices.
    pub async fn evaluate_alerts(&self) -> Result<(), ControlError> {
        let now = Timestamp::now().unix_millis().div_euclid(1000);
        let conditions = self.alert_conditions(now).await?;
        let open: Vec<OpenAlert> = self
            .inner
            .store
            .open_alerts()
            .await?
            .iter()
            .map(|record| record.as_open())
            .collect();
        let hold = self.inner.config.operator.alerts.hold_seconds;
        for transition in evaluate(now, &open, &conditions, hold) {
            self.apply_alert_transition(transition).await?;
        }
        Ok(())
    }

    async fn apply_alert_transition(&self, transition: Transition) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let at = |seconds: i64| Timestamp::from_unix_millis(seconds.saturating_mul(1000));
        match transition {
            Transition::Open(alert) => {
                // `false`: another evaluator opened it first, and notifies if it fired.
                if store.open_alert(&alert).await? && alert.fired_at.is_some() {
                    self.notify_alert(NoticeKind::Firing, &alert, alert.since)
                        .await?;
                }
            }
            Transition::Fire { key, at: when } => {
                if let Some(record) = store.fire_alert(&key, at(when)).await? {
                    tracing::warn!(alert = %key, "alert firing");
                    self.notify_alert(NoticeKind::Firing, &record.as_open(), when)
                        .await?;
                }
            }
            Transition::Resolve { key, at: when } => {
                if let Some(record) = store.resolve_alert(&key, at(when)).await? {
                    tracing::info!(alert = %key, "alert resolved");
                    self.notify_alert(NoticeKind::Resolved, &record.as_open(), when)
                        .await?;
                }
            }
            Transition::Drop { key } => {
                store.drop_pending_alert(&key).await?;
            }
        }
        Ok(())
    }

    /// Queues the notice in each configured outbox, once per alert occurrence.
    async fn notify_alert(
        &self,
        notice: NoticeKind,
        alert: &OpenAlert,
        at: i64,
    ) -> Result<(), ControlError> {
        let settings = &self.inner.config.operator.alerts;
        let dedupe = notice_dedupe_key(notice, alert);
        if let Some(to) = &settings.email {
            let (subject, text) = notice_mail(notice, alert, at);
            let html = format!(
                "<!doctype html><html><body><pre style=\"font-family:monospace\">{}</pre>\
                 </body></html>",
                stackbox_core::render::html::html_escape(&text)
            );
            let email = notify::Email {
                to: to.clone(),
                subject,
                text,
                html,
            };
            // Operator mail: not tied to a client, so destroying the client keeps it.
            self.queue_mail(dedupe.clone(), None, email).await?;
        }
        if settings.webhook_url.is_some() {
            let body = notice_body(notice, alert, at).to_string();
            if self.inner.store.enqueue_webhook(&dedupe, &body).await? {
                self.inner.webhook_waiting.notify_one();
            }
        }
        Ok(())
    }

    /// The conditions that hold now.
    async fn alert_conditions(&self, now: i64) -> Result<Vec<Condition>, ControlError> {
        let settings = &self.inner.config.operator.alerts;
        let store = &self.inner.store;
        let clients = store.every_client(ClientFilter::default()).await?;
        let mut conditions = Vec::new();

        for client in &clients {
            if client.state == ClientState::Degraded {
                let why = client
                    .state_reason
                    .as_deref()
                    .unwrap_or("a service is not healthy");
                conditions.push(Condition::of_client(
                    AlertKind::ClientDegraded,
                    client.id.as_str(),
                    None,
                    format!("{} ({}) is degraded: {why}", client.id, client.domain),
                ));
            }
        }

        {
            let observations = self.observations();
            for (client, ring) in &observations.usage {
                for service in ring.services() {
                    let sample = &service.sample;
                    let Some(limit) = sample.memory_limit_bytes.filter(|l| *l > 0) else {
                        continue;
                    };
                    let share = sample.memory_working_set_bytes as f64 / limit as f64;
                    if share >= settings.memory_ratio {
                        conditions.push(Condition::of_client(
                            AlertKind::MemoryNearLimit,
                            client.as_str(),
                            Some(&sample.service),
                            format!(
                                "{} of {client} uses {:.0}% of its {} memory limit ({})",
                                sample.service,
                                share * 100.0,
                                mebibytes(limit),
                                mebibytes(sample.memory_working_set_bytes),
                            ),
                        ));
                    }
                }
            }
            let within = settings.restarts_within_seconds as i64;
            for (client, services) in &observations.restarts {
                for (service, stops) in services {
                    let recent = stops.iter().filter(|at| now - **at <= within).count();
                    if recent >= settings.restarts as usize {
                        conditions.push(Condition::of_client(
                            AlertKind::RestartLoop,
                            client.as_str(),
                            Some(service),
                            format!(
                                "{service} of {client} stopped and was started again {recent} \
                                 times in the last {}; see `stackbox logs {client} {service}`",
                                span_of(within)
                            ),
                        ));
                    }
                }
            }
            for (client, hostnames) in observations.probes.iter() {
                for (hostname, probes) in hostnames {
                    let Some(expires) = probes.last.certificate_expires_at else {
                        continue;
                    };
                    let days = stackbox_core::probes::days_left(expires, now);
                    if days < i64::from(settings.certificate_days) {
                        conditions.push(Condition::of_client(
                            AlertKind::CertificateExpiring,
                            client.as_str(),
                            Some(hostname),
                            format!(
                                "the certificate of {hostname} ({client}) expires in {days} \
                                 day(s), on {}; its renewal is not happening",
                                stackbox_core::calendar::rfc3339_seconds(expires)
                            ),
                        ));
                    }
                }
            }
            if let Some((used, total)) = observations.engine_disk.filter(|(_, t)| *t > 0) {
                let share = used as f64 / total as f64;
                if share >= settings.disk_ratio {
                    conditions.push(Condition::of_host(
                        AlertKind::DiskNearFull,
                        format!(
                            "the engine's disk is {:.0}% full ({} of {} GiB used)",
                            share * 100.0,
                            gibibytes(used),
                            gibibytes(total)
                        ),
                    ));
                }
            }
        }

        let every_hours = self.inner.config.operator.backup.every_hours;
        let last_success: HashMap<ClientId, i64> = store
            .last_succeeded_backup_times()
            .await?
            .into_iter()
            .map(|(id, at)| (id, at.unix_millis().div_euclid(1000)))
            .collect();
        let known: BTreeMap<&ClientId, &ClientRecord> =
            clients.iter().map(|c| (&c.id, c)).collect();
        for client in clients.iter().filter(|c| c.state == ClientState::Running) {
            let last = last_success.get(&client.id).copied();
            let since = client.created_at.unix_millis().div_euclid(1000);
            if stackbox_core::backup::backup_missing(last, since, now, every_hours) {
                let age = match last {
                    Some(at) => format!(
                        "its last successful backup is {} hours old",
                        (now - at) / 3600
                    ),
                    None => "it has never been backed up".to_string(),
                };
                conditions.push(Condition::of_client(
                    AlertKind::BackupMissing,
                    client.id.as_str(),
                    None,
                    format!("{} is backed up every {every_hours} h but {age}", client.id),
                ));
            }
        }
        for (client, started, error) in store.latest_backup_failures().await? {
            // A destroyed client's retained backups are not an incident of a live client.
            if !known.contains_key(&client) {
                continue;
            }
            conditions.push(Condition::of_client(
                AlertKind::BackupFailed,
                client.as_str(),
                None,
                format!(
                    "the backup of {client} started at {} failed: {}",
                    stackbox_core::calendar::rfc3339_seconds(
                        started.unix_millis().div_euclid(1000)
                    ),
                    error.as_deref().unwrap_or("no reason recorded")
                ),
            ));
        }

        // A paid sign-up still not provisioned after the hold time lost the race for its
        // domain (provisioning takes a moment): the buyer was told, the operator refunds.
        for signup in store.paid_signups_not_provisioned().await? {
            let domain = signup
                .spec()
                .map(|spec| spec.domain.to_string())
                .unwrap_or_else(|_| "its domain".to_string());
            conditions.push(Condition {
                key: format!("{}:{}", AlertKind::SignupNotProvisioned.as_str(), signup.id),
                kind: AlertKind::SignupNotProvisioned,
                client: None,
                summary: format!(
                    "sign-up {} by {} paid (customer {}, subscription {}) but {domain} was \
                     taken by a sign-up that paid first; refund it and cancel the subscription \
                     in Stripe, which closes this alert",
                    signup.id,
                    signup.email.as_str(),
                    signup.customer_id.as_deref().unwrap_or("unknown"),
                    signup.subscription_id.as_deref().unwrap_or("unknown"),
                ),
            });
        }

        let failed_mail = store
            .count_mail_by_status()
            .await?
            .get(&MailStatus::Failed)
            .copied()
            .unwrap_or(0);
        if failed_mail > 0 {
            conditions.push(Condition::of_host(
                AlertKind::MailFailing,
                format!(
                    "{failed_mail} e-mail(s) could not be sent and were given up; check the \
                     SMTP settings, then send them again"
                ),
            ));
        }
        Ok(conditions)
    }

    async fn deliver_due_webhooks(
        &self,
        client: &WebhookClient,
        url: &str,
        secret_file: &str,
    ) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let now = Timestamp::now();
        let due = store.due_webhooks(now, WEBHOOK_BATCH).await?;
        if due.is_empty() {
            return Ok(());
        }
        // Read at each round: a rotated secret is used without a restart. Never logged.
        let secret = match std::fs::read(secret_file) {
            Ok(bytes) => trimmed_secret(bytes),
            Err(error) => {
                let problem = format!(
                    "alerts.webhook_secret_file {secret_file}: cannot be read ({})",
                    error.kind()
                );
                for webhook in &due {
                    self.webhook_failed(&webhook.id, webhook.attempts, &problem, true)
                        .await?;
                }
                return Ok(());
            }
        };
        for webhook in due {
            let unix = Timestamp::now().unix_millis().div_euclid(1000);
            match client
                .deliver(url, &secret, &webhook.id, webhook.body.as_bytes(), unix)
                .await
            {
                Ok(_) => store.mark_webhook_sent(&webhook.id).await?,
                Err(error) => {
                    tracing::warn!(delivery = %webhook.id, %error, "alert webhook not delivered");
                    self.webhook_failed(
                        &webhook.id,
                        webhook.attempts,
                        &error.to_string(),
                        error.is_retryable(),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn webhook_failed(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
        retryable: bool,
    ) -> Result<(), ControlError> {
        let store = &self.inner.store;
        if !retryable || attempts + 1 >= WEBHOOK_ATTEMPTS {
            store.mark_webhook_failed(id, error).await?;
        } else {
            let base = i64::try_from(self.inner.config.webhook_retry_base.as_secs()).unwrap_or(30);
            let next = Timestamp::from_unix_millis(
                Timestamp::now().unix_millis()
                    + webhook_retry_delay_seconds(base, attempts).saturating_mul(1000),
            );
            store.mark_webhook_retry(id, next, error).await?;
        }
        Ok(())
    }
}

/// The secret file's bytes without a trailing newline (an editor's or `echo`'s).
fn trimmed_secret(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

/// "10 minutes", "2 hours", "45 seconds".
fn span_of(seconds: i64) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("{} hour(s)", s / 3600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} seconds"),
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn gibibytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_retries_back_off_from_thirty_seconds_doubling_to_an_hour() {
        let delays: Vec<i64> = (0..9).map(|n| webhook_retry_delay_seconds(30, n)).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(webhook_retry_delay_seconds(30, u32::MAX), 3600);
        assert_eq!(webhook_retry_delay_seconds(0, 0), 1);
    }

    #[test]
    fn a_secret_files_trailing_newline_is_not_part_of_the_secret() {
        assert_eq!(trimmed_secret(b"s3cret\r\n".to_vec()), b"s3cret");
        assert_eq!(trimmed_secret(b"s3cret".to_vec()), b"s3cret");
    }
}
