//! Shared by the tests: a sample tree to back up, a tree comparison, a private moto server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use stackbox_restic::{BackupProgress, Location, Redacted, Repository};

pub const PASSWORD: &str = "correct horse battery staple 7f3a";

/// The restic tier's guard: the real restic binary (the tests that stand a script in for it
/// need no guard).
pub fn restic_tier() -> stackbox_testkit::Tier {
    stackbox_testkit::Tier::new("restic").program("restic", "apt-get install restic")
}

/// The restic tier with moto's S3 server.
pub fn s3_tier() -> stackbox_testkit::Tier {
    restic_tier().python_modules(
        &["moto", "moto.server"],
        "python3 -m pip install 'moto[server]>=5,<6'",
    )
}

/// Incompressible bytes (xorshift), so that data_added measures real storage.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The regular files of [`sample_tree`] (restic 0.14's summary counts regular files only: the
/// symlink is not among `files_new`/`files_unmodified`).
pub const SAMPLE_FILES: u64 = 5;

/// `base/site` with files, a nested directory, an empty file, a symlink and a 0600 file; about
/// 1 MiB of data. Returns the relative path to back up (`site`).
pub fn sample_tree(base: &Path) -> PathBuf {
    let site = base.join("site");
    std::fs::create_dir_all(site.join("data/nested/deeper")).unwrap();
    std::fs::write(site.join("index.html"), b"<h1>hello</h1>\n").unwrap();
    std::fs::write(site.join("data/big.bin"), noise(1024 * 1024, 42)).unwrap();
    std::fs::write(
        site.join("data/nested/deeper/notes.txt"),
        "notes ".repeat(100),
    )
    .unwrap();
    std::fs::write(site.join("empty"), b"").unwrap();
    std::fs::write(site.join("data/secret.key"), b"private key material\n").unwrap();
    std::fs::set_permissions(
        site.join("data/secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("index.html", site.join("link-to-index")).unwrap();
    PathBuf::from("site")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File { mode: u32, bytes: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
}

/// Every entry below `root`, by relative path: type, permission bits, bytes, link target.
pub fn read_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut entries = BTreeMap::new();
    walk(root, root, &mut entries);
    entries
}

fn walk(root: &Path, dir: &Path, entries: &mut BTreeMap<PathBuf, Entry>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path.strip_prefix(root).unwrap().to_path_buf();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            entries.insert(relative, Entry::Symlink { target });
        } else if meta.is_dir() {
            entries.insert(relative, Entry::Dir { mode });
            walk(root, &path, entries);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            entries.insert(relative, Entry::File { mode, bytes });
        }
    }
}

pub fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// A progress callback that records what it was given.
pub fn recorder(into: &mut Vec<BackupProgress>) -> impl FnMut(BackupProgress) + '_ {
    move |progress| into.push(progress)
}

pub fn local_repository(dir: &Path, password: &str) -> Repository {
    Repository::new(
        Location::Local(dir.join("repo")),
        Redacted::new(password),
        dir.join("cache"),
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private moto server on a free loopback port, run through `sh -c 'server & read; kill'`:
/// dropping it (or the test process ending, which closes the pipe) stops the server.
pub struct Moto {
    pub endpoint: String,
    child: Child,
    keepalive: Option<ChildStdin>,
    _log_dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let importable = Command::new("python3")
            .args(["-c", "import moto, moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            importable,
            "moto is not installed, and the S3 tests need it: run \
             `python3 -m pip install 'moto[server]>=5,<6'` (scripts/install-test-deps.sh does)"
        );
        let port = free_port();
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
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            keepalive,
            _log_dir: log_dir,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe ends `read`, and the shell kills the server.
        drop(self.keepalive.take());
        let _ = self.child.wait();
    }
}
