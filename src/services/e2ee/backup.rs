//! Server-side key backup: versions of a user's encrypted room-key store (the server keeps
//! the ciphertext and never sees a key). Only the current version takes new keys; a key
//! replaces a stored one only if it is better (verified, earlier first index, fewer
//! forwards), as the spec says.

use kith_storage::{Batch, catalog};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::E2ee;
use crate::services::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Backup {
    algorithm: String,
    auth_data: Value,
    /// Changes with every change to the keys.
    etag: u64,
    deleted: bool,
}

/// Keys being uploaded: (room ID, session ID, key data).
pub type BackupKeys = Vec<(String, String, Value)>;

fn no_version() -> Error {
    Error::not_found("Unknown backup version")
}

fn parse_version(version: &str) -> Result<u64> {
    version.parse().map_err(|_| no_version())
}

/// Whether `new` should replace `old` (the spec's order of preference).
fn better(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| v["is_verified"].as_bool().unwrap_or(false);
    let number = |v: &Value, k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    if verified(new) != verified(old) {
        return verified(new);
    }
    if number(new, "first_message_index") != number(old, "first_message_index") {
        return number(new, "first_message_index") < number(old, "first_message_index");
    }
    number(new, "forwarded_count") < number(old, "forwarded_count")
}

impl E2ee {
    fn backups(&self, user: &str) -> Result<Vec<(u64, Backup)>> {
        let rows: Vec<((String, u64), Backup)> = self
            .storage
            .scan_prefix(&catalog::USERID_VERSION_BACKUP, &(user,))?;
        Ok(rows.into_iter().map(|((_, v), b)| (v, b)).collect())
    }

    fn current(&self, user: &str) -> Result<Option<(u64, Backup)>> {
        Ok(self
            .backups(user)?
            .into_iter()
            .rev()
            .find(|(_, b)| !b.deleted))
    }

    fn backup(&self, user: &str, version: u64) -> Result<Backup> {
        let found: Option<Backup> = self
            .storage
            .get(&catalog::USERID_VERSION_BACKUP, &(user, version))?;
        found.filter(|b| !b.deleted).ok_or_else(no_version)
    }

    fn count(&self, user: &str, version: u64) -> Result<u64> {
        Ok(self.stored_keys(user, version, None, None)?.len() as u64)
    }

    /// A version's keys, all or one room's or one session's: (room, session, key data).
    fn stored_keys(
        &self,
        user: &str,
        version: u64,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<Vec<(String, String, Value)>> {
        let table = &catalog::USERID_VERSION_ROOMID_SESSIONID_KEY;
        let rows: Vec<((String, u64, String, String), Value)> = match room {
            Some(room) => self.storage.scan_prefix(table, &(user, version, room))?,
            None => self.storage.scan_prefix(table, &(user, version))?,
        };
        Ok(rows
            .into_iter()
            .filter(|((_, _, _, s), _)| session.is_none_or(|wanted| wanted == s))
            .map(|((_, _, room, session), data)| (room, session, data))
            .collect())
    }

    fn info(&self, user: &str, version: u64, backup: &Backup) -> Result<Value> {
        Ok(json!({
            "algorithm": backup.algorithm,
            "auth_data": backup.auth_data,
            "count": self.count(user, version)?,
            "etag": backup.etag.to_string(),
            "version": version.to_string(),
        }))
    }

    /// A new backup version, which becomes the current one.
    pub async fn create_backup(
        &self,
        user: &str,
        algorithm: &str,
        auth_data: Value,
    ) -> Result<String> {
        let _guard = self.locks.lock(&format!("backup\n{user}")).await;
        let version = self.backups(user)?.last().map_or(1, |(v, _)| v + 1);
        let backup = Backup {
            algorithm: algorithm.to_owned(),
            auth_data,
            etag: 0,
            deleted: false,
        };
        self.storage
            .put(&catalog::USERID_VERSION_BACKUP, &(user, version), &backup)
            .await?;
        Ok(version.to_string())
    }

    /// The current version's info, or a given version's (404 if none).
    pub fn backup_info(&self, user: &str, version: Option<&str>) -> Result<Value> {
        let (version, backup) = match version {
            Some(v) => {
                let v = parse_version(v)?;
                (v, self.backup(user, v)?)
            }
            None => self
                .current(user)?
                .ok_or_else(|| Error::not_found("No current backup version"))?,
        };
        self.info(user, version, &backup)
    }

    /// Changes a version's auth data (its algorithm cannot change).
    pub async fn update_backup(
        &self,
        user: &str,
        version: &str,
        algorithm: &str,
        auth_data: Value,
    ) -> Result<()> {
        let _guard = self.locks.lock(&format!("backup\n{user}")).await;
        let v = parse_version(version)?;
        let mut backup = self.backup(user, v)?;
        if backup.algorithm != algorithm {
            return Err(Error::invalid_param("A backup's algorithm cannot change"));
        }
        backup.auth_data = auth_data;
        Ok(self
            .storage
            .put(&catalog::USERID_VERSION_BACKUP, &(user, v), &backup)
            .await?)
    }

    /// Deletes a version and its keys (again: nothing to do).
    pub async fn delete_backup(&self, user: &str, version: &str) -> Result<()> {
        let _guard = self.locks.lock(&format!("backup\n{user}")).await;
        let v = parse_version(version)?;
        let found: Option<Backup> = self
            .storage
            .get(&catalog::USERID_VERSION_BACKUP, &(user, v))?;
        let mut backup = found.ok_or_else(no_version)?;
        if backup.deleted {
            return Ok(());
        }
        backup.deleted = true;
        let mut batch = self.storage.batch();
        self.delete_keys_into(&mut batch, user, v, None, None)?;
        batch.put(&catalog::USERID_VERSION_BACKUP, &(user, v), &backup)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Stores keys into the current version (403 `M_WRONG_ROOM_KEYS_VERSION` for another),
    /// keeping the better of an old and a new key; `{etag, count}`.
    pub async fn put_backup_keys(
        &self,
        user: &str,
        version: &str,
        keys: BackupKeys,
    ) -> Result<Value> {
        let _guard = self.locks.lock(&format!("backup\n{user}")).await;
        let v = parse_version(version)?;
        let (current, mut backup) = self.current(user)?.ok_or_else(no_version)?;
        if current != v {
            self.backup(user, v)?;
            let current_version = current.to_string();
            return Err(Error::new(
                ErrorKind::WrongRoomKeysVersion { current_version },
                "Not the current backup version",
            ));
        }
        let mut batch = self.storage.batch();
        let mut changed = false;
        for (room, session, data) in keys {
            if !data.is_object() {
                return Err(Error::bad_json("Key data must be an object"));
            }
            let key = (user, v, room.as_str(), session.as_str());
            let old: Option<Value> = self
                .storage
                .get(&catalog::USERID_VERSION_ROOMID_SESSIONID_KEY, &key)?;
            if old.as_ref().is_none_or(|old| better(&data, old)) {
                batch.put(&catalog::USERID_VERSION_ROOMID_SESSIONID_KEY, &key, &data)?;
                changed = true;
            }
        }
        if changed {
            backup.etag += 1;
            batch.put(&catalog::USERID_VERSION_BACKUP, &(user, v), &backup)?;
        }
        self.storage.commit(batch).await?;
        Ok(json!({ "etag": backup.etag.to_string(), "count": self.count(user, v)? }))
    }

    /// The keys of a version: all, one room's, or one session's (404 if that is missing),
    /// as `{rooms: {room: {sessions: {id: data}}}}`.
    pub fn backup_keys(
        &self,
        user: &str,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<Value> {
        let v = parse_version(version)?;
        self.backup(user, v)?;
        let mut rooms = json!({});
        for (room_id, session_id, data) in self.stored_keys(user, v, room, session)? {
            rooms[room_id]["sessions"][session_id] = data;
        }
        Ok(json!({ "rooms": rooms }))
    }

    /// Deletes keys of a version (all, one room's or one session's); `{etag, count}`.
    pub async fn delete_backup_keys(
        &self,
        user: &str,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<Value> {
        let _guard = self.locks.lock(&format!("backup\n{user}")).await;
        let v = parse_version(version)?;
        let mut backup = self.backup(user, v)?;
        let mut batch = self.storage.batch();
        self.delete_keys_into(&mut batch, user, v, room, session)?;
        backup.etag += 1;
        batch.put(&catalog::USERID_VERSION_BACKUP, &(user, v), &backup)?;
        self.storage.commit(batch).await?;
        Ok(json!({ "etag": backup.etag.to_string(), "count": self.count(user, v)? }))
    }

    fn delete_keys_into(
        &self,
        batch: &mut Batch,
        user: &str,
        v: u64,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<()> {
        for (room_id, session_id, _) in self.stored_keys(user, v, room, session)? {
            let key = (user, v, room_id.as_str(), session_id.as_str());
            batch.delete(&catalog::USERID_VERSION_ROOMID_SESSIONID_KEY, &key)?;
        }
        Ok(())
    }
}
