//! Spaces: `/hierarchy` walks a space's rooms and subspaces as its members may see them,
//! a restricted room lets in members of the space, and a space on another server is
//! walked through that server.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{SERVER_NAME, Server, assert_error};

async fn add_child(
    server: &Server,
    token: &str,
    (space, child): (&str, &str),
    via: &str,
    suggested: bool,
) {
    let path = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}");
    let content = json!({ "via": [via], "suggested": suggested });
    let (status, answer) = server.put(&path, Some(token), content).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

fn ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("no rooms in {page}"))
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_space_lists_what_its_members_may_see_and_lets_them_into_restricted_rooms() {
    let server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (_, carol_token) = server.user("carol").await;
    let space = json!({ "preset": "private_chat", "name": "Club", "creation_content": { "type": "m.space" }, "invite": [bob] });
    let space = server.create_room(&token, space).await;
    let general = server
        .create_room(
            &token,
            json!({ "preset": "public_chat", "name": "General" }),
        )
        .await;
    let restricted_rules = json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] });
    let members_only = json!({
        "preset": "private_chat", "name": "Members", "room_version": "10",
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": restricted_rules }],
    });
    let members_only = server.create_room(&token, members_only).await;
    let secret = server
        .create_room(
            &token,
            json!({ "preset": "private_chat", "name": "Secret" }),
        )
        .await;
    let sub = json!({ "preset": "public_chat", "name": "Subspace", "creation_content": { "type": "m.space" } });
    let sub = server.create_room(&token, sub).await;
    let deep = server
        .create_room(&token, json!({ "preset": "public_chat", "name": "Deep" }))
        .await;
    add_child(&server, &token, (&space, &general), SERVER_NAME, true).await;
    add_child(&server, &token, (&space, &members_only), SERVER_NAME, false).await;
    add_child(&server, &token, (&space, &secret), SERVER_NAME, false).await;
    add_child(&server, &token, (&space, &sub), SERVER_NAME, false).await;
    add_child(&server, &token, (&sub, &deep), SERVER_NAME, false).await;
    let join = |room: &str| format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, _) = server
        .post(&join(&space), Some(&bob_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let path = format!("/_matrix/client/v1/rooms/{space}/hierarchy");
    let (status, all) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        ids(&all),
        [
            space.clone(),
            general.clone(),
            members_only.clone(),
            sub.clone(),
            deep.clone()
        ]
    );
    let top = &all["rooms"][0];
    assert_eq!(top["room_type"], "m.space");
    assert_eq!(top["name"], "Club");
    assert_eq!(top["children_state"].as_array().unwrap().len(), 4, "{top}");
    assert_eq!(all["rooms"][1]["join_rule"], "public");
    assert_eq!(all["rooms"][2]["join_rule"], "restricted");
    let (_, suggested) = server
        .get(&format!("{path}?suggested_only=true"), Some(&bob_token))
        .await;
    assert_eq!(ids(&suggested), [space.clone(), general.clone()]);
    let (_, shallow) = server
        .get(&format!("{path}?max_depth=1"), Some(&bob_token))
        .await;
    assert_eq!(
        ids(&shallow),
        [
            space.clone(),
            general.clone(),
            members_only.clone(),
            sub.clone()
        ]
    );
    let (_, first) = server
        .get(&format!("{path}?limit=2"), Some(&bob_token))
        .await;
    assert_eq!(ids(&first), [space.clone(), general.clone()]);
    let next = first["next_batch"].as_str().expect("a next page");
    let (_, rest) = server
        .get(&format!("{path}?limit=2&from={next}"), Some(&bob_token))
        .await;
    assert_eq!(ids(&rest), [members_only.clone(), sub.clone()]);
    let outsider = server.get(&path, Some(&carol_token)).await;
    assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // The space's members may join its restricted room; others may not.
    let (status, joined) = server
        .post(&join(&members_only), Some(&bob_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let refused = server
        .post(&join(&members_only), Some(&carol_token), json!({}))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let refused = server
        .post(&join(&secret), Some(&bob_token), json!({}))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_space_on_another_server_is_walked_through_it() {
    let (a, a_name) = Server::federated(&[]);
    let (b, _) = Server::federated(&[]);
    let (_, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;
    let space = json!({ "preset": "public_chat", "name": "Open club", "creation_content": { "type": "m.space" } });
    let space = a.create_room(&alice_token, space).await;
    let general = a
        .create_room(
            &alice_token,
            json!({ "preset": "public_chat", "name": "General" }),
        )
        .await;
    add_child(&a, &alice_token, (&space, &general), &a_name, false).await;
    let join = format!("/_matrix/client/v3/join/{space}?server_name={a_name}");
    let (status, joined) = b.post(&join, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let path = format!("/_matrix/client/v1/rooms/{space}/hierarchy");
    let (status, all) = b.get(&path, Some(&bob_token)).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(ids(&all), [space.clone(), general.clone()]);
    assert_eq!(all["rooms"][1]["name"], "General", "{all}");

    // A restricted room on A lets in the space's member from B, vouched for by A.
    let rules = json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] });
    let members_only = json!({
        "preset": "private_chat", "room_version": "10",
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": rules }],
    });
    let members_only = a.create_room(&alice_token, members_only).await;
    let join = format!("/_matrix/client/v3/join/{members_only}?server_name={a_name}");
    let (status, joined) = b.post(&join, Some(&bob_token), json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{joined}\nlog A:\n{}\nlog B:\n{}",
        a.log(),
        b.log()
    );
    let member = format!("/_matrix/client/v3/rooms/{members_only}/state/m.room.member/{bob}");
    let (_, event) = a.get(&member, Some(&alice_token)).await;
    assert_eq!(event["membership"], "join", "{event}");
    assert!(
        event["join_authorised_via_users_server"].is_string(),
        "{event}"
    );
    let (_, carol_token) = b.user("carol").await;
    let refused = b.post(&join, Some(&carol_token), json!({})).await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{}", refused.1);
}

async fn knock_room(server: &Server, token: &str) -> String {
    let rules = json!({ "join_rule": "knock" });
    let body = json!({
        "preset": "private_chat", "name": "Knock first", "room_version": "10",
        "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": rules }],
    });
    server.create_room(token, body).await
}

fn knocked(sync: &Value, room: &str, user: &str) -> bool {
    let events = sync["rooms"]["knock"][room]["knock_state"]["events"].as_array();
    let events = events.cloned().unwrap_or_default();
    events.iter().any(|e| e["type"] == "m.room.join_rules")
        && events
            .iter()
            .any(|e| e["state_key"] == user && e["content"]["membership"] == "knock")
}

/// Knocking: a room that allows it takes the knock, its members see it and let the knocker
/// in with an invite, on one server and across two.
#[tokio::test]
async fn knocks_are_seen_and_answered_with_an_invite() {
    let (a, a_name) = Server::federated(&[]);
    let (b, _) = Server::federated(&[]);
    let (_, alice_token) = a.user("alice").await;
    let (bob, bob_token) = a.user("bob").await;
    let (dave, dave_token) = b.user("dave").await;
    let room = knock_room(&a, &alice_token).await;
    let plain = a
        .create_room(&alice_token, json!({ "preset": "private_chat" }))
        .await;

    let path = format!("/_matrix/client/v3/knock/{room}");
    let (status, answer) = a
        .post(&path, Some(&bob_token), json!({ "reason": "let me in" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["room_id"], room);
    let sync = a.sync(&bob_token, None, 0).await;
    assert!(knocked(&sync, &room, &bob), "{sync}");
    let member = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob}");
    let (_, knock) = a.get(&member, Some(&alice_token)).await;
    assert_eq!(knock["membership"], "knock");
    assert_eq!(knock["reason"], "let me in");
    let refused = a
        .post(
            &format!("/_matrix/client/v3/knock/{plain}"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
    let (status, _) = a
        .post(&invite, Some(&alice_token), json!({ "user_id": bob }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, _) = a.post(&join, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK);

    // From another server.
    let path = format!("/_matrix/client/v3/knock/{room}?server_name={a_name}");
    let (status, answer) = b.post(&path, Some(&dave_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sync = b.sync(&dave_token, None, 0).await;
    assert!(knocked(&sync, &room, &dave), "{sync}");
    let member = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{dave}");
    let (_, knock) = a.get(&member, Some(&alice_token)).await;
    assert_eq!(knock["membership"], "knock", "{knock}");
    // Withdrawn from B: A sees the knock end.
    let leave = format!("/_matrix/client/v3/rooms/{room}/leave");
    let (status, left) = b.post(&leave, Some(&dave_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{left}");
    let (_, ended) = a.get(&member, Some(&alice_token)).await;
    assert_eq!(ended["membership"], "leave", "{ended}");
    // Knocked again, and refused on A (a kick): B sees it end.
    let (status, answer) = b.post(&path, Some(&dave_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let kick = format!("/_matrix/client/v3/rooms/{room}/kick");
    let (status, _) = a
        .post(&kick, Some(&alice_token), json!({ "user_id": dave }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sync = b.sync(&dave_token, None, 0).await;
        if sync["rooms"]["knock"].get(&room).is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal did not reach B: {sync}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Knocked once more, and let in.
    let (status, answer) = b.post(&path, Some(&dave_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = a
        .post(&invite, Some(&alice_token), json!({ "user_id": dave }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let join = format!("/_matrix/client/v3/join/{room}?server_name={a_name}");
        let (status, joined) = b.post(&join, Some(&dave_token), json!({})).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{joined}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
