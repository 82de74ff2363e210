//! Operator-wide settings: ACME, ingress, resource limits per plan, images, log rotation.
//!
//! Built once at the edge (from `stackbox.toml`, flags and environment) and passed explicitly.
//! Every setting has a default, so a fresh machine needs no file at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::ImageCatalog;
use crate::client::Email;
use crate::error::CoreError;
use crate::infra::{AlbTarget, AwsSettings, DbPlacement, HostedZonePolicy, ProviderKind};
use crate::plan::{ImageKey, Plan, ServiceKind};

/// The operator's settings, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatorConfig {
    /// Where client bundles live: `<bundles_root>/clients/<client-id>/`.
    pub bundles_root: String,
    pub acme: AcmeSettings,
    pub ingress: Ingress,
    pub logging: LogRotation,
    /// Caps every container's open-file limit (`ulimits.nofile`) for hosts whose engine may not
    /// raise it as high as ClickHouse (262,144) and Plausible (65,535) ask; unset on real hosts.
    pub max_open_files: Option<u64>,
    pub images: ImageCatalog,
    /// Overrides of the built-in limits, by plan and service.
    pub limit_overrides: BTreeMap<(Plan, ServiceKind), Limits>,
    /// `[infrastructure] provider`: where clients' infrastructure comes from unless a client
    /// says otherwise (`local` by default).
    pub infrastructure: ProviderKind,
    /// `[aws]`: the settings of the `aws` provider.
    pub aws: AwsSettings,
    /// `[onboarding]` with the environment over it: payments, mail, grace and retention.
    /// Never serialized (it holds keys).
    #[serde(skip)]
    pub onboarding: crate::onboarding::OnboardingSettings,
    /// `[backup]`: where restore points go, how often, how many are kept.
    pub backup: crate::backup::BackupSettings,
    /// `[monitor]`: how often resource use is read and how long it is kept.
    pub monitor: crate::usage::MonitorSettings,
    /// `[alerts]`: thresholds, hold time, and where notices go.
    pub alerts: crate::alerts::AlertSettings,
    /// `[probes]`: the clients' public hostnames fetched from outside on an interval.
    pub probes: crate::probes::ProbeSettings,
    /// `[[releases]]`, oldest first: the image sets after the base catalog (see
    /// [`crate::release`]).
    pub releases: Vec<crate::release::ReleaseSpec>,
}

impl OperatorConfig {
    /// The newest release: what a new client runs.
    pub fn latest_release(&self) -> &str {
        self.releases
            .last()
            .map(|r| r.name.as_str())
            .unwrap_or(crate::release::BASE_RELEASE)
    }

    /// The images of a release (`None`: the base catalog, what clients that recorded no
    /// release run).
    pub fn release_catalog(&self, name: Option<&str>) -> Result<ImageCatalog, CoreError> {
        crate::release::catalog_of(
            &self.images,
            &self.releases,
            name.unwrap_or(crate::release::BASE_RELEASE),
        )
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            bundles_root: "deployments".to_string(),
            acme: AcmeSettings::default(),
            ingress: Ingress::default(),
            logging: LogRotation::default(),
            max_open_files: None,
            images: ImageCatalog::builtin(),
            limit_overrides: BTreeMap::new(),
            infrastructure: ProviderKind::Local,
            aws: AwsSettings::default(),
            onboarding: crate::onboarding::OnboardingSettings::default(),
            backup: crate::backup::BackupSettings::default(),
            monitor: crate::usage::MonitorSettings::default(),
            alerts: crate::alerts::AlertSettings::default(),
            probes: crate::probes::ProbeSettings::default(),
            releases: Vec::new(),
        }
    }
}

/// How Traefik obtains certificates from Let's Encrypt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AcmeSettings {
    /// The ACME account e-mail; when unset, the client's admin e-mail is used.
    pub email: Option<Email>,
    pub challenge: AcmeChallenge,
    /// Another ACME directory, such as Let's Encrypt's staging one.
    pub ca_server: Option<String>,
}

/// The ACME challenge type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AcmeChallenge {
    /// HTTP-01 on port 80: one certificate per hostname, no DNS credentials needed.
    #[default]
    Http,
    /// DNS-01 through a lego provider: one wildcard certificate (`*.domain` and the apex).
    Dns {
        /// The lego provider name (`route53`, `cloudflare`, …).
        provider: String,
        /// Environment variables holding the provider's credentials; their values are passed
        /// from the operator's environment to Traefik, never written into the bundle.
        env: Vec<String>,
    },
}

/// How outside traffic reaches the client's Traefik.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Ingress {
    /// The host's ports 80 and 443 belong to one shared edge router that forwards each
    /// client's hostnames to the client's Traefik over that client's own edge network: plain
    /// HTTP by Host (so HTTP-01 challenges reach the client's Traefik), TLS passed through by
    /// SNI (so certificates stay with the client's Traefik). Many clients per host; no
    /// network is shared between two clients.
    Edge {
        /// The edge router's container name (also the name of its own network).
        router: String,
        /// Host ports it publishes.
        http: u16,
        https: u16,
    },
    /// The client's Traefik publishes these host ports itself: one client per host.
    HostPorts { http: u16, https: u16 },
}

impl Ingress {
    /// The shared edge router's container name, in `edge` ingress.
    pub fn edge_router_name(&self) -> Option<&str> {
        match self {
            Ingress::Edge { router, .. } => Some(router),
            Ingress::HostPorts { .. } => None,
        }
    }
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress::Edge {
            router: "stackbox-edge".to_string(),
            http: 80,
            https: 443,
        }
    }
}

/// Log rotation of every container (json-file driver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRotation {
    /// Size of one log file before rotation, in docker's notation (`10m`).
    pub max_size: String,
    /// Files kept per container.
    pub max_files: u32,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            max_size: "10m".to_string(),
            max_files: 3,
        }
    }
}

/// CPU and memory limits of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Thousandths of a CPU.
    pub millicpus: u32,
    /// Memory limit in MiB.
    pub memory_mib: u32,
}

impl Limits {
    const fn new(millicpus: u32, memory_mib: u32) -> Limits {
        Limits {
            millicpus,
            memory_mib,
        }
    }

    /// CPUs as compose writes them (`0.25`, `1`, `1.5`).
    pub fn cpus(&self) -> String {
        let whole = self.millicpus / 1000;
        let fraction = self.millicpus % 1000;
        if fraction == 0 {
            whole.to_string()
        } else {
            format!("{whole}.{}", format!("{fraction:03}").trim_end_matches('0'))
        }
    }

    /// Memory as compose writes it (`512M`).
    pub fn memory(&self) -> String {
        format!("{}M", self.memory_mib)
    }
}

/// The built-in limits. Sized so that a starter client fits in about 4.5 GiB of limits, with
/// room to burst; Plausible's ClickHouse and Nextcloud get the most memory, as their docs ask.
pub fn builtin_limits(plan: Plan, service: ServiceKind) -> Limits {
    use ServiceKind::*;
    let (starter, professional, enterprise) = match service {
        Traefik => (
            Limits::new(250, 128),
            Limits::new(500, 256),
            Limits::new(500, 256),
        ),
        Website => (
            Limits::new(250, 64),
            Limits::new(250, 128),
            Limits::new(500, 128),
        ),
        Mysql => (
            Limits::new(1000, 768),
            Limits::new(1500, 1024),
            Limits::new(2000, 2048),
        ),
        Redis => (
            Limits::new(250, 128),
            Limits::new(250, 256),
            Limits::new(500, 512),
        ),
        Postgres => (
            Limits::new(500, 256),
            Limits::new(1000, 512),
            Limits::new(1000, 1024),
        ),
        Espocrm => (
            Limits::new(1000, 512),
            Limits::new(1000, 768),
            Limits::new(2000, 1024),
        ),
        EspocrmDaemon => (
            Limits::new(250, 256),
            Limits::new(500, 256),
            Limits::new(500, 512),
        ),
        EspocrmWebsocket => (
            Limits::new(250, 128),
            Limits::new(250, 128),
            Limits::new(250, 256),
        ),
        Nextcloud => (
            Limits::new(1000, 1024),
            Limits::new(1500, 1536),
            Limits::new(2000, 2048),
        ),
        NextcloudCron => (
            Limits::new(250, 256),
            Limits::new(500, 512),
            Limits::new(500, 512),
        ),
        Calcom => (
            Limits::new(1000, 1024),
            Limits::new(1000, 1024),
            Limits::new(1500, 1536),
        ),
        Plausible => (
            Limits::new(1000, 1024),
            Limits::new(1000, 1024),
            Limits::new(1000, 1536),
        ),
        PlausibleEventsDb => (
            Limits::new(1000, 1536),
            Limits::new(1000, 1536),
            Limits::new(1500, 2048),
        ),
        Mailtrain => (
            Limits::new(1000, 1024),
            Limits::new(1000, 1024),
            Limits::new(1000, 1024),
        ),
        MailtrainRedis => (
            Limits::new(250, 128),
            Limits::new(250, 128),
            Limits::new(250, 256),
        ),
        MailtrainMongo => (
            Limits::new(500, 512),
            Limits::new(500, 512),
            Limits::new(500, 512),
        ),
    };
    match plan {
        Plan::Starter => starter,
        Plan::Professional => professional,
        Plan::Enterprise => enterprise,
    }
}

impl OperatorConfig {
    /// The limits of one service on one plan, with the operator's overrides applied.
    pub fn limits(&self, plan: Plan, service: ServiceKind) -> Limits {
        self.limit_overrides
            .get(&(plan, service))
            .copied()
            .unwrap_or_else(|| builtin_limits(plan, service))
    }

    /// Parses `stackbox.toml`.
    pub fn from_toml(text: &str, origin: &str) -> Result<OperatorConfig, CoreError> {
        OperatorConfig::from_toml_with_env(text, origin, &|_| None)
    }

    /// Parses `stackbox.toml` with the environment laid over the settings that may come from
    /// it (`env` looks a variable up: the core reads no environment itself). An empty `text`
    /// gives the defaults with the environment's settings.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OperatorConfig, CoreError> {
        let mut file: OperatorFile = toml::from_str(text).map_err(|error| CoreError::Syntax {
            origin: origin.to_string(),
            message: error.to_string().trim_end().to_string(),
        })?;
        let onboarding = std::mem::take(&mut file.onboarding);
        let mut config = file.validate()?;
        config.onboarding = crate::onboarding::OnboardingSettings::resolve(onboarding, env)?;
        Ok(config)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorFile {
    bundles_root: Option<String>,
    #[serde(default)]
    acme: AcmeFile,
    #[serde(default)]
    ingress: IngressFile,
    #[serde(default)]
    logging: LoggingFile,
    #[serde(default)]
    host: HostFile,
    #[serde(default)]
    images: BTreeMap<String, String>,
    #[serde(default)]
    limits: BTreeMap<String, BTreeMap<String, LimitsFile>>,
    #[serde(default)]
    infrastructure: InfrastructureFile,
    #[serde(default)]
    aws: AwsFile,
    #[serde(default)]
    onboarding: crate::onboarding::OnboardingFile,
    #[serde(default)]
    backup: crate::backup::BackupFile,
    #[serde(default)]
    monitor: crate::usage::MonitorFile,
    #[serde(default)]
    alerts: crate::alerts::AlertsFile,
    #[serde(default)]
    probes: crate::probes::ProbesFile,
    #[serde(default)]
    releases: Vec<ReleaseFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseFile {
    name: String,
    #[serde(default)]
    images: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InfrastructureFile {
    provider: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsFile {
    region: Option<String>,
    hosted_zone: Option<String>,
    listener_arn: Option<String>,
    vpc_id: Option<String>,
    target: Option<String>,
    target_port: Option<u16>,
    health_check_path: Option<String>,
    #[serde(default)]
    db_placement: BTreeMap<String, String>,
    db_engine: Option<String>,
    db_engine_version: Option<String>,
    db_instance_class: Option<String>,
    db_allocated_storage_gib: Option<u32>,
    shared_db_instance: Option<String>,
    shared_db_master_secret: Option<String>,
    db_subnet_group: Option<String>,
    #[serde(default)]
    db_security_groups: Vec<String>,
    final_snapshot_on_destroy: Option<bool>,
    certificate_wait_seconds: Option<u32>,
    db_wait_seconds: Option<u32>,
    db_connect_via: Option<String>,
}

/// An RDS identifier: a letter, then letters, digits and single hyphens, at most 63.
fn is_rds_identifier(text: &str) -> bool {
    text.len() <= 63
        && text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !text.contains("--")
        && !text.ends_with('-')
}

impl AwsFile {
    fn validate(self) -> Result<AwsSettings, CoreError> {
        let mut aws = AwsSettings::default();
        if let Some(via) = &self.db_connect_via {
            let parsed = via.rsplit_once(':').and_then(|(host, port)| {
                let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
                is_name(host, ".-").then(|| (host.to_string(), port))
            });
            aws.db_connect_via = Some(parsed.ok_or_else(|| {
                CoreError::invalid(
                    "aws.db_connect_via",
                    format!("{via:?} is not host:port, e.g. \"127.0.0.1:13306\" for a tunnel"),
                )
            })?);
        }
        if let Some(region) = self.region {
            let parts: Vec<&str> = region.split('-').collect();
            if parts.len() < 3
                || !parts.iter().all(|p| !p.is_empty() && is_name(p, ""))
                || region.chars().any(|c| c.is_ascii_uppercase())
            {
                return Err(CoreError::invalid(
                    "aws.region",
                    format!("{region:?} is not an AWS region; use a region such as \"eu-west-1\""),
                ));
            }
            aws.region = Some(region);
        }
        aws.hosted_zone = match self.hosted_zone.as_deref().unwrap_or("existing") {
            "existing" => HostedZonePolicy::Existing,
            "create" => HostedZonePolicy::Create,
            other => {
                return Err(CoreError::invalid(
                    "aws.hosted_zone",
                    format!("unknown policy {other:?}; use \"existing\" or \"create\""),
                ))
            }
        };
        if let Some(arn) = self.listener_arn {
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            let valid = parts.len() == 6
                && parts[0] == "arn"
                && parts[2] == "elasticloadbalancing"
                && parts[5].starts_with("listener/app/")
                && is_name(&arn, ":/-_.");
            if !valid {
                return Err(CoreError::invalid(
                    "aws.listener_arn",
                    "must be the ARN of an Application Load Balancer listener \
                     (arn:aws:elasticloadbalancing:REGION:ACCOUNT:listener/app/NAME/ID/ID)",
                ));
            }
            aws.listener_arn = Some(arn);
        }
        if let Some(vpc) = self.vpc_id {
            if !vpc
                .strip_prefix("vpc-")
                .is_some_and(|rest| is_name(rest, ""))
            {
                return Err(CoreError::invalid(
                    "aws.vpc_id",
                    "must be a VPC id such as \"vpc-0123456789abcdef0\"",
                ));
            }
            aws.vpc_id = Some(vpc);
        }
        if let Some(target) = self.target {
            aws.target = Some(AlbTarget::parse("aws.target", &target)?);
        }
        if let Some(port) = self.target_port {
            if port == 0 {
                return Err(CoreError::invalid("aws.target_port", "must be 1 to 65535"));
            }
            aws.target_port = port;
        }
        if let Some(path) = self.health_check_path {
            if !path.starts_with('/')
                || path.len() > 1024
                || !path.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(CoreError::invalid(
                    "aws.health_check_path",
                    "must be a URL path starting with / (printable ASCII, no spaces, at most 1024)",
                ));
            }
            aws.health_check_path = path;
        }
        for (plan_key, placement) in self.db_placement {
            let field = format!("aws.db_placement.{plan_key}");
            let plan = Plan::from_key(&plan_key).ok_or_else(|| {
                CoreError::invalid(
                    &field,
                    "unknown plan; use starter, professional or enterprise",
                )
            })?;
            let placement = match placement.as_str() {
                "dedicated" => DbPlacement::Dedicated,
                "shared" => DbPlacement::Shared,
                other => {
                    return Err(CoreError::invalid(
                        &field,
                        format!("unknown placement {other:?}; use \"dedicated\" or \"shared\""),
                    ))
                }
            };
            aws.db_placement.insert(plan, placement);
        }
        if let Some(engine) = self.db_engine {
            if engine != "mariadb" && engine != "mysql" {
                return Err(CoreError::invalid(
                    "aws.db_engine",
                    format!("unknown engine {engine:?}; use \"mariadb\" or \"mysql\""),
                ));
            }
            aws.db_engine = engine;
        }
        if let Some(version) = self.db_engine_version {
            if !is_name(&version, ".") {
                return Err(CoreError::invalid(
                    "aws.db_engine_version",
                    "must be an engine version such as \"11.4.5\"",
                ));
            }
            aws.db_engine_version = Some(version);
        }
        if let Some(class) = self.db_instance_class {
            if !class.starts_with("db.") || !is_name(&class, ".") {
                return Err(CoreError::invalid(
                    "aws.db_instance_class",
                    "must be an RDS instance class such as \"db.t4g.micro\"",
                ));
            }
            aws.db_instance_class = class;
        }
        if let Some(gib) = self.db_allocated_storage_gib {
            if !(20..=65_536).contains(&gib) {
                return Err(CoreError::invalid(
                    "aws.db_allocated_storage_gib",
                    "must be between 20 and 65536 (RDS's limits for MySQL and MariaDB)",
                ));
            }
            aws.db_allocated_storage_gib = gib;
        }
        if let Some(instance) = self.shared_db_instance {
            if !is_rds_identifier(&instance) {
                return Err(CoreError::invalid(
                    "aws.shared_db_instance",
                    "must be an RDS instance identifier (a letter, then letters, digits and \
                     single hyphens, at most 63)",
                ));
            }
            aws.shared_db_instance = Some(instance);
        }
        if let Some(secret) = self.shared_db_master_secret {
            if secret.len() > 2048 || !is_name(&secret, "/_+=.@-:") {
                return Err(CoreError::invalid(
                    "aws.shared_db_master_secret",
                    "must be a Secrets Manager secret name or ARN",
                ));
            }
            aws.shared_db_master_secret = Some(secret);
        }
        if let Some(group) = self.db_subnet_group {
            if group.len() > 255 || !is_name(&group, "-_. ") {
                return Err(CoreError::invalid(
                    "aws.db_subnet_group",
                    "must be a DB subnet group name",
                ));
            }
            aws.db_subnet_group = Some(group);
        }
        for group in &self.db_security_groups {
            if !group
                .strip_prefix("sg-")
                .is_some_and(|rest| is_name(rest, ""))
            {
                return Err(CoreError::invalid(
                    "aws.db_security_groups",
                    format!(
                        "{group:?} is not a security group id such as \"sg-0123456789abcdef0\""
                    ),
                ));
            }
        }
        aws.db_security_groups = self.db_security_groups;
        if let Some(keep) = self.final_snapshot_on_destroy {
            aws.final_snapshot_on_destroy = keep;
        }
        if let Some(seconds) = self.certificate_wait_seconds {
            if !(1..=86_400).contains(&seconds) {
                return Err(CoreError::invalid(
                    "aws.certificate_wait_seconds",
                    "must be between 1 and 86400",
                ));
            }
            aws.certificate_wait_seconds = seconds;
        }
        if let Some(seconds) = self.db_wait_seconds {
            if !(1..=86_400).contains(&seconds) {
                return Err(CoreError::invalid(
                    "aws.db_wait_seconds",
                    "must be between 1 and 86400",
                ));
            }
            aws.db_wait_seconds = seconds;
        }
        Ok(aws)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFile {
    max_open_files: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcmeFile {
    email: Option<String>,
    challenge: Option<String>,
    dns_provider: Option<String>,
    #[serde(default)]
    dns_env: Vec<String>,
    ca_server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngressFile {
    mode: Option<String>,
    edge_router: Option<String>,
    http_port: Option<u16>,
    https_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggingFile {
    max_size: Option<String>,
    max_files: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    cpus: Option<f64>,
    memory_mib: Option<u32>,
}

fn is_name(text: &str, extra: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

impl OperatorFile {
    fn validate(self) -> Result<OperatorConfig, CoreError> {
        let mut config = OperatorConfig::default();
        if let Some(root) = self.bundles_root {
            if root.trim().is_empty() || root.contains('\0') {
                return Err(CoreError::invalid(
                    "bundles_root",
                    "is empty; give a folder such as \"/srv/stackbox\"",
                ));
            }
            config.bundles_root = root;
        }
        if let Some(email) = self.acme.email {
            config.acme.email = Some(Email::parse("acme.email", &email)?);
        }
        if let Some(ca) = self.acme.ca_server {
            if !ca.starts_with("https://") || !is_name(&ca["https://".len()..], ".-/:_") {
                return Err(CoreError::invalid(
                    "acme.ca_server",
                    "must be an https:// URL of an ACME directory",
                ));
            }
            config.acme.ca_server = Some(ca);
        }
        config.acme.challenge = match self.acme.challenge.as_deref().unwrap_or("http") {
            "http" => AcmeChallenge::Http,
            "dns" => {
                let provider = self.acme.dns_provider.ok_or_else(|| {
                    CoreError::invalid(
                        "acme.dns_provider",
                        "is missing; the dns challenge needs a lego provider such as \"route53\"",
                    )
                })?;
                if !is_name(&provider, "-_.") {
                    return Err(CoreError::invalid(
                        "acme.dns_provider",
                        "must be a lego provider name such as \"route53\"",
                    ));
                }
                for name in &self.acme.dns_env {
                    if !is_name(name, "_") || name.starts_with(|c: char| c.is_ascii_digit()) {
                        return Err(CoreError::invalid(
                            "acme.dns_env",
                            format!("{name:?} is not an environment variable name"),
                        ));
                    }
                }
                AcmeChallenge::Dns {
                    provider,
                    env: self.acme.dns_env,
                }
            }
            other => {
                return Err(CoreError::invalid(
                    "acme.challenge",
                    format!("unknown challenge {other:?}; use \"http\" or \"dns\""),
                ));
            }
        };
        config.ingress = match self.ingress.mode.as_deref().unwrap_or("edge") {
            "edge" => {
                let router = self
                    .ingress
                    .edge_router
                    .unwrap_or_else(|| "stackbox-edge".to_string());
                if !is_name(&router, "-_.") {
                    return Err(CoreError::invalid(
                        "ingress.edge_router",
                        "must be a Docker container name ([A-Za-z0-9_.-])",
                    ));
                }
                Ingress::Edge {
                    router,
                    http: self.ingress.http_port.unwrap_or(80),
                    https: self.ingress.https_port.unwrap_or(443),
                }
            }
            "host-ports" => Ingress::HostPorts {
                http: self.ingress.http_port.unwrap_or(80),
                https: self.ingress.https_port.unwrap_or(443),
            },
            other => {
                return Err(CoreError::invalid(
                    "ingress.mode",
                    format!("unknown mode {other:?}; use \"edge\" or \"host-ports\""),
                ));
            }
        };
        if let Some(size) = self.logging.max_size {
            let valid = size.len() >= 2
                && size[..size.len() - 1].chars().all(|c| c.is_ascii_digit())
                && size.ends_with(['k', 'm', 'g']);
            if !valid {
                return Err(CoreError::invalid(
                    "logging.max_size",
                    "must be a size such as \"10m\" (k, m or g)",
                ));
            }
            config.logging.max_size = size;
        }
        if let Some(files) = self.logging.max_files {
            if files == 0 {
                return Err(CoreError::invalid(
                    "logging.max_files",
                    "must be at least 1",
                ));
            }
            config.logging.max_files = files;
        }
        if let Some(limit) = self.host.max_open_files {
            if limit < 1024 {
                return Err(CoreError::invalid(
                    "host.max_open_files",
                    "must be at least 1024 (the apps open many files)",
                ));
            }
            config.max_open_files = Some(limit);
        }
        config.images = config.images.with_overrides(&self.images)?;
        for (index, release) in self.releases.into_iter().enumerate() {
            let field = format!("releases[{index}].name");
            crate::release::validate_release_name(&field, &release.name)?;
            if release.name == crate::release::BASE_RELEASE
                || config.releases.iter().any(|r| r.name == release.name)
            {
                return Err(CoreError::invalid(
                    field,
                    format!(
                        "{:?} is used twice (\"{}\" is the catalog itself); give each release its own name",
                        release.name,
                        crate::release::BASE_RELEASE
                    ),
                ));
            }
            let mut images = BTreeMap::new();
            for (key, reference) in &release.images {
                let image = ImageKey::from_key(key).ok_or_else(|| {
                    CoreError::invalid(
                        format!("releases[{index}].images.{key}"),
                        format!(
                            "unknown image key; use one of {}",
                            ImageKey::ALL.map(ImageKey::key).join(", ")
                        ),
                    )
                })?;
                crate::catalog::validate_reference(key, reference)?;
                images.insert(image, reference.trim().to_string());
            }
            config.releases.push(crate::release::ReleaseSpec {
                name: release.name,
                images,
            });
        }
        if let Some(provider) = self.infrastructure.provider {
            config.infrastructure = ProviderKind::parse("infrastructure.provider", &provider)?;
        }
        config.aws = self.aws.validate()?;
        config.backup = self.backup.validate()?;
        config.monitor = self.monitor.validate()?;
        config.alerts = self.alerts.validate()?;
        config.probes = self.probes.validate()?;
        if config.infrastructure == ProviderKind::Aws {
            config.aws.check_complete(None)?;
        }
        for (plan_key, services) in self.limits {
            let plan = Plan::from_key(&plan_key).ok_or_else(|| {
                CoreError::invalid(
                    format!("limits.{plan_key}"),
                    "unknown plan; use starter, professional or enterprise",
                )
            })?;
            for (service_key, limits) in services {
                let field = format!("limits.{plan_key}.{service_key}");
                let service = ServiceKind::from_name(&service_key).ok_or_else(|| {
                    CoreError::invalid(&field, "unknown service; `stackbox plans` lists them")
                })?;
                let builtin = builtin_limits(plan, service);
                let millicpus = match limits.cpus {
                    Some(cpus) if cpus.is_finite() && (0.01..=64.0).contains(&cpus) => {
                        (cpus * 1000.0).round() as u32
                    }
                    Some(_) => {
                        return Err(CoreError::invalid(
                            format!("{field}.cpus"),
                            "must be between 0.01 and 64",
                        ))
                    }
                    None => builtin.millicpus,
                };
                let memory_mib = match limits.memory_mib {
                    Some(mib) if (16..=1_048_576).contains(&mib) => mib,
                    Some(_) => {
                        return Err(CoreError::invalid(
                            format!("{field}.memory_mib"),
                            "must be between 16 and 1048576",
                        ))
                    }
                    None => builtin.memory_mib,
                };
                config.limit_overrides.insert(
                    (plan, service),
                    Limits {
                        millicpus,
                        memory_mib,
                    },
                );
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(
            OperatorConfig::from_toml("", "stackbox.toml").unwrap(),
            OperatorConfig::default()
        );
    }

    #[test]
    fn a_full_file_is_read() {
        let config = OperatorConfig::from_toml(
            r#"
bundles_root = "/srv/stackbox"
[acme]
email = "ops@host.example"
challenge = "dns"
dns_provider = "route53"
dns_env = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
[ingress]
mode = "host-ports"
[logging]
max_size = "50m"
max_files = 5
[images]
mysql = "mirror.local/mariadb:11.4.5"
[limits.professional.nextcloud]
cpus = 2.5
memory_mib = 4096
"#,
            "stackbox.toml",
        )
        .unwrap();
        assert_eq!(config.bundles_root, "/srv/stackbox");
        assert!(
            matches!(config.acme.challenge, AcmeChallenge::Dns { ref provider, .. } if provider == "route53")
        );
        assert_eq!(
            config.ingress,
            Ingress::HostPorts {
                http: 80,
                https: 443
            }
        );
        assert_eq!(
            config.limits(Plan::Professional, ServiceKind::Nextcloud),
            Limits {
                millicpus: 2500,
                memory_mib: 4096
            }
        );
        assert_eq!(
            config.limits(Plan::Starter, ServiceKind::Nextcloud),
            builtin_limits(Plan::Starter, ServiceKind::Nextcloud)
        );
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (text, field) in [
            ("[acme]\nchallenge = \"tls\"", "acme.challenge"),
            ("[acme]\nchallenge = \"dns\"", "acme.dns_provider"),
            ("[acme]\nemail = \"x\"", "acme.email"),
            ("[ingress]\nmode = \"nodeport\"", "ingress.mode"),
            ("[logging]\nmax_size = \"big\"", "logging.max_size"),
            ("[limits.gold.mysql]\ncpus = 1.0", "limits.gold"),
            (
                "[limits.starter.mysql]\ncpus = 0.0",
                "limits.starter.mysql.cpus",
            ),
            ("[limits.starter.db]\ncpus = 1.0", "limits.starter.db"),
            ("[images]\nmysql = \"mysql\"", "images.mysql"),
            ("[host]\nmax_open_files = 10", "host.max_open_files"),
            ("[ingress]\nedge_router = \"a b\"", "ingress.edge_router"),
            (
                "[infrastructure]\nprovider = \"gcp\"",
                "infrastructure.provider",
            ),
            ("[infrastructure]\nprovider = \"aws\"", "aws.listener_arn"),
            ("[aws]\nregion = \"Europe\"", "aws.region"),
            (
                "[aws]\nlistener_arn = \"arn:aws:s3:::bucket\"",
                "aws.listener_arn",
            ),
            ("[aws]\nvpc_id = \"net-1\"", "aws.vpc_id"),
            ("[aws]\ntarget = \"host\"", "aws.target"),
            ("[aws]\nhosted_zone = \"maybe\"", "aws.hosted_zone"),
            (
                "[aws]\nhealth_check_path = \"health\"",
                "aws.health_check_path",
            ),
            (
                "[aws.db_placement]\ngold = \"shared\"",
                "aws.db_placement.gold",
            ),
            (
                "[aws.db_placement]\nstarter = \"own\"",
                "aws.db_placement.starter",
            ),
            ("[aws]\ndb_engine = \"postgres\"", "aws.db_engine"),
            (
                "[aws]\ndb_instance_class = \"t4g.micro\"",
                "aws.db_instance_class",
            ),
            (
                "[aws]\ndb_allocated_storage_gib = 5",
                "aws.db_allocated_storage_gib",
            ),
            (
                "[aws]\nshared_db_instance = \"1db\"",
                "aws.shared_db_instance",
            ),
            (
                "[aws]\ndb_security_groups = [\"default\"]",
                "aws.db_security_groups",
            ),
            (
                "[aws]\ncertificate_wait_seconds = 0",
                "aws.certificate_wait_seconds",
            ),
            ("[aws]\nunknown = 1", "stackbox.toml"),
        ] {
            let message = OperatorConfig::from_toml(text, "stackbox.toml")
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(field), "{text}: {message}");
        }
    }

    #[test]
    fn max_open_files_caps_every_service_that_asks_for_more() {
        let operator =
            OperatorConfig::from_toml("[host]\nmax_open_files = 20000", "stackbox.toml").unwrap();
        let spec = crate::client::ClientSpec::from_toml(
            "company_name = \"A\"\ndomain = \"a.example\"\nplan = \"enterprise\"\nadmin_email = \"o@a.example\"\n",
        )
        .unwrap();
        let id = crate::client::ClientId::new(&spec.company_name, 1);
        let stack = crate::stack::build(&spec, &id, &operator);
        let capped: Vec<u64> = stack.services.iter().filter_map(|s| s.nofile).collect();
        assert!(!capped.is_empty());
        assert!(capped.iter().all(|n| *n == 20000), "{capped:?}");
    }

    #[test]
    fn aws_settings_are_read_and_default_to_the_local_provider() {
        let defaults = OperatorConfig::from_toml("", "stackbox.toml").unwrap();
        assert_eq!(defaults.infrastructure, ProviderKind::Local);
        assert_eq!(
            defaults.aws.placement(Plan::Enterprise),
            DbPlacement::Dedicated
        );
        assert_eq!(defaults.aws.placement(Plan::Starter), DbPlacement::Shared);
        assert!(defaults.aws.final_snapshot_on_destroy);
        let config = OperatorConfig::from_toml(
            r#"
[infrastructure]
provider = "aws"
[aws]
region = "eu-central-1"
hosted_zone = "create"
listener_arn = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:listener/app/shared/50dc6c495c0c9188/f2f7dc8efc522ab2"
vpc_id = "vpc-0123456789abcdef0"
target = "i-0123456789abcdef0"
target_port = 8080
health_check_path = "/healthz"
db_placement = { professional = "dedicated" }
db_instance_class = "db.r6g.large"
shared_db_instance = "stackbox-shared"
shared_db_master_secret = "stackbox/shared-db-master"
db_security_groups = ["sg-0123456789abcdef0"]
final_snapshot_on_destroy = false
certificate_wait_seconds = 60
"#,
            "stackbox.toml",
        )
        .unwrap();
        assert_eq!(config.infrastructure, ProviderKind::Aws);
        assert_eq!(config.aws.region.as_deref(), Some("eu-central-1"));
        assert_eq!(config.aws.hosted_zone, HostedZonePolicy::Create);
        assert_eq!(
            config.aws.target,
            Some(AlbTarget::Instance("i-0123456789abcdef0".into()))
        );
        assert_eq!(config.aws.target_port, 8080);
        assert_eq!(
            config.aws.placement(Plan::Professional),
            DbPlacement::Dedicated
        );
        assert_eq!(config.aws.placement(Plan::Starter), DbPlacement::Shared);
        assert!(!config.aws.final_snapshot_on_destroy);
        assert_eq!(config.aws.certificate_wait_seconds, 60);
    }

    #[test]
    fn cpus_are_written_without_trailing_zeros() {
        assert_eq!(Limits::new(250, 1).cpus(), "0.25");
        assert_eq!(Limits::new(1000, 1).cpus(), "1");
        assert_eq!(Limits::new(1500, 1).cpus(), "1.5");
        assert_eq!(Limits::new(2005, 1).cpus(), "2.005");
    }
}
