//! The steps: find, then create or update; undo; destroy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_acm::types::{
    CertificateStatus, DomainValidation, RecordType as AcmRecordType, ValidationMethod,
};
use aws_sdk_cloudfront::types::{
    Aliases, CookiePreference, CustomOriginConfig, DefaultCacheBehavior, DistributionConfig,
    DistributionConfigWithTags, ForwardedValues, Headers, ItemSelection, MinimumProtocolVersion,
    Origin, OriginProtocolPolicy, Origins, PriceClass, SslSupportMethod, ViewerCertificate,
    ViewerProtocolPolicy,
};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate as ElbCertificate, HostHeaderConditionConfig, Matcher,
    ProtocolEnum, RuleCondition, TargetDescription, TargetTypeEnum,
};
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord as R53Record, ResourceRecordSet,
    RrType, TagResourceType,
};
use stackbox_core::client::ClientId;
use stackbox_core::infra::{
    all_app_databases, fingerprint, names, parse_secret_document, AlbTarget, DbPlacement,
    HostedZonePolicy, InfraRequest, ObservedInfra, ObservedResource, Owner, ResourceKind,
    ResourceRef, CLOUDFRONT_HOSTED_ZONE_ID, TAG_CLIENT, TAG_DOMAIN,
};
use stackbox_core::secrets::Secrets;

use crate::db::{DbGrant, DbServer};
use crate::error::{error_code, service_error, AwsError, InfraStep};
use crate::{
    AwsInfra, DatabaseEndpoint, EventPhase, InfraEvent, InfraOutcome, Removed, ResourceRecord,
};

/// Which of the client's two certificates a certificate is (both carry the client's tags).
const TAG_PURPOSE: &str = "stackbox:purpose";
const PURPOSE_ALB: &str = "alb";
const PURPOSE_CLOUDFRONT: &str = "cloudfront";
/// How long destroy and undo wait for a disabled distribution before deleting it.
const DISTRIBUTION_WAIT: Duration = Duration::from_secs(1800);

macro_rules! call {
    ($step:expr, $resource:expr, $service:literal, $operation:literal, $request:expr) => {
        $request
            .send()
            .await
            .map_err(|error| service_error($step, $resource, $service, $operation, error))?
    };
}

fn build_error(
    step: InfraStep,
    resource: &str,
) -> impl Fn(aws_smithy_build::BuildError) -> AwsError + '_ {
    move |error| AwsError::failed(step, resource, format!("invalid request: {error}"))
}

mod aws_smithy_build {
    pub use aws_sdk_acm::error::BuildError;
}

fn millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

fn owner_of(tags: &BTreeMap<String, String>, client: &ClientId) -> Owner {
    match tags.get(TAG_CLIENT) {
        Some(owner) if owner == client.as_str() => Owner::Client,
        Some(other) => Owner::OtherClient(other.clone()),
        None => Owner::Untagged,
    }
}

fn owner_words(owner: &Owner) -> String {
    match owner {
        Owner::OtherClient(other) => format!("belongs to client {other}"),
        _ => "is not tagged as this client's".to_string(),
    }
}

fn conflict(step: InfraStep, resource: &ResourceRef, id: &str, owner: &Owner) -> AwsError {
    AwsError::Conflict {
        step,
        resource: resource.to_string(),
        id: id.to_string(),
        owner: owner_words(owner),
    }
}

fn dotless(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What this run made, to undo on failure.
#[derive(Debug, Clone)]
enum Undo {
    HostedZone {
        id: String,
    },
    Certificate {
        arn: String,
        cloudfront: bool,
    },
    Record {
        zone: String,
        record: Box<ResourceRecordSet>,
    },
    DbInstance {
        id: String,
    },
    AppDatabases {
        server: DbServer,
        names: Vec<String>,
    },
    Secret {
        arn: String,
    },
    TargetGroup {
        arn: String,
    },
    ListenerRule {
        arn: String,
    },
    ListenerCertificate {
        listener: String,
        arn: String,
    },
    Distribution {
        id: String,
    },
    TargetRegistration {
        group: String,
        target: String,
        port: u16,
    },
}

struct Run<'a> {
    infra: &'a AwsInfra,
    events: &'a dyn Fn(InfraEvent),
    created: Vec<(ResourceRecord, Undo)>,
}

impl Run<'_> {
    fn event(&self, step: InfraStep, phase: EventPhase, resource: Option<&ResourceRef>) {
        (self.events)(InfraEvent {
            step,
            phase,
            resource: resource.map(ToString::to_string),
        });
    }

    fn created(&mut self, step: InfraStep, resource: &ResourceRef, id: &str, undo: Undo) {
        self.event(step, EventPhase::Created, Some(resource));
        self.created.push((
            ResourceRecord {
                kind: resource.kind,
                name: resource.name.clone(),
                id: id.to_string(),
            },
            undo,
        ));
    }
}

/// The shared listener's load balancer: its DNS name and Route53 zone (for alias records).
struct SharedAlb {
    listener: String,
    dns_name: String,
    zone_id: String,
}

async fn shared_alb(infra: &AwsInfra, step: InfraStep) -> Result<SharedAlb, AwsError> {
    let listener = infra.settings.listener_arn.clone().ok_or_else(|| {
        AwsError::failed(step, "aws.listener_arn", "is missing in the operator file")
    })?;
    let found = call!(
        step,
        "aws.listener_arn",
        "elbv2",
        "DescribeListeners",
        infra.elb.describe_listeners().listener_arns(&listener)
    );
    let lb_arn = found
        .listeners()
        .first()
        .and_then(|l| l.load_balancer_arn())
        .ok_or_else(|| {
            AwsError::failed(step, "aws.listener_arn", "names no listener; check the ARN")
        })?
        .to_string();
    let balancers = call!(
        step,
        "aws.listener_arn",
        "elbv2",
        "DescribeLoadBalancers",
        infra
            .elb
            .describe_load_balancers()
            .load_balancer_arns(&lb_arn)
    );
    let balancer = balancers.load_balancers().first().ok_or_else(|| {
        AwsError::failed(
            step,
            "aws.listener_arn",
            "the listener's load balancer is gone",
        )
    })?;
    Ok(SharedAlb {
        listener,
        dns_name: balancer.dns_name().unwrap_or_default().to_string(),
        zone_id: balancer
            .canonical_hosted_zone_id()
            .unwrap_or_default()
            .to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Finding what exists (shared by plan, apply and destroy)
// ---------------------------------------------------------------------------------------------

/// The public hosted zone named `domain`: (id without `/hostedzone/`, owner).
async fn find_zone(
    infra: &AwsInfra,
    step: InfraStep,
    domain: &str,
    client: &ClientId,
) -> Result<Option<(String, Owner)>, AwsError> {
    let resource = format!("hosted-zone {domain}");
    let zones = call!(
        step,
        &resource,
        "route53",
        "ListHostedZonesByName",
        infra.route53.list_hosted_zones_by_name().dns_name(domain)
    );
    let Some(zone) = zones.hosted_zones().iter().find(|zone| {
        dotless(zone.name()) == domain && !zone.config().is_some_and(|c| c.private_zone())
    }) else {
        return Ok(None);
    };
    let id = zone.id().trim_start_matches("/hostedzone/").to_string();
    let tags = call!(
        step,
        &resource,
        "route53",
        "ListTagsForResource",
        infra
            .route53
            .list_tags_for_resource()
            .resource_type(TagResourceType::Hostedzone)
            .resource_id(&id)
    );
    let tags: BTreeMap<String, String> = tags
        .resource_tag_set()
        .map(|set| {
            set.tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    // A zone without StackBox's tag is the operator's, used as it is; one of another client's
    // is a conflict.
    let owner = match owner_of(&tags, client) {
        Owner::Untagged => Owner::Operator,
        other => other,
    };
    Ok(Some((id, owner)))
}

/// The client's certificates for `domain` in one region (tagged `stackbox:client`), and whether
/// another client holds one for the same domain.
async fn find_certificate(
    acm: &aws_sdk_acm::Client,
    step: InfraStep,
    domain: &str,
    client: &ClientId,
    purpose: &str,
) -> Result<Option<(String, Owner, String)>, AwsError> {
    let resource = format!("certificate {domain}");
    let mut token = None;
    loop {
        let page = call!(
            step,
            &resource,
            "acm",
            "ListCertificates",
            acm.list_certificates().set_next_token(token.clone())
        );
        for summary in page.certificate_summary_list() {
            if summary.domain_name() != Some(domain) {
                continue;
            }
            let Some(arn) = summary.certificate_arn() else {
                continue;
            };
            let Some(tags) = certificate_tags(acm, step, arn).await? else {
                continue;
            };
            let tags: BTreeMap<String, String> = tags
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let status = summary
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            match owner_of(&tags, client) {
                Owner::Client => {
                    let usable = status == "ISSUED" || status == "PENDING_VALIDATION";
                    if usable && tags.get(TAG_PURPOSE).map(String::as_str) == Some(purpose) {
                        return Ok(Some((arn.to_string(), Owner::Client, status)));
                    }
                }
                Owner::OtherClient(other) => {
                    return Ok(Some((arn.to_string(), Owner::OtherClient(other), status)))
                }
                // The operator's own certificates for the domain are not ours and in nobody's way.
                Owner::Untagged | Owner::Operator => {}
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(None);
        }
    }
}

/// A certificate's tags; `None` when it was deleted since it was listed.
async fn certificate_tags(
    acm: &aws_sdk_acm::Client,
    step: InfraStep,
    arn: &str,
) -> Result<
    Option<aws_sdk_acm::operation::list_tags_for_certificate::ListTagsForCertificateOutput>,
    AwsError,
> {
    match acm
        .list_tags_for_certificate()
        .certificate_arn(arn)
        .send()
        .await
    {
        Ok(tags) => Ok(Some(tags)),
        Err(error) if error_code(&error) == Some("ResourceNotFoundException") => Ok(None),
        Err(error) => Err(service_error(
            step,
            format!("certificate {arn}"),
            "acm",
            "ListTagsForCertificate",
            error,
        )),
    }
}

/// All certificates tagged with the client, in one region.
async fn client_certificates(
    acm: &aws_sdk_acm::Client,
    client: &ClientId,
) -> Result<Vec<String>, AwsError> {
    let step = InfraStep::Destroy;
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let page = call!(
            step,
            "certificates",
            "acm",
            "ListCertificates",
            acm.list_certificates().set_next_token(token.clone())
        );
        for summary in page.certificate_summary_list() {
            let Some(arn) = summary.certificate_arn() else {
                continue;
            };
            let Some(tags) = certificate_tags(acm, step, arn).await? else {
                continue;
            };
            if tags
                .tags()
                .iter()
                .any(|t| t.key() == TAG_CLIENT && t.value() == Some(client.as_str()))
            {
                found.push(arn.to_string());
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(found);
        }
    }
}

/// RDS instance by identifier: (arn, owner, status, endpoint).
struct FoundInstance {
    arn: String,
    owner: Owner,
    status: String,
    endpoint: Option<(String, u16)>,
    class: String,
    engine: String,
}

async fn find_instance(
    infra: &AwsInfra,
    step: InfraStep,
    identifier: &str,
    client: &ClientId,
) -> Result<Option<FoundInstance>, AwsError> {
    let resource = format!("db-instance {identifier}");
    let result = infra
        .rds
        .describe_db_instances()
        .db_instance_identifier(identifier)
        .send()
        .await;
    let output = match result {
        Ok(output) => output,
        Err(error) if error_code(&error) == Some("DBInstanceNotFound") => return Ok(None),
        Err(error) => {
            return Err(service_error(
                step,
                resource,
                "rds",
                "DescribeDBInstances",
                error,
            ))
        }
    };
    let Some(instance) = output.db_instances().first() else {
        return Ok(None);
    };
    let tags: BTreeMap<String, String> = instance
        .tag_list()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect();
    Ok(Some(FoundInstance {
        arn: instance.db_instance_arn().unwrap_or(identifier).to_string(),
        owner: owner_of(&tags, client),
        status: instance
            .db_instance_status()
            .unwrap_or_default()
            .to_string(),
        endpoint: instance
            .endpoint()
            .and_then(|e| Some((e.address()?.to_string(), u16::try_from(e.port()?).ok()?))),
        class: instance.db_instance_class().unwrap_or_default().to_string(),
        engine: instance.engine().unwrap_or_default().to_string(),
    }))
}

/// The secret by name: (arn, owner).
async fn find_secret(
    infra: &AwsInfra,
    step: InfraStep,
    name: &str,
    client: &ClientId,
) -> Result<Option<(String, Owner)>, AwsError> {
    let resource = format!("secret {name}");
    match infra.secrets.describe_secret().secret_id(name).send().await {
        Ok(found) => {
            let tags: BTreeMap<String, String> = found
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            Ok(Some((
                found.arn().unwrap_or(name).to_string(),
                owner_of(&tags, client),
            )))
        }
        Err(error) if error_code(&error) == Some("ResourceNotFoundException") => Ok(None),
        Err(error) => Err(service_error(
            step,
            resource,
            "secretsmanager",
            "DescribeSecret",
            error,
        )),
    }
}

async fn secret_value(
    infra: &AwsInfra,
    step: InfraStep,
    id: &str,
) -> Result<Option<String>, AwsError> {
    let found = call!(
        step,
        format!("secret {id}"),
        "secretsmanager",
        "GetSecretValue",
        infra.secrets.get_secret_value().secret_id(id)
    );
    Ok(found.secret_string().map(str::to_string))
}

async fn elb_tags(
    infra: &AwsInfra,
    step: InfraStep,
    arns: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
    let mut out = BTreeMap::new();
    for chunk in arns.chunks(20) {
        let found = match infra
            .elb
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
            .await
        {
            Ok(found) => found,
            // One of them was deleted since it was listed (another client's, being
            // destroyed): ask one by one and skip what is gone.
            Err(error)
                if chunk.len() > 1
                    && error_code(&error).is_some_and(|c| c.ends_with("NotFound")) =>
            {
                for arn in chunk {
                    let one = Box::pin(elb_tags(infra, step, std::slice::from_ref(arn))).await;
                    match one {
                        Ok(tags) => out.extend(tags),
                        Err(error) if error.code().is_some_and(|c| c.ends_with("NotFound")) => {}
                        Err(error) => return Err(error),
                    }
                }
                continue;
            }
            Err(error) => return Err(service_error(step, "tags", "elbv2", "DescribeTags", error)),
        };
        for description in found.tag_descriptions() {
            let tags = description
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            out.insert(
                description.resource_arn().unwrap_or_default().to_string(),
                tags,
            );
        }
    }
    Ok(out)
}

/// The target group by name: (arn, owner, health-check path, port, target type).
struct FoundGroup {
    arn: String,
    owner: Owner,
    attributes: BTreeMap<String, String>,
}

async fn find_target_group(
    infra: &AwsInfra,
    step: InfraStep,
    name: &str,
    client: &ClientId,
) -> Result<Option<FoundGroup>, AwsError> {
    let result = infra.elb.describe_target_groups().names(name).send().await;
    let output = match result {
        Ok(output) => output,
        Err(error) if error_code(&error) == Some("TargetGroupNotFound") => return Ok(None),
        Err(error) => {
            return Err(service_error(
                step,
                format!("target-group {name}"),
                "elbv2",
                "DescribeTargetGroups",
                error,
            ))
        }
    };
    let Some(group) = output.target_groups().first() else {
        return Ok(None);
    };
    let arn = group.target_group_arn().unwrap_or_default().to_string();
    let tags = elb_tags(infra, step, std::slice::from_ref(&arn)).await?;
    let owner = owner_of(tags.get(&arn).unwrap_or(&BTreeMap::new()), client);
    let attributes = BTreeMap::from([
        (
            "health_check_path".to_string(),
            group.health_check_path().unwrap_or_default().to_string(),
        ),
        (
            "port".to_string(),
            group.port().map(|p| p.to_string()).unwrap_or_default(),
        ),
        (
            "target_type".to_string(),
            group
                .target_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
        ),
    ]);
    Ok(Some(FoundGroup {
        arn,
        owner,
        attributes,
    }))
}

/// The listener's rules: (arn, priority, hosts, tags).
struct FoundRule {
    arn: String,
    priority: Option<u32>,
    hosts: Vec<String>,
    tags: BTreeMap<String, String>,
}

async fn listener_rules(
    infra: &AwsInfra,
    step: InfraStep,
    listener: &str,
) -> Result<Vec<FoundRule>, AwsError> {
    let mut rules = Vec::new();
    let mut marker = None;
    loop {
        let page = call!(
            step,
            "aws.listener_arn",
            "elbv2",
            "DescribeRules",
            infra
                .elb
                .describe_rules()
                .listener_arn(listener)
                .set_marker(marker.clone())
        );
        for rule in page.rules() {
            if rule.is_default() == Some(true) {
                continue;
            }
            let hosts = rule
                .conditions()
                .iter()
                .filter(|c| c.field() == Some("host-header"))
                .flat_map(|c| {
                    c.host_header_config()
                        .map(|h| h.values().to_vec())
                        .unwrap_or_else(|| c.values().to_vec())
                })
                .collect();
            rules.push(FoundRule {
                arn: rule.rule_arn().unwrap_or_default().to_string(),
                priority: rule.priority().and_then(|p| p.parse().ok()),
                hosts,
                tags: BTreeMap::new(),
            });
        }
        marker = page.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    let arns: Vec<String> = rules.iter().map(|r| r.arn.clone()).collect();
    let mut tags = elb_tags(infra, step, &arns).await?;
    for rule in &mut rules {
        rule.tags = tags.remove(&rule.arn).unwrap_or_default();
    }
    Ok(rules)
}

/// The client's rule on the listener, or a rule of someone else's for the client's hosts.
fn client_rule<'a>(
    rules: &'a [FoundRule],
    client: &ClientId,
    hosts: &[String],
) -> Option<(&'a FoundRule, Owner)> {
    if let Some(rule) = rules
        .iter()
        .find(|r| owner_of(&r.tags, client) == Owner::Client)
    {
        return Some((rule, Owner::Client));
    }
    rules
        .iter()
        .find(|r| r.hosts.iter().any(|h| hosts.contains(h)))
        .map(|r| (r, owner_of(&r.tags, client)))
}

/// A distribution found: (id, arn, domain, owner, aliases, certificate).
struct FoundDistribution {
    id: String,
    domain: String,
    owner: Owner,
    aliases: Vec<String>,
    certificate: String,
    enabled: bool,
}

async fn distributions(
    infra: &AwsInfra,
    step: InfraStep,
) -> Result<Vec<(String, String, String)>, AwsError> {
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let page = call!(
            step,
            "distributions",
            "cloudfront",
            "ListDistributions",
            infra
                .cloudfront
                .list_distributions()
                .set_marker(marker.clone())
        );
        let Some(list) = page.distribution_list() else {
            break;
        };
        for summary in list.items() {
            out.push((
                summary.id().to_string(),
                summary.arn().to_string(),
                summary.domain_name().to_string(),
            ));
        }
        marker = list.next_marker().map(str::to_string);
        if marker.is_none() || !list.is_truncated() {
            break;
        }
    }
    Ok(out)
}

/// The client's distribution (by tag), or one of someone else's with the client's apex as alias
/// or the client's caller reference.
async fn find_distribution(
    infra: &AwsInfra,
    step: InfraStep,
    client: &ClientId,
    domain: Option<&str>,
) -> Result<Vec<FoundDistribution>, AwsError> {
    let reference = names::distribution_reference(client);
    let mut found = Vec::new();
    for (id, arn, dns) in distributions(infra, step).await? {
        // A distribution deleted since it was listed is skipped.
        let vanished = |code: Option<&str>| {
            matches!(
                code,
                Some("NoSuchDistribution" | "NoSuchResource" | "EntityNotFound")
            )
        };
        let tags = match infra
            .cloudfront
            .list_tags_for_resource()
            .resource(&arn)
            .send()
            .await
        {
            Ok(tags) => tags,
            Err(error) if vanished(error_code(&error)) => continue,
            Err(error) => {
                return Err(service_error(
                    step,
                    format!("distribution {id}"),
                    "cloudfront",
                    "ListTagsForResource",
                    error,
                ))
            }
        };
        let tags: BTreeMap<String, String> = tags
            .tags()
            .map(|t| {
                t.items()
                    .iter()
                    .map(|t| {
                        (
                            t.key().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let owner = owner_of(&tags, client);
        let config = match infra
            .cloudfront
            .get_distribution_config()
            .id(&id)
            .send()
            .await
        {
            Ok(config) => config,
            Err(error) if vanished(error_code(&error)) => continue,
            Err(error) => {
                return Err(service_error(
                    step,
                    format!("distribution {id}"),
                    "cloudfront",
                    "GetDistributionConfig",
                    error,
                ))
            }
        };
        let Some(config) = config.distribution_config() else {
            continue;
        };
        let aliases: Vec<String> = config
            .aliases()
            .map(|a| a.items().to_vec())
            .unwrap_or_default();
        let ours_by_name = config
            .caller_reference()
            .starts_with(&format!("{reference}-"))
            || domain.is_some_and(|d| aliases.iter().any(|a| a == d));
        if owner == Owner::Client || ours_by_name {
            found.push(FoundDistribution {
                id,
                domain: dns,
                owner,
                aliases,
                certificate: config
                    .viewer_certificate()
                    .and_then(|v| v.acm_certificate_arn())
                    .unwrap_or_default()
                    .to_string(),
                enabled: config.enabled(),
            });
        }
    }
    Ok(found)
}

/// The record sets named `host` in the zone.
async fn records_named(
    infra: &AwsInfra,
    step: InfraStep,
    zone: &str,
    host: &str,
) -> Result<Vec<ResourceRecordSet>, AwsError> {
    let found = call!(
        step,
        format!("dns-record {host}"),
        "route53",
        "ListResourceRecordSets",
        infra
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(host)
            .max_items(10)
    );
    Ok(found
        .resource_record_sets()
        .iter()
        .filter(|r| dotless(r.name()) == dotless(host))
        .cloned()
        .collect())
}

async fn all_records(
    infra: &AwsInfra,
    step: InfraStep,
    zone: &str,
) -> Result<Vec<ResourceRecordSet>, AwsError> {
    let mut out = Vec::new();
    let mut start: Option<(String, RrType)> = None;
    loop {
        let mut request = infra
            .route53
            .list_resource_record_sets()
            .hosted_zone_id(zone);
        if let Some((name, kind)) = &start {
            request = request
                .start_record_name(name)
                .start_record_type(kind.clone());
        }
        let page = call!(
            step,
            format!("hosted-zone {zone}"),
            "route53",
            "ListResourceRecordSets",
            request
        );
        out.extend(page.resource_record_sets().iter().cloned());
        if !page.is_truncated() {
            return Ok(out);
        }
        match (page.next_record_name(), page.next_record_type()) {
            (Some(name), Some(kind)) => start = Some((name.to_string(), kind.clone())),
            _ => return Ok(out),
        }
    }
}

fn alias_record(host: &str, zone_id: &str, dns_name: &str) -> Result<ResourceRecordSet, AwsError> {
    let resource = format!("dns-record {host}");
    let step = InfraStep::Dns;
    ResourceRecordSet::builder()
        .name(host)
        .r#type(RrType::A)
        .alias_target(
            AliasTarget::builder()
                .hosted_zone_id(zone_id)
                .dns_name(dns_name)
                .evaluate_target_health(false)
                .build()
                .map_err(build_error(step, &resource))?,
        )
        .build()
        .map_err(build_error(step, &resource))
}

fn alias_of(record: &ResourceRecordSet) -> Option<String> {
    record.alias_target().map(|a| dotless(a.dns_name()))
}

async fn change_records(
    infra: &AwsInfra,
    step: InfraStep,
    zone: &str,
    action: ChangeAction,
    records: Vec<ResourceRecordSet>,
) -> Result<(), AwsError> {
    if records.is_empty() {
        return Ok(());
    }
    let resource = records
        .iter()
        .map(|r| format!("dns-record {}", dotless(r.name())))
        .collect::<Vec<_>>()
        .join(", ");
    let mut changes = Vec::new();
    for record in records {
        changes.push(
            Change::builder()
                .action(action.clone())
                .resource_record_set(record)
                .build()
                .map_err(build_error(step, &resource))?,
        );
    }
    let batch = ChangeBatch::builder()
        .set_changes(Some(changes))
        .build()
        .map_err(build_error(step, &resource))?;
    call!(
        step,
        &resource,
        "route53",
        "ChangeResourceRecordSets",
        infra
            .route53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// plan: observe only
// ---------------------------------------------------------------------------------------------

pub(crate) async fn observe(
    infra: &AwsInfra,
    request: &InfraRequest,
) -> Result<ObservedInfra, AwsError> {
    let client = &request.client;
    let domain = request.domain.as_str();
    let step = InfraStep::Setup;
    let mut observed = ObservedInfra::default();
    let attrs = |kind: ResourceKind, name: &str| {
        request
            .resource(kind, name)
            .map(|r| r.attributes.clone())
            .unwrap_or_default()
    };
    let zone = find_zone(infra, step, domain, client).await?;
    if let Some((id, owner)) = &zone {
        observed.insert(
            ResourceRef::new(ResourceKind::HostedZone, domain),
            ObservedResource {
                id: id.clone(),
                owner: owner.clone(),
                attributes: BTreeMap::new(),
            },
        );
    }
    let mut certificate_arn = None;
    let mut cloudfront_certificate_arn = None;
    for (kind, acm, purpose) in [
        (ResourceKind::Certificate, &infra.acm, PURPOSE_ALB),
        (
            ResourceKind::CloudfrontCertificate,
            &infra.acm_cloudfront,
            PURPOSE_CLOUDFRONT,
        ),
    ] {
        if request.resource(kind, domain).is_none() {
            continue;
        }
        if let Some((arn, owner, _)) = find_certificate(acm, step, domain, client, purpose).await? {
            if kind == ResourceKind::Certificate {
                certificate_arn = Some(arn.clone());
            } else {
                cloudfront_certificate_arn = Some(arn.clone());
            }
            observed.insert(
                ResourceRef::new(kind, domain),
                ObservedResource {
                    id: arn,
                    owner,
                    attributes: attrs(kind, domain),
                },
            );
        }
    }
    if let Some(database) = &request.database {
        let mut server_known = false;
        if database.placement == DbPlacement::Dedicated {
            if let Some(found) = find_instance(infra, step, &database.instance, client).await? {
                let attributes = BTreeMap::from([
                    ("engine".to_string(), found.engine.clone()),
                    ("instance_class".to_string(), found.class.clone()),
                ]);
                server_known = found.owner == Owner::Client;
                observed.insert(
                    ResourceRef::new(ResourceKind::DbInstance, &database.instance),
                    ObservedResource {
                        id: found.arn,
                        owner: found.owner,
                        attributes,
                    },
                );
            }
        } else {
            server_known = true;
        }
        if server_known {
            let server = database_server(infra, request, step).await?;
            let wanted: Vec<String> = database.databases.iter().map(|d| d.name.clone()).collect();
            for name in infra.bootstrap.existing(&server, &wanted).await? {
                observed.insert(
                    ResourceRef::new(ResourceKind::AppDatabase, &name),
                    ObservedResource {
                        id: format!("{}/{name}", database.instance),
                        owner: Owner::Client,
                        attributes: BTreeMap::new(),
                    },
                );
            }
        }
    }
    let secret_name = names::secret(client);
    if let Some((arn, owner)) = find_secret(infra, step, &secret_name, client).await? {
        let mut attributes = BTreeMap::new();
        if owner == Owner::Client {
            if let Some(value) = secret_value(infra, step, &arn).await? {
                attributes.insert("content_sha256".to_string(), fingerprint(&value));
            }
        }
        observed.insert(
            ResourceRef::new(ResourceKind::Secret, &secret_name),
            ObservedResource {
                id: arn,
                owner,
                attributes,
            },
        );
    }
    let group_name = names::target_group(client);
    let group = find_target_group(infra, step, &group_name, client).await?;
    if let Some(found) = &group {
        observed.insert(
            ResourceRef::new(ResourceKind::TargetGroup, &group_name),
            ObservedResource {
                id: found.arn.clone(),
                owner: found.owner.clone(),
                attributes: found.attributes.clone(),
            },
        );
    }
    let alb = shared_alb(infra, step).await?;
    let hosts = vec![domain.to_string(), format!("*.{domain}")];
    let rules = listener_rules(infra, step, &alb.listener).await?;
    if let Some((rule, owner)) = client_rule(&rules, client, &hosts) {
        observed.insert(
            ResourceRef::new(ResourceKind::ListenerRule, domain),
            ObservedResource {
                id: rule.arn.clone(),
                owner,
                attributes: BTreeMap::from([("hosts".to_string(), rule.hosts.join(","))]),
            },
        );
    }
    if let Some(arn) = &certificate_arn {
        let attached = call!(
            step,
            "aws.listener_arn",
            "elbv2",
            "DescribeListenerCertificates",
            infra
                .elb
                .describe_listener_certificates()
                .listener_arn(&alb.listener)
        );
        if attached
            .certificates()
            .iter()
            .any(|c| c.certificate_arn() == Some(arn))
        {
            observed.insert(
                ResourceRef::new(ResourceKind::ListenerCertificate, domain),
                ObservedResource {
                    id: arn.clone(),
                    owner: Owner::Client,
                    attributes: BTreeMap::new(),
                },
            );
        }
    }
    let found = find_distribution(infra, step, client, Some(domain)).await?;
    let distribution = found.first();
    if let Some(found) = distribution {
        observed.insert(
            ResourceRef::new(ResourceKind::Distribution, domain),
            ObservedResource {
                id: found.id.clone(),
                owner: found.owner.clone(),
                attributes: BTreeMap::from([("aliases".to_string(), found.aliases.join(","))]),
            },
        );
    }
    if let Some((zone_id, _)) = &zone {
        let cdn_domain = distribution.map(|d| dotless(&d.domain));
        for (index, host) in request.hostnames.iter().enumerate() {
            let records = records_named(infra, step, zone_id, host).await?;
            let Some(record) = records.first() else {
                continue;
            };
            let target = alias_of(record);
            let (points_to, ours) = if target.is_some() && target == cdn_domain {
                ("cloudfront", true)
            } else if target.as_deref() == Some(&dotless(&alb.dns_name)) {
                ("alb", true)
            } else {
                ("elsewhere", false)
            };
            let _ = index;
            observed.insert(
                ResourceRef::new(ResourceKind::DnsRecord, host),
                ObservedResource {
                    id: format!("{zone_id}/{host}"),
                    owner: if ours { Owner::Client } else { Owner::Untagged },
                    attributes: BTreeMap::from([("alias".to_string(), points_to.to_string())]),
                },
            );
        }
    }
    if let (Some(group), Some(target)) = (&group, &request.settings.target) {
        if group.owner == Owner::Client {
            let health = call!(
                step,
                "target-registration",
                "elbv2",
                "DescribeTargetHealth",
                infra
                    .elb
                    .describe_target_health()
                    .target_group_arn(&group.arn)
            );
            let port = i32::from(request.settings.target_port);
            let registered = health.target_health_descriptions().iter().any(|d| {
                d.target()
                    .is_some_and(|t| t.id() == Some(target.id()) && t.port() == Some(port))
            });
            if registered {
                let name = format!("{}:{}", target.id(), request.settings.target_port);
                observed.insert(
                    ResourceRef::new(ResourceKind::TargetRegistration, &name),
                    ObservedResource {
                        id: group.arn.clone(),
                        owner: Owner::Client,
                        attributes: BTreeMap::new(),
                    },
                );
            }
        }
    }
    let _ = (&certificate_arn, &cloudfront_certificate_arn);
    Ok(observed)
}

/// The MySQL server and its master login.
async fn database_server(
    infra: &AwsInfra,
    request: &InfraRequest,
    step: InfraStep,
) -> Result<DbServer, AwsError> {
    let Some(database) = &request.database else {
        return Err(AwsError::failed(step, "database", "no app uses MySQL"));
    };
    match database.placement {
        DbPlacement::Dedicated => {
            let found = find_instance(infra, step, &database.instance, &request.client)
                .await?
                .ok_or_else(|| {
                    AwsError::failed(
                        step,
                        format!("db-instance {}", database.instance),
                        "is gone",
                    )
                })?;
            let (host, port) = found.endpoint.ok_or_else(|| {
                AwsError::failed(
                    step,
                    format!("db-instance {}", database.instance),
                    "has no endpoint yet",
                )
            })?;
            Ok(DbServer::new(
                host,
                port,
                names::DB_MASTER_USER,
                request.dedicated_master_password().unwrap_or_default(),
            ))
        }
        DbPlacement::Shared => shared_server(infra, step).await,
    }
}

/// The operator's shared instance and its master login (from its Secrets Manager secret).
async fn shared_server(infra: &AwsInfra, step: InfraStep) -> Result<DbServer, AwsError> {
    let settings = &infra.settings;
    let instance = settings.shared_db_instance.clone().ok_or_else(|| {
        AwsError::failed(
            step,
            "aws.shared_db_instance",
            "is missing in the operator file",
        )
    })?;
    let secret = settings.shared_db_master_secret.clone().ok_or_else(|| {
        AwsError::failed(
            step,
            "aws.shared_db_master_secret",
            "is missing in the operator file",
        )
    })?;
    let found = infra
        .rds
        .describe_db_instances()
        .db_instance_identifier(&instance)
        .send()
        .await
        .map_err(|error| {
            if error_code(&error) == Some("DBInstanceNotFound") {
                AwsError::failed(
                    step,
                    "aws.shared_db_instance",
                    format!(
                        "the RDS instance {instance:?} does not exist; create it or fix the name"
                    ),
                )
            } else {
                service_error(
                    step,
                    "aws.shared_db_instance",
                    "rds",
                    "DescribeDBInstances",
                    error,
                )
            }
        })?;
    let (host, port) = found
        .db_instances()
        .first()
        .and_then(|i| i.endpoint())
        .and_then(|e| Some((e.address()?.to_string(), u16::try_from(e.port()?).ok()?)))
        .ok_or_else(|| {
            AwsError::failed(
                step,
                "aws.shared_db_instance",
                "the instance has no endpoint yet",
            )
        })?;
    let document = secret_value(infra, step, &secret)
        .await?
        .unwrap_or_default();
    let login: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&document).map_err(|_| {
            AwsError::failed(
                step,
                "aws.shared_db_master_secret",
                "is not a JSON object with \"username\" and \"password\"",
            )
        })?;
    let field = |name: &str| {
        login
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                AwsError::failed(
                    step,
                    "aws.shared_db_master_secret",
                    format!("has no string \"{name}\""),
                )
            })
    };
    Ok(DbServer::new(
        host,
        port,
        field("username")?,
        field("password")?,
    ))
}

// ---------------------------------------------------------------------------------------------
// apply
// ---------------------------------------------------------------------------------------------

pub(crate) async fn apply(
    infra: &AwsInfra,
    request: &InfraRequest,
    events: &dyn Fn(InfraEvent),
) -> Result<InfraOutcome, AwsError> {
    let mut run = Run {
        infra,
        events,
        created: Vec::new(),
    };
    match steps(&mut run, request).await {
        Ok(mut outcome) => {
            outcome.created = run.created.iter().map(|(r, _)| r.clone()).collect();
            Ok(outcome)
        }
        Err(error) => {
            let remaining = undo(&mut run).await;
            if remaining.is_empty() {
                Err(error)
            } else {
                Err(AwsError::RollbackIncomplete {
                    error: Box::new(error),
                    remaining,
                })
            }
        }
    }
}

async fn steps(run: &mut Run<'_>, request: &InfraRequest) -> Result<InfraOutcome, AwsError> {
    let infra = run.infra;
    let client = &request.client;
    let domain = request.domain.as_str();

    // 1. Certificates, through the client's hosted zone.
    let step = InfraStep::Certificate;
    run.event(step, EventPhase::Started, None);
    let zone_ref = ResourceRef::new(ResourceKind::HostedZone, domain);
    let zone = match find_zone(infra, step, domain, client).await? {
        Some((id, Owner::OtherClient(other))) => {
            return Err(conflict(step, &zone_ref, &id, &Owner::OtherClient(other)))
        }
        Some((id, _)) => {
            run.event(step, EventPhase::Kept, Some(&zone_ref));
            id
        }
        None if request.settings.hosted_zone == HostedZonePolicy::Create => {
            let made = call!(
                step,
                zone_ref.to_string(),
                "route53",
                "CreateHostedZone",
                infra
                    .route53
                    .create_hosted_zone()
                    .name(domain)
                    .caller_reference(format!("stackbox-{client}-{}", millis()))
            );
            let id = made
                .hosted_zone()
                .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
                .unwrap_or_default();
            run.created(step, &zone_ref, &id, Undo::HostedZone { id: id.clone() });
            let tags: Vec<aws_sdk_route53::types::Tag> = request
                .tags
                .iter()
                .map(|(k, v)| {
                    aws_sdk_route53::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                })
                .collect();
            call!(
                step,
                zone_ref.to_string(),
                "route53",
                "ChangeTagsForResource",
                infra
                    .route53
                    .change_tags_for_resource()
                    .resource_type(TagResourceType::Hostedzone)
                    .resource_id(&id)
                    .set_add_tags(Some(tags))
            );
            id
        }
        None => {
            return Err(AwsError::failed(
                step,
                zone_ref.to_string(),
                "no public Route53 hosted zone has this name; create and delegate it, or set \
                 aws.hosted_zone = \"create\" to let StackBox create it",
            ))
        }
    };
    let certificate_arn =
        ensure_certificate(run, request, &zone, ResourceKind::Certificate).await?;
    let cloudfront_certificate_arn = if request
        .resource(ResourceKind::CloudfrontCertificate, domain)
        .is_some()
        && infra.region != stackbox_core::infra::CLOUDFRONT_CERTIFICATE_REGION
    {
        ensure_certificate(run, request, &zone, ResourceKind::CloudfrontCertificate).await?
    } else {
        certificate_arn.clone()
    };
    run.event(step, EventPhase::Done, None);

    // 2. The database instance, the app databases and users.
    let step = InfraStep::Database;
    let database = match &request.database {
        None => None,
        Some(database) => {
            run.event(step, EventPhase::Started, None);
            if database.placement == DbPlacement::Dedicated {
                ensure_instance(run, request).await?;
            }
            let server = database_server(infra, request, step).await?;
            let wanted: Vec<String> = database.databases.iter().map(|d| d.name.clone()).collect();
            let existing = infra.bootstrap.existing(&server, &wanted).await?;
            let grants: Vec<DbGrant> = database
                .databases
                .iter()
                .map(|db| {
                    DbGrant::new(
                        db.name.clone(),
                        request.database_password(db).unwrap_or_default(),
                    )
                })
                .collect();
            let new: Vec<String> = wanted
                .iter()
                .filter(|name| !existing.contains(name))
                .cloned()
                .collect();
            // Recorded before running, so that a half-done bootstrap is undone too.
            for name in &new {
                run.created(
                    step,
                    &ResourceRef::new(ResourceKind::AppDatabase, name),
                    &format!("{}/{name}", database.instance),
                    Undo::AppDatabases {
                        server: server.clone(),
                        names: vec![name.clone()],
                    },
                );
            }
            infra.bootstrap.ensure(&server, &grants).await?;
            for name in &existing {
                run.event(
                    step,
                    EventPhase::Kept,
                    Some(&ResourceRef::new(ResourceKind::AppDatabase, name)),
                );
            }
            run.event(step, EventPhase::Done, None);
            Some(DatabaseEndpoint {
                instance: database.instance.clone(),
                host: server.host.clone(),
                port: server.port,
                databases: database
                    .databases
                    .iter()
                    .map(|db| (db.app.key().to_string(), db.name.clone()))
                    .collect(),
            })
        }
    };

    // 3. The secret.
    let step = InfraStep::Secret;
    run.event(step, EventPhase::Started, None);
    let secret_arn = ensure_secret(run, request).await?;
    run.event(step, EventPhase::Done, None);

    // 4. Target group, listener rule, listener certificate.
    let step = InfraStep::LoadBalancer;
    run.event(step, EventPhase::Started, None);
    let alb = shared_alb(infra, step).await?;
    let target_group_arn = ensure_target_group(run, request).await?;
    let listener_rule_arn = ensure_rule(run, request, &alb, &target_group_arn).await?;
    ensure_listener_certificate(run, request, &alb, &certificate_arn).await?;
    run.event(step, EventPhase::Done, None);

    // 5. CloudFront.
    let step = InfraStep::Cdn;
    run.event(step, EventPhase::Started, None);
    let (distribution_id, distribution_domain) =
        ensure_distribution(run, request, &alb, &cloudfront_certificate_arn).await?;
    run.event(step, EventPhase::Done, None);

    // 6. DNS records.
    let step = InfraStep::Dns;
    run.event(step, EventPhase::Started, None);
    for (index, host) in request.hostnames.iter().enumerate() {
        let (zone_id, dns_name, points_to) = if index == 0 {
            (
                CLOUDFRONT_HOSTED_ZONE_ID,
                distribution_domain.as_str(),
                "cloudfront",
            )
        } else {
            (alb.zone_id.as_str(), alb.dns_name.as_str(), "alb")
        };
        let resource = ResourceRef::new(ResourceKind::DnsRecord, host);
        let existing = records_named(infra, step, &zone, host).await?;
        let mine = [dotless(&distribution_domain), dotless(&alb.dns_name)];
        if let Some(other) = existing.iter().find(|r| {
            alias_of(r).is_none_or(|target| !mine.contains(&target))
                && matches!(r.r#type(), RrType::A | RrType::Aaaa | RrType::Cname)
        }) {
            return Err(AwsError::Conflict {
                step,
                resource: resource.to_string(),
                id: format!("{} {}", other.r#type().as_str(), dotless(other.name())),
                owner: "points elsewhere (not made by StackBox)".to_string(),
            });
        }
        let record = alias_record(host, zone_id, dns_name)?;
        if let Some(current) = existing.iter().find(|r| *r.r#type() == RrType::A) {
            if alias_of(current) == Some(dotless(dns_name)) {
                run.event(step, EventPhase::Kept, Some(&resource));
                continue;
            }
            change_records(infra, step, &zone, ChangeAction::Upsert, vec![record]).await?;
            run.event(step, EventPhase::Updated, Some(&resource));
            let _ = points_to;
            continue;
        }
        change_records(
            infra,
            step,
            &zone,
            ChangeAction::Create,
            vec![record.clone()],
        )
        .await?;
        run.created(
            step,
            &resource,
            &format!("{zone}/{host}"),
            Undo::Record {
                zone: zone.clone(),
                record: Box::new(record),
            },
        );
    }
    run.event(step, EventPhase::Done, None);

    // 7. The host as target.
    let step = InfraStep::TargetRegistration;
    run.event(step, EventPhase::Started, None);
    if let Some(target) = &request.settings.target {
        ensure_registration(run, request, &target_group_arn, target).await?;
    }
    run.event(step, EventPhase::Done, None);

    Ok(InfraOutcome {
        database,
        secret_arn,
        certificate_arn,
        cloudfront_certificate_arn,
        hosted_zone_id: zone,
        target_group_arn,
        listener_rule_arn,
        distribution_id,
        distribution_domain,
        created: Vec::new(),
    })
}

async fn ensure_certificate(
    run: &mut Run<'_>,
    request: &InfraRequest,
    zone: &str,
    kind: ResourceKind,
) -> Result<String, AwsError> {
    let infra = run.infra;
    let step = InfraStep::Certificate;
    let domain = request.domain.as_str();
    let resource = ResourceRef::new(kind, domain);
    let (acm, purpose) = if kind == ResourceKind::Certificate {
        (&infra.acm, PURPOSE_ALB)
    } else {
        (&infra.acm_cloudfront, PURPOSE_CLOUDFRONT)
    };
    let arn = match find_certificate(acm, step, domain, &request.client, purpose).await? {
        Some((arn, Owner::Client, _)) => {
            run.event(step, EventPhase::Kept, Some(&resource));
            arn
        }
        Some((arn, owner, _)) => return Err(conflict(step, &resource, &arn, &owner)),
        None => {
            let mut tags = Vec::new();
            for (key, value) in request
                .tags
                .iter()
                .chain([(&TAG_PURPOSE.to_string(), &purpose.to_string())])
            {
                tags.push(
                    aws_sdk_acm::types::Tag::builder()
                        .key(key)
                        .value(value)
                        .build()
                        .map_err(build_error(step, domain))?,
                );
            }
            let made = call!(
                step,
                resource.to_string(),
                "acm",
                "RequestCertificate",
                acm.request_certificate()
                    .domain_name(domain)
                    .subject_alternative_names(format!("*.{domain}"))
                    .validation_method(ValidationMethod::Dns)
                    .set_tags(Some(tags))
            );
            let arn = made.certificate_arn().unwrap_or_default().to_string();
            run.created(
                step,
                &resource,
                &arn,
                Undo::Certificate {
                    arn: arn.clone(),
                    cloudfront: kind == ResourceKind::CloudfrontCertificate,
                },
            );
            arn
        }
    };
    // Validation records, then the wait for ISSUED.
    let deadline = std::time::Instant::now()
        + Duration::from_secs(u64::from(request.settings.certificate_wait_seconds));
    let mut records_written = false;
    run.event(step, EventPhase::Waiting, Some(&resource));
    loop {
        let described = call!(
            step,
            resource.to_string(),
            "acm",
            "DescribeCertificate",
            acm.describe_certificate().certificate_arn(&arn)
        );
        let certificate = described.certificate();
        let status = certificate.and_then(|c| c.status()).cloned();
        if status == Some(CertificateStatus::Issued) {
            return Ok(arn);
        }
        if matches!(
            status,
            Some(CertificateStatus::Failed)
                | Some(CertificateStatus::Revoked)
                | Some(CertificateStatus::ValidationTimedOut)
                | Some(CertificateStatus::Expired)
        ) {
            return Err(AwsError::failed(
                step,
                resource.to_string(),
                format!(
                    "ACM reports the certificate {}; check the hosted zone's delegation and CAA records",
                    status.map(|s| s.as_str().to_string()).unwrap_or_default()
                ),
            ));
        }
        if !records_written {
            let options: Vec<DomainValidation> = certificate
                .map(|c| c.domain_validation_options().to_vec())
                .unwrap_or_default();
            let records: Vec<_> = options
                .iter()
                .filter_map(|o| o.resource_record())
                .filter(|r| r.r#type() == &AcmRecordType::Cname)
                .map(|r| (r.name().to_string(), r.value().to_string()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !records.is_empty() {
                write_validation_records(run, zone, &records).await?;
                records_written = true;
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(AwsError::failed(
                step,
                resource.to_string(),
                format!(
                    "was not issued within {} s (aws.certificate_wait_seconds); check that the \
                     hosted zone is delegated, then run the phase again",
                    request.settings.certificate_wait_seconds
                ),
            ));
        }
        tokio::time::sleep(infra.poll).await;
    }
}

async fn write_validation_records(
    run: &mut Run<'_>,
    zone: &str,
    records: &[(String, String)],
) -> Result<(), AwsError> {
    let step = InfraStep::Certificate;
    let infra = run.infra;
    for (name, value) in records {
        let resource = ResourceRef::new(ResourceKind::ValidationRecord, dotless(name));
        let existing = records_named(infra, step, zone, name).await?;
        let present = existing.iter().any(|r| {
            *r.r#type() == RrType::Cname
                && r.resource_records()
                    .iter()
                    .any(|v| dotless(v.value()) == dotless(value))
        });
        if present {
            run.event(step, EventPhase::Kept, Some(&resource));
            continue;
        }
        let record = ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::Cname)
            .ttl(300)
            .resource_records(
                R53Record::builder()
                    .value(value)
                    .build()
                    .map_err(build_error(step, name))?,
            )
            .build()
            .map_err(build_error(step, name))?;
        change_records(
            infra,
            step,
            zone,
            ChangeAction::Upsert,
            vec![record.clone()],
        )
        .await?;
        run.created(
            step,
            &resource,
            &format!("{zone}/{}", dotless(name)),
            Undo::Record {
                zone: zone.to_string(),
                record: Box::new(record),
            },
        );
    }
    Ok(())
}

async fn ensure_instance(run: &mut Run<'_>, request: &InfraRequest) -> Result<(), AwsError> {
    let infra = run.infra;
    let step = InfraStep::Database;
    let settings = &request.settings;
    let Some(database) = &request.database else {
        return Ok(());
    };
    let identifier = &database.instance;
    let resource = ResourceRef::new(ResourceKind::DbInstance, identifier);
    match find_instance(infra, step, identifier, &request.client).await? {
        Some(found) if found.owner != Owner::Client => {
            return Err(conflict(step, &resource, &found.arn, &found.owner))
        }
        Some(_) => run.event(step, EventPhase::Kept, Some(&resource)),
        None => {
            let tags: Vec<aws_sdk_rds::types::Tag> = request
                .tags
                .iter()
                .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
                .collect();
            let made = call!(
                step,
                resource.to_string(),
                "rds",
                "CreateDBInstance",
                infra
                    .rds
                    .create_db_instance()
                    .db_instance_identifier(identifier)
                    .engine(&settings.db_engine)
                    .set_engine_version(settings.db_engine_version.clone())
                    .db_instance_class(&settings.db_instance_class)
                    .allocated_storage(
                        i32::try_from(settings.db_allocated_storage_gib).unwrap_or(20)
                    )
                    .master_username(names::DB_MASTER_USER)
                    .master_user_password(request.dedicated_master_password().unwrap_or_default())
                    .set_db_subnet_group_name(settings.db_subnet_group.clone())
                    .set_vpc_security_group_ids(
                        (!settings.db_security_groups.is_empty())
                            .then(|| settings.db_security_groups.clone())
                    )
                    .publicly_accessible(false)
                    .storage_encrypted(true)
                    .backup_retention_period(7)
                    .set_tags(Some(tags))
            );
            let arn = made
                .db_instance()
                .and_then(|i| i.db_instance_arn())
                .unwrap_or(identifier)
                .to_string();
            run.created(
                step,
                &resource,
                &arn,
                Undo::DbInstance {
                    id: identifier.clone(),
                },
            );
        }
    }
    // Wait until it is available (minutes on AWS).
    let deadline =
        std::time::Instant::now() + Duration::from_secs(u64::from(settings.db_wait_seconds));
    loop {
        let found = find_instance(infra, step, identifier, &request.client).await?;
        match found {
            Some(found) if found.status == "available" && found.endpoint.is_some() => return Ok(()),
            Some(found)
                if found.status == "failed" || found.status == "incompatible-parameters" =>
            {
                return Err(AwsError::failed(
                    step,
                    resource.to_string(),
                    format!("RDS reports the instance {}", found.status),
                ))
            }
            _ => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(AwsError::failed(
                step,
                resource.to_string(),
                format!(
                    "did not become available within {} s (aws.db_wait_seconds)",
                    settings.db_wait_seconds
                ),
            ));
        }
        run.event(step, EventPhase::Waiting, Some(&resource));
        tokio::time::sleep(infra.poll).await;
    }
}

async fn ensure_secret(run: &mut Run<'_>, request: &InfraRequest) -> Result<String, AwsError> {
    let infra = run.infra;
    let step = InfraStep::Secret;
    let name = names::secret(&request.client);
    let resource = ResourceRef::new(ResourceKind::Secret, &name);
    let document = request.secret_document();
    match find_secret(infra, step, &name, &request.client).await? {
        Some((arn, Owner::Client)) => {
            let current = secret_value(infra, step, &arn).await?;
            if current.as_deref() == Some(document.as_str()) {
                run.event(step, EventPhase::Kept, Some(&resource));
            } else {
                call!(
                    step,
                    resource.to_string(),
                    "secretsmanager",
                    "PutSecretValue",
                    infra
                        .secrets
                        .put_secret_value()
                        .secret_id(&arn)
                        .secret_string(&document)
                );
                run.event(step, EventPhase::Updated, Some(&resource));
            }
            Ok(arn)
        }
        Some((arn, owner)) => Err(conflict(step, &resource, &arn, &owner)),
        None => {
            let tags: Vec<aws_sdk_secretsmanager::types::Tag> = request
                .tags
                .iter()
                .map(|(k, v)| {
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                })
                .collect();
            let made = call!(
                step,
                resource.to_string(),
                "secretsmanager",
                "CreateSecret",
                infra
                    .secrets
                    .create_secret()
                    .name(&name)
                    .description(format!(
                        "StackBox: the generated credentials of {}",
                        request.client
                    ))
                    .secret_string(&document)
                    .set_tags(Some(tags))
            );
            let arn = made.arn().unwrap_or(&name).to_string();
            run.created(step, &resource, &arn, Undo::Secret { arn: arn.clone() });
            Ok(arn)
        }
    }
}

fn elb_tags_of(request: &InfraRequest) -> Vec<aws_sdk_elasticloadbalancingv2::types::Tag> {
    request
        .tags
        .iter()
        .map(|(k, v)| {
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        })
        .collect()
}

async fn ensure_target_group(
    run: &mut Run<'_>,
    request: &InfraRequest,
) -> Result<String, AwsError> {
    let infra = run.infra;
    let step = InfraStep::LoadBalancer;
    let settings = &request.settings;
    let name = names::target_group(&request.client);
    let resource = ResourceRef::new(ResourceKind::TargetGroup, &name);
    let target_type = match &settings.target {
        Some(AlbTarget::Instance(_)) => TargetTypeEnum::Instance,
        _ => TargetTypeEnum::Ip,
    };
    match find_target_group(infra, step, &name, &request.client).await? {
        Some(found) if found.owner != Owner::Client => {
            Err(conflict(step, &resource, &found.arn, &found.owner))
        }
        Some(found) => {
            if found.attributes.get("health_check_path") != Some(&settings.health_check_path) {
                call!(
                    step,
                    resource.to_string(),
                    "elbv2",
                    "ModifyTargetGroup",
                    infra
                        .elb
                        .modify_target_group()
                        .target_group_arn(&found.arn)
                        .health_check_path(&settings.health_check_path)
                );
                run.event(step, EventPhase::Updated, Some(&resource));
            } else {
                run.event(step, EventPhase::Kept, Some(&resource));
            }
            Ok(found.arn)
        }
        None => {
            let made = call!(
                step,
                resource.to_string(),
                "elbv2",
                "CreateTargetGroup",
                infra
                    .elb
                    .create_target_group()
                    .name(&name)
                    .protocol(ProtocolEnum::Http)
                    .port(i32::from(settings.target_port))
                    .set_vpc_id(settings.vpc_id.clone())
                    .target_type(target_type)
                    .health_check_path(&settings.health_check_path)
                    .matcher(Matcher::builder().http_code("200-399").build())
                    .set_tags(Some(elb_tags_of(request)))
            );
            let arn = made
                .target_groups()
                .first()
                .and_then(|g| g.target_group_arn())
                .unwrap_or_default()
                .to_string();
            run.created(
                step,
                &resource,
                &arn,
                Undo::TargetGroup { arn: arn.clone() },
            );
            Ok(arn)
        }
    }
}

async fn ensure_rule(
    run: &mut Run<'_>,
    request: &InfraRequest,
    alb: &SharedAlb,
    group: &str,
) -> Result<String, AwsError> {
    let infra = run.infra;
    let step = InfraStep::LoadBalancer;
    let domain = request.domain.as_str();
    let resource = ResourceRef::new(ResourceKind::ListenerRule, domain);
    let hosts = vec![domain.to_string(), format!("*.{domain}")];
    let condition = RuleCondition::builder()
        .field("host-header")
        .host_header_config(
            HostHeaderConditionConfig::builder()
                .set_values(Some(hosts.clone()))
                .build(),
        )
        .build();
    let forward = Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(group)
        .build();
    let rules = listener_rules(infra, step, &alb.listener).await?;
    if let Some((rule, owner)) = client_rule(&rules, &request.client, &hosts) {
        if owner != Owner::Client {
            return Err(conflict(step, &resource, &rule.arn, &owner));
        }
        if rule.hosts != hosts {
            call!(
                step,
                resource.to_string(),
                "elbv2",
                "ModifyRule",
                infra
                    .elb
                    .modify_rule()
                    .rule_arn(&rule.arn)
                    .conditions(condition)
                    .actions(forward)
            );
            run.event(step, EventPhase::Updated, Some(&resource));
        } else {
            run.event(step, EventPhase::Kept, Some(&resource));
        }
        return Ok(rule.arn.clone());
    }
    let taken: BTreeSet<u32> = rules.iter().filter_map(|r| r.priority).collect();
    let mut priority = names::rule_priority(&request.client);
    let mut attempts = 0;
    loop {
        while taken.contains(&priority) {
            priority = priority % 50_000 + 1;
        }
        let result = infra
            .elb
            .create_rule()
            .listener_arn(&alb.listener)
            .priority(i32::try_from(priority).unwrap_or(1))
            .conditions(condition.clone())
            .actions(forward.clone())
            .set_tags(Some(elb_tags_of(request)))
            .send()
            .await;
        match result {
            Ok(made) => {
                let arn = made
                    .rules()
                    .first()
                    .and_then(|r| r.rule_arn())
                    .unwrap_or_default()
                    .to_string();
                run.created(
                    step,
                    &resource,
                    &arn,
                    Undo::ListenerRule { arn: arn.clone() },
                );
                return Ok(arn);
            }
            // Another rule took the priority meanwhile: try the next free one.
            Err(error) if error_code(&error) == Some("PriorityInUse") && attempts < 10 => {
                attempts += 1;
                priority = priority % 50_000 + 1;
            }
            Err(error) => {
                return Err(service_error(
                    step,
                    resource.to_string(),
                    "elbv2",
                    "CreateRule",
                    error,
                ))
            }
        }
    }
}

async fn ensure_listener_certificate(
    run: &mut Run<'_>,
    request: &InfraRequest,
    alb: &SharedAlb,
    certificate: &str,
) -> Result<(), AwsError> {
    let infra = run.infra;
    let step = InfraStep::LoadBalancer;
    let resource = ResourceRef::new(ResourceKind::ListenerCertificate, request.domain.as_str());
    let attached = call!(
        step,
        resource.to_string(),
        "elbv2",
        "DescribeListenerCertificates",
        infra
            .elb
            .describe_listener_certificates()
            .listener_arn(&alb.listener)
    );
    if attached
        .certificates()
        .iter()
        .any(|c| c.certificate_arn() == Some(certificate))
    {
        run.event(step, EventPhase::Kept, Some(&resource));
        return Ok(());
    }
    call!(
        step,
        resource.to_string(),
        "elbv2",
        "AddListenerCertificates",
        infra
            .elb
            .add_listener_certificates()
            .listener_arn(&alb.listener)
            .certificates(
                ElbCertificate::builder()
                    .certificate_arn(certificate)
                    .build()
            )
    );
    run.created(
        step,
        &resource,
        certificate,
        Undo::ListenerCertificate {
            listener: alb.listener.clone(),
            arn: certificate.to_string(),
        },
    );
    Ok(())
}

#[allow(deprecated)]
fn distribution_config(
    request: &InfraRequest,
    alb: &SharedAlb,
    certificate: &str,
    reference: String,
) -> Result<DistributionConfig, AwsError> {
    let step = InfraStep::Cdn;
    let domain = request.domain.as_str();
    let fail = build_error(step, domain);
    let origin_id = "shared-alb";
    DistributionConfig::builder()
        .caller_reference(reference)
        .comment(format!("StackBox website of {}", request.client))
        .enabled(true)
        .price_class(PriceClass::PriceClass100)
        .aliases(
            Aliases::builder()
                .quantity(1)
                .items(domain)
                .build()
                .map_err(&fail)?,
        )
        .origins(
            Origins::builder()
                .quantity(1)
                .items(
                    Origin::builder()
                        .id(origin_id)
                        .domain_name(&alb.dns_name)
                        .custom_origin_config(
                            CustomOriginConfig::builder()
                                .http_port(80)
                                .https_port(443)
                                .origin_protocol_policy(OriginProtocolPolicy::HttpsOnly)
                                .build()
                                .map_err(&fail)?,
                        )
                        .build()
                        .map_err(&fail)?,
                )
                .build()
                .map_err(&fail)?,
        )
        .default_cache_behavior(
            DefaultCacheBehavior::builder()
                .target_origin_id(origin_id)
                .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
                // The Host header goes to the ALB, whose rule routes by it and whose
                // certificate (domain, *.domain) matches it.
                // Legacy cache settings (still accepted): forwarding the Host header this way
                // needs no cache policy id.
                .forwarded_values(
                    ForwardedValues::builder()
                        .query_string(true)
                        .cookies(
                            CookiePreference::builder()
                                .forward(ItemSelection::All)
                                .build()
                                .map_err(&fail)?,
                        )
                        .headers(
                            Headers::builder()
                                .quantity(1)
                                .items("Host")
                                .build()
                                .map_err(&fail)?,
                        )
                        .build()
                        .map_err(&fail)?,
                )
                .min_ttl(0)
                .build()
                .map_err(&fail)?,
        )
        .viewer_certificate(
            ViewerCertificate::builder()
                .acm_certificate_arn(certificate)
                .ssl_support_method(SslSupportMethod::SniOnly)
                .minimum_protocol_version(MinimumProtocolVersion::TlSv122021)
                .build(),
        )
        .build()
        .map_err(&fail)
}

async fn ensure_distribution(
    run: &mut Run<'_>,
    request: &InfraRequest,
    alb: &SharedAlb,
    certificate: &str,
) -> Result<(String, String), AwsError> {
    let infra = run.infra;
    let step = InfraStep::Cdn;
    let domain = request.domain.as_str();
    let resource = ResourceRef::new(ResourceKind::Distribution, domain);
    let found = find_distribution(infra, step, &request.client, Some(domain)).await?;
    if let Some(other) = found.iter().find(|d| d.owner != Owner::Client) {
        return Err(conflict(step, &resource, &other.id, &other.owner));
    }
    if let Some(mine) = found.first() {
        let aliases_ok = mine.aliases == [domain.to_string()];
        if aliases_ok && mine.certificate == certificate && mine.enabled {
            run.event(step, EventPhase::Kept, Some(&resource));
        } else {
            let current = call!(
                step,
                resource.to_string(),
                "cloudfront",
                "GetDistributionConfig",
                infra.cloudfront.get_distribution_config().id(&mine.id)
            );
            let reference = current
                .distribution_config()
                .map(|c| c.caller_reference().to_string())
                .unwrap_or_default();
            let config = distribution_config(request, alb, certificate, reference)?;
            call!(
                step,
                resource.to_string(),
                "cloudfront",
                "UpdateDistribution",
                infra
                    .cloudfront
                    .update_distribution()
                    .id(&mine.id)
                    .set_if_match(current.e_tag().map(str::to_string))
                    .distribution_config(config)
            );
            run.event(step, EventPhase::Updated, Some(&resource));
        }
        return Ok((mine.id.clone(), mine.domain.clone()));
    }
    let reference = format!(
        "{}-{}",
        names::distribution_reference(&request.client),
        millis()
    );
    let config = distribution_config(request, alb, certificate, reference)?;
    let mut items = Vec::new();
    for (key, value) in &request.tags {
        items.push(
            aws_sdk_cloudfront::types::Tag::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(build_error(step, domain))?,
        );
    }
    let with_tags = DistributionConfigWithTags::builder()
        .distribution_config(config)
        .tags(
            aws_sdk_cloudfront::types::Tags::builder()
                .set_items(Some(items))
                .build(),
        )
        .build();
    let made = call!(
        step,
        resource.to_string(),
        "cloudfront",
        "CreateDistributionWithTags",
        infra
            .cloudfront
            .create_distribution_with_tags()
            .distribution_config_with_tags(with_tags)
    );
    let distribution = made.distribution().ok_or_else(|| {
        AwsError::failed(
            step,
            resource.to_string(),
            "CloudFront returned no distribution",
        )
    })?;
    let id = distribution.id().to_string();
    let dns = distribution.domain_name().to_string();
    run.created(step, &resource, &id, Undo::Distribution { id: id.clone() });
    Ok((id, dns))
}

async fn ensure_registration(
    run: &mut Run<'_>,
    request: &InfraRequest,
    group: &str,
    target: &AlbTarget,
) -> Result<(), AwsError> {
    let infra = run.infra;
    let step = InfraStep::TargetRegistration;
    let port = request.settings.target_port;
    let resource = ResourceRef::new(
        ResourceKind::TargetRegistration,
        format!("{}:{port}", target.id()),
    );
    let health = call!(
        step,
        resource.to_string(),
        "elbv2",
        "DescribeTargetHealth",
        infra.elb.describe_target_health().target_group_arn(group)
    );
    let registered = health.target_health_descriptions().iter().any(|d| {
        d.target()
            .is_some_and(|t| t.id() == Some(target.id()) && t.port() == Some(i32::from(port)))
    });
    if registered {
        run.event(step, EventPhase::Kept, Some(&resource));
        return Ok(());
    }
    call!(
        step,
        resource.to_string(),
        "elbv2",
        "RegisterTargets",
        infra
            .elb
            .register_targets()
            .target_group_arn(group)
            .targets(
                TargetDescription::builder()
                    .id(target.id())
                    .port(i32::from(port))
                    .build()
            )
    );
    run.created(
        step,
        &resource,
        group,
        Undo::TargetRegistration {
            group: group.to_string(),
            target: target.id().to_string(),
            port,
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// undo and destroy
// ---------------------------------------------------------------------------------------------

/// Undoes this run's creations, newest first; returns what could not be removed.
async fn undo(run: &mut Run<'_>) -> Vec<String> {
    let mut remaining = Vec::new();
    while let Some((record, undo)) = run.created.pop() {
        let step = match record.kind {
            ResourceKind::HostedZone
            | ResourceKind::Certificate
            | ResourceKind::CloudfrontCertificate
            | ResourceKind::ValidationRecord => InfraStep::Certificate,
            ResourceKind::DbInstance | ResourceKind::AppDatabase => InfraStep::Database,
            ResourceKind::Secret => InfraStep::Secret,
            ResourceKind::TargetGroup
            | ResourceKind::ListenerRule
            | ResourceKind::ListenerCertificate => InfraStep::LoadBalancer,
            ResourceKind::Distribution => InfraStep::Cdn,
            ResourceKind::DnsRecord => InfraStep::Dns,
            ResourceKind::TargetRegistration => InfraStep::TargetRegistration,
        };
        match remove(run.infra, step, undo, false).await {
            Ok(()) => run.event(
                step,
                EventPhase::Undone,
                Some(&ResourceRef::new(record.kind, &record.name)),
            ),
            Err(error) => remaining.push(format!(
                "{} {} ({}): {error}",
                record.kind, record.name, record.id
            )),
        }
    }
    remaining
}

/// Removes one resource; a resource already gone counts as removed.
async fn remove(
    infra: &AwsInfra,
    step: InfraStep,
    undo: Undo,
    keep_snapshot: bool,
) -> Result<(), AwsError> {
    let gone = |code: Option<&str>| {
        matches!(
            code,
            Some(
                "NoSuchHostedZone"
                    | "ResourceNotFoundException"
                    | "DBInstanceNotFound"
                    | "TargetGroupNotFound"
                    | "RuleNotFound"
                    | "NoSuchDistribution"
                    | "ListenerNotFound"
                    | "CertificateNotFound"
            )
        )
    };
    macro_rules! tolerant {
        ($resource:expr, $service:literal, $operation:literal, $request:expr) => {
            match $request.send().await {
                Ok(_) => {}
                Err(error) if gone(error_code(&error)) => {}
                Err(error) => {
                    return Err(service_error(step, $resource, $service, $operation, error))
                }
            }
        };
    }
    match undo {
        Undo::HostedZone { id } => {
            // A zone must be empty but for its NS and SOA records.
            let records = match all_records(infra, step, &id).await {
                Ok(records) => records,
                Err(error) if error.code() == Some("NoSuchHostedZone") => return Ok(()),
                Err(error) => return Err(error),
            };
            let extra: Vec<ResourceRecordSet> = records
                .into_iter()
                .filter(|r| !matches!(r.r#type(), RrType::Ns | RrType::Soa))
                .collect();
            change_records(infra, step, &id, ChangeAction::Delete, extra).await?;
            tolerant!(
                format!("hosted-zone {id}"),
                "route53",
                "DeleteHostedZone",
                infra.route53.delete_hosted_zone().id(&id)
            );
        }
        Undo::Certificate { arn, cloudfront } => {
            let acm = if cloudfront {
                &infra.acm_cloudfront
            } else {
                &infra.acm
            };
            tolerant!(
                format!("certificate {arn}"),
                "acm",
                "DeleteCertificate",
                acm.delete_certificate().certificate_arn(&arn)
            );
        }
        Undo::Record { zone, record } => {
            let name = dotless(record.name());
            let existing = records_named(infra, step, &zone, &name).await;
            let present = match existing {
                Ok(records) => records.iter().any(|r| r.r#type() == record.r#type()),
                Err(error) if error.code() == Some("NoSuchHostedZone") => false,
                Err(error) => return Err(error),
            };
            if present {
                change_records(infra, step, &zone, ChangeAction::Delete, vec![*record]).await?;
            }
        }
        Undo::DbInstance { id } => {
            let mut request = infra
                .rds
                .delete_db_instance()
                .db_instance_identifier(&id)
                .delete_automated_backups(!keep_snapshot);
            request = if keep_snapshot {
                request
                    .skip_final_snapshot(false)
                    .final_db_snapshot_identifier(format!("{id}-final-{}", millis()))
            } else {
                request.skip_final_snapshot(true)
            };
            tolerant!(
                format!("db-instance {id}"),
                "rds",
                "DeleteDBInstance",
                request
            );
        }
        Undo::AppDatabases { server, names } => {
            infra.bootstrap.remove(&server, &names).await?;
        }
        Undo::Secret { arn } => {
            tolerant!(
                format!("secret {arn}"),
                "secretsmanager",
                "DeleteSecret",
                infra
                    .secrets
                    .delete_secret()
                    .secret_id(&arn)
                    .force_delete_without_recovery(true)
            );
        }
        Undo::TargetGroup { arn } => {
            tolerant!(
                format!("target-group {arn}"),
                "elbv2",
                "DeleteTargetGroup",
                infra.elb.delete_target_group().target_group_arn(&arn)
            );
        }
        Undo::ListenerRule { arn } => {
            tolerant!(
                format!("listener-rule {arn}"),
                "elbv2",
                "DeleteRule",
                infra.elb.delete_rule().rule_arn(&arn)
            );
        }
        Undo::ListenerCertificate { listener, arn } => {
            tolerant!(
                format!("listener-certificate {arn}"),
                "elbv2",
                "RemoveListenerCertificates",
                infra
                    .elb
                    .remove_listener_certificates()
                    .listener_arn(&listener)
                    .certificates(ElbCertificate::builder().certificate_arn(&arn).build())
            );
        }
        Undo::Distribution { id } => remove_distribution(infra, step, &id).await?,
        Undo::TargetRegistration {
            group,
            target,
            port,
        } => {
            tolerant!(
                format!("target-registration {target}:{port}"),
                "elbv2",
                "DeregisterTargets",
                infra
                    .elb
                    .deregister_targets()
                    .target_group_arn(&group)
                    .targets(
                        TargetDescription::builder()
                            .id(&target)
                            .port(i32::from(port))
                            .build()
                    )
            );
        }
    }
    Ok(())
}

/// Disables a distribution, waits until CloudFront has deployed that, and deletes it.
async fn remove_distribution(infra: &AwsInfra, step: InfraStep, id: &str) -> Result<(), AwsError> {
    let resource = format!("distribution {id}");
    let deadline = std::time::Instant::now() + DISTRIBUTION_WAIT;
    loop {
        let current = match infra
            .cloudfront
            .get_distribution_config()
            .id(id)
            .send()
            .await
        {
            Ok(current) => current,
            Err(error) if error_code(&error) == Some("NoSuchDistribution") => return Ok(()),
            Err(error) => {
                return Err(service_error(
                    step,
                    resource,
                    "cloudfront",
                    "GetDistributionConfig",
                    error,
                ))
            }
        };
        let Some(config) = current.distribution_config().cloned() else {
            return Ok(());
        };
        let mut etag = current.e_tag().map(str::to_string);
        if config.enabled() {
            let mut disabled = config.clone();
            disabled.enabled = false;
            let updated = call!(
                step,
                &resource,
                "cloudfront",
                "UpdateDistribution",
                infra
                    .cloudfront
                    .update_distribution()
                    .id(id)
                    .set_if_match(etag.clone())
                    .distribution_config(disabled)
            );
            etag = updated.e_tag().map(str::to_string);
        }
        let status = call!(
            step,
            &resource,
            "cloudfront",
            "GetDistribution",
            infra.cloudfront.get_distribution().id(id)
        );
        let deployed = status
            .distribution()
            .is_some_and(|d| d.status() == "Deployed");
        if deployed {
            match infra
                .cloudfront
                .delete_distribution()
                .id(id)
                .set_if_match(status.e_tag().map(str::to_string).or(etag))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if error_code(&error) == Some("NoSuchDistribution") => return Ok(()),
                Err(error) if error_code(&error) == Some("DistributionNotDisabled") => {}
                Err(error) => {
                    return Err(service_error(
                        step,
                        resource,
                        "cloudfront",
                        "DeleteDistribution",
                        error,
                    ))
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(AwsError::failed(
                step,
                resource,
                "was not deployed disabled within 30 minutes; run destroy again later",
            ));
        }
        tokio::time::sleep(infra.poll).await;
    }
}

pub(crate) async fn destroy(
    infra: &AwsInfra,
    client: &ClientId,
    events: &dyn Fn(InfraEvent),
) -> Result<Removed, AwsError> {
    let step = InfraStep::Destroy;
    let mut removed = Removed::default();
    let emit = |record: &ResourceRecord| {
        events(InfraEvent {
            step,
            phase: EventPhase::Removed,
            resource: Some(format!("{} {}", record.kind, record.name)),
        })
    };
    events(InfraEvent {
        step,
        phase: EventPhase::Started,
        resource: None,
    });
    let note = |removed: &mut Removed, kind, name: &str, id: &str| {
        let record = ResourceRecord {
            kind,
            name: name.to_string(),
            id: id.to_string(),
        };
        emit(&record);
        removed.resources.push(record);
    };

    // The domain, from the tags of whatever is left of the client.
    let mut domain: Option<String> = None;
    let certificates = client_certificates(&infra.acm, client).await?;
    let cloudfront_certificates =
        if infra.region == stackbox_core::infra::CLOUDFRONT_CERTIFICATE_REGION {
            Vec::new()
        } else {
            client_certificates(&infra.acm_cloudfront, client).await?
        };
    let mut validation: Vec<(String, String)> = Vec::new();
    for (acm, arn) in certificates.iter().map(|a| (&infra.acm, a)).chain(
        cloudfront_certificates
            .iter()
            .map(|a| (&infra.acm_cloudfront, a)),
    ) {
        let described = call!(
            step,
            format!("certificate {arn}"),
            "acm",
            "DescribeCertificate",
            acm.describe_certificate().certificate_arn(arn)
        );
        if let Some(certificate) = described.certificate() {
            if domain.is_none() {
                domain = certificate.domain_name().map(str::to_string);
            }
            for option in certificate.domain_validation_options() {
                if let Some(record) = option.resource_record() {
                    validation.push((record.name().to_string(), record.value().to_string()));
                }
            }
        }
    }
    let group_name = names::target_group(client);
    let group = find_target_group(infra, step, &group_name, client)
        .await?
        .filter(|g| g.owner == Owner::Client);
    if domain.is_none() {
        if let Some(group) = &group {
            let tags = elb_tags(infra, step, std::slice::from_ref(&group.arn)).await?;
            domain = tags
                .get(&group.arn)
                .and_then(|t| t.get(TAG_DOMAIN))
                .cloned();
        }
    }
    let secret_name = names::secret(client);
    let secret = find_secret(infra, step, &secret_name, client).await?;
    let alb = shared_alb(infra, step).await.ok();

    // 5. Distributions (tagged with the client) first: they use the certificate.
    let distributions = find_distribution(infra, step, client, None).await?;
    let mut distribution_domains = Vec::new();
    for distribution in distributions.iter().filter(|d| d.owner == Owner::Client) {
        if domain.is_none() {
            domain = distribution.aliases.first().cloned();
        }
        distribution_domains.push(dotless(&distribution.domain));
        remove_distribution(infra, step, &distribution.id).await?;
        note(
            &mut removed,
            ResourceKind::Distribution,
            distribution
                .aliases
                .first()
                .map(String::as_str)
                .unwrap_or(""),
            &distribution.id,
        );
    }

    // 6. Records in the client's zone that point to the client's distribution or the ALB, and
    //    the certificates' validation records.
    if let Some(domain) = &domain {
        if let Some((zone, owner)) = find_zone(infra, step, domain, client).await? {
            if matches!(owner, Owner::Client | Owner::Operator) {
                let alb_name = alb.as_ref().map(|a| dotless(&a.dns_name));
                let records = all_records(infra, step, &zone).await?;
                let suffix = format!(".{domain}");
                let mut doomed = Vec::new();
                for record in records {
                    let name = dotless(record.name());
                    let in_domain = name == *domain || name.ends_with(&suffix);
                    let ours_alias = alias_of(&record).is_some_and(|target| {
                        distribution_domains.contains(&target) || Some(&target) == alb_name.as_ref()
                    });
                    let ours_validation = *record.r#type() == RrType::Cname
                        && validation.iter().any(|(n, v)| {
                            dotless(n) == name
                                && record
                                    .resource_records()
                                    .iter()
                                    .any(|r| dotless(r.value()) == dotless(v))
                        });
                    if in_domain && (ours_alias || ours_validation) {
                        doomed.push(record);
                    }
                }
                for record in doomed {
                    let name = dotless(record.name());
                    let kind = if *record.r#type() == RrType::Cname {
                        ResourceKind::ValidationRecord
                    } else {
                        ResourceKind::DnsRecord
                    };
                    change_records(infra, step, &zone, ChangeAction::Delete, vec![record]).await?;
                    note(&mut removed, kind, &name, &format!("{zone}/{name}"));
                }
            }
        }
    }

    // 7 and 4. Targets, the listener rule and certificates, the target group.
    if let Some(group) = &group {
        let health = call!(
            step,
            format!("target-group {group_name}"),
            "elbv2",
            "DescribeTargetHealth",
            infra
                .elb
                .describe_target_health()
                .target_group_arn(&group.arn)
        );
        for description in health.target_health_descriptions() {
            if let Some(target) = description.target() {
                let id = target.id().unwrap_or_default().to_string();
                let port = target
                    .port()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0);
                remove(
                    infra,
                    step,
                    Undo::TargetRegistration {
                        group: group.arn.clone(),
                        target: id.clone(),
                        port,
                    },
                    false,
                )
                .await?;
                note(
                    &mut removed,
                    ResourceKind::TargetRegistration,
                    &format!("{id}:{port}"),
                    &group.arn,
                );
            }
        }
    }
    if let Some(alb) = &alb {
        let rules = listener_rules(infra, step, &alb.listener).await?;
        for rule in rules
            .iter()
            .filter(|r| owner_of(&r.tags, client) == Owner::Client)
        {
            remove(
                infra,
                step,
                Undo::ListenerRule {
                    arn: rule.arn.clone(),
                },
                false,
            )
            .await?;
            note(
                &mut removed,
                ResourceKind::ListenerRule,
                domain.as_deref().unwrap_or(""),
                &rule.arn,
            );
        }
        let attached = call!(
            step,
            "aws.listener_arn",
            "elbv2",
            "DescribeListenerCertificates",
            infra
                .elb
                .describe_listener_certificates()
                .listener_arn(&alb.listener)
        );
        for certificate in attached.certificates() {
            let Some(arn) = certificate.certificate_arn() else {
                continue;
            };
            if certificate.is_default() != Some(true) && certificates.iter().any(|c| c == arn) {
                remove(
                    infra,
                    step,
                    Undo::ListenerCertificate {
                        listener: alb.listener.clone(),
                        arn: arn.to_string(),
                    },
                    false,
                )
                .await?;
                note(
                    &mut removed,
                    ResourceKind::ListenerCertificate,
                    domain.as_deref().unwrap_or(""),
                    arn,
                );
            }
        }
    }
    if let Some(group) = &group {
        remove(
            infra,
            step,
            Undo::TargetGroup {
                arn: group.arn.clone(),
            },
            false,
        )
        .await?;
        note(
            &mut removed,
            ResourceKind::TargetGroup,
            &group_name,
            &group.arn,
        );
    }

    // 3. The secret.
    if let Some((arn, Owner::Client)) = secret {
        remove(infra, step, Undo::Secret { arn: arn.clone() }, false).await?;
        note(&mut removed, ResourceKind::Secret, &secret_name, &arn);
    }

    // 2. The dedicated instance (with a final snapshot unless the operator said otherwise), or
    //    the databases and users on the shared instance.
    let identifier = names::db_instance(client);
    match find_instance(infra, step, &identifier, client).await? {
        Some(found) if found.owner == Owner::Client => {
            if found.status != "deleting" {
                remove(
                    infra,
                    step,
                    Undo::DbInstance {
                        id: identifier.clone(),
                    },
                    infra.settings.final_snapshot_on_destroy,
                )
                .await?;
            }
            note(
                &mut removed,
                ResourceKind::DbInstance,
                &identifier,
                &found.arn,
            );
        }
        _ => {}
    }
    if infra.settings.shared_db_instance.is_some()
        && infra.settings.shared_db_master_secret.is_some()
    {
        let server = shared_server(infra, step).await?;
        let names: Vec<String> = all_app_databases(client)
            .into_iter()
            .map(|d| d.name)
            .collect();
        let existing = infra.bootstrap.existing(&server, &names).await?;
        // Users are dropped even when their database is already gone.
        infra.bootstrap.remove(&server, &names).await?;
        for name in existing {
            note(
                &mut removed,
                ResourceKind::AppDatabase,
                &name,
                &format!(
                    "{}/{name}",
                    infra.settings.shared_db_instance.as_deref().unwrap_or("")
                ),
            );
        }
    }

    // 1. Certificates and the hosted zone StackBox created.
    for (arn, cloudfront) in certificates
        .iter()
        .map(|a| (a, false))
        .chain(cloudfront_certificates.iter().map(|a| (a, true)))
    {
        remove(
            infra,
            step,
            Undo::Certificate {
                arn: arn.clone(),
                cloudfront,
            },
            false,
        )
        .await?;
        let kind = if cloudfront {
            ResourceKind::CloudfrontCertificate
        } else {
            ResourceKind::Certificate
        };
        note(&mut removed, kind, domain.as_deref().unwrap_or(""), arn);
    }
    if let Some(domain) = &domain {
        if let Some((zone, Owner::Client)) = find_zone(infra, step, domain, client).await? {
            remove(infra, step, Undo::HostedZone { id: zone.clone() }, false).await?;
            note(&mut removed, ResourceKind::HostedZone, domain, &zone);
        }
    }
    events(InfraEvent {
        step,
        phase: EventPhase::Done,
        resource: None,
    });
    Ok(removed)
}

pub(crate) async fn read_secrets(
    infra: &AwsInfra,
    client: &ClientId,
) -> Result<Option<Secrets>, AwsError> {
    let step = InfraStep::Secret;
    let name = names::secret(client);
    match find_secret(infra, step, &name, client).await? {
        None => Ok(None),
        Some((arn, Owner::Client)) => {
            let Some(document) = secret_value(infra, step, &arn).await? else {
                return Ok(None);
            };
            Ok(Some(parse_secret_document(&document)?))
        }
        Some((arn, owner)) => Err(conflict(
            step,
            &ResourceRef::new(ResourceKind::Secret, &name),
            &arn,
            &owner,
        )),
    }
}
