//! Changing a profile: the profile, its directory words and `profile.updated` in one
//! write; then the new name or avatar goes into every room the user is in, as a new
//! `m.room.member` event (each room its own write, as each room has its own lock).

use ruma::UserId;
use ruma::events::TimelineEventType;
use serde_json::Value;

use super::{Profile, directory, new_profile, profile};
use crate::events::{self, DomainEvent};
use crate::services::Services;
use crate::services::error::{Error, ErrorKind, Result};
use crate::services::messaging::EventSpec;

/// The most bytes a profile field may hold, as JSON.
const MAX_FIELD_BYTES: usize = 1024;
/// The most bytes a field's name may have, and a whole profile, as the spec sets them.
const MAX_KEY_BYTES: usize = 255;
const MAX_PROFILE_BYTES: usize = 64 * 1024;

fn too_large(message: String) -> Error {
    Error::new(ErrorKind::ProfileTooLarge, message)
}

impl Services {
    /// Sets (`Some`) or removes (`None`) one field of the user's profile.
    pub async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<Value>,
    ) -> Result<()> {
        if value
            .as_ref()
            .is_some_and(|v| v.to_string().len() > MAX_FIELD_BYTES)
        {
            return Err(too_large(format!(
                "A profile field holds at most {MAX_FIELD_BYTES} bytes"
            )));
        }
        if field.len() > MAX_KEY_BYTES {
            return Err(Error::new(
                ErrorKind::KeyTooLarge,
                format!("A profile field's name has at most {MAX_KEY_BYTES} bytes"),
            ));
        }
        let user = user_id.as_str();
        let _guard = self.profile_locks.lock(user).await;
        let stored = self.created_profile(user).await?;
        let old = stored.clone().unwrap_or_else(|| new_profile(user));
        let mut new = old.clone();
        let text = |v: Option<Value>| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::bad_json(format!("{field} must be a string"))),
        };
        match field {
            "displayname" => new.displayname = text(value)?.filter(|s| !s.is_empty()),
            "avatar_url" => {
                let url = text(value)?.filter(|s| !s.is_empty());
                if url
                    .as_deref()
                    .is_some_and(|u| !<&ruma::MxcUri>::from(u).is_valid())
                {
                    return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
                }
                new.avatar_url = url;
            }
            _ => match value {
                Some(value) => {
                    new.fields.insert(field.to_owned(), value);
                }
                None => {
                    new.fields.remove(field);
                }
            },
        }
        let size = serde_json::to_vec(&new).map_or(usize::MAX, |v| v.len());
        if size > MAX_PROFILE_BYTES {
            return Err(too_large(format!(
                "A profile holds at most {MAX_PROFILE_BYTES} bytes"
            )));
        }
        let mut batch = self.storage.batch();
        directory::reindex(&mut batch, user, stored.as_ref(), &new)?;
        batch.put(&kith_storage::catalog::USERID_PROFILE, &user, &new)?;
        let public_change = new.displayname != old.displayname || new.avatar_url != old.avatar_url;
        if public_change {
            let updated = DomainEvent::ProfileUpdated {
                user_id: user.to_owned(),
                displayname: new.displayname.clone(),
                avatar_url: new.avatar_url.clone(),
            };
            events::append(&mut batch, updated)?;
        }
        self.storage.commit(batch).await?;
        if public_change {
            self.announce_profile(user_id, &new).await;
        }
        Ok(())
    }

    /// The user's profile, waiting briefly for the event log to create a new user's, so a
    /// change right after registration neither races the creation nor is undone by it.
    async fn created_profile(&self, user: &str) -> Result<Option<Profile>> {
        for _ in 0..50 {
            if let Some(found) = profile(&self.storage, user)? {
                return Ok(Some(found));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(None)
    }

    /// A new member event with the profile in every room the user has joined. A room that
    /// refuses (power levels forbid changing one's own member event, say) keeps the old
    /// name; the others still get the new one.
    async fn announce_profile(&self, user_id: &UserId, new: &Profile) {
        let rooms = match self.messaging.joined_rooms(user_id.as_str()) {
            Ok(rooms) => rooms,
            Err(e) => {
                tracing::warn!(user = %user_id, error = ?e, "cannot list rooms for a profile change");
                return;
            }
        };
        for room in rooms {
            if let Err(e) = self.announce_in_room(user_id, new, &room).await {
                tracing::warn!(user = %user_id, %room, error = ?e, "profile not announced in room");
            }
        }
    }

    async fn announce_in_room(&self, user_id: &UserId, new: &Profile, room: &str) -> Result<()> {
        let room_id = ruma::RoomId::parse(room).map_err(Error::internal)?;
        let mut draft = self.messaging.draft(&room_id).await?;
        // Still joined under the room's lock, and keeping whatever else the event said.
        let current = self.messaging.membership(user_id.as_str(), room)?;
        let Some(current) = current.filter(|m| m.membership == "join") else {
            return Ok(());
        };
        let event = self.messaging.stored_pdu(current.event_id.as_str())?;
        let mut content = event
            .map(|e| e.client_event()["content"].take())
            .filter(Value::is_object)
            .unwrap_or_else(|| serde_json::json!({ "membership": "join" }));
        for (key, value) in [
            ("displayname", &new.displayname),
            ("avatar_url", &new.avatar_url),
        ] {
            match value {
                Some(value) => content[key] = value.clone().into(),
                None => {
                    content.as_object_mut().map(|c| c.remove(key));
                }
            }
        }
        draft.add(EventSpec {
            sender: user_id.to_owned(),
            kind: TimelineEventType::RoomMember,
            state_key: Some(user_id.to_string()),
            content,
        })?;
        draft.commit(self.storage.batch()).await?;
        Ok(())
    }
}
