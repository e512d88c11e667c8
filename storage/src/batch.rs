//! An atomic group of writes: nothing happens until [`crate::Storage::commit`], and then all
//! of it happens in one RocksDB `WriteBatch`, or none of it.

use std::sync::Arc;

use rocksdb::WriteBatch;
use serde::Serialize;

use crate::catalog::{self, Table};
use crate::codec::KeyCodec;
use crate::stream::PositionGuard;
use crate::{Result, Storage};

pub struct Batch {
    pub(crate) storage: Storage,
    pub(crate) writes: WriteBatch,
    pub(crate) positions: Vec<PositionGuard>,
    /// The one room this batch's positions changed, if the writer says so, and whether
    /// they concern only its members.
    pub(crate) room: Option<(Arc<str>, bool)>,
    /// Events this batch adds to rooms' timelines, counted once it commits.
    pub(crate) events: u64,
}

impl Batch {
    pub fn put<K: KeyCodec, V: Serialize + ?Sized>(
        &mut self,
        table: &Table,
        key: &K,
        value: &V,
    ) -> Result<()> {
        let cf = self.storage.cf(table)?;
        self.writes
            .put_cf(cf, key.encode(), serde_json::to_vec(value)?);
        Ok(())
    }

    pub fn delete<K: KeyCodec>(&mut self, table: &Table, key: &K) -> Result<()> {
        let cf = self.storage.cf(table)?;
        self.writes.delete_cf(cf, key.encode());
        Ok(())
    }

    /// Deletes every entry whose key starts with `prefix` (a leading sub-tuple of the key),
    /// as one range tombstone, however many there are.
    pub fn delete_prefix<P: KeyCodec>(&mut self, table: &Table, prefix: &P) -> Result<()> {
        let cf = self.storage.cf(table)?;
        let from = prefix.encode();
        let to = crate::codec::successor(&from)
            .ok_or_else(|| crate::Error::Key("a prefix to delete must name something".into()))?;
        self.writes.delete_range_cf(cf, from, to);
        Ok(())
    }

    /// Takes a new stream position for this batch; it becomes visible when the batch commits.
    pub fn new_position(&mut self) -> Result<u64> {
        let guard = self.storage.allocate_position()?;
        let position = guard.position;
        self.positions.push(guard);
        Ok(position)
    }

    /// Appends an event to the event log in this batch (the transactional outbox), at a new
    /// stream position, which it returns.
    pub fn append_event<E: Serialize>(&mut self, event: &E) -> Result<u64> {
        let position = self.new_position()?;
        self.put(&catalog::STREAM_EVENT, &position, event)?;
        Ok(position)
    }

    /// Says that this batch's positions concern only members of `room` and change no state,
    /// account data or keys (a message, a receipt, typing): long-polls of users outside it
    /// need not look. Unscoped positions concern everyone.
    pub fn concerns_only_room(&mut self, room: &str) {
        self.room = Some((room.into(), true));
    }

    /// Says that this batch changes `room` (its timeline, state or receipts), so that a
    /// sliding sync can tell which rooms changed without reading them. Unlike
    /// [`Batch::concerns_only_room`], it may concern others too.
    pub fn changes_room(&mut self, room: &str) {
        if self.room.is_none() {
            self.room = Some((room.into(), false));
        }
    }

    /// Counts `n` events added to rooms' timelines (the `/metrics` figure of events
    /// persisted) once the batch commits.
    pub fn persists_events(&mut self, n: usize) {
        self.events += n as u64;
    }

    /// Whether the batch has taken stream positions yet.
    pub fn has_positions(&self) -> bool {
        !self.positions.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}
