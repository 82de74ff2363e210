//! The messages StackBox sends to a client, and the one-time page that shows the password.
//!
//! Pure composition: every function here takes values and returns text. Sending (SMTP, the
//! durable outbox, retries) is done by adapters (`stackbox-mail`, the control plane); serving the
//! credentials page is done by the API.
//!
//! Every message is branded with the client's company name and brand colour, has a plain-text
//! part that reads well on its own and an HTML part whose every value is HTML-escaped (the
//! company name may hold any printable Unicode, including `<`, `&` and quotes). Subjects are a
//! single line. HTML parts use inline styles and tables only (mail clients drop `<style>` and
//! external resources); the brand colour is used for the header band and buttons, with the text
//! colour chosen for contrast, and for links only when it is dark enough to read on white.
//!
//! # The welcome e-mail carries a one-time link, never the password
//!
//! The welcome e-mail gives the administrator's login name and a link to a page that shows the
//! generated password once, and never the password itself: mailboxes are kept for years,
//! forwarded, synchronised to phones and searched, so a password written in one is as exposed as
//! the least careful of all of those. The link is valid for a limited time (72 hours, set by the
//! caller), works once, and opens a page with a button ([`credentials_page_confirm`]) that must
//! be pressed (a POST) before the password is shown ([`credentials_page_reveal`]): mail
//! scanners and link previews fetch links with GET, and must not use up the one view. After the
//! view, or after expiry, the link gives [`credentials_page_gone`], which tells the client to ask
//! the provider for a new link and to report it if they did not open it themselves.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize};

use crate::client::{BrandColor, ClientSpec, CompanyName, Email as Address};
use crate::plan::{App, Plan};
use crate::render::html::html_escape;
use crate::stack::{service_urls, ServiceUrl};

/// How long the welcome e-mail's credentials link is meant to stay valid, in hours. The API
/// that issues the link enforces it; the e-mail only states the expiry it is given.
pub const CREDENTIALS_LINK_VALID_HOURS: u32 = 72;

/// The `Content-Security-Policy` the API should send with the credentials pages: they load
/// nothing, style themselves with one inline `<style>` element and post only to their own origin.
pub const CREDENTIALS_PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One e-mail, ready for a sender: the recipient, a one-line subject and two bodies.
///
/// Serializable so that a durable outbox can store it as it was composed (the recipient is
/// validated again when it is read back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// The recipient, validated.
    #[serde(deserialize_with = "deserialize_address")]
    pub to: Address,
    /// One line, no CR or LF.
    pub subject: String,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part, a complete document with inline styles.
    pub html: String,
}

fn deserialize_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
    let text = String::deserialize(deserializer)?;
    Address::parse("to", &text).map_err(serde::de::Error::custom)
}

/// The welcome e-mail, sent once the client's stack is healthy.
///
/// It lists every service with its address and what it is for, gives the administrator's
/// login name and the one-time `credentials_link` to see the password (see the module
/// documentation for why the password itself is not in the e-mail), and says what to do next.
/// `link_expires` is the link's expiry as people read it, such as `"2025-11-29 14:00 UTC"`.
pub fn welcome(
    spec: &ClientSpec,
    urls: &[ServiceUrl],
    admin_username: &str,
    credentials_link: &str,
    link_expires: &str,
) -> Email {
    let company = spec.company_name.as_str();
    let style = Style::of(&spec.brand_color);
    let apps: Vec<App> = urls
        .iter()
        .filter_map(|url| App::from_key(url.name))
        .collect();
    let shared_login: Vec<&str> = apps
        .iter()
        .filter(|app| uses_shared_admin_login(**app))
        .map(|app| app.title())
        .collect();
    let first_account: Vec<&str> = apps
        .iter()
        .filter(|app| first_account_is_owner(**app))
        .map(|app| app.title())
        .collect();

    // What next, shared by both parts (plain sentences, escaped for HTML below).
    let mut next = vec![
        "Open your password link, press the button and save the password in a password manager."
            .to_string(),
    ];
    if !shared_login.is_empty() {
        next.push(format!(
            "Sign in to {} with the user name {admin_username} and that password.",
            join_words(&shared_login)
        ));
    }
    if !first_account.is_empty() {
        next.push(format!(
            "Open {} and create your account there: the first account created becomes the \
             owner, so do it before you share the address with anyone.",
            join_words(&first_account)
        ));
    }
    next.push(format!(
        "Tell your customers about your website, {}.",
        urls.first()
            .map_or_else(|| format!("https://{}", spec.domain), |url| url.url.clone())
    ));

    let mut text = String::new();
    text.push_str(&format!("Welcome, {company}!\n\n"));
    text.push_str(
        "Your online services are set up and running. Keep this e-mail: it lists where \
         everything is.\n\n",
    );
    text.push_str("YOUR SERVICES\n\n");
    for url in urls {
        text.push_str(&format!("{}\n{}\n\n", service_label(url), url.url));
    }
    text.push_str("YOUR LOGIN\n\n");
    text.push_str(&format!("User name: {admin_username}\n"));
    text.push_str("Password: not in this e-mail. See it once here:\n");
    text.push_str(&format!("{credentials_link}\n"));
    text.push_str(&format!(
        "The link works once, until {link_expires}. It opens a page with a button; your \
         password appears after you press it.\n"
    ));
    if !shared_login.is_empty() {
        text.push_str(&format!(
            "This login works for {}.\n",
            join_words(&shared_login)
        ));
    }
    text.push_str("\nWHAT NEXT\n\n");
    for (n, step) in next.iter().enumerate() {
        text.push_str(&format!("{}. {step}\n", n + 1));
    }
    text.push_str(&format!(
        "\nWhy is the password not in this e-mail? E-mails are kept for years, forwarded and \
         searched. A link that works once keeps your password out of your mailbox.\n\n{}",
        footer_text(spec)
    ));

    let mut body = String::new();
    body.push_str(&style.heading(&format!("Welcome, {company}!")));
    body.push_str(&style.paragraph(
        "Your online services are set up and running. Keep this e-mail: it lists where \
         everything is.",
    ));
    body.push_str(&style.subheading("Your services"));
    body.push_str(&style.service_table(urls));
    body.push_str(&style.subheading("Your login"));
    body.push_str(&format!(
        "<p style=\"margin:0 0 16px;\">User name: <strong style=\"font-family:Consolas,Menlo,monospace;\">{}</strong></p>\n",
        html_escape(admin_username)
    ));
    body.push_str(&style.paragraph(
        "For your security, your password is not in this e-mail. Press the button to see it once:",
    ));
    body.push_str(&style.button(credentials_link, "View your password"));
    body.push_str(&style.small(&format!(
        "The link works once, until {link_expires}. It opens a page with a button; your \
         password appears after you press it."
    )));
    if !shared_login.is_empty() {
        body.push_str(&style.paragraph(&format!(
            "This login works for {}.",
            join_words(&shared_login)
        )));
    }
    body.push_str(&style.subheading("What next"));
    body.push_str("<ol style=\"margin:0 0 16px;padding-left:22px;\">\n");
    for step in &next {
        body.push_str(&format!(
            "<li style=\"margin:0 0 8px;\">{}</li>\n",
            html_escape(step)
        ));
    }
    body.push_str("</ol>\n");
    body.push_str(&style.small(
        "Why is the password not in this e-mail? E-mails are kept for years, forwarded and \
         searched. A link that works once keeps your password out of your mailbox.",
    ));

    compose(
        spec,
        format!("Your {company} services are ready"),
        text,
        &style,
        &format!("Welcome, {company}"),
        &body,
    )
}

/// A payment failed: the services keep running until `suspend_on` (a date as people read it);
/// `billing_portal_or_support` is where to fix it (an `https:` or `mailto:` URL), if any.
pub fn payment_failed(
    spec: &ClientSpec,
    suspend_on: &str,
    billing_portal_or_support: Option<&str>,
) -> Email {
    let company = spec.company_name.as_str();
    let style = Style::of(&spec.brand_color);
    let opening = format!(
        "We could not collect the latest payment for {company}'s subscription. Your services \
         keep running for now, but they will be paused on {suspend_on} unless the payment goes \
         through."
    );
    let reassurance = "Pausing keeps all your data: once the payment is made, everything starts \
                       again as it was.";
    let mut text = format!("Hello {company},\n\n{opening}\n\n");
    let mut body = style.heading("Your payment did not go through");
    body.push_str(&style.paragraph(&opening));
    match billing_portal_or_support {
        Some(link) => {
            text.push_str(&format!(
                "Please update your payment details here:\n{link}\n\n"
            ));
            body.push_str(&style.paragraph("Please update your payment details:"));
            body.push_str(&style.button(link, "Update payment details"));
        }
        None => {
            text.push_str("Please contact your provider to update your payment details.\n\n");
            body.push_str(
                &style.paragraph("Please contact your provider to update your payment details."),
            );
        }
    }
    text.push_str(&format!("{reassurance}\n\n{}", footer_text(spec)));
    body.push_str(&style.paragraph(reassurance));
    compose(
        spec,
        format!("Action needed: the payment for {company} failed"),
        text,
        &style,
        "Your payment did not go through",
        &body,
    )
}

/// The services were paused (stopped) because of an unpaid subscription; the data is kept.
pub fn suspended(spec: &ClientSpec) -> Email {
    let company = spec.company_name.as_str();
    let style = Style::of(&spec.brand_color);
    let lines = [
        format!(
            "The online services of {company} are paused because the subscription has not been \
             paid. Your website and apps are offline for now."
        ),
        "All your data is kept. As soon as the payment is made, everything starts again \
         automatically, as it was."
            .to_string(),
        "If you think this is a mistake, please contact your provider.".to_string(),
    ];
    simple(
        spec,
        &style,
        format!("{company}: your services are paused"),
        "Your services are paused",
        &lines,
    )
}

/// A paid sign-up whose domain another client took in the meantime: nothing was set up.
pub fn domain_unavailable(spec: &ClientSpec) -> Email {
    let company = spec.company_name.as_str();
    let style = Style::of(&spec.brand_color);
    let domain = spec.domain.as_str();
    let lines = [
        format!(
            "Thank you for signing up {company}. We could not set up your services: the address \
             {domain} was taken by another sign-up just before yours was completed."
        ),
        "Nothing has been set up for you. Please contact your provider: they will refund the \
         payment or set your services up under another address."
            .to_string(),
    ];
    simple(
        spec,
        &style,
        format!("{company}: we could not set up your services"),
        "We could not set up your services",
        &lines,
    )
}

/// The services run again after a suspension.
pub fn resumed(spec: &ClientSpec) -> Email {
    let company = spec.company_name.as_str();
    let style = Style::of(&spec.brand_color);
    let lines = [
        format!(
            "Thank you: the payment for {company} went through and your services are running \
             again, at the same addresses and with all your data."
        ),
        format!("Your website: https://{}", spec.domain),
    ];
    simple(
        spec,
        &style,
        format!("{company}: your services are running again"),
        "Your services are running again",
        &lines,
    )
}

/// The subscription ended: the services are stopped and the data is kept until
/// `data_kept_until` (a date as people read it), then deleted.
pub fn cancelled(spec: &ClientSpec, data_kept_until: &str) -> Email {
    let company = spec.company_name.as_str();
    let style = Style::of(&spec.brand_color);
    let lines = [
        format!("The subscription of {company} has ended and your online services are stopped."),
        format!(
            "Your data is kept until {data_kept_until}. If you subscribe again before then, \
             everything comes back as it was. After that date it is deleted for good."
        ),
        format!("If you need a copy of your data, contact your provider before {data_kept_until}."),
        "Thank you for having been with us.".to_string(),
    ];
    simple(
        spec,
        &style,
        format!("{company}: your subscription has ended"),
        "Your subscription has ended",
        &lines,
    )
}

/// The client moved from `old_plan` to `new_plan`: what was added (with addresses) and what was
/// removed (its data kept). `spec` is the client as it is now (on `new_plan`).
pub fn plan_changed(spec: &ClientSpec, old_plan: Plan, new_plan: Plan) -> Email {
    let company = spec.company_name.as_str();
    let style = Style::of(&spec.brand_color);
    let now: BTreeSet<App> = spec.apps();
    let before = old_plan.apps();
    let added: Vec<ServiceUrl> = service_urls(spec)
        .into_iter()
        .filter(|url| App::from_key(url.name).is_some_and(|app| !before.contains(&app)))
        .collect();
    let removed: Vec<App> = before
        .iter()
        .copied()
        .filter(|app| !now.contains(app) && !new_plan.apps().contains(app))
        .collect();
    let (old_title, new_title) = (plan_title(old_plan), plan_title(new_plan));
    let opening = format!("{company} is now on the {new_title} plan (before: {old_title}).");

    let mut text = format!("Hello {company},\n\n{opening}\n\n");
    let mut body = style.heading(&format!("Your plan is now {new_title}"));
    body.push_str(&style.paragraph(&opening));
    if !added.is_empty() {
        text.push_str("NEW FOR YOU\n\n");
        for url in &added {
            text.push_str(&format!("{}\n{}\n\n", service_label(url), url.url));
        }
        body.push_str(&style.subheading("New for you"));
        body.push_str(&style.service_table(&added));
        let owners: Vec<&str> = added
            .iter()
            .filter_map(|url| App::from_key(url.name))
            .filter(|app| first_account_is_owner(*app))
            .map(App::title)
            .collect();
        if !owners.is_empty() {
            let note = format!(
                "Open {} and create your account there: the first account created becomes the \
                 owner.",
                join_words(&owners)
            );
            text.push_str(&format!("{note}\n\n"));
            body.push_str(&style.paragraph(&note));
        }
    }
    if !removed.is_empty() {
        let titles: Vec<&str> = removed.iter().map(|app| app.title()).collect();
        let note = format!(
            "{} {} no longer part of your plan and {} been switched off. Their data is kept, \
             not deleted: moving back to the {old_title} plan brings it back.",
            join_words(&titles),
            if titles.len() == 1 { "is" } else { "are" },
            if titles.len() == 1 { "has" } else { "have" },
        );
        text.push_str(&format!("{note}\n\n"));
        body.push_str(&style.paragraph(&note));
    }
    text.push_str(&footer_text(spec));
    compose(
        spec,
        format!("{company}: your plan is now {new_title}"),
        text,
        &style,
        &format!("Your plan is now {new_title}"),
        &body,
    )
}

/// The page a credentials link opens first: nothing secret, one POST button to `form_action`.
///
/// Mail scanners and link previews open links with GET; only a person pressing the button
/// uses up the one view. Serve it with [`CREDENTIALS_PAGE_CSP`] and `Cache-Control: no-store`.
pub fn credentials_page_confirm(
    company: &CompanyName,
    brand: &BrandColor,
    form_action: &str,
) -> String {
    let body = format!(
        "<h1>View your password</h1>\n\
         <p>Your password is shown <strong>once</strong>. Have a password manager or another \
         safe place ready, then press the button.</p>\n\
         <form method=\"post\" action=\"{action}\">\n\
         <button type=\"submit\">Show my password</button>\n\
         </form>\n\
         <p class=\"muted\">Why a button? Mail scanners open links to check them. The button \
         makes sure that only you see your password.</p>\n",
        action = html_escape(form_action),
    );
    page(company, brand, "View your password", &body)
}

/// The page shown after the button: the login and the password, once, with the services.
///
/// Serve it with [`CREDENTIALS_PAGE_CSP`] and `Cache-Control: no-store`.
pub fn credentials_page_reveal(
    company: &CompanyName,
    brand: &BrandColor,
    username: &str,
    password: &str,
    urls: &[ServiceUrl],
) -> String {
    let mut services = String::new();
    for url in urls {
        services.push_str(&format!(
            "<li><a href=\"{href}\">{label}</a><br><span class=\"muted\">{host}</span></li>\n",
            href = html_escape(&url.url),
            label = html_escape(&service_label(url)),
            host = html_escape(url.url.trim_start_matches("https://")),
        ));
    }
    let body = format!(
        "<h1>Your login</h1>\n\
         <dl>\n\
         <dt>User name</dt><dd><code>{username}</code></dd>\n\
         <dt>Password</dt><dd><code class=\"secret\">{password}</code></dd>\n\
         </dl>\n\
         <p><strong>This page is shown only once.</strong> Save the password now, for example \
         in a password manager: the link you used no longer works.</p>\n\
         <h2>Your services</h2>\n\
         <ul>\n{services}</ul>\n",
        username = html_escape(username),
        password = html_escape(password),
    );
    page(company, brand, "Your login", &body)
}

/// The page a used or expired credentials link gives.
pub fn credentials_page_gone(company: &CompanyName, brand: &BrandColor) -> String {
    let body = "<h1>This link no longer works</h1>\n\
         <p>A link to view your password works once and for a limited time. This one has been \
         used or has expired.</p>\n\
         <p>Ask your provider for a new link.</p>\n\
         <p class=\"muted\">If you did not open this link yourself, tell your provider at once: \
         someone else may have seen your password, and it should be changed.</p>\n";
    page(company, brand, "This link no longer works", body)
}

/// Removes line breaks and other control characters, so that a value is safe as one header line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

// ---------------------------------------------------------------------------------------------

/// Apps that take the one generated administrator login (see ARCHITECTURE.md).
fn uses_shared_admin_login(app: App) -> bool {
    matches!(app, App::Espocrm | App::Nextcloud | App::Mailtrain)
}

/// Apps without a preset administrator: the first account registered becomes the owner.
fn first_account_is_owner(app: App) -> bool {
    matches!(app, App::Calcom | App::Plausible)
}

fn plan_title(plan: Plan) -> &'static str {
    match plan {
        Plan::Starter => "Starter",
        Plan::Professional => "Professional",
        Plan::Enterprise => "Enterprise",
    }
}

/// "Customers & sales (CRM) – EspoCRM", or the purpose alone for the website.
fn service_label(url: &ServiceUrl) -> String {
    match App::from_key(url.name) {
        Some(app) => format!("{} – {}", url.purpose, app.title()),
        None => url.purpose.to_string(),
    }
}

/// "A", "A and B", "A, B and C".
fn join_words(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn footer_text(spec: &ClientSpec) -> String {
    format!(
        "--\nYou receive this e-mail as the administrator of {} ({}). It was sent \
         automatically.\n",
        spec.company_name.as_str(),
        spec.domain
    )
}

/// The colours of one client's messages.
struct Style {
    brand: String,
    on_brand: &'static str,
    /// The brand colour when it reads on white, else a dark grey.
    link: String,
}

const TEXT: &str = "#1d2329";
const MUTED: &str = "#5b6670";
const FONT: &str = "-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif";

impl Style {
    fn of(brand: &BrandColor) -> Style {
        let on_brand = brand.contrasting_text();
        let link = if on_brand == "#ffffff" {
            brand.as_str().to_string()
        } else {
            TEXT.to_string()
        };
        Style {
            brand: brand.as_str().to_string(),
            on_brand,
            link,
        }
    }

    fn heading(&self, text: &str) -> String {
        format!(
            "<h1 style=\"margin:0 0 16px;font-size:24px;line-height:1.3;color:{TEXT};\">{}</h1>\n",
            html_escape(text)
        )
    }

    fn subheading(&self, text: &str) -> String {
        format!(
            "<h2 style=\"margin:24px 0 12px;font-size:18px;line-height:1.3;color:{TEXT};\">{}</h2>\n",
            html_escape(text)
        )
    }

    fn paragraph(&self, text: &str) -> String {
        format!("<p style=\"margin:0 0 16px;\">{}</p>\n", html_escape(text))
    }

    fn small(&self, text: &str) -> String {
        format!(
            "<p style=\"margin:0 0 16px;font-size:13px;color:{MUTED};\">{}</p>\n",
            html_escape(text)
        )
    }

    fn button(&self, href: &str, label: &str) -> String {
        format!(
            "<table role=\"presentation\" cellspacing=\"0\" cellpadding=\"0\" border=\"0\" style=\"margin:0 0 16px;\"><tr>\
             <td style=\"border-radius:6px;background:{brand};\">\
             <a href=\"{href}\" style=\"display:inline-block;padding:12px 22px;font-weight:600;color:{on};text-decoration:none;border-radius:6px;\">{label}</a>\
             </td></tr></table>\n",
            brand = self.brand,
            on = self.on_brand,
            href = html_escape(href),
            label = html_escape(label),
        )
    }

    fn service_table(&self, urls: &[ServiceUrl]) -> String {
        let mut out = String::from(
            "<table role=\"presentation\" width=\"100%\" cellspacing=\"0\" cellpadding=\"0\" border=\"0\" style=\"margin:0 0 16px;\">\n",
        );
        for url in urls {
            out.push_str(&format!(
                "<tr><td style=\"padding:10px 0;border-bottom:1px solid #e3e7eb;border-left:4px solid {brand};padding-left:12px;\">\
                 <div style=\"font-weight:600;\">{label}</div>\
                 <a href=\"{href}\" style=\"color:{link};word-break:break-all;\">{host}</a>\
                 </td></tr>\n",
                brand = self.brand,
                link = self.link,
                label = html_escape(&service_label(url)),
                href = html_escape(&url.url),
                host = html_escape(url.url.trim_start_matches("https://")),
            ));
        }
        out.push_str("</table>\n");
        out
    }
}

/// A message of a heading and a few paragraphs.
fn simple(
    spec: &ClientSpec,
    style: &Style,
    subject: String,
    heading: &str,
    lines: &[String],
) -> Email {
    let company = spec.company_name.as_str();
    let mut text = format!("Hello {company},\n\n");
    let mut body = style.heading(heading);
    for line in lines {
        text.push_str(line);
        text.push_str("\n\n");
        body.push_str(&style.paragraph(line));
    }
    text.push_str(&footer_text(spec));
    compose(spec, subject, text, style, heading, &body)
}

/// Wraps an HTML body in the branded e-mail layout and assembles the message.
fn compose(
    spec: &ClientSpec,
    subject: String,
    text: String,
    style: &Style,
    title: &str,
    body: &str,
) -> Email {
    let name = html_escape(spec.company_name.as_str());
    let footer = html_escape(&format!(
        "You receive this e-mail as the administrator of {} ({}). It was sent automatically.",
        spec.company_name.as_str(),
        spec.domain
    ));
    let html = format!(
        "<!DOCTYPE html>\n\
<html lang=\"en\">\n\
<head>\n\
<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{title}</title>\n\
</head>\n\
<body style=\"margin:0;padding:0;background:#f5f7f9;\">\n\
<table role=\"presentation\" width=\"100%\" cellspacing=\"0\" cellpadding=\"0\" border=\"0\" style=\"background:#f5f7f9;\">\n\
<tr><td align=\"center\" style=\"padding:24px 12px;\">\n\
<table role=\"presentation\" width=\"100%\" cellspacing=\"0\" cellpadding=\"0\" border=\"0\" style=\"max-width:600px;background:#ffffff;border-radius:8px;font-family:{FONT};font-size:16px;line-height:1.5;color:{TEXT};\">\n\
<tr><td style=\"background:{brand};color:{on};padding:20px 28px;border-radius:8px 8px 0 0;font-size:20px;font-weight:700;\">{name}</td></tr>\n\
<tr><td style=\"padding:28px;\">\n\
{body}\
</td></tr>\n\
<tr><td style=\"padding:16px 28px 24px;border-top:1px solid #e3e7eb;font-size:13px;color:{MUTED};\">{footer}</td></tr>\n\
</table>\n\
</td></tr>\n\
</table>\n\
</body>\n\
</html>\n",
        title = html_escape(title),
        brand = style.brand,
        on = style.on_brand,
    );
    Email {
        to: spec.admin_email.clone(),
        subject: one_line(&subject),
        text,
        html,
    }
}

/// A branded standalone page (the credentials pages): one inline `<style>`, no external
/// resource, no referrer, not indexed.
fn page(company: &CompanyName, brand: &BrandColor, title: &str, body: &str) -> String {
    let name = html_escape(company.as_str());
    let style = Style::of(brand);
    format!(
        "<!DOCTYPE html>\n\
<html lang=\"en\">\n\
<head>\n\
<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"referrer\" content=\"no-referrer\">\n\
<meta name=\"robots\" content=\"noindex, nofollow\">\n\
<title>{title} – {name}</title>\n\
<style>\n\
* {{ box-sizing: border-box; }}\n\
body {{ margin: 0; font-family: {FONT}; color: {TEXT}; background: #f5f7f9; line-height: 1.5; }}\n\
header {{ background: {brand}; color: {on}; padding: 1.25rem 1.5rem; font-size: 1.25rem; font-weight: 700; overflow-wrap: anywhere; }}\n\
main {{ max-width: 36rem; margin: 2rem auto; padding: 1.75rem; background: #fff; border-radius: .5rem; }}\n\
h1 {{ font-size: 1.5rem; margin: 0 0 1rem; }}\n\
h2 {{ font-size: 1.15rem; margin: 1.5rem 0 .75rem; }}\n\
button {{ font: inherit; font-weight: 600; background: {brand}; color: {on}; border: 0; border-radius: .375rem; padding: .75rem 1.4rem; cursor: pointer; }}\n\
dt {{ font-weight: 600; }}\n\
dd {{ margin: 0 0 1rem; }}\n\
code {{ font-family: Consolas, Menlo, monospace; font-size: 1.1rem; background: #f5f7f9; padding: .2rem .4rem; border-radius: .25rem; overflow-wrap: anywhere; }}\n\
code.secret {{ user-select: all; }}\n\
a {{ color: {link}; }}\n\
ul {{ padding-left: 1.25rem; }}\n\
li {{ margin: 0 0 .5rem; }}\n\
.muted {{ color: {MUTED}; font-size: .9rem; }}\n\
</style>\n\
</head>\n\
<body>\n\
<header>{name}</header>\n\
<main>\n\
{body}\
</main>\n\
</body>\n\
</html>\n",
        title = html_escape(title),
        brand = style.brand,
        on = style.on_brand,
        link = style.link,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_turns_line_breaks_into_single_spaces() {
        assert_eq!(one_line("a\r\nb\nc\u{2028}d\te"), "a b c d e");
        assert_eq!(one_line("\r\n plain \n"), "plain");
    }

    #[test]
    fn words_are_joined_as_in_a_sentence() {
        assert_eq!(join_words(&[]), "");
        assert_eq!(join_words(&["A"]), "A");
        assert_eq!(join_words(&["A", "B"]), "A and B");
        assert_eq!(join_words(&["A", "B", "C"]), "A, B and C");
    }

    #[test]
    fn links_fall_back_to_dark_text_on_a_light_brand_colour() {
        let light = Style::of(&BrandColor::parse("#ffee88").unwrap());
        assert_eq!(light.link, TEXT);
        let dark = Style::of(&BrandColor::parse("#003366").unwrap());
        assert_eq!(dark.link, "#003366");
    }
}
