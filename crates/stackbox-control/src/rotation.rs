//! Secret rotation of a running client, as a redeploy with a `rotate_secrets` parameter.
//!
//! The request names the keys (the core's `rotation_keys`: what can be replaced live) and
//! seals the client's current secrets into the deployment's parameters. The `render` step
//! then replaces those keys in the store, once: a resumed step finds the store already
//! different from the sealed set and keeps it, so a crash never rotates twice. The deploy
//! path does the rest: every database server converges on its new passwords (handed the
//! previous superuser password once), and each service that uses a new value is recreated,
//! health-gated. When a step fails, the compensation writes the sealed set back to the store
//! and the bundle and converges the engine on it, so the databases get their previous
//! passwords again and the client keeps running as before.

use serde_json::json;
use stackbox_bundle::OsRandom;
use stackbox_core::client::ClientId;
use stackbox_core::secrets::{rotation_keys, SecretKey, Secrets};
use stackbox_engine::lifecycle::{self, DeployOptions, Deployment as EngineDeployment};
use stackbox_store::{ClientState, Deployment, DeploymentKind};

use crate::{field_error, Control, ControlError, StepContext};

/// The parameter of a rotating redeploy.
pub(crate) const ROTATION_PARAM: &str = "rotate_secrets";

/// What a rotating redeploy carries.
pub(crate) struct Rotation {
    pub keys: Vec<SecretKey>,
    sealed_previous: Vec<u8>,
}

impl Rotation {
    /// The rotation a deployment carries, if it is one.
    pub(crate) fn of(deployment: &Deployment) -> Option<Rotation> {
        if deployment.kind != DeploymentKind::Redeploy {
            return None;
        }
        let param = deployment.params.as_ref()?.get(ROTATION_PARAM)?;
        let keys = param
            .get("keys")?
            .as_array()?
            .iter()
            .filter_map(|k| k.as_str().and_then(SecretKey::from_env_name))
            .collect();
        let sealed_previous = from_hex(param.get("previous")?.as_str()?)?;
        Some(Rotation {
            keys,
            sealed_previous,
        })
    }
}

/// What the sealed previous secrets are bound to: this client's rotations only, so the blob
/// opens nowhere else (not as the client's current secrets either).
fn associated(client: &ClientId) -> Vec<u8> {
    format!("stackbox rotation previous secrets {client}").into_bytes()
}

impl Control {
    /// Queues a rotation of a running client's secrets (all that can be replaced live, or
    /// exactly `only`, by their `.env` names). 422 naming `only` for a key that cannot be.
    pub async fn request_rotation(
        &self,
        client: &ClientId,
        only: &[String],
        mut params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Deployment, ControlError> {
        let store = &self.inner.store;
        let Some(record) = store.client(client).await? else {
            return Err(ControlError::UnknownClient {
                client: client.clone(),
            });
        };
        let spec = record.spec()?;
        if stackbox_core::infra::effective_provider(&spec, &self.inner.config.operator)
            == stackbox_core::infra::ProviderKind::Aws
        {
            return Err(ControlError::Invalid {
                field: "infrastructure".into(),
                problem: "this client's secrets live in AWS Secrets Manager, which a rotation \
                          does not update yet; rotate them there and redeploy"
                    .into(),
            });
        }
        let needed = SecretKey::needed_for(&spec.apps());
        let keys = rotation_keys(&needed, only).map_err(field_error)?;
        if keys.is_empty() {
            return Err(ControlError::Invalid {
                field: "only".into(),
                problem: "this client has no secret that can be rotated while it runs".into(),
            });
        }
        let current = store
            .get_secrets(client, &self.inner.key)
            .await?
            .unwrap_or_default();
        let sealed = self
            .inner
            .key
            .seal(&secrets_json(&current), &associated(client))?;
        params.insert(
            ROTATION_PARAM.into(),
            json!({
                "keys": keys.iter().map(|k| k.env_name()).collect::<Vec<_>>(),
                "previous": to_hex(&sealed),
            }),
        );
        self.request_with(
            client,
            DeploymentKind::Redeploy,
            Some(&serde_json::Value::Object(params)),
        )
        .await
    }

    /// The `render` step's first half for a rotation: the new values, stored once.
    pub(crate) async fn apply_rotation(
        &self,
        rotation: &Rotation,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<(), ControlError> {
        let client = &deployment.client_id;
        let previous = self.previous_secrets(rotation, client)?;
        // Already rotated by an attempt that was interrupted: keep what it stored (the engine
        // may already run on it).
        let done = rotation
            .keys
            .iter()
            .all(|key| context.secrets.get(*key) != previous.get(*key));
        if done {
            return Ok(());
        }
        let mut rotated = context.secrets.clone();
        rotated.rotate(&rotation.keys.iter().copied().collect(), &mut OsRandom);
        self.inner
            .store
            .put_secrets(client, &rotated, &self.inner.key)
            .await?;
        context.secrets = rotated;
        Ok(())
    }

    /// The compensation of a failed rotation: the previous secrets in the store and the
    /// bundle, and the engine converged on them. True when the client is back as it was.
    pub(crate) async fn undo_rotation(
        &self,
        rotation: &Rotation,
        deployment: &Deployment,
        context: &StepContext,
    ) -> bool {
        let client = &deployment.client_id;
        let Ok(sealed) = self.previous_secrets(rotation, client) else {
            return false;
        };
        // The rotated keys get their previous values; anything else stays as stored.
        let Ok(stored) = self.inner.store.get_secrets(client, &self.inner.key).await else {
            return false;
        };
        let mut previous = stored.unwrap_or_else(|| sealed.clone());
        for key in &rotation.keys {
            if let Some(value) = sealed.get(*key) {
                previous.insert(*key, value.to_string());
            }
        }
        if self
            .inner
            .store
            .put_secrets(client, &previous, &self.inner.key)
            .await
            .is_err()
        {
            return false;
        }
        let mut context = StepContext {
            secrets: previous,
            ..context.clone()
        };
        let converged = self
            .converge_on_secrets(
                client,
                &mut context,
                "a rotation of its secrets failed; it runs on the previous ones",
            )
            .await;
        converged.is_ok()
    }

    /// A compensation's last part, shared by a failed rotation and a failed admin password
    /// reset: the bundle rendered from `context`'s secrets (the previous ones, already back
    /// in the store), the engine converged on it (rolled back if that fails too), and the
    /// client's state as the engine then shows it, with `reason`.
    pub(crate) async fn converge_on_secrets(
        &self,
        client: &ClientId,
        context: &mut StepContext,
        reason: &str,
    ) -> Result<(), ControlError> {
        let rendered = self.render_for(client, context)?;
        self.inner.bundles.write_bundle(client, &rendered.bundle)?;
        let docker = context.docker().await?;
        let desired = self.desired(client, context)?;
        let edge = self
            .inner
            .bundles
            .edge_router(&self.inner.config.operator)?;
        let options = DeployOptions {
            health_timeout: self.inner.config.health_timeout,
        };
        let run = EngineDeployment::prepare(&docker, &desired, edge.as_ref(), options).await?;
        if let Err(error) = run.run(&|_| {}).await {
            let _ = run.rollback(&|_| {}).await;
            return Err(error.into());
        }
        let expected =
            stackbox_core::stack::service_names_placed(&context.spec, &context.placement);
        let status = lifecycle::status(&docker, client, &expected).await?;
        self.inner
            .store
            .set_client_state(client, ClientState::from(status.state), Some(reason))
            .await?;
        Ok(())
    }

    fn previous_secrets(
        &self,
        rotation: &Rotation,
        client: &ClientId,
    ) -> Result<Secrets, ControlError> {
        let plaintext = self
            .inner
            .key
            .open(&rotation.sealed_previous, &associated(client))?;
        let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(&plaintext)
            .map_err(|e| ControlError::Step {
                step: "render".into(),
                problem: format!("the rotation's previous secrets cannot be read: {e}"),
            })?;
        let mut secrets = Secrets::new();
        for (name, value) in map {
            if let Some(key) = SecretKey::from_env_name(&name) {
                secrets.insert(key, value);
            }
        }
        Ok(secrets)
    }
}

/// The secrets as a JSON object by `.env` name, wiped when dropped.
fn secrets_json(secrets: &Secrets) -> zeroize::Zeroizing<Vec<u8>> {
    let map: std::collections::BTreeMap<&str, &str> = secrets
        .iter()
        .map(|(key, value)| (key.env_name(), value))
        .collect();
    zeroize::Zeroizing::new(serde_json::to_vec(&map).unwrap_or_default())
}

/// Sealed bytes as they are kept in a deployment's JSON parameters.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
