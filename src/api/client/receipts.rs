//! Receipts, read markers and typing (messaging-service's ephemeral events).

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt::{self, v3::ReceiptType};
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};
use ruma::{EventId, RoomId};
use serde_json::json;

use super::rooms::require_joined;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::{PRIVATE_READ, StoredPdu};
use crate::services::session::Session;
use crate::util::now_ms;

/// The longest typing notification honoured, as Synapse does.
const MAX_TYPING: Duration = Duration::from_secs(120);

/// An event of this room, for a receipt or marker to point at.
fn room_event(state: &AppState, room_id: &RoomId, event_id: &EventId) -> Result<StoredPdu> {
    state
        .messaging
        .stored_pdu(event_id.as_str())?
        .filter(|s| s.room_id == room_id.as_str())
        .ok_or_else(|| Error::not_found("Event not found in this room"))
}

async fn set_fully_read(state: &AppState, session: &Session, event: &StoredPdu) -> Result<()> {
    let content = json!({ "event_id": event.event_id });
    Ok(state
        .messaging
        .set_account_data(
            session.user_id.as_str(),
            Some(&event.room_id),
            "m.fully_read",
            content,
        )
        .await?)
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn receipt(
    State(state): State<AppState>,
    request: Ruma<create_receipt::v3::Request>,
) -> Result<RumaResponse<create_receipt::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    let event = room_event(&state, &body.room_id, &body.event_id)?;
    let user = session.user_id.as_str();
    match &body.receipt_type {
        ReceiptType::FullyRead => set_fully_read(&state, session, &event).await?,
        kind @ (ReceiptType::Read | ReceiptType::ReadPrivate) => {
            let thread = body.thread.as_str();
            state
                .messaging
                .set_receipt(user, kind.as_str(), thread, &event)
                .await?;
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {}",
                other.as_str()
            )));
        }
    }
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`: the fully-read marker and either
/// read receipt at once.
pub async fn read_markers(
    State(state): State<AppState>,
    request: Ruma<set_read_marker::v3::Request>,
) -> Result<RumaResponse<set_read_marker::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    require_joined(&state, session, &body.room_id)?;
    // Every event is checked before anything is written.
    let find = |id: &Option<ruma::OwnedEventId>| {
        id.as_deref()
            .map(|id| room_event(&state, &body.room_id, id))
            .transpose()
    };
    let fully_read = find(&body.fully_read)?;
    let read = find(&body.read_receipt)?;
    let private = find(&body.private_read_receipt)?;
    if let Some(event) = &fully_read {
        set_fully_read(&state, session, event).await?;
    }
    let user = session.user_id.as_str();
    for (kind, event) in [("m.read", read), (PRIVATE_READ, private)] {
        if let Some(event) = event {
            state
                .messaging
                .set_receipt(user, kind, None, &event)
                .await?;
        }
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`: typing ends at the timeout
/// (at most two minutes) unless renewed.
pub async fn typing(
    State(state): State<AppState>,
    request: Ruma<create_typing_event::v3::Request>,
) -> Result<RumaResponse<create_typing_event::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    if session.user_id != body.user_id {
        return Err(Error::forbidden("Cannot set another user's typing state"));
    }
    require_joined(&state, session, &body.room_id)?;
    let room = body.room_id.as_str();
    let user = session.user_id.as_str();
    match &body.state {
        Typing::Yes(info) => {
            let timeout = info.timeout.min(MAX_TYPING);
            let until = now_ms() + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            // When the time is up, syncing clients hear that the user stopped.
            state.messaging.set_typing(room, user, Some(until)).await?;
        }
        _ => state.messaging.set_typing(room, user, None).await?,
    }
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}
