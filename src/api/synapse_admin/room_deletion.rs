//! Deleting a room: `DELETE /v2/rooms/{room_id}` (in the background, with its status at
//! `/v2/rooms/{room_id}/delete_status` and `/v2/rooms/delete_status/{delete_id}`) and
//! `DELETE /v1/rooms/{room_id}` (waits for the end).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::gateway::{Authed, Error, Result, ServerAdmin};
use crate::services::room_deletion::{self, DeletionRequest, RoomDeletion};
use crate::services::{AppState, Services};

/// The room ID in the path, or Synapse's 400 for one that is not.
fn legal(room_id: &str) -> Result<OwnedRoomId> {
    RoomId::parse(room_id).map_err(|_| {
        let message = format!("{room_id} is not a legal room ID");
        Error::unknown(StatusCode::BAD_REQUEST, message)
    })
}

/// The body's fields, with Synapse's defaults (`purge` true, the rest off).
fn request(state: &Services, requester: String, body: &Value) -> Result<DeletionRequest> {
    let flag = |name: &str, default: bool| match body.get(name) {
        None => Ok(default),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(Error::bad_json(format!(
            "Param '{name}' must be a boolean, if given"
        ))),
    };
    let text = |name: &str| match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(Error::bad_json(format!(
            "Param '{name}' must be a string, if given"
        ))),
    };
    let new_room_user_id = match text("new_room_user_id")? {
        None => None,
        Some(user) => match OwnedUserId::try_from(user.as_str()) {
            Ok(user) if user.server_name() == state.server_name => Some(user),
            _ => {
                let message = format!("User must be our own: {user}");
                return Err(Error::unknown(StatusCode::BAD_REQUEST, message));
            }
        },
    };
    Ok(DeletionRequest {
        requester,
        new_room_user_id,
        room_name: text("room_name")?,
        message: text("message")?,
        block: flag("block", false)?,
        purge: flag("purge", true)?,
        force_purge: flag("force_purge", false)?,
    })
}

/// The room and what the admin asked of it, checked in Synapse's order (body first).
fn asked(
    state: &Services,
    room_id: &str,
    admin: &Authed<Value>,
) -> Result<(OwnedRoomId, DeletionRequest)> {
    let requested = request(state, admin.session.user_id.to_string(), &admin.body)?;
    Ok((legal(room_id)?, requested))
}

/// `DELETE /v2/rooms/{room_id}` → `{delete_id}`
pub async fn delete(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    ServerAdmin(admin): ServerAdmin<Value>,
) -> Result<Json<Value>> {
    let (room_id, requested) = asked(&state, &room_id, &admin)?;
    let delete_id = room_deletion::start(&state, room_id, requested).await?;
    Ok(Json(json!({ "delete_id": delete_id })))
}

/// `DELETE /v1/rooms/{room_id}` → what the shutdown did, once the deletion is over.
pub async fn delete_now(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    ServerAdmin(admin): ServerAdmin<Value>,
) -> Result<Json<Value>> {
    let (room_id, requested) = asked(&state, &room_id, &admin)?;
    let result = room_deletion::run_now(&state, room_id, requested).await?;
    Ok(Json(json!(result)))
}

/// A deletion as Synapse shows its task.
fn shown(delete_id: &str, deletion: &RoomDeletion) -> Value {
    let mut shown = json!({
        "delete_id": delete_id,
        "room_id": deletion.room_id,
        "status": deletion.status,
        "shutdown_room": deletion.result,
    });
    if let Some(error) = &deletion.error {
        shown["error"] = json!(error);
    }
    shown
}

/// `GET /v2/rooms/{room_id}/delete_status` → `{results}`, oldest first.
pub async fn status_of_room(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let room_id = legal(&room_id)?;
    let deletions = room_deletion::of_room(&state, &room_id)?;
    if deletions.is_empty() {
        return Err(Error::not_found(format!(
            "No delete task for room_id '{room_id}' found"
        )));
    }
    let results: Vec<Value> = (deletions.iter())
        .map(|(id, deletion)| shown(id, deletion))
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// `GET /v2/rooms/delete_status/{delete_id}`
pub async fn status(
    State(state): State<AppState>,
    Path(delete_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let deletion = room_deletion::get(&state, &delete_id)?
        .ok_or_else(|| Error::not_found(format!("delete id '{delete_id}' not found")))?;
    Ok(Json(shown(&delete_id, &deletion)))
}
