//! The end-to-end encryption relay: keys and send-to-device messages. The server stores
//! and hands out; it never decrypts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use ruma::api::client::to_device::send_event_to_device;
use ruma::{OneTimeKeyAlgorithm, UInt};
use serde_json::{Value, json};

use super::json_of;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::e2ee::{ToDeviceSend, Upload, claims_of};
use crate::util::server_of;

/// `POST /_matrix/client/v3/keys/upload`: device keys, one-time and fallback keys.
pub async fn upload(
    State(state): State<AppState>,
    request: Ruma<upload_keys::v3::Request>,
) -> Result<RumaResponse<upload_keys::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let keys = |map: &BTreeMap<ruma::OwnedOneTimeKeyId, ruma::serde::Raw<_>>| -> Result<BTreeMap<String, Value>> {
        map.iter().map(|(id, key)| Ok((id.to_string(), json_of(key)?))).collect()
    };
    let upload = Upload {
        device_keys: body.device_keys.as_ref().map(json_of).transpose()?,
        one_time_keys: keys(&body.one_time_keys)?,
        fallback_keys: keys(&body.fallback_keys)?,
    };
    let (user, device) = (session.user_id.as_str(), session.device_id.as_str());
    let counts = state.e2ee.upload(user, device, upload).await?;
    let counts = counts
        .into_iter()
        .map(|(algorithm, n)| {
            (
                OneTimeKeyAlgorithm::from(algorithm),
                UInt::new_saturating(n),
            )
        })
        .collect();
    Ok(RumaResponse(upload_keys::v3::Response::new(counts)))
}

/// `POST /_matrix/client/v3/keys/query`
pub async fn query(
    State(state): State<AppState>,
    request: Ruma<get_keys::v3::Request>,
) -> Result<Json<Value>> {
    let session = request.session()?;
    let asked: BTreeMap<String, Vec<String>> = request
        .body
        .device_keys
        .iter()
        .map(|(user, devices)| {
            (
                user.to_string(),
                devices.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let display_name = |user: &str, device: &str| {
        state
            .sessions
            .device(user, device)
            .ok()
            .flatten()
            .and_then(|d| d.display_name)
    };
    let (local, remote) = split_by_server(&state, asked);
    let mut answer = state
        .e2ee
        .query(session.user_id.as_str(), &local, display_name)?;
    for (server, asked) in remote {
        let body = json!({ "device_keys": asked });
        let path = "/_matrix/federation/v1/user/keys/query";
        match ask_server(&state, &server, path, &body).await {
            Ok(found) => {
                for field in ["device_keys", "master_keys", "self_signing_keys"] {
                    merge_users(&mut answer[field], &found[field], &server);
                }
            }
            Err(failure) => answer["failures"][server.as_str()] = failure,
        }
    }
    Ok(Json(answer))
}

/// Splits what a client asks about by whose it is: ours, and per other server.
fn split_by_server<T>(
    state: &AppState,
    asked: BTreeMap<String, T>,
) -> (BTreeMap<String, T>, BTreeMap<String, BTreeMap<String, T>>) {
    let mut local = BTreeMap::new();
    let mut remote: BTreeMap<String, BTreeMap<String, T>> = BTreeMap::new();
    for (user, value) in asked {
        match server_of(&user) {
            Some(server) if !state.is_ours(server) => {
                remote
                    .entry(server.to_string())
                    .or_default()
                    .insert(user, value);
            }
            _ => {
                local.insert(user, value);
            }
        }
    }
    (local, remote)
}

/// Asks another server about its users' keys (10 s at most); a failure as `/keys/query`
/// and `/keys/claim` report it under `failures`.
async fn ask_server(
    state: &AppState,
    server: &str,
    path: &str,
    body: &Value,
) -> std::result::Result<Value, Value> {
    let failure = |message: String| json!({ "status": 503, "message": message });
    let client = state
        .federation
        .as_ref()
        .ok_or_else(|| failure("Federation is disabled".into()))?;
    let server = ruma::ServerName::parse(server).map_err(|e| failure(e.to_string()))?;
    let asked = client.send_json(&server, http::Method::POST, path, Some(body));
    match tokio::time::timeout(std::time::Duration::from_secs(10), asked).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(failure(e.to_string())),
        Err(_) => Err(failure("Timed out".into())),
    }
}

/// Copies into `into` the entries of `from` for users of `server` (a server speaks only
/// for its own users).
fn merge_users(into: &mut Value, from: &Value, server: &str) {
    let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    let suffix = format!(":{server}");
    for (user, value) in from {
        if user.ends_with(&suffix) {
            into.insert(user.clone(), value.clone());
        }
    }
}

/// `POST /_matrix/client/v3/keys/claim`
pub async fn claim(
    State(state): State<AppState>,
    request: Ruma<claim_keys::v3::Request>,
) -> Result<Json<Value>> {
    request.session()?;
    let asked = claims_of(&request.body.one_time_keys);
    let (local, remote) = split_by_server(&state, asked);
    let mut answer = state.e2ee.claim(&local).await?;
    for (server, asked) in remote {
        let body = json!({ "one_time_keys": asked });
        let path = "/_matrix/federation/v1/user/keys/claim";
        match ask_server(&state, &server, path, &body).await {
            Ok(found) => merge_users(
                &mut answer["one_time_keys"],
                &found["one_time_keys"],
                &server,
            ),
            Err(failure) => answer["failures"][server.as_str()] = failure,
        }
    }
    Ok(Json(answer))
}

/// `GET /_matrix/client/v3/keys/changes?from=&to=`: what `/sync`'s `device_lists` would
/// have said between the two tokens.
pub async fn changes(
    State(state): State<AppState>,
    request: Ruma<get_key_changes::v3::Request>,
) -> Result<Json<Value>> {
    let session = request.session()?;
    let token = |t: &str| {
        t.parse::<u64>()
            .map_err(|_| Error::invalid_param("Invalid from or to token"))
    };
    let (from, to) = (token(&request.body.from)?, token(&request.body.to)?);
    let user = &session.user_id;
    let rooms = state.messaging.joined_rooms(user)?;
    let (changed, left) = crate::services::sync::device_lists(&state, user, &rooms, from, to)?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`: the first upload (and the same
/// keys again) needs no UIA; changing existing keys needs the password.
pub async fn upload_cross_signing(
    State(state): State<AppState>,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> Result<RumaResponse<upload_signing_keys::v3::Response>> {
    let session = request.session()?;
    let body = &request.body;
    let mut uploaded = BTreeMap::new();
    for (kind, key) in [
        ("master", &body.master_key),
        ("self_signing", &body.self_signing_key),
        ("user_signing", &body.user_signing_key),
    ] {
        if let Some(key) = key {
            uploaded.insert(kind, json_of(key)?);
        }
    }
    let user = session.user_id.as_str();
    let uia = if state.e2ee.upload_needs_auth(user, &uploaded)? {
        let auth = body.auth.as_ref();
        let uia = state.auth.uia(
            "device_signing",
            state.auth.reauth_flows(&session.user_id)?,
            auth,
            Some(&session.user_id),
        );
        Some(uia.await?)
    } else {
        None
    };
    state
        .e2ee
        .upload_cross_signing(user, uploaded, uia.is_some())
        .await?;
    Ok(RumaResponse(upload_signing_keys::v3::Response::new()))
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
pub async fn upload_signatures(
    State(state): State<AppState>,
    request: Ruma<upload_signatures::v3::Request>,
) -> Result<Json<Value>> {
    let session = request.session()?;
    let body: Value =
        serde_json::from_slice(&request.raw_body).map_err(|e| Error::bad_json(e.to_string()))?;
    let signed: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_value(body).map_err(|e| Error::bad_json(e.to_string()))?;
    Ok(Json(
        state
            .e2ee
            .upload_signatures(session.user_id.as_str(), &signed)
            .await?,
    ))
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`: idempotent per device;
/// `*` for all of a user's devices. Only this server's users until federation; unknown
/// users and devices are skipped.
pub async fn send_to_device(
    State(state): State<AppState>,
    request: Ruma<send_event_to_device::v3::Request>,
) -> Result<Json<Value>> {
    let session = request.session()?;
    let body = &request.body;
    let scope = format!("sendToDevice/{}/{}", body.event_type, body.txn_id);
    let mut messages = BTreeMap::new();
    for (user, devices) in &body.messages {
        let devices = devices
            .iter()
            .map(|(target, content)| Ok((target.to_string(), json_of(content)?)))
            .collect::<Result<_>>()?;
        messages.insert(user.clone(), devices);
    }
    let send = ToDeviceSend {
        sender: &session.user_id,
        device: &session.device_id,
        txn_id: body.txn_id.as_str(),
        scope: &scope,
        kind: &body.event_type.to_string(),
        messages,
    };
    let devices_of = |user: &str| state.sessions.device_ids(user);
    state.e2ee.send_to_device(send, devices_of).await?;
    Ok(Json(json!({})))
}
