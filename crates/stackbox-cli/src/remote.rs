//! The lifecycle commands against a running `stackbox serve` (`--server URL --token T`, or
//! `STACKBOX_SERVER` and `STACKBOX_TOKEN`): the same commands, through the REST API.
//!
//! Plain HTTP/1.1 over TCP (the server listens on a private address or behind the operator's
//! TLS proxy); `https://` is refused with a message rather than sent in clear.
//!
//! `deploy` of a file that names its `client_id` sends the file's configuration as a merge
//! patch (`PATCH /v1/clients/{id}`), so that its edits reach the server, and follows the
//! redeploy that applies them; a file that changes nothing is redeployed as stored (`POST
//! …/redeploy`), so that `deploy` keeps meaning "converge to this file".

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use stackbox_core::client::ClientSpec;

pub struct Remote {
    host: String,
    token: String,
}

impl Remote {
    pub fn new(url: &str, token: Option<String>) -> Result<Remote> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--server: {url:?} must start with http:// (put TLS in front of the server with a proxy)");
        };
        let host = rest.trim_end_matches('/').to_string();
        if host.is_empty() || host.contains('/') {
            bail!("--server: {url:?} must be http://HOST:PORT");
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("--token (or STACKBOX_TOKEN) is required with --server"))?;
        Ok(Remote { host, token })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        self.call_as(method, path, body, "application/json")
    }

    /// [`Remote::call`] with the body sent as `content_type`.
    fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<(u16, Value)> {
        let mut stream = TcpStream::connect(&self.host)
            .with_context(|| format!("cannot reach the StackBox server at http://{}", self.host))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.host, self.token
        );
        if !body.is_empty() {
            request.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        let (head, payload) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("the server sent a malformed response"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("the server sent a malformed status line"))?;
        let value = serde_json::from_str(payload).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// The body on success; the server's error message otherwise.
    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        Self::success(status, value)
    }

    fn success(status: u16, value: Value) -> Result<Value> {
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or("no details")
            .to_string();
        match value["error"]["field"].as_str() {
            Some(field) => bail!("server answered {status}: {field}: {message}"),
            None => bail!("server answered {status}: {message}"),
        }
    }

    /// Follows a deployment until it ends, printing each step change once.
    fn follow(&self, deployment: &str, json: bool) -> Result<Value> {
        let mut seen: Vec<(String, String)> = Vec::new();
        loop {
            let view = self.ok("GET", &format!("/v1/deployments/{deployment}"), None)?;
            for step in view["steps"].as_array().into_iter().flatten() {
                let key = (
                    step["name"].as_str().unwrap_or_default().to_string(),
                    step["status"].as_str().unwrap_or_default().to_string(),
                );
                if !seen.contains(&key) && key.1 != "pending" {
                    if json {
                        println!(
                            "{}",
                            json!({"event": "step", "step": key.0, "status": key.1})
                        );
                    } else {
                        eprintln!("  {:<16} {}", key.0, key.1);
                    }
                    seen.push(key);
                }
            }
            if matches!(
                view["status"].as_str(),
                Some("succeeded" | "failed" | "compensated")
            ) {
                return Ok(view);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn finish(&self, deployment: &str, json: bool, what: &str) -> Result<()> {
        let view = self.follow(deployment, json)?;
        let status = view["status"].as_str().unwrap_or_default();
        if json {
            println!(
                "{}",
                json!({"event": "result", "success": status == "succeeded", "deployment": view})
            );
        }
        if status != "succeeded" {
            bail!(
                "{what} {status}: {}",
                view["error"].as_str().unwrap_or("no details")
            );
        }
        if !json {
            println!("{what} succeeded (deployment {deployment}).");
        }
        Ok(())
    }

    pub fn deploy(&self, spec: &ClientSpec, json: bool) -> Result<()> {
        let deployment = match &spec.client_id {
            Some(id) => self.change(id.as_str(), spec, json)?,
            None => {
                let created = self.ok("POST", "/v1/clients", Some(&configuration(spec)))?;
                if json {
                    println!("{}", json!({"event": "created", "client": created}));
                } else {
                    println!(
                        "Client {} accepted.",
                        created["client_id"].as_str().unwrap_or_default()
                    );
                    println!(
                        "Login: {}  Password: {}  (shown once)",
                        created["credentials"]["admin_username"]
                            .as_str()
                            .unwrap_or_default(),
                        created["credentials"]["admin_password"]
                            .as_str()
                            .unwrap_or_default()
                    );
                }
                created
            }
        };
        let id = deployment["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, "deploy")
    }

    /// An existing client to the file's configuration: its edits as a merge patch, or, when
    /// there are none, a redeploy of what is stored. Returns the deployment to follow.
    fn change(&self, id: &str, spec: &ClientSpec, json: bool) -> Result<Value> {
        let (status, current) = self.call("GET", &format!("/v1/clients/{id}"), None)?;
        if status == 404 {
            bail!(
                "client {id} (the file's client_id) is not known to the server; remove \
                 client_id from the file to create the client"
            );
        }
        let current = Self::success(status, current)?;
        let patch = patch_to(&current["configuration"], spec);
        let (status, answer) = self.call_as(
            "PATCH",
            &format!("/v1/clients/{id}"),
            Some(&patch),
            "application/merge-patch+json",
        )?;
        let answer = Self::success(status, answer)?;
        if status != 202 {
            // Nothing to change: converge to what is stored.
            if !json {
                eprintln!("Client {id}: the configuration is unchanged; redeploying it.");
            }
            return self.ok("POST", &format!("/v1/clients/{id}/redeploy"), None);
        }
        if json {
            println!(
                "{}",
                json!({"event": "changed", "client_id": id, "changes": answer["changes"]})
            );
        } else {
            eprintln!("Client {id}: changing");
            for (field, change) in answer["changes"].as_object().into_iter().flatten() {
                eprintln!("  {field}: {} -> {}", change["from"], change["to"]);
            }
        }
        Ok(answer)
    }

    pub fn action(&self, client: &str, action: &str, json: bool) -> Result<()> {
        let deployment = self.ok("POST", &format!("/v1/clients/{client}/{action}"), None)?;
        let id = deployment["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, action)
    }

    /// `POST /v1/clients/{id}/rotate-secrets`, then follows the deployment.
    pub fn rotate_secrets(&self, client: &str, only: &[String], json: bool) -> Result<()> {
        let body = json!({ "only": only });
        let deployment = self.ok(
            "POST",
            &format!("/v1/clients/{client}/rotate-secrets"),
            Some(&body),
        )?;
        let id = deployment["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, "rotate-secrets")
    }

    /// `POST /v1/clients/{id}/admin-password`: prints the new password the answer carries
    /// (once: the server never shows it again), then follows the deployment, whose failure
    /// means the apps kept the previous one (or its error names the app that did not).
    pub fn admin_password(&self, client: &str, json: bool) -> Result<()> {
        let reset = self.ok(
            "POST",
            &format!("/v1/clients/{client}/admin-password"),
            None,
        )?;
        let id = reset["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if json {
            println!(
                "{}",
                json!({
                    "event": "admin-password",
                    "client_id": client,
                    "deployment_id": id,
                    "credentials": reset["credentials"],
                    "apps": reset["apps"],
                })
            );
        } else {
            println!("Resetting the admin password of {client}:");
            println!(
                "  admin username  {}",
                reset["credentials"]["admin_username"]
                    .as_str()
                    .unwrap_or_default()
            );
            println!(
                "  admin password  {}",
                reset["credentials"]["admin_password"]
                    .as_str()
                    .unwrap_or_default()
            );
            println!("  (shown once; it holds once the reset below succeeds)");
            for app in reset["apps"].as_array().into_iter().flatten() {
                let name = app["app"].as_str().unwrap_or_default();
                match app["reason"].as_str() {
                    Some(reason) => println!("  {name:<10} not applicable: {reason}"),
                    None => println!(
                        "  {name:<10} {}",
                        app["outcome"].as_str().unwrap_or_default()
                    ),
                }
            }
        }
        self.finish(&id, json, "admin-password")
    }

    /// `POST /v1/clients/{id}/upgrade`, then follows the deployment.
    pub fn upgrade(&self, client: &str, to: &str, json: bool) -> Result<()> {
        let body = json!({ "to": to });
        let deployment = self.ok(
            "POST",
            &format!("/v1/clients/{client}/upgrade"),
            Some(&body),
        )?;
        let id = deployment["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, "upgrade")
    }

    pub fn destroy(&self, client: &str, delete_backups: bool, json: bool) -> Result<()> {
        let deployment = self.ok(
            "DELETE",
            &format!("/v1/clients/{client}?confirm={client}&delete_backups={delete_backups}"),
            None,
        )?;
        let id = deployment["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, "destroy")
    }

    /// `backup create`, `verify`, `restore` through the server: journaled deployments,
    /// followed to their end.
    pub fn backup(
        &self,
        client: &str,
        what: &str,
        snapshot: Option<&str>,
        json: bool,
    ) -> Result<()> {
        let snapshot = snapshot.unwrap_or("latest");
        let path = match what {
            "create" => format!("/v1/clients/{client}/backups"),
            "verify" => format!("/v1/clients/{client}/backups/{snapshot}/verify"),
            _ => format!("/v1/clients/{client}/backups/{snapshot}/restore?confirm={client}"),
        };
        let deployment = self.ok("POST", &path, None)?;
        let id = deployment["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, &format!("backup {what}"))
    }

    /// `stackbox logs --server`: the last lines, or with `follow` the server's event stream
    /// printed line by line until it ends.
    pub fn logs(
        &self,
        client: &str,
        service: Option<&str>,
        since: Option<&str>,
        tail: Option<&str>,
        follow: bool,
        json: bool,
    ) -> Result<()> {
        let mut path = format!("/v1/clients/{client}/logs?follow={follow}");
        for (name, value) in [("service", service), ("since", since), ("tail", tail)] {
            if let Some(value) = value {
                path.push_str(&format!("&{name}={}", query_escape(value)));
            }
        }
        let print = |line: &Value| {
            if json {
                println!("{line}");
            } else {
                println!(
                    "{:<10} | {}",
                    line["service"].as_str().unwrap_or_default(),
                    line["line"].as_str().unwrap_or_default()
                );
            }
        };
        if !follow {
            let body = self.ok("GET", &path, None)?;
            for line in body["lines"].as_array().into_iter().flatten() {
                print(line);
            }
            return Ok(());
        }
        let mut stream = TcpStream::connect(&self.host)
            .with_context(|| format!("cannot reach the StackBox server at http://{}", self.host))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nAccept: text/event-stream\r\n\r\n",
            self.host, self.token
        )?;
        let mut reader = std::io::BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut line)? == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("the server sent a malformed status line"))?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        if status != 200 {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            let text = String::from_utf8_lossy(&rest);
            let body = text.find('{').map_or("", |at| &text[at..]);
            let body = body.rfind('}').map_or("", |end| &body[..=end]);
            return Self::success(status, serde_json::from_str(body).unwrap_or(Value::Null))
                .map(|_| ());
        }
        // The body's bytes, de-chunked, cut into SSE lines.
        let mut pending = String::new();
        let mut event: Option<String> = None;
        loop {
            let bytes = if chunked {
                let mut size = String::new();
                if std::io::BufRead::read_line(&mut reader, &mut size)? == 0 {
                    break;
                }
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if size == 0 {
                    break;
                }
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk)?;
                chunk.truncate(size);
                chunk
            } else {
                let mut chunk = vec![0; 8192];
                let n = reader.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                chunk.truncate(n);
                chunk
            };
            pending.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(at) = pending.find('\n') {
                let line: String = pending.drain(..=at).collect();
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_string());
                } else if let Some(data) = line.strip_prefix("data:") {
                    if event.as_deref() == Some("end") {
                        return Ok(());
                    }
                    if let Ok(value) = serde_json::from_str::<Value>(data.trim()) {
                        print(&value);
                    }
                } else if line.is_empty() {
                    event = None;
                }
            }
        }
        Ok(())
    }

    pub fn backups(&self, client: &str, json: bool) -> Result<()> {
        let list = self.ok("GET", &format!("/v1/clients/{client}/backups"), None)?;
        if json {
            println!("{list}");
            return Ok(());
        }
        for backup in list["backups"].as_array().into_iter().flatten() {
            println!(
                "{:<10} {:<26} {:<12} {:<10} {}",
                backup["snapshot"]
                    .as_str()
                    .unwrap_or("-")
                    .chars()
                    .take(8)
                    .collect::<String>(),
                backup["started_at"].as_str().unwrap_or_default(),
                backup["reason"].as_str().unwrap_or_default(),
                backup["status"].as_str().unwrap_or_default(),
                match backup["verify_ok"].as_bool() {
                    Some(true) => "verified",
                    Some(false) => "VERIFY FAILED",
                    None => "",
                }
            );
        }
        if list["state"]["missing"] == true {
            println!("Missing a backup: the last success is older than the schedule allows.");
        }
        Ok(())
    }

    pub fn clone(
        &self,
        client: &str,
        domain: &str,
        snapshot: Option<&str>,
        json: bool,
    ) -> Result<()> {
        let mut body = json!({ "domain": domain });
        if let Some(snapshot) = snapshot {
            body["snapshot"] = json!(snapshot);
        }
        let cloned = self.ok("POST", &format!("/v1/clients/{client}/clone"), Some(&body))?;
        if !json {
            println!(
                "Client {} accepted as a clone of {client}.",
                cloned["client_id"].as_str().unwrap_or_default()
            );
        }
        let id = cloned["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, "clone")
    }

    /// `status ID --resources` through the API.
    pub fn resources(&self, client: &str, window: Option<&str>, json: bool) -> Result<()> {
        let path = match window {
            Some(window) => format!("/v1/clients/{client}/usage?window={}", query_escape(window)),
            None => format!("/v1/clients/{client}/usage"),
        };
        let usage = self.ok("GET", &path, None)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&usage)?);
        } else {
            let usage: stackbox_api::ClientUsageView = serde_json::from_value(usage)
                .context("the server's usage answer is not one this CLI reads")?;
            println!("Client {client}:");
            crate::monitoring::print_usage(&usage);
        }
        Ok(())
    }

    pub fn status(&self, client: Option<&str>, json: bool) -> Result<()> {
        match client {
            Some(id) => {
                let detail = self.ok("GET", &format!("/v1/clients/{id}"), None)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&detail)?);
                } else {
                    println!(
                        "Client {id}: {}",
                        detail["state"].as_str().unwrap_or_default()
                    );
                    for service in detail["health"].as_array().into_iter().flatten() {
                        println!(
                            "  {:<20} {:<10} {:<10} {}",
                            service["service"].as_str().unwrap_or_default(),
                            service["state"].as_str().unwrap_or_default(),
                            service["health"].as_str().unwrap_or("-"),
                            service["detail"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
            None => {
                let mut after: Option<String> = None;
                let mut all = Vec::new();
                loop {
                    let path = match &after {
                        Some(a) => format!("/v1/clients?limit=500&after={a}"),
                        None => "/v1/clients?limit=500".to_string(),
                    };
                    let page = self.ok("GET", &path, None)?;
                    all.extend(page["items"].as_array().cloned().unwrap_or_default());
                    match page["next"].as_str() {
                        Some(next) => after = Some(next.to_string()),
                        None => break,
                    }
                }
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({ "clients": all }))?
                    );
                } else {
                    for client in &all {
                        println!(
                            "{:<32} {:<12} {}",
                            client["client_id"].as_str().unwrap_or_default(),
                            client["state"].as_str().unwrap_or_default(),
                            client["domain"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// A configuration as `POST /v1/clients` takes it (without its id).
fn configuration(spec: &ClientSpec) -> Value {
    let mut body = json!({
        "company_name": spec.company_name.as_str(),
        "domain": spec.domain.as_str(),
        "plan": spec.plan.key(),
        "admin_email": spec.admin_email.as_str(),
        "brand_color": spec.brand_color.as_str(),
        "features": spec
            .features
            .iter()
            .map(|(app, on)| (app.key().to_string(), json!(on)))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let Some(provider) = spec.infrastructure {
        body["infrastructure"] = json!(provider.key());
    }
    body
}

/// The merge patch that makes the stored configuration (`current`, as `GET /v1/clients/{id}`
/// shows it) the file's: every field of the file, and `null` for what the file no longer
/// sets (an app switch taken out, a provider no longer named), which a merge would keep.
fn patch_to(current: &Value, spec: &ClientSpec) -> Value {
    let mut patch = configuration(spec);
    for app in current["features"]
        .as_object()
        .into_iter()
        .flat_map(|f| f.keys())
    {
        if patch["features"].get(app).is_none() {
            patch["features"][app] = Value::Null;
        }
    }
    if current.get("infrastructure").is_some_and(|p| !p.is_null()) && spec.infrastructure.is_none()
    {
        patch["infrastructure"] = Value::Null;
    }
    patch
}

/// `upgrade --all`'s wave settings; `None` leaves the server's default.
pub struct RolloutSettings {
    pub canary: Option<usize>,
    pub growth: Option<usize>,
    pub max_wave: Option<usize>,
    pub concurrency: Option<usize>,
}

impl Remote {
    /// `upgrade --all`: plans a rollout on the server and follows it to its end, one line (or
    /// JSON event) per client change and a bar of the clients finished on a terminal. Fails
    /// when the rollout halted.
    pub fn rollout(&self, to: &str, settings: &RolloutSettings, json: bool) -> Result<()> {
        let mut body = json!({ "to": to });
        for (key, value) in [
            ("canary", settings.canary),
            ("growth", settings.growth),
            ("max_wave", settings.max_wave),
            ("concurrency", settings.concurrency),
        ] {
            if let Some(value) = value {
                body[key] = json!(value);
            }
        }
        let rollout = self.ok("POST", "/v1/rollouts", Some(&body))?;
        let id = rollout["id"].as_str().unwrap_or_default().to_string();
        if json {
            println!("{}", json!({"event": "rollout", "rollout": rollout}));
        } else {
            eprintln!(
                "Rollout {id} of release {to}: {} clients, {} skipped.",
                rollout["clients"].as_array().map_or(0, Vec::len),
                rollout["counts"]["skipped"]
            );
        }
        let total = rollout["clients"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|m| m["status"] != "skipped").count());
        let bar = (!json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:30} {pos}/{len} clients upgraded {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let mut seen: std::collections::BTreeMap<String, String> = Default::default();
        let view = loop {
            let view = self.ok("GET", &format!("/v1/rollouts/{id}"), None)?;
            for member in view["clients"].as_array().into_iter().flatten() {
                let client = member["client_id"].as_str().unwrap_or_default().to_string();
                let status = member["status"].as_str().unwrap_or_default().to_string();
                if seen.get(&client) == Some(&status) {
                    continue;
                }
                let first = !seen.contains_key(&client);
                seen.insert(client.clone(), status.clone());
                if first && status == "pending" {
                    continue;
                }
                if json {
                    println!("{}", json!({"event": "client", "client": member}));
                    continue;
                }
                let line = format!(
                    "  wave {:<3} {:<40} {}{}",
                    member["wave"],
                    client,
                    status,
                    member["detail"]
                        .as_str()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                );
                match &bar {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
            if let Some(bar) = &bar {
                let done = view["counts"]["succeeded"].as_u64().unwrap_or(0)
                    + view["counts"]["failed"].as_u64().unwrap_or(0);
                bar.set_position(done);
            }
            if view["status"] != "running" {
                break view;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let status = view["status"].as_str().unwrap_or_default();
        if json {
            println!(
                "{}",
                json!({"event": "result", "success": status == "succeeded", "rollout": view})
            );
        } else {
            print_rollout(&view);
        }
        if status != "succeeded" {
            bail!(
                "rollout {id} {status}: {}",
                view["halt_reason"].as_str().unwrap_or("no details")
            );
        }
        Ok(())
    }

    /// `stackbox audit`: the newest entries of the audit log.
    pub fn audit(&self, client: Option<&str>, limit: u32, json: bool) -> Result<()> {
        if !(1..=500).contains(&limit) {
            anyhow::bail!("--limit: {limit} is not a number from 1 to 500");
        }
        let mut path = format!("/v1/audit?limit={limit}");
        if let Some(client) = client {
            let id = stackbox_core::client::ClientId::parse(client)
                .map_err(|error| anyhow::anyhow!("--client: {error}"))?;
            path.push_str(&format!("&client={id}"));
        }
        let list = self.ok("GET", &path, None)?;
        if json {
            println!("{list}");
            return Ok(());
        }
        println!(
            "{:<20} {:<9} {:<22} {:<42} {:<30} {:>6} OUTCOME",
            "AT", "ACTOR", "TOKEN", "ACTION", "CLIENT", "STATUS"
        );
        for entry in list["entries"].as_array().into_iter().flatten() {
            let text = |field: &str| entry[field].as_str().unwrap_or("-").to_string();
            println!(
                "{:<20} {:<9} {:<22} {:<42} {:<30} {:>6} {}",
                text("at").chars().take(19).collect::<String>(),
                text("actor"),
                text("token_id"),
                text("action"),
                text("client_id"),
                entry["status"],
                text("outcome")
            );
        }
        Ok(())
    }

    /// `stackbox alerts`: open alerts (or every one with `all`), newest first.
    pub fn alerts(&self, all: bool, client: Option<&str>, json: bool) -> Result<()> {
        let mut path = format!("/v1/alerts?open={}", !all);
        if let Some(client) = client {
            let id = stackbox_core::client::ClientId::parse(client)
                .map_err(|error| anyhow::anyhow!("--client: {error}"))?;
            path.push_str(&format!("&client={id}"));
        }
        let list = self.ok("GET", &path, None)?;
        if json {
            println!("{list}");
            return Ok(());
        }
        let alerts = list["alerts"].as_array().cloned().unwrap_or_default();
        if alerts.is_empty() {
            println!("{}", if all { "no alerts" } else { "no open alerts" });
            return Ok(());
        }
        println!(
            "{:<9} {:<20} {:<20} {:<30} SUMMARY",
            "STATE", "KIND", "SINCE", "CLIENT"
        );
        for alert in &alerts {
            let text = |field: &str| alert[field].as_str().unwrap_or_default().to_string();
            let client = alert["client_id"].as_str().unwrap_or("(host)");
            println!(
                "{:<9} {:<20} {:<20} {:<30} {}",
                text("state"),
                text("kind"),
                text("since").chars().take(19).collect::<String>(),
                client,
                text("summary")
            );
        }
        Ok(())
    }

    pub fn rollouts(&self, json: bool) -> Result<()> {
        let list = self.ok("GET", "/v1/rollouts", None)?;
        if json {
            println!("{list}");
            return Ok(());
        }
        println!(
            "{:<32} {:<12} {:<10} {:>9} {:>6} {:>7} {:>7}",
            "ROLLOUT", "RELEASE", "STATUS", "SUCCEEDED", "FAILED", "SKIPPED", "PENDING"
        );
        for rollout in list["rollouts"].as_array().into_iter().flatten() {
            let counts = &rollout["counts"];
            println!(
                "{:<32} {:<12} {:<10} {:>9} {:>6} {:>7} {:>7}",
                rollout["id"].as_str().unwrap_or_default(),
                rollout["to"].as_str().unwrap_or_default(),
                rollout["status"].as_str().unwrap_or_default(),
                counts["succeeded"],
                counts["failed"],
                counts["skipped"],
                counts["pending"].as_u64().unwrap_or(0) + counts["running"].as_u64().unwrap_or(0)
            );
        }
        Ok(())
    }

    pub fn show_rollout(&self, id: &str, json: bool) -> Result<()> {
        let view = self.ok("GET", &format!("/v1/rollouts/{id}"), None)?;
        if json {
            println!("{view}");
        } else {
            print_rollout(&view);
        }
        Ok(())
    }

    pub fn halt_rollout(&self, id: &str, json: bool) -> Result<()> {
        let view = self.ok("POST", &format!("/v1/rollouts/{id}/halt"), None)?;
        if json {
            println!("{view}");
        } else {
            println!("Rollout {id} halts: nothing new starts; the upgrades running finish.");
        }
        Ok(())
    }
}

/// A rollout's report: its status, then one line per client.
fn print_rollout(view: &Value) {
    println!(
        "Rollout {} to release {}: {}{}",
        view["id"].as_str().unwrap_or_default(),
        view["to"].as_str().unwrap_or_default(),
        view["status"].as_str().unwrap_or_default(),
        view["halt_reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!(
        "{:<5} {:<40} {:<10} {:<10} DETAIL",
        "WAVE", "CLIENT", "FROM", "STATUS"
    );
    for member in view["clients"].as_array().into_iter().flatten() {
        println!(
            "{:<5} {:<40} {:<10} {:<10} {}",
            member["wave"],
            member["client_id"].as_str().unwrap_or_default(),
            member["from_release"].as_str().unwrap_or_default(),
            member["status"].as_str().unwrap_or_default(),
            member["detail"].as_str().unwrap_or_default()
        );
    }
}

/// A query parameter's value, percent-encoded where it must be.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ClientSpec {
        ClientSpec::from_toml(&format!(
            "client_id = \"smith-0000000a\"\ncompany_name = \"Smith\"\n\
             domain = \"smith.example.com\"\nplan = \"professional\"\n\
             admin_email = \"owner@smith.example.com\"\n{extra}"
        ))
        .expect("valid")
    }

    #[test]
    fn the_patch_sets_every_field_of_the_file_and_clears_what_it_no_longer_sets() {
        let current = json!({
            "company_name": "Smith", "domain": "smith.example.com", "plan": "professional",
            "admin_email": "owner@smith.example.com", "brand_color": "#003366",
            "infrastructure": "local", "features": {"calcom": false, "nextcloud": false}
        });
        let file = spec("brand_color = \"#aa0000\"\n[features]\nnextcloud = true\n");
        assert_eq!(
            patch_to(&current, &file),
            json!({
                "company_name": "Smith", "domain": "smith.example.com", "plan": "professional",
                "admin_email": "owner@smith.example.com", "brand_color": "#aa0000",
                "infrastructure": null, "features": {"calcom": null, "nextcloud": true}
            })
        );
    }

    #[test]
    fn a_file_that_names_its_provider_keeps_it_in_the_patch() {
        let current = json!({"infrastructure": "local", "features": {}});
        let patch = patch_to(&current, &spec("infrastructure = \"local\"\n"));
        assert_eq!(patch["infrastructure"], "local");
        assert_eq!(patch["features"], json!({}));
    }
}
