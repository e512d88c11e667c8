//! Registration (auth-service): user-interactive auth with `m.login.dummy` or
//! `m.login.email.identity` (only the latter with `require_email`), and with
//! `m.login.registration_token` first when the server is in token mode.

use axum::extract::State;
use http::StatusCode;
use ruma::api::client::account::{
    check_registration_token_validity, get_username_availability, register,
};

use crate::config::RegistrationMode;
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::auth::{UiaFlows, email, password};
use crate::util::random_string;

const OPEN_FLOWS: UiaFlows = &[&["m.login.dummy"]];
const OPEN_EMAIL_FLOWS: UiaFlows = &[&["m.login.dummy"], &["m.login.email.identity"]];
const OPEN_EMAIL_REQUIRED_FLOWS: UiaFlows = &[&["m.login.email.identity"]];
/// As Synapse: the token stage, then dummy (matrix-nio's token registration expects both).
const TOKEN_FLOWS: UiaFlows = &[&["m.login.registration_token", "m.login.dummy"]];
const TOKEN_EMAIL_FLOWS: UiaFlows = &[
    &["m.login.registration_token", "m.login.dummy"],
    &["m.login.registration_token", "m.login.email.identity"],
];
const TOKEN_EMAIL_REQUIRED_FLOWS: UiaFlows =
    &[&["m.login.registration_token", "m.login.email.identity"]];

/// The flows offered: email as an option when mail is set up, the only way if required.
fn flows(state: &AppState) -> Result<UiaFlows> {
    let email = state.auth.mailer.is_some();
    let required = state.config.registration.require_email;
    Ok(match (state.config.registration.mode, email, required) {
        (RegistrationMode::Closed, ..) => {
            return Err(Error::forbidden("Registration is disabled"));
        }
        (RegistrationMode::Open, false, _) => OPEN_FLOWS,
        (RegistrationMode::Open, true, false) => OPEN_EMAIL_FLOWS,
        (RegistrationMode::Open, true, true) => OPEN_EMAIL_REQUIRED_FLOWS,
        (RegistrationMode::Token, false, _) => TOKEN_FLOWS,
        (RegistrationMode::Token, true, false) => TOKEN_EMAIL_FLOWS,
        (RegistrationMode::Token, true, true) => TOKEN_EMAIL_REQUIRED_FLOWS,
    })
}

/// `POST /_matrix/client/v3/register`
pub async fn register(
    State(state): State<AppState>,
    request: Ruma<register::v3::Request>,
) -> Result<RumaResponse<register::v3::Response>> {
    let body = &request.body;
    let flows = flows(&state)?;
    if body.kind == register::RegistrationKind::Guest {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            "M_GUEST_ACCESS_FORBIDDEN",
            "Guest access is disabled",
        ));
    }
    let auth = &state.auth;
    // Check the name before any auth, so clients can tell the user at once (as Synapse does).
    if let Some(username) = &body.username {
        auth.check_available(username)?;
    }
    let uia = auth
        .uia("register", flows, body.auth.as_ref(), None)
        .await?;

    let password = body
        .password
        .as_deref()
        .ok_or_else(|| Error::missing_param("Missing password"))?;
    let hash = password::hash(password).await?;
    let _registering = auth.registering().await;
    let user_id = match &body.username {
        Some(username) => auth.check_available(username)?,
        None => loop {
            if let Ok(user_id) = auth.check_available(&random_string(12).to_lowercase()) {
                break user_id;
            }
        },
    };
    let mut batch = state.storage.batch();
    if let Some(token) = &uia.registration_token {
        // Re-checked under the lock: the last use may have gone to another registration.
        if !auth.token_valid(token)? {
            return Err(Error::new(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                "Registration token used up",
            ));
        }
        auth.consume_token_into(&mut batch, token)?;
    }
    if let Some(proof) = &uia.email {
        // Re-checked under the lock: another account may have taken it since.
        if auth.email_owner(&proof.address)?.is_some() {
            return Err(email::threepid_in_use().into());
        }
        auth.bind_email_into(&mut batch, &user_id, &proof.address, proof.validated_ts)?;
        auth.consume_email_proof_into(&mut batch, proof)?;
    }
    auth.create_account_into(&mut batch, &user_id, Some(hash), false)?;

    if body.inhibit_login {
        state.storage.commit(batch).await?;
        return Ok(RumaResponse(register::v3::Response::new(user_id)));
    }
    let (session, tokens) = state
        .sessions
        .create(
            batch,
            &user_id,
            body.device_id.as_ref().map(|d| d.as_str()),
            body.initial_device_display_name.clone(),
            body.refresh_token,
            request.client_ip,
        )
        .await?;
    let mut response = register::v3::Response::new(session.user_id);
    response.access_token = Some(tokens.access_token);
    response.device_id = Some(session.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    Ok(RumaResponse(response))
}

/// `GET /_matrix/client/v3/register/available`
pub async fn available(
    State(state): State<AppState>,
    request: Ruma<get_username_availability::v3::Request>,
) -> Result<RumaResponse<get_username_availability::v3::Response>> {
    state.auth.check_available(&request.body.username)?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn token_validity(
    State(state): State<AppState>,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<RumaResponse<check_registration_token_validity::v1::Response>> {
    if state.config.registration.mode != RegistrationMode::Token {
        return Err(Error::forbidden("Registration tokens are not in use"));
    }
    let valid = state.auth.token_valid(&request.body.token)?;
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(valid),
    ))
}
