//! Backups of a client's whole stack (adapter): the core's [`BackupPlan`] carried out on a
//! real engine and a restic repository.
//!
//! - [`create`]: every database dumped beside its running service (`exec` of the image's own
//!   tools, streamed to a staging folder), a manifest (tables and exact rows, files and bytes,
//!   images), the client's sealed spec and secrets, and the data volumes read where the engine
//!   keeps them, all in one restic snapshot; then `restic check`. Nothing is stopped, so a
//!   failure at any point leaves every service as it was.
//! - [`fetch`]: a snapshot restored into a scratch folder, with its manifest.
//! - [`restore_in_place`]: the client's app services stopped, volumes replaced, dumps loaded;
//!   the caller then converges the stack (which starts and health-checks it) whatever happened.
//! - [`restore_into_new`]: a stack that does not exist yet (a verify copy or a clone) built
//!   from a snapshot: volumes filled before any app starts, databases started and loaded, then
//!   everything started and healthy.
//! - [`inspect`] and [`core::compare`]: what a restored copy holds, against its manifest.
//!
//! Volumes are read and written at the engine's mountpoints, so StackBox must run on the
//! engine's host (the embedded default); [`BackupError::VolumeNotLocal`] says so otherwise.

mod service;

pub use service::{
    apply_retention, delete_backups, derive_repository_key, open_client, repository,
    repository_key, run_backup, seal_client, verify_backup, BackupContext, BackupSubject,
    ServiceError, VerifyRequest,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use sha2::Digest;
use stackbox_core::backup::{
    self as core, BackupPlan, DatabaseDump, DatabaseEntry, Manifest, VolumeEntry, MANIFEST_PATH,
    SEALED_CLIENT_PATH,
};
use stackbox_core::client::ClientId;
use stackbox_core::deploy::{ContainerState, DesiredState, EdgeRouter};
use stackbox_core::plan::ServiceKind;
use stackbox_engine::lifecycle::{self, DeployOptions, Deployment};
use stackbox_engine::{ContainerRuntime, EngineError};
use stackbox_restic::{BackupSummary, Repository, ResticError};
use tokio::io::AsyncWrite;

/// Errors of a backup, restore, verify or clone.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Restic(#[from] ResticError),
    #[error(transparent)]
    Core(#[from] stackbox_core::CoreError),
    #[error("cannot {action} {path}: {problem}")]
    Io {
        action: &'static str,
        path: String,
        problem: String,
    },
    #[error("service {service} of client {client} is not running; start the client (`stackbox start {client}`) and back up again")]
    ServiceNotRunning { client: String, service: String },
    #[error("dumping database {database} in {service} failed (exit {exit}): {stderr}")]
    DumpFailed {
        service: String,
        database: String,
        exit: i64,
        stderr: String,
    },
    #[error("loading database {database} into {service} failed (exit {exit}): {stderr}")]
    LoadFailed {
        service: String,
        database: String,
        exit: i64,
        stderr: String,
    },
    #[error("counting the tables of {database} in {service} failed: {problem}")]
    InventoryFailed {
        service: String,
        database: String,
        problem: String,
    },
    #[error(
        "volume {volume} is at {mountpoint}, which this host cannot read: backups read volumes \
         where the engine keeps them, so run StackBox on the engine's host (DOCKER_HOST local)"
    )]
    VolumeNotLocal { volume: String, mountpoint: String },
    #[error("volume {volume} is not on the engine; deploy the client first")]
    VolumeMissing { volume: String },
    #[error("snapshot {snapshot} holds no StackBox manifest ({MANIFEST_PATH}); it was not made by `stackbox backup`")]
    NotAStackboxSnapshot { snapshot: String },
    #[error("snapshot {snapshot} is of client {found}, not {expected}")]
    OtherClient {
        snapshot: String,
        expected: String,
        found: String,
    },
    #[error("the restored copy differs from the backup's manifest: {}", list(.mismatches))]
    Mismatch { mismatches: Vec<core::Mismatch> },
}

fn list(mismatches: &[core::Mismatch]) -> String {
    let mut text: Vec<String> = mismatches
        .iter()
        .take(10)
        .map(ToString::to_string)
        .collect();
    if mismatches.len() > 10 {
        text.push(format!("and {} more", mismatches.len() - 10));
    }
    text.join("; ")
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.display().to_string();
    move |e| BackupError::Io {
        action,
        path,
        problem: e.to_string(),
    }
}

/// Progress of a long operation, for a terminal's bar, `--json` lines and SSE.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BackupEvent {
    /// A phase began: `dump`, `upload`, `check`, `fetch`, `stop`, `volumes`, `load`, …
    Phase {
        phase: &'static str,
    },
    Dumped {
        service: String,
        database: String,
        bytes: u64,
        tables: usize,
        /// The database had not changed since the previous backup's dump, which was reused.
        reused: bool,
    },
    Upload {
        percent: f64,
        files_done: u64,
        total_files: u64,
        bytes_done: u64,
        total_bytes: u64,
    },
    VolumeRestored {
        volume: String,
        files: u64,
        bytes: u64,
    },
    Loaded {
        service: String,
        database: String,
    },
}

/// Something that takes progress events.
pub type Events<'a> = &'a (dyn Fn(BackupEvent) + 'a);

/// What [`create`] needs besides the plan.
pub struct CreateRequest<'a> {
    pub plan: &'a BackupPlan,
    /// The manifest's header: client, domain, plan, time, version; databases, volumes and
    /// images are filled in by [`create`].
    pub header: Manifest,
    /// The client's spec and secrets, sealed by the caller with the operator's master key.
    pub sealed_client: &'a [u8],
    /// restic tags (`client:<id>`, `reason:manual`, …).
    pub tags: Vec<String>,
    /// The client's staging folder (stable across backups, so restic finds its parent
    /// snapshot by path and reads only what changed).
    pub staging: &'a Path,
}

/// What a backup made.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub snapshot_id: String,
    pub manifest: Manifest,
    pub summary: BackupSummary,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Hashing<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.bytes += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The running container of each service of a client.
async fn running_containers<R: ContainerRuntime>(
    runtime: &R,
    client: &ClientId,
) -> Result<BTreeMap<ServiceKind, String>, BackupError> {
    let observed = runtime.observe(client).await?;
    Ok(observed
        .containers
        .into_iter()
        .filter(|c| c.state == ContainerState::Running && !c.is_set_aside())
        .filter_map(|c| c.service_kind().map(|kind| (kind, c.id)))
        .collect())
}

fn container_of<'a>(
    containers: &'a BTreeMap<ServiceKind, String>,
    client: &ClientId,
    service: ServiceKind,
) -> Result<&'a str, BackupError> {
    containers
        .get(&service)
        .map(String::as_str)
        .ok_or_else(|| BackupError::ServiceNotRunning {
            client: client.to_string(),
            service: service.name().to_string(),
        })
}

/// Exact row counts of one database, through its inventory command.
pub async fn inventory<R: ContainerRuntime>(
    runtime: &R,
    container: &str,
    dump: &DatabaseDump,
) -> Result<BTreeMap<String, u64>, BackupError> {
    let mut out: Vec<u8> = Vec::new();
    let outcome = runtime
        .exec_streaming(container, &dump.inventory, None, &mut out)
        .await?;
    let failed = |problem: String| BackupError::InventoryFailed {
        service: dump.service.name().to_string(),
        database: dump.database.clone(),
        problem,
    };
    if !outcome.succeeded() {
        return Err(failed(format!(
            "exit {}: {}",
            outcome.exit_code.unwrap_or(-1),
            outcome.stderr
        )));
    }
    core::parse_inventory(&String::from_utf8_lossy(&out)).map_err(failed)
}

/// Files and bytes below a folder (regular files; symlinks count as files of their own size).
pub fn count_files(dir: &Path) -> Result<(u64, u64), BackupError> {
    let mut files = 0;
    let mut bytes = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(io_error("read", &folder))?;
        for entry in entries {
            let entry = entry.map_err(io_error("read", &folder))?;
            let kind = entry.file_type().map_err(io_error("read", &entry.path()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                let meta = entry
                    .path()
                    .symlink_metadata()
                    .map_err(io_error("read", &entry.path()))?;
                files += 1;
                if kind.is_file() {
                    bytes += meta.len();
                }
            }
        }
    }
    Ok((files, bytes))
}

/// A volume's folder on this host, checked to be readable here.
async fn volume_dir<R: ContainerRuntime>(runtime: &R, name: &str) -> Result<PathBuf, BackupError> {
    let mountpoint =
        runtime
            .volume_mountpoint(name)
            .await?
            .ok_or_else(|| BackupError::VolumeMissing {
                volume: name.to_string(),
            })?;
    let path = PathBuf::from(&mountpoint);
    if std::fs::read_dir(&path).is_err() {
        return Err(BackupError::VolumeNotLocal {
            volume: name.to_string(),
            mountpoint,
        });
    }
    Ok(path)
}

fn make_private_dir(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_error("create", path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("write", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("write", path))
}

/// Removes what a backup staged but the next one must make anew (the manifest and sealed
/// client), and dumps of databases the plan no longer has. The plan's own dumps stay (0600
/// files in the 0700 staging folder, beside the volumes' own data on this host): an unchanged
/// database's dump is reused, and restic, finding the same file, does not read it again.
fn clear_staging(staging: &Path, plan: &BackupPlan) {
    let _ = std::fs::remove_dir_all(staging.join("stackbox"));
    let keep: Vec<PathBuf> = plan
        .dumps
        .iter()
        .flat_map(|d| {
            let file = staging.join(&d.file);
            [
                file.clone(),
                sidecar(&file, "fingerprint"),
                sidecar(&file, "entry.json"),
            ]
        })
        .collect();
    let mut pending = vec![staging.join(core::DATABASES_DIR)];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if !keep.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// `<dump>.<what>` beside a dump: its fingerprint, its manifest entry.
fn sidecar(file: &Path, what: &str) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".");
    name.push(what);
    PathBuf::from(name)
}

/// The manifest entry of the dump staged before, when its database has not changed since:
/// then the dump is reused as it is.
async fn reusable_dump<R: ContainerRuntime>(
    runtime: &R,
    container: &str,
    dump: &DatabaseDump,
    path: &Path,
) -> Result<(Option<DatabaseEntry>, Option<String>), BackupError> {
    let Some(command) = &dump.fingerprint else {
        return Ok((None, None));
    };
    let mut out: Vec<u8> = Vec::new();
    let outcome = runtime
        .exec_streaming(container, command, None, &mut out)
        .await?;
    if !outcome.succeeded() {
        return Ok((None, None)); // no fingerprint: dump as always
    }
    let current = String::from_utf8_lossy(&out).to_string();
    let previous = std::fs::read_to_string(sidecar(path, "fingerprint")).unwrap_or_default();
    let entry = std::fs::read(sidecar(path, "entry.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<DatabaseEntry>(&bytes).ok());
    let size = std::fs::metadata(path).map(|m| m.len()).ok();
    match entry {
        Some(entry) if size == Some(entry.bytes) && core::dump_still_valid(&previous, &current) => {
            Ok((Some(entry), Some(current)))
        }
        _ => Ok((None, Some(current))),
    }
}

/// Backs up one client: dumps, manifest, sealed client, volumes; one snapshot, then checked.
pub async fn create<R: ContainerRuntime>(
    runtime: &R,
    repository: &Repository,
    request: CreateRequest<'_>,
    events: Events<'_>,
) -> Result<Created, BackupError> {
    let plan = request.plan;
    let client = &plan.client_id;
    let staging = request.staging;
    clear_staging(staging, plan);
    make_private_dir(staging)?;
    let result = create_staged(runtime, repository, &request, events).await;
    let _ = std::fs::remove_dir_all(staging.join("stackbox"));
    let _ = client;
    result
}

async fn create_staged<R: ContainerRuntime>(
    runtime: &R,
    repository: &Repository,
    request: &CreateRequest<'_>,
    events: Events<'_>,
) -> Result<Created, BackupError> {
    let plan = request.plan;
    let client = &plan.client_id;
    let staging = request.staging;
    repository.init_if_missing().await?;
    repository.unlock().await?;
    // Every volume first: a client whose volumes this host cannot read fails before any dump.
    let mut volume_dirs = Vec::new();
    for volume in &plan.volumes {
        volume_dirs.push((volume, volume_dir(runtime, &volume.name).await?));
    }
    events(BackupEvent::Phase { phase: "dump" });
    let containers = running_containers(runtime, client).await?;
    let mut databases = Vec::new();
    for dump in &plan.dumps {
        let container = container_of(&containers, client, dump.service)?;
        let path = staging.join(&dump.file);
        if let Some(parent) = path.parent() {
            make_private_dir(parent)?;
        }
        let (reused, fingerprint) = reusable_dump(runtime, container, dump, &path).await?;
        if let Some(entry) = reused {
            events(BackupEvent::Dumped {
                service: dump.service.name().to_string(),
                database: dump.database.clone(),
                bytes: entry.bytes,
                tables: entry.tables.len(),
                reused: true,
            });
            databases.push(entry);
            continue;
        }
        // From here the staged dump is being replaced: nothing may vouch for it until it is
        // complete.
        let _ = std::fs::remove_file(sidecar(&path, "fingerprint"));
        let _ = std::fs::remove_file(sidecar(&path, "entry.json"));
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_error("write", &path))?
        };
        let mut sink = Hashing {
            inner: tokio::io::BufWriter::new(tokio::fs::File::from_std(file)),
            hasher: sha2::Sha256::new(),
            bytes: 0,
        };
        let outcome = runtime
            .exec_streaming(container, &dump.dump, None, &mut sink)
            .await?;
        if !outcome.succeeded() {
            return Err(BackupError::DumpFailed {
                service: dump.service.name().to_string(),
                database: dump.database.clone(),
                exit: outcome.exit_code.unwrap_or(-1),
                stderr: outcome.stderr,
            });
        }
        tokio::io::AsyncWriteExt::shutdown(&mut sink)
            .await
            .map_err(io_error("write", &path))?;
        let tables = inventory(runtime, container, dump).await?;
        let sha256: String = sink
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        events(BackupEvent::Dumped {
            service: dump.service.name().to_string(),
            database: dump.database.clone(),
            bytes: sink.bytes,
            tables: tables.len(),
            reused: false,
        });
        let entry = DatabaseEntry {
            service: dump.service.name().to_string(),
            engine: dump.engine,
            database: dump.database.clone(),
            file: dump.file.clone(),
            bytes: sink.bytes,
            sha256,
            tables,
        };
        // The fingerprint taken before this dump: the next backup reuses the dump while the
        // database is unchanged since then.
        if let Some(fingerprint) = fingerprint {
            write_private(
                &sidecar(&path, "entry.json"),
                &serde_json::to_vec(&entry).unwrap_or_default(),
            )?;
            write_private(&sidecar(&path, "fingerprint"), fingerprint.as_bytes())?;
        }
        databases.push(entry);
    }
    let mut volumes = Vec::new();
    for (volume, dir) in &volume_dirs {
        let (files, bytes) = count_files(dir)?;
        volumes.push(VolumeEntry {
            key: volume.key.to_string(),
            files,
            bytes,
            source_path: dir.display().to_string(),
        });
    }
    let mut manifest = request.header.clone();
    manifest.format = core::MANIFEST_FORMAT;
    manifest.databases = databases;
    manifest.volumes = volumes;
    manifest.images = plan.images.clone();
    manifest.staging_path = std::path::absolute(staging)
        .map_err(io_error("resolve", staging))?
        .display()
        .to_string();
    let meta = staging.join("stackbox");
    make_private_dir(&meta)?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_private(&staging.join(MANIFEST_PATH), &manifest_bytes)?;
    write_private(&staging.join(SEALED_CLIENT_PATH), request.sealed_client)?;

    events(BackupEvent::Phase { phase: "upload" });
    // Relative to `/`: the snapshot holds every part at its path on this host, which the
    // manifest records for the restore.
    let absolute_staging = std::path::absolute(staging).map_err(io_error("resolve", staging))?;
    let mut paths = vec![absolute_staging];
    paths.extend(volume_dirs.iter().map(|(_, dir)| dir.clone()));
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf())
        .collect();
    let mut on_progress = |p: stackbox_restic::BackupProgress| {
        events(BackupEvent::Upload {
            percent: p.percent_done,
            files_done: p.files_done,
            total_files: p.total_files,
            bytes_done: p.bytes_done,
            total_bytes: p.total_bytes,
        })
    };
    let summary = repository
        .backup(
            Path::new("/"),
            &paths,
            &request.tags,
            client.as_str(),
            &mut on_progress,
        )
        .await?;
    // Done means verified: the upload is complete and the repository is sound.
    events(BackupEvent::Phase { phase: "check" });
    repository.check(false).await?;
    Ok(Created {
        snapshot_id: summary.snapshot_id.clone(),
        manifest,
        summary,
    })
}

/// A snapshot restored into a scratch folder.
#[derive(Debug)]
pub struct Fetched {
    pub snapshot: String,
    /// The scratch folder (removed by the caller when done: it holds the client's data).
    pub root: PathBuf,
    pub manifest: Manifest,
    pub sealed_client: Vec<u8>,
}

impl Fetched {
    /// Where a path of the original host is inside the scratch folder.
    pub fn local(&self, original: &str) -> PathBuf {
        self.root.join(original.trim_start_matches('/'))
    }

    fn staged(&self, relative: &str) -> PathBuf {
        self.local(&self.manifest.staging_path).join(relative)
    }
}

/// Restores a snapshot into `scratch` (made 0700) and reads its manifest.
pub async fn fetch(
    repository: &Repository,
    snapshot: &str,
    expected_client: &ClientId,
    scratch: &Path,
    events: Events<'_>,
) -> Result<Fetched, BackupError> {
    events(BackupEvent::Phase { phase: "fetch" });
    let _ = std::fs::remove_dir_all(scratch);
    make_private_dir(scratch)?;
    repository.unlock().await?;
    repository.restore(snapshot, scratch, &[]).await?;
    // The manifest is in the staging folder, whose path is the snapshot's first.
    let snapshots = repository.snapshots(None).await?;
    let record = snapshots
        .iter()
        .find(|s| s.id == snapshot || s.short_id == snapshot || s.id.starts_with(snapshot))
        .ok_or_else(|| BackupError::NotAStackboxSnapshot {
            snapshot: snapshot.to_string(),
        })?;
    let manifest_path = record
        .paths
        .iter()
        .map(|p| scratch.join(p.trim_start_matches('/')).join(MANIFEST_PATH))
        .find(|p| p.exists())
        .ok_or_else(|| BackupError::NotAStackboxSnapshot {
            snapshot: snapshot.to_string(),
        })?;
    let text = std::fs::read(&manifest_path).map_err(io_error("read", &manifest_path))?;
    let manifest = Manifest::parse(&text)?;
    if manifest.client_id != expected_client.as_str() {
        return Err(BackupError::OtherClient {
            snapshot: snapshot.to_string(),
            expected: expected_client.to_string(),
            found: manifest.client_id,
        });
    }
    let mut fetched = Fetched {
        snapshot: record.id.clone(),
        root: scratch.to_path_buf(),
        manifest,
        sealed_client: Vec::new(),
    };
    let sealed = fetched.staged(SEALED_CLIENT_PATH);
    fetched.sealed_client = std::fs::read(&sealed).map_err(io_error("read", &sealed))?;
    Ok(fetched)
}

/// Replaces everything in `target` with what is in `source` (moved when on one file system,
/// else copied), keeping `target` itself (its owner and mode are the volume's).
fn replace_folder(source: &Path, target: &Path) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(target).map_err(io_error("read", target))? {
        let path = entry.map_err(io_error("read", target))?.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_error("remove", &path))?;
    }
    if !source.exists() {
        return Ok(()); // an empty volume
    }
    let meta = std::fs::metadata(source).map_err(io_error("read", source))?;
    let _ = std::fs::set_permissions(target, meta.permissions());
    for entry in std::fs::read_dir(source).map_err(io_error("read", source))? {
        let from = entry.map_err(io_error("read", source))?.path();
        let to = target.join(from.file_name().unwrap_or_default());
        if std::fs::rename(&from, &to).is_err() {
            copy_tree(&from, &to)?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let meta = from.symlink_metadata().map_err(io_error("read", from))?;
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(from).map_err(io_error("read", from))?;
        std::os::unix::fs::symlink(link, to).map_err(io_error("write", to))?;
    } else if meta.is_dir() {
        std::fs::create_dir(to).map_err(io_error("create", to))?;
        for entry in std::fs::read_dir(from).map_err(io_error("read", from))? {
            let path = entry.map_err(io_error("read", from))?.path();
            copy_tree(&path, &to.join(path.file_name().unwrap_or_default()))?;
        }
        std::fs::set_permissions(to, meta.permissions()).map_err(io_error("write", to))?;
    } else {
        std::fs::copy(from, to).map_err(io_error("write", to))?;
    }
    if !meta.file_type().is_symlink() {
        let _ = std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()));
    }
    Ok(())
}

/// Fills the client's volumes from the snapshot (each volume the manifest and the target share).
async fn restore_volumes<R: ContainerRuntime>(
    runtime: &R,
    fetched: &Fetched,
    plan: &BackupPlan,
    events: Events<'_>,
) -> Result<(), BackupError> {
    events(BackupEvent::Phase { phase: "volumes" });
    for entry in &fetched.manifest.volumes {
        let Some(volume) = plan.volumes.iter().find(|v| v.key == entry.key) else {
            continue;
        };
        let target = volume_dir(runtime, &volume.name).await?;
        let source = fetched.local(&entry.source_path);
        replace_folder(&source, &target)?;
        let (files, bytes) = count_files(&target)?;
        events(BackupEvent::VolumeRestored {
            volume: entry.key.clone(),
            files,
            bytes,
        });
    }
    Ok(())
}

/// Loads every dump of the manifest into the target's running database services.
async fn load_databases<R: ContainerRuntime>(
    runtime: &R,
    fetched: &Fetched,
    plan: &BackupPlan,
    events: Events<'_>,
) -> Result<(), BackupError> {
    events(BackupEvent::Phase { phase: "load" });
    let containers = running_containers(runtime, &plan.client_id).await?;
    for entry in &fetched.manifest.databases {
        let Some(dump) = plan
            .dumps
            .iter()
            .find(|d| d.service.name() == entry.service && d.database == entry.database)
        else {
            continue;
        };
        let container = container_of(&containers, &plan.client_id, dump.service)?;
        let path = fetched.staged(&entry.file);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(io_error("read", &path))?;
        let mut input = tokio::io::BufReader::new(file);
        let mut out: Vec<u8> = Vec::new();
        let outcome = runtime
            .exec_streaming(container, &dump.restore, Some(&mut input), &mut out)
            .await?;
        if !outcome.succeeded() {
            return Err(BackupError::LoadFailed {
                service: entry.service.clone(),
                database: entry.database.clone(),
                exit: outcome.exit_code.unwrap_or(-1),
                stderr: outcome.stderr,
            });
        }
        events(BackupEvent::Loaded {
            service: entry.service.clone(),
            database: entry.database.clone(),
        });
    }
    Ok(())
}

/// Replaces a deployed client's data with a fetched snapshot: its app services stopped
/// (databases keep running to take the dumps), volumes replaced, dumps loaded. Nothing is
/// started again here: the caller converges the stack afterwards, also when this failed, so
/// the client ends running in every case.
pub async fn restore_in_place<R: ContainerRuntime>(
    runtime: &R,
    fetched: &Fetched,
    plan: &BackupPlan,
    events: Events<'_>,
) -> Result<(), BackupError> {
    events(BackupEvent::Phase { phase: "stop" });
    let databases: Vec<ServiceKind> = plan.dumps.iter().map(|d| d.service).collect();
    let observed = runtime.observe(&plan.client_id).await?;
    for container in &observed.containers {
        let Some(kind) = container.service_kind() else {
            continue;
        };
        if databases.contains(&kind) || container.state != ContainerState::Running {
            continue;
        }
        runtime.stop_container(&container.id).await?;
    }
    restore_volumes(runtime, fetched, plan, events).await?;
    load_databases(runtime, fetched, plan, events).await
}

/// Converges the engine to `desired` (create what is missing, start, wait until healthy),
/// rolling back on failure: the one path every deploy takes.
pub async fn converge<R: ContainerRuntime>(
    runtime: &R,
    desired: &DesiredState,
    edge: Option<&EdgeRouter>,
    options: DeployOptions,
) -> Result<(), BackupError> {
    let quiet = |_event: lifecycle::Event| {};
    let deployment = Deployment::prepare(runtime, desired, edge, options).await?;
    if let Err(error) = deployment.run(&quiet).await {
        let _ = deployment.rollback(&quiet).await;
        return Err(error.into());
    }
    Ok(())
}

/// Builds a stack that does not exist yet from a fetched snapshot (a verify copy, a clone):
/// networks and volumes made, volumes filled before any app starts (an app's first start
/// would otherwise install itself over an empty folder), databases started and loaded, then
/// every service started and healthy.
pub async fn restore_into_new<R: ContainerRuntime>(
    runtime: &R,
    fetched: &Fetched,
    plan: &BackupPlan,
    desired: &DesiredState,
    edge: Option<&EdgeRouter>,
    options: DeployOptions,
    events: Events<'_>,
) -> Result<(), BackupError> {
    let quiet = |_event: lifecycle::Event| {};
    events(BackupEvent::Phase {
        phase: "infrastructure",
    });
    let deployment = Deployment::prepare(runtime, desired, edge, options.clone()).await?;
    deployment.check_images(&quiet).await?;
    deployment.infrastructure(&quiet).await?;
    restore_volumes(runtime, fetched, plan, events).await?;
    events(BackupEvent::Phase { phase: "databases" });
    let database_services: Vec<ServiceKind> = plan.dumps.iter().map(|d| d.service).collect();
    let mut databases_only = desired.clone();
    databases_only
        .containers
        .retain(|c| database_services.contains(&c.service));
    converge(runtime, &databases_only, edge, options.clone()).await?;
    load_databases(runtime, fetched, plan, events).await?;
    events(BackupEvent::Phase { phase: "services" });
    converge(runtime, desired, edge, options).await
}

/// What a restored stack holds: every database's exact rows and every volume's files, in the
/// manifest's terms, for [`core::compare`].
pub async fn inspect<R: ContainerRuntime>(
    runtime: &R,
    plan: &BackupPlan,
) -> Result<(Vec<DatabaseEntry>, Vec<VolumeEntry>), BackupError> {
    let containers = running_containers(runtime, &plan.client_id).await?;
    let mut databases = Vec::new();
    for dump in &plan.dumps {
        let container = container_of(&containers, &plan.client_id, dump.service)?;
        let tables = inventory(runtime, container, dump).await?;
        databases.push(DatabaseEntry {
            service: dump.service.name().to_string(),
            engine: dump.engine,
            database: dump.database.clone(),
            file: dump.file.clone(),
            bytes: 0,
            sha256: String::new(),
            tables,
        });
    }
    let mut volumes = Vec::new();
    for volume in &plan.volumes {
        let dir = volume_dir(runtime, &volume.name).await?;
        let (files, bytes) = count_files(&dir)?;
        volumes.push(VolumeEntry {
            key: volume.key.to_string(),
            files,
            bytes,
            source_path: dir.display().to_string(),
        });
    }
    Ok((databases, volumes))
}

/// Compares a restored stack with the manifest; an error listing every difference.
pub async fn check_against_manifest<R: ContainerRuntime>(
    runtime: &R,
    plan: &BackupPlan,
    manifest: &Manifest,
) -> Result<(), BackupError> {
    let (databases, volumes) = inspect(runtime, plan).await?;
    let mismatches = core::compare(manifest, &databases, &volumes);
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Mismatch { mismatches })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_folder_swaps_contents_and_keeps_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let target = dir.path().join("target");
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("sub/a.txt"), b"restored").unwrap();
        std::fs::create_dir_all(target.join("old")).unwrap();
        std::fs::write(target.join("old/b.txt"), b"stale").unwrap();
        replace_folder(&source, &target).unwrap();
        assert_eq!(
            std::fs::read(target.join("sub/a.txt")).unwrap(),
            b"restored"
        );
        assert!(!target.join("old").exists());
        assert_eq!(count_files(&target).unwrap(), (1, 8));
    }

    #[test]
    fn copy_tree_keeps_symlinks_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join("secret"), b"x").unwrap();
        std::fs::set_permissions(from.join("secret"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("secret", from.join("link")).unwrap();
        copy_tree(&from, &dir.path().join("to")).unwrap();
        let to = dir.path().join("to");
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            Path::new("secret")
        );
        let mode = std::fs::metadata(to.join("secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
