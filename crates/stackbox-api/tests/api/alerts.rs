//! `GET /v1/alerts`: the query's checks and defaults, and who reads which alerts.

use stackbox_api::AlertList;

use crate::fake::{CLIENT_A, CLIENT_B, OPERATOR, TOKEN_A};
use crate::Api;

fn keys(list: &AlertList) -> Vec<String> {
    list.alerts.iter().map(|a| a.key.clone()).collect()
}

#[tokio::test]
async fn the_operator_reads_open_alerts_by_default_and_the_history_with_open_false() {
    let api = Api::new();
    let reply = api.get("/v1/alerts", Some(OPERATOR)).await;
    let open: AlertList = serde_json::from_value(reply.expect(200).json()).expect("AlertList");
    assert_eq!(
        keys(&open),
        [
            format!("memory-near-limit:{CLIENT_A}:website"),
            "disk-near-full".to_string()
        ]
    );
    assert_eq!(open.alerts[0].state, "firing");
    // A host alert has no client: the field is absent, not null.
    let json = api.get("/v1/alerts", Some(OPERATOR)).await.json();
    assert!(json["alerts"][1].get("client_id").is_none(), "{json}");
    assert!(json["alerts"][1].get("resolved_at").is_none(), "{json}");

    let all: AlertList = serde_json::from_value(
        api.get("/v1/alerts?open=false&limit=10", Some(OPERATOR))
            .await
            .expect(200)
            .json(),
    )
    .unwrap();
    assert_eq!(all.alerts.len(), 3);
    assert_eq!(all.alerts[2].state, "resolved");
    let of_b: AlertList = serde_json::from_value(
        api.get(
            &format!("/v1/alerts?open=false&client={CLIENT_B}"),
            Some(OPERATOR),
        )
        .await
        .expect(200)
        .json(),
    )
    .unwrap();
    assert_eq!(keys(&of_b), [format!("backup-failed:{CLIENT_B}")]);

    let queries = api.fake.alert_queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 4);
    assert!(queries[0].open_only && queries[0].client.is_none() && queries[0].limit == 100);
    assert!(!queries[2].open_only && queries[2].limit == 10);
    assert_eq!(
        queries[3].client.as_ref().map(|c| c.as_str()),
        Some(CLIENT_B)
    );
}

#[tokio::test]
async fn a_client_token_reads_only_its_own_clients_alerts_never_the_hosts() {
    let api = Api::new();
    let mine: AlertList = serde_json::from_value(
        api.get("/v1/alerts?open=false", Some(TOKEN_A))
            .await
            .expect(200)
            .json(),
    )
    .unwrap();
    assert_eq!(
        keys(&mine),
        [format!("memory-near-limit:{CLIENT_A}:website")]
    );
    api.get(&format!("/v1/alerts?client={CLIENT_A}"), Some(TOKEN_A))
        .await
        .expect(200);
    api.get(&format!("/v1/alerts?client={CLIENT_B}"), Some(TOKEN_A))
        .await
        .expect(404);
    api.get("/v1/alerts", None).await.expect(401);
    let queries = api.fake.alert_queries.lock().unwrap().clone();
    assert_eq!(
        queries.len(),
        2,
        "the refused ones never reach the control plane"
    );
    assert!(queries
        .iter()
        .all(|q| q.client.as_ref().map(|c| c.as_str()) == Some(CLIENT_A)));
}

#[tokio::test]
async fn a_bad_open_client_or_limit_or_an_unknown_parameter_is_422_naming_it() {
    let api = Api::new();
    for (query, field) in [
        ("?open=yes", "open"),
        ("?open=true&open=false", "open"),
        ("?client=Not%20An%20Id", "client"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?state=firing", "state"),
    ] {
        let reply = api.get(&format!("/v1/alerts{query}"), Some(OPERATOR)).await;
        reply.expect(422);
        assert_eq!(reply.error_field().as_deref(), Some(field), "{query}");
    }
    assert!(api.fake.alert_queries.lock().unwrap().is_empty());
}
