//! Access tokens: HS256 JWTs naming user, device and token generation, signed with a
//! secret generated on first start and kept in the database. Validity beyond the signature
//! (device still there, same generation, expiry) is checked by the caller against storage.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kith_storage::{Storage, catalog};
use serde::{Deserialize, Serialize};

use super::{Device, Session};
use crate::services::error::{Error, Result};
use crate::util::random_string;
use kith_federation::{read_secret_file, write_private_file};
use std::path::Path;

/// The `global_value` key holding the signing secret.
const SECRET_KEY: &str = "access_token_secret";
/// What it holds once the secret lives in `[auth] token_secret_path`.
const IN_FILE: &str = "in token_secret_path";
/// The shortest secret taken from a file (HS256 wants at least 256 bits).
const MIN_SECRET: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub dev: String,
    /// The device's session ID at issue time.
    pub sid: String,
    #[serde(rename = "gen")]
    pub generation: u64,
    pub iat: u64,
    /// Seconds since the epoch; only tokens issued with a refresh token expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl AccessClaims {
    pub fn new(
        session: &Session,
        device: &Device,
        now_ms: u64,
        ttl: Option<Duration>,
    ) -> AccessClaims {
        AccessClaims {
            sub: session.user_id.to_string(),
            dev: session.device_id.to_string(),
            sid: device.session_id.clone(),
            generation: device.generation,
            iat: now_ms / 1000,
            // Rounded up, so a token never lives shorter than its advertised lifetime.
            exp: ttl.map(|ttl| now_ms.saturating_add(ttl.as_millis() as u64).div_ceil(1000)),
        }
    }

    pub fn session(&self) -> Result<Session> {
        let user_id = self
            .sub
            .as_str()
            .try_into()
            .map_err(|_| Error::unknown_token(false))?;
        Ok(Session {
            user_id,
            device_id: self.dev.as_str().into(),
        })
    }
}

pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenSigner {
    /// The secret from `file` if given (the database's moved there the first time, or a
    /// new one made), else from the database, made on first start.
    pub fn load_or_generate(storage: &Storage, file: Option<&Path>) -> Result<TokenSigner> {
        let stored: Option<String> = storage.get(&catalog::GLOBAL_VALUE, &SECRET_KEY)?;
        let unreadable = |e: std::io::Error| Error::internal(format!("token_secret_path: {e}"));
        let secret = match (file, stored) {
            (None, Some(secret)) if secret == IN_FILE => {
                return Err(Error::internal(
                    "the access-token secret is in a file: set [auth] token_secret_path",
                ));
            }
            (None, Some(secret)) => secret,
            (None, None) => {
                let secret = random_string(64);
                let mut batch = storage.batch();
                batch.put(&catalog::GLOBAL_VALUE, &SECRET_KEY, &secret)?;
                storage.commit_blocking(batch)?;
                secret
            }
            (Some(path), stored) => {
                let secret = match read_secret_file(path).map_err(unreadable)? {
                    Some(secret) if secret.len() >= MIN_SECRET => secret,
                    Some(_) => {
                        return Err(Error::internal(format!(
                            "token_secret_path: the secret must be at least {MIN_SECRET} characters"
                        )));
                    }
                    // Moved there before: a missing file is a mistake (a volume not
                    // mounted), not a reason to sign everyone out.
                    None if stored.as_deref() == Some(IN_FILE) => {
                        return Err(Error::internal(
                            "token_secret_path: missing, and the secret was kept there",
                        ));
                    }
                    None => {
                        let secret = stored.clone().unwrap_or_else(|| random_string(64));
                        write_private_file(path, secret.as_bytes()).map_err(unreadable)?;
                        secret
                    }
                };
                // Written to the file before it leaves the database: a crash between the
                // two finds it in both, never in neither.
                if stored.as_deref() != Some(IN_FILE) {
                    let mut batch = storage.batch();
                    batch.put(&catalog::GLOBAL_VALUE, &SECRET_KEY, &IN_FILE)?;
                    storage.commit_blocking(batch)?;
                }
                secret
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked after the device lookup, so an expired token of a live session can
        // be told apart (soft logout) from a revoked one.
        validation.validate_exp = false;
        validation.required_spec_claims = HashSet::new();
        Ok(TokenSigner {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        })
    }

    pub fn encode(&self, claims: &AccessClaims) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(Error::internal)
    }

    pub fn decode(&self, token: &str) -> Option<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}
