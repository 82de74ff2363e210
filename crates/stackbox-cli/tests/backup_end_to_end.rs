//! Backups end to end on a real Docker engine with the local test images and real restic: an
//! enterprise client (MariaDB, PostgreSQL, ClickHouse and MongoDB stand-ins, data volumes) gets
//! marker rows and files, is backed up, loses the markers, is restored, verified, cloned; a
//! backup killed with SIGKILL leaves every service running; a tampered repository fails verify.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EDGE: &str = "stackbox-backup-test-edge";

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
        std::fs::write(
            &operator,
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 18180\nhttps_port = 18543\n\
                 [host]\nmax_open_files = {}\n\
                 [backup]\nkeep_last = 10\n",
                support::hard_open_files_limit()
            ),
        )
        .unwrap();
        Env {
            root,
            operator,
            images: images.to_string(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stackbox"));
        command
            .args(args)
            .args(["--out", self.root.path().to_str().unwrap()])
            .env("STACKBOX_OPERATOR_CONFIG", &self.operator)
            .env("STACKBOX_IMAGES", &self.images)
            .env("STACKBOX_DATA_DIR", self.data_dir())
            .env_remove("STACKBOX_MASTER_KEY")
            .env_remove("STACKBOX_DATABASE_URL");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "stackbox {args:?} failed:\n{}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        let last = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The client's state once the engine's own health checks caught up (they run every
    /// 10 s; StackBox's deploy already saw every service healthy through its own probes).
    fn settled_state(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = self.state(id);
            if state != "starting" || Instant::now() > deadline {
                return state;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn state(&self, id: &str) -> String {
        let out = self.ok(&["status", id, "--json"]);
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["state"].as_str().unwrap_or_default().to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let mut clients = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.root.path().join("clients")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') {
                    clients.push(name);
                }
            }
        }
        support::remove_from_engine(EDGE, &clients);
    }
}

/// Runs a shell script inside a client's container; its standard output.
fn exec(container: &str, script: &str) -> String {
    let output = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "docker exec {container} {script}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout).trim().to_string()
}

fn mariadb(id: &str, sql: &str) -> String {
    exec(
        &format!("{id}-mysql-1"),
        &format!("MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb -uroot -N -B -e \"{sql}\""),
    )
}

fn postgres(id: &str, database: &str, sql: &str) -> String {
    exec(
        &format!("{id}-postgres-1"),
        &format!("psql -U postgres -d {database} -X -A -t -c \"{sql}\""),
    )
}

fn clickhouse(id: &str, query: &str, input: Option<&str>) -> String {
    let script = format!(
        "{}clickhouse-client --user \"$CLICKHOUSE_USER\" --password \"$CLICKHOUSE_PASSWORD\" --database \"$CLICKHOUSE_DB\" --query \"{query}\"",
        input.map(|i| format!("printf '{i}' | ")).unwrap_or_default()
    );
    exec(&format!("{id}-plausible-events-db-1"), &script)
}

fn mongo(id: &str, eval: &str) -> String {
    exec(
        &format!("{id}-mailtrain-mongo-1"),
        &format!("mongo --quiet --eval \"{eval}\""),
    )
}

/// Marker rows in every database and marker files in the data volumes.
fn write_markers(id: &str) {
    mariadb(
        id,
        "CREATE TABLE espocrm.stackbox_marker (id INT PRIMARY KEY, note VARCHAR(64)); \
         INSERT INTO espocrm.stackbox_marker VALUES (1, 'crm-one'), (2, 'crm-two'); \
         CREATE TABLE nextcloud.stackbox_marker (id INT PRIMARY KEY); \
         INSERT INTO nextcloud.stackbox_marker VALUES (7);",
    );
    postgres(
        id,
        "calcom",
        "CREATE TABLE stackbox_marker (id INT PRIMARY KEY, note TEXT); \
         INSERT INTO stackbox_marker VALUES (1, 'booking'), (2, 'second'), (3, 'third');",
    );
    postgres(
        id,
        "plausible",
        "CREATE TABLE stackbox_marker (id INT); INSERT INTO stackbox_marker VALUES (42);",
    );
    clickhouse(
        id,
        "CREATE TABLE \\`events_marker\\` (name String) ENGINE = MergeTree ORDER BY name",
        None,
    );
    clickhouse(
        id,
        "INSERT INTO \\`events_marker\\` FORMAT TSV",
        Some("pageview\\nsignup\\n"),
    );
    mongo(
        id,
        "db.getSiblingDB('mailtrain').getCollection('stackbox_marker').insertOne({\\\"marker\\\": \\\"queue\\\"})",
    );
    exec(
        &format!("{id}-nextcloud-1"),
        "mkdir -p /var/www/html/data/owner/files && echo 'the contract' > /var/www/html/data/owner/files/contract.txt \
         && head -c 4000000 /dev/urandom > /var/www/html/data/owner/files/scan.pdf",
    );
    exec(
        &format!("{id}-espocrm-1"),
        "mkdir -p /var/www/html/data/upload && echo 'attachment' > /var/www/html/data/upload/marker.bin",
    );
}

fn markers_present(id: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let mut check = |name: &str, ok: bool| {
        if !ok {
            missing.push(name.to_string());
        }
    };
    let espocrm = Command::new("docker")
        .args([
            "exec",
            &format!("{id}-mysql-1"),
            "sh",
            "-c",
            "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb -uroot -N -B -e 'SELECT note FROM espocrm.stackbox_marker ORDER BY id'",
        ])
        .output()
        .unwrap();
    check(
        "espocrm rows",
        text(&espocrm.stdout).split_whitespace().collect::<Vec<_>>() == ["crm-one", "crm-two"],
    );
    let nextcloud = Command::new("docker")
        .args([
            "exec",
            &format!("{id}-mysql-1"),
            "sh",
            "-c",
            "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb -uroot -N -B -e 'SELECT id FROM nextcloud.stackbox_marker'",
        ])
        .output()
        .unwrap();
    check("nextcloud row", text(&nextcloud.stdout).trim() == "7");
    let calcom = Command::new("docker")
        .args([
            "exec",
            &format!("{id}-postgres-1"),
            "psql",
            "-U",
            "postgres",
            "-d",
            "calcom",
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM stackbox_marker",
        ])
        .output()
        .unwrap();
    check("calcom rows", text(&calcom.stdout).trim() == "3");
    let events = Command::new("docker")
        .args([
            "exec",
            &format!("{id}-plausible-events-db-1"),
            "sh",
            "-c",
            "clickhouse-client --user \"$CLICKHOUSE_USER\" --password \"$CLICKHOUSE_PASSWORD\" --database \"$CLICKHOUSE_DB\" --query 'SELECT count() FROM `events_marker`'",
        ])
        .output()
        .unwrap();
    check("clickhouse rows", text(&events.stdout).trim() == "2");
    let inventory = Command::new("docker")
        .args([
            "exec",
            &format!("{id}-mailtrain-mongo-1"),
            "mongo",
            "--quiet",
            "--eval",
            stackbox_core_mongo_inventory(),
        ])
        .output()
        .unwrap();
    check(
        "mongo document",
        text(&inventory.stdout).contains("mailtrain.stackbox_marker\t1"),
    );
    let contract = Command::new("docker")
        .args([
            "exec",
            &format!("{id}-nextcloud-1"),
            "cat",
            "/var/www/html/data/owner/files/contract.txt",
        ])
        .output()
        .unwrap();
    check(
        "nextcloud file",
        text(&contract.stdout).trim() == "the contract",
    );
    let upload = Command::new("docker")
        .args([
            "exec",
            &format!("{id}-espocrm-1"),
            "cat",
            "/var/www/html/data/upload/marker.bin",
        ])
        .output()
        .unwrap();
    check("espocrm file", text(&upload.stdout).trim() == "attachment");
    missing
}

/// The inventory script the backup itself runs (the core's constant, repeated here on
/// purpose: the test checks the stand-in answers the script the product sends).
fn stackbox_core_mongo_inventory() -> &'static str {
    "db.getMongo().getDBNames().filter(function(n){return ['admin','local','config'].indexOf(n)<0}).forEach(function(d){var s=db.getSiblingDB(d);s.getCollectionNames().forEach(function(c){print(d+'.'+c+'\\t'+s.getCollection(c).countDocuments({}))})})"
}

fn delete_markers(id: &str) {
    mariadb(
        id,
        "DROP TABLE espocrm.stackbox_marker; DELETE FROM nextcloud.stackbox_marker;",
    );
    postgres(id, "calcom", "DELETE FROM stackbox_marker WHERE id > 1;");
    clickhouse(id, "DROP TABLE IF EXISTS \\`events_marker\\`", None);
    mongo(
        id,
        "db.getSiblingDB('mailtrain').getCollection('stackbox_marker').drop()",
    );
    exec(
        &format!("{id}-nextcloud-1"),
        "rm -rf /var/www/html/data/owner",
    );
    exec(
        &format!("{id}-espocrm-1"),
        "rm -f /var/www/html/data/upload/marker.bin",
    );
}

fn running_containers(prefix: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args([
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name=^{prefix}"),
        ])
        .output()
        .unwrap();
    text(&output.stdout).lines().map(String::from).collect()
}

fn every_pack_file(dir: &std::path::Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            every_pack_file(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[test]
fn enterprise_client_is_backed_up_restored_verified_and_cloned_on_a_real_engine() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .program("restic", "apt-get install restic")
        .images()
    else {
        return;
    };
    let env = Env::new(&images);
    let config = env.root.path().join("client.toml");
    std::fs::write(
        &config,
        "company_name = \"Backup Bakery\"\ndomain = \"backupbakery.example.com\"\nplan = \"enterprise\"\n\
         admin_email = \"owner@backupbakery.example.com\"\n",
    )
    .unwrap();
    let deployed = env.json(&["deploy", config.to_str().unwrap(), "--json"]);
    let id = deployed["client_id"].as_str().unwrap().to_string();
    let services_before = running_containers(&format!("{id}-")).len();
    assert!(services_before >= 15, "{services_before} containers");
    write_markers(&id);
    assert_eq!(markers_present(&id), Vec::<String>::new());

    // A backup: recorded only once uploaded and checked; nothing stopped meanwhile.
    let created = env.json(&["backup", "create", &id, "--json"]);
    let snapshot = created["snapshot"].as_str().unwrap().to_string();
    assert_eq!(created["databases"], 7, "{created}");
    assert!(created["rows"].as_u64().unwrap() >= 10, "{created}");
    assert_eq!(running_containers(&format!("{id}-")).len(), services_before);
    // The repository is encrypted: no marker is readable in its files.
    let mut packs = Vec::new();
    every_pack_file(&env.data_dir().join("backups").join(&id), &mut packs);
    assert!(!packs.is_empty());
    for pack in &packs {
        let bytes = std::fs::read(pack).unwrap();
        assert!(
            !bytes
                .windows(b"the contract".len())
                .any(|w| w == b"the contract"),
            "{} holds a marker in the clear",
            pack.display()
        );
    }

    // An unchanged client's second backup adds next to nothing (the new dumps and manifest:
    // the 4 MB of files are not read again).
    let second = env.json(&["backup", "create", &id, "--json"]);
    // A third: every MariaDB database untouched since the second's dump was taken is not
    // dumped again (its staged dump and manifest entry are reused).
    let third = env.ok(&["backup", "create", &id, "--json"]);
    let reused: Vec<String> = third
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "dumped" && e["reused"] == true)
        .map(|e| {
            format!(
                "{}/{}",
                e["service"].as_str().unwrap(),
                e["database"].as_str().unwrap()
            )
        })
        .collect();
    assert!(reused.contains(&"mysql/espocrm".to_string()), "{third}");
    assert!(
        reused.iter().all(|r| r.starts_with("mysql/")),
        "only MariaDB dumps are reused: {reused:?}"
    );
    let first_added = created["bytes_added"].as_u64().unwrap();
    let second_added = second["bytes_added"].as_u64().unwrap();
    assert!(
        second_added * 10 < first_added.max(1),
        "second backup added {second_added} of {first_added}"
    );

    // Lose the markers, restore the first snapshot: every marker back, every service healthy.
    delete_markers(&id);
    assert_eq!(markers_present(&id).len(), 7);
    let restored = env.json(&[
        "backup",
        "restore",
        &id,
        "--snapshot",
        &snapshot,
        "--yes",
        "--json",
    ]);
    assert_eq!(restored["success"], true, "{restored}");
    assert_eq!(markers_present(&id), Vec::<String>::new());
    assert_eq!(env.settled_state(&id), "running");
    // Without --yes nothing happens.
    let refused = env.run(&["backup", "restore", &id]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("--yes"));

    // The list: three manual backups and the restore's safety backup, all succeeded.
    let listed = env.json(&["backup", "list", &id, "--json"]);
    let backups = listed["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 4, "{listed}");
    assert!(backups.iter().all(|b| b["status"] == "succeeded"));
    assert!(backups.iter().any(|b| b["reason"] == "safety"));

    // Verify: a throwaway copy restored, healthy, compared, removed.
    let verified = env.json(&["backup", "verify", &id, "--snapshot", &snapshot, "--json"]);
    assert_eq!(verified["success"], true, "{verified}");
    assert!(
        running_containers(&format!("{}-", verified["copy"].as_str().unwrap())).is_empty(),
        "the verify copy was removed"
    );
    let listed = env.json(&["backup", "list", &id, "--json"]);
    assert!(listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["verify_ok"] == true));

    // A backup killed with SIGKILL mid-way leaves every service running; a re-run completes.
    let mut child = env
        .command(&["backup", "create", &id, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("\"dumped\"") {
            break;
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(running_containers(&format!("{id}-")).len(), services_before);
    let again = env.json(&["backup", "create", &id, "--json"]);
    assert_eq!(again["success"], true);

    // Clone: a new client with the data, its own networks, running beside the original.
    let cloned = env.json(&[
        "clone",
        &id,
        "--domain",
        "copy-bakery.example.com",
        "--json",
    ]);
    let clone_id = cloned["client_id"].as_str().unwrap().to_string();
    assert_ne!(clone_id, id);
    assert_eq!(env.settled_state(&clone_id), "running");
    assert_eq!(markers_present(&clone_id), Vec::<String>::new());
    // Changing the clone does not change the original.
    mariadb(
        &clone_id,
        "INSERT INTO espocrm.stackbox_marker VALUES (3, 'only-in-clone');",
    );
    let original = mariadb(&id, "SELECT COUNT(*) FROM espocrm.stackbox_marker");
    assert_eq!(original, "2");
    let networks = Command::new("docker")
        .args(["network", "ls", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    assert!(text(&networks.stdout).contains(&format!("{clone_id}_data")));
    // A domain taken is refused.
    let taken = env.run(&["clone", &id, "--domain", "copy-bakery.example.com"]);
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("--domain"),
        "{}",
        text(&taken.stderr)
    );

    // A tampered repository fails verify, naming the check.
    packs.clear();
    every_pack_file(
        &env.data_dir().join("backups").join(&id).join("data"),
        &mut packs,
    );
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let original = std::fs::read(pack).unwrap();
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xff;
    }
    let mode = std::fs::metadata(pack).unwrap().permissions();
    let mut writable = mode.clone();
    std::os::unix::fs::PermissionsExt::set_mode(&mut writable, 0o600);
    std::fs::set_permissions(pack, writable).unwrap();
    std::fs::write(pack, &bytes).unwrap();
    let started = Instant::now();
    let tampered = env.run(&["backup", "verify", &id, "--json"]);
    assert!(
        !tampered.status.success(),
        "verify passed a tampered repository"
    );
    let message = text(&tampered.stderr);
    assert!(message.contains("check"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(600));
    std::fs::write(pack, &original).unwrap();

    // A destroy keeps the backups (a last one first); the client comes back from them with
    // its bundle, secrets and data.
    env.ok(&["destroy", &clone_id, "--yes", "--delete-backups"]);
    let destroyed = env.json(&["destroy", &id, "--yes", "--json"]);
    assert!(
        destroyed["backups"]
            .as_str()
            .unwrap_or_default()
            .contains("kept"),
        "{destroyed}"
    );
    assert!(!env.root.path().join("clients").join(&id).exists());
    let back = env.json(&["backup", "restore", &id, "--yes", "--json"]);
    assert_eq!(back["came_back"], true, "{back}");
    assert_eq!(markers_present(&id), Vec::<String>::new());
    assert_eq!(env.settled_state(&id), "running");
    env.ok(&["destroy", &id, "--yes", "--delete-backups"]);
}
