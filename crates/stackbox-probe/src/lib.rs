//! Probes from outside: `GET https://HOSTNAME/` sent to the edge (`via`) instead of to what
//! DNS says, with the hostname in SNI and Host, so the edge routes it exactly as a visitor's
//! request; the certificate is verified as a browser would (the public web's roots plus the
//! operator's extra ones) and its expiry read. One attempt per hostname per round, a fresh
//! connection each (the latency includes connect and TLS, and every probe sees the
//! certificate); redirects are not followed (a redirect is an answer).
//!
//! What the results mean (up, failing in a row, days left) is the core's
//! [`stackbox_core::probes`]; this crate only asks.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use stackbox_core::probes::{status_problem, ProbeResult};
use x509_cert::der::Decode;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probes.via {via}: {problem}")]
    Via { via: String, problem: String },
    #[error("probes.ca_file: {problem}")]
    Roots { problem: String },
    #[error("the probe client cannot be built: {problem}")]
    Client { problem: String },
}

/// How probes are sent.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// `host:port` of the edge.
    pub via: String,
    pub timeout: Duration,
    /// PEM certificates trusted besides the public roots.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Probes in flight at once.
    pub concurrency: usize,
}

pub struct Prober {
    via: SocketAddr,
    timeout: Duration,
    roots: Vec<reqwest::Certificate>,
    concurrency: usize,
}

impl Prober {
    /// Resolves the edge's address once and reads the extra roots.
    pub async fn new(options: ProbeOptions) -> Result<Prober, ProbeError> {
        let via = tokio::net::lookup_host(options.via.as_str())
            .await
            .map_err(|e| ProbeError::Via {
                via: options.via.clone(),
                problem: format!("cannot be resolved ({e})"),
            })?
            .next()
            .ok_or_else(|| ProbeError::Via {
                via: options.via.clone(),
                problem: "resolves to no address".to_string(),
            })?;
        let roots = match &options.extra_roots_pem {
            Some(pem) => {
                let roots =
                    reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ProbeError::Roots {
                        problem: format!("is not a PEM bundle of certificates ({e})"),
                    })?;
                if roots.is_empty() {
                    return Err(ProbeError::Roots {
                        problem: "holds no certificate".to_string(),
                    });
                }
                roots
            }
            None => Vec::new(),
        };
        Ok(Prober {
            via,
            timeout: options.timeout,
            roots,
            concurrency: options.concurrency.max(1),
        })
    }

    /// One probe of each hostname, `concurrency` at a time; results in the order given.
    pub async fn probe_all(&self, hostnames: &[String]) -> Result<Vec<ProbeResult>, ProbeError> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .tls_info(true)
            .https_only(true)
            .user_agent(concat!("StackBox-Probe/", env!("CARGO_PKG_VERSION")));
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        for hostname in hostnames {
            builder = builder.resolve(hostname, self.via);
        }
        let client = builder.build().map_err(|e| ProbeError::Client {
            problem: e.to_string(),
        })?;
        let client = &client;
        let mut results: Vec<(usize, ProbeResult)> =
            futures_util::stream::iter(hostnames.iter().enumerate())
                .map(|(index, hostname)| async move { (index, probe(client, hostname).await) })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        results.sort_by_key(|(index, _)| *index);
        Ok(results.into_iter().map(|(_, result)| result).collect())
    }
}

async fn probe(client: &reqwest::Client, hostname: &str) -> ProbeResult {
    let at = unix_now();
    let started = Instant::now();
    let answer = client.get(format!("https://{hostname}/")).send().await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            let certificate_expires_at = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .and_then(not_after);
            ProbeResult {
                hostname: hostname.to_string(),
                at,
                status: Some(status),
                latency_ms,
                certificate_expires_at,
                problem: status_problem(status),
            }
        }
        Err(error) => ProbeResult {
            hostname: hostname.to_string(),
            at,
            status: None,
            latency_ms,
            certificate_expires_at: None,
            problem: Some(describe(&error)),
        },
    }
}

/// Unix seconds the certificate (DER) stops being valid.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let not_after = certificate.tbs_certificate.validity.not_after;
    i64::try_from(not_after.to_unix_duration().as_secs()).ok()
}

/// The error and its causes on one line ("connection refused", "invalid peer certificate:
/// Expired"), without the URL reqwest repeats at the front.
fn describe(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    if error.is_timeout() {
        parts.push("timed out".to_string());
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(error.to_string());
    }
    parts.join(": ")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
