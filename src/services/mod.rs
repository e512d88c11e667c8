//! The original design's services, as modules of one process. Handlers reach them through
//! the router's shared state, [`AppState`]. They speak the domain: their errors are
//! [`error::Error`] kinds, which only the gateway turns into HTTP.

pub mod account_data;
pub mod auth;
pub mod contacts;
pub mod e2ee;
pub mod error;
pub mod media;
pub mod messaging;
pub mod profile;
pub mod session;

use std::sync::Arc;

use kith_federation::{FederationClient, Outbox, Queue, ServerKeys, Settings};
use kith_storage::{Storage, catalog};
use ruma::UserId;

use crate::config::{Config, RegistrationMode};
use crate::events::{self, RevokeReason};
use crate::services::error::Result;

pub type AppState = Arc<Services>;

pub struct Services {
    pub config: Config,
    pub storage: Storage,
    pub keys: Arc<ServerKeys>,
    /// Requests to other servers and the check of theirs; `None` with federation off.
    pub federation: Option<Arc<FederationClient>>,
    pub messaging: messaging::Messaging,
    pub auth: auth::AuthService,
    pub sessions: session::Sessions,
    pub contacts: contacts::Contacts,
    pub e2ee: e2ee::E2ee,
    pub media: media::Media,
    pub presence: profile::Presences,
    /// Per user, across a profile's read-modify-write.
    pub profile_locks: crate::util::StripedLocks,
    /// Guards the local admin API (`<data>/admin.secret`).
    pub admin_secret: String,
}

/// Account changes that span auth-service (the account) and session-service (the devices),
/// committed as one write.
impl Services {
    /// Sets a new password; with `logout`, ends every session but `keep`'s.
    pub async fn change_password(
        &self,
        user_id: &UserId,
        new_password: &str,
        logout: bool,
        keep: Option<&str>,
    ) -> Result<()> {
        let hash = auth::password::hash(new_password).await?;
        let _guard = self.auth.registering().await;
        let mut batch = self.storage.batch();
        self.auth.set_password_into(&mut batch, user_id, hash)?;
        if !logout {
            return Ok(self.storage.commit(batch).await?);
        }
        let reason = RevokeReason::PasswordChanged;
        self.sessions
            .remove_all_devices(batch, user_id.as_str(), keep, reason)
            .await
    }

    /// Sets a new password proven by email (the proof is used up in the same write); with
    /// `logout`, ends every session.
    pub async fn reset_password(
        &self,
        user_id: &UserId,
        new_password: &str,
        logout: bool,
        proof: &auth::email::EmailProof,
    ) -> Result<()> {
        let hash = auth::password::hash(new_password).await?;
        let _guard = self.auth.registering().await;
        let mut batch = self.storage.batch();
        self.auth.set_password_into(&mut batch, user_id, hash)?;
        self.auth.consume_email_proof_into(&mut batch, proof)?;
        if !logout {
            return Ok(self.storage.commit(batch).await?);
        }
        let reason = RevokeReason::PasswordChanged;
        self.sessions
            .remove_all_devices(batch, user_id.as_str(), None, reason)
            .await
    }

    /// Deactivates the account and ends all its sessions, then its friendships and
    /// requests (a write per other user, as each changes that user's view too).
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        {
            let _guard = self.auth.registering().await;
            let mut batch = self.storage.batch();
            self.auth.deactivate_into(&mut batch, user_id)?;
            let reason = RevokeReason::Deactivated;
            self.sessions
                .remove_all_devices(batch, user_id.as_str(), None, reason)
                .await?;
        }
        self.contacts.forget_user(user_id.as_str()).await
    }
}

/// Signing in with an identity provider: the account (auth-service) and its display name
/// (profile-service).
impl Services {
    /// The user an identity signs in as: the linked one; else, if the provider may, the
    /// account holding the address it verified; else a new account (`user.created`) named
    /// after its claims, if the provider allows registration.
    pub async fn sso_user(&self, identity: &auth::sso::Identity) -> Result<ruma::OwnedUserId> {
        let auth = &self.auth;
        let provider = &auth.sso_provider(&identity.idp)?.config;
        let claim = |name: &str| {
            identity
                .claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let verified_email = claim("email").filter(|_| {
            identity.claims.get("email_verified") == Some(&serde_json::Value::Bool(true))
        });
        let deactivated = || {
            crate::services::error::Error::new(
                error::ErrorKind::UserDeactivated,
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
        let mut batch = self.storage.batch();
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
            self.storage.commit(batch).await?;
            return Ok(owner);
        }
        if !provider.allow_registration {
            return Err(crate::services::error::Error::forbidden(
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
        self.storage.commit(batch).await?;
        drop(_registering);
        if let Some(name) = claim(&provider.displayname_claim).filter(|n| !n.trim().is_empty()) {
            let name = serde_json::Value::String(name.trim().to_owned());
            if let Err(e) = self
                .set_profile_field(&user_id, "displayname", Some(name))
                .await
            {
                tracing::warn!(%user_id, "display name from SSO not set: {}", e.message());
            }
        }
        Ok(user_id)
    }
}

/// Friend requests that came as a direct-chat invite from a server without friend
/// requests (contact-service's request, messaging-service's held invite).
impl Services {
    /// Accepts a request; one that came as an invite reveals it, in the same write.
    pub async fn accept_request(&self, user: &str, request_id: &str) -> Result<()> {
        let mut batch = self.storage.batch();
        if let Some(room) = self.held_room(user, request_id)? {
            self.messaging
                .release_invite_into(&mut batch, user, &room)?;
        }
        self.contacts.accept(user, request_id, batch).await
    }

    /// Declines a request; one that came as an invite declines it too (best effort: the
    /// inviting server may be gone).
    pub async fn decline_request(&self, user: &str, request_id: &str) -> Result<()> {
        let room = self.held_room(user, request_id)?;
        self.contacts
            .withdraw(user, request_id, contacts::Direction::Incoming)
            .await?;
        if let (Some(room), Ok(user_id)) = (room, UserId::parse(user)) {
            let room_id =
                ruma::RoomId::parse(&room).map_err(crate::services::error::Error::internal)?;
            if let Err(e) = self.messaging.leave_remote(&user_id, &room_id).await {
                tracing::info!(%room, "declining a held invite failed: {}", e.message());
            }
        }
        Ok(())
    }

    fn held_room(&self, user: &str, request_id: &str) -> Result<Option<String>> {
        let request = self.contacts.request(request_id)?;
        Ok(request.filter(|r| r.to == user).and_then(|r| r.room_id))
    }
}

/// The `global_value` key recording that the first-start registration token was made.
const BOOTSTRAP_TOKEN_KEY: &str = "bootstrap_registration_token_issued";

impl Services {
    /// Opens the database and builds every service; starts no tasks.
    pub fn open(config: Config) -> Result<AppState, String> {
        std::fs::create_dir_all(&config.database.path).map_err(|e| {
            format!(
                "cannot create data directory {}: {e}",
                config.database.path.display()
            )
        })?;
        let storage = Storage::open(&config.db_path())
            .map_err(|e| format!("cannot open the database: {e}"))?;
        let keys = ServerKeys::load_or_generate(&storage, &config.server_name)
            .map_err(|e| e.to_string())?;
        let keys = Arc::new(keys);
        let federation = match config.federation.enabled {
            true => Some(Arc::new(FederationClient::new(
                storage.clone(),
                Arc::clone(&keys),
                federation_settings(&config)?,
            )?)),
            false => None,
        };
        let outbox = Arc::new(Outbox::default());
        let messaging = messaging::Messaging::new(
            storage.clone(),
            Arc::clone(&keys),
            federation.clone(),
            Arc::clone(&outbox),
        );
        let auth = auth::AuthService::new(storage.clone(), &config)?;
        let sessions =
            session::Sessions::new(storage.clone(), &config).map_err(|e| e.to_string())?;
        let presence =
            profile::Presences::new(storage.clone(), Arc::clone(&outbox), &config.server_name);
        let contacts = contacts::Contacts::new(
            storage.clone(),
            &config,
            federation.clone(),
            Arc::clone(&outbox),
        );
        let e2ee = e2ee::E2ee::new(storage.clone());
        let media = media::Media::new(storage.clone(), &config, federation.clone())?;
        profile::directory::ensure_indexed(&storage)
            .map_err(|e| format!("cannot index the user directory: {e}"))?;
        let admin_secret = crate::admin::secret::load_or_create(&config.admin_secret_path())
            .map_err(|e| format!("cannot write {}: {e}", config.admin_secret_path().display()))?;
        Ok(Arc::new(Services {
            config,
            storage,
            keys,
            federation,
            messaging,
            auth,
            sessions,
            contacts,
            e2ee,
            media,
            presence,
            profile_locks: crate::util::StripedLocks::new(16),
            admin_secret,
        }))
    }

    /// Starts the event-log subscribers.
    pub fn start_subscribers(&self) {
        events::spawn(self.storage.clone(), Arc::new(profile::ProfileCreator));
        events::spawn(self.storage.clone(), Arc::new(contacts::ContactsCreator));
        if self.federation.is_some() {
            let announcer = e2ee::DeviceListAnnouncer {
                outbox: Arc::clone(&self.messaging.outbox),
                server_name: self.config.server_name.clone(),
            };
            events::spawn(self.storage.clone(), Arc::new(announcer));
        }
    }

    /// Starts auth-service's tasks: the mail sender (resuming what a previous run left),
    /// and the pruning of expired email validation sessions and login tokens.
    pub fn start_auth(self: &Arc<Self>) {
        if let Some(mailer) = &self.auth.mailer {
            mailer.start();
        }
        let services = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                every.tick().await;
                let auth = &services.auth;
                for result in [
                    auth.prune_email_sessions().await,
                    auth.prune_login_tokens().await,
                ] {
                    if let Err(e) = result {
                        tracing::warn!("pruning expired auth records failed: {}", e.message());
                    }
                }
            }
        });
    }

    /// Starts the outbound federation queue (resuming what a previous run left).
    pub fn start_federation(&self) {
        if let Some(client) = &self.federation {
            let queue = Queue::start(self.storage.clone(), Arc::clone(client));
            kith_federation::inbound::spawn_pruner(self.storage.clone());
            self.messaging.outbox.set(queue);
        }
    }

    /// In `token` mode, the first start of an empty server makes a registration token and
    /// prints it once, so the first user can register without opening the server to all.
    pub fn bootstrap_registration_token(&self) -> Result<(), String> {
        if self.config.registration.mode != RegistrationMode::Token {
            return Ok(());
        }
        let issued: Option<bool> = self
            .storage
            .get(&catalog::GLOBAL_VALUE, &BOOTSTRAP_TOKEN_KEY)
            .map_err(|e| e.to_string())?;
        if issued.is_some() {
            return Ok(());
        }
        let mut batch = self.storage.batch();
        let token = self
            .auth
            .token_into(&mut batch, None, None, None)
            .map_err(|e| e.to_string())?;
        batch
            .put(&catalog::GLOBAL_VALUE, &BOOTSTRAP_TOKEN_KEY, &true)
            .map_err(|e| e.to_string())?;
        self.storage
            .commit_blocking(batch)
            .map_err(|e| e.to_string())?;
        tracing::warn!(
            token = %token.token,
            "registration needs a token; this one was made for the first users and is shown only once \
             (list or make more with `kith admin tokens`)"
        );
        Ok(())
    }
}

fn federation_settings(config: &Config) -> Result<Settings, String> {
    let federation = &config.federation;
    let ca_pem = match &federation.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("cannot read federation.ca_file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let denied_ip_ranges = federation
        .denied_ip_ranges
        .iter()
        .map(|range| range.parse().map_err(|e| format!("{range}: {e}")))
        .collect::<Result<_, String>>()?;
    Ok(Settings {
        verify_certificates: federation.verify_certificates,
        ca_pem,
        denied_ip_ranges,
        allowed_servers: federation.allowed_servers.clone(),
        denied_servers: federation.denied_servers.clone(),
    })
}
