//! `GET /v1/clients/{id}/logs`: the last lines as JSON, or followed as server-sent events;
//! who may read them, and how `service`, `since`, `tail` and `follow` are checked.

use stackbox_api::LogLines;

use crate::fake::{CLIENT_A, CLIENT_B, OPERATOR, TOKEN_A};
use crate::{parse_sse, Api};

fn uri(client: &str, query: &str) -> String {
    format!("/v1/clients/{client}/logs{query}")
}

#[tokio::test]
async fn the_last_lines_come_back_in_time_order_bounded_by_tail() {
    let api = Api::new();
    let reply = api.get(&uri(CLIENT_A, ""), Some(OPERATOR)).await;
    reply.expect(200);
    let body: LogLines = serde_json::from_value(reply.json()).expect("LogLines");
    assert_eq!(body.lines.len(), 6);
    assert!(body.lines.windows(2).all(|w| w[0].time <= w[1].time));
    assert_eq!(reply.json()["lines"][1]["stream"], "stderr");
    assert_eq!(reply.json()["lines"][0]["service"], "website");
    let query = api.fake.log_queries.lock().unwrap()[0].clone();
    assert_eq!(
        (query.tail, query.follow, query.since, query.service),
        (200, false, None, None)
    );

    let reply = api
        .get(&uri(CLIENT_A, "?service=website&tail=2"), Some(OPERATOR))
        .await;
    let body: LogLines = serde_json::from_value(reply.expect(200).json()).expect("LogLines");
    let lines: Vec<&str> = body.lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(lines, ["website line 1", "website line 2"]);

    // Two containers' last line each, then the last one of them all.
    let reply = api.get(&uri(CLIENT_A, "?tail=1"), Some(OPERATOR)).await;
    let body: LogLines = serde_json::from_value(reply.expect(200).json()).expect("LogLines");
    let lines: Vec<&str> = body.lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(lines, ["mysql line 2"]);
}

#[tokio::test]
async fn since_is_passed_as_unix_seconds() {
    let api = Api::new();
    api.get(
        &uri(CLIENT_A, "?since=2025-03-01T12:00:00Z"),
        Some(OPERATOR),
    )
    .await
    .expect(200);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    api.get(&uri(CLIENT_A, "?since=10m"), Some(OPERATOR))
        .await
        .expect(200);
    let queries = api.fake.log_queries.lock().unwrap().clone();
    assert_eq!(queries[0].since, Some(1_740_830_400));
    let ten_minutes_back = queries[1].since.expect("since");
    assert!((before - 600 - 5..=before - 600 + 5).contains(&ten_minutes_back));
}

#[tokio::test]
async fn bad_parameters_are_422_naming_the_field() {
    let api = Api::new();
    for (query, field) in [
        ("?service=nope", "service"),
        ("?service=a%20b", "service"),
        ("?since=yesterday", "since"),
        ("?since=10y", "since"),
        ("?tail=0", "tail"),
        ("?tail=5001", "tail"),
        ("?tail=lots", "tail"),
        ("?follow=yes", "follow"),
        ("?lines=3", "lines"),
    ] {
        let reply = api.get(&uri(CLIENT_A, query), Some(OPERATOR)).await;
        reply.expect(422);
        assert_eq!(reply.error_field().as_deref(), Some(field), "{query}");
    }
}

#[tokio::test]
async fn a_client_token_reads_only_its_own_client_and_unknown_clients_are_404() {
    let api = Api::new();
    api.get(&uri(CLIENT_A, ""), Some(TOKEN_A)).await.expect(200);
    let reply = api.get(&uri(CLIENT_B, ""), Some(TOKEN_A)).await;
    reply.expect(404);
    let reply = api.get(&uri("nobody-00000000", ""), Some(OPERATOR)).await;
    reply.expect(404);
    api.get(&uri(CLIENT_A, ""), None).await.expect(401);
    // Nothing reached the control plane for B.
    assert_eq!(api.fake.log_queries.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn follow_streams_each_line_as_an_event_then_end() {
    let api = Api::new();
    let reply = api
        .get(&uri(CLIENT_A, "?follow=true&service=mysql"), Some(TOKEN_A))
        .await;
    reply.expect(200);
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream")));
    let events = parse_sse(&reply.text());
    assert_eq!(events.len(), 4, "{events:?}");
    for (name, data) in &events[..3] {
        assert_eq!(name, &None);
        let line: serde_json::Value = serde_json::from_str(data).expect("JSON");
        assert_eq!(line["service"], "mysql");
        assert_eq!(line["stream"], "stderr");
    }
    assert_eq!(events[3].0.as_deref(), Some("end"));
    assert!(api.fake.log_queries.lock().unwrap()[0].follow);
}
