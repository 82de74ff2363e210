//! `GET /metrics` read by a strict parser of the Prometheus text exposition format (0.0.4):
//! line syntax, escapes, HELP/TYPE before samples, families contiguous, histograms with
//! cumulative buckets in `le` order ending in `+Inf` equal to `_count`.

use std::collections::{BTreeMap, BTreeSet};

use stackbox_api::{ApiOptions, MetricsAccess, DURATION_BUCKETS_SECONDS};

use crate::fake::{OPERATOR, TOKEN_A};
use crate::Api;

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Family {
    kind: Option<String>,
    help: Option<String>,
    samples: Vec<Sample>,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Go's `strconv.ParseFloat` as Prometheus uses it, for the forms a server writes.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse().map_err(|_| format!("bad value {text:?}"))
        }
        _ => Err(format!("bad value {text:?}")),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut s) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = s.strip_prefix('}') {
                s = after;
                break;
            }
            let eq = s.find('=').ok_or("label without =")?;
            let label = &s[..eq];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            s = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((end, '"')) => break end,
                    Some((_, '\n')) => return Err("raw line feed in a label value".into()),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            s = &s[end + 1..];
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            if let Some(after) = s.strip_prefix(',') {
                s = after;
            } else if !s.starts_with('}') {
                return Err("expected , or } after a label".into());
            }
        }
        rest = s;
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().ok_or("no value")?)?;
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("trailing text in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample belongs to, given the families declared so far.
fn family_of(name: &str, families: &BTreeMap<String, Family>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families
                .get(base)
                .is_some_and(|f| matches!(f.kind.as_deref(), Some("histogram" | "summary")))
            {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("the body must end with a line feed".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let family = if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["HELP", name, help] => {
                    let family = families.entry(name.to_string()).or_default();
                    if family.help.replace(help.to_string()).is_some() {
                        return Err(format!("two HELP lines for {name}"));
                    }
                    name.to_string()
                }
                ["TYPE", name, kind] => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(format!("bad type {kind}"));
                    }
                    let family = families.entry(name.to_string()).or_default();
                    if !family.samples.is_empty() {
                        return Err(format!("TYPE of {name} after its samples"));
                    }
                    if family.kind.replace(kind.to_string()).is_some() {
                        return Err(format!("two TYPE lines for {name}"));
                    }
                    name.to_string()
                }
                _ => continue,
            }
        } else {
            let sample = parse_sample(line).map_err(|e| format!("{e} in {line:?}"))?;
            let name = family_of(&sample.name, &families);
            families
                .entry(name.clone())
                .or_default()
                .samples
                .push(sample);
            name
        };
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(format!("the lines of {family} are not together"));
            }
            if let Some(previous) = current.replace(family) {
                finished.insert(previous);
            }
        }
    }
    Ok(families)
}

/// One histogram series: its buckets (le, value), `_sum` and `_count`.
type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

/// Checks one histogram family: per label set, buckets in increasing `le`, cumulative, ending
/// with `+Inf` equal to `_count`, and one `_sum`.
fn check_histogram(name: &str, family: &Family) -> Result<usize, String> {
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for sample in &family.samples {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le");
        let key: Vec<(String, String)> = labels.into_iter().collect();
        let entry = series.entry(key).or_default();
        match sample.name.strip_prefix(name) {
            Some("_bucket") => {
                let le = parse_value(&le.ok_or("a bucket without le")?)?;
                entry.0.push((le, sample.value));
            }
            Some("_sum") => entry.1 = Some(sample.value),
            Some("_count") => entry.2 = Some(sample.value),
            _ => return Err(format!("{} in histogram {name}", sample.name)),
        }
    }
    for (labels, (buckets, sum, count)) in &series {
        let count = count.ok_or(format!("{name}{labels:?} has no _count"))?;
        sum.ok_or(format!("{name}{labels:?} has no _sum"))?;
        let last = buckets.last().ok_or("no buckets")?;
        if last.0 != f64::INFINITY {
            return Err(format!("{name}{labels:?} does not end with le=\"+Inf\""));
        }
        if last.1 != count {
            return Err(format!(
                "{name}{labels:?}: +Inf bucket {} != count {count}",
                last.1
            ));
        }
        for pair in buckets.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(format!("{name}{labels:?}: le not increasing"));
            }
            if pair[0].1 > pair[1].1 {
                return Err(format!("{name}{labels:?}: buckets not cumulative"));
            }
        }
    }
    Ok(series.len())
}

#[test]
fn the_checker_refuses_broken_expositions() {
    for bad in [
        "x 1",                   // no final line feed
        "x{a=\"1} 1\n",          // unterminated
        "x{a=\"\\t\"} 1\n",      // bad escape
        "1x 1\n",                // bad name
        "x one\n",               // bad value
        "x 1\ny 1\nx 2\n",       // not together
        "x 1\n# TYPE x gauge\n", // TYPE after samples
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
    }
    let histogram =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    let families = parse_exposition(histogram).expect("syntax is fine");
    assert!(
        check_histogram("h", &families["h"]).is_err(),
        "not cumulative"
    );
    let histogram = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n";
    let families = parse_exposition(histogram).expect("syntax is fine");
    assert!(check_histogram("h", &families["h"]).is_err(), "no +Inf");
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let api = Api::new();
    let reply = api.get("/metrics", None).await;
    reply.expect(200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let expected = [
        ("stackbox_clients", "gauge"),
        ("stackbox_deployments_total", "counter"),
        ("stackbox_deployment_duration_seconds", "histogram"),
        ("stackbox_step_duration_seconds", "histogram"),
        ("stackbox_mail", "gauge"),
        ("stackbox_clients_missing_backup", "gauge"),
        ("stackbox_backups", "gauge"),
        ("stackbox_oldest_successful_backup_age_seconds", "gauge"),
        ("container_cpu_usage_seconds_total", "counter"),
        ("container_memory_working_set_bytes", "gauge"),
        ("container_spec_memory_limit_bytes", "gauge"),
        ("container_network_receive_bytes_total", "counter"),
        ("container_network_transmit_bytes_total", "counter"),
        ("container_fs_reads_bytes_total", "counter"),
        ("container_fs_writes_bytes_total", "counter"),
        ("stackbox_volume_bytes", "gauge"),
        ("stackbox_client_state", "gauge"),
        ("stackbox_client_last_backup_age_seconds", "gauge"),
        ("stackbox_engine_disk_bytes", "gauge"),
        ("stackbox_probe_up", "gauge"),
        ("stackbox_probe_duration_seconds", "gauge"),
        ("stackbox_certificate_expiry_timestamp_seconds", "gauge"),
    ];
    assert_eq!(families.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
        names.sort();
        names
    });
    assert!(
        text.contains("stackbox_mail{status=\"failed\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("stackbox_mail{status=\"pending\"} 0\n"),
        "{text}"
    );
    // Backups: B has none, so it is missing one; every status is a series; one age only.
    assert!(
        text.contains("\nstackbox_clients_missing_backup 1\n"),
        "{text}"
    );
    let backups: BTreeMap<&str, f64> = families["stackbox_backups"]
        .samples
        .iter()
        .map(|s| (s.labels["status"].as_str(), s.value))
        .collect();
    assert_eq!(
        backups,
        BTreeMap::from([("failed", 1.0), ("running", 0.0), ("succeeded", 1.0)])
    );
    let ages = &families["stackbox_oldest_successful_backup_age_seconds"].samples;
    assert_eq!(ages.len(), 1);
    assert!(
        ages[0].labels.is_empty(),
        "no per-client label: {:?}",
        ages[0]
    );
    assert_eq!(ages[0].value, 40.0);
    for (name, kind) in expected {
        let family = &families[name];
        assert_eq!(family.kind.as_deref(), Some(kind), "{name}");
        assert!(
            family.help.as_ref().is_some_and(|h| !h.is_empty()),
            "{name}"
        );
    }

    // Every state and outcome is a series, zero or not.
    let clients = &families["stackbox_clients"].samples;
    assert_eq!(clients.len(), 8);
    let running = clients
        .iter()
        .find(|s| s.labels.get("state").map(String::as_str) == Some("running"))
        .expect("running");
    assert_eq!(running.value, 7.0);
    let destroying = clients
        .iter()
        .find(|s| s.labels.get("state").map(String::as_str) == Some("destroying"))
        .expect("destroying");
    assert_eq!(destroying.value, 0.0);
    let outcomes: BTreeMap<&str, f64> = families["stackbox_deployments_total"]
        .samples
        .iter()
        .map(|s| (s.labels["outcome"].as_str(), s.value))
        .collect();
    assert_eq!(
        outcomes,
        BTreeMap::from([("compensated", 0.0), ("failed", 1.0), ("succeeded", 12.0)])
    );

    // Histograms.
    let deployments = &families["stackbox_deployment_duration_seconds"];
    assert_eq!(
        check_histogram("stackbox_deployment_duration_seconds", deployments),
        Ok(1)
    );
    assert_eq!(
        deployments.samples.len(),
        DURATION_BUCKETS_SECONDS.len() + 1 + 2
    );
    let value = |name: &str, le: Option<&str>| {
        deployments
            .samples
            .iter()
            .find(|s| s.name == name && s.labels.get("le").map(String::as_str) == le)
            .map(|s| s.value)
    };
    assert_eq!(
        value("stackbox_deployment_duration_seconds_count", None),
        Some(5.0)
    );
    assert_eq!(
        value("stackbox_deployment_duration_seconds_sum", None),
        Some(4418.5)
    );
    assert_eq!(
        value("stackbox_deployment_duration_seconds_bucket", Some("60")),
        Some(2.0)
    );
    assert_eq!(
        value("stackbox_deployment_duration_seconds_bucket", Some("1800")),
        Some(4.0)
    );
    assert_eq!(
        value("stackbox_deployment_duration_seconds_bucket", Some("+Inf")),
        Some(5.0)
    );

    let steps = &families["stackbox_step_duration_seconds"];
    assert_eq!(
        check_histogram("stackbox_step_duration_seconds", steps),
        Ok(3)
    );
    let step_names: BTreeSet<&str> = steps
        .samples
        .iter()
        .map(|s| s.labels["step"].as_str())
        .collect();
    assert_eq!(
        step_names,
        BTreeSet::from(["containers", "render", "we\"ird\\step\nname"]),
        "label values are escaped and read back"
    );
}

#[tokio::test]
async fn metrics_can_be_closed_to_everyone_but_the_operator() {
    let api = Api::with_options(ApiOptions {
        metrics_access: MetricsAccess::Operator,
        ..ApiOptions::default()
    });
    let reply = api.get("/metrics", None).await;
    reply.expect(401);
    assert!(reply.header("www-authenticate").is_some());
    api.get("/metrics", Some("nobody")).await.expect(401);
    let reply = api.get("/metrics", Some(TOKEN_A)).await;
    reply.expect(403);
    assert_eq!(reply.error_code(), "forbidden");
    api.get("/metrics", Some(OPERATOR)).await.expect(200);
}

#[tokio::test]
async fn a_backup_started_through_the_api_shows_in_the_metrics_as_running() {
    let api = Api::new();
    api.call(
        "POST",
        &format!("/v1/clients/{}/backups", crate::fake::CLIENT_B),
        Some(OPERATOR),
        None,
    )
    .await
    .expect(202);
    let text = api.get("/metrics", None).await.expect(200).text();
    let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let running = families["stackbox_backups"]
        .samples
        .iter()
        .find(|s| s.labels["status"] == "running")
        .map(|s| s.value);
    assert_eq!(running, Some(1.0));
    // Running is not succeeded: B is still missing a backup.
    assert!(
        text.contains("\nstackbox_clients_missing_backup 1\n"),
        "{text}"
    );
}

/// The labels of a sample, as sorted pairs.
fn labels_of(sample: &Sample) -> Vec<(&str, &str)> {
    sample
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn per_client_series_carry_cadvisor_names_and_only_bounded_labels() {
    let api = Api::new();
    let text = api.get("/metrics", None).await.expect(200).text();
    let families = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    // Per client and service, under cAdvisor's names.
    let cpu = &families["container_cpu_usage_seconds_total"].samples;
    let cpu: Vec<(Vec<(&str, &str)>, f64)> = cpu.iter().map(|s| (labels_of(s), s.value)).collect();
    assert_eq!(
        cpu,
        [
            (
                vec![("client", "alpha-0000000a"), ("service", "website")],
                12.5
            ),
            (
                vec![("client", "alpha-0000000a"), ("service", "mysql")],
                3.0
            ),
        ]
    );
    let memory = &families["container_memory_working_set_bytes"].samples;
    assert_eq!(memory.len(), 2);
    assert_eq!(memory[1].value, 80_000_000.0);
    // A container without a limit has no limit series (not a zero, not the host's memory).
    let limits = &families["container_spec_memory_limit_bytes"].samples;
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0].labels["service"], "website");

    // Storage per volume; state and backup age per client; a client without a backup has no
    // age series at all (an absent series, not a zero that would read as "just backed up").
    let volumes: Vec<(Vec<(&str, &str)>, f64)> = families["stackbox_volume_bytes"]
        .samples
        .iter()
        .map(|s| (labels_of(s), s.value))
        .collect();
    assert_eq!(
        volumes,
        [
            (
                vec![("client", "alpha-0000000a"), ("volume", "mysql_data")],
                4096.0
            ),
            (
                vec![("client", "alpha-0000000a"), ("volume", "nextcloud_data")],
                1_048_576.0
            ),
        ]
    );
    // Probes: one series per client and hostname; a failed probe is a 0, and a hostname
    // that presented no certificate has no expiry series.
    let up: Vec<(Vec<(&str, &str)>, f64)> = families["stackbox_probe_up"]
        .samples
        .iter()
        .map(|s| (labels_of(s), s.value))
        .collect();
    assert_eq!(
        up,
        [
            (
                vec![("client", "alpha-0000000a"), ("hostname", "alpha.example")],
                1.0
            ),
            (
                vec![
                    ("client", "alpha-0000000a"),
                    ("hostname", "crm.alpha.example")
                ],
                0.0
            ),
        ]
    );
    assert_eq!(
        families["stackbox_probe_duration_seconds"].samples[0].value,
        0.25
    );
    let expiries = &families["stackbox_certificate_expiry_timestamp_seconds"].samples;
    assert_eq!(expiries.len(), 1);
    assert_eq!(expiries[0].value, 1_800_000_000.0);
    let states: Vec<Vec<(&str, &str)>> = families["stackbox_client_state"]
        .samples
        .iter()
        .map(labels_of)
        .collect();
    assert_eq!(
        states,
        [
            vec![("client", "alpha-0000000a"), ("state", "running")],
            vec![("client", "bravo-0000000b"), ("state", "degraded")],
        ]
    );
    let ages = &families["stackbox_client_last_backup_age_seconds"].samples;
    assert_eq!(ages.len(), 1);
    assert_eq!(
        (ages[0].labels["client"].as_str(), ages[0].value),
        ("alpha-0000000a", 40.0)
    );
    let disk: BTreeMap<&str, f64> = families["stackbox_engine_disk_bytes"]
        .samples
        .iter()
        .map(|s| (s.labels["kind"].as_str(), s.value))
        .collect();
    assert_eq!(
        disk,
        BTreeMap::from([("total", 250_000_000_000.0), ("used", 60_000_000_000.0)])
    );

    // Bounded cardinality: the only label names any series carries (`hostname`: a client's
    // few public hostnames, never a visitor's request).
    for family in families.values() {
        for sample in &family.samples {
            for name in sample.labels.keys() {
                assert!(
                    [
                        "client", "service", "volume", "state", "kind", "status", "outcome",
                        "step", "le", "hostname"
                    ]
                    .contains(&name.as_str()),
                    "{} has label {name}",
                    sample.name
                );
            }
        }
    }
}
