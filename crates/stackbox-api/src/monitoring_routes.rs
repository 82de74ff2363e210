//! The monitor's routes: a client's resource use, and the alerts.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::dto::ErrorBody;
use crate::error::{ApiError, Resource};
use crate::monitoring::{AlertList, AlertQuery, ClientUsageView};
use crate::routes::{client_id, page_limit_or, query_params, AppState};

/// The query parameters of `GET /v1/clients/{id}/usage` (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct UsageParams {
    /// How far back: a duration (`30m`, `6h`, `1d`); one hour when left out. Readings older
    /// than the operator's `[monitor] usage_window` are not kept.
    window: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/clients/{id}/usage",
    tag = "clients",
    summary = "A client's resource use: CPU, memory working set, network, block I/O, storage.",
    description = "Readings of the engine's one-shot stats on the operator's interval, summed \
        per client (points, oldest first) and the latest per service; storage is measured less \
        often. Kept for a bounded time in the control plane's memory.",
    params(("id" = String, Path, description = "The client id."), UsageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ClientUsageView, description = "The client's use over the window."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "No such client (or not the client token's own)."),
        (status = 422, body = ErrorBody, description = "A bad `window`, or an unknown query parameter."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
pub(crate) async fn client_usage(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ClientUsageView>, ApiError> {
    let id = client_id(id)?;
    if !caller.may_read(&id) {
        return Err(ApiError::NotFound(Resource::Client));
    }
    let mut params = query_params(query, &["window"])?;
    let window = stackbox_core::usage::parse_window(params.remove("window").as_deref())
        .map_err(|error| ApiError::invalid("window", error.to_string()))?;
    let usage = state
        .control
        .client_usage(&id, window)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok(Json(usage))
}

/// The query parameters of `GET /v1/alerts` (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct AlertParams {
    /// `true` (the default): pending and firing alerts only; `false` adds resolved ones.
    open: Option<bool>,
    /// Only this client's alerts. A client token gets its own client's whatever it asks.
    client: Option<String>,
    /// At most this many, newest first (1 to 500; 100 when left out).
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    summary = "Alerts: open ones (pending, firing), or with `open=false` the resolved history too.",
    description = "A condition (a client degraded, memory near a service's limit, the engine's \
        disk nearly full, a backup missing or failed, mail failing) opens one alert per key; it \
        fires after the operator's hold time and sends one notice (e-mail, signed webhook), and \
        one recovery notice when it is over. A client token reads only its own client's alerts.",
    params(AlertParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AlertList, description = "Alerts, newest first."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "A client token asked for another client's alerts."),
        (status = 422, body = ErrorBody, description = "A bad `open`, `client` or `limit`, or an unknown query parameter."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
pub(crate) async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<AlertList>, ApiError> {
    let mut params = query_params(query, &["open", "client", "limit"])?;
    let open_only = match params.remove("open").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "open",
                format!("{other:?} is neither true nor false"),
            ))
        }
    };
    let client = caller.client_filter(params.remove("client").as_deref())?;
    let limit = page_limit_or(params.remove("limit"), 100)?;
    let alerts = state
        .control
        .list_alerts(AlertQuery {
            open_only,
            client,
            limit,
        })
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok(Json(alerts))
}
