//! Media (for avatars and attachments): files on disk under the media directory, named by
//! their SHA-256 (the same bytes uploaded twice are kept once), metadata in RocksDB. A file
//! is written and synced before the metadata that names it, so a crash leaves at most an
//! unnamed file, never a name without its file.

mod files;
mod removal;
mod thumbnail;

use std::path::PathBuf;
use std::sync::Arc;

use http::StatusCode;
use kith_federation::{FederationClient, FederationError};
use kith_storage::{Storage, catalog};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::services::error::{Error, ErrorKind, Result};
use crate::util::{KeyedLocks, RateLimiter, StripedLocks, now_ms, random_string};

pub use thumbnail::Fit;

/// How long a media ID made by `/create` waits for its upload.
const PENDING_TTL_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The file's SHA-256 (hex), or `None` while a `/create`d ID awaits its upload.
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub uploader: String,
    pub created_ts: u64,
}

/// A file to serve.
pub struct Content {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

pub struct Media {
    storage: Storage,
    dir: PathBuf,
    server_name: String,
    pub max_upload_size: usize,
    /// Bounds the memory and CPU thumbnails take.
    decodes: tokio::sync::Semaphore,
    /// Per media ID, across the check-and-write of a reserved ID's upload.
    reserved_locks: StripedLocks,
    /// Other servers' media is fetched through it, once, then kept here.
    federation: Option<Arc<FederationClient>>,
    /// Per (server, media ID) being fetched, a gate: concurrent requests for one file wait
    /// for the first fetch instead of each fetching it, and no other file waits with them
    /// (a slow server delays only its own files).
    fetching: KeyedLocks,
    /// Taken for reading from storing a file until the record naming it commits, and for
    /// writing while a purge finds and deletes the files nothing names: so a file stored
    /// again (same bytes, same name) is never deleted under its new record.
    files_gate: tokio::sync::RwLock<()>,
    /// Uploads and reserved IDs per user (`[rate_limits] uploads`).
    upload_limiter: RateLimiter,
    /// Other servers' files fetched per user (`[rate_limits] remote_media`).
    remote_fetch_limiter: RateLimiter,
}

/// Whether a media ID is of the form the spec gives them (`[A-Za-z0-9_-]`, at most 255
/// bytes): nothing else is asked of another server, so no ID can reach other paths there.
fn well_formed(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn not_found() -> Error {
    Error::not_found("Media not found")
}

impl Media {
    pub fn new(
        storage: Storage,
        config: &Config,
        federation: Option<Arc<FederationClient>>,
    ) -> Result<Media, String> {
        let dir = config.media_path();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create media directory {}: {e}", dir.display()))?;
        Ok(Media {
            storage,
            dir,
            server_name: config.server_name.clone(),
            max_upload_size: config.media.max_upload_size,
            decodes: tokio::sync::Semaphore::new(thumbnail::DECODES_AT_ONCE),
            reserved_locks: StripedLocks::new(16),
            federation,
            fetching: Default::default(),
            files_gate: Default::default(),
            upload_limiter: config.rate_limits.uploads.limiter(),
            remote_fetch_limiter: config.rate_limits.remote_media.limiter(),
        })
    }

    /// Holds off purges and deletions (not uploads) while the guard lives: a backup copies
    /// every file its database checkpoint names.
    pub async fn hold_files(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.files_gate.read().await
    }

    pub fn record(&self, server: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        Ok(self
            .storage
            .get(&catalog::MEDIAID_MEDIA, &(server, media_id))?)
    }

    /// Fetches another server's media for `user` (`/_matrix/federation/v1/media/download`)
    /// the first time anyone asks for it, and keeps it like an upload; nothing to do for
    /// this server's media and what was fetched before. Only the authenticated media
    /// endpoints fetch: what the legacy ones serve ([`Media::content`], [`Media::thumbnail`]
    /// alone) is this server's and what it already has, as Synapse since MSC3916.
    pub async fn fetch_for(&self, user: &str, server: &str, media_id: &str) -> Result<()> {
        if server == self.server_name || self.record(server, media_id)?.is_some() {
            return Ok(());
        }
        if !well_formed(media_id) {
            return Err(not_found());
        }
        let _first = self.fetching.lock(&format!("{server}/{media_id}")).await;
        // Fetched meanwhile by whoever asked first: not counted against this user.
        if self.record(server, media_id)?.is_some() {
            return Ok(());
        }
        (self.remote_fetch_limiter)
            .take(user)
            .map_err(Error::limit_exceeded)?;
        self.fetch_unlocked(server, media_id).await
    }

    /// The fetch itself, through the file's gate.
    async fn fetch_unlocked(&self, server: &str, media_id: &str) -> Result<()> {
        let client = self.federation.as_ref().ok_or_else(not_found)?;
        let origin = ruma::ServerName::parse(server).map_err(|_| not_found())?;
        let path = format!("/_matrix/federation/v1/media/download/{media_id}");
        // Room for the file and the multipart framing around it.
        let limit = self.max_upload_size + 64 * 1024;
        let (content_type, body) =
            client
                .get_raw(&origin, &path, limit)
                .await
                .map_err(|e| match e {
                    FederationError::Remote { status, .. } if status == StatusCode::NOT_FOUND => {
                        not_found()
                    }
                    other => crate::services::error::remote_error(other),
                })?;
        let (file_type, bytes) = content_type
            .as_deref()
            .and_then(|kind| kith_federation::media::decode_multipart(kind, &body))
            .ok_or_else(|| Error::bad_gateway(format!("{server} sent no file")))?;
        let size = bytes.len() as u64;
        // Held until the record naming the file commits (see `Media::purge_remote`).
        let _gate = self.files_gate.read().await;
        let sha256 = files::store(&self.dir, bytes).await?;
        let record = MediaRecord {
            sha256: Some(sha256),
            content_type: file_type,
            filename: None,
            size,
            uploader: String::new(),
            created_ts: now_ms(),
        };
        let key = (server, media_id);
        Ok(self
            .storage
            .put(&catalog::MEDIAID_MEDIA, &key, &record)
            .await?)
    }

    fn mxc(&self, media_id: &str) -> String {
        format!("mxc://{}/{media_id}", self.server_name)
    }

    /// Counts an upload (or a reserved ID, whose upload then does not count again).
    fn take_upload(&self, uploader: &str) -> Result<()> {
        (self.upload_limiter)
            .take(uploader)
            .map_err(Error::limit_exceeded)
    }

    /// Stores an upload under a new media ID; its `mxc://` URI.
    pub async fn upload(
        &self,
        uploader: &str,
        bytes: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<String> {
        self.take_upload(uploader)?;
        let media_id = random_string(24);
        let size = bytes.len() as u64;
        // Held until the record naming the file commits (see `Media::purge_remote`).
        let _gate = self.files_gate.read().await;
        let sha256 = files::store(&self.dir, bytes).await?;
        let record = MediaRecord {
            sha256: Some(sha256),
            content_type,
            filename,
            size,
            uploader: uploader.to_owned(),
            created_ts: now_ms(),
        };
        let key = (self.server_name.as_str(), media_id.as_str());
        self.storage
            .put(&catalog::MEDIAID_MEDIA, &key, &record)
            .await?;
        Ok(self.mxc(&media_id))
    }

    /// Reserves a media ID for a later upload; its `mxc://` URI and when it expires.
    pub async fn create(&self, uploader: &str) -> Result<(String, u64)> {
        self.take_upload(uploader)?;
        let media_id = random_string(24);
        let now = now_ms();
        let record = MediaRecord {
            sha256: None,
            content_type: None,
            filename: None,
            size: 0,
            uploader: uploader.to_owned(),
            created_ts: now,
        };
        let key = (self.server_name.as_str(), media_id.as_str());
        self.storage
            .put(&catalog::MEDIAID_MEDIA, &key, &record)
            .await?;
        Ok((self.mxc(&media_id), now + PENDING_TTL_MS))
    }

    /// Uploads the content of a `/create`d ID: only by who made it, only once, only before
    /// it expires.
    pub async fn upload_reserved(
        &self,
        uploader: &str,
        server: &str,
        media_id: &str,
        bytes: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        let _guard = self.reserved_locks.lock(media_id).await;
        let mut record = self.record(server, media_id)?.ok_or_else(not_found)?;
        if record.uploader != uploader {
            return Err(Error::forbidden("This media ID was made by someone else"));
        }
        if record.sha256.is_some() {
            return Err(Error::new(
                ErrorKind::CannotOverwriteMedia,
                "This media already has content",
            ));
        }
        if now_ms() > record.created_ts + PENDING_TTL_MS {
            return Err(not_found());
        }
        record.size = bytes.len() as u64;
        let _gate = self.files_gate.read().await;
        record.sha256 = Some(files::store(&self.dir, bytes).await?);
        record.content_type = content_type;
        record.filename = filename;
        let key = (server, media_id);
        Ok(self
            .storage
            .put(&catalog::MEDIAID_MEDIA, &key, &record)
            .await?)
    }

    /// The content of a media ID: 404 if unknown, 504 `M_NOT_YET_UPLOADED` if reserved but
    /// still empty.
    pub async fn content(&self, server: &str, media_id: &str) -> Result<(MediaRecord, Content)> {
        let record = self.record(server, media_id)?.ok_or_else(not_found)?;
        let Some(sha256) = &record.sha256 else {
            return Err(Error::new(
                ErrorKind::NotYetUploaded,
                "The media has not been uploaded yet",
            ));
        };
        let bytes = files::load(&self.dir, sha256).await?;
        let content = Content {
            bytes,
            content_type: record.content_type.clone(),
            filename: record.filename.clone(),
        };
        Ok((record, content))
    }
}
