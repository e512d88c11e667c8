//! The E2EE relay across servers: other servers' users' keys are asked of their servers
//! when a client asks (no copy is kept, so nothing goes stale); our users' keys are served
//! to servers that ask; a change to a local user's devices or keys is announced
//! (`m.device_list_update`) to every server sharing a room with them, and an announcement
//! from another server makes its user's keys "changed" in our users' `/sync`; to-device
//! messages travel as `m.direct_to_device` EDUs.

use std::collections::BTreeMap;
use std::sync::Arc;

use kith_federation::{Outbox, Outgoing};
use kith_storage::{Batch, Storage};
use ruma::{ServerName, UserId};
use serde_json::{Value, json};

use super::E2ee;
use super::to_device::Target;
use crate::events::{DomainEvent, Subscriber};
use crate::services::error::Result;
use crate::services::messaging::servers_sharing_rooms;

impl E2ee {
    /// Another server says its user's devices or keys changed (`m.device_list_update`,
    /// `m.signing_key_update`): our users sharing a room with them hear of it in `/sync`.
    pub async fn note_remote_change(&self, origin: &ServerName, user_id: &str) -> Result<()> {
        if UserId::parse(user_id).map_or(true, |u| u.server_name() != origin) {
            return Ok(());
        }
        let mut batch = self.storage.batch();
        super::note_any_key_change(&mut batch, user_id)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// An `m.direct_to_device` EDU: messages from the origin's user to ours.
    pub async fn receive_to_device(
        &self,
        origin: &ServerName,
        content: &Value,
        devices_of: impl Fn(&str) -> Result<Vec<String>>,
        local: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let sender = content["sender"].as_str().unwrap_or_default();
        if UserId::parse(sender).map_or(true, |u| u.server_name() != origin) {
            return Ok(());
        }
        let kind = content["type"].as_str().unwrap_or_default();
        let mut messages = Vec::new();
        let empty = serde_json::Map::new();
        for (user, devices) in content["messages"].as_object().unwrap_or(&empty) {
            if !local(user) {
                continue;
            }
            for (device, message) in devices.as_object().unwrap_or(&empty) {
                messages.push((user.clone(), Target::of(device), message.clone()));
            }
        }
        let mut batch = self.storage.batch();
        self.store_to_device(&mut batch, sender, kind, messages, devices_of)?;
        Ok(self.storage.commit(batch).await?)
    }
}

/// Queues to-device messages for users of other servers, an EDU per server, in `batch`;
/// wakes the queue for them (it waits for the commit).
pub(super) fn to_device_into(
    outbox: &Outbox,
    batch: &mut Batch,
    sender: &str,
    kind: &str,
    message_id: &str,
    messages: BTreeMap<String, BTreeMap<String, Value>>,
) -> Result<()> {
    let mut by_server: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for (user, devices) in messages {
        let Some(server) = crate::util::server_of(&user).map(|s| s.to_string()) else {
            continue;
        };
        let devices: serde_json::Map<String, Value> = devices.into_iter().collect();
        by_server
            .entry(server.to_owned())
            .or_default()
            .insert(user, Value::Object(devices));
    }
    for (server, messages) in by_server {
        let edu = json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": kind, "message_id": message_id, "messages": messages,
        }});
        let position = Outbox::push_into(batch, &server, &Outgoing::Edu(edu))?;
        outbox.wake_at(&server, position);
    }
    Ok(())
}

/// Tells the servers sharing a room with a local user that the user's devices or keys
/// changed, from the event log (so every change is announced once, even across crashes).
pub struct DeviceListAnnouncer {
    pub outbox: Arc<Outbox>,
    pub server_name: String,
}

impl Subscriber for DeviceListAnnouncer {
    fn name(&self) -> &'static str {
        "e2ee.announce_device_lists"
    }

    fn wants(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::DeviceListChanged { .. })
    }

    fn handle(
        &self,
        storage: &Storage,
        event: &DomainEvent,
        batch: &mut Batch,
    ) -> kith_storage::Result<()> {
        let DomainEvent::DeviceListChanged { user_id } = event else {
            return Ok(());
        };
        let stream_id = storage.position();
        for server in servers_sharing_rooms(storage, user_id, &self.server_name)? {
            // Without `prev_id` a receiver takes it as "ask again" (Synapse fetches the
            // whole list with `/user/devices`).
            let edu = json!({ "edu_type": "m.device_list_update", "content": {
                "user_id": user_id, "device_id": "", "stream_id": stream_id, "prev_id": [],
            }});
            let position = Outbox::push_into(batch, &server, &Outgoing::Edu(edu))?;
            self.outbox.wake_at(&server, position);
        }
        Ok(())
    }
}
