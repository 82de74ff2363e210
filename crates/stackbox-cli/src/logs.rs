//! `stackbox logs` and serve's `GET /v1/clients/{id}/logs`: a client's containers found by
//! their labels, their logs read from the engine (the app's lines passed as they are).

use futures_util::stream::{self, BoxStream, StreamExt};
use stackbox_api::{LogLine, LogQuery, LogStreamKind};
use stackbox_core::client::ClientId;
use stackbox_engine::{ContainerRuntime, DockerRuntime, EngineError, LogOptions, LogStream};

/// Why a client's logs cannot be read.
#[derive(Debug)]
pub enum LogsError {
    /// `service` is not one of the client's (its services named).
    UnknownService(String),
    Engine(EngineError),
}

impl std::fmt::Display for LogsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogsError::UnknownService(message) => f.write_str(message),
            LogsError::Engine(error) => write!(f, "{error}"),
        }
    }
}

/// The client's log lines: each container's last `tail` (all of them, in time order), then
/// with `follow` every new line until the containers stop. `services` are the client's
/// services; `query.service` must be one of them.
pub async fn client_logs(
    docker: &DockerRuntime,
    client: &ClientId,
    services: &[String],
    query: &LogQuery,
) -> Result<BoxStream<'static, LogLine>, LogsError> {
    if let Some(service) = &query.service {
        if !services.contains(service) {
            return Err(LogsError::UnknownService(format!(
                "{service:?} is not one of this client's services ({})",
                services.join(", ")
            )));
        }
    }
    let mut containers = docker
        .list_client_containers(Some(client))
        .await
        .map_err(LogsError::Engine)?
        .into_iter()
        .map(|(_, container)| container)
        .filter_map(|container| {
            let service = container.service.clone()?;
            let wanted = query
                .service
                .as_ref()
                .map_or(services.contains(&service), |only| *only == service);
            wanted.then_some((service, container.id))
        })
        .collect::<Vec<_>>();
    containers.sort();
    let options = LogOptions {
        since: query.since,
        tail: Some(query.tail),
        follow: query.follow,
    };
    let streams = containers.into_iter().map(|(service, id)| {
        docker
            .logs(&id, options)
            .take_while(|entry| {
                if let Err(error) = entry {
                    tracing::warn!(%error, "a container's log stream ended with an error");
                }
                std::future::ready(entry.is_ok())
            })
            .filter_map(move |entry| {
                std::future::ready(entry.ok().map(|entry| LogLine {
                    service: service.clone(),
                    stream: match entry.stream {
                        LogStream::Stdout => LogStreamKind::Stdout,
                        LogStream::Stderr => LogStreamKind::Stderr,
                    },
                    time: entry.time,
                    line: entry.line,
                }))
            })
            .boxed()
    });
    if query.follow {
        return Ok(stream::select_all(streams).boxed());
    }
    let mut lines = Vec::new();
    for mut container in streams {
        while let Some(line) = container.next().await {
            lines.push(line);
        }
    }
    lines.sort_by(|a, b| a.time.cmp(&b.time));
    let skip = lines.len().saturating_sub(query.tail as usize);
    lines.drain(..skip);
    Ok(stream::iter(lines).boxed())
}

/// One line as `stackbox logs` prints it: `SERVICE | LINE`, or the line's JSON.
pub fn print_line(line: &LogLine, json: bool) {
    if json {
        println!("{}", serde_json::to_string(line).unwrap_or_default());
    } else {
        println!("{:<10} | {}", line.service, line.line);
    }
}

/// `stackbox logs` on the engine's host: the client's containers by their labels.
pub fn run_local(id: &str, query: LogQuery, json: bool) -> anyhow::Result<()> {
    let id = ClientId::parse(id).map_err(|error| anyhow::anyhow!("{error}"))?;
    let rt = crate::lifecycle::runtime()?;
    rt.block_on(async {
        let docker = DockerRuntime::connect().await?;
        let mut services: Vec<String> = docker
            .list_client_containers(Some(&id))
            .await?
            .into_iter()
            .filter_map(|(_, container)| container.service)
            .collect();
        services.sort();
        services.dedup();
        if services.is_empty() {
            anyhow::bail!("client {id} has no containers on this engine");
        }
        let mut lines = client_logs(&docker, &id, &services, &query)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        while let Some(line) = lines.next().await {
            print_line(&line, json);
        }
        Ok(())
    })
}
