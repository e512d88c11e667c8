//! push-service: where a user's phones get pushes (pushers), the pushes owed to them, and
//! their delivery to push gateways (the Push Gateway API, `/_matrix/push/v1/notify`).
//!
//! Messaging writes a push into the queue (`position_userid_push`) in the same batch as the
//! event that notifies a user with a pusher, so a push is never lost to a crash or a
//! restart; the sender here takes them in order, retries a gateway that fails with backoff
//! (1 s doubling to 10 min, for a day), and removes pushers a gateway rejects. Each user's
//! notifications are also listed for `/notifications`.

use std::sync::Arc;
use std::time::Duration;

use kith_storage::{Batch, Storage, catalog};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::services::error::{Error, Result};
use crate::util::now_ms;

/// The path every HTTP pusher's `data.url` must end in.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// How many notifications `/notifications` keeps per user.
const KEPT_NOTIFICATIONS: usize = 500;
/// A push not delivered within this long is dropped (the phone will sync anyway).
const GIVE_UP_AFTER_MS: u64 = 24 * 3600 * 1000;
const FIRST_RETRY_MS: u64 = 1000;
const MAX_RETRY_MS: u64 = 10 * 60 * 1000;

/// A pusher as the client set it (`POST /pushers/set`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pusher {
    pub pushkey: String,
    pub kind: String,
    pub app_id: String,
    pub app_display_name: String,
    pub device_display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_tag: Option<String>,
    pub lang: String,
    /// `url` (the gateway's notify endpoint) and `format` (`event_id_only`), and whatever
    /// else the app put there for its gateway.
    pub data: Value,
    /// When it was set (ms), for the gateway.
    #[serde(default)]
    pub pushkey_ts: u64,
}

/// A push owed to a user for an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushJob {
    pub room_id: String,
    pub event_id: String,
    pub highlight: bool,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub next_try_ms: u64,
    pub created_ms: u64,
}

/// A notification as `/notifications` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notified {
    pub room_id: String,
    pub event_id: String,
    pub actions: Value,
    pub highlight: bool,
    pub ts: u64,
}

/// A page of `/notifications`: (position, notification), newest first, and where the next
/// page starts.
pub struct NotificationsPage {
    pub listed: Vec<(u64, Notified)>,
    pub next: Option<u64>,
}

pub struct Pushers {
    storage: Storage,
    http: kith_federation::GuardedHttp,
}

/// What the sender needs of the rest of the server to describe a push.
pub trait PushContext: Send + Sync + 'static {
    /// The event in client format, if stored.
    fn event(&self, event_id: &str) -> Option<Value>;
    /// The room's name and the sender's display name in it.
    fn names(&self, room_id: &str, sender: &str) -> (Option<String>, Option<String>);
    /// How many notifying events the user has unread, in all rooms.
    fn unread(&self, user: &str) -> u64;
}

impl Pushers {
    pub fn new(storage: Storage, http: kith_federation::GuardedHttp) -> Pushers {
        Pushers { storage, http }
    }

    /// The user's pushers.
    pub fn pushers(&self, user: &str) -> Result<Vec<Pusher>> {
        let rows: Vec<((String, String, String), Pusher)> = self
            .storage
            .scan_prefix(&catalog::USERID_APPID_PUSHKEY_PUSHER, &(user,))?;
        Ok(rows.into_iter().map(|(_, p)| p).collect())
    }

    /// Sets a pusher: an `http` one needs `data.url` ending in the notify path. Without
    /// `append`, the same app and pushkey registered by other users is removed (the phone
    /// changed hands), as the spec says.
    pub async fn set(&self, user: &str, mut pusher: Pusher, append: bool) -> Result<()> {
        if pusher.kind != "http" {
            return Err(Error::invalid_param("Only http pushers are supported"));
        }
        let url = pusher.data["url"].as_str().unwrap_or_default();
        let parsed = reqwest::Url::parse(url).ok();
        let good = parsed
            .as_ref()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.path() == NOTIFY_PATH);
        if !good {
            return Err(Error::invalid_param(format!(
                "data.url must be an http(s) URL whose path is {NOTIFY_PATH}"
            )));
        }
        // An address in a denied range, named by number (the resolver never sees those).
        if let Some(Err(e)) = parsed.as_ref().map(|u| self.http.check(u)) {
            return Err(Error::invalid_param(format!(
                "data.url cannot be used: {e}"
            )));
        }
        if pusher.pushkey.is_empty() || pusher.pushkey.len() > 512 || pusher.app_id.len() > 64 {
            return Err(Error::invalid_param("pushkey or app_id too long or empty"));
        }
        pusher.pushkey_ts = now_ms();
        let mut batch = self.storage.batch();
        if !append {
            let rows: Vec<((String, String, String), Pusher)> = self
                .storage
                .scan_prefix(&catalog::USERID_APPID_PUSHKEY_PUSHER, &())?;
            for ((owner, app, key), _) in rows {
                if owner != user && app == pusher.app_id && key == pusher.pushkey {
                    let row = (owner.as_str(), app.as_str(), key.as_str());
                    batch.delete(&catalog::USERID_APPID_PUSHKEY_PUSHER, &row)?;
                }
            }
        }
        let row = (user, pusher.app_id.as_str(), pusher.pushkey.as_str());
        batch.put(&catalog::USERID_APPID_PUSHKEY_PUSHER, &row, &pusher)?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Removes a pusher (nothing if there is none).
    pub async fn remove(&self, user: &str, app_id: &str, pushkey: &str) -> Result<()> {
        let mut batch = self.storage.batch();
        batch.delete(
            &catalog::USERID_APPID_PUSHKEY_PUSHER,
            &(user, app_id, pushkey),
        )?;
        Ok(self.storage.commit(batch).await?)
    }

    /// The user's notifications, newest first, before `from` (a position), of highlights
    /// only if asked; with the token of the next page.
    pub fn notifications(
        &self,
        user: &str,
        from: Option<u64>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<NotificationsPage> {
        let rows: Vec<((String, u64), Notified)> = self.storage.scan_prefix_back(
            &catalog::USERID_POSITION_NOTIFIED,
            &(user,),
            &(user, from.unwrap_or(u64::MAX)),
            KEPT_NOTIFICATIONS,
        )?;
        let mut listed: Vec<(u64, Notified)> = rows
            .into_iter()
            .filter(|(_, n)| !only_highlight || n.highlight)
            .map(|((_, position), n)| (position, n))
            .take(limit + 1)
            .collect();
        let more = listed.len() > limit;
        listed.truncate(limit);
        let next = more.then(|| listed.last().map(|(p, _)| *p)).flatten();
        Ok(NotificationsPage { listed, next })
    }
}

/// Records a notification of `user` for the event at `position` and, if they have a
/// pusher, the push it owes them, in `batch` (messaging calls this as it counts the
/// event).
pub fn notify_into(
    storage: &Storage,
    batch: &mut Batch,
    (user, position): (&str, u64),
    notified: Notified,
) -> kith_storage::Result<()> {
    let has_pusher = storage.has_prefix(&catalog::USERID_APPID_PUSHKEY_PUSHER, &(user,))?;
    if has_pusher {
        let job = PushJob {
            room_id: notified.room_id.clone(),
            event_id: notified.event_id.clone(),
            highlight: notified.highlight,
            attempts: 0,
            next_try_ms: 0,
            created_ms: now_ms(),
        };
        batch.put(&catalog::POSITION_USERID_PUSH, &(position, user), &job)?;
    }
    batch.put(
        &catalog::USERID_POSITION_NOTIFIED,
        &(user, position),
        &notified,
    )?;
    // Only the newest are kept; looked at now and then, not at every notification.
    if position % 64 != 0 {
        return Ok(());
    }
    let kept: Vec<((String, u64), Notified)> = storage.scan_prefix_back(
        &catalog::USERID_POSITION_NOTIFIED,
        &(user,),
        &(user, u64::MAX),
        KEPT_NOTIFICATIONS + 128,
    )?;
    for ((_, old), _) in kept.iter().skip(KEPT_NOTIFICATIONS - 1) {
        batch.delete(&catalog::USERID_POSITION_NOTIFIED, &(user, *old))?;
    }
    Ok(())
}

/// Forgets, in `batch`, a purged room's notifications of its local `users` and the pushes
/// still owed for it.
pub fn forget_room_into(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    users: &[&str],
) -> kith_storage::Result<()> {
    let pushes: Vec<((u64, String), PushJob)> =
        storage.scan_prefix(&catalog::POSITION_USERID_PUSH, &())?;
    for ((position, user), job) in pushes {
        if job.room_id == room {
            batch.delete(&catalog::POSITION_USERID_PUSH, &(position, user.as_str()))?;
        }
    }
    for user in users {
        let notified: Vec<((String, u64), Notified)> =
            storage.scan_prefix(&catalog::USERID_POSITION_NOTIFIED, &(*user,))?;
        for ((_, position), notified) in notified {
            if notified.room_id == room {
                batch.delete(&catalog::USERID_POSITION_NOTIFIED, &(*user, position))?;
            }
        }
    }
    Ok(())
}

/// Delivers queued pushes until the process ends: at every commit, and when a retry is due.
pub fn spawn(pushers: Arc<Pushers>, context: Arc<dyn PushContext>) {
    tokio::spawn(async move {
        let mut commits = pushers.storage.subscribe();
        loop {
            let wait = match pushers.deliver_due(context.as_ref()).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!("push delivery failed: {}", e.message());
                    Some(Duration::from_secs(5))
                }
            };
            let wait = wait.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    });
}

impl Pushers {
    /// Sends every push that is due; returns how long until the next retry, if any waits.
    async fn deliver_due(&self, context: &dyn PushContext) -> Result<Option<Duration>> {
        let jobs: Vec<((u64, String), PushJob)> = self
            .storage
            .scan_prefix(&catalog::POSITION_USERID_PUSH, &())?;
        let now = now_ms();
        let mut next: Option<u64> = None;
        for ((position, user), mut job) in jobs {
            if job.next_try_ms > now {
                next = Some(next.map_or(job.next_try_ms, |n| n.min(job.next_try_ms)));
                continue;
            }
            let key = (position, user.as_str());
            let delivered = self.push(&user, &job, context).await;
            let mut batch = self.storage.batch();
            match delivered {
                Ok(rejected) => {
                    batch.delete(&catalog::POSITION_USERID_PUSH, &key)?;
                    for (app_id, pushkey) in rejected {
                        tracing::info!(%user, %app_id, "the push gateway rejected a pushkey: pusher removed");
                        let row = (user.as_str(), app_id.as_str(), pushkey.as_str());
                        batch.delete(&catalog::USERID_APPID_PUSHKEY_PUSHER, &row)?;
                    }
                }
                Err(e) if now.saturating_sub(job.created_ms) > GIVE_UP_AFTER_MS => {
                    tracing::info!(%user, "push given up after a day: {e}");
                    batch.delete(&catalog::POSITION_USERID_PUSH, &key)?;
                }
                Err(e) => {
                    let delay = (FIRST_RETRY_MS << job.attempts.min(20)).min(MAX_RETRY_MS);
                    tracing::debug!(%user, "push failed, again in {delay} ms: {e}");
                    job.attempts += 1;
                    job.next_try_ms = now + delay;
                    next = Some(next.map_or(job.next_try_ms, |n| n.min(job.next_try_ms)));
                    batch.put(&catalog::POSITION_USERID_PUSH, &key, &job)?;
                }
            }
            self.storage.commit(batch).await?;
        }
        Ok(next.map(|at| Duration::from_millis(at.saturating_sub(now_ms()).max(10))))
    }

    /// One push to each of the user's pushers; the (app ID, pushkey) pairs their gateways
    /// rejected. An error if any gateway could not be reached or failed: the push is tried
    /// again (gateways drop duplicates by event ID).
    async fn push(
        &self,
        user: &str,
        job: &PushJob,
        context: &dyn PushContext,
    ) -> std::result::Result<Vec<(String, String)>, String> {
        let pushers = self.pushers(user).map_err(|e| e.message())?;
        let event = context.event(&job.event_id);
        let unread = context.unread(user);
        let mut rejected = Vec::new();
        for pusher in pushers {
            let body = notification(&pusher, job, event.as_ref(), unread, context);
            let url = pusher.data["url"].as_str().unwrap_or_default();
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
            self.http.check(&parsed)?;
            let answer = (self.http.http)
                .post(parsed)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !answer.status().is_success() {
                return Err(format!("{url} answered {}", answer.status()));
            }
            let answer: Value = answer.json().await.unwrap_or_default();
            let listed = answer["rejected"].as_array().cloned().unwrap_or_default();
            if listed.iter().any(|k| k == pusher.pushkey.as_str()) {
                rejected.push((pusher.app_id.clone(), pusher.pushkey.clone()));
            }
        }
        Ok(rejected)
    }
}

/// The Push Gateway API's `notification` for one pusher: everything, or with
/// `format: event_id_only` only the IDs and counts (the app fetches the rest).
fn notification(
    pusher: &Pusher,
    job: &PushJob,
    event: Option<&Value>,
    unread: u64,
    context: &dyn PushContext,
) -> Value {
    let mut data = pusher.data.clone();
    if let Some(data) = data.as_object_mut() {
        data.remove("url");
    }
    let mut tweaks = json!({});
    if job.highlight {
        tweaks["highlight"] = true.into();
    }
    let device = json!({
        "app_id": pusher.app_id, "pushkey": pusher.pushkey, "pushkey_ts": pusher.pushkey_ts / 1000,
        "data": data, "tweaks": tweaks,
    });
    let mut notification = json!({
        "event_id": job.event_id,
        "room_id": job.room_id,
        "counts": { "unread": unread },
        "devices": [device],
        "prio": if job.highlight { "high" } else { "low" },
    });
    let only_ids = pusher.data["format"] == "event_id_only";
    if let (Some(event), false) = (event, only_ids) {
        let sender = event["sender"].as_str().unwrap_or_default();
        let (room_name, sender_name) = context.names(&job.room_id, sender);
        notification["type"] = event["type"].clone();
        notification["sender"] = event["sender"].clone();
        notification["content"] = event["content"].clone();
        if let Some(name) = room_name {
            notification["room_name"] = name.into();
        }
        if let Some(name) = sender_name {
            notification["sender_display_name"] = name.into();
        }
        // Messages wake the phone, as Synapse sends them.
        if matches!(
            event["type"].as_str(),
            Some("m.room.message" | "m.room.encrypted")
        ) {
            notification["prio"] = "high".into();
        }
    }
    json!({ "notification": notification })
}
