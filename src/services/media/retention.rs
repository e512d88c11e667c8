//! `[media] remote_retention`: other servers' files, fetched for our users, are forgotten
//! some days after they were fetched (a later request fetches them again). Only the cache:
//! this server's own uploads are never purged here.

use std::collections::HashSet;

use kith_storage::catalog;
use serde::Serialize;

use super::thumbnail::ThumbnailRecord;
use super::{Media, MediaRecord, files};
use crate::services::error::{Error, Result};

/// What a purge removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Purged {
    /// Remote media records, and their thumbnails.
    pub media: u64,
    pub thumbnails: u64,
    /// Files deleted (those nothing else still names), and their bytes.
    pub files: u64,
    pub bytes: u64,
}

type MediaKey = (String, String);
type ThumbnailKey = (String, String, u64, u64, String);

impl Media {
    /// Forgets every other server's media fetched before `before_ms`, with its thumbnails,
    /// in one batch; then deletes the files no remaining record names.
    pub async fn purge_remote(&self, before_ms: u64) -> Result<Purged> {
        let records: Vec<(MediaKey, MediaRecord)> =
            self.storage.scan_prefix(&catalog::MEDIAID_MEDIA, &())?;
        let thumbnails: Vec<(ThumbnailKey, ThumbnailRecord)> =
            (self.storage).scan_prefix(&catalog::MEDIAID_SIZE_THUMBNAIL, &())?;
        let expired: HashSet<&MediaKey> = records
            .iter()
            .filter(|((server, _), record)| {
                *server != self.server_name && record.created_ts < before_ms
            })
            .map(|(key, _)| key)
            .collect();
        if expired.is_empty() {
            return Ok(Purged::default());
        }
        let mut purged = Purged::default();
        let mut candidates = HashSet::new();
        let mut batch = self.storage.batch();
        for (key, record) in &records {
            if expired.contains(key) {
                batch.delete(&catalog::MEDIAID_MEDIA, &(key.0.as_str(), key.1.as_str()))?;
                candidates.extend(record.sha256.clone());
                purged.media += 1;
            }
        }
        for ((server, id, width, height, method), record) in &thumbnails {
            if expired.contains(&(server.clone(), id.clone())) {
                let key = (
                    server.as_str(),
                    id.as_str(),
                    *width,
                    *height,
                    method.as_str(),
                );
                batch.delete(&catalog::MEDIAID_SIZE_THUMBNAIL, &key)?;
                candidates.insert(record.sha256.clone());
                purged.thumbnails += 1;
            }
        }
        let _gate = self.files_gate.write().await;
        self.storage.commit(batch).await?;
        // What still names a file, read after the commit, with no store under way.
        let remaining: Vec<(MediaKey, MediaRecord)> =
            self.storage.scan_prefix(&catalog::MEDIAID_MEDIA, &())?;
        let remaining_thumbnails: Vec<(ThumbnailKey, ThumbnailRecord)> =
            (self.storage).scan_prefix(&catalog::MEDIAID_SIZE_THUMBNAIL, &())?;
        let named: HashSet<String> = (remaining.into_iter())
            .filter_map(|(_, record)| record.sha256)
            .chain(remaining_thumbnails.into_iter().map(|(_, t)| t.sha256))
            .collect();
        for sha256 in candidates.difference(&named) {
            let removed = files::remove(&self.dir, sha256).map_err(Error::internal)?;
            purged.files += 1;
            purged.bytes += removed;
        }
        Ok(purged)
    }
}
