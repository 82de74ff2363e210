//! The usage collector: reads every running client container's counters from the engine on
//! an interval (one-shot stats, a few in flight at once; no agent in the clients' stacks),
//! measures the clients' volumes less often, and keeps each client's readings in a bounded
//! ring ([`stackbox_core::usage::UsageRing`]). Nothing of it is written to the store: a
//! restart of `serve` starts the window again, and the data can never grow without bound.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use stackbox_core::client::ClientId;
use stackbox_core::usage::{UsageRing, UsageWindow};
use stackbox_engine::DockerRuntime;
use tracing::Instrument;

use crate::Control;

/// Stats requests in flight at once: enough to read 450 containers in a few seconds, few
/// enough that the engine does not notice.
const CONCURRENCY: usize = 4;

/// What the collector last saw, shared with the API's readers.
#[derive(Default)]
pub(crate) struct Observations {
    pub(crate) usage: HashMap<ClientId, UsageRing>,
    /// Used and total bytes of the filesystem holding the engine's data, when local.
    pub(crate) engine_disk: Option<(u64, u64)>,
    /// Unix seconds of the last volume measurement.
    volumes_measured_at: i64,
    /// The latest probe of each running client's public hostnames (see `probes`).
    pub(crate) probes: stackbox_core::probes::ProbeBook,
    /// Unix seconds of each service's recent unplanned stops (the monitor's `die` events
    /// outside a deployment), for the restart-loop alert: pruned to the alert's window.
    pub(crate) restarts: HashMap<ClientId, BTreeMap<String, std::collections::VecDeque<i64>>>,
}

/// One client's use, for `status --resources` and `GET /v1/clients/{id}/usage`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientUsage {
    pub client_id: String,
    /// Seconds between readings.
    pub interval_seconds: u64,
    /// How far back readings are kept.
    pub kept_seconds: u64,
    #[serde(flatten)]
    pub window: UsageWindow,
}

/// Every client's latest figures per service and volume, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct UsageSnapshot {
    pub clients: BTreeMap<String, ClientSnapshot>,
    pub engine_disk: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct ClientSnapshot {
    pub services: Vec<stackbox_core::usage::ServiceUsage>,
    pub volumes: BTreeMap<String, u64>,
}

pub(crate) async fn run(control: Control) {
    let settings = control.inner.config.operator.monitor.clone();
    if !settings.collect {
        return;
    }
    let interval = Duration::from_secs(settings.usage_interval_seconds.max(1));
    let mut host: Option<(Option<u64>, Option<String>)> = None;
    loop {
        tokio::time::sleep(interval).await;
        let Ok(docker) = DockerRuntime::connect().await else {
            continue;
        };
        if host.is_none() {
            host = docker.host_resources().await.ok();
        }
        let (memory, data_root) = host.clone().unwrap_or_default();
        let span = tracing::debug_span!("usage.collect");
        collect_once(&control, &docker, memory, data_root.as_deref())
            .instrument(span)
            .await;
    }
}

/// One round: every running container's counters, and every `volume_sizes_every_seconds`
/// the volumes of the clients that have readings.
pub(crate) async fn collect_once(
    control: &Control,
    docker: &DockerRuntime,
    host_memory: Option<u64>,
    data_root: Option<&str>,
) {
    let settings = &control.inner.config.operator.monitor;
    let now = stackbox_store::Timestamp::now().unix_millis() / 1000;
    let readings =
        match stackbox_engine::usage::read_all(docker, None, host_memory, CONCURRENCY).await {
            Ok(readings) => readings,
            Err(error) => {
                tracing::warn!(%error, "could not read the clients' resource use");
                return;
            }
        };
    let capacity = settings.usage_capacity();
    let measure_volumes = {
        let mut observations = control.observations();
        let due =
            now - observations.volumes_measured_at >= settings.volume_sizes_every_seconds as i64;
        let mut seen = Vec::with_capacity(readings.len());
        for (client, samples) in readings {
            let Ok(id) = ClientId::parse(&client) else {
                continue;
            };
            observations
                .usage
                .entry(id.clone())
                .or_insert_with(|| UsageRing::new(capacity))
                .record(now, samples);
            seen.push(id);
        }
        // A client that runs nothing now (stopped) keeps its window and gets an empty
        // reading, so that its services' last counters are not shown as current; a destroyed
        // one is forgotten with it (`forget_usage`).
        for (id, ring) in observations.usage.iter_mut() {
            if !seen.contains(id) {
                ring.record(now, Vec::new());
            }
        }
        observations.engine_disk = data_root
            .map(Path::new)
            .and_then(stackbox_engine::usage::filesystem_usage);
        if due {
            observations.volumes_measured_at = now;
            Some(seen)
        } else {
            None
        }
    };
    if let Some(clients) = measure_volumes {
        for client in clients {
            let Ok(sizes) = stackbox_engine::usage::volume_sizes(docker, &client).await else {
                continue;
            };
            if let Some(ring) = control.observations().usage.get_mut(&client) {
                ring.record_volumes(sizes);
            }
        }
    }
}

impl Control {
    pub(crate) fn observations(&self) -> std::sync::MutexGuard<'_, Observations> {
        self.inner
            .observations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The client's readings of the last `window_seconds` (all that is kept when longer).
    pub fn client_usage(&self, client: &ClientId, window_seconds: u64) -> ClientUsage {
        let settings = &self.inner.config.operator.monitor;
        let now = stackbox_store::Timestamp::now().unix_millis() / 1000;
        let since = now.saturating_sub(window_seconds.min(i64::MAX as u64) as i64);
        let window = self
            .observations()
            .usage
            .get(client)
            .map(|ring| ring.window(since))
            .unwrap_or_else(|| UsageRing::new(1).window(since));
        ClientUsage {
            client_id: client.to_string(),
            interval_seconds: settings.usage_interval_seconds,
            kept_seconds: settings.usage_window_seconds,
            window,
        }
    }

    /// The latest figures of every client, for `/metrics`.
    pub fn usage_snapshot(&self) -> UsageSnapshot {
        let observations = self.observations();
        UsageSnapshot {
            clients: observations
                .usage
                .iter()
                .map(|(id, ring)| {
                    (
                        id.to_string(),
                        ClientSnapshot {
                            services: ring.services().to_vec(),
                            volumes: ring.volumes().clone(),
                        },
                    )
                })
                .collect(),
            engine_disk: observations.engine_disk,
        }
    }

    /// Forgets a destroyed client's readings, probes and restarts.
    pub(crate) fn forget_usage(&self, client: &ClientId) {
        let mut observations = self.observations();
        observations.usage.remove(client);
        observations.probes.forget(client);
        observations.restarts.remove(client);
    }
}
