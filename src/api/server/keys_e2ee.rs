//! Our users' encryption keys, for other servers' clients (through their servers).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use ruma::api::federation::device::get_devices;
use ruma::api::federation::keys::{claim_keys, get_keys};
use serde_json::{Value, json};

use crate::gateway::{Error, Result, Ruma};
use crate::services::AppState;
use crate::services::e2ee::claims_of;

fn local(state: &AppState, user: &ruma::UserId) -> bool {
    state.is_ours(user.server_name())
}

fn display_name(state: &AppState) -> impl Fn(&str, &str) -> Option<String> + '_ {
    |user, device| {
        state
            .sessions
            .device(user, device)
            .ok()
            .flatten()
            .and_then(|d| d.display_name)
    }
}

/// `POST /_matrix/federation/v1/user/keys/query`: device and cross-signing keys of our
/// users (never a user-signing key: that is for its owner alone).
pub async fn query(
    State(state): State<AppState>,
    request: Ruma<get_keys::v1::Request>,
) -> Result<Json<Value>> {
    request.origin()?;
    let asked: BTreeMap<String, Vec<String>> = request
        .body
        .device_keys
        .iter()
        .filter(|(user, _)| local(&state, user))
        .map(|(user, devices)| {
            (
                user.to_string(),
                devices.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let mut answer = state.e2ee.query("", &asked, display_name(&state))?;
    if let Some(answer) = answer.as_object_mut() {
        answer.remove("user_signing_keys");
        answer.remove("failures");
    }
    Ok(Json(answer))
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one key per asked device of our users.
pub async fn claim(
    State(state): State<AppState>,
    request: Ruma<claim_keys::v1::Request>,
) -> Result<Json<Value>> {
    request.origin()?;
    let mut asked = claims_of(&request.body.one_time_keys);
    asked.retain(|user, _| ruma::UserId::parse(user).is_ok_and(|u| local(&state, &u)));
    let mut answer = state.e2ee.claim(&asked).await?;
    if let Some(answer) = answer.as_object_mut() {
        answer.remove("failures");
    }
    Ok(Json(answer))
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's whole device list
/// with keys, and their cross-signing keys.
pub async fn devices(
    State(state): State<AppState>,
    request: Ruma<get_devices::v1::Request>,
) -> Result<Json<Value>> {
    request.origin()?;
    let user = &request.body.user_id;
    if !local(&state, user) || state.auth.account(user)?.is_none() {
        return Err(Error::not_found("No such user"));
    }
    let asked = BTreeMap::from([(user.to_string(), Vec::new())]);
    let found = state.e2ee.query("", &asked, display_name(&state))?;
    let mut devices = Vec::new();
    if let Some(keys) = found["device_keys"][user.as_str()].as_object() {
        for (device, keys) in keys {
            let mut entry = json!({ "device_id": device, "keys": keys });
            if let Some(name) = keys["unsigned"]["device_display_name"].as_str() {
                entry["device_display_name"] = name.into();
            }
            devices.push(entry);
        }
    }
    let stream_id = state.e2ee.last_change(user.as_str())?.unwrap_or(0);
    let mut answer = json!({ "user_id": user, "stream_id": stream_id, "devices": devices });
    for (field, from) in [
        ("master_key", "master_keys"),
        ("self_signing_key", "self_signing_keys"),
    ] {
        if let Some(key) = found[from].get(user.as_str()) {
            answer[field] = key.clone();
        }
    }
    Ok(Json(answer))
}
