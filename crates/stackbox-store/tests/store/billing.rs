use std::time::Duration;

use stackbox_core::plan::Plan;
use stackbox_store::{Billing, BillingChange, BillingStatus, ClientState, StoreError, Timestamp};

use crate::harness::{add_client, client_id, on_both_engines, TestDb};

on_both_engines!(
    a_stripe_event_is_recorded_once_and_a_redelivery_is_recognised,
    concurrent_deliveries_of_one_stripe_event_record_it_exactly_once,
    billing_is_stored_read_back_by_client_subscription_and_customer_and_replaced,
    billing_needs_an_existing_client_and_a_subscription_of_its_own,
    a_failed_payment_makes_a_client_past_due_until_its_deadline_and_a_payment_clears_it,
    a_past_due_client_is_suspended_once_and_becomes_active_when_it_pays,
    a_cancelled_subscription_is_due_for_destruction_after_its_retention,
    changing_the_billing_of_a_client_without_billing_is_refused,
);

async fn a_stripe_event_is_recorded_once_and_a_redelivery_is_recognised(db: &TestDb) {
    let store = db.open().await;
    assert!(!store.stripe_event_seen("evt_1").await.unwrap());
    assert!(store
        .record_stripe_event("evt_1", "invoice.paid")
        .await
        .unwrap());
    assert!(!store
        .record_stripe_event("evt_1", "invoice.paid")
        .await
        .unwrap());
    assert!(store.stripe_event_seen("evt_1").await.unwrap());
    assert!(!store.stripe_event_seen("evt_2").await.unwrap());
    let error = store
        .record_stripe_event("", "invoice.paid")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InvalidValue {
                field: "event_id",
                ..
            }
        ),
        "{error:?}"
    );
    // Old events can be forgotten; newer ones stay.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store
        .record_stripe_event("evt_2", "invoice.payment_failed")
        .await
        .unwrap());
    assert_eq!(store.forget_stripe_events(cutoff).await.unwrap(), 1);
    assert!(!store.stripe_event_seen("evt_1").await.unwrap());
    assert!(store.stripe_event_seen("evt_2").await.unwrap());
}

async fn concurrent_deliveries_of_one_stripe_event_record_it_exactly_once(db: &TestDb) {
    let store = db.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .record_stripe_event("evt_race", "checkout.session.completed")
                .await
        });
    }
    let mut recorded = 0;
    while let Some(joined) = tasks.join_next().await {
        // A duplicate is `false`, never an error, even when the inserts race.
        if joined.unwrap().unwrap() {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
}

async fn billing_is_stored_read_back_by_client_subscription_and_customer_and_replaced(db: &TestDb) {
    let store = db.open().await;
    let first = add_client(&store, 1, "starter", ClientState::Running).await;
    let second = add_client(&store, 2, "enterprise", ClientState::Running).await;
    let before = Timestamp::now();
    let stored = store
        .upsert_billing(&Billing::active(
            first.id.clone(),
            "cus_A",
            "sub_1",
            Plan::Starter,
        ))
        .await
        .unwrap();
    assert!(stored.updated_at >= before);
    assert_eq!(stored.status, BillingStatus::Active);
    store
        .upsert_billing(&Billing::active(
            second.id.clone(),
            "cus_A",
            "sub_2",
            Plan::Enterprise,
        ))
        .await
        .unwrap();
    assert_eq!(
        store.billing(&first.id).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(
        store.billing_by_subscription("sub_1").await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(store.billing_by_subscription("sub_9").await.unwrap(), None);
    let of_customer: Vec<_> = store
        .billing_by_customer("cus_A")
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.subscription_id)
        .collect();
    assert_eq!(of_customer, vec!["sub_1", "sub_2"]);
    assert!(store.billing_by_customer("cus_B").await.unwrap().is_empty());
    // Upserting again replaces every field (a new subscription on another plan).
    let mut replaced = Billing::active(first.id.clone(), "cus_A", "sub_3", Plan::Professional);
    replaced.status = BillingStatus::PastDue;
    replaced.suspend_at = Some(Timestamp::from_unix_millis(42));
    let replaced = store.upsert_billing(&replaced).await.unwrap();
    let read = store.billing(&first.id).await.unwrap().unwrap();
    assert_eq!(read, replaced);
    assert_eq!(read.plan, Plan::Professional);
    assert_eq!(read.suspend_at, Some(Timestamp::from_unix_millis(42)));
    assert_eq!(store.billing_by_subscription("sub_1").await.unwrap(), None);
}

async fn billing_needs_an_existing_client_and_a_subscription_of_its_own(db: &TestDb) {
    let store = db.open().await;
    let missing = client_id("missing", 1);
    let error = store
        .upsert_billing(&Billing::active(
            missing.clone(),
            "cus_A",
            "sub_1",
            Plan::Starter,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::ClientNotFound { client } if *client == missing),
        "{error:?}"
    );
    let owner = add_client(&store, 1, "starter", ClientState::Running).await;
    let other = add_client(&store, 2, "starter", ClientState::Running).await;
    store
        .upsert_billing(&Billing::active(
            owner.id.clone(),
            "cus_A",
            "sub_1",
            Plan::Starter,
        ))
        .await
        .unwrap();
    let error = store
        .upsert_billing(&Billing::active(
            other.id.clone(),
            "cus_B",
            "sub_1",
            Plan::Starter,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::SubscriptionTaken { subscription, owner: o }
            if subscription == "sub_1" && *o == owner.id),
        "{error:?}"
    );
    assert_eq!(store.billing(&other.id).await.unwrap(), None);
}

async fn a_failed_payment_makes_a_client_past_due_until_its_deadline_and_a_payment_clears_it(
    db: &TestDb,
) {
    let store = db.open().await;
    let client = add_client(&store, 1, "professional", ClientState::Running).await;
    store
        .upsert_billing(&Billing::active(
            client.id.clone(),
            "cus_A",
            "sub_1",
            Plan::Professional,
        ))
        .await
        .unwrap();
    let deadline = Timestamp::now().plus(Duration::from_secs(3 * 86_400));
    let failed = store
        .set_billing_status(
            &client.id,
            BillingChange::PaymentFailed {
                suspend_at: deadline,
            },
        )
        .await
        .unwrap();
    assert!(failed.changed);
    assert_eq!(failed.previous, BillingStatus::Active);
    assert_eq!(failed.billing.status, BillingStatus::PastDue);
    assert_eq!(failed.billing.suspend_at, Some(deadline));
    let first_failure = failed.billing.payment_failed_at.expect("recorded");
    assert_eq!(
        store.billing(&client.id).await.unwrap(),
        Some(failed.billing.clone())
    );
    // Stripe retries the invoice: a second failure does not restart the grace period.
    let again = store
        .set_billing_status(
            &client.id,
            BillingChange::PaymentFailed {
                suspend_at: deadline.plus(Duration::from_secs(86_400)),
            },
        )
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.billing.suspend_at, Some(deadline));
    assert_eq!(again.billing.payment_failed_at, Some(first_failure));
    // Due exactly at its deadline, not a millisecond before.
    let before = Timestamp::from_unix_millis(deadline.unix_millis() - 1);
    assert!(store.due_suspensions(before).await.unwrap().is_empty());
    let due = store.due_suspensions(deadline).await.unwrap();
    assert_eq!(due, vec![again.billing.clone()]);
    // The payment arrives in time: active, arrears cleared, nothing to suspend.
    let paid = store
        .set_billing_status(&client.id, BillingChange::Paid)
        .await
        .unwrap();
    assert!(paid.changed);
    assert_eq!(paid.previous, BillingStatus::PastDue);
    assert_eq!(paid.billing.status, BillingStatus::Active);
    assert_eq!(paid.billing.payment_failed_at, None);
    assert_eq!(paid.billing.suspend_at, None);
    assert!(store.due_suspensions(deadline).await.unwrap().is_empty());
    // A suspension decided before the payment, arriving after it, does nothing.
    let late = store
        .set_billing_status(&client.id, BillingChange::Suspend)
        .await
        .unwrap();
    assert!(!late.changed);
    assert_eq!(late.billing.status, BillingStatus::Active);
}

async fn a_past_due_client_is_suspended_once_and_becomes_active_when_it_pays(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    store
        .upsert_billing(&Billing::active(
            client.id.clone(),
            "cus_A",
            "sub_1",
            Plan::Starter,
        ))
        .await
        .unwrap();
    let now = Timestamp::now();
    store
        .set_billing_status(&client.id, BillingChange::PaymentFailed { suspend_at: now })
        .await
        .unwrap();
    assert_eq!(store.due_suspensions(now).await.unwrap().len(), 1);
    let suspended = store
        .set_billing_status(&client.id, BillingChange::Suspend)
        .await
        .unwrap();
    assert!(suspended.changed);
    assert_eq!(suspended.previous, BillingStatus::PastDue);
    assert_eq!(suspended.billing.status, BillingStatus::Suspended);
    // Suspended clients are no longer due, and suspending again changes nothing.
    assert!(store.due_suspensions(now).await.unwrap().is_empty());
    assert!(
        !store
            .set_billing_status(&client.id, BillingChange::Suspend)
            .await
            .unwrap()
            .changed
    );
    // Another failed retry while suspended does not make it past_due again.
    let failed_again = store
        .set_billing_status(&client.id, BillingChange::PaymentFailed { suspend_at: now })
        .await
        .unwrap();
    assert!(!failed_again.changed);
    assert_eq!(failed_again.billing.status, BillingStatus::Suspended);
    let paid = store
        .set_billing_status(&client.id, BillingChange::Paid)
        .await
        .unwrap();
    assert!(paid.changed);
    assert_eq!(paid.previous, BillingStatus::Suspended);
    assert_eq!(paid.billing.status, BillingStatus::Active);
    assert!(
        !store
            .set_billing_status(&client.id, BillingChange::Paid)
            .await
            .unwrap()
            .changed
    );
}

async fn a_cancelled_subscription_is_due_for_destruction_after_its_retention(db: &TestDb) {
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
    let destroy_at = Timestamp::now().plus(Duration::from_secs(30 * 86_400));
    let cancelled = store
        .set_billing_status(&client.id, BillingChange::Cancelled { destroy_at })
        .await
        .unwrap();
    assert!(cancelled.changed);
    assert_eq!(cancelled.billing.status, BillingStatus::Cancelled);
    assert_eq!(cancelled.billing.destroy_at, Some(destroy_at));
    let cancelled_at = cancelled.billing.cancelled_at.expect("recorded");
    // A redelivered cancellation keeps the first date and deadline; a late paid invoice
    // does not bring an ended subscription back.
    for change in [
        BillingChange::Cancelled {
            destroy_at: destroy_at.plus(Duration::from_secs(60)),
        },
        BillingChange::Paid,
        BillingChange::Suspend,
    ] {
        let result = store.set_billing_status(&client.id, change).await.unwrap();
        assert!(!result.changed, "{change:?}");
        assert_eq!(result.billing.cancelled_at, Some(cancelled_at));
        assert_eq!(result.billing.destroy_at, Some(destroy_at));
        assert_eq!(result.billing.status, BillingStatus::Cancelled);
    }
    let before = Timestamp::from_unix_millis(destroy_at.unix_millis() - 1);
    assert!(store.due_destructions(before).await.unwrap().is_empty());
    let due: Vec<_> = store
        .due_destructions(destroy_at)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.client_id)
        .collect();
    assert_eq!(due, vec![client.id.clone()]);
    // A plan change applies whatever the status, and only when the plan differs.
    let moved = store
        .set_billing_status(&kept.id, BillingChange::Plan(Plan::Enterprise))
        .await
        .unwrap();
    assert!(moved.changed);
    assert_eq!(moved.billing.plan, Plan::Enterprise);
    assert_eq!(moved.billing.status, BillingStatus::Active);
    assert!(
        !store
            .set_billing_status(&kept.id, BillingChange::Plan(Plan::Enterprise))
            .await
            .unwrap()
            .changed
    );
}

async fn changing_the_billing_of_a_client_without_billing_is_refused(db: &TestDb) {
    let store = db.open().await;
    let client = add_client(&store, 1, "starter", ClientState::Running).await;
    let error = store
        .set_billing_status(&client.id, BillingChange::Paid)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::BillingNotFound { client: c } if *c == client.id),
        "{error:?}"
    );
    assert!(error.to_string().contains("upsert_billing"), "{error}");
}
