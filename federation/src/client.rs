//! The federation HTTP client: every request X-Matrix-signed with the server key, sent
//! where discovery says, to servers the policy allows, over TLS checked as configured.
//! It also checks the X-Matrix signature of inbound requests, with the origin's keys.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use ipnet::IpNet;
use kith_storage::Storage;
use ruma::api::federation::authentication::{ServerSignatures, XMatrix, XMatrixSigningInput};
use ruma::api::{
    IncomingResponseExt, OutgoingRequest, OutgoingRequestExt, path_builder::SinglePath,
};
use ruma::{OwnedServerName, ServerName};
use serde_json::Value;

use crate::ServerKeys;
use crate::cache::Bounded;
use crate::discovery::{Discovery, Resolver, SharedResolver};
use crate::remote_keys::RemoteKeys;

/// How kith federates, from `[federation]`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub verify_certificates: bool,
    /// Extra trusted roots, PEM.
    pub ca_pem: Option<Vec<u8>>,
    pub denied_ip_ranges: Vec<IpNet>,
    /// Empty: every server not denied.
    pub allowed_servers: Vec<String>,
    pub denied_servers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("federation with {0} is not allowed here")]
    Denied(String),
    /// A name no server can have on the internet: nothing is asked of it.
    #[error("{0} is not a server name one can reach")]
    InvalidName(String),
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    /// The peer answered with an error status; `errcode`/`error` from its body if any.
    #[error("{server} answered {status}: {errcode} {error}")]
    Remote {
        server: String,
        status: StatusCode,
        errcode: String,
        error: String,
    },
    #[error("{0} sent a response kith cannot read: {1}")]
    BadResponse(String, String),
    #[error("request could not be built: {0}")]
    Request(String),
}

impl FederationError {
    /// Whether the peer itself answered (as opposed to not being reachable at all).
    pub fn answered(&self) -> bool {
        matches!(
            self,
            FederationError::Remote { .. } | FederationError::BadResponse(..)
        )
    }
}

/// Why an inbound request was not accepted as coming from a server.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Missing or malformed X-Matrix authorization: {0}")]
    Malformed(String),
    #[error("The request is not addressed to this server")]
    WrongDestination,
    #[error("Federation with {0} is not allowed")]
    Denied(String),
    #[error("Cannot get the signing key {1} of {0}")]
    UnknownKey(String, String),
    #[error("Invalid X-Matrix signature")]
    BadSignature,
}

pub struct FederationClient {
    keys: Arc<ServerKeys>,
    http: reqwest::Client,
    resolver: SharedResolver,
    discovery: Discovery,
    settings: Settings,
    pub remote_keys: RemoteKeys,
    /// Per server, the software `/v1/version` named, and until when that is believed.
    software: Bounded<Option<String>>,
}

/// How long a peer's software name is believed (an unreachable peer is asked again sooner).
const SOFTWARE_TTL: Duration = Duration::from_secs(3600);
const SOFTWARE_RETRY: Duration = Duration::from_secs(60);

/// The most another server's JSON answer may hold (a room's whole state in a
/// `send_join` answer among them).
const JSON_LIMIT: usize = 32 << 20;
/// The most a server's key answer (and a `.well-known` file) may hold.
pub(crate) const KEYS_LIMIT: usize = 64 << 10;
/// How long a key answer may take, whole: requests wait on it (a small document; a server
/// that drips it must not hold them for the general deadline).
const KEYS_DEADLINE: Duration = Duration::from_secs(10);

/// Why a body was not read whole.
pub(crate) enum ReadError {
    /// Over the cap: the peer answered, with too much.
    TooLarge(usize),
    /// The connection failed or timed out on the way.
    Transport(String),
}

/// Reads a response's body as it streams in, refusing it as soon as it passes `limit`
/// bytes: a peer can neither make kith hold an endless (chunked) answer nor announce a
/// small one and send more.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(ReadError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        (response.chunk().await).map_err(|e| ReadError::Transport(e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An HTTP client for other requests to addresses users choose (push gateways): the same
/// refusal of denied address ranges as federation (by name when resolving, and by
/// [`GuardedHttp::check`] for URLs naming an address), no redirects, bounded times, and
/// certificates checked.
pub struct GuardedHttp {
    pub http: reqwest::Client,
    resolver: SharedResolver,
}

impl GuardedHttp {
    pub fn new(denied: Vec<ipnet::IpNet>) -> Result<GuardedHttp, String> {
        let resolver = SharedResolver(Arc::new(Resolver::new(denied)?));
        let http = reqwest::Client::builder()
            .dns_resolver(resolver.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("kith/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(GuardedHttp { http, resolver })
    }

    /// Refuses a URL naming an address in a denied range (the resolver never sees those).
    pub fn check(&self, url: &reqwest::Url) -> Result<(), String> {
        self.resolver.check_url(url).map_err(|e| e.to_string())
    }
}

impl FederationClient {
    pub fn new(
        storage: Storage,
        keys: Arc<ServerKeys>,
        settings: Settings,
    ) -> Result<FederationClient, String> {
        let resolver = SharedResolver(Arc::new(Resolver::new(settings.denied_ip_ranges.clone())?));
        let mut builder = reqwest::Client::builder()
            .dns_resolver(resolver.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("kith/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(!settings.verify_certificates);
        if let Some(pem) = &settings.ca_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("federation.ca_file is not PEM: {e}"))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        let discovery = Discovery::new(resolver.clone());
        let remote_keys = RemoteKeys::new(storage, Arc::clone(&keys));
        Ok(FederationClient {
            keys,
            http,
            resolver,
            discovery,
            settings,
            remote_keys,
            software: Bounded::new(crate::discovery::CACHED_SERVERS),
        })
    }

    pub fn server_name(&self) -> &str {
        self.keys.server_name()
    }

    /// Whether the server lists let us talk to `server`.
    pub fn allows(&self, server: &str) -> bool {
        // A listed name covers every port of its host.
        let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
        let listed = |list: &[String]| {
            list.iter()
                .any(|s| s.eq_ignore_ascii_case(server) || s.eq_ignore_ascii_case(host))
        };
        server != self.server_name()
            && !listed(&self.settings.denied_servers)
            && (self.settings.allowed_servers.is_empty() || listed(&self.settings.allowed_servers))
    }

    /// The name of the software `server` runs (`GET /_matrix/federation/v1/version`),
    /// remembered for an hour; `None` if it cannot be asked.
    pub async fn software(&self, server: &ServerName) -> Option<String> {
        if let Some(name) = self.software.get(server.as_str()) {
            return name;
        }
        let request = ruma::api::federation::discovery::get_server_version::v1::Request::new();
        let name = self
            .send_unsigned(server, request)
            .await
            .ok()
            .and_then(|answer| answer.server.and_then(|s| s.name));
        let ttl = if name.is_some() {
            SOFTWARE_TTL
        } else {
            SOFTWARE_RETRY
        };
        self.software.insert(server.to_string(), name.clone(), ttl);
        name
    }

    async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<
                Authentication = ruma::api::auth_scheme::NoAuthentication,
                PathBuilder = SinglePath,
            >,
    {
        let server = destination.as_str();
        let base = self.base_url(server).await?;
        let request: http::Request<Vec<u8>> = request
            .try_into_http_request(&base, (), ())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        self.exchange::<R>(server, request).await
    }

    /// Sends a ruma federation request, signed, and parses the answer.
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let server = destination.as_str();
        let base = self.base_url(server).await?;
        let input = XMatrixSigningInput::new(
            self.own_name()?,
            destination.to_owned(),
            self.keys.key_pair(),
        );
        let request: http::Request<Vec<u8>> = request
            .try_into_http_request(&base, input, ())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        self.exchange::<R>(server, request).await
    }

    /// Sends a built ruma request and parses its answer as the request's response type.
    async fn exchange<R: OutgoingRequest>(
        &self,
        server: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<R::IncomingResponse, FederationError> {
        let (status, body) = self.execute(server, request).await?;
        let bad = |e: String| FederationError::BadResponse(server.to_owned(), e);
        let response = http::Response::builder()
            .status(status)
            .body(body.as_slice())
            .map_err(|e| bad(e.to_string()))?;
        R::IncomingResponse::try_from_http_response(response).map_err(|e| bad(e.to_string()))
    }

    /// Sends a signed JSON request to a path of kith's own (or any) federation API.
    pub async fn send_json(
        &self,
        destination: &ServerName,
        method: http::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, FederationError> {
        let server = destination.as_str();
        let base = self.base_url(server).await?;
        let bytes = match body {
            Some(body) => {
                serde_json::to_vec(body).map_err(|e| FederationError::Request(e.to_string()))?
            }
            None => Vec::new(),
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{base}{path_and_query}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .map_err(|e| FederationError::Request(e.to_string()))?;
        self.sign(&mut request, destination)?;
        let (_, body) = self.execute(server, request).await?;
        if body.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&body)
            .map_err(|e| FederationError::BadResponse(server.to_owned(), e.to_string()))
    }

    /// An unsigned GET (for `/_matrix/key/v2/server`).
    pub(crate) async fn get_unsigned(
        &self,
        server: &str,
        path: &str,
    ) -> Result<Vec<u8>, FederationError> {
        let base = self.base_url(server).await?;
        let request = http::Request::builder()
            .uri(format!("{base}{path}"))
            .body(Vec::new())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let fetched = tokio::time::timeout(
            KEYS_DEADLINE,
            self.execute_full(server, request, KEYS_LIMIT),
        );
        match fetched.await {
            Ok(answer) => Ok(answer?.2),
            Err(_) => Err(FederationError::Unreachable(
                server.to_owned(),
                format!("no whole answer within {KEYS_DEADLINE:?}"),
            )),
        }
    }

    /// Adds this server's X-Matrix `Authorization` for `destination` to a request.
    fn sign(
        &self,
        request: &mut http::Request<Vec<u8>>,
        destination: &ServerName,
    ) -> Result<(), FederationError> {
        let input = XMatrixSigningInput::new(
            self.own_name()?,
            destination.to_owned(),
            self.keys.key_pair(),
        );
        let authorization = XMatrix::sign_http_request(request, input)
            .map_err(|e| FederationError::Request(e.to_string()))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, (&authorization).into());
        Ok(())
    }

    fn own_name(&self) -> Result<OwnedServerName, FederationError> {
        ServerName::parse(self.server_name()).map_err(|e| FederationError::Request(e.to_string()))
    }

    async fn base_url(&self, server: &str) -> Result<String, FederationError> {
        if !reachable_name(server) {
            return Err(FederationError::InvalidName(server.to_owned()));
        }
        if !self.allows(server) {
            return Err(FederationError::Denied(server.to_owned()));
        }
        Ok(self.discovery.resolve(&self.http, server).await.base_url)
    }

    async fn execute(
        &self,
        server: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), FederationError> {
        let (status, _, body) = self.execute_full(server, request, JSON_LIMIT).await?;
        Ok((status, body))
    }

    /// A signed `GET` whose answer is not JSON (media): its `Content-Type` and body, at
    /// most `limit` bytes (a larger one is an error).
    pub async fn get_raw(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        limit: usize,
    ) -> Result<(Option<String>, Vec<u8>), FederationError> {
        let server = destination.as_str();
        let base = self.base_url(server).await?;
        let mut request = http::Request::builder()
            .uri(format!("{base}{path_and_query}"))
            .body(Vec::new())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        self.sign(&mut request, destination)?;
        let (_, headers, body) = self.execute_full(server, request, limit).await?;
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((content_type, body))
    }

    async fn execute_full(
        &self,
        server: &str,
        request: http::Request<Vec<u8>>,
        limit: usize,
    ) -> Result<(StatusCode, http::HeaderMap, Vec<u8>), FederationError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            FederationError::Unreachable(server.to_owned(), e.to_string())
        };
        let request = reqwest::Request::try_from(request).map_err(|e| unreachable(&e))?;
        // The resolver vets names; addresses (however written) never reach it.
        self.resolver
            .check_url(request.url())
            .map_err(|e| unreachable(&e))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response, limit).await.map_err(|e| match e {
            ReadError::TooLarge(limit) => FederationError::BadResponse(
                server.to_owned(),
                format!("answer over {limit} bytes"),
            ),
            ReadError::Transport(e) => unreachable(&e),
        })?;
        if status.is_success() {
            return Ok((status, headers, body));
        }
        let error: Value = serde_json::from_slice(&body).unwrap_or_default();
        let field = |name: &str| {
            error
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        Err(FederationError::Remote {
            server: server.to_owned(),
            status,
            errcode: field("errcode"),
            error: field("error"),
        })
    }

    /// Checks an inbound request's X-Matrix header and returns the origin it proves.
    pub async fn authenticate(
        &self,
        request: &http::Request<&[u8]>,
    ) -> Result<OwnedServerName, AuthError> {
        let header = XMatrix::extract_from_http_headers(request.headers())
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        let own = ServerName::parse(self.server_name())
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        if header.destination.as_deref().is_some_and(|d| d != own) {
            return Err(AuthError::WrongDestination);
        }
        let origin = header.origin.clone();
        // Cheap refusals first, so that nothing fetching a key can be had for them.
        if origin == own {
            return Err(AuthError::Malformed("the origin is this server".into()));
        }
        if header.key.algorithm() != ruma::SigningKeyAlgorithm::Ed25519 {
            return Err(AuthError::Malformed(format!("unknown key {}", header.key)));
        }
        if !self.allows(origin.as_str()) {
            return Err(AuthError::Denied(origin.to_string()));
        }
        let key_map = self
            .remote_keys
            .key_map(self, origin.as_str(), &[header.key.to_string()], None)
            .await
            .map_err(|e| {
                // Why the key could not be had stays in our log: telling the caller would
                // make key fetches a probe of what this server can reach.
                tracing::info!(%origin, "cannot get the key of a federation request: {e}");
                AuthError::UnknownKey(origin.to_string(), header.key.to_string())
            })?;
        header
            .verify_http_request(request, &own, &key_map)
            .map_err(|_| AuthError::BadSignature)?;
        Ok(origin)
    }
}

/// Whether `server` is a name that could be reached: a valid server name whose host is an
/// IP literal, or a DNS name of well-formed labels whose last is not all digits (no
/// top-level domain is, RFC 3696 2: `0` or `123` would only be mistaken for addresses).
pub fn reachable_name(server: &str) -> bool {
    let Ok(name) = ServerName::parse(server) else {
        return false;
    };
    if name.port() == Some(0) {
        return false;
    }
    let host = name.host();
    if host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric = |l: &str| l.bytes().all(|b| b.is_ascii_digit());
    labels.iter().all(label_ok) && labels.last().is_some_and(|l| !numeric(l))
}

#[cfg(test)]
mod name_tests {
    #[test]
    fn names_that_could_be_servers() {
        for good in [
            "matrix.org",
            "kith.test:8448",
            "localhost",
            "127.0.0.1:8448",
            "[::1]:8448",
        ] {
            assert!(super::reachable_name(good), "{good}");
        }
        for bad in [
            "0",
            "123",
            "1.2.3",
            "256.1.1.1",
            "a..b",
            ".a",
            "-",
            "",
            "x y",
            "kith.test:0",
        ] {
            assert!(!super::reachable_name(bad), "{bad}");
        }
    }
}
