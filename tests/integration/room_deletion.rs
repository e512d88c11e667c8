//! A server admin deletes a room (Synapse's `DELETE /_synapse/admin/v2/rooms/{roomId}`):
//! its users are moved out, into a notice room, it is blocked and purged. Users see the
//! leave once, the room is gone from every API and every table, other rooms are untouched,
//! and the answers have Synapse's shapes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, SERVER_NAME, Server, assert_error, urlencode};
use crate::relations::send;
use crate::sliding_sync::{pos, room_list, rooms, slide};
use crate::synapse::Synapse;
use crate::synapse_admin::{Both, compare, synapse_admin};

/// Polls a deletion's status with `get` until it is over (bounded); its last status.
async fn finished(get: impl AsyncFn(&str) -> (StatusCode, Value), delete_id: &str) -> Value {
    let path = format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}");
    for _ in 0..300 {
        let (status, body) = get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] == "complete" || body["status"] == "failed" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the deletion {delete_id} did not end in 30 s");
}

/// The rooms a `/search` for `term` finds `token`'s user's messages in.
async fn found_in(server: &Server, token: &str, term: &str) -> Vec<String> {
    let body = json!({ "search_categories": { "room_events": { "search_term": term } } });
    let (status, found) = server
        .post("/_matrix/client/v3/search", Some(token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let results = found["search_categories"]["room_events"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    results
        .iter()
        .map(|r| r["result"]["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_deleted_room_is_gone_everywhere_and_its_users_are_moved_out() {
    let kith = Server::start(&[]);
    let (ok, output) = kith.admin(&["create-user", "boss", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{output}");
    let (_, login) = kith.login("boss", PASSWORD, json!({})).await;
    let boss = login["access_token"].as_str().unwrap().to_owned();
    let boss_id = format!("@boss:{SERVER_NAME}");
    let (alice_id, alice) = kith.user("alice").await;
    let (bob_id, bob) = kith.user("bob").await;

    // The room to delete, with everything a room gathers: an alias, a directory entry,
    // messages with words to search, a reaction, a thread, a tag, a receipt, typing.
    let body = json!({ "preset": "public_chat", "visibility": "public", "room_alias_name": "doomed", "name": "Doomed" });
    let room = kith.create_room(&alice, body).await;
    let (status, joined) = kith
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let root = kith
        .say(&alice, &room, "pumpernickel in the doomed room")
        .await;
    let reaction =
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } });
    send(&kith, &bob, &room, "m.reaction", reaction).await;
    let reply = json!({ "msgtype": "m.text", "body": "a reply",
        "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    let last = send(&kith, &bob, &room, "m.room.message", reply).await;
    let tag = format!("/_matrix/client/v3/user/{bob_id}/rooms/{room}/tags/u.work");
    let (status, _) = kith.put(&tag, Some(&bob), json!({ "order": 0.5 })).await;
    assert_eq!(status, StatusCode::OK);
    let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}");
    let (status, _) = kith.post(&receipt, Some(&alice), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let typing = format!("/_matrix/client/v3/rooms/{room}/typing/{alice_id}");
    let typing_body = json!({ "typing": true, "timeout": 30000 });
    let (status, _) = kith.put(&typing, Some(&alice), typing_body).await;
    assert_eq!(status, StatusCode::OK);
    // Relations indexed by what they name, not by their room: one in the room to an
    // event no one has, one in a room that stays to an event of this one.
    let nowhere = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$nowhere", "key": "x" } });
    send(&kith, &bob, &room, "m.reaction", nowhere).await;
    let kept = kith.shared_room(&alice, (&bob_id, &bob)).await;
    kith.say(&alice, &kept, "pumpernickel in the kept room")
        .await;
    let across =
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "y" } });
    send(&kith, &bob, &kept, "m.reaction", across).await;
    assert_eq!(found_in(&kith, &bob, "pumpernickel").await.len(), 2);

    // Bob's devices last synced before the deletion.
    let since = kith.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone = slide(&kith, &bob, None, &room_list(json!([[0, 9]]), 1)).await;
    assert!(rooms(&phone).contains(&room), "{phone}");

    // Refusals change nothing: a non-admin, a room ID that is none, wrong types, a notice
    // room's maker from elsewhere.
    let path = format!("/_synapse/admin/v2/rooms/{room}");
    let refused = kith
        .request(Method::DELETE, &path, Some(&alice), Some(json!({})))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    for (body, errcode) in [
        (json!({ "block": "yes" }), "M_BAD_JSON"),
        (json!({ "purge": 1 }), "M_BAD_JSON"),
        (json!({ "room_name": 7 }), "M_BAD_JSON"),
        (
            json!({ "new_room_user_id": "@boss:elsewhere.example" }),
            "M_UNKNOWN",
        ),
        (
            json!({ "new_room_user_id": format!("@nobody:{SERVER_NAME}") }),
            "M_INVALID_PARAM",
        ),
    ] {
        let refused = kith
            .request(Method::DELETE, &path, Some(&boss), Some(body.clone()))
            .await;
        assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{body}: {refused:?}");
        assert_eq!(refused.1["errcode"], errcode, "{body}: {refused:?}");
    }
    let refused = kith
        .request(
            Method::DELETE,
            "/_synapse/admin/v2/rooms/not-a-room",
            Some(&boss),
            Some(json!({})),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let (status, _) = kith
        .get(&format!("/_synapse/admin/v1/rooms/{room}"), Some(&boss))
        .await;
    assert_eq!(status, StatusCode::OK, "the room is still there");

    // The deletion, moving everyone to a notice room.
    let body = json!({ "block": true, "new_room_user_id": boss_id, "room_name": "Gone",
        "message": "That room broke the rules." });
    let (status, started) = kith
        .request(Method::DELETE, &path, Some(&boss), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let delete_id = started["delete_id"].as_str().unwrap();
    let as_boss = async |path: &str| kith.get(path, Some(&boss)).await;
    let done = finished(as_boss, delete_id).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["room_id"], room.as_str());
    let shutdown = &done["shutdown_room"];
    let mut kicked: Vec<&str> = (shutdown["kicked_users"].as_array().unwrap().iter())
        .map(|u| u.as_str().unwrap())
        .collect();
    kicked.sort();
    assert_eq!(kicked, [alice_id.as_str(), bob_id.as_str()], "{done}");
    assert_eq!(shutdown["failed_to_kick_users"], json!([]));
    let alias = format!("#doomed:{SERVER_NAME}");
    assert_eq!(shutdown["local_aliases"], json!([alias]));
    let notice_room = shutdown["new_room_id"].as_str().unwrap().to_owned();
    let (status, by_room) = kith
        .get(
            &format!("/_synapse/admin/v2/rooms/{room}/delete_status"),
            Some(&boss),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_room["results"][0]["delete_id"], delete_id);

    // Bob's sync that missed it gets the leave once, and is in the notice room.
    let after = kith.sync(&bob, Some(&since), 0).await;
    let left = &after["rooms"]["leave"][&room]["timeline"]["events"];
    let own_leave = (left.as_array().into_iter().flatten()).any(|e| {
        e["type"] == "m.room.member"
            && e["state_key"] == bob_id.as_str()
            && e["content"]["membership"] == "leave"
    });
    assert!(own_leave, "{after}");
    let notice = &after["rooms"]["join"][&notice_room]["timeline"]["events"];
    let told = (notice.as_array().into_iter().flatten())
        .any(|e| e["content"]["body"] == "That room broke the rules.");
    assert!(told, "{after}");
    let next = after["next_batch"].as_str().unwrap();
    let later = kith.sync(&bob, Some(next), 0).await;
    assert!(later["rooms"]["leave"].get(&room).is_none(), "{later}");
    let initial = kith.sync(&bob, None, 0).await;
    assert!(initial["rooms"]["join"].get(&room).is_none(), "{initial}");
    // So does his sliding-sync connection.
    let slid = slide(
        &kith,
        &bob,
        Some(pos(&phone)),
        &room_list(json!([[0, 9]]), 1),
    )
    .await;
    let left = (slid["rooms"][&room]["timeline"]
        .as_array()
        .into_iter()
        .flatten())
    .any(|e| e["state_key"] == bob_id.as_str() && e["content"]["membership"] == "leave");
    assert!(left, "{slid}");
    let slid = slide(
        &kith,
        &bob,
        Some(pos(&slid)),
        &room_list(json!([[0, 9]]), 1),
    )
    .await;
    assert!(!rooms(&slid).contains(&room), "{slid}");

    // Gone from every API: nothing to read, find or join (it is blocked).
    let (_, joined_rooms) = kith
        .get("/_matrix/client/v3/joined_rooms", Some(&bob))
        .await;
    let joined_rooms = joined_rooms["joined_rooms"].as_array().unwrap().clone();
    assert!(!joined_rooms.contains(&json!(room)), "{joined_rooms:?}");
    assert!(
        joined_rooms.contains(&json!(notice_room)),
        "{joined_rooms:?}"
    );
    for read in [
        "messages?dir=b",
        "state",
        "members",
        "event/{root}",
        "context/{root}",
    ] {
        let read = read.replace("{root}", &root);
        let answer = kith
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/{read}"),
                Some(&bob),
            )
            .await;
        assert!(
            matches!(answer.0, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
            "{read}: {answer:?}"
        );
        assert!(answer.1["errcode"].is_string(), "{read}: {answer:?}");
    }
    assert_eq!(
        found_in(&kith, &bob, "pumpernickel").await,
        vec![kept.clone()]
    );
    let (_, directory) = kith.get("/_matrix/client/v3/publicRooms", None).await;
    assert!(!directory.to_string().contains(&room), "{directory}");
    let (status, resolved) = kith
        .get(
            &format!("/_matrix/client/v3/directory/room/{}", urlencode(&alias)),
            Some(&bob),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the alias moved: {resolved}");
    assert_eq!(resolved["room_id"], notice_room.as_str());
    let (status, _) = kith
        .get(&format!("/_synapse/admin/v1/rooms/{room}"), Some(&boss))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = kith.get("/_synapse/admin/v1/rooms", Some(&boss)).await;
    assert!(!listed.to_string().contains(&room), "{listed}");
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    let (_, carol) = kith.user("carol").await;
    for token in [&bob, &carol] {
        let refused = kith.post(&join, Some(token), json!({})).await;
        assert_eq!(refused.0, StatusCode::FORBIDDEN, "{refused:?}");
    }
    // The other room is untouched.
    let (status, history) = kith
        .get(
            &format!("/_matrix/client/v3/rooms/{kept}/messages?dir=b"),
            Some(&bob),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        history
            .to_string()
            .contains("pumpernickel in the kept room")
    );

    // Deleting it again: only the block is left to do. Its status lists both.
    let (status, again) = kith
        .request(Method::DELETE, &path, Some(&boss), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let again = finished(as_boss, again["delete_id"].as_str().unwrap()).await;
    assert_eq!(again["status"], "complete", "{again}");
    let (_, by_room) = kith
        .get(
            &format!("/_synapse/admin/v2/rooms/{room}/delete_status"),
            Some(&boss),
        )
        .await;
    assert_eq!(by_room["results"].as_array().unwrap().len(), 2, "{by_room}");
    for unknown in [
        "/_synapse/admin/v2/rooms/delete_status/nothing".to_owned(),
        format!("/_synapse/admin/v2/rooms/!never:{SERVER_NAME}/delete_status"),
    ] {
        let answer = kith.get(&unknown, Some(&boss)).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    assert!(kith.assert_events_verify() > 0);

    // Nothing of the room is left in any table but what must stay: the users' last
    // memberships (forgotten, their events outliers), and the bookkeeping below.
    let mut kith = kith;
    kith.terminate();
    let storage = kith_storage::Storage::open(&kith.data.join("db")).unwrap();
    let needle = room.as_bytes();
    let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let mut left_behind = Vec::new();
    for table in kith_storage::catalog::ALL {
        storage
            .visit_raw(table, |key, value| {
                if holds(key) || holds(value) {
                    left_behind.push((table.name, String::from_utf8_lossy(value).into_owned()));
                }
            })
            .unwrap();
    }
    let mut memberships = 0;
    for (table, value) in &left_behind {
        let value: Value = serde_json::from_str(value).unwrap_or(Value::Null);
        match *table {
            "userid_roomid_membership" => {
                assert_eq!(value["forgotten"], true, "{value}");
                assert_eq!(value["membership"], "leave", "{value}");
                memberships += 1;
            }
            "eventid_pdu" => {
                assert_eq!(value["outlier"], true, "{value}");
                assert_eq!(value["json"]["content"]["membership"], "leave", "{value}");
            }
            // The block, the deletions' records, the event log, and what a sliding-sync
            // connection's earlier generation had sent its client (a retry may need it).
            "roomid_blocked"
            | "deleteid_roomdeletion"
            | "stream_event"
            | "userid_deviceid_connid_generation_connection" => {}
            other => panic!("the purged room is still in {other}: {value}"),
        }
    }
    assert_eq!(memberships, 2, "alice's and bob's: {left_behind:?}");
    let mut kept_relations = 0;
    let table = &kith_storage::catalog::EVENTID_RELTYPE_POSITION_RELATION;
    let kept_room = kept.as_bytes();
    storage
        .visit_raw(table, |_, value| {
            kept_relations += usize::from(value.windows(kept_room.len()).any(|w| w == kept_room));
        })
        .unwrap();
    assert_eq!(
        kept_relations, 1,
        "the other room's reaction is still indexed"
    );
}

/// The deletion's calls answer as Synapse's do: the same statuses, errcodes and shapes.
#[tokio::test]
async fn room_deletion_answers_as_synapse_does() {
    let Some(synapse) = Synapse::start(&[]).await else {
        panic!("KITH_SYNAPSE_PYTHON is not set: run `bash .ci/run`, which installs Synapse");
    };
    let kith = Server::start(&[]);
    let (ok, output) = kith.admin(&["create-user", "boss", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{output}");
    let (_, login) = kith.login("boss", PASSWORD, json!({})).await;
    let both = Both {
        kith: &kith,
        synapse: &synapse,
        kith_token: login["access_token"].as_str().unwrap().to_owned(),
        synapse_token: synapse_admin(&synapse).await,
    };
    let (_, carol_kith) = kith.user("carol").await;
    let (_, carol_synapse) = synapse.user("carol").await;
    let body = json!({ "preset": "public_chat", "room_alias_name": "doomed" });
    let kith_room = kith.create_room(&carol_kith, body.clone()).await;
    let (status, made) = synapse
        .request(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&carol_synapse),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let synapse_room = made["room_id"].as_str().unwrap().to_owned();

    // Each server's own room and users in the path and body.
    let on_both = async |method: Method,
                         path: &dyn Fn(&str) -> String,
                         body: &dyn Fn(&str) -> Option<Value>| {
        let (ks, k) = kith
            .request(
                method.clone(),
                &path(&kith_room),
                Some(&both.kith_token),
                body(SERVER_NAME),
            )
            .await;
        let (ss, s) = synapse
            .request(
                method,
                &path(&synapse_room),
                Some(&both.synapse_token),
                body(&synapse.name),
            )
            .await;
        compare(&path("…"), (ks, k), (ss, s))
    };
    let v2 = |room: &str| format!("/_synapse/admin/v2/rooms/{room}");
    // Refusals first: wrong types, a notice room's maker from elsewhere, a room ID that
    // is none, unknown deletions.
    for body in [json!({ "block": "yes" }), json!({ "force_purge": 0 })] {
        on_both(Method::DELETE, &v2, &|_| Some(body.clone())).await;
    }
    let elsewhere = json!({ "new_room_user_id": "@boss:elsewhere.example" });
    on_both(Method::DELETE, &v2, &|_| Some(elsewhere.clone())).await;
    both.call(
        Method::DELETE,
        "/_synapse/admin/v2/rooms/not-a-room",
        Some(json!({})),
    )
    .await;
    both.call(
        Method::GET,
        "/_synapse/admin/v2/rooms/delete_status/nothing",
        None,
    )
    .await;
    on_both(
        Method::GET,
        &|room| format!("/_synapse/admin/v2/rooms/{room}/delete_status"),
        &|_| None,
    )
    .await;

    // The deletion itself, and its status both ways.
    let (kith_started, synapse_started) = on_both(Method::DELETE, &v2, &|server| {
        Some(json!({ "block": true, "new_room_user_id": format!("@carol:{server}") }))
    })
    .await;
    let on_kith = async |path: &str| kith.get(path, Some(&both.kith_token)).await;
    let kith_done = finished(on_kith, kith_started["delete_id"].as_str().unwrap()).await;
    let on_synapse = async |path: &str| {
        let token = Some(both.synapse_token.as_str());
        synapse.request(Method::GET, path, token, None).await
    };
    let synapse_done = finished(on_synapse, synapse_started["delete_id"].as_str().unwrap()).await;
    compare(
        "delete_status/{id}",
        (StatusCode::OK, kith_done.clone()),
        (StatusCode::OK, synapse_done.clone()),
    );
    assert_eq!(
        kith_done["status"], synapse_done["status"],
        "{kith_done}\n{synapse_done}"
    );
    assert_eq!(
        kith_done["shutdown_room"]["local_aliases"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        synapse_done["shutdown_room"]["local_aliases"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (by_room, _) = on_both(
        Method::GET,
        &|room| format!("/_synapse/admin/v2/rooms/{room}/delete_status"),
        &|_| None,
    )
    .await;
    assert_eq!(by_room["results"][0]["status"], "complete");
    // Both refuse a join into the blocked room (Synapse says `M_UNKNOWN`, kith `M_FORBIDDEN`).
    let (_, dave_kith) = kith.user("dave").await;
    let (_, dave_synapse) = synapse.user("dave").await;
    let join = |room: &str| format!("/_matrix/client/v3/rooms/{room}/join");
    let (ks, k) = kith
        .post(&join(&kith_room), Some(&dave_kith), json!({}))
        .await;
    let (ss, s) = synapse
        .request(
            Method::POST,
            &join(&synapse_room),
            Some(&dave_synapse),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (ks, ss),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN),
        "{k}\n{s}"
    );
    // The room is gone from both.
    on_both(
        Method::GET,
        &|room| format!("/_synapse/admin/v1/rooms/{room}"),
        &|_| None,
    )
    .await;
}

/// A shut-down room another server is in: that server sees our users leave, and its users
/// stay; blocked, the room takes no one of ours, nor anyone through us. Without a purge
/// it stays, with no one of ours in it.
#[tokio::test]
async fn a_blocked_room_refuses_joins_and_invites_through_us() {
    let (a, a_name) = Server::federated(&[]);
    let (b, b_name) = Server::federated(&[]);
    let (ok, output) = a.admin(&["create-user", "boss", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{output}");
    let (_, login) = a.login("boss", PASSWORD, json!({})).await;
    let boss = login["access_token"].as_str().unwrap().to_owned();
    let (alice_id, alice) = a.user("alice").await;
    let (_, bob) = b.user("bob").await;
    let public = json!({ "preset": "public_chat", "name": "Shared" });
    let room = a.create_room(&alice, public).await;
    let join = format!("/_matrix/client/v3/join/{room}?server_name={a_name}");
    let (status, joined) = b.post(&join, Some(&bob), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");

    let path = format!("/_synapse/admin/v2/rooms/{room}");
    let body = json!({ "block": true, "purge": false });
    let (status, started) = a
        .request(Method::DELETE, &path, Some(&boss), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let as_boss = async |path: &str| a.get(path, Some(&boss)).await;
    let done = finished(as_boss, started["delete_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["shutdown_room"]["kicked_users"], json!([alice_id]));

    // B learns that alice left; bob is still there.
    let members = format!("/_matrix/client/v3/rooms/{room}/joined_members");
    let mut seen = Value::Null;
    for _ in 0..100 {
        let (status, joined) = b.get(&members, Some(&bob)).await;
        assert_eq!(status, StatusCode::OK, "{joined}");
        if joined["joined"].get(&alice_id).is_none() {
            seen = joined;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen["joined"].as_object().map(|j| j.len()),
        Some(1),
        "{seen}"
    );
    // Not purged: the room is still known here, with no local member.
    let (status, details) = a
        .get(&format!("/_synapse/admin/v1/rooms/{room}"), Some(&boss))
        .await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["joined_local_members"], 0, "{details}");

    // Blocked: no one of A joins (here or through B) or is invited from B; no other
    // server's user joins through A.
    let (_, carol) = a.user("carol").await;
    let (carol_id, _) = (format!("@carol:{a_name}"), ());
    let through_b = format!("/_matrix/client/v3/join/{room}?server_name={b_name}");
    for path in [format!("/_matrix/client/v3/rooms/{room}/join"), through_b] {
        let refused = a.post(&path, Some(&carol), json!({})).await;
        assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let invite = format!("/_matrix/client/v3/rooms/{room}/invite");
    let refused = b
        .post(&invite, Some(&bob), json!({ "user_id": carol_id }))
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{refused:?}");
    let peer = crate::peer::Peer::start().await;
    let make_join = format!(
        "/_matrix/federation/v1/make_join/{}/@mallory:{}?ver=12",
        urlencode(&room),
        peer.name
    );
    let to = ruma::ServerName::parse(&a_name).unwrap();
    let refused = (peer.client)
        .send_json(&to, reqwest::Method::GET, &make_join, None)
        .await;
    let refused = crate::peer::status(&refused);
    assert_eq!(refused, (StatusCode::FORBIDDEN, "M_FORBIDDEN".to_owned()));
    let (status, joined) = a.get("/_matrix/client/v3/joined_rooms", Some(&carol)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(joined["joined_rooms"], json!([]), "{joined}");
}

/// A deletion that kith was stopped in the middle of is finished at the next start.
#[tokio::test]
async fn an_unfinished_deletion_resumes_at_start() {
    let kith = Server::start(&[]);
    let (alice_id, alice) = kith.user("alice").await;
    let room = kith
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    kith.say(&alice, &room, "soon gone").await;
    let mut kith = kith;
    kith.terminate();
    // As a run stopped before it began leaves it.
    {
        let storage = kith_storage::Storage::open(&kith.data.join("db")).unwrap();
        let deletion = json!({
            "room_id": room,
            "request": { "requester": format!("@boss:{SERVER_NAME}"), "new_room_user_id": null,
                "room_name": null, "message": null, "block": false, "purge": true,
                "force_purge": false },
            "status": "active",
            "result": { "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [],
                "new_room_id": null },
            "started_ms": 1,
        });
        let mut batch = storage.batch();
        let table = &kith_storage::catalog::DELETEID_ROOMDELETION;
        batch.put(table, &"interrupted", &deletion).unwrap();
        storage.commit_blocking(batch).unwrap();
    }
    let kith = kith.restart();
    let (ok, output) = kith.admin(&["create-user", "boss", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{output}");
    let (_, login) = kith.login("boss", PASSWORD, json!({})).await;
    let boss = login["access_token"].as_str().unwrap().to_owned();
    let as_boss = async |path: &str| kith.get(path, Some(&boss)).await;
    let done = finished(as_boss, "interrupted").await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["shutdown_room"]["kicked_users"], json!([alice_id]));
    let (status, _) = kith
        .get(&format!("/_synapse/admin/v1/rooms/{room}"), Some(&boss))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "purged");
}

/// `kith admin delete-room` deletes a room through the running server, or by itself while
/// kith is stopped.
#[tokio::test]
async fn kith_admin_deletes_rooms_running_or_not() {
    let kith = Server::start(&[]);
    let (alice_id, alice) = kith.user("alice").await;
    let (_, bob) = kith.user("bob").await;
    let first = kith
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let second = kith
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let kept = kith
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;

    let (ok, output) = kith.admin(&["delete-room", &first, "--block"]);
    assert!(ok, "{output}");
    let printed: Value = serde_json::from_str(&output).expect(&output);
    assert_eq!(printed["kicked_users"], json!([alice_id]), "{output}");
    let join = |room: &str| format!("/_matrix/client/v3/rooms/{room}/join");
    let refused = kith.post(&join(&first), Some(&bob), json!({})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let mut kith = kith;
    kith.terminate();
    let (ok, output) = kith.admin(&["delete-room", &second, "--keep-history"]);
    assert!(ok, "{output}");
    let (ok, output) = kith.admin(&["delete-room", "not-a-room"]);
    assert!(!ok, "{output}");
    let kith = kith.restart();
    let (_, rooms) = kith
        .get("/_matrix/client/v3/joined_rooms", Some(&alice))
        .await;
    assert_eq!(rooms["joined_rooms"], json!([kept]), "{rooms}");
    // Not blocked, and its history kept: bob may join it and read it.
    let (status, joined) = kith.post(&join(&second), Some(&bob), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let refused = kith.post(&join(&first), Some(&bob), json!({})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}
