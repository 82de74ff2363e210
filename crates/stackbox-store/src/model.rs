//! What the store holds: timestamps, ids, the closed sets of states and statuses, and records.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use stackbox_core::client::{ClientId, ClientSpec, CompanyName, Domain, Email};
use stackbox_core::plan::Plan;

use crate::error::StoreError;

/// A point in time, in milliseconds since the Unix epoch (UTC).
///
/// Stored as a `BIGINT` on both engines: SQLite has no timestamp type, and integers make
/// durations (`finished_at - started_at`) plain arithmetic in SQL and in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The system clock now. A clock set before 1970 reads as the epoch rather than failing.
    pub fn now() -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(millis)
    }

    pub fn from_unix_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// This time plus `duration` (a grace period, a lease, a link's lifetime), saturating
    /// rather than overflowing.
    pub fn plus(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// Seconds from `earlier` to `self`; never negative (a clock stepped back reads as zero).
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0.saturating_sub(earlier.0)).max(0) as f64 / 1000.0
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, such as `2025-03-01T12:00:00.250Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.rem_euclid(1000);
        let seconds = self.0.div_euclid(1000);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day count since
/// 1970-01-01, exact for every `i64` millisecond timestamp (no date library needed for one
/// format).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Makes a `prefix` + lowercase hex id; shared by the id types below.
macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $hex_digits:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Checks the form (prefix and hex digits), so a malformed id from a URL is
            /// refused before it reaches the database.
            pub fn parse(text: &str) -> Result<$name, StoreError> {
                let well_formed = text.strip_prefix($prefix).is_some_and(|hex| {
                    hex.len() == $hex_digits
                        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                });
                if well_formed {
                    Ok($name(text.to_string()))
                } else {
                    Err(StoreError::MalformedId {
                        what: $what,
                        expected: concat!(
                            $prefix, " followed by ", $hex_digits, " lowercase hex digits"
                        ),
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub(crate) fn from_trusted(text: String) -> $name {
                $name(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

hex_id!(
    /// A deployment's id: `dep_`, 12 hex digits of its creation time in milliseconds, then 16
    /// random hex digits. Ids sort by creation time, so "newest first" is `ORDER BY id DESC`.
    DeploymentId,
    "dep_",
    28,
    "deployment id"
);

hex_id!(
    /// A token's id (not the token): `tok_` and 16 random hex digits. Safe to show and log;
    /// it is what `revoke_token` takes.
    TokenId,
    "tok_",
    16,
    "token id"
);

hex_id!(
    /// A sign-up's id: `sgn_`, 12 hex digits of its creation time in milliseconds, then 16
    /// random hex digits (like a deployment id). Safe to show: it grants nothing by itself.
    SignupId,
    "sgn_",
    28,
    "sign-up id"
);

hex_id!(
    /// A backup's id: `bkp_`, 12 hex digits of its start time in milliseconds, then 16 random
    /// hex digits (like a deployment id), so ids sort in the order backups started.
    BackupId,
    "bkp_",
    28,
    "backup id"
);

hex_id!(
    /// A queued mail's id: `mail_`, 12 hex digits of its creation time in milliseconds, then
    /// 16 random hex digits, so ids sort in the order mails were queued.
    MailId,
    "mail_",
    28,
    "mail id"
);

hex_id!(
    /// A rollout's id: `rol_`, 12 hex digits of its creation time in milliseconds, then 16
    /// random hex digits, so ids sort in the order rollouts were asked for.
    RolloutId,
    "rol_",
    28,
    "rollout id"
);

/// Declares a closed set of lowercase names stored as TEXT.
macro_rules! text_enum {
    (
        $(#[$doc:meta])* $name:ident {
            $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name stored in the database and shown to people.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses a stored or user-given name; `None` for anything else.
            pub fn from_name(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Where a client stands, as the control plane last saw it.
    ///
    /// Stored without a CHECK constraint on purpose: the health monitor may add states, and
    /// SQLite cannot change a CHECK constraint without rebuilding the table.
    ClientState {
        /// Accepted; its first deployment has not finished yet.
        Provisioning = "provisioning",
        /// Every service running and healthy.
        Running = "running",
        /// Every service running, some still passing their first health checks.
        Starting = "starting",
        /// Some services running, others missing, stopped or unhealthy.
        Degraded = "degraded",
        /// Stopped on purpose; data kept.
        Stopped = "stopped",
        /// Nothing serves, or the last deployment failed.
        Failed = "failed",
        /// No container on the engine (for example after a failed first deployment).
        Absent = "absent",
        /// A destroy is under way.
        Destroying = "destroying",
    }
);

impl From<stackbox_core::deploy::OverallState> for ClientState {
    fn from(state: stackbox_core::deploy::OverallState) -> ClientState {
        use stackbox_core::deploy::OverallState;
        match state {
            OverallState::Running => ClientState::Running,
            OverallState::Starting => ClientState::Starting,
            OverallState::Degraded => ClientState::Degraded,
            OverallState::Stopped => ClientState::Stopped,
            OverallState::Failed => ClientState::Failed,
            OverallState::Absent => ClientState::Absent,
        }
    }
}

text_enum!(
    /// What a deployment does.
    DeploymentKind {
        Create = "create",
        Redeploy = "redeploy",
        Stop = "stop",
        Start = "start",
        Destroy = "destroy",
        /// Takes a snapshot of the client's data.
        Backup = "backup",
        /// Brings back a snapshot (named in the deployment's `params`).
        Restore = "restore",
        /// Restores a snapshot aside and checks it, leaving the client untouched.
        Verify = "verify",
        /// Copies a client into a new one (named in the deployment's `params`).
        Clone = "clone",
    }
);

text_enum!(
    /// Where a deployment stands. `pending` and `running` are unfinished; a client has at most
    /// one unfinished deployment (enforced by a partial unique index).
    DeploymentStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Failed, and what it had done was undone.
        Compensated = "compensated",
    }
);

impl DeploymentStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, DeploymentStatus::Pending | DeploymentStatus::Running)
    }
}

text_enum!(
    /// Where one step of a deployment stands.
    StepStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
    }
);

text_enum!(
    /// What a token may do: an operator token everything, a client token read its own client.
    TokenRole {
        Operator = "operator",
        Client = "client",
    }
);

text_enum!(
    /// Where a sign-up stands: `pending` until paid, `paid` while its client is provisioned,
    /// then `provisioned`; `expired` when it was abandoned before paying.
    SignupStatus {
        Pending = "pending",
        Paid = "paid",
        Provisioned = "provisioned",
        Expired = "expired",
    }
);

text_enum!(
    /// Where a client's subscription stands.
    BillingStatus {
        /// Paid up.
        Active = "active",
        /// A payment failed; the client runs until `suspend_at`.
        PastDue = "past_due",
        /// Stopped for want of payment; data kept. A paid invoice makes it active again.
        Suspended = "suspended",
        /// The subscription ended; the data is destroyed at `destroy_at`.
        Cancelled = "cancelled",
    }
);

text_enum!(
    /// Where a queued mail stands. A mail moves pending → sending → sent, or back to pending
    /// for a retry, or to failed; a `sending` mail whose lease ran out is claimed again.
    MailStatus {
        Pending = "pending",
        Sending = "sending",
        Sent = "sent",
        Failed = "failed",
    }
);

text_enum!(
    /// Why a backup was taken.
    BackupReason {
        /// Asked for by an operator.
        Manual = "manual",
        /// The daily schedule.
        Scheduled = "scheduled",
        /// Before a change that could lose data (a restore over the client, a redeploy).
        Safety = "safety",
        /// The last backup before the client is destroyed, kept for the retention period.
        PreDestroy = "pre-destroy",
    }
);

text_enum!(
    /// Where a backup stands: `running` until it `succeeded` (with a snapshot) or `failed`.
    BackupStatus {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
);

/// One backup run, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    pub id: BackupId,
    pub client_id: ClientId,
    /// The deployment whose step made it, if any.
    pub deployment_id: Option<DeploymentId>,
    pub reason: BackupReason,
    pub status: BackupStatus,
    /// The repository's snapshot id; set when the backup succeeded.
    pub snapshot_id: Option<String>,
    /// When the backup began: the point in time its data is from.
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Why it failed, for people.
    pub error: Option<String>,
    /// What the snapshot holds (JSON), recorded when it succeeded.
    pub manifest: Option<serde_json::Value>,
    pub bytes_added: Option<u64>,
    pub bytes_total: Option<u64>,
    pub files_total: Option<u64>,
    /// When the snapshot was last restored aside and checked.
    pub verified_at: Option<Timestamp>,
    /// Whether that check passed; set together with `verified_at`.
    pub verify_ok: Option<bool>,
    /// Why the check failed, for people.
    pub verify_error: Option<String>,
    /// When retention removed the snapshot from the repository; it cannot be restored since.
    pub forgotten_at: Option<Timestamp>,
}

/// A destroyed client whose backups are kept until `retain_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedClient {
    pub client_id: ClientId,
    pub domain: Domain,
    /// The configuration as `ClientSpec::to_toml` wrote it (with `client_id`), to restore the
    /// client from its backups.
    pub spec_toml: String,
    pub destroyed_at: Timestamp,
    pub retain_until: Timestamp,
}

impl RetainedClient {
    /// Parses the kept configuration.
    pub fn spec(&self) -> Result<ClientSpec, StoreError> {
        ClientSpec::from_toml(&self.spec_toml)
            .map_err(|error| StoreError::corrupt("retained_clients", "spec", error))
    }
}

/// A sign-up from the public form.
#[derive(Debug, Clone, PartialEq)]
pub struct Signup {
    pub id: SignupId,
    /// Where to write to the buyer.
    pub email: Email,
    /// The validated configuration as `ClientSpec::to_toml` writes it, without `client_id`.
    pub spec_toml: String,
    pub plan: Plan,
    pub status: SignupStatus,
    /// The payment provider's checkout session, once one was opened.
    pub checkout_session_id: Option<String>,
    /// Set when the sign-up is paid.
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    /// Set when the sign-up is provisioned.
    pub client_id: Option<ClientId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Signup {
    /// Parses the stored configuration (its `client_id` is `None`).
    pub fn spec(&self) -> Result<ClientSpec, StoreError> {
        ClientSpec::from_toml(&self.spec_toml)
            .map_err(|error| StoreError::corrupt("signups", "spec", error))
    }
}

/// A client's subscription. [`crate::Store::upsert_billing`] writes every field but
/// `updated_at`, which the store sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Billing {
    pub client_id: ClientId,
    pub customer_id: String,
    pub subscription_id: String,
    pub plan: Plan,
    pub status: BillingStatus,
    /// The first failed payment of the current arrears.
    pub payment_failed_at: Option<Timestamp>,
    /// When a `past_due` client is suspended if it has not paid by then.
    pub suspend_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
    /// When a `cancelled` client's data is destroyed.
    pub destroy_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

impl Billing {
    /// A new, paid-up subscription (what a completed checkout gives).
    pub fn active(
        client_id: ClientId,
        customer_id: &str,
        subscription_id: &str,
        plan: Plan,
    ) -> Billing {
        Billing {
            client_id,
            customer_id: customer_id.to_string(),
            subscription_id: subscription_id.to_string(),
            plan,
            status: BillingStatus::Active,
            payment_failed_at: None,
            suspend_at: None,
            cancelled_at: None,
            destroy_at: None,
            updated_at: Timestamp(0),
        }
    }
}

/// What happened to a subscription; [`crate::Store::set_billing_status`] applies it where it
/// makes sense and leaves the subscription unchanged where it does not (see each variant), so
/// a redelivered or late event is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingChange {
    /// A payment failed: `active` → `past_due`, with `payment_failed_at` now and this
    /// `suspend_at`. A client already `past_due` keeps its first failure and deadline (Stripe
    /// retries an invoice several times; each retry must not restart the grace period);
    /// `suspended` and `cancelled` are unchanged.
    PaymentFailed { suspend_at: Timestamp },
    /// The grace period ran out: `past_due` → `suspended`. Only from `past_due`, so a payment
    /// that arrived in the meantime wins and nothing is stopped.
    Suspend,
    /// An invoice was paid: `past_due` or `suspended` → `active`, clearing
    /// `payment_failed_at` and `suspend_at`. `cancelled` is unchanged (an ended subscription
    /// does not come back; a new one is stored with `upsert_billing`).
    Paid,
    /// The subscription ended: → `cancelled`, with `cancelled_at` now and this `destroy_at`.
    /// A client already `cancelled` keeps its first date and deadline.
    Cancelled { destroy_at: Timestamp },
    /// The subscription moved to another plan; the status is unchanged.
    Plan(Plan),
}

/// What [`crate::Store::set_billing_status`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingTransition {
    /// The status before the change.
    pub previous: BillingStatus,
    /// The subscription as stored now.
    pub billing: Billing,
    /// Whether anything was written: `false` when the change did not apply (a repeated
    /// failure, a late suspension after a payment).
    pub changed: bool,
}

/// A mail to queue. The bodies usually hold one-time links, so `Debug` leaves them out and
/// the store keeps them sealed.
#[derive(Clone)]
pub struct NewMail {
    /// What makes this mail the same mail, such as `welcome:<client id>`: a second mail with
    /// the same key is not queued. At most [`crate::MAX_DEDUPE_KEY_CHARS`] characters.
    pub dedupe_key: String,
    pub client_id: Option<ClientId>,
    pub recipient: Email,
    /// One line, without control characters.
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl fmt::Debug for NewMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewMail")
            .field("dedupe_key", &self.dedupe_key)
            .field("client_id", &self.client_id)
            .field("recipient", &self.recipient)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A mail's decrypted bodies, wiped from memory when dropped. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct MailBody {
    text: zeroize::Zeroizing<String>,
    html: zeroize::Zeroizing<String>,
}

impl MailBody {
    pub(crate) fn new(text: String, html: String) -> MailBody {
        MailBody {
            text: zeroize::Zeroizing::new(text),
            html: zeroize::Zeroizing::new(html),
        }
    }

    /// The plain-text body.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The HTML body.
    pub fn html(&self) -> &str {
        &self.html
    }
}

impl fmt::Debug for MailBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MailBody(<redacted>)")
    }
}

/// A mail claimed for sending by [`crate::Store::claim_due_mail`], with its bodies. Report
/// the outcome with `mark_mail_sent`, `mark_mail_retry` or `mark_mail_failed` before
/// `lease_until`, or another sender takes it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: MailId,
    pub dedupe_key: String,
    pub client_id: Option<ClientId>,
    pub recipient: Email,
    pub subject: String,
    pub body: MailBody,
    /// Including this one: 1 on the first try.
    pub attempts: i64,
    pub lease_until: Timestamp,
    pub created_at: Timestamp,
}

/// A queued mail without its bodies, for listings and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRecord {
    pub id: MailId,
    pub dedupe_key: String,
    pub client_id: Option<ClientId>,
    pub recipient: Email,
    pub subject: String,
    pub status: MailStatus,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub lease_until: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
}

/// A stored client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    pub id: ClientId,
    pub domain: Domain,
    pub company_name: CompanyName,
    pub plan: Plan,
    /// The configuration as `ClientSpec::to_toml` wrote it (with `client_id`).
    pub spec_toml: String,
    pub state: ClientState,
    /// Why the client is in its state (a failed service, a failed step), for people.
    pub state_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ClientRecord {
    /// Parses the stored configuration. Kept as text in the record so that listing clients does
    /// not parse TOML for every row.
    pub fn spec(&self) -> Result<ClientSpec, StoreError> {
        ClientSpec::from_toml(&self.spec_toml)
            .map_err(|error| StoreError::corrupt("clients", "spec", error))
    }
}

/// Which clients `list_clients` returns; `None` matches everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientFilter {
    pub state: Option<ClientState>,
    pub plan: Option<Plan>,
}

/// One page of clients, ordered by id. Their `spec_toml` is empty (lists carry summaries;
/// [`crate::Store::client`] returns the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPage {
    pub clients: Vec<ClientRecord>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<ClientId>,
}

/// A deployment and its steps in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: DeploymentId,
    pub client_id: ClientId,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    pub created_at: Timestamp,
    /// When its first step started.
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub error: Option<String>,
    /// What it was asked to do beyond its kind (JSON), such as a restore's snapshot id or a
    /// clone's target; `None` for the kinds that need nothing.
    pub params: Option<serde_json::Value>,
    pub steps: Vec<Step>,
}

impl Deployment {
    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.name == name)
    }
}

/// One page of a client's deployments, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentPage {
    pub deployments: Vec<Deployment>,
    /// Pass as `after` for the next (older) page; `None` on the last page.
    pub next: Option<DeploymentId>,
}

/// One step of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its place in the deployment, from 0.
    pub position: i64,
    pub name: String,
    pub status: StepStatus,
    /// How many times the step was started: more than 1 means an earlier run was interrupted
    /// (the control plane stopped while it ran), so its effect may have partly happened.
    pub attempts: i64,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub error: Option<String>,
    /// What the step reported (JSON), recorded when it succeeded.
    pub output: Option<serde_json::Value>,
}

/// One allowed step transition; anything else is refused with `StoreError::StepTransition`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StepChange<'a> {
    /// pending → running
    Start,
    /// running → running, for a step whose run was interrupted (the attempt count grows)
    Resume,
    /// running → succeeded, with what the step reported
    Succeed(Option<&'a serde_json::Value>),
    /// running → failed
    Fail(&'a str),
    /// pending → skipped
    Skip,
}

impl StepChange<'_> {
    pub(crate) fn from(self) -> StepStatus {
        match self {
            StepChange::Start | StepChange::Skip => StepStatus::Pending,
            StepChange::Resume | StepChange::Succeed(_) | StepChange::Fail(_) => {
                StepStatus::Running
            }
        }
    }

    pub(crate) fn to(self) -> StepStatus {
        match self {
            StepChange::Start | StepChange::Resume => StepStatus::Running,
            StepChange::Succeed(_) => StepStatus::Succeeded,
            StepChange::Fail(_) => StepStatus::Failed,
            StepChange::Skip => StepStatus::Skipped,
        }
    }
}

/// A finished deployment's timing, for the duration histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedDeployment {
    pub id: DeploymentId,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

impl FinishedDeployment {
    /// From its first step's start (from its creation when no step ever started) to its end.
    pub fn duration_seconds(&self) -> f64 {
        self.finished_at
            .seconds_since(self.started_at.unwrap_or(self.created_at))
    }
}

/// A finished step's timing, for the step duration histogram. Skipped steps, which never
/// started, are not included.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedStep {
    pub deployment_id: DeploymentId,
    pub name: String,
    pub status: StepStatus,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

impl FinishedStep {
    pub fn duration_seconds(&self) -> f64 {
        self.finished_at.seconds_since(self.started_at)
    }
}

/// What a verified token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: TokenId,
    pub role: TokenRole,
    /// The client a client token may read; `None` for operator tokens.
    pub client_id: Option<ClientId>,
}

/// A stored token, for listings. Holds no secret: the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub role: TokenRole,
    pub client_id: Option<ClientId>,
    pub created_at: Timestamp,
    /// When the token was last verified, to within a minute (see `Store::verify_token`).
    pub last_used_at: Option<Timestamp>,
}

/// A token just created: the only time its plaintext exists.
#[derive(Debug)]
pub struct NewToken {
    pub info: TokenInfo,
    pub token: PlaintextToken,
}

/// A token's plaintext: an API token (`sbx_` and 43 Base64url characters) or a credential
/// link's token (43 Base64url characters). `Debug` hides it and there is no `Display`, so it
/// can only reach output through an explicit [`PlaintextToken::expose`].
pub struct PlaintextToken(zeroize::Zeroizing<String>);

impl PlaintextToken {
    pub(crate) fn new(text: String) -> PlaintextToken {
        PlaintextToken(zeroize::Zeroizing::new(text))
    }

    /// The token, to print once to whoever asked for it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlaintextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlaintextToken(<redacted>)")
    }
}

text_enum!(
    /// Where a rollout stands: `running` until it `succeeded` (every member finished well) or
    /// `halted` (a member failed, or the operator stopped it).
    RolloutStatus {
        Running = "running",
        Halted = "halted",
        Succeeded = "succeeded",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc_3339_utc_with_milliseconds() {
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(951_782_400_123).to_string(),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_740_830_405_250).to_string(),
            "2025-03-01T12:00:05.250Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }
}
