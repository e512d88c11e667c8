//! An OpenID Connect provider as kith's users sign in with it: its discovery document, the
//! authorization request (code flow with PKCE S256, `state` and `nonce`), the code exchange,
//! and the ID token checked against the provider's JWKS (signature, issuer, audience,
//! expiry, nonce). The JWKS is cached and fetched again when a token names a key it lacks.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::config::SsoProvider;

/// How long the discovery document is trusted before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(24 * 3600);
/// The JWKS is fetched again for an unknown key at most this often (a forged token naming
/// made-up keys must not make kith hammer the provider).
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(30);

/// Why a sign-in with the provider failed.
#[derive(Debug)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense.
    Provider(String),
    /// What the provider sent does not prove who the user is.
    Refused(String),
}

impl std::fmt::Display for OidcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OidcError::Provider(m) => write!(f, "the identity provider failed: {m}"),
            OidcError::Refused(m) => write!(f, "the sign-in was refused: {m}"),
        }
    }
}

fn provider_error(e: impl std::fmt::Display) -> OidcError {
    OidcError::Provider(e.to_string())
}

/// The parts of the discovery document kith uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// One authorization request's secrets, kept until its callback.
pub struct Authorization {
    pub url: String,
    pub nonce: String,
    pub code_verifier: String,
}

pub struct OidcProvider {
    pub config: SsoProvider,
    http: reqwest::Client,
    metadata: RwLock<Option<(Metadata, Instant)>>,
    jwks: RwLock<Option<(JwkSet, Instant)>>,
}

/// The claims of a verified ID token.
pub type Claims = Map<String, Value>;

impl OidcProvider {
    pub fn new(config: SsoProvider) -> Result<OidcProvider, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // The token endpoint answers directly; a redirect there is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kith/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OidcProvider {
            config,
            http,
            metadata: RwLock::new(None),
            jwks: RwLock::new(None),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let response = self.http.get(url).send().await.map_err(provider_error)?;
        if !response.status().is_success() {
            return Err(OidcError::Provider(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        response.json().await.map_err(provider_error)
    }

    /// The discovery document, from cache or from `<issuer>/.well-known/openid-configuration`.
    pub async fn metadata(&self) -> Result<Metadata, OidcError> {
        if let Some((metadata, fetched)) = &*self.metadata.read().await
            && fetched.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let metadata: Metadata = self.get_json(&url).await?;
        // The document must be the configured issuer's own (OIDC Discovery §4.3).
        if metadata.issuer.trim_end_matches('/') != issuer {
            return Err(OidcError::Provider(format!(
                "the discovery document names issuer {:?}, not {issuer:?}",
                metadata.issuer
            )));
        }
        *self.metadata.write().await = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// Where to send the browser, and the secrets its callback must match.
    pub async fn authorize(
        &self,
        redirect_uri: &str,
        state: &str,
    ) -> Result<Authorization, OidcError> {
        let metadata = self.metadata().await?;
        let nonce = crate::util::random_string(32);
        let code_verifier = crate::util::random_string(64);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
        let mut url = url::Url::parse(&metadata.authorization_endpoint).map_err(provider_error)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(Authorization {
            url: url.to_string(),
            nonce,
            code_verifier,
        })
    }

    /// Exchanges the code for tokens and returns the verified ID token's claims.
    pub async fn finish(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<Claims, OidcError> {
        let metadata = self.metadata().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let methods = &metadata.token_endpoint_auth_methods_supported;
        // client_secret_basic is the default (and what the spec says to assume).
        let post = !methods.is_empty()
            && !methods.iter().any(|m| m == "client_secret_basic")
            && methods.iter().any(|m| m == "client_secret_post");
        let mut request = self.http.post(&metadata.token_endpoint);
        if post {
            form.push(("client_id", &self.config.client_id));
            form.push(("client_secret", &self.config.client_secret));
        } else {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            let (id, secret): (String, String) = (
                encode(&self.config.client_id),
                encode(&self.config.client_secret),
            );
            request = request.basic_auth(id, Some(secret));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let response = request
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(provider_error)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(provider_error)?;
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("unknown error");
            return Err(OidcError::Refused(format!(
                "the token endpoint answered {status}: {error}"
            )));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| OidcError::Provider("no id_token in the token response".into()))?;
        self.verify(id_token, &metadata.issuer, nonce).await
    }

    /// Verifies an ID token with the provider's keys, fetching them again once if the
    /// token names a key not in the cached set.
    async fn verify(&self, id_token: &str, issuer: &str, nonce: &str) -> Result<Claims, OidcError> {
        let kid = jsonwebtoken::decode_header(id_token)
            .map_err(|e| OidcError::Refused(format!("malformed ID token: {e}")))?
            .kid;
        let cached = self.jwks.read().await.clone();
        let fresh = match (&cached, &kid) {
            (Some((set, _)), Some(kid)) if set.find(kid).is_some() => false,
            (Some((_, fetched)), _) if fetched.elapsed() < JWKS_REFETCH_AFTER => false,
            (Some(_), None) => false,
            _ => true,
        };
        let set = match (fresh, cached) {
            (false, Some((set, _))) => set,
            _ => {
                let metadata = self.metadata().await?;
                let set: JwkSet = self.get_json(&metadata.jwks_uri).await?;
                *self.jwks.write().await = Some((set.clone(), Instant::now()));
                set
            }
        };
        verify_id_token(id_token, &set, issuer, &self.config.client_id, nonce)
    }
}

/// Checks an ID token: signed by a key of `keys` with an asymmetric algorithm, issued by
/// `issuer` for `client_id`, not expired, and carrying the `nonce` kith sent.
pub fn verify_id_token(
    id_token: &str,
    keys: &JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<Claims, OidcError> {
    let refused = |m: String| OidcError::Refused(m);
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|e| refused(format!("malformed ID token: {e}")))?;
    // A shared-secret algorithm would let anyone knowing the key set forge tokens.
    if header.alg.family() == AlgorithmFamily::Hmac {
        return Err(refused(format!(
            "algorithm {:?} is not accepted",
            header.alg
        )));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| refused("the ID token is signed with an unknown key".into()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| refused(format!("unusable key: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 30;
    let claims = jsonwebtoken::decode::<Claims>(id_token, &key, &validation)
        .map_err(|e| refused(format!("invalid ID token: {e}")))?
        .claims;
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return Err(refused("the ID token's nonce does not match".into()));
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(refused("the ID token has no subject".into()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use ruma::signatures::Ed25519KeyPair;
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://id.example.org";

    /// A signing key and its JWK set entry named `kid`.
    fn key(kid: &str) -> (EncodingKey, JwkSet) {
        let der = Ed25519KeyPair::generate().to_vec();
        let pair = Ed25519KeyPair::from_der(&der, kid.into()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key());
        let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA" });
        let set = serde_json::from_value(json!({ "keys": [jwk] })).unwrap();
        (EncodingKey::from_ed_der(&der), set)
    }

    fn token(key: &EncodingKey, kid: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn claims() -> Value {
        let now = crate::util::now_ms() / 1000;
        json!({
            "iss": ISSUER, "aud": "kith", "sub": "alice", "nonce": "n0nce",
            "iat": now, "exp": now + 300, "preferred_username": "alice",
        })
    }

    fn check(token: &str, keys: &JwkSet) -> Result<Claims, OidcError> {
        verify_id_token(token, keys, ISSUER, "kith", "n0nce")
    }

    #[test]
    fn a_good_token_verifies_and_every_wrong_one_is_refused() {
        let (signing, keys) = key("k1");
        let good = check(&token(&signing, "k1", claims()), &keys).expect("good token");
        assert_eq!(good["sub"], "alice");

        let (other, _) = key("k1");
        let forged = token(&other, "k1", claims());
        let mut tampered = token(&signing, "k1", claims());
        tampered.replace_range(tampered.len() - 4.., "AAAA");
        let with = |field: &str, value: Value| {
            let mut c = claims();
            c[field] = value;
            token(&signing, "k1", c)
        };
        let expired = with("exp", json!(crate::util::now_ms() / 1000 - 3600));
        let cases = [
            ("wrong signature", forged),
            ("tampered signature", tampered),
            ("unknown key", token(&signing, "k2", claims())),
            ("wrong issuer", with("iss", json!("https://evil.example"))),
            ("wrong audience", with("aud", json!("someone-else"))),
            ("wrong nonce", with("nonce", json!("replayed"))),
            ("no nonce", with("nonce", Value::Null)),
            ("expired", expired),
            ("no subject", with("sub", Value::Null)),
        ];
        for (what, token) in cases {
            let result = check(&token, &keys);
            assert!(
                matches!(result, Err(OidcError::Refused(_))),
                "{what}: {result:?}"
            );
        }
        // A shared-secret token is refused whatever it says.
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"known"),
        )
        .unwrap();
        assert!(matches!(check(&hmac, &keys), Err(OidcError::Refused(_))));
    }
}
