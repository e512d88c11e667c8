//! What a room's members see of each other besides events: read receipts and markers (with
//! the unread counts they reset), typing, presence; and what a user keeps for themselves:
//! account data, filters, push rules.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

fn joined<'a>(sync: &'a Value, room: &str) -> &'a Value {
    &sync["rooms"]["join"][room]
}

fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    joined(sync, room)["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn receipts_reset_unread_counts_and_typing_comes_and_goes() {
    let server = Server::start(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let first = server.say(&alice_token, &room, "one").await;
    let mention =
        json!({ "msgtype": "m.text", "body": "two", "m.mentions": { "user_ids": [bob] } });
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/mention");
    let (status, sent) = server.put(&path, Some(&alice_token), mention).await;
    assert_eq!(status, StatusCode::OK);
    let second = sent["event_id"].as_str().unwrap().to_owned();

    // Bob's counts: both notify in a two-person room; the mention of him highlights.
    let view = server.sync(&bob_token, None, 0).await;
    let counts = &joined(&view, &room)["unread_notifications"];
    assert_eq!(counts["notification_count"], 2, "{view}");
    assert_eq!(counts["highlight_count"], 1, "{view}");
    let alice_since = next_batch(&server.sync(&alice_token, None, 0).await);

    // A public receipt for the first, on the main thread as Element sends them: Alice sees
    // it, Bob's count drops to one.
    let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{first}");
    let main = json!({ "thread_id": "main" });
    let (status, _) = server.post(&path, Some(&bob_token), main).await;
    assert_eq!(status, StatusCode::OK);
    let seen = server.sync(&alice_token, Some(&alice_since), 5000).await;
    let receipt = ephemeral(&seen, &room, "m.receipt").expect("receipt for Alice");
    let by_bob = &receipt["content"][&first]["m.read"][&bob];
    assert!(by_bob["ts"].is_u64(), "{receipt}");
    assert_eq!(by_bob["thread_id"], "main");
    let view = server.sync(&bob_token, None, 0).await;
    assert_eq!(
        joined(&view, &room)["unread_notifications"]["notification_count"],
        1
    );

    // An older receipt changes nothing; a private one for the second is Bob's alone.
    let (status, _) = server.post(&path, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let alice_since = next_batch(&seen);
    let markers = json!({ "m.fully_read": second, "m.read.private": second });
    let path = format!("/_matrix/client/v3/rooms/{room}/read_markers");
    let (status, _) = server.post(&path, Some(&bob_token), markers).await;
    assert_eq!(status, StatusCode::OK);
    let view = server.sync(&bob_token, None, 0).await;
    let counts = &joined(&view, &room)["unread_notifications"];
    assert_eq!(counts["notification_count"], 0, "{view}");
    assert_eq!(counts["highlight_count"], 0);
    let private = ephemeral(&view, &room, "m.receipt").unwrap();
    assert!(private["content"][&second]["m.read.private"][&bob].is_object());
    let fully_read = joined(&view, &room)["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.fully_read")
        .expect("m.fully_read in room account data");
    assert_eq!(fully_read["content"]["event_id"], second.as_str());
    let quiet = server.sync(&alice_token, Some(&alice_since), 300).await;
    let leaked = ephemeral(&quiet, &room, "m.receipt")
        .is_some_and(|r| r["content"][&second]["m.read.private"].is_object());
    assert!(!leaked, "Alice must not see Bob's private receipt: {quiet}");

    // Typing: Bob sees Alice start, and stop when her short timeout runs out.
    let bob_since = next_batch(&view);
    let path = format!("/_matrix/client/v3/rooms/{room}/typing/{alice}");
    let typing = json!({ "typing": true, "timeout": 1000 });
    let (status, _) = server.put(&path, Some(&alice_token), typing).await;
    assert_eq!(status, StatusCode::OK);
    let started = server.sync(&bob_token, Some(&bob_since), 5000).await;
    let event = ephemeral(&started, &room, "m.typing").expect("typing");
    assert_eq!(event["content"]["user_ids"], json!([alice]));
    let stopped = server
        .sync(&bob_token, Some(&next_batch(&started)), 5000)
        .await;
    let event = ephemeral(&stopped, &room, "m.typing").expect("typing stopped");
    assert_eq!(event["content"]["user_ids"], json!([]));

    // Bad input: someone else's typing, receipts for unknown events or types, outsiders.
    let path = format!("/_matrix/client/v3/rooms/{room}/typing/{bob}");
    let typing = json!({ "typing": true, "timeout": 1000 });
    let result = server.put(&path, Some(&alice_token), typing).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/$nope");
    let result = server.post(&path, Some(&bob_token), json!({})).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.bogus/{first}");
    let result = server.post(&path, Some(&bob_token), json!({})).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (_, carol_token) = server.user("carol").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{first}");
    let result = server.post(&path, Some(&carol_token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn account_data_filters_and_push_rules_belong_to_their_user() {
    let server = Server::start(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let initial = server.sync(&alice_token, None, 0).await;
    let rules = initial["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("default push rules in the first sync");
    assert!(rules["content"]["global"]["override"].is_array());

    // Global and room account data, each delivered once by sync.
    let direct = json!({ bob.clone(): [room] });
    let path = format!("/_matrix/client/v3/user/{alice}/account_data/m.direct");
    let (status, _) = server.put(&path, Some(&alice_token), direct.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get(&path, Some(&alice_token)).await.1, direct);
    let tag_path = format!("/_matrix/client/v3/user/{alice}/rooms/{room}/account_data/m.tag");
    let tags = json!({ "tags": { "u.work": { "order": 0.5 } } });
    let (status, _) = server
        .put(&tag_path, Some(&alice_token), tags.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let update = server
        .sync(&alice_token, Some(&next_batch(&initial)), 0)
        .await;
    let global = update["account_data"]["events"].as_array().unwrap();
    assert_eq!(global.len(), 1, "{update}");
    assert_eq!(global[0]["content"], direct);
    assert_eq!(
        joined(&update, &room)["account_data"]["events"][0]["content"],
        tags
    );
    let again = server
        .sync(&alice_token, Some(&next_batch(&update)), 0)
        .await;
    assert!(again["account_data"]["events"].is_null(), "{again}");

    // Only the owner; not JSON objects; types the server keeps itself.
    let result = server.get(&path, Some(&bob_token)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server.put(&path, Some(&bob_token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let missing = format!("/_matrix/client/v3/user/{alice}/account_data/m.nothing");
    let result = server.get(&missing, Some(&alice_token)).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server.put(&path, Some(&alice_token), json!([1])).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let rules_path = format!("/_matrix/client/v3/user/{alice}/account_data/m.push_rules");
    let result = server.put(&rules_path, Some(&alice_token), json!({})).await;
    assert_error(&result, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
    assert_eq!(server.get(&path, Some(&alice_token)).await.1, direct);

    // Filters: stored as sent, by ID, usable in sync; unknown IDs are 404.
    let filter = json!({ "room": { "timeline": { "limit": 1 } }, "org.example.extra": true });
    let path = format!("/_matrix/client/v3/user/{alice}/filter");
    let (status, created) = server.post(&path, Some(&alice_token), filter.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let id = created["filter_id"].as_str().unwrap();
    let stored = server
        .get(&format!("{path}/{id}"), Some(&alice_token))
        .await;
    assert_eq!(stored.1, filter);
    let result = server.get(&format!("{path}/{id}"), Some(&bob_token)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, limited) = server
        .get(
            &format!("/_matrix/client/v3/sync?filter={id}"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let timeline = &joined(&limited, &room)["timeline"];
    assert_eq!(timeline["events"].as_array().unwrap().len(), 1);
    assert_eq!(timeline["limited"], true);
    let result = server
        .get("/_matrix/client/v3/sync?filter=nope", Some(&alice_token))
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Push rules: defaults, a new rule placed first, disabled, actions changed, deleted.
    for path in [
        "/_matrix/client/v3/pushrules/",
        "/_matrix/client/v3/pushrules",
    ] {
        let (status, all) = server.get(path, Some(&alice_token)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(all["global"]["underride"].is_array(), "{all}");
    }
    let rule = "/_matrix/client/v3/pushrules/global/room";
    let body = json!({ "actions": ["notify"] });
    let (status, _) = server
        .put(&format!("{rule}/{room}"), Some(&alice_token), body)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, enabled) = server
        .get(&format!("{rule}/{room}/enabled"), Some(&alice_token))
        .await;
    assert_eq!(enabled["enabled"], true);
    let off = json!({ "enabled": false });
    let (status, _) = server
        .put(&format!("{rule}/{room}/enabled"), Some(&alice_token), off)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = server
        .get(&format!("{rule}/{room}"), Some(&alice_token))
        .await;
    assert_eq!(got["enabled"], false, "{got}");
    let quiet = json!({ "actions": [] });
    let (status, _) = server
        .put(&format!("{rule}/{room}/actions"), Some(&alice_token), quiet)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, actions) = server
        .get(&format!("{rule}/{room}/actions"), Some(&alice_token))
        .await;
    assert_eq!(actions["actions"], json!([]));
    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            &format!("{rule}/{room}"),
            Some(&alice_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let result = server
        .get(&format!("{rule}/{room}"), Some(&alice_token))
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let master = "/_matrix/client/v3/pushrules/global/override/.m.rule.master";
    let result = server
        .request(reqwest::Method::DELETE, master, Some(&alice_token), None)
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .put(
            &format!("{rule}/nope/enabled"),
            Some(&alice_token),
            json!({ "enabled": true }),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Muting the room through the master rule: Bob's messages no longer count for Alice.
    let on = json!({ "enabled": true });
    let (status, _) = server
        .put(&format!("{master}/enabled"), Some(&alice_token), on)
        .await;
    assert_eq!(status, StatusCode::OK);
    server.say(&bob_token, &room, "unheard").await;
    let view = server.sync(&alice_token, None, 0).await;
    assert_eq!(
        joined(&view, &room)["unread_notifications"]["notification_count"],
        0
    );
}

#[tokio::test]
async fn presence_is_stored_and_shared_with_room_members() {
    let server = Server::start(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let path = format!("/_matrix/client/v3/presence/{alice}/status");
    let (_, before) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(before["presence"], "offline");
    let since = next_batch(&server.sync(&bob_token, None, 0).await);
    let away = json!({ "presence": "unavailable", "status_msg": "lunch" });
    let (status, _) = server.put(&path, Some(&alice_token), away).await;
    assert_eq!(status, StatusCode::OK);
    let (_, now) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(now["presence"], "unavailable");
    assert_eq!(now["status_msg"], "lunch");
    let update = server.sync(&bob_token, Some(&since), 5000).await;
    let event = update["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sender"] == alice.as_str())
        .expect("Alice's presence for Bob");
    assert_eq!(event["content"]["presence"], "unavailable");

    let result = server
        .put(&path, Some(&bob_token), json!({ "presence": "online" }))
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .put(&path, Some(&alice_token), json!({ "presence": "dancing" }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // A status message is at most 1,024 bytes; a longer one changes nothing.
    let long = json!({ "presence": "online", "status_msg": "x".repeat(1025) });
    let result = server.put(&path, Some(&alice_token), long).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (_, kept) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(
        (&kept["presence"], &kept["status_msg"]),
        (&json!("unavailable"), &json!("lunch"))
    );
    let result = server
        .get(
            "/_matrix/client/v3/presence/@ghost:kith.test/status",
            Some(&bob_token),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // What unconfigured features answer, as an unconfigured Synapse does.
    let (status, turn) = server
        .get("/_matrix/client/v3/voip/turnServer", Some(&bob_token))
        .await;
    assert_eq!((status, turn), (StatusCode::OK, json!({})));
    let (status, protocols) = server
        .get("/_matrix/client/v3/thirdparty/protocols", Some(&bob_token))
        .await;
    assert_eq!((status, protocols), (StatusCode::OK, json!({})));
    // No bridge knows anyone or anywhere (Element asks for a SIP user per direct chat).
    for path in [
        "/_matrix/client/v3/thirdparty/user/im.vector.protocol.sip_virtual?native_mxid=%40a%3Ab",
        "/_matrix/client/v3/thirdparty/location/irc?network=x",
        "/_matrix/client/v3/thirdparty/user?userid=%40a%3Ab",
        "/_matrix/client/v3/thirdparty/location?alias=%23a%3Ab",
    ] {
        let (status, found) = server.get(path, Some(&bob_token)).await;
        assert_eq!((status, found), (StatusCode::OK, json!([])), "{path}");
        let result = server.get(path, None).await;
        assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    }
    let result = server
        .get(
            "/_matrix/client/v3/thirdparty/protocol/irc",
            Some(&bob_token),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server
        .get("/_matrix/client/v3/room_keys/version", Some(&bob_token))
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}
