//! `website/index.html`: the client's starting website — branded, responsive, no external
//! assets (the site's CSP allows only itself, plus Plausible when the client has analytics).

use crate::client::ClientSpec;
use crate::plan::App;
use crate::stack::service_urls;

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(client: &ClientSpec) -> String {
    let name = html_escape(client.company_name.as_str());
    let color = client.brand_color.as_str();
    let on_color = client.brand_color.contrasting_text();
    let apps = client.apps();
    let analytics = if apps.contains(&App::Plausible) {
        format!(
            "\n  <script defer data-domain=\"{domain}\" src=\"https://{host}/js/script.js\"></script>",
            domain = client.domain,
            host = client.domain.sub(App::Plausible.subdomain())
        )
    } else {
        String::new()
    };
    let booking = if apps.contains(&App::Calcom) {
        format!(
            "\n      <a class=\"button\" href=\"https://{}\">Book an appointment</a>",
            client.domain.sub(App::Calcom.subdomain())
        )
    } else {
        String::new()
    };
    let mut cards = String::new();
    for url in service_urls(client)
        .into_iter()
        .filter(|url| url.name != "website")
    {
        cards.push_str(&format!(
            "\n      <li><a class=\"card\" href=\"{href}\"><span class=\"card-title\">{purpose}</span><span class=\"card-link\">{host}</span></a></li>",
            href = html_escape(&url.url),
            purpose = html_escape(url.purpose),
            host = html_escape(url.url.trim_start_matches("https://")),
        ));
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{name}</title>
  <meta name="description" content="{name}">
  <meta name="theme-color" content="{color}">{analytics}
  <style>
    :root {{ --brand: {color}; --on-brand: {on_color}; --text: #1d2329; --muted: #5b6670; --surface: #f5f7f9; }}
    * {{ box-sizing: border-box; }}
    body {{ margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--text); line-height: 1.6; background: #fff; }}
    header {{ background: var(--brand); color: var(--on-brand); padding: 4rem 1.5rem 3.5rem; }}
    .wrap {{ max-width: 60rem; margin: 0 auto; }}
    h1 {{ font-size: clamp(2rem, 6vw, 3.25rem); line-height: 1.15; margin: 0 0 .75rem; overflow-wrap: anywhere; }}
    .tagline {{ font-size: 1.15rem; margin: 0 0 2rem; opacity: .9; }}
    .button {{ display: inline-block; background: var(--on-brand); color: var(--brand); padding: .8rem 1.4rem; border-radius: .5rem; font-weight: 600; text-decoration: none; }}
    .button:focus, .button:hover {{ opacity: .9; }}
    main {{ padding: 3rem 1.5rem; }}
    h2 {{ font-size: 1.4rem; margin: 0 0 1.25rem; }}
    ul.cards {{ list-style: none; padding: 0; margin: 0; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fit, minmax(15rem, 1fr)); }}
    .card {{ display: block; height: 100%; padding: 1.25rem 1.4rem; border-radius: .75rem; background: var(--surface); border-top: 4px solid var(--brand); color: inherit; text-decoration: none; }}
    .card:focus, .card:hover {{ box-shadow: 0 4px 14px rgba(0, 0, 0, .12); }}
    .card-title {{ display: block; font-weight: 600; font-size: 1.05rem; }}
    .card-link {{ display: block; color: var(--muted); font-size: .85rem; overflow-wrap: break-word; }}
    footer {{ padding: 2rem 1.5rem; color: var(--muted); font-size: .9rem; border-top: 1px solid #e3e7eb; }}
    @media (max-width: 30rem) {{ header {{ padding: 2.75rem 1.25rem 2.5rem; }} main {{ padding: 2rem 1.25rem; }} }}
  </style>
</head>
<body>
  <header>
    <div class="wrap">
      <h1>{name}</h1>
      <p class="tagline">Welcome. We are glad you are here.</p>{booking}
    </div>
  </header>
  <main>
    <div class="wrap">
      <h2>Online services</h2>
      <ul class="cards">{cards}
      </ul>
    </div>
  </main>
  <footer>
    <div class="wrap">&copy; {name}</div>
  </footer>
</body>
</html>
"#
    )
}
