//! Backups in the pipeline: the `backup`, `safety-backup`, `restore`, `verify`, `clone` and a
//! destroy's `final-backup` steps, the requests that journal them, and the schedule the control
//! plane keeps (a backup per period, a verified restore per verify period, forgetting a
//! destroyed client's backups when its retention ends).
//!
//! Every step is a convergence or a new snapshot: re-entered after a crash it finishes its
//! effect (an interrupted backup's row is marked failed and a new one is taken; an interrupted
//! restore replaces the data again; a verify copy has a name derived from its deployment, so a
//! resumed verify removes the copy its first attempt left).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use stackbox_backup::{self as backup, BackupContext, BackupSubject};
use stackbox_bundle::OsRandom;
use stackbox_core::backup::backup_plan;
use stackbox_core::client::{ClientId, Domain};
use stackbox_core::infra::{effective_provider, ProviderKind};
use stackbox_core::secrets::SecretKey;
use stackbox_engine::lifecycle::DeployOptions;
use stackbox_store::{
    BackupReason, ClientFilter, ClientState, Deployment, DeploymentKind, Timestamp,
};

use crate::steps::{steps_for, StepOutput};
use crate::{names, Control, ControlError, StepContext};

/// Now, RFC 3339 in UTC, for a manifest.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    stackbox_core::calendar::rfc3339_seconds(t.unix_millis().div_euclid(1000))
}

fn host_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn step_error(step: &str) -> impl Fn(String) -> ControlError + '_ {
    move |problem| ControlError::Step {
        step: step.to_string(),
        problem,
    }
}

/// What a restore, verify or clone was asked for, journaled in the deployment's parameters.
fn param(deployment: &Deployment, key: &str) -> Option<String> {
    deployment
        .params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(|v| v.as_str())
        .map(String::from)
}

impl Control {
    fn backup_context(&self) -> BackupContext<'_> {
        BackupContext {
            store: &self.inner.store,
            key: &self.inner.key,
            operator: &self.inner.config.operator,
            data_dir: &self.inner.config.data_dir,
            env: &host_env,
            now: rfc3339(Timestamp::now()),
        }
    }

    /// Progress of a running step, published on the deployment's event stream (SSE).
    fn progress<'a>(
        &'a self,
        deployment: &'a Deployment,
        step: &'static str,
    ) -> impl Fn(backup::BackupEvent) + 'a {
        move |event| {
            self.publish(crate::StepUpdate {
                deployment_id: deployment.id.as_str().to_string(),
                step: step.to_string(),
                status: "running",
                error: None,
                finished: false,
                progress: serde_json::to_value(&event).ok(),
            })
        }
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.inner.config.data_dir.join("backup-scratch").join(name)
    }

    async fn repository_of(
        &self,
        client: &ClientId,
    ) -> Result<stackbox_restic::Repository, ControlError> {
        let step = step_error("backup");
        let password = backup::repository_key(&self.inner.store, &self.inner.key, client)
            .await
            .map_err(|e| step(e.to_string()))?;
        backup::repository(
            &self.inner.config.operator,
            &self.inner.config.data_dir,
            client,
            password,
            &host_env,
        )
        .map_err(|e| step(e.to_string()))
    }

    /// Journals a backup of a client (`reason` manual or scheduled).
    pub async fn request_backup(
        &self,
        client: &ClientId,
        reason: BackupReason,
    ) -> Result<Deployment, ControlError> {
        let record = self.client_record(client).await?;
        if effective_provider(&record.spec()?, &self.inner.config.operator) == ProviderKind::Aws {
            return Err(ControlError::Invalid {
                field: "client".into(),
                problem: "this client is on the aws provider: its MySQL databases are backed up \
                          by RDS (automated backups, snapshots); StackBox backups cover clients \
                          on the engine's host"
                    .into(),
            });
        }
        let params = json!({ "reason": reason.as_str() });
        let deployment = self
            .inner
            .store
            .create_deployment_with_params(
                client,
                DeploymentKind::Backup,
                &names(steps_for(DeploymentKind::Backup, ProviderKind::Local)),
                Some(&params),
            )
            .await?;
        self.enqueue(&deployment.id)?;
        Ok(deployment)
    }

    /// The snapshot id meant by `given` (`latest`, a full id or a prefix of 8 or more).
    pub async fn resolve_snapshot(
        &self,
        client: &ClientId,
        given: &str,
    ) -> Result<String, ControlError> {
        let store = &self.inner.store;
        let record = if given == "latest" {
            store.latest_succeeded_backup(client).await?
        } else {
            store.backup_by_snapshot(client, given).await?
        };
        record
            .filter(|r| r.status == stackbox_store::BackupStatus::Succeeded)
            .and_then(|r| r.snapshot_id)
            .ok_or_else(|| ControlError::Invalid {
                field: "snapshot".into(),
                problem: format!(
                    "client {client} has no successful backup {given:?}; GET \
                     /v1/clients/{client}/backups lists them"
                ),
            })
    }

    /// Journals a restore (`restore`) or a verify (`verify`) of one snapshot.
    pub async fn request_snapshot_action(
        &self,
        client: &ClientId,
        kind: DeploymentKind,
        snapshot: &str,
    ) -> Result<Deployment, ControlError> {
        self.client_record(client).await?;
        let snapshot = self.resolve_snapshot(client, snapshot).await?;
        let params = json!({ "snapshot": snapshot });
        let deployment = self
            .inner
            .store
            .create_deployment_with_params(
                client,
                kind,
                &names(steps_for(kind, ProviderKind::Local)),
                Some(&params),
            )
            .await?;
        self.enqueue(&deployment.id)?;
        Ok(deployment)
    }

    async fn client_record(
        &self,
        client: &ClientId,
    ) -> Result<stackbox_store::ClientRecord, ControlError> {
        self.inner
            .store
            .client(client)
            .await?
            .ok_or_else(|| ControlError::UnknownClient {
                client: client.clone(),
            })
    }

    /// A new client from another's snapshot: stored with the source's spec under a new id and
    /// domain, the secrets tied to the data kept and the others new, and its `clone`
    /// deployment journaled. Returns the new client's id and deployment.
    pub async fn clone_client(
        &self,
        source: &ClientId,
        domain: Domain,
        snapshot: Option<&str>,
    ) -> Result<(ClientId, Deployment), ControlError> {
        let store = &self.inner.store;
        let record = self.client_record(source).await?;
        self.domain_free(&domain, None).await?;
        let snapshot = self
            .resolve_snapshot(source, snapshot.unwrap_or("latest"))
            .await?;
        let mut spec = record.spec()?;
        spec.domain = domain;
        let mut bytes = [0u8; 4];
        stackbox_core::secrets::RandomSource::fill(&mut OsRandom, &mut bytes);
        let id = ClientId::new(&spec.company_name, u32::from_be_bytes(bytes));
        spec.client_id = Some(id.clone());
        let source_secrets = store
            .get_secrets(source, &self.inner.key)
            .await?
            .unwrap_or_default();
        let secrets = stackbox_core::backup::clone_secrets(
            &source_secrets,
            &SecretKey::needed_for(&spec.apps()),
            &mut OsRandom,
        );
        store
            .insert_client(&id, &spec, ClientState::Provisioning)
            .await?;
        store.put_secrets(&id, &secrets, &self.inner.key).await?;
        let params = json!({ "source": source.as_str(), "snapshot": snapshot });
        let deployment = store
            .create_deployment_with_params(
                &id,
                DeploymentKind::Clone,
                &names(steps_for(DeploymentKind::Clone, ProviderKind::Local)),
                Some(&params),
            )
            .await?;
        self.enqueue(&deployment.id)?;
        Ok((id, deployment))
    }

    /// One backup of the client, as the deployment's step.
    pub(crate) async fn backup_step(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
        default_reason: BackupReason,
    ) -> Result<StepOutput, ControlError> {
        let reason = param(deployment, "reason")
            .and_then(|r| BackupReason::from_name(&r))
            .unwrap_or(default_reason);
        let step = match default_reason {
            BackupReason::Safety => "safety-backup",
            BackupReason::PreDestroy => "final-backup",
            BackupReason::Manual | BackupReason::Scheduled => "backup",
        };
        let id = &deployment.client_id;
        let docker = context.docker().await?;
        let rendered = self.render_for(id, context)?;
        let subject = BackupSubject {
            id,
            spec: &context.spec,
            secrets: &context.secrets,
            stack: &rendered.stack,
        };
        let created = backup::run_backup(
            &self.backup_context(),
            &docker,
            &subject,
            reason,
            Some(&deployment.id),
            &self.progress(deployment, step),
        )
        .await
        .map_err(|e| step_error("backup")(e.to_string()))?;
        Ok(StepOutput::BackedUp {
            snapshot: created.snapshot_id,
            bytes_added: created.summary.data_added,
            files: created.summary.total_files_processed,
            databases: created.manifest.databases.len(),
            rows: created.manifest.total_rows(),
        })
    }

    /// A restore's first step: the stack running (dumps load into running databases), then a
    /// backup of the data as it is, so that the restore can be undone.
    pub(crate) async fn safety_backup_step(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<StepOutput, ControlError> {
        self.converge(&deployment.client_id, context).await?;
        self.backup_step(deployment, context, BackupReason::Safety)
            .await
    }

    async fn converge(&self, id: &ClientId, context: &mut StepContext) -> Result<(), ControlError> {
        let docker = context.docker().await?;
        let desired = self.desired(id, context)?;
        let edge = self
            .inner
            .bundles
            .edge_router(&self.inner.config.operator)?;
        backup::converge(
            &docker,
            &desired,
            edge.as_ref(),
            DeployOptions {
                health_timeout: self.inner.config.health_timeout,
            },
        )
        .await
        .map_err(|e| step_error("restore")(e.to_string()))
    }

    /// The snapshot's data put back: app services stopped, volumes replaced, dumps loaded.
    /// The steps after it converge the stack; a failure here converges it first, so the
    /// client is running again whatever happened.
    pub(crate) async fn restore_step(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<StepOutput, ControlError> {
        let snapshot = param(deployment, "snapshot")
            .ok_or_else(|| step_error("restore")("the deployment names no snapshot".into()))?;
        self.restore_snapshot_in_place(deployment, context, &snapshot)
            .await
            .map(|snapshot| StepOutput::Restored { snapshot })
    }

    /// Converges the client's stack as the context describes it.
    pub(crate) async fn converge_context(
        &self,
        id: &ClientId,
        context: &mut StepContext,
    ) -> Result<(), ControlError> {
        self.converge(id, context).await
    }

    /// One snapshot's data put back into the running client (see [`Self::restore_step`]);
    /// on failure the stack is converged again before the error is returned.
    pub(crate) async fn restore_snapshot_in_place(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
        snapshot: &str,
    ) -> Result<String, ControlError> {
        let id = &deployment.client_id;
        let snapshot = snapshot.to_string();
        let docker = context.docker().await?;
        let repo = self.repository_of(id).await?;
        let rendered = self.render_for(id, context)?;
        let plan = backup_plan(&rendered.stack);
        let scratch = self.scratch(id.as_str());
        let restored = async {
            let fetched = backup::fetch(
                &repo,
                &snapshot,
                id,
                &scratch,
                &self.progress(deployment, "restore"),
            )
            .await?;
            backup::restore_in_place(
                &docker,
                &fetched,
                &plan,
                &self.progress(deployment, "restore"),
            )
            .await?;
            Ok::<_, backup::BackupError>(fetched.snapshot)
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        match restored {
            Ok(snapshot) => Ok(snapshot),
            Err(error) => {
                let _ = self.converge(id, context).await;
                Err(step_error("restore")(format!(
                    "{error}; the client's services were started again, and the data before \
                     the restore is in its safety backup"
                )))
            }
        }
    }

    /// A verified restore: every byte of the repository read, the snapshot restored into a
    /// throwaway isolated copy, healthy, compared with its manifest, removed; the result kept
    /// on the backup's record.
    pub(crate) async fn verify_step(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<StepOutput, ControlError> {
        let started = Instant::now();
        let id = &deployment.client_id;
        let snapshot = param(deployment, "snapshot")
            .ok_or_else(|| step_error("verify")("the deployment names no snapshot".into()))?;
        let docker = context.docker().await?;
        let repo = self.repository_of(id).await?;
        // Named after the deployment: a resumed verify finds the copy its first run left.
        let suffix: String = deployment
            .id
            .as_str()
            .chars()
            .rev()
            .filter(|c| c.is_ascii_hexdigit())
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        let copy_id = ClientId::parse(&format!("verify-{suffix:0>8}"))?;
        let rendered = self.render_for(id, context)?;
        let bundle_dir = std::path::absolute(self.inner.bundles.client_dir(id))
            .map_err(|e| step_error("verify")(e.to_string()))?;
        let scratch = self.scratch(copy_id.as_str());
        backup::verify_backup(
            &self.inner.store,
            &docker,
            &repo,
            backup::VerifyRequest {
                client: id,
                stack: &rendered.stack,
                secrets: &context.secrets,
                bundle: &rendered.bundle,
                bundle_dir: &bundle_dir,
                snapshot: &snapshot,
                copy_id: &copy_id,
                scratch: &scratch,
                options: DeployOptions {
                    health_timeout: self.inner.config.health_timeout,
                },
            },
            &self.progress(deployment, "verify"),
        )
        .await
        .map_err(|e| step_error("verify")(e.to_string()))?;
        Ok(StepOutput::Verified {
            snapshot,
            copy: copy_id.to_string(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// A clone's stack, built from the source client's snapshot.
    pub(crate) async fn clone_step(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<StepOutput, ControlError> {
        let id = &deployment.client_id;
        let fail = step_error("clone");
        let source = param(deployment, "source")
            .ok_or_else(|| fail("the deployment names no source client".into()))?;
        let source = ClientId::parse(&source)?;
        let snapshot = param(deployment, "snapshot")
            .ok_or_else(|| fail("the deployment names no snapshot".into()))?;
        let docker = context.docker().await?;
        let repo = self.repository_of(&source).await?;
        let rendered = self.render_for(id, context)?;
        let plan = backup_plan(&rendered.stack);
        let desired = self.desired(id, context)?;
        let edge = self
            .inner
            .bundles
            .edge_router(&self.inner.config.operator)?;
        let scratch = self.scratch(id.as_str());
        let outcome = async {
            let fetched = backup::fetch(
                &repo,
                &snapshot,
                &source,
                &scratch,
                &self.progress(deployment, "clone"),
            )
            .await?;
            backup::restore_into_new(
                &docker,
                &fetched,
                &plan,
                &desired,
                edge.as_ref(),
                DeployOptions {
                    health_timeout: self.inner.config.health_timeout,
                },
                &self.progress(deployment, "clone"),
            )
            .await?;
            Ok::<_, backup::BackupError>(fetched.snapshot)
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        let snapshot = outcome.map_err(|e| fail(e.to_string()))?;
        Ok(StepOutput::Restored { snapshot })
    }

    /// A destroy's first step. A client with backups keeps them for the operator's retention
    /// after a destroy, with a last one taken now when its databases run (a stopped or broken
    /// client keeps its earlier ones); `delete_backups` (or a retention of 0 days) deletes its
    /// repository instead.
    pub(crate) async fn final_backup(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<StepOutput, ControlError> {
        let id = &deployment.client_id;
        let store = &self.inner.store;
        let days = self.inner.config.operator.backup.keep_after_destroy_days;
        let delete = days == 0
            || deployment
                .params
                .as_ref()
                .and_then(|p| p.get("delete_backups"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
        if delete {
            self.delete_repository(id).await?;
            return Ok(StepOutput::Skipped {
                skipped: "the client's backups were deleted with it".into(),
            });
        }
        if store.latest_succeeded_backup(id).await?.is_none() {
            return Ok(StepOutput::Skipped {
                skipped: "the client has no backups to keep".into(),
            });
        }
        let note = if self.databases_running(id, context).await {
            match self
                .backup_step(deployment, context, BackupReason::PreDestroy)
                .await
            {
                Ok(_) => "kept, with a last backup taken now".to_string(),
                Err(error) => format!("kept, without a last backup ({error})"),
            }
        } else {
            "kept, without a last backup (the client's databases were not running)".to_string()
        };
        let until = Timestamp::now().plus(Duration::from_secs(u64::from(days) * 86_400));
        store
            .retain_client(id, &context.spec.domain, &context.spec.to_toml(id), until)
            .await?;
        Ok(StepOutput::Skipped {
            skipped: format!("{note} until {}", rfc3339(until)),
        })
    }

    async fn databases_running(&self, id: &ClientId, context: &mut StepContext) -> bool {
        let Ok(docker) = context.docker().await else {
            return false;
        };
        let Ok(observed) = stackbox_engine::ContainerRuntime::observe(&docker, id).await else {
            return false;
        };
        let Ok(rendered) = self.render_for(id, context) else {
            return false;
        };
        let plan = backup_plan(&rendered.stack);
        plan.dumps.iter().all(|dump| {
            observed.containers.iter().any(|c| {
                c.service_kind() == Some(dump.service)
                    && c.state == stackbox_core::deploy::ContainerState::Running
            })
        })
    }

    /// Forgets every snapshot of a client and its records (the repository's data is pruned).
    async fn delete_repository(&self, id: &ClientId) -> Result<(), ControlError> {
        let repo = self.repository_of(id).await?;
        backup::delete_backups(&self.inner.store, &repo, id)
            .await
            .map(|_| ())
            .map_err(|e| step_error("final-backup")(e.to_string()))
    }

    /// One pass of the schedule: backups and verifies that are due, destroyed clients whose
    /// retention ended. Returns how many deployments it journaled.
    pub async fn backup_schedule_pass(&self) -> Result<usize, ControlError> {
        let store = &self.inner.store;
        let settings = &self.inner.config.operator.backup;
        let now = Timestamp::now();
        let now_s = now.unix_millis() / 1000;
        let last: std::collections::HashMap<ClientId, i64> = store
            .last_succeeded_backup_times()
            .await?
            .into_iter()
            .map(|(id, at)| (id, at.unix_millis() / 1000))
            .collect();
        let mut candidates = Vec::new();
        let mut after = None;
        loop {
            let filter = ClientFilter {
                state: Some(ClientState::Running),
                plan: None,
            };
            let page = store.list_clients(filter, after.as_ref(), 500).await?;
            for client in &page.clients {
                let Ok(spec) = client.spec() else { continue };
                if effective_provider(&spec, &self.inner.config.operator) == ProviderKind::Aws {
                    continue;
                }
                let last_verified = match last.get(&client.id) {
                    Some(_) => store
                        .last_verification(&client.id)
                        .await?
                        .and_then(|r| r.verified_at)
                        .map(|t| t.unix_millis() / 1000),
                    None => None,
                };
                candidates.push(stackbox_core::backup::ScheduledClient {
                    id: client.id.clone(),
                    created_at: client.created_at.unix_millis() / 1000,
                    last_success: last.get(&client.id).copied(),
                    last_verified,
                    busy: self.busy(&client.id).await?,
                });
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let limit = self.inner.config.max_parallel.max(1);
        let mut journaled = 0;
        for action in stackbox_core::backup::schedule(&candidates, now_s, settings, limit) {
            let requested = match &action {
                stackbox_core::backup::ScheduledAction::Backup(id) => self
                    .request_backup(id, BackupReason::Scheduled)
                    .await
                    .map(|_| ()),
                stackbox_core::backup::ScheduledAction::Verify(id) => self
                    .request_snapshot_action(id, DeploymentKind::Verify, "latest")
                    .await
                    .map(|_| ()),
            };
            match requested {
                Ok(()) => journaled += 1,
                Err(error) => tracing::warn!(%error, ?action, "scheduled backup not journaled"),
            }
        }
        for retained in store.retained_clients_due(now).await? {
            if store.client(&retained.client_id).await?.is_some() {
                continue; // came back: its backups are its own again
            }
            if self.delete_repository(&retained.client_id).await.is_ok() {
                store.forget_retained_client(&retained.client_id).await?;
            }
        }
        Ok(journaled)
    }
}

/// The schedule, every tick.
pub(crate) async fn run(control: Control) {
    let tick = control.inner.config.backup_tick.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if let Err(error) = control.backup_schedule_pass().await {
            tracing::warn!(%error, "backup schedule pass failed");
        }
    }
}
