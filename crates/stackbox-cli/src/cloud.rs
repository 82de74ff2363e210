//! The `aws` provider in the binary: the adapter the pipeline's `cloud` step calls, and
//! `stackbox infra plan | apply | destroy`, which run the phase alone. Built with the `aws`
//! feature (the AWS SDK takes minutes to compile on a small machine, so the default build
//! leaves it out); without it, both say how to get it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use stackbox_control::CloudInfra;
use stackbox_core::operator::OperatorConfig;

/// Whether the operator uses AWS: it is the default provider, or an `[aws]` section names the
/// shared listener (clients may then choose it one by one).
fn aws_configured(operator: &OperatorConfig) -> bool {
    operator.infrastructure == stackbox_core::infra::ProviderKind::Aws
        || operator.aws.listener_arn.is_some()
}

#[cfg(not(feature = "aws"))]
const NOT_BUILT: &str = "this stackbox was built without AWS support; build it with \
    `cargo build --release --features aws` (or `cargo run --features aws -- …`)";

/// The `cloud` step's adapter, when the operator configured AWS.
#[cfg(not(feature = "aws"))]
pub async fn adapter(operator: &OperatorConfig) -> Result<Option<Arc<dyn CloudInfra>>> {
    if operator.infrastructure == stackbox_core::infra::ProviderKind::Aws {
        anyhow::bail!("[infrastructure] provider = \"aws\": {NOT_BUILT}");
    }
    Ok(None)
}

#[cfg(not(feature = "aws"))]
pub fn infra(_: &OperatorConfig, _: &Path, _: InfraArgs) -> Result<()> {
    anyhow::bail!("{NOT_BUILT}")
}

/// `stackbox destroy`'s AWS part: `None` when AWS is not configured.
#[cfg(not(feature = "aws"))]
pub fn destroy_client(
    operator: &OperatorConfig,
    _: &stackbox_core::client::ClientId,
    _: bool,
) -> Result<Option<usize>> {
    if aws_configured(operator) {
        anyhow::bail!(
            "the operator file configures AWS, whose resources destroy must remove: {NOT_BUILT}"
        );
    }
    Ok(None)
}

/// What `stackbox infra` was asked (read only by the `aws` build).
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub enum InfraArgs {
    Plan {
        config: std::path::PathBuf,
        json: bool,
    },
    Apply {
        config: std::path::PathBuf,
        json: bool,
    },
    Destroy {
        client: String,
        json: bool,
    },
}

#[cfg(feature = "aws")]
pub use with_aws::{adapter, destroy_client, infra};

#[cfg(feature = "aws")]
mod with_aws {
    use super::*;

    use anyhow::{bail, Context};
    use futures_util::future::LocalBoxFuture;
    use serde_json::json;
    use stackbox_aws::{AwsInfra, InfraEvent};
    use stackbox_control::CloudOutcome;
    use stackbox_core::client::{ClientId, ClientSpec};
    use stackbox_core::infra::InfraRequest;
    use stackbox_core::secrets::{SecretKey, Secrets};

    /// The pipeline's view of [`AwsInfra`].
    pub struct AwsCloud(AwsInfra);

    impl std::fmt::Debug for AwsCloud {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "AwsCloud({})", self.0.region())
        }
    }

    fn log_event(client: &str) -> impl Fn(InfraEvent) + '_ {
        move |event: InfraEvent| {
            tracing::info!(
                client,
                step = event.step.key(),
                phase = ?event.phase,
                resource = event.resource.as_deref().unwrap_or(""),
                "aws"
            );
        }
    }

    impl CloudInfra for AwsCloud {
        fn apply<'a>(
            &'a self,
            request: &'a InfraRequest,
        ) -> LocalBoxFuture<'a, Result<CloudOutcome, String>> {
            Box::pin(async move {
                let client = request.client.as_str().to_string();
                let outcome = self
                    .0
                    .apply(request, &log_event(&client))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(CloudOutcome {
                    mysql: outcome
                        .database
                        .as_ref()
                        .map(|d| (d.host.clone(), d.port, d.databases.clone())),
                    record: outcome_json(&outcome),
                })
            })
        }

        fn destroy<'a>(
            &'a self,
            client: &'a ClientId,
        ) -> LocalBoxFuture<'a, Result<serde_json::Value, String>> {
            Box::pin(async move {
                let removed = self
                    .0
                    .destroy(client, &log_event(client.as_str()))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!({ "removed": records(&removed.resources) }))
            })
        }

        fn read_secrets<'a>(
            &'a self,
            client: &'a ClientId,
        ) -> LocalBoxFuture<'a, Result<Option<Secrets>, String>> {
            Box::pin(async move { self.0.read_secrets(client).await.map_err(|e| e.to_string()) })
        }
    }

    fn records(list: &[stackbox_aws::ResourceRecord]) -> Vec<serde_json::Value> {
        list.iter()
            .map(|r| json!({ "kind": r.kind.key(), "name": r.name, "id": r.id }))
            .collect()
    }

    fn outcome_json(outcome: &stackbox_aws::InfraOutcome) -> serde_json::Value {
        json!({
            "database": outcome.database.as_ref().map(|d| json!({
                "instance": d.instance, "host": d.host, "port": d.port, "databases": d.databases,
            })),
            "secret_arn": outcome.secret_arn,
            "certificate_arn": outcome.certificate_arn,
            "cloudfront_certificate_arn": outcome.cloudfront_certificate_arn,
            "hosted_zone_id": outcome.hosted_zone_id,
            "target_group_arn": outcome.target_group_arn,
            "listener_rule_arn": outcome.listener_rule_arn,
            "distribution_id": outcome.distribution_id,
            "distribution_domain": outcome.distribution_domain,
            "created": records(&outcome.created),
        })
    }

    /// The adapter when the operator file has an `[aws]` section (or makes aws the default).
    pub async fn adapter(operator: &OperatorConfig) -> Result<Option<Arc<dyn CloudInfra>>> {
        if !aws_configured(operator) {
            return Ok(None);
        }
        operator
            .aws
            .check_complete(None)
            .context("the operator file's [aws] section")?;
        let infra = AwsInfra::from_env(&operator.aws).await?;
        Ok(Some(Arc::new(AwsCloud(infra))))
    }

    /// Ctrl-C or SIGTERM.
    async fn cancelled() {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }

    fn runtime() -> Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?)
    }

    /// The client of an `infra` command: its configuration must carry its `client_id` (every
    /// AWS name and tag derives from it), and its secrets are those already in Secrets Manager,
    /// else new ones from the operating system's CSPRNG.
    async fn request_for(
        infra: &AwsInfra,
        operator: &OperatorConfig,
        config: &Path,
    ) -> Result<InfraRequest> {
        let text = std::fs::read_to_string(config).with_context(|| {
            format!("cannot read the client configuration {}", config.display())
        })?;
        let spec = ClientSpec::from_toml(&text)
            .with_context(|| format!("{} is not a valid client configuration", config.display()))?;
        let Some(id) = spec.client_id.clone() else {
            bail!(
                "client_id: {} has none; every AWS name and tag derives from it. Render the \
                 client first (`stackbox render`), or add client_id = \"<slug>-<8 hex>\"",
                config.display()
            );
        };
        let mut secrets = infra.read_secrets(&id).await?.unwrap_or_default();
        secrets.fill_missing(
            &SecretKey::needed_for(&spec.apps()),
            &mut stackbox_bundle::OsRandom,
        );
        Ok(InfraRequest::for_client(&spec, &id, operator, &secrets)?)
    }

    fn printer(json_lines: bool) -> impl Fn(InfraEvent) {
        move |event: InfraEvent| {
            if json_lines {
                println!(
                    "{}",
                    json!({
                        "event": "aws",
                        "step": event.step.key(),
                        "phase": format!("{:?}", event.phase).to_lowercase(),
                        "resource": event.resource,
                    })
                );
            } else {
                eprintln!(
                    "{:<20} {:<8} {}",
                    event.step.key(),
                    format!("{:?}", event.phase).to_lowercase(),
                    event.resource.as_deref().unwrap_or("")
                );
            }
        }
    }

    /// `stackbox destroy`'s AWS part: every resource tagged with the client, when the operator
    /// configured AWS (`None` otherwise); how many were removed.
    pub fn destroy_client(
        operator: &OperatorConfig,
        id: &ClientId,
        json: bool,
    ) -> Result<Option<usize>> {
        if !aws_configured(operator) {
            return Ok(None);
        }
        runtime()?.block_on(async {
            let infra = AwsInfra::from_env(&operator.aws).await?;
            let removed = infra.destroy(id, &printer(json)).await?;
            Ok(Some(removed.resources.len()))
        })
    }

    pub fn infra(operator: &OperatorConfig, _data_dir: &Path, args: InfraArgs) -> Result<()> {
        operator
            .aws
            .check_complete(None)
            .context("the operator file's [aws] section")?;
        runtime()?.block_on(async {
            let infra = AwsInfra::from_env(&operator.aws).await?;
            match args {
                InfraArgs::Plan { config, json } => {
                    let request = request_for(&infra, operator, &config).await?;
                    let plan = infra.plan(&request).await?;
                    if json {
                        println!(
                            "{}",
                            json!({
                                "client_id": request.client.as_str(),
                                "converged": plan.is_converged(),
                                "plan": plan.render(),
                            })
                        );
                    } else {
                        print!("{}", plan.render());
                    }
                    if plan.conflicts().next().is_some() {
                        bail!(
                            "the plan has conflicts: resources with the client's names that \
                               StackBox did not make; rename or remove them first"
                        );
                    }
                    Ok(())
                }
                InfraArgs::Apply { config, json } => {
                    let request = request_for(&infra, operator, &config).await?;
                    // Ctrl-C or SIGTERM cancels: a phase that started from nothing is undone
                    // (destroy finds what it made by tag); one that converged existing
                    // resources leaves them for the next apply, since undoing would take a
                    // working client's infrastructure away.
                    let fresh =
                        infra.plan(&request).await?.actions.iter().all(|a| {
                            matches!(a.kind, stackbox_core::infra::InfraActionKind::Create)
                        });
                    let print = printer(json);
                    let outcome = tokio::select! {
                        outcome = infra.apply(&request, &print) => outcome?,
                        _ = cancelled() => {
                            if fresh {
                                eprintln!("cancelled: removing what this run made");
                                infra.destroy(&request.client, &print).await?;
                                bail!("cancelled; nothing of {} is left on AWS", request.client);
                            }
                            bail!(
                                "cancelled; {}'s resources are as far as the run got: run \
                                 `stackbox infra apply` again to converge them",
                                request.client
                            );
                        }
                    };
                    let summary = outcome_json(&outcome);
                    if json {
                        println!("{}", json!({ "result": summary }));
                    } else {
                        println!(
                            "applied: {} created; website through {}",
                            outcome.created.len(),
                            outcome.distribution_domain
                        );
                    }
                    Ok(())
                }
                InfraArgs::Destroy { client, json } => {
                    let id = ClientId::parse(&client)?;
                    let removed = infra.destroy(&id, &printer(json)).await?;
                    if json {
                        println!(
                            "{}",
                            json!({ "result": { "removed": records(&removed.resources) } })
                        );
                    } else {
                        println!(
                            "destroyed: {} resources of {id} removed",
                            removed.resources.len()
                        );
                    }
                    Ok(())
                }
            }
        })
    }
}
