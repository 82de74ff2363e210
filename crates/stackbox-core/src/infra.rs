//! The infrastructure phase's pure model (design document, Phase 1 and "Integration with AWS").
//!
//! A client's infrastructure comes from a provider: `local` (the default: no cloud, the stack
//! brings its own MySQL and Traefik's own certificates) or `aws`. For `aws`,
//! [`InfraRequest::for_client`] says which AWS resources the client needs, each with its
//! deterministic name and tags; the adapter (`stackbox-aws`) observes what exists into an
//! [`ObservedInfra`], and [`InfraPlan::diff`] compares the two into ordered actions. No IO here.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::{ClientId, ClientSpec, Domain};
use crate::error::CoreError;
use crate::operator::OperatorConfig;
use crate::plan::{App, Plan};
use crate::render::sql::mysql_apps;
use crate::secrets::{SecretKey, Secrets};
use crate::stack;

/// Where a client's infrastructure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// No cloud: the stack runs its own MySQL, Traefik gets certificates from Let's Encrypt.
    #[default]
    Local,
    /// AWS: ACM certificates, RDS, Secrets Manager, the shared ALB, CloudFront and Route53.
    Aws,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 2] = [ProviderKind::Local, ProviderKind::Aws];

    /// The name in configuration files (`local`, `aws`).
    pub fn key(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Aws => "aws",
        }
    }

    pub fn from_key(key: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|kind| kind.key() == key)
    }

    /// Parses a configured value, naming `field` when it is not a provider.
    pub fn parse(field: &str, text: &str) -> Result<ProviderKind, CoreError> {
        ProviderKind::from_key(text.trim()).ok_or_else(|| {
            CoreError::invalid(
                field,
                format!("unknown infrastructure provider {text:?}; use \"local\" or \"aws\""),
            )
        })
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The provider a client uses: its own `infrastructure` setting, else the operator's.
pub fn effective_provider(spec: &ClientSpec, operator: &OperatorConfig) -> ProviderKind {
    spec.infrastructure.unwrap_or(operator.infrastructure)
}

/// What to do when the client's Route53 hosted zone does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HostedZonePolicy {
    /// Use the zone the operator made (and delegated); a missing zone stops the phase.
    /// The default, because a zone StackBox creates answers nothing until its name servers
    /// are delegated from the parent zone, and the certificate would wait for nothing.
    #[default]
    Existing,
    /// Create the zone (tagged with the client) when missing; destroy deletes it again.
    Create,
}

/// Where a plan's MySQL databases live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbPlacement {
    /// The client's own RDS instance.
    Dedicated,
    /// A database and a user per app on the operator's shared RDS instance.
    Shared,
}

impl DbPlacement {
    pub fn key(self) -> &'static str {
        match self {
            DbPlacement::Dedicated => "dedicated",
            DbPlacement::Shared => "shared",
        }
    }
}

/// The host entry point the ALB forwards a client's traffic to: the edge router's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlbTarget {
    /// An IPv4 address in the VPC (target group type `ip`).
    Ip(String),
    /// An EC2 instance id (target group type `instance`).
    Instance(String),
}

impl AlbTarget {
    /// Parses `10.0.1.15` or `i-0123456789abcdef0`.
    pub fn parse(field: &str, text: &str) -> Result<AlbTarget, CoreError> {
        let text = text.trim();
        if is_ipv4(text) {
            return Ok(AlbTarget::Ip(text.to_string()));
        }
        if let Some(hex) = text.strip_prefix("i-") {
            if (8..=17).contains(&hex.len())
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            {
                return Ok(AlbTarget::Instance(text.to_string()));
            }
        }
        Err(CoreError::invalid(
            field,
            format!(
                "{text:?} is neither an IPv4 address nor an EC2 instance id; give the host's \
                 private address (\"10.0.1.15\") or its instance id (\"i-0123456789abcdef0\")"
            ),
        ))
    }

    /// The target id as ELB takes it.
    pub fn id(&self) -> &str {
        match self {
            AlbTarget::Ip(id) | AlbTarget::Instance(id) => id,
        }
    }

    /// The target group's `TargetType`.
    pub fn target_type(&self) -> &'static str {
        match self {
            AlbTarget::Ip(_) => "ip",
            AlbTarget::Instance(_) => "instance",
        }
    }
}

fn is_ipv4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.len() <= 3
                && part.chars().all(|c| c.is_ascii_digit())
                && part.parse::<u16>().is_ok_and(|n| n <= 255)
                && !(part.len() > 1 && part.starts_with('0'))
        })
}

/// The operator's `[aws]` settings.
///
/// Everything the operator owns and shares between clients (the VPC, the ALB and its HTTPS
/// listener, the shared database instance, subnet group and security groups) is made once by
/// the operator and named here; StackBox creates and removes only per-client resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsSettings {
    /// The region; when unset, the environment's (`AWS_REGION`, profile).
    pub region: Option<String>,
    pub hosted_zone: HostedZonePolicy,
    /// The shared ALB's HTTPS listener: every client gets a host-header rule on it.
    pub listener_arn: Option<String>,
    /// The VPC of the ALB and of the target groups.
    pub vpc_id: Option<String>,
    /// The host entry point the ALB forwards to (the edge router), and its port.
    pub target: Option<AlbTarget>,
    pub target_port: u16,
    /// The target group's health-check path.
    pub health_check_path: String,
    /// Where each plan's MySQL databases live; see [`AwsSettings::placement`].
    pub db_placement: BTreeMap<Plan, DbPlacement>,
    /// RDS engine: `mariadb` (default, like the local stack: Mailtrain's driver needs
    /// `mysql_native_password`, which MySQL 8.4 disables) or `mysql`.
    pub db_engine: String,
    pub db_engine_version: Option<String>,
    /// Instance class and storage of a dedicated instance.
    pub db_instance_class: String,
    pub db_allocated_storage_gib: u32,
    /// The operator's shared instance (for plans placed `shared`).
    pub shared_db_instance: Option<String>,
    /// A Secrets Manager secret holding the shared instance's master login as JSON
    /// (`{"username": …, "password": …}`, the format of RDS-managed master secrets).
    pub shared_db_master_secret: Option<String>,
    /// DB subnet group and VPC security groups of dedicated instances.
    pub db_subnet_group: Option<String>,
    pub db_security_groups: Vec<String>,
    /// Whether destroying a dedicated instance keeps a final snapshot (default: yes).
    pub final_snapshot_on_destroy: bool,
    /// How long to wait for ACM to issue a certificate.
    pub certificate_wait_seconds: u32,
    /// How long to wait for a new dedicated RDS instance to become available.
    pub db_wait_seconds: u32,
    /// Where StackBox itself reaches the database servers to create the app databases and
    /// users (`host:port` of an SSH tunnel, a bastion or a proxy), when the control plane runs
    /// outside the VPC; the containers always use the instance's endpoint.
    pub db_connect_via: Option<(String, u16)>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            hosted_zone: HostedZonePolicy::default(),
            listener_arn: None,
            vpc_id: None,
            target: None,
            target_port: 80,
            health_check_path: "/".to_string(),
            db_placement: Plan::ALL
                .into_iter()
                .map(|plan| (plan, default_placement(plan)))
                .collect(),
            db_engine: "mariadb".to_string(),
            db_engine_version: None,
            db_instance_class: "db.t4g.micro".to_string(),
            db_allocated_storage_gib: 20,
            shared_db_instance: None,
            shared_db_master_secret: None,
            db_subnet_group: None,
            db_security_groups: Vec::new(),
            final_snapshot_on_destroy: true,
            certificate_wait_seconds: 900,
            db_wait_seconds: 1800,
            db_connect_via: None,
        }
    }
}

/// The default database placement of a plan.
///
/// Enterprise gets a dedicated instance: its clients pay for isolation, and a dedicated
/// instance limits the blast radius (a noisy neighbour, a failover, a restore from backup or a
/// maintenance window touches one client only; the client's data can be handed over as a
/// snapshot). Starter and professional share the operator's instance: an RDS instance costs a
/// fixed monthly amount whatever it holds, more than these plans' databases need, and one user
/// per database (each granted only its own) keeps clients apart on it.
pub fn default_placement(plan: Plan) -> DbPlacement {
    match plan {
        Plan::Enterprise => DbPlacement::Dedicated,
        Plan::Starter | Plan::Professional => DbPlacement::Shared,
    }
}

impl AwsSettings {
    /// Where this plan's databases live.
    pub fn placement(&self, plan: Plan) -> DbPlacement {
        self.db_placement
            .get(&plan)
            .copied()
            .unwrap_or_else(|| default_placement(plan))
    }

    /// Checks that the settings a client on `plan` needs are there (all plans when `None`);
    /// the error names the missing field.
    pub fn check_complete(&self, plan: Option<Plan>) -> Result<(), CoreError> {
        let missing = |field: &str, example: &str| {
            CoreError::invalid(
                field,
                format!("is missing; the aws provider needs it, for example {field} = {example}"),
            )
        };
        if self.listener_arn.is_none() {
            return Err(missing(
                "aws.listener_arn",
                "\"arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shared/…/…\"",
            ));
        }
        if self.vpc_id.is_none() {
            return Err(missing("aws.vpc_id", "\"vpc-0123456789abcdef0\""));
        }
        if self.target.is_none() {
            return Err(missing("aws.target", "\"10.0.1.15\""));
        }
        let plans: Vec<Plan> = match plan {
            Some(plan) => vec![plan],
            None => Plan::ALL.to_vec(),
        };
        if plans
            .iter()
            .any(|plan| self.placement(*plan) == DbPlacement::Shared)
        {
            if self.shared_db_instance.is_none() {
                return Err(missing("aws.shared_db_instance", "\"stackbox-shared\""));
            }
            if self.shared_db_master_secret.is_none() {
                return Err(missing(
                    "aws.shared_db_master_secret",
                    "\"stackbox/shared-db-master\"",
                ));
            }
        }
        Ok(())
    }
}

/// The tag every StackBox resource carries with its client's id.
pub const TAG_CLIENT: &str = "stackbox:client";
/// The tag that marks a resource as StackBox's (`"true"`).
pub const TAG_MANAGED: &str = "stackbox:managed";
/// The client's domain, so that destroy finds the DNS records from the client id alone.
pub const TAG_DOMAIN: &str = "stackbox:domain";
/// The client's plan.
pub const TAG_PLAN: &str = "stackbox:plan";
/// The Route53 hosted zone id of every CloudFront distribution (for alias records).
pub const CLOUDFRONT_HOSTED_ZONE_ID: &str = "Z2FDTNDATAQYW2";
/// The region where CloudFront takes its certificates from.
pub const CLOUDFRONT_CERTIFICATE_REGION: &str = "us-east-1";

/// The deterministic names of a client's AWS resources.
pub mod names {
    use crate::client::ClientId;

    /// The Secrets Manager secret: `stackbox/<client-id>`.
    pub fn secret(id: &ClientId) -> String {
        format!("stackbox/{id}")
    }

    /// The dedicated RDS instance: `stackbox-<client-id>` (at most 38 characters; RDS allows 63).
    pub fn db_instance(id: &ClientId) -> String {
        format!("stackbox-{id}")
    }

    /// The target group: `sb-<client-id>` (at most 32 characters, ELB's limit).
    pub fn target_group(id: &ClientId) -> String {
        format!("sb-{id}")
    }

    /// The prefix of the CloudFront distribution's caller reference (a timestamp follows, as
    /// CloudFront never accepts one reference twice).
    pub fn distribution_reference(id: &ClientId) -> String {
        format!("stackbox-{id}")
    }

    /// An app's MySQL database and user: `<slug, at most 12>_<hex>_<app>`. At most 31
    /// characters (MySQL 8 limits user names to 32); the 8 hex digits of the id keep clients
    /// on a shared instance apart.
    pub fn app_database(id: &ClientId, app_key: &str) -> String {
        let (slug, hex) = id.as_str().rsplit_once('-').unwrap_or((id.as_str(), ""));
        let short: String = slug.chars().take(12).collect();
        format!("{short}_{hex}_{app_key}")
    }

    /// The master user of a dedicated instance.
    pub const DB_MASTER_USER: &str = "stackbox";

    /// A deterministic listener-rule priority for the client (1..=50000), the first one tried;
    /// the adapter probes upward from it for a free one.
    pub fn rule_priority(id: &ClientId) -> u32 {
        // FNV-1a: stable across Rust versions (unlike the std hasher).
        let mut hash: u32 = 0x811c_9dc5;
        for byte in id.as_str().bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        1 + hash % 50_000
    }
}

/// A lowercase SHA-256 hex digest, to compare contents (such as a secret's) without showing them.
pub fn fingerprint(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Kinds of per-client AWS resources, in the order the phase makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    HostedZone,
    Certificate,
    /// The certificate CloudFront uses, in us-east-1 (only when the region is another).
    CloudfrontCertificate,
    /// The DNS validation CNAME of a certificate.
    ValidationRecord,
    DbInstance,
    AppDatabase,
    Secret,
    TargetGroup,
    ListenerRule,
    ListenerCertificate,
    Distribution,
    DnsRecord,
    TargetRegistration,
}

impl ResourceKind {
    pub fn key(self) -> &'static str {
        match self {
            ResourceKind::HostedZone => "hosted-zone",
            ResourceKind::Certificate => "certificate",
            ResourceKind::CloudfrontCertificate => "cloudfront-certificate",
            ResourceKind::ValidationRecord => "validation-record",
            ResourceKind::DbInstance => "db-instance",
            ResourceKind::AppDatabase => "app-database",
            ResourceKind::Secret => "secret",
            ResourceKind::TargetGroup => "target-group",
            ResourceKind::ListenerRule => "listener-rule",
            ResourceKind::ListenerCertificate => "listener-certificate",
            ResourceKind::Distribution => "distribution",
            ResourceKind::DnsRecord => "dns-record",
            ResourceKind::TargetRegistration => "target-registration",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A resource by kind and name (its deterministic name, or what identifies it for kinds that
/// AWS gives no name, such as the certificate's domain or a DNS record's host).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceRef {
    pub kind: ResourceKind,
    pub name: String,
}

impl ResourceRef {
    pub fn new(kind: ResourceKind, name: impl Into<String>) -> ResourceRef {
        ResourceRef {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// Attributes whose name starts with this are compared but never shown (secret contents).
pub const HIDDEN_ATTRIBUTE_PREFIX: &str = "content";

/// One resource the client needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredResource {
    pub resource: ResourceRef,
    /// The attributes a change of which is an update (host values, health-check path, …).
    pub attributes: BTreeMap<String, String>,
}

/// An app's MySQL database and user on RDS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppDatabase {
    pub app: App,
    /// Database and user name (the same), see [`names::app_database`].
    pub name: String,
    /// The secret holding the user's password.
    pub password: SecretKey,
}

/// Where the client's MySQL databases go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseRequest {
    pub placement: DbPlacement,
    /// The RDS instance: the client's own (dedicated) or the operator's (shared).
    pub instance: String,
    pub databases: Vec<AppDatabase>,
}

/// A client's desired AWS infrastructure.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct InfraRequest {
    pub client: ClientId,
    pub domain: Domain,
    pub plan: Plan,
    pub settings: AwsSettings,
    /// The apex first, then each enabled service's hostnames.
    pub hostnames: Vec<String>,
    /// The tags every resource of the client carries.
    pub tags: BTreeMap<String, String>,
    /// `None` when no enabled app uses MySQL.
    pub database: Option<DatabaseRequest>,
    /// The desired resources, in the order the phase makes them.
    pub resources: Vec<DesiredResource>,
    #[serde(skip)]
    secrets: Secrets,
}

impl fmt::Debug for InfraRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfraRequest")
            .field("client", &self.client)
            .field("domain", &self.domain)
            .field("plan", &self.plan)
            .field("hostnames", &self.hostnames)
            .field("database", &self.database)
            .field("resources", &self.resources.len())
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// The client's tags.
pub fn client_tags(id: &ClientId, domain: &Domain, plan: Plan) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_CLIENT.to_string(), id.to_string()),
        (TAG_MANAGED.to_string(), "true".to_string()),
        (TAG_DOMAIN.to_string(), domain.to_string()),
        (TAG_PLAN.to_string(), plan.key().to_string()),
    ])
}

/// The MySQL databases a client may have (every MySQL app, enabled or not): what destroy drops.
pub fn all_app_databases(id: &ClientId) -> Vec<AppDatabase> {
    mysql_apps(&App::ALL.into_iter().collect())
        .into_iter()
        .map(|(app, key, password)| AppDatabase {
            app,
            name: names::app_database(id, key),
            password,
        })
        .collect()
}

impl InfraRequest {
    /// The AWS resources `spec` needs, for the `aws` provider.
    ///
    /// Fails naming the field when a needed operator setting is missing, and with
    /// [`CoreError::MissingSecret`] when `secrets` lacks one the databases need.
    pub fn for_client(
        spec: &ClientSpec,
        id: &ClientId,
        operator: &OperatorConfig,
        secrets: &Secrets,
    ) -> Result<InfraRequest, CoreError> {
        let settings = operator.aws.clone();
        settings.check_complete(Some(spec.plan))?;
        let tags = client_tags(id, &spec.domain, spec.plan);
        let hostnames = stack::hostnames(spec);
        let apps = spec.apps();
        let databases: Vec<AppDatabase> = mysql_apps(&apps)
            .into_iter()
            .map(|(app, key, password)| AppDatabase {
                app,
                name: names::app_database(id, key),
                password,
            })
            .collect();
        let placement = settings.placement(spec.plan);
        let mut needed: Vec<SecretKey> = databases.iter().map(|db| db.password).collect();
        if placement == DbPlacement::Dedicated && !databases.is_empty() {
            needed.push(SecretKey::MysqlRootPassword);
        }
        for key in needed {
            if secrets.get(key).is_none() {
                return Err(CoreError::MissingSecret {
                    name: key.env_name(),
                });
            }
        }
        let database = (!databases.is_empty()).then(|| DatabaseRequest {
            placement,
            instance: match placement {
                DbPlacement::Dedicated => names::db_instance(id),
                DbPlacement::Shared => settings.shared_db_instance.clone().unwrap_or_default(),
            },
            databases,
        });

        let domain = spec.domain.as_str();
        let attrs = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone()))
                .collect()
        };
        let mut resources = Vec::new();
        let mut push = |kind, name: &str, attributes| {
            resources.push(DesiredResource {
                resource: ResourceRef::new(kind, name),
                attributes,
            })
        };
        push(ResourceKind::HostedZone, domain, BTreeMap::new());
        let alternative = format!("*.{domain}");
        push(
            ResourceKind::Certificate,
            domain,
            attrs(&[("alternative_names", alternative.clone())]),
        );
        if settings.region.as_deref() != Some(CLOUDFRONT_CERTIFICATE_REGION) {
            push(
                ResourceKind::CloudfrontCertificate,
                domain,
                attrs(&[("alternative_names", alternative.clone())]),
            );
        }
        if let Some(database) = &database {
            if database.placement == DbPlacement::Dedicated {
                push(
                    ResourceKind::DbInstance,
                    &database.instance,
                    attrs(&[
                        ("engine", settings.db_engine.clone()),
                        ("instance_class", settings.db_instance_class.clone()),
                    ]),
                );
            }
            for db in &database.databases {
                push(ResourceKind::AppDatabase, &db.name, BTreeMap::new());
            }
        }
        let mut request = InfraRequest {
            client: id.clone(),
            domain: spec.domain.clone(),
            plan: spec.plan,
            settings: settings.clone(),
            hostnames: hostnames.clone(),
            tags,
            database,
            resources: Vec::new(),
            secrets: secrets.clone(),
        };
        push(
            ResourceKind::Secret,
            &names::secret(id),
            attrs(&[("content_sha256", fingerprint(&request.secret_document()))]),
        );
        push(
            ResourceKind::TargetGroup,
            &names::target_group(id),
            attrs(&[
                ("health_check_path", settings.health_check_path.clone()),
                ("port", settings.target_port.to_string()),
                (
                    "target_type",
                    settings
                        .target
                        .as_ref()
                        .map(|t| t.target_type().to_string())
                        .unwrap_or_default(),
                ),
            ]),
        );
        // ALB allows five values per rule: the apex and the wildcard cover every hostname.
        push(
            ResourceKind::ListenerRule,
            domain,
            attrs(&[("hosts", format!("{domain},{alternative}"))]),
        );
        push(ResourceKind::ListenerCertificate, domain, BTreeMap::new());
        push(
            ResourceKind::Distribution,
            domain,
            attrs(&[("aliases", domain.to_string())]),
        );
        for (index, host) in hostnames.iter().enumerate() {
            let points_to = if index == 0 { "cloudfront" } else { "alb" };
            push(
                ResourceKind::DnsRecord,
                host,
                attrs(&[("alias", points_to.to_string())]),
            );
        }
        if let Some(target) = &settings.target {
            push(
                ResourceKind::TargetRegistration,
                &format!("{}:{}", target.id(), settings.target_port),
                BTreeMap::new(),
            );
        }
        request.resources = resources;
        Ok(request)
    }

    /// The client's secrets.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The one Secrets Manager secret's JSON: `{"ENV_NAME": "value", …}`, keys sorted.
    pub fn secret_document(&self) -> String {
        secret_document(&self.secrets)
    }

    /// The service hostnames (every hostname but the apex): the records that point to the ALB.
    pub fn service_hostnames(&self) -> &[String] {
        self.hostnames.get(1..).unwrap_or_default()
    }

    /// The password of an app database's user.
    pub fn database_password(&self, db: &AppDatabase) -> Option<&str> {
        self.secrets.get(db.password)
    }

    /// The master password of a dedicated instance.
    pub fn dedicated_master_password(&self) -> Option<&str> {
        self.secrets.get(SecretKey::MysqlRootPassword)
    }

    /// The desired resource of this kind and name.
    pub fn resource(&self, kind: ResourceKind, name: &str) -> Option<&DesiredResource> {
        self.resources
            .iter()
            .find(|r| r.resource.kind == kind && r.resource.name == name)
    }
}

/// A secret document (`{"ENV_NAME": "value", …}`, keys sorted).
pub fn secret_document(secrets: &Secrets) -> String {
    let map: BTreeMap<&str, &str> = secrets
        .iter()
        .map(|(key, value)| (key.env_name(), value))
        .collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// Reads a secret document back; unknown names or values of the wrong format are refused
/// (naming the variable, never its value).
pub fn parse_secret_document(text: &str) -> Result<Secrets, CoreError> {
    let map: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|_| CoreError::Syntax {
            origin: "secret document".to_string(),
            message: "is not a JSON object of strings".to_string(),
        })?;
    let mut secrets = Secrets::new();
    for (name, value) in map {
        let key = SecretKey::from_env_name(&name).ok_or_else(|| {
            CoreError::invalid(
                format!("secret document.{name}"),
                "is not a StackBox secret; remove it",
            )
        })?;
        if !key.accepts(&value) {
            return Err(CoreError::invalid(
                format!("secret document.{name}"),
                "has a value of the wrong format; put a valid value or remove it to regenerate",
            ));
        }
        secrets.insert(key, value);
    }
    Ok(secrets)
}

/// Who a found resource belongs to, by its `stackbox:client` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "owner", content = "client")]
pub enum Owner {
    /// Tagged with this client.
    Client,
    /// Tagged with another client.
    OtherClient(String),
    /// Not tagged by StackBox (made by hand or by another tool).
    Untagged,
    /// Not ours to tag or own, used as it is (the operator's existing hosted zone).
    Operator,
}

/// One resource as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedResource {
    /// Its ARN or id.
    pub id: String,
    pub owner: Owner,
    /// The same attributes as the desired resource's, as found.
    pub attributes: BTreeMap<String, String>,
}

/// What the adapter found of a client's resources.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ObservedInfra {
    pub resources: BTreeMap<ResourceRef, ObservedResource>,
}

impl ObservedInfra {
    pub fn insert(&mut self, resource: ResourceRef, observed: ObservedResource) {
        self.resources.insert(resource, observed);
    }
}

/// A changed attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeChange {
    pub attribute: String,
    /// `None` for hidden attributes (secret contents).
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What the phase does with one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum InfraActionKind {
    Create,
    Update {
        id: String,
        changes: Vec<AttributeChange>,
    },
    Keep {
        id: String,
    },
    /// A resource with the client's name that is not the client's: never adopted or touched.
    Conflict {
        id: String,
        owner: Owner,
    },
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfraAction {
    pub resource: ResourceRef,
    #[serde(flatten)]
    pub kind: InfraActionKind,
}

/// The diff of desired and observed: one action per desired resource, in phase order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfraPlan {
    pub client: ClientId,
    pub region: Option<String>,
    pub actions: Vec<InfraAction>,
}

impl InfraPlan {
    /// Compares what the request needs with what was found.
    pub fn diff(request: &InfraRequest, observed: &ObservedInfra) -> InfraPlan {
        let actions = request
            .resources
            .iter()
            .map(|desired| {
                let kind = match observed.resources.get(&desired.resource) {
                    None => InfraActionKind::Create,
                    Some(found) => match &found.owner {
                        Owner::OtherClient(_) | Owner::Untagged => InfraActionKind::Conflict {
                            id: found.id.clone(),
                            owner: found.owner.clone(),
                        },
                        Owner::Client | Owner::Operator => {
                            let changes: Vec<AttributeChange> = desired
                                .attributes
                                .iter()
                                .filter(|(key, value)| found.attributes.get(*key) != Some(value))
                                .map(|(key, value)| {
                                    let hidden = key.starts_with(HIDDEN_ATTRIBUTE_PREFIX);
                                    AttributeChange {
                                        attribute: key.clone(),
                                        from: (!hidden)
                                            .then(|| found.attributes.get(key).cloned())
                                            .flatten(),
                                        to: (!hidden).then(|| value.clone()),
                                    }
                                })
                                .collect();
                            if changes.is_empty() {
                                InfraActionKind::Keep {
                                    id: found.id.clone(),
                                }
                            } else {
                                InfraActionKind::Update {
                                    id: found.id.clone(),
                                    changes,
                                }
                            }
                        }
                    },
                };
                InfraAction {
                    resource: desired.resource.clone(),
                    kind,
                }
            })
            .collect();
        InfraPlan {
            client: request.client.clone(),
            region: request.settings.region.clone(),
            actions,
        }
    }

    /// The actions that refuse to go on.
    pub fn conflicts(&self) -> impl Iterator<Item = &InfraAction> {
        self.actions
            .iter()
            .filter(|a| matches!(a.kind, InfraActionKind::Conflict { .. }))
    }

    /// Whether applying would change nothing.
    pub fn is_converged(&self) -> bool {
        self.actions
            .iter()
            .all(|a| matches!(a.kind, InfraActionKind::Keep { .. }))
    }

    /// The plan for people (`stackbox infra plan`).
    pub fn render(&self) -> String {
        let mut out = format!(
            "AWS infrastructure for {} (region {}):\n",
            self.client,
            self.region.as_deref().unwrap_or("from the environment")
        );
        let (mut create, mut update, mut keep, mut conflict) = (0, 0, 0, 0);
        for action in &self.actions {
            let kind = action.resource.kind.key();
            let name = &action.resource.name;
            match &action.kind {
                InfraActionKind::Create => {
                    create += 1;
                    out.push_str(&format!("  + create    {kind:<22} {name}\n"));
                }
                InfraActionKind::Keep { .. } => {
                    keep += 1;
                    out.push_str(&format!("  = unchanged {kind:<22} {name}\n"));
                }
                InfraActionKind::Update { changes, .. } => {
                    update += 1;
                    let what: Vec<String> = changes
                        .iter()
                        .map(|c| match (&c.from, &c.to) {
                            (None, None) => format!("{} changes", c.attribute),
                            (from, to) => format!(
                                "{}: {} -> {}",
                                c.attribute,
                                from.as_deref().unwrap_or("(none)"),
                                to.as_deref().unwrap_or("(none)")
                            ),
                        })
                        .collect();
                    out.push_str(&format!(
                        "  ~ update    {kind:<22} {name} ({})\n",
                        what.join("; ")
                    ));
                }
                InfraActionKind::Conflict { id, owner } => {
                    conflict += 1;
                    let whose = match owner {
                        Owner::OtherClient(other) => format!("belongs to client {other}"),
                        _ => "is not tagged as this client's".to_string(),
                    };
                    out.push_str(&format!(
                        "  ! conflict  {kind:<22} {name}: {id} {whose}; StackBox will not touch \
                         it: rename or remove it\n"
                    ));
                }
            }
        }
        out.push_str(&format!(
            "{create} to create, {update} to update, {keep} unchanged, {conflict} in conflict\n"
        ));
        out
    }
}

/// The services a client runs where its infrastructure is: without the `mysql` container when
/// its databases are on RDS. What health checks, status and the monitor expect.
pub fn expected_service_names(spec: &ClientSpec, operator: &OperatorConfig) -> Vec<String> {
    match effective_provider(spec, operator) {
        ProviderKind::Local => crate::stack::service_names(spec),
        ProviderKind::Aws => {
            // Any external endpoint gives the same list; the real one is the phase's.
            let placement = crate::stack::Placement {
                mysql: crate::stack::MysqlPlacement::external("rds.invalid", 3306, [])
                    .unwrap_or_default(),
                secrets_in_files: false,
            };
            crate::stack::service_names_placed(spec, &placement)
        }
    }
}

/// The placement of a client on the `aws` provider, from the phase's MySQL endpoint
/// (`None`: no enabled app uses MySQL): databases on RDS, no secret in any bundle file.
pub fn aws_placement(
    endpoint: Option<(&str, u16, &BTreeMap<String, String>)>,
) -> Result<crate::stack::Placement, CoreError> {
    let mysql = match endpoint {
        Some((host, port, databases)) => {
            let mut named = Vec::new();
            for (app, name) in databases {
                let app = crate::plan::App::from_key(app).ok_or_else(|| {
                    CoreError::invalid(format!("mysql.databases.{app}"), "unknown app")
                })?;
                named.push((app, name.as_str()));
            }
            crate::stack::MysqlPlacement::external(host, port, named)?
        }
        None => crate::stack::MysqlPlacement::external("rds.invalid", 3306, [])?,
    };
    Ok(crate::stack::Placement {
        mysql,
        secrets_in_files: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::TestRandom;

    fn operator(extra: &str) -> OperatorConfig {
        OperatorConfig::from_toml(
            &format!(
                r#"
[infrastructure]
provider = "aws"
[aws]
region = "eu-west-1"
listener_arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shared/50dc6c495c0c9188/f2f7dc8efc522ab2"
vpc_id = "vpc-0123456789abcdef0"
target = "10.0.1.15"
shared_db_instance = "stackbox-shared"
shared_db_master_secret = "stackbox/shared-db-master"
{extra}
"#
            ),
            "stackbox.toml",
        )
        .unwrap()
    }

    fn client(plan: &str) -> (ClientSpec, ClientId, Secrets) {
        let spec = ClientSpec::from_toml(&format!(
            "company_name = \"Smith Real Estate\"\ndomain = \"smith.example.com\"\nplan = \"{plan}\"\nadmin_email = \"o@smith.example.com\"\n"
        ))
        .unwrap();
        let id = ClientId::parse("smithrealestate-e11f059b").unwrap();
        let mut secrets = Secrets::new();
        secrets.fill_missing(&SecretKey::needed_for(&spec.apps()), &mut TestRandom(5));
        (spec, id, secrets)
    }

    fn kinds(request: &InfraRequest) -> Vec<(ResourceKind, String)> {
        request
            .resources
            .iter()
            .map(|r| (r.resource.kind, r.resource.name.clone()))
            .collect()
    }

    #[test]
    fn a_professional_client_on_the_shared_instance_needs_these_resources_in_phase_order() {
        let (spec, id, secrets) = client("professional");
        let request = InfraRequest::for_client(&spec, &id, &operator(""), &secrets).unwrap();
        use ResourceKind::*;
        let expected: Vec<(ResourceKind, String)> = [
            (HostedZone, "smith.example.com"),
            (Certificate, "smith.example.com"),
            (CloudfrontCertificate, "smith.example.com"),
            (AppDatabase, "smithrealest_e11f059b_espocrm"),
            (AppDatabase, "smithrealest_e11f059b_nextcloud"),
            (Secret, "stackbox/smithrealestate-e11f059b"),
            (TargetGroup, "sb-smithrealestate-e11f059b"),
            (ListenerRule, "smith.example.com"),
            (ListenerCertificate, "smith.example.com"),
            (Distribution, "smith.example.com"),
            (DnsRecord, "smith.example.com"),
            (DnsRecord, "crm.smith.example.com"),
            (DnsRecord, "files.smith.example.com"),
            (DnsRecord, "booking.smith.example.com"),
            (DnsRecord, "analytics.smith.example.com"),
            (TargetRegistration, "10.0.1.15:80"),
        ]
        .into_iter()
        .map(|(k, n)| (k, n.to_string()))
        .collect();
        assert_eq!(kinds(&request), expected);
        let database = request.database.as_ref().unwrap();
        assert_eq!(database.placement, DbPlacement::Shared);
        assert_eq!(database.instance, "stackbox-shared");
        assert_eq!(request.tags[TAG_CLIENT], "smithrealestate-e11f059b");
        assert_eq!(request.tags[TAG_MANAGED], "true");
        assert_eq!(request.service_hostnames().len(), 4);
        // Every app database name fits MySQL 8's 32-character user names.
        assert!(all_app_databases(&id).iter().all(|db| db.name.len() <= 32));
    }

    #[test]
    fn enterprise_gets_a_dedicated_instance_and_mailtrain_database_and_needs_the_root_password() {
        let (spec, id, mut secrets) = client("enterprise");
        let request = InfraRequest::for_client(&spec, &id, &operator(""), &secrets).unwrap();
        assert!(kinds(&request).contains(&(
            ResourceKind::DbInstance,
            "stackbox-smithrealestate-e11f059b".to_string()
        )));
        assert!(kinds(&request).contains(&(
            ResourceKind::AppDatabase,
            "smithrealest_e11f059b_mailtrain".to_string()
        )));
        secrets = Secrets::new();
        let error = InfraRequest::for_client(&spec, &id, &operator(""), &secrets).unwrap_err();
        assert!(matches!(error, CoreError::MissingSecret { .. }), "{error}");
    }

    #[test]
    fn placement_is_configurable_per_plan_and_the_region_us_east_1_needs_one_certificate() {
        let (spec, id, secrets) = client("starter");
        let mut operator = operator("[aws.db_placement]\nstarter = \"dedicated\"\n");
        operator.aws.region = Some("us-east-1".to_string());
        let request = InfraRequest::for_client(&spec, &id, &operator, &secrets).unwrap();
        assert_eq!(
            request.database.as_ref().unwrap().placement,
            DbPlacement::Dedicated
        );
        assert!(!kinds(&request)
            .iter()
            .any(|(k, _)| *k == ResourceKind::CloudfrontCertificate));
    }

    #[test]
    fn missing_aws_settings_are_named() {
        let (spec, id, secrets) = client("starter");
        let mut operator = operator("");
        operator.aws.listener_arn = None;
        let message = InfraRequest::for_client(&spec, &id, &operator, &secrets)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("aws.listener_arn: is missing"),
            "{message}"
        );
    }

    #[test]
    fn the_diff_creates_what_is_missing_keeps_what_matches_updates_what_drifted_and_refuses_foreign_resources(
    ) {
        let (spec, id, secrets) = client("professional");
        let request = InfraRequest::for_client(&spec, &id, &operator(""), &secrets).unwrap();
        let everything_ours = || {
            let mut observed = ObservedInfra::default();
            for desired in &request.resources {
                observed.insert(
                    desired.resource.clone(),
                    ObservedResource {
                        id: format!("id-{}", desired.resource.name),
                        owner: Owner::Client,
                        attributes: desired.attributes.clone(),
                    },
                );
            }
            observed
        };
        let plan = InfraPlan::diff(&request, &ObservedInfra::default());
        assert!(plan
            .actions
            .iter()
            .all(|a| a.kind == InfraActionKind::Create));
        assert!(InfraPlan::diff(&request, &everything_ours()).is_converged());

        let mut observed = everything_ours();
        let rule = ResourceRef::new(ResourceKind::ListenerRule, "smith.example.com");
        observed
            .resources
            .get_mut(&rule)
            .unwrap()
            .attributes
            .insert("hosts".into(), "old.example.com".into());
        let secret = ResourceRef::new(ResourceKind::Secret, names::secret(&id));
        observed
            .resources
            .get_mut(&secret)
            .unwrap()
            .attributes
            .insert("content_sha256".into(), "0000".into());
        let group = ResourceRef::new(ResourceKind::TargetGroup, names::target_group(&id));
        observed.resources.get_mut(&group).unwrap().owner = Owner::Untagged;
        let plan = InfraPlan::diff(&request, &observed);
        let action = |r: &ResourceRef| {
            plan.actions
                .iter()
                .find(|a| &a.resource == r)
                .unwrap()
                .kind
                .clone()
        };
        assert!(
            matches!(action(&rule), InfraActionKind::Update { ref changes, .. } if changes[0].from.as_deref() == Some("old.example.com"))
        );
        // The secret's change is shown without its contents or their digest.
        assert!(
            matches!(action(&secret), InfraActionKind::Update { ref changes, .. } if changes[0].from.is_none() && changes[0].to.is_none())
        );
        assert!(matches!(action(&group), InfraActionKind::Conflict { .. }));
        assert_eq!(plan.conflicts().count(), 1);
        let text = plan.render();
        assert!(text.contains("~ update    listener-rule"), "{text}");
        assert!(text.contains("content_sha256 changes"), "{text}");
        assert!(text.contains("! conflict  target-group"), "{text}");
        assert!(
            text.contains("0 to create, 2 to update, 13 unchanged, 1 in conflict"),
            "{text}"
        );
        for (_, value) in secrets.iter() {
            assert!(!text.contains(value));
        }
    }

    #[test]
    fn the_secret_document_round_trips_and_refuses_strangers() {
        let (spec, id, secrets) = client("enterprise");
        let request = InfraRequest::for_client(&spec, &id, &operator(""), &secrets).unwrap();
        assert_eq!(
            parse_secret_document(&request.secret_document()).unwrap(),
            secrets
        );
        let message = parse_secret_document(r#"{"AWS_SECRET":"abc"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("AWS_SECRET") && !message.contains("abc"),
            "{message}"
        );
        assert!(parse_secret_document(r#"{"ADMIN_PASSWORD":"short"}"#).is_err());
        assert!(!format!("{request:?}").contains(secrets.get(SecretKey::AdminPassword).unwrap()));
    }

    #[test]
    fn rule_priorities_are_stable_and_in_range_and_targets_parse() {
        let id = ClientId::parse("smithrealestate-e11f059b").unwrap();
        let p = names::rule_priority(&id);
        assert_eq!(p, names::rule_priority(&id));
        assert!((1..=50_000).contains(&p));
        assert_eq!(
            AlbTarget::parse("aws.target", "10.0.1.15").unwrap(),
            AlbTarget::Ip("10.0.1.15".into())
        );
        assert_eq!(
            AlbTarget::parse("aws.target", "i-0123456789abcdef0")
                .unwrap()
                .target_type(),
            "instance"
        );
        for bad in [
            "10.0.1",
            "10.0.1.256",
            "01.2.3.4",
            "i-xyz",
            "host.example.com",
        ] {
            assert!(AlbTarget::parse("aws.target", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_setting_overrides_the_operators_provider() {
        let (spec, _, _) = client("starter");
        assert_eq!(
            effective_provider(&spec, &OperatorConfig::default()),
            ProviderKind::Local
        );
        assert_eq!(effective_provider(&spec, &operator("")), ProviderKind::Aws);
        let local = ClientSpec {
            infrastructure: Some(ProviderKind::Local),
            ..spec
        };
        assert_eq!(
            effective_provider(&local, &operator("")),
            ProviderKind::Local
        );
    }

    #[test]
    fn clients_on_aws_expect_no_mysql_container_and_get_secret_free_placement() {
        let spec = ClientSpec::from_toml(
            "company_name = \"Smith\"\ndomain = \"smith.example.com\"\nplan = \"starter\"\n\
             admin_email = \"o@smith.example.com\"\ninfrastructure = \"aws\"\n",
        )
        .unwrap();
        let operator = OperatorConfig::default();
        let on_aws = expected_service_names(&spec, &operator);
        assert!(!on_aws.iter().any(|s| s == "mysql"), "{on_aws:?}");
        let mut local = spec.clone();
        local.infrastructure = None;
        assert!(expected_service_names(&local, &operator)
            .iter()
            .any(|s| s == "mysql"));
        let databases: BTreeMap<String, String> =
            [("espocrm".to_string(), "smith_0000abcd_espocrm".to_string())].into();
        let placement =
            aws_placement(Some(("db.eu-west-1.rds.amazonaws.com", 3306, &databases))).unwrap();
        assert!(!placement.secrets_in_files);
        assert_eq!(
            placement.mysql.database(App::Espocrm),
            "smith_0000abcd_espocrm"
        );
        let unknown: BTreeMap<String, String> = [("crm".to_string(), "x".to_string())].into();
        assert!(aws_placement(Some(("db.example", 3306, &unknown))).is_err());
    }
}
