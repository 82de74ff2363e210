//! A client's resource use through `stackbox serve` on a real engine: a website container
//! made to burn a CPU and hold 40 MiB shows in `GET /v1/clients/{id}/usage`, in `/metrics`
//! under cAdvisor's names (behind the operator token when `[monitor] metrics = "operator"`),
//! in a real Prometheus server's PromQL answer after it scraped `serve`, and in
//! `stackbox status ID --resources`, through the API and on the host.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::server::{client_body, finished, poll, Server};

const EDGE: &str = "stackbox-usage-serve-test-edge";
const MIB: f64 = 1024.0 * 1024.0;

/// A Prometheus server, killed with the test.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Prometheus scraping `serve`'s `/metrics` every second with the operator token.
fn start_prometheus(dir: &Path, target_port: u16, token: &str) -> (Prometheus, u16) {
    let credentials = dir.join("scrape-token");
    std::fs::write(&credentials, token).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: stackbox\n    authorization:\n      credentials_file: {}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            credentials.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Prometheus(child), port)
}

/// A PromQL instant query's result vector (empty until scraped).
fn promql(port: u16, query: &str) -> Vec<serde_json::Value> {
    let escaped: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if write!(
        stream,
        "GET /api/v1/query?query={escaped} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return Vec::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_busy_service_shows_in_usage_metrics_prometheus_and_status() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .program("prometheus", "apt-get install prometheus")
        .images()
    else {
        return;
    };
    let mut server = Server::new(&images, EDGE, 18600, 18963);
    // Readings every 2 s so the test need not wait a minute; /metrics closed to tokens.
    let mut operator_file = std::fs::read_to_string(&server.operator).unwrap();
    operator_file.push_str(
        "[monitor]\nusage_interval = \"2s\"\nvolume_sizes_every = \"2s\"\nmetrics = \"operator\"\n",
    );
    std::fs::write(&server.operator, operator_file).unwrap();
    server.start();
    let operator = server.token(&["--operator"]);
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Busy Usage Shop", "busy-usage.example")),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    let view = poll(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
        Duration::from_secs(300),
        finished,
    );
    assert_eq!(view["status"], "succeeded", "{view}");

    // The website burns what CPU it may for a while and holds 40 MiB in its tmpfs (shared memory
    // is not reclaimable page cache: it counts in the working set).
    let website = format!("{id}-website-1");
    docker(&[
        "exec",
        "-d",
        &website,
        "timeout",
        "120",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    docker(&[
        "exec",
        &website,
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/hog",
        "bs=1M",
        "count=40",
    ]);

    // The plan limits the website's CPU: "busy" is most of its limit (or of a core).
    let nano_cpus: f64 = docker(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", &website])
        .trim()
        .parse()
        .unwrap();
    let busy_cores = if nano_cpus > 0.0 {
        0.6 * nano_cpus / 1e9
    } else {
        0.6
    };

    let path = format!("/v1/clients/{id}/usage?window=10m");
    let deadline = Instant::now() + Duration::from_secs(90);
    let usage = loop {
        let (status, usage) = server.http("GET", &path, &operator, None);
        assert_eq!(status, 200, "{usage}");
        let busy = usage["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == "website")
            .is_some_and(|s| {
                s["cpu_cores"].as_f64().unwrap() > busy_cores
                    && s["memory_working_set_bytes"].as_f64().unwrap() >= 40.0 * MIB
            });
        // Two points at least: the first reading has no CPU rate to plot yet.
        let plotted = usage["points"].as_array().is_some_and(|p| p.len() >= 2);
        if (busy && plotted && usage["storage_bytes"].is_u64()) || Instant::now() > deadline {
            break usage;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let website_use = usage["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "website")
        .unwrap_or_else(|| panic!("no website reading: {usage}"))
        .clone();
    assert!(
        website_use["cpu_cores"].as_f64().unwrap() > busy_cores,
        "{website_use}"
    );
    assert!(
        website_use["memory_working_set_bytes"].as_f64().unwrap() >= 40.0 * MIB,
        "{website_use}"
    );
    // The client's roll-up: at least the website's, and points with a CPU rate.
    assert!(
        usage["cpu_cores_max"].as_f64().unwrap() > busy_cores,
        "{usage}"
    );
    assert!(
        usage["memory_working_set_bytes_max"].as_f64().unwrap() >= 40.0 * MIB,
        "{usage}"
    );
    assert_eq!(usage["interval_seconds"], 2);
    assert_eq!(usage["window_seconds"], 600);
    let points = usage["points"].as_array().unwrap();
    assert!(points.len() >= 2, "{usage}");
    // Storage: the client's volumes, measured (MariaDB's data directory is not empty).
    let volumes = usage["volumes"].as_object().unwrap();
    assert!(!volumes.is_empty(), "{usage}");
    assert!(
        usage["storage_bytes"].as_u64().unwrap() > 1_000_000,
        "{usage}"
    );

    // Refusals: a bad window names it; an unknown client is 404; the client's own token reads.
    let (status, error) = server.http(
        "GET",
        &format!("/v1/clients/{id}/usage?window=soon"),
        &operator,
        None,
    );
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "window", "{error}");
    let (status, _) = server.http("GET", "/v1/clients/nobody-00000000/usage", &operator, None);
    assert_eq!(status, 404);
    let own = server.token(&["--client", &id]);
    let (status, _) = server.http("GET", &path, &own, None);
    assert_eq!(status, 200);

    // /metrics: closed without the operator token, then cAdvisor's series per service.
    let (status, _) = server.try_http("GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = server
        .try_http("GET", "/metrics", Some(&own), None)
        .unwrap();
    assert_eq!(
        status, 403,
        "a client token does not read every client's figures"
    );
    let (status, text) = server
        .try_http("GET", "/metrics", Some(&operator), None)
        .unwrap();
    assert_eq!(status, 200, "{text}");
    for series in [
        format!("container_cpu_usage_seconds_total{{client=\"{id}\",service=\"website\"}} "),
        format!("container_memory_working_set_bytes{{client=\"{id}\",service=\"mysql\"}} "),
        format!("stackbox_client_state{{client=\"{id}\",state=\"running\"}} 1"),
        format!("stackbox_volume_bytes{{client=\"{id}\",volume="),
        "stackbox_engine_disk_bytes{kind=\"total\"} ".to_string(),
    ] {
        assert!(text.contains(&series), "{series} not in:\n{text}");
    }

    // A real Prometheus scrapes it and answers PromQL with the client's series.
    let scratch = tempfile::tempdir().unwrap();
    let (_prometheus, prometheus_port) = start_prometheus(scratch.path(), server.port, &operator);
    let query = format!(
        "sum by (client) (rate(container_cpu_usage_seconds_total{{client=\"{id}\"}}[10s]))"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        let result = promql(prometheus_port, &query);
        let busy = result.first().is_some_and(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > busy_cores)
        });
        if busy || Instant::now() > deadline {
            break result;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0]["metric"]["client"], id.as_str(), "{result:?}");
    let memory = promql(
        prometheus_port,
        &format!("container_memory_working_set_bytes{{client=\"{id}\",service=\"website\"}}"),
    );
    assert_eq!(memory.len(), 1, "{memory:?}");

    // The CLI through --server, then on the host.
    let output = server
        .command()
        .args([
            "--server",
            &format!("http://127.0.0.1:{}", server.port),
            "--token",
            &operator,
            "status",
            &id,
            "--resources",
            "--window",
            "5m",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SERVICE"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("website")),
        "{stdout}"
    );
    let output = server
        .command()
        .args(["status", &id, "--resources", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let local: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let website_local = local["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "website")
        .unwrap_or_else(|| panic!("{local}"))
        .clone();
    assert!(
        website_local["cpu_cores"].as_f64().unwrap() > busy_cores,
        "{website_local}"
    );
    assert_eq!(local["points"].as_array().unwrap().len(), 1, "{local}");
    // A window needs the server's readings: refused on the host, with the way to get it.
    let output = server
        .command()
        .args(["status", &id, "--resources", "--window", "1h"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--server"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    docker(&["exec", &website, "rm", "-f", "/dev/shm/hog"]);
}
