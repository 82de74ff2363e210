//! Resource use per client and service: what the engine's one-shot stats say, rolled up per
//! client and kept for a bounded time.
//!
//! The collector (in the control plane) reads each running container's counters on an
//! interval and hands them here with the time it read them; this module turns counters into
//! rates and keeps at most [`UsageRing::capacity`] points per client, so memory stays bounded
//! however long `serve` runs (a point is a few dozen bytes: 360 points for 1,000 clients is
//! under 30 MB). The latest counters of each service are kept too, for `/metrics`.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// One container's counters as the engine reported them at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSample {
    /// The compose service (`nextcloud`, `mysql`, …).
    pub service: String,
    /// CPU time used since the container started (all cores), in seconds.
    pub cpu_seconds_total: f64,
    /// Memory in use minus the page cache the kernel can reclaim (`inactive_file`): what
    /// cAdvisor and the kernel's OOM decisions count, not `usage` (which counts the cache).
    pub memory_working_set_bytes: u64,
    /// The container's memory limit; `None` when it has none (the engine then reports the
    /// host's memory).
    pub memory_limit_bytes: Option<u64>,
    pub network_receive_bytes_total: u64,
    pub network_transmit_bytes_total: u64,
    pub block_read_bytes_total: u64,
    pub block_write_bytes_total: u64,
}

/// The working set from the engine's memory figures: `usage` minus `inactive_file` (cgroup
/// v2) or `total_inactive_file` (cgroup v1), never below 0.
pub fn working_set_bytes(usage: u64, stats: &BTreeMap<String, u64>) -> u64 {
    let inactive = stats
        .get("inactive_file")
        .or_else(|| stats.get("total_inactive_file"))
        .copied()
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// The engine reports a container without a limit as limited by the host's memory (or a huge
/// number): only a limit below the host's memory (when known) and below 1 PiB counts as one.
pub fn memory_limit(reported: u64, host_memory: Option<u64>) -> Option<u64> {
    let below_host = host_memory.is_none_or(|host| reported < host);
    (reported > 0 && reported < 1 << 50 && below_host).then_some(reported)
}

/// `[monitor]` in the operator file: how often `serve` reads the clients' resource use and
/// how long it keeps the readings (in memory only; see the module's comment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonitorSettings {
    /// `collect = false` turns the collector off (a host that a separate cAdvisor watches).
    pub collect: bool,
    /// Seconds between two readings of every running container (`usage_interval`, 60 s).
    pub usage_interval_seconds: u64,
    /// How far back readings are kept (`usage_window`, 6 h).
    pub usage_window_seconds: u64,
    /// Seconds between two measurements of the clients' volumes (`volume_sizes_every`, 10 min):
    /// walking a volume reads every inode, so less often than the counters.
    pub volume_sizes_every_seconds: u64,
    /// `metrics = "operator"`: `/metrics` needs an operator token (Prometheus's
    /// `authorization.credentials_file`). `"public"` (the default) suits a listener on
    /// loopback or a private network: the series name clients by id, never a secret.
    pub metrics_need_operator_token: bool,
}

impl Default for MonitorSettings {
    fn default() -> MonitorSettings {
        MonitorSettings {
            collect: true,
            usage_interval_seconds: 60,
            usage_window_seconds: 6 * 3600,
            volume_sizes_every_seconds: 600,
            metrics_need_operator_token: false,
        }
    }
}

/// At most this many points per client, whatever the settings say (a week of 1-minute
/// readings): memory stays bounded.
pub const MAX_POINTS_PER_CLIENT: u64 = 7 * 24 * 60;

impl MonitorSettings {
    /// Points kept per client: the window divided by the interval.
    pub fn usage_capacity(&self) -> usize {
        (self.usage_window_seconds / self.usage_interval_seconds.max(1))
            .clamp(1, MAX_POINTS_PER_CLIENT) as usize
    }
}

/// The `[monitor]` table as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MonitorFile {
    collect: Option<bool>,
    usage_interval: Option<String>,
    usage_window: Option<String>,
    volume_sizes_every: Option<String>,
    metrics: Option<String>,
}

impl MonitorFile {
    pub(crate) fn validate(self) -> Result<MonitorSettings, crate::CoreError> {
        let mut settings = MonitorSettings::default();
        if let Some(collect) = self.collect {
            settings.collect = collect;
        }
        if let Some(text) = self.usage_interval {
            let seconds = crate::onboarding::duration("monitor.usage_interval", &text)?;
            if !(1..=3600).contains(&seconds) {
                return Err(crate::CoreError::invalid(
                    "monitor.usage_interval",
                    "must be between 1s and 1h; 60s suits most hosts",
                ));
            }
            settings.usage_interval_seconds = seconds;
        }
        if let Some(text) = self.usage_window {
            let seconds = crate::onboarding::duration("monitor.usage_window", &text)?;
            if !(60..=7 * 86_400).contains(&seconds) {
                return Err(crate::CoreError::invalid(
                    "monitor.usage_window",
                    "must be between 1m and 7d; keep longer history in Prometheus, which \
                     scrapes /metrics",
                ));
            }
            settings.usage_window_seconds = seconds;
        }
        if let Some(text) = self.volume_sizes_every {
            let seconds = crate::onboarding::duration("monitor.volume_sizes_every", &text)?;
            if seconds == 0 {
                return Err(crate::CoreError::invalid(
                    "monitor.volume_sizes_every",
                    "must be at least 1s; 10m suits most hosts",
                ));
            }
            settings.volume_sizes_every_seconds = seconds;
        }
        match self.metrics.as_deref().map(str::trim) {
            None | Some("public") => {}
            Some("operator") => settings.metrics_need_operator_token = true,
            Some(other) => {
                return Err(crate::CoreError::invalid(
                    "monitor.metrics",
                    format!("{other:?} is neither \"public\" nor \"operator\""),
                ))
            }
        }
        if settings.usage_window_seconds < settings.usage_interval_seconds {
            return Err(crate::CoreError::invalid(
                "monitor.usage_window",
                "is shorter than monitor.usage_interval; keep at least one reading",
            ));
        }
        Ok(settings)
    }
}

/// The window of `GET /v1/clients/{id}/usage?window=` and `status --resources --window`:
/// a duration (`30m`, `6h`, `1d`), one hour when not given. Errors name `window`.
pub fn parse_window(text: Option<&str>) -> Result<u64, crate::CoreError> {
    let Some(text) = text else {
        return Ok(DEFAULT_WINDOW_SECONDS);
    };
    match crate::logs::duration_seconds("window", text) {
        Some(Ok(seconds)) if seconds > 0 => Ok(seconds as u64),
        Some(Err(error)) => Err(error),
        _ => Err(crate::CoreError::invalid(
            "window",
            format!("{text:?} is not a duration such as 30m, 6h or 1d"),
        )),
    }
}

/// The window shown when none is asked for.
pub const DEFAULT_WINDOW_SECONDS: u64 = 3600;

/// One client's use at one moment, summed over its services.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsagePoint {
    /// Unix seconds of the reading.
    pub at: i64,
    /// CPU cores in use on average since the previous reading (1.0 = one core).
    pub cpu_cores: f64,
    pub memory_working_set_bytes: u64,
    pub network_receive_bytes_per_second: f64,
    pub network_transmit_bytes_per_second: f64,
    pub block_read_bytes_per_second: f64,
    pub block_write_bytes_per_second: f64,
    /// Bytes in the client's volumes, as last measured (measured less often than the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
}

/// One service's latest figures, with its rates since the previous reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceUsage {
    #[serde(flatten)]
    pub sample: ContainerSample,
    pub cpu_cores: f64,
}

/// A window of a client's use: its points, and maxima and averages over them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageWindow {
    pub points: Vec<UsagePoint>,
    pub cpu_cores_avg: f64,
    pub cpu_cores_max: f64,
    pub memory_working_set_bytes_max: u64,
    pub services: Vec<ServiceUsage>,
    pub volumes: BTreeMap<String, u64>,
}

/// A client's readings: at most `capacity` points, oldest dropped first.
#[derive(Debug, Clone)]
pub struct UsageRing {
    capacity: usize,
    points: VecDeque<UsagePoint>,
    /// The previous reading's time and counters per service, for rates.
    last: Option<(i64, BTreeMap<String, ContainerSample>)>,
    services: Vec<ServiceUsage>,
    volumes: BTreeMap<String, u64>,
}

impl UsageRing {
    pub fn new(capacity: usize) -> UsageRing {
        UsageRing {
            capacity: capacity.max(1),
            points: VecDeque::new(),
            last: None,
            services: Vec::new(),
            volumes: BTreeMap::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Records the counters of the client's running containers read at `at`. The first
    /// reading only sets the baseline for rates (it adds no point); a counter that went down
    /// (the container was recreated) counts from 0, as Prometheus' `rate` does. A reading
    /// not after the previous one is ignored.
    pub fn record(&mut self, at: i64, samples: Vec<ContainerSample>) {
        let current: BTreeMap<String, ContainerSample> = samples
            .into_iter()
            .map(|sample| (sample.service.clone(), sample))
            .collect();
        let previous = match self.last.take() {
            Some((then, previous)) if then < at => Some((then, previous)),
            Some(kept) => {
                self.last = Some(kept);
                return;
            }
            None => None,
        };
        let mut services = Vec::with_capacity(current.len());
        let mut point = UsagePoint {
            at,
            cpu_cores: 0.0,
            memory_working_set_bytes: 0,
            network_receive_bytes_per_second: 0.0,
            network_transmit_bytes_per_second: 0.0,
            block_read_bytes_per_second: 0.0,
            block_write_bytes_per_second: 0.0,
            storage_bytes: (!self.volumes.is_empty()).then(|| self.volumes.values().sum()),
        };
        for sample in current.values() {
            point.memory_working_set_bytes += sample.memory_working_set_bytes;
            let mut cpu_cores = 0.0;
            if let Some((then, previous)) = &previous {
                let seconds = (at - then) as f64;
                let before = previous.get(&sample.service);
                let float_delta = |now: f64, old: Option<f64>| match old {
                    Some(old) if now >= old => now - old,
                    _ => now,
                };
                let delta = |now: u64, old: Option<u64>| match old {
                    Some(old) if now >= old => (now - old) as f64,
                    _ => now as f64,
                };
                cpu_cores = float_delta(
                    sample.cpu_seconds_total,
                    before.map(|b| b.cpu_seconds_total),
                ) / seconds;
                point.cpu_cores += cpu_cores;
                point.network_receive_bytes_per_second += delta(
                    sample.network_receive_bytes_total,
                    before.map(|b| b.network_receive_bytes_total),
                ) / seconds;
                point.network_transmit_bytes_per_second += delta(
                    sample.network_transmit_bytes_total,
                    before.map(|b| b.network_transmit_bytes_total),
                ) / seconds;
                point.block_read_bytes_per_second += delta(
                    sample.block_read_bytes_total,
                    before.map(|b| b.block_read_bytes_total),
                ) / seconds;
                point.block_write_bytes_per_second += delta(
                    sample.block_write_bytes_total,
                    before.map(|b| b.block_write_bytes_total),
                ) / seconds;
            }
            services.push(ServiceUsage {
                sample: sample.clone(),
                cpu_cores,
            });
        }
        self.services = services;
        if previous.is_some() {
            if self.points.len() == self.capacity {
                self.points.pop_front();
            }
            self.points.push_back(point);
        }
        self.last = Some((at, current));
    }

    /// Records the measured size of each of the client's volumes (bytes).
    pub fn record_volumes(&mut self, volumes: BTreeMap<String, u64>) {
        self.volumes = volumes;
        if let Some(last) = self.points.back_mut() {
            last.storage_bytes = Some(self.volumes.values().sum());
        }
    }

    /// The latest figures of each service.
    pub fn services(&self) -> &[ServiceUsage] {
        &self.services
    }

    /// The latest measured size of each volume.
    pub fn volumes(&self) -> &BTreeMap<String, u64> {
        &self.volumes
    }

    /// The points from `since` (unix seconds) on, with their maxima and averages.
    pub fn window(&self, since: i64) -> UsageWindow {
        let points: Vec<UsagePoint> = self
            .points
            .iter()
            .filter(|point| point.at >= since)
            .cloned()
            .collect();
        let cpu_cores_max = points.iter().map(|p| p.cpu_cores).fold(0.0, f64::max);
        let cpu_cores_avg = if points.is_empty() {
            0.0
        } else {
            points.iter().map(|p| p.cpu_cores).sum::<f64>() / points.len() as f64
        };
        let memory_working_set_bytes_max = points
            .iter()
            .map(|p| p.memory_working_set_bytes)
            .max()
            .unwrap_or(0);
        UsageWindow {
            points,
            cpu_cores_avg,
            cpu_cores_max,
            memory_working_set_bytes_max,
            services: self.services.clone(),
            volumes: self.volumes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_settings_default_to_a_minute_kept_six_hours() {
        let config = crate::operator::OperatorConfig::from_toml("", "test").unwrap();
        assert_eq!(config.monitor, MonitorSettings::default());
        assert_eq!(config.monitor.usage_capacity(), 360);
    }

    #[test]
    fn monitor_settings_are_read_and_bad_ones_name_their_field() {
        let config = crate::operator::OperatorConfig::from_toml(
            "[monitor]\nusage_interval = \"5s\"\nusage_window = \"10m\"\nvolume_sizes_every = \"1m\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(config.monitor.usage_interval_seconds, 5);
        assert_eq!(config.monitor.usage_capacity(), 120);
        assert_eq!(config.monitor.volume_sizes_every_seconds, 60);
        for (text, field) in [
            ("usage_interval = \"0s\"", "monitor.usage_interval"),
            ("usage_interval = \"soon\"", "monitor.usage_interval"),
            ("usage_window = \"30d\"", "monitor.usage_window"),
            (
                "usage_interval = \"1h\"\nusage_window = \"5m\"",
                "monitor.usage_window",
            ),
            ("volume_sizes_every = \"0\"", "monitor.volume_sizes_every"),
            ("metrics = \"private\"", "monitor.metrics"),
        ] {
            let error =
                crate::operator::OperatorConfig::from_toml(&format!("[monitor]\n{text}\n"), "test")
                    .unwrap_err()
                    .to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }

    fn sample(service: &str, cpu: f64, memory: u64, rx: u64) -> ContainerSample {
        ContainerSample {
            service: service.to_string(),
            cpu_seconds_total: cpu,
            memory_working_set_bytes: memory,
            memory_limit_bytes: Some(1 << 30),
            network_receive_bytes_total: rx,
            network_transmit_bytes_total: 0,
            block_read_bytes_total: 0,
            block_write_bytes_total: 0,
        }
    }

    #[test]
    fn the_working_set_leaves_out_the_inactive_page_cache_of_either_cgroup_version() {
        let v2 = BTreeMap::from([("inactive_file".to_string(), 300)]);
        let v1 = BTreeMap::from([("total_inactive_file".to_string(), 200)]);
        assert_eq!(working_set_bytes(1000, &v2), 700);
        assert_eq!(working_set_bytes(1000, &v1), 800);
        assert_eq!(working_set_bytes(100, &v2), 0);
        assert_eq!(working_set_bytes(100, &BTreeMap::new()), 100);
    }

    #[test]
    fn the_first_reading_is_a_baseline_and_the_next_ones_are_rates_summed_per_client() {
        let mut ring = UsageRing::new(10);
        ring.record(
            100,
            vec![sample("a", 10.0, 100, 0), sample("b", 5.0, 50, 0)],
        );
        assert!(ring.is_empty());
        ring.record(
            110,
            vec![sample("a", 15.0, 120, 1000), sample("b", 10.0, 60, 0)],
        );
        let window = ring.window(0);
        assert_eq!(window.points.len(), 1);
        let point = &window.points[0];
        assert!((point.cpu_cores - 1.0).abs() < 1e-9, "{point:?}");
        assert_eq!(point.memory_working_set_bytes, 180);
        assert!((point.network_receive_bytes_per_second - 100.0).abs() < 1e-9);
        let a = &ring.services()[0];
        assert_eq!(a.sample.service, "a");
        assert!((a.cpu_cores - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_recreated_container_counts_from_zero_and_a_stale_reading_is_ignored() {
        let mut ring = UsageRing::new(10);
        ring.record(100, vec![sample("a", 50.0, 100, 5000)]);
        ring.record(110, vec![sample("a", 2.0, 100, 100)]);
        let point = &ring.window(0).points[0];
        assert!((point.cpu_cores - 0.2).abs() < 1e-9);
        assert!((point.network_receive_bytes_per_second - 10.0).abs() < 1e-9);
        ring.record(105, vec![sample("a", 99.0, 100, 100)]);
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn the_ring_never_holds_more_than_its_capacity_and_drops_the_oldest() {
        let mut ring = UsageRing::new(3);
        for t in 0..20 {
            ring.record(t * 10, vec![sample("a", t as f64, 100, 0)]);
        }
        assert_eq!(ring.len(), 3);
        let window = ring.window(0);
        assert_eq!(
            window.points.iter().map(|p| p.at).collect::<Vec<_>>(),
            vec![170, 180, 190]
        );
        assert_eq!(ring.window(185).points.len(), 1);
    }

    #[test]
    fn volume_sizes_roll_up_into_the_client_s_storage() {
        let mut ring = UsageRing::new(3);
        ring.record(0, vec![sample("a", 0.0, 1, 0)]);
        ring.record(10, vec![sample("a", 1.0, 1, 0)]);
        ring.record_volumes(BTreeMap::from([
            ("v1".to_string(), 10),
            ("v2".to_string(), 32),
        ]));
        assert_eq!(ring.window(0).points[0].storage_bytes, Some(42));
        ring.record(20, vec![sample("a", 2.0, 1, 0)]);
        assert_eq!(ring.window(0).points[1].storage_bytes, Some(42));
    }

    #[test]
    fn a_window_is_a_positive_duration_and_an_hour_by_default() {
        assert_eq!(parse_window(None).unwrap(), 3600);
        assert_eq!(parse_window(Some("6h")).unwrap(), 6 * 3600);
        for bad in ["0m", "soon", "-1h", "99999999999d"] {
            let error = parse_window(Some(bad)).unwrap_err().to_string();
            assert!(error.contains("window"), "{bad}: {error}");
        }
    }

    #[test]
    fn only_a_real_limit_counts_as_a_memory_limit() {
        assert_eq!(memory_limit(512 << 20, None), Some(512 << 20));
        assert_eq!(memory_limit(512 << 20, Some(24 << 30)), Some(512 << 20));
        assert_eq!(memory_limit(24 << 30, Some(24 << 30)), None);
        assert_eq!(memory_limit(0, None), None);
        assert_eq!(memory_limit(u64::MAX, None), None);
    }
}
