//! The public room directory: rooms published by their admins (or made public), listed with
//! what a room list shows (name, topic, alias, avatar, members, join rule), searchable,
//! biggest first, paged; served to clients and, the same, to other servers.

use kith_storage::catalog;
use ruma::RoomId;
use serde_json::{Value, json};

use super::Messaging;
use crate::services::error::{Error, Result};
use crate::util::{next_offset, now_ms, parse_offset};

/// The most rooms one page lists.
const MAX_LIMIT: usize = 500;

/// What a directory page asks for.
#[derive(Debug, Default)]
pub struct DirectoryQuery {
    /// Found in the name, topic or canonical alias, ignoring case.
    pub search: Option<String>,
    /// Only rooms of these types (`None` in the list: rooms without a type).
    pub room_types: Option<Vec<Option<String>>>,
    /// An offset token from an earlier page.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

impl Messaging {
    /// Whether the room is in the public room directory.
    pub fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .storage
            .contains(&catalog::ROOMID_PUBLISHED, &room_id.as_str())?)
    }

    /// Publishes or unpublishes a room: its members who may set its canonical alias may
    /// (the power Synapse asks for); 404 for a room this server does not know.
    pub async fn set_published(
        &self,
        user: &ruma::UserId,
        room_id: &RoomId,
        published: bool,
    ) -> Result<()> {
        if self.room(room_id)?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        self.require_joined(user, room_id)?;
        let levels = self.state_content(room_id, "m.room.power_levels")?;
        let needed = levels
            .as_ref()
            .and_then(|l| {
                l["events"]["m.room.canonical_alias"]
                    .as_i64()
                    .or_else(|| l["state_default"].as_i64())
            })
            .unwrap_or(50);
        if self.power_level(room_id, user.as_str())? < needed {
            return Err(Error::forbidden(
                "Publishing a room needs the power to set its alias",
            ));
        }
        let key = room_id.as_str();
        match published {
            true => {
                self.storage
                    .put(&catalog::ROOMID_PUBLISHED, &key, &now_ms())
                    .await?
            }
            false => {
                let mut batch = self.storage.batch();
                batch.delete(&catalog::ROOMID_PUBLISHED, &key)?;
                self.storage.commit(batch).await?;
            }
        }
        Ok(())
    }

    /// A page of the directory: `{chunk, next_batch?, prev_batch?, total_room_count_estimate}`.
    pub fn public_rooms(&self, query: &DirectoryQuery) -> Result<Value> {
        let rows: Vec<(String, u64)> = self.storage.scan_prefix(&catalog::ROOMID_PUBLISHED, &())?;
        let search = query.search.as_ref().map(|s| s.to_lowercase());
        let mut rooms = Vec::new();
        for (room, _) in rows {
            let Ok(room_id) = RoomId::parse(&room) else {
                continue;
            };
            let Some(entry) = self.directory_entry(&room_id)? else {
                continue;
            };
            let found = search.as_ref().is_none_or(|term| {
                ["name", "topic", "canonical_alias"]
                    .iter()
                    .filter_map(|k| entry[k].as_str())
                    .any(|text| text.to_lowercase().contains(term.as_str()))
            });
            let kind = entry["room_type"].as_str().map(str::to_owned);
            let typed = query.room_types.as_ref().is_none_or(|t| t.contains(&kind));
            if found && typed {
                rooms.push(entry);
            }
        }
        rooms.sort_by(|a, b| {
            let members = |e: &Value| e["num_joined_members"].as_u64().unwrap_or(0);
            members(b)
                .cmp(&members(a))
                .then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
        });
        let total = rooms.len();
        let offset = parse_offset(query.since.as_deref())
            .ok_or_else(|| Error::invalid_param("Invalid since token"))?;
        let limit = query.limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
        let chunk: Vec<Value> = rooms.into_iter().skip(offset).take(limit).collect();
        let mut page = json!({ "chunk": chunk, "total_room_count_estimate": total });
        if let Some(next) = next_offset(offset, limit, total) {
            page["next_batch"] = next.into();
        }
        if offset > 0 {
            page["prev_batch"] = format!("o{}", offset.saturating_sub(limit)).into();
        }
        Ok(page)
    }

    /// A room as the directory lists it, from its current state; `None` for a room this
    /// server no longer has.
    pub(super) fn directory_entry(&self, room_id: &RoomId) -> Result<Option<Value>> {
        if self.room(room_id)?.is_none() {
            return Ok(None);
        }
        let content = |kind: &str| self.state_content(room_id, kind);
        let mut entry = json!({
            "room_id": room_id,
            "num_joined_members": self.joined_members(room_id)?.len(),
            "world_readable": content("m.room.history_visibility")?
                .is_some_and(|c| c["history_visibility"] == "world_readable"),
            "guest_can_join": content("m.room.guest_access")?
                .is_some_and(|c| c["guest_access"] == "can_join"),
            "join_rule": content("m.room.join_rules")?
                .and_then(|c| c["join_rule"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "invite".into()),
        });
        let fields = [
            ("name", "m.room.name", "name"),
            ("topic", "m.room.topic", "topic"),
            ("canonical_alias", "m.room.canonical_alias", "alias"),
            ("avatar_url", "m.room.avatar", "url"),
            ("room_type", "m.room.create", "type"),
        ];
        for (field, kind, key) in fields {
            if let Some(value) = content(kind)?.and_then(|c| c[key].as_str().map(str::to_owned)) {
                entry[field] = value.into();
            }
        }
        Ok(Some(entry))
    }
}

impl Messaging {
    /// Another server's directory page, asked of it over federation (`server` in a
    /// client's request), passed on as it answered.
    pub async fn remote_public_rooms(
        &self,
        server: &ruma::ServerName,
        query: &DirectoryQuery,
    ) -> Result<Value> {
        use ruma::api::federation::directory::get_public_rooms_filtered::v1 as filtered;
        let client = self.federation()?;
        let mut request = filtered::Request::new();
        request.limit = query.limit.and_then(|l| ruma::UInt::try_from(l).ok());
        request.since = query.since.clone();
        request.filter.generic_search_term = query.search.clone();
        let answer = client
            .send(server, request)
            .await
            .map_err(crate::services::error::remote_error)?;
        let mut page = json!({ "chunk": answer.chunk });
        for (key, value) in [
            ("next_batch", answer.next_batch),
            ("prev_batch", answer.prev_batch),
        ] {
            if let Some(value) = value {
                page[key] = value.into();
            }
        }
        if let Some(total) = answer.total_room_count_estimate {
            page["total_room_count_estimate"] = u64::from(total).into();
        }
        Ok(page)
    }
}
