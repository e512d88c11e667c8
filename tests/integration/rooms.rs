//! Rooms: creation in every supported version, membership, sending (idempotent per
//! transaction), state, history, and what non-members and bad input get.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

fn token(user: &Value) -> &str {
    user["access_token"].as_str().unwrap()
}

async fn put(server: &Server, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    server
        .request(Method::PUT, path, Some(token), Some(body))
        .await
}

/// Every event of the room, oldest first, paged backwards two at a time.
async fn history(server: &Server, room: &str, token: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from = String::new();
    for _ in 0..100 {
        let query = if from.is_empty() {
            String::new()
        } else {
            format!("&from={from}")
        };
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=2{query}");
        let (status, page) = server.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["chunk"].as_array().unwrap().iter().cloned());
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => {
                events.reverse();
                return events;
            }
        }
    }
    panic!("history did not end");
}

#[tokio::test]
async fn direct_rooms_in_every_version_with_history_and_idempotent_sends() {
    let server = Server::start(&[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in ["10", "11", "12"] {
        let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": ["@bob:kith.test"],
            "name": "Chat", "topic": "things", "room_version": version });
        let (status, created) = server
            .post("/_matrix/client/v3/createRoom", Some(token(&alice)), body)
            .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {created}");
        let room = created["room_id"].as_str().unwrap().to_owned();
        if version == "12" {
            assert!(
                !room.contains(':'),
                "v12 room IDs are the create event's hash: {room}"
            );
        }
        let (_, joined) = server
            .get("/_matrix/client/v3/joined_rooms", Some(token(&alice)))
            .await;
        assert!(
            joined["joined_rooms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == room.as_str())
        );

        let (status, state) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state"),
                Some(token(&alice)),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let find = |kind: &str, key: &str| {
            state
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == kind && e["state_key"] == key)
                .cloned()
        };
        assert_eq!(
            find("m.room.create", "").unwrap()["content"]["room_version"],
            version
        );
        let invite = find("m.room.member", "@bob:kith.test").unwrap();
        assert_eq!(
            invite["content"],
            json!({ "membership": "invite", "is_direct": true, "displayname": "bob" })
        );
        assert_eq!(
            find("m.room.power_levels", "").unwrap()["content"]["users"]["@bob:kith.test"],
            100
        );
        let (_, name) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                Some(token(&alice)),
            )
            .await;
        assert_eq!(name, json!({ "name": "Chat" }));

        // Invited is not joined: bob cannot speak until he joins.
        let send = |txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let hello = json!({ "msgtype": "m.text", "body": "hello" });
        assert_error(
            &put(&server, &send("b0"), token(&bob), hello.clone()).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let (status, _) = server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/join"),
                Some(token(&bob)),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            put(&server, &send("b1"), token(&bob), hello.clone())
                .await
                .0,
            StatusCode::OK
        );

        // A replayed transaction ID returns the first event and creates nothing.
        let (_, first) = put(
            &server,
            &send("a1"),
            token(&alice),
            json!({ "msgtype": "m.text", "body": "once" }),
        )
        .await;
        let (_, again) = put(
            &server,
            &send("a1"),
            token(&alice),
            json!({ "msgtype": "m.text", "body": "once" }),
        )
        .await;
        assert_eq!(first["event_id"], again["event_id"]);

        let events = history(&server, &room, token(&bob)).await;
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "m.room.create",
                "m.room.member",
                "m.room.power_levels",
                "m.room.join_rules",
                "m.room.history_visibility",
                "m.room.guest_access",
                "m.room.name",
                "m.room.topic",
                "m.room.member",
                "m.room.member",
                "m.room.message",
                "m.room.message"
            ],
            "v{version}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e["content"]["body"] == "once")
                .count(),
            1
        );
        let (status, event) = server
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/event/{}",
                    first["event_id"].as_str().unwrap()
                ),
                Some(token(&bob)),
            )
            .await;
        assert_eq!(
            (status, &event["content"]["body"]),
            (StatusCode::OK, &json!("once"))
        );
    }
}

#[tokio::test]
async fn outsiders_and_bad_input_get_errors_and_change_nothing() {
    let server = Server::start(&[]);
    let alice = server.register("ann").await;
    let carol = server.register("carl").await;
    let (_, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(token(&alice)),
            json!({ "preset": "public_chat" }),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let rooms = "/_matrix/client/v3/rooms";
    let message = json!({ "msgtype": "m.text", "body": "hi" });

    // Not joined: no sending, no reading.
    assert_error(
        &put(
            &server,
            &format!("{rooms}/{room}/send/m.room.message/c1"),
            token(&carol),
            message.clone(),
        )
        .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    for path in [
        format!("{rooms}/{room}/state"),
        format!("{rooms}/{room}/messages?dir=b"),
        format!("{rooms}/{room}/state/m.room.create/"),
    ] {
        assert_error(
            &server.get(&path, Some(token(&carol))).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
    }
    assert_error(
        &put(
            &server,
            &format!("{rooms}/!nowhere:kith.test/send/m.room.message/c2"),
            token(&carol),
            message.clone(),
        )
        .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Joined to a public room, carol still lacks the power to invite (50) or to name it.
    assert_eq!(
        server
            .post(
                &format!("{rooms}/{room}/join"),
                Some(token(&carol)),
                json!({})
            )
            .await
            .0,
        StatusCode::OK
    );
    let invite = server
        .post(
            &format!("{rooms}/{room}/invite"),
            Some(token(&carol)),
            json!({ "user_id": "@ann:kith.test" }),
        )
        .await;
    assert_error(&invite, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let name = put(
        &server,
        &format!("{rooms}/{room}/state/m.room.name/"),
        token(&carol),
        json!({ "name": "mine" }),
    )
    .await;
    assert_error(&name, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Bad input.
    let huge = json!({ "msgtype": "m.text", "body": "x".repeat(70_000) });
    assert_error(
        &put(
            &server,
            &format!("{rooms}/{room}/send/m.room.message/big"),
            token(&carol),
            huge,
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    assert_error(
        &put(
            &server,
            &format!("{rooms}/{room}/send/m.room.message/arr"),
            token(&carol),
            json!([1]),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .get(
                &format!("{rooms}/{room}/messages?dir=b&from=yesterday"),
                Some(token(&carol)),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let old = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(token(&alice)),
            json!({ "room_version": "9" }),
        )
        .await;
    assert_error(&old, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    let unknown_event = server
        .get(
            &format!("{rooms}/{room}/event/$nothing"),
            Some(token(&carol)),
        )
        .await;
    assert_error(&unknown_event, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // None of it is in the room: only the creation events and carol's join.
    let events = history(&server, &room, token(&alice)).await;
    assert!(
        events
            .iter()
            .all(|e| e["type"] != "m.room.message" && e["type"] != "m.room.name"),
        "{events:?}"
    );

    // Leaving ends reading what comes after: the state is as of the leave.
    let leave = format!("{rooms}/{room}/leave");
    let (status, _) = server.post(&leave, Some(token(&carol)), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let name = format!("{rooms}/{room}/state/m.room.name/");
    let (status, _) = server
        .put(&name, Some(token(&alice)), json!({ "name": "later" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, state) = server
        .get(&format!("{rooms}/{room}/state"), Some(token(&carol)))
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let kinds: Vec<_> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert!(
        kinds.contains(&json!("m.room.create")) && !kinds.contains(&json!("m.room.name")),
        "{kinds:?}"
    );
    assert_error(
        &server.get(&name, Some(token(&carol))).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}
