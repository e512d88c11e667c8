//! Smaller things Element's screens use: room tags (favourites), jumping to a date
//! (`timestamp_to_event`), reporting events, rooms and users, and what calls need (TURN
//! credentials, the MatrixRTC focus).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error, rand_suffix, urlencode};

#[tokio::test]
async fn tags_are_set_read_and_removed_in_sync_too() {
    let server = Server::start(&[]);
    let (alice, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&token, (&bob, &bob_token)).await;
    let tags = format!("/_matrix/client/v3/user/{alice}/rooms/{room}/tags");
    let (status, _) = server
        .put(
            &format!("{tags}/m.favourite"),
            Some(&token),
            json!({ "order": 0.25 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(&format!("{tags}/u.work"), Some(&token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, found) = server.get(&tags, Some(&token)).await;
    assert_eq!(
        found,
        json!({ "tags": { "m.favourite": { "order": 0.25 }, "u.work": {} } })
    );
    let sync = server.sync(&token, None, 0).await;
    let data = &sync["rooms"]["join"][&room]["account_data"]["events"];
    let tag = data
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.tag");
    assert_eq!(
        tag.unwrap()["content"]["tags"]["m.favourite"]["order"],
        0.25,
        "{sync}"
    );
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{tags}/u.work"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, found) = server.get(&tags, Some(&token)).await;
    assert_eq!(
        found,
        json!({ "tags": { "m.favourite": { "order": 0.25 } } })
    );

    // Someone else's tags, a room one is not in, and bad tags are refused.
    let theirs = format!("/_matrix/client/v3/user/{alice}/rooms/{room}/tags");
    assert_error(
        &server.get(&theirs, Some(&bob_token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (_, other_token) = server.user("carol").await;
    let carol = server.whoami(&other_token).await.1["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stranger = format!("/_matrix/client/v3/user/{carol}/rooms/{room}/tags/x");
    let refused = server.put(&stranger, Some(&other_token), json!({})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let bad = server
        .put(
            &format!("{tags}/m.lowpriority"),
            Some(&token),
            json!({ "order": 7 }),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let long = format!("{tags}/{}", "x".repeat(300));
    assert_error(
        &server.put(&long, Some(&token), json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

async fn send_at(server: &Server, token: &str, room: &str, body: &str) -> (String, u64) {
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/send/m.room.message/{}",
        rand_suffix()
    );
    let (status, sent) = server
        .put(
            &path,
            Some(token),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let id = sent["event_id"].as_str().unwrap().to_owned();
    let (_, event) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{id}"),
            Some(token),
        )
        .await;
    (id, event["origin_server_ts"].as_u64().unwrap())
}

#[tokio::test]
async fn timestamp_to_event_finds_the_nearest_event_either_way() {
    let server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&token, (&bob, &bob_token)).await;
    let (first, first_ts) = send_at(&server, &token, &room, "first").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (second, second_ts) = send_at(&server, &token, &room, "second").await;
    assert!(second_ts > first_ts);
    let at = |ts: u64, dir: &str| {
        format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}")
    };
    let (_, found) = server.get(&at(first_ts + 1, "f"), Some(&token)).await;
    assert_eq!(found["event_id"], second, "{found}");
    assert_eq!(found["origin_server_ts"], second_ts);
    let (_, found) = server.get(&at(second_ts - 1, "b"), Some(&token)).await;
    assert_eq!(found["event_id"], first, "{found}");
    let (_, found) = server.get(&at(second_ts, "b"), Some(&token)).await;
    assert_eq!(found["event_id"], second);
    let none = server.get(&at(second_ts + 60_000, "f"), Some(&token)).await;
    assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, stranger) = server.user("carol").await;
    let refused = server.get(&at(first_ts, "f"), Some(&stranger)).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let bad = server.get(&at(first_ts, "sideways"), Some(&token)).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
}

#[tokio::test]
async fn reports_reach_the_admins_and_reveal_nothing() {
    let server = Server::start(&[]);
    let (alice, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&token, (&bob, &bob_token)).await;
    let (event, _) = send_at(&server, &bob_token, &room, "rude words").await;
    let report = |path: &str| format!("/_matrix/client/v3/{path}");
    let (status, _) = server
        .post(
            &report(&format!("rooms/{room}/report/{event}")),
            Some(&token),
            json!({ "reason": "rude" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            &report(&format!("rooms/{room}/report")),
            Some(&token),
            json!({ "reason": "a rude room" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            &report(&format!("users/{bob}/report")),
            Some(&token),
            json!({ "reason": "rude person" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // An outsider cannot report (or learn of) the room's events, nor the room.
    let (_, carol_token) = server.user("carol").await;
    let outsider = server
        .post(
            &report(&format!("rooms/{room}/report/{event}")),
            Some(&carol_token),
            json!({}),
        )
        .await;
    assert_error(&outsider, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let outsider = server
        .post(
            &report(&format!("rooms/{room}/report")),
            Some(&carol_token),
            json!({ "reason": "x" }),
        )
        .await;
    assert_error(&outsider, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let long = json!({ "reason": "x".repeat(3000) });
    let refused = server
        .post(
            &report(&format!("rooms/{room}/report/{event}")),
            Some(&token),
            long,
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let (ok, printed) = server.admin(&["reports"]);
    assert!(ok, "{printed}");
    let listed: Value = serde_json::from_str(&printed).expect("JSON from kith admin reports");
    let reports = listed["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 3, "{listed}");
    assert_eq!(reports[0]["kind"], "event");
    assert_eq!(reports[0]["event_id"], event);
    assert_eq!(reports[0]["reporter"], alice);
    assert_eq!(reports[0]["reason"], "rude");
    assert_eq!(reports[1]["kind"], "room");
    assert_eq!(reports[2]["kind"], "user");
    assert_eq!(reports[2]["user_id"], bob);
}

#[tokio::test]
async fn calls_get_turn_credentials_and_the_rtc_focus() {
    let foci = r#"[{type="livekit", livekit_service_url="https://jwt.example.org"}]"#;
    let server = Server::start(&[
        (
            "KITH_TURN__URIS",
            r#"["turn:turn.example.org:3478?transport=udp"]"#,
        ),
        ("KITH_TURN__SHARED_SECRET", "coturn-secret"),
        ("KITH_WELL_KNOWN__RTC_FOCI", foci),
    ]);
    let (alice, token) = server.user("alice").await;
    let (status, turn) = server
        .get("/_matrix/client/v3/voip/turnServer", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{turn}");
    assert_eq!(
        turn["uris"],
        json!(["turn:turn.example.org:3478?transport=udp"])
    );
    assert_eq!(turn["ttl"], 86400);
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        expiry > now + 86000 && expiry <= now + 86400 + 5,
        "{expiry} vs {now}"
    );
    assert_eq!(turn["password"].as_str().unwrap().len(), 28, "{turn}");
    let (_, well_known) = server.get("/.well-known/matrix/client", None).await;
    let focus = &well_known["org.matrix.msc4143.rtc_foci"][0];
    assert_eq!(
        focus["livekit_service_url"], "https://jwt.example.org",
        "{well_known}"
    );
    let (status, transports) = server
        .get(
            "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(transports["rtc_transports"][0]["type"], "livekit");
    let anonymous = server.get("/_matrix/client/v3/voip/turnServer", None).await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

fn member_keys(events: &Value) -> Vec<String> {
    let mut keys: Vec<String> = events
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.member")
                .map(|e| e["state_key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Element Web loads members lazily: a sync (and a page of history) carries only the
/// member events of the timeline's senders and the user's own.
#[tokio::test]
async fn lazily_loaded_members_are_those_of_the_timeline() {
    let server = Server::start(&[]);
    let (alice, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&token, (&bob, &bob_token)).await;
    let mut others = Vec::new();
    for name in ["carol", "dave"] {
        let (user, user_token) = server.user(name).await;
        let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
        server
            .post(&invite, Some(&token), json!({ "user_id": user }))
            .await;
        let join = format!("/_matrix/client/v3/rooms/{room}/join");
        let (status, _) = server.post(&join, Some(&user_token), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        others.push((user, user_token));
    }
    server.say(&bob_token, &room, "only bob speaks").await;
    let lazy =
        json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } });
    let path = format!(
        "/_matrix/client/v3/sync?filter={}",
        urlencode(&lazy.to_string())
    );
    let (_, sync) = server.get(&path, Some(&token)).await;
    let joined = &sync["rooms"]["join"][&room];
    let mut expected = vec![alice.clone(), bob.clone()];
    expected.sort();
    assert_eq!(
        member_keys(&joined["state"]["events"]),
        expected,
        "{joined}"
    );
    assert_eq!(joined["summary"]["m.joined_member_count"], 4);
    let eager = json!({ "room": { "timeline": { "limit": 1 } } });
    let path = format!(
        "/_matrix/client/v3/sync?filter={}",
        urlencode(&eager.to_string())
    );
    let (_, sync) = server.get(&path, Some(&token)).await;
    assert_eq!(
        member_keys(&sync["rooms"]["join"][&room]["state"]["events"]).len(),
        4
    );

    // A later message from carol brings her member event along.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    server.say(&others[0].1, &room, "carol too").await;
    let path = format!(
        "/_matrix/client/v3/sync?since={since}&filter={}",
        urlencode(&lazy.to_string())
    );
    let (_, sync) = server.get(&path, Some(&token)).await;
    let state = &sync["rooms"]["join"][&room]["state"]["events"];
    assert!(member_keys(state).contains(&others[0].0), "{sync}");
    assert!(!member_keys(state).contains(&others[1].0), "{sync}");

    // A page of history: the senders' member events as its state.
    let filter =
        urlencode(&json!({ "lazy_load_members": true, "types": ["m.room.message"] }).to_string());
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&filter={filter}");
    let (_, page) = server.get(&path, Some(&token)).await;
    let mut senders = vec![alice.clone(), bob.clone(), others[0].0.clone()];
    senders.sort();
    assert_eq!(member_keys(&page["state"]), senders, "{page}");
}

/// An upgrade: a new room carrying the old one's name, topic, power and bans, its members
/// invited, the alias moved; the old room tombstoned and closed to writing.
#[tokio::test]
async fn a_room_upgrade_carries_the_room_on() {
    let server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (carol, _) = server.user("carol").await;
    let body = json!({
        "room_version": "10", "preset": "private_chat", "name": "Book club",
        "topic": "Chapter 3", "room_alias_name": "books", "invite": [bob],
    });
    let (status, created) = server
        .post("/_matrix/client/v3/createRoom", Some(&token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let old = created["room_id"].as_str().unwrap().to_owned();
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{old}/join"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    let ban = format!("/_matrix/client/v3/rooms/{old}/ban");
    let (status, _) = server
        .post(&ban, Some(&token), json!({ "user_id": carol }))
        .await;
    assert_eq!(status, StatusCode::OK);

    let upgrade = format!("/_matrix/client/v3/rooms/{old}/upgrade");
    let refused = server
        .post(&upgrade, Some(&bob_token), json!({ "new_version": "12" }))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let refused = server
        .post(&upgrade, Some(&token), json!({ "new_version": "99" }))
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    let (status, upgraded) = server
        .post(&upgrade, Some(&token), json!({ "new_version": "12" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{upgraded}");
    let new = upgraded["replacement_room"].as_str().unwrap().to_owned();

    let state = |room: &str, kind: &str, key: &str| {
        format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{key}")
    };
    let (_, tombstone) = server
        .get(&state(&old, "m.room.tombstone", ""), Some(&bob_token))
        .await;
    assert_eq!(tombstone["replacement_room"], new, "{tombstone}");
    let refused = server
        .put(
            &format!("/_matrix/client/v3/rooms/{old}/send/m.room.message/late"),
            Some(&bob_token),
            json!({ "msgtype": "m.text", "body": "too late" }),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let (_, create) = server
        .get(&state(&new, "m.room.create", ""), Some(&token))
        .await;
    assert_eq!(create["predecessor"]["room_id"], old, "{create}");
    assert_eq!(create["room_version"], "12");
    let (_, name) = server
        .get(&state(&new, "m.room.name", ""), Some(&token))
        .await;
    assert_eq!(name["name"], "Book club");
    let (_, topic) = server
        .get(&state(&new, "m.room.topic", ""), Some(&token))
        .await;
    assert_eq!(topic["topic"], "Chapter 3");
    let (_, bob_member) = server
        .get(&state(&new, "m.room.member", &bob), Some(&token))
        .await;
    assert_eq!(bob_member["membership"], "invite", "{bob_member}");
    let (_, carol_member) = server
        .get(&state(&new, "m.room.member", &carol), Some(&token))
        .await;
    assert_eq!(carol_member["membership"], "ban", "{carol_member}");
    let (_, alias) = server
        .get(
            "/_matrix/client/v3/directory/room/%23books:kith.test",
            Some(&token),
        )
        .await;
    assert_eq!(alias["room_id"], new, "{alias}");
    let (status, joined) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{new}/join"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
}
