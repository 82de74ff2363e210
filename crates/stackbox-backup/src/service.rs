//! The parts of a backup that the CLI and the control plane share: the repository of a client
//! at the operator's destination, its key (sealed in the store), the sealed client inside each
//! snapshot, and one recorded backup with retention applied after it.

use std::path::Path;

use serde_json::json;
use stackbox_core::backup::{backup_plan, isolated_copy, Destination, Manifest};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::secrets::{SecretKey, Secrets};
use stackbox_core::stack::Stack;
use stackbox_engine::lifecycle::{self, DeployOptions};
use stackbox_engine::ContainerRuntime;
use stackbox_restic::{Location, Redacted, Repository, Retention};
use stackbox_store::{BackupReason, DeploymentId, MasterKey, Store, StoreError};

use crate::{BackupError, CreateRequest, Created, Events};

/// Errors of the shared service: the backup's own, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{field}: {problem}")]
    Settings {
        field: &'static str,
        problem: String,
    },
    #[error("the snapshot's sealed client does not open with this master key")]
    SealedClient,
}

/// The restic repository of one client at the operator's destination. S3 credentials come
/// from `STACKBOX_BACKUP_S3_ACCESS_KEY_ID`, `…_SECRET_ACCESS_KEY` and `…_REGION` (looked up
/// through `env`).
pub fn repository(
    operator: &OperatorConfig,
    data_dir: &Path,
    client: &ClientId,
    password: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Repository, ServiceError> {
    let location = match &operator.backup.destination {
        Destination::DataDir => Location::Local(data_dir.join("backups").join(client.as_str())),
        Destination::Folder(folder) => Location::Local(Path::new(folder).join(client.as_str())),
        Destination::S3 {
            endpoint,
            bucket,
            prefix,
        } => {
            let var = |name: &'static str| {
                env(name)
                    .filter(|v| !v.is_empty())
                    .ok_or(ServiceError::Settings {
                        field: "backup.destination",
                        problem: format!("is on S3: set {name} in the environment"),
                    })
            };
            let prefix = if prefix.is_empty() {
                client.to_string()
            } else {
                format!("{prefix}/{client}")
            };
            Location::S3 {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                prefix,
                region: env("STACKBOX_BACKUP_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                access_key_id: var("STACKBOX_BACKUP_S3_ACCESS_KEY_ID")?,
                secret_access_key: Redacted::new(var("STACKBOX_BACKUP_S3_SECRET_ACCESS_KEY")?),
            }
        }
    };
    Ok(Repository::new(
        location,
        Redacted::new(password),
        data_dir.join("restic-cache"),
    ))
}

/// The client's repository key: the one sealed in the store, else derived from the master key
/// and the client id (and then sealed in the store). Derived, so that a control plane that lost
/// its store but kept its master key still opens every repository: losing the master key is
/// the only way to lose access.
pub async fn repository_key(
    store: &Store,
    key: &MasterKey,
    client: &ClientId,
) -> Result<String, ServiceError> {
    if let Some(existing) = store.backup_key(client, key).await? {
        return Ok(existing.to_string());
    }
    let derived = derive_repository_key(key, client);
    Ok(store
        .put_backup_key_if_absent(client, &derived, key)
        .await?
        .to_string())
}

/// SHA-256 over a label, the master key and the client id, as hex.
pub fn derive_repository_key(key: &MasterKey, client: &ClientId) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"stackbox restic repository key v1\0");
    hasher.update(key.to_base64().as_bytes());
    hasher.update(b"\0");
    hasher.update(client.as_str().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sealed_client_context(client: &ClientId) -> Vec<u8> {
    format!("stackbox-backup-client:{client}").into_bytes()
}

/// The client's spec and secrets, sealed with the master key, for a restore on a control plane
/// that has the key but not this client's records.
pub fn seal_client(
    key: &MasterKey,
    client: &ClientId,
    spec: &ClientSpec,
    secrets: &Secrets,
) -> Result<Vec<u8>, ServiceError> {
    let secrets: serde_json::Map<String, serde_json::Value> = secrets
        .iter()
        .map(|(k, v)| (k.env_name().to_string(), json!(v)))
        .collect();
    let body = json!({ "spec": spec.to_toml(client), "secrets": secrets });
    Ok(key.seal(body.to_string().as_bytes(), &sealed_client_context(client))?)
}

/// Opens a sealed client.
pub fn open_client(
    key: &MasterKey,
    client: &ClientId,
    sealed: &[u8],
) -> Result<(ClientSpec, Secrets), ServiceError> {
    let plain = key
        .open(sealed, &sealed_client_context(client))
        .map_err(|_| ServiceError::SealedClient)?;
    let body: serde_json::Value =
        serde_json::from_slice(&plain).map_err(|_| ServiceError::SealedClient)?;
    let spec = ClientSpec::from_toml(body["spec"].as_str().unwrap_or_default())
        .map_err(BackupError::from)?;
    let mut secrets = Secrets::new();
    if let Some(map) = body["secrets"].as_object() {
        for key in SecretKey::ALL {
            if let Some(value) = map.get(key.env_name()).and_then(|v| v.as_str()) {
                secrets.insert(key, value.to_string());
            }
        }
    }
    Ok((spec, secrets))
}

/// A client to back up, as its caller knows it.
pub struct BackupSubject<'a> {
    pub id: &'a ClientId,
    pub spec: &'a ClientSpec,
    pub secrets: &'a Secrets,
    pub stack: &'a Stack,
}

/// Where the shared service keeps its state.
pub struct BackupContext<'a> {
    pub store: &'a Store,
    pub key: &'a MasterKey,
    pub operator: &'a OperatorConfig,
    pub data_dir: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// RFC 3339, the caller's clock.
    pub now: String,
}

/// One backup, recorded in the store (running → succeeded only after upload and check, or
/// failed with its error); the retention policy is applied after a success.
pub async fn run_backup<R: ContainerRuntime>(
    context: &BackupContext<'_>,
    runtime: &R,
    subject: &BackupSubject<'_>,
    reason: BackupReason,
    deployment: Option<&DeploymentId>,
    events: Events<'_>,
) -> Result<Created, ServiceError> {
    let store = context.store;
    let client = subject.id;
    // A run a crash interrupted is over: its row says so before the new one starts.
    store
        .fail_running_backups_of_client(
            client,
            "interrupted: the control plane stopped during this backup",
        )
        .await?;
    let plan = backup_plan(subject.stack);
    let password = repository_key(store, context.key, client).await?;
    let repo = repository(
        context.operator,
        context.data_dir,
        client,
        password,
        context.env,
    )?;
    let record = store.start_backup(client, deployment, reason).await?;
    let header = Manifest {
        format: stackbox_core::backup::MANIFEST_FORMAT,
        client_id: client.to_string(),
        domain: subject.spec.domain.to_string(),
        plan: subject.spec.plan.key().to_string(),
        created_at: context.now.clone(),
        stackbox_version: env!("CARGO_PKG_VERSION").to_string(),
        staging_path: String::new(),
        databases: Vec::new(),
        volumes: Vec::new(),
        images: Default::default(),
    };
    let sealed = seal_client(context.key, client, subject.spec, subject.secrets)?;
    let staging = context
        .data_dir
        .join("backup-staging")
        .join(client.as_str());
    let request = CreateRequest {
        plan: &plan,
        header,
        sealed_client: &sealed,
        tags: vec![
            "stackbox".to_string(),
            format!("client:{client}"),
            format!("reason:{}", reason.as_str()),
        ],
        staging: &staging,
    };
    match crate::create(runtime, &repo, request, events).await {
        Ok(created) => {
            let manifest = serde_json::to_value(&created.manifest).unwrap_or_default();
            store
                .finish_backup(
                    &record.id,
                    &created.snapshot_id,
                    &manifest,
                    created.summary.data_added,
                    created.summary.total_bytes_processed,
                    created.summary.total_files_processed,
                )
                .await?;
            apply_retention(context, &repo, client).await?;
            Ok(created)
        }
        Err(error) => {
            store.fail_backup(&record.id, &error.to_string()).await?;
            Err(error.into())
        }
    }
}

/// Forgets what the operator's retention policy does not keep, in the repository and the store.
pub async fn apply_retention(
    context: &BackupContext<'_>,
    repo: &Repository,
    client: &ClientId,
) -> Result<(), ServiceError> {
    let policy = context.operator.backup.retention;
    let outcome = repo
        .apply_retention(
            &Retention {
                keep_last: policy.keep_last,
                keep_daily: policy.keep_daily,
                keep_weekly: policy.keep_weekly,
                keep_monthly: policy.keep_monthly,
            },
            Some(&format!("client:{client}")),
        )
        .await
        .map_err(BackupError::from)?;
    for snapshot in &outcome.removed {
        if let Some(record) = context.store.backup_by_snapshot(client, snapshot).await? {
            context.store.mark_backup_forgotten(&record.id).await?;
        }
    }
    Ok(())
}

/// What a verified restore needs: the client as its caller renders it, the snapshot, and
/// where the throwaway copy goes.
pub struct VerifyRequest<'a> {
    pub client: &'a ClientId,
    pub stack: &'a Stack,
    pub secrets: &'a Secrets,
    /// The client's bundle and its folder: the copy mounts the client's own read-only
    /// configuration files and init scripts (the caller keeps them from changing meanwhile).
    pub bundle: &'a stackbox_core::render::Bundle,
    pub bundle_dir: &'a Path,
    pub snapshot: &'a str,
    /// The copy's id; a copy left by an interrupted verify of the same id is removed first.
    pub copy_id: &'a ClientId,
    /// Where the snapshot is fetched to (removed afterwards).
    pub scratch: &'a Path,
    pub options: DeployOptions,
}

/// A verified restore, whole: every byte of the repository read (`check --read-data`), the
/// snapshot restored into a throwaway isolated copy, healthy, compared with its manifest; the
/// copy and the scratch folder removed whatever happened, and the result recorded on the
/// backup's row.
pub async fn verify_backup<R: ContainerRuntime>(
    store: &Store,
    runtime: &R,
    repo: &Repository,
    request: VerifyRequest<'_>,
    events: Events<'_>,
) -> Result<(), ServiceError> {
    let copy_id = request.copy_id;
    let _ = lifecycle::cleanup(runtime, copy_id, None, true, &|_| {}).await;
    let outcome = async {
        events(crate::BackupEvent::Phase { phase: "check" });
        repo.check(true).await?;
        let fetched = crate::fetch(
            repo,
            request.snapshot,
            request.client,
            request.scratch,
            events,
        )
        .await?;
        let copy = isolated_copy(request.stack, copy_id);
        let plan = backup_plan(&copy);
        let desired = stackbox_core::deploy::desired_state(
            &copy,
            request.secrets,
            request.bundle,
            &request.bundle_dir.display().to_string(),
            &|name| std::env::var(name).ok(),
        )?;
        crate::restore_into_new(
            runtime,
            &fetched,
            &plan,
            &desired,
            None,
            request.options.clone(),
            events,
        )
        .await?;
        crate::check_against_manifest(runtime, &plan, &fetched.manifest).await
    }
    .await;
    let _ = std::fs::remove_dir_all(request.scratch);
    let removed = lifecycle::cleanup(runtime, copy_id, None, true, &|_| {}).await;
    if let Some(record) = store
        .backup_by_snapshot(request.client, request.snapshot)
        .await?
    {
        let error = outcome.as_ref().err().map(ToString::to_string);
        store
            .record_verification(&record.id, outcome.is_ok(), error.as_deref())
            .await?;
    }
    outcome?;
    removed.map_err(BackupError::from)?;
    Ok(())
}

/// Deletes every snapshot of a client (the repository's data pruned) and marks its backup
/// rows forgotten; returns how many snapshots there were. A repository never made is empty.
pub async fn delete_backups(
    store: &Store,
    repo: &Repository,
    client: &ClientId,
) -> Result<usize, ServiceError> {
    let snapshots = match repo.snapshots(None).await {
        Ok(snapshots) => snapshots,
        Err(stackbox_restic::ResticError::RepositoryMissing { .. }) => Vec::new(),
        Err(e) => return Err(BackupError::from(e).into()),
    };
    let ids: Vec<String> = snapshots.into_iter().map(|s| s.id).collect();
    if !ids.is_empty() {
        repo.forget(&ids).await.map_err(BackupError::from)?;
    }
    for record in store.backups_of_client(client, 10_000).await? {
        store.mark_backup_forgotten(&record.id).await?;
    }
    Ok(ids.len())
}
