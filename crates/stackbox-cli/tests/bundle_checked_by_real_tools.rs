//! Integration tier: rendered bundles judged by independent, real tools — the published
//! compose-spec and Traefik v3 JSON schemas, Debian's docker-compose, nginx, php and real
//! MariaDB and PostgreSQL servers. `.ci/run` installs all of them; a missing tool fails the
//! test with the package to install (never a silent skip).

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

#[test]
fn traefik_configs_conform_to_the_traefik_v3_schema() {
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
fn espocrm_config_is_valid_php_returning_the_branded_settings() {
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
                    "--auth-root-authentication-method=normal",
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

    fn run_as_root(&self, sql_file: &Path) -> Output {
        let file = std::fs::File::open(sql_file).unwrap();
        run(Command::new(require("mariadb", "mariadb-client"))
            .args(["--no-defaults", "-uroot"])
            .arg(format!("--socket={}", self.socket.display()))
            .stdin(file))
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

#[test]
fn mysql_init_sql_runs_on_real_mariadb_and_limits_each_user_to_its_database() {
    let root = tempfile::tempdir().unwrap();
    let rendered = render_all(root.path());
    let db = MariaDb::start();
    for bundle in &rendered {
        let init = bundle.dir.join("config/mysql/init.sql");
        assert_success(&db.run_as_root(&init), "init.sql");
        // Converges when run again (repairs reapply it).
        assert_success(&db.run_as_root(&init), "init.sql, second run");
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
fn postgres_init_sql_runs_on_real_postgresql_and_limits_each_role_to_its_database() {
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
    for bundle in rendered
        .iter()
        .filter(|b| b.dir.join("config/postgres/init.sql").exists())
    {
        let init = bundle.dir.join("config/postgres/init.sql");
        let copy = dir.path().join("init.sql");
        std::fs::copy(&init, &copy).unwrap();
        assert_success(&run(Command::new("chmod").arg("0644").arg(&copy)), "chmod");
        for attempt in ["first", "second"] {
            let output = run(&mut as_postgres(&[
                &psql,
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &socket_dir,
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-f",
                &copy.display().to_string(),
            ]));
            assert_success(&output, &format!("postgres init.sql, {attempt} run"));
        }
        let roles = [
            ("calcom", "CALCOM_DB_PASSWORD"),
            ("plausible", "PLAUSIBLE_DB_PASSWORD"),
        ];
        for (role, key) in roles {
            let login = |database: &str| {
                run(Command::new(&psql)
                    .env("PGPASSWORD", &bundle.env[key])
                    .args([
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
            assert_success(&login(role), &format!("{role} logging into its database"));
            let (other, _) = roles.iter().find(|(r, _)| *r != role).unwrap();
            let refused = login(other);
            assert!(
                !refused.status.success(),
                "{role} reached {other}'s database"
            );
        }
    }
}
