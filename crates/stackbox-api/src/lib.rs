//! The HTTP layer of `stackbox serve`: the REST API, server-sent events, Prometheus metrics
//! and the OpenAPI document, written with axum.
//!
//! The crate defines what it needs from the control plane, the [`ControlPlane`] trait, and
//! never touches a database or an engine: `stackbox-control` implements the trait over the
//! store and the engine; the tests implement it in memory.
//!
//! # Routes
//!
//! | route | who | answer |
//! | --- | --- | --- |
//! | `GET /healthz` | anyone | 200 `{"status": "ok"}` |
//! | `GET /metrics` | anyone (see below) | Prometheus text format 0.0.4 |
//! | `GET /openapi.json` | anyone | OpenAPI 3.1, generated from the handlers |
//! | `POST /v1/clients` | operator | 202 [`CreatedClient`] (credentials, once) |
//! | `GET /v1/clients?state=&plan=&after=&limit=` | operator | 200 `{items, next}` |
//! | `GET /v1/clients/{id}` | operator, that client | 200 [`ClientDetail`] |
//! | `PATCH /v1/clients/{id}` (a JSON merge patch) | operator | 202 [`ClientChange`]; 200 [`ClientDetail`] when nothing changes |
//! | `GET /v1/clients/{id}/deployments?after=&limit=` | operator, that client | 200 `{items, next}` of [`DeploymentSummary`] |
//! | `POST /v1/clients/{id}/stop\|start\|redeploy` | operator | 202 [`DeploymentRef`] |
//! | `POST /v1/clients/{id}/admin-password` | operator | 202 [`AdminPasswordReset`] (the new password, once) |
//! | `DELETE /v1/clients/{id}?confirm={id}` | operator | 202 [`DeploymentRef`] |
//! | `POST /v1/clients/{id}/backups` | operator | 202 [`DeploymentRef`] (a `backup`) |
//! | `GET /v1/clients/{id}/backups` | operator, that client | 200 [`BackupList`] |
//! | `POST /v1/clients/{id}/backups/{snapshot}/restore?confirm={id}` | operator | 202 [`DeploymentRef`] |
//! | `POST /v1/clients/{id}/backups/{snapshot}/verify` | operator | 202 [`DeploymentRef`] |
//! | `POST /v1/clients/{id}/clone` | operator | 202 [`ClonedClient`] (the new client) |
//! | `GET /v1/deployments/{id}` | operator, its client | 200 [`DeploymentView`] |
//! | `GET /v1/deployments/{id}/events` | operator, its client | `text/event-stream` |
//! | `GET /v1/tokens` | operator | 200 [`TokenList`] (never a token or its hash) |
//! | `DELETE /v1/tokens/{id}` | operator | 204; the token is refused from the next request on |
//! | `POST /v1/signup` | anyone, rate-limited | 201 [`SignupAccepted`] (the checkout URL) |
//! | `POST /v1/webhooks/stripe` | Stripe (signed) | 200; 400 for a bad or stale signature |
//! | `GET\|POST /welcome/{token}` | the link's holder | HTML: confirm, then reveal once; 410 after |
//!
//! Every 202 also carries `Location: /v1/deployments/{deployment_id}`. Every response carries
//! `Cache-Control: no-store` (unless the handler set its own) and
//! `X-Content-Type-Options: nosniff`.
//!
//! # Errors
//!
//! Always `{"error": {"code", "message", "field"?}}` ([`ErrorBody`]): 400 malformed JSON, an
//! unreadable query string or a wrong `confirm`; 401 with `WWW-Authenticate: Bearer` without a
//! valid token; 403 a client token asking for a write or the list; 404 unknown (or invalid, or
//! not the client token's own) ids and routes; 405; 409 conflicts; 413 bodies over the limit;
//! 415 a body that is not `application/json` (or, for a PATCH, `application/merge-patch+json`);
//! 422 unknown fields and unacceptable values,
//! naming the field; 500 with a generic message (the detail goes to the log through `tracing`,
//! never to the response); 503 with `Retry-After`, also when a token cannot be checked (a store
//! outage is not a revoked token). A panic in a handler or in the control plane answers 500
//! too.
//!
//! # Decisions
//!
//! - **Client tokens get 404, not 403, for other clients' resources**: a 403 would confirm that
//!   the id exists. Writes answer 403 whatever the target, which reveals nothing either. A
//!   client token may not list clients (403): the list is the operator's view.
//! - **Invalid ids in paths answer 404**, exactly like unknown ones, and never reach the
//!   control plane: a client id must parse as a `ClientId`, a deployment id must be at most 64
//!   characters of `[A-Za-z0-9_-]`, a snapshot must be `latest` or 8 to 64 lowercase hex
//!   digits. (A snapshot in the body of a clone is a value, so a bad one is a 422 naming
//!   `snapshot`.)
//! - **A restore asks for `confirm` like a delete**: both replace or destroy the client's data.
//!   A verify does not: it touches only a throwaway copy.
//! - **`/metrics` needs no token by default**: it carries counts, durations and per-client
//!   resource use labelled by client id and service (no domain, name or secret), and the only
//!   tokens that exist are operator tokens (full write access) and client tokens: making
//!   Prometheus hold an operator token would widen what a leaked scrape credential can do. An
//!   operator whose listener is reachable beyond a private network starts the server with
//!   [`MetricsAccess::Operator`] (`[monitor] metrics = "operator"` for `stackbox serve`), or
//!   binds the listener on a private address. `/healthz` and `/openapi.json` are public too (no data).
//! - **Unknown query parameters are refused (422)**, like unknown body fields: `?stat=running`
//!   silently listing every client would be worse than an error.
//! - **`verify_token` returns `Result<Option<Authenticated>, ControlError>`** (the first sketch
//!   had `Option`): with `Option`, a store outage could only answer 401, and a client told its
//!   token is invalid may throw it away. [`Authenticated`] carries the token's id with its
//!   [`Principal`], so that every change the API asks for names who asked (the history's
//!   `requested_by`); the token itself never leaves the request.
//! - **A revoked token is refused from the next request on**: neither the API nor its control
//!   plane keeps a verified token. A cache of verified tokens would make `DELETE
//!   /v1/tokens/{id}`, or `stackbox token revoke` run beside the server, a promise kept only
//!   after the cache's lifetime, for the one token an operator most wants gone.
//! - **`PATCH /v1/clients/{id}` is a merge patch of the configuration in the shape of `POST
//!   /v1/clients`**, merged into the stored configuration and then validated by the same
//!   code as a new client's body: one set of rules and messages for both. A patch that
//!   changes nothing answers 200 and journals nothing, so a client that sends its whole file
//!   every time does not redeploy for nothing.
//! - **One object-safe adapter inside**: the public trait uses `impl Future` (no boxing for the
//!   implementer); the router boxes each call once (`DynControl`), so the handlers are plain
//!   functions that `utoipa-axum` can register and the generic code is compiled once.
//! - **Event streams end when the server shuts down**, so graceful shutdown is not held up by
//!   a client following a long deployment; the client reconnects and gets every step again.

mod audit;
mod auth;
mod control;
mod dto;
mod error;
mod input;
mod metrics;
mod monitoring;
mod monitoring_routes;
mod onboarding;
mod routes;
mod time;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use audit::{AuditActor, AuditEntry, AuditEntryView, AuditList, AuditQuery};
pub use control::{
    Authenticated, ClientAction, ControlError, ControlPlane, DeploymentQuery, HtmlPage, ListQuery,
    LogQuery, MetricsSnapshot, Principal, SignupAccepted, WebhookOutcome,
};
pub use dto::{AdminPasswordReset, AdminResetOutcome, AppPasswordReset};
pub use dto::{
    BackupList, BackupReason, BackupState, BackupStatus, BackupView, ClientChange,
    ClientConfiguration, ClientDetail, ClientPatch, ClientState, ClientSummary, CloneRequest,
    ClonedClient, CreatedClient, Credentials, DeploymentEnd, DeploymentEvent, DeploymentKind,
    DeploymentOutcome, DeploymentRef, DeploymentStatus, DeploymentSummary, DeploymentView,
    ErrorBody, ErrorDetail, FieldChange, Health, HealthStatus, NewClient, Page, RequestedBy,
    RequesterKind, RolloutCounts, RolloutList, RolloutMemberStatus, RolloutMemberView,
    RolloutRequest, RolloutStatus, RolloutView, RotationRequest, ServiceHealth, ServiceState,
    StepProgress, StepStatus, StepView, StepsSummary, TokenList, TokenRole, TokenView,
    UpgradeRequest,
};
pub use dto::{LogLine, LogLines, LogStreamKind};
pub use error::{INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE};
pub use input::parse_new_client;
pub use metrics::{
    DurationHistogram, BACKUP_STATUSES, CONTENT_TYPE as METRICS_CONTENT_TYPE,
    DURATION_BUCKETS_SECONDS, MAIL_STATUSES,
};
pub use monitoring::{
    AlertList, AlertQuery, AlertView, ClientMetrics, ClientUsageView, ProbeMetrics,
    ServiceUsageView, UsagePointView,
};
pub use onboarding::{SignupLimits, WEBHOOK_BODY_LIMIT};
pub use time::Timestamp;

use crate::error::{ApiError, Resource};
use crate::routes::{AppState, Shutdown};

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsAccess {
    /// Anyone (the default; see the crate documentation for why).
    #[default]
    Public,
    /// Only an operator token.
    Operator,
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiOptions {
    /// The largest request body accepted (413 above it). Default 64 KiB; a client
    /// configuration is well under 1 KiB.
    pub body_limit_bytes: usize,
    pub metrics_access: MetricsAccess,
    /// Sign-ups accepted per network address and per e-mail address.
    pub signup_limits: SignupLimits,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            body_limit_bytes: 64 * 1024,
            metrics_access: MetricsAccess::Public,
            signup_limits: SignupLimits::default(),
        }
    }
}

/// The API over a control plane, with the default options.
pub fn router<C: ControlPlane>(control: Arc<C>) -> Router {
    router_with(control, ApiOptions::default())
}

/// The API over a control plane.
pub fn router_with<C: ControlPlane>(control: Arc<C>, options: ApiOptions) -> Router {
    build(control, options, Shutdown::never())
}

/// The OpenAPI document that `GET /openapi.json` serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::api_router().into_openapi()
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, ends event
/// streams and waits for the requests in flight. To bound that wait, race this future with a
/// timeout.
pub async fn serve<C: ControlPlane>(
    listener: TcpListener,
    control: Arc<C>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, control, ApiOptions::default(), shutdown).await
}

/// [`serve`] with options.
pub async fn serve_with<C: ControlPlane>(
    listener: TcpListener,
    control: Arc<C>,
    options: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (started, receiver) = watch::channel(false);
    let app = build(control, options, Shutdown::on(receiver));
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        // Responses are written whole; do not let Nagle hold the last segment back.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
    });
    // The peer's address reaches the handlers (the sign-up's rate limit per address).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, event streams closed");
            let _ = started.send(true);
        })
        .await
}

fn build<C: ControlPlane>(control: Arc<C>, options: ApiOptions, shutdown: Shutdown) -> Router {
    let (router, openapi) = routes::api_router().split_for_parts();
    let openapi = match serde_json::to_vec(&openapi) {
        Ok(json) => json.into(),
        Err(error) => {
            tracing::error!(%error, "the OpenAPI document could not be serialized");
            axum::body::Bytes::from_static(b"{}")
        }
    };
    let body_limit = options.body_limit_bytes;
    let state = AppState {
        control,
        options: Arc::new(options),
        openapi,
        shutdown,
        limiter: Arc::default(),
    };
    router
        .fallback(|| async { ApiError::NotFound(Resource::Route) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(observe))
        // Outside `observe`: a handler's panic is recorded as the 500 it was answered with.
        .layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .with_state(state)
}

/// Around every request: turns a panic into a generic 500, adds the common headers and logs
/// the request (the route template, not the raw path).
async fn observe(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let started = Instant::now();
    let mut response = match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => ApiError::Internal("a request handler panicked".to_string()).into_response(),
    };
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let status = response.status().as_u16();
    let route = route.as_deref().unwrap_or("(no route)");
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, route, status, elapsed_ms, "request failed");
    } else {
        tracing::debug!(%method, route, status, elapsed_ms, "request");
    }
    response
}
