//! The mailer against a real SMTP server on loopback (`tests/tools/smtp_sink.py`, aiosmtpd),
//! with the received messages parsed by Python's standard e-mail package, which shares no code
//! with lettre: what is checked is what a mail client would read.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stackbox_core::client::ClientSpec;
use stackbox_core::notify::{self, Email};
use stackbox_core::stack::service_urls;
use stackbox_mail::{MailError, SmtpMailer};

const SINK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/tools/smtp_sink.py"
);
const FROM: &str = "StackBox <noreply@stackbox.example>";
const LINK: &str = "https://api.stackbox.example/v1/credentials/tok3nAbc?sig=9&v=1";

/// The SMTP tier's guard: python3 with aiosmtpd, which the sink is.
fn smtp_tier() -> bool {
    stackbox_testkit::Tier::new("smtp")
        .python_modules(&["aiosmtpd"], "python3 -m pip install 'aiosmtpd>=1.4,<2'")
        .ready()
}

/// A running sink; killed when dropped.
struct Sink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Sink {
    fn start(dir: &Path, args: &[&str]) -> Sink {
        Sink::start_on(free_port(), dir, args)
    }

    fn start_on(port: u16, dir: &Path, args: &[&str]) -> Sink {
        let mut child = Command::new("python3")
            .arg(SINK)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (scripts/install-test-deps.sh installs it with aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        if line.trim() != "ready" {
            let _ = child.kill();
            panic!("the SMTP sink did not start on port {port} (is aiosmtpd installed?)");
        }
        Sink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How many messages were accepted (the envelope file is written last).
    fn count(&self) -> usize {
        count_messages(&self.dir)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_messages(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
            .count()
    })
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The message `n` parsed by Python's e-mail package, and its envelope.
fn received(dir: &Path, n: usize) -> (Value, Value) {
    let output = Command::new("python3")
        .arg(SINK)
        .arg("--parse")
        .arg(dir.join(format!("{n}.eml")))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let message = serde_json::from_slice(&output.stdout).unwrap();
    let envelope =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{n}.json"))).unwrap()).unwrap();
    (message, envelope)
}

fn header<'a>(message: &'a Value, name: &str) -> Vec<&'a str> {
    message["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

fn client() -> ClientSpec {
    ClientSpec::from_toml(
        "company_name = \"Müller & \\\"Söhne\\\" <b>東京</b>\"\ndomain = \"mueller.example.com\"\n\
         plan = \"enterprise\"\nadmin_email = \"owner@mueller.example.com\"\nbrand_color = \"#8a1538\"\n",
    )
    .unwrap()
}

fn welcome() -> Email {
    let spec = client();
    notify::welcome(
        &spec,
        &service_urls(&spec),
        "admin",
        LINK,
        "2025-11-29 14:00 UTC",
    )
}

fn unix(text: &str) -> String {
    text.replace("\r\n", "\n")
}

#[tokio::test]
async fn welcome_email_arrives_as_utf8_multipart_alternative_with_every_url_and_the_link() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path(), &[]);
    let mailer = SmtpMailer::from_url(&sink.url(), FROM).unwrap();
    let email = welcome();
    // What the generated password could look like: it must appear nowhere in the message.
    let password = "Zt4kq9Wm2Hx7Lp3B";

    mailer
        .send(&email, "welcome-mueller-0000abcd")
        .await
        .unwrap();

    assert_eq!(sink.count(), 1);
    let (message, envelope) = received(dir.path(), 1);
    assert_eq!(envelope["mail_from"], "noreply@stackbox.example");
    assert_eq!(
        envelope["rcpt_tos"],
        serde_json::json!(["owner@mueller.example.com"])
    );
    assert_eq!(
        header(&message, "From"),
        ["StackBox <noreply@stackbox.example>"]
    );
    assert_eq!(header(&message, "To"), ["owner@mueller.example.com"]);
    // The subject holds non-ASCII and quotes: it must decode to exactly what was composed.
    assert_eq!(header(&message, "Subject"), [email.subject.as_str()]);
    assert_eq!(
        header(&message, "Message-ID"),
        ["<welcome-mueller-0000abcd@stackbox.example>"]
    );
    assert_eq!(header(&message, "MIME-Version"), ["1.0"]);
    assert_eq!(header(&message, "Date").len(), 1);
    assert_eq!(message["content_type"], "multipart/alternative");

    // Text first, then HTML (clients show the last part they can render), both UTF-8.
    let parts = message["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0]["content_type"], "text/plain");
    assert_eq!(parts[1]["content_type"], "text/html");
    for part in parts {
        assert_eq!(part["charset"], "utf-8");
    }
    let text = unix(parts[0]["content"].as_str().unwrap());
    let html = unix(parts[1]["content"].as_str().unwrap());
    assert_eq!(text, unix(&email.text));
    assert_eq!(html, unix(&email.html));

    let urls = service_urls(&client());
    assert_eq!(urls.len(), 6, "website and five apps on enterprise");
    for url in &urls {
        assert!(text.contains(&url.url), "{} in the text part", url.url);
        assert!(
            html.contains(&format!("href=\"{}\"", url.url)),
            "{}",
            url.url
        );
    }
    assert!(text.contains(LINK));
    assert!(html
        .contains("href=\"https://api.stackbox.example/v1/credentials/tok3nAbc?sig=9&amp;v=1\""));
    assert!(text.contains("User name: admin"));
    assert!(html.contains("M\u{fc}ller &amp; &quot;S\u{f6}hne&quot; &lt;b&gt;東京&lt;/b&gt;"));
    let raw = std::fs::read(dir.path().join("1.eml")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(password));
    assert!(!text.contains(password) && !html.contains(password));
}

#[tokio::test]
async fn the_same_message_id_gives_the_same_message_id_header_on_a_resend() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path(), &[]);
    let mailer = SmtpMailer::from_url(&sink.url(), "noreply@stackbox.example").unwrap();
    // A crash after the server accepted but before the outbox recorded it: sent twice.
    mailer.send(&welcome(), "outbox-42").await.unwrap();
    mailer.send(&welcome(), "outbox-42").await.unwrap();
    assert_eq!(sink.count(), 2);
    let (first, _) = received(dir.path(), 1);
    let (second, _) = received(dir.path(), 2);
    assert_eq!(
        header(&first, "Message-ID"),
        ["<outbox-42@stackbox.example>"]
    );
    assert_eq!(header(&first, "Message-ID"), header(&second, "Message-ID"));
}

#[tokio::test]
async fn authentication_required_by_the_server_and_given_with_percent_encoded_credentials() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path(), &["--auth", "mailer@corp:p@ss:w/rd é"]);
    let url = format!(
        "smtp://mailer%40corp:p%40ss%3Aw%2Frd%20%C3%A9@127.0.0.1:{}",
        sink.port
    );
    let mailer = SmtpMailer::from_url(&url, FROM).unwrap();
    mailer.send(&welcome(), "auth-1").await.unwrap();
    assert_eq!(sink.count(), 1);
    let (_, envelope) = received(dir.path(), 1);
    assert_eq!(envelope["login"], "mailer@corp");
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_error_that_never_shows_the_password() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path(), &["--auth", "mailer:right-password"]);
    let url = format!("smtp://mailer:Wr0ngS3cret@127.0.0.1:{}", sink.port);
    let mailer = SmtpMailer::from_url(&url, FROM).unwrap();

    let error = mailer.send(&welcome(), "auth-2").await.unwrap_err();

    assert!(!error.is_transient(), "{error:?}");
    assert!(
        matches!(
            error,
            MailError::Permanent {
                code: Some(535),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("(SMTP 535): 5.7.8 Authentication credentials invalid"),
        "{error}"
    );
    for shown in [
        error.to_string(),
        format!("{error:?}"),
        format!("{mailer:?}"),
    ] {
        assert!(!shown.contains("Wr0ngS3cret"), "{shown}");
    }
    assert!(error
        .to_string()
        .contains(&format!("127.0.0.1:{}", sink.port)));
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn no_credentials_when_the_server_requires_them_is_a_permanent_error() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path(), &["--auth", "mailer:pw"]);
    let mailer = SmtpMailer::from_url(&sink.url(), FROM).unwrap();
    let error = mailer.send(&welcome(), "auth-3").await.unwrap_err();
    assert!(
        matches!(
            error,
            MailError::Permanent {
                code: Some(530),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn nothing_listening_is_a_transient_error() {
    let port = free_port();
    let mailer = SmtpMailer::from_url(&format!("smtp://127.0.0.1:{port}"), FROM).unwrap();
    let error = mailer.send(&welcome(), "down-1").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(matches!(error, MailError::Transient { code: None, .. }));
}

#[tokio::test]
async fn a_server_down_then_started_gets_the_second_attempt_exactly_once() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mailer = SmtpMailer::from_url(&format!("smtp://127.0.0.1:{port}"), FROM).unwrap();
    let email = welcome();

    let first = mailer.send(&email, "retry-1").await.unwrap_err();
    assert!(first.is_transient(), "{first:?}");
    assert_eq!(count_messages(dir.path()), 0);

    let sink = Sink::start_on(port, dir.path(), &[]);
    mailer.send(&email, "retry-1").await.unwrap();
    assert_eq!(sink.count(), 1);
    let (message, _) = received(dir.path(), 1);
    assert_eq!(
        header(&message, "Message-ID"),
        ["<retry-1@stackbox.example>"]
    );
    // Nothing else trickles in afterwards (no hidden retry inside the mailer).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn a_4xx_reply_is_transient_and_a_5xx_reply_is_permanent_with_the_code() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let busy = Sink::start(dir.path(), &["--rcpt-reply", "451 4.3.0 Try again later"]);
    let error = SmtpMailer::from_url(&busy.url(), FROM)
        .unwrap()
        .send(&welcome(), "reply-1")
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        matches!(
            error,
            MailError::Transient {
                code: Some(451),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("Try again later"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let refusing = Sink::start(dir.path(), &["--rcpt-reply", "550 5.1.1 No such user"]);
    let error = SmtpMailer::from_url(&refusing.url(), FROM)
        .unwrap()
        .send(&welcome(), "reply-2")
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error:?}");
    assert!(
        matches!(
            error,
            MailError::Permanent {
                code: Some(550),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("No such user"), "{error}");
    assert_eq!(busy.count() + refusing.count(), 0);
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_is_a_transient_timeout() {
    // A TCP listener that never sends the SMTP greeting.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mailer = SmtpMailer::from_url(&format!("smtp://127.0.0.1:{port}"), FROM)
        .unwrap()
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(1))
        .unwrap();
    let started = Instant::now();
    let error = mailer.send(&welcome(), "silent-1").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("within 1 s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(listener);
}

#[tokio::test]
async fn required_starttls_is_never_downgraded_to_plain_text() {
    if !smtp_tier() {
        return;
    }
    // The sink offers no STARTTLS: with tls=required the password and message must not go out.
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path(), &["--auth", "mailer:S3cretPw"]);
    let url = format!(
        "smtp://mailer:S3cretPw@127.0.0.1:{}?tls=required",
        sink.port
    );
    let error = SmtpMailer::from_url(&url, FROM)
        .unwrap()
        .send(&welcome(), "tls-1")
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("STARTTLS"), "{error}");
    assert!(!error.to_string().contains("S3cretPw"));
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn implicit_tls_against_a_plain_server_fails_without_sending() {
    if !smtp_tier() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(dir.path(), &[]);
    let url = format!("smtps://mailer:S3cretPw@127.0.0.1:{}", sink.port);
    let mailer = SmtpMailer::from_url(&url, FROM)
        .unwrap()
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(10))
        .unwrap();
    let error = mailer.send(&welcome(), "tls-2").await.unwrap_err();
    // lettre reports a failed handshake as a connection error: retried, so kept, until fixed.
    assert!(error.is_transient(), "{error:?}");
    assert!(!error.to_string().contains("S3cretPw"), "{error}");
    assert_eq!(sink.count(), 0, "{error:?}");
}

#[tokio::test]
async fn an_unusable_message_id_is_refused_before_connecting() {
    // Nothing listens: a refusal that came from the network would be transient.
    let mailer = SmtpMailer::from_url(&format!("smtp://127.0.0.1:{}", free_port()), FROM).unwrap();
    for id in [
        "",
        "a b",
        "x\r\nBcc: victim@example.com",
        "<x@y>",
        &"a".repeat(201),
    ] {
        let error = mailer.send(&welcome(), id).await.unwrap_err();
        assert!(
            matches!(error, MailError::InvalidMessageId { .. }),
            "{id:?}: {error:?}"
        );
        assert!(!error.is_transient());
    }
}
