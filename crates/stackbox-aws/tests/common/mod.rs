//! The test bed: a private moto server and a private MariaDB per test binary, both on loopback,
//! the operator's shared AWS resources made through the SDK, a refusing proxy, inventories.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use stackbox_aws::{
    AwsError, AwsInfra, BoxFuture, DatabaseBootstrap, DbGrant, DbServer, MysqlBootstrap,
};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::infra::{AlbTarget, AwsSettings, HostedZonePolicy, InfraRequest, TAG_CLIENT};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::secrets::{SecretKey, Secrets, TestRandom};

pub const REGION: &str = "eu-west-1";
pub const ADMIN_USER: &str = "sbadmin";
pub const ADMIN_PASSWORD: &str = "AdminPassw0rd";
/// ACM's validation wait in moto: certificates are ISSUED this many seconds after the request.
pub const ACM_WAIT_SECONDS: u64 = 1;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what} exited before answering"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not answer on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server run through `sh -c 'server & read; kill'`: it ends when this test process does
/// (its stdin pipe closes), so no server outlives the test binary.
struct Guarded {
    _child: Child,
    _keepalive: ChildStdin,
}

fn guarded(script: &str, args: &[String], port: u16, what: &str) -> Guarded {
    let mut child = Command::new("sh")
        .args(["-c", script, "sh"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
    let keepalive = child.stdin.take().unwrap();
    wait_for_port(port, what, &mut child);
    Guarded {
        _child: child,
        _keepalive: keepalive,
    }
}

pub struct Bed {
    pub endpoint: String,
    pub moto_port: u16,
    pub mariadb_port: u16,
    pub listener_arn: String,
    pub vpc_id: String,
    pub alb_dns: String,
    _moto: Guarded,
    _mariadb: Guarded,
    _dir: tempfile::TempDir,
}

/// The AWS tier's guard, first in every test: moto's server and a real MariaDB (both started
/// by [`bed`]).
pub fn aws_tier() -> stackbox_testkit::Tier {
    let moto = "python3 -m pip install 'moto[server]>=5,<6'";
    stackbox_testkit::Tier::new("aws")
        .python_modules(&["moto", "moto.server"], moto)
        .program("moto_server", moto)
        .program("mariadb-install-db", "apt-get install mariadb-server")
        .program("mariadbd", "apt-get install mariadb-server")
        .program("mariadb", "apt-get install mariadb-client")
}

static BED: OnceLock<Bed> = OnceLock::new();

/// The test bed, started once per test binary.
pub fn bed() -> &'static Bed {
    BED.get_or_init(start_bed)
}

fn start_bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let moto_port = free_port();
    // moto: every test of this binary shares it, each with its own clients and domains.
    let moto = guarded(
        r#"MOTO_ACM_VALIDATION_WAIT="$2" moto_server -H 127.0.0.1 -p "$1" >"$3/moto.log" 2>&1 &
           server=$!; read -r _ignored; kill "$server"; wait "$server""#,
        &[
            moto_port.to_string(),
            ACM_WAIT_SECONDS.to_string(),
            dir.path().display().to_string(),
        ],
        moto_port,
        "moto_server (pip install 'moto[server]')",
    );
    // MariaDB stands in for the RDS instances' servers (moto's RDS has none behind it).
    let data = dir.path().join("data");
    let status = Command::new("mariadb-install-db")
        .args([
            "--no-defaults",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", data.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mariadb-install-db (apt-get install mariadb-server)");
    assert!(status.success(), "mariadb-install-db failed");
    let mariadb_port = free_port();
    let socket: PathBuf = dir.path().join("mysqld.sock");
    let mariadb = guarded(
        r#"mariadbd --no-defaults --user=root --bind-address=127.0.0.1 --skip-name-resolve \
             --datadir="$2" --socket="$3" --port="$1" --pid-file="$4/mariadb.pid" \
             --log-error="$4/mariadb.log" &
           server=$!; read -r _ignored; kill "$server"; wait "$server""#,
        &[
            mariadb_port.to_string(),
            data.display().to_string(),
            socket.display().to_string(),
            dir.path().display().to_string(),
        ],
        mariadb_port,
        "mariadbd (apt-get install mariadb-server)",
    );
    // The shared instance's master login, like RDS's (all privileges, with grant option).
    let setup = format!(
        "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
         CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
         GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;"
    );
    let status = Command::new("mariadb")
        .args(["--no-defaults", "-uroot"])
        .arg(format!("--socket={}", socket.display()))
        .args(["-e", &setup])
        .status()
        .expect("mariadb client");
    assert!(status.success(), "creating the admin user failed");

    let endpoint = format!("http://127.0.0.1:{moto_port}");
    let (listener_arn, vpc_id, alb_dns) = std::thread::spawn({
        let endpoint = endpoint.clone();
        move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(operator_resources(&endpoint, mariadb_port))
        }
    })
    .join()
    .unwrap();
    Bed {
        endpoint,
        moto_port,
        mariadb_port,
        listener_arn,
        vpc_id,
        alb_dns,
        _moto: moto,
        _mariadb: mariadb,
        _dir: dir,
    }
}

pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_acm::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// What the operator makes once: VPC and subnets, the ALB with its HTTPS listener (and a default
/// certificate), the shared DB instance and its master secret, a DB subnet group.
async fn operator_resources(endpoint: &str, mariadb_port: u16) -> (String, String, String) {
    let config = sdk_config(endpoint).await;
    let ec2 = aws_sdk_ec2_free::Ec2::new(endpoint);
    let (vpc, subnets) = ec2.vpc_with_subnets();
    let acm = aws_sdk_acm::Client::new(&config);
    let default_certificate = acm.import_or_request_default().await;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let balancer = elb
        .create_load_balancer()
        .name("stackbox-shared")
        .set_subnets(Some(subnets.clone()))
        .send()
        .await
        .unwrap();
    let balancer = &balancer.load_balancers()[0];
    let listener = elb
        .create_listener()
        .load_balancer_arn(balancer.load_balancer_arn().unwrap())
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Https)
        .port(443)
        .certificates(
            aws_sdk_elasticloadbalancingv2::types::Certificate::builder()
                .certificate_arn(&default_certificate)
                .build(),
        )
        .default_actions(
            aws_sdk_elasticloadbalancingv2::types::Action::builder()
                .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    aws_sdk_elasticloadbalancingv2::types::FixedResponseActionConfig::builder()
                        .status_code("404")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let rds = aws_sdk_rds::Client::new(&config);
    rds.create_db_subnet_group()
        .db_subnet_group_name("stackbox-db")
        .db_subnet_group_description("StackBox databases")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier("stackbox-shared")
        .engine("mariadb")
        // moto knows no default MariaDB version for an instance in a subnet group.
        .engine_version("11.4.5")
        .db_instance_class("db.t4g.medium")
        .allocated_storage(50)
        .master_username(ADMIN_USER)
        .master_user_password(ADMIN_PASSWORD)
        .db_subnet_group_name("stackbox-db")
        .send()
        .await
        .unwrap();
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    secrets
        .create_secret()
        .name("stackbox/shared-db-master")
        .secret_string(format!(
            r#"{{"username":"{ADMIN_USER}","password":"{ADMIN_PASSWORD}"}}"#
        ))
        .send()
        .await
        .unwrap();
    secrets
        .create_secret()
        .name("stackbox/shared-db-master-wrong")
        .secret_string(format!(
            r#"{{"username":"{ADMIN_USER}","password":"not-the-password"}}"#
        ))
        .send()
        .await
        .unwrap();
    let _ = mariadb_port;
    (
        listener.listeners()[0].listener_arn().unwrap().to_string(),
        vpc,
        balancer.dns_name().unwrap().to_string(),
    )
}

/// EC2 through moto's query API (the workspace has no EC2 SDK crate, and needs none but here).
mod aws_sdk_ec2_free {
    pub struct Ec2 {
        endpoint: String,
    }

    impl Ec2 {
        pub fn new(endpoint: &str) -> Ec2 {
            Ec2 {
                endpoint: endpoint.to_string(),
            }
        }

        fn call(&self, query: &str) -> String {
            super::http_post(
                &self.endpoint,
                "/",
                &[(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ), (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20240101/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=x",
                )],
                &format!("{query}&Version=2016-11-15"),
            )
        }

        fn tag(text: &str, name: &str) -> String {
            let open = format!("<{name}>");
            let start = text
                .find(&open)
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                + open.len();
            let end = text[start..].find(&format!("</{name}>")).unwrap() + start;
            text[start..end].to_string()
        }

        /// A VPC with two subnets in two zones (an ALB needs two).
        pub fn vpc_with_subnets(&self) -> (String, Vec<String>) {
            let vpc = Self::tag(
                &self.call("Action=CreateVpc&CidrBlock=10.0.0.0%2F16"),
                "vpcId",
            );
            let mut subnets = Vec::new();
            for (cidr, zone) in [
                ("10.0.1.0%2F24", "eu-west-1a"),
                ("10.0.2.0%2F24", "eu-west-1b"),
            ] {
                let made = self.call(&format!(
                    "Action=CreateSubnet&VpcId={vpc}&CidrBlock={cidr}&AvailabilityZone={zone}"
                ));
                subnets.push(Self::tag(&made, "subnetId"));
            }
            (vpc, subnets)
        }
    }
}

trait DefaultCertificate {
    async fn import_or_request_default(&self) -> String;
}

impl DefaultCertificate for aws_sdk_acm::Client {
    /// The listener's default certificate (the operator's own, untagged).
    async fn import_or_request_default(&self) -> String {
        self.request_certificate()
            .domain_name("operator.example.net")
            .validation_method(aws_sdk_acm::types::ValidationMethod::Dns)
            .send()
            .await
            .unwrap()
            .certificate_arn()
            .unwrap()
            .to_string()
    }
}

/// A plain HTTP/1.1 POST, for the few calls made without an SDK.
pub fn http_post(endpoint: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The operator configuration of the tests.
pub fn settings() -> AwsSettings {
    let bed = bed();
    let operator = OperatorConfig::from_toml(
        &format!(
            r#"
[infrastructure]
provider = "aws"
[aws]
region = "{REGION}"
hosted_zone = "create"
listener_arn = "{}"
vpc_id = "{}"
target = "10.0.1.15"
health_check_path = "/healthz"
shared_db_instance = "stackbox-shared"
shared_db_master_secret = "stackbox/shared-db-master"
db_subnet_group = "stackbox-db"
db_engine_version = "11.4.5"
certificate_wait_seconds = 60
"#,
            bed.listener_arn, bed.vpc_id
        ),
        "stackbox.toml",
    )
    .unwrap();
    let mut aws = operator.aws;
    assert_eq!(aws.hosted_zone, HostedZonePolicy::Create);
    assert_eq!(aws.target, Some(AlbTarget::Ip("10.0.1.15".into())));
    aws.db_wait_seconds = 30;
    aws
}

pub fn operator(settings: &AwsSettings) -> OperatorConfig {
    OperatorConfig {
        infrastructure: stackbox_core::infra::ProviderKind::Aws,
        aws: settings.clone(),
        ..OperatorConfig::default()
    }
}

pub struct TestClient {
    pub spec: ClientSpec,
    pub id: ClientId,
    pub secrets: Secrets,
}

/// A client with its own name, domain and secrets.
pub fn client(slug: &str, plan: &str, seed: u64) -> TestClient {
    let spec = ClientSpec::from_toml(&format!(
        "company_name = \"{slug}\"\ndomain = \"{slug}.example.com\"\nplan = \"{plan}\"\nadmin_email = \"owner@{slug}.example.com\"\n"
    ))
    .unwrap();
    let id = ClientId::parse(&format!("{slug}-{seed:08x}")).unwrap();
    let mut secrets = Secrets::new();
    let mut needed = SecretKey::needed_for(&spec.apps());
    needed.insert(SecretKey::MysqlRootPassword);
    secrets.fill_missing(&needed, &mut TestRandom(seed + 1));
    TestClient { spec, id, secrets }
}

impl TestClient {
    pub fn request(&self, settings: &AwsSettings) -> InfraRequest {
        InfraRequest::for_client(&self.spec, &self.id, &operator(settings), &self.secrets).unwrap()
    }

    pub fn domain(&self) -> &str {
        self.spec.domain.as_str()
    }
}

/// The bootstrap the tests inject: the RDS endpoint's host and port are replaced by the loopback
/// MariaDB's; the master login is used as given. A dedicated instance's master user is made
/// first, as RDS does when it creates an instance.
pub struct LoopbackBootstrap {
    pub port: u16,
}

impl LoopbackBootstrap {
    fn server(&self, server: &DbServer) -> DbServer {
        DbServer::new(
            "127.0.0.1",
            self.port,
            server.admin_user.clone(),
            server.admin_password(),
        )
    }

    async fn master_user(&self, server: &DbServer) -> Result<(), AwsError> {
        if server.admin_user == ADMIN_USER {
            return Ok(());
        }
        let admin = DbServer::new("127.0.0.1", self.port, ADMIN_USER, ADMIN_PASSWORD);
        let mut connection = connect(&admin).await;
        for statement in [
            format!(
                "CREATE USER IF NOT EXISTS '{}'@'%' IDENTIFIED BY {}",
                server.admin_user,
                stackbox_aws::sql_string(server.admin_password())
            ),
            format!(
                "GRANT ALL PRIVILEGES ON *.* TO '{}'@'%' WITH GRANT OPTION",
                server.admin_user
            ),
        ] {
            connection.execute(statement.as_str()).await.unwrap();
        }
        Ok(())
    }
}

impl DatabaseBootstrap for LoopbackBootstrap {
    fn existing<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>> {
        Box::pin(async move {
            self.master_user(server).await?;
            MysqlBootstrap.existing(&self.server(server), names).await
        })
    }

    fn ensure<'a>(
        &'a self,
        server: &'a DbServer,
        grants: &'a [DbGrant],
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move {
            self.master_user(server).await?;
            MysqlBootstrap.ensure(&self.server(server), grants).await
        })
    }

    fn remove<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move { MysqlBootstrap.remove(&self.server(server), names).await })
    }
}

pub async fn connect(server: &DbServer) -> sqlx::mysql::MySqlConnection {
    MySqlConnectOptions::new()
        .host(&server.host)
        .port(server.port)
        .username(&server.admin_user)
        .password(server.admin_password())
        .connect()
        .await
        .unwrap()
}

/// Logs in as `user` into `database` on the loopback MariaDB.
pub async fn login(user: &str, password: &str, database: &str) -> Result<(), sqlx::Error> {
    let connection = MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(bed().mariadb_port)
        .username(user)
        .password(password)
        .database(database)
        .connect()
        .await?;
    connection.close().await
}

/// The adapter on moto, with the loopback bootstrap, through `endpoint` (moto or a proxy).
pub async fn infra_at(settings: &AwsSettings, endpoint: &str) -> AwsInfra {
    // The SDK reads these like on a real host: the endpoint override, the region, credentials.
    std::env::set_var("AWS_ENDPOINT_URL", endpoint);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", REGION);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let infra = AwsInfra::from_env(settings).await.unwrap();
    // from_env read the environment when it loaded; tests running at once may point it
    // elsewhere afterwards, which no longer matters for this one.
    infra
        .with_bootstrap(Box::new(LoopbackBootstrap {
            port: bed().mariadb_port,
        }))
        .with_poll_interval(Duration::from_millis(200))
}

/// The SDK reads the environment when the adapter is made: one test at a time sets it.
static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The adapter on moto (see [`infra_at`]); the environment is set under a lock.
pub async fn infra(settings: &AwsSettings) -> AwsInfra {
    let endpoint = bed().endpoint.clone();
    infra_through(settings, &endpoint).await
}

pub async fn infra_through(settings: &AwsSettings, endpoint: &str) -> AwsInfra {
    let guard = ENV_LOCK.lock().await;
    let infra = infra_at(settings, endpoint).await;
    drop(guard);
    infra
}

/// Everything of a client that exists anywhere in moto and MariaDB, found independently of the
/// adapter (by listing every resource and reading its tags), as `kind name` lines.
pub async fn inventory(client: &TestClient) -> BTreeSet<String> {
    let config = sdk_config(&bed().endpoint).await;
    let id = client.id.as_str();
    let domain = client.domain();
    let mut found = BTreeSet::new();
    let tagged = |tags: Vec<(String, String)>| tags.iter().any(|(k, v)| k == TAG_CLIENT && v == id);
    for region in [REGION, "us-east-1"] {
        let acm = aws_sdk_acm::Client::from_conf(
            aws_sdk_acm::config::Builder::from(&config)
                .region(aws_config::Region::new(region))
                .build(),
        );
        let list = acm.list_certificates().send().await.unwrap();
        for summary in list.certificate_summary_list() {
            let arn = summary.certificate_arn().unwrap();
            // Other tests delete their certificates meanwhile.
            let Ok(tags) = acm
                .list_tags_for_certificate()
                .certificate_arn(arn)
                .send()
                .await
            else {
                continue;
            };
            let tags = tags
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().unwrap_or("").to_string()))
                .collect();
            if tagged(tags) || summary.domain_name() == Some(domain) {
                found.insert(format!("certificate {region} {arn}"));
            }
        }
    }
    let route53 = aws_sdk_route53::Client::new(&config);
    for zone in route53
        .list_hosted_zones()
        .send()
        .await
        .unwrap()
        .hosted_zones()
    {
        let name = zone.name().trim_end_matches('.');
        if name == domain {
            found.insert(format!("hosted-zone {name}"));
            let records = route53
                .list_resource_record_sets()
                .hosted_zone_id(zone.id())
                .send()
                .await
                .unwrap();
            for record in records.resource_record_sets() {
                if !matches!(
                    record.r#type(),
                    aws_sdk_route53::types::RrType::Ns | aws_sdk_route53::types::RrType::Soa
                ) {
                    found.insert(format!(
                        "record {} {}",
                        record.r#type().as_str(),
                        record.name()
                    ));
                }
            }
        }
    }
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    for secret in secrets.list_secrets().send().await.unwrap().secret_list() {
        let tags = secret
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or("").to_string(),
                    t.value().unwrap_or("").to_string(),
                )
            })
            .collect();
        if tagged(tags) || secret.name().is_some_and(|n| n.contains(id)) {
            found.insert(format!("secret {}", secret.name().unwrap_or("")));
        }
    }
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    for group in elb
        .describe_target_groups()
        .send()
        .await
        .unwrap()
        .target_groups()
    {
        if group.target_group_name().is_some_and(|n| n.contains(id)) {
            found.insert(format!(
                "target-group {}",
                group.target_group_name().unwrap()
            ));
            let health = elb
                .describe_target_health()
                .target_group_arn(group.target_group_arn().unwrap())
                .send()
                .await
                .unwrap();
            for target in health.target_health_descriptions() {
                found.insert(format!(
                    "target {}",
                    target.target().and_then(|t| t.id()).unwrap_or("")
                ));
            }
        }
    }
    let rules = elb
        .describe_rules()
        .listener_arn(&bed().listener_arn)
        .send()
        .await
        .unwrap();
    for rule in rules.rules() {
        let hosts: Vec<String> = rule
            .conditions()
            .iter()
            .filter_map(|c| c.host_header_config())
            .flat_map(|h| h.values().to_vec())
            .collect();
        if hosts.iter().any(|h| h.ends_with(domain)) {
            found.insert(format!("listener-rule {}", hosts.join(",")));
        }
    }
    let attached = elb
        .describe_listener_certificates()
        .listener_arn(&bed().listener_arn)
        .send()
        .await
        .unwrap();
    let own: BTreeSet<String> = found
        .iter()
        .filter_map(|f| f.strip_prefix("certificate "))
        .filter_map(|f| f.split(' ').nth(1).map(str::to_string))
        .collect();
    for certificate in attached.certificates() {
        if own.contains(certificate.certificate_arn().unwrap_or("")) {
            found.insert(format!(
                "listener-certificate {}",
                certificate.certificate_arn().unwrap()
            ));
        }
    }
    let cloudfront = aws_sdk_cloudfront::Client::new(&config);
    let list = cloudfront.list_distributions().send().await.unwrap();
    if let Some(list) = list.distribution_list() {
        for distribution in list.items() {
            let Ok(tags) = cloudfront
                .list_tags_for_resource()
                .resource(distribution.arn())
                .send()
                .await
            else {
                continue;
            };
            let tags = tags
                .tags()
                .map(|t| {
                    t.items()
                        .iter()
                        .map(|t| (t.key().to_string(), t.value().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if tagged(tags) {
                found.insert(format!("distribution {}", distribution.id()));
            }
        }
    }
    let rds = aws_sdk_rds::Client::new(&config);
    for instance in rds
        .describe_db_instances()
        .send()
        .await
        .unwrap()
        .db_instances()
    {
        if instance
            .db_instance_identifier()
            .is_some_and(|n| n.contains(id))
        {
            found.insert(format!(
                "db-instance {}",
                instance.db_instance_identifier().unwrap()
            ));
        }
    }
    // Databases and users in MariaDB whose names carry the client's hex suffix.
    let admin = DbServer::new("127.0.0.1", bed().mariadb_port, ADMIN_USER, ADMIN_PASSWORD);
    let mut connection = connect(&admin).await;
    let hex = id.rsplit_once('-').unwrap().1;
    let pattern = format!("%\\_{hex}\\_%");
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
    )
    .bind(&pattern)
    .fetch_all(&mut connection)
    .await
    .unwrap();
    for (name,) in rows {
        found.insert(format!("mysql-database {name}"));
    }
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT CAST(User AS CHAR) FROM mysql.user WHERE User LIKE ?")
            .bind(&pattern)
            .fetch_all(&mut connection)
            .await
            .unwrap();
    for (name,) in rows {
        found.insert(format!("mysql-user {name}"));
    }
    found
}

/// A proxy in front of moto that refuses the POST requests whose text contains `refuse` (an API
/// action such as `RegisterTargets`, or a path), answering them as AWS refuses a request.
pub struct RefusingProxy {
    pub endpoint: String,
    pub refused: Arc<Mutex<u32>>,
}

pub fn refusing_proxy(refuse: &'static str) -> RefusingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let upstream = bed().moto_port;
    let refused = Arc::new(Mutex::new(0));
    let count = refused.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let count = count.clone();
            std::thread::spawn(move || serve(stream, upstream, refuse, &count));
        }
    });
    RefusingProxy { endpoint, refused }
}

fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return Some(data);
            }
        }
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
    }
}

fn serve(mut client: TcpStream, upstream: u16, refuse: &str, count: &Mutex<u32>) {
    // One request per connection: the answer closes it.
    let Some(request) = read_request(&mut client) else {
        return;
    };
    let text = String::from_utf8_lossy(&request);
    // Only changes are refused (every AWS change is a POST); reads go through.
    if text.starts_with("POST ") && text.contains(refuse) {
        *count.lock().unwrap() += 1;
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                    <Message>refused by the test</Message></Error></ErrorResponse>";
        let json = r#"{"__type":"AccessDeniedException","message":"refused by the test"}"#;
        let (kind, body) = if text.to_ascii_lowercase().contains("x-amz-target") {
            ("application/x-amz-json-1.1", json)
        } else {
            ("text/xml", body)
        };
        let _ = client.write_all(
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: {kind}\r\nx-amzn-ErrorType: AccessDeniedException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        return;
    }
    // Forward with `Connection: close`, so the answer ends with the upstream's close.
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&request[..head_end]);
    let mut rewritten: Vec<String> = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_string)
        .collect();
    rewritten.push("Connection: close".to_string());
    let mut out = rewritten.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&request[head_end + 4..]);
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if server.write_all(&out).is_err() {
        return;
    }
    let mut response = Vec::new();
    let _ = server.read_to_end(&mut response);
    let _ = client.write_all(&response);
}
