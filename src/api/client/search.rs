//! `POST /search` (messaging-service): messages, names and topics in the user's rooms, with
//! context, profiles, groups and the rooms' state as asked.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use ruma::api::client::search::search_events::v3::{GroupingKey, OrderBy, Request};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::gateway::{Error, Result, Ruma};
use crate::services::AppState;
use crate::services::messaging::{Found, SearchOrder, SearchQuery, StoredPdu};
use crate::util::{next_offset, parse_offset};

/// Results per page when the filter does not say.
const DEFAULT_LIMIT: usize = 10;
/// The most results per page.
const MAX_LIMIT: usize = 100;

/// The member's name and avatar in the room, as the room's state has them now.
fn profile(state: &AppState, reader: &UserId, event: &StoredPdu) -> Option<(String, Value)> {
    let sender = event.json.get("sender")?.as_str()?.to_owned();
    let room = RoomId::parse(&event.room_id).ok()?;
    let member = (state.messaging)
        .state_event_for(reader, &room, ("m.room.member", &sender))
        .ok()??;
    let content = member.client_event()["content"].take();
    let mut profile = json!({});
    for key in ["displayname", "avatar_url"] {
        if let Some(value) = content.get(key).filter(|v| v.is_string()) {
            profile[key] = value.clone();
        }
    }
    Some((sender, profile))
}

/// `POST /_matrix/client/v3/search?next_batch` `{search_categories: {room_events}}`
pub async fn search(State(state): State<AppState>, request: Ruma<Request>) -> Result<Json<Value>> {
    let reader = &request.session()?.user_id;
    let body = &request.body;
    let Some(criteria) = &body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let rooms = criteria.filter.rooms.as_ref();
    let query = SearchQuery {
        term: &criteria.search_term,
        keys: criteria
            .keys
            .iter()
            .flatten()
            .map(|k| k.as_str().to_owned())
            .collect(),
        rooms: rooms.map(|r| r.iter().map(|r| r.to_string()).collect()),
        order: match criteria.order_by {
            Some(OrderBy::Recent) => SearchOrder::Recent,
            _ => SearchOrder::Rank,
        },
    };
    let (found, highlights) = state.messaging.search_messages(reader, &query)?;
    let total = found.len();
    let from = parse_offset(body.next_batch.as_deref())
        .ok_or_else(|| Error::invalid_param("Invalid next_batch token"))?;
    let limit = criteria
        .filter
        .limit
        .map_or(DEFAULT_LIMIT, |l| usize::try_from(l).unwrap_or(MAX_LIMIT))
        .clamp(1, MAX_LIMIT);
    let page: Vec<&Found> = found.iter().skip(from).take(limit).collect();
    let context = &criteria.event_context;
    let (before, after) = (
        usize::try_from(context.before_limit).unwrap_or(0),
        usize::try_from(context.after_limit).unwrap_or(0),
    );
    let mut results = Vec::new();
    for hit in &page {
        let mut result = json!({ "rank": hit.rank, "result": hit.event.client_event() });
        if before > 0 || after > 0 || context.include_profile {
            let (earlier, start, later, end) =
                state
                    .messaging
                    .around(reader, &hit.event, (before, after))?;
            let mut profiles = serde_json::Map::new();
            if context.include_profile {
                let all = [&hit.event].into_iter().chain(&earlier).chain(&later);
                profiles.extend(all.filter_map(|e| profile(&state, reader, e)));
            }
            result["context"] = json!({
                "events_before": earlier.iter().map(StoredPdu::client_event).collect::<Vec<_>>(),
                "events_after": later.iter().map(StoredPdu::client_event).collect::<Vec<_>>(),
                "start": start.to_string(),
                "end": end.to_string(),
                "profile_info": profiles,
            });
        }
        results.push(result);
    }
    let mut room_events = json!({
        "count": total,
        "highlights": highlights,
        "results": results,
    });
    if let Some(next) = next_offset(from, limit, total) {
        room_events["next_batch"] = next.into();
    }
    let mut groups = serde_json::Map::new();
    for grouping in &criteria.groupings.group_by {
        let (name, key): (&str, fn(&StoredPdu) -> Option<String>) = match grouping.key {
            Some(GroupingKey::RoomId) => ("room_id", |e| Some(e.room_id.clone())),
            Some(GroupingKey::Sender) => ("sender", |e| {
                e.json.get("sender")?.as_str().map(str::to_owned)
            }),
            _ => continue,
        };
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for hit in &page {
            if let Some(value) = key(&hit.event) {
                by.entry(value)
                    .or_default()
                    .push(hit.event.event_id.to_string());
            }
        }
        let listed: serde_json::Map<String, Value> = by
            .into_iter()
            .enumerate()
            .map(|(order, (value, ids))| (value, json!({ "results": ids, "order": order })))
            .collect();
        groups.insert(name.to_owned(), Value::Object(listed));
    }
    if !groups.is_empty() {
        room_events["groups"] = Value::Object(groups);
    }
    if criteria.include_state == Some(true) {
        let mut states = serde_json::Map::new();
        for hit in &page {
            if states.contains_key(&hit.event.room_id) {
                continue;
            }
            let room = RoomId::parse(&hit.event.room_id).map_err(Error::internal)?;
            let current = state.messaging.readable_state(&room, None)?;
            let events: Vec<Value> = current.iter().map(StoredPdu::client_event).collect();
            states.insert(hit.event.room_id.clone(), events.into());
        }
        room_events["state"] = Value::Object(states);
    }
    Ok(Json(
        json!({ "search_categories": { "room_events": room_events } }),
    ))
}
