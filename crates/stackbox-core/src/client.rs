//! The client configuration: parsing, validation and the client id.
//!
//! Validation is strict where a value reaches a machine (domain, e-mail, colour, id) and
//! permissive where it only reaches people (the company name, which may hold any printable
//! Unicode and is escaped by each renderer for its format).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::infra::ProviderKind;
use crate::plan::{App, Plan};

/// The longest company name accepted, in characters.
pub const COMPANY_NAME_MAX_CHARS: usize = 100;
/// The longest slug part of a client id, so that `<id>-<service>-1` container names and
/// `<id>_<volume>` names stay short.
pub const SLUG_MAX_CHARS: usize = 20;
/// The longest subdomain prefix StackBox puts in front of a client domain
/// (`newsletter-sandbox.`), which bounds the domain's own length.
const LONGEST_PREFIX: usize = "newsletter-sandbox.".len();

/// A client configuration file, exactly as written (before validation).
///
/// Every field is optional here so that a missing field gets our own message naming it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfigFile {
    /// Set once StackBox has assigned an id; may be given to pin one.
    pub client_id: Option<String>,
    pub company_name: Option<String>,
    pub domain: Option<String>,
    pub plan: Option<String>,
    pub admin_email: Option<String>,
    pub brand_color: Option<String>,
    /// `local` or `aws`; when unset, the operator's `[infrastructure] provider`.
    pub infrastructure: Option<String>,
    /// The release the client runs (see [`crate::release`]); recorded by StackBox, changed by
    /// `stackbox upgrade`.
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    /// Domains the client had before, redirected to `domain` until their date (recorded by
    /// StackBox when the domain changes; see [`carry_previous_domains`]).
    #[serde(default)]
    pub previous_domains: Vec<PreviousDomainFile>,
}

/// A `[[previous_domains]]` entry as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousDomainFile {
    pub domain: String,
    /// The last day (UTC, `YYYY-MM-DD`) its hostnames redirect.
    pub until: String,
}

/// A domain the client had before: its hostnames answer with a permanent redirect to the same
/// place on the current domain until `until` (inclusive, UTC), so links, bookmarks and mail
/// signatures keep working while the client tells people; then they are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousDomain {
    pub domain: Domain,
    /// `YYYY-MM-DD`: ISO dates compare as text.
    pub until: String,
}

/// How long the hostnames of a client's previous domain redirect to the new one.
pub const DOMAIN_REDIRECT_DAYS: i64 = 90;

/// The most previous domains kept (each adds routes and certificates).
pub const MAX_PREVIOUS_DOMAINS: usize = 5;

/// The civil date (UTC, `YYYY-MM-DD`) `days` days after 1970-01-01; the adapters pass the
/// clock's day, the core does the calendar ([`crate::calendar`]).
pub fn civil_date(days: i64) -> String {
    let (year, month, day) = crate::calendar::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Whether `text` is a real `YYYY-MM-DD` date.
fn is_civil_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<i64>().ok();
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    text[..4].bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&month)
        && (1..=crate::calendar::days_in_month(year, month)).contains(&day)
}

/// The previous domains `next` keeps when it replaces `current` on `today`: its own and
/// `current`'s (its own first) that have not expired and are not `next`'s domain again, plus
/// `current`'s domain (redirected until `until`) when the domain changes. The one place that
/// decides it, for the control plane's changes and the CLI's deploys alike; applying it twice
/// changes nothing.
pub fn carry_previous_domains(
    current: &ClientSpec,
    next: &mut ClientSpec,
    today: &str,
    until: &str,
) {
    let mut kept: Vec<PreviousDomain> = Vec::new();
    for previous in next
        .previous_domains
        .iter()
        .chain(&current.previous_domains)
    {
        if previous.until.as_str() >= today
            && previous.domain != next.domain
            && !kept.iter().any(|k| k.domain == previous.domain)
        {
            kept.push(previous.clone());
        }
    }
    if current.domain != next.domain && !kept.iter().any(|p| p.domain == current.domain) {
        kept.push(PreviousDomain {
            domain: current.domain.clone(),
            until: until.to_string(),
        });
    }
    // The oldest go first when there are too many.
    while kept.len() > MAX_PREVIOUS_DOMAINS {
        kept.remove(0);
    }
    next.previous_domains = kept;
}

/// A validated client configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientSpec {
    /// The id, when already assigned (re-renders) or pinned by the operator.
    pub client_id: Option<ClientId>,
    pub company_name: CompanyName,
    pub domain: Domain,
    pub plan: Plan,
    pub admin_email: Email,
    pub brand_color: BrandColor,
    /// The client's own infrastructure provider, overriding the operator's
    /// (see [`crate::infra::effective_provider`]).
    pub infrastructure: Option<ProviderKind>,
    /// The release the client runs; `None` until StackBox records one (a client from before
    /// releases runs the base release).
    pub release: Option<String>,
    /// Explicit `[features]` switches, kept so that a stored configuration reads as written.
    pub features: BTreeMap<App, bool>,
    /// Domains whose hostnames still redirect here (oldest first).
    pub previous_domains: Vec<PreviousDomain>,
}

impl ClientSpec {
    /// Parses and validates a client configuration in TOML.
    pub fn from_toml(text: &str) -> Result<ClientSpec, CoreError> {
        let file: ClientConfigFile = toml::from_str(text).map_err(|error| CoreError::Syntax {
            origin: "client configuration".to_string(),
            message: error.to_string().trim_end().to_string(),
        })?;
        ClientSpec::from_file(file)
    }

    /// Validates a parsed configuration; the first problem found is returned.
    pub fn from_file(file: ClientConfigFile) -> Result<ClientSpec, CoreError> {
        let company_name = CompanyName::parse(&required(
            file.company_name,
            "company_name",
            "\"Smith Real Estate\"",
        )?)?;
        let domain = Domain::parse(&required(
            file.domain,
            "domain",
            "\"smithrealestate.example.com\"",
        )?)?;
        let plan_text = required(file.plan, "plan", "\"starter\"")?;
        let plan = Plan::from_key(plan_text.trim()).ok_or_else(|| {
            CoreError::invalid(
                "plan",
                format!("unknown plan {plan_text:?}; use one of starter, professional, enterprise"),
            )
        })?;
        let admin_email = Email::parse(
            "admin_email",
            &required(file.admin_email, "admin_email", "\"owner@example.com\"")?,
        )?;
        let brand_color = match file.brand_color {
            Some(text) => BrandColor::parse(&text)?,
            None => BrandColor::default(),
        };
        let mut features = BTreeMap::new();
        for (key, enabled) in file.features {
            let app = App::from_key(&key).ok_or_else(|| {
                CoreError::invalid(
                    format!("features.{key}"),
                    "unknown feature; use one of espocrm, nextcloud, calcom, plausible, mailtrain",
                )
            })?;
            if enabled && app.minimum_plan() > plan {
                return Err(CoreError::AppAbovePlan {
                    app,
                    required: app.minimum_plan(),
                    plan,
                });
            }
            features.insert(app, enabled);
        }
        let client_id = file.client_id.as_deref().map(ClientId::parse).transpose()?;
        let infrastructure = file
            .infrastructure
            .as_deref()
            .map(|text| ProviderKind::parse("infrastructure", text))
            .transpose()?;
        let release = file
            .release
            .map(|name| {
                let name = name.trim().to_string();
                crate::release::validate_release_name("release", &name).map(|()| name)
            })
            .transpose()?;
        if file.previous_domains.len() > MAX_PREVIOUS_DOMAINS {
            return Err(CoreError::invalid(
                "previous_domains",
                format!(
                    "at most {MAX_PREVIOUS_DOMAINS} previous domains are kept; remove the oldest"
                ),
            ));
        }
        let mut previous_domains = Vec::with_capacity(file.previous_domains.len());
        for (index, entry) in file.previous_domains.into_iter().enumerate() {
            let field = format!("previous_domains[{index}]");
            let old = Domain::parse(&entry.domain).map_err(|error| match error {
                CoreError::InvalidField { problem, .. } => {
                    CoreError::invalid(format!("{field}.domain"), problem)
                }
                other => other,
            })?;
            if old == domain
                || previous_domains
                    .iter()
                    .any(|p: &PreviousDomain| p.domain == old)
            {
                return Err(CoreError::invalid(
                    format!("{field}.domain"),
                    format!("{old} is the client's domain or listed twice; remove this entry"),
                ));
            }
            if !is_civil_date(&entry.until) {
                return Err(CoreError::invalid(
                    format!("{field}.until"),
                    format!("{:?} is not a date; write it as YYYY-MM-DD", entry.until),
                ));
            }
            previous_domains.push(PreviousDomain {
                domain: old,
                until: entry.until,
            });
        }
        Ok(ClientSpec {
            previous_domains,
            client_id,
            company_name,
            domain,
            plan,
            admin_email,
            brand_color,
            infrastructure,
            release,
            features,
        })
    }

    /// The apps this client runs: the plan's apps less the ones switched off.
    pub fn apps(&self) -> BTreeSet<App> {
        self.plan
            .apps()
            .into_iter()
            .filter(|app| self.features.get(app).copied().unwrap_or(true))
            .collect()
    }

    /// The configuration as TOML, with the assigned id: what StackBox stores beside a bundle.
    pub fn to_toml(&self, id: &ClientId) -> String {
        let mut out = String::new();
        out.push_str("# Written by StackBox. Edit and render again to change the client.\n");
        out.push_str(&format!("client_id = {}\n", toml_string(id.as_str())));
        out.push_str(&format!(
            "company_name = {}\n",
            toml_string(self.company_name.as_str())
        ));
        out.push_str(&format!("domain = {}\n", toml_string(self.domain.as_str())));
        out.push_str(&format!("plan = {}\n", toml_string(self.plan.key())));
        out.push_str(&format!(
            "admin_email = {}\n",
            toml_string(self.admin_email.as_str())
        ));
        out.push_str(&format!(
            "brand_color = {}\n",
            toml_string(self.brand_color.as_str())
        ));
        if let Some(provider) = self.infrastructure {
            out.push_str(&format!(
                "infrastructure = {}\n",
                toml_string(provider.key())
            ));
        }
        if let Some(release) = &self.release {
            out.push_str(&format!("release = {}\n", toml_string(release)));
        }
        if !self.features.is_empty() {
            out.push_str("\n[features]\n");
            for (app, enabled) in &self.features {
                out.push_str(&format!("{} = {}\n", app.key(), enabled));
            }
        }
        for previous in &self.previous_domains {
            out.push_str("\n[[previous_domains]]\n");
            out.push_str(&format!(
                "domain = {}\n",
                toml_string(previous.domain.as_str())
            ));
            out.push_str(&format!("until = {}\n", toml_string(&previous.until)));
        }
        out
    }
}

fn toml_string(value: &str) -> String {
    // A TOML basic string has the same escapes as a JSON string for everything we accept.
    serde_json::to_string(value).expect("a string always serializes")
}

fn required(value: Option<String>, field: &str, example: &str) -> Result<String, CoreError> {
    match value {
        Some(value) if !value.trim().is_empty() => Ok(value),
        Some(_) => Err(CoreError::invalid(
            field,
            format!("is empty; set it, for example {field} = {example}"),
        )),
        None => Err(CoreError::invalid(
            field,
            format!("is missing; add it, for example {field} = {example}"),
        )),
    }
}

/// The company's display name: any printable Unicode, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompanyName(String);

impl CompanyName {
    pub fn parse(text: &str) -> Result<CompanyName, CoreError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CoreError::invalid(
                "company_name",
                "is empty; set the business's name",
            ));
        }
        if let Some(bad) = trimmed
            .chars()
            .find(|c| c.is_control() || is_invisible_format(*c))
        {
            return Err(CoreError::invalid(
                "company_name",
                format!(
                    "contains the control character U+{:04X}; use a single line of printable text",
                    bad as u32
                ),
            ));
        }
        let count = trimmed.chars().count();
        if count > COMPANY_NAME_MAX_CHARS {
            return Err(CoreError::invalid(
                "company_name",
                format!(
                    "is {count} characters long; shorten it to {COMPANY_NAME_MAX_CHARS} or fewer"
                ),
            ));
        }
        Ok(CompanyName(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that are not control characters but are invisible or reorder text, and that
/// YAML 1.1 parsers refuse or that could disguise a name (bidi overrides, BOM, line separators).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The client's main domain, lowercase ASCII (IDNs in their punycode `xn--` form).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Domain(String);

impl Domain {
    pub fn parse(text: &str) -> Result<Domain, CoreError> {
        let domain = text.trim().to_ascii_lowercase();
        let problem = |p: String| CoreError::invalid("domain", p);
        if let Some(rest) = domain
            .strip_prefix("http://")
            .or_else(|| domain.strip_prefix("https://"))
        {
            return Err(problem(format!(
                "must be a bare domain name, not a URL; use {:?}",
                rest.trim_end_matches('/')
            )));
        }
        if domain.ends_with('.') {
            return Err(problem(format!(
                "must not end with a dot; use {:?}",
                domain.trim_end_matches('.')
            )));
        }
        if !domain.is_ascii() {
            return Err(problem(
                "contains non-ASCII letters; write an internationalized domain in its punycode form (xn--…)"
                    .to_string(),
            ));
        }
        if domain.len() + LONGEST_PREFIX > 253 {
            return Err(problem(format!(
                "is {} characters long; with its service subdomains it must stay within 253, so use {} or fewer",
                domain.len(),
                253 - LONGEST_PREFIX
            )));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(problem(format!(
                "{domain:?} has no dot; use a fully qualified name such as \"{domain}.example.com\""
            )));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(problem(
                    "has an empty label (two dots in a row)".to_string(),
                ));
            }
            if label.len() > 63 {
                return Err(problem(format!(
                    "the label {label:?} is longer than 63 characters"
                )));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
            {
                return Err(problem(format!(
                    "contains {bad:?}; a domain may hold only letters a-z, digits and hyphens between dots"
                )));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(problem(format!(
                    "the label {label:?} starts or ends with a hyphen"
                )));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(problem(
                "looks like an IP address; use a domain name".to_string(),
            ));
        }
        Ok(Domain(domain))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<sub>.<domain>`.
    pub fn sub(&self, sub: &str) -> String {
        format!("{sub}.{}", self.0)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address of the common `local@domain` form, ASCII only.
///
/// Stricter than RFC 5322 on purpose: the address goes into app installers, ACME
/// registration and mail headers, and none of those should see quotes, spaces or comments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, text: &str) -> Result<Email, CoreError> {
        let email = text.trim();
        let problem = |p: &str| {
            CoreError::invalid(
                field,
                format!("{p}; use an address such as owner@example.com"),
            )
        };
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(problem("has no @"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(problem(
                "the part before @ is empty or longer than 64 characters",
            ));
        }
        if let Some(bad) = local
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._%+-".contains(*c)))
        {
            return Err(problem(&format!("contains {bad:?} before the @")));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(problem("has a misplaced dot before the @"));
        }
        Domain::parse(domain).map_err(|_| problem("the part after @ is not a valid domain"))?;
        Ok(Email(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A brand colour as `#rrggbb` (lowercase); `#rgb` is accepted and expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrandColor(String);

impl Default for BrandColor {
    fn default() -> Self {
        BrandColor("#1f4e79".to_string())
    }
}

impl BrandColor {
    pub fn parse(text: &str) -> Result<BrandColor, CoreError> {
        let value = text.trim();
        let bad = || {
            CoreError::invalid(
                "brand_color",
                format!(
                    "{value:?} is not a colour; use six hex digits after a #, such as \"#003366\""
                ),
            )
        };
        let hex = value.strip_prefix('#').ok_or_else(bad)?;
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let full = match hex.len() {
            6 => hex.to_ascii_lowercase(),
            3 => hex
                .chars()
                .flat_map(|c| [c, c])
                .collect::<String>()
                .to_ascii_lowercase(),
            _ => return Err(bad()),
        };
        Ok(BrandColor(format!("#{full}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The colour as red, green and blue.
    pub fn rgb(&self) -> (u8, u8, u8) {
        let channel = |i: usize| u8::from_str_radix(&self.0[i..i + 2], 16).expect("validated hex");
        (channel(1), channel(3), channel(5))
    }

    /// Black or white, whichever reads better on this colour (WCAG relative luminance).
    pub fn contrasting_text(&self) -> &'static str {
        let (r, g, b) = self.rgb();
        let linear = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
        // Contrast with white is (1.05)/(L+0.05); with black (L+0.05)/0.05. Pick the larger.
        if 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.05 {
            "#ffffff"
        } else {
            "#111111"
        }
    }
}

/// A client id: `<slug>-<8 hex digits>`, such as `smithrealestate-e11f059b`.
///
/// Only `[a-z0-9-]`, at most 29 characters: it names containers, networks, volumes, routers
/// and folders, and is safe unquoted in every format StackBox writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ClientId(String);

impl ClientId {
    /// A new id for a company, with 32 bits of randomness for the suffix.
    pub fn new(company: &CompanyName, random: u32) -> ClientId {
        ClientId(format!("{}-{random:08x}", slug(company.as_str())))
    }

    pub fn parse(text: &str) -> Result<ClientId, CoreError> {
        let bad = || {
            CoreError::invalid(
                "client_id",
                format!(
                    "{text:?} is not a client id; ids look like \"smithrealestate-e11f059b\" \
                     (lowercase letters and digits, a hyphen, 8 hex digits)"
                ),
            )
        };
        let (slug, suffix) = text.rsplit_once('-').ok_or_else(bad)?;
        let slug_ok = !slug.is_empty()
            && slug.len() <= SLUG_MAX_CHARS
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let suffix_ok = suffix.len() == 8
            && suffix
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if slug_ok && suffix_ok {
            Ok(ClientId(text.to_string()))
        } else {
            Err(bad())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The slug of a company name: transliterated to ASCII, lowercase letters and digits only.
///
/// "Smith Real Estate" gives `smithrealestate`; "Müller & Söhne" gives `mullersohne`;
/// a name with nothing transliterable gives `client`.
pub fn slug(name: &str) -> String {
    let ascii = deunicode::deunicode(name);
    let slug: String = ascii
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(SLUG_MAX_CHARS)
        .collect();
    if slug.is_empty() {
        "client".to_string()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(domain: &str, previous: &[(&str, &str)]) -> ClientSpec {
        let mut text = format!(
            "company_name = \"Moving\"\ndomain = \"{domain}\"\nplan = \"starter\"\n\
             admin_email = \"o@example.org\"\n"
        );
        for (old, until) in previous {
            text.push_str(&format!(
                "\n[[previous_domains]]\ndomain = \"{old}\"\nuntil = \"{until}\"\n"
            ));
        }
        ClientSpec::from_toml(&text).unwrap()
    }

    fn previous(spec: &ClientSpec) -> Vec<(String, String)> {
        spec.previous_domains
            .iter()
            .map(|p| (p.domain.to_string(), p.until.clone()))
            .collect()
    }

    #[test]
    fn a_changed_domain_keeps_the_old_one_redirecting_and_expired_ones_are_dropped() {
        let current = at("b.example.com", &[("a.example.com", "2026-12-01")]);
        let mut next = at("c.example.com", &[]);
        carry_previous_domains(&current, &mut next, "2026-12-03", "2027-03-03");
        assert_eq!(
            previous(&next),
            [("b.example.com".to_string(), "2027-03-03".to_string())],
            "a.example.com expired on 2026-12-01"
        );
        // Applied again (a resumed change, a render of the stored result): nothing moves.
        let mut again = next.clone();
        carry_previous_domains(&current, &mut again, "2026-12-03", "2027-03-05");
        assert_eq!(again, next);
        // Back to the old domain: it is not a previous one any more.
        let mut back = at("b.example.com", &[]);
        carry_previous_domains(&next, &mut back, "2026-12-04", "2027-03-04");
        assert_eq!(
            previous(&back),
            [("c.example.com".to_string(), "2027-03-04".to_string())]
        );
        // Unchanged domain: only the expiry applies.
        let mut same = at("b.example.com", &[]);
        carry_previous_domains(&current, &mut same, "2026-11-30", "2027-03-01");
        assert_eq!(
            previous(&same),
            [("a.example.com".to_string(), "2026-12-01".to_string())]
        );
    }

    #[test]
    fn previous_domains_round_trip_through_toml_and_bad_ones_name_their_field() {
        let spec = at("b.example.com", &[("a.example.com", "2027-01-31")]);
        let id = ClientId::parse("moving-0000abcd").unwrap();
        assert_eq!(
            ClientSpec::from_toml(&spec.to_toml(&id))
                .unwrap()
                .previous_domains,
            spec.previous_domains
        );
        let bad = |previous: &str| {
            ClientSpec::from_toml(&format!(
                "company_name = \"M\"\ndomain = \"b.example.com\"\nplan = \"starter\"\n\
                 admin_email = \"o@example.org\"\n\n[[previous_domains]]\n{previous}"
            ))
            .unwrap_err()
            .to_string()
        };
        assert!(bad("domain = \"a.example.com\"\nuntil = \"2027-02-30\"\n")
            .starts_with("previous_domains[0].until:"));
        assert!(bad("domain = \"not a domain\"\nuntil = \"2027-02-01\"\n")
            .starts_with("previous_domains[0].domain:"));
        assert!(bad("domain = \"b.example.com\"\nuntil = \"2027-02-01\"\n")
            .starts_with("previous_domains[0].domain:"));
    }

    #[test]
    fn civil_dates_follow_the_calendar() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_790), "2026-12-03");
        assert_eq!(civil_date(20_790 + DOMAIN_REDIRECT_DAYS), "2027-03-03");
        assert!(is_civil_date("2028-02-29") && !is_civil_date("2027-02-29"));
        assert!(!is_civil_date("2027-1-01") && !is_civil_date("2027-13-01"));
    }

    const EXAMPLE: &str = r##"
company_name = "Smith Real Estate"
domain = "smithrealestate.stackbox.io"
plan = "professional"
admin_email = "owner@smithrealestate.com"
brand_color = "#003366"
[features]
calcom = true
"##;

    fn with(field: &str, value: &str) -> String {
        EXAMPLE
            .lines()
            .map(|line| {
                if line.starts_with(&format!("{field} =")) {
                    format!("{field} = {value}")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn error_of(text: &str) -> CoreError {
        ClientSpec::from_toml(text).expect_err("configuration should be refused")
    }

    #[test]
    fn the_design_documents_example_is_accepted() {
        let spec = ClientSpec::from_toml(EXAMPLE).unwrap();
        assert_eq!(spec.company_name.as_str(), "Smith Real Estate");
        assert_eq!(spec.plan, Plan::Professional);
        assert_eq!(spec.apps(), Plan::Professional.apps());
    }

    #[test]
    fn a_feature_can_turn_off_an_app_of_the_plan() {
        let spec = ClientSpec::from_toml(&format!("{EXAMPLE}plausible = false\n")).unwrap();
        assert!(!spec.apps().contains(&App::Plausible));
        assert!(spec.apps().contains(&App::Calcom));
    }

    #[test]
    fn an_app_above_the_plan_names_the_plan_it_needs() {
        let error = error_of(&format!("{EXAMPLE}mailtrain = true\n"));
        assert_eq!(
            error,
            CoreError::AppAbovePlan {
                app: App::Mailtrain,
                required: Plan::Enterprise,
                plan: Plan::Professional
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("features.mailtrain") && message.contains("enterprise"),
            "{message}"
        );
    }

    #[test]
    fn turning_off_an_app_above_the_plan_is_harmless() {
        assert!(ClientSpec::from_toml(&format!("{EXAMPLE}mailtrain = false\n")).is_ok());
    }

    #[test]
    fn missing_fields_are_named() {
        for field in ["company_name", "domain", "plan", "admin_email"] {
            let text: String = EXAMPLE
                .lines()
                .filter(|l| !l.starts_with(&format!("{field} =")))
                .collect::<Vec<_>>()
                .join("\n");
            let message = error_of(&text).to_string();
            assert!(
                message.starts_with(&format!("{field}: is missing")),
                "{message}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_with_the_key_named() {
        let message = error_of(&format!("{EXAMPLE}\nwebsite = true\n")).to_string();
        assert!(message.contains("features.website"), "{message}");
        let message = error_of(&format!("colour = \"red\"\n{EXAMPLE}")).to_string();
        assert!(message.contains("colour"), "{message}");
        let message = error_of(&with("plan", "3")).to_string();
        assert!(message.contains("plan"), "{message}");
    }

    #[test]
    fn unknown_plan_lists_the_plans() {
        let message = error_of(&with("plan", "\"gold\"")).to_string();
        assert!(
            message.starts_with("plan: unknown plan \"gold\"") && message.contains("enterprise"),
            "{message}"
        );
    }

    #[test]
    fn malformed_colors_are_refused_and_short_ones_expanded() {
        for bad in [
            "\"003366\"",
            "\"#00336\"",
            "\"#zzzzzz\"",
            "\"red\"",
            "\"#003366; } body { x\"",
        ] {
            assert!(
                error_of(&with("brand_color", bad))
                    .to_string()
                    .starts_with("brand_color:"),
                "{bad}"
            );
        }
        assert_eq!(BrandColor::parse("#ABC").unwrap().as_str(), "#aabbcc");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "\"owner\"",
            "\"owner@\"",
            "\"@x.com\"",
            "\"a b@x.com\"",
            "\"o'wner@x.com\"",
            "\"owner@x\"",
            "\"\\\"x\\\"@x.com\"",
        ] {
            assert!(
                error_of(&with("admin_email", bad))
                    .to_string()
                    .starts_with("admin_email:"),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_domains_are_refused_and_case_is_folded() {
        for bad in [
            "\"localhost\"",
            "\"https://x.com\"",
            "\"x.com.\"",
            "\"-x.com\"",
            "\"x..com\"",
            "\"x_y.com\"",
            "\"müller.de\"",
            "\"10.0.0.1\"",
            "\"x.com\\nother\"",
            "\"x.com; rm -rf /\"",
        ] {
            assert!(
                error_of(&with("domain", bad))
                    .to_string()
                    .starts_with("domain:"),
                "{bad}"
            );
        }
        assert_eq!(
            Domain::parse("Smith.Example.COM").unwrap().as_str(),
            "smith.example.com"
        );
        assert!(Domain::parse("xn--mller-kva.de").is_ok());
    }

    #[test]
    fn company_names_keep_unicode_and_punctuation_but_not_control_characters() {
        for good in [
            "O'Brien & \"Sons\" $HOME `id` <script>alert(1)</script>",
            "東京不動産",
            "Müller – Söhne",
        ] {
            assert_eq!(CompanyName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["Two\nLines", "Tab\there", "\u{202e}evil", ""] {
            assert!(CompanyName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CompanyName::parse(&"x".repeat(101)).is_err());
    }

    #[test]
    fn slugs_are_ascii_and_bounded() {
        assert_eq!(slug("Smith Real Estate"), "smithrealestate");
        assert_eq!(slug("Müller & Söhne"), "mullersohne");
        assert_eq!(slug("!!!"), "client");
        assert!(slug("東京不動産")
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(slug(&"a".repeat(50)).len(), SLUG_MAX_CHARS);
    }

    #[test]
    fn client_ids_have_the_documented_shape() {
        let id = ClientId::new(
            &CompanyName::parse("Smith Real Estate").unwrap(),
            0xe11f059b,
        );
        assert_eq!(id.as_str(), "smithrealestate-e11f059b");
        assert_eq!(ClientId::parse("smithrealestate-e11f059b").unwrap(), id);
        for bad in [
            "Smith-e11f059b",
            "smith-e11f05",
            "smith_e11f059b",
            "-e11f059b",
            "smith-E11F059B",
            "../x-e11f059b",
        ] {
            assert!(ClientId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_infrastructure_provider_is_read_refused_when_unknown_and_round_trips() {
        let spec = ClientSpec::from_toml(&format!("infrastructure = \"aws\"\n{EXAMPLE}")).unwrap();
        assert_eq!(spec.infrastructure, Some(ProviderKind::Aws));
        let id = ClientId::parse("smithrealestate-0000abcd").unwrap();
        let again = ClientSpec::from_toml(&spec.to_toml(&id)).unwrap();
        assert_eq!(again.infrastructure, Some(ProviderKind::Aws));
        assert_eq!(ClientSpec::from_toml(EXAMPLE).unwrap().infrastructure, None);
        let message = error_of(&format!("infrastructure = \"gcp\"\n{EXAMPLE}")).to_string();
        assert!(message.starts_with("infrastructure: unknown"), "{message}");
    }

    #[test]
    fn stored_configuration_round_trips() {
        let spec =
            ClientSpec::from_toml(&with("company_name", "\"O'Brien \\\"Q\\\" $x\"")).unwrap();
        let id = ClientId::parse("obrienqx-0000abcd").unwrap();
        let again = ClientSpec::from_toml(&spec.to_toml(&id)).unwrap();
        assert_eq!(again.client_id.as_ref(), Some(&id));
        assert_eq!(
            ClientSpec {
                client_id: None,
                ..again
            },
            spec
        );
    }
}
