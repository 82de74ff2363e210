//! Onboarding state: sign-ups, the Stripe events already handled, each client's billing, the
//! durable mail outbox and one-time credential links.
//!
//! # What each part guarantees
//!
//! - **Sign-ups** move pending → paid → provisioned, or pending → expired when abandoned.
//!   [`Store::claim_signup_for_provisioning`] is one guarded `UPDATE`: however many webhook
//!   deliveries race, exactly one gets `true` and provisions. An expired sign-up can still be
//!   claimed, because a payment that arrives late was taken all the same and must be served.
//! - **Stripe events**: [`Store::record_stripe_event`] is an `INSERT … ON CONFLICT DO
//!   NOTHING`; a redelivered event gets `false`, never an error, also when deliveries race.
//! - **Billing** changes through [`BillingChange`], each applied only where it makes sense
//!   (a repeated payment failure keeps the first deadline, a suspension after a payment does
//!   nothing), so late and repeated events are harmless.
//! - **The outbox** queues a mail once per dedupe key. [`Store::claim_due_mail`] leases due
//!   mails to one sender at a time; a sender that crashes leaves its mails `sending`, and they
//!   are claimed again once their lease runs out. A mail is sent twice only if a send outlasts
//!   its lease, so choose a lease well above the SMTP timeouts. The bodies (which hold one-time
//!   links) are sealed with the master key like secrets, the mail id as associated data.
//! - **Credential links** are 256-bit random tokens of which only the SHA-256 is stored;
//!   [`Store::consume_credential_link`] is one guarded `UPDATE`, so one caller ever sees the
//!   credentials.

use std::collections::BTreeMap;
use std::time::Duration;

use stackbox_core::client::{ClientId, ClientSpec, Email};
use subtle::ConstantTimeEq;

use crate::crypto;
use crate::model::{
    Billing, BillingChange, BillingTransition, MailId, MailRecord, MailStatus, NewMail, OutboxMail,
    PlaintextToken, Signup, SignupId, SignupStatus, Timestamp,
};
use crate::{checked_limit, postgres, sqlite, time_ordered_id, MasterKey, Pool, Store, StoreError};

/// The longest id or name from the payment provider accepted (checkout session, customer,
/// subscription, event id and event type).
pub const MAX_EXTERNAL_ID_CHARS: usize = 255;
/// The longest dedupe key of a mail.
pub const MAX_DEDUPE_KEY_CHARS: usize = 200;
/// The longest mail subject.
pub const MAX_SUBJECT_CHARS: usize = 500;
/// Longer delivery errors are cut to this many characters before they are stored.
const MAX_ERROR_CHARS: usize = 2000;

/// What `last_error` says of a mail whose sealed bodies do not open.
const UNDECRYPTABLE_MAIL: &str = "the mail's bodies cannot be decrypted with this master key \
     (another key, or the stored data was altered); queue the mail again";

/// Checks one line of text from outside: not empty, not too long, no control characters and
/// no surrounding whitespace (which would make two spellings of one id).
pub(crate) fn checked_line(
    field: &'static str,
    text: &str,
    max_chars: usize,
) -> Result<(), StoreError> {
    let invalid = |problem: String| Err(StoreError::InvalidValue { field, problem });
    if text.trim().is_empty() {
        return invalid("it is empty".to_string());
    }
    if text.chars().count() > max_chars {
        return invalid(format!("it is longer than {max_chars} characters"));
    }
    if text.chars().any(char::is_control) {
        return invalid("it contains a control character (such as a line break)".to_string());
    }
    if text.trim() != text {
        return invalid("it starts or ends with whitespace".to_string());
    }
    Ok(())
}

fn checked_duration(field: &'static str, duration: Duration) -> Result<(), StoreError> {
    if duration.is_zero() {
        return Err(StoreError::InvalidValue {
            field,
            problem: "it is zero; give a positive duration".to_string(),
        });
    }
    Ok(())
}

/// An error for people, cut to [`MAX_ERROR_CHARS`] on a character boundary.
pub(crate) fn shortened(error: &str) -> &str {
    match error.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => &error[..end],
        None => error,
    }
}

/// The configuration as TOML without the `client_id` line: `ClientSpec::to_toml` always writes
/// one, and a sign-up has no id yet. Read back and compared, so a change in the core's format
/// is noticed here rather than stored.
fn spec_toml_without_id(spec: &ClientSpec) -> Result<String, StoreError> {
    let placeholder = ClientId::new(&spec.company_name, 0);
    let toml: String = spec
        .to_toml(&placeholder)
        .lines()
        .filter(|line| !line.starts_with("client_id = "))
        .map(|line| format!("{line}\n"))
        .collect();
    match ClientSpec::from_toml(&toml) {
        Ok(parsed) if parsed == *spec => Ok(toml),
        Ok(_) => Err(StoreError::corrupt(
            "signups",
            "spec",
            "the configuration does not read back as written",
        )),
        Err(error) => Err(StoreError::corrupt("signups", "spec", error)),
    }
}

impl Store {
    // -- Sign-ups ---------------------------------------------------------------------------

    /// Stores a pending sign-up for a validated configuration, to be paid. The configuration
    /// must not name a `client_id` ([`StoreError::SignupClientIdGiven`]): the client gets its
    /// id when the sign-up is provisioned.
    pub async fn create_signup(
        &self,
        email: &Email,
        spec: &ClientSpec,
    ) -> Result<Signup, StoreError> {
        if let Some(client) = &spec.client_id {
            return Err(StoreError::SignupClientIdGiven {
                client: client.clone(),
            });
        }
        let now = Timestamp::now();
        let signup = Signup {
            id: SignupId::from_trusted(time_ordered_id(SignupId::PREFIX, now)?),
            email: email.clone(),
            spec_toml: spec_toml_without_id(spec)?,
            plan: spec.plan,
            status: SignupStatus::Pending,
            checkout_session_id: None,
            customer_id: None,
            subscription_id: None,
            client_id: None,
            created_at: now,
            updated_at: now,
        };
        on_backend!(self, onboarding_sql::insert_signup(&signup))?;
        Ok(signup)
    }

    /// Records the checkout session opened for a pending sign-up (replacing an earlier one,
    /// such as a session that expired). A session already recorded for another sign-up fails
    /// with [`StoreError::CheckoutSessionTaken`]; a sign-up that is no longer pending with
    /// [`StoreError::SignupTransition`].
    pub async fn set_signup_checkout(
        &self,
        id: &SignupId,
        session_id: &str,
    ) -> Result<(), StoreError> {
        checked_line("checkout_session_id", session_id, MAX_EXTERNAL_ID_CHARS)?;
        on_backend!(
            self,
            onboarding_sql::set_signup_checkout(id, session_id, Timestamp::now())
        )
    }

    pub async fn signup(&self, id: &SignupId) -> Result<Option<Signup>, StoreError> {
        on_backend!(self, onboarding_sql::signup(id))
    }

    /// The sign-up a checkout session was opened for (what `checkout.session.completed`
    /// names).
    pub async fn signup_by_checkout_session(
        &self,
        session_id: &str,
    ) -> Result<Option<Signup>, StoreError> {
        on_backend!(self, onboarding_sql::signup_by_checkout_session(session_id))
    }

    /// pending (or expired) → paid, recording the customer and subscription. Atomic: of
    /// several concurrent callers exactly one gets `true`, and only that one should provision;
    /// the others (and later callers) get `false`. A missing sign-up is
    /// [`StoreError::SignupNotFound`].
    pub async fn claim_signup_for_provisioning(
        &self,
        id: &SignupId,
        customer_id: &str,
        subscription_id: &str,
    ) -> Result<bool, StoreError> {
        checked_line("customer_id", customer_id, MAX_EXTERNAL_ID_CHARS)?;
        checked_line("subscription_id", subscription_id, MAX_EXTERNAL_ID_CHARS)?;
        on_backend!(
            self,
            onboarding_sql::claim_signup_for_provisioning(
                id,
                customer_id,
                subscription_id,
                Timestamp::now()
            )
        )
    }

    /// paid → provisioned, with the client it became. Repeating it with the same client is
    /// accepted (a resumed pipeline repeats its last step); anything else is
    /// [`StoreError::SignupTransition`].
    pub async fn mark_signup_provisioned(
        &self,
        id: &SignupId,
        client: &ClientId,
    ) -> Result<(), StoreError> {
        on_backend!(
            self,
            onboarding_sql::mark_signup_provisioned(id, client, Timestamp::now())
        )
    }

    /// Sign-ups paid but not provisioned (at most 1000, oldest first): a moment during
    /// provisioning, for good when their domain was taken by a sign-up that paid first.
    pub async fn paid_signups_not_provisioned(&self) -> Result<Vec<Signup>, StoreError> {
        on_backend!(self, onboarding_sql::paid_signups_not_provisioned())
    }

    /// A cancelled subscription's sign-up that never became a client: paid → expired (the
    /// operator refunded it). `true` when there was one.
    pub async fn close_unprovisioned_signup(
        &self,
        subscription_id: &str,
    ) -> Result<bool, StoreError> {
        on_backend!(
            self,
            onboarding_sql::close_unprovisioned_signup(subscription_id, Timestamp::now())
        )
    }

    /// Marks pending sign-ups created before `older_than` expired; returns how many.
    pub async fn expire_signups(&self, older_than: Timestamp) -> Result<u64, StoreError> {
        on_backend!(
            self,
            onboarding_sql::expire_signups(older_than, Timestamp::now())
        )
    }

    // -- Stripe events ----------------------------------------------------------------------

    /// Records that the event was received: `true` the first time, `false` for a redelivery
    /// (never an error, also when deliveries race). `kind` is the event's type, such as
    /// `invoice.paid`.
    pub async fn record_stripe_event(
        &self,
        event_id: &str,
        kind: &str,
    ) -> Result<bool, StoreError> {
        checked_line("event_id", event_id, MAX_EXTERNAL_ID_CHARS)?;
        checked_line("event type", kind, MAX_EXTERNAL_ID_CHARS)?;
        on_backend!(
            self,
            onboarding_sql::record_stripe_event(event_id, kind, Timestamp::now())
        )
    }

    pub async fn stripe_event_seen(&self, event_id: &str) -> Result<bool, StoreError> {
        on_backend!(self, onboarding_sql::stripe_event_seen(event_id))
    }

    /// Forgets events received before `received_before` (Stripe redelivers for three days, so
    /// keep a week or more); returns how many.
    pub async fn forget_stripe_events(
        &self,
        received_before: Timestamp,
    ) -> Result<u64, StoreError> {
        on_backend!(self, onboarding_sql::forget_stripe_events(received_before))
    }

    // -- Billing ----------------------------------------------------------------------------

    /// Stores the client's subscription, replacing every field of an earlier one
    /// (`updated_at` is set to now); returns it as stored. A missing client is
    /// [`StoreError::ClientNotFound`]; a subscription id another client has,
    /// [`StoreError::SubscriptionTaken`].
    pub async fn upsert_billing(&self, billing: &Billing) -> Result<Billing, StoreError> {
        checked_line("customer_id", &billing.customer_id, MAX_EXTERNAL_ID_CHARS)?;
        checked_line(
            "subscription_id",
            &billing.subscription_id,
            MAX_EXTERNAL_ID_CHARS,
        )?;
        on_backend!(
            self,
            onboarding_sql::upsert_billing(billing, Timestamp::now())
        )
    }

    pub async fn billing(&self, client: &ClientId) -> Result<Option<Billing>, StoreError> {
        on_backend!(self, onboarding_sql::billing(client))
    }

    pub async fn billing_by_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Option<Billing>, StoreError> {
        on_backend!(
            self,
            onboarding_sql::billing_by_subscription(subscription_id)
        )
    }

    /// Every client of a customer (one customer may buy several), in client id order.
    pub async fn billing_by_customer(&self, customer_id: &str) -> Result<Vec<Billing>, StoreError> {
        on_backend!(self, onboarding_sql::billing_by_customer(customer_id))
    }

    /// Applies what happened to the client's subscription (see [`BillingChange`] for where
    /// each change applies) and says what it did: `changed` is `false` when the change did
    /// not apply, and `previous` tells, for example, a suspended client that paid (start it
    /// again) from an active one. [`StoreError::BillingNotFound`] when the client has no
    /// billing.
    pub async fn set_billing_status(
        &self,
        client: &ClientId,
        change: BillingChange,
    ) -> Result<BillingTransition, StoreError> {
        on_backend!(
            self,
            onboarding_sql::set_billing_status(client, change, Timestamp::now())
        )
    }

    /// `past_due` clients whose `suspend_at` is at or before `now`, earliest deadline first.
    pub async fn due_suspensions(&self, now: Timestamp) -> Result<Vec<Billing>, StoreError> {
        on_backend!(self, onboarding_sql::due_suspensions(now))
    }

    /// `cancelled` clients whose `destroy_at` is at or before `now`, earliest deadline first.
    pub async fn due_destructions(&self, now: Timestamp) -> Result<Vec<Billing>, StoreError> {
        on_backend!(self, onboarding_sql::due_destructions(now))
    }

    // -- Mail outbox ------------------------------------------------------------------------

    /// Queues a mail, due now, its bodies sealed with `key`. `None` when a mail with the same
    /// dedupe key was queued before (whatever became of it): the same mail is never queued
    /// twice.
    pub async fn enqueue_mail(
        &self,
        mail: &NewMail,
        key: &MasterKey,
    ) -> Result<Option<MailId>, StoreError> {
        checked_line("dedupe_key", &mail.dedupe_key, MAX_DEDUPE_KEY_CHARS)?;
        checked_line("subject", &mail.subject, MAX_SUBJECT_CHARS)?;
        let now = Timestamp::now();
        let id = MailId::from_trusted(time_ordered_id(MailId::PREFIX, now)?);
        let sealed = crypto::seal_mail(key, &id, &mail.text, &mail.html)?;
        let inserted = on_backend!(self, onboarding_sql::insert_mail(&id, mail, &sealed, now))?;
        Ok(inserted.then_some(id))
    }

    /// Claims up to `limit` (1 to [`crate::MAX_PAGE_LIMIT`]) mails due at `now`: pending ones
    /// whose `next_attempt_at` has come, and `sending` ones whose lease ran out (their sender
    /// crashed). Each becomes `sending` until `now + lease`, with one more attempt counted,
    /// and comes back with its bodies decrypted, oldest first. Concurrent claimers never get
    /// the same mail.
    ///
    /// A mail whose bodies do not decrypt with `key` is marked failed (with the reason in
    /// `last_error`) rather than returned: it could never be sent, and would otherwise come
    /// back at every claim. Check the key at start-up with [`Store::check_master_key`], so a
    /// wrong key is refused before it gets here.
    pub async fn claim_due_mail(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: u32,
        key: &MasterKey,
    ) -> Result<Vec<OutboxMail>, StoreError> {
        checked_duration("lease", lease)?;
        let limit = checked_limit(limit)?;
        let rows = on_backend!(
            self,
            onboarding_sql::claim_due_mail(now, now.plus(lease), limit)
        )?;
        let mut claimed = Vec::with_capacity(rows.len());
        for (record, sealed) in rows {
            match crypto::open_mail(key, &record.id, &sealed) {
                Ok(body) => claimed.push(OutboxMail {
                    id: record.id,
                    dedupe_key: record.dedupe_key,
                    client_id: record.client_id,
                    recipient: record.recipient,
                    subject: record.subject,
                    body,
                    attempts: record.attempts,
                    lease_until: record.lease_until.unwrap_or(now.plus(lease)),
                    created_at: record.created_at,
                }),
                Err(StoreError::DecryptMail { .. }) => {
                    self.mark_mail_failed(&record.id, UNDECRYPTABLE_MAIL)
                        .await?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(claimed)
    }

    /// sending → sent. Reporting a mail sent again is accepted; a mail in another status is
    /// [`StoreError::MailTransition`].
    pub async fn mark_mail_sent(&self, id: &MailId) -> Result<(), StoreError> {
        on_backend!(self, onboarding_sql::mark_mail_sent(id, Timestamp::now()))
    }

    /// sending → pending, due again at `next_attempt_at`, with the delivery error (cut to 2000
    /// characters) for people.
    pub async fn mark_mail_retry(
        &self,
        id: &MailId,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<(), StoreError> {
        on_backend!(
            self,
            onboarding_sql::mark_mail_retry(id, next_attempt_at, shortened(error))
        )
    }

    /// sending or pending → failed, given up, with the reason (cut to 2000 characters).
    pub async fn mark_mail_failed(&self, id: &MailId, error: &str) -> Result<(), StoreError> {
        on_backend!(self, onboarding_sql::mark_mail_failed(id, shortened(error)))
    }

    /// failed → pending, due now: an operator's retry after fixing the cause.
    pub async fn requeue_mail(&self, id: &MailId) -> Result<(), StoreError> {
        on_backend!(self, onboarding_sql::requeue_mail(id, Timestamp::now()))
    }

    /// A queued mail without its bodies.
    pub async fn mail(&self, id: &MailId) -> Result<Option<MailRecord>, StoreError> {
        on_backend!(self, onboarding_sql::mail(id))
    }

    /// The mails queued for a client (also after the client was deleted), oldest first,
    /// without their bodies.
    pub async fn mails_of_client(&self, client: &ClientId) -> Result<Vec<MailRecord>, StoreError> {
        on_backend!(self, onboarding_sql::mails_of_client(client))
    }

    /// How many mails are in each status; every status is present, zeros included.
    pub async fn count_mail_by_status(&self) -> Result<BTreeMap<MailStatus, u64>, StoreError> {
        on_backend!(self, onboarding_sql::count_mail_by_status())
    }

    // -- Credential links -------------------------------------------------------------------

    /// Creates a one-time link token for the client's credentials, valid for `ttl`: 32 random
    /// bytes in unpadded Base64url (43 characters). Returned here only; the store keeps its
    /// SHA-256.
    pub async fn create_credential_link(
        &self,
        client: &ClientId,
        ttl: Duration,
    ) -> Result<PlaintextToken, StoreError> {
        checked_duration("ttl", ttl)?;
        let token = crypto::new_link_token()?;
        let hash = crypto::token_hash(&token);
        let now = Timestamp::now();
        on_backend!(
            self,
            onboarding_sql::insert_credential_link(&hash, client, now, now.plus(ttl))
        )?;
        Ok(PlaintextToken::new(token.to_string()))
    }

    /// The client whose link this is, if the link is unused and not expired at `now`; it is
    /// not used up (for a confirmation page before the credentials are shown).
    pub async fn credential_link_client(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<Option<ClientId>, StoreError> {
        if !crypto::looks_like_link_token(token) {
            return Ok(None);
        }
        let hash = crypto::token_hash(token);
        let found = on_backend!(self, onboarding_sql::credential_link_client(&hash, now))?;
        Ok(matching_client(found, &hash))
    }

    /// Uses the link up: the client if the link was unused and not expired at `now`, and
    /// `None` for every later or concurrent call (one caller ever gets the client).
    pub async fn consume_credential_link(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<Option<ClientId>, StoreError> {
        if !crypto::looks_like_link_token(token) {
            return Ok(None);
        }
        let hash = crypto::token_hash(token);
        let found = on_backend!(self, onboarding_sql::consume_credential_link(&hash, now))?;
        Ok(matching_client(found, &hash))
    }

    /// Deletes links expired at `now` (used or not); returns how many.
    pub async fn delete_expired_credential_links(&self, now: Timestamp) -> Result<u64, StoreError> {
        on_backend!(self, onboarding_sql::delete_expired_credential_links(now))
    }

    /// Deletes every link of a client (before a new one is sent, so that only the newest
    /// works); returns how many.
    pub async fn revoke_credential_links(&self, client: &ClientId) -> Result<u64, StoreError> {
        on_backend!(self, onboarding_sql::revoke_credential_links(client))
    }
}

/// The client of a looked-up link, after comparing the stored hash in constant time (as tokens
/// are).
fn matching_client(found: Option<(ClientId, Vec<u8>)>, hash: &[u8]) -> Option<ClientId> {
    found
        .filter(|(_, stored)| bool::from(stored.as_slice().ct_eq(hash)))
        .map(|(client, _)| client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_with_line_breaks_or_padding_are_refused() {
        assert!(checked_line("event_id", "evt_1Q2w3E", MAX_EXTERNAL_ID_CHARS).is_ok());
        for bad in ["", "  ", "evt_1\r\nX-Injected: 1", " evt_1", "evt_1 "] {
            let error = checked_line("event_id", bad, MAX_EXTERNAL_ID_CHARS).unwrap_err();
            assert!(
                matches!(
                    error,
                    StoreError::InvalidValue {
                        field: "event_id",
                        ..
                    }
                ),
                "{bad:?}: {error:?}"
            );
        }
        let long = "x".repeat(MAX_EXTERNAL_ID_CHARS + 1);
        assert!(checked_line("event_id", &long, MAX_EXTERNAL_ID_CHARS).is_err());
    }

    #[test]
    fn long_delivery_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS);
        assert_eq!(shortened("short"), "short");
    }
}
