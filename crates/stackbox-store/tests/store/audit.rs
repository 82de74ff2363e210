use stackbox_store::{ActorKind, AuditOutcome, NewAuditEntry};

use crate::harness::{on_both_engines, TestDb};

on_both_engines!(
    entries_are_appended_with_their_outcome_and_read_newest_first_by_client_and_page,
    the_database_refuses_to_update_or_delete_an_audit_entry,
);

fn entry(action: &str, client: Option<&str>, status: u16) -> NewAuditEntry {
    NewAuditEntry {
        actor_kind: ActorKind::Operator,
        token_id: Some("tok_0123456789abcdef".into()),
        action: action.to_string(),
        client_id: client.map(str::to_string),
        status,
        deployment_id: (status == 202).then(|| "dep_1".to_string()),
    }
}

async fn entries_are_appended_with_their_outcome_and_read_newest_first_by_client_and_page(
    db: &TestDb,
) {
    let store = &db.open().await;
    let made = [
        entry("POST /v1/clients", Some("shop-a"), 202),
        entry("POST /v1/clients/{id}/stop", Some("shop-b"), 409),
        entry("DELETE /v1/tokens/{id}", None, 204),
        entry("POST /v1/clients/{id}/start", Some("shop-a"), 500),
    ];
    let mut kept = Vec::new();
    for new in &made {
        kept.push(store.append_audit(new).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(kept[0].outcome, AuditOutcome::Accepted);
    assert_eq!(kept[1].outcome, AuditOutcome::Refused);
    assert_eq!(kept[3].outcome, AuditOutcome::Failed);
    assert_eq!(kept[0].deployment_id.as_deref(), Some("dep_1"));

    let all = store.audit_entries(None, None, 10).await.unwrap();
    let actions: Vec<_> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "POST /v1/clients/{id}/start",
            "DELETE /v1/tokens/{id}",
            "POST /v1/clients/{id}/stop",
            "POST /v1/clients",
        ]
    );
    assert_eq!(all[3], kept[0]);
    let of_a = store.audit_entries(Some("shop-a"), None, 10).await.unwrap();
    assert_eq!(of_a.len(), 2);
    assert!(of_a
        .iter()
        .all(|e| e.client_id.as_deref() == Some("shop-a")));
    // Pages: the two newest, then the ones before the last seen.
    let first = store.audit_entries(None, None, 2).await.unwrap();
    let second = store
        .audit_entries(None, Some(&first[1].id), 10)
        .await
        .unwrap();
    assert_eq!(first.len() + second.len(), 4);
    assert_eq!(second[0].action, "POST /v1/clients/{id}/stop");

    // A path with control characters cannot forge a line.
    let odd = store
        .append_audit(&entry("POST /v1/x\nPOST /v1/forged", None, 404))
        .await
        .unwrap();
    assert!(!odd.action.contains('\n'), "{odd:?}");
}

async fn the_database_refuses_to_update_or_delete_an_audit_entry(db: &TestDb) {
    let store = &db.open().await;
    store
        .append_audit(&entry("POST /v1/clients", Some("shop-a"), 202))
        .await
        .unwrap();
    assert!(db
        .raw_try_execute("UPDATE audit_log SET status = 200")
        .await
        .is_err());
    assert!(db.raw_try_execute("DELETE FROM audit_log").await.is_err());
    assert_eq!(db.raw_integer("SELECT COUNT(*) FROM audit_log").await, 1);
    let kept = store.audit_entries(None, None, 10).await.unwrap();
    assert_eq!(kept[0].status, 202);
}
