//! `/_synapse/admin/v2/users` and the per-user endpoints: list, query, create or modify,
//! deactivate, reset the password, whois, joined rooms, devices.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::Paging;
use crate::admin::ops;
use crate::gateway::{Error, Result, ServerAdmin};
use crate::services::auth::Account;
use crate::services::{AppState, Services, account};

/// A local user named in the path: 400 for another server's, 404 for no account.
fn local(state: &Services, user_id: &str) -> Result<(OwnedUserId, Option<Account>)> {
    let user_id = UserId::parse(user_id)
        .map_err(|_| Error::invalid_param(format!("Not a user ID: {user_id}")))?;
    if user_id.server_name() != state.server_name {
        let message = "Can only look up local users";
        return Err(Error::unknown(StatusCode::BAD_REQUEST, message));
    }
    let account = state.auth.account(&user_id)?;
    Ok((user_id, account))
}

fn known(state: &Services, user_id: &str) -> Result<(OwnedUserId, Account)> {
    match local(state, user_id)? {
        (user_id, Some(account)) => Ok((user_id, account)),
        (_, None) => Err(Error::not_found("User not found")),
    }
}

/// A user as Synapse lists them (`creation_ts` in milliseconds, as its list has it).
fn summary(state: &Services, user_id: &str, account: &Account) -> Result<Value> {
    let profile = state.profiles.get(user_id)?;
    let field = |f: fn(&crate::services::profile::Profile) -> Option<&str>| {
        profile.as_ref().and_then(f).map(str::to_owned)
    };
    let last_seen = (state.sessions.devices(user_id)?.iter())
        .map(|(_, device)| device.last_seen_ts)
        .max();
    Ok(json!({
        "name": user_id,
        "user_type": null,
        "is_guest": false,
        "admin": account.admin,
        "deactivated": account.deactivated,
        "shadow_banned": false,
        "displayname": field(|p| p.displayname.as_deref()),
        "avatar_url": field(|p| p.avatar_url.as_deref()),
        "creation_ts": account.created_ts,
        "erased": false,
        "last_seen_ts": last_seen,
        "locked": false,
    }))
}

/// A user as Synapse shows one (`creation_ts` in seconds, as it has it there).
fn details(state: &Services, user_id: &UserId, account: &Account) -> Result<Value> {
    let mut shown = summary(state, user_id.as_str(), account)?;
    let threepids: Vec<Value> = (state.auth.threepids(user_id)?.into_iter())
        .map(|(address, t)| {
            json!({
                "medium": "email",
                "address": address,
                "added_at": t.added_ts,
                "validated_at": t.validated_ts,
            })
        })
        .collect();
    let external_ids: Vec<Value> = (state.auth.identity_links(user_id)?.into_iter())
        .map(|(provider, subject, _)| json!({ "auth_provider": provider, "external_id": subject }))
        .collect();
    let extra = json!({
        "threepids": threepids,
        "external_ids": external_ids,
        "appservice_id": null,
        "consent_server_notice_sent": null,
        "consent_version": null,
        "consent_ts": null,
        "suspended": false,
        "creation_ts": account.created_ts / 1000,
    });
    if let (Some(shown), Some(extra)) = (shown.as_object_mut(), extra.as_object()) {
        shown.extend(extra.clone());
    }
    Ok(shown)
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    paging: Paging,
    name: Option<String>,
    user_id: Option<String>,
    guests: Option<String>,
    deactivated: Option<String>,
    admins: Option<String>,
    order_by: Option<String>,
    dir: Option<String>,
}

/// `GET /v2/users?from&limit&name&user_id&guests&deactivated&admins&order_by&dir`
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (from, limit) = query.paging.read()?;
    let deactivated = super::flag(&query.deactivated, "deactivated")?.unwrap_or(false);
    super::flag(&query.guests, "guests")?;
    let admins = super::flag(&query.admins, "admins")?;
    let backwards = super::backwards(query.dir.as_deref(), false)?;
    let mut users = Vec::new();
    for (user_id, account) in state.auth.accounts()? {
        if (account.deactivated && !deactivated) || admins.is_some_and(|a| a != account.admin) {
            continue;
        }
        let shown = summary(&state, &user_id, &account)?;
        let contains = |text: &Value, part: &str| {
            text.as_str()
                .is_some_and(|t| t.to_lowercase().contains(&part.to_lowercase()))
        };
        if let Some(name) = &query.name
            && !contains(&shown["name"], name)
            && !contains(&shown["displayname"], name)
        {
            continue;
        }
        if query
            .user_id
            .as_ref()
            .is_some_and(|part| !contains(&shown["name"], part))
        {
            continue;
        }
        users.push(shown);
    }
    let key = match query.order_by.as_deref().unwrap_or("name") {
        key @ ("name" | "displayname" | "creation_ts" | "admin" | "deactivated" | "is_guest"
        | "user_type" | "avatar_url" | "shadow_banned" | "locked" | "last_seen_ts") => key,
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown value for order_by: {other}"
            )));
        }
    };
    users.sort_by(|a, b| {
        super::order(&a[key], &b[key]).then_with(|| super::order(&a["name"], &b["name"]))
    });
    if backwards {
        users.reverse();
    }
    let total = users.len();
    let page: Vec<Value> = users.into_iter().skip(from).take(limit).collect();
    let next = from + page.len();
    let mut answer = json!({ "users": page, "total": total });
    if super::more_after(from, limit, total) {
        answer["next_token"] = json!(next.to_string());
    }
    Ok(Json(answer))
}

/// `GET /v2/users/{user_id}`
pub async fn query(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (user_id, account) = known(&state, &user_id)?;
    Ok(Json(details(&state, &user_id, &account)?))
}

#[derive(Deserialize)]
pub struct UserChanges {
    password: Option<String>,
    #[serde(default = "yes")]
    logout_devices: bool,
    #[serde(default, deserialize_with = "given")]
    displayname: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    avatar_url: Option<Option<String>>,
    threepids: Option<Vec<ThreePidIn>>,
    admin: Option<bool>,
    deactivated: Option<bool>,
}

#[derive(Deserialize)]
pub struct ThreePidIn {
    medium: String,
    address: String,
}

fn yes() -> bool {
    true
}

/// A field that was given: `Some(None)` for `null` (which serde otherwise reads as absent).
fn given<'de, D, T>(field: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(field).map(Some)
}

/// `PUT /v2/users/{user_id}`: creates the user (`201`; a password is needed here) or
/// changes what the body names (`200`): password, display name, avatar, email addresses,
/// admin, deactivated. Each change is its own write, as in Synapse.
pub async fn create_or_modify(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    ServerAdmin(request): ServerAdmin<Value>,
) -> Result<Response> {
    let changes: UserChanges = serde_json::from_value(request.body.clone())
        .map_err(|e| Error::bad_json(format!("The body is not a user's fields: {e}")))?;
    let (user_id, account) = local(&state, &user_id)?;
    // Everything is checked before anything is written.
    let emails = match &changes.threepids {
        Some(threepids) => {
            if let Some(other) = threepids.iter().find(|t| t.medium != "email") {
                let medium = &other.medium;
                let message = format!("Unsupported medium: {medium}");
                return Err(Error::invalid_param(message));
            }
            let addresses: Vec<String> = threepids.iter().map(|t| t.address.clone()).collect();
            Some(state.auth.check_emails(&user_id, &addresses)?)
        }
        None => None,
    };
    for (field, value) in [
        ("displayname", &changes.displayname),
        ("avatar_url", &changes.avatar_url),
    ] {
        if value == &Some(None) {
            return Err(Error::invalid_param(format!("'{field}' must be a string")));
        }
    }
    if changes.admin == Some(false) && request.session.user_id == user_id {
        let message = "You may not demote yourself.";
        return Err(Error::unknown(StatusCode::BAD_REQUEST, message));
    }
    let created = account.is_none();
    match (&account, &changes.password) {
        (None, Some(password)) => {
            let request = ops::CreateUser {
                user: user_id.to_string(),
                password: password.clone(),
                admin: changes.admin.unwrap_or(false),
            };
            ops::create_user(&state, request).await?;
        }
        (None, None) => {
            return Err(Error::invalid_param("A new user needs a password here"));
        }
        (Some(account), Some(password)) if !account.deactivated => {
            let logout = changes.logout_devices;
            account::change_password(&state, &user_id, password, logout, None).await?;
        }
        (Some(account), _) if account.deactivated && changes.deactivated == Some(false) => {
            return Err(Error::invalid_param(
                "kith does not reactivate deactivated users",
            ));
        }
        _ => {}
    }
    if let Some(admin) = changes.admin.filter(|_| !created) {
        state.auth.set_admin(&user_id, admin).await?;
    }
    for (field, value) in [
        ("displayname", &changes.displayname),
        ("avatar_url", &changes.avatar_url),
    ] {
        if let Some(Some(value)) = value {
            // As Synapse: an empty string clears the field.
            let value = Some(value.clone())
                .filter(|v| !v.is_empty())
                .map(Value::String);
            account::set_profile_field(&state, &user_id, field, value).await?;
        }
    }
    if let Some(emails) = &emails {
        state.auth.set_emails(&user_id, emails).await?;
    }
    if changes.deactivated == Some(true) && account.as_ref().is_none_or(|a| !a.deactivated) {
        account::deactivate(&state, &user_id).await?;
    }
    let (user_id, account) = known(&state, user_id.as_str())?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(details(&state, &user_id, &account)?)).into_response())
}

#[derive(Deserialize, Default)]
pub struct Erase {
    #[serde(default)]
    erase: bool,
}

/// `POST /v1/deactivate/{user_id}` `{erase?}`: sessions end, the password is forgotten,
/// the name stays taken; with `erase`, the display name and avatar go too (the messages
/// stay with those who received them, as in Synapse).
pub async fn deactivate(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    ServerAdmin(request): ServerAdmin<Option<Erase>>,
) -> Result<Json<Value>> {
    let (user_id, _) = known(&state, &user_id)?;
    let erase = request.body.unwrap_or_default().erase;
    if erase {
        for field in ["displayname", "avatar_url"] {
            account::set_profile_field(&state, &user_id, field, None).await?;
        }
    }
    account::deactivate(&state, &user_id).await?;
    Ok(Json(json!({ "id_server_unbind_result": "success" })))
}

#[derive(Deserialize)]
pub struct NewPassword {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
}

/// `POST /v1/reset_password/{user_id}` `{new_password, logout_devices?}`
pub async fn reset_password(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    ServerAdmin(request): ServerAdmin<Value>,
) -> Result<Json<Value>> {
    let body: NewPassword = serde_json::from_value(request.body.clone())
        .map_err(|_| Error::missing_param("Missing params: ['new_password']"))?;
    let user_id = match local(&state, &user_id) {
        Ok((user_id, Some(_))) => user_id,
        _ => return Err(Error::not_found("Unknown user")),
    };
    let logout = body.logout_devices;
    account::change_password(&state, &user_id, &body.new_password, logout, None).await?;
    Ok(Json(json!({})))
}

/// `GET /v1/whois/{user_id}`: where the user's devices were last seen.
pub async fn whois(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (user_id, _) = local(&state, &user_id)?;
    // As Synapse: one device named "", one session, a connection per place seen (here,
    // each device's last address).
    let connections: Vec<Value> = (state.sessions.devices(user_id.as_str())?.into_iter())
        .filter_map(|(_, device)| {
            let ip = device.last_seen_ip?;
            Some(json!({ "ip": ip, "last_seen": device.last_seen_ts, "user_agent": "" }))
        })
        .collect();
    let sessions = json!({ "": { "sessions": [{ "connections": connections }] } });
    Ok(Json(json!({ "user_id": user_id, "devices": sessions })))
}

/// `GET /v1/users/{user_id}/joined_rooms`
pub async fn joined_rooms(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    // As Synapse: any user ID, known or not, has a (maybe empty) list.
    let rooms = match UserId::parse(&user_id) {
        Ok(user_id) => state.messaging.joined_rooms(&user_id)?,
        Err(_) => Vec::new(),
    };
    Ok(Json(json!({ "joined_rooms": rooms, "total": rooms.len() })))
}

/// `GET /v2/users/{user_id}/devices`
pub async fn devices(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    _admin: ServerAdmin<IgnoredAny>,
) -> Result<Json<Value>> {
    let (user_id, account) = local(&state, &user_id)?;
    if account.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    let devices: Vec<Value> = (state.sessions.devices(user_id.as_str())?.into_iter())
        .map(|(device_id, device)| {
            json!({
                "device_id": device_id,
                "display_name": device.display_name,
                "last_seen_ip": device.last_seen_ip,
                "last_seen_ts": device.last_seen_ts,
                "last_seen_user_agent": null,
                "user_id": user_id,
            })
        })
        .collect();
    Ok(Json(json!({ "total": devices.len(), "devices": devices })))
}
