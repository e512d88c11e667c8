//! Room aliases (`/directory/room/{alias}`: this server's aliases only) and the public room
//! directory (`/publicRooms`, `/directory/list/room/{roomId}`).

use axum::Json;
use axum::extract::State;
use ruma::RoomAliasId;
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use serde_json::{Value, json};

use super::rooms::require_joined;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::messaging::DirectoryQuery;

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

/// A directory query from a client's or server's request.
pub(crate) fn directory_query(
    search: Option<String>,
    room_types: Option<Vec<Option<String>>>,
    since: Option<String>,
    limit: Option<ruma::UInt>,
) -> DirectoryQuery {
    DirectoryQuery {
        search: search.filter(|s| !s.trim().is_empty()),
        room_types,
        since,
        limit: limit.and_then(|l| usize::try_from(l).ok()),
    }
}

/// The room types a filter asks for, `None` for all.
pub(crate) fn room_types(filter: &ruma::directory::Filter) -> Option<Vec<Option<String>>> {
    (!filter.room_types.is_empty()).then(|| {
        (filter.room_types.iter())
            .map(|t| t.as_str().map(str::to_owned))
            .collect()
    })
}

/// The directory page: this server's, or `server`'s over federation.
async fn page(
    state: &AppState,
    server: Option<&ruma::ServerName>,
    query: DirectoryQuery,
) -> Result<Json<Value>> {
    let page = match server.filter(|s| !state.is_ours(s)) {
        Some(server) => state.messaging.remote_public_rooms(server, &query).await?,
        None => state.messaging.public_rooms(&query)?,
    };
    Ok(Json(page))
}

/// `GET /_matrix/client/v3/publicRooms?limit&since&server`
pub async fn public_rooms(
    State(state): State<AppState>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> Result<Json<Value>> {
    let body = &request.body;
    // Only a signed-in user makes this server ask another's: through POST, which carries
    // an access token (GET takes none).
    if body.server.as_deref().is_some_and(|s| !state.is_ours(s)) {
        return Err(Error::missing_token());
    }
    let query = directory_query(None, None, body.since.clone(), body.limit);
    page(&state, body.server.as_deref(), query).await
}

/// `POST /_matrix/client/v3/publicRooms?server` `{limit, since, filter}`
pub async fn public_rooms_filtered(
    State(state): State<AppState>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<Json<Value>> {
    request.session()?;
    let body = &request.body;
    let search = body.filter.generic_search_term.clone();
    let types = room_types(&body.filter);
    let query = directory_query(search, types, body.since.clone(), body.limit);
    page(&state, body.server.as_deref(), query).await
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}` → `{visibility}`
pub async fn visibility(
    State(state): State<AppState>,
    request: Ruma<get_room_visibility::v3::Request>,
) -> Result<Json<Value>> {
    let room = &request.body.room_id;
    if state.messaging.room(room)?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    let visibility = match state.messaging.is_published(room)? {
        true => "public",
        false => "private",
    };
    Ok(Json(json!({ "visibility": visibility })))
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}` `{visibility}` → `{}`
pub async fn set_visibility(
    State(state): State<AppState>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<Json<Value>> {
    let user = &request.session()?.user_id;
    let body = &request.body;
    let published = match body.visibility {
        ruma::api::client::room::Visibility::Public => true,
        ruma::api::client::room::Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility is public or private")),
    };
    (state.messaging)
        .set_published(user, &body.room_id, published)
        .await?;
    Ok(Json(json!({})))
}
