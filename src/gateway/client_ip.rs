//! Who the client is, for per-address rate limits: the TCP peer, unless the peer is one
//! of `[listen] trusted_proxies` — then the address that proxy (and any trusted proxies
//! before it) says it forwarded for, read from the one header `[listen] forwarded_header`
//! names (`X-Forwarded-For` or `Forwarded`; never the other, which the client may have
//! written itself). From any other peer the header is ignored, so a client cannot name
//! itself someone else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;
use http::request::Parts;
use ipnet::IpNet;

use crate::services::AppState;

/// The client's address, as [`resolve`] found it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

#[derive(Clone)]
pub struct TrustedProxies {
    ranges: Arc<Vec<IpNet>>,
    /// `Forwarded` (RFC 7239) rather than `X-Forwarded-For`.
    rfc7239: bool,
}

impl TrustedProxies {
    /// The configured ranges and header (checked when the config was loaded).
    pub fn new(ranges: &[String], header: &str) -> TrustedProxies {
        TrustedProxies {
            ranges: Arc::new(ranges.iter().filter_map(|r| parse_range(r)).collect()),
            rfc7239: header.eq_ignore_ascii_case("forwarded"),
        }
    }

    fn trust(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(&ip))
    }

    /// The client behind `peer`, given the forwarding headers.
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trust(peer) {
            return peer;
        }
        let hops = forwarded_for(headers, self.rfc7239);
        // From the nearest hop back: the first address not itself a trusted proxy is the
        // client; what lies before it is the client's to write and not believed.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = *ip;
                    if !self.trust(*ip) {
                        break;
                    }
                }
                // A hop the proxy could not name: the client is unknown past here.
                None => break,
            }
        }
        client
    }
}

/// A CIDR, or a bare address as a range of one.
pub fn parse_range(range: &str) -> Option<IpNet> {
    range
        .parse()
        .ok()
        .or_else(|| range.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The addresses a request passed through, farthest first: `X-Forwarded-For`'s, or
/// `Forwarded`'s `for=` (RFC 7239). `None` for a hop that is not an address
/// (`unknown`, an obfuscated name).
fn forwarded_for(headers: &HeaderMap, rfc7239: bool) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    if !rfc7239 {
        return values("x-forwarded-for")
            .into_iter()
            .map(parse_hop)
            .collect();
    }
    values("forwarded")
        .into_iter()
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value.trim_matches('"')))
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|ip: IpAddr| ip.to_canonical())
}

/// Middleware: finds the client's address once, for every extractor after it.
pub async fn resolve(
    State(proxies): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| {
            info.0.ip().to_canonical()
        });
    let client = proxies.client(peer, request.headers());
    request.extensions_mut().insert(ClientIp(client));
    next.run(request).await
}

impl ClientIp {
    pub fn of(parts: &Parts) -> IpAddr {
        parts
            .extensions
            .get::<ClientIp>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0)
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(ClientIp::of(parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client, reading `Forwarded` when the test sends one.
    fn client(trusted: &[&str], peer: &str, headers: &[(&str, &str)]) -> String {
        let rfc7239 = headers.iter().any(|(name, _)| *name == "forwarded");
        let header = if rfc7239 {
            "forwarded"
        } else {
            "x-forwarded-for"
        };
        let proxies = TrustedProxies::new(
            &trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            header,
        );
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        proxies.client(peer.parse().unwrap(), &map).to_string()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let xff = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client(&[], "127.0.0.1", &xff), "127.0.0.1");
        assert_eq!(client(&["127.0.0.0/8"], "127.0.0.1", &xff), "203.0.113.9");
        assert_eq!(
            client(&["127.0.0.0/8"], "198.51.100.7", &xff),
            "198.51.100.7"
        );
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted = ["127.0.0.1", "10.0.0.0/8"];
        // What the client wrote itself (the first entry) is not believed.
        let chain = [("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")];
        assert_eq!(client(&trusted, "127.0.0.1", &chain), "203.0.113.9");
        let split = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9:5555"),
        ];
        assert_eq!(client(&trusted, "127.0.0.1", &split), "203.0.113.9");
        let unknown = [("x-forwarded-for", "203.0.113.9, unknown")];
        assert_eq!(client(&trusted, "127.0.0.1", &unknown), "127.0.0.1");
        let all_trusted = [("x-forwarded-for", "10.0.0.3, 10.0.0.2")];
        assert_eq!(client(&trusted, "127.0.0.1", &all_trusted), "10.0.0.3");
    }

    #[test]
    fn the_configured_header_alone_is_read() {
        let trusted = ["::1"];
        let forwarded = [(
            "forwarded",
            r#"for=192.0.2.60;proto=https, For="[2001:db8:cafe::17]:4711""#,
        )];
        assert_eq!(client(&trusted, "::1", &forwarded), "2001:db8:cafe::17");
        // Reading Forwarded, an X-Forwarded-For the client wrote is not looked at.
        let both = [
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=192.0.2.60"),
        ];
        assert_eq!(client(&trusted, "::1", &both), "192.0.2.60");
        let mapped = [("x-forwarded-for", "::ffff:192.0.2.60")];
        assert_eq!(client(&trusted, "::1", &mapped), "192.0.2.60");
    }
}
