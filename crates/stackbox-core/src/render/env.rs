//! `.env`: the client's settings and secrets, read by compose for `${NAME}` interpolation.
//!
//! Only values from safe alphabets go here (ids, domain, plan, e-mail, colour, generated
//! secrets), so every line reads the same in compose v1 (python-dotenv) and compose v2
//! (compose-go), which disagree on quoting and escapes. Free text such as the company name
//! never goes into `.env`; it is written, escaped, straight into the files that need it.

use std::collections::BTreeSet;

use crate::client::{ClientId, ClientSpec};
use crate::error::CoreError;
use crate::plan::App;
use crate::secrets::{secret_store_name, SecretKey, Secrets};
use crate::stack::ADMIN_USERNAME;

/// The `.env` file with the secret values, for a bundle that keeps its secrets in files.
pub fn render(client: &ClientSpec, id: &ClientId, secrets: &Secrets) -> String {
    let mut out = format!(
        "# StackBox bundle of client {id}. Generated: render again to change it.\n\
         # Holds secrets: keep it mode 0600 and never commit, mail or paste it.\n"
    );
    settings(&mut out, client, id);
    out.push_str("\n# Secrets (generated from the operating system's CSPRNG)\n");
    for (key, value) in secrets.iter() {
        out.push_str(&format!("{}={value}\n", key.env_name()));
    }
    out
}

/// The `.env` file of a bundle whose secrets live in the secret store: the settings and, in
/// a comment, where the secrets are and which ones compose interpolates (`referenced`), so
/// that an operator can export them to run the bundle with docker-compose by hand. No value.
pub fn render_without_secrets(
    client: &ClientSpec,
    id: &ClientId,
    referenced: &BTreeSet<SecretKey>,
) -> String {
    let store = secret_store_name(id);
    let mut out = format!(
        "# StackBox bundle of client {id}. Generated: render again to change it.\n\
         # Holds no secret: they live in AWS Secrets Manager, secret {store} (one JSON\n\
         # object keyed by the names below).\n"
    );
    settings(&mut out, client, id);
    if referenced.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "\n# Secrets are not in this file. To run the bundle with docker-compose by hand, export\n\
         # these from secret {store} first:\n"
    ));
    for key in referenced {
        out.push_str(&format!("#   {}\n", key.env_name()));
    }
    out
}

/// The settings lines shared by both forms.
fn settings(out: &mut String, client: &ClientSpec, id: &ClientId) {
    let apps = client.apps();
    out.push_str(&format!("COMPOSE_PROJECT_NAME={id}\n"));
    out.push_str(&format!("CLIENT_ID={id}\n"));
    out.push_str(&format!("DOMAIN={}\n", client.domain));
    out.push_str(&format!("PLAN={}\n", client.plan));
    out.push_str(&format!("ADMIN_USERNAME={ADMIN_USERNAME}\n"));
    out.push_str(&format!("ADMIN_EMAIL={}\n", client.admin_email.as_str()));
    out.push_str(&format!(
        "BRAND_COLOR=\"{}\"\n",
        client.brand_color.as_str()
    ));
    for app in App::ALL {
        out.push_str(&format!(
            "ENABLE_{}={}\n",
            app.key().to_ascii_uppercase(),
            apps.contains(&app)
        ));
    }
}

/// Reads the secrets back from a `.env` that StackBox wrote (other lines are ignored).
pub fn parse_secrets(text: &str) -> Result<Secrets, CoreError> {
    let mut secrets = Secrets::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(CoreError::invalid(
                format!(".env line {}", number + 1),
                "is not NAME=value; restore the file from a backup",
            ));
        };
        let Some(key) = SecretKey::from_env_name(name.trim()) else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        if !key.accepts(value) {
            return Err(CoreError::invalid(
                format!(".env {}", key.env_name()),
                "is not a value StackBox generated; restore it, or render with --rotate-secrets to make new ones",
            ));
        }
        secrets.insert(key, value.to_string());
    }
    Ok(secrets)
}
