//! Changing a live client on a real Docker engine with the local test images: plan changes up
//! and down keep every app's data and let its database users in (the databases are converged on
//! every deploy, not only by the image's first start), and a rotation of every secret that can
//! be rotated live leaves every app user logging in with the new passwords only. Commands on
//! the existing client run without `--out`.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::cli::{exec, last_json, text, try_exec, CliEnv};

const EDGE: &str = "stackbox-live-changes-test-edge";

fn client(plan: &str, features: &str) -> String {
    format!(
        "company_name = \"Harbour Changes\"\ndomain = \"changes.example.com\"\nplan = \"{plan}\"\n\
         admin_email = \"owner@changes.example.com\"\nbrand_color = \"#224466\"\n{features}"
    )
}

fn mysql(id: &str) -> String {
    format!("{id}-mysql-1")
}

fn postgres(id: &str) -> String {
    format!("{id}-postgres-1")
}

/// Logs in to MariaDB over TCP as `user` with `password` and runs `sql` on `database`.
fn mariadb_as(id: &str, user: &str, password: &str, database: &str, sql: &str) -> (bool, String) {
    try_exec(
        &mysql(id),
        &format!(
            "MYSQL_PWD='{password}' mariadb -h127.0.0.1 -u{user} -N -B {database} -e \"{sql}\""
        ),
    )
}

/// Logs in to PostgreSQL over the client's network as `user` (its own address, not loopback:
/// initdb trusts loopback and the socket, the images check passwords on every other address).
fn postgres_as(id: &str, user: &str, password: &str, database: &str, sql: &str) -> (bool, String) {
    try_exec(
        &postgres(id),
        &format!("PGPASSWORD='{password}' psql -h postgres -U {user} -d {database} -X -A -t -c \"{sql}\""),
    )
}

fn deploy(env: &CliEnv, file: &str) -> serde_json::Value {
    let result = env.json(&["deploy", file, "--json"]);
    assert_eq!(result["success"], true, "{result}");
    result
}

#[test]
fn plan_changes_up_and_down_keep_every_app_s_data_and_its_database_users_log_in() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let env = CliEnv::new(&images, EDGE, 18580, 18943, "");
    let file = env.client_file(
        "client.toml",
        &client("professional", "[features]\ncalcom = true\n"),
    );
    let first = deploy(&env, &file);
    let id = first["client_id"].as_str().unwrap().to_string();
    assert_eq!(
        first["plan"], "professional",
        "the plan field names the plan: {first}"
    );

    // Markers written by the apps' own database users.
    let espocrm_pw = env.secret(&id, "ESPOCRM_DB_PASSWORD");
    let calcom_pw = env.secret(&id, "CALCOM_DB_PASSWORD");
    let (ok, out) = mariadb_as(
        &id,
        "espocrm",
        &espocrm_pw,
        "espocrm",
        "CREATE TABLE marker (note VARCHAR(32)); INSERT INTO marker VALUES ('crm-record')",
    );
    assert!(ok, "{out}");
    let (ok, out) = postgres_as(
        &id,
        "calcom",
        &calcom_pw,
        "calcom",
        "CREATE TABLE marker (note TEXT); INSERT INTO marker VALUES ('booking')",
    );
    assert!(ok, "{out}");
    exec(
        &format!("{id}-nextcloud-1"),
        "mkdir -p /var/www/html/data/owner/files && echo contract > /var/www/html/data/owner/files/contract.txt",
    );

    // Up: Mailtrain's database and user exist on a data directory initialised without them.
    std::fs::write(&file, client("enterprise", "")).unwrap();
    let up = deploy(&env, &file);
    assert_eq!(up["plan"], "enterprise");
    let mailtrain_pw = env.secret(&id, "MAILTRAIN_DB_PASSWORD");
    let (ok, out) = mariadb_as(&id, "mailtrain", &mailtrain_pw, "mailtrain", "SELECT 1");
    assert!(
        ok,
        "the mailtrain user cannot log in after the plan went up: {out}"
    );
    assert_eq!(env.state(&id), "running", "status right after the deploy");

    // Down: the removed apps' containers go, their data stays, and the deploy says so.
    std::fs::write(&file, client("starter", "")).unwrap();
    let down = env.ok(&["deploy", &file]);
    assert!(
        down.contains("Kept the data of apps no longer in the plan"),
        "{down}"
    );
    assert!(down.contains(&format!("{id}_postgres-data")), "{down}");
    let containers = support::containers_of(&id).join("\n");
    assert!(!containers.contains("calcom"), "{containers}");
    assert!(!containers.contains("mailtrain"), "{containers}");
    let volumes = text(
        &std::process::Command::new("docker")
            .args([
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("label=io.stackbox.client={id}"),
            ])
            .output()
            .unwrap()
            .stdout,
    );
    for kept in ["postgres-data", "mailtrain-files", "plausible-events-data"] {
        assert!(
            volumes.contains(&format!("{id}_{kept}")),
            "{kept} was removed: {volumes}"
        );
    }
    assert_eq!(env.state(&id), "running");

    // Up again: Cal.com finds its booking, with the password it had.
    std::fs::write(&file, client("professional", "[features]\ncalcom = true\n")).unwrap();
    let again = deploy(&env, &file);
    assert_eq!(again["plan"], "professional");
    assert_eq!(env.secret(&id, "CALCOM_DB_PASSWORD"), calcom_pw);
    let (ok, out) = postgres_as(
        &id,
        "calcom",
        &calcom_pw,
        "calcom",
        "SELECT note FROM marker",
    );
    assert!(
        ok && out == "booking",
        "Cal.com's data after down and up: {out}"
    );
    let (ok, out) = mariadb_as(
        &id,
        "espocrm",
        &espocrm_pw,
        "espocrm",
        "SELECT note FROM marker",
    );
    assert!(ok && out == "crm-record", "EspoCRM's data: {out}");
    let file_back = exec(
        &format!("{id}-nextcloud-1"),
        "cat /var/www/html/data/owner/files/contract.txt",
    );
    assert_eq!(file_back, "contract");
    assert_eq!(env.state(&id), "running");

    // Back on Professional, Mailtrain's data (Enterprise only) is still kept. `prune` lists it
    // and refuses without --yes; with it, exactly that data goes and the running apps' stays.
    let volumes_of = || {
        text(
            &std::process::Command::new("docker")
                .args([
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("label=io.stackbox.client={id}"),
                ])
                .output()
                .unwrap()
                .stdout,
        )
    };
    let refused = env.run(&["prune", &id]);
    assert!(
        !refused.status.success(),
        "prune without --yes removed something"
    );
    let listed = text(&refused.stdout);
    assert!(
        listed.contains(&format!("{id}_mailtrain-files")),
        "{listed}"
    );
    assert!(!listed.contains(&format!("{id}_postgres-data")), "{listed}");
    assert!(
        text(&refused.stderr).contains("--yes"),
        "{}",
        text(&refused.stderr)
    );
    assert!(volumes_of().contains(&format!("{id}_mailtrain-files")));
    let pruned = env.json(&["prune", &id, "--yes", "--json"]);
    assert_eq!(pruned["removed"], true, "{pruned}");
    let volumes = volumes_of();
    assert!(!volumes.contains("mailtrain-files"), "{volumes}");
    assert!(
        volumes.contains(&format!("{id}_postgres-data")),
        "{volumes}"
    );
    let (ok, out) = postgres_as(
        &id,
        "calcom",
        &calcom_pw,
        "calcom",
        "SELECT note FROM marker",
    );
    assert!(ok && out == "booking", "Cal.com's data after prune: {out}");
    let nothing = env.ok(&["prune", &id]);
    assert!(
        nothing.contains("no data of apps it no longer runs"),
        "{nothing}"
    );
}

#[test]
fn rotating_every_live_secret_lets_every_app_user_in_with_the_new_password_only() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let env = CliEnv::new(
        &images,
        EDGE.replace("changes", "rotation").as_str(),
        18581,
        18944,
        "",
    );
    let file = env.client_file(
        "client.toml",
        &client("professional", "[features]\ncalcom = true\n"),
    );
    let id = deploy(&env, &file)["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = std::fs::read_to_string(env.env_file(&id)).unwrap();
    let old = |name: &str| env.secret(&id, name);
    let (old_root, old_calcom, old_postgres, old_espocrm, old_nextcloud) = (
        old("MYSQL_ROOT_PASSWORD"),
        old("CALCOM_DB_PASSWORD"),
        old("POSTGRES_PASSWORD"),
        old("ESPOCRM_DB_PASSWORD"),
        old("NEXTCLOUD_DB_PASSWORD"),
    );
    let (ok, out) = postgres_as(
        &id,
        "calcom",
        &old_calcom,
        "calcom",
        "CREATE TABLE marker (note TEXT); INSERT INTO marker VALUES ('kept')",
    );
    assert!(ok, "{out}");

    // A secret bound to the app's data is refused, naming why, and nothing changes.
    let refused = env
        .bare(&["rotate-secrets", &id, "--only", "CALCOM_ENCRYPTION_KEY"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(message.contains("unreadable"), "{message}");
    assert_eq!(std::fs::read_to_string(env.env_file(&id)).unwrap(), before);

    // Without --out: the bundle is found from the containers' labels.
    let out = text(
        &env.bare(&["rotate-secrets", &id, "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    let rotated = last_json(&out);
    assert_eq!(rotated["event"], "rotated", "{out}");
    let names: Vec<&str> = rotated["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for expected in [
        "MYSQL_ROOT_PASSWORD",
        "POSTGRES_PASSWORD",
        "CALCOM_DB_PASSWORD",
        "REDIS_PASSWORD",
        "ESPOCRM_DB_PASSWORD",
        "NEXTCLOUD_DB_PASSWORD",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not rotated: {names:?}"
        );
    }
    assert!(!names.contains(&"CALCOM_ENCRYPTION_KEY"));
    assert!(
        !out.contains(&env.secret(&id, "MYSQL_ROOT_PASSWORD")),
        "a new secret was printed"
    );
    let mode = std::fs::metadata(env.env_file(&id))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let new = |name: &str| env.secret(&id, name);
    assert_ne!(new("MYSQL_ROOT_PASSWORD"), old_root);
    assert_ne!(new("CALCOM_DB_PASSWORD"), old_calcom);
    let (ok, out) = mariadb_as(
        &id,
        "root",
        &new("MYSQL_ROOT_PASSWORD"),
        "mysql",
        "SELECT 1",
    );
    assert!(ok, "root with the new password: {out}");
    let (ok, _) = mariadb_as(&id, "root", &old_root, "mysql", "SELECT 1");
    assert!(!ok, "root still logs in with the old password");
    let (ok, out) = postgres_as(
        &id,
        "calcom",
        &new("CALCOM_DB_PASSWORD"),
        "calcom",
        "SELECT note FROM marker",
    );
    assert!(ok && out == "kept", "calcom with the new password: {out}");
    let (ok, _) = postgres_as(&id, "calcom", &old_calcom, "calcom", "SELECT 1");
    assert!(!ok, "calcom still logs in with the old password");
    let (ok, out) = postgres_as(
        &id,
        "postgres",
        &new("POSTGRES_PASSWORD"),
        "postgres",
        "SELECT 1",
    );
    assert!(ok, "the superuser with the new password: {out}");
    let (ok, _) = postgres_as(&id, "postgres", &old_postgres, "postgres", "SELECT 1");
    assert!(!ok, "the superuser still logs in with the old password");
    // EspoCRM and Nextcloud keep the password their installers wrote into their own config
    // files; the stack hands them the new one on start. The database takes only the new one,
    // and the apps' own database checks pass with what they now hold: EspoCRM's `db:check`,
    // Nextcloud's background job (cron.php, run by hand here) in the cron container.
    for (user, old_password) in [("espocrm", &old_espocrm), ("nextcloud", &old_nextcloud)] {
        let key = format!("{}_DB_PASSWORD", user.to_uppercase());
        assert_ne!(&new(&key), old_password);
        let (ok, out) = mariadb_as(&id, user, &new(&key), user, "SELECT 1");
        assert!(ok, "{user} with the new password: {out}");
        let (ok, _) = mariadb_as(&id, user, old_password, user, "SELECT 1");
        assert!(!ok, "{user} still logs in with the old password");
    }
    let checked = exec_docker(&[
        "exec",
        &format!("{id}-espocrm-1"),
        "bin/command",
        "db:check",
    ]);
    assert_eq!(checked.trim(), "OK", "EspoCRM's own database check");
    // exec_docker fails the test unless the job exits 0; the row it writes proves it logged in.
    exec_docker(&[
        "exec",
        "-u",
        "www-data",
        &format!("{id}-nextcloud-cron-1"),
        "/usr/local/bin/nextcloud-cron-job",
    ]);
    let (ok, out) = mariadb_as(
        &id,
        "nextcloud",
        &new("NEXTCLOUD_DB_PASSWORD"),
        "nextcloud",
        "SELECT COUNT(*) FROM stackbox_standin WHERE name = 'nextcloud-cron' AND at > NOW() - INTERVAL 5 MINUTE",
    );
    assert!(
        ok && out.trim() == "1",
        "Nextcloud's background job wrote its row: {out}"
    );
    // The apps were recreated with the new values and are healthy (their stand-ins log in
    // to MariaDB, PostgreSQL and Redis at start; EspoCRM's app-check and Nextcloud's status
    // page need their database).
    assert_eq!(env.state(&id), "running");

    // Stop and start without --out: the bundle is found from the containers' labels, and
    // status says running at once (it checks what the engine has not judged yet itself).
    let stop = env.bare(&["stop", &id]).output().unwrap();
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let start = env.bare(&["start", &id]).output().unwrap();
    assert!(
        start.status.success(),
        "start without --out: {}",
        text(&start.stderr)
    );
    let status = env.bare(&["status", &id, "--json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
}

/// Requests the website under its service alias every 50 ms from inside the client's web
/// network (the client's router container), until `stop` exists there; prints one line per
/// request: `ok` or `fail`.
fn poll_website(router: &str) -> std::process::Child {
    std::process::Command::new("docker")
        .args([
            "exec",
            router,
            "sh",
            "-c",
            "while [ ! -e /tmp/stop-polling ]; do \
               if wget -q -O /dev/null -T 2 http://website/; then echo ok; else echo fail; fi; \
               sleep 0.05; \
             done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_brand_colour_change_replaces_the_website_start_first_without_a_failed_request() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let env = CliEnv::new(
        &images,
        &EDGE.replace("changes", "startfirst"),
        18582,
        18945,
        "",
    );
    let file = env.client_file("client.toml", &client("starter", ""));
    let id = deploy(&env, &file)["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let router = format!("{id}-traefik-1");
    let website_before = exec_docker(&["inspect", "-f", "{{.Id}}", &format!("{id}-website-1")]);
    let poller = poll_website(&router);
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(&file, client("starter", "").replace("#224466", "#aa3300")).unwrap();
    let changed = deploy(&env, &file);
    std::thread::sleep(std::time::Duration::from_millis(500));
    exec_docker(&["exec", &router, "touch", "/tmp/stop-polling"]);
    let polled = text(&poller.wait_with_output().unwrap().stdout);
    let ok = polled.lines().filter(|l| *l == "ok").count();
    let failed = polled.lines().filter(|l| *l == "fail").count();

    let website = changed["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "website")
        .unwrap();
    assert_eq!(website["action"], "replaced", "{changed}");
    let website_after = exec_docker(&["inspect", "-f", "{{.Id}}", &format!("{id}-website-1")]);
    assert_ne!(
        website_before, website_after,
        "the website was not replaced"
    );
    assert!(ok > 5, "too few requests during the change: {ok}");
    assert_eq!(failed, 0, "requests failed during the change ({ok} ok)");
    let page = exec_docker(&["exec", &router, "wget", "-q", "-O-", "http://website/"]);
    assert!(
        page.contains("#aa3300"),
        "the new colour is not served: {page}"
    );
    let containers = support::containers_of(&id).join("\n");
    assert!(
        !containers.contains("-1-next"),
        "a temporary container was left: {containers}"
    );
    assert!(!containers.contains("-replaced"), "{containers}");
}

fn exec_docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}
