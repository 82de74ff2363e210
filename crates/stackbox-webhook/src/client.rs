//! One signed delivery over HTTP(S), classified for the caller's back-off.

use std::time::Duration;

use crate::error::WebhookError;
use crate::signature::{sign, SIGNATURE_HEADER};

/// The header carrying the caller's delivery id.
const DELIVERY_HEADER: &str = "StackBox-Delivery";
/// How much of a receiver's answer (or a Location) an error repeats.
const EXCERPT_CHARS: usize = 200;
/// How much of a refusing receiver's body is read at most.
const BODY_READ_LIMIT: usize = 4096;
const DELIVERY_ID_MAX_CHARS: usize = 200;

/// Timeouts. `Default` is production's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Establishing the connection (TCP and TLS): 5 s.
    pub connect_timeout: Duration,
    /// The whole attempt, from connecting to the end of the answer: 10 s.
    pub total_timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
        }
    }
}

/// A delivery the receiver accepted (2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
}

/// Sends webhooks; cheap to clone (one connection pool). Holds no secret.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    options: WebhookOptions,
}

impl WebhookClient {
    /// A client with these timeouts that never follows redirects.
    pub fn new(options: WebhookOptions) -> Result<WebhookClient, WebhookError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stackbox-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::InvalidConfig {
                field: "HTTP client",
                problem: error_chain(&e.without_url()),
            })?;
        Ok(WebhookClient { http, options })
    }

    pub fn options(&self) -> &WebhookOptions {
        &self.options
    }

    /// POSTs `body` (JSON) to `url`, signed with `secret` at `now_unix`, once.
    ///
    /// `delivery_id` goes in `StackBox-Delivery` and must stay the same across the caller's
    /// retries of one alert (visible ASCII, at most 200 characters). The result is
    /// [`Delivered`] for a 2xx, else [`WebhookError::Retryable`] or [`WebhookError::Rejected`]
    /// (see the crate docs), or [`WebhookError::InvalidConfig`] before anything is sent.
    pub async fn deliver(
        &self,
        url: &str,
        secret: &[u8],
        delivery_id: &str,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Delivered, WebhookError> {
        validate_url(url)?;
        if secret.is_empty() {
            return Err(WebhookError::InvalidConfig {
                field: "secret",
                problem: "is empty; configure the webhook's signing secret".to_owned(),
            });
        }
        if delivery_id.is_empty()
            || delivery_id.len() > DELIVERY_ID_MAX_CHARS
            || !delivery_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(WebhookError::InvalidConfig {
                field: "delivery_id",
                problem: format!(
                    "must be 1 to {DELIVERY_ID_MAX_CHARS} visible ASCII characters (no spaces)"
                ),
            });
        }
        let result = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(secret, now_unix, body))
            .header(DELIVERY_HEADER, delivery_id)
            .body(body.to_vec())
            .send()
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(e) => return Err(self.transport_error(e)),
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(Delivered { status });
        }
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let problem = match location {
                Some(location) => format!(
                    "redirected to {:?}, which was not followed: set webhook_url to the final \
                     address",
                    excerpt(&location, secret)
                ),
                None => "a redirect without a Location, not followed".to_owned(),
            };
            return Err(WebhookError::Rejected { status, problem });
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|v| excerpt(&String::from_utf8_lossy(v.as_bytes()), secret));
        // Read a bounded prefix of the answer; a failure midway keeps what arrived.
        let mut read = Vec::new();
        while read.len() < BODY_READ_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&read);
        let mut problem = if text.trim().is_empty() {
            "the answer had no body".to_owned()
        } else {
            format!("the receiver answered {:?}", excerpt(&text, secret))
        };
        if let Some(retry_after) = retry_after {
            problem.push_str(&format!(" (Retry-After: {retry_after})"));
        }
        if is_retryable_status(status) {
            Err(WebhookError::Retryable {
                status: Some(status),
                problem,
            })
        } else {
            Err(WebhookError::Rejected { status, problem })
        }
    }

    fn transport_error(&self, error: reqwest::Error) -> WebhookError {
        // The URL may carry a token: it is not repeated.
        let (timeout, connect) = (error.is_timeout(), error.is_connect());
        let chain = error_chain(&error.without_url());
        let problem = if timeout && connect {
            format!(
                "could not connect within the connect timeout of {:?}",
                self.options.connect_timeout
            )
        } else if timeout {
            format!(
                "no complete answer within the total timeout of {:?}",
                self.options.total_timeout
            )
        } else if connect {
            format!("could not connect: {chain}")
        } else {
            format!("the request failed before an answer: {chain}")
        };
        WebhookError::Retryable {
            status: None,
            problem,
        }
    }
}

/// 5xx, 408 (request timeout) and 429 (too many requests) are worth retrying.
fn is_retryable_status(status: u16) -> bool {
    (500..=599).contains(&status) || status == 408 || status == 429
}

/// Checks an operator-configured webhook URL: `http://` or `https://`, with a host.
///
/// HTTPS is expected; plain HTTP is meant for a receiver on loopback.
pub fn validate_url(text: &str) -> Result<(), WebhookError> {
    let invalid = |problem: String| WebhookError::InvalidConfig {
        field: "webhook_url",
        problem,
    };
    let url = reqwest::Url::parse(text.trim()).map_err(|e| {
        invalid(format!(
            "is not a URL ({e}); set it to an absolute URL such as https://alerts.example.com/stackbox"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "has the scheme {:?}; use https:// (or http:// for a receiver on loopback)",
            url.scheme().chars().take(20).collect::<String>()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            "has no host; use a URL such as https://alerts.example.com/stackbox".to_owned(),
        ));
    }
    Ok(())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most [`EXCERPT_CHARS`] characters of the receiver's text, with the secret (should a
/// receiver ever echo it) replaced.
fn excerpt(text: &str, secret: &[u8]) -> String {
    let text = match std::str::from_utf8(secret) {
        Ok(secret) if !secret.is_empty() => text.replace(secret, "[redacted]"),
        _ => text.to_owned(),
    };
    text.chars().take(EXCERPT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        for status in [500, 502, 503, 599, 408, 429] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn urls_are_validated() {
        assert_eq!(validate_url("https://alerts.example.com/hook"), Ok(()));
        assert_eq!(validate_url("http://127.0.0.1:8080/hook"), Ok(()));
        for bad in [
            "",
            "alerts.example.com/hook",
            "ftp://example.com/",
            "mailto:a@b.c",
            "https://",
        ] {
            match validate_url(bad) {
                Err(WebhookError::InvalidConfig { field, problem }) => {
                    assert_eq!(field, "webhook_url");
                    assert!(problem.contains("https://"), "{bad:?}: {problem}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn excerpts_are_short_and_redacted() {
        let long = "x".repeat(500);
        assert_eq!(excerpt(&long, b"s3cret").chars().count(), EXCERPT_CHARS);
        assert_eq!(excerpt("echo s3cret", b"s3cret"), "echo [redacted]");
    }
}
