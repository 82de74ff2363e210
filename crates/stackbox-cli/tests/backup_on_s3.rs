//! Backups to S3 end to end through the real binary: a private moto S3 server on a free
//! loopback port, a starter client on a real Docker engine with the local test images, real
//! restic. A backup lands under the operator's prefix (`eu/<client id>/`, the bucket created by
//! restic's init), encrypted; a restore brings lost markers back; verify passes; a missing
//! secret key is named; the secret key never appears in any output. Without moto, restic or
//! the engine the test skips with one line, and fails where every tier is required (CI).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const EDGE: &str = "stackbox-s3-test-edge";
const BUCKET: &str = "stackbox-backups";
const ACCESS_KEY: &str = "stackbox-s3-test-access-key";
/// Given to the binary only through its environment; asserted absent from every output.
const SECRET_KEY: &str = "moto-secret-8c41f0-never-printed-d27b";
/// In a MariaDB row and in a Nextcloud file; asserted absent from every stored object.
const MARKER: &str = "s3-marker-harbour-5e9a13";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A private moto server on a free loopback port, run through `sh -c 'server & read; kill'`:
/// dropping it (or the test process ending, which closes the pipe) stops the server.
struct Moto {
    port: u16,
    child: Child,
    keepalive: Option<ChildStdin>,
    log_dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Moto {
        let importable = Command::new("python3")
            .args(["-c", "import moto, moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            importable,
            "moto is not installed, and the S3 backup test needs it: run \
             `python3 -m pip install 'moto[server]>=5,<6'` (scripts/install-test-deps.sh does)"
        );
        let port = support::free_port();
        let log_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"python3 -m moto.server -H 127.0.0.1 -p "$1" >"$2/moto.log" 2>&1 &
                   server=$!; read -r _ignored; kill "$server"; wait "$server""#,
                "sh",
            ])
            .arg(port.to_string())
            .arg(log_dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run sh to start moto");
        let keepalive = child.stdin.take();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(60) {
                let log =
                    std::fs::read_to_string(log_dir.path().join("moto.log")).unwrap_or_default();
                panic!("moto did not answer on 127.0.0.1:{port}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            port,
            child,
            keepalive,
            log_dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One request with a dummy SigV4 header: moto does not check signatures, but refuses
    /// anonymous reads of private objects (403; anonymous listing it allows). No secret key is
    /// involved: the test never signs anything.
    fn request(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature={}\r\n\r\n",
            self.port,
            "0".repeat(64)
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: no header end in {}", text(&response)));
        let head = text(&response[..split]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head}"));
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{method} {path}: chunked answer from moto: {head}"
        );
        (status, response[split + 4..].to_vec())
    }

    /// Every key under `prefix` (ListObjectsV2, page by page), or None when the bucket is
    /// missing.
    fn keys(&self, prefix: &str) -> Option<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{BUCKET}?list-type=2&prefix={prefix}");
            if let Some(token) = &token {
                path.push_str("&continuation-token=");
                path.push_str(&percent_encode(token));
            }
            let (status, body) = self.request("GET", &path);
            let body = text(&body);
            if status == 404 && body.contains("NoSuchBucket") {
                return None;
            }
            assert_eq!(status, 200, "GET {path}: {body}");
            keys.extend(elements(&body, "Key"));
            match elements(&body, "NextContinuationToken").into_iter().next() {
                Some(next) if body.contains("<IsTruncated>true</IsTruncated>") => {
                    token = Some(next);
                }
                _ => return Some(keys),
            }
        }
    }

    fn object(&self, key: &str) -> Vec<u8> {
        let (status, body) = self.request("GET", &format!("/{BUCKET}/{key}"));
        assert_eq!(status, 200, "GET {key}: {}", text(&body));
        body
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe ends `read`, and the shell kills the server.
        drop(self.keepalive.take());
        let _ = self.child.wait();
    }
}

/// The text of every `<name>…</name>` element, in order (XML entities undone for `&amp;`).
fn elements(xml: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(after[..end].replace("&amp;", "&"));
        rest = &after[end + close.len()..];
    }
    found
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

struct Env {
    root: tempfile::TempDir,
    operator: PathBuf,
    images: String,
    /// Every stdout and stderr the test collected, checked for the secret key as it comes.
    outputs: Mutex<Vec<String>>,
}

impl Env {
    fn new(images: &str, moto: &Moto) -> Env {
        let root = tempfile::tempdir().unwrap();
        let operator = root.path().join("stackbox.toml");
        std::fs::write(
            &operator,
            format!(
                "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 18280\nhttps_port = 18643\n\
                 [host]\nmax_open_files = {}\n\
                 [backup]\ndestination = \"s3:{}/{BUCKET}/eu\"\nkeep_last = 10\n",
                support::hard_open_files_limit(),
                moto.endpoint()
            ),
        )
        .unwrap();
        Env {
            root,
            operator,
            images: images.to_string(),
            outputs: Mutex::new(Vec::new()),
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
            .env("STACKBOX_BACKUP_S3_ACCESS_KEY_ID", ACCESS_KEY)
            .env("STACKBOX_BACKUP_S3_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("STACKBOX_BACKUP_S3_REGION", "us-east-1")
            .env_remove("STACKBOX_MASTER_KEY")
            .env_remove("STACKBOX_DATABASE_URL")
            .env_remove("STACKBOX_SERVER")
            .env_remove("STACKBOX_TOKEN");
        // Only StackBox's own variables reach restic: none from the host's AWS setup.
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_REGION",
            "AWS_REGION",
            "RESTIC_REPOSITORY",
            "RESTIC_PASSWORD",
        ] {
            command.env_remove(name);
        }
        command
    }

    /// Records an output's streams, failing at once if either holds the secret key.
    fn collect(&self, what: &str, output: &Output) {
        for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            let text = text(bytes);
            assert!(
                !text.contains(SECRET_KEY),
                "the S3 secret key appeared in the {stream} of {what}:\n{text}"
            );
            self.outputs.lock().unwrap().push(text);
        }
    }

    fn run_command(&self, what: &str, mut command: Command) -> Output {
        let output = command.output().unwrap();
        self.collect(what, &output);
        output
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_command(&format!("stackbox {args:?}"), self.command(args))
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

    /// A shell script inside a client's container; its standard output.
    fn exec(&self, container: &str, script: &str) -> String {
        let mut command = Command::new("docker");
        command.args(["exec", container, "sh", "-c", script]);
        let output = self.run_command(&format!("docker exec {container}"), command);
        assert!(
            output.status.success(),
            "docker exec {container} {script}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout).trim().to_string()
    }

    /// Like [`Env::exec`], whatever the exit status: standard output.
    fn probe(&self, container: &str, script: &str) -> String {
        let mut command = Command::new("docker");
        command.args(["exec", container, "sh", "-c", script]);
        let output = self.run_command(&format!("docker exec {container}"), command);
        text(&output.stdout).trim().to_string()
    }

    fn mariadb(&self, id: &str, sql: &str) -> String {
        self.exec(
            &format!("{id}-mysql-1"),
            &format!("MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb -uroot -N -B -e \"{sql}\""),
        )
    }

    fn write_markers(&self, id: &str) {
        self.mariadb(
            id,
            &format!(
                "CREATE TABLE espocrm.stackbox_marker (id INT PRIMARY KEY, note VARCHAR(64)); \
                 INSERT INTO espocrm.stackbox_marker VALUES (1, '{MARKER}');"
            ),
        );
        self.exec(
            &format!("{id}-nextcloud-1"),
            &format!(
                "mkdir -p /var/www/html/data/owner/files && \
                 echo '{MARKER}' > /var/www/html/data/owner/files/contract.txt"
            ),
        );
    }

    /// The markers missing from the running client.
    fn markers_missing(&self, id: &str) -> Vec<&'static str> {
        let mut missing = Vec::new();
        let row = self.probe(
            &format!("{id}-mysql-1"),
            "MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb -uroot -N -B -e 'SELECT note FROM espocrm.stackbox_marker'",
        );
        if row != MARKER {
            missing.push("espocrm row");
        }
        let file = self.probe(
            &format!("{id}-nextcloud-1"),
            "cat /var/www/html/data/owner/files/contract.txt",
        );
        if file != MARKER {
            missing.push("nextcloud file");
        }
        missing
    }

    fn delete_markers(&self, id: &str) {
        self.mariadb(id, "DROP TABLE espocrm.stackbox_marker;");
        self.exec(
            &format!("{id}-nextcloud-1"),
            "rm -rf /var/www/html/data/owner",
        );
    }

    /// The client's state once the engine's own health checks caught up.
    fn settled_state(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.ok(&["status", id, "--json"]);
            let status: serde_json::Value = serde_json::from_str(&out).unwrap();
            let state = status["state"].as_str().unwrap_or_default().to_string();
            if state != "starting" || Instant::now() > deadline {
                return state;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
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

/// Every regular file below `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            files_holding(&path, needle, found);
        } else if meta.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                if contains(&bytes, needle) {
                    found.push(path);
                }
            }
        }
    }
}

#[test]
fn starter_client_is_backed_up_to_s3_restored_and_verified_through_the_binary() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .program("restic", "apt-get install restic")
        .python_modules(
            &["moto", "moto.server"],
            "python3 -m pip install 'moto[server]>=5,<6'",
        )
        .images()
    else {
        return;
    };
    let started = Instant::now();
    let moto = Moto::start();
    let env = Env::new(&images, &moto);
    assert_eq!(
        moto.keys(""),
        None,
        "the bucket does not exist before the first backup"
    );

    let config = env.root.path().join("client.toml");
    std::fs::write(
        &config,
        "company_name = \"Cloud Crumbs\"\ndomain = \"cloudcrumbs.example.com\"\nplan = \"starter\"\n\
         admin_email = \"owner@cloudcrumbs.example.com\"\n",
    )
    .unwrap();
    let deployed = env.json(&["deploy", config.to_str().unwrap(), "--json"]);
    let id = deployed["client_id"].as_str().unwrap().to_string();
    env.write_markers(&id);
    assert_eq!(env.markers_missing(&id), Vec::<&str>::new());

    // Without the secret key (unset, or empty) a backup is refused, naming the variable, and
    // nothing reaches S3.
    for secret in [None, Some("")] {
        let mut command = env.command(&["backup", "create", &id, "--json"]);
        match secret {
            None => command.env_remove("STACKBOX_BACKUP_S3_SECRET_ACCESS_KEY"),
            Some(value) => command.env("STACKBOX_BACKUP_S3_SECRET_ACCESS_KEY", value),
        };
        let refused = env.run_command("stackbox backup create (no secret key)", command);
        assert!(
            !refused.status.success(),
            "a backup without the secret key ({secret:?}) succeeded: {}",
            text(&refused.stdout)
        );
        let message = text(&refused.stderr);
        assert!(
            message.contains("STACKBOX_BACKUP_S3_SECRET_ACCESS_KEY"),
            "the error does not name the missing variable: {message}"
        );
    }
    assert_eq!(moto.keys(""), None, "a refused backup created the bucket");

    // The backup: restic's init creates the bucket; everything lands under eu/<client id>/.
    let backup_started = Instant::now();
    let created = env.json(&["backup", "create", &id, "--json"]);
    eprintln!("backup create to moto: {:?}", backup_started.elapsed());
    assert_eq!(created["success"], true, "{created}");
    let snapshot = created["snapshot"].as_str().unwrap().to_string();
    assert_eq!(created["databases"], 2, "espocrm and nextcloud: {created}");
    let prefix = format!("eu/{id}/");
    let every_key = moto.keys("").expect("restic's init created the bucket");
    let keys = moto.keys(&prefix).unwrap();
    assert!(!keys.is_empty(), "nothing under {prefix}");
    assert_eq!(
        every_key.len(),
        keys.len(),
        "objects outside {prefix}: {every_key:?}"
    );
    assert!(keys.contains(&format!("{prefix}config")), "{keys:?}");
    for folder in ["data/", "keys/", "index/", "snapshots/"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{prefix}{folder}"))),
            "no {prefix}{folder}… object: {keys:?}"
        );
    }
    // Encrypted: neither the marker nor the secret key is in any object's bytes.
    let mut fetched = 0usize;
    for key in &keys {
        let bytes = moto.object(key);
        fetched += bytes.len();
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "{key} holds the marker in the clear"
        );
        assert!(
            !contains(&bytes, SECRET_KEY.as_bytes()),
            "{key} holds the S3 secret key"
        );
    }
    eprintln!("{} objects, {fetched} bytes under {prefix}", keys.len());
    assert!(fetched > 0);

    // Lose the markers, restore: both back, every service healthy.
    env.delete_markers(&id);
    assert_eq!(
        env.markers_missing(&id),
        ["espocrm row", "nextcloud file"],
        "the markers were deleted"
    );
    let restored = env.json(&["backup", "restore", &id, "--yes", "--json"]);
    assert_eq!(restored["success"], true, "{restored}");
    assert_eq!(restored["snapshot"], snapshot.as_str(), "{restored}");
    assert_eq!(env.markers_missing(&id), Vec::<&str>::new());
    assert_eq!(env.settled_state(&id), "running");
    let safety = restored["safety_snapshot"].as_str().unwrap().to_string();
    let snapshots = moto.keys(&format!("{prefix}snapshots/")).unwrap();
    assert_eq!(
        snapshots.len(),
        2,
        "the backup and the restore's safety backup: {snapshots:?}"
    );

    // Verify: a throwaway copy restored from S3, healthy, compared, removed.
    let verified = env.json(&["backup", "verify", &id, "--json"]);
    assert_eq!(verified["success"], true, "{verified}");
    assert_eq!(verified["snapshot"], safety.as_str(), "{verified}");
    let listed = env.json(&["backup", "list", &id, "--json"]);
    let backups = listed["backups"].as_array().unwrap();
    assert!(
        backups
            .iter()
            .filter(|b| b["status"] == "succeeded")
            .count()
            >= 2,
        "{listed}"
    );
    assert!(backups.iter().any(|b| b["verify_ok"] == true), "{listed}");

    // Destroy with its backups: the repository's snapshots go from S3.
    env.ok(&["destroy", &id, "--yes", "--delete-backups"]);
    let left = moto.keys(&format!("{prefix}snapshots/")).unwrap();
    assert!(
        left.is_empty(),
        "snapshots left after --delete-backups: {left:?}"
    );

    // The secret key was in no output (checked as each came) and in no file StackBox wrote.
    let outputs = env.outputs.lock().unwrap();
    assert!(outputs.len() >= 20, "{} outputs collected", outputs.len());
    assert!(outputs.iter().all(|o| !o.contains(SECRET_KEY)));
    drop(outputs);
    let mut holding = Vec::new();
    files_holding(env.root.path(), SECRET_KEY.as_bytes(), &mut holding);
    assert!(
        holding.is_empty(),
        "the S3 secret key is stored in {holding:?}"
    );
    assert!(
        !moto.log().contains(SECRET_KEY),
        "the secret key went over the wire"
    );
    eprintln!("the whole test: {:?}", started.elapsed());
}
