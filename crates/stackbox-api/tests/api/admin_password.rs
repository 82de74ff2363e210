//! `POST /v1/clients/{id}/admin-password`: the new password once in the 202, never again;
//! what each app gets; 404, 409, 403 and the body's refusals.

use serde_json::Value;

use crate::fake::{CLIENT_A, CLIENT_B, OPERATOR, PASSWORD_PREFIX, TOKEN_A, TOKEN_B};
use crate::Api;

fn path(client: &str) -> String {
    format!("/v1/clients/{client}/admin-password")
}

#[tokio::test]
async fn an_operator_gets_202_with_the_new_password_once_and_what_each_app_gets() {
    let api = Api::new();
    let reply = api
        .call("POST", &path(CLIENT_A), Some(OPERATOR), None)
        .await;
    reply.expect(202);
    let body = reply.json();
    let deployment = body["deployment_id"].as_str().expect("deployment_id");
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("/v1/deployments/{deployment}").as_str())
    );
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(body["client_id"], CLIENT_A);
    assert_eq!(body["credentials"]["admin_username"], "admin");
    let password = body["credentials"]["admin_password"]
        .as_str()
        .expect("admin_password")
        .to_string();
    assert!(password.starts_with(PASSWORD_PREFIX), "{body}");
    // A professional client: two apps set by their commands, two without an admin.
    let outcomes: Vec<(String, String)> = body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| {
            (
                a["app"].as_str().unwrap_or_default().to_string(),
                a["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("nextcloud".to_string(), "set".to_string()),
            ("espocrm".into(), "set".into()),
            ("calcom".into(), "not-applicable".into()),
            ("plausible".into(), "not-applicable".into()),
        ]
    );
    for app in body["apps"].as_array().expect("apps") {
        let reason = app.get("reason").and_then(Value::as_str);
        assert_eq!(
            reason.is_some(),
            app["outcome"] == "not-applicable",
            "{app}"
        );
    }
    // Never again: not in the client, its history or the deployment.
    for uri in [
        format!("/v1/clients/{CLIENT_A}"),
        format!("/v1/clients/{CLIENT_A}/deployments"),
        format!("/v1/deployments/{deployment}"),
    ] {
        let later = api.get(&uri, Some(OPERATOR)).await;
        later.expect(200);
        assert!(!later.text().contains(&password), "{uri}: {}", later.text());
    }
}

#[tokio::test]
async fn an_empty_object_is_a_body_and_anything_in_it_or_another_type_is_refused() {
    let api = Api::new();
    api.call(
        "POST",
        &path(CLIENT_A),
        Some(OPERATOR),
        Some(("application/json", b"{}".to_vec())),
    )
    .await
    .expect(202);
    let api = Api::new();
    let chosen = api
        .call(
            "POST",
            &path(CLIENT_A),
            Some(OPERATOR),
            Some((
                "application/json",
                br#"{"password": "mine-mine-mine-mine"}"#.to_vec(),
            )),
        )
        .await;
    chosen.expect(422);
    assert_eq!(chosen.error_field().as_deref(), Some("password"));
    assert!(!chosen.text().contains("mine-mine"), "{}", chosen.text());
    api.call(
        "POST",
        &path(CLIENT_A),
        Some(OPERATOR),
        Some(("application/json", b"[]".to_vec())),
    )
    .await
    .expect(422);
    api.call(
        "POST",
        &path(CLIENT_A),
        Some(OPERATOR),
        Some(("application/json", b"{".to_vec())),
    )
    .await
    .expect(400);
    api.call(
        "POST",
        &path(CLIENT_A),
        Some(OPERATOR),
        Some(("text/plain", b"reset".to_vec())),
    )
    .await
    .expect(415);
}

#[tokio::test]
async fn an_unknown_or_invalid_client_answers_404() {
    let api = Api::new();
    for client in ["nobody-00000000", "Not_An_Id", "..%2F..%2Fetc"] {
        let reply = api.call("POST", &path(client), Some(OPERATOR), None).await;
        reply.expect(404);
        assert_eq!(reply.error_code(), "not_found", "{client}");
    }
}

#[tokio::test]
async fn a_second_reset_while_the_first_runs_answers_409_and_a_stopped_client_too() {
    let api = Api::new();
    let first = api
        .call("POST", &path(CLIENT_A), Some(OPERATOR), None)
        .await;
    first.expect(202);
    let second = api
        .call("POST", &path(CLIENT_A), Some(OPERATOR), None)
        .await;
    second.expect(409);
    assert!(
        !second.text().contains(PASSWORD_PREFIX),
        "{}",
        second.text()
    );
    // Any other deployment of the client is refused meanwhile too.
    api.call(
        "POST",
        &format!("/v1/clients/{CLIENT_A}/redeploy"),
        Some(OPERATOR),
        None,
    )
    .await
    .expect(409);
    let stopped = api
        .call("POST", &path(CLIENT_B), Some(OPERATOR), None)
        .await;
    stopped.expect(409);
    assert!(stopped.text().contains("not running"), "{}", stopped.text());
}

#[tokio::test]
async fn client_tokens_may_not_reset_even_their_own_client() {
    let api = Api::new();
    for (token, client) in [
        (TOKEN_A, CLIENT_A),
        (TOKEN_B, CLIENT_A),
        (TOKEN_A, CLIENT_B),
    ] {
        let reply = api.call("POST", &path(client), Some(token), None).await;
        reply.expect(403);
        assert!(!reply.text().contains(PASSWORD_PREFIX));
    }
    // And nothing was journaled: the operator's reset is not a conflict.
    api.call("POST", &path(CLIENT_A), Some(OPERATOR), None)
        .await
        .expect(202);
}
