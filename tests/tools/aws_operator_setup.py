#!/usr/bin/env python3
"""The operator's side of AWS on moto's server, for the end-to-end tests of `stackbox infra`
and of the `cloud` step (crates/stackbox-cli/tests/infra_end_to_end.rs).

The test binary has no AWS SDK, so what an operator makes once and what a test inspects
afterwards are done here with boto3 (installed with moto). Every command prints one JSON object.

    python3 tests/tools/aws_operator_setup.py --endpoint URL --region R setup \
        --admin-user U --admin-password-env VAR
        The shared resources: a VPC with two subnets, the ALB with its HTTPS listener (and an
        operator certificate), a DB subnet group, the shared MariaDB instance and its master
        secret `stackbox/shared-db-master` (the password is read from the environment variable
        VAR, never from the command line). Prints {"listener_arn", "vpc_id", "alb_dns"}.

    ... inventory --client ID --domain D --listener-arn ARN
        Everything of the client that exists anywhere in moto, found by listing every resource
        and reading its tags and names (not through StackBox): {"resources": ["kind name", …],
        "certificates": [{"arn", "region", "status", "domain", "sans", "tags"}], …}.

    ... secret --name NAME
        The secret's string and tags: {"exists": bool, "secret_string", "tags"}.

Credentials are moto's dummies from the environment (AWS_ACCESS_KEY_ID …).
"""

import argparse
import json
import os
import sys

import boto3

CLOUDFRONT_REGION = "us-east-1"
TAG_CLIENT = "stackbox:client"


def client(args, service, region=None):
    return boto3.client(
        service,
        region_name=region or args.region,
        endpoint_url=args.endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def setup(args):
    password = os.environ[args.admin_password_env]
    ec2 = client(args, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # An ALB needs subnets in two zones.
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=args.region + zone)[
            "Subnet"
        ]["SubnetId"]
        for cidr, zone in [("10.0.1.0/24", "a"), ("10.0.2.0/24", "b")]
    ]
    # The listener's default certificate: the operator's own, untagged.
    default_certificate = client(args, "acm").request_certificate(
        DomainName="operator.example.net", ValidationMethod="DNS"
    )["CertificateArn"]
    elb = client(args, "elbv2")
    balancer = elb.create_load_balancer(Name="stackbox-shared", Subnets=subnets)[
        "LoadBalancers"
    ][0]
    listener = elb.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"],
        Protocol="HTTPS",
        Port=443,
        Certificates=[{"CertificateArn": default_certificate}],
        DefaultActions=[
            {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}
        ],
    )["Listeners"][0]
    rds = client(args, "rds")
    rds.create_db_subnet_group(
        DBSubnetGroupName="stackbox-db",
        DBSubnetGroupDescription="StackBox databases",
        SubnetIds=subnets,
    )
    rds.create_db_instance(
        DBInstanceIdentifier="stackbox-shared",
        Engine="mariadb",
        # moto knows no default MariaDB version for an instance in a subnet group.
        EngineVersion="11.4.5",
        DBInstanceClass="db.t4g.medium",
        AllocatedStorage=50,
        MasterUsername=args.admin_user,
        MasterUserPassword=password,
        DBSubnetGroupName="stackbox-db",
    )
    client(args, "secretsmanager").create_secret(
        Name="stackbox/shared-db-master",
        SecretString=json.dumps({"username": args.admin_user, "password": password}),
    )
    return {
        "listener_arn": listener["ListenerArn"],
        "vpc_id": vpc,
        "alb_dns": balancer["DNSName"],
    }


def tags_of(items, key="Key", value="Value"):
    return {t[key]: t.get(value, "") for t in items or []}


def inventory(args):
    found = set()
    certificates = []
    own_arns = set()
    for region in sorted({args.region, CLOUDFRONT_REGION}):
        acm = client(args, "acm", region)
        for summary in acm.list_certificates()["CertificateSummaryList"]:
            arn = summary["CertificateArn"]
            tags = tags_of(acm.list_tags_for_certificate(CertificateArn=arn).get("Tags"))
            if tags.get(TAG_CLIENT) != args.client and summary.get("DomainName") != args.domain:
                continue
            detail = acm.describe_certificate(CertificateArn=arn)["Certificate"]
            found.add(f"certificate {region} {arn}")
            own_arns.add(arn)
            certificates.append(
                {
                    "arn": arn,
                    "region": region,
                    "status": detail.get("Status"),
                    "domain": detail.get("DomainName"),
                    "sans": detail.get("SubjectAlternativeNames", []),
                    "tags": tags,
                }
            )
    route53 = client(args, "route53")
    records = []
    for zone in route53.list_hosted_zones()["HostedZones"]:
        if zone["Name"].rstrip(".") != args.domain:
            continue
        found.add(f"hosted-zone {args.domain}")
        for record in route53.list_resource_record_sets(HostedZoneId=zone["Id"])[
            "ResourceRecordSets"
        ]:
            if record["Type"] in ("NS", "SOA"):
                continue
            found.add(f"record {record['Type']} {record['Name'].rstrip('.')}")
            alias = record.get("AliasTarget") or {}
            records.append(
                {
                    "name": record["Name"].rstrip("."),
                    "type": record["Type"],
                    "alias": alias.get("DNSName", "").rstrip("."),
                }
            )
    secrets = client(args, "secretsmanager")
    for secret in secrets.list_secrets()["SecretList"]:
        tags = tags_of(secret.get("Tags"))
        if tags.get(TAG_CLIENT) == args.client or args.client in secret["Name"]:
            found.add(f"secret {secret['Name']}")
    elb = client(args, "elbv2")
    target_groups = []
    for group in elb.describe_target_groups()["TargetGroups"]:
        if args.client not in group["TargetGroupName"]:
            continue
        arn = group["TargetGroupArn"]
        found.add(f"target-group {group['TargetGroupName']}")
        tags = tags_of(elb.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"])
        targets = [
            t["Target"]["Id"]
            for t in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        ]
        for target in targets:
            found.add(f"target {target}")
        target_groups.append(
            {
                "name": group["TargetGroupName"],
                "arn": arn,
                "health_check_path": group.get("HealthCheckPath"),
                "tags": tags,
                "targets": targets,
            }
        )
    rules = []
    for rule in elb.describe_rules(ListenerArn=args.listener_arn)["Rules"]:
        hosts = [
            value
            for condition in rule.get("Conditions", [])
            for value in (condition.get("HostHeaderConfig") or {}).get("Values", [])
        ]
        if any(h == args.domain or h.endswith("." + args.domain) for h in hosts):
            found.add(f"listener-rule {','.join(hosts)}")
            rules.append(
                {
                    "hosts": hosts,
                    "target_groups": [
                        a.get("TargetGroupArn") for a in rule.get("Actions", [])
                    ],
                }
            )
    for certificate in elb.describe_listener_certificates(ListenerArn=args.listener_arn)[
        "Certificates"
    ]:
        if certificate["CertificateArn"] in own_arns:
            found.add(f"listener-certificate {certificate['CertificateArn']}")
    cloudfront = client(args, "cloudfront")
    distributions = []
    for item in cloudfront.list_distributions()["DistributionList"].get("Items", []):
        tags = tags_of(
            cloudfront.list_tags_for_resource(Resource=item["ARN"])["Tags"].get("Items")
        )
        if tags.get(TAG_CLIENT) != args.client:
            continue
        found.add(f"distribution {item['Id']}")
        distributions.append(
            {
                "id": item["Id"],
                "domain": item["DomainName"],
                "aliases": (item.get("Aliases") or {}).get("Items", []),
                "tags": tags,
            }
        )
    for instance in client(args, "rds").describe_db_instances()["DBInstances"]:
        if args.client in instance["DBInstanceIdentifier"]:
            found.add(f"db-instance {instance['DBInstanceIdentifier']}")
    return {
        "resources": sorted(found),
        "certificates": certificates,
        "records": records,
        "target_groups": target_groups,
        "rules": rules,
        "distributions": distributions,
    }


def secret(args):
    secrets = client(args, "secretsmanager")
    try:
        value = secrets.get_secret_value(SecretId=args.name)
    except secrets.exceptions.ResourceNotFoundException:
        return {"exists": False}
    tags = tags_of(secrets.describe_secret(SecretId=args.name).get("Tags"))
    return {"exists": True, "secret_string": value.get("SecretString"), "tags": tags}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--region", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("setup")
    made.add_argument("--admin-user", required=True)
    made.add_argument("--admin-password-env", required=True)
    listing = commands.add_parser("inventory")
    listing.add_argument("--client", required=True)
    listing.add_argument("--domain", required=True)
    listing.add_argument("--listener-arn", required=True)
    reading = commands.add_parser("secret")
    reading.add_argument("--name", required=True)
    args = parser.parse_args()
    result = {"setup": setup, "inventory": inventory, "secret": secret}[args.command](args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
