//! Every error response: its status, its stable `code`, and the JSON body
//! `{"error": {"code", "message", "field"?}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::control::ControlError;
use crate::dto::{ErrorBody, ErrorDetail};

/// The message of every 500: the detail is in the server's log, never in a response.
pub const INTERNAL_MESSAGE: &str =
    "internal error; the operator can find the details in the server's log";

/// The message of every 503.
pub const UNAVAILABLE_MESSAGE: &str = "the control plane is temporarily unavailable; retry later";

/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// Which kind of thing was not found (for the 404 message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Client,
    Deployment,
    /// A snapshot of a client: the control plane's 404 does not say whether the client or the
    /// snapshot is unknown, so neither does the message.
    Backup,
    Route,
    /// An API token (by its id).
    Token,
    /// A fleet rollout.
    Rollout,
    /// Sign-ups and the payment webhook on a server without a payment provider.
    Onboarding,
}

/// An error the API answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter is wrong in a way that is not a value problem (`confirm`), or the query
    /// string cannot be read.
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    /// 400: the body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 401: no bearer token, or one the control plane does not know.
    #[error("unauthorized")]
    Unauthorized { token_given: bool },
    /// 403: a client token asked for a write, or for an operator-only route.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("not found")]
    NotFound(Resource),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409, with the control plane's message.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    /// 415, naming the content types the route takes (`application/json`, …).
    #[error("unsupported media type")]
    UnsupportedMediaType(&'static [&'static str]),
    /// 422 naming the field (absent when the whole body is of the wrong shape).
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// 429: too many sign-ups from one address; retry after this many seconds.
    #[error("too many requests")]
    TooManyRequests { retry_after_seconds: u64 },
    /// 503; the detail is logged, not sent.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500; the detail is logged, not sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The API's answer to a control-plane error about `resource`.
    pub fn from_control(error: ControlError, resource: Resource) -> ApiError {
        match error {
            ControlError::NotFound => ApiError::NotFound(resource),
            ControlError::Conflict(message) => ApiError::Conflict(message),
            ControlError::Invalid { field, problem } => ApiError::Invalid {
                message: format!("{field}: {problem}"),
                field: Some(field),
            },
            ControlError::BadRequest(message) => ApiError::BadRequest {
                field: None,
                message,
            },
            ControlError::Unavailable(detail) => ApiError::Unavailable(detail),
            ControlError::Internal(detail) => ApiError::Internal(detail),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body sent: never the detail of a 500 or 503.
    pub fn body(&self) -> ErrorBody {
        let (code, message, field) = match self {
            ApiError::BadRequest { field, message } => {
                ("bad_request", message.clone(), field.clone())
            }
            ApiError::MalformedJson(detail) => (
                "malformed_json",
                format!("the body is not valid JSON: {detail}"),
                None,
            ),
            ApiError::Unauthorized { token_given: false } => (
                "unauthorized",
                "this route needs an `Authorization: Bearer <token>` header".to_string(),
                None,
            ),
            ApiError::Unauthorized { token_given: true } => (
                "unauthorized",
                "the bearer token is not valid".to_string(),
                None,
            ),
            ApiError::Forbidden(message) => ("forbidden", message.to_string(), None),
            ApiError::NotFound(Resource::Client) => {
                ("not_found", "no such client".to_string(), None)
            }
            ApiError::NotFound(Resource::Deployment) => {
                ("not_found", "no such deployment".to_string(), None)
            }
            ApiError::NotFound(Resource::Backup) => (
                "not_found",
                "no such client, or no successful backup of it with that snapshot".to_string(),
                None,
            ),
            ApiError::NotFound(Resource::Onboarding) => (
                "not_found",
                "sign-ups and payments are not enabled on this server".to_string(),
                None,
            ),
            ApiError::NotFound(Resource::Token) => (
                "not_found",
                "no such token; GET /v1/tokens lists them".to_string(),
                None,
            ),
            ApiError::NotFound(Resource::Rollout) => (
                "not_found",
                "no such rollout; GET /v1/rollouts lists them".to_string(),
                None,
            ),
            ApiError::NotFound(Resource::Route) => (
                "not_found",
                "no such route; see /openapi.json".to_string(),
                None,
            ),
            ApiError::MethodNotAllowed => (
                "method_not_allowed",
                "this route does not take this method; see /openapi.json".to_string(),
                None,
            ),
            ApiError::Conflict(message) => ("conflict", message.clone(), None),
            ApiError::PayloadTooLarge { limit } => (
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
                None,
            ),
            ApiError::UnsupportedMediaType(accepted) => (
                "unsupported_media_type",
                format!(
                    "send the body as `Content-Type: {}`",
                    accepted.join("` or `")
                ),
                None,
            ),
            ApiError::Invalid { field, message } => {
                ("invalid_field", message.clone(), field.clone())
            }
            ApiError::TooManyRequests {
                retry_after_seconds,
            } => (
                "too_many_requests",
                format!("too many sign-ups from this address; retry in {retry_after_seconds} s"),
                None,
            ),
            ApiError::Unavailable(_) => ("unavailable", UNAVAILABLE_MESSAGE.to_string(), None),
            ApiError::Internal(_) => ("internal", INTERNAL_MESSAGE.to_string(), None),
        };
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                field,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed with an internal error");
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "control plane unavailable");
            }
            _ => {}
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized { token_given } => {
                let challenge = if token_given {
                    "Bearer realm=\"stackbox\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"stackbox\""
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::TooManyRequests {
                retry_after_seconds,
            } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            ApiError::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        response
    }
}
