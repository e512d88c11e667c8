//! Password hashing: argon2id with the crate's defaults, on the blocking pool so a burst of
//! logins never stalls the async runtime, and at most one hash per core at a time, so a flood
//! of requests queues instead of taking 19 MiB of memory each.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::services::error::{Error, ErrorKind, Result};

/// Longest password accepted; argon2 takes any length, but a huge one is only a DoS vector.
pub const MAX_PASSWORD_LEN: usize = 512;

pub async fn hash(password: &str) -> Result<String> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Error::new(
            ErrorKind::WeakPassword,
            "Password must be 1 to 512 bytes",
        ));
    }
    let password = password.to_owned();
    let _permit = HASHING.acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)?
}

/// Checks `password` against a stored hash; `None` (no such user) still spends the same work,
/// so response times do not tell which user names exist.
pub async fn verify(password: &str, stored: Option<String>) -> Result<bool> {
    if password.len() > MAX_PASSWORD_LEN {
        return Ok(false);
    }
    let password = password.to_owned();
    let _permit = HASHING.acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(move || {
        let stored = stored.unwrap_or_else(|| DECOY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(Error::internal)
}

/// One permit per core: argon2 is CPU- and memory-bound, more at once only queues in RAM.
static HASHING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::sync::Semaphore::new(cores)
});

/// The hash of a random string nobody knows, made with the same parameters as real ones.
static DECOY_HASH: LazyLock<String> = LazyLock::new(|| {
    let secret = crate::util::random_string(32);
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_decoys_fail() {
        let hash = super::hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            super::verify("correct horse", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!super::verify("wrong", Some(hash)).await.unwrap());
        assert!(!super::verify("anything", None).await.unwrap());
        assert!(super::hash("").await.is_err());
    }
}
