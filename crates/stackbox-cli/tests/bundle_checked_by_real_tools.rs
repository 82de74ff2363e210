//! Integration tier: rendered bundles judged by independent, real tools — the published
//! compose-spec and Traefik v3 JSON schemas, Debian's docker-compose, nginx, php and real
//! MariaDB and PostgreSQL servers (the database init scripts sourced by bash exactly as the
//! official images' entrypoints source them). `.ci/run` installs all of them; a missing tool
//! skips the test with one line naming the package to install, and fails it where every tier
//! is required (`STACKBOX_REQUIRE_ALL_TIERS=1`, CI): never a silent skip.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOSTILE_CLIENT: &str = r##"company_name = "O'Brien & \"Sons\" $HOME ${X} `id` <script>alert(1)</script> \\ 東京 ?>"
domain = "obrien.example.com"
plan = "enterprise"
admin_email = "o.brien+ops@obrien.example.com"
brand_color = "#fc0"
"##;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The real-tools tier: each test's guard names the tools it runs.
fn tools() -> Tools {
    Tools(stackbox_testkit::Tier::new("real tools"))
}

struct Tools(stackbox_testkit::Tier);

impl Tools {
    fn program(self, name: &str, install: &str) -> Tools {
        Tools(self.0.program(name, install))
    }

    /// The schema validator (tests/tools/check_schema.py) and the published schemas beside
    /// the repository.
    fn schemas(self) -> Tools {
        let schemas = workspace().join("../shared/schemas");
        Tools(
            self.0
                .python_modules(
                    &["jsonschema", "yaml"],
                    "apt-get install python3-jsonschema python3-yaml",
                )
                .needs(
                    schemas.join("compose-spec.json").is_file()
                        && schemas.join("traefik-v3.json").is_file(),
                    format!("the JSON schemas are not in {}", schemas.display()),
                ),
        )
    }

    /// A MariaDB server and client, and bash to source the init scripts as the image does.
    fn mariadb(self) -> Tools {
        self.program("mariadb-install-db", "apt-get install mariadb-server")
            .program("mariadbd", "apt-get install mariadb-server")
            .program("mariadb", "apt-get install mariadb-client")
            .program("bash", "apt-get install bash")
    }

    fn postgresql(self) -> Tools {
        Tools(self.0.postgresql())
    }

    fn ready(self) -> bool {
        self.0.ready()
    }
}

fn require(tool: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let path = Path::new(dir).join(tool);
        if path.exists() {
            return path;
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let candidate = Path::new(dir).join(tool);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    panic!("{tool} is not installed; install the Debian package {package} (.ci/run does)");
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A rendered bundle: its folder and its `.env` values.
struct Rendered {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

/// Renders each example plus a client with a hostile company name, through the CLI.
fn render_all(root: &Path) -> Vec<Rendered> {
    let hostile = root.join("hostile.toml");
    std::fs::write(&hostile, HOSTILE_CLIENT).unwrap();
    let mut configs: Vec<PathBuf> = ["starter", "professional", "enterprise"]
        .iter()
        .map(|p| workspace().join(format!("examples/{p}.toml")))
        .collect();
    configs.push(hostile);
    configs
        .iter()
        .map(|config| {
            let output = run(Command::new(env!("CARGO_BIN_EXE_stackbox"))
                .arg("render")
                .arg(config)
                .arg("--out")
                .arg(root)
                .arg("--json"));
            assert_success(&output, "stackbox render");
            let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let dir = PathBuf::from(result["path"].as_str().unwrap());
            let env = std::fs::read_to_string(dir.join(".env"))
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains('='))
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Rendered { dir, env }
        })
        .collect()
}

fn check_schema(schema: &str, files: &[PathBuf]) -> Output {
    require(
        "python3",
        "python3 (with python3-jsonschema and python3-yaml)",
    );
    run(Command::new("python3")
        .arg(workspace().join("tests/tools/check_schema.py"))
        .arg(workspace().join("../shared/schemas").join(schema))
        .args(files))
}

#[test]
fn compose_files_conform_to_the_published_compose_spec_schema() {
    if !tools().schemas().ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let files: Vec<_> = render_all(root.path())
        .iter()
        .map(|r| r.dir.join("docker-compose.yml"))
        .collect();
    assert_success(
        &check_schema("compose-spec.json", &files),
        "compose-spec schema validation",
    );

    // Control: the same validator refuses a compose file with a misspelt key.
    let broken = root.path().join("broken.yml");
    let text =
        std::fs::read_to_string(&files[0])
            .unwrap()
            .replacen("    restart:", "    restartt:", 1);
    std::fs::write(&broken, text).unwrap();
    assert!(
        !check_schema("compose-spec.json", &[broken])
            .status
            .success(),
        "the schema check must catch a bad key"
    );
}

#[test]
fn compose_files_pass_docker_compose_config_with_their_env() {
    if !tools()
        .program("docker-compose", "apt-get install docker-compose")
        .ready()
    {
        return;
    }
    let compose = require("docker-compose", "docker-compose");
    let root = tempfile::tempdir().unwrap();
    for rendered in render_all(root.path()) {
        let output = run(Command::new(&compose)
            .arg("--project-directory")
            .arg(&rendered.dir)
            .arg("-f")
            .arg(rendered.dir.join("docker-compose.yml"))
            .arg("config")
            .env_remove("COMPOSE_PROJECT_NAME"));
        assert_success(&output, "docker-compose config");
        let resolved = String::from_utf8_lossy(&output.stdout);
        // Interpolation resolved the secrets from .env and kept literal dollars literal.
        assert!(
            resolved.contains(&rendered.env["ADMIN_PASSWORD"]),
            "admin password not interpolated"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("is not set"),
            "an interpolated variable is missing: {stderr}"
        );
        if rendered.dir.to_string_lossy().contains("obrien") {
            // `config` prints literal dollars re-escaped; an unescaped `$HOME` would have
            // been replaced by the home folder.
            assert!(
                resolved.contains("Sons\" $$HOME $${X} `id`"),
                "company name must survive interpolation:\n{resolved}"
            );
        }
    }
}

/// The professional example rendered for the AWS placement (MySQL on RDS, no secret in any
/// file) through the core, written as the bundle adapter writes it; with its secrets.
fn render_rds_bundle(root: &Path) -> (PathBuf, stackbox_core::secrets::Secrets) {
    use stackbox_core::client::{ClientId, ClientSpec};
    use stackbox_core::plan::App;
    use stackbox_core::secrets::{SecretKey, Secrets, TestRandom};
    use stackbox_core::stack::{MysqlPlacement, Placement};
    let text = std::fs::read_to_string(workspace().join("examples/professional.toml")).unwrap();
    let spec = ClientSpec::from_toml(&text).unwrap();
    let id = ClientId::new(&spec.company_name, 0x0ddba11);
    let mut secrets = Secrets::new();
    secrets.fill_missing(&SecretKey::needed_for(&spec.apps()), &mut TestRandom(42));
    let placement = Placement {
        mysql: MysqlPlacement::external(
            "stackbox-shared.c9akciq32xyz.eu-west-1.rds.amazonaws.com",
            3306,
            [
                (App::Espocrm, "smithrealesta_00ddba11_espocrm"),
                (App::Nextcloud, "smithrealesta_00ddba11_nextcloud"),
            ],
        )
        .unwrap(),
        secrets_in_files: false,
    };
    let rendered = stackbox_core::render::render_placed(
        &spec,
        &id,
        &secrets,
        &stackbox_core::operator::OperatorConfig::default(),
        &placement,
    )
    .unwrap();
    let dir = root.join(id.as_str());
    for (path, file) in &rendered.bundle.files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, &file.contents).unwrap();
    }
    (dir, secrets)
}

#[test]
fn rds_bundle_without_secret_files_passes_the_tools_once_its_secrets_are_exported() {
    if !tools()
        .schemas()
        .program("docker-compose", "apt-get install docker-compose")
        .ready()
    {
        return;
    }
    let compose = require("docker-compose", "docker-compose");
    let root = tempfile::tempdir().unwrap();
    let (dir, secrets) = render_rds_bundle(root.path());
    // No file of the bundle holds a secret value.
    let mut files = vec![dir.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
            for (key, value) in secrets.iter() {
                assert!(
                    !text.contains(value),
                    "{} is in {}",
                    key.env_name(),
                    path.display()
                );
            }
        }
    }
    assert!(!dir.join("config/mysql").exists());
    let file = dir.join("docker-compose.yml");
    assert_success(
        &check_schema("compose-spec.json", std::slice::from_ref(&file)),
        "compose-spec schema validation of the RDS bundle",
    );
    let config = |exported: &[(&str, &str)]| {
        run(Command::new(&compose)
            .arg("--project-directory")
            .arg(&dir)
            .arg("-f")
            .arg(&file)
            .arg("config")
            .env_remove("COMPOSE_PROJECT_NAME")
            .envs(exported.iter().copied()))
    };
    // As .env says: with the secrets exported from the secret store, compose resolves them.
    let exported: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (k.env_name(), v)).collect();
    let output = config(&exported);
    assert_success(&output, "docker-compose config with the secrets exported");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("is not set"), "{stderr}");
    let resolved = String::from_utf8_lossy(&output.stdout);
    assert!(resolved.contains(
        secrets
            .get(stackbox_core::secrets::SecretKey::AdminPassword)
            .unwrap()
    ));
    assert!(resolved.contains("stackbox-shared.c9akciq32xyz.eu-west-1.rds.amazonaws.com"));
    assert!(!resolved.contains("\n  mysql:"), "{resolved}");
    // Without them, .env supplies none: compose names each missing one.
    let bare = config(&[]);
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(
        stderr.contains("ADMIN_PASSWORD") && stderr.contains("is not set"),
        "{stderr}"
    );
}

#[test]
fn traefik_configs_conform_to_the_traefik_v3_schema() {
    if !tools().schemas().ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = render_all(root.path())
        .iter()
        .map(|r| r.dir.join("config/traefik/traefik.yml"))
        .collect();
    // The shared edge router's configuration too.
    let edge = root.path().join("edge-traefik.yml");
    std::fs::write(&edge, stackbox_core::render::traefik::render_edge()).unwrap();
    files.push(edge);
    assert_success(
        &check_schema("traefik-v3.json", &files),
        "traefik v3 schema validation",
    );
    let broken = root.path().join("broken.yml");
    std::fs::write(&broken, "entryPoints:\n  web:\n    adress: \":80\"\n").unwrap();
    assert!(
        !check_schema("traefik-v3.json", &[broken]).status.success(),
        "the schema check must catch a bad key"
    );
}

#[test]
fn traefik_dynamic_files_conform_to_the_traefik_v3_file_provider_schema() {
    if !tools().schemas().ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let files: Vec<_> = render_all(root.path())
        .iter()
        .map(|r| r.dir.join("config/traefik/dynamic.yml"))
        .collect();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("-headers:\n      headers:"), "{text}");
    }
    assert_success(
        &check_schema("traefik-v3-file-provider.json", &files),
        "traefik v3 file provider schema validation",
    );
    let broken = root.path().join("broken-dynamic.yml");
    std::fs::write(
        &broken,
        "http:\n  middlewares:\n    m:\n      headers:\n        stsSecond: 1\n",
    )
    .unwrap();
    assert!(
        !check_schema("traefik-v3-file-provider.json", &[broken])
            .status
            .success(),
        "the schema check must catch a bad key"
    );
}

#[test]
fn espocrm_config_is_valid_php_returning_the_branded_settings() {
    if !tools().program("php", "apt-get install php-cli").ready() {
        return;
    }
    let php = require("php", "php-cli");
    let root = tempfile::tempdir().unwrap();
    for rendered in render_all(root.path()) {
        let file = rendered.dir.join("config/espocrm/config.php");
        assert_success(&run(Command::new(&php).arg("-l").arg(&file)), "php -l");
        let output = run(Command::new(&php).arg("-r").arg(format!(
            "$c = require '{}'; echo json_encode($c);",
            file.display()
        )));
        assert_success(&output, "php require");
        let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let company = stored_company(&rendered.dir);
        assert_eq!(
            config["applicationName"], company,
            "the company name must come back unchanged"
        );
        assert_eq!(config["useWebSocket"], true);
        assert!(config["siteUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://crm."));
    }
}

/// The company name as stored in the bundle's client.toml, read with the core's own parser.
fn stored_company(bundle: &Path) -> String {
    let text = std::fs::read_to_string(bundle.join("client.toml")).unwrap();
    stackbox_core::client::ClientSpec::from_toml(&text)
        .unwrap()
        .company_name
        .as_str()
        .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: site.example\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn website_conf_passes_nginx_t_and_serves_the_branded_page() {
    if !tools().program("nginx", "apt-get install nginx").ready() {
        return;
    }
    let nginx = require("nginx", "nginx");
    let root = tempfile::tempdir().unwrap();
    for rendered in render_all(root.path()) {
        let scratch = tempfile::tempdir().unwrap();
        let port = free_port();
        // The server block as the container loads it, on a loopback port instead of :80.
        let site = std::fs::read_to_string(rendered.dir.join("config/nginx/website.conf"))
            .unwrap()
            .replace(
                "listen 80 default_server;",
                &format!("listen 127.0.0.1:{port} default_server;"),
            )
            .replace(
                "/usr/share/nginx/html",
                &rendered.dir.join("website").display().to_string(),
            );
        let s = scratch.path().display();
        std::fs::write(scratch.path().join("site.conf"), site).unwrap();
        std::fs::write(
            scratch.path().join("nginx.conf"),
            format!(
                "daemon off;\nuser root;\npid {s}/nginx.pid;\nerror_log {s}/error.log;\nevents {{}}\nhttp {{\n  include /etc/nginx/mime.types;\n  \
                 access_log off;\n  client_body_temp_path {s}/body;\n  proxy_temp_path {s}/proxy;\n  fastcgi_temp_path {s}/fastcgi;\n  \
                 uwsgi_temp_path {s}/uwsgi;\n  scgi_temp_path {s}/scgi;\n  include {s}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        let conf = scratch.path().join("nginx.conf");
        assert_success(
            &run(Command::new(&nginx)
                .arg("-t")
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(scratch.path())),
            "nginx -t",
        );

        let _server = KillOnDrop(
            Command::new(&nginx)
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(scratch.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for(|| TcpStream::connect(("127.0.0.1", port)).is_ok(), "nginx");
        let health = http_get(port, "/health");
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
            "{health}"
        );
        let page = http_get(port, "/");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(
            page.contains("X-Content-Type-Options: nosniff")
                && page.contains("Content-Security-Policy:"),
            "{page}"
        );
        let escaped_company = stored_company(&rendered.dir)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        assert!(
            page.contains(&format!("<h1>{escaped_company}</h1>")),
            "company name missing from the page"
        );
        assert!(!page.contains("<script>alert"));
        let dotfile = http_get(port, "/.env");
        assert!(
            dotfile.starts_with("HTTP/1.1 404") || dotfile.starts_with("HTTP/1.1 403"),
            "{dotfile}"
        );
    }
}

/// How the official images' entrypoints process an init file (`docker_process_init_files` of
/// mariadb-docker and docker-library/postgres): `*.sh` executed when executable, else sourced
/// into the entrypoint's shell (`set -eo pipefail`) from inside a function, where
/// `docker_process_sql` is defined. Each harness below defines that function as upstream does,
/// pointed at the test server.
const PROCESS_INIT_FILES: &str = r#"
docker_process_init_files() {
    local f
    for f; do
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then
                    "$f"
                else
                    . "$f"
                fi
                ;;
            *) echo "unexpected init file $f" >&2; exit 2 ;;
        esac
    done
}
docker_process_init_files "$1"
"#;

/// mariadb-docker's docker_exec_client and docker_process_sql (11.4), on the test server's
/// socket instead of the image's.
const MARIADB_ENTRYPOINT: &str = r#"set -eo pipefail
docker_exec_client() {
    if [ -n "${MYSQL_DATABASE:-}" ]; then
        set -- --database="$MYSQL_DATABASE" "$@"
    fi
    mariadb --no-defaults --protocol=socket -uroot -hlocalhost --socket="$STACKBOX_TEST_SOCKET" "$@"
}
docker_process_sql() {
    if [ '--dont-use-mysql-root-password' = "${1:-}" ]; then
        shift
        MYSQL_PWD='' docker_exec_client "$@"
    else
        MYSQL_PWD=$MARIADB_ROOT_PASSWORD docker_exec_client "$@"
    fi
}
"#;

/// docker-library/postgres's docker_process_sql; PGHOST/PGPORT name the test server.
const POSTGRES_ENTRYPOINT: &str = r#"set -Eeo pipefail
docker_process_sql() {
    local query_runner=( psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc )
    if [ -n "$POSTGRES_DB" ]; then
        query_runner+=( --dbname "$POSTGRES_DB" )
    fi
    PGHOSTADDR= "${query_runner[@]}" "$@"
}
"#;

/// A MariaDB server on a temporary data directory and a loopback port.
struct MariaDb {
    _server: KillOnDrop,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    port: u16,
}

impl MariaDb {
    fn start() -> MariaDb {
        let install = require("mariadb-install-db", "mariadb-server");
        let server = require("mariadbd", "mariadb-server");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert_success(
            &run(Command::new(install)
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ])
                .arg(format!("--datadir={}", data.display()))),
            "mariadb-install-db",
        );
        let socket = dir.path().join("mysqld.sock");
        let port = free_port();
        let child = Command::new(server)
            .args([
                "--no-defaults",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let db = MariaDb {
            _server: KillOnDrop(child),
            _dir: dir,
            socket,
            port,
        };
        wait_for(
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "mariadbd",
        );
        db
    }

    /// Sources `script` as the mariadb image's entrypoint does, with only `env` (the
    /// container's environment: the root password and the apps' passwords) and PATH.
    fn source_init(&self, script: &Path, env: &[(&str, &str)]) -> Output {
        require("mariadb", "mariadb-client");
        run(Command::new(require("bash", "bash"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("STACKBOX_TEST_SOCKET", &self.socket)
            // Root logs in over the socket as the OS user (the test runs as root), so the
            // password the script sets for it changes nothing for the next bundle.
            .env("MARIADB_ROOT_PASSWORD", "")
            .envs(env.iter().copied())
            .arg("-c")
            .arg(format!("{MARIADB_ENTRYPOINT}{PROCESS_INIT_FILES}"))
            .arg("stackbox-test-entrypoint")
            .arg(script))
    }

    fn root_query(&self, sql: &str) -> String {
        let output = run(Command::new(require("mariadb", "mariadb-client"))
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-e", sql]));
        assert_success(&output, sql);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn query_as(&self, user: &str, password: &str, database: &str) -> Output {
        run(Command::new(require("mariadb", "mariadb-client"))
            .args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .arg(format!("--password={password}"))
            .args(["-e", "SELECT DATABASE()", database]))
    }
}

/// The environment the stack gives a database container for its init script: each app's
/// password under its `.env` name.
fn app_passwords<'a>(bundle: &'a Rendered, keys: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    keys.iter()
        .filter_map(|key| bundle.env.get(*key).map(|v| (*key, v.as_str())))
        .collect()
}

/// The mysql container's environment for its init script: the apps' passwords and the root
/// password under the image's name.
fn mysql_env(bundle: &Rendered) -> Vec<(&str, &str)> {
    let mut env = app_passwords(bundle, &MYSQL_PASSWORDS);
    env.push((
        "MARIADB_ROOT_PASSWORD",
        bundle.env["MYSQL_ROOT_PASSWORD"].as_str(),
    ));
    env
}

const MYSQL_PASSWORDS: [&str; 3] = [
    "ESPOCRM_DB_PASSWORD",
    "NEXTCLOUD_DB_PASSWORD",
    "MAILTRAIN_DB_PASSWORD",
];

#[test]
fn mysql_init_script_holds_no_password_and_refuses_values_outside_the_generator_alphabet() {
    if !tools().mariadb().ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let rendered = render_all(root.path());
    let bundle = rendered
        .iter()
        .find(|b| b.dir.to_string_lossy().contains("obrien"))
        .unwrap();
    let script = bundle.dir.join("config/mysql/init.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    for key in MYSQL_PASSWORDS {
        assert!(
            !text.contains(&bundle.env[key]),
            "{key}'s value is in init.sh"
        );
    }
    let db = MariaDb::start();
    let mut env = mysql_env(bundle);
    // An injection attempt in a password (a hand-edited .env or a tampered secret store)
    // stops the script before any statement runs; the message names the variable only.
    let hostile = "Abcdefgh12345678'; DROP DATABASE mysql; -- ";
    env[0].1 = hostile;
    let refused = db.source_init(&script, &env);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a hostile password was accepted");
    assert!(stderr.contains("ESPOCRM_DB_PASSWORD"), "{stderr}");
    assert!(
        !stderr.contains("DROP DATABASE"),
        "the value must not be echoed: {stderr}"
    );
    assert_eq!(db.root_query("SHOW DATABASES LIKE 'mysql'"), "mysql");
    assert_eq!(
        db.root_query("SELECT COUNT(*) FROM mysql.global_priv WHERE User IN ('espocrm', 'nextcloud', 'mailtrain')"),
        "0",
        "nothing may be created when a password is refused"
    );
    // Too short, and missing, are refused the same way.
    env[0].1 = "Abcdefgh1234567";
    assert!(!db.source_init(&script, &env).status.success());
    env.remove(0);
    let missing = db.source_init(&script, &env);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("ESPOCRM_DB_PASSWORD"));
    // Made executable, the entrypoint would run it as its own process without
    // docker_process_sql: it says so instead of half-working.
    let executable = root.path().join("10-stackbox.sh");
    std::fs::copy(&script, &executable).unwrap();
    assert_success(
        &run(Command::new("chmod").arg("0755").arg(&executable)),
        "chmod",
    );
    let run_alone = db.source_init(&executable, &mysql_env(bundle));
    assert!(!run_alone.status.success());
    assert!(
        String::from_utf8_lossy(&run_alone.stderr).contains("must be sourced"),
        "{}",
        String::from_utf8_lossy(&run_alone.stderr)
    );
}

#[test]
fn mysql_init_script_runs_on_real_mariadb_and_limits_each_user_to_its_database() {
    if !tools().mariadb().ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let rendered = render_all(root.path());
    let db = MariaDb::start();
    for bundle in &rendered {
        let init = bundle.dir.join("config/mysql/init.sh");
        let env = mysql_env(bundle);
        assert_success(&db.source_init(&init, &env), "init.sh");
        // Converges when run again.
        assert_success(&db.source_init(&init, &env), "init.sh, second run");
        let apps: Vec<(&str, &str)> = [
            ("espocrm", "ESPOCRM_DB_PASSWORD"),
            ("nextcloud", "NEXTCLOUD_DB_PASSWORD"),
            ("mailtrain", "MAILTRAIN_DB_PASSWORD"),
        ]
        .into_iter()
        .filter(|(app, _)| bundle.env[&format!("ENABLE_{}", app.to_uppercase())] == "true")
        .collect();
        assert!(!apps.is_empty());
        for (user, key) in &apps {
            let password = &bundle.env[*key];
            assert_success(
                &db.query_as(user, password, user),
                &format!("{user} logging into its database"),
            );
            let wrong = db.query_as(user, "not-the-password", user);
            assert!(
                !wrong.status.success(),
                "{user} logged in with a wrong password"
            );
            for (other, _) in apps.iter().filter(|(o, _)| o != user) {
                let refused = db.query_as(user, password, other);
                assert!(
                    !refused.status.success(),
                    "{user} reached {other}'s database"
                );
                assert!(
                    String::from_utf8_lossy(&refused.stderr).contains("Access denied"),
                    "{}",
                    String::from_utf8_lossy(&refused.stderr)
                );
            }
        }
    }
}

#[test]
fn postgres_init_script_runs_on_real_postgresql_and_limits_each_role_to_its_database() {
    if !tools().postgresql().ready() {
        return;
    }
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|_| {
            panic!(
                "PostgreSQL is not installed; install the Debian package postgresql (.ci/run does)"
            )
        })
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .max()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let rendered = render_all(root.path());
    // PostgreSQL refuses to run as root: the server runs as Debian's `postgres` user.
    let dir = tempfile::Builder::new()
        .prefix("stackbox-pg")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("data");
    assert_success(
        &run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())),
        "chown",
    );
    let as_postgres = |args: &[&str]| {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).args(args);
        command
    };
    let initdb = bin.join("initdb").display().to_string();
    assert_success(
        &run(&mut as_postgres(&[
            &initdb,
            "-D",
            &data.display().to_string(),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-U",
            "postgres",
        ])),
        "initdb",
    );
    let port = free_port();
    let postgres = bin.join("postgres").display().to_string();
    let socket_dir = dir.path().display().to_string();
    let _server = KillOnDrop(
        as_postgres(&[
            &postgres,
            "-D",
            &data.display().to_string(),
            "-k",
            &socket_dir,
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    wait_for(
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "postgres",
    );
    let psql = bin.join("psql").display().to_string();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    // Sources the script as the postgres image's entrypoint does (as the postgres user, with
    // only the container's environment).
    let source_init = |script: &Path, passwords: &[(&str, &str)]| {
        let copy = dir.path().join("10-stackbox.sh");
        std::fs::copy(script, &copy).unwrap();
        assert_success(&run(Command::new("chmod").arg("0644").arg(&copy)), "chmod");
        let mut env = vec![
            format!("PATH={path}"),
            format!("PGHOST={socket_dir}"),
            format!("PGPORT={port}"),
            "POSTGRES_USER=postgres".to_string(),
            "POSTGRES_DB=postgres".to_string(),
        ];
        env.extend(passwords.iter().map(|(k, v)| format!("{k}={v}")));
        let program = format!("{POSTGRES_ENTRYPOINT}{PROCESS_INIT_FILES}");
        let copy = copy.display().to_string();
        let mut args: Vec<&str> = vec!["env", "-i"];
        args.extend(env.iter().map(String::as_str));
        args.extend(["bash", "-c", &program, "stackbox-test-entrypoint", &copy]);
        run(&mut as_postgres(&args))
    };
    let login = |role: &str, password: &str, database: &str| {
        run(Command::new(&psql).env("PGPASSWORD", password).args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            role,
            "-d",
            database,
            "-c",
            "SELECT 1",
        ]))
    };
    let roles = [
        ("calcom", "CALCOM_DB_PASSWORD"),
        ("plausible", "PLAUSIBLE_DB_PASSWORD"),
    ];
    let with_postgres: Vec<&Rendered> = rendered
        .iter()
        .filter(|b| b.dir.join("config/postgres/init.sh").exists())
        .collect();
    assert!(!with_postgres.is_empty());

    // psql quotes the passwords itself: any value is stored verbatim, none is run.
    let first = with_postgres[0];
    let script = first.dir.join("config/postgres/init.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    for (_, key) in roles {
        assert!(
            !text.contains(&first.env[key]),
            "{key}'s value is in init.sh"
        );
    }
    let hostile = r#"it's"; DROP ROLE postgres; -- :'x' \\ $HOME `id`"#;
    let passwords = [
        ("CALCOM_DB_PASSWORD", hostile),
        (
            "PLAUSIBLE_DB_PASSWORD",
            first.env["PLAUSIBLE_DB_PASSWORD"].as_str(),
        ),
    ];
    assert_success(
        &source_init(&script, &passwords),
        "init.sh with a hostile password",
    );
    assert_success(
        &login("calcom", hostile, "calcom"),
        "calcom with the hostile password",
    );
    // Nothing of the value ran: the superuser is still there.
    let superuser = run(&mut as_postgres(&[
        &psql,
        "-X",
        "-h",
        &socket_dir,
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-tAc",
        "SELECT count(*) FROM pg_roles WHERE rolname = 'postgres'",
    ]));
    assert_success(&superuser, "superuser query");
    assert_eq!(String::from_utf8_lossy(&superuser.stdout).trim(), "1");
    let missing = source_init(&script, &passwords[1..]);
    assert!(!missing.status.success(), "a missing password was accepted");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("CALCOM_DB_PASSWORD"));

    for bundle in with_postgres {
        let script = bundle.dir.join("config/postgres/init.sh");
        let passwords = app_passwords(bundle, &["CALCOM_DB_PASSWORD", "PLAUSIBLE_DB_PASSWORD"]);
        for attempt in ["first", "second"] {
            assert_success(
                &source_init(&script, &passwords),
                &format!("postgres init.sh, {attempt} run"),
            );
        }
        for (role, key) in roles {
            let password = &bundle.env[key];
            assert_success(
                &login(role, password, role),
                &format!("{role} logging into its database"),
            );
            assert!(
                !login(role, "not-the-password", role).status.success(),
                "{role} logged in with a wrong password"
            );
            let (other, _) = roles.iter().find(|(r, _)| *r != role).unwrap();
            let refused = login(role, password, other);
            assert!(
                !refused.status.success(),
                "{role} reached {other}'s database"
            );
        }
    }
}
