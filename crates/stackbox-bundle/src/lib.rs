//! The file-system adapter for bundles.
//!
//! It keeps each client's bundle under `ROOT/clients/<client-id>/`, finds a client again by
//! id or domain (so ids and secrets are stable across renders), and replaces a bundle
//! atomically: the new folder is written beside the old one and exchanged with it in one
//! `renameat2(RENAME_EXCHANGE)`, so a reader sees the old bundle or the new one, never a mix,
//! and a failed render leaves the old one untouched.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stackbox_core::client::{ClientId, ClientSpec, Domain};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::render::{self, Bundle, Rendered, WritePolicy, CLIENT_FILE};
use stackbox_core::secrets::{RandomSource, SecretKey, Secrets};
use stackbox_core::CoreError;

/// Mode of a client folder: only the operator's user may enter it.
pub const MODE_CLIENT_DIR: u32 = 0o700;
/// Mode of folders inside a bundle, which containers mount (nginx reads `website/`).
pub const MODE_INNER_DIR: u32 = 0o755;

/// Everything that can go wrong while reading or writing bundles.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The configuration or a stored file is invalid.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`writing`, `reading`, …).
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another client already uses the domain.
    #[error("domain: {domain} already belongs to client {owner}; use another domain, or set client_id = \"{owner}\" to change that client")]
    DomainInUse { domain: String, owner: ClientId },
    /// A deploy's configuration names another release than the client runs.
    #[error(
        "release: client {client} runs release {running}; change it with `stackbox upgrade \
         {client} --to {asked}` (it takes a backup first and checks the upgrade path), or \
         leave `release` out of the file"
    )]
    ReleaseChange {
        client: ClientId,
        running: String,
        asked: String,
    },
    /// A stored bundle lacks its client.toml.
    #[error("{path} is not a StackBox bundle (no {CLIENT_FILE}); move it away or restore it")]
    NotABundle { path: PathBuf },
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buffer: &mut [u8]) {
        // getrandom fails only on systems without a usable entropy source, where no secret
        // can be made safely at all: stopping is the only correct answer.
        getrandom::fill(buffer).expect("the operating system's random source is unavailable");
    }
}

/// A client as stored in its bundle.
#[derive(Debug, Clone)]
pub struct StoredClient {
    pub id: ClientId,
    pub spec: ClientSpec,
    pub secrets: Secrets,
}

/// What rendering a client did.
#[derive(Debug)]
pub struct RenderOutcome {
    pub id: ClientId,
    pub path: PathBuf,
    /// No bundle existed before.
    pub created: bool,
    /// Secrets made in this run (new client, newly enabled app, or rotation): the only
    /// time their values may be shown.
    pub generated: BTreeSet<SecretKey>,
    pub secrets: Secrets,
    pub rendered: Rendered,
}

/// Options of a render.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Replace every secret the client needs with a new one (a bundle that was never
    /// deployed; a running client rotates with `rotate_only`).
    pub rotate_secrets: bool,
    /// Replace exactly these secrets (a running client's rotation, see
    /// `stackbox_core::secrets::rotation_keys`).
    pub rotate_only: BTreeSet<SecretKey>,
    /// Write exactly these secrets (and generate only what is missing): puts a client's
    /// previous secrets back after a rotation that failed.
    pub restore_secrets: Option<Secrets>,
    /// Move the client to this release (`stackbox upgrade`, or putting it back after an
    /// upgrade failed). Without it the client keeps the release it runs, and a new client
    /// gets the operator's newest.
    pub release: Option<String>,
}

/// The bundles under one root folder.
#[derive(Debug, Clone)]
pub struct BundleStore {
    root: PathBuf,
}

impl BundleStore {
    pub fn new(root: impl Into<PathBuf>) -> BundleStore {
        BundleStore { root: root.into() }
    }

    pub fn clients_dir(&self) -> PathBuf {
        self.root.join("clients")
    }

    pub fn client_dir(&self, id: &ClientId) -> PathBuf {
        self.clients_dir().join(id.as_str())
    }

    /// Reads a stored client, if its bundle exists.
    pub fn load(&self, id: &ClientId) -> Result<Option<StoredClient>, BundleError> {
        let dir = self.client_dir(id);
        if !dir.exists() {
            return Ok(None);
        }
        let config_path = dir.join(CLIENT_FILE);
        let text = match fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(BundleError::NotABundle { path: dir })
            }
            Err(error) => return Err(io_error("reading", &config_path)(error)),
        };
        let spec = ClientSpec::from_toml(&text).map_err(|error| match error {
            CoreError::Syntax { message, .. } => CoreError::Syntax {
                origin: config_path.display().to_string(),
                message,
            },
            other => other,
        })?;
        let env_path = dir.join(".env");
        let secrets = match fs::read_to_string(&env_path) {
            Ok(text) => render::env::parse_secrets(&text)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Secrets::new(),
            Err(error) => return Err(io_error("reading", &env_path)(error)),
        };
        Ok(Some(StoredClient {
            id: id.clone(),
            spec,
            secrets,
        }))
    }

    /// Every stored client id, sorted.
    pub fn list(&self) -> Result<Vec<ClientId>, BundleError> {
        let dir = self.clients_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error("listing", &dir)(error)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| ClientId::parse(name).ok())
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The client that owns a domain, if any.
    pub fn find_by_domain(&self, domain: &Domain) -> Result<Option<ClientId>, BundleError> {
        for id in self.list()? {
            let path = self.client_dir(&id).join(CLIENT_FILE);
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            if let Ok(spec) = ClientSpec::from_toml(&text) {
                if &spec.domain == domain {
                    return Ok(Some(id));
                }
            }
        }
        Ok(None)
    }

    /// Renders a client and writes its bundle: reuses the stored id and secrets, makes the
    /// missing ones, and replaces the bundle atomically.
    pub fn render_client(
        &self,
        spec: &ClientSpec,
        operator: &OperatorConfig,
        options: RenderOptions,
        random: &mut dyn RandomSource,
    ) -> Result<RenderOutcome, BundleError> {
        let clients = self.clients_dir();
        let created_clients_dir = !clients.exists();
        fs::create_dir_all(&clients).map_err(io_error("creating", &clients))?;
        let result = self.render_locked(spec, operator, options, random);
        if result.is_err() && created_clients_dir {
            // Leave nothing behind: the folder was ours and holds only the lock file.
            let _ = fs::remove_file(clients.join(".lock"));
            let _ = fs::remove_dir(&clients);
        }
        result
    }

    fn render_locked(
        &self,
        spec: &ClientSpec,
        operator: &OperatorConfig,
        options: RenderOptions,
        random: &mut dyn RandomSource,
    ) -> Result<RenderOutcome, BundleError> {
        let clients = self.clients_dir();
        let lock_path = clients.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error("opening", &lock_path))?;
        // One writer at a time: the domain lookup and the id assignment must not race.
        lock.lock().map_err(io_error("locking", &lock_path))?;
        self.recover_interrupted_writes()?;

        let owner_of_domain = self.find_by_domain(&spec.domain)?;
        let id = match (&spec.client_id, &owner_of_domain) {
            (Some(id), Some(owner)) if owner != id => {
                return Err(BundleError::DomainInUse {
                    domain: spec.domain.to_string(),
                    owner: owner.clone(),
                });
            }
            (Some(id), _) => id.clone(),
            (None, Some(owner)) => owner.clone(),
            (None, None) => loop {
                let mut bytes = [0u8; 4];
                random.fill(&mut bytes);
                let id = ClientId::new(&spec.company_name, u32::from_be_bytes(bytes));
                if !self.client_dir(&id).exists() {
                    break id;
                }
            },
        };
        let stored = self.load(&id)?;
        let created = stored.is_none();
        let running = stored
            .as_ref()
            .map(|client| client.spec.release.clone())
            .unwrap_or_default();
        let release = match (&options.release, &spec.release, created) {
            (Some(to), _, _) => to.clone(),
            (None, Some(asked), true) => asked.clone(),
            (None, None, true) => operator.latest_release().to_string(),
            (None, asked, false) => {
                let running = running
                    .clone()
                    .unwrap_or_else(|| stackbox_core::release::BASE_RELEASE.to_string());
                match asked {
                    Some(asked) if *asked != running => {
                        return Err(BundleError::ReleaseChange {
                            client: id,
                            running,
                            asked: asked.clone(),
                        });
                    }
                    _ => running,
                }
            }
        };
        let mut spec = ClientSpec {
            release: Some(release),
            ..spec.clone()
        };
        // A changed domain: the old one's hostnames redirect to the new one for a while.
        if let Some(stored) = &stored {
            let (today, until) = redirect_dates();
            stackbox_core::client::carry_previous_domains(&stored.spec, &mut spec, &today, &until);
        }
        let spec = &spec;
        let mut secrets = match options.restore_secrets {
            Some(secrets) => secrets,
            None => stored.map(|client| client.secrets).unwrap_or_default(),
        };
        let needed = SecretKey::needed_for(&spec.apps());
        let generated = if options.rotate_secrets {
            secrets.rotate(&needed, random);
            needed
        } else {
            let mut generated = secrets.fill_missing(&needed, random);
            secrets.rotate(&options.rotate_only, random);
            generated.extend(options.rotate_only.iter().copied());
            generated
        };
        let rendered = render::render(spec, &id, &secrets, operator)?;
        let path = self.client_dir(&id);
        self.write_bundle(&id, &rendered.bundle)?;
        drop(lock);
        Ok(RenderOutcome {
            id,
            path,
            created,
            generated,
            secrets,
            rendered,
        })
    }

    /// Removes what an interrupted write left beside the bundles. After the exchange the client
    /// folder already holds the new bundle, so a leftover `.staging-`/`.previous-` folder is
    /// either an unfinished new bundle or the replaced old one: neither is needed.
    fn recover_interrupted_writes(&self) -> Result<(), BundleError> {
        let clients = self.clients_dir();
        let entries = fs::read_dir(&clients).map_err(io_error("listing", &clients))?;
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &clients))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(".staging-") || name.starts_with(".previous-") {
                fs::remove_dir_all(entry.path()).map_err(io_error("removing", &entry.path()))?;
            }
        }
        Ok(())
    }

    /// Writes a bundle atomically (see the crate documentation).
    /// Takes the client's deploy lock (one lifecycle operation per client at a time),
    /// waiting for another holder. Released when the returned file is dropped.
    pub fn lock_client(&self, id: &ClientId) -> Result<File, BundleError> {
        // Outside the client folder: a bundle rewrite swaps that folder.
        let locks = self.root.join("locks");
        fs::create_dir_all(&locks).map_err(io_error("creating", &locks))?;
        let path = locks.join(format!("{id}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        lock.lock().map_err(io_error("locking", &path))?;
        Ok(lock)
    }

    /// Writes the shared edge router's static configuration (`ROOT/edge/traefik.yml`)
    /// atomically, unless it is already current; returns its absolute path.
    pub fn write_edge_config(&self, contents: &str) -> Result<PathBuf, BundleError> {
        let dir = std::path::absolute(self.root.join("edge"))
            .map_err(io_error("resolving", &self.root))?;
        fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        let path = dir.join("traefik.yml");
        if fs::read_to_string(&path).ok().as_deref() == Some(contents) {
            return Ok(path);
        }
        let staging = dir.join(".traefik.yml.new");
        fs::write(&staging, contents).map_err(io_error("writing", &staging))?;
        set_mode(&staging, 0o644)?;
        fs::rename(&staging, &path).map_err(io_error("replacing", &path))?;
        Ok(path)
    }

    /// The shared edge router, its configuration written under the root (`None` unless the
    /// operator's ingress is `edge`).
    pub fn edge_router(
        &self,
        operator: &OperatorConfig,
    ) -> Result<Option<stackbox_core::deploy::EdgeRouter>, BundleError> {
        if operator.ingress.edge_router_name().is_none() {
            return Ok(None);
        }
        let contents = render::traefik::render_edge();
        let path = self.write_edge_config(&contents)?;
        Ok(stackbox_core::deploy::edge_router(
            operator,
            &path.display().to_string(),
            contents.as_bytes(),
        ))
    }

    /// Deletes a client's bundle (secrets included) and its lock file: the last step of a
    /// confirmed destroy.
    pub fn remove_client(&self, id: &ClientId) -> Result<bool, BundleError> {
        let dir = self.client_dir(id);
        let existed = dir.exists();
        if existed {
            fs::remove_dir_all(&dir).map_err(io_error("removing", &dir))?;
            sync_dir(&self.clients_dir())?;
        }
        let _ = fs::remove_file(self.root.join("locks").join(format!("{id}.lock")));
        Ok(existed)
    }

    pub fn write_bundle(&self, id: &ClientId, bundle: &Bundle) -> Result<(), BundleError> {
        let clients = self.clients_dir();
        fs::create_dir_all(&clients).map_err(io_error("creating", &clients))?;
        let final_dir = self.client_dir(id);
        let staging = clients.join(format!(".staging-{id}"));
        let result = write_staging(&staging, &final_dir, bundle).and_then(|()| {
            if final_dir.exists() {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &staging,
                    rustix::fs::CWD,
                    &final_dir,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .map_err(|errno| io_error("replacing", &final_dir)(errno.into()))?;
                // `staging` now holds the previous bundle.
                let previous = clients.join(format!(".previous-{id}"));
                fs::rename(&staging, &previous).map_err(io_error("renaming", &staging))?;
                fs::remove_dir_all(&previous).map_err(io_error("removing", &previous))
            } else {
                fs::rename(&staging, &final_dir).map_err(io_error("creating", &final_dir))
            }
        });
        if result.is_err() && staging.exists() {
            let _ = fs::remove_dir_all(&staging);
        }
        result?;
        sync_dir(&clients)
    }
}

fn write_staging(staging: &Path, final_dir: &Path, bundle: &Bundle) -> Result<(), BundleError> {
    if staging.exists() {
        fs::remove_dir_all(staging).map_err(io_error("removing", staging))?;
    }
    fs::create_dir(staging).map_err(io_error("creating", staging))?;
    set_mode(staging, MODE_CLIENT_DIR)?;
    for (relative, file) in &bundle.files {
        let target = staging.join(relative);
        let parent = target.parent().expect("bundle paths are relative files");
        create_inner_dirs(staging, parent)?;
        let existing = final_dir.join(relative);
        if file.policy == WritePolicy::CreateOnly && existing.exists() {
            // Move, not copy: the running container keeps its bind mount of this inode.
            fs::rename(&existing, &target).map_err(io_error("keeping", &existing))?;
            continue;
        }
        let mut handle = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&target)
            .map_err(io_error("writing", &target))?;
        handle
            .write_all(&file.contents)
            .map_err(io_error("writing", &target))?;
        handle.sync_all().map_err(io_error("writing", &target))?;
        // `mode` at creation is filtered by the umask; set it exactly.
        set_mode(&target, file.mode)?;
    }
    sync_dir(staging)
}

fn create_inner_dirs(staging: &Path, dir: &Path) -> Result<(), BundleError> {
    if dir == staging || dir.exists() {
        return Ok(());
    }
    create_inner_dirs(staging, dir.parent().expect("inside staging"))?;
    fs::create_dir(dir).map_err(io_error("creating", dir))?;
    set_mode(dir, MODE_INNER_DIR)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BundleError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("setting the mode of", path))
}

fn sync_dir(path: &Path) -> Result<(), BundleError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing", path))
}

/// Today (UTC) and the last day a domain changed today keeps redirecting.
pub fn redirect_dates() -> (String, String) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0);
    (
        stackbox_core::client::civil_date(days),
        stackbox_core::client::civil_date(days + stackbox_core::client::DOMAIN_REDIRECT_DAYS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackbox_core::secrets::TestRandom;
    use std::os::unix::fs::MetadataExt;

    fn spec(extra: &str) -> ClientSpec {
        ClientSpec::from_toml(&format!(
            "company_name = \"Smith Real Estate\"\ndomain = \"smith.example.com\"\nplan = \"starter\"\nadmin_email = \"o@smith.example.com\"\n{extra}"
        ))
        .unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn first_render_creates_the_bundle_with_private_modes() {
        let root = tempfile::tempdir().unwrap();
        let store = BundleStore::new(root.path());
        let outcome = store
            .render_client(
                &spec(""),
                &OperatorConfig::default(),
                RenderOptions::default(),
                &mut TestRandom(1),
            )
            .unwrap();
        assert!(outcome.created);
        assert!(outcome.id.as_str().starts_with("smithrealestate-"));
        assert_eq!(mode(&outcome.path), 0o700);
        assert_eq!(mode(&outcome.path.join(".env")), 0o600);
        assert_eq!(mode(&outcome.path.join("ssl/acme.json")), 0o600);
        assert_eq!(mode(&outcome.path.join("website")), 0o755);
        assert!(outcome.generated.contains(&SecretKey::AdminPassword));
    }

    #[test]
    fn rendering_again_keeps_id_secrets_and_certificates() {
        let root = tempfile::tempdir().unwrap();
        let store = BundleStore::new(root.path());
        let operator = OperatorConfig::default();
        let first = store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions::default(),
                &mut TestRandom(1),
            )
            .unwrap();
        let acme = first.path.join("ssl/acme.json");
        fs::write(&acme, "{\"certificates\":1}").unwrap();
        let inode = fs::metadata(&acme).unwrap().ino();
        let env_before = fs::read(first.path.join(".env")).unwrap();

        let second = store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions::default(),
                &mut TestRandom(99),
            )
            .unwrap();
        assert_eq!(second.id, first.id);
        assert!(!second.created);
        assert!(second.generated.is_empty());
        assert_eq!(fs::read(second.path.join(".env")).unwrap(), env_before);
        assert_eq!(fs::read_to_string(&acme).unwrap(), "{\"certificates\":1}");
        assert_eq!(
            fs::metadata(&acme).unwrap().ino(),
            inode,
            "acme.json must keep its inode for Traefik's bind mount"
        );
        let leftovers: Vec<_> = fs::read_dir(store.clients_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            2,
            "only the client folder and the lock: {leftovers:?}"
        );
    }

    #[test]
    fn rotation_replaces_the_secrets() {
        let root = tempfile::tempdir().unwrap();
        let store = BundleStore::new(root.path());
        let operator = OperatorConfig::default();
        let first = store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions::default(),
                &mut TestRandom(1),
            )
            .unwrap();
        let second = store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions {
                    rotate_secrets: true,
                    ..RenderOptions::default()
                },
                &mut TestRandom(2),
            )
            .unwrap();
        assert_ne!(
            first.secrets.get(SecretKey::AdminPassword),
            second.secrets.get(SecretKey::AdminPassword)
        );
        assert_eq!(
            store.load(&first.id).unwrap().unwrap().secrets,
            second.secrets
        );
    }

    #[test]
    fn a_rotation_of_named_keys_replaces_only_those_and_the_old_set_can_be_written_back() {
        let root = tempfile::tempdir().unwrap();
        let store = BundleStore::new(root.path());
        let operator = OperatorConfig::default();
        let first = store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions::default(),
                &mut TestRandom(1),
            )
            .unwrap();
        let only = BTreeSet::from([SecretKey::MysqlRootPassword]);
        let rotated = store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions {
                    rotate_only: only.clone(),
                    ..RenderOptions::default()
                },
                &mut TestRandom(2),
            )
            .unwrap();
        assert_eq!(rotated.generated, only);
        for (key, value) in first.secrets.iter() {
            let now = rotated.secrets.get(key).unwrap();
            if key == SecretKey::MysqlRootPassword {
                assert_ne!(now, value);
            } else {
                assert_eq!(now, value, "{key:?} changed");
            }
        }
        store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions {
                    restore_secrets: Some(first.secrets.clone()),
                    ..RenderOptions::default()
                },
                &mut TestRandom(3),
            )
            .unwrap();
        assert_eq!(
            store.load(&first.id).unwrap().unwrap().secrets,
            first.secrets
        );
    }

    #[test]
    fn a_domain_of_another_client_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = BundleStore::new(root.path());
        let operator = OperatorConfig::default();
        store
            .render_client(
                &spec(""),
                &operator,
                RenderOptions::default(),
                &mut TestRandom(1),
            )
            .unwrap();
        let error = store
            .render_client(
                &spec("client_id = \"other-0000abcd\""),
                &operator,
                RenderOptions::default(),
                &mut TestRandom(2),
            )
            .unwrap_err();
        assert!(matches!(error, BundleError::DomainInUse { .. }), "{error}");
    }

    #[test]
    fn a_failed_write_leaves_nothing_under_root() {
        let root = tempfile::tempdir().unwrap();
        let store = BundleStore::new(root.path().join("deployments"));
        // A bundle path that cannot be created (a file where a folder must go).
        let mut bundle = Bundle::default();
        bundle.files.insert(
            "a".into(),
            render::BundleFile {
                contents: vec![],
                mode: 0o644,
                policy: WritePolicy::Replace,
            },
        );
        bundle.files.insert(
            "a/b".into(),
            render::BundleFile {
                contents: vec![],
                mode: 0o644,
                policy: WritePolicy::Replace,
            },
        );
        fs::create_dir_all(store.clients_dir()).unwrap();
        let id = ClientId::parse("smith-0000abcd").unwrap();
        assert!(store.write_bundle(&id, &bundle).is_err());
        assert_eq!(fs::read_dir(store.clients_dir()).unwrap().count(), 0);
    }
}
