//! StackBox's Stripe adapter: everything that speaks Stripe, and nothing else.
//!
//! - [`signature`]: the `Stripe-Signature` header of webhook deliveries, verified exactly as
//!   Stripe documents it (HMAC-SHA256 over `"{t}.{body}"`, any `v1`, a tolerance window).
//! - [`event`]: a webhook body parsed into an [`Event`] with the few event types the
//!   subscription lifecycle needs, every other type kept as [`EventKind::Other`].
//! - [`client`]: [`StripeClient`], the HTTP client for Checkout Sessions and Subscriptions, and
//!   the [`Payments`] trait the sign-up route programs against (object safe, for
//!   `Arc<dyn Payments>`).
//!
//! The crate holds no state and touches no database: which event ids were already handled, and
//! which account a session or subscription belongs to, are the caller's business.
//!
//! Secrets: the API secret key and the webhook endpoint secret never appear in an error, in
//! `Debug` output or in a log line of this crate.

pub mod client;
pub mod error;
pub mod event;
pub mod signature;

pub use client::{
    CheckoutRequest, CheckoutSession, ClientOptions, Payments, PaymentsFuture, StripeClient,
    DEFAULT_API_BASE, STRIPE_API_VERSION,
};
pub use error::{EventError, SignatureError, StripeError};
pub use event::{Event, EventKind, Subscription, SubscriptionStatus};
pub use signature::{sign, verify, DEFAULT_TOLERANCE};
