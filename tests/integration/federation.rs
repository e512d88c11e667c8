//! Federation between two kith servers on loopback (names `127.0.0.1:PORT`, self-signed
//! TLS): a room made on one side, a user of the other invited, joining through the
//! resident server, messages both ways; and requests that are not properly signed refused.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::Server;
use crate::synapse;

/// Syncs until `found` holds for the response (20 s at most); returns that response.
async fn sync_until(server: &Server, token: &str, mut found: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut since: Option<String> = None;
    loop {
        let response = server.sync(token, since.as_deref(), 1000).await;
        if found(&response) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "not seen in time; last sync: {response}\nlog:\n{}",
            server.log()
        );
        since = response["next_batch"].as_str().map(str::to_owned);
    }
}

fn has_message(sync: &Value, room: &str, body: &str) -> bool {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == body))
}

#[tokio::test]
async fn users_on_two_kith_servers_invite_join_and_chat() {
    let (a, _) = Server::federated(&[]);
    let (b, _) = Server::federated(&[]);
    let (alice, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;

    // Each finds the other's profile through the other's server.
    for (server, token, other, name) in [
        (&a, &alice_token, &bob, "bob"),
        (&b, &bob_token, &alice, "alice"),
    ] {
        let (status, profile) = server
            .get(&format!("/_matrix/client/v3/profile/{other}"), Some(token))
            .await;
        assert_eq!(status, StatusCode::OK, "{profile}");
        assert_eq!(profile["displayname"], name, "{profile}");
    }
    let unknown = format!(
        "/_matrix/client/v3/profile/@nobody:{}",
        bob.split_once(':').unwrap().1
    );
    let (status, _) = a.get(&unknown, Some(&alice_token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // alice makes a direct chat on A and invites bob on B.
    let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob] });
    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();

    // bob sees the invite, with the room's state as A sent it, and joins through A.
    let invited = sync_until(&b, &bob_token, |s| s["rooms"]["invite"][&room].is_object()).await;
    let state = &invited["rooms"]["invite"][&room]["invite_state"]["events"];
    let invite = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob)
        .unwrap_or_else(|| panic!("no invite event in {state}"));
    assert_eq!(invite["sender"], alice);
    assert_eq!(invite["content"]["is_direct"], true);
    // A sent the inviter's member event with it, which names the invite in Element.
    let inviter = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice)
        .unwrap_or_else(|| panic!("no inviter's member event in {state}"));
    assert_eq!(inviter["content"]["displayname"], "alice");
    let path = format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, joined) = b.post(&path, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");

    // Both see the other's messages.
    a.say(&alice_token, &room, "hello from A").await;
    sync_until(&b, &bob_token, |s| has_message(s, &room, "hello from A")).await;
    let reply = b.say(&bob_token, &room, "hello from B").await;
    sync_until(&a, &alice_token, |s| has_message(s, &room, "hello from B")).await;

    // Typing and read receipts cross as EDUs, each way.
    for (from, token, user, to, to_token) in [
        (&a, &alice_token, &alice, &b, &bob_token),
        (&b, &bob_token, &bob, &a, &alice_token),
    ] {
        let path = format!("/_matrix/client/v3/rooms/{room}/typing/{user}");
        let body = json!({ "typing": true, "timeout": 20000 });
        let (status, typed) = from.put(&path, Some(token), body).await;
        assert_eq!(status, StatusCode::OK, "{typed}");
        let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{reply}");
        let (status, read) = from.post(&path, Some(token), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        let (mut typed, mut read) = (false, false);
        sync_until(to, to_token, |s| {
            typed |= synapse::typing(s, &room, user);
            read |= synapse::read(s, &room, &reply, user);
            typed && read
        })
        .await;
    }

    // Sharing a room, bob finds alice in his server's user directory.
    let body = json!({ "search_term": "alice" });
    let (status, found) = b
        .post(
            "/_matrix/client/v3/user_directory/search",
            Some(&bob_token),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let results = found["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["user_id"] == alice), "{found}");
    // dave, on B too but in no room with her, does not.
    let (_, dave_token) = b.user("dave").await;
    let body = json!({ "search_term": "alice" });
    let (status, found) = b
        .post(
            "/_matrix/client/v3/user_directory/search",
            Some(&dave_token),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["results"], json!([]), "{found}");

    // alice's presence reaches bob as an EDU.
    let path = format!("/_matrix/client/v3/presence/{alice}/status");
    let body = json!({ "presence": "online", "status_msg": "on A" });
    let (status, set) = a.put(&path, Some(&alice_token), body).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    sync_until(&b, &bob_token, |s| {
        s["presence"]["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| e["sender"] == alice && e["content"]["status_msg"] == "on A")
        })
    })
    .await;

    // Both servers hold the same members.
    for (server, token) in [(&a, &alice_token), (&b, &bob_token)] {
        let path = format!("/_matrix/client/v3/rooms/{room}/joined_members");
        let (status, members) = server.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{members}");
        let joined = members["joined"].as_object().unwrap();
        assert!(
            joined.contains_key(&alice) && joined.contains_key(&bob),
            "{members}"
        );
    }
    // A public room with an alias on A: bob finds it through his server and joins by it.
    let body = json!({ "preset": "public_chat" });
    let (status, lobby) = a
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{lobby}");
    let alias = format!("#lobby:{}", alice.split_once(':').unwrap().1);
    let encoded = alias.replace('#', "%23");
    let path = format!("/_matrix/client/v3/directory/room/{encoded}");
    let (status, made) = a
        .put(
            &path,
            Some(&alice_token),
            json!({ "room_id": lobby["room_id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let (status, found) = b
        .get(
            &format!("/_matrix/client/v3/directory/room/{encoded}"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["room_id"], lobby["room_id"], "{found}");
    let (status, joined) = b
        .post(
            &format!("/_matrix/client/v3/join/{encoded}"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["room_id"], lobby["room_id"], "{joined}");

    // bob fetches alice's picture, and a thumbnail of it, through his server.
    let picture = crate::media::png(64, 48);
    let (status, uploaded) =
        crate::media::upload(&a, &alice_token, picture.clone(), "image/png", "cat.png").await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let mxc = uploaded["content_uri"].as_str().unwrap();
    let media = mxc.trim_start_matches("mxc://");
    // Anonymous legacy requests get only what B holds: nothing of A's yet, and B fetches
    // nothing for them; a malformed media ID is not asked of A at all.
    let legacy = format!("{}/_matrix/media/v3/download/{media}", b.base);
    let status = |url: String| async { b.http.get(url).send().await.unwrap().status() };
    assert_eq!(status(legacy.clone()).await, StatusCode::NOT_FOUND);
    let server_a = media.split('/').next().unwrap();
    let malformed = format!("/_matrix/client/v1/media/download/{server_a}/..%2Fversions");
    let (status_code, _) = b.get(&malformed, Some(&bob_token)).await;
    assert_eq!(status_code, StatusCode::NOT_FOUND);
    for path in [
        format!("/_matrix/client/v1/media/download/{media}"),
        format!("/_matrix/client/v1/media/thumbnail/{media}?width=32&height=32&method=crop"),
    ] {
        let response = b
            .http
            .get(format!("{}{path}", b.base))
            .bearer_auth(&bob_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = response.bytes().await.unwrap();
        match path.contains("thumbnail") {
            true => assert_eq!(crate::media::dimensions(&bytes), (32, 32)),
            false => assert_eq!(bytes.to_vec(), picture),
        }
    }
    assert_eq!(status(legacy).await, StatusCode::OK, "fetched once, kept");

    // carol on C, a server not in the room, declines an invite into it: through A
    // (make_leave, send_leave), which records her leave.
    let (c, _) = Server::federated(&[]);
    let (carol, carol_token) = c.user("carol").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/invite");
    let (status, invited) = a
        .post(&path, Some(&alice_token), json!({ "user_id": carol }))
        .await;
    assert_eq!(status, StatusCode::OK, "{invited}");
    sync_until(&c, &carol_token, |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/leave");
    let (status, left) = c.post(&path, Some(&carol_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{left}");
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{carol}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, member) = a.get(&path, Some(&alice_token)).await;
        assert_eq!(status, StatusCode::OK, "{member}");
        if member["membership"] == "leave" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never saw carol leave: {member}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each pages back to the room's start; B fetches what came before its join from A.
    for (server, token) in [(&a, &alice_token), (&b, &bob_token)] {
        let types = history_types(server, token, &room).await;
        assert_eq!(
            types.first().map(String::as_str),
            Some("m.room.create"),
            "{types:?}"
        );
    }
    a.assert_events_verify();
    b.assert_events_verify();
}

/// The types of every event `/messages` gives, paging back to the start, oldest first.
pub async fn history_types(server: &Server, token: &str, room: &str) -> Vec<String> {
    let mut types = Vec::new();
    let mut from = String::new();
    for _ in 0..50 {
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5{from}");
        let (status, page) = server.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for event in page["chunk"].as_array().unwrap() {
            types.push(event["type"].as_str().unwrap().to_owned());
        }
        match page["end"].as_str() {
            Some(end) => from = format!("&from={end}"),
            None => {
                types.reverse();
                return types;
            }
        }
    }
    panic!("history does not end: {types:?}");
}

/// A federation endpoint over TLS with whatever `Authorization` header is given.
async fn federation_put(
    name: &str,
    path: &str,
    authorization: Option<String>,
) -> (StatusCode, Value) {
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut request = http
        .put(format!("https://{name}{path}"))
        .json(&json!({ "origin": "127.0.0.1:1", "origin_server_ts": 1, "pdus": [] }));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn unsigned_forged_and_misaddressed_requests_are_refused() {
    let (a, a_name) = Server::federated(&[]);
    let (_b, b_name) = Server::federated(&[]);
    let path = "/_matrix/federation/v1/send/forged1";
    // A real key ID of A's, with a signature that is not A's.
    let (_, keys) = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("https://{a_name}/_matrix/key/v2/server"))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    let keys: Value = keys.json().await.unwrap();
    let key_id = keys["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let sig = "a".repeat(86);
    let header = |origin: &str, destination: &str| {
        format!(
            r#"X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}""#
        )
    };
    for authorization in [
        None,
        Some("Bearer nonsense".to_owned()),
        Some(header(&a_name, &b_name)),
        Some(header(&a_name, "elsewhere.example")),
    ] {
        let (status, body) = federation_put(&b_name, path, authorization.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{authorization:?}: {body}"
        );
        assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    }
    drop(a);
}

/// Bodies of the room's messages on `server`, oldest first, from `/messages`.
async fn message_bodies(server: &Server, token: &str, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
    let (status, page) = server.get(&path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect();
    bodies.reverse();
    bodies
}

#[tokio::test]
async fn a_peer_that_was_down_gets_everything_once_in_order_even_across_our_restart() {
    let (a, _) = Server::federated(&[]);
    let (mut b, _) = Server::federated(&[]);
    let (_, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;
    let room = room_on_a(&a, &alice_token, (&b, &bob, &bob_token), "private_chat").await;

    // B goes away; alice keeps writing, and A itself is killed and restarted midway.
    b.kill();
    let sent: Vec<String> = (1..=6).map(|i| format!("while B was down {i}")).collect();
    for body in &sent[..3] {
        a.say(&alice_token, &room, body).await;
    }
    let a = a.restart();
    let (_, alice_token) = {
        let (status, login) = a.login("alice", crate::common::PASSWORD, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        ((), login["access_token"].as_str().unwrap().to_owned())
    };
    for body in &sent[3..] {
        a.say(&alice_token, &room, body).await;
    }

    // B comes back on the same port and data; everything arrives, once, in order.
    let b = b.restart();
    let last = sent.last().unwrap().clone();
    sync_until(&b, &bob_token, |s| has_message(s, &room, &last)).await;
    assert_eq!(message_bodies(&b, &bob_token, &room).await, sent);
    assert_eq!(message_bodies(&a, &alice_token, &room).await, sent);
    drop(a);
}

pub const CONTACTS: &str = "/_matrix/client/unstable/org.kith.contacts/v1";

/// The user's live `org.kith.contacts` account data in a sync response, if it changed.
pub fn contacts_view(sync: &Value) -> Option<Value> {
    let events = sync["account_data"]["events"].as_array()?;
    let view = events.iter().find(|e| e["type"] == "org.kith.contacts")?;
    Some(view["content"].clone())
}

pub fn lists(view: &Value, list: &str, user: &str) -> bool {
    view[list]
        .as_array()
        .is_some_and(|l| l.iter().any(|e| e["user_id"] == user))
}

#[tokio::test]
async fn users_on_two_kith_servers_befriend_chat_under_dm_only_and_unfriend() {
    let policy = [(crate::common::POLICY, "dm_only")];
    let (a, _) = Server::federated(&policy);
    let (b, _) = Server::federated(&policy);
    let (alice, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;

    // Strangers: no direct chat.
    let dm = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob] });
    let (status, refused) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            dm.clone(),
        )
        .await;
    assert_eq!(
        (status, &refused["errcode"]),
        (StatusCode::FORBIDDEN, &json!("M_INVITE_BLOCKED"))
    );

    // alice asks; bob sees it live, accepts; alice sees the friendship live.
    let body = json!({ "user_id": bob, "message": "hi from A" });
    let (status, sent) = a
        .post(&format!("{CONTACTS}/requests"), Some(&alice_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["state"], "pending");
    let request_id = sent["request_id"].as_str().unwrap().to_owned();
    sync_until(&b, &bob_token, |s| {
        contacts_view(s).is_some_and(|v| lists(&v, "incoming", &alice))
    })
    .await;
    let path = format!("{CONTACTS}/requests/{request_id}/accept");
    let (status, accepted) = b.post(&path, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    sync_until(&a, &alice_token, |s| {
        contacts_view(s).is_some_and(|v| lists(&v, "friends", &bob))
    })
    .await;

    // Friends now: the direct chat is allowed on both servers.
    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), dm)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    sync_until(&b, &bob_token, |s| s["rooms"]["invite"][&room].is_object()).await;
    let (status, joined) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    b.say(&bob_token, &room, "friends across servers").await;
    sync_until(&a, &alice_token, |s| {
        has_message(s, &room, "friends across servers")
    })
    .await;

    // alice ends it: bob's view loses her, and his server refuses his sends.
    let (status, removed) = a
        .request(
            reqwest::Method::DELETE,
            &format!("{CONTACTS}/friends/{bob}"),
            Some(&alice_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    sync_until(&b, &bob_token, |s| {
        contacts_view(s).is_some_and(|v| !lists(&v, "friends", &alice))
    })
    .await;
    let txn = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/after");
    let (status, refused) = b
        .put(
            &txn,
            Some(&bob_token),
            json!({ "msgtype": "m.text", "body": "still there?" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
}

/// A room alice makes on `a` with `preset`, inviting bob, who joins from `b`; its ID.
pub async fn room_on_a(
    a: &Server,
    alice_token: &str,
    (b, bob, bob_token): (&Server, &str, &str),
    preset: &str,
) -> String {
    let body = json!({ "preset": preset, "invite": [bob] });
    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", Some(alice_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    sync_until(b, bob_token, |s| s["rooms"]["invite"][&room].is_object()).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, joined) = b.post(&path, Some(bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    room
}

async fn write(server: &Server, token: &str, room: &str, who: &str) {
    for i in 0..5 {
        server.say(token, room, &format!("{who} {i}")).await;
    }
}

/// Both sides writing at once fork the room's history (each event names only what its
/// server had seen); both servers still end with every message, and the next event of
/// each joins the forks.
#[tokio::test]
async fn concurrent_writes_on_two_servers_converge() {
    let (a, _) = Server::federated(&[]);
    let (b, _) = Server::federated(&[]);
    let (_, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;
    let room = room_on_a(&a, &alice_token, (&b, &bob, &bob_token), "private_chat").await;

    tokio::join!(
        write(&a, &alice_token, &room, "alice"),
        write(&b, &bob_token, &room, "bob")
    );
    a.say(&alice_token, &room, "alice last").await;
    b.say(&bob_token, &room, "bob last").await;

    let mut expected: Vec<String> = ["alice", "bob"]
        .iter()
        .flat_map(|who| (0..5).map(move |i| format!("{who} {i}")))
        .chain(["alice last".to_owned(), "bob last".to_owned()])
        .collect();
    expected.sort();
    for (server, token) in [(&a, &alice_token), (&b, &bob_token)] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = message_bodies(server, token, &room).await;
            seen.sort();
            if seen == expected {
                break;
            }
            assert!(Instant::now() < deadline, "not converged: {seen:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    a.assert_events_verify();
    b.assert_events_verify();
}

async fn set_name(server: &Server, token: &str, room: &str, name: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/");
    let (status, set) = server
        .put(&path, Some(token), json!({ "name": name }))
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
}

/// Polls until `server`'s `/messages` holds `body` (20 s at most).
async fn wait_for_message(server: &Server, token: &str, room: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !message_bodies(server, token, room)
        .await
        .contains(&body.to_owned())
    {
        assert!(Instant::now() < deadline, "{body:?} never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both sides changing the same state at once (the room's name): state resolution picks
/// one winner, the same on both servers, whichever arrived last where.
#[tokio::test]
async fn concurrent_state_changes_resolve_the_same_on_both_servers() {
    let (a, _) = Server::federated(&[]);
    let (b, _) = Server::federated(&[]);
    let (_, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;
    // A trusted private chat: bob may name the room too.
    let room = room_on_a(
        &a,
        &alice_token,
        (&b, &bob, &bob_token),
        "trusted_private_chat",
    )
    .await;
    b.say(&bob_token, &room, "joined").await;
    wait_for_message(&a, &alice_token, &room, "joined").await;

    tokio::join!(
        set_name(&a, &alice_token, &room, "named on A"),
        set_name(&b, &bob_token, &room, "named on B")
    );
    // Something after, from each side, so each has the other's change.
    a.say(&alice_token, &room, "after A").await;
    b.say(&bob_token, &room, "after B").await;
    wait_for_message(&a, &alice_token, &room, "after B").await;
    wait_for_message(&b, &bob_token, &room, "after A").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/");
    let (_, on_a) = a.get(&path, Some(&alice_token)).await;
    let (_, on_b) = b.get(&path, Some(&bob_token)).await;
    assert_eq!(on_a["name"], on_b["name"], "the servers disagree");
}
