//! Sliding-sync connections (MSC4186): extensions and their scope, positions per
//! connection and across restarts, long-polls, and a removal or a forgotten room reaching
//! every connection. Helpers in `sliding_sync.rs`.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server, assert_error, urlencode};
use crate::sliding_sync::{
    PATH, bodies, pos, room_list, rooms, rooms_with_messages, slide, slide_raw,
};

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
