//! Plans, the apps they include, and the containers each app brings.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A subscription plan. Each plan includes everything of the plans below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Website, CRM and files.
    Starter,
    /// Adds booking (Cal.com) and analytics (Plausible).
    Professional,
    /// Adds newsletters (Mailtrain).
    Enterprise,
}

impl Plan {
    /// Every plan, cheapest first.
    pub const ALL: [Plan; 3] = [Plan::Starter, Plan::Professional, Plan::Enterprise];

    /// The name used in configuration files and output.
    pub fn key(self) -> &'static str {
        match self {
            Plan::Starter => "starter",
            Plan::Professional => "professional",
            Plan::Enterprise => "enterprise",
        }
    }

    /// Parses a plan name as written in a client configuration.
    pub fn from_key(key: &str) -> Option<Plan> {
        Plan::ALL.into_iter().find(|plan| plan.key() == key)
    }

    /// The apps this plan includes.
    pub fn apps(self) -> BTreeSet<App> {
        App::ALL
            .into_iter()
            .filter(|app| app.minimum_plan() <= self)
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A client-facing application that a client may turn off with `[features]`.
///
/// The router (Traefik) and the website are always deployed; databases and caches are
/// deployed when an enabled app needs them (see [`Infra`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum App {
    /// EspoCRM, at `crm.<domain>`.
    Espocrm,
    /// Nextcloud, at `files.<domain>`.
    Nextcloud,
    /// Cal.com, at `booking.<domain>`.
    Calcom,
    /// Plausible Community Edition, at `analytics.<domain>`.
    Plausible,
    /// Mailtrain v2, at `newsletter.<domain>` (plus its public and sandbox hostnames).
    Mailtrain,
}

impl App {
    /// Every app, in display order.
    pub const ALL: [App; 5] = [
        App::Espocrm,
        App::Nextcloud,
        App::Calcom,
        App::Plausible,
        App::Mailtrain,
    ];

    /// The key used in `[features]`, in output and as the compose service name.
    pub fn key(self) -> &'static str {
        match self {
            App::Espocrm => "espocrm",
            App::Nextcloud => "nextcloud",
            App::Calcom => "calcom",
            App::Plausible => "plausible",
            App::Mailtrain => "mailtrain",
        }
    }

    /// Parses a `[features]` key.
    pub fn from_key(key: &str) -> Option<App> {
        App::ALL.into_iter().find(|app| app.key() == key)
    }

    /// The product name, for messages and the website.
    pub fn title(self) -> &'static str {
        match self {
            App::Espocrm => "EspoCRM",
            App::Nextcloud => "Nextcloud",
            App::Calcom => "Cal.com",
            App::Plausible => "Plausible",
            App::Mailtrain => "Mailtrain",
        }
    }

    /// What the app is for, in the words a business owner uses.
    pub fn purpose(self) -> &'static str {
        match self {
            App::Espocrm => "Customers & sales (CRM)",
            App::Nextcloud => "Files & documents",
            App::Calcom => "Online booking",
            App::Plausible => "Website analytics",
            App::Mailtrain => "Newsletters",
        }
    }

    /// The subdomain (left of the client's domain) where the app is served.
    pub fn subdomain(self) -> &'static str {
        match self {
            App::Espocrm => "crm",
            App::Nextcloud => "files",
            App::Calcom => "booking",
            App::Plausible => "analytics",
            App::Mailtrain => "newsletter",
        }
    }

    /// The cheapest plan that includes the app.
    pub fn minimum_plan(self) -> Plan {
        match self {
            App::Espocrm | App::Nextcloud => Plan::Starter,
            App::Calcom | App::Plausible => Plan::Professional,
            App::Mailtrain => Plan::Enterprise,
        }
    }

    /// The shared databases and caches the app cannot run without.
    pub fn needs(self) -> &'static [Infra] {
        match self {
            App::Espocrm => &[Infra::Mysql],
            App::Nextcloud => &[Infra::Mysql, Infra::Redis],
            App::Calcom => &[Infra::Postgres],
            App::Plausible => &[Infra::Postgres],
            App::Mailtrain => &[Infra::Mysql],
        }
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Shared data services of one client, deployed only when an enabled app needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Infra {
    /// The MySQL-compatible server (MariaDB LTS; see the image catalog).
    Mysql,
    /// Redis, for Nextcloud's locking cache (Mailtrain has its own; see [`ServiceKind::MailtrainRedis`]).
    Redis,
    /// PostgreSQL, for Cal.com and Plausible.
    Postgres,
}

/// Every container StackBox can deploy for a client, by compose service name.
///
/// Apps bring companions of their own (ClickHouse for Plausible, MongoDB for Mailtrain,
/// the daemon and websocket workers of EspoCRM, the cron worker of Nextcloud).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// The client's router, TLS terminator and ACME client.
    Traefik,
    /// nginx serving the business website.
    Website,
    /// MariaDB.
    Mysql,
    /// Redis.
    Redis,
    /// PostgreSQL.
    Postgres,
    /// EspoCRM web (Apache).
    Espocrm,
    /// EspoCRM's job daemon.
    EspocrmDaemon,
    /// EspoCRM's websocket server.
    EspocrmWebsocket,
    /// Nextcloud web (Apache).
    Nextcloud,
    /// Nextcloud's background jobs.
    NextcloudCron,
    /// Cal.com.
    Calcom,
    /// Plausible.
    Plausible,
    /// ClickHouse, Plausible's event store.
    PlausibleEventsDb,
    /// Mailtrain.
    Mailtrain,
    /// Redis for Mailtrain alone: Mailtrain v2 cannot authenticate to Redis, so its Redis
    /// has no password and sits on a network only Mailtrain joins.
    MailtrainRedis,
    /// MongoDB, Mailtrain's ZoneMTA queue store (no authentication, same private network).
    MailtrainMongo,
}

impl ServiceKind {
    /// Every service, in deployment (and file) order.
    pub const ALL: [ServiceKind; 16] = [
        ServiceKind::Traefik,
        ServiceKind::Website,
        ServiceKind::Mysql,
        ServiceKind::Redis,
        ServiceKind::Postgres,
        ServiceKind::Espocrm,
        ServiceKind::EspocrmDaemon,
        ServiceKind::EspocrmWebsocket,
        ServiceKind::Nextcloud,
        ServiceKind::NextcloudCron,
        ServiceKind::Calcom,
        ServiceKind::Plausible,
        ServiceKind::PlausibleEventsDb,
        ServiceKind::Mailtrain,
        ServiceKind::MailtrainRedis,
        ServiceKind::MailtrainMongo,
    ];

    /// Whether a replacement of the service may start before the container it replaces stops
    /// (start-first: the new one healthy, then the old one stopped, so visitors see no gap).
    /// Only services that keep no state of their own and tolerate a second copy running for
    /// a few seconds; the rest stop first. A container that publishes host ports always stops
    /// first (two cannot bind one port).
    pub fn replaced_start_first(self) -> bool {
        match self {
            // Serves files and routes requests; the client's Traefik re-reads its ACME store
            // at start and the old one writes it only on a renewal.
            ServiceKind::Traefik | ServiceKind::Website => true,
            // Cal.com keeps everything in PostgreSQL; its start runs idempotent migrations.
            ServiceKind::Calcom => true,
            // Databases and caches: one writer per data directory.
            ServiceKind::Mysql
            | ServiceKind::Redis
            | ServiceKind::Postgres
            | ServiceKind::PlausibleEventsDb
            | ServiceKind::MailtrainRedis
            | ServiceKind::MailtrainMongo => false,
            // Write their own files and run background jobs that must not run twice
            // (EspoCRM's daemon and installer, Nextcloud's occ upgrade and cron, Plausible's
            // and Mailtrain's migrations and queues).
            ServiceKind::Espocrm
            | ServiceKind::EspocrmDaemon
            | ServiceKind::EspocrmWebsocket
            | ServiceKind::Nextcloud
            | ServiceKind::NextcloudCron
            | ServiceKind::Plausible
            | ServiceKind::Mailtrain => false,
        }
    }

    /// The compose service name (also the container's DNS name on the client's networks).
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Traefik => "traefik",
            ServiceKind::Website => "website",
            ServiceKind::Mysql => "mysql",
            ServiceKind::Redis => "redis",
            ServiceKind::Postgres => "postgres",
            ServiceKind::Espocrm => "espocrm",
            ServiceKind::EspocrmDaemon => "espocrm-daemon",
            ServiceKind::EspocrmWebsocket => "espocrm-websocket",
            ServiceKind::Nextcloud => "nextcloud",
            ServiceKind::NextcloudCron => "nextcloud-cron",
            ServiceKind::Calcom => "calcom",
            ServiceKind::Plausible => "plausible",
            ServiceKind::PlausibleEventsDb => "plausible-events-db",
            ServiceKind::Mailtrain => "mailtrain",
            ServiceKind::MailtrainRedis => "mailtrain-redis",
            ServiceKind::MailtrainMongo => "mailtrain-mongo",
        }
    }

    /// Parses a compose service name.
    pub fn from_name(name: &str) -> Option<ServiceKind> {
        ServiceKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    /// The image catalog key whose image the service runs.
    pub fn image_key(self) -> ImageKey {
        match self {
            ServiceKind::Traefik => ImageKey::Traefik,
            ServiceKind::Website => ImageKey::Nginx,
            ServiceKind::Mysql => ImageKey::Mysql,
            ServiceKind::Redis => ImageKey::Redis,
            ServiceKind::Postgres => ImageKey::Postgres,
            ServiceKind::Espocrm | ServiceKind::EspocrmDaemon | ServiceKind::EspocrmWebsocket => {
                ImageKey::Espocrm
            }
            ServiceKind::Nextcloud | ServiceKind::NextcloudCron => ImageKey::Nextcloud,
            ServiceKind::Calcom => ImageKey::Calcom,
            ServiceKind::Plausible => ImageKey::Plausible,
            ServiceKind::PlausibleEventsDb => ImageKey::Clickhouse,
            ServiceKind::Mailtrain => ImageKey::Mailtrain,
            ServiceKind::MailtrainRedis => ImageKey::Redis,
            ServiceKind::MailtrainMongo => ImageKey::Mongo,
        }
    }

    /// The services deployed for a set of enabled apps, in deployment order.
    pub fn for_apps(apps: &BTreeSet<App>) -> Vec<ServiceKind> {
        let infra: BTreeSet<Infra> = apps
            .iter()
            .flat_map(|app| app.needs().iter().copied())
            .collect();
        ServiceKind::ALL
            .into_iter()
            .filter(|kind| match kind {
                ServiceKind::Traefik | ServiceKind::Website => true,
                ServiceKind::Mysql => infra.contains(&Infra::Mysql),
                ServiceKind::Redis => infra.contains(&Infra::Redis),
                ServiceKind::Postgres => infra.contains(&Infra::Postgres),
                ServiceKind::Espocrm
                | ServiceKind::EspocrmDaemon
                | ServiceKind::EspocrmWebsocket => apps.contains(&App::Espocrm),
                ServiceKind::Nextcloud | ServiceKind::NextcloudCron => {
                    apps.contains(&App::Nextcloud)
                }
                ServiceKind::Calcom => apps.contains(&App::Calcom),
                ServiceKind::Plausible | ServiceKind::PlausibleEventsDb => {
                    apps.contains(&App::Plausible)
                }
                ServiceKind::Mailtrain
                | ServiceKind::MailtrainRedis
                | ServiceKind::MailtrainMongo => apps.contains(&App::Mailtrain),
            })
            .collect()
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key of the image catalog: one image per key, shared by an app and its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKey {
    /// Traefik.
    Traefik,
    /// nginx.
    Nginx,
    /// The MySQL-compatible server.
    Mysql,
    /// Redis.
    Redis,
    /// PostgreSQL.
    Postgres,
    /// EspoCRM.
    Espocrm,
    /// Nextcloud.
    Nextcloud,
    /// Cal.com.
    Calcom,
    /// Plausible.
    Plausible,
    /// ClickHouse.
    Clickhouse,
    /// Mailtrain.
    Mailtrain,
    /// MongoDB.
    Mongo,
}

impl ImageKey {
    /// Every catalog key.
    pub const ALL: [ImageKey; 12] = [
        ImageKey::Traefik,
        ImageKey::Nginx,
        ImageKey::Mysql,
        ImageKey::Redis,
        ImageKey::Postgres,
        ImageKey::Espocrm,
        ImageKey::Nextcloud,
        ImageKey::Calcom,
        ImageKey::Plausible,
        ImageKey::Clickhouse,
        ImageKey::Mailtrain,
        ImageKey::Mongo,
    ];

    /// The key as written in catalog files.
    pub fn key(self) -> &'static str {
        match self {
            ImageKey::Traefik => "traefik",
            ImageKey::Nginx => "nginx",
            ImageKey::Mysql => "mysql",
            ImageKey::Redis => "redis",
            ImageKey::Postgres => "postgres",
            ImageKey::Espocrm => "espocrm",
            ImageKey::Nextcloud => "nextcloud",
            ImageKey::Calcom => "calcom",
            ImageKey::Plausible => "plausible",
            ImageKey::Clickhouse => "clickhouse",
            ImageKey::Mailtrain => "mailtrain",
            ImageKey::Mongo => "mongo",
        }
    }

    /// Parses a catalog key.
    pub fn from_key(key: &str) -> Option<ImageKey> {
        ImageKey::ALL.into_iter().find(|image| image.key() == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_include_everything_of_the_plans_below_them() {
        assert_eq!(
            Plan::Starter.apps(),
            BTreeSet::from([App::Espocrm, App::Nextcloud])
        );
        assert_eq!(
            Plan::Professional.apps(),
            BTreeSet::from([App::Espocrm, App::Nextcloud, App::Calcom, App::Plausible])
        );
        assert_eq!(Plan::Enterprise.apps(), App::ALL.into_iter().collect());
    }

    #[test]
    fn starter_services_are_the_design_documents_core_services() {
        let names: Vec<_> = ServiceKind::for_apps(&Plan::Starter.apps())
            .into_iter()
            .map(ServiceKind::name)
            .collect();
        assert_eq!(
            names,
            [
                "traefik",
                "website",
                "mysql",
                "redis",
                "espocrm",
                "espocrm-daemon",
                "espocrm-websocket",
                "nextcloud",
                "nextcloud-cron"
            ]
        );
    }

    #[test]
    fn databases_are_left_out_when_no_enabled_app_needs_them() {
        let services = ServiceKind::for_apps(&BTreeSet::from([App::Calcom]));
        assert!(services.contains(&ServiceKind::Postgres));
        assert!(!services.contains(&ServiceKind::Mysql));
        assert!(!services.contains(&ServiceKind::Redis));
    }
}
