//! Alerts: conditions the control plane observes (a client degraded, a service's memory near
//! its limit, the engine's disk filling, a backup missing or failed, mail failing), held for a
//! duration before they fire, one open alert per condition key (de-duplicated), and a
//! recovery notice when the condition is gone. Pure: the control plane gathers the
//! conditions, [`evaluate`] says what changes, the store keeps the open alerts and the
//! outboxes deliver the notices.
//!
//! A condition that clears before its hold time passed never fires and sends nothing (a
//! brief spike is not an incident); one that fired sends exactly one firing notice and one
//! recovery notice, each de-duplicated by the alert's id in the outboxes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::client::Email;
use crate::CoreError;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// The monitor marked the client degraded (a service failing its health check after
    /// restarts), with the monitor's reason.
    ClientDegraded,
    /// A service's memory working set at or above `memory_ratio` of its limit.
    MemoryNearLimit,
    /// The engine's data filesystem at or above `disk_ratio` full.
    DiskNearFull,
    /// A running client's last successful backup is older than the schedule allows.
    BackupMissing,
    /// A client's latest backup failed.
    BackupFailed,
    /// Mail that could not be sent (given up, or still failing after several attempts).
    MailFailing,
    /// A service of a client that stopped and was started again by the engine `restarts`
    /// times or more within `restarts_within` (a crash loop).
    RestartLoop,
    /// The certificate a client's hostname presents from outside expires within
    /// `certificate_days` (the renewal is not happening).
    CertificateExpiring,
    /// A paid sign-up that could not become a client (its domain was taken by another
    /// sign-up that paid first): the buyer was told, the operator must refund it.
    SignupNotProvisioned,
}

impl AlertKind {
    pub const ALL: [AlertKind; 9] = [
        AlertKind::ClientDegraded,
        AlertKind::MemoryNearLimit,
        AlertKind::DiskNearFull,
        AlertKind::BackupMissing,
        AlertKind::BackupFailed,
        AlertKind::MailFailing,
        AlertKind::RestartLoop,
        AlertKind::CertificateExpiring,
        AlertKind::SignupNotProvisioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ClientDegraded => "client-degraded",
            AlertKind::MemoryNearLimit => "memory-near-limit",
            AlertKind::DiskNearFull => "disk-near-full",
            AlertKind::BackupMissing => "backup-missing",
            AlertKind::BackupFailed => "backup-failed",
            AlertKind::MailFailing => "mail-failing",
            AlertKind::RestartLoop => "restart-loop",
            AlertKind::CertificateExpiring => "certificate-expiring",
            AlertKind::SignupNotProvisioned => "signup-not-provisioned",
        }
    }

    pub fn from_name(name: &str) -> Option<AlertKind> {
        AlertKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// For people: "memory near its limit".
    pub fn title(self) -> &'static str {
        match self {
            AlertKind::ClientDegraded => "client degraded",
            AlertKind::MemoryNearLimit => "memory near its limit",
            AlertKind::DiskNearFull => "engine disk nearly full",
            AlertKind::BackupMissing => "backup missing",
            AlertKind::BackupFailed => "backup failed",
            AlertKind::MailFailing => "mail failing",
            AlertKind::RestartLoop => "service restarting in a loop",
            AlertKind::CertificateExpiring => "certificate expiring",
            AlertKind::SignupNotProvisioned => "paid sign-up not provisioned",
        }
    }
}

/// A condition that holds now. Its `key` identifies it across evaluations: the same key is
/// the same alert (`memory-near-limit:<client>:<service>`), so a condition seen again and
/// again opens one alert, not one per evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub key: String,
    pub kind: AlertKind,
    pub client: Option<String>,
    /// For people, without a secret: what and how much ("website at 93% of 64.0 MiB").
    pub summary: String,
}

impl Condition {
    /// A condition of a client (and optionally one of its services or volumes).
    pub fn of_client(kind: AlertKind, client: &str, part: Option<&str>, summary: String) -> Self {
        let key = match part {
            Some(part) => format!("{}:{client}:{part}", kind.as_str()),
            None => format!("{}:{client}", kind.as_str()),
        };
        Condition {
            key,
            kind,
            client: Some(client.to_string()),
            summary,
        }
    }

    /// A condition of the host or the control plane, not of one client.
    pub fn of_host(kind: AlertKind, summary: String) -> Self {
        Condition {
            key: kind.as_str().to_string(),
            kind,
            client: None,
            summary,
        }
    }
}

/// An open alert as the store keeps it: pending (held, not fired yet) or firing.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAlert {
    pub key: String,
    pub kind: AlertKind,
    pub client: Option<String>,
    pub summary: String,
    /// Unix seconds since the condition holds.
    pub since: i64,
    /// Unix seconds it fired; `None` while pending.
    pub fired_at: Option<i64>,
}

/// What one evaluation changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A new condition: record it pending (`fired_at` already set when the hold is zero,
    /// then it is also a firing: notify).
    Open(OpenAlert),
    /// A pending alert held long enough: it fires now (notify).
    Fire { key: String, at: i64 },
    /// A firing alert whose condition is gone: resolved now (notify the recovery).
    Resolve { key: String, at: i64 },
    /// A pending alert whose condition went before it fired: forget it (no notice).
    Drop { key: String },
}

/// The transitions from the open alerts and the conditions that hold at `now`.
/// `hold_seconds`: how long a condition must hold before it fires.
pub fn evaluate(
    now: i64,
    open: &[OpenAlert],
    conditions: &[Condition],
    hold_seconds: u64,
) -> Vec<Transition> {
    let hold = i64::try_from(hold_seconds).unwrap_or(i64::MAX);
    let mut seen = BTreeSet::new();
    let mut transitions = Vec::new();
    for condition in conditions {
        if !seen.insert(condition.key.as_str()) {
            continue; // the same condition twice in one evaluation is one alert
        }
        match open.iter().find(|alert| alert.key == condition.key) {
            Some(alert) => {
                if alert.fired_at.is_none() && now.saturating_sub(alert.since) >= hold {
                    transitions.push(Transition::Fire {
                        key: alert.key.clone(),
                        at: now,
                    });
                }
            }
            None => transitions.push(Transition::Open(OpenAlert {
                key: condition.key.clone(),
                kind: condition.kind,
                client: condition.client.clone(),
                summary: condition.summary.clone(),
                since: now,
                fired_at: (hold == 0).then_some(now),
            })),
        }
    }
    for alert in open {
        if seen.contains(alert.key.as_str()) {
            continue;
        }
        transitions.push(match alert.fired_at {
            Some(_) => Transition::Resolve {
                key: alert.key.clone(),
                at: now,
            },
            None => Transition::Drop {
                key: alert.key.clone(),
            },
        });
    }
    transitions
}

/// Whether a notice says an alert fired or recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Firing,
    Resolved,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Firing => "firing",
            NoticeKind::Resolved => "resolved",
        }
    }
}

/// The e-mail of a notice: subject and text (plain text only: it goes to the operator).
pub fn notice_mail(notice: NoticeKind, alert: &OpenAlert, at: i64) -> (String, String) {
    let scope = match &alert.client {
        Some(client) => format!("client {client}"),
        None => "the host".to_string(),
    };
    let word = match notice {
        NoticeKind::Firing => "FIRING",
        NoticeKind::Resolved => "RESOLVED",
    };
    let subject = one_line(&format!(
        "[StackBox] {word}: {} ({scope})",
        alert.kind.title()
    ));
    let since = crate::calendar::rfc3339_seconds(alert.since);
    let text = match notice {
        NoticeKind::Firing => format!(
            "{} for {scope} since {since}.\n\n{}\n\nAlert: {}\n\nA recovery notice follows when it is over. \
             Open alerts: `stackbox alerts` or GET /v1/alerts.\n",
            capitalized(alert.kind.title()),
            alert.summary,
            alert.key
        ),
        NoticeKind::Resolved => format!(
            "Resolved at {}: {} for {scope} (since {since}) is over.\n\nLast seen: {}\n\nAlert: {}\n",
            crate::calendar::rfc3339_seconds(at),
            alert.kind.title(),
            alert.summary,
            alert.key
        ),
    };
    (subject, text)
}

/// The webhook body of a notice (JSON).
pub fn notice_body(notice: NoticeKind, alert: &OpenAlert, at: i64) -> serde_json::Value {
    serde_json::json!({
        "event": format!("alert.{}", notice.as_str()),
        "at": crate::calendar::rfc3339_seconds(at),
        "alert": {
            "key": alert.key,
            "kind": alert.kind.as_str(),
            "client_id": alert.client,
            "summary": alert.summary,
            "since": crate::calendar::rfc3339_seconds(alert.since),
            "fired_at": alert.fired_at.map(crate::calendar::rfc3339_seconds),
        }
    })
}

/// A notice's dedupe key in the outboxes: one firing and one recovery per alert occurrence
/// (an alert that resolves and comes back later is a new occurrence, with a new `since`).
pub fn notice_dedupe_key(notice: NoticeKind, alert: &OpenAlert) -> String {
    format!("alert:{}:{}:{}", notice.as_str(), alert.key, alert.since)
}

fn one_line(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The operator file's `[alerts]`: thresholds, the hold time and where notices go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSettings {
    /// How long a condition must hold before it fires (`for`, 2 minutes).
    pub hold_seconds: u64,
    /// How often the conditions are evaluated (`every`, 15 s).
    pub every_seconds: u64,
    /// A service's working set over its limit that counts as near (`memory_ratio`, 0.9).
    pub memory_ratio: f64,
    /// The engine disk's used share that counts as nearly full (`disk_ratio`, 0.9).
    pub disk_ratio: f64,
    /// Restarts of one service within `restarts_within` that count as a loop (`restarts`, 3).
    pub restarts: u32,
    /// The window those restarts are counted in (`restarts_within`, 10 minutes).
    pub restarts_within_seconds: u64,
    /// A certificate expiring in fewer days than this is an alert (`certificate_days`, 14;
    /// Let's Encrypt renews 30 days before expiry, so 14 means renewal failed for two weeks).
    pub certificate_days: u32,
    /// Where notices are mailed (`email`); none when unset.
    pub email: Option<Email>,
    /// Where notices are posted, signed (`webhook_url`); none when unset.
    pub webhook_url: Option<String>,
    /// The file holding the webhook's signing secret (`webhook_secret_file`, mode 0600):
    /// never the secret itself in the operator file.
    pub webhook_secret_file: Option<String>,
}

impl Default for AlertSettings {
    fn default() -> AlertSettings {
        AlertSettings {
            hold_seconds: 120,
            every_seconds: 15,
            memory_ratio: 0.9,
            disk_ratio: 0.9,
            restarts: 3,
            restarts_within_seconds: 600,
            certificate_days: 14,
            email: None,
            webhook_url: None,
            webhook_secret_file: None,
        }
    }
}

/// The `[alerts]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsFile {
    #[serde(rename = "for")]
    hold: Option<String>,
    every: Option<String>,
    memory_ratio: Option<f64>,
    disk_ratio: Option<f64>,
    restarts: Option<u32>,
    restarts_within: Option<String>,
    certificate_days: Option<u32>,
    email: Option<String>,
    webhook_url: Option<String>,
    webhook_secret_file: Option<String>,
}

impl AlertsFile {
    pub(crate) fn validate(self) -> Result<AlertSettings, CoreError> {
        let mut settings = AlertSettings::default();
        if let Some(text) = self.hold {
            let seconds = crate::onboarding::duration("alerts.for", &text)?;
            if seconds > 86_400 {
                return Err(CoreError::invalid(
                    "alerts.for",
                    "must be at most 1d; 2m suits most conditions",
                ));
            }
            settings.hold_seconds = seconds;
        }
        if let Some(text) = self.every {
            let seconds = crate::onboarding::duration("alerts.every", &text)?;
            if !(1..=3600).contains(&seconds) {
                return Err(CoreError::invalid(
                    "alerts.every",
                    "must be between 1s and 1h; 15s suits most hosts",
                ));
            }
            settings.every_seconds = seconds;
        }
        for (field, value, target) in [
            (
                "alerts.memory_ratio",
                self.memory_ratio,
                &mut settings.memory_ratio,
            ),
            (
                "alerts.disk_ratio",
                self.disk_ratio,
                &mut settings.disk_ratio,
            ),
        ] {
            if let Some(value) = value {
                if !(value > 0.0 && value <= 1.0) {
                    return Err(CoreError::invalid(
                        field,
                        format!("{value} is not a share between 0 and 1, such as 0.9"),
                    ));
                }
                *target = value;
            }
        }
        if let Some(restarts) = self.restarts {
            if !(1..=1000).contains(&restarts) {
                return Err(CoreError::invalid(
                    "alerts.restarts",
                    format!("{restarts} is not between 1 and 1000; 3 suits most services"),
                ));
            }
            settings.restarts = restarts;
        }
        if let Some(text) = self.restarts_within {
            let seconds = crate::onboarding::duration("alerts.restarts_within", &text)?;
            if !(1..=86_400).contains(&seconds) {
                return Err(CoreError::invalid(
                    "alerts.restarts_within",
                    "must be between 1s and 1d; 10m suits most services",
                ));
            }
            settings.restarts_within_seconds = seconds;
        }
        if let Some(days) = self.certificate_days {
            if !(1..=365).contains(&days) {
                return Err(CoreError::invalid(
                    "alerts.certificate_days",
                    format!("{days} is not between 1 and 365; 14 suits Let's Encrypt"),
                ));
            }
            settings.certificate_days = days;
        }
        if let Some(text) = self.email {
            settings.email = Some(Email::parse("alerts.email", &text)?);
        }
        match (self.webhook_url, self.webhook_secret_file) {
            (None, None) => {}
            (Some(url), Some(file)) => {
                let url = url.trim().to_string();
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
                if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
                    return Err(CoreError::invalid(
                        "alerts.webhook_url",
                        format!("{url:?} is not an http:// or https:// URL with a host"),
                    ));
                }
                if file.trim().is_empty() {
                    return Err(CoreError::invalid(
                        "alerts.webhook_secret_file",
                        "is empty; name the file that holds the signing secret (mode 0600)",
                    ));
                }
                settings.webhook_url = Some(url);
                settings.webhook_secret_file = Some(file.trim().to_string());
            }
            (Some(_), None) => {
                return Err(CoreError::invalid(
                    "alerts.webhook_secret_file",
                    "is missing: a webhook is always signed; name the file that holds the \
                     signing secret (mode 0600)",
                ))
            }
            (None, Some(_)) => {
                return Err(CoreError::invalid(
                    "alerts.webhook_url",
                    "is missing: webhook_secret_file is set but there is no URL to post to",
                ))
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(client: &str) -> Condition {
        Condition::of_client(
            AlertKind::MemoryNearLimit,
            client,
            Some("website"),
            "website at 93% of 64.0 MiB".to_string(),
        )
    }

    fn apply(open: &mut Vec<OpenAlert>, transitions: &[Transition]) {
        for transition in transitions {
            match transition {
                Transition::Open(alert) => open.push(alert.clone()),
                Transition::Fire { key, at } => {
                    open.iter_mut().find(|a| &a.key == key).unwrap().fired_at = Some(*at)
                }
                Transition::Resolve { key, .. } | Transition::Drop { key } => {
                    open.retain(|a| &a.key != key)
                }
            }
        }
    }

    #[test]
    fn a_condition_fires_once_after_its_hold_time_and_resolves_once_when_gone() {
        let mut open = Vec::new();
        let conditions = [memory("a-00000001")];
        let t = evaluate(1000, &open, &conditions, 120);
        assert!(matches!(&t[..], [Transition::Open(a)] if a.fired_at.is_none() && a.since == 1000));
        apply(&mut open, &t);
        // Still held, not long enough: nothing.
        assert_eq!(evaluate(1119, &open, &conditions, 120), []);
        let t = evaluate(1120, &open, &conditions, 120);
        assert_eq!(
            t,
            [Transition::Fire {
                key: "memory-near-limit:a-00000001:website".to_string(),
                at: 1120
            }]
        );
        apply(&mut open, &t);
        // Firing and still there: nothing more (de-duplicated).
        assert_eq!(evaluate(1200, &open, &conditions, 120), []);
        assert_eq!(evaluate(5000, &open, &conditions, 120), []);
        let t = evaluate(5015, &open, &[], 120);
        assert!(matches!(&t[..], [Transition::Resolve { at: 5015, .. }]));
        apply(&mut open, &t);
        assert!(open.is_empty());
        assert_eq!(evaluate(5030, &open, &[], 120), []);
    }

    #[test]
    fn a_condition_gone_before_its_hold_time_is_dropped_without_a_notice() {
        let mut open = Vec::new();
        let t = evaluate(0, &open, &[memory("a-00000001")], 120);
        apply(&mut open, &t);
        assert_eq!(
            evaluate(60, &open, &[], 120),
            [Transition::Drop {
                key: "memory-near-limit:a-00000001:website".to_string()
            }]
        );
    }

    #[test]
    fn a_zero_hold_fires_at_once_and_the_same_key_twice_is_one_alert() {
        let t = evaluate(7, &[], &[memory("a-00000001"), memory("a-00000001")], 0);
        assert!(matches!(&t[..], [Transition::Open(a)] if a.fired_at == Some(7)));
        let t = evaluate(7, &[], &[memory("a-00000001"), memory("b-00000002")], 0);
        assert_eq!(t.len(), 2, "one per client");
    }

    #[test]
    fn notices_name_the_alert_and_their_dedupe_keys_differ_per_occurrence() {
        let alert = OpenAlert {
            key: "client-degraded:a-00000001".to_string(),
            kind: AlertKind::ClientDegraded,
            client: Some("a-00000001".to_string()),
            summary: "website failing its health check\r\nafter 3 restarts".to_string(),
            since: 1_740_830_400,
            fired_at: Some(1_740_830_520),
        };
        let (subject, text) = notice_mail(NoticeKind::Firing, &alert, 1_740_830_520);
        assert_eq!(
            subject,
            "[StackBox] FIRING: client degraded (client a-00000001)"
        );
        assert!(text.contains("since 2025-03-01T12:00:00Z"), "{text}");
        assert!(text.contains("website failing its health check"), "{text}");
        let (subject, _) = notice_mail(NoticeKind::Resolved, &alert, 1_740_830_600);
        assert!(subject.starts_with("[StackBox] RESOLVED: client degraded"));
        let body = notice_body(NoticeKind::Resolved, &alert, 1_740_830_600);
        assert_eq!(body["event"], "alert.resolved");
        assert_eq!(body["alert"]["kind"], "client-degraded");
        assert_eq!(body["alert"]["fired_at"], "2025-03-01T12:02:00Z");
        let firing = notice_dedupe_key(NoticeKind::Firing, &alert);
        assert_ne!(firing, notice_dedupe_key(NoticeKind::Resolved, &alert));
        let later = OpenAlert {
            since: alert.since + 3600,
            ..alert.clone()
        };
        assert_ne!(firing, notice_dedupe_key(NoticeKind::Firing, &later));
        for kind in AlertKind::ALL {
            assert_eq!(AlertKind::from_name(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn the_alerts_table_is_validated_naming_each_field() {
        let parse = |text: &str| -> Result<AlertSettings, CoreError> {
            let file: AlertsFile = toml::from_str(text).unwrap();
            file.validate()
        };
        let settings = parse(
            "for = \"30s\"\nevery = \"5s\"\nmemory_ratio = 0.8\nemail = \"ops@host.example\"\n\
             webhook_url = \"https://hooks.example/stackbox\"\nwebhook_secret_file = \"/etc/s\"\n",
        )
        .unwrap();
        assert_eq!(
            (
                settings.hold_seconds,
                settings.every_seconds,
                settings.memory_ratio
            ),
            (30, 5, 0.8)
        );
        assert_eq!(settings.webhook_secret_file.as_deref(), Some("/etc/s"));
        let loops =
            parse("restarts = 5\nrestarts_within = \"30m\"\ncertificate_days = 7\n").unwrap();
        assert_eq!(
            (
                loops.restarts,
                loops.restarts_within_seconds,
                loops.certificate_days
            ),
            (5, 1800, 7)
        );
        for (text, field) in [
            ("restarts = 0", "alerts.restarts"),
            ("restarts_within = \"2d\"", "alerts.restarts_within"),
            ("certificate_days = 0", "alerts.certificate_days"),
            ("for = \"soon\"", "alerts.for"),
            ("for = \"2d\"", "alerts.for"),
            ("every = \"0s\"", "alerts.every"),
            ("memory_ratio = 1.5", "alerts.memory_ratio"),
            ("disk_ratio = 0.0", "alerts.disk_ratio"),
            ("email = \"not an address\"", "alerts.email"),
            (
                "webhook_url = \"https://h.example\"",
                "alerts.webhook_secret_file",
            ),
            ("webhook_secret_file = \"/etc/s\"", "alerts.webhook_url"),
            (
                "webhook_url = \"ftp://h.example\"\nwebhook_secret_file = \"/etc/s\"",
                "alerts.webhook_url",
            ),
            (
                "webhook_url = \"https:///path\"\nwebhook_secret_file = \"/etc/s\"",
                "alerts.webhook_url",
            ),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }
}
