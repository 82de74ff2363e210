//! The master key, sealing a client's secrets, API tokens, and random ids.
//!
//! Secrets are sealed with XChaCha20-Poly1305: its 192-bit nonce can be drawn at random for
//! every write without any counter to keep (a random 96-bit AES-GCM nonce would be fine for our
//! volumes too, but the margin costs nothing), and it needs no AES hardware.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use stackbox_core::client::ClientId;
use stackbox_core::secrets::{SecretKey, Secrets};
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::model::{MailBody, MailId};

/// The environment variable that may hold the master key (see [`MasterKey::parse`]).
pub const MASTER_KEY_ENV: &str = "STACKBOX_MASTER_KEY";

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// The first byte of every sealed blob: its layout and algorithm, so a later format can be told
/// apart and old blobs still read.
const SEALED_FORMAT_V1: u8 = 1;

/// The 32-byte key that encrypts every client's secrets at rest.
///
/// `Debug` shows nothing of the key and there is no `Display`; the bytes are wiped from memory
/// when the key is dropped. [`MasterKey::fingerprint`] identifies a key without revealing it.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; KEY_BYTES]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Result<MasterKey, StoreError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(bytes.as_mut_slice())?;
        Ok(MasterKey(bytes))
    }

    /// Parses a key written as 64 hexadecimal digits (either case) or as standard Base64 (RFC
    /// 4648 §4, with or without `=` padding), the form [`MasterKey::load_or_create`] writes.
    /// The two are told apart by length (64 against 43 or 44 characters). Surrounding
    /// whitespace is ignored. The error never repeats the text.
    pub fn parse(text: &str) -> Result<MasterKey, StoreError> {
        MasterKey::parse_from(text, "the given text")
    }

    /// The key in [`MASTER_KEY_ENV`], if that variable is set.
    pub fn from_env() -> Option<Result<MasterKey, StoreError>> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(text) => Some(MasterKey::parse_from(&Zeroizing::new(text), MASTER_KEY_ENV)),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => Some(Err(StoreError::InvalidMasterKey {
                origin: MASTER_KEY_ENV.to_string(),
                problem: "it is not valid UTF-8",
            })),
        }
    }

    fn parse_from(text: &str, origin: &str) -> Result<MasterKey, StoreError> {
        let invalid = |problem| StoreError::InvalidMasterKey {
            origin: origin.to_string(),
            problem,
        };
        let text = text.trim();
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        if text.len() == 2 * KEY_BYTES {
            let not_hex = || invalid("it has 64 characters but not all are hexadecimal digits");
            for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
                let high = hex_digit(pair[0]).ok_or_else(not_hex)?;
                let low = hex_digit(pair[1]).ok_or_else(not_hex)?;
                *byte = (high << 4) | low;
            }
            return Ok(MasterKey(bytes));
        }
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| invalid("it is neither 64 hexadecimal digits nor Base64"))?,
        );
        if decoded.len() != KEY_BYTES {
            return Err(invalid("it does not hold exactly 32 bytes"));
        }
        bytes.copy_from_slice(&decoded);
        Ok(MasterKey(bytes))
    }

    /// Reads the key from `path`, or, when no file is there, creates one with a new random key
    /// (mode 0600, its folder created 0700 if missing). Returns whether it was created, so the
    /// caller can tell the operator to back it up.
    ///
    /// The new file is written completely under a temporary name and then linked into place,
    /// which fails if another process created the key meanwhile: two servers starting at once
    /// end up with the same key, and a crash never leaves a half-written key file.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), StoreError> {
        match MasterKey::load(path) {
            Ok(key) => return Ok((key, false)),
            Err(StoreError::MasterKeyFile { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let file_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::MasterKeyFile { path, source }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(file_error(parent))?;
        }
        let key = MasterKey::generate()?;
        let temporary = temporary_sibling(path)?;
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(key.to_base64().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(StoreError::MasterKeyFile {
                path: temporary,
                source,
            });
        }
        let linked = std::fs::hard_link(&temporary, path);
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                // The new name must survive a crash too.
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::File::open(parent)
                        .and_then(|dir| dir.sync_all())
                        .map_err(file_error(parent))?;
                }
                Ok((key, true))
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((MasterKey::load(path)?, false))
            }
            Err(source) => Err(StoreError::MasterKeyFile {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads a key file (the format of [`MasterKey::parse`]).
    pub fn load(path: &Path) -> Result<MasterKey, StoreError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            StoreError::MasterKeyFile {
                path: path.to_path_buf(),
                source,
            }
        })?);
        MasterKey::parse_from(&text, &path.display().to_string())
    }

    /// The key in standard Base64, for a backup or for `STACKBOX_MASTER_KEY`.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_slice()))
    }

    /// 16 hex digits that identify the key without revealing it (a truncated SHA-256 of a
    /// label and the key): safe to log, and what the store records to notice a wrong key.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"stackbox master key fingerprint v1\0")
            .chain_update(self.0.as_slice())
            .finalize();
        hex(&digest[..8])
    }

    /// Seals `plaintext` for storage elsewhere (the backup adapter's blobs): format byte,
    /// random 24-byte nonce, then XChaCha20-Poly1305 ciphertext and tag, as secrets are sealed.
    /// `associated` is authenticated but not encrypted: pass what the blob belongs to (such as
    /// a client id and a purpose), so a blob moved elsewhere does not open. It is kept apart
    /// from the store's own blobs (a label is prepended), so a blob sealed here never opens as
    /// a client's secrets or backup key, nor the other way round.
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal_blob(self, plaintext, &blob_associated_data(associated))?
            .ok_or(StoreError::EncryptBlob)
    }

    /// Opens a blob made by [`MasterKey::seal`] with the same key and `associated` data; the
    /// plaintext is wiped from memory when dropped. Another key, other associated data or an
    /// altered blob fail with [`StoreError::DecryptBlob`], which says nothing of the content.
    pub fn open(&self, sealed: &[u8], associated: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        open_blob(self, sealed, &blob_associated_data(associated)).ok_or(StoreError::DecryptBlob)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_slice().into())
    }
}

/// The associated data of a blob sealed by [`MasterKey::seal`]: a label of its own, then the
/// caller's bytes. Each kind of blob has a different label followed by a NUL, so no caller's
/// associated data makes a blob that opens as another kind.
fn blob_associated_data(associated: &[u8]) -> Vec<u8> {
    let mut aad = format!("stackbox blob v{SEALED_FORMAT_V1}\0").into_bytes();
    aad.extend_from_slice(associated);
    aad
}

/// The associated data of a client's sealed backup repository key: not the secrets' (another
/// label), so a client's secrets blob copied into its backup key row does not open.
fn backup_key_associated_data(client: &ClientId) -> Vec<u8> {
    format!("stackbox backup key v{SEALED_FORMAT_V1}\0{client}").into_bytes()
}

/// Seals a client's backup repository key.
pub(crate) fn seal_backup_key(
    key: &MasterKey,
    client: &ClientId,
    repository_key: &str,
) -> Result<Vec<u8>, StoreError> {
    seal_blob(
        key,
        repository_key.as_bytes(),
        &backup_key_associated_data(client),
    )?
    .ok_or_else(|| StoreError::EncryptBackupKey {
        client: client.clone(),
    })
}

/// Opens a backup repository key sealed by [`seal_backup_key`] for the same client.
pub(crate) fn open_backup_key(
    key: &MasterKey,
    client: &ClientId,
    blob: &[u8],
) -> Result<Zeroizing<String>, StoreError> {
    let failed = || StoreError::DecryptBackupKey {
        client: client.clone(),
    };
    let mut plaintext =
        open_blob(key, blob, &backup_key_associated_data(client)).ok_or_else(failed)?;
    // Moved, not copied, into the string; a failed conversion hands the bytes back to be
    // wiped.
    match String::from_utf8(std::mem::take(&mut *plaintext)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(error) => {
            drop(Zeroizing::new(error.into_bytes()));
            Err(failed())
        }
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn temporary_sibling(path: &Path) -> Result<PathBuf, StoreError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", random_hex(8)?));
    Ok(path.with_file_name(name))
}

/// The associated data of a client's sealed secrets: the format and the client id, so a blob
/// copied to another client's row (or read as another format) fails authentication.
fn associated_data(client: &ClientId) -> Vec<u8> {
    format!("stackbox secrets v{SEALED_FORMAT_V1}\0{client}").into_bytes()
}

/// Seals a client's secrets into one blob: format byte, random nonce, ciphertext and tag.
/// The plaintext is a JSON object of `.env` names to values, wiped after use.
pub(crate) fn seal_secrets(
    key: &MasterKey,
    client: &ClientId,
    secrets: &Secrets,
) -> Result<Vec<u8>, StoreError> {
    let map: std::collections::BTreeMap<&str, &str> = secrets
        .iter()
        .map(|(name, value)| (name.env_name(), value))
        .collect();
    let plaintext =
        Zeroizing::new(
            serde_json::to_vec(&map).map_err(|error| StoreError::SecretsFormat {
                client: client.clone(),
                problem: error.to_string(),
            })?,
        );
    seal_blob(key, &plaintext, &associated_data(client))?.ok_or_else(|| StoreError::Encrypt {
        client: client.clone(),
    })
}

/// Opens a blob sealed by [`seal_secrets`] for the same client with the same key.
pub(crate) fn open_secrets(
    key: &MasterKey,
    client: &ClientId,
    blob: &[u8],
) -> Result<Secrets, StoreError> {
    let decrypt_error = || StoreError::Decrypt {
        client: client.clone(),
    };
    let plaintext = open_blob(key, blob, &associated_data(client)).ok_or_else(decrypt_error)?;
    let format_error = |problem: String| StoreError::SecretsFormat {
        client: client.clone(),
        problem,
    };
    // serde_json's messages name positions and types, never the values they failed on.
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&plaintext).map_err(|error| format_error(error.to_string()))?;
    let mut secrets = Secrets::new();
    for (name, value) in map {
        let key = SecretKey::from_env_name(&name)
            .ok_or_else(|| format_error(format!("unknown secret name {name:?}")))?;
        secrets.insert(key, value);
    }
    Ok(secrets)
}

/// Seals `plaintext` under `aad`: format byte, random nonce, ciphertext and tag. `None` only
/// if the cipher refuses (a message too long for it).
fn seal_blob(key: &MasterKey, plaintext: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)?;
    let Ok(ciphertext) = key.cipher().encrypt(
        XNonce::from_slice(&nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) else {
        return Ok(None);
    };
    let mut blob = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
    blob.push(SEALED_FORMAT_V1);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ciphertext);
    Ok(Some(blob))
}

/// Opens a blob sealed by [`seal_blob`] under the same key and `aad`; `None` if it does not
/// authenticate (another key, another `aad`, or altered bytes).
fn open_blob(key: &MasterKey, blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (format, rest) = blob.split_first()?;
    if *format != SEALED_FORMAT_V1 || rest.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
    key.cipher()
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// A mail's bodies as sealed: one JSON object, so text and HTML cannot be swapped or cut.
#[derive(serde::Serialize, serde::Deserialize)]
struct MailPlaintext<'a> {
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    html: std::borrow::Cow<'a, str>,
}

/// The associated data of a mail's sealed bodies: the format and the mail id, so a blob copied
/// to another mail's row does not open.
fn mail_associated_data(mail: &MailId) -> Vec<u8> {
    format!("stackbox mail v{SEALED_FORMAT_V1}\0{mail}").into_bytes()
}

/// Seals a mail's text and HTML bodies (the mail id as associated data).
pub(crate) fn seal_mail(
    key: &MasterKey,
    mail: &MailId,
    text: &str,
    html: &str,
) -> Result<Vec<u8>, StoreError> {
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&MailPlaintext {
            text: text.into(),
            html: html.into(),
        })
        .map_err(|_| StoreError::EncryptMail { mail: mail.clone() })?,
    );
    seal_blob(key, &plaintext, &mail_associated_data(mail))?
        .ok_or_else(|| StoreError::EncryptMail { mail: mail.clone() })
}

/// Opens a mail's bodies sealed by [`seal_mail`] for the same mail with the same key.
pub(crate) fn open_mail(
    key: &MasterKey,
    mail: &MailId,
    blob: &[u8],
) -> Result<MailBody, StoreError> {
    let failed = || StoreError::DecryptMail { mail: mail.clone() };
    let plaintext = open_blob(key, blob, &mail_associated_data(mail)).ok_or_else(failed)?;
    let parsed: MailPlaintext<'_> = serde_json::from_slice(&plaintext).map_err(|_| failed())?;
    Ok(MailBody::new(
        parsed.text.into_owned(),
        parsed.html.into_owned(),
    ))
}

/// The prefix of every API token, so a leaked one is recognisable (and secret scanners can
/// match it).
pub const TOKEN_PREFIX: &str = "sbx_";
const TOKEN_RANDOM_BYTES: usize = 32;
const TOKEN_LENGTH: usize = 4 + 43;

/// A new token: the prefix and 32 random bytes in unpadded Base64url (256 bits).
pub(crate) fn new_token() -> Result<Zeroizing<String>, StoreError> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_RANDOM_BYTES]);
    getrandom::fill(bytes.as_mut_slice())?;
    let mut token = Zeroizing::new(String::with_capacity(TOKEN_LENGTH));
    token.push_str(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut token);
    Ok(token)
}

/// Whether the text has a token's shape; anything else cannot verify and is not looked up.
pub(crate) fn looks_like_token(text: &str) -> bool {
    text.len() == TOKEN_LENGTH
        && text.starts_with(TOKEN_PREFIX)
        && text[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the store keeps of a token. A plain SHA-256 is enough (no salt, no slow hash): the
/// token is 256 random bits, so there is nothing to guess, and the hash must be deterministic
/// to be looked up.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

const LINK_TOKEN_RANDOM_BYTES: usize = 32;
const LINK_TOKEN_LENGTH: usize = 43;

/// A new credential link token: 32 random bytes in unpadded Base64url (256 bits), with no
/// prefix so it reads as one path segment of a URL.
pub(crate) fn new_link_token() -> Result<Zeroizing<String>, StoreError> {
    let mut bytes = Zeroizing::new([0u8; LINK_TOKEN_RANDOM_BYTES]);
    getrandom::fill(bytes.as_mut_slice())?;
    let mut token = Zeroizing::new(String::with_capacity(LINK_TOKEN_LENGTH));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut token);
    Ok(token)
}

/// Whether the text has a link token's shape; anything else is not looked up.
pub(crate) fn looks_like_link_token(text: &str) -> bool {
    text.len() == LINK_TOKEN_LENGTH
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Random lowercase hex digits from the OS CSPRNG.
pub(crate) fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)?;
    Ok(hex(&buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_key_reads_the_same_from_hex_and_from_base64() {
        let key = MasterKey::generate().unwrap();
        let base64 = key.to_base64();
        let from_base64 = MasterKey::parse(&base64).unwrap();
        let unpadded = MasterKey::parse(base64.trim_end_matches('=')).unwrap();
        let mut hex_text = hex(key.0.as_slice());
        let from_hex = MasterKey::parse(&hex_text).unwrap();
        hex_text.make_ascii_uppercase();
        let from_upper_hex = MasterKey::parse(&format!("  {hex_text}\n")).unwrap();
        for parsed in [from_base64, unpadded, from_hex, from_upper_hex] {
            assert_eq!(parsed.0.as_slice(), key.0.as_slice());
        }
    }

    #[test]
    fn a_malformed_master_key_is_refused_without_repeating_it() {
        for text in [
            "",
            "tooshort",
            "zz00000000000000000000000000000000000000000000000000000000000000",
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
        ] {
            let error = MasterKey::parse(text).unwrap_err().to_string();
            assert!(error.contains("not valid"), "{error}");
            if !text.is_empty() {
                assert!(!error.contains(text), "{error}");
            }
        }
    }

    #[test]
    fn each_kind_of_sealed_blob_has_associated_data_no_other_kind_can_have() {
        let client = ClientId::parse("acme-0000002a").unwrap();
        let labels = [
            associated_data(&client),
            mail_associated_data(&MailId::parse("mail_0000000000000000000000000000").unwrap()),
            backup_key_associated_data(&client),
            blob_associated_data(b""),
        ];
        // Each label (up to its NUL) is no other's prefix, so appended bytes cannot make one
        // kind's associated data equal another's.
        let prefixes: Vec<&[u8]> = labels
            .iter()
            .map(|aad| &aad[..=aad.iter().position(|b| *b == 0).unwrap()])
            .collect();
        for (i, a) in prefixes.iter().enumerate() {
            for (j, b) in prefixes.iter().enumerate() {
                if i != j {
                    assert!(!a.starts_with(b), "{i} and {j}");
                }
            }
        }
    }

    #[test]
    fn tokens_have_their_prefix_length_and_alphabet() {
        let token = new_token().unwrap();
        assert!(looks_like_token(&token), "{}", token.as_str());
        assert!(!looks_like_token(&token[1..]));
        assert!(!looks_like_token(&format!(
            "{}!",
            &token[..token.len() - 1]
        )));
    }
}
