//! The workload, over the Client-Server API only, so it runs against any homeserver:
//! registering and logging in users, making direct rooms, sending at full speed while the
//! other side long-polls `/sync`, and timing an initial sync in rooms full of history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const PASSWORD: &str = "bench password";

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

#[derive(Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

impl Api {
    pub fn new(http: reqwest::Client, base: &str) -> Api {
        Api {
            http,
            base: base.to_owned(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let value: Value = response.json().await.map_err(|e| format!("{path}: {e}"))?;
        match status.is_success() {
            true => Ok(value),
            false => Err(format!("{path}: {status} {value}")),
        }
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn put(&self, path: &str, token: &str, body: &Value) -> Result<Value, String> {
        self.call(reqwest::Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// Registers `name` (open registration, `m.login.dummy`), then logs in as it.
    pub async fn register_and_login(&self, name: &str) -> Result<User, String> {
        let body = json!({
            "username": name, "password": PASSWORD, "auth": { "type": "m.login.dummy" },
            "inhibit_login": true,
        });
        self.post("/_matrix/client/v3/register", None, &body)
            .await?;
        let body = json!({
            "type": "m.login.password", "password": PASSWORD,
            "identifier": { "type": "m.id.user", "user": name },
        });
        let login = self.post("/_matrix/client/v3/login", None, &body).await?;
        Ok(User {
            user_id: login["user_id"].as_str().unwrap_or_default().to_owned(),
            token: login["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// A direct room of `owner` with `peer`, invited and joined.
    pub async fn direct_room(&self, owner: &User, peer: &User) -> Result<String, String> {
        let body = json!({
            "preset": "trusted_private_chat", "is_direct": true, "invite": [peer.user_id],
        });
        let created = self
            .post("/_matrix/client/v3/createRoom", Some(&owner.token), &body)
            .await?;
        let room = created["room_id"].as_str().unwrap_or_default().to_owned();
        self.post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&peer.token),
            &json!({}),
        )
        .await?;
        Ok(room)
    }

    pub async fn send_text(&self, user: &User, room: &str, txn: &str, body: &str) -> bool {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let content = json!({ "msgtype": "m.text", "body": body });
        self.put(&path, &user.token, &content).await.is_ok()
    }

    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> Result<Value, String> {
        // A long timeline, so a busy interval is not cut short (`limited`): servers cap it
        // (kith and Synapse at 100), far above the few messages per room between polls.
        let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1000%7D%7D%7D";
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={filter}");
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(since);
        }
        self.get(&path, &user.token).await
    }

    /// An initial sync with the server's default filter, timed: the median of three, so
    /// one that meets a background flush or compaction does not decide the figure. Each
    /// asks with another `timeout` (meaningless for an initial sync), so a server that
    /// caches sync responses (Synapse, for 2 minutes) computes every one.
    pub async fn initial_sync(&self, user: &User) -> Result<Duration, String> {
        let mut times = Vec::new();
        for attempt in 0..3 {
            let started = Instant::now();
            let path = format!("/_matrix/client/v3/sync?timeout={attempt}");
            self.get(&path, &user.token).await?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok(times[1])
    }
}

/// Runs `work` for every item, `parallel` at a time, in order of items.
pub async fn each<T, F, Fut, R>(items: Vec<T>, parallel: usize, work: F) -> Result<Vec<R>, String>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R, String>>,
{
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    stream::iter(items.into_iter().map(work))
        .buffered(parallel.max(1))
        .try_collect()
        .await
}

/// What the send-and-receive phase measured.
pub struct LoadResult {
    pub accepted: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub send_latencies: Vec<Duration>,
    pub delivery_latencies: Vec<Duration>,
    pub undelivered: u64,
    /// The server's CPU time from the first send until every message was delivered (the
    /// receivers' first syncs before it left out).
    pub server_cpu: Option<Duration>,
    /// The load generator's own, over the same window.
    pub own_cpu: Duration,
}

/// How receivers follow their rooms.
#[derive(Clone, Copy)]
pub enum Via {
    /// `/sync` long-polls.
    Sync,
    /// Sliding-sync long-polls on a room-list connection (MSC4186).
    Sliding,
}

/// Each `(sender, receiver, room)` pair: the sender keeps `in_flight` sends going for
/// `duration` (at full speed, or together `rate` per second); the receiver long-polls
/// (`via`) and notes when each message shows up.
pub async fn send_and_receive(
    api: &Api,
    pairs: &[(User, User, String)],
    (duration, in_flight, rate): (Duration, usize, Option<f64>),
    (via, pid): (Via, Option<u32>),
) -> Result<LoadResult, String> {
    let lanes = (pairs.len() * in_flight).max(1);
    // Each call's own transaction IDs and bodies: a repeated transaction ID is answered
    // as a retry, with no new message.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let phase = match via {
        Via::Sync => format!("sync{call}"),
        Via::Sliding => format!("sliding{call}"),
    };
    // Each lane's interval between sends, for the rate asked.
    let pace = rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(lanes as f64 / r));
    // Message body → when its send started; removed when a receiver sees it.
    let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let delivered: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let sending_done = Arc::new(AtomicBool::new(false));

    // Receivers first, each from a fresh `since`, so nothing sent is missed.
    let mut receivers = Vec::new();
    for (_, receiver, _) in pairs {
        let first = match via {
            Via::Sync => api.sync(receiver, None, 0).await?,
            Via::Sliding => api.sliding(receiver, None, 0, &receiving_list()).await?,
        };
        let since = first["next_batch"]
            .as_str()
            .or(first["pos"].as_str())
            .unwrap_or_default()
            .to_owned();
        let (api, user) = (api.clone(), receiver.clone());
        let (pending, delivered, done) = (pending.clone(), delivered.clone(), sending_done.clone());
        receivers.push(tokio::spawn(async move {
            receive(api, user, (since, via), pending, delivered, done).await
        }));
    }

    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let send_latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let cpu_before = pid.and_then(crate::procfs::cpu_time);
    let own_before = crate::procfs::own_cpu_time();
    let started = Instant::now();
    let end = started + duration;
    let mut senders = Vec::new();
    for (index, (sender, _, room)) in pairs.iter().enumerate() {
        for lane in 0..in_flight {
            let (api, user, room) = (api.clone(), sender.clone(), room.clone());
            let (pending, accepted, failed) = (pending.clone(), accepted.clone(), failed.clone());
            let (latencies, phase) = (send_latencies.clone(), phase.clone());
            // Paced lanes start spread over one interval, not all at once.
            let mut next =
                pace.map(|p| started + p.mul_f64((index * in_flight + lane) as f64 / lanes as f64));
            senders.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while Instant::now() < end {
                    if let (Some(at), Some(pace)) = (next.as_mut(), pace) {
                        tokio::time::sleep_until((*at).into()).await;
                        *at += pace;
                        if Instant::now() >= end {
                            break;
                        }
                    }
                    let body = format!("bench {phase} {index}-{lane}-{seq}");
                    let txn = format!("t{phase}{lane}-{seq}");
                    seq += 1;
                    let start = Instant::now();
                    pending.lock().unwrap().insert(body.clone(), start);
                    if api.send_text(&user, &room, &txn, &body).await {
                        latencies.lock().unwrap().push(start.elapsed());
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        pending.lock().unwrap().remove(&body);
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for sender in senders {
        sender.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    sending_done.store(true, Ordering::Relaxed);
    // Receivers stop once everything arrived, or 10 s after the last send.
    for receiver in receivers {
        receiver.await.map_err(|e| e.to_string())??;
    }
    let server_cpu = (pid.and_then(crate::procfs::cpu_time))
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let own_cpu = crate::procfs::own_cpu_time().saturating_sub(own_before);
    let undelivered = pending.lock().unwrap().len() as u64;
    let send_latencies = std::mem::take(&mut *send_latencies.lock().unwrap());
    let delivery_latencies = std::mem::take(&mut *delivered.lock().unwrap());
    Ok(LoadResult {
        accepted: accepted.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        send_latencies,
        delivery_latencies,
        undelivered,
        server_cpu,
        own_cpu,
    })
}

/// A receiver's sliding-sync connection: its rooms with long timelines, so a busy interval
/// is not cut short.
fn receiving_list() -> Value {
    crate::sliding::room_list("bench-receive", json!([[0, 19]]), 100)
}

async fn receive(
    api: Api,
    user: User,
    (mut since, via): (String, Via),
    pending: Arc<Mutex<HashMap<String, Instant>>>,
    delivered: Arc<Mutex<Vec<Duration>>>,
    sending_done: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut grace_end: Option<Instant> = None;
    loop {
        if sending_done.load(Ordering::Relaxed) {
            let end = *grace_end.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
            if pending.lock().unwrap().is_empty() || Instant::now() > end {
                return Ok(());
            }
        }
        let timeout = if sending_done.load(Ordering::Relaxed) {
            500
        } else {
            2000
        };
        let response = match via {
            Via::Sync => api.sync(&user, Some(&since), timeout).await?,
            Via::Sliding => {
                api.sliding(&user, Some(&since), timeout, &receiving_list())
                    .await?
            }
        };
        let seen = Instant::now();
        let (token, rooms, timeline) = match via {
            Via::Sync => (
                &response["next_batch"],
                &response["rooms"]["join"],
                "/timeline/events",
            ),
            Via::Sliding => (&response["pos"], &response["rooms"], "/timeline"),
        };
        since = token.as_str().unwrap_or(&since).to_owned();
        let Some(rooms) = rooms.as_object() else {
            continue;
        };
        for (room_id, room) in rooms {
            let events = room.pointer(timeline).and_then(Value::as_array);
            let found = note_delivered(&pending, &delivered, events.into_iter().flatten(), seen);
            // A gap (`limited`): the client pages back through it, as clients do.
            let gap = match via {
                Via::Sync => &room["timeline"]["limited"],
                Via::Sliding => &room["limited"],
            };
            let prev_batch = match via {
                Via::Sync => &room["timeline"]["prev_batch"],
                Via::Sliding => &room["prev_batch"],
            };
            if found > 0 && gap == true {
                let from = prev_batch.as_str().unwrap_or_default().to_owned();
                fill_gap(&api, &user, room_id, from, (&pending, &delivered), seen).await?;
            }
        }
    }
}

/// Takes the pending messages among `events` as delivered at `seen`; how many.
fn note_delivered<'a>(
    pending: &Mutex<HashMap<String, Instant>>,
    delivered: &Mutex<Vec<Duration>>,
    events: impl Iterator<Item = &'a Value>,
    seen: Instant,
) -> usize {
    let mut pending = pending.lock().unwrap();
    let mut delivered = delivered.lock().unwrap();
    let mut found = 0;
    for event in events {
        let body = event["content"]["body"].as_str().unwrap_or_default();
        if let Some(sent) = pending.remove(body) {
            delivered.push(seen - sent);
            found += 1;
        }
    }
    found
}

/// Pages back through a `limited` timeline's gap with `/messages` until a page holds no
/// pending message (the gap is closed), at most 20 pages; what it finds was delivered
/// when the gap was seen.
async fn fill_gap(
    api: &Api,
    user: &User,
    room: &str,
    mut from: String,
    (pending, delivered): (&Mutex<HashMap<String, Instant>>, &Mutex<Vec<Duration>>),
    seen: Instant,
) -> Result<(), String> {
    for _ in 0..20 {
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100&from={}",
            from.replace('~', "%7E")
        );
        let page = api.get(&path, &user.token).await?;
        let events = page["chunk"].as_array().into_iter().flatten();
        if note_delivered(pending, delivered, events, seen) == 0 {
            return Ok(());
        }
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => return Ok(()),
        }
    }
    Ok(())
}

/// Idle clients: each long-polls `/sync` (30 s) until dropped.
pub struct IdlePolls {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl IdlePolls {
    /// Starts a long-poll loop for each user, from a first sync.
    pub async fn start(api: &Api, users: Vec<User>) -> Result<IdlePolls, String> {
        let mut tasks = Vec::new();
        for user in users {
            let first = api.sync(&user, None, 0).await?;
            let mut since = first["next_batch"].as_str().unwrap_or_default().to_owned();
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(response) = api.sync(&user, Some(&since), 30_000).await {
                    since = response["next_batch"].as_str().unwrap_or(&since).to_owned();
                }
            }));
        }
        Ok(IdlePolls { tasks })
    }

    pub fn count(&self) -> usize {
        self.tasks.len()
    }
}

impl Drop for IdlePolls {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|task| task.abort());
    }
}

/// Makes `rooms` rooms of `owner` and sends `events` messages into each.
pub async fn fill_history(
    api: &Api,
    owner: &User,
    rooms: usize,
    events: usize,
) -> Result<(), String> {
    let body = json!({ "preset": "private_chat" });
    let made = each((0..rooms).collect(), 8, |_| {
        api.post("/_matrix/client/v3/createRoom", Some(&owner.token), &body)
    })
    .await?;
    let rooms: Vec<String> = made
        .iter()
        .map(|r| r["room_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Transaction IDs are per device, not per room: each send gets its own.
    let sends: Vec<(String, String)> = rooms
        .iter()
        .enumerate()
        .flat_map(|(r, room)| (0..events).map(move |n| (room.clone(), format!("h{r}-{n}"))))
        .collect();
    each(sends, 16, |(room, txn)| async move {
        match api
            .send_text(owner, &room, &txn, &format!("history {txn}"))
            .await
        {
            true => Ok(()),
            false => Err(format!("a history send into {room} failed")),
        }
    })
    .await?;
    Ok(())
}

/// An idle pause, for the idle-memory figure.
pub async fn idle(pause: Duration) {
    tokio::time::sleep(pause).await;
}

pub static LOG_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, with the time since the benchmark started.
pub fn progress(message: &str) {
    let start = LOG_START.get_or_init(Instant::now);
    eprintln!("[{:7.1}s] {message}", start.elapsed().as_secs_f64());
}
