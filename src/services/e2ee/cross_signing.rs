//! Cross-signing: a user's master key, the self-signing key (signs their devices) and the
//! user-signing key (signs other users' master keys); and signatures uploaded for keys.

use std::collections::BTreeMap;

use kith_storage::catalog;
use serde_json::{Value, json};

use super::E2ee;
use super::keys::merge_signatures;
use super::signed::{cross_signing_key, ed25519_key, signed_by};
use crate::gateway::{Error, Result};

/// The three kinds, as stored and as the `usage` field names them.
pub const KINDS: [&str; 3] = ["master", "self_signing", "user_signing"];

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_param(message)
}

impl E2ee {
    pub fn cross_signing_key(&self, user: &str, kind: &str) -> Result<Option<Value>> {
        Ok(self
            .storage
            .get(&catalog::USERID_KIND_CROSSSIGNINGKEY, &(user, kind))?)
    }

    /// Whether uploading `master` would replace an existing, different master key (which
    /// needs the user's password, through UIA).
    pub fn replaces_master(&self, user: &str, master: Option<&Value>) -> Result<bool> {
        let Some(new) = master else {
            return Ok(false);
        };
        Ok(self
            .cross_signing_key(user, "master")?
            .is_some_and(|old| old["keys"] != new["keys"]))
    }

    /// Stores the user's cross-signing keys: each for this user with its usage; the
    /// self- and user-signing keys signed by the master key (the new one, or the stored).
    pub async fn upload_cross_signing(
        &self,
        user: &str,
        uploaded: BTreeMap<&str, Value>,
    ) -> Result<()> {
        let _guard = self.locks.lock(user).await;
        for (kind, key) in &uploaded {
            if key["user_id"] != user {
                return Err(invalid(format!("The {kind} key is not for this user")));
            }
            let usage = key["usage"].as_array();
            if !usage.is_some_and(|u| u.iter().any(|x| x == kind)) {
                return Err(invalid(format!(
                    "The {kind} key's usage must include {kind}"
                )));
            }
            cross_signing_key(key)
                .ok_or_else(|| invalid(format!("The {kind} key needs one public key")))?;
        }
        let master = match uploaded.get("master") {
            Some(master) => Some(master.clone()),
            None => self.cross_signing_key(user, "master")?,
        };
        for kind in ["self_signing", "user_signing"] {
            let Some(key) = uploaded.get(kind) else {
                continue;
            };
            let (master_id, master_key) = master
                .as_ref()
                .and_then(cross_signing_key)
                .ok_or_else(|| invalid("Upload a master key first"))?;
            if !signed_by(key, user, &master_id, &master_key) {
                return Err(invalid(format!(
                    "The {kind} key is not signed by the master key"
                )));
            }
        }
        let mut batch = self.storage.batch();
        for (kind, key) in uploaded {
            batch.put(&catalog::USERID_KIND_CROSSSIGNINGKEY, &(user, kind), &key)?;
        }
        self.note_change(&mut batch, user)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Adds the signatures the requester made (by a device of theirs or one of their
    /// cross-signing keys) to the keys they name: their own devices and master key, or
    /// another user's master key. Each signature must check out; what fails is reported
    /// per key and changes nothing.
    pub async fn upload_signatures(
        &self,
        requester: &str,
        signed: &BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<Value> {
        let mut failures = serde_json::Map::new();
        let mut batch = self.storage.batch();
        let mut changed = Vec::new();
        for (user, objects) in signed {
            for (key_id, object) in objects {
                match self.apply_signature(requester, user, key_id, object)? {
                    Ok((row, merged)) => {
                        match row {
                            Row::Device(device) => batch.put(
                                &catalog::USERID_DEVICEID_KEYS,
                                &(user.as_str(), device.as_str()),
                                &merged,
                            )?,
                            Row::Master => batch.put(
                                &catalog::USERID_KIND_CROSSSIGNINGKEY,
                                &(user.as_str(), "master"),
                                &merged,
                            )?,
                        }
                        if !changed.contains(user) {
                            changed.push(user.clone());
                        }
                    }
                    Err(reason) => {
                        let entry = failures.entry(user.clone()).or_insert_with(|| json!({}));
                        entry[key_id] =
                            json!({ "errcode": "M_INVALID_SIGNATURE", "error": reason });
                    }
                }
            }
        }
        for user in &changed {
            self.note_change(&mut batch, user)?;
        }
        self.storage.commit(batch).await?;
        Ok(json!({ "failures": failures }))
    }

    /// The stored key `object` names, with the requester's new, valid signatures added.
    fn apply_signature(
        &self,
        requester: &str,
        user: &str,
        key_id: &str,
        object: &Value,
    ) -> Result<Result<(Row, Value), String>> {
        let (row, stored) = match self.device_keys(user, key_id)? {
            Some(keys) => (Row::Device(key_id.to_owned()), keys),
            None => match self.cross_signing_key(user, "master")? {
                Some(master)
                    if cross_signing_key(&master)
                        .is_some_and(|(id, _)| id == format!("ed25519:{key_id}")) =>
                {
                    (Row::Master, master)
                }
                _ => return Ok(Err(format!("No key {key_id} of {user}"))),
            },
        };
        if object["keys"] != stored["keys"] {
            return Ok(Err("The signed object is not the stored key".into()));
        }
        let Some(signatures) = object["signatures"][requester].as_object() else {
            return Ok(Err("No signature by the uploader".into()));
        };
        let mut merged = stored.clone();
        for (signer, signature) in signatures {
            let Some(public) = self.signer_key(requester, signer)? else {
                return Ok(Err(format!("Unknown signing key {signer}")));
            };
            if !signed_by(object, requester, signer, &public) {
                return Ok(Err(format!("Invalid signature by {signer}")));
            }
            merged["signatures"][requester][signer] = signature.clone();
        }
        merge_signatures(&mut merged, &stored);
        Ok(Ok((row, merged)))
    }

    /// The public key behind the requester's `ed25519:<id>`: one of their devices, or one
    /// of their cross-signing keys.
    fn signer_key(&self, requester: &str, signer: &str) -> Result<Option<String>> {
        let Some(id) = signer.strip_prefix("ed25519:") else {
            return Ok(None);
        };
        if let Some(device) = self.device_keys(requester, id)? {
            return Ok(ed25519_key(&device, id).map(str::to_owned));
        }
        for kind in KINDS {
            let key = self.cross_signing_key(requester, kind)?;
            if let Some((key_id, public)) = key.as_ref().and_then(cross_signing_key)
                && key_id == signer
            {
                return Ok(Some(public));
            }
        }
        Ok(None)
    }
}

enum Row {
    Device(String),
    Master,
}
