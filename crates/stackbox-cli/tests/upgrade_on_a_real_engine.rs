//! Releases on a real Docker engine with the local test images: a client records the release it
//! runs, `upgrade` moves it to a newer one after a backup, and an upgrade whose new image fails
//! after writing to the client's data (a migration that breaks) returns the client to its
//! release with the data as it was before, restored from that backup. The second and third
//! releases are made here from the test images: a re-tag of the website's nginx, and a Nextcloud
//! whose start writes a marker into its volume and exits.

mod support;

use std::process::Command;

use support::cli::{exec, text, try_exec, CliEnv};

const EDGE: &str = "stackbox-upgrade-test-edge";

/// The engine tier with restic (an upgrade takes a backup first): the test images' catalog.
fn engine_with_restic() -> Option<String> {
    stackbox_testkit::Tier::engine()
        .program("restic", "apt-get install restic")
        .images()
}

fn catalog_image(images: &str, key: &str) -> String {
    let catalog = std::fs::read_to_string(images).unwrap();
    catalog
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
        .map(|rest| rest.trim_end_matches('"').to_string())
        .unwrap_or_else(|| panic!("{key} is not in the test catalog"))
}

fn docker(args: &[&str], input: Option<&str>) {
    let mut command = Command::new("docker");
    command.args(args);
    let output = match input {
        None => command.output().unwrap(),
        Some(input) => {
            use std::io::Write;
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    };
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        text(&output.stderr)
    );
}

fn client_toml(release: Option<&str>) -> String {
    format!(
        "company_name = \"Upgrade Bakery\"\ndomain = \"upgrade.example.com\"\nplan = \"starter\"\n\
         admin_email = \"owner@upgrade.example.com\"\n{}",
        release
            .map(|r| format!("release = \"{r}\"\n"))
            .unwrap_or_default()
    )
}

fn stored_release(env: &CliEnv, id: &str) -> String {
    let text =
        std::fs::read_to_string(env.path().join("clients").join(id).join("client.toml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("release = \""))
        .map(|r| r.trim_end_matches('"').to_string())
        .unwrap_or_default()
}

fn image_of(container: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Config.Image}}", container])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

/// The test releases, made from the test images: r2 re-tags the website's nginx; r3 is a
/// Nextcloud whose start writes a marker into its volume (a migration) and exits. Returns
/// (nginx, nginx r2, nextcloud, nextcloud r3) and the operator file's `[[releases]]`.
fn test_releases(images: &str) -> (String, String, String, String, String) {
    let nginx = catalog_image(images, "nginx");
    let nginx_r2 = format!("{}:upgrade-r2", nginx.split(':').next().unwrap());
    docker(&["tag", &nginx, &nginx_r2], None);
    let nextcloud = catalog_image(images, "nextcloud");
    let broken = format!("{}:upgrade-r3-broken", nextcloud.split(':').next().unwrap());
    docker(
        &["build", "-q", "-t", &broken, "-"],
        Some(&format!(
            "FROM {nextcloud}\n\
             ENTRYPOINT [\"sh\", \"-c\", \"echo migrated > /var/www/html/migration-marker; exit 1\"]\n"
        )),
    );
    let releases = format!(
        "\n[[releases]]\nname = \"r2\"\n[releases.images]\nnginx = \"{nginx_r2}\"\n\
         \n[[releases]]\nname = \"r3\"\n[releases.images]\nnextcloud = \"{broken}\"\n"
    );
    (nginx, nginx_r2, nextcloud, broken, releases)
}

fn wait(
    server: &support::server::Server,
    token: &str,
    deployment: &serde_json::Value,
) -> serde_json::Value {
    support::server::poll(
        server,
        token,
        deployment["deployment_id"].as_str().unwrap(),
        std::time::Duration::from_secs(300),
        support::server::finished,
    )
}

#[test]
fn an_upgrade_through_serve_is_a_journaled_deployment_and_a_failed_one_is_compensated() {
    use support::server::{client_body, Server};
    let Some(images) = engine_with_restic() else {
        return;
    };
    let (_, nginx_r2, nextcloud, _, releases) = test_releases(&images);
    let mut server = Server::new(&images, "stackbox-upgrade-serve-test-edge", 28188, 28551);
    server.start();
    let operator = server.token(&["--operator"]);
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Serve Upgrade Shop", "serve-upgrade.example")),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    assert_eq!(wait(&server, &operator, &created)["status"], "succeeded");
    // The releases arrive after the client: it stays on base until upgraded.
    server.kill_hard();
    let text_before = std::fs::read_to_string(&server.operator).unwrap();
    std::fs::write(&server.operator, format!("{text_before}{releases}")).unwrap();
    server.start();
    let path = format!("/v1/clients/{id}/upgrade");
    let (status, error) = server.http("POST", &path, &operator, Some(r#"{"to": "r9"}"#));
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "to", "{error}");
    let (status, error) = server.http("POST", &path, &operator, Some(r#"{"to": "base"}"#));
    assert_eq!(status, 422, "already on base: {error}");

    let (status, accepted) = server.http("POST", &path, &operator, Some(r#"{"to": "r2"}"#));
    assert_eq!(status, 202, "{accepted}");
    let view = wait(&server, &operator, &accepted);
    assert_eq!(view["status"], "succeeded", "{view}");
    let steps: Vec<&str> = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(steps.first(), Some(&"safety-backup"), "{steps:?}");
    assert_eq!(image_of(&format!("{id}-website-1")), nginx_r2);

    exec(
        &format!("{id}-nextcloud-1"),
        "echo contract > /var/www/html/owner-file.txt",
    );
    let (status, accepted) = server.http("POST", &path, &operator, Some(r#"{"to": "r3"}"#));
    assert_eq!(status, 202, "{accepted}");
    let view = wait(&server, &operator, &accepted);
    assert_eq!(view["status"], "compensated", "{view}");
    assert_eq!(image_of(&format!("{id}-nextcloud-1")), nextcloud);
    let (marker_left, _) = try_exec(
        &format!("{id}-nextcloud-1"),
        "test -e /var/www/html/migration-marker",
    );
    assert!(
        !marker_left,
        "the failed upgrade's write is still in the volume"
    );
    assert_eq!(
        exec(
            &format!("{id}-nextcloud-1"),
            "cat /var/www/html/owner-file.txt"
        ),
        "contract"
    );
    let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(detail["state"], "running", "{detail}");
    // Still on r2: a redeploy keeps the website's r2 image.
    let (_, again) = server.http(
        "POST",
        &format!("/v1/clients/{id}/redeploy"),
        &operator,
        None,
    );
    assert_eq!(wait(&server, &operator, &again)["status"], "succeeded");
    assert_eq!(image_of(&format!("{id}-website-1")), nginx_r2);
}

#[test]
fn an_upgrade_moves_the_client_after_a_backup_and_a_failed_one_restores_its_data() {
    let Some(images) = engine_with_restic() else {
        return;
    };
    let (nginx, nginx_r2, nextcloud, _, releases) = test_releases(&images);

    let env = CliEnv::new(&images, EDGE, 18390, 18753, "");
    let file = env.client_file("client.toml", &client_toml(None));
    let first = env.json(&["deploy", &file, "--json"]);
    let id = first["client_id"].as_str().unwrap().to_string();
    assert_eq!(
        stored_release(&env, &id),
        "base",
        "a new client records its release"
    );

    let operator = std::fs::read_to_string(&env.operator).unwrap();
    std::fs::write(&env.operator, format!("{operator}{releases}")).unwrap();
    let releases = env.bare(&["releases", "--json"]).output().unwrap();
    let releases = support::cli::last_json(&text(&releases.stdout));
    assert_eq!(releases["latest"], "r3", "{releases}");
    // A redeploy keeps the client's release although newer ones exist.
    env.ok(&["deploy", &file]);
    assert_eq!(stored_release(&env, &id), "base");
    assert_eq!(image_of(&format!("{id}-website-1")), nginx);

    // Data the apps wrote.
    let (ok, out) = try_exec(
        &format!("{id}-mysql-1"),
        "MYSQL_PWD=\"$ESPOCRM_DB_PASSWORD\" mariadb -h127.0.0.1 -uespocrm espocrm -e \
         \"CREATE TABLE marker (note VARCHAR(16)); INSERT INTO marker VALUES ('before')\"",
    );
    assert!(ok, "{out}");
    exec(
        &format!("{id}-nextcloud-1"),
        "echo contract > /var/www/html/owner-file.txt",
    );

    // Up to r2: a backup first, then the website on its new image.
    let upgraded = env.json(&["upgrade", &id, "--to", "r2", "--json"]);
    assert_eq!(upgraded["success"], true, "{upgraded}");
    assert_eq!(upgraded["from"], "base");
    assert!(
        upgraded["backup"].as_str().is_some_and(|s| !s.is_empty()),
        "{upgraded}"
    );
    assert_eq!(stored_release(&env, &id), "r2");
    assert_eq!(image_of(&format!("{id}-website-1")), nginx_r2);
    assert_eq!(env.state(&id), "running");
    let backups = env.ok(&["backup", "list", &id, "--json"]);
    assert!(
        backups.contains("safety"),
        "no backup before the upgrade: {backups}"
    );

    // A file naming another release than the client runs is refused by deploy.
    std::fs::write(&file, client_toml(Some("base"))).unwrap();
    let refused = env.run(&["deploy", &file]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("stackbox upgrade"),
        "{}",
        text(&refused.stderr)
    );
    std::fs::write(&file, client_toml(None)).unwrap();

    // Up to r3: Nextcloud's new image writes into the volume, then fails.
    let failed = env.run(&["upgrade", &id, "--to", "r3"]);
    let message = text(&failed.stderr);
    assert!(!failed.status.success(), "the broken upgrade succeeded");
    assert!(message.contains("runs release r2 again"), "{message}");
    assert!(message.contains("restored from the backup"), "{message}");
    assert_eq!(stored_release(&env, &id), "r2");
    assert_eq!(image_of(&format!("{id}-nextcloud-1")), nextcloud);
    let (marker_left, _) = try_exec(
        &format!("{id}-nextcloud-1"),
        "test -e /var/www/html/migration-marker",
    );
    assert!(
        !marker_left,
        "the failed upgrade's write is still in the volume"
    );
    assert_eq!(
        exec(
            &format!("{id}-nextcloud-1"),
            "cat /var/www/html/owner-file.txt"
        ),
        "contract"
    );
    let (ok, out) = try_exec(
        &format!("{id}-mysql-1"),
        "MYSQL_PWD=\"$ESPOCRM_DB_PASSWORD\" mariadb -h127.0.0.1 -uespocrm -N -B espocrm -e 'SELECT note FROM marker'",
    );
    assert!(ok && out == "before", "{out}");
    assert_eq!(env.state(&id), "running");
}
