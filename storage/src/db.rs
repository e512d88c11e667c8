//! The database handle: opening, commits and the stream position (reads are in `reads.rs`).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::catalog::{self, Table};
use crate::codec::KeyCodec;
use crate::stats::CommitStats;
use crate::stream::{PositionGuard, Stream};
use crate::{Batch, Error, Result, schema};

/// The `global_value` key holding the end of the last stream reservation.
const STREAM_RESERVED_KEY: &str = "stream_reserved_upto";
/// The longest a commit waits for lower positions to commit before it acknowledges.
/// Writers commit within milliseconds of taking a position; one that waits on a lock or
/// the network in between holds others up, so the wait is short, and said in the log.
const VISIBILITY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as u64)
}

/// A cheap, cloneable handle on the one database.
#[derive(Clone)]
pub struct Storage {
    pub(crate) db: Arc<DB>,
    stream: Arc<Stream>,
    /// The options the database was opened with, when they count reads (see
    /// [`Storage::open_counting_reads`]).
    pub(crate) counted: Option<Arc<Options>>,
    /// The block cache every table shares.
    pub(crate) cache: rocksdb::Cache,
    pub(crate) stats: Arc<CommitStats>,
}

/// All tables' memtables together, before RocksDB flushes one (the oldest).
const MEMTABLES_TOTAL: usize = 32 << 20;
/// One table's memtable.
const MEMTABLE: usize = 8 << 20;
/// The block cache all tables share.
pub(crate) const BLOCK_CACHE: usize = 32 << 20;

impl Storage {
    /// Opens (creating if needed) the database at `path`, creates missing tables and
    /// migrates the schema.
    pub fn open(path: &Path) -> Result<Storage> {
        Self::open_with(path, false)
    }

    /// [`Storage::open`], counting where reads find their data and how writes group
    /// (RocksDB statistics, which cost a little on every read): to measure, and for
    /// `/metrics`.
    pub fn open_counting_reads(path: &Path) -> Result<Storage> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, count_reads: bool) -> Result<Storage> {
        let mut options = Options::default();
        if count_reads {
            options.enable_statistics();
            options.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
        }
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_keep_log_file_num(4);
        // Memory is bounded for the whole database, not per table: RocksDB's defaults (a
        // 64 MiB memtable and a 32 MiB block cache for *each* of ~60 tables) let a busy
        // server grow by hundreds of MiB.
        options.set_db_write_buffer_size(MEMTABLES_TOTAL);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let mut table_options = rocksdb::BlockBasedOptions::default();
        table_options.set_block_cache(&cache);
        let families = catalog::ALL.iter().map(|table| {
            let mut cf_options = Options::default();
            cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            cf_options.set_write_buffer_size(MEMTABLE);
            cf_options.set_block_based_table_factory(&table_options);
            ColumnFamilyDescriptor::new(table.name, cf_options)
        });
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|e| {
            // RocksDB's lock errors (held by another process, or by this one) name the
            // database's LOCK file; no other open error does.
            if e.to_string().contains("/LOCK") {
                Error::Locked
            } else {
                Error::Rocks(e)
            }
        })?;
        let db = Arc::new(db);
        let reserved = Self::raw_get(&db, &catalog::GLOBAL_VALUE, &STREAM_RESERVED_KEY)?;
        let storage = Storage {
            db,
            stream: Arc::new(Stream::new(reserved.unwrap_or(0))),
            counted: count_reads.then(|| Arc::new(options)),
            cache,
            stats: Default::default(),
        };
        schema::migrate(&storage)?;
        Ok(storage)
    }

    pub(crate) fn cf(&self, table: &Table) -> Result<&ColumnFamily> {
        Self::raw_cf(&self.db, table)
    }

    fn raw_cf<'a>(db: &'a DB, table: &Table) -> Result<&'a ColumnFamily> {
        db.cf_handle(table.name)
            .ok_or_else(|| Error::Key(format!("table {} is not in the catalog", table.name)))
    }

    pub(crate) fn raw_get<K: KeyCodec, V: DeserializeOwned>(
        db: &DB,
        table: &Table,
        key: &K,
    ) -> Result<Option<V>> {
        match db.get_pinned_cf(Self::raw_cf(db, table)?, key.encode())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes one value on its own (a single key needs no batch, but gets the same durability).
    pub async fn put<K: KeyCodec, V: Serialize + ?Sized>(
        &self,
        table: &Table,
        key: &K,
        value: &V,
    ) -> Result<()> {
        let mut batch = self.batch();
        batch.put(table, key, value)?;
        self.commit(batch).await
    }

    pub fn batch(&self) -> Batch {
        Batch {
            storage: self.clone(),
            writes: Default::default(),
            positions: Vec::new(),
            room: None,
            events: 0,
        }
    }

    /// Commits a batch atomically and durably (WAL synced), then lets readers see its stream
    /// positions. Runs on the blocking pool so that concurrent commits share RocksDB's group
    /// commit instead of queueing on the async runtime.
    ///
    /// Returns once readers see the batch (read-your-writes): a client that made a room and
    /// then pages its history must find the room's events, even while a concurrent writer
    /// still holds a lower position. Those writers are between allocating and committing,
    /// which takes milliseconds; the wait is bounded all the same, so a writer that stalls
    /// can only delay an acknowledgement, never withhold it.
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        let highest = batch.positions.iter().map(|guard| guard.position).max();
        let storage = self.clone();
        tokio::task::spawn_blocking(move || storage.commit_blocking(batch))
            .await
            .map_err(|e| Error::Join(e.to_string()))??;
        if let Some(highest) = highest {
            let mut visible = self.stream.subscribe();
            let seen = visible.wait_for(|at| *at >= highest);
            if tokio::time::timeout(VISIBILITY_WAIT, seen).await.is_err() {
                tracing::warn!(
                    position = highest,
                    "a commit was acknowledged before readers could see it: a writer holding \
                     a lower position waited on something before committing"
                );
            }
        }
        Ok(())
    }

    /// [`Storage::commit`] for callers outside the async runtime (start-up, migrations,
    /// tools); it does not wait for readers to see the batch.
    pub fn commit_blocking(&self, batch: Batch) -> Result<()> {
        let Batch {
            writes,
            positions,
            room,
            events,
            ..
        } = batch;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        let started = std::time::Instant::now();
        self.db.write_opt(writes, &options)?;
        self.stats.latency.observe(started.elapsed());
        (self.stats.events).fetch_add(events, std::sync::atomic::Ordering::Relaxed);
        if let Some(highest) = positions.iter().map(|guard| guard.position).max() {
            self.stats.clock.note(highest, unix_ms());
        }
        if let Some((room, only)) = room {
            self.stream.record_room(&positions, room, only);
        }
        // Dropping the guards only after the write makes the positions visible.
        drop(positions);
        Ok(())
    }

    /// Writes a batch atomically but without waiting for the disk: a crash of the process
    /// keeps it, a crash of the machine may lose it. Only for state that can be rebuilt or
    /// refused (a sliding-sync connection), never for anything acknowledged; such a batch
    /// takes no stream positions.
    pub async fn commit_relaxed(&self, batch: Batch) -> Result<()> {
        if !batch.positions.is_empty() {
            return Err(Error::Join("a relaxed commit took stream positions".into()));
        }
        let storage = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut options = WriteOptions::default();
            options.set_sync(false);
            storage.db.write_opt(batch.writes, &options)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))??;
        Ok(())
    }

    pub(crate) fn allocate_position(&self) -> Result<PositionGuard> {
        self.stream.allocate(|upto| {
            let mut options = WriteOptions::default();
            options.set_sync(true);
            let value = serde_json::to_vec(&upto)?;
            self.db.put_cf_opt(
                self.cf(&catalog::GLOBAL_VALUE)?,
                STREAM_RESERVED_KEY.encode(),
                value,
                &options,
            )?;
            Ok(())
        })
    }

    /// The highest stream position below which everything has committed.
    pub fn position(&self) -> u64 {
        self.stream.visible()
    }

    /// Registers a long-poll that watches `rooms`: woken by commits in them and by commits
    /// that may concern anyone. Register first, then look at [`Storage::position`], then
    /// wait: a commit in between still wakes it.
    pub fn waiter<'a>(&self, rooms: impl IntoIterator<Item = &'a str>) -> crate::Waiter {
        let rooms = rooms.into_iter().map(Arc::from).collect();
        self.stream.waiters.register(rooms)
    }

    /// Whether every position in (`after`, `upto`] is known to concern only one room for
    /// which `watched` is false, so a long-poll watching those rooms has nothing new.
    pub fn only_other_rooms(&self, after: u64, upto: u64, watched: impl Fn(&str) -> bool) -> bool {
        self.stream.only_other_rooms(after, upto, watched)
    }

    /// Whether every position in (`after`, `upto`] is known to be a room's timeline event
    /// that changes no state (see [`Batch::concerns_only_room`]).
    pub fn only_room_events(&self, after: u64, upto: u64) -> bool {
        self.stream.only_other_rooms(after, upto, |_| false)
    }

    /// The rooms changed in (`after`, `upto`] (see [`Batch::changes_room`]), or `None` when
    /// that is too long ago to remember.
    pub fn rooms_changed(
        &self,
        after: u64,
        upto: u64,
    ) -> Option<std::collections::BTreeSet<Arc<str>>> {
        self.stream.rooms_changed(after, upto)
    }

    /// A receiver that changes whenever the visible position advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.stream.subscribe()
    }

    /// Writes a consistent copy of the whole database, as of one instant, to `dir` (which
    /// must not exist) while writes go on: RocksDB's checkpoint, hard-linking the table
    /// files where `dir` is on the same file system and copying them elsewhere.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Flushes memtables so a clean shutdown leaves little WAL to replay.
    pub fn flush(&self) -> Result<()> {
        for table in catalog::ALL {
            self.db.flush_cf(self.cf(table)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_are_atomic_and_positions_advance() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let start = storage.position();
        let waiter = storage.subscribe();

        let mut batch = storage.batch();
        batch
            .put(&catalog::USERID_ACCOUNT, &"@a:x", &"account")
            .unwrap();
        let position = batch.append_event(&"user.created").unwrap();
        assert!(
            !storage.contains(&catalog::USERID_ACCOUNT, &"@a:x").unwrap(),
            "nothing before commit"
        );
        storage.commit(batch).await.unwrap();

        assert!(position > start);
        assert_eq!(storage.position(), position);
        assert!(waiter.has_changed().unwrap());
        let logged: Option<String> = storage.get(&catalog::STREAM_EVENT, &position).unwrap();
        assert_eq!(logged.as_deref(), Some("user.created"));
    }

    /// A prefix delete takes exactly the keys under the prefix: not a room whose ID the
    /// prefix's room ID starts, not one sorting just after it.
    #[tokio::test]
    async fn prefix_deletes_take_only_their_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let table = &catalog::ROOMID_POSITION_EVENTID;
        let rooms = ["!a:x", "!a:xy", "!a:y", "!a:w"];
        let mut batch = storage.batch();
        for room in rooms {
            for position in [0u64, 7, u64::MAX] {
                batch.put(table, &(room, position), &"$e").unwrap();
            }
        }
        storage.commit(batch).await.unwrap();
        let mut batch = storage.batch();
        batch.delete_prefix(table, &("!a:x",)).unwrap();
        assert!(batch.delete_prefix(table, &("",)).is_err(), "no bound");
        storage.commit(batch).await.unwrap();
        for room in rooms {
            let left: Vec<((String, u64), String)> = storage.scan_prefix(table, &(room,)).unwrap();
            assert_eq!(left.len(), if room == "!a:x" { 0 } else { 3 }, "{room}");
        }
        let mut seen = 0;
        storage
            .visit_prefix(table, &(), |_: (String, u64), _: serde::de::IgnoredAny| {
                seen += 1
            })
            .unwrap();
        assert_eq!(seen, 9);
    }

    /// A commit is acknowledged only once readers see it, so a concurrent writer holding a
    /// lower position holds the acknowledgement back until it commits too.
    #[tokio::test]
    async fn a_commit_returns_once_readers_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut earlier = storage.batch();
        earlier.new_position().unwrap();
        let mut later = storage.batch();
        let position = later.new_position().unwrap();
        let committing = tokio::spawn({
            let storage = storage.clone();
            async move { storage.commit(later).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!committing.is_finished(), "acknowledged while invisible");
        storage.commit(earlier).await.unwrap();
        committing.await.unwrap().unwrap();
        assert_eq!(storage.position(), position);
    }

    /// Reads are counted where the database was opened to count them: a fresh write is
    /// found in the memtable; after a flush, in the files' blocks.
    #[tokio::test]
    async fn reads_are_counted_where_they_find_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Storage::open(&dir.path().join("plain")).unwrap();
        assert!(plain.read_counts().is_none());
        let storage = Storage::open_counting_reads(&dir.path().join("counted")).unwrap();
        let mut batch = storage.batch();
        batch.put(&catalog::USERID_PROFILE, &"@a:x", &1u64).unwrap();
        storage.commit(batch).await.unwrap();
        let before = storage.read_counts().unwrap();
        storage
            .get::<_, u64>(&catalog::USERID_PROFILE, &"@a:x")
            .unwrap();
        let after = storage.read_counts().unwrap();
        assert_eq!(after.memtable_hits, before.memtable_hits + 1);
        storage.flush().unwrap();
        storage
            .get::<_, u64>(&catalog::USERID_PROFILE, &"@a:x")
            .unwrap();
        let flushed = storage.read_counts().unwrap();
        assert!(flushed.memtable_misses > after.memtable_misses);
        assert!(
            flushed.block_cache_hits + flushed.block_cache_misses
                > after.block_cache_hits + after.block_cache_misses
        );
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_moves_positions_forward() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let storage = Storage::open(dir.path()).unwrap();
            let mut batch = storage.batch();
            batch.put(&catalog::USERID_PROFILE, &"@a:x", &1u64).unwrap();
            let p = batch.append_event(&"e").unwrap();
            storage.commit(batch).await.unwrap();
            p
        };
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(
            storage
                .get::<_, u64>(&catalog::USERID_PROFILE, &"@a:x")
                .unwrap(),
            Some(1)
        );
        assert!(storage.position() >= before);
        let mut batch = storage.batch();
        assert!(batch.new_position().unwrap() > before);
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Storage::open(dir.path()).unwrap();
        assert!(matches!(Storage::open(dir.path()), Err(Error::Locked)));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(dir.path()).unwrap();
            let mut batch = storage.batch();
            batch
                .put(
                    &catalog::GLOBAL_VALUE,
                    &schema::VERSION_KEY,
                    &(schema::CURRENT + 1),
                )
                .unwrap();
            storage.commit_blocking(batch).unwrap();
        }
        assert!(matches!(
            Storage::open(dir.path()),
            Err(Error::SchemaTooNew { .. })
        ));
    }
}
