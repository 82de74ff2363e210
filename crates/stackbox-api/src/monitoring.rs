//! What the API sends about what the monitor sees: resource use per client and service.
//! Outputs only (they derive `Deserialize` for the CLI's `--server` mode and accept unknown
//! fields).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::time::Timestamp;

/// `GET /v1/clients/{id}/usage`: the client's resource use over a window, from the readings
/// the control plane keeps (a bounded ring per client; nothing older than `kept_seconds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientUsageView {
    #[schema(example = "smithrealestate-e11f059b")]
    pub client_id: String,
    /// The window asked for, in seconds.
    pub window_seconds: u64,
    /// Seconds between readings.
    pub interval_seconds: u64,
    /// How far back readings are kept at most.
    pub kept_seconds: u64,
    /// CPU cores in use, averaged over the window's points (1.0 = one core).
    pub cpu_cores_avg: f64,
    pub cpu_cores_max: f64,
    /// The highest memory working set (without page cache) in the window.
    pub memory_working_set_bytes_max: u64,
    /// Bytes in the client's volumes, as last measured (absent until measured, or when the
    /// engine's volumes are not on this host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    /// Oldest first.
    pub points: Vec<UsagePointView>,
    /// The latest reading of each running service.
    pub services: Vec<ServiceUsageView>,
    /// Bytes per volume, as last measured.
    pub volumes: BTreeMap<String, u64>,
}

/// One reading of a client, summed over its services; rates since the previous reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsagePointView {
    pub at: Timestamp,
    pub cpu_cores: f64,
    pub memory_working_set_bytes: u64,
    pub network_receive_bytes_per_second: f64,
    pub network_transmit_bytes_per_second: f64,
    pub block_read_bytes_per_second: f64,
    pub block_write_bytes_per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
}

/// A service's latest reading: counters since its container started, and its CPU rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceUsageView {
    #[schema(example = "nextcloud")]
    pub service: String,
    pub cpu_cores: f64,
    pub cpu_seconds_total: f64,
    pub memory_working_set_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    pub network_receive_bytes_total: u64,
    pub network_transmit_bytes_total: u64,
    pub block_read_bytes_total: u64,
    pub block_write_bytes_total: u64,
}

/// The per-client figures of `/metrics`: bounded labels only (client, service, volume: each
/// client has a fixed, small set of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientMetrics {
    pub client: String,
    /// The client's state's name (`running`, `degraded`, …).
    pub state: &'static str,
    /// Seconds since the client's last successful backup; `None` without one.
    pub last_backup_age_seconds: Option<f64>,
    pub services: Vec<ServiceUsageView>,
    pub volumes: BTreeMap<String, u64>,
    /// The latest probe from outside of each public hostname (none before the first round,
    /// or with probes off).
    pub probes: Vec<ProbeMetrics>,
}

/// One hostname's latest probe, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeMetrics {
    pub hostname: String,
    pub up: bool,
    pub duration_seconds: f64,
    /// Unix seconds the certificate presented stops being valid.
    pub certificate_expires_at: Option<i64>,
}

/// One alert: a condition the control plane saw for its hold time (`firing`), or one that
/// is over (`resolved`, kept as history). A condition still within its hold time is
/// `pending`: nothing was sent about it yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    #[schema(example = "alr_01HZX3V6Q9K2M4")]
    pub id: String,
    /// The condition's key: the same key is the same alert.
    #[schema(example = "memory-near-limit:smithrealestate-e11f059b:website")]
    pub key: String,
    /// `client-degraded`, `memory-near-limit`, `disk-near-full`, `backup-missing`,
    /// `backup-failed`, `mail-failing`, `restart-loop`, `certificate-expiring` or
    /// `signup-not-provisioned`.
    #[schema(example = "memory-near-limit")]
    pub kind: String,
    /// `pending`, `firing` or `resolved`.
    #[schema(example = "firing")]
    pub state: String,
    /// The client it is about; none for the host's and the control plane's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// What and how much, for people.
    pub summary: String,
    /// Since when the condition holds.
    pub since: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
}

/// `GET /v1/alerts`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
}

/// What `GET /v1/alerts` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertQuery {
    /// Only pending and firing alerts (the default); `false` adds resolved history.
    pub open_only: bool,
    /// Only this client's (a client token always gets only its own).
    pub client: Option<stackbox_core::client::ClientId>,
    /// At most this many (1 to 500, 100 by default).
    pub limit: u32,
}
