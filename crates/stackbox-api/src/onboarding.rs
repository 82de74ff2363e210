//! The public routes of onboarding: sign-up, the payment provider's webhook, and the one-time
//! page with a new client's credentials. None takes a bearer token: the sign-up is rate-limited
//! per address and per e-mail, the webhook is authenticated by its signature (checked by the
//! control plane over the raw bytes), and the credentials page by its one-time token.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::control::{ControlError, HtmlPage, SignupAccepted, WebhookOutcome};
use crate::dto::{ErrorBody, NewClient};
use crate::error::{ApiError, Resource};
use crate::input::parse_new_client;
use crate::routes::{AppState, JSON};

/// The largest webhook body read. Stripe's events are small, but an invoice with many lines
/// can pass the API's 64 KiB default, and a refused delivery would be retried for days.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// The longest credentials token passed on (they are 43 characters).
const MAX_CREDENTIALS_TOKEN: usize = 128;

/// How many sign-ups are accepted in a window, per client address and per e-mail address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupLimits {
    pub per_address: u32,
    pub per_email: u32,
    pub window: Duration,
}

impl Default for SignupLimits {
    /// 10 per network address and 3 per e-mail address an hour: far above what a person
    /// buying a plan needs, far below what a script filling the store would want.
    fn default() -> Self {
        SignupLimits {
            per_address: 10,
            per_email: 3,
            window: Duration::from_secs(3600),
        }
    }
}

/// A sliding-window counter per key, in memory (one server; see ARCHITECTURE.md).
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Counts a hit for `key` unless it already has `limit` in the window; `Err(seconds)`
    /// says when the oldest one leaves the window.
    fn hit(&self, key: &str, limit: u32, window: Duration, now: Instant) -> Result<(), u64> {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        // Forget keys whose hits all left the window, so the map stays small.
        if hits.len() > 10_000 {
            hits.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let times = hits.entry(key.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = window.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        times.push_back(now);
        Ok(())
    }

    /// Takes back a hit (the request was refused for another reason, so it should not count).
    fn undo(&self, key: &str) {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(times) = hits.get_mut(key) {
            times.pop_back();
        }
    }
}

/// The caller's network address, when the server knows it (it does when serving a socket).
pub(crate) struct PeerAddress(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

#[utoipa::path(
    post,
    path = "/v1/signup",
    tag = "onboarding",
    summary = "Sign up: a pending account and a checkout session for the chosen plan.",
    description = "Public. The body is a client configuration (the fields of `POST /v1/clients` \
        except `client_id`); `admin_email` is where the welcome e-mail goes. The client is \
        provisioned when the payment provider reports the checkout completed. Limited per \
        network address and per e-mail address.",
    request_body(content = NewClient, content_type = "application/json"),
    responses(
        (status = 201, body = SignupAccepted, description = "The sign-up is stored; send the buyer to `checkout_url`."),
        (status = 400, body = ErrorBody, description = "The body is not JSON."),
        (status = 404, body = ErrorBody, description = "This server does not take sign-ups (no payment provider configured)."),
        (status = 409, body = ErrorBody, description = "The domain is taken."),
        (status = 413, body = ErrorBody, description = "The body is over the size limit."),
        (status = 415, body = ErrorBody, description = "Not `Content-Type: application/json`."),
        (status = 422, body = ErrorBody, description = "An unknown field, or a value that is not acceptable; `field` names it."),
        (status = 429, body = ErrorBody, description = "Too many sign-ups from this address or for this e-mail.", headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 500, body = ErrorBody, description = "Internal error; the body never carries its detail."),
        (status = 503, body = ErrorBody, description = "Temporarily unavailable (the payment provider did not answer).", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
pub(crate) async fn signup(
    State(state): State<AppState>,
    PeerAddress(peer): PeerAddress,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !crate::routes::is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    let body = crate::routes::read_body(&state, body)?;
    let limits = state.options.signup_limits;
    let now = Instant::now();
    let address_key = peer.map(|ip| format!("ip:{ip}"));
    if let Some(key) = &address_key {
        state
            .limiter
            .hit(key, limits.per_address, limits.window, now)
            .map_err(|retry_after_seconds| ApiError::TooManyRequests {
                retry_after_seconds,
            })?;
    }
    let spec = match parse_new_client(&body) {
        Ok(spec) if spec.client_id.is_some() => Err(ApiError::invalid(
            "client_id",
            "client_id: chosen by StackBox on sign-up; leave it out",
        )),
        other => other,
    };
    let spec = match spec {
        Ok(spec) => spec,
        Err(error) => {
            // A typo in the form should not use up the buyer's attempts.
            if let Some(key) = &address_key {
                state.limiter.undo(key);
            }
            return Err(error);
        }
    };
    let email_key = format!("email:{}", spec.admin_email.as_str().to_ascii_lowercase());
    state
        .limiter
        .hit(&email_key, limits.per_email, limits.window, now)
        .map_err(|retry_after_seconds| ApiError::TooManyRequests {
            retry_after_seconds,
        })?;
    let accepted = match state.control.signup(spec).await {
        Ok(accepted) => accepted,
        Err(error) => {
            // A value the control plane refused (a plan not for sale) is a form mistake too.
            if matches!(error, ControlError::Invalid { .. }) {
                state.limiter.undo(&email_key);
                if let Some(key) = &address_key {
                    state.limiter.undo(key);
                }
            }
            return Err(ApiError::from_control(error, Resource::Onboarding));
        }
    };
    tracing::info!(signup = %accepted.signup_id, "sign-up accepted");
    Ok((StatusCode::CREATED, Json(accepted)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/stripe",
    tag = "onboarding",
    summary = "Stripe's webhook: checkout completed, subscription changed or deleted, invoices.",
    description = "Public; authenticated by the `Stripe-Signature` header (HMAC-SHA256 of \
        `timestamp.body` with the endpoint secret, within a tolerance). Each event id is handled \
        once: a redelivery answers 200 without acting again.",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, body = Object, description = "Handled (or handled before, or not an event StackBox acts on)."),
        (status = 400, body = ErrorBody, description = "The signature is missing, wrong or stale, or the body is not an event."),
        (status = 404, body = ErrorBody, description = "This server takes no payments."),
        (status = 413, body = ErrorBody, description = "The body is over 1 MiB."),
        (status = 500, body = ErrorBody, description = "Internal error (Stripe retries the delivery)."),
        (status = 503, body = ErrorBody, description = "Temporarily unavailable (Stripe retries the delivery).", headers(("Retry-After" = String, description = "Seconds to wait."))),
    )
)]
pub(crate) async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Read the raw bytes ourselves: the signature covers them exactly, and the limit is the
    // webhook's own.
    let body = axum::body::to_bytes(body, WEBHOOK_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            limit: WEBHOOK_BODY_LIMIT,
        })?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let outcome = state
        .control
        .stripe_webhook(signature, body.to_vec())
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Onboarding))?;
    let outcome = match outcome {
        WebhookOutcome::Processed => "processed",
        WebhookOutcome::Duplicate => "duplicate",
        WebhookOutcome::Ignored => "ignored",
    };
    Ok(Json(serde_json::json!({ "received": true, "outcome": outcome })).into_response())
}

#[utoipa::path(
    get,
    path = "/welcome/{token}",
    tag = "onboarding",
    summary = "The one-time credentials page: a button that reveals the admin password.",
    description = "For the client's owner, linked from the welcome e-mail. Showing this page \
        does not use the link up (mail scanners open links); pressing its button does.",
    params(("token" = String, Path, description = "The one-time token from the e-mail.")),
    responses(
        (status = 200, body = String, content_type = "text/html", description = "The page with the button."),
        (status = 410, body = String, content_type = "text/html", description = "The link is used up or expired."),
    )
)]
pub(crate) async fn credentials_confirm(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    credentials(state, token, false).await
}

#[utoipa::path(
    post,
    path = "/welcome/{token}",
    tag = "onboarding",
    summary = "Reveals the admin credentials once and uses the link up.",
    params(("token" = String, Path, description = "The one-time token from the e-mail.")),
    responses(
        (status = 200, body = String, content_type = "text/html", description = "The credentials, shown this once."),
        (status = 410, body = String, content_type = "text/html", description = "The link is used up or expired."),
    )
)]
pub(crate) async fn credentials_reveal(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    credentials(state, token, true).await
}

async fn credentials(
    state: AppState,
    token: Result<Path<String>, PathRejection>,
    reveal: bool,
) -> Result<Response, ApiError> {
    let Ok(Path(token)) = token else {
        return Err(ApiError::NotFound(Resource::Route));
    };
    if !crate::routes::is_url_token(&token, MAX_CREDENTIALS_TOKEN) {
        return Err(ApiError::NotFound(Resource::Route));
    }
    let page = state
        .control
        .credentials_page(token, reveal)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Route))?;
    Ok(html_response(page))
}

/// An HTML page that no cache keeps, no referrer leaks and no script runs in.
fn html_response(page: HtmlPage) -> Response {
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK);
    let mut response = (status, page.html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_refuses_the_hit_over_the_limit_and_says_when_to_retry() {
        let limiter = RateLimiter::default();
        let window = Duration::from_secs(60);
        let start = Instant::now();
        assert!(limiter.hit("k", 2, window, start).is_ok());
        assert!(limiter
            .hit("k", 2, window, start + Duration::from_secs(10))
            .is_ok());
        let refused = limiter.hit("k", 2, window, start + Duration::from_secs(20));
        assert_eq!(refused, Err(40));
        // Another key is counted apart.
        assert!(limiter.hit("other", 2, window, start).is_ok());
        // Once the first hit leaves the window, one more is allowed.
        assert!(limiter
            .hit("k", 2, window, start + Duration::from_secs(61))
            .is_ok());
    }

    #[test]
    fn rate_limiter_undo_gives_the_attempt_back() {
        let limiter = RateLimiter::default();
        let window = Duration::from_secs(60);
        let now = Instant::now();
        assert!(limiter.hit("k", 1, window, now).is_ok());
        limiter.undo("k");
        assert!(limiter.hit("k", 1, window, now).is_ok());
    }
}
