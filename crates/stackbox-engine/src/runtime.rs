//! The small trait the lifecycle operations need from a container engine.
//!
//! [`crate::DockerRuntime`] implements it against a Docker engine (one host); a Swarm
//! runtime for multi-host operators implements the same calls with services instead of
//! containers. Every call is idempotent where the engine allows it: removing what is gone,
//! creating a network that exists or connecting what is connected is not an error.

use stackbox_core::client::ClientId;
use stackbox_core::deploy::{
    ContainerConfig, ContainerState, DesiredNetwork, DesiredVolume, Health, Observed,
    ObservedContainer,
};
use stackbox_core::stack::Healthcheck;

use crate::EngineError;

/// The result of running a service's health-check command once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub passed: bool,
    /// What the command printed (trimmed), for failure reports.
    pub output: String,
}

/// A container's live state, as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDetails {
    pub state: ContainerState,
    pub exit_code: Option<i64>,
    pub health: Option<Health>,
    pub restart_count: u64,
    /// The `com.docker.compose.config-hash` label.
    pub config_hash: Option<String>,
    /// The engine's own last health-check outputs, newest last.
    pub health_log: Vec<String>,
    /// The health check the container was created with.
    pub healthcheck: Option<stackbox_core::stack::Healthcheck>,
}

/// How a command run with [`ContainerRuntime::exec_streaming`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: Option<i64>,
    /// Bytes written to the sink (standard output).
    pub stdout_bytes: u64,
    /// The command's standard error, at most its first 8 KiB, for messages.
    pub stderr: String,
}

impl ExecOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// How [`ContainerRuntime::exec_as`] runs a command: as which user, in which directory, with
/// which extra environment. An app's own command line may read a password from that
/// environment (Nextcloud's `OC_PASS`): its values are never logged, and the engine keeps no
/// record of them (an exec's inspect shows its arguments and user only).
#[derive(Clone, Copy, Default)]
pub struct ExecOptions<'a> {
    /// As `docker exec --user` takes it (`www-data`, `33`, `33:33`); the image's user when
    /// `None`.
    pub user: Option<&'a str>,
    /// The image's working directory when `None`.
    pub working_dir: Option<&'a str>,
    /// `NAME`, value pairs added to the container's environment for this command only.
    pub env: &'a [(String, String)],
}

impl std::fmt::Debug for ExecOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOptions")
            .field("user", &self.user)
            .field("working_dir", &self.working_dir)
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Which of a container's output streams a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a container's log, as the app wrote it (without its line end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: LogStream,
    /// The engine's RFC 3339 timestamp of the line (nanoseconds, UTC).
    pub time: String,
    pub line: String,
}

/// What [`ContainerRuntime::logs`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only lines from this Unix second on.
    pub since: Option<i64>,
    /// Only the last this many lines (before following).
    pub tail: Option<u32>,
    /// Keep the stream open for new lines until the container stops.
    pub follow: bool,
}

/// A container's log lines as they are read.
pub type LogEntries =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogEntry, EngineError>> + Send>>;

/// Where a streamed command's standard output goes.
pub type ExecSink<'a> = &'a mut (dyn tokio::io::AsyncWrite + Unpin);
/// Where a streamed command's standard input comes from.
pub type ExecSource<'a> = &'a mut (dyn tokio::io::AsyncRead + Unpin);

/// What the lifecycle needs from an engine.
#[allow(async_fn_in_trait)] // used with static dispatch only, on one task
pub trait ContainerRuntime {
    /// Where the engine is, for messages (`unix:///var/run/docker.sock`).
    fn endpoint(&self) -> &str;

    /// Everything of one client: containers (all states), networks and volumes, by label.
    async fn observe(&self, client: &ClientId) -> Result<Observed, EngineError>;
    /// Every StackBox client container on the engine, in one query: (client id, container).
    async fn list_client_containers(
        &self,
        client: Option<&ClientId>,
    ) -> Result<Vec<(String, ObservedContainer)>, EngineError>;

    /// Makes sure the image is present, pulling it if the engine can; the error says how to
    /// provide it otherwise.
    async fn ensure_image(&self, image: &str) -> Result<(), EngineError>;

    async fn create_network(&self, network: &DesiredNetwork) -> Result<(), EngineError>;
    async fn remove_network(&self, name: &str) -> Result<(), EngineError>;
    /// Attaches a container to a network under these DNS aliases (none: only its name).
    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<(), EngineError>;
    async fn disconnect_network(&self, network: &str, container: &str) -> Result<(), EngineError>;
    async fn create_volume(&self, volume: &DesiredVolume) -> Result<(), EngineError>;
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError>;

    /// Creates the container (attached to all its networks), not started; returns its id.
    async fn create_container(&self, config: &ContainerConfig) -> Result<String, EngineError>;
    async fn start_container(&self, id: &str) -> Result<(), EngineError>;
    /// Stops the container, giving it the stop timeout it was created with (the service's
    /// grace period) before the engine kills it.
    async fn stop_container(&self, id: &str) -> Result<(), EngineError>;
    /// Removes the container, running or not (anonymous volumes with it; named volumes stay).
    async fn remove_container(&self, id: &str) -> Result<(), EngineError>;
    async fn rename_container(&self, id: &str, name: &str) -> Result<(), EngineError>;
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, EngineError>;
    /// Runs the health-check command inside the container once.
    async fn probe(&self, id: &str, check: &Healthcheck) -> Result<Probe, EngineError>;
    /// The last lines of the container's log.
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError>;
    /// The container's log (standard output and error, timestamped) line by line; with
    /// `follow`, the stream stays open until the container stops or it is dropped.
    fn logs(&self, id: &str, options: LogOptions) -> LogEntries;

    /// Runs a command inside a running container (no TTY): its standard output is streamed
    /// into `output` as it comes, `input` (when given) is streamed to its standard input and
    /// then closed. Backups dump and load databases with it, beside the running services.
    async fn exec_streaming(
        &self,
        id: &str,
        command: &[String],
        input: Option<ExecSource<'_>>,
        output: ExecSink<'_>,
    ) -> Result<ExecOutcome, EngineError>;

    /// [`ContainerRuntime::exec_streaming`] as another user, in another directory or with
    /// extra environment: an app's own command line run the way its image documents it
    /// (`docker exec --user www-data … php occ …`), such as the admin password reset.
    async fn exec_as(
        &self,
        id: &str,
        command: &[String],
        options: ExecOptions<'_>,
        input: Option<ExecSource<'_>>,
        output: ExecSink<'_>,
    ) -> Result<ExecOutcome, EngineError>;

    /// One environment variable of a container as it was created (`None` when it has none
    /// of that name). Only for handing a replaced database's previous superuser password to
    /// its replacement; never logged.
    async fn container_env(&self, id: &str, name: &str) -> Result<Option<String>, EngineError>;

    /// Where a named volume's files are on the engine's host (`None` when it does not exist).
    async fn volume_mountpoint(&self, name: &str) -> Result<Option<String>, EngineError>;

    /// One reading of a running container's counters (CPU time, memory working set,
    /// network and block I/O), without waiting for a second reading (the engine's
    /// `one-shot`): the usage collector turns consecutive readings into rates itself.
    /// `host_memory` is the engine host's memory, so that "no limit" is not read as one.
    async fn container_stats(
        &self,
        id: &str,
        service: &str,
        host_memory: Option<u64>,
    ) -> Result<stackbox_core::usage::ContainerSample, EngineError>;
}
