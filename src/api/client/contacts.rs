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
use crate::services::contacts::{Direction, Relationship, SendOutcome};
use crate::services::profile::{self, directory};

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
    let me = request.session.user_id.as_str();
    let to = ruma::UserId::parse(request.body.user_id.as_str()).map_err(|_| {
        Error::invalid_param(format!("{:?} is not a user ID", request.body.user_id))
    })?;
    let message = request.body.message.clone();
    // Someone on another server: their server takes the request.
    if to.server_name().as_str() != state.config.server_name {
        let outcome = state.contacts.send_remote_request(me, &to, message).await?;
        return Ok(Json(outcome_json(outcome)));
    }
    let to = local_user(&state, &to)?;
    let ignored = state
        .messaging
        .account_data(to.as_str(), None, "m.ignored_user_list")?
        .is_some_and(|list| list["ignored_users"].get(me).is_some());
    let outcome = state
        .contacts
        .send_request(me, to.as_str(), message, ignored)
        .await?;
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
    state.accept_request(me, &id).await?;
    Ok(Json(json!({ "state": "accepted" })))
}

/// `POST /requests/{requestId}/decline` → `{state: "declined"}`
pub async fn decline(
    State(state): State<AppState>,
    id: PathParam,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let (me, id) = (request.session.user_id.as_str(), id.map_err(bad_path)?.0);
    state.decline_request(me, &id).await?;
    Ok(Json(json!({ "state": "declined" })))
}

/// `DELETE /requests/{requestId}`: the sender cancels → `{}`
pub async fn cancel(
    State(state): State<AppState>,
    id: PathParam,
    request: Authed<IgnoredAny>,
) -> Result<Json<Value>> {
    let (me, id) = (request.session.user_id.as_str(), id.map_err(bad_path)?.0);
    state
        .contacts
        .withdraw(me, &id, Direction::Outgoing)
        .await?;
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
    let me = request.session.user_id.as_str();
    let limit = request.body.limit.unwrap_or(10).clamp(1, MAX_RESULTS);
    let (results, limited) = find_users(&state, me, &request.body.search_term, limit, false)?;
    Ok(Json(json!({ "results": results, "limited": limited })))
}

/// Whether the two users are joined to a common room.
fn shares_room(state: &AppState, me: &str, other: &str) -> Result<bool> {
    for room in state.messaging.joined_rooms(me)? {
        let theirs = state.messaging.membership(other, &room)?;
        if theirs.is_some_and(|m| m.membership == "join") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The user whose verified email address `term` is, if they let themselves be found by it.
/// Only the whole address finds them, so addresses cannot be guessed a letter at a time.
fn email_match(state: &AppState, term: &str) -> Result<Option<String>> {
    let term = term.trim();
    if term.starts_with('@') || !term.contains('@') {
        return Ok(None);
    }
    let Some(owner) = state.auth.email_owner(term)? else {
        return Ok(None);
    };
    let record = state.contacts.record(owner.as_str())?;
    Ok(record
        .filter(|r| r.discoverable_by_email)
        .map(|_| owner.to_string()))
}

/// The users matching `term`, best first: the owner of an email address, then more
/// whole-word matches, then friends, then those with a request either way. Deactivated
/// users are never found; the searcher only if `include_self`. Each result carries
/// `user_id`, `display_name`, `avatar_url` and `relationship`.
pub fn find_users(
    state: &AppState,
    me: &str,
    term: &str,
    limit: usize,
    include_self: bool,
) -> Result<(Vec<Value>, bool)> {
    let (mut hits, mut limited) = directory::search(&state.storage, term)?;
    if let Some(owner) = email_match(state, term)? {
        hits.retain(|h| h.user_id != owner);
        hits.insert(
            0,
            directory::Hit {
                user_id: owner,
                exact_words: usize::MAX,
            },
        );
    }
    let rank = |r: Relationship| match r {
        Relationship::Friend => 0,
        Relationship::Incoming => 1,
        Relationship::Outgoing => 2,
        Relationship::None => 3,
    };
    let mut found = Vec::new();
    for hit in hits {
        if hit.user_id == me && !include_self {
            continue;
        }
        let Ok(user_id) = ruma::UserId::parse(hit.user_id.as_str()) else {
            continue;
        };
        // Another server's user: only while they share a room with the searcher.
        if user_id.server_name().as_str() != state.config.server_name {
            if !shares_room(state, me, hit.user_id.as_str())? {
                continue;
            }
        } else if state.auth.account(&user_id)?.is_none_or(|a| a.deactivated) {
            continue;
        }
        let relationship = state.contacts.relationship(me, &hit.user_id)?;
        found.push((hit, relationship));
    }
    found.sort_by(|(a, ra), (b, rb)| {
        b.exact_words
            .cmp(&a.exact_words)
            .then(rank(*ra).cmp(&rank(*rb)))
            .then(a.user_id.cmp(&b.user_id))
    });
    limited |= found.len() > limit;
    let mut results = Vec::new();
    for (hit, relationship) in found.into_iter().take(limit) {
        let profile = profile::profile(&state.storage, &hit.user_id)?.unwrap_or_default();
        let mut result = json!({ "user_id": hit.user_id, "relationship": relationship });
        if let Some(name) = profile.displayname {
            result["display_name"] = name.into();
        }
        if let Some(avatar) = profile.avatar_url {
            result["avatar_url"] = avatar.into();
        }
        results.push(result);
    }
    Ok((results, limited))
}

/// `POST /_matrix/client/v3/user_directory/search`: every local user (not only those
/// sharing a room, as Synapse's default), each with `org.kith.contacts.relationship`.
pub async fn user_directory(
    State(state): State<AppState>,
    request: crate::gateway::Ruma<ruma::api::client::user_directory::search_users::v3::Request>,
) -> Result<Json<Value>> {
    let me = request.session()?.user_id.as_str();
    let limit = usize::try_from(request.body.limit)
        .unwrap_or(MAX_RESULTS)
        .clamp(1, MAX_RESULTS);
    let (mut results, limited) = find_users(&state, me, &request.body.search_term, limit, true)?;
    for result in &mut results {
        if let Some(relationship) = result
            .as_object_mut()
            .and_then(|r| r.remove("relationship"))
        {
            result["org.kith.contacts.relationship"] = relationship;
        }
    }
    Ok(Json(json!({ "results": results, "limited": limited })))
}
