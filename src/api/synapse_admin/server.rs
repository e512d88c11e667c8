//! `/_synapse/admin/v1`: the server's version and event reports.

use axum::Json;
use axum::extract::{Query, State};
use ruma::RoomId;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::Paging;
use crate::gateway::{Result, ServerAdmin};
use crate::services::AppState;
use crate::services::messaging::Reported;

/// `GET /v1/server_version` (no token needed, as Synapse's)
pub async fn version() -> Json<Value> {
    Json(json!({ "server_version": concat!("kith ", env!("CARGO_PKG_VERSION")) }))
}

#[derive(Deserialize)]
pub struct ReportQuery {
    #[serde(flatten)]
    paging: Paging,
    dir: Option<String>,
    user_id: Option<String>,
    room_id: Option<String>,
}

/// `GET /v1/event_reports?from&limit&dir&user_id&room_id`: reports of events, newest
/// first (`dir=f`: oldest first), with the room's name and alias and the event's sender.
pub async fn event_reports(
    State(state): State<AppState>,
    Query(query): Query<ReportQuery>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (from, limit) = query.paging.read()?;
    let oldest_first = !super::backwards(query.dir.as_deref(), true)?;
    let messaging = &state.messaging;
    let mut reports: Vec<_> = (messaging.reports()?.into_iter())
        .filter_map(|report| match &report.about {
            Reported::Event { room_id, event_id } => {
                Some((report.clone(), room_id.clone(), event_id.clone()))
            }
            _ => None,
        })
        .filter(|(report, room_id, _)| {
            query
                .user_id
                .as_ref()
                .is_none_or(|u| report.reporter.contains(u.as_str()))
                && query
                    .room_id
                    .as_ref()
                    .is_none_or(|r| room_id.contains(r.as_str()))
        })
        .collect();
    if !oldest_first {
        reports.reverse();
    }
    let total = reports.len();
    let mut page = Vec::new();
    for (report, room_id, event_id) in reports.iter().skip(from).take(limit) {
        let room = RoomId::parse(room_id).ok();
        let state_of = |kind: &str, key: &str| -> Result<Option<Value>> {
            match &room {
                Some(room) => Ok(messaging.state_content(room, kind)?.map(|c| c[key].clone())),
                None => Ok(None),
            }
        };
        let sender = messaging
            .stored_pdu(event_id)?
            .map(|e| e.client_event()["sender"].take());
        page.push(json!({
            "id": report.id,
            "received_ts": report.received_ts,
            "room_id": room_id,
            "name": state_of("m.room.name", "name")?,
            "event_id": event_id,
            "user_id": report.reporter,
            "reason": report.reason,
            "score": null,
            "sender": sender,
            "canonical_alias": state_of("m.room.canonical_alias", "alias")?,
        }));
    }
    let next = from + page.len();
    let mut answer = json!({ "event_reports": page, "total": total });
    if super::more_after(from, limit, total) {
        answer["next_token"] = json!(next);
    }
    Ok(Json(answer))
}
