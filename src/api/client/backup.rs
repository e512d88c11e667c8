//! Server-side key backup (`/room_keys`): the owner's encrypted room keys, by version.

use axum::Json;
use axum::extract::State;
use ruma::api::client::backup::{
    add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
    delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session,
    delete_backup_version, get_backup_info, get_backup_keys, get_backup_keys_for_room,
    get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
};
use std::collections::BTreeMap;

use ruma::RoomId;
use ruma::serde::Raw;
use serde_json::{Value, json};

use super::json_of;
use crate::gateway::{Error, Result, Ruma};
use crate::services::AppState;
use crate::services::e2ee::BackupKeys;

/// `{algorithm, auth_data}` of an uploaded backup algorithm.
fn algorithm<T>(raw: &Raw<T>) -> Result<(String, Value)> {
    let value = json_of(raw)?;
    let name = value["algorithm"]
        .as_str()
        .ok_or_else(|| Error::bad_json("A backup needs an algorithm"))?
        .to_owned();
    Ok((name, value["auth_data"].clone()))
}

/// `POST /_matrix/client/v3/room_keys/version` → `{version}`
pub async fn create(
    State(state): State<AppState>,
    request: Ruma<create_backup_version::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let (name, auth_data) = algorithm(&request.body.algorithm)?;
    let version = state.e2ee.create_backup(user, &name, auth_data).await?;
    Ok(Json(json!({ "version": version })))
}

/// `GET /_matrix/client/v3/room_keys/version`: the current version (404 if none).
pub async fn latest(
    State(state): State<AppState>,
    request: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    Ok(Json(state.e2ee.backup_info(user, None)?))
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
pub async fn info(
    State(state): State<AppState>,
    request: Ruma<get_backup_info::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    Ok(Json(
        state.e2ee.backup_info(user, Some(&request.body.version))?,
    ))
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`: new auth data, same algorithm.
pub async fn update(
    State(state): State<AppState>,
    request: Ruma<update_backup_version::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let (name, auth_data) = algorithm(&body.algorithm)?;
    state
        .e2ee
        .update_backup(user, &body.version, &name, auth_data)
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
pub async fn delete(
    State(state): State<AppState>,
    request: Ruma<delete_backup_version::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    state
        .e2ee
        .delete_backup(user, &request.body.version)
        .await?;
    Ok(Json(json!({})))
}

/// Stores uploaded keys (the better of two for one session is kept); answers the counts.
async fn put(state: &AppState, user: &str, version: &str, keys: BackupKeys) -> Result<Json<Value>> {
    Ok(Json(state.e2ee.put_backup_keys(user, version, keys).await?))
}

/// The keys of a room's sessions, as uploaded.
fn room_keys<T>(room: &RoomId, sessions: &BTreeMap<String, Raw<T>>) -> Result<BackupKeys> {
    sessions
        .iter()
        .map(|(session, data)| Ok((room.to_string(), session.clone(), json_of(data)?)))
        .collect()
}

/// Deletes the keys of the whole backup, a room (`room`), or one session; answers the counts.
async fn delete_keys(
    state: &AppState,
    user: &str,
    version: &str,
    (room, session): (Option<&str>, Option<&str>),
) -> Result<Json<Value>> {
    let e2ee = &state.e2ee;
    Ok(Json(
        e2ee.delete_backup_keys(user, version, room, session)
            .await?,
    ))
}

/// `PUT /_matrix/client/v3/room_keys/keys?version=`
pub async fn put_all(
    State(state): State<AppState>,
    request: Ruma<add_backup_keys::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let mut keys: BackupKeys = Vec::new();
    for (room, backup) in &body.rooms {
        keys.extend(room_keys(room, &backup.sessions)?);
    }
    put(&state, user, &body.version, keys).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}?version=`
pub async fn put_room(
    State(state): State<AppState>,
    request: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let keys = room_keys(&body.room_id, &body.sessions)?;
    put(&state, user, &body.version, keys).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
pub async fn put_session(
    State(state): State<AppState>,
    request: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let data = json_of(&body.session_data)?;
    let keys = vec![(body.room_id.to_string(), body.session_id.clone(), data)];
    put(&state, user, &body.version, keys).await
}

/// `GET /_matrix/client/v3/room_keys/keys?version=`
pub async fn get_all(
    State(state): State<AppState>,
    request: Ruma<get_backup_keys::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let version = &request.body.version;
    Ok(Json(state.e2ee.backup_keys(user, version, None, None)?))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}?version=` → `{sessions}`
pub async fn get_room(
    State(state): State<AppState>,
    request: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let room = body.room_id.as_str();
    let found = state
        .e2ee
        .backup_keys(user, &body.version, Some(room), None)?;
    let sessions = found["rooms"][room]["sessions"].clone();
    Ok(Json(
        json!({ "sessions": if sessions.is_null() { json!({}) } else { sessions } }),
    ))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=` → the key data
pub async fn get_session(
    State(state): State<AppState>,
    request: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let room = body.room_id.as_str();
    let found = state
        .e2ee
        .backup_keys(user, &body.version, Some(room), Some(&body.session_id))?;
    let data = found["rooms"][room]["sessions"][&body.session_id].clone();
    if data.is_null() {
        return Err(Error::not_found("No such key in the backup"));
    }
    Ok(Json(data))
}

/// `DELETE /_matrix/client/v3/room_keys/keys?version=`
pub async fn delete_all(
    State(state): State<AppState>,
    request: Ruma<delete_backup_keys::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    delete_keys(&state, user, &request.body.version, (None, None)).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}?version=`
pub async fn delete_room(
    State(state): State<AppState>,
    request: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let scope = (Some(body.room_id.as_str()), None);
    delete_keys(&state, user, &body.version, scope).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
pub async fn delete_session(
    State(state): State<AppState>,
    request: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let user = request.session()?.user_id.as_str();
    let body = &request.body;
    let scope = (Some(body.room_id.as_str()), Some(body.session_id.as_str()));
    delete_keys(&state, user, &body.version, scope).await
}
