//! deploy, status, stop, start, cleanup and destroy: the bundle store, the core's plan and the
//! Docker engine put together.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use stackbox_bundle::{BundleStore, OsRandom, RenderOptions, RenderOutcome};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::deploy::{desired_state, OverallState};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::stack::{service_urls, ADMIN_USERNAME};
use stackbox_engine::lifecycle::{self, ClientStatus, DeployOptions, Deployment};
use stackbox_engine::{DockerRuntime, EngineError};

use crate::new_admin_password;
use crate::progress::Progress;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn parse_id(text: &str) -> Result<ClientId> {
    Ok(ClientId::parse(text)?)
}

/// Waits for Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub struct DeployArgs<'a> {
    pub root: &'a Path,
    pub json: bool,
    pub health_timeout: Option<u64>,
}

/// Renders (or reuses) the bundle and converges the engine to it.
pub fn deploy(operator: &OperatorConfig, spec: &ClientSpec, args: DeployArgs) -> Result<()> {
    // A client on AWS needs the cloud phase before its containers (its databases are on RDS,
    // its secrets in Secrets Manager): that is the control plane's pipeline, not this command.
    if stackbox_core::infra::effective_provider(spec, operator)
        == stackbox_core::infra::ProviderKind::Aws
    {
        anyhow::bail!(
            "infrastructure: this client is on the aws provider, whose databases and secrets \
             live on AWS; deploy it through `stackbox serve` (POST /v1/clients, or `stackbox \
             --server URL deploy`), or set infrastructure = \"local\" to run it all on this host"
        );
    }
    // The engine first: when none answers, nothing is written.
    let rt = runtime()?;
    let docker = rt.block_on(DockerRuntime::connect())?;
    let store = BundleStore::new(args.root);
    let outcome = store.render_client(spec, operator, RenderOptions::default(), &mut OsRandom)?;
    let lock = store.lock_client(&outcome.id)?;
    let result = converge(operator, &store, spec, &outcome, &args, &rt, &docker);
    drop(lock);
    result
}

/// The bundle root that holds a client: the given one when the client is there, else the one
/// its containers were deployed from (their working-directory label), so commands on an
/// existing client need no `--out`.
pub(crate) fn root_holding(
    root: &Path,
    id: &ClientId,
    rt: &tokio::runtime::Runtime,
    docker: &DockerRuntime,
) -> Result<PathBuf> {
    if BundleStore::new(root).load(id)?.is_some() {
        return Ok(root.to_path_buf());
    }
    let found = rt
        .block_on(docker.client_bundle_dir(id))?
        .map(PathBuf::from)
        .and_then(|dir| dir.parent().and_then(Path::parent).map(Path::to_path_buf))
        .filter(|found| matches!(BundleStore::new(found).load(id), Ok(Some(_))));
    found.with_context(|| {
        format!(
            "client {id} has no bundle under {} and no container on the engine that names its \
             bundle folder; pass --out with the bundle root it was deployed from",
            root.display()
        )
    })
}

/// The bundle root that holds an existing client (see `root_holding`), for commands that
/// take a root rather than resolving it themselves.
pub fn root_for(root: &Path, id: &str) -> Result<PathBuf> {
    let id = parse_id(id)?;
    let rt = runtime()?;
    let docker = rt.block_on(DockerRuntime::connect())?;
    root_holding(root, &id, &rt, &docker)
}

/// Replaces a running client's secrets: the chosen ones get new values in the bundle, the
/// deploy tells each database its new passwords (the converge step, with the previous
/// superuser password handed over once) and recreates, health-gated, every service that
/// uses them. If anything fails the deploy rolls the containers back, the databases get
/// their previous passwords again, and the bundle its previous secrets.
pub fn rotate_secrets(
    operator: &OperatorConfig,
    id: &str,
    only: &[String],
    args: DeployArgs,
) -> Result<()> {
    let id = parse_id(id)?;
    let rt = runtime()?;
    let docker = rt.block_on(DockerRuntime::connect())?;
    let root = root_holding(args.root, &id, &rt, &docker)?;
    let store = BundleStore::new(&root);
    let lock = store.lock_client(&id)?;
    let stored = store
        .load(&id)?
        .with_context(|| format!("client {id} has no bundle under {}", root.display()))?;
    let mut spec = stored.spec.clone();
    spec.client_id = Some(id.clone());
    if stackbox_core::infra::effective_provider(&spec, operator)
        == stackbox_core::infra::ProviderKind::Aws
    {
        bail!(
            "infrastructure: this client's secrets live in AWS Secrets Manager; rotate them \
             through `stackbox serve` (POST /v1/clients/{id}/rotate-secrets)"
        );
    }
    let needed = stackbox_core::secrets::SecretKey::needed_for(&spec.apps());
    let keys = stackbox_core::secrets::rotation_keys(&needed, only)?;
    if keys.is_empty() {
        bail!("client {id} has no secret that can be rotated while it runs");
    }
    let previous = stored.secrets.clone();
    let outcome = store.render_client(
        &spec,
        operator,
        RenderOptions {
            rotate_only: keys.clone(),
            ..RenderOptions::default()
        },
        &mut OsRandom,
    )?;
    let args = DeployArgs {
        root: &root,
        json: args.json,
        health_timeout: args.health_timeout,
    };
    let names: Vec<&str> = keys.iter().map(|k| k.env_name()).collect();
    if !args.json {
        println!(
            "Rotating {} secrets of {id}: {}",
            names.len(),
            names.join(", ")
        );
    }
    let result = converge(operator, &store, &spec, &outcome, &args, &rt, &docker);
    if let Err(error) = result {
        // The containers are back on the previous secrets; so must the bundle be.
        let restored = store.render_client(
            &spec,
            operator,
            RenderOptions {
                restore_secrets: Some(previous),
                ..RenderOptions::default()
            },
            &mut OsRandom,
        );
        drop(lock);
        return match restored {
            Ok(_) => Err(error.context(format!(
                "rotation of {id}'s secrets failed; the client and its bundle keep the previous secrets"
            ))),
            Err(write) => Err(error.context(format!(
                "rotation of {id}'s secrets failed, and its bundle could not be given the previous \
                 secrets back ({write}); the containers run on the previous ones"
            ))),
        };
    }
    drop(lock);
    if args.json {
        println!(
            "{}",
            json!({"event": "rotated", "client_id": id.as_str(), "secrets": names})
        );
    } else {
        println!(
            "Rotated: {} (new values only in {}, mode 0600)",
            names.join(", "),
            outcome.path.join(".env").display()
        );
    }
    Ok(())
}

pub(crate) fn converge(
    operator: &OperatorConfig,
    store: &BundleStore,
    spec: &ClientSpec,
    outcome: &RenderOutcome,
    args: &DeployArgs,
    rt: &tokio::runtime::Runtime,
    docker: &DockerRuntime,
) -> Result<()> {
    let bundle_dir = std::path::absolute(&outcome.path)
        .with_context(|| format!("cannot resolve {}", outcome.path.display()))?;
    let desired = desired_state(
        &outcome.rendered.stack,
        &outcome.secrets,
        &outcome.rendered.bundle,
        &bundle_dir.display().to_string(),
        &|name| std::env::var(name).ok(),
    )?;
    let edge = store.edge_router(operator)?;
    let progress = Progress::new(args.json);
    let events = |event| progress.event(event);
    let options = DeployOptions {
        health_timeout: args.health_timeout.map(Duration::from_secs),
    };
    let result = rt.block_on(async {
        let deployment = Deployment::prepare(docker, &desired, edge.as_ref(), options).await?;
        let run = tokio::select! {
            result = deployment.run(&events) => result,
            _ = interrupted() => Err(EngineError::Interrupted),
        };
        match run {
            Ok(done) => Ok(done),
            Err(error) if !deployment.changed_anything() => Err(anyhow::Error::new(error)
                .context(format!(
                    "deploy of {} stopped before changing anything",
                    desired.client_id
                ))),
            Err(error) => {
                // Put back what was there; the deploy's own error is the one to report.
                if let Err(rollback) = deployment.rollback(&events).await {
                    progress.finish();
                    return Err(anyhow::anyhow!(
                        "{error}\nrollback failed too ({rollback}); run `stackbox cleanup {}` or deploy again",
                        desired.client_id
                    ));
                }
                Err(anyhow::Error::new(error).context(format!(
                    "deploy of {} failed; rolled back to the previous state (data volumes kept)",
                    desired.client_id
                )))
            }
        }
    });
    progress.finish();
    let done = result?;
    let urls = &outcome.rendered.urls;
    // Shown once: when this run generated it, or when this deploy brought the stack up from
    // nothing (a first deploy that failed on a missing image has generated it unseen).
    let first_stack =
        !done.services.is_empty() && done.services.iter().all(|s| s.action == "created");
    let password = new_admin_password(outcome).or_else(|| {
        first_stack
            .then(|| {
                outcome
                    .secrets
                    .get(stackbox_core::secrets::SecretKey::AdminPassword)
            })
            .flatten()
    });
    if args.json {
        let services: serde_json::Map<String, serde_json::Value> = urls
            .iter()
            .map(|u| (u.name.to_string(), json!(u.url)))
            .collect();
        println!(
            "{}",
            json!({
                "event": "result",
                "success": true,
                "client_id": outcome.id.as_str(),
                "path": bundle_dir,
                "plan": spec.plan.key(),
                "unchanged": done.unchanged,
                "services": services,
                "containers": done.services,
                "removed": done.removed,
                "kept_volumes": done.kept_volumes,
                "credentials": {
                    "admin_username": ADMIN_USERNAME,
                    "admin_password": password,
                    "stored_in": bundle_dir.join(".env"),
                },
            })
        );
    } else {
        let verb = if done.unchanged {
            "is up to date"
        } else {
            "is deployed and healthy"
        };
        println!("Client {} {verb}.", outcome.id);
        for service in &done.services {
            println!(
                "  {:<20} {:<10} {:>6.1} s",
                service.service, service.action, service.seconds
            );
        }
        if !done.kept_volumes.is_empty() {
            println!();
            println!(
                "Kept the data of apps no longer in the plan (switching them on again finds it; \
                 `stackbox prune {}` lists it and removes it with --yes):",
                outcome.id
            );
            for volume in &done.kept_volumes {
                println!("  {volume}");
            }
        }
        println!();
        println!("Services:");
        for url in urls {
            println!("  {:<10} {}", url.name, url.url);
        }
        println!();
        println!("Login: {ADMIN_USERNAME}");
        match password {
            Some(p) => println!(
                "Password: {p}\n  (shown once; stored in {} with mode 0600)",
                bundle_dir.join(".env").display()
            ),
            None => println!(
                "Password: unchanged; stored in {}",
                bundle_dir.join(".env").display()
            ),
        }
    }
    Ok(())
}

/// Starts a stopped client: a deploy of its stored bundle (the same converge path).
pub fn start(operator: &OperatorConfig, id: &str, args: DeployArgs) -> Result<()> {
    let id = parse_id(id)?;
    let rt = runtime()?;
    let docker = rt.block_on(DockerRuntime::connect())?;
    let root = root_holding(args.root, &id, &rt, &docker)?;
    drop(docker);
    let stored = BundleStore::new(&root)
        .load(&id)?
        .with_context(|| format!("client {id} has no bundle under {}", root.display()))?;
    let mut spec = stored.spec;
    spec.client_id = Some(id);
    deploy(
        operator,
        &spec,
        DeployArgs {
            root: &root,
            json: args.json,
            health_timeout: args.health_timeout,
        },
    )
}

pub fn status(
    operator: &OperatorConfig,
    root: &Path,
    id: Option<&str>,
    all: bool,
    json: bool,
) -> Result<()> {
    let rt = runtime()?;
    match (id, all) {
        (Some(id), false) => {
            let id = parse_id(id)?;
            let docker = rt.block_on(DockerRuntime::connect())?;
            let root = root_holding(root, &id, &rt, &docker).unwrap_or_else(|_| root.to_path_buf());
            let store = BundleStore::new(&root);
            let stored = store.load(&id)?;
            let expected: Vec<String> = stored
                .as_ref()
                .map(|s| stackbox_core::infra::expected_service_names(&s.spec, operator))
                .unwrap_or_default();
            let status = rt.block_on(lifecycle::status(&docker, &id, &expected))?;
            let urls = stored
                .as_ref()
                .map(|s| service_urls(&s.spec))
                .unwrap_or_default();
            if json {
                let mut value = serde_json::to_value(&status)?;
                value["urls"] = urls
                    .iter()
                    .map(|u| (u.name.to_string(), json!(u.url)))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                for service in value["services"].as_array_mut().into_iter().flatten() {
                    let name = service["service"].as_str().unwrap_or_default().to_string();
                    let url = urls.iter().find(|u| u.name == name).map(|u| u.url.clone());
                    service["url"] = json!(url);
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_status(&status, &urls);
            }
            if status.state == OverallState::Absent {
                bail!("client {id} has no containers on the engine");
            }
            Ok(())
        }
        (None, true) => {
            let all = rt.block_on(async {
                let docker = DockerRuntime::connect().await?;
                lifecycle::status_all(&docker).await
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "clients": all }))?
                );
            } else {
                println!("{:<32} {:<10} {:>8}", "CLIENT", "STATE", "SERVICES");
                for client in &all {
                    let healthy = client
                        .services
                        .iter()
                        .filter(|s| s.health == Some(stackbox_core::deploy::Health::Healthy))
                        .count();
                    println!(
                        "{:<32} {:<10} {:>3}/{:<3} healthy",
                        client.client_id,
                        state_name(client.state),
                        healthy,
                        client.services.len()
                    );
                }
            }
            Ok(())
        }
        _ => bail!("status: give a CLIENT_ID, or --all for every client on the engine"),
    }
}

fn state_name(state: OverallState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn print_status(status: &ClientStatus, urls: &[stackbox_core::stack::ServiceUrl]) {
    println!("Client {}: {}", status.client_id, state_name(status.state));
    println!(
        "  {:<20} {:<10} {:<10} {:>8}  {:<28} IMAGE",
        "SERVICE", "STATE", "HEALTH", "RESTARTS", "STATUS"
    );
    for s in &status.services {
        let health = s
            .health
            .and_then(|h| serde_json::to_value(h).ok())
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| "-".into());
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "  {:<20} {:<10} {:<10} {:>8}  {:<28} {}",
            s.service,
            state,
            health,
            s.restart_count.map(|c| c.to_string()).unwrap_or("-".into()),
            s.status,
            s.image
        );
        if let Some(url) = urls.iter().find(|u| u.name == s.service) {
            println!("  {:<20} {}", "", url.url);
        }
    }
}

pub fn stop(root: &Path, id: &str, json: bool) -> Result<()> {
    let id = parse_id(id)?;
    let rt = runtime()?;
    let docker = rt.block_on(DockerRuntime::connect())?;
    // The lock lives beside the client's bundle, wherever it was deployed from.
    let root = root_holding(root, &id, &rt, &docker).unwrap_or_else(|_| root.to_path_buf());
    let store = BundleStore::new(&root);
    let _lock = store.lock_client(&id)?;
    let progress = Progress::new(json);
    let events = |event| progress.event(event);
    let stopped = rt.block_on(lifecycle::stop(&docker, &id, &events));
    progress.finish();
    let stopped = stopped?;
    if json {
        println!(
            "{}",
            json!({"event": "result", "success": true, "client_id": id.as_str(), "stopped": stopped})
        );
    } else {
        println!("Client {id} stopped ({stopped} containers); its data is kept. `stackbox start {id}` brings it back.");
    }
    Ok(())
}

pub fn cleanup(
    operator: &OperatorConfig,
    root: &Path,
    id: &str,
    delete_volumes: bool,
    json: bool,
) -> Result<()> {
    let id = parse_id(id)?;
    let store = BundleStore::new(root);
    let _lock = store.lock_client(&id)?;
    let removed = remove_from_engine(operator, &id, delete_volumes, json)?;
    if json {
        println!(
            "{}",
            json!({"event": "result", "success": true, "client_id": id.as_str(), "removed": removed})
        );
    } else {
        println!(
            "Client {id}: removed {} containers and {} networks{}.",
            removed.containers.len(),
            removed.networks.len(),
            if delete_volumes {
                format!(" and {} volumes", removed.volumes.len())
            } else {
                "; volumes kept (add --delete-volumes to remove them)".to_string()
            }
        );
    }
    Ok(())
}

fn remove_from_engine(
    operator: &OperatorConfig,
    id: &ClientId,
    delete_volumes: bool,
    json: bool,
) -> Result<lifecycle::Removed> {
    let progress = Progress::new(json);
    let events = |event| progress.event(event);
    let removed = runtime()?.block_on(async {
        let docker = DockerRuntime::connect().await?;
        lifecycle::cleanup(
            &docker,
            id,
            operator.ingress.edge_router_name(),
            delete_volumes,
            &events,
        )
        .await
    });
    progress.finish();
    Ok(removed?)
}

/// `stackbox prune ID`: the volumes of apps the client no longer runs (kept by every deploy),
/// listed; removed with `yes`.
pub fn prune(
    operator: &OperatorConfig,
    root: &Path,
    id: &str,
    yes: bool,
    json: bool,
) -> Result<()> {
    let id = parse_id(id)?;
    let rt = runtime()?;
    let docker = rt.block_on(DockerRuntime::connect())?;
    let root = root_holding(root, &id, &rt, &docker)?;
    let store = BundleStore::new(&root);
    let _lock = store.lock_client(&id)?;
    let stored = store
        .load(&id)?
        .with_context(|| format!("client {id} has no bundle under {}", root.display()))?;
    let stack = stackbox_core::stack::build(&stored.spec, &id, operator);
    let wanted: Vec<&str> = stack.volumes.iter().map(|v| v.name.as_str()).collect();
    let unused = rt.block_on(lifecycle::prune_volumes(&docker, &id, &wanted, !yes))?;
    if json {
        println!(
            "{}",
            json!({"event": "result", "success": yes || unused.is_empty(), "client_id": id.as_str(),
                   "volumes": unused, "removed": yes})
        );
    } else if unused.is_empty() {
        println!("Client {id} has no data of apps it no longer runs.");
    } else if yes {
        println!("Removed the data of apps client {id} no longer runs:");
        for volume in &unused {
            println!("  {volume}");
        }
    } else {
        println!("Data of apps client {id} no longer runs (kept by every deploy):");
        for volume in &unused {
            println!("  {volume}");
        }
    }
    if !yes && !unused.is_empty() {
        bail!(
            "prune deletes these volumes for good (take `stackbox backup create {id}` first to \
             keep a copy); confirm with --yes"
        );
    }
    Ok(())
}

pub fn destroy(
    operator: &OperatorConfig,
    root: &Path,
    data_dir: &Path,
    id: &str,
    yes: bool,
    delete_backups: bool,
    json: bool,
) -> Result<()> {
    let id = parse_id(id)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("destroy deletes client {id}'s data for good; confirm with --yes");
        }
        eprint!("This deletes every container, volume (all data) and secret of client {id}.\nType the client id to confirm: ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != id.as_str() {
            bail!("not confirmed; nothing was deleted");
        }
    }
    // Backups first: a last one while the stack still runs, kept for the retention period
    // (or deleted with --delete-backups).
    let backups = crate::backup::before_destroy(operator, root, data_dir, &id, delete_backups)?;
    let store = BundleStore::new(root);
    let lock = store.lock_client(&id)?;
    let removed = remove_from_engine(operator, &id, true, json)?;
    // With AWS configured, the client's AWS resources go too (found by its tag; none is
    // fine). Before the bundle, so that a failure here leaves something to retry with.
    let cloud_removed = crate::cloud::destroy_client(operator, &id, json)?;
    drop(lock);
    let bundle: PathBuf = store.client_dir(&id);
    let had_bundle = store.remove_client(&id)?;
    if json {
        println!(
            "{}",
            json!({"event": "result", "success": true, "client_id": id.as_str(), "removed": removed, "aws_removed": cloud_removed, "bundle_removed": had_bundle, "backups": backups})
        );
    } else {
        println!(
            "Client {id} destroyed: {} containers, {} networks, {} volumes{}{}.",
            removed.containers.len(),
            removed.networks.len(),
            removed.volumes.len(),
            match cloud_removed {
                Some(n) => format!(", {n} AWS resources"),
                None => String::new(),
            },
            if had_bundle {
                format!(" and the bundle {}", bundle.display())
            } else {
                String::new()
            }
        );
        if let Some(backups) = backups {
            println!("Its backups: {backups}.");
        }
    }
    Ok(())
}

/// `status ID --resources` without a server: two readings of the client's running containers
/// 2 s apart (rates need two), and its volumes measured once.
pub fn resources(id: &str, json: bool) -> Result<()> {
    const APART: std::time::Duration = std::time::Duration::from_secs(2);
    let id = parse_id(id)?;
    let rt = runtime()?;
    let usage = rt.block_on(async {
        let docker = DockerRuntime::connect().await?;
        let (memory, _) = docker.host_resources().await?;
        let mut ring = stackbox_core::usage::UsageRing::new(2);
        for round in 0..2 {
            if round > 0 {
                tokio::time::sleep(APART).await;
            }
            let mut readings =
                stackbox_engine::usage::read_all(&docker, Some(&id), memory, 4).await?;
            let samples = readings.remove(id.as_str()).unwrap_or_default();
            if samples.is_empty() {
                bail!("client {id} runs no container on the engine; `stackbox start {id}`");
            }
            // Unix seconds, as the collector's readings are timed (the points show them).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            ring.record(now, samples);
        }
        ring.record_volumes(stackbox_engine::usage::volume_sizes(&docker, &id).await?);
        anyhow::Ok(ring.window(i64::MIN))
    })?;
    let view = crate::monitoring::usage_view(
        stackbox_control::ClientUsage {
            client_id: id.to_string(),
            interval_seconds: APART.as_secs(),
            kept_seconds: APART.as_secs(),
            window: usage,
        },
        APART.as_secs(),
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!("Client {id}:");
        crate::monitoring::print_usage(&view);
    }
    Ok(())
}
