//! The `StackBox-Signature` header: `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`.
//!
//! `v1` is the lowercase hex HMAC-SHA256 of `"{t}.{body}"` (the timestamp exactly as sent),
//! keyed with the secret's bytes. Unknown schemes (`v0`, a future `v2`) are ignored; a `v1` that
//! is not hex can match nothing and is skipped. The signature is checked before the timestamp,
//! so [`WebhookError::Stale`] is only said of an authentic delivery.

use std::time::Duration;

use hmac::{KeyInit, Mac};

use crate::error::WebhookError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "StackBox-Signature";

/// A sensible receiver tolerance: 5 minutes either way (Stripe's default).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// How much of an offending header element an error repeats.
const PART_EXCERPT: usize = 40;

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp`: `t=<timestamp>,v1=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = keyed_mac(secret, &t, body);
    format!("t={t},v1={}", to_hex(&mac.finalize().into_bytes()))
}

/// Checks a [`SIGNATURE_HEADER`] value against the raw body; returns its timestamp.
///
/// Any one `v1` matching is enough (constant-time comparison). `now_unix` is passed in so that
/// tests are deterministic; a timestamp more than `tolerance` away from it (either way) is
/// [`WebhookError::Stale`]. An empty secret is refused: it would accept anyone's signature.
pub fn verify(
    header: &str,
    body: &[u8],
    secret: &[u8],
    now_unix: i64,
    tolerance: Duration,
) -> Result<i64, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::InvalidConfig {
            field: "secret",
            problem: "is empty; use the webhook's signing secret".to_owned(),
        });
    }
    let (timestamp, timestamp_text, candidates) = parse_header(header)?;
    let mac = keyed_mac(secret, timestamp_text, body);
    let matched = candidates
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok());
    if !matched {
        return Err(WebhookError::NoSignatureMatched);
    }
    let tolerance_seconds = tolerance.as_secs();
    if now_unix.abs_diff(timestamp) > tolerance_seconds {
        return Err(WebhookError::Stale {
            age_seconds: now_unix.saturating_sub(timestamp),
            tolerance_seconds,
        });
    }
    Ok(timestamp)
}

fn keyed_mac(secret: &[u8], timestamp_text: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; the fallback avoids a panic path.
    let mut mac =
        HmacSha256::new_from_slice(secret).unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

type Parsed<'a> = (i64, &'a str, Vec<Vec<u8>>);

fn parse_header(header: &str) -> Result<Parsed<'_>, WebhookError> {
    let malformed = |problem: String| WebhookError::MalformedHeader { problem };
    let excerpt = |part: &str| part.chars().take(PART_EXCERPT).collect::<String>();
    let mut timestamp: Option<(i64, &str)> = None;
    let mut candidates = Vec::new();
    for element in header.split(',').map(str::trim) {
        if element.is_empty() {
            continue;
        }
        let Some((key, value)) = element.split_once('=') else {
            return Err(malformed(format!(
                "{:?} is not key=value",
                excerpt(element)
            )));
        };
        let value = value.trim();
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("more than one t=".to_owned()));
                }
                let parsed = parse_unix_time(value).ok_or_else(|| {
                    malformed(format!("t={:?} is not a unix time", excerpt(value)))
                })?;
                timestamp = Some((parsed, value));
            }
            "v1" => candidates.extend(from_hex(value)),
            _ => {}
        }
    }
    let (timestamp, text) = timestamp.ok_or_else(|| malformed("no t=".to_owned()))?;
    if candidates.is_empty() {
        return Err(malformed("no hex v1= signature".to_owned()));
    }
    Ok((timestamp, text, candidates))
}

/// Decimal digits with an optional leading `-` (what [`sign`] writes), fitting an i64.
fn parse_unix_time(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty()
        || !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_stackbox_test_secret";
    const BODY: &[u8] = br#"{"alert":"backup_missing","client":"acme"}"#;
    const T: i64 = 1_780_000_000;
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn sign_then_verify_round_trips() {
        let header = sign(SECRET, T, BODY);
        assert!(header.starts_with(&format!("t={T},v1=")));
        let hex = header.rsplit("v1=").next().unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(verify(&header, BODY, SECRET, T + 10, TOL), Ok(T));
        assert_eq!(verify(&header, BODY, SECRET, T - 10, TOL), Ok(T));
    }

    #[test]
    fn tampered_body_matches_no_signature() {
        let header = sign(SECRET, T, BODY);
        let tampered = br#"{"alert":"backup_missing","client":"evil"}"#;
        assert_eq!(
            verify(&header, tampered, SECRET, T, TOL),
            Err(WebhookError::NoSignatureMatched)
        );
    }

    #[test]
    fn wrong_secret_matches_no_signature() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(
            verify(&header, BODY, b"another secret", T, TOL),
            Err(WebhookError::NoSignatureMatched)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(
            verify(&header, BODY, SECRET, T + 301, TOL),
            Err(WebhookError::Stale {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            verify(&header, BODY, SECRET, T - 301, TOL),
            Err(WebhookError::Stale {
                age_seconds: -301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(verify(&header, BODY, SECRET, T + 300, TOL), Ok(T));
    }

    #[test]
    fn one_matching_v1_among_several_is_enough() {
        let good = sign(SECRET, T, BODY);
        let good_hex = good.rsplit("v1=").next().unwrap();
        let other = sign(b"old secret", T, BODY);
        let other_hex = other.rsplit("v1=").next().unwrap();
        let header = format!("t={T},v1={other_hex},v1={good_hex},v0=zz");
        assert_eq!(verify(&header, BODY, SECRET, T, TOL), Ok(T));
        let header = format!("t={T}, v1={good_hex} , v1={other_hex}");
        assert_eq!(verify(&header, BODY, SECRET, T, TOL), Ok(T));
        let header = format!("t={T},v1={other_hex},v1=nothex");
        assert_eq!(
            verify(&header, BODY, SECRET, T, TOL),
            Err(WebhookError::NoSignatureMatched)
        );
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let hex = sign(SECRET, T, BODY)
            .rsplit("v1=")
            .next()
            .unwrap()
            .to_owned();
        let cases = [
            (String::new(), "no t="),
            (format!("v1={hex}"), "no t="),
            (format!("t={T}"), "no hex v1="),
            (format!("t={T},v1=xyz"), "no hex v1="),
            (format!("t=soon,v1={hex}"), "is not a unix time"),
            (format!("t=+{T},v1={hex}"), "is not a unix time"),
            (format!("t={T},t={T},v1={hex}"), "more than one t="),
            (format!("t={T},garbage,v1={hex}"), "is not key=value"),
        ];
        for (header, expected) in cases {
            match verify(&header, BODY, SECRET, T, TOL) {
                Err(WebhookError::MalformedHeader { problem }) => {
                    assert!(problem.contains(expected), "{header:?}: {problem}")
                }
                other => panic!("{header:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_secret_is_refused() {
        let header = sign(b"", T, BODY);
        assert!(matches!(
            verify(&header, BODY, b"", T, TOL),
            Err(WebhookError::InvalidConfig {
                field: "secret",
                ..
            })
        ));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("é1"), None);
        assert_eq!(from_hex("+1"), None);
    }
}
