//! Power levels as a server applies them outside the auth rules (who may redact others).

use ruma::RoomId;
use serde_json::Value;

use super::Messaging;
use crate::services::error::{Error, Result};

impl Messaging {
    pub fn state_content(&self, room_id: &RoomId, kind: &str) -> Result<Option<Value>> {
        let Some(id) = self.state_event_id(room_id, kind, "")? else {
            return Ok(None);
        };
        Ok(self
            .stored_pdu(id.as_str())?
            .map(|e| e.client_event()["content"].take()))
    }

    /// A user's power level; room creators of v12 rooms rank above everyone.
    pub fn power_level(&self, room_id: &RoomId, user_id: &str) -> Result<i64> {
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = kith_federation::pdu::rules(&room.version).map_err(Error::internal)?;
        let create_id = self.state_event_id(room_id, "m.room.create", "")?;
        let create = match create_id {
            Some(id) => self.stored_pdu(id.as_str())?,
            None => None,
        };
        let creator = create
            .as_ref()
            .and_then(|c| c.json.get("sender"))
            .and_then(|s| s.as_str());
        if rules.authorization.explicitly_privilege_room_creators {
            let additional = create
                .as_ref()
                .map(|c| c.client_event()["content"]["additional_creators"].take());
            let listed = additional
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|u| u == user_id));
            if creator == Some(user_id) || listed {
                return Ok(i64::MAX);
            }
        }
        let Some(levels) = self.state_content(room_id, "m.room.power_levels")? else {
            // No power levels yet: the creator has 100, everyone else 0.
            return Ok(if creator == Some(user_id) { 100 } else { 0 });
        };
        let level = levels["users"]
            .get(user_id)
            .or_else(|| levels.get("users_default"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok(level)
    }

    /// Whether the user may redact other people's events (the `redact` level, default 50).
    pub fn may_redact_others(&self, room_id: &RoomId, user_id: &str) -> Result<bool> {
        let needed = self
            .state_content(room_id, "m.room.power_levels")?
            .and_then(|l| l.get("redact").and_then(Value::as_i64))
            .unwrap_or(50);
        Ok(self.power_level(room_id, user_id)? >= needed)
    }
}
