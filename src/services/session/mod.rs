//! session-service: devices, access tokens (JWTs naming user, device and token generation),
//! refresh tokens (opaque, stored hashed, rotated on use), logout.

mod device;
mod refresh;
mod tokens;

use std::net::IpAddr;
use std::time::Duration;

use kith_storage::{Batch, Storage, catalog};
use ruma::{OwnedDeviceId, OwnedUserId};

pub use device::Device;
use refresh::RefreshState;
use tokens::{AccessClaims, TokenSigner};

use crate::config::Config;
use crate::events::{self, DomainEvent, RevokeReason};
use crate::services::error::{Error, Result};
use crate::util::{StripedLocks, hash_secret, now_ms, random_device_id, random_string};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// What a login, registration or refresh hands the client.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
}

pub struct Sessions {
    storage: Storage,
    signer: TokenSigner,
    access_ttl: Duration,
    refresh_ttl: Option<Duration>,
    /// Per user, held across every read-check-write of a device record (login, refresh,
    /// first use of a refreshed token, deletion), so two requests never both rotate the same
    /// token. The gateway runs handlers to completion, so a guard outlives its commit.
    locks: StripedLocks,
}

/// The device a sign-in starts a session on.
pub struct NewDevice<'a> {
    /// The client's choice of ID (reusing one revokes its old tokens), else a new one.
    pub device_id: Option<&'a str>,
    pub display_name: Option<String>,
    /// Whether the client takes refresh tokens (then the access token expires).
    pub want_refresh: bool,
    pub ip: IpAddr,
}

impl Sessions {
    pub fn new(storage: Storage, config: &Config) -> Result<Sessions> {
        let signer =
            TokenSigner::load_or_generate(&storage, config.auth.token_secret_path.as_deref())?;
        let refresh_ttl = (config.auth.refresh_token_ttl > 0)
            .then(|| Duration::from_secs(config.auth.refresh_token_ttl));
        Ok(Sessions {
            storage,
            signer,
            access_ttl: Duration::from_secs(config.auth.access_token_ttl),
            refresh_ttl,
            locks: StripedLocks::new(64),
        })
    }

    /// Checks an access token: a valid signature, a device that still exists with the same
    /// token generation, and (for refreshable sessions) an unexpired token.
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let claims = self
            .signer
            .decode(token)
            .ok_or_else(|| Error::unknown_token(false))?;
        let device = self
            .device(&claims.sub, &claims.dev)?
            .ok_or_else(|| Error::unknown_token(false))?;
        if device.session_id != claims.sid || device.generation != claims.generation {
            return Err(Error::unknown_token(false));
        }
        if claims.exp.is_some_and(|exp| exp * 1000 <= now_ms()) {
            return Err(Error::unknown_token(true));
        }
        let session = claims.session()?;
        if device.refresh.as_ref().is_some_and(|r| !r.current_used) {
            self.mark_refreshed_pair_used(&session, claims.generation)
                .await?;
        }
        Ok(session)
    }

    /// The first use of a refreshed pair retires the refresh token it replaced.
    async fn mark_refreshed_pair_used(&self, session: &Session, generation: u64) -> Result<()> {
        let _guard = self.locks.lock(session.user_id.as_str()).await;
        let key = (session.user_id.as_str(), session.device_id.as_str());
        let Some(mut device) = self.device(key.0, key.1)? else {
            return Ok(());
        };
        let Some(refresh) = device.refresh.as_mut() else {
            return Ok(());
        };
        if device.generation != generation || refresh.current_used {
            return Ok(());
        }
        let mut batch = self.storage.batch();
        refresh.mark_current_used(&mut batch)?;
        batch.put(&catalog::USERID_DEVICEID_DEVICE, &key, &device)?;
        self.storage.commit(batch).await?;
        Ok(())
    }

    pub fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>> {
        Ok(self
            .storage
            .get(&catalog::USERID_DEVICEID_DEVICE, &(user_id, device_id))?)
    }

    pub fn devices(&self, user_id: &str) -> Result<Vec<(String, Device)>> {
        let rows: Vec<((String, String), Device)> = self
            .storage
            .scan_prefix(&catalog::USERID_DEVICEID_DEVICE, &(user_id,))?;
        Ok(rows
            .into_iter()
            .map(|((_, device_id), device)| (device_id, device))
            .collect())
    }

    /// The IDs of the user's devices.
    pub fn device_ids(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(self
            .devices(user_id)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Starts a session on a new device, or on `device_id` if given. Reusing a device ID
    /// keeps the device but revokes its old tokens.
    pub async fn create(
        &self,
        user_id: &OwnedUserId,
        device: NewDevice<'_>,
    ) -> Result<(Session, Tokens)> {
        self.create_with(self.storage.batch(), user_id, device)
            .await
    }

    /// [`Sessions::create`], committed with what `batch` already holds (registration
    /// creates the account in the same batch).
    pub async fn create_with(
        &self,
        mut batch: Batch,
        user_id: &OwnedUserId,
        new: NewDevice<'_>,
    ) -> Result<(Session, Tokens)> {
        let NewDevice {
            device_id,
            display_name,
            want_refresh,
            ip,
        } = new;
        let _guard = self.locks.lock(user_id.as_str()).await;
        let device_id = match device_id {
            Some(id) if id.is_empty() || id.len() > 255 => {
                return Err(Error::invalid_param("Invalid device_id"));
            }
            Some(id) => id.to_owned(),
            None => loop {
                // A fresh ID must not take over (and so revoke) an existing device.
                let id = random_device_id();
                if self.device(user_id.as_str(), &id)?.is_none() {
                    break id;
                }
            },
        };
        let session = Session {
            user_id: user_id.clone(),
            device_id: device_id.as_str().into(),
        };
        let key = (user_id.as_str(), device_id.as_str());
        let now = now_ms();
        let mut device = match self.device(key.0, key.1)? {
            Some(old) => {
                old.forget_refresh_tokens(&mut batch)?;
                events::append(
                    &mut batch,
                    DomainEvent::SessionRevoked {
                        user_id: user_id.to_string(),
                        device_id: device_id.clone(),
                        reason: RevokeReason::Relogin,
                    },
                )?;
                // A new session on the old device: new session ID, so old tokens stay dead.
                let display_name = display_name.or(old.display_name);
                Device::new(display_name, old.created_ts)
            }
            None => {
                // A new device: whoever shares a room with the user hears of it, and nothing
                // an earlier device of that ID left behind (a message sent while it was
                // being deleted) reaches it.
                let user = user_id.as_str();
                crate::services::e2ee::forget_device_into(
                    &self.storage,
                    &mut batch,
                    user,
                    &device_id,
                )?;
                Device::new(display_name, now)
            }
        };
        device.seen(now, ip);
        let tokens = self.issue(&mut batch, &session, &mut device, want_refresh)?;
        batch.put(&catalog::USERID_DEVICEID_DEVICE, &key, &device)?;
        events::append(
            &mut batch,
            DomainEvent::SessionCreated {
                user_id: user_id.to_string(),
                device_id,
            },
        )?;
        self.storage.commit(batch).await?;
        Ok((session, tokens))
    }

    /// Issues an access token for the device's current generation and, if asked, a fresh
    /// refresh token (recorded in `device` and indexed in `batch`).
    fn issue(
        &self,
        batch: &mut Batch,
        session: &Session,
        device: &mut Device,
        want_refresh: bool,
    ) -> Result<Tokens> {
        let now = now_ms();
        let expires_in = want_refresh.then_some(self.access_ttl);
        let claims = AccessClaims::new(session, device, now, expires_in);
        let access_token = self.signer.encode(&claims)?;
        let refresh_token = if want_refresh {
            let token = format!("kith_r_{}", random_string(40));
            let expires_ts = self
                .refresh_ttl
                .map(|ttl| now.saturating_add(ttl.as_millis() as u64));
            let hash = hash_secret(&token);
            batch.put(
                &catalog::REFRESHHASH_USERID_DEVICEID,
                &hash.as_str(),
                &(session.user_id.as_str(), session.device_id.as_str()),
            )?;
            match device.refresh.as_mut() {
                Some(state) => state.rotate_to(hash, expires_ts),
                None => device.refresh = Some(RefreshState::new(hash, expires_ts)),
            }
            Some(token)
        } else {
            None
        };
        Ok(Tokens {
            access_token,
            refresh_token,
            expires_in,
        })
    }

    /// `POST /refresh`: rotates the refresh token. The old one stays valid until the new pair
    /// is first used (a lost response can be retried); presenting it after that is treated as
    /// theft and ends the device's session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        let hash = hash_secret(refresh_token);
        let owner: Option<(String, String)> = self
            .storage
            .get(&catalog::REFRESHHASH_USERID_DEVICEID, &hash.as_str())?;
        let (user_id, device_id) = owner.ok_or_else(|| Error::unknown_token(false))?;
        // The device state read below, under the user's lock, decides; the index only led here.
        let _guard = self.locks.lock(&user_id).await;
        let mut device = self
            .device(&user_id, &device_id)?
            .ok_or_else(|| Error::unknown_token(false))?;
        let state = device
            .refresh
            .as_mut()
            .ok_or_else(|| Error::unknown_token(false))?;
        let mut batch = self.storage.batch();
        match state.classify(&hash) {
            refresh::Presented::Current | refresh::Presented::UnusedPredecessor => {
                if state.expires_ts.is_some_and(|ts| ts <= now_ms()) {
                    return Err(Error::unknown_token(false));
                }
                state.prepare_rotation(&hash, &mut batch)?;
            }
            refresh::Presented::Replayed => {
                tracing::warn!(%user_id, %device_id, "refresh token replayed after rotation; ending the session");
                self.remove_device_into(
                    &mut batch,
                    &user_id,
                    &device_id,
                    &device,
                    RevokeReason::RefreshReplay,
                )?;
                self.storage.commit(batch).await?;
                return Err(Error::unknown_token(false));
            }
        }
        device.generation += 1;
        let session = Session {
            user_id: OwnedUserId::try_from(user_id.as_str()).map_err(Error::internal)?,
            device_id: device_id.as_str().into(),
        };
        let tokens = self.issue(&mut batch, &session, &mut device, true)?;
        batch.put(
            &catalog::USERID_DEVICEID_DEVICE,
            &(user_id.as_str(), device_id.as_str()),
            &device,
        )?;
        self.storage.commit(batch).await?;
        Ok(tokens)
    }

    pub async fn rename(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<String>,
    ) -> Result<()> {
        let _guard = self.locks.lock(user_id).await;
        let mut device = self
            .device(user_id, device_id)?
            .ok_or_else(|| Error::not_found("Unknown device"))?;
        // Absent means unchanged (the spec); there is no way to clear a name but an empty one.
        let Some(display_name) = display_name else {
            return Ok(());
        };
        device.display_name = Some(display_name);
        self.storage
            .put(
                &catalog::USERID_DEVICEID_DEVICE,
                &(user_id, device_id),
                &device,
            )
            .await?;
        Ok(())
    }

    /// Ends the sessions of the given devices (unknown ones are skipped).
    pub async fn remove_devices(
        &self,
        user_id: &str,
        device_ids: &[String],
        reason: RevokeReason,
    ) -> Result<()> {
        let batch = self.storage.batch();
        self.remove_devices_with(batch, user_id, device_ids, reason)
            .await
    }

    /// [`Sessions::remove_devices`], committed with whatever `batch` already holds.
    pub async fn remove_devices_with(
        &self,
        batch: Batch,
        user_id: &str,
        device_ids: &[String],
        reason: RevokeReason,
    ) -> Result<()> {
        let _guard = self.locks.lock(user_id).await;
        self.remove_locked(batch, user_id, device_ids, reason).await
    }

    /// Ends every session of the user.
    pub async fn remove_all_devices(&self, user_id: &str, reason: RevokeReason) -> Result<()> {
        let batch = self.storage.batch();
        self.remove_all_devices_with(batch, user_id, None, reason)
            .await
    }

    /// Every device of the user, except `keep`, committed with what `batch` holds.
    pub async fn remove_all_devices_with(
        &self,
        batch: Batch,
        user_id: &str,
        keep: Option<&str>,
        reason: RevokeReason,
    ) -> Result<()> {
        let _guard = self.locks.lock(user_id).await;
        let ids: Vec<String> = self
            .devices(user_id)?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| Some(id.as_str()) != keep)
            .collect();
        self.remove_locked(batch, user_id, &ids, reason).await
    }

    async fn remove_locked(
        &self,
        mut batch: Batch,
        user_id: &str,
        device_ids: &[String],
        reason: RevokeReason,
    ) -> Result<()> {
        for device_id in device_ids {
            if let Some(device) = self.device(user_id, device_id)? {
                self.remove_device_into(&mut batch, user_id, device_id, &device, reason)?;
            }
        }
        self.storage.commit(batch).await?;
        Ok(())
    }

    /// Adds a device's removal to `batch`: the device, its refresh-token index entries, and
    /// the `session.revoked` event.
    fn remove_device_into(
        &self,
        batch: &mut Batch,
        user_id: &str,
        device_id: &str,
        device: &Device,
        reason: RevokeReason,
    ) -> Result<()> {
        device.forget_refresh_tokens(batch)?;
        batch.delete(&catalog::USERID_DEVICEID_DEVICE, &(user_id, device_id))?;
        // Its keys and waiting messages go with it, and its owner's device list changes.
        crate::services::e2ee::forget_device_into(&self.storage, batch, user_id, device_id)?;
        crate::services::sync::sliding::forget_device_into(
            &self.storage,
            batch,
            user_id,
            device_id,
        )?;
        events::append(
            batch,
            DomainEvent::SessionRevoked {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
                reason,
            },
        )?;
        Ok(())
    }
}
