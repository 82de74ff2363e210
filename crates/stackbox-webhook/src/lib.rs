//! Delivers StackBox's operator alerts (client degraded, memory near its limit, backup missing,
//! …) to the operator's URL as a signed webhook, and verifies such signatures.
//!
//! # The request
//!
//! One `POST` of the caller's JSON body with these headers:
//!
//! | Header | Value |
//! |--------|-------|
//! | `Content-Type` | `application/json` |
//! | `User-Agent` | `stackbox-webhook/<version>` |
//! | `StackBox-Delivery` | the caller's delivery id: the same on every retry, so receivers can de-duplicate |
//! | [`SIGNATURE_HEADER`] (`StackBox-Signature`) | `t=<unix seconds>,v1=<hex>` |
//!
//! The signature is Stripe's scheme, which operators know: `v1` is the lowercase hex
//! HMAC-SHA256 of `"{t}.{body}"` keyed with the secret's bytes. A receiver recomputes it over the
//! raw body, compares in constant time, and refuses a timestamp far from its clock (replays);
//! [`verify`] does exactly that and accepts several `v1` (while a secret is being rolled).
//!
//! # One attempt, classified
//!
//! The caller (the control plane) owns the persistent queue and the retry schedule.
//! [`WebhookClient::deliver`] makes one attempt and says what happened: [`Delivered`] for a 2xx;
//! [`WebhookError::Retryable`] for connection failures, timeouts, 5xx, 408 and 429 (back off and
//! try again); [`WebhookError::Rejected`] for any other 4xx and for 3xx (the receiver refuses;
//! retrying will probably not help). Redirects are never followed: the Location is named in the
//! error so the operator can configure the final URL.
//!
//! # URLs
//!
//! [`validate_url`] accepts `http://` and `https://` URLs with a host. HTTPS is expected for
//! anything but a receiver on loopback: plain HTTP is allowed for that case (and for tests), but
//! the signature only authenticates the body, it does not hide it.
//!
//! No error and no `Debug` output contains the secret; a receiver's answer is repeated at most
//! 200 characters long, and the URL is not repeated (it may carry a token).

mod client;
mod error;
mod signature;

pub use client::{validate_url, Delivered, WebhookClient, WebhookOptions};
pub use error::WebhookError;
pub use signature::{sign, verify, DEFAULT_TOLERANCE, SIGNATURE_HEADER};
