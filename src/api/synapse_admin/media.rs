//! `/_synapse/admin/v1`: the media a room's events name, deleting this server's media, and
//! purging the remote media cache.

use axum::Json;
use axum::extract::{Path, Query, State};
use http::StatusCode;
use ruma::RoomId;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::gateway::{Error, Result, ServerAdmin};
use crate::services::AppState;

/// A millisecond timestamp from the query, as Synapse reads it: seconds given for
/// milliseconds would select nothing, silently, so they are refused.
fn timestamp(value: Option<&str>) -> Result<u64> {
    let value = value.ok_or_else(|| {
        Error::missing_param("Missing required integer query parameter before_ts")
    })?;
    let value: u64 = value
        .parse()
        .map_err(|_| Error::invalid_param("Query parameter before_ts must be an integer"))?;
    if value < 30_000_000_000 {
        return Err(Error::invalid_param(
            "Query parameter before_ts you provided is from the year 1970. \
             Double check that you are providing a timestamp in milliseconds.",
        ));
    }
    Ok(value)
}

#[derive(Deserialize)]
pub struct Before {
    before_ts: Option<String>,
    size_gt: Option<String>,
    keep_profiles: Option<String>,
}

/// `POST /v1/purge_media_cache?before_ts=`: other servers' files fetched before then.
pub async fn purge_cache(
    State(state): State<AppState>,
    Query(query): Query<Before>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let before = timestamp(query.before_ts.as_deref())?;
    let purged = state.media.purge_remote(before).await?;
    Ok(Json(json!({ "deleted": purged.media })))
}

/// `GET /v1/room/{room_id}/media`: `mxc://` URIs the room's events name, this server's and
/// others' (any room ID, as Synapse: one it does not hold has none).
pub async fn in_room(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let uris = match RoomId::parse(&room_id) {
        Ok(room_id) => state.messaging.media_in_room(&room_id)?,
        Err(_) => Vec::new(),
    };
    let ours = format!("mxc://{}/", state.server_name);
    let (local, remote): (Vec<String>, Vec<String>) =
        uris.into_iter().partition(|uri| uri.starts_with(&ours));
    Ok(Json(json!({ "local": local, "remote": remote })))
}

fn only_local(state: &AppState, server: &str) -> Result<()> {
    match server == state.server_name.as_str() {
        true => Ok(()),
        false => Err(Error::unknown(
            StatusCode::BAD_REQUEST,
            "Can only delete local media",
        )),
    }
}

/// `DELETE /v1/media/{server_name}/{media_id}`: one of this server's files, its record
/// and thumbnails.
pub async fn delete_one(
    State(state): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    only_local(&state, &server)?;
    state.media.delete_local(&media_id).await?;
    Ok(Json(json!({ "deleted_media": [media_id], "total": 1 })))
}

/// `POST /v1/media/{server_name}/delete?before_ts&size_gt&keep_profiles`: this server's
/// files uploaded before then (and larger than `size_gt` bytes); with `keep_profiles`
/// (the default), not those a profile shows as its avatar.
pub async fn delete_before(
    State(state): State<AppState>,
    Path(server): Path<String>,
    Query(query): Query<Before>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    only_local(&state, &server)?;
    let before = timestamp(query.before_ts.as_deref())?;
    let size_gt = match query.size_gt.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(size)) => size,
        Some(Err(_)) => {
            return Err(Error::invalid_param(
                "Query parameter size_gt must be an integer",
            ));
        }
    };
    let keep_profiles = match query.keep_profiles.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => {
            return Err(Error::invalid_param(
                "Boolean query parameter 'keep_profiles' must be one of ['true', 'false']",
            ));
        }
    };
    let avatars = match keep_profiles {
        true => state.profiles.avatar_media()?,
        false => Default::default(),
    };
    let deleted = state
        .media
        .delete_local_before(before, size_gt, &avatars)
        .await?;
    Ok(Json(
        json!({ "total": deleted.len(), "deleted_media": deleted }),
    ))
}
