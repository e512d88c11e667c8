//! Accounts: creation, lookup, passwords, deactivation.

use kith_storage::{Batch, catalog};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::MutexGuard;

use super::{AuthService, password};
use crate::events::{self, DomainEvent};
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::now_ms;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// argon2id PHC string; `None` once deactivated.
    pub password_hash: Option<String>,
    pub admin: bool,
    pub deactivated: bool,
    pub created_ts: u64,
}

fn invalid_username(message: &str) -> Error {
    Error::new(ErrorKind::InvalidUsername, message)
}

impl AuthService {
    pub fn account(&self, user_id: &UserId) -> Result<Option<Account>> {
        Ok(self
            .storage
            .get(&catalog::USERID_ACCOUNT, &user_id.as_str())?)
    }

    /// Creates an account with a password, by the operator (admin API or command line).
    pub async fn create_account(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<OwnedUserId> {
        let hash = password::hash(password).await?;
        let _guard = self.registering().await;
        let user_id = self.check_available(localpart)?;
        let mut batch = self.storage.batch();
        self.create_account_into(&mut batch, &user_id, Some(hash), admin)?;
        self.storage.commit(batch).await?;
        Ok(user_id)
    }

    /// Whether the user has an account here that is not deactivated.
    pub fn is_active(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.account(user_id)?.is_some_and(|a| !a.deactivated))
    }

    /// The user ID a new account with `localpart` would have, if the name is well formed.
    pub fn new_user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        let allowed =
            |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+');
        if localpart.is_empty() || !localpart.chars().all(allowed) {
            return Err(invalid_username(
                "User names may only contain a-z, 0-9, and . _ = - / +",
            ));
        }
        let user_id = format!("@{localpart}:{}", self.server_name);
        if user_id.len() > 255 {
            return Err(invalid_username("User ID is longer than 255 characters"));
        }
        OwnedUserId::try_from(user_id).map_err(|_| invalid_username("Invalid user name"))
    }

    /// Checks that `localpart` is well formed and not taken (deactivated names stay taken).
    pub fn check_available(&self, localpart: &str) -> Result<OwnedUserId> {
        let user_id = self.new_user_id(localpart)?;
        if self
            .storage
            .contains(&catalog::USERID_ACCOUNT, &user_id.as_str())?
        {
            return Err(Error::new(ErrorKind::UserInUse, "User ID already taken"));
        }
        Ok(user_id)
    }

    /// The local user a login names, from a full user ID or a bare localpart; user IDs are
    /// matched case-insensitively, as Synapse does.
    pub fn login_user_id(&self, user: &str) -> Option<OwnedUserId> {
        let user = user.trim();
        let localpart = match user.strip_prefix('@') {
            Some(rest) => {
                let (localpart, server) = rest.split_once(':')?;
                if server != self.server_name.as_str() {
                    return None;
                }
                localpart
            }
            None => user,
        };
        OwnedUserId::try_from(format!(
            "@{}:{}",
            localpart.to_lowercase(),
            self.server_name
        ))
        .ok()
    }

    /// Takes the registration lock: hold it from the availability check to the commit.
    pub async fn registering(&self) -> MutexGuard<'_, ()> {
        self.register_lock.lock().await
    }

    /// Adds a new account and its `user.created` event to `batch`. The caller holds
    /// [`AuthService::registering`] and has checked the name.
    pub fn create_account_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        password_hash: Option<String>,
        admin: bool,
    ) -> Result<()> {
        let account = Account {
            password_hash,
            admin,
            deactivated: false,
            created_ts: now_ms(),
        };
        batch.put(&catalog::USERID_ACCOUNT, &user_id.as_str(), &account)?;
        events::append(
            batch,
            DomainEvent::UserCreated {
                user_id: user_id.to_string(),
                admin,
            },
        )?;
        Ok(())
    }

    /// Whether `password` is the user's; unknown and deactivated users never match.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        Ok(self.password_proof(user_id, password).await?.is_some())
    }

    /// The stored hash `password` matches, if it does (and the account is active): what a
    /// sign-in proved, to be checked again when its session is made.
    pub async fn password_proof(&self, user_id: &UserId, password: &str) -> Result<Option<String>> {
        let account = self.account(user_id)?.filter(|a| !a.deactivated);
        let hash = account.and_then(|a| a.password_hash);
        let valid = password::verify(password, hash.clone()).await?;
        Ok(hash.filter(|_| valid))
    }

    /// Adds a password change to `batch`; the caller holds [`AuthService::registering`].
    pub fn set_password_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        hash: String,
    ) -> Result<()> {
        let mut account = self
            .account(user_id)?
            .filter(|a| !a.deactivated)
            .ok_or_else(|| Error::not_found("Unknown user"))?;
        account.password_hash = Some(hash);
        batch.put(&catalog::USERID_ACCOUNT, &user_id.as_str(), &account)?;
        Ok(())
    }

    /// Makes the user a server admin, or not (by the operator).
    pub async fn set_admin(&self, user_id: &UserId, admin: bool) -> Result<()> {
        let _guard = self.registering().await;
        let mut account = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found("Unknown user"))?;
        account.admin = admin;
        let mut batch = self.storage.batch();
        batch.put(&catalog::USERID_ACCOUNT, &user_id.as_str(), &account)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Every local account, by user ID.
    pub fn accounts(&self) -> Result<Vec<(String, Account)>> {
        Ok(self.storage.scan_prefix(&catalog::USERID_ACCOUNT, &())?)
    }

    /// Adds the deactivation to `batch`: the password is forgotten and the name stays taken.
    /// The caller holds [`AuthService::registering`] and ends the sessions in the same batch.
    pub fn deactivate_into(&self, batch: &mut Batch, user_id: &UserId) -> Result<()> {
        let mut account = self
            .account(user_id)?
            .ok_or_else(|| Error::not_found("Unknown user"))?;
        account.deactivated = true;
        account.password_hash = None;
        batch.put(&catalog::USERID_ACCOUNT, &user_id.as_str(), &account)?;
        // Its addresses are free for other accounts, as Synapse does.
        for (address, _) in self.threepids(user_id)? {
            self.unbind_email_into(batch, user_id, &address)?;
        }
        Ok(())
    }
}
