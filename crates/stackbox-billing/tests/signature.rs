//! Stripe's webhook signature scheme, through the public API only.

use std::time::Duration;

use stackbox_billing::{sign, verify, SignatureError, DEFAULT_TOLERANCE};

const SECRET: &str = "whsec_test_secret_for_stackbox";
const NOW: i64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;

fn hmac_hex(secret: &str, t: i64, body: &[u8]) -> String {
    // Reuses `sign` only to extract the v1 value for building unusual headers below; the
    // known-answer test pins `sign` itself to an independent implementation.
    let header = sign(body, secret, t);
    header
        .split_once(",v1=")
        .map(|(_, v1)| v1.to_owned())
        .unwrap_or_default()
}

#[test]
fn known_answer_vector_matches_pythons_hmac_module() {
    // Computed once, independently of this crate:
    // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test_secret_for_stackbox",
    //   b"1700000000.{\"id\":\"evt_test_webhook\",\"object\":\"event\"}",
    //   hashlib.sha256).hexdigest())'
    // The key is the whole "whsec_…" string as bytes, as Stripe's libraries use it.
    let expected = "t=1700000000,\
                    v1=1528e0514892c95df7660e2f5633dbbad6bfa296b3eb443c030de5b8e3135659";
    assert_eq!(sign(BODY, SECRET, NOW), expected);
    assert_eq!(
        verify(expected, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Ok(NOW)
    );
}

#[test]
fn a_header_made_by_sign_verifies_and_returns_its_timestamp() {
    let header = sign(BODY, SECRET, NOW - 10);
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Ok(NOW - 10)
    );
}

#[test]
fn a_body_changed_by_one_byte_is_a_mismatch() {
    let header = sign(BODY, SECRET, NOW);
    let mut tampered = BODY.to_vec();
    tampered[10] ^= 1;
    assert_eq!(
        verify(&header, &tampered, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );
    // Appended whitespace counts too: the signature covers the raw bytes, not the JSON.
    let mut padded = BODY.to_vec();
    padded.push(b'\n');
    assert_eq!(
        verify(&header, &padded, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_signature_made_with_another_secret_is_a_mismatch() {
    let header = sign(BODY, "whsec_someone_elses_endpoint", NOW);
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_changed_timestamp_with_the_old_signature_is_a_mismatch() {
    // The timestamp is part of the signed payload, so a replay cannot just refresh it.
    let v1 = hmac_hex(SECRET, NOW - 3600, BODY);
    let header = format!("t={NOW},v1={v1}");
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn timestamps_outside_the_tolerance_are_stale_in_both_directions() {
    let old = sign(BODY, SECRET, NOW - 301);
    assert_eq!(
        verify(&old, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Stale { age_seconds: 301 })
    );
    let future = sign(BODY, SECRET, NOW + 301);
    assert_eq!(
        verify(&future, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Stale { age_seconds: -301 })
    );
    // Exactly at the edge is still accepted, on both sides.
    for t in [NOW - 300, NOW + 300] {
        let header = sign(BODY, SECRET, t);
        assert_eq!(verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE), Ok(t));
    }
}

#[test]
fn the_tolerance_is_configurable() {
    let header = sign(BODY, SECRET, NOW - 20);
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, Duration::from_secs(10)),
        Err(SignatureError::Stale { age_seconds: 20 })
    );
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, Duration::from_secs(30)),
        Ok(NOW - 20)
    );
}

#[test]
fn a_stale_header_with_a_wrong_signature_is_reported_as_a_mismatch_not_as_stale() {
    // Stale is only ever said of an authentic delivery, so it can be logged as a replay.
    let header = sign(BODY, "whsec_other", NOW - 3600);
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn any_matching_v1_is_enough_when_several_are_sent() {
    // During a secret roll Stripe signs with the old and the new secret; here only the
    // second v1 is made with our secret, and a v0 is thrown in.
    let wrong = hmac_hex("whsec_the_old_secret", NOW, BODY);
    let right = hmac_hex(SECRET, NOW, BODY);
    let header = format!("t={NOW},v1={wrong},v1={right},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Ok(NOW)
    );
    // The order of elements does not matter, nor whitespace around them.
    let header = format!(" v1={right} , t={NOW} ,v1={wrong}");
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Ok(NOW)
    );
    // Upper-case hex is the same signature.
    let header = format!("t={NOW},v1={}", right.to_uppercase());
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Ok(NOW)
    );
}

#[test]
fn several_v1_none_matching_is_a_mismatch() {
    let a = hmac_hex("whsec_a", NOW, BODY);
    let b = hmac_hex("whsec_b", NOW, BODY);
    let header = format!("t={NOW},v1={a},v1={b}");
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_header_with_only_a_v0_signature_is_refused_even_if_the_v0_is_our_hmac() {
    // v0 is not Stripe's live scheme; accepting it would let a downgrade through.
    let right = hmac_hex(SECRET, NOW, BODY);
    let header = format!("t={NOW},v0={right}");
    assert_eq!(
        verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::NoV1Signature)
    );
}

#[test]
fn malformed_headers_are_refused_with_the_reason() {
    let right = hmac_hex(SECRET, NOW, BODY);
    let cases: Vec<(String, SignatureError)> = vec![
        (String::new(), SignatureError::MissingTimestamp),
        (format!("v1={right}"), SignatureError::MissingTimestamp),
        (format!("t={NOW}"), SignatureError::NoV1Signature),
        (format!("t={NOW},v1=zz"), SignatureError::NoV1Signature),
        (format!("t={NOW},v1="), SignatureError::NoV1Signature),
        (
            format!("t=yesterday,v1={right}"),
            SignatureError::Malformed {
                part: "t=yesterday".to_owned(),
            },
        ),
        (
            format!("t=-5,v1={right}"),
            SignatureError::Malformed {
                part: "t=-5".to_owned(),
            },
        ),
        (
            format!("t={NOW},t={NOW},v1={right}"),
            SignatureError::Malformed {
                part: format!("t={NOW}"),
            },
        ),
        (
            format!("t={NOW},garbage,v1={right}"),
            SignatureError::Malformed {
                part: "garbage".to_owned(),
            },
        ),
        (
            format!("t={NOW};v1={right}"),
            SignatureError::Malformed {
                part: format!("t={NOW};v1={right}").chars().take(40).collect(),
            },
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(
            verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE),
            Err(expected),
            "header {header:?}"
        );
    }
}

#[test]
fn an_empty_secret_is_refused_rather_than_used_as_an_hmac_key() {
    // With an empty key anyone could compute valid signatures.
    let header = sign(BODY, "", NOW);
    assert_eq!(
        verify(&header, BODY, "", NOW, DEFAULT_TOLERANCE),
        Err(SignatureError::EmptySecret)
    );
}

#[test]
fn extreme_timestamps_and_clocks_do_not_overflow() {
    let header = sign(BODY, SECRET, i64::MAX);
    assert_eq!(
        verify(&header, BODY, SECRET, i64::MIN, DEFAULT_TOLERANCE),
        Err(SignatureError::Stale {
            age_seconds: i64::MIN
        })
    );
    let header = sign(BODY, SECRET, 0);
    assert!(matches!(
        verify(&header, BODY, SECRET, i64::MAX, DEFAULT_TOLERANCE),
        Err(SignatureError::Stale { .. })
    ));
    assert_eq!(
        verify(&header, BODY, SECRET, 0, Duration::MAX),
        Ok(0),
        "a huge tolerance must not wrap around"
    );
}

#[test]
fn signature_errors_do_not_contain_the_secret() {
    let headers = [
        String::new(),
        "t=1".to_owned(),
        format!("t=x,v1={SECRET}"),
        sign(BODY, SECRET, NOW - 1000),
        sign(BODY, "whsec_other", NOW),
    ];
    for header in headers {
        if let Err(error) = verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE) {
            assert!(!error.to_string().contains(SECRET), "{error}");
            assert!(!format!("{error:?}").contains(SECRET), "{error:?}");
        }
    }
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
    }

    /// Text made of the header's own vocabulary plus hostile characters.
    fn header(&mut self) -> String {
        const PIECES: &[&str] = &[
            "t",
            "v1",
            "v0",
            "=",
            ",",
            " ",
            "1700000000",
            "-",
            "+",
            "0",
            "9",
            "a",
            "F",
            "z",
            "é",
            "\u{0}",
            "\u{202e}",
            "\n",
            "==",
            ",,",
            "99999999999999999999999",
            "deadbeef",
        ];
        let pieces = self.below(24);
        (0..pieces)
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }
}

#[test]
fn no_garbage_header_panics_or_verifies() {
    let mut garbage = Garbage(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let header = garbage.header();
        // Must return, never panic; garbage cannot carry our HMAC.
        let result = verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE);
        assert!(result.is_err(), "{header:?} verified");
        if let Err(SignatureError::Malformed { part }) = result {
            assert!(part.chars().count() <= 40, "excerpt too long: {part:?}");
        }
    }
}

#[test]
fn no_mutation_of_a_valid_header_panics_and_only_harmless_ones_verify() {
    let valid = sign(BODY, SECRET, NOW);
    let mut garbage = Garbage(0xD1B5_4A32_D192_ED03);
    for _ in 0..20_000 {
        let mut bytes: Vec<char> = valid.chars().collect();
        for _ in 0..=garbage.below(3) {
            let at = garbage.below(bytes.len());
            match garbage.below(3) {
                0 => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, char::from(b' ' + (garbage.below(95) as u8))),
                _ => bytes[at] = char::from(b' ' + (garbage.below(95) as u8)),
            }
        }
        let header: String = bytes.iter().collect();
        if let Ok(t) = verify(&header, BODY, SECRET, NOW, DEFAULT_TOLERANCE) {
            // Only changes that leave t and the full v1 intact can pass: e.g. spaces around
            // elements, an extra unknown element, or a case change in the hex.
            assert_eq!(t, NOW, "{header:?}");
            assert!(
                header
                    .to_lowercase()
                    .contains(&valid["t=1700000000,v1=".len()..]),
                "{header:?} verified without the intact v1"
            );
        }
    }
}
