//! Email addresses (auth-service): asking for a validation mail, kith's page the mailed
//! link opens, and the account's verified addresses. Phone numbers are not supported.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use ruma::api::client::account::{
    ThirdPartyIdRemovalStatus, add_3pid, delete_3pid, get_3pids,
    request_3pid_management_token_via_email as add_email_token,
    request_3pid_management_token_via_msisdn as add_msisdn_token,
    request_password_change_token_via_email as password_email_token,
    request_password_change_token_via_msisdn as password_msisdn_token,
    request_registration_token_via_email as register_email_token,
    request_registration_token_via_msisdn as register_msisdn_token,
};
use ruma::thirdparty::Medium;
use ruma::{OwnedSessionId, UInt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{escape, page, wants_html};
use crate::gateway::{Error, Result, Ruma, RumaResponse};
use crate::services::AppState;
use crate::services::auth::email::{EmailPurpose, TokenRequest, medium_not_supported};

async fn request_token(
    state: &AppState,
    purpose: EmailPurpose,
    client_secret: &str,
    email: &str,
    send_attempt: UInt,
    next_link: Option<&str>,
    client_ip: std::net::IpAddr,
) -> Result<OwnedSessionId> {
    let sid = state
        .auth
        .request_email_token(TokenRequest {
            purpose,
            client_secret,
            email,
            send_attempt: send_attempt.into(),
            next_link,
            client_ip,
        })
        .await?;
    OwnedSessionId::try_from(sid).map_err(Error::internal)
}

/// `POST /_matrix/client/v3/register/email/requestToken`
pub async fn register_token(
    State(state): State<AppState>,
    request: Ruma<register_email_token::v3::Request>,
) -> Result<RumaResponse<register_email_token::v3::Response>> {
    let body = &request.body;
    let sid = request_token(
        &state,
        EmailPurpose::Register,
        body.client_secret.as_str(),
        &body.email,
        body.send_attempt,
        body.next_link.as_deref(),
        request.client_ip,
    );
    Ok(RumaResponse(register_email_token::v3::Response::new(
        sid.await?,
    )))
}

/// `POST /_matrix/client/v3/account/3pid/email/requestToken`
pub async fn add_token(
    State(state): State<AppState>,
    request: Ruma<add_email_token::v3::Request>,
) -> Result<RumaResponse<add_email_token::v3::Response>> {
    let body = &request.body;
    let sid = request_token(
        &state,
        EmailPurpose::AddThreepid,
        body.client_secret.as_str(),
        &body.email,
        body.send_attempt,
        body.next_link.as_deref(),
        request.client_ip,
    );
    Ok(RumaResponse(add_email_token::v3::Response::new(sid.await?)))
}

/// `POST /_matrix/client/v3/account/password/email/requestToken`
pub async fn password_token(
    State(state): State<AppState>,
    request: Ruma<password_email_token::v3::Request>,
) -> Result<RumaResponse<password_email_token::v3::Response>> {
    let body = &request.body;
    let sid = request_token(
        &state,
        EmailPurpose::ResetPassword,
        body.client_secret.as_str(),
        &body.email,
        body.send_attempt,
        body.next_link.as_deref(),
        request.client_ip,
    );
    Ok(RumaResponse(password_email_token::v3::Response::new(
        sid.await?,
    )))
}

/// `POST /_matrix/client/v3/register/msisdn/requestToken`
pub async fn register_msisdn(
    _request: Ruma<register_msisdn_token::v3::Request>,
) -> Result<RumaResponse<register_msisdn_token::v3::Response>> {
    Err(medium_not_supported().into())
}

/// `POST /_matrix/client/v3/account/3pid/msisdn/requestToken`
pub async fn add_msisdn(
    _request: Ruma<add_msisdn_token::v3::Request>,
) -> Result<RumaResponse<add_msisdn_token::v3::Response>> {
    Err(medium_not_supported().into())
}

/// `POST /_matrix/client/v3/account/password/msisdn/requestToken`
pub async fn password_msisdn(
    _request: Ruma<password_msisdn_token::v3::Request>,
) -> Result<RumaResponse<password_msisdn_token::v3::Response>> {
    Err(medium_not_supported().into())
}

#[derive(Deserialize)]
pub struct ValidateQuery {
    sid: String,
    client_secret: String,
    token: String,
}

/// `GET /_kith/client/email/validate?sid&client_secret&token`: the page a mailed link
/// opens. Marks the session validated and sends the browser on to the client's
/// `next_link`, or says it is done. A browser gets pages; other callers Matrix errors.
pub async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ValidateQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = match query {
        Ok(Query(q)) => state
            .auth
            .validate_email_link(&q.sid, &q.client_secret, &q.token)
            .await
            .map_err(Error::from),
        Err(_) => Err(Error::missing_param("The link is incomplete")),
    };
    let html = wants_html(&headers);
    match result {
        Ok(Some(next_link)) => Redirect::to(&next_link).into_response(),
        Ok(None) if html => page(
            StatusCode::OK,
            "Email address verified",
            "<p>Your email address is verified. You can close this page and go back to your \
             Matrix app.</p>",
        ),
        Ok(None) => Json(json!({ "success": true })).into_response(),
        Err(e) if html => page(
            e.status(),
            "This link did not work",
            &format!("<p>{}</p>", escape(&e.message())),
        ),
        Err(e) => e.into_response(),
    }
}

/// `GET /_matrix/client/v3/account/3pid`: always with `threepids`, empty or not (ruma
/// leaves an empty list out; Synapse, which clients were written against, does not).
pub async fn list(
    State(state): State<AppState>,
    request: Ruma<get_3pids::v3::Request>,
) -> Result<Json<Value>> {
    let user_id = &request.session()?.user_id;
    let threepids: Vec<Value> = state
        .auth
        .threepids(user_id)?
        .into_iter()
        .map(|(address, threepid)| {
            json!({
                "medium": "email",
                "address": address,
                "validated_at": threepid.validated_ts,
                "added_at": threepid.added_ts,
            })
        })
        .collect();
    Ok(Json(json!({ "threepids": threepids })))
}

/// `POST /_matrix/client/v3/account/3pid/add`: binds the address a validated session
/// proves, after re-authentication (asked only once the proof is good, so a user is not
/// asked for a password for nothing).
pub async fn add(
    State(state): State<AppState>,
    request: Ruma<add_3pid::v3::Request>,
) -> Result<RumaResponse<add_3pid::v3::Response>> {
    let user_id = &request.session()?.user_id;
    let body = &request.body;
    let auth = &state.auth;
    let proof = auth.validated_email(
        body.sid.as_str(),
        body.client_secret.as_str(),
        EmailPurpose::AddThreepid,
    )?;
    let flows = auth.reauth_flows(user_id)?;
    auth.uia("add_3pid", flows, body.auth.as_ref(), Some(user_id))
        .await?;
    auth.add_email(user_id, &proof).await?;
    Ok(RumaResponse(add_3pid::v3::Response::new()))
}

/// `POST /_matrix/client/v3/account/3pid/delete`
pub async fn delete(
    State(state): State<AppState>,
    request: Ruma<delete_3pid::v3::Request>,
) -> Result<RumaResponse<delete_3pid::v3::Response>> {
    let user_id = &request.session()?.user_id;
    let body = &request.body;
    if body.medium != Medium::Email {
        return Err(medium_not_supported().into());
    }
    state.auth.remove_email(user_id, &body.address).await?;
    let unbind = ThirdPartyIdRemovalStatus::NoSupport;
    Ok(RumaResponse(delete_3pid::v3::Response::new(unbind)))
}
