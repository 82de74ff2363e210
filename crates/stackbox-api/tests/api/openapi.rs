//! `/openapi.json` lists every route the router serves, and only those, with resolvable
//! schemas and the bearer requirement on every `/v1` operation.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::fake::{CLIENT_A, DEPLOYMENT_A, OPERATOR, TOKEN_A_ID};
use crate::Api;

/// Every route the server has: (method, OpenAPI path).
const ROUTES: [(&str, &str); 37] = [
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/clients"),
    ("get", "/v1/clients"),
    ("get", "/v1/clients/{id}"),
    ("patch", "/v1/clients/{id}"),
    ("delete", "/v1/clients/{id}"),
    ("get", "/v1/clients/{id}/deployments"),
    ("post", "/v1/clients/{id}/stop"),
    ("post", "/v1/clients/{id}/start"),
    ("post", "/v1/clients/{id}/redeploy"),
    ("post", "/v1/clients/{id}/rotate-secrets"),
    ("post", "/v1/clients/{id}/admin-password"),
    ("post", "/v1/clients/{id}/upgrade"),
    ("post", "/v1/clients/{id}/welcome"),
    ("post", "/v1/clients/{id}/backups"),
    ("get", "/v1/clients/{id}/backups"),
    ("get", "/v1/clients/{id}/logs"),
    ("get", "/v1/clients/{id}/usage"),
    ("get", "/v1/alerts"),
    ("get", "/v1/audit"),
    ("post", "/v1/clients/{id}/backups/{snapshot}/restore"),
    ("post", "/v1/clients/{id}/backups/{snapshot}/verify"),
    ("post", "/v1/clients/{id}/clone"),
    ("get", "/v1/deployments/{id}"),
    ("get", "/v1/deployments/{id}/events"),
    ("post", "/v1/rollouts"),
    ("get", "/v1/rollouts"),
    ("get", "/v1/rollouts/{id}"),
    ("post", "/v1/rollouts/{id}/halt"),
    ("get", "/v1/tokens"),
    ("delete", "/v1/tokens/{id}"),
    ("post", "/v1/signup"),
    ("post", "/v1/webhooks/stripe"),
    ("get", "/welcome/{token}"),
    ("post", "/welcome/{token}"),
];

/// `/v1` routes that take no bearer token: the sign-up (rate-limited) and Stripe's webhook
/// (authenticated by its signature).
const PUBLIC_V1: [&str; 2] = ["/v1/signup", "/v1/webhooks/stripe"];

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target);
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_lists_every_route_and_only_those() {
    let api = Api::new();
    let reply = api.get("/openapi.json", None).await;
    reply.expect(200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "StackBox API");
    assert_eq!(
        doc,
        serde_json::to_value(stackbox_api::openapi()).expect("JSON")
    );

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            documented.insert((method.clone(), path.clone()));
            let secured = operation["security"] == serde_json::json!([{"bearer": []}]);
            let needs_token = path.starts_with("/v1/") && !PUBLIC_V1.contains(&path.as_str());
            assert_eq!(secured, needs_token, "{method} {path}");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, response) in responses {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status} has no description"
                );
            }
            if needs_token {
                assert!(responses.contains_key("401"), "{method} {path}");
                assert!(responses.contains_key("500"), "{method} {path}");
            }
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for name in ["id", "snapshot", "token"] {
                if path.contains(&format!("{{{name}}}")) {
                    assert!(
                        params
                            .iter()
                            .any(|p| p["name"] == name && p["in"] == "path"),
                        "{method} {path} does not document {name}"
                    );
                }
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    // Every reference resolves.
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{target} is missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer"})
    );

    // The request body: its fields are exactly those the server accepts.
    let new_client = &doc["components"]["schemas"]["NewClient"];
    assert_eq!(new_client["additionalProperties"], false);
    let properties: BTreeSet<&str> = new_client["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        properties,
        BTreeSet::from([
            "client_id",
            "company_name",
            "domain",
            "infrastructure",
            "plan",
            "admin_email",
            "brand_color",
            "features"
        ])
    );
    let required: BTreeSet<&str> = new_client["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["company_name", "domain", "plan", "admin_email"])
    );
    // A PATCH takes a merge patch (or plain JSON) with the same fields, none required.
    let patch = &doc["paths"]["/v1/clients/{id}"]["patch"];
    let content: BTreeSet<&str> = patch["requestBody"]["content"]
        .as_object()
        .expect("content")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        content,
        BTreeSet::from(["application/merge-patch+json", "application/json"])
    );
    let client_patch = &doc["components"]["schemas"]["ClientPatch"];
    assert_eq!(client_patch["additionalProperties"], false);
    let patch_fields: BTreeSet<&str> = client_patch["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(patch_fields, properties);
    assert!(client_patch.get("required").is_none(), "{client_patch}");
    for status in ["200", "202", "409", "415", "422"] {
        assert!(patch["responses"].get(status).is_some(), "PATCH {status}");
    }
    let history = &doc["paths"]["/v1/clients/{id}/deployments"]["get"]["parameters"];
    let names: BTreeSet<&str> = history
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["id", "after", "limit"]));
    let token_view: BTreeSet<&str> = doc["components"]["schemas"]["TokenView"]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        token_view,
        BTreeSet::from(["id", "role", "client_id", "created_at", "last_used_at"])
    );
    let list = &doc["paths"]["/v1/clients"]["get"]["parameters"];
    let names: BTreeSet<&str> = list
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["state", "plan", "after", "limit"]));
    // The clone's body, like the client's, refuses unknown fields and needs its domain.
    let clone = &doc["components"]["schemas"]["CloneRequest"];
    assert_eq!(clone["additionalProperties"], false);
    assert_eq!(clone["required"], serde_json::json!(["domain"]));
    let restore = &doc["paths"]["/v1/clients/{id}/backups/{snapshot}/restore"]["post"];
    assert!(
        restore["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "confirm" && p["in"] == "query" && p["required"] == true),
        "{restore}"
    );
    // Every name enum documents the names on the wire (`pre-destroy`), not the Rust variants.
    let names = |all: Vec<&'static str>| Value::from(all);
    for (schema, wire) in [
        (
            "DeploymentKind",
            names(
                stackbox_api::DeploymentKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect(),
            ),
        ),
        (
            "ClientState",
            names(
                stackbox_api::ClientState::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect(),
            ),
        ),
        (
            "BackupReason",
            names(
                stackbox_api::BackupReason::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect(),
            ),
        ),
        (
            "BackupStatus",
            names(
                stackbox_api::BackupStatus::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect(),
            ),
        ),
    ] {
        assert_eq!(
            doc["components"]["schemas"][schema]["enum"], wire,
            "{schema}"
        );
    }
    assert!(doc["components"]["schemas"]["DeploymentKind"]["enum"]
        .as_array()
        .is_some_and(|kinds| ["backup", "restore", "verify", "clone"]
            .iter()
            .all(|kind| kinds.contains(&Value::from(*kind)))));
    // Credentials are only in the two answers that generate a password.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (name, schema) in schemas {
        let mut found = Vec::new();
        refs(schema, &mut found);
        if found.contains(&"#/components/schemas/Credentials") {
            assert!(
                ["CreatedClient", "AdminPasswordReset"].contains(&name.as_str()),
                "{name} carries credentials"
            );
        }
    }
    let reset = &doc["paths"]["/v1/clients/{id}/admin-password"]["post"];
    for status in ["202", "403", "404", "409", "422"] {
        assert!(
            reset["responses"].get(status).is_some(),
            "admin-password {status}"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["AdminResetOutcome"]["enum"],
        serde_json::json!(["set", "recreated", "not-applicable"])
    );
}

#[tokio::test]
async fn every_documented_route_is_served() {
    for (method, path) in ROUTES {
        // A fresh control plane each time: one action would make the next a conflict.
        let api = Api::new();
        let uri = path
            .replace("/v1/clients/{id}", &format!("/v1/clients/{CLIENT_A}"))
            .replace(
                "/v1/deployments/{id}",
                &format!("/v1/deployments/{DEPLOYMENT_A}"),
            )
            .replace("/v1/tokens/{id}", &format!("/v1/tokens/{TOKEN_A_ID}"));
        let uri = uri.replace("{token}", crate::fake::GOOD_LINK);
        if path.starts_with("/v1/rollouts/") {
            // A rollout to look at or halt.
            let made = api
                .call(
                    "POST",
                    "/v1/rollouts",
                    Some(OPERATOR),
                    Some(("application/json", br#"{"to": "r2"}"#.to_vec())),
                )
                .await;
            assert_eq!(made.status.as_u16(), 202, "{}", made.text());
        }
        let uri = uri.replace("/v1/rollouts/{id}", &format!("/v1/rollouts/rol_{:028x}", 1));
        let uri = uri.replace("{snapshot}", "latest");
        let uri = if (method == "delete" && path.starts_with("/v1/clients"))
            || path.ends_with("/restore")
        {
            format!("{uri}?confirm={CLIENT_A}")
        } else {
            uri
        };
        if path == "/v1/webhooks/stripe" {
            let reply = api
                .router_request(
                    "POST",
                    &uri,
                    &[("stripe-signature", crate::fake::GOOD_SIGNATURE)],
                    b"{}".to_vec(),
                )
                .await;
            assert!(reply.status.is_success(), "{uri}: {}", reply.text());
            continue;
        }
        let body = if path.ends_with("/clone") {
            serde_json::json!({"domain": "served-clone.example.com"})
        } else if path.ends_with("/rotate-secrets") || path.ends_with("/admin-password") {
            serde_json::json!({})
        } else if path.ends_with("/upgrade") || path == "/v1/rollouts" {
            serde_json::json!({"to": "r2"})
        } else {
            crate::new_client("served.example.com")
        };
        let body = Some(("application/json", serde_json::to_vec(&body).expect("JSON")));
        let reply = api
            .call(&method.to_uppercase(), &uri, Some(OPERATOR), body)
            .await;
        assert!(
            reply.status.is_success(),
            "{method} {uri}: {} {}",
            reply.status,
            reply.text()
        );
    }
}
