//! `stackbox doctor`: what a deploy needs, probed. The engine (version, address pools, the
//! ingress ports, every catalog image, free disk), the local dockerd's open-file limit, the data
//! directory, the master key, the store, and the payment, mail and AWS settings. The
//! decisions are the core's ([`stackbox_core::doctor`]); this module only finds the facts.
//! `stackbox serve` runs the same checks at start and logs them.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use stackbox_core::doctor::{self, Check, IngressPort, PortProbe, Report, Status};
use stackbox_core::operator::{Ingress, OperatorConfig};
use stackbox_engine::{ContainerRuntime, DockerRuntime, EngineError};
use stackbox_store::{MasterKey, Store, MASTER_KEY_ENV, SQLITE_FILE_NAME};

/// What the checks look at besides the host itself.
pub struct Inputs<'a> {
    /// The operator configuration, or why it did not load.
    pub operator: std::result::Result<&'a OperatorConfig, String>,
    /// Where it came from: the file, or the built-in defaults.
    pub operator_origin: String,
    pub data_dir: &'a Path,
    /// `serve --master-key-file`.
    pub master_key_file: Option<&'a Path>,
}

/// How long the store may take to answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a TCP connection to the database server may take before the store is opened.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `stackbox doctor [--json]`: prints every check and exits 1 when one failed.
pub fn run(
    operator: Result<OperatorConfig>,
    operator_file: Option<&Path>,
    data_dir: &Path,
    json: bool,
) -> Result<()> {
    let origin = match operator_file {
        Some(path) => path.display().to_string(),
        None => {
            "no --operator file; the built-in defaults with the environment's settings".to_string()
        }
    };
    let operator = operator.map_err(|error| format!("{error:#}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(checks(&Inputs {
        operator: operator.as_ref().map_err(Clone::clone),
        operator_origin: origin,
        data_dir,
        master_key_file: None,
    }));
    drop(runtime);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if !report.ok {
        // A failed check is the command's answer, not an error of the command (exit 2).
        std::io::stdout().flush()?;
        std::process::exit(i32::from(report.exit_code()));
    }
    Ok(())
}

/// `stackbox serve`'s start: every check on one log line each. A failure is logged, not
/// refused: serve refuses what it refused before on its own.
pub async fn log_at_start(
    operator: &OperatorConfig,
    data_dir: &Path,
    master_key_file: Option<&Path>,
) {
    let report = checks(&Inputs {
        operator: Ok(operator),
        operator_origin: "the operator configuration serve loaded".to_string(),
        data_dir,
        master_key_file,
    })
    .await;
    for check in &report.checks {
        match check.status {
            Status::Ok => tracing::info!("doctor {}", check.line()),
            Status::Warn => tracing::warn!("doctor {}", check.line()),
            Status::Fail => tracing::error!("doctor {}", check.line()),
        }
    }
}

/// Every check, in order.
pub async fn checks(inputs: &Inputs<'_>) -> Report {
    let mut checks = Vec::new();
    let defaults = OperatorConfig::default();
    let operator = match &inputs.operator {
        Ok(operator) => {
            checks.push(Check::ok(
                "operator-config",
                format!("valid: {}", inputs.operator_origin),
            ));
            *operator
        }
        Err(problem) => {
            checks.push(Check::fail(
                "operator-config",
                format!("{}: {problem}", inputs.operator_origin),
                "correct the setting named above (in the operator file or the environment); \
                 the images, the ingress ports and the Stripe, SMTP and AWS settings are \
                 checked once it loads",
            ));
            &defaults
        }
    };
    let loaded = inputs.operator.is_ok();
    let local = engine_is_local();

    match DockerRuntime::connect().await {
        Err(error) => {
            let (endpoint, problem) = match error {
                EngineError::Unreachable { endpoint, problem } => (endpoint, problem),
                other => (docker_host(), other.to_string()),
            };
            checks.push(doctor::engine_check(&endpoint, Err(&problem)));
        }
        Ok(docker) => match docker.engine_facts().await {
            Err(error) => {
                checks.push(doctor::engine_check(
                    docker.endpoint(),
                    Err(&error.to_string()),
                ));
            }
            Ok(facts) => {
                checks.push(doctor::engine_check(docker.endpoint(), Ok(&facts)));
                checks.push(address_pools(&docker, &facts, operator).await);
                if loaded {
                    checks.extend(ingress_ports(&docker, &operator.ingress, local).await);
                    for (key, release, reference) in doctor::catalog_images(operator) {
                        let present = docker
                            .has_image(&reference)
                            .await
                            .map_err(|e| e.to_string());
                        checks.push(doctor::image_check(
                            key,
                            release.as_deref(),
                            &reference,
                            present,
                        ));
                    }
                }
                checks.push(disk(&facts, local));
            }
        },
    }
    checks.push(doctor::open_files_check(
        stackbox_engine::host::local_daemon_open_files(),
        local,
        operator.max_open_files,
        &stackbox_core::stack::open_files_requests(),
    ));
    checks.push(data_dir_check(inputs.data_dir));
    checks.push(master_key_check(inputs.data_dir, inputs.master_key_file));
    checks.push(store_check(inputs.data_dir).await);
    if loaded {
        checks.push(doctor::stripe_check(&operator.onboarding));
        checks.push(doctor::smtp_check(&operator.onboarding));
        checks.push(doctor::aws_check(
            operator.infrastructure,
            &operator.aws,
            cfg!(feature = "aws"),
        ));
    }
    Report::new(checks)
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// Whether the engine runs on this host (a unix socket), so that its ports, its data root and
/// its process can be looked at from here.
fn engine_is_local() -> bool {
    docker_host().starts_with("unix://")
}

async fn address_pools(
    docker: &DockerRuntime,
    facts: &doctor::EngineFacts,
    operator: &OperatorConfig,
) -> Check {
    let router = operator.ingress.edge_router_name();
    match docker.network_subnets(router.unwrap_or_default()).await {
        Ok((subnets, router_network_exists)) => {
            // The edge router's own network is made once, with the first client.
            let reserved = u64::from(router.is_some() && !router_network_exists);
            doctor::address_pool_check(
                &facts.address_pools,
                &subnets,
                doctor::networks_per_client(operator),
                reserved,
            )
        }
        Err(error) => Check::fail(
            "address-pools",
            format!("could not list the engine's networks: {error}"),
            "check that the engine answers (see the engine check)",
        ),
    }
}

async fn ingress_ports(docker: &DockerRuntime, ingress: &Ingress, local: bool) -> Vec<Check> {
    let holders = docker.published_ports().await;
    let mut checks = Vec::new();
    for which in [IngressPort::Http, IngressPort::Https] {
        let port = which.port(ingress);
        let check = match &holders {
            Ok(holders) => {
                // A port a container publishes is the container's: binding it is not tried
                // (nor raced with the engine's own bind).
                let probe = if holders.iter().any(|h| h.host_port == port) {
                    PortProbe::InUse
                } else if local {
                    probe_port(port)
                } else {
                    PortProbe::Untested(
                        "the engine is on another host; its other processes were not checked"
                            .to_string(),
                    )
                };
                doctor::ingress_port_check(ingress, which, holders, &probe)
            }
            Err(error) => Check::fail(
                match which {
                    IngressPort::Http => "ingress-http",
                    IngressPort::Https => "ingress-https",
                },
                format!("could not list the engine's containers for port {port}: {error}"),
                "check that the engine answers (see the engine check)",
            ),
        };
        checks.push(check);
    }
    checks
}

/// Binds the port on every IPv4 address for a moment, as the engine would.
fn probe_port(port: u16) -> PortProbe {
    match std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)) {
        Ok(_) => PortProbe::Free,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => PortProbe::InUse,
        Err(error) => PortProbe::Untested(format!("binding it here failed: {error}")),
    }
}

fn disk(facts: &doctor::EngineFacts, local: bool) -> Check {
    let Some(root) = &facts.data_root else {
        return doctor::disk_check(
            "(not reported)",
            Err("the engine did not say where it keeps images and volumes".to_string()),
        );
    };
    let free = if local {
        rustix::fs::statvfs(root.as_str())
            .map(|stat| stat.f_bavail.saturating_mul(stat.f_frsize))
            .map_err(|error| format!("{root} cannot be read here ({error})"))
    } else {
        Err("the engine is on another host".to_string())
    };
    doctor::disk_check(root, free)
}

fn data_dir_check(dir: &Path) -> Check {
    const NAME: &str = "data-dir";
    let choose = "or choose another with --data-dir (STACKBOX_DATA_DIR)";
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Check::fail(
            NAME,
            format!("{} is not a directory", dir.display()),
            format!("remove or rename it, {choose}"),
        ),
        Ok(_) => match rustix::fs::access(
            dir,
            rustix::fs::Access::READ_OK
                | rustix::fs::Access::WRITE_OK
                | rustix::fs::Access::EXEC_OK,
        ) {
            Ok(()) => Check::ok(
                NAME,
                format!(
                    "{} is readable and writable{}",
                    dir.display(),
                    if dir.join(SQLITE_FILE_NAME).exists() {
                        ""
                    } else {
                        " (empty so far)"
                    }
                ),
            ),
            Err(error) => Check::fail(
                NAME,
                format!(
                    "{} is not readable and writable by this user: {error}",
                    dir.display()
                ),
                format!(
                    "give it to the user that runs stackbox (`chown -R USER {}`), {choose}",
                    dir.display()
                ),
            ),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let ancestor = dir
                .ancestors()
                .skip(1)
                .find(|a| a.as_os_str().is_empty() || a.exists())
                .map(|a| {
                    if a.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        a
                    }
                })
                .unwrap_or(Path::new("/"));
            match rustix::fs::access(
                ancestor,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            ) {
                Ok(()) => Check::ok(
                    NAME,
                    format!(
                        "{} does not exist yet; serve creates it on first start",
                        dir.display()
                    ),
                ),
                Err(error) => Check::fail(
                    NAME,
                    format!(
                        "{} does not exist and cannot be created: {} is not writable ({error})",
                        dir.display(),
                        ancestor.display()
                    ),
                    format!("create it for the user that runs stackbox, {choose}"),
                ),
            }
        }
        Err(error) => Check::fail(
            NAME,
            format!("{} cannot be read: {error}", dir.display()),
            format!("fix its permissions, {choose}"),
        ),
    }
}

fn master_key_check(data_dir: &Path, file: Option<&Path>) -> Check {
    const NAME: &str = "master-key";
    let restore = "restore the key from your backup (64 hexadecimal digits or Base64 on one \
                   line), or point STACKBOX_MASTER_KEY or serve's --master-key-file at it";
    let key_file = |path: &Path| -> Check {
        match MasterKey::load(path) {
            Ok(_) => {
                let mode = std::fs::metadata(path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0o600);
                if mode & 0o077 != 0 {
                    Check::warn(
                        NAME,
                        format!(
                            "{} holds a valid key but other users may read it (mode {mode:03o})",
                            path.display()
                        ),
                        format!("`chmod 600 {}`", path.display()),
                    )
                } else {
                    Check::ok(
                        NAME,
                        format!("{} holds a valid key (mode {mode:03o})", path.display()),
                    )
                }
            }
            Err(error) => Check::fail(NAME, error.to_string(), restore),
        }
    };
    if let Some(path) = file {
        return key_file(path);
    }
    if let Some(key) = MasterKey::from_env() {
        return match key {
            Ok(_) => Check::ok(NAME, format!("a valid key is in {MASTER_KEY_ENV}")),
            Err(error) => Check::fail(NAME, error.to_string(), restore),
        };
    }
    let path = data_dir.join("master.key");
    if path.exists() {
        return key_file(&path);
    }
    // (Whether a PostgreSQL store recorded a key cannot be read without recording one.)
    if database_url().is_none() && data_dir.join(SQLITE_FILE_NAME).exists() {
        return Check::warn(
            NAME,
            format!(
                "no key ({MASTER_KEY_ENV} unset, no {}) while the store {} exists: serve would \
                 make a new key, and a store that sealed secrets with another refuses it",
                path.display(),
                data_dir.join(SQLITE_FILE_NAME).display()
            ),
            restore,
        );
    }
    Check::ok(
        NAME,
        format!(
            "none yet: serve creates {} (mode 0600) on first start; back it up then",
            path.display()
        ),
    )
}

fn database_url() -> Option<String> {
    std::env::var("STACKBOX_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// The password and `password=` query values of a URL, to scrub them from messages.
fn secrets_of_url(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((user_info, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = user_info.split_once(':') {
                secrets.push(password.to_string());
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some(("password", value)) = pair.split_once('=') {
                secrets.push(value.to_string());
            }
        }
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// The host and port of a `postgres://` URL with a network host (not a unix socket).
fn postgres_address(url: &str) -> Option<(String, u16)> {
    let rest = url
        .trim()
        .strip_prefix("postgres://")
        .or_else(|| url.trim().strip_prefix("postgresql://"))?;
    if rest.contains("host=") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() || host_port.contains(',') {
        return None;
    }
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 5432,
    };
    Some((host.to_string(), port))
}

async fn store_check(data_dir: &Path) -> Check {
    const NAME: &str = "store";
    let Some(url) = database_url() else {
        let path: PathBuf = data_dir.join(SQLITE_FILE_NAME);
        return Check::ok(
            NAME,
            if path.exists() {
                format!("SQLite in {}", path.display())
            } else {
                format!(
                    "SQLite in {} (created on first start; set STACKBOX_DATABASE_URL for \
                     PostgreSQL)",
                    path.display()
                )
            },
        );
    };
    let shown = doctor::url_without_secrets(&url);
    let fix = "start the database server or correct STACKBOX_DATABASE_URL \
               (postgres://USER:PASSWORD@HOST:5432/DATABASE); unset it to use SQLite in the \
               data directory";
    let scrub = |message: String| {
        secrets_of_url(&url)
            .iter()
            .fold(message, |message, secret| {
                message.replace(secret.as_str(), "***")
            })
    };
    // A server that is down refuses at once, while the pool retries for half a minute.
    if let Some((host, port)) = postgres_address(&url) {
        let reached = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await;
        let problem = match reached {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(format!("{error}")),
            Err(_) => Some(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        };
        if let Some(problem) = problem {
            return Check::fail(
                NAME,
                format!("the database server of {shown} cannot be reached: {problem}"),
                fix,
            );
        }
    }
    match tokio::time::timeout(STORE_TIMEOUT, Store::open(&url)).await {
        Ok(Ok(store)) => {
            let versions = store.schema_versions().await;
            store.close().await;
            match versions {
                Ok(versions) => Check::ok(
                    NAME,
                    format!(
                        "{shown} answers (schema version {})",
                        versions
                            .last()
                            .map_or("none".to_string(), |v| v.to_string())
                    ),
                ),
                Err(error) => Check::fail(NAME, scrub(error.to_string()), fix),
            }
        }
        Ok(Err(error)) => Check::fail(NAME, scrub(error.to_string()), fix),
        Err(_) => Check::fail(
            NAME,
            format!(
                "{shown} did not answer within {} s",
                STORE_TIMEOUT.as_secs()
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_of_a_postgres_url_is_its_host_and_port_and_none_for_sockets() {
        assert_eq!(
            postgres_address("postgres://sb:pw@db.internal:6543/stackbox"),
            Some(("db.internal".to_string(), 6543))
        );
        assert_eq!(
            postgres_address("postgresql://db/stackbox"),
            Some(("db".to_string(), 5432))
        );
        assert_eq!(
            postgres_address("postgres://[::1]:5433/x"),
            Some(("::1".to_string(), 5433))
        );
        assert_eq!(
            postgres_address("postgres:///stackbox?host=/run/postgresql"),
            None
        );
        assert_eq!(postgres_address("sqlite:///srv/stackbox.db"), None);
    }

    #[test]
    fn the_passwords_of_a_database_url_are_found_for_scrubbing() {
        assert_eq!(
            secrets_of_url("postgres://sb:s3cret@db:5432/stackbox?sslmode=require&password=other"),
            vec!["s3cret".to_string(), "other".to_string()]
        );
        assert!(secrets_of_url("postgres://db/stackbox").is_empty());
    }

    #[test]
    fn a_data_dir_that_is_a_file_fails_and_a_missing_one_under_a_writable_parent_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(data_dir_check(&file).status, Status::Fail);
        let missing = data_dir_check(&dir.path().join("a/b"));
        assert_eq!(missing.status, Status::Ok, "{missing:?}");
        assert!(missing.detail.contains("does not exist yet"));
        assert_eq!(data_dir_check(dir.path()).status, Status::Ok);
    }

    #[test]
    fn a_master_key_file_readable_by_others_warns_and_a_broken_one_fails_without_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "not-a-key-SECRETISH\n").unwrap();
        let broken = master_key_check(dir.path(), Some(&path));
        assert_eq!(broken.status, Status::Fail);
        assert!(!broken.line().contains("SECRETISH"), "{}", broken.line());
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loose = master_key_check(dir.path(), Some(&path));
        assert_eq!(loose.status, Status::Warn, "{loose:?}");
        assert!(loose.fix.unwrap().contains("chmod 600"));
        assert!(!loose.detail.contains(&"ab".repeat(32)));
    }
}
