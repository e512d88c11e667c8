//! presence (of the original profile-service, apart here because it follows rooms):
//! what each user last said about being online. A change takes a stream position
//! so `/sync` delivers it; setting what is already set writes nothing, so clients that send
//! `set_presence` on every sync do not wake everyone's long-polls.

use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use kith_federation::{Outbox, Outgoing};
use kith_storage::{Batch, Storage, catalog};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::services::error::{Error, Result};
use crate::services::messaging::servers_sharing_rooms;
use crate::util::{StripedLocks, now_ms};

/// Counts as "currently active" this long after the last change.
const ACTIVE_MS: u64 = 5 * 60 * 1000;
/// The longest status message kept, in bytes; another server's longer one is cut.
pub const MAX_STATUS_BYTES: usize = 1024;
/// The most updates of one `m.presence` EDU applied; the rest are dropped.
const MAX_UPDATES_PER_EDU: usize = 500;

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
    /// Across one remote EDU's read-compare-write (remote users are set only through it).
    remote_lock: tokio::sync::Mutex<()>,
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
            remote_lock: tokio::sync::Mutex::new(()),
            latest,
        }
    }

    pub fn get(&self, user_id: &str) -> Result<Option<Presence>> {
        Ok(self.storage.get(&catalog::USERID_PRESENCE, &user_id)?)
    }

    /// Sets a local user's presence; `status_msg` `None` keeps the current message (one
    /// over [`MAX_STATUS_BYTES`] is refused).
    pub async fn set(
        &self,
        user_id: &str,
        presence: &str,
        status_msg: Option<String>,
    ) -> Result<()> {
        if status_msg
            .as_ref()
            .is_some_and(|s| s.len() > MAX_STATUS_BYTES)
        {
            return Err(Error::invalid_param(format!(
                "status_msg holds at most {MAX_STATUS_BYTES} bytes"
            )));
        }
        let _guard = self.locks.lock(user_id).await;
        let mut batch = self.storage.batch();
        if self.stage_into(&mut batch, user_id, presence, status_msg)? {
            self.storage.commit(batch).await?;
        }
        Ok(())
    }

    /// An `m.presence` EDU: presence of `origin`'s users, all in one write (a status
    /// message over [`MAX_STATUS_BYTES`] cut, at most 500 updates taken).
    pub async fn receive(&self, origin: &ruma::ServerName, content: &Value) -> Result<()> {
        let empty = Vec::new();
        let updates = content["push"].as_array().unwrap_or(&empty);
        let _guard = self.remote_lock.lock().await;
        let mut batch = self.storage.batch();
        let mut changed = false;
        for update in updates.iter().take(MAX_UPDATES_PER_EDU) {
            let user = update["user_id"].as_str().unwrap_or_default();
            let theirs = ruma::UserId::parse(user).is_ok_and(|u| u.server_name() == origin);
            let Some(presence) = update["presence"].as_str().filter(|_| theirs) else {
                continue;
            };
            if !matches!(presence, "online" | "unavailable" | "offline") {
                continue;
            }
            let status = update["status_msg"]
                .as_str()
                .map(|s| cut(s, MAX_STATUS_BYTES));
            changed |= self.stage_into(&mut batch, user, presence, status)?;
        }
        if changed {
            self.storage.commit(batch).await?;
        }
        Ok(())
    }

    /// Adds a presence change to `batch`, with a stream position, and for a local user
    /// the EDUs to the servers sharing a room; false (nothing added) if it is what is set.
    /// The caller holds the user's lock (a local user's) or the remote lock (another
    /// server's users').
    fn stage_into(
        &self,
        batch: &mut Batch,
        user_id: &str,
        presence: &str,
        status_msg: Option<String>,
    ) -> Result<bool> {
        let current = self.get(user_id)?;
        let status_msg = status_msg.or_else(|| current.as_ref().and_then(|c| c.status_msg.clone()));
        if current
            .as_ref()
            .is_some_and(|c| c.presence == presence && c.status_msg == status_msg)
        {
            return Ok(false);
        }
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
                let position = Outbox::push_into(batch, &server, &item)?;
                self.outbox.wake_at(&server, position);
            }
        }
        batch.put(&catalog::USERID_PRESENCE, &user_id, &record)?;
        Ok(true)
    }

    /// Whether anyone's presence may have changed after `since`.
    pub fn changed_since(&self, since: u64) -> bool {
        self.latest.load(Ordering::Relaxed) > since
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_status_messages_are_cut_at_a_character_boundary() {
        assert_eq!(super::cut("héllo", 2), "h");
        assert_eq!(super::cut("héllo", 3), "hé");
        assert_eq!(super::cut("hi", 10), "hi");
    }
}
