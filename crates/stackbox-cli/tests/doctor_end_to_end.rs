//! `stackbox doctor` as an operator runs it: on the local engine with the test images, without
//! an engine, with a catalog naming an image that does not exist, with the ingress ports held,
//! and with a database that does not answer. Exit 0 with warnings only, 1 when a check fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Secret values given to doctor that must never appear in what it prints.
const MASTER_KEY: &str = "5ec12e755ec12e755ec12e755ec12e755ec12e755ec12e755ec12e755ec12e75";
const SMTP_PASSWORD: &str = "smtp-pw-DOCTORMARK";
const STRIPE_KEY: &str = "sk_test_stripe-DOCTORMARK";
const WEBHOOK_SECRET: &str = "whsec_webhook-DOCTORMARK";
const DATABASE_PASSWORD: &str = "db-pw-DOCTORMARK";

/// The engine tier's guard: the local test images' catalog, or `None` (the test returns).
fn test_images() -> Option<PathBuf> {
    stackbox_testkit::engine_images().map(PathBuf::from)
}

/// An operator file with ingress ports nothing else uses and its own edge router name.
fn operator_file(dir: &Path, router: &str, http: u16, https: u16) -> PathBuf {
    let path = dir.join("stackbox.toml");
    std::fs::write(
        &path,
        format!(
            "[ingress]\nmode = \"edge\"\nedge_router = \"{router}\"\nhttp_port = {http}\n\
             https_port = {https}\n"
        ),
    )
    .unwrap();
    path
}

/// `stackbox doctor` with a clean environment: no inherited StackBox settings.
fn doctor(dir: &Path, operator: &Path, images: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
    command
        .arg("doctor")
        .env("STACKBOX_OPERATOR_CONFIG", operator)
        .env("STACKBOX_IMAGES", images)
        .env("STACKBOX_DATA_DIR", dir.join("data"))
        .env_remove("DOCKER_HOST")
        .env_remove("STACKBOX_SERVER")
        .env_remove("STACKBOX_DATABASE_URL")
        .env_remove("STACKBOX_MASTER_KEY");
    for variable in [
        "STACKBOX_STRIPE_SECRET_KEY",
        "STACKBOX_STRIPE_WEBHOOK_SECRET",
        "STACKBOX_STRIPE_PRICE_STARTER",
        "STACKBOX_SMTP_URL",
        "STACKBOX_MAIL_FROM",
        "STACKBOX_PUBLIC_URL",
    ] {
        command.env_remove(variable);
    }
    command
}

fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output, stdout, stderr)
}

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stdout}"))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

const IMAGE_KEYS: [&str; 12] = [
    "traefik",
    "nginx",
    "mysql",
    "redis",
    "postgres",
    "espocrm",
    "nextcloud",
    "calcom",
    "plausible",
    "clickhouse",
    "mailtrain",
    "mongo",
];

#[test]
fn doctor_on_the_local_engine_with_the_test_images_finds_every_image_and_prints_no_secret() {
    let Some(images) = test_images() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_file(
        dir.path(),
        "stackbox-doctor-test-edge",
        support::free_port(),
        support::free_port(),
    );
    let with_secrets = |command: &mut Command| {
        command
            .env("STACKBOX_MASTER_KEY", MASTER_KEY)
            .env(
                "STACKBOX_SMTP_URL",
                format!("smtp://mailer:{SMTP_PASSWORD}@mail.doctor.example:587"),
            )
            .env("STACKBOX_MAIL_FROM", "hello@doctor.example")
            .env("STACKBOX_STRIPE_SECRET_KEY", STRIPE_KEY)
            .env("STACKBOX_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("STACKBOX_STRIPE_PRICE_STARTER", "price_doctor")
            .env("STACKBOX_PUBLIC_URL", "https://stackbox.doctor.example");
    };
    let mut json = doctor(dir.path(), &operator, &images);
    json.arg("--json");
    with_secrets(&mut json);
    let (output, stdout, stderr) = run(&mut json);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report = parse(&stdout);
    assert_eq!(report["ok"], true, "{report:#}");
    for key in IMAGE_KEYS {
        let image = check(&report, &format!("image:{key}"));
        assert_eq!(image["status"], "ok", "{image}");
        assert!(
            image["detail"].as_str().unwrap().contains("stackbox-test/"),
            "{image}"
        );
    }
    assert_eq!(check(&report, "engine")["status"], "ok");
    assert!(check(&report, "engine")["detail"]
        .as_str()
        .unwrap()
        .contains("API 1."));
    for name in ["ingress-http", "ingress-https", "disk", "data-dir", "store"] {
        assert_eq!(check(&report, name)["status"], "ok", "{report:#}");
    }
    let key = check(&report, "master-key");
    assert_eq!(key["status"], "ok", "{key}");
    assert!(key["detail"]
        .as_str()
        .unwrap()
        .contains("STACKBOX_MASTER_KEY"));
    let smtp = check(&report, "smtp");
    assert_eq!(smtp["status"], "ok");
    assert_eq!(
        smtp["detail"],
        "from hello@doctor.example through smtp://mail.doctor.example:587"
    );
    assert_eq!(check(&report, "stripe")["status"], "ok");
    // Every check has a status and a detail; warn and fail have a fix.
    for c in report["checks"].as_array().unwrap() {
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        assert_eq!(c["status"] != "ok", c.get("fix").is_some(), "{c}");
    }
    // Nothing in the data directory was created by looking.
    assert!(!dir.path().join("data").exists());

    let mut text = doctor(dir.path(), &operator, &images);
    with_secrets(&mut text);
    let (text_output, text_stdout, text_stderr) = run(&mut text);
    assert_eq!(
        text_output.status.code(),
        Some(0),
        "{text_stdout}\n{text_stderr}"
    );
    let lines: Vec<&str> = text_stdout.lines().collect();
    let checks = report["checks"].as_array().unwrap().len();
    assert_eq!(lines.len(), checks + 1, "{text_stdout}");
    for line in &lines[..checks] {
        assert!(
            line.starts_with("✓ ") || line.starts_with("! "),
            "{line}\n{text_stdout}"
        );
    }
    assert!(
        lines[checks].starts_with("ready to deploy"),
        "{text_stdout}"
    );

    for printed in [&stdout, &stderr, &text_stdout, &text_stderr] {
        for secret in [
            MASTER_KEY,
            SMTP_PASSWORD,
            STRIPE_KEY,
            WEBHOOK_SECRET,
            "DOCTORMARK",
        ] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
    }
}

#[test]
fn doctor_without_an_engine_fails_the_engine_check_naming_the_socket_and_docker_host() {
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_file(dir.path(), "stackbox-doctor-test-edge", 80, 443);
    // No engine, so no image is looked at: the catalog's own images, no test images needed.
    let catalog = dir.path().join("images.toml");
    std::fs::write(&catalog, "[images]\n").unwrap();
    let (output, stdout, stderr) = run(doctor(dir.path(), &operator, &catalog)
        .arg("--json")
        .env("DOCKER_HOST", "unix:///nonexistent.sock"));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let report = parse(&stdout);
    assert_eq!(report["ok"], false);
    let engine = check(&report, "engine");
    assert_eq!(engine["status"], "fail", "{engine}");
    assert!(
        engine["detail"]
            .as_str()
            .unwrap()
            .contains("unix:///nonexistent.sock"),
        "{engine}"
    );
    assert!(
        engine["fix"].as_str().unwrap().contains("DOCKER_HOST"),
        "{engine}"
    );
    // The checks that need no engine still run.
    for name in ["open-files", "data-dir", "master-key", "store"] {
        check(&report, name);
    }

    let (output, stdout, stderr) =
        run(doctor(dir.path(), &operator, &catalog).env("DOCKER_HOST", "unix:///nonexistent.sock"));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("✗ engine: "))
        .unwrap_or_else(|| panic!("no failed engine line:\n{stdout}"));
    assert!(
        line.contains("fix: ") && line.contains("DOCKER_HOST"),
        "{line}"
    );
    assert!(
        !stderr.contains("error:"),
        "a failed check is not an error: {stderr}"
    );
}

#[test]
fn doctor_with_a_catalog_naming_a_missing_image_fails_that_image_check_naming_it() {
    let Some(images) = test_images() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_file(
        dir.path(),
        "stackbox-doctor-test-edge",
        support::free_port(),
        support::free_port(),
    );
    let missing = "stackbox-test/doctor-does-not-exist:0";
    let catalog = std::fs::read_to_string(&images).unwrap();
    let catalog: String = catalog
        .lines()
        .map(|line| {
            if line.starts_with("mysql ") || line.starts_with("mysql=") {
                format!("mysql = \"{missing}\"\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert!(
        catalog.contains(missing),
        "the test catalog has no mysql line"
    );
    let images = dir.path().join("images.toml");
    std::fs::write(&images, catalog).unwrap();
    let (output, stdout, stderr) = run(doctor(dir.path(), &operator, &images).arg("--json"));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let report = parse(&stdout);
    assert_eq!(report["ok"], false);
    let mysql = check(&report, "image:mysql");
    assert_eq!(mysql["status"], "fail", "{mysql}");
    assert!(
        mysql["detail"].as_str().unwrap().contains(missing),
        "{mysql}"
    );
    let fix = mysql["fix"].as_str().unwrap();
    assert!(
        fix.contains("docker load") && fix.contains("--images"),
        "{fix}"
    );
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["image:mysql"], "{report:#}");
}

#[test]
fn doctor_accepts_a_port_held_by_its_edge_router_and_fails_one_held_by_another_process() {
    let Some(images) = test_images() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let router = format!("stackbox-doctor-router-{}", std::process::id());
    let http = support::free_port();
    let started = Command::new("docker")
        .args(["run", "-d", "--name", &router, "-p"])
        .arg(format!("{http}:80"))
        .arg(nginx_test_image(&images))
        .output()
        .unwrap();
    let _cleanup = RemoveContainer(router.clone());
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    // Something else, not a container, on the https port.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let https = held.local_addr().unwrap().port();
    let operator = operator_file(dir.path(), &router, http, https);
    let (output, stdout, stderr) = run(doctor(dir.path(), &operator, &images).arg("--json"));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let report = parse(&stdout);
    let ours = check(&report, "ingress-http");
    assert_eq!(ours["status"], "ok", "{ours}");
    assert!(ours["detail"].as_str().unwrap().contains(&router), "{ours}");
    let theirs = check(&report, "ingress-https");
    assert_eq!(theirs["status"], "fail", "{theirs}");
    assert!(
        theirs["detail"]
            .as_str()
            .unwrap()
            .contains(&https.to_string()),
        "{theirs}"
    );
    assert!(
        theirs["fix"].as_str().unwrap().contains("https_port"),
        "{theirs}"
    );

    // Under another router name, the container on that port is a foreign one.
    drop(held);
    let operator = operator_file(
        dir.path(),
        "stackbox-doctor-other-edge",
        support::free_port(),
        http,
    );
    let (_, stdout, _) = run(doctor(dir.path(), &operator, &images).arg("--json"));
    let foreign = check(&parse(&stdout), "ingress-https").clone();
    assert_eq!(foreign["status"], "fail", "{foreign}");
    assert!(
        foreign["detail"].as_str().unwrap().contains(&router),
        "{foreign}"
    );
}

#[test]
fn doctor_with_an_unreachable_database_fails_the_store_check_without_its_password() {
    let Some(images) = test_images() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let operator = operator_file(
        dir.path(),
        "stackbox-doctor-test-edge",
        support::free_port(),
        support::free_port(),
    );
    let port = support::free_port();
    let (output, stdout, stderr) = run(doctor(dir.path(), &operator, &images).arg("--json").env(
        "STACKBOX_DATABASE_URL",
        format!("postgres://stackbox:{DATABASE_PASSWORD}@127.0.0.1:{port}/stackbox"),
    ));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let store = check(&parse(&stdout), "store").clone();
    assert_eq!(store["status"], "fail", "{store}");
    assert!(
        store["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("postgres://127.0.0.1:{port}/stackbox")),
        "{store}"
    );
    assert!(
        store["fix"]
            .as_str()
            .unwrap()
            .contains("STACKBOX_DATABASE_URL"),
        "{store}"
    );
    for printed in [&stdout, &stderr] {
        assert!(!printed.contains(DATABASE_PASSWORD), "{printed}");
    }
}

fn nginx_test_image(images: &Path) -> String {
    let catalog = std::fs::read_to_string(images).unwrap();
    catalog
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "nginx").then(|| value.trim().trim_matches('"').to_string())
        })
        .expect("the test catalog names an nginx image")
}

struct RemoveContainer(String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}
