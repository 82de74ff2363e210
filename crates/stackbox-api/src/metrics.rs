//! `GET /metrics`: the Prometheus text exposition format, version 0.0.4.
//!
//! Format rules followed (from the format's specification): one `# HELP` and one `# TYPE`
//! line per metric family before its samples, the samples of a family together; label values
//! escape `\`, `"` and line feeds; a histogram has cumulative `_bucket{le="…"}` samples in
//! increasing `le` order ending with `le="+Inf"`, whose value equals `_count`, then `_sum` and
//! `_count`; the body ends with a line feed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::control::MetricsSnapshot;
use crate::dto::{ClientState, DeploymentOutcome};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of the duration histograms' buckets (before `+Inf`): from a quick
/// step (rendering takes milliseconds) to a slow first deploy (image pulls, installers).
pub const DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// A histogram of durations over [`DURATION_BUCKETS_SECONDS`].
///
/// Build it from samples with [`DurationHistogram::observe`], or from counts computed
/// elsewhere (for example in SQL) with [`DurationHistogram::from_bucket_counts`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// Per bucket, not cumulative; the last one is above the highest bound.
    counts: [u64; DURATION_BUCKETS_SECONDS.len() + 1],
    sum_seconds: f64,
}

impl DurationHistogram {
    pub fn new() -> DurationHistogram {
        DurationHistogram::default()
    }

    /// Adds one duration. Negative durations (a clock stepped back) count as 0; NaN and
    /// infinities are ignored, so the output always parses.
    pub fn observe(&mut self, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let seconds = seconds.max(0.0);
        self.counts[Self::bucket_of(seconds)] += 1;
        self.sum_seconds += seconds;
    }

    /// The histogram of these durations.
    pub fn from_samples(samples: impl IntoIterator<Item = f64>) -> DurationHistogram {
        let mut histogram = DurationHistogram::new();
        for seconds in samples {
            histogram.observe(seconds);
        }
        histogram
    }

    /// From per-bucket counts (not cumulative): `counts[i]` durations in
    /// `(DURATION_BUCKETS_SECONDS[i-1], DURATION_BUCKETS_SECONDS[i]]`, and one more entry at
    /// the end for those above the last bound. `None` when `counts` has the wrong length or
    /// `sum_seconds` is not a finite, non-negative number.
    pub fn from_bucket_counts(counts: &[u64], sum_seconds: f64) -> Option<DurationHistogram> {
        if !sum_seconds.is_finite() || sum_seconds < 0.0 {
            return None;
        }
        Some(DurationHistogram {
            counts: counts.try_into().ok()?,
            sum_seconds,
        })
    }

    /// Which bucket a duration falls in: the first whose bound is not below it.
    pub fn bucket_of(seconds: f64) -> usize {
        DURATION_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS_SECONDS.len())
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    fn write(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0u64;
        let bounds = DURATION_BUCKETS_SECONDS
            .iter()
            .map(|bound| format_float(*bound))
            .chain(std::iter::once("+Inf".to_string()));
        for (count, bound) in self.counts.iter().zip(bounds) {
            cumulative += count;
            let mut with_le = labels.to_vec();
            with_le.push(("le", &bound));
            sample(
                out,
                &format!("{name}_bucket"),
                &with_le,
                &cumulative.to_string(),
            );
        }
        sample(
            out,
            &format!("{name}_sum"),
            labels,
            &format_float(self.sum_seconds),
        );
        sample(
            out,
            &format!("{name}_count"),
            labels,
            &cumulative.to_string(),
        );
    }
}

/// The outbox statuses, each written (0 when absent) so every series exists from the start.
pub const MAIL_STATUSES: [&str; 4] = ["pending", "sending", "sent", "failed"];

/// The backup statuses (the names of [`crate::BackupStatus`]), each written (0 when absent).
pub const BACKUP_STATUSES: [&str; 3] = ["running", "succeeded", "failed"];

/// Renders a snapshot in the text exposition format.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();

    family(
        &mut out,
        "stackbox_clients",
        "gauge",
        "Clients by state, as the control plane last saw them.",
    );
    for state in ClientState::ALL {
        let value = snapshot.clients_by_state.get(state).copied().unwrap_or(0);
        sample(
            &mut out,
            "stackbox_clients",
            &[("state", state.as_str())],
            &value.to_string(),
        );
    }

    family(
        &mut out,
        "stackbox_mail",
        "gauge",
        "Mail in the outbox by status (pending, sending, sent, failed): failed mail needs the operator.",
    );
    for status in MAIL_STATUSES {
        let value = snapshot.mail_by_status.get(status).copied().unwrap_or(0);
        sample(
            &mut out,
            "stackbox_mail",
            &[("status", status)],
            &value.to_string(),
        );
    }

    family(
        &mut out,
        "stackbox_clients_missing_backup",
        "gauge",
        "Clients whose last successful backup (without one, their creation) is older than the schedule allows.",
    );
    sample(
        &mut out,
        "stackbox_clients_missing_backup",
        &[],
        &snapshot.clients_missing_backup.to_string(),
    );

    family(
        &mut out,
        "stackbox_backups",
        "gauge",
        "Backups in the store by status (running, succeeded, failed).",
    );
    for status in BACKUP_STATUSES {
        let value = snapshot.backups_by_status.get(status).copied().unwrap_or(0);
        sample(
            &mut out,
            "stackbox_backups",
            &[("status", status)],
            &value.to_string(),
        );
    }

    family(
        &mut out,
        "stackbox_oldest_successful_backup_age_seconds",
        "gauge",
        "Age of the oldest last successful backup across clients; absent while no client has one.",
    );
    // Left out rather than written as 0 (which would read as "just backed up") or NaN (which
    // alert rules compare as false); a negative age is a clock stepped back.
    if let Some(age) = snapshot
        .oldest_successful_backup_age_seconds
        .filter(|age| age.is_finite())
    {
        sample(
            &mut out,
            "stackbox_oldest_successful_backup_age_seconds",
            &[],
            &format_float(age.max(0.0)),
        );
    }

    family(
        &mut out,
        "stackbox_deployments_total",
        "counter",
        "Finished deployments by outcome.",
    );
    for outcome in DeploymentOutcome::ALL {
        let value = snapshot
            .deployments_by_outcome
            .get(outcome)
            .copied()
            .unwrap_or(0);
        sample(
            &mut out,
            "stackbox_deployments_total",
            &[("outcome", outcome.as_str())],
            &value.to_string(),
        );
    }

    family(
        &mut out,
        "stackbox_deployment_duration_seconds",
        "histogram",
        "Duration of finished deployments, from start to finish.",
    );
    snapshot
        .deployment_duration
        .write(&mut out, "stackbox_deployment_duration_seconds", &[]);

    family(
        &mut out,
        "stackbox_step_duration_seconds",
        "histogram",
        "Duration of finished deployment steps, by step.",
    );
    let steps: &BTreeMap<String, DurationHistogram> = &snapshot.step_duration;
    for (step, histogram) in steps {
        histogram.write(
            &mut out,
            "stackbox_step_duration_seconds",
            &[("step", step)],
        );
    }
    render_clients(&mut out, snapshot);
    out
}

/// One gauge or counter family with a sample per (labels, value).
fn series(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(Vec<(&str, &str)>, String)],
) {
    family(out, name, kind, help);
    for (labels, value) in samples {
        sample(out, name, labels, value);
    }
}

/// The per-client series: cAdvisor's names for resource use (so dashboards made for
/// cAdvisor work, with `client` and `service` instead of container ids), StackBox's own for
/// state, backups and storage. Every label value comes from a bounded set: the clients,
/// their services and volumes.
fn render_clients(out: &mut String, snapshot: &MetricsSnapshot) {
    let clients = &snapshot.clients;
    type Sample<'a> = (Vec<(&'a str, &'a str)>, String);
    let per_service = |value: &dyn Fn(&crate::monitoring::ServiceUsageView) -> Option<String>| {
        let mut samples: Vec<Sample<'_>> = Vec::new();
        for client in clients {
            for service in &client.services {
                if let Some(v) = value(service) {
                    samples.push((
                        vec![
                            ("client", client.client.as_str()),
                            ("service", service.service.as_str()),
                        ],
                        v,
                    ));
                }
            }
        }
        samples
    };
    series(
        out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative CPU time consumed, in seconds (all cores), per client and service.",
        &per_service(&|s| Some(format_float(s.cpu_seconds_total))),
    );
    series(
        out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set (memory in use without the reclaimable page cache), in bytes.",
        &per_service(&|s| Some(s.memory_working_set_bytes.to_string())),
    );
    series(
        out,
        "container_spec_memory_limit_bytes",
        "gauge",
        "Memory limit of the service's container, in bytes (absent without a limit).",
        &per_service(&|s| s.memory_limit_bytes.map(|v| v.to_string())),
    );
    series(
        out,
        "container_network_receive_bytes_total",
        "counter",
        "Cumulative bytes received over the container's networks.",
        &per_service(&|s| Some(s.network_receive_bytes_total.to_string())),
    );
    series(
        out,
        "container_network_transmit_bytes_total",
        "counter",
        "Cumulative bytes sent over the container's networks.",
        &per_service(&|s| Some(s.network_transmit_bytes_total.to_string())),
    );
    series(
        out,
        "container_fs_reads_bytes_total",
        "counter",
        "Cumulative bytes read from block devices.",
        &per_service(&|s| Some(s.block_read_bytes_total.to_string())),
    );
    series(
        out,
        "container_fs_writes_bytes_total",
        "counter",
        "Cumulative bytes written to block devices.",
        &per_service(&|s| Some(s.block_write_bytes_total.to_string())),
    );
    let mut volumes: Vec<Sample<'_>> = Vec::new();
    let mut states: Vec<Sample<'_>> = Vec::new();
    let mut backup_ages: Vec<Sample<'_>> = Vec::new();
    for client in clients {
        let id = client.client.as_str();
        for (volume, bytes) in &client.volumes {
            volumes.push((
                vec![("client", id), ("volume", volume.as_str())],
                bytes.to_string(),
            ));
        }
        states.push((
            vec![("client", id), ("state", client.state)],
            "1".to_string(),
        ));
        if let Some(age) = client.last_backup_age_seconds.filter(|a| a.is_finite()) {
            backup_ages.push((vec![("client", id)], format_float(age.max(0.0))));
        }
    }
    series(
        out,
        "stackbox_volume_bytes",
        "gauge",
        "Bytes in each of a client's volumes, as last measured.",
        &volumes,
    );
    series(
        out,
        "stackbox_client_state",
        "gauge",
        "1 for each client's current state (one series per client).",
        &states,
    );
    series(
        out,
        "stackbox_client_last_backup_age_seconds",
        "gauge",
        "Seconds since the client's last successful backup; absent without one.",
        &backup_ages,
    );
    let mut up: Vec<Sample<'_>> = Vec::new();
    let mut durations: Vec<Sample<'_>> = Vec::new();
    let mut expiries: Vec<Sample<'_>> = Vec::new();
    for client in clients {
        for probe in &client.probes {
            let labels = vec![
                ("client", client.client.as_str()),
                ("hostname", probe.hostname.as_str()),
            ];
            up.push((labels.clone(), if probe.up { "1" } else { "0" }.to_string()));
            durations.push((labels.clone(), format_float(probe.duration_seconds)));
            if let Some(at) = probe.certificate_expires_at {
                expiries.push((labels, at.to_string()));
            }
        }
    }
    series(
        out,
        "stackbox_probe_up",
        "gauge",
        "1 when the hostname's last probe from outside through the edge was answered as up.",
        &up,
    );
    series(
        out,
        "stackbox_probe_duration_seconds",
        "gauge",
        "Seconds the hostname's last probe took, connect and TLS included.",
        &durations,
    );
    series(
        out,
        "stackbox_certificate_expiry_timestamp_seconds",
        "gauge",
        "Unix time the certificate the hostname presented at its last probe expires.",
        &expiries,
    );
    let mut disk: Vec<Sample<'_>> = Vec::new();
    if let Some((used, total)) = snapshot.engine_disk {
        disk.push((vec![("kind", "used")], used.to_string()));
        disk.push((vec![("kind", "total")], total.to_string()));
    }
    series(
        out,
        "stackbox_engine_disk_bytes",
        "gauge",
        "Used and total bytes of the filesystem holding the engine's data (when local).",
        &disk,
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text escapes `\` and line feeds (not quotes).
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (index, (label, label_value)) in labels.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label_value(label_value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A float as Prometheus reads it: Rust's shortest round-trip decimal (never an exponent, so
/// always a valid Go float), and the format's spellings for the non-finite values.
fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_include_their_upper_bound() {
        assert_eq!(DurationHistogram::bucket_of(0.0), 0);
        assert_eq!(DurationHistogram::bucket_of(0.05), 0);
        assert_eq!(DurationHistogram::bucket_of(0.051), 1);
        assert_eq!(DurationHistogram::bucket_of(1800.0), 13);
        assert_eq!(DurationHistogram::bucket_of(1800.5), 14);
    }

    #[test]
    fn odd_samples_neither_panic_nor_break_the_format() {
        let histogram = DurationHistogram::from_samples([f64::NAN, f64::INFINITY, -3.0, 2.0]);
        assert_eq!(histogram.count(), 2);
        assert_eq!(histogram.sum_seconds(), 2.0);
        assert!(DurationHistogram::from_bucket_counts(&[1, 2], 3.0).is_none());
        assert!(DurationHistogram::from_bucket_counts(&[0; 15], f64::NAN).is_none());
        assert_eq!(
            DurationHistogram::from_bucket_counts(&[1; 15], 99.0).map(|h| h.count()),
            Some(15)
        );
    }

    #[test]
    fn the_backup_statuses_are_those_of_the_dto() {
        let names: Vec<&str> = crate::dto::BackupStatus::ALL
            .iter()
            .map(|status| status.as_str())
            .collect();
        assert_eq!(names, BACKUP_STATUSES);
    }

    #[test]
    fn the_oldest_backup_age_is_left_out_when_unknown_or_not_a_number() {
        let series = "\nstackbox_oldest_successful_backup_age_seconds ";
        for age in [None, Some(f64::NAN), Some(f64::INFINITY)] {
            let snapshot = MetricsSnapshot {
                oldest_successful_backup_age_seconds: age,
                ..MetricsSnapshot::default()
            };
            let text = render(&snapshot);
            assert!(!text.contains(series), "{age:?}: {text}");
            assert!(text.contains("# TYPE stackbox_oldest_successful_backup_age_seconds gauge\n"));
        }
        let snapshot = MetricsSnapshot {
            oldest_successful_backup_age_seconds: Some(-2.0),
            ..MetricsSnapshot::default()
        };
        assert!(render(&snapshot).contains(&format!("{series}0\n")));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn floats_are_written_without_exponents() {
        assert_eq!(format_float(0.05), "0.05");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(1e21), "1000000000000000000000");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
    }
}
