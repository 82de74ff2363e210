//! A small, deterministic YAML writer for the documents StackBox produces.
//!
//! Strings are written plain only when they cannot be read back as anything else (a
//! number, a boolean, null, a date, a sexagesimal, an indicator) in YAML 1.1 or 1.2;
//! everything else is double-quoted with JSON escapes, which YAML accepts verbatim. So a
//! company name with quotes, colons, `#`, newlines or `<script>` stays one string.

/// A YAML value; maps keep insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub fn str(value: impl Into<String>) -> Yaml {
        Yaml::Str(value.into())
    }

    pub fn map() -> Yaml {
        Yaml::Map(Vec::new())
    }

    /// Adds an entry to a map (no-op on other values, which would be a bug in the caller).
    pub fn with(mut self, key: impl Into<String>, value: Yaml) -> Yaml {
        if let Yaml::Map(entries) = &mut self {
            entries.push((key.into(), value));
        }
        self
    }

    pub fn strs<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Yaml {
        Yaml::Seq(
            items
                .into_iter()
                .map(|item| Yaml::Str(item.into()))
                .collect(),
        )
    }
}

/// Writes a document (a trailing newline, no `---`).
pub fn to_string(value: &Yaml) -> String {
    let mut out = String::new();
    match value {
        Yaml::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0),
        Yaml::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, entries: &[(String, Yaml)], indent: usize) {
    for (key, value) in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(key));
        out.push(':');
        write_value_after_key(out, value, indent);
    }
}

fn write_value_after_key(out: &mut String, value: &Yaml, indent: usize) {
    match value {
        Yaml::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            write_map(out, entries, indent + 2);
        }
        Yaml::Seq(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Yaml], indent: usize) {
    for item in items {
        match item {
            Yaml::Map(entries) if !entries.is_empty() => {
                // First entry on the dash line, the rest aligned under it.
                let mut block = String::new();
                write_map(&mut block, entries, indent + 2);
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&block[indent + 2..]);
            }
            Yaml::Seq(inner) if !inner.is_empty() => {
                out.push_str(&" ".repeat(indent));
                out.push_str("-\n");
                write_seq(out, inner, indent + 2);
            }
            other => {
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

fn inline(value: &Yaml) -> String {
    match value {
        Yaml::Str(text) => scalar(text),
        Yaml::Int(number) => number.to_string(),
        Yaml::Bool(flag) => flag.to_string(),
        Yaml::Seq(_) => "[]".to_string(),
        Yaml::Map(_) => "{}".to_string(),
    }
}

/// A string as a YAML scalar: plain when unambiguous, else double-quoted.
pub fn scalar(text: &str) -> String {
    if is_plain_safe(text) {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// A double-quoted YAML scalar. JSON string escapes are a subset of YAML's; characters
/// outside YAML's printable set are escaped as `\uXXXX` so that any parser accepts them.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if text.ends_with(':') || text.contains(": ") || text.contains(" #") {
        return false;
    }
    const RESERVED: [&str; 13] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf", "~", "none",
    ];
    if RESERVED.contains(&text.to_ascii_lowercase().as_str()) {
        return false;
    }
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_./@+-:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_strings_are_quoted() {
        for text in [
            "",
            "yes",
            "No",
            "on",
            "null",
            "~",
            "1.5",
            "0755",
            "1:20",
            "2001-12-14",
            "-x",
            "a: b",
            "x:",
            "#c",
            "*a",
            "&a",
            "!t",
            "{a}",
            "[a]",
            "@x",
            "`x`",
            "a b",
            "O'Brien",
        ] {
            assert!(scalar(text).starts_with('"'), "{text:?} should be quoted");
        }
        for text in [
            "traefik:v3.6",
            "unless-stopped",
            "/var/lib/mysql",
            "smith-e11f059b_web",
            "json-file",
        ] {
            assert_eq!(scalar(text), text);
        }
    }

    #[test]
    fn control_and_separator_characters_are_escaped() {
        assert_eq!(
            quoted("a\"b\\c\nd\u{2028}\u{85}"),
            "\"a\\\"b\\\\c\\nd\\u2028\\u0085\""
        );
    }

    #[test]
    fn nested_documents_are_block_style() {
        let doc = Yaml::map()
            .with(
                "services",
                Yaml::map().with(
                    "a",
                    Yaml::map()
                        .with("image", Yaml::str("x:1"))
                        .with("ports", Yaml::strs(["80:80"])),
                ),
            )
            .with(
                "list",
                Yaml::Seq(vec![Yaml::map()
                    .with("k", Yaml::Int(1))
                    .with("v", Yaml::Bool(true))]),
            )
            .with("empty", Yaml::map());
        assert_eq!(
            to_string(&doc),
            "services:\n  a:\n    image: x:1\n    ports:\n      - \"80:80\"\nlist:\n  - k: 1\n    v: true\nempty: {}\n"
        );
    }
}
