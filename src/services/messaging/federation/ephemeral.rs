//! Typing and receipts other servers send (EDUs) for their users in our rooms.

use super::*;

impl Messaging {
    /// An `m.typing` EDU: a user of the origin started or stopped typing in a room they
    /// are joined to, for [`REMOTE_TYPING`] unless renewed. Returns the room whose typing
    /// must be expired then.
    pub async fn receive_typing(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let field = |name: &str| {
            content
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        let (room, user) = (field("room_id"), field("user_id"));
        if !self.is_member_from(origin, room, user)? {
            return Ok(());
        }
        let typing = content
            .get("typing")
            .and_then(|t| t.as_bool())
            .unwrap_or(false);
        let until = typing.then(|| now_ms() + REMOTE_TYPING.as_millis() as u64);
        self.set_typing(room, user, until).await
    }

    /// An `m.receipt` EDU: read receipts of the origin's users, per room.
    pub async fn receive_receipts(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let Some(rooms) = content.as_object() else {
            return Ok(());
        };
        for (room, kinds) in rooms {
            let Some(readers) = kinds.get("m.read").and_then(|r| r.as_object()) else {
                continue;
            };
            for (user, receipt) in readers {
                if !self.is_member_from(origin, room, user)? {
                    continue;
                }
                let event_id = receipt
                    .get("event_ids")
                    .and_then(|ids| ids.as_array())
                    .and_then(|ids| ids.last())
                    .and_then(|id| id.as_str());
                let thread = receipt
                    .get("data")
                    .and_then(|d| d.get("thread_id"))
                    .and_then(|t| t.as_str());
                let Some(event) = event_id
                    .map(|id| self.stored_pdu(id))
                    .transpose()?
                    .flatten()
                else {
                    continue;
                };
                if event.room_id == *room {
                    self.set_receipt(user, "m.read", thread, &event).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether `user` is one of `origin`'s users and joined to `room`, and the room's ACL
    /// lets `origin` in.
    fn is_member_from(&self, origin: &ServerName, room: &str, user: &str) -> Result<bool> {
        let theirs = UserId::parse(user).is_ok_and(|u| u.server_name() == origin);
        let joined = theirs
            && self
                .membership_row(user, room)?
                .is_some_and(|m| m.membership == "join");
        Ok(joined && self.acl_allows(room, origin)?)
    }
}
