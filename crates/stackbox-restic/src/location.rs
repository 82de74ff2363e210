//! Where a repository is, and the secrets that must never be printed.

use std::ffi::OsString;
use std::fmt;
use std::path::{Component, PathBuf};

use crate::error::ResticError;

/// A secret (a repository password, an S3 secret access key): `Debug` prints `[redacted]`, and
/// there is no `Display` or `Serialize`, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(value: impl Into<String>) -> Redacted {
        Redacted(value.into())
    }

    /// The secret itself, for the child process's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Redacted {
    fn from(value: String) -> Redacted {
        Redacted(value)
    }
}

impl From<&str> for Redacted {
    fn from(value: &str) -> Redacted {
        Redacted(value.to_string())
    }
}

/// Where a restic repository lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine (made absolute by [`crate::Repository::new`]).
    Local(PathBuf),
    /// Any S3-compatible endpoint. `endpoint` like "http://127.0.0.1:5000" (no trailing slash)
    /// or "https://s3.eu-west-1.amazonaws.com"; `prefix` may be empty.
    ///
    /// With an empty `access_key_id` no credentials are put in restic's environment and restic
    /// falls back to its own chain (an instance profile on EC2, `~/.aws/credentials`).
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
        region: String,
        access_key_id: String,
        secret_access_key: Redacted,
    },
}

/// The credentials [`Location::parse`] puts into an `s3:` location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Credentials {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Redacted,
}

impl Location {
    /// Reads restic's own notation: `s3:http://host:port/bucket/prefix` (`s3:host/bucket` means
    /// https, as in restic) or a plain path. Other restic backends (`sftp:`, `rest:`, `b2:`, …)
    /// are refused: this driver sets the credentials of local and S3 repositories only.
    pub fn parse(url: &str, credentials: Option<S3Credentials>) -> Result<Location, ResticError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(ResticError::invalid(
                "the repository location is empty; use a path or s3:https://host/bucket/prefix",
            ));
        }
        if let Some(rest) = url.strip_prefix("s3:") {
            let (scheme, rest) = match rest.split_once("://") {
                Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
                Some((other, _)) => {
                    return Err(ResticError::invalid(format!(
                        "the repository location {url:?} has the scheme {other:?}; an S3 \
                         endpoint is http:// or https://"
                    )))
                }
                None => ("https", rest),
            };
            let mut parts = rest.trim_matches('/').splitn(3, '/');
            let host = parts.next().unwrap_or_default();
            let bucket = parts.next().unwrap_or_default();
            let prefix = parts.next().unwrap_or_default().trim_matches('/');
            if host.is_empty() || bucket.is_empty() {
                return Err(ResticError::invalid(format!(
                    "the repository location {url:?} names no {}; use \
                     s3:https://host/bucket or s3:https://host/bucket/prefix",
                    if host.is_empty() { "host" } else { "bucket" }
                )));
            }
            let Some(credentials) = credentials else {
                return Err(ResticError::invalid(format!(
                    "the repository location {url:?} is on S3 but no S3 credentials \
                     (region, access key id, secret access key) were given"
                )));
            };
            let location = Location::S3 {
                endpoint: format!("{scheme}://{host}"),
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                region: credentials.region,
                access_key_id: credentials.access_key_id,
                secret_access_key: credentials.secret_access_key,
            };
            location.validate()?;
            return Ok(location);
        }
        if let Some((scheme, _)) = url.split_once(':') {
            let looks_like_backend = scheme.len() > 1
                && scheme.chars().all(|c| c.is_ascii_alphanumeric())
                && !url.starts_with('/')
                && !url.starts_with('.');
            if looks_like_backend {
                return Err(ResticError::invalid(format!(
                    "the repository location {url:?} uses restic's {scheme:?} backend; only \
                     local paths and s3: locations are supported"
                )));
            }
        }
        let location = Location::Local(PathBuf::from(url));
        location.validate()?;
        Ok(location)
    }

    /// The repository of one client below this location (one repository per client, so that
    /// a client's data, keys and retention never mix with another's): `dir/client_id`, or the
    /// prefix extended by `/client_id`.
    ///
    /// # Panics
    ///
    /// When `client_id` is not one plain path segment (empty, `.`, `..`, or with a `/` or `\\`):
    /// a validated client id never is; use [`Location::try_join_client`] for other input.
    pub fn join_client(&self, client_id: &str) -> Location {
        match self.try_join_client(client_id) {
            Ok(location) => location,
            Err(error) => panic!("{error}"),
        }
    }

    /// [`Location::join_client`], refusing a `client_id` that is not one plain path segment
    /// (it would name another client's repository, or the parent location itself).
    pub fn try_join_client(&self, client_id: &str) -> Result<Location, ResticError> {
        let plain = !client_id.is_empty()
            && client_id != "."
            && client_id != ".."
            && !client_id.contains(['/', '\\', '\0']);
        if !plain {
            return Err(ResticError::invalid(format!(
                "{client_id:?} cannot name a client's repository: it must be one path segment \
                 (a client id such as \"smithrealestate-e11f059b\")"
            )));
        }
        Ok(match self {
            Location::Local(dir) => Location::Local(dir.join(client_id)),
            Location::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                access_key_id,
                secret_access_key,
            } => {
                let prefix = prefix.trim_matches('/');
                let prefix = if prefix.is_empty() {
                    client_id.to_string()
                } else {
                    format!("{prefix}/{client_id}")
                };
                Location::S3 {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    prefix,
                    region: region.clone(),
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                }
            }
        })
    }

    /// What restic's `--repo` gets: the path, or `s3:<endpoint>/<bucket>[/<prefix>]`.
    pub fn repository_string(&self) -> OsString {
        match self {
            Location::Local(path) => path.clone().into_os_string(),
            Location::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => {
                let endpoint = endpoint.trim_end_matches('/');
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() {
                    format!("s3:{endpoint}/{bucket}").into()
                } else {
                    format!("s3:{endpoint}/{bucket}/{prefix}").into()
                }
            }
        }
    }

    /// The secrets restic's output is scrubbed of.
    pub(crate) fn secret(&self) -> Option<&str> {
        match self {
            Location::Local(_) => None,
            Location::S3 {
                secret_access_key, ..
            } => Some(secret_access_key.expose()),
        }
    }

    /// Refuses what restic would misread, or what would leave the client's own repository.
    pub(crate) fn validate(&self) -> Result<(), ResticError> {
        match self {
            Location::Local(path) => {
                if path.as_os_str().is_empty() {
                    return Err(ResticError::invalid(
                        "the local repository path is empty; use a directory such as \
                         /var/lib/stackbox/backups/<client>",
                    ));
                }
                if path.components().any(|c| c == Component::ParentDir) {
                    return Err(ResticError::invalid(format!(
                        "the local repository path {} contains `..`; use a path without it",
                        path.display()
                    )));
                }
                Ok(())
            }
            Location::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => {
                let endpoint = endpoint.trim_end_matches('/');
                let host = endpoint
                    .strip_prefix("http://")
                    .or_else(|| endpoint.strip_prefix("https://"));
                if host.is_none_or(|host| host.is_empty() || host.contains('/')) {
                    return Err(ResticError::invalid(format!(
                        "the S3 endpoint {endpoint:?} is not http://host[:port] or \
                         https://host[:port] (no path: the bucket and prefix are separate)"
                    )));
                }
                if bucket.is_empty() || bucket.contains('/') {
                    return Err(ResticError::invalid(format!(
                        "the S3 bucket {bucket:?} is not a bucket name (non-empty, without `/`)"
                    )));
                }
                let prefix = prefix.trim_matches('/');
                if !prefix.is_empty()
                    && prefix
                        .split('/')
                        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
                {
                    return Err(ResticError::invalid(format!(
                        "the S3 prefix {prefix:?} has an empty, `.` or `..` segment"
                    )));
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Location {
    /// The repository string as restic prints it (it holds no secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository_string().to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> S3Credentials {
        S3Credentials {
            region: "eu-west-1".to_string(),
            access_key_id: "AKIA".to_string(),
            secret_access_key: Redacted::new("very-secret"),
        }
    }

    #[test]
    fn redacted_debug_never_shows_the_secret() {
        let secret = Redacted::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn s3_location_debug_redacts_the_secret_access_key() {
        let location =
            Location::parse("s3:http://127.0.0.1:5000/bucket/pre", Some(credentials())).unwrap();
        let debug = format!("{location:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }

    #[test]
    fn parse_reads_an_s3_url_with_endpoint_bucket_and_nested_prefix() {
        let location = Location::parse(
            "s3:http://127.0.0.1:5000/bucket/some/prefix/",
            Some(credentials()),
        )
        .unwrap();
        let Location::S3 {
            endpoint,
            bucket,
            prefix,
            region,
            ..
        } = &location
        else {
            panic!("not S3: {location:?}")
        };
        assert_eq!(endpoint, "http://127.0.0.1:5000");
        assert_eq!(bucket, "bucket");
        assert_eq!(prefix, "some/prefix");
        assert_eq!(region, "eu-west-1");
        assert_eq!(
            location.repository_string(),
            "s3:http://127.0.0.1:5000/bucket/some/prefix"
        );
    }

    #[test]
    fn parse_reads_an_s3_url_without_scheme_as_https_and_without_prefix() {
        let location =
            Location::parse("s3:s3.eu-west-1.amazonaws.com/bucket", Some(credentials())).unwrap();
        assert_eq!(
            location.repository_string(),
            "s3:https://s3.eu-west-1.amazonaws.com/bucket"
        );
    }

    #[test]
    fn parse_refuses_s3_without_bucket_or_credentials_and_other_backends() {
        assert!(Location::parse("s3:http://127.0.0.1:5000", Some(credentials())).is_err());
        assert!(Location::parse("s3:http://127.0.0.1:5000/bucket", None).is_err());
        assert!(Location::parse("s3:ftp://host/bucket", Some(credentials())).is_err());
        assert!(Location::parse("sftp:host:/srv/restic", None).is_err());
        assert!(Location::parse("rest:http://host/", None).is_err());
        assert!(Location::parse("", None).is_err());
        assert!(Location::parse("/srv/../etc", None).is_err());
    }

    #[test]
    fn parse_reads_plain_paths_as_local() {
        assert_eq!(
            Location::parse("/var/lib/stackbox/backups", None).unwrap(),
            Location::Local(PathBuf::from("/var/lib/stackbox/backups"))
        );
        assert_eq!(
            Location::parse("./backups", None).unwrap(),
            Location::Local(PathBuf::from("./backups"))
        );
    }

    #[test]
    fn join_client_appends_the_client_id_to_a_local_dir_or_an_s3_prefix() {
        let local = Location::Local(PathBuf::from("/srv/backups"));
        assert_eq!(
            local.join_client("acme-0badcafe"),
            Location::Local(PathBuf::from("/srv/backups/acme-0badcafe"))
        );
        let s3 = Location::parse("s3:http://h:1/b/pre", Some(credentials())).unwrap();
        assert_eq!(
            s3.join_client("acme-0badcafe").repository_string(),
            "s3:http://h:1/b/pre/acme-0badcafe"
        );
        let bare = Location::parse("s3:http://h:1/b", Some(credentials())).unwrap();
        assert_eq!(
            bare.join_client("acme-0badcafe").repository_string(),
            "s3:http://h:1/b/acme-0badcafe"
        );
    }

    #[test]
    fn try_join_client_refuses_ids_that_are_not_one_path_segment() {
        let local = Location::Local(PathBuf::from("/srv/backups"));
        let s3 = Location::parse("s3:http://h:1/b/pre", Some(credentials())).unwrap();
        for bad in ["", ".", "..", "a/b", "../other", "a\\b"] {
            assert!(local.try_join_client(bad).is_err(), "{bad:?}");
            assert!(s3.try_join_client(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    #[should_panic(expected = "one path segment")]
    fn join_client_panics_on_a_traversing_id() {
        Location::Local(PathBuf::from("/srv/backups")).join_client("..");
    }
}
