//! Every route's success shape and status, and every error the API promises.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use stackbox_api::{
    ClientDetail, ClientState, ClientSummary, ControlError, CreatedClient, DeploymentRef,
    DeploymentView, Page, INTERNAL_MESSAGE,
};
use stackbox_core::plan::Plan;

use crate::fake::{
    CLIENT_A, CLIENT_B, DEPLOYMENT_A, DEPLOYMENT_B, LIVE_DEPLOYMENT, OPERATOR, PASSWORD_PREFIX,
    TOKEN_A,
};
use crate::{new_client, parse_sse, Api};

/// Every `/v1` route: (method, path).
const V1_ROUTES: [(&str, &str); 17] = [
    ("POST", "/v1/clients"),
    ("GET", "/v1/clients"),
    ("GET", "/v1/clients/alpha-0000000a"),
    ("PATCH", "/v1/clients/alpha-0000000a"),
    ("GET", "/v1/clients/alpha-0000000a/deployments"),
    ("GET", "/v1/tokens"),
    ("DELETE", "/v1/tokens/tok_000000000000000a"),
    ("POST", "/v1/clients/alpha-0000000a/stop"),
    ("POST", "/v1/clients/alpha-0000000a/start"),
    ("POST", "/v1/clients/alpha-0000000a/redeploy"),
    ("POST", "/v1/clients/alpha-0000000a/rotate-secrets"),
    ("POST", "/v1/clients/alpha-0000000a/admin-password"),
    ("POST", "/v1/clients/alpha-0000000a/upgrade"),
    (
        "DELETE",
        "/v1/clients/alpha-0000000a?confirm=alpha-0000000a",
    ),
    ("GET", "/v1/deployments/dep_00000000000a0000000000000001"),
    (
        "GET",
        "/v1/deployments/dep_00000000000a0000000000000001/events",
    ),
    // A route that does not exist under /v1 still needs no token to say 404.
    ("GET", "/v1/clients/alpha-0000000a/history"),
];

#[tokio::test]
async fn healthz_needs_no_token_and_sets_the_common_headers() {
    let api = Api::new();
    let reply = api.get("/healthz", None).await;
    reply.expect(200);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        reply.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
}

#[tokio::test]
async fn every_v1_route_answers_401_without_a_token_or_with_a_bad_one() {
    let api = Api::new();
    for (method, path) in &V1_ROUTES[..16] {
        let body = Some(("application/json", b"{}".to_vec()));
        let reply = api.call(method, path, None, body.clone()).await;
        reply.expect(401);
        assert_eq!(reply.error_code(), "unauthorized", "{method} {path}");
        assert_eq!(
            reply.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"stackbox\""),
            "{method} {path}"
        );
        for token in [
            "wrong-token",
            "operator-token2",
            "a b",
            "x=y",
            "operator-token ",
        ] {
            let reply = api.call(method, path, Some(token), body.clone()).await;
            reply.expect(401);
            assert_eq!(
                reply.error_code(),
                "unauthorized",
                "{method} {path} {token:?}"
            );
            assert_eq!(
                reply.header("www-authenticate").as_deref(),
                Some("Bearer realm=\"stackbox\", error=\"invalid_token\""),
                "{method} {path} {token:?}"
            );
        }
        for authorization in ["Basic b3BlcmF0b3I6dG9rZW4=", "operator-token", "Bearer"] {
            let reply = api
                .call_with_authorization(method, path, authorization, body.clone())
                .await;
            reply.expect(401);
            assert!(
                reply
                    .header("www-authenticate")
                    .is_some_and(|challenge| challenge.starts_with("Bearer realm=")),
                "{method} {path} {authorization:?}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let api = Api::new();
    let reply = api.get("/v2/nothing", Some(OPERATOR)).await;
    reply.expect(404);
    assert_eq!(reply.error_code(), "not_found");
    let reply = api.get(V1_ROUTES[16].1, Some(OPERATOR)).await;
    reply.expect(404);
    let reply = api.call("PUT", "/v1/clients", Some(OPERATOR), None).await;
    reply.expect(405);
    assert_eq!(reply.error_code(), "method_not_allowed");
    let reply = api.call("DELETE", "/healthz", None, None).await;
    reply.expect(405);
}

#[tokio::test]
async fn creating_a_client_answers_202_with_the_credentials_once() {
    let api = Api::new();
    let reply = api
        .post_json(
            "/v1/clients",
            Some(OPERATOR),
            &new_client("smith.example.com"),
        )
        .await;
    reply.expect(202);
    let body = reply.json();
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["client_id", "credentials", "deployment_id", "services"]
    );
    let created: CreatedClient = serde_json::from_value(body.clone()).expect("CreatedClient");
    assert!(created.client_id.as_str().starts_with("smithrealestate-"));
    assert_eq!(created.credentials.admin_username, "admin");
    let password = created.credentials.admin_password.clone();
    assert!(password.starts_with(PASSWORD_PREFIX));
    assert!(
        !format!("{created:?}").contains(&password),
        "Debug shows the password"
    );
    assert_eq!(
        created.services.get("espocrm").map(String::as_str),
        Some("https://crm.smith.example.com")
    );
    assert!(!created.services.contains_key("calcom"), "switched off");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/deployments/{}", created.deployment_id))
    );
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));

    // Nothing else ever shows the password: read everything there is to read.
    let client = created.client_id.as_str();
    let deployment = &created.deployment_id;
    let mut bodies = Vec::new();
    for uri in [
        format!("/v1/clients/{client}"),
        "/v1/clients".to_string(),
        format!("/v1/deployments/{deployment}"),
        "/metrics".to_string(),
        "/openapi.json".to_string(),
    ] {
        let reply = api.get(&uri, Some(OPERATOR)).await;
        reply.expect(200);
        bodies.push(reply.text());
    }
    for action in ["stop", "start", "redeploy"] {
        // 409 (busy with the first deployment) or 202: either way, no password.
        let reply = api
            .call(
                "POST",
                &format!("/v1/clients/{client}/{action}"),
                Some(OPERATOR),
                None,
            )
            .await;
        bodies.push(reply.text());
    }
    let again = api
        .post_json(
            "/v1/clients",
            Some(OPERATOR),
            &new_client("smith.example.com"),
        )
        .await;
    again.expect(409);
    bodies.push(again.text());
    for text in bodies {
        assert!(!text.contains(PASSWORD_PREFIX), "a secret leaked: {text}");
    }
}

#[tokio::test]
async fn the_created_client_reads_back_with_its_configuration_and_no_secret() {
    let api = Api::new();
    let mut body = new_client("smith.example.com");
    body["client_id"] = json!("smithrealestate-0badc0de");
    let created: CreatedClient = serde_json::from_value(
        api.post_json("/v1/clients", Some(OPERATOR), &body)
            .await
            .expect(202)
            .json(),
    )
    .expect("CreatedClient");
    assert_eq!(created.client_id.as_str(), "smithrealestate-0badc0de");

    let reply = api
        .get("/v1/clients/smithrealestate-0badc0de", Some(OPERATOR))
        .await;
    reply.expect(200);
    let json = reply.json();
    assert_eq!(
        json["configuration"],
        json!({
            "company_name": "Smith Real Estate",
            "domain": "smith.example.com",
            "plan": "professional",
            "admin_email": "owner@smithrealestate.com",
            "brand_color": "#003366",
            "features": {"calcom": false}
        })
    );
    assert_eq!(json["state"], "provisioning");
    assert_eq!(json["created_at"], "2025-03-01T12:00:50.000Z");
    assert_eq!(json["latest_deployment_id"], json!(created.deployment_id));
    let detail: ClientDetail = serde_json::from_value(json).expect("ClientDetail");
    assert_eq!(detail.health.len(), 2);
    assert_eq!(detail.services, created.services);
}

#[tokio::test]
async fn invalid_configurations_answer_422_naming_the_field() {
    let api = Api::new();
    let cases: [(&str, Value, &str); 9] = [
        ("domain", json!("smith..example.com"), "domain"),
        ("domain", json!("https://smith.example.com"), "domain"),
        ("plan", json!("gold"), "plan"),
        ("plan", json!(3), "plan"),
        ("admin_email", json!("owner-at-example.com"), "admin_email"),
        ("brand_color", json!("red"), "brand_color"),
        ("client_id", json!("Not An Id"), "client_id"),
        ("company_name", json!("Two\nlines"), "company_name"),
        ("features", json!({"mailtrain": true}), "features.mailtrain"),
    ];
    for (key, value, field) in cases {
        let mut body = new_client("smith.example.com");
        body[key] = value.clone();
        let reply = api.post_json("/v1/clients", Some(OPERATOR), &body).await;
        reply.expect(422);
        assert_eq!(reply.error_code(), "invalid_field", "{key} = {value}");
        assert_eq!(
            reply.error_field().as_deref(),
            Some(field),
            "{key} = {value}"
        );
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.starts_with(field), "{message}");
    }

    // Unknown fields, at the top and inside features.
    let mut body = new_client("smith.example.com");
    body["colour"] = json!("#fff");
    let reply = api.post_json("/v1/clients", Some(OPERATOR), &body).await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("colour"));
    let mut body = new_client("smith.example.com");
    body["features"] = json!({"website": false});
    let reply = api.post_json("/v1/clients", Some(OPERATOR), &body).await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("features.website"));

    // A missing required field, and a body that is not an object.
    let mut body = new_client("smith.example.com");
    body.as_object_mut().map(|o| o.remove("domain"));
    let reply = api.post_json("/v1/clients", Some(OPERATOR), &body).await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("domain"));
    let reply = api
        .post_json("/v1/clients", Some(OPERATOR), &json!(["x"]))
        .await;
    reply.expect(422);
    assert_eq!(reply.error_code(), "invalid_field");
}

#[tokio::test]
async fn malformed_json_answers_400() {
    let api = Api::new();
    for body in [
        &b"{\"company_name\": "[..],
        b"not json",
        b"",
        b"{} {}",
        b"\xff\xfe",
    ] {
        let reply = api
            .call(
                "POST",
                "/v1/clients",
                Some(OPERATOR),
                Some(("application/json", body.to_vec())),
            )
            .await;
        reply.expect(400);
        assert_eq!(reply.error_code(), "malformed_json", "{body:?}");
    }
}

#[tokio::test]
async fn wrong_content_types_answer_415() {
    let api = Api::new();
    let body = serde_json::to_vec(&new_client("smith.example.com")).expect("JSON");
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/jsonx",
    ] {
        let reply = api
            .call(
                "POST",
                "/v1/clients",
                Some(OPERATOR),
                Some((content_type, body.clone())),
            )
            .await;
        reply.expect(415);
        assert_eq!(
            reply.error_code(),
            "unsupported_media_type",
            "{content_type:?}"
        );
    }
    let reply = api
        .call(
            "POST",
            "/v1/clients",
            Some(OPERATOR),
            Some(("Application/JSON; charset=utf-8", body)),
        )
        .await;
    reply.expect(202);
}

#[tokio::test]
async fn bodies_over_the_limit_answer_413() {
    let api = Api::new();
    let mut body = new_client("smith.example.com");
    body["company_name"] = json!("x".repeat(70 * 1024));
    let reply = api.post_json("/v1/clients", Some(OPERATOR), &body).await;
    reply.expect(413);
    assert_eq!(reply.error_code(), "payload_too_large");
    // Just under the limit is read (and refused for its value, not its size).
    body["company_name"] = json!("x".repeat(60 * 1024));
    let reply = api.post_json("/v1/clients", Some(OPERATOR), &body).await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("company_name"));
}

#[tokio::test]
async fn listing_pages_through_every_client_with_filters() {
    let api = Api::new();
    for n in 0..5 {
        api.post_json(
            "/v1/clients",
            Some(OPERATOR),
            &new_client(&format!("c{n}.example.com")),
        )
        .await
        .expect(202);
    }
    let reply = api.get("/v1/clients", Some(OPERATOR)).await;
    reply.expect(200);
    let page: Page<ClientSummary> = serde_json::from_value(reply.json()).expect("Page");
    assert_eq!(page.items.len(), 7);
    assert_eq!(page.next, None);
    assert_eq!(reply.json()["next"], Value::Null);
    let keys: Vec<String> = reply.json()["items"][0]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        [
            "client_id",
            "company_name",
            "created_at",
            "domain",
            "plan",
            "state"
        ]
    );

    let mut seen = Vec::new();
    let mut uri = "/v1/clients?limit=3".to_string();
    loop {
        let page: Page<ClientSummary> =
            serde_json::from_value(api.get(&uri, Some(OPERATOR)).await.expect(200).json())
                .expect("Page");
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|c| c.client_id.to_string()));
        match page.next {
            Some(next) => uri = format!("/v1/clients?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "ascending id order");

    let page: Page<ClientSummary> = serde_json::from_value(
        api.get("/v1/clients?state=stopped&plan=starter", Some(OPERATOR))
            .await
            .expect(200)
            .json(),
    )
    .expect("Page");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].client_id.as_str(), CLIENT_B);
    let last = api
        .fake
        .list_queries
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("query");
    assert_eq!(last.state, Some(ClientState::Stopped));
    assert_eq!(last.plan, Some(Plan::Starter));
    assert_eq!(last.limit, 50);
}

#[tokio::test]
async fn list_parameters_are_validated() {
    let api = Api::new();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=10000", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("state=sleeping", "state"),
        ("plan=gold", "plan"),
        ("after=..%2Fetc", "after"),
        ("stat=running", "stat"),
        ("limit=5&limit=6", "limit"),
    ] {
        let reply = api
            .get(&format!("/v1/clients?{query}"), Some(OPERATOR))
            .await;
        reply.expect(422);
        assert_eq!(reply.error_code(), "invalid_field", "{query}");
        assert_eq!(reply.error_field().as_deref(), Some(field), "{query}");
    }
    for query in [
        "limit=1",
        "limit=500",
        "after=alpha-0000000a",
        "state=running",
    ] {
        api.get(&format!("/v1/clients?{query}"), Some(OPERATOR))
            .await
            .expect(200);
    }
    assert!(api
        .fake
        .list_queries
        .lock()
        .expect("lock")
        .iter()
        .all(|q| (1..=500).contains(&q.limit)));
}

#[tokio::test]
async fn client_paths_with_invalid_ids_answer_404() {
    let api = Api::new();
    let long = "a".repeat(5000);
    for bad in [
        "Alpha-0000000A",
        "..",
        "..%2F..%2Fetc",
        "alpha_0000000a",
        "alpha-0000000a%00",
        "%F0%9F%92%A3",
        "%ff",
        long.as_str(),
    ] {
        let reply = api.get(&format!("/v1/clients/{bad}"), Some(OPERATOR)).await;
        reply.expect(404);
        assert_eq!(reply.error_code(), "not_found", "{bad}");
        let reply = api
            .call(
                "POST",
                &format!("/v1/clients/{bad}/stop"),
                Some(OPERATOR),
                None,
            )
            .await;
        reply.expect(404);
        let reply = api
            .get(&format!("/v1/deployments/{bad}"), Some(OPERATOR))
            .await;
        reply.expect(404);
    }
    let reply = api.get("/v1/clients/zulu-0000000f", Some(OPERATOR)).await;
    reply.expect(404);
    assert_eq!(reply.error_code(), "not_found");
}

#[tokio::test]
async fn lifecycle_actions_answer_202_with_a_deployment() {
    for (action, kind) in [
        ("stop", "stop"),
        ("start", "start"),
        ("redeploy", "redeploy"),
    ] {
        let api = Api::new();
        let uri = format!("/v1/clients/{CLIENT_B}/{action}");
        let reply = api.call("POST", &uri, Some(OPERATOR), None).await;
        reply.expect(202);
        let body = reply.json();
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        let deployment: DeploymentRef = serde_json::from_value(body).expect("DeploymentRef");
        assert_eq!(
            reply.header("location"),
            Some(format!("/v1/deployments/{}", deployment.deployment_id))
        );
        let view: DeploymentView = serde_json::from_value(
            api.get(
                &format!("/v1/deployments/{}", deployment.deployment_id),
                Some(OPERATOR),
            )
            .await
            .expect(200)
            .json(),
        )
        .expect("DeploymentView");
        assert_eq!(view.client_id.as_str(), CLIENT_B);
        assert_eq!(view.kind.as_str(), kind);
        // The deployment is unfinished, so the next action is a conflict.
        let reply = api.call("POST", &uri, Some(OPERATOR), None).await;
        reply.expect(409);
        assert_eq!(reply.error_code(), "conflict");
        assert!(reply.text().contains("busy"), "{}", reply.text());
        let reply = api
            .call(
                "POST",
                &format!("/v1/clients/zulu-0000000f/{action}"),
                Some(OPERATOR),
                None,
            )
            .await;
        reply.expect(404);
        assert_eq!(reply.error_code(), "not_found");
    }
}

#[tokio::test]
async fn delete_needs_the_id_confirmed() {
    let api = Api::new();
    let uri = format!("/v1/clients/{CLIENT_B}");
    for (query, status) in [
        ("", 400),
        ("?confirm=", 400),
        ("?confirm=alpha-0000000a", 400),
        ("?confirm=BRAVO-0000000B", 400),
    ] {
        let reply = api
            .call("DELETE", &format!("{uri}{query}"), Some(OPERATOR), None)
            .await;
        reply.expect(status);
        assert_eq!(reply.error_code(), "bad_request", "{query}");
        assert_eq!(reply.error_field().as_deref(), Some("confirm"), "{query}");
    }
    let reply = api
        .call(
            "DELETE",
            &format!("{uri}?confirm={CLIENT_B}&force=1"),
            Some(OPERATOR),
            None,
        )
        .await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("force"));
    let reply = api
        .call(
            "DELETE",
            &format!("{uri}?confirm={CLIENT_B}&delete_backups=maybe"),
            Some(OPERATOR),
            None,
        )
        .await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("delete_backups"));
    // Nothing was deleted by the refused attempts.
    let detail = api.get(&uri, Some(OPERATOR)).await.expect(200).json();
    assert_eq!(detail["state"], "stopped");

    let reply = api
        .call(
            "DELETE",
            &format!("{uri}?confirm={CLIENT_B}&delete_backups=true"),
            Some(OPERATOR),
            None,
        )
        .await;
    reply.expect(202);
    assert_eq!(api.fake.deleted_with_backups(), vec![CLIENT_B.to_string()]);
    let deployment: DeploymentRef = serde_json::from_value(reply.json()).expect("DeploymentRef");
    let view = api
        .get(
            &format!("/v1/deployments/{}", deployment.deployment_id),
            Some(OPERATOR),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(view["kind"], "destroy");
    let reply = api
        .call(
            "DELETE",
            "/v1/clients/zulu-0000000f?confirm=zulu-0000000f",
            Some(OPERATOR),
            None,
        )
        .await;
    reply.expect(404);
}

#[tokio::test]
async fn a_deployment_reads_with_its_steps() {
    let api = Api::new();
    let reply = api
        .get(&format!("/v1/deployments/{DEPLOYMENT_A}"), Some(OPERATOR))
        .await;
    reply.expect(200);
    let json = reply.json();
    assert_eq!(
        json,
        json!({
            "id": DEPLOYMENT_A,
            "client_id": CLIENT_A,
            "kind": "create",
            "status": "succeeded",
            "steps": [
                {"name": "render", "status": "succeeded", "attempts": 1,
                 "started_at": "2025-03-01T12:00:01.000Z", "finished_at": "2025-03-01T12:00:02.000Z"},
                {"name": "containers", "status": "succeeded", "attempts": 1,
                 "started_at": "2025-03-01T12:00:02.000Z", "finished_at": "2025-03-01T12:00:30.000Z"}
            ],
            "created_at": "2025-03-01T12:00:00.000Z",
            "started_at": "2025-03-01T12:00:01.000Z",
            "finished_at": "2025-03-01T12:00:30.000Z"
        })
    );
    let _: DeploymentView = serde_json::from_value(json).expect("DeploymentView");
    let reply = api
        .get(
            "/v1/deployments/dep_ffffffffffffffffffffffffffff",
            Some(OPERATOR),
        )
        .await;
    reply.expect(404);
    assert_eq!(reply.error_code(), "not_found");
}

#[tokio::test]
async fn a_finished_deployments_events_are_its_steps_then_end() {
    let api = Api::new();
    let reply = api
        .get(
            &format!("/v1/deployments/{DEPLOYMENT_A}/events"),
            Some(OPERATOR),
        )
        .await;
    reply.expect(200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let events = parse_sse(&reply.text());
    assert_eq!(events.len(), 3, "{events:?}");
    let names: Vec<Option<&str>> = events.iter().map(|(name, _)| name.as_deref()).collect();
    assert_eq!(names, [None, None, Some("end")]);
    let first: Value = serde_json::from_str(&events[0].1).expect("JSON");
    assert_eq!(first["name"], "render");
    assert_eq!(first["status"], "succeeded");
    let end: Value = serde_json::from_str(&events[2].1).expect("JSON");
    assert_eq!(
        end,
        json!({"status": "succeeded", "finished_at": "2025-03-01T12:00:30.000Z"})
    );
    let reply = api
        .get(
            "/v1/deployments/dep_ffffffffffffffffffffffffffff/events",
            Some(OPERATOR),
        )
        .await;
    reply.expect(404);
}

#[tokio::test]
async fn a_client_token_reads_only_its_own_client_and_deployments() {
    let api = Api::new();
    // Its own client and deployments.
    let own = api
        .get(&format!("/v1/clients/{CLIENT_A}"), Some(TOKEN_A))
        .await;
    own.expect(200);
    assert_eq!(own.json()["client_id"], CLIENT_A);
    api.get(&format!("/v1/deployments/{DEPLOYMENT_A}"), Some(TOKEN_A))
        .await
        .expect(200);
    let events = api
        .get(
            &format!("/v1/deployments/{DEPLOYMENT_A}/events"),
            Some(TOKEN_A),
        )
        .await;
    events.expect(200);
    assert_eq!(parse_sse(&events.text()).len(), 3);

    // Another client's resources look exactly like missing ones.
    let missing_client = api.get("/v1/clients/zulu-0000000f", Some(TOKEN_A)).await;
    let other_client = api
        .get(&format!("/v1/clients/{CLIENT_B}"), Some(TOKEN_A))
        .await;
    other_client.expect(404);
    assert_eq!(other_client.body, missing_client.body);
    let missing_deployment = api
        .get(
            "/v1/deployments/dep_ffffffffffffffffffffffffffff",
            Some(TOKEN_A),
        )
        .await;
    for uri in [
        format!("/v1/deployments/{DEPLOYMENT_B}"),
        format!("/v1/deployments/{DEPLOYMENT_B}/events"),
    ] {
        let reply = api.get(&uri, Some(TOKEN_A)).await;
        reply.expect(404);
        assert_eq!(reply.body, missing_deployment.body, "{uri}");
    }

    // Every write is refused, whatever the target, before anything is read or changed.
    for (method, path) in [
        ("POST", "/v1/clients".to_string()),
        ("POST", format!("/v1/clients/{CLIENT_A}/stop")),
        ("POST", format!("/v1/clients/{CLIENT_A}/start")),
        ("POST", format!("/v1/clients/{CLIENT_A}/redeploy")),
        (
            "DELETE",
            format!("/v1/clients/{CLIENT_A}?confirm={CLIENT_A}"),
        ),
        ("POST", format!("/v1/clients/{CLIENT_B}/stop")),
        ("POST", "/v1/clients/zulu-0000000f/stop".to_string()),
        (
            "DELETE",
            format!("/v1/clients/{CLIENT_B}?confirm={CLIENT_B}"),
        ),
    ] {
        let body = serde_json::to_vec(&new_client("other.example.com")).expect("JSON");
        let reply = api
            .call(
                method,
                &path,
                Some(TOKEN_A),
                Some(("application/json", body)),
            )
            .await;
        reply.expect(403);
        assert_eq!(reply.error_code(), "forbidden", "{method} {path}");
    }
    // The list is the operator's view.
    let reply = api.get("/v1/clients", Some(TOKEN_A)).await;
    reply.expect(403);
    assert_eq!(reply.error_code(), "forbidden");
    // Nothing changed.
    let detail = api
        .get(&format!("/v1/clients/{CLIENT_A}"), Some(OPERATOR))
        .await
        .json();
    assert_eq!(detail["state"], "running");
    let list = api.get("/v1/clients", Some(OPERATOR)).await.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn internal_errors_answer_a_generic_500() {
    let api = Api::new();
    let routes: [(&str, String); 8] = [
        ("POST", "/v1/clients".to_string()),
        ("GET", "/v1/clients".to_string()),
        ("GET", format!("/v1/clients/{CLIENT_A}")),
        ("POST", format!("/v1/clients/{CLIENT_A}/redeploy")),
        (
            "DELETE",
            format!("/v1/clients/{CLIENT_A}?confirm={CLIENT_A}"),
        ),
        ("GET", format!("/v1/deployments/{DEPLOYMENT_A}")),
        ("GET", format!("/v1/deployments/{DEPLOYMENT_A}/events")),
        ("GET", "/metrics".to_string()),
    ];
    for (method, path) in &routes {
        *api.fake.fail_next.lock().expect("lock") =
            Some(ControlError::Internal("db password=hunter2".to_string()));
        let body = serde_json::to_vec(&new_client("fresh.example.com")).expect("JSON");
        let reply = api
            .call(
                method,
                path,
                Some(OPERATOR),
                Some(("application/json", body)),
            )
            .await;
        reply.expect(500);
        assert_eq!(reply.error_code(), "internal", "{method} {path}");
        assert_eq!(reply.json()["error"]["message"], INTERNAL_MESSAGE);
        assert!(!reply.text().contains("hunter2"), "{}", reply.text());
        assert!(!reply.text().contains("password"), "{}", reply.text());
        assert!(
            reply
                .headers
                .values()
                .all(|v| !v.as_bytes().windows(7).any(|w| w == b"hunter2")),
            "a header leaked"
        );
    }

    // Unavailable: 503 with Retry-After, no detail either.
    *api.fake.fail_next.lock().expect("lock") = Some(ControlError::Unavailable(
        "pool exhausted at 10.0.0.5".to_string(),
    ));
    let reply = api.get("/v1/clients", Some(OPERATOR)).await;
    reply.expect(503);
    assert_eq!(reply.error_code(), "unavailable");
    assert_eq!(reply.header("retry-after").as_deref(), Some("5"));
    assert!(!reply.text().contains("10.0.0.5"));

    // A token that cannot be checked is a 503, not a 401 that would make a client drop it.
    api.fake.tokens_unavailable.store(true, Ordering::SeqCst);
    let reply = api.get("/v1/clients", Some(OPERATOR)).await;
    reply.expect(503);
    assert!(reply.header("www-authenticate").is_none());
    api.fake.tokens_unavailable.store(false, Ordering::SeqCst);

    // A panic in the control plane is a 500 too, and the server goes on.
    api.fake.panic_on_get_client.store(true, Ordering::SeqCst);
    let reply = api
        .get(&format!("/v1/clients/{CLIENT_A}"), Some(OPERATOR))
        .await;
    reply.expect(500);
    assert_eq!(reply.error_code(), "internal");
    assert!(!reply.text().contains("hunter2"));
    api.fake.panic_on_get_client.store(false, Ordering::SeqCst);
    api.get(&format!("/v1/clients/{CLIENT_A}"), Some(OPERATOR))
        .await
        .expect(200);
}

#[tokio::test]
async fn control_plane_refusals_keep_their_field_and_message() {
    let api = Api::new();
    *api.fake.fail_next.lock().expect("lock") = Some(ControlError::Invalid {
        field: "domain".to_string(),
        problem: "is reserved by the operator".to_string(),
    });
    let reply = api
        .post_json(
            "/v1/clients",
            Some(OPERATOR),
            &new_client("reserved.example.com"),
        )
        .await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("domain"));
    assert_eq!(
        reply.json()["error"]["message"],
        "domain: is reserved by the operator"
    );
    *api.fake.fail_next.lock().expect("lock") = Some(ControlError::NotFound);
    api.get(
        &format!("/v1/deployments/{LIVE_DEPLOYMENT}"),
        Some(OPERATOR),
    )
    .await
    .expect(404);
}

/// A `tracing` subscriber that keeps every event's fields as text.
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0.lock().expect("lock").push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Every event logged in this test binary. A global subscriber, because a thread's own
/// (`set_default`) misses events while other tests register the same callsites in parallel.
fn log_lines() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    static LINES: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<String>>>> =
        std::sync::OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = std::sync::Arc::default();
            tracing::subscriber::set_global_default(Capture(std::sync::Arc::clone(&lines)))
                .expect("the only global subscriber");
            lines
        })
        .clone()
}

#[tokio::test]
async fn internal_error_details_go_to_the_log_with_the_route() {
    let lines = log_lines();
    let api = Api::new();
    let detail = "db password=hunter2 (log test)";
    *api.fake.fail_next.lock().expect("lock") = Some(ControlError::Internal(detail.to_string()));
    let reply = api
        .get(&format!("/v1/clients/{CLIENT_A}"), Some(OPERATOR))
        .await;
    reply.expect(500);
    assert!(!reply.text().contains("hunter2"));
    let lines = lines.lock().expect("lock").clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERROR") && l.contains(detail)),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("WARN")
            && l.contains("route=\"/v1/clients/{id}\"")
            && l.contains("status=500")),
        "{lines:#?}"
    );
}
