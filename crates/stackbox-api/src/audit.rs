//! The audit log at the API: every change asked through it (any method but GET and HEAD) is
//! passed to [`ControlPlane::record_audit`](crate::ControlPlane::record_audit) once answered:
//! who (the token's id and whose it is), what (the method and the route as declared, the
//! client), the HTTP status and the deployment it started. Never a request body, never a
//! token. `GET /v1/audit` reads it back.
//!
//! A request with no valid token is not recorded (nobody asked; recording them would let
//! anyone fill the log), except on the public routes (sign-up, the payment webhook, the
//! credentials page) when they were accepted.

use std::sync::{Arc, Mutex};

use axum::body::{Body, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use stackbox_core::client::ClientId;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::control::{Authenticated, Principal};
use crate::dto::ErrorBody;
use crate::error::{ApiError, Resource};
use crate::routes::{page_limit_or, query_params, AppState};
use crate::time::Timestamp;

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditActor {
    Operator,
    /// A client token (its changes are refused: it is read-only).
    Client,
    /// A route that takes no token: sign-up, payment webhook, credentials page.
    Public,
}

/// What the API passes on to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub actor: AuditActor,
    pub token_id: Option<String>,
    /// `POST /v1/clients/{id}/stop`: the method and the route as declared.
    pub action: String,
    pub client_id: Option<String>,
    pub status: u16,
    pub deployment_id: Option<String>,
}

/// One entry of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    #[schema(example = "aud_01HZX3V6Q9K2M4")]
    pub id: String,
    pub at: Timestamp,
    pub actor: AuditActor,
    /// The token's id (as `GET /v1/tokens` shows it); none on public routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[schema(example = "POST /v1/clients/{id}/stop")]
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// `accepted` (2xx, 3xx: done, or a deployment started, whose own result is in its
    /// journal), `refused` (4xx) or `failed` (5xx).
    #[schema(example = "accepted")]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

/// `GET /v1/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// What `GET /v1/audit` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this client's entries (a client token always gets only its own).
    pub client: Option<ClientId>,
    /// Entries older than this entry id.
    pub before: Option<String>,
    /// 1 to 500, 100 by default.
    pub limit: u32,
}

/// Where the `Caller` extractor leaves who called, for the audit layer to read afterwards.
#[derive(Clone, Default)]
pub(crate) struct CallerSlot(Arc<Mutex<Option<Authenticated>>>);

impl CallerSlot {
    pub(crate) fn set(&self, caller: &Authenticated) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(caller.clone());
    }

    fn take(&self) -> Option<Authenticated> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

const PUBLIC_ROUTES: [&str; 3] = ["/v1/signup", "/v1/webhooks/stripe", "/welcome/{token}"];

/// The largest answer read for its `deployment_id` and `client_id` (every JSON answer of a
/// change is far smaller; a larger one is passed on unread).
const MAX_ANSWER_READ: u64 = 256 * 1024;

/// The layer: runs the request, then passes its entry on.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return next.run(request).await; // no route: a 404 of nobody's change
    };
    let action = format!("{} {route}", request.method());
    let path_client = client_of_path(request.uri().path());
    let slot = CallerSlot::default();
    let mut request = request;
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let (actor, token_id) = match slot.take() {
        Some(caller) => match caller.principal {
            Principal::Operator => (AuditActor::Operator, Some(caller.token_id)),
            Principal::Client(_) => (AuditActor::Client, Some(caller.token_id)),
        },
        None if PUBLIC_ROUTES.contains(&route.as_str()) && status < 400 => {
            (AuditActor::Public, None)
        }
        None => return response,
    };
    let (response, answered) = read_answer(response).await;
    let entry = AuditEntry {
        actor,
        token_id,
        action,
        client_id: path_client.or_else(|| answered.client_id.clone()),
        status,
        deployment_id: answered.deployment_id,
    };
    if let Err(error) = state.control.record_audit(entry).await {
        // The change happened; its record did not: say so loudly, never hide it.
        tracing::error!(%error, "a change could not be appended to the audit log");
    }
    response
}

/// `/v1/clients/<id>/…` → the id, when it is one.
fn client_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/clients/")?;
    let id = rest.split('/').next()?;
    ClientId::parse(id).ok().map(|id| id.to_string())
}

#[derive(Default, Deserialize)]
struct Answered {
    #[serde(default)]
    deployment_id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

/// Reads a small JSON answer for its `deployment_id` and `client_id` only (nothing else of it
/// is kept: a created client's answer holds its password) and gives the response back whole.
async fn read_answer(response: Response) -> (Response, Answered) {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_ANSWER_READ);
    if !is_json || !small {
        return (response, Answered::default());
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_ANSWER_READ as usize).await {
        Ok(bytes) => {
            let answered = serde_json::from_slice::<Answered>(&bytes).unwrap_or_default();
            (Response::from_parts(parts, Body::from(bytes)), answered)
        }
        Err(_) => (
            Response::from_parts(parts, Body::empty()),
            Answered::default(),
        ),
    }
}

/// The query parameters of `GET /v1/audit` (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct AuditParams {
    /// Only this client's entries. A client token gets its own client's whatever it asks.
    client: Option<String>,
    /// The `next` of the previous page: entries older than that one.
    before: Option<String>,
    /// At most this many, newest first (1 to 500; 100 when left out).
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    summary = "The audit log: every change asked through the API, who asked, when, the result.",
    description = "Appended once a change is answered, never updated: the method and route, the \
        client, the token's id and whose it is, the HTTP status and the deployment it started. \
        No request body is kept. A client token reads only its own client's entries.",
    params(AuditParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AuditList, description = "Entries, newest first."),
        (status = 401, body = ErrorBody, description = "No bearer token, or one the server does not know.", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"stackbox\"`"))),
        (status = 404, body = ErrorBody, description = "A client token asked for another client's entries."),
        (status = 422, body = ErrorBody, description = "A bad `client`, `before` or `limit`, or an unknown query parameter."),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "The control plane is temporarily unavailable.", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let mut params = query_params(query, &["client", "before", "limit"])?;
    let client = caller.client_filter(params.remove("client").as_deref())?;
    let before = params.remove("before");
    if let Some(before) = &before {
        let well_formed = before.len() <= 64
            && before
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(ApiError::invalid(
                "before",
                "is not an audit entry id; pass the `next` of the previous page",
            ));
        }
    }
    let limit = page_limit_or(params.remove("limit"), 100)?;
    let list = state
        .control
        .list_audit(AuditQuery {
            client,
            before,
            limit,
        })
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Client))?;
    Ok(Json(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_of_a_path_is_its_id_when_it_is_one() {
        assert_eq!(
            client_of_path("/v1/clients/shop-0000000a/stop").as_deref(),
            Some("shop-0000000a")
        );
        assert_eq!(
            client_of_path("/v1/clients/shop-0000000a").as_deref(),
            Some("shop-0000000a")
        );
        assert_eq!(client_of_path("/v1/clients"), None);
        assert_eq!(client_of_path("/v1/clients/Not An Id/stop"), None);
        assert_eq!(client_of_path("/v1/tokens/tok_1"), None);
    }
}
