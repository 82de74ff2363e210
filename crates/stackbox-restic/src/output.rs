//! restic's `--json` output (as restic 0.14 prints it), and the typed values made from it.

use serde::{Deserialize, Serialize};

use crate::error::ResticError;

/// One `status` line of `restic backup --json`. restic leaves out the fields that are still
/// zero (`omitempty`), so every field defaults to 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupProgress {
    /// 0.0 to 1.0.
    #[serde(default)]
    pub percent_done: f64,
    #[serde(default)]
    pub total_files: u64,
    #[serde(default)]
    pub files_done: u64,
    #[serde(default)]
    pub total_bytes: u64,
    #[serde(default)]
    pub bytes_done: u64,
}

/// The `summary` line of `restic backup --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The new snapshot's full id (restic 0.14 prints the short id; the driver looks the full
    /// one up).
    pub snapshot_id: String,
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub files_unmodified: u64,
    #[serde(default)]
    pub dirs_new: u64,
    #[serde(default)]
    pub dirs_changed: u64,
    #[serde(default)]
    pub dirs_unmodified: u64,
    /// Bytes added to the repository (after deduplication and compression, metadata included).
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub total_files_processed: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
    /// Seconds.
    #[serde(default)]
    pub total_duration: f64,
}

/// A snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub short_id: String,
    /// RFC 3339 with nanoseconds, in the time zone of the machine that made it, as restic
    /// prints it ("2026-12-03T10:26:10.413608433Z").
    pub time: String,
    /// The backed-up paths made absolute by restic (`base` joined with each relative path);
    /// the snapshot's own tree holds them relative to `base` (see [`crate::Repository::backup`]).
    #[serde(default)]
    pub paths: Vec<String>,
    /// restic leaves the field out when there are no tags.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub hostname: String,
}

impl Snapshot {
    /// The snapshot's time as seconds and nanoseconds since the Unix epoch (for ordering), or
    /// `None` when `time` is not RFC 3339.
    pub fn unix_time(&self) -> Option<(i64, u32)> {
        parse_rfc3339(&self.time)
    }
}

/// One line of `restic backup --json`.
#[derive(Debug)]
pub(crate) enum BackupLine {
    Status(BackupProgress),
    /// `snapshot_id` is the short id here, as restic 0.14 prints it.
    Summary(BackupSummary),
    /// An item restic could not back up, as `path: reason`.
    Error(String),
    /// A line that is not a message this driver knows (ignored: newer restic may add some).
    Other,
}

#[derive(Deserialize)]
struct Tagged {
    message_type: String,
}

#[derive(Deserialize)]
struct ErrorLine {
    #[serde(default)]
    error: serde_json::Value,
    #[serde(default)]
    during: String,
    #[serde(default)]
    item: String,
}

pub(crate) fn parse_backup_line(line: &str) -> BackupLine {
    let line = line.trim();
    let Ok(tagged) = serde_json::from_str::<Tagged>(line) else {
        return BackupLine::Other;
    };
    match tagged.message_type.as_str() {
        "status" => serde_json::from_str(line)
            .map(BackupLine::Status)
            .unwrap_or(BackupLine::Other),
        "summary" => serde_json::from_str(line)
            .map(BackupLine::Summary)
            .unwrap_or(BackupLine::Other),
        "error" => match serde_json::from_str::<ErrorLine>(line) {
            Ok(error) => BackupLine::Error(describe_error_line(&error)),
            Err(_) => BackupLine::Error(line.to_string()),
        },
        _ => BackupLine::Other,
    }
}

/// `item (during): reason`. restic marshals Go's error values as they are, so an `open` error
/// arrives as `{"Op":"open","Path":"a/locked","Err":13}`: the errno becomes its text here.
fn describe_error_line(error: &ErrorLine) -> String {
    let reason = match &error.error {
        serde_json::Value::Object(fields) => {
            let op = fields.get("Op").and_then(|v| v.as_str());
            let errno = fields.get("Err").and_then(|v| v.as_i64());
            match (op, errno) {
                (Some(op), Some(errno)) => {
                    let errno = i32::try_from(errno).unwrap_or(i32::MAX);
                    format!("{op}: {}", std::io::Error::from_raw_os_error(errno))
                }
                _ => error.error.to_string(),
            }
        }
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => "error".to_string(),
        other => other.to_string(),
    };
    let item = if error.item.is_empty() {
        "?"
    } else {
        &error.item
    };
    if error.during.is_empty() {
        format!("{item}: {reason}")
    } else {
        format!("{item} ({}): {reason}", error.during)
    }
}

pub(crate) fn parse_snapshots(
    command: &'static str,
    stdout: &[u8],
) -> Result<Vec<Snapshot>, ResticError> {
    let mut snapshots: Vec<Snapshot> =
        serde_json::from_slice(stdout).map_err(|error| ResticError::UnexpectedOutput {
            command,
            problem: format!("not a JSON array of snapshots: {error}"),
        })?;
    // Oldest first; restic's own order is not promised (and times carry differing offsets).
    snapshots.sort_by(|a, b| {
        a.unix_time()
            .cmp(&b.unix_time())
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(snapshots)
}

/// One group of `restic forget --json`; restic prints `null` for an empty list.
#[derive(Deserialize)]
struct ForgetGroup {
    #[serde(default)]
    keep: Option<Vec<IdOnly>>,
    #[serde(default)]
    remove: Option<Vec<IdOnly>>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// The ids `restic forget --json` kept and removed. restic 0.14 prints nothing at all when no
/// snapshot matched the filter, which means no groups; with `--prune` it prints prune's text
/// report on stdout after the JSON array, so only the first JSON value is read.
pub(crate) fn parse_forget(stdout: &[u8]) -> Result<(Vec<String>, Vec<String>), ResticError> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), Vec::new()));
    }
    let first = serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Vec<ForgetGroup>>()
        .next();
    let groups = match first {
        Some(Ok(groups)) => groups,
        Some(Err(error)) => {
            return Err(ResticError::UnexpectedOutput {
                command: "forget",
                problem: format!("not a JSON array of snapshot groups: {error}"),
            })
        }
        None => Vec::new(),
    };
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for group in groups {
        kept.extend(group.keep.unwrap_or_default().into_iter().map(|s| s.id));
        removed.extend(group.remove.unwrap_or_default().into_iter().map(|s| s.id));
    }
    Ok((kept, removed))
}

#[derive(Deserialize)]
struct Stats {
    total_size: u64,
}

pub(crate) fn parse_stats(stdout: &[u8]) -> Result<u64, ResticError> {
    serde_json::from_slice::<Stats>(stdout)
        .map(|stats| stats.total_size)
        .map_err(|error| ResticError::UnexpectedOutput {
            command: "stats",
            problem: format!("no total_size in the statistics: {error}"),
        })
}

/// RFC 3339 (`2026-12-03T10:26:10.413608433Z`, `…+01:00`) to seconds and nanoseconds since the
/// epoch. Small and exact for the timestamps restic prints, so no date crate is needed.
pub(crate) fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (60) is allowed by RFC 3339 and ordered as the next second.
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut value: u32 = 0;
        for (index, digit) in fraction[..digits].bytes().enumerate() {
            if index < 9 {
                value = value * 10 + u32::from(digit - b'0');
            }
        }
        nanos = value * 10u32.pow(9u32.saturating_sub(digits.min(9) as u32));
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((seconds, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_status_line_with_fields_left_out_parses_with_zeros() {
        let line = r#"{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":7}"#;
        let BackupLine::Status(progress) = parse_backup_line(line) else {
            panic!("not a status line")
        };
        assert_eq!(
            progress,
            BackupProgress {
                percent_done: 0.0,
                total_files: 1,
                files_done: 0,
                total_bytes: 7,
                bytes_done: 0,
            }
        );
    }

    #[test]
    fn backup_summary_line_of_restic_0_14_parses_with_its_short_snapshot_id() {
        let line = r#"{"message_type":"summary","files_new":3,"files_changed":0,"files_unmodified":0,"dirs_new":2,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":2,"tree_blobs":3,"data_added":1950,"total_files_processed":3,"total_bytes_processed":10,"total_duration":0.238876222,"snapshot_id":"11554f0c"}"#;
        let BackupLine::Summary(summary) = parse_backup_line(line) else {
            panic!("not a summary line")
        };
        assert_eq!(summary.snapshot_id, "11554f0c");
        assert_eq!(summary.files_new, 3);
        assert_eq!(summary.dirs_new, 2);
        assert_eq!(summary.data_added, 1950);
        assert_eq!(summary.total_files_processed, 3);
        assert_eq!(summary.total_bytes_processed, 10);
        assert!((summary.total_duration - 0.238876222).abs() < 1e-9);
    }

    #[test]
    fn backup_error_line_with_an_errno_reads_as_the_path_and_the_os_error_text() {
        let line = r#"{"message_type":"error","error":{"Op":"open","Path":"a/locked","Err":13},"during":"archival","item":"/tmp/rx/src/a/locked"}"#;
        let BackupLine::Error(text) = parse_backup_line(line) else {
            panic!("not an error line")
        };
        assert!(
            text.starts_with("/tmp/rx/src/a/locked (archival): open: Permission denied"),
            "{text}"
        );
    }

    #[test]
    fn backup_lines_that_are_not_known_json_messages_are_ignored() {
        assert!(matches!(
            parse_backup_line("Warning: at least one source file could not be read"),
            BackupLine::Other
        ));
        assert!(matches!(
            parse_backup_line(r#"{"message_type":"verbose_status","action":"new"}"#),
            BackupLine::Other
        ));
    }

    #[test]
    fn snapshots_without_tags_parse_and_come_out_oldest_first_across_time_zones() {
        let json = br#"[
          {"time":"2026-12-03T11:30:00.5+01:00","tree":"t","paths":["/srv/a"],"hostname":"h","username":"root","id":"bbbb","short_id":"bb"},
          {"time":"2026-12-03T10:29:59.999999999Z","tree":"t","paths":["/srv/a"],"hostname":"h","username":"root","tags":["x"],"id":"aaaa","short_id":"aa"}
        ]"#;
        let snapshots = parse_snapshots("snapshots", json).unwrap();
        assert_eq!(snapshots[0].id, "aaaa");
        assert_eq!(snapshots[0].tags, vec!["x".to_string()]);
        assert_eq!(snapshots[1].id, "bbbb");
        assert!(snapshots[1].tags.is_empty());
    }

    #[test]
    fn forget_output_with_null_lists_and_empty_output_parse() {
        let json = br#"[{"tags":["t1"],"host":"h1","paths":null,"keep":[{"id":"k1","short_id":"k"}],"remove":null,"reasons":[]},
                        {"tags":null,"host":"h2","paths":null,"keep":[{"id":"k2"}],"remove":[{"id":"r1"},{"id":"r2"}],"reasons":[]}]"#;
        let (kept, removed) = parse_forget(json).unwrap();
        assert_eq!(kept, vec!["k1", "k2"]);
        assert_eq!(removed, vec!["r1", "r2"]);
        assert_eq!(parse_forget(b"\n").unwrap(), (vec![], vec![]));
        let with_prune_report = b"[{\"keep\":[{\"id\":\"k\"}],\"remove\":[{\"id\":\"r\"}]}]\nloading indexes...\n[0:00] 100.00%  1 / 1 snapshots\ndone\n";
        assert_eq!(
            parse_forget(with_prune_report).unwrap(),
            (vec!["k".to_string()], vec!["r".to_string()])
        );
        assert!(parse_forget(b"removed snapshot 1234").is_err());
    }

    #[test]
    fn stats_raw_data_output_gives_the_total_size() {
        let json =
            br#"{"total_size":1520,"total_file_count":0,"total_blob_count":7,"snapshots_count":3}"#;
        assert_eq!(parse_stats(json).unwrap(), 1520);
        let empty = br#"{"total_size":0,"total_file_count":0,"snapshots_count":0}"#;
        assert_eq!(parse_stats(empty).unwrap(), 0);
    }

    #[test]
    fn rfc3339_parses_utc_offsets_fractions_and_refuses_garbage() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2026-12-03T10:26:10.413608433Z"),
            Some((1_796_293_570, 413_608_433))
        );
        assert_eq!(
            parse_rfc3339("2026-12-03T11:26:10.5+01:00"),
            Some((1_796_293_570, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00-00:30"),
            Some((951_784_200, 0))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-03T10:26:10Z"), None);
        assert_eq!(parse_rfc3339("2026-12-03T10:26:10"), None);
    }
}
