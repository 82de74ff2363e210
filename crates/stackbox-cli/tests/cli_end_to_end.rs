//! End-to-end tier: the `stackbox` binary as an operator runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stackbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackbox"))
        .args(args)
        .env_remove("STACKBOX_OPERATOR_CONFIG")
        .env_remove("STACKBOX_IMAGES")
        .output()
        .unwrap()
}

fn example(plan: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../examples/{plan}.toml"))
        .display()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn render_json(config: &str, root: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["render", config, "--out", root.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let output = stackbox(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn render_prints_id_urls_and_credentials_once() {
    let root = tempfile::tempdir().unwrap();
    let root_str = root.path().to_str().unwrap();
    let first = stackbox(&["render", &example("professional"), "--out", root_str]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("Created client smithrealestate-"), "{out}");
    for url in [
        "https://smithrealestate.stackbox.io",
        "https://crm.smithrealestate.stackbox.io",
        "https://files.smithrealestate.stackbox.io",
        "https://booking.smithrealestate.stackbox.io",
        "https://analytics.smithrealestate.stackbox.io",
    ] {
        assert!(out.contains(url), "{url} missing:\n{out}");
    }
    assert!(
        !out.contains("newsletter."),
        "mailtrain is not on the professional plan"
    );
    let id = out.split_whitespace().nth(2).unwrap().to_string();
    let env = std::fs::read_to_string(root.path().join("clients").join(&id).join(".env")).unwrap();
    let password = env
        .lines()
        .find_map(|l| l.strip_prefix("ADMIN_PASSWORD="))
        .unwrap();
    assert_eq!(password.len(), 16);
    assert!(
        out.contains(password),
        "the new admin password is shown once"
    );

    let second = stackbox(&["render", &example("professional"), "--out", root_str]);
    let out = text(&second.stdout);
    assert!(
        out.contains(&format!("Updated client {id}")),
        "the id is stable:\n{out}"
    );
    assert!(
        !out.contains(password),
        "a stored password is never shown again"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("clients").join(&id).join(".env")).unwrap(),
        env
    );
}

#[test]
fn render_json_has_the_documented_fields() {
    let root = tempfile::tempdir().unwrap();
    let result = render_json(&example("enterprise"), root.path(), &[]);
    let id = result["client_id"].as_str().unwrap();
    assert!(
        id.starts_with("nordlichtconsultingg-") && id.len() == "nordlichtconsultingg-".len() + 8,
        "{id}"
    );
    assert_eq!(
        PathBuf::from(result["path"].as_str().unwrap()),
        root.path().canonicalize().unwrap().join("clients").join(id)
    );
    assert_eq!(
        result["services"]["mailtrain"],
        "https://newsletter.nordlicht.stackbox.io"
    );
    assert_eq!(
        result["services"]["website"],
        "https://nordlicht.stackbox.io"
    );
    assert_eq!(result["credentials"]["admin_username"], "admin");
    assert_eq!(
        result["credentials"]["admin_password"]
            .as_str()
            .unwrap()
            .len(),
        16
    );
    assert_eq!(result["created"], true);

    let again = render_json(&example("enterprise"), root.path(), &[]);
    assert_eq!(again["client_id"], id);
    assert!(again["credentials"]["admin_password"].is_null());
    let rotated = render_json(&example("enterprise"), root.path(), &["--rotate-secrets"]);
    let new_password = rotated["credentials"]["admin_password"].as_str().unwrap();
    assert_ne!(
        new_password,
        result["credentials"]["admin_password"].as_str().unwrap()
    );
}

#[test]
fn bad_input_names_the_field_and_writes_nothing() {
    let base = "company_name = \"Smith\"\ndomain = \"smith.example.com\"\nplan = \"starter\"\nadmin_email = \"a@smith.example.com\"\n";
    let cases: Vec<(String, &str)> = vec![
        (base.replace("plan = \"starter\"\n", ""), "plan: is missing"),
        (base.replace("starter", "platinum"), "plan: unknown plan"),
        (
            format!("{base}[features]\ncalcom = true\n"),
            "features.calcom: Cal.com needs the professional plan",
        ),
        (format!("{base}brand_color = \"#12345\"\n"), "brand_color:"),
        (
            base.replace("a@smith.example.com", "not-an-email"),
            "admin_email:",
        ),
        (
            base.replace("smith.example.com\"", "smith..example.com\""),
            "domain:",
        ),
        (
            base.replace("\"Smith\"", "\"Line\\nBreak\""),
            "company_name:",
        ),
        (format!("{base}colour = \"blue\"\n"), "colour"),
        (
            "company_name = \"unterminated\n".to_string(),
            "client configuration",
        ),
    ];
    for (config, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, &config).unwrap();
        let root = dir.path().join("out");
        let output = stackbox(&[
            "render",
            path.to_str().unwrap(),
            "--out",
            root.to_str().unwrap(),
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{config}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
            "{stderr}"
        );
        assert!(
            !root.exists(),
            "a failed render must leave nothing under ROOT"
        );

        let json = stackbox(&[
            "render",
            path.to_str().unwrap(),
            "--out",
            root.to_str().unwrap(),
            "--json",
        ]);
        let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert!(value["error"].as_str().unwrap().contains(expected));
    }
}

#[test]
fn a_latest_image_override_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("images.toml");
    std::fs::write(&catalog, "mysql = \"mariadb:latest\"\n").unwrap();
    let output = stackbox(&[
        "--images",
        catalog.to_str().unwrap(),
        "render",
        &example("starter"),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr)
            .contains("images.mysql: \"mariadb:latest\" uses the moving tag `latest`"),
        "{}",
        text(&output.stderr)
    );

    std::fs::write(&catalog, "mysql = \"registry.local/mariadb:11.4.5\"\n").unwrap();
    let root = dir.path().join("out");
    let output = stackbox(&[
        "--images",
        catalog.to_str().unwrap(),
        "render",
        &example("starter"),
        "--out",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let compose = std::fs::read_to_string(
        PathBuf::from(result["path"].as_str().unwrap()).join("docker-compose.yml"),
    )
    .unwrap();
    assert!(compose.contains("image: registry.local/mariadb:11.4.5"));
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let output = stackbox(&["render", "/nonexistent/client.toml", "--out", "/tmp/never"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr)
        .contains("cannot read the client configuration /nonexistent/client.toml"));
}

#[test]
fn plans_lists_plans_services_and_limits() {
    let output = stackbox(&["plans", "--json"]);
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let plans = value["plans"].as_array().unwrap();
    assert_eq!(
        plans
            .iter()
            .map(|p| p["plan"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["starter", "professional", "enterprise"]
    );
    let names = |i: usize| {
        plans[i]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(names(0).contains(&"espocrm".to_string()) && !names(0).contains(&"calcom".to_string()));
    assert!(
        names(1).contains(&"plausible-events-db".to_string())
            && names(1).contains(&"postgres".to_string())
    );
    assert!(names(2).contains(&"mailtrain".to_string()));
    for plan in plans {
        for service in plan["services"].as_array().unwrap() {
            assert!(service["memory_mib"].as_u64().unwrap() > 0);
            assert!(!service["image"].as_str().unwrap().ends_with(":latest"));
        }
    }
    let table = stackbox(&["plans"]);
    assert!(text(&table.stdout).contains("professional — website + EspoCRM (crm.)"));
}

#[test]
fn deploy_without_an_engine_says_so_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("deployments");
    let output = Command::new(env!("CARGO_BIN_EXE_stackbox"))
        .args([
            "deploy",
            &example("starter"),
            "--out",
            out.to_str().unwrap(),
        ])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("STACKBOX_OPERATOR_CONFIG")
        .env_remove("STACKBOX_IMAGES")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = text(&output.stderr);
    assert!(
        err.contains("no Docker engine answers at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert!(err.contains("DOCKER_HOST"), "{err}");
    assert!(
        !out.exists(),
        "nothing may be written when no engine answers"
    );
}

#[test]
fn status_and_destroy_reject_a_malformed_client_id() {
    for args in [
        vec!["status", "Not An Id"],
        vec!["destroy", "../etc", "--yes"],
        vec!["stop", "x;rm -rf /"],
    ] {
        let output = stackbox(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = text(&output.stderr);
        assert!(err.contains("is not a client id"), "{args:?}: {err}");
    }
}

#[test]
fn a_local_deploy_of_a_client_on_aws_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.toml");
    std::fs::write(
        &path,
        "company_name = \"Cloudy\"\ndomain = \"cloudy.example.com\"\nplan = \"starter\"\n\
         admin_email = \"a@cloudy.example.com\"\ninfrastructure = \"aws\"\n",
    )
    .unwrap();
    let root = dir.path().join("out");
    let output = stackbox(&[
        "deploy",
        path.to_str().unwrap(),
        "--out",
        root.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("infrastructure:"), "{stderr}");
    assert!(stderr.contains("stackbox serve"), "{stderr}");
    assert!(!root.exists(), "nothing may be written");
}
