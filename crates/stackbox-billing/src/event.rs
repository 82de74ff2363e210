//! Webhook bodies: Stripe's `event` object, read into the few shapes the subscription lifecycle
//! acts on.
//!
//! An event is `{"id":"evt_…","object":"event","type":"…","created":<unix>,"livemode":bool,
//! "data":{"object":{…}}}`; `data.object` is the resource as it is after the change, rendered in
//! the webhook endpoint's API version (not the version our requests pin). So the parser accepts
//! both shapes where versions differ: since 2025-03-31 (basil) an invoice's subscription is
//! `parent.subscription_details.subscription`, before it was `invoice.subscription`. Expandable
//! references (`customer`, `subscription`) are read as an id string or as an expanded object's
//! `id`.
//!
//! Only the fields that are always present in Stripe's objects are required; nullable ones are
//! `Option`. A missing or mistyped required field is an [`EventError`] naming its path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::EventError;

/// One webhook delivery's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `evt_…`: the key for handling each event once (Stripe redelivers).
    pub id: String,
    pub kind: EventKind,
    /// When Stripe created the event (unix seconds): orders deliveries that arrive out of order.
    pub created: i64,
    /// Whether the event is from live mode; a test-mode event must not touch live accounts.
    pub livemode: bool,
}

/// The event types StackBox acts on, and every other one by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `checkout.session.completed`: the customer finished Checkout; provision.
    CheckoutSessionCompleted {
        session_id: String,
        /// What we passed as `client_reference_id` (the sign-up id).
        client_reference_id: Option<String>,
        customer: Option<String>,
        subscription: Option<String>,
        /// `customer_email`, or else `customer_details.email` (what the customer typed).
        customer_email: Option<String>,
        metadata: BTreeMap<String, String>,
    },
    /// `customer.subscription.updated`: plan change, status change, cancellation scheduled.
    SubscriptionUpdated {
        subscription_id: String,
        customer: String,
        status: SubscriptionStatus,
        /// `items.data[].price.id`, in Stripe's order.
        price_ids: Vec<String>,
        cancel_at_period_end: bool,
    },
    /// `customer.subscription.deleted`: the subscription ended.
    SubscriptionDeleted {
        subscription_id: String,
        customer: String,
    },
    /// `invoice.payment_failed`.
    InvoicePaymentFailed {
        invoice_id: String,
        /// `None` for an invoice that belongs to no subscription.
        subscription_id: Option<String>,
        customer: Option<String>,
        attempt_count: u32,
        /// When Stripe retries (unix seconds); `None` once it has given up.
        next_payment_attempt: Option<i64>,
    },
    /// `invoice.paid`.
    InvoicePaid {
        invoice_id: String,
        subscription_id: Option<String>,
        customer: Option<String>,
    },
    /// Any other type, by its name (`"customer.created"`, …): acknowledge and ignore.
    Other { kind: String },
}

/// A subscription's `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
    /// A status this version does not know, kept verbatim.
    Other(String),
}

impl SubscriptionStatus {
    pub fn parse(text: &str) -> SubscriptionStatus {
        match text {
            "incomplete" => SubscriptionStatus::Incomplete,
            "incomplete_expired" => SubscriptionStatus::IncompleteExpired,
            "trialing" => SubscriptionStatus::Trialing,
            "active" => SubscriptionStatus::Active,
            "past_due" => SubscriptionStatus::PastDue,
            "canceled" => SubscriptionStatus::Canceled,
            "unpaid" => SubscriptionStatus::Unpaid,
            "paused" => SubscriptionStatus::Paused,
            other => SubscriptionStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Other(other) => other,
        }
    }
}

impl std::fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventKind {
    /// The event's `type`, as Stripe names it (what [`Event::parse`] read).
    pub fn type_name(&self) -> &str {
        match self {
            EventKind::CheckoutSessionCompleted { .. } => "checkout.session.completed",
            EventKind::SubscriptionUpdated { .. } => "customer.subscription.updated",
            EventKind::SubscriptionDeleted { .. } => "customer.subscription.deleted",
            EventKind::InvoicePaymentFailed { .. } => "invoice.payment_failed",
            EventKind::InvoicePaid { .. } => "invoice.paid",
            EventKind::Other { kind } => kind,
        }
    }
}

impl Event {
    /// Parses a webhook body (after its signature was verified).
    pub fn parse(body: &[u8]) -> Result<Event, EventError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| EventError::Json {
            line: e.line(),
            column: e.column(),
            problem: e.to_string(),
        })?;
        // The type is read first so that every later error can name the event it is about.
        let kind_name = match value.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => {
                return Err(EventError::WrongType {
                    event_type: "webhook".to_owned(),
                    field: "type",
                    expected: "a string",
                })
            }
            None => {
                return Err(EventError::MissingField {
                    event_type: "webhook".to_owned(),
                    field: "type",
                })
            }
        };
        let at = Fields {
            event_type: &kind_name,
        };
        let root = at.object(&value, "(the body)")?;
        let id = at.string(root, "id", "id")?;
        let created = at.integer(root, "created", "created")?;
        let livemode = at.boolean(root, "livemode", "livemode")?;
        let kind = match kind_name.as_str() {
            "checkout.session.completed" => checkout_session_completed(&at, root)?,
            "customer.subscription.updated" => {
                let subscription = subscription_from(&at, data_object(&at, root)?, "data.object")?;
                EventKind::SubscriptionUpdated {
                    subscription_id: subscription.id,
                    customer: subscription.customer,
                    status: subscription.status,
                    price_ids: subscription.price_ids,
                    cancel_at_period_end: subscription.cancel_at_period_end,
                }
            }
            "customer.subscription.deleted" => {
                let object = data_object(&at, root)?;
                EventKind::SubscriptionDeleted {
                    subscription_id: at.string(object, "id", "data.object.id")?,
                    customer: at
                        .expandable(object, "customer", "data.object.customer")?
                        .ok_or_else(|| at.missing("data.object.customer"))?,
                }
            }
            "invoice.payment_failed" => {
                let object = data_object(&at, root)?;
                let attempt_count =
                    at.integer(object, "attempt_count", "data.object.attempt_count")?;
                EventKind::InvoicePaymentFailed {
                    invoice_id: at.string(object, "id", "data.object.id")?,
                    subscription_id: invoice_subscription(&at, object)?,
                    customer: at.expandable(object, "customer", "data.object.customer")?,
                    attempt_count: u32::try_from(attempt_count).map_err(|_| {
                        at.wrong_type("data.object.attempt_count", "a small non-negative integer")
                    })?,
                    next_payment_attempt: at.optional_integer(
                        object,
                        "next_payment_attempt",
                        "data.object.next_payment_attempt",
                    )?,
                }
            }
            "invoice.paid" => {
                let object = data_object(&at, root)?;
                EventKind::InvoicePaid {
                    invoice_id: at.string(object, "id", "data.object.id")?,
                    subscription_id: invoice_subscription(&at, object)?,
                    customer: at.expandable(object, "customer", "data.object.customer")?,
                }
            }
            _ => EventKind::Other { kind: kind_name },
        };
        Ok(Event {
            id,
            kind,
            created,
            livemode,
        })
    }
}

/// A subscription as the lifecycle needs it: the answer of `retrieve_subscription`, and the
/// payload of `customer.subscription.*` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: SubscriptionStatus,
    /// `items.data[].price.id`, in Stripe's order.
    pub price_ids: Vec<String>,
    pub cancel_at_period_end: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Reads a subscription object (`prefix` names it in errors: `data.object` or `subscription`).
pub(crate) fn subscription_from(
    at: &Fields<'_>,
    object: &Map<String, Value>,
    prefix: &'static str,
) -> Result<Subscription, EventError> {
    // The field names below are spelled out per prefix so that errors carry static paths.
    let path = |event: &'static str, api: &'static str| {
        if prefix == "data.object" {
            event
        } else {
            api
        }
    };
    let items = at.object_field(object, "items", path("data.object.items", "items"))?;
    let data = match items.get("data") {
        Some(Value::Array(data)) => data,
        Some(_) => {
            return Err(at.wrong_type(path("data.object.items.data", "items.data"), "an array"))
        }
        None => return Err(at.missing(path("data.object.items.data", "items.data"))),
    };
    let mut price_ids = Vec::with_capacity(data.len());
    for item in data {
        let item = at.object(item, path("data.object.items.data[]", "items.data[]"))?;
        let price = at.object_field(
            item,
            "price",
            path("data.object.items.data[].price", "items.data[].price"),
        )?;
        price_ids.push(at.string(
            price,
            "id",
            path("data.object.items.data[].price.id", "items.data[].price.id"),
        )?);
    }
    Ok(Subscription {
        id: at.string(object, "id", path("data.object.id", "id"))?,
        customer: at
            .expandable(object, "customer", path("data.object.customer", "customer"))?
            .ok_or_else(|| at.missing(path("data.object.customer", "customer")))?,
        status: SubscriptionStatus::parse(&at.string(
            object,
            "status",
            path("data.object.status", "status"),
        )?),
        price_ids,
        cancel_at_period_end: match object.get("cancel_at_period_end") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(at.wrong_type(
                    path("data.object.cancel_at_period_end", "cancel_at_period_end"),
                    "true or false",
                ))
            }
        },
        metadata: at.metadata(object, path("data.object.metadata", "metadata"))?,
    })
}

fn checkout_session_completed(
    at: &Fields<'_>,
    root: &Map<String, Value>,
) -> Result<EventKind, EventError> {
    let object = data_object(at, root)?;
    let customer_email =
        match at.optional_string(object, "customer_email", "data.object.customer_email")? {
            Some(email) => Some(email),
            None => match object.get("customer_details") {
                Some(Value::Object(details)) => {
                    at.optional_string(details, "email", "data.object.customer_details.email")?
                }
                _ => None,
            },
        };
    Ok(EventKind::CheckoutSessionCompleted {
        session_id: at.string(object, "id", "data.object.id")?,
        client_reference_id: at.optional_string(
            object,
            "client_reference_id",
            "data.object.client_reference_id",
        )?,
        customer: at.expandable(object, "customer", "data.object.customer")?,
        subscription: at.expandable(object, "subscription", "data.object.subscription")?,
        customer_email,
        metadata: at.metadata(object, "data.object.metadata")?,
    })
}

/// The invoice's subscription: `parent.subscription_details.subscription` (2025-03-31.basil and
/// later), else the older top-level `subscription`.
fn invoice_subscription(
    at: &Fields<'_>,
    invoice: &Map<String, Value>,
) -> Result<Option<String>, EventError> {
    if let Some(Value::Object(parent)) = invoice.get("parent") {
        if let Some(Value::Object(details)) = parent.get("subscription_details") {
            if let Some(id) = at.expandable(
                details,
                "subscription",
                "data.object.parent.subscription_details.subscription",
            )? {
                return Ok(Some(id));
            }
        }
    }
    at.expandable(invoice, "subscription", "data.object.subscription")
}

fn data_object<'v>(
    at: &Fields<'_>,
    root: &'v Map<String, Value>,
) -> Result<&'v Map<String, Value>, EventError> {
    let data = at.object_field(root, "data", "data")?;
    at.object_field(data, "object", "data.object")
}

/// Field access that names the event type and the field's path in every error.
pub(crate) struct Fields<'a> {
    pub(crate) event_type: &'a str,
}

impl Fields<'_> {
    pub(crate) fn missing(&self, field: &'static str) -> EventError {
        EventError::MissingField {
            event_type: self.event_type.to_owned(),
            field,
        }
    }

    pub(crate) fn wrong_type(&self, field: &'static str, expected: &'static str) -> EventError {
        EventError::WrongType {
            event_type: self.event_type.to_owned(),
            field,
            expected,
        }
    }

    pub(crate) fn object<'v>(
        &self,
        value: &'v Value,
        field: &'static str,
    ) -> Result<&'v Map<String, Value>, EventError> {
        value
            .as_object()
            .ok_or_else(|| self.wrong_type(field, "an object"))
    }

    fn object_field<'v>(
        &self,
        parent: &'v Map<String, Value>,
        key: &str,
        field: &'static str,
    ) -> Result<&'v Map<String, Value>, EventError> {
        match parent.get(key) {
            Some(Value::Object(object)) => Ok(object),
            None | Some(Value::Null) => Err(self.missing(field)),
            Some(_) => Err(self.wrong_type(field, "an object")),
        }
    }

    pub(crate) fn string(
        &self,
        parent: &Map<String, Value>,
        key: &str,
        field: &'static str,
    ) -> Result<String, EventError> {
        self.optional_string(parent, key, field)?
            .ok_or_else(|| self.missing(field))
    }

    pub(crate) fn optional_string(
        &self,
        parent: &Map<String, Value>,
        key: &str,
        field: &'static str,
    ) -> Result<Option<String>, EventError> {
        match parent.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.wrong_type(field, "a string")),
        }
    }

    fn integer(
        &self,
        parent: &Map<String, Value>,
        key: &str,
        field: &'static str,
    ) -> Result<i64, EventError> {
        self.optional_integer(parent, key, field)?
            .ok_or_else(|| self.missing(field))
    }

    fn optional_integer(
        &self,
        parent: &Map<String, Value>,
        key: &str,
        field: &'static str,
    ) -> Result<Option<i64>, EventError> {
        match parent.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(field, "an integer")),
            Some(_) => Err(self.wrong_type(field, "an integer")),
        }
    }

    fn boolean(
        &self,
        parent: &Map<String, Value>,
        key: &str,
        field: &'static str,
    ) -> Result<bool, EventError> {
        match parent.get(key) {
            Some(Value::Bool(b)) => Ok(*b),
            None | Some(Value::Null) => Err(self.missing(field)),
            Some(_) => Err(self.wrong_type(field, "true or false")),
        }
    }

    /// An expandable reference: the id string, or the expanded object's `id`; `None` if null.
    fn expandable(
        &self,
        parent: &Map<String, Value>,
        key: &str,
        field: &'static str,
    ) -> Result<Option<String>, EventError> {
        match parent.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(id)) => Ok(Some(id.clone())),
            Some(Value::Object(expanded)) => match expanded.get("id") {
                Some(Value::String(id)) => Ok(Some(id.clone())),
                _ => Err(self.wrong_type(field, "an id or an object with an id")),
            },
            Some(_) => Err(self.wrong_type(field, "an id or an object with an id")),
        }
    }

    /// Stripe metadata: string keys to string values; absent or null is empty.
    fn metadata(
        &self,
        parent: &Map<String, Value>,
        field: &'static str,
    ) -> Result<BTreeMap<String, String>, EventError> {
        match parent.get("metadata") {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(entries)) => entries
                .iter()
                .map(|(key, value)| match value {
                    Value::String(text) => Ok((key.clone(), text.clone())),
                    _ => Err(self.wrong_type(field, "a map of strings")),
                })
                .collect(),
            Some(_) => Err(self.wrong_type(field, "a map of strings")),
        }
    }
}
