//! Prometheus metrics, served on their own listener (`[metrics] listen`, off by default) so
//! they never face the internet beside the API. What the gateway and handlers count lives
//! in [`Registry`]; the storage, the federation queue and the process are read when
//! scraped. Label sets are bounded: routes are templates, destinations the top few.

mod http;
mod process;
mod text;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use kith_federation::DestinationFigures;

use crate::services::Services;
use text::Exposition;

/// How many destinations the per-destination series show (the worst ones).
const TOP_DESTINATIONS: usize = 10;

/// What kith counts as it runs, for `/metrics`.
#[derive(Default)]
pub struct Registry {
    http: http::HttpStats,
    /// `/sync` requests (v2) and sliding-sync requests being answered or long-polling.
    syncs: AtomicI64,
    sliding_syncs: AtomicI64,
    inbound_transactions: AtomicU64,
    inbound_pdus: AtomicU64,
    inbound_edus: AtomicU64,
}

/// Which sync API a request in flight uses.
#[derive(Clone, Copy)]
pub enum SyncApi {
    V2,
    Sliding,
}

/// Counts one sync request in flight until dropped.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Registry {
    /// One answered request: `route` is the matched path template (`None`: no route).
    pub fn observe_request(&self, route: Option<&str>, method: &str, status: u16, took: Duration) {
        self.http.observe(route, method, status, took);
    }

    /// Counts a sync request as open until the guard is dropped.
    pub fn sync_in_flight(&self, api: SyncApi) -> InFlight<'_> {
        let gauge = match api {
            SyncApi::V2 => &self.syncs,
            SyncApi::Sliding => &self.sliding_syncs,
        };
        gauge.fetch_add(1, Ordering::Relaxed);
        InFlight(gauge)
    }

    /// One transaction another server pushed to us.
    pub fn inbound_transaction(&self, pdus: usize, edus: usize) {
        self.inbound_transactions.fetch_add(1, Ordering::Relaxed);
        self.inbound_pdus.fetch_add(pdus as u64, Ordering::Relaxed);
        self.inbound_edus.fetch_add(edus as u64, Ordering::Relaxed);
    }
}

/// Everything, in Prometheus's text format. Reads the database's figures and scans the
/// federation queue's keys: run it off the async runtime.
pub fn render(services: &Services) -> String {
    let registry = &services.metrics;
    let mut out = Exposition::default();
    registry.http.render(&mut out);

    out.family(
        "kith_sync_requests_in_flight",
        "gauge",
        "Sync requests being answered or long-polling, by API (v2 /sync, or sliding sync).",
    );
    for (api, gauge) in [
        ("v2", &registry.syncs),
        ("sliding", &registry.sliding_syncs),
    ] {
        out.sample(
            "kith_sync_requests_in_flight",
            &[("api", api)],
            gauge.load(Ordering::Relaxed) as f64,
        );
    }

    let storage = &services.storage;
    let stats = storage.commit_stats();
    out.counter(
        "kith_room_events_persisted_total",
        "Events added to rooms' timelines (sent here, received over federation, or backfilled).",
        stats.events.load(Ordering::Relaxed) as f64,
    );
    out.histogram(
        "kith_storage_commit_duration_seconds",
        "How long durable commits (the write-ahead log synced) took to write.",
        &[],
        &stats.latency.snapshot(),
    );
    let rocks = storage.rocks_figures();
    out.gauge(
        "kith_rocksdb_memtable_bytes",
        "Bytes in RocksDB memtables, all tables together.",
        rocks.memtable_bytes as f64,
    );
    out.gauge(
        "kith_rocksdb_sst_bytes",
        "Bytes of RocksDB's table files.",
        rocks.sst_bytes as f64,
    );
    out.gauge(
        "kith_rocksdb_pending_compaction_bytes",
        "Bytes RocksDB estimates compaction has yet to rewrite.",
        rocks.pending_compaction_bytes as f64,
    );
    out.gauge(
        "kith_rocksdb_block_cache_bytes",
        "Bytes held by the block cache all tables share.",
        rocks.block_cache_bytes as f64,
    );
    out.gauge(
        "kith_rocksdb_block_cache_capacity_bytes",
        "The block cache's capacity.",
        rocks.block_cache_capacity_bytes as f64,
    );
    if let Some(counted) = rocks.counted {
        out.family(
            "kith_rocksdb_block_cache_lookups_total",
            "counter",
            "Block cache lookups, by whether the block was there (hit) or read from a file (miss).",
        );
        out.sample(
            "kith_rocksdb_block_cache_lookups_total",
            &[("result", "hit")],
            counted.block_cache_hits as f64,
        );
        out.sample(
            "kith_rocksdb_block_cache_lookups_total",
            &[("result", "miss")],
            counted.block_cache_misses as f64,
        );
        out.family(
            "kith_rocksdb_writes_total",
            "counter",
            "Writes, by whether their thread led a write group or joined another's: \
             the average group commit is the rate of all over the rate of led.",
        );
        out.sample(
            "kith_rocksdb_writes_total",
            &[("grouping", "led")],
            counted.writes_led as f64,
        );
        out.sample(
            "kith_rocksdb_writes_total",
            &[("grouping", "joined")],
            counted.writes_joined as f64,
        );
    }

    federation(&mut out, services);

    process::render(&mut out);
    out.finish()
}

fn federation(out: &mut Exposition, services: &Services) {
    let registry = &services.metrics;
    out.counter(
        "kith_federation_inbound_transactions_total",
        "Transactions other servers pushed to us.",
        registry.inbound_transactions.load(Ordering::Relaxed) as f64,
    );
    out.counter(
        "kith_federation_inbound_pdus_total",
        "PDUs in those transactions.",
        registry.inbound_pdus.load(Ordering::Relaxed) as f64,
    );
    out.counter(
        "kith_federation_inbound_edus_total",
        "EDUs in those transactions.",
        registry.inbound_edus.load(Ordering::Relaxed) as f64,
    );
    let Some(figures) = services.messaging.outbox.figures() else {
        return;
    };
    let mut figures = match figures {
        Ok(figures) => figures,
        Err(e) => {
            tracing::warn!("cannot read the federation queue for /metrics: {e}");
            return;
        }
    };
    let queued: u64 = figures.iter().map(|f| f.items).sum();
    let waiting = figures.iter().filter(|f| f.items > 0).count();
    out.gauge(
        "kith_federation_queued_items",
        "Items (PDUs, EDUs, requests) waiting to be sent to other servers.",
        queued as f64,
    );
    out.gauge(
        "kith_federation_destinations_waiting",
        "Servers with something waiting to be sent to them.",
        waiting as f64,
    );

    let now = crate::util::now_ms();
    let age = |f: &DestinationFigures| {
        let at = f
            .oldest_position
            .and_then(|p| services.storage.time_of_position(p));
        at.map(|at| now.saturating_sub(at) as f64 / 1000.0)
    };
    figures.sort_by(|a, b| {
        b.items
            .cmp(&a.items)
            .then_with(|| a.destination.cmp(&b.destination))
    });
    let deepest: Vec<_> = figures
        .iter()
        .filter(|f| f.items > 0)
        .take(TOP_DESTINATIONS)
        .collect();
    out.family(
        "kith_federation_destination_queued_items",
        "gauge",
        "Items waiting for each of the servers with the most waiting.",
    );
    for f in &deepest {
        out.sample(
            "kith_federation_destination_queued_items",
            &[("destination", &f.destination)],
            f.items as f64,
        );
    }
    out.family(
        "kith_federation_destination_oldest_item_age_seconds",
        "gauge",
        "Age of the oldest item waiting for each of those servers, dated to within 10 s; \
         an item queued before the last start counts from the first commit after it.",
    );
    for f in &deepest {
        // Left out when the item's time is unknown rather than shown as new.
        if let Some(age) = age(f) {
            let labels = [("destination", f.destination.as_str())];
            out.sample(
                "kith_federation_destination_oldest_item_age_seconds",
                &labels,
                age,
            );
        }
    }
    figures.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then_with(|| a.destination.cmp(&b.destination))
    });
    out.family(
        "kith_federation_destination_send_failures_total",
        "counter",
        "Failed sends since the start, for each of the servers with the most.",
    );
    for f in figures
        .iter()
        .filter(|f| f.failures > 0)
        .take(TOP_DESTINATIONS)
    {
        out.sample(
            "kith_federation_destination_send_failures_total",
            &[("destination", &f.destination)],
            f.failures as f64,
        );
    }
}
