//! Rendering: the desired stack and the client's settings as the files of a bundle.
//!
//! [`render`] is a pure function: the same client, id, secrets and operator settings give
//! byte-identical files. Writing them is the bundle adapter's job.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::client::{ClientId, ClientSpec};
use crate::error::CoreError;
use crate::operator::OperatorConfig;
use crate::secrets::{SecretKey, Secrets};
use crate::stack::{self, ServiceUrl, Stack};

pub mod clickhouse;
pub mod compose;
pub mod env;
pub mod html;
pub mod nginx;
pub mod php;
pub mod sql;
pub mod traefik;
pub mod yaml;

/// Mode of files that hold secrets (`.env`) or certificates (`acme.json`).
pub const MODE_SECRET: u32 = 0o600;
/// Mode of other files. Files read by a container's non-root user (the database init
/// scripts) must be world-readable inside the container; on the host they are protected
/// by the client folder's mode 0700.
pub const MODE_PUBLIC: u32 = 0o644;

/// How the adapter treats an existing file at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WritePolicy {
    /// Rendered content replaces the old one.
    Replace,
    /// Written only when absent: the running stack owns it afterwards (`ssl/acme.json`
    /// holds the issued certificates and must survive every re-render).
    CreateOnly,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub contents: Vec<u8>,
    pub mode: u32,
    pub policy: WritePolicy,
}

/// The files of a client folder, by path relative to it (`config/nginx/website.conf`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bundle {
    pub files: BTreeMap<String, BundleFile>,
}

impl Bundle {
    fn add(&mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) {
        self.files.insert(
            path.to_string(),
            BundleFile {
                contents: contents.into(),
                mode,
                policy: WritePolicy::Replace,
            },
        );
    }

    /// A file's contents as text (tests and the CLI's `--print`).
    pub fn text(&self, path: &str) -> Option<&str> {
        self.files
            .get(path)
            .and_then(|file| std::str::from_utf8(&file.contents).ok())
    }
}

/// The outcome of rendering one client.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub stack: Stack,
    pub bundle: Bundle,
    pub urls: Vec<ServiceUrl>,
}

/// The name of the stored client configuration inside a bundle.
pub const CLIENT_FILE: &str = "client.toml";

/// Renders every file of a client's bundle.
pub fn render(
    client: &ClientSpec,
    id: &ClientId,
    secrets: &Secrets,
    operator: &OperatorConfig,
) -> Result<Rendered, CoreError> {
    let stack = stack::build(client, id, operator);
    for key in SecretKey::needed_for(&client.apps())
        .into_iter()
        .chain(stack.secrets())
    {
        if secrets.get(key).is_none() {
            return Err(CoreError::MissingSecret {
                name: key.env_name(),
            });
        }
    }
    let apps = client.apps();
    let mut bundle = Bundle::default();
    bundle.add("docker-compose.yml", compose::render(&stack), MODE_PUBLIC);
    bundle.add(".env", env::render(client, id, secrets), MODE_SECRET);
    bundle.add(CLIENT_FILE, client.to_toml(id), MODE_PUBLIC);
    bundle.add(
        "config/traefik/traefik.yml",
        traefik::render(client, id, operator),
        MODE_PUBLIC,
    );
    bundle.add(
        "config/nginx/website.conf",
        nginx::render(client, id),
        MODE_PUBLIC,
    );
    bundle.add("website/index.html", html::render(client), MODE_PUBLIC);
    if stack.service(crate::plan::ServiceKind::Mysql).is_some() {
        bundle.add(
            "config/mysql/init.sql",
            sql::mysql_init(id, &apps, secrets),
            MODE_PUBLIC,
        );
    }
    if stack.service(crate::plan::ServiceKind::Postgres).is_some() {
        bundle.add(
            "config/postgres/init.sql",
            sql::postgres_init(id, &apps, secrets),
            MODE_PUBLIC,
        );
    }
    if stack.service(crate::plan::ServiceKind::Espocrm).is_some() {
        bundle.add(
            "config/espocrm/config.php",
            php::espocrm_config(client, id),
            MODE_PUBLIC,
        );
    }
    if stack
        .service(crate::plan::ServiceKind::PlausibleEventsDb)
        .is_some()
    {
        for (name, contents) in clickhouse::FILES {
            bundle.add(&format!("config/clickhouse/{name}"), contents, MODE_PUBLIC);
        }
    }
    bundle.files.insert(
        "ssl/acme.json".to_string(),
        BundleFile {
            contents: Vec::new(),
            mode: MODE_SECRET,
            policy: WritePolicy::CreateOnly,
        },
    );
    let urls = stack::service_urls(client);
    Ok(Rendered {
        stack,
        bundle,
        urls,
    })
}
