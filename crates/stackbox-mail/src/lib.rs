//! Sends StackBox's client e-mails ([`stackbox_core::notify::Email`]) over SMTP, with lettre.
//!
//! # The SMTP URL
//!
//! | URL | Connection |
//! |-----|------------|
//! | `smtp://host:port` | plain SMTP, no credentials (a relay on loopback, development) |
//! | `smtp://user:pass@host:587?tls=required` | STARTTLS, required: no TLS, no mail |
//! | `smtp://user:pass@host:587?tls=opportunistic` | STARTTLS when the server offers it, else plain |
//! | `smtps://user:pass@host:465` | implicit TLS from the first byte |
//! | `smtp://user:pass@relay:25?tls=none` | plain with credentials: say so explicitly (below) |
//!
//! - Ports default to 25 (`smtp://` without `tls`), 587 (`smtp://` with `tls=required` or
//!   `tls=opportunistic`) and 465 (`smtps://`), as lettre's own `from_url` does.
//! - The user and password are percent-encoded in the URL (`p%40ss` for `p@ss`).
//! - Credentials over a plain connection would cross the network readable by anyone on the
//!   path, so they are refused unless the host is a loopback address (`localhost`,
//!   `127.0.0.0/8`, `::1`) or the URL says `tls=none`.
//! - An optional path sets the name sent with EHLO: `smtps://user:pass@host:465/mail.example.com`
//!   (lettre's convention). Without it, the address literal `[127.0.0.1]` is sent.
//! - Certificates are checked against the web PKI roots (webpki-roots), always.
//!
//! The URL is parsed here rather than by lettre's `AsyncSmtpTransport::from_url` so that every
//! mistake gets a message naming the part at fault and the fix (and never the password), that
//! unknown parameters such as `?ssl=true` are refused instead of ignored, and for the
//! plain-credentials rule above; the connection itself is lettre's.
//!
//! # Sending
//!
//! [`SmtpMailer::send`] opens one connection per message, sends a `multipart/alternative`
//! message (the text part, then the HTML part, both UTF-8) with a deterministic `Message-ID`
//! built from the caller's id, and closes it. A crash between the server's acceptance and the
//! caller's record of it makes the caller send again; the second copy carries the same
//! `Message-ID`, so it is recognisably the same message (and deduplicated by clients that do).
//!
//! Errors say whether to retry ([`MailError::is_transient`]): connection failures (including a
//! failed TLS handshake, which lettre reports as one), timeouts and 4xx replies are transient;
//! 5xx replies (a wrong password, a refused recipient), a server without the STARTTLS that the
//! URL requires, and invalid configuration are permanent. No error, log or `Debug` output shows the SMTP password.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Severity;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use stackbox_core::notify::{one_line, Email};
use url::{Host, Url};

/// How long to wait for the TCP connection (and the TLS handshake of `smtps://`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one whole exchange (connect, greeting, EHLO, TLS, AUTH, the message, QUIT) may
/// take before it is abandoned as a transient failure: a server that accepts the connection
/// and then says nothing must not hold a sender forever.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(90);

/// The URL forms, for error messages.
const URL_FORMS: &str = "smtp://host:port, smtp://user:pass@host:587?tls=required, \
                         smtp://user:pass@host:587?tls=opportunistic or smtps://user:pass@host:465";

/// Everything that can go wrong while configuring the mailer or sending a message.
///
/// No variant ever holds the SMTP password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The SMTP URL cannot be used (permanent).
    #[error("smtp_url: {problem}")]
    InvalidUrl {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A sender or recipient address is not acceptable (permanent).
    #[error("{field}: {value:?} is not a usable e-mail address ({problem}); use an address such as noreply@example.com or \"Name <noreply@example.com>\"")]
    InvalidAddress {
        /// `mail_from` or `to`.
        field: &'static str,
        /// The address as given.
        value: String,
        /// What the parser said.
        problem: String,
    },
    /// The caller's message id cannot be used in a `Message-ID` (permanent; a bug in the caller).
    #[error("message_id: {value:?} cannot be used in a Message-ID; use 1 to 200 characters among letters, digits and . _ - + =")]
    InvalidMessageId {
        /// The id as given.
        value: String,
    },
    /// The message could not be sent now; sending it again later may work.
    #[error("sending through {server} failed for now{code}: {reason}; it can be retried later", code = code_text(*.code))]
    Transient {
        /// `host:port`, never the credentials.
        server: String,
        /// The SMTP reply code (4xx), when the server answered.
        code: Option<u16>,
        /// What happened.
        reason: String,
    },
    /// The message was refused or cannot be sent with this configuration; retrying will not help.
    #[error("sending through {server} failed{code}: {reason}; retrying will not help: check the SMTP URL, its credentials and the addresses", code = code_text(*.code))]
    Permanent {
        /// `host:port`, never the credentials.
        server: String,
        /// The SMTP reply code (5xx), when the server answered.
        code: Option<u16>,
        /// What happened.
        reason: String,
    },
}

fn code_text(code: Option<u16>) -> String {
    code.map(|code| format!(" (SMTP {code})"))
        .unwrap_or_default()
}

impl MailError {
    /// Whether sending the same message again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::Transient { .. })
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    StartTlsRequired,
    StartTlsOpportunistic,
    ImplicitTls,
}

impl Security {
    fn describe(self) -> &'static str {
        match self {
            Security::Plain => "plain",
            Security::StartTlsRequired => "STARTTLS required",
            Security::StartTlsOpportunistic => "STARTTLS when offered",
            Security::ImplicitTls => "implicit TLS",
        }
    }
}

/// Sends e-mails through one SMTP server. Cheap to share (`&self`); one connection per message.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for errors.
    server: String,
    security: Security,
    user: Option<String>,
    /// Texts that must never leave this crate: the password, decoded and as written in the URL.
    redact: Vec<String>,
    connect_timeout: Duration,
    send_timeout: Duration,
    /// Kept to rebuild the transport when the timeouts change.
    settings: Settings,
}

#[derive(Clone)]
struct Settings {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, String)>,
    hello: Option<String>,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.server)
            .field("security", &self.security.describe())
            .field("user", &self.user)
            .field(
                "password",
                &if self.redact.is_empty() {
                    "none"
                } else {
                    "<redacted>"
                },
            )
            .field("from", &self.from.to_string())
            .field("connect_timeout", &self.connect_timeout)
            .field("send_timeout", &self.send_timeout)
            .finish()
    }
}

impl SmtpMailer {
    /// A mailer for the SMTP server at `url` (see the crate documentation for the forms),
    /// sending as `from` (`noreply@example.com` or `StackBox <noreply@example.com>`).
    ///
    /// Nothing is contacted yet: a server that is down is a [`MailError::Transient`] of
    /// [`SmtpMailer::send`], not of this.
    pub fn from_url(url: &str, from: &str) -> Result<SmtpMailer, MailError> {
        let from = Mailbox::from_str(from.trim()).map_err(|error| MailError::InvalidAddress {
            field: "mail_from",
            value: from.to_string(),
            problem: error.to_string(),
        })?;
        let settings = parse_url(url)?;
        let mut redact = Vec::new();
        if let Some((_, password)) = &settings.credentials {
            redact.push(password.clone());
            let encoded =
                percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            redact.push(encoded);
            if let Ok(parsed) = Url::parse(url) {
                if let Some(raw) = parsed.password() {
                    redact.push(raw.to_string());
                }
            }
            redact.retain(|text| !text.is_empty());
            // Longest first, so that a password containing another form is replaced whole.
            redact.sort_by_key(|text| std::cmp::Reverse(text.len()));
        }
        let transport = build_transport(&settings, DEFAULT_CONNECT_TIMEOUT)?;
        Ok(SmtpMailer {
            transport,
            from,
            server: if settings.host.contains(':') {
                format!("[{}]:{}", settings.host, settings.port)
            } else {
                format!("{}:{}", settings.host, settings.port)
            },
            security: settings.security,
            user: settings.credentials.as_ref().map(|(user, _)| user.clone()),
            redact,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            settings,
        })
    }

    /// The same mailer with other timeouts: `connect` for the TCP connection, `send` for a
    /// whole exchange (see [`DEFAULT_SEND_TIMEOUT`]).
    pub fn with_timeouts(mut self, connect: Duration, send: Duration) -> Result<Self, MailError> {
        self.transport = build_transport(&self.settings, connect)?;
        self.connect_timeout = connect;
        self.send_timeout = send;
        Ok(self)
    }

    /// `host:port` of the server, for logs.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends `email` with the `Message-ID` `<message_id@from-domain>`.
    ///
    /// `message_id` identifies this message for good (for example the outbox row's id), so
    /// that sending it again after a crash gives the same `Message-ID`: letters, digits and
    /// `. _ - + =`, at most 200 characters.
    pub async fn send(&self, email: &Email, message_id: &str) -> Result<(), MailError> {
        let message = self.message(email, message_id)?;
        match tokio::time::timeout(self.send_timeout, self.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(error)) => Err(self.classify(&error)),
            Err(_elapsed) => Err(MailError::Transient {
                server: self.server.clone(),
                code: None,
                reason: format!(
                    "the server did not complete the exchange within {} s",
                    self.send_timeout.as_secs_f64()
                ),
            }),
        }
    }

    /// The message as it goes on the wire.
    fn message(&self, email: &Email, message_id: &str) -> Result<Message, MailError> {
        let valid_id = !message_id.is_empty()
            && message_id.len() <= 200
            && message_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+=".contains(c));
        if !valid_id {
            return Err(MailError::InvalidMessageId {
                value: message_id.to_string(),
            });
        }
        let to =
            Address::from_str(email.to.as_str()).map_err(|error| MailError::InvalidAddress {
                field: "to",
                value: email.to.as_str().to_string(),
                problem: error.to_string(),
            })?;
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            // The core already gives one line; this guards against a header injection from
            // any other caller.
            .subject(one_line(&email.subject))
            .message_id(Some(format!("<{message_id}@{}>", self.from.email.domain())))
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|error| MailError::Permanent {
                server: self.server.clone(),
                code: None,
                reason: format!("the message cannot be built: {error}"),
            })
    }

    fn classify(&self, error: &lettre::transport::smtp::Error) -> MailError {
        let server = self.server.clone();
        let mut reason = self.redacted(&error.to_string());
        // lettre writes "permanent error (535): …"; the code is a field of its own here.
        for prefix in ["permanent error (", "transient error ("] {
            if let Some(rest) = reason.strip_prefix(prefix) {
                if let Some((_, text)) = rest.split_once("): ") {
                    reason = text.to_string();
                }
            }
        }
        if let Some(code) = error.status() {
            let number = u16::from(code);
            return match code.severity {
                Severity::TransientNegativeCompletion => MailError::Transient {
                    server,
                    code: Some(number),
                    reason,
                },
                _ => MailError::Permanent {
                    server,
                    code: Some(number),
                    reason,
                },
            };
        }
        if error.is_tls() {
            // lettre could not set TLS up at all (its parameters): the configuration.
            return MailError::Permanent {
                server,
                code: None,
                reason,
            };
        }
        if error.is_client() || error.is_response() {
            // lettre refused to go on (STARTTLS required but not offered, no common AUTH
            // mechanism) or the peer does not speak SMTP: again the configuration.
            return MailError::Permanent {
                server,
                code: None,
                reason,
            };
        }
        // Connection refused or reset, DNS, timeouts, a transport shut down: try again later.
        // A failed TLS handshake (an invalid certificate, a server that speaks no TLS on this
        // port) is one of these too, as lettre reports it as a connection error: it is retried,
        // which keeps the message until the server or the URL is fixed.
        MailError::Transient {
            server,
            code: None,
            reason,
        }
    }

    fn redacted(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.redact {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        text
    }
}

fn invalid(problem: impl Into<String>) -> MailError {
    MailError::InvalidUrl {
        problem: problem.into(),
    }
}

/// Reads an SMTP URL. Messages never include the password (nor the URL, which holds it).
fn parse_url(text: &str) -> Result<Settings, MailError> {
    let url = Url::parse(text.trim())
        .map_err(|error| invalid(format!("is not a URL ({error}); use {URL_FORMS}")))?;
    let implicit = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        other => {
            return Err(invalid(format!(
                "the scheme {other:?} is not supported; use {URL_FORMS}"
            )))
        }
    };
    let host = match url.host() {
        Some(Host::Domain(domain)) if !domain.is_empty() => domain.to_string(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid(format!("has no host; use {URL_FORMS}"))),
    };
    let mut tls: Option<String> = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "tls" if tls.is_none() => tls = Some(value.into_owned()),
            "tls" => return Err(invalid("gives tls twice; keep one")),
            other => {
                return Err(invalid(format!(
                    "has the unknown parameter {other:?}; the only parameter is tls \
                     (required, opportunistic or none)"
                )))
            }
        }
    }
    let (security, default_port, explicit_plain) = match (implicit, tls.as_deref()) {
        (true, None) => (Security::ImplicitTls, 465, false),
        (true, Some(_)) => {
            return Err(invalid(
                "smtps:// always uses TLS; remove the tls parameter (or use smtp://…?tls=required for STARTTLS)",
            ))
        }
        (false, None) => (Security::Plain, 25, false),
        (false, Some("none")) => (Security::Plain, 25, true),
        (false, Some("required")) => (Security::StartTlsRequired, 587, false),
        (false, Some("opportunistic")) => (Security::StartTlsOpportunistic, 587, false),
        (false, Some(other)) => {
            return Err(invalid(format!(
                "tls={other:?} is not understood; use tls=required (STARTTLS), \
                 tls=opportunistic, tls=none, or smtps:// for implicit TLS"
            )))
        }
    };
    let port = url.port().unwrap_or(default_port);
    let decode = |part: &str, what: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| {
                invalid(format!(
                    "the {what} is not valid UTF-8 once percent-decoded; percent-encode it as UTF-8"
                ))
            })
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => {
            return Err(invalid(
                "has a password but no user; write smtp://user:pass@host",
            ))
        }
        (_, None) => {
            return Err(invalid(
                "has a user but no password; write smtp://user:pass@host (percent-encode \
                 special characters such as @ : / as %40 %3A %2F)",
            ))
        }
        (user, Some(password)) => Some((decode(user, "user")?, decode(password, "password")?)),
    };
    if credentials.is_some()
        && security == Security::Plain
        && !explicit_plain
        && !is_loopback(&host)
    {
        return Err(invalid(format!(
            "would send the SMTP password unencrypted to {host}; use ?tls=required (STARTTLS) \
             or smtps:// (implicit TLS), or add ?tls=none if this network is trusted"
        )));
    }
    let path = url.path().trim_matches('/');
    let hello = if path.is_empty() {
        None
    } else {
        let name = decode(path, "EHLO name")?;
        let valid = name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(invalid(format!(
                "the path {name:?} is used as the EHLO name and must be a host name such as \
                 mail.example.com; remove it or fix it"
            )));
        }
        Some(name)
    };
    Ok(Settings {
        host,
        port,
        security,
        credentials,
        hello,
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn build_transport(
    settings: &Settings,
    connect_timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls_parameters = || {
        TlsParameters::new(settings.host.clone()).map_err(|error| {
            invalid(format!(
                "TLS cannot be set up for {}: {error}",
                settings.host
            ))
        })
    };
    let tls = match settings.security {
        Security::Plain => Tls::None,
        Security::StartTlsRequired => Tls::Required(tls_parameters()?),
        Security::StartTlsOpportunistic => Tls::Opportunistic(tls_parameters()?),
        Security::ImplicitTls => Tls::Wrapper(tls_parameters()?),
    };
    let mut builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(connect_timeout));
    if let Some((user, password)) = &settings.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    if let Some(name) = &settings.hello {
        builder = builder.hello_name(ClientId::Domain(name.clone()));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "StackBox <noreply@stackbox.example>";

    fn url_error(url: &str) -> String {
        SmtpMailer::from_url(url, FROM)
            .expect_err("the URL should be refused")
            .to_string()
    }

    #[test]
    fn every_documented_url_form_is_accepted_with_its_default_port() {
        for (url, server, security) in [
            ("smtp://127.0.0.1:2525", "127.0.0.1:2525", Security::Plain),
            ("smtp://relay.example", "relay.example:25", Security::Plain),
            (
                "smtp://user:pass@mail.example?tls=required",
                "mail.example:587",
                Security::StartTlsRequired,
            ),
            (
                "smtp://user:pass@mail.example:2587?tls=opportunistic",
                "mail.example:2587",
                Security::StartTlsOpportunistic,
            ),
            (
                "smtps://user:pass@mail.example",
                "mail.example:465",
                Security::ImplicitTls,
            ),
            (
                "smtp://user:pass@relay.internal:25?tls=none",
                "relay.internal:25",
                Security::Plain,
            ),
            ("smtp://user:pass@[::1]:2525", "[::1]:2525", Security::Plain),
        ] {
            let mailer = SmtpMailer::from_url(url, FROM).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(mailer.server(), server, "{url}");
            assert_eq!(mailer.security, security, "{url}");
        }
    }

    #[test]
    fn percent_encoded_credentials_are_decoded() {
        let settings =
            parse_url("smtps://me%40corp.example:p%40ss%3Aw%2Frd%20%C3%A9@mail.example").unwrap();
        assert_eq!(
            settings.credentials,
            Some(("me@corp.example".to_string(), "p@ss:w/rd é".to_string()))
        );
    }

    #[test]
    fn mistakes_in_the_url_are_named_and_never_show_the_password() {
        let cases = [
            ("http://user:Sup3rS3cret@mail.example", "scheme \"http\""),
            (
                "smtp://user:Sup3rS3cret@mail.example?ssl=true",
                "unknown parameter \"ssl\"",
            ),
            (
                "smtp://user:Sup3rS3cret@mail.example?tls=yes",
                "tls=\"yes\" is not understood",
            ),
            (
                "smtps://user:Sup3rS3cret@mail.example?tls=required",
                "remove the tls parameter",
            ),
            (
                "smtp://user:Sup3rS3cret@mail.example",
                "unencrypted to mail.example",
            ),
            ("smtp://:Sup3rS3cret@mail.example?tls=required", "no user"),
            ("smtp://user@mail.example?tls=required", "no password"),
            (
                "smtp://user:Sup3rS3cret@mail.example/bad_name?tls=required",
                "EHLO name",
            ),
            ("not a url Sup3rS3cret", "is not a URL"),
            (
                "smtp://user:Sup3rS3cret@mail.example?tls=required&tls=none",
                "tls twice",
            ),
        ];
        for (url, expected) in cases {
            let message = url_error(url);
            assert!(message.starts_with("smtp_url: "), "{url}: {message}");
            assert!(message.contains(expected), "{url}: {message}");
            assert!(!message.contains("Sup3rS3cret"), "{url}: {message}");
        }
    }

    #[test]
    fn credentials_over_plain_smtp_are_allowed_on_loopback_only() {
        for url in [
            "smtp://user:pass@127.0.0.1:2525",
            "smtp://user:pass@localhost:2525",
            "smtp://user:pass@[::1]:2525",
        ] {
            assert!(SmtpMailer::from_url(url, FROM).is_ok(), "{url}");
        }
        assert!(SmtpMailer::from_url("smtp://user:pass@10.0.0.5:25", FROM).is_err());
    }

    #[test]
    fn an_invalid_sender_is_refused_and_named() {
        for from in [
            "",
            "noreply",
            "a b@example.com",
            "x@y.z\r\nBcc: victim@example.com",
        ] {
            let error = SmtpMailer::from_url("smtp://127.0.0.1:25", from).unwrap_err();
            assert!(
                matches!(
                    error,
                    MailError::InvalidAddress {
                        field: "mail_from",
                        ..
                    }
                ),
                "{from:?}: {error:?}"
            );
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn debug_output_shows_the_server_but_not_the_password() {
        let mailer =
            SmtpMailer::from_url("smtps://mailer:Sup3r%40S3cret@mail.example", FROM).unwrap();
        let debug = format!("{mailer:?}");
        assert!(debug.contains("mail.example:465"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains("Sup3r"), "{debug}");
    }

    #[test]
    fn every_form_of_the_password_is_redacted_from_server_replies() {
        let mailer =
            SmtpMailer::from_url("smtps://mailer:Sup3r%40S3cret@mail.example", FROM).unwrap();
        let redacted =
            mailer.redacted("535 bad credentials Sup3r@S3cret / Sup3r%40S3cret for mailer");
        assert_eq!(
            redacted,
            "535 bad credentials <redacted> / <redacted> for mailer"
        );
    }
}
