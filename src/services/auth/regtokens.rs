//! Registration tokens: created by the admin (or the first start), each with optional
//! use and time limits; tokens from the config file are always valid.

use kith_storage::{Batch, catalog};
use serde::{Deserialize, Serialize};

use super::AuthService;
use crate::services::error::{Error, Result};
use crate::util::{now_ms, random_string};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub token: String,
    /// `None`: unlimited.
    pub uses_allowed: Option<u32>,
    pub completed: u32,
    /// Milliseconds since the epoch; `None`: never.
    pub expiry_time: Option<u64>,
    pub created_ts: u64,
}

impl RegistrationToken {
    pub fn usable(&self, now: u64) -> bool {
        self.uses_allowed.is_none_or(|max| self.completed < max)
            && self.expiry_time.is_none_or(|t| t > now)
    }
}

/// The spec's token grammar: 1 to 64 of `[A-Za-z0-9._~-]`.
fn well_formed(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
}

impl AuthService {
    pub fn token_valid(&self, token: &str) -> Result<bool> {
        if self.config_tokens.iter().any(|t| t == token) {
            return Ok(true);
        }
        if !well_formed(token) {
            return Ok(false);
        }
        let stored: Option<RegistrationToken> =
            self.storage.get(&catalog::REGTOKEN_INFO, &token)?;
        Ok(stored.is_some_and(|t| t.usable(now_ms())))
    }

    /// Counts one completed registration against `token`, in `batch`.
    pub fn consume_token_into(&self, batch: &mut Batch, token: &str) -> Result<()> {
        if let Some(mut stored) = self
            .storage
            .get::<_, RegistrationToken>(&catalog::REGTOKEN_INFO, &token)?
        {
            stored.completed += 1;
            batch.put(&catalog::REGTOKEN_INFO, &token, &stored)?;
        }
        Ok(())
    }

    /// Makes a registration token (`token`, or a random one), by the operator.
    pub async fn create_token(
        &self,
        token: Option<String>,
        uses_allowed: Option<u32>,
        expiry_time: Option<u64>,
    ) -> Result<RegistrationToken> {
        let _guard = self.registering().await;
        let mut batch = self.storage.batch();
        let token = self.token_into(&mut batch, token, uses_allowed, expiry_time)?;
        self.storage.commit(batch).await?;
        Ok(token)
    }

    pub fn token_into(
        &self,
        batch: &mut Batch,
        token: Option<String>,
        uses_allowed: Option<u32>,
        expiry_time: Option<u64>,
    ) -> Result<RegistrationToken> {
        let token = token.unwrap_or_else(|| random_string(16));
        if !well_formed(&token) {
            return Err(Error::invalid_param(
                "Tokens are 1 to 64 of A-Z a-z 0-9 . _ ~ -",
            ));
        }
        if self
            .storage
            .contains(&catalog::REGTOKEN_INFO, &token.as_str())?
        {
            return Err(Error::invalid_param("That token already exists"));
        }
        let created = RegistrationToken {
            token,
            uses_allowed,
            completed: 0,
            expiry_time,
            created_ts: now_ms(),
        };
        batch.put(&catalog::REGTOKEN_INFO, &created.token.as_str(), &created)?;
        Ok(created)
    }

    /// Deletes a stored token: registrations it was given to that are not finished fail.
    /// Tokens from the config file stay valid while they are there.
    pub async fn delete_token(&self, token: &str) -> Result<()> {
        let _guard = self.registering().await;
        if !well_formed(token) || !self.storage.contains(&catalog::REGTOKEN_INFO, &token)? {
            return Err(match self.config_tokens.iter().any(|t| t == token) {
                true => Error::invalid_param(
                    "That token is in the config file ([registration] tokens): remove it there",
                ),
                false => Error::not_found("No such registration token"),
            });
        }
        let mut batch = self.storage.batch();
        batch.delete(&catalog::REGTOKEN_INFO, &token)?;
        self.storage.commit(batch).await?;
        Ok(())
    }

    /// A stored token, if there is one by that name.
    pub fn token(&self, token: &str) -> Result<Option<RegistrationToken>> {
        if !well_formed(token) {
            return Ok(None);
        }
        Ok(self.storage.get(&catalog::REGTOKEN_INFO, &token)?)
    }

    /// Changes a stored token's allowance and expiry (`Some(None)`: no limit, no expiry;
    /// `None`: unchanged).
    pub async fn update_token(
        &self,
        token: &str,
        uses_allowed: Option<Option<u32>>,
        expiry_time: Option<Option<u64>>,
    ) -> Result<RegistrationToken> {
        let _guard = self.registering().await;
        let mut stored = (self.token(token)?)
            .ok_or_else(|| Error::not_found(format!("No such registration token: {token}")))?;
        if let Some(uses_allowed) = uses_allowed {
            stored.uses_allowed = uses_allowed;
        }
        if let Some(expiry_time) = expiry_time {
            stored.expiry_time = expiry_time;
        }
        let mut batch = self.storage.batch();
        batch.put(&catalog::REGTOKEN_INFO, &token, &stored)?;
        self.storage.commit(batch).await?;
        Ok(stored)
    }

    pub fn tokens(&self) -> Result<Vec<RegistrationToken>> {
        let rows: Vec<(String, RegistrationToken)> =
            self.storage.scan_prefix(&catalog::REGTOKEN_INFO, &())?;
        Ok(rows.into_iter().map(|(_, t)| t).collect())
    }
}
