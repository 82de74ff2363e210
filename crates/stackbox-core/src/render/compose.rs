//! `docker-compose.yml` from the desired stack (Compose Specification).
//!
//! Compose interpolates `$` in every value, so literal text is written with `$$`; secrets
//! are written as `${NAME}` and come from the bundle's `.env`. The compose file itself holds
//! no secret and can be shown, diffed and backed up freely.

use crate::operator::Limits;
use crate::render::yaml::{self, Yaml};
use crate::stack::{EnvPart, EnvValue, Healthcheck, Mount, Stack};

/// Literal text, escaped for compose interpolation.
fn lit(text: &str) -> Yaml {
    Yaml::Str(escape(text))
}

/// Escapes compose interpolation: `$` becomes `$$`.
pub fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

fn env_value(value: &EnvValue) -> Yaml {
    let mut out = String::new();
    for part in &value.0 {
        match part {
            EnvPart::Text(text) => out.push_str(&escape(text)),
            EnvPart::Secret(key) => out.push_str(&format!("${{{}}}", key.env_name())),
            EnvPart::Host(name) => out.push_str(&format!("${{{name}}}")),
        }
    }
    Yaml::Str(out)
}

fn seconds(value: u32) -> Yaml {
    Yaml::str(format!("{value}s"))
}

fn healthcheck(check: &Healthcheck) -> Yaml {
    Yaml::map()
        .with(
            "test",
            Yaml::Seq(check.test.iter().map(|part| lit(part)).collect()),
        )
        .with("interval", seconds(check.interval_seconds))
        .with("timeout", seconds(check.timeout_seconds))
        .with("retries", Yaml::Int(i64::from(check.retries)))
        .with("start_period", seconds(check.start_period_seconds))
}

fn limits(limits: &Limits) -> Yaml {
    Yaml::map().with(
        "resources",
        Yaml::map().with(
            "limits",
            Yaml::map()
                .with("cpus", Yaml::str(limits.cpus()))
                .with("memory", Yaml::str(limits.memory())),
        ),
    )
}

/// The compose file of a bundle whose secrets are in its `.env`.
pub fn render(stack: &Stack) -> String {
    render_with_secrets_from(stack, "Secrets come from .env (mode 0600) as ${NAME}.")
}

/// The compose file of a bundle whose secrets live in the secret store (no `.env` values).
pub fn render_without_secret_files(stack: &Stack) -> String {
    let store = crate::secrets::secret_store_name(&stack.client_id);
    render_with_secrets_from(
        stack,
        &format!(
            "Secrets are ${{NAME}} from the environment (AWS Secrets Manager, secret\n\
             # {store}; see .env)."
        ),
    )
}

/// The compose file; `source` is the header's sentence on where its `${NAME}` secrets come from.
fn render_with_secrets_from(stack: &Stack, source: &str) -> String {
    let mut services = Yaml::map();
    for service in &stack.services {
        let mut s = Yaml::map().with("image", lit(&service.image));
        if let Some(entrypoint) = &service.entrypoint {
            s = s.with(
                "entrypoint",
                Yaml::Seq(entrypoint.iter().map(|part| lit(part)).collect()),
            );
        }
        if let Some(command) = &service.command {
            s = s.with(
                "command",
                Yaml::Seq(command.iter().map(|part| lit(part)).collect()),
            );
        }
        s = s.with("restart", Yaml::str("unless-stopped"));
        if !service.environment.is_empty() {
            s = s.with(
                "environment",
                Yaml::Map(
                    service
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), env_value(v)))
                        .collect(),
                ),
            );
        }
        s = s.with(
            "labels",
            Yaml::Map(
                service
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), lit(v)))
                    .collect(),
            ),
        );
        s = s.with("networks", Yaml::strs(service.networks.iter().copied()));
        if !service.ports.is_empty() {
            s = s.with(
                "ports",
                Yaml::Seq(
                    service
                        .ports
                        .iter()
                        .map(|p| Yaml::str(format!("{}:{}", p.host, p.container)))
                        .collect(),
                ),
            );
        }
        if !service.mounts.is_empty() {
            let mounts = service.mounts.iter().map(|mount| match mount {
                Mount::Volume { volume, target } => format!("{volume}:{target}"),
                Mount::BundleFile {
                    source,
                    target,
                    read_only,
                } => {
                    format!("./{source}:{target}{}", if *read_only { ":ro" } else { "" })
                }
                Mount::DockerSocket => "/var/run/docker.sock:/var/run/docker.sock:ro".to_string(),
            });
            s = s.with("volumes", Yaml::Seq(mounts.map(|m| lit(&m)).collect()));
        }
        if !service.depends_on.is_empty() {
            let deps = service
                .depends_on
                .iter()
                .map(|kind| {
                    (
                        kind.name().to_string(),
                        Yaml::map().with("condition", Yaml::str("service_healthy")),
                    )
                })
                .collect();
            s = s.with("depends_on", Yaml::Map(deps));
        }
        s = s.with("healthcheck", healthcheck(&service.healthcheck));
        s = s.with("security_opt", Yaml::strs(["no-new-privileges:true"]));
        if let Some(nofile) = service.nofile {
            let n = Yaml::Int(nofile as i64);
            s = s.with(
                "ulimits",
                Yaml::map().with(
                    "nofile",
                    Yaml::map().with("soft", n.clone()).with("hard", n),
                ),
            );
        }
        if let Some(grace) = service.stop_grace_seconds {
            s = s.with("stop_grace_period", seconds(grace));
        }
        s = s.with(
            "logging",
            Yaml::map().with("driver", Yaml::str("json-file")).with(
                "options",
                Yaml::map()
                    .with("max-size", Yaml::str(service.logging.max_size.clone()))
                    .with("max-file", Yaml::str(service.logging.max_files.to_string())),
            ),
        );
        s = s.with("deploy", limits(&service.limits));
        services = services.with(service.kind.name(), s);
    }

    let mut networks = Yaml::map();
    for network in &stack.networks {
        let mut n = Yaml::map().with("name", Yaml::str(network.name.clone()));
        n = n.with(
            "labels",
            Yaml::map().with(
                crate::stack::CLIENT_LABEL,
                Yaml::str(stack.client_id.to_string()),
            ),
        );
        if network.internal {
            n = n.with("internal", Yaml::Bool(true));
        }
        networks = networks.with(network.key, n);
    }
    let mut volumes = Yaml::map();
    for volume in &stack.volumes {
        volumes = volumes.with(
            volume.key,
            Yaml::map()
                .with("name", Yaml::str(volume.name.clone()))
                .with(
                    "labels",
                    Yaml::map().with(
                        crate::stack::CLIENT_LABEL,
                        Yaml::str(stack.client_id.to_string()),
                    ),
                ),
        );
    }
    let document = Yaml::map()
        .with("services", services)
        .with("networks", networks)
        .with("volumes", volumes);
    let header = format!(
        "# Generated by StackBox for client {id}. Do not edit: change the client configuration\n\
         # and render again. {source}\n",
        id = stack.client_id
    );
    header + &yaml::to_string(&document)
}
