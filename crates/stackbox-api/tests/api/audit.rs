//! The audit log at the API: which requests are recorded, with what, and who reads them.

use stackbox_api::{AuditActor, AuditList};

use crate::fake::{CLIENT_A, CLIENT_B, OPERATOR, OPERATOR_TOKEN_ID, TOKEN_A, TOKEN_A_ID};
use crate::{new_client, Api};

#[tokio::test]
async fn a_change_is_recorded_with_its_token_route_client_status_and_deployment() {
    let api = Api::new();
    let reply = api
        .call(
            "POST",
            &format!("/v1/clients/{CLIENT_A}/stop"),
            Some(OPERATOR),
            None,
        )
        .await;
    let answer = reply.expect(202).json();
    let entries = api.fake.audit.lock().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry.actor, AuditActor::Operator);
    assert_eq!(entry.token_id.as_deref(), Some(OPERATOR_TOKEN_ID));
    assert_eq!(entry.action, "POST /v1/clients/{id}/stop");
    assert_eq!(entry.client_id.as_deref(), Some(CLIENT_A));
    assert_eq!(entry.status, 202);
    assert_eq!(
        entry.deployment_id.as_deref(),
        answer["deployment_id"].as_str(),
        "{answer}"
    );
}

#[tokio::test]
async fn a_created_client_is_recorded_by_its_new_id_and_its_answer_reaches_the_caller_whole() {
    let api = Api::new();
    let reply = api
        .post_json(
            "/v1/clients",
            Some(OPERATOR),
            &new_client("audited.example"),
        )
        .await;
    let answer = reply.expect(202).json();
    // The answer the audit layer read is passed on unchanged: the one-time password too.
    assert!(answer["credentials"].is_object(), "{answer}");
    let entries = api.fake.audit.lock().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "POST /v1/clients");
    assert_eq!(
        entries[0].client_id.as_deref(),
        answer["client_id"].as_str()
    );
    assert!(entries[0].deployment_id.is_some());
}

#[tokio::test]
async fn reads_and_requests_without_a_valid_token_are_not_recorded_refusals_of_a_token_are() {
    let api = Api::new();
    api.get(&format!("/v1/clients/{CLIENT_A}"), Some(OPERATOR))
        .await
        .expect(200);
    api.call("POST", &format!("/v1/clients/{CLIENT_A}/stop"), None, None)
        .await
        .expect(401);
    api.call(
        "POST",
        &format!("/v1/clients/{CLIENT_A}/stop"),
        Some("not-a-known-token"),
        None,
    )
    .await
    .expect(401);
    assert!(api.fake.audit.lock().unwrap().is_empty());

    // A client token's write is refused, and that attempt is on the record.
    api.call(
        "POST",
        &format!("/v1/clients/{CLIENT_A}/stop"),
        Some(TOKEN_A),
        None,
    )
    .await
    .expect(403);
    let entries = api.fake.audit.lock().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, AuditActor::Client);
    assert_eq!(entries[0].token_id.as_deref(), Some(TOKEN_A_ID));
    assert_eq!(entries[0].status, 403);
    assert_eq!(entries[0].deployment_id, None);
}

#[tokio::test]
async fn the_log_is_read_newest_first_and_a_client_token_reads_only_its_own() {
    let api = Api::new();
    for client in [CLIENT_A, CLIENT_B] {
        api.call(
            "POST",
            &format!("/v1/clients/{client}/redeploy"),
            Some(OPERATOR),
            None,
        )
        .await;
    }
    let all: AuditList = serde_json::from_value(
        api.get("/v1/audit", Some(OPERATOR))
            .await
            .expect(200)
            .json(),
    )
    .unwrap();
    let clients: Vec<_> = all
        .entries
        .iter()
        .map(|e| e.client_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(clients, [CLIENT_B, CLIENT_A], "newest first");
    let mine: AuditList =
        serde_json::from_value(api.get("/v1/audit", Some(TOKEN_A)).await.expect(200).json())
            .unwrap();
    assert!(mine
        .entries
        .iter()
        .all(|e| e.client_id.as_deref() == Some(CLIENT_A)));
    assert_eq!(mine.entries.len(), 1);
    api.get(&format!("/v1/audit?client={CLIENT_B}"), Some(TOKEN_A))
        .await
        .expect(404);
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?before=a%20b", "before"),
        ("?client=Bad%20Id", "client"),
        ("?who=me", "who"),
    ] {
        let reply = api.get(&format!("/v1/audit{query}"), Some(OPERATOR)).await;
        reply.expect(422);
        assert_eq!(reply.error_field().as_deref(), Some(field), "{query}");
    }
    // Reading the log is not a change: still the two redeploys only.
    assert_eq!(api.fake.audit.lock().unwrap().len(), 2);
}
