//! Re-verifying every stored event: content hash and signatures against the signing
//! servers' keys, as a federation peer would check them. `kith admin verify-events` runs it.

use std::collections::{BTreeMap, HashMap};

use kith_federation::RemoteKey;
use kith_storage::catalog;
use ruma::RoomVersionId;
use ruma::signatures::Verified;
use serde::Serialize;

use super::{Messaging, Room, StoredPdu};
use crate::services::error::{Error, Result};

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Events whose hash and signatures check out.
    pub verified: u64,
    /// Redacted events whose signatures check out (their content hash cannot any more).
    pub redacted: u64,
    /// Events that fail, with why.
    pub failed: Vec<(String, String)>,
    /// Invites into rooms on other servers this server never joined: without the room's
    /// version there is nothing to check them against.
    pub skipped: u64,
}

impl Messaging {
    /// Checks every stored event against its room version, this server's key and the
    /// other servers' keys it has fetched.
    pub fn verify_all(&self) -> Result<VerifyReport> {
        let public =
            ruma::serde::Base64::parse(self.keys.public_key_base64()).map_err(Error::internal)?;
        let mut own = BTreeMap::from([(self.keys.key_id(), public)]);
        for old in self.keys.old_keys() {
            let key = ruma::serde::Base64::parse(&old.public_key).map_err(Error::internal)?;
            own.insert(format!("ed25519:{}", old.version), key);
        }
        let mut keys = BTreeMap::from([(self.server_name().to_owned(), own)]);
        let remote: Vec<((String, String), RemoteKey)> = self
            .storage
            .scan_prefix(&catalog::SERVERNAME_KEYID_VERIFYKEY, &())?;
        for ((server, key_id), key) in remote {
            if let Ok(key) = ruma::serde::Base64::parse(&key.key) {
                keys.entry(server).or_default().insert(key_id, key);
            }
        }
        let mut versions: HashMap<String, RoomVersionId> = HashMap::new();
        let mut report = VerifyReport::default();
        let events: Vec<(String, StoredPdu)> =
            self.storage.scan_prefix(&catalog::EVENTID_PDU, &())?;
        for (event_id, event) in events {
            let version = match versions.get(&event.room_id) {
                Some(version) => version.clone(),
                None => {
                    let room: Option<Room> = self
                        .storage
                        .get(&catalog::ROOMID_ROOM, &event.room_id.as_str())?;
                    let Some(room) = room else {
                        report.skipped += 1;
                        continue;
                    };
                    versions.insert(event.room_id.clone(), room.version.clone());
                    room.version
                }
            };
            let outcome = event
                .pdu()
                .map_err(|e| e.to_string())
                .and_then(|pdu| pdu.verify(&keys, &version));
            // A redacted event's content hash no longer matches, unless redaction happened
            // to remove nothing (a leave, say); its signatures must always hold.
            match (outcome, &event.redacted_because) {
                (Ok(_), Some(_)) => report.redacted += 1,
                (Ok(Verified::All), None) => report.verified += 1,
                (Ok(found), None) => report
                    .failed
                    .push((event_id, format!("{found:?}: content hash mismatch"))),
                (Err(e), _) => report.failed.push((event_id, e)),
            }
        }
        Ok(report)
    }
}
