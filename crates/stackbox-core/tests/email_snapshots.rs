//! Snapshot tests of every client message and credentials page, for a hostile company name.
//!
//! The company name holds quotes, an apostrophe, `<script>`, `&` and CJK: everything that must
//! be escaped in HTML and kept as it is in the plain text and the subject. The asserts beside
//! the snapshots check the escaping itself, so that a snapshot accepted in a hurry cannot hide
//! a regression. Review changes with `cargo insta review`.

use stackbox_core::client::ClientSpec;
use stackbox_core::notify::{self, Email};
use stackbox_core::plan::Plan;
use stackbox_core::stack::service_urls;

const HOSTILE: &str = "O'Brien & \"Sons\" <script>alert(1)</script> 東京不動産";
const ESCAPED: &str =
    "O&#39;Brien &amp; &quot;Sons&quot; &lt;script&gt;alert(1)&lt;/script&gt; 東京不動産";
const LINK: &str = "https://api.host.example/v1/credentials/AbC123xyz?sig=1&v=2";
const EXPIRES: &str = "2025-11-29 14:00 UTC";
const PASSWORD: &str = "Xq7<b>&\"pw'9Zr2K";

fn spec(plan: &str, color: &str) -> ClientSpec {
    ClientSpec::from_toml(&format!(
        "company_name = {name}\ndomain = \"obrien.example.com\"\nplan = \"{plan}\"\n\
         admin_email = \"owner@obrien.example.com\"\nbrand_color = \"{color}\"\n",
        name = serde_json::to_string(HOSTILE).unwrap()
    ))
    .unwrap()
}

fn professional() -> ClientSpec {
    spec("professional", "#003366")
}

/// One snapshot per message: headers we set, then both parts.
fn snapshot_text(email: &Email) -> String {
    format!(
        "To: {}\nSubject: {}\n\n----- text/plain -----\n{}\n----- text/html -----\n{}",
        email.to.as_str(),
        email.subject,
        email.text,
        email.html
    )
}

/// The checks every message must pass, whatever it says.
fn assert_well_formed(email: &Email) {
    assert_eq!(email.to.as_str(), "owner@obrien.example.com");
    assert!(
        !email.subject.contains(['\r', '\n']),
        "subject must be one line: {:?}",
        email.subject
    );
    assert!(
        email.subject.contains(HOSTILE),
        "the subject names the company as written: {:?}",
        email.subject
    );
    // The plain text carries the name as written; the HTML only escaped.
    assert!(email.text.contains(HOSTILE));
    assert!(email.html.contains(ESCAPED));
    assert!(!email.html.contains("<script"), "{}", email.html);
    assert!(!email.html.contains(HOSTILE));
    assert!(!email.text.contains('\r'));
    // No external resources: no images, stylesheets or scripts to fetch.
    for fetched in ["<img", "<link", "src=", "url("] {
        assert!(!email.html.contains(fetched), "{fetched} in the HTML part");
    }
    // The brand colour is used.
    assert!(email.html.contains("#003366"));
}

#[test]
fn welcome_email_matches_snapshot_and_escapes_the_company_name() {
    let spec = professional();
    let urls = service_urls(&spec);
    let email = notify::welcome(&spec, &urls, "admin", LINK, EXPIRES);
    assert_well_formed(&email);
    for url in &urls {
        assert!(
            email.text.contains(&url.url),
            "{} in the text part",
            url.url
        );
        assert!(
            email.html.contains(&format!("href=\"{}\"", url.url)),
            "{} in the HTML part",
            url.url
        );
        assert!(email.text.contains(url.purpose));
    }
    // The link: as written in the text, with `&` escaped in the HTML attribute.
    assert!(email.text.contains(LINK));
    assert!(email
        .html
        .contains("href=\"https://api.host.example/v1/credentials/AbC123xyz?sig=1&amp;v=2\""));
    assert!(email.text.contains("User name: admin"));
    assert!(email.text.contains(EXPIRES) && email.html.contains(EXPIRES));
    // Cal.com and Plausible have no preset administrator: the e-mail says so.
    assert!(email.text.contains("Cal.com and Plausible"));
    assert!(email.text.contains("EspoCRM and Nextcloud"));
    insta::assert_snapshot!("welcome_professional", snapshot_text(&email));
}

#[test]
fn welcome_email_for_the_starter_plan_lists_only_its_services() {
    let spec = spec("starter", "#003366");
    let email = notify::welcome(&spec, &service_urls(&spec), "admin", LINK, EXPIRES);
    assert_well_formed(&email);
    assert!(email.text.contains("https://crm.obrien.example.com"));
    assert!(!email.text.contains("booking."));
    // Nothing to register first on this plan, so no such advice.
    assert!(!email.text.contains("first account"));
    insta::assert_snapshot!("welcome_starter", snapshot_text(&email));
}

#[test]
fn payment_failed_email_with_a_billing_portal_matches_snapshot() {
    let portal = "https://billing.example/p/session?x=1&y=<2>";
    let email = notify::payment_failed(&professional(), "2025-12-06", Some(portal));
    assert_well_formed(&email);
    assert!(email.text.contains(portal));
    assert!(email
        .html
        .contains("href=\"https://billing.example/p/session?x=1&amp;y=&lt;2&gt;\""));
    assert!(email.text.contains("2025-12-06"));
    insta::assert_snapshot!("payment_failed_portal", snapshot_text(&email));
}

#[test]
fn payment_failed_email_without_a_portal_asks_to_reply() {
    let email = notify::payment_failed(&professional(), "2025-12-06", None);
    assert_well_formed(&email);
    assert!(email.text.contains("contact your provider"));
    assert!(!email.html.contains("Update payment details"));
    insta::assert_snapshot!("payment_failed_no_portal", snapshot_text(&email));
}

#[test]
fn suspended_email_matches_snapshot() {
    let email = notify::suspended(&professional());
    assert_well_formed(&email);
    assert!(email.text.contains("data is kept"));
    insta::assert_snapshot!("suspended", snapshot_text(&email));
}

#[test]
fn domain_unavailable_email_names_the_domain_and_what_happens_next() {
    let email = notify::domain_unavailable(&professional());
    assert_well_formed(&email);
    assert!(email.text.contains("obrien.example.com"));
    assert!(email.text.contains("refund"));
    insta::assert_snapshot!("domain_unavailable", snapshot_text(&email));
}

#[test]
fn resumed_email_matches_snapshot() {
    let email = notify::resumed(&professional());
    assert_well_formed(&email);
    assert!(email.text.contains("https://obrien.example.com"));
    insta::assert_snapshot!("resumed", snapshot_text(&email));
}

#[test]
fn cancelled_email_matches_snapshot() {
    let email = notify::cancelled(&professional(), "2026-01-31");
    assert_well_formed(&email);
    assert_eq!(email.text.matches("2026-01-31").count(), 2);
    insta::assert_snapshot!("cancelled", snapshot_text(&email));
}

#[test]
fn plan_upgrade_email_lists_the_new_services_with_their_addresses() {
    let email = notify::plan_changed(&professional(), Plan::Starter, Plan::Professional);
    assert_well_formed(&email);
    assert!(email.text.contains("https://booking.obrien.example.com"));
    assert!(email.text.contains("https://analytics.obrien.example.com"));
    // Services the client already had are not announced as new.
    assert!(!email.text.contains("https://crm.obrien.example.com"));
    assert!(!email.text.contains("switched off"));
    insta::assert_snapshot!("plan_upgraded", snapshot_text(&email));
}

#[test]
fn plan_downgrade_email_says_which_apps_stop_and_that_their_data_is_kept() {
    let email = notify::plan_changed(&spec("starter", "#003366"), Plan::Enterprise, Plan::Starter);
    assert_well_formed(&email);
    assert!(email
        .text
        .contains("Cal.com, Plausible and Mailtrain are no longer part of your plan"));
    assert!(email.text.contains("data is kept"));
    assert!(!email.text.contains("NEW FOR YOU"));
    insta::assert_snapshot!("plan_downgraded", snapshot_text(&email));
}

#[test]
fn a_light_brand_colour_gets_dark_text_and_dark_links() {
    let spec = spec("starter", "#ffee88");
    let email = notify::welcome(&spec, &service_urls(&spec), "admin", LINK, EXPIRES);
    assert!(email
        .html
        .contains("background:#ffee88;color:#111111;padding:20px 28px"));
    assert!(!email.html.contains("color:#ffee88"), "unreadable links");
}

#[test]
fn an_email_round_trips_through_json_for_the_outbox() {
    let spec = professional();
    let email = notify::welcome(&spec, &service_urls(&spec), "admin", LINK, EXPIRES);
    let json = serde_json::to_string(&email).unwrap();
    let again: Email = serde_json::from_str(&json).unwrap();
    assert_eq!(again, email);
    // A stored recipient is validated again when read back.
    let tampered = json.replace(
        "owner@obrien.example.com",
        "owner@obrien.example.com\\r\\nBcc: x@y.z",
    );
    assert!(serde_json::from_str::<Email>(&tampered).is_err());
}

fn assert_page_well_formed(page: &str) {
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<meta name=\"referrer\" content=\"no-referrer\">"));
    assert!(page.contains(ESCAPED));
    assert!(!page.contains(HOSTILE));
    assert!(!page.contains("<script"));
    for fetched in ["<img", "<link", "src=", "url(", "http://"] {
        assert!(!page.contains(fetched), "{fetched} in a credentials page");
    }
}

#[test]
fn credentials_confirm_page_posts_and_shows_no_secret() {
    let spec = professional();
    let page = notify::credentials_page_confirm(
        &spec.company_name,
        &spec.brand_color,
        "/v1/credentials/AbC123xyz?a=1&b=\"2\"",
    );
    assert_page_well_formed(&page);
    assert!(page.contains(
        "<form method=\"post\" action=\"/v1/credentials/AbC123xyz?a=1&amp;b=&quot;2&quot;\">"
    ));
    assert!(page.contains("<button type=\"submit\">"));
    insta::assert_snapshot!("credentials_page_confirm", page);
}

#[test]
fn credentials_reveal_page_shows_the_escaped_password_and_every_service() {
    let spec = professional();
    let urls = service_urls(&spec);
    let page = notify::credentials_page_reveal(
        &spec.company_name,
        &spec.brand_color,
        "admin",
        PASSWORD,
        &urls,
    );
    assert_page_well_formed(&page);
    assert!(page.contains("<code class=\"secret\">Xq7&lt;b&gt;&amp;&quot;pw&#39;9Zr2K</code>"));
    assert!(!page.contains(PASSWORD));
    for url in &urls {
        assert!(page.contains(&format!("<a href=\"{}\">", url.url)));
    }
    insta::assert_snapshot!("credentials_page_reveal", page);
}

#[test]
fn credentials_gone_page_says_to_ask_for_a_new_link() {
    let spec = professional();
    let page = notify::credentials_page_gone(&spec.company_name, &spec.brand_color);
    assert_page_well_formed(&page);
    assert!(page.contains("Ask your provider for a new link."));
    assert!(!page.contains("<form"));
    insta::assert_snapshot!("credentials_page_gone", page);
}
