//! End-to-end against a real Docker engine: the `stackbox` binary deploys, inspects, stops,
//! starts, redeploys, breaks, isolates and removes client stacks.
//!
//! Needs a running engine and the local test images: `scripts/test.sh` starts `dockerd`, runs
//! `tests/images/build.sh` and passes the catalog it writes in `STACKBOX_TEST_IMAGES`; without
//! them the test skips with one line (`stackbox_testkit::engine_images`). The
//! `docker` CLI is used only to observe, never to act.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const EDGE: &str = "stackbox-test-edge";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

struct Env {
    root: tempfile::TempDir,
    operator: PathBuf,
    images: String,
}

impl Env {
    fn new(images: &str) -> Env {
        let root = tempfile::tempdir().unwrap();
        let operator = root.path().join("stackbox.toml");
        // Unusual host ports, so the test never fights a web server of the machine; and the
        // machine's own open-file limit, which a sandboxed dockerd cannot exceed.
        let hard_limit = Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .map(|o| text(&o.stdout).trim().to_string())
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(1 << 20);
        std::fs::write(
            &operator,
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 18080\nhttps_port = 18443\n\
                 [host]\nmax_open_files = {hard_limit}\n"
            ),
        )
        .unwrap();
        Env {
            root,
            operator,
            images: images.to_string(),
        }
    }

    fn root(&self) -> &str {
        self.root.path().to_str().unwrap()
    }

    fn stackbox(&self, args: &[&str], images: Option<&str>) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stackbox"))
            .args(args)
            .args(["--out", self.root()])
            .env("STACKBOX_OPERATOR_CONFIG", &self.operator)
            .env("STACKBOX_IMAGES", images.unwrap_or(&self.images))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.stackbox(args, None);
        assert!(
            output.status.success(),
            "stackbox {args:?} failed:\n{}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// The last JSON line (`--json` streams events, then the result).
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        let last = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn status(&self, id: &str) -> serde_json::Value {
        let out = self.ok(&["status", id, "--json"]);
        serde_json::from_str(&out).unwrap()
    }

    fn env_value(&self, id: &str, name: &str) -> String {
        let env = std::fs::read_to_string(self.root.path().join("clients").join(id).join(".env"))
            .unwrap();
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} not in .env"))
            .to_string()
    }
}

/// A failed assertion must not leave stacks behind on the machine's engine.
impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.root.path().join("clients")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') {
                    let _ = self.stackbox(&["destroy", &name, "--yes"], None);
                }
            }
        }
        let _ = docker(&["rm", "-f", EDGE]);
        let _ = docker(&["network", "rm", EDGE]);
    }
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../examples/{name}.toml"))
        .display()
        .to_string()
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout).trim().to_string()
}

/// Container ids of a client, by service.
fn container_ids(id: &str) -> Vec<(String, String)> {
    let out = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.stackbox.client={id}"),
        "--format",
        "{{.Label \"com.docker.compose.service\"}} {{.ID}}",
    ]);
    let mut ids: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, i)| (s.to_string(), i.to_string()))
        .collect();
    ids.sort();
    ids
}

fn ip_on(container: &str, network: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    ])
}

fn http_get(ip: &str, port: u16, host: &str) -> String {
    let mut stream = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// Nothing of the client is left on the engine.
fn assert_gone(id: &str) {
    let filter = format!("label=io.stackbox.client={id}");
    for kind in [
        ["ps", "-a", "-q"].as_slice(),
        &["network", "ls", "-q"],
        &["volume", "ls", "-q"],
    ] {
        let mut args = kind.to_vec();
        args.extend(["--filter", &filter]);
        assert_eq!(
            docker_ok(&args),
            "",
            "docker {args:?} still lists something"
        );
    }
}

/// A server "on the internet": a TCP listener in its own network namespace, linked to the
/// host by a veth pair, so that reaching it takes the route out that a container on an
/// internal network lacks (the host's own addresses do not tell: every bridge reaches those).
struct Outside(std::process::Child);

impl Outside {
    const NAMESPACE: &'static str = "stackbox-egress-test";
    const ADDRESS: &'static str = "198.51.100.2";
    const PORT: u16 = 8025;

    fn start() -> Outside {
        let ns = Self::NAMESPACE;
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", "sbx-egress0"])
            .output();
        for args in [
            vec!["netns", "add", ns],
            vec![
                "link",
                "add",
                "sbx-egress0",
                "type",
                "veth",
                "peer",
                "name",
                "sbx-egress1",
            ],
            vec!["link", "set", "sbx-egress1", "netns", ns],
            vec!["addr", "add", "198.51.100.1/30", "dev", "sbx-egress0"],
            vec!["link", "set", "sbx-egress0", "up"],
            vec![
                "-n",
                ns,
                "addr",
                "add",
                "198.51.100.2/30",
                "dev",
                "sbx-egress1",
            ],
            vec!["-n", ns, "link", "set", "sbx-egress1", "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
        ] {
            let output = Command::new("ip").args(&args).output().expect("ip");
            assert!(
                output.status.success(),
                "ip {args:?}: {}",
                text(&output.stderr)
            );
        }
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c"])
            .arg(format!(
                "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('{}', {}))\ns.listen(16)\nwhile True:\n    s.accept()[0].close()\n",
                Self::ADDRESS,
                Self::PORT
            ))
            .spawn()
            .expect("python3 in the namespace");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((Self::ADDRESS, Self::PORT)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the outside listener did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Outside(child)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("ip")
            .args(["link", "del", "sbx-egress0"])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", Self::NAMESPACE])
            .output();
    }
}

fn can_reach(from_container: &str, ip: &str, port: u16) -> bool {
    // The stand-in and Debian images all ship bash; /dev/tcp needs no client tool.
    docker(&[
        "exec",
        from_container,
        "timeout",
        "3",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{ip}/{port}"),
    ])
    .status
    .success()
}

#[test]
fn professional_client_lifecycle_on_a_real_engine() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let env = Env::new(&images);

    // An image the engine does not have (and no registry to pull from): the deploy names the
    // image and the service and how to provide it, and changes nothing.
    let catalog = std::fs::read_to_string(&env.images).unwrap();
    let missing = env.root.path().join("missing-images.toml");
    std::fs::write(
        &missing,
        catalog
            .lines()
            .map(|l| {
                if l.trim().starts_with("nginx = ") {
                    "nginx = \"stackbox-test/nginx:not-built\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let refused = env.stackbox(
        &["deploy", &example("professional")],
        Some(missing.to_str().unwrap()),
    );
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    for needle in [
        "stackbox-test/nginx:not-built (service website)",
        "--images",
        "docker load",
        "stopped before changing anything",
    ] {
        assert!(message.contains(needle), "{needle:?} missing: {message}");
    }
    let refused_ids: Vec<String> = std::fs::read_dir(env.root.path().join("clients"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    for id in &refused_ids {
        assert!(
            container_ids(id).is_empty(),
            "a refused deploy must create nothing"
        );
    }

    // Deploy: every service healthy, URLs and a one-time password in the result.
    let result = env.json(&["deploy", &example("professional"), "--json"]);
    assert_eq!(result["success"], true, "{result}");
    let id = result["client_id"].as_str().unwrap().to_string();
    let password = result["credentials"]["admin_password"].as_str().unwrap();
    assert_eq!(password, env.env_value(&id, "ADMIN_PASSWORD"));
    assert_eq!(
        result["services"]["website"],
        "https://smithrealestate.stackbox.io"
    );
    let status = env.status(&id);
    let state = status["state"].as_str().unwrap();
    assert!(state == "running" || state == "starting", "{status}");
    let services: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    for expected in [
        "traefik",
        "website",
        "mysql",
        "redis",
        "postgres",
        "espocrm",
        "nextcloud",
        "calcom",
        "plausible",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} missing: {services:?}"
        );
    }
    assert!(
        !status.to_string().contains(password),
        "status must never show a secret"
    );

    // The website, served by real nginx from the bundle, shows the company name.
    let website = format!("{id}-website-1");
    let page = http_get(
        &ip_on(&website, &format!("{id}_web")),
        80,
        "smithrealestate.stackbox.io",
    );
    assert!(
        page.contains("200 OK") && page.contains("Smith Real Estate"),
        "{page}"
    );

    // Real MariaDB: each app user logs in with its generated password, and only there.
    let mysql = format!("{id}-mysql-1");
    for (user, secret) in [
        ("espocrm", "ESPOCRM_DB_PASSWORD"),
        ("nextcloud", "NEXTCLOUD_DB_PASSWORD"),
    ] {
        let password = env.env_value(&id, secret);
        let login = docker(&[
            "exec",
            &mysql,
            "mariadb",
            "-h",
            "127.0.0.1",
            "-u",
            user,
            &format!("-p{password}"),
            user,
            "-e",
            "SELECT 1",
        ]);
        assert!(login.status.success(), "{user}: {}", text(&login.stderr));
        let wrong = docker(&[
            "exec",
            &mysql,
            "mariadb",
            "-h",
            "127.0.0.1",
            "-u",
            user,
            "-pwrong",
            user,
            "-e",
            "SELECT 1",
        ]);
        assert!(
            !wrong.status.success(),
            "{user} logged in with a wrong password"
        );
    }

    // The operator's usual tools see the stack (compose labels).
    let compose_ps = docker_ok(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(compose_ps.contains(&website), "{compose_ps}");

    // Hardening: nothing privileged, no-new-privileges everywhere, databases not published,
    // only Traefik has the Docker socket.
    for (service, container) in container_ids(&id) {
        let inspect = docker_ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Privileged}}|{{.HostConfig.SecurityOpt}}|{{json .HostConfig.PortBindings}}|{{range .Mounts}}{{.Source}} {{end}}",
            &container,
        ]);
        let fields: Vec<&str> = inspect.split('|').collect();
        assert_eq!(fields[0], "false", "{service} is privileged");
        assert_eq!(fields[1], "[no-new-privileges:true]", "{service}");
        assert!(
            fields[2] == "{}" || fields[2] == "null",
            "{service} publishes ports: {}",
            fields[2]
        );
        assert_eq!(
            fields[3].contains("docker.sock"),
            service == "traefik",
            "{service}: {inspect}"
        );
    }
    // Only the shared edge router publishes the host's ports.
    let edge_ports = docker_ok(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", EDGE]);
    assert!(
        edge_ports.contains("18080") && edge_ports.contains("18443"),
        "{edge_ports}"
    );

    // docker-compose (v1, Debian's) in the bundle sees the stack StackBox made.
    let bundle = env.root.path().join("clients").join(&id);
    let compose = Command::new("docker-compose")
        .args(["-p", &id, "ps"])
        .current_dir(&bundle)
        .output()
        .unwrap();
    let listing = text(&compose.stdout);
    assert!(compose.status.success(), "{}", text(&compose.stderr));
    assert!(
        listing.contains(&website) && listing.contains("Up"),
        "{listing}"
    );

    // Client data, to prove it survives stop, start and a failed redeploy.
    let root_password = env.env_value(&id, "MYSQL_ROOT_PASSWORD");
    let sql = |statement: &str| {
        docker(&[
            "exec",
            &mysql,
            "mariadb",
            "-uroot",
            &format!("-p{root_password}"),
            "-N",
            "-e",
            statement,
        ])
    };
    let stored =
        sql("CREATE TABLE espocrm.kept (v TEXT); INSERT INTO espocrm.kept VALUES ('client data');");
    assert!(stored.status.success(), "{}", text(&stored.stderr));

    // Stop keeps everything; start brings it back healthy.
    env.ok(&["stop", &id]);
    assert_eq!(env.status(&id)["state"], "stopped");
    let before_start = container_ids(&id);
    env.ok(&["start", &id]);
    let state = env.status(&id)["state"].as_str().unwrap().to_string();
    assert!(state == "running" || state == "starting", "{state}");
    assert_eq!(container_ids(&id), before_start, "start must not recreate");

    // Redeploy with no change recreates nothing.
    let again = env.json(&["deploy", &example("professional"), "--json"]);
    assert_eq!(again["unchanged"], true, "{again}");
    assert!(
        again["credentials"]["admin_password"].is_null(),
        "password shown twice"
    );
    assert_eq!(container_ids(&id), before_start);

    // Break one service (an image whose website health check can never pass): the deploy
    // fails naming it, shows its health output and logs, and puts the old container back.
    let broken = env.root.path().join("broken-images.toml");
    let catalog = std::fs::read_to_string(&env.images).unwrap();
    let redis_image = catalog
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis = "))
        .expect("catalog has a redis image")
        .to_string();
    std::fs::write(
        &broken,
        format!("{catalog}\n").replace(
            &catalog
                .lines()
                .find(|l| l.trim().starts_with("nginx = "))
                .unwrap()
                .to_string(),
            &format!("nginx = {redis_image}"),
        ),
    )
    .unwrap();
    let failed = env.stackbox(
        &["deploy", &example("professional"), "--health-timeout", "6"],
        Some(broken.to_str().unwrap()),
    );
    assert!(!failed.status.success());
    let report = text(&failed.stderr);
    assert!(
        report.contains("service website did not become healthy"),
        "{report}"
    );
    assert!(report.contains("health check output"), "{report}");
    assert!(report.contains("last log lines"), "{report}");
    assert!(report.contains("rolled back"), "{report}");
    assert_eq!(
        container_ids(&id),
        before_start,
        "rollback must restore the old website"
    );
    let page = http_get(
        &ip_on(&website, &format!("{id}_web")),
        80,
        "smithrealestate.stackbox.io",
    );
    assert!(
        page.contains("Smith Real Estate"),
        "old website back: {page}"
    );
    let kept = sql("SELECT v FROM espocrm.kept");
    assert_eq!(
        text(&kept.stdout).trim(),
        "client data",
        "{}",
        text(&kept.stderr)
    );

    // SIGTERM in the middle of a first deploy: rolled back, nothing of the client running;
    // the next deploy then completes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackbox"))
        .args(["deploy", &example("starter"), "--json", "--out", env.root()])
        .env("STACKBOX_OPERATOR_CONFIG", &env.operator)
        .env("STACKBOX_IMAGES", &env.images)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // Wait until the deploy is under way (a container is being created).
    let mut interrupted_id = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"plan\"") {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            interrupted_id = event["client"].as_str().map(String::from);
        }
        if line.contains("\"starting\"") {
            break;
        }
    }
    let interrupted_id = interrupted_id.expect("a plan event before any container starts");
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    for _ in lines.by_ref() {}
    let exit = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !exit.success(),
        "an interrupted deploy must not report success"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        container_ids(&interrupted_id).is_empty(),
        "an interrupted first deploy leaves no container"
    );
    // Nor a half-initialised database volume that would fail the next first start.
    assert_eq!(
        docker_ok(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.stackbox.client={interrupted_id}"),
        ]),
        "",
        "an interrupted first deploy leaves no volume"
    );

    // A second client beside it: no shared names, and no route between the two.
    let second = env.json(&["deploy", &example("starter"), "--json"]);
    assert_eq!(second["client_id"].as_str(), Some(interrupted_id.as_str()));
    let id2 = second["client_id"].as_str().unwrap().to_string();
    assert_ne!(id, id2);
    let website2 = format!("{id2}-website-1");
    let ip2 = ip_on(&website2, &format!("{id2}_web"));
    let own_traefik = ip_on(&format!("{id}-traefik-1"), &format!("{id}_web"));
    assert!(
        can_reach(&website, &own_traefik, 8082),
        "positive control: a client reaches its own Traefik"
    );
    assert!(
        !can_reach(&website, &ip2, 80),
        "client 1 reached client 2's website"
    );
    let traefik2 = ip_on(&format!("{id2}-traefik-1"), &format!("{id2}_edge"));
    assert!(
        !can_reach(&format!("{id}-traefik-1"), &traefik2, 80),
        "client 1's Traefik reached client 2's Traefik over the edge"
    );
    assert!(
        can_reach(EDGE, &traefik2, 8082),
        "the edge router reaches each client's Traefik"
    );

    // Egress: the EspoCRM daemon and the Nextcloud cron (whose jobs send mail, fetch IMAP,
    // call webhooks) reach a server beyond the host (a network namespace routed through the
    // host, as the internet would be); MySQL, only on the internal `data` network, does not.
    let outside = Outside::start();
    for service in ["espocrm-daemon", "nextcloud-cron"] {
        assert!(
            can_reach(
                &format!("{id}-{service}-1"),
                Outside::ADDRESS,
                Outside::PORT
            ),
            "{service} has no way out"
        );
    }
    assert!(
        !can_reach(&format!("{id}-mysql-1"), Outside::ADDRESS, Outside::PORT),
        "negative control: the database reached beyond the host"
    );
    drop(outside);

    // status --all lists both.
    let all: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--all", "--json"])).unwrap();
    let listed: Vec<&str> = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&id.as_str()) && listed.contains(&id2.as_str()),
        "{listed:?}"
    );

    // Cleanup keeps volumes unless asked; destroy removes everything, bundle included.
    env.ok(&["cleanup", &id2]);
    assert!(container_ids(&id2).is_empty());
    assert!(!docker_ok(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.stackbox.client={id2}")
    ])
    .is_empty());
    env.ok(&["cleanup", &id2, "--delete-volumes"]);
    assert_gone(&id2);
    let refused = env.stackbox(&["destroy", &id], None);
    assert!(!refused.status.success(), "destroy without confirmation");
    assert!(!container_ids(&id).is_empty());
    env.ok(&["destroy", &id, "--yes"]);
    assert_gone(&id);
    assert!(!Path::new(env.root()).join("clients").join(&id).exists());
}
