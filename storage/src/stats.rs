//! What the storage measures about itself, for `/metrics` and the shutdown log: its commits
//! (how many, how long they took, the events they persisted), where reads found their data,
//! and RocksDB's own figures (memory, files, the block cache, write groups).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rocksdb::statistics::Ticker;

use crate::db::BLOCK_CACHE;
use crate::{Storage, catalog};

/// A latency histogram with fixed bounds, updated without locks.
pub struct Histogram {
    /// Upper bounds of the buckets, in seconds, ascending; `+Inf` is implied.
    bounds: &'static [f64],
    /// Per bucket (not cumulative), then the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, in microseconds.
    sum_micros: AtomicU64,
}

/// A histogram's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, cumulative, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// Bounds for request and commit latencies, from 0.5 ms (a commit on a fast disk) to 60 s
/// (a long-poll's timeout).
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self.bounds.partition_point(|bound| *bound < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets = bounds
            .zip(self.counts.iter())
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
        }
    }
}

/// The storage's own counts, kept for the process's life.
pub struct CommitStats {
    /// Durable commits (WAL synced), by how long RocksDB took to write them.
    pub latency: Histogram,
    /// Events added to rooms' timelines by those commits (see
    /// [`crate::Batch::persists_events`]).
    pub events: AtomicU64,
    pub clock: PositionClock,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            latency: Histogram::new(LATENCY_BOUNDS),
            events: AtomicU64::new(0),
            clock: PositionClock::default(),
        }
    }
}

/// When stream positions were committed, roughly: a sample at most every
/// [`PositionClock::EVERY_MS`], the last day's kept. Tells the age of a queued item from its
/// position alone.
#[derive(Default)]
pub struct PositionClock {
    /// `(position, unix ms)`, ascending.
    samples: Mutex<VecDeque<(u64, u64)>>,
}

impl PositionClock {
    const EVERY_MS: u64 = 10_000;
    const KEPT: usize = 8_640;

    /// Notes that `position` committed at `now_ms`.
    pub fn note(&self, position: u64, now_ms: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        // Positions commit out of order: a sample is kept only above the last, and only
        // so often.
        if samples
            .back()
            .is_some_and(|(p, at)| position <= *p || now_ms < at + Self::EVERY_MS)
        {
            return;
        }
        if samples.len() == Self::KEPT {
            samples.pop_front();
        }
        samples.push_back((position, now_ms));
    }

    /// When `position` committed, at most [`PositionClock::EVERY_MS`] early: the last sample
    /// at or before it; for a position older than every sample, the oldest one's time.
    pub fn time_of(&self, position: u64) -> Option<u64> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let after = samples.partition_point(|(p, _)| *p <= position);
        let sample = samples.get(after.saturating_sub(1))?;
        Some(sample.1)
    }
}

/// RocksDB's figures, summed over every table.
#[derive(Debug, Clone, Default)]
pub struct RocksFigures {
    /// Bytes in memtables (written, not yet flushed to files).
    pub memtable_bytes: u64,
    /// Bytes of the tables' SST files.
    pub sst_bytes: u64,
    /// Bytes RocksDB estimates compaction has yet to rewrite.
    pub pending_compaction_bytes: u64,
    /// Bytes the shared block cache holds, and its capacity.
    pub block_cache_bytes: u64,
    pub block_cache_capacity_bytes: u64,
    /// Counted only when the database was opened with statistics (see
    /// [`crate::Storage::open_counting_reads`]): block cache lookups that hit and missed,
    /// and writes by whether their thread led a write group or joined another's (the
    /// average group, RocksDB's group commit, is `(led + joined) / led`).
    pub counted: Option<Counted>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Counted {
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    pub writes_led: u64,
    pub writes_joined: u64,
}

/// Where point reads and scans found their data since the database was opened.
#[derive(Debug, Clone, Copy)]
pub struct ReadCounts {
    /// Reads answered by a memtable (recent writes), and those that went on to the files.
    pub memtable_hits: u64,
    pub memtable_misses: u64,
    /// File blocks found in the block cache, and those read from the file system.
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
}

impl Storage {
    /// Where reads found their data, if the database counts them.
    pub fn read_counts(&self) -> Option<ReadCounts> {
        let options = self.counted.as_ref()?;
        Some(ReadCounts {
            memtable_hits: options.get_ticker_count(Ticker::MemtableHit),
            memtable_misses: options.get_ticker_count(Ticker::MemtableMiss),
            block_cache_hits: options.get_ticker_count(Ticker::BlockCacheHit),
            block_cache_misses: options.get_ticker_count(Ticker::BlockCacheMiss),
        })
    }

    /// The commits' counts since the database was opened.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.stats
    }

    /// When `position` was committed, to within 10 s, if this process saw it or a later one
    /// (see [`PositionClock`]).
    pub fn time_of_position(&self, position: u64) -> Option<u64> {
        self.stats.clock.time_of(position)
    }

    /// RocksDB's figures now, summed over the tables.
    pub fn rocks_figures(&self) -> RocksFigures {
        let sum = |property: &str| {
            catalog::ALL
                .iter()
                .filter_map(|table| self.cf(table).ok())
                .filter_map(|cf| self.db.property_int_value_cf(cf, property).ok().flatten())
                .sum()
        };
        let counted = self.counted.as_ref().map(|options| Counted {
            block_cache_hits: options.get_ticker_count(Ticker::BlockCacheHit),
            block_cache_misses: options.get_ticker_count(Ticker::BlockCacheMiss),
            writes_led: options.get_ticker_count(Ticker::WriteDoneBySelf),
            writes_joined: options.get_ticker_count(Ticker::WriteDoneByOther),
        });
        RocksFigures {
            memtable_bytes: sum("rocksdb.cur-size-all-mem-tables"),
            sst_bytes: sum("rocksdb.total-sst-files-size"),
            pending_compaction_bytes: sum("rocksdb.estimate-pending-compaction-bytes"),
            block_cache_bytes: self.cache.get_usage() as u64,
            block_cache_capacity_bytes: BLOCK_CACHE as u64,
            counted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn observations_fall_in_cumulative_buckets() {
        let histogram = Histogram::new(&[0.001, 0.1]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_secs(3));
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot.buckets,
            vec![(0.001, 2), (0.1, 3), (f64::INFINITY, 4)]
        );
        assert_eq!(snapshot.count, 4);
        assert!((snapshot.sum_seconds - 3.0515).abs() < 1e-9);
    }

    #[test]
    fn a_position_is_dated_by_the_sample_at_or_before_it() {
        let clock = PositionClock::default();
        assert_eq!(clock.time_of(5), None);
        clock.note(10, 1_000);
        clock.note(11, 2_000); // too soon after the last sample: not kept
        clock.note(20, 12_000);
        assert_eq!(clock.time_of(15), Some(1_000));
        assert_eq!(clock.time_of(20), Some(12_000));
        assert_eq!(clock.time_of(99), Some(12_000));
        assert_eq!(clock.time_of(3), Some(1_000), "older than every sample");
    }
}
