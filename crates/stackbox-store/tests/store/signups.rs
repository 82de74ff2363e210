use std::time::Duration;

use stackbox_core::client::Email;
use stackbox_core::plan::Plan;
use stackbox_store::{SignupId, SignupStatus, StoreError, Timestamp};

use crate::harness::{client_id, on_both_engines, spec, TestDb};

on_both_engines!(
    a_created_signup_reads_back_by_id_and_by_its_checkout_session,
    a_signup_configuration_naming_a_client_id_is_refused,
    a_checkout_session_belongs_to_one_signup_only,
    claiming_a_signup_flips_it_once_and_records_the_subscription,
    concurrent_claims_of_one_signup_have_exactly_one_winner,
    a_provisioned_signup_names_its_client_and_repeating_that_is_harmless,
    abandoned_signups_expire_and_a_late_payment_still_claims_them,
    paid_signups_not_provisioned_are_listed_until_provisioned_or_their_subscription_is_cancelled,
);

fn buyer() -> Email {
    Email::parse("email", "buyer@example.com").unwrap()
}

async fn a_created_signup_reads_back_by_id_and_by_its_checkout_session(db: &TestDb) {
    let store = db.open().await;
    let config = spec("Smith Real Estate", "smith.example.com", "professional");
    let signup = store.create_signup(&buyer(), &config).await.unwrap();
    assert_eq!(SignupId::parse(signup.id.as_str()).unwrap(), signup.id);
    assert!(signup.id.as_str().starts_with("sgn_"), "{}", signup.id);
    assert_eq!(signup.status, SignupStatus::Pending);
    assert_eq!(signup.plan, Plan::Professional);
    assert_eq!(signup.email, buyer());
    assert_eq!(signup.created_at, signup.updated_at);
    assert_eq!(
        (
            &signup.checkout_session_id,
            &signup.customer_id,
            &signup.subscription_id,
            &signup.client_id
        ),
        (&None, &None, &None, &None)
    );
    // The stored configuration is the validated one, still without an id.
    assert!(
        !signup.spec_toml.contains("client_id"),
        "{}",
        signup.spec_toml
    );
    assert_eq!(signup.spec().unwrap(), config);
    assert_eq!(
        store.signup(&signup.id).await.unwrap(),
        Some(signup.clone())
    );

    store
        .set_signup_checkout(&signup.id, "cs_test_a1b2c3")
        .await
        .unwrap();
    let found = store
        .signup_by_checkout_session("cs_test_a1b2c3")
        .await
        .unwrap()
        .expect("found by its session");
    assert_eq!(found.id, signup.id);
    assert_eq!(found.checkout_session_id.as_deref(), Some("cs_test_a1b2c3"));
    assert!(found.updated_at >= signup.updated_at);
    assert_eq!(
        store.signup_by_checkout_session("cs_other").await.unwrap(),
        None
    );
    let unknown = SignupId::parse("sgn_0000000000000000000000000000").unwrap();
    assert_eq!(store.signup(&unknown).await.unwrap(), None);
    assert!(matches!(
        SignupId::parse("sgn_nothex"),
        Err(StoreError::MalformedId { .. })
    ));
}

async fn a_signup_configuration_naming_a_client_id_is_refused(db: &TestDb) {
    let store = db.open().await;
    let mut pinned = spec("Pinned", "pinned.example.com", "starter");
    pinned.client_id = Some(client_id("pinned", 1));
    let error = store.create_signup(&buyer(), &pinned).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::SignupClientIdGiven { client } if *client == client_id("pinned", 1)),
        "{error:?}"
    );
    assert!(error.to_string().contains("remove client_id"), "{error}");
}

async fn a_checkout_session_belongs_to_one_signup_only(db: &TestDb) {
    let store = db.open().await;
    let first = store
        .create_signup(&buyer(), &spec("First", "first.example.com", "starter"))
        .await
        .unwrap();
    let second = store
        .create_signup(&buyer(), &spec("Second", "second.example.com", "starter"))
        .await
        .unwrap();
    store.set_signup_checkout(&first.id, "cs_1").await.unwrap();
    let error = store
        .set_signup_checkout(&second.id, "cs_1")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::CheckoutSessionTaken { session, owner }
            if session == "cs_1" && *owner == first.id),
        "{error:?}"
    );
    // A sign-up may replace its own session (the first one expired unpaid).
    store.set_signup_checkout(&first.id, "cs_2").await.unwrap();
    assert_eq!(
        store.signup_by_checkout_session("cs_1").await.unwrap(),
        None
    );
    store.set_signup_checkout(&second.id, "cs_1").await.unwrap();
    for bad in ["", "cs_1\r\nX: y", " cs_1"] {
        let error = store.set_signup_checkout(&first.id, bad).await.unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::InvalidValue {
                    field: "checkout_session_id",
                    ..
                }
            ),
            "{bad:?}: {error:?}"
        );
    }
}

async fn claiming_a_signup_flips_it_once_and_records_the_subscription(db: &TestDb) {
    let store = db.open().await;
    let signup = store
        .create_signup(&buyer(), &spec("Paid Co", "paid.example.com", "enterprise"))
        .await
        .unwrap();
    store
        .set_signup_checkout(&signup.id, "cs_paid")
        .await
        .unwrap();
    assert!(store
        .claim_signup_for_provisioning(&signup.id, "cus_1", "sub_1")
        .await
        .unwrap());
    assert!(!store
        .claim_signup_for_provisioning(&signup.id, "cus_1", "sub_1")
        .await
        .unwrap());
    let paid = store.signup(&signup.id).await.unwrap().unwrap();
    assert_eq!(paid.status, SignupStatus::Paid);
    assert_eq!(paid.customer_id.as_deref(), Some("cus_1"));
    assert_eq!(paid.subscription_id.as_deref(), Some("sub_1"));
    assert_eq!(paid.checkout_session_id.as_deref(), Some("cs_paid"));
    // A paid sign-up gets no new checkout session.
    let error = store
        .set_signup_checkout(&signup.id, "cs_late")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SignupTransition {
                from: SignupStatus::Paid,
                ..
            }
        ),
        "{error:?}"
    );
    let missing = SignupId::parse("sgn_0000000000000000000000000001").unwrap();
    let error = store
        .claim_signup_for_provisioning(&missing, "cus_1", "sub_1")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::SignupNotFound { signup } if *signup == missing),
        "{error:?}"
    );
}

async fn concurrent_claims_of_one_signup_have_exactly_one_winner(db: &TestDb) {
    let store = db.open().await;
    let signup = store
        .create_signup(&buyer(), &spec("Race Co", "race.example.com", "starter"))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..8 {
        let store = store.clone();
        let id = signup.id.clone();
        tasks.spawn(async move {
            let won = store
                .claim_signup_for_provisioning(&id, &format!("cus_{n}"), &format!("sub_{n}"))
                .await
                .unwrap();
            won.then_some(n)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        winners.extend(joined.unwrap());
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    // The stored subscription is the winner's, not a mix of callers.
    let paid = store.signup(&signup.id).await.unwrap().unwrap();
    let n = winners[0];
    assert_eq!(paid.customer_id, Some(format!("cus_{n}")));
    assert_eq!(paid.subscription_id, Some(format!("sub_{n}")));
}

async fn a_provisioned_signup_names_its_client_and_repeating_that_is_harmless(db: &TestDb) {
    let store = db.open().await;
    let signup = store
        .create_signup(&buyer(), &spec("Prov Co", "prov.example.com", "starter"))
        .await
        .unwrap();
    let client = client_id("provco", 7);
    // Not before it is paid.
    let error = store
        .mark_signup_provisioned(&signup.id, &client)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SignupTransition {
                from: SignupStatus::Pending,
                to: SignupStatus::Provisioned,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(store
        .claim_signup_for_provisioning(&signup.id, "cus_p", "sub_p")
        .await
        .unwrap());
    store
        .mark_signup_provisioned(&signup.id, &client)
        .await
        .unwrap();
    store
        .mark_signup_provisioned(&signup.id, &client)
        .await
        .unwrap();
    let provisioned = store.signup(&signup.id).await.unwrap().unwrap();
    assert_eq!(provisioned.status, SignupStatus::Provisioned);
    assert_eq!(provisioned.client_id, Some(client));
    // But it cannot become another client.
    let error = store
        .mark_signup_provisioned(&signup.id, &client_id("other", 8))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SignupTransition {
                from: SignupStatus::Provisioned,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!store
        .claim_signup_for_provisioning(&signup.id, "cus_p", "sub_p")
        .await
        .unwrap());
}

async fn abandoned_signups_expire_and_a_late_payment_still_claims_them(db: &TestDb) {
    let store = db.open().await;
    let old = store
        .create_signup(&buyer(), &spec("Old", "old.example.com", "starter"))
        .await
        .unwrap();
    let paid = store
        .create_signup(&buyer(), &spec("Paid", "paidold.example.com", "starter"))
        .await
        .unwrap();
    assert!(store
        .claim_signup_for_provisioning(&paid.id, "cus_x", "sub_x")
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = store
        .create_signup(&buyer(), &spec("Fresh", "fresh.example.com", "starter"))
        .await
        .unwrap();
    assert_eq!(store.expire_signups(cutoff).await.unwrap(), 1);
    assert_eq!(store.expire_signups(cutoff).await.unwrap(), 0);
    let status = |id| {
        let store = store.clone();
        async move { store.signup(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(old.id.clone()).await, SignupStatus::Expired);
    assert_eq!(status(paid.id.clone()).await, SignupStatus::Paid);
    assert_eq!(status(fresh.id.clone()).await, SignupStatus::Pending);
    // The buyer paid after all: the money was taken, so the sign-up is served.
    assert!(store
        .claim_signup_for_provisioning(&old.id, "cus_late", "sub_late")
        .await
        .unwrap());
    assert_eq!(status(old.id.clone()).await, SignupStatus::Paid);
}

async fn paid_signups_not_provisioned_are_listed_until_provisioned_or_their_subscription_is_cancelled(
    db: &TestDb,
) {
    let store = db.open().await;
    let mut paid = Vec::new();
    for (n, domain) in ["one.example.com", "two.example.com"].iter().enumerate() {
        let signup = store
            .create_signup(&buyer(), &spec("Paid Co", domain, "starter"))
            .await
            .unwrap();
        assert!(store
            .claim_signup_for_provisioning(&signup.id, "cus_1", &format!("sub_{n}"))
            .await
            .unwrap());
        paid.push(signup.id);
    }
    // A pending one is not paid yet: not listed.
    store
        .create_signup(
            &buyer(),
            &spec("Pending Co", "pending.example.com", "starter"),
        )
        .await
        .unwrap();
    let listed: Vec<SignupId> = store
        .paid_signups_not_provisioned()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, paid);

    store
        .mark_signup_provisioned(&paid[0], &client_id("one", 1))
        .await
        .unwrap();
    // Cancelling another subscription closes nothing; cancelling its own closes it, once.
    assert!(!store.close_unprovisioned_signup("sub_0").await.unwrap());
    assert!(!store.close_unprovisioned_signup("sub_other").await.unwrap());
    assert!(store.close_unprovisioned_signup("sub_1").await.unwrap());
    assert!(!store.close_unprovisioned_signup("sub_1").await.unwrap());
    assert_eq!(
        store.signup(&paid[1]).await.unwrap().unwrap().status,
        SignupStatus::Expired
    );
    assert_eq!(
        store.signup(&paid[0]).await.unwrap().unwrap().status,
        SignupStatus::Provisioned
    );
    assert!(store
        .paid_signups_not_provisioned()
        .await
        .unwrap()
        .is_empty());
}
