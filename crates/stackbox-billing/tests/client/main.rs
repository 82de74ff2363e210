//! `StripeClient` against a fake Stripe API served on loopback (see fake_stripe.rs): every
//! request is checked by the server the way Stripe checks it, and recorded so that each test
//! can assert the method, path, headers and every form field that went over the wire.

mod fake_stripe;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_stripe::{FakeStripe, API_KEY, KNOWN_SUBSCRIPTION, PINNED_VERSION};
use stackbox_billing::{
    CheckoutRequest, ClientOptions, Payments, StripeClient, StripeError, SubscriptionStatus,
};

/// Production's options except a short back-off, so retry tests take milliseconds.
fn fast_options() -> ClientOptions {
    ClientOptions {
        retry_backoff: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

fn client(fake: &FakeStripe) -> StripeClient {
    StripeClient::with_options(fake.base.clone(), API_KEY.to_owned(), fast_options())
        .expect("client")
}

fn signup(key: &str, price: &str) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: key.to_owned(),
        price_id: price.to_owned(),
        client_reference_id: key.to_owned(),
        customer_email: Some("owner+shop@bakery.example".to_owned()),
        success_url: "https://stackbox.example/welcome?session={CHECKOUT_SESSION_ID}".to_owned(),
        cancel_url: "https://stackbox.example/signup?plan=professional&again=1".to_owned(),
        metadata: BTreeMap::from([
            ("plan".to_owned(), "professional".to_owned()),
            ("signup_id".to_owned(), key.to_owned()),
        ]),
    }
}

/// Asserts neither the message nor the Debug form of an error holds `secret`.
fn assert_secret_free(error: &StripeError, secret: &str) {
    let shown = error.to_string();
    let debug = format!("{error:?}");
    assert!(!shown.contains(secret), "the key leaked into: {shown}");
    assert!(!debug.contains(secret), "the key leaked into: {debug}");
}

#[tokio::test]
async fn checkout_session_request_carries_every_header_and_form_field_stripe_expects() {
    let fake = FakeStripe::start().await;
    let session = client(&fake)
        .create_checkout_session(&signup(
            "signup_01JDQ7Z5K3M8X2",
            "price_professional_monthly",
        ))
        .await
        .expect("session");
    assert_eq!(session.id, "cs_test_fake0001");
    assert_eq!(
        session.url,
        "https://checkout.stripe.com/c/pay/cs_test_fake0001#fidkdWxOYHwnPyd1blpxYHZxWjA0"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/checkout/sessions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(request.header("stripe-version"), Some(PINNED_VERSION));
    assert_eq!(
        request.header("idempotency-key"),
        Some("signup_01JDQ7Z5K3M8X2")
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // Every field, decoded: special characters ({ } ? & + @ [ ]) survive the encoding.
    let expected: Vec<(String, String)> = [
        ("mode", "subscription"),
        ("line_items[0][price]", "price_professional_monthly"),
        ("line_items[0][quantity]", "1"),
        ("client_reference_id", "signup_01JDQ7Z5K3M8X2"),
        ("customer_email", "owner+shop@bakery.example"),
        (
            "success_url",
            "https://stackbox.example/welcome?session={CHECKOUT_SESSION_ID}",
        ),
        (
            "cancel_url",
            "https://stackbox.example/signup?plan=professional&again=1",
        ),
        ("metadata[plan]", "professional"),
        ("metadata[signup_id]", "signup_01JDQ7Z5K3M8X2"),
        ("subscription_data[metadata][plan]", "professional"),
        (
            "subscription_data[metadata][signup_id]",
            "signup_01JDQ7Z5K3M8X2",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(request.form, expected);
}

#[tokio::test]
async fn checkout_without_customer_email_or_metadata_sends_neither() {
    let fake = FakeStripe::start().await;
    let mut request = signup("signup_bare", "price_starter_monthly");
    request.customer_email = None;
    request.metadata.clear();
    client(&fake)
        .create_checkout_session(&request)
        .await
        .expect("session");
    let form = &fake.requests()[0].form;
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "mode",
            "line_items[0][price]",
            "line_items[0][quantity]",
            "client_reference_id",
            "success_url",
            "cancel_url"
        ]
    );
}

#[tokio::test]
async fn an_unknown_price_is_stripes_resource_missing_error_with_its_parameter_and_no_retry() {
    let fake = FakeStripe::start().await;
    let error = client(&fake)
        .create_checkout_session(&signup("signup_badprice", "price_does_not_exist"))
        .await
        .expect_err("unknown price");
    match &error {
        StripeError::Api {
            status,
            kind,
            code,
            message,
            param,
            request_id,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(kind, "invalid_request_error");
            assert_eq!(code.as_deref(), Some("resource_missing"));
            assert_eq!(message, "No such price: 'price_does_not_exist'");
            assert_eq!(param.as_deref(), Some("line_items[0][price]"));
            assert_eq!(request_id.as_deref(), Some("req_FakeStripe0001"));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert!(
        error.to_string().contains("line_items[0][price]"),
        "{error}"
    );
    assert_eq!(fake.requests().len(), 1, "a 400 must not be retried");
    assert_secret_free(&error, API_KEY);
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_idempotency_key_and_body_and_then_succeeds() {
    let fake = FakeStripe::start().await;
    let session = client(&fake)
        .create_checkout_session(&signup("signup_flaky", "price_flaky"))
        .await
        .expect("second attempt succeeds");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some("signup_flaky"));
        assert_eq!(request.form, requests[0].form);
    }
    assert_eq!(fake.sessions_created(), 1);
    assert_eq!(session.id, "cs_test_fake0001");
}

#[tokio::test]
async fn a_429_lock_timeout_is_retried_and_then_succeeds() {
    let fake = FakeStripe::start().await;
    client(&fake)
        .create_checkout_session(&signup("signup_busy", "price_rate_limited"))
        .await
        .expect("second attempt succeeds");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_persistent_500_is_tried_three_times_with_growing_back_off_then_reported() {
    let fake = FakeStripe::start().await;
    let started = Instant::now();
    let error = client(&fake)
        .create_checkout_session(&signup("signup_down", "price_always_500"))
        .await
        .expect_err("always 500");
    // 50 ms then 100 ms of back-off.
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(
        matches!(&error, StripeError::Api { status: 500, kind, .. } if kind == "api_error"),
        "{error:?}"
    );
    assert!(error.is_transient());
    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "one attempt and two retries");
    assert!(requests
        .iter()
        .all(|r| r.header("idempotency-key") == Some("signup_down")));
}

#[tokio::test]
async fn stripe_should_retry_false_stops_the_retry_of_a_500() {
    // Stripe says false when its idempotency layer recorded the 500: a retry would replay it.
    let fake = FakeStripe::start().await;
    let error = client(&fake)
        .create_checkout_session(&signup("signup_norety", "price_500_should_not_retry"))
        .await
        .expect_err("500");
    assert!(matches!(error, StripeError::Api { status: 500, .. }));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn the_same_sign_up_twice_gets_the_same_session_not_a_second_one() {
    // The caller's own retry (a double-clicked form, a restarted server) reuses the sign-up id
    // as the key; Stripe replays the first session.
    let fake = FakeStripe::start().await;
    let client = client(&fake);
    let request = signup("signup_twice", "price_professional_monthly");
    let first = client
        .create_checkout_session(&request)
        .await
        .expect("first");
    let second = client
        .create_checkout_session(&request)
        .await
        .expect("second");
    assert_eq!(first, second);
    assert_eq!(fake.sessions_created(), 1);
    // A different sign-up is a different session.
    let other = client
        .create_checkout_session(&signup("signup_other", "price_professional_monthly"))
        .await
        .expect("other");
    assert_ne!(other.id, first.id);
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout_after_the_configured_limit_and_is_not_retried() {
    let fake = FakeStripe::start().await;
    let options = ClientOptions {
        total_timeout: Duration::from_millis(400),
        ..fast_options()
    };
    let client =
        StripeClient::with_options(fake.base.clone(), API_KEY.to_owned(), options).expect("client");
    let started = Instant::now();
    let error = client
        .create_checkout_session(&signup("signup_slow", "price_slow"))
        .await
        .expect_err("the fake answers after 3 s");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(2500),
        "took {elapsed:?}"
    );
    match &error {
        StripeError::Timeout { url, after } => {
            assert_eq!(*after, Duration::from_millis(400));
            assert_eq!(url, &format!("{}/v1/checkout/sessions", fake.base));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(error.is_transient());
    assert_eq!(fake.requests().len(), 1, "a timeout must not be retried");
    assert_secret_free(&error, API_KEY);
}

#[tokio::test]
async fn an_unreachable_api_is_a_connect_error_after_three_attempts() {
    // A port that was free a moment ago: connection refused.
    let port = {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let client = StripeClient::with_options(
        format!("http://127.0.0.1:{port}"),
        API_KEY.to_owned(),
        fast_options(),
    )
    .expect("client");
    let started = Instant::now();
    let error = client
        .create_checkout_session(&signup("signup_offline", "price_starter_monthly"))
        .await
        .expect_err("nothing listens");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "back-off was skipped"
    );
    match &error {
        StripeError::Connect {
            url,
            attempts,
            problem,
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(
                url,
                &format!("http://127.0.0.1:{port}/v1/checkout/sessions")
            );
            assert!(problem.to_lowercase().contains("connect"), "{problem}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(
        error.to_string().contains("STACKBOX_STRIPE_API_BASE"),
        "{error}"
    );
    assert_secret_free(&error, API_KEY);
}

#[tokio::test]
async fn a_wrong_key_is_stripes_401_and_the_key_is_redacted_even_when_echoed_in_full() {
    let fake = FakeStripe::start().await;
    let wrong_key = "sk_test_51WrongKeyThatMustNeverBeShown9999";
    let client =
        StripeClient::with_options(fake.base.clone(), wrong_key.to_owned(), fast_options())
            .expect("client");
    let error = client
        .create_checkout_session(&signup("signup_wrongkey", "price_starter_monthly"))
        .await
        .expect_err("401");
    match &error {
        StripeError::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 401);
            assert_eq!(message, "Invalid API Key provided: [redacted]");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert_secret_free(&error, wrong_key);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_non_json_502_from_a_proxy_is_retried_then_reported_with_a_redacted_excerpt() {
    let fake = FakeStripe::start().await;
    let error = client(&fake)
        .create_checkout_session(&signup("signup_proxy", "price_html_502"))
        .await
        .expect_err("502");
    match &error {
        StripeError::UnexpectedResponse {
            status, problem, ..
        } => {
            assert_eq!(*status, 502);
            assert!(problem.contains("502 Bad Gateway"), "{problem}");
            assert!(problem.contains("[redacted]"), "{problem}");
        }
        other => panic!("expected an unexpected response, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 3);
    assert_secret_free(&error, API_KEY);
}

#[tokio::test]
async fn the_client_works_behind_the_object_safe_payments_trait() {
    let fake = FakeStripe::start().await;
    let payments: Arc<dyn Payments> = Arc::new(client(&fake));
    // Spawned: the boxed futures must be Send to run on the server's runtime.
    let task = tokio::spawn({
        let payments = Arc::clone(&payments);
        async move {
            payments
                .create_checkout_session(&signup("signup_dyn", "price_starter_monthly"))
                .await
        }
    });
    let session = task.await.expect("task").expect("session");
    assert!(session.url.starts_with("https://checkout.stripe.com/"));
    let subscription = payments
        .retrieve_subscription(KNOWN_SUBSCRIPTION)
        .await
        .expect("subscription");
    assert_eq!(subscription.id, KNOWN_SUBSCRIPTION);
}

#[tokio::test]
async fn retrieve_subscription_gives_status_price_ids_and_metadata() {
    let fake = FakeStripe::start().await;
    let subscription = client(&fake)
        .retrieve_subscription(KNOWN_SUBSCRIPTION)
        .await
        .expect("subscription");
    assert_eq!(subscription.id, KNOWN_SUBSCRIPTION);
    assert_eq!(subscription.customer, "cus_TUrGPlw6b3Kx9Q");
    assert_eq!(subscription.status, SubscriptionStatus::PastDue);
    assert_eq!(subscription.price_ids, vec!["price_professional_monthly"]);
    assert!(subscription.cancel_at_period_end);
    assert_eq!(
        subscription.metadata.get("signup_id").map(String::as_str),
        Some("signup_01JDQ7Z5K3M8X2")
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(
        requests[0].path,
        format!("/v1/subscriptions/{KNOWN_SUBSCRIPTION}")
    );
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(requests[0].header("stripe-version"), Some(PINNED_VERSION));
    assert!(requests[0].form.is_empty());
}

#[tokio::test]
async fn retrieve_of_an_unknown_subscription_is_stripes_404() {
    let fake = FakeStripe::start().await;
    let error = client(&fake)
        .retrieve_subscription("sub_gone")
        .await
        .expect_err("404");
    assert!(
        matches!(&error, StripeError::Api { status: 404, code: Some(code), .. } if code == "resource_missing"),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_subscription_id_that_could_change_the_path_is_refused_before_sending() {
    let fake = FakeStripe::start().await;
    for bad in ["", "../customers/cus_1", "sub_1?expand=x", "sub 1"] {
        let error = client(&fake)
            .retrieve_subscription(bad)
            .await
            .expect_err(bad);
        assert!(
            matches!(
                error,
                StripeError::InvalidRequest {
                    field: "subscription_id",
                    ..
                }
            ),
            "{bad}: {error:?}"
        );
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn an_invalid_request_is_refused_before_anything_is_sent() {
    let fake = FakeStripe::start().await;
    let mut request = signup("signup_invalid", "price_starter_monthly");
    request.success_url = "/relative".to_owned();
    let error = client(&fake)
        .create_checkout_session(&request)
        .await
        .expect_err("relative URL");
    assert!(matches!(
        error,
        StripeError::InvalidRequest {
            field: "success_url",
            ..
        }
    ));
    assert!(fake.requests().is_empty());
}

#[test]
fn debug_output_of_the_client_never_shows_the_key() {
    let client = StripeClient::new(
        stackbox_billing::DEFAULT_API_BASE.to_owned(),
        API_KEY.to_owned(),
    )
    .expect("client");
    let debug = format!("{client:?}");
    assert!(!debug.contains(API_KEY), "{debug}");
    assert!(!debug.contains("sk_test_51"), "not even a prefix: {debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(debug.contains("https://api.stripe.com"), "{debug}");
}

#[test]
fn production_defaults_are_5s_connect_20s_total_two_retries_and_the_pinned_version() {
    let options = ClientOptions::default();
    assert_eq!(options.connect_timeout, Duration::from_secs(5));
    assert_eq!(options.total_timeout, Duration::from_secs(20));
    assert_eq!(options.max_retries, 2);
    assert_eq!(options.stripe_version, stackbox_billing::STRIPE_API_VERSION);
}
