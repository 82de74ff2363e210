//! The backup routes: back up, list, restore (confirmed), verify, clone; who may call them,
//! and how their paths and bodies are checked before anything reaches the control plane.

use serde_json::{json, Value};
use stackbox_api::{BackupList, ClonedClient, ControlError, DeploymentRef, INTERNAL_MESSAGE};
use stackbox_core::client::Domain;

use crate::fake::{id, CLIENT_A, CLIENT_B, FAILED_BACKUP_A, OPERATOR, SNAPSHOT_A, TOKEN_A};
use crate::{Api, Reply};

fn restore_uri(client: &str, snapshot: &str, confirm: &str) -> String {
    format!("/v1/clients/{client}/backups/{snapshot}/restore?confirm={confirm}")
}

fn verify_uri(client: &str, snapshot: &str) -> String {
    format!("/v1/clients/{client}/backups/{snapshot}/verify")
}

async fn post(api: &Api, uri: &str, token: Option<&str>) -> Reply {
    api.call("POST", uri, token, None).await
}

/// A 202 with one `deployment_id` and the matching `Location`; returns the deployment's kind
/// and client as the deployment route reads them.
async fn accepted_deployment(api: &Api, reply: &Reply) -> (String, String) {
    reply.expect(202);
    let body = reply.json();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let deployment: DeploymentRef = serde_json::from_value(body).expect("DeploymentRef");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/deployments/{}", deployment.deployment_id))
    );
    let view = api
        .get(
            &format!("/v1/deployments/{}", deployment.deployment_id),
            Some(OPERATOR),
        )
        .await
        .expect(200)
        .json();
    (
        view["kind"].as_str().expect("kind").to_string(),
        view["client_id"].as_str().expect("client_id").to_string(),
    )
}

fn clone_body(value: &Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", serde_json::to_vec(value).expect("JSON")))
}

#[tokio::test]
async fn backing_up_a_client_answers_202_with_a_backup_deployment_then_409_while_it_runs() {
    let api = Api::new();
    let uri = format!("/v1/clients/{CLIENT_B}/backups");
    let reply = post(&api, &uri, Some(OPERATOR)).await;
    let (kind, client) = accepted_deployment(&api, &reply).await;
    assert_eq!((kind.as_str(), client.as_str()), ("backup", CLIENT_B));
    let deployment = reply.json()["deployment_id"].clone();

    // The list shows it running, tied to its deployment.
    let list = api.get(&uri, Some(OPERATOR)).await.expect(200).json();
    assert_eq!(list["backups"][0]["status"], "running");
    assert_eq!(list["backups"][0]["reason"], "manual");
    assert_eq!(list["backups"][0]["deployment_id"], deployment);

    let reply = post(&api, &uri, Some(OPERATOR)).await;
    reply.expect(409);
    assert_eq!(reply.error_code(), "conflict");
    assert!(reply.text().contains("busy"), "{}", reply.text());

    let reply = post(&api, "/v1/clients/zulu-0000000f/backups", Some(OPERATOR)).await;
    reply.expect(404);
    assert_eq!(reply.error_code(), "not_found");
    post(&api, "/v1/clients/Not-An-Id/backups", Some(OPERATOR))
        .await
        .expect(404);
}

#[tokio::test]
async fn listing_backups_shows_them_newest_first_with_their_summary() {
    let api = Api::new();
    let reply = api
        .get(&format!("/v1/clients/{CLIENT_A}/backups"), Some(OPERATOR))
        .await;
    reply.expect(200);
    let json = reply.json();
    assert_eq!(
        json,
        json!({
            "client_id": CLIENT_A,
            "state": {
                "last_success_at": "2025-03-01T12:01:00.000Z",
                "last_verified_at": "2025-03-01T12:01:35.000Z",
                "last_verify_ok": true,
                "missing": false
            },
            "backups": [
                {
                    "id": FAILED_BACKUP_A,
                    "reason": "manual",
                    "status": "failed",
                    "started_at": "2025-03-01T12:01:10.000Z",
                    "finished_at": "2025-03-01T12:01:15.000Z",
                    "error": "the backup destination did not answer"
                },
                {
                    "id": "bkp_00000000000a0000000000000001",
                    "snapshot": SNAPSHOT_A,
                    "reason": "scheduled",
                    "status": "succeeded",
                    "started_at": "2025-03-01T12:01:00.000Z",
                    "finished_at": "2025-03-01T12:01:30.000Z",
                    "bytes_added": 1_048_576,
                    "bytes_total": 52_428_800,
                    "files_total": 1234,
                    "verified_at": "2025-03-01T12:01:35.000Z",
                    "verify_ok": true
                }
            ]
        })
    );
    let list: BackupList = serde_json::from_value(json).expect("BackupList");
    assert_eq!(list.client_id, id(CLIENT_A));

    // B has never been backed up: missing, and an empty list rather than a 404.
    let reply = api
        .get(&format!("/v1/clients/{CLIENT_B}/backups"), Some(OPERATOR))
        .await;
    reply.expect(200);
    assert_eq!(
        reply.json(),
        json!({"client_id": CLIENT_B, "state": {"missing": true}, "backups": []})
    );

    let reply = api
        .get("/v1/clients/zulu-0000000f/backups", Some(OPERATOR))
        .await;
    reply.expect(404);
    assert_eq!(reply.error_code(), "not_found");
}

#[tokio::test]
async fn the_client_detail_says_whether_a_backup_is_missing() {
    let api = Api::new();
    let a = api
        .get(&format!("/v1/clients/{CLIENT_A}"), Some(OPERATOR))
        .await
        .expect(200)
        .json();
    assert_eq!(
        a["backup"],
        json!({
            "last_success_at": "2025-03-01T12:01:00.000Z",
            "last_verified_at": "2025-03-01T12:01:35.000Z",
            "last_verify_ok": true,
            "missing": false
        })
    );
    let b = api
        .get(&format!("/v1/clients/{CLIENT_B}"), Some(OPERATOR))
        .await
        .expect(200)
        .json();
    assert_eq!(b["backup"], json!({"missing": true}));
    // A client without the field (an older server) still reads.
    let mut older = a.clone();
    older.as_object_mut().map(|o| o.remove("backup"));
    let detail: stackbox_api::ClientDetail = serde_json::from_value(older).expect("ClientDetail");
    assert_eq!(detail.backup, None);
}

#[tokio::test]
async fn every_backup_route_answers_401_without_a_token_or_with_a_bad_one() {
    let api = Api::new();
    for (method, uri) in [
        ("POST", format!("/v1/clients/{CLIENT_A}/backups")),
        ("GET", format!("/v1/clients/{CLIENT_A}/backups")),
        ("POST", restore_uri(CLIENT_A, "latest", CLIENT_A)),
        ("POST", verify_uri(CLIENT_A, "latest")),
        ("POST", format!("/v1/clients/{CLIENT_A}/clone")),
    ] {
        let body = clone_body(&json!({"domain": "copy.example.com"}));
        let reply = api.call(method, &uri, None, body.clone()).await;
        reply.expect(401);
        assert_eq!(reply.error_code(), "unauthorized", "{method} {uri}");
        assert_eq!(
            reply.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"stackbox\""),
            "{method} {uri}"
        );
        let reply = api.call(method, &uri, Some("wrong-token"), body).await;
        reply.expect(401);
        assert_eq!(reply.error_code(), "unauthorized", "{method} {uri}");
    }
    assert!(api.fake.snapshot_calls.lock().expect("lock").is_empty());
    assert!(api.fake.clones.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_client_token_lists_only_its_own_backups_and_may_start_none() {
    let api = Api::new();
    api.get(&format!("/v1/clients/{CLIENT_A}/backups"), Some(TOKEN_A))
        .await
        .expect(200);
    // Another client's backups look exactly like a missing client's.
    let other = api
        .get(&format!("/v1/clients/{CLIENT_B}/backups"), Some(TOKEN_A))
        .await;
    other.expect(404);
    let missing = api
        .get("/v1/clients/zulu-0000000f/backups", Some(TOKEN_A))
        .await;
    missing.expect(404);
    assert_eq!(other.body, missing.body);

    // Every write answers 403, whatever the target, before anything is checked or changed.
    for client in [CLIENT_A, CLIENT_B, "zulu-0000000f"] {
        for uri in [
            format!("/v1/clients/{client}/backups"),
            restore_uri(client, "latest", client),
            restore_uri(client, "NOT-A-SNAPSHOT", "wrong"),
            verify_uri(client, SNAPSHOT_A),
            format!("/v1/clients/{client}/clone"),
        ] {
            let body = clone_body(&json!({"domain": "copy.example.com"}));
            let reply = api.call("POST", &uri, Some(TOKEN_A), body).await;
            reply.expect(403);
            assert_eq!(reply.error_code(), "forbidden", "{uri}");
        }
    }
    assert!(api.fake.snapshot_calls.lock().expect("lock").is_empty());
    assert!(api.fake.clones.lock().expect("lock").is_empty());
    let list = api
        .get(&format!("/v1/clients/{CLIENT_A}/backups"), Some(OPERATOR))
        .await
        .json();
    assert_eq!(list["backups"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn restoring_needs_the_client_id_confirmed() {
    let api = Api::new();
    let base = format!("/v1/clients/{CLIENT_A}/backups/latest/restore");
    for query in [
        "",
        "?confirm=",
        "?confirm=bravo-0000000b",
        "?confirm=ALPHA-0000000A",
        "?confirm=alpha-0000000a%20",
    ] {
        let reply = post(&api, &format!("{base}{query}"), Some(OPERATOR)).await;
        reply.expect(400);
        assert_eq!(reply.error_code(), "bad_request", "{query}");
        assert_eq!(reply.error_field().as_deref(), Some("confirm"), "{query}");
        assert!(
            reply.text().contains(&format!("?confirm={CLIENT_A}")),
            "{}",
            reply.text()
        );
    }
    let reply = post(&api, &format!("{base}?confirm"), Some(OPERATOR)).await;
    reply.expect(400);
    assert_eq!(reply.error_field().as_deref(), Some("confirm"));
    let reply = post(
        &api,
        &format!("{base}?confirm={CLIENT_A}&force=1"),
        Some(OPERATOR),
    )
    .await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("force"));
    let reply = post(
        &api,
        &format!("{base}?confirm={CLIENT_A}&confirm={CLIENT_A}"),
        Some(OPERATOR),
    )
    .await;
    reply.expect(422);
    assert_eq!(reply.error_field().as_deref(), Some("confirm"));
    // Nothing reached the control plane.
    assert!(api.fake.snapshot_calls.lock().expect("lock").is_empty());

    let reply = post(&api, &format!("{base}?confirm={CLIENT_A}"), Some(OPERATOR)).await;
    let (kind, client) = accepted_deployment(&api, &reply).await;
    assert_eq!((kind.as_str(), client.as_str()), ("restore", CLIENT_A));
    assert_eq!(
        *api.fake.snapshot_calls.lock().expect("lock"),
        [("restore", id(CLIENT_A), "latest".to_string())]
    );
}

#[tokio::test]
async fn restore_and_verify_take_a_snapshot_id_its_first_digits_or_latest() {
    for snapshot in [SNAPSHOT_A, &SNAPSHOT_A[..8], &SNAPSHOT_A[..20], "latest"] {
        for (action, uri) in [
            ("restore", restore_uri(CLIENT_A, snapshot, CLIENT_A)),
            ("verify", verify_uri(CLIENT_A, snapshot)),
        ] {
            // A fresh control plane each time: one deployment would make the next a conflict.
            let api = Api::new();
            let reply = post(&api, &uri, Some(OPERATOR)).await;
            let (kind, client) = accepted_deployment(&api, &reply).await;
            assert_eq!(
                (kind.as_str(), client.as_str()),
                (action, CLIENT_A),
                "{uri}"
            );
            // Passed on as written: resolving it is the control plane's.
            assert_eq!(
                *api.fake.snapshot_calls.lock().expect("lock"),
                [(action, id(CLIENT_A), snapshot.to_string())]
            );
        }
    }
}

#[tokio::test]
async fn malformed_snapshots_answer_404_like_unknown_ones_without_reaching_the_control_plane() {
    let api = Api::new();
    let too_long = "f".repeat(65);
    let unknown_restore = post(
        &api,
        &restore_uri(CLIENT_A, "deadbeef", CLIENT_A),
        Some(OPERATOR),
    )
    .await;
    unknown_restore.expect(404);
    assert_eq!(unknown_restore.error_code(), "not_found");
    let unknown_verify = post(&api, &verify_uri(CLIENT_A, "deadbeef"), Some(OPERATOR)).await;
    unknown_verify.expect(404);
    api.fake.snapshot_calls.lock().expect("lock").clear();
    for bad in [
        "ABCDEF12",
        "4F9C2A7B",
        "abc1234",
        too_long.as_str(),
        "zzzzzzzz",
        "Latest",
        "latest%00",
        "..",
        "..%2F..%2Fetc",
        "--help%3D1",
        "%ff%ff%ff%ff%ff%ff%ff%ff",
    ] {
        let reply = post(&api, &restore_uri(CLIENT_A, bad, CLIENT_A), Some(OPERATOR)).await;
        reply.expect(404);
        assert_eq!(reply.body, unknown_restore.body, "{bad}");
        let reply = post(&api, &verify_uri(CLIENT_A, bad), Some(OPERATOR)).await;
        reply.expect(404);
        assert_eq!(reply.body, unknown_verify.body, "{bad}");
    }
    assert!(api.fake.snapshot_calls.lock().expect("lock").is_empty());
    // An invalid client id answers like an unknown client, which answers like an unknown
    // snapshot: the control plane's 404 does not tell them apart.
    for client in ["Not-An-Id", "zulu-0000000f"] {
        let reply = post(&api, &restore_uri(client, "latest", client), Some(OPERATOR)).await;
        reply.expect(404);
        assert_eq!(reply.body, unknown_restore.body, "{client}");
    }
    // B has only never been backed up: nothing for `latest` to name.
    let reply = post(&api, &verify_uri(CLIENT_B, "latest"), Some(OPERATOR)).await;
    reply.expect(404);
    assert_eq!(reply.body, unknown_verify.body);
}

#[tokio::test]
async fn verifying_a_snapshot_answers_202_with_a_verify_deployment() {
    let api = Api::new();
    let reply = post(
        &api,
        &verify_uri(CLIENT_A, &SNAPSHOT_A[..8]),
        Some(OPERATOR),
    )
    .await;
    let (kind, client) = accepted_deployment(&api, &reply).await;
    assert_eq!((kind.as_str(), client.as_str()), ("verify", CLIENT_A));
    // A verify needs no `confirm` (it touches only a throwaway copy), but it is still a
    // deployment of the client: the next one waits for it.
    let reply = post(&api, &verify_uri(CLIENT_A, "latest"), Some(OPERATOR)).await;
    reply.expect(409);
    assert_eq!(reply.error_code(), "conflict");
}

#[tokio::test]
async fn every_backup_write_is_a_conflict_while_the_client_is_busy() {
    let api = Api::new();
    post(
        &api,
        &format!("/v1/clients/{CLIENT_A}/backups"),
        Some(OPERATOR),
    )
    .await
    .expect(202);
    for uri in [
        format!("/v1/clients/{CLIENT_A}/backups"),
        restore_uri(CLIENT_A, "latest", CLIENT_A),
        verify_uri(CLIENT_A, SNAPSHOT_A),
    ] {
        let reply = post(&api, &uri, Some(OPERATOR)).await;
        reply.expect(409);
        assert_eq!(reply.error_code(), "conflict", "{uri}");
        assert!(reply.text().contains("busy"), "{}", reply.text());
    }
    // And so is a redeploy: a backup is a deployment like any other.
    post(
        &api,
        &format!("/v1/clients/{CLIENT_A}/redeploy"),
        Some(OPERATOR),
    )
    .await
    .expect(409);
}

#[tokio::test]
async fn cloning_answers_202_with_the_new_client_and_its_clone_deployment() {
    let api = Api::new();
    let uri = format!("/v1/clients/{CLIENT_A}/clone");
    let reply = api
        .post_json(
            &uri,
            Some(OPERATOR),
            &json!({"domain": " Staging.Alpha.Example.COM"}),
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
    assert_eq!(keys, ["client_id", "deployment_id"]);
    let cloned: ClonedClient = serde_json::from_value(body).expect("ClonedClient");
    assert_ne!(cloned.client_id.as_str(), CLIENT_A);
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/deployments/{}", cloned.deployment_id))
    );
    // The domain reached the control plane as the core reads it.
    assert_eq!(
        *api.fake.clones.lock().expect("lock"),
        [(
            id(CLIENT_A),
            Domain::parse("staging.alpha.example.com").expect("domain"),
            None
        )]
    );
    let view = api
        .get(
            &format!("/v1/deployments/{}", cloned.deployment_id),
            Some(OPERATOR),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(view["kind"], "clone");
    assert_eq!(view["client_id"], cloned.client_id.as_str());
    let detail = api
        .get(&format!("/v1/clients/{}", cloned.client_id), Some(OPERATOR))
        .await
        .expect(200)
        .json();
    assert_eq!(
        detail["configuration"]["domain"],
        "staging.alpha.example.com"
    );
    assert_eq!(detail["state"], "provisioning");

    // With a snapshot, passed on as written.
    let reply = api
        .post_json(
            &uri,
            Some(OPERATOR),
            &json!({"domain": "other.alpha.example.com", "snapshot": &SNAPSHOT_A[..12]}),
        )
        .await;
    reply.expect(202);
    let clones = api.fake.clones.lock().expect("lock").clone();
    assert_eq!(clones[1].2.as_deref(), Some(&SNAPSHOT_A[..12]));
}

#[tokio::test]
async fn clone_bodies_are_checked_like_client_configurations_before_the_control_plane() {
    let api = Api::new();
    let uri = format!("/v1/clients/{CLIENT_A}/clone");
    // Bad domains: 422 naming `domain`, with the core's own message.
    for domain in [
        "staging..example.com",
        "https://staging.example.com",
        "staging.example.com.",
        "stäging.example.com",
        "",
    ] {
        let reply = api
            .post_json(&uri, Some(OPERATOR), &json!({"domain": domain}))
            .await;
        reply.expect(422);
        assert_eq!(reply.error_code(), "invalid_field", "{domain:?}");
        assert_eq!(reply.error_field().as_deref(), Some("domain"), "{domain:?}");
        let core = Domain::parse(domain).expect_err("invalid").to_string();
        assert_eq!(reply.json()["error"]["message"], core, "{domain:?}");
    }
    for (body, field) in [
        (json!({}), Some("domain")),
        (json!({"domain": 3}), Some("domain")),
        (json!({"domain": null}), Some("domain")),
        (
            json!({"domain": "copy.example.com", "plan": "starter"}),
            Some("plan"),
        ),
        (json!({"domian": "copy.example.com"}), Some("domian")),
        (
            json!({"domain": "copy.example.com", "snapshot": "ABCDEF12"}),
            Some("snapshot"),
        ),
        (
            json!({"domain": "copy.example.com", "snapshot": "abc"}),
            Some("snapshot"),
        ),
        (
            json!({"domain": "copy.example.com", "snapshot": 12_345_678}),
            Some("snapshot"),
        ),
        (json!(["copy.example.com"]), None),
        (json!("copy.example.com"), None),
    ] {
        let reply = api.post_json(&uri, Some(OPERATOR), &body).await;
        reply.expect(422);
        assert_eq!(reply.error_code(), "invalid_field", "{body}");
        assert_eq!(reply.error_field().as_deref(), field, "{body}");
        if let Some(field) = field {
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(message.starts_with(field), "{message}");
        }
    }
    for body in [&b"{\"domain\": "[..], b"not json", b"", b"{} {}"] {
        let reply = api
            .call(
                "POST",
                &uri,
                Some(OPERATOR),
                Some(("application/json", body.to_vec())),
            )
            .await;
        reply.expect(400);
        assert_eq!(reply.error_code(), "malformed_json", "{body:?}");
    }
    let good = serde_json::to_vec(&json!({"domain": "copy.example.com"})).expect("JSON");
    for content_type in ["text/plain", ""] {
        let reply = api
            .call(
                "POST",
                &uri,
                Some(OPERATOR),
                Some((content_type, good.clone())),
            )
            .await;
        reply.expect(415);
        assert_eq!(reply.error_code(), "unsupported_media_type");
    }
    let huge = json!({"domain": "copy.example.com", "snapshot": "a".repeat(70 * 1024)});
    let reply = api.post_json(&uri, Some(OPERATOR), &huge).await;
    reply.expect(413);
    assert_eq!(reply.error_code(), "payload_too_large");
    assert!(api.fake.clones.lock().expect("lock").is_empty());

    // A bad client id in the path is a 404 before the body is read, the same as an unknown
    // client's.
    let invalid = api
        .post_json("/v1/clients/Not-An-Id/clone", Some(OPERATOR), &json!({}))
        .await;
    invalid.expect(404);
    let unknown = api
        .post_json(
            "/v1/clients/zulu-0000000f/clone",
            Some(OPERATOR),
            &json!({"domain": "copy.example.com"}),
        )
        .await;
    unknown.expect(404);
    assert_eq!(invalid.body, unknown.body);
}

#[tokio::test]
async fn a_clone_to_a_taken_domain_or_of_a_client_without_a_backup_is_refused() {
    let api = Api::new();
    let reply = api
        .post_json(
            &format!("/v1/clients/{CLIENT_A}/clone"),
            Some(OPERATOR),
            &json!({"domain": "bravo.example.com"}),
        )
        .await;
    reply.expect(409);
    assert_eq!(reply.error_code(), "conflict");
    assert!(reply.text().contains("taken"), "{}", reply.text());
    let reply = api
        .post_json(
            &format!("/v1/clients/{CLIENT_B}/clone"),
            Some(OPERATOR),
            &json!({"domain": "copy.example.com"}),
        )
        .await;
    reply.expect(409);
    assert!(
        reply.text().contains("no successful backup"),
        "{}",
        reply.text()
    );
    for (client, snapshot) in [("zulu-0000000f", None), (CLIENT_A, Some("deadbeef"))] {
        let reply = api
            .post_json(
                &format!("/v1/clients/{client}/clone"),
                Some(OPERATOR),
                &json!({"domain": "copy.example.com", "snapshot": snapshot}),
            )
            .await;
        reply.expect(404);
        assert_eq!(reply.error_code(), "not_found");
    }
    let list = api.get("/v1/clients", Some(OPERATOR)).await.json();
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(2),
        "no client was made"
    );
}

#[tokio::test]
async fn backup_routes_answer_a_generic_500_and_a_503_without_detail() {
    let api = Api::new();
    let routes = [
        ("POST", format!("/v1/clients/{CLIENT_A}/backups")),
        ("GET", format!("/v1/clients/{CLIENT_A}/backups")),
        ("POST", restore_uri(CLIENT_A, "latest", CLIENT_A)),
        ("POST", verify_uri(CLIENT_A, "latest")),
        ("POST", format!("/v1/clients/{CLIENT_A}/clone")),
    ];
    for (method, uri) in &routes {
        for (error, status) in [
            (
                ControlError::Internal("db password=hunter2".to_string()),
                500,
            ),
            (
                ControlError::Unavailable("restic at 10.0.0.5 hung".to_string()),
                503,
            ),
        ] {
            *api.fake.fail_next.lock().expect("lock") = Some(error);
            let body = clone_body(&json!({"domain": "copy.example.com"}));
            let reply = api.call(method, uri, Some(OPERATOR), body).await;
            reply.expect(status);
            assert!(!reply.text().contains("hunter2"), "{}", reply.text());
            assert!(!reply.text().contains("10.0.0.5"), "{}", reply.text());
            if status == 500 {
                assert_eq!(reply.error_code(), "internal", "{method} {uri}");
                assert_eq!(reply.json()["error"]["message"], INTERNAL_MESSAGE);
            } else {
                assert_eq!(reply.error_code(), "unavailable", "{method} {uri}");
                assert_eq!(reply.header("retry-after").as_deref(), Some("5"));
            }
        }
    }
}
