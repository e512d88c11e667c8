//! The end-to-end encryption relay: the server never decrypts, but stores and hands out
//! what the clients' crypto needs — device keys, one-time and fallback keys, cross-signing
//! keys and their signatures, and send-to-device messages — and tells clients whose keys
//! changed. Every change that clients must hear of takes a stream position, so `/sync`
//! reports it once.

mod backup;
mod cross_signing;
mod federation;
mod keys;
mod signed;
mod to_device;

use std::collections::BTreeMap;
use std::sync::Arc;

use kith_federation::Outbox;
use kith_storage::{Batch, Storage, catalog};
use ruma::OwnedServerName;

use crate::services::error::Result;
use crate::util::{RateLimiter, StripedLocks};

pub use backup::BackupKeys;
pub use federation::DeviceListAnnouncer;
pub use keys::{Upload, claims_of};
pub use to_device::ToDeviceSend;

pub struct E2ee {
    storage: Storage,
    server_name: OwnedServerName,
    /// To-device messages for users of other servers go out through it.
    outbox: Arc<Outbox>,
    /// Per device, across one-time key claims and uploads (no key is handed out twice),
    /// and per user across cross-signing changes.
    locks: StripedLocks,
    /// `sendToDevice` requests per user (`[rate_limits] to_device`).
    to_device_limiter: RateLimiter,
}

impl E2ee {
    pub fn new(
        storage: Storage,
        server_name: OwnedServerName,
        outbox: Arc<Outbox>,
        to_device_limiter: RateLimiter,
    ) -> E2ee {
        E2ee {
            storage,
            server_name,
            outbox,
            locks: StripedLocks::new(64),
            to_device_limiter,
        }
    }

    /// The device's lock: one-time key claims and uploads, and to-device sends (so a
    /// replayed transaction waits for the first).
    async fn lock_device(&self, user: &str, device: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks.lock(&format!("{user}\n{device}")).await
    }

    fn device_exists(&self, user: &str, device: &str) -> Result<bool> {
        Ok(self
            .storage
            .contains(&catalog::USERID_DEVICEID_DEVICE, &(user, device))?)
    }

    /// Records in `batch` that `user_id`'s devices or keys changed.
    fn note_change(&self, batch: &mut Batch, user_id: &str) -> kith_storage::Result<()> {
        note_key_change(batch, user_id).map(drop)
    }

    /// Where the user's keys last changed, if ever.
    pub fn last_change(&self, user_id: &str) -> Result<Option<u64>> {
        Ok(self.storage.get(&catalog::USERID_KEYCHANGE, &user_id)?)
    }

    /// The device's unclaimed one-time keys, by algorithm.
    pub fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<BTreeMap<String, u64>> {
        let rows: Vec<((String, String, String, String), serde::de::IgnoredAny)> =
            self.storage.scan_prefix(
                &catalog::USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY,
                &(user_id, device_id),
            )?;
        let mut counts = BTreeMap::new();
        for ((_, _, algorithm, _), _) in rows {
            *counts.entry(algorithm).or_default() += 1;
        }
        Ok(counts)
    }

    /// The algorithms of the device's fallback keys not yet handed out.
    pub fn unused_fallback_types(&self, user_id: &str, device_id: &str) -> Result<Vec<String>> {
        let rows: Vec<((String, String, String), keys::FallbackKey)> = self.storage.scan_prefix(
            &catalog::USERID_DEVICEID_ALGORITHM_FALLBACKKEY,
            &(user_id, device_id),
        )?;
        Ok(rows
            .into_iter()
            .filter(|(_, key)| !key.used)
            .map(|((_, _, algorithm), _)| algorithm)
            .collect())
    }
}

/// Takes a position in `batch` for a change to a local user's devices or keys (and logs
/// it, for other servers to hear); returns it.
pub fn note_key_change(batch: &mut Batch, user_id: &str) -> kith_storage::Result<u64> {
    let position = note_any_key_change(batch, user_id)?;
    let changed = crate::events::DomainEvent::DeviceListChanged {
        user_id: user_id.to_owned(),
    };
    crate::events::append(batch, changed)?;
    Ok(position)
}

/// The position-taking part of [`note_key_change`], also for another server's user whose
/// keys that server says changed.
fn note_any_key_change(batch: &mut Batch, user_id: &str) -> kith_storage::Result<u64> {
    let position = batch.new_position()?;
    batch.put(&catalog::USERID_KEYCHANGE, &user_id, &position)?;
    Ok(position)
}

/// Adds to `batch` the removal of everything a device had: its keys, one-time and fallback
/// keys and waiting to-device messages; the owner's device list changes with it.
pub fn forget_device_into(
    storage: &Storage,
    batch: &mut Batch,
    user_id: &str,
    device_id: &str,
) -> kith_storage::Result<()> {
    let device = (user_id, device_id);
    batch.delete(&catalog::USERID_DEVICEID_KEYS, &device)?;
    let otks: Vec<((String, String, String, String), serde::de::IgnoredAny)> = storage
        .scan_prefix(
            &catalog::USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY,
            &device,
        )?;
    for ((_, _, algorithm, key_id), _) in otks {
        let key = (user_id, device_id, algorithm.as_str(), key_id.as_str());
        batch.delete(&catalog::USERID_DEVICEID_ALGORITHM_KEYID_ONETIMEKEY, &key)?;
    }
    let fallbacks: Vec<((String, String, String), serde::de::IgnoredAny)> =
        storage.scan_prefix(&catalog::USERID_DEVICEID_ALGORITHM_FALLBACKKEY, &device)?;
    for ((_, _, algorithm), _) in fallbacks {
        let key = (user_id, device_id, algorithm.as_str());
        batch.delete(&catalog::USERID_DEVICEID_ALGORITHM_FALLBACKKEY, &key)?;
    }
    let waiting: Vec<((String, String, u64), serde::de::IgnoredAny)> =
        storage.scan_prefix(&catalog::USERID_DEVICEID_POSITION_TODEVICE, &device)?;
    for ((_, _, position), _) in waiting {
        batch.delete(
            &catalog::USERID_DEVICEID_POSITION_TODEVICE,
            &(user_id, device_id, position),
        )?;
    }
    note_key_change(batch, user_id)?;
    Ok(())
}
