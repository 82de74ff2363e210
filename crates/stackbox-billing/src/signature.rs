//! Stripe's webhook signatures, as documented in "Verify webhook signatures manually".
//!
//! The header is `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`. The signed
//! payload is the timestamp as sent, a dot and the raw request body (`"{t}.{body}"`); each `v1`
//! is the hex HMAC-SHA256 of it under the endpoint's signing secret, the whole `whsec_…` string
//! taken as bytes (as Stripe's own libraries do; it is not base64-decoded). Several `v1` appear
//! while a secret is being rolled: any one of them matching is enough. Other schemes (`v0`, the
//! test-mode scheme) are ignored. The timestamp must be within a tolerance of now (5 minutes by
//! default, in either direction) so that a captured delivery cannot be replayed later.
//!
//! Parsing follows stripe-go's: an element without `=` or a timestamp that is not a number makes
//! the header malformed; a `v1` value that is not valid hex is skipped (it can match nothing).
//! The signature is checked before the timestamp, so [`SignatureError::Stale`] is only ever
//! said of an authentic (but old or future-dated) delivery.

use std::time::Duration;

use hmac::{KeyInit, Mac};

use crate::error::SignatureError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Stripe's libraries' default tolerance: 300 seconds.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// How much of an offending header element an error repeats (the header is the sender's text).
const PART_EXCERPT: usize = 40;

/// Verifies a `Stripe-Signature` header against the raw request body.
///
/// `now_unix` is the current time (seconds since the epoch), passed in so that tests and
/// replays are deterministic. Returns the header's timestamp on success.
pub fn verify(
    header: &str,
    payload: &[u8],
    secret: &str,
    now_unix: i64,
    tolerance: Duration,
) -> Result<i64, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::EmptySecret);
    }
    let parsed = parse_header(header)?;
    let mac = keyed_mac(secret, parsed.timestamp_text, payload);
    // `verify_slice` is constant-time; every candidate is compared in full.
    let matched = parsed
        .v1
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let tolerance_seconds = tolerance.as_secs();
    if now_unix.abs_diff(parsed.timestamp) > tolerance_seconds {
        return Err(SignatureError::Stale {
            age_seconds: now_unix.saturating_sub(parsed.timestamp),
        });
    }
    Ok(parsed.timestamp)
}

/// The `Stripe-Signature` header Stripe would send for `payload` at time `t`: `t=<t>,v1=<hex>`.
/// For tests and the operator's tooling (replaying a stored event against a running server).
pub fn sign(payload: &[u8], secret: &str, t: i64) -> String {
    let timestamp = t.to_string();
    let mac = keyed_mac(secret, &timestamp, payload);
    format!("t={timestamp},v1={}", to_hex(&mac.finalize().into_bytes()))
}

/// The MAC state after `"{t}.{payload}"`, before finalisation.
fn keyed_mac(secret: &str, timestamp_text: &str, payload: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (a long one is hashed first), so this cannot fail; the
    // fallback keeps the function total without a panic path.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

struct ParsedHeader<'a> {
    timestamp: i64,
    /// The timestamp exactly as sent: it is what Stripe signed.
    timestamp_text: &'a str,
    v1: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, SignatureError> {
    let mut timestamp: Option<(i64, &str)> = None;
    let mut v1 = Vec::new();
    for element in header.split(',').map(str::trim) {
        if element.is_empty() {
            continue;
        }
        let Some((key, value)) = element.split_once('=') else {
            return Err(malformed(element));
        };
        match key.trim() {
            "t" => {
                let value = value.trim();
                if timestamp.is_some() {
                    // Stripe sends one; two would make "which one was signed" ambiguous.
                    return Err(malformed(element));
                }
                let parsed = parse_unix_time(value).ok_or_else(|| malformed(element))?;
                timestamp = Some((parsed, value));
            }
            "v1" => {
                if let Some(bytes) = from_hex(value.trim()) {
                    v1.push(bytes);
                }
            }
            _ => {} // v0 and any future scheme: not ours to check.
        }
    }
    let (timestamp, timestamp_text) = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(ParsedHeader {
        timestamp,
        timestamp_text,
        v1,
    })
}

/// Decimal digits only (no sign, no spaces), at most what fits an i64.
fn parse_unix_time(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn malformed(element: &str) -> SignatureError {
    SignatureError::Malformed {
        part: element.chars().take(PART_EXCERPT).collect(),
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Hex of either case; `None` for an odd length or any other character.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_odd_lengths_and_non_hex_characters() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(""), None);
        // Multi-byte UTF-8 must not be split into "pairs" that pass.
        assert_eq!(from_hex("é1"), None);
    }

    #[test]
    fn unix_time_accepts_digits_only() {
        assert_eq!(parse_unix_time("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_unix_time("+5"), None);
        assert_eq!(parse_unix_time("-5"), None);
        assert_eq!(parse_unix_time("5 "), None);
        assert_eq!(parse_unix_time("99999999999999999999"), None);
    }
}
