//! The image catalog: one pinned image reference per [`ImageKey`].
//!
//! Pins are release lines that receive security fixes but never a new major version, chosen
//! from each project's maintained releases (late 2026). An operator who wants byte-for-byte
//! reproducible images, a mirror or an air-gapped registry overrides entries with a file
//! (`--images FILE`), for example with digests (`mariadb@sha256:…`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::CoreError;
use crate::plan::ImageKey;

/// The built-in pins, and why each.
const BUILTIN: [(ImageKey, &str); 12] = [
    // Traefik v3: the provider, ACME and healthcheck settings below are v3's.
    (ImageKey::Traefik, "traefik:v3.6"),
    // nginx stable line (even minor); the alpine variant has busybox wget for the healthcheck.
    (ImageKey::Nginx, "nginx:1.30-alpine"),
    // MariaDB 11.4 LTS (maintained to 2029) instead of mysql:8.0, which is end of life. MySQL 8.4
    // turned mysql_native_password off, which Mailtrain v2's driver needs; EspoCRM and Nextcloud
    // both support MariaDB. The service keeps the design document's name, `mysql`.
    (ImageKey::Mysql, "mariadb:11.4"),
    (ImageKey::Redis, "redis:8-alpine"),
    // PostgreSQL 17 (data in /var/lib/postgresql/data; 18 moved it). Plausible needs >= 12,
    // Cal.com >= 13.
    (ImageKey::Postgres, "postgres:17-alpine"),
    // EspoCRM 10: volumes data/, custom/, client/custom/ (mounting /var/www/html is legacy).
    (ImageKey::Espocrm, "espocrm/espocrm:10.0-apache"),
    // Nextcloud cannot skip major versions on upgrade, so the major is pinned.
    (ImageKey::Nextcloud, "nextcloud:34-apache"),
    (ImageKey::Calcom, "calcom/cal.com:v5.8.2"),
    (
        ImageKey::Plausible,
        "ghcr.io/plausible/community-edition:v3.2.0",
    ),
    // The ClickHouse line Plausible CE v3 is tested with.
    (
        ImageKey::Clickhouse,
        "clickhouse/clickhouse-server:24.12-alpine",
    ),
    // Mailtrain v2 publishes only a moving `latest` tag, which StackBox refuses to deploy.
    // The operator pins it once into this local name (see README, "Images").
    (ImageKey::Mailtrain, "stackbox-local/mailtrain:v2"),
    // Mailtrain v2 (unmaintained since 2022) is tested upstream with MongoDB 4.
    (ImageKey::Mongo, "mongo:4.4"),
];

/// One image reference per catalog key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageCatalog(BTreeMap<ImageKey, String>);

impl Default for ImageCatalog {
    fn default() -> Self {
        ImageCatalog::builtin()
    }
}

impl ImageCatalog {
    /// The catalog compiled into StackBox.
    pub fn builtin() -> ImageCatalog {
        ImageCatalog(
            BUILTIN
                .iter()
                .map(|(key, image)| (*key, (*image).to_string()))
                .collect(),
        )
    }

    /// The image for a key.
    pub fn image(&self, key: ImageKey) -> &str {
        &self.0[&key]
    }

    pub fn iter(&self) -> impl Iterator<Item = (ImageKey, &str)> {
        self.0.iter().map(|(key, image)| (*key, image.as_str()))
    }

    /// This catalog with entries replaced by already validated references (a release's).
    pub fn with_keys(&self, images: &BTreeMap<ImageKey, String>) -> ImageCatalog {
        let mut catalog = self.clone();
        for (key, reference) in images {
            catalog.0.insert(*key, reference.clone());
        }
        catalog
    }

    /// This catalog with some entries replaced; each replacement is validated.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<ImageCatalog, CoreError> {
        let mut catalog = self.clone();
        for (key, reference) in overrides {
            let image = ImageKey::from_key(key).ok_or_else(|| CoreError::InvalidImage {
                image: key.clone(),
                problem: format!(
                    "unknown image key; use one of {}",
                    ImageKey::ALL.map(ImageKey::key).join(", ")
                ),
            })?;
            validate_reference(key, reference)?;
            catalog.0.insert(image, reference.trim().to_string());
        }
        Ok(catalog)
    }

    /// Parses a catalog override file: `key = "image:tag"` lines, TOML, optionally under `[images]`.
    pub fn with_overrides_toml(&self, text: &str, origin: &str) -> Result<ImageCatalog, CoreError> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum File {
            Nested { images: BTreeMap<String, String> },
            Flat(BTreeMap<String, String>),
        }
        let file: File = toml::from_str(text).map_err(|error| CoreError::Syntax {
            origin: origin.to_string(),
            message: format!(
                "{}; an image catalog holds lines such as mysql = \"registry.example/mariadb:11.4\"",
                error.message()
            ),
        })?;
        let overrides = match file {
            File::Nested { images } | File::Flat(images) => images,
        };
        self.with_overrides(&overrides)
    }
}

/// Accepts `[registry[:port]/]name[:tag][@sha256:digest]` with a tag or a digest, never `latest`.
pub fn validate_reference(key: &str, reference: &str) -> Result<(), CoreError> {
    let problem = |p: String| CoreError::InvalidImage {
        image: key.to_string(),
        problem: p,
    };
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(problem(
            "is empty; give an image such as \"mariadb:11.4\"".into(),
        ));
    }
    if let Some(bad) = reference
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-/:@".contains(*c)))
    {
        return Err(problem(format!(
            "{reference:?} contains {bad:?}, which no image reference can hold"
        )));
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let valid = digest
            .strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()));
        if !valid {
            return Err(problem(format!(
                "{reference:?} has a malformed digest; use @sha256: and 64 hex digits"
            )));
        }
    }
    let last_component = name_and_tag.rsplit('/').next().unwrap_or(name_and_tag);
    let tag = last_component.split_once(':').map(|(_, tag)| tag);
    match tag {
        Some("latest") => Err(problem(format!(
            "{reference:?} uses the moving tag `latest`; pin a version (\"name:1.2\") or a digest (\"name@sha256:…\")"
        ))),
        Some("") => Err(problem(format!("{reference:?} has an empty tag"))),
        None if digest.is_none() => Err(problem(format!(
            "{reference:?} has no tag, which means `latest`; pin a version (\"name:1.2\") or a digest"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_complete_and_pinned() {
        let catalog = ImageCatalog::builtin();
        for key in ImageKey::ALL {
            validate_reference(key.key(), catalog.image(key)).unwrap();
        }
        assert!(catalog
            .iter()
            .all(|(_, image)| !image.starts_with("mysql:8.0")));
    }

    #[test]
    fn overrides_replace_entries_and_refuse_unpinned_images() {
        let catalog = ImageCatalog::builtin()
            .with_overrides_toml(
                "mysql = \"registry.local:5000/mariadb:11.4.5\"\n",
                "images.toml",
            )
            .unwrap();
        assert_eq!(
            catalog.image(ImageKey::Mysql),
            "registry.local:5000/mariadb:11.4.5"
        );
        let nested = ImageCatalog::builtin()
            .with_overrides_toml("[images]\nredis = \"redis:8.2\"\n", "f")
            .unwrap();
        assert_eq!(nested.image(ImageKey::Redis), "redis:8.2");

        for (text, expected) in [
            (
                "mysql = \"mariadb:latest\"",
                "images.mysql: \"mariadb:latest\" uses the moving tag",
            ),
            (
                "mysql = \"registry.local:5000/mariadb\"",
                "images.mysql: \"registry.local:5000/mariadb\" has no tag",
            ),
            (
                "mysqll = \"mariadb:11\"",
                "images.mysqll: unknown image key",
            ),
            (
                "mysql = \"maria db:11\"",
                "images.mysql: \"maria db:11\" contains ' '",
            ),
            (
                "mysql = \"mariadb@sha256:abc\"",
                "images.mysql: \"mariadb@sha256:abc\" has a malformed digest",
            ),
        ] {
            let message = ImageCatalog::builtin()
                .with_overrides_toml(text, "f")
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(expected), "{message}");
        }
        let digest = format!("mariadb@sha256:{}", "a".repeat(64));
        assert!(validate_reference("mysql", &digest).is_ok());
    }
}
