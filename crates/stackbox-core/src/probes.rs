//! Probes from outside: each running client's public hostnames fetched through the edge on
//! an interval, as a visitor's browser would (TLS with the hostname's SNI, `GET /` with its
//! Host). Pure: the settings, what counts as up, and the book of results that says which
//! hostname has failed how many times in a row and when each certificate expires. The
//! control plane sends the requests and keeps the book.
//!
//! Why "in a row": one lost request is the network, not an incident; `failures` consecutive
//! failures of one hostname make its client degraded, with the hostname and the last
//! problem as the reason, until a probe of it succeeds again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::client::ClientId;
use crate::CoreError;

/// The operator file's `[probes]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeSettings {
    /// Whether `serve` probes at all (`enabled`, on).
    pub enabled: bool,
    /// Seconds between two probes of one hostname (`every`, 60 s).
    pub every_seconds: u64,
    /// A probe that has no answer in this time failed (`timeout`, 10 s).
    pub timeout_seconds: u64,
    /// Consecutive failures of one hostname that make its client degraded (`failures`, 3).
    pub failures: u32,
    /// Where the probes connect (`via`, `host:port`): the edge's HTTPS port on this host
    /// when unset. The hostname still goes in SNI and Host, so the edge routes as for a
    /// visitor; DNS is not asked (a probe checks the stack, not the client's DNS records).
    pub via: Option<String>,
    /// Extra trusted roots, PEM (`ca_file`): for a private ACME server (Pebble, an internal
    /// CA). The public web's roots are always trusted.
    pub ca_file: Option<String>,
}

impl Default for ProbeSettings {
    fn default() -> ProbeSettings {
        ProbeSettings {
            enabled: true,
            every_seconds: 60,
            timeout_seconds: 10,
            failures: 3,
            via: None,
            ca_file: None,
        }
    }
}

impl ProbeSettings {
    /// `host:port` the probes connect to, given the HTTPS port the ingress publishes.
    pub fn target(&self, https_port: u16) -> String {
        self.via
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{https_port}"))
    }
}

/// The `[probes]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbesFile {
    enabled: Option<bool>,
    every: Option<String>,
    timeout: Option<String>,
    failures: Option<u32>,
    via: Option<String>,
    ca_file: Option<String>,
}

impl ProbesFile {
    pub(crate) fn validate(self) -> Result<ProbeSettings, CoreError> {
        let mut settings = ProbeSettings::default();
        if let Some(enabled) = self.enabled {
            settings.enabled = enabled;
        }
        if let Some(text) = self.every {
            let seconds = crate::onboarding::duration("probes.every", &text)?;
            if !(1..=3600).contains(&seconds) {
                return Err(CoreError::invalid(
                    "probes.every",
                    "must be between 1s and 1h; 60s suits most hosts",
                ));
            }
            settings.every_seconds = seconds;
        }
        if let Some(text) = self.timeout {
            let seconds = crate::onboarding::duration("probes.timeout", &text)?;
            if !(1..=120).contains(&seconds) {
                return Err(CoreError::invalid(
                    "probes.timeout",
                    "must be between 1s and 2m; 10s suits most sites",
                ));
            }
            settings.timeout_seconds = seconds;
        }
        if let Some(failures) = self.failures {
            if !(1..=100).contains(&failures) {
                return Err(CoreError::invalid(
                    "probes.failures",
                    format!("{failures} is not between 1 and 100; 3 suits most hosts"),
                ));
            }
            settings.failures = failures;
        }
        if let Some(via) = self.via {
            let via = via.trim().to_string();
            let valid = via.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(char::is_whitespace)
                    && !host.contains('/')
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(CoreError::invalid(
                    "probes.via",
                    format!("{via:?} is not host:port, such as \"127.0.0.1:443\""),
                ));
            }
            settings.via = Some(via);
        }
        if let Some(file) = self.ca_file {
            if file.trim().is_empty() {
                return Err(CoreError::invalid(
                    "probes.ca_file",
                    "is empty; name a PEM file of extra trusted roots, or leave it out",
                ));
            }
            settings.ca_file = Some(file.trim().to_string());
        }
        Ok(settings)
    }
}

/// What one probe of one hostname found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub hostname: String,
    /// Unix seconds it was sent.
    pub at: i64,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Milliseconds to the answer's headers (or to the failure).
    pub latency_ms: u64,
    /// Unix seconds the certificate the edge presented stops being valid.
    pub certificate_expires_at: Option<i64>,
    /// Why it failed, for people; `None` when it is up.
    pub problem: Option<String>,
}

impl ProbeResult {
    pub fn is_up(&self) -> bool {
        self.problem.is_none()
    }
}

/// Whether an answer with this status means the site is up for its visitors: what a
/// visitor can use (2xx), a redirect (to HTTPS, to a login page) or an app asking for a
/// login. A 404 is Traefik's answer for a hostname no router knows; 5xx is a broken app.
pub fn status_is_up(status: u16) -> bool {
    matches!(status, 200..=399 | 401 | 403)
}

/// The problem of an answer that is not up, for people.
pub fn status_problem(status: u16) -> Option<String> {
    (!status_is_up(status)).then(|| match status {
        404 => "HTTP 404 (no route for this hostname at the edge, or no page)".to_string(),
        502..=504 => format!("HTTP {status} (the app behind the router does not answer)"),
        _ => format!("HTTP {status}"),
    })
}

/// One hostname's latest result and how many probes of it failed in a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostnameProbes {
    pub last: ProbeResult,
    pub consecutive_failures: u32,
}

/// The latest probe results per client and hostname: a fixed amount per hostname, so it
/// cannot grow with time, only with the clients.
#[derive(Debug, Clone, Default)]
pub struct ProbeBook {
    clients: BTreeMap<ClientId, BTreeMap<String, HostnameProbes>>,
}

impl ProbeBook {
    /// Records one result.
    pub fn record(&mut self, client: &ClientId, result: ProbeResult) {
        let hostnames = self.clients.entry(client.clone()).or_default();
        let failures = match hostnames.get(&result.hostname) {
            Some(previous) if !result.is_up() => previous.consecutive_failures.saturating_add(1),
            None if !result.is_up() => 1,
            _ => 0,
        };
        hostnames.insert(
            result.hostname.clone(),
            HostnameProbes {
                last: result,
                consecutive_failures: failures,
            },
        );
    }

    /// Keeps only these clients and, of each, only the hostnames it has now (a changed
    /// domain's old hostnames, a removed app's, a destroyed or stopped client's go).
    pub fn retain(&mut self, current: &BTreeMap<ClientId, Vec<String>>) {
        self.clients.retain(|client, hostnames| {
            let Some(now) = current.get(client) else {
                return false;
            };
            hostnames.retain(|hostname, _| now.contains(hostname));
            true
        });
    }

    pub fn forget(&mut self, client: &ClientId) {
        self.clients.remove(client);
    }

    pub fn of(&self, client: &ClientId) -> Option<&BTreeMap<String, HostnameProbes>> {
        self.clients.get(client)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ClientId, &BTreeMap<String, HostnameProbes>)> {
        self.clients.iter()
    }

    /// Why the client is degraded by its probes: the first hostname that failed at least
    /// `threshold` times in a row, with its last problem. `None` when none did.
    pub fn failing(&self, client: &ClientId, threshold: u32) -> Option<String> {
        let (hostname, probes) = self
            .clients
            .get(client)?
            .iter()
            .find(|(_, p)| p.consecutive_failures >= threshold.max(1))?;
        Some(format!(
            "https://{hostname}/ failed {} probes in a row from outside: {}",
            probes.consecutive_failures,
            probes.last.problem.as_deref().unwrap_or("no answer")
        ))
    }
}

/// Whole days from `now` until `expires_at` (negative once expired), rounded down.
pub fn days_left(expires_at: i64, now: i64) -> i64 {
    (expires_at - now).div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ClientId {
        ClientId::parse("acme-0000abcd").unwrap()
    }

    fn result(hostname: &str, status: Option<u16>, problem: Option<&str>) -> ProbeResult {
        ProbeResult {
            hostname: hostname.into(),
            at: 1_000,
            status,
            latency_ms: 12,
            certificate_expires_at: None,
            problem: problem.map(String::from),
        }
    }

    #[test]
    fn a_hostname_is_failing_only_after_the_threshold_of_failures_in_a_row() {
        let mut book = ProbeBook::default();
        let client = id();
        book.record(&client, result("crm.acme.example", None, Some("refused")));
        book.record(&client, result("crm.acme.example", None, Some("refused")));
        assert_eq!(book.failing(&client, 3), None);
        // A success in between starts the count again.
        book.record(&client, result("crm.acme.example", Some(200), None));
        book.record(&client, result("crm.acme.example", None, Some("refused")));
        book.record(&client, result("crm.acme.example", None, Some("refused")));
        assert_eq!(book.failing(&client, 3), None);
        book.record(
            &client,
            result("crm.acme.example", Some(502), Some("HTTP 502")),
        );
        assert_eq!(
            book.failing(&client, 3).as_deref(),
            Some("https://crm.acme.example/ failed 3 probes in a row from outside: HTTP 502")
        );
        book.record(&client, result("crm.acme.example", Some(302), None));
        assert_eq!(book.failing(&client, 3), None);
    }

    #[test]
    fn the_book_forgets_hostnames_and_clients_that_are_gone() {
        let mut book = ProbeBook::default();
        let client = id();
        book.record(&client, result("old.example", None, Some("refused")));
        book.record(&client, result("acme.example", Some(200), None));
        let other = ClientId::parse("other-0000abcd").unwrap();
        book.record(&other, result("other.example", Some(200), None));
        book.retain(&BTreeMap::from([(
            client.clone(),
            vec!["acme.example".into()],
        )]));
        assert_eq!(book.of(&client).unwrap().len(), 1);
        assert!(book.of(&other).is_none());
        assert_eq!(book.failing(&client, 1), None);
    }

    #[test]
    fn redirects_and_login_pages_are_up_and_missing_routes_and_errors_are_not() {
        for up in [200, 204, 301, 302, 307, 308, 401, 403] {
            assert!(status_is_up(up), "{up}");
            assert_eq!(status_problem(up), None);
        }
        for down in [400, 404, 429, 500, 502, 503] {
            assert!(!status_is_up(down), "{down}");
        }
        assert!(status_problem(404).unwrap().contains("no route"));
    }

    #[test]
    fn days_left_round_down_and_go_negative_once_expired() {
        assert_eq!(days_left(10 * 86_400 + 5, 0), 10);
        assert_eq!(days_left(86_399, 0), 0);
        assert_eq!(days_left(-1, 0), -1);
    }

    #[test]
    fn the_probes_table_is_validated_naming_each_field() {
        let parse = |text: &str| -> Result<ProbeSettings, CoreError> {
            toml::from_str::<ProbesFile>(text).unwrap().validate()
        };
        let settings = parse(
            "every = \"30s\"\ntimeout = \"5s\"\nfailures = 2\nvia = \"edge.internal:8443\"\n\
             ca_file = \"/etc/stackbox/pebble.pem\"\n",
        )
        .unwrap();
        assert_eq!(settings.every_seconds, 30);
        assert_eq!(settings.timeout_seconds, 5);
        assert_eq!(settings.failures, 2);
        assert_eq!(settings.target(443), "edge.internal:8443");
        assert_eq!(ProbeSettings::default().target(8443), "127.0.0.1:8443");
        for (text, field) in [
            ("every = \"0s\"", "probes.every"),
            ("timeout = \"5m\"", "probes.timeout"),
            ("failures = 0", "probes.failures"),
            ("via = \"https://edge/\"", "probes.via"),
            ("via = \"edge\"", "probes.via"),
            ("ca_file = \" \"", "probes.ca_file"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }
}
