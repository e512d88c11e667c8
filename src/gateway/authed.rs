//! The extractor for kith's own endpoints (the contacts API), which ruma has no types for:
//! the same access-token check and body limit as [`super::Ruma`], and a JSON body parsed
//! with serde (`serde::de::IgnoredAny` for endpoints that take none; no body reads as
//! `null`).

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::{Error, Result};
use crate::services::AppState;
use crate::services::session::Session;

pub struct Authed<T> {
    pub session: Session,
    pub body: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Authed<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let (parts, body) = request.into_parts();
        let probe = http::Request::from_parts(parts.clone(), ());
        let token = ruma::api::auth_scheme::extract_bearer_or_query_token(&probe)
            .map_err(|_| Error::unknown_token(false))?
            .ok_or_else(Error::missing_token)?;
        let session = state.sessions.authenticate(&token).await?;
        let bytes =
            super::extract::read_body(&parts, body, state.config.limits.max_request_size).await?;
        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let body = serde_json::from_slice(text).map_err(|e| Error::body(e, &bytes))?;
        Ok(Authed { session, body })
    }
}

/// [`Authed`] for a server admin (the account's `admin` flag), as Synapse's admin API
/// (`/_synapse/admin`) requires it: anyone else gets `403 M_FORBIDDEN`.
pub struct ServerAdmin<T>(pub Authed<T>);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for ServerAdmin<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let authed = Authed::from_request(request, state).await?;
        let account = state.auth.account(&authed.session.user_id)?;
        if !account.is_some_and(|account| account.admin) {
            return Err(Error::forbidden("You are not a server admin"));
        }
        Ok(ServerAdmin(authed))
    }
}
