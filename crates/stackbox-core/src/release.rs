//! Releases: the versioned image sets a client runs, and which moves between them are allowed.
//!
//! The operator's image catalog (the built-in pins with `[images]` and `--images` over them) is
//! the release named [`BASE_RELEASE`]. Each `[[releases]]` entry of the operator file names a
//! later release and the images it changes; every other image is the previous release's. A
//! client records the release it runs in its configuration (`release = "…"`): a new client gets
//! the newest release, an existing one keeps its release until `stackbox upgrade` moves it, so
//! a new release never reaches a client by accident.
//!
//! The upgrade graph follows the projects' own rules, read from the image tags' versions:
//! Nextcloud upgrades one major version at a time and never down; EspoCRM, Cal.com, Plausible,
//! MariaDB, ClickHouse and MongoDB migrate their data forward only; a PostgreSQL major version
//! needs a dump and a restore, which an upgrade does not do. A move that breaks a rule is
//! refused with the path through intermediate releases when there is one.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::catalog::ImageCatalog;
use crate::error::CoreError;
use crate::plan::ImageKey;

/// The release that is the operator's catalog itself.
pub const BASE_RELEASE: &str = "base";

/// One `[[releases]]` entry: its name and the images it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseSpec {
    pub name: String,
    pub images: BTreeMap<ImageKey, String>,
}

/// Validates a release name: 1 to 40 of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn validate_release_name(field: &str, name: &str) -> Result<(), CoreError> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(CoreError::invalid(
            field,
            format!(
                "{name:?} is not a release name: 1 to 40 of A-Z, a-z, 0-9, '.', '_' and '-', such as \"2027.01\""
            ),
        ))
    }
}

/// Every release, oldest first, each with its full catalog.
pub fn release_catalogs(
    base: &ImageCatalog,
    releases: &[ReleaseSpec],
) -> Vec<(String, ImageCatalog)> {
    let mut out = vec![(BASE_RELEASE.to_string(), base.clone())];
    let mut current = base.clone();
    for release in releases {
        current = current.with_keys(&release.images);
        out.push((release.name.clone(), current.clone()));
    }
    out
}

/// The catalog of one release; the error lists the releases there are.
pub fn catalog_of(
    base: &ImageCatalog,
    releases: &[ReleaseSpec],
    name: &str,
) -> Result<ImageCatalog, CoreError> {
    let all = release_catalogs(base, releases);
    all.iter()
        .find(|(n, _)| n == name)
        .map(|(_, catalog)| catalog.clone())
        .ok_or_else(|| {
            CoreError::invalid(
                "release",
                format!(
                    "{name:?} is not one of the operator's releases ({}); add it under [[releases]] in stackbox.toml",
                    all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )
        })
}

/// The version numbers of an image reference's tag (`v5.8.2` → [5, 8, 2], `34-apache` →
/// [34]); `None` when the tag starts with no number (a content hash, `alpine`).
pub fn tag_version(reference: &str) -> Option<Vec<u64>> {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let tag = last.split_once(':')?.1;
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let numeric: String = tag
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    // A version ends the tag or is followed by a variant (`-apache`); digits run into letters
    // (`091bda11`, a content hash) are no version.
    if !matches!(
        tag[numeric.len()..].chars().next(),
        None | Some('-' | '_' | '+')
    ) {
        return None;
    }
    let parts: Vec<u64> = numeric
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    (!parts.is_empty()).then_some(parts)
}

/// Why moving one image from `from` to `to` is not allowed, if it is not.
pub fn image_move_refusal(key: ImageKey, from: &str, to: &str) -> Option<String> {
    if from == to {
        return None;
    }
    let (Some(old), Some(new)) = (tag_version(from), tag_version(to)) else {
        // Digests or tags without a version: nothing to compare, the operator's choice.
        return None;
    };
    let major = |v: &[u64]| v.first().copied().unwrap_or(0);
    match key {
        ImageKey::Nextcloud if major(&new) > major(&old) + 1 => Some(format!(
            "Nextcloud upgrades one major version at a time ({} to {} skips {})",
            major(&old),
            major(&new),
            major(&new) - major(&old) - 1
        )),
        ImageKey::Postgres if major(&new) != major(&old) => Some(format!(
            "PostgreSQL {} to {} changes the data format; it needs a dump and a restore \
             (back the client up, then restore it into a client on the new release)",
            major(&old),
            major(&new)
        )),
        ImageKey::Nextcloud
        | ImageKey::Espocrm
        | ImageKey::Calcom
        | ImageKey::Plausible
        | ImageKey::Mysql
        | ImageKey::Clickhouse
        | ImageKey::Mongo
        | ImageKey::Postgres
        | ImageKey::Mailtrain
            if new < old =>
        {
            Some(format!(
                "{} migrates its data forward only ({from} to {to} goes back)",
                key.key()
            ))
        }
        _ => None,
    }
}

/// What moving a client from one release to another changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseMove {
    pub from: String,
    pub to: String,
    /// (image key, from, to) of every image that changes.
    pub images: Vec<(ImageKey, String, String)>,
}

/// Checks a move between two releases: every image that changes must be allowed to. A move
/// that is not is refused, naming the rule and the intermediate releases to go through when
/// such a path exists.
pub fn plan_move(
    base: &ImageCatalog,
    releases: &[ReleaseSpec],
    from: &str,
    to: &str,
) -> Result<ReleaseMove, CoreError> {
    let all = release_catalogs(base, releases);
    let find = |name: &str, field: &str| {
        all.iter().position(|(n, _)| n == name).ok_or_else(|| {
            CoreError::invalid(
                field,
                format!(
                    "{name:?} is not one of the operator's releases ({}); add it under [[releases]] in stackbox.toml",
                    all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    let (a, b) = (find(from, "release")?, find(to, "to")?);
    let refusals = |a: usize, b: usize| -> Vec<String> {
        ImageKey::ALL
            .iter()
            .filter_map(|key| image_move_refusal(*key, all[a].1.image(*key), all[b].1.image(*key)))
            .collect()
    };
    let problems = refusals(a, b);
    if problems.is_empty() {
        let images = ImageKey::ALL
            .iter()
            .filter(|key| all[a].1.image(**key) != all[b].1.image(**key))
            .map(|key| {
                (
                    *key,
                    all[a].1.image(*key).to_string(),
                    all[b].1.image(*key).to_string(),
                )
            })
            .collect();
        return Ok(ReleaseMove {
            from: from.to_string(),
            to: to.to_string(),
            images,
        });
    }
    // The shortest path of allowed moves, if any (breadth first over the releases).
    let mut previous: Vec<Option<usize>> = vec![None; all.len()];
    let mut seen = vec![false; all.len()];
    let mut queue = VecDeque::from([a]);
    seen[a] = true;
    while let Some(at) = queue.pop_front() {
        if at == b {
            break;
        }
        for next in 0..all.len() {
            if !seen[next] && refusals(at, next).is_empty() {
                seen[next] = true;
                previous[next] = Some(at);
                queue.push_back(next);
            }
        }
    }
    let advice = if seen[b] {
        let mut path = vec![b];
        while let Some(p) = previous[*path.last().unwrap_or(&a)] {
            path.push(p);
        }
        path.reverse();
        let steps: Vec<&str> = path[1..].iter().map(|i| all[*i].0.as_str()).collect();
        format!(
            "; go through {}: upgrade to {} first",
            steps.join(", then "),
            steps.first().copied().unwrap_or(to)
        )
    } else {
        "; no chain of releases leads there".to_string()
    };
    Err(CoreError::invalid(
        "to",
        format!(
            "release {from} to {to} is not allowed: {}{advice}",
            problems.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(name: &str, images: &[(ImageKey, &str)]) -> ReleaseSpec {
        ReleaseSpec {
            name: name.to_string(),
            images: images.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    fn base() -> ImageCatalog {
        ImageCatalog::builtin().with_keys(&BTreeMap::from([(
            ImageKey::Nextcloud,
            "nextcloud:32-apache".to_string(),
        )]))
    }

    #[test]
    fn tag_versions_are_read_from_tags_with_or_without_v_and_suffixes() {
        assert_eq!(tag_version("calcom/cal.com:v5.8.2"), Some(vec![5, 8, 2]));
        assert_eq!(tag_version("nextcloud:34-apache"), Some(vec![34]));
        assert_eq!(tag_version("registry:5000/mariadb:11.4"), Some(vec![11, 4]));
        assert_eq!(tag_version("stackbox-test/nginx:091bda112c34"), None);
        assert_eq!(tag_version("redis:alpine"), None);
        assert_eq!(tag_version("mariadb@sha256:abcd"), None);
    }

    #[test]
    fn each_release_inherits_the_images_it_does_not_change() {
        let releases = [
            release("r1", &[(ImageKey::Nextcloud, "nextcloud:33-apache")]),
            release("r2", &[(ImageKey::Calcom, "calcom/cal.com:v5.9.0")]),
        ];
        let r2 = catalog_of(&base(), &releases, "r2").unwrap();
        assert_eq!(r2.image(ImageKey::Nextcloud), "nextcloud:33-apache");
        assert_eq!(r2.image(ImageKey::Calcom), "calcom/cal.com:v5.9.0");
        let error = catalog_of(&base(), &releases, "r9")
            .unwrap_err()
            .to_string();
        assert!(error.contains("base, r1, r2"), "{error}");
    }

    #[test]
    fn nextcloud_may_not_skip_a_major_and_the_path_through_the_middle_release_is_named() {
        let releases = [
            release("r33", &[(ImageKey::Nextcloud, "nextcloud:33-apache")]),
            release("r34", &[(ImageKey::Nextcloud, "nextcloud:34-apache")]),
        ];
        let error = plan_move(&base(), &releases, BASE_RELEASE, "r34")
            .unwrap_err()
            .to_string();
        assert!(error.contains("one major version at a time"), "{error}");
        assert!(error.contains("go through r33, then r34"), "{error}");
        let step = plan_move(&base(), &releases, BASE_RELEASE, "r33").unwrap();
        assert_eq!(
            step.images,
            vec![(
                ImageKey::Nextcloud,
                "nextcloud:32-apache".to_string(),
                "nextcloud:33-apache".to_string()
            )]
        );
    }

    #[test]
    fn data_migrations_go_forward_only_but_stateless_images_may_go_back() {
        let releases = [release(
            "newer",
            &[
                (ImageKey::Espocrm, "espocrm/espocrm:10.1-apache"),
                (ImageKey::Nginx, "nginx:1.31-alpine"),
            ],
        )];
        plan_move(&base(), &releases, BASE_RELEASE, "newer").unwrap();
        let back = plan_move(&base(), &releases, "newer", BASE_RELEASE)
            .unwrap_err()
            .to_string();
        assert!(
            back.contains("espocrm migrates its data forward only"),
            "{back}"
        );
        assert!(!back.contains("nginx"), "{back}");
        assert!(back.contains("no chain of releases"), "{back}");
    }

    #[test]
    fn a_postgres_major_change_is_refused_naming_the_dump_and_restore() {
        let releases = [release(
            "pg18",
            &[(ImageKey::Postgres, "postgres:18-alpine")],
        )];
        let error = plan_move(&base(), &releases, BASE_RELEASE, "pg18")
            .unwrap_err()
            .to_string();
        assert!(error.contains("dump and a restore"), "{error}");
    }

    #[test]
    fn release_names_are_validated() {
        validate_release_name("releases.name", "2027.01-rc_1").unwrap();
        for bad in ["", "-x", "a b", &"x".repeat(41)] {
            assert!(
                validate_release_name("releases.name", bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
