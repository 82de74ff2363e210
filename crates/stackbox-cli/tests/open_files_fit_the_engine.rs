//! A newcomer's first deploy on a host whose dockerd allows fewer open files than ClickHouse
//! and Plausible ask for: with no `[host] max_open_files`, StackBox caps them to the daemon's
//! limit, says so once, and the client deploys.

mod support;

use std::process::Command;

const EDGE: &str = "stackbox-nofile-test-edge";

fn daemon_limit() -> u64 {
    let pid = Command::new("pidof").arg("dockerd").output().unwrap();
    let pids = String::from_utf8_lossy(&pid.stdout).to_string();
    pids.split_whitespace()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/limits")).ok())
        .filter_map(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(String::from))
        })
        .filter_map(|hard| hard.parse::<u64>().ok())
        .min()
        .expect("a local dockerd with a readable open-files limit")
}

#[test]
fn a_professional_client_deploys_with_no_operator_limits_capped_to_the_daemon() {
    let Some(images) = stackbox_testkit::Tier::engine()
        .program("pidof", "apt-get install sysvinit-utils")
        .images()
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let operator = root.path().join("stackbox.toml");
    // Edge ports only: no [host] section.
    std::fs::write(
        &operator,
        format!("[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 18380\nhttps_port = 18743\n"),
    )
    .unwrap();
    let config = root.path().join("client.toml");
    std::fs::write(
        &config,
        "company_name = \"Nofile Clinic\"\ndomain = \"nofile-clinic.example\"\nplan = \"professional\"\n\
         admin_email = \"owner@nofile-clinic.example\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stackbox"))
        .args(["deploy", config.to_str().unwrap(), "--json", "--out"])
        .arg(root.path())
        .env("STACKBOX_OPERATOR_CONFIG", &operator)
        .env("STACKBOX_IMAGES", &images)
        .env("STACKBOX_DATA_DIR", root.path().join("data"))
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let id = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["client_id"].as_str().map(String::from))
        .unwrap_or_default();
    let clients = vec![id.clone()];
    let cleanup = scopeguard(EDGE, clients);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let limit = daemon_limit();
    let inspect = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .HostConfig.Ulimits}}{{.Name}}={{.Hard}}{{end}}",
        ])
        .arg(format!("{id}-plausible-events-db-1"))
        .output()
        .unwrap();
    let ulimit = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    if limit < 262_144 {
        assert!(
            stderr.contains("warning: the local dockerd allows"),
            "{stderr}"
        );
        assert!(
            stderr.contains("plausible-events-db (asks 262144)"),
            "{stderr}"
        );
        assert_eq!(ulimit, format!("nofile={limit}"));
    } else {
        assert!(
            !stderr.contains("warning: the local dockerd allows"),
            "{stderr}"
        );
        assert_eq!(ulimit, "nofile=262144");
    }
    drop(cleanup);
}

/// Removes the client from the engine when the test ends, passed or not.
fn scopeguard(edge: &'static str, clients: Vec<String>) -> impl Drop {
    struct Guard(&'static str, Vec<String>);
    impl Drop for Guard {
        fn drop(&mut self) {
            support::remove_from_engine(self.0, &self.1);
        }
    }
    Guard(edge, clients)
}
