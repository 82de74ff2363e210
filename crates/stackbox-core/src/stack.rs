//! The desired stack of one client: networks, volumes and services with everything each
//! official image needs for an unattended first start.
//!
//! This is the single source of truth for a client's containers. The compose renderer
//! writes it as `docker-compose.yml` (secrets as `${VAR}` from `.env`); the engine adapter
//! creates the same containers through the Docker API (secrets resolved).
//!
//! Each service's contract cites where it comes from; see also `shared/reference/app-contracts.md`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::client::{ClientId, ClientSpec};
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
    [
        client.domain.sub("newsletter"),
        client.domain.sub("lists"),
        client.domain.sub("newsletter-sandbox"),
    ]
}

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
    let mut hosts = vec![client.domain.to_string()];
    for app in client.apps() {
        if app == App::Mailtrain {
            hosts.extend(mailtrain_hosts(client));
        } else {
            hosts.push(client.domain.sub(app.subdomain()));
        }
    }
    hosts
}

/// The names of the services (containers) the client's plan and features give it.
pub fn service_names(client: &ClientSpec) -> Vec<String> {
    ServiceKind::for_apps(&client.apps())
        .into_iter()
        .map(|kind| kind.name().to_string())
        .collect()
}

/// The engine name of a client network.
pub fn network_name(id: &ClientId, key: &str) -> String {
    format!("{id}_{key}")
}

/// The desired stack of a client.
pub fn build(client: &ClientSpec, id: &ClientId, operator: &OperatorConfig) -> Stack {
    let apps = client.apps();
    let kinds = ServiceKind::for_apps(&apps);
    let builder = Builder {
        client,
        id,
        operator,
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
            image: self.operator.images.image(kind.image_key()).to_string(),
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
        let mut chain = vec![format!("{}-headers@docker", self.id)];
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
                        let hosts = hostnames(self.client);
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
                // The shared security headers middleware, used by every router of the client.
                let m = format!("traefik.http.middlewares.{}-headers.headers", self.id);
                s.labels
                    .insert(format!("{m}.stsSeconds"), "31536000".into());
                s.labels
                    .insert(format!("{m}.contentTypeNosniff"), "true".into());
                s.labels.insert(
                    format!("{m}.referrerPolicy"),
                    "strict-origin-when-cross-origin".into(),
                );
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
                    Mount::BundleFile {
                        source: "config/mysql/init.sql",
                        target: "/docker-entrypoint-initdb.d/10-stackbox.sql",
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
                s.mounts = vec![
                    // PostgreSQL 17 and older keep data here; 18 moved it (app-contracts).
                    Mount::Volume {
                        volume: "postgres-data",
                        target: "/var/lib/postgresql/data",
                    },
                    Mount::BundleFile {
                        source: "config/postgres/init.sql",
                        target: "/docker-entrypoint-initdb.d/10-stackbox.sql",
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
                        env.insert("ESPOCRM_DATABASE_PLATFORM".into(), EnvValue::text("Mysql"));
                        env.insert("ESPOCRM_DATABASE_HOST".into(), EnvValue::text("mysql"));
                        env.insert("ESPOCRM_DATABASE_PORT".into(), EnvValue::text("3306"));
                        env.insert("ESPOCRM_DATABASE_NAME".into(), EnvValue::text("espocrm"));
                        env.insert("ESPOCRM_DATABASE_USER".into(), EnvValue::text("espocrm"));
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
                        s.entrypoint = Some(strings(&[
                            "sh",
                            "-c",
                            "install -D -o www-data -g www-data -m 0640 /usr/local/share/stackbox/config-override.php /var/www/html/data/config-override.php && exec docker-entrypoint.sh \"$@\"",
                            "stackbox-espocrm",
                        ]));
                        s.command = Some(strings(&["apache2-foreground"]));
                        s.networks = vec!["web", "data"];
                        self.wait_for(&mut s, &[ServiceKind::Mysql]);
                        self.route(&mut s, "espocrm", self.host(&domain.sub("crm")), 80, &[]);
                    }
                    ServiceKind::EspocrmDaemon => {
                        s.entrypoint = Some(strings(&["docker-daemon.sh"]));
                        s.networks = vec!["data"];
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
                    s.networks = vec!["data"];
                    s.healthcheck = check(&["CMD-SHELL", "grep -q crond /proc/1/cmdline"], 30);
                    self.wait_for(&mut s, &[ServiceKind::Nextcloud]);
                } else {
                    let files = domain.sub("files");
                    let env = &mut s.environment;
                    // All four MYSQL_* plus both admin variables, or no unattended install.
                    env.insert("MYSQL_HOST".into(), EnvValue::text("mysql"));
                    env.insert("MYSQL_DATABASE".into(), EnvValue::text("nextcloud"));
                    env.insert("MYSQL_USER".into(), EnvValue::text("nextcloud"));
                    env.insert(
                        "MYSQL_PASSWORD".into(),
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
                    env.insert("PHP_UPLOAD_LIMIT".into(), EnvValue::text("2G"));
                    s.networks = vec!["web", "data"];
                    // No built-in healthcheck upstream; localhost is always a trusted domain.
                    s.healthcheck = check(
                        &[
                            "CMD-SHELL",
                            "curl -fsS http://localhost/status.php | grep -q '\"installed\":true'",
                        ],
                        600,
                    );
                    self.wait_for(&mut s, &[ServiceKind::Mysql, ServiceKind::Redis]);
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
                    check(&["CMD-SHELL", "wget --no-verbose --tries=1 -O /dev/null http://127.0.0.1:8123/ping || exit 1"], 60);
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
                env.insert("MYSQL_HOST".into(), EnvValue::text("mysql"));
                env.insert("MYSQL_PORT".into(), EnvValue::text("3306"));
                env.insert("MYSQL_DATABASE".into(), EnvValue::text("mailtrain"));
                env.insert("MYSQL_USER".into(), EnvValue::text("mailtrain"));
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
                self.wait_for(
                    &mut s,
                    &[
                        ServiceKind::Mysql,
                        ServiceKind::MailtrainRedis,
                        ServiceKind::MailtrainMongo,
                    ],
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
