//! Reading a room's past: `/messages` both ways with `to` and a filter, `/context`, and
//! redactions (one's own, others' with the power to, idempotent per transaction).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn messages_page_both_ways_through_filters_and_context() {
    let server = Server::start(&[]);
    let (bob, bob_token) = server.user("bob").await;
    let (_, alice_token) = server.user("alice").await;
    let room = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let token = if i % 2 == 0 { &alice_token } else { &bob_token };
        ids.push(server.say(token, &room, &format!("m{i}")).await);
    }
    let messages = format!("/_matrix/client/v3/rooms/{room}/messages");

    // Forwards from the start: the create event first, then on in pages.
    let (status, first) = server
        .get(&format!("{messages}?dir=f&limit=3"), Some(&bob_token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["chunk"][0]["type"], "m.room.create");
    let mut forward = Vec::new();
    let mut from = first["end"].as_str().unwrap().to_owned();
    for _ in 0..20 {
        let (_, page) = server
            .get(
                &format!("{messages}?dir=f&limit=3&from={from}"),
                Some(&bob_token),
            )
            .await;
        forward.extend(bodies(&page["chunk"]));
        // Forwards there is always a token to go on from (newer events may come), as
        // Synapse gives it: the page at the newest is empty and ends where it began.
        let end = page["end"].as_str().expect("forwards, an end token");
        if page["chunk"].as_array().unwrap().is_empty() {
            assert_eq!(end, from);
            break;
        }
        from = end.to_owned();
    }
    assert_eq!(forward, ["m0", "m1", "m2", "m3", "m4", "m5"]);

    // Backwards through a filter: only Bob's messages, stopping at a token.
    let filter = format!("{{\"types\":[\"m.room.mes*\"],\"senders\":[\"{bob}\"]}}");
    let filter = filter
        .replace('"', "%22")
        .replace('{', "%7B")
        .replace('}', "%7D");
    let (status, mine) = server
        .get(
            &format!("{messages}?dir=b&limit=10&filter={filter}"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(bodies(&mine["chunk"]), ["m5", "m3", "m1"]);
    // The token just after m2: where a page of the newest three ends.
    let (_, three) = server
        .get(&format!("{messages}?dir=b&limit=3"), Some(&bob_token))
        .await;
    let m2_token = three["end"].as_str().unwrap();
    let (_, tail) = server
        .get(
            &format!("{messages}?dir=b&limit=10&to={m2_token}"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(bodies(&tail["chunk"]), ["m5", "m4", "m3"]);
    assert!(tail["end"].is_null(), "{tail}");

    // Context: two before, two after (the limit split in half).
    let path = format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", ids[3]);
    let (status, context) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["event"]["content"]["body"], "m3");
    assert_eq!(bodies(&context["events_before"]), ["m2", "m1"]);
    assert_eq!(bodies(&context["events_after"]), ["m4", "m5"]);
    assert!(
        context["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    let (_, earlier) = server
        .get(
            &format!(
                "{messages}?dir=b&limit=1&from={}",
                context["start"].as_str().unwrap()
            ),
            Some(&bob_token),
        )
        .await;
    assert_eq!(bodies(&earlier["chunk"]), ["m0"]);

    // Bad tokens, unknown events, outsiders.
    let result = server
        .get(&format!("{messages}?dir=b&from=nonsense"), Some(&bob_token))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server
        .get(&format!("{messages}?dir=f&to=x"), Some(&bob_token))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let unknown = format!("/_matrix/client/v3/rooms/{room}/context/$unknown");
    let result = server.get(&unknown, Some(&bob_token)).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, carol_token) = server.user("carol").await;
    let result = server.get(&path, Some(&carol_token)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // A message sent since is found from the last forward token.
    server.say(&alice_token, &room, "m6").await;
    let (_, newer) = server
        .get(&format!("{messages}?dir=f&from={from}"), Some(&bob_token))
        .await;
    assert_eq!(bodies(&newer["chunk"]), ["m6"]);
}

#[tokio::test]
async fn redactions_strip_events_for_their_sender_or_a_moderator() {
    let server = Server::start(&[]);
    let (_, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    for version in ["10", "11", "12"] {
        let body = json!({ "room_version": version, "invite": [bob] });
        let (_, created) = server
            .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
            .await;
        let room = created["room_id"].as_str().unwrap().to_owned();
        let join = format!("/_matrix/client/v3/rooms/{room}/join");
        assert_eq!(
            server.post(&join, Some(&bob_token), json!({})).await.0,
            StatusCode::OK
        );
        let alices = server.say(&alice_token, &room, "from alice").await;
        let bobs = server.say(&bob_token, &room, "from bob").await;
        let redact = |event: &str, txn: &str| {
            format!("/_matrix/client/v3/rooms/{room}/redact/{event}/{txn}")
        };

        // Bob may not redact Alice's message, not even by sending the redaction event
        // himself; he may redact his own (once per transaction).
        let result = server
            .put(&redact(&alices, "r1"), Some(&bob_token), json!({}))
            .await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let sneaky = format!("/_matrix/client/v3/rooms/{room}/send/m.room.redaction/r0");
        let result = server
            .put(&sneaky, Some(&bob_token), json!({ "redacts": alices }))
            .await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let path = format!("/_matrix/client/v3/rooms/{room}/event/{alices}");
        let (_, intact) = server.get(&path, Some(&bob_token)).await;
        assert_eq!(intact["content"]["body"], "from alice");
        let reason = json!({ "reason": "typo" });
        let (status, first) = server
            .put(&redact(&bobs, "r2"), Some(&bob_token), reason.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {first}");
        let (_, replay) = server
            .put(&redact(&bobs, "r2"), Some(&bob_token), reason)
            .await;
        assert_eq!(first["event_id"], replay["event_id"]);
        let path = format!("/_matrix/client/v3/rooms/{room}/event/{bobs}");
        let (_, stripped) = server.get(&path, Some(&alice_token)).await;
        assert_eq!(stripped["content"], json!({}), "v{version}: {stripped}");
        let because = &stripped["unsigned"]["redacted_because"];
        assert_eq!(because["event_id"], first["event_id"]);
        assert_eq!(because["redacts"], bobs.as_str());
        assert_eq!(because["content"]["reason"], "typo");

        // Alice, the room's creator and moderator, may redact Bob's; unknown events are 404.
        let again = server.say(&bob_token, &room, "again").await;
        let (status, _) = server
            .put(&redact(&again, "r3"), Some(&alice_token), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "v{version}");
        let path = format!("/_matrix/client/v3/rooms/{room}/event/{again}");
        assert_eq!(
            server.get(&path, Some(&bob_token)).await.1["content"],
            json!({})
        );
        // Both of Bob's messages are gone, and so are they from Alice's unread count.
        let view = server.sync(&alice_token, None, 0).await;
        let counts = &view["rooms"]["join"][&room]["unread_notifications"];
        assert_eq!(counts["notification_count"], 0, "v{version}: {counts}");
        let result = server
            .put(&redact("$missing", "r4"), Some(&alice_token), json!({}))
            .await;
        assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    // Three rooms of thirteen events each (eight to set up, three messages, two
    // redactions), the redacted ones verifying by signature.
    assert_eq!(server.assert_events_verify(), 39);
}

/// History visibility: under `joined`, a member reads only what happened while joined;
/// under `invited`, from their invite on; under the default `shared`, everything.
#[tokio::test]
async fn history_visibility_hides_what_came_before() {
    let server = Server::start(&[]);
    let (_, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let cases: [(&str, &[&str]); 3] = [
        ("joined", &["after"]),
        ("invited", &["after", "while invited"]),
        ("shared", &["after", "while invited", "before"]),
    ];
    for (setting, expected) in cases {
        let body = json!({ "preset": "public_chat", "initial_state": [
            { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": setting } }
        ] });
        let (_, created) = server
            .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
            .await;
        let room = created["room_id"].as_str().unwrap().to_owned();
        let before = server.say(&alice_token, &room, "before").await;
        let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
        server
            .post(&invite, Some(&alice_token), json!({ "user_id": bob }))
            .await;
        server.say(&alice_token, &room, "while invited").await;
        let join = format!("/_matrix/client/v3/rooms/{room}/join");
        assert_eq!(
            server.post(&join, Some(&bob_token), json!({})).await.0,
            StatusCode::OK
        );
        let after = server.say(&alice_token, &room, "after").await;

        let messages = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
        let (_, page) = server.get(&messages, Some(&bob_token)).await;
        assert_eq!(bodies(&page["chunk"]), expected, "{setting}");
        let event = format!("/_matrix/client/v3/rooms/{room}/event/{before}");
        let result = server.get(&event, Some(&bob_token)).await;
        let context = format!("/_matrix/client/v3/rooms/{room}/context/{after}?limit=10");
        let (_, around) = server.get(&context, Some(&bob_token)).await;
        let before_after = bodies(&around["events_before"]);
        if setting == "shared" {
            assert_eq!(result.0, StatusCode::OK);
            assert_eq!(before_after, ["while invited", "before"]);
        } else {
            assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
            assert_eq!(before_after, expected[1..].to_vec(), "{setting}");
        }
        // Bob's sync shows the room from where he may read it.
        let view = server.sync(&bob_token, None, 0).await;
        let timeline = bodies(&view["rooms"]["join"][&room]["timeline"]["events"]);
        assert_eq!(
            timeline.contains(&"before".to_owned()),
            setting == "shared",
            "{setting}"
        );
        // Alice, there all along, sees everything.
        let (_, hers) = server.get(&messages, Some(&alice_token)).await;
        assert_eq!(bodies(&hers["chunk"]), ["after", "while invited", "before"]);
    }
}

/// What counts is the history visibility in force when each event was sent, not the
/// room's setting now: history shared while it was `shared` stays readable to people who
/// join after it became `joined`, and what was said under `joined` stays hidden from them.
#[tokio::test]
async fn each_event_keeps_the_visibility_it_was_sent_under() {
    let server = Server::start(&[]);
    let (_, alice) = server.user("alice").await;
    let (_, bob) = server.user("bob").await;
    let (_, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            json!({ "preset": "public_chat" }),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    server.say(&alice, &room, "shared history").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/");
    let (status, _) = server
        .put(
            &path,
            Some(&alice),
            json!({ "history_visibility": "joined" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let hidden = server.say(&alice, &room, "members only").await;
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    assert_eq!(
        server.post(&join, Some(&bob), json!({})).await.0,
        StatusCode::OK
    );
    server.say(&alice, &room, "after bob came").await;

    let messages = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    let (_, page) = server.get(&messages, Some(&bob)).await;
    assert_eq!(bodies(&page["chunk"]), ["after bob came", "shared history"]);
    // The change itself is seen under the more open of the settings around it: shared.
    let changes = page["chunk"].as_array().unwrap().iter();
    let changes = changes
        .filter(|e| e["type"] == "m.room.history_visibility")
        .count();
    assert_eq!(changes, 2, "the initial setting and the change: {page}");
    let event = format!("/_matrix/client/v3/rooms/{room}/event/{hidden}");
    assert_error(
        &server.get(&event, Some(&bob)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}
