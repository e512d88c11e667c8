//! Pushes to phones: pushers, delivery to a push gateway the test runs on loopback (it
//! implements the Push Gateway API and checks each notification's shape), nothing for the
//! sender or a muted room, pushes kept across a restart while the gateway is down, pushers
//! dropped when the gateway rejects them, and `/notifications`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

const OK: u8 = 0;
const DOWN: u8 = 1;
const REJECT: u8 = 2;

#[derive(Clone, Default)]
struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    mode: Arc<AtomicU8>,
}

/// The Push Gateway API's notify endpoint: checks the notification's shape (the spec's
/// required fields and types), keeps it, and answers as a gateway does.
async fn notify(
    State(gateway): State<Gateway>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mode = gateway.mode.load(Ordering::SeqCst);
    if mode == DOWN {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
    }
    let n = &body["notification"];
    let devices = n["devices"].as_array().expect("devices is an array");
    assert!(!devices.is_empty(), "{body}");
    for device in devices {
        assert!(
            device["app_id"].is_string() && device["pushkey"].is_string(),
            "{body}"
        );
        assert!(
            device["data"].get("url").is_none(),
            "the gateway's own URL is not sent: {body}"
        );
    }
    assert!(n["counts"]["unread"].is_u64(), "{body}");
    assert!(
        n["event_id"].is_string() && n["room_id"].is_string(),
        "{body}"
    );
    assert!(matches!(n["prio"].as_str(), Some("high" | "low")), "{body}");
    let pushkey = devices[0]["pushkey"].clone();
    gateway.received.lock().unwrap().push(body);
    let rejected = match mode {
        REJECT => json!([pushkey]),
        _ => json!([]),
    };
    (StatusCode::OK, Json(json!({ "rejected": rejected })))
}

impl Gateway {
    async fn start(&self) -> String {
        let router = axum::Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/_matrix/push/v1/notify",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    fn pushed(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) for a push about `event`.
    async fn wait_for(&self, event: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .pushed()
                .into_iter()
                .find(|p| p["notification"]["event_id"] == event);
            if let Some(found) = found {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no push for {event}: {:?}",
                self.pushed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn about(&self, event: &str) -> usize {
        self.pushed()
            .iter()
            .filter(|p| p["notification"]["event_id"] == event)
            .count()
    }
}

fn pusher(url: &str, pushkey: &str, format: Option<&str>) -> Value {
    let mut data = json!({ "url": url });
    if let Some(format) = format {
        data["format"] = format.into();
    }
    json!({
        "pushkey": pushkey, "kind": "http", "app_id": "org.example.app",
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": data,
    })
}

#[tokio::test]
async fn pushes_reach_the_gateway_and_survive_a_restart() {
    let gateway = Gateway::default();
    let url = gateway.start().await;
    let server = Server::start(&[("KITH_FEDERATION__DENIED_IP_RANGES", "[]")]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let set = "/_matrix/client/v3/pushers/set";
    let (status, answer) = server
        .post(set, Some(&bob_token), pusher(&url, "key-1", None))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, listed) = server
        .get("/_matrix/client/v3/pushers", Some(&bob_token))
        .await;
    assert_eq!(listed["pushers"][0]["pushkey"], "key-1", "{listed}");
    assert_eq!(listed["pushers"][0]["data"]["url"], url);

    let room = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let hello = server.say(&alice_token, &room, "hello bob").await;
    let push = gateway.wait_for(&hello).await;
    let n = &push["notification"];
    assert_eq!(n["room_id"], room);
    assert_eq!(n["sender"], alice);
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["content"]["body"], "hello bob");
    assert_eq!(n["sender_display_name"], "alice");
    assert_eq!(n["prio"], "high");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["devices"][0]["pushkey"], "key-1");
    // Nothing for the sender's own message.
    let own = server.say(&bob_token, &room, "my own words").await;

    // An event_id_only pusher gets the IDs and counts, no content.
    let (status, _) = server
        .post(
            set,
            Some(&bob_token),
            pusher(&url, "key-2", Some("event_id_only")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = server.say(&alice_token, &room, "second").await;
    gateway.wait_for(&second).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.about(&second) < 2 {
        assert!(Instant::now() < deadline, "{:?}", gateway.pushed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slim = gateway
        .pushed()
        .into_iter()
        .find(|p| {
            p["notification"]["event_id"] == second
                && p["notification"]["devices"][0]["pushkey"] == "key-2"
        })
        .unwrap();
    assert!(slim["notification"].get("content").is_none(), "{slim}");
    assert_eq!(slim["notification"]["counts"]["unread"], 2);
    assert_eq!(
        gateway.about(&own),
        0,
        "the sender got a push for their own message"
    );

    // A muted room pushes nothing.
    let path = format!("/_matrix/client/v3/pushrules/global/room/{room}");
    let (status, muted) = server
        .put(&path, Some(&bob_token), json!({ "actions": [] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{muted}");
    let quiet = server.say(&alice_token, &room, "shh").await;

    // The gateway goes down and kith restarts: the push waits, then arrives once.
    gateway.mode.store(DOWN, Ordering::SeqCst);
    let elsewhere = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let kept = server
        .say(&alice_token, &elsewhere, "while it was down")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = server.restart();
    gateway.mode.store(OK, Ordering::SeqCst);
    gateway.wait_for(&kept).await;
    assert_eq!(gateway.about(&quiet), 0, "a muted room pushed");

    // The gateway rejects the pushkeys: the pushers go, and later messages push nothing.
    gateway.mode.store(REJECT, Ordering::SeqCst);
    let last = server.say(&alice_token, &elsewhere, "rejected").await;
    gateway.wait_for(&last).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, listed) = server
            .get("/_matrix/client/v3/pushers", Some(&bob_token))
            .await;
        if listed["pushers"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "pushers kept: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.mode.store(OK, Ordering::SeqCst);
    let after = server.say(&alice_token, &elsewhere, "after").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.about(&after), 0);

    // /notifications lists what notified bob, newest first; only=highlight the mentions.
    let mention =
        json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": [bob] } });
    let path = format!("/_matrix/client/v3/rooms/{elsewhere}/send/m.room.message/mention1");
    let (_, mentioned) = server.put(&path, Some(&alice_token), mention).await;
    let (status, list) = server
        .get("/_matrix/client/v3/notifications", Some(&bob_token))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&Value> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["event"]["event_id"])
        .collect();
    assert_eq!(ids[0], &mentioned["event_id"], "{list}");
    assert!(
        ids.contains(&&json!(hello))
            && !ids.contains(&&json!(quiet))
            && !ids.contains(&&json!(own))
    );
    assert_eq!(list["notifications"][0]["read"], false);
    let (_, highlights) = server
        .get(
            "/_matrix/client/v3/notifications?only=highlight",
            Some(&bob_token),
        )
        .await;
    let highlighted = highlights["notifications"].as_array().unwrap();
    assert_eq!(highlighted.len(), 1, "{highlights}");
    let (_, page) = server
        .get("/_matrix/client/v3/notifications?limit=1", Some(&bob_token))
        .await;
    let next = page["next_token"].as_str().expect("a next page");
    let path = format!("/_matrix/client/v3/notifications?limit=1&from={next}");
    let (_, second_page) = server.get(&path, Some(&bob_token)).await;
    assert_ne!(
        second_page["notifications"][0]["event"]["event_id"],
        page["notifications"][0]["event"]["event_id"]
    );

    // Bad pushers.
    let wrong_path = pusher("http://127.0.0.1:1/somewhere", "key-3", None);
    assert_error(
        &server.post(set, Some(&bob_token), wrong_path).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let mut email = pusher(&url, "bob@example.org", None);
    email["kind"] = "email".into();
    assert_error(
        &server.post(set, Some(&bob_token), email).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let anonymous = server
        .request(Method::GET, "/_matrix/client/v3/pushers", None, None)
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let bad = server
        .get("/_matrix/client/v3/notifications?from=x", Some(&bob_token))
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

/// A push gateway at an address in a denied range (loopback, by default) is refused, by
/// name or by number, as federation refuses them.
#[tokio::test]
async fn pushers_cannot_aim_at_denied_addresses() {
    let server = Server::start(&[]);
    let (_, token) = server.user("bob").await;
    let set = "/_matrix/client/v3/pushers/set";
    for url in [
        "http://127.0.0.1:9/_matrix/push/v1/notify",
        "http://[::1]:9/_matrix/push/v1/notify",
        "http://2130706433:9/_matrix/push/v1/notify",
        "http://169.254.169.254/_matrix/push/v1/notify",
    ] {
        let refused = server
            .post(set, Some(&token), pusher(url, "key", None))
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let (_, listed) = server.get("/_matrix/client/v3/pushers", Some(&token)).await;
    assert_eq!(listed["pushers"], json!([]));
}
