//! auth-service: accounts and their passwords, registration (tokens, user-interactive auth),
//! failed-login rate limits, verified email addresses and the mail that verifies them,
//! sign-in with OpenID Connect providers.

mod accounts;
pub mod email;
pub mod mailer;
pub mod oidc;
pub mod password;
mod register;
mod regtokens;
pub mod sso;
mod threepid;
mod uia;

use std::sync::Arc;

use kith_storage::Storage;
use ruma::OwnedServerName;
use tokio::sync::Mutex;

pub use accounts::Account;
pub use regtokens::RegistrationToken;
pub use uia::{UiaFlows, UiaSession, UiaSessions};

use crate::config::{self, Config};
use crate::util::RateLimiter;

pub struct AuthService {
    storage: Storage,
    server_name: OwnedServerName,
    /// Tokens from the config file, accepted without limit.
    config_tokens: Vec<String>,
    pub login_limiter: RateLimiter,
    /// Serialises the check-then-create of registration (name free, token uses left), which
    /// a batch alone cannot make atomic.
    register_lock: Mutex<()>,
    uia_sessions: UiaSessions,
    email_config: config::Email,
    /// `[registration]`: who may register, and how.
    registration: config::Registration,
    /// The base of links in mail, without a trailing slash.
    public_baseurl: String,
    /// `None` when email is off.
    pub mailer: Option<Arc<mailer::Mailer>>,
    /// Verification mails, per address and per client address.
    email_limiter: RateLimiter,
    /// Serialises each read-check-write of validation sessions.
    email_lock: Mutex<()>,
    /// The configured OpenID Connect providers, in config order.
    sso: Vec<oidc::OidcProvider>,
    sso_pending: sso::PendingSignIns,
    /// Sign-ins started, per client address: each holds memory until its callback.
    pub sso_limiter: RateLimiter,
    /// Accounts registered, per client address (`[rate_limits] registration`).
    pub registration_limiter: RateLimiter,
    login_token_lock: Mutex<()>,
    /// `[sso]`: where sign-ins may send the browser back without asking.
    sso_config: config::Sso,
}

impl AuthService {
    /// The server's public base URL, without a trailing slash (for links and discovery).
    pub fn public_baseurl(&self) -> &str {
        &self.public_baseurl
    }

    /// Whether a sign-in may send the browser to `redirect_url` without asking the user.
    pub fn sso_trusts(&self, redirect_url: &str) -> bool {
        self.sso_config.trusts(redirect_url)
    }

    pub fn new(storage: Storage, config: &Config) -> Result<AuthService, String> {
        let server_name =
            OwnedServerName::try_from(config.server_name.as_str()).map_err(|e| e.to_string())?;
        Ok(AuthService {
            server_name,
            config_tokens: config.registration.tokens.clone(),
            login_limiter: RateLimiter::new(
                config.limits.login_failure_burst,
                config.limits.login_failures_per_minute,
            ),
            register_lock: Mutex::new(()),
            uia_sessions: UiaSessions::default(),
            email_config: config.email.clone(),
            registration: config.registration.clone(),
            public_baseurl: config.public_baseurl(),
            mailer: match config.email.enabled {
                true => Some(Arc::new(mailer::Mailer::new(
                    storage.clone(),
                    &config.email,
                )?)),
                false => None,
            },
            email_limiter: RateLimiter::new(
                config.limits.email_request_burst,
                config.limits.email_requests_per_minute,
            ),
            email_lock: Mutex::new(()),
            sso: config
                .sso
                .providers
                .iter()
                .map(|p| oidc::OidcProvider::new(p.clone()))
                .collect::<Result<_, _>>()?,
            sso_pending: sso::PendingSignIns::default(),
            sso_limiter: RateLimiter::new(20, 20.0),
            registration_limiter: config.rate_limits.registration.limiter(),
            login_token_lock: Mutex::new(()),
            sso_config: config.sso.clone(),
            storage,
        })
    }
}
