//! History visibility: which past events a room member may read. Under `shared` (the
//! default) and `world_readable`, a member reads the whole history; under `invited`, only
//! from their invite on; under `joined`, only what happened while they were joined.

use ruma::RoomId;

use super::{Messaging, StoredPdu};
use crate::services::error::Result;

/// What a reader may see of a room, decided once per request.
pub enum Visibility {
    All,
    /// Events at which the reader's membership was one of these.
    While(&'static [&'static str]),
}

impl Messaging {
    /// The room's current `history_visibility`, as it applies to its current members.
    pub fn visibility(&self, room_id: &RoomId) -> Result<Visibility> {
        let content = self.state_content(room_id, "m.room.history_visibility")?;
        let setting = content
            .as_ref()
            .and_then(|c| c["history_visibility"].as_str())
            .unwrap_or("shared");
        Ok(match setting {
            "joined" => Visibility::While(&["join"]),
            "invited" => Visibility::While(&["invite", "join"]),
            _ => Visibility::All,
        })
    }

    /// Whether `user` may read `event` under `visibility`.
    pub fn may_see(&self, visibility: &Visibility, user: &str, event: &StoredPdu) -> Result<bool> {
        let Visibility::While(memberships) = visibility else {
            return Ok(true);
        };
        let Some(current) = self.membership_row(user, &event.room_id)? else {
            return Ok(false);
        };
        let then = self.member_event_at(user, &current, event.position)?;
        Ok(then.is_some_and(|e| memberships.contains(&e.membership())))
    }
}
