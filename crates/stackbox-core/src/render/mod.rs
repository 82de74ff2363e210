//! Rendering: the desired stack and the client's settings as the files of a bundle.
//!
//! [`render`] is a pure function: the same client, id, secrets and operator settings give
//! byte-identical files. Writing them is the bundle adapter's job.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::client::{ClientId, ClientSpec};
use crate::error::CoreError;
use crate::operator::OperatorConfig;
use crate::secrets::Secrets;
use crate::stack::{self, Placement, ServiceUrl, Stack};

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
/// Mode of other files, none of which holds a secret. Files read by a container's non-root
/// user (the database init scripts) must be world-readable inside the container.
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

/// Renders every file of a client's bundle with the default (local) placement.
pub fn render(
    client: &ClientSpec,
    id: &ClientId,
    secrets: &Secrets,
    operator: &OperatorConfig,
) -> Result<Rendered, CoreError> {
    render_placed(client, id, secrets, operator, &Placement::default())
}

/// Renders every file of a client's bundle with its databases and secrets placed as
/// `placement` says.
///
/// The secret values are in `.env` only when `placement.secrets_in_files`; no other file
/// ever holds one (the database init scripts read them from the database container's
/// environment). Every secret the stack needs must still be given: they are checked here and
/// the engine adapter resolves them into the containers' environment.
pub fn render_placed(
    client: &ClientSpec,
    id: &ClientId,
    secrets: &Secrets,
    operator: &OperatorConfig,
    placement: &Placement,
) -> Result<Rendered, CoreError> {
    operator.release_catalog(client.release.as_deref())?;
    let stack = stack::build_placed(client, id, operator, placement);
    let apps = client.apps();
    for key in placement
        .needed_secrets(&apps)
        .into_iter()
        .chain(stack.secrets())
    {
        if secrets.get(key).is_none() {
            return Err(CoreError::MissingSecret {
                name: key.env_name(),
            });
        }
    }
    let mut bundle = Bundle::default();
    let (compose_file, env_file) = if placement.secrets_in_files {
        (compose::render(&stack), env::render(client, id, secrets))
    } else {
        (
            compose::render_without_secret_files(&stack),
            env::render_without_secrets(client, id, &stack.secrets()),
        )
    };
    bundle.add("docker-compose.yml", compose_file, MODE_PUBLIC);
    bundle.add(".env", env_file, MODE_SECRET);
    bundle.add(CLIENT_FILE, client.to_toml(id), MODE_PUBLIC);
    bundle.add(
        "config/traefik/traefik.yml",
        traefik::render(client, id, operator),
        MODE_PUBLIC,
    );
    bundle.add(
        "config/traefik/dynamic.yml",
        traefik::render_dynamic(id),
        MODE_PUBLIC,
    );
    bundle.add(
        "config/nginx/website.conf",
        nginx::render(client, id),
        MODE_PUBLIC,
    );
    bundle.add("website/index.html", html::render(client), MODE_PUBLIC);
    // Mode 0644 and never executable: the images' entrypoints source a non-executable `.sh`,
    // which is what gives the script their docker_process_sql.
    if stack.service(crate::plan::ServiceKind::Mysql).is_some() {
        bundle.add(
            sql::MYSQL_INIT_FILE,
            sql::mysql_init(id, &apps),
            MODE_PUBLIC,
        );
    }
    if stack.service(crate::plan::ServiceKind::Postgres).is_some() {
        bundle.add(
            sql::POSTGRES_INIT_FILE,
            sql::postgres_init(id, &apps),
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
