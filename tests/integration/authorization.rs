//! The authorization matrix of issue 17: for room-, user- and device-scoped reads and
//! writes, a stranger, a deactivated user and a guest are refused, and a former member
//! reads the room as of their leave and nothing after it. Each refusal is checked to have
//! changed nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, Server, ageless};

fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// (method, path, body) of every write a non-member must not make in `room`.
/// `me` is the caller, `member` someone in the room, `outsider` someone who is not.
fn room_writes(
    room: &str,
    event: &str,
    (me, member, outsider): (&str, &str, &str),
) -> Vec<(Method, String, Value)> {
    let r = format!("/_matrix/client/v3/rooms/{room}");
    vec![
        (
            Method::PUT,
            format!("{r}/send/m.room.message/t1"),
            json!({ "msgtype": "m.text", "body": "intruder" }),
        ),
        (
            Method::PUT,
            format!("{r}/state/m.room.topic/"),
            json!({ "topic": "intruder" }),
        ),
        (Method::PUT, format!("{r}/redact/{event}/t2"), json!({})),
        (
            Method::POST,
            format!("{r}/invite"),
            json!({ "user_id": outsider }),
        ),
        (
            Method::POST,
            format!("{r}/kick"),
            json!({ "user_id": member }),
        ),
        (
            Method::POST,
            format!("{r}/ban"),
            json!({ "user_id": member }),
        ),
        (
            Method::POST,
            format!("{r}/receipt/m.read/{event}"),
            json!({}),
        ),
        (
            Method::POST,
            format!("{r}/read_markers"),
            json!({ "m.fully_read": event }),
        ),
        (
            Method::PUT,
            format!("{r}/typing/{me}"),
            json!({ "typing": true, "timeout": 1000 }),
        ),
    ]
}

fn room_reads(room: &str, event: &str) -> Vec<String> {
    let r = format!("/_matrix/client/v3/rooms/{room}");
    vec![
        format!("{r}/messages?dir=b"),
        format!("{r}/state"),
        format!("{r}/state/m.room.create/"),
        format!("{r}/event/{event}"),
        format!("{r}/context/{event}"),
        format!("{r}/members"),
        format!("{r}/joined_members"),
    ]
}

fn refused(result: &(StatusCode, Value), what: &str) {
    let (status, body) = result;
    assert!(
        matches!(*status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{what}: {status} {body}"
    );
    assert!(
        body["errcode"].is_string(),
        "{what}: not a Matrix error: {body}"
    );
}

#[tokio::test]
async fn strangers_former_members_deactivated_users_and_guests_are_refused() {
    let server = Server::start(&[]);
    let (_, alice_token) = server.user("alice").await;
    let bob_registered = server.register("bob").await;
    let bob = bob_registered["user_id"].as_str().unwrap().to_owned();
    let bob_token = bob_registered["access_token"].as_str().unwrap().to_owned();
    let bob_device = bob_registered["device_id"].as_str().unwrap().to_owned();
    let (carol, carol_token) = server.user("carol").await;
    let (frank, _) = server.user("frank").await;
    let (dave, dave_token) = server.user("dave").await;
    let (eve, eve_token) = server.user("eve").await;

    let body = json!({ "preset": "private_chat", "invite": [bob, dave, eve] });
    let (_, created) = server
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    for token in [&bob_token, &dave_token, &eve_token] {
        let join = format!("/_matrix/client/v3/rooms/{room}/join");
        assert_eq!(
            server.post(&join, Some(token), json!({})).await.0,
            StatusCode::OK
        );
    }
    let before = server.say(&alice_token, &room, "before dave left").await;
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    assert_eq!(
        server.post(&leave, Some(&dave_token), json!({})).await.0,
        StatusCode::OK
    );
    let topic = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
    let (status, _) = server
        .put(&topic, Some(&alice_token), json!({ "topic": "after" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let after = server.say(&alice_token, &room, "after dave left").await;

    // eve is deactivated: her token is refused everywhere at once.
    let auth = json!({ "auth": { "type": "m.login.password", "password": PASSWORD,
        "identifier": { "type": "m.id.user", "user": "eve" } } });
    let (status, gone) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&eve_token),
            auth,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{gone}");

    let state_before = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(&alice_token),
        )
        .await;

    // A stranger (carol) and a former member (dave) write nothing into the room.
    // Each would pass but for the caller not being in the room: typing as themselves,
    // inviting someone who exists and is not in it.
    for (who, me, token) in [
        ("stranger", &carol, &carol_token),
        ("former member", &dave, &dave_token),
    ] {
        for (method, path, body) in room_writes(&room, &before, (me, &bob, &frank)) {
            let (status, answer) = server
                .request(method.clone(), &path, Some(token), Some(body))
                .await;
            assert_eq!(
                (status, answer["errcode"].as_str()),
                (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
                "{who}: {method} {path}: {answer}"
            );
        }
    }
    // A stranger reads nothing of it.
    for path in room_reads(&room, &before) {
        refused(
            &server.get(&path, Some(&carol_token)).await,
            &format!("stranger: GET {path}"),
        );
    }
    // The deactivated user is not even recognised.
    for path in room_reads(&room, &before) {
        let (status, body) = server.get(&path, Some(&eve_token)).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")),
            "deactivated: GET {path}"
        );
    }
    for (method, path, body) in room_writes(&room, &before, (&eve, &bob, &frank)) {
        let (status, _) = server
            .request(method.clone(), &path, Some(&eve_token), Some(body))
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "deactivated: {method} {path}"
        );
    }

    // The former member reads the room as of their leave: what came before, not after.
    let (status, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            Some(&dave_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["before dave left"]);
    let event = |id: &str| format!("/_matrix/client/v3/rooms/{room}/event/{id}");
    assert_eq!(
        server.get(&event(&before), Some(&dave_token)).await.0,
        StatusCode::OK
    );
    refused(
        &server.get(&event(&after), Some(&dave_token)).await,
        "former member: an event after the leave",
    );
    let (status, _) = server.get(&topic, Some(&dave_token)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the topic was set after dave left"
    );
    let (status, state) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(&dave_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert!(
        !state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.topic"),
        "state as of the leave: {state}"
    );
    let path = format!("/_matrix/client/v3/rooms/{room}/context/{before}?limit=10");
    let (status, around) = server.get(&path, Some(&dave_token)).await;
    assert_eq!(status, StatusCode::OK, "{around}");
    assert!(
        bodies(&around["events_after"]).is_empty(),
        "nothing after the leave: {around}"
    );
    let topics = around["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.topic")
        .count();
    assert_eq!(
        topics, 0,
        "the context's state is as of the leave: {around}"
    );

    // Nothing the refused requests tried has happened.
    let state_after = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(
        (state_before.0, ageless(&state_before.1)),
        (state_after.0, ageless(&state_after.1)),
        "a refused write changed the room's state"
    );
    let (_, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(
        bodies(&page["chunk"]),
        ["after dave left", "before dave left"]
    );

    // Another user's account data, filters, tags, profile, presence and devices.
    let user = |path: &str| format!("/_matrix/client/v3/user/{bob}{path}");
    let writes = [
        (
            Method::PUT,
            user("/account_data/org.example"),
            json!({ "x": 1 }),
        ),
        (
            Method::PUT,
            user(&format!("/rooms/{room}/account_data/org.example")),
            json!({ "x": 1 }),
        ),
        (
            Method::PUT,
            user(&format!("/rooms/{room}/tags/u.work")),
            json!({}),
        ),
        (Method::POST, user("/filter"), json!({})),
        (
            Method::PUT,
            format!("/_matrix/client/v3/profile/{bob}/displayname"),
            json!({ "displayname": "hijacked" }),
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/presence/{bob}/status"),
            json!({ "presence": "online" }),
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/devices/{bob_device}"),
            json!({ "display_name": "hijacked" }),
        ),
    ];
    for (method, path, body) in writes {
        let result = server
            .request(method.clone(), &path, Some(&carol_token), Some(body))
            .await;
        refused(&result, &format!("another user's: {method} {path}"));
    }
    for path in [
        user("/account_data/m.push_rules"),
        user(&format!("/rooms/{room}/account_data/org.example")),
        user(&format!("/rooms/{room}/tags")),
        user("/filter/0"),
        format!("/_matrix/client/v3/devices/{bob_device}"),
    ] {
        refused(
            &server.get(&path, Some(&carol_token)).await,
            &format!("another user's: GET {path}"),
        );
    }
    let (_, profile) = server
        .get(&format!("/_matrix/client/v3/profile/{bob}"), None)
        .await;
    assert_eq!(profile["displayname"], "bob");
    let (_, devices) = server
        .get("/_matrix/client/v3/devices", Some(&bob_token))
        .await;
    assert_eq!(devices["devices"][0]["device_id"], bob_device.as_str());
    assert_ne!(
        devices["devices"][0]["display_name"], "hijacked",
        "{devices}"
    );

    // A guest cannot become one: guest access is off, so there is no guest token to try.
    let (status, body) = server
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_GUEST_ACCESS_FORBIDDEN"))
    );
}
