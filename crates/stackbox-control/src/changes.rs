//! Changes to an existing client's configuration (`PATCH /v1/clients/{id}`, and `stackbox
//! --server deploy` of an edited file), and lifecycle requests that record who asked for them.
//!
//! A change is a redeploy whose parameters say who asked and what changed, field by field
//! (`stackbox_store::FieldChange`; a configuration holds no secret, so neither does the
//! history). It is made in this order, so that a refusal leaves nothing half done:
//!
//! 1. validated: the id cannot change, nor the infrastructure provider the client runs on
//!    (its data lives there), and the domain must not be another client's;
//! 2. the redeploy is journaled, pending and not yet queued. The store allows one unfinished
//!    deployment per client, so a client busy with another one answers `ClientBusy` (409) here,
//!    exactly as a redeploy, stop or start does, and, once journaled, this deployment holds the
//!    client: no other change or lifecycle request can start until it has finished;
//! 3. under that hold, the stored configuration is read again (a plan change made by billing
//!    in between would otherwise be undone: refused as changed meanwhile), the secrets the new
//!    apps need are generated and stored (`Secrets::fill_missing`, as a create and a plan
//!    change do), and the new configuration is stored;
//! 4. the redeploy is queued. If step 3 fails, the deployment is ended as failed, naming why,
//!    and nothing was queued.
//!
//! A stopped client's change is journaled as a stop rather than a redeploy: it stays stopped
//! (a suspended client is not started by an edit), and its next start applies the change.
//!
//! A crash between 2 and 3 leaves a pending redeploy of the unchanged configuration, which the
//! next start runs: a convergence, harmless, though its history names the change it did not
//! apply. A change that changes nothing journals nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use stackbox_bundle::OsRandom;
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::infra::effective_provider;
use stackbox_core::secrets::SecretKey;
use stackbox_store::{
    Deployment, DeploymentKind, DeploymentStatus, FieldChange, RequestedBy, CHANGES_PARAM,
    REQUESTED_BY_PARAM,
};

use crate::{names, steps_for, Control, ControlError};

impl Control {
    /// Replaces the client's configuration with `new_spec` (validated by the core, with the
    /// client's id or none) and journals the redeploy that applies it, recording who asked and
    /// what changed. `Ok(None)` when `new_spec` is the stored configuration: nothing is stored
    /// or queued. Refused with `UnknownClient`, `Invalid` (the id or the provider changed),
    /// `DomainTaken`, the store's `ClientBusy` while another deployment of the client is
    /// unfinished, and `ConfigurationChanged` when another change landed meanwhile.
    pub async fn update_client(
        &self,
        id: &ClientId,
        new_spec: ClientSpec,
        requested_by: &RequestedBy,
    ) -> Result<Option<Deployment>, ControlError> {
        let store = &self.inner.store;
        let record = store
            .client(id)
            .await?
            .ok_or_else(|| ControlError::UnknownClient { client: id.clone() })?;
        let current = record.spec()?;
        let mut new_spec = new_spec;
        // The release is not the configuration's to change: `upgrade` moves it.
        new_spec.release = current.release.clone();
        // Nor the redirects of previous domains: a changed domain adds one.
        let (today, until) = stackbox_bundle::redirect_dates();
        stackbox_core::client::carry_previous_domains(&current, &mut new_spec, &today, &until);
        let spec = as_stored(id, new_spec)?;
        if spec == current {
            return Ok(None);
        }
        let operator = &self.inner.config.operator;
        let provider = effective_provider(&current, operator);
        if effective_provider(&spec, operator) != provider {
            return Err(ControlError::Invalid {
                field: "infrastructure".into(),
                problem: format!(
                    "cannot change for an existing client: {id} runs on {provider} and its data \
                     is there; leave infrastructure as it is (clone the client from a backup to \
                     move it)"
                ),
            });
        }
        self.domain_free(&spec.domain, Some(id)).await?;
        let changes = spec_changes(&current, &spec);
        let params = json!({
            REQUESTED_BY_PARAM: requested_by.to_json(),
            CHANGES_PARAM: FieldChange::map_to_json(&changes),
        });
        // A stopped client (by the operator, or suspended by billing) stays stopped: the
        // change is journaled as a stop, which holds the client like any deployment and
        // changes nothing on the engine, and the next start (which renders and deploys the
        // stored configuration) applies it.
        let kind = if record.state == stackbox_store::ClientState::Stopped {
            DeploymentKind::Stop
        } else {
            DeploymentKind::Redeploy
        };
        let deployment = store
            .create_deployment_with_params(
                id,
                kind,
                &names(steps_for(kind, provider)),
                Some(&params),
            )
            .await?;
        if let Err(error) = self.store_change(id, &current, &spec).await {
            let reason = format!("the configuration change was not applied: {error}");
            if let Err(finish) = store
                .finish_deployment(&deployment.id, DeploymentStatus::Failed, Some(&reason))
                .await
            {
                tracing::warn!(deployment = %deployment.id, error = %finish, "an unapplied change's deployment could not be ended");
            }
            return Err(error);
        }
        self.enqueue(&deployment.id)?;
        Ok(Some(deployment))
    }

    /// Step 3 of a change, while its deployment holds the client.
    async fn store_change(
        &self,
        id: &ClientId,
        expected: &ClientSpec,
        spec: &ClientSpec,
    ) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let stored = store
            .client(id)
            .await?
            .ok_or_else(|| ControlError::UnknownClient { client: id.clone() })?
            .spec()?;
        if &stored != expected {
            return Err(ControlError::ConfigurationChanged { client: id.clone() });
        }
        let mut secrets = store
            .get_secrets(id, &self.inner.key)
            .await?
            .unwrap_or_default();
        let generated = secrets.fill_missing(&SecretKey::needed_for(&spec.apps()), &mut OsRandom);
        if !generated.is_empty() {
            store.put_secrets(id, &secrets, &self.inner.key).await?;
        }
        store.update_client_spec(id, spec).await?;
        Ok(())
    }

    /// [`Control::request`] (a stop, start or redeploy) recording who asked.
    pub async fn request_by(
        &self,
        client: &ClientId,
        kind: DeploymentKind,
        requested_by: &RequestedBy,
    ) -> Result<Deployment, ControlError> {
        let params = json!({ REQUESTED_BY_PARAM: requested_by.to_json() });
        self.request_with(client, kind, Some(&params)).await
    }

    /// Ends the redirects of previous domains whose last day has passed: each client with
    /// one is changed (a journaled redeploy asked by the schedule) to its configuration
    /// without it, so its old hostnames stop being routed and are free for others. A client
    /// busy with another deployment is looked at again at the next pass.
    pub(crate) async fn expire_redirects_pass(&self) -> Result<usize, ControlError> {
        let store = &self.inner.store;
        let (today, _) = stackbox_bundle::redirect_dates();
        let mut changed = 0;
        for record in store.clients_with_previous_domains().await? {
            let spec = record.spec()?;
            if !spec.previous_domains.iter().any(|p| p.until < today) {
                continue;
            }
            let mut next = spec.clone();
            next.previous_domains.clear();
            match self
                .update_client(&record.id, next, &RequestedBy::Schedule)
                .await
            {
                Ok(_) => changed += 1,
                Err(ControlError::Store(stackbox_store::StoreError::ClientBusy { .. })) => {}
                Err(error) => {
                    tracing::warn!(client = %record.id, %error, "an expired domain redirect could not be ended");
                }
            }
        }
        Ok(changed)
    }

    /// [`Control::request_destroy`] recording who asked.
    pub async fn request_destroy_by(
        &self,
        client: &ClientId,
        delete_backups: bool,
        requested_by: &RequestedBy,
    ) -> Result<Deployment, ControlError> {
        let params = json!({
            "delete_backups": delete_backups,
            REQUESTED_BY_PARAM: requested_by.to_json(),
        });
        self.request_with(client, DeploymentKind::Destroy, Some(&params))
            .await
    }
}

/// The configuration as the store keeps and reads it back (with the client's id), so that it
/// compares equal to a stored one when nothing changed. Refuses another client's id.
fn as_stored(id: &ClientId, mut spec: ClientSpec) -> Result<ClientSpec, ControlError> {
    if let Some(given) = spec.client_id.as_ref().filter(|given| *given != id) {
        return Err(ControlError::Invalid {
            field: "client_id".into(),
            problem: format!(
                "cannot be changed: this is client {id}, not {given}; leave client_id out or \
                 give {id}"
            ),
        });
    }
    spec.client_id = Some(id.clone());
    Ok(ClientSpec::from_toml(&spec.to_toml(id))?)
}

/// Field → old and new value, for every field that differs: the fields of a client's
/// configuration file, app switches as `features.<app>` (`null` where none is written, as for
/// an unset `infrastructure`).
pub(crate) fn spec_changes(
    before: &ClientSpec,
    after: &ClientSpec,
) -> BTreeMap<String, FieldChange> {
    let mut changes = BTreeMap::new();
    let mut compare = |field: String, from: Value, to: Value| {
        if from != to {
            changes.insert(field, FieldChange { from, to });
        }
    };
    compare(
        "company_name".into(),
        json!(before.company_name.as_str()),
        json!(after.company_name.as_str()),
    );
    compare(
        "domain".into(),
        json!(before.domain.as_str()),
        json!(after.domain.as_str()),
    );
    compare(
        "plan".into(),
        json!(before.plan.key()),
        json!(after.plan.key()),
    );
    compare(
        "admin_email".into(),
        json!(before.admin_email.as_str()),
        json!(after.admin_email.as_str()),
    );
    compare(
        "brand_color".into(),
        json!(before.brand_color.as_str()),
        json!(after.brand_color.as_str()),
    );
    compare(
        "infrastructure".into(),
        json!(before.infrastructure.map(|p| p.key())),
        json!(after.infrastructure.map(|p| p.key())),
    );
    let apps: BTreeSet<_> = before
        .features
        .keys()
        .chain(after.features.keys())
        .collect();
    for app in apps {
        compare(
            format!("features.{}", app.key()),
            json!(before.features.get(app)),
            json!(after.features.get(app)),
        );
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ClientSpec {
        ClientSpec::from_toml(&format!(
            "client_id = \"smith-0000000a\"\ncompany_name = \"Smith\"\n\
             domain = \"smith.example.com\"\nplan = \"professional\"\n\
             admin_email = \"owner@smith.example.com\"\n{extra}"
        ))
        .expect("valid")
    }

    fn id() -> ClientId {
        ClientId::parse("smith-0000000a").expect("id")
    }

    #[test]
    fn the_same_configuration_has_no_changes() {
        assert!(spec_changes(&spec(""), &spec("")).is_empty());
    }

    #[test]
    fn every_changed_field_is_named_with_its_old_and_new_value() {
        let before = spec("brand_color = \"#003366\"\n[features]\ncalcom = false\n");
        let mut after = spec("brand_color = \"#aa0000\"\n[features]\nnextcloud = false\n");
        after.company_name = stackbox_core::client::CompanyName::parse("Smith & Sons").unwrap();
        let changes = spec_changes(&before, &after);
        let fields: Vec<&str> = changes.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "brand_color",
                "company_name",
                "features.calcom",
                "features.nextcloud"
            ]
        );
        assert_eq!(
            changes["brand_color"],
            FieldChange {
                from: json!("#003366"),
                to: json!("#aa0000")
            }
        );
        assert_eq!(changes["features.calcom"].from, json!(false));
        assert_eq!(changes["features.calcom"].to, Value::Null);
        assert_eq!(changes["features.nextcloud"].from, Value::Null);
        assert_eq!(changes["features.nextcloud"].to, json!(false));
        assert_eq!(changes["company_name"].to, json!("Smith & Sons"));
    }

    #[test]
    fn an_unset_provider_is_null_in_a_change() {
        let changes = spec_changes(&spec(""), &spec("infrastructure = \"local\"\n"));
        assert_eq!(
            changes["infrastructure"],
            FieldChange {
                from: Value::Null,
                to: json!("local")
            }
        );
    }

    #[test]
    fn a_configuration_without_an_id_takes_the_clients_and_another_id_is_refused() {
        let mut without = spec("");
        without.client_id = None;
        assert_eq!(as_stored(&id(), without).expect("valid"), spec(""));
        let mut other = spec("");
        other.client_id = Some(ClientId::parse("jones-0000000b").unwrap());
        match as_stored(&id(), other) {
            Err(ControlError::Invalid { field, problem }) => {
                assert_eq!(field, "client_id");
                assert!(problem.contains("smith-0000000a"), "{problem}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
