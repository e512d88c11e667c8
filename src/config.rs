//! Configuration: embedded defaults, then an optional TOML file (`--config FILE` or
//! `KITH_CONFIG`), then environment variables `KITH_<SECTION>__<KEY>` (for example
//! `KITH_SERVER_NAME`, `KITH_DATABASE__PATH`, `KITH_LISTEN__CLIENT`). List values in the
//! environment use TOML array syntax. `config.example.toml` documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod check;
mod email;
mod federation;
mod sso;
#[cfg(test)]
mod tests;

pub use email::{Email, SmtpSecurity};
pub use federation::{Federation, Tls};
pub use sso::{Sso, SsoProvider};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The name in every user ID (`@alice:<server_name>`); fixed for the server's lifetime.
    pub server_name: String,
    /// Old place of `server.public_baseurl`, still read when that is unset.
    pub public_baseurl: Option<String>,
    pub server: Server,
    pub listen: Listen,
    pub database: Database,
    pub registration: Registration,
    pub email: Email,
    pub sso: Sso,
    pub auth: Auth,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub well_known: WellKnown,
    pub turn: Turn,
    pub contacts: Contacts,
    pub media: Media,
    pub tls: Tls,
    pub federation: Federation,
    pub log: Log,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// The URL clients reach this server at, the base of links in mail and of the SSO
    /// callback; defaults to `http://<listen.client>`.
    pub public_baseurl: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Media {
    /// Largest upload accepted, in bytes; larger ones get 413 `M_TOO_LARGE`.
    pub max_upload_size: usize,
    /// Where uploaded files are kept; defaults to `<database.path>/media`.
    pub path: Option<PathBuf>,
    /// Days after which other servers' files fetched for our users are forgotten (fetched
    /// again if asked for); unset keeps them. This server's own uploads are never purged.
    pub remote_retention: Option<f64>,
}

impl Default for Media {
    fn default() -> Self {
        Media {
            max_upload_size: 50 * 1024 * 1024,
            path: None,
            remote_retention: None,
        }
    }
}

/// Who needs to be friends before a chat (contact-service's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DmPolicy {
    /// Anyone may invite anyone.
    Off,
    /// An invite into a direct chat to someone who is not a friend is delivered, and is a
    /// friend request: joining accepts it, rejecting declines it, rescinding cancels it.
    Request,
    /// Direct chats (an `is_direct` room, or one of at most two members) need friendship.
    DmOnly,
    /// Every invite needs friendship.
    AllInvites,
}

impl DmPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Off => "off",
            DmPolicy::Request => "request",
            DmPolicy::DmOnly => "dm_only",
            DmPolicy::AllInvites => "all_invites",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Contacts {
    pub dm_requires_friendship: DmPolicy,
    /// Friend requests a user may send in a burst...
    pub request_burst: u32,
    /// ...and regains per minute after it.
    pub requests_per_minute: f64,
    /// Whether the direct chat a friend request made through the API opens is encrypted
    /// (as Element makes a DM).
    pub encrypt_request_rooms: bool,
}

impl Default for Contacts {
    fn default() -> Self {
        Contacts {
            dm_requires_friendship: DmPolicy::Request,
            request_burst: 20,
            requests_per_minute: 2.0,
            encrypt_request_rooms: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// Address of the Client-Server API listener.
    pub client: SocketAddr,
    /// Address of the federation listener (TLS), when federation is enabled.
    pub federation: SocketAddr,
    /// Reverse proxies (CIDRs) whose `forwarded_header` names the client; from any other
    /// peer it is ignored.
    pub trusted_proxies: Vec<String>,
    /// `x-forwarded-for` or `forwarded` (RFC 7239): the header the proxies write.
    pub forwarded_header: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// The data directory: the RocksDB database lives in `<path>/db`, the admin secret in
    /// `<path>/admin.secret`.
    pub path: PathBuf,
    /// Count where reads find their data (memtable, block cache, files) and log the counts
    /// at shutdown: to measure (it costs a little on every read), not for every day.
    pub count_reads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    Open,
    Token,
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registration {
    pub mode: RegistrationMode,
    /// Extra registration tokens accepted without limit, besides those in the database.
    pub tokens: Vec<String>,
    /// New accounts must verify an email address (needs `[email]`).
    pub require_email: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Lifetime in seconds of access tokens issued with a refresh token.
    pub access_token_ttl: u64,
    /// Lifetime in seconds of a refresh token; 0 = never expires.
    pub refresh_token_ttl: u64,
    /// The access-token signing secret's own file; unset: kept in the database.
    pub token_secret_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    pub max_request_size: usize,
    /// Failed logins allowed in a burst, per account and per client address.
    pub login_failure_burst: u32,
    /// Failed logins regained per minute after the burst.
    pub login_failures_per_minute: f64,
    /// Verification mails asked for in a burst, per address and per client address...
    pub email_request_burst: u32,
    /// ...and regained per minute after it.
    pub email_requests_per_minute: f64,
}

/// A rate limit: `burst` actions at once, then `per_minute` regained.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: f64,
}

impl Rate {
    pub fn limiter(self) -> crate::util::RateLimiter {
        crate::util::RateLimiter::new(self.burst, self.per_minute)
    }
}

/// What one client may do how often (Synapse's `rc_*` settings); past a limit, 429
/// `M_LIMIT_EXCEEDED` with `retry_after_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Accounts registered per client address.
    pub registration: Rate,
    /// Events (messages, state, redactions) sent per user.
    pub messages: Rate,
    /// Media uploads (and reserved media IDs) per user.
    pub uploads: Rate,
    /// `sendToDevice` requests per user.
    pub to_device: Rate,
    /// Other servers' media files fetched per user (what is here already is not counted).
    pub remote_media: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        let rate = |burst, per_minute| Rate { burst, per_minute };
        RateLimits {
            registration: rate(3, 10.0),
            messages: rate(10, 12.0),
            uploads: rate(50, 60.0),
            to_device: rate(100, 1200.0),
            remote_media: rate(100, 100.0),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WellKnown {
    /// `m.server` served at `/.well-known/matrix/server`; unset = 404, as Synapse does.
    pub server: Option<String>,
    /// MatrixRTC foci for Element Call (`org.matrix.msc4143.rtc_foci` in
    /// `/.well-known/matrix/client`, and `/rtc/transports`), each as the MSC writes it,
    /// e.g. `{ type = "livekit", livekit_service_url = "https://..." }`.
    pub rtc_foci: Vec<serde_json::Value>,
}

/// The TURN server clients use for calls (`/voip/turnServer`), as Synapse configures it:
/// a shared secret (coturn's `use-auth-secret`: time-limited credentials made here) or a
/// fixed username and password.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Turn {
    /// `turn:` and `turns:` URIs; none = no TURN server (`{}`).
    pub uris: Vec<String>,
    pub shared_secret: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long credentials made from the shared secret last, in seconds (default a day).
    pub user_lifetime: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A `RUST_LOG`-style filter; the `RUST_LOG` variable overrides it.
    pub filter: String,
    /// `text` (for people) or `json` (one object per line, for log collectors).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Where Prometheus metrics are served (`GET /metrics`, no token): off when unset. A
    /// listener of their own, so they can stay on loopback or a private network.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost:8008".into(),
            public_baseurl: None,
            server: Server::default(),
            listen: Listen::default(),
            database: Database::default(),
            registration: Registration::default(),
            email: Email::default(),
            sso: Sso::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            well_known: WellKnown::default(),
            turn: Turn::default(),
            contacts: Contacts::default(),
            media: Media::default(),
            tls: Tls::default(),
            federation: Federation::default(),
            log: Log::default(),
            metrics: Metrics::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            client: SocketAddr::from(([127, 0, 0, 1], 8008)),
            federation: SocketAddr::from(([127, 0, 0, 1], 8448)),
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Database {
            path: PathBuf::from("./kith-data"),
            count_reads: false,
        }
    }
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            mode: RegistrationMode::Token,
            tokens: Vec::new(),
            require_email: false,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            access_token_ttl: 3600,
            refresh_token_ttl: 30 * 24 * 3600,
            token_secret_path: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_size: 1 << 20,
            login_failure_burst: 5,
            login_failures_per_minute: 6.0,
            email_request_burst: 5,
            email_requests_per_minute: 1.0,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then `KITH_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(format!("config file {} does not exist", file.display()));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only variables naming a config section are options: others that share the prefix
        // (KITH_CONFIG, or a CI's KITH_CI_TARGET) are not, and must not fail the load.
        let sections = Config::sections();
        let env = Env::prefixed("KITH_").split("__").filter(move |key| {
            let section = key.as_str().split('.').next().unwrap_or_default();
            sections.iter().any(|s| s.eq_ignore_ascii_case(section))
        });
        let config: Config = figment.merge(env).extract().map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn sections() -> Vec<String> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
            _ => Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(days) = self.media.remote_retention
            && !(days.is_finite() && days > 0.0 && days <= 36_500.0)
        {
            return Err(format!(
                "media.remote_retention {days} is not a number of days from 0 (excluded) to 36500"
            ));
        }
        ruma::ServerName::parse(&self.server_name).map_err(|e| {
            format!(
                "server_name {:?} is not a valid server name: {e}",
                self.server_name
            )
        })?;
        if let Some(server) = &self.well_known.server {
            ruma::ServerName::parse(server)
                .map_err(|e| format!("well_known.server {server:?} is not a server name: {e}"))?;
        }
        for baseurl in [&self.server.public_baseurl, &self.public_baseurl]
            .into_iter()
            .flatten()
        {
            let url = url::Url::parse(baseurl)
                .map_err(|e| format!("server.public_baseurl {baseurl:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                return Err(format!(
                    "server.public_baseurl {baseurl:?} must be an http(s) URL with a host"
                ));
            }
        }
        if let Some(bad) =
            (self.listen.trusted_proxies.iter()).find(|r| crate::gateway::parse_range(r).is_none())
        {
            return Err(format!(
                "listen.trusted_proxies: {bad:?} is not a CIDR or address"
            ));
        }
        let header = self.listen.forwarded_header.to_ascii_lowercase();
        if !["x-forwarded-for", "forwarded"].contains(&header.as_str()) {
            return Err("listen.forwarded_header must be x-forwarded-for or forwarded".into());
        }
        if self.limits.max_request_size < 1024 {
            return Err("limits.max_request_size must be at least 1024 bytes".into());
        }
        const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
        if !(1..=TEN_YEARS).contains(&self.auth.access_token_ttl) {
            return Err("auth.access_token_ttl must be between 1 second and 10 years".into());
        }
        if self.auth.refresh_token_ttl > TEN_YEARS {
            return Err(
                "auth.refresh_token_ttl must be at most 10 years (0 = never expires)".into(),
            );
        }
        let rate = self.limits.login_failures_per_minute;
        if !rate.is_finite() || rate < 0.0 {
            return Err("limits.login_failures_per_minute must be a number >= 0".into());
        }
        for range in &self.federation.denied_ip_ranges {
            range.parse::<ipnet::IpNet>().map_err(|e| {
                format!("federation.denied_ip_ranges: {range:?} is not an address range: {e}")
            })?;
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return Err("tls.certificate and tls.private_key must be given together".into());
        }
        let rate = self.limits.email_requests_per_minute;
        if !rate.is_finite() || rate < 0.0 {
            return Err("limits.email_requests_per_minute must be a number >= 0".into());
        }
        if self.registration.require_email && !self.email.enabled {
            return Err("registration.require_email needs email.enabled".into());
        }
        if self.email.token_lifetime == 0 {
            return Err("email.token_lifetime must be at least 1 second".into());
        }
        self.sso.validate()?;
        let rate = self.contacts.requests_per_minute;
        if !rate.is_finite() || rate < 0.0 {
            return Err("contacts.requests_per_minute must be a number >= 0".into());
        }
        Ok(())
    }

    pub fn public_baseurl(&self) -> String {
        match self
            .server
            .public_baseurl
            .as_ref()
            .or(self.public_baseurl.as_ref())
        {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen.client),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.database.path.join("db")
    }

    pub fn media_path(&self) -> PathBuf {
        self.media
            .path
            .clone()
            .unwrap_or_else(|| self.database.path.join("media"))
    }

    pub fn admin_secret_path(&self) -> PathBuf {
        self.database.path.join("admin.secret")
    }
}
