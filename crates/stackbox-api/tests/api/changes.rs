//! `PATCH /v1/clients/{id}` (a merge patch of the configuration, validated like a create) and
//! `GET /v1/clients/{id}/deployments` (the history: who asked, what changed).

use serde_json::{json, Value};

use crate::fake::{
    CLIENT_A, CLIENT_B, DEPLOYMENT_A, LIVE_DEPLOYMENT, OPERATOR, OPERATOR_TOKEN_ID,
    PASSWORD_PREFIX, TOKEN_A, TOKEN_B,
};
use crate::{Api, Reply};

const MERGE_PATCH: &str = "application/merge-patch+json";

async fn patch(api: &Api, client: &str, token: &str, body: &str) -> Reply {
    api.call(
        "PATCH",
        &format!("/v1/clients/{client}"),
        Some(token),
        Some((MERGE_PATCH, body.as_bytes().to_vec())),
    )
    .await
}

async fn configuration(api: &Api, client: &str) -> Value {
    api.get(&format!("/v1/clients/{client}"), Some(OPERATOR))
        .await
        .expect(200)
        .json()["configuration"]
        .clone()
}

async fn history(api: &Api, client: &str, token: &str) -> Vec<Value> {
    api.get(&format!("/v1/clients/{client}/deployments"), Some(token))
        .await
        .expect(200)
        .json()["items"]
        .as_array()
        .expect("items")
        .clone()
}

#[tokio::test]
async fn a_patch_with_a_bad_value_answers_422_naming_the_field_and_changes_nothing() {
    let api = Api::new();
    let before = configuration(&api, CLIENT_A).await;
    for (body, field, says) in [
        (r#"{"domain": "alpha..example.com"}"#, "domain", "domain"),
        (r#"{"plan": "platinum"}"#, "plan", "unknown plan"),
        (r#"{"plan": 3}"#, "plan", "plan"),
        (r#"{"colour": "red"}"#, "colour", "unknown field"),
        (r#"{"brand_color": "red"}"#, "brand_color", "brand_color"),
        (
            r#"{"client_id": "bravo-0000000b"}"#,
            "client_id",
            "cannot be changed",
        ),
        (r#"{"client_id": null}"#, "client_id", "cannot be changed"),
        (r#"{"company_name": null}"#, "company_name", "is missing"),
        (
            r#"{"features": {"website": false}}"#,
            "features.website",
            "unknown feature",
        ),
        // A's plan is professional: Mailtrain is an enterprise app.
        (
            r#"{"features": {"mailtrain": true}}"#,
            "features.mailtrain",
            "mailtrain",
        ),
    ] {
        let reply = patch(&api, CLIENT_A, OPERATOR, body).await;
        reply.expect(422);
        assert_eq!(reply.error_code(), "invalid_field", "{body}");
        assert_eq!(reply.error_field().as_deref(), Some(field), "{body}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .expect("message")
            .to_string();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{body}: {message}"
        );
        assert!(message.contains(says), "{body}: {message}");
    }
    assert!(api.fake.updates.lock().unwrap().is_empty());
    assert_eq!(configuration(&api, CLIENT_A).await, before);
}

#[tokio::test]
async fn a_patch_is_refused_with_the_same_message_a_create_gives_for_the_same_value() {
    let api = Api::new();
    let mut body = crate::new_client("smith..example.com");
    let create = api.post_json("/v1/clients", Some(OPERATOR), &body).await;
    create.expect(422);
    body = json!({"domain": "smith..example.com"});
    let change = patch(&api, CLIENT_A, OPERATOR, &body.to_string()).await;
    change.expect(422);
    assert_eq!(create.json()["error"], change.json()["error"]);
}

#[tokio::test]
async fn a_patch_of_an_unknown_or_malformed_client_answers_404() {
    let api = Api::new();
    for client in ["nobody-0000beef", "not_an_id", "ALPHA-0000000A"] {
        let reply = patch(&api, client, OPERATOR, r#"{"company_name": "X"}"#).await;
        reply.expect(404);
        assert_eq!(reply.error_code(), "not_found", "{client}");
    }
    // An unknown field is named before the client is looked up; either way nothing changes.
    let reply = patch(&api, "nobody-0000beef", OPERATOR, r#"{"colour": 1}"#).await;
    reply.expect(422);
    assert!(api.fake.updates.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_patch_to_a_domain_another_client_has_answers_409() {
    let api = Api::new();
    let reply = patch(
        &api,
        CLIENT_A,
        OPERATOR,
        r#"{"domain": "bravo.example.com"}"#,
    )
    .await;
    reply.expect(409);
    assert_eq!(reply.error_code(), "conflict");
    assert!(
        reply.text().contains("bravo.example.com"),
        "{}",
        reply.text()
    );
    assert_eq!(
        configuration(&api, CLIENT_A).await["domain"],
        "alpha.example.com"
    );
    // Its own domain, written differently, is no change at all.
    patch(
        &api,
        CLIENT_A,
        OPERATOR,
        r#"{"domain": " Alpha.Example.COM "}"#,
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn a_patch_while_another_deployment_is_unfinished_answers_409_and_stores_nothing() {
    let api = Api::new();
    let redeploy = api
        .call(
            "POST",
            &format!("/v1/clients/{CLIENT_B}/redeploy"),
            Some(OPERATOR),
            None,
        )
        .await;
    redeploy.expect(202);
    let reply = patch(&api, CLIENT_B, OPERATOR, r#"{"company_name": "Bravo Two"}"#).await;
    reply.expect(409);
    assert_eq!(reply.error_code(), "conflict");
    assert!(reply.text().contains("busy"), "{}", reply.text());
    assert_eq!(
        configuration(&api, CLIENT_B).await["company_name"],
        CLIENT_B
    );
    let deployments = history(&api, CLIENT_B, OPERATOR).await;
    assert_eq!(deployments.len(), 2, "the create and the redeploy only");
}

#[tokio::test]
async fn a_patch_that_changes_something_answers_202_stores_it_and_queues_a_redeploy() {
    let api = Api::new();
    let reply = patch(
        &api,
        CLIENT_B,
        OPERATOR,
        r##"{"company_name": "Bravo & Sons", "brand_color": "#aa0000", "features": {"calcom": false}}"##,
    )
    .await;
    reply.expect(202);
    let change = reply.json();
    let deployment = change["deployment_id"].as_str().expect("deployment_id");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/deployments/{deployment}"))
    );
    assert_eq!(
        change["changes"]["company_name"],
        json!({"from": CLIENT_B, "to": "Bravo & Sons"})
    );
    assert_eq!(change["changes"]["brand_color"]["to"], "#aa0000");
    let stored = configuration(&api, CLIENT_B).await;
    assert_eq!(stored["company_name"], "Bravo & Sons");
    assert_eq!(stored["brand_color"], "#aa0000");
    assert_eq!(stored["features"], json!({"calcom": false}));
    assert_eq!(stored["domain"], "bravo.example.com", "left out, kept");
    let view = api
        .get(&format!("/v1/deployments/{deployment}"), Some(OPERATOR))
        .await
        .expect(200)
        .json();
    assert_eq!(view["kind"], "redeploy");
    assert_eq!(view["client_id"], CLIENT_B);
    assert_eq!(view["status"], "pending");
    // `application/json` is taken too.
    let reply = api
        .call(
            "PATCH",
            &format!("/v1/clients/{CLIENT_A}"),
            Some(OPERATOR),
            Some((
                "application/json",
                br#"{"admin_email": "it@alpha.example.com"}"#.to_vec(),
            )),
        )
        .await;
    reply.expect(202);
    assert_eq!(
        configuration(&api, CLIENT_A).await["admin_email"],
        "it@alpha.example.com"
    );
}

#[tokio::test]
async fn an_empty_or_unchanged_patch_answers_200_with_the_client_and_queues_nothing() {
    let api = Api::new();
    let before = history(&api, CLIENT_A, OPERATOR).await;
    let same = configuration(&api, CLIENT_A).await;
    for body in [
        "{}".to_string(),
        same.to_string(),
        json!({"client_id": CLIENT_A, "plan": "professional"}).to_string(),
    ] {
        let reply = patch(&api, CLIENT_A, OPERATOR, &body).await;
        reply.expect(200);
        let detail = reply.json();
        assert_eq!(detail["client_id"], CLIENT_A, "{body}");
        assert_eq!(detail["configuration"], same, "{body}");
        assert_eq!(reply.header("location"), None);
    }
    assert!(
        api.fake.updates.lock().unwrap().is_empty(),
        "the control plane is not asked to change anything"
    );
    assert_eq!(history(&api, CLIENT_A, OPERATOR).await, before);
}

#[tokio::test]
async fn a_patch_needs_an_operator_token_a_json_content_type_and_json() {
    let api = Api::new();
    let reply = patch(&api, CLIENT_A, TOKEN_A, r#"{"company_name": "Mine"}"#).await;
    reply.expect(403);
    assert_eq!(reply.error_code(), "forbidden");
    for content_type in ["text/plain", "application/json-patch+json", ""] {
        let reply = api
            .call(
                "PATCH",
                &format!("/v1/clients/{CLIENT_A}"),
                Some(OPERATOR),
                Some((content_type, br#"{"company_name": "X"}"#.to_vec())),
            )
            .await;
        reply.expect(415);
        assert_eq!(reply.error_code(), "unsupported_media_type");
        assert!(
            reply.text().contains("application/merge-patch+json"),
            "{}",
            reply.text()
        );
    }
    let reply = api
        .call(
            "PATCH",
            &format!("/v1/clients/{CLIENT_A}"),
            Some(OPERATOR),
            Some(("application/merge-patch+json; charset=utf-8", b"{".to_vec())),
        )
        .await;
    reply.expect(400);
    assert_eq!(reply.error_code(), "malformed_json");
    let reply = patch(&api, CLIENT_A, OPERATOR, "[]").await;
    reply.expect(422);
    assert_eq!(reply.error_field(), None);
    assert!(api.fake.updates.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_history_lists_a_change_first_with_who_asked_and_the_diff_and_no_secret() {
    let api = Api::new();
    let created = api
        .post_json(
            "/v1/clients",
            Some(OPERATOR),
            &crate::new_client("smith.example.com"),
        )
        .await
        .expect(202)
        .json();
    let client = created["client_id"].as_str().expect("id").to_string();
    let stop = api
        .call(
            "POST",
            &format!("/v1/clients/{CLIENT_B}/stop"),
            Some(OPERATOR),
            None,
        )
        .await
        .expect(202)
        .json();
    let change = patch(&api, CLIENT_A, OPERATOR, r##"{"brand_color": "#aa0000"}"##)
        .await
        .expect(202)
        .json();
    let items = history(&api, CLIENT_A, OPERATOR).await;
    let ids: Vec<&str> = items.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            change["deployment_id"].as_str().unwrap(),
            LIVE_DEPLOYMENT,
            DEPLOYMENT_A
        ],
        "newest first, this client's only"
    );
    let newest = &items[0];
    assert_eq!(newest["kind"], "redeploy");
    assert_eq!(newest["status"], "pending");
    assert_eq!(
        newest["requested_by"],
        json!({"by": "token", "token_id": OPERATOR_TOKEN_ID, "role": "operator"})
    );
    let default_blue = stackbox_core::client::BrandColor::default();
    assert_eq!(
        newest["changes"],
        json!({"brand_color": {"from": default_blue.as_str(), "to": "#aa0000"}})
    );
    // The create's deployment was not a change: no `changes`; steps are summed up.
    let first = &items[2];
    assert!(first.get("changes").is_none(), "{first}");
    assert_eq!(first["steps"]["total"], 2);
    assert_eq!(first["steps"]["succeeded"], 2);
    assert!(first["finished_at"].is_string());
    // Who asked for B's stop is recorded too.
    let b = history(&api, CLIENT_B, OPERATOR).await;
    assert_eq!(b[0]["id"], stop["deployment_id"]);
    assert_eq!(b[0]["kind"], "stop");
    assert_eq!(b[0]["requested_by"]["token_id"], OPERATOR_TOKEN_ID);
    // No secret, no token, in any history.
    for listed in [client.as_str(), CLIENT_A, CLIENT_B] {
        let text = api
            .get(&format!("/v1/clients/{listed}/deployments"), Some(OPERATOR))
            .await
            .expect(200)
            .text();
        for secret in [PASSWORD_PREFIX, OPERATOR, TOKEN_A, TOKEN_B] {
            assert!(!text.contains(secret), "{listed}: {text}");
        }
    }
}

#[tokio::test]
async fn a_client_token_reads_its_own_history_and_another_clients_answers_like_a_missing_one() {
    let api = Api::new();
    assert_eq!(history(&api, CLIENT_A, TOKEN_A).await.len(), 2);
    let other = api
        .get(
            &format!("/v1/clients/{CLIENT_B}/deployments"),
            Some(TOKEN_A),
        )
        .await;
    other.expect(404);
    let missing = api
        .get("/v1/clients/nobody-0000beef/deployments", Some(OPERATOR))
        .await;
    missing.expect(404);
    assert_eq!(other.json(), missing.json());
    assert!(!other.text().contains("bravo"), "{}", other.text());
}

#[tokio::test]
async fn the_history_is_paged_with_after_and_limit_and_refuses_bad_parameters() {
    let api = Api::new();
    let uri = format!("/v1/clients/{CLIENT_A}/deployments");
    let first = api
        .get(&format!("{uri}?limit=1"), Some(OPERATOR))
        .await
        .expect(200)
        .json();
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["items"][0]["id"], LIVE_DEPLOYMENT);
    assert_eq!(first["next"], LIVE_DEPLOYMENT);
    let second = api
        .get(
            &format!("{uri}?limit=1&after={LIVE_DEPLOYMENT}"),
            Some(OPERATOR),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(second["items"][0]["id"], DEPLOYMENT_A);
    assert_eq!(second["next"], Value::Null);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("after=../../etc", "after"),
        ("before=x", "before"),
        ("limit=1&limit=2", "limit"),
    ] {
        let reply = api.get(&format!("{uri}?{query}"), Some(OPERATOR)).await;
        reply.expect(422);
        assert_eq!(reply.error_field().as_deref(), Some(field), "{query}");
    }
}

#[tokio::test]
async fn rotate_secrets_and_upgrade_answer_202_for_an_operator_and_name_the_field_they_refuse() {
    let api = Api::new();
    let rotate = format!("/v1/clients/{CLIENT_A}/rotate-secrets");
    // No body: every live secret.
    api.call("POST", &rotate, Some(OPERATOR), None)
        .await
        .expect(202);
    let api = Api::new();
    let refused = api
        .call(
            "POST",
            &rotate,
            Some(OPERATOR),
            Some((
                "application/json",
                br#"{"only": ["ADMIN_PASSWORD"]}"#.to_vec(),
            )),
        )
        .await;
    refused.expect(422);
    assert_eq!(refused.json()["error"]["field"], "only");
    for (body, field) in [
        (r#"{"every": true}"#, "every"),
        (r#"{"only": ["a b"]}"#, "only"),
        (r#"{"only": "MYSQL_ROOT_PASSWORD"}"#, "only"),
    ] {
        let reply = api
            .call(
                "POST",
                &rotate,
                Some(OPERATOR),
                Some(("application/json", body.as_bytes().to_vec())),
            )
            .await;
        reply.expect(422);
        assert_eq!(reply.json()["error"]["field"], field, "{body}");
    }
    let wrong_type = api
        .call(
            "POST",
            &rotate,
            Some(OPERATOR),
            Some(("text/plain", b"only".to_vec())),
        )
        .await;
    wrong_type.expect(415);

    let upgrade = format!("/v1/clients/{CLIENT_A}/upgrade");
    for (body, field) in [
        ("{}", "to"),
        (r#"{"to": "r9"}"#, "to"),
        (r#"{"to": "../etc"}"#, "to"),
    ] {
        let reply = api
            .call(
                "POST",
                &upgrade,
                Some(OPERATOR),
                Some(("application/json", body.as_bytes().to_vec())),
            )
            .await;
        reply.expect(422);
        assert_eq!(reply.json()["error"]["field"], field, "{body}");
    }
    api.call(
        "POST",
        &upgrade,
        Some(OPERATOR),
        Some(("application/json", br#"{"to": "r2"}"#.to_vec())),
    )
    .await
    .expect(202);
    // A client token may do neither.
    for path in [&rotate, &upgrade] {
        api.call(
            "POST",
            path,
            Some(TOKEN_A),
            Some(("application/json", br#"{"to": "r2"}"#.to_vec())),
        )
        .await
        .expect(403);
    }
}
