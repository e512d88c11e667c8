//! The server signing key.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::now_ms;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use kith_storage::{Storage, catalog};
use ruma::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use serde::{Deserialize, Serialize};

/// The `global_value` key holding the signing key.
const SIGNING_KEY: &str = "signing_key";

/// How long other servers may cache our key document.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Storage(#[from] kith_storage::Error),
    #[error("stored signing key is unreadable: {0}")]
    Corrupt(String),
    #[error("signing key file {0}: {1}")]
    File(String, String),
}

/// Writes a secret to `path`, readable by its owner only: written beside it, synced, then
/// renamed over it and the directory synced, so a crash leaves the old file or the new
/// one, never half of one, and once this returns the new one is on disk.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".writing");
    let temporary = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    let directory = path.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::File::open(directory.unwrap_or(Path::new(".")))?.sync_all()
}

/// The trimmed contents of a secret file; `None` if it does not exist or is empty.
pub fn read_secret_file(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The PKCS#8 header of an Ed25519 private key (RFC 8410); the 32-byte seed follows it.
const PKCS8_ED25519: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A key as Synapse keeps it in its signing key file: `ed25519 <version> <seed, base64>`.
fn synapse_line(version: &str, pkcs8: &[u8]) -> Result<String, KeyError> {
    // Both PKCS#8 forms (with and without the public key) put the seed at bytes 16..48.
    let seed = pkcs8
        .get(16..48)
        .filter(|_| pkcs8[12..16] == PKCS8_ED25519[12..16])
        .ok_or_else(|| KeyError::Corrupt("not an Ed25519 PKCS#8 document".into()))?;
    Ok(format!(
        "ed25519 {version} {}\n",
        STANDARD_NO_PAD.encode(seed)
    ))
}

/// The version and PKCS#8 document of a key in Synapse's format.
fn parse_synapse_line(line: &str) -> Result<(String, Vec<u8>), String> {
    let mut fields = line.split_whitespace();
    let (Some("ed25519"), Some(version), Some(seed)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err("expected `ed25519 <version> <base64 seed>`".into());
    };
    let seed = STANDARD_NO_PAD
        .decode(seed.trim_end_matches('='))
        .map_err(|e| format!("the seed is not base64: {e}"))?;
    if seed.len() != 32 || version.is_empty() {
        return Err("the seed must be 32 bytes and the version not empty".into());
    }
    let mut document = PKCS8_ED25519.to_vec();
    document.extend_from_slice(&seed);
    Ok((version.to_owned(), document))
}

/// The key as stored: its version name, its PKCS#8 document (empty when the key lives in a
/// file of its own) and public key, and the keys it replaced.
#[derive(Serialize, Deserialize, PartialEq)]
struct StoredKey {
    version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pkcs8: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    public_key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    old: Vec<OldKey>,
}

/// A key this server signed with before: still published (`old_verify_keys`), so what it
/// signed then still verifies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OldKey {
    pub version: String,
    /// Unpadded standard base64.
    pub public_key: String,
    pub expired_ts: u64,
}

/// The server's identity: its name, its current signing key and its retired ones.
pub struct ServerKeys {
    server_name: String,
    key_pair: Ed25519KeyPair,
    old: Vec<OldKey>,
}

/// A new key pair's PKCS#8 document and its version name (from the public key, so stable
/// and unique without another source of randomness).
fn new_key() -> Result<(String, Vec<u8>), KeyError> {
    let document = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&document, String::new())
        .map_err(|e| KeyError::Corrupt(e.to_string()))?;
    Ok((
        format!("k{}", hex_prefix(&probe.public_key())),
        document.to_vec(),
    ))
}

fn key_pair(version: &str, document: &[u8]) -> Result<Ed25519KeyPair, KeyError> {
    Ed25519KeyPair::from_der(document, version.to_owned())
        .map_err(|e| KeyError::Corrupt(e.to_string()))
}

impl ServerKeys {
    /// Loads the signing key from the database, generating and storing one on first start.
    pub fn load_or_generate(storage: &Storage, server_name: &str) -> Result<ServerKeys, KeyError> {
        ServerKeys::load(storage, server_name, None)
    }

    /// Loads the signing key: from `file` if given (Synapse's format, so a Synapse key can
    /// be brought along; the database's key is moved there the first time, or a new one
    /// made), else from the database, generating one on first start. With a file, the
    /// database keeps the key's version and public half, and the retired keys; a key it
    /// held that the file no longer has is retired, so what it signed still verifies.
    pub fn load(
        storage: &Storage,
        server_name: &str,
        file: Option<&Path>,
    ) -> Result<ServerKeys, KeyError> {
        let stored: Option<StoredKey> = storage.get(&catalog::GLOBAL_VALUE, &SIGNING_KEY)?;
        let in_database = |s: &StoredKey| -> Result<Option<Vec<u8>>, KeyError> {
            match s.pkcs8.is_empty() {
                true => Ok(None),
                false => STANDARD_NO_PAD
                    .decode(&s.pkcs8)
                    .map(Some)
                    .map_err(|e| KeyError::Corrupt(e.to_string())),
            }
        };
        let ((version, document), mut old) = match (file, &stored) {
            (None, Some(s)) => {
                let document = in_database(s)?.ok_or_else(|| {
                    KeyError::Corrupt(
                        "the signing key is in a file: set [federation] signing_key_path".into(),
                    )
                })?;
                ((s.version.clone(), document), s.old.clone())
            }
            (None, None) => (new_key()?, Vec::new()),
            (Some(path), _) => {
                let unreadable = |e: String| KeyError::File(path.display().to_string(), e);
                let key = match read_secret_file(path).map_err(|e| unreadable(e.to_string()))? {
                    Some(line) => parse_synapse_line(&line).map_err(unreadable)?,
                    // Moved there before: a missing file is a mistake (a volume not
                    // mounted), not a reason to become another server.
                    None if stored.as_ref().is_some_and(|s| s.pkcs8.is_empty()) => {
                        return Err(unreadable("missing, and the key was kept there".into()));
                    }
                    None => {
                        let key = match stored.as_ref().map(in_database).transpose()?.flatten() {
                            Some(document) => (
                                stored
                                    .as_ref()
                                    .map(|s| s.version.clone())
                                    .unwrap_or_default(),
                                document,
                            ),
                            None => new_key()?,
                        };
                        let line = synapse_line(&key.0, &key.1)?;
                        write_private_file(path, line.as_bytes())
                            .map_err(|e| unreadable(e.to_string()))?;
                        tracing::info!(file = %path.display(), "the server signing key is kept in its own file");
                        key
                    }
                };
                (
                    key,
                    stored.as_ref().map(|s| s.old.clone()).unwrap_or_default(),
                )
            }
        };
        let pair = key_pair(&version, &document)?;
        if let Some(s) = stored.as_ref().filter(|s| s.version != version) {
            let public_key = match in_database(s)? {
                Some(document) => {
                    STANDARD_NO_PAD.encode(key_pair(&s.version, &document)?.public_key())
                }
                None => s.public_key.clone(),
            };
            if !public_key.is_empty() && !old.iter().any(|o| o.version == s.version) {
                old.push(OldKey {
                    version: s.version.clone(),
                    public_key,
                    expired_ts: now_ms(),
                });
            }
        }
        let record = StoredKey {
            version: version.clone(),
            pkcs8: match file {
                Some(_) => String::new(),
                None => STANDARD_NO_PAD.encode(&document),
            },
            public_key: STANDARD_NO_PAD.encode(pair.public_key()),
            old: old.clone(),
        };
        if stored.as_ref() != Some(&record) {
            let mut batch = storage.batch();
            batch.put(&catalog::GLOBAL_VALUE, &SIGNING_KEY, &record)?;
            storage.commit_blocking(batch)?;
            if stored.is_none() {
                tracing::info!(key = %version, "generated a new server signing key");
            }
        }
        Ok(ServerKeys {
            server_name: server_name.to_owned(),
            key_pair: pair,
            old,
        })
    }

    /// Replaces the signing key with a new one (the server uses it from its next start);
    /// the old one is kept as retired now. Returns the new key's ID.
    pub fn rotate(
        storage: &Storage,
        server_name: &str,
        file: Option<&Path>,
    ) -> Result<String, KeyError> {
        ServerKeys::load(storage, server_name, file)?;
        let (version, document) = new_key()?;
        match file {
            // The file first: loading then finds the database's key gone from it, and
            // retires it.
            Some(path) => {
                let line = synapse_line(&version, &document)?;
                write_private_file(path, line.as_bytes())
                    .map_err(|e| KeyError::File(path.display().to_string(), e.to_string()))?;
            }
            None => {
                let mut record: StoredKey = storage
                    .get(&catalog::GLOBAL_VALUE, &SIGNING_KEY)?
                    .ok_or_else(|| KeyError::Corrupt("no signing key".into()))?;
                let previous = key_pair(
                    &record.version,
                    &STANDARD_NO_PAD
                        .decode(&record.pkcs8)
                        .map_err(|e| KeyError::Corrupt(e.to_string()))?,
                )?;
                record.old.push(OldKey {
                    version: record.version.clone(),
                    public_key: STANDARD_NO_PAD.encode(previous.public_key()),
                    expired_ts: now_ms(),
                });
                record.version = version.clone();
                record.pkcs8 = STANDARD_NO_PAD.encode(&document);
                record.public_key =
                    STANDARD_NO_PAD.encode(key_pair(&version, &document)?.public_key());
                let mut batch = storage.batch();
                batch.put(&catalog::GLOBAL_VALUE, &SIGNING_KEY, &record)?;
                storage.commit_blocking(batch)?;
            }
        }
        // Settles the database's record (with a file, retiring the key it replaced).
        ServerKeys::load(storage, server_name, file)?;
        tracing::info!(key = %version, "rotated the server signing key");
        Ok(format!("ed25519:{version}"))
    }

    /// The keys this server signed with before.
    pub fn old_keys(&self) -> &[OldKey] {
        &self.old
    }

    pub(crate) fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.key_pair.version())
    }

    /// The public key, unpadded standard base64 as Matrix writes keys.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.key_pair.public_key())
    }

    /// The self-signed key document for `GET /_matrix/key/v2/server`.
    pub fn key_document(&self) -> CanonicalJsonObject {
        let valid_until = SystemTime::now() + KEY_VALIDITY;
        let valid_until_ts = valid_until
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let document = serde_json::json!({
            "server_name": self.server_name,
            "valid_until_ts": valid_until_ts,
            "verify_keys": { self.key_id(): { "key": self.public_key_base64() } },
            "old_verify_keys": self.old.iter().map(|old| {
                (format!("ed25519:{}", old.version), serde_json::json!({
                    "key": old.public_key, "expired_ts": old.expired_ts,
                }))
            }).collect::<serde_json::Map<String, serde_json::Value>>(),
        });
        let mut object: CanonicalJsonObject = match serde_json::from_value(document) {
            Ok(object) => object,
            Err(_) => unreachable!("a fixed JSON object with small integers is canonical"),
        };
        // Signing a well-formed object only fails on malformed `signatures`, which it has not.
        let _ = ruma::signatures::sign_json(&self.server_name, &self.key_pair, &mut object);
        object
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The key moves from the database into its own file (0600, Synapse's format), the
    /// database then holds no private key; a Synapse key put in the file replaces it and
    /// the one before is retired; rotating writes the file.
    #[test]
    fn a_key_file_takes_the_key_over_and_retired_keys_stay_published() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("db")).unwrap();
        let first = ServerKeys::load(&storage, "kith.test", None).unwrap();
        let path = dir.path().join("signing.key");
        let filed = ServerKeys::load(&storage, "kith.test", Some(&path)).unwrap();
        assert_eq!(filed.key_id(), first.key_id());
        assert_eq!(filed.public_key_base64(), first.public_key_base64());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(&format!("ed25519 {} ", &first.key_id()[8..])),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            ServerKeys::load(&storage, "kith.test", None).is_err(),
            "no private key left in the database"
        );

        let seed = STANDARD_NO_PAD.encode([7u8; 32]);
        std::fs::write(&path, format!("ed25519 a_syn {seed}\n")).unwrap();
        let synapse = ServerKeys::load(&storage, "kith.test", Some(&path)).unwrap();
        assert_eq!(synapse.key_id(), "ed25519:a_syn");
        assert!(
            synapse
                .old_keys()
                .iter()
                .any(|o| o.version == first.key_id()[8..]
                    && o.public_key == first.public_key_base64())
        );

        let rotated = ServerKeys::rotate(&storage, "kith.test", Some(&path)).unwrap();
        let now = ServerKeys::load(&storage, "kith.test", Some(&path)).unwrap();
        assert_eq!(now.key_id(), rotated);
        let retired: Vec<_> = now.old_keys().iter().map(|o| o.version.as_str()).collect();
        assert_eq!(retired, [&first.key_id()[8..], "a_syn"]);
        std::fs::write(&path, "ed25519 nonsense").unwrap();
        assert!(ServerKeys::load(&storage, "kith.test", Some(&path)).is_err());
    }

    #[test]
    fn key_is_kept_across_restarts_and_self_signed() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let storage = Storage::open(dir.path()).unwrap();
            ServerKeys::load_or_generate(&storage, "kith.test")
                .unwrap()
                .public_key_base64()
        };
        let storage = Storage::open(dir.path()).unwrap();
        let keys = ServerKeys::load_or_generate(&storage, "kith.test").unwrap();
        assert_eq!(keys.public_key_base64(), first);

        let document = keys.key_document();
        let public = ruma::serde::Base64::parse(keys.public_key_base64()).unwrap();
        let key_map = BTreeMap::from([(
            "kith.test".to_owned(),
            BTreeMap::from([(keys.key_id(), public)]),
        )]);
        ruma::signatures::verify_json(&key_map, &document).unwrap();
    }

    #[test]
    fn a_rotated_key_is_published_as_old_and_the_document_signed_by_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let before = ServerKeys::load_or_generate(&storage, "kith.test").unwrap();
        let new_id = ServerKeys::rotate(&storage, "kith.test", None).unwrap();
        let after = ServerKeys::load_or_generate(&storage, "kith.test").unwrap();
        assert_eq!(after.key_id(), new_id);
        assert_ne!(after.key_id(), before.key_id());
        let document = after.key_document();
        let text = serde_json::to_value(&document).unwrap();
        let old = &text["old_verify_keys"][before.key_id()];
        assert_eq!(old["key"], before.public_key_base64());
        assert!(old["expired_ts"].as_u64().unwrap() > 0);
        assert!(text["verify_keys"].get(before.key_id()).is_none());
        let public = ruma::serde::Base64::parse(after.public_key_base64()).unwrap();
        let key_map = BTreeMap::from([(
            "kith.test".to_owned(),
            BTreeMap::from([(after.key_id(), public)]),
        )]);
        ruma::signatures::verify_json(&key_map, &document).unwrap();
    }
}
