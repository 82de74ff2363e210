//! The crate's one error type.

/// Why a signature was refused, a delivery failed, or a setting is unusable.
///
/// No variant carries the secret or the webhook URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A setting or argument is unusable; `field` names it, `problem` says how to fix it.
    #[error("{field} is invalid: {problem}")]
    InvalidConfig {
        field: &'static str,
        problem: String,
    },

    /// The signature header cannot be parsed.
    #[error(
        "the StackBox-Signature header is malformed: {problem}; \
         expected t=<unix seconds>,v1=<hex>"
    )]
    MalformedHeader { problem: String },

    /// No `v1` in the header is the body's signature under this secret.
    #[error(
        "no v1 signature in the StackBox-Signature header matches the body: the body was \
         changed, or the secret is not the one the sender signs with"
    )]
    NoSignatureMatched,

    /// Authentic, but the timestamp is too far from now (positive: in the past).
    #[error(
        "the StackBox-Signature timestamp is {age_seconds} s from now, beyond the \
         {tolerance_seconds} s tolerance: a replayed delivery, or a clock is wrong"
    )]
    Stale {
        age_seconds: i64,
        tolerance_seconds: u64,
    },

    /// Worth another attempt later: no answer (`status: None`: connection failure, timeout) or
    /// a 5xx, 408 or 429.
    #[error("the webhook delivery failed ({}), retry later: {problem}", status_text(.status))]
    Retryable {
        status: Option<u16>,
        problem: String,
    },

    /// The receiver answered and refused: a 4xx other than 408/429, or a 3xx (not followed).
    #[error("the webhook receiver refused the delivery with HTTP {status}: {problem}")]
    Rejected { status: u16, problem: String },
}

impl WebhookError {
    /// Whether the caller's back-off should simply try again ([`WebhookError::Retryable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, WebhookError::Retryable { .. })
    }
}

fn status_text(status: &Option<u16>) -> String {
    match status {
        Some(status) => format!("HTTP {status}"),
        None => "no answer".to_owned(),
    }
}
