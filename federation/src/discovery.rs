//! Server discovery, as the spec orders it: an IP literal is used as is (port 8448 unless
//! given); a hostname with a port is looked up directly; otherwise
//! `/.well-known/matrix/server` may delegate to another host, and SRV records
//! (`_matrix-fed._tcp`, then the older `_matrix._tcp`) may name the host and port to
//! connect to, while TLS and `Host` stay with the (delegated) server name. Results are
//! cached: a day for a found delegation, an hour when there was none.
//!
//! Every address any name resolves to passes the denied ranges, so a peer's name (or its
//! well-known or SRV records) cannot point kith at internal hosts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use ipnet::IpNet;

use crate::cache::Bounded;
use serde::Deserialize;

const DEFAULT_PORT: u16 = 8448;
/// The most servers whose discovery (and SRV targets) is remembered.
pub(crate) const CACHED_SERVERS: usize = 10_000;

/// Where requests to other servers may not go by default: loopback, private, link-local,
/// shared (CGNAT), benchmarking, documentation, reserved, multicast and broadcast ranges
/// of both families, and the unspecified addresses. IPv6 forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) are checked by that address too.
pub const DEFAULT_DENIED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// The IPv4 address an IPv6 address carries, if it is of a form that embeds one:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`)
/// or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_ipv4(ip: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = ip.segments();
    let last = |a: u16, b: u16| std::net::Ipv4Addr::from((u32::from(a) << 16) | u32::from(b));
    match s {
        [0, 0, 0, 0, 0, 0xffff, a, b] | [0, 0, 0, 0, 0, 0, a, b] => Some(last(a, b)),
        [0x64, 0xff9b, 0, 0, 0, 0, a, b] => Some(last(a, b)),
        [0x2002, a, b, ..] => Some(last(a, b)),
        _ => None,
    }
}
const FOUND_TTL: Duration = Duration::from_secs(24 * 3600);
const NOT_FOUND_TTL: Duration = Duration::from_secs(3600);

/// Where requests for a server go: the URL base, whose host is also `Host` and the TLS
/// name (for SRV results, the resolver connects to the target in its place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub base_url: String,
}

/// Resolves names for the HTTP client: SRV targets in place of the names they serve, and
/// no address in a denied range.
pub struct Resolver {
    dns: TokioResolver,
    denied: Vec<IpNet>,
    /// Server host name → SRV target host, filled by discovery.
    targets: Bounded<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(String);

impl Resolver {
    pub fn new(denied: Vec<IpNet>) -> Result<Resolver, String> {
        let dns = TokioResolver::builder_tokio()
            .and_then(|builder| builder.build())
            .or_else(|e| {
                // Without the system's resolvers only IP literals and the hosts file work.
                tracing::warn!("cannot use the system's DNS configuration: {e}");
                let config = ResolverConfig::from_name_servers(Vec::new());
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build()
            })
            .map_err(|e| format!("cannot start a DNS resolver: {e}"))?;
        Ok(Resolver {
            dns,
            denied,
            targets: Bounded::new(CACHED_SERVERS),
        })
    }

    /// Whether `ip` (or the IPv4 address it embeds) is in a denied range.
    pub fn is_denied(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let denied = |ip: &IpAddr| self.denied.iter().any(|range| range.contains(ip));
        denied(&ip) || embedded.as_ref().is_some_and(denied)
    }

    /// Refuses a URL whose host is an address in a denied range: URL parsing turns
    /// numeric names (`127.1`, `2130706433`) into addresses the resolver never sees.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), ResolveError> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        match self.is_denied(ip) {
            true => Err(ResolveError(format!("{ip} is in a denied address range"))),
            false => Ok(()),
        }
    }

    /// The allowed addresses of `host` (or of the SRV target standing in for it).
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let target = self.targets.get(host);
        let name = target.as_deref().unwrap_or(host);
        let ips: Vec<IpAddr> = match name.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .dns
                .lookup_ip(name)
                .await
                .map_err(|e| ResolveError(format!("cannot resolve {name}: {e}")))?
                .iter()
                .collect(),
        };
        let allowed: Vec<IpAddr> = ips.into_iter().filter(|ip| !self.is_denied(*ip)).collect();
        if allowed.is_empty() {
            return Err(ResolveError(format!(
                "{name} resolves to no address federation may reach"
            )));
        }
        Ok(allowed)
    }

    /// The first SRV record of `name`, as (target, port).
    async fn srv(&self, name: &str) -> Option<(String, u16)> {
        let lookup = self.dns.srv_lookup(name).await.ok()?;
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
        let srv = records.first()?;
        let target = srv.target.to_utf8();
        Some((target.trim_end_matches('.').to_owned(), srv.port))
    }
}

/// The resolver shared between discovery and the HTTP client.
#[derive(Clone)]
pub struct SharedResolver(pub Arc<Resolver>);

impl std::ops::Deref for SharedResolver {
    type Target = Resolver;
    fn deref(&self) -> &Resolver {
        &self.0
    }
}

impl reqwest::dns::Resolve for SharedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = this.lookup(&host).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

/// Cached discovery results per server name.
pub struct Discovery {
    resolver: SharedResolver,
    cache: Bounded<Destination>,
}

/// A server name split into host and optional port; IPv6 literals come in brackets.
fn split(name: &str) -> (String, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (ip.to_owned(), port);
    }
    match name.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host.to_owned(), Some(port)),
            Err(_) => (name.to_owned(), None),
        },
        None => (name.to_owned(), None),
    }
}

fn url(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{port}"),
        _ => format!("https://{host}:{port}"),
    }
}

impl Discovery {
    pub fn new(resolver: SharedResolver) -> Discovery {
        Discovery {
            resolver,
            cache: Bounded::new(CACHED_SERVERS),
        }
    }

    /// Where to send requests for `server_name`.
    pub async fn resolve(&self, http: &reqwest::Client, server_name: &str) -> Destination {
        if let Some(destination) = self.cache.get(server_name) {
            return destination;
        }
        let (destination, ttl) = self.discover(http, server_name).await;
        self.cache
            .insert(server_name.to_owned(), destination.clone(), ttl);
        destination
    }

    async fn discover(&self, http: &reqwest::Client, server_name: &str) -> (Destination, Duration) {
        let (host, port) = split(server_name);
        // 1 and 2: an IP literal, or any name with an explicit port.
        if host.parse::<IpAddr>().is_ok() || port.is_some() {
            let port = port.unwrap_or(DEFAULT_PORT);
            return (
                Destination {
                    base_url: url(&host, port),
                },
                FOUND_TTL,
            );
        }
        // 3: a well-known delegation, itself resolved by 1, 2 or SRV.
        let delegated = self.well_known(http, &host).await;
        let (name, ttl) = match &delegated {
            Some(delegated) => (delegated.clone(), FOUND_TTL),
            None => (host.clone(), NOT_FOUND_TTL),
        };
        let (host, port) = split(&name);
        if host.parse::<IpAddr>().is_ok() || port.is_some() {
            let port = port.unwrap_or(DEFAULT_PORT);
            return (
                Destination {
                    base_url: url(&host, port),
                },
                ttl,
            );
        }
        // 4: SRV, the current name then the deprecated one; else port 8448.
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some((target, port)) = self.resolver.srv(&format!("{service}.{host}.")).await {
                self.resolver.targets.insert(host.clone(), target, ttl);
                return (
                    Destination {
                        base_url: url(&host, port),
                    },
                    ttl,
                );
            }
        }
        (
            Destination {
                base_url: url(&host, DEFAULT_PORT),
            },
            ttl,
        )
    }

    async fn well_known(&self, http: &reqwest::Client, host: &str) -> Option<String> {
        let request = http
            .get(format!("https://{host}/.well-known/matrix/server"))
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        self.resolver.check_url(request.url()).ok()?;
        let response = http.execute(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = crate::client::read_capped(response, crate::client::KEYS_LIMIT)
            .await
            .ok()?;
        let known: WellKnown = serde_json::from_slice(&body).ok()?;
        ruma::ServerName::parse(&known.server).ok()?;
        Some(known.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names_as_the_spec_writes_them() {
        assert_eq!(split("example.org"), ("example.org".into(), None));
        assert_eq!(
            split("example.org:8449"),
            ("example.org".into(), Some(8449))
        );
        assert_eq!(split("127.0.0.1:9"), ("127.0.0.1".into(), Some(9)));
        assert_eq!(split("[::1]:8448"), ("::1".into(), Some(8448)));
        assert_eq!(split("[::1]"), ("::1".into(), None));
        assert_eq!(url("::1", 8448), "https://[::1]:8448");
    }

    /// The default ranges refuse every address that reaches this host or its networks,
    /// however it is written, and let public addresses through.
    #[tokio::test]
    async fn default_ranges_refuse_internal_addresses_in_every_form() {
        let ranges = DEFAULT_DENIED_RANGES
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let resolver = Resolver::new(ranges).unwrap();
        for internal in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "169.254.169.254",
            "198.18.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(resolver.is_denied(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "8.8.8.8",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!resolver.is_denied(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn denied_ranges_cover_mapped_addresses() {
        let resolver = Resolver::new(vec!["127.0.0.0/8".parse().unwrap()]).unwrap();
        assert!(resolver.is_denied("127.0.0.1".parse().unwrap()));
        assert!(resolver.is_denied("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!resolver.is_denied("192.0.2.1".parse().unwrap()));
        assert!(resolver.lookup("127.0.0.1").await.is_err());
    }

    #[tokio::test]
    async fn literals_and_ports_need_no_lookup() {
        let resolver = SharedResolver(Arc::new(Resolver::new(Vec::new()).unwrap()));
        let discovery = Discovery::new(resolver);
        let http = reqwest::Client::new();
        let found = discovery.resolve(&http, "127.0.0.1:8449").await;
        assert_eq!(found.base_url, "https://127.0.0.1:8449");
        let found = discovery.resolve(&http, "[::1]").await;
        assert_eq!(found.base_url, "https://[::1]:8448");
        let found = discovery.resolve(&http, "localhost:9000").await;
        assert_eq!(found.base_url, "https://localhost:9000");
    }
}
