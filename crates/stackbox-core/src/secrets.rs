//! The client's generated secrets.
//!
//! Every secret is drawn from a [`RandomSource`] that the caller backs with the operating
//! system's CSPRNG. All but one use the alphabet `[A-Za-z0-9]`: such values need no escaping
//! in YAML, `.env` (both compose dialects), SQL, PHP, URLs (`postgres://user:PASSWORD@…`) or
//! a shell, which removes a whole class of quoting bugs. Lengths give at least 95 bits.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::ClientId;
use crate::plan::App;
use crate::CoreError;

/// The name of the client's one secret in the secret store (AWS Secrets Manager): a JSON
/// object of every secret keyed by its `.env` name. Named here so that the bundle's `.env`
/// and the infrastructure adapter agree.
pub fn secret_store_name(id: &ClientId) -> String {
    format!("stackbox/{id}")
}

/// A source of cryptographically secure random bytes (the adapter uses `getrandom`).
pub trait RandomSource {
    /// Fills `buffer` with random bytes.
    fn fill(&mut self, buffer: &mut [u8]);
}

/// Every secret StackBox generates, by its `.env` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretKey {
    /// The client's admin password, shared by the apps that have an admin account.
    AdminPassword,
    MysqlRootPassword,
    EspocrmDbPassword,
    NextcloudDbPassword,
    MailtrainDbPassword,
    RedisPassword,
    PostgresPassword,
    CalcomDbPassword,
    PlausibleDbPassword,
    ClickhousePassword,
    /// Cal.com's NextAuth session signing secret.
    CalcomNextauthSecret,
    /// Cal.com's AES-256 key for stored credentials (exactly 32 characters).
    CalcomEncryptionKey,
    /// Plausible's Phoenix `SECRET_KEY_BASE` (at least 64 bytes).
    PlausibleSecretKeyBase,
    /// Plausible's TOTP vault key: 32 random bytes, Base64 encoded (its documented format).
    PlausibleTotpVaultKey,
    /// Mailtrain's session secret; without it Mailtrain makes a new one on every recreate.
    MailtrainWwwSecret,
}

impl serde::Serialize for SecretKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.env_name())
    }
}

/// How a secret's value is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFormat {
    /// This many characters of `[A-Za-z0-9]`.
    Alphanumeric(usize),
    /// This many random bytes, standard Base64 encoded.
    Base64Bytes(usize),
}

impl SecretKey {
    pub const ALL: [SecretKey; 15] = [
        SecretKey::AdminPassword,
        SecretKey::MysqlRootPassword,
        SecretKey::EspocrmDbPassword,
        SecretKey::NextcloudDbPassword,
        SecretKey::MailtrainDbPassword,
        SecretKey::RedisPassword,
        SecretKey::PostgresPassword,
        SecretKey::CalcomDbPassword,
        SecretKey::PlausibleDbPassword,
        SecretKey::ClickhousePassword,
        SecretKey::CalcomNextauthSecret,
        SecretKey::CalcomEncryptionKey,
        SecretKey::PlausibleSecretKeyBase,
        SecretKey::PlausibleTotpVaultKey,
        SecretKey::MailtrainWwwSecret,
    ];

    /// The variable name in `.env` and in compose interpolations.
    pub fn env_name(self) -> &'static str {
        match self {
            SecretKey::AdminPassword => "ADMIN_PASSWORD",
            SecretKey::MysqlRootPassword => "MYSQL_ROOT_PASSWORD",
            SecretKey::EspocrmDbPassword => "ESPOCRM_DB_PASSWORD",
            SecretKey::NextcloudDbPassword => "NEXTCLOUD_DB_PASSWORD",
            SecretKey::MailtrainDbPassword => "MAILTRAIN_DB_PASSWORD",
            SecretKey::RedisPassword => "REDIS_PASSWORD",
            SecretKey::PostgresPassword => "POSTGRES_PASSWORD",
            SecretKey::CalcomDbPassword => "CALCOM_DB_PASSWORD",
            SecretKey::PlausibleDbPassword => "PLAUSIBLE_DB_PASSWORD",
            SecretKey::ClickhousePassword => "CLICKHOUSE_PASSWORD",
            SecretKey::CalcomNextauthSecret => "CALCOM_NEXTAUTH_SECRET",
            SecretKey::CalcomEncryptionKey => "CALCOM_ENCRYPTION_KEY",
            SecretKey::PlausibleSecretKeyBase => "PLAUSIBLE_SECRET_KEY_BASE",
            SecretKey::PlausibleTotpVaultKey => "PLAUSIBLE_TOTP_VAULT_KEY",
            SecretKey::MailtrainWwwSecret => "MAILTRAIN_WWW_SECRET",
        }
    }

    pub fn from_env_name(name: &str) -> Option<SecretKey> {
        SecretKey::ALL
            .into_iter()
            .find(|key| key.env_name() == name)
    }

    pub fn format(self) -> SecretFormat {
        match self {
            // The design document's lengths: 16 for the admin password, 24 for databases.
            SecretKey::AdminPassword => SecretFormat::Alphanumeric(16),
            SecretKey::MysqlRootPassword
            | SecretKey::EspocrmDbPassword
            | SecretKey::NextcloudDbPassword
            | SecretKey::MailtrainDbPassword
            | SecretKey::RedisPassword
            | SecretKey::PostgresPassword
            | SecretKey::CalcomDbPassword
            | SecretKey::PlausibleDbPassword
            | SecretKey::ClickhousePassword => SecretFormat::Alphanumeric(24),
            SecretKey::CalcomNextauthSecret => SecretFormat::Alphanumeric(43),
            // Cal.com uses the key's characters as an AES-256 key: exactly 32 of them.
            SecretKey::CalcomEncryptionKey => SecretFormat::Alphanumeric(32),
            SecretKey::PlausibleSecretKeyBase => SecretFormat::Alphanumeric(86),
            SecretKey::PlausibleTotpVaultKey => SecretFormat::Base64Bytes(32),
            SecretKey::MailtrainWwwSecret => SecretFormat::Alphanumeric(48),
        }
    }

    /// Why a running client's secret cannot be replaced by a deploy, or `None` when it can:
    /// the databases are told the new passwords before the services that use them are
    /// recreated (see `deploy::Converge`), and the other keys are read from the environment
    /// on every start.
    pub fn live_rotation_refusal(self) -> Option<&'static str> {
        match self {
            SecretKey::AdminPassword => Some(
                "is the administrator's password, hashed into each app's own user table at installation; a new value in the environment changes nothing there. Reset it in every app with `stackbox admin-password ID` (POST /v1/clients/{id}/admin-password)",
            ),
            SecretKey::CalcomEncryptionKey => Some(
                "encrypts the credentials Cal.com keeps in its database; a new key would make them unreadable",
            ),
            SecretKey::PlausibleTotpVaultKey => Some(
                "encrypts the two-factor secrets Plausible keeps in its database; a new key would make them unreadable",
            ),
            // EspoCRM's and Nextcloud's installers write theirs into the app's own config
            // file once; the stack sets it from the environment on every start (EspoCRM's
            // entrypoint wrapper, Nextcloud's NC_dbpassword), so it rotates like the others.
            SecretKey::EspocrmDbPassword
            | SecretKey::NextcloudDbPassword
            | SecretKey::MysqlRootPassword
            | SecretKey::MailtrainDbPassword
            | SecretKey::RedisPassword
            | SecretKey::PostgresPassword
            | SecretKey::CalcomDbPassword
            | SecretKey::PlausibleDbPassword
            | SecretKey::ClickhousePassword
            | SecretKey::CalcomNextauthSecret
            | SecretKey::PlausibleSecretKeyBase
            | SecretKey::MailtrainWwwSecret => None,
        }
    }

    /// Whether the secret is a database password (shown nowhere but `.env`).
    pub fn is_database_password(self) -> bool {
        self.env_name().ends_with("_PASSWORD") && self != SecretKey::AdminPassword
    }

    /// The secrets a client running these apps needs.
    pub fn needed_for(apps: &BTreeSet<App>) -> BTreeSet<SecretKey> {
        let mut keys = BTreeSet::from([SecretKey::AdminPassword]);
        for app in apps {
            keys.extend(match app {
                App::Espocrm => vec![SecretKey::MysqlRootPassword, SecretKey::EspocrmDbPassword],
                App::Nextcloud => {
                    vec![
                        SecretKey::MysqlRootPassword,
                        SecretKey::NextcloudDbPassword,
                        SecretKey::RedisPassword,
                    ]
                }
                App::Calcom => vec![
                    SecretKey::PostgresPassword,
                    SecretKey::CalcomDbPassword,
                    SecretKey::CalcomNextauthSecret,
                    SecretKey::CalcomEncryptionKey,
                ],
                App::Plausible => vec![
                    SecretKey::PostgresPassword,
                    SecretKey::PlausibleDbPassword,
                    SecretKey::ClickhousePassword,
                    SecretKey::PlausibleSecretKeyBase,
                    SecretKey::PlausibleTotpVaultKey,
                ],
                App::Mailtrain => vec![
                    SecretKey::MysqlRootPassword,
                    SecretKey::MailtrainDbPassword,
                    SecretKey::MailtrainWwwSecret,
                ],
            });
        }
        keys
    }

    /// Checks a stored value against the key's format (a hand-edited `.env` may break it).
    pub fn accepts(self, value: &str) -> bool {
        match self.format() {
            SecretFormat::Alphanumeric(length) => {
                value.len() >= length.min(16) && value.chars().all(|c| c.is_ascii_alphanumeric())
            }
            SecretFormat::Base64Bytes(bytes) => {
                value.len() == bytes.div_ceil(3) * 4
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            }
        }
    }
}

/// A client's secrets. Values are never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secrets(BTreeMap<SecretKey, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.0.keys().map(|key| key.env_name()))
            .finish()
    }
}

impl Secrets {
    pub fn new() -> Secrets {
        Secrets::default()
    }

    pub fn get(&self, key: SecretKey) -> Option<&str> {
        self.0.get(&key).map(String::as_str)
    }

    pub fn insert(&mut self, key: SecretKey, value: String) {
        self.0.insert(key, value);
    }

    pub fn iter(&self) -> impl Iterator<Item = (SecretKey, &str)> {
        self.0.iter().map(|(key, value)| (*key, value.as_str()))
    }

    /// Adds every needed secret that is missing; keeps the others (also ones no longer
    /// needed, so that an app switched off and on again finds its database password).
    /// Returns the keys that were generated.
    pub fn fill_missing(
        &mut self,
        needed: &BTreeSet<SecretKey>,
        random: &mut dyn RandomSource,
    ) -> BTreeSet<SecretKey> {
        let mut generated = BTreeSet::new();
        for key in needed {
            if !self.0.contains_key(key) {
                self.0.insert(*key, generate(key.format(), random));
                generated.insert(*key);
            }
        }
        generated
    }

    /// Replaces every needed secret with a new one (`--rotate-secrets`).
    pub fn rotate(&mut self, needed: &BTreeSet<SecretKey>, random: &mut dyn RandomSource) {
        for key in needed {
            self.0.insert(*key, generate(key.format(), random));
        }
    }
}

/// The secrets a rotation of a running client replaces: every one it uses that can be
/// replaced live when `only` is empty, else exactly `only` (names as in `.env`, any case),
/// each of which must be used by the client and replaceable live. The error names the key
/// and why.
pub fn rotation_keys(
    needed: &BTreeSet<SecretKey>,
    only: &[String],
) -> Result<BTreeSet<SecretKey>, CoreError> {
    if only.is_empty() {
        return Ok(needed
            .iter()
            .copied()
            .filter(|key| key.live_rotation_refusal().is_none())
            .collect());
    }
    let mut keys = BTreeSet::new();
    for name in only {
        let key = SecretKey::from_env_name(&name.trim().to_ascii_uppercase()).ok_or_else(|| {
            CoreError::invalid(
                "only",
                format!(
                    "{name:?} is not a secret StackBox generates; use one of {}",
                    needed
                        .iter()
                        .map(|k| k.env_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !needed.contains(&key) {
            return Err(CoreError::invalid(
                "only",
                format!(
                    "{} is not used by this client's plan and apps; nothing to rotate",
                    key.env_name()
                ),
            ));
        }
        if let Some(reason) = key.live_rotation_refusal() {
            return Err(CoreError::invalid(
                "only",
                format!(
                    "{} cannot be rotated on a running client: it {reason}",
                    key.env_name()
                ),
            ));
        }
        keys.insert(key);
    }
    Ok(keys)
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Generates one value. Alphanumeric characters come from rejection sampling, so every
/// character is uniform over the 62 (no modulo bias).
pub fn generate(format: SecretFormat, random: &mut dyn RandomSource) -> String {
    match format {
        SecretFormat::Alphanumeric(length) => {
            let mut out = String::with_capacity(length);
            let mut buffer = [0u8; 64];
            while out.len() < length {
                random.fill(&mut buffer);
                for byte in buffer {
                    // 248 = 4 * 62: bytes at or above it would favour the first characters.
                    if byte < 248 && out.len() < length {
                        out.push(ALPHANUMERIC[usize::from(byte % 62)] as char);
                    }
                }
            }
            out
        }
        SecretFormat::Base64Bytes(count) => {
            let mut bytes = vec![0u8; count];
            random.fill(&mut bytes);
            base64(&bytes)
        }
    }
}

/// Standard Base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A deterministic source for tests and snapshots only (xorshift; never for real secrets).
#[derive(Debug, Clone)]
pub struct TestRandom(pub u64);

impl RandomSource for TestRandom {
    fn fill(&mut self, buffer: &mut [u8]) {
        for byte in buffer {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *byte = (self.0 >> 24) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    fn enterprise_needs() -> BTreeSet<SecretKey> {
        SecretKey::needed_for(&Plan::Enterprise.apps())
    }

    #[test]
    fn a_rotation_without_only_takes_every_live_rotatable_secret_and_nothing_bound_to_data() {
        let keys = rotation_keys(&enterprise_needs(), &[]).unwrap();
        assert!(keys.contains(&SecretKey::MysqlRootPassword));
        assert!(keys.contains(&SecretKey::PostgresPassword));
        assert!(keys.contains(&SecretKey::MailtrainDbPassword));
        assert!(keys.contains(&SecretKey::ClickhousePassword));
        // Set from the environment on every start by the stack, though the installers wrote
        // them into the apps' config files.
        assert!(keys.contains(&SecretKey::EspocrmDbPassword));
        assert!(keys.contains(&SecretKey::NextcloudDbPassword));
        for bound in [
            SecretKey::AdminPassword,
            SecretKey::CalcomEncryptionKey,
            SecretKey::PlausibleTotpVaultKey,
        ] {
            assert!(!keys.contains(&bound), "{bound:?}");
        }
    }

    #[test]
    fn a_rotation_of_named_keys_accepts_any_case_and_refuses_unknown_unused_and_bound_keys() {
        let needed = SecretKey::needed_for(&Plan::Starter.apps());
        let keys = rotation_keys(&needed, &["mysql_root_password".into()]).unwrap();
        assert_eq!(keys, BTreeSet::from([SecretKey::MysqlRootPassword]));

        let unknown = rotation_keys(&needed, &["NOPE".into()])
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("only") && unknown.contains("NOPE"),
            "{unknown}"
        );
        let unused = rotation_keys(&needed, &["CALCOM_DB_PASSWORD".into()])
            .unwrap_err()
            .to_string();
        assert!(unused.contains("not used by this client"), "{unused}");
        let bound = rotation_keys(&enterprise_needs(), &["CALCOM_ENCRYPTION_KEY".into()])
            .unwrap_err()
            .to_string();
        assert!(bound.contains("unreadable"), "{bound}");
        let admin = rotation_keys(&needed, &["ADMIN_PASSWORD".into()])
            .unwrap_err()
            .to_string();
        assert!(admin.contains("stackbox admin-password"), "{admin}");
    }

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn generated_secrets_have_their_lengths_and_alphabet() {
        let mut random = TestRandom(7);
        let mut secrets = Secrets::new();
        let needed = SecretKey::needed_for(&Plan::Enterprise.apps());
        secrets.fill_missing(&needed, &mut random);
        assert_eq!(secrets.get(SecretKey::AdminPassword).unwrap().len(), 16);
        assert_eq!(secrets.get(SecretKey::MysqlRootPassword).unwrap().len(), 24);
        assert_eq!(
            secrets.get(SecretKey::CalcomEncryptionKey).unwrap().len(),
            32
        );
        assert_eq!(
            secrets.get(SecretKey::PlausibleTotpVaultKey).unwrap().len(),
            44
        );
        for (key, value) in secrets.iter() {
            assert!(key.accepts(value), "{}", key.env_name());
        }
    }

    #[test]
    fn filling_keeps_existing_secrets_and_rotation_replaces_them() {
        let mut random = TestRandom(9);
        let needed = SecretKey::needed_for(&Plan::Starter.apps());
        let mut secrets = Secrets::new();
        assert_eq!(secrets.fill_missing(&needed, &mut random), needed);
        let before = secrets.clone();
        assert!(secrets.fill_missing(&needed, &mut random).is_empty());
        assert_eq!(secrets, before);
        secrets.rotate(&needed, &mut random);
        for key in &needed {
            assert_ne!(secrets.get(*key), before.get(*key));
        }
    }

    #[test]
    fn characters_are_spread_over_the_whole_alphabet() {
        let value = generate(SecretFormat::Alphanumeric(20_000), &mut TestRandom(11));
        let distinct: BTreeSet<char> = value.chars().collect();
        assert_eq!(distinct.len(), 62);
    }

    #[test]
    fn debug_output_never_shows_values() {
        let mut secrets = Secrets::new();
        secrets.insert(SecretKey::AdminPassword, "hunter2hunter2xx".into());
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }
}
