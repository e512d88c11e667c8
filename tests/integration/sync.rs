//! `/sync`: initial and incremental, invites, joins, long-polling that wakes on commit, the
//! sender's transaction ID, and every event exactly once under concurrent writers.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

const FILTER: &str = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A100%7D%7D%7D"; // {"room":{"timeline":{"limit":100}}}

async fn sync(server: &Server, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
    let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
    // Presence stays out of these tests' way: syncing does not mark anyone online.
    let path = format!(
        "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={FILTER}{since}&set_presence=offline"
    );
    let (status, body) = server.get(&path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `/sync` long-polls started in the background, one after another from each
/// `next_batch`, until one answers with what `wanted` looks for (up to 20 s in all): other
/// things may come first (a new user's account data, written by the event log).
fn long_poll(
    server: &Server,
    token: &str,
    since: &str,
    wanted: impl Fn(&Value) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Value> {
    let (base, token, mut since) = (server.base.clone(), token.to_owned(), since.to_owned());
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let url = format!(
                "{base}/_matrix/client/v3/sync?timeout=20000&since={since}&set_presence=offline"
            );
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let body = response.json::<Value>().await.unwrap();
            if wanted(&body) || tokio::time::Instant::now() > deadline {
                return body;
            }
            since = body["next_batch"].as_str().unwrap().to_owned();
        }
    })
}

/// Whether a sync response holds an invite, or a message in a joined room.
fn has_invite(sync: &Value) -> bool {
    sync["rooms"]["invite"]
        .as_object()
        .is_some_and(|i| !i.is_empty())
}

fn has_message(sync: &Value) -> bool {
    sync["rooms"]["join"].as_object().is_some_and(|rooms| {
        rooms.values().any(|room| {
            room["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["type"] == "m.room.message"))
        })
    })
}

fn token(user: &Value) -> String {
    user["access_token"].as_str().unwrap().to_owned()
}

fn timeline<'a>(sync: &'a Value, room: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn invites_joins_and_messages_arrive_by_long_poll() {
    let server = Server::start(&[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (alice_token, bob_token) = (token(&alice), token(&bob));

    let initial = sync(&server, &bob_token, None, 0).await;
    assert_eq!(
        initial["device_one_time_keys_count"]["signed_curve25519"],
        0
    );
    assert_eq!(initial["device_unused_fallback_key_types"], json!([]));
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    // Bob waits; Alice's invite wakes him.
    let waiting = long_poll(&server, &bob_token, &since, has_invite);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let encryption = json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } });
    let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": ["@bob:kith.test"], "name": "Us", "topic": "Plans", "initial_state": [encryption] });
    let (_, created) = server
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let woken = waiting.await.unwrap();
    let invite_state = woken["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("invite in sync")
        .clone();
    assert!(invite_state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(
        invite_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Us")
    );
    // What clients name and decorate the invite with, as Synapse sends it: the topic,
    // the encryption, and the inviter's member event (Element names a DM after it).
    for kind in ["m.room.topic", "m.room.encryption", "m.room.join_rules"] {
        assert!(invite_state.iter().any(|e| e["type"] == kind), "no {kind}");
    }
    let inviter = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@alice:kith.test")
        .expect("the inviter's member event");
    assert_eq!(inviter["content"]["membership"], "join");
    assert_eq!(inviter["content"]["displayname"], "alice");
    // Nothing else of the room (power levels, other members) shows before joining.
    assert!(
        !invite_state
            .iter()
            .any(|e| e["type"] == "m.room.power_levels")
    );
    let own = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:kith.test")
        .unwrap();
    assert_eq!(own["content"]["is_direct"], true);
    let since = woken["next_batch"].as_str().unwrap().to_owned();

    // Joining brings the room whole: its state and his join.
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    let joined = sync(&server, &bob_token, Some(&since), 5000).await;
    // The room's state arrives, in `state` or (here, all of it fits) in the timeline.
    let room_view = &joined["rooms"]["join"][&room];
    // Newly joined, the timeline is limited (as Synapse marks it): js-sdk takes a
    // back-pagination token only from a limited timeline of a room it knew as an invite.
    assert_eq!(room_view["timeline"]["limited"], true, "{joined}");
    assert!(room_view["timeline"]["prev_batch"].is_string(), "{joined}");
    let mut known: Vec<&Value> = room_view["state"]["events"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    known.extend(timeline(&joined, &room));
    assert!(
        known.iter().any(|e| e["type"] == "m.room.power_levels"),
        "{joined}"
    );
    assert!(
        known.iter().any(|e| e["type"] == "m.room.create"),
        "{joined}"
    );
    assert!(
        timeline(&joined, &room)
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["sender"] == "@bob:kith.test")
    );
    assert_eq!(
        joined["rooms"]["join"][&room]["summary"]["m.joined_member_count"],
        2
    );
    let since = joined["next_batch"].as_str().unwrap().to_owned();

    // A message wakes Bob's long-poll; only Alice's device sees its transaction ID.
    let waiting = long_poll(&server, &bob_token, &since, has_message);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    let sent = server
        .request(
            Method::PUT,
            &path,
            Some(&alice_token),
            Some(json!({ "msgtype": "m.text", "body": "hi" })),
        )
        .await;
    assert_eq!(sent.0, StatusCode::OK);
    let woken = waiting.await.unwrap();
    let events = timeline(&woken, &room);
    let message = events
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .unwrap_or_else(|| panic!("message in long-poll: {woken}"));
    assert_eq!(message["content"]["body"], "hi");
    assert!(message["unsigned"].get("transaction_id").is_none());
    let alice_view = sync(&server, &alice_token, None, 0).await;
    let mine = timeline(&alice_view, &room)
        .into_iter()
        .find(|e| e["type"] == "m.room.message")
        .unwrap()
        .clone();
    assert_eq!(mine["unsigned"]["transaction_id"], "t1");

    // Nothing new: a short long-poll returns empty, with the same token.
    let idle = sync(&server, &bob_token, woken["next_batch"].as_str(), 300).await;
    assert!(
        idle["rooms"]["join"]
            .as_object()
            .is_none_or(|j| j.is_empty()),
        "{idle}"
    );

    // `next_batch` works as a `/messages` token: the newest event is included.
    let next = woken["next_batch"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={next}");
    let (_, page) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(page["chunk"][0]["content"]["body"], "hi", "{page}");

    // A new display name is a member event but no new membership: no resend of the room.
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:kith.test");
    let renamed = json!({ "membership": "join", "displayname": "Bobby" });
    assert_eq!(
        server
            .request(Method::PUT, &path, Some(&bob_token), Some(renamed))
            .await
            .0,
        StatusCode::OK
    );
    let after_rename = sync(&server, &bob_token, Some(next), 5000).await;
    let events = timeline(&after_rename, &room);
    assert_eq!(events.len(), 1, "only the rename: {after_rename}");
    assert_eq!(events[0]["content"]["displayname"], "Bobby");

    // Leaving: what was said before the leave still arrives, in the leave section.
    let since = after_rename["next_batch"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t2");
    let gap = json!({ "msgtype": "m.text", "body": "before you go" });
    server
        .request(Method::PUT, &path, Some(&alice_token), Some(gap))
        .await;
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    let left = sync(&server, &bob_token, Some(&since), 5000).await;
    let left_events = left["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .expect("leave section");
    let bodies: Vec<&str> = left_events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["before you go"], "{left}");
    assert_eq!(
        left_events.last().unwrap()["content"]["membership"],
        "leave"
    );

    assert_error(
        &server
            .get("/_matrix/client/v3/sync?since=banana", Some(&bob_token))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .get("/_matrix/client/v3/sync?since=999999999", Some(&bob_token))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn every_event_exactly_once_with_concurrent_writers() {
    let server = Server::start(&[]);
    let owner = server.register("owner").await;
    let (_, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&token(&owner)),
            json!({ "preset": "public_chat" }),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let mut writers = Vec::new();
    for w in 0..3 {
        let user = server.register(&format!("writer{w}")).await;
        server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(&token(&user)),
                json!({}),
            )
            .await;
        writers.push(token(&user));
    }
    let reader = token(&server.register("reader").await);
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&reader),
            json!({}),
        )
        .await;
    let mut since = sync(&server, &reader, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, token)| {
            let (base, room) = (server.base.clone(), room.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..15 {
                    let url = format!(
                        "{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/w{w}-{i}"
                    );
                    let body = json!({ "msgtype": "m.text", "body": format!("{w}:{i}") });
                    let response = http
                        .put(url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
            })
        })
        .collect();

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < 45 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 45 messages arrived",
            seen.len()
        );
        let batch = sync(&server, &reader, Some(&since), 5000).await;
        assert_ne!(
            batch["rooms"]["join"][&room]["timeline"]["limited"],
            json!(true)
        );
        for event in timeline(&batch, &room) {
            if let Some(body) = event["content"]["body"].as_str() {
                *seen.entry(body.to_owned()).or_default() += 1;
                order.push(body.to_owned());
            }
        }
        since = batch["next_batch"].as_str().unwrap().to_owned();
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
    // Each writer's messages arrive in the order they were sent.
    for w in 0..3 {
        let mine: Vec<usize> = order
            .iter()
            .filter_map(|b| {
                b.strip_prefix(&format!("{w}:"))
                    .and_then(|i| i.parse().ok())
            })
            .collect();
        assert_eq!(mine, (0..15).collect::<Vec<_>>());
    }
    // And the room's history agrees with what sync delivered.
    let (_, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            Some(&reader),
        )
        .await;
    let mut history: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    history.reverse();
    assert_eq!(history, order);
}

/// Served events carry what clients read in `unsigned`, as Synapse gives it: a state
/// event the one it replaced (`prev_content`, `prev_sender`, `replaces_state`: a rename
/// shows as a rename, not a join), a redacted event `redacted_by` beside
/// `redacted_because`, and every event its `age`.
#[tokio::test]
async fn unsigned_says_what_a_state_event_replaced_and_how_old_events_are() {
    let server = Server::start(&[]);
    let (alice_id, alice) = server.user("alice").await;
    let room = server.create_room(&alice, json!({ "name": "first" })).await;
    let since = sync(&server, &alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/_matrix/client/v3/profile/{alice_id}/displayname");
    let (status, _) = server
        .put(&path, Some(&alice), json!({ "displayname": "Alice B." }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/");
    let (status, _) = server
        .put(&path, Some(&alice), json!({ "name": "second" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let message = server.say(&alice, &room, "soon gone").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/redact/{message}/r1");
    let (status, redaction) = server.put(&path, Some(&alice), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let next = sync(&server, &alice, Some(&since), 0).await;
    let events = next["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let of = |kind: &str| events.iter().find(|e| e["type"] == kind).unwrap().clone();
    let rename = of("m.room.member");
    assert_eq!(rename["content"]["displayname"], "Alice B.");
    assert_eq!(
        rename["unsigned"]["prev_content"]["membership"], "join",
        "{rename}"
    );
    assert_eq!(rename["unsigned"]["prev_content"]["displayname"], "alice");
    assert_eq!(rename["unsigned"]["prev_sender"], alice_id.as_str());
    assert!(rename["unsigned"]["replaces_state"].is_string());
    let name = of("m.room.name");
    assert_eq!(name["unsigned"]["prev_content"]["name"], "first", "{name}");
    for event in &events {
        assert!(event["unsigned"]["age"].is_u64(), "{event}");
    }
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{message}");
    let (_, redacted) = server.get(&path, Some(&alice)).await;
    assert_eq!(
        redacted["unsigned"]["redacted_by"], redaction["event_id"],
        "{redacted}"
    );
    assert!(redacted["unsigned"]["redacted_because"].is_object());
    // Redacting the old name redacts its copy in the new one's `prev_content` too.
    let old_name = name["unsigned"]["replaces_state"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/redact/{old_name}/r2");
    let (status, _) = server.put(&path, Some(&alice), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let name_id = name["event_id"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{name_id}");
    let (_, renamed) = server.get(&path, Some(&alice)).await;
    assert_eq!(renamed["content"]["name"], "second");
    assert!(
        renamed["unsigned"]["prev_content"]["name"].is_null(),
        "{renamed}"
    );
    // The room's first events replaced nothing.
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1");
    let (_, first) = server.get(&path, Some(&alice)).await;
    assert!(
        first["chunk"][0]["unsigned"]["prev_content"].is_null(),
        "{first}"
    );
}
