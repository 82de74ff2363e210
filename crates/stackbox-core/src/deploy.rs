//! From a desired [`Stack`] to engine actions, without touching an engine.
//!
//! One path for every change: [`desired_state`] resolves the stack into exact container
//! configurations (secrets filled in, bundle paths made absolute, a configuration hash per
//! container); the engine adapter reads what is there into an [`Observed`]; [`plan`] compares
//! the two and says, per service, whether to keep, start, create or replace its container.
//! First deploy, redeploy after a change and repair after a crash are the same computation.
//!
//! Everything StackBox creates carries docker compose's labels (project = client id,
//! service, configuration hash), so `docker compose -p <client-id> ps` sees the stack and
//! StackBox finds what it owns from the engine alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::ClientId;
use crate::operator::{Limits, LogRotation};
use crate::plan::ServiceKind;
use crate::render::{Bundle, WritePolicy};
use crate::secrets::Secrets;
use crate::stack::{
    EnvPart, Healthcheck, Mount, PortSpec, Stack, CLIENT_LABEL, ROLE_LABEL, SERVICE_LABEL,
};
use crate::CoreError;

/// docker compose's label names (compose-spec "Labels" and compose v1/v2 sources).
pub mod labels {
    pub const PROJECT: &str = "com.docker.compose.project";
    pub const SERVICE: &str = "com.docker.compose.service";
    pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
    pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
    pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
    pub const NETWORK: &str = "com.docker.compose.network";
    pub const VOLUME: &str = "com.docker.compose.volume";
}

/// Suffix of a container kept aside while its replacement proves healthy.
pub const REPLACED_SUFFIX: &str = "-replaced";

/// Docker's default stop timeout, used when a service names none.
pub const DEFAULT_STOP_GRACE_SECONDS: u32 = 10;

/// The engine name of a service's container (compose v2's `<project>-<service>-1`).
pub fn container_name(id: &ClientId, service: ServiceKind) -> String {
    format!("{id}-{}-1", service.name())
}

/// How a container attaches to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAttachment {
    pub network: String,
    /// DNS names on that network: the service name, as compose gives it.
    pub aliases: Vec<String>,
}

/// A mount, resolved for the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ContainerMount {
    /// A named volume.
    Volume { name: String, target: String },
    /// A host path: only bundle files (read-only) and, for Traefik, the Docker socket.
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
}

/// One container exactly as the engine should create it.
///
/// `env` holds resolved secrets: `Debug` leaves its values out, and the type is not
/// `Serialize`, so it cannot end up in logs or JSON output by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    pub service: ServiceKind,
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `NAME=value`, sorted by name.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub networks: Vec<NetworkAttachment>,
    pub mounts: Vec<ContainerMount>,
    pub ports: Vec<PortSpec>,
    pub healthcheck: Healthcheck,
    pub limits: Limits,
    pub nofile: Option<u64>,
    pub stop_grace_seconds: u32,
    pub logging: LogRotation,
    pub depends_on: Vec<ServiceKind>,
    /// Run inside the container once it is healthy, on every deploy (kept, started, created
    /// or replaced), before any service that depends on it starts.
    pub converge: Option<Converge>,
    /// SHA-256 over everything above and the contents of the bundle files it mounts; also
    /// stored as the `com.docker.compose.config-hash` label.
    pub config_hash: String,
}

/// What a running service must be told on every deploy, because its image applies it only
/// on the first start: the databases, users, grants and passwords of a database server.
/// The command is idempotent; it is derived from bundle files that the configuration hash
/// already covers, so it is not hashed itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converge {
    /// For messages: "databases, users and passwords".
    pub what: &'static str,
    pub command: Vec<String>,
    /// The environment variable whose value in the container this one replaces is written,
    /// as one line, to the command's standard input: the superuser password the data may
    /// still hold when it was just rotated (or, in a rollback, the one it was rotated to).
    pub previous_login: &'static str,
}

impl fmt::Debug for ContainerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&str> = self
            .env
            .iter()
            .map(|pair| pair.split('=').next().unwrap_or(""))
            .collect();
        f.debug_struct("ContainerConfig")
            .field("service", &self.service)
            .field("name", &self.name)
            .field("image", &self.image)
            .field("env (names only)", &env_names)
            .field("config_hash", &self.config_hash)
            .finish_non_exhaustive()
    }
}

/// The hashed view of a container: everything but the hash label itself.
#[derive(Serialize)]
struct HashInput<'a> {
    image: &'a str,
    entrypoint: &'a Option<Vec<String>>,
    command: &'a Option<Vec<String>>,
    env: &'a [String],
    labels: &'a BTreeMap<String, String>,
    networks: &'a [NetworkAttachment],
    mounts: &'a [ContainerMount],
    ports: &'a [PortSpec],
    healthcheck: &'a Healthcheck,
    limits: &'a Limits,
    nofile: Option<u64>,
    stop_grace_seconds: u32,
    logging: &'a LogRotation,
    /// SHA-256 of each bundle file the container mounts, by bundle path.
    files: BTreeMap<&'a str, String>,
}

/// A network StackBox creates for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredNetwork {
    pub key: &'static str,
    pub name: String,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

/// A volume StackBox creates for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredVolume {
    pub key: &'static str,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The client's stack resolved for an engine.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub client_id: ClientId,
    pub networks: Vec<DesiredNetwork>,
    pub volumes: Vec<DesiredVolume>,
    /// In dependency order: every service comes after the services it depends on.
    pub containers: Vec<ContainerConfig>,
}

impl DesiredState {
    pub fn container(&self, service: ServiceKind) -> Option<&ContainerConfig> {
        self.containers.iter().find(|c| c.service == service)
    }
}

impl ContainerConfig {
    /// Computes the configuration hash (over everything but the hash itself, plus the
    /// digests of the bundle files the container mounts) and records it as the label.
    fn sealed(mut self, files: BTreeMap<&str, String>) -> ContainerConfig {
        self.labels.remove(labels::CONFIG_HASH);
        let hash = sha256_hex(
            &serde_json::to_vec(&HashInput {
                image: &self.image,
                entrypoint: &self.entrypoint,
                command: &self.command,
                env: &self.env,
                labels: &self.labels,
                networks: &self.networks,
                mounts: &self.mounts,
                ports: &self.ports,
                healthcheck: &self.healthcheck,
                limits: &self.limits,
                nofile: self.nofile,
                stop_grace_seconds: self.stop_grace_seconds,
                logging: &self.logging,
                files,
            })
            .expect("a container configuration always serialises"),
        );
        self.labels.insert(labels::CONFIG_HASH.into(), hash.clone());
        self.config_hash = hash;
        self
    }
}

impl ContainerConfig {
    fn with_bind_source(mut self, placeholder: &str, path: &str) -> ContainerConfig {
        for mount in &mut self.mounts {
            if let ContainerMount::Bind { source, .. } = mount {
                if source == placeholder {
                    *source = path.to_string();
                }
            }
        }
        self
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn owner_labels(id: &ClientId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLIENT_LABEL.to_string(), id.to_string()),
        (labels::PROJECT.to_string(), id.to_string()),
    ])
}

/// Resolves `stack` for an engine.
///
/// `bundle_dir` is the absolute path of the client's bundle folder on the engine's host;
/// `bundle` its files (their contents feed the configuration hash, so a changed
/// `website.conf` replaces the website container). `host_env` answers the operator's
/// environment variables a service passes through (DNS provider credentials).
pub fn desired_state(
    stack: &Stack,
    secrets: &Secrets,
    bundle: &Bundle,
    bundle_dir: &str,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<DesiredState, CoreError> {
    if !bundle_dir.starts_with('/') {
        return Err(CoreError::invalid(
            "bundle folder",
            format!("{bundle_dir:?} must be an absolute path"),
        ));
    }
    let bundle_dir = bundle_dir.trim_end_matches('/');
    let id = &stack.client_id;
    let network_names: BTreeMap<&str, &str> = stack
        .networks
        .iter()
        .map(|n| (n.key, n.name.as_str()))
        .collect();
    let volume_names: BTreeMap<&str, &str> = stack
        .volumes
        .iter()
        .map(|v| (v.key, v.name.as_str()))
        .collect();

    let networks = stack
        .networks
        .iter()
        .map(|n| {
            let mut labels = owner_labels(id);
            labels.insert(labels::NETWORK.into(), n.key.into());
            DesiredNetwork {
                key: n.key,
                name: n.name.clone(),
                internal: n.internal,
                labels,
            }
        })
        .collect();
    let volumes = stack
        .volumes
        .iter()
        .map(|v| {
            let mut labels = owner_labels(id);
            labels.insert(labels::VOLUME.into(), v.key.into());
            DesiredVolume {
                key: v.key,
                name: v.name.clone(),
                labels,
            }
        })
        .collect();

    let mut containers = Vec::new();
    for service in dependency_order(stack) {
        let mut env = Vec::new();
        for (name, value) in &service.environment {
            let mut resolved = String::new();
            for part in &value.0 {
                match part {
                    EnvPart::Text(text) => resolved.push_str(text),
                    EnvPart::Secret(key) => match secrets.get(*key) {
                        Some(secret) => resolved.push_str(secret),
                        None => {
                            return Err(CoreError::MissingSecret {
                                name: key.env_name(),
                            })
                        }
                    },
                    EnvPart::Host(variable) => match host_env(variable) {
                        Some(v) => resolved.push_str(&v),
                        None => {
                            return Err(CoreError::invalid(
                                format!("acme.dns_env ({variable})"),
                                format!(
                                    "{variable} is not set in StackBox's environment; export it \
                                     or remove it from acme.dns_env"
                                ),
                            ))
                        }
                    },
                }
            }
            env.push(format!("{name}={resolved}"));
        }

        let mut files = BTreeMap::new();
        let mut mounts = Vec::new();
        for mount in &service.mounts {
            match mount {
                Mount::Volume { volume, target } => mounts.push(ContainerMount::Volume {
                    name: volume_names
                        .get(volume)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| format!("{id}_{volume}")),
                    target: target.to_string(),
                }),
                Mount::BundleFile {
                    source,
                    target,
                    read_only,
                } => {
                    // A file, or a folder of the bundle (the website): hash every file under it.
                    // Files Traefik writes itself (acme.json) are state, not configuration.
                    let folder = format!("{source}/");
                    for (path, file) in &bundle.files {
                        if (path == source || path.starts_with(&folder))
                            && file.policy == WritePolicy::Replace
                        {
                            files.insert(path.as_str(), sha256_hex(&file.contents));
                        }
                    }
                    mounts.push(ContainerMount::Bind {
                        source: format!("{bundle_dir}/{source}"),
                        target: target.to_string(),
                        read_only: *read_only,
                    });
                }
                Mount::DockerSocket => mounts.push(ContainerMount::Bind {
                    source: "/var/run/docker.sock".into(),
                    target: "/var/run/docker.sock".into(),
                    read_only: true,
                }),
            }
        }

        let networks: Vec<NetworkAttachment> = service
            .networks
            .iter()
            .map(|key| NetworkAttachment {
                network: network_names
                    .get(key)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| format!("{id}_{key}")),
                aliases: vec![service.kind.name().to_string()],
            })
            .collect();

        let mut labels = service.labels.clone();
        labels.extend(owner_labels(id));
        labels.insert(labels::SERVICE.into(), service.kind.name().into());
        labels.insert(labels::CONTAINER_NUMBER.into(), "1".into());
        labels.insert(labels::ONEOFF.into(), "False".into());
        labels.insert(labels::WORKING_DIR.into(), bundle_dir.to_string());
        labels.insert(
            labels::CONFIG_FILES.into(),
            format!("{bundle_dir}/docker-compose.yml"),
        );
        labels.insert(SERVICE_LABEL.into(), service.kind.name().into());

        let stop_grace_seconds = service
            .stop_grace_seconds
            .unwrap_or(DEFAULT_STOP_GRACE_SECONDS);
        let config = ContainerConfig {
            service: service.kind,
            name: container_name(id, service.kind),
            image: service.image.clone(),
            entrypoint: service.entrypoint.clone(),
            command: service.command.clone(),
            env,
            labels,
            networks,
            mounts,
            ports: service.ports.clone(),
            healthcheck: service.healthcheck.clone(),
            limits: service.limits,
            nofile: service.nofile,
            stop_grace_seconds,
            logging: service.logging.clone(),
            depends_on: service.depends_on.clone(),
            converge: converge_for(service),
            config_hash: String::new(),
        };
        containers.push(config.sealed(files));
    }
    Ok(DesiredState {
        client_id: id.clone(),
        networks,
        volumes,
        containers,
    })
}

/// A database server that sources one of StackBox's init scripts converges with it on every
/// deploy (see [`Converge`]).
fn converge_for(service: &crate::stack::ServiceSpec) -> Option<Converge> {
    use crate::render::sql;
    service.mounts.iter().find_map(|mount| match mount {
        Mount::BundleFile { source, .. } if *source == sql::MYSQL_INIT_FILE => Some(Converge {
            what: "databases, users and passwords",
            command: sql::mysql_converge_command(),
            previous_login: "MARIADB_ROOT_PASSWORD",
        }),
        Mount::BundleFile { source, .. } if *source == sql::POSTGRES_INIT_FILE => Some(Converge {
            what: "databases, roles and passwords",
            command: sql::postgres_converge_command(),
            previous_login: "POSTGRES_PASSWORD",
        }),
        _ => None,
    })
}

const EDGE_CONFIG_PLACEHOLDER: &str = "edge/traefik.yml";

/// Label value of `io.stackbox.role` on the shared edge router.
pub const EDGE_ROLE: &str = "edge";

/// The shared edge router of a host: its own network (where it publishes the host's ports)
/// and its container. Each client's edge network is connected to it at deploy time.
#[derive(Debug, Clone)]
pub struct EdgeRouter {
    pub network: DesiredNetwork,
    pub container: ContainerConfig,
}

/// The edge router, when the operator's ingress is `edge`. `config_path` is the absolute
/// path of its rendered static configuration ([`crate::render::traefik::render_edge`]).
pub fn edge_router(
    operator: &crate::operator::OperatorConfig,
    config_path: &str,
    config_contents: &[u8],
) -> Option<EdgeRouter> {
    let crate::operator::Ingress::Edge {
        router,
        http,
        https,
    } = &operator.ingress
    else {
        return None;
    };
    let labels = BTreeMap::from([
        (ROLE_LABEL.to_string(), EDGE_ROLE.to_string()),
        (labels::PROJECT.to_string(), router.clone()),
        (labels::SERVICE.to_string(), "edge".to_string()),
        (labels::CONTAINER_NUMBER.to_string(), "1".to_string()),
        (labels::ONEOFF.to_string(), "False".to_string()),
    ]);
    let network = DesiredNetwork {
        key: "edge",
        name: router.clone(),
        internal: false,
        labels: BTreeMap::from([(ROLE_LABEL.to_string(), EDGE_ROLE.to_string())]),
    };
    let mounts = vec![
        ContainerMount::Bind {
            // Hashed under a fixed name: the router is shared by every bundle root on the
            // host, and only what the file says (its digest is hashed) may replace it.
            source: EDGE_CONFIG_PLACEHOLDER.into(),
            target: "/etc/traefik/traefik.yml".into(),
            read_only: true,
        },
        ContainerMount::Bind {
            source: "/var/run/docker.sock".into(),
            target: "/var/run/docker.sock".into(),
            read_only: true,
        },
    ];
    let networks = vec![NetworkAttachment {
        network: router.clone(),
        aliases: vec!["edge".into()],
    }];
    let ports = vec![
        PortSpec {
            host: *http,
            container: 80,
        },
        PortSpec {
            host: *https,
            container: 443,
        },
    ];
    let healthcheck = Healthcheck {
        test: ["CMD", "traefik", "healthcheck", "--ping"]
            .map(String::from)
            .to_vec(),
        interval_seconds: 10,
        timeout_seconds: 5,
        retries: 5,
        start_period_seconds: 10,
    };
    let limits = Limits {
        millicpus: 1000,
        memory_mib: 256,
    };
    let image = operator
        .images
        .image(crate::plan::ImageKey::Traefik)
        .to_string();
    let logging = operator.logging.clone();
    let mut files = BTreeMap::new();
    files.insert("traefik.yml", sha256_hex(config_contents));
    Some(EdgeRouter {
        network,
        container: ContainerConfig {
            service: ServiceKind::Traefik,
            name: router.clone(),
            image,
            entrypoint: None,
            command: None,
            env: Vec::new(),
            labels,
            networks,
            mounts,
            ports,
            healthcheck,
            limits,
            nofile: None,
            stop_grace_seconds: DEFAULT_STOP_GRACE_SECONDS,
            logging,
            depends_on: Vec::new(),
            converge: None,
            config_hash: String::new(),
        }
        .sealed(files)
        .with_bind_source(EDGE_CONFIG_PLACEHOLDER, config_path),
    })
}

/// The stack's services, each after everything it depends on (stable otherwise).
fn dependency_order(stack: &Stack) -> Vec<&crate::stack::ServiceSpec> {
    let mut placed: BTreeSet<ServiceKind> = BTreeSet::new();
    let mut ordered = Vec::new();
    while ordered.len() < stack.services.len() {
        let before = ordered.len();
        for service in &stack.services {
            if !placed.contains(&service.kind)
                && service
                    .depends_on
                    .iter()
                    .all(|d| placed.contains(d) || stack.service(*d).is_none())
            {
                placed.insert(service.kind);
                ordered.push(service);
            }
        }
        // The stack builder never makes a cycle; if one ever appears, keep the rest in
        // declaration order rather than loop forever.
        if ordered.len() == before {
            for service in &stack.services {
                if placed.insert(service.kind) {
                    ordered.push(service);
                }
            }
        }
    }
    ordered
}

/// A container's state, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn parse(text: &str) -> ContainerState {
        match text {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            _ => ContainerState::Dead,
        }
    }
}

/// A container's health-check status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    /// Reads the health from the engine's one-line status (`Up 5 minutes (healthy)`), which
    /// the container list carries on every API version (a `Health` field came later).
    pub fn from_status_text(status: &str) -> Option<Health> {
        if status.contains("(healthy)") {
            Some(Health::Healthy)
        } else if status.contains("(unhealthy)") {
            Some(Health::Unhealthy)
        } else if status.contains("(health: starting)") {
            Some(Health::Starting)
        } else {
            None
        }
    }
}

/// One container found on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    /// The `com.docker.compose.service` label.
    pub service: Option<String>,
    pub config_hash: Option<String>,
    pub state: ContainerState,
    pub health: Option<Health>,
    pub image: String,
    /// Unix seconds.
    pub created: i64,
    /// The engine's one-line status, e.g. `Up 3 minutes (healthy)`.
    pub status: String,
}

impl ObservedContainer {
    pub fn service_kind(&self) -> Option<ServiceKind> {
        self.service.as_deref().and_then(ServiceKind::from_name)
    }

    pub fn is_set_aside(&self) -> bool {
        self.name.ends_with(REPLACED_SUFFIX)
    }
}

/// What the engine holds of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// What happens to one service's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    /// Running with this exact configuration: nothing to do.
    Keep { id: String },
    /// Same configuration, stopped: start it.
    Start { id: String },
    /// No container yet.
    Create,
    /// Set the old container aside, create the new one, and remove the old one once the
    /// new one is healthy (or put it back if it is not).
    Replace {
        old: ObservedContainer,
        reason: ReplaceReason,
    },
}

/// Why a container is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceReason {
    ConfigurationChanged,
    Unhealthy,
    Broken,
}

/// The plan for one service.
#[derive(Debug, Clone)]
pub struct ServiceStep {
    pub config: ContainerConfig,
    pub action: ServiceAction,
}

/// Everything to do to bring the engine to the desired state.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub create_networks: Vec<DesiredNetwork>,
    pub create_volumes: Vec<DesiredVolume>,
    /// In dependency order.
    pub services: Vec<ServiceStep>,
    /// Containers of the client that no desired service owns (a service the plan no longer
    /// has, duplicates, containers set aside by an interrupted deploy): removed once the
    /// deploy succeeded.
    pub remove_after: Vec<ObservedContainer>,
    /// Volumes of the client that no desired service mounts: the data of apps a plan change
    /// or a switched-off feature removed. Never removed by a deploy (switching the app on
    /// again finds its data); only a destroy removes them.
    pub kept_volumes: Vec<String>,
}

impl DeployPlan {
    /// True when the engine already matches: a redeploy with no change does nothing.
    pub fn is_noop(&self) -> bool {
        self.create_networks.is_empty()
            && self.create_volumes.is_empty()
            && self.remove_after.is_empty()
            && self
                .services
                .iter()
                .all(|s| matches!(s.action, ServiceAction::Keep { .. }))
    }

    pub fn changed_services(&self) -> Vec<ServiceKind> {
        self.services
            .iter()
            .filter(|s| !matches!(s.action, ServiceAction::Keep { .. }))
            .map(|s| s.config.service)
            .collect()
    }
}

/// Compares desired and observed state.
/// The client's volumes on the engine that no service of the stack mounts (`wanted` are the
/// stack's volume names), sorted: the data of apps switched off or above the plan, kept by
/// every deploy until the operator prunes it (`stackbox prune`) or destroys the client.
pub fn unused_volumes(wanted: &[&str], observed: &Observed) -> Vec<String> {
    let mut unused: Vec<String> = observed
        .volumes
        .iter()
        .filter(|name| !wanted.contains(&name.as_str()))
        .cloned()
        .collect();
    unused.sort();
    unused
}

pub fn plan(desired: &DesiredState, observed: &Observed) -> DeployPlan {
    let create_networks = desired
        .networks
        .iter()
        .filter(|n| !observed.networks.contains(&n.name))
        .cloned()
        .collect();
    let create_volumes = desired
        .volumes
        .iter()
        .filter(|v| !observed.volumes.contains(&v.name))
        .cloned()
        .collect();

    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut services = Vec::new();
    for config in &desired.containers {
        // The container with the service's own name; anything else of that service is extra.
        let current = observed
            .containers
            .iter()
            .find(|c| c.name == config.name && c.service_kind() == Some(config.service));
        let action = match current {
            None => ServiceAction::Create,
            Some(current) => {
                claimed.insert(current.id.as_str());
                let same = current.config_hash.as_deref() == Some(config.config_hash.as_str());
                match (same, current.state, current.health) {
                    (false, _, _) => ServiceAction::Replace {
                        old: current.clone(),
                        reason: ReplaceReason::ConfigurationChanged,
                    },
                    (true, _, Some(Health::Unhealthy)) => ServiceAction::Replace {
                        old: current.clone(),
                        reason: ReplaceReason::Unhealthy,
                    },
                    (true, ContainerState::Running, _) => ServiceAction::Keep {
                        id: current.id.clone(),
                    },
                    (true, ContainerState::Created | ContainerState::Exited, _) => {
                        ServiceAction::Start {
                            id: current.id.clone(),
                        }
                    }
                    (true, _, _) => ServiceAction::Replace {
                        old: current.clone(),
                        reason: ReplaceReason::Broken,
                    },
                }
            }
        };
        services.push(ServiceStep {
            config: config.clone(),
            action,
        });
    }
    let remove_after = observed
        .containers
        .iter()
        .filter(|c| !claimed.contains(c.id.as_str()))
        .cloned()
        .collect();
    let wanted: Vec<&str> = desired.volumes.iter().map(|v| v.name.as_str()).collect();
    let kept_volumes = unused_volumes(&wanted, observed);
    DeployPlan {
        create_networks,
        create_volumes,
        services,
        remove_after,
        kept_volumes,
    }
}

/// A client's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OverallState {
    /// Every service running and healthy.
    Running,
    /// Every service running, some still passing their first health checks.
    Starting,
    /// Some services running, others missing, stopped or unhealthy.
    Degraded,
    /// Containers exist, none is running (stopped on purpose: data kept).
    Stopped,
    /// Nothing serves: containers crash, restart in a loop or fail their health checks.
    Failed,
    /// No container of the client on the engine.
    Absent,
}

/// Sums up a client's containers. `expected` are the service names the client should have
/// (empty when unknown: then the containers found define the stack).
pub fn overall_state(expected: &[String], containers: &[ObservedContainer]) -> OverallState {
    let live: Vec<&ObservedContainer> = containers.iter().filter(|c| !c.is_set_aside()).collect();
    if live.is_empty() {
        return OverallState::Absent;
    }
    let running: Vec<&ObservedContainer> = live
        .iter()
        .copied()
        .filter(|c| c.state == ContainerState::Running && c.health != Some(Health::Unhealthy))
        .collect();
    let missing = expected
        .iter()
        .any(|name| !live.iter().any(|c| c.service.as_deref() == Some(name)));
    let crashing = live.iter().any(|c| {
        matches!(c.state, ContainerState::Restarting | ContainerState::Dead)
            || c.health == Some(Health::Unhealthy)
    });
    if running.is_empty() {
        return if crashing {
            OverallState::Failed
        } else {
            OverallState::Stopped
        };
    }
    if running.len() < live.len() || missing {
        return OverallState::Degraded;
    }
    if running.iter().any(|c| c.health == Some(Health::Starting)) {
        OverallState::Starting
    } else {
        OverallState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientSpec;
    use crate::operator::OperatorConfig;
    use crate::render::render;
    use crate::secrets::TestRandom;

    const CLIENT: &str = r##"
company_name = "Acme Bakery"
domain = "acme-bakery.example"
plan = "professional"
admin_email = "owner@acme-bakery.example"
"##;

    fn desired_for(operator: &OperatorConfig, spec: &ClientSpec) -> DesiredState {
        // A fixed id: the id of an existing client never changes with its name.
        let id = ClientId::parse("acmebakery-0000feed").unwrap();
        let mut secrets = Secrets::new();
        secrets.fill_missing(
            &crate::secrets::SecretKey::needed_for(&spec.apps()),
            &mut TestRandom(7),
        );
        let rendered = render(spec, &id, &secrets, operator).unwrap();
        desired_state(
            &rendered.stack,
            &secrets,
            &rendered.bundle,
            "/srv/stackbox/clients/x",
            &|_| None,
        )
        .unwrap()
    }

    fn spec() -> ClientSpec {
        ClientSpec::from_toml(CLIENT).unwrap()
    }

    fn observed_as_deployed(desired: &DesiredState) -> Observed {
        Observed {
            containers: desired
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| ObservedContainer {
                    id: format!("id{i}"),
                    name: c.name.clone(),
                    service: Some(c.service.name().to_string()),
                    config_hash: Some(c.config_hash.clone()),
                    state: ContainerState::Running,
                    health: Some(Health::Healthy),
                    image: c.image.clone(),
                    created: 0,
                    status: "Up 1 minute (healthy)".into(),
                })
                .collect(),
            networks: desired.networks.iter().map(|n| n.name.clone()).collect(),
            volumes: desired.volumes.iter().map(|v| v.name.clone()).collect(),
        }
    }

    #[test]
    fn first_deploy_creates_every_network_volume_and_container() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let plan = plan(&desired, &Observed::default());
        assert_eq!(plan.create_networks.len(), desired.networks.len());
        assert_eq!(plan.create_volumes.len(), desired.volumes.len());
        assert!(plan
            .services
            .iter()
            .all(|s| s.action == ServiceAction::Create));
        assert!(!plan.is_noop());
    }

    #[test]
    fn redeploy_of_an_unchanged_healthy_stack_is_a_noop() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let observed = observed_as_deployed(&desired);
        assert!(plan(&desired, &observed).is_noop());
    }

    #[test]
    fn configuration_hash_is_deterministic_and_follows_mounted_file_contents() {
        let operator = OperatorConfig::default();
        let a = desired_for(&operator, &spec());
        let b = desired_for(&operator, &spec());
        for (x, y) in a.containers.iter().zip(&b.containers) {
            assert_eq!(x.config_hash, y.config_hash, "{:?}", x.service);
        }
        // A new company name changes only what shows it: the website (index.html), EspoCRM
        // (config.php), Cal.com and Plausible (environment); nothing else is recreated.
        let mut renamed = spec();
        renamed.company_name = crate::client::CompanyName::parse("Acme Bakery & Sons").unwrap();
        let c = desired_for(&operator, &renamed);
        let changed: Vec<ServiceKind> = a
            .containers
            .iter()
            .zip(&c.containers)
            .filter(|(x, y)| x.config_hash != y.config_hash)
            .map(|(x, _)| x.service)
            .collect();
        assert_eq!(
            changed,
            vec![
                ServiceKind::Website,
                ServiceKind::Espocrm,
                ServiceKind::Calcom,
                ServiceKind::Plausible
            ]
        );
    }

    #[test]
    fn a_changed_service_is_replaced_and_only_that_one() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let mut observed = observed_as_deployed(&desired);
        let redis = observed
            .containers
            .iter_mut()
            .find(|c| c.service.as_deref() == Some("redis"))
            .unwrap();
        redis.config_hash = Some("old".into());
        let plan = plan(&desired, &observed);
        assert_eq!(plan.changed_services(), vec![ServiceKind::Redis]);
        assert!(matches!(
            plan.services
                .iter()
                .find(|s| s.config.service == ServiceKind::Redis)
                .unwrap()
                .action,
            ServiceAction::Replace {
                reason: ReplaceReason::ConfigurationChanged,
                ..
            }
        ));
    }

    #[test]
    fn stopped_containers_are_started_and_unhealthy_ones_replaced() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let mut observed = observed_as_deployed(&desired);
        observed.containers[0].state = ContainerState::Exited;
        observed.containers[0].health = None;
        observed.containers[1].health = Some(Health::Unhealthy);
        let plan = plan(&desired, &observed);
        assert!(matches!(
            plan.services[0].action,
            ServiceAction::Start { .. }
        ));
        assert!(matches!(
            plan.services[1].action,
            ServiceAction::Replace {
                reason: ReplaceReason::Unhealthy,
                ..
            }
        ));
    }

    #[test]
    fn containers_no_service_owns_are_removed_after_the_deploy() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let mut observed = observed_as_deployed(&desired);
        let mut aside = observed.containers[2].clone();
        aside.id = "aside".into();
        aside.name = format!("{}{REPLACED_SUFFIX}", aside.name);
        observed.containers.push(aside);
        let mut gone = observed.containers[0].clone();
        gone.id = "gone".into();
        gone.name = "x-mailtrain-1".into();
        gone.service = Some("mailtrain".into());
        observed.containers.push(gone);
        let plan = plan(&desired, &observed);
        let removed: Vec<&str> = plan.remove_after.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(removed, vec!["aside", "gone"]);
    }

    #[test]
    fn the_edge_router_hash_follows_its_configuration_not_its_path() {
        let operator = OperatorConfig::default();
        let a = edge_router(&operator, "/srv/a/edge/traefik.yml", b"x: 1").unwrap();
        let b = edge_router(&operator, "/srv/b/edge/traefik.yml", b"x: 1").unwrap();
        let c = edge_router(&operator, "/srv/a/edge/traefik.yml", b"x: 2").unwrap();
        assert_eq!(a.container.config_hash, b.container.config_hash);
        assert_ne!(a.container.config_hash, c.container.config_hash);
        assert!(a.container.mounts.iter().any(|m| matches!(
            m,
            ContainerMount::Bind { source, .. } if source == "/srv/a/edge/traefik.yml"
        )));
        assert_eq!(a.container.ports.len(), 2);
        let host_ports =
            OperatorConfig::from_toml("[ingress]\nmode = \"host-ports\"", "x").unwrap();
        assert!(edge_router(&host_ports, "/x", b"").is_none());
    }

    #[test]
    fn services_come_after_their_dependencies() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let position = |kind: ServiceKind| {
            desired
                .containers
                .iter()
                .position(|c| c.service == kind)
                .unwrap()
        };
        for c in &desired.containers {
            for d in &c.depends_on {
                assert!(position(*d) < position(c.service), "{:?}", c.service);
            }
        }
    }

    #[test]
    fn containers_carry_compose_labels_and_absolute_bundle_paths() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let website = desired.container(ServiceKind::Website).unwrap();
        assert_eq!(website.name, format!("{}-website-1", desired.client_id));
        assert_eq!(
            website.labels[labels::PROJECT],
            desired.client_id.to_string()
        );
        assert_eq!(website.labels[labels::SERVICE], "website");
        assert_eq!(website.labels[labels::CONFIG_HASH], website.config_hash);
        assert!(website.mounts.iter().all(|m| match m {
            ContainerMount::Bind {
                source, read_only, ..
            } => source.starts_with("/srv/stackbox/clients/x/") && *read_only,
            ContainerMount::Volume { .. } => true,
        }));
        // Only Traefik mounts the Docker socket.
        for c in &desired.containers {
            let socket = c.mounts.iter().any(|m| {
                matches!(m, ContainerMount::Bind { source, .. } if source == "/var/run/docker.sock")
            });
            assert_eq!(socket, c.service == ServiceKind::Traefik, "{:?}", c.service);
        }
    }

    #[test]
    fn secrets_are_resolved_into_the_environment_but_never_debug_printed() {
        let desired = desired_for(&OperatorConfig::default(), &spec());
        let mysql = desired.container(ServiceKind::Mysql).unwrap();
        let root = mysql
            .env
            .iter()
            .find_map(|e| e.strip_prefix("MARIADB_ROOT_PASSWORD="))
            .unwrap();
        assert!(root.len() >= 24, "{}", root.len());
        assert!(!format!("{mysql:?}").contains(root));
    }

    /// Like [`desired_for`], with a placement; the same id and secrets.
    fn desired_placed(spec: &ClientSpec, placement: &crate::stack::Placement) -> DesiredState {
        let id = ClientId::parse("acmebakery-0000feed").unwrap();
        let mut secrets = Secrets::new();
        secrets.fill_missing(
            &crate::secrets::SecretKey::needed_for(&spec.apps()),
            &mut TestRandom(7),
        );
        let rendered = crate::render::render_placed(
            spec,
            &id,
            &secrets,
            &OperatorConfig::default(),
            placement,
        )
        .unwrap();
        desired_state(
            &rendered.stack,
            &secrets,
            &rendered.bundle,
            "/srv/stackbox/clients/x",
            &|_| None,
        )
        .unwrap()
    }

    fn rds(host: &str, secrets_in_files: bool) -> crate::stack::Placement {
        crate::stack::Placement {
            mysql: crate::stack::MysqlPlacement::external(
                host,
                3306,
                [
                    (crate::plan::App::Espocrm, "acmebakery_0000feed_espocrm"),
                    (crate::plan::App::Nextcloud, "acmebakery_0000feed_nextcloud"),
                ],
            )
            .unwrap(),
            secrets_in_files,
        }
    }

    fn env_of<'a>(desired: &'a DesiredState, service: ServiceKind, name: &str) -> &'a str {
        let prefix = format!("{name}=");
        desired
            .container(service)
            .unwrap()
            .env
            .iter()
            .find_map(|pair| pair.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{service:?} has no {name}"))
    }

    fn changed_services(a: &DesiredState, b: &DesiredState) -> Vec<ServiceKind> {
        a.containers
            .iter()
            .filter(|x| b.container(x.service).map(|y| &y.config_hash) != Some(&x.config_hash))
            .map(|x| x.service)
            .collect()
    }

    #[test]
    fn an_external_mysql_leaves_no_container_or_volume_and_its_apps_get_the_server_with_secrets() {
        let local = desired_for(&OperatorConfig::default(), &spec());
        let external = desired_placed(
            &spec(),
            &rds("db.abc123.eu-west-1.rds.amazonaws.com", false),
        );
        assert!(external.container(ServiceKind::Mysql).is_none());
        assert!(external.volumes.iter().all(|v| !v.name.contains("mysql")));
        assert!(external
            .containers
            .iter()
            .all(|c| !c.depends_on.contains(&ServiceKind::Mysql)));
        assert_eq!(
            env_of(&external, ServiceKind::Espocrm, "ESPOCRM_DATABASE_HOST"),
            "db.abc123.eu-west-1.rds.amazonaws.com"
        );
        assert_eq!(
            env_of(&external, ServiceKind::Espocrm, "ESPOCRM_DATABASE_USER"),
            "acmebakery_0000feed_espocrm"
        );
        // Secrets are resolved into the environment even though no file holds them.
        assert_eq!(
            env_of(&external, ServiceKind::Espocrm, "ESPOCRM_DATABASE_PASSWORD"),
            env_of(&local, ServiceKind::Espocrm, "ESPOCRM_DATABASE_PASSWORD")
        );
        assert!(env_of(&external, ServiceKind::Espocrm, "ESPOCRM_DATABASE_PASSWORD").len() >= 24);
        // Moving the databases replaces exactly the containers whose settings name MySQL;
        // the daemon and cron read theirs from the apps' volumes and are on `web` (their way
        // out for mail, IMAP, webhooks) and `data` either way, so they stay.
        assert_eq!(
            changed_services(&local, &external),
            vec![
                ServiceKind::Mysql,
                ServiceKind::Espocrm,
                ServiceKind::Nextcloud,
            ]
        );
        for (service, placed) in [
            (ServiceKind::EspocrmDaemon, &local),
            (ServiceKind::NextcloudCron, &local),
            (ServiceKind::EspocrmDaemon, &external),
            (ServiceKind::NextcloudCron, &external),
        ] {
            let networks: Vec<&str> = placed
                .container(service)
                .unwrap()
                .networks
                .iter()
                .map(|n| n.network.as_str())
                .collect();
            assert_eq!(
                networks,
                ["acmebakery-0000feed_web", "acmebakery-0000feed_data"],
                "{service:?}"
            );
        }
        // Still in dependency order without the local database.
        let order: Vec<ServiceKind> = external.containers.iter().map(|c| c.service).collect();
        for container in &external.containers {
            let at = order.iter().position(|s| *s == container.service).unwrap();
            for dependency in &container.depends_on {
                assert!(order.iter().position(|s| s == dependency).unwrap() < at);
            }
        }
    }

    #[test]
    fn another_external_server_replaces_only_the_apps_that_connect_to_it() {
        let a = desired_placed(&spec(), &rds("db-a.example.net", false));
        let b = desired_placed(&spec(), &rds("db-b.example.net", false));
        assert_eq!(
            changed_services(&a, &b),
            vec![ServiceKind::Espocrm, ServiceKind::Nextcloud]
        );
    }

    #[test]
    fn keeping_secrets_out_of_files_changes_no_container() {
        // `.env` is mounted by no container, so the placement of secrets alone recreates
        // nothing; the containers get the same resolved secrets either way.
        for mysql in [
            crate::stack::MysqlPlacement::Local,
            rds("db.example.net", true).mysql,
        ] {
            let with = desired_placed(
                &spec(),
                &crate::stack::Placement {
                    mysql: mysql.clone(),
                    secrets_in_files: true,
                },
            );
            let without = desired_placed(
                &spec(),
                &crate::stack::Placement {
                    mysql,
                    secrets_in_files: false,
                },
            );
            assert!(changed_services(&with, &without).is_empty());
            assert_eq!(with.containers.len(), without.containers.len());
        }
    }

    #[test]
    fn the_local_database_gets_the_app_passwords_for_its_init_script() {
        // The init scripts hold none, so the database containers carry them, and a rotated
        // app password changes the database container's hash as the init file used to.
        let desired = desired_for(&OperatorConfig::default(), &spec());
        assert_eq!(
            env_of(&desired, ServiceKind::Mysql, "ESPOCRM_DB_PASSWORD"),
            env_of(&desired, ServiceKind::Espocrm, "ESPOCRM_DATABASE_PASSWORD")
        );
        assert_eq!(
            env_of(&desired, ServiceKind::Postgres, "CALCOM_DB_PASSWORD").len(),
            24
        );
    }

    #[test]
    fn a_missing_operator_variable_names_the_variable() {
        let operator = OperatorConfig::from_toml(
            "[acme]\nchallenge = \"dns\"\ndns_provider = \"cloudflare\"\ndns_env = [\"CF_DNS_API_TOKEN\"]\n",
            "stackbox.toml",
        )
        .unwrap();
        let spec = spec();
        let id = ClientId::new(&spec.company_name, 1);
        let mut secrets = Secrets::new();
        secrets.fill_missing(
            &crate::secrets::SecretKey::needed_for(&spec.apps()),
            &mut TestRandom(1),
        );
        let rendered = render(&spec, &id, &secrets, &operator).unwrap();
        let error = desired_state(&rendered.stack, &secrets, &rendered.bundle, "/x", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("CF_DNS_API_TOKEN"), "{error}");
    }

    fn container(
        service: &str,
        state: ContainerState,
        health: Option<Health>,
    ) -> ObservedContainer {
        ObservedContainer {
            id: service.into(),
            name: format!("c-{service}-1"),
            service: Some(service.into()),
            config_hash: None,
            state,
            health,
            image: "i:1".into(),
            created: 0,
            status: String::new(),
        }
    }

    #[test]
    fn overall_state_covers_every_case() {
        use ContainerState::*;
        let expected = vec!["a".to_string(), "b".to_string()];
        let up = |s| container(s, Running, Some(Health::Healthy));
        assert_eq!(overall_state(&expected, &[]), OverallState::Absent);
        assert_eq!(
            overall_state(&expected, &[up("a"), up("b")]),
            OverallState::Running
        );
        assert_eq!(
            overall_state(
                &expected,
                &[up("a"), container("b", Running, Some(Health::Starting))]
            ),
            OverallState::Starting
        );
        assert_eq!(overall_state(&expected, &[up("a")]), OverallState::Degraded);
        assert_eq!(
            overall_state(
                &expected,
                &[up("a"), container("b", Running, Some(Health::Unhealthy))]
            ),
            OverallState::Degraded
        );
        assert_eq!(
            overall_state(
                &expected,
                &[container("a", Exited, None), container("b", Exited, None)]
            ),
            OverallState::Stopped
        );
        assert_eq!(
            overall_state(
                &expected,
                &[
                    container("a", Restarting, None),
                    container("b", Exited, None)
                ]
            ),
            OverallState::Failed
        );
    }
}
