//! The probes task of `serve`: every `probes.every`, each running (or degraded) client's
//! public hostnames are fetched through the edge as a visitor would (`stackbox-probe`), the
//! results go into the in-memory [`ProbeBook`](stackbox_core::probes::ProbeBook), and a
//! client whose hostname starts or stops failing `probes.failures` times in a row has its
//! state refreshed by the monitor's one refresh, which then marks it degraded with the
//! hostname and the problem (or running again). The certificate expiry each probe sees feeds
//! the certificate-expiring alert and `/metrics`.
//!
//! Nothing is stored: after a restart the count of failures in a row starts again, which
//! delays a degraded mark by at most `failures` rounds.

use std::collections::BTreeMap;
use std::time::Duration;

use stackbox_core::client::ClientId;
use stackbox_core::probes::HostnameProbes;
use stackbox_engine::DockerRuntime;
use stackbox_probe::{ProbeOptions, Prober};
use stackbox_store::{ClientFilter, ClientState};
use tracing::Instrument;

use crate::{Control, ControlError};

/// Probes in flight at once: a few TLS handshakes at a time, so a thousand clients' probes
/// never look like a burst to their routers.
const CONCURRENCY: usize = 8;

pub(crate) async fn run(control: Control) {
    let settings = control.inner.config.operator.probes.clone();
    if !settings.enabled {
        return;
    }
    let every = Duration::from_secs(settings.every_seconds.max(1));
    tracing::info!(
        every_seconds = settings.every_seconds,
        failures = settings.failures,
        "probing the clients' public hostnames from outside"
    );
    let mut hostnames = HostnameCache::default();
    loop {
        tokio::time::sleep(every).await;
        let round = control
            .probe_round(&mut hostnames)
            .instrument(tracing::debug_span!("probes.round"));
        if let Err(error) = round.await {
            tracing::warn!(%error, "could not probe the clients' hostnames");
        }
    }
}

/// Each probed client's public hostnames, read from its stored configuration again only
/// when its record changed (client lists carry no configuration, and parsing a thousand
/// configurations a minute would be waste).
#[derive(Default)]
struct HostnameCache(BTreeMap<ClientId, (stackbox_store::Timestamp, Vec<String>)>);

impl Control {
    /// One round: every running client's hostnames probed once.
    async fn probe_round(&self, cache: &mut HostnameCache) -> Result<(), ControlError> {
        let settings = &self.inner.config.operator.probes;
        let https = match &self.inner.config.operator.ingress {
            stackbox_core::operator::Ingress::Edge { https, .. }
            | stackbox_core::operator::Ingress::HostPorts { https, .. } => *https,
        };
        // Read each round: a renewed CA file or a moved edge is used without a restart.
        let extra_roots_pem = match &settings.ca_file {
            Some(file) => Some(std::fs::read(file).map_err(|error| ControlError::Invalid {
                field: "probes.ca_file".to_string(),
                problem: format!("{file} cannot be read ({})", error.kind()),
            })?),
            None => None,
        };
        let prober = Prober::new(ProbeOptions {
            via: settings.target(https),
            timeout: Duration::from_secs(settings.timeout_seconds),
            extra_roots_pem,
            concurrency: CONCURRENCY,
        })
        .await
        .map_err(|error| ControlError::Invalid {
            field: "probes".to_string(),
            problem: error.to_string(),
        })?;

        let clients = self.store().every_client(ClientFilter::default()).await?;
        let mut current: BTreeMap<ClientId, Vec<String>> = BTreeMap::new();
        for client in clients.iter().filter(|c| {
            matches!(
                c.state,
                ClientState::Running | ClientState::Starting | ClientState::Degraded
            )
        }) {
            let known = cache
                .0
                .get(&client.id)
                .filter(|(at, _)| *at == client.updated_at)
                .map(|(_, hostnames)| hostnames.clone());
            let hostnames = match known {
                Some(hostnames) => hostnames,
                None => {
                    let Some(record) = self.store().client(&client.id).await? else {
                        continue;
                    };
                    let Ok(spec) = record.spec() else { continue };
                    let hostnames = stackbox_core::stack::hostnames(&spec);
                    cache
                        .0
                        .insert(client.id.clone(), (client.updated_at, hostnames.clone()));
                    hostnames
                }
            };
            current.insert(client.id.clone(), hostnames);
        }
        cache.0.retain(|id, _| current.contains_key(id));
        let owners: Vec<(ClientId, String)> = current
            .iter()
            .flat_map(|(id, hostnames)| hostnames.iter().map(|h| (id.clone(), h.clone())))
            .collect();
        let hostnames: Vec<String> = owners.iter().map(|(_, h)| h.clone()).collect();
        tracing::debug!(
            clients = clients.len(),
            hostnames = hostnames.len(),
            "probing"
        );
        let results =
            prober
                .probe_all(&hostnames)
                .await
                .map_err(|error| ControlError::Invalid {
                    field: "probes".to_string(),
                    problem: error.to_string(),
                })?;

        let threshold = settings.failures;
        let changed: Vec<ClientId> = {
            let mut observations = self.observations();
            let book = &mut observations.probes;
            book.retain(&current);
            let before: BTreeMap<&ClientId, Option<String>> = current
                .keys()
                .map(|id| (id, book.failing(id, threshold)))
                .collect();
            for ((client, _), result) in owners.iter().zip(results) {
                if let Some(problem) = &result.problem {
                    tracing::debug!(client = %client, hostname = %result.hostname, %problem, "probe failed");
                }
                book.record(client, result);
            }
            before
                .into_iter()
                .filter(|(id, was)| book.failing(id, threshold).is_some() != was.is_some())
                .map(|(id, _)| id.clone())
                .collect()
        };
        if changed.is_empty() {
            return Ok(());
        }
        let docker = DockerRuntime::connect().await?;
        for client in &changed {
            match self.probe_failure(client) {
                Some(reason) => {
                    tracing::warn!(client = %client, %reason, "client unreachable from outside")
                }
                None => tracing::info!(client = %client, "client reachable from outside again"),
            }
            crate::monitor::refresh(self, &docker, client, None).await;
        }
        Ok(())
    }

    /// Why the client's probes make it degraded, if they do.
    pub(crate) fn probe_failure(&self, client: &ClientId) -> Option<String> {
        let threshold = self.inner.config.operator.probes.failures;
        self.observations().probes.failing(client, threshold)
    }

    /// The latest probe of each hostname of each probed client, for `/metrics` and the API.
    pub fn probe_snapshot(&self) -> BTreeMap<String, BTreeMap<String, HostnameProbes>> {
        self.observations()
            .probes
            .iter()
            .map(|(id, hostnames)| (id.to_string(), hostnames.clone()))
            .collect()
    }
}
