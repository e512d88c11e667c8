//! `/_synapse/admin/v1/registration_tokens`: list, create, read, change and delete.

use axum::Json;
use axum::extract::{Path, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::gateway::{Error, Result, ServerAdmin};
use crate::services::AppState;
use crate::services::auth::RegistrationToken;

/// A token as Synapse shows it (kith counts no pending registrations against a token).
fn shown(token: &RegistrationToken) -> Value {
    json!({
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": 0,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    })
}

#[derive(Deserialize)]
pub struct Valid {
    valid: Option<String>,
}

/// `GET /v1/registration_tokens?valid=`
pub async fn list(
    axum::extract::State(state): axum::extract::State<AppState>,
    Query(query): Query<Valid>,
    _admin: ServerAdmin<serde::de::IgnoredAny>,
) -> Result<Json<Value>> {
    let valid = super::flag(&query.valid, "valid")?;
    let now = crate::util::now_ms();
    let tokens: Vec<Value> = (state.auth.tokens()?.iter())
        .filter(|t| valid.is_none_or(|valid| t.usable(now) == valid))
        .map(shown)
        .collect();
    Ok(Json(json!({ "registration_tokens": tokens })))
}

/// A JSON field that may be absent (`None`), `null` (`Some(None)`) or a value; of another
/// type, `400 M_INVALID_PARAM` saying `wanted`.
fn optional<T: serde::de::DeserializeOwned>(
    body: &Value,
    key: &str,
    wanted: &str,
) -> Result<Option<Option<T>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => serde_json::from_value(value.clone())
            .map(|v| Some(Some(v)))
            .map_err(|_| Error::invalid_param(format!("{key} must be {wanted}"))),
    }
}

const COUNT: &str = "a non-negative integer or null";

/// `POST /v1/registration_tokens/new` `{token?, length?, uses_allowed?, expiry_time?}`
pub async fn create(
    axum::extract::State(state): axum::extract::State<AppState>,
    ServerAdmin(request): ServerAdmin<Value>,
) -> Result<Json<Value>> {
    let body = &request.body;
    if !body.is_object() && !body.is_null() {
        return Err(Error::bad_json("The body must be a JSON object"));
    }
    let token = optional::<String>(body, "token", "a string")?.flatten();
    let length = optional::<u64>(body, "length", "an integer from 1 to 64")?.flatten();
    let token = match (token, length) {
        (Some(token), _) => Some(token),
        (None, Some(length @ 1..=64)) => Some(crate::util::random_string(length as usize)),
        (None, Some(_)) => {
            return Err(Error::invalid_param(
                "length must be an integer from 1 to 64",
            ));
        }
        (None, None) => None,
    };
    let uses_allowed = optional::<u32>(body, "uses_allowed", COUNT)?.flatten();
    let expiry_time = optional::<u64>(body, "expiry_time", COUNT)?.flatten();
    if expiry_time.is_some_and(|t| t < crate::util::now_ms()) {
        return Err(Error::invalid_param("expiry_time must not be in the past"));
    }
    let created = state
        .auth
        .create_token(token, uses_allowed, expiry_time)
        .await?;
    Ok(Json(shown(&created)))
}

/// `GET /v1/registration_tokens/{token}`
pub async fn get_one(
    axum::extract::State(state): axum::extract::State<AppState>,
    Path(token): Path<String>,
    _admin: ServerAdmin<serde::de::IgnoredAny>,
) -> Result<Json<Value>> {
    let found = state.auth.token(&token)?;
    let found =
        found.ok_or_else(|| Error::not_found(format!("No such registration token: {token}")))?;
    Ok(Json(shown(&found)))
}

/// `PUT /v1/registration_tokens/{token}` `{uses_allowed?, expiry_time?}` (`null`: no limit)
pub async fn update(
    axum::extract::State(state): axum::extract::State<AppState>,
    Path(token): Path<String>,
    ServerAdmin(request): ServerAdmin<Value>,
) -> Result<Json<Value>> {
    let body = &request.body;
    if !body.is_object() {
        return Err(Error::bad_json("Content must be a JSON object."));
    }
    let uses_allowed = optional::<u32>(body, "uses_allowed", COUNT)?;
    let expiry_time = optional::<u64>(body, "expiry_time", COUNT)?;
    if expiry_time
        .flatten()
        .is_some_and(|t| t < crate::util::now_ms())
    {
        return Err(Error::invalid_param("expiry_time must not be in the past"));
    }
    let updated = state
        .auth
        .update_token(&token, uses_allowed, expiry_time)
        .await?;
    Ok(Json(shown(&updated)))
}

/// `DELETE /v1/registration_tokens/{token}`
pub async fn delete(
    axum::extract::State(state): axum::extract::State<AppState>,
    Path(token): Path<String>,
    _admin: ServerAdmin<serde::de::IgnoredAny>,
) -> Result<Json<Value>> {
    state.auth.delete_token(&token).await?;
    Ok(Json(json!({})))
}
