//! `[sso]`: sign-in with OpenID Connect providers.

use serde::{Deserialize, Serialize};

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
    pub(super) fn validate(&self) -> Result<(), String> {
        for prefix in &self.allowed_redirect_urls {
            let url = url::Url::parse(prefix)
                .map_err(|e| format!("sso.allowed_redirect_urls: {prefix:?}: {e}"))?;
            if url.host().is_none() || !prefix.ends_with('/') {
                return Err(format!(
                    "sso.allowed_redirect_urls: {prefix:?} must name a host and end with \"/\""
                ));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for provider in &self.providers {
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
