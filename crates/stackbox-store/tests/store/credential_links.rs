use std::time::Duration;

use sha2::{Digest, Sha256};
use stackbox_core::plan::Plan;
use stackbox_store::{Billing, ClientState, StoreError, Timestamp};

use crate::harness::{add_client, client_id, contains, on_both_engines, Engine, TestDb};

on_both_engines!(
    a_credential_link_names_its_client_until_it_is_used_once,
    a_credential_link_stops_working_when_it_expires,
    the_store_keeps_only_a_hash_of_each_credential_link,
    concurrent_uses_of_one_credential_link_have_exactly_one_winner,
    wrong_malformed_and_orphan_credential_links_are_refused,
    deleting_a_client_removes_its_billing_and_credential_links,
    revoking_a_clients_credential_links_leaves_other_clients_links,
);

async fn revoking_a_clients_credential_links_leaves_other_clients_links(db: &TestDb) {
    let store = db.open().await;
    let first = add_client(&store, 1, "starter", ClientState::Running).await;
    let second = add_client(&store, 2, "starter", ClientState::Running).await;
    let old = store.create_credential_link(&first.id, TTL).await.unwrap();
    let older = store.create_credential_link(&first.id, TTL).await.unwrap();
    let other = store.create_credential_link(&second.id, TTL).await.unwrap();
    assert_eq!(store.revoke_credential_links(&first.id).await.unwrap(), 2);
    let now = Timestamp::now();
    for token in [old.expose(), older.expose()] {
        assert_eq!(
            store.consume_credential_link(token, now).await.unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .consume_credential_link(other.expose(), now)
            .await
            .unwrap(),
        Some(second.id.clone())
    );
    assert_eq!(store.revoke_credential_links(&first.id).await.unwrap(), 0);
}

const TTL: Duration = Duration::from_secs(7 * 86_400);

async fn a_credential_link_names_its_client_until_it_is_used_once(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let link = store.create_credential_link(&client.id, TTL).await.unwrap();
    let token = link.expose();
    assert_eq!(token.len(), 43);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(!format!("{link:?}").contains(token));
    let now = Timestamp::now();
    // Looking (the confirmation page) does not use it up.
    for _ in 0..2 {
        assert_eq!(
            store.credential_link_client(token, now).await.unwrap(),
            Some(client.id.clone())
        );
    }
    assert_eq!(
        store.consume_credential_link(token, now).await.unwrap(),
        Some(client.id.clone())
    );
    assert_eq!(
        store.consume_credential_link(token, now).await.unwrap(),
        None
    );
    assert_eq!(
        store.credential_link_client(token, now).await.unwrap(),
        None
    );
    // Links are independent: a second one for the same client still works.
    let second = store.create_credential_link(&client.id, TTL).await.unwrap();
    assert_ne!(second.expose(), token);
    assert_eq!(
        store
            .consume_credential_link(second.expose(), now)
            .await
            .unwrap(),
        Some(client.id.clone())
    );
}

async fn a_credential_link_stops_working_when_it_expires(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let before = Timestamp::now();
    let link = store
        .create_credential_link(&client.id, Duration::from_secs(3600))
        .await
        .unwrap();
    let after = Timestamp::now();
    let token = link.expose();
    // Still valid just before the hour is up, whenever within [before, after] it was made.
    let valid = before.plus(Duration::from_millis(3_599_999));
    assert_eq!(
        store.credential_link_client(token, valid).await.unwrap(),
        Some(client.id.clone())
    );
    let expired = after.plus(Duration::from_secs(3600));
    assert_eq!(
        store.credential_link_client(token, expired).await.unwrap(),
        None
    );
    assert_eq!(
        store.consume_credential_link(token, expired).await.unwrap(),
        None
    );
    assert_eq!(
        store.delete_expired_credential_links(valid).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_expired_credential_links(expired)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.credential_link_client(token, valid).await.unwrap(),
        None
    );
    assert!(matches!(
        store
            .create_credential_link(&client.id, Duration::ZERO)
            .await,
        Err(StoreError::InvalidValue { field: "ttl", .. })
    ));
}

async fn the_store_keeps_only_a_hash_of_each_credential_link(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let link = store.create_credential_link(&client.id, TTL).await.unwrap();
    let token = link.expose();
    let hashes = db
        .raw_bytes("SELECT token_hash FROM credential_links")
        .await;
    assert_eq!(hashes, vec![Sha256::digest(token.as_bytes()).to_vec()]);
    if db.engine == Engine::Sqlite {
        store.close().await;
        let file = db.sqlite_file_bytes();
        // The control: the client id is in the same row, in plain text.
        assert!(contains(&file, client.id.as_str().as_bytes()));
        assert!(!contains(&file, token.as_bytes()));
    }
}

async fn concurrent_uses_of_one_credential_link_have_exactly_one_winner(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let link = store.create_credential_link(&client.id, TTL).await.unwrap();
    let now = Timestamp::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let token = link.expose().to_string();
        tasks.spawn(async move { store.consume_credential_link(&token, now).await });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        winners.extend(joined.unwrap().unwrap());
    }
    assert_eq!(winners, vec![client.id.clone()]);
}

async fn wrong_malformed_and_orphan_credential_links_are_refused(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let link = store.create_credential_link(&client.id, TTL).await.unwrap();
    let token = link.expose();
    let mut altered = token.to_string().into_bytes();
    altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let now = Timestamp::now();
    for wrong in [
        altered.as_str(),
        "",
        &token[..42],
        &format!("{token}="),
        &format!("{token}/"),
        "' OR '1'='1' --xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        assert_eq!(
            store.consume_credential_link(wrong, now).await.unwrap(),
            None,
            "{wrong:?}"
        );
        assert_eq!(
            store.credential_link_client(wrong, now).await.unwrap(),
            None
        );
    }
    assert!(store
        .credential_link_client(token, now)
        .await
        .unwrap()
        .is_some());
    let missing = client_id("missing", 9);
    let error = store
        .create_credential_link(&missing, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientNotFound { client } if *client == missing),
        "{error:?}"
    );
}

async fn deleting_a_client_removes_its_billing_and_credential_links(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let kept = add_client(&store, 2, "starter", ClientState::Running).await;
    for (id, subscription) in [(&client.id, "sub_1"), (&kept.id, "sub_2")] {
        store
            .upsert_billing(&Billing::active(
                id.clone(),
                "cus_A",
                subscription,
                Plan::Starter,
            ))
            .await
            .unwrap();
    }
    let link = store.create_credential_link(&client.id, TTL).await.unwrap();
    let kept_link = store.create_credential_link(&kept.id, TTL).await.unwrap();
    store.delete_client(&client.id).await.unwrap();
    let now = Timestamp::now();
    assert_eq!(store.billing(&client.id).await.unwrap(), None);
    assert_eq!(store.billing_by_subscription("sub_1").await.unwrap(), None);
    assert_eq!(
        store
            .credential_link_client(link.expose(), now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.raw_integer("SELECT COUNT(*) FROM credential_links")
            .await,
        1
    );
    // The other client's rows are untouched.
    assert!(store.billing(&kept.id).await.unwrap().is_some());
    assert_eq!(
        store
            .credential_link_client(kept_link.expose(), now)
            .await
            .unwrap(),
        Some(kept.id.clone())
    );
}
