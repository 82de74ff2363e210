//! The public onboarding routes: sign-up (validated like a client, rate-limited per e-mail
//! address), Stripe's webhook (raw bytes and the signature header passed through, its own
//! body limit) and the one-time credentials page (headers that keep it out of caches,
//! referrers and frames).

use std::time::Duration;

use stackbox_api::{ApiOptions, ControlError, SignupLimits};

use crate::fake::{GOOD_LINK, GOOD_SIGNATURE};
use crate::{new_client, Api};

fn signup_body(email: &str) -> serde_json::Value {
    let mut body = new_client("newshop.example.com");
    body["admin_email"] = email.into();
    body
}

#[tokio::test]
async fn signup_needs_no_token_and_answers_201_with_the_checkout_url() {
    let api = Api::new();
    let reply = api
        .post_json("/v1/signup", None, &signup_body("buyer@shop.example"))
        .await;
    reply.expect(201);
    let body = reply.json();
    assert!(body["signup_id"].as_str().unwrap().starts_with("sgn_"));
    assert!(body["checkout_url"]
        .as_str()
        .unwrap()
        .starts_with("https://checkout.stripe.com/"));
    let signups = api.fake.signups.lock().unwrap();
    assert_eq!(signups.len(), 1);
    assert_eq!(signups[0].admin_email.as_str(), "buyer@shop.example");
}

#[tokio::test]
async fn signup_refuses_a_pinned_client_id_and_invalid_values_naming_the_field() {
    let api = Api::new();
    let mut pinned = signup_body("buyer@shop.example");
    pinned["client_id"] = "shop-00000001".into();
    let reply = api.post_json("/v1/signup", None, &pinned).await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("client_id"));
    let mut bad = signup_body("not an address");
    bad["plan"] = "starter".into();
    let reply = api.post_json("/v1/signup", None, &bad).await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("admin_email"));
    let reply = api
        .call(
            "POST",
            "/v1/signup",
            None,
            Some(("text/plain", b"{}".to_vec())),
        )
        .await;
    reply.expect(415);
    assert!(api.fake.signups.lock().unwrap().is_empty());
}

#[tokio::test]
async fn signup_is_limited_per_email_address_with_retry_after() {
    let api = Api::with_options(ApiOptions {
        signup_limits: SignupLimits {
            per_address: 100,
            per_email: 2,
            window: Duration::from_secs(3600),
        },
        ..ApiOptions::default()
    });
    for _ in 0..2 {
        api.post_json("/v1/signup", None, &signup_body("Buyer@Shop.example"))
            .await
            .expect(201);
    }
    // The same address in other letter case is the same address.
    let reply = api
        .post_json("/v1/signup", None, &signup_body("buyer@shop.example"))
        .await;
    reply.expect(429);
    assert_eq!(reply.error_code(), "too_many_requests");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Another address is not affected.
    api.post_json("/v1/signup", None, &signup_body("other@shop.example"))
        .await
        .expect(201);
    assert_eq!(api.fake.signups.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn signup_errors_of_the_control_plane_map_to_their_status() {
    let api = Api::new();
    *api.fake.fail_next.lock().unwrap() = Some(ControlError::NotFound);
    let reply = api
        .post_json("/v1/signup", None, &signup_body("a@shop.example"))
        .await;
    reply.expect(404);
    assert!(
        reply
            .text()
            .contains("sign-ups and payments are not enabled"),
        "{}",
        reply.text()
    );
    *api.fake.fail_next.lock().unwrap() = Some(ControlError::Unavailable("stripe down".into()));
    let reply = api
        .post_json("/v1/signup", None, &signup_body("b@shop.example"))
        .await;
    reply.expect(503);
    assert!(!reply.text().contains("stripe down"));
}

#[tokio::test]
async fn webhook_passes_the_exact_bytes_and_signature_and_answers_400_when_refused() {
    let api = Api::new();
    // Not JSON on purpose: the bytes are the control plane's to judge, unchanged.
    let body = b"{\"id\": \"evt_1\",  \"type\":\"invoice.paid\"}\n".to_vec();
    let reply = api
        .call(
            "POST",
            "/v1/webhooks/stripe",
            None,
            Some(("application/json", body.clone())),
        )
        .await;
    reply.expect(400);
    assert_eq!(reply.error_code(), "bad_request");
    let reply = api
        .router_request(
            "POST",
            "/v1/webhooks/stripe",
            &[
                ("stripe-signature", GOOD_SIGNATURE),
                ("content-type", "application/json; charset=utf-8"),
            ],
            body.clone(),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.json()["outcome"], "processed");
    let seen = api.fake.webhooks.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, None);
    assert_eq!(seen[1].0.as_deref(), Some(GOOD_SIGNATURE));
    assert_eq!(seen[1].1, body);
}

#[tokio::test]
async fn webhook_takes_bodies_over_the_api_limit_up_to_one_mebibyte() {
    let api = Api::new();
    let big = vec![b' '; 200 * 1024];
    api.router_request(
        "POST",
        "/v1/webhooks/stripe",
        &[("stripe-signature", GOOD_SIGNATURE)],
        big,
    )
    .await
    .expect(200);
    let huge = vec![b' '; stackbox_api::WEBHOOK_BODY_LIMIT + 1];
    api.router_request(
        "POST",
        "/v1/webhooks/stripe",
        &[("stripe-signature", GOOD_SIGNATURE)],
        huge,
    )
    .await
    .expect(413);
    assert_eq!(api.fake.webhooks.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn credentials_page_is_html_kept_out_of_caches_referrers_and_frames() {
    let api = Api::new();
    for (method, text) in [("GET", "confirm"), ("POST", "revealed")] {
        let reply = api
            .call(method, &format!("/welcome/{GOOD_LINK}"), None, None)
            .await;
        reply.expect(200);
        assert!(reply.text().contains(text));
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(
            reply.header("referrer-policy").as_deref(),
            Some("no-referrer")
        );
        assert_eq!(reply.header("x-frame-options").as_deref(), Some("DENY"));
        assert!(reply
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'"));
    }
    let reply = api
        .call("POST", "/welcome/used-or-unknown", None, None)
        .await;
    reply.expect(410);
    // Tokens that could not have been issued never reach the control plane.
    for bad in ["a%2Fb", "x".repeat(200).as_str(), "a.b"] {
        api.call("GET", &format!("/welcome/{bad}"), None, None)
            .await
            .expect(404);
    }
}

#[tokio::test]
async fn resending_the_welcome_is_for_operators_on_known_clients() {
    let api = Api::new();
    let uri = format!("/v1/clients/{}/welcome", crate::fake::CLIENT_A);
    let reply = api
        .call("POST", &uri, Some(crate::fake::OPERATOR), None)
        .await;
    reply.expect(202);
    assert_eq!(reply.json()["welcome"], "queued");
    api.call("POST", &uri, Some(crate::fake::TOKEN_A), None)
        .await
        .expect(403);
    api.call("POST", &uri, None, None).await.expect(401);
    api.call(
        "POST",
        "/v1/clients/nobody-00000000/welcome",
        Some(crate::fake::OPERATOR),
        None,
    )
    .await
    .expect(404);
    *api.fake.fail_next.lock().unwrap() = Some(ControlError::Conflict(
        "no mail server is configured".into(),
    ));
    api.call("POST", &uri, Some(crate::fake::OPERATOR), None)
        .await
        .expect(409);
}
