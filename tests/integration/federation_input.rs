//! What kith does with bad federation input, sent by a peer made of real parts (see
//! `peer.rs`): bad events and transactions, and what a server that joined may read.

use std::time::{Duration, Instant};

use kith_federation::NewEvent;
use reqwest::StatusCode;
use ruma::events::TimelineEventType;
use ruma::{RoomVersionId, ServerName};
use serde_json::{Value, json};

use crate::common::Server;
use crate::peer::{Peer, bodies, encoded, room, status};

#[tokio::test]
async fn bad_events_and_transactions_are_refused_and_change_nothing() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, head, auth) = (room(&kith, &token)).await;
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();

    // Someone who never joined cannot speak: the PDU fails the auth rules.
    let (intruder, pdu) = peer.message(&room, &head, &auth, "not a member");
    let answer = peer.send(&name, "t1", vec![pdu.clone()]).await.unwrap();
    let error = &answer["pdus"][intruder.as_str()]["error"];
    assert!(error.is_string(), "{answer}");

    // A replayed transaction gets the same answer and is not applied again.
    let again = peer.send(&name, "t1", vec![]).await.unwrap();
    assert_eq!(again, answer);

    // A signature that does not hold: refused.
    let (forged, mut pdu) = peer.message(&room, &head, &auth, "forged");
    let signatures = pdu["signatures"][&peer.name].as_object_mut().unwrap();
    for sig in signatures.values_mut() {
        *sig = json!("a".repeat(86));
    }
    let answer = peer.send(&name, "t2", vec![pdu]).await.unwrap();
    assert!(
        answer["pdus"][forged.as_str()]["error"].is_string(),
        "{answer}"
    );

    // More than 50 PDUs in one transaction: 400, nothing applied.
    let many: Vec<Value> = (0..51).map(|_| json!({})).collect();
    let (code, errcode) = status(&peer.send(&name, "t3", many).await);
    assert_eq!(
        (code, errcode.as_str()),
        (StatusCode::BAD_REQUEST, "M_BAD_JSON")
    );

    // A transaction claiming another origin than its signer: 403.
    let body = json!({ "origin": "elsewhere.example", "origin_server_ts": 1, "pdus": [] });
    let result = peer
        .put(&name, "/_matrix/federation/v1/send/t4", &body)
        .await;
    assert_eq!(status(&result).0, StatusCode::FORBIDDEN);

    // An invite in a room version kith does not speak.
    let (invite_id, mut invite) = peer.message(&room, &head, &auth, "invite");
    invite["type"] = json!("m.room.member");
    invite["state_key"] = json!(format!("@alice:{name}"));
    let body = json!({ "room_version": "1", "event": invite, "invite_room_state": [] });
    let path = format!("/_matrix/federation/v2/invite/{room}/{invite_id}");
    let (code, errcode) = status(&peer.put(&name, &path, &body).await);
    assert_eq!(
        (code, errcode.as_str()),
        (StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION")
    );

    // A server with no one in the room reads nothing of it.
    let to = ServerName::parse(name.as_str()).unwrap();
    for (method, path, body) in [
        (
            http::Method::GET,
            format!("/_matrix/federation/v1/event/{head}"),
            None,
        ),
        (
            http::Method::GET,
            format!("/_matrix/federation/v1/event_auth/{room}/{head}"),
            None,
        ),
        (
            http::Method::GET,
            format!("/_matrix/federation/v1/backfill/{room}?v={head}&limit=10"),
            None,
        ),
        (
            http::Method::POST,
            format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(json!({ "earliest_events": [], "latest_events": [head], "limit": 10 })),
        ),
    ] {
        let result = peer
            .client
            .send_json(
                &to,
                method,
                &path.replace('$', "%24").replace('!', "%21"),
                body.as_ref(),
            )
            .await;
        let (code, _) = status(&result);
        assert!(matches!(code.as_u16(), 403 | 404), "{path}: {code}");
    }

    // Nothing of it reached the room.
    let seen = bodies(&kith, &token, &room).await;
    assert!(seen.is_empty(), "{seen:?}");
    kith.assert_events_verify();
}

/// A server that joins a public room (make_join, sign, send_join) reads its state before
/// any event (`/state_ids`, `/state`, the join not included), its auth chains and its
/// history.
#[tokio::test]
async fn a_server_that_joined_reads_state_and_history() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _head, _) = room(&kith, &token).await;
    let to = ServerName::parse(name.as_str()).unwrap();
    let user = format!("@mallory:{}", peer.name);
    let (join, joined) = peer.join(&name, &room).await;
    let state = joined["state"].as_array().unwrap();
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "{joined}"
    );

    let event = encoded(join.event_id.as_str());
    let path = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={event}",
        encoded(&room)
    );
    let ids = peer
        .client
        .send_json(&to, http::Method::GET, &path, None)
        .await
        .unwrap();
    let pdu_ids = ids["pdu_ids"].as_array().unwrap();
    assert_eq!(pdu_ids.len(), state.len(), "{ids}");
    assert!(!pdu_ids.contains(&json!(join.event_id)), "{ids}");
    assert!(
        !ids["auth_chain_ids"].as_array().unwrap().is_empty(),
        "{ids}"
    );
    let path = format!(
        "/_matrix/federation/v1/state/{}?event_id={event}",
        encoded(&room)
    );
    let whole = peer
        .client
        .send_json(&to, http::Method::GET, &path, None)
        .await
        .unwrap();
    assert_eq!(
        whole["pdus"].as_array().unwrap().len(),
        pdu_ids.len(),
        "{whole}"
    );
    for path in [
        format!("/_matrix/federation/v1/event/{event}"),
        format!(
            "/_matrix/federation/v1/event_auth/{}/{event}",
            encoded(&room)
        ),
        format!(
            "/_matrix/federation/v1/backfill/{}?v={event}&limit=5",
            encoded(&room)
        ),
    ] {
        let found = peer
            .client
            .send_json(&to, http::Method::GET, &path, None)
            .await;
        assert!(found.is_ok(), "{path}: {found:?}");
    }

    // alice bans mallory; a message mallory's server then builds on the history from
    // before the ban passes against the state before it, but not against the room's
    // state now: soft-failed, so kept and answered without error, but never shown.
    let path = format!("/_matrix/client/v3/rooms/{room}/ban");
    let (status, banned) = kith
        .post(&path, Some(&token), json!({ "user_id": user }))
        .await;
    assert_eq!(status, StatusCode::OK, "{banned}");
    let power_levels = state
        .iter()
        .find(|e| e["type"] == "m.room.power_levels")
        .map(|e| {
            let object = serde_json::from_value(e.clone()).unwrap();
            kith_federation::Pdu::received(&RoomVersionId::V12, object)
                .unwrap()
                .event_id
        })
        .unwrap();
    let late = NewEvent {
        room_id: Some(room.as_str().try_into().unwrap()),
        sender: user.as_str().try_into().unwrap(),
        kind: TimelineEventType::RoomMessage,
        state_key: None,
        content: json!({ "msgtype": "m.text", "body": "sent before I knew" }),
        prev_events: vec![join.event_id.clone()],
        auth_events: vec![power_levels, join.event_id.clone()],
        depth: u64::from(join.depth) + 1,
        origin_server_ts: 1_800_000_000_001,
        redacts: None,
    };
    let late = peer.keys.build_pdu(&RoomVersionId::V12, late).unwrap();
    let pdu = serde_json::to_value(&late.json).unwrap();
    let answer = peer.send(&name, "late1", vec![pdu]).await.unwrap();
    assert_eq!(
        answer["pdus"][late.event_id.as_str()],
        json!({}),
        "{answer}"
    );
    let seen = bodies(&kith, &token, &room).await;
    assert!(!seen.contains(&"sent before I knew".to_owned()), "{seen:?}");
    kith.assert_events_verify();
}

/// A message alice sends while mallory's server is joining (after `make_join`, before
/// `send_join`) is named by no event that server gets: kith sends it along with the join,
/// or mallory would never see it (Element's first message of a direct chat, racing the
/// invitee's acceptance).
#[tokio::test]
async fn a_message_sent_while_a_server_joins_reaches_it() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _head, _) = room(&kith, &token).await;
    let made = peer.make_join(&name, &room).await;
    let racing = kith.say(&token, &room, "said while you joined").await;
    let template: ruma::CanonicalJsonObject =
        serde_json::from_value(made["event"].clone()).unwrap();
    let join = peer
        .keys
        .sign_new_pdu(&RoomVersionId::V12, template)
        .unwrap();
    assert!(
        !join.prev_events.iter().any(|p| p.as_str() == racing),
        "the join was made before the message"
    );
    peer.send_join(&name, &room, &join).await;
    let sent_to_peer = |id: &str| {
        peer.received.lock().unwrap().iter().any(|txn| {
            txn["pdus"].as_array().is_some_and(|pdus| {
                pdus.iter().any(|pdu| {
                    let object = serde_json::from_value(pdu.clone()).unwrap();
                    kith_federation::Pdu::received(&RoomVersionId::V12, object)
                        .is_ok_and(|p| p.event_id == id)
                })
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sent_to_peer(&racing) {
        assert!(
            Instant::now() < deadline,
            "the racing message never reached the peer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And what follows reaches it as usual.
    let after = kith.say(&token, &room, "and after").await;
    while !sent_to_peer(&after) {
        assert!(
            Instant::now() < deadline,
            "the next message never reached the peer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
