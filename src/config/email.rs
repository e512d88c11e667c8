//! `[email]`: the SMTP server kith sends verification mail through.

use serde::{Deserialize, Serialize};

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
