//! The server over a real loopback socket, spoken to with hyper's HTTP/1.1 client: what
//! goes over the wire (headers, chunked event streams, early 413s) and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use stackbox_api::{
    CreatedClient, DeploymentEnd, DeploymentEvent, DeploymentStatus, StepStatus, StepView,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::fake::{Fake, LIVE_DEPLOYMENT, OPERATOR, PASSWORD_PREFIX, TOKEN_A};
use crate::{new_client, parse_sse};

const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    address: SocketAddr,
    fake: Arc<Fake>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let fake = Arc::new(Fake::new());
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(stackbox_api::serve(listener, fake.clone(), async move {
        let _ = stop.await;
    }));
    Server {
        address,
        fake,
        shutdown: Some(shutdown),
        task,
    }
}

impl Server {
    /// Sends one request on a new connection; returns the response with its body unread.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Response<Incoming> {
        let stream = TcpStream::connect(self.address).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.address.to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                request = request.header("content-type", content_type);
                bytes
            }
            None => Vec::new(),
        };
        let request = request
            .body(Full::new(Bytes::from(bytes)))
            .expect("request");
        timeout(PATIENCE, sender.send_request(request))
            .await
            .expect("in time")
            .expect("response")
    }

    /// One request, read whole: (status, content type, body).
    async fn fetch(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Response<()>, String) {
        let response = self.send(method, path, token, body).await;
        let (parts, body) = response.into_parts();
        let bytes = timeout(PATIENCE, body.collect())
            .await
            .expect("in time")
            .expect("body")
            .to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
        (parts.status.as_u16(), Response::from_parts(parts, ()), text)
    }

    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        timeout(PATIENCE, self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task")
            .expect("serve returns Ok");
    }
}

fn header(response: &Response<()>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn the_api_works_over_a_real_socket() {
    let server = start().await;

    let (status, response, body) = server.fetch("GET", "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );

    let (status, response, _) = server.fetch("GET", "/v1/clients", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&response, "www-authenticate").as_deref(),
        Some("Bearer realm=\"stackbox\"")
    );

    let json = serde_json::to_vec(&new_client("wire.example.com")).expect("JSON");
    let (status, response, body) = server
        .fetch(
            "POST",
            "/v1/clients",
            Some(OPERATOR),
            Some(("application/json", json.clone())),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let created: CreatedClient = serde_json::from_str(&body).expect("CreatedClient");
    assert!(created
        .credentials
        .admin_password
        .starts_with(PASSWORD_PREFIX));
    assert_eq!(
        header(&response, "location"),
        Some(format!("/v1/deployments/{}", created.deployment_id))
    );
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );

    let (status, _, body) = server
        .fetch(
            "GET",
            &format!("/v1/clients/{}", created.client_id),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(!body.contains(PASSWORD_PREFIX));
    let (status, _, body) = server
        .fetch("GET", "/v1/clients?limit=1", Some(OPERATOR), None)
        .await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert!(page["next"].is_string());

    let (status, _, body) = server
        .fetch(
            "POST",
            "/v1/clients",
            Some(OPERATOR),
            Some(("text/plain", json)),
        )
        .await;
    assert_eq!(status, 415, "{body}");
    let (status, _, body) = server
        .fetch(
            "POST",
            "/v1/clients",
            Some(OPERATOR),
            Some(("application/json", b"{".to_vec())),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Over the limit: answered 413 as soon as the limit is passed.
    let big = format!("{{\"company_name\": \"{}\"}}", "x".repeat(100 * 1024));
    let (status, _, body) = server
        .fetch(
            "POST",
            "/v1/clients",
            Some(OPERATOR),
            Some(("application/json", big.into_bytes())),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"));

    let (status, response, body) = server.fetch("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(body.contains("# TYPE stackbox_clients gauge"));
    let (status, _, body) = server.fetch("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("/v1/deployments/{id}/events"));

    server.stop().await;
}

/// Reads an event stream until `events` events have come (or the stream ends).
async fn read_events(
    body: &mut Incoming,
    buffer: &mut String,
    events: usize,
) -> Vec<(Option<String>, String)> {
    loop {
        let complete = buffer
            .rfind("\n\n")
            .map(|end| &buffer[..end + 2])
            .unwrap_or("");
        let parsed = parse_sse(complete);
        if parsed.len() >= events {
            return parsed;
        }
        match timeout(PATIENCE, body.frame())
            .await
            .expect("an event in time")
        {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buffer.push_str(std::str::from_utf8(data).expect("UTF-8"));
                }
            }
            Some(Err(error)) => panic!("stream error: {error}"),
            None => return parsed,
        }
    }
}

#[tokio::test]
async fn events_stream_live_over_the_socket_then_end() {
    let server = start().await;
    let response = server
        .send(
            "GET",
            &format!("/v1/deployments/{LIVE_DEPLOYMENT}/events"),
            Some(TOKEN_A),
            None,
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut body = response.into_body();
    let mut buffer = String::new();

    // The steps as they stand.
    let events = read_events(&mut body, &mut buffer, 2).await;
    assert_eq!(events.len(), 2);
    let second: StepView = serde_json::from_str(&events[1].1).expect("StepView");
    assert_eq!(
        (second.name.as_str(), second.status),
        ("containers", StepStatus::Running)
    );

    // Then live changes, as they happen.
    server.fake.live(DeploymentEvent::Step(StepView {
        status: StepStatus::Succeeded,
        ..second.clone()
    }));
    let events = read_events(&mut body, &mut buffer, 3).await;
    let third: StepView = serde_json::from_str(&events[2].1).expect("StepView");
    assert_eq!(third.status, StepStatus::Succeeded);
    assert_eq!(events[2].0, None);

    server.fake.live(DeploymentEvent::End(DeploymentEnd {
        status: DeploymentStatus::Succeeded,
        finished_at: None,
        error: None,
    }));
    let events = read_events(&mut body, &mut buffer, 4).await;
    assert_eq!(events[3].0.as_deref(), Some("end"));
    let end: DeploymentEnd = serde_json::from_str(&events[3].1).expect("DeploymentEnd");
    assert_eq!(end.status, DeploymentStatus::Succeeded);
    // And the stream closes.
    let after = timeout(PATIENCE, body.frame())
        .await
        .expect("closed in time");
    assert!(after.is_none(), "the stream goes on after end");

    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_event_streams_and_returns() {
    let server = start().await;
    let response = server
        .send(
            "GET",
            &format!("/v1/deployments/{LIVE_DEPLOYMENT}/events"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.into_body();
    let mut buffer = String::new();
    assert_eq!(read_events(&mut body, &mut buffer, 2).await.len(), 2);
    assert!(server.fake.live_stream_open());

    let fake = server.fake.clone();
    server.stop().await;
    // The stream ended without `end` (the client would reconnect).
    let events = read_events(&mut body, &mut buffer, 3).await;
    assert_eq!(events.len(), 2, "{events:?}");
    drop(fake);
}
