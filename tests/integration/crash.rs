//! Crash safety: kill -9 the server while registrations and logins are in flight, restart
//! on the same data, and check every acknowledged account and session is intact and every
//! account is whole (can log in, has its profile, refreshes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{PASSWORD, Server};

/// One worker: registers and logs in users until the server goes away, recording what was
/// acknowledged.
async fn worker(
    base: String,
    worker: usize,
    acked: Arc<Mutex<Vec<(String, Value, Value)>>>,
    count: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..1000 {
        let name = format!("crash_{worker}_{i}");
        let body =
            json!({ "username": name, "password": PASSWORD, "auth": { "type": "m.login.dummy" } });
        let Ok(response) = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&body)
            .send()
            .await
        else {
            return;
        };
        if response.status() != StatusCode::OK {
            return;
        }
        let Ok(registered) = response.json::<Value>().await else {
            return;
        };
        let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name },
            "password": PASSWORD, "refresh_token": true });
        let Ok(response) = http
            .post(format!("{base}/_matrix/client/v3/login"))
            .json(&login)
            .send()
            .await
        else {
            return;
        };
        if response.status() != StatusCode::OK {
            return;
        }
        let Ok(session) = response.json::<Value>().await else {
            return;
        };
        acked.lock().await.push((name, registered, session));
        count.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn acknowledged_accounts_and_sessions_survive_kill_9() {
    let mut server = Server::start(&[]);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(worker(
                server.base.clone(),
                w,
                Arc::clone(&acked),
                Arc::clone(&count),
            ))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < 24 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too slow to register 24 users"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill(); // mid-flight: other registrations and logins are under way
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(20), w).await;
    }
    let server = server.restart();
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 24);

    for (name, registered, session) in &acked {
        for token in [&registered["access_token"], &session["access_token"]] {
            let (status, me) = server.whoami(token.as_str().unwrap()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{name}: acknowledged token lost: {me}"
            );
        }
        let (status, refreshed) = server
            .post(
                "/_matrix/client/v3/refresh",
                None,
                json!({ "refresh_token": session["refresh_token"] }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{name}: refresh token lost: {refreshed}"
        );
    }

    // Every account that exists, acknowledged or caught mid-flight, is whole.
    for w in 0..6 {
        for i in 0.. {
            let name = format!("crash_{w}_{i}");
            let (_, available) = server
                .get(
                    &format!("/_matrix/client/v3/register/available?username={name}"),
                    None,
                )
                .await;
            if available["available"] == true {
                break;
            }
            let (status, login) = server.login(&name, PASSWORD, json!({})).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{name} exists but cannot log in: {login}"
            );
            let mut profile = None;
            for _ in 0..100 {
                let (status, body) = server
                    .get(
                        &format!("/_matrix/client/v3/profile/@{name}:kith.test"),
                        None,
                    )
                    .await;
                if status == StatusCode::OK {
                    profile = Some(body);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                profile.expect("profile created after restart")["displayname"],
                name.as_str()
            );
        }
    }
}

/// What one writer had acknowledged, and what it was doing when the server died.
#[derive(Default)]
struct Written {
    /// (room, transaction ID, event ID) of every acknowledged send.
    sent: Vec<(String, String, String)>,
    /// The last acknowledged display name and account data value, and the one in flight.
    name: (Option<String>, Option<String>),
    data: (Option<String>, Option<String>),
}

/// One writer for one run of the server: sends messages, renames itself and sets account
/// data, in turn, until the server goes away.
async fn write_until_killed(
    base: String,
    (user, token): (String, String),
    room: String,
    tag: String,
    written: Arc<Mutex<Written>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let put = |path: String, body: Value| {
        let request = http
            .put(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            match request.send().await {
                Ok(r) if r.status() == StatusCode::OK => r.json::<Value>().await.ok(),
                _ => None,
            }
        }
    };
    for i in 0.. {
        let value = format!("{tag}-{i}");
        let txn = format!("txn-{value}");
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let body = json!({ "msgtype": "m.text", "body": value });
        let Some(sent) = put(path, body).await else {
            return;
        };
        let event_id = sent["event_id"].as_str().unwrap().to_owned();
        written
            .lock()
            .await
            .sent
            .push((room.clone(), txn, event_id));

        written.lock().await.name.1 = Some(value.clone());
        let path = format!("/_matrix/client/v3/profile/{user}/displayname");
        if put(path, json!({ "displayname": value })).await.is_none() {
            return;
        }
        written.lock().await.name.0 = Some(value.clone());

        written.lock().await.data.1 = Some(value.clone());
        let path = format!("/_matrix/client/v3/user/{user}/account_data/org.kith.crash");
        if put(path, json!({ "value": value })).await.is_none() {
            return;
        }
        written.lock().await.data.0 = Some(value);
    }
}

/// The trial of issue 17: four writers send messages, change their profiles and account
/// data while kith is killed (SIGKILL) at a random moment and restarted on the same data,
/// `KITH_CRASH_ROUNDS` times (5 by default). Afterwards every acknowledged write is there:
/// each acknowledged transaction, sent again, answers the same event ID, which is in the
/// room; each profile and account data value is the last acknowledged one or the one that
/// was in flight. kith restarts every time.
#[tokio::test]
async fn acknowledged_writes_survive_repeated_kill_9_under_load() {
    let rounds: usize = std::env::var("KITH_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut server = Server::start(&[]);
    let (_, owner) = server.user("owner").await;
    let (status, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&owner),
            json!({ "preset": "public_chat" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (user, token) = server.user(&format!("writer{w}")).await;
        let path = format!("/_matrix/client/v3/rooms/{room}/join");
        assert_eq!(
            server.post(&path, Some(&token), json!({})).await.0,
            StatusCode::OK
        );
        writers.push(((user, token), Arc::new(Mutex::new(Written::default()))));
    }
    let mut restarts = Vec::new();
    for round in 0..rounds {
        let running: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(w, (account, written))| {
                let (base, tag) = (server.base.clone(), format!("r{round}w{w}"));
                let written = Arc::clone(written);
                tokio::spawn(write_until_killed(
                    base,
                    account.clone(),
                    room.clone(),
                    tag,
                    written,
                ))
            })
            .collect();
        // A moment between 0.3 and 1.5 s into the load.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        tokio::time::sleep(Duration::from_millis(300 + u64::from(nanos % 1200))).await;
        server.kill();
        for writer in running {
            let _ = tokio::time::timeout(Duration::from_secs(20), writer).await;
        }
        let started = std::time::Instant::now();
        server = server.restart();
        restarts.push(started.elapsed());
    }

    let mut acknowledged = 0;
    for ((user, token), written) in &writers {
        let written = written.lock().await;
        acknowledged += written.sent.len();
        for (room, txn, event_id) in &written.sent {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
            let (status, again) = server
                .put(
                    &path,
                    Some(token),
                    json!({ "msgtype": "m.text", "body": "again" }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{again}");
            assert_eq!(
                again["event_id"],
                event_id.as_str(),
                "transaction {txn} answered another event"
            );
            let path = format!("/_matrix/client/v3/rooms/{room}/event/{event_id}");
            let (status, event) = server.get(&path, Some(token)).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "acknowledged {event_id} is gone: {event}"
            );
        }
        let (_, profile) = server
            .get(&format!("/_matrix/client/v3/profile/{user}"), None)
            .await;
        let name = profile["displayname"].as_str().map(str::to_owned);
        let (acked, in_flight) = &written.name;
        assert!(
            acked.is_none() || name == *acked || name == *in_flight,
            "{user}: display name {name:?}, acknowledged {acked:?}"
        );
        let path = format!("/_matrix/client/v3/user/{user}/account_data/org.kith.crash");
        let (_, data) = server.get(&path, Some(token)).await;
        let value = data["value"].as_str().map(str::to_owned);
        let (acked, in_flight) = &written.data;
        assert!(
            acked.is_none() || value == *acked || value == *in_flight,
            "{user}: account data {value:?}, acknowledged {acked:?}"
        );
    }
    eprintln!(
        "kill -9 under load: {rounds} kills, {acknowledged} acknowledged messages (plus profile and \
         account data writes) all intact; restarts took {restarts:?}"
    );
    assert!(
        acknowledged >= 4 * rounds,
        "too few writes acknowledged to mean anything: {acknowledged}"
    );
}
