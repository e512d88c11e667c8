//! A device record: what `GET /devices` shows, plus the token state behind the session.

use std::net::IpAddr;

use kith_storage::{Batch, catalog};
use serde::{Deserialize, Serialize};

use super::refresh::RefreshState;
use crate::util::random_string;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub display_name: Option<String>,
    pub created_ts: u64,
    pub last_seen_ts: u64,
    pub last_seen_ip: Option<String>,
    /// Random, new for every login on this device: an access token names it, so a token of
    /// an ended session never works again, even when a later login reuses the device ID.
    pub session_id: String,
    /// Bumped whenever the device's tokens are replaced (refresh); an access token names the
    /// generation it was issued for, so older ones stop working at once.
    pub generation: u64,
    pub refresh: Option<RefreshState>,
}

impl Device {
    pub fn new(display_name: Option<String>, now: u64) -> Device {
        Device {
            display_name,
            created_ts: now,
            last_seen_ts: now,
            last_seen_ip: None,
            session_id: random_string(16),
            generation: 0,
            refresh: None,
        }
    }

    pub fn seen(&mut self, now: u64, ip: IpAddr) {
        self.last_seen_ts = now;
        self.last_seen_ip = (!ip.is_unspecified()).then(|| ip.to_string());
    }

    /// Removes every refresh-token index entry of this device in `batch`.
    pub fn forget_refresh_tokens(&self, batch: &mut Batch) -> kith_storage::Result<()> {
        for hash in self.refresh.iter().flat_map(RefreshState::all_hashes) {
            batch.delete(&catalog::REFRESHHASH_USERID_DEVICEID, &hash.as_str())?;
        }
        Ok(())
    }
}
