//! `stackbox admin-password ID`: a new admin password in every app of a running client that
//! has an admin, printed once.
//!
//! The same order as the control plane's deployment (`stackbox-control`'s `admin_password`):
//! the bundle gets the new `ADMIN_PASSWORD` and the stack is converged on it (the services
//! whose environment holds it are recreated, health-gated; Mailtrain applies it on every
//! start), then Nextcloud and EspoCRM are told it with their own commands in their running
//! containers (the core's `admin::reset_command`). A failure before the commands puts the
//! previous bundle back (the deploy rolled the containers back); an app that refuses has the
//! apps already set put back to the previous password, the previous bundle written and the
//! stack converged on it again, and the error says which app is in which state.

use anyhow::{bail, Context, Result};
use serde_json::json;

use stackbox_bundle::{BundleStore, OsRandom, RenderOptions};
use stackbox_core::admin::{reset_command, reset_plan, AdminMechanism};
use stackbox_core::deploy::OverallState;
use stackbox_core::operator::OperatorConfig;
use stackbox_core::plan::App;
use stackbox_core::secrets::{generate, SecretKey};
use stackbox_core::stack::ADMIN_USERNAME;
use stackbox_engine::DockerRuntime;

use crate::lifecycle::{converge, parse_id, root_holding, runtime, DeployArgs};

/// Resets the admin password of a running client on the local engine.
pub fn admin_password(operator: &OperatorConfig, id: &str, args: DeployArgs) -> Result<()> {
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
            "infrastructure: this client's secrets live in AWS Secrets Manager; reset its admin \
             password through `stackbox serve` once that is supported"
        );
    }
    let plan = reset_plan(&spec.apps())?;
    // The commands need the apps running, and converging a stopped client would start it.
    let expected = stackbox_core::infra::expected_service_names(&spec, operator);
    let status = rt.block_on(stackbox_engine::lifecycle::status(&docker, &id, &expected))?;
    if !matches!(
        status.state,
        OverallState::Running | OverallState::Starting | OverallState::Degraded
    ) {
        bail!(
            "client {id} is {}, not running; start it first (`stackbox start {id}`)",
            serde_json::to_value(status.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        );
    }
    let previous_secrets = stored.secrets.clone();
    let previous = previous_secrets
        .get(SecretKey::AdminPassword)
        .with_context(|| format!("client {id}'s bundle has no ADMIN_PASSWORD"))?
        .to_string();
    let new = loop {
        let candidate = generate(SecretKey::AdminPassword.format(), &mut OsRandom);
        if candidate != previous {
            break candidate;
        }
    };
    let mut secrets = previous_secrets.clone();
    secrets.insert(SecretKey::AdminPassword, new.clone());
    let outcome = store.render_client(
        &spec,
        operator,
        RenderOptions {
            restore_secrets: Some(secrets),
            ..RenderOptions::default()
        },
        &mut OsRandom,
    )?;
    let args = DeployArgs {
        root: &root,
        json: args.json,
        health_timeout: args.health_timeout,
    };
    if !args.json {
        println!("Resetting the admin password of {id}:");
        for (app, mechanism) in &plan {
            let how = match mechanism {
                AdminMechanism::Exec { .. } => "its own command, in its running container",
                AdminMechanism::Recreate { .. } => "recreated with it in its environment",
                AdminMechanism::NotApplicable { .. } => "not applicable",
            };
            println!("  {:<10} {how}", app.key());
        }
    }
    let put_back = |store: &BundleStore| {
        store.render_client(
            &spec,
            operator,
            RenderOptions {
                restore_secrets: Some(previous_secrets.clone()),
                ..RenderOptions::default()
            },
            &mut OsRandom,
        )
    };
    if let Err(error) = converge(operator, &store, &spec, &outcome, &args, &rt, &docker) {
        // The deploy rolled the containers back; the bundle goes back too. No app's account
        // has changed (Mailtrain's set-aside container applies the previous one again).
        let restored = put_back(&store);
        drop(lock);
        return Err(match restored {
            Ok(_) => error.context(format!(
                "admin password reset of {id} failed before any app's account changed; every app \
                 and the bundle keep the previous password"
            )),
            Err(write) => error.context(format!(
                "admin password reset of {id} failed before any app's account changed, and its \
                 bundle could not be given the previous password back ({write})"
            )),
        });
    }
    let mut set: Vec<App> = Vec::new();
    for (app, mechanism) in &plan {
        if !matches!(mechanism, AdminMechanism::Exec { .. }) {
            continue;
        }
        let command = reset_command(*app, ADMIN_USERNAME, &new)?;
        let result = rt.block_on(stackbox_engine::admin::set_admin_password(
            &docker, &id, &command,
        ));
        let Err(error) = result else {
            set.push(*app);
            continue;
        };
        let mut report = vec![format!(
            "{} did not take the new admin password ({error})",
            app.key()
        )];
        let mut stuck = Vec::new();
        for done in set.iter().rev() {
            let back = reset_command(*done, ADMIN_USERNAME, &previous)?;
            match rt.block_on(stackbox_engine::admin::set_admin_password(
                &docker, &id, &back,
            )) {
                Ok(()) => report.push(format!(
                    "{} had taken it and was set back to the previous password",
                    done.key()
                )),
                Err(back_error) => {
                    report.push(format!(
                        "{} had taken it and could NOT be set back ({back_error}): it has the \
                         new password",
                        done.key()
                    ));
                    stuck.push(*done);
                }
            }
        }
        // The bundle and the containers back on the previous password (Mailtrain applies it).
        let reverted = put_back(&store)
            .map_err(anyhow::Error::from)
            .and_then(|outcome| converge(operator, &store, &spec, &outcome, &args, &rt, &docker));
        match reverted {
            Ok(()) if stuck.is_empty() => {
                report.push("every app keeps the previous password".to_string())
            }
            Ok(()) => report.push("every other app keeps the previous password".to_string()),
            Err(revert) => report.push(format!(
                "the bundle and containers could not be put back on the previous password \
                 ({revert:#}); deploy the client again"
            )),
        }
        drop(lock);
        bail!("admin password reset of {id} failed: {}", report.join("; "));
    }
    drop(lock);
    let env_file = std::path::absolute(outcome.path.join(".env"))
        .unwrap_or_else(|_| outcome.path.join(".env"));
    let apps: Vec<serde_json::Value> = plan
        .iter()
        .map(|(app, mechanism)| {
            let mut entry = json!({"app": app.key(), "outcome": mechanism.outcome().as_str()});
            if let Some(reason) = mechanism.reason() {
                entry["reason"] = json!(reason);
            }
            entry
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "event": "admin-password",
                "success": true,
                "client_id": id.as_str(),
                "credentials": {
                    "admin_username": ADMIN_USERNAME,
                    "admin_password": new,
                    "stored_in": env_file,
                },
                "apps": apps,
            })
        );
    } else {
        println!();
        println!("Admin password of {id} reset:");
        println!("  admin username  {ADMIN_USERNAME}");
        println!("  admin password  {new}");
        println!(
            "  (shown once; also stored in {} with mode 0600)",
            env_file.display()
        );
        for (app, mechanism) in &plan {
            match mechanism.reason() {
                Some(reason) => println!("  {:<10} not applicable: {reason}", app.key()),
                None => println!("  {:<10} {}", app.key(), mechanism.outcome().as_str()),
            }
        }
    }
    Ok(())
}
