//! Use cases that span services, each one operation: registering (auth and sessions, one
//! write), changing or resetting a password
//! (auth and sessions, one write), deactivating (auth, sessions, contacts), signing in
//! with an identity provider (auth, profile), and changing a profile (profile, then messaging
//! puts it into the user's rooms).

use ruma::UserId;
use serde_json::Value;

use crate::events::RevokeReason;
use crate::services::error::{Error, ErrorKind, Result};
use crate::services::session::{NewDevice, Session, Tokens};
use crate::services::{Services, auth};

/// What a sign-in proved: the password hash it matched, or a single-use login token.
pub enum Proof {
    Password(String),
    LoginToken,
}

/// Starts a session for a user whose credentials were just checked. Under the lock that
/// password changes and deactivation take, the account is checked again: a sign-in that
/// raced one of them fails (as with a wrong password, or `M_USER_DEACTIVATED`) instead of
/// keeping a session the change was to end.
pub async fn sign_in(
    services: &Services,
    user_id: &ruma::OwnedUserId,
    proof: Proof,
    device: NewDevice<'_>,
) -> Result<(Session, Tokens)> {
    let _registering = services.auth.registering().await;
    let account = services.auth.account(user_id)?;
    if account.as_ref().is_none_or(|a| a.deactivated) {
        return Err(Error::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    if let Proof::Password(hash) = &proof
        && account.and_then(|a| a.password_hash).as_ref() != Some(hash)
    {
        return Err(Error::forbidden("Invalid username or password"));
    }
    services.sessions.create(user_id, device).await
}

/// Registers an account whose user-interactive auth passed (`uia`) and, unless `device`
/// is `None` (`inhibit_login`), signs it in: account and first session in one write.
pub async fn register(
    services: &Services,
    client_ip: std::net::IpAddr,
    username: Option<&str>,
    password: &str,
    uia: &auth::UiaSession,
    device: Option<NewDevice<'_>>,
) -> Result<(ruma::OwnedUserId, Option<(Session, Tokens)>)> {
    // Counted per address before the costly hash; only registrations that passed every
    // stage get here, so a client's challenges cost it nothing.
    (services.auth.registration_limiter)
        .take(&crate::util::address_key(client_ip))
        .map_err(Error::limit_exceeded)?;
    let hash = auth::password::hash(password).await?;
    let _registering = services.auth.registering().await;
    let mut batch = services.storage.batch();
    let user_id = services
        .auth
        .register_into(&mut batch, username, hash, uia)?;
    let Some(device) = device else {
        services.storage.commit(batch).await?;
        return Ok((user_id, None));
    };
    let sessions = &services.sessions;
    let signed_in = sessions.create_with(batch, &user_id, device).await?;
    Ok((user_id, Some(signed_in)))
}

/// Sets (`Some`) or removes (`None`) one field of the user's profile; a new name or avatar
/// then goes into every room the user is in, as a new `m.room.member` event (each room its
/// own write, as each room has its own lock).
pub async fn set_profile_field(
    services: &Services,
    user_id: &UserId,
    field: &str,
    value: Option<Value>,
) -> Result<()> {
    let changed = services.profiles.set_field(user_id, field, value).await?;
    if let Some(new) = &changed.public {
        services.messaging.announce_profile(user_id, new).await;
    }
    Ok(())
}

// Account changes that span auth-service (the account) and session-service (the devices),
// committed as one write.
/// Sets a new password; with `logout`, ends every session but `keep`'s.
pub async fn change_password(
    services: &Services,
    user_id: &UserId,
    new_password: &str,
    logout: bool,
    keep: Option<&str>,
) -> Result<()> {
    let hash = auth::password::hash(new_password).await?;
    let _guard = services.auth.registering().await;
    let mut batch = services.storage.batch();
    services.auth.set_password_into(&mut batch, user_id, hash)?;
    if !logout {
        return Ok(services.storage.commit(batch).await?);
    }
    let reason = RevokeReason::PasswordChanged;
    services
        .sessions
        .remove_all_devices_with(batch, user_id.as_str(), keep, reason)
        .await
}

/// Sets a new password proven by email (the proof is used up in the same write); with
/// `logout`, ends every session.
pub async fn reset_password(
    services: &Services,
    user_id: &UserId,
    new_password: &str,
    logout: bool,
    proof: &auth::email::EmailProof,
) -> Result<()> {
    let hash = auth::password::hash(new_password).await?;
    let _guard = services.auth.registering().await;
    let mut batch = services.storage.batch();
    services.auth.set_password_into(&mut batch, user_id, hash)?;
    services.auth.consume_email_proof_into(&mut batch, proof)?;
    if !logout {
        return Ok(services.storage.commit(batch).await?);
    }
    let reason = RevokeReason::PasswordChanged;
    services
        .sessions
        .remove_all_devices_with(batch, user_id.as_str(), None, reason)
        .await
}

/// Deactivates the account and ends all its sessions, then its friendships and
/// requests (a write per other user, as each changes that user's view too).
pub async fn deactivate(services: &Services, user_id: &UserId) -> Result<()> {
    {
        let _guard = services.auth.registering().await;
        let mut batch = services.storage.batch();
        services.auth.deactivate_into(&mut batch, user_id)?;
        let reason = RevokeReason::Deactivated;
        services
            .sessions
            .remove_all_devices_with(batch, user_id.as_str(), None, reason)
            .await?;
    }
    services.contacts.forget_user(user_id.as_str()).await
}

// Signing in with an identity provider: the account (auth-service) and its display name
// (profile-service).
/// The user an identity signs in as: the linked one; else, if the provider may, the
/// account holding the address it verified; else a new account (`user.created`) named
/// after its claims, if the provider allows registration.
pub async fn sso_user(
    services: &Services,
    identity: &auth::sso::Identity,
) -> Result<ruma::OwnedUserId> {
    let auth = &services.auth;
    let provider = &auth.sso_provider(&identity.idp)?.config;
    let claim = |name: &str| {
        identity
            .claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let verified_email = claim("email")
        .filter(|_| identity.claims.get("email_verified") == Some(&serde_json::Value::Bool(true)));
    let deactivated = || {
        Error::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        )
    };
    let _registering = auth.registering().await;
    if let Some(user_id) = auth.linked_user(&identity.idp, &identity.subject)? {
        if auth.account(&user_id)?.is_none_or(|a| a.deactivated) {
            return Err(deactivated());
        }
        return Ok(user_id);
    }
    let mut batch = services.storage.batch();
    if provider.link_existing_by_email
        && let Some(owner) = match &verified_email {
            Some(email) => auth.email_owner(email)?,
            None => None,
        }
    {
        if auth.account(&owner)?.is_none_or(|a| a.deactivated) {
            return Err(deactivated());
        }
        auth.link_identity_into(&mut batch, &owner, identity)?;
        services.storage.commit(batch).await?;
        return Ok(owner);
    }
    if !provider.allow_registration {
        return Err(Error::forbidden(
            "No account here is linked to this sign-in, and new ones cannot be made with it",
        ));
    }
    let wanted = claim(&provider.localpart_claim)
        .and_then(|v| auth::sso::localpart_from_claim(&v))
        .unwrap_or_else(|| crate::util::random_string(12).to_lowercase());
    // The first free of `name`, `name1`, `name2`…, else a random one.
    let user_id = (0..100)
        .map(|n| match n {
            0 => wanted.clone(),
            n => format!("{wanted}{n}"),
        })
        .find_map(|name| auth.check_available(&name).ok())
        .map_or_else(
            || auth.check_available(&crate::util::random_string(12).to_lowercase()),
            Ok,
        )?;
    auth.create_account_into(&mut batch, &user_id, None, false)?;
    auth.link_identity_into(&mut batch, &user_id, identity)?;
    // The provider's word on the address counts only where the operator trusts it.
    if let Some(email) = verified_email
        .as_deref()
        .filter(|_| provider.link_existing_by_email)
        .and_then(auth::email::normalize_address)
        .filter(|e| auth.email_domain_allowed(e))
        .filter(|e| auth.email_owner(e).is_ok_and(|owner| owner.is_none()))
    {
        auth.bind_email_into(&mut batch, &user_id, &email, crate::util::now_ms())?;
    }
    services.storage.commit(batch).await?;
    drop(_registering);
    if let Some(name) = claim(&provider.displayname_claim).filter(|n| !n.trim().is_empty()) {
        let name = serde_json::Value::String(name.trim().to_owned());
        let set = set_profile_field(services, &user_id, "displayname", Some(name));
        if let Err(e) = set.await {
            tracing::warn!(%user_id, "display name from SSO not set: {}", e.message());
        }
    }
    Ok(user_id)
}
