//! Probes from outside and the restart-loop alert through `stackbox serve` on a real engine.
//!
//! The Traefik stand-ins answer plain HTTP, so a real TLS server plays the visitor-facing
//! side: a host nginx terminates TLS with a certificate made by `openssl` for the client's
//! hostnames (signed by a test CA given to StackBox as `probes.ca_file`, valid 10 days) and
//! proxies to the edge router's HTTP port. The probes see every hostname up with that
//! certificate's expiry (in `/metrics`), and the certificate-expiring alert fires (10 days is
//! under 14). With the edge router stopped, nginx answers 502: after two failures in a row
//! the client is degraded with the hostname and the problem as its reason, the
//! client-degraded alert fires with one e-mail (aiosmtpd) and one signed webhook (checked by
//! a Python receiver); with the edge back the client is running again and one recovery mail
//! and one recovery webhook arrive. A service killed three times (the engine
//! starts it again each time) opens the restart-loop alert.
//!
//! Needs the engine, the local test images, nginx, openssl and python3 with aiosmtpd
//! (`scripts/test.sh`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::server::{client_body, finished, poll, Server, PROBES_OFF};
use support::{free_port, numbered_files, python_tool, wait_until, wait_until_or};

const EDGE: &str = "stackbox-probes-serve-test-edge";
const EDGE_HTTP: u16 = 18630;
const EDGE_HTTPS: u16 = 18993;
const DOMAIN: &str = "probe-shop.example";
const OPERATOR_MAILBOX: &str = "ops@operator.test";

fn run(program: &str, dir: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A test CA, and a leaf for the client's domain and its subdomains valid for 10 days.
fn certificates(dir: &Path) {
    run(
        "openssl",
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=StackBox probes test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    run(
        "openssl",
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=probe-shop.example",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        format!(
            "subjectAltName=DNS:{DOMAIN},DNS:*.{DOMAIN}\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    run(
        "openssl",
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "10",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
}

/// nginx in the foreground, stopped with `nginx -s stop` when dropped (a killed master
/// would leave its worker holding the port).
struct Front {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .args(["-p", &self.dir.display().to_string(), "-c"])
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", "stop"])
            .output();
        let _ = self.child.wait();
    }
}

/// nginx terminating TLS on `port` and passing requests, Host kept, to the edge router's
/// plain HTTP port.
fn tls_front(dir: &Path, port: u16) -> Front {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name _;\n\
             ssl_certificate {d}/leaf.pem;\n    ssl_certificate_key {d}/leaf.key;\n\
             location / {{\n      proxy_pass http://127.0.0.1:{EDGE_HTTP};\n\
             proxy_set_header Host $host;\n      proxy_connect_timeout 2s;\n    }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c"])
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Front {
        child,
        dir: dir.to_path_buf(),
    }
}

fn docker(args: &[&str]) -> String {
    run("docker", Path::new("/"), args)
}

/// The webhook receiver's records, in the order received.
fn received_webhooks(dir: &Path) -> Vec<serde_json::Value> {
    numbered_files(dir, ".json")
        .into_iter()
        .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
        .collect()
}

/// Subjects of the mails that reached the operator's mailbox, in the order received.
fn operator_subjects(dir: &Path) -> Vec<String> {
    numbered_files(dir, ".json")
        .into_iter()
        .filter_map(|envelope| {
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&envelope).ok()?).ok()?;
            if !json["rcpt_tos"]
                .as_array()?
                .iter()
                .any(|r| r == OPERATOR_MAILBOX)
            {
                return None;
            }
            let text = std::fs::read_to_string(envelope.with_extension("eml")).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .map(String::from)
        })
        .collect()
}

fn alert(server: &Server, token: &str, key: &str, state: &str) -> Option<serde_json::Value> {
    let (_, all) = server.http("GET", "/v1/alerts?open=false", token, None);
    all["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key && a["state"] == state)
        .cloned()
}

#[test]
fn probes_through_a_real_tls_front_degrade_a_client_raise_alerts_and_recover() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .python_modules(&["aiosmtpd"], "python3 -m pip install 'aiosmtpd>=1.4,<2'")
        .program("nginx", "scripts/install-test-deps.sh")
        .program("openssl", "scripts/install-test-deps.sh")
        .images()
    else {
        return;
    };
    let mut server = Server::new(&images, EDGE, EDGE_HTTP, EDGE_HTTPS);
    let tls = server.data.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    certificates(&tls);
    let front_port = free_port();
    let mail_dir = server.data.path().join("mail");
    std::fs::create_dir_all(&mail_dir).unwrap();
    let smtp_port = free_port();
    let hook_dir = server.data.path().join("hooks");
    std::fs::create_dir_all(&hook_dir).unwrap();
    let hook_port = free_port();
    let secret_file = server.data.path().join("webhook-secret");
    std::fs::write(&secret_file, "whsec-probes-test-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let operator_file = std::fs::read_to_string(&server.operator).unwrap().replace(
        PROBES_OFF,
        &format!(
            "[probes]\nevery = \"1s\"\ntimeout = \"3s\"\nfailures = 2\n\
                 via = \"127.0.0.1:{front_port}\"\nca_file = \"{}\"\n\
                 [alerts]\nfor = \"2s\"\nevery = \"1s\"\nrestarts = 3\nrestarts_within = \"5m\"\n\
                 certificate_days = 14\nemail = \"{OPERATOR_MAILBOX}\"\n\
                 webhook_url = \"http://127.0.0.1:{hook_port}/alerts\"\n\
                 webhook_secret_file = \"{}\"\n",
            tls.join("ca.pem").display(),
            secret_file.display()
        ),
    );
    assert!(operator_file.contains("[probes]\nevery"), "{operator_file}");
    std::fs::write(&server.operator, operator_file).unwrap();
    server.env = vec![
        (
            "STACKBOX_SMTP_URL".into(),
            format!("smtp://127.0.0.1:{smtp_port}"),
        ),
        ("STACKBOX_MAIL_FROM".into(), "alerts@operator.test".into()),
        ("STACKBOX_ONBOARDING_TICK".into(), "1s".into()),
    ];
    let _smtp = python_tool(
        "smtp_sink.py",
        &[
            "--port",
            &smtp_port.to_string(),
            "--dir",
            mail_dir.to_str().unwrap(),
        ],
    );
    let _hooks = python_tool(
        "webhook_sink.py",
        &[
            "--port",
            &hook_port.to_string(),
            "--dir",
            hook_dir.to_str().unwrap(),
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    let _front = tls_front(&tls, front_port);
    server.start();
    let operator = server.token(&["--operator"]);
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Probe Shop", DOMAIN)),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    let view = poll(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
        Duration::from_secs(300),
        finished,
    );
    assert_eq!(view["status"], "succeeded", "{view}");

    // Every hostname is up through the TLS front, with the certificate's real expiry.
    let last = std::cell::RefCell::new(String::new());
    let metrics = wait_until_or(
        "the probes in /metrics",
        Duration::from_secs(60),
        || {
            let (_, text) = server
                .try_http("GET", "/metrics", Some(&operator), None)
                .ok()?;
            let up = format!("stackbox_probe_up{{client=\"{id}\",hostname=\"crm.{DOMAIN}\"}} 1");
            let found = text.contains(&up).then(|| text.clone());
            *last.borrow_mut() = text;
            found
        },
        || {
            let last = last.borrow();
            let probes: Vec<&str> = last.lines().filter(|l| l.contains("probe")).collect();
            format!(": {probes:#?}")
        },
    );
    for hostname in [
        DOMAIN.to_string(),
        format!("crm.{DOMAIN}"),
        format!("files.{DOMAIN}"),
    ] {
        assert!(
            metrics.contains(&format!(
                "stackbox_probe_up{{client=\"{id}\",hostname=\"{hostname}\"}} 1"
            )),
            "{hostname}: {metrics}"
        );
    }
    let expiry: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "stackbox_certificate_expiry_timestamp_seconds{{client=\"{id}\",hostname=\"{DOMAIN}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no expiry series: {metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days = (expiry - now) / 86_400.0;
    assert!((9.0..=10.01).contains(&days), "{days} days");

    // 10 days left is under the 14 of `certificate_days`: one alert per hostname.
    let key = format!("certificate-expiring:{id}:{DOMAIN}");
    let expiring = wait_until("the certificate alert", Duration::from_secs(60), || {
        alert(&server, &operator, &key, "firing")
    });
    assert!(
        expiring["summary"]
            .as_str()
            .unwrap()
            .contains("expires in 9 day"),
        "{expiring}"
    );
    let (_, client) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(client["state"], "running", "{client}");

    // The edge router stops: nginx answers 502 for every hostname. Two failures in a row
    // make the client degraded, saying which hostname and why.
    docker(&["stop", "-t", "1", EDGE]);
    let degraded = wait_until("the client to be degraded", Duration::from_secs(60), || {
        let (_, client) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
        (client["state"] == "degraded").then_some(client)
    });
    let reason = degraded["state_reason"].as_str().unwrap();
    assert!(
        reason.contains("failed 2 probes in a row") && reason.contains("HTTP 502"),
        "{reason}"
    );
    assert!(reason.contains(DOMAIN), "{reason}");
    let degraded_key = format!("client-degraded:{id}");
    wait_until(
        "the degraded alert to fire",
        Duration::from_secs(60),
        || alert(&server, &operator, &degraded_key, "firing"),
    );
    wait_until("the degraded mail", Duration::from_secs(60), || {
        operator_subjects(&mail_dir)
            .into_iter()
            .find(|s| s.contains("FIRING") && s.contains("client degraded"))
    });

    // The edge is back: running again, the alert resolved with one recovery mail.
    docker(&["start", EDGE]);
    wait_until("the client to run again", Duration::from_secs(90), || {
        let (_, client) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
        (client["state"] == "running").then_some(())
    });
    wait_until(
        "the degraded alert to resolve",
        Duration::from_secs(60),
        || alert(&server, &operator, &degraded_key, "resolved"),
    );
    wait_until("the recovery mail", Duration::from_secs(60), || {
        operator_subjects(&mail_dir)
            .into_iter()
            .find(|s| s.contains("RESOLVED") && s.contains("client degraded"))
    });
    // The webhook receiver (which checks each signature itself) got exactly one firing and
    // one recovery notice for the degraded client.
    let notices = wait_until("the degraded webhooks", Duration::from_secs(60), || {
        let notices: Vec<serde_json::Value> = received_webhooks(&hook_dir)
            .into_iter()
            .filter(|n| n["body"]["alert"]["key"] == degraded_key.as_str())
            .collect();
        (notices.len() >= 2).then_some(notices)
    });
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices.iter().all(|n| n["verified"] == true), "{notices:?}");
    assert_eq!(notices[0]["body"]["event"], "alert.firing");
    assert_eq!(notices[1]["body"]["event"], "alert.resolved");
    let degraded_mails = operator_subjects(&mail_dir)
        .into_iter()
        .filter(|s| s.contains("client degraded"))
        .count();
    assert_eq!(degraded_mails, 2, "{:?}", operator_subjects(&mail_dir));

    // The website's process killed three times from the host, as a crash would (the engine
    // starts it again each time; `docker kill` would count as a stop on purpose): a loop.
    let website = format!("{id}-website-1");
    for _ in 0..3 {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &website]);
        run("kill", Path::new("/"), &["-9", pid.trim()]);
        std::thread::sleep(Duration::from_millis(500));
        wait_until(
            "the website to be started again",
            Duration::from_secs(60),
            || {
                let running = docker(&["inspect", "-f", "{{.State.Running}}", &website]);
                (running.trim() == "true").then_some(())
            },
        );
    }
    let loop_key = format!("restart-loop:{id}:website");
    let looping = wait_until("the restart-loop alert", Duration::from_secs(60), || {
        alert(&server, &operator, &loop_key, "firing")
    });
    assert!(
        looping["summary"].as_str().unwrap().contains("3 times"),
        "{looping}"
    );
}
