//! The crate's errors.
//!
//! Three enums rather than the house's usual one, because their callers answer them in three
//! different ways: a [`SignatureError`] or an [`EventError`] is the sender's fault (the webhook
//! route answers 400 and Stripe retries or gives up), a [`StripeError`] is ours or Stripe's (the
//! sign-up route answers 502/503 and the operator looks). Separate types keep that mapping
//! exhaustive and checked by the compiler.
//!
//! No variant carries the API secret key or the webhook secret. Text that comes from outside
//! (header parts, Stripe's messages) is cut to a short length, and any occurrence of the secret
//! key in Stripe's answers is replaced before it is stored (see `client::redact`).

use std::time::Duration;

/// Why a `Stripe-Signature` header was refused. Every variant means "answer 400".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the Stripe-Signature header has no timestamp (t=…); the request was not signed by Stripe"
    )]
    MissingTimestamp,

    #[error(
        "the Stripe-Signature header has no v1 signature (only other schemes, or none); \
         the request was not signed by Stripe's current scheme"
    )]
    NoV1Signature,

    #[error(
        "the Stripe-Signature header is malformed at {part:?}: expected t=<unix time>,v1=<hex>"
    )]
    Malformed { part: String },

    #[error(
        "the Stripe-Signature timestamp is {age_seconds} s away from now, outside the tolerance; \
         a replayed delivery, or this server's clock is wrong"
    )]
    Stale { age_seconds: i64 },

    #[error(
        "no v1 signature in the Stripe-Signature header matches the body; the body was changed, \
         or the webhook secret is not this endpoint's (check STACKBOX_STRIPE_WEBHOOK_SECRET)"
    )]
    Mismatch,

    #[error(
        "the webhook endpoint secret is empty; set STACKBOX_STRIPE_WEBHOOK_SECRET to the \
         endpoint's signing secret (whsec_…)"
    )]
    EmptySecret,
}

/// Why a webhook body could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the webhook body is not JSON (line {line}, column {column}): {problem}")]
    Json {
        line: usize,
        column: usize,
        problem: String,
    },

    #[error("the {event_type} event has no {field}")]
    MissingField {
        event_type: String,
        field: &'static str,
    },

    #[error("the {event_type} event's {field} is not {expected}")]
    WrongType {
        event_type: String,
        field: &'static str,
        expected: &'static str,
    },
}

/// What went wrong talking to Stripe's API.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with its error object (`{"error":{"type","code","message","param"}}`).
    /// `kind` is the error's `type` (`invalid_request_error`, `card_error`, `api_error`, …).
    #[error(
        "Stripe refused the request (HTTP {status}, {kind}{}{}): {message}{}",
        code.as_deref().map(|c| format!(", code {c}")).unwrap_or_default(),
        param.as_deref().map(|p| format!(", parameter {p}")).unwrap_or_default(),
        request_id.as_deref().map(|r| format!(" (request {r})")).unwrap_or_default()
    )]
    Api {
        status: u16,
        kind: String,
        code: Option<String>,
        message: String,
        param: Option<String>,
        /// Stripe's `Request-Id` header, what Stripe's support asks for.
        request_id: Option<String>,
    },

    /// No connection could be made (refused, DNS, TLS, reset before an answer), after the retries.
    #[error(
        "cannot reach Stripe at {url} after {attempts} attempts: {problem}; check \
         STACKBOX_STRIPE_API_BASE and the network"
    )]
    Connect {
        url: String,
        attempts: u32,
        problem: String,
    },

    /// Stripe did not answer in time. Not retried: the request may still be running at Stripe,
    /// and a second one with the same idempotency key would be refused while it does; a later
    /// retry with the same key returns its result.
    #[error(
        "Stripe did not answer {url} within {after:?}; retry later with the same idempotency key"
    )]
    Timeout { url: String, after: Duration },

    /// Stripe (or whatever answered at the API base) sent something that is not its API's answer.
    #[error("unexpected answer from {url} (HTTP {status}): {problem}")]
    UnexpectedResponse {
        url: String,
        status: u16,
        problem: String,
    },

    /// The client's configuration cannot work; names the setting.
    #[error("invalid Stripe setting {setting}: {problem}")]
    InvalidConfig {
        setting: &'static str,
        problem: String,
    },

    /// A request that Stripe would refuse anyway, caught before sending; names the field.
    #[error("invalid {field} for Stripe: {problem}")]
    InvalidRequest {
        field: &'static str,
        problem: String,
    },
}

impl StripeError {
    /// Whether trying again later (same idempotency key) may succeed: rate limits, Stripe's own
    /// errors, timeouts and unreachable servers; not refusals of the request itself.
    pub fn is_transient(&self) -> bool {
        match self {
            StripeError::Api { status, .. } => matches!(*status, 409 | 429) || *status >= 500,
            StripeError::Connect { .. } | StripeError::Timeout { .. } => true,
            StripeError::UnexpectedResponse { status, .. } => *status >= 500,
            StripeError::InvalidConfig { .. } | StripeError::InvalidRequest { .. } => false,
        }
    }
}
