//! The onboarding queries: sign-ups, Stripe events, billing, the mail outbox and one-time
//! credential links, written once.
//!
//! Compiled twice like `sql.rs` (as `sqlite::onboarding_sql` and `postgres::onboarding_sql`),
//! with the same rules: `$N` placeholders, standard types, one SQL text for both engines. The
//! one backend difference used here is `SKIP_LOCKED` in the outbox claim.
//!
//! Every "only one caller wins" guarantee is a single guarded statement (`UPDATE … WHERE
//! status = … RETURNING`, `INSERT … ON CONFLICT DO NOTHING`), never a read followed by a
//! write: on SQLite the statement holds the write lock throughout, and on PostgreSQL an
//! `UPDATE` that waited for another one re-checks its `WHERE` on the row as that one left it.

use std::collections::BTreeMap;

use stackbox_core::client::{ClientId, Email};
use stackbox_core::plan::Plan;

use super::sql::{
    get, get_client_id, get_name, get_optional_time, get_time, is_foreign_key_violation,
    is_unique_violation, Pool, Row,
};
use super::{begin_write, FOR_UPDATE, SKIP_LOCKED};
use crate::error::StoreError;
use crate::model::{
    Billing, BillingChange, BillingStatus, BillingTransition, MailId, MailRecord, MailStatus,
    NewMail, Signup, SignupId, SignupStatus, Timestamp,
};

fn get_optional_client_id(
    row: &Row,
    table: &'static str,
    column: &'static str,
) -> Result<Option<ClientId>, StoreError> {
    let text: Option<String> = get(row, table, column)?;
    text.map(|text| ClientId::parse(&text))
        .transpose()
        .map_err(|error| StoreError::corrupt(table, column, error))
}

fn get_email(row: &Row, table: &'static str, column: &'static str) -> Result<Email, StoreError> {
    let text: String = get(row, table, column)?;
    Email::parse(column, &text).map_err(|error| StoreError::corrupt(table, column, error))
}

/// Counts rows changed, as the `u64` the store's callers see.
fn affected(result: &<super::Db as sqlx::Database>::QueryResult) -> u64 {
    result.rows_affected()
}

// ---------------------------------------------------------------------------------------------
// Sign-ups

const SIGNUP_COLUMNS: &str = "id, email, spec, plan, status, checkout_session_id, customer_id, \
     subscription_id, client_id, created_at, updated_at";

fn signup_from_row(row: &Row) -> Result<Signup, StoreError> {
    const T: &str = "signups";
    Ok(Signup {
        id: SignupId::from_trusted(get(row, T, "id")?),
        email: get_email(row, T, "email")?,
        spec_toml: get(row, T, "spec")?,
        plan: get_name(row, T, "plan", Plan::from_key)?,
        status: get_name(row, T, "status", SignupStatus::from_name)?,
        checkout_session_id: get(row, T, "checkout_session_id")?,
        customer_id: get(row, T, "customer_id")?,
        subscription_id: get(row, T, "subscription_id")?,
        client_id: get_optional_client_id(row, T, "client_id")?,
        created_at: get_time(row, T, "created_at")?,
        updated_at: get_time(row, T, "updated_at")?,
    })
}

pub(crate) async fn insert_signup(pool: &Pool, signup: &Signup) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signups (id, email, spec, plan, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(signup.id.as_str())
    .bind(signup.email.as_str())
    .bind(&signup.spec_toml)
    .bind(signup.plan.key())
    .bind(signup.status.as_str())
    .bind(signup.created_at.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("storing a sign-up"))?;
    Ok(())
}

pub(crate) async fn signup(pool: &Pool, id: &SignupId) -> Result<Option<Signup>, StoreError> {
    sqlx::query(&format!(
        "SELECT {SIGNUP_COLUMNS} FROM signups WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("reading a sign-up"))?
    .as_ref()
    .map(signup_from_row)
    .transpose()
}

pub(crate) async fn signup_by_checkout_session(
    pool: &Pool,
    session: &str,
) -> Result<Option<Signup>, StoreError> {
    sqlx::query(&format!(
        "SELECT {SIGNUP_COLUMNS} FROM signups WHERE checkout_session_id = $1"
    ))
    .bind(session)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database(
        "reading a sign-up by checkout session",
    ))?
    .as_ref()
    .map(signup_from_row)
    .transpose()
}

/// The sign-up's status, or `SignupNotFound`: what explains a guarded update that changed
/// nothing.
async fn signup_status(pool: &Pool, id: &SignupId) -> Result<SignupStatus, StoreError> {
    match signup(pool, id).await? {
        Some(signup) => Ok(signup.status),
        None => Err(StoreError::SignupNotFound { signup: id.clone() }),
    }
}

pub(crate) async fn set_signup_checkout(
    pool: &Pool,
    id: &SignupId,
    session: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let updated = sqlx::query(
        "UPDATE signups SET checkout_session_id = $2, updated_at = $3 \
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id.as_str())
    .bind(session)
    .bind(now.unix_millis())
    .execute(pool)
    .await;
    match updated {
        Ok(result) if affected(&result) == 1 => Ok(()),
        Ok(_) => Err(StoreError::SignupTransition {
            signup: id.clone(),
            from: signup_status(pool, id).await?,
            to: SignupStatus::Pending,
        }),
        Err(error) if is_unique_violation(&error) => {
            match signup_by_checkout_session(pool, session).await? {
                Some(owner) => Err(StoreError::CheckoutSessionTaken {
                    session: session.to_string(),
                    owner: owner.id,
                }),
                None => Err(StoreError::database("recording a checkout session")(error)),
            }
        }
        Err(error) => Err(StoreError::database("recording a checkout session")(error)),
    }
}

/// pending (or expired) → paid, in one guarded statement: of several callers, exactly one
/// changes the row and gets `true`.
pub(crate) async fn claim_signup_for_provisioning(
    pool: &Pool,
    id: &SignupId,
    customer: &str,
    subscription: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE signups SET status = 'paid', customer_id = $2, subscription_id = $3, \
         updated_at = $4 WHERE id = $1 AND status IN ('pending', 'expired')",
    )
    .bind(id.as_str())
    .bind(customer)
    .bind(subscription)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("claiming a sign-up"))?;
    if affected(&updated) == 1 {
        return Ok(true);
    }
    // Tells a missing sign-up (an error) from one another caller claimed (false).
    signup_status(pool, id).await.map(|_| false)
}

/// paid → provisioned with the client's id; again with the same client is accepted (a resumed
/// pipeline repeats its last step).
pub(crate) async fn mark_signup_provisioned(
    pool: &Pool,
    id: &SignupId,
    client: &ClientId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let updated = sqlx::query(
        "UPDATE signups SET status = 'provisioned', client_id = $2, updated_at = $3 \
         WHERE id = $1 AND (status = 'paid' OR (status = 'provisioned' AND client_id = $2))",
    )
    .bind(id.as_str())
    .bind(client.as_str())
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("marking a sign-up provisioned"))?;
    if affected(&updated) == 1 {
        return Ok(());
    }
    Err(StoreError::SignupTransition {
        signup: id.clone(),
        from: signup_status(pool, id).await?,
        to: SignupStatus::Provisioned,
    })
}

/// Sign-ups paid but not (yet) provisioned, oldest first: normally none for more than a
/// moment; one that stays is a lost race for its domain (the alert's condition).
pub(crate) async fn paid_signups_not_provisioned(pool: &Pool) -> Result<Vec<Signup>, StoreError> {
    sqlx::query(&format!(
        "SELECT {SIGNUP_COLUMNS} FROM signups WHERE status = 'paid' ORDER BY created_at, id \
         LIMIT 1000"
    ))
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading the paid sign-ups"))?
    .iter()
    .map(signup_from_row)
    .collect()
}

/// paid → expired for the sign-up of a cancelled subscription that never became a client;
/// `true` when one did.
pub(crate) async fn close_unprovisioned_signup(
    pool: &Pool,
    subscription: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE signups SET status = 'expired', updated_at = $2 \
         WHERE subscription_id = $1 AND status = 'paid'",
    )
    .bind(subscription)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database(
        "closing a sign-up that was not provisioned",
    ))?;
    Ok(affected(&updated) > 0)
}

pub(crate) async fn expire_signups(
    pool: &Pool,
    older_than: Timestamp,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let updated = sqlx::query(
        "UPDATE signups SET status = 'expired', updated_at = $2 \
         WHERE status = 'pending' AND created_at < $1",
    )
    .bind(older_than.unix_millis())
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("expiring abandoned sign-ups"))?;
    Ok(affected(&updated))
}

// ---------------------------------------------------------------------------------------------
// Stripe events

/// `true` when this call recorded the event; `false` when it was there already (a redelivery,
/// or a concurrent delivery that won).
pub(crate) async fn record_stripe_event(
    pool: &Pool,
    event_id: &str,
    kind: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO stripe_events (event_id, kind, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(kind)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("recording a Stripe event"))?;
    Ok(affected(&inserted) == 1)
}

pub(crate) async fn stripe_event_seen(pool: &Pool, event_id: &str) -> Result<bool, StoreError> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT event_id FROM stripe_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::database("looking up a Stripe event"))?;
    Ok(found.is_some())
}

pub(crate) async fn forget_stripe_events(
    pool: &Pool,
    received_before: Timestamp,
) -> Result<u64, StoreError> {
    let deleted = sqlx::query("DELETE FROM stripe_events WHERE received_at < $1")
        .bind(received_before.unix_millis())
        .execute(pool)
        .await
        .map_err(StoreError::database("forgetting old Stripe events"))?;
    Ok(affected(&deleted))
}

// ---------------------------------------------------------------------------------------------
// Billing

const BILLING_COLUMNS: &str = "client_id, customer_id, subscription_id, plan, status, \
     payment_failed_at, suspend_at, cancelled_at, destroy_at, updated_at";

fn billing_from_row(row: &Row) -> Result<Billing, StoreError> {
    const T: &str = "billing";
    Ok(Billing {
        client_id: get_client_id(row, T, "client_id")?,
        customer_id: get(row, T, "customer_id")?,
        subscription_id: get(row, T, "subscription_id")?,
        plan: get_name(row, T, "plan", Plan::from_key)?,
        status: get_name(row, T, "status", BillingStatus::from_name)?,
        payment_failed_at: get_optional_time(row, T, "payment_failed_at")?,
        suspend_at: get_optional_time(row, T, "suspend_at")?,
        cancelled_at: get_optional_time(row, T, "cancelled_at")?,
        destroy_at: get_optional_time(row, T, "destroy_at")?,
        updated_at: get_time(row, T, "updated_at")?,
    })
}

/// Writes every column of `billing` (the row is replaced) in one executor's statement.
async fn write_billing<'e, E>(executor: E, billing: &Billing) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = super::Db>,
{
    sqlx::query(
        "INSERT INTO billing (client_id, customer_id, subscription_id, plan, status, \
         payment_failed_at, suspend_at, cancelled_at, destroy_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (client_id) DO UPDATE SET customer_id = excluded.customer_id, \
         subscription_id = excluded.subscription_id, plan = excluded.plan, \
         status = excluded.status, payment_failed_at = excluded.payment_failed_at, \
         suspend_at = excluded.suspend_at, cancelled_at = excluded.cancelled_at, \
         destroy_at = excluded.destroy_at, updated_at = excluded.updated_at",
    )
    .bind(billing.client_id.as_str())
    .bind(&billing.customer_id)
    .bind(&billing.subscription_id)
    .bind(billing.plan.key())
    .bind(billing.status.as_str())
    .bind(billing.payment_failed_at.map(Timestamp::unix_millis))
    .bind(billing.suspend_at.map(Timestamp::unix_millis))
    .bind(billing.cancelled_at.map(Timestamp::unix_millis))
    .bind(billing.destroy_at.map(Timestamp::unix_millis))
    .bind(billing.updated_at.unix_millis())
    .execute(executor)
    .await
    .map(|_| ())
}

pub(crate) async fn upsert_billing(
    pool: &Pool,
    billing: &Billing,
    now: Timestamp,
) -> Result<Billing, StoreError> {
    let stored = Billing {
        updated_at: now,
        ..billing.clone()
    };
    match write_billing(pool, &stored).await {
        Ok(()) => Ok(stored),
        Err(error) if is_foreign_key_violation(&error) => Err(StoreError::ClientNotFound {
            client: billing.client_id.clone(),
        }),
        Err(error) if is_unique_violation(&error) => {
            match billing_by_subscription(pool, &billing.subscription_id).await? {
                Some(owner) if owner.client_id != billing.client_id => {
                    Err(StoreError::SubscriptionTaken {
                        subscription: billing.subscription_id.clone(),
                        owner: owner.client_id,
                    })
                }
                _ => Err(StoreError::database("storing a client's billing")(error)),
            }
        }
        Err(error) => Err(StoreError::database("storing a client's billing")(error)),
    }
}

pub(crate) async fn billing(pool: &Pool, client: &ClientId) -> Result<Option<Billing>, StoreError> {
    sqlx::query(&format!(
        "SELECT {BILLING_COLUMNS} FROM billing WHERE client_id = $1"
    ))
    .bind(client.as_str())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("reading a client's billing"))?
    .as_ref()
    .map(billing_from_row)
    .transpose()
}

pub(crate) async fn billing_by_subscription(
    pool: &Pool,
    subscription: &str,
) -> Result<Option<Billing>, StoreError> {
    sqlx::query(&format!(
        "SELECT {BILLING_COLUMNS} FROM billing WHERE subscription_id = $1"
    ))
    .bind(subscription)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("reading billing by subscription"))?
    .as_ref()
    .map(billing_from_row)
    .transpose()
}

pub(crate) async fn billing_by_customer(
    pool: &Pool,
    customer: &str,
) -> Result<Vec<Billing>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {BILLING_COLUMNS} FROM billing WHERE customer_id = $1 ORDER BY client_id"
    ))
    .bind(customer)
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("reading billing by customer"))?;
    rows.iter().map(billing_from_row).collect()
}

/// The subscription after `change`, or `None` when the change does not apply to it.
fn apply_billing_change(
    current: &Billing,
    change: BillingChange,
    now: Timestamp,
) -> Option<Billing> {
    use BillingStatus::{Active, Cancelled, PastDue, Suspended};
    let mut next = current.clone();
    match (change, current.status) {
        (BillingChange::PaymentFailed { suspend_at }, Active) => {
            next.status = PastDue;
            next.payment_failed_at = Some(now);
            next.suspend_at = Some(suspend_at);
        }
        (BillingChange::Suspend, PastDue) => next.status = Suspended,
        (BillingChange::Paid, PastDue | Suspended) => {
            next.status = Active;
            next.payment_failed_at = None;
            next.suspend_at = None;
        }
        (BillingChange::Cancelled { destroy_at }, Active | PastDue | Suspended) => {
            next.status = Cancelled;
            next.cancelled_at = Some(now);
            next.destroy_at = Some(destroy_at);
            next.suspend_at = None;
        }
        (BillingChange::Plan(plan), _) if plan != current.plan => next.plan = plan,
        _ => return None,
    }
    next.updated_at = now;
    Some(next)
}

/// Reads (locking the row on PostgreSQL), decides and writes in one write transaction, so two
/// events for one subscription apply one after the other.
pub(crate) async fn set_billing_status(
    pool: &Pool,
    client: &ClientId,
    change: BillingChange,
    now: Timestamp,
) -> Result<BillingTransition, StoreError> {
    let action = StoreError::database;
    let mut tx = begin_write(pool)
        .await
        .map_err(action("starting to change a client's billing"))?;
    let row = sqlx::query(&format!(
        "SELECT {BILLING_COLUMNS} FROM billing WHERE client_id = $1{FOR_UPDATE}"
    ))
    .bind(client.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(action("reading a client's billing"))?;
    let current = match row {
        Some(row) => billing_from_row(&row)?,
        None => {
            return Err(StoreError::BillingNotFound {
                client: client.clone(),
            })
        }
    };
    let previous = current.status;
    let Some(next) = apply_billing_change(&current, change, now) else {
        return Ok(BillingTransition {
            previous,
            billing: current,
            changed: false,
        });
    };
    write_billing(&mut *tx, &next)
        .await
        .map_err(action("changing a client's billing"))?;
    tx.commit()
        .await
        .map_err(action("committing a client's billing"))?;
    Ok(BillingTransition {
        previous,
        billing: next,
        changed: true,
    })
}

async fn billing_due(
    pool: &Pool,
    status: BillingStatus,
    deadline_column: &str,
    now: Timestamp,
) -> Result<Vec<Billing>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {BILLING_COLUMNS} FROM billing WHERE status = $1 \
         AND {deadline_column} IS NOT NULL AND {deadline_column} <= $2 \
         ORDER BY {deadline_column}, client_id"
    ))
    .bind(status.as_str())
    .bind(now.unix_millis())
    .fetch_all(pool)
    .await
    .map_err(StoreError::database(
        "listing billing deadlines that are due",
    ))?;
    rows.iter().map(billing_from_row).collect()
}

pub(crate) async fn due_suspensions(
    pool: &Pool,
    now: Timestamp,
) -> Result<Vec<Billing>, StoreError> {
    billing_due(pool, BillingStatus::PastDue, "suspend_at", now).await
}

pub(crate) async fn due_destructions(
    pool: &Pool,
    now: Timestamp,
) -> Result<Vec<Billing>, StoreError> {
    billing_due(pool, BillingStatus::Cancelled, "destroy_at", now).await
}

// ---------------------------------------------------------------------------------------------
// Mail outbox

const MAIL_COLUMNS: &str = "id, dedupe_key, client_id, recipient, subject, status, attempts, \
     next_attempt_at, lease_until, last_error, created_at, sent_at";

fn mail_from_row(row: &Row) -> Result<MailRecord, StoreError> {
    const T: &str = "outbox";
    Ok(MailRecord {
        id: MailId::from_trusted(get(row, T, "id")?),
        dedupe_key: get(row, T, "dedupe_key")?,
        client_id: get_optional_client_id(row, T, "client_id")?,
        recipient: get_email(row, T, "recipient")?,
        subject: get(row, T, "subject")?,
        status: get_name(row, T, "status", MailStatus::from_name)?,
        attempts: get(row, T, "attempts")?,
        next_attempt_at: get_time(row, T, "next_attempt_at")?,
        lease_until: get_optional_time(row, T, "lease_until")?,
        last_error: get(row, T, "last_error")?,
        created_at: get_time(row, T, "created_at")?,
        sent_at: get_optional_time(row, T, "sent_at")?,
    })
}

/// Queues a mail; `false` when its dedupe key is already queued (or was sent).
pub(crate) async fn insert_mail(
    pool: &Pool,
    id: &MailId,
    mail: &NewMail,
    sealed: &[u8],
    now: Timestamp,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO outbox (id, dedupe_key, client_id, recipient, subject, body_sealed, \
         status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) \
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(&mail.dedupe_key)
    .bind(mail.client_id.as_ref().map(ClientId::as_str))
    .bind(mail.recipient.as_str())
    .bind(&mail.subject)
    .bind(sealed)
    .bind(now.unix_millis())
    .execute(pool)
    .await
    .map_err(StoreError::database("queueing a mail"))?;
    Ok(affected(&inserted) == 1)
}

/// Takes up to `limit` due mails (pending and due, or sending with an expired lease) in one
/// statement. The `picked` query chooses candidates (skipping rows another claimer holds, on
/// PostgreSQL); the `UPDATE`'s `WHERE` repeats the condition, which PostgreSQL re-checks on a
/// row another claimer changed meanwhile, so a row is never taken twice. `picked` is
/// `MATERIALIZED` so it runs once: as a plain `IN (SELECT … LIMIT … SKIP LOCKED)` PostgreSQL
/// may run it again while updating and take more than `limit` rows (the concurrency test saw
/// it). Each row comes with its sealed bodies.
pub(crate) async fn claim_due_mail(
    pool: &Pool,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<(MailRecord, Vec<u8>)>, StoreError> {
    const DUE: &str = "((status = 'pending' AND next_attempt_at <= $1) \
                       OR (status = 'sending' AND lease_until <= $1))";
    let sql = format!(
        "WITH picked AS MATERIALIZED (SELECT id FROM outbox WHERE {DUE} \
         ORDER BY next_attempt_at, id LIMIT $3{SKIP_LOCKED}) \
         UPDATE outbox SET status = 'sending', lease_until = $2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM picked) AND {DUE} \
         RETURNING {MAIL_COLUMNS}, body_sealed"
    );
    let rows = sqlx::query(&sql)
        .bind(now.unix_millis())
        .bind(lease_until.unix_millis())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("claiming mail to send"))?;
    let mut claimed = rows
        .iter()
        .map(|row| Ok((mail_from_row(row)?, get(row, "outbox", "body_sealed")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    // RETURNING has no order; ids sort by the time mails were queued.
    claimed.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    Ok(claimed)
}

pub(crate) async fn mail(pool: &Pool, id: &MailId) -> Result<Option<MailRecord>, StoreError> {
    sqlx::query(&format!("SELECT {MAIL_COLUMNS} FROM outbox WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::database("reading a mail"))?
        .as_ref()
        .map(mail_from_row)
        .transpose()
}

pub(crate) async fn mails_of_client(
    pool: &Pool,
    client: &ClientId,
) -> Result<Vec<MailRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {MAIL_COLUMNS} FROM outbox WHERE client_id = $1 ORDER BY id"
    ))
    .bind(client.as_str())
    .fetch_all(pool)
    .await
    .map_err(StoreError::database("listing a client's mail"))?;
    rows.iter().map(mail_from_row).collect()
}

/// A value bound after the mail id in [`change_mail`].
enum Param<'a> {
    Millis(i64),
    Text(&'a str),
}

/// One guarded status change of a mail: `set` (with `$2`, `$3`… for `params`) applies only
/// from the statuses in `from`. With `already`, finding the mail in the target status counts
/// as done (a repeated report). Nothing changed is explained as `MailNotFound` or
/// `MailTransition`.
async fn change_mail(
    pool: &Pool,
    id: &MailId,
    set: &str,
    params: &[Param<'_>],
    from: &[MailStatus],
    to: MailStatus,
    already: bool,
) -> Result<(), StoreError> {
    let from_list = from
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE outbox SET status = '{}', {set} WHERE id = $1 AND status IN ({from_list})",
        to.as_str()
    );
    let mut query = sqlx::query(&sql).bind(id.as_str());
    for param in params {
        query = match param {
            Param::Millis(millis) => query.bind(*millis),
            Param::Text(text) => query.bind(*text),
        };
    }
    let updated = query
        .execute(pool)
        .await
        .map_err(StoreError::database("changing a mail's status"))?;
    if affected(&updated) == 1 {
        return Ok(());
    }
    match mail(pool, id).await? {
        None => Err(StoreError::MailNotFound { mail: id.clone() }),
        Some(found) if already && found.status == to => Ok(()),
        Some(found) => Err(StoreError::MailTransition {
            mail: id.clone(),
            from: found.status,
            to,
        }),
    }
}

pub(crate) async fn mark_mail_sent(
    pool: &Pool,
    id: &MailId,
    now: Timestamp,
) -> Result<(), StoreError> {
    change_mail(
        pool,
        id,
        "sent_at = $2, lease_until = NULL",
        &[Param::Millis(now.unix_millis())],
        &[MailStatus::Sending],
        MailStatus::Sent,
        true,
    )
    .await
}

pub(crate) async fn mark_mail_retry(
    pool: &Pool,
    id: &MailId,
    next_attempt_at: Timestamp,
    error: &str,
) -> Result<(), StoreError> {
    change_mail(
        pool,
        id,
        "next_attempt_at = $2, last_error = $3, lease_until = NULL",
        &[
            Param::Millis(next_attempt_at.unix_millis()),
            Param::Text(error),
        ],
        &[MailStatus::Sending],
        MailStatus::Pending,
        false,
    )
    .await
}

pub(crate) async fn mark_mail_failed(
    pool: &Pool,
    id: &MailId,
    error: &str,
) -> Result<(), StoreError> {
    change_mail(
        pool,
        id,
        "last_error = $2, lease_until = NULL",
        &[Param::Text(error)],
        &[MailStatus::Sending, MailStatus::Pending],
        MailStatus::Failed,
        false,
    )
    .await
}

pub(crate) async fn requeue_mail(
    pool: &Pool,
    id: &MailId,
    now: Timestamp,
) -> Result<(), StoreError> {
    change_mail(
        pool,
        id,
        "next_attempt_at = $2, lease_until = NULL",
        &[Param::Millis(now.unix_millis())],
        &[MailStatus::Failed],
        MailStatus::Pending,
        false,
    )
    .await
}

pub(crate) async fn count_mail_by_status(
    pool: &Pool,
) -> Result<BTreeMap<MailStatus, u64>, StoreError> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS count FROM outbox GROUP BY status")
        .fetch_all(pool)
        .await
        .map_err(StoreError::database("counting mail"))?;
    let mut counts: BTreeMap<MailStatus, u64> =
        MailStatus::ALL.iter().map(|status| (*status, 0)).collect();
    for row in &rows {
        let status = get_name(row, "outbox", "status", MailStatus::from_name)?;
        let count: i64 = get(row, "outbox", "count")?;
        counts.insert(status, u64::try_from(count).unwrap_or(0));
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------
// Credential links

pub(crate) async fn insert_credential_link(
    pool: &Pool,
    hash: &[u8],
    client: &ClientId,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO credential_links (token_hash, client_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(client.as_str())
    .bind(now.unix_millis())
    .bind(expires_at.unix_millis())
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if is_foreign_key_violation(&error) => Err(StoreError::ClientNotFound {
            client: client.clone(),
        }),
        Err(error) => Err(StoreError::database("storing a credential link")(error)),
    }
}

fn link_from_row(row: &Row) -> Result<(ClientId, Vec<u8>), StoreError> {
    const T: &str = "credential_links";
    Ok((
        get_client_id(row, T, "client_id")?,
        get(row, T, "token_hash")?,
    ))
}

/// The client of a live (unviewed, unexpired) link, with the stored hash for the caller's
/// constant-time comparison.
pub(crate) async fn credential_link_client(
    pool: &Pool,
    hash: &[u8],
    now: Timestamp,
) -> Result<Option<(ClientId, Vec<u8>)>, StoreError> {
    sqlx::query(
        "SELECT client_id, token_hash FROM credential_links \
         WHERE token_hash = $1 AND viewed_at IS NULL AND expires_at > $2",
    )
    .bind(hash)
    .bind(now.unix_millis())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("looking up a credential link"))?
    .as_ref()
    .map(link_from_row)
    .transpose()
}

/// Marks a live link viewed in one guarded statement: of several callers, one gets the client.
pub(crate) async fn consume_credential_link(
    pool: &Pool,
    hash: &[u8],
    now: Timestamp,
) -> Result<Option<(ClientId, Vec<u8>)>, StoreError> {
    sqlx::query(
        "UPDATE credential_links SET viewed_at = $2 \
         WHERE token_hash = $1 AND viewed_at IS NULL AND expires_at > $2 \
         RETURNING client_id, token_hash",
    )
    .bind(hash)
    .bind(now.unix_millis())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::database("using a credential link"))?
    .as_ref()
    .map(link_from_row)
    .transpose()
}

pub(crate) async fn delete_expired_credential_links(
    pool: &Pool,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let deleted = sqlx::query("DELETE FROM credential_links WHERE expires_at <= $1")
        .bind(now.unix_millis())
        .execute(pool)
        .await
        .map_err(StoreError::database("deleting expired credential links"))?;
    Ok(affected(&deleted))
}

pub(crate) async fn revoke_credential_links(
    pool: &Pool,
    client: &ClientId,
) -> Result<u64, StoreError> {
    let deleted = sqlx::query("DELETE FROM credential_links WHERE client_id = $1")
        .bind(client.as_str())
        .execute(pool)
        .await
        .map_err(StoreError::database("revoking credential links"))?;
    Ok(affected(&deleted))
}
