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
}

/// Synapse's default `ip_range_blacklist`: loopback, private, link-local, CGNAT, multicast,
/// documentation and unique-local ranges, so a public server cannot be made to reach
/// internal hosts.
const DEFAULT_DENIED_RANGES: &[&str] = &[
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
