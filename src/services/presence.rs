//! presence (of the original profile-service, apart here because it follows rooms):
//! what each user last said about being online. A change takes a stream position
//! so `/sync` delivers it; setting what is already set writes nothing, so clients that send
//! `set_presence` on every sync do not wake everyone's long-polls.

use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use kith_federation::{Outbox, Outgoing};
use kith_storage::{Storage, catalog};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::services::error::Result;
use crate::services::messaging::servers_sharing_rooms;
use crate::util::{StripedLocks, now_ms};

/// Counts as "currently active" this long after the last change.
const ACTIVE_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    pub position: u64,
}

impl Presence {
    /// The `m.presence` event content.
    pub fn content(&self) -> Value {
        let ago = now_ms().saturating_sub(self.last_active_ts);
        let mut content = json!({
            "presence": self.presence,
            "last_active_ago": ago,
            "currently_active": self.presence == "online" && ago < ACTIVE_MS,
        });
        if let Some(status) = &self.status_msg {
            content["status_msg"] = status.clone().into();
        }
        content
    }
}

pub struct Presences {
    storage: Storage,
    /// Other servers sharing a room with a local user hear of their changes.
    outbox: Arc<Outbox>,
    server_name: String,
    /// Per user, across the read-compare-write of `set` (two devices set at once).
    locks: StripedLocks,
    /// The position of the newest change, so a sync can skip looking when nothing changed
    /// since its token. Starts at the current position: after a restart, one look each.
    latest: AtomicU64,
}

impl Presences {
    pub fn new(storage: Storage, outbox: Arc<Outbox>, server_name: &str) -> Presences {
        let latest = AtomicU64::new(storage.position());
        Presences {
            storage,
            outbox,
            server_name: server_name.to_owned(),
            locks: StripedLocks::new(16),
            latest,
        }
    }

    pub fn get(&self, user_id: &str) -> Result<Option<Presence>> {
        Ok(self.storage.get(&catalog::USERID_PRESENCE, &user_id)?)
    }

    /// Sets the user's presence; `status_msg` `None` keeps the current message.
    pub async fn set(
        &self,
        user_id: &str,
        presence: &str,
        status_msg: Option<String>,
    ) -> Result<()> {
        let _guard = self.locks.lock(user_id).await;
        let current = self.get(user_id)?;
        let status_msg = status_msg.or_else(|| current.as_ref().and_then(|c| c.status_msg.clone()));
        if current
            .as_ref()
            .is_some_and(|c| c.presence == presence && c.status_msg == status_msg)
        {
            return Ok(());
        }
        let mut batch = self.storage.batch();
        let position = batch.new_position()?;
        // Raised before the commit makes the position visible and wakes syncs, so none of
        // them can pass this change by.
        self.latest.fetch_max(position, Ordering::Relaxed);
        let record = Presence {
            presence: presence.to_owned(),
            status_msg,
            last_active_ts: now_ms(),
            position,
        };
        if user_id.ends_with(&format!(":{}", self.server_name)) {
            let mut content = record.content();
            content["user_id"] = user_id.into();
            let edu = json!({ "edu_type": "m.presence", "content": { "push": [content] } });
            for server in servers_sharing_rooms(&self.storage, user_id, &self.server_name)? {
                let item = Outgoing::Edu(edu.clone());
                let position = Outbox::push_into(&mut batch, &server, &item)?;
                self.outbox.wake_at(&server, position);
            }
        }
        batch.put(&catalog::USERID_PRESENCE, &user_id, &record)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// An `m.presence` EDU: presence of `origin`'s users.
    pub async fn receive(&self, origin: &ruma::ServerName, content: &Value) -> Result<()> {
        let empty = Vec::new();
        for update in content["push"].as_array().unwrap_or(&empty) {
            let user = update["user_id"].as_str().unwrap_or_default();
            let theirs = ruma::UserId::parse(user).is_ok_and(|u| u.server_name() == origin);
            let Some(presence) = update["presence"].as_str().filter(|_| theirs) else {
                continue;
            };
            if !matches!(presence, "online" | "unavailable" | "offline") {
                continue;
            }
            let status = update["status_msg"].as_str().map(str::to_owned);
            self.set(user, presence, status).await?;
        }
        Ok(())
    }

    /// Whether anyone's presence may have changed after `since`.
    pub fn changed_since(&self, since: u64) -> bool {
        self.latest.load(Ordering::Relaxed) > since
    }
}
