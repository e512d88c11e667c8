//! The admin operations, on the services directly.

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};

use crate::services::account;
use crate::services::auth::RegistrationToken;
use crate::services::error::{Error, Result};
use crate::services::room_deletion;
use crate::services::{AppState, Services};

#[derive(Debug, Serialize, Deserialize)]
pub struct CreateUser {
    /// A localpart or a full user ID on this server.
    pub user: String,
    pub password: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResetPassword {
    pub password: String,
    /// Whether to end the user's sessions (default true).
    #[serde(default = "yes")]
    pub logout_devices: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NewToken {
    pub token: Option<String>,
    pub uses_allowed: Option<u32>,
    /// Milliseconds since the epoch.
    pub expiry_time: Option<u64>,
}

/// A local user named by localpart or full ID.
fn local_user(services: &Services, user: &str) -> Result<OwnedUserId> {
    services
        .auth
        .login_user_id(user)
        .ok_or_else(|| Error::invalid_param("Not a user of this server"))
}

/// A user's account as the admin sees it.
pub fn show_user(services: &Services, user: &str) -> Result<serde_json::Value> {
    let user_id = local_user(services, user)?;
    let auth = &services.auth;
    let account = auth
        .account(&user_id)?
        .ok_or_else(|| Error::not_found("No such user"))?;
    let emails: Vec<_> = auth
        .threepids(&user_id)?
        .into_iter()
        .map(|(address, t)| serde_json::json!({ "address": address, "validated_ts": t.validated_ts }))
        .collect();
    let links: Vec<_> = auth
        .identity_links(&user_id)?
        .into_iter()
        .map(|(idp, subject, link)| {
            serde_json::json!({ "provider": idp, "subject": subject, "linked_ts": link.linked_ts })
        })
        .collect();
    Ok(serde_json::json!({
        "user_id": user_id,
        "admin": account.admin,
        "deactivated": account.deactivated,
        "has_password": account.password_hash.is_some(),
        "created_ts": account.created_ts,
        "emails": emails,
        "sso_links": links,
    }))
}

pub async fn create_user(services: &Services, request: CreateUser) -> Result<OwnedUserId> {
    let localpart = local_user(services, &request.user)?;
    let localpart = localpart.localpart();
    services
        .auth
        .create_account(localpart, &request.password, request.admin)
        .await
}

pub async fn reset_password(services: &Services, user: &str, request: ResetPassword) -> Result<()> {
    let user_id = local_user(services, user)?;
    account::change_password(
        services,
        &user_id,
        &request.password,
        request.logout_devices,
        None,
    )
    .await
}

pub async fn deactivate(services: &Services, user: &str) -> Result<()> {
    account::deactivate(services, &local_user(services, user)?).await
}

pub async fn create_token(services: &Services, request: NewToken) -> Result<RegistrationToken> {
    let NewToken {
        token,
        uses_allowed,
        expiry_time,
    } = request;
    let auth = &services.auth;
    auth.create_token(token, uses_allowed, expiry_time).await
}

pub async fn delete_token(services: &Services, token: &str) -> Result<()> {
    services.auth.delete_token(token).await
}

pub fn list_tokens(services: &Services) -> Result<Vec<RegistrationToken>> {
    services.auth.tokens()
}

/// Deletes a room as Synapse's admin API does (its local users moved out, then, if
/// `purge`, every trace of it gone), waiting for the end; what the shutdown did.
pub async fn delete_room(
    services: &AppState,
    room_id: ruma::OwnedRoomId,
    block: bool,
    purge: bool,
) -> Result<room_deletion::ShutdownResult> {
    let request = room_deletion::DeletionRequest {
        requester: "kith admin".to_owned(),
        new_room_user_id: None,
        room_name: None,
        message: None,
        block,
        purge,
        force_purge: false,
    };
    room_deletion::run_now(services, room_id, request).await
}
