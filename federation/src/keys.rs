//! The server signing key.

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
}

/// The key as stored: a PKCS#8 document and the key's version name, and the keys it
/// replaced.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    version: String,
    pkcs8: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    old: Vec<OldKey>,
}

/// A key this server signed with before: still published (`old_verify_keys`), so what it
/// signed then still verifies.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
fn new_key() -> Result<(String, impl AsRef<[u8]>), KeyError> {
    let document = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&document, String::new())
        .map_err(|e| KeyError::Corrupt(e.to_string()))?;
    Ok((format!("k{}", hex_prefix(&probe.public_key())), document))
}

impl ServerKeys {
    /// Loads the signing key, generating and storing one on first start.
    pub fn load_or_generate(storage: &Storage, server_name: &str) -> Result<ServerKeys, KeyError> {
        let stored = match storage.get::<_, StoredKey>(&catalog::GLOBAL_VALUE, &SIGNING_KEY)? {
            Some(stored) => stored,
            None => {
                let (version, document) = new_key()?;
                let stored = StoredKey {
                    version,
                    pkcs8: STANDARD_NO_PAD.encode(document.as_ref()),
                    old: Vec::new(),
                };
                let mut batch = storage.batch();
                batch.put(&catalog::GLOBAL_VALUE, &SIGNING_KEY, &stored)?;
                storage.commit_blocking(batch)?;
                tracing::info!(key = %stored.version, "generated a new server signing key");
                stored
            }
        };
        let document = STANDARD_NO_PAD
            .decode(&stored.pkcs8)
            .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let key_pair = Ed25519KeyPair::from_der(&document, stored.version)
            .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        Ok(ServerKeys {
            server_name: server_name.to_owned(),
            key_pair,
            old: stored.old,
        })
    }

    /// Replaces the signing key with a new one (the server uses it from its next start);
    /// the old one is kept as retired now. Returns the new key's ID.
    pub fn rotate(storage: &Storage, server_name: &str) -> Result<String, KeyError> {
        let current = ServerKeys::load_or_generate(storage, server_name)?;
        let (version, document) = new_key()?;
        let mut old = current.old.clone();
        old.push(OldKey {
            version: current.key_pair.version().to_owned(),
            public_key: current.public_key_base64(),
            expired_ts: now_ms(),
        });
        let stored = StoredKey {
            version: version.clone(),
            pkcs8: STANDARD_NO_PAD.encode(document.as_ref()),
            old,
        };
        let mut batch = storage.batch();
        batch.put(&catalog::GLOBAL_VALUE, &SIGNING_KEY, &stored)?;
        storage.commit_blocking(batch)?;
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
        let new_id = ServerKeys::rotate(&storage, "kith.test").unwrap();
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
