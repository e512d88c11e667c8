//! Queries other servers make about our users.

use axum::extract::State;
use ruma::api::federation::directory::{get_public_rooms, get_public_rooms_filtered};
use ruma::api::federation::query::{get_profile_information, get_room_information};
use ruma::api::federation::space::get_hierarchy;

use crate::api::client::directory::{directory_query, room_types};
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;

/// `GET /_matrix/federation/v1/query/profile?user_id=&field=`: a local user's public
/// profile (one field if asked), 404 for anyone else.
pub async fn profile(
    State(state): State<AppState>,
    request: Ruma<get_profile_information::v1::Request>,
) -> Result<RumaResponse<get_profile_information::v1::Response>> {
    let body = &request.body;
    let user = body.user_id.as_str();
    let local = state.is_ours(body.user_id.server_name());
    let found = match local {
        true => state.profiles.get(user)?,
        false => None,
    };
    let found = found.ok_or_else(|| Error::not_found("Profile not found"))?;
    let mut response = get_profile_information::v1::Response::new();
    let wanted = |field: &str| body.field.as_ref().is_none_or(|f| f.as_str() == field);
    if let Some(name) = found.displayname.filter(|_| wanted("displayname")) {
        response.data.set("displayname".into(), name.into());
    }
    if let Some(url) = found.avatar_url.filter(|_| wanted("avatar_url")) {
        response.data.set("avatar_url".into(), url.into());
    }
    for (field, value) in found.fields {
        if wanted(&field) {
            response.data.set(field, value);
        }
    }
    Ok(RumaResponse(response))
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=`: the room a local alias names
/// and the servers in it, 404 for anything else.
pub async fn directory(
    State(state): State<AppState>,
    request: Ruma<get_room_information::v1::Request>,
) -> Result<RumaResponse<get_room_information::v1::Response>> {
    let alias = &request.body.room_alias;
    if !state.is_ours(alias.server_name()) {
        return Err(Error::not_found("Room alias not found"));
    }
    let (room_id, servers) = state.messaging.resolve_alias(alias).await?;
    Ok(RumaResponse(get_room_information::v1::Response::new(
        room_id, servers,
    )))
}

/// `GET /_matrix/federation/v1/publicRooms?limit&since`: this server's directory.
pub async fn public_rooms(
    State(state): State<AppState>,
    request: Ruma<get_public_rooms::v1::Request>,
) -> Result<axum::Json<serde_json::Value>> {
    let body = &request.body;
    let query = directory_query(None, None, body.since.clone(), body.limit);
    Ok(axum::Json(state.messaging.public_rooms(&query)?))
}

/// `POST /_matrix/federation/v1/publicRooms` `{limit, since, filter}`
pub async fn public_rooms_filtered(
    State(state): State<AppState>,
    request: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<axum::Json<serde_json::Value>> {
    let body = &request.body;
    let search = body.filter.generic_search_term.clone();
    let types = room_types(&body.filter);
    let query = directory_query(search, types, body.since.clone(), body.limit);
    Ok(axum::Json(state.messaging.public_rooms(&query)?))
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only` → `{room, children,
/// inaccessible_children}`: a space as the asking server may see it.
pub async fn hierarchy(
    State(state): State<AppState>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<axum::Json<serde_json::Value>> {
    let origin = request.origin()?;
    let body = &request.body;
    let answer = (state.messaging).server_hierarchy(origin, &body.room_id, body.suggested_only)?;
    Ok(axum::Json(answer))
}
