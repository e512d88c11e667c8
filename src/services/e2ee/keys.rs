//! Device keys, one-time keys and fallback keys: upload, query, claim.

use std::collections::BTreeMap;

use kith_storage::catalog;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use ruma::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId};

use super::E2ee;
use super::signed::{ed25519_key, signed_by, well_formed};
use crate::services::error::{Error, Result};

/// The most devices one claim asks about (each is a write).
const MAX_CLAIMS: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FallbackKey {
    pub key_id: String,
    pub key: Value,
    pub used: bool,
}

/// What a device uploads.
pub struct Upload {
    pub device_keys: Option<Value>,
    pub one_time_keys: BTreeMap<String, Value>,
    pub fallback_keys: BTreeMap<String, Value>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_param(message)
}

/// `algorithm:key_id`, split.
fn split_key_id(id: &str) -> Result<(&str, &str)> {
    id.split_once(':')
        .filter(|(a, k)| !a.is_empty() && !k.is_empty())
        .ok_or_else(|| invalid(format!("Key ID {id:?} is not algorithm:id")))
}

/// A one-time or fallback key: an unsigned string (`curve25519`) or an object whose
/// signature by the device must check out.
fn check_key(
    id: &str,
    key: &Value,
    user: &str,
    device: &str,
    device_key: Option<&str>,
) -> Result<()> {
    let algorithm = id.split(':').next().unwrap_or_default();
    match key {
        // Only plain curve25519 keys come unsigned.
        Value::String(_) if algorithm == "curve25519" => Ok(()),
        Value::String(_) => Err(invalid(format!("Key {id} must be a signed object"))),
        Value::Object(object) => {
            well_formed(key)?;
            if !object.get("key").is_some_and(Value::is_string) {
                return Err(invalid(format!("Key {id} has no key")));
            }
            let key_id = format!("ed25519:{device}");
            match device_key {
                Some(public) if signed_by(key, user, &key_id, public) => Ok(()),
                Some(_) => Err(invalid(format!(
                    "Key {id} is not signed by device {device}"
                ))),
                None => Err(invalid(
                    "Upload the device keys before signed one-time keys",
                )),
            }
        }
        _ => Err(invalid(format!("Key {id} must be a string or an object"))),
    }
}

/// One-time keys asked for: by user, by device, the algorithm.
pub type Claims = BTreeMap<String, BTreeMap<String, String>>;

/// A claim request's map (`one_time_keys`, client or federation) as [`E2ee::claim`]
/// takes it.
pub fn claims_of(
    asked: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
) -> Claims {
    asked
        .iter()
        .map(|(user, devices)| {
            let devices = devices
                .iter()
                .map(|(device, algorithm)| (device.to_string(), algorithm.to_string()))
                .collect();
            (user.to_string(), devices)
        })
        .collect()
}

impl E2ee {
    pub fn device_keys(&self, user: &str, device: &str) -> Result<Option<Value>> {
        Ok(self
            .storage
            .get(&catalog::USERID_DEVICEID_KEYS, &(user, device))?)
    }

    /// Stores what a device uploads, all or nothing, and returns its one-time key counts.
    /// Device keys must be the device's own and self-signed; signed one-time and fallback
    /// keys must be signed by it; a one-time key ID already used for other content is
    /// refused.
    pub async fn upload(
        &self,
        user: &str,
        device: &str,
        upload: Upload,
    ) -> Result<BTreeMap<String, u64>> {
        let _guard = self.lock_device(user, device).await;
        // Under the lock: a device logged out since the request was authenticated gets
        // no keys stored for it.
        if !self.device_exists(user, device)? {
            return Err(Error::unknown_token(false));
        }
        let stored = self.device_keys(user, device)?;
        let mut batch = self.storage.batch();
        if let Some(keys) = &upload.device_keys {
            well_formed(keys)?;
            if keys["user_id"] != user || keys["device_id"] != device {
                return Err(invalid("Device keys must be for this user and device"));
            }
            let public = ed25519_key(keys, device)
                .ok_or_else(|| invalid("Device keys need an ed25519 key for the device"))?;
            if !signed_by(keys, user, &format!("ed25519:{device}"), public) {
                return Err(invalid("Device keys are not signed by the device"));
            }
            let mut keys = keys.clone();
            // Signatures others uploaded for the old keys stay if the keys did not change.
            if let Some(old) = stored.as_ref().filter(|old| old["keys"] == keys["keys"]) {
                merge_signatures(&mut keys, old);
            }
            if stored.as_ref() != Some(&keys) {
                batch.put(&catalog::USERID_DEVICEID_KEYS, &(user, device), &keys)?;
                self.note_change(&mut batch, user)?;
            }
        }
        let device_keys = upload.device_keys.as_ref().or(stored.as_ref());
        let public = device_keys
            .and_then(|k| ed25519_key(k, device))
            .map(str::to_owned);
        for (id, key) in &upload.one_time_keys {
            let (algorithm, key_id) = split_key_id(id)?;
            check_key(id, key, user, device, public.as_deref())?;
            let row = (user, device, algorithm, key_id);
            let existing: Option<Value> = self
                .storage
                .get(&catalog::USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY, &row)?;
            match existing {
                Some(old) if old != *key => {
                    return Err(invalid(format!(
                        "One-time key {id} already exists with other content"
                    )));
                }
                Some(_) => {}
                None => batch.put(
                    &catalog::USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY,
                    &row,
                    key,
                )?,
            }
        }
        for (id, key) in &upload.fallback_keys {
            let (algorithm, key_id) = split_key_id(id)?;
            check_key(id, key, user, device, public.as_deref())?;
            let row = (user, device, algorithm);
            let stored: Option<FallbackKey> = self
                .storage
                .get(&catalog::USERID_DEVICEID_ALGORITHM_FALLBACKKEY, &row)?;
            // The same key again (a retried upload) stays as used as it was.
            let used = stored.is_some_and(|s| s.key_id == key_id && s.key == *key && s.used);
            let fallback = FallbackKey {
                key_id: key_id.to_owned(),
                key: key.clone(),
                used,
            };
            batch.put(
                &catalog::USERID_DEVICEID_ALGORITHM_FALLBACKKEY,
                &(user, device, algorithm),
                &fallback,
            )?;
        }
        self.storage.commit(batch).await?;
        self.one_time_key_counts(user, device)
    }

    /// Device keys of the asked users (all their devices when none are named), with the
    /// devices' display names, and their cross-signing keys (the user-signing key only for
    /// the requester's own).
    pub fn query(
        &self,
        requester: &str,
        asked: &BTreeMap<String, Vec<String>>,
        display_name: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<Value> {
        let mut device_keys = Map::new();
        let (mut masters, mut self_signing, mut user_signing) =
            (Map::new(), Map::new(), Map::new());
        for (user, devices) in asked {
            let rows: Vec<((String, String), Value)> = self
                .storage
                .scan_prefix(&catalog::USERID_DEVICEID_KEYS, &(user.as_str(),))?;
            let mut found = Map::new();
            for ((_, device), mut keys) in rows {
                if !devices.is_empty() && !devices.contains(&device) {
                    continue;
                }
                // A device gone meanwhile is not encrypted to.
                if !self.device_exists(user, &device)? {
                    continue;
                }
                // `unsigned` is the server's (as Synapse answers): the display name, if any.
                if let Some(keys) = keys.as_object_mut() {
                    let unsigned = match display_name(user, &device) {
                        Some(name) => json!({ "device_display_name": name }),
                        None => json!({}),
                    };
                    keys.insert("unsigned".into(), unsigned);
                }
                found.insert(device, keys);
            }
            device_keys.insert(user.clone(), Value::Object(found));
            for (kind, out) in [
                ("master", &mut masters),
                ("self_signing", &mut self_signing),
            ] {
                if let Some(key) = self.cross_signing_key(user, kind)? {
                    out.insert(user.clone(), key);
                }
            }
            // Only the owner sees their user-signing key.
            if user == requester
                && let Some(key) = self.cross_signing_key(user, "user_signing")?
            {
                user_signing.insert(user.clone(), key);
            }
        }
        Ok(json!({
            "device_keys": device_keys,
            "master_keys": masters,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
            "failures": {},
        }))
    }

    /// Hands out one key per asked device: a one-time key (removed, under the device's
    /// lock, so two claimers never get the same) or else the fallback key.
    pub async fn claim(&self, asked: &Claims) -> Result<Value> {
        let devices: usize = asked.values().map(BTreeMap::len).sum();
        if devices > MAX_CLAIMS {
            return Err(invalid(format!("At most {MAX_CLAIMS} devices per claim")));
        }
        let mut claimed = Map::new();
        for (user, devices) in asked {
            let mut for_user = Map::new();
            for (device, algorithm) in devices {
                let _guard = self.lock_device(user, device).await;
                let prefix = (user.as_str(), device.as_str(), algorithm.as_str());
                let first: Vec<((String, String, String, String), Value)> =
                    self.storage.scan_prefix_after(
                        &catalog::USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY,
                        &prefix,
                        &prefix,
                        1,
                    )?;
                let key = if let Some(((_, _, _, key_id), key)) = first.into_iter().next() {
                    let mut batch = self.storage.batch();
                    let row = (
                        user.as_str(),
                        device.as_str(),
                        algorithm.as_str(),
                        key_id.as_str(),
                    );
                    batch.delete(&catalog::USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY, &row)?;
                    self.storage.commit(batch).await?;
                    Some((key_id, key))
                } else {
                    let fallback: Option<FallbackKey> = self
                        .storage
                        .get(&catalog::USERID_DEVICEID_ALGORITHM_FALLBACKKEY, &prefix)?;
                    match fallback {
                        Some(mut fallback) => {
                            if !fallback.used {
                                fallback.used = true;
                                let mut batch = self.storage.batch();
                                batch.put(
                                    &catalog::USERID_DEVICEID_ALGORITHM_FALLBACKKEY,
                                    &prefix,
                                    &fallback,
                                )?;
                                self.storage.commit(batch).await?;
                            }
                            Some((fallback.key_id, fallback.key))
                        }
                        None => None,
                    }
                };
                if let Some((key_id, key)) = key {
                    for_user.insert(
                        device.clone(),
                        json!({ format!("{algorithm}:{key_id}"): key }),
                    );
                }
            }
            if !for_user.is_empty() {
                claimed.insert(user.clone(), Value::Object(for_user));
            }
        }
        Ok(json!({ "one_time_keys": claimed, "failures": {} }))
    }
}

/// Adds to `keys` the signatures `old` had that `keys` lacks.
pub fn merge_signatures(keys: &mut Value, old: &Value) {
    let Some(old) = old["signatures"].as_object() else {
        return;
    };
    for (user, by_user) in old {
        let Some(by_user) = by_user.as_object() else {
            continue;
        };
        for (key_id, signature) in by_user {
            if keys["signatures"][user].get(key_id).is_none() {
                keys["signatures"][user][key_id] = signature.clone();
            }
        }
    }
}
