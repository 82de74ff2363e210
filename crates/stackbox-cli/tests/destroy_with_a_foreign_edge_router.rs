//! A client's edge network joined by another operator configuration's edge router (a new edge
//! router links itself to every client's edge network) must not stop the client's destroy with
//! "network … has active endpoints".

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn operator(dir: &Path, edge: &str, http: u16, https: u16) -> std::path::PathBuf {
    let path = dir.join(format!("{edge}.toml"));
    std::fs::write(
        &path,
        format!(
            "[ingress]\nmode = \"edge\"\nedge_router = \"{edge}\"\nhttp_port = {http}\nhttps_port = {https}\n\
             [host]\nmax_open_files = {}\n",
            support::hard_open_files_limit()
        ),
    )
    .unwrap();
    path
}

fn stackbox(root: &Path, operator: &Path, images: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackbox"))
        .args(args)
        .arg("--out")
        .arg(root)
        .env("STACKBOX_OPERATOR_CONFIG", operator)
        .env("STACKBOX_IMAGES", images)
        .env("STACKBOX_DATA_DIR", root.join("data"))
        .output()
        .unwrap()
}

fn deploy(root: &Path, operator: &Path, images: &str, company: &str, domain: &str) -> String {
    let config = root.join(format!("{domain}.toml"));
    std::fs::write(
        &config,
        format!("company_name = \"{company}\"\ndomain = \"{domain}\"\nplan = \"starter\"\nadmin_email = \"owner@{domain}\"\n"),
    )
    .unwrap();
    let output = stackbox(
        root,
        operator,
        images,
        &["deploy", config.to_str().unwrap(), "--json"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["client_id"].as_str().map(String::from))
        .unwrap()
}

#[test]
fn destroy_detaches_a_foreign_edge_router_from_the_clients_edge_network() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let first = operator(root.path(), "stackbox-foreign-edge-a", 18480, 18843);
    let second = operator(root.path(), "stackbox-foreign-edge-b", 18481, 18844);
    let a = deploy(
        root.path(),
        &first,
        &images,
        "Foreign Edge One",
        "foreign-one.example",
    );
    let b = deploy(
        root.path(),
        &second,
        &images,
        "Foreign Edge Two",
        "foreign-two.example",
    );
    let attached = Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{range .Containers}}{{.Name}} {{end}}",
        ])
        .arg(format!("{a}_edge"))
        .output()
        .unwrap();
    let attached = String::from_utf8_lossy(&attached.stdout).to_string();
    let destroyed = stackbox(root.path(), &first, &images, &["destroy", &a, "--yes"]);
    let b_destroyed = stackbox(root.path(), &second, &images, &["destroy", &b, "--yes"]);
    for edge in ["stackbox-foreign-edge-a", "stackbox-foreign-edge-b"] {
        let _ = Command::new("docker").args(["rm", "-f", edge]).output();
        let _ = Command::new("docker")
            .args(["network", "rm", edge])
            .output();
    }
    support::remove_from_engine("stackbox-foreign-edge-a", &[a.clone(), b.clone()]);
    // The second router joined the first client's network (the condition under test).
    assert!(attached.contains("stackbox-foreign-edge-b"), "{attached}");
    assert!(
        destroyed.status.success(),
        "{}",
        String::from_utf8_lossy(&destroyed.stderr)
    );
    assert!(
        b_destroyed.status.success(),
        "{}",
        String::from_utf8_lossy(&b_destroyed.stderr)
    );
    let left = Command::new("docker")
        .args(["network", "ls", "-q", "--filter"])
        .arg(format!("name={a}_"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "networks left"
    );
}
