//! Send-to-device messages: stored per recipient device at a stream position, delivered in
//! that device's `/sync`, and deleted once a later sync's `since` shows they arrived.

use kith_storage::catalog;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::E2ee;
use crate::services::error::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ToDevice {
    sender: String,
    #[serde(rename = "type")]
    kind: String,
    content: Value,
}

/// Who a message goes to: one device, or all of a user's (`*`).
pub enum Target {
    Device(String),
    All,
}

impl E2ee {
    /// Queues `kind` messages from `sender` for each target device that exists (unknown
    /// devices are skipped, as Synapse does: a device may log out while a client sends).
    /// `devices_of` lists a user's devices.
    pub async fn send_to_device(
        &self,
        sender: &str,
        kind: &str,
        messages: Vec<(String, Target, Value)>,
        devices_of: impl Fn(&str) -> Result<Vec<String>>,
        mut batch: kith_storage::Batch,
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
        Ok(self.storage.commit(batch).await?)
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
