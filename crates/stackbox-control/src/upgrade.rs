//! Upgrades through the pipeline: a redeploy journaled with an `upgrade` parameter and its own
//! steps, `safety-backup` first, then the deploy path on the new release's images.
//!
//! The request checks the move against the core's upgrade graph (422 naming `to`, with the
//! releases to go through). The `render` step records the new release in the store (once: a
//! resumed step finds it recorded). When a step fails, the compensation records the previous
//! release again, converges the client on its images, and, when a service that keeps data ran
//! the new release's image (it may have migrated the data), restores the safety backup into
//! it; the deployment then ends `compensated` with the client running as before.

use serde_json::json;
use stackbox_core::client::ClientId;
use stackbox_core::release::{plan_move, BASE_RELEASE};
use stackbox_core::stack::Mount;
use stackbox_store::{ClientState, Deployment, DeploymentKind};

use crate::steps::Step;
use crate::{field_error, names, Control, ControlError, StepContext};

/// The parameter of an upgrading redeploy.
pub(crate) const UPGRADE_PARAM: &str = "upgrade";

/// The steps of an upgrade (local provider only).
const UPGRADE_STEPS: [Step; 5] = [
    Step::SafetyBackup,
    Step::Render,
    Step::Infrastructure,
    Step::Containers,
    Step::Health,
];

/// What an upgrading redeploy carries.
pub(crate) struct Upgrade {
    pub from: String,
    pub to: String,
}

impl Upgrade {
    pub(crate) fn of(deployment: &Deployment) -> Option<Upgrade> {
        if deployment.kind != DeploymentKind::Redeploy {
            return None;
        }
        let param = deployment.params.as_ref()?.get(UPGRADE_PARAM)?;
        Some(Upgrade {
            from: param.get("from")?.as_str()?.to_string(),
            to: param.get("to")?.as_str()?.to_string(),
        })
    }
}

/// The first `snapshot` in a step's recorded output.
fn snapshot_in(output: &serde_json::Value) -> Option<String> {
    match output {
        serde_json::Value::Object(map) => map
            .get("snapshot")
            .and_then(|s| s.as_str().map(String::from))
            .or_else(|| map.values().find_map(snapshot_in)),
        _ => None,
    }
}

impl Control {
    /// Queues an upgrade of a client to another release; `Invalid` naming `to` when the move
    /// is not allowed (the message names the releases to go through).
    pub async fn request_upgrade(
        &self,
        client: &ClientId,
        to: &str,
        mut params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Deployment, ControlError> {
        let store = &self.inner.store;
        let operator = &self.inner.config.operator;
        let Some(record) = store.client(client).await? else {
            return Err(ControlError::UnknownClient {
                client: client.clone(),
            });
        };
        let spec = record.spec()?;
        if stackbox_core::infra::effective_provider(&spec, operator)
            == stackbox_core::infra::ProviderKind::Aws
        {
            return Err(ControlError::Invalid {
                field: "infrastructure".into(),
                problem: "upgrades of clients on the aws provider are not built yet (their \
                          MySQL is on RDS, outside the backup an upgrade stands on)"
                    .into(),
            });
        }
        let from = spec
            .release
            .clone()
            .unwrap_or_else(|| BASE_RELEASE.to_string());
        let change =
            plan_move(&operator.images, &operator.releases, &from, to).map_err(field_error)?;
        if from == to || change.images.is_empty() {
            return Err(ControlError::Invalid {
                field: "to".into(),
                problem: format!("client {client} already runs release {from}"),
            });
        }
        params.insert(UPGRADE_PARAM.into(), json!({ "from": from, "to": to }));
        let deployment = store
            .create_deployment_with_params(
                client,
                DeploymentKind::Redeploy,
                &names(&UPGRADE_STEPS),
                Some(&serde_json::Value::Object(params)),
            )
            .await?;
        self.enqueue(&deployment.id)?;
        Ok(deployment)
    }

    /// The `render` step's first half for an upgrade: the new release recorded.
    pub(crate) async fn apply_upgrade(
        &self,
        upgrade: &Upgrade,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<(), ControlError> {
        if context.spec.release.as_deref() == Some(upgrade.to.as_str()) {
            return Ok(());
        }
        context.spec.release = Some(upgrade.to.clone());
        self.inner
            .store
            .update_client_spec(&deployment.client_id, &context.spec)
            .await?;
        Ok(())
    }

    /// The compensation of a failed upgrade. True when the client is back on its release
    /// (and its data, when it may have been migrated) and running.
    pub(crate) async fn undo_upgrade(
        &self,
        upgrade: &Upgrade,
        deployment: &Deployment,
        context: &StepContext,
    ) -> bool {
        let id = &deployment.client_id;
        let mut old = context.clone();
        old.spec.release = Some(upgrade.from.clone());
        let mut new = context.clone();
        new.spec.release = Some(upgrade.to.clone());
        let undone: Result<(), ControlError> = async {
            self.inner.store.update_client_spec(id, &old.spec).await?;
            let before = self.render_for(id, &old)?;
            let after = self.render_for(id, &new)?;
            self.inner.bundles.write_bundle(id, &before.bundle)?;
            // A service that keeps data and ran the new image may have migrated it.
            let touched = after.stack.services.iter().any(|service| {
                service
                    .mounts
                    .iter()
                    .any(|m| matches!(m, Mount::Volume { .. }))
                    && before
                        .stack
                        .service(service.kind)
                        .is_some_and(|old| old.image != service.image)
            });
            // Where the containers step got to: if it never started, nothing ran the new images.
            let journal = self
                .inner
                .store
                .deployment(&deployment.id)
                .await?
                .unwrap_or_else(|| deployment.clone());
            let reached_containers = journal.steps.iter().any(|step| {
                step.name == Step::Containers.name()
                    && step.status != stackbox_store::StepStatus::Pending
            });
            self.converge_context(id, &mut old).await?;
            if touched && reached_containers {
                let snapshot = journal
                    .steps
                    .iter()
                    .find(|step| step.name == Step::SafetyBackup.name())
                    .and_then(|step| step.output.as_ref())
                    .and_then(snapshot_in)
                    .ok_or_else(|| ControlError::Step {
                        step: "upgrade".into(),
                        problem: "the upgrade's safety backup recorded no snapshot".into(),
                    })?;
                self.restore_snapshot_in_place(deployment, &mut old, &snapshot)
                    .await?;
                self.converge_context(id, &mut old).await?;
            }
            let docker = old.docker().await?;
            let expected = stackbox_core::stack::service_names_placed(&old.spec, &old.placement);
            let status = stackbox_engine::lifecycle::status(&docker, id, &expected).await?;
            self.inner
                .store
                .set_client_state(
                    id,
                    ClientState::from(status.state),
                    Some(&format!(
                        "the upgrade to release {} failed; it runs release {} again",
                        upgrade.to, upgrade.from
                    )),
                )
                .await?;
            Ok(())
        }
        .await;
        if let Err(error) = &undone {
            tracing::warn!(client = %id, error = %error, "a failed upgrade could not be undone");
        }
        undone.is_ok()
    }
}
