//! Membership beyond join and leave: kick, ban, unban, forget; member lists now and at a
//! past token; room aliases and joining by one.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

fn members_of(page: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let user = e["state_key"].as_str().unwrap().to_owned();
            (
                user,
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn kick_ban_unban_and_forget_follow_the_power_levels() {
    let server = Server::start(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (carol, carol_token) = server.user("carol").await;
    let body = json!({ "preset": "public_chat" });
    let (_, created) = server
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    for token in [&bob_token, &carol_token] {
        assert_eq!(
            server.post(&join, Some(token), json!({})).await.0,
            StatusCode::OK
        );
    }
    let before_kick = server.sync(&carol_token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob (power 0) cannot kick or ban; Alice (the creator) can.
    let kick = format!("/_matrix/client/v3/rooms/{room}/kick");
    let ban = format!("/_matrix/client/v3/rooms/{room}/ban");
    let unban = format!("/_matrix/client/v3/rooms/{room}/unban");
    let target = |user: &str| json!({ "user_id": user, "reason": "testing" });
    let result = server.post(&kick, Some(&bob_token), target(&carol)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server.post(&ban, Some(&bob_token), target(&carol)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server.post(&kick, Some(&alice_token), target(&carol)).await;
    assert_eq!(status, StatusCode::OK);
    let result = server.post(&kick, Some(&alice_token), target(&carol)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let left = server.sync(&carol_token, Some(&before_kick), 0).await;
    let last = left["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .and_then(|t| t.last().cloned())
        .expect("the kick in Carol's leave section");
    assert_eq!(last["content"]["membership"], "leave");
    assert_eq!(last["content"]["reason"], "testing");
    assert_eq!(last["sender"], alice.as_str());

    // A stranger banned pre-emptively learns of the ban, and nothing else of the room.
    let (dave, dave_token) = server.user("dave").await;
    let dave_since = server.sync(&dave_token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server.post(&ban, Some(&alice_token), target(&dave)).await;
    assert_eq!(status, StatusCode::OK);
    let banned = server.sync(&dave_token, Some(&dave_since), 0).await;
    let seen = &banned["rooms"]["leave"][&room]["timeline"]["events"];
    assert_eq!(seen.as_array().map(Vec::len), Some(1), "{banned}");
    assert_eq!(seen[0]["content"]["membership"], "ban");

    // Banned, Bob cannot rejoin a public room; unbanned, he can.
    let (status, _) = server.post(&ban, Some(&alice_token), target(&bob)).await;
    assert_eq!(status, StatusCode::OK);
    let result = server.post(&join, Some(&bob_token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .post(&unban, Some(&alice_token), target(&carol))
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server.post(&unban, Some(&alice_token), target(&bob)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.post(&join, Some(&bob_token), json!({})).await.0,
        StatusCode::OK
    );

    // Forgetting: not while joined; after the kick, yes, and the leave is no longer shown.
    let forget = format!("/_matrix/client/v3/rooms/{room}/forget");
    let result = server.post(&forget, Some(&bob_token), json!({})).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let (status, _) = server.post(&forget, Some(&carol_token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.post(&forget, Some(&carol_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "forgetting twice is fine");
    // Carol's other devices, syncing from before the kick, still learn of it once.
    let other_device = server.sync(&carol_token, Some(&before_kick), 0).await;
    assert!(
        other_device["rooms"]["leave"][&room].is_object(),
        "{other_device}"
    );
    let later = other_device["next_batch"].as_str().unwrap();
    let after = server.sync(&carol_token, Some(later), 0).await;
    assert!(after["rooms"]["leave"][&room].is_null(), "{after}");
    let nowhere = "/_matrix/client/v3/rooms/!nowhere:kith.test/forget";
    let result = server.post(nowhere, Some(&carol_token), json!({})).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn member_lists_now_and_then() {
    let server = Server::start(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (carol, carol_token) = server.user("carol").await;
    let body = json!({ "preset": "private_chat", "invite": [bob, carol] });
    let (_, created) = server
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let invited_at = server.sync(&alice_token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    assert_eq!(
        server.post(&join, Some(&bob_token), json!({})).await.0,
        StatusCode::OK
    );
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    assert_eq!(
        server.post(&leave, Some(&carol_token), json!({})).await.0,
        StatusCode::OK
    );

    let path = format!("/_matrix/client/v3/rooms/{room}/members");
    let (status, all) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(status, StatusCode::OK);
    let expected = |entries: &[(&String, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = entries
            .iter()
            .map(|(u, m)| (u.to_string(), m.to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        members_of(&all),
        expected(&[(&alice, "join"), (&bob, "join"), (&carol, "leave")])
    );
    let (_, joined) = server
        .get(&format!("{path}?membership=join"), Some(&bob_token))
        .await;
    assert_eq!(
        members_of(&joined),
        expected(&[(&alice, "join"), (&bob, "join")])
    );
    let (_, not_left) = server
        .get(&format!("{path}?not_membership=join"), Some(&bob_token))
        .await;
    assert_eq!(members_of(&not_left), expected(&[(&carol, "leave")]));
    // As of the token before anyone answered, both were invited.
    let (_, then) = server
        .get(&format!("{path}?at={invited_at}"), Some(&bob_token))
        .await;
    assert_eq!(
        members_of(&then),
        expected(&[(&alice, "join"), (&bob, "invite"), (&carol, "invite")])
    );

    let path = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    let (status, listed) = server.get(&path, Some(&alice_token)).await;
    assert_eq!(status, StatusCode::OK);
    let joined = listed["joined"].as_object().unwrap();
    assert_eq!(joined.len(), 2);
    assert_eq!(joined[&bob]["display_name"], "bob");

    // A former member reads the members as of their leave (not who came after), as
    // Synapse lets them; someone never in the room reads nothing.
    let result = server.get(&path, Some(&carol_token)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (dave, dave_token) = server.user("dave").await;
    let members = format!("/_matrix/client/v3/rooms/{room}/members");
    let result = server.get(&members, Some(&dave_token)).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
    let body = json!({ "user_id": dave });
    assert_eq!(
        server.post(&invite, Some(&alice_token), body).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.post(&join, Some(&dave_token), json!({})).await.0,
        StatusCode::OK
    );
    let (status, as_left) = server.get(&members, Some(&carol_token)).await;
    assert_eq!(status, StatusCode::OK, "{as_left}");
    assert_eq!(
        members_of(&as_left),
        expected(&[(&alice, "join"), (&bob, "join"), (&carol, "leave")])
    );
    let result = server
        .get(&format!("{members}?at=yesterday"), Some(&bob_token))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

#[tokio::test]
async fn aliases_name_rooms_and_can_be_joined_by() {
    let server = Server::start(&[]);
    let (_, alice_token) = server.user("alice").await;
    let (_, bob_token) = server.user("bob").await;
    let body = json!({ "preset": "public_chat" });
    let (_, created) = server
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let alias = "%23lobby:kith.test";
    let path = format!("/_matrix/client/v3/directory/room/{alias}");
    let body = json!({ "room_id": room });

    // Only members make aliases, only of this server, each once.
    let result = server.put(&path, Some(&bob_token), body.clone()).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server.put(&path, Some(&alice_token), body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let result = server.put(&path, Some(&alice_token), body.clone()).await;
    assert_error(&result, StatusCode::CONFLICT, "M_UNKNOWN");
    let elsewhere = "/_matrix/client/v3/directory/room/%23lobby:elsewhere.test";
    let result = server.put(elsewhere, Some(&alice_token), body).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let (status, resolved) = server.get(&path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resolved["room_id"], room.as_str());
    assert_eq!(resolved["servers"], json!(["kith.test"]));
    // matrix-nio joins with no body at all; that is `{}` here (elsewhere it stays an error).
    let join = format!("/_matrix/client/v3/join/{alias}");
    let (status, joined) = server
        .raw(Method::POST, &join, Some(&bob_token), Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["room_id"], room.as_str());
    let (_, rooms) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&bob_token))
        .await;
    assert_eq!(rooms["joined_rooms"], json!([room]));

    // Only the creator deletes it; then it is gone.
    let result = server
        .request(Method::DELETE, &path, Some(&bob_token), None)
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .request(Method::DELETE, &path, Some(&alice_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &server.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let result = server.post(&join, Some(&bob_token), json!({})).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let send = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/empty");
    let result = server
        .raw(Method::PUT, &send, Some(&bob_token), Vec::new())
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
}
