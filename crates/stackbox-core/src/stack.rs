//! The desired stack of one client: networks, volumes and services with everything each
//! official image needs for an unattended first start.
//!
//! This is the single source of truth for a client's containers. The compose renderer
//! writes it as `docker-compose.yml` (secrets as `${VAR}` from `.env`); the engine adapter
//! creates the same containers through the Docker API (secrets resolved).
//!
//! Each service's contract cites where it comes from; see also `shared/reference/app-contracts.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU16;

use serde::Serialize;

use crate::client::{ClientId, ClientSpec};
use crate::error::CoreError;
use crate::operator::{AcmeChallenge, Ingress, Limits, LogRotation, OperatorConfig};
use crate::plan::{App, ServiceKind};
use crate::secrets::SecretKey;

/// The admin user name of every app with an admin account. Fixed on purpose: EspoCRM's
/// v10 installer sets the password of a user literally named `admin`
/// (espocrm-docker `docker-entrypoint.sh`, `set-password admin`).
pub const ADMIN_USERNAME: &str = "admin";

/// The Traefik certificate resolver's name.
pub const CERT_RESOLVER: &str = "letsencrypt";

/// Label every container, network and volume of a client carries.
pub const CLIENT_LABEL: &str = "io.stackbox.client";
/// Label naming the service within the client.
pub const SERVICE_LABEL: &str = "io.stackbox.service";
/// Label marking the client's Traefik, which the edge router routes to.
pub const ROLE_LABEL: &str = "io.stackbox.role";

/// How long Traefik waits for a whole request, body included (its default of 60 s cuts large
/// uploads): an hour carries 2 GiB at about 5 Mbit/s.
pub const UPLOAD_READ_TIMEOUT: &str = "3600s";

/// Nextcloud's Apache body limit: Apache's largest (2 GiB - 1), matching PHP_UPLOAD_LIMIT=2G;
/// the image's default of 1 GiB would refuse what PHP allows.
pub const APACHE_BODY_LIMIT_BYTES: u64 = 2_147_483_647;

/// A value of an environment variable: literal text, secrets and host variables, joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvValue(pub Vec<EnvPart>);

/// A piece of an [`EnvValue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EnvPart {
    /// Literal text.
    Text(String),
    /// A generated secret, resolved at deploy time (compose: `${NAME}` from `.env`).
    Secret(SecretKey),
    /// A variable of the operator's environment (DNS provider credentials).
    Host(String),
}

impl EnvValue {
    pub fn text(value: impl Into<String>) -> EnvValue {
        EnvValue(vec![EnvPart::Text(value.into())])
    }

    pub fn secret(key: SecretKey) -> EnvValue {
        EnvValue(vec![EnvPart::Secret(key)])
    }

    /// The secrets this value refers to.
    pub fn secrets(&self) -> impl Iterator<Item = SecretKey> + '_ {
        self.0.iter().filter_map(|part| match part {
            EnvPart::Secret(key) => Some(*key),
            _ => None,
        })
    }
}

/// A network of the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    /// The key services use in the compose file (`web`, `data`, …).
    pub key: &'static str,
    /// The engine's network name.
    pub name: String,
    /// No route to the outside world (databases and caches only).
    pub internal: bool,
}

/// A named volume of the client; holds client data and survives every redeploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSpec {
    pub key: &'static str,
    pub name: String,
}

/// Something mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Mount {
    /// A named volume of the client.
    Volume {
        volume: &'static str,
        target: &'static str,
    },
    /// A file of the bundle, by its path relative to the bundle folder.
    BundleFile {
        source: &'static str,
        target: &'static str,
        read_only: bool,
    },
    /// The Docker socket, read-only (Traefik's docker provider only).
    DockerSocket,
}

/// A host port published by a container (only Traefik, only in host-ports ingress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    pub host: u16,
    pub container: u16,
}

/// A container healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// Docker's form: `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub retries: u32,
    /// Failures during this time do not count; first installs take minutes.
    pub start_period_seconds: u32,
}

/// One service (container) of the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    pub kind: ServiceKind,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub environment: BTreeMap<String, EnvValue>,
    pub labels: BTreeMap<String, String>,
    /// Keys of [`NetworkSpec`]s.
    pub networks: Vec<&'static str>,
    pub mounts: Vec<Mount>,
    pub ports: Vec<PortSpec>,
    pub healthcheck: Healthcheck,
    /// Services that must be healthy before this one starts.
    pub depends_on: Vec<ServiceKind>,
    pub limits: Limits,
    /// Open-files limit (ClickHouse asks for 262144).
    pub nofile: Option<u64>,
    /// Time to stop cleanly before SIGKILL (databases flush on shutdown).
    pub stop_grace_seconds: Option<u32>,
    /// Rotation of the container's json-file log.
    pub logging: LogRotation,
}

impl ServiceSpec {
    /// The secrets this service's environment refers to.
    pub fn secrets(&self) -> BTreeSet<SecretKey> {
        self.environment
            .values()
            .flat_map(EnvValue::secrets)
            .collect()
    }
}

/// Everything to deploy for one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    pub client_id: ClientId,
    pub networks: Vec<NetworkSpec>,
    pub volumes: Vec<VolumeSpec>,
    pub services: Vec<ServiceSpec>,
}

impl Stack {
    pub fn service(&self, kind: ServiceKind) -> Option<&ServiceSpec> {
        self.services.iter().find(|service| service.kind == kind)
    }

    /// Every secret some service refers to.
    pub fn secrets(&self) -> BTreeSet<SecretKey> {
        self.services
            .iter()
            .flat_map(ServiceSpec::secrets)
            .collect()
    }
}

/// The services that ask for a raised open-files limit, with what they ask (every app on, the
/// default operator settings): what a host whose engine allows less must cap.
pub fn open_files_requests() -> Vec<(ServiceKind, u64)> {
    let spec = ClientSpec::from_toml(
        "company_name = \"Limits\"\ndomain = \"limits.example\"\nplan = \"enterprise\"\n\
         admin_email = \"owner@limits.example\"\n",
    );
    let Ok(spec) = spec else {
        return Vec::new();
    };
    let id = ClientId::new(&spec.company_name, 0);
    build(&spec, &id, &OperatorConfig::default())
        .services
        .into_iter()
        .filter_map(|s| s.nofile.map(|n| (s.kind, n)))
        .collect()
}

/// Where a client's databases and secrets live: one client spec renders for either.
///
/// The default is today's single-host stack: a local `mysql` container and the secrets in the
/// bundle's `.env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub mysql: MysqlPlacement,
    /// Whether `.env` carries the secret values (for `docker-compose` by hand). With `false`
    /// no bundle file holds a secret: they live in the secret store (AWS Secrets Manager) and
    /// reach the containers only through the engine adapter's resolved environment.
    pub secrets_in_files: bool,
}

impl Default for Placement {
    fn default() -> Placement {
        Placement {
            mysql: MysqlPlacement::Local,
            secrets_in_files: true,
        }
    }
}

impl Placement {
    /// Every secret the client's bundle and containers need with this placement. An external
    /// MySQL server has no root password in the stack: its users are made by the adapter that
    /// owns the server, with the apps' own passwords. The infrastructure may need more than
    /// this (a dedicated instance's master password): generate for both.
    pub fn needed_secrets(&self, apps: &BTreeSet<App>) -> BTreeSet<SecretKey> {
        let mut keys = SecretKey::needed_for(apps);
        if !self.mysql.is_local() {
            keys.remove(&SecretKey::MysqlRootPassword);
        }
        keys
    }
}

/// Where the MySQL databases of EspoCRM, Nextcloud and Mailtrain are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub enum MysqlPlacement {
    /// The client's own `mysql` container (MariaDB) on its internal data network, with a
    /// database and user per app named like the app (`espocrm`, …).
    #[default]
    Local,
    /// An external server (Amazon RDS): no `mysql` container, volume or init script; the apps
    /// connect to `host:port` with the database and user of `databases` (one name for both, so
    /// that clients sharing a server stay apart) and the apps' generated passwords. Those
    /// databases and users are made by the infrastructure adapter, not by the bundle.
    External {
        host: DatabaseHost,
        port: NonZeroU16,
        /// Per MySQL app; an app without an entry uses its own key (`espocrm`, …).
        databases: BTreeMap<App, DatabaseName>,
    },
}

/// The default MySQL port, left out of Nextcloud's `MYSQL_HOST`.
pub const MYSQL_DEFAULT_PORT: u16 = 3306;

/// EspoCRM's entrypoint wrapper (`sh -c`, `$0` is its name): installs the bundle's settings as
/// `data/config-override.php`, then, on an installed volume, sets the database settings from
/// the environment (why: at the EspoCRM service below), then runs the image's
/// entrypoint. Any failing step ends the container, so the engine restarts it and the deploy's
/// health gate sees it.
pub const ESPOCRM_ENTRYPOINT_WRAPPER: &str = "install -D -o www-data -g www-data -m 0640 /usr/local/share/stackbox/config-override.php /var/www/html/data/config-override.php && if [ \"$(bin/command config:get isInstalled)\" = true ]; then bin/command config:set database.host \"$ESPOCRM_DATABASE_HOST\" && bin/command config:set database.port \"$ESPOCRM_DATABASE_PORT\" && bin/command config:set database.dbname \"$ESPOCRM_DATABASE_NAME\" && bin/command config:set database.user \"$ESPOCRM_DATABASE_USER\" && bin/command config:set database.password \"$ESPOCRM_DATABASE_PASSWORD\"; fi && exec docker-entrypoint.sh \"$@\"";

impl MysqlPlacement {
    /// An external server, validated: errors name `mysql.host`, `mysql.port` or
    /// `mysql.databases.<app>`. `databases` gives each MySQL app's database and user name on
    /// that server (the infrastructure adapter's names).
    pub fn external<'a>(
        host: &str,
        port: u16,
        databases: impl IntoIterator<Item = (App, &'a str)>,
    ) -> Result<MysqlPlacement, CoreError> {
        let host = DatabaseHost::parse(host)?;
        let port = NonZeroU16::new(port).ok_or_else(|| {
            CoreError::invalid(
                "mysql.port",
                "0 is not a port; give the server's port (3306 is MySQL's and RDS's default)",
            )
        })?;
        let mut names = BTreeMap::new();
        for (app, name) in databases {
            let field = format!("mysql.databases.{}", app.key());
            if crate::render::sql::mysql_apps(&BTreeSet::from([app])).is_empty() {
                return Err(CoreError::invalid(
                    field,
                    format!("{} keeps no data in MySQL; remove this entry", app.title()),
                ));
            }
            names.insert(app, DatabaseName::parse(&field, name)?);
        }
        Ok(MysqlPlacement::External {
            host,
            port,
            databases: names,
        })
    }

    pub fn is_local(&self) -> bool {
        matches!(self, MysqlPlacement::Local)
    }

    /// Host and port the apps connect to.
    pub fn endpoint(&self) -> (String, u16) {
        match self {
            MysqlPlacement::Local => ("mysql".to_string(), MYSQL_DEFAULT_PORT),
            MysqlPlacement::External { host, port, .. } => (host.to_string(), port.get()),
        }
    }

    /// The database (and user) name of a MySQL app.
    pub fn database(&self, app: App) -> String {
        match self {
            MysqlPlacement::External { databases, .. } => match databases.get(&app) {
                Some(name) => name.as_str().to_string(),
                None => app.key().to_string(),
            },
            MysqlPlacement::Local => app.key().to_string(),
        }
    }
}

/// A MySQL database and user name on an external server: `[a-z0-9_]`, starting with a letter,
/// at most 32 characters (MySQL 8's limit for user names).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DatabaseName(String);

impl DatabaseName {
    /// Validates `text`; errors name `field`.
    pub fn parse(field: &str, text: &str) -> Result<DatabaseName, CoreError> {
        let valid = !text.is_empty()
            && text.len() <= 32
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(DatabaseName(text.to_string()))
        } else {
            Err(CoreError::invalid(
                field,
                format!(
                    "{text:?} is not a database name StackBox uses: 1 to 32 characters of a-z, 0-9 \
                     and _, starting with a letter"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The host name (or IPv4 address) of an external database server, lower case.
///
/// Restricted to `[a-z0-9.-]` in DNS label form, so it needs no escaping in YAML, compose
/// interpolation, `.env` or a shell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DatabaseHost(String);

impl DatabaseHost {
    pub fn parse(text: &str) -> Result<DatabaseHost, CoreError> {
        let field = "mysql.host";
        let host = text.trim().to_ascii_lowercase();
        if host.is_empty() {
            return Err(CoreError::invalid(
                field,
                "is empty; give the database server's host name (an RDS endpoint such as \
                 db.abc123.eu-west-1.rds.amazonaws.com)",
            ));
        }
        if host.len() > 253 {
            return Err(CoreError::invalid(
                field,
                "is longer than 253 characters, the limit of a DNS name",
            ));
        }
        if let Some(bad) = host
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
        {
            return Err(CoreError::invalid(
                field,
                format!(
                    "contains {bad:?}; give a host name of letters, digits, dots and hyphens \
                     (no scheme, port or path: the port is mysql.port)"
                ),
            ));
        }
        let labels: Vec<&str> = host.split('.').collect();
        for label in &labels {
            if label.is_empty()
                || label.len() > 63
                || label.starts_with('-')
                || label.ends_with('-')
            {
                return Err(CoreError::invalid(
                    field,
                    format!(
                        "{host:?} is not a DNS name: every dot-separated part must be 1 to 63 \
                         letters, digits or hyphens, not starting or ending with a hyphen"
                    ),
                ));
            }
        }
        let numeric = labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit()));
        if numeric
            && (labels.len() != 4
                || labels
                    .iter()
                    .any(|l| l.len() > 3 || l.parse::<u16>().map_or(true, |n| n > 255)))
        {
            return Err(CoreError::invalid(
                field,
                format!("{host:?} is neither a host name nor an IPv4 address"),
            ));
        }
        Ok(DatabaseHost(host))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-facing address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceUrl {
    /// `website` or an app key.
    pub name: &'static str,
    /// What it is for, for people.
    pub purpose: &'static str,
    pub url: String,
}

/// The Mailtrain hostnames: trusted (the admin UI), public (subscription pages, links in
/// e-mails) and sandbox (the template editor's isolated origin). Mailtrain v2 needs all three.
pub fn mailtrain_hosts(client: &ClientSpec) -> [String; 3] {
    MAILTRAIN_SUBDOMAINS.map(|sub| client.domain.sub(sub))
}

/// Mailtrain's trusted, public and sandbox subdomains, in that order.
const MAILTRAIN_SUBDOMAINS: [&str; 3] = ["newsletter", "lists", "newsletter-sandbox"];

/// The client's addresses, website first.
pub fn service_urls(client: &ClientSpec) -> Vec<ServiceUrl> {
    let mut urls = vec![ServiceUrl {
        name: "website",
        purpose: "Business website",
        url: format!("https://{}", client.domain),
    }];
    for app in client.apps() {
        urls.push(ServiceUrl {
            name: app.key(),
            purpose: app.purpose(),
            url: format!("https://{}", client.domain.sub(app.subdomain())),
        });
    }
    urls
}

/// Every hostname the client's Traefik answers for (certificates, edge routing, DNS).
pub fn hostnames(client: &ClientSpec) -> Vec<String> {
    hostnames_on(client, &client.domain)
}

/// The client's hostnames as they are on `domain` (its apps' subdomains of it).
fn hostnames_on(client: &ClientSpec, domain: &crate::client::Domain) -> Vec<String> {
    let mut hosts = vec![domain.to_string()];
    for app in client.apps() {
        if app == App::Mailtrain {
            hosts.extend(MAILTRAIN_SUBDOMAINS.map(|sub| domain.sub(sub)));
        } else {
            hosts.push(domain.sub(app.subdomain()));
        }
    }
    hosts
}

/// The hostnames of the client's previous domains, which redirect to the current one.
pub fn previous_hostnames(client: &ClientSpec) -> Vec<String> {
    client
        .previous_domains
        .iter()
        .flat_map(|previous| hostnames_on(client, &previous.domain))
        .collect()
}

/// A domain as a Go regular expression that matches only itself (its dots escaped).
fn domain_regex(domain: &str) -> String {
    domain.replace('.', "\\.")
}

/// The names of the services (containers) the client's plan and features give it, with the
/// default (local) placement.
pub fn service_names(client: &ClientSpec) -> Vec<String> {
    service_names_placed(client, &Placement::default())
}

/// The names of the services (containers) of the client with this placement: an external
/// MySQL server means no `mysql` container.
pub fn service_names_placed(client: &ClientSpec, placement: &Placement) -> Vec<String> {
    service_kinds(client, placement)
        .into_iter()
        .map(|kind| kind.name().to_string())
        .collect()
}

/// The services (containers) of the client with this placement, in [`ServiceKind`] order.
pub fn service_kinds(client: &ClientSpec, placement: &Placement) -> Vec<ServiceKind> {
    let mut kinds = ServiceKind::for_apps(&client.apps());
    if !placement.mysql.is_local() {
        kinds.retain(|kind| *kind != ServiceKind::Mysql);
    }
    kinds
}

/// The engine name of a client network.
pub fn network_name(id: &ClientId, key: &str) -> String {
    format!("{id}_{key}")
}

/// The desired stack of a client with the default (local) placement.
pub fn build(client: &ClientSpec, id: &ClientId, operator: &OperatorConfig) -> Stack {
    build_placed(client, id, operator, &Placement::default())
}

/// The desired stack of a client with its databases placed as `placement` says.
///
/// With an external MySQL server there is no `mysql` service, volume or init script, the apps
/// get the server's host and port and do not wait for a local database, and the containers
/// that use it without a route out (EspoCRM's daemon, Nextcloud's cron) also join the `web`
/// network, because `data` is internal and has no route to the server. `data` stays for
/// Redis, PostgreSQL and the rest.
pub fn build_placed(
    client: &ClientSpec,
    id: &ClientId,
    operator: &OperatorConfig,
    placement: &Placement,
) -> Stack {
    let apps = client.apps();
    let kinds = service_kinds(client, placement);
    // The client's release (validated by `render`; an unknown one falls back to the base
    // catalog here, which only a caller that skipped rendering can reach).
    let images = operator
        .release_catalog(client.release.as_deref())
        .unwrap_or_else(|_| operator.images.clone());
    let builder = Builder {
        client,
        id,
        operator,
        placement,
        images,
    };

    let mut networks = vec![
        NetworkSpec {
            key: "web",
            name: network_name(id, "web"),
            internal: false,
        },
        NetworkSpec {
            key: "data",
            name: network_name(id, "data"),
            internal: true,
        },
    ];
    if apps.contains(&App::Mailtrain) {
        networks.push(NetworkSpec {
            key: "mailtrain",
            name: network_name(id, "mailtrain"),
            internal: true,
        });
    }
    if let Ingress::Edge { .. } = &operator.ingress {
        // The client's own link to the edge router: only its Traefik and the edge router join
        // it, so no container of one client can reach a container of another.
        networks.push(NetworkSpec {
            key: "edge",
            name: network_name(id, "edge"),
            internal: true,
        });
    }

    let mut services: Vec<ServiceSpec> = kinds.iter().map(|kind| builder.service(*kind)).collect();
    if let Some(cap) = operator.max_open_files {
        for service in &mut services {
            service.nofile = service.nofile.map(|n| n.min(cap));
        }
    }
    let mut volume_keys: Vec<&'static str> = Vec::new();
    for service in &services {
        for mount in &service.mounts {
            if let Mount::Volume { volume, .. } = mount {
                if !volume_keys.contains(volume) {
                    volume_keys.push(volume);
                }
            }
        }
    }
    let volumes = volume_keys
        .into_iter()
        .map(|key| VolumeSpec {
            key,
            name: format!("{id}_{key}"),
        })
        .collect();
    Stack {
        client_id: id.clone(),
        networks,
        volumes,
        services,
    }
}

struct Builder<'a> {
    client: &'a ClientSpec,
    id: &'a ClientId,
    operator: &'a OperatorConfig,
    placement: &'a Placement,
    /// The images of the client's release.
    images: crate::catalog::ImageCatalog,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_string()).collect()
}

fn check(test: &[&str], start_period_seconds: u32) -> Healthcheck {
    Healthcheck {
        test: strings(test),
        interval_seconds: 10,
        timeout_seconds: 5,
        retries: 5,
        start_period_seconds,
    }
}

/// Joins literal text and secrets: `url(&["postgres://u:", S, "@host"])`.
enum Piece {
    T(&'static str),
    S(SecretKey),
}

fn joined(pieces: Vec<Piece>) -> EnvValue {
    EnvValue(
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::T(text) => EnvPart::Text(text.to_string()),
                Piece::S(key) => EnvPart::Secret(key),
            })
            .collect(),
    )
}

impl Builder<'_> {
    fn base(&self, kind: ServiceKind) -> ServiceSpec {
        let mut labels = BTreeMap::new();
        labels.insert(CLIENT_LABEL.to_string(), self.id.to_string());
        labels.insert(SERVICE_LABEL.to_string(), kind.name().to_string());
        ServiceSpec {
            kind,
            image: self.images.image(kind.image_key()).to_string(),
            entrypoint: None,
            command: None,
            environment: BTreeMap::new(),
            labels,
            networks: vec![],
            mounts: vec![],
            ports: vec![],
            healthcheck: check(&["CMD", "true"], 0),
            depends_on: vec![],
            limits: self.operator.limits(self.client.plan, kind),
            nofile: None,
            stop_grace_seconds: None,
            logging: self.operator.logging.clone(),
        }
    }

    fn url(&self, sub: &str) -> String {
        format!("https://{}", self.client.domain.sub(sub))
    }

    /// Routes `host_rule` to `port` of this container through the client's Traefik.
    fn route(
        &self,
        service: &mut ServiceSpec,
        name: &str,
        rule: String,
        port: u16,
        middlewares: &[String],
    ) {
        let router = format!("{}-{name}", self.id);
        let labels = &mut service.labels;
        labels.insert("traefik.enable".into(), "true".into());
        labels.insert(
            "traefik.docker.network".into(),
            network_name(self.id, "web"),
        );
        let prefix = format!("traefik.http.routers.{router}");
        labels.insert(format!("{prefix}.rule"), rule);
        labels.insert(format!("{prefix}.entrypoints"), "websecure".into());
        labels.insert(format!("{prefix}.tls"), "true".into());
        labels.insert(format!("{prefix}.tls.certresolver"), CERT_RESOLVER.into());
        labels.insert(format!("{prefix}.service"), router.clone());
        if let AcmeChallenge::Dns { .. } = self.operator.acme.challenge {
            // Every router asks for the same wildcard certificate, so Traefik orders one.
            labels.insert(
                format!("{prefix}.tls.domains[0].main"),
                self.client.domain.to_string(),
            );
            labels.insert(
                format!("{prefix}.tls.domains[0].sans"),
                format!("*.{}", self.client.domain),
            );
        }
        // Defined by the client Traefik's file provider (config/traefik/dynamic.yml), so it
        // exists whichever containers run.
        let mut chain = vec![format!("{}-headers@file", self.id)];
        chain.extend(middlewares.iter().cloned());
        labels.insert(format!("{prefix}.middlewares"), chain.join(","));
        labels.insert(
            format!("traefik.http.services.{router}.loadbalancer.server.port"),
            port.to_string(),
        );
    }

    fn host(&self, host: &str) -> String {
        format!("Host(`{host}`)")
    }

    fn wait_for(&self, service: &mut ServiceSpec, kinds: &[ServiceKind]) {
        service.depends_on.extend_from_slice(kinds);
    }

    /// The local database to wait for: none when MySQL is external (the infrastructure
    /// phase has made it ready before any container starts).
    fn mysql_dependency(&self) -> &'static [ServiceKind] {
        if self.placement.mysql.is_local() {
            &[ServiceKind::Mysql]
        } else {
            &[]
        }
    }

    fn service(&self, kind: ServiceKind) -> ServiceSpec {
        use Piece::{S, T};
        let mut s = self.base(kind);
        let domain = &self.client.domain;
        let company = self.client.company_name.as_str();
        match kind {
            ServiceKind::Traefik => {
                // Traefik v3 static configuration is the bundle's traefik.yml.
                s.mounts = vec![
                    Mount::BundleFile {
                        source: "config/traefik/traefik.yml",
                        target: "/etc/traefik/traefik.yml",
                        read_only: true,
                    },
                    Mount::BundleFile {
                        source: "config/traefik/dynamic.yml",
                        target: crate::render::traefik::DYNAMIC_FILE,
                        read_only: true,
                    },
                    // Traefik writes certificates here; it refuses a file that is not mode 0600.
                    Mount::BundleFile {
                        source: "ssl/acme.json",
                        target: "/letsencrypt/acme.json",
                        read_only: false,
                    },
                    Mount::DockerSocket,
                ];
                s.networks = vec!["web"];
                s.healthcheck = check(&["CMD", "traefik", "healthcheck", "--ping"], 10);
                s.labels.insert(ROLE_LABEL.into(), "router".into());
                if let AcmeChallenge::Dns { env, .. } = &self.operator.acme.challenge {
                    for name in env {
                        s.environment
                            .insert(name.clone(), EnvValue(vec![EnvPart::Host(name.clone())]));
                    }
                }
                match &self.operator.ingress {
                    Ingress::HostPorts { http, https } => {
                        s.ports = vec![
                            PortSpec {
                                host: *http,
                                container: 80,
                            },
                            PortSpec {
                                host: *https,
                                container: 443,
                            },
                        ];
                    }
                    Ingress::Edge { .. } => {
                        // Labels read by the operator's edge router only (the client's Traefik
                        // ignores containers with the router role): HTTP by Host, so HTTP-01
                        // challenges and redirects come here, and TLS passed through by SNI.
                        s.networks.push("edge");
                        let mut hosts = hostnames(self.client);
                        hosts.extend(previous_hostnames(self.client));
                        let http_rule = hosts
                            .iter()
                            .map(|h| self.host(h))
                            .collect::<Vec<_>>()
                            .join(" || ");
                        let sni_rule = hosts
                            .iter()
                            .map(|h| format!("HostSNI(`{h}`)"))
                            .collect::<Vec<_>>()
                            .join(" || ");
                        let http = format!("{}-edge-http", self.id);
                        let tls = format!("{}-edge-tls", self.id);
                        let l = &mut s.labels;
                        l.insert("traefik.enable".into(), "true".into());
                        l.insert(
                            "traefik.docker.network".into(),
                            network_name(self.id, "edge"),
                        );
                        l.insert(format!("traefik.http.routers.{http}.rule"), http_rule);
                        l.insert(
                            format!("traefik.http.routers.{http}.entrypoints"),
                            "web".into(),
                        );
                        l.insert(format!("traefik.http.routers.{http}.service"), http.clone());
                        l.insert(
                            format!("traefik.http.services.{http}.loadbalancer.server.port"),
                            "80".into(),
                        );
                        l.insert(format!("traefik.tcp.routers.{tls}.rule"), sni_rule);
                        l.insert(
                            format!("traefik.tcp.routers.{tls}.entrypoints"),
                            "websecure".into(),
                        );
                        l.insert(
                            format!("traefik.tcp.routers.{tls}.tls.passthrough"),
                            "true".into(),
                        );
                        l.insert(format!("traefik.tcp.routers.{tls}.service"), tls.clone());
                        l.insert(
                            format!("traefik.tcp.services.{tls}.loadbalancer.server.port"),
                            "443".into(),
                        );
                    }
                }
            }
            ServiceKind::Website => {
                s.mounts = vec![
                    Mount::BundleFile {
                        source: "config/nginx/website.conf",
                        target: "/etc/nginx/conf.d/default.conf",
                        read_only: true,
                    },
                    // Files, never folders: a bundle rewrite swaps the whole client folder, and
                    // a bind-mounted file keeps its inode while a folder would be emptied
                    // under a container that did not need replacing.
                    Mount::BundleFile {
                        source: "website/index.html",
                        target: "/usr/share/nginx/html/index.html",
                        read_only: true,
                    },
                ];
                s.networks = vec!["web"];
                s.healthcheck = check(
                    &[
                        "CMD",
                        "wget",
                        "-q",
                        "-O",
                        "/dev/null",
                        "http://127.0.0.1/health",
                    ],
                    10,
                );
                self.route(&mut s, "website", self.host(domain.as_str()), 80, &[]);
                // The previous domains' hostnames: a permanent redirect to the same host and
                // path on the current domain, with certificates of their own meanwhile.
                let old_hosts = previous_hostnames(self.client);
                if !old_hosts.is_empty() {
                    let router = format!("{}-previous-domains", self.id);
                    let prefix = format!("traefik.http.routers.{router}");
                    let rule = old_hosts
                        .iter()
                        .map(|h| self.host(h))
                        .collect::<Vec<_>>()
                        .join(" || ");
                    let alternatives = self
                        .client
                        .previous_domains
                        .iter()
                        .map(|p| domain_regex(p.domain.as_str()))
                        .collect::<Vec<_>>()
                        .join("|");
                    let l = &mut s.labels;
                    l.insert(format!("{prefix}.rule"), rule);
                    l.insert(format!("{prefix}.entrypoints"), "websecure".into());
                    l.insert(format!("{prefix}.tls"), "true".into());
                    l.insert(format!("{prefix}.tls.certresolver"), CERT_RESOLVER.into());
                    l.insert(format!("{prefix}.service"), "noop@internal".into());
                    l.insert(format!("{prefix}.middlewares"), format!("{router}@docker"));
                    let m = format!("traefik.http.middlewares.{router}.redirectregex");
                    l.insert(
                        format!("{m}.regex"),
                        format!("^https?://([^/]*\\.)?(?:{alternatives})(?::[0-9]+)?(/.*)?$"),
                    );
                    l.insert(
                        format!("{m}.replacement"),
                        format!("https://${{1}}{}${{2}}", self.client.domain),
                    );
                    l.insert(format!("{m}.permanent"), "true".into());
                }
            }
            ServiceKind::Mysql => {
                // mariadb image: MARIADB_* variables, initdb.d scripts on first start only,
                // healthcheck.sh shipped in the image (mariadb-docker README).
                s.environment.insert(
                    "MARIADB_ROOT_PASSWORD".into(),
                    EnvValue::secret(SecretKey::MysqlRootPassword),
                );
                // Upgrades the system tables when the image's minor version moves on.
                s.environment
                    .insert("MARIADB_AUTO_UPGRADE".into(), EnvValue::text("1"));
                // The init script reads each app's password from here (under its `.env`
                // name), so that no bundle file holds one.
                for (_, _, key) in crate::render::sql::mysql_apps(&self.client.apps()) {
                    s.environment
                        .insert(key.env_name().into(), EnvValue::secret(key));
                }
                s.command = Some(strings(&[
                    "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_unicode_ci",
                    // Nextcloud requires READ-COMMITTED (Nextcloud admin manual, database configuration).
                    "--transaction-isolation=READ-COMMITTED",
                    "--skip-name-resolve",
                ]));
                s.mounts = vec![
                    Mount::Volume {
                        volume: "mysql-data",
                        target: "/var/lib/mysql",
                    },
                    // A `.sh` that is not executable: the entrypoint sources it on the first
                    // start, with its docker_process_sql (mariadb-docker docker-entrypoint.sh).
                    Mount::BundleFile {
                        source: crate::render::sql::MYSQL_INIT_FILE,
                        target: crate::render::sql::INIT_SCRIPT_TARGET,
                        read_only: true,
                    },
                ];
                s.networks = vec!["data"];
                s.healthcheck = check(
                    &["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"],
                    60,
                );
                s.stop_grace_seconds = Some(60);
            }
            ServiceKind::Redis => {
                // The image has no password variable: pass it on the command line from the
                // environment (the compose file never holds it), through the image's entrypoint
                // so the server drops root for the redis user.
                s.environment.insert(
                    "REDISCLI_AUTH".into(),
                    EnvValue::secret(SecretKey::RedisPassword),
                );
                s.command = Some(strings(&[
                    "sh",
                    "-c",
                    "exec docker-entrypoint.sh redis-server --requirepass \"$REDISCLI_AUTH\" --appendonly yes",
                ]));
                s.mounts = vec![Mount::Volume {
                    volume: "redis-data",
                    target: "/data",
                }];
                s.networks = vec!["data"];
                s.healthcheck = check(&["CMD-SHELL", "redis-cli ping | grep -q PONG"], 10);
            }
            ServiceKind::MailtrainRedis => {
                s.command = Some(strings(&["redis-server", "--appendonly", "yes"]));
                s.mounts = vec![Mount::Volume {
                    volume: "mailtrain-redis-data",
                    target: "/data",
                }];
                s.networks = vec!["mailtrain"];
                s.healthcheck = check(&["CMD-SHELL", "redis-cli ping | grep -q PONG"], 10);
            }
            ServiceKind::Postgres => {
                s.environment
                    .insert("POSTGRES_USER".into(), EnvValue::text("postgres"));
                s.environment.insert(
                    "POSTGRES_PASSWORD".into(),
                    EnvValue::secret(SecretKey::PostgresPassword),
                );
                // For the init script, as with MariaDB.
                for (_, _, key) in crate::render::sql::postgres_apps(&self.client.apps()) {
                    s.environment
                        .insert(key.env_name().into(), EnvValue::secret(key));
                }
                s.mounts = vec![
                    // PostgreSQL 17 and older keep data here; 18 moved it (app-contracts).
                    Mount::Volume {
                        volume: "postgres-data",
                        target: "/var/lib/postgresql/data",
                    },
                    // Sourced like MariaDB's (docker-library/postgres docker-entrypoint.sh).
                    Mount::BundleFile {
                        source: crate::render::sql::POSTGRES_INIT_FILE,
                        target: crate::render::sql::INIT_SCRIPT_TARGET,
                        read_only: true,
                    },
                ];
                s.networks = vec!["data"];
                // TCP only: the entrypoint's temporary init server listens on no TCP port, so
                // this turns healthy only once init scripts have run.
                s.healthcheck = check(
                    &["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres"],
                    60,
                );
                s.stop_grace_seconds = Some(60);
            }
            ServiceKind::Espocrm | ServiceKind::EspocrmDaemon | ServiceKind::EspocrmWebsocket => {
                // EspoCRM 10 volumes (espocrm-docker entrypoint: mounting /var/www/html is legacy).
                s.mounts = vec![
                    Mount::Volume {
                        volume: "espocrm-data",
                        target: "/var/www/html/data",
                    },
                    Mount::Volume {
                        volume: "espocrm-custom",
                        target: "/var/www/html/custom",
                    },
                    Mount::Volume {
                        volume: "espocrm-client-custom",
                        target: "/var/www/html/client/custom",
                    },
                ];
                // Official compose healthcheck for all three containers.
                s.healthcheck = check(&["CMD", "bin/command", "app-check"], 300);
                match kind {
                    ServiceKind::Espocrm => {
                        let env = &mut s.environment;
                        // ESPOCRM_DATABASE_HOST and _PORT (espocrm-docker docker-entrypoint.sh,
                        // passed to the installer): the local container or the external server.
                        let (db_host, db_port) = self.placement.mysql.endpoint();
                        env.insert("ESPOCRM_DATABASE_PLATFORM".into(), EnvValue::text("Mysql"));
                        env.insert("ESPOCRM_DATABASE_HOST".into(), EnvValue::text(db_host));
                        env.insert(
                            "ESPOCRM_DATABASE_PORT".into(),
                            EnvValue::text(db_port.to_string()),
                        );
                        let db = self.placement.mysql.database(App::Espocrm);
                        env.insert("ESPOCRM_DATABASE_NAME".into(), EnvValue::text(db.clone()));
                        env.insert("ESPOCRM_DATABASE_USER".into(), EnvValue::text(db));
                        env.insert(
                            "ESPOCRM_DATABASE_PASSWORD".into(),
                            EnvValue::secret(SecretKey::EspocrmDbPassword),
                        );
                        env.insert(
                            "ESPOCRM_ADMIN_USERNAME".into(),
                            EnvValue::text(ADMIN_USERNAME),
                        );
                        env.insert(
                            "ESPOCRM_ADMIN_PASSWORD".into(),
                            EnvValue::secret(SecretKey::AdminPassword),
                        );
                        // "Very important" per EspoCRM's docker docs.
                        env.insert("ESPOCRM_SITE_URL".into(), EnvValue::text(self.url("crm")));
                        // The bundle's config.php becomes data/config-override.php, which EspoCRM
                        // merges last and never writes. It is copied, not bind-mounted, because the
                        // entrypoint runs `chown -R data` under `set -e`, which fails on a
                        // read-only mount.
                        s.mounts.push(Mount::BundleFile {
                            source: "config/espocrm/config.php",
                            target: "/usr/local/share/stackbox/config-override.php",
                            read_only: true,
                        });
                        // The installer writes the ESPOCRM_DATABASE_* values into
                        // data/config-internal.php once; an installed volume's entrypoint
                        // ("migrate") never reads them again and checks the database with the
                        // recorded ones. So on every start of an installed volume the wrapper
                        // sets them from the environment first (`config:set` needs no database
                        // connection: the installer runs it before its own check): a rotated
                        // password, a restored or cloned volume and a moved database all reach
                        // EspoCRM. The daemon reads the same file for each job.
                        s.entrypoint = Some(strings(&[
                            "sh",
                            "-c",
                            ESPOCRM_ENTRYPOINT_WRAPPER,
                            "stackbox-espocrm",
                        ]));
                        s.command = Some(strings(&["apache2-foreground"]));
                        s.networks = vec!["web", "data"];
                        self.wait_for(&mut s, self.mysql_dependency());
                        self.route(&mut s, "espocrm", self.host(&domain.sub("crm")), 80, &[]);
                    }
                    ServiceKind::EspocrmDaemon => {
                        s.entrypoint = Some(strings(&["docker-daemon.sh"]));
                        // Runs EspoCRM's scheduled jobs: the database on `data`, and the way
                        // out on `web` (the internal `data` network has no route out), since
                        // the jobs send mail, fetch IMAP mailboxes and call webhooks. It
                        // serves nothing: no router points at it.
                        s.networks = vec!["web", "data"];
                        self.wait_for(&mut s, &[ServiceKind::Espocrm]);
                    }
                    _ => {
                        s.entrypoint = Some(strings(&["docker-websocket.sh"]));
                        s.networks = vec!["web", "data"];
                        self.wait_for(&mut s, &[ServiceKind::Espocrm]);
                        let rule =
                            format!("{} && PathPrefix(`/ws`)", self.host(&domain.sub("crm")));
                        self.route(&mut s, "espocrm-websocket", rule, 8080, &[]);
                    }
                }
            }
            ServiceKind::Nextcloud | ServiceKind::NextcloudCron => {
                s.mounts = vec![Mount::Volume {
                    volume: "nextcloud-html",
                    target: "/var/www/html",
                }];
                if kind == ServiceKind::NextcloudCron {
                    // Same image and volume, background jobs (nextcloud/docker README).
                    s.entrypoint = Some(strings(&["/cron.sh"]));
                    // cron.php uses the database and Redis on `data`, and needs the way
                    // out on `web`: its background jobs send notification mail, refresh
                    // calendar subscriptions and check for updates. No router points at it.
                    s.networks = vec!["web", "data"];
                    s.healthcheck = check(&["CMD-SHELL", "grep -q crond /proc/1/cmdline"], 30);
                    // cron.php reads config.php, where NC_dbpassword overrides the installed
                    // password (see the web container); busybox crond passes it to the job.
                    s.environment.insert(
                        "NC_dbpassword".into(),
                        EnvValue::secret(SecretKey::NextcloudDbPassword),
                    );
                    self.wait_for(&mut s, &[ServiceKind::Nextcloud]);
                } else {
                    let files = domain.sub("files");
                    let env = &mut s.environment;
                    // All four MYSQL_* plus both admin variables, or no unattended install.
                    // MYSQL_HOST becomes Nextcloud's dbhost, which takes `host:port` for a
                    // port other than the default (Nextcloud admin manual, config.php dbhost).
                    let (db_host, db_port) = self.placement.mysql.endpoint();
                    let db_host = if db_port == MYSQL_DEFAULT_PORT {
                        db_host
                    } else {
                        format!("{db_host}:{db_port}")
                    };
                    env.insert("MYSQL_HOST".into(), EnvValue::text(db_host));
                    let db = self.placement.mysql.database(App::Nextcloud);
                    env.insert("MYSQL_DATABASE".into(), EnvValue::text(db.clone()));
                    env.insert("MYSQL_USER".into(), EnvValue::text(db));
                    env.insert(
                        "MYSQL_PASSWORD".into(),
                        EnvValue::secret(SecretKey::NextcloudDbPassword),
                    );
                    // MYSQL_PASSWORD reaches config.php only at installation. OC\Config lets an
                    // `NC_<key>` variable override config key <key> on every request, so the
                    // password in the environment is the one used: a rotated, restored or cloned
                    // client's Nextcloud follows its database without editing config.php.
                    env.insert(
                        "NC_dbpassword".into(),
                        EnvValue::secret(SecretKey::NextcloudDbPassword),
                    );
                    env.insert(
                        "NEXTCLOUD_ADMIN_USER".into(),
                        EnvValue::text(ADMIN_USERNAME),
                    );
                    env.insert(
                        "NEXTCLOUD_ADMIN_PASSWORD".into(),
                        EnvValue::secret(SecretKey::AdminPassword),
                    );
                    env.insert(
                        "NEXTCLOUD_TRUSTED_DOMAINS".into(),
                        EnvValue::text(files.clone()),
                    );
                    env.insert("REDIS_HOST".into(), EnvValue::text("redis"));
                    env.insert("REDIS_HOST_PORT".into(), EnvValue::text("6379"));
                    env.insert(
                        "REDIS_HOST_PASSWORD".into(),
                        EnvValue::secret(SecretKey::RedisPassword),
                    );
                    // Behind Traefik: without these, logins loop (nextcloud/server #13985).
                    env.insert(
                        "TRUSTED_PROXIES".into(),
                        EnvValue::text("10.0.0.0/8 172.16.0.0/12 192.168.0.0/16"),
                    );
                    env.insert("OVERWRITEPROTOCOL".into(), EnvValue::text("https"));
                    env.insert("OVERWRITEHOST".into(), EnvValue::text(files.clone()));
                    env.insert(
                        "OVERWRITECLIURL".into(),
                        EnvValue::text(format!("https://{files}")),
                    );
                    env.insert("APACHE_DISABLE_REWRITE_IP".into(), EnvValue::text("1"));
                    // One request may carry up to 2 GiB: PHP's limit, Apache's body limit
                    // (1 GiB by default in the image, which would answer 413 first; 2 GiB - 1
                    // is Apache's maximum) and Traefik's read timeout (UPLOAD_READ_TIMEOUT)
                    // agree. The web client uploads big files in chunks anyway.
                    env.insert("PHP_UPLOAD_LIMIT".into(), EnvValue::text("2G"));
                    env.insert(
                        "APACHE_BODY_LIMIT".into(),
                        EnvValue::text(APACHE_BODY_LIMIT_BYTES.to_string()),
                    );
                    s.networks = vec!["web", "data"];
                    // No built-in healthcheck upstream; localhost is always a trusted domain.
                    s.healthcheck = check(
                        &[
                            "CMD-SHELL",
                            "curl -fsS http://localhost/status.php | grep -q '\"installed\":true'",
                        ],
                        600,
                    );
                    self.wait_for(&mut s, self.mysql_dependency());
                    self.wait_for(&mut s, &[ServiceKind::Redis]);
                    let dav = format!("{}-nextcloud-dav", self.id);
                    let m = format!("traefik.http.middlewares.{dav}.redirectregex");
                    s.labels.insert(
                        format!("{m}.regex"),
                        "^https://([^/]+)/\\.well-known/(card|cal)dav".into(),
                    );
                    s.labels.insert(
                        format!("{m}.replacement"),
                        "https://${1}/remote.php/dav/".into(),
                    );
                    s.labels.insert(format!("{m}.permanent"), "true".into());
                    self.route(
                        &mut s,
                        "nextcloud",
                        self.host(&files),
                        80,
                        &[format!("{dav}@docker")],
                    );
                }
            }
            ServiceKind::Calcom => {
                // calcom/docker README and .env.example; scripts/start.sh waits on DATABASE_HOST.
                let db = || {
                    vec![
                        T("postgresql://calcom:"),
                        S(SecretKey::CalcomDbPassword),
                        T("@postgres:5432/calcom"),
                    ]
                };
                let env = &mut s.environment;
                env.insert("DATABASE_URL".into(), joined(db()));
                env.insert("DATABASE_DIRECT_URL".into(), joined(db()));
                env.insert("DATABASE_HOST".into(), EnvValue::text("postgres:5432"));
                env.insert(
                    "NEXTAUTH_SECRET".into(),
                    EnvValue::secret(SecretKey::CalcomNextauthSecret),
                );
                env.insert(
                    "CALENDSO_ENCRYPTION_KEY".into(),
                    EnvValue::secret(SecretKey::CalcomEncryptionKey),
                );
                env.insert(
                    "NEXT_PUBLIC_WEBAPP_URL".into(),
                    EnvValue::text(self.url("booking")),
                );
                env.insert(
                    "NEXTAUTH_URL".into(),
                    EnvValue::text(format!("{}/api/auth", self.url("booking"))),
                );
                env.insert("CALCOM_TELEMETRY_DISABLED".into(), EnvValue::text("1"));
                env.insert("NEXT_PUBLIC_TELEMETRY_KEY".into(), EnvValue::text(""));
                env.insert(
                    "EMAIL_FROM".into(),
                    EnvValue::text(format!("noreply@{domain}")),
                );
                env.insert("EMAIL_FROM_NAME".into(), EnvValue::text(company));
                s.networks = vec!["web", "data"];
                // The image's own check is `wget --spider http://localhost:3000`; migrations run first.
                s.healthcheck = check(
                    &[
                        "CMD-SHELL",
                        "wget -q --spider http://127.0.0.1:3000/auth/login || exit 1",
                    ],
                    600,
                );
                self.wait_for(&mut s, &[ServiceKind::Postgres]);
                self.route(
                    &mut s,
                    "calcom",
                    self.host(&domain.sub("booking")),
                    3000,
                    &[],
                );
            }
            ServiceKind::Plausible => {
                // plausible/community-edition compose.yml.
                s.command = Some(strings(&[
                    "sh",
                    "-c",
                    "/entrypoint.sh db createdb && /entrypoint.sh db migrate && exec /entrypoint.sh run",
                ]));
                let env = &mut s.environment;
                env.insert("BASE_URL".into(), EnvValue::text(self.url("analytics")));
                env.insert(
                    "SECRET_KEY_BASE".into(),
                    EnvValue::secret(SecretKey::PlausibleSecretKeyBase),
                );
                env.insert(
                    "TOTP_VAULT_KEY".into(),
                    EnvValue::secret(SecretKey::PlausibleTotpVaultKey),
                );
                env.insert(
                    "DATABASE_URL".into(),
                    joined(vec![
                        T("postgres://plausible:"),
                        S(SecretKey::PlausibleDbPassword),
                        T("@postgres:5432/plausible"),
                    ]),
                );
                env.insert(
                    "CLICKHOUSE_DATABASE_URL".into(),
                    joined(vec![
                        T("http://plausible:"),
                        S(SecretKey::ClickhousePassword),
                        T("@plausible-events-db:8123/plausible_events_db"),
                    ]),
                );
                env.insert("HTTP_PORT".into(), EnvValue::text("8000"));
                // The owner registers the first account, then invites others.
                env.insert("DISABLE_REGISTRATION".into(), EnvValue::text("invite_only"));
                env.insert(
                    "MAILER_EMAIL".into(),
                    EnvValue::text(format!("noreply@{domain}")),
                );
                env.insert("MAILER_NAME".into(), EnvValue::text(company));
                s.mounts = vec![Mount::Volume {
                    volume: "plausible-data",
                    target: "/var/lib/plausible",
                }];
                s.networks = vec!["web", "data"];
                s.nofile = Some(65535);
                s.healthcheck = check(
                    &[
                        "CMD-SHELL",
                        "wget -q -O /dev/null http://127.0.0.1:8000/api/health || exit 1",
                    ],
                    300,
                );
                self.wait_for(
                    &mut s,
                    &[ServiceKind::Postgres, ServiceKind::PlausibleEventsDb],
                );
                self.route(
                    &mut s,
                    "plausible",
                    self.host(&domain.sub("analytics")),
                    8000,
                    &[],
                );
            }
            ServiceKind::PlausibleEventsDb => {
                let env = &mut s.environment;
                env.insert(
                    "CLICKHOUSE_DB".into(),
                    EnvValue::text("plausible_events_db"),
                );
                env.insert("CLICKHOUSE_USER".into(), EnvValue::text("plausible"));
                env.insert(
                    "CLICKHOUSE_PASSWORD".into(),
                    EnvValue::secret(SecretKey::ClickhousePassword),
                );
                s.mounts = vec![
                    Mount::Volume { volume: "plausible-events-data", target: "/var/lib/clickhouse" },
                    Mount::Volume { volume: "plausible-events-logs", target: "/var/log/clickhouse-server" },
                    Mount::BundleFile { source: "config/clickhouse/logs.xml", target: "/etc/clickhouse-server/config.d/logs.xml", read_only: true },
                    Mount::BundleFile { source: "config/clickhouse/ipv4-only.xml", target: "/etc/clickhouse-server/config.d/ipv4-only.xml", read_only: true },
                    Mount::BundleFile { source: "config/clickhouse/low-resources.xml", target: "/etc/clickhouse-server/config.d/low-resources.xml", read_only: true },
                    Mount::BundleFile {
                        source: "config/clickhouse/default-profile-low-resources-overrides.xml",
                        target: "/etc/clickhouse-server/users.d/default-profile-low-resources-overrides.xml",
                        read_only: true,
                    },
                ];
                s.networks = vec!["data"];
                s.nofile = Some(262_144);
                s.healthcheck =
                    // The container's own address, not 127.0.0.1: the image's init runs a
                    // temporary server on 127.0.0.1 only, so loopback can answer before the
                    // real server (listening on every address, ipv4-only.xml) is up.
                    check(&["CMD-SHELL", "wget --no-verbose --tries=1 -O /dev/null \"http://$(hostname -i):8123/ping\" || exit 1"], 60);
                s.stop_grace_seconds = Some(60);
            }
            ServiceKind::Mailtrain => {
                // Mailtrain v2 docker-entrypoint.sh variables (README, "Docker Environment Variables").
                let [trusted, public, sandbox] = mailtrain_hosts(self.client);
                let env = &mut s.environment;
                env.insert(
                    "URL_BASE_TRUSTED".into(),
                    EnvValue::text(format!("https://{trusted}")),
                );
                env.insert(
                    "URL_BASE_PUBLIC".into(),
                    EnvValue::text(format!("https://{public}")),
                );
                env.insert(
                    "URL_BASE_SANDBOX".into(),
                    EnvValue::text(format!("https://{sandbox}")),
                );
                env.insert("WWW_PROXY".into(), EnvValue::text("true"));
                env.insert(
                    "WWW_SECRET".into(),
                    EnvValue::secret(SecretKey::MailtrainWwwSecret),
                );
                let (db_host, db_port) = self.placement.mysql.endpoint();
                env.insert("MYSQL_HOST".into(), EnvValue::text(db_host));
                env.insert("MYSQL_PORT".into(), EnvValue::text(db_port.to_string()));
                let db = self.placement.mysql.database(App::Mailtrain);
                env.insert("MYSQL_DATABASE".into(), EnvValue::text(db.clone()));
                env.insert("MYSQL_USER".into(), EnvValue::text(db));
                env.insert(
                    "MYSQL_PASSWORD".into(),
                    EnvValue::secret(SecretKey::MailtrainDbPassword),
                );
                env.insert("WITH_REDIS".into(), EnvValue::text("true"));
                env.insert("REDIS_HOST".into(), EnvValue::text("mailtrain-redis"));
                env.insert("MONGO_HOST".into(), EnvValue::text("mailtrain-mongo"));
                // Re-applied on every start: the client's one admin password.
                env.insert(
                    "ADMIN_PASSWORD".into(),
                    EnvValue::secret(SecretKey::AdminPassword),
                );
                s.mounts = vec![Mount::Volume {
                    volume: "mailtrain-files",
                    target: "/app/server/files",
                }];
                s.networks = vec!["web", "data", "mailtrain"];
                // No health endpoint: probe the trusted port with the image's own node.
                s.healthcheck = check(
                    &[
                        "CMD",
                        "node",
                        "-e",
                        "require('net').connect(3000,'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))",
                    ],
                    300,
                );
                self.wait_for(&mut s, self.mysql_dependency());
                self.wait_for(
                    &mut s,
                    &[ServiceKind::MailtrainRedis, ServiceKind::MailtrainMongo],
                );
                self.route(&mut s, "mailtrain", self.host(&trusted), 3000, &[]);
                self.route(&mut s, "mailtrain-public", self.host(&public), 3004, &[]);
                self.route(&mut s, "mailtrain-sandbox", self.host(&sandbox), 3003, &[]);
            }
            ServiceKind::MailtrainMongo => {
                s.mounts = vec![Mount::Volume {
                    volume: "mailtrain-mongo-data",
                    target: "/data/db",
                }];
                s.networks = vec!["mailtrain"];
                s.healthcheck = check(
                    &[
                        "CMD",
                        "mongo",
                        "--quiet",
                        "--eval",
                        "db.adminCommand('ping').ok",
                    ],
                    60,
                );
                s.stop_grace_seconds = Some(60);
            }
        }
        // Apps start only after what they need is healthy; keep the order stable.
        s.depends_on.sort();
        s.depends_on.dedup();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved_client() -> (ClientSpec, ClientId) {
        let spec = ClientSpec::from_toml(
            "company_name = \"Moved\"\ndomain = \"new.example.com\"\nplan = \"professional\"\n\
             admin_email = \"o@new.example.com\"\n\n[[previous_domains]]\n\
             domain = \"old.example.com\"\nuntil = \"2027-03-01\"\n",
        )
        .unwrap();
        (spec, ClientId::parse("moved-0000abcd").unwrap())
    }

    #[test]
    fn the_old_domains_hostnames_redirect_to_the_same_place_on_the_new_domain() {
        let (spec, id) = moved_client();
        let stack = build(&spec, &id, &OperatorConfig::default());
        let website = stack.service(ServiceKind::Website).unwrap();
        let router = "traefik.http.routers.moved-0000abcd-previous-domains";
        let rule = &website.labels[&format!("{router}.rule")];
        for host in [
            "old.example.com",
            "crm.old.example.com",
            "booking.old.example.com",
        ] {
            assert!(rule.contains(&format!("Host(`{host}`)")), "{rule}");
        }
        assert!(!rule.contains("new.example.com"), "{rule}");
        assert_eq!(
            website.labels[&format!("{router}.service")],
            "noop@internal"
        );
        assert_eq!(
            website.labels[&format!("{router}.tls.certresolver")],
            CERT_RESOLVER
        );
        let m = "traefik.http.middlewares.moved-0000abcd-previous-domains.redirectregex";
        let regex = regex::Regex::new(&website.labels[&format!("{m}.regex")]).unwrap();
        let replacement = &website.labels[&format!("{m}.replacement")];
        let redirect = |url: &str| regex.replace(url, replacement.as_str()).to_string();
        assert_eq!(
            redirect("https://crm.old.example.com/login?next=%2F"),
            "https://crm.new.example.com/login?next=%2F"
        );
        assert_eq!(
            redirect("https://old.example.com"),
            "https://new.example.com"
        );
        assert_eq!(
            redirect("http://old.example.com:443/a/b"),
            "https://new.example.com/a/b"
        );
        // The dots are literal: a look-alike domain is not rewritten.
        assert!(!regex.is_match("https://oldxexample.com/"));
        assert_eq!(website.labels[&format!("{m}.permanent")], "true");
    }

    #[test]
    fn the_edge_routes_the_old_domains_hostnames_to_the_client_until_they_expire() {
        let (spec, id) = moved_client();
        let operator = OperatorConfig::from_toml(
            "[ingress]\nmode = \"edge\"\nedge_router = \"edge\"\n",
            "test",
        )
        .unwrap();
        let stack = build(&spec, &id, &operator);
        let traefik = stack.service(ServiceKind::Traefik).unwrap();
        let sni = &traefik.labels["traefik.tcp.routers.moved-0000abcd-edge-tls.rule"];
        assert!(sni.contains("HostSNI(`crm.old.example.com`)"), "{sni}");
        assert!(sni.contains("HostSNI(`crm.new.example.com`)"), "{sni}");
        let without = ClientSpec {
            previous_domains: Vec::new(),
            ..spec
        };
        let stack = build(&without, &id, &operator);
        let traefik = stack.service(ServiceKind::Traefik).unwrap();
        assert!(
            !traefik.labels["traefik.tcp.routers.moved-0000abcd-edge-tls.rule"]
                .contains("old.example.com")
        );
        let website = stack.service(ServiceKind::Website).unwrap();
        assert!(!website
            .labels
            .keys()
            .any(|k| k.contains("previous-domains")));
    }

    fn problem(result: Result<MysqlPlacement, CoreError>) -> (String, String) {
        match result {
            Err(CoreError::InvalidField { field, problem }) => (field, problem),
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn clickhouse_and_plausible_ask_for_raised_open_file_limits() {
        let asks = open_files_requests();
        assert!(
            asks.contains(&(ServiceKind::PlausibleEventsDb, 262_144)),
            "{asks:?}"
        );
        assert!(asks.contains(&(ServiceKind::Plausible, 65_535)), "{asks:?}");
    }

    #[test]
    fn an_rds_endpoint_and_an_ipv4_address_are_accepted_and_lower_cased() {
        let placement = MysqlPlacement::external(
            " DB.abc123.EU-WEST-1.rds.amazonaws.com ",
            3306,
            [(App::Mailtrain, "smith_e11f059b_mailtrain")],
        )
        .unwrap();
        assert_eq!(
            placement.endpoint(),
            ("db.abc123.eu-west-1.rds.amazonaws.com".to_string(), 3306)
        );
        assert_eq!(
            placement.database(App::Mailtrain),
            "smith_e11f059b_mailtrain"
        );
        // An app without a name keeps its own (a dedicated server).
        assert_eq!(placement.database(App::Espocrm), "espocrm");
        let ip = MysqlPlacement::external("10.0.3.7", 3307, []).unwrap();
        assert_eq!(ip.endpoint(), ("10.0.3.7".to_string(), 3307));
    }

    #[test]
    fn a_bad_host_is_refused_naming_mysql_host() {
        for host in [
            "",
            "mysql://db.example.net",
            "db.example.net:3306",
            "db.example.net/x",
            "-db.example.net",
            "db..example.net",
            "db.example.net.",
            "db_1.example.net",
            "300.1.2.3",
            "1.2.3",
            "db example.net",
            "db.example\n.net",
            "$(reboot).example.net",
        ] {
            let (field, problem) = problem(MysqlPlacement::external(host, 3306, []));
            assert_eq!(field, "mysql.host", "{host:?}");
            assert!(!problem.is_empty());
        }
        let long = format!("{}.example.net", "a".repeat(64));
        assert_eq!(
            problem(MysqlPlacement::external(&long, 3306, [])).0,
            "mysql.host"
        );
    }

    #[test]
    fn port_zero_is_refused_naming_mysql_port() {
        let (field, problem) = problem(MysqlPlacement::external("db.example.net", 0, []));
        assert_eq!(field, "mysql.port");
        assert!(problem.contains("3306"), "{problem}");
    }

    #[test]
    fn database_names_are_validated_per_app_and_only_for_mysql_apps() {
        for bad in [
            "",
            "Espocrm",
            "1espocrm",
            "esp-crm",
            "esp crm",
            "a'b",
            &"a".repeat(33),
        ] {
            let (field, _) = problem(MysqlPlacement::external(
                "db.example.net",
                3306,
                [(App::Espocrm, bad)],
            ));
            assert_eq!(field, "mysql.databases.espocrm", "{bad:?}");
        }
        let (field, problem) = problem(MysqlPlacement::external(
            "db.example.net",
            3306,
            [(App::Calcom, "calcom")],
        ));
        assert_eq!(field, "mysql.databases.calcom");
        assert!(problem.contains("remove"), "{problem}");
    }

    #[test]
    fn the_default_placement_is_a_local_database_and_secrets_in_files() {
        let placement = Placement::default();
        assert_eq!(placement.mysql, MysqlPlacement::Local);
        assert!(placement.secrets_in_files);
        let apps = crate::plan::Plan::Enterprise.apps();
        assert_eq!(
            placement.needed_secrets(&apps),
            SecretKey::needed_for(&apps)
        );
        let external = Placement {
            mysql: MysqlPlacement::external("db.example.net", 3306, []).unwrap(),
            secrets_in_files: false,
        };
        let needed = external.needed_secrets(&apps);
        assert!(!needed.contains(&SecretKey::MysqlRootPassword));
        assert!(needed.contains(&SecretKey::EspocrmDbPassword));
    }

    #[test]
    fn nextcloud_gets_host_colon_port_only_for_a_port_other_than_3306() {
        let spec = ClientSpec::from_toml(
            "company_name = \"X\"\ndomain = \"x.example.com\"\nplan = \"starter\"\nadmin_email = \"a@x.example.com\"\n",
        )
        .unwrap();
        let id = ClientId::parse("x-00000001").unwrap();
        let host_for = |port| {
            let placement = Placement {
                mysql: MysqlPlacement::external("db.example.net", port, []).unwrap(),
                secrets_in_files: true,
            };
            let stack = build_placed(&spec, &id, &OperatorConfig::default(), &placement);
            let nextcloud = stack.service(ServiceKind::Nextcloud).unwrap();
            let espocrm = stack.service(ServiceKind::Espocrm).unwrap();
            (
                nextcloud.environment["MYSQL_HOST"].clone(),
                espocrm.environment["ESPOCRM_DATABASE_PORT"].clone(),
            )
        };
        assert_eq!(
            host_for(3306),
            (EnvValue::text("db.example.net"), EnvValue::text("3306"))
        );
        assert_eq!(
            host_for(3307),
            (
                EnvValue::text("db.example.net:3307"),
                EnvValue::text("3307")
            )
        );
    }
}
