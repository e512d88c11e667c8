//! Send-to-device messages: stored per recipient device at a stream position, delivered in
//! that device's `/sync`, and deleted once a later sync's `since` shows they arrived.

use std::collections::BTreeMap;

use kith_storage::catalog;
use ruma::{DeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::E2ee;
use super::federation::to_device_into;
use crate::services::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ToDevice {
    sender: String,
    #[serde(rename = "type")]
    kind: String,
    content: Value,
}

/// Who a message goes to: one device, or all of a user's (`*`).
pub(super) enum Target {
    Device(String),
    All,
}

impl Target {
    pub(super) fn of(device: &str) -> Target {
        match device {
            "*" => Target::All,
            device => Target::Device(device.to_owned()),
        }
    }
}

/// One device's send (`PUT /sendToDevice/{eventType}/{txnId}`).
pub struct ToDeviceSend<'a> {
    pub sender: &'a UserId,
    pub device: &'a DeviceId,
    /// The transaction: a replay within its scope (the request path) sends nothing again.
    pub txn_id: &'a str,
    pub scope: &'a str,
    pub kind: &'a str,
    /// Per user, per device ID (or `*`: all the user's devices), the content.
    pub messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
}

impl E2ee {
    /// Sends to-device messages once per transaction: this server's users' devices get
    /// theirs stored (unknown users and devices are skipped), other servers' users theirs
    /// through their server, all in one write with the transaction's mark. `devices_of`
    /// lists a local user's devices.
    pub async fn send_to_device(
        &self,
        send: ToDeviceSend<'_>,
        devices_of: impl Fn(&str) -> Result<Vec<String>>,
    ) -> Result<()> {
        let (sender, device) = (send.sender.as_str(), send.device.as_str());
        let txn = (sender, device, send.scope);
        // Under the device's lock, so a replayed transaction waits for the first.
        let _guard = self.lock_device(sender, device).await;
        if self
            .storage
            .contains(&catalog::USERID_DEVICEID_TXNID_EVENTID, &txn)?
        {
            return Ok(());
        }
        (self.to_device_limiter)
            .take(sender)
            .map_err(Error::limit_exceeded)?;
        let mut local = Vec::new();
        let mut remote = BTreeMap::new();
        for (user, devices) in send.messages {
            if user.server_name() != self.server_name {
                remote.insert(user.to_string(), devices);
                continue;
            }
            for (target, content) in devices {
                local.push((user.to_string(), Target::of(&target), content));
            }
        }
        let mut batch = self.storage.batch();
        // A to-device send has no event ID to remember: its transaction is marked with null.
        batch.put(&catalog::USERID_DEVICEID_TXNID_EVENTID, &txn, &Value::Null)?;
        if !remote.is_empty() {
            let outbox = &self.outbox;
            to_device_into(outbox, &mut batch, sender, send.kind, send.txn_id, remote)?;
        }
        self.store_to_device(&mut batch, sender, send.kind, local, devices_of)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Stores `kind` messages from `sender` in `batch` for each target device that exists
    /// (unknown devices are skipped, as Synapse does: a device may log out while a client
    /// sends).
    pub(super) fn store_to_device(
        &self,
        batch: &mut kith_storage::Batch,
        sender: &str,
        kind: &str,
        messages: Vec<(String, Target, Value)>,
        devices_of: impl Fn(&str) -> Result<Vec<String>>,
    ) -> Result<()> {
        for (user, target, content) in messages {
            let devices = devices_of(&user)?;
            let chosen: Vec<&String> = match &target {
                Target::All => devices.iter().collect(),
                Target::Device(device) => devices.iter().filter(|d| *d == device).collect(),
            };
            for device in chosen {
                let message = ToDevice {
                    sender: sender.to_owned(),
                    kind: kind.to_owned(),
                    content: content.clone(),
                };
                let position = batch.new_position()?;
                let row = (user.as_str(), device.as_str(), position);
                batch.put(&catalog::USERID_DEVICEID_POSITION_TODEVICE, &row, &message)?;
            }
        }
        Ok(())
    }

    /// The device's messages up to `upto`, after deleting those up to `acknowledged` (the
    /// sync's `since`: the client has them).
    pub async fn to_device_for_sync(
        &self,
        user: &str,
        device: &str,
        acknowledged: Option<u64>,
        upto: u64,
    ) -> Result<Vec<Value>> {
        let rows: Vec<((String, String, u64), ToDevice)> = self
            .storage
            .scan_prefix(&catalog::USERID_DEVICEID_POSITION_TODEVICE, &(user, device))?;
        let mut delivered = Vec::new();
        let mut batch = self.storage.batch();
        for ((_, _, position), message) in rows {
            if acknowledged.is_some_and(|a| position <= a) {
                batch.delete(
                    &catalog::USERID_DEVICEID_POSITION_TODEVICE,
                    &(user, device, position),
                )?;
            } else if position <= upto {
                // All of them: the next sync's `since` acknowledges everything up to here.
                delivered.push(json!({ "sender": message.sender, "type": message.kind, "content": message.content }));
            }
        }
        if !batch.is_empty() {
            self.storage.commit(batch).await?;
        }
        Ok(delivered)
    }
}
