//! The AWS phase against moto's server and a real MariaDB, both private to this test binary
//! and on loopback. Each test uses its own clients (names, domains), so tests run at once.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::*;
use stackbox_aws::{AwsError, EventPhase, InfraEvent, InfraStep};
use stackbox_core::infra::{
    names, DbPlacement, HostedZonePolicy, InfraActionKind, ResourceKind, CLOUDFRONT_HOSTED_ZONE_ID,
    TAG_CLIENT, TAG_MANAGED,
};
use stackbox_core::secrets::SecretKey;

type Sink = Mutex<Vec<InfraEvent>>;

fn collect() -> (Sink, impl Fn(&Sink, InfraEvent)) {
    (
        Mutex::new(Vec::new()),
        |sink: &Mutex<Vec<InfraEvent>>, event| sink.lock().unwrap().push(event),
    )
}

fn ignore(_: InfraEvent) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_phase_for_a_professional_client_makes_every_resource_tagged_and_wired() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let client = client("wholephase", "professional", 0x11);
    let infra = infra(&settings).await;
    let request = client.request(&settings);
    let (sink, push) = collect();
    let outcome = infra
        .apply(&request, &|event| push(&sink, event))
        .await
        .unwrap();
    let config = sdk_config(&bed().endpoint).await;
    let domain = client.domain();

    // Certificates: the ALB's in the region, CloudFront's in us-east-1, both issued and tagged.
    let acm = aws_sdk_acm::Client::new(&config);
    let certificate = acm
        .describe_certificate()
        .certificate_arn(&outcome.certificate_arn)
        .send()
        .await
        .unwrap();
    let certificate = certificate.certificate().unwrap();
    assert_eq!(certificate.domain_name(), Some(domain));
    assert!(certificate
        .subject_alternative_names()
        .contains(&format!("*.{domain}")));
    assert_eq!(
        certificate.status(),
        Some(&aws_sdk_acm::types::CertificateStatus::Issued)
    );
    assert!(outcome.certificate_arn.contains(":eu-west-1:"));
    assert!(
        outcome.cloudfront_certificate_arn.contains(":us-east-1:"),
        "{}",
        outcome.cloudfront_certificate_arn
    );
    let tags = acm
        .list_tags_for_certificate()
        .certificate_arn(&outcome.certificate_arn)
        .send()
        .await
        .unwrap();
    let tags: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().unwrap_or("").to_string()))
        .collect();
    assert!(tags.contains(&(TAG_CLIENT.to_string(), client.id.to_string())));
    assert!(tags.contains(&(TAG_MANAGED.to_string(), "true".to_string())));

    // Route53: the zone (created, tagged), the validation record, the apex to CloudFront and
    // every service hostname to the ALB.
    let route53 = aws_sdk_route53::Client::new(&config);
    let records = route53
        .list_resource_record_sets()
        .hosted_zone_id(&outcome.hosted_zone_id)
        .send()
        .await
        .unwrap();
    let alias = |host: &str| {
        records
            .resource_record_sets()
            .iter()
            .find(|r| r.name().trim_end_matches('.') == host && r.r#type().as_str() == "A")
            .and_then(|r| r.alias_target())
            .map(|a| {
                (
                    a.hosted_zone_id().to_string(),
                    a.dns_name().trim_end_matches('.').to_string(),
                )
            })
    };
    assert_eq!(
        alias(domain),
        Some((
            CLOUDFRONT_HOSTED_ZONE_ID.to_string(),
            outcome.distribution_domain.clone()
        ))
    );
    for sub in ["crm", "files", "booking", "analytics"] {
        let host = format!("{sub}.{domain}");
        assert_eq!(
            alias(&host).map(|(_, name)| name),
            Some(bed().alb_dns.clone()),
            "{host}"
        );
    }
    assert!(
        records
            .resource_record_sets()
            .iter()
            .any(|r| r.r#type().as_str() == "CNAME" && r.name().starts_with('_')),
        "no DNS validation record"
    );
    let zone_tags = route53
        .list_tags_for_resource()
        .resource_type(aws_sdk_route53::types::TagResourceType::Hostedzone)
        .resource_id(&outcome.hosted_zone_id)
        .send()
        .await
        .unwrap();
    assert!(zone_tags
        .resource_tag_set()
        .unwrap()
        .tags()
        .iter()
        .any(|t| t.key() == Some(TAG_CLIENT) && t.value() == Some(client.id.as_str())));

    // The app databases on the shared instance: each user logs into its own database only.
    let database = outcome.database.as_ref().unwrap();
    assert_eq!(database.instance, "stackbox-shared");
    assert_eq!(database.databases.len(), 2);
    for (app, name) in &database.databases {
        let key = match app.as_str() {
            "espocrm" => SecretKey::EspocrmDbPassword,
            "nextcloud" => SecretKey::NextcloudDbPassword,
            other => panic!("unexpected MySQL app {other}"),
        };
        let password = client.secrets.get(key).unwrap();
        login(name, password, name)
            .await
            .unwrap_or_else(|e| panic!("{name} cannot log into its database: {e}"));
        assert!(login(name, "wrong-password", name).await.is_err());
        for other in database.databases.values().filter(|o| *o != name) {
            assert!(
                login(name, password, other).await.is_err(),
                "{name} reached {other}"
            );
        }
    }

    // The secret reads back equal, through the adapter.
    let secrets = infra.read_secrets(&client.id).await.unwrap().unwrap();
    assert_eq!(secrets, client.secrets);

    // The ALB: target group (tagged, health check), rule (host header), listener certificate,
    // registered target.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let groups = elb
        .describe_target_groups()
        .target_group_arns(&outcome.target_group_arn)
        .send()
        .await
        .unwrap();
    let group = &groups.target_groups()[0];
    assert_eq!(
        group.target_group_name(),
        Some(names::target_group(&client.id).as_str())
    );
    assert_eq!(group.health_check_path(), Some("/healthz"));
    assert_eq!(group.vpc_id(), Some(bed().vpc_id.as_str()));
    let rules = elb
        .describe_rules()
        .rule_arns(&outcome.listener_rule_arn)
        .send()
        .await
        .unwrap();
    let rule = &rules.rules()[0];
    let hosts: Vec<String> = rule.conditions()[0]
        .host_header_config()
        .unwrap()
        .values()
        .to_vec();
    assert_eq!(hosts, vec![domain.to_string(), format!("*.{domain}")]);
    assert_eq!(
        rule.actions()[0].target_group_arn(),
        Some(outcome.target_group_arn.as_str())
    );
    let attached = elb
        .describe_listener_certificates()
        .listener_arn(&bed().listener_arn)
        .send()
        .await
        .unwrap();
    assert!(attached
        .certificates()
        .iter()
        .any(|c| c.certificate_arn() == Some(outcome.certificate_arn.as_str())));
    let health = elb
        .describe_target_health()
        .target_group_arn(&outcome.target_group_arn)
        .send()
        .await
        .unwrap();
    let targets: Vec<(String, i32)> = health
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target())
        .map(|t| (t.id().unwrap().to_string(), t.port().unwrap()))
        .collect();
    assert_eq!(targets, vec![("10.0.1.15".to_string(), 80)]);

    // CloudFront: the apex as alias, the us-east-1 certificate, the ALB as origin.
    let cloudfront = aws_sdk_cloudfront::Client::new(&config);
    let distribution = cloudfront
        .get_distribution_config()
        .id(&outcome.distribution_id)
        .send()
        .await
        .unwrap();
    let distribution = distribution.distribution_config().unwrap();
    assert_eq!(
        distribution.aliases().unwrap().items(),
        [domain.to_string()]
    );
    assert_eq!(
        distribution
            .viewer_certificate()
            .unwrap()
            .acm_certificate_arn(),
        Some(outcome.cloudfront_certificate_arn.as_str())
    );
    assert_eq!(
        distribution.origins().unwrap().items()[0].domain_name(),
        bed().alb_dns
    );

    // What the journal gets: every resource made, and events for each step.
    let kinds: BTreeSet<ResourceKind> = outcome.created.iter().map(|r| r.kind).collect();
    for kind in [
        ResourceKind::HostedZone,
        ResourceKind::Certificate,
        ResourceKind::CloudfrontCertificate,
        ResourceKind::ValidationRecord,
        ResourceKind::AppDatabase,
        ResourceKind::Secret,
        ResourceKind::TargetGroup,
        ResourceKind::ListenerRule,
        ResourceKind::ListenerCertificate,
        ResourceKind::Distribution,
        ResourceKind::DnsRecord,
        ResourceKind::TargetRegistration,
    ] {
        assert!(kinds.contains(&kind), "{kind} not recorded");
    }
    let events = sink.into_inner().unwrap();
    let done: Vec<InfraStep> = events
        .iter()
        .filter(|e| e.phase == EventPhase::Done)
        .map(|e| e.step)
        .collect();
    assert_eq!(
        done,
        vec![
            InfraStep::Certificate,
            InfraStep::Database,
            InfraStep::Secret,
            InfraStep::LoadBalancer,
            InfraStep::Cdn,
            InfraStep::Dns,
            InfraStep::TargetRegistration
        ]
    );
    // No event or error text ever carries a secret.
    let text = format!("{events:?}{outcome:?}{request:?}");
    for (_, value) in client.secrets.iter() {
        assert!(!text.contains(value));
    }
    infra.destroy(&client.id, &ignore).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_rerun_creates_nothing_and_the_plan_says_everything_is_unchanged() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let client = client("rerun", "professional", 0x22);
    let infra = infra(&settings).await;
    let request = client.request(&settings);
    let before = infra.plan(&request).await.unwrap();
    assert!(
        before
            .actions
            .iter()
            .all(|a| a.kind == InfraActionKind::Create
                || a.resource.kind == ResourceKind::AppDatabase)
    );
    // plan only reads.
    assert!(inventory(&client).await.is_empty());

    let first = infra.apply(&request, &ignore).await.unwrap();
    let made = inventory(&client).await;
    let second = infra.apply(&request, &ignore).await.unwrap();
    assert_eq!(second.created, vec![], "a re-run created resources");
    assert_eq!(inventory(&client).await, made);
    assert_eq!(second.distribution_id, first.distribution_id);
    assert_eq!(second.listener_rule_arn, first.listener_rule_arn);
    let plan = infra.plan(&request).await.unwrap();
    assert!(plan.is_converged(), "{}", plan.render());

    // A changed secret is an update, shown without its value; apply puts the new value.
    let mut changed = client.secrets.clone();
    changed.insert(SecretKey::AdminPassword, "NewAdminPassw0rd".to_string());
    let changed_request = stackbox_core::infra::InfraRequest::for_client(
        &client.spec,
        &client.id,
        &operator(&settings),
        &changed,
    )
    .unwrap();
    let plan = infra.plan(&changed_request).await.unwrap();
    let text = plan.render();
    assert!(text.contains("~ update    secret"), "{text}");
    assert!(!text.contains("NewAdminPassw0rd"));
    let third = infra.apply(&changed_request, &ignore).await.unwrap();
    assert!(third.created.is_empty());
    assert_eq!(infra.read_secrets(&client.id).await.unwrap(), Some(changed));
    infra.destroy(&client.id, &ignore).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_everything_of_the_client_and_a_second_destroy_finds_nothing() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let client = client("destroyme", "professional", 0x33);
    let infra = infra(&settings).await;
    infra
        .apply(&client.request(&settings), &ignore)
        .await
        .unwrap();
    assert!(inventory(&client).await.len() > 10);
    let removed = infra.destroy(&client.id, &ignore).await.unwrap();
    assert!(removed.resources.len() > 10, "{removed:?}");
    assert_eq!(inventory(&client).await, BTreeSet::new());
    assert_eq!(infra.read_secrets(&client.id).await.unwrap(), None);
    let again = infra.destroy(&client.id, &ignore).await.unwrap();
    assert!(again.resources.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_side_by_side_and_destroying_one_leaves_the_other_intact() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let first = client("sideone", "starter", 0x44);
    let second = client("sidetwo", "professional", 0x55);
    let infra = infra(&settings).await;
    let a = infra
        .apply(&first.request(&settings), &ignore)
        .await
        .unwrap();
    let b = infra
        .apply(&second.request(&settings), &ignore)
        .await
        .unwrap();
    assert_ne!(a.listener_rule_arn, b.listener_rule_arn);
    assert_ne!(a.target_group_arn, b.target_group_arn);
    let second_before = inventory(&second).await;
    infra.destroy(&first.id, &ignore).await.unwrap();
    assert_eq!(inventory(&first).await, BTreeSet::new());
    assert_eq!(inventory(&second).await, second_before);
    // The other client still works: its users log in, its plan is converged.
    let plan = infra.plan(&second.request(&settings)).await.unwrap();
    assert!(plan.is_converged(), "{}", plan.render());
    let espocrm = names::app_database(&second.id, "espocrm");
    login(
        &espocrm,
        second.secrets.get(SecretKey::EspocrmDbPassword).unwrap(),
        &espocrm,
    )
    .await
    .unwrap();
    infra.destroy(&second.id, &ignore).await.unwrap();
    assert_eq!(inventory(&second).await, BTreeSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_client_gets_a_dedicated_instance_removed_with_a_final_snapshot() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let client = client("enterprise", "enterprise", 0x66);
    let infra = infra(&settings).await;
    let request = client.request(&settings);
    assert_eq!(
        request.database.as_ref().unwrap().placement,
        DbPlacement::Dedicated
    );
    let outcome = infra.apply(&request, &ignore).await.unwrap();
    let database = outcome.database.unwrap();
    assert_eq!(database.instance, names::db_instance(&client.id));
    assert_eq!(database.databases.len(), 3);
    let config = sdk_config(&bed().endpoint).await;
    let rds = aws_sdk_rds::Client::new(&config);
    let found = rds
        .describe_db_instances()
        .db_instance_identifier(&database.instance)
        .send()
        .await
        .unwrap();
    let instance = &found.db_instances()[0];
    assert_eq!(instance.engine(), Some("mariadb"));
    assert!(instance
        .tag_list()
        .iter()
        .any(|t| t.key() == Some(TAG_CLIENT) && t.value() == Some(client.id.as_str())));
    let mailtrain = names::app_database(&client.id, "mailtrain");
    login(
        &mailtrain,
        client.secrets.get(SecretKey::MailtrainDbPassword).unwrap(),
        &mailtrain,
    )
    .await
    .unwrap();
    infra.destroy(&client.id, &ignore).await.unwrap();
    let snapshots = rds.describe_db_snapshots().send().await.unwrap();
    assert!(snapshots.db_snapshots().iter().any(|s| s
        .db_snapshot_identifier()
        .is_some_and(|n| n.starts_with(&database.instance))));
    // The dedicated server's databases live on with the instance's snapshot; in the tests they
    // are on the shared MariaDB, so drop them to keep the inventory about AWS.
    let inventory_left: BTreeSet<String> = inventory(&client)
        .await
        .into_iter()
        .filter(|i| !i.starts_with("mysql-"))
        .collect();
    assert_eq!(inventory_left, BTreeSet::new());
}

/// Runs the phase with one failure injected, checks the failing step, and that nothing of the
/// client is left.
async fn fails_cleanly(
    client: &TestClient,
    settings: &stackbox_core::infra::AwsSettings,
    endpoint: Option<&str>,
    expected: InfraStep,
) -> AwsError {
    let infra = match endpoint {
        Some(endpoint) => infra_through(settings, endpoint).await,
        None => infra(settings).await,
    };
    let (sink, push) = collect();
    let error = infra
        .apply(&client.request(settings), &|event| push(&sink, event))
        .await
        .expect_err("the phase should fail");
    assert_eq!(error.step(), Some(expected), "{error}");
    assert!(
        !matches!(error, AwsError::RollbackIncomplete { .. }),
        "{error}"
    );
    let left = inventory(client).await;
    assert_eq!(left, BTreeSet::new(), "left behind after {error}");
    let events = sink.into_inner().unwrap();
    let created = events
        .iter()
        .filter(|e| e.phase == EventPhase::Created)
        .count();
    let undone = events
        .iter()
        .filter(|e| e.phase == EventPhase::Undone)
        .count();
    assert_eq!(created, undone, "{events:#?}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_validation_record_undoes_the_zone_and_certificate_made_before_it() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let client = client("certfail", "professional", 0x71);
    // Route53's record changes are POST …/rrset; the zone and the certificate exist by then.
    let proxy = refusing_proxy("/rrset");
    let error = fails_cleanly(
        &client,
        &settings,
        Some(&proxy.endpoint),
        InfraStep::Certificate,
    )
    .await;
    assert!(error.to_string().contains("refused by the test"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_issued_in_time_fails_the_step_naming_the_setting() {
    if !aws_tier().ready() {
        return;
    }
    let mut settings = settings();
    settings.certificate_wait_seconds = 1;
    let client = client("certslow", "starter", 0x77);
    // Wait longer in moto than the setting allows: the step must give up and undo.
    let infra = infra(&settings)
        .await
        .with_poll_interval(std::time::Duration::from_millis(1500));
    let error = infra.apply(&client.request(&settings), &ignore).await;
    match error {
        Err(error) => {
            assert_eq!(error.step(), Some(InfraStep::Certificate), "{error}");
            assert!(
                error.to_string().contains("aws.certificate_wait_seconds"),
                "{error}"
            );
            assert_eq!(inventory(&client).await, BTreeSet::new());
        }
        // moto issued within the first poll: nothing to check but clean up.
        Ok(_) => {
            infra.destroy(&client.id, &ignore).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_step_that_cannot_log_in_undoes_the_certificate_step() {
    if !aws_tier().ready() {
        return;
    }
    let mut settings = settings();
    settings.shared_db_master_secret = Some("stackbox/shared-db-master-wrong".to_string());
    let client = client("dbfail", "professional", 0x72);
    let error = fails_cleanly(&client, &settings, None, InfraStep::Database).await;
    assert!(matches!(error, AwsError::Database { .. }), "{error}");
    assert!(!error.to_string().contains("not-the-password"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untagged_secret_with_the_clients_name_is_a_conflict_and_is_left_alone() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let client = client("secretclash", "professional", 0x73);
    let config = sdk_config(&bed().endpoint).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let name = names::secret(&client.id);
    secrets
        .create_secret()
        .name(&name)
        .secret_string("someone else's")
        .send()
        .await
        .unwrap();
    let infra = infra(&settings).await;
    let error = infra
        .apply(&client.request(&settings), &ignore)
        .await
        .expect_err("conflict");
    assert!(
        matches!(
            error,
            AwsError::Conflict {
                step: InfraStep::Secret,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains(&name), "{error}");
    // The foreign secret is untouched; everything else of the client is gone.
    let value = secrets
        .get_secret_value()
        .secret_id(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(value.secret_string(), Some("someone else's"));
    let left: BTreeSet<String> = inventory(&client).await;
    assert_eq!(left, BTreeSet::from([format!("secret {name}")]));
    // Destroy does not take it either.
    infra.destroy(&client.id, &ignore).await.unwrap();
    assert!(secrets
        .describe_secret()
        .secret_id(&name)
        .send()
        .await
        .is_ok());
    secrets
        .delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untagged_target_group_with_the_clients_name_is_a_conflict_and_is_left_alone() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let client = client("groupclash", "starter", 0x74);
    let config = sdk_config(&bed().endpoint).await;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let name = names::target_group(&client.id);
    let made = elb
        .create_target_group()
        .name(&name)
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(&bed().vpc_id)
        .send()
        .await
        .unwrap();
    let arn = made.target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    let infra = infra(&settings).await;
    let error = infra
        .apply(&client.request(&settings), &ignore)
        .await
        .expect_err("conflict");
    assert!(
        matches!(
            error,
            AwsError::Conflict {
                step: InfraStep::LoadBalancer,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        inventory(&client).await,
        BTreeSet::from([format!("target-group {name}")])
    );
    let still = elb
        .describe_target_groups()
        .target_group_arns(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(still.target_groups()[0].port(), Some(8080));
    elb.delete_target_group()
        .target_group_arn(&arn)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_at_each_later_step_undoes_everything_this_run_made() {
    if !aws_tier().ready() {
        return;
    }
    // Each request type refused in turn, through a proxy in front of moto that answers it with
    // AccessDenied, as AWS does for a missing IAM permission.
    for (n, (refuse, step)) in [
        ("Action=CreateTargetGroup", InfraStep::LoadBalancer),
        ("Action=CreateRule", InfraStep::LoadBalancer),
        ("Action=AddListenerCertificates", InfraStep::LoadBalancer),
        ("/distribution?WithTags", InfraStep::Cdn),
        ("Action=RegisterTargets", InfraStep::TargetRegistration),
        ("secretsmanager.CreateSecret", InfraStep::Secret),
    ]
    .into_iter()
    .enumerate()
    {
        let settings = settings();
        let client = client(&format!("refused{n}"), "professional", 0x80 + n as u64);
        let proxy = refusing_proxy(refuse);
        let error = fails_cleanly(&client, &settings, Some(&proxy.endpoint), step).await;
        assert!(
            *proxy.refused.lock().unwrap() >= 1,
            "{refuse} was never sent"
        );
        assert!(
            matches!(error.code(), Some("AccessDenied" | "AccessDeniedException")),
            "{error}"
        );
        assert!(error.to_string().contains("refused by the test"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_points_elsewhere_in_the_operators_zone_is_a_conflict_and_is_kept() {
    if !aws_tier().ready() {
        return;
    }
    let mut settings = settings();
    settings.hosted_zone = HostedZonePolicy::Existing;
    let client = client("dnsclash", "starter", 0x75);
    let config = sdk_config(&bed().endpoint).await;
    let route53 = aws_sdk_route53::Client::new(&config);
    // The operator's own zone (untagged), with a record of its own at crm.<domain>.
    let zone = route53
        .create_hosted_zone()
        .name(client.domain())
        .caller_reference("operator-dnsclash")
        .send()
        .await
        .unwrap();
    let zone_id = zone.hosted_zone().unwrap().id().to_string();
    let record = aws_sdk_route53::types::ResourceRecordSet::builder()
        .name(format!("crm.{}", client.domain()))
        .r#type(aws_sdk_route53::types::RrType::Cname)
        .ttl(300)
        .resource_records(
            aws_sdk_route53::types::ResourceRecord::builder()
                .value("crm.saas.example.net")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    route53
        .change_resource_record_sets()
        .hosted_zone_id(&zone_id)
        .change_batch(
            aws_sdk_route53::types::ChangeBatch::builder()
                .changes(
                    aws_sdk_route53::types::Change::builder()
                        .action(aws_sdk_route53::types::ChangeAction::Create)
                        .resource_record_set(record)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let infra = infra(&settings).await;
    let error = infra
        .apply(&client.request(&settings), &ignore)
        .await
        .expect_err("conflict");
    assert!(
        matches!(
            error,
            AwsError::Conflict {
                step: InfraStep::Dns,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("crm.{}", client.domain())),
        "{error}"
    );
    // The operator's zone and record stay; nothing of the client does.
    assert_eq!(
        inventory(&client).await,
        BTreeSet::from([
            format!("hosted-zone {}", client.domain()),
            format!("record CNAME crm.{}.", client.domain()),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_hosted_zone_stops_the_phase_before_anything_is_made_when_the_policy_is_existing()
{
    if !aws_tier().ready() {
        return;
    }
    let mut settings = settings();
    settings.hosted_zone = HostedZonePolicy::Existing;
    let client = client("nozone", "starter", 0x76);
    let infra = infra(&settings).await;
    let error = infra
        .apply(&client.request(&settings), &ignore)
        .await
        .expect_err("no zone");
    let message = error.to_string();
    assert!(message.contains("aws.hosted_zone"), "{message}");
    assert_eq!(inventory(&client).await, BTreeSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_secrets_of_a_client_without_a_secret_gives_none() {
    if !aws_tier().ready() {
        return;
    }
    let settings = settings();
    let infra = infra(&settings).await;
    let id = stackbox_core::client::ClientId::parse("nobody-00000000").unwrap();
    assert_eq!(infra.read_secrets(&id).await.unwrap(), None);
}
