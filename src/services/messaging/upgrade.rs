//! Room upgrades (`/upgrade`): a new room of the asked version that carries on the old one
//! (its `predecessor`), with the old room's settings, power levels and bans; the old room
//! ends with a tombstone naming the new one, its members can no longer write or invite
//! there, its local aliases move, and its members are invited to the new room unless anyone
//! may join it.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use super::membership::{Moderation, member_spec};
use super::{EventSpec, Messaging, NewRoom, Preset};
use crate::services::error::{Error, Result};

/// The state carried into the new room as it is.
const CARRIED: [&str; 7] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.avatar",
    "m.room.canonical_alias",
];

impl Messaging {
    /// Upgrades `room_id` to `version` as `user`, who must be allowed to send its
    /// tombstone; returns the new room.
    pub async fn upgrade(
        &self,
        user: &UserId,
        room_id: &RoomId,
        version: RoomVersionId,
    ) -> Result<OwnedRoomId> {
        self.require_joined(user, room_id)?;
        let levels = self.state_content(room_id, "m.room.power_levels")?;
        let needed = levels
            .as_ref()
            .and_then(|l| {
                l["events"]["m.room.tombstone"]
                    .as_i64()
                    .or_else(|| l["state_default"].as_i64())
            })
            .unwrap_or(50);
        if self.power_level(room_id, user.as_str())? < needed {
            return Err(Error::forbidden(
                "Upgrading a room needs the power to send its tombstone",
            ));
        }
        let rules = kith_federation::pdu::rules(&version).map_err(|_| {
            Error::new(
                crate::services::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported"),
            )
        })?;
        let mut power_levels = levels.unwrap_or_else(|| json!({}));
        // A v12 room's creators rank above everyone without being listed.
        if rules.authorization.explicitly_privilege_room_creators
            && let Some(users) = power_levels["users"].as_object_mut()
        {
            users.remove(user.as_str());
        }
        let mut initial_state = Vec::new();
        for kind in CARRIED {
            if let Some(content) = self.state_content(room_id, kind)? {
                initial_state.push(json!({ "type": kind, "state_key": "", "content": content }));
            }
        }
        let text = |kind: &str, key: &str| -> Result<Option<String>> {
            let content = self.state_content(room_id, kind)?;
            Ok(content.and_then(|c| c[key].as_str().map(str::to_owned)))
        };
        let mut creation = json!({ "predecessor": { "room_id": room_id } });
        if let Some(kind) = text("m.room.create", "type")? {
            creation["type"] = kind.into();
        }
        let new = NewRoom {
            version: Some(version),
            preset: Some(Preset::Private),
            creation_content: Some(creation),
            power_level_content_override: Some(power_levels.clone()),
            initial_state,
            name: text("m.room.name", "name")?,
            topic: text("m.room.topic", "topic")?,
            ..NewRoom::default()
        };
        let replacement = self.create_room(user, new).await?;
        self.end_old_room(user, room_id, &replacement, power_levels)
            .await?;
        self.carry_members(user, room_id, &replacement).await;
        Ok(replacement)
    }

    /// The tombstone, and power levels that let no one but the room's admins write or
    /// invite any more; the local aliases move to the new room.
    async fn end_old_room(
        &self,
        user: &UserId,
        room_id: &RoomId,
        replacement: &RoomId,
        mut power_levels: Value,
    ) -> Result<()> {
        let tombstone = EventSpec {
            sender: user.to_owned(),
            kind: TimelineEventType::RoomTombstone,
            state_key: Some(String::new()),
            content: json!({
                "body": "This room has been replaced",
                "replacement_room": replacement,
            }),
        };
        self.append(room_id, tombstone).await?;
        // The alias now names the new room.
        if self
            .state_content(room_id, "m.room.canonical_alias")?
            .is_some()
        {
            let cleared = EventSpec {
                sender: user.to_owned(),
                kind: TimelineEventType::RoomCanonicalAlias,
                state_key: Some(String::new()),
                content: json!({}),
            };
            self.append(room_id, cleared).await?;
        }
        let users_default = power_levels["users_default"].as_i64().unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        for key in ["events_default", "invite"] {
            let current = power_levels[key].as_i64().unwrap_or(0);
            power_levels[key] = current.max(restricted).into();
        }
        let levels = EventSpec {
            sender: user.to_owned(),
            kind: TimelineEventType::RoomPowerLevels,
            state_key: Some(String::new()),
            content: power_levels,
        };
        // Rooms of v12 list no creator; one the upgrader cannot restrict stays as it is.
        if let Err(e) = self.append(room_id, levels).await {
            tracing::info!(%room_id, "old room not restricted after its upgrade: {}", e.message());
        }
        // A published room's place in the directory goes to the new room.
        if self.is_published(room_id)? {
            self.set_published(user, replacement, true).await?;
            self.set_published(user, room_id, false).await?;
        }
        for (alias, record) in self.local_aliases()? {
            if record.room_id == room_id.as_str() {
                self.move_alias(&alias, replacement).await?;
            }
        }
        Ok(())
    }

    /// Bans carried over; the old room's members invited unless anyone may join (best
    /// effort: a member's server that cannot be reached misses the invite, and the
    /// tombstone still points the way).
    async fn carry_members(&self, user: &UserId, room_id: &RoomId, replacement: &RoomId) {
        let members = match self.members(room_id) {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(%room_id, "members not carried over: {}", e.message());
                return;
            }
        };
        let public = self
            .state_content(replacement, "m.room.join_rules")
            .ok()
            .flatten()
            .is_some_and(|c| c["join_rule"] == "public");
        for (member, membership) in members {
            let carried = match membership.membership.as_str() {
                "ban" => {
                    let ban = self.moderate(user, replacement, &member, Moderation::Ban, None);
                    ban.await
                }
                "join" if !public && member != user => {
                    let content = json!({});
                    let spec = member_spec(user, member.as_str(), "invite", content);
                    match self.draft(replacement).await {
                        Ok(draft) => self.send_invite(draft, spec).await,
                        Err(e) => Err(e),
                    }
                }
                _ => Ok(()),
            };
            if let Err(e) = carried {
                tracing::info!(%member, %replacement, "not carried into the upgraded room: {}", e.message());
            }
        }
    }
}
