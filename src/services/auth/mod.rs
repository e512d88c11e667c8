//! auth-service: accounts and their passwords, registration (tokens, user-interactive auth),
//! failed-login rate limits.

mod accounts;
pub mod password;
mod ratelimit;
mod regtokens;
mod uia;

use kith_storage::Storage;
use ruma::OwnedServerName;
use tokio::sync::Mutex;

pub use ratelimit::RateLimiter;
pub use regtokens::RegistrationToken;
pub use uia::{UiaFlows, UiaSessions};

use crate::config::Config;

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
}

impl AuthService {
    pub fn new(storage: Storage, config: &Config) -> Result<AuthService, String> {
        let server_name =
            OwnedServerName::try_from(config.server_name.as_str()).map_err(|e| e.to_string())?;
        Ok(AuthService {
            storage,
            server_name,
            config_tokens: config.registration.tokens.clone(),
            login_limiter: RateLimiter::new(
                config.limits.login_failure_burst,
                config.limits.login_failures_per_minute,
            ),
            register_lock: Mutex::new(()),
            uia_sessions: UiaSessions::default(),
        })
    }
}
