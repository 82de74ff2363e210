//! The API tier's tests: the router in-process (tower's `oneshot`) and the server over a real
//! loopback socket, against an in-memory control plane ([`fake::Fake`]).

mod admin_password;
mod alerts;
mod audit;
mod backups;
mod changes;
mod fake;
mod in_process;
mod logs;
mod metrics;
mod onboarding;
mod openapi;
mod rollouts;
mod socket;
mod tokens;
mod usage;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use stackbox_api::ApiOptions;
use tower::ServiceExt;

use crate::fake::Fake;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII header").to_string())
    }

    /// The `error.code` of an error body, checking the body's shape on the way.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let error = body["error"].as_object().unwrap_or_else(|| {
            panic!("not an error body: {}", self.text());
        });
        assert!(
            error
                .keys()
                .all(|k| ["code", "message", "field"].contains(&k.as_str())),
            "{body}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "{body}"
        );
        error["code"].as_str().expect("code").to_string()
    }

    /// The `error.field` of an error body.
    pub fn error_field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_string)
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Reply {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        self
    }
}

/// The router over a fresh [`Fake`], called in-process.
pub struct Api {
    pub fake: Arc<Fake>,
    router: Router,
}

impl Default for Api {
    fn default() -> Self {
        Api::with_options(ApiOptions::default())
    }
}

impl Api {
    pub fn new() -> Api {
        Api::default()
    }

    pub fn with_options(options: ApiOptions) -> Api {
        let fake = Arc::new(Fake::new());
        let router = stackbox_api::router_with(fake.clone(), options);
        Api { fake, router }
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        self.send(
            method,
            uri,
            token.map(|token| format!("Bearer {token}")),
            body,
        )
        .await
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        authorization: Option<String>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                if !content_type.is_empty() {
                    request = request.header("content-type", content_type);
                }
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("the router is infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A request with this `Authorization` header value, whatever its scheme.
    pub async fn call_with_authorization(
        &self,
        method: &str,
        uri: &str,
        authorization: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        self.send(method, uri, Some(authorization.to_string()), body)
            .await
    }

    /// A request with these headers and raw body.
    pub async fn router_request(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).expect("request"))
            .await
            .expect("the router is infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str, token: Option<&str>) -> Reply {
        self.call("GET", uri, token, None).await
    }

    pub async fn post_json(&self, uri: &str, token: Option<&str>, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.call("POST", uri, token, Some(("application/json", bytes)))
            .await
    }
}

/// A valid body for `POST /v1/clients`.
pub fn new_client(domain: &str) -> Value {
    serde_json::json!({
        "company_name": "Smith Real Estate",
        "domain": domain,
        "plan": "professional",
        "admin_email": "owner@smithrealestate.com",
        "brand_color": "#003366",
        "features": {"calcom": false}
    })
}

/// Server-sent events as (event name, data) pairs; comments are skipped.
pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|block| !block.trim().is_empty()) {
        let mut name = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim_start().to_string());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
            } else {
                assert!(line.starts_with(':'), "unexpected SSE line {line:?}");
            }
        }
        if name.is_some() || !data.is_empty() {
            events.push((name, data.join("\n")));
        }
    }
    events
}
