#![cfg(feature = "aws")]
//! The AWS provider end to end through the `stackbox` binary, against moto's server and a real
//! MariaDB, both private to this test binary and on loopback:
//!
//! - `stackbox infra plan | apply | destroy` for a professional client on the operator's shared
//!   DB instance, reached through `aws.db_connect_via` (moto's RDS endpoint has no server
//!   behind it): plan changes nothing, apply makes every resource tagged with the client and
//!   app users that log into their own databases, a second plan and apply are no-ops, destroy
//!   needs `--yes` and then leaves nothing of the client.
//! - `stackbox serve` on the real Docker engine: a client on `infrastructure = "aws"` is
//!   deployed with the `cloud` step first, its secrets live in Secrets Manager and in no bundle
//!   file, and deleting it removes its containers and every AWS resource.
//!
//! What exists in moto is read independently of StackBox with boto3
//! (tests/tools/aws_operator_setup.py), what exists in MariaDB with the `mariadb` client.
//! Needs python3 with `moto[server]`, mariadb-server, and for the serve test the engine and
//! the local test images (`scripts/test.sh` provides all of them).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{containers_of, free_port, repo_root};

const REGION: &str = "eu-west-1";
/// The shared instance's master login, in its Secrets Manager secret and in MariaDB alike.
const ADMIN_USER: &str = "sbadmin";
const ADMIN_PASSWORD: &str = "AdminPassw0rd";
/// What the ALB forwards to (moto registers any address).
const TARGET: &str = "10.0.1.15";
const EDGE: &str = "stackbox-infra-test-edge";

/// The AWS tier's guard: moto's server (with boto3, which reads what it holds) and a real
/// MariaDB, both started by this test binary.
fn aws_tier() -> stackbox_testkit::Tier {
    let moto = "python3 -m pip install 'moto[server]>=5,<6'";
    stackbox_testkit::Tier::new("aws")
        .python_modules(&["moto", "moto.server", "boto3"], moto)
        .program("moto_server", moto)
        .program("mariadb-install-db", "apt-get install mariadb-server")
        .program("mariadbd", "apt-get install mariadb-server")
        .program("mariadb", "apt-get install mariadb-client")
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
/// (its stdin pipe closes), so no server outlives the test binary, whose shared bed is a
/// static that is never dropped.
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

/// One moto server and one MariaDB for the whole binary, with the operator's shared
/// resources made once; each test uses its own client (id, domain).
struct Bed {
    endpoint: String,
    mariadb_port: u16,
    socket: PathBuf,
    listener_arn: String,
    vpc_id: String,
    alb_dns: String,
    /// Holds the AWS config paths the SDK is pointed at (absent files: no profile is read).
    dir: PathBuf,
    _moto: Guarded,
    _mariadb: Guarded,
}

static BED: OnceLock<Bed> = OnceLock::new();

fn bed() -> &'static Bed {
    BED.get_or_init(start_bed)
}

fn start_bed() -> Bed {
    // Kept (not a TempDir, which a static never drops): the MariaDB guard removes it once its
    // server is gone.
    let dir = tempfile::tempdir().unwrap().keep();
    let moto_port = free_port();
    let moto = guarded(
        r#"MOTO_ACM_VALIDATION_WAIT=1 moto_server -H 127.0.0.1 -p "$1" >"$2/moto.log" 2>&1 &
           server=$!; read -r _ignored; kill "$server"; wait "$server""#,
        &[moto_port.to_string(), dir.display().to_string()],
        moto_port,
        "moto_server (pip install 'moto[server]')",
    );
    let data = dir.join("mariadb");
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
    let socket = dir.join("mysqld.sock");
    let mariadb = guarded(
        r#"mariadbd --no-defaults --user=root --bind-address=127.0.0.1 --skip-name-resolve \
             --datadir="$2" --socket="$3" --port="$1" --pid-file="$4/mariadb.pid" \
             --log-error="$4/mariadb.log" &
           server=$!; read -r _ignored; kill "$server"; wait "$server"; rm -rf "$4""#,
        &[
            mariadb_port.to_string(),
            data.display().to_string(),
            socket.display().to_string(),
            dir.display().to_string(),
        ],
        mariadb_port,
        "mariadbd (apt-get install mariadb-server)",
    );
    let endpoint = format!("http://127.0.0.1:{moto_port}");
    let mut bed = Bed {
        endpoint,
        mariadb_port,
        socket,
        listener_arn: String::new(),
        vpc_id: String::new(),
        alb_dns: String::new(),
        dir,
        _moto: moto,
        _mariadb: mariadb,
    };
    // The shared instance's master login, as RDS makes it (all privileges, with grant option).
    bed.root_sql(&format!(
        "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
         CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
         GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;"
    ));
    let made = bed.tool(
        &[
            "setup",
            "--admin-user",
            ADMIN_USER,
            "--admin-password-env",
            "STACKBOX_TEST_DB_ADMIN_PASSWORD",
        ],
        &[("STACKBOX_TEST_DB_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    bed.listener_arn = made["listener_arn"].as_str().unwrap().to_string();
    bed.vpc_id = made["vpc_id"].as_str().unwrap().to_string();
    bed.alb_dns = made["alb_dns"].as_str().unwrap().to_string();
    bed
}

impl Bed {
    /// The operator's `[aws]` section: the shared resources, and the test's MariaDB as the
    /// address through which StackBox reaches the shared instance.
    fn aws_section(&self) -> String {
        format!(
            r#"[aws]
region = "{REGION}"
hosted_zone = "create"
listener_arn = "{}"
vpc_id = "{}"
target = "{TARGET}"
health_check_path = "/healthz"
shared_db_instance = "stackbox-shared"
shared_db_master_secret = "stackbox/shared-db-master"
db_subnet_group = "stackbox-db"
db_engine_version = "11.4.5"
certificate_wait_seconds = 60
db_connect_via = "127.0.0.1:{}"
"#,
            self.listener_arn, self.vpc_id, self.mariadb_port
        )
    }

    /// The standard AWS environment, pointed at moto, and nothing from this machine's profile.
    fn aws_env(&self, command: &mut Command) {
        command
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.join("no-aws-credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_DEFAULT_REGION");
    }

    /// Runs tests/tools/aws_operator_setup.py and returns its JSON.
    fn tool(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut command = Command::new("python3");
        command
            .arg(repo_root().join("tests/tools/aws_operator_setup.py"))
            .args(["--endpoint", &self.endpoint, "--region", REGION])
            .args(args);
        self.aws_env(&mut command);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("python3");
        assert!(
            output.status.success(),
            "aws_operator_setup.py {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Everything of the client that exists in moto, found by listing and tags.
    fn inventory(&self, client: &str, domain: &str) -> Value {
        self.tool(
            &[
                "inventory",
                "--client",
                client,
                "--domain",
                domain,
                "--listener-arn",
                &self.listener_arn,
            ],
            &[],
        )
    }

    fn secret(&self, name: &str) -> Value {
        self.tool(&["secret", "--name", name], &[])
    }

    /// A statement as MariaDB's root (over the socket), its rows tab-separated.
    fn root_sql(&self, statement: &str) -> String {
        let output = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-e", statement])
            .output()
            .expect("mariadb client");
        assert!(
            output.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Whether `user` logs into `database` over TCP (the password through MYSQL_PWD, not argv).
    fn login(&self, user: &str, password: &str, database: &str) -> bool {
        Command::new("mariadb")
            .args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P"])
            .arg(self.mariadb_port.to_string())
            .args(["-u", user, "-D", database, "-e", "SELECT 1"])
            .env("MYSQL_PWD", password)
            .output()
            .expect("mariadb client")
            .status
            .success()
    }

    /// The databases and users in MariaDB whose names carry the client id's hex part.
    fn mysql_of(&self, client: &str) -> BTreeSet<String> {
        let hex = client.rsplit_once('-').unwrap().1;
        let pattern = format!("%\\_{hex}\\_%");
        let databases = self.root_sql(&format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{pattern}'"
        ));
        let users = self.root_sql(&format!(
            "SELECT User FROM mysql.user WHERE User LIKE '{pattern}'"
        ));
        databases
            .lines()
            .map(|d| format!("database {d}"))
            .chain(users.lines().map(|u| format!("user {u}")))
            .collect()
    }
}

fn resources(inventory: &Value) -> BTreeSet<String> {
    inventory["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The last stdout line as JSON (`--json` commands end with one result object).
fn last_json(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", text(output)))
}

/// The values of a client's secret document (`{"ENV_NAME": "value", …}`).
fn secret_values(document: &str) -> BTreeMap<String, String> {
    serde_json::from_str(document).unwrap()
}

/// `stackbox --operator FILE infra …` in the AWS environment of the bed.
fn infra(operator: &Path, data: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
    command
        .arg("--operator")
        .arg(operator)
        .arg("--data-dir")
        .arg(data)
        .arg("infra")
        .args(args)
        .env_remove("STACKBOX_OPERATOR_CONFIG")
        .env_remove("STACKBOX_IMAGES")
        .env_remove("STACKBOX_SERVER");
    bed().aws_env(&mut command);
    command.output().unwrap()
}

#[test]
fn infra_plan_apply_destroy_through_the_binary_for_a_professional_client_on_the_shared_instance() {
    if !aws_tier().ready() {
        return;
    }
    let bed = bed();
    let dir = tempfile::tempdir().unwrap();
    let operator = dir.path().join("stackbox.toml");
    std::fs::write(
        &operator,
        format!(
            "[infrastructure]\nprovider = \"aws\"\n{}",
            bed.aws_section()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let id = "infracli-5e1f2a3b";
    let domain = "infracli.example.com";
    let body = format!(
        "company_name = \"Infra CLI\"\ndomain = \"{domain}\"\nplan = \"professional\"\n\
         admin_email = \"owner@{domain}\"\n"
    );
    let config = dir.path().join("client.toml");
    std::fs::write(&config, format!("client_id = \"{id}\"\n{body}")).unwrap();
    let config = config.to_str().unwrap();
    let nothing_of_the_client = |when: &str| {
        let found = resources(&bed.inventory(id, domain));
        assert!(found.is_empty(), "{when}: in moto: {found:?}");
        let found = bed.mysql_of(id);
        assert!(found.is_empty(), "{when}: in MariaDB: {found:?}");
    };

    // Without client_id there is no name or tag to find the resources by: refused, naming it.
    let anonymous = dir.path().join("anonymous.toml");
    std::fs::write(&anonymous, &body).unwrap();
    for command in ["plan", "apply"] {
        let output = infra(&operator, &data, &[command, anonymous.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("client_id"), "{stderr}");
    }
    nothing_of_the_client("after the refused commands");

    // plan lists what apply would make, and makes none of it.
    let output = infra(&operator, &data, &["plan", config]);
    assert!(output.status.success(), "{}", text(&output));
    let plan = String::from_utf8_lossy(&output.stdout).to_string();
    for kind in [
        "hosted-zone",
        "certificate",
        "cloudfront-certificate",
        "app-database",
        "secret",
        "target-group",
        "listener-rule",
        "distribution",
        "dns-record",
        "target-registration",
    ] {
        assert!(
            plan.lines()
                .any(|l| l.trim_start().starts_with(&format!("+ create    {kind} "))),
            "no {kind} to create in:\n{plan}"
        );
    }
    assert!(plan.contains(" 0 unchanged, 0 in conflict"), "{plan}");
    let output = infra(&operator, &data, &["plan", config, "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let planned = last_json(&output);
    assert_eq!(planned["client_id"], id);
    assert_eq!(planned["converged"], false, "{planned}");
    nothing_of_the_client("after plan");

    // apply makes everything, tagged with the client, and reports what it made.
    let output = infra(&operator, &data, &["apply", config, "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let applied = last_json(&output)["result"].clone();
    let created = applied["created"].as_array().unwrap();
    assert!(created.len() >= 10, "{applied}");
    let inventory = bed.inventory(id, domain);
    let after_apply = resources(&inventory);

    let certificates = inventory["certificates"].as_array().unwrap();
    let regions: BTreeSet<&str> = certificates
        .iter()
        .map(|c| c["region"].as_str().unwrap())
        .collect();
    assert_eq!(
        regions,
        BTreeSet::from([REGION, "us-east-1"]),
        "{inventory}"
    );
    for certificate in certificates {
        assert_eq!(certificate["status"], "ISSUED", "{certificate}");
        assert_eq!(certificate["domain"], domain);
        assert!(
            certificate["sans"]
                .as_array()
                .unwrap()
                .contains(&json!(format!("*.{domain}"))),
            "{certificate}"
        );
        assert_eq!(certificate["tags"]["stackbox:client"], id, "{certificate}");
    }
    assert_eq!(
        applied["certificate_arn"],
        certificates_in(certificates, REGION)
    );

    let secret = bed.secret(&format!("stackbox/{id}"));
    assert_eq!(secret["exists"], true);
    assert_eq!(secret["tags"]["stackbox:client"], id, "{secret}");
    let secrets = secret_values(secret["secret_string"].as_str().unwrap());
    assert!(
        secrets.contains_key("ADMIN_PASSWORD"),
        "{:?}",
        secrets.keys()
    );

    let groups = inventory["target_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{inventory}");
    assert_eq!(groups[0]["name"], format!("sb-{id}"));
    assert_eq!(groups[0]["tags"]["stackbox:client"], id);
    assert_eq!(groups[0]["health_check_path"], "/healthz");
    assert_eq!(groups[0]["targets"], json!([TARGET]));
    let rules = inventory["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{inventory}");
    assert_eq!(rules[0]["hosts"], json!([domain, format!("*.{domain}")]));
    assert_eq!(rules[0]["target_groups"], json!([groups[0]["arn"]]));
    assert!(
        after_apply
            .iter()
            .any(|r| r.starts_with("listener-certificate ")),
        "{after_apply:?}"
    );
    let distributions = inventory["distributions"].as_array().unwrap();
    assert_eq!(distributions.len(), 1, "{inventory}");
    assert_eq!(distributions[0]["id"], applied["distribution_id"]);
    // The apex goes to CloudFront, every service hostname to the shared ALB.
    let alias_of = |host: &str| {
        inventory["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == host && r["type"] == "A")
            .map(|r| r["alias"].as_str().unwrap().to_string())
    };
    assert_eq!(
        alias_of(domain),
        applied["distribution_domain"].as_str().map(String::from)
    );
    for sub in ["crm", "files", "booking", "analytics"] {
        assert_eq!(
            alias_of(&format!("{sub}.{domain}")),
            Some(bed.alb_dns.clone()),
            "{sub}: {inventory}"
        );
    }

    // The app databases exist on the shared instance (the test's MariaDB, reached through
    // db_connect_via), and each user logs into its own database only, with the password in
    // the client's secret.
    let databases: BTreeMap<String, String> =
        serde_json::from_value(applied["database"]["databases"].clone()).unwrap();
    assert_eq!(applied["database"]["instance"], "stackbox-shared");
    assert_eq!(
        databases.keys().map(String::as_str).collect::<Vec<_>>(),
        ["espocrm", "nextcloud"]
    );
    for (app, name) in &databases {
        let password = &secrets[&format!("{}_DB_PASSWORD", app.to_uppercase())];
        assert!(
            bed.login(name, password, name),
            "{name} cannot log into its database"
        );
        assert!(!bed.login(name, "not-the-password", name));
        for other in databases.values().filter(|other| *other != name) {
            assert!(!bed.login(name, password, other), "{name} reached {other}");
        }
    }
    assert_eq!(bed.mysql_of(id).len(), 4, "{:?}", bed.mysql_of(id));
    // Nothing the binary printed holds a secret value.
    let printed = text(&output);
    for (name, value) in &secrets {
        assert!(!printed.contains(value.as_str()), "{name} was printed");
    }

    // Converged: plan has nothing to do, and apply again creates nothing and changes nothing.
    let output = infra(&operator, &data, &["plan", config, "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let replanned = last_json(&output);
    assert_eq!(replanned["converged"], true, "{}", replanned["plan"]);
    assert!(
        replanned["plan"]
            .as_str()
            .unwrap()
            .contains("0 to create, 0 to update"),
        "{}",
        replanned["plan"]
    );
    let output = infra(&operator, &data, &["apply", config, "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let again = last_json(&output)["result"].clone();
    assert_eq!(again["created"], json!([]), "{again}");
    assert_eq!(again["distribution_id"], applied["distribution_id"]);
    assert_eq!(resources(&bed.inventory(id, domain)), after_apply);
    assert_eq!(
        secret_values(
            bed.secret(&format!("stackbox/{id}"))["secret_string"]
                .as_str()
                .unwrap()
        ),
        secrets,
        "a second apply must keep the client's secrets"
    );

    // destroy without --yes is refused and removes nothing.
    let output = infra(&operator, &data, &["destroy", id]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--yes"),
        "{}",
        text(&output)
    );
    assert_eq!(resources(&bed.inventory(id, domain)), after_apply);
    assert_eq!(bed.mysql_of(id).len(), 4);

    // destroy --yes leaves nothing of the client in moto or MariaDB.
    let output = infra(&operator, &data, &["destroy", id, "--yes", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let removed = last_json(&output)["result"]["removed"].clone();
    assert!(removed.as_array().unwrap().len() >= 10, "{removed}");
    nothing_of_the_client("after destroy");
    assert_eq!(bed.secret(&format!("stackbox/{id}"))["exists"], false);
    assert!(
        bed.login(ADMIN_USER, ADMIN_PASSWORD, "mysql"),
        "the operator's login must stay"
    );
}

fn certificates_in(certificates: &[Value], region: &str) -> Value {
    certificates
        .iter()
        .find(|c| c["region"] == region)
        .map(|c| c["arn"].clone())
        .unwrap_or(Value::Null)
}

/// `stackbox serve` with the aws provider on the bed, on the real engine.
struct Server {
    data: tempfile::TempDir,
    operator: PathBuf,
    images: String,
    port: u16,
    child: Option<Child>,
    made: Vec<String>,
}

impl Server {
    fn new(images: &str) -> Server {
        let images = images.to_string();
        let data = tempfile::tempdir().unwrap();
        let hard_limit = support::hard_open_files_limit();
        let operator = data.path().join("stackbox.toml");
        // The operator's default stays `local`: the client asks for aws itself, and the [aws]
        // section is what gives the server its cloud adapter.
        std::fs::write(
            &operator,
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 28084\n\
                 https_port = 28447\n[host]\nmax_open_files = {hard_limit}\n[probes]\nenabled = false\n{}",
                bed().aws_section()
            ),
        )
        .unwrap();
        Server {
            data,
            operator,
            images,
            port: free_port(),
            child: None,
            made: Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
        command
            .env("STACKBOX_DATA_DIR", self.data.path().join("data"))
            .env("STACKBOX_OPERATOR_CONFIG", &self.operator)
            .env("STACKBOX_IMAGES", &self.images)
            .env_remove("STACKBOX_DATABASE_URL")
            .env_remove("STACKBOX_MASTER_KEY")
            .env_remove("STACKBOX_SERVER");
        bed().aws_env(&mut command);
        command
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("serve.log")).unwrap_or_default()
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.data.path().join("serve.log")).unwrap();
        let child = self
            .command()
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.try_http("GET", "/healthz", None, None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "stackbox serve did not answer /healthz within 20 s:\n{}",
            self.log()
        );
    }

    fn token(&self) -> String {
        let output = self
            .command()
            .args(["token", "create", "--operator"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn try_http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn http(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
        let (status, body) = self.try_http(method, path, Some(token), body).unwrap();
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    }

    /// The journal's record of a step (the API shows steps without their output).
    fn step_output(&self, deployment: &str, step: &str) -> Value {
        let output = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\n\
                 db = sqlite3.connect(sys.argv[1])\n\
                 row = db.execute('SELECT output FROM deployment_steps WHERE deployment_id = ? \
                 AND name = ?', (sys.argv[2], sys.argv[3])).fetchone()\n\
                 print(row[0] if row and row[0] else 'null')",
            ])
            .arg(self.data.path().join("data/stackbox.db"))
            .args([deployment, step])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        support::remove_from_engine(EDGE, &self.made);
    }
}

fn step_names(view: &Value) -> Vec<String> {
    view["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| s["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir`, with its text.
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, String::from_utf8_lossy(&bytes).to_string()));
            }
        }
    }
    found
}

#[test]
fn serve_deploys_an_aws_client_with_the_cloud_step_first_and_delete_removes_every_aws_resource() {
    let Some(images) = aws_tier().and_engine().images() else {
        return;
    };
    let bed = bed();
    let mut server = Server::new(&images);
    server.start();
    let token = server.token();
    let domain = "cloudserve.example.com";

    // Starter without its two MySQL apps: the website alone, which needs no database server
    // (the containers would otherwise dial moto's fake RDS hostname).
    let body = json!({
        "company_name": "Cloud Serve",
        "domain": domain,
        "plan": "starter",
        "admin_email": format!("owner@{domain}"),
        "infrastructure": "aws",
        "features": { "espocrm": false, "nextcloud": false },
    })
    .to_string();
    let (status, created) = server.http("POST", "/v1/clients", &token, Some(&body));
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.push(id.clone());
    let deployment = created["deployment_id"].as_str().unwrap().to_string();
    let admin_password = created["credentials"]["admin_password"]
        .as_str()
        .unwrap()
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(120);
    let view = loop {
        let (status, view) = server.http(
            "GET",
            &format!("/v1/deployments/{deployment}"),
            &token,
            None,
        );
        assert_eq!(status, 200, "{view}");
        if matches!(
            view["status"].as_str(),
            Some("succeeded" | "failed" | "compensated")
        ) {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "not finished in 120 s: {view}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(view["status"], "succeeded", "{view}\n{}", server.log());
    assert_eq!(
        step_names(&view),
        [
            "cloud",
            "render",
            "infrastructure",
            "containers",
            "health",
            "configure",
            "notify"
        ]
    );

    // The client runs, without a MySQL container.
    let (status, detail) = server.http("GET", &format!("/v1/clients/{id}"), &token, None);
    assert_eq!(status, 200, "{detail}");
    let state = detail["state"].as_str().unwrap_or_default();
    assert!(state == "running" || state == "starting", "{detail}");
    let containers = containers_of(&id);
    assert!(!containers.is_empty());
    assert!(
        containers.iter().all(|c| c.ends_with(" running")),
        "{containers:?}"
    );
    assert!(
        !containers.iter().any(|c| c.contains("mysql")),
        "{containers:?}"
    );

    // The journal records what the cloud step made; no MySQL endpoint for a website alone.
    let journal = server.step_output(&deployment, "cloud");
    assert_eq!(journal["mysql"], Value::Null, "{journal}");
    let made = &journal["resources"];
    for field in [
        "secret_arn",
        "certificate_arn",
        "target_group_arn",
        "listener_rule_arn",
        "distribution_id",
        "hosted_zone_id",
    ] {
        assert!(
            made[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {journal}"
        );
    }

    // The AWS resources exist, tagged with the client.
    let inventory = bed.inventory(&id, domain);
    let found = resources(&inventory);
    let certificates = inventory["certificates"].as_array().unwrap();
    assert!(!certificates.is_empty(), "{inventory}");
    for certificate in certificates {
        assert_eq!(certificate["status"], "ISSUED", "{certificate}");
        assert_eq!(certificate["tags"]["stackbox:client"], id.as_str());
    }
    assert_eq!(
        certificates_in(certificates, REGION),
        made["certificate_arn"]
    );
    let groups = inventory["target_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{inventory}");
    assert_eq!(groups[0]["arn"], made["target_group_arn"]);
    assert_eq!(groups[0]["targets"], json!([TARGET]));
    assert_eq!(
        inventory["rules"].as_array().unwrap().len(),
        1,
        "{inventory}"
    );
    assert_eq!(inventory["distributions"][0]["id"], made["distribution_id"]);
    assert!(
        found.contains(&format!("record A {domain}")),
        "no apex record: {found:?}"
    );

    // The client's secrets are in its Secrets Manager secret (the password the API showed
    // once is the one stored there) and in no file of its bundle.
    let secret = bed.secret(&format!("stackbox/{id}"));
    assert_eq!(secret["exists"], true, "{secret}");
    assert_eq!(secret["tags"]["stackbox:client"], id.as_str());
    let secrets = secret_values(secret["secret_string"].as_str().unwrap());
    assert_eq!(
        secrets.get("ADMIN_PASSWORD"),
        Some(&admin_password),
        "{:?}",
        secrets.keys()
    );
    let bundle = server.data.path().join("data/bundles/clients").join(&id);
    assert!(bundle.join(".env").is_file(), "no .env in {bundle:?}");
    let files = files_under(&bundle);
    for (name, value) in &secrets {
        for (path, content) in &files {
            assert!(
                !content.contains(value.as_str()),
                "{name}'s value is in {path:?}"
            );
        }
    }

    // Delete needs the confirmation; then its containers and every AWS resource go.
    let (status, _) = server.http("DELETE", &format!("/v1/clients/{id}"), &token, None);
    assert_eq!(status, 400);
    let (status, deleting) = server.http(
        "DELETE",
        &format!("/v1/clients/{id}?confirm={id}"),
        &token,
        None,
    );
    assert_eq!(status, 202, "{deleting}");
    let destroy = deleting["deployment_id"].as_str().unwrap().to_string();
    // The journal of a destroy goes with the client: its steps are read while it runs.
    let (status, view) = server.http("GET", &format!("/v1/deployments/{destroy}"), &token, None);
    assert_eq!(status, 200, "{view}");
    assert_eq!(step_names(&view), ["stop", "remove", "cloud"], "{view}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !containers_of(&id).is_empty()
        || server
            .http("GET", &format!("/v1/clients/{id}"), &token, None)
            .0
            != 404
    {
        let (_, view) = server.http("GET", &format!("/v1/deployments/{destroy}"), &token, None);
        assert!(
            !matches!(view["status"].as_str(), Some("failed" | "compensated")),
            "{view}"
        );
        assert!(
            Instant::now() < deadline,
            "{id} not destroyed: {view}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = resources(&bed.inventory(&id, domain));
    assert!(left.is_empty(), "left in moto: {left:?}");
    assert_eq!(bed.secret(&format!("stackbox/{id}"))["exists"], false);
    assert!(!bundle.exists(), "the bundle is left: {bundle:?}");
}

#[test]
fn a_cancelled_first_apply_is_undone_and_leaves_nothing_of_the_client() {
    use std::io::{BufRead, BufReader};
    if !aws_tier().ready() {
        return;
    }
    let bed = bed();
    let dir = tempfile::tempdir().unwrap();
    let operator = dir.path().join("stackbox.toml");
    std::fs::write(
        &operator,
        format!(
            "[infrastructure]\nprovider = \"aws\"\n{}",
            bed.aws_section()
        ),
    )
    .unwrap();
    let id = "cancelled-6a7b8c9d";
    let domain = "cancelled.example.com";
    let config = dir.path().join("client.toml");
    std::fs::write(
        &config,
        format!(
            "client_id = \"{id}\"\ncompany_name = \"Cancelled\"\ndomain = \"{domain}\"\n\
             plan = \"starter\"\nadmin_email = \"owner@{domain}\"\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
    command
        .arg("--operator")
        .arg(&operator)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["infra", "apply"])
        .arg(&config)
        .env_remove("STACKBOX_OPERATOR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    bed.aws_env(&mut command);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Cancel once the run has made something (the certificate step is done).
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("certificate") && line.contains("done") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("created")),
        "nothing was made before the cancel: {seen:?}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{seen:?}\n{rest:?}");
    assert!(rest.iter().any(|l| l.contains("cancelled")), "{rest:?}");
    let left = resources(&bed.inventory(id, domain));
    assert!(left.is_empty(), "left after the cancel: {left:?}");
    assert!(bed.mysql_of(id).is_empty());
}

#[test]
fn the_local_destroy_command_also_removes_the_clients_aws_resources() {
    // The local destroy removes the client's containers first: it needs an engine to ask.
    if !aws_tier().docker_engine().ready() {
        return;
    }
    let bed = bed();
    let dir = tempfile::tempdir().unwrap();
    let operator = dir.path().join("stackbox.toml");
    std::fs::write(
        &operator,
        format!(
            "[infrastructure]\nprovider = \"aws\"\n{}",
            bed.aws_section()
        ),
    )
    .unwrap();
    let id = "localdestroy-1c2d3e4f";
    let domain = "localdestroy.example.com";
    let config = dir.path().join("client.toml");
    std::fs::write(
        &config,
        format!(
            "client_id = \"{id}\"\ncompany_name = \"Local Destroy\"\ndomain = \"{domain}\"\n\
             plan = \"starter\"\nadmin_email = \"owner@{domain}\"\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let output = infra(&operator, &data, &["apply", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!resources(&bed.inventory(id, domain)).is_empty());

    let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
    command
        .arg("--operator")
        .arg(&operator)
        .args(["destroy", id, "--yes", "--json", "--out"])
        .arg(dir.path().join("bundles"))
        .env_remove("STACKBOX_OPERATOR_CONFIG")
        .env_remove("STACKBOX_SERVER");
    bed.aws_env(&mut command);
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let result = last_json(&output);
    assert!(
        result["aws_removed"].as_u64().is_some_and(|n| n > 0),
        "{result}"
    );
    let left = resources(&bed.inventory(id, domain));
    assert!(left.is_empty(), "left after destroy: {left:?}");
    assert!(bed.mysql_of(id).is_empty());
}
