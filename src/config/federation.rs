//! `[tls]` and `[federation]`: the federation listener's certificate and whom kith talks to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// The signing key's own file (Synapse's format); unset: kept in the database.
    pub signing_key_path: Option<PathBuf>,
}

impl Default for Federation {
    fn default() -> Self {
        Federation {
            enabled: true,
            verify_certificates: true,
            ca_file: None,
            // Synapse's `ip_range_blacklist` and more (see the constant), so a public server
            // cannot be made to reach internal hosts.
            denied_ip_ranges: kith_federation::DEFAULT_DENIED_RANGES
                .iter()
                .map(|r| r.to_string())
                .collect(),
            allowed_servers: Vec::new(),
            denied_servers: Vec::new(),
            signing_key_path: None,
        }
    }
}
