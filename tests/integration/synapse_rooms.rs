//! kith and Synapse with rooms people find and ask into: each other's room directory,
//! spaces with restricted rooms, and knocks, both ways. Skipped, and saying so, without
//! `KITH_SYNAPSE_PYTHON`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::Server;
use crate::synapse::{Side, Synapse};

/// Each server's public room directory, asked by the other's user over federation.
#[tokio::test]
async fn kith_and_synapse_users_read_each_others_room_directory() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (_, alice_token) = kith.user("alice").await;
    let (_, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let mut rooms = Vec::new();
    for (side, token, name) in [
        (&k, &alice_token, "kithroom"),
        (&s, &bob_token, "synapseroom"),
    ] {
        let body = json!({ "visibility": "public", "preset": "public_chat", "name": name });
        let path = "/_matrix/client/v3/createRoom";
        let (status, created) = side.request(Method::POST, path, token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", side.log());
        rooms.push(created["room_id"].as_str().unwrap().to_owned());
    }
    let asks = [
        (&s, &bob_token, kith_name.clone(), &rooms[0], "kithroom"),
        (
            &k,
            &alice_token,
            synapse.name.clone(),
            &rooms[1],
            "synapseroom",
        ),
    ];
    for (side, token, server, room, name) in asks {
        let path = format!("/_matrix/client/v3/publicRooms?server={server}");
        let body = json!({ "limit": 10, "filter": { "generic_search_term": name } });
        let (status, page) = side.request(Method::POST, &path, token, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{page}\nlog:\n{}", side.log());
        let listed = page["chunk"].as_array().unwrap();
        assert!(
            listed
                .iter()
                .any(|r| r["room_id"] == *room && r["name"] == name),
            "{name} room not in {page}"
        );
    }
}

/// Spaces across kith and Synapse, both ways: each walks the other's space
/// (`/hierarchy` through federation) and joins its restricted room as a member of the
/// space, vouched for by the room's server.
#[tokio::test]
async fn kith_and_synapse_users_walk_each_others_spaces_and_join_restricted_rooms() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (_, alice_token) = kith.user("alice").await;
    let (_, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let sides = [
        (&k, &alice_token, kith_name.clone(), &s, &bob_token),
        (&s, &bob_token, synapse.name.clone(), &k, &alice_token),
    ];
    for (host, host_token, host_name, guest, guest_token) in sides {
        let create = |body: Value| {
            let path = "/_matrix/client/v3/createRoom";
            async move {
                let (status, created) = host
                    .request(Method::POST, path, host_token, Some(body))
                    .await;
                assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", host.log());
                created["room_id"].as_str().unwrap().to_owned()
            }
        };
        let space = create(json!({ "preset": "public_chat", "name": "Space", "creation_content": { "type": "m.space" } })).await;
        let rules = json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] });
        let room = create(json!({
            "preset": "private_chat", "name": "Members", "room_version": "10",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": rules }],
        }))
        .await;
        let path = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{room}");
        let (status, added) = host
            .request(
                Method::PUT,
                &path,
                host_token,
                Some(json!({ "via": [host_name] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{added}");
        let join = |room: &str| format!("/_matrix/client/v3/join/{room}?server_name={host_name}");
        let (status, joined) = guest
            .request(Method::POST, &join(&space), guest_token, Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::OK, "{joined}\nlog:\n{}", guest.log());
        let path = format!("/_matrix/client/v1/rooms/{space}/hierarchy");
        let (status, listed) = guest.request(Method::GET, &path, guest_token, None).await;
        assert_eq!(status, StatusCode::OK, "{listed}\nlog:\n{}", guest.log());
        let names: Vec<&Value> = listed["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["room_id"])
            .collect();
        assert!(
            names.contains(&&json!(room)),
            "{listed}\nhost log:\n{}\nguest log:\n{}",
            host.log(),
            guest.log()
        );
        let (status, joined) = guest
            .request(Method::POST, &join(&room), guest_token, Some(json!({})))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{joined}\nhost log:\n{}\nguest log:\n{}",
            host.log(),
            guest.log()
        );
    }
}

/// Knocking across kith and Synapse, both ways: the knock reaches the room's server, its
/// member sees it and invites, and the knocker joins.
#[tokio::test]
async fn kith_and_synapse_users_knock_on_each_others_rooms() {
    let (kith, kith_name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (alice, alice_token) = kith.user("alice").await;
    let (bob, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let sides = [
        (&k, &alice_token, kith_name.clone(), &s, &bob_token, &bob),
        (
            &s,
            &bob_token,
            synapse.name.clone(),
            &k,
            &alice_token,
            &alice,
        ),
    ];
    for (host, host_token, host_name, guest, guest_token, guest_user) in sides {
        let rules = json!({ "join_rule": "knock" });
        let body = json!({
            "preset": "private_chat", "room_version": "10",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": rules }],
        });
        let path = "/_matrix/client/v3/createRoom";
        let (status, created) = host
            .request(Method::POST, path, host_token, Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        let room = created["room_id"].as_str().unwrap().to_owned();
        let knock = format!("/_matrix/client/v3/knock/{room}?server_name={host_name}");
        let (status, knocked) = guest
            .request(
                Method::POST,
                &knock,
                guest_token,
                Some(json!({ "reason": "hi" })),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{knocked}\nguest log:\n{}\nhost log:\n{}",
            guest.log(),
            host.log()
        );
        host.sync_until(host_token, "the knock", |sync| {
            let events = sync["rooms"]["join"][&room]["timeline"]["events"].as_array();
            events.is_some_and(|events| {
                events
                    .iter()
                    .any(|e| e["state_key"] == *guest_user && e["content"]["membership"] == "knock")
            })
        })
        .await;
        guest
            .sync_until(guest_token, "the knock in the knocker's sync", |sync| {
                sync["rooms"]["knock"][&room].is_object()
            })
            .await;
        let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
        let (status, invited) = host
            .request(
                Method::POST,
                &invite,
                host_token,
                Some(json!({ "user_id": guest_user })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{invited}");
        guest
            .sync_until(guest_token, "the invite", |sync| {
                sync["rooms"]["invite"][&room].is_object()
            })
            .await;
        guest.join(guest_token, &room).await;
    }
}
