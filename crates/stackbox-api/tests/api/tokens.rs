//! `GET /v1/tokens` and `DELETE /v1/tokens/{id}`: operator only, never a token in a listing,
//! and a revoked token refused on the very next request (the API keeps no verified token).

use crate::fake::{
    CLIENT_A, CLIENT_B, OPERATOR, OPERATOR_TOKEN_ID, TOKEN_A, TOKEN_A_ID, TOKEN_B, TOKEN_B_ID,
};
use crate::Api;

#[tokio::test]
async fn the_token_list_holds_ids_roles_clients_and_times_but_no_token() {
    let api = Api::new();
    let reply = api.get("/v1/tokens", Some(OPERATOR)).await;
    reply.expect(200);
    let list = reply.json();
    let tokens = list["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 3);
    let by_id = |id: &str| {
        tokens
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {list}"))
            .clone()
    };
    assert_eq!(by_id(OPERATOR_TOKEN_ID)["role"], "operator");
    assert!(by_id(OPERATOR_TOKEN_ID).get("client_id").is_none());
    assert_eq!(by_id(TOKEN_A_ID)["role"], "client");
    assert_eq!(by_id(TOKEN_A_ID)["client_id"], CLIENT_A);
    assert_eq!(by_id(TOKEN_B_ID)["client_id"], CLIENT_B);
    for token in tokens {
        let fields: Vec<&str> = token
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            fields
                .iter()
                .all(|f| ["id", "role", "client_id", "created_at", "last_used_at"].contains(f)),
            "{token}"
        );
        assert!(token["created_at"].is_string(), "{token}");
    }
    for secret in [OPERATOR, TOKEN_A, TOKEN_B] {
        assert!(!reply.text().contains(secret), "{}", reply.text());
    }
}

#[tokio::test]
async fn only_an_operator_lists_or_revokes_tokens() {
    let api = Api::new();
    api.get("/v1/tokens", Some(TOKEN_A)).await.expect(403);
    api.call(
        "DELETE",
        &format!("/v1/tokens/{TOKEN_B_ID}"),
        Some(TOKEN_A),
        None,
    )
    .await
    .expect(403);
    api.get("/v1/tokens", None).await.expect(401);
    // TOKEN_B still works.
    api.get(&format!("/v1/clients/{CLIENT_B}"), Some(TOKEN_B))
        .await
        .expect(200);
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_very_next_request() {
    let api = Api::new();
    let own = format!("/v1/clients/{CLIENT_A}");
    api.get(&own, Some(TOKEN_A)).await.expect(200);
    let reply = api
        .call(
            "DELETE",
            &format!("/v1/tokens/{TOKEN_A_ID}"),
            Some(OPERATOR),
            None,
        )
        .await;
    reply.expect(204);
    assert!(reply.body.is_empty());
    let refused = api.get(&own, Some(TOKEN_A)).await;
    refused.expect(401);
    assert_eq!(refused.error_code(), "unauthorized");
    // Gone from the list, and a second revoke finds nothing.
    let list = api
        .get("/v1/tokens", Some(OPERATOR))
        .await
        .expect(200)
        .json();
    assert!(!list.to_string().contains(TOKEN_A_ID), "{list}");
    let again = api
        .call(
            "DELETE",
            &format!("/v1/tokens/{TOKEN_A_ID}"),
            Some(OPERATOR),
            None,
        )
        .await;
    again.expect(404);
    assert_eq!(again.error_code(), "not_found");
    // The other tokens are untouched.
    api.get(&format!("/v1/clients/{CLIENT_B}"), Some(TOKEN_B))
        .await
        .expect(200);
}

#[tokio::test]
async fn malformed_or_unknown_token_ids_answer_404() {
    let api = Api::new();
    for id in ["tok_ffffffffffffffff", "tok_..%2F..", "x", &"a".repeat(65)] {
        let reply = api
            .call("DELETE", &format!("/v1/tokens/{id}"), Some(OPERATOR), None)
            .await;
        reply.expect(404);
        assert_eq!(reply.error_code(), "not_found", "{id}");
    }
    assert_eq!(
        api.get("/v1/tokens", Some(OPERATOR)).await.json()["tokens"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn an_operator_may_revoke_its_own_token_which_then_stops_working() {
    let api = Api::new();
    api.call(
        "DELETE",
        &format!("/v1/tokens/{OPERATOR_TOKEN_ID}"),
        Some(OPERATOR),
        None,
    )
    .await
    .expect(204);
    api.get("/v1/tokens", Some(OPERATOR)).await.expect(401);
}
