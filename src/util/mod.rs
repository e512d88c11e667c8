//! Small helpers shared by the services.

mod in_flight;
mod ratelimit;

pub use in_flight::{InFlight, InFlightGuard};
pub use ratelimit::RateLimiter;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use rand::distr::Alphanumeric;
use ruma::{ServerName, UserId};
use sha2::{Digest, Sha256};

pub use kith_federation::{KeyedLocks, now_ms};

/// The server part of a user ID, as ruma parses it (`None` if it is not a user ID).
pub fn server_of(user_id: &str) -> Option<&ServerName> {
    <&UserId>::try_from(user_id).ok().map(UserId::server_name)
}

/// A random string of ASCII letters and digits from the OS-seeded CSPRNG.
pub fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random device ID in Synapse's style: ten upper-case letters.
pub fn random_device_id() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| rng.random_range(b'A'..=b'Z') as char)
        .collect()
}

/// SHA-256, URL-safe unpadded base64: how secrets are stored.
pub fn hash_secret(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// A fixed set of async mutexes, picked by hashing a key: per-key mutual exclusion (for a
/// read-check-write on one user's records) without a lock per key or one global lock.
pub struct StripedLocks {
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl StripedLocks {
    pub fn new(stripes: usize) -> StripedLocks {
        StripedLocks {
            locks: (0..stripes.max(1))
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn stripe(&self, key: &str) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        (hash % self.locks.len() as u64) as usize
    }

    pub async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks[self.stripe(key)].lock().await
    }

    /// Both keys' locks (one, if they share a stripe), always taken in stripe order so two
    /// callers locking the same pair either way round cannot deadlock.
    pub async fn lock_both(&self, a: &str, b: &str) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        self.lock_all(&[a, b]).await
    }

    /// Every key's lock, each stripe once, in stripe order (see [`StripedLocks::lock_both`]).
    pub async fn lock_all(&self, keys: &[&str]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.iter().map(|k| self.stripe(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.locks[stripe].lock().await);
        }
        guards
    }
}

/// The key a client address is rate-limited under: an IPv4 address, or an IPv6 address's
/// /64 (one host usually holds a whole /64, and would otherwise have 2^64 allowances).
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let segments = v6.segments();
            let prefix = std::net::Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            );
            format!("{prefix}/64")
        }
        v4 => v4.to_string(),
    }
}

/// Offset tokens (`o<n>`) for lists computed whole on each request (search results, the
/// room directory, a space's rooms): the offset a token names, if it is one.
pub fn parse_offset(token: Option<&str>) -> Option<usize> {
    match token {
        None => Some(0),
        Some(token) => token.strip_prefix('o')?.parse().ok(),
    }
}

/// The token of the page after the one at `offset` of `limit` items, if `total` goes on.
pub fn next_offset(offset: usize, limit: usize, total: usize) -> Option<String> {
    let next = offset.saturating_add(limit);
    (next < total).then(|| format!("o{next}"))
}
