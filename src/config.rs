//! Configuration: embedded defaults, then an optional TOML file (`--config FILE` or
//! `KITH_CONFIG`), then environment variables `KITH_<SECTION>__<KEY>` (for example
//! `KITH_SERVER_NAME`, `KITH_DATABASE__PATH`, `KITH_LISTEN__CLIENT`). List values in the
//! environment use TOML array syntax. `config.example.toml` documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

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
    pub well_known: WellKnown,
    pub contacts: Contacts,
    pub media: Media,
    pub tls: Tls,
    pub federation: Federation,
    pub log: Log,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// The URL clients reach this server at, the base of links in mail and of the SSO
    /// callback; defaults to `http://<listen.client>`.
    pub public_baseurl: Option<String>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

/// Email (auth-service): verifying addresses, resetting passwords.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Email {
    pub enabled: bool,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_security: SmtpSecurity,
    /// Empty: no SMTP authentication.
    pub smtp_username: String,
    pub smtp_password: String,
    /// The sender of kith's mail, `Name <address>` or a bare address.
    pub from: String,
    /// How long, in seconds, the link in a mail works.
    pub token_lifetime: u64,
    /// If not empty, only addresses at these domains may be added (others get
    /// `M_THREEPID_DENIED`).
    pub allowed_domains: Vec<String>,
    /// If not empty, the only hosts a `next_link` may lead to after a link is clicked;
    /// otherwise any `https`/`http` URL.
    pub next_link_domains: Vec<String>,
}

impl Default for Email {
    fn default() -> Self {
        Email {
            enabled: false,
            smtp_host: "localhost".into(),
            smtp_port: 587,
            smtp_security: SmtpSecurity::Starttls,
            smtp_username: String::new(),
            smtp_password: String::new(),
            from: "kith <noreply@example.org>".into(),
            token_lifetime: 3600,
            allowed_domains: Vec::new(),
            next_link_domains: Vec::new(),
        }
    }
}

/// Sign-in with OpenID Connect providers (legacy Matrix SSO).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sso {
    pub providers: Vec<SsoProvider>,
    /// URL prefixes of clients trusted to receive a login token without the user being
    /// asked first; any other `redirectUrl` gets a confirmation page (phishing).
    pub allowed_redirect_urls: Vec<String>,
}

impl Sso {
    /// Whether `redirect_url` is under one of `allowed_redirect_urls`: same scheme, host
    /// and port, and a path below the prefix's (which ends in `/`, checked at load).
    pub fn trusts(&self, redirect_url: &str) -> bool {
        let Ok(url) = url::Url::parse(redirect_url) else {
            return false;
        };
        self.allowed_redirect_urls.iter().any(|prefix| {
            url::Url::parse(prefix).is_ok_and(|prefix| {
                prefix.scheme() == url.scheme()
                    && prefix.host() == url.host()
                    && prefix.port_or_known_default() == url.port_or_known_default()
                    && url.path().starts_with(prefix.path())
            })
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsoProvider {
    /// Stable identifier, in URLs and in stored identity links: never change it.
    pub id: String,
    /// Shown on clients' sign-in buttons.
    pub name: String,
    /// The provider's issuer URL (`https://`, or `http://` on a loopback address).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// Create an account on the first sign-in of someone unknown.
    pub allow_registration: bool,
    /// The ID token claim a new account's localpart comes from.
    pub localpart_claim: String,
    /// The ID token claim a new account's display name comes from.
    pub displayname_claim: String,
    /// Trust the provider's `email_verified`: sign someone unknown in to the existing account
    /// holding that address, and give new accounts the address (only for providers trusted
    /// to verify addresses).
    pub link_existing_by_email: bool,
}

impl Default for SsoProvider {
    fn default() -> Self {
        SsoProvider {
            id: String::new(),
            name: String::new(),
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            allow_registration: true,
            localpart_claim: "preferred_username".into(),
            displayname_claim: "name".into(),
            link_existing_by_email: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Media {
    /// Largest upload accepted, in bytes; larger ones get 413 `M_TOO_LARGE`.
    pub max_upload_size: usize,
    /// Where uploaded files are kept; defaults to `<database.path>/media`.
    pub path: Option<PathBuf>,
}

impl Default for Media {
    fn default() -> Self {
        Media {
            max_upload_size: 50 * 1024 * 1024,
            path: None,
        }
    }
}

/// The federation listener's certificate. Both unset: kith makes a self-signed one in the
/// data directory (fine for tests and LAN peers that do not verify certificates).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Federation {
    /// Off: no federation listener, no outbound requests, remote users refused.
    pub enabled: bool,
    /// Check peers' certificates against the system's roots (and `ca_file`).
    pub verify_certificates: bool,
    /// Extra PEM root certificates trusted for peers.
    pub ca_file: Option<PathBuf>,
    /// Address ranges never contacted, whatever a server name resolves to.
    pub denied_ip_ranges: Vec<String>,
    /// If not empty, the only servers federated with.
    pub allowed_servers: Vec<String>,
    /// Servers never federated with.
    pub denied_servers: Vec<String>,
}

/// Synapse's default `ip_range_blacklist`: loopback, private, link-local, CGNAT, multicast,
/// documentation and unique-local ranges, so a public server cannot be made to reach
/// internal hosts.
pub const DEFAULT_DENIED_RANGES: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
];

impl Default for Federation {
    fn default() -> Self {
        Federation {
            enabled: true,
            verify_certificates: true,
            ca_file: None,
            denied_ip_ranges: DEFAULT_DENIED_RANGES
                .iter()
                .map(|r| r.to_string())
                .collect(),
            allowed_servers: Vec::new(),
            denied_servers: Vec::new(),
        }
    }
}

/// Who needs to be friends before a chat (contact-service's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DmPolicy {
    /// Anyone may invite anyone.
    Off,
    /// Direct chats (an `is_direct` room, or one of at most two members) need friendship.
    DmOnly,
    /// Every invite needs friendship.
    AllInvites,
}

impl DmPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Off => "off",
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
}

impl Default for Contacts {
    fn default() -> Self {
        Contacts {
            dm_requires_friendship: DmPolicy::DmOnly,
            request_burst: 20,
            requests_per_minute: 2.0,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// The data directory: the RocksDB database lives in `<path>/db`, the admin secret in
    /// `<path>/admin.secret`.
    pub path: PathBuf,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WellKnown {
    /// `m.server` served at `/.well-known/matrix/server`; unset = 404, as Synapse does.
    pub server: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A `RUST_LOG`-style filter; the `RUST_LOG` variable overrides it.
    pub filter: String,
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
            well_known: WellKnown::default(),
            contacts: Contacts::default(),
            media: Media::default(),
            tls: Tls::default(),
            federation: Federation::default(),
            log: Log::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            client: SocketAddr::from(([127, 0, 0, 1], 8008)),
            federation: SocketAddr::from(([127, 0, 0, 1], 8448)),
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Database {
            path: PathBuf::from("./kith-data"),
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
        self.validate_sso()?;
        let rate = self.contacts.requests_per_minute;
        if !rate.is_finite() || rate < 0.0 {
            return Err("contacts.requests_per_minute must be a number >= 0".into());
        }
        Ok(())
    }

    fn validate_sso(&self) -> Result<(), String> {
        for prefix in &self.sso.allowed_redirect_urls {
            let url = url::Url::parse(prefix)
                .map_err(|e| format!("sso.allowed_redirect_urls: {prefix:?}: {e}"))?;
            if url.host().is_none() || !prefix.ends_with('/') {
                return Err(format!(
                    "sso.allowed_redirect_urls: {prefix:?} must name a host and end with \"/\""
                ));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for provider in &self.sso.providers {
            let id = &provider.id;
            let id_ok = !id.is_empty()
                && id.len() <= 255
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c));
            if !id_ok {
                return Err(format!(
                    "sso.providers: id {id:?} must be 1-255 of A-Z a-z 0-9 . _ ~ -"
                ));
            }
            if !ids.insert(id) {
                return Err(format!("sso.providers: id {id:?} is given twice"));
            }
            let url = url::Url::parse(&provider.issuer)
                .map_err(|e| format!("sso.providers {id}: issuer is not a URL: {e}"))?;
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(name)) => name == "localhost",
                None => false,
            };
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(format!(
                    "sso.providers {id}: issuer must be https:// (http:// only on loopback)"
                ));
            }
            if provider.client_id.is_empty() {
                return Err(format!("sso.providers {id}: client_id is empty"));
            }
            if !provider.scopes.iter().any(|s| s == "openid") {
                return Err(format!(
                    "sso.providers {id}: scopes must include \"openid\""
                ));
            }
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

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kith.toml",
                "server_name = \"file.test\"\n[registration]\nmode = \"open\"\n",
            )?;
            jail.set_env("KITH_DATABASE__PATH", "/tmp/elsewhere");
            jail.set_env("KITH_REGISTRATION__TOKENS", "[\"a\", \"b\"]");
            jail.set_env("KITH_CONFIG", "ignored-here");
            jail.set_env("KITH_CI_TARGET", "not an option");
            let config =
                Config::load(Some(Path::new("kith.toml"))).map_err(figment::Error::from)?;
            assert_eq!(config.server_name, "file.test");
            assert_eq!(config.registration.mode, RegistrationMode::Open);
            assert_eq!(config.registration.tokens, ["a", "b"]);
            assert_eq!(config.database.path, PathBuf::from("/tmp/elsewhere"));
            assert_eq!(config.listen.client.port(), 8008);
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let example: Config = Figment::new()
            .merge(Toml::file(&path))
            .extract()
            .expect("config.example.toml parses");
        let shown = serde_json::to_value(&example).unwrap();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(
            shown, defaults,
            "config.example.toml differs from the defaults"
        );
    }

    #[test]
    fn identity_providers_come_from_the_environment_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "KITH_SSO__PROVIDERS",
                r#"[{id="corp", name="Corp", issuer="https://id.corp.example/", client_id="kith", client_secret="s"}]"#,
            );
            let config = Config::load(None).map_err(figment::Error::from)?;
            let provider = &config.sso.providers[0];
            assert_eq!(provider.id, "corp");
            assert_eq!(provider.localpart_claim, "preferred_username");
            assert!(provider.allow_registration);
            // http:// only on loopback.
            jail.set_env(
                "KITH_SSO__PROVIDERS",
                r#"[{id="corp", issuer="http://id.corp.example/", client_id="kith"}]"#,
            );
            assert!(Config::load(None).is_err());
            jail.set_env(
                "KITH_SSO__PROVIDERS",
                r#"[{id="local", issuer="http://127.0.0.1:9000", client_id="kith"}]"#,
            );
            assert!(Config::load(None).is_ok());
            jail.set_env(
                "KITH_SSO__PROVIDERS",
                r#"[{id="a b", issuer="https://x.example", client_id="kith"}]"#,
            );
            assert!(Config::load(None).is_err());
            jail.set_env("KITH_SSO__PROVIDERS", "[]");
            // Trusted clients: whole path segments of the same origin only.
            jail.set_env(
                "KITH_SSO__ALLOWED_REDIRECT_URLS",
                r#"["https://app.example.org"]"#,
            );
            assert!(Config::load(None).is_err(), "a prefix must end with /");
            jail.set_env(
                "KITH_SSO__ALLOWED_REDIRECT_URLS",
                r#"["https://app.example.org/web/"]"#,
            );
            let sso = Config::load(None).map_err(figment::Error::from)?.sso;
            assert!(sso.trusts("https://app.example.org/web/#/login"));
            assert!(sso.trusts("https://app.example.org:443/web/x?y=1"));
            assert!(!sso.trusts("https://app.example.org.evil.test/web/"));
            assert!(!sso.trusts("https://app.example.org/webevil/"));
            assert!(!sso.trusts("http://app.example.org/web/"));
            assert!(!sso.trusts("https://app.example.org:8443/web/"));
            Ok(())
        });
    }

    #[test]
    fn rejects_unknown_options_and_bad_server_names() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[listen]\nclinet = \"127.0.0.1:1\"\n")?;
            assert!(Config::load(Some(Path::new("bad.toml"))).is_err());
            jail.set_env("KITH_SERVER_NAME", "not a name");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }
}
