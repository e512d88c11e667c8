//! `/_synapse/admin/v1/rooms`: the rooms this server holds, one room's details, members
//! and state, and the media its events name.

use axum::Json;
use axum::extract::{Path, Query, State};
use ruma::{OwnedRoomId, RoomId};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::Paging;
use crate::gateway::{Error, Result, ServerAdmin};
use crate::services::messaging::Room;
use crate::services::{AppState, Services};

fn joined_members(state: &Services, room_id: &RoomId) -> Result<Vec<ruma::OwnedUserId>> {
    Ok((state.messaging.members(room_id)?.into_iter())
        .filter(|(_, membership)| membership.membership == "join")
        .map(|(user, _)| user)
        .collect())
}

/// A room as Synapse lists it.
fn listed(state: &Services, room_id: &RoomId, room: &Room) -> Result<Value> {
    let messaging = &state.messaging;
    let events: Vec<Value> = (messaging.state_events(room_id.as_str())?.iter())
        .map(|e| e.client_event())
        .collect();
    let event = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind && e["state_key"] == "")
    };
    let field =
        |kind: &str, key: &str| event(kind).map_or(Value::Null, |e| e["content"][key].clone());
    let create = event("m.room.create");
    let joined = joined_members(state, room_id)?;
    let local = joined
        .iter()
        .filter(|u| u.server_name() == state.server_name)
        .count();
    // Before room version 11 the creator is in the content; from 11 on, the sender.
    let creator = create.map_or(Value::Null, |e| match &e["content"]["creator"] {
        Value::String(creator) => json!(creator),
        _ => e["sender"].clone(),
    });
    let create = create.map_or(Value::Null, |e| e["content"].clone());
    Ok(json!({
        "room_id": room_id,
        "name": field("m.room.name", "name"),
        "canonical_alias": field("m.room.canonical_alias", "alias"),
        "joined_members": joined.len(),
        "joined_local_members": local,
        "version": room.version,
        "creator": creator,
        "encryption": field("m.room.encryption", "algorithm"),
        "federatable": create["m.federate"].as_bool().unwrap_or(true),
        "public": messaging.is_published(room_id)?,
        "join_rules": field("m.room.join_rules", "join_rule"),
        "guest_access": field("m.room.guest_access", "guest_access"),
        "history_visibility": field("m.room.history_visibility", "history_visibility"),
        "state_events": events.len(),
        "room_type": create.get("type").cloned().unwrap_or(Value::Null),
    }))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    paging: Paging,
    order_by: Option<String>,
    dir: Option<String>,
    search_term: Option<String>,
}

/// `GET /v1/rooms?from&limit&order_by&dir&search_term`
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (from, limit) = query.paging.read()?;
    // Synapse's orders, each with its natural direction (`dir=b` flips it).
    let (key, descending) = match query.order_by.as_deref().unwrap_or("name") {
        "alphabetical" | "name" => ("name", false),
        "size" | "joined_members" => ("joined_members", true),
        key @ ("canonical_alias" | "creator" | "encryption" | "federatable" | "public"
        | "join_rules" | "guest_access" | "history_visibility") => (key, false),
        key @ ("joined_local_members" | "version" | "state_events") => (key, true),
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown value for order_by: {other}"
            )));
        }
    };
    let backwards = super::backwards(query.dir.as_deref(), false)?;
    let term = match query.search_term.as_deref() {
        Some("") => {
            return Err(Error::invalid_param(
                "search_term cannot be an empty string",
            ));
        }
        term => term.map(str::to_lowercase),
    };
    let exact = query.search_term.as_deref();
    let mut rooms = Vec::new();
    for (room_id, room) in state.messaging.rooms()? {
        let shown = listed(&state, &room_id, &room)?;
        let matches = |value: &Value| {
            value
                .as_str()
                .is_some_and(|v| term.as_ref().is_some_and(|t| v.to_lowercase().contains(t)))
        };
        if term.is_some()
            && !matches(&shown["name"])
            && !matches(&shown["canonical_alias"])
            && exact != Some(room_id.as_str())
        {
            continue;
        }
        rooms.push(shown);
    }
    rooms.sort_by(|a, b| {
        super::order(&a[key], &b[key]).then_with(|| super::order(&a["room_id"], &b["room_id"]))
    });
    if descending != backwards {
        rooms.reverse();
    }
    let total = rooms.len();
    let page: Vec<Value> = rooms.into_iter().skip(from).take(limit).collect();
    let mut answer = json!({ "offset": from, "rooms": page, "total_rooms": total });
    if super::more_after(from, limit, total) {
        answer["next_batch"] = json!(from + limit);
    }
    if from > 0 {
        answer["prev_batch"] = json!(from.saturating_sub(limit));
    }
    Ok(Json(answer))
}

/// A room this server holds, or `404 "Room not found"`.
fn held(state: &Services, room_id: &str) -> Result<(OwnedRoomId, Room)> {
    let not_found = || Error::not_found("Room not found");
    let room_id = RoomId::parse(room_id).map_err(|_| not_found())?;
    let room = state.messaging.room(&room_id)?.ok_or_else(not_found)?;
    Ok((room_id, room))
}

/// `GET /v1/rooms/{room_id}`
pub async fn details(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (room_id, room) = held(&state, &room_id)?;
    let mut shown = listed(&state, &room_id, &room)?;
    let messaging = &state.messaging;
    let field = |kind: &str, key: &str| -> Result<Value> {
        Ok(messaging
            .state_content(&room_id, kind)?
            .map_or(Value::Null, |c| c[key].clone()))
    };
    let tombstone = messaging.state_content(&room_id, "m.room.tombstone")?;
    let mut devices = 0;
    for user in joined_members(&state, &room_id)? {
        if user.server_name() == state.server_name {
            devices += state.sessions.device_ids(user.as_str())?.len();
        }
    }
    shown["avatar"] = field("m.room.avatar", "url")?;
    shown["topic"] = field("m.room.topic", "topic")?;
    shown["joined_local_devices"] = json!(devices);
    shown["forgotten"] = json!(false);
    shown["tombstoned"] = json!(tombstone.is_some());
    shown["replacement_room"] = tombstone.map_or(Value::Null, |t| t["replacement_room"].clone());
    Ok(Json(shown))
}

/// `GET /v1/rooms/{room_id}/members`: the joined members, local and remote.
pub async fn members(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (room_id, _) = held(&state, &room_id)?;
    let members = joined_members(&state, &room_id)?;
    Ok(Json(json!({ "total": members.len(), "members": members })))
}

#[derive(Deserialize)]
pub struct StateQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `GET /v1/rooms/{room_id}/state?type=`: the current state, as clients see events, with
/// the old client format's `age` and `user_id` beside, as Synapse gives them here.
pub async fn room_state(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    Query(query): Query<StateQuery>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (room_id, _) = held(&state, &room_id)?;
    let wanted = |e: &Value| {
        query
            .kind
            .as_ref()
            .is_none_or(|kind| e["type"] == kind.as_str())
    };
    let events: Vec<Value> = (state.messaging.state_events(room_id.as_str())?.iter())
        .map(|e| e.client_event())
        .filter(wanted)
        .map(|mut e| {
            e["age"] = e["unsigned"]["age"].clone();
            e["user_id"] = e["sender"].clone();
            e
        })
        .collect();
    Ok(Json(json!({ "state": events })))
}
