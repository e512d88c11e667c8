//! The contacts API (contact-service), kith's own, under
//! `/_matrix/client/unstable/org.kith.contacts/v1` (see `spec/contacts.yaml`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::gateway::{Authed, Error, Result};
use crate::services::AppState;
use crate::services::contacts::{Direction, SendOutcome};
use crate::services::friend_requests;
use crate::services::search::{Found, find_users};

/// The most results one search returns.
const MAX_RESULTS: usize = 50;

/// A path parameter, its rejection (not UTF-8, say) kept to answer as a Matrix error after
/// the caller is authenticated.
type PathParam = Result<Path<String>, PathRejection>;

fn bad_path(_: PathRejection) -> Error {
    Error::invalid_param("Malformed path parameter")
}

/// A local user named by a client: garbage is `M_INVALID_PARAM`, a stranger `M_NOT_FOUND`.
fn local_user(state: &AppState, user_id: &ruma::UserId) -> Result<ruma::OwnedUserId> {
    let user_id = user_id.to_owned();
    match state.auth.account(&user_id)? {
        Some(account) if !account.deactivated => Ok(user_id),
        _ => Err(Error::not_found("No such user")),
    }
}

/// `GET /friends` → `{friends: [{user_id, since_ts}]}`
pub async fn friends(
    State(state): State<AppState>,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let view = state.contacts.view(request.session.user_id.as_str())?;
    Ok(Json(json!({ "friends": view["friends"] })))
}

/// `DELETE /friends/{userId}` → `{}`; 404 if not friends.
pub async fn remove_friend(
    State(state): State<AppState>,
    other: PathParam,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let other = other.map_err(bad_path)?.0;
    if ruma::UserId::parse(other.as_str()).is_err() {
        return Err(Error::invalid_param(format!("{other:?} is not a user ID")));
    }
    state
        .contacts
        .remove_friend(request.session.user_id.as_str(), &other)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct NewRequest {
    user_id: String,
    #[serde(default)]
    message: Option<String>,
}

/// `POST /requests` `{user_id, message?}` → `{request_id, state}`: `pending`, or `accepted`
/// when the other user had already asked.
pub async fn send_request(
    State(state): State<AppState>,
    request: Authed<NewRequest>,
) -> Result<Json<Value>> {
    let to = ruma::UserId::parse(request.body.user_id.as_str()).map_err(|_| {
        Error::invalid_param(format!("{:?} is not a user ID", request.body.user_id))
    })?;
    if state.is_ours(to.server_name()) {
        local_user(&state, &to)?;
    }
    let message = request.body.message.clone();
    let outcome = friend_requests::send(&state, &request.session.user_id, &to, message).await?;
    Ok(Json(outcome_json(outcome)))
}

fn outcome_json(outcome: SendOutcome) -> Value {
    let (id, outcome) = match outcome {
        SendOutcome::Pending(id) => (id, "pending"),
        SendOutcome::Accepted(id) => (id, "accepted"),
    };
    json!({ "request_id": id, "state": outcome })
}

#[derive(Deserialize)]
pub struct RequestsQuery {
    #[serde(default)]
    dir: Option<Direction>,
}

/// `GET /requests?dir=incoming|outgoing` → `{requests}` (both directions without `dir`)
pub async fn requests(
    State(state): State<AppState>,
    query: Result<Query<RequestsQuery>, axum::extract::rejection::QueryRejection>,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let Query(query) = query.map_err(|_| Error::invalid_param("dir is incoming or outgoing"))?;
    let me = request.session.user_id.as_str();
    let dirs = match query.dir {
        Some(dir) => vec![dir],
        None => vec![Direction::Incoming, Direction::Outgoing],
    };
    let mut listed = Vec::new();
    for dir in dirs {
        listed.extend(state.contacts.requests(me, dir)?);
    }
    Ok(Json(json!({ "requests": listed })))
}

/// `POST /requests/{requestId}/accept` → `{state: "accepted"}`
pub async fn accept(
    State(state): State<AppState>,
    id: PathParam,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let (me, id) = (request.session.user_id.as_str(), id.map_err(bad_path)?.0);
    friend_requests::accept(&state, me, &id).await?;
    Ok(Json(json!({ "state": "accepted" })))
}

/// `POST /requests/{requestId}/decline` → `{state: "declined"}`
pub async fn decline(
    State(state): State<AppState>,
    id: PathParam,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let (me, id) = (request.session.user_id.as_str(), id.map_err(bad_path)?.0);
    friend_requests::decline(&state, me, &id).await?;
    Ok(Json(json!({ "state": "declined" })))
}

/// `DELETE /requests/{requestId}`: the sender cancels → `{}`
pub async fn cancel(
    State(state): State<AppState>,
    id: PathParam,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let (me, id) = (request.session.user_id.as_str(), id.map_err(bad_path)?.0);
    friend_requests::cancel(&state, me, &id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct Search {
    search_term: String,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    discoverable_by_email: bool,
}

/// `GET /settings` → `{discoverable_by_email}`
pub async fn settings(
    State(state): State<AppState>,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let record = state.contacts.record(request.session.user_id.as_str())?;
    let discoverable = record.is_some_and(|r| r.discoverable_by_email);
    Ok(Json(json!({ "discoverable_by_email": discoverable })))
}

/// `PUT /settings` `{discoverable_by_email}` → `{}`
pub async fn set_settings(
    State(state): State<AppState>,
    request: Authed<Settings>,
) -> Result<Json<Value>> {
    let user = request.session.user_id.as_str();
    let discoverable = request.body.discoverable_by_email;
    state
        .contacts
        .set_discoverable_by_email(user, discoverable)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /search` `{search_term, limit?}` → `{results, limited}`: local users by words of
/// their ID or display name, or by the whole of a verified email address they let be
/// searched, each with what they are to the searcher.
pub async fn search(State(state): State<AppState>, request: Authed<Search>) -> Result<Json<Value>> {
    let me = &request.session.user_id;
    let limit = request.body.limit.unwrap_or(10).clamp(1, MAX_RESULTS);
    let (found, limited) = find_users(&state, me, &request.body.search_term, limit, false)?;
    let results = results(found, "relationship");
    Ok(Json(json!({ "results": results, "limited": limited })))
}

/// The people found, as JSON (`user_id`, `display_name`, `avatar_url`, and what each is
/// to the searcher under `relationship_key`).
fn results(found: Vec<Found>, relationship_key: &str) -> Vec<Value> {
    found
        .into_iter()
        .map(|found| {
            let mut result = json!({ "user_id": found.user_id });
            result[relationship_key] = json!(found.relationship);
            if let Some(name) = found.display_name {
                result["display_name"] = name.into();
            }
            if let Some(avatar) = found.avatar_url {
                result["avatar_url"] = avatar.into();
            }
            result
        })
        .collect()
}

/// `POST /_matrix/client/v3/user_directory/search`: every local user (not only those
/// sharing a room, as Synapse's default), each with `org.kith.contacts.relationship`.
pub async fn user_directory(
    State(state): State<AppState>,
    request: crate::gateway::Ruma<ruma::api::client::user_directory::search_users::v3::Request>,
) -> Result<Json<Value>> {
    let me = &request.session()?.user_id;
    let limit = usize::try_from(request.body.limit)
        .unwrap_or(MAX_RESULTS)
        .clamp(1, MAX_RESULTS);
    let (found, limited) = find_users(&state, me, &request.body.search_term, limit, true)?;
    let results = results(found, "org.kith.contacts.relationship");
    Ok(Json(json!({ "results": results, "limited": limited })))
}
