//! Spaces (`/hierarchy`): a space's rooms and subspaces as `m.space.child` state names them,
//! walked breadth first, each with what a room list shows; rooms this server is not in are
//! asked of the servers the child event names (`/_matrix/federation/v1/hierarchy`).

use std::collections::{HashMap, HashSet, VecDeque};

use ruma::{OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use super::Messaging;
use crate::services::error::{Error, Result};
use crate::util::{next_offset, parse_offset};

/// The most rooms one walk visits.
const MAX_ROOMS: usize = 500;
/// The most rooms one walk asks of other servers, and servers per room.
const MAX_REMOTE: usize = 20;
const MAX_VIA: usize = 3;
/// How deep a walk goes when the client does not say.
const DEFAULT_DEPTH: usize = 10;

/// What `/hierarchy` asks for.
pub struct HierarchyQuery {
    pub suggested_only: bool,
    pub max_depth: Option<usize>,
    pub limit: usize,
    pub from: Option<String>,
}

/// Who looks at a room: a local user, or another server.
#[derive(Clone, Copy)]
pub enum Viewer<'a> {
    User(&'a UserId),
    Server(&'a ServerName),
}

impl Messaging {
    /// A room as a space listing shows it, with its `children_state`; `None` if this
    /// server does not have it.
    pub fn space_entry(&self, room_id: &RoomId, suggested_only: bool) -> Result<Option<Value>> {
        let Some(mut entry) = self.directory_entry(room_id)? else {
            return Ok(None);
        };
        let mut children = Vec::new();
        for (kind, key, id) in self
            .state_ids(room_id)?
            .into_iter()
            .map(|((k, s), id)| (k, s, id))
        {
            if kind != "m.space.child" {
                continue;
            }
            let Some(event) = self.stored_pdu(id.as_str())? else {
                continue;
            };
            let event = event.client_event();
            let content = &event["content"];
            let linked = content["via"].as_array().is_some_and(|v| !v.is_empty());
            if !linked || (suggested_only && content["suggested"] != true) {
                continue;
            }
            children.push(json!({
                "type": "m.space.child", "state_key": key, "content": content,
                "sender": event["sender"], "origin_server_ts": event["origin_server_ts"],
            }));
        }
        // The spec's order: by `order` (those with one first), then when they were added.
        children.sort_by(|a, b| {
            let order = |c: &Value| c["content"]["order"].as_str().map(str::to_owned);
            let ts = |c: &Value| c["origin_server_ts"].as_u64().unwrap_or(0);
            let key = |c: &Value| c["state_key"].as_str().unwrap_or("").to_owned();
            let rank = |c: &Value| (order(c).is_none(), order(c), ts(c), key(c));
            rank(a).cmp(&rank(b))
        });
        entry["children_state"] = children.into();
        // A restricted room says which rooms let people in, so that another server can
        // tell its users whether they may (as Synapse reads it).
        let allowed = self.allowed_rooms(room_id)?;
        if !allowed.is_empty() {
            entry["allowed_room_ids"] = json!(allowed);
        }
        Ok(Some(entry))
    }

    /// Whether `viewer` may see a room in a space listing: its members (and those invited
    /// to it), and anyone for a room that is world-readable or that anyone may join or
    /// knock on; a restricted room for those in a room it allows.
    pub fn may_view_in_space(&self, viewer: Viewer<'_>, room_id: &RoomId) -> Result<bool> {
        let content = |kind: &str| self.state_content(room_id, kind);
        let open = content("m.room.join_rules")?.is_some_and(|c| {
            matches!(
                c["join_rule"].as_str(),
                Some("public" | "knock" | "knock_restricted")
            )
        });
        let readable = content("m.room.history_visibility")?
            .is_some_and(|c| c["history_visibility"] == "world_readable");
        if open || readable {
            return Ok(true);
        }
        match viewer {
            Viewer::User(user) => {
                let membership = self.membership(user, room_id)?;
                if membership.is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite")) {
                    return Ok(true);
                }
                self.restricted_allows(user, room_id)
            }
            Viewer::Server(server) => {
                if self.server_in_room(server, room_id.as_str())? {
                    return Ok(true);
                }
                // A restricted room, for a server with members in a room it allows (as
                // Synapse decides).
                Ok(self.allowed_rooms(room_id)?.iter().any(|allowed| {
                    self.server_in_room(server, allowed.as_str())
                        .unwrap_or(false)
                }))
            }
        }
    }

    /// The rooms a restricted room's join rules let members of in.
    fn allowed_rooms(&self, room_id: &RoomId) -> Result<Vec<ruma::OwnedRoomId>> {
        let rules = self.state_content(room_id, "m.room.join_rules")?;
        let Some(rules) = rules.filter(|r| {
            matches!(
                r["join_rule"].as_str(),
                Some("restricted" | "knock_restricted")
            )
        }) else {
            return Ok(Vec::new());
        };
        Ok(rules["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == "m.room_membership")
            .filter_map(|a| a["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()))
            .collect())
    }

    /// Whether a restricted room's join rules let `user` in through a room they are in.
    pub fn restricted_allows(&self, user: &UserId, room_id: &RoomId) -> Result<bool> {
        for room in self.allowed_rooms(room_id)? {
            if self
                .membership(user, &room)?
                .is_some_and(|m| m.membership == "join")
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `/hierarchy`: the space and what it holds, breadth first, as `user` may see them.
    pub async fn hierarchy(
        &self,
        user: &UserId,
        root: &RoomId,
        query: &HierarchyQuery,
    ) -> Result<Value> {
        let forbidden = || Error::forbidden("You cannot see this space");
        if self.room(root)?.is_none() || !self.may_view_in_space(Viewer::User(user), root)? {
            return Err(forbidden());
        }
        let max_depth = query.max_depth.unwrap_or(DEFAULT_DEPTH);
        let mut queue = VecDeque::from([(root.to_owned(), 0usize, Vec::<OwnedServerName>::new())]);
        let mut seen = HashSet::new();
        let mut remote: HashMap<String, Value> = HashMap::new();
        let mut rooms = Vec::new();
        // Rooms looked at (found or not) and rooms asked of other servers, both bounded:
        // a space's children are anyone's to name.
        let mut looked = 0;
        let mut asked = 0;
        while let Some((room, depth, via)) = queue.pop_front() {
            if looked >= MAX_ROOMS {
                break;
            }
            if !seen.insert(room.clone()) {
                continue;
            }
            looked += 1;
            let entry = match self.room(&room)? {
                Some(_) if self.may_view_in_space(Viewer::User(user), &room)? => {
                    self.space_entry(&room, query.suggested_only)?
                }
                Some(_) => None,
                None => match remote.remove(room.as_str()) {
                    Some(entry) => Some(entry),
                    None if asked < MAX_REMOTE => {
                        asked += 1;
                        let via = &via[..via.len().min(MAX_VIA)];
                        (self.remote_space(&room, via, query.suggested_only, &mut remote)).await
                    }
                    None => None,
                },
            };
            let Some(entry) = entry else {
                continue;
            };
            if depth < max_depth {
                for child in entry["children_state"].as_array().into_iter().flatten() {
                    let Some(id) = child["state_key"]
                        .as_str()
                        .and_then(|r| RoomId::parse(r).ok())
                    else {
                        continue;
                    };
                    let via: Vec<OwnedServerName> = (child["content"]["via"].as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().and_then(|s| ServerName::parse(s).ok()))
                        .collect();
                    queue.push_back((id, depth + 1, via));
                }
            }
            rooms.push(entry);
        }
        let offset = parse_offset(query.from.as_deref())
            .ok_or_else(|| Error::invalid_param("Invalid from token"))?;
        let total = rooms.len();
        let page: Vec<Value> = rooms.into_iter().skip(offset).take(query.limit).collect();
        let mut answer = json!({ "rooms": page });
        if let Some(next) = next_offset(offset, query.limit, total) {
            answer["next_batch"] = next.into();
        }
        Ok(answer)
    }

    /// A room this server is not in, asked of the servers its child event names; the
    /// children that server described come along for later (`remote`).
    async fn remote_space(
        &self,
        room: &RoomId,
        via: &[OwnedServerName],
        suggested_only: bool,
        remote: &mut HashMap<String, Value>,
    ) -> Option<Value> {
        use ruma::api::federation::space::get_hierarchy::v1 as hierarchy;
        let client = self.federation().ok()?;
        for server in via.iter().filter(|s| s.as_str() != self.server_name()) {
            let mut request = hierarchy::Request::new(room.to_owned());
            request.suggested_only = suggested_only;
            let Ok(answer) = client.send(server, request).await else {
                continue;
            };
            for child in answer.children {
                if let Ok(child) = serde_json::to_value(&child) {
                    let id = child["room_id"].as_str().unwrap_or_default().to_owned();
                    remote.insert(id, child);
                }
            }
            let mut entry = serde_json::to_value(&answer.room.summary).ok()?;
            entry["children_state"] = serde_json::to_value(&answer.room.children_state).ok()?;
            return Some(entry);
        }
        None
    }

    /// Federation's `/hierarchy/{roomId}`: the room and its children this server has, as
    /// `origin` may see them.
    pub fn server_hierarchy(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<Value> {
        let not_found = || Error::not_found("Unknown room");
        if !self.may_view_in_space(Viewer::Server(origin), room_id)? {
            return Err(not_found());
        }
        let room = self
            .space_entry(room_id, suggested_only)?
            .ok_or_else(not_found)?;
        let mut children = Vec::new();
        let mut inaccessible = Vec::new();
        for child in room["children_state"].as_array().into_iter().flatten() {
            let Some(id) = child["state_key"]
                .as_str()
                .and_then(|r| RoomId::parse(r).ok())
            else {
                continue;
            };
            if self.room(&id)?.is_none() {
                continue;
            }
            match self.may_view_in_space(Viewer::Server(origin), &id)? {
                true => children.extend(self.space_entry(&id, suggested_only)?),
                false => inaccessible.push(id.to_string()),
            }
        }
        Ok(json!({ "room": room, "children": children, "inaccessible_children": inaccessible }))
    }
}
