//! A fake Stripe API: a real HTTP server on loopback that checks what Stripe checks and answers
//! the way Stripe answers, and records every request for the tests to inspect.
//!
//! Like Stripe it refuses a wrong key (401), unknown and missing parameters (400 with `param`),
//! an unknown price (400 `resource_missing`), a reused idempotency key with different
//! parameters (400 `idempotency_error`), and replays the first answer for a repeated key.
//! Unlike Stripe it also requires an `Idempotency-Key` on every POST and a `Stripe-Version`
//! equal to the one the client pins, so that forgetting either fails loudly; and on a wrong key
//! it repeats the key in full (Stripe masks it) to prove the client redacts it.
//!
//! Special prices drive the failure modes:
//! - `price_flaky`: a 500 for the first request of each idempotency key, then success (a 500
//!   from in front of Stripe's idempotency layer, so not recorded and without
//!   `Stripe-Should-Retry`);
//! - `price_rate_limited`: a 429 (`lock_timeout`) first, then success;
//! - `price_always_500`: always a 500;
//! - `price_500_should_not_retry`: a 500 with `Stripe-Should-Retry: false`;
//! - `price_html_502`: a proxy's HTML page (with the caller's key in it) instead of JSON;
//! - `price_slow`: answers after 3 seconds.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub const API_KEY: &str = "sk_test_51StackBoxFakeKeyDoNotUseAnywhere0000";
pub const PINNED_VERSION: &str = stackbox_billing::STRIPE_API_VERSION;
pub const KNOWN_SUBSCRIPTION: &str = "sub_1SXbPoLkdIwHu7ixmNcS3kQe";

const KNOWN_PRICES: &[&str] = &[
    "price_starter_monthly",
    "price_professional_monthly",
    "price_flaky",
    "price_rate_limited",
    "price_always_500",
    "price_500_should_not_retry",
    "price_html_502",
    "price_slow",
];

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The body decoded as a form, in order.
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Form = Vec<(String, String)>;

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Per idempotency key: the first request's form and its stored answer (Stripe stores
    /// the answer of a request that was executed, success or 4xx; not a 5xx).
    idempotent: HashMap<String, (Form, Option<(u16, String)>)>,
    sessions_created: u32,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind loopback");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe {
            base: format!("http://{addr}"),
            inner,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner
            .lock()
            .map(|i| i.requests.clone())
            .unwrap_or_default()
    }

    pub fn sessions_created(&self) -> u32 {
        self.inner.lock().map(|i| i.sessions_created).unwrap_or(0)
    }
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> (StatusCode, String) {
    let mut error = serde_json::json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = code.into();
        error["doc_url"] = format!("https://stripe.com/docs/error-codes/{code}").into();
    }
    if let Some(param) = param {
        error["param"] = param.into();
    }
    if status.is_server_error() {
        error["request_log_url"] = "https://dashboard.stripe.com/test/logs/req_fake".into();
    }
    (status, serde_json::json!({ "error": error }).to_string())
}

fn json_response(status: StatusCode, body: String, extra: &[(&str, &str)]) -> Response {
    let mut response = (
        status,
        [
            ("content-type", "application/json"),
            ("request-id", "req_FakeStripe0001"),
        ],
        body,
    )
        .into_response();
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: headers.clone(),
        form: form.clone(),
    };
    if let Ok(mut inner) = inner.lock() {
        inner.requests.push(recorded);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());

    // Authentication first, as Stripe does.
    match header("authorization") {
        Some(value) if value == format!("Bearer {API_KEY}") => {}
        Some(value) => {
            let given = value.strip_prefix("Bearer ").unwrap_or(value);
            let (status, body) = stripe_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                // Stripe masks the key here; this fake does not, on purpose.
                &format!("Invalid API Key provided: {given}"),
                None,
            );
            return json_response(status, body, &[]);
        }
        None => {
            let (status, body) = stripe_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                "You did not provide an API key.",
                None,
            );
            return json_response(status, body, &[]);
        }
    }
    if header("stripe-version") != Some(PINNED_VERSION) {
        let (status, body) = stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            &format!(
                "Invalid Stripe API version: {:?}",
                header("stripe-version").unwrap_or("(none)")
            ),
            None,
        );
        return json_response(status, body, &[]);
    }

    match (method.as_str(), uri.path()) {
        ("POST", "/v1/checkout/sessions") => create_session(&inner, &headers, form).await,
        ("GET", path) if path.starts_with("/v1/subscriptions/") => {
            retrieve_subscription(&path["/v1/subscriptions/".len()..])
        }
        (method, path) => {
            let (status, body) = stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                &format!("Unrecognized request URL ({method}: {path})."),
                None,
            );
            json_response(status, body, &[])
        }
    }
}

async fn create_session(
    inner: &Arc<Mutex<Inner>>,
    headers: &HeaderMap,
    form: Vec<(String, String)>,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bad = |code: &str, message: &str, param: Option<&str>| {
        let (status, body) = stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some(code),
            message,
            param,
        );
        json_response(status, body, &[])
    };
    if header("content-type") != Some("application/x-www-form-urlencoded") {
        return bad(
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
            None,
        );
    }
    let Some(key) = header("idempotency-key").map(str::to_owned) else {
        return bad(
            "parameter_missing",
            "This fake requires an Idempotency-Key on every POST.",
            None,
        );
    };

    // Idempotency: same key and same parameters → the stored answer; different parameters →
    // refused, as Stripe does.
    let replay = {
        let Ok(mut inner) = inner.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        match inner.idempotent.get(&key) {
            Some((first_form, _)) if *first_form != form => Some(Err(())),
            Some((_, Some(answer))) => Some(Ok(answer.clone())),
            Some((_, None)) => None,
            None => {
                inner.idempotent.insert(key.clone(), (form.clone(), None));
                None
            }
        }
    };
    match replay {
        Some(Err(())) => {
            return bad(
                "idempotency_key_in_use",
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with.",
                None,
            )
        }
        Some(Ok((status, body))) => {
            return json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                body,
                &[("idempotent-replayed", "true")],
            )
        }
        None => {}
    }

    let fields: BTreeMap<&str, &str> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (name, _) in &form {
        let allowed = matches!(
            name.as_str(),
            "mode"
                | "line_items[0][price]"
                | "line_items[0][quantity]"
                | "client_reference_id"
                | "customer_email"
                | "success_url"
                | "cancel_url"
        ) || (name.starts_with("metadata[") && name.ends_with(']'))
            || (name.starts_with("subscription_data[metadata][") && name.ends_with(']'));
        if !allowed {
            return bad(
                "parameter_unknown",
                &format!("Received unknown parameter: {name}"),
                Some(name),
            );
        }
    }
    for required in [
        "mode",
        "line_items[0][price]",
        "line_items[0][quantity]",
        "success_url",
    ] {
        if !fields.contains_key(required) {
            return bad(
                "parameter_missing",
                &format!("Missing required param: {required}."),
                Some(required),
            );
        }
    }
    if fields["mode"] != "subscription" {
        return bad("parameter_invalid_string", "Invalid mode", Some("mode"));
    }
    let price = fields["line_items[0][price]"];
    if !KNOWN_PRICES.contains(&price) {
        let answer = stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such price: '{price}'"),
            Some("line_items[0][price]"),
        );
        store_answer(inner, &key, &answer);
        return json_response(answer.0, answer.1, &[]);
    }

    let attempts_for_key = inner
        .lock()
        .map(|i| {
            i.requests
                .iter()
                .filter(|r| r.header("idempotency-key") == Some(key.as_str()))
                .count()
        })
        .unwrap_or(0);
    match price {
        "price_flaky" if attempts_for_key == 1 => {
            let (status, body) = stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                "An unknown error occurred",
                None,
            );
            return json_response(status, body, &[]);
        }
        "price_rate_limited" if attempts_for_key == 1 => {
            let (status, body) = stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("lock_timeout"),
                "This object cannot be accessed right now because another API request or \
                 Stripe process is currently accessing it.",
                None,
            );
            return json_response(status, body, &[("stripe-should-retry", "true")]);
        }
        "price_always_500" => {
            let (status, body) = stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                "An unknown error occurred",
                None,
            );
            return json_response(status, body, &[]);
        }
        "price_500_should_not_retry" => {
            let (status, body) = stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                "An unknown error occurred",
                None,
            );
            return json_response(status, body, &[("stripe-should-retry", "false")]);
        }
        "price_html_502" => {
            let given = header("authorization").unwrap_or_default();
            return (
                StatusCode::BAD_GATEWAY,
                [("content-type", "text/html")],
                format!("<html><body>502 Bad Gateway (upstream saw {given})</body></html>"),
            )
                .into_response();
        }
        "price_slow" => tokio::time::sleep(Duration::from_secs(3)).await,
        _ => {}
    }

    let number = inner
        .lock()
        .map(|mut i| {
            i.sessions_created += 1;
            i.sessions_created
        })
        .unwrap_or(0);
    let id = format!("cs_test_fake{number:04}");
    let metadata: serde_json::Map<String, serde_json::Value> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(|name| (name.to_owned(), v.clone().into()))
        })
        .collect();
    let body = serde_json::json!({
        "id": id,
        "object": "checkout.session",
        "cancel_url": fields.get("cancel_url"),
        "client_reference_id": fields.get("client_reference_id"),
        "customer": null,
        "customer_email": fields.get("customer_email"),
        "expires_at": 1_764_201_500,
        "livemode": false,
        "metadata": metadata,
        "mode": "subscription",
        "payment_status": "unpaid",
        "status": "open",
        "subscription": null,
        "success_url": fields.get("success_url"),
        "ui_mode": "hosted_page",
        "url": format!("https://checkout.stripe.com/c/pay/{id}#fidkdWxOYHwnPyd1blpxYHZxWjA0"),
    })
    .to_string();
    store_answer(inner, &key, &(StatusCode::OK, body.clone()));
    json_response(StatusCode::OK, body, &[])
}

fn store_answer(inner: &Arc<Mutex<Inner>>, key: &str, answer: &(StatusCode, String)) {
    if let Ok(mut inner) = inner.lock() {
        if let Some(entry) = inner.idempotent.get_mut(key) {
            entry.1 = Some((answer.0.as_u16(), answer.1.clone()));
        }
    }
}

fn retrieve_subscription(id: &str) -> Response {
    if id != KNOWN_SUBSCRIPTION {
        let (status, body) = stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such subscription: '{id}'"),
            Some("id"),
        );
        return json_response(status, body, &[]);
    }
    let body = serde_json::json!({
        "id": KNOWN_SUBSCRIPTION,
        "object": "subscription",
        "billing_mode": { "type": "flexible" },
        "cancel_at_period_end": true,
        "collection_method": "charge_automatically",
        "created": 1_764_115_150,
        "currency": "eur",
        "customer": "cus_TUrGPlw6b3Kx9Q",
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_TUrGxb7AqL0sVd",
                    "object": "subscription_item",
                    "current_period_end": 1_766_793_550,
                    "current_period_start": 1_764_115_150,
                    "price": {
                        "id": "price_professional_monthly",
                        "object": "price",
                        "recurring": { "interval": "month", "interval_count": 1 },
                        "unit_amount": 4900,
                        "unit_amount_decimal": "4900"
                    },
                    "quantity": 1
                }
            ],
            "has_more": false,
            "url": "/v1/subscription_items?subscription=sub_1SXbPoLkdIwHu7ixmNcS3kQe"
        },
        "livemode": false,
        "metadata": { "signup_id": "signup_01JDQ7Z5K3M8X2" },
        "status": "past_due"
    })
    .to_string();
    json_response(StatusCode::OK, body, &[])
}
