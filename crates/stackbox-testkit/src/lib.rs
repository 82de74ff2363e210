//! Test tiers: what a StackBox test needs from outside cargo, checked before the test starts.
//!
//! The pure and snapshot tiers need nothing but cargo. The other tiers need something cargo
//! does not provide: a Docker engine with the local test images (`STACKBOX_TEST_IMAGES`), real
//! tools (nginx, php, docker-compose, MariaDB, PostgreSQL, restic), moto's server, an SMTP
//! server (aiosmtpd). `scripts/test.sh` provides every one of them.
//!
//! Each test of such a tier starts with its guard:
//!
//! ```no_run
//! # fn engine_test() {
//! let Some(images) = stackbox_testkit::engine_images() else { return };
//! # let _ = images;
//! # }
//! # fn restic_test() {
//! if !stackbox_testkit::Tier::new("restic")
//!     .program("restic", "apt-get install restic")
//!     .ready()
//! {
//!     return;
//! }
//! # }
//! ```
//!
//! When something is missing, the guard writes one line to standard error (once per tier and
//! test binary, past libtest's output capture, so a plain `cargo test` shows it) naming what is
//! missing and how to run the tier, and the test returns: `cargo test` with no preparation
//! passes with the tiers it can run. With `STACKBOX_REQUIRE_ALL_TIERS=1` (scripts/test.sh
//! exports it, so CI runs with it) the guard panics instead, naming what is missing: there, no
//! tier is ever skipped.
//!
//! What to do is [`decide`]d by a pure function of what the probes found and of that variable;
//! the probes (an environment variable, the engine's socket, a program on `PATH`, a Python
//! module, PostgreSQL's binaries) are the only part of this crate that looks at the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Set (to anything but empty, `0`, `false` or `no`), a tier that cannot run fails its tests.
pub const REQUIRE_ALL_TIERS: &str = "STACKBOX_REQUIRE_ALL_TIERS";
/// The local test images' catalog, written by `tests/images/build.sh` (scripts/test.sh sets it).
pub const TEST_IMAGES: &str = "STACKBOX_TEST_IMAGES";
/// What every skip and failure says to do.
pub const HOW_TO_RUN: &str =
    "run scripts/test.sh, which installs the test tools, starts dockerd and builds the test images";

/// What a tier's guard does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Everything the tier needs is there.
    Run,
    /// The line to print; the test returns.
    Skip(String),
    /// The panic message: something is missing and every tier is required.
    Fail(String),
}

/// Whether `STACKBOX_REQUIRE_ALL_TIERS`'s value (`None` when unset) requires every tier.
pub fn required(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("" | "0") => false,
        Some(value) => !value.eq_ignore_ascii_case("false") && !value.eq_ignore_ascii_case("no"),
    }
}

/// The guard's decision for `tier`, given what its probes found missing (one phrase each,
/// with its fix) and `STACKBOX_REQUIRE_ALL_TIERS`'s value. Pure.
pub fn decide(tier: &str, missing: &[String], require_all: Option<&str>) -> Decision {
    if missing.is_empty() {
        return Decision::Run;
    }
    let what = missing
        .iter()
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ");
    if required(require_all) {
        Decision::Fail(format!(
            "the {tier} tier cannot run: {what}. {REQUIRE_ALL_TIERS} is set, so a tier that \
             cannot run is a failure, not a skip: {HOW_TO_RUN}"
        ))
    } else {
        Decision::Skip(format!("skipped ({tier} tier): {what} — {HOW_TO_RUN}"))
    }
}

/// Where the Docker engine is, from `DOCKER_HOST` as the docker CLI reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddress {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
    /// A scheme the guard cannot check by itself (ssh://, …): the tests find out.
    Unchecked(String),
}

impl fmt::Display for EngineAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            EngineAddress::Tcp(address) => write!(f, "tcp://{address}"),
            EngineAddress::Unchecked(host) => f.write_str(host),
        }
    }
}

/// `DOCKER_HOST`'s value (`None` when unset) → the engine's address. Pure.
pub fn engine_address(docker_host: Option<&str>) -> EngineAddress {
    match docker_host.map(str::trim).filter(|host| !host.is_empty()) {
        None => EngineAddress::Unix(PathBuf::from("/var/run/docker.sock")),
        Some(host) => {
            if let Some(path) = host.strip_prefix("unix://") {
                EngineAddress::Unix(PathBuf::from(path))
            } else if let Some(rest) = host.strip_prefix("tcp://") {
                EngineAddress::Tcp(rest.split('/').next().unwrap_or_default().to_string())
            } else {
                EngineAddress::Unchecked(host.to_string())
            }
        }
    }
}

/// The engine tier's guard: the local test images' catalog (`STACKBOX_TEST_IMAGES`), an engine
/// answering at `DOCKER_HOST` and the docker CLI. The catalog's path when they are there.
#[track_caller]
pub fn engine_images() -> Option<String> {
    Tier::engine().images()
}

/// One tier's needs, probed as they are added; [`Tier::ready`] decides.
#[derive(Debug)]
#[must_use = "a tier decides nothing until `ready()` or `images()`"]
pub struct Tier {
    name: &'static str,
    missing: Vec<String>,
    images: bool,
}

impl Tier {
    /// A tier named in its skip line, `skipped (NAME tier): …`.
    pub fn new(name: &'static str) -> Tier {
        Tier {
            name,
            missing: Vec::new(),
            images: false,
        }
    }

    /// The engine tier: the test images, the engine, the docker CLI.
    pub fn engine() -> Tier {
        Tier::new("engine").and_engine()
    }

    /// The engine tier's needs in another tier (a test of both).
    pub fn and_engine(self) -> Tier {
        self.test_images()
            .docker_engine()
            .program("docker", "apt-get install docker.io")
    }

    /// `STACKBOX_TEST_IMAGES` names the local test images' catalog.
    pub fn test_images(mut self) -> Tier {
        self.images = true;
        let missing = match std::env::var(TEST_IMAGES) {
            Ok(path) if !path.trim().is_empty() => (!Path::new(&path).is_file())
                .then(|| format!("{TEST_IMAGES} names {path}, which is not a file")),
            _ => Some(format!("{TEST_IMAGES} is not set")),
        };
        self.add(missing)
    }

    /// A Docker engine answers at `DOCKER_HOST` (default `unix:///var/run/docker.sock`).
    pub fn docker_engine(self) -> Tier {
        let address = engine_address(std::env::var("DOCKER_HOST").ok().as_deref());
        self.docker_engine_at(&address)
    }

    fn docker_engine_at(self, address: &EngineAddress) -> Tier {
        let missing = cached(&format!("engine {address}"), || {
            (!engine_answers(address))
                .then(|| format!("no Docker engine answers at {address} (DOCKER_HOST)"))
        });
        self.add(missing)
    }

    /// `name` is an executable on `PATH`; `install` says how to get it.
    pub fn program(self, name: &str, install: &str) -> Tier {
        let missing = find_program(name)
            .is_none()
            .then(|| format!("{name} is not on PATH ({install})"));
        self.add(missing)
    }

    /// python3 (on `PATH`) imports every module; `install` says how to get them.
    pub fn python_modules(self, modules: &[&str], install: &str) -> Tier {
        let list = modules.join(", ");
        let missing = cached(&format!("python {list}"), || {
            if find_program("python3").is_none() {
                return Some(format!("python3 is not on PATH ({install})"));
            }
            let imports = |names: &str| {
                Command::new("python3")
                    .args(["-c", &format!("import {names}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            };
            if imports(&list) {
                return None;
            }
            let absent: Vec<&str> = modules.iter().copied().filter(|m| !imports(m)).collect();
            Some(format!(
                "python3 cannot import {} ({install})",
                if absent.is_empty() {
                    list.clone()
                } else {
                    absent.join(", ")
                }
            ))
        });
        self.add(missing)
    }

    /// Debian's PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`), its `postgres` user
    /// and `runuser`, for a throwaway cluster.
    pub fn postgresql(self) -> Tier {
        let installed = postgresql_bin().is_some()
            && std::fs::read_to_string("/etc/passwd")
                .is_ok_and(|users| users.lines().any(|u| u.starts_with("postgres:")));
        self.needs(
            installed,
            "PostgreSQL is not installed (apt-get install postgresql)",
        )
        .program("runuser", "apt-get install util-linux")
    }

    /// Anything else the test probed itself: `present`, or `missing` says what is not there
    /// and how to get it.
    pub fn needs(self, present: bool, missing: impl Into<String>) -> Tier {
        let missing = (!present).then(|| missing.into());
        self.add(missing)
    }

    /// What the probes found missing so far.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The guard: true when the tier can run; otherwise prints the skip line (once per tier
    /// and test binary) and returns false, or panics under `STACKBOX_REQUIRE_ALL_TIERS`.
    #[track_caller]
    pub fn ready(self) -> bool {
        let require = std::env::var(REQUIRE_ALL_TIERS).ok();
        match decide(self.name, &self.missing, require.as_deref()) {
            Decision::Run => true,
            Decision::Skip(line) => {
                say_once(&line);
                false
            }
            Decision::Fail(message) => panic!("{message}"),
        }
    }

    /// [`Tier::ready`] with the test images among the needs: their catalog's path.
    #[track_caller]
    pub fn images(self) -> Option<String> {
        let tier = if self.images {
            self
        } else {
            self.test_images()
        };
        if tier.ready() {
            std::env::var(TEST_IMAGES).ok()
        } else {
            None
        }
    }

    fn add(mut self, missing: Option<String>) -> Tier {
        self.missing.extend(missing);
        self
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` holding `initdb` and `postgres`.
pub fn postgresql_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| is_executable(&bin.join("initdb")) && is_executable(&bin.join("postgres")))
        .max()
}

/// `name` on `PATH`, as `Command::new(name)` and `sh -c` would find it.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `GET /_ping` over the engine's socket (a connection for TCP, which may be TLS). A socket
/// that exists but does not answer at once is asked again for up to half a minute: a busy
/// engine (removing a hundred containers) can take seconds to answer, and taking it for
/// absent would skip a tier, which fails CI.
fn engine_answers(address: &EngineAddress) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if engine_answers_once(address) {
            return true;
        }
        let present = match address {
            EngineAddress::Unix(path) => path.exists(),
            _ => true,
        };
        if !present || std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn engine_answers_once(address: &EngineAddress) -> bool {
    let timeout = Some(Duration::from_secs(5));
    match address {
        EngineAddress::Unix(path) => UnixStream::connect(path).is_ok_and(|stream| {
            stream.set_read_timeout(timeout).is_ok()
                && stream.set_write_timeout(timeout).is_ok()
                && pong(stream)
        }),
        EngineAddress::Tcp(address) => address.to_socket_addrs().is_ok_and(|mut addresses| {
            addresses.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
        }),
        EngineAddress::Unchecked(_) => true,
    }
}

fn pong(mut stream: impl Read + Write) -> bool {
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.take(4096).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer.starts_with("HTTP/1.") && answer.lines().next().is_some_and(|l| l.contains(" 200"))
}

/// A probe's finding, once per test binary.
fn cached(key: &str, probe: impl FnOnce() -> Option<String>) -> Option<String> {
    static FOUND: OnceLock<Mutex<BTreeMap<String, Option<String>>>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    if let Some(known) = found.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
        return known.clone();
    }
    let result = probe();
    found
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_string(), result.clone());
    result
}

/// Writes the line to the process's standard error once: straight to the stream, which
/// libtest does not capture (it captures `eprintln!`), so that `cargo test` shows it.
fn say_once(line: &str) {
    static SAID: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    let said = SAID.get_or_init(Default::default);
    if said
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(line.to_string())
    {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_tier_with_nothing_missing_runs_whatever_the_variable_says() {
        for require in [None, Some(""), Some("0"), Some("1"), Some("yes")] {
            assert_eq!(decide("engine", &[], require), Decision::Run);
        }
    }

    #[test]
    fn a_missing_prerequisite_is_one_skip_line_naming_it_and_how_to_run_the_tier() {
        let found = missing(&["STACKBOX_TEST_IMAGES is not set"]);
        for require in [None, Some(""), Some("0"), Some("false"), Some("No")] {
            let Decision::Skip(line) = decide("engine", &found, require) else {
                panic!("{require:?} must skip");
            };
            assert_eq!(
                line,
                "skipped (engine tier): STACKBOX_TEST_IMAGES is not set — run scripts/test.sh, \
                 which installs the test tools, starts dockerd and builds the test images"
            );
        }
    }

    #[test]
    fn every_missing_prerequisite_is_named_on_the_one_line() {
        let found = missing(&[
            "STACKBOX_TEST_IMAGES is not set",
            "no Docker engine answers at\nunix:///nonexistent (DOCKER_HOST)",
        ]);
        let Decision::Skip(line) = decide("engine", &found, None) else {
            panic!("must skip");
        };
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("STACKBOX_TEST_IMAGES is not set; no Docker engine answers at unix:///nonexistent (DOCKER_HOST)"), "{line}");
    }

    #[test]
    fn with_every_tier_required_a_missing_prerequisite_fails_naming_it() {
        let found = missing(&["restic is not on PATH (apt-get install restic)"]);
        for require in ["1", "true", "yes", " 1 "] {
            let Decision::Fail(message) = decide("restic", &found, Some(require)) else {
                panic!("{require:?} must fail");
            };
            assert!(
                message.starts_with(
                    "the restic tier cannot run: restic is not on PATH (apt-get install restic)."
                ),
                "{message}"
            );
            assert!(message.contains("STACKBOX_REQUIRE_ALL_TIERS"), "{message}");
            assert!(message.contains("scripts/test.sh"), "{message}");
        }
    }

    #[test]
    fn the_variable_requires_every_tier_unless_empty_zero_false_or_no() {
        assert!(!required(None));
        for off in ["", " ", "0", "false", "FALSE", "no"] {
            assert!(!required(Some(off)), "{off:?}");
        }
        for on in ["1", "true", "yes", "all"] {
            assert!(required(Some(on)), "{on:?}");
        }
    }

    #[test]
    fn docker_host_gives_the_address_the_docker_cli_uses() {
        let default = EngineAddress::Unix(PathBuf::from("/var/run/docker.sock"));
        assert_eq!(engine_address(None), default);
        assert_eq!(engine_address(Some("")), default);
        assert_eq!(
            engine_address(Some("unix:///nonexistent.sock")),
            EngineAddress::Unix(PathBuf::from("/nonexistent.sock"))
        );
        assert_eq!(
            engine_address(Some("tcp://127.0.0.1:2375")),
            EngineAddress::Tcp("127.0.0.1:2375".to_string())
        );
        assert_eq!(
            engine_address(Some("ssh://ops@host")),
            EngineAddress::Unchecked("ssh://ops@host".to_string())
        );
        assert_eq!(
            engine_address(Some("unix:///run/docker.sock")).to_string(),
            "unix:///run/docker.sock"
        );
    }

    #[test]
    fn a_tier_collects_what_its_probes_found_missing() {
        let tier = Tier::new("tools")
            .needs(true, "never shown")
            .needs(false, "the schemas are missing")
            .program("stackbox-testkit-no-such-program", "nowhere");
        assert_eq!(
            tier.missing(),
            [
                "the schemas are missing",
                "stackbox-testkit-no-such-program is not on PATH (nowhere)"
            ]
        );
        let engine = Tier::new("engine").docker_engine_at(&EngineAddress::Unix(PathBuf::from(
            "/nonexistent/stackbox-testkit.sock",
        )));
        assert_eq!(
            engine.missing(),
            ["no Docker engine answers at unix:///nonexistent/stackbox-testkit.sock (DOCKER_HOST)"]
        );
    }

    #[test]
    fn ci_requires_every_tier() {
        let script = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/test.sh"
        ))
        .unwrap();
        assert!(
            script
                .lines()
                .any(|l| l.trim() == "export STACKBOX_REQUIRE_ALL_TIERS=1"),
            "scripts/test.sh (CI's command) must export STACKBOX_REQUIRE_ALL_TIERS=1"
        );
    }
}
