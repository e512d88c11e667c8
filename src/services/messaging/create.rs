//! Creating a room: the whole room in one write, events in the spec's order (create,
//! creator's join, power levels, join rules, history visibility, guest access, initial
//! state, name, topic, local invites); invitees on other servers are asked afterwards.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::Messaging;
use super::draft::EventSpec;
use super::membership::member_spec;
use crate::services::contacts::DIRECT_MAX_MEMBERS;
use crate::services::error::{Error, ErrorKind, Result};

const SUPPORTED_VERSIONS: [RoomVersionId; 3] =
    [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

/// The presets of the spec: who may join, and how invitees are privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Private,
    Public,
    /// A private chat whose invitees get the creator's power.
    TrustedPrivate,
}

/// What a creator asks for (`POST /createRoom`, its JSON already read).
#[derive(Debug, Default)]
pub struct NewRoom {
    /// The default is v12, as Synapse's.
    pub version: Option<RoomVersionId>,
    /// The default follows visibility: public rooms are public chats.
    pub preset: Option<Preset>,
    pub public: bool,
    pub is_direct: bool,
    pub invite: Vec<OwnedUserId>,
    /// The reason the invites give (a friend request's message).
    pub invite_reason: Option<String>,
    pub creation_content: Option<Value>,
    pub power_level_content_override: Option<Value>,
    /// Events of `type`, `state_key` (default empty) and `content`.
    pub initial_state: Vec<Value>,
    pub name: Option<String>,
    pub topic: Option<String>,
    /// `room_alias_name`: the alias made for the room on this server (its localpart),
    /// also its canonical alias.
    pub alias_name: Option<String>,
}

fn state(sender: &UserId, kind: &str, key: &str, content: Value) -> EventSpec {
    EventSpec {
        sender: sender.to_owned(),
        kind: TimelineEventType::from(kind),
        state_key: Some(key.to_owned()),
        content,
    }
}

/// Whether `value` is a JSON object; room content must be.
pub fn object(value: Value, what: &str) -> Result<Value> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(Error::bad_json(format!("{what} must be a JSON object")))
    }
}

impl Messaging {
    /// Creates a room as `creator`; returns its ID. The friendship policy is asked before
    /// anything is built, so a refusal leaves no orphan room; a remote invitee's refusal
    /// comes after the room exists (it stays, as with Synapse).
    pub async fn create_room(&self, creator: &UserId, new: NewRoom) -> Result<OwnedRoomId> {
        let version = new.version.clone().unwrap_or(RoomVersionId::V12);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Error::new(
                ErrorKind::UnsupportedRoomVersion,
                "Unsupported room version",
            ));
        }
        let invitees = self.check_invitees(creator, &new).await?;
        // The alias's lock is held until the room (and its alias) is written, so two rooms
        // made at once cannot both take it.
        let alias_key = new
            .alias_name
            .as_ref()
            .map(|n| format!("#{n}:{}", self.server_name()));
        let alias_guard = match &alias_key {
            Some(alias) => Some(self.name_locks.lock(alias).await),
            None => None,
        };
        let alias = match &new.alias_name {
            Some(name) => Some(self.free_alias(name)?),
            None => None,
        };
        // With its creator and an invitee, a room of two is a direct chat (a room made
        // alone is not yet anything; inviting into it decides).
        let direct = new.is_direct || invitees.len() + 1 == DIRECT_MAX_MEMBERS;
        let preset = new.preset.unwrap_or(match new.public {
            true => Preset::Public,
            false => Preset::Private,
        });
        let mut draft = self.draft_new_room(version.clone())?;
        for spec in self.initial_events(creator, &version, preset, &new)? {
            draft.add(spec)?;
        }
        if let Some(alias) = &alias {
            let content = json!({ "alias": alias });
            draft.add(state(creator, "m.room.canonical_alias", "", content))?;
        }
        if direct {
            draft.mark_direct();
        }
        let (local, remote): (Vec<&UserId>, Vec<&UserId>) = invitees
            .iter()
            .copied()
            .partition(|u| u.server_name().as_str() == self.server_name());
        for invitee in local {
            draft.add(self.invite_spec(creator, invitee, &new)?)?;
        }
        let room_id = draft
            .room_id()
            .map(RoomId::to_owned)
            .ok_or_else(|| Error::internal("room without ID"))?;
        let mut batch = self.storage.batch();
        if let Some(alias) = &alias {
            let record = super::aliases::Alias {
                room_id: room_id.to_string(),
                creator: creator.to_string(),
            };
            batch.put(
                &kith_storage::catalog::ALIAS_ROOMID,
                &alias.as_str(),
                &record,
            )?;
        }
        // A room made public is in the directory from the start, as with Synapse.
        if new.public {
            let key = room_id.as_str();
            batch.put(
                &kith_storage::catalog::ROOMID_PUBLISHED,
                &key,
                &crate::util::now_ms(),
            )?;
        }
        draft.commit(batch).await?;
        drop(alias_guard);
        // Invitees elsewhere are asked one by one, once the room exists; the first refusal
        // is the answer.
        for invitee in remote {
            let draft = self.draft(&room_id).await?;
            let spec = self.invite_spec(creator, invitee, &new)?;
            self.send_invite(draft, spec).await?;
        }
        Ok(room_id)
    }

    /// `#name:server` for a new room's alias: a valid alias not taken (400, 409 otherwise).
    fn free_alias(&self, name: &str) -> Result<String> {
        let alias = format!("#{name}:{}", self.server_name());
        if name.is_empty() || ruma::RoomAliasId::parse(&alias).is_err() || name.contains(':') {
            return Err(Error::invalid_param(format!(
                "{name:?} cannot name an alias"
            )));
        }
        if self.alias(&alias)?.is_some() {
            return Err(Error::new(
                ErrorKind::RoomInUse,
                format!("Room alias {alias} already exists"),
            ));
        }
        Ok(alias)
    }

    /// The invitees, each once and the creator not at all; local ones must exist, and the
    /// friendship policy must allow each.
    async fn check_invitees<'a>(
        &self,
        creator: &UserId,
        new: &'a NewRoom,
    ) -> Result<Vec<&'a UserId>> {
        let mut invitees: Vec<&UserId> = Vec::new();
        for invitee in &new.invite {
            if invitee != creator && !invitees.contains(&invitee.as_ref()) {
                invitees.push(invitee);
            }
        }
        for invitee in &invitees {
            let local = invitee.server_name().as_str() == self.server_name();
            if local && !self.auth.is_active(invitee)? {
                return Err(Error::not_found(format!("No such user {invitee}")));
            }
        }
        let direct = new.is_direct || invitees.len() + 1 == DIRECT_MAX_MEMBERS;
        for invitee in &invitees {
            if self.contacts.policy_applies_to(invitee).await {
                self.contacts
                    .check_invite(creator.as_str(), invitee.as_str(), direct)?;
            }
        }
        // A room of two is a friend request under policy `request`: counted before anything
        // is made, so past the allowance there is no room and no invite (429).
        if let [invitee] = invitees.as_slice() {
            self.contacts
                .charge_invite(creator.as_str(), invitee.as_str())?;
        }
        Ok(invitees)
    }

    fn invite_spec(&self, creator: &UserId, invitee: &UserId, new: &NewRoom) -> Result<EventSpec> {
        let reason = new.invite_reason.as_deref();
        let mut content = self.member_content(invitee.as_str(), reason)?;
        if new.is_direct {
            content["is_direct"] = true.into();
        }
        Ok(member_spec(creator, invitee.as_str(), "invite", content))
    }

    /// The room's first events, up to its topic.
    fn initial_events(
        &self,
        creator: &UserId,
        version: &RoomVersionId,
        preset: Preset,
        new: &NewRoom,
    ) -> Result<Vec<EventSpec>> {
        let public = preset == Preset::Public;
        let rules = kith_federation::pdu::rules(version).map_err(Error::internal)?;
        let mut create = match &new.creation_content {
            Some(content) => object(content.clone(), "creation_content")?,
            None => json!({}),
        };
        create["room_version"] = version.as_str().into();
        if !rules.authorization.use_room_create_sender {
            create["creator"] = creator.as_str().into();
        }
        let mut users = Map::new();
        if !rules.authorization.explicitly_privilege_room_creators {
            users.insert(creator.to_string(), 100.into());
        }
        if preset == Preset::TrustedPrivate {
            for invitee in &new.invite {
                users.insert(invitee.to_string(), 100.into());
            }
        }
        let mut power_levels = json!({
            "users": users, "users_default": 0, "events_default": 0, "state_default": 50,
            "ban": 50, "kick": 50, "redact": 50, "invite": if public { 50 } else { 0 },
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100,
            },
        });
        if let (Some(base), Some(Value::Object(overrides))) = (
            power_levels.as_object_mut(),
            &new.power_level_content_override,
        ) {
            base.extend(overrides.clone());
        }
        let me = creator.as_str();
        let join_rule = if public { "public" } else { "invite" };
        let guest_access = if public { "forbidden" } else { "can_join" };
        let mut events = vec![
            state(creator, "m.room.create", "", create),
            member_spec(creator, me, "join", self.member_content(me, None)?),
            state(creator, "m.room.power_levels", "", power_levels),
            state(
                creator,
                "m.room.join_rules",
                "",
                json!({ "join_rule": join_rule }),
            ),
            state(
                creator,
                "m.room.history_visibility",
                "",
                json!({ "history_visibility": "shared" }),
            ),
            state(
                creator,
                "m.room.guest_access",
                "",
                json!({ "guest_access": guest_access }),
            ),
        ];
        for event in &new.initial_state {
            let kind = event["type"]
                .as_str()
                .ok_or_else(|| Error::bad_json("initial_state events need a type"))?;
            let key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
            let content = object(
                event.get("content").cloned().unwrap_or(Value::Null),
                "initial_state content",
            )?;
            events.push(state(creator, kind, key, content));
        }
        if let Some(name) = &new.name {
            events.push(state(creator, "m.room.name", "", json!({ "name": name })));
        }
        if let Some(topic) = &new.topic {
            events.push(state(
                creator,
                "m.room.topic",
                "",
                json!({ "topic": topic }),
            ));
        }
        Ok(events)
    }
}
