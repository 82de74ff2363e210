//! StackBox's AWS infrastructure phase (design document, Phase 1, steps 1–7) on the official SDK.
//!
//! [`AwsInfra::apply`] makes a client's resources in the design document's order: the ACM
//! certificate (DNS-validated through the client's Route53 zone), the MySQL databases on RDS,
//! the Secrets Manager secret, the target group and host rule on the operator's shared ALB
//! listener, the CloudFront distribution, the Route53 records, and the target registration.
//! Every step first finds what exists, by name and by the `stackbox:client` tag; a resource
//! with the client's name that is not the client's is a conflict, never adopted or touched. A
//! failed step undoes what this run created, newest first. [`AwsInfra::destroy`] finds all of
//! a client's resources from its id alone and removes them; [`AwsInfra::plan`] only reads.
//!
//! The environment is the SDK's: `AWS_REGION`, `AWS_ENDPOINT_URL` (moto in the tests), the
//! credential chain. The pure model (names, tags, diff) is `stackbox_core::infra`.

mod db;
mod error;
mod phase;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use stackbox_core::client::ClientId;
use stackbox_core::infra::{AwsSettings, InfraPlan, InfraRequest, ResourceKind};
use stackbox_core::secrets::Secrets;

pub use db::{
    ensure_statements, sql_string, valid_identifier, BoxFuture, DatabaseBootstrap, DbGrant,
    DbServer, MysqlBootstrap,
};
pub use error::{AwsError, InfraStep};

/// The SDK clients and the operator's settings.
pub struct AwsInfra {
    pub(crate) settings: AwsSettings,
    pub(crate) region: String,
    pub(crate) acm: aws_sdk_acm::Client,
    /// ACM in us-east-1, where CloudFront takes its certificates from.
    pub(crate) acm_cloudfront: aws_sdk_acm::Client,
    pub(crate) rds: aws_sdk_rds::Client,
    pub(crate) secrets: aws_sdk_secretsmanager::Client,
    pub(crate) elb: aws_sdk_elasticloadbalancingv2::Client,
    pub(crate) cloudfront: aws_sdk_cloudfront::Client,
    pub(crate) route53: aws_sdk_route53::Client,
    pub(crate) bootstrap: Box<dyn DatabaseBootstrap>,
    pub(crate) poll: Duration,
}

impl std::fmt::Debug for AwsInfra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsInfra")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A progress event: one per step and resource as it starts, is done or is undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraEvent {
    pub step: InfraStep,
    pub phase: EventPhase,
    /// The resource (`kind name`), for events about one.
    pub resource: Option<String>,
}

/// What an [`InfraEvent`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventPhase {
    Started,
    Created,
    Updated,
    /// Found as it should be.
    Kept,
    /// The step finished.
    Done,
    /// Removed while undoing a failed run.
    Undone,
    /// Removed by destroy.
    Removed,
    /// Waiting (for a certificate, an instance, a distribution).
    Waiting,
}

/// A resource this run created (or destroy removed): what the deployment journal records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceRecord {
    pub kind: ResourceKind,
    pub name: String,
    /// ARN or id.
    pub id: String,
}

/// What the containers need from the phase, and what it created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraOutcome {
    /// The MySQL endpoint (`None` when no enabled app uses MySQL).
    pub database: Option<DatabaseEndpoint>,
    pub secret_arn: String,
    pub certificate_arn: String,
    /// The certificate CloudFront uses (the same as `certificate_arn` in us-east-1).
    pub cloudfront_certificate_arn: String,
    pub hosted_zone_id: String,
    pub target_group_arn: String,
    pub listener_rule_arn: String,
    pub distribution_id: String,
    pub distribution_domain: String,
    /// What this run created, in order.
    pub created: Vec<ResourceRecord>,
}

/// Where the client's MySQL databases are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEndpoint {
    pub instance: String,
    pub host: String,
    pub port: u16,
    /// App → database (and user) name.
    pub databases: BTreeMap<String, String>,
}

/// What destroy removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removed {
    pub resources: Vec<ResourceRecord>,
}

impl AwsInfra {
    /// The SDK clients from the standard environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, the
    /// credential chain), with `settings.region` taking precedence over the environment's.
    pub async fn from_env(settings: &AwsSettings) -> Result<AwsInfra, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let config = loader.load().await;
        let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
            AwsError::failed(
                InfraStep::Setup,
                "region",
                "no AWS region is configured; set aws.region in the operator file or AWS_REGION",
            )
        })?;
        let acm_cloudfront = aws_sdk_acm::Client::from_conf(
            aws_sdk_acm::config::Builder::from(&config)
                .region(Region::new(
                    stackbox_core::infra::CLOUDFRONT_CERTIFICATE_REGION,
                ))
                .build(),
        );
        Ok(AwsInfra {
            settings: settings.clone(),
            region,
            acm: aws_sdk_acm::Client::new(&config),
            acm_cloudfront,
            rds: aws_sdk_rds::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cloudfront: aws_sdk_cloudfront::Client::new(&config),
            route53: aws_sdk_route53::Client::new(&config),
            bootstrap: match &settings.db_connect_via {
                Some((host, port)) => Box::new(db::Redirected::new(
                    Box::new(MysqlBootstrap),
                    host.clone(),
                    *port,
                )),
                None => Box::new(MysqlBootstrap),
            },
            poll: Duration::from_secs(5),
        })
    }

    /// Replaces the MySQL bootstrap (tests point it at a real MariaDB on loopback).
    pub fn with_bootstrap(mut self, bootstrap: Box<dyn DatabaseBootstrap>) -> AwsInfra {
        self.bootstrap = bootstrap;
        self
    }

    /// How often waits poll (certificate, instance, distribution); 5 s by default.
    pub fn with_poll_interval(mut self, poll: Duration) -> AwsInfra {
        self.poll = poll;
        self
    }

    /// The region in use.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// What [`AwsInfra::apply`] would do, found without changing anything.
    pub async fn plan(&self, request: &InfraRequest) -> Result<InfraPlan, AwsError> {
        let observed = phase::observe(self, request).await?;
        Ok(InfraPlan::diff(request, &observed))
    }

    /// Runs the phase: makes what is missing, updates what drifted, keeps the rest. On failure,
    /// what this run created is removed again, newest first, and the step's error returned.
    pub async fn apply(
        &self,
        request: &InfraRequest,
        events: &dyn Fn(InfraEvent),
    ) -> Result<InfraOutcome, AwsError> {
        phase::apply(self, request, events).await
    }

    /// Removes every AWS resource of the client, found by tag and name; idempotent.
    pub async fn destroy(
        &self,
        client: &ClientId,
        events: &dyn Fn(InfraEvent),
    ) -> Result<Removed, AwsError> {
        phase::destroy(self, client, events).await
    }

    /// The client's secrets from Secrets Manager, if its secret exists (and is its own).
    pub async fn read_secrets(&self, client: &ClientId) -> Result<Option<Secrets>, AwsError> {
        phase::read_secrets(self, client).await
    }
}
