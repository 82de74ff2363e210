//! Onboarding and billing, still pure: the operator's settings for payments (Stripe), mail and
//! the subscription's grace and retention periods, and the decisions a subscription event
//! leads to ([`decide`]). The adapters (the Stripe client, the SMTP sender, the store and the
//! pipeline) carry the decisions out.
//!
//! Settings come from the operator file's `[onboarding]` table and from the environment, the
//! environment winning (`STACKBOX_STRIPE_SECRET_KEY`, `STACKBOX_STRIPE_WEBHOOK_SECRET`,
//! `STACKBOX_STRIPE_API_BASE`, `STACKBOX_STRIPE_PRICE_<PLAN>`, `STACKBOX_SMTP_URL`,
//! `STACKBOX_MAIL_FROM`, `STACKBOX_PUBLIC_URL`, `STACKBOX_GRACE_PERIOD`, `STACKBOX_RETENTION`):
//! keys belong in the environment or a secrets manager, not in a file that gets copied around.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::client::Email;
use crate::error::CoreError;
use crate::plan::Plan;

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(value: impl Into<String>) -> Redacted {
        Redacted(value.into())
    }

    /// The secret itself, for the one adapter that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Stripe: the keys, the price of each plan, where the buyer goes after the checkout page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSettings {
    pub secret_key: Redacted,
    pub webhook_secret: Redacted,
    /// `https://api.stripe.com` unless a test or a proxy says otherwise.
    pub api_base: String,
    /// The Stripe price id (`price_…`) of each plan that can be bought.
    pub prices: BTreeMap<Plan, String>,
    pub success_url: String,
    pub cancel_url: String,
    /// How old a webhook's signed timestamp may be (Stripe's libraries use 300 s).
    pub signature_tolerance_seconds: u64,
}

impl StripeSettings {
    /// The plan a price id stands for.
    pub fn plan_of_price(&self, price: &str) -> Option<Plan> {
        self.prices
            .iter()
            .find(|(_, id)| id.as_str() == price)
            .map(|(plan, _)| *plan)
    }
}

/// The SMTP server and the sender address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// `smtp://`, `smtps://` URL; may hold a password.
    pub smtp_url: Redacted,
    pub from: Email,
}

/// Everything onboarding needs; every part optional, so a server without payments or mail
/// still runs (its sign-up route answers 404, its welcome e-mails are not queued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardingSettings {
    /// Where this server is reached by people (the one-time credential links), e.g.
    /// `https://stackbox.example.com`.
    pub public_url: Option<String>,
    pub stripe: Option<StripeSettings>,
    pub mail: Option<MailSettings>,
    /// How long a client whose payment failed keeps running before it is suspended.
    pub grace_period_seconds: u64,
    /// How long a cancelled client's data is kept (stopped) before it is destroyed.
    pub retention_seconds: u64,
    /// How long the one-time credentials link in the welcome e-mail works.
    pub credentials_link_seconds: u64,
}

const DAY: u64 = 24 * 3600;

impl Default for OnboardingSettings {
    fn default() -> Self {
        OnboardingSettings {
            public_url: None,
            stripe: None,
            mail: None,
            // Stripe's own smart retries run over about two weeks; a week of grace covers a
            // card being replaced without the business going dark at the first refusal.
            grace_period_seconds: 7 * DAY,
            // A month to change one's mind or take a copy of the data.
            retention_seconds: 30 * DAY,
            credentials_link_seconds: 3 * DAY,
        }
    }
}

/// The `[onboarding]` table of the operator file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnboardingFile {
    public_url: Option<String>,
    grace_period: Option<String>,
    retention: Option<String>,
    credentials_link_ttl: Option<String>,
    stripe_secret_key: Option<String>,
    stripe_webhook_secret: Option<String>,
    stripe_api_base: Option<String>,
    #[serde(default)]
    stripe_prices: BTreeMap<String, String>,
    success_url: Option<String>,
    cancel_url: Option<String>,
    signature_tolerance: Option<String>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
}

impl OnboardingSettings {
    /// The operator file's table with the environment laid over it (`env` looks a variable
    /// up; the core reads no environment itself).
    pub fn resolve(
        file: OnboardingFile,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OnboardingSettings, CoreError> {
        let pick = |name: &str, from_file: Option<String>| {
            env(name).filter(|v| !v.trim().is_empty()).or(from_file)
        };
        let mut settings = OnboardingSettings::default();
        if let Some(url) = pick("STACKBOX_PUBLIC_URL", file.public_url) {
            settings.public_url = Some(http_url("onboarding.public_url", &url)?);
        }
        if let Some(text) = pick("STACKBOX_GRACE_PERIOD", file.grace_period) {
            settings.grace_period_seconds = duration("onboarding.grace_period", &text)?;
        }
        if let Some(text) = pick("STACKBOX_RETENTION", file.retention) {
            settings.retention_seconds = duration("onboarding.retention", &text)?;
        }
        if let Some(text) = file.credentials_link_ttl {
            settings.credentials_link_seconds = duration("onboarding.credentials_link_ttl", &text)?;
            if settings.credentials_link_seconds == 0 {
                return Err(CoreError::invalid(
                    "onboarding.credentials_link_ttl",
                    "must be longer than 0 s, for example \"72h\"",
                ));
            }
        }

        let secret_key = pick("STACKBOX_STRIPE_SECRET_KEY", file.stripe_secret_key);
        let webhook_secret = pick("STACKBOX_STRIPE_WEBHOOK_SECRET", file.stripe_webhook_secret);
        let mut prices = BTreeMap::new();
        for plan in Plan::ALL {
            let variable = format!("STACKBOX_STRIPE_PRICE_{}", plan.key().to_ascii_uppercase());
            if let Some(price) = pick(&variable, file.stripe_prices.get(plan.key()).cloned()) {
                if !is_stripe_id(&price) {
                    return Err(CoreError::invalid(
                        format!("onboarding.stripe_prices.{}", plan.key()),
                        "must be a Stripe price id such as \"price_1Nabc…\"",
                    ));
                }
                prices.insert(plan, price);
            }
        }
        if let Some(unknown) = file
            .stripe_prices
            .keys()
            .find(|key| Plan::from_key(key).is_none())
        {
            return Err(CoreError::invalid(
                format!("onboarding.stripe_prices.{unknown}"),
                "unknown plan; use starter, professional or enterprise",
            ));
        }
        match (secret_key, webhook_secret) {
            (Some(secret_key), Some(webhook_secret)) => {
                if prices.is_empty() {
                    return Err(CoreError::invalid(
                        "onboarding.stripe_prices",
                        "no plan has a price: set STACKBOX_STRIPE_PRICE_STARTER (and the other \
                         plans) or [onboarding.stripe_prices]",
                    ));
                }
                let api_base = pick("STACKBOX_STRIPE_API_BASE", file.stripe_api_base)
                    .unwrap_or_else(|| "https://api.stripe.com".to_string());
                let api_base = http_url("onboarding.stripe_api_base", &api_base)?;
                let base = settings.public_url.clone();
                let page = |field: &str, given: Option<String>, path: &str| match (given, &base) {
                    (Some(url), _) => http_url(field, &url),
                    (None, Some(base)) => Ok(format!("{base}{path}")),
                    (None, None) => Err(CoreError::invalid(
                        field,
                        "is needed to take payments: set it, or set onboarding.public_url \
                         (STACKBOX_PUBLIC_URL)",
                    )),
                };
                let success_url =
                    page("onboarding.success_url", file.success_url, "/signup/thanks")?;
                let cancel_url = page(
                    "onboarding.cancel_url",
                    file.cancel_url,
                    "/signup/cancelled",
                )?;
                let tolerance = match file.signature_tolerance {
                    Some(text) => duration("onboarding.signature_tolerance", &text)?,
                    None => 300,
                };
                settings.stripe = Some(StripeSettings {
                    secret_key: Redacted::new(secret_key),
                    webhook_secret: Redacted::new(webhook_secret),
                    api_base,
                    prices,
                    success_url,
                    cancel_url,
                    signature_tolerance_seconds: tolerance,
                });
            }
            (Some(_), None) => {
                return Err(CoreError::invalid(
                    "STACKBOX_STRIPE_WEBHOOK_SECRET",
                    "is missing while a Stripe secret key is set: copy the endpoint's signing \
                     secret (whsec_…) from Stripe's dashboard",
                ))
            }
            (None, Some(_)) => {
                return Err(CoreError::invalid(
                    "STACKBOX_STRIPE_SECRET_KEY",
                    "is missing while a webhook secret is set: give the API key (sk_…)",
                ))
            }
            (None, None) => {}
        }

        let smtp_url = pick("STACKBOX_SMTP_URL", file.smtp_url);
        let from = pick("STACKBOX_MAIL_FROM", file.mail_from);
        match (smtp_url, from) {
            (Some(url), Some(from)) => {
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    return Err(CoreError::invalid(
                        "STACKBOX_SMTP_URL",
                        "must start with smtp:// or smtps://, e.g. \
                         smtp://user:password@mail.example.com:587?tls=required",
                    ));
                }
                settings.mail = Some(MailSettings {
                    smtp_url: Redacted::new(url),
                    from: Email::parse("STACKBOX_MAIL_FROM", &from)?,
                });
            }
            (Some(_), None) => {
                return Err(CoreError::invalid(
                    "STACKBOX_MAIL_FROM",
                    "is missing while an SMTP server is set: give the sender address, e.g. \
                     hello@operator.example",
                ))
            }
            (None, Some(_)) | (None, None) => {}
        }
        Ok(settings)
    }
}

fn is_stripe_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// An `http://` or `https://` URL without a trailing slash, free of characters that would need
/// escaping anywhere it goes (HTML, headers, form fields).
fn http_url(field: &str, text: &str) -> Result<String, CoreError> {
    let text = text.trim().trim_end_matches('/');
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    let fine = rest.is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c))
            && !rest.contains(['<', '>', '"', '\'', ' '])
    });
    if !fine {
        return Err(CoreError::invalid(
            field,
            format!("{text:?} is not an http(s) URL such as \"https://stackbox.example.com\""),
        ));
    }
    Ok(text.to_string())
}

/// `90`, `90s`, `15m`, `12h` or `7d`, in seconds.
pub fn duration(field: &str, text: &str) -> Result<u64, CoreError> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if factor > 0 => n.checked_mul(factor).ok_or_else(|| {
            CoreError::invalid(
                field,
                "is too long; give at most a few years, e.g. \"365d\"",
            )
        }),
        _ => Err(CoreError::invalid(
            field,
            format!("{text:?} is not a duration; write e.g. \"90s\", \"15m\", \"12h\" or \"7d\""),
        )),
    }
}

/// Where a client's subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BillingStatus {
    Active,
    /// A payment failed; the client runs until `suspend_at`.
    PastDue,
    /// Stopped for non-payment; a payment starts it again.
    Suspended,
    /// The subscription ended; stopped, destroyed at `destroy_at`.
    Cancelled,
}

impl BillingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingStatus::Active => "active",
            BillingStatus::PastDue => "past_due",
            BillingStatus::Suspended => "suspended",
            BillingStatus::Cancelled => "cancelled",
        }
    }

    pub fn from_name(text: &str) -> Option<BillingStatus> {
        [
            BillingStatus::Active,
            BillingStatus::PastDue,
            BillingStatus::Suspended,
            BillingStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// What happened to a subscription, or which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingInput {
    PaymentFailed,
    Paid,
    PlanChanged {
        from: Plan,
        to: Plan,
    },
    SubscriptionDeleted,
    /// A `past_due` client's grace period is over.
    GraceOver,
    /// A `cancelled` client's retention period is over.
    RetentionOver,
}

/// A message to the client's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    PaymentFailed,
    Suspended,
    Resumed,
    Cancelled,
    PlanChanged { from: Plan, to: Plan },
}

/// What the adapters do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingAction {
    Notify(Notice),
    /// Stop the containers (data kept).
    Stop,
    /// Start them again.
    Start,
    /// Switch the client to another plan and redeploy (services added or removed, data kept).
    ChangePlan(Plan),
    /// Remove the client and its data.
    Destroy,
}

/// The actions one input leads to, given the status before it and whether the store applied
/// it (`changed`: the store's guarded update refuses a transition that does not apply, such as
/// a second failure during the grace period or a suspension after a payment, which makes
/// redelivered and racing events harmless).
///
/// Rules: a failed payment of an active client starts the grace period and tells the owner;
/// when the grace period is over the client is stopped; a payment during grace clears it and
/// a payment of a suspended client starts it again; a deleted subscription stops the client at
/// once and keeps its data for the retention period, then destroys it. A plan change applies
/// whatever the status (it is what the client pays for from now on); the control plane
/// redeploys only a running client, a stopped one gets the new plan at its next start.
pub fn consequences(
    input: BillingInput,
    previous: BillingStatus,
    changed: bool,
) -> Vec<BillingAction> {
    if !changed {
        return Vec::new();
    }
    match input {
        BillingInput::PaymentFailed => vec![BillingAction::Notify(Notice::PaymentFailed)],
        BillingInput::Paid if previous == BillingStatus::Suspended => {
            vec![BillingAction::Start, BillingAction::Notify(Notice::Resumed)]
        }
        BillingInput::Paid => Vec::new(),
        BillingInput::PlanChanged { from, to } if from != to => vec![
            BillingAction::ChangePlan(to),
            BillingAction::Notify(Notice::PlanChanged { from, to }),
        ],
        BillingInput::PlanChanged { .. } => Vec::new(),
        BillingInput::SubscriptionDeleted if previous == BillingStatus::Suspended => {
            vec![BillingAction::Notify(Notice::Cancelled)]
        }
        BillingInput::SubscriptionDeleted => vec![
            BillingAction::Stop,
            BillingAction::Notify(Notice::Cancelled),
        ],
        BillingInput::GraceOver => vec![
            BillingAction::Stop,
            BillingAction::Notify(Notice::Suspended),
        ],
        BillingInput::RetentionOver => vec![BillingAction::Destroy],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_payment_tells_the_owner_once() {
        assert_eq!(
            consequences(BillingInput::PaymentFailed, BillingStatus::Active, true),
            vec![BillingAction::Notify(Notice::PaymentFailed)]
        );
        // The store did not apply it (already past due): nothing again.
        assert!(
            consequences(BillingInput::PaymentFailed, BillingStatus::PastDue, false).is_empty()
        );
    }

    #[test]
    fn the_end_of_grace_stops_and_a_payment_after_it_starts_again() {
        assert_eq!(
            consequences(BillingInput::GraceOver, BillingStatus::PastDue, true),
            vec![
                BillingAction::Stop,
                BillingAction::Notify(Notice::Suspended)
            ]
        );
        assert_eq!(
            consequences(BillingInput::Paid, BillingStatus::Suspended, true),
            vec![BillingAction::Start, BillingAction::Notify(Notice::Resumed)]
        );
        // A payment during grace only clears it; a monthly payment does nothing.
        assert!(consequences(BillingInput::Paid, BillingStatus::PastDue, true).is_empty());
        assert!(consequences(BillingInput::Paid, BillingStatus::Active, false).is_empty());
    }

    #[test]
    fn a_deleted_subscription_stops_unless_already_stopped_and_destroys_after_retention() {
        assert_eq!(
            consequences(
                BillingInput::SubscriptionDeleted,
                BillingStatus::Active,
                true
            ),
            vec![
                BillingAction::Stop,
                BillingAction::Notify(Notice::Cancelled)
            ]
        );
        assert_eq!(
            consequences(
                BillingInput::SubscriptionDeleted,
                BillingStatus::Suspended,
                true
            ),
            vec![BillingAction::Notify(Notice::Cancelled)]
        );
        assert!(consequences(
            BillingInput::SubscriptionDeleted,
            BillingStatus::Cancelled,
            false
        )
        .is_empty());
        assert_eq!(
            consequences(BillingInput::RetentionOver, BillingStatus::Cancelled, true),
            vec![BillingAction::Destroy]
        );
    }

    #[test]
    fn a_plan_change_acts_only_when_the_plan_differs() {
        let change = BillingInput::PlanChanged {
            from: Plan::Professional,
            to: Plan::Enterprise,
        };
        assert_eq!(
            consequences(change, BillingStatus::Active, true),
            vec![
                BillingAction::ChangePlan(Plan::Enterprise),
                BillingAction::Notify(Notice::PlanChanged {
                    from: Plan::Professional,
                    to: Plan::Enterprise
                })
            ]
        );
        let same = BillingInput::PlanChanged {
            from: Plan::Starter,
            to: Plan::Starter,
        };
        assert!(consequences(same, BillingStatus::Active, true).is_empty());
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn settings_from_the_environment_win_over_the_file_and_hide_secrets() {
        let file: OnboardingFile = toml::from_str(
            "public_url = \"https://file.example\"\ngrace_period = \"3d\"\n\
             [stripe_prices]\nstarter = \"price_file\"\n",
        )
        .unwrap();
        let settings = OnboardingSettings::resolve(
            file,
            &env(&[
                ("STACKBOX_PUBLIC_URL", "https://stackbox.example.com/"),
                ("STACKBOX_STRIPE_SECRET_KEY", "sk_test_abc"),
                ("STACKBOX_STRIPE_WEBHOOK_SECRET", "whsec_xyz"),
                ("STACKBOX_STRIPE_PRICE_PROFESSIONAL", "price_pro"),
                ("STACKBOX_SMTP_URL", "smtp://user:pw@127.0.0.1:2525"),
                ("STACKBOX_MAIL_FROM", "hello@operator.example"),
            ]),
        )
        .unwrap();
        assert_eq!(
            settings.public_url.as_deref(),
            Some("https://stackbox.example.com")
        );
        assert_eq!(settings.grace_period_seconds, 3 * DAY);
        let stripe = settings.stripe.as_ref().unwrap();
        assert_eq!(stripe.api_base, "https://api.stripe.com");
        assert_eq!(stripe.plan_of_price("price_file"), Some(Plan::Starter));
        assert_eq!(stripe.plan_of_price("price_pro"), Some(Plan::Professional));
        assert_eq!(
            stripe.success_url,
            "https://stackbox.example.com/signup/thanks"
        );
        let debug = format!("{settings:?}");
        for secret in ["sk_test_abc", "whsec_xyz", "user:pw"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn incomplete_settings_name_the_missing_variable() {
        let error = OnboardingSettings::resolve(
            OnboardingFile::default(),
            &env(&[("STACKBOX_STRIPE_SECRET_KEY", "sk_test_abc")]),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("STACKBOX_STRIPE_WEBHOOK_SECRET:"),
            "{error}"
        );
        let error = OnboardingSettings::resolve(
            OnboardingFile::default(),
            &env(&[("STACKBOX_SMTP_URL", "smtp://127.0.0.1:25")]),
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("STACKBOX_MAIL_FROM:"),
            "{error}"
        );
        let error = OnboardingSettings::resolve(
            OnboardingFile::default(),
            &env(&[("STACKBOX_GRACE_PERIOD", "a week")]),
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("onboarding.grace_period:"),
            "{error}"
        );
        // Nothing configured is fine: no payments, no mail.
        let none = OnboardingSettings::resolve(OnboardingFile::default(), &env(&[])).unwrap();
        assert!(none.stripe.is_none() && none.mail.is_none());
    }

    #[test]
    fn durations_take_units_and_refuse_anything_else() {
        assert_eq!(duration("f", "90").unwrap(), 90);
        assert_eq!(duration("f", "15m").unwrap(), 900);
        assert_eq!(duration("f", "12h").unwrap(), 43200);
        assert_eq!(duration("f", "7d").unwrap(), 7 * DAY);
        for bad in ["", "d", "7w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(duration("f", bad).is_err(), "{bad}");
        }
    }
}
