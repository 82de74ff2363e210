//! The lifecycle commands against a running `stackbox serve` (`--server URL --token T`, or
//! `STACKBOX_SERVER` and `STACKBOX_TOKEN`): the same commands, through the REST API.
//!
//! Plain HTTP/1.1 over TCP (the server listens on a private address or behind the operator's
//! TLS proxy); `https://` is refused with a message rather than sent in clear.

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
        let mut stream = TcpStream::connect(&self.host)
            .with_context(|| format!("cannot reach the StackBox server at http://{}", self.host))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.host, self.token
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
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
            Some(id) => self.ok("POST", &format!("/v1/clients/{id}/redeploy"), None)?,
            None => {
                let body = json!({
                    "company_name": spec.company_name.as_str(),
                    "domain": spec.domain.to_string(),
                    "plan": spec.plan.key(),
                    "admin_email": spec.admin_email.as_str(),
                    "brand_color": spec.brand_color.as_str(),
                    "features": spec.features.iter().map(|(app, on)| (app.key().to_string(), json!(on))).collect::<serde_json::Map<_, _>>(),
                });
                let created = self.ok("POST", "/v1/clients", Some(&body))?;
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

    pub fn action(&self, client: &str, action: &str, json: bool) -> Result<()> {
        let deployment = self.ok("POST", &format!("/v1/clients/{client}/{action}"), None)?;
        let id = deployment["deployment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.finish(&id, json, action)
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
