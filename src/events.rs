//! The event log: the original design's events, appended to `stream_event` in the same
//! batch as the change that caused them (a transactional outbox), and the subscribers that
//! react to them from a persisted cursor. See `spec/events.md`.

use std::sync::Arc;

use kith_storage::{Batch, Storage, catalog};
use serde::{Deserialize, Serialize};

use crate::util::now_ms;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    Logout,
    DeviceDeleted,
    /// A login reused the device ID: the device stays, its old tokens die.
    Relogin,
    /// A refresh token was presented again after its successor was used.
    RefreshReplay,
    PasswordChanged,
    Deactivated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DomainEvent {
    #[serde(rename = "user.created")]
    UserCreated { user_id: String, admin: bool },
    #[serde(rename = "user.email_verified")]
    UserEmailVerified { user_id: String, email: String },
    #[serde(rename = "session.created")]
    SessionCreated { user_id: String, device_id: String },
    #[serde(rename = "session.revoked")]
    SessionRevoked {
        user_id: String,
        device_id: String,
        reason: RevokeReason,
    },
    #[serde(rename = "profile.updated")]
    ProfileUpdated {
        user_id: String,
        displayname: Option<String>,
        avatar_url: Option<String>,
    },
    #[serde(rename = "friendship.created")]
    FriendshipCreated {
        request_id: String,
        from: String,
        to: String,
    },
    #[serde(rename = "friendship.accepted")]
    FriendshipAccepted {
        request_id: String,
        from: String,
        to: String,
    },
    #[serde(rename = "friendship.removed")]
    FriendshipRemoved {
        user_id: String,
        other_user_id: String,
    },
    #[serde(rename = "message.sent")]
    MessageSent {
        room_id: String,
        event_id: String,
        sender: String,
    },
    #[serde(rename = "message.seen")]
    MessageSeen {
        room_id: String,
        event_id: String,
        user_id: String,
        receipt_type: String,
    },
    /// A local user's devices or keys changed (other servers in their rooms are told).
    #[serde(rename = "device_list.changed")]
    DeviceListChanged { user_id: String },
}

/// One entry of the log: the event and when it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub ts: u64,
    #[serde(flatten)]
    pub event: DomainEvent,
}

/// Appends `event` to the log in `batch`; it commits (or not) with the rest of the batch.
pub fn append(batch: &mut Batch, event: DomainEvent) -> kith_storage::Result<u64> {
    batch.append_event(&LogEntry {
        ts: now_ms(),
        event,
    })
}

/// Something that reacts to the log. `handle` adds its effects to the batch, which also
/// advances its cursor, so an event is handled exactly once in effect even across crashes;
/// handlers must still be idempotent, because a crash may replay the last batch's events.
pub trait Subscriber: Send + Sync + 'static {
    /// The cursor's name; never change it once released.
    fn name(&self) -> &'static str;
    fn handle(
        &self,
        storage: &Storage,
        event: &DomainEvent,
        batch: &mut Batch,
    ) -> kith_storage::Result<()>;
}

/// How many events one subscriber batch covers.
const CHUNK: usize = 256;

/// Runs `subscriber` until the process ends: catch up from its cursor, then wait for commits.
pub fn spawn(storage: Storage, subscriber: Arc<dyn Subscriber>) {
    tokio::spawn(async move {
        let mut commits = storage.subscribe();
        loop {
            match catch_up(&storage, subscriber.as_ref()).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(subscriber = subscriber.name(), %e, "event subscriber failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
            if commits.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Handles every visible event after the subscriber's cursor.
pub async fn catch_up(storage: &Storage, subscriber: &dyn Subscriber) -> kith_storage::Result<()> {
    loop {
        let name = subscriber.name();
        let cursor: u64 = storage
            .get(&catalog::SUBSCRIBER_CURSOR, &name)?
            .unwrap_or(0);
        let visible = storage.position();
        if cursor >= visible {
            return Ok(());
        }
        let entries: Vec<(u64, LogEntry)> =
            storage.scan_from(&catalog::STREAM_EVENT, &(cursor + 1), CHUNK)?;
        let mut batch = storage.batch();
        let mut last = cursor;
        for (position, entry) in entries.iter().take_while(|(p, _)| *p <= visible) {
            subscriber.handle(storage, &entry.event, &mut batch)?;
            last = *position;
        }
        if last == cursor {
            // Nothing logged up to `visible` (positions without events): move past them.
            last = visible;
        }
        batch.put(&catalog::SUBSCRIBER_CURSOR, &name, &last)?;
        storage.commit(batch).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_named_as_in_the_design() {
        let event = DomainEvent::UserCreated {
            user_id: "@a:x".into(),
            admin: false,
        };
        let json = serde_json::to_value(LogEntry { ts: 1, event }).unwrap();
        assert_eq!(json["type"], "user.created");
        assert_eq!(json["user_id"], "@a:x");
        let back: LogEntry = serde_json::from_value(json).unwrap();
        assert!(matches!(back.event, DomainEvent::UserCreated { .. }));
    }
}
