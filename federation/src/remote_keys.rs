//! Other servers' signing keys: fetched from the server itself
//! (`GET /_matrix/key/v2/server`), accepted only when the document is signed by the keys it
//! lists and names that server, and kept in RocksDB until `valid_until_ts`, which is capped
//! at seven days. Keys a server has retired (`old_verify_keys`) are kept too, for events
//! it signed before it retired them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kith_storage::{Storage, catalog};
use ruma::serde::Base64;
use ruma::signatures::PublicKeyMap;
use serde::{Deserialize, Serialize};

use crate::KeyedLocks;
use crate::ServerKeys;
use crate::cache::Bounded;
use crate::client::FederationClient;
use crate::now_ms;

const MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// A server's keys are asked for at most this often, however many key IDs requests name:
/// a made-up key ID cannot make kith fetch again and again.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// After a failed fetch, the next waits this long, doubling with each failure in a row up
/// to [`MAX_BACKOFF`]: a server that cannot be had is not asked again on every request.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How many servers' fetch histories are remembered.
const ATTEMPTS_KEPT: usize = 10_000;

/// The last fetch of a server's keys, and when the next may be.
#[derive(Clone, Copy)]
struct Attempt {
    failures: u32,
    next: Instant,
}

/// One key of another server, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteKey {
    pub key: String,
    pub valid_until_ts: u64,
    /// Set for a retired key: valid for what was signed before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_ts: Option<u64>,
}

#[derive(Deserialize)]
struct KeyDocument {
    server_name: String,
    valid_until_ts: u64,
    verify_keys: BTreeMap<String, VerifyKey>,
    #[serde(default)]
    old_verify_keys: BTreeMap<String, OldVerifyKey>,
}

#[derive(Deserialize)]
struct VerifyKey {
    key: String,
}

#[derive(Deserialize)]
struct OldVerifyKey {
    key: String,
    expired_ts: u64,
}

pub struct RemoteKeys {
    storage: Storage,
    own: Arc<ServerKeys>,
    attempts: Bounded<Attempt>,
    /// Per server, held across a fetch: one at a time, whose result the other askers
    /// then read from storage.
    fetching: KeyedLocks,
}

impl RemoteKeys {
    pub fn new(storage: Storage, own: Arc<ServerKeys>) -> RemoteKeys {
        RemoteKeys {
            storage,
            own,
            attempts: Bounded::new(ATTEMPTS_KEPT),
            fetching: KeyedLocks::default(),
        }
    }

    /// The public keys of `server` for `key_ids`, as ruma's verifiers take them. `at` is
    /// when the signed thing claims to be from (an event's `origin_server_ts`); `None`
    /// means now. Fetches from the server when a key is unknown or no longer valid.
    pub async fn key_map(
        &self,
        client: &FederationClient,
        server: &str,
        key_ids: &[String],
        at: Option<u64>,
    ) -> Result<PublicKeyMap, String> {
        if server == self.own.server_name() {
            let mut own = BTreeMap::new();
            let key = Base64::parse(self.own.public_key_base64()).map_err(|e| e.to_string())?;
            own.insert(self.own.key_id(), key);
            for old in self.own.old_keys() {
                let key = Base64::parse(&old.public_key).map_err(|e| e.to_string())?;
                own.insert(format!("ed25519:{}", old.version), key);
            }
            return Ok(BTreeMap::from([(server.to_owned(), own)]));
        }
        let at = at.unwrap_or_else(now_ms);
        let mut set = self.stored(server, key_ids, at)?;
        if set.len() < key_ids.len() {
            let fetched = self.fetch_once(client, server).await;
            set = self.stored(server, key_ids, at)?;
            if let Some(error) = fetched.filter(|_| set.is_empty()) {
                return Err(error);
            }
        }
        if set.is_empty() {
            return Err(format!("{server} has no valid key among {key_ids:?}"));
        }
        Ok(BTreeMap::from([(server.to_owned(), set)]))
    }

    /// Those of `key_ids` stored for `server` and valid at `at`.
    fn stored(
        &self,
        server: &str,
        key_ids: &[String],
        at: u64,
    ) -> Result<BTreeMap<String, Base64>, String> {
        let usable = |key: &RemoteKey| match key.expired_ts {
            Some(expired) => at < expired,
            None => now_ms() < key.valid_until_ts,
        };
        let mut set = BTreeMap::new();
        for key_id in key_ids {
            let stored: Option<RemoteKey> = self
                .storage
                .get(
                    &catalog::SERVERNAME_KEYID_VERIFYKEY,
                    &(server, key_id.as_str()),
                )
                .map_err(|e| e.to_string())?;
            if let Some(key) = stored.filter(usable) {
                let key = Base64::parse(key.key).map_err(|e| e.to_string())?;
                set.insert(key_id.clone(), key);
            }
        }
        Ok(set)
    }

    /// Fetches `server`'s keys unless a fetch is already under way (then waits for it) or
    /// the last one was too recent. `Some(why)`: no keys were had, now or lately.
    async fn fetch_once(&self, client: &FederationClient, server: &str) -> Option<String> {
        let _alone = self.fetching.lock(server).await;
        match self.attempts.get(server) {
            // Fetched a moment ago: what it found is in storage.
            Some(last) if last.next > Instant::now() && last.failures == 0 => None,
            Some(last) if last.next > Instant::now() => Some(format!(
                "{server}'s keys could not be had ({} times); not asking again yet",
                last.failures
            )),
            last => {
                let failures = last.map_or(0, |l| l.failures);
                let fetched = self.fetch(client, server).await;
                let attempt = match &fetched {
                    Ok(_) => Attempt {
                        failures: 0,
                        next: Instant::now() + REFETCH_AFTER,
                    },
                    Err(_) => Attempt {
                        failures: failures + 1,
                        next: Instant::now() + backoff(failures + 1),
                    },
                };
                self.attempts
                    .insert(server.to_owned(), attempt, MAX_BACKOFF * 2);
                fetched.err()
            }
        }
    }

    /// Fetches, verifies and stores `server`'s key document.
    async fn fetch(&self, client: &FederationClient, server: &str) -> Result<(), String> {
        let body = client
            .get_unsigned(server, "/_matrix/key/v2/server")
            .await
            .map_err(|e| e.to_string())?;
        let object: ruma::CanonicalJsonObject =
            serde_json::from_slice(&body).map_err(|e| format!("key document: {e}"))?;
        let document: KeyDocument =
            serde_json::from_slice(&body).map_err(|e| format!("key document: {e}"))?;
        if document.server_name != server {
            return Err(format!("{server} sent keys for {}", document.server_name));
        }
        let mut self_keys = BTreeMap::new();
        for (id, key) in &document.verify_keys {
            self_keys.insert(
                id.clone(),
                Base64::parse(&key.key).map_err(|e| e.to_string())?,
            );
        }
        let key_map = BTreeMap::from([(server.to_owned(), self_keys)]);
        ruma::signatures::verify_json(&key_map, &object)
            .map_err(|e| format!("{server}'s key document is not self-signed: {e}"))?;

        let cap = now_ms() + MAX_VALIDITY.as_millis() as u64;
        let valid_until_ts = document.valid_until_ts.min(cap);
        let mut keys = BTreeMap::new();
        for (id, key) in document.verify_keys {
            keys.insert(
                id,
                RemoteKey {
                    key: key.key,
                    valid_until_ts,
                    expired_ts: None,
                },
            );
        }
        for (id, key) in document.old_verify_keys {
            let old = RemoteKey {
                key: key.key,
                valid_until_ts: key.expired_ts,
                expired_ts: Some(key.expired_ts),
            };
            keys.entry(id).or_insert(old);
        }
        let mut batch = self.storage.batch();
        for (id, key) in &keys {
            batch
                .put(
                    &catalog::SERVERNAME_KEYID_VERIFYKEY,
                    &(server, id.as_str()),
                    key,
                )
                .map_err(|e| e.to_string())?;
        }
        self.storage.commit(batch).await.map_err(|e| e.to_string())
    }

    /// The keys `servers` signed `object` (an event) with, for `verify_event`; a server
    /// whose keys cannot be had is left out, so its signature then fails. Only the
    /// servers whose signatures count are asked: an event naming others cannot make us
    /// fetch from them.
    pub async fn signers_key_map(
        &self,
        client: &FederationClient,
        object: &ruma::CanonicalJsonObject,
        servers: &[&str],
        at: u64,
    ) -> PublicKeyMap {
        let mut map = PublicKeyMap::new();
        let Some(ruma::CanonicalJsonValue::Object(signatures)) = object.get("signatures") else {
            return map;
        };
        for (server, keys) in signatures
            .iter()
            .filter(|(s, _)| servers.contains(&s.as_str()))
        {
            let ruma::CanonicalJsonValue::Object(keys) = keys else {
                continue;
            };
            let key_ids: Vec<String> = keys.keys().cloned().collect();
            if let Ok(found) = self.key_map(client, server, &key_ids, Some(at)).await {
                map.extend(found);
            }
        }
        map
    }
}

/// The wait after `failures` failed fetches in a row.
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}
