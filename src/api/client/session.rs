//! Logging in and out, refreshing, whoami (session-service, with auth-service's passwords).

use axum::extract::State;
use ruma::api::client::account::whoami;
use ruma::api::client::session::{get_login_types, login, logout, logout_all, refresh_token};
use ruma::api::client::uiaa::UserIdentifier;

use crate::events::RevokeReason;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::account::{self, Proof};
use crate::services::auth::email;
use crate::services::session::NewDevice;
use crate::services::{AppState, auth};

/// `GET /_matrix/client/v3/login`: passwords, and with identity providers configured,
/// `m.login.sso` (listing them) and `m.login.token` (how SSO ends).
pub async fn login_types(
    State(state): State<AppState>,
    _request: Ruma<get_login_types::v3::Request>,
) -> RumaResponse<get_login_types::v3::Response> {
    use get_login_types::v3::{IdentityProvider, LoginType, SsoLoginType};
    let mut types = vec![LoginType::Password(Default::default())];
    let providers = state.auth.sso_providers();
    if !providers.is_empty() {
        let mut sso = SsoLoginType::new();
        sso.identity_providers = providers
            .iter()
            .map(|p| IdentityProvider::new(p.config.id.clone(), p.config.name.clone()))
            .collect();
        types.push(LoginType::Sso(sso));
        types.push(LoginType::Token(Default::default()));
    }
    RumaResponse(get_login_types::v3::Response::new(types))
}

/// `POST /_matrix/client/v3/login`: `m.login.password` with `m.id.user` (full user ID or
/// localpart) or `m.id.thirdparty` (a verified email address). Failed attempts are rate
/// limited per account and per client address.
pub async fn login(
    State(state): State<AppState>,
    request: Ruma<login::v3::Request>,
) -> Result<RumaResponse<login::v3::Response>> {
    let body = &request.body;
    let password = match &body.login_info {
        login::v3::LoginInfo::Password(password) => password,
        login::v3::LoginInfo::Token(token) if !state.auth.sso_providers().is_empty() => {
            let user_id = token_login(&state, &token.token, request.client_ip).await?;
            return new_session(&state, &request, &user_id, Proof::LoginToken).await;
        }
        _ => {
            return Err(Error::unknown(
                http::StatusCode::BAD_REQUEST,
                "Unknown login type",
            ));
        }
    };
    let auth = &state.auth;
    // `user`, `medium` and `address` are how pre-r0.4 clients name themselves.
    #[allow(deprecated)]
    let legacy = (&password.user, &password.medium, &password.address);
    let user_id = match (&password.identifier, legacy) {
        (Some(UserIdentifier::Matrix(id)), _) => auth.login_user_id(&id.user),
        (Some(UserIdentifier::Email(email)), _) => auth.email_owner(&email.address)?,
        (None, (Some(user), _, _)) => auth.login_user_id(user),
        (None, (None, Some(medium), Some(address))) if medium == "email" => {
            auth.email_owner(address)?
        }
        (Some(UserIdentifier::Msisdn(_) | UserIdentifier::PhoneNumber(_)), _)
        | (None, (None, Some(_), Some(_))) => return Err(email::medium_not_supported().into()),
        (Some(_), _) => {
            return Err(Error::unknown(
                http::StatusCode::BAD_REQUEST,
                "Only m.id.user and m.id.thirdparty identifiers are supported",
            ));
        }
        (None, _) => return Err(Error::missing_param("Missing identifier")),
    };

    let ip_key = crate::util::address_key(request.client_ip);
    // Names that are not user IDs of this server share one bucket (and a bounded key).
    let user_key = user_id
        .as_ref()
        .map_or_else(|| "(not a local user)".to_owned(), |u| u.to_string());
    let keys = [ip_key.as_str(), user_key.as_str()];
    auth.login_limiter
        .take_all(&keys)
        .map_err(Error::limit_exceeded)?;
    let proof = match &user_id {
        Some(user_id) => auth.password_proof(user_id, &password.password).await?,
        None => auth::password::verify(&password.password, None)
            .await?
            .then(String::new),
    };
    let (Some(user_id), Some(hash)) = (user_id, proof) else {
        return Err(Error::forbidden("Invalid username or password"));
    };
    keys.iter().for_each(|key| auth.login_limiter.refund(key));
    new_session(&state, &request, &user_id, Proof::Password(hash)).await
}

/// `m.login.token`: a login token from SSO, usable once; failures are rate limited per
/// client address, as failed passwords.
async fn token_login(
    state: &AppState,
    token: &str,
    client_ip: std::net::IpAddr,
) -> Result<ruma::OwnedUserId> {
    let ip_key = crate::util::address_key(client_ip);
    let limiter = &state.auth.login_limiter;
    limiter.take(&ip_key).map_err(Error::limit_exceeded)?;
    let user_id = state
        .auth
        .take_login_token(token)
        .await?
        .ok_or_else(|| Error::forbidden("Invalid or expired login token"))?;
    limiter.refund(&ip_key);
    Ok(user_id)
}

/// The session a successful login starts.
async fn new_session(
    state: &AppState,
    request: &Ruma<login::v3::Request>,
    user_id: &ruma::OwnedUserId,
    proof: Proof,
) -> Result<RumaResponse<login::v3::Response>> {
    let body = &request.body;
    let device = NewDevice {
        device_id: body.device_id.as_ref().map(|d| d.as_str()),
        display_name: body.initial_device_display_name.clone(),
        want_refresh: body.refresh_token,
        ip: request.client_ip,
    };
    let (session, tokens) = account::sign_in(state, user_id, proof, device).await?;
    let mut response =
        login::v3::Response::new(session.user_id, tokens.access_token, session.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    Ok(RumaResponse(response))
}

/// `POST /_matrix/client/v3/refresh`
pub async fn refresh(
    State(state): State<AppState>,
    request: Ruma<refresh_token::v3::Request>,
) -> Result<RumaResponse<refresh_token::v3::Response>> {
    let tokens = state.sessions.refresh(&request.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(tokens.access_token);
    response.refresh_token = tokens.refresh_token;
    response.expires_in_ms = tokens.expires_in;
    Ok(RumaResponse(response))
}

/// `POST /_matrix/client/v3/logout`: ends this device's session.
pub async fn logout(
    State(state): State<AppState>,
    request: Ruma<logout::v3::Request>,
) -> Result<RumaResponse<logout::v3::Response>> {
    let session = request.session()?;
    let devices = [session.device_id.to_string()];
    state
        .sessions
        .remove_devices(session.user_id.as_str(), &devices, RevokeReason::Logout)
        .await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

/// `POST /_matrix/client/v3/logout/all`: ends every session of the user.
pub async fn logout_all(
    State(state): State<AppState>,
    request: Ruma<logout_all::v3::Request>,
) -> Result<RumaResponse<logout_all::v3::Response>> {
    let session = request.session()?;
    state
        .sessions
        .remove_all_devices(session.user_id.as_str(), RevokeReason::Logout)
        .await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}

/// `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(
    request: Ruma<whoami::v3::Request>,
) -> Result<RumaResponse<whoami::v3::Response>> {
    let session = request.session()?;
    let mut response = whoami::v3::Response::new(session.user_id.clone(), false);
    response.device_id = Some(session.device_id.clone());
    Ok(RumaResponse(response))
}
