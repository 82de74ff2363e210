//! Onboarding: sign-up → payment → the pipeline → the welcome e-mail, and the subscription's
//! life after day one (failed payments, suspension, plan changes, cancellation).
//!
//! The payment provider and the mail server sit behind two small traits defined here, where
//! they are used ([`Payments`], [`Mailer`]); `stackbox-billing` and `stackbox-mail` provide the
//! real ones. Every decision about a subscription is the core's
//! ([`stackbox_core::onboarding::consequences`]); every state change is one guarded update in
//! the store, so a webhook delivered twice, or racing the deadline ticker, changes things once.
//!
//! Mail goes through the store's durable outbox: composing a message queues it under a
//! dedupe key (a welcome is queued once per client, whatever happens), and [`deliver_mail`]
//! sends what is due, retrying with exponential back-off while the mail server is down.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::notify;
use stackbox_core::onboarding::{
    consequences, BillingAction, BillingInput, BillingStatus as CoreBillingStatus, Notice,
    OnboardingSettings,
};
use stackbox_core::secrets::{SecretKey, Secrets};
use stackbox_store::{
    Billing, BillingChange, BillingStatus, ClientState, DeploymentKind, NewMail, SignupId,
    SignupStatus, Timestamp,
};

use crate::{Control, ControlError};

/// The payment provider as onboarding uses it (Stripe's client in production; usable as
/// `Arc<dyn Payments>`).
pub use stackbox_billing::Payments;

/// Why a message was not sent.
#[derive(Debug, Clone)]
pub struct MailFailure {
    /// Worth retrying later (the server is down, or answered 4xx).
    pub transient: bool,
    /// What the server or the connection said (no credentials).
    pub message: String,
}

/// Sends one e-mail (SMTP in production). `message_id` is stable across retries.
pub trait Mailer: Send + Sync {
    fn send<'a>(
        &'a self,
        email: &'a notify::Email,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<(), MailFailure>>;
}

impl Mailer for stackbox_mail::SmtpMailer {
    fn send<'a>(
        &'a self,
        email: &'a notify::Email,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<(), MailFailure>> {
        Box::pin(async move {
            stackbox_mail::SmtpMailer::send(self, email, message_id)
                .await
                .map_err(|error| MailFailure {
                    transient: error.is_transient(),
                    message: error.to_string(),
                })
        })
    }
}

/// Onboarding's settings and adapters, given to [`crate::ControlConfig`].
#[derive(Clone)]
pub struct Onboarding {
    pub settings: OnboardingSettings,
    /// `None`: no sign-ups (the route answers 404).
    pub payments: Option<Arc<dyn Payments>>,
    /// `None`: no mail is queued.
    pub mailer: Option<Arc<dyn Mailer>>,
    /// How often deadlines (end of grace, end of retention) and due mail are looked at.
    pub tick: Duration,
    /// The first retry of a mail waits this long, each next one twice as long (at most an
    /// hour).
    pub mail_retry_base: Duration,
}

impl fmt::Debug for Onboarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Onboarding")
            .field("settings", &self.settings)
            .field("payments", &self.payments.is_some())
            .field("mailer", &self.mailer.is_some())
            .field("tick", &self.tick)
            .field("mail_retry_base", &self.mail_retry_base)
            .finish()
    }
}

impl Default for Onboarding {
    fn default() -> Self {
        Onboarding::new(OnboardingSettings::default())
    }
}

impl Onboarding {
    /// Production cadence: deadlines and mail every 30 s, mail retries from 30 s.
    pub fn new(settings: OnboardingSettings) -> Onboarding {
        Onboarding {
            settings,
            payments: None,
            mailer: None,
            tick: Duration::from_secs(30),
            mail_retry_base: Duration::from_secs(30),
        }
    }
}

/// A mail is given up after this many attempts (with the back-off capped at an hour, about a
/// day of trying), and then shows as `failed` for the operator.
pub const MAX_MAIL_ATTEMPTS: i64 = 30;

/// How long a sender holds a claimed mail before another may take it over, and how many it
/// claims at once: the batch is sent one by one, and 3 × the SMTP exchange's 90 s limit stays
/// inside the lease, so a slow server never makes a second sender take over a mail in flight.
const MAIL_LEASE: Duration = Duration::from_secs(300);
const MAIL_BATCH: u32 = 3;

/// What a sign-up returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupOutcome {
    pub signup_id: String,
    pub checkout_url: String,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    Processed,
    Duplicate,
    Ignored,
}

/// A page for a person, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub html: String,
}

fn now_unix() -> i64 {
    Timestamp::now().unix_millis() / 1000
}

fn seconds(value: u64) -> Duration {
    Duration::from_secs(value)
}

fn after(duration: Duration) -> Timestamp {
    Timestamp::from_unix_millis(
        Timestamp::now()
            .unix_millis()
            .saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// A date as people read it: `2026-12-03 14:00 UTC`.
fn human_date(at: Timestamp) -> String {
    let text = at.to_string(); // RFC 3339, e.g. 2026-12-03T14:00:05.123Z
    match (text.get(0..10), text.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => text,
    }
}

fn core_status(status: BillingStatus) -> CoreBillingStatus {
    match status {
        BillingStatus::Active => CoreBillingStatus::Active,
        BillingStatus::PastDue => CoreBillingStatus::PastDue,
        BillingStatus::Suspended => CoreBillingStatus::Suspended,
        BillingStatus::Cancelled => CoreBillingStatus::Cancelled,
    }
}

/// The client a sign-up becomes: the same id whenever it is computed, so a redelivered
/// `checkout.session.completed` finds the client it made the first time.
fn client_id_of_signup(spec: &ClientSpec, signup: &SignupId) -> ClientId {
    let digest = Sha256::digest(signup.as_str().as_bytes());
    let random = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    ClientId::new(&spec.company_name, random)
}

impl Control {
    fn onboarding(&self) -> &Onboarding {
        &self.inner.config.onboarding
    }

    /// Stores a pending sign-up and opens its checkout page.
    pub async fn signup(&self, spec: ClientSpec) -> Result<SignupOutcome, ControlError> {
        let onboarding = self.onboarding();
        let (Some(stripe), Some(payments)) = (&onboarding.settings.stripe, &onboarding.payments)
        else {
            return Err(ControlError::OnboardingDisabled);
        };
        let Some(price) = stripe.prices.get(&spec.plan) else {
            return Err(ControlError::Invalid {
                field: "plan".into(),
                problem: format!(
                    "the {} plan cannot be bought here; choose one of: {}",
                    spec.plan.key(),
                    stripe
                        .prices
                        .keys()
                        .map(|plan| plan.key())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let store = self.store();
        self.domain_free(&spec.domain, None).await?;
        let signup = store.create_signup(&spec.admin_email, &spec).await?;
        let request = stackbox_billing::CheckoutRequest {
            price_id: price.clone(),
            customer_email: Some(spec.admin_email.as_str().to_string()),
            client_reference_id: signup.id.as_str().to_string(),
            success_url: stripe.success_url.clone(),
            cancel_url: stripe.cancel_url.clone(),
            metadata: [("signup_id".to_string(), signup.id.as_str().to_string())]
                .into_iter()
                .collect(),
            // A retried request (ours, or the client library's) never opens a second session.
            idempotency_key: signup.id.as_str().to_string(),
        };
        let session = payments
            .create_checkout_session(&request)
            .await
            .map_err(|error| ControlError::Payment {
                transient: error.is_transient(),
                problem: error.to_string(),
            })?;
        store.set_signup_checkout(&signup.id, &session.id).await?;
        Ok(SignupOutcome {
            signup_id: signup.id.as_str().to_string(),
            checkout_url: session.url,
        })
    }

    /// Verifies and handles one webhook delivery.
    pub async fn stripe_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookResult, ControlError> {
        let Some(stripe) = &self.onboarding().settings.stripe else {
            return Err(ControlError::OnboardingDisabled);
        };
        let Some(signature) = signature else {
            return Err(ControlError::BadWebhook(
                "the Stripe-Signature header is missing".into(),
            ));
        };
        stackbox_billing::signature::verify(
            signature,
            body,
            stripe.webhook_secret.expose(),
            now_unix(),
            seconds(stripe.signature_tolerance_seconds),
        )
        .map_err(|error| ControlError::BadWebhook(error.to_string()))?;
        let event = stackbox_billing::event::Event::parse(body)
            .map_err(|error| ControlError::BadWebhook(error.to_string()))?;
        // A test-mode event must not act on a live account, nor the other way round.
        let live_key = stripe.secret_key.expose().starts_with("sk_live_")
            || stripe.secret_key.expose().starts_with("rk_live_");
        if event.livemode != live_key {
            tracing::warn!(event = %event.id, livemode = event.livemode, "event from the other Stripe mode ignored");
            return Ok(WebhookResult::Ignored);
        }
        let store = self.store();
        if store.stripe_event_seen(&event.id).await? {
            return Ok(WebhookResult::Duplicate);
        }
        let result = self.handle_event(&event).await?;
        // Recorded only once handled: a delivery that failed half-way is handled again
        // when Stripe retries it, and every step above is idempotent.
        store
            .record_stripe_event(&event.id, event.kind.type_name())
            .await?;
        Ok(result)
    }

    async fn handle_event(
        &self,
        event: &stackbox_billing::event::Event,
    ) -> Result<WebhookResult, ControlError> {
        use stackbox_billing::event::EventKind;
        let store = self.store();
        let settings = &self.onboarding().settings;
        match &event.kind {
            EventKind::CheckoutSessionCompleted {
                session_id,
                client_reference_id,
                customer,
                subscription,
                ..
            } => {
                let by_reference = match client_reference_id
                    .as_deref()
                    .and_then(|id| SignupId::parse(id).ok())
                {
                    Some(id) => store.signup(&id).await?,
                    None => None,
                };
                let signup = match by_reference {
                    Some(signup) => Some(signup),
                    None => store.signup_by_checkout_session(session_id).await?,
                };
                // Not one of ours (another product on the same Stripe account).
                let Some(signup) = signup else {
                    return Ok(WebhookResult::Ignored);
                };
                let (Some(customer), Some(subscription)) = (customer, subscription) else {
                    return Err(ControlError::BadWebhook(
                        "checkout.session.completed without a customer and a subscription: \
                         the session was not opened in subscription mode"
                            .into(),
                    ));
                };
                self.provision_signup(&signup.id, customer, subscription)
                    .await?;
                Ok(WebhookResult::Processed)
            }
            EventKind::SubscriptionUpdated {
                subscription_id,
                price_ids,
                ..
            } => {
                let Some(billing) = store.billing_by_subscription(subscription_id).await? else {
                    return Ok(WebhookResult::Ignored);
                };
                let Some(stripe) = &settings.stripe else {
                    return Ok(WebhookResult::Ignored);
                };
                let Some(plan) = price_ids.iter().find_map(|p| stripe.plan_of_price(p)) else {
                    tracing::warn!(
                        client = %billing.client_id,
                        "a subscription moved to a price that is no plan's; nothing changed"
                    );
                    return Ok(WebhookResult::Ignored);
                };
                let input = BillingInput::PlanChanged {
                    from: billing.plan,
                    to: plan,
                };
                self.transition(&billing, input, BillingChange::Plan(plan), &event.id)
                    .await?;
                Ok(WebhookResult::Processed)
            }
            EventKind::SubscriptionDeleted {
                subscription_id, ..
            } => {
                let Some(billing) = store.billing_by_subscription(subscription_id).await? else {
                    // A sign-up that lost its domain and was refunded: nothing to stop; the
                    // sign-up is closed, which resolves its alert.
                    if store.close_unprovisioned_signup(subscription_id).await? {
                        tracing::info!(subscription = subscription_id, "the subscription of a sign-up that was not provisioned was cancelled: sign-up closed");
                        return Ok(WebhookResult::Processed);
                    }
                    return Ok(WebhookResult::Ignored);
                };
                let destroy_at = after(seconds(settings.retention_seconds));
                self.transition(
                    &billing,
                    BillingInput::SubscriptionDeleted,
                    BillingChange::Cancelled { destroy_at },
                    &event.id,
                )
                .await?;
                Ok(WebhookResult::Processed)
            }
            EventKind::InvoicePaymentFailed {
                subscription_id: Some(subscription_id),
                ..
            } => {
                let Some(billing) = store.billing_by_subscription(subscription_id).await? else {
                    return Ok(WebhookResult::Ignored);
                };
                let suspend_at = after(seconds(settings.grace_period_seconds));
                self.transition(
                    &billing,
                    BillingInput::PaymentFailed,
                    BillingChange::PaymentFailed { suspend_at },
                    &event.id,
                )
                .await?;
                Ok(WebhookResult::Processed)
            }
            EventKind::InvoicePaid {
                subscription_id: Some(subscription_id),
                ..
            } => {
                let Some(billing) = store.billing_by_subscription(subscription_id).await? else {
                    return Ok(WebhookResult::Ignored);
                };
                self.transition(&billing, BillingInput::Paid, BillingChange::Paid, &event.id)
                    .await?;
                Ok(WebhookResult::Processed)
            }
            _ => Ok(WebhookResult::Ignored),
        }
    }

    /// A paid sign-up becomes a client (once) with an active subscription.
    async fn provision_signup(
        &self,
        signup_id: &SignupId,
        customer: &str,
        subscription: &str,
    ) -> Result<(), ControlError> {
        let store = self.store();
        store
            .claim_signup_for_provisioning(signup_id, customer, subscription)
            .await?;
        let Some(signup) = store.signup(signup_id).await? else {
            return Ok(());
        };
        if signup.status == SignupStatus::Provisioned {
            return Ok(());
        }
        let mut spec = signup.spec()?;
        let id = client_id_of_signup(&spec, signup_id);
        if store.client(&id).await?.is_none() {
            spec.client_id = Some(id.clone());
            let plan = spec.plan;
            match self.create_client(spec.clone()).await {
                Ok(_) => {}
                // Two sign-ups for one domain both paid: the second cannot be provisioned.
                // Answering an error would make Stripe redeliver for days to no end; the
                // buyer is told instead, and the operator's log says what to refund.
                Err(ControlError::DomainTaken { domain, owner }) => {
                    tracing::error!(signup = %signup_id, %domain, %owner, customer, subscription, "a paid sign-up's domain was taken in the meantime: not provisioned; refund or move it");
                    let email = notify::domain_unavailable(&spec);
                    self.queue_mail(format!("domain-taken:{signup_id}"), None, email)
                        .await?;
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
            tracing::info!(client = %id, signup = %signup_id, plan = plan.key(), "paid sign-up provisioned");
        }
        // Without a billing row no plan change can have reached the client: the sign-up's
        // plan is the client's.
        if store.billing(&id).await?.is_none() {
            store
                .upsert_billing(&Billing::active(
                    id.clone(),
                    customer,
                    subscription,
                    signup.plan,
                ))
                .await?;
        }
        store.mark_signup_provisioned(signup_id, &id).await?;
        Ok(())
    }

    /// Applies one change to a subscription in the store and carries out what follows.
    async fn transition(
        &self,
        billing: &Billing,
        input: BillingInput,
        change: BillingChange,
        cause: &str,
    ) -> Result<(), ControlError> {
        let store = self.store();
        // A stop or start cannot be queued while another deployment of the client runs;
        // refusing the delivery now (before anything changed) makes Stripe retry it later.
        let acts_on_engine = matches!(
            input,
            BillingInput::Paid | BillingInput::SubscriptionDeleted
        );
        if acts_on_engine && self.busy(&billing.client_id).await? {
            return Err(ControlError::Busy {
                client: billing.client_id.clone(),
            });
        }
        let outcome = store.set_billing_status(&billing.client_id, change).await?;
        let mut actions = consequences(input, core_status(outcome.previous), outcome.changed);
        // A delivery that finds its change already made may be the redelivery of one that
        // failed after the change and before its notice was queued: queue the notice again.
        // Its dedupe key comes from the stored state (one per arrears, one per cancellation),
        // so a notice already queued is not queued twice.
        if !outcome.changed {
            let status = outcome.billing.status;
            match input {
                BillingInput::PaymentFailed if status == BillingStatus::PastDue => {
                    actions.push(BillingAction::Notify(Notice::PaymentFailed));
                }
                BillingInput::SubscriptionDeleted if status == BillingStatus::Cancelled => {
                    actions.push(BillingAction::Notify(Notice::Cancelled));
                }
                _ => {}
            }
        }
        self.carry_out(&outcome.billing, &actions, cause).await
    }

    /// Whether a deployment of the client is unfinished.
    pub(crate) async fn busy(&self, client: &ClientId) -> Result<bool, ControlError> {
        let latest = self.store().deployments_of_client(client, 1).await?;
        Ok(latest.first().is_some_and(|d| !d.status.is_finished()))
    }

    async fn carry_out(
        &self,
        billing: &Billing,
        actions: &[BillingAction],
        cause: &str,
    ) -> Result<(), ControlError> {
        let client = &billing.client_id;
        for action in actions {
            match action {
                BillingAction::Notify(notice) => {
                    self.queue_notice(billing, *notice, cause).await?;
                }
                BillingAction::Stop => {
                    self.request(client, DeploymentKind::Stop).await?;
                }
                BillingAction::Start => {
                    self.request(client, DeploymentKind::Start).await?;
                }
                BillingAction::Destroy => {
                    self.request(client, DeploymentKind::Destroy).await?;
                }
                BillingAction::ChangePlan(plan) => self.change_plan(client, *plan).await?,
            }
        }
        Ok(())
    }

    /// Moves a client to another plan, keeping its data: the configuration changes (apps of
    /// the new plan on, apps above it off), the secrets of new apps are generated, and a
    /// running client is redeployed (services added or removed; volumes stay).
    async fn change_plan(
        &self,
        client: &ClientId,
        plan: stackbox_core::plan::Plan,
    ) -> Result<(), ControlError> {
        let store = self.store();
        let Some(record) = store.client(client).await? else {
            return Ok(());
        };
        let mut spec = record.spec()?;
        if spec.plan == plan {
            return Ok(());
        }
        spec.plan = plan;
        // An app switched off stays off; one switched on above the new plan goes.
        spec.features
            .retain(|app, enabled| !*enabled || app.minimum_plan() <= plan);
        let spec = ClientSpec::from_toml(&spec.to_toml(client))?;
        let mut secrets = store
            .get_secrets(client, &self.inner.key)
            .await?
            .unwrap_or_default();
        secrets.fill_missing(
            &SecretKey::needed_for(&spec.apps()),
            &mut stackbox_bundle::OsRandom,
        );
        store.put_secrets(client, &secrets, &self.inner.key).await?;
        store.update_client_spec(client, &spec).await?;
        let running = matches!(
            record.state,
            ClientState::Running | ClientState::Starting | ClientState::Degraded
        );
        if running {
            self.request(client, DeploymentKind::Redeploy).await?;
        }
        Ok(())
    }

    async fn queue_notice(
        &self,
        billing: &Billing,
        notice: Notice,
        cause: &str,
    ) -> Result<(), ControlError> {
        let Some(record) = self.store().client(&billing.client_id).await? else {
            return Ok(());
        };
        let spec = record.spec()?;
        // What makes a notice the same notice: the arrears it is about (every retry of a
        // failed invoice is one "payment failed"), the cancellation, else the event.
        let since = |at: Option<Timestamp>| {
            at.map(|t| t.unix_millis().to_string())
                .unwrap_or_else(|| cause.to_string())
        };
        let (key, email) = match notice {
            Notice::PaymentFailed => {
                let until = billing.suspend_at.map(human_date).unwrap_or_default();
                (
                    format!("payment-failed:{}", since(billing.payment_failed_at)),
                    notify::payment_failed(&spec, &until, None),
                )
            }
            Notice::Suspended => (
                format!("suspended:{}", since(billing.payment_failed_at)),
                notify::suspended(&spec),
            ),
            Notice::Resumed => (format!("resumed:{cause}"), notify::resumed(&spec)),
            Notice::Cancelled => {
                let until = billing.destroy_at.map(human_date).unwrap_or_default();
                (
                    format!("cancelled:{}", since(billing.cancelled_at)),
                    notify::cancelled(&spec, &until),
                )
            }
            Notice::PlanChanged { from, to } => (
                format!("plan-changed:{}:{cause}", to.key()),
                notify::plan_changed(&spec, from, to),
            ),
        };
        self.queue_mail(
            format!("{key}@{}", billing.client_id),
            Some(&billing.client_id),
            email,
        )
        .await?;
        Ok(())
    }

    /// Queues a mail once per `dedupe_key`; `false` when it was queued before or mail is
    /// not configured.
    pub(crate) async fn queue_mail(
        &self,
        dedupe_key: String,
        client: Option<&ClientId>,
        email: notify::Email,
    ) -> Result<bool, ControlError> {
        if self.onboarding().mailer.is_none() {
            return Ok(false);
        }
        let mail = NewMail {
            dedupe_key,
            client_id: client.cloned(),
            recipient: email.to.clone(),
            subject: email.subject,
            text: email.text,
            html: email.html,
        };
        let queued = self
            .store()
            .enqueue_mail(&mail, &self.inner.key)
            .await?
            .is_some();
        if queued {
            self.inner.mail_waiting.notify_one();
        }
        Ok(queued)
    }

    /// The notify step: the welcome e-mail with the service URLs and a one-time link to the
    /// admin password, queued once per client.
    pub(crate) async fn queue_welcome(
        &self,
        client: &ClientId,
        spec: &ClientSpec,
    ) -> Result<serde_json::Value, ControlError> {
        self.welcome(client, spec, false).await
    }

    /// Sends the welcome e-mail again with a new one-time link (the owner lost the first, or
    /// it expired or was used); every earlier link stops working.
    pub async fn resend_welcome(&self, client: &ClientId) -> Result<(), ControlError> {
        if self.onboarding().mailer.is_none() || self.onboarding().settings.public_url.is_none() {
            return Err(ControlError::MailDisabled);
        }
        let Some(record) = self.store().client(client).await? else {
            return Err(ControlError::UnknownClient {
                client: client.clone(),
            });
        };
        self.welcome(client, &record.spec()?, true).await?;
        Ok(())
    }

    async fn welcome(
        &self,
        client: &ClientId,
        spec: &ClientSpec,
        again: bool,
    ) -> Result<serde_json::Value, ControlError> {
        let settings = &self.onboarding().settings;
        if self.onboarding().mailer.is_none() {
            return Ok(serde_json::json!({ "welcome": "not sent: no mail server configured" }));
        }
        let Some(public_url) = &settings.public_url else {
            return Ok(serde_json::json!({ "welcome": "not sent: no public URL configured" }));
        };
        let dedupe_key = if again {
            self.store().revoke_credential_links(client).await?;
            format!("welcome:{client}:{}", Timestamp::now().unix_millis())
        } else {
            let key = format!("welcome:{client}");
            // Queued by an earlier deployment: no second link either.
            let earlier = self.store().mails_of_client(client).await?;
            if earlier.iter().any(|mail| mail.dedupe_key == key) {
                return Ok(serde_json::json!({ "welcome": "queued before" }));
            }
            key
        };
        let ttl = seconds(settings.credentials_link_seconds);
        let token = self.store().create_credential_link(client, ttl).await?;
        let link = format!("{public_url}/welcome/{}", token.expose());
        let email = notify::welcome(
            spec,
            &stackbox_core::stack::service_urls(spec),
            stackbox_core::stack::ADMIN_USERNAME,
            &link,
            &human_date(after(ttl)),
        );
        let queued = self.queue_mail(dedupe_key, Some(client), email).await?;
        Ok(serde_json::json!({ "welcome": if queued { "queued" } else { "queued before" } }))
    }

    /// `GET` (confirm) and `POST` (reveal, once) of a one-time credentials link.
    pub async fn credentials_page(&self, token: &str, reveal: bool) -> Result<Page, ControlError> {
        let store = self.store();
        let now = Timestamp::now();
        let client = if reveal {
            store.consume_credential_link(token, now).await?
        } else {
            store.credential_link_client(token, now).await?
        };
        let record = match &client {
            Some(id) => store.client(id).await?,
            None => None,
        };
        let Some(record) = record else {
            // The operator's own brand is not known here; a neutral page.
            let company = stackbox_core::client::CompanyName::parse("StackBox")?;
            let brand = stackbox_core::client::BrandColor::default();
            return Ok(Page {
                status: 410,
                html: notify::credentials_page_gone(&company, &brand),
            });
        };
        let spec = record.spec()?;
        if !reveal {
            return Ok(Page {
                status: 200,
                html: notify::credentials_page_confirm(
                    &spec.company_name,
                    &spec.brand_color,
                    &format!("/welcome/{token}"),
                ),
            });
        }
        let secrets: Secrets = store
            .get_secrets(&record.id, &self.inner.key)
            .await?
            .unwrap_or_default();
        let password = secrets.get(SecretKey::AdminPassword).unwrap_or_default();
        tracing::info!(client = %record.id, "one-time credentials link used");
        Ok(Page {
            status: 200,
            html: notify::credentials_page_reveal(
                &spec.company_name,
                &spec.brand_color,
                stackbox_core::stack::ADMIN_USERNAME,
                password,
                &stackbox_core::stack::service_urls(&spec),
            ),
        })
    }

    /// One pass over the subscription deadlines: grace periods that ended (stop), retention
    /// periods that ended (destroy), sign-ups abandoned for a day.
    pub async fn billing_deadlines(&self) -> Result<(), ControlError> {
        let store = self.store();
        let now = Timestamp::now();
        for billing in store.due_suspensions(now).await? {
            if self.busy(&billing.client_id).await? {
                continue; // next tick
            }
            let outcome = store
                .set_billing_status(&billing.client_id, BillingChange::Suspend)
                .await?;
            let actions = consequences(
                BillingInput::GraceOver,
                core_status(outcome.previous),
                outcome.changed,
            );
            let cause = format!(
                "{}",
                billing.suspend_at.map(|t| t.unix_millis()).unwrap_or(0)
            );
            self.carry_out(&outcome.billing, &actions, &cause).await?;
        }
        for billing in store.due_destructions(now).await? {
            if self.busy(&billing.client_id).await? {
                continue;
            }
            let actions = consequences(
                BillingInput::RetentionOver,
                CoreBillingStatus::Cancelled,
                true,
            );
            self.carry_out(&billing, &actions, "retention").await?;
        }
        let day_ago = Timestamp::from_unix_millis(now.unix_millis() - 24 * 3600 * 1000);
        store.expire_signups(day_ago).await?;
        Ok(())
    }

    /// Sends the mail that is due, once; `Ok(n)` mails were tried.
    pub async fn deliver_mail(&self) -> Result<usize, ControlError> {
        let Some(mailer) = self.onboarding().mailer.clone() else {
            return Ok(0);
        };
        let store = self.store();
        let mails = store
            .claim_due_mail(Timestamp::now(), MAIL_LEASE, MAIL_BATCH, &self.inner.key)
            .await?;
        for mail in &mails {
            let email = notify::Email {
                to: mail.recipient.clone(),
                subject: mail.subject.clone(),
                text: mail.body.text().to_string(),
                html: mail.body.html().to_string(),
            };
            match mailer.send(&email, mail.id.as_str()).await {
                Ok(()) => {
                    store.mark_mail_sent(&mail.id).await?;
                    tracing::info!(mail = %mail.id, key = %mail.dedupe_key, "mail sent");
                }
                Err(failure) if failure.transient && mail.attempts < MAX_MAIL_ATTEMPTS => {
                    let wait = retry_delay(self.onboarding().mail_retry_base, mail.attempts);
                    store
                        .mark_mail_retry(&mail.id, after(wait), &failure.message)
                        .await?;
                    tracing::warn!(mail = %mail.id, attempts = mail.attempts, retry_in_s = wait.as_secs(), error = %failure.message, "mail not sent; will retry");
                }
                Err(failure) => {
                    store.mark_mail_failed(&mail.id, &failure.message).await?;
                    tracing::error!(mail = %mail.id, attempts = mail.attempts, error = %failure.message, "mail given up");
                }
            }
        }
        Ok(mails.len())
    }
}

/// Exponential back-off: `base`, 2×, 4×, … capped at an hour.
pub fn retry_delay(base: Duration, attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    base.saturating_mul(2u32.saturating_pow(exponent))
        .min(Duration::from_secs(3600))
}

/// The background loops: mail delivery (woken when a mail is queued) and the deadlines.
pub(crate) async fn run(control: Control) {
    let tick = control.onboarding().tick.max(Duration::from_millis(100));
    let mail = {
        let control = control.clone();
        async move {
            loop {
                match control.deliver_mail().await {
                    Ok(n) if n > 0 => continue, // more may be due
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "mail delivery pass failed"),
                }
                tokio::select! {
                    _ = control.inner.mail_waiting.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                }
            }
        }
    };
    let deadlines = async move {
        loop {
            if let Err(error) = control.billing_deadlines().await {
                tracing::warn!(%error, "billing deadline pass failed");
            }
            tokio::time::sleep(tick).await;
        }
    };
    tokio::join!(mail, deadlines);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_the_base_and_stops_at_an_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(30));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 4), Duration::from_secs(240));
        assert_eq!(retry_delay(base, 12), Duration::from_secs(3600));
        assert_eq!(retry_delay(base, 1000), Duration::from_secs(3600));
        assert_eq!(retry_delay(base, 0), Duration::from_secs(30));
    }

    #[test]
    fn a_signup_always_becomes_the_same_client_id() {
        let spec = ClientSpec::from_toml(
            "company_name = \"Smith Real Estate\"\ndomain = \"smith.example.com\"\n\
             plan = \"starter\"\nadmin_email = \"owner@smith.example.com\"\n",
        )
        .unwrap();
        let signup = SignupId::parse("sgn_0123456789ab0123456789abcdef")
            .unwrap_or_else(|_| panic!("the test's sign-up id must parse"));
        let first = client_id_of_signup(&spec, &signup);
        assert_eq!(first, client_id_of_signup(&spec, &signup));
        assert!(first.as_str().starts_with("smithrealestate-"));
    }
}
