//! Policy `request` (the default): a direct-chat invite to someone who is not a friend is a
//! friend request, and what happens to the invite answers it; a request made through the
//! contacts API is such an invite. Everything is checked through both APIs: the rooms
//! (sync, members, messages) and the contacts API with its live `org.kith.contacts`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{POLICY, Server, assert_error};

pub const API: &str = "/_matrix/client/unstable/org.kith.contacts/v1";

/// The server as a newcomer runs it: policy `request`.
fn server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![(POLICY, "request")];
    env.extend_from_slice(extra);
    Server::start(&env)
}

pub async fn requests(server: &Server, token: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("{API}/requests"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["requests"].as_array().cloned().unwrap_or_default()
}

pub async fn friends(server: &Server, token: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("{API}/friends"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["friends"].as_array().cloned().unwrap_or_default()
}

/// The live `org.kith.contacts` account data, as a fresh sync delivers it.
async fn live_view(server: &Server, token: &str) -> Value {
    let sync = server.sync(token, None, 0).await;
    let events = sync["account_data"]["events"].as_array().cloned();
    let view = events.unwrap_or_default().into_iter().rev();
    let mut view = view.filter(|e| e["type"] == "org.kith.contacts");
    view.next()
        .map(|e| e["content"].clone())
        .unwrap_or_default()
}

async fn direct_chat(server: &Server, token: &str, invitee: &str) -> String {
    let body = json!({ "is_direct": true, "invite": [invitee], "preset": "trusted_private_chat" });
    server.create_room(token, body).await
}

async fn room_call(server: &Server, token: &str, room: &str, what: &str, body: Value) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{room}/{what}");
    let (status, answer) = server.post(&path, Some(token), body).await;
    assert_eq!(status, StatusCode::OK, "{what}: {answer}");
    answer
}

async fn membership(server: &Server, token: &str, room: &str, user: &str) -> Option<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}");
    let (status, content) = server.get(&path, Some(token)).await;
    (status == StatusCode::OK).then(|| content["membership"].as_str().unwrap().to_owned())
}

async fn assert_membership(server: &Server, token: &str, room: &str, user: &str, expected: &str) {
    let found = membership(server, token, room, user).await;
    assert_eq!(found.as_deref(), Some(expected), "{user} in {room}");
}

async fn send(server: &Server, token: &str, room: &str, body: &str) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/send/m.room.message/{}",
        crate::common::rand_suffix()
    );
    let content = json!({ "msgtype": "m.text", "body": body });
    server.put(&path, Some(token), content).await
}

/// What a user sees of a request: one, from or to `other`, about `room`.
fn the_request<'a>(listed: &'a [Value], other: &str, room: &str) -> &'a Value {
    let found = listed.iter().find(|r| r["user_id"] == other);
    let found = found.unwrap_or_else(|| panic!("no request with {other} in {listed:?}"));
    assert_eq!(found["dm_room_id"], room, "{found}");
    found
}

#[tokio::test]
async fn a_direct_invite_is_a_friend_request_that_joining_accepts() {
    let server = server(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (_, capabilities) = server
        .get("/_matrix/client/v3/capabilities", Some(&alice_token))
        .await;
    let contacts = &capabilities["capabilities"]["org.kith.contacts"];
    assert_eq!(
        contacts["dm_requires_friendship"], "request",
        "{capabilities}"
    );

    let room = direct_chat(&server, &alice_token, &bob).await;
    // Delivered as an ordinary invite, and a request on both sides, live too.
    let sync = server.sync(&bob_token, None, 0).await;
    assert!(sync["rooms"]["invite"][&room].is_object(), "{sync}");
    let incoming = requests(&server, &bob_token).await;
    let request = the_request(&incoming, &alice, &room);
    assert_eq!(request["dir"], "incoming");
    let id = request["request_id"].as_str().unwrap().to_owned();
    let outgoing = requests(&server, &alice_token).await;
    assert_eq!(the_request(&outgoing, &bob, &room)["request_id"], id);
    let view = live_view(&server, &bob_token).await;
    assert_eq!(view["incoming"][0]["dm_room_id"], room, "{view}");

    // A message request: alice writes while bob has not answered.
    let (status, sent) = send(&server, &alice_token, &room, "hello stranger").await;
    assert_eq!(status, StatusCode::OK, "{sent}");

    room_call(&server, &bob_token, &room, "join", json!({})).await;
    for (token, other) in [(&alice_token, &bob), (&bob_token, &alice)] {
        let friends = friends(&server, token).await;
        assert_eq!(friends.len(), 1, "{friends:?}");
        assert_eq!(friends[0]["user_id"], *other);
        assert_eq!(friends[0]["dm_room_id"], room);
        assert!(requests(&server, token).await.is_empty());
        let view = live_view(&server, token).await;
        assert_eq!(view["friends"][0]["dm_room_id"], room, "{view}");
        assert_eq!(view["incoming"], json!([]));
        assert_eq!(view["outgoing"], json!([]));
    }
    // Bob reads what alice wrote before he joined, and they chat.
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    let (_, history) = server.get(&path, Some(&bob_token)).await;
    assert!(history.to_string().contains("hello stranger"), "{history}");
    let (status, _) = send(&server, &bob_token, &room, "hi alice").await;
    assert_eq!(status, StatusCode::OK);

    // An invite between friends is just an invite.
    let again = direct_chat(&server, &bob_token, &alice).await;
    assert!(requests(&server, &alice_token).await.is_empty());
    room_call(&server, &alice_token, &again, "join", json!({})).await;

    // Unfriending closes their direct chat until they are friends again.
    let path = format!("{API}/friends/{alice}");
    let (status, _) = server
        .request(reqwest::Method::DELETE, &path, Some(&bob_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&alice_token, &bob_token] {
        let refused = send(&server, token, &room, "still there?").await;
        assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // A new request while both are still in the room: a request and a notice in it,
    // which bob answers through the API.
    let body = json!({ "user_id": bob, "message": "friends again?" });
    let (status, asked) = server
        .post(&format!("{API}/requests"), Some(&alice_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    assert_eq!(asked["state"], "pending");
    let incoming = requests(&server, &bob_token).await;
    let request = the_request(&incoming, &alice, &room);
    assert_eq!(request["message"], "friends again?");
    let (_, history) = server.get(&path_messages(&room), Some(&bob_token)).await;
    let notice = history["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"]["msgtype"] == "m.notice")
        .unwrap_or_else(|| panic!("no notice in {history}"));
    assert_eq!(
        notice["content"]["org.kith.friend_request"]["request_id"],
        asked["request_id"]
    );
    let accept = format!(
        "{API}/requests/{}/accept",
        asked["request_id"].as_str().unwrap()
    );
    let (status, _) = server.post(&accept, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&server, &bob_token, &room, "welcome back").await;
    assert_eq!(status, StatusCode::OK);
}

fn path_messages(room: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50")
}

#[tokio::test]
async fn rejecting_declines_rescinding_or_leaving_cancels_and_big_rooms_are_not_requests() {
    let server = server(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (carol, carol_token) = server.user("carol").await;
    let (dave, dave_token) = server.user("dave").await;

    // Rejecting the invite declines.
    let room = direct_chat(&server, &alice_token, &bob).await;
    assert_eq!(requests(&server, &bob_token).await.len(), 1);
    room_call(&server, &bob_token, &room, "leave", json!({})).await;
    assert!(requests(&server, &bob_token).await.is_empty());
    assert!(requests(&server, &alice_token).await.is_empty());
    assert!(friends(&server, &alice_token).await.is_empty());

    // An invite into a room made alone (then of two) is a request too, its reason the
    // message; rescinding it (a kick of the invite) cancels.
    let room = server
        .create_room(&alice_token, json!({ "preset": "private_chat" }))
        .await;
    let body = json!({ "user_id": carol, "reason": "we met at the conference" });
    room_call(&server, &alice_token, &room, "invite", body).await;
    let incoming = requests(&server, &carol_token).await;
    assert_eq!(
        the_request(&incoming, &alice, &room)["message"],
        "we met at the conference"
    );
    room_call(
        &server,
        &alice_token,
        &room,
        "kick",
        json!({ "user_id": carol }),
    )
    .await;
    assert!(requests(&server, &carol_token).await.is_empty());
    assert!(requests(&server, &alice_token).await.is_empty());
    let sync = server.sync(&carol_token, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");

    // The inviter leaving cancels.
    let room = direct_chat(&server, &alice_token, &dave).await;
    assert_eq!(requests(&server, &dave_token).await.len(), 1);
    room_call(&server, &alice_token, &room, "leave", json!({})).await;
    assert!(requests(&server, &dave_token).await.is_empty());
    assert!(requests(&server, &alice_token).await.is_empty());

    // A room of three is never a request: not when made, not when one more is invited.
    let group = json!({ "invite": [bob, carol], "preset": "private_chat" });
    let room = server.create_room(&alice_token, group).await;
    assert!(requests(&server, &bob_token).await.is_empty());
    room_call(
        &server,
        &alice_token,
        &room,
        "invite",
        json!({ "user_id": dave }),
    )
    .await;
    assert!(requests(&server, &dave_token).await.is_empty());
    room_call(&server, &bob_token, &room, "join", json!({})).await;
    assert!(friends(&server, &bob_token).await.is_empty());
    assert_membership(&server, &bob_token, &room, &bob, "join").await;
}

#[tokio::test]
async fn ignored_inviters_reach_no_one_and_requests_are_rate_limited() {
    let server = server(&[("KITH_CONTACTS__REQUEST_BURST", "3")]);
    let (alice, alice_token) = server.user("alice").await;
    let (_, bob_token) = server.user("bob").await;
    let (erin, erin_token) = server.user("erin").await;
    let ignore = json!({ "ignored_users": { alice.clone(): {} } });
    let path = format!("/_matrix/client/v3/user/{erin}/account_data/m.ignored_user_list");
    let (status, _) = server.put(&path, Some(&erin_token), ignore).await;
    assert_eq!(status, StatusCode::OK);

    // Erin sees neither the invite nor a request; alice's request stands, for her alone.
    let room = direct_chat(&server, &alice_token, &erin).await;
    let sync = server.sync(&erin_token, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");
    assert!(requests(&server, &erin_token).await.is_empty());
    assert_eq!(requests(&server, &alice_token).await.len(), 1);

    // Two more requests fit the burst of three; the fourth is refused and makes nothing.
    let mut others = Vec::new();
    for name in ["f1", "f2", "f3"] {
        others.push(server.user(name).await.0);
    }
    direct_chat(&server, &alice_token, &others[0]).await;
    direct_chat(&server, &alice_token, &others[1]).await;
    let (_, before) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&alice_token))
        .await;
    let body = json!({ "is_direct": true, "invite": [others[2]] });
    let refused = server
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), body)
        .await;
    assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let asked = json!({ "user_id": others[2] });
    let refused = server
        .post(&format!("{API}/requests"), Some(&alice_token), asked)
        .await;
    assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let (_, after) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&alice_token))
        .await;
    assert_eq!(before, after, "a refused request made a room");
    assert_eq!(requests(&server, &alice_token).await.len(), 3);
    // Inviting a friend, or someone into a bigger room, is not a request: still allowed.
    let group = json!({ "invite": [others[2], erin], "preset": "private_chat" });
    server.create_room(&bob_token, group).await;
}

#[tokio::test]
async fn a_request_through_the_api_is_a_direct_chat_invite() {
    let server = server(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (carol, carol_token) = server.user("carol").await;
    let (dave, dave_token) = server.user("dave").await;

    let body = json!({ "user_id": bob, "message": "hi bob" });
    let (status, asked) = server
        .post(&format!("{API}/requests"), Some(&alice_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    assert_eq!(asked["state"], "pending");
    let outgoing = requests(&server, &alice_token).await;
    let room = outgoing[0]["dm_room_id"].as_str().unwrap().to_owned();
    assert_eq!(outgoing[0]["request_id"], asked["request_id"]);
    // The room Element would make: private, encrypted, an is_direct invite with the
    // message as its reason, and in alice's m.direct.
    let sync = server.sync(&bob_token, None, 0).await;
    let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    let own = invite
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob)
        .unwrap_or_else(|| panic!("no invite event in {sync}"));
    assert_eq!(own["content"]["is_direct"], true, "{own}");
    assert_eq!(own["content"]["reason"], "hi bob", "{own}");
    let path = format!("/_matrix/client/v3/user/{alice}/account_data/m.direct");
    let (_, direct) = server.get(&path, Some(&alice_token)).await;
    assert_eq!(direct[&bob], json!([room]), "{direct}");
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/");
    let (status, encryption) = server.get(&path, Some(&alice_token)).await;
    assert_eq!(status, StatusCode::OK, "{encryption}");

    // Accepting through the API joins the room.
    let accept = format!(
        "{API}/requests/{}/accept",
        asked["request_id"].as_str().unwrap()
    );
    let (status, _) = server.post(&accept, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_membership(&server, &bob_token, &room, &bob, "join").await;
    assert_eq!(friends(&server, &alice_token).await[0]["dm_room_id"], room);

    // Declining through the API rejects the invite; cancelling rescinds it.
    let body = json!({ "user_id": carol });
    let (_, asked) = server
        .post(&format!("{API}/requests"), Some(&alice_token), body)
        .await;
    let id = asked["request_id"].as_str().unwrap().to_owned();
    let room = requests(&server, &carol_token).await[0]["dm_room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .post(
            &format!("{API}/requests/{id}/decline"),
            Some(&carol_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_membership(&server, &alice_token, &room, &carol, "leave").await;
    assert!(requests(&server, &alice_token).await.is_empty());
    // Asking again re-invites into the same room.
    let body = json!({ "user_id": carol });
    let (_, again) = server
        .post(&format!("{API}/requests"), Some(&alice_token), body)
        .await;
    assert_eq!(requests(&server, &carol_token).await[0]["dm_room_id"], room);
    assert_membership(&server, &alice_token, &room, &carol, "invite").await;
    let id = again["request_id"].as_str().unwrap();
    let path = format!("{API}/requests/{id}");
    let (status, _) = server
        .request(reqwest::Method::DELETE, &path, Some(&alice_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_membership(&server, &alice_token, &room, &carol, "leave").await;
    assert!(requests(&server, &carol_token).await.is_empty());
    let sync = server.sync(&carol_token, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");

    // Someone who already asked is answered by asking back: their invite is joined.
    let (_, asked) = server
        .post(
            &format!("{API}/requests"),
            Some(&dave_token),
            json!({ "user_id": alice }),
        )
        .await;
    let (status, back) = server
        .post(
            &format!("{API}/requests"),
            Some(&alice_token),
            json!({ "user_id": dave }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["state"], "accepted");
    assert_eq!(back["request_id"], asked["request_id"]);
    let room = friends(&server, &dave_token).await[0]["dm_room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_membership(&server, &dave_token, &room, &alice, "join").await;
}

/// Polls `check` until it holds, for at most 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "not in time: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether `user` counts `other` among their friends, with their direct chat `room`.
async fn befriended(server: &Server, token: &str, other: &str, room: Option<&str>) -> bool {
    let friends = friends(server, token).await;
    friends
        .iter()
        .any(|f| f["user_id"] == other && room.is_none_or(|r| f["dm_room_id"] == r))
        && requests(server, token).await.is_empty()
}

#[tokio::test]
async fn users_on_two_kith_servers_befriend_decline_and_cancel_by_invite() {
    let policy = [(POLICY, "request")];
    let (a, _) = Server::federated(&policy);
    let (b, _) = Server::federated(&policy);
    let (alice, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;
    let (carol, carol_token) = b.user("carol").await;
    let (dave, dave_token) = b.user("dave").await;

    // The invite is the request on both servers, under one ID; joining on B accepts it
    // on both.
    let room = direct_chat(&a, &alice_token, &bob).await;
    let incoming = requests(&b, &bob_token).await;
    let id = the_request(&incoming, &alice, &room)["request_id"].clone();
    let outgoing = requests(&a, &alice_token).await;
    assert_eq!(the_request(&outgoing, &bob, &room)["request_id"], id);
    room_call(&b, &bob_token, &room, "join", json!({})).await;
    eventually("friends on B", || {
        befriended(&b, &bob_token, &alice, Some(&room))
    })
    .await;
    eventually("friends on A", || {
        befriended(&a, &alice_token, &bob, Some(&room))
    })
    .await;
    let (status, _) = send(&b, &bob_token, &room, "hello from B").await;
    assert_eq!(status, StatusCode::OK);

    // Rejecting on B declines on both.
    let room = direct_chat(&a, &alice_token, &carol).await;
    assert_eq!(requests(&b, &carol_token).await.len(), 1);
    room_call(&b, &carol_token, &room, "leave", json!({})).await;
    assert!(requests(&b, &carol_token).await.is_empty());
    eventually("declined on A", || async {
        requests(&a, &alice_token).await.is_empty()
    })
    .await;

    // Rescinding on A while B is down cancels on A at once, and on B once it is back.
    let room = direct_chat(&a, &alice_token, &dave).await;
    assert_eq!(requests(&b, &dave_token).await.len(), 1);
    let mut b = b;
    b.kill();
    room_call(&a, &alice_token, &room, "kick", json!({ "user_id": dave })).await;
    assert!(requests(&a, &alice_token).await.is_empty());
    let b = b.restart();
    eventually("cancelled on B", || async {
        requests(&b, &dave_token).await.is_empty()
    })
    .await;
    let sync = b.sync(&dave_token, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");
    assert!(friends(&b, &dave_token).await.is_empty());
}

/// Two users on two kith servers asking each other at the same moment end as friends on
/// both, with nothing pending, whatever crosses: requests through the API under `dm_only`,
/// direct-chat invites under `request`.
#[tokio::test]
async fn crossing_requests_across_two_kith_servers_make_one_friendship() {
    for policy in ["dm_only", "request"] {
        let env = [(POLICY, policy)];
        let (a, _) = Server::federated(&env);
        let (b, _) = Server::federated(&env);
        let mut pairs = Vec::new();
        for i in 0..4 {
            pairs.push((
                a.user(&format!("a{i}")).await,
                b.user(&format!("b{i}")).await,
            ));
        }
        let mut tasks = Vec::new();
        for ((a_user, a_token), (b_user, b_token)) in &pairs {
            for (server, token, target) in [(&a, a_token, b_user), (&b, b_token, a_user)] {
                let (http, base) = (server.http.clone(), server.base.clone());
                let (token, target) = (token.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    let response = http
                        .post(format!("{base}{API}/requests"))
                        .bearer_auth(token)
                        .json(&json!({ "user_id": target }))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    (status, response.json::<Value>().await.unwrap_or_default())
                }));
            }
        }
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{policy}: {body}");
        }
        for ((a_user, a_token), (b_user, b_token)) in &pairs {
            let what = format!("{policy}: {a_user} and {b_user} friends on A");
            eventually(&what, || befriended(&a, a_token, b_user, None)).await;
            let what = format!("{policy}: {a_user} and {b_user} friends on B");
            eventually(&what, || befriended(&b, b_token, a_user, None)).await;
        }
    }
}
