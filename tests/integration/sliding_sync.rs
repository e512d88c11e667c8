//! Simplified sliding sync (MSC4186) at the protocol level: list windows as matrix-rust-sdk
//! grows them, recency order, `required_state` with wildcards and `$LAZY`, list filters,
//! agreement with `/sync`, and bad input (connections, extensions and removal:
//! `sliding_connections.rs`).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error, urlencode};

pub(crate) const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync from `pos` (none: a new connection), long-polling up to `timeout_ms`.
pub(crate) async fn slide_raw(
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

pub(crate) async fn slide(server: &Server, token: &str, pos: Option<&str>, body: &Value) -> Value {
    let (status, response) = slide_raw(server, token, pos, 0, body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    response
}

pub(crate) fn pos(response: &Value) -> &str {
    response["pos"].as_str().expect("pos")
}

/// The IDs of the rooms a response carries.
pub(crate) fn rooms(response: &Value) -> BTreeSet<String> {
    response["rooms"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

/// A room list as the room-list service asks for it, over `ranges`.
pub(crate) fn room_list(ranges: Value, timeline_limit: u64) -> Value {
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
pub(crate) fn bodies(room: &Value) -> Vec<String> {
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
pub(crate) fn state_keys(room: &Value) -> BTreeSet<(String, String)> {
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
pub(crate) async fn rooms_with_messages(server: &Server, token: &str, count: usize) -> Vec<String> {
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
