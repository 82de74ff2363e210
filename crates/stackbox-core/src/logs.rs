//! `stackbox logs` and `GET /v1/clients/{id}/logs`, the pure half: what `since` and `tail`
//! mean. The adapters pass the clock (`now`, Unix seconds); the engine takes the result.

use crate::CoreError;

/// Lines per request when `tail` is not given.
pub const DEFAULT_TAIL: u32 = 200;
/// The most lines one request returns.
pub const MAX_TAIL: u32 = 5000;

/// `since` as the engine takes it (Unix seconds): a duration back from `now` (`30s`, `10m`,
/// `2h`, `1d`) or an RFC 3339 time (`2025-03-01T12:00:00Z`, `…+02:00`). Errors name `since`.
pub fn parse_since(text: &str, now: i64) -> Result<i64, CoreError> {
    let text = text.trim();
    let problem = || {
        CoreError::invalid(
            "since",
            format!(
                "{text:?} is neither a duration (30s, 10m, 2h, 1d) nor an RFC 3339 time \
                 (2025-03-01T12:00:00Z)"
            ),
        )
    };
    match duration_seconds("since", text) {
        Some(back) => back.map(|back| (now - back).max(0)),
        None => rfc3339_seconds(text).ok_or_else(problem),
    }
}

/// A duration written `30s`, `10m`, `2h` or `1d`, in seconds, at most ten years: `None` when
/// the text is not written that way, an error naming `field` when it is but is too long.
pub fn duration_seconds(field: &str, text: &str) -> Option<Result<i64, CoreError>> {
    let text = text.trim();
    let unit = text.chars().last().filter(char::is_ascii_alphabetic)?;
    let number = &text[..text.len() - 1];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let too_long = || CoreError::invalid(field, format!("{text:?} is more than ten years"));
    let Ok(amount) = number.parse::<i64>() else {
        return Some(Err(too_long()));
    };
    Some(
        amount
            .checked_mul(seconds)
            .filter(|back| *back <= 3650 * 86_400)
            .ok_or_else(too_long),
    )
}

/// `tail` from text: 1 to [`MAX_TAIL`], [`DEFAULT_TAIL`] when not given. Errors name `tail`.
pub fn parse_tail(text: Option<&str>) -> Result<u32, CoreError> {
    let Some(text) = text else {
        return Ok(DEFAULT_TAIL);
    };
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|tail| (1..=MAX_TAIL).contains(tail))
        .ok_or_else(|| {
            CoreError::invalid(
                "tail",
                format!("{text:?} is not a whole number from 1 to {MAX_TAIL}"),
            )
        })
}

/// An RFC 3339 time as Unix seconds (fractions dropped).
fn rfc3339_seconds(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let digits = |from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > crate::calendar::days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let length = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if length == 0 {
            return None;
        }
        rest = &fraction[length..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = crate::calendar::days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_since("30s", NOW), Ok(NOW - 30));
        assert_eq!(parse_since("10m", NOW), Ok(NOW - 600));
        assert_eq!(parse_since("2h", NOW), Ok(NOW - 7200));
        assert_eq!(parse_since("1d", NOW), Ok(NOW - 86_400));
        assert_eq!(parse_since(" 0s ", NOW), Ok(NOW));
    }

    #[test]
    fn rfc3339_times_are_unix_seconds() {
        assert_eq!(parse_since("1970-01-01T00:00:00Z", NOW), Ok(0));
        assert_eq!(parse_since("2025-03-01T12:00:00Z", NOW), Ok(1_740_830_400));
        assert_eq!(
            parse_since("2025-03-01T12:00:00.750Z", NOW),
            Ok(1_740_830_400)
        );
        assert_eq!(
            parse_since("2025-03-01T14:00:00+02:00", NOW),
            Ok(1_740_830_400)
        );
        assert_eq!(parse_since("2024-02-29T00:00:00Z", NOW), Ok(1_709_164_800));
    }

    #[test]
    fn bad_since_names_the_field() {
        for bad in [
            "",
            "m",
            "10",
            "10x",
            "-5m",
            "1.5h",
            "ten minutes",
            "2025-02-30T00:00:00Z",
            "2025-03-01 12:00:00",
            "2025-03-01T12:00:00",
            "2025-03-01T25:00:00Z",
            "99999999999999999999d",
            "4000d",
        ] {
            match parse_since(bad, NOW) {
                Err(CoreError::InvalidField { field, .. }) => assert_eq!(field, "since", "{bad}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn tail_is_bounded_and_defaults() {
        assert_eq!(parse_tail(None), Ok(DEFAULT_TAIL));
        assert_eq!(parse_tail(Some("1")), Ok(1));
        assert_eq!(parse_tail(Some("5000")), Ok(MAX_TAIL));
        for bad in ["0", "5001", "-1", "many", ""] {
            match parse_tail(Some(bad)) {
                Err(CoreError::InvalidField { field, .. }) => assert_eq!(field, "tail", "{bad}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
