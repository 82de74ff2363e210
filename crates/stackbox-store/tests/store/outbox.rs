use std::collections::BTreeSet;
use std::time::Duration;

use stackbox_core::client::{ClientId, Email};
use stackbox_store::{
    ClientState, MailId, MailStatus, MasterKey, NewMail, Store, StoreError, Timestamp,
};

use crate::harness::{add_client, contains, on_both_engines, Engine, TestDb};

on_both_engines!(
    a_queued_mail_is_claimed_with_its_bodies_and_marked_sent,
    the_same_dedupe_key_is_queued_only_once,
    a_failed_delivery_is_retried_at_its_next_attempt_time_and_can_be_given_up,
    a_mail_whose_sender_crashed_is_claimed_again_when_its_lease_runs_out,
    concurrent_claimers_of_one_mail_have_exactly_one_winner,
    concurrent_claimers_share_many_mails_without_overlap,
    the_mail_bodies_are_not_readable_in_the_database,
    a_mail_body_that_does_not_decrypt_is_marked_failed_and_not_sent,
    a_clients_mail_is_listed_without_bodies_and_outlives_the_client,
    malformed_mail_and_claim_parameters_are_refused,
);

const LEASE: Duration = Duration::from_secs(60);

fn mail(key: &str, client: Option<&ClientId>) -> NewMail {
    NewMail {
        dedupe_key: key.to_string(),
        client_id: client.cloned(),
        recipient: Email::parse("recipient", "owner@example.com").unwrap(),
        subject: format!("Subject of {key}"),
        text: format!("Text of {key}: https://example.com/welcome/one-time-{key}"),
        html: format!(
            "<p>HTML of {key}: <a href=\"https://example.com/welcome/one-time-{key}\">link</a></p>"
        ),
    }
}

async fn enqueue(store: &Store, key: &MasterKey, dedupe: &str) -> MailId {
    store
        .enqueue_mail(&mail(dedupe, None), key)
        .await
        .unwrap()
        .expect("queued")
}

async fn a_queued_mail_is_claimed_with_its_bodies_and_marked_sent(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let id = enqueue(&store, &key, "welcome:a").await;
    assert_eq!(MailId::parse(id.as_str()).unwrap(), id);
    let queued = store.mail(&id).await.unwrap().unwrap();
    assert_eq!(queued.status, MailStatus::Pending);
    assert_eq!(queued.attempts, 0);
    assert_eq!(queued.subject, "Subject of welcome:a");
    assert_eq!(queued.recipient.as_str(), "owner@example.com");
    assert_eq!((queued.lease_until, queued.sent_at), (None, None));

    let now = Timestamp::now();
    let claimed = store.claim_due_mail(now, LEASE, 10, &key).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let taken = &claimed[0];
    assert_eq!(taken.id, id);
    assert_eq!(taken.attempts, 1);
    assert_eq!(taken.lease_until, now.plus(LEASE));
    assert_eq!(taken.body.text(), mail("welcome:a", None).text);
    assert_eq!(taken.body.html(), mail("welcome:a", None).html);
    // Leased: nobody else gets it meanwhile.
    assert!(store
        .claim_due_mail(now, LEASE, 10, &key)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.mail(&id).await.unwrap().unwrap().status,
        MailStatus::Sending
    );

    store.mark_mail_sent(&id).await.unwrap();
    // Reporting it again (a retried report) is harmless.
    store.mark_mail_sent(&id).await.unwrap();
    let sent = store.mail(&id).await.unwrap().unwrap();
    assert_eq!(sent.status, MailStatus::Sent);
    assert!(sent.sent_at.is_some());
    assert_eq!(sent.lease_until, None);
    // Never claimed again, even long after.
    let later = now.plus(Duration::from_secs(86_400));
    assert!(store
        .claim_due_mail(later, LEASE, 10, &key)
        .await
        .unwrap()
        .is_empty());
    let counts = store.count_mail_by_status().await.unwrap();
    assert_eq!(counts[&MailStatus::Sent], 1);
    assert_eq!(counts[&MailStatus::Pending], 0);
    assert_eq!(counts.len(), MailStatus::ALL.len());
}

async fn the_same_dedupe_key_is_queued_only_once(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let first = enqueue(&store, &key, "welcome:b").await;
    assert_eq!(
        store
            .enqueue_mail(&mail("welcome:b", None), &key)
            .await
            .unwrap(),
        None
    );
    // Also once it was sent.
    store
        .claim_due_mail(Timestamp::now(), LEASE, 10, &key)
        .await
        .unwrap();
    store.mark_mail_sent(&first).await.unwrap();
    assert_eq!(
        store
            .enqueue_mail(&mail("welcome:b", None), &key)
            .await
            .unwrap(),
        None
    );
    // Concurrent enqueues of one key: one is queued.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let key = key.clone();
        tasks.spawn(async move { store.enqueue_mail(&mail("suspended:c", None), &key).await });
    }
    let mut queued = 0;
    while let Some(joined) = tasks.join_next().await {
        if joined.unwrap().unwrap().is_some() {
            queued += 1;
        }
    }
    assert_eq!(queued, 1);
    let counts = store.count_mail_by_status().await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), 2);
}

async fn a_failed_delivery_is_retried_at_its_next_attempt_time_and_can_be_given_up(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let id = enqueue(&store, &key, "welcome:d").await;
    let now = Timestamp::now();
    store.claim_due_mail(now, LEASE, 10, &key).await.unwrap();
    let retry_at = now.plus(Duration::from_secs(30));
    store
        .mark_mail_retry(&id, retry_at, "connection refused (127.0.0.1:2525)")
        .await
        .unwrap();
    let waiting = store.mail(&id).await.unwrap().unwrap();
    assert_eq!(waiting.status, MailStatus::Pending);
    assert_eq!(waiting.next_attempt_at, retry_at);
    assert_eq!(waiting.lease_until, None);
    assert_eq!(
        waiting.last_error.as_deref(),
        Some("connection refused (127.0.0.1:2525)")
    );
    let just_before = Timestamp::from_unix_millis(retry_at.unix_millis() - 1);
    assert!(store
        .claim_due_mail(just_before, LEASE, 10, &key)
        .await
        .unwrap()
        .is_empty());
    let again = store
        .claim_due_mail(retry_at, LEASE, 10, &key)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    store
        .mark_mail_failed(&id, "550 mailbox unavailable")
        .await
        .unwrap();
    let failed = store.mail(&id).await.unwrap().unwrap();
    assert_eq!(failed.status, MailStatus::Failed);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("550 mailbox unavailable")
    );
    let far = retry_at.plus(Duration::from_secs(86_400));
    assert!(store
        .claim_due_mail(far, LEASE, 10, &key)
        .await
        .unwrap()
        .is_empty());
    // A failed mail is not reported sent or retried by mistake.
    for attempt in [
        store.mark_mail_sent(&id).await,
        store.mark_mail_retry(&id, far, "late").await,
    ] {
        let error = attempt.unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::MailTransition {
                    from: MailStatus::Failed,
                    ..
                }
            ),
            "{error:?}"
        );
    }
    // The operator fixed the cause: queued again, due now.
    store.requeue_mail(&id).await.unwrap();
    let requeued = store
        .claim_due_mail(Timestamp::now(), LEASE, 10, &key)
        .await
        .unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].attempts, 3);
    let missing = MailId::parse("mail_0000000000000000000000000000").unwrap();
    assert!(matches!(
        store.mark_mail_sent(&missing).await,
        Err(StoreError::MailNotFound { .. })
    ));
}

async fn a_mail_whose_sender_crashed_is_claimed_again_when_its_lease_runs_out(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let id = enqueue(&store, &key, "welcome:e").await;
    let now = Timestamp::now();
    let lease = Duration::from_secs(30);
    let first = store.claim_due_mail(now, lease, 10, &key).await.unwrap();
    assert_eq!(first.len(), 1);
    // The sender dies without a report. Within the lease nobody takes the mail over ...
    let within = now.plus(Duration::from_millis(29_999));
    assert!(store
        .claim_due_mail(within, lease, 10, &key)
        .await
        .unwrap()
        .is_empty());
    // ... and once the lease has run out the next sender does.
    let expired = now.plus(lease);
    let second = store
        .claim_due_mail(expired, lease, 10, &key)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, id);
    assert_eq!(second[0].attempts, 2);
    assert_eq!(second[0].lease_until, expired.plus(lease));
    store.mark_mail_sent(&id).await.unwrap();
}

async fn concurrent_claimers_of_one_mail_have_exactly_one_winner(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let id = enqueue(&store, &key, "welcome:f").await;
    let now = Timestamp::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let key = key.clone();
        tasks.spawn(async move { store.claim_due_mail(now, LEASE, 10, &key).await });
    }
    let mut claimed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        claimed.extend(joined.unwrap().unwrap().into_iter().map(|mail| mail.id));
    }
    assert_eq!(claimed, vec![id.clone()]);
    assert_eq!(store.mail(&id).await.unwrap().unwrap().attempts, 1);
}

async fn concurrent_claimers_share_many_mails_without_overlap(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let mut queued = BTreeSet::new();
    for n in 0..24 {
        queued.insert(enqueue(&store, &key, &format!("bulk:{n}")).await);
    }
    let now = Timestamp::now();
    let mut claimed = Vec::new();
    // Rounds of 8 concurrent claimers taking 2 each, until nothing is left.
    for _ in 0..5 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            let key = key.clone();
            tasks.spawn(async move { store.claim_due_mail(now, LEASE, 2, &key).await });
        }
        while let Some(joined) = tasks.join_next().await {
            let batch = joined.unwrap().unwrap();
            assert!(batch.len() <= 2);
            claimed.extend(batch.into_iter().map(|mail| mail.id));
        }
    }
    let distinct: BTreeSet<_> = claimed.iter().cloned().collect();
    assert_eq!(distinct.len(), claimed.len(), "a mail was claimed twice");
    assert_eq!(distinct, queued);
    let counts = store.count_mail_by_status().await.unwrap();
    assert_eq!(counts[&MailStatus::Sending], 24);
}

async fn the_mail_bodies_are_not_readable_in_the_database(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let secret_link = "https://example.com/welcome/Zm9vYmFyLXNlY3JldC1saW5rLXRva2Vu";
    let mut welcome = mail("welcome:g", None);
    welcome.text = format!("Your password page: {secret_link}");
    welcome.html = format!("<a href=\"{secret_link}\">Your password page</a>");
    store.enqueue_mail(&welcome, &key).await.unwrap().unwrap();
    let blobs = db.raw_bytes("SELECT body_sealed FROM outbox").await;
    assert_eq!(blobs.len(), 1);
    let mut haystacks = blobs;
    if db.engine == Engine::Sqlite {
        haystacks.push(db.sqlite_file_bytes());
        store.close().await;
        haystacks.push(db.sqlite_file_bytes());
        // The control: the file is read correctly and keeps plain columns as they are.
        assert!(contains(haystacks.last().unwrap(), b"Subject of welcome:g"));
    }
    for haystack in &haystacks {
        assert!(!contains(haystack, secret_link.as_bytes()));
        assert!(!contains(haystack, b"Zm9vYmFyLXNlY3JldC1saW5rLXRva2Vu"));
        assert!(!contains(haystack, b"Your password page"));
    }
}

async fn a_mail_body_that_does_not_decrypt_is_marked_failed_and_not_sent(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let good = enqueue(&store, &key, "welcome:h").await;
    let moved = enqueue(&store, &key, "welcome:i").await;
    // Another mail's sealed bodies copied over this one's: the mail id in the associated
    // data tells them apart.
    db.raw_execute(&format!(
        "UPDATE outbox SET body_sealed = \
         (SELECT body_sealed FROM outbox WHERE id = '{good}') WHERE id = '{moved}'"
    ))
    .await;
    let claimed = store
        .claim_due_mail(Timestamp::now(), LEASE, 10, &key)
        .await
        .unwrap();
    let ids: Vec<_> = claimed.iter().map(|mail| mail.id.clone()).collect();
    assert_eq!(ids, vec![good.clone()]);
    assert_eq!(claimed[0].body.text(), mail("welcome:h", None).text);
    let failed = store.mail(&moved).await.unwrap().unwrap();
    assert_eq!(failed.status, MailStatus::Failed);
    let reason = failed.last_error.unwrap();
    assert!(reason.contains("cannot be decrypted"), "{reason}");
    // The same with another master key.
    let other = enqueue(&store, &key, "welcome:j").await;
    let wrong = MasterKey::generate().unwrap();
    assert!(store
        .claim_due_mail(Timestamp::now(), LEASE, 10, &wrong)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.mail(&other).await.unwrap().unwrap().status,
        MailStatus::Failed
    );
}

async fn a_clients_mail_is_listed_without_bodies_and_outlives_the_client(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let other = add_client(&store, 2, "starter", ClientState::Running).await;
    let welcome = store
        .enqueue_mail(&mail("welcome:k", Some(&client.id)), &key)
        .await
        .unwrap()
        .unwrap();
    let goodbye = store
        .enqueue_mail(&mail("cancelled:k", Some(&client.id)), &key)
        .await
        .unwrap()
        .unwrap();
    store
        .enqueue_mail(&mail("welcome:l", Some(&other.id)), &key)
        .await
        .unwrap()
        .unwrap();
    let listed = store.mails_of_client(&client.id).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|mail| mail.id.clone()).collect();
    assert_eq!(ids, vec![welcome.clone(), goodbye.clone()]);
    assert!(listed
        .iter()
        .all(|mail| mail.client_id.as_ref() == Some(&client.id)));
    // Neither listings nor claimed mails show the bodies in their Debug output.
    let claimed = store
        .claim_due_mail(Timestamp::now(), LEASE, 10, &key)
        .await
        .unwrap();
    let shown = format!("{listed:?} {claimed:?} {:?}", mail("welcome:k", None));
    assert!(!shown.contains("one-time-"), "{shown}");
    assert!(shown.contains("Subject of welcome:k"), "{shown}");
    // The goodbye mail is still sent after the client is gone.
    store.delete_client(&client.id).await.unwrap();
    assert_eq!(store.mails_of_client(&client.id).await.unwrap().len(), 2);
    store.mark_mail_sent(&goodbye).await.unwrap();
}

async fn malformed_mail_and_claim_parameters_are_refused(db: &TestDb) {
    let store = db.open().await;
    let key = MasterKey::generate().unwrap();
    let mut injected = mail("welcome:m", None);
    injected.subject = "Welcome\r\nBcc: everyone@example.com".to_string();
    let error = store.enqueue_mail(&injected, &key).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InvalidValue {
                field: "subject",
                ..
            }
        ),
        "{error:?}"
    );
    let error = store.enqueue_mail(&mail("", None), &key).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InvalidValue {
                field: "dedupe_key",
                ..
            }
        ),
        "{error:?}"
    );
    let now = Timestamp::now();
    assert!(matches!(
        store.claim_due_mail(now, Duration::ZERO, 10, &key).await,
        Err(StoreError::InvalidValue { field: "lease", .. })
    ));
    assert!(matches!(
        store.claim_due_mail(now, LEASE, 0, &key).await,
        Err(StoreError::InvalidLimit { limit: 0 })
    ));
    assert_eq!(
        store
            .count_mail_by_status()
            .await
            .unwrap()
            .values()
            .sum::<u64>(),
        0
    );
}
