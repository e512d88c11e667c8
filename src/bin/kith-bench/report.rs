//! The figures of one server's run, the side-by-side table, and the JSON file.

use std::time::Duration;

use serde::Serialize;

/// p50, p95, p99 and max, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort();
        let at = |q: f64| {
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            ms(samples[index])
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: ms(samples[samples.len() - 1]),
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Everything measured on one server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub server: String,
    pub setup: String,
    pub startup_ms: Option<f64>,
    pub idle_rss_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub registrations_and_logins_per_s: f64,
    pub messages_accepted: u64,
    pub messages_failed: u64,
    pub messages_per_s: f64,
    pub send_latency_ms: Percentiles,
    pub delivery_latency_ms: Percentiles,
    pub undelivered: u64,
    pub server_cpu_s_during_load: Option<f64>,
    pub server_cpu_ms_per_message: Option<f64>,
    pub load_generator_cpu_s_during_load: f64,
    /// Users in no room long-polling `/sync` through the load (`--idle-users`).
    pub idle_long_polls: usize,
    pub load_seconds: f64,
    pub initial_sync_rooms: usize,
    pub initial_sync_ms_empty_rooms: Option<f64>,
    pub initial_sync_events_per_room: usize,
    pub initial_sync_ms_full_rooms: Option<f64>,
    pub sliding_messages_per_s: Option<f64>,
    pub sliding_delivery_latency_ms: Percentiles,
    pub sliding_undelivered: Option<u64>,
    pub sliding_server_cpu_ms_per_message: Option<f64>,
    pub sliding_room_list_initial_ms: Option<f64>,
    pub sliding_room_list_grown_ms: Option<f64>,
    pub sliding_noop_ms: Option<f64>,
    pub sliding_noop_server_cpu_ms: Option<f64>,
    /// `--big-room`.
    pub big_room: Option<crate::big_room::BigRoom>,
    /// `--soak`.
    pub soak: Option<Soak>,
}

/// A soak: a fixed rate for a long time, and whether memory stays flat.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Soak {
    pub seconds: u64,
    pub messages_per_s: f64,
    pub undelivered: u64,
    pub delivery_latency_ms: Percentiles,
    /// RSS (MiB) at the start, the middle and the end.
    pub rss_mib: [f64; 3],
    pub rss_max_mib: f64,
}

impl Soak {
    pub fn of(length: Duration, load: &crate::workload::LoadResult, rss: &[f64]) -> Soak {
        let at = |fraction: f64| {
            let index = ((rss.len().saturating_sub(1)) as f64 * fraction) as usize;
            rss.get(index).copied().unwrap_or(0.0)
        };
        Soak {
            seconds: length.as_secs(),
            messages_per_s: load.accepted as f64 / load.elapsed.as_secs_f64(),
            undelivered: load.undelivered,
            delivery_latency_ms: Percentiles::of(load.delivery_latencies.clone()),
            rss_mib: [at(0.0), at(0.5), at(1.0)],
            rss_max_mib: rss.iter().copied().fold(0.0, f64::max),
        }
    }
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// A label, a value and its decimals.
type Row = (String, Option<f64>, usize);

/// The four latency rows of one kind (`send`, `delivery`).
fn latency_rows(kind: &str, latency: &Percentiles) -> [Row; 4] {
    let p = latency;
    [
        ("p50", p.p50),
        ("p95", p.p95),
        ("p99", p.p99),
        ("max", p.max),
    ]
    .map(|(which, ms)| (format!("{kind} latency {which} (ms)"), Some(ms), 2))
}

/// The table's rows for one server.
fn rows(f: &Figures) -> Vec<Row> {
    let mut rows = vec![
        ("startup to first /versions (ms)".into(), f.startup_ms, 0),
        ("idle RSS (MiB)".into(), f.idle_rss_mib, 1),
        ("peak RSS (MiB)".into(), f.peak_rss_mib, 1),
        (
            "registrations+logins per s".into(),
            Some(f.registrations_and_logins_per_s),
            1,
        ),
        ("messages accepted per s".into(), Some(f.messages_per_s), 1),
    ];
    rows.extend(latency_rows("send", &f.send_latency_ms));
    rows.extend(latency_rows("delivery", &f.delivery_latency_ms));
    rows.extend([
        ("undelivered messages".into(), Some(f.undelivered as f64), 0),
        (
            "server CPU during load (s)".into(),
            f.server_cpu_s_during_load,
            2,
        ),
        (
            "server CPU per message (ms)".into(),
            f.server_cpu_ms_per_message,
            3,
        ),
        (
            "load generator CPU during load (s)".into(),
            Some(f.load_generator_cpu_s_during_load),
            2,
        ),
        (
            "idle users long-polling during load".into(),
            Some(f.idle_long_polls as f64),
            0,
        ),
        (
            format!(
                "initial sync, {} rooms, no history (ms)",
                f.initial_sync_rooms
            ),
            f.initial_sync_ms_empty_rooms,
            1,
        ),
        (
            format!(
                "initial sync, {} rooms x {} events (ms)",
                f.initial_sync_rooms, f.initial_sync_events_per_room
            ),
            f.initial_sync_ms_full_rooms,
            1,
        ),
        (
            "sliding: messages accepted per s".into(),
            f.sliding_messages_per_s,
            1,
        ),
    ]);
    rows.extend(latency_rows(
        "sliding: delivery",
        &f.sliding_delivery_latency_ms,
    ));
    rows.extend([
        (
            "sliding: undelivered messages".into(),
            f.sliding_undelivered.map(|u| u as f64),
            0,
        ),
        (
            "sliding: server CPU per message (ms)".into(),
            f.sliding_server_cpu_ms_per_message,
            3,
        ),
        (
            format!(
                "sliding: room list 0-19, {} rooms (ms)",
                f.initial_sync_rooms
            ),
            f.sliding_room_list_initial_ms,
            1,
        ),
        (
            "sliding: room list grown to 0-99 (ms)".into(),
            f.sliding_room_list_grown_ms,
            1,
        ),
        (
            "sliding: incremental, nothing new (ms)".into(),
            f.sliding_noop_ms,
            2,
        ),
        (
            "sliding: server CPU per such request (ms)".into(),
            f.sliding_noop_server_cpu_ms,
            3,
        ),
    ]);
    if let Some(big) = &f.big_room {
        rows.extend(big_room_rows(big));
    }
    if let Some(soak) = &f.soak {
        let label = |what: &str| format!("soak {} s: {what}", soak.seconds);
        rows.push((label("messages per s"), Some(soak.messages_per_s), 1));
        rows.push((label("undelivered"), Some(soak.undelivered as f64), 0));
        rows.push((
            label("delivery p99 (ms)"),
            Some(soak.delivery_latency_ms.p99),
            2,
        ));
        for (when, rss) in ["start", "middle", "end"].iter().zip(soak.rss_mib) {
            rows.push((label(&format!("RSS at the {when} (MiB)")), Some(rss), 1));
        }
        rows.push((label("RSS at most (MiB)"), Some(soak.rss_max_mib), 1));
    }
    rows
}

/// The big room's rows (`--big-room`).
fn big_room_rows(big: &crate::big_room::BigRoom) -> Vec<Row> {
    let n = big.members;
    let mut rows = vec![("big room: members".to_owned(), Some(n as f64), 0)];
    rows.extend(latency_rows("big room: join", &big.join_ms));
    rows.push((
        "big room: messages per s (5 talking)".into(),
        Some(big.messages_per_s),
        1,
    ));
    rows.extend(latency_rows("big room: send", &big.send_latency_ms));
    rows.extend(latency_rows("big room: delivery", &big.delivery_latency_ms));
    rows.extend([
        (
            "big room: undelivered".into(),
            Some(big.undelivered as f64),
            0,
        ),
        (
            "big room: server CPU per message (ms)".into(),
            big.server_cpu_ms_per_message,
            3,
        ),
        ("big room: /members (ms)".into(), Some(big.members_ms), 1),
        (
            "big room: initial sync, lazy members (ms)".into(),
            Some(big.initial_sync_lazy_ms),
            1,
        ),
        (
            "big room: initial sync, all members (ms)".into(),
            Some(big.initial_sync_ms),
            1,
        ),
        (
            "big room: incremental sync, one message (ms)".into(),
            Some(big.incremental_sync_ms),
            1,
        ),
    ]);
    rows
}

/// The table: one column per server, and kith/other ratios when there are two.
pub fn table(all: &[Figures]) -> String {
    let mut out = String::new();
    let header: Vec<String> = all.iter().map(|f| f.server.clone()).collect();
    out.push_str(&format!("{:<46}", "metric"));
    for name in &header {
        out.push_str(&format!("{name:>14}"));
    }
    if all.len() == 2 {
        out.push_str(&format!("{:>16}", format!("{}/{}", header[0], header[1])));
    }
    out.push('\n');
    let per_server: Vec<_> = all.iter().map(rows).collect();
    for (i, (label, _, digits)) in per_server[0].iter().enumerate() {
        out.push_str(&format!("{label:<46}"));
        for rows in &per_server {
            out.push_str(&format!("{:>14}", opt(rows[i].1, *digits)));
        }
        if let [a, b] = per_server.as_slice() {
            let ratio = match (a[i].1, b[i].1) {
                (Some(x), Some(y)) if y != 0.0 => format!("{:.3}", x / y),
                _ => "-".into(),
            };
            out.push_str(&format!("{ratio:>16}"));
        }
        out.push('\n');
    }
    out
}
