//! Presence (presence-service).

use std::time::Duration;

use axum::extract::State;
use ruma::api::client::presence::{get_presence, set_presence};
use ruma::presence::PresenceState;

use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;

/// `PUT /_matrix/client/v3/presence/{userId}/status`
pub async fn set(
    State(state): State<AppState>,
    request: Ruma<set_presence::v3::Request>,
) -> Result<RumaResponse<set_presence::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    if session.user_id != body.user_id {
        return Err(Error::forbidden("Cannot set another user's presence"));
    }
    let presence = known(&body.presence)?;
    state
        .presence
        .set(body.user_id.as_str(), presence, body.status_msg.clone())
        .await?;
    Ok(RumaResponse(set_presence::v3::Response::new()))
}

/// The presence states of the spec; anything else is a bad parameter.
pub fn known(presence: &PresenceState) -> Result<&'static str> {
    match presence {
        PresenceState::Online => Ok("online"),
        PresenceState::Offline => Ok("offline"),
        PresenceState::Unavailable => Ok("unavailable"),
        other => Err(Error::invalid_param(format!(
            "Unknown presence state {}",
            other.as_str()
        ))),
    }
}

/// `GET /_matrix/client/v3/presence/{userId}/status`: one's own, or that of someone
/// sharing a room (403 otherwise, as Synapse); a user who never set one is offline.
pub async fn get(
    State(state): State<AppState>,
    request: Ruma<get_presence::v3::Request>,
) -> Result<RumaResponse<get_presence::v3::Response>> {
    let session = request.session()?;
    let user_id = &request.body.user_id;
    if state.auth.account(user_id)?.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    if *user_id != session.user_id {
        let theirs = state.messaging.joined_rooms(user_id)?;
        let mine = state.messaging.joined_rooms(&session.user_id)?;
        if !theirs.iter().any(|room| mine.contains(room)) {
            return Err(Error::forbidden("You do not share a room with this user"));
        }
    }
    let Some(presence) = state.presence.get(user_id.as_str())? else {
        return Ok(RumaResponse(get_presence::v3::Response::new(
            PresenceState::Offline,
        )));
    };
    let mut response =
        get_presence::v3::Response::new(PresenceState::from(presence.presence.as_str()));
    let content = presence.content();
    response.status_msg = presence.status_msg;
    response.currently_active = content["currently_active"].as_bool();
    response.last_active_ago = content["last_active_ago"]
        .as_u64()
        .map(Duration::from_millis);
    Ok(RumaResponse(response))
}
