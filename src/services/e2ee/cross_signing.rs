//! Cross-signing: a user's master key, the self-signing key (signs their devices) and the
//! user-signing key (signs other users' master keys); and signatures uploaded for keys.

use std::collections::BTreeMap;

use kith_storage::catalog;
use serde_json::{Value, json};

use super::E2ee;
use super::signed::{cross_signing_key, ed25519_key, signed_by, well_formed};
use crate::services::error::{Error, Result};

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

    /// Whether an upload changes keys the user already has (a master key exists and any
    /// uploaded key differs from the stored one): that needs the password, through UIA.
    pub fn upload_needs_auth(&self, user: &str, uploaded: &BTreeMap<&str, Value>) -> Result<bool> {
        if self.cross_signing_key(user, "master")?.is_none() {
            return Ok(false);
        }
        for (kind, key) in uploaded {
            if self.cross_signing_key(user, kind)?.as_ref() != Some(key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores the user's cross-signing keys: each for this user with its usage; the
    /// self- and user-signing keys signed by the master key (the new one, or the stored).
    /// `authenticated`: the caller passed UIA; without it, only a first upload (or the
    /// same keys again, which change nothing) is taken — checked again under the lock.
    pub async fn upload_cross_signing(
        &self,
        user: &str,
        uploaded: BTreeMap<&str, Value>,
        authenticated: bool,
    ) -> Result<()> {
        let _guard = self.locks.lock(user).await;
        for (kind, key) in &uploaded {
            well_formed(key)?;
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
        if self.upload_needs_auth(user, &uploaded)? {
            if !authenticated {
                return Err(Error::forbidden(
                    "Cross-signing keys exist; changing them needs the password",
                ));
            }
        } else if self.cross_signing_key(user, "master")?.is_some() {
            // The same keys again: nothing changes, and uploaded signatures stay.
            return Ok(());
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

    /// Adds the signatures the requester made to the keys they name, where the spec allows
    /// them: their own devices (by their self-signing key), their own master key (by one of
    /// their devices), another user's master key (by their user-signing key). Each new
    /// signature must verify over the stored key; what fails is reported per key and
    /// changes nothing. Each key is changed under the lock its other writers take.
    pub async fn upload_signatures(
        &self,
        requester: &str,
        signed: &BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<Value> {
        let mut failures = serde_json::Map::new();
        for (user, objects) in signed {
            for (key_id, object) in objects {
                if let Err(reason) = self.sign_one(requester, user, key_id, object).await? {
                    let entry = failures.entry(user.clone()).or_insert_with(|| json!({}));
                    entry[key_id] = json!({ "errcode": "M_INVALID_SIGNATURE", "error": reason });
                }
            }
        }
        Ok(json!({ "failures": failures }))
    }

    async fn sign_one(
        &self,
        requester: &str,
        user: &str,
        key_id: &str,
        object: &Value,
    ) -> Result<Result<(), String>> {
        if well_formed(object).is_err() {
            return Ok(Err("Malformed signed object".into()));
        }
        let is_device = self.device_keys(user, key_id)?.is_some();
        let _guard = if is_device {
            self.lock_device(user, key_id).await
        } else {
            self.locks.lock(user).await
        };
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
        // Which of the requester's keys may sign this one.
        let allowed: Option<String> = match (&row, user == requester) {
            (Row::Device(_), true) => self
                .cross_signing_key(requester, "self_signing")?
                .and_then(|k| cross_signing_key(&k))
                .map(|(id, _)| id),
            (Row::Master, false) => self
                .cross_signing_key(requester, "user_signing")?
                .and_then(|k| cross_signing_key(&k))
                .map(|(id, _)| id),
            (Row::Master, true) => None, // any of the requester's devices
            (Row::Device(_), false) => return Ok(Err("Only the owner signs their devices".into())),
        };
        let Some(signatures) = object["signatures"][requester].as_object() else {
            return Ok(Err("No signature by the uploader".into()));
        };
        let mut merged = stored.clone();
        let mut added = false;
        for (signer, signature) in signatures {
            if stored["signatures"][requester].get(signer) == Some(signature) {
                continue;
            }
            let permitted = match &allowed {
                Some(id) => id == signer,
                None => signer
                    .strip_prefix("ed25519:")
                    .is_some_and(|d| self.device_keys(requester, d).ok().flatten().is_some()),
            };
            let Some(public) = self.signer_key(requester, signer)?.filter(|_| permitted) else {
                return Ok(Err(format!("{signer} may not sign this key")));
            };
            // Verified over the stored key, with only this signature added.
            let mut candidate = stored.clone();
            candidate["signatures"][requester][signer] = signature.clone();
            if !signed_by(&candidate, requester, signer, &public) {
                return Ok(Err(format!("Invalid signature by {signer}")));
            }
            merged["signatures"][requester][signer] = signature.clone();
            added = true;
        }
        if !added {
            return Ok(Ok(()));
        }
        let mut batch = self.storage.batch();
        match row {
            Row::Device(device) => batch.put(
                &catalog::USERID_DEVICEID_KEYS,
                &(user, device.as_str()),
                &merged,
            )?,
            Row::Master => batch.put(
                &catalog::USERID_KIND_CROSSSIGNINGKEY,
                &(user, "master"),
                &merged,
            )?,
        }
        self.note_change(&mut batch, user)?;
        self.storage.commit(batch).await?;
        Ok(Ok(()))
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
