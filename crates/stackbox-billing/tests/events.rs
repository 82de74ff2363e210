//! Webhook bodies shaped like Stripe's (tests/fixtures/*.json: every field a real event of that
//! type carries around the ones we read, so an accidental dependency on layout would show).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stackbox_billing::{Event, EventError, EventKind, SubscriptionStatus};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(value: &Value) -> Result<Event, EventError> {
    Event::parse(value.to_string().as_bytes())
}

/// Removes the field at a dotted path (numeric segments index arrays).
fn remove(value: &mut Value, path: &str) {
    let mut segments: Vec<&str> = path.split('.').collect();
    let last = segments.pop().unwrap_or_default();
    let mut at = value;
    for segment in segments {
        at = match segment.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[segment],
        };
    }
    if let Some(object) = at.as_object_mut() {
        object.remove(last);
    }
}

#[test]
fn checkout_session_completed_gives_the_session_reference_customer_subscription_and_metadata() {
    let event = parse(&fixture("checkout.session.completed")).expect("parses");
    assert_eq!(
        event,
        Event {
            id: "evt_1SXbPqLkdIwHu7ixCheckout01".to_owned(),
            created: 1_764_115_200,
            livemode: false,
            kind: EventKind::CheckoutSessionCompleted {
                session_id: "cs_test_a1ZQ4XU9SmlZ8wWcAQDL1ePbCqBDlhxBq5WBWO5qoyd4U2E7ePUrVFl3N2"
                    .to_owned(),
                client_reference_id: Some("signup_01JDQ7Z5K3M8X2".to_owned()),
                customer: Some("cus_TUrGPlw6b3Kx9Q".to_owned()),
                subscription: Some("sub_1SXbPoLkdIwHu7ixmNcS3kQe".to_owned()),
                customer_email: Some("owner@bakery.example".to_owned()),
                metadata: BTreeMap::from([
                    ("plan".to_owned(), "professional".to_owned()),
                    ("signup_id".to_owned(), "signup_01JDQ7Z5K3M8X2".to_owned()),
                ]),
            },
        }
    );
}

#[test]
fn checkout_session_without_customer_email_falls_back_to_what_the_customer_typed() {
    let mut body = fixture("checkout.session.completed");
    body["data"]["object"]["customer_email"] = Value::Null;
    body["data"]["object"]["client_reference_id"] = Value::Null;
    let event = parse(&body).expect("parses");
    let EventKind::CheckoutSessionCompleted {
        customer_email,
        client_reference_id,
        ..
    } = event.kind
    else {
        panic!("wrong kind: {:?}", event.kind)
    };
    assert_eq!(customer_email.as_deref(), Some("owner@bakery.example"));
    assert_eq!(client_reference_id, None);
}

#[test]
fn expanded_references_are_read_by_their_id() {
    let mut body = fixture("checkout.session.completed");
    body["data"]["object"]["customer"] = json!({"id": "cus_expanded", "object": "customer"});
    body["data"]["object"]["subscription"] =
        json!({"id": "sub_expanded", "object": "subscription", "status": "active"});
    let EventKind::CheckoutSessionCompleted {
        customer,
        subscription,
        ..
    } = parse(&body).expect("parses").kind
    else {
        panic!("wrong kind")
    };
    assert_eq!(customer.as_deref(), Some("cus_expanded"));
    assert_eq!(subscription.as_deref(), Some("sub_expanded"));
}

#[test]
fn subscription_updated_gives_status_price_ids_and_cancellation_flag() {
    let event = parse(&fixture("customer.subscription.updated")).expect("parses");
    assert_eq!(event.id, "evt_1SXcAbLkdIwHu7ixSubUpdate");
    assert_eq!(
        event.kind,
        EventKind::SubscriptionUpdated {
            subscription_id: "sub_1SXbPoLkdIwHu7ixmNcS3kQe".to_owned(),
            customer: "cus_TUrGPlw6b3Kx9Q".to_owned(),
            status: SubscriptionStatus::Active,
            // The current price, not previous_attributes' one.
            price_ids: vec!["price_1SXZ3kLkdIwHu7ixBusinessM".to_owned()],
            cancel_at_period_end: false,
        }
    );
}

#[test]
fn subscription_updated_keeps_every_item_in_order_and_unknown_statuses_verbatim() {
    let mut body = fixture("customer.subscription.updated");
    let first = body["data"]["object"]["items"]["data"][0].clone();
    let mut second = first.clone();
    second["price"]["id"] = json!("price_addon_backup");
    body["data"]["object"]["items"]["data"] = json!([first, second]);
    body["data"]["object"]["status"] = json!("some_future_status");
    body["data"]["object"]["cancel_at_period_end"] = json!(true);
    let EventKind::SubscriptionUpdated {
        price_ids,
        status,
        cancel_at_period_end,
        ..
    } = parse(&body).expect("parses").kind
    else {
        panic!("wrong kind")
    };
    assert_eq!(
        price_ids,
        vec!["price_1SXZ3kLkdIwHu7ixBusinessM", "price_addon_backup"]
    );
    assert_eq!(
        status,
        SubscriptionStatus::Other("some_future_status".to_owned())
    );
    assert_eq!(status.as_str(), "some_future_status");
    assert!(cancel_at_period_end);
}

#[test]
fn every_documented_subscription_status_round_trips() {
    for text in [
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    ] {
        let status = SubscriptionStatus::parse(text);
        assert!(!matches!(status, SubscriptionStatus::Other(_)), "{text}");
        assert_eq!(status.as_str(), text);
        assert_eq!(status.to_string(), text);
    }
}

#[test]
fn subscription_deleted_gives_subscription_and_customer() {
    let event = parse(&fixture("customer.subscription.deleted")).expect("parses");
    assert_eq!(
        event.kind,
        EventKind::SubscriptionDeleted {
            subscription_id: "sub_1SXbPoLkdIwHu7ixmNcS3kQe".to_owned(),
            customer: "cus_TUrGPlw6b3Kx9Q".to_owned(),
        }
    );
}

#[test]
fn invoice_payment_failed_reads_the_subscription_from_parent_subscription_details() {
    let event = parse(&fixture("invoice.payment_failed")).expect("parses");
    assert_eq!(
        event.kind,
        EventKind::InvoicePaymentFailed {
            invoice_id: "in_1SYaBbLkdIwHu7ixRenewal2".to_owned(),
            subscription_id: Some("sub_1SXbPoLkdIwHu7ixmNcS3kQe".to_owned()),
            customer: Some("cus_TUrGPlw6b3Kx9Q".to_owned()),
            attempt_count: 2,
            next_payment_attempt: Some(1_767_052_900),
        }
    );
}

#[test]
fn invoice_payment_failed_in_the_pre_basil_shape_reads_the_top_level_subscription() {
    // Endpoints still on an API version before 2025-03-31 get invoice.subscription.
    let mut body = fixture("invoice.payment_failed");
    remove(&mut body, "data.object.parent");
    body["data"]["object"]["subscription"] = json!("sub_old_shape");
    body["data"]["object"]["next_payment_attempt"] = Value::Null;
    let EventKind::InvoicePaymentFailed {
        subscription_id,
        next_payment_attempt,
        ..
    } = parse(&body).expect("parses").kind
    else {
        panic!("wrong kind")
    };
    assert_eq!(subscription_id.as_deref(), Some("sub_old_shape"));
    assert_eq!(next_payment_attempt, None, "null: Stripe stopped retrying");
}

#[test]
fn an_invoice_outside_any_subscription_has_no_subscription_id() {
    let mut body = fixture("invoice.payment_failed");
    body["data"]["object"]["parent"] = Value::Null;
    let EventKind::InvoicePaymentFailed {
        subscription_id, ..
    } = parse(&body).expect("parses").kind
    else {
        panic!("wrong kind")
    };
    assert_eq!(subscription_id, None);
}

#[test]
fn invoice_paid_in_the_legacy_shape_gives_invoice_subscription_and_customer() {
    let event = parse(&fixture("invoice.paid.legacy")).expect("parses");
    assert_eq!(
        event.kind,
        EventKind::InvoicePaid {
            invoice_id: "in_1SYaBbLkdIwHu7ixRenewal2".to_owned(),
            subscription_id: Some("sub_1SXbPoLkdIwHu7ixmNcS3kQe".to_owned()),
            customer: Some("cus_TUrGPlw6b3Kx9Q".to_owned()),
        }
    );
}

#[test]
fn invoice_paid_in_the_current_shape_prefers_parent_subscription_details() {
    let mut body = fixture("invoice.payment_failed");
    body["type"] = json!("invoice.paid");
    let EventKind::InvoicePaid {
        subscription_id, ..
    } = parse(&body).expect("parses").kind
    else {
        panic!("wrong kind")
    };
    assert_eq!(
        subscription_id.as_deref(),
        Some("sub_1SXbPoLkdIwHu7ixmNcS3kQe")
    );
}

#[test]
fn other_event_types_are_kept_by_name_without_reading_their_object() {
    let body = json!({
        "id": "evt_other",
        "object": "event",
        "created": 1,
        "livemode": true,
        "type": "customer.created",
        "data": {"object": {"object": "customer", "something": ["unexpected"]}}
    });
    let event = parse(&body).expect("parses");
    assert_eq!(
        event,
        Event {
            id: "evt_other".to_owned(),
            created: 1,
            livemode: true,
            kind: EventKind::Other {
                kind: "customer.created".to_owned()
            },
        }
    );
}

#[test]
fn missing_required_fields_are_named_by_their_path() {
    let cases = [
        ("checkout.session.completed", "id", "id"),
        ("checkout.session.completed", "created", "created"),
        ("checkout.session.completed", "livemode", "livemode"),
        ("checkout.session.completed", "data", "data"),
        ("checkout.session.completed", "data.object", "data.object"),
        (
            "checkout.session.completed",
            "data.object.id",
            "data.object.id",
        ),
        (
            "customer.subscription.updated",
            "data.object.items",
            "data.object.items",
        ),
        (
            "customer.subscription.updated",
            "data.object.items.data.0.price",
            "data.object.items.data[].price",
        ),
        (
            "customer.subscription.updated",
            "data.object.items.data.0.price.id",
            "data.object.items.data[].price.id",
        ),
        (
            "customer.subscription.updated",
            "data.object.status",
            "data.object.status",
        ),
        (
            "customer.subscription.updated",
            "data.object.customer",
            "data.object.customer",
        ),
        (
            "customer.subscription.deleted",
            "data.object.customer",
            "data.object.customer",
        ),
        (
            "invoice.payment_failed",
            "data.object.attempt_count",
            "data.object.attempt_count",
        ),
        ("invoice.paid.legacy", "data.object.id", "data.object.id"),
    ];
    for (name, remove_path, expected_field) in cases {
        let mut body = fixture(name);
        let event_type = body["type"].as_str().unwrap_or_default().to_owned();
        remove(&mut body, remove_path);
        let error = parse(&body).expect_err(remove_path);
        assert_eq!(
            error,
            EventError::MissingField {
                event_type: event_type.clone(),
                field: expected_field
            },
            "{name} without {remove_path}"
        );
        // The message says which event and which field.
        let message = error.to_string();
        assert!(
            message.contains(&event_type) && message.contains(expected_field),
            "{message}"
        );
    }
}

#[test]
fn a_body_without_a_type_is_refused_naming_type() {
    let mut body = fixture("invoice.paid.legacy");
    remove(&mut body, "type");
    assert_eq!(
        parse(&body),
        Err(EventError::MissingField {
            event_type: "webhook".to_owned(),
            field: "type"
        })
    );
}

#[test]
fn mistyped_fields_are_refused_naming_the_field_and_what_was_expected() {
    let cases: [(&str, &str, Value, &str); 5] = [
        (
            "checkout.session.completed",
            "livemode",
            json!("false"),
            "livemode",
        ),
        (
            "checkout.session.completed",
            "created",
            json!(1.5),
            "created",
        ),
        (
            "invoice.payment_failed",
            "attempt_count",
            json!(-1),
            "data.object.attempt_count",
        ),
        (
            "customer.subscription.updated",
            "cancel_at_period_end",
            json!("no"),
            "data.object.cancel_at_period_end",
        ),
        (
            "checkout.session.completed",
            "metadata",
            json!({"plan": 3}),
            "data.object.metadata",
        ),
    ];
    for (name, key, value, expected_field) in cases {
        let mut body = fixture(name);
        if body.get(key).is_some() {
            body[key] = value;
        } else {
            body["data"]["object"][key] = value;
        }
        match parse(&body) {
            Err(EventError::WrongType { field, .. }) => assert_eq!(field, expected_field),
            other => panic!("{name} with a bad {key}: {other:?}"),
        }
    }
}

#[test]
fn a_body_that_is_not_json_is_refused_with_its_position() {
    match Event::parse(b"{\"id\": \"evt_1\",\n  oops}") {
        Err(EventError::Json { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Event::parse(b"[1, 2]"),
        Err(EventError::MissingField { field: "type", .. })
    ));
    assert!(matches!(Event::parse(b""), Err(EventError::Json { .. })));
}

#[test]
fn every_parsed_event_names_its_own_stripe_type() {
    for name in [
        "checkout.session.completed",
        "customer.subscription.deleted",
        "customer.subscription.updated",
        "invoice.paid.legacy",
        "invoice.payment_failed",
    ] {
        let body = fixture(name);
        let event = parse(&body).unwrap();
        assert_eq!(
            event.kind.type_name(),
            body["type"].as_str().unwrap(),
            "{name}"
        );
    }
    let other = json!({"id": "evt_x", "object": "event", "type": "customer.created",
                       "created": 1, "livemode": false, "data": {"object": {}}});
    assert_eq!(parse(&other).unwrap().kind.type_name(), "customer.created");
}
