//! `stackbox backup create|list|verify|restore|forget` and `stackbox clone` on this host: the
//! client's bundle (spec and secrets), the local engine, the restic repository of the
//! operator's `[backup]` destination, and the store in the data directory for the sealed
//! repository key and the record of every backup.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use stackbox_backup::{self as backup, BackupEvent};
use stackbox_bundle::{BundleStore, OsRandom};
use stackbox_core::backup::backup_plan;
use stackbox_core::client::{ClientId, ClientSpec, Domain};
use stackbox_core::deploy::desired_state;
use stackbox_core::operator::OperatorConfig;
use stackbox_core::secrets::{SecretKey, Secrets};
use stackbox_core::stack::Stack;
use stackbox_engine::lifecycle::{self, DeployOptions};
use stackbox_engine::DockerRuntime;
use stackbox_restic::Repository;
use stackbox_store::{BackupReason, MasterKey, Store};

/// Where the CLI finds everything.
pub struct BackupArgs<'a> {
    pub root: &'a Path,
    pub data_dir: &'a Path,
    pub json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn host_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn repository(
    operator: &OperatorConfig,
    data_dir: &Path,
    client: &ClientId,
    password: String,
) -> Result<Repository> {
    Ok(backup::repository(
        operator, data_dir, client, password, &host_env,
    )?)
}

async fn repository_key(store: &Store, key: &MasterKey, client: &ClientId) -> Result<String> {
    Ok(backup::repository_key(store, key, client).await?)
}

/// Progress on a terminal (one line that updates), JSON lines with `--json`, plain lines else.
struct Display {
    json: bool,
    terminal: Option<indicatif::ProgressBar>,
}

impl Display {
    fn new(json: bool) -> Display {
        let terminal = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Display { json, terminal }
    }

    fn event(&self, event: BackupEvent) {
        if self.json {
            if let Ok(line) = serde_json::to_string(&event) {
                println!("{line}");
            }
            return;
        }
        match (&self.terminal, &event) {
            (
                Some(bar),
                BackupEvent::Upload {
                    bytes_done,
                    total_bytes,
                    files_done,
                    total_files,
                    ..
                },
            ) => {
                bar.set_length(*total_bytes);
                bar.set_position(*bytes_done);
                bar.set_message(format!("upload {files_done}/{total_files} files"));
            }
            (Some(bar), other) => bar.set_message(describe(other)),
            (None, BackupEvent::Upload { .. }) => {}
            (None, other) => eprintln!("{}", describe(other)),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.terminal {
            bar.finish_and_clear();
        }
    }
}

fn describe(event: &BackupEvent) -> String {
    match event {
        BackupEvent::Phase { phase } => format!("{phase}…"),
        BackupEvent::Dumped {
            service,
            database,
            bytes,
            tables,
            reused,
        } => format!(
            "{} {service}/{database}: {tables} tables, {bytes} bytes",
            if *reused { "unchanged" } else { "dumped" }
        ),
        BackupEvent::Upload { percent, .. } => format!("upload {:.0} %", percent * 100.0),
        BackupEvent::VolumeRestored {
            volume,
            files,
            bytes,
        } => format!("restored volume {volume}: {files} files, {bytes} bytes"),
        BackupEvent::Loaded { service, database } => format!("loaded {service}/{database}"),
    }
}

/// Everything a command on one client needs.
struct Client {
    id: ClientId,
    spec: ClientSpec,
    secrets: Secrets,
    stack: Stack,
    bundle: stackbox_core::render::Bundle,
    bundle_dir: PathBuf,
}

fn load_client(operator: &OperatorConfig, bundles: &BundleStore, id: &ClientId) -> Result<Client> {
    let stored = bundles.load(id)?.with_context(|| {
        format!(
            "client {id} has no bundle under {}; pass --out with the bundle root it was deployed from",
            bundles.clients_dir().display()
        )
    })?;
    if stackbox_core::infra::effective_provider(&stored.spec, operator)
        == stackbox_core::infra::ProviderKind::Aws
    {
        bail!(
            "client {id} is on the aws provider: its MySQL databases are on RDS (automated \
             backups and snapshots there); `stackbox backup` covers clients on this host"
        );
    }
    let mut spec = stored.spec;
    spec.client_id = Some(id.clone());
    let rendered = stackbox_core::render::render(&spec, id, &stored.secrets, operator)?;
    let bundle_dir = std::path::absolute(bundles.client_dir(id))?;
    Ok(Client {
        id: id.clone(),
        spec,
        secrets: stored.secrets,
        stack: rendered.stack,
        bundle: rendered.bundle,
        bundle_dir,
    })
}

fn rfc3339(t: stackbox_store::Timestamp) -> String {
    stackbox_api::Timestamp::from_unix_millis(t.unix_millis()).to_string()
}

fn now_rfc3339() -> String {
    rfc3339(stackbox_store::Timestamp::now())
}

struct Env {
    store: Store,
    key: MasterKey,
    docker: DockerRuntime,
}

async fn env(data_dir: &Path) -> Result<Env> {
    let docker = DockerRuntime::connect().await?;
    let store = crate::serve::open_store(data_dir).await?;
    let key = crate::serve::master_key(data_dir, None)?;
    // Refuses a key other than the one the store's secrets were sealed with.
    store.check_master_key(&key).await?;
    Ok(Env { store, key, docker })
}

/// One backup of a loaded client, recorded in the store; retention applied after it.
async fn backup_once(
    operator: &OperatorConfig,
    args: &BackupArgs<'_>,
    env: &Env,
    client: &Client,
    reason: BackupReason,
    display: &Display,
) -> Result<backup::Created> {
    let context = backup::BackupContext {
        store: &env.store,
        key: &env.key,
        operator,
        data_dir: args.data_dir,
        env: &host_env,
        now: now_rfc3339(),
    };
    let subject = backup::BackupSubject {
        id: &client.id,
        spec: &client.spec,
        secrets: &client.secrets,
        stack: &client.stack,
    };
    let events = |event| display.event(event);
    backup::run_backup(&context, &env.docker, &subject, reason, None, &events)
        .await
        .with_context(|| {
            format!(
                "backup of {} failed; every service was left running",
                client.id
            )
        })
}

pub fn create(operator: &OperatorConfig, id: &str, args: BackupArgs) -> Result<()> {
    let id = ClientId::parse(id)?;
    let bundles = BundleStore::new(args.root);
    let client = load_client(operator, &bundles, &id)?;
    let _lock = bundles.lock_client(&id)?;
    let started = Instant::now();
    let display = Display::new(args.json);
    let rt = runtime()?;
    let created = rt.block_on(async {
        let env = env(args.data_dir).await?;
        backup_once(
            operator,
            &args,
            &env,
            &client,
            BackupReason::Manual,
            &display,
        )
        .await
    });
    display.finish();
    let created = created?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "event": "result",
                "success": true,
                "client_id": id.as_str(),
                "snapshot": created.snapshot_id,
                "seconds": seconds,
                "bytes_added": created.summary.data_added,
                "bytes_processed": created.summary.total_bytes_processed,
                "files": created.summary.total_files_processed,
                "databases": created.manifest.databases.len(),
                "rows": created.manifest.total_rows(),
                "volumes": created.manifest.volumes.len(),
            })
        );
    } else {
        println!(
            "Backed up {id} in {seconds:.1} s: snapshot {}, {} databases ({} rows), {} volumes ({} files); {} bytes new. Repository checked.",
            short(&created.snapshot_id),
            created.manifest.databases.len(),
            created.manifest.total_rows(),
            created.manifest.volumes.len(),
            created.manifest.total_files(),
            created.summary.data_added
        );
    }
    Ok(())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

pub fn list(id: &str, args: BackupArgs) -> Result<()> {
    let id = ClientId::parse(id)?;
    let rt = runtime()?;
    let records = rt.block_on(async {
        let store = crate::serve::open_store(args.data_dir).await?;
        Ok::<_, anyhow::Error>(store.backups_of_client(&id, 200).await?)
    })?;
    if args.json {
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "snapshot": r.snapshot_id,
                    "reason": r.reason.as_str(),
                    "status": r.status.as_str(),
                    "started_at": rfc3339(r.started_at),
                    "finished_at": r.finished_at.map(rfc3339),
                    "error": r.error,
                    "bytes_added": r.bytes_added,
                    "bytes_total": r.bytes_total,
                    "files_total": r.files_total,
                    "verified_at": r.verified_at.map(rfc3339),
                    "verify_ok": r.verify_ok,
                })
            })
            .collect();
        println!("{}", json!({ "client_id": id.as_str(), "backups": rows }));
        return Ok(());
    }
    if records.is_empty() {
        println!("No backups of {id} yet: `stackbox backup create {id}`.");
        return Ok(());
    }
    println!(
        "{:<10} {:<24} {:<10} {:<10} {:>12} VERIFIED",
        "SNAPSHOT", "STARTED", "REASON", "STATUS", "NEW BYTES"
    );
    for r in &records {
        let verified = match (r.verified_at, r.verify_ok) {
            (Some(at), Some(true)) => format!("ok {}", rfc3339(at)),
            (Some(at), Some(false)) => format!("FAILED {}", rfc3339(at)),
            _ => "-".into(),
        };
        println!(
            "{:<10} {:<24} {:<10} {:<10} {:>12} {}",
            r.snapshot_id.as_deref().map(short).unwrap_or("-"),
            rfc3339(r.started_at),
            r.reason.as_str(),
            r.status.as_str(),
            r.bytes_added.map(|b| b.to_string()).unwrap_or_default(),
            verified
        );
    }
    Ok(())
}

/// The snapshot asked for, else the client's latest successful backup.
async fn snapshot_of(store: &Store, id: &ClientId, given: Option<&str>) -> Result<String> {
    match given {
        Some(snapshot) => {
            if !snapshot.chars().all(|c| c.is_ascii_hexdigit()) || snapshot.len() < 8 {
                bail!("--snapshot: {snapshot:?} is not a snapshot id (8 or more hex digits; see `stackbox backup list {id}`)");
            }
            Ok(snapshot.to_string())
        }
        None => store
            .latest_succeeded_backup(id)
            .await?
            .and_then(|r| r.snapshot_id)
            .with_context(|| {
                format!("client {id} has no successful backup yet: `stackbox backup create {id}`")
            }),
    }
}

fn scratch_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("backup-scratch").join(name)
}

/// Converges a client's stack (create what is missing, start, wait until healthy).
async fn converge_client(
    operator: &OperatorConfig,
    bundles: &BundleStore,
    docker: &DockerRuntime,
    client: &Client,
) -> Result<()> {
    let desired = desired_state(
        &client.stack,
        &client.secrets,
        &client.bundle,
        &client.bundle_dir.display().to_string(),
        &|name| std::env::var(name).ok(),
    )?;
    let edge = bundles.edge_router(operator)?;
    backup::converge(docker, &desired, edge.as_ref(), DeployOptions::default()).await?;
    Ok(())
}

pub fn restore(
    operator: &OperatorConfig,
    id: &str,
    snapshot: Option<&str>,
    yes: bool,
    args: BackupArgs,
) -> Result<()> {
    let id = ClientId::parse(id)?;
    if !yes {
        bail!(
            "restore replaces {id}'s databases and files with the snapshot's (a safety backup of \
             the current data is taken first, so it can be undone): confirm with --yes"
        );
    }
    let bundles = BundleStore::new(args.root);
    if bundles.load(&id)?.is_none() {
        // A destroyed client coming back: everything it needs is in its snapshot.
        return come_back(operator, &bundles, &id, snapshot, &args);
    }
    let client = load_client(operator, &bundles, &id)?;
    let _lock = bundles.lock_client(&id)?;
    let display = Display::new(args.json);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let env = env(args.data_dir).await?;
        let snapshot = snapshot_of(&env.store, &id, snapshot).await?;
        // The running stack first: a restore loads dumps into running databases.
        converge_client(operator, &bundles, &env.docker, &client).await?;
        let safety = backup_once(
            operator,
            &args,
            &env,
            &client,
            BackupReason::Safety,
            &display,
        )
        .await
        .context("the safety backup before the restore failed; nothing was changed")?;
        let password = repository_key(&env.store, &env.key, &id).await?;
        let repo = repository(operator, args.data_dir, &id, password)?;
        let scratch = scratch_dir(args.data_dir, id.as_str());
        let events = |event| display.event(event);
        let plan = backup_plan(&client.stack);
        let restored = async {
            let fetched = backup::fetch(&repo, &snapshot, &id, &scratch, &events).await?;
            backup::restore_in_place(&env.docker, &fetched, &plan, &events).await?;
            Ok::<_, backup::BackupError>(fetched.snapshot)
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        // Whatever happened, the client ends running.
        let converged = converge_client(operator, &bundles, &env.docker, &client).await;
        let restored = restored.with_context(|| {
            format!(
                "restore of {id} failed; its services were started again. The data before the \
                 restore is in snapshot {}: `stackbox backup restore {id} --snapshot {} --yes`",
                short(&safety.snapshot_id),
                short(&safety.snapshot_id)
            )
        })?;
        converged?;
        Ok::<_, anyhow::Error>((restored, safety.snapshot_id))
    });
    display.finish();
    let (restored, safety) = result?;
    if args.json {
        println!(
            "{}",
            json!({"event": "result", "success": true, "client_id": id.as_str(), "snapshot": restored, "safety_snapshot": safety})
        );
    } else {
        println!(
            "Restored {id} from snapshot {}; every service is healthy. Undo with `stackbox backup restore {id} --snapshot {} --yes`.",
            short(&restored),
            short(&safety)
        );
    }
    Ok(())
}

/// Brings a destroyed client back from its backup: its spec and secrets from the snapshot's
/// sealed client (opened with the master key), its bundle written again, its stack built from
/// the snapshot (volumes filled, databases loaded, every service healthy). Nothing else of the
/// client needs to exist, so this also works on a new control plane that has the master key
/// and the backup destination.
fn come_back(
    operator: &OperatorConfig,
    bundles: &BundleStore,
    id: &ClientId,
    snapshot: Option<&str>,
    args: &BackupArgs,
) -> Result<()> {
    let display = Display::new(args.json);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let env = env(args.data_dir).await?;
        let password = repository_key(&env.store, &env.key, id).await?;
        let repo = repository(operator, args.data_dir, id, password)?;
        let snapshot = match snapshot {
            Some(given) => given.to_string(),
            None => match env.store.latest_succeeded_backup(id).await?.and_then(|r| r.snapshot_id) {
                Some(known) => known,
                // A store that never saw the client: the repository's own newest snapshot.
                None => repo
                    .snapshots(Some(&format!("client:{id}")))
                    .await?
                    .pop()
                    .map(|s| s.id)
                    .with_context(|| format!("client {id} has no bundle and no backup to restore it from"))?,
            },
        };
        let events = |event| display.event(event);
        let scratch = scratch_dir(args.data_dir, id.as_str());
        let outcome = async {
            let fetched = backup::fetch(&repo, &snapshot, id, &scratch, &events).await?;
            let (mut spec, secrets) = backup::open_client(&env.key, id, &fetched.sealed_client)?;
            if let Some(owner) = bundles.find_by_domain(&spec.domain)? {
                bail!("the client's domain {} now belongs to client {owner}; clone the backup under another domain instead (`stackbox clone {id} --domain NEW`)", spec.domain);
            }
            spec.client_id = Some(id.clone());
            let rendered = stackbox_core::render::render(&spec, id, &secrets, operator)?;
            bundles.write_bundle(id, &rendered.bundle)?;
            let _lock = bundles.lock_client(id)?;
            let bundle_dir = std::path::absolute(bundles.client_dir(id))?;
            let desired = desired_state(
                &rendered.stack,
                &secrets,
                &rendered.bundle,
                &bundle_dir.display().to_string(),
                &|name| std::env::var(name).ok(),
            )?;
            let edge = bundles.edge_router(operator)?;
            backup::restore_into_new(
                &env.docker,
                &fetched,
                &backup_plan(&rendered.stack),
                &desired,
                edge.as_ref(),
                DeployOptions::default(),
                &events,
            )
            .await?;
            env.store.release_retained_client(id).await?;
            Ok(fetched.snapshot)
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        if outcome.is_err() {
            let _ = lifecycle::cleanup(&env.docker, id, operator.ingress.edge_router_name(), false, &|_| {}).await;
        }
        outcome
    });
    display.finish();
    let snapshot = result.with_context(|| format!("bringing {id} back from its backup failed"))?;
    if args.json {
        println!(
            "{}",
            json!({"event": "result", "success": true, "client_id": id.as_str(), "snapshot": snapshot, "came_back": true})
        );
    } else {
        println!(
            "Brought {id} back from snapshot {}; every service is healthy.",
            short(&snapshot)
        );
    }
    Ok(())
}

fn random_suffix() -> u32 {
    let mut bytes = [0u8; 4];
    stackbox_core::secrets::RandomSource::fill(&mut OsRandom, &mut bytes);
    u32::from_be_bytes(bytes)
}

pub fn verify(
    operator: &OperatorConfig,
    id: &str,
    snapshot: Option<&str>,
    args: BackupArgs,
) -> Result<()> {
    let id = ClientId::parse(id)?;
    let bundles = BundleStore::new(args.root);
    let client = load_client(operator, &bundles, &id)?;
    let display = Display::new(args.json);
    let started = Instant::now();
    let rt = runtime()?;
    let result = rt.block_on(async {
        let env = env(args.data_dir).await?;
        let snapshot = snapshot_of(&env.store, &id, snapshot).await?;
        let password = repository_key(&env.store, &env.key, &id).await?;
        let repo = repository(operator, args.data_dir, &id, password)?;
        let events = |event| display.event(event);
        let copy_id = ClientId::parse(&format!("verify-{:08x}", random_suffix()))?;
        let scratch = scratch_dir(args.data_dir, copy_id.as_str());
        let outcome = backup::verify_backup(
            &env.store,
            &env.docker,
            &repo,
            backup::VerifyRequest {
                client: &id,
                stack: &client.stack,
                secrets: &client.secrets,
                bundle: &client.bundle,
                bundle_dir: &client.bundle_dir,
                snapshot: &snapshot,
                copy_id: &copy_id,
                scratch: &scratch,
                options: DeployOptions::default(),
            },
            &events,
        )
        .await;
        outcome?;
        Ok::<_, anyhow::Error>((snapshot, copy_id))
    });
    display.finish();
    let (snapshot, copy_id) = result.with_context(|| format!("verify of {id}'s backup failed"))?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"event": "result", "success": true, "client_id": id.as_str(), "snapshot": snapshot, "copy": copy_id.as_str(), "seconds": seconds})
        );
    } else {
        println!(
            "Verified {id}'s snapshot {} in {seconds:.1} s: restored into a throwaway copy, every service healthy, databases and volumes match the manifest; the copy was removed.",
            short(&snapshot)
        );
    }
    Ok(())
}

pub fn forget(operator: &OperatorConfig, id: &str, snapshot: &str, args: BackupArgs) -> Result<()> {
    let id = ClientId::parse(id)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = crate::serve::open_store(args.data_dir).await?;
        let key = crate::serve::master_key(args.data_dir, None)?;
        let record = store
            .backup_by_snapshot(&id, snapshot)
            .await?
            .with_context(|| format!("--snapshot: {id} has no backup {snapshot:?}; see `stackbox backup list {id}`"))?;
        let full = record.snapshot_id.clone().unwrap_or_default();
        let password = repository_key(&store, &key, &id).await?;
        let repo = repository(operator, args.data_dir, &id, password)?;
        repo.forget(std::slice::from_ref(&full)).await?;
        store.mark_backup_forgotten(&record.id).await?;
        if args.json {
            println!("{}", json!({"event": "result", "success": true, "client_id": id.as_str(), "forgotten": full}));
        } else {
            println!("Forgot snapshot {} of {id}; its data was pruned from the repository.", short(&full));
        }
        Ok(())
    })
}

pub fn clone(
    operator: &OperatorConfig,
    id: &str,
    domain: &str,
    snapshot: Option<&str>,
    args: BackupArgs,
) -> Result<()> {
    let id = ClientId::parse(id)?;
    let domain = Domain::parse(domain).context("--domain")?;
    let bundles = BundleStore::new(args.root);
    let source = load_client(operator, &bundles, &id)?;
    if let Some(owner) = bundles.find_by_domain(&domain)? {
        bail!("--domain: {domain} already belongs to client {owner}; choose another domain");
    }
    let mut spec = source.spec.clone();
    spec.domain = domain.clone();
    let new_id = ClientId::new(&spec.company_name, random_suffix());
    spec.client_id = Some(new_id.clone());
    let needed = SecretKey::needed_for(&spec.apps());
    let secrets = stackbox_core::backup::clone_secrets(&source.secrets, &needed, &mut OsRandom);
    let rendered = stackbox_core::render::render(&spec, &new_id, &secrets, operator)?;
    let display = Display::new(args.json);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let env = env(args.data_dir).await?;
        let snapshot = snapshot_of(&env.store, &id, snapshot).await?;
        let password = repository_key(&env.store, &env.key, &id).await?;
        let repo = repository(operator, args.data_dir, &id, password)?;
        let events = |event| display.event(event);
        bundles.write_bundle(&new_id, &rendered.bundle)?;
        let _lock = bundles.lock_client(&new_id)?;
        let scratch = scratch_dir(args.data_dir, new_id.as_str());
        let bundle_dir = std::path::absolute(bundles.client_dir(&new_id))?;
        let outcome = async {
            let fetched = backup::fetch(&repo, &snapshot, &id, &scratch, &events).await?;
            let plan = backup_plan(&rendered.stack);
            let desired = desired_state(
                &rendered.stack,
                &secrets,
                &rendered.bundle,
                &bundle_dir.display().to_string(),
                &|name| std::env::var(name).ok(),
            )?;
            let edge = bundles.edge_router(operator)?;
            backup::restore_into_new(
                &env.docker,
                &fetched,
                &plan,
                &desired,
                edge.as_ref(),
                DeployOptions::default(),
                &events,
            )
            .await?;
            Ok::<_, anyhow::Error>(fetched.snapshot)
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        if outcome.is_err() {
            // A failed clone leaves nothing half-made: its containers, networks, volumes and
            // bundle go (the source is untouched).
            let _ = lifecycle::cleanup(
                &env.docker,
                &new_id,
                operator.ingress.edge_router_name(),
                true,
                &|_| {},
            )
            .await;
            let _ = bundles.remove_client(&new_id);
        }
        outcome
    });
    display.finish();
    let snapshot =
        result.with_context(|| format!("clone of {id} failed; nothing was left behind"))?;
    let urls: serde_json::Map<String, serde_json::Value> = rendered
        .urls
        .iter()
        .map(|u| (u.name.to_string(), json!(u.url)))
        .collect();
    if args.json {
        println!(
            "{}",
            json!({"event": "result", "success": true, "client_id": new_id.as_str(), "source": id.as_str(), "snapshot": snapshot, "domain": domain.to_string(), "services": urls})
        );
    } else {
        println!(
            "Cloned {id} (snapshot {}) into {new_id} at {domain}; every service is healthy.",
            short(&snapshot)
        );
        for url in &rendered.urls {
            println!("  {:<10} {}", url.name, url.url);
        }
    }
    Ok(())
}

/// Before a local destroy: a client with backups keeps them for the operator's retention after
/// a destroy (a last backup first, when its databases run), or loses them with
/// `--delete-backups` (or a retention of 0 days). Says what it did, in one line.
pub fn before_destroy(
    operator: &OperatorConfig,
    root: &Path,
    data_dir: &Path,
    id: &ClientId,
    delete_backups: bool,
) -> Result<Option<String>> {
    // No store yet (never backed up, never served): nothing to keep, and nothing is created.
    let database_url = std::env::var("STACKBOX_DATABASE_URL").unwrap_or_default();
    if database_url.is_empty() && !data_dir.join(stackbox_store::SQLITE_FILE_NAME).exists() {
        return Ok(None);
    }
    let rt = runtime()?;
    rt.block_on(async {
        let store = crate::serve::open_store(data_dir).await?;
        if store.backups_of_client(id, 1).await?.is_empty() {
            return Ok(None);
        }
        let key = crate::serve::master_key(data_dir, None)?;
        store.check_master_key(&key).await?;
        let days = operator.backup.keep_after_destroy_days;
        let password = repository_key(&store, &key, id).await?;
        let repo = repository(operator, data_dir, id, password)?;
        if delete_backups || days == 0 {
            let deleted = backup::delete_backups(&store, &repo, id).await?;
            return Ok(Some(format!("its {deleted} backups were deleted")));
        }
        let bundles = BundleStore::new(root);
        let mut note = "its backups are kept".to_string();
        if let Ok(client) = load_client(operator, &bundles, id) {
            let docker = DockerRuntime::connect().await?;
            let env = Env { store, key, docker };
            let args = BackupArgs {
                root,
                data_dir,
                json: false,
            };
            // Plain lines on stderr: the destroy's own output stays what it was.
            let quiet = Display {
                json: false,
                terminal: None,
            };
            match backup_once(
                operator,
                &args,
                &env,
                &client,
                BackupReason::PreDestroy,
                &quiet,
            )
            .await
            {
                Ok(created) => {
                    note = format!(
                        "its backups are kept, the last one ({}) taken now",
                        short(&created.snapshot_id)
                    )
                }
                Err(error) => note = format!("its backups are kept (no last one: {error:#})"),
            }
            let until = stackbox_store::Timestamp::now()
                .plus(std::time::Duration::from_secs(u64::from(days) * 86_400));
            env.store
                .retain_client(id, &client.spec.domain, &client.spec.to_toml(id), until)
                .await?;
            return Ok(Some(format!("{note} until {}", rfc3339(until))));
        }
        Ok(Some(note))
    })
}

/// `stackbox upgrade ID --to RELEASE`: the move checked against the upgrade graph, a backup
/// first, then the client's services replaced by the one deploy path (in dependency order,
/// health-gated, stateless ones start-first). On failure the deploy's rollback puts the
/// previous containers back; when a service that keeps data ran the new release's image (it
/// may have migrated the data), the pre-upgrade backup is restored into it; the bundle keeps
/// the previous release.
pub fn upgrade(
    operator: &OperatorConfig,
    id: &str,
    to: &str,
    health_timeout: Option<std::time::Duration>,
    args: BackupArgs,
) -> Result<()> {
    let id = ClientId::parse(id)?;
    let bundles = BundleStore::new(args.root);
    let client = load_client(operator, &bundles, &id)?;
    let from = client
        .spec
        .release
        .clone()
        .unwrap_or_else(|| stackbox_core::release::BASE_RELEASE.to_string());
    let change =
        stackbox_core::release::plan_move(&operator.images, &operator.releases, &from, to)?;
    if change.images.is_empty() && from == to {
        bail!("client {id} already runs release {to}");
    }
    let _lock = bundles.lock_client(&id)?;
    let display = Display::new(args.json);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let env = env(args.data_dir).await?;
        let safety = backup_once(operator, &args, &env, &client, BackupReason::Safety, &display)
            .await
            .context("the backup before the upgrade failed; nothing was changed")?;
        let outcome = bundles.render_client(
            &client.spec,
            operator,
            stackbox_bundle::RenderOptions {
                release: Some(to.to_string()),
                ..Default::default()
            },
            &mut OsRandom,
        )?;
        let desired = desired_state(
            &outcome.rendered.stack,
            &outcome.secrets,
            &outcome.rendered.bundle,
            &client.bundle_dir.display().to_string(),
            &|name| std::env::var(name).ok(),
        )?;
        let edge = bundles.edge_router(operator)?;
        let progress = crate::progress::Progress::new(args.json);
        let events = |event| progress.event(event);
        let deployment = lifecycle::Deployment::prepare(
            &env.docker,
            &desired,
            edge.as_ref(),
            DeployOptions { health_timeout },
        )
        .await?;
        let run = deployment.run(&events).await;
        progress.finish();
        let error = match run {
            Ok(done) => return Ok::<_, anyhow::Error>((safety.snapshot_id, done)),
            Err(error) => error,
        };
        // Back to the previous release: containers first (the deploy's own rollback), then
        // the data when a service that keeps data ran the new image, then the bundle.
        let rolled_back = deployment.rollback(&|_| {}).await;
        let touched_data: Vec<&str> = outcome
            .rendered
            .stack
            .services
            .iter()
            .filter(|service| {
                service
                    .mounts
                    .iter()
                    .any(|m| matches!(m, stackbox_core::stack::Mount::Volume { .. }))
                    && client
                        .stack
                        .service(service.kind)
                        .is_some_and(|old| old.image != service.image)
            })
            .map(|service| service.kind.name())
            .collect();
        bundles.render_client(
            &client.spec,
            operator,
            stackbox_bundle::RenderOptions {
                release: Some(from.clone()),
                ..Default::default()
            },
            &mut OsRandom,
        )?;
        let restored = if touched_data.is_empty() {
            Ok(())
        } else {
            let password = repository_key(&env.store, &env.key, &id).await?;
            let repo = repository(operator, args.data_dir, &id, password)?;
            let scratch = scratch_dir(args.data_dir, id.as_str());
            let events = |event| display.event(event);
            let plan = backup_plan(&client.stack);
            let restored = async {
                converge_client(operator, &bundles, &env.docker, &client).await?;
                let fetched =
                    backup::fetch(&repo, &safety.snapshot_id, &id, &scratch, &events).await?;
                backup::restore_in_place(&env.docker, &fetched, &plan, &events).await?;
                Ok::<_, anyhow::Error>(())
            }
            .await;
            let _ = std::fs::remove_dir_all(&scratch);
            restored
        };
        // Whatever happened, the client ends running on the previous release.
        let converged = converge_client(operator, &bundles, &env.docker, &client).await;
        let mut message = format!(
            "upgrade of {id} from release {from} to {to} failed: {error}\nthe client runs release {from} again"
        );
        if !touched_data.is_empty() {
            message.push_str(&format!(
                " with its data restored from the backup taken before the upgrade ({}: {} ran the new release)",
                short(&safety.snapshot_id),
                touched_data.join(", ")
            ));
        }
        for (what, problem) in [
            ("the rollback", rolled_back.err().map(|e| e.to_string())),
            ("the restore", restored.err().map(|e| format!("{e:#}"))),
            ("the final converge", converged.err().map(|e| format!("{e:#}"))),
        ] {
            if let Some(problem) = problem {
                message.push_str(&format!(
                    "\n{what} failed too: {problem}; the data before the upgrade is in snapshot {}",
                    short(&safety.snapshot_id)
                ));
            }
        }
        bail!(message)
    });
    display.finish();
    let (snapshot, done) = result?;
    let images: Vec<serde_json::Value> = change
        .images
        .iter()
        .map(|(key, old, new)| json!({"image": key.key(), "from": old, "to": new}))
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "event": "result",
                "success": true,
                "client_id": id.as_str(),
                "from": from,
                "to": to,
                "backup": snapshot,
                "images": images,
                "containers": done.services,
            })
        );
    } else {
        println!(
            "Upgraded {id} from release {from} to {to}; every service is healthy (backup {} taken first).",
            short(&snapshot)
        );
        for (key, old, new) in &change.images {
            println!("  {:<12} {old} -> {new}", key.key());
        }
    }
    Ok(())
}
