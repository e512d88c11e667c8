//! Sliding sync (MSC4186), as Element X uses it: the room list's first request and its
//! growth to 100 rooms, the cost of an incremental request with nothing new, and (through
//! `workload::send_and_receive`) delivery to sliding-sync long-polls.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procfs;
use crate::report::ms;
use crate::workload::{Api, User};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The room list Element X asks for (matrix-sdk-ui 0.18's `all_rooms`), over `ranges`.
pub fn room_list(conn: &str, ranges: Value, timeline_limit: u64) -> Value {
    json!({
        "conn_id": conn,
        "lists": { "all_rooms": {
            "ranges": ranges,
            "timeline_limit": timeline_limit,
            "required_state": [
                ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.avatar", ""],
                ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
                ["org.matrix.msc3401.call.member", "*"], ["m.room.join_rules", ""],
                ["m.room.tombstone", ""], ["m.room.create", ""],
                ["m.room.history_visibility", ""], ["io.element.functional_members", ""],
                ["m.space.parent", "*"], ["m.space.child", "*"],
            ],
        }},
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        },
    })
}

impl Api {
    /// One sliding sync from `pos` (none: a new connection).
    pub async fn sliding(
        &self,
        user: &User,
        pos: Option<&str>,
        timeout_ms: u64,
        body: &Value,
    ) -> Result<Value, String> {
        let mut path = format!("{PATH}?timeout={timeout_ms}");
        if let Some(pos) = pos {
            path.push_str("&pos=");
            path.push_str(&pos.replace('/', "%2F"));
        }
        self.post(&path, Some(&user.token), body).await
    }
}

fn pos(response: &Value) -> Result<String, String> {
    response["pos"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("a sliding sync without pos: {response}"))
}

/// What the room list costs.
pub struct RoomListCosts {
    /// The first request, rooms 0–19 (median of three new connections).
    pub initial_ms: f64,
    /// The same connection grown to 0–99.
    pub grown_ms: f64,
    /// An incremental request with nothing new (median of many).
    pub noop_ms: f64,
    /// The server's CPU for one of those.
    pub noop_cpu_ms: Option<f64>,
}

/// Times the room list of `user` (in many rooms), as Element X opens and grows it, then
/// polls it with nothing new.
pub async fn room_list_costs(
    api: &Api,
    user: &User,
    pid: Option<u32>,
) -> Result<RoomListCosts, String> {
    let (mut initial, mut grown) = (Vec::new(), Vec::new());
    let mut last = String::new();
    for attempt in 0..3 {
        let conn = format!("bench-{attempt}");
        let started = Instant::now();
        let first = api
            .sliding(user, None, 0, &room_list(&conn, json!([[0, 19]]), 1))
            .await?;
        initial.push(started.elapsed());
        let started = Instant::now();
        let body = room_list(&conn, json!([[0, 99]]), 1);
        let whole = api.sliding(user, Some(&pos(&first)?), 0, &body).await?;
        grown.push(started.elapsed());
        last = pos(&whole)?;
    }
    let body = room_list("bench-2", json!([[0, 99]]), 1);
    let mut quiet = Vec::new();
    let cpu_before = pid.and_then(procfs::cpu_time);
    const QUIET: usize = 500;
    for _ in 0..QUIET {
        let started = Instant::now();
        let response = api.sliding(user, Some(&last), 0, &body).await?;
        quiet.push(started.elapsed());
        last = pos(&response)?;
    }
    let cpu = pid.and_then(procfs::cpu_time).zip(cpu_before);
    let median = |mut times: Vec<Duration>| {
        times.sort();
        ms(times[times.len() / 2])
    };
    Ok(RoomListCosts {
        initial_ms: median(initial),
        grown_ms: median(grown),
        noop_ms: median(quiet),
        noop_cpu_ms: cpu.map(|(after, before)| ms(after.saturating_sub(before)) / QUIET as f64),
    })
}
