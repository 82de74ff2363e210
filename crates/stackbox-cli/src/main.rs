//! `stackbox`: the operator's command line.
//!
//! The binary is the only place that knows about files, flags and the environment: it builds
//! the operator configuration, calls the core and the adapters, and prints results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

use stackbox_bundle::{BundleStore, OsRandom, RenderOptions, RenderOutcome};
use stackbox_core::client::ClientSpec;
use stackbox_core::operator::OperatorConfig;
use stackbox_core::plan::{App, Plan, ServiceKind};
use stackbox_core::secrets::SecretKey;
use stackbox_core::stack::ADMIN_USERNAME;

mod admin_password;
mod backup;
mod cloud;
mod doctor;
mod lifecycle;
mod logs;
mod monitoring;
mod progress;
mod remote;
mod serve;

#[derive(Parser)]
#[command(
    name = "stackbox",
    version,
    about = "Provision and run isolated business stacks for hosting clients"
)]
struct Cli {
    /// Operator settings (ACME, ingress, limits, images); built-in defaults when absent. Given
    /// before the command (`stackbox --operator FILE deploy …`): `token create --operator` is
    /// another flag.
    #[arg(long, env = "STACKBOX_OPERATOR_CONFIG", value_name = "FILE")]
    operator: Option<PathBuf>,
    /// An image catalog override (`key = "image:tag"` lines) for mirrors and air-gapped registries.
    #[arg(long, global = true, env = "STACKBOX_IMAGES", value_name = "CATALOG")]
    images: Option<PathBuf>,
    /// The control plane's data directory (store, master key, bundles); default
    /// `$XDG_DATA_HOME/stackbox` or `~/.local/share/stackbox`.
    #[arg(long, global = true, env = "STACKBOX_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Run deploy, status, stop, start and destroy through a `stackbox serve` at this URL
    /// (`http://HOST:PORT`) instead of on the local engine.
    #[arg(long, global = true, env = "STACKBOX_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The API token for --server.
    #[arg(
        long,
        global = true,
        env = "STACKBOX_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a client's deployment bundle into ROOT/clients/<client-id>/.
    Render {
        /// The client configuration (TOML).
        config: PathBuf,
        /// The bundle root; defaults to the operator's bundles_root.
        #[arg(long, value_name = "ROOT")]
        out: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Replace every secret with a new one (apps must be reconfigured by a redeploy).
        #[arg(long)]
        rotate_secrets: bool,
    },
    /// List plans, their services and resource limits.
    Plans {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Render (or reuse) a client's bundle and bring its stack up on the Docker engine
    /// (DOCKER_HOST, default the local socket), waiting until every service is healthy.
    Deploy {
        /// The client configuration (TOML).
        config: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Seconds each service may take to become healthy (default: from its health check).
        #[arg(long, value_name = "SECONDS")]
        health_timeout: Option<u64>,
    },
    /// Show a client's services (state, health, uptime, restarts, image, URL), or every
    /// client on the engine with --all.
    Status {
        client_id: Option<String>,
        /// Every client on the engine.
        #[arg(long, conflicts_with = "client_id")]
        all: bool,
        /// The client's resource use (CPU, memory working set, network, storage) per service:
        /// with --server, over the window `serve` keeps; locally, two readings 2 s apart.
        #[arg(long, requires = "client_id")]
        resources: bool,
        /// With --resources and --server: how far back (`30m`, `6h`, `1d`; 1h by default).
        #[arg(long, requires = "resources")]
        window: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Show a client's container logs (every service, or one), the app's lines as they are.
    Logs {
        client_id: String,
        /// Only this service (`website`, `nextcloud`, …).
        service: Option<String>,
        /// Only lines since then: `30s`, `10m`, `2h`, `1d`, or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// The last this many lines (1 to 5000; 200 by default).
        #[arg(long)]
        tail: Option<String>,
        /// Keep printing new lines until the containers stop (or Ctrl-C).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Stop a client's containers; its data is kept.
    Stop {
        client_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Start a stopped client again (a deploy of its stored bundle).
    Start {
        client_id: String,
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "SECONDS")]
        health_timeout: Option<u64>,
    },
    /// Give a running client new secrets: the databases are told the new passwords first,
    /// then every service that uses them is recreated, health-gated; on failure everything
    /// returns to the previous secrets. Secrets bound to the apps' data (the admin password,
    /// EspoCRM's and Nextcloud's database passwords, encryption keys) are left alone.
    RotateSecrets {
        client_id: String,
        /// Rotate only this secret (its `.env` name, e.g. MYSQL_ROOT_PASSWORD); repeatable.
        #[arg(long, value_name = "KEY")]
        only: Vec<String>,
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "SECONDS")]
        health_timeout: Option<u64>,
    },
    /// Give a running client a new admin password in every app that has an admin (Nextcloud
    /// and EspoCRM with their own commands, Mailtrain recreated with it; Cal.com and Plausible
    /// have none) and print it once. An app that refuses has the others put back to the
    /// previous password.
    AdminPassword {
        client_id: String,
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "SECONDS")]
        health_timeout: Option<u64>,
    },
    /// Move a client to another release of the images (see `stackbox releases`): the upgrade
    /// graph is checked, a backup is taken first, services are replaced health-gated, and a
    /// failure returns the client to its release (restoring the backup when data may have
    /// been migrated).
    ///
    /// With `--all` (through `--server`): a fleet rollout in waves, a canary first, then
    /// growing batches; it halts on the first client that fails, leaving the rest on their
    /// release, and reports per client.
    Upgrade {
        /// The client to upgrade; or `--all`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        client_id: Option<String>,
        /// Every client (a rollout through `--server`).
        #[arg(long)]
        all: bool,
        /// The release to move to (a `[[releases]]` name, or "base").
        #[arg(long, value_name = "RELEASE")]
        to: String,
        #[command(flatten)]
        rollout: RolloutArgs,
        #[command(flatten)]
        common: Common,
        #[arg(long, value_name = "SECONDS")]
        health_timeout: Option<u64>,
    },
    /// List the releases (the base catalog, then `[[releases]]`) and what each changes.
    Releases {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the containers and networks of a failed or partial deployment.
    Cleanup {
        client_id: String,
        /// Remove the client's volumes (its data) too.
        #[arg(long)]
        delete_volumes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List the data (volumes) of apps the client no longer runs, which every deploy keeps;
    /// `--yes` removes it for good.
    Prune {
        client_id: String,
        /// Remove the listed volumes.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run the control plane: the REST API, the durable store and the deployment pipeline.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: String,
        /// The key that encrypts client secrets in the store (else STACKBOX_MASTER_KEY, else
        /// DATA_DIR/master.key, created on first start).
        #[arg(long, value_name = "FILE")]
        master_key_file: Option<PathBuf>,
        /// Deployments of different clients that may run at once.
        #[arg(long, default_value_t = 4, value_name = "N")]
        max_parallel: usize,
    },
    /// The AWS infrastructure phase alone (certificate, database, secrets, load balancer, CDN,
    /// DNS) for the operator's [aws] settings; needs a build with `--features aws`.
    Infra {
        #[command(subcommand)]
        command: InfraCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Backups of a client: create (dumps + volumes, encrypted, checked), list, verify (a
    /// restore into a throwaway copy), restore (a safety backup first), forget.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// The alerts `serve` raised, through `--server`: open ones (pending, firing), or with
    /// --all the resolved history too.
    Alerts {
        /// Resolved alerts too, newest first.
        #[arg(long)]
        all: bool,
        /// Only this client's alerts.
        #[arg(long, value_name = "CLIENT_ID")]
        client: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The audit log through `--server`: every change asked of it, who asked, the result.
    Audit {
        /// Only this client's entries.
        #[arg(long, value_name = "CLIENT_ID")]
        client: Option<String>,
        /// At most this many, newest first (1 to 500).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fleet rollouts through `--server` (`upgrade --all` starts one): list, show, halt.
    Rollouts {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// A new client from a client's backup: its data, a new domain, new secrets where they are
    /// not tied to the data.
    Clone {
        client_id: String,
        /// The new client's domain.
        #[arg(long)]
        domain: String,
        /// The snapshot to clone; default the latest successful backup.
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Delete everything of a client: containers, networks, volumes and its bundle (secrets).
    /// Its backups are kept for `[backup] keep_after_destroy_days` (a last one taken first).
    Destroy {
        client_id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Delete the client's backups too, instead of keeping them for the retention period.
        #[arg(long)]
        delete_backups: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Check what a deploy needs (the engine and its address pools, the open-file limit, the
    /// ingress ports, every catalog image, free disk, the data directory and master key, the
    /// store, the Stripe, SMTP and AWS settings) and say what to do about each failure; exits
    /// 1 when something blocks a deploy.
    Doctor {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum InfraCommand {
    /// Print what `apply` would create or change, changing nothing.
    Plan {
        /// The client configuration (TOML) with its client_id.
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create what is missing and converge what drifted; a failure undoes this run.
    Apply {
        /// The client configuration (TOML) with its client_id.
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove every AWS resource of the client (found by its tags and names).
    Destroy {
        client_id: String,
        /// Confirms: the client's databases on RDS are dropped.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

/// How `upgrade --all` cuts the clients into waves (the server's defaults where left out).
#[derive(clap::Args)]
struct RolloutArgs {
    /// Clients upgraded alone first (default 1).
    #[arg(long, requires = "all", value_name = "N")]
    canary: Option<usize>,
    /// Each later wave is this many times the one before (default 2).
    #[arg(long, requires = "all", value_name = "N")]
    growth: Option<usize>,
    /// The largest wave (default 50).
    #[arg(long, requires = "all", value_name = "N")]
    max_wave: Option<usize>,
    /// Upgrades at once within a wave (default 4).
    #[arg(long, requires = "all", value_name = "N")]
    concurrency: Option<usize>,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// The newest rollouts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One rollout and every client's outcome.
    Show {
        rollout_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop starting upgrades; those running finish, the rest stay on their release.
    Halt {
        rollout_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Back up a client now: every database dumped beside its running service, every data
    /// volume, its sealed spec and secrets; recorded only once the repository check passes.
    Create {
        client_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// The client's backups, newest first, with their verification.
    List {
        client_id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Prove a backup: check every byte of the repository, restore the snapshot into a
    /// throwaway isolated copy, wait until healthy, compare with the manifest, remove the copy.
    Verify {
        client_id: String,
        /// Default: the latest successful backup.
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Replace the client's data with a snapshot's (a safety backup is taken first).
    Restore {
        client_id: String,
        /// Default: the latest successful backup.
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// Confirms: the client's current data is replaced.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Delete one snapshot from the repository.
    Forget {
        client_id: String,
        #[arg(long, value_name = "ID")]
        snapshot: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token and print it once (stored only as a hash).
    Create {
        /// A token with every right.
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        operator: bool,
        /// A read-only token that sees only this client.
        #[arg(long, value_name = "CLIENT_ID")]
        client: Option<String>,
    },
    /// List the tokens: id, role, client, created, last used (never a token itself).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (`tok_…`, from `token list`): refused from the next request
    /// on, also by a server that is running.
    Revoke {
        /// The token's id, not the token.
        token_id: String,
    },
}

/// Options every lifecycle command takes.
#[derive(clap::Args)]
struct Common {
    /// The bundle root; defaults to the operator's bundles_root.
    #[arg(long, visible_alias = "root", value_name = "ROOT")]
    out: Option<PathBuf>,
    /// Stream progress as JSON lines and end with one result object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    #[cfg(feature = "aws")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Render { json, .. } | Command::Plans { json } | Command::Releases { json } => {
            *json
        }
        Command::Deploy { common, .. }
        | Command::Status { common, .. }
        | Command::Logs { common, .. }
        | Command::Stop { common, .. }
        | Command::Start { common, .. }
        | Command::RotateSecrets { common, .. }
        | Command::AdminPassword { common, .. }
        | Command::Upgrade { common, .. }
        | Command::Cleanup { common, .. }
        | Command::Prune { common, .. }
        | Command::Destroy { common, .. }
        | Command::Clone { common, .. } => common.json,
        Command::Backup { command } => match command {
            BackupCommand::Create { common, .. }
            | BackupCommand::List { common, .. }
            | BackupCommand::Verify { common, .. }
            | BackupCommand::Restore { common, .. }
            | BackupCommand::Forget { common, .. } => common.json,
        },
        Command::Infra { command } => match command {
            InfraCommand::Plan { json, .. }
            | InfraCommand::Apply { json, .. }
            | InfraCommand::Destroy { json, .. } => *json,
        },
        Command::Token {
            command: TokenCommand::List { json },
        } => *json,
        Command::Doctor { json } | Command::Alerts { json, .. } | Command::Audit { json, .. } => {
            *json
        }
        Command::Rollouts { command } => match command {
            RolloutCommand::List { json }
            | RolloutCommand::Show { json, .. }
            | RolloutCommand::Halt { json, .. } => *json,
        },
        Command::Serve { .. } | Command::Token { .. } => false,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain of context messages, never a backtrace: errors are for operators.
            let message = format!("{error:#}");
            if json {
                println!("{}", json!({ "error": message }));
            }
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn operator_config(cli: &Cli) -> Result<OperatorConfig> {
    let env = |name: &str| std::env::var(name).ok();
    let mut operator = match &cli.operator {
        Some(path) => {
            let text = read(path, "operator configuration")?;
            OperatorConfig::from_toml_with_env(&text, &path.display().to_string(), &env)?
        }
        None => OperatorConfig::from_toml_with_env("", "the environment", &env)?,
    };
    if let Some(path) = &cli.images {
        let text = read(path, "image catalog")?;
        operator.images = operator
            .images
            .with_overrides_toml(&text, &path.display().to_string())?;
    }
    Ok(operator)
}

/// The commands that create containers on the local engine.
fn starts_containers(command: &Command) -> bool {
    match command {
        Command::Deploy { .. }
        | Command::Start { .. }
        | Command::RotateSecrets { .. }
        | Command::AdminPassword { .. }
        | Command::Upgrade { .. }
        | Command::Serve { .. }
        | Command::Clone { .. } => true,
        Command::Backup { command } => matches!(
            command,
            BackupCommand::Restore { .. } | BackupCommand::Verify { .. }
        ),
        Command::Render { .. }
        | Command::Plans { .. }
        | Command::Releases { .. }
        | Command::Status { .. }
        | Command::Logs { .. }
        | Command::Stop { .. }
        | Command::Cleanup { .. }
        | Command::Prune { .. }
        | Command::Infra { .. }
        | Command::Token { .. }
        | Command::Doctor { .. }
        | Command::Rollouts { .. }
        | Command::Alerts { .. }
        | Command::Audit { .. }
        | Command::Destroy { .. } => false,
    }
}

/// Without `[host] max_open_files`, caps the open files services ask for to what the local
/// dockerd may give (a container asking for more fails to start), saying so once.
fn fit_open_files_to_the_engine(operator: &mut OperatorConfig) {
    if operator.max_open_files.is_some() {
        return;
    }
    let Some(limit) = stackbox_engine::host::local_daemon_open_files() else {
        return;
    };
    let asking: Vec<String> = stackbox_core::stack::open_files_requests()
        .into_iter()
        .filter(|(_, asked)| *asked > limit)
        .map(|(service, asked)| format!("{} (asks {asked})", service.name()))
        .collect();
    if asking.is_empty() {
        return;
    }
    eprintln!(
        "warning: the local dockerd allows {limit} open files per container; {} get {limit} \
         (set [host] max_open_files to choose, or raise dockerd's LimitNOFILE)",
        asking.join(" and ")
    );
    operator.max_open_files = Some(limit);
}

/// `stackbox logs`'s options, checked as the API checks them.
fn log_query(
    service: Option<String>,
    since: Option<&str>,
    tail: Option<&str>,
    follow: bool,
) -> Result<stackbox_api::LogQuery> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let since = since
        .map(|text| stackbox_core::logs::parse_since(text, now))
        .transpose()?;
    Ok(stackbox_api::LogQuery {
        service,
        since,
        tail: stackbox_core::logs::parse_tail(tail)?,
        follow,
    })
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    if let Some(server) = cli.server.clone() {
        if let Some(result) = run_remote(&cli, &server) {
            return result;
        }
    }
    if let Command::Doctor { json } = &cli.command {
        // Before the configuration is loaded: doctor reports a broken one as a failed check.
        let data_dir = serve::data_dir(cli.data_dir.clone());
        return doctor::run(
            operator_config(&cli),
            cli.operator.as_deref(),
            &data_dir,
            *json,
        );
    }
    let mut operator = operator_config(&cli)?;
    if starts_containers(&cli.command) {
        fit_open_files_to_the_engine(&mut operator);
    }
    let data_dir = serve::data_dir(cli.data_dir.clone());
    match cli.command {
        Command::Doctor { .. } => unreachable!("doctor returns before the configuration loads"),
        Command::Audit { .. } => anyhow::bail!(
            "the audit log is kept by `stackbox serve` of the changes asked through its API: add \
             --server URL (and --token) to read it"
        ),
        Command::Alerts { .. } => anyhow::bail!(
            "alerts are raised and kept by `stackbox serve`: add --server URL (and --token) to \
             reach it"
        ),
        Command::Rollouts { .. } => anyhow::bail!(
            "rollouts live in the control plane's store: add --server URL (and --token) to \
             reach `stackbox serve`"
        ),
        Command::Serve {
            listen,
            master_key_file,
            max_parallel,
        } => serve::serve(
            operator,
            serve::ServeArgs {
                listen,
                data_dir,
                master_key_file,
                max_parallel,
                health_timeout: None,
            },
        ),
        Command::Token { command } => match command {
            TokenCommand::Create { client, .. } => {
                serve::create_token(&data_dir, client.as_deref())
            }
            TokenCommand::List { json } => serve::list_tokens(&data_dir, json),
            TokenCommand::Revoke { token_id } => serve::revoke_token(&data_dir, &token_id),
        },
        Command::Infra { command } => {
            let args = match command {
                InfraCommand::Plan { config, json } => cloud::InfraArgs::Plan { config, json },
                InfraCommand::Apply { config, json } => cloud::InfraArgs::Apply { config, json },
                InfraCommand::Destroy {
                    client_id,
                    yes,
                    json,
                } => {
                    if !yes {
                        anyhow::bail!(
                            "infra destroy removes {client_id}'s certificate, databases (with \
                             their data), secret, load-balancer rule, CDN and DNS records: \
                             repeat with --yes"
                        );
                    }
                    cloud::InfraArgs::Destroy {
                        client: client_id,
                        json,
                    }
                }
            };
            cloud::infra(&operator, &data_dir, args)
        }
        Command::Render {
            config,
            out,
            json,
            rotate_secrets,
        } => {
            let text = read(&config, "client configuration")?;
            let spec = ClientSpec::from_toml(&text).with_context(|| {
                format!("{} is not a valid client configuration", config.display())
            })?;
            let root = out.unwrap_or_else(|| PathBuf::from(&operator.bundles_root));
            let store = BundleStore::new(&root);
            let outcome = store.render_client(
                &spec,
                &operator,
                RenderOptions {
                    rotate_secrets,
                    ..RenderOptions::default()
                },
                &mut OsRandom,
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&render_json(&spec, &outcome))?
                );
            } else {
                print_render(&spec, &outcome);
            }
            Ok(())
        }
        Command::Plans { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&plans_json(&operator))?);
            } else {
                print_plans(&operator);
            }
            Ok(())
        }
        Command::Deploy {
            config,
            common,
            health_timeout,
        } => {
            let text = read(&config, "client configuration")?;
            let spec = ClientSpec::from_toml(&text).with_context(|| {
                format!("{} is not a valid client configuration", config.display())
            })?;
            let root = root_of(&common, &operator);
            lifecycle::deploy(
                &operator,
                &spec,
                lifecycle::DeployArgs {
                    root: &root,
                    json: common.json,
                    health_timeout,
                },
            )
        }
        Command::Start {
            client_id,
            common,
            health_timeout,
        } => {
            let root = root_of(&common, &operator);
            lifecycle::start(
                &operator,
                &client_id,
                lifecycle::DeployArgs {
                    root: &root,
                    json: common.json,
                    health_timeout,
                },
            )
        }
        Command::RotateSecrets {
            client_id,
            only,
            common,
            health_timeout,
        } => {
            let root = root_of(&common, &operator);
            lifecycle::rotate_secrets(
                &operator,
                &client_id,
                &only,
                lifecycle::DeployArgs {
                    root: &root,
                    json: common.json,
                    health_timeout,
                },
            )
        }
        Command::Upgrade {
            client_id,
            to,
            common,
            health_timeout,
            ..
        } => {
            let Some(client_id) = client_id else {
                anyhow::bail!(
                    "upgrade --all runs through the control plane, which journals the rollout so \
                     that it carries on after a restart: start `stackbox serve` and add \
                     --server URL"
                );
            };
            let root = lifecycle::root_for(&root_of(&common, &operator), &client_id)?;
            backup::upgrade(
                &operator,
                &client_id,
                &to,
                health_timeout.map(std::time::Duration::from_secs),
                backup::BackupArgs {
                    root: &root,
                    data_dir: &data_dir,
                    json: common.json,
                },
            )
        }
        Command::AdminPassword {
            client_id,
            common,
            health_timeout,
        } => {
            let root = root_of(&common, &operator);
            admin_password::admin_password(
                &operator,
                &client_id,
                lifecycle::DeployArgs {
                    root: &root,
                    json: common.json,
                    health_timeout,
                },
            )
        }
        Command::Releases { json } => {
            print_releases(&operator, json);
            Ok(())
        }
        Command::Status {
            client_id: Some(client_id),
            resources: true,
            window,
            common,
            ..
        } => {
            if window.is_some() {
                anyhow::bail!(
                    "--window needs --server: the readings over time are kept by `stackbox \
                     serve`; without it, --resources takes two readings 2 s apart"
                );
            }
            lifecycle::resources(&client_id, common.json)
        }
        Command::Status {
            client_id,
            all,
            common,
            ..
        } => lifecycle::status(
            &operator,
            &root_of(&common, &operator),
            client_id.as_deref(),
            all,
            common.json,
        ),
        Command::Stop { client_id, common } => {
            lifecycle::stop(&root_of(&common, &operator), &client_id, common.json)
        }
        Command::Logs {
            client_id,
            service,
            since,
            tail,
            follow,
            common,
        } => log_query(service, since.as_deref(), tail.as_deref(), follow)
            .and_then(|query| logs::run_local(&client_id, query, common.json)),
        Command::Cleanup {
            client_id,
            delete_volumes,
            common,
        } => lifecycle::cleanup(
            &operator,
            &root_of(&common, &operator),
            &client_id,
            delete_volumes,
            common.json,
        ),
        Command::Prune {
            client_id,
            yes,
            common,
        } => lifecycle::prune(
            &operator,
            &root_of(&common, &operator),
            &client_id,
            yes,
            common.json,
        ),
        Command::Backup { command } => {
            let common = match &command {
                BackupCommand::Create { common, .. }
                | BackupCommand::List { common, .. }
                | BackupCommand::Verify { common, .. }
                | BackupCommand::Restore { common, .. }
                | BackupCommand::Forget { common, .. } => common,
            };
            let root = root_of(common, &operator);
            let args = backup::BackupArgs {
                root: &root,
                data_dir: &data_dir,
                json: common.json,
            };
            match &command {
                BackupCommand::Create { client_id, .. } => {
                    backup::create(&operator, client_id, args)
                }
                BackupCommand::List { client_id, .. } => backup::list(client_id, args),
                BackupCommand::Verify {
                    client_id,
                    snapshot,
                    ..
                } => backup::verify(&operator, client_id, snapshot.as_deref(), args),
                BackupCommand::Restore {
                    client_id,
                    snapshot,
                    yes,
                    ..
                } => backup::restore(&operator, client_id, snapshot.as_deref(), *yes, args),
                BackupCommand::Forget {
                    client_id,
                    snapshot,
                    ..
                } => backup::forget(&operator, client_id, snapshot, args),
            }
        }
        Command::Clone {
            client_id,
            domain,
            snapshot,
            common,
        } => backup::clone(
            &operator,
            &client_id,
            &domain,
            snapshot.as_deref(),
            backup::BackupArgs {
                root: &root_of(&common, &operator),
                data_dir: &data_dir,
                json: common.json,
            },
        ),
        Command::Destroy {
            client_id,
            yes,
            delete_backups,
            common,
        } => lifecycle::destroy(
            &operator,
            &root_of(&common, &operator),
            &data_dir,
            &client_id,
            yes,
            delete_backups,
            common.json,
        ),
    }
}

/// The lifecycle commands through the server; `None` for commands that are always local.
fn run_remote(cli: &Cli, server: &str) -> Option<Result<()>> {
    let remote = || remote::Remote::new(server, cli.token.clone());
    Some(match &cli.command {
        Command::Deploy { config, common, .. } => (|| {
            let text = read(config, "client configuration")?;
            let spec = ClientSpec::from_toml(&text).with_context(|| {
                format!("{} is not a valid client configuration", config.display())
            })?;
            remote()?.deploy(&spec, common.json)
        })(),
        Command::Status {
            client_id: Some(client_id),
            resources: true,
            window,
            common,
            ..
        } => remote().and_then(|r| r.resources(client_id, window.as_deref(), common.json)),
        Command::Status {
            client_id, common, ..
        } => remote().and_then(|r| r.status(client_id.as_deref(), common.json)),
        Command::Stop { client_id, common } => {
            remote().and_then(|r| r.action(client_id, "stop", common.json))
        }
        Command::Logs {
            client_id,
            service,
            since,
            tail,
            follow,
            common,
        } => remote().and_then(|r| {
            r.logs(
                client_id,
                service.as_deref(),
                since.as_deref(),
                tail.as_deref(),
                *follow,
                common.json,
            )
        }),
        Command::Start {
            client_id, common, ..
        } => remote().and_then(|r| r.action(client_id, "start", common.json)),
        Command::Destroy {
            client_id,
            yes,
            delete_backups,
            common,
        } => (|| {

            if !*yes {
                anyhow::bail!(
                    "destroy deletes client {client_id}'s data for good; confirm with --yes"
                );
            }
            remote()?.destroy(client_id, *delete_backups, common.json)
        })(),
        Command::Prune { .. } => Err(anyhow::anyhow!(
            "prune runs on the engine's host only (without --server): it deletes volumes there"
        )),
        Command::Cleanup { .. } => Err(anyhow::anyhow!(
            "cleanup runs on the engine's host only; the server compensates a failed deployment itself"
        )),
        Command::Backup { command } => match command {
            BackupCommand::Create { client_id, common } => {
                remote().and_then(|r| r.backup(client_id, "create", None, common.json))
            }
            BackupCommand::List { client_id, common } => {
                remote().and_then(|r| r.backups(client_id, common.json))
            }
            BackupCommand::Verify {
                client_id,
                snapshot,
                common,
            } => remote().and_then(|r| r.backup(client_id, "verify", snapshot.as_deref(), common.json)),
            BackupCommand::Restore {
                client_id,
                snapshot,
                yes,
                common,
            } => (|| {
                if !*yes {
                    anyhow::bail!(
                        "restore replaces {client_id}'s databases and files with the snapshot's \
                         (a safety backup is taken first): confirm with --yes"
                    );
                }
                remote()?.backup(client_id, "restore", snapshot.as_deref(), common.json)
            })(),
            BackupCommand::Forget { .. } => Err(anyhow::anyhow!(
                "backup forget runs on the engine's host (without --server); the server forgets \
                 by its retention policy"
            )),
        },
        Command::Clone {
            client_id,
            domain,
            snapshot,
            common,
        } => remote().and_then(|r| r.clone(client_id, domain, snapshot.as_deref(), common.json)),
        Command::RotateSecrets {
            client_id,
            only,
            common,
            ..
        } => remote().and_then(|r| r.rotate_secrets(client_id, only, common.json)),
        Command::AdminPassword {
            client_id, common, ..
        } => remote().and_then(|r| r.admin_password(client_id, common.json)),
        Command::Upgrade {
            client_id: Some(client_id),
            to,
            common,
            ..
        } => remote().and_then(|r| r.upgrade(client_id, to, common.json)),
        Command::Upgrade {
            client_id: None,
            to,
            rollout,
            common,
            ..
        } => remote().and_then(|r| {
            r.rollout(
                to,
                &remote::RolloutSettings {
                    canary: rollout.canary,
                    growth: rollout.growth,
                    max_wave: rollout.max_wave,
                    concurrency: rollout.concurrency,
                },
                common.json,
            )
        }),
        Command::Audit {
            client,
            limit,
            json,
        } => remote().and_then(|r| r.audit(client.as_deref(), *limit, *json)),
        Command::Alerts { all, client, json } => {
            remote().and_then(|r| r.alerts(*all, client.as_deref(), *json))
        }
        Command::Rollouts { command } => remote().and_then(|r| match command {
            RolloutCommand::List { json } => r.rollouts(*json),
            RolloutCommand::Show { rollout_id, json } => r.show_rollout(rollout_id, *json),
            RolloutCommand::Halt { rollout_id, json } => r.halt_rollout(rollout_id, *json),
        }),
        Command::Render { .. }
        | Command::Plans { .. }
        | Command::Releases { .. }
        | Command::Serve { .. }
        | Command::Token { .. }
        | Command::Doctor { .. }
        | Command::Infra { .. } => {
            return None
        }
    })
}

fn root_of(common: &Common, operator: &OperatorConfig) -> PathBuf {
    common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(&operator.bundles_root))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The admin password, only when this run generated it: secrets are shown once.
fn print_releases(operator: &OperatorConfig, json: bool) {
    let all = stackbox_core::release::release_catalogs(&operator.images, &operator.releases);
    if json {
        let releases: Vec<serde_json::Value> = all
            .iter()
            .map(|(name, catalog)| {
                let images: serde_json::Map<String, serde_json::Value> = catalog
                    .iter()
                    .map(|(key, image)| (key.key().to_string(), serde_json::json!(image)))
                    .collect();
                serde_json::json!({"name": name, "images": images})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"releases": releases, "latest": operator.latest_release()})
        );
        return;
    }
    for (index, (name, catalog)) in all.iter().enumerate() {
        let latest = if name == operator.latest_release() {
            "  (newest: new clients get it)"
        } else {
            ""
        };
        println!("{name}{latest}");
        for (key, image) in catalog.iter() {
            let changed = index == 0 || all[index - 1].1.image(key) != image;
            if changed {
                println!("  {:<12} {image}", key.key());
            }
        }
    }
}

fn new_admin_password(outcome: &RenderOutcome) -> Option<&str> {
    outcome
        .generated
        .contains(&SecretKey::AdminPassword)
        .then(|| outcome.secrets.get(SecretKey::AdminPassword))
        .flatten()
}

fn notes(spec: &ClientSpec) -> Vec<String> {
    let mut notes = Vec::new();
    let apps = spec.apps();
    for app in [App::Calcom, App::Plausible] {
        if apps.contains(&app) {
            notes.push(format!(
                "{} has no preset admin: the first account registered at https://{} becomes its owner",
                app.title(),
                spec.domain.sub(app.subdomain())
            ));
        }
    }
    notes
}

fn render_json(spec: &ClientSpec, outcome: &RenderOutcome) -> serde_json::Value {
    let services: serde_json::Map<String, serde_json::Value> = outcome
        .rendered
        .urls
        .iter()
        .map(|url| (url.name.to_string(), json!(url.url)))
        .collect();
    let path = absolute(&outcome.path);
    json!({
        "success": true,
        "client_id": outcome.id.as_str(),
        "path": path,
        "plan": spec.plan.key(),
        "created": outcome.created,
        "services": services,
        "credentials": {
            "admin_username": ADMIN_USERNAME,
            "admin_password": new_admin_password(outcome),
            "stored_in": path.join(".env"),
        },
        "secrets_generated": outcome.generated.iter().map(|key| key.env_name()).collect::<Vec<_>>(),
        "containers": outcome.rendered.stack.services.iter().map(|s| s.kind.name()).collect::<Vec<_>>(),
        "files": outcome.rendered.bundle.files.keys().collect::<Vec<_>>(),
        "notes": notes(spec),
    })
}

fn print_render(spec: &ClientSpec, outcome: &RenderOutcome) {
    let path = absolute(&outcome.path);
    let verb = if outcome.created {
        "Created"
    } else {
        "Updated"
    };
    println!("{verb} client {} ({} plan)", outcome.id, spec.plan);
    println!("Bundle:  {}", path.display());
    println!();
    println!("Services:");
    for url in &outcome.rendered.urls {
        println!("  {:<10} {}", url.name, url.url);
    }
    println!();
    println!("Credentials:");
    println!("  admin username  {ADMIN_USERNAME}");
    match new_admin_password(outcome) {
        Some(password) => {
            println!("  admin password  {password}");
            println!(
                "  (shown once; also stored in {} with mode 0600)",
                path.join(".env").display()
            );
        }
        None => println!(
            "  admin password  unchanged; stored in {}",
            path.join(".env").display()
        ),
    }
    for note in notes(spec) {
        println!("  note: {note}");
    }
}

fn plans_json(operator: &OperatorConfig) -> serde_json::Value {
    let plans: Vec<_> = Plan::ALL
        .into_iter()
        .map(|plan| {
            let apps = plan.apps();
            let services: Vec<_> = ServiceKind::for_apps(&apps)
                .into_iter()
                .map(|kind| {
                    let limits = operator.limits(plan, kind);
                    json!({
                        "name": kind.name(),
                        "image": operator.images.image(kind.image_key()),
                        "cpus": limits.cpus(),
                        "memory_mib": limits.memory_mib,
                    })
                })
                .collect();
            let (cpus, memory): (u32, u32) = ServiceKind::for_apps(&apps)
                .into_iter()
                .map(|kind| operator.limits(plan, kind))
                .fold((0, 0), |(c, m), l| (c + l.millicpus, m + l.memory_mib));
            json!({
                "plan": plan.key(),
                "apps": apps.iter().map(|app| json!({"name": app.key(), "title": app.title(), "subdomain": app.subdomain()})).collect::<Vec<_>>(),
                "services": services,
                "total": { "cpus": f64::from(cpus) / 1000.0, "memory_mib": memory },
            })
        })
        .collect();
    json!({ "plans": plans })
}

fn print_plans(operator: &OperatorConfig) {
    for plan in Plan::ALL {
        let apps = plan.apps();
        let titles: Vec<_> = apps
            .iter()
            .map(|app| format!("{} ({}.)", app.title(), app.subdomain()))
            .collect();
        println!("{} — website + {}", plan.key(), titles.join(", "));
        let mut totals: BTreeMap<&str, u32> = BTreeMap::new();
        for kind in ServiceKind::for_apps(&apps) {
            let limits = operator.limits(plan, kind);
            *totals.entry("cpu").or_default() += limits.millicpus;
            *totals.entry("mem").or_default() += limits.memory_mib;
            println!(
                "  {:<20} {:>5} CPU {:>6} MiB  {}",
                kind.name(),
                limits.cpus(),
                limits.memory_mib,
                operator.images.image(kind.image_key())
            );
        }
        println!(
            "  {:<20} {:>5} CPU {:>6} MiB  (limits; containers use less at rest)",
            "total",
            f64::from(totals["cpu"]) / 1000.0,
            totals["mem"]
        );
        println!();
    }
}
