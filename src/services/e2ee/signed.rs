//! Checking the signatures on uploaded keys: an object signed by `user`'s key `key_id`
//! (`ed25519:<device or public key>`) with `public_key` (unpadded base64).

use ruma::canonical_json::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{
    SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
};
use serde_json::Value;

/// Whether `object` carries a valid signature by `user`'s `key_id`.
pub fn signed_by(object: &Value, user: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object["signatures"][user][key_id].as_str() else {
        return false;
    };
    let (Ok(signature), Ok(public_key)) = (
        Base64::<ruma::serde::base64::Standard>::parse(signature),
        Base64::<ruma::serde::base64::Standard>::parse(public_key),
    ) else {
        return false;
    };
    let Ok(canonical) = serde_json::from_value::<CanonicalJsonObject>(object.clone()) else {
        return false;
    };
    let Ok(text) = to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        text.as_bytes(),
    )
    .is_ok()
}

/// Whether a key object is shaped so it can be stored and added to: an object whose
/// `signatures` (if any) map users to objects of strings and whose `unsigned` (if any) is
/// an object. Anything else is `M_BAD_JSON`, so nothing malformed is ever relayed.
pub fn well_formed(object: &Value) -> crate::services::error::Result<()> {
    let bad = |what: &str| {
        Err(crate::services::error::Error::bad_json(format!(
            "Malformed key: {what}"
        )))
    };
    let Some(object) = object.as_object() else {
        return bad("not an object");
    };
    if object.get("unsigned").is_some_and(|u| !u.is_object()) {
        return bad("unsigned must be an object");
    }
    if let Some(signatures) = object.get("signatures") {
        let Some(signatures) = signatures.as_object() else {
            return bad("signatures must be an object");
        };
        for by_user in signatures.values() {
            let Some(by_user) = by_user.as_object() else {
                return bad("signatures must map users to objects");
            };
            if !by_user.values().all(Value::is_string) {
                return bad("signatures must be strings");
            }
        }
    }
    if object.get("keys").is_some_and(|k| !k.is_object()) {
        return bad("keys must be an object");
    }
    Ok(())
}

/// The `ed25519:…` public key of a key object (device keys or a cross-signing key):
/// `keys["ed25519:<id>"]`.
pub fn ed25519_key<'a>(object: &'a Value, id: &str) -> Option<&'a str> {
    object["keys"][format!("ed25519:{id}")].as_str()
}

/// The single public key of a cross-signing key (its `keys` has exactly one entry), with
/// its ID.
pub fn cross_signing_key(object: &Value) -> Option<(String, String)> {
    let keys = object["keys"].as_object()?;
    let (id, key) = keys.iter().next().filter(|_| keys.len() == 1)?;
    Some((id.clone(), key.as_str()?.to_owned()))
}
