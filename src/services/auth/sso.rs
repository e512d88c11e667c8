//! Sign-in with OpenID Connect providers (legacy Matrix SSO, auth-service): the pending
//! authorizations between kith's redirect and the provider's callback (in memory, bound to
//! the browser by a cookie, single-use), the identity links (provider, subject) → user, and
//! the single-use login tokens a client trades for a session.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use kith_storage::{Batch, catalog};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::AuthService;
use super::oidc::{Claims, OidcError, OidcProvider};
use crate::services::error::{Error, Result};
use crate::util::{hash_secret, now_ms, random_string};

/// kith's callback, the redirect URI operators register at their provider.
pub const CALLBACK_PATH: &str = "/_kith/client/oidc/callback";
/// How long a user may take at the provider.
const PENDING_TTL_MS: u64 = 10 * 60 * 1000;
/// Pending sign-ins kept at most; past it, expired ones go, then the oldest.
const MAX_PENDING: usize = 10_000;
/// How long a login token works (once).
const LOGIN_TOKEN_TTL_MS: u64 = 2 * 60 * 1000;

/// What a sign-in at the provider is for.
#[derive(Debug, Clone)]
pub enum SsoPurpose {
    /// Logging in: the client waits at `redirect_url` for a login token.
    Login { redirect_url: String },
    /// Proving it is still them, for a user-interactive-auth session.
    Reauth { uia_session: String },
}

struct Pending {
    idp: String,
    nonce: String,
    code_verifier: String,
    /// The cookie value that must come back with the callback.
    browser: String,
    purpose: SsoPurpose,
    expires_ts: u64,
}

#[derive(Default)]
pub struct PendingSignIns(Mutex<HashMap<String, Pending>>);

impl PendingSignIns {
    fn insert(&self, state: String, pending: Pending) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_PENDING {
            let now = now_ms();
            map.retain(|_, p| p.expires_ts > now);
            let oldest = map
                .iter()
                .min_by_key(|(_, p)| p.expires_ts)
                .map(|(s, _)| s.clone());
            if let (true, Some(oldest)) = (map.len() >= MAX_PENDING, oldest) {
                map.remove(&oldest);
            }
        }
        map.insert(state, pending);
    }

    /// The pending sign-in `state`, removed, if `browser` is the one that started it; a
    /// stranger who learnt the state can neither use nor spoil it.
    fn take(&self, state: &str, browser: Option<&str>) -> Option<Pending> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = map.get(state)?;
        if browser != Some(pending.browser.as_str()) {
            return None;
        }
        map.remove(state).filter(|p| p.expires_ts > now_ms())
    }
}

/// Where to send the browser, and the cookie that binds the sign-in to it.
pub struct SsoStart {
    pub location: String,
    pub set_cookie: String,
}

/// The cookie binding sign-in `state` to the browser that started it.
pub fn cookie_name(state: &str) -> String {
    format!("kith_sso_{state}")
}

/// Who the provider says signed in.
pub struct Identity {
    pub idp: String,
    pub subject: String,
    pub claims: Claims,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityLink {
    pub linked_ts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoginToken {
    user_id: OwnedUserId,
    expires_ts: u64,
}

fn not_started_here() -> Error {
    Error::forbidden("This sign-in was not started in this browser, or it has expired")
}

/// A provider's failure as a Matrix error: its own failures are 502, refusals 403.
pub fn oidc_error(error: OidcError) -> Error {
    match error {
        OidcError::Provider(m) => {
            tracing::warn!("SSO provider failed: {m}");
            Error::bad_gateway("The identity provider could not be reached or answered nonsense")
        }
        OidcError::Refused(m) => {
            tracing::info!("SSO sign-in refused: {m}");
            Error::forbidden(format!("The sign-in was refused: {m}"))
        }
    }
}

impl AuthService {
    pub fn sso_providers(&self) -> &[OidcProvider] {
        &self.sso
    }

    pub fn sso_provider(&self, idp: &str) -> Result<&OidcProvider> {
        self.sso
            .iter()
            .find(|p| p.config.id == idp)
            .ok_or_else(|| Error::not_found("No such identity provider"))
    }

    fn callback_url(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.public_baseurl)
    }

    /// A `Set-Cookie` value for the callback's path (under `public_baseurl`'s path, if kith
    /// is served below one); `max_age` 0 deletes it.
    pub fn sso_cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        let base_path = url::Url::parse(&self.public_baseurl)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let secure = match self.public_baseurl.starts_with("https://") {
            true => "; Secure",
            false => "",
        };
        format!(
            "{name}={value}; Path={base_path}{CALLBACK_PATH}; Max-Age={max_age}; HttpOnly; \
             SameSite=Lax{secure}"
        )
    }

    /// Starts a sign-in at provider `idp` for a browser at `client_ip`.
    pub async fn sso_start(
        &self,
        idp: &str,
        purpose: SsoPurpose,
        client_ip: std::net::IpAddr,
    ) -> Result<SsoStart> {
        let provider = self.sso_provider(idp)?;
        self.sso_limiter
            .take(&crate::util::address_key(client_ip))
            .map_err(Error::limit_exceeded)?;
        let state = random_string(32);
        let authorization = provider
            .authorize(&self.callback_url(), &state)
            .await
            .map_err(oidc_error)?;
        let browser = random_string(32);
        let set_cookie = self.sso_cookie(&cookie_name(&state), &browser, PENDING_TTL_MS / 1000);
        let pending = Pending {
            idp: idp.to_owned(),
            nonce: authorization.nonce,
            code_verifier: authorization.code_verifier,
            browser,
            purpose,
            expires_ts: now_ms() + PENDING_TTL_MS,
        };
        self.sso_pending.insert(state, pending);
        Ok(SsoStart {
            location: authorization.url,
            set_cookie,
        })
    }

    /// The provider sent the browser back with `code` for `state`: checks the sign-in was
    /// started in this browser (`browser` is its cookie), redeems the code and verifies the
    /// ID token. A state works once, whatever the outcome.
    pub async fn sso_finish(
        &self,
        state: &str,
        browser: Option<&str>,
        code: &str,
    ) -> Result<(SsoPurpose, Identity)> {
        let pending = self
            .sso_pending
            .take(state, browser)
            .ok_or_else(not_started_here)?;
        let provider = self.sso_provider(&pending.idp)?;
        let claims = provider
            .finish(
                code,
                &self.callback_url(),
                &pending.code_verifier,
                &pending.nonce,
            )
            .await
            .map_err(oidc_error)?;
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned();
        let identity = Identity {
            idp: pending.idp,
            subject,
            claims,
        };
        Ok((pending.purpose, identity))
    }

    /// Forgets a pending sign-in the provider reported as failed.
    pub fn sso_cancel(&self, state: &str, browser: Option<&str>) {
        self.sso_pending.take(state, browser);
    }

    /// The user an identity is linked to.
    pub fn linked_user(&self, idp: &str, subject: &str) -> Result<Option<OwnedUserId>> {
        Ok(self
            .storage
            .get(&catalog::PROVIDER_SUBJECT_USERID, &(idp, subject))?)
    }

    /// A user's identity links: (provider, subject, link).
    pub fn identity_links(&self, user_id: &UserId) -> Result<Vec<(String, String, IdentityLink)>> {
        let rows: Vec<((String, String, String), IdentityLink)> = self
            .storage
            .scan_prefix(&catalog::USERID_PROVIDER_SUBJECT, &user_id.as_str())?;
        Ok(rows
            .into_iter()
            .map(|((_, idp, subject), link)| (idp, subject, link))
            .collect())
    }

    /// Links an identity to a user in `batch`; the caller holds [`AuthService::registering`].
    pub fn link_identity_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        identity: &Identity,
    ) -> Result<()> {
        let (idp, subject) = (identity.idp.as_str(), identity.subject.as_str());
        batch.put(
            &catalog::PROVIDER_SUBJECT_USERID,
            &(idp, subject),
            &user_id.as_str(),
        )?;
        let link = IdentityLink {
            linked_ts: now_ms(),
        };
        let key = (user_id.as_str(), idp, subject);
        batch.put(&catalog::USERID_PROVIDER_SUBJECT, &key, &link)?;
        Ok(())
    }

    /// A new single-use login token for `user_id`.
    pub async fn issue_login_token(&self, user_id: &UserId) -> Result<String> {
        let token = random_string(32);
        let record = LoginToken {
            user_id: user_id.to_owned(),
            expires_ts: now_ms() + LOGIN_TOKEN_TTL_MS,
        };
        self.storage
            .put(
                &catalog::TOKENHASH_LOGINTOKEN,
                &hash_secret(&token).as_str(),
                &record,
            )
            .await?;
        Ok(token)
    }

    /// The user a login token is for, using it up; `None` if unknown, used or expired.
    pub async fn take_login_token(&self, token: &str) -> Result<Option<OwnedUserId>> {
        let key = hash_secret(token);
        // One taker at a time, so two logins racing with one token cannot both win.
        let _guard = self.login_token_lock.lock().await;
        let Some(record) = self
            .storage
            .get::<_, LoginToken>(&catalog::TOKENHASH_LOGINTOKEN, &key.as_str())?
        else {
            return Ok(None);
        };
        let mut batch = self.storage.batch();
        batch.delete(&catalog::TOKENHASH_LOGINTOKEN, &key.as_str())?;
        self.storage.commit(batch).await?;
        Ok((record.expires_ts > now_ms()).then_some(record.user_id))
    }

    /// Deletes expired login tokens; run now and then.
    pub async fn prune_login_tokens(&self) -> Result<()> {
        let now = now_ms();
        let tokens: Vec<(String, LoginToken)> =
            self.storage
                .scan_from(&catalog::TOKENHASH_LOGINTOKEN, &String::new(), usize::MAX)?;
        let mut batch = self.storage.batch();
        for (hash, _) in tokens.iter().filter(|(_, t)| t.expires_ts <= now) {
            batch.delete(&catalog::TOKENHASH_LOGINTOKEN, &hash.as_str())?;
        }
        if !batch.is_empty() {
            self.storage.commit(batch).await?;
        }
        Ok(())
    }
}

/// A localpart made from a claim's value: folded to lower-case ASCII, anything not allowed
/// in a localpart replaced by `_`; `None` if nothing usable is left.
pub fn localpart_from_claim(value: &str) -> Option<String> {
    let folded = crate::services::profile::directory::normalize(value);
    let mapped: String = folded
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+' => c,
            _ => '_',
        })
        .collect();
    let trimmed = mapped.trim_matches('_');
    (!trimmed.is_empty()).then(|| trimmed.chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn localparts_are_made_from_any_claim() {
        use super::localpart_from_claim as l;
        assert_eq!(l("Alice").as_deref(), Some("alice"));
        assert_eq!(l("Zoë Smith").as_deref(), Some("zoe_smith"));
        assert_eq!(l("bob@example.org").as_deref(), Some("bob_example.org"));
        assert_eq!(l("  "), None);
        assert_eq!(l("日本"), None);
    }
}
