//! `GET /v1/clients/{id}/usage`: who may read a client's resource use, how `window` is
//! checked and passed on, and the body's shape.

use stackbox_api::ClientUsageView;

use crate::fake::{CLIENT_A, CLIENT_B, OPERATOR, TOKEN_A};
use crate::Api;

fn uri(client: &str, query: &str) -> String {
    format!("/v1/clients/{client}/usage{query}")
}

#[tokio::test]
async fn the_window_defaults_to_an_hour_and_is_passed_in_seconds() {
    let api = Api::new();
    let reply = api.get(&uri(CLIENT_A, ""), Some(OPERATOR)).await;
    let body: ClientUsageView =
        serde_json::from_value(reply.expect(200).json()).expect("ClientUsageView");
    assert_eq!(body.client_id, CLIENT_A);
    assert_eq!(body.window_seconds, 3600);
    assert_eq!(body.points.len(), 10);
    assert!(
        body.points.windows(2).all(|w| w[0].at < w[1].at),
        "oldest first"
    );
    assert_eq!(body.services[0].service, "website");

    let reply = api.get(&uri(CLIENT_A, "?window=5m"), Some(OPERATOR)).await;
    let body: ClientUsageView =
        serde_json::from_value(reply.expect(200).json()).expect("ClientUsageView");
    assert_eq!(body.points.len(), 5);
    api.get(&uri(CLIENT_A, "?window=1d"), Some(OPERATOR))
        .await
        .expect(200);
    assert_eq!(*api.fake.usage_windows.lock().unwrap(), [3600, 300, 86_400]);
    // A limit absent for a service is absent in the JSON, not null or zero.
    let json = api.get(&uri(CLIENT_A, ""), Some(OPERATOR)).await.json();
    assert_eq!(json["services"][0]["memory_limit_bytes"], 268_435_456);
    assert!(
        json["services"][1].get("memory_limit_bytes").is_none(),
        "{json}"
    );
}

#[tokio::test]
async fn a_bad_window_or_an_unknown_parameter_is_422_naming_it() {
    let api = Api::new();
    for (query, field) in [
        ("?window=yesterday", "window"),
        ("?window=0m", "window"),
        ("?window=-5m", "window"),
        ("?window=", "window"),
        ("?window=1h&window=2h", "window"),
        ("?since=1h", "since"),
    ] {
        let reply = api.get(&uri(CLIENT_A, query), Some(OPERATOR)).await;
        reply.expect(422);
        assert_eq!(reply.error_field().as_deref(), Some(field), "{query}");
    }
    assert!(api.fake.usage_windows.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_client_token_reads_only_its_own_usage() {
    let api = Api::new();
    api.get(&uri(CLIENT_A, ""), Some(TOKEN_A)).await.expect(200);
    api.get(&uri(CLIENT_B, ""), Some(TOKEN_A)).await.expect(404);
    api.get(&uri("nobody-00000000", ""), Some(OPERATOR))
        .await
        .expect(404);
    api.get(&uri(CLIENT_A, ""), None).await.expect(401);
    assert_eq!(api.fake.usage_windows.lock().unwrap().len(), 1);
}
