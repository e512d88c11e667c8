//! User-interactive authentication (UIA): the 401 challenge with flows and a session, and
//! stage checks (`m.login.dummy`, `m.login.registration_token`, `m.login.password`,
//! `m.login.email.identity`).
//! Sessions live in memory: they last minutes, a restart only makes a client start over,
//! and an unauthenticated client must not be able to make the server write to disk.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use ruma::UserId;
use ruma::api::client::uiaa::{AuthData, UserIdentifier};
use serde_json::{Map, Value, json};

use super::AuthService;
use super::email::{EmailProof, EmailPurpose};
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::{now_ms, random_string};

/// How long a UIA session may take.
const SESSION_TTL_MS: u64 = 15 * 60 * 1000;

/// Sessions kept at most; past it, expired ones go, then the oldest.
const MAX_SESSIONS: usize = 10_000;

/// The flows an endpoint offers, each a list of stage types.
pub type UiaFlows = &'static [&'static [&'static str]];

const PASSWORD_FLOWS: UiaFlows = &[&["m.login.password"]];
const SSO_FLOWS: UiaFlows = &[&["m.login.sso"]];
const PASSWORD_OR_SSO_FLOWS: UiaFlows = &[&["m.login.password"], &["m.login.sso"]];

/// The stage completed in a browser, through its fallback page, never in the request.
const SSO_STAGE: &str = "m.login.sso";

#[derive(Debug, Clone)]
pub struct UiaSession {
    pub id: String,
    /// Which endpoint the session was started for; a session never authorises another one.
    purpose: String,
    user_id: Option<String>,
    completed: Vec<String>,
    pub registration_token: Option<String>,
    /// The address an `m.login.email.identity` stage proved.
    pub email: Option<EmailProof>,
    expires_ts: u64,
}

#[derive(Default)]
pub struct UiaSessions(Mutex<HashMap<String, UiaSession>>);

impl UiaSessions {
    fn store(&self, session: &UiaSession) {
        let mut sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(&session.id) {
            let now = now_ms();
            sessions.retain(|_, s| s.expires_ts > now);
            let oldest = sessions
                .values()
                .min_by_key(|s| s.expires_ts)
                .map(|s| s.id.clone());
            if let (true, Some(oldest)) = (sessions.len() >= MAX_SESSIONS, oldest) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(session.id.clone(), session.clone());
    }

    fn get(&self, id: &str) -> Option<UiaSession> {
        let sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .get(id)
            .filter(|s| s.expires_ts > now_ms())
            .cloned()
    }

    fn remove(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

fn challenge(
    flows: UiaFlows,
    session: &str,
    completed: &[String],
    error: Option<(&str, &str)>,
) -> Error {
    let mut body = Map::new();
    let flows: Vec<Value> = flows
        .iter()
        .map(|stages| json!({ "stages": stages }))
        .collect();
    body.insert("flows".into(), flows.into());
    body.insert("params".into(), json!({}));
    body.insert("session".into(), session.into());
    if !completed.is_empty() {
        body.insert("completed".into(), completed.into());
    }
    if let Some((errcode, message)) = error {
        body.insert("errcode".into(), errcode.into());
        body.insert("error".into(), message.into());
    }
    Error::new(ErrorKind::AuthRequired(body), "Authentication needed")
}

fn unrecognized(message: String) -> Error {
    Error::new(ErrorKind::Unrecognized, message)
}

impl AuthService {
    /// One step of UIA for `purpose`. Returns the session once a flow is complete, ending
    /// it: a completed session authorises one attempt at the action, so a failed action
    /// (or a second request) needs UIA again. Otherwise answers with the 401 challenge,
    /// which records progress.
    pub async fn uia(
        &self,
        purpose: &str,
        flows: UiaFlows,
        auth: Option<&AuthData>,
        caller: Option<&UserId>,
    ) -> Result<UiaSession> {
        let owner = caller.map(|u| u.to_string());
        let mut session = match auth.and_then(AuthData::session) {
            Some(id) => self
                .uia_sessions
                .get(id)
                .filter(|s| s.purpose == purpose && s.user_id == owner)
                .ok_or_else(|| {
                    Error::new(ErrorKind::UnknownSession, "Unknown or expired session")
                })?,
            // A client may complete a one-stage flow without asking first (matrix-nio does).
            None => UiaSession {
                id: random_string(24),
                purpose: purpose.to_owned(),
                user_id: owner,
                completed: Vec::new(),
                registration_token: None,
                email: None,
                expires_ts: now_ms() + SESSION_TTL_MS,
            },
        };
        let complete = |s: &UiaSession| {
            flows
                .iter()
                .any(|f| f.iter().all(|stage| s.completed.iter().any(|c| c == stage)))
        };
        // No stage attempted (no auth, only a session, or the SSO stage, which completes in
        // the browser): done if the browser did it, otherwise the challenge with progress.
        let attempt = auth
            .and_then(|a| Some((a, a.auth_type()?.to_string())))
            .filter(|(_, stage)| stage != SSO_STAGE);
        let Some((auth, stage)) = attempt else {
            if complete(&session) {
                self.uia_sessions.remove(&session.id);
                return Ok(session);
            }
            self.uia_sessions.store(&session);
            return Err(challenge(flows, &session.id, &session.completed, None));
        };
        if !flows.iter().any(|f| f.contains(&stage.as_str())) {
            return Err(unrecognized(format!(
                "Auth type {stage} is not offered here"
            )));
        }
        let refusal = match auth {
            AuthData::Dummy(_) => None,
            AuthData::RegistrationToken(t) => {
                if self.token_valid(&t.token)? {
                    session.registration_token = Some(t.token.clone());
                    None
                } else {
                    Some(("M_UNAUTHORIZED", "Invalid registration token"))
                }
            }
            AuthData::Password(p) => {
                let user = caller
                    .ok_or_else(|| Error::forbidden("Password auth needs a logged-in user"))?;
                let names_caller = match &p.identifier {
                    UserIdentifier::Matrix(id) => {
                        self.login_user_id(&id.user).as_deref() == Some(user)
                    }
                    _ => false,
                };
                self.login_limiter
                    .take(user.as_str())
                    .map_err(Error::limit_exceeded)?;
                if names_caller && self.check_password(user, &p.password).await? {
                    self.login_limiter.refund(user.as_str());
                    None
                } else {
                    Some(("M_FORBIDDEN", "Invalid password"))
                }
            }
            AuthData::EmailIdentity(e) => {
                let purpose = match purpose {
                    "register" => EmailPurpose::Register,
                    "reset_password" => EmailPurpose::ResetPassword,
                    _ => {
                        return Err(unrecognized(format!(
                            "Auth type {stage} is not offered here"
                        )));
                    }
                };
                let creds = &e.thirdparty_id_creds;
                let proof =
                    self.validated_email(creds.sid.as_str(), creds.client_secret.as_str(), purpose);
                match proof {
                    Ok(proof) => {
                        session.email = Some(proof);
                        None
                    }
                    // Until the link is opened; Element asks again every few seconds.
                    Err(_) => Some((
                        "M_THREEPID_AUTH_FAILED",
                        "The email address has not been verified yet",
                    )),
                }
            }
            _ => return Err(unrecognized(format!("Auth type {stage} is not supported"))),
        };
        if refusal.is_none() && !session.completed.contains(&stage) {
            session.completed.push(stage);
        }
        if complete(&session) && refusal.is_none() {
            self.uia_sessions.remove(&session.id);
            return Ok(session);
        }
        self.uia_sessions.store(&session);
        Err(challenge(flows, &session.id, &session.completed, refusal))
    }

    /// The flows that make a logged-in user prove it is them: their password, signing in
    /// again at a provider they are linked to, or either.
    pub fn reauth_flows(&self, user_id: &UserId) -> Result<UiaFlows> {
        let password = self
            .account(user_id)?
            .is_some_and(|a| a.password_hash.is_some());
        let sso = !self.sso_providers().is_empty() && !self.identity_links(user_id)?.is_empty();
        Ok(match (password, sso) {
            (false, true) => SSO_FLOWS,
            (true, true) => PASSWORD_OR_SSO_FLOWS,
            _ => PASSWORD_FLOWS,
        })
    }

    /// The owner of a UIA session signed in again at their provider (its fallback page):
    /// the SSO stage is done. `user_id` is who the provider says signed in.
    pub fn complete_sso_stage(&self, session_id: &str, user_id: &UserId) -> Result<()> {
        let mut session = self
            .uia_sessions
            .get(session_id)
            .ok_or_else(|| Error::not_found("Unknown or expired session"))?;
        if session.user_id.as_deref() != Some(user_id.as_str()) {
            return Err(Error::forbidden(
                "You signed in as someone other than the account that asked",
            ));
        }
        if !session.completed.iter().any(|c| c == SSO_STAGE) {
            session.completed.push(SSO_STAGE.to_owned());
        }
        self.uia_sessions.store(&session);
        Ok(())
    }

    /// The user a UIA session belongs to and what it would let them do, in words, for the
    /// fallback page.
    pub fn uia_session_info(&self, session_id: &str) -> Option<(String, &'static str)> {
        let session = self.uia_sessions.get(session_id)?;
        let action = match session.purpose.as_str() {
            "delete_device" => "delete one of your devices",
            "delete_devices" => "delete devices of your account",
            "device_signing" => "replace your cross-signing keys",
            "change_password" => "change your password",
            "deactivate" => "deactivate your account",
            "add_3pid" => "add an email address to your account",
            _ => "make a change to your account",
        };
        Some((session.user_id?, action))
    }
}
