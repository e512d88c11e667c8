//! User-interactive authentication (UIA): the 401 challenge with flows and a session, stage
//! checks (`m.login.dummy`, `m.login.registration_token`, `m.login.password`), and sessions
//! kept in the database until a flow completes.

use http::StatusCode;
use kith_storage::{Batch, catalog};
use ruma::UserId;
use ruma::api::client::uiaa::{AuthData, UserIdentifier};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::AuthService;
use crate::gateway::{Error, Result};
use crate::util::{now_ms, random_string};

/// How long a UIA session may take.
const SESSION_TTL_MS: u64 = 15 * 60 * 1000;

/// The flows an endpoint offers, each a list of stage types.
pub type UiaFlows = &'static [&'static [&'static str]];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UiaSession {
    #[serde(skip)]
    pub id: Option<String>,
    /// Which endpoint the session was started for; a session never authorises another one.
    pub purpose: String,
    pub user_id: Option<String>,
    pub completed: Vec<String>,
    pub registration_token: Option<String>,
    pub expires_ts: u64,
}

impl UiaSession {
    /// Deletes the stored session in `batch`, with the action it authorised.
    pub fn finish_into(&self, batch: &mut Batch) -> Result<()> {
        if let Some(id) = &self.id {
            batch.delete(&catalog::UIASESSION_STATE, &id.as_str())?;
        }
        Ok(())
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
    Error::with_body(StatusCode::UNAUTHORIZED, body)
}

impl AuthService {
    /// One step of UIA for `purpose`. Returns the session once a flow is complete (the
    /// caller finishes it in the batch of the action); otherwise answers with the 401
    /// challenge, which records progress.
    pub async fn uia(
        &self,
        purpose: &str,
        flows: UiaFlows,
        auth: Option<&AuthData>,
        caller: Option<&UserId>,
    ) -> Result<UiaSession> {
        let fresh = || UiaSession {
            id: None,
            purpose: purpose.to_owned(),
            user_id: caller.map(|u| u.to_string()),
            completed: Vec::new(),
            registration_token: None,
            expires_ts: now_ms() + SESSION_TTL_MS,
        };
        let Some(auth) = auth else {
            let mut session = fresh();
            let id = random_string(24);
            self.storage
                .put(&catalog::UIASESSION_STATE, &id.as_str(), &session)
                .await?;
            session.id = Some(id);
            return Err(challenge(
                flows,
                session.id.as_deref().unwrap_or_default(),
                &[],
                None,
            ));
        };

        let mut session = match auth.session() {
            Some(id) => {
                let stored: Option<UiaSession> =
                    self.storage.get(&catalog::UIASESSION_STATE, &id)?;
                let stored = stored.filter(|s| {
                    s.purpose == purpose
                        && s.user_id.as_deref() == caller.map(|u| u.as_str())
                        && s.expires_ts > now_ms()
                });
                let mut stored = stored.ok_or_else(|| {
                    Error::new(
                        StatusCode::BAD_REQUEST,
                        "M_UNKNOWN",
                        "Unknown or expired session",
                    )
                })?;
                stored.id = Some(id.to_owned());
                stored
            }
            // A client may complete a one-stage flow without asking first (matrix-nio does).
            None => fresh(),
        };
        let session_id = session.id.clone().unwrap_or_else(|| random_string(24));

        let stage = auth.auth_type().map(|t| t.to_string()).unwrap_or_default();
        if !flows.iter().any(|f| f.contains(&stage.as_str())) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                "M_UNRECOGNIZED",
                format!("Auth type {stage} is not offered here"),
            ));
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
                if let Err(wait) = self.login_limiter.check(user.as_str()) {
                    return Err(Error::limit_exceeded(wait));
                }
                if names_caller && self.check_password(user, &p.password).await? {
                    None
                } else {
                    self.login_limiter.consume(user.as_str());
                    Some(("M_FORBIDDEN", "Invalid password"))
                }
            }
            _ => {
                return Err(Error::new(
                    StatusCode::BAD_REQUEST,
                    "M_UNRECOGNIZED",
                    "Unsupported auth type",
                ));
            }
        };
        if refusal.is_none() && !session.completed.contains(&stage) {
            session.completed.push(stage);
        }
        let complete = flows
            .iter()
            .any(|f| f.iter().all(|s| session.completed.iter().any(|c| c == s)));
        if complete && refusal.is_none() {
            return Ok(session);
        }
        self.storage
            .put(&catalog::UIASESSION_STATE, &session_id.as_str(), &session)
            .await?;
        Err(challenge(flows, &session_id, &session.completed, refusal))
    }
}
