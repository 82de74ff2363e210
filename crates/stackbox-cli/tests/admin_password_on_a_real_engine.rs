//! The admin password reset on a real Docker engine with the local test images, whose
//! Nextcloud, EspoCRM and Mailtrain stand-ins keep their admin's password hash as the real
//! apps do (set once at installation; `occ user:resetpassword --password-from-env` as
//! www-data, `set-password` on standard input; Mailtrain's from `ADMIN_PASSWORD` on every
//! start) and answer `standin-login`:
//!
//! - through the CLI on the engine's host (no `--out`: the bundle is found from the
//!   containers), a Professional client: Nextcloud and EspoCRM take the new password and
//!   refuse the old one, Cal.com and Plausible are not applicable, `.env` holds it (0600) and
//!   nothing else shows it; with EspoCRM told to refuse, the reset fails and Nextcloud is set
//!   back, so both keep the password they had;
//! - through `stackbox serve`, a client with Mailtrain: 403 for a client token, 404, 409 while
//!   another deployment runs; the password in the 202 only (never in a later answer or in
//!   the server's files but the bundle's `.env`), every app on it (Mailtrain recreated); the
//!   same through `stackbox --server … admin-password`; with EspoCRM refusing, the deployment
//!   ends `compensated` with every app back on the previous password.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use support::cli::{last_json, text, try_exec, CliEnv};
use support::server::{finished, poll, Server};

const CLI_EDGE: &str = "stackbox-admin-password-cli-test-edge";
const SERVE_EDGE: &str = "stackbox-admin-password-serve-test-edge";

/// One stack at a time on a small host.
static ENGINE: Mutex<()> = Mutex::new(());

/// Whether `password` opens `admin` in the app of this container (its stand-in's login).
fn logs_in(container: &str, password: &str) -> bool {
    let mut child = Command::new("docker")
        .args(["exec", "-i", container, "standin-login", "admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

fn assert_login(id: &str, apps: &[&str], works: &str, refused: &[&str]) {
    for app in apps {
        let container = format!("{id}-{app}-1");
        assert!(
            logs_in(&container, works),
            "{app} refuses the password it should have"
        );
        for old in refused {
            assert!(
                !logs_in(&container, old),
                "{app} still takes a password it should not"
            );
        }
    }
}

fn outcomes(apps: &serde_json::Value) -> Vec<(String, String)> {
    apps.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["app"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(app: &str, outcome: &str) -> (String, String) {
    (app.to_string(), outcome.to_string())
}

#[test]
fn the_cli_resets_the_admin_password_in_every_app_and_an_app_that_refuses_rolls_it_back() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    let env = CliEnv::new(&images, CLI_EDGE, 18396, 18759, "");
    let file = env.client_file(
        "client.toml",
        "company_name = \"Harbour Admin\"\ndomain = \"admin-reset.example.com\"\n\
         plan = \"professional\"\nadmin_email = \"owner@admin-reset.example.com\"\n",
    );
    let first = env.json(&["deploy", &file, "--json"]);
    assert_eq!(first["success"], true, "{first}");
    let id = first["client_id"].as_str().unwrap().to_string();
    let initial = first["credentials"]["admin_password"]
        .as_str()
        .unwrap()
        .to_string();
    let apps = ["nextcloud", "espocrm"];
    assert_login(&id, &apps, &initial, &[]);

    // The stand-ins hold the upstream contract: occ only as the owner of config.php, and
    // only with OC_PASS for --password-from-env.
    let (ok, out) = try_exec(
        &format!("{id}-nextcloud-1"),
        "OC_PASS=Abcdefgh12345678xy php occ user:resetpassword --password-from-env admin",
    );
    assert!(!ok && out.contains("Console has to be executed"), "{out}");

    // The reset, without --out.
    let output = env
        .bare(&["admin-password", &id, "--json"])
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    let reset = last_json(&stdout);
    assert_eq!(reset["event"], "admin-password", "{reset}");
    assert_eq!(reset["credentials"]["admin_username"], "admin");
    let new = reset["credentials"]["admin_password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(new.len(), 16);
    assert!(new.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(new, initial);
    assert_eq!(
        outcomes(&reset["apps"]),
        [
            pair("nextcloud", "set"),
            pair("espocrm", "set"),
            pair("calcom", "not-applicable"),
            pair("plausible", "not-applicable"),
        ]
    );
    assert!(
        reset["apps"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("first account"),
        "{reset}"
    );
    assert_login(&id, &apps, &new, &[&initial]);
    // Shown once: the bundle keeps it, 0600; nothing else prints it.
    assert_eq!(
        stdout.matches(&new).count(),
        1,
        "the password is printed more than once"
    );
    assert_eq!(env.secret(&id, "ADMIN_PASSWORD"), new);
    let mode = std::fs::metadata(env.env_file(&id))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = env.ok(&["status", &id, "--json"]);
    assert!(!status.contains(&new), "status shows the password");
    assert_eq!(env.state(&id), "running");
    // Nextcloud and EspoCRM read their admin variables at installation only: the recreate
    // that gave them the new value changed nothing else, and a plain redeploy recreates
    // nothing.
    let again = env.json(&["deploy", &file, "--json"]);
    assert_eq!(again["unchanged"], true, "{again}");
    assert_login(&id, &apps, &new, &[&initial]);

    // EspoCRM refuses: Nextcloud, already set, is set back; both keep `new`.
    let espocrm = format!("{id}-espocrm-1");
    let (ok, out) = try_exec(&espocrm, "touch data/.standin-refuse-set-password");
    assert!(ok, "{out}");
    let failed = env.bare(&["admin-password", &id]).output().unwrap();
    let stderr = text(&failed.stderr);
    assert!(!failed.status.success(), "{}", text(&failed.stdout));
    assert!(
        stderr.contains("espocrm did not take the new admin password"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nextcloud had taken it and was set back to the previous password"),
        "{stderr}"
    );
    assert!(
        stderr.contains("every app keeps the previous password"),
        "{stderr}"
    );
    // The espocrm container is a new one after the rollback's converge; the marker is in
    // its data volume.
    let (ok, out) = try_exec(&espocrm, "rm data/.standin-refuse-set-password");
    assert!(ok, "{out}");
    assert_login(&id, &apps, &new, &[&initial]);
    assert_eq!(env.secret(&id, "ADMIN_PASSWORD"), new);
    assert_eq!(env.state(&id), "running");
}

fn wait(server: &Server, token: &str, deployment: &str) -> serde_json::Value {
    poll(
        server,
        token,
        deployment,
        Duration::from_secs(420),
        finished,
    )
}

/// Every file under `dir`, but the bundles' `.env` (which holds the secrets, 0600, by design).
fn files_outside_env(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_outside_env(&path, found);
        } else if path.file_name().is_some_and(|n| n != ".env") {
            found.push(path);
        }
    }
}

#[test]
fn through_serve_the_password_is_shown_once_every_app_takes_it_and_a_refusal_is_compensated() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let _engine = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    let mut server = Server::new(&images, SERVE_EDGE, 28192, 28555);
    server.start();
    let operator = server.token(&["--operator"]);
    let body = serde_json::json!({
        "company_name": "Serve Admin Shop",
        "domain": "serve-admin.example",
        "plan": "enterprise",
        "admin_email": "owner@serve-admin.example",
        "features": {"calcom": false, "plausible": false},
    })
    .to_string();
    let (status, created) = server.http("POST", "/v1/clients", &operator, Some(&body));
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    let initial = created["credentials"]["admin_password"]
        .as_str()
        .unwrap()
        .to_string();
    let view = wait(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["status"], "succeeded", "{view}");
    let apps = ["nextcloud", "espocrm", "mailtrain"];
    assert_login(&id, &apps, &initial, &[]);
    let path = format!("/v1/clients/{id}/admin-password");

    // Refusals: a client token, an unknown client, a client busy with another deployment.
    let client_token = server.token(&["--client", &id]);
    let (status, _) = server.http("POST", &path, &client_token, None);
    assert_eq!(status, 403);
    let (status, _) = server.http(
        "POST",
        "/v1/clients/nobody-00000000/admin-password",
        &operator,
        None,
    );
    assert_eq!(status, 404);
    let (status, redeploy) = server.http(
        "POST",
        &format!("/v1/clients/{id}/redeploy"),
        &operator,
        None,
    );
    assert_eq!(status, 202, "{redeploy}");
    let (status, busy) = server.http("POST", &path, &operator, None);
    assert_eq!(status, 409, "{busy}");
    let view = wait(
        &server,
        &operator,
        redeploy["deployment_id"].as_str().unwrap(),
    );
    assert_eq!(view["status"], "succeeded", "{view}");

    // The reset through the API.
    let (status, reset) = server.http("POST", &path, &operator, Some("{}"));
    assert_eq!(status, 202, "{reset}");
    let second = reset["credentials"]["admin_password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second, initial);
    assert_eq!(
        outcomes(&reset["apps"]),
        [
            pair("nextcloud", "set"),
            pair("espocrm", "set"),
            pair("mailtrain", "recreated"),
        ]
    );
    let deployment = reset["deployment_id"].as_str().unwrap().to_string();
    let view = wait(&server, &operator, &deployment);
    assert_eq!(view["status"], "succeeded", "{view}");
    let steps: Vec<&str> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "render",
            "infrastructure",
            "containers",
            "health",
            "admin-password"
        ]
    );
    let last = &view["steps"][4]["output"];
    assert_eq!(outcomes(&last["apps"]), outcomes(&reset["apps"]), "{view}");
    assert_login(&id, &apps, &second, &[&initial]);
    // Never again: not in the client (read twice), its history or the deployment.
    let mut answers = vec![view.to_string()];
    for uri in [
        format!("/v1/clients/{id}"),
        format!("/v1/clients/{id}"),
        format!("/v1/clients/{id}/deployments"),
        format!("/v1/deployments/{deployment}"),
    ] {
        let (status, answer) = server.http("GET", &uri, &operator, None);
        assert_eq!(status, 200, "{uri}: {answer}");
        answers.push(answer.to_string());
    }
    for answer in &answers {
        assert!(!answer.contains(&second), "the password in a later answer");
    }
    // Nor in the server's files: the store holds it sealed; only the bundle's .env has it.
    let mut files = Vec::new();
    files_outside_env(server.data.path(), &mut files);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes
                .windows(second.len())
                .any(|window| window == second.as_bytes()),
            "{} holds the password in clear",
            file.display()
        );
    }

    // The same through the CLI's --server mode: printed once, then followed to success.
    let url = format!("http://127.0.0.1:{}", server.port);
    let output = server
        .command()
        .args([
            "--server",
            &url,
            "--token",
            &operator,
            "admin-password",
            &id,
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    let announced = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "admin-password")
        .unwrap_or_else(|| panic!("no admin-password event: {stdout}"));
    let third = announced["credentials"]["admin_password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last_json(&stdout)["success"], true, "{stdout}");
    assert_eq!(stdout.matches(&third).count(), 1, "{stdout}");
    assert_login(&id, &apps, &third, &[&initial, &second]);

    // EspoCRM refuses: Nextcloud is set back at once, and the compensation puts the store,
    // the bundle and Mailtrain back on the previous password.
    let espocrm = format!("{id}-espocrm-1");
    let (ok, out) = try_exec(&espocrm, "touch data/.standin-refuse-set-password");
    assert!(ok, "{out}");
    let (status, refused) = server.http("POST", &path, &operator, None);
    assert_eq!(status, 202, "{refused}");
    let fourth = refused["credentials"]["admin_password"]
        .as_str()
        .unwrap()
        .to_string();
    let view = wait(
        &server,
        &operator,
        refused["deployment_id"].as_str().unwrap(),
    );
    let (ok, out) = try_exec(&espocrm, "rm -f data/.standin-refuse-set-password");
    assert_eq!(view["status"], "compensated", "{view}");
    assert!(ok, "{out}");
    let error = view["steps"][4]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("espocrm did not take the new admin password")
            && error.contains("nextcloud had taken it and was set back")
            && error.contains("every app keeps the previous password"),
        "{view}"
    );
    assert!(!view.to_string().contains(&fourth), "{view}");
    assert_login(&id, &apps, &third, &[&fourth, &second]);
    let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(detail["state"], "running", "{detail}");
    let env = server
        .data
        .path()
        .join("data/bundles/clients")
        .join(&id)
        .join(".env");
    let env_text = std::fs::read_to_string(&env).unwrap();
    assert!(
        env_text.contains(&format!("ADMIN_PASSWORD={third}"))
            || env_text.contains(&format!("ADMIN_PASSWORD=\"{third}\"")),
        "the bundle is not back on the previous password"
    );
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
