//! Simplified sliding sync (MSC4186) at the protocol level: list windows as matrix-rust-sdk
//! grows them, recency order, `required_state` with wildcards and `$LAZY`, extensions and
//! their scope, positions across connections and restarts, removal from a room reaching
//! every connection, agreement with `/sync`, and bad input.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server, assert_error, urlencode};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync from `pos` (none: a new connection), long-polling up to `timeout_ms`.
async fn slide_raw(
    server: &Server,
    token: &str,
    pos: Option<&str>,
    timeout_ms: u64,
    body: &Value,
) -> (StatusCode, Value) {
    let mut path = format!("{PATH}?timeout={timeout_ms}&set_presence=offline");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", urlencode(pos)));
    }
    server.post(&path, Some(token), body.clone()).await
}

async fn slide(server: &Server, token: &str, pos: Option<&str>, body: &Value) -> Value {
    let (status, response) = slide_raw(server, token, pos, 0, body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    response
}

fn pos(response: &Value) -> &str {
    response["pos"].as_str().expect("pos")
}

/// The IDs of the rooms a response carries.
fn rooms(response: &Value) -> BTreeSet<String> {
    response["rooms"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

/// A room list as the room-list service asks for it, over `ranges`.
fn room_list(ranges: Value, timeline_limit: u64) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": { "all_rooms": {
            "ranges": ranges,
            "timeline_limit": timeline_limit,
            "required_state": [["m.room.name", ""], ["m.room.member", "$ME"]],
        }},
    })
}

/// The bodies of a room's timeline messages.
fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The (type, state key) pairs of a room's `required_state`.
fn state_keys(room: &Value) -> BTreeSet<(String, String)> {
    room["required_state"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|e| {
                    let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                    (field("type"), field("state_key"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `count` rooms, each with one message, made oldest first; their IDs in that order.
async fn rooms_with_messages(server: &Server, token: &str, count: usize) -> Vec<String> {
    let mut made = Vec::new();
    for i in 0..count {
        let room = server
            .create_room(token, json!({ "name": format!("room {i}") }))
            .await;
        server.say(token, &room, &format!("message {i}")).await;
        made.push(room);
    }
    made
}

/// The room-list service's window: 0–19 first, then grown by 100 on the same position;
/// rooms come newest first, each once, whole (`initial`); a message brings its room to the
/// top with only what is new; a room entering a narrow window comes whole, one that stayed
/// in it only with what changed.
#[tokio::test]
async fn room_list_windows_grow_and_follow_recency() {
    let server = Server::start(&[]);
    let (_, alice) = server.user("alice").await;
    let made = rooms_with_messages(&server, &alice, 25).await;
    let first = slide(&server, &alice, None, &room_list(json!([[0, 19]]), 1)).await;
    assert_eq!(first["lists"]["all_rooms"]["count"], 25, "{first}");
    let newest: BTreeSet<String> = made[5..].iter().cloned().collect();
    assert_eq!(rooms(&first), newest, "the 20 most recent rooms");
    let mut stamps = Vec::new();
    for (i, room) in made.iter().enumerate().skip(5) {
        let sent = &first["rooms"][room];
        assert_eq!(sent["initial"], true);
        assert_eq!(sent["name"], format!("room {i}"));
        assert_eq!(bodies(sent), vec![format!("message {i}")]);
        assert_eq!(sent["limited"], true, "there is more before: {sent}");
        assert!(sent["prev_batch"].is_string());
        assert!(state_keys(sent).contains(&("m.room.name".into(), "".into())));
        stamps.push(sent["bump_stamp"].as_u64().expect("bump_stamp"));
    }
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "newer rooms bump higher: {stamps:?}"
    );

    // Grown on the same position: only the rooms not yet sent.
    let grown = slide(
        &server,
        &alice,
        Some(pos(&first)),
        &room_list(json!([[0, 99]]), 1),
    )
    .await;
    let oldest: BTreeSet<String> = made[..5].iter().cloned().collect();
    assert_eq!(rooms(&grown), oldest, "{grown}");
    assert!(oldest.iter().all(|r| grown["rooms"][r]["initial"] == true));

    // Nothing new: nothing sent, and the count is the same.
    let quiet = slide(
        &server,
        &alice,
        Some(pos(&grown)),
        &room_list(json!([[0, 99]]), 1),
    )
    .await;
    assert!(rooms(&quiet).is_empty(), "{quiet}");
    assert_eq!(quiet["lists"]["all_rooms"]["count"], 25);

    // A message in the oldest room: it alone comes, with only the new event, on top.
    server.say(&alice, &made[0], "news").await;
    let bumped = slide(
        &server,
        &alice,
        Some(pos(&quiet)),
        &room_list(json!([[0, 99]]), 1),
    )
    .await;
    assert_eq!(
        rooms(&bumped),
        BTreeSet::from([made[0].clone()]),
        "{bumped}"
    );
    let room = &bumped["rooms"][&made[0]];
    assert_eq!(bodies(room), vec!["news".to_owned()]);
    assert!(room["initial"].is_null(), "not whole again: {room}");
    assert_eq!(room["num_live"], 1);
    assert!(room["bump_stamp"].as_u64().unwrap() > *stamps.last().unwrap());

    // A window of one: the top room only. Then another room takes the top: it comes whole,
    // having left the window before.
    let narrow = slide(
        &server,
        &alice,
        Some(pos(&bumped)),
        &room_list(json!([[0, 0]]), 1),
    )
    .await;
    assert!(
        rooms(&narrow).is_empty(),
        "the top room is unchanged: {narrow}"
    );
    server.say(&alice, &made[3], "up").await;
    let moved = slide(
        &server,
        &alice,
        Some(pos(&narrow)),
        &room_list(json!([[0, 0]]), 1),
    )
    .await;
    assert_eq!(rooms(&moved), BTreeSet::from([made[3].clone()]), "{moved}");
    assert_eq!(
        moved["rooms"][&made[3]]["initial"], true,
        "it entered the window"
    );
    server.say(&alice, &made[3], "again").await;
    let stayed = slide(
        &server,
        &alice,
        Some(pos(&moved)),
        &room_list(json!([[0, 0]]), 1),
    )
    .await;
    let room = &stayed["rooms"][&made[3]];
    assert!(room["initial"].is_null(), "{room}");
    assert_eq!(bodies(room), vec!["again".to_owned()]);

    // The page token of a limited timeline pages back through `/messages`.
    let token = first["rooms"][&made[24]]["prev_batch"].as_str().unwrap();
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&from={token}&limit=50",
        made[24]
    );
    let (status, page) = server.get(&path, Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let types: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"m.room.create"), "{types:?}");
}

/// `required_state`: `$LAZY` brings the timeline's senders, `$ME` the user, `*` every key
/// (or every type); an incremental sync brings the wanted state that changed (and the
/// members of new senders), and the room's `name` whether or not its event is wanted.
#[tokio::test]
async fn required_state_understands_wildcards_lazy_members_and_changes() {
    let server = Server::start(&[]);
    let (alice_id, alice) = server.user("alice").await;
    let (bob_id, bob) = server.user("bob").await;
    let (carol_id, carol) = server.user("carol").await;
    let room = server.shared_room(&alice, (&bob_id, &bob)).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/invite");
    let (status, _) = server
        .post(&path, Some(&alice), json!({ "user_id": carol_id }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, _) = server.post(&path, Some(&carol), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    server.say(&bob, &room, "bob speaks").await;
    let subscribe = |required: Value, conn: &str| {
        json!({
            "conn_id": conn,
            "room_subscriptions": { room.clone(): {
                "timeline_limit": 1, "required_state": required,
            }},
        })
    };
    let member = |user: &str| ("m.room.member".to_owned(), user.to_owned());

    let lazy = subscribe(
        json!([
            ["m.room.member", "$LAZY"],
            ["m.room.member", "$ME"],
            ["m.room.create", ""]
        ]),
        "lazy",
    );
    let first = slide(&server, &alice, None, &lazy).await;
    let keys = state_keys(&first["rooms"][&room]);
    let expected = BTreeSet::from([
        member(&alice_id),
        member(&bob_id),
        ("m.room.create".to_owned(), String::new()),
    ]);
    assert_eq!(keys, expected, "the sender and me, not idle carol");
    let sent = &first["rooms"][&room];
    assert_eq!(sent["joined_count"], 3);
    assert!(sent["name"].is_null(), "the room has no name");
    let heroes: BTreeSet<&str> = sent["heroes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["user_id"].as_str())
        .collect();
    assert_eq!(heroes, BTreeSet::from([bob_id.as_str(), carol_id.as_str()]));

    let all_members = slide(
        &server,
        &alice,
        None,
        &subscribe(json!([["m.room.member", "*"]]), "members"),
    )
    .await;
    let keys = state_keys(&all_members["rooms"][&room]);
    assert_eq!(
        keys,
        BTreeSet::from([member(&alice_id), member(&bob_id), member(&carol_id)])
    );
    let everything = slide(
        &server,
        &alice,
        None,
        &subscribe(json!([["*", "*"]]), "all"),
    )
    .await;
    let keys = state_keys(&everything["rooms"][&room]);
    for wanted in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
    ] {
        assert!(
            keys.contains(&(wanted.to_owned(), String::new())),
            "{wanted}: {keys:?}"
        );
    }
    assert!(keys.contains(&member(&carol_id)));

    // Changes: a new topic (wanted), a new name (not wanted as state), carol speaking.
    let changes = subscribe(
        json!([["m.room.topic", ""], ["m.room.member", "$LAZY"]]),
        "lazy",
    );
    let base = slide(&server, &alice, Some(pos(&first)), &changes).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
    let (status, _) = server
        .put(&path, Some(&alice), json!({ "topic": "new topic" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/");
    let (status, _) = server
        .put(&path, Some(&alice), json!({ "name": "Named" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    server.say(&carol, &room, "carol speaks").await;
    let next = slide(&server, &alice, Some(pos(&base)), &changes).await;
    let sent = &next["rooms"][&room];
    let keys = state_keys(sent);
    assert!(
        keys.contains(&("m.room.topic".to_owned(), String::new())),
        "{sent}"
    );
    assert!(
        keys.contains(&member(&carol_id)),
        "the new sender's member event: {sent}"
    );
    assert!(
        !keys.contains(&("m.room.name".to_owned(), String::new())),
        "not asked for"
    );
    assert!(
        !keys.contains(&member(&bob_id)),
        "bob did not change or speak"
    );
    assert_eq!(sent["name"], "Named", "{sent}");
    assert!(sent["initial"].is_null());
}

/// Extensions: to-device messages once and then gone, key counts always, device lists,
/// account data global and per room, receipts and typing, each only for the lists and
/// rooms it is scoped to.
#[tokio::test]
async fn extensions_deliver_once_and_follow_their_scope() {
    let server = Server::start(&[]);
    let (alice_id, alice) = server.user("alice").await;
    let (bob_id, bob) = server.user("bob").await;
    let listed = server.shared_room(&alice, (&bob_id, &bob)).await;
    let subscribed = server.shared_room(&alice, (&bob_id, &bob)).await;
    // `listed` is newer, so a window of one holds it.
    let event = server.say(&bob, &subscribed, "in the subscription").await;
    server.say(&bob, &listed, "in the list").await;
    let path = format!("/_matrix/client/v3/rooms/{subscribed}/receipt/m.read/{event}");
    let (status, _) = server.post(&path, Some(&bob), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for room in [&listed, &subscribed] {
        let path = format!("/_matrix/client/v3/user/{alice_id}/rooms/{room}/tags/u.work");
        let (status, _) = server.put(&path, Some(&alice), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        let path = format!("/_matrix/client/v3/rooms/{room}/typing/{bob_id}");
        let body = json!({ "typing": true, "timeout": 30000 });
        let (status, _) = server.put(&path, Some(&bob), body).await;
        assert_eq!(status, StatusCode::OK);
    }
    let request = |extensions: Value| {
        json!({
            "conn_id": "scoped",
            "lists": { "top": { "ranges": [[0, 0]], "timeline_limit": 1 } },
            "room_subscriptions": { subscribed.clone(): { "timeline_limit": 1 } },
            "extensions": extensions,
        })
    };
    let on = json!({ "enabled": true });
    let whole = slide(
        &server,
        &alice,
        None,
        &request(json!({ "account_data": on, "receipts": on, "typing": on })),
    )
    .await;
    let ext = &whole["extensions"];
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let both = BTreeSet::from([listed.clone(), subscribed.clone()]);
    assert_eq!(keys(&ext["account_data"]["rooms"]), both, "{ext}");
    assert_eq!(
        keys(&ext["receipts"]["rooms"]),
        BTreeSet::from([subscribed.clone()]),
        "{ext}"
    );
    assert_eq!(keys(&ext["typing"]["rooms"]), both, "{ext}");
    let globals: Vec<&str> = ext["account_data"]["global"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(globals.contains(&"m.push_rules"), "{globals:?}");

    let scoped = json!({
        "account_data": { "enabled": true, "lists": [], "rooms": [] },
        "receipts": { "enabled": true, "lists": ["top"], "rooms": [] },
        "typing": { "enabled": true, "lists": [], "rooms": [subscribed] },
    });
    let narrow = slide(&server, &alice, None, &request(scoped)).await;
    let ext = &narrow["extensions"];
    assert!(
        ext["account_data"]["rooms"].is_null(),
        "no room in scope: {ext}"
    );
    assert!(
        ext["receipts"]["rooms"].is_null(),
        "bob's receipt is outside the list: {ext}"
    );
    assert_eq!(
        keys(&ext["typing"]["rooms"]),
        BTreeSet::from([subscribed.clone()])
    );

    // E2EE and to-device, as the encryption connection asks.
    let encryption = json!({
        "conn_id": "encryption",
        "extensions": { "e2ee": on, "to_device": on },
    });
    let first = slide(&server, &alice, None, &encryption).await;
    let counts = &first["extensions"]["e2ee"]["device_one_time_keys_count"];
    assert_eq!(
        counts["signed_curve25519"], 0,
        "always there, even at zero: {first}"
    );
    assert!(first["extensions"]["e2ee"]["device_unused_fallback_key_types"].is_array());
    let device = server.whoami(&alice).await.1["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = "/_matrix/client/v3/sendToDevice/m.test/t1";
    let body = json!({ "messages": { alice_id.clone(): { device: { "n": 1 } } } });
    let (status, _) = server.put(path, Some(&bob), body).await;
    assert_eq!(status, StatusCode::OK);
    // Bob signs in on a new device: his device list changed.
    let localpart = &bob_id[1..bob_id.find(':').unwrap()];
    let (status, _) = server.login(localpart, PASSWORD, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let next = slide(&server, &alice, Some(pos(&first)), &encryption).await;
    let to_device = &next["extensions"]["to_device"];
    assert_eq!(to_device["events"][0]["content"]["n"], 1, "{next}");
    assert_eq!(to_device["events"][0]["sender"], bob_id.as_str());
    let changed = &next["extensions"]["e2ee"]["device_lists"]["changed"];
    assert!(
        changed
            .as_array()
            .is_some_and(|c| c.contains(&json!(bob_id))),
        "{next}"
    );
    // Acknowledged by its token: not again, on this connection or another.
    let since = to_device["next_batch"].as_str().unwrap();
    let mut again = encryption.clone();
    again["extensions"]["to_device"]["since"] = since.into();
    let acked = slide(&server, &alice, Some(pos(&next)), &again).await;
    assert!(
        acked["extensions"]["to_device"]["events"].is_null(),
        "{acked}"
    );
    let fresh = slide(
        &server,
        &alice,
        None,
        &json!({ "conn_id": "other", "extensions": { "to_device": on }}),
    )
    .await;
    assert!(
        fresh["extensions"]["to_device"]["events"].is_null(),
        "deleted once acknowledged: {fresh}"
    );
}

/// Positions: unknown or foreign ones are `M_UNKNOWN_POS`; a request repeated from the same
/// position is answered again; two connections of one device keep their own state; a
/// position survives a restart of kith.
#[tokio::test]
async fn positions_are_per_connection_and_survive_a_restart() {
    let server = Server::start(&[]);
    let (_, alice) = server.user("alice").await;
    let made = rooms_with_messages(&server, &alice, 3).await;
    let list = room_list(json!([[0, 9]]), 1);
    for bad in ["nonsense", "99_1", "1_999999999"] {
        let result = slide_raw(&server, &alice, Some(bad), 0, &list).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    }
    let first = slide(&server, &alice, None, &list).await;
    let mut other = list.clone();
    other["conn_id"] = "other".into();
    let result = slide_raw(&server, &alice, Some(pos(&first)), 0, &other).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    // Another connection of the same device gets the rooms whole too.
    let second = slide(&server, &alice, None, &other).await;
    assert_eq!(rooms(&second).len(), 3);

    server.say(&alice, &made[1], "one").await;
    let next = slide(&server, &alice, Some(pos(&first)), &list).await;
    assert_eq!(bodies(&next["rooms"][&made[1]]), vec!["one".to_owned()]);
    // The answer was lost: the same request again gets the same news.
    let retried = slide(&server, &alice, Some(pos(&first)), &list).await;
    assert_eq!(bodies(&retried["rooms"][&made[1]]), vec!["one".to_owned()]);

    // kith restarts: the position goes on, with only what is new.
    let server = server.restart();
    server.say(&alice, &made[2], "two").await;
    let resumed = slide(&server, &alice, Some(pos(&retried)), &list).await;
    assert_eq!(
        rooms(&resumed),
        BTreeSet::from([made[2].clone()]),
        "{resumed}"
    );
    let room = &resumed["rooms"][&made[2]];
    assert_eq!(bodies(room), vec!["two".to_owned()]);
    assert!(
        room["initial"].is_null(),
        "resumed, not started over: {room}"
    );
    // Rooms leaving and entering the window make new generations; a few are kept (the
    // one answered from and the newest two), older ones are gone.
    let one = room_list(json!([[0, 0]]), 1);
    let narrow = slide(&server, &alice, Some(pos(&resumed)), &one).await;
    let wide = slide(&server, &alice, Some(pos(&narrow)), &list).await;
    let narrow_again = slide(&server, &alice, Some(pos(&wide)), &one).await;
    let stale = slide_raw(&server, &alice, Some(pos(&first)), 0, &list).await;
    assert_error(&stale, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    // A long-poll the client gave up on, answering late from an older position, does not
    // take away the position the client moved on to.
    let late = slide(&server, &alice, Some(pos(&narrow)), &list).await;
    assert_ne!(pos(&late), pos(&narrow_again));
    let (status, _) = slide_raw(&server, &alice, Some(pos(&narrow_again)), 0, &list).await;
    assert_eq!(status, StatusCode::OK);
}

/// A long-poll waits for news in its rooms and wakes for them; a user removed from a room
/// stops receiving it on every connection at once, each seeing the removal.
#[tokio::test]
async fn removal_reaches_every_connection_and_long_polls_wake() {
    let server = Server::start(&[]);
    let (_, alice) = server.user("alice").await;
    let (bob_id, bob) = server.user("bob").await;
    let room = server.shared_room(&alice, (&bob_id, &bob)).await;
    let elsewhere = server.create_room(&alice, json!({})).await;
    let list = |conn: &str| {
        let mut body = room_list(json!([[0, 9]]), 5);
        body["conn_id"] = conn.into();
        body
    };
    let a = slide(&server, &bob, None, &list("a")).await;
    let b = slide(&server, &bob, None, &list("b")).await;
    assert!(rooms(&a).contains(&room) && rooms(&b).contains(&room));

    // News elsewhere does not answer bob's long-poll; news in his room does.
    let (base, token) = (server.base.clone(), bob.clone());
    let poll = |pos: String, body: Value| {
        let (base, token) = (base.clone(), token.clone());
        tokio::spawn(async move {
            let url = format!(
                "{base}{PATH}?timeout=10000&set_presence=offline&pos={}",
                urlencode(&pos)
            );
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        })
    };
    let waiting = poll(pos(&a).to_owned(), list("a"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.say(&alice, &elsewhere, "not for bob").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "woken by a room bob is not in");
    server.say(&alice, &room, "for bob").await;
    let woken = tokio::time::timeout(std::time::Duration::from_secs(8), waiting)
        .await
        .expect("the long-poll answered")
        .unwrap();
    assert_eq!(bodies(&woken["rooms"][&room]), vec!["for bob".to_owned()]);

    // Kicked: both connections hear of it in their long-polls.
    let b = slide(&server, &bob, Some(pos(&b)), &list("b")).await;
    let polls = [
        poll(pos(&woken).to_owned(), list("a")),
        poll(pos(&b).to_owned(), list("b")),
    ];
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/kick");
    let body = json!({ "user_id": bob_id, "reason": "enough" });
    let (status, _) = server.post(&path, Some(&alice), body).await;
    assert_eq!(status, StatusCode::OK);
    let mut after = Vec::new();
    for poll in polls {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(8), poll)
            .await
            .expect("the long-poll answered")
            .unwrap();
        let sent = &answer["rooms"][&room];
        let timeline = sent["timeline"].as_array();
        let leave = timeline.into_iter().flatten().any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bob_id.as_str()
                && e["content"]["membership"] == "leave"
        });
        assert!(
            leave,
            "the kick is in the room's timeline: {answer}\n{}",
            server.log()
        );
        after.push(answer);
    }
    server.say(&alice, &room, "bob is gone").await;
    let later = slide(&server, &bob, Some(pos(&after[0])), &list("a")).await;
    assert!(
        rooms(&later).is_empty(),
        "nothing more of the room: {later}"
    );
    assert_eq!(later["lists"]["all_rooms"]["count"], 0);
}

/// `/sync` and sliding sync of the same account show the same rooms, the same newest events
/// and the same unread counts.
#[tokio::test]
async fn sliding_sync_and_sync_agree() {
    let server = Server::start(&[]);
    let (alice_id, alice) = server.user("alice").await;
    let (bob_id, bob) = server.user("bob").await;
    let shared = server.shared_room(&bob, (&alice_id, &alice)).await;
    for i in 0..4 {
        server.say(&bob, &shared, &format!("unread {i}")).await;
    }
    let own = server.create_room(&alice, json!({ "name": "mine" })).await;
    server.say(&alice, &own, "note to self").await;
    let invite = server
        .create_room(&bob, json!({ "invite": [alice_id] }))
        .await;
    let _ = bob_id;
    let v2 = server.sync(&alice, None, 0).await;
    let sliding = slide(&server, &alice, None, &room_list(json!([[0, 99]]), 3)).await;
    let joined = |v: &Value| -> BTreeSet<String> {
        v["rooms"]["join"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let invited = |v: &Value| -> BTreeSet<String> {
        v["rooms"]["invite"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let mut all = joined(&v2);
    all.extend(invited(&v2));
    assert_eq!(rooms(&sliding), all);
    assert!(invited(&v2).contains(&invite));
    assert!(sliding["rooms"][&invite]["invite_state"].is_array());
    for room in joined(&v2) {
        let ids = |events: &Value, n: usize| -> Vec<String> {
            let events = events.as_array().unwrap();
            let start = events.len().saturating_sub(n);
            events[start..]
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned())
                .collect()
        };
        let from_v2 = ids(&v2["rooms"]["join"][&room]["timeline"]["events"], 3);
        let from_sliding = ids(&sliding["rooms"][&room]["timeline"], 3);
        assert_eq!(from_v2, from_sliding, "{room}");
        let v2_count = &v2["rooms"]["join"][&room]["unread_notifications"]["notification_count"];
        assert_eq!(
            &sliding["rooms"][&room]["notification_count"], v2_count,
            "{room}"
        );
    }
    assert_eq!(sliding["rooms"][&shared]["notification_count"], 4);
}

/// Bad input gets Matrix errors and changes nothing.
#[tokio::test]
async fn bad_sliding_sync_requests_get_matrix_errors() {
    let server = Server::start(&[]);
    let (_, alice) = server.user("alice").await;
    rooms_with_messages(&server, &alice, 2).await;
    let malformed = server
        .raw(Method::POST, PATH, Some(&alice), b"{\"lists\": ".to_vec())
        .await;
    assert_eq!(malformed.0, StatusCode::BAD_REQUEST, "{}", malformed.1);
    assert!(malformed.1["errcode"].is_string());
    let wrong = slide_raw(&server, &alice, None, 0, &json!({ "lists": 5 })).await;
    assert_eq!(wrong.0, StatusCode::BAD_REQUEST, "{}", wrong.1);
    let long = json!({ "conn_id": "x".repeat(1000) });
    assert_error(
        &slide_raw(&server, &alice, None, 0, &long).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (status, body) = server.post(PATH, None, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Huge and reversed ranges, a huge timeline limit: answered, bounded.
    let odd = json!({ "lists": { "l": {
        "ranges": [[9007199254740991u64, 9007199254740991u64], [5, 1], [0, 9007199254740991u64]],
        "timeline_limit": 9007199254740991u64,
    }}});
    let answered = slide(&server, &alice, None, &odd).await;
    assert_eq!(answered["lists"]["l"]["count"], 2);
    assert_eq!(rooms(&answered).len(), 2);
    // A subscription to a room the user is not in, or that does not exist, shows nothing.
    let (_, bob) = server.user("bob").await;
    let private = server.create_room(&bob, json!({})).await;
    let peek = json!({ "room_subscriptions": {
        private: { "timeline_limit": 5 }, "!nowhere:kith.test": { "timeline_limit": 5 },
    }});
    let peeked = slide(&server, &alice, None, &peek).await;
    assert!(rooms(&peeked).is_empty(), "{peeked}");
}

/// List filters: invites, direct chats (by `m.direct` or the invite's `is_direct`),
/// encrypted rooms, room types.
#[tokio::test]
async fn list_filters_pick_invites_direct_chats_and_room_types() {
    let server = Server::start(&[]);
    let (alice_id, alice) = server.user("alice").await;
    let (_, bob) = server.user("bob").await;
    let dm_invite = server
        .create_room(&bob, json!({ "invite": [alice_id], "is_direct": true }))
        .await;
    let group_invite = server
        .create_room(&bob, json!({ "invite": [alice_id] }))
        .await;
    let encrypted = json!([{ "type": "m.room.encryption", "state_key": "",
        "content": { "algorithm": "m.megolm.v1.aes-sha2" } }]);
    let own_dm = server
        .create_room(&alice, json!({ "initial_state": encrypted }))
        .await;
    let path = format!("/_matrix/client/v3/user/{alice_id}/account_data/m.direct");
    let direct = json!({ "@bob:kith.test": [own_dm] });
    assert_eq!(
        server.put(&path, Some(&alice), direct).await.0,
        StatusCode::OK
    );
    let group = server.create_room(&alice, json!({})).await;
    let space = server
        .create_room(&alice, json!({ "creation_content": { "type": "m.space" } }))
        .await;
    let list =
        |filters: Value| json!({ "ranges": [[0, 9]], "timeline_limit": 0, "filters": filters });
    let body = json!({ "lists": {
        "invites": list(json!({ "is_invite": true })),
        "dms": list(json!({ "is_dm": true })),
        "rest": list(json!({ "is_dm": false, "is_invite": false })),
        "encrypted": list(json!({ "is_encrypted": true })),
        "spaces": list(json!({ "room_types": ["m.space"] })),
        "no_spaces": list(json!({ "not_room_types": ["m.space"] })),
    }});
    let answer = slide(&server, &alice, None, &body).await;
    let count = |name: &str| answer["lists"][name]["count"].as_u64().unwrap();
    assert_eq!(count("invites"), 2, "{answer}");
    assert_eq!(
        count("dms"),
        2,
        "the invite's is_direct and m.direct: {answer}"
    );
    assert_eq!(count("rest"), 2, "{answer}");
    assert_eq!(count("encrypted"), 1, "{answer}");
    assert_eq!(count("spaces"), 1, "{answer}");
    assert_eq!(count("no_spaces"), 4, "{answer}");
    let all: BTreeSet<String> = [&dm_invite, &group_invite, &own_dm, &group, &space]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(rooms(&answer), all);
    assert_eq!(answer["rooms"][&dm_invite]["is_dm"], true);
    assert_eq!(answer["rooms"][&own_dm]["is_dm"], true);
    assert!(answer["rooms"][&group]["is_dm"].is_null());
    let invite_state = answer["rooms"][&group_invite]["invite_state"]
        .as_array()
        .unwrap();
    assert!(
        invite_state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == alice_id.as_str())
    );
}

/// A room left and forgotten before another connection syncs still ends there with the
/// leave, and is then gone from it.
#[tokio::test]
async fn a_forgotten_room_still_reaches_other_connections_as_a_leave() {
    let server = Server::start(&[]);
    let (_, alice) = server.user("alice").await;
    let (bob_id, bob) = server.user("bob").await;
    let room = server.shared_room(&alice, (&bob_id, &bob)).await;
    let phone = slide(&server, &bob, None, &room_list(json!([[0, 9]]), 1)).await;
    assert!(rooms(&phone).contains(&room));
    for step in ["leave", "forget"] {
        let path = format!("/_matrix/client/v3/rooms/{room}/{step}");
        let (status, body) = server.post(&path, Some(&bob), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
    }
    let next = slide(
        &server,
        &bob,
        Some(pos(&phone)),
        &room_list(json!([[0, 9]]), 1),
    )
    .await;
    let timeline = next["rooms"][&room]["timeline"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let left = timeline.iter().any(|e| {
        e["type"] == "m.room.member"
            && e["state_key"] == bob_id.as_str()
            && e["content"]["membership"] == "leave"
    });
    assert!(left, "{next}");
    let after = slide(
        &server,
        &bob,
        Some(pos(&next)),
        &room_list(json!([[0, 9]]), 1),
    )
    .await;
    assert!(rooms(&after).is_empty(), "{after}");
    assert_eq!(after["lists"]["all_rooms"]["count"], 0);
}
