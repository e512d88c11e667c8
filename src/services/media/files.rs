//! Content-addressed files: `<media dir>/<first two hex digits>/<SHA-256 hex>`. Written to a
//! temporary name, synced, then renamed, so a file under its name is always whole.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::services::error::{Error, Result};
use crate::util::random_string;

fn path_of(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(&sha256[..2]).join(sha256)
}

/// Stores `bytes` (once, however often uploaded); their SHA-256.
pub async fn store(dir: &Path, bytes: Vec<u8>) -> Result<String> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        let path = path_of(&dir, &sha256);
        if path.exists() {
            return Ok(sha256);
        }
        let parent = path.parent().ok_or_else(|| Error::internal("media path"))?;
        std::fs::create_dir_all(parent).map_err(Error::internal)?;
        let temporary = parent.join(format!(".{}.tmp", random_string(12)));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            // The rename itself is durable once the directory is synced.
            std::fs::File::open(parent)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            Error::internal(format!("cannot store media: {e}"))
        })?;
        Ok(sha256)
    })
    .await
    .map_err(Error::internal)?
}

/// Deletes the file stored under `sha256` (nothing if there is none); its size.
pub fn remove(dir: &Path, sha256: &str) -> std::io::Result<u64> {
    let path = path_of(dir, sha256);
    let size = match std::fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    std::fs::remove_file(&path)?;
    Ok(size)
}

/// The bytes stored under `sha256`.
pub async fn load(dir: &Path, sha256: &str) -> Result<Vec<u8>> {
    if sha256.len() < 2 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::internal("bad media hash"));
    }
    let path = path_of(dir, sha256);
    tokio::fs::read(&path).await.map_err(|e| match e.kind() {
        // Deleted (by an admin, or the cache's retention) since its record was read.
        std::io::ErrorKind::NotFound => Error::not_found("Not found"),
        _ => Error::internal(format!("cannot read media {}: {e}", path.display())),
    })
}
