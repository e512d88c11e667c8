//! A server admin's shutdown of a room, step by step (the room-deletion task calls them in
//! order): blocking it, moving this server's users out of it, into a notice room if asked,
//! and moving its aliases along. Users on other servers are theirs to moderate.

use kith_storage::catalog;
use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Messaging;
use super::aliases::Alias;
use super::create::{NewRoom, Preset};
use super::draft::EventSpec;
use crate::services::error::{Error, Result};
use crate::util::now_ms;

/// The notice room's name and message when the admin gives none (Synapse's).
pub const NOTICE_ROOM_NAME: &str = "Content Violation Notification";
pub const NOTICE_MESSAGE: &str = "Sharing illegal content on this server is not permitted \
                                  and rooms in violation will be blocked.";

#[derive(Debug, Serialize, Deserialize)]
struct Blocked {
    by: String,
    ts: u64,
}

impl Messaging {
    pub fn is_blocked(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .storage
            .contains(&catalog::ROOMID_BLOCKED, &room_id.as_str())?)
    }

    /// 403 for a room an admin blocked: no one joins it, is invited or knocks through us.
    pub(super) fn refuse_blocked(&self, room_id: &RoomId) -> Result<()> {
        match self.is_blocked(room_id)? {
            true => Err(Error::forbidden(
                "This room has been blocked on this server",
            )),
            false => Ok(()),
        }
    }

    /// Blocks a room, known here or not (blocking again keeps the first record); `by`: who
    /// asked, as [`crate::services::room_deletion::DeletionRequest`] names them.
    pub async fn block(&self, room_id: &RoomId, by: &str) -> Result<()> {
        if self.is_blocked(room_id)? {
            return Ok(());
        }
        let blocked = Blocked {
            by: by.to_owned(),
            ts: now_ms(),
        };
        let key = room_id.as_str();
        Ok(self
            .storage
            .put(&catalog::ROOMID_BLOCKED, &key, &blocked)
            .await?)
    }

    /// This server's users who are joined to the room, invited or knocking on it, with
    /// that membership: those a shutdown moves out.
    pub fn local_members_in(&self, room_id: &RoomId) -> Result<Vec<(OwnedUserId, String)>> {
        Ok((self.members(room_id)?.into_iter())
            .filter(|(user, m)| {
                user.server_name().as_str() == self.server_name()
                    && matches!(m.membership.as_str(), "join" | "invite" | "knock")
            })
            .map(|(user, m)| (user, m.membership))
            .collect())
    }

    /// The room a shutdown moves people to, made by `creator`: public to join, and
    /// newcomers cannot speak there (power -10), as Synapse makes it.
    pub async fn create_notice_room(&self, creator: &UserId, name: &str) -> Result<OwnedRoomId> {
        let new = NewRoom {
            preset: Some(Preset::Public),
            name: Some(name.to_owned()),
            power_level_content_override: Some(json!({ "users_default": -10 })),
            ..NewRoom::default()
        };
        self.create_room(creator, new).await
    }

    /// Moves `user` out of a room being shut down: they leave it (declining an invite,
    /// withdrawing a knock) and forget it; if they were joined and there is a notice
    /// room, they join that.
    pub async fn move_out(
        &self,
        user: &UserId,
        room_id: &RoomId,
        was: &str,
        notice_room: Option<&RoomId>,
    ) -> Result<()> {
        self.leave(user, room_id, None).await?;
        self.forget(user, room_id).await?;
        if let (Some(notice_room), "join") = (notice_room, was) {
            self.join(user, notice_room, None, &[]).await?;
        }
        Ok(())
    }

    /// Posts the shutdown's message into the notice room.
    pub async fn post_notice(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        message: &str,
    ) -> Result<()> {
        let spec = EventSpec {
            sender: sender.to_owned(),
            kind: TimelineEventType::RoomMessage,
            state_key: None,
            content: json!({ "msgtype": "m.text", "body": message }),
        };
        self.append(room_id, spec).await?;
        Ok(())
    }

    /// Points this server's aliases of `from` at `to`; returns them.
    pub async fn move_aliases(&self, from: &RoomId, to: &RoomId) -> Result<Vec<String>> {
        let mut moved = Vec::new();
        for (alias, Alias { room_id, .. }) in self.local_aliases()? {
            if room_id == from.as_str() {
                self.move_alias(&alias, to).await?;
                moved.push(alias);
            }
        }
        Ok(moved)
    }

    /// Takes a room out of the public directory (a shut-down room has no one to answer).
    pub async fn unpublish(&self, room_id: &RoomId) -> Result<()> {
        let mut batch = self.storage.batch();
        batch.delete(&catalog::ROOMID_PUBLISHED, &room_id.as_str())?;
        Ok(self.storage.commit(batch).await?)
    }
}
