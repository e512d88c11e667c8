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
    /// Whether it reacts to `event`; the others it passes by without writing anything.
    fn wants(&self, event: &DomainEvent) -> bool;
    fn handle(
        &self,
        storage: &Storage,
        event: &DomainEvent,
        batch: &mut Batch,
    ) -> kith_storage::Result<()>;
}

/// A service's reaction to `user.created`: `create` writes the new user's rows in its
/// tables (once: it finds them there if the event is read again after a crash).
pub struct OnUserCreated {
    pub name: &'static str,
    pub create: fn(&Storage, &str, &mut Batch) -> kith_storage::Result<()>,
}

impl Subscriber for OnUserCreated {
    fn name(&self) -> &'static str {
        self.name
    }

    fn wants(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::UserCreated { .. })
    }

    fn handle(
        &self,
        storage: &Storage,
        event: &DomainEvent,
        batch: &mut Batch,
    ) -> kith_storage::Result<()> {
        match event {
            DomainEvent::UserCreated { user_id, .. } => (self.create)(storage, user_id, batch),
            _ => Ok(()),
        }
    }
}

/// How many events one subscriber batch covers.
const CHUNK: usize = 256;

/// How far a subscriber may get past its stored cursor while passing events by before the
/// cursor is written anyway: what it reads again (and passes by again) after a restart.
const IDLE_CURSOR_LAG: u64 = 4096;

/// Where a subscriber is: `at` in memory, `stored` on disk (written with what it handles).
#[derive(Debug, Default)]
pub struct Cursor {
    at: Option<u64>,
    stored: u64,
}

/// Runs `subscriber` until the process ends: catch up from its cursor, then wait for commits.
pub fn spawn(storage: Storage, subscriber: Arc<dyn Subscriber>) {
    tokio::spawn(async move {
        let mut commits = storage.subscribe();
        let mut cursor = Cursor::default();
        loop {
            match catch_up(&storage, subscriber.as_ref(), &mut cursor).await {
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

/// Handles every visible event after the subscriber's cursor that it wants. The cursor is
/// written (a synced write) with what it handles, or once it is `IDLE_CURSOR_LAG` ahead of
/// what is stored; events it passes by cost no write.
pub async fn catch_up(
    storage: &Storage,
    subscriber: &dyn Subscriber,
    cursor: &mut Cursor,
) -> kith_storage::Result<()> {
    let name = subscriber.name();
    let mut at = match cursor.at {
        Some(at) => at,
        None => {
            cursor.stored = storage
                .get(&catalog::SUBSCRIBER_CURSOR, &name)?
                .unwrap_or(0);
            cursor.stored
        }
    };
    loop {
        cursor.at = Some(at);
        let visible = storage.position();
        if at >= visible {
            return Ok(());
        }
        let entries: Vec<(u64, LogEntry)> =
            storage.scan_from(&catalog::STREAM_EVENT, &(at + 1), CHUNK)?;
        let mut batch = storage.batch();
        let mut handled = false;
        let mut last = at;
        for (position, entry) in entries.iter().take_while(|(p, _)| *p <= visible) {
            if subscriber.wants(&entry.event) {
                subscriber.handle(storage, &entry.event, &mut batch)?;
                handled = true;
            }
            last = *position;
        }
        if last == at {
            // Nothing logged up to `visible` (positions without events): move past them.
            last = visible;
        }
        if handled || last - cursor.stored >= IDLE_CURSOR_LAG {
            batch.put(&catalog::SUBSCRIBER_CURSOR, &name, &last)?;
            storage.commit(batch).await?;
            cursor.stored = last;
        }
        at = last;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the `user.created` events it is given.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Subscriber for Counter {
        fn name(&self) -> &'static str {
            "test.count_users"
        }
        fn wants(&self, event: &DomainEvent) -> bool {
            matches!(event, DomainEvent::UserCreated { .. })
        }
        fn handle(&self, _: &Storage, _: &DomainEvent, _: &mut Batch) -> kith_storage::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    async fn log(storage: &Storage, event: DomainEvent) -> u64 {
        let mut batch = storage.batch();
        let position = append(&mut batch, event).unwrap();
        storage.commit(batch).await.unwrap();
        position
    }

    fn seen(room: &str) -> DomainEvent {
        DomainEvent::MessageSent {
            room_id: room.into(),
            event_id: "$e".into(),
            sender: "@a:x".into(),
        }
    }

    fn stored(storage: &Storage) -> Option<u64> {
        storage
            .get(&catalog::SUBSCRIBER_CURSOR, &"test.count_users")
            .unwrap()
    }

    /// A subscriber handles what it wants once, writes its cursor with that, passes the
    /// rest by without a write, and after a restart handles nothing twice.
    #[tokio::test]
    async fn subscribers_write_their_cursor_only_with_what_they_handle() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let counter = Counter::default();
        let mut cursor = Cursor::default();
        log(&storage, seen("!a:x")).await;
        let user = DomainEvent::UserCreated {
            user_id: "@a:x".into(),
            admin: false,
        };
        let created = log(&storage, user).await;
        catch_up(&storage, &counter, &mut cursor).await.unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(stored(&storage).is_some_and(|c| c >= created));
        let before = stored(&storage);

        for _ in 0..5 {
            log(&storage, seen("!a:x")).await;
        }
        catch_up(&storage, &counter, &mut cursor).await.unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            stored(&storage),
            before,
            "passing events by wrote the cursor"
        );
        assert_eq!(cursor.at, Some(storage.position()));

        // A restart reads from the stored cursor: the messages again, the user not.
        let mut restarted = Cursor::default();
        catch_up(&storage, &counter, &mut restarted).await.unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

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
