//! A fresh database per test, on SQLite (a temporary directory) or on a real PostgreSQL.
//!
//! PostgreSQL is `STACKBOX_TEST_DATABASE_URL` when set (its user must be allowed to create
//! databases); otherwise one throwaway cluster per test run, started from Debian's packages as
//! the `postgres` user (the tests run as root, which PostgreSQL refuses). Each test gets its own
//! database in it. The cluster is stopped and its folder removed when this test process exits,
//! however it exits: the server runs under a small shell that waits on a pipe from us. With
//! neither, the PostgreSQL half skips with one line ([`postgres_tier`]).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_store::{ClientRecord, ClientState, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// For each scenario `async fn NAME(db: &TestDb)` of the calling module, declares
/// `mod NAME { sqlite, postgres }`: the scenario run as a test on each engine, on a fresh
/// database.
macro_rules! on_both_engines {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::harness::TestDb::new($crate::harness::Engine::Sqlite).await;
                super::$scenario(&db).await;
                db.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if !$crate::harness::postgres_tier() {
                    return;
                }
                let db = $crate::harness::TestDb::new($crate::harness::Engine::Postgres).await;
                super::$scenario(&db).await;
                db.finish().await;
            }
        }
    )+};
}
pub(crate) use on_both_engines;

pub struct TestDb {
    pub engine: Engine,
    /// What `Store::open` is given.
    pub url: String,
    /// The SQLite file (in a data directory that does not exist until the store creates it).
    pub sqlite_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
    /// A database to drop at the end (only on an operator-given server).
    drop_database: Option<String>,
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("data").join("stackbox.db");
                TestDb {
                    engine,
                    url: format!("sqlite://{}", path.display()),
                    sqlite_path: Some(path),
                    _dir: Some(dir),
                    drop_database: None,
                }
            }
            Engine::Postgres => {
                let server = postgres_server();
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let name = format!(
                    "stackbox_test_{}_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .subsec_nanos()
                );
                let mut admin = connect_postgres(&server.url).await;
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap_or_else(|error| {
                        panic!("cannot create a test database on PostgreSQL: {error}")
                    });
                admin.close().await.unwrap();
                TestDb {
                    engine,
                    url: with_database(&server.url, &name),
                    sqlite_path: None,
                    _dir: None,
                    drop_database: server.external.then_some(name),
                }
            }
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|error| panic!("opening the {:?} store: {error}", self.engine))
    }

    pub async fn finish(self) {
        if let Some(name) = &self.drop_database {
            let mut admin = connect_postgres(&postgres_server().url).await;
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
    }

    /// Runs SQL directly, behind the store's back (to tamper with rows).
    pub async fn raw_execute(&self, sql: &str) {
        match self.engine {
            Engine::Sqlite => {
                let mut connection = self.raw_sqlite().await;
                sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
            }
            Engine::Postgres => {
                let mut connection = connect_postgres(&self.url).await;
                sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
            }
        }
    }

    /// Runs SQL directly and returns the engine's answer, for statements a constraint should
    /// refuse.
    pub async fn raw_try_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.engine {
            Engine::Sqlite => {
                let mut connection = self.raw_sqlite().await;
                sqlx::raw_sql(sql)
                    .execute(&mut connection)
                    .await
                    .map(|_| ())
            }
            Engine::Postgres => {
                let mut connection = connect_postgres(&self.url).await;
                sqlx::raw_sql(sql)
                    .execute(&mut connection)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// The first column of the first row, as an integer.
    pub async fn raw_integer(&self, sql: &str) -> i64 {
        match self.engine {
            Engine::Sqlite => sqlx::query_scalar(sql)
                .fetch_one(&mut self.raw_sqlite().await)
                .await
                .unwrap(),
            Engine::Postgres => sqlx::query_scalar(sql)
                .fetch_one(&mut connect_postgres(&self.url).await)
                .await
                .unwrap(),
        }
    }

    /// The first column of every row, as bytes.
    pub async fn raw_bytes(&self, sql: &str) -> Vec<Vec<u8>> {
        match self.engine {
            Engine::Sqlite => sqlx::query_scalar(sql)
                .fetch_all(&mut self.raw_sqlite().await)
                .await
                .unwrap(),
            Engine::Postgres => sqlx::query_scalar(sql)
                .fetch_all(&mut connect_postgres(&self.url).await)
                .await
                .unwrap(),
        }
    }

    /// The first column of every row, as text.
    pub async fn raw_text(&self, sql: &str) -> Vec<String> {
        match self.engine {
            Engine::Sqlite => sqlx::query_scalar(sql)
                .fetch_all(&mut self.raw_sqlite().await)
                .await
                .unwrap(),
            Engine::Postgres => sqlx::query_scalar(sql)
                .fetch_all(&mut connect_postgres(&self.url).await)
                .await
                .unwrap(),
        }
    }

    /// A byte string literal in this engine's SQL.
    pub fn bytes_literal(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self.engine {
            Engine::Sqlite => format!("X'{hex}'"),
            Engine::Postgres => format!("'\\x{hex}'::bytea"),
        }
    }

    async fn raw_sqlite(&self) -> SqliteConnection {
        let path = self.sqlite_path.as_ref().unwrap();
        SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap()
    }

    /// Every byte SQLite keeps on disk for this store (the file and its WAL).
    pub fn sqlite_file_bytes(&self) -> Vec<u8> {
        let path = self.sqlite_path.as_ref().unwrap();
        let mut bytes = std::fs::read(path).unwrap();
        for suffix in ["-wal", "-journal"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            if let Ok(more) = std::fs::read(PathBuf::from(name)) {
                bytes.extend(more);
            }
        }
        bytes
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Connects, waiting while a just-started server is still coming up.
pub async fn connect_postgres(url: &str) -> PgConnection {
    let start = Instant::now();
    loop {
        match PgConnection::connect(url).await {
            Ok(connection) => return connection,
            Err(error) if start.elapsed() < Duration::from_secs(30) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot connect to the test PostgreSQL: {error}"),
        }
    }
}

/// The URL with its database replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    format!("{scheme}://{authority}/{database}{query}")
}

pub struct PostgresServer {
    /// An administrative URL (its database exists; its user may create databases).
    pub url: String,
    /// Given by the operator rather than started here.
    pub external: bool,
    /// The throwaway cluster's shell and the pipe whose closing (at exit) stops it.
    _cluster: Option<Mutex<(Child, ChildStdin)>>,
}

/// The PostgreSQL tier's guard, first in every test on PostgreSQL: `STACKBOX_TEST_DATABASE_URL`,
/// or Debian's server to start a throwaway cluster from.
pub fn postgres_tier() -> bool {
    let tier = stackbox_testkit::Tier::new("postgresql");
    match std::env::var("STACKBOX_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => tier.ready(),
        _ => tier.postgresql().ready(),
    }
}

pub fn postgres_server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("STACKBOX_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => PostgresServer {
            url,
            external: true,
            _cluster: None,
        },
        _ => start_throwaway_cluster(),
    })
}

fn start_throwaway_cluster() -> PostgresServer {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .max()
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed: install the Debian package postgresql \
                 (apt-get install postgresql), or set STACKBOX_TEST_DATABASE_URL to a server"
            )
        });
    // PostgreSQL refuses to run as root: the cluster belongs to Debian's `postgres` user.
    let dir = tempfile::Builder::new()
        .prefix("stackbox-store-pg")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    run(Command::new("chown").arg("postgres:postgres").arg(&dir));
    let data = dir.join("data");
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The shell starts the server, then blocks reading its stdin, a pipe whose other end only
    // this process holds. When this process exits, normally or not, the read ends and the
    // shell stops the server (fast shutdown) and removes the folder.
    let script = r#"
        "$1" -D "$2" -k "$3" -p "$4" -c listen_addresses=127.0.0.1 \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
            -c max_connections=200 >"$3/postgres.log" 2>&1 &
        server=$!
        read -r _ignored
        kill -INT "$server"
        wait "$server"
        rm -rf "$3"
    "#;
    let mut shell = Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", script, "sh"])
        .arg(bin.join("postgres"))
        .arg(&data)
        .arg(&dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let keepalive = shell.stdin.take().unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) || shell.try_wait().unwrap().is_some() {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            panic!("the test PostgreSQL did not start:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    PostgresServer {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        external: false,
        _cluster: Some(Mutex::new((shell, keepalive))),
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    if !output.status.success() {
        let mut message = Vec::new();
        let _ = writeln!(message, "{command:?} failed ({}):", output.status);
        message.extend(output.stdout);
        message.extend(output.stderr);
        panic!("{}", String::from_utf8_lossy(&message));
    }
}

// -- Fixtures -----------------------------------------------------------------------------------

pub const PLANS: [&str; 3] = ["starter", "professional", "enterprise"];

/// A valid client configuration.
pub fn spec(company: &str, domain: &str, plan: &str) -> ClientSpec {
    ClientSpec::from_toml(&format!(
        "company_name = {company:?}\ndomain = {domain:?}\nplan = {plan:?}\n\
         admin_email = \"owner@example.com\"\nbrand_color = \"#003366\"\n"
    ))
    .unwrap()
}

/// The client id `<slug>-<n as 8 hex digits>`.
pub fn client_id(slug: &str, n: u32) -> ClientId {
    ClientId::parse(&format!("{slug}-{n:08x}")).unwrap()
}

/// Inserts client `client-<n>` with domain `client<n>.example.com`.
pub async fn add_client(store: &Store, n: u32, plan: &str, state: ClientState) -> ClientRecord {
    let id = client_id("client", n);
    store
        .insert_client(
            &id,
            &spec(
                &format!("Client {n}"),
                &format!("client{n}.example.com"),
                plan,
            ),
            state,
        )
        .await
        .unwrap()
}

pub fn assert_path_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let actual = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(actual, mode, "mode of {}", path.display());
}
