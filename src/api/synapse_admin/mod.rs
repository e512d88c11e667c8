//! The part of Synapse's Admin API (`/_synapse/admin`) that moderation tools and scripts
//! use, at Synapse's paths and in its shapes, for a server admin's access token (the
//! account's `admin` flag, as Synapse): users, rooms (and their deletion), registration
//! tokens, reports, media (a room's, deleting this server's, purging the remote cache), the
//! server's version.
//! Handlers translate; the operations are the services' own, as `kith admin` uses them.

mod media;
mod room_deletion;
mod rooms;
mod server;
mod tokens;
mod users;

use axum::Router;
use axum::routing::{delete, get, post};
use serde_json::Value;

use crate::services::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/server_version", get(server::version))
        .route("/v1/event_reports", get(server::event_reports))
        .route("/v1/purge_media_cache", post(media::purge_cache))
        .route("/v1/room/{room_id}/media", get(media::in_room))
        .route(
            "/v1/media/{server_name}/{media_id}",
            delete(media::delete_one),
        )
        .route("/v1/media/{server_name}/delete", post(media::delete_before))
        .route("/v1/rooms", get(rooms::list))
        .route(
            "/v1/rooms/{room_id}",
            get(rooms::details).delete(room_deletion::delete_now),
        )
        .route("/v2/rooms/{room_id}", delete(room_deletion::delete))
        .route(
            "/v2/rooms/{room_id}/delete_status",
            get(room_deletion::status_of_room),
        )
        .route(
            "/v2/rooms/delete_status/{delete_id}",
            get(room_deletion::status),
        )
        .route("/v1/rooms/{room_id}/members", get(rooms::members))
        .route("/v1/rooms/{room_id}/state", get(rooms::room_state))
        .route("/v2/users", get(users::list))
        .route(
            "/v2/users/{user_id}",
            get(users::query).put(users::create_or_modify),
        )
        .route("/v2/users/{user_id}/devices", get(users::devices))
        .route("/v1/users/{user_id}/joined_rooms", get(users::joined_rooms))
        .route("/v1/whois/{user_id}", get(users::whois))
        .route("/v1/deactivate/{user_id}", post(users::deactivate))
        .route("/v1/reset_password/{user_id}", post(users::reset_password))
        .route("/v1/registration_tokens", get(tokens::list))
        .route("/v1/registration_tokens/new", post(tokens::create))
        .route(
            "/v1/registration_tokens/{token}",
            get(tokens::get_one)
                .put(tokens::update)
                .delete(tokens::delete),
        )
}

/// `from`/`limit` paging as Synapse reads it: non-negative integers, `limit` default 100.
#[derive(serde::Deserialize)]
struct Paging {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

impl Paging {
    fn read(&self) -> crate::gateway::Result<(usize, usize)> {
        let number = |value: &Option<String>, name: &str, default: usize| match value {
            None => Ok(default),
            Some(text) => text.parse::<usize>().map_err(|_| {
                crate::gateway::Error::invalid_param(format!(
                    "Query parameter {name:?} must be a non-negative integer"
                ))
            }),
        };
        Ok((
            number(&self.from, "from", 0)?,
            number(&self.limit, "limit", 100)?,
        ))
    }
}

/// JSON values of one kind in their natural order (`null` first).
fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    }
}

/// A boolean query parameter, as Synapse reads one: `true`, `false` or absent.
fn flag(value: &Option<String>, name: &str) -> crate::gateway::Result<Option<bool>> {
    match value.as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(crate::gateway::Error::invalid_param(format!(
            "Boolean query parameter {name:?} must be one of ['true', 'false']"
        ))),
    }
}

/// Whether a page from `from` of `limit` items leaves some of `total` after it.
fn more_after(from: usize, limit: usize, total: usize) -> bool {
    from.saturating_add(limit) < total
}

/// `dir`: `f` (forwards) or `b`; whether backwards, `default_backwards` when absent.
fn backwards(dir: Option<&str>, default_backwards: bool) -> crate::gateway::Result<bool> {
    match dir {
        None => Ok(default_backwards),
        Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(_) => Err(crate::gateway::Error::invalid_param(
            "Query parameter 'dir' must be one of ['b', 'f']",
        )),
    }
}
