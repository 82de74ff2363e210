//! [`ContainerRuntime`] on a Docker engine, through the Engine API (bollard).
//!
//! The API version is negotiated with the engine (Debian's docker.io 20.10 speaks 1.41), so
//! only calls that 1.41 has are used: a container is created on its first network and
//! connected to the others before it starts (multi-network create came with 1.44), and health
//! is read from the list's status text (the list's `Health` field came later too).

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig, PortBinding, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
    RenameContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use stackbox_core::client::ClientId;
use stackbox_core::deploy::{
    labels, ContainerConfig, ContainerMount, ContainerState, DesiredNetwork, DesiredVolume, Health,
    Observed, ObservedContainer,
};
use stackbox_core::stack::{Healthcheck, CLIENT_LABEL};

use crate::runtime::{
    ContainerDetails, ContainerRuntime, ExecOptions, ExecOutcome, ExecSink, ExecSource, LogEntries,
    LogEntry, LogOptions, LogStream, Probe,
};
use crate::EngineError;

/// Something that happened to one of StackBox's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub client: String,
    pub service: String,
    /// The container's name.
    pub container: String,
    /// The engine's action: `start`, `die`, `health_status: unhealthy`, …
    pub action: String,
}

/// A Docker engine: `DOCKER_HOST` when set (unix:// or tcp://), else the local socket.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
}

const NANOS: i64 = 1_000_000_000;

impl DockerRuntime {
    /// Connects and negotiates the API version; fails with a clear message when no engine
    /// answers.
    #[tracing::instrument(
        level = "debug",
        name = "engine.connect",
        err(level = "debug", Display)
    )]
    pub async fn connect() -> Result<DockerRuntime, EngineError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let unreachable = |problem: String| EngineError::Unreachable {
            endpoint: endpoint.clone(),
            problem,
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(short(&e)))?;
        Ok(DockerRuntime { docker, endpoint })
    }

    /// The underlying client, for tests and benchmarks.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The engine's event stream, for StackBox's containers only: one long-lived request
    /// instead of a poll per container. Ends when the engine connection does.
    pub fn container_events(
        &self,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, EngineError>> + Send + 'static
    {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![CLIENT_LABEL.to_string()]),
            (
                "event".to_string(),
                ["health_status", "die", "start", "stop", "restart", "oom"]
                    .map(String::from)
                    .to_vec(),
            ),
        ]);
        self.docker
            .events(Some(bollard::query_parameters::EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .map(|event| {
                let event = event.map_err(map_err("follow the events of", "the engine"))?;
                let actor = event.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                Ok(ContainerEvent {
                    client: attributes.get(CLIENT_LABEL).cloned().unwrap_or_default(),
                    service: attributes.get(labels::SERVICE).cloned().unwrap_or_default(),
                    container: attributes.get("name").cloned().unwrap_or_default(),
                    action: event.action.unwrap_or_default(),
                })
            })
    }
}

/// The lines of one chunk of a timestamped log (`2025-03-01T12:00:00.123456789Z text`).
fn log_entries(output: bollard::container::LogOutput) -> Vec<LogEntry> {
    let stream = match output {
        bollard::container::LogOutput::StdErr { .. } => LogStream::Stderr,
        _ => LogStream::Stdout,
    };
    let text = String::from_utf8_lossy(&output.into_bytes()).into_owned();
    text.split_terminator('\n')
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            match line.split_once(' ') {
                Some((time, rest)) if time.len() >= 20 && time.as_bytes()[4] == b'-' => LogEntry {
                    stream,
                    time: time.to_string(),
                    line: rest.to_string(),
                },
                _ => LogEntry {
                    stream,
                    time: String::new(),
                    line: line.to_string(),
                },
            }
        })
        .collect()
}

/// The engine's own message, without bollard's wrapping.
fn short(error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn status_of(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn map_err<'a>(
    action: &'static str,
    object: &'a str,
) -> impl FnOnce(BollardError) -> EngineError + 'a {
    move |error| match &error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            if *status_code == 404 {
                EngineError::NotFound {
                    object: object.to_string(),
                }
            } else {
                EngineError::Refused {
                    action,
                    object: object.to_string(),
                    status: *status_code,
                    message: message.clone(),
                }
            }
        }
        _ => EngineError::Transport {
            action,
            object: object.to_string(),
            problem: error.to_string(),
        },
    }
}

fn label_filter(client: Option<&ClientId>) -> HashMap<String, Vec<String>> {
    let label = match client {
        Some(id) => format!("{CLIENT_LABEL}={id}"),
        None => CLIENT_LABEL.to_string(),
    };
    HashMap::from([("label".to_string(), vec![label])])
}

fn observed(summary: bollard::models::ContainerSummary) -> (String, ObservedContainer) {
    let labels = summary.labels.unwrap_or_default();
    let status = summary.status.unwrap_or_default();
    let state = summary
        .state
        .map(|s| ContainerState::parse(s.as_ref()))
        .unwrap_or(ContainerState::Dead);
    let name = summary
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let client = labels.get(CLIENT_LABEL).cloned().unwrap_or_default();
    let container = ObservedContainer {
        id: summary.id.unwrap_or_default(),
        name,
        service: labels.get(labels::SERVICE).cloned(),
        config_hash: labels.get(labels::CONFIG_HASH).cloned(),
        health: Health::from_status_text(&status),
        state,
        image: summary.image.unwrap_or_default(),
        created: summary.created.unwrap_or_default(),
        status,
    };
    (client, container)
}

fn health_command(check: &Healthcheck) -> Vec<String> {
    match check.test.first().map(String::as_str) {
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), check.test[1..].join(" ")],
        Some("CMD") => check.test[1..].to_vec(),
        _ => check.test.clone(),
    }
}

impl DockerRuntime {
    /// The bundle folder a client's containers were deployed from (their
    /// `com.docker.compose.project.working_dir` label), so that commands on an existing
    /// client need no `--out`. `None` when the client has no container or no such label.
    pub async fn client_bundle_dir(
        &self,
        client: &ClientId,
    ) -> Result<Option<String>, EngineError> {
        let summaries = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(Some(client))),
                ..Default::default()
            }))
            .await
            .map_err(map_err("list", "containers"))?;
        Ok(summaries.into_iter().find_map(|c| {
            c.labels.and_then(|labels| {
                labels
                    .get(stackbox_core::deploy::labels::WORKING_DIR)
                    .cloned()
            })
        }))
    }

    /// (created, id) of every network with exactly this name.
    async fn networks_named(&self, name: &str) -> Result<Vec<(String, String)>, EngineError> {
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(HashMap::from([(
                    "name".to_string(),
                    vec![name.to_string()],
                )])),
            }))
            .await
            .map_err(map_err("list networks named", name))?;
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .map(|n| {
                (
                    n.created.map(|c| c.to_string()).unwrap_or_default(),
                    n.id.unwrap_or_default(),
                )
            })
            .collect())
    }
}

impl ContainerRuntime for DockerRuntime {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(client = %client), err(level = "debug", Display))]
    async fn observe(&self, client: &ClientId) -> Result<Observed, EngineError> {
        let object = format!("client {client}");
        let filters = label_filter(Some(client));
        let (containers, networks, volumes) = tokio::join!(
            self.list_client_containers(Some(client)),
            self.docker.list_networks(Some(ListNetworksOptions {
                filters: Some(filters.clone()),
            })),
            self.docker.list_volumes(Some(ListVolumesOptions {
                filters: Some(filters.clone()),
            })),
        );
        Ok(Observed {
            containers: containers?.into_iter().map(|(_, c)| c).collect(),
            networks: networks
                .map_err(map_err("list the networks of", &object))?
                .into_iter()
                .filter_map(|n| n.name)
                .collect(),
            volumes: volumes
                .map_err(map_err("list the volumes of", &object))?
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect(),
        })
    }

    async fn list_client_containers(
        &self,
        client: Option<&ClientId>,
    ) -> Result<Vec<(String, ObservedContainer)>, EngineError> {
        let summaries = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(client)),
                ..Default::default()
            }))
            .await
            .map_err(map_err("list", "containers"))?;
        Ok(summaries.into_iter().map(observed).collect())
    }

    #[tracing::instrument(
        level = "debug",
        name = "engine",
        skip_all,
        fields(image = image),
        err(level = "debug", Display)
    )]
    async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(map_err("inspect image", image)(e)),
        }
        let (from_image, tag) = match image.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
            _ => (image.to_string(), "latest".to_string()),
        };
        let mut pull = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(from_image),
                tag: Some(tag),
                ..Default::default()
            }),
            None,
            None,
        );
        let pulled = tokio::time::timeout(Duration::from_secs(300), async {
            while let Some(progress) = pull.next().await {
                progress.map_err(|e| short(&e))?;
            }
            Ok::<(), String>(())
        })
        .await;
        match pulled {
            Ok(Ok(())) => Ok(()),
            Ok(Err(problem)) => Err(EngineError::ImageUnavailable {
                image: image.to_string(),
                for_service: String::new(),
                problem,
            }),
            Err(_) => Err(EngineError::ImageUnavailable {
                image: image.to_string(),
                for_service: String::new(),
                problem: "the pull did not finish within 5 minutes".into(),
            }),
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(network = %network.name), err(level = "debug", Display))]
    async fn create_network(&self, network: &DesiredNetwork) -> Result<(), EngineError> {
        // The engine accepts two networks with one name (API 1.41 only refuses that when asked,
        // and bollard's request no longer asks), and a second one makes the name ambiguous:
        // create only what is missing, and if a concurrent run made one too, keep the oldest.
        // Within one process (a `serve` deploying several clients at once, all sharing the
        // edge network) creations take turns, so no twin is ever made: a twin removed after
        // the fact leaves a moment in which the name is ambiguous and another deploy's
        // container start fails on it. The clean-up below remains for other processes.
        static CREATING: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
        let _turn = CREATING
            .get_or_init(|| tokio::sync::Mutex::new(()))
            .lock()
            .await;
        if !self.networks_named(&network.name).await?.is_empty() {
            return Ok(());
        }
        let created = self
            .docker
            .create_network(NetworkCreateRequest {
                name: network.name.clone(),
                driver: Some("bridge".into()),
                internal: Some(network.internal),
                labels: Some(network.labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => {}
            // libnetwork reports an exhausted address pool as "not found".
            Err(e) if short(&e).contains("address pool") => {
                return Err(EngineError::AddressPoolExhausted {
                    network: network.name.clone(),
                    message: short(&e),
                })
            }
            Err(e) => return Err(map_err("create network", &network.name)(e)),
        }
        let mut twins = self.networks_named(&network.name).await?;
        if twins.len() > 1 {
            twins.sort();
            for (_, id) in twins.into_iter().skip(1) {
                let _ = self.docker.remove_network(&id).await;
            }
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(network = name), err(level = "debug", Display))]
    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        // A few attempts: the engine releases a just-removed container's endpoints a moment
        // after the removal returns, and refuses the network meanwhile ("has active
        // endpoints").
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Whatever is still attached is not the client's (its containers are removed
            // first): an edge router, possibly another operator configuration's, that joined
            // the client's edge network. Detach it.
            let mut attached = Vec::new();
            if let Ok(network) = self.docker.inspect_network(name, None).await {
                for (key, endpoint) in network.containers.unwrap_or_default() {
                    // By name, not by key: a stale endpoint (its container gone, which
                    // libnetwork sometimes leaves behind after a concurrent removal) is keyed
                    // `ep-…` and only a forced disconnect by its endpoint name deletes it.
                    let target = endpoint.name.filter(|n| !n.is_empty()).unwrap_or(key);
                    self.disconnect_network(name, &target).await?;
                    attached.push(target);
                }
            }
            match self.docker.remove_network(name).await {
                Ok(()) => return Ok(()),
                Err(e) if status_of(&e) == Some(404) => return Ok(()),
                // Up to 10 s: on a loaded host the engine takes seconds to let go.
                Err(e) if attempt < 40 && short(&e).contains("active endpoints") => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) if !attached.is_empty() && short(&e).contains("active endpoints") => {
                    return Err(EngineError::Refused {
                        action: "remove network",
                        object: name.to_string(),
                        status: status_of(&e).unwrap_or(403),
                        message: format!(
                            "{}; still attached after forced disconnects: {}",
                            short(&e),
                            attached.join(", ")
                        ),
                    })
                }
                Err(e) => return Err(map_err("remove network", name)(e)),
            }
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(network = network, container = container), err(level = "debug", Display))]
    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<(), EngineError> {
        let result = self
            .docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: container.to_string(),
                    endpoint_config: Some(EndpointSettings {
                        aliases: (!aliases.is_empty()).then(|| aliases.to_vec()),
                        ..Default::default()
                    }),
                },
            )
            .await;
        match result {
            Ok(()) => Ok(()),
            // "endpoint ... already exists in network" comes back as 403 on 20.10.
            Err(e) if short(&e).contains("already exists") => Ok(()),
            Err(e) => Err(map_err("connect to network", network)(e)),
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(network = network, container = container), err(level = "debug", Display))]
    async fn disconnect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        let result = self
            .docker
            .disconnect_network(
                network,
                NetworkDisconnectRequest {
                    container: container.to_string(),
                    force: Some(true),
                },
            )
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404)) => Ok(()),
            Err(e) if short(&e).contains("is not connected") => Ok(()),
            Err(e) => Err(map_err("disconnect from network", network)(e)),
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(volume = %volume.name), err(level = "debug", Display))]
    async fn create_volume(&self, volume: &DesiredVolume) -> Result<(), EngineError> {
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.name.clone()),
                labels: Some(volume.labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(map_err("create volume", &volume.name))
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(volume = name), err(level = "debug", Display))]
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(map_err("remove volume", name)(e)),
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(container = %config.name, image = %config.image), err(level = "debug", Display))]
    async fn create_container(&self, config: &ContainerConfig) -> Result<String, EngineError> {
        let mounts = config
            .mounts
            .iter()
            .map(|m| match m {
                ContainerMount::Volume { name, target } => Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(name.clone()),
                    target: Some(target.clone()),
                    ..Default::default()
                },
                ContainerMount::Bind {
                    source,
                    target,
                    read_only,
                } => Mount {
                    typ: Some(MountType::BIND),
                    source: Some(source.clone()),
                    target: Some(target.clone()),
                    read_only: Some(*read_only),
                    ..Default::default()
                },
            })
            .collect();
        let mut port_bindings = HashMap::new();
        let mut exposed = Vec::new();
        for port in &config.ports {
            let key = format!("{}/tcp", port.container);
            exposed.push(key.clone());
            port_bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(port.host.to_string()),
                }]),
            );
        }
        let check = &config.healthcheck;
        let first = config.networks.first();
        let host_config = HostConfig {
            mounts: Some(mounts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            privileged: Some(false),
            nano_cpus: Some(i64::from(config.limits.millicpus) * 1_000_000),
            memory: Some(i64::from(config.limits.memory_mib) * 1024 * 1024),
            ulimits: config.nofile.map(|n| {
                vec![ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(n as i64),
                    hard: Some(n as i64),
                }]
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), config.logging.max_size.clone()),
                    ("max-file".to_string(), config.logging.max_files.to_string()),
                ])),
            }),
            network_mode: first.map(|n| n.network.clone()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(config.image.clone()),
            entrypoint: config.entrypoint.clone(),
            cmd: config.command.clone(),
            env: Some(config.env.clone()),
            labels: Some(config.labels.clone().into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            healthcheck: Some(HealthConfig {
                test: Some(check.test.clone()),
                interval: Some(i64::from(check.interval_seconds) * NANOS),
                timeout: Some(i64::from(check.timeout_seconds) * NANOS),
                retries: Some(i64::from(check.retries)),
                start_period: Some(i64::from(check.start_period_seconds) * NANOS),
                start_interval: None,
            }),
            stop_timeout: Some(i64::from(config.stop_grace_seconds)),
            host_config: Some(host_config),
            networking_config: first.map(|n| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    n.network.clone(),
                    EndpointSettings {
                        aliases: Some(n.aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(config.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(map_err("create container", &config.name))?;
        for extra in config.networks.iter().skip(1) {
            self.docker
                .connect_network(
                    &extra.network,
                    NetworkConnectRequest {
                        container: created.id.clone(),
                        endpoint_config: Some(EndpointSettings {
                            aliases: Some(extra.aliases.clone()),
                            ..Default::default()
                        }),
                    },
                )
                .await
                .map_err(map_err("connect to network", &extra.network))?;
        }
        Ok(created.id)
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(container = id), err(level = "debug", Display))]
    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(e) if status_of(&e) == Some(304) => Ok(()),
            Err(e) if short(&e).contains("setting rlimit") => Err(EngineError::Refused {
                action: "start container",
                object: id.to_string(),
                status: status_of(&e).unwrap_or(500),
                message: format!(
                    "{}; the engine's host does not allow the open-file limit this service \
                     asks for: raise dockerd's LimitNOFILE, or cap it with `[host] \
                     max_open_files` in the operator settings",
                    short(&e)
                ),
            }),
            Err(e) => Err(map_err("start container", id)(e)),
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(container = id), err(level = "debug", Display))]
    async fn stop_container(&self, id: &str) -> Result<(), EngineError> {
        // No `t`: the engine uses the container's own StopTimeout, set at creation.
        match self
            .docker
            .stop_container(id, None::<StopContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => Err(map_err("stop container", id)(e)),
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(container = id), err(level = "debug", Display))]
    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // Removal already in progress.
            Err(e) if status_of(&e) == Some(409) && short(&e).contains("in progress") => Ok(()),
            Err(e) => Err(map_err("remove container", id)(e)),
        }
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(container = id, to = name), err(level = "debug", Display))]
    async fn rename_container(&self, id: &str, name: &str) -> Result<(), EngineError> {
        match self
            .docker
            .rename_container(
                id,
                RenameContainerOptions {
                    name: name.to_string(),
                },
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(error) => {
                // Idempotent like every action: a rollback renames back containers whose
                // rename may never have happened, and the engine refuses a rename to the
                // name a container already has.
                let current = self
                    .docker
                    .inspect_container(id, None)
                    .await
                    .ok()
                    .and_then(|c| c.name);
                if current.as_deref().map(|n| n.trim_start_matches('/')) == Some(name) {
                    Ok(())
                } else {
                    Err(map_err("rename container", id)(error))
                }
            }
        }
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, EngineError> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(map_err("inspect container", id))?;
        let state = inspect.state.unwrap_or_default();
        let health = state.health.clone().unwrap_or_default();
        Ok(ContainerDetails {
            state: state
                .status
                .map(|s| ContainerState::parse(s.as_ref()))
                .unwrap_or(ContainerState::Dead),
            exit_code: state.exit_code,
            health: match health.status {
                Some(HealthStatusEnum::HEALTHY) => Some(Health::Healthy),
                Some(HealthStatusEnum::UNHEALTHY) => Some(Health::Unhealthy),
                Some(HealthStatusEnum::STARTING) => Some(Health::Starting),
                _ => None,
            },
            restart_count: inspect.restart_count.unwrap_or(0).max(0) as u64,
            healthcheck: inspect
                .config
                .as_ref()
                .and_then(|c| c.healthcheck.as_ref())
                .and_then(|h| {
                    let test = h.test.clone().filter(|t| {
                        matches!(t.first().map(String::as_str), Some("CMD" | "CMD-SHELL"))
                    })?;
                    let seconds = |nanos: Option<i64>, default: u32| {
                        nanos
                            .filter(|n| *n > 0)
                            .map(|n| u32::try_from(n / 1_000_000_000).unwrap_or(u32::MAX))
                            .unwrap_or(default)
                    };
                    Some(Healthcheck {
                        test,
                        interval_seconds: seconds(h.interval, 30),
                        timeout_seconds: seconds(h.timeout, 30),
                        retries: h.retries.and_then(|r| u32::try_from(r).ok()).unwrap_or(3),
                        start_period_seconds: seconds(h.start_period, 0),
                    })
                }),
            config_hash: inspect
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(labels::CONFIG_HASH).cloned()),
            health_log: health
                .log
                .unwrap_or_default()
                .into_iter()
                .map(|entry| {
                    format!(
                        "exit {}: {}",
                        entry.exit_code.unwrap_or(-1),
                        entry.output.unwrap_or_default().trim()
                    )
                })
                .collect(),
        })
    }

    async fn container_env(&self, id: &str, name: &str) -> Result<Option<String>, EngineError> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(map_err("inspect container", id))?;
        let prefix = format!("{name}=");
        Ok(inspect
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .find_map(|pair| pair.strip_prefix(&prefix).map(str::to_string)))
    }

    async fn probe(&self, id: &str, check: &Healthcheck) -> Result<Probe, EngineError> {
        let exec = match self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(health_command(check)),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
        {
            Ok(exec) => exec,
            // The container stopped or is restarting between the inspect and the exec: a
            // failed check, not a failed deploy; the caller looks at the state again.
            Err(e) if status_of(&e) == Some(409) => {
                return Ok(Probe {
                    passed: false,
                    output: short(&e),
                })
            }
            Err(e) => return Err(map_err("run the health check in", id)(e)),
        };
        let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
        let run = async {
            let mut output = String::new();
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = self
                .docker
                .start_exec(&exec.id, Some(StartExecOptions::default()))
                .await
                .map_err(map_err("run the health check in", id))?
            {
                while let Some(Ok(chunk)) = stream.next().await {
                    if output.len() < 4096 {
                        output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    }
                }
            }
            Ok::<String, EngineError>(output)
        };
        let output = match tokio::time::timeout(timeout, run).await {
            Ok(result) => result?,
            Err(_) => {
                return Ok(Probe {
                    passed: false,
                    output: format!("timed out after {} s", timeout.as_secs()),
                })
            }
        };
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(map_err("run the health check in", id))?;
        Ok(Probe {
            passed: inspect.exit_code == Some(0),
            output: output.trim().to_string(),
        })
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => text.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(e) => return Err(map_err("read the logs of", id)(e)),
            }
        }
        Ok(text)
    }

    fn logs(&self, id: &str, options: LogOptions) -> LogEntries {
        let id = id.to_string();
        let stream = self.docker.logs(
            &id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                timestamps: true,
                follow: options.follow,
                since: options.since.unwrap_or(0).clamp(0, i64::from(i32::MAX)) as i32,
                tail: options
                    .tail
                    .map_or_else(|| "all".to_string(), |tail| tail.to_string()),
                ..Default::default()
            }),
        );
        Box::pin(
            stream
                .map(move |chunk| match chunk {
                    Ok(output) => Ok(log_entries(output)),
                    Err(e) => Err(map_err("read the logs of", &id)(e)),
                })
                .flat_map(|entries| {
                    futures_util::stream::iter(match entries {
                        Ok(entries) => entries.into_iter().map(Ok).collect::<Vec<_>>(),
                        Err(error) => vec![Err(error)],
                    })
                }),
        )
    }

    async fn exec_streaming(
        &self,
        id: &str,
        command: &[String],
        input: Option<ExecSource<'_>>,
        output: ExecSink<'_>,
    ) -> Result<ExecOutcome, EngineError> {
        self.exec_as(id, command, ExecOptions::default(), input, output)
            .await
    }

    // Only the container: the command, its environment and its input can hold secrets.
    #[tracing::instrument(level = "debug", name = "engine.exec", skip_all, fields(container = id, user = options.user), err(level = "debug", Display))]
    async fn exec_as(
        &self,
        id: &str,
        command: &[String],
        options: ExecOptions<'_>,
        input: Option<ExecSource<'_>>,
        output: ExecSink<'_>,
    ) -> Result<ExecOutcome, EngineError> {
        use bollard::container::LogOutput;
        use tokio::io::AsyncWriteExt;
        let action = "run a command in";
        let env: Vec<String> = options
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(command.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    attach_stdin: Some(input.is_some()),
                    user: options.user.map(str::to_string),
                    working_dir: options.working_dir.map(str::to_string),
                    env: (!env.is_empty()).then_some(env),
                    ..Default::default()
                },
            )
            .await
            .map_err(map_err(action, id))?;
        let started = self
            .docker
            .start_exec(&exec.id, Some(StartExecOptions::default()))
            .await
            .map_err(map_err(action, id))?;
        let StartExecResults::Attached {
            output: mut stream,
            input: mut stdin,
        } = started
        else {
            return Err(EngineError::Transport {
                action,
                object: id.to_string(),
                problem: "the engine did not attach to the command".into(),
            });
        };
        let transport = |problem: String| EngineError::Transport {
            action,
            object: id.to_string(),
            problem,
        };
        // Input and output run together: a restore's tool may answer while it still reads.
        let feed = async {
            if let Some(source) = input {
                tokio::io::copy(source, &mut stdin)
                    .await
                    .map_err(|e| transport(format!("writing the command's input: {e}")))?;
            }
            // Closing the write half is the command's end of input.
            let _ = stdin.shutdown().await;
            Ok::<(), EngineError>(())
        };
        let drain = async {
            let mut stdout_bytes = 0u64;
            let mut stderr = String::new();
            while let Some(chunk) = stream.next().await {
                match chunk.map_err(|e| transport(short(&e)))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        output
                            .write_all(&message)
                            .await
                            .map_err(|e| transport(format!("writing the command's output: {e}")))?;
                        stdout_bytes += message.len() as u64;
                    }
                    LogOutput::StdErr { message } => {
                        if stderr.len() < 8192 {
                            stderr.push_str(&String::from_utf8_lossy(&message));
                        }
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
            output
                .flush()
                .await
                .map_err(|e| transport(format!("writing the command's output: {e}")))?;
            Ok::<(u64, String), EngineError>((stdout_bytes, stderr))
        };
        let (fed, drained) = tokio::join!(feed, drain);
        let (stdout_bytes, stderr) = drained?;
        fed?;
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(map_err(action, id))?;
        Ok(ExecOutcome {
            exit_code: inspect.exit_code,
            stdout_bytes,
            stderr: stderr.trim().chars().take(8192).collect(),
        })
    }

    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(volume = name), err(level = "debug", Display))]
    async fn volume_mountpoint(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(volume) => Ok(Some(volume.mountpoint)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(map_err("inspect volume", name)(e)),
        }
    }

    async fn container_stats(
        &self,
        id: &str,
        service: &str,
        host_memory: Option<u64>,
    ) -> Result<stackbox_core::usage::ContainerSample, EngineError> {
        let mut stream = Box::pin(self.docker.stats(
            id,
            Some(bollard::query_parameters::StatsOptions {
                stream: false,
                one_shot: true,
            }),
        ));
        let stats = match stream.next().await {
            Some(stats) => stats.map_err(map_err("read the resource use of", id))?,
            None => {
                return Err(EngineError::Transport {
                    action: "read the resource use of",
                    object: id.to_string(),
                    problem: "the engine sent no reading".to_string(),
                })
            }
        };
        Ok(usage_sample(service, &stats, host_memory))
    }
}

/// The counters of one stats reading, as the usage collector keeps them.
fn usage_sample(
    service: &str,
    stats: &bollard::models::ContainerStatsResponse,
    host_memory: Option<u64>,
) -> stackbox_core::usage::ContainerSample {
    use stackbox_core::usage;
    let cpu_ns = stats
        .cpu_stats
        .as_ref()
        .and_then(|cpu| cpu.cpu_usage.as_ref())
        .and_then(|usage| usage.total_usage)
        .unwrap_or(0);
    let memory = stats.memory_stats.as_ref();
    let memory_stats: std::collections::BTreeMap<String, u64> = memory
        .and_then(|m| m.stats.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let (mut rx, mut tx) = (0u64, 0u64);
    for network in stats.networks.iter().flat_map(|n| n.values()) {
        rx += network.rx_bytes.unwrap_or(0);
        tx += network.tx_bytes.unwrap_or(0);
    }
    let (mut read, mut write) = (0u64, 0u64);
    for entry in stats
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
    {
        match entry.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read += entry.value.unwrap_or(0),
            Some("write") => write += entry.value.unwrap_or(0),
            _ => {}
        }
    }
    usage::ContainerSample {
        service: service.to_string(),
        cpu_seconds_total: cpu_ns as f64 / 1e9,
        memory_working_set_bytes: usage::working_set_bytes(
            memory.and_then(|m| m.usage).unwrap_or(0),
            &memory_stats,
        ),
        memory_limit_bytes: memory
            .and_then(|m| m.limit)
            .and_then(|limit| usage::memory_limit(limit, host_memory)),
        network_receive_bytes_total: rx,
        network_transmit_bytes_total: tx,
        block_read_bytes_total: read,
        block_write_bytes_total: write,
    }
}

/// What `stackbox doctor` reads of the engine. Inherent, not in [`ContainerRuntime`]: the
/// lifecycle needs none of it.
impl DockerRuntime {
    /// The engine host's memory (bytes) and the engine's data root, for the usage collector:
    /// a container "limited" by the host's memory has no limit, and the data root's
    /// filesystem is the disk every client's volumes fill.
    pub async fn host_resources(&self) -> Result<(Option<u64>, Option<String>), EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(map_err("read the facts of", "the engine"))?;
        let memory = info.mem_total.and_then(|m| u64::try_from(m).ok());
        Ok((memory, info.docker_root_dir))
    }

    /// The engine's version, API, operating system, data root and address pools.
    pub async fn engine_facts(&self) -> Result<stackbox_core::doctor::EngineFacts, EngineError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(map_err("read the version of", "the engine"))?;
        let info = self
            .docker
            .info()
            .await
            .map_err(map_err("read the settings of", "the engine"))?;
        Ok(stackbox_core::doctor::EngineFacts {
            server_version: version.version.or(info.server_version).unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            operating_system: info.operating_system.unwrap_or_default(),
            data_root: info.docker_root_dir,
            address_pools: info
                .default_address_pools
                .unwrap_or_default()
                .into_iter()
                .filter_map(|pool| Some((pool.base?, pool.size?)))
                .collect(),
        })
    }

    /// The subnets of every network on the engine (IPv4 and IPv6, as the engine writes them),
    /// and whether a network with exactly this name exists.
    pub async fn network_subnets(&self, named: &str) -> Result<(Vec<String>, bool), EngineError> {
        let networks = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(map_err("list", "networks"))?;
        let exists = networks.iter().any(|n| n.name.as_deref() == Some(named));
        let subnets = networks
            .into_iter()
            .filter_map(|n| n.ipam.and_then(|ipam| ipam.config))
            .flatten()
            .filter_map(|config| config.subnet)
            .collect();
        Ok((subnets, exists))
    }

    /// Every host port a running container publishes, with the container's name and client.
    pub async fn published_ports(
        &self,
    ) -> Result<Vec<stackbox_core::doctor::PortHolder>, EngineError> {
        let summaries = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(map_err("list", "containers"))?;
        let mut holders = Vec::new();
        for summary in summaries {
            let container = summary
                .names
                .unwrap_or_default()
                .into_iter()
                .next()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            let client = summary
                .labels
                .as_ref()
                .and_then(|labels| labels.get(CLIENT_LABEL).cloned());
            let mut ports: Vec<u16> = summary
                .ports
                .unwrap_or_default()
                .into_iter()
                .filter_map(|port| port.public_port)
                .collect();
            // Published on IPv4 and IPv6: one holder per port.
            ports.sort_unstable();
            ports.dedup();
            holders.extend(
                ports
                    .into_iter()
                    .map(|host_port| stackbox_core::doctor::PortHolder {
                        host_port,
                        container: container.clone(),
                        client: client.clone(),
                    }),
            );
        }
        Ok(holders)
    }

    /// Whether the engine has this image (no pull is tried).
    #[tracing::instrument(level = "debug", name = "engine", skip_all, fields(image = image), err(level = "debug", Display))]
    pub async fn has_image(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(map_err("inspect image", image)(e)),
        }
    }
}
