//! Stripe's HTTP API: Checkout Sessions (sign-up) and Subscriptions (plan reconciliation).
//!
//! Requests are form-encoded as Stripe expects (`line_items[0][price]=…`, `metadata[key]=…`),
//! authenticated with `Authorization: Bearer <secret key>`, pinned to [`STRIPE_API_VERSION`] with
//! the `Stripe-Version` header so that an upgrade of the account's default version changes
//! nothing here, and — for the one write — carry the caller's `Idempotency-Key` (the sign-up id):
//! Stripe answers a repeated key with the first request's result, so no retry, ours or the
//! caller's, ever creates a second session.
//!
//! Retries: a connection that fails before an answer, a 409 (the same idempotency key still in
//! flight), a 429 (rate limit, lock timeout) and a 5xx are retried up to
//! [`ClientOptions::max_retries`] times with exponential back-off, with the same idempotency key
//! and body, as Stripe's own libraries do. Stripe's `Stripe-Should-Retry` header, when present,
//! overrides that choice: Stripe sends `false` with a 500 that its idempotency layer recorded
//! (a retry would only replay it) and `true` where a retry will help. A timeout is not retried
//! (see [`StripeError::Timeout`]). Any other 4xx is Stripe refusing the request and is returned
//! at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::error::StripeError;
pub use crate::event::Subscription;
use crate::event::{subscription_from, Fields};

/// Stripe's API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// The API version every request pins (`Stripe-Version`): 2026-04-22.dahlia, the current
/// release when this was written. What we read from its answers (a session's `id` and `url`; a
/// subscription's `id`, `customer`, `status`, `items.data[].price.id`, `cancel_at_period_end`)
/// is unchanged since well before basil; dahlia's breaking changes (decimal types, the renamed
/// `ui_mode` values) touch nothing we send, since hosted Checkout is the default `ui_mode`.
/// Webhook events are rendered in the webhook endpoint's own version, which is why
/// [`crate::event`] accepts the older shapes too.
pub const STRIPE_API_VERSION: &str = "2026-04-22.dahlia";

/// Stripe's limits on metadata (more is refused with a 400).
const METADATA_MAX_KEYS: usize = 50;
const METADATA_KEY_MAX_CHARS: usize = 40;
const METADATA_VALUE_MAX_CHARS: usize = 500;
/// Stripe's limit on idempotency keys and on `client_reference_id`.
const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;
const CLIENT_REFERENCE_MAX_CHARS: usize = 200;
/// How much of an unexpected answer an error repeats.
const BODY_EXCERPT_CHARS: usize = 200;

/// What a sign-up asks Stripe for: a hosted Checkout page for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// The sign-up id: sent as `Idempotency-Key`, so the same sign-up always gets the same
    /// session, whatever retries happen.
    pub idempotency_key: String,
    /// The plan's Stripe price (`price_…`), quantity 1.
    pub price_id: String,
    /// Comes back in `checkout.session.completed` (the sign-up or account id).
    pub client_reference_id: String,
    /// Prefills Checkout's e-mail field.
    pub customer_email: Option<String>,
    /// Where Stripe sends the customer after paying; may contain `{CHECKOUT_SESSION_ID}`.
    pub success_url: String,
    /// Where Stripe sends the customer who gives up.
    pub cancel_url: String,
    /// Set on the session (`metadata[…]`) and on the subscription it creates
    /// (`subscription_data[metadata][…]`), so subscription and invoice events can be traced to
    /// the account without a lookup.
    pub metadata: BTreeMap<String, String>,
}

/// The created session: its id and the page to send the customer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// The boxed future the [`Payments`] methods return (boxed, so the trait is object safe).
pub type PaymentsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StripeError>> + Send + 'a>>;

/// What the sign-up route and the plan reconciliation need from a payment provider; usable as
/// `Arc<dyn Payments>`.
pub trait Payments: Send + Sync {
    fn create_checkout_session<'a>(
        &'a self,
        request: &'a CheckoutRequest,
    ) -> PaymentsFuture<'a, CheckoutSession>;

    fn retrieve_subscription<'a>(
        &'a self,
        subscription_id: &'a str,
    ) -> PaymentsFuture<'a, Subscription>;
}

/// Timeouts, retries and the pinned version. `Default` is production's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Establishing the connection (TCP and TLS): 5 s.
    pub connect_timeout: Duration,
    /// One attempt, from connecting to the end of the answer: 20 s.
    pub total_timeout: Duration,
    /// Retries after the first attempt: 2.
    pub max_retries: u32,
    /// Wait before the first retry, doubled before each next one: 500 ms.
    pub retry_backoff: Duration,
    /// `Stripe-Version`: [`STRIPE_API_VERSION`].
    pub stripe_version: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(20),
            max_retries: 2,
            retry_backoff: Duration::from_millis(500),
            stripe_version: STRIPE_API_VERSION.to_owned(),
        }
    }
}

/// Stripe's API over HTTPS (plain HTTP only for a test server on loopback).
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    /// Without a trailing slash.
    api_base: String,
    secret_key: String,
    options: ClientOptions,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.api_base)
            .field("secret_key", &"[redacted]")
            .field("options", &self.options)
            .finish()
    }
}

impl StripeClient {
    /// A client with production's timeouts and retries. `api_base` is Stripe's
    /// ([`DEFAULT_API_BASE`]) or a test server's; `secret_key` is an `sk_…` or `rk_…` key.
    pub fn new(api_base: String, secret_key: String) -> Result<StripeClient, StripeError> {
        StripeClient::with_options(api_base, secret_key, ClientOptions::default())
    }

    pub fn with_options(
        api_base: String,
        secret_key: String,
        options: ClientOptions,
    ) -> Result<StripeClient, StripeError> {
        let api_base = validate_api_base(&api_base)?;
        validate_secret_key(&secret_key)?;
        if options.stripe_version.is_empty()
            || !options.stripe_version.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(StripeError::InvalidConfig {
                setting: "Stripe-Version",
                problem: "must be a version such as 2026-04-22.dahlia".to_owned(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.total_timeout)
            .user_agent(concat!("stackbox/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeError::InvalidConfig {
                setting: "HTTP client",
                problem: error_chain(&e, &secret_key),
            })?;
        Ok(StripeClient {
            http,
            api_base,
            secret_key,
            options,
        })
    }

    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// `POST /v1/checkout/sessions` in subscription mode.
    pub async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutSession, StripeError> {
        let form = checkout_form(request)?;
        let url = format!("{}/v1/checkout/sessions", self.api_base);
        let body = self
            .send_with_retries(&url, || {
                self.http
                    .post(&url)
                    .header("Idempotency-Key", &request.idempotency_key)
                    .form(&form)
            })
            .await?;
        let unexpected = |problem: String| StripeError::UnexpectedResponse {
            url: url.clone(),
            status: 200,
            problem,
        };
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| unexpected(format!("the checkout session is not JSON: {e}")))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| unexpected(format!("the checkout session has no {name}")))
        };
        Ok(CheckoutSession {
            id: field("id")?,
            url: field("url")?,
        })
    }

    /// `GET /v1/subscriptions/{id}`: status and price ids, for plan reconciliation.
    pub async fn retrieve_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Subscription, StripeError> {
        if subscription_id.is_empty()
            || !subscription_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StripeError::InvalidRequest {
                field: "subscription_id",
                problem: "must be a Stripe id such as sub_1MowQVLkdIwHu7ixeRlqHVzs".to_owned(),
            });
        }
        let url = format!("{}/v1/subscriptions/{subscription_id}", self.api_base);
        let body = self.send_with_retries(&url, || self.http.get(&url)).await?;
        let unexpected = |problem: String| StripeError::UnexpectedResponse {
            url: url.clone(),
            status: 200,
            problem,
        };
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| unexpected(format!("the subscription is not JSON: {e}")))?;
        let at = Fields {
            event_type: "subscription",
        };
        let object = at
            .object(&value, "subscription")
            .map_err(|e| unexpected(e.to_string()))?;
        subscription_from(&at, object, "subscription").map_err(|e| unexpected(e.to_string()))
    }

    /// Sends `build()`'s request (rebuilt for each attempt: same headers, same body) until a
    /// 2xx, a final error or the last retry; returns the 2xx body.
    async fn send_with_retries(
        &self,
        url: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, StripeError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let retryable = match self.attempt(url, &build).await? {
                Ok(body) => return Ok(body),
                Err(retryable) => retryable,
            };
            if attempt > self.options.max_retries {
                return Err(match retryable {
                    StripeError::Connect { url, problem, .. } => StripeError::Connect {
                        url,
                        attempts: attempt,
                        problem,
                    },
                    other => other,
                });
            }
            let factor = 2u32.saturating_pow(attempt - 1);
            tokio::time::sleep(self.options.retry_backoff.saturating_mul(factor)).await;
        }
    }

    /// One attempt. `Err` is final; `Ok(Err)` is worth retrying; `Ok(Ok)` is the 2xx body.
    async fn attempt(
        &self,
        url: &str,
        build: &impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Result<Vec<u8>, StripeError>, StripeError> {
        let request = build()
            .bearer_auth(&self.secret_key)
            .header("Stripe-Version", &self.options.stripe_version);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return self.transport_error(url, e),
        };
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let should_retry = header("stripe-should-retry");
        let request_id = header("request-id");
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) => return self.transport_error(url, e),
        };
        if status.is_success() {
            return Ok(Ok(body));
        }
        let error = self.error_from_answer(url, status.as_u16(), request_id, &body);
        let retry = match should_retry.as_deref() {
            Some("true") => true,
            Some("false") => false,
            _ => matches!(status.as_u16(), 409 | 429) || status.is_server_error(),
        };
        if retry {
            Ok(Err(error))
        } else {
            Err(error)
        }
    }

    fn transport_error(
        &self,
        url: &str,
        error: reqwest::Error,
    ) -> Result<Result<Vec<u8>, StripeError>, StripeError> {
        // A connect error (even a connect timeout) sent nothing: always safe to retry.
        if error.is_timeout() && !error.is_connect() {
            return Err(StripeError::Timeout {
                url: url.to_owned(),
                after: self.options.total_timeout,
            });
        }
        // Anything else failed before a complete answer (refused, reset, a pooled connection
        // closed under us): with the idempotency key a retry is safe.
        Ok(Err(StripeError::Connect {
            url: url.to_owned(),
            attempts: 1,
            problem: error_chain(&error.without_url(), &self.secret_key),
        }))
    }

    /// A non-2xx answer: Stripe's error object, or a description of whatever came instead.
    fn error_from_answer(
        &self,
        url: &str,
        status: u16,
        request_id: Option<String>,
        body: &[u8],
    ) -> StripeError {
        let key = &self.secret_key;
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_object);
        let Some(error) = error else {
            let excerpt: String = String::from_utf8_lossy(body)
                .chars()
                .take(BODY_EXCERPT_CHARS)
                .collect();
            return StripeError::UnexpectedResponse {
                url: url.to_owned(),
                status,
                problem: format!("not Stripe's error object: {:?}", redact(&excerpt, key)),
            };
        };
        let text = |name: &str| {
            error
                .get(name)
                .and_then(Value::as_str)
                .map(|text| redact(text, key))
        };
        StripeError::Api {
            status,
            kind: text("type").unwrap_or_else(|| "unknown_error_type".to_owned()),
            code: text("code"),
            message: text("message").unwrap_or_else(|| "(no message)".to_owned()),
            param: text("param"),
            request_id: request_id.map(|id| redact(&id, key)),
        }
    }
}

impl Payments for StripeClient {
    fn create_checkout_session<'a>(
        &'a self,
        request: &'a CheckoutRequest,
    ) -> PaymentsFuture<'a, CheckoutSession> {
        Box::pin(StripeClient::create_checkout_session(self, request))
    }

    fn retrieve_subscription<'a>(
        &'a self,
        subscription_id: &'a str,
    ) -> PaymentsFuture<'a, Subscription> {
        Box::pin(StripeClient::retrieve_subscription(self, subscription_id))
    }
}

/// The form fields of a subscription-mode Checkout Session, checked against Stripe's limits.
fn checkout_form(request: &CheckoutRequest) -> Result<Vec<(String, String)>, StripeError> {
    let invalid = |field: &'static str, problem: &str| StripeError::InvalidRequest {
        field,
        problem: problem.to_owned(),
    };
    let key = &request.idempotency_key;
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_MAX_CHARS
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "idempotency_key",
            "must be 1 to 255 printable ASCII characters without spaces (the sign-up id)",
        ));
    }
    if request.price_id.trim().is_empty() {
        return Err(invalid(
            "price_id",
            "is empty; configure the plan's Stripe price id (price_…)",
        ));
    }
    let reference = &request.client_reference_id;
    if reference.is_empty() || reference.chars().count() > CLIENT_REFERENCE_MAX_CHARS {
        return Err(invalid(
            "client_reference_id",
            "must be 1 to 200 characters",
        ));
    }
    if request
        .customer_email
        .as_deref()
        .is_some_and(|email| email.trim().is_empty())
    {
        return Err(invalid("customer_email", "is empty; leave it out instead"));
    }
    for (field, url) in [
        ("success_url", &request.success_url),
        ("cancel_url", &request.cancel_url),
    ] {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(field, "must be an absolute http(s) URL"));
        }
    }
    if request.metadata.len() > METADATA_MAX_KEYS {
        return Err(invalid("metadata", "has more than Stripe's 50 keys"));
    }
    for (name, value) in &request.metadata {
        if name.is_empty()
            || name.chars().count() > METADATA_KEY_MAX_CHARS
            || name.contains(['[', ']'])
        {
            return Err(StripeError::InvalidRequest {
                field: "metadata",
                problem: format!("key {name:?} must be 1 to 40 characters without square brackets"),
            });
        }
        if value.chars().count() > METADATA_VALUE_MAX_CHARS {
            return Err(StripeError::InvalidRequest {
                field: "metadata",
                problem: format!("the value of {name:?} is longer than Stripe's 500 characters"),
            });
        }
    }

    let mut form = vec![
        ("mode".to_owned(), "subscription".to_owned()),
        ("line_items[0][price]".to_owned(), request.price_id.clone()),
        ("line_items[0][quantity]".to_owned(), "1".to_owned()),
        (
            "client_reference_id".to_owned(),
            request.client_reference_id.clone(),
        ),
    ];
    if let Some(email) = &request.customer_email {
        form.push(("customer_email".to_owned(), email.clone()));
    }
    form.push(("success_url".to_owned(), request.success_url.clone()));
    form.push(("cancel_url".to_owned(), request.cancel_url.clone()));
    for (name, value) in &request.metadata {
        form.push((format!("metadata[{name}]"), value.clone()));
    }
    for (name, value) in &request.metadata {
        form.push((
            format!("subscription_data[metadata][{name}]"),
            value.clone(),
        ));
    }
    Ok(form)
}

fn validate_api_base(api_base: &str) -> Result<String, StripeError> {
    let invalid = |problem: String| StripeError::InvalidConfig {
        setting: "STACKBOX_STRIPE_API_BASE",
        problem,
    };
    let url = reqwest::Url::parse(api_base).map_err(|e| {
        invalid(format!(
            "{api_base:?} is not a URL ({e}); use {DEFAULT_API_BASE}"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(invalid(format!(
            "{api_base:?} must be an http(s) URL with a host, such as {DEFAULT_API_BASE}"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // It would end up in error messages; the key goes in the Authorization header.
        return Err(invalid(
            "must not contain a user name or password; the secret key is set on its own".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "{api_base:?} must not have a query or fragment"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn validate_secret_key(secret_key: &str) -> Result<(), StripeError> {
    let invalid = |problem: &str| StripeError::InvalidConfig {
        setting: "STACKBOX_STRIPE_SECRET_KEY",
        problem: problem.to_owned(),
    };
    // The messages describe the key, never repeat it.
    if secret_key.is_empty() {
        return Err(invalid(
            "is empty; set it to the account's secret key (sk_…)",
        ));
    }
    if !secret_key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "contains spaces or non-ASCII characters; copy the key again",
        ));
    }
    if secret_key.starts_with("pk_") {
        return Err(invalid(
            "is a publishable key (pk_…); the API needs the secret key (sk_…)",
        ));
    }
    if secret_key.starts_with("whsec_") {
        return Err(invalid(
            "is a webhook signing secret (whsec_…); that one is STACKBOX_STRIPE_WEBHOOK_SECRET, \
             this one is the secret key (sk_…)",
        ));
    }
    if !(secret_key.starts_with("sk_") || secret_key.starts_with("rk_")) {
        return Err(invalid(
            "is not a Stripe secret key; expected sk_live_…, sk_test_… or a restricted rk_… key",
        ));
    }
    Ok(())
}

/// The error and its sources, joined (reqwest's own message alone says little).
fn error_chain(error: &dyn std::error::Error, secret_key: &str) -> String {
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
    redact(&text, secret_key)
}

/// `text` with every occurrence of the secret key replaced. Stripe masks keys it repeats
/// (`sk_test_****1234`), but whatever answers at a misconfigured API base might not.
pub(crate) fn redact(text: &str, secret_key: &str) -> String {
    if secret_key.is_empty() {
        return text.to_owned();
    }
    text.replace(secret_key, "[redacted]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CheckoutRequest {
        CheckoutRequest {
            idempotency_key: "signup_01".to_owned(),
            price_id: "price_123".to_owned(),
            client_reference_id: "signup_01".to_owned(),
            customer_email: Some("owner@example.com".to_owned()),
            success_url: "https://stackbox.example/welcome?session={CHECKOUT_SESSION_ID}"
                .to_owned(),
            cancel_url: "https://stackbox.example/signup".to_owned(),
            metadata: BTreeMap::from([("signup_id".to_owned(), "signup_01".to_owned())]),
        }
    }

    type Change = Box<dyn Fn(&mut CheckoutRequest)>;

    #[test]
    fn checkout_form_refuses_what_stripe_would_refuse_naming_the_field() {
        let cases: Vec<(&str, Change)> = vec![
            ("idempotency_key", Box::new(|r| r.idempotency_key.clear())),
            (
                "idempotency_key",
                Box::new(|r| r.idempotency_key = "a b".to_owned()),
            ),
            (
                "idempotency_key",
                Box::new(|r| r.idempotency_key = "k".repeat(256)),
            ),
            ("price_id", Box::new(|r| r.price_id = " ".to_owned())),
            (
                "client_reference_id",
                Box::new(|r| r.client_reference_id.clear()),
            ),
            (
                "customer_email",
                Box::new(|r| r.customer_email = Some(String::new())),
            ),
            (
                "success_url",
                Box::new(|r| r.success_url = "/welcome".to_owned()),
            ),
            ("cancel_url", Box::new(|r| r.cancel_url.clear())),
            (
                "metadata",
                Box::new(|r| {
                    r.metadata.insert("a[b]".to_owned(), "x".to_owned());
                }),
            ),
            (
                "metadata",
                Box::new(|r| {
                    r.metadata.insert("k".to_owned(), "v".repeat(501));
                }),
            ),
            (
                "metadata",
                Box::new(|r| {
                    for i in 0..51 {
                        r.metadata.insert(format!("k{i}"), "v".to_owned());
                    }
                }),
            ),
        ];
        for (expected_field, change) in cases {
            let mut bad = request();
            change(&mut bad);
            match checkout_form(&bad) {
                Err(StripeError::InvalidRequest { field, .. }) => {
                    assert_eq!(field, expected_field)
                }
                other => panic!("expected InvalidRequest for {expected_field}, got {other:?}"),
            }
        }
        assert!(checkout_form(&request()).is_ok());
    }

    #[test]
    fn api_base_is_normalised_and_refused_with_credentials_or_a_query() {
        assert_eq!(
            validate_api_base("https://api.stripe.com/").ok().as_deref(),
            Some("https://api.stripe.com")
        );
        assert_eq!(
            validate_api_base("http://127.0.0.1:12111/prefix/")
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:12111/prefix")
        );
        for bad in [
            "api.stripe.com",
            "ftp://api.stripe.com",
            "https://user:pw@api.stripe.com",
            "https://api.stripe.com/?x=1",
        ] {
            assert!(validate_api_base(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn secret_key_errors_describe_the_key_without_repeating_it() {
        for bad in [
            "",
            "pk_test_51Hpublishable",
            "whsec_signingsecret123",
            "sk_test_with space",
            "not_a_key_at_all",
        ] {
            let error = validate_secret_key(bad).expect_err(bad);
            if !bad.is_empty() {
                assert!(!error.to_string().contains(bad), "{error}");
                assert!(!format!("{error:?}").contains(bad), "{error:?}");
            }
        }
        assert!(validate_secret_key("sk_test_4eC39HqLyjWDarjtT1zdp7dc").is_ok());
        assert!(validate_secret_key("rk_live_restricted").is_ok());
    }
}
