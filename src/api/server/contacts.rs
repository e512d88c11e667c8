//! Friend requests between users of different kith servers (contact-service), under
//! `/_matrix/federation/unstable/org.kith.contacts/v1` (see `spec/contacts.md`).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use axum::extract::rejection::PathRejection;

use crate::gateway::{Error, Result, Signed};
use crate::services::AppState;
use crate::services::contacts::{RemoteRemove, RemoteRequest, RemoteResponse};

/// A path parameter, its rejection kept to answer as a Matrix error once the request's
/// signature is checked.
type PathParam = std::result::Result<Path<String>, PathRejection>;

fn param(found: PathParam) -> Result<String> {
    found
        .map(|Path(value)| value)
        .map_err(|_| Error::invalid_param("Malformed path parameter"))
}

/// `PUT /request/{requestId}` `{sender, target, message?, origin_server_ts}` → `{state}`:
/// `pending`, or `accepted` if they are friends already or the target had asked too.
pub async fn request(
    State(state): State<AppState>,
    request_id: PathParam,
    request: Signed<RemoteRequest>,
) -> Result<Json<Value>> {
    let request_id = param(request_id)?;
    let target = &request.body.target;
    let account = match ruma::UserId::parse(target.as_str()) {
        Ok(user) => state.auth.account(&user)?,
        Err(_) => None,
    };
    if account.is_none_or(|a| a.deactivated) {
        return Err(Error::not_found("No such user"));
    }
    let mut body = request.body;
    // The pair's direct chat is taken only if it is one here with just the two of them.
    if let Some(room) = &body.dm_room_id {
        let members = state.messaging.joined_members(room).unwrap_or_default();
        let pair = members.len() == 2
            && members.iter().any(|m| m.as_str() == body.sender)
            && members.iter().any(|m| m.as_str() == body.target);
        if !pair {
            body.dm_room_id = None;
        }
    }
    let outcome = state
        .contacts
        .receive_request(&request.origin, &request_id, body)
        .await?;
    Ok(Json(json!({ "state": outcome })))
}

/// `PUT /response/{requestId}` `{sender, action}` → `{}`: accepted, declined or cancelled.
pub async fn response(
    State(state): State<AppState>,
    request_id: PathParam,
    request: Signed<RemoteResponse>,
) -> Result<Json<Value>> {
    let request_id = param(request_id)?;
    state
        .contacts
        .receive_response(&request.origin, &request_id, request.body)
        .await?;
    Ok(Json(json!({})))
}

/// `PUT /remove/{txnId}` `{sender, target}` → `{}`: the sender ended the friendship.
pub async fn remove(
    State(state): State<AppState>,
    txn_id: PathParam,
    request: Signed<RemoteRemove>,
) -> Result<Json<Value>> {
    param(txn_id)?;
    state
        .contacts
        .receive_remove(&request.origin, request.body)
        .await?;
    Ok(Json(json!({})))
}
