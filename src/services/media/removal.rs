//! Forgetting media: other servers' files, fetched for our users, some days after they were
//! fetched (`[media] remote_retention`, or an admin's purge of the cache; a later request
//! fetches them again); and this server's own uploads, only when an admin deletes them.

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
    /// Forgets every other server's media fetched before `before_ms`, with its thumbnails
    /// (`[media] remote_retention`, Synapse's `purge_media_cache`).
    pub async fn purge_remote(&self, before_ms: u64) -> Result<Purged> {
        let remote = |(server, _): &MediaKey, record: &MediaRecord| {
            *server != self.server_name && record.created_ts < before_ms
        };
        self.forget(remote).await.map(|(purged, _)| purged)
    }

    /// Deletes this server's media uploaded before `before_ms`, larger than `size_gt` bytes
    /// and not among `kept` (`mxc://` URIs); the IDs deleted.
    pub async fn delete_local_before(
        &self,
        before_ms: u64,
        size_gt: u64,
        kept: &HashSet<String>,
    ) -> Result<Vec<String>> {
        let ours = |(server, id): &MediaKey, record: &MediaRecord| {
            *server == self.server_name
                && record.created_ts < before_ms
                && record.size > size_gt
                && !kept.contains(&self.mxc(id))
        };
        Ok(self.forget(ours).await?.1)
    }

    /// Deletes one of this server's media (404 if there is none by that ID).
    pub async fn delete_local(&self, media_id: &str) -> Result<()> {
        if self.record(&self.server_name, media_id)?.is_none() {
            return Err(Error::not_found("Unknown media"));
        }
        let this = |(server, id): &MediaKey, _: &MediaRecord| {
            *server == self.server_name && id == media_id
        };
        self.forget(this).await.map(|_| ())
    }

    /// Forgets the media records `chosen` picks, with their thumbnails, in one batch; then
    /// deletes the files no remaining record names. What was removed, and the media IDs.
    async fn forget(
        &self,
        chosen: impl Fn(&MediaKey, &MediaRecord) -> bool,
    ) -> Result<(Purged, Vec<String>)> {
        // Held from the first read: no file is stored, nor record made, under way.
        let _gate = self.files_gate.write().await;
        let records: Vec<(MediaKey, MediaRecord)> =
            self.storage.scan_prefix(&catalog::MEDIAID_MEDIA, &())?;
        let expired: HashSet<&MediaKey> = records
            .iter()
            .filter(|(key, record)| chosen(key, record))
            .map(|(key, _)| key)
            .collect();
        let mut purged = Purged::default();
        if expired.is_empty() {
            return Ok((purged, Vec::new()));
        }
        let thumbnails: Vec<(ThumbnailKey, ThumbnailRecord)> =
            (self.storage).scan_prefix(&catalog::MEDIAID_SIZE_THUMBNAIL, &())?;
        let mut candidates = HashSet::new();
        let mut ids = Vec::new();
        let mut batch = self.storage.batch();
        for (key, record) in &records {
            if expired.contains(key) {
                batch.delete(&catalog::MEDIAID_MEDIA, &(key.0.as_str(), key.1.as_str()))?;
                candidates.extend(record.sha256.clone());
                ids.push(key.1.clone());
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
        // Records first: a crash before the files go leaves files nothing names, never a
        // record without its file.
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
            // One that cannot go stays (and is said); the others still go.
            match files::remove(&self.dir, sha256) {
                Ok(removed) => {
                    purged.files += 1;
                    purged.bytes += removed;
                }
                Err(e) => tracing::warn!(%sha256, "cannot delete a media file: {e}"),
            }
        }
        Ok((purged, ids))
    }
}
