//! Room aliases (`/directory/room/{alias}`): this server's aliases only, until federation.

use axum::extract::State;
use ruma::RoomAliasId;
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};

use super::rooms::require_joined;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;

fn local(state: &AppState, alias: &RoomAliasId) -> Result<()> {
    if !state.is_ours(alias.server_name()) {
        return Err(Error::invalid_param("Room alias must be on this server"));
    }
    Ok(())
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`: by a member of the room.
pub async fn create(
    State(state): State<AppState>,
    request: Ruma<create_alias::v3::Request>,
) -> Result<RumaResponse<create_alias::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    local(&state, &body.room_alias)?;
    require_joined(&state, session, &body.room_id)?;
    state
        .messaging
        .create_alias(
            body.room_alias.as_str(),
            body.room_id.as_str(),
            session.user_id.as_str(),
        )
        .await?;
    Ok(RumaResponse(create_alias::v3::Response::new()))
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn get(
    State(state): State<AppState>,
    request: Ruma<get_alias::v3::Request>,
) -> Result<RumaResponse<get_alias::v3::Response>> {
    let (room_id, servers) = state
        .messaging
        .resolve_alias(&request.body.room_alias)
        .await?;
    Ok(RumaResponse(get_alias::v3::Response::new(room_id, servers)))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`: by its creator or an admin.
pub async fn delete(
    State(state): State<AppState>,
    request: Ruma<delete_alias::v3::Request>,
) -> Result<RumaResponse<delete_alias::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let alias = state
        .messaging
        .alias(body.room_alias.as_str())?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    let admin = state
        .auth
        .account(&session.user_id)?
        .is_some_and(|a| a.admin);
    if alias.creator != session.user_id.as_str() && !admin {
        return Err(Error::forbidden("Only the alias's creator can delete it"));
    }
    state
        .messaging
        .delete_alias(body.room_alias.as_str())
        .await?;
    Ok(RumaResponse(delete_alias::v3::Response::new()))
}
