//! `POST /v1/rollouts` (a release for many clients, in waves), `GET /v1/rollouts[/{id}]` and
//! `POST /v1/rollouts/{id}/halt`: operator only, every refusal naming its field.

use crate::fake::{CLIENT_A, CLIENT_B, OPERATOR, TOKEN_A};
use crate::{Api, Reply};

async fn post(api: &Api, token: &str, body: &str) -> Reply {
    api.call(
        "POST",
        "/v1/rollouts",
        Some(token),
        Some(("application/json", body.as_bytes().to_vec())),
    )
    .await
}

#[tokio::test]
async fn a_rollout_request_with_a_bad_value_answers_422_naming_the_field() {
    let api = Api::new();
    for (body, field) in [
        (r#"{}"#, "to"),
        (r#"{"to": "r9"}"#, "to"),
        (r#"{"to": "no spaces allowed"}"#, "to"),
        (r#"{"to": "r2", "concurrency": 0}"#, "concurrency"),
        (r#"{"to": "r2", "concurrency": 99}"#, "concurrency"),
        (r#"{"to": "r2", "canary": 0}"#, "canary"),
        (r#"{"to": "r2", "growth": 11}"#, "growth"),
        (r#"{"to": "r2", "canary": 5, "max_wave": 2}"#, "max_wave"),
        (r#"{"to": "r2", "clients": []}"#, "clients"),
        (
            r#"{"to": "r2", "clients": ["alpha-0000000a", "Not An Id"]}"#,
            "clients[1]",
        ),
        (r#"{"to": "r2", "waves": 3}"#, "waves"),
        (r#"{"to": "r2", "concurrency": "four"}"#, "concurrency"),
    ] {
        let reply = post(&api, OPERATOR, body).await;
        assert_eq!(reply.status.as_u16(), 422, "{body}: {}", reply.text());
        assert_eq!(
            reply.json()["error"]["field"],
            field,
            "{body}: {}",
            reply.text()
        );
    }
    let listed = api.get("/v1/rollouts", Some(OPERATOR)).await;
    assert_eq!(listed.expect(200).json()["rollouts"], serde_json::json!([]));
}

#[tokio::test]
async fn a_rollout_is_planned_in_waves_followed_and_halted_and_only_one_runs() {
    let api = Api::new();
    let reply = post(&api, OPERATOR, r#"{"to": "r2", "canary": 1, "growth": 1}"#).await;
    assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
    let rollout = reply.json();
    let id = rollout["id"].as_str().unwrap().to_string();
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        format!("/v1/rollouts/{id}")
    );
    assert_eq!(rollout["status"], "running");
    assert_eq!(rollout["clients"][0]["client_id"], CLIENT_A);
    assert_eq!(rollout["clients"][0]["wave"], 0);
    assert_eq!(rollout["clients"][1]["client_id"], CLIENT_B);
    assert_eq!(rollout["clients"][1]["wave"], 1);
    assert_eq!(rollout["counts"]["pending"], 2);
    let busy = post(&api, OPERATOR, r#"{"to": "r2"}"#).await;
    assert_eq!(busy.status.as_u16(), 409, "{}", busy.text());

    let read = api.get(&format!("/v1/rollouts/{id}"), Some(OPERATOR)).await;
    assert_eq!(read.expect(200).json(), rollout);
    let halted = api
        .call(
            "POST",
            &format!("/v1/rollouts/{id}/halt"),
            Some(OPERATOR),
            None,
        )
        .await;
    let halted = halted.expect(200).json();
    assert_eq!(halted["status"], "halted");
    assert_eq!(halted["halt_reason"], "halted by the operator");
    let again = post(
        &api,
        OPERATOR,
        &format!(r#"{{"to": "r2", "clients": ["{CLIENT_B}"]}}"#),
    )
    .await;
    assert_eq!(again.status.as_u16(), 202, "{}", again.text());
    assert_eq!(again.json()["clients"].as_array().unwrap().len(), 1);
    let listed = api
        .get("/v1/rollouts", Some(OPERATOR))
        .await
        .expect(200)
        .json();
    assert_eq!(
        listed["rollouts"][1]["id"],
        id.as_str(),
        "newest first: {listed}"
    );
}

#[tokio::test]
async fn rollouts_are_the_operators_and_unknown_ones_are_404() {
    let api = Api::new();
    let reply = post(&api, TOKEN_A, r#"{"to": "r2"}"#).await;
    assert_eq!(reply.status.as_u16(), 403, "{}", reply.text());
    assert_eq!(
        api.get("/v1/rollouts", Some(TOKEN_A)).await.status.as_u16(),
        403
    );
    assert_eq!(api.get("/v1/rollouts", None).await.status.as_u16(), 401);
    for path in [
        "/v1/rollouts/rol_0000000000000000000000000099",
        "/v1/rollouts/not-a-rollout",
        "/v1/rollouts/..%2F..",
    ] {
        let reply = api.get(path, Some(OPERATOR)).await;
        assert_eq!(reply.status.as_u16(), 404, "{path}: {}", reply.text());
    }
    let unknown_client = post(
        &api,
        OPERATOR,
        r#"{"to": "r2", "clients": ["zulu-0000000f"]}"#,
    )
    .await;
    assert_eq!(
        unknown_client.status.as_u16(),
        404,
        "{}",
        unknown_client.text()
    );
    let reply = api
        .call(
            "POST",
            "/v1/rollouts",
            Some(OPERATOR),
            Some(("text/plain", br#"{"to": "r2"}"#.to_vec())),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 415);
}
