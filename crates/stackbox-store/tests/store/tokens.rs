use sha2::{Digest, Sha256};
use stackbox_store::{ClientState, StoreError, TokenId, TokenInfo, TokenRole, TOKEN_PREFIX};

use crate::harness::{add_client, client_id, contains, on_both_engines, Engine, TestDb};

on_both_engines!(
    a_created_token_verifies_with_its_role_and_client,
    a_wrong_altered_or_malformed_token_does_not_verify,
    the_store_keeps_only_a_hash_of_each_token,
    a_revoked_token_stops_verifying,
    a_token_scope_must_match_its_role_and_an_existing_client,
    verifying_a_token_records_when_it_was_last_used,
);

async fn a_created_token_verifies_with_its_role_and_client(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let operator = store.create_token(TokenRole::Operator, None).await.unwrap();
    let reader = store
        .create_token(TokenRole::Client, Some(&client.id))
        .await
        .unwrap();
    for token in [&operator, &reader] {
        let text = token.token.expose();
        assert!(text.starts_with(TOKEN_PREFIX), "{text}");
        assert_eq!(text.len(), TOKEN_PREFIX.len() + 43);
        assert!(!format!("{token:?}").contains(text));
        assert_eq!(
            store.verify_token(text).await.unwrap(),
            Some(token.info.clone())
        );
    }
    assert_eq!(
        reader.info,
        TokenInfo {
            id: reader.info.id.clone(),
            role: TokenRole::Client,
            client_id: Some(client.id.clone()),
        }
    );
    assert_eq!(operator.info.role, TokenRole::Operator);
    assert_eq!(operator.info.client_id, None);
    assert_ne!(operator.token.expose(), reader.token.expose());
    assert_eq!(
        TokenId::parse(operator.info.id.as_str()).unwrap(),
        operator.info.id
    );
}

async fn a_wrong_altered_or_malformed_token_does_not_verify(db: &TestDb) {
    let store = db.open().await;
    let token = store.create_token(TokenRole::Operator, None).await.unwrap();
    let text = token.token.expose();
    let mut altered = text.to_string().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let other = format!("{TOKEN_PREFIX}{}", "A".repeat(43));
    for wrong in [
        altered.as_str(),
        other.as_str(),
        "",
        TOKEN_PREFIX,
        &format!("Bearer {text}"),
        &format!("{text} "),
        &text[..text.len() - 1],
        &text.to_uppercase(),
        "sbx_' OR '1'='1",
    ] {
        assert_eq!(store.verify_token(wrong).await.unwrap(), None, "{wrong:?}");
    }
    assert!(store.verify_token(text).await.unwrap().is_some());
}

async fn the_store_keeps_only_a_hash_of_each_token(db: &TestDb) {
    let store = db.open().await;
    let token = store.create_token(TokenRole::Operator, None).await.unwrap();
    let text = token.token.expose();
    let hashes = db.raw_bytes("SELECT hash FROM tokens").await;
    assert_eq!(hashes, vec![Sha256::digest(text.as_bytes()).to_vec()]);
    assert!(!contains(&hashes[0], text.as_bytes()));
    let columns = db
        .raw_text("SELECT id || ' ' || role || ' ' || CAST(created_at AS TEXT) FROM tokens")
        .await;
    assert!(!columns[0].contains(&text[TOKEN_PREFIX.len()..]));
    if db.engine == Engine::Sqlite {
        store.close().await;
        let file = db.sqlite_file_bytes();
        assert!(contains(&file, token.info.id.as_str().as_bytes()));
        assert!(!contains(&file, text.as_bytes()));
    }
}

async fn a_revoked_token_stops_verifying(db: &TestDb) {
    let store = db.open().await;
    let kept = store.create_token(TokenRole::Operator, None).await.unwrap();
    let revoked = store.create_token(TokenRole::Operator, None).await.unwrap();
    store.revoke_token(&revoked.info.id).await.unwrap();
    assert_eq!(
        store.verify_token(revoked.token.expose()).await.unwrap(),
        None
    );
    assert!(store
        .verify_token(kept.token.expose())
        .await
        .unwrap()
        .is_some());
    let listed: Vec<_> = store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![kept.info.id.clone()]);
    let error = store.revoke_token(&revoked.info.id).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::TokenNotFound { token } if *token == revoked.info.id),
        "{error:?}"
    );
}

async fn a_token_scope_must_match_its_role_and_an_existing_client(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let error = store
        .create_token(TokenRole::Operator, Some(&client.id))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::TokenScope {
                role: TokenRole::Operator
            }
        ),
        "{error:?}"
    );
    let error = store
        .create_token(TokenRole::Client, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::TokenScope {
                role: TokenRole::Client
            }
        ),
        "{error:?}"
    );
    let missing = client_id("missing", 5);
    let error = store
        .create_token(TokenRole::Client, Some(&missing))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientNotFound { client } if *client == missing),
        "{error:?}"
    );
    assert!(store.tokens().await.unwrap().is_empty());
}

async fn verifying_a_token_records_when_it_was_last_used(db: &TestDb) {
    let store = db.open().await;
    let token = store.create_token(TokenRole::Operator, None).await.unwrap();
    let before = store.tokens().await.unwrap();
    assert_eq!(before[0].last_used_at, None);
    store.verify_token(token.token.expose()).await.unwrap();
    let after = store.tokens().await.unwrap();
    let used = after[0].last_used_at.expect("the use is recorded");
    assert!(used >= after[0].created_at);
    // Within the minute, a second use does not write again.
    store.verify_token(token.token.expose()).await.unwrap();
    assert_eq!(store.tokens().await.unwrap()[0].last_used_at, Some(used));
}
