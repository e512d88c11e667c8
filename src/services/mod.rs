//! The original design's services, as modules of one process, and the use cases that
//! span them. Handlers reach them through the router's shared state, [`AppState`] (a
//! plain container of the services); they speak the domain — ruma IDs, and
//! [`error::Error`] kinds that only the gateway turns into HTTP.
//!
//! ## Services and the tables each owns
//!
//! | service | tables (column families) |
//! |---|---|
//! | [`auth`] — accounts, passwords, registration tokens, email, SSO | `userid_account`, `regtoken_info`, `sid_emailvalidation`, `clientsecret_address_sid`, `address_userid`, `userid_address_threepid`, `position_mail`, `provider_subject_userid`, `userid_provider_subject`, `tokenhash_logintoken` |
//! | [`session`] — devices, access and refresh tokens | `userid_deviceid_device`, `refreshhash_userid_deviceid` |
//! | [`profile`] — public profiles, the user directory | `userid_profile`, `word_userid` |
//! | [`presence`] — online status, shared with rooms | `userid_presence` |
//! | [`contacts`] — friend requests, friendships, the DM policy | `userid_contacts`, `userid_otherid_friendship`, `requestid_request`, `userid_otherid_request`, `userid_otherid_dmroom` |
//! | [`messaging`] — rooms, events, state, membership, receipts, typing, push rules, aliases, federation of rooms | `roomid_room`, `eventid_pdu`, `eventid_state`, `roomid_position_eventid`, `eventid_reltype_position_relation`, `roomid_rootid_threadposition`, `ts_reportid_report`, `roomid_published`, `roomid_word_position_hit`, `roomid_type_statekey_eventid`, `userid_roomid_membership`, `roomid_userid_membership`, `userid_deviceid_txnid_eventid`, `userid_filterid_filter`, `roomid_userid_type_thread_receipt`, `roomid_typing`, `userid_roomid_unread`, `userid_roomid_position_notification`, `alias_roomid`, `roomid_blocked` |
//! | [`account_data`] — account data (table helpers every service may write through) | `userid_roomid_type_accountdata` |
//! | [`e2ee`] — device and one-time keys, cross-signing, to-device, key backup | `userid_deviceid_keys`, `userid_deviceid_algorithm_keyid_onetimekey`, `userid_deviceid_algorithm_fallbackkey`, `userid_kind_crosssigningkey`, `userid_keychange`, `userid_deviceid_position_todevice`, `userid_version_backup`, `userid_version_roomid_sessionid_key` |
//! | [`media`] — uploads and thumbnails | `mediaid_media`, `mediaid_size_thumbnail` |
//!
//! [`room_deletion`], a use case, keeps its tasks in `deleteid_roomdeletion`. The event log
//! (`stream_event`, `subscriber_cursor`) is [`crate::events`]'; server
//! keys and the outbound queue (`servername_keyid_verifykey`,
//! `destination_position_outgoing`, `destination_backoff`, `origin_txnid_response`) are
//! the federation crate's.
//!
//! ## Who calls whom
//!
//! Dependencies go one way, down this list; no service calls one above it:
//!
//! ```text
//! account, friend_requests, sync, search, transactions, room_deletion
//!                     use cases spanning services (above them all)
//! presence            → messaging
//! session             → e2ee (a new device's leftovers, device-list changes)
//! e2ee                → messaging (which servers share a room with a user)
//! messaging           → contacts (the DM policy), auth (does an invitee exist),
//!                       profile (names in member events), account_data
//! contacts            → account_data
//! auth                → profile (the directory's word folding)
//! profile, media, account_data          nothing
//! ```
//!
//! Where two services meet in one operation, the use case lives above both:
//! [`account`] (registration, password change, deactivation, SSO sign-up, profile
//! changes), [`friend_requests`] (the contacts API's requests as direct-chat invites),
//! [`sync`] (one `/sync` across
//! messaging, presence and e2ee), [`search`] (finding people), [`transactions`]
//! (inbound federation transactions), [`room_deletion`] (an admin's room deletion, as a
//! task that survives restarts).

pub mod account;
pub mod account_data;
pub mod auth;
pub mod calls;
pub mod contacts;
pub mod e2ee;
pub mod error;
pub mod friend_requests;
pub mod media;
pub mod messaging;
pub mod presence;
pub mod profile;
pub mod pushers;
pub mod room_deletion;
pub mod search;
pub mod session;
pub mod sync;
pub mod transactions;

use std::sync::Arc;

use kith_federation::{FederationClient, Outbox, Queue, ServerKeys, Settings};
use kith_storage::{Storage, catalog};
use ruma::{OwnedServerName, ServerName};

use crate::config::{Config, RegistrationMode};
use crate::events;
use crate::services::error::Result;

pub type AppState = Arc<Services>;

pub struct Services {
    pub config: Config,
    /// `config.server_name`, parsed.
    pub server_name: OwnedServerName,
    pub storage: Storage,
    pub keys: Arc<ServerKeys>,
    /// Requests to other servers and the check of theirs; `None` with federation off.
    pub federation: Option<Arc<FederationClient>>,
    pub messaging: messaging::Messaging,
    pub auth: Arc<auth::AuthService>,
    pub sessions: session::Sessions,
    pub contacts: Arc<contacts::Contacts>,
    pub e2ee: e2ee::E2ee,
    pub media: media::Media,
    pub presence: presence::Presences,
    pub profiles: profile::Profiles,
    pub pushers: Arc<pushers::Pushers>,
    /// Guards the local admin API (`<data>/admin.secret`).
    pub admin_secret: String,
    /// Per other server, held while one of its transactions is applied: a retry that
    /// arrives meanwhile waits, then finds the first one's answer (nothing twice).
    pub inbound_transactions: crate::util::KeyedLocks,
    pub sliding_sync: sync::sliding::SlidingSync,
    /// What the gateway and handlers count, for `/metrics`.
    pub metrics: crate::metrics::Registry,
    pub room_deletions: room_deletion::RoomDeletions,
}

/// The `global_value` key recording that the first-start registration token was made.
const BOOTSTRAP_TOKEN_KEY: &str = "bootstrap_registration_token_issued";
/// The first-start token lets in this many accounts, for this long: enough for the first
/// users, not a standing open door if its log line leaks.
const BOOTSTRAP_TOKEN_USES: u32 = 10;
const BOOTSTRAP_TOKEN_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;

impl Services {
    /// Whether `server` is this server.
    /// Whether storage answers a read (the schema version every database holds).
    pub fn storage_answers(&self) -> bool {
        let key = kith_storage::schema::VERSION_KEY;
        let read: kith_storage::Result<Option<serde_json::Value>> =
            self.storage.get(&catalog::GLOBAL_VALUE, &key);
        matches!(read, Ok(Some(_)))
    }

    pub fn is_ours(&self, server: &ServerName) -> bool {
        server == self.server_name
    }

    /// Opens the database and builds every service; starts no tasks.
    pub fn open(config: Config) -> Result<AppState, String> {
        prepare_data_dir(&config.database.path)?;
        let server_name = OwnedServerName::try_from(config.server_name.as_str())
            .map_err(|e| format!("server_name: {e}"))?;
        // `/metrics` reports the block cache's hit rate and RocksDB's write groups, which
        // only its statistics count.
        let open = match config.database.count_reads || config.metrics.listen.is_some() {
            true => Storage::open_counting_reads,
            false => Storage::open,
        };
        let storage =
            open(&config.db_path()).map_err(|e| format!("cannot open the database: {e}"))?;
        let key_file = config.federation.signing_key_path.as_deref();
        let keys =
            ServerKeys::load(&storage, &config.server_name, key_file).map_err(|e| e.to_string())?;
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
        let contacts = Arc::new(contacts::Contacts::new(
            storage.clone(),
            &config,
            federation.clone(),
            Arc::clone(&outbox),
        ));
        let auth = Arc::new(auth::AuthService::new(storage.clone(), &config)?);
        let messaging = messaging::Messaging::new(
            storage.clone(),
            Arc::clone(&keys),
            federation.clone(),
            (Arc::clone(&auth), Arc::clone(&contacts)),
            Arc::clone(&outbox),
            config.rate_limits.messages.limiter(),
        );
        let sessions =
            session::Sessions::new(storage.clone(), &config).map_err(|e| e.to_string())?;
        let presence =
            presence::Presences::new(storage.clone(), Arc::clone(&outbox), &config.server_name);
        let e2ee = e2ee::E2ee::new(
            storage.clone(),
            server_name.clone(),
            Arc::clone(&outbox),
            config.rate_limits.to_device.limiter(),
        );
        let profiles = profile::Profiles::new(storage.clone());
        // Push gateways are addresses users choose: the federation's denied ranges apply.
        let push_http = kith_federation::GuardedHttp::new(denied_ranges(&config)?)?;
        let pushers = Arc::new(pushers::Pushers::new(storage.clone(), push_http));
        let media = media::Media::new(storage.clone(), &config, federation.clone())?;
        profile::directory::ensure_indexed(&storage)
            .map_err(|e| format!("cannot index the user directory: {e}"))?;
        let admin_secret = crate::admin::secret::load_or_create(&config.admin_secret_path())
            .map_err(|e| format!("cannot write {}: {e}", config.admin_secret_path().display()))?;
        Ok(Arc::new(Services {
            config,
            server_name,
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
            profiles,
            pushers,
            admin_secret,
            inbound_transactions: Default::default(),
            sliding_sync: Default::default(),
            metrics: Default::default(),
            room_deletions: Default::default(),
        }))
    }

    /// Starts the timer that ends typing notices as their time runs out, the remote media
    /// purges, and resumes the room deletions a previous run left unfinished.
    pub fn start_timers(self: &Arc<Self>) -> Result<(), String> {
        room_deletion::resume(self).map_err(|e| e.message())?;
        let services = Arc::clone(self);
        tokio::spawn(async move { services.messaging.run_typing_timers().await });
        if let Some(days) = self.config.media.remote_retention {
            let services = Arc::clone(self);
            tokio::spawn(async move { services.purge_remote_media_every(days).await });
        }
        Ok(())
    }

    /// `[media] remote_retention`: purges the remote media cache at start, then every hour
    /// (or a quarter of the retention, if shorter).
    async fn purge_remote_media_every(&self, days: f64) {
        let retention = std::time::Duration::from_secs_f64(days.max(0.0) * 86_400.0);
        let period = (retention / 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        );
        loop {
            let before = crate::util::now_ms().saturating_sub(retention.as_millis() as u64);
            match self.media.purge_remote(before).await {
                Ok(purged) if purged.media > 0 => tracing::info!(
                    media = purged.media,
                    thumbnails = purged.thumbnails,
                    files = purged.files,
                    bytes = purged.bytes,
                    "purged remote media older than the retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot purge remote media: {e}"),
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Starts the delivery of pushes to push gateways (resuming what a previous run left).
    pub fn start_pushers(self: &Arc<Self>) {
        let view = Arc::new(PushView(Arc::clone(self)));
        pushers::spawn(Arc::clone(&self.pushers), view);
    }

    /// Starts the event-log subscribers.
    pub fn start_subscribers(&self) {
        // A new user gets a profile and a contacts record.
        let on_user_created = [
            events::OnUserCreated {
                name: "profile.create_on_user_created",
                create: profile::create_for_new_user,
            },
            events::OnUserCreated {
                name: "contacts.create_on_user_created",
                create: contacts::create_for_new_user,
            },
        ];
        for subscriber in on_user_created {
            events::spawn(self.storage.clone(), Arc::new(subscriber));
        }
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
            .token_into(
                &mut batch,
                None,
                Some(BOOTSTRAP_TOKEN_USES),
                Some(crate::util::now_ms() + BOOTSTRAP_TOKEN_LIFETIME_MS),
            )
            .map_err(|e| e.to_string())?;
        batch
            .put(&catalog::GLOBAL_VALUE, &BOOTSTRAP_TOKEN_KEY, &true)
            .map_err(|e| e.to_string())?;
        self.storage
            .commit_blocking(batch)
            .map_err(|e| e.to_string())?;
        tracing::warn!(
            token = %token.token,
            "registration needs a token; this one was made for the first users and is shown only once: \
             it lets in {BOOTSTRAP_TOKEN_USES} accounts within {} days (list, make more or delete with \
             `kith admin tokens`)",
            BOOTSTRAP_TOKEN_LIFETIME_MS / (24 * 3600 * 1000)
        );
        Ok(())
    }
}

/// Creates the data directory for its owner alone (0700): it holds the database, with the
/// access-token secret and the server's signing key, and the admin secret. Files in it are
/// made 0600 by the process umask (see `main`). An existing directory that others may read
/// is left as it is, with a warning.
fn prepare_data_dir(path: &std::path::Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|e| format!("cannot create data directory {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read data directory {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory is open to other users, who could read the secrets in it \
                 (forge access tokens, sign as this server): chmod 700 it"
            );
        }
    }
    Ok(())
}

/// What push-service needs of the rooms to describe a push.
struct PushView(Arc<Services>);

impl pushers::PushContext for PushView {
    fn event(&self, event_id: &str) -> Option<serde_json::Value> {
        let stored = self.0.messaging.stored_pdu(event_id).ok()??;
        Some(stored.client_event())
    }

    fn names(&self, room_id: &str, sender: &str) -> (Option<String>, Option<String>) {
        let Ok(room) = ruma::RoomId::parse(room_id) else {
            return (None, None);
        };
        self.0.messaging.push_names(&room, sender)
    }

    fn unread(&self, user: &str) -> u64 {
        self.0.messaging.total_unread(user).unwrap_or(0)
    }
}

fn denied_ranges(config: &Config) -> Result<Vec<ipnet::IpNet>, String> {
    config
        .federation
        .denied_ip_ranges
        .iter()
        .map(|range| range.parse().map_err(|e| format!("{range}: {e}")))
        .collect()
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
    let denied_ip_ranges = denied_ranges(config)?;
    Ok(Settings {
        verify_certificates: federation.verify_certificates,
        ca_pem,
        denied_ip_ranges,
        allowed_servers: federation.allowed_servers.clone(),
        denied_servers: federation.denied_servers.clone(),
    })
}
