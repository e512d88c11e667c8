//! A big room (`--big-room N`): N members, most of them idle, as in a community's main
//! room. What joining costs as it fills, then five active members chatting at a fixed rate
//! (send and delivery latency, the server's CPU per message), the member list, and a
//! member's initial sync (with lazy-loaded members, as Element asks, and without) and
//! incremental sync.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::report::{Percentiles, ms};
use crate::workload::{self, Api, User, Via, progress};

/// How many of the members talk; the others are idle (not even connected).
const ACTIVE: usize = 5;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BigRoom {
    pub members: usize,
    pub join_ms: Percentiles,
    pub messages_per_s: f64,
    pub send_latency_ms: Percentiles,
    pub delivery_latency_ms: Percentiles,
    pub undelivered: u64,
    pub server_cpu_ms_per_message: Option<f64>,
    pub members_ms: f64,
    pub initial_sync_lazy_ms: f64,
    pub initial_sync_ms: f64,
    pub incremental_sync_ms: f64,
}

async fn timed<T>(work: impl Future<Output = Result<T, String>>) -> Result<Duration, String> {
    let started = Instant::now();
    work.await?;
    Ok(started.elapsed())
}

pub async fn measure(
    api: &Api,
    (name, run): (&str, u128),
    members: usize,
    (duration, rate): (Duration, f64),
    pid: Option<u32>,
) -> Result<BigRoom, String> {
    let members = members.max(ACTIVE + 1);
    progress(&format!(
        "{name}: a room of {members} members: registering them"
    ));
    let names: Vec<String> = (0..members).map(|i| format!("b{run}m{i}")).collect();
    let users: Vec<User> = workload::each(names, 8, |name| {
        let api = api.clone();
        async move { api.register_and_login(&name).await }
    })
    .await?;
    let owner = &users[0];
    let body = json!({ "preset": "public_chat", "name": "Big room" });
    let created = api
        .post("/_matrix/client/v3/createRoom", Some(&owner.token), &body)
        .await?;
    let room = created["room_id"].as_str().unwrap_or_default().to_owned();
    progress(&format!("{name}: {} members joining", members - 1));
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    let joins = workload::each(users[1..].to_vec(), 8, |user| {
        let (api, join) = (api.clone(), join.clone());
        async move { timed(api.post(&join, Some(&user.token), &json!({}))).await }
    })
    .await?;
    let mut figures = BigRoom {
        members,
        join_ms: Percentiles::of(joins),
        ..BigRoom::default()
    };

    progress(&format!(
        "{name}: {ACTIVE} members chatting for {} s",
        duration.as_secs()
    ));
    let active = &users[members - ACTIVE..];
    let pairs: Vec<(User, User, String)> = (0..ACTIVE)
        .map(|i| {
            let (sender, receiver) = (&active[i], &active[(i + 1) % ACTIVE]);
            (sender.clone(), receiver.clone(), room.clone())
        })
        .collect();
    let load = workload::send_and_receive(api, &pairs, (duration, 1, Some(rate)), (Via::Sync, pid))
        .await?;
    figures.messages_per_s = load.accepted as f64 / load.elapsed.as_secs_f64();
    figures.send_latency_ms = Percentiles::of(load.send_latencies);
    figures.delivery_latency_ms = Percentiles::of(load.delivery_latencies);
    figures.undelivered = load.undelivered;
    figures.server_cpu_ms_per_message = (load.server_cpu)
        .filter(|_| load.accepted > 0)
        .map(|used| ms(used) / load.accepted as f64);

    progress(&format!("{name}: the member list and a member's syncs"));
    let reader = &users[1];
    let path = format!("/_matrix/client/v3/rooms/{room}/members");
    figures.members_ms = ms(timed(api.get(&path, &reader.token)).await?);
    let lazy = "%7B%22room%22%3A%7B%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%7D%7D";
    let path = format!("/_matrix/client/v3/sync?filter={lazy}");
    figures.initial_sync_lazy_ms = ms(timed(api.get(&path, &reader.token)).await?);
    figures.initial_sync_ms = ms(api.initial_sync(reader).await?);
    let first = api.sync(reader, None, 0).await?;
    let since = first["next_batch"].as_str().unwrap_or_default().to_owned();
    api.send_text(owner, &room, &format!("t{run}big"), "one more")
        .await;
    figures.incremental_sync_ms = ms(timed(api.sync(reader, Some(&since), 0)).await?);
    Ok(figures)
}
