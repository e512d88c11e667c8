//! Account data and sync filters: what a user's clients keep on the server for themselves.
//! Only the owner reads or writes them.

use axum::extract::State;
use http::StatusCode;
use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::api::client::filter::{FilterDefinition, create_filter, get_filter};
use ruma::api::client::tag::{create_tag, delete_tag, get_tags};
use ruma::{RoomId, UserId};
use serde_json::Value;

use super::{json_of, raw};
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::contacts::CONTACTS_EVENT;
use crate::services::session::Session;

/// Account data types kith keeps itself; clients change them through their own endpoints.
const SERVER_MANAGED: [(&str, &str); 3] = [
    ("m.push_rules", "/pushrules"),
    ("m.fully_read", "/read_markers"),
    (CONTACTS_EVENT, "the contacts API"),
];

fn own(session: &Session, user_id: &UserId) -> Result<()> {
    if session.user_id != user_id {
        return Err(Error::forbidden(
            "Cannot access another user's account data",
        ));
    }
    Ok(())
}

fn writable(kind: &str, content: &Value) -> Result<()> {
    if let Some((_, endpoint)) = SERVER_MANAGED.iter().find(|(k, _)| *k == kind) {
        // The spec's answer: 405 with M_BAD_JSON.
        return Err(Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("Cannot set {kind} through this API; use {endpoint}"),
        ));
    }
    if !content.is_object() {
        return Err(Error::bad_json("Account data must be a JSON object"));
    }
    Ok(())
}

fn not_found() -> Error {
    Error::not_found("Account data not found")
}

/// The room must be one the user is or was in (Synapse refuses other room IDs too).
fn known_room(state: &AppState, session: &Session, room_id: &RoomId) -> Result<()> {
    match state.messaging.membership(&session.user_id, room_id)? {
        Some(_) => Ok(()),
        None => Err(Error::forbidden("You are not in this room")),
    }
}

/// The longest tag name Synapse takes, in bytes.
const MAX_TAG_BYTES: usize = 255;

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags` → `{tags}`
pub async fn get_tags(
    State(state): State<AppState>,
    request: Ruma<get_tags::v3::Request>,
) -> Result<axum::Json<Value>> {
    let session = request.session()?;
    let body = &request.body;
    own(session, &body.user_id)?;
    known_room(&state, session, &body.room_id)?;
    let tags = state
        .messaging
        .tags(body.user_id.as_str(), body.room_id.as_str())?;
    Ok(axum::Json(serde_json::json!({ "tags": tags["tags"] })))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}` `{order?}`
pub async fn set_tag(
    State(state): State<AppState>,
    request: Ruma<create_tag::v3::Request>,
) -> Result<RumaResponse<create_tag::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    own(session, &body.user_id)?;
    known_room(&state, session, &body.room_id)?;
    if body.tag.is_empty() || body.tag.len() > MAX_TAG_BYTES {
        return Err(Error::invalid_param(format!(
            "A tag is 1 to {MAX_TAG_BYTES} bytes"
        )));
    }
    if body
        .tag_info
        .order
        .is_some_and(|o| !(0.0..=1.0).contains(&o))
    {
        return Err(Error::invalid_param("A tag's order is between 0 and 1"));
    }
    let info = serde_json::to_value(&body.tag_info).map_err(Error::internal)?;
    (state.messaging)
        .set_tag(
            body.user_id.as_str(),
            body.room_id.as_str(),
            &body.tag,
            Some(info),
        )
        .await?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn delete_tag(
    State(state): State<AppState>,
    request: Ruma<delete_tag::v3::Request>,
) -> Result<RumaResponse<delete_tag::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    own(session, &body.user_id)?;
    known_room(&state, session, &body.room_id)?;
    (state.messaging)
        .set_tag(
            body.user_id.as_str(),
            body.room_id.as_str(),
            &body.tag,
            None,
        )
        .await?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn set_global(
    State(state): State<AppState>,
    request: Ruma<set_global_account_data::v3::Request>,
) -> Result<RumaResponse<set_global_account_data::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    own(session, &body.user_id)?;
    let kind = body.event_type.to_string();
    let content = json_of(&body.data)?;
    writable(&kind, &content)?;
    state
        .messaging
        .set_account_data(body.user_id.as_str(), None, &kind, content)
        .await?;
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global(
    State(state): State<AppState>,
    request: Ruma<get_global_account_data::v3::Request>,
) -> Result<RumaResponse<get_global_account_data::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    own(session, &body.user_id)?;
    let content = state
        .messaging
        .account_data(body.user_id.as_str(), None, &body.event_type.to_string())?
        .ok_or_else(not_found)?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(
        raw(&content)?,
    )))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn set_room(
    State(state): State<AppState>,
    request: Ruma<set_room_account_data::v3::Request>,
) -> Result<RumaResponse<set_room_account_data::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    own(session, &body.user_id)?;
    known_room(&state, session, &body.room_id)?;
    let kind = body.event_type.to_string();
    let content = json_of(&body.data)?;
    writable(&kind, &content)?;
    let room = Some(body.room_id.as_str());
    state
        .messaging
        .set_account_data(body.user_id.as_str(), room, &kind, content)
        .await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room(
    State(state): State<AppState>,
    request: Ruma<get_room_account_data::v3::Request>,
) -> Result<RumaResponse<get_room_account_data::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    own(session, &body.user_id)?;
    let room = Some(body.room_id.as_str());
    let kind = body.event_type.to_string();
    let content = state
        .messaging
        .account_data(body.user_id.as_str(), room, &kind)?
        .ok_or_else(not_found)?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(raw(
        &content,
    )?)))
}

/// `POST /_matrix/client/v3/user/{userId}/filter`: stored as sent.
pub async fn create(
    State(state): State<AppState>,
    request: Ruma<create_filter::v3::Request>,
) -> Result<RumaResponse<create_filter::v3::Response>> {
    let session = request.session()?;
    if session.user_id != request.body.user_id {
        return Err(Error::forbidden("Cannot create filters for other users"));
    }
    // ruma has checked the shape; what is kept is what the client sent.
    let filter: Value =
        serde_json::from_slice(&request.raw_body).map_err(|e| Error::bad_json(e.to_string()))?;
    let id = state
        .messaging
        .create_filter(session.user_id.as_str(), filter)
        .await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get(
    State(state): State<AppState>,
    request: Ruma<get_filter::v3::Request>,
) -> Result<axum::Json<Value>> {
    let session = request.session()?;
    let body = &request.body;
    if session.user_id != body.user_id {
        return Err(Error::forbidden("Cannot read other users' filters"));
    }
    let filter = state
        .messaging
        .filter(body.user_id.as_str(), &body.filter_id)?
        .ok_or_else(|| Error::not_found("No such filter"))?;
    Ok(axum::Json(filter))
}

/// A stored filter as ruma's type, for `/sync`.
pub fn stored_filter(
    state: &AppState,
    session: &Session,
    filter_id: &str,
) -> Result<FilterDefinition> {
    let filter = state
        .messaging
        .filter(session.user_id.as_str(), filter_id)?
        .ok_or_else(|| Error::not_found("No such filter"))?;
    serde_json::from_value(filter).map_err(Error::internal)
}
