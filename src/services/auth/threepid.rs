//! Verified email addresses bound to accounts (auth-service): one account per address, for
//! login by email, password reset, and being found by friends who know the address.

use kith_storage::{Batch, catalog};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::AuthService;
use super::email::{EmailProof, normalize_address, threepid_in_use};
use crate::events::{self, DomainEvent};
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::now_ms;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreePid {
    pub validated_ts: u64,
    pub added_ts: u64,
}

impl AuthService {
    /// The account an email address is bound to.
    pub fn email_owner(&self, email: &str) -> Result<Option<OwnedUserId>> {
        let Some(address) = normalize_address(email) else {
            return Ok(None);
        };
        Ok(self.storage.get(&catalog::ADDRESS_USERID, &address)?)
    }

    /// A user's verified addresses, in address order.
    pub fn threepids(&self, user_id: &UserId) -> Result<Vec<(String, ThreePid)>> {
        let rows: Vec<((String, String), ThreePid)> = self
            .storage
            .scan_prefix(&catalog::USERID_ADDRESS_THREEPID, &user_id.as_str())?;
        Ok(rows
            .into_iter()
            .map(|((_, address), threepid)| (address, threepid))
            .collect())
    }

    /// Binds a verified address to the user, with `user.email_verified`, in `batch`. The
    /// caller holds [`AuthService::registering`] and has checked the address is free.
    pub fn bind_email_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        address: &str,
        validated_ts: u64,
    ) -> Result<()> {
        let threepid = ThreePid {
            validated_ts,
            added_ts: now_ms(),
        };
        batch.put(&catalog::ADDRESS_USERID, &address, &user_id.as_str())?;
        let key = (user_id.as_str(), address);
        batch.put(&catalog::USERID_ADDRESS_THREEPID, &key, &threepid)?;
        events::append(
            batch,
            DomainEvent::UserEmailVerified {
                user_id: user_id.to_string(),
                email: address.to_owned(),
            },
        )?;
        Ok(())
    }

    /// Binds the address a validated email session proves to the user, using the proof up
    /// in the same write; an address already theirs only uses it up, another's is refused.
    pub async fn add_email(&self, user_id: &UserId, proof: &EmailProof) -> Result<()> {
        let _registering = self.registering().await;
        let mut batch = self.storage.batch();
        match self.email_owner(&proof.address)? {
            Some(owner) if owner == *user_id => {}
            Some(_) => return Err(threepid_in_use()),
            None => {
                self.bind_email_into(&mut batch, user_id, &proof.address, proof.validated_ts)?
            }
        }
        self.consume_email_proof_into(&mut batch, proof)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// `addresses`, normalized, if each is an email address no other account holds.
    pub fn check_emails(&self, user_id: &UserId, addresses: &[String]) -> Result<Vec<String>> {
        let mut wanted = Vec::new();
        for address in addresses {
            let normal = normalize_address(address)
                .ok_or_else(|| Error::invalid_param(format!("Not an email address: {address}")))?;
            match self.email_owner(&normal)? {
                Some(owner) if owner != *user_id => return Err(threepid_in_use()),
                _ => wanted.push(normal),
            }
        }
        Ok(wanted)
    }

    /// Makes `addresses` the user's email addresses, validated now (by the operator): the
    /// others are unbound, the new ones bound; one another account holds is refused and
    /// nothing changes.
    pub async fn set_emails(&self, user_id: &UserId, addresses: &[String]) -> Result<()> {
        let _registering = self.registering().await;
        let wanted = self.check_emails(user_id, addresses)?;
        let mut batch = self.storage.batch();
        let held: Vec<String> = self
            .threepids(user_id)?
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        for address in held.iter().filter(|a| !wanted.contains(a)) {
            self.unbind_email_into(&mut batch, user_id, address)?;
        }
        for address in wanted.iter().filter(|a| !held.contains(a)) {
            self.bind_email_into(&mut batch, user_id, address, now_ms())?;
        }
        Ok(self.storage.commit(batch).await?)
    }

    /// Unbinds one of the user's addresses (`M_THREEPID_NOT_FOUND` if it is not theirs).
    pub async fn remove_email(&self, user_id: &UserId, email: &str) -> Result<()> {
        let _registering = self.registering().await;
        let mut batch = self.storage.batch();
        if !self.unbind_email_into(&mut batch, user_id, email)? {
            return Err(Error::new(
                ErrorKind::ThreepidNotOnAccount,
                "This email address is not on your account",
            ));
        }
        Ok(self.storage.commit(batch).await?)
    }

    /// Unbinds one of the user's addresses in `batch`; false if it is not theirs.
    pub(super) fn unbind_email_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        email: &str,
    ) -> Result<bool> {
        let Some(address) = normalize_address(email) else {
            return Ok(false);
        };
        if self.email_owner(&address)?.as_deref() != Some(user_id) {
            return Ok(false);
        }
        batch.delete(&catalog::ADDRESS_USERID, &address.as_str())?;
        let key = (user_id.as_str(), address.as_str());
        batch.delete(&catalog::USERID_ADDRESS_THREEPID, &key)?;
        Ok(true)
    }
}
