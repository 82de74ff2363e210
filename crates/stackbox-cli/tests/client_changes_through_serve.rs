//! Changing a client through `stackbox serve`, on a real store and a real engine: `stackbox
//! --server deploy` of an edited file sends the edits (a merge patch) and follows the redeploy,
//! and the running website shows them; an unchanged file still converges; the history says who
//! asked and what changed; the real control plane's refusals (a client busy with its create, a
//! domain another client has); and tokens listed without their secret and revoked, through the
//! API and through `stackbox token revoke` beside the running server, refused on the very next
//! request.
//!
//! Needs the engine and the local test images (`scripts/test.sh` provides both).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use support::server::{client_body, finished, poll, Server};

const EDGE: &str = "stackbox-changes-test-edge";

/// Removes the edge router's own network once the server (declared after it) has removed the
/// router and the clients.
struct EdgeNetwork;

impl Drop for EdgeNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", EDGE])
            .output();
    }
}

fn remote(server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackbox"))
        .args([
            "--server",
            &format!("http://127.0.0.1:{}", server.port),
            "--token",
            token,
        ])
        .args(args)
        .output()
        .unwrap()
}

fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn write_config(path: &Path, id: Option<&str>, company: &str, color: &str) {
    let id_line = id
        .map(|id| format!("client_id = \"{id}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        path,
        format!(
            "{id_line}company_name = \"{company}\"\ndomain = \"changes.example\"\n\
             plan = \"starter\"\nadmin_email = \"owner@changes.example\"\n\
             brand_color = \"{color}\"\n"
        ),
    )
    .unwrap();
}

/// The website's page, from its own container's address on the client's web network.
fn website(id: &str) -> String {
    let container = format!("{id}-website-1");
    let ip = Command::new("docker")
        .args([
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{id}_web\").IPAddress}}}}"),
            &container,
        ])
        .output()
        .unwrap();
    let ip = String::from_utf8_lossy(&ip.stdout).trim().to_string();
    let mut stream =
        TcpStream::connect_timeout(&format!("{ip}:80").parse().unwrap(), Duration::from_secs(5))
            .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: changes.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

fn history(server: &Server, token: &str, id: &str) -> Vec<Value> {
    let (status, page) = server.http("GET", &format!("/v1/clients/{id}/deployments"), token, None);
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

fn operator_token_id(server: &Server) -> String {
    let output = server
        .command()
        .args(["token", "list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_str(&succeeded(&output, "token list --json")).unwrap();
    listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "operator")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_string()
}

#[test]
fn deploy_of_an_edited_file_through_serve_changes_the_running_client_and_its_history() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let _edge_network = EdgeNetwork;
    let mut server = Server::new(&images, EDGE, 28186, 28549);
    server.start();
    let operator = server.token(&["--operator"]);
    let operator_id = operator_token_id(&server);
    let file = server.data.path().join("changes.toml");

    // A new client through the CLI: created and followed to its end.
    write_config(&file, None, "Changes Before", "#003366");
    let out = succeeded(
        &remote(&server, &operator, &["deploy", file.to_str().unwrap()]),
        "first deploy",
    );
    let id = out
        .lines()
        .find_map(|line| line.strip_prefix("Client "))
        .and_then(|rest| rest.strip_suffix(" accepted."))
        .unwrap_or_else(|| panic!("no client id in {out}"))
        .to_string();
    server.made.borrow_mut().push(id.clone());
    assert!(website(&id).contains("Changes Before"), "{}", website(&id));

    // The file, edited: a new company name and brand colour.
    write_config(&file, Some(&id), "Changes & After", "#aa0000");
    let output = remote(&server, &operator, &["deploy", file.to_str().unwrap()]);
    let out = succeeded(&output, "deploy of the edited file");
    assert!(out.contains("deploy succeeded"), "{out}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("company_name"), "the change is shown: {said}");
    let (status, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["configuration"]["company_name"], "Changes & After");
    assert_eq!(detail["configuration"]["brand_color"], "#aa0000");
    assert_eq!(detail["configuration"]["domain"], "changes.example");
    // The running website was rendered again and shows the edit.
    let page = website(&id);
    assert!(
        page.contains("200 OK") && page.contains("#aa0000") && !page.contains("Changes Before"),
        "{page}"
    );

    // The history: the change first, with who asked and what changed; then the create.
    let items = history(&server, &operator, &id);
    assert_eq!(items.len(), 2, "{items:?}");
    let change = &items[0];
    assert_eq!(change["kind"], "redeploy");
    assert_eq!(change["status"], "succeeded", "{change}");
    assert_eq!(
        change["requested_by"],
        json!({"by": "token", "token_id": operator_id, "role": "operator"})
    );
    assert_eq!(
        change["changes"],
        json!({
            "company_name": {"from": "Changes Before", "to": "Changes & After"},
            "brand_color": {"from": "#003366", "to": "#aa0000"},
        })
    );
    assert_eq!(change["steps"]["failed"], 0);
    assert_eq!(change["steps"]["succeeded"], change["steps"]["total"]);
    assert_eq!(items[1]["kind"], "create");
    assert!(!serde_json::to_string(&items).unwrap().contains(&operator));

    // The same file again: nothing to change, and deploy still converges (a plain redeploy).
    let output = remote(&server, &operator, &["deploy", file.to_str().unwrap()]);
    succeeded(&output, "deploy of the unchanged file");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unchanged"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let items = history(&server, &operator, &id);
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["kind"], "redeploy");
    assert_eq!(items[0]["status"], "succeeded");
    assert!(items[0].get("changes").is_none(), "{}", items[0]);
    assert_eq!(items[0]["requested_by"]["token_id"], json!(operator_id));

    // The real control plane's refusals. A second client is busy with its create: 409, and its
    // configuration is not touched; its domain is not free for the first client: 409.
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Changes Neighbour", "neighbour.example")),
    );
    assert_eq!(status, 202, "{created}");
    let neighbour = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(neighbour.clone());
    let (status, body) = server.http(
        "PATCH",
        &format!("/v1/clients/{neighbour}"),
        &operator,
        Some(r#"{"company_name": "Renamed While Busy"}"#),
    );
    assert_eq!(status, 409, "{body}");
    let (_, detail) = server.http("GET", &format!("/v1/clients/{neighbour}"), &operator, None);
    assert_eq!(detail["configuration"]["company_name"], "Changes Neighbour");
    let (status, body) = server.http(
        "PATCH",
        &format!("/v1/clients/{id}"),
        &operator,
        Some(r#"{"domain": "neighbour.example"}"#),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains(&neighbour), "{body}");
    let (status, body) = server.http(
        "PATCH",
        &format!("/v1/clients/{id}"),
        &operator,
        Some(r#"{"plan": "platinum"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "plan");
    // The provider a client runs on holds its data: it cannot change.
    let (status, body) = server.http(
        "PATCH",
        &format!("/v1/clients/{id}"),
        &operator,
        Some(r#"{"infrastructure": "aws"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "infrastructure");
    assert_eq!(
        history(&server, &operator, &id).len(),
        3,
        "nothing journaled"
    );

    // Tokens: listed without their secret, revoked through the API and through the CLI
    // beside the running server, each refused on the very next request.
    let reader = server.token(&["--client", &id]);
    let other_reader = server.token(&["--client", &id]);
    assert_eq!(history(&server, &reader, &id).len(), 3);
    let (status, _) = server.http(
        "GET",
        &format!("/v1/clients/{neighbour}/deployments"),
        &reader,
        None,
    );
    assert_eq!(status, 404, "another client's history");
    let (status, listed) = server.http("GET", "/v1/tokens", &operator, None);
    assert_eq!(status, 200, "{listed}");
    let text = listed.to_string();
    for secret in [&operator, &reader, &other_reader] {
        assert!(!text.contains(secret.as_str()), "{text}");
    }
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3, "{listed}");
    let reader_ids: Vec<String> = tokens
        .iter()
        .filter(|t| t["client_id"] == json!(id))
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reader_ids.len(), 2);
    // Which id is which token is not shown anywhere: try both readers after each revoke.
    let (status, _) = server.http(
        "DELETE",
        &format!("/v1/tokens/{}", reader_ids[0]),
        &operator,
        None,
    );
    assert_eq!(status, 204);
    let works = |token: &str| {
        server
            .http("GET", &format!("/v1/clients/{id}"), token, None)
            .0
    };
    let after_api = [works(&reader), works(&other_reader)];
    assert!(
        after_api.contains(&401) && after_api.contains(&200),
        "exactly one reader refused at once: {after_api:?}"
    );
    let revoke = server
        .command()
        .args(["token", "revoke", &reader_ids[1]])
        .output()
        .unwrap();
    succeeded(&revoke, "token revoke");
    assert_eq!(
        [works(&reader), works(&other_reader)],
        [401, 401],
        "the CLI's revoke is effective at once in the running server"
    );
    let cli_list = server.command().args(["token", "list"]).output().unwrap();
    let cli_list = succeeded(&cli_list, "token list");
    assert!(cli_list.contains(&operator_id), "{cli_list}");
    assert!(!cli_list.contains(&operator), "{cli_list}");
    assert!(!cli_list.contains(&reader_ids[0]), "{cli_list}");
    let again = server
        .command()
        .args(["token", "revoke", &reader_ids[1]])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not known"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(works(&operator), 200);

    // The neighbour's create ends; nothing of either client is left behind (Drop removes it).
    let view = poll(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
        Duration::from_secs(240),
        finished,
    );
    assert_eq!(view["status"], "succeeded", "{view}");

    // A stopped client stays stopped when it is changed: the change is journaled as a stop
    // (nothing started), stored, and applied by its next start.
    let wait = |deployment: &Value| {
        poll(
            &server,
            &operator,
            deployment["deployment_id"].as_str().unwrap(),
            Duration::from_secs(240),
            finished,
        )
    };
    let (status, stopping) =
        server.http("POST", &format!("/v1/clients/{id}/stop"), &operator, None);
    assert_eq!(status, 202, "{stopping}");
    assert_eq!(wait(&stopping)["status"], "succeeded");
    let (status, change) = server.http(
        "PATCH",
        &format!("/v1/clients/{id}"),
        &operator,
        Some(r#"{"company_name": "Changed While Stopped"}"#),
    );
    assert_eq!(status, 202, "{change}");
    let view = wait(&change);
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(
        view["kind"], "stop",
        "a change of a stopped client starts nothing: {view}"
    );
    let (_, detail) = server.http("GET", &format!("/v1/clients/{id}"), &operator, None);
    assert_eq!(detail["state"], "stopped", "{detail}");
    assert_eq!(
        detail["configuration"]["company_name"],
        "Changed While Stopped"
    );
    let running = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}}",
            &format!("{id}-website-1"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "false");
    assert_eq!(
        history(&server, &operator, &id)[0]["changes"]["company_name"]["to"],
        "Changed While Stopped"
    );
    let (status, starting) =
        server.http("POST", &format!("/v1/clients/{id}/start"), &operator, None);
    assert_eq!(status, 202, "{starting}");
    assert_eq!(wait(&starting)["status"], "succeeded");
    assert!(
        website(&id).contains("Changed While Stopped"),
        "the start applied the stored change: {}",
        website(&id)
    );

    // A new domain: the old one's hostnames redirect to it (a router on the website with a
    // certificate of its own, and the edge still sends them here), and the old domain is
    // not free for another client while they do.
    let (status, change) = server.http(
        "PATCH",
        &format!("/v1/clients/{id}"),
        &operator,
        Some(r#"{"domain": "moved.example"}"#),
    );
    assert_eq!(status, 202, "{change}");
    assert_eq!(wait(&change)["status"], "succeeded");
    let labels = |container: &str| -> Value {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{json .Config.Labels}}", container])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let site = labels(&format!("{id}-website-1"));
    let rule = site[format!("traefik.http.routers.{id}-previous-domains.rule")]
        .as_str()
        .unwrap_or_default();
    assert!(rule.contains("Host(`changes.example`)"), "{site}");
    assert_eq!(
        site[format!("traefik.http.middlewares.{id}-previous-domains.redirectregex.replacement")],
        "https://${1}moved.example${2}",
        "{site}"
    );
    let router = labels(&format!("{id}-traefik-1"));
    let sni = router[format!("traefik.tcp.routers.{id}-edge-tls.rule")]
        .as_str()
        .unwrap_or_default();
    assert!(
        sni.contains("HostSNI(`moved.example`)") && sni.contains("HostSNI(`changes.example`)"),
        "{sni}"
    );
    let stored = std::fs::read_to_string(
        server
            .data
            .path()
            .join("data/bundles/clients")
            .join(&id)
            .join("client.toml"),
    )
    .unwrap_or_default();
    assert!(stored.contains("[[previous_domains]]"), "{stored}");
    let (status, body) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Domain Squatter", "changes.example")),
    );
    assert_eq!(status, 409, "the old domain still redirects: {body}");
    assert!(body.to_string().contains(&id), "{body}");
}
