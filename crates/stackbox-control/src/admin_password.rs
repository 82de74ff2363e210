//! The admin password reset as a journaled deployment: a redeploy with an `admin_password`
//! parameter and its own steps (`render`, `infrastructure`, `containers`, `health`,
//! `admin-password`).
//!
//! The request generates the new password (the OS's CSPRNG, the admin password's format),
//! seals it together with the current one under the master key (an associated datum of the
//! client's resets, so the blob opens nowhere else) into the deployment's parameters, and
//! hands the plaintext back once, for the API's 202 answer: the store never holds it in
//! clear (its secrets are sealed too). The journal could instead have generated it in a step
//! and delivered it through a one-time credentials link, as the welcome e-mail does; that
//! suits a customer reading mail days later, while the operator asking here is waiting for
//! the answer, and a link would need a mail server and an extra hop for nothing.
//!
//! The `render` step stores the new value as `ADMIN_PASSWORD` (once: a resumed step finds it
//! stored) and writes the bundle with it, so the containers step recreates every service whose
//! environment holds it: Mailtrain, which applies it on every start, is set there; Nextcloud
//! and EspoCRM only read theirs at installation. After the health step, `admin-password` runs
//! each of those apps' own command (the core's [`stackbox_core::admin::reset_command`]) in
//! its running container, Nextcloud first. It comes last so that everything that can fail
//! for other reasons has passed before any app's account changes.
//!
//! A failure never leaves the apps on different passwords silently. When an app refuses,
//! the step sets the apps that had taken the new password back to the previous one at once
//! and says which app is in which state; the compensation then writes the previous password
//! back to the store and the bundle and converges (Mailtrain gets the previous one again).
//! Only when an app cannot be set back does the deployment end `failed` rather than
//! `compensated`, its error naming the app that has the new password.

use serde_json::json;
use stackbox_bundle::OsRandom;
use stackbox_core::admin::{reset_command, reset_plan, AdminMechanism, ResetOutcome};
use stackbox_core::client::ClientId;
use stackbox_core::plan::App;
use stackbox_core::secrets::{generate, SecretKey};
use stackbox_core::stack::ADMIN_USERNAME;
use stackbox_store::{ClientState, Deployment, DeploymentKind};
use zeroize::Zeroizing;

use crate::rotation::{from_hex, to_hex};
use crate::steps::{Step, StepOutput};
use crate::{field_error, names, Control, ControlError, StepContext};

/// The parameter of an admin password reset.
pub(crate) const ADMIN_PASSWORD_PARAM: &str = "admin_password";

/// The steps of an admin password reset (local provider only).
const ADMIN_PASSWORD_STEPS: [Step; 5] = [
    Step::Render,
    Step::Infrastructure,
    Step::Containers,
    Step::Health,
    Step::AdminPassword,
];

/// What a reset deployment carries: the new and the previous password, sealed.
pub(crate) struct AdminReset {
    sealed: Vec<u8>,
}

impl AdminReset {
    /// The reset a deployment carries, if it is one.
    pub(crate) fn of(deployment: &Deployment) -> Option<AdminReset> {
        if deployment.kind != DeploymentKind::Redeploy {
            return None;
        }
        let param = deployment.params.as_ref()?.get(ADMIN_PASSWORD_PARAM)?;
        Some(AdminReset {
            sealed: from_hex(param.get("sealed")?.as_str()?)?,
        })
    }
}

/// The new and the previous password, wiped when dropped.
struct Passwords {
    new: Zeroizing<String>,
    previous: Zeroizing<String>,
}

/// One app in a reset: what happens to its admin password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppReset {
    pub app: App,
    pub outcome: ResetOutcome,
    /// Why nothing happens, for `not-applicable`.
    pub reason: Option<&'static str>,
}

/// What a reset request returns: the only time the new password is shown. `Debug` hides it.
#[derive(Clone)]
pub struct AdminPasswordReset {
    pub deployment: Deployment,
    pub admin_username: &'static str,
    pub admin_password: String,
    /// Every app of the client, in the order the reset goes through them.
    pub apps: Vec<AppReset>,
}

impl std::fmt::Debug for AdminPasswordReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPasswordReset")
            .field("deployment", &self.deployment.id)
            .field("admin_username", &self.admin_username)
            .field("admin_password", &"<redacted>")
            .field("apps", &self.apps)
            .finish()
    }
}

/// What the sealed passwords are bound to: this client's resets only.
fn associated(client: &ClientId) -> Vec<u8> {
    format!("stackbox admin password reset {client}").into_bytes()
}

fn app_resets(plan: &[(App, AdminMechanism)]) -> Vec<AppReset> {
    plan.iter()
        .map(|(app, mechanism)| AppReset {
            app: *app,
            outcome: mechanism.outcome(),
            reason: mechanism.reason(),
        })
        .collect()
}

fn step_error(problem: String) -> ControlError {
    ControlError::Step {
        step: Step::AdminPassword.name().into(),
        problem,
    }
}

impl Control {
    /// Queues a reset of a running client's admin password in every app that has one and
    /// returns the new password, once. 404 for an unknown client, `NotRunning` for a client
    /// that is not running, 422 on the aws provider or without an app that has an admin, and
    /// the store's busy error (409) while another deployment runs.
    pub async fn request_admin_password(
        &self,
        client: &ClientId,
        mut params: serde_json::Map<String, serde_json::Value>,
    ) -> Result<AdminPasswordReset, ControlError> {
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
                problem: "this client's secrets live in AWS Secrets Manager, which an admin \
                          password reset does not update yet"
                    .into(),
            });
        }
        if !matches!(
            record.state,
            ClientState::Running | ClientState::Starting | ClientState::Degraded
        ) {
            return Err(ControlError::NotRunning {
                client: client.clone(),
                state: record.state.as_str().to_string(),
            });
        }
        let plan = reset_plan(&spec.apps()).map_err(field_error)?;
        let current = store
            .get_secrets(client, &self.inner.key)
            .await?
            .unwrap_or_default();
        let previous = Zeroizing::new(
            current
                .get(SecretKey::AdminPassword)
                .ok_or_else(|| ControlError::Step {
                    step: "render".into(),
                    problem: format!("client {client} has no stored admin password"),
                })?
                .to_string(),
        );
        let new = loop {
            let candidate =
                Zeroizing::new(generate(SecretKey::AdminPassword.format(), &mut OsRandom));
            if *candidate != *previous {
                break candidate;
            }
        };
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&json!({"new": *new, "previous": *previous})).unwrap_or_default(),
        );
        let sealed = self.inner.key.seal(&plaintext, &associated(client))?;
        params.insert(
            ADMIN_PASSWORD_PARAM.into(),
            json!({
                "sealed": to_hex(&sealed),
                "apps": plan.iter().map(|(app, _)| app.key()).collect::<Vec<_>>(),
            }),
        );
        let deployment = store
            .create_deployment_with_params(
                client,
                DeploymentKind::Redeploy,
                &names(&ADMIN_PASSWORD_STEPS),
                Some(&serde_json::Value::Object(params)),
            )
            .await?;
        self.enqueue(&deployment.id)?;
        Ok(AdminPasswordReset {
            deployment,
            admin_username: ADMIN_USERNAME,
            admin_password: new.to_string(),
            apps: app_resets(&plan),
        })
    }

    fn reset_passwords(
        &self,
        reset: &AdminReset,
        client: &ClientId,
    ) -> Result<Passwords, ControlError> {
        let plaintext = Zeroizing::new(self.inner.key.open(&reset.sealed, &associated(client))?);
        let value: serde_json::Value =
            serde_json::from_slice(&plaintext).map_err(|e| ControlError::Step {
                step: "render".into(),
                problem: format!("the reset's sealed passwords cannot be read: {e}"),
            })?;
        let field = |name: &str| {
            value[name]
                .as_str()
                .map(|s| Zeroizing::new(s.to_string()))
                .ok_or_else(|| ControlError::Step {
                    step: "render".into(),
                    problem: format!("the reset's sealed passwords lack {name}"),
                })
        };
        Ok(Passwords {
            new: field("new")?,
            previous: field("previous")?,
        })
    }

    /// The `render` step's first half for a reset: the new password stored once (a resumed
    /// step finds it stored), so the bundle and every container get it.
    pub(crate) async fn apply_admin_password(
        &self,
        reset: &AdminReset,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<(), ControlError> {
        let passwords = self.reset_passwords(reset, &deployment.client_id)?;
        if context.secrets.get(SecretKey::AdminPassword) == Some(passwords.new.as_str()) {
            return Ok(());
        }
        let mut secrets = context.secrets.clone();
        secrets.insert(SecretKey::AdminPassword, passwords.new.to_string());
        self.inner
            .store
            .put_secrets(&deployment.client_id, &secrets, &self.inner.key)
            .await?;
        context.secrets = secrets;
        Ok(())
    }

    /// The `admin-password` step: each app's own command in its running container. An app
    /// that refuses has the ones before it set back to the previous password at once; the
    /// error says which app is in which state.
    pub(crate) async fn admin_password_step(
        &self,
        deployment: &Deployment,
        context: &mut StepContext,
    ) -> Result<StepOutput, ControlError> {
        let client = &deployment.client_id;
        let reset = AdminReset::of(deployment)
            .ok_or_else(|| step_error("this deployment is not an admin password reset".into()))?;
        let passwords = self.reset_passwords(&reset, client)?;
        let plan = reset_plan(&context.spec.apps()).map_err(field_error)?;
        let docker = context.docker().await?;
        context.admin_password_set.clear();
        for (app, mechanism) in &plan {
            if !matches!(mechanism, AdminMechanism::Exec { .. }) {
                continue;
            }
            let command = reset_command(*app, ADMIN_USERNAME, &passwords.new)?;
            match stackbox_engine::admin::set_admin_password(&docker, client, &command).await {
                Ok(()) => context.admin_password_set.push(*app),
                Err(error) => {
                    let mut report = vec![format!(
                        "{} did not take the new admin password ({error})",
                        app.key()
                    )];
                    // Back to the previous password, newest first; what cannot go back stays
                    // in `admin_password_set` for the compensation to see.
                    let taken = std::mem::take(&mut context.admin_password_set);
                    for done in taken.iter().rev() {
                        let back = reset_command(*done, ADMIN_USERNAME, &passwords.previous)?;
                        match stackbox_engine::admin::set_admin_password(&docker, client, &back)
                            .await
                        {
                            Ok(()) => report.push(format!(
                                "{} had taken it and was set back to the previous password",
                                done.key()
                            )),
                            Err(back_error) => {
                                report.push(format!(
                                    "{} had taken it and could NOT be set back ({back_error}): \
                                     it has the new password",
                                    done.key()
                                ));
                                context.admin_password_set.push(*done);
                            }
                        }
                    }
                    report.push(if context.admin_password_set.is_empty() {
                        "every app keeps the previous password".to_string()
                    } else {
                        "every other app keeps the previous password".to_string()
                    });
                    return Err(step_error(report.join("; ")));
                }
            }
        }
        let apps: Vec<serde_json::Value> = app_resets(&plan)
            .iter()
            .map(|reset| {
                let mut entry = json!({"app": reset.app.key(), "outcome": reset.outcome.as_str()});
                if let Some(reason) = reset.reason {
                    entry["reason"] = json!(reason);
                }
                entry
            })
            .collect();
        Ok(StepOutput::Other(
            json!({"admin_username": ADMIN_USERNAME, "apps": apps}),
        ))
    }

    /// The compensation of a failed reset: the previous password in the store and the bundle,
    /// and the engine converged on it (so Mailtrain applies it again). True when every app is
    /// back on the previous password and the client runs as before.
    pub(crate) async fn undo_admin_password(
        &self,
        reset: &AdminReset,
        deployment: &Deployment,
        context: &StepContext,
    ) -> bool {
        let client = &deployment.client_id;
        let Ok(passwords) = self.reset_passwords(reset, client) else {
            return false;
        };
        let Ok(stored) = self.inner.store.get_secrets(client, &self.inner.key).await else {
            return false;
        };
        let mut previous = stored.unwrap_or_else(|| context.secrets.clone());
        previous.insert(SecretKey::AdminPassword, passwords.previous.to_string());
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
                "an admin password reset failed; every app keeps the previous password",
            )
            .await;
        if !context.admin_password_set.is_empty() {
            // The step's error already names them; the log says it once more for operators.
            tracing::error!(
                client = %client,
                apps = ?context.admin_password_set.iter().map(|a| a.key()).collect::<Vec<_>>(),
                "an admin password reset failed and these apps could not be set back to the previous password"
            );
            return false;
        }
        converged.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_odd_or_foreign_text() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn the_steps_end_with_the_apps_own_commands_after_the_health_gate() {
        assert_eq!(ADMIN_PASSWORD_STEPS.last(), Some(&Step::AdminPassword));
        let health = ADMIN_PASSWORD_STEPS
            .iter()
            .position(|s| *s == Step::Health)
            .unwrap();
        let containers = ADMIN_PASSWORD_STEPS
            .iter()
            .position(|s| *s == Step::Containers)
            .unwrap();
        assert!(containers < health);
        assert_eq!(ADMIN_PASSWORD_STEPS[0], Step::Render);
    }
}
