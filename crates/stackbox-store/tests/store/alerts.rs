use std::time::Duration;

use stackbox_core::alerts::{AlertKind, OpenAlert};
use stackbox_store::{BackupReason, ClientState, Timestamp};

use crate::harness::{add_client, client_id, on_both_engines, TestDb};

on_both_engines!(
    one_open_alert_per_key_and_it_moves_only_pending_firing_resolved,
    a_pending_alert_is_dropped_without_history_and_a_firing_one_is_not,
    a_resolved_alert_is_history_and_the_same_condition_opens_a_new_occurrence,
    alerts_are_listed_newest_first_by_client_and_open_only,
    a_webhook_is_queued_once_per_dedupe_key_and_retried_until_sent_or_failed,
    the_clients_whose_latest_finished_backup_failed_are_found_in_one_query,
);

fn alert(key: &str, client: Option<&str>, since: i64) -> OpenAlert {
    OpenAlert {
        key: key.to_string(),
        kind: AlertKind::MemoryNearLimit,
        client: client.map(str::to_string),
        summary: "website at 93% of 64.0 MiB".into(),
        since,
        fired_at: None,
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(seconds * 1000)
}

async fn one_open_alert_per_key_and_it_moves_only_pending_firing_resolved(db: &TestDb) {
    let store = &db.open().await;
    let first = alert("memory-near-limit:shop-1:website", Some("shop-1"), 1_000);
    assert!(store.open_alert(&first).await.unwrap());
    // The same condition again, even later: the database keeps the first.
    assert!(!store
        .open_alert(&alert(&first.key, Some("shop-1"), 1_010))
        .await
        .unwrap());
    let open = store.open_alerts().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].as_open(), first);

    // Resolving a pending alert is refused: it never fired.
    assert!(store
        .resolve_alert(&first.key, at(1_020))
        .await
        .unwrap()
        .is_none());
    let fired = store
        .fire_alert(&first.key, at(1_120))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fired.fired_at, Some(at(1_120)));
    // Firing twice changes nothing (a second evaluator lost the race).
    assert!(store
        .fire_alert(&first.key, at(1_130))
        .await
        .unwrap()
        .is_none());
    let resolved = store
        .resolve_alert(&first.key, at(1_200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.resolved_at, Some(at(1_200)));
    assert_eq!(resolved.fired_at, Some(at(1_120)));
    assert!(store
        .resolve_alert(&first.key, at(1_210))
        .await
        .unwrap()
        .is_none());
    assert!(store.open_alerts().await.unwrap().is_empty());
}

async fn a_pending_alert_is_dropped_without_history_and_a_firing_one_is_not(db: &TestDb) {
    let store = &db.open().await;
    let spike = alert("disk-near-full", None, 50);
    assert!(store.open_alert(&spike).await.unwrap());
    assert!(store.drop_pending_alert(&spike.key).await.unwrap());
    assert!(store.alerts(false, None, 10).await.unwrap().is_empty());

    let lasting = alert("disk-near-full", None, 60);
    assert!(store.open_alert(&lasting).await.unwrap());
    store
        .fire_alert(&lasting.key, at(200))
        .await
        .unwrap()
        .unwrap();
    assert!(!store.drop_pending_alert(&lasting.key).await.unwrap());
    assert_eq!(store.open_alerts().await.unwrap().len(), 1);
}

async fn a_resolved_alert_is_history_and_the_same_condition_opens_a_new_occurrence(db: &TestDb) {
    let store = &db.open().await;
    let key = "backup-failed:shop-2";
    assert!(store
        .open_alert(&alert(key, Some("shop-2"), 100))
        .await
        .unwrap());
    store.fire_alert(key, at(100)).await.unwrap().unwrap();
    store.resolve_alert(key, at(300)).await.unwrap().unwrap();
    assert!(store
        .open_alert(&alert(key, Some("shop-2"), 900))
        .await
        .unwrap());
    let all = store.alerts(false, None, 10).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].since, at(900), "newest first");
    assert!(all[0].resolved_at.is_none());
    assert_eq!(all[1].resolved_at, Some(at(300)));
}

async fn alerts_are_listed_newest_first_by_client_and_open_only(db: &TestDb) {
    let store = &db.open().await;
    for (n, client) in ["shop-a", "shop-b", "shop-a"].iter().enumerate() {
        let key = format!("client-degraded:{client}:{n}");
        assert!(store
            .open_alert(&alert(&key, Some(client), 100 + n as i64))
            .await
            .unwrap());
    }
    store
        .fire_alert("client-degraded:shop-a:0", at(150))
        .await
        .unwrap()
        .unwrap();
    store
        .resolve_alert("client-degraded:shop-a:0", at(160))
        .await
        .unwrap()
        .unwrap();
    let of_a = store.alerts(false, Some("shop-a"), 10).await.unwrap();
    let keys: Vec<_> = of_a.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        ["client-degraded:shop-a:2", "client-degraded:shop-a:0"]
    );
    let open_of_a = store.alerts(true, Some("shop-a"), 10).await.unwrap();
    assert_eq!(open_of_a.len(), 1);
    assert_eq!(store.alerts(true, None, 10).await.unwrap().len(), 2);
    assert_eq!(store.alerts(false, None, 1).await.unwrap().len(), 1);
    // A summary with control characters is kept on one line.
    let mut odd = alert("mail-failing", None, 500);
    odd.summary = "3 mails\nfailed\u{7}".into();
    assert!(store.open_alert(&odd).await.unwrap());
    let kept = store.alerts(true, None, 1).await.unwrap();
    assert!(!kept[0].summary.chars().any(char::is_control), "{kept:?}");
}

async fn a_webhook_is_queued_once_per_dedupe_key_and_retried_until_sent_or_failed(db: &TestDb) {
    let store = &db.open().await;
    let body = r#"{"event":"alert.firing"}"#;
    assert!(store
        .enqueue_webhook("alert:firing:k:1", body)
        .await
        .unwrap());
    assert!(!store
        .enqueue_webhook("alert:firing:k:1", body)
        .await
        .unwrap());
    assert!(store
        .enqueue_webhook("alert:firing:j:1", body)
        .await
        .unwrap());
    let now = Timestamp::now();
    let due = store.due_webhooks(now, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].dedupe_key, "alert:firing:k:1", "oldest first");
    assert_eq!(due[0].body, body);
    assert_eq!(due[0].attempts, 0);

    // A failed attempt is due again later, with the attempt counted.
    let later = Timestamp::from_unix_millis(now.unix_millis() + 60_000);
    store
        .mark_webhook_retry(&due[0].id, later, "connection refused")
        .await
        .unwrap();
    let due_now = store.due_webhooks(now, 10).await.unwrap();
    assert_eq!(due_now.len(), 1);
    assert_eq!(due_now[0].id, due[1].id);
    let due_later = store.due_webhooks(later, 10).await.unwrap();
    let retried = due_later.iter().find(|w| w.id == due[0].id).unwrap();
    assert_eq!(retried.attempts, 1);

    store.mark_webhook_sent(&due[0].id).await.unwrap();
    store
        .mark_webhook_failed(&due[1].id, "HTTP 410 Gone")
        .await
        .unwrap();
    assert!(store.due_webhooks(later, 10).await.unwrap().is_empty());
    let counts = store.count_webhooks_by_status().await.unwrap();
    assert_eq!(counts.get("sent"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("failed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("pending").copied().unwrap_or(0), 0, "{counts:?}");
}

async fn the_clients_whose_latest_finished_backup_failed_are_found_in_one_query(db: &TestDb) {
    let store = &db.open().await;
    for n in 0..3 {
        add_client(store, n, "starter", ClientState::Running).await;
    }
    let (zero, one, two) = (
        client_id("client", 0),
        client_id("client", 1),
        client_id("client", 2),
    );
    let step = || tokio::time::sleep(Duration::from_millis(3));
    // 0: failed, then succeeded: not failing. 1: succeeded, then failed: failing.
    // 2: failed, then one still running: the running one does not hide the failure.
    let a = store
        .start_backup(&zero, None, BackupReason::Scheduled)
        .await
        .unwrap();
    store.fail_backup(&a.id, "restic: locked").await.unwrap();
    step().await;
    let b = store
        .start_backup(&zero, None, BackupReason::Scheduled)
        .await
        .unwrap();
    let manifest = serde_json::json!({});
    store
        .finish_backup(
            &b.id,
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            &manifest,
            1,
            1,
            1,
        )
        .await
        .unwrap();
    let c = store
        .start_backup(&one, None, BackupReason::Scheduled)
        .await
        .unwrap();
    store
        .finish_backup(
            &c.id,
            "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            &manifest,
            1,
            1,
            1,
        )
        .await
        .unwrap();
    step().await;
    let d = store
        .start_backup(&one, None, BackupReason::Scheduled)
        .await
        .unwrap();
    store.fail_backup(&d.id, "disk full").await.unwrap();
    let e = store
        .start_backup(&two, None, BackupReason::Manual)
        .await
        .unwrap();
    store.fail_backup(&e.id, "dump failed").await.unwrap();
    step().await;
    store
        .start_backup(&two, None, BackupReason::Scheduled)
        .await
        .unwrap();

    let failures = store.latest_backup_failures().await.unwrap();
    let seen: Vec<_> = failures
        .iter()
        .map(|(client, _, error)| (client.clone(), error.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (one, Some("disk full".to_string())),
            (two, Some("dump failed".to_string()))
        ]
    );
}
