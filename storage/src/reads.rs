//! Typed reads: one key, a key's presence, and scans over a key prefix (whole, paged either
//! way, streamed, or raw).

use rocksdb::{Direction, IteratorMode};
use serde::de::DeserializeOwned;

use crate::catalog::Table;
use crate::codec::KeyCodec;
use crate::{Result, Storage};

impl Storage {
    pub fn get<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table,
        key: &K,
    ) -> Result<Option<V>> {
        Self::raw_get(&self.db, table, key)
    }

    pub fn contains<K: KeyCodec>(&self, table: &Table, key: &K) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(table)?, key.encode())?
            .is_some())
    }

    /// Whether some entry's key starts with `prefix`: one seek, nothing decoded.
    pub fn has_prefix<P: KeyCodec>(&self, table: &Table, prefix: &P) -> Result<bool> {
        let prefix = prefix.encode();
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        match self.db.iterator_cf(self.cf(table)?, mode).next() {
            Some(item) => Ok(item?.0.starts_with(&prefix)),
            None => Ok(false),
        }
    }

    /// Every entry whose key starts with `prefix` (a leading sub-tuple of the key), in key order.
    pub fn scan_prefix<P: KeyCodec, K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table,
        prefix: &P,
    ) -> Result<Vec<(K, V)>> {
        let prefix = prefix.encode();
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(table)?, mode) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push((K::decode(&key)?, serde_json::from_slice(&value)?));
        }
        Ok(out)
    }

    /// Visits every entry whose key starts with `prefix`, in key order, one at a time: for
    /// walks over a whole table that should not hold it all in memory (a room purge looks at
    /// every event kept). `V` may be a part of the stored value (serde skips the rest).
    pub fn visit_prefix<P: KeyCodec, K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table,
        prefix: &P,
        mut visit: impl FnMut(K, V),
    ) -> Result<()> {
        let prefix = prefix.encode();
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(table)?, mode) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            visit(K::decode(&key)?, serde_json::from_slice(&value)?);
        }
        Ok(())
    }

    /// Visits every entry of a table as raw bytes, key and value: for checks over all of it
    /// whatever its layout (that a purged room left nothing behind, say).
    pub fn visit_raw(&self, table: &Table, mut visit: impl FnMut(&[u8], &[u8])) -> Result<()> {
        for item in self.db.iterator_cf(self.cf(table)?, IteratorMode::Start) {
            let (key, value) = item?;
            visit(&key, &value);
        }
        Ok(())
    }

    /// Up to `limit` entries with keys that start with `prefix` and sort before `before`
    /// (exclusive), newest first: for paging backwards through a timeline.
    pub fn scan_prefix_back<P: KeyCodec, B: KeyCodec, K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table,
        prefix: &P,
        before: &B,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let prefix = prefix.encode();
        let before = before.encode();
        let mode = IteratorMode::From(&before, Direction::Reverse);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(table)?, mode) {
            let (key, value) = item?;
            if *key == *before {
                continue;
            }
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push((K::decode(&key)?, serde_json::from_slice(&value)?));
        }
        Ok(out)
    }

    /// Up to `limit` entries with keys that start with `prefix` and sort after `after`
    /// (exclusive), in key order: for paging forwards through a timeline.
    pub fn scan_prefix_after<P: KeyCodec, A: KeyCodec, K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table,
        prefix: &P,
        after: &A,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let prefix = prefix.encode();
        let after = after.encode();
        let mode = IteratorMode::From(&after, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(table)?, mode) {
            let (key, value) = item?;
            if *key == *after {
                continue;
            }
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push((K::decode(&key)?, serde_json::from_slice(&value)?));
        }
        Ok(out)
    }

    /// Up to `limit` entries whose key starts with a string that starts with `text` (a
    /// prefix of the first key part itself, not a whole part): for word-prefix search.
    pub fn scan_text_prefix<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table,
        text: &str,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        // Strings are stored as their UTF-8 bytes and a 0xFF end marker, which UTF-8 never
        // contains, so the raw bytes of `text` are exactly the keys' common prefix.
        let prefix = text.as_bytes();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(table)?, mode) {
            let (key, value) = item?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((K::decode(&key)?, serde_json::from_slice(&value)?));
        }
        Ok(out)
    }

    /// Up to `limit` entries from `start` (inclusive) onwards, in key order.
    pub fn scan_from<K: KeyCodec, V: DeserializeOwned>(
        &self,
        table: &Table,
        start: &K,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let start = start.encode();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(table)?, mode).take(limit) {
            let (key, value) = item?;
            out.push((K::decode(&key)?, serde_json::from_slice(&value)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn scans_page_both_ways_within_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut batch = storage.batch();
        for (room, position) in [("!a", 1u64), ("!a", 5), ("!a", 9), ("!b", 2), ("!0", 7)] {
            batch
                .put(
                    &catalog::ROOMID_POSITION_EVENTID,
                    &(room, position),
                    &position,
                )
                .unwrap();
        }
        storage.commit_blocking(batch).unwrap();
        let page: Vec<((String, u64), u64)> = storage
            .scan_prefix_back(
                &catalog::ROOMID_POSITION_EVENTID,
                &("!a",),
                &("!a", 9u64),
                10,
            )
            .unwrap();
        assert_eq!(page.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [5, 1]);
        let all: Vec<((String, u64), u64)> = storage
            .scan_prefix_back(
                &catalog::ROOMID_POSITION_EVENTID,
                &("!a",),
                &("!a", u64::MAX),
                2,
            )
            .unwrap();
        assert_eq!(all.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [9, 5]);
        let forward: Vec<((String, u64), u64)> = storage
            .scan_prefix_after(
                &catalog::ROOMID_POSITION_EVENTID,
                &("!a",),
                &("!a", 1u64),
                10,
            )
            .unwrap();
        assert_eq!(forward.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [5, 9]);
        let first: Vec<((String, u64), u64)> = storage
            .scan_prefix_after(&catalog::ROOMID_POSITION_EVENTID, &("!a",), &("!a",), 1)
            .unwrap();
        assert_eq!(first.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn text_prefix_scans_match_inside_the_first_part() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut batch = storage.batch();
        for (word, user) in [
            ("ali", "@1:x"),
            ("alice", "@2:x"),
            ("alicia", "@3:x"),
            ("bob", "@4:x"),
        ] {
            batch
                .put(&catalog::WORD_USERID, &(word, user), &())
                .unwrap();
        }
        storage.commit_blocking(batch).unwrap();
        let found: Vec<((String, String), ())> = storage
            .scan_text_prefix(&catalog::WORD_USERID, "alic", 10)
            .unwrap();
        let users: Vec<&str> = found.iter().map(|((_, u), ())| u.as_str()).collect();
        assert_eq!(users, ["@2:x", "@3:x"]);
        let capped: Vec<((String, String), ())> = storage
            .scan_text_prefix(&catalog::WORD_USERID, "a", 2)
            .unwrap();
        assert_eq!(capped.len(), 2);
    }

    #[test]
    fn prefix_scans_stop_at_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut batch = storage.batch();
        for (user, device) in [("@a:x", "D1"), ("@a:x", "D2"), ("@ab:x", "D3")] {
            batch
                .put(&catalog::USERID_DEVICEID_DEVICE, &(user, device), &device)
                .unwrap();
        }
        storage.commit_blocking(batch).unwrap();
        let found: Vec<((String, String), String)> = storage
            .scan_prefix(&catalog::USERID_DEVICEID_DEVICE, &("@a:x",))
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].0.1, "D2");
    }
}
