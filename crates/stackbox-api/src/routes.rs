//! The routes: each handler carries its OpenAPI description (`#[utoipa::path]`), and
//! [`api_router`] registers them with `utoipa_axum::routes!`, which takes the method and path
//! from that same description. The router and `/openapi.json` therefore come from one table.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use stackbox_core::client::ClientId;
use stackbox_core::plan::Plan;
use tokio::sync::watch;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{authenticate, Caller};
use crate::control::{ClientAction, DeploymentQuery, DynControl, ListQuery, LogQuery, Principal};
use crate::dto::AdminPasswordReset;
use crate::dto::{
    BackupList, ClientChange, ClientDetail, ClientPatch, ClientState, ClientSummary, CloneRequest,
    ClonedClient, CreatedClient, DeploymentEvent, DeploymentRef, DeploymentSummary, DeploymentView,
    ErrorBody, Health, LogLines, NewClient, Page, RolloutList, RolloutRequest, RolloutView,
    RotationRequest, TokenList, UpgradeRequest,
};
use crate::error::{ApiError, Resource};
use crate::input::parse_admin_password_request;
use crate::input::{
    apply_client_patch, is_snapshot_ref, parse_client_patch, parse_clone_request, parse_new_client,
    parse_rollout_request, parse_rotation_request, parse_upgrade_request,
};
use crate::{metrics, ApiOptions, MetricsAccess};

/// How often an idle event stream sends a comment, so that proxies keep it open.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The longest deployment id passed to the control plane.
const MAX_DEPLOYMENT_ID_BYTES: usize = 64;

/// The longest token id passed to the control plane (they are 20 characters).
const MAX_TOKEN_ID_BYTES: usize = 64;

/// The content type of JSON bodies.
pub(crate) const JSON: &[&str] = &["application/json"];

/// The content types `PATCH /v1/clients/{id}` takes.
const MERGE_PATCH: &[&str] = &["application/merge-patch+json", "application/json"];

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) control: Arc<dyn DynControl>,
    pub(crate) options: Arc<ApiOptions>,
    /// `/openapi.json`, serialized once.
    pub(crate) openapi: Bytes,
    pub(crate) shutdown: Shutdown,
    /// Sign-ups per address and per e-mail.
    pub(crate) limiter: Arc<crate::onboarding::RateLimiter>,
}

/// Fires when the server shuts down, so that event streams end and graceful shutdown is not
/// held up by a client following a long deployment.
#[derive(Clone)]
pub(crate) struct Shutdown(Option<watch::Receiver<bool>>);

impl Shutdown {
    pub(crate) fn never() -> Shutdown {
        Shutdown(None)
    }

    pub(crate) fn on(receiver: watch::Receiver<bool>) -> Shutdown {
        Shutdown(Some(receiver))
    }

    /// Completes once shutdown starts (or its sender is gone); never for [`Shutdown::never`].
    fn fired(self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            match self.0 {
                Some(mut receiver) => {
                    let _ = receiver.wait_for(|started| *started).await;
                }
                None => std::future::pending().await,
            }
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StackBox API",
        description = "The control plane of StackBox: clients, their deployments, health and metrics. \
            Every `/v1` route needs `Authorization: Bearer <token>`. An operator token may do \
            everything; a client token may only read its own client, its deployments and its \
            backups (403 on writes, 404 for anything else). Errors are `{\"error\": {\"code\", \"message\", \
            \"field\"?}}`; a 500 never carries internal detail."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "clients", description = "Create, list, read, change, stop, start, redeploy and delete clients."),
        (name = "deployments", description = "Follow what the control plane does for a client, and a client's history."),
        (name = "tokens", description = "The API tokens: list and revoke (operator only)."),
        (name = "rollouts", description = "Move many clients to a release in waves, halting on the first failure (operator only)."),
        (name = "backups", description = "Back a client up, list its backups, verify or restore one, clone a client from one."),
        (name = "alerts", description = "What the control plane saw go wrong, held before it fires, and when it was over."),
        (name = "audit", description = "Every change asked through the API: who, what, when, the result (append-only)."),
        (name = "service", description = "Liveness, metrics and this document; no token needed."),
        (name = "onboarding", description = "Public: sign-up, the payment provider's webhook, the one-time credentials page."),
    )
)]
struct ApiDoc;

/// Adds the `bearer` security scheme the `/v1` routes refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every route, with its OpenAPI description.
pub(crate) fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
        .routes(routes!(create_client, list_clients))
        .routes(routes!(get_client, update_client, delete_client))
        .routes(routes!(client_deployments))
        .routes(routes!(stop_client))
        .routes(routes!(start_client))
        .routes(routes!(redeploy_client))
        .routes(routes!(resend_welcome))
        .routes(routes!(rotate_secrets))
        .routes(routes!(reset_admin_password))
        .routes(routes!(upgrade_client))
        .routes(routes!(create_backup, list_backups))
        .routes(routes!(client_logs))
        .routes(routes!(crate::monitoring_routes::client_usage))
        .routes(routes!(crate::monitoring_routes::list_alerts))
        .routes(routes!(crate::audit::list_audit))
        .routes(routes!(restore_backup))
        .routes(routes!(verify_backup))
        .routes(routes!(clone_client))
        .routes(routes!(get_deployment))
        .routes(routes!(deployment_events))
        .routes(routes!(create_rollout, list_rollouts))
        .routes(routes!(get_rollout))
        .routes(routes!(halt_rollout))
        .routes(routes!(list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(crate::onboarding::signup))
        .routes(routes!(crate::onboarding::stripe_webhook))
        .routes(routes!(
            crate::onboarding::credentials_confirm,
            crate::onboarding::credentials_reveal
        ))
}

/// The query parameters of `GET /v1/clients` (documentation; [`list_query`] reads them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// Only clients in this state.
    state: Option<ClientState>,
    /// Only clients on this plan.
    #[param(schema_with = crate::dto::plan_schema)]
    plan: Option<String>,
    /// The `next` of the previous page: clients whose id sorts after it.
    after: Option<String>,
    /// Page size, 1 to 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// The query parameters of `GET /v1/clients/{id}/deployments` (documentation;
/// [`deployment_query`] reads them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct HistoryParams {
    /// The `next` of the previous page: deployments older than that one.
    after: Option<String>,
    /// Page size, 1 to 500; 50 when left out.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// The query parameters of `DELETE /v1/clients/{id}` (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct DeleteParams {
    /// Must repeat the client id: a guard against deleting the wrong client.
    confirm: String,
    /// `true` deletes the client's backups too; by default they are kept for the operator's
    /// retention period after a destroy, so that the client can come back.
    delete_backups: Option<bool>,
}

/// The query parameters of `GET /v1/clients/{id}/logs` (documentation; [`log_query`] reads
/// them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LogParams {
    /// Only this service's container (`website`, `nextcloud`, …); every container when left out.
    service: Option<String>,
    /// Only lines since then: a duration back from now (`30s`, `10m`, `2h`, `1d`) or an RFC
    /// 3339 time.
    since: Option<String>,
    /// The last this many lines, 1 to 5000; 200 when left out.
    #[param(minimum = 1, maximum = 5000)]
    tail: Option<u32>,
    /// `true` streams new lines as server-sent events until the client's containers stop.
    follow: Option<bool>,
}

/// The query parameters of `POST /v1/clients/{id}/backups/{snapshot}/restore` (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct RestoreParams {
    /// Must repeat the client id: a guard against replacing the wrong client's data.
    confirm: String,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    summary = "Liveness: the server answers.",
    responses((status = 200, body = Health, description = "The server is up."))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
    })
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    summary = "Prometheus metrics (text exposition format 0.0.4).",
    description = "Clients by state, finished deployments by outcome, histograms of \
        deployment and step durations, mail by status, backups by status, the clients missing \
        a backup and the age of the oldest last successful backup. Aggregates only: no client \
        id, domain or secret. No token is needed unless the server was started to require an \
        operator token for it.",
    responses(
        (status = 200, body = String, content_type = "text/plain; version=0.0.4", description = "The metrics."),
        (status = 401, body = ErrorBody, description = "Only when metrics need an operator token."),
        (status = 403, body = ErrorBody, description = "Only when metrics need an operator token."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn metrics_text(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.options.metrics_access == MetricsAccess::Operator {
        Caller(authenticate(&state, &headers).await?).require_operator()?;
    }
    let snapshot = state
        .control
        .metrics()
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Route))?;
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&snapshot),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    summary = "This document (OpenAPI 3.1), generated from the server's code.",
    responses((status = 200, body = Object, content_type = "application/json", description = "The OpenAPI document."))
)]
async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

#[utoipa::path(
    post,
    path = "/v1/clients",
    tag = "clients",
    summary = "Create a client and start its first deployment.",
    description = "The body is the client configuration with the fields of a client's TOML \
        file. The answer carries the generated admin credentials: this response only, never \
        again.",
    request_body(content = NewClient, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = CreatedClient, description = "Accepted: the client is stored and its first deployment journaled.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 409, body = ErrorBody, description = "The domain or the pinned id is taken."),
        (status = 413, body = ErrorBody, description = "The body is over the size limit (64 KiB by default)."),
        (status = 415, body = ErrorBody, description = "Not `Content-Type: application/json`."),
        (status = 422, body = ErrorBody, description = "An unknown field, or a value that is not acceptable; `field` names it."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn create_client(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    let body = read_body(&state, body)?;
    let spec = parse_new_client(&body)?;
    let created = state
        .control
        .create_client(spec)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    tracing::info!(client = %created.client_id, deployment = %created.deployment_id, "client created");
    Ok(accepted(&created.deployment_id, Json(&created)))
}

#[utoipa::path(
    get,
    path = "/v1/clients",
    tag = "clients",
    summary = "List clients, in id order, a page at a time.",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Page<ClientSummary>, description = "One page of clients."),
        (status = 400, body = ErrorBody, description = "The query string cannot be read."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token (it may read only its own client)."),
        (status = 422, body = ErrorBody, description = "A parameter is not acceptable; `field` names it."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn list_clients(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Page<ClientSummary>>, ApiError> {
    if let Principal::Client(_) = caller.principal() {
        return Err(ApiError::Forbidden(
            "a client token may read only its own client: GET /v1/clients/{id}",
        ));
    }
    let query = list_query(query)?;
    let page = state
        .control
        .list_clients(query)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/v1/clients/{id}",
    tag = "clients",
    summary = "A client: configuration (no secrets), state, service URLs, per-service health.",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ClientDetail, description = "The client."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "No such client (or not the client token's own)."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn get_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ClientDetail>, ApiError> {
    let id = client_id(id)?;
    if !caller.may_read(&id) {
        return Err(ApiError::NotFound(Resource::Client));
    }
    let detail = state
        .control
        .get_client(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok(Json(detail))
}

#[utoipa::path(
    patch,
    path = "/v1/clients/{id}",
    tag = "clients",
    summary = "Change a client's configuration and redeploy it.",
    description = "The body is a JSON merge patch (RFC 7386) of the client's configuration, in \
        the shape `POST /v1/clients` takes: a field left out stays, `null` removes one (an \
        optional field takes its default), `features` merges app by app. The result is \
        validated exactly like a new client's configuration. The new configuration is stored, \
        the secrets new apps need are generated, and a redeploy that applies it is journaled \
        with who asked and what changed (see `GET /v1/clients/{id}/deployments`). A patch \
        that changes nothing answers 200 with the client and journals nothing. The id and the \
        provider a client runs on cannot change.",
    params(("id" = String, Path, description = "The client id.")),
    request_body(
        description = "The fields to change.",
        content(
            (ClientPatch = "application/merge-patch+json"),
            (ClientPatch = "application/json"),
        )
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ClientDetail, description = "Nothing changed: the client as it is; nothing was journaled."),
        (status = 202, body = ClientChange, description = "Accepted: the new configuration is stored and its redeploy journaled.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment, its configuration changed meanwhile, or the domain belongs to another client."),
        (status = 413, body = ErrorBody, description = "The body is over the size limit (64 KiB by default)."),
        (status = 415, body = ErrorBody, description = "Not `Content-Type: application/merge-patch+json` or `application/json`."),
        (status = 422, body = ErrorBody, description = "An unknown field, another `client_id`, a changed `infrastructure`, or a value that is not acceptable; `field` names it."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn update_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    if !has_content_type(&headers, MERGE_PATCH) {
        return Err(ApiError::UnsupportedMediaType(MERGE_PATCH));
    }
    let body = read_body(&state, body)?;
    let patch = parse_client_patch(&body, &id)?;
    let not_found = |error| ApiError::from_control(error, Resource::Client);
    let current = state.control.client_spec(&id).await.map_err(not_found)?;
    let spec = apply_client_patch(&current, &id, patch)?;
    let changed = if spec == current {
        None
    } else {
        state
            .control
            .update_client(&id, spec, &caller.0)
            .await
            .map_err(not_found)?
    };
    match changed {
        Some(change) => {
            tracing::info!(client = %id, deployment = %change.deployment_id, fields = ?change.changes.keys().collect::<Vec<_>>(), "client change accepted");
            Ok(accepted(&change.deployment_id, Json(&change)))
        }
        None => {
            let detail = state.control.get_client(&id).await.map_err(not_found)?;
            Ok(Json(detail).into_response())
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/clients/{id}/deployments",
    tag = "deployments",
    summary = "A client's deployments, newest first, a page at a time: who asked, how it went, what changed.",
    description = "Each deployment with its kind, status, times, its steps in brief, who asked \
        for it (the API token's id and role, or the schedule) and, for a change of the \
        configuration, each changed field's old and new value (never a secret). The steps in \
        full are at `/v1/deployments/{id}`.",
    params(("id" = String, Path, description = "The client id."), HistoryParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Page<DeploymentSummary>, description = "One page of the client's deployments."),
        (status = 400, body = ErrorBody, description = "The query string cannot be read."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "No such client (or not the client token's own)."),
        (status = 422, body = ErrorBody, description = "A parameter is not acceptable; `field` names it."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn client_deployments(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Page<DeploymentSummary>>, ApiError> {
    let id = client_id(id)?;
    if !caller.may_read(&id) {
        return Err(ApiError::NotFound(Resource::Client));
    }
    let query = deployment_query(query)?;
    let page = state
        .control
        .client_deployments(&id, query)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok(Json(page))
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/stop",
    tag = "clients",
    summary = "Stop a client's containers (data kept).",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the deployment is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn stop_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    client_action(state, caller, id, ClientAction::Stop).await
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/start",
    tag = "clients",
    summary = "Start a stopped client, back to healthy.",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the deployment is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn start_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    client_action(state, caller, id, ClientAction::Start).await
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/welcome",
    tag = "clients",
    summary = "Send the welcome e-mail again, with a new one-time link to the password.",
    description = "For an owner who lost the e-mail or whose link expired or was used: earlier \
        links stop working, and the new e-mail goes through the outbox like the first.",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = Object, description = "Queued."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "No mail server is configured."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn resend_welcome(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    state
        .control
        .resend_welcome(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "client_id": id.as_str(), "welcome": "queued" })),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/redeploy",
    tag = "clients",
    summary = "Render and converge again; only what changed is recreated.",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the deployment is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn redeploy_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    client_action(state, caller, id, ClientAction::Redeploy).await
}

async fn client_action(
    state: AppState,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    action: ClientAction,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    let deployment = state
        .control
        .client_action(&id, action, &caller.0)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    tracing::info!(client = %id, deployment = %deployment.deployment_id, ?action, "client action accepted");
    Ok(accepted(&deployment.deployment_id, Json(&deployment)))
}

#[utoipa::path(
    delete,
    path = "/v1/clients/{id}",
    tag = "clients",
    summary = "Destroy a client: containers, networks, volumes, bundle and secrets.",
    params(("id" = String, Path, description = "The client id."), DeleteParams),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the deployment is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "`confirm` is missing or is not the client id; `field` is `confirm`."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 422, body = ErrorBody, description = "An unknown query parameter."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn delete_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    let mut rest = confirmed(
        query,
        &id,
        "deleting a client destroys its data",
        &["confirm", "delete_backups"],
    )?;
    let delete_backups = match rest.remove("delete_backups").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "delete_backups",
                "delete_backups: is true or false",
            ))
        }
    };
    let deployment = state
        .control
        .delete_client(&id, delete_backups, &caller.0)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    tracing::info!(client = %id, deployment = %deployment.deployment_id, "client deletion accepted");
    Ok(accepted(&deployment.deployment_id, Json(&deployment)))
}

/// `?confirm=<client id>` and no other parameter: the guard of the routes that destroy or
/// replace a client's data. `consequence` tells the caller why it is asked for.
fn require_confirm(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    id: &ClientId,
    consequence: &str,
) -> Result<(), ApiError> {
    confirmed(query, id, consequence, &["confirm"]).map(|_| ())
}

/// Checks `confirm` among the `allowed` parameters; the others, for the route.
fn confirmed(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    id: &ClientId,
    consequence: &str,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut query = query_params(query, allowed)?;
    match query.remove("confirm") {
        Some(confirm) if confirm == id.as_str() => Ok(query),
        Some(_) => Err(ApiError::BadRequest {
            field: Some("confirm".to_string()),
            message: format!("confirm: is not the client id; repeat it: ?confirm={id}"),
        }),
        None => Err(ApiError::BadRequest {
            field: Some("confirm".to_string()),
            message: format!("confirm: is missing; {consequence}, so repeat its id: ?confirm={id}"),
        }),
    }
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/rotate-secrets",
    tag = "clients",
    summary = "Give a running client new secrets, with rollback to the previous ones.",
    description = "The databases are told the new passwords first, then every service that uses \
        one is recreated, health-gated; if anything fails, the databases, the services, the \
        bundle and the store return to the previous secrets (the deployment ends \
        `compensated`). Secrets bound to the apps' data (the admin password, EspoCRM's and \
        Nextcloud's database passwords, Cal.com's and Plausible's encryption keys) are refused \
        with the reason. No new value is ever shown.",
    params(("id" = String, Path, description = "The client id.")),
    request_body(content = RotationRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the rotation is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 415, body = ErrorBody, description = "A body that is not `application/json`."),
        (status = 422, body = ErrorBody, description = "`only` names a secret the client does not use or that cannot be rotated live; `field` is `only`."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn rotate_secrets(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    let body = read_body(&state, body)?;
    if !body.iter().all(u8::is_ascii_whitespace) && !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    let only = parse_rotation_request(&body)?;
    let deployment = state
        .control
        .rotate_secrets(&id, only, &caller.0)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    tracing::info!(client = %id, deployment = %deployment.deployment_id, "secret rotation accepted");
    Ok(accepted(&deployment.deployment_id, Json(&deployment)))
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/admin-password",
    tag = "clients",
    summary = "Give a running client a new admin password in every app that has an admin, shown once.",
    description = "A new password is generated (16 random letters and digits) and returned in \
        this answer, the only time it is ever shown: no later response, log or error carries \
        it, and the store keeps it only sealed. The reset is a deployment: the bundle and the \
        stored secret get the new value, the services are recreated health-gated (Mailtrain \
        applies it from its environment on every start), then Nextcloud (`occ \
        user:resetpassword`) and EspoCRM (`set-password`) are told it with their own commands \
        in their running containers; `apps` says what happens per app (`set`, `recreated`, or \
        `not-applicable` for Cal.com and Plausible, which have no preset admin). If an app \
        refuses, the apps already set are put back to the previous password and the \
        deployment ends `compensated`; when one cannot be put back it ends `failed`, its error \
        naming the app that has the new password. No body, or `{}`.",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = AdminPasswordReset, description = "Accepted: the reset is journaled and runs in the background; the new password is in `credentials`, once.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment, or not running."),
        (status = 415, body = ErrorBody, description = "A body that is not `application/json`."),
        (status = 422, body = ErrorBody, description = "A field in the body (it takes none), or none of the client's apps has an admin account (`field` is `apps`), or the client is on the aws provider."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn reset_admin_password(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    let body = read_body(&state, body)?;
    if !body.iter().all(u8::is_ascii_whitespace) && !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    parse_admin_password_request(&body)?;
    let reset = state
        .control
        .reset_admin_password(&id, &caller.0)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    // Never the password: the client and the deployment only.
    tracing::info!(client = %id, deployment = %reset.deployment_id, "admin password reset accepted");
    Ok(accepted(&reset.deployment_id.clone(), Json(&reset)))
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/upgrade",
    tag = "clients",
    summary = "Move a client to another release of the images, after a backup, with rollback.",
    description = "The move is checked against the upgrade graph (Nextcloud one major version \
        at a time; data-migrating apps forward only; no PostgreSQL major version): a refused \
        one answers 422 naming `to` and the releases to go through. The deployment takes a \
        safety backup, then replaces the services health-gated; if anything fails, the client \
        returns to its release, with the backup restored when a service that keeps data ran \
        the new image (the deployment ends `compensated`).",
    params(("id" = String, Path, description = "The client id.")),
    request_body(content = UpgradeRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the upgrade is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 415, body = ErrorBody, description = "Not `application/json`."),
        (status = 422, body = ErrorBody, description = "`to` is missing, unknown, the release the client runs, or a move the upgrade graph refuses; `field` is `to`."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn upgrade_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    let body = read_body(&state, body)?;
    let to = parse_upgrade_request(&body)?;
    let deployment = state
        .control
        .upgrade_client(&id, to, &caller.0)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    tracing::info!(client = %id, deployment = %deployment.deployment_id, "upgrade accepted");
    Ok(accepted(&deployment.deployment_id, Json(&deployment)))
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/backups",
    tag = "backups",
    summary = "Back a client up now: its databases dumped and its volumes, while it serves.",
    description = "Nothing is stopped. The backup counts (`succeeded`) only once it was \
        uploaded and the repository checked; follow it as a deployment of kind `backup`.",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the backup is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client (or this server takes no backups)."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn create_backup(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let id = client_id(id)?;
    let deployment = state
        .control
        .create_backup(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    tracing::info!(client = %id, deployment = %deployment.deployment_id, "backup accepted");
    Ok(accepted(&deployment.deployment_id, Json(&deployment)))
}

#[utoipa::path(
    get,
    path = "/v1/clients/{id}/backups",
    tag = "backups",
    summary = "A client's backups, newest first, and whether one is missing.",
    params(("id" = String, Path, description = "The client id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = BackupList, description = "The client's backups."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "No such client (or not the client token's own, or this server takes no backups)."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn list_backups(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<BackupList>, ApiError> {
    let id = client_id(id)?;
    if !caller.may_read(&id) {
        return Err(ApiError::NotFound(Resource::Client));
    }
    let list = state
        .control
        .list_backups(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok(Json(list))
}

#[utoipa::path(
    get,
    path = "/v1/clients/{id}/logs",
    tag = "clients",
    summary = "A client's container logs, or a stream of them.",
    description = "The last `tail` lines (oldest first) of the client's containers, or of one \
        service's, as the apps wrote them. With `follow=true`, server-sent events instead: one \
        unnamed event per line whose `data` is a `LogLine`, then `event: end` once the \
        containers stop. A comment is sent every 15 s while nothing happens.",
    params(("id" = String, Path, description = "The client id."), LogParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = LogLines, description = "The lines; with `follow=true` a `text/event-stream` whose events carry a `LogLine` each."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "No such client (or not the client token's own)."),
        (status = 422, body = ErrorBody, description = "A `service` the client does not have, a bad `since`, `tail` or `follow`, or an unknown query parameter."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn client_logs(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = client_id(id)?;
    if !caller.may_read(&id) {
        return Err(ApiError::NotFound(Resource::Client));
    }
    let query = log_query(query)?;
    let (follow, tail) = (query.follow, query.tail as usize);
    let mut lines = state
        .control
        .client_logs(&id, query)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    if !follow {
        let mut collected = Vec::new();
        while let Some(line) = lines.next().await {
            collected.push(line);
        }
        // Each container gave its last `tail`; together, the last `tail` in time order.
        collected.sort_by(|a, b| a.time.cmp(&b.time));
        let skip = collected.len().saturating_sub(tail);
        collected.drain(..skip);
        return Ok(Json(LogLines { lines: collected }).into_response());
    }
    let shutdown = state.shutdown.clone().fired();
    let stream = futures_util::stream::unfold(Some((lines, shutdown)), |state| async move {
        let (mut lines, mut shutdown) = state?;
        tokio::select! {
            () = &mut shutdown => None,
            next = lines.next() => match next {
                Some(line) => {
                    Some((Ok::<_, Infallible>(json_event(None, &line)), Some((lines, shutdown))))
                }
                None => Some((Ok(Event::default().event("end").data("{}")), None)),
            },
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `GET /v1/clients/{id}/logs`'s query, validated (`since` against the clock).
fn log_query(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<LogQuery, ApiError> {
    let mut params = query_params(query, &["service", "since", "tail", "follow"])?;
    let field_error = |error: stackbox_core::CoreError| match error {
        stackbox_core::CoreError::InvalidField { field, problem } => {
            let message = format!("{field}: {problem}");
            ApiError::invalid(field, message)
        }
        other => ApiError::invalid("query", other.to_string()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let since = params
        .remove("since")
        .map(|text| stackbox_core::logs::parse_since(&text, now))
        .transpose()
        .map_err(field_error)?;
    let tail =
        stackbox_core::logs::parse_tail(params.remove("tail").as_deref()).map_err(field_error)?;
    let follow = match params.remove("follow").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "follow",
                format!("follow: {other:?} is neither true nor false"),
            ))
        }
    };
    let service = match params.remove("service") {
        None => None,
        Some(text) if is_url_token(&text, 64) => Some(text),
        Some(text) => {
            return Err(ApiError::invalid(
                "service",
                format!("service: {text:?} is not a service name"),
            ))
        }
    };
    Ok(LogQuery {
        service,
        since,
        tail,
        follow,
    })
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/backups/{snapshot}/restore",
    tag = "backups",
    summary = "Replace a client's data with a snapshot's, after a safety backup.",
    description = "The client's databases and volumes are replaced by the snapshot's, then its \
        stack is converged (also when the restore fails half-way, so the client ends running). \
        A safety backup is taken first: restoring it undoes the restore. `confirm` must repeat \
        the client id.",
    params(
        ("id" = String, Path, description = "The client id."),
        ("snapshot" = String, Path, description = "A snapshot id, or its first 8 or more digits (lowercase hex), or `latest`."),
        RestoreParams,
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the restore is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "`confirm` is missing or is not the client id; `field` is `confirm`."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client, or no successful backup of it with that snapshot (also for a snapshot that is not 8 to 64 lowercase hex digits or `latest`)."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 422, body = ErrorBody, description = "An unknown query parameter."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn restore_backup(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let (id, snapshot) = client_and_snapshot(path)?;
    require_confirm(query, &id, "restoring a backup replaces the client's data")?;
    let deployment = state
        .control
        .restore_backup(&id, &snapshot)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Backup))?;
    tracing::info!(client = %id, snapshot, deployment = %deployment.deployment_id, "restore accepted");
    Ok(accepted(&deployment.deployment_id, Json(&deployment)))
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/backups/{snapshot}/verify",
    tag = "backups",
    summary = "Verify a snapshot for real: restored into a throwaway copy and compared.",
    description = "The repository's data is read back whole, the snapshot is restored into a \
        copy that nothing routes to and that reaches no outside network, every service must \
        come up healthy, rows and files are compared with the snapshot's manifest, and the copy \
        is removed. The client itself is not touched. The verdict lands on the backup \
        (`verified_at`, `verify_ok`).",
    params(
        ("id" = String, Path, description = "The client id."),
        ("snapshot" = String, Path, description = "A snapshot id, or its first 8 or more digits (lowercase hex), or `latest`."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DeploymentRef, description = "Accepted: the verification is journaled and runs in the background.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client, or no successful backup of it with that snapshot (also for a snapshot that is not 8 to 64 lowercase hex digits or `latest`)."),
        (status = 409, body = ErrorBody, description = "The client is busy with another deployment."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn verify_backup(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let (id, snapshot) = client_and_snapshot(path)?;
    let deployment = state
        .control
        .verify_backup(&id, &snapshot)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Backup))?;
    tracing::info!(client = %id, snapshot, deployment = %deployment.deployment_id, "verify accepted");
    Ok(accepted(&deployment.deployment_id, Json(&deployment)))
}

#[utoipa::path(
    post,
    path = "/v1/clients/{id}/clone",
    tag = "backups",
    summary = "A new client with this one's configuration and a snapshot's data, at another domain.",
    description = "For a staging copy or a move. The new client gets a new id; only the secrets \
        tied to the data (the admin password hashed in the apps, the database passwords and \
        keys the apps wrote into their volumes) are kept, the rest are generated. The source \
        client is not touched.",
    params(("id" = String, Path, description = "The client to clone.")),
    request_body(content = CloneRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = ClonedClient, description = "Accepted: the new client is stored and its deployment journaled.", headers(("Location" = String, description = "The deployment: /v1/deployments/{deployment_id}"))),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such client, or no successful backup of it with that snapshot."),
        (status = 409, body = ErrorBody, description = "The domain is taken, or the client has no successful backup to clone."),
        (status = 413, body = ErrorBody, description = "The body is over the size limit (64 KiB by default)."),
        (status = 415, body = ErrorBody, description = "Not `Content-Type: application/json`."),
        (status = 422, body = ErrorBody, description = "An unknown field, or a value that is not acceptable (`domain`, `snapshot`); `field` names it."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn clone_client(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    // The 404 of an unknown client or snapshot, which the control plane does not tell apart.
    let id = client_id(id).map_err(|_| ApiError::NotFound(Resource::Backup))?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    let body = read_body(&state, body)?;
    let (domain, snapshot) = parse_clone_request(&body)?;
    let cloned = state
        .control
        .clone_client(&id, domain, snapshot)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Backup))?;
    tracing::info!(client = %id, clone = %cloned.client_id, deployment = %cloned.deployment_id, "clone accepted");
    Ok(accepted(&cloned.deployment_id, Json(&cloned)))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{id}",
    tag = "deployments",
    summary = "A deployment and its steps.",
    params(("id" = String, Path, description = "The deployment id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DeploymentView, description = "The deployment."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "No such deployment (or not of the client token's client)."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn get_deployment(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = deployment_id(id)?;
    Ok(Json(readable_deployment(&state, &caller, &id).await?))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{id}/events",
    tag = "deployments",
    summary = "Server-sent events as the deployment's steps progress.",
    description = "Every step as it stands first, then each change as it happens: one \
        unnamed event per step change whose `data` is a `StepView` in JSON. When the \
        deployment has finished, an `event: end` whose `data` is a `DeploymentEnd`, and the \
        stream closes. A comment is sent every 15 s while nothing happens. A stream that \
        closes without `end` (the server is shutting down) can be opened again.",
    params(("id" = String, Path, description = "The deployment id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DeploymentEvent, content_type = "text/event-stream", description = "The event stream: each event's `data` is a `StepView`, a running step's progress (`event: progress`) a `StepProgress`, the last one's (`event: end`) a `DeploymentEnd`."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "No such deployment (or not of the client token's client)."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn deployment_events(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = deployment_id(id)?;
    if let Principal::Client(_) = caller.principal() {
        readable_deployment(&state, &caller, &id).await?;
    }
    let events = state
        .control
        .deployment_events(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Deployment))?;
    let stream = sse_stream(events, state.shutdown.clone());
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response();
    // Tells nginx-style proxies not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[utoipa::path(
    post,
    path = "/v1/rollouts",
    tag = "rollouts",
    summary = "Move many clients to a release in waves: a canary, then growing batches.",
    description = "Every client (or the ones in `clients`) is planned once, in id order: those \
        that cannot move now (stopped, already on the release, a move the upgrade graph \
        refuses, the aws provider) are listed `skipped` with the reason. The others are upgraded \
        one wave at a time, each wave with at most `concurrency` upgrades at once, each upgrade \
        a journaled deployment with its safety backup and rollback. The first client that fails \
        (its upgrade was undone, or it ended unhealthy) halts the rollout: the upgrades running \
        finish, nothing new starts, and the clients not started stay on their release. A \
        restarted server carries on where the rollout stood. Follow it with `GET \
        /v1/rollouts/{id}`.",
    request_body(content = RolloutRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = RolloutView, description = "Accepted: the rollout is planned and runs in the background.", headers(("Location" = String, description = "The rollout: /v1/rollouts/{id}"))),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "A client in `clients` is not known."),
        (status = 409, body = ErrorBody, description = "Another rollout is running."),
        (status = 415, body = ErrorBody, description = "Not `application/json`."),
        (status = 422, body = ErrorBody, description = "`to` is missing or not a release, a client id is malformed (`clients[N]`), or a setting is outside its range; `field` names it."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn create_rollout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    let body = read_body(&state, body)?;
    let request = parse_rollout_request(&body)?;
    let view = state
        .control
        .create_rollout(request.to, request.clients, request.settings, &caller.0)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    tracing::info!(rollout = %view.id, to = %view.to, clients = view.clients.len(), "rollout accepted");
    let mut response = (StatusCode::ACCEPTED, Json(&view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/rollouts/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/v1/rollouts",
    tag = "rollouts",
    summary = "The newest rollouts first, each with every client's outcome.",
    security(("bearer" = [])),
    responses(
        (status = 200, body = RolloutList, description = "The rollouts."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn list_rollouts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RolloutList>, ApiError> {
    caller.require_operator()?;
    let list = state
        .control
        .list_rollouts()
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Rollout))?;
    Ok(Json(list))
}

#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}",
    tag = "rollouts",
    summary = "A rollout: its status, waves and every client's outcome.",
    params(("id" = String, Path, description = "The rollout id (`rol_…`).")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = RolloutView, description = "The rollout."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such rollout."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn get_rollout(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutView>, ApiError> {
    caller.require_operator()?;
    let id = rollout_id(id)?;
    let view = state
        .control
        .get_rollout(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Rollout))?;
    Ok(Json(view))
}

#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/halt",
    tag = "rollouts",
    summary = "Halt a rollout: nothing new starts; the upgrades running finish.",
    description = "The clients not started stay on their release and are listed `skipped`. \
        Halting a rollout that has finished changes nothing.",
    params(("id" = String, Path, description = "The rollout id (`rol_…`).")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = RolloutView, description = "The rollout as it stands."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such rollout."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn halt_rollout(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutView>, ApiError> {
    caller.require_operator()?;
    let id = rollout_id(id)?;
    let view = state
        .control
        .halt_rollout(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Rollout))?;
    tracing::info!(rollout = %view.id, by = %caller.0.token_id, "rollout halt asked");
    Ok(Json(view))
}

/// A rollout id from the path, as written; 404 when it is not URL-safe (the control plane
/// answers 404 for a malformed or unknown one).
fn rollout_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(id)) if is_url_token(&id, 64) => Ok(id),
        _ => Err(ApiError::NotFound(Resource::Rollout)),
    }
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "Every API token, oldest first: id, role, client, created, last used.",
    description = "Never a token or its hash: the server keeps only hashes, and shows a token \
        once, when `stackbox token create` makes it.",
    security(("bearer" = [])),
    responses(
        (status = 200, body = TokenList, description = "The tokens."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TokenList>, ApiError> {
    caller.require_operator()?;
    let tokens = state
        .control
        .list_tokens()
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Token))?;
    Ok(Json(tokens))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    summary = "Revoke a token: it is refused from the next request on.",
    description = "Also the caller's own token, which then stops working too.",
    params(("id" = String, Path, description = "The token's id (`tok_…`, from `GET /v1/tokens`), not the token.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 403, body = ErrorBody, description = "A client token."),
        (status = 404, body = ErrorBody, description = "No such token."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_operator()?;
    let not_found = ApiError::NotFound(Resource::Token);
    let Ok(Path(id)) = id else {
        return Err(not_found);
    };
    if !is_url_token(&id, MAX_TOKEN_ID_BYTES) {
        return Err(not_found);
    }
    state
        .control
        .revoke_token(&id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Token))?;
    tracing::info!(token = %id, by = %caller.0.token_id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The deployment, if the caller may read it: 404 for another client's, like a missing one.
async fn readable_deployment(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<DeploymentView, ApiError> {
    let view = state
        .control
        .get_deployment(id)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Deployment))?;
    if caller.may_read(&view.client_id) {
        Ok(view)
    } else {
        Err(ApiError::NotFound(Resource::Deployment))
    }
}

/// The control plane's events as server-sent events: steps unnamed, then `end`, then the
/// stream stops; it also stops when the server shuts down.
fn sse_stream(
    events: BoxStream<'static, DeploymentEvent>,
    shutdown: Shutdown,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some((events, shutdown.fired())), |state| async move {
        let (mut events, mut shutdown) = state?;
        tokio::select! {
            () = &mut shutdown => None,
            next = events.next() => match next? {
                DeploymentEvent::Step(step) => {
                    Some((Ok(json_event(None, &step)), Some((events, shutdown))))
                }
                DeploymentEvent::Progress(progress) => {
                    Some((Ok(json_event(Some("progress"), &progress)), Some((events, shutdown))))
                }
                DeploymentEvent::End(end) => Some((Ok(json_event(Some("end"), &end)), None)),
            },
        }
    })
}

fn json_event<T: serde::Serialize>(name: Option<&'static str>, data: &T) -> Event {
    let event = match name {
        Some(name) => Event::default().event(name),
        None => Event::default(),
    };
    match serde_json::to_string(data) {
        Ok(json) => event.data(json),
        Err(error) => {
            tracing::error!(%error, "an event could not be serialized");
            Event::default().comment("an event could not be serialized")
        }
    }
}

/// 202 Accepted with `Location: /v1/deployments/{id}`.
fn accepted(deployment_id: &str, body: impl IntoResponse) -> Response {
    let mut response = (StatusCode::ACCEPTED, body).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/deployments/{deployment_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A client id from the path; 404 (like an unknown id) when it is not one.
pub(crate) fn client_id(path: Result<Path<String>, PathRejection>) -> Result<ClientId, ApiError> {
    let Ok(Path(text)) = path else {
        return Err(ApiError::NotFound(Resource::Client));
    };
    ClientId::parse(&text).map_err(|_| ApiError::NotFound(Resource::Client))
}

/// A client id and a snapshot from the path. Either one invalid answers the 404 of an unknown
/// client or snapshot (the control plane's 404 here does not say which), as invalid deployment
/// ids answer like unknown ones.
fn client_and_snapshot(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(ClientId, String), ApiError> {
    let not_found = ApiError::NotFound(Resource::Backup);
    let Ok(Path((id, snapshot))) = path else {
        return Err(not_found);
    };
    match ClientId::parse(&id) {
        Ok(id) if is_snapshot_ref(&snapshot) => Ok((id, snapshot)),
        _ => Err(not_found),
    }
}

/// An id or token as StackBox issues them: 1 to `max` bytes of `[A-Za-z0-9_-]`. Anything else
/// answers 404 without reaching the control plane.
pub(crate) fn is_url_token(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A deployment id from the path, bounded to a safe alphabet before it reaches the control
/// plane; 404 otherwise.
fn deployment_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Ok(Path(text)) = path else {
        return Err(ApiError::NotFound(Resource::Deployment));
    };
    if is_url_token(&text, MAX_DEPLOYMENT_ID_BYTES) {
        Ok(text)
    } else {
        Err(ApiError::NotFound(Resource::Deployment))
    }
}

/// The query parameters, each at most once and each among `allowed`.
pub(crate) fn query_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(pairs) = query.map_err(|_| ApiError::BadRequest {
        field: None,
        message: "the query string cannot be read".to_string(),
    })?;
    let mut params = BTreeMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::invalid(
                name.clone(),
                format!(
                    "{name}: unknown query parameter; this route takes {}",
                    allowed.join(", ")
                ),
            ));
        }
        if params.contains_key(&name) {
            return Err(ApiError::invalid(
                name.clone(),
                format!("{name}: given more than once"),
            ));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// The validated parameters of `GET /v1/clients`.
fn list_query(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<ListQuery, ApiError> {
    let mut params = query_params(query, &["state", "plan", "after", "limit"])?;
    let state = match params.remove("state") {
        None => None,
        Some(text) => Some(ClientState::from_name(&text).ok_or_else(|| {
            let states: Vec<&str> = ClientState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(
                "state",
                format!(
                    "state: unknown state {text:?}; use one of {}",
                    states.join(", ")
                ),
            )
        })?),
    };
    let plan = match params.remove("plan") {
        None => None,
        Some(text) => Some(Plan::from_key(&text).ok_or_else(|| {
            ApiError::invalid(
                "plan",
                format!(
                    "plan: unknown plan {text:?}; use one of starter, professional, enterprise"
                ),
            )
        })?),
    };
    let after = match params.remove("after") {
        None => None,
        Some(text) => Some(ClientId::parse(&text).map_err(|_| {
            ApiError::invalid(
                "after",
                format!("after: {text:?} is not a client id; pass the `next` of the previous page"),
            )
        })?),
    };
    let limit = page_limit(params.remove("limit"))?;
    Ok(ListQuery {
        state,
        plan,
        after,
        limit,
    })
}

/// The validated parameters of `GET /v1/clients/{id}/deployments`.
fn deployment_query(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<DeploymentQuery, ApiError> {
    let mut params = query_params(query, &["after", "limit"])?;
    let after = match params.remove("after") {
        None => None,
        Some(text) if is_url_token(&text, MAX_DEPLOYMENT_ID_BYTES) => Some(text),
        Some(text) => {
            return Err(ApiError::invalid(
                "after",
                format!(
                    "after: {text:?} is not a deployment id; pass the `next` of the previous page"
                ),
            ))
        }
    };
    Ok(DeploymentQuery {
        after,
        limit: page_limit(params.remove("limit"))?,
    })
}

/// A page size from 1 to [`ListQuery::MAX_LIMIT`]; [`ListQuery::DEFAULT_LIMIT`] when not given.
fn page_limit(text: Option<String>) -> Result<u32, ApiError> {
    page_limit_or(text, ListQuery::DEFAULT_LIMIT)
}

/// A page size from 1 to [`ListQuery::MAX_LIMIT`]; `default` when not given.
pub(crate) fn page_limit_or(text: Option<String>, default: u32) -> Result<u32, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|limit| (1..=ListQuery::MAX_LIMIT).contains(limit))
        .ok_or_else(|| {
            ApiError::invalid(
                "limit",
                format!(
                    "limit: {text:?} is not a whole number from 1 to {}",
                    ListQuery::MAX_LIMIT
                ),
            )
        })
}

/// The body, or 413 over the limit and 400 when it cannot be read.
pub(crate) fn read_body(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: state.options.body_limit_bytes,
            }
        } else {
            ApiError::BadRequest {
                field: None,
                message: "the request body could not be read".to_string(),
            }
        }
    })
}

/// Whether the request says its body is JSON (`application/json`, any parameters).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    has_content_type(headers, JSON)
}

/// Whether the request's content type is one of `accepted` (any parameters).
fn has_content_type(headers: &HeaderMap, accepted: &[&str]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| {
            accepted
                .iter()
                .any(|expected| essence.trim().eq_ignore_ascii_case(expected))
        })
}
