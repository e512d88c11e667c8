//! kith's local admin API, under `/_kith/admin/v1`, for the `kith admin` command. Every
//! request carries `Authorization: Bearer <contents of <data>/admin.secret>`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::admin::{backup, ops, secret};
use crate::gateway::{Error, Result};
use crate::services::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/users", post(create_user))
        .route("/users/{user}", get(show_user))
        .route("/users/{user}/password", post(reset_password))
        .route("/users/{user}/deactivate", post(deactivate))
        .route("/registration_tokens", get(list_tokens).post(create_token))
        .route("/registration_tokens/{token}", delete(delete_token))
        .route("/events/verify", post(verify_events))
        .route("/reports", get(list_reports))
        .route("/backup", post(backup))
        .route("/rooms/{room}/delete", post(delete_room))
        .route_layer(middleware::from_fn_with_state(state, require_secret))
}

async fn require_secret(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response> {
    // Only from this machine: the admin API is for `kith admin`, never for the internet
    // (behind a reverse proxy on the same host the secret still guards it).
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !peer.is_some_and(|ip| ip.is_loopback()) {
        return Err(Error::forbidden("The admin API answers only on loopback"));
    }
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(Error::missing_token)?;
    if !secret::matches(&state.admin_secret, presented) {
        return Err(Error::forbidden("Not the admin secret"));
    }
    Ok(next.run(request).await)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::body(e, body))
}

/// `POST /_kith/admin/v1/users` `{user, password, admin?}` → `{user_id}`
async fn create_user(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>> {
    let user_id = ops::create_user(&state, parse(&body)?).await?;
    Ok(Json(json!({ "user_id": user_id })))
}

/// `POST /_kith/admin/v1/users/{user}/password` `{password, logout_devices?}` → `{}`
async fn reset_password(
    State(state): State<AppState>,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    ops::reset_password(&state, &user, parse(&body)?).await?;
    Ok(Json(json!({})))
}

/// `GET /_kith/admin/v1/users/{user}` → the account, its email addresses and SSO links
async fn show_user(State(state): State<AppState>, Path(user): Path<String>) -> Result<Json<Value>> {
    Ok(Json(ops::show_user(&state, &user)?))
}

/// `POST /_kith/admin/v1/users/{user}/deactivate` → `{}`
async fn deactivate(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    ops::deactivate(&state, &user).await?;
    Ok(Json(json!({})))
}

#[derive(serde::Deserialize)]
struct BackupRequest {
    /// An absolute path on the server's machine, missing or empty.
    dir: std::path::PathBuf,
}

/// `POST /_kith/admin/v1/backup` `{dir}` → the backup's manifest: the database as of now,
/// the media files and the secret files, copied into `dir` while kith keeps serving.
async fn backup(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>> {
    let request: BackupRequest = parse(&body)?;
    if !request.dir.is_absolute() {
        return Err(Error::invalid_param("dir must be an absolute path"));
    }
    let taken = backup::backup(&state, &request.dir).await;
    match taken {
        Ok(manifest) => Ok(Json(json!(manifest))),
        Err(backup::Failure::Refused(message)) => Err(Error::invalid_param(message)),
        Err(backup::Failure::Io(message)) => Err(Error::internal(message)),
    }
}

#[derive(serde::Deserialize)]
struct DeleteRoom {
    #[serde(default)]
    block: bool,
    #[serde(default = "yes")]
    purge: bool,
}

fn yes() -> bool {
    true
}

/// `POST /_kith/admin/v1/rooms/{room}/delete` `{block?, purge?}` → what the shutdown did,
/// once the room is deleted (as Synapse's admin API does it, for `kith admin delete-room`).
async fn delete_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let request: DeleteRoom = parse(&body)?;
    let room_id =
        ruma::OwnedRoomId::try_from(room).map_err(|_| Error::invalid_param("Not a room ID"))?;
    let result = ops::delete_room(&state, room_id, request.block, request.purge).await?;
    Ok(Json(json!(result)))
}

/// `POST /_kith/admin/v1/events/verify` → `{verified, redacted, failed}`: every stored event
/// re-checked (hash and signatures); reads the whole event table, so it runs off the
/// async workers.
async fn verify_events(State(state): State<AppState>) -> Result<Json<Value>> {
    let checking = state.clone();
    let report = tokio::task::spawn_blocking(move || checking.messaging.verify_all())
        .await
        .map_err(Error::internal)??;
    Ok(Json(json!(report)))
}

/// `GET /_kith/admin/v1/reports` → `{reports}`, oldest first
async fn list_reports(State(state): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(json!({ "reports": state.messaging.reports()? })))
}

/// `GET /_kith/admin/v1/registration_tokens` → `{tokens}`
async fn list_tokens(State(state): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(json!({ "tokens": ops::list_tokens(&state)? })))
}

/// `DELETE /_kith/admin/v1/registration_tokens/{token}` → `{}`
async fn delete_token(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Value>> {
    ops::delete_token(&state, &token).await?;
    Ok(Json(json!({})))
}

/// `POST /_kith/admin/v1/registration_tokens` `{token?, uses_allowed?, expiry_time?}` → the token
async fn create_token(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>> {
    let request = if body.is_empty() {
        ops::NewToken::default()
    } else {
        parse(&body)?
    };
    Ok(Json(json!(ops::create_token(&state, request).await?)))
}
