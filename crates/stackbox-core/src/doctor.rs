//! `stackbox doctor`, pure: the result of each check, the decisions that turn what the binary
//! found on the host into those results (address pools, open files, ingress ports, disk, images,
//! payment, mail and AWS settings), and the verdict.
//!
//! The binary probes (the engine, the file system, the store); everything here is inputs in,
//! results out. Every `warn` and `fail` carries a `fix`: one sentence that says what to do.

use std::fmt;

use serde::Serialize;

use crate::client::{ClientId, ClientSpec};
use crate::infra::{AwsSettings, ProviderKind};
use crate::onboarding::OnboardingSettings;
use crate::operator::{Ingress, OperatorConfig};
use crate::plan::{ImageKey, Plan, ServiceKind};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// A deploy works, but something is worth the operator's attention.
    Warn,
    /// Something blocks a deploy.
    Fail,
}

impl Status {
    pub fn key(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    /// The mark of the text output.
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
        }
    }
}

/// One check: its name, its status, one line of detail, and for `warn` and `fail` what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: one_line(detail.into()),
            fix: None,
        }
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: one_line(detail.into()),
            fix: Some(one_line(fix.into())),
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: one_line(detail.into()),
            fix: Some(one_line(fix.into())),
        }
    }

    /// `✓ name: detail`, or `✗ name: detail — fix: …`: the check on one line.
    pub fn line(&self) -> String {
        match &self.fix {
            Some(fix) => format!(
                "{} {}: {} — fix: {fix}",
                self.status.symbol(),
                self.name,
                self.detail
            ),
            None => format!("{} {}: {}", self.status.symbol(), self.name, self.detail),
        }
    }
}

/// Messages from adapters may span lines (an engine's error, a parser's); a check is one line.
fn one_line(text: String) -> String {
    if !text.contains(['\n', '\r']) {
        return text;
    }
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every check and the verdict: `ok` unless some check failed (warnings do not block a deploy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub ok: bool,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        let ok = checks.iter().all(|check| check.status != Status::Fail);
        Report { checks, ok }
    }

    /// The process's exit code: 1 when a check failed, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.ok {
            0
        } else {
            1
        }
    }

    /// How many checks came out with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// One line per check, then a summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&check.line());
            out.push('\n');
        }
        let (warnings, failures) = (self.count(Status::Warn), self.count(Status::Fail));
        let summary = if failures > 0 {
            format!(
                "{failures} check(s) failed and {warnings} warned: a deploy would fail until the \
                 failures are fixed"
            )
        } else if warnings > 0 {
            format!("ready to deploy, with {warnings} warning(s)")
        } else {
            "ready to deploy".to_string()
        };
        out.push_str(&summary);
        out.push('\n');
        out
    }
}

// -- The engine -------------------------------------------------------------------------------

/// The oldest Engine API StackBox speaks (Docker 20.10).
pub const MIN_API_VERSION: (u32, u32) = (1, 41);

/// What the engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineFacts {
    pub server_version: String,
    /// The highest API version the engine speaks (`1.41`).
    pub api_version: String,
    pub operating_system: String,
    /// Where the engine keeps images and volumes (`/var/lib/docker`).
    pub data_root: Option<String>,
    /// The daemon's `default-address-pools` as it reports them (base CIDR, size); empty when
    /// it reports none, which means libnetwork's built-in pools.
    pub address_pools: Vec<(String, i64)>,
}

/// `1.41` → (1, 41).
pub fn parse_api_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Whether the engine at `endpoint` answers, and speaks an API StackBox can use. `facts` is
/// the engine's answer, or why there is none.
pub fn engine_check(endpoint: &str, facts: Result<&EngineFacts, &str>) -> Check {
    const NAME: &str = "engine";
    let facts = match facts {
        Ok(facts) => facts,
        Err(problem) => {
            return Check::fail(
                NAME,
                format!("no Docker engine answers at {endpoint}: {problem}"),
                "start one (`systemctl start docker`, or `dockerd`) or point DOCKER_HOST at a \
                 running engine (unix:///var/run/docker.sock, tcp://HOST:2376)",
            )
        }
    };
    let detail = format!(
        "Docker Engine {} at {endpoint}, API {}{}",
        facts.server_version,
        facts.api_version,
        if facts.operating_system.is_empty() {
            String::new()
        } else {
            format!(" ({})", facts.operating_system)
        }
    );
    match parse_api_version(&facts.api_version) {
        Some(version) if version >= MIN_API_VERSION => Check::ok(NAME, detail),
        Some(_) => Check::fail(
            NAME,
            format!(
                "{detail}: older than API {}.{}",
                MIN_API_VERSION.0, MIN_API_VERSION.1
            ),
            "upgrade the engine to Docker 20.10 or later",
        ),
        None => Check::warn(
            NAME,
            format!("{detail}: the API version is not one StackBox can read"),
            "check that DOCKER_HOST points at a Docker Engine (Podman and others are untested)",
        ),
    }
}

// -- Address pools -----------------------------------------------------------------------------

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    /// The first address, host bits cleared.
    start: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n` (host bits are cleared); `None` for anything else, IPv6 included.
    pub fn parse(text: &str) -> Option<Ipv4Net> {
        let (address, prefix) = text.trim().split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        let octets: Vec<u8> = address
            .split('.')
            .map(|octet| octet.parse::<u8>().ok())
            .collect::<Option<_>>()?;
        let [a, b, c, d] = octets[..] else {
            return None;
        };
        let address = u32::from_be_bytes([a, b, c, d]);
        Some(Ipv4Net {
            start: address & mask(prefix),
            prefix,
        })
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// The last address, inclusive.
    fn end(self) -> u32 {
        self.start | !mask(self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.start.to_be_bytes();
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

/// One of the daemon's address pools: networks of prefix `size` carved out of `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    pub base: Ipv4Net,
    pub size: u8,
}

impl AddressPool {
    /// A pool as the daemon reports it; `None` for IPv6 pools and nonsense.
    pub fn parse(base: &str, size: i64) -> Option<AddressPool> {
        let base = Ipv4Net::parse(base)?;
        let size = u8::try_from(size).ok().filter(|s| *s <= 32)?;
        Some(AddressPool { base, size })
    }

    /// How many networks the pool holds (none when `size` is wider than the base).
    pub fn networks(&self) -> u64 {
        if self.size < self.base.prefix {
            0
        } else {
            1u64 << (self.size - self.base.prefix)
        }
    }
}

/// libnetwork's own pools, used when the daemon configures none: 172.17–31.0.0/16 as /16s and
/// 192.168.0.0/16 as /20s, 31 networks in all.
pub fn docker_builtin_pools() -> Vec<AddressPool> {
    let mut pools: Vec<AddressPool> = (17..=31)
        .map(|second| AddressPool {
            base: Ipv4Net {
                start: u32::from_be_bytes([172, second, 0, 0]),
                prefix: 16,
            },
            size: 16,
        })
        .collect();
    pools.push(AddressPool {
        base: Ipv4Net {
            start: u32::from_be_bytes([192, 168, 0, 0]),
            prefix: 16,
        },
        size: 20,
    });
    pools
}

/// Networks in the pools, and how many of them subnets already in use overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub total: u64,
    pub used: u64,
}

impl PoolUsage {
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.used)
    }
}

/// Counts the pools' networks and those that `in_use` subnets (of any size, from a pool or
/// given explicitly) overlap: a network the engine could still allocate overlaps none.
pub fn pool_usage(pools: &[AddressPool], in_use: &[Ipv4Net]) -> PoolUsage {
    let mut usage = PoolUsage { total: 0, used: 0 };
    for pool in pools {
        let networks = pool.networks();
        usage.total += networks;
        if networks == 0 {
            continue;
        }
        let block_bits = 32 - u32::from(pool.size);
        let (pool_start, pool_end) = (u64::from(pool.base.start), u64::from(pool.base.end()));
        // The blocks each subnet touches, as ranges of block indices, merged.
        let mut touched: Vec<(u64, u64)> = in_use
            .iter()
            .filter_map(|subnet| {
                let start = u64::from(subnet.start).max(pool_start);
                let end = u64::from(subnet.end()).min(pool_end);
                (start <= end).then(|| {
                    (
                        (start - pool_start) >> block_bits,
                        (end - pool_start) >> block_bits,
                    )
                })
            })
            .collect();
        touched.sort_unstable();
        let mut merged: Option<(u64, u64)> = None;
        for (low, high) in touched {
            match &mut merged {
                Some((_, last)) if low <= *last + 1 => *last = (*last).max(high),
                _ => {
                    if let Some((l, h)) = merged {
                        usage.used += h - l + 1;
                    }
                    merged = Some((low, high));
                }
            }
        }
        if let Some((l, h)) = merged {
            usage.used += h - l + 1;
        }
    }
    usage
}

/// Below this many clients' room, the address-pool check warns.
pub const POOL_WARN_CLIENTS: u64 = 50;

/// The most networks one client takes with these operator settings (every app on:
/// `web`, `data`, `mailtrain`, and `edge` in edge ingress).
pub fn networks_per_client(operator: &OperatorConfig) -> usize {
    let spec = ClientSpec::from_toml(
        "company_name = \"Pools\"\ndomain = \"pools.example\"\nplan = \"enterprise\"\n\
         admin_email = \"owner@pools.example\"\n",
    );
    let Ok(spec) = spec else {
        return 4;
    };
    let id = ClientId::new(&spec.company_name, 0);
    crate::stack::build(&spec, &id, operator).networks.len()
}

/// How many more clients the engine's address pools have room for. `pools` is what the
/// daemon reports (an empty list means libnetwork's built-in pools); `in_use` the subnets of
/// every network on the engine; `reserved` networks needed once besides the clients' (the edge
/// router's own, before it exists).
pub fn address_pool_check(
    reported: &[(String, i64)],
    in_use: &[String],
    per_client: usize,
    reserved: u64,
) -> Check {
    const NAME: &str = "address-pools";
    let fix = "give the daemon larger pools: set \"default-address-pools\": [{\"base\": \
               \"10.64.0.0/10\", \"size\": 24}] in /etc/docker/daemon.json (16,384 networks; pick \
               a range your LAN does not use) and restart dockerd";
    let (pools, origin) = if reported.is_empty() {
        (docker_builtin_pools(), "Docker's built-in pools")
    } else {
        (
            reported
                .iter()
                .filter_map(|(base, size)| AddressPool::parse(base, *size))
                .collect::<Vec<_>>(),
            "default-address-pools",
        )
    };
    let described = if reported.is_empty() {
        "172.17-31.0.0/16 as /16s, 192.168.0.0/16 as /20s".to_string()
    } else {
        reported
            .iter()
            .map(|(base, size)| format!("{base} as /{size}s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let subnets: Vec<Ipv4Net> = in_use.iter().filter_map(|s| Ipv4Net::parse(s)).collect();
    let usage = pool_usage(&pools, &subnets);
    let per_client = per_client.max(1) as u64;
    let clients = usage.free().saturating_sub(reserved) / per_client;
    let detail = format!(
        "{origin} ({described}): {} networks, {} in use, room for {clients} more client(s) at \
         {per_client} networks each",
        usage.total, usage.used
    );
    if clients < 1 {
        Check::fail(NAME, detail, fix)
    } else if clients < POOL_WARN_CLIENTS {
        Check::warn(NAME, detail, fix)
    } else {
        Check::ok(NAME, detail)
    }
}

// -- Open files --------------------------------------------------------------------------------

/// Whether the services that ask for a raised open-file limit get it. `daemon_limit` is the
/// local dockerd's hard limit when it could be read, `engine_local` whether the engine runs on
/// this host, `configured` the operator's `[host] max_open_files`, `requests` what services
/// ask for ([`crate::stack::open_files_requests`]).
pub fn open_files_check(
    daemon_limit: Option<u64>,
    engine_local: bool,
    configured: Option<u64>,
    requests: &[(ServiceKind, u64)],
) -> Check {
    const NAME: &str = "open-files";
    let asking = |above: u64| -> Vec<String> {
        requests
            .iter()
            .filter(|(_, asked)| *asked > above)
            .map(|(service, asked)| format!("{} (asks {asked})", service.name()))
            .collect()
    };
    let highest = requests.iter().map(|(_, asked)| *asked).max().unwrap_or(0);
    match (daemon_limit, configured) {
        (Some(limit), Some(cap)) => {
            let effective = highest.min(cap);
            if effective > limit {
                Check::fail(
                    NAME,
                    format!(
                        "[host] max_open_files = {cap} is above the local dockerd's hard limit \
                         of {limit}: {} cannot start",
                        asking(limit).join(" and ")
                    ),
                    format!(
                        "set [host] max_open_files to {limit} or lower, or raise dockerd's \
                         LimitNOFILE (its systemd unit) above {cap}"
                    ),
                )
            } else {
                let capped = asking(cap);
                Check::ok(
                    NAME,
                    if capped.is_empty() {
                        format!(
                            "the local dockerd allows {limit} open files; [host] max_open_files \
                             = {cap} caps no service"
                        )
                    } else {
                        format!(
                            "the local dockerd allows {limit} open files; [host] max_open_files \
                             = {cap} caps {}",
                            capped.join(" and ")
                        )
                    },
                )
            }
        }
        (Some(limit), None) => {
            let capped = asking(limit);
            if capped.is_empty() {
                Check::ok(
                    NAME,
                    format!(
                        "the local dockerd allows {limit} open files; every service gets what \
                         it asks for"
                    ),
                )
            } else {
                Check::warn(
                    NAME,
                    format!(
                        "the local dockerd allows {limit} open files per container: {} will be \
                         capped to {limit} at deploy",
                        capped.join(" and ")
                    ),
                    format!(
                        "raise dockerd's LimitNOFILE (its systemd unit) to at least {highest} to \
                         give them what they ask, or set [host] max_open_files to choose the cap \
                         and silence the deploy's warning"
                    ),
                )
            }
        }
        (None, Some(cap)) => Check::ok(
            NAME,
            format!(
                "[host] max_open_files = {cap}{}; the engine's own limit is not readable from here",
                match asking(cap) {
                    capped if capped.is_empty() => String::new(),
                    capped => format!(" caps {}", capped.join(" and ")),
                }
            ),
        ),
        (None, None) if !engine_local => Check::ok(
            NAME,
            format!(
                "the engine is not on this host, so its open-file limit is not read; services \
                 ask up to {highest} (if one fails with \"error setting rlimit type 7\", set \
                 [host] max_open_files)"
            ),
        ),
        (None, None) => Check::warn(
            NAME,
            format!(
                "the local dockerd's open-file limit could not be read (no dockerd process \
                 visible in /proc); services ask up to {highest}"
            ),
            "if a service fails to start with \"error setting rlimit type 7\", set [host] \
             max_open_files to dockerd's hard limit (`grep 'open files' /proc/$(pidof \
             dockerd)/limits` on the engine's host)",
        ),
    }
}

// -- Ingress ports -----------------------------------------------------------------------------

/// The edge router's (or host-ports Traefik's) two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPort {
    Http,
    Https,
}

impl IngressPort {
    /// The port this ingress publishes.
    pub fn port(self, ingress: &Ingress) -> u16 {
        let (http, https) = match ingress {
            Ingress::Edge { http, https, .. } | Ingress::HostPorts { http, https } => {
                (*http, *https)
            }
        };
        match self {
            IngressPort::Http => http,
            IngressPort::Https => https,
        }
    }

    fn setting(self) -> &'static str {
        match self {
            IngressPort::Http => "http_port",
            IngressPort::Https => "https_port",
        }
    }

    fn name(self) -> &'static str {
        match self {
            IngressPort::Http => "ingress-http",
            IngressPort::Https => "ingress-https",
        }
    }
}

/// A running container that publishes a host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    pub host_port: u16,
    pub container: String,
    /// Its `io.stackbox.client` label, for a client's container.
    pub client: Option<String>,
}

/// What binding the port on this host showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortProbe {
    /// Nothing holds it.
    Free,
    /// Something holds it.
    InUse,
    /// Not tried (a remote engine) or not conclusive (why).
    Untested(String),
}

/// Whether an ingress port is free or held by StackBox's own edge router. `holders` are the
/// running containers publishing any port, `probe` what binding the port here showed.
pub fn ingress_port_check(
    ingress: &Ingress,
    which: IngressPort,
    holders: &[PortHolder],
    probe: &PortProbe,
) -> Check {
    let port = which.port(ingress);
    let name = which.name();
    let setting = which.setting();
    let holder = holders.iter().find(|h| h.host_port == port);
    let move_it = format!("or set [ingress] {setting} in the operator file to a free port");
    match (ingress, holder) {
        (Ingress::Edge { router, .. }, Some(holder)) if &holder.container == router => Check::ok(
            name,
            format!("port {port} is held by StackBox's edge router {router}"),
        ),
        (
            Ingress::HostPorts { .. },
            Some(PortHolder {
                client: Some(client),
                container,
                ..
            }),
        ) => Check::warn(
            name,
            format!(
                "port {port} is held by {container}, client {client}'s Traefik: host-ports \
                 ingress takes one client per host, so no other client can deploy here"
            ),
            "switch to [ingress] mode = \"edge\" for several clients per host (one shared edge \
             router)",
        ),
        (_, Some(holder)) => Check::fail(
            name,
            format!(
                "port {port} is held by container {}{}",
                holder.container,
                match &holder.client {
                    Some(client) => format!(" of client {client}"),
                    None => String::new(),
                }
            ),
            format!(
                "stop or remove {} (`docker rm -f {0}`), {move_it}",
                holder.container
            ),
        ),
        (_, None) => match probe {
            PortProbe::Free => Check::ok(name, format!("port {port} is free")),
            PortProbe::InUse => Check::fail(
                name,
                format!("port {port} is held by a process on this host that is not a container"),
                format!("stop it (`ss -ltnp 'sport = :{port}'` shows which), {move_it}"),
            ),
            PortProbe::Untested(why) => Check::ok(
                name,
                format!("port {port} is published by no container ({why})"),
            ),
        },
    }
}

// -- Images ------------------------------------------------------------------------------------

/// Every image reference the operator's releases use, each with the catalog key and, for
/// images a later release brings, the release's name: (key, release, reference).
pub fn catalog_images(operator: &OperatorConfig) -> Vec<(ImageKey, Option<String>, String)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (release, catalog) in crate::release::release_catalogs(&operator.images, &operator.releases)
    {
        for (key, reference) in catalog.iter() {
            if seen.insert(reference.to_string()) {
                let release = (release != crate::release::BASE_RELEASE).then(|| release.clone());
                out.push((key, release, reference.to_string()));
            }
        }
    }
    out
}

/// Whether one catalog image is on the engine (`present`: the engine's answer, or why there is
/// none). A deploy pulls a missing image, which fails where no registry is reachable.
pub fn image_check(
    key: ImageKey,
    release: Option<&str>,
    reference: &str,
    present: Result<bool, String>,
) -> Check {
    let name = match release {
        Some(release) => format!("image:{}@{release}", key.key()),
        None => format!("image:{}", key.key()),
    };
    let provide = if reference.starts_with("stackbox-local/") {
        format!(
            "make the local pin once (`docker pull mailtrain/mailtrain:latest && docker tag \
             mailtrain/mailtrain:latest {reference}`), load it (`docker load -i IMAGE.tar`), or \
             map {} to an image the engine has in an --images override",
            key.key()
        )
    } else {
        format!(
            "pull it (`docker pull {reference}`) where a registry is reachable, load it \
             (`docker load -i IMAGE.tar`), or map {} to an image the engine has in an --images \
             override",
            key.key()
        )
    };
    match present {
        Ok(true) => Check::ok(name, format!("{reference} is on the engine")),
        Ok(false) => Check::fail(name, format!("{reference} is not on the engine"), provide),
        Err(problem) => Check::fail(
            name,
            format!("could not look {reference} up: {problem}"),
            "check that the engine answers (see the engine check)",
        ),
    }
}

// -- Disk --------------------------------------------------------------------------------------

/// Below this, the disk check warns.
pub const DISK_WARN_BYTES: u64 = 5 << 30;
/// Below this, the disk check fails.
pub const DISK_FAIL_BYTES: u64 = 1 << 30;

/// `68.2 GiB`, `512 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Free space where the engine keeps images and volumes. `free` is the free bytes there for
/// unprivileged use, or why they could not be read.
pub fn disk_check(data_root: &str, free: Result<u64, String>) -> Check {
    const NAME: &str = "disk";
    let free = match free {
        Ok(free) => free,
        Err(why) => {
            return Check::warn(
                NAME,
                format!("the free space of the engine's data root {data_root} is unknown: {why}"),
                format!("check it on the engine's host (`df -h {data_root}`): images and volumes need a few GiB"),
            )
        }
    };
    let detail = format!(
        "{} free in the engine's data root {data_root}",
        human_bytes(free)
    );
    let fix = format!(
        "free space on the file system of {data_root} (`docker system prune` removes stopped \
         containers and unused images; check `docker system df`), or move the engine's \
         data-root to a larger disk"
    );
    if free < DISK_FAIL_BYTES {
        Check::fail(NAME, format!("{detail}, under 1 GiB"), fix)
    } else if free < DISK_WARN_BYTES {
        Check::warn(NAME, format!("{detail}, under 5 GiB"), fix)
    } else {
        Check::ok(NAME, detail)
    }
}

// -- Settings ----------------------------------------------------------------------------------

/// `scheme://host:port[/path]` of a URL: no user name, password or query, which may hold
/// secrets.
pub fn url_without_secrets(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_string();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

/// Stripe (payments): complete when set; a warning when sign-ups would get no e-mail.
pub fn stripe_check(settings: &OnboardingSettings) -> Check {
    const NAME: &str = "stripe";
    let Some(stripe) = &settings.stripe else {
        return Check::ok(
            NAME,
            "not configured: sign-ups (POST /v1/signup) answer 404 (set STACKBOX_STRIPE_SECRET_KEY \
             and the rest to take payments)",
        );
    };
    let key = stripe.secret_key.expose();
    let mode = if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
        "test mode"
    } else if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
        "live mode"
    } else {
        return Check::warn(
            NAME,
            "STACKBOX_STRIPE_SECRET_KEY does not look like a Stripe API key (sk_… or rk_…)",
            "copy the secret or restricted key from Stripe's dashboard (Developers → API keys)",
        );
    };
    if !stripe.webhook_secret.expose().starts_with("whsec_") {
        return Check::warn(
            NAME,
            "STACKBOX_STRIPE_WEBHOOK_SECRET does not look like a webhook signing secret \
             (whsec_…): every webhook would be refused",
            "copy the endpoint's signing secret from Stripe's dashboard (Developers → Webhooks)",
        );
    }
    let priced: Vec<&str> = stripe.prices.keys().map(|plan| plan.key()).collect();
    let unpriced: Vec<&str> = Plan::ALL
        .into_iter()
        .filter(|plan| !stripe.prices.contains_key(plan))
        .map(Plan::key)
        .collect();
    let mut detail = format!(
        "{mode} at {}, prices for {}",
        url_without_secrets(&stripe.api_base),
        priced.join(", ")
    );
    if !unpriced.is_empty() {
        detail.push_str(&format!(" ({} not for sale)", unpriced.join(", ")));
    }
    if settings.mail.is_none() {
        return Check::warn(
            NAME,
            format!("{detail}; no SMTP server, so paid clients get no welcome e-mail with their credentials link"),
            "set STACKBOX_SMTP_URL and STACKBOX_MAIL_FROM (or [onboarding] smtp_url and mail_from)",
        );
    }
    Check::ok(NAME, detail)
}

/// SMTP (mail): complete when set; a warning when links in e-mails would have no public URL.
pub fn smtp_check(settings: &OnboardingSettings) -> Check {
    const NAME: &str = "smtp";
    let Some(mail) = &settings.mail else {
        return Check::ok(
            NAME,
            "not configured: no e-mail is sent (welcome, payment and suspension notices)",
        );
    };
    let server = url_without_secrets(mail.smtp_url.expose());
    let detail = format!("from {} through {server}", mail.from.as_str());
    if settings.public_url.is_none() {
        return Check::warn(
            NAME,
            format!(
                "{detail}; no public URL, so the credentials links in e-mails point at serve's \
                 listen address"
            ),
            "set STACKBOX_PUBLIC_URL (or [onboarding] public_url) to where people reach this \
             server, e.g. https://stackbox.operator.example",
        );
    }
    Check::ok(NAME, detail)
}

/// The AWS provider's settings: complete when set (or when `aws` is the default provider), and
/// a binary that can use them. `built_with_aws`: whether this binary has the `aws` feature.
pub fn aws_check(provider: ProviderKind, aws: &AwsSettings, built_with_aws: bool) -> Check {
    const NAME: &str = "aws";
    let given = *aws != AwsSettings::default();
    let default_aws = provider == ProviderKind::Aws;
    if !given && !default_aws {
        return Check::ok(
            NAME,
            "not configured: every client runs on the local engine ([aws] is needed for clients \
             with infrastructure = \"aws\")",
        );
    }
    if let Err(error) = aws.check_complete(None) {
        let detail = format!("[aws] is incomplete: {error}");
        let fix = "complete [aws] in the operator file (README, \"The AWS provider\")";
        return if default_aws {
            Check::fail(NAME, detail, fix)
        } else {
            Check::warn(
                NAME,
                format!("{detail}; a client with infrastructure = \"aws\" would fail"),
                fix,
            )
        };
    }
    if !built_with_aws {
        let detail = "[aws] is set, but this stackbox was built without AWS support";
        let fix = "build it with `cargo build --release --features aws`";
        return if default_aws {
            Check::fail(NAME, detail, fix)
        } else {
            Check::warn(
                NAME,
                format!("{detail}: a client with infrastructure = \"aws\" would fail"),
                fix,
            )
        };
    }
    let mut parts = vec![format!(
        "region {}",
        aws.region.as_deref().unwrap_or("from the environment")
    )];
    if let Some(instance) = &aws.shared_db_instance {
        parts.push(format!("shared database instance {instance}"));
    }
    Check::ok(
        NAME,
        format!(
            "complete ({}){}",
            parts.join(", "),
            if default_aws {
                "; aws is the default provider"
            } else {
                ""
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn net(text: &str) -> Ipv4Net {
        Ipv4Net::parse(text).unwrap()
    }

    fn pool(base: &str, size: i64) -> (String, i64) {
        (base.to_string(), size)
    }

    #[test]
    fn ipv4_networks_parse_clear_host_bits_and_refuse_ipv6_and_nonsense() {
        assert_eq!(net("10.64.0.0/10").to_string(), "10.64.0.0/10");
        assert_eq!(net("10.64.3.7/24").to_string(), "10.64.3.0/24");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in [
            "fd00::/8",
            "10.0.0.0",
            "10.0.0/24",
            "10.0.0.0/33",
            "300.0.0.0/8",
            "",
        ] {
            assert_eq!(Ipv4Net::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_pool_holds_two_to_the_difference_of_its_prefixes_and_none_when_size_is_wider() {
        assert_eq!(
            AddressPool::parse("10.64.0.0/10", 24).unwrap().networks(),
            16_384
        );
        assert_eq!(
            AddressPool::parse("172.17.0.0/16", 16).unwrap().networks(),
            1
        );
        assert_eq!(AddressPool::parse("10.0.0.0/24", 16).unwrap().networks(), 0);
        assert_eq!(AddressPool::parse("fd00::/8", 64), None);
        assert_eq!(AddressPool::parse("10.0.0.0/8", -1), None);
    }

    #[test]
    fn docker_builtin_pools_hold_thirty_one_networks() {
        let pools = docker_builtin_pools();
        assert_eq!(pool_usage(&pools, &[]).total, 31);
        // The default bridge takes 172.17.0.0/16: one of them.
        assert_eq!(pool_usage(&pools, &[net("172.17.0.0/16")]).used, 1);
    }

    #[test]
    fn subnets_in_use_count_once_per_block_they_touch_and_outside_subnets_not_at_all() {
        let pools = [AddressPool::parse("10.64.0.0/22", 24).unwrap()]; // 4 blocks
        let usage = pool_usage(
            &pools,
            &[
                net("10.64.0.0/24"),
                net("10.64.0.128/25"), // inside a block already counted
                net("10.64.2.0/23"),   // two blocks at once
                net("192.168.1.0/24"), // not in the pool
            ],
        );
        assert_eq!(usage, PoolUsage { total: 4, used: 3 });
        assert_eq!(usage.free(), 1);
        // A subnet wider than the pool uses all of it.
        assert_eq!(pool_usage(&pools, &[net("10.0.0.0/8")]).used, 4);
    }

    #[test]
    fn a_pool_that_fits_two_networks_has_no_room_for_a_client_of_four_networks() {
        let check = address_pool_check(&[pool("10.99.0.0/23", 24)], &[], 4, 0);
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert!(check.detail.contains("2 networks"), "{}", check.detail);
        assert!(check.detail.contains("room for 0 more"), "{}", check.detail);
        assert!(
            check
                .fix
                .as_deref()
                .unwrap()
                .contains("default-address-pools"),
            "{check:?}"
        );
    }

    #[test]
    fn the_pool_check_warns_under_fifty_clients_and_counts_the_edge_routers_network() {
        // 16 /24s in a /20: four clients of 4 networks, or three once the edge router's
        // network and one network in use are taken.
        let check = address_pool_check(&[pool("10.99.0.0/20", 24)], &[], 4, 0);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("room for 4 more"), "{}", check.detail);
        let check = address_pool_check(
            &[pool("10.99.0.0/20", 24)],
            &["10.99.0.0/24".to_string(), "fd00::/64".to_string()],
            4,
            1,
        );
        assert!(check.detail.contains("1 in use"), "{}", check.detail);
        assert!(check.detail.contains("room for 3 more"), "{}", check.detail);
        // A /10 in /24s is 16,384 networks: thousands of clients.
        let check = address_pool_check(
            &[pool("10.64.0.0/10", 24)],
            &["10.64.0.0/24".to_string()],
            4,
            1,
        );
        assert_eq!(check.status, Status::Ok, "{check:?}");
        assert!(
            check.detail.contains("room for 4095 more"),
            "{}",
            check.detail
        );
        assert_eq!(check.fix, None);
    }

    #[test]
    fn without_reported_pools_the_check_uses_dockers_builtin_ones_and_warns() {
        let check = address_pool_check(&[], &["172.17.0.0/16".to_string()], 4, 1);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("built-in"), "{}", check.detail);
        assert!(
            check.detail.contains("31 networks, 1 in use"),
            "{}",
            check.detail
        );
        assert!(check.detail.contains("room for 7 more"), "{}", check.detail);
    }

    #[test]
    fn a_client_takes_four_networks_with_the_edge_router_and_three_with_host_ports() {
        let mut operator = OperatorConfig::default();
        assert_eq!(networks_per_client(&operator), 4);
        operator.ingress = Ingress::HostPorts {
            http: 80,
            https: 443,
        };
        assert_eq!(networks_per_client(&operator), 3);
    }

    #[test]
    fn the_verdict_fails_only_on_a_failed_check_and_exits_one() {
        let warned = Report::new(vec![
            Check::ok("a", "fine"),
            Check::warn("b", "hm", "do this"),
        ]);
        assert!(warned.ok);
        assert_eq!(warned.exit_code(), 0);
        assert!(warned.text().contains("ready to deploy, with 1 warning"));
        let failed = Report::new(vec![
            Check::ok("a", "fine"),
            Check::fail("c", "broken", "mend it"),
        ]);
        assert!(!failed.ok);
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(failed.count(Status::Fail), 1);
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["status"], "fail");
        assert_eq!(json["checks"][1]["fix"], "mend it");
        assert!(json["checks"][0].get("fix").is_none());
    }

    #[test]
    fn a_check_is_one_line_with_its_mark_and_fix() {
        let check = Check::fail("engine", "down\nreally\n", "start it");
        assert_eq!(check.line(), "✗ engine: down; really — fix: start it");
        assert_eq!(Check::ok("disk", "plenty").line(), "✓ disk: plenty");
        assert_eq!(Check::warn("x", "y", "z").line(), "! x: y — fix: z");
    }

    #[test]
    fn the_engine_check_names_the_endpoint_and_the_fix_and_refuses_old_apis() {
        let down = engine_check("unix:///nonexistent.sock", Err("No such file or directory"));
        assert_eq!(down.status, Status::Fail);
        assert!(down.detail.contains("unix:///nonexistent.sock"));
        assert!(down.fix.unwrap().contains("DOCKER_HOST"));
        let facts = EngineFacts {
            server_version: "20.10.24".into(),
            api_version: "1.41".into(),
            operating_system: "Debian GNU/Linux 12".into(),
            ..EngineFacts::default()
        };
        let up = engine_check("unix:///var/run/docker.sock", Ok(&facts));
        assert_eq!(up.status, Status::Ok, "{up:?}");
        assert!(up.detail.contains("API 1.41"), "{}", up.detail);
        let old = EngineFacts {
            api_version: "1.40".into(),
            ..facts
        };
        assert_eq!(
            engine_check("unix:///var/run/docker.sock", Ok(&old)).status,
            Status::Fail
        );
    }

    const REQUESTS: [(ServiceKind, u64); 2] = [
        (ServiceKind::PlausibleEventsDb, 262_144),
        (ServiceKind::Plausible, 65_535),
    ];

    #[test]
    fn open_files_below_the_requests_warn_that_services_are_capped_and_a_cap_above_fails() {
        let capped = open_files_check(Some(20_000), true, None, &REQUESTS);
        assert_eq!(capped.status, Status::Warn, "{capped:?}");
        assert!(capped.detail.contains("allows 20000"), "{}", capped.detail);
        assert!(capped.detail.contains("(asks 262144)"), "{}", capped.detail);
        assert!(capped.fix.unwrap().contains("max_open_files"));

        let roomy = open_files_check(Some(1 << 20), true, None, &REQUESTS);
        assert_eq!(roomy.status, Status::Ok, "{roomy:?}");

        let chosen = open_files_check(Some(20_000), true, Some(10_000), &REQUESTS);
        assert_eq!(chosen.status, Status::Ok, "{chosen:?}");
        assert!(chosen.detail.contains("max_open_files = 10000 caps"));

        let too_high = open_files_check(Some(20_000), true, Some(100_000), &REQUESTS);
        assert_eq!(too_high.status, Status::Fail, "{too_high:?}");
        assert!(too_high.fix.unwrap().contains("20000 or lower"));

        let remote = open_files_check(None, false, None, &REQUESTS);
        assert_eq!(remote.status, Status::Ok);
        let unreadable = open_files_check(None, true, None, &REQUESTS);
        assert_eq!(unreadable.status, Status::Warn);
    }

    fn edge() -> Ingress {
        Ingress::Edge {
            router: "stackbox-edge".into(),
            http: 80,
            https: 443,
        }
    }

    fn holder(port: u16, container: &str, client: Option<&str>) -> PortHolder {
        PortHolder {
            host_port: port,
            container: container.into(),
            client: client.map(String::from),
        }
    }

    #[test]
    fn an_ingress_port_held_by_the_edge_router_is_fine_and_by_anything_else_fails() {
        let ours = ingress_port_check(
            &edge(),
            IngressPort::Http,
            &[holder(80, "stackbox-edge", None)],
            &PortProbe::InUse,
        );
        assert_eq!(ours.status, Status::Ok, "{ours:?}");
        assert!(ours.detail.contains("edge router"));

        let foreign = ingress_port_check(
            &edge(),
            IngressPort::Https,
            &[
                holder(80, "stackbox-edge", None),
                holder(443, "caddy", None),
            ],
            &PortProbe::InUse,
        );
        assert_eq!(foreign.status, Status::Fail);
        assert!(foreign.detail.contains("443") && foreign.detail.contains("caddy"));
        assert!(foreign.fix.unwrap().contains("https_port"));

        let process = ingress_port_check(&edge(), IngressPort::Http, &[], &PortProbe::InUse);
        assert_eq!(process.status, Status::Fail);
        assert!(process.fix.unwrap().contains("http_port"));

        let free = ingress_port_check(&edge(), IngressPort::Http, &[], &PortProbe::Free);
        assert_eq!(free.status, Status::Ok);
        assert_eq!(free.detail, "port 80 is free");

        let host_ports = Ingress::HostPorts {
            http: 8080,
            https: 8443,
        };
        let taken = ingress_port_check(
            &host_ports,
            IngressPort::Http,
            &[holder(
                8080,
                "acme-1234abcd-traefik-1",
                Some("acme-1234abcd"),
            )],
            &PortProbe::InUse,
        );
        assert_eq!(taken.status, Status::Warn, "{taken:?}");
        assert!(taken.detail.contains("acme-1234abcd"));
    }

    #[test]
    fn a_missing_image_fails_naming_it_and_the_local_mailtrain_pin_gets_its_recipe() {
        let absent = image_check(ImageKey::Mysql, None, "registry.invalid/nope:1", Ok(false));
        assert_eq!(absent.name, "image:mysql");
        assert_eq!(absent.status, Status::Fail);
        assert!(absent.detail.contains("registry.invalid/nope:1"));
        let fix = absent.fix.unwrap();
        assert!(
            fix.contains("docker load") && fix.contains("--images"),
            "{fix}"
        );
        let mailtrain = image_check(
            ImageKey::Mailtrain,
            Some("2027.01"),
            "stackbox-local/mailtrain:v2",
            Ok(false),
        );
        assert_eq!(mailtrain.name, "image:mailtrain@2027.01");
        assert!(mailtrain.fix.unwrap().contains("docker tag"));
        let present = image_check(ImageKey::Nginx, None, "nginx:1.30-alpine", Ok(true));
        assert_eq!(present.status, Status::Ok);
    }

    #[test]
    fn catalog_images_lists_every_base_image_once_and_only_what_releases_change() {
        let operator = OperatorConfig::from_toml(
            "[[releases]]\nname = \"2027.01\"\nimages = { nextcloud = \"nextcloud:35-apache\" }\n",
            "stackbox.toml",
        )
        .unwrap();
        let images = catalog_images(&operator);
        assert_eq!(images.len(), ImageKey::ALL.len() + 1);
        assert!(images.contains(&(
            ImageKey::Nextcloud,
            Some("2027.01".to_string()),
            "nextcloud:35-apache".to_string()
        )));
    }

    #[test]
    fn disk_warns_under_five_gib_and_fails_under_one() {
        assert_eq!(
            disk_check("/var/lib/docker", Ok(68 << 30)).status,
            Status::Ok
        );
        let low = disk_check("/var/lib/docker", Ok(3 << 30));
        assert_eq!(low.status, Status::Warn);
        assert!(low.detail.contains("3.0 GiB"), "{}", low.detail);
        let full = disk_check("/var/lib/docker", Ok(200 << 20));
        assert_eq!(full.status, Status::Fail);
        assert!(full.fix.unwrap().contains("docker system prune"));
        assert_eq!(
            disk_check("/var/lib/docker", Err("remote".into())).status,
            Status::Warn
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn urls_are_shown_without_user_password_or_query() {
        assert_eq!(
            url_without_secrets("smtp://user:hunter2@mail.example.com:587?tls=required"),
            "smtp://mail.example.com:587"
        );
        assert_eq!(
            url_without_secrets("postgres://sb:pw@db.internal:5432/stackbox?password=x"),
            "postgres://db.internal:5432/stackbox"
        );
        assert_eq!(url_without_secrets("nonsense"), "(not a URL)");
    }

    fn onboarding(env: &[(&str, &str)]) -> OnboardingSettings {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OnboardingSettings::resolve(Default::default(), &|name| env.get(name).cloned()).unwrap()
    }

    #[test]
    fn payment_and_mail_settings_are_reported_without_their_secrets() {
        let none = onboarding(&[]);
        assert_eq!(stripe_check(&none).status, Status::Ok);
        assert_eq!(smtp_check(&none).status, Status::Ok);

        let stripe_only = onboarding(&[
            ("STACKBOX_STRIPE_SECRET_KEY", "sk_test_SECRETVALUE"),
            ("STACKBOX_STRIPE_WEBHOOK_SECRET", "whsec_SECRETVALUE"),
            ("STACKBOX_STRIPE_PRICE_STARTER", "price_1"),
            ("STACKBOX_PUBLIC_URL", "https://stackbox.example"),
        ]);
        let check = stripe_check(&stripe_only);
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(check.detail.contains("test mode"), "{}", check.detail);
        assert!(check
            .detail
            .contains("professional, enterprise not for sale"));
        assert!(check.fix.as_deref().unwrap().contains("STACKBOX_SMTP_URL"));

        let everything = onboarding(&[
            ("STACKBOX_STRIPE_SECRET_KEY", "sk_live_SECRETVALUE"),
            ("STACKBOX_STRIPE_WEBHOOK_SECRET", "whsec_SECRETVALUE"),
            ("STACKBOX_STRIPE_PRICE_STARTER", "price_1"),
            (
                "STACKBOX_SMTP_URL",
                "smtp://user:SECRETVALUE@mail.example.com:587",
            ),
            ("STACKBOX_MAIL_FROM", "hello@operator.example"),
            ("STACKBOX_PUBLIC_URL", "https://stackbox.example"),
        ]);
        let stripe = stripe_check(&everything);
        let smtp = smtp_check(&everything);
        assert_eq!(stripe.status, Status::Ok, "{stripe:?}");
        assert_eq!(smtp.status, Status::Ok, "{smtp:?}");
        assert_eq!(
            smtp.detail,
            "from hello@operator.example through smtp://mail.example.com:587"
        );
        for check in [stripe, smtp] {
            assert!(!check.line().contains("SECRETVALUE"), "{}", check.line());
        }

        let bad_key = onboarding(&[
            ("STACKBOX_STRIPE_SECRET_KEY", "pk_live_public"),
            ("STACKBOX_STRIPE_WEBHOOK_SECRET", "whsec_x"),
            ("STACKBOX_STRIPE_PRICE_STARTER", "price_1"),
            ("STACKBOX_PUBLIC_URL", "https://stackbox.example"),
        ]);
        assert_eq!(stripe_check(&bad_key).status, Status::Warn);

        let no_public_url = onboarding(&[
            ("STACKBOX_SMTP_URL", "smtp://mail.example.com:25"),
            ("STACKBOX_MAIL_FROM", "hello@operator.example"),
        ]);
        let check = smtp_check(&no_public_url);
        assert_eq!(check.status, Status::Warn);
        assert!(check.fix.unwrap().contains("STACKBOX_PUBLIC_URL"));
    }

    #[test]
    fn aws_settings_are_checked_only_when_given_and_fail_when_aws_is_the_default() {
        let defaults = AwsSettings::default();
        assert_eq!(
            aws_check(ProviderKind::Local, &defaults, false).status,
            Status::Ok
        );
        let partial = AwsSettings {
            region: Some("eu-west-1".into()),
            ..AwsSettings::default()
        };
        let check = aws_check(ProviderKind::Local, &partial, true);
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(
            check.detail.contains("aws.listener_arn"),
            "{}",
            check.detail
        );
        assert_eq!(
            aws_check(ProviderKind::Aws, &partial, true).status,
            Status::Fail
        );
        let operator = OperatorConfig::from_toml(
            "[aws]\nregion = \"eu-west-1\"\nlistener_arn = \
             \"arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shared/50dc6c495c0c9188/f2f7dc8efc522ab2\"\n\
             vpc_id = \"vpc-0123456789abcdef0\"\ntarget = \"10.0.1.5\"\n\
             shared_db_instance = \"stackbox-shared-1\"\n\
             shared_db_master_secret = \"stackbox/shared-db-master\"\n",
            "stackbox.toml",
        )
        .unwrap();
        let complete = aws_check(ProviderKind::Local, &operator.aws, true);
        assert_eq!(complete.status, Status::Ok, "{complete:?}");
        assert!(complete.detail.contains("stackbox-shared-1"));
        let unbuilt = aws_check(ProviderKind::Local, &operator.aws, false);
        assert_eq!(unbuilt.status, Status::Warn);
        assert!(unbuilt.fix.unwrap().contains("--features aws"));
    }
}
