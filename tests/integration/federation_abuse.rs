//! Federation abuse, sent by a peer made of real parts (see `peer.rs`): retried and
//! fuzzed transactions, forged invites, a server the room's ACL shuts out, and history a
//! server's users could not see.

use kith_federation::NewEvent;
use reqwest::StatusCode;
use ruma::events::TimelineEventType;
use ruma::{RoomVersionId, ServerName};
use serde_json::{Value, json};

use crate::common::Server;
use crate::peer::{Peer, bodies, encoded, room, status};

/// A transaction retried while the first try is still being applied (a peer that timed
/// out and sent it again) is applied once: its to-device message reaches the device once.
#[tokio::test]
async fn a_transaction_sent_twice_at_once_is_applied_once() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (bob, token) = kith.user("bob").await;
    let edu = |i: usize| {
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": format!("@mallory:{}", peer.name), "type": "m.test",
            "message_id": format!("m{i}"),
            "messages": { bob.clone(): { "*": { "n": i } } },
        }})
    };
    // Many EDUs make the first try take a while, so the retries come while it runs.
    let body = json!({
        "origin": peer.name, "origin_server_ts": 1, "pdus": [],
        "edus": (0..100).map(edu).collect::<Vec<_>>(),
    });
    let tries = (0..4).map(|_| peer.put(&name, "/_matrix/federation/v1/send/once", &body));
    for answer in futures_util::future::join_all(tries).await {
        answer.expect("each try is answered");
    }
    let synced = kith.sync(&token, None, 0).await;
    let events = synced["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut seen: Vec<u64> = events
        .iter()
        .filter_map(|e| e["content"]["n"].as_u64())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<u64>>(), "each message once");
}

/// A room's `m.room.server_acl` shuts a server out: its events are refused, it reads
/// nothing more of the room, and it cannot join again.
#[tokio::test]
async fn a_server_the_room_acl_denies_is_shut_out() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _, auth) = room(&kith, &token).await;
    let (join, _) = peer.join(&name, &room).await;
    let get = |path: String| {
        let to = ServerName::parse(name.as_str()).unwrap();
        let client = &peer.client;
        async move { client.send_json(&to, http::Method::GET, &path, None).await }
    };
    let event = encoded(join.event_id.as_str());
    let reads = || {
        [
            format!("/_matrix/federation/v1/event/{event}"),
            format!(
                "/_matrix/federation/v1/backfill/{}?v={event}&limit=5",
                encoded(&room)
            ),
            format!(
                "/_matrix/federation/v1/state_ids/{}?event_id={event}",
                encoded(&room)
            ),
        ]
    };
    for path in reads() {
        assert!(get(path.clone()).await.is_ok(), "{path} before the ACL");
    }

    // The peer is 127.0.0.1:<port>: an IP literal, which this ACL refuses.
    let acl = json!({ "allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": false });
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/");
    let (code, set) = kith.put(&path, Some(&token), acl).await;
    assert_eq!(code, StatusCode::OK, "{set}");

    for path in reads() {
        let refused = get(path.clone()).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.answered()),
            "{path}: {refused:?}"
        );
    }
    let mut auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    auth.push(join.event_id.as_str());
    let (id, pdu) = peer.message(&room, join.event_id.as_str(), &auth, "after the ACL");
    let answer = peer.send(&name, "acl1", vec![pdu]).await.unwrap();
    assert!(answer["pdus"][id.as_str()]["error"].is_string(), "{answer}");
    assert!(
        !bodies(&kith, &token, &room)
            .await
            .contains(&"after the ACL".to_owned())
    );
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/@mallory:{}?ver=12",
        encoded(&room),
        peer.name
    );
    assert_eq!(status(&get(path).await).0, StatusCode::FORBIDDEN);
}

/// Under `dm_only`, a direct-chat invite from a server without friend requests is held as
/// one, which counts against the inviter's and the server's friend-request allowance —
/// but only once it is checked: invites that fail their signature check take nothing, so
/// forged ones cannot use up the allowance a real one needs.
#[tokio::test]
async fn forged_invites_take_no_friend_request_allowance() {
    let (kith, name) = Server::federated(&[(crate::common::POLICY, "dm_only")]);
    let peer = Peer::start().await;
    let (bob, _) = kith.user("bob").await;
    let invite = |n: u32| {
        let event = NewEvent {
            room_id: Some(format!("!room{n}").as_str().try_into().unwrap()),
            sender: format!("@mallory:{}", peer.name).try_into().unwrap(),
            kind: TimelineEventType::RoomMember,
            state_key: Some(bob.clone()),
            content: json!({ "membership": "invite", "is_direct": true }),
            prev_events: vec![],
            auth_events: vec![],
            depth: 3,
            origin_server_ts: 1_800_000_000_000,
            redacts: None,
        };
        peer.keys.build_pdu(&RoomVersionId::V12, event).unwrap()
    };
    let send = |pdu: kith_federation::Pdu, json: Value| {
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encoded(pdu.room_id.as_deref().unwrap().as_str()),
            encoded(pdu.event_id.as_str())
        );
        let body = json!({ "room_version": "12", "event": json, "invite_room_state": [] });
        let (peer, name) = (&peer, &name);
        async move { status(&peer.put(name, &path, &body).await) }
    };
    for n in 0..25 {
        let pdu = invite(n);
        let mut forged = serde_json::to_value(&pdu.json).unwrap();
        forged["origin_server_ts"] = json!(1_800_000_000_001u64 + u64::from(n));
        assert_eq!(
            send(pdu, forged).await.0,
            StatusCode::FORBIDDEN,
            "forged invite {n}"
        );
    }
    let real = invite(100);
    let json = serde_json::to_value(&real.json).unwrap();
    assert_eq!(
        send(real, json).await.0,
        StatusCode::OK,
        "the real invite is held"
    );
}

/// Another server reads history as its users could: in a room whose history is visible
/// only to those joined, what was said before its user joined comes redacted (the room's
/// history stays whole, its content does not leak), what came after comes whole.
#[tokio::test]
async fn a_server_reads_only_the_history_its_users_could() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (_, token) = kith.user("alice").await;
    let (room, _, _) = room(&kith, &token).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/");
    let (code, _) = kith
        .put(
            &path,
            Some(&token),
            json!({ "history_visibility": "joined" }),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let before = kith.say(&token, &room, "before the peer").await;
    let (join, _) = peer.join(&name, &room).await;
    let after = kith.say(&token, &room, "after the peer").await;
    let to = ServerName::parse(name.as_str()).unwrap();
    let get = |path: String| {
        let (client, to) = (&peer.client, &to);
        async move {
            client
                .send_json(to, http::Method::GET, &path, None)
                .await
                .unwrap()
        }
    };
    let body_of = |pdu: &Value| pdu["content"]["body"].as_str().map(str::to_owned);
    let event = get(format!("/_matrix/federation/v1/event/{}", encoded(&before))).await;
    assert_eq!(body_of(&event["pdus"][0]), None, "redacted: {event}");
    assert_eq!(event["pdus"][0]["type"], "m.room.message");
    let event = get(format!("/_matrix/federation/v1/event/{}", encoded(&after))).await;
    assert_eq!(
        body_of(&event["pdus"][0]).as_deref(),
        Some("after the peer")
    );
    let path = format!(
        "/_matrix/federation/v1/backfill/{}?v={}&limit=20",
        encoded(&room),
        encoded(&after)
    );
    let pdus = get(path).await["pdus"].as_array().cloned().unwrap();
    let bodies: Vec<_> = pdus
        .iter()
        .filter(|p| p["type"] == "m.room.message")
        .map(body_of)
        .collect();
    assert_eq!(
        bodies,
        [Some("after the peer".to_owned()), None],
        "{pdus:?}"
    );
    assert!(
        pdus.iter()
            .any(|p| p["type"] == "m.room.member" && p["state_key"] == join.sender.as_str())
    );
}

/// Federation input as a fuzzer would send it, all properly signed: malformed and
/// oversized transactions, a PDU whose content does not match its hash, EDUs about users
/// of other servers, an invite for a user who does not exist. Each is refused with the
/// right error, or (as the spec says for a bad content hash) taken in redacted, and nothing
/// else is stored.
#[tokio::test]
async fn fuzzed_federation_input_is_refused_and_stores_nothing() {
    let (kith, name) = Server::federated(&[]);
    let peer = Peer::start().await;
    let (alice, token) = kith.user("alice").await;
    let (room, _, auth) = room(&kith, &token).await;
    let (join, _) = peer.join(&name, &room).await;
    let mallory = join.sender.to_string();

    let send = |txn: &str, body: Value| {
        let path = format!("/_matrix/federation/v1/send/{txn}");
        let (peer, name) = (&peer, &name);
        async move { status(&peer.put(name, &path, &body).await) }
    };
    let wrong_types = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": "not a list" });
    assert_eq!(
        send("f1", wrong_types).await,
        (StatusCode::BAD_REQUEST, "M_BAD_JSON".into())
    );
    let wrong_ts = json!({ "origin": peer.name, "origin_server_ts": "yesterday", "pdus": [] });
    assert_eq!(send("f2", wrong_ts).await.0, StatusCode::BAD_REQUEST);
    let huge = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": [],
        "edus": [{ "edu_type": "m.x", "content": { "pad": "x".repeat(9 << 20) } }] });
    assert_eq!(
        send("f3", huge).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE".into())
    );

    // A message whose content was changed after it was signed: kept redacted, as the spec
    // says of a content hash that does not match, so what was changed is never shown.
    let mut auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    auth.push(join.event_id.as_str());
    let (id, mut pdu) = peer.message(&room, join.event_id.as_str(), &auth, "as signed");
    pdu["content"]["body"] = json!("tampered");
    let answer = peer.send(&name, "f4", vec![pdu]).await.unwrap();
    assert!(answer["pdus"][id.as_str()].is_object(), "{answer}");
    let shown = bodies(&kith, &token, &room).await;
    assert!(
        !shown.iter().any(|b| b == "tampered" || b == "as signed"),
        "{shown:?}"
    );

    // EDUs about users of another server are ignored; the same about the peer's own user
    // (joined to the room) are taken, which shows the ignored ones were not lost by chance.
    let typing = |user: &str| {
        json!({ "edu_type": "m.typing",
        "content": { "room_id": room, "user_id": user, "typing": true } })
    };
    let to_device = |sender: &str, n: u32| {
        json!({ "edu_type": "m.direct_to_device", "content": {
        "sender": sender, "type": "m.test", "message_id": format!("m{n}"),
        "messages": { alice.clone(): { "*": { "n": n } } } } })
    };
    let other = "@someone:elsewhere.example";
    let edus = vec![
        typing(other),
        to_device(other, 1),
        typing(&mallory),
        to_device(&mallory, 2),
    ];
    let body = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": [], "edus": edus });
    assert_eq!(send("f5", body).await.0, StatusCode::OK);
    let synced = kith.sync(&token, None, 0).await;
    let typing_now = &synced["rooms"]["join"][&room]["ephemeral"]["events"];
    let typers = typing_now
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "m.typing")
        .map(|e| e["content"]["user_ids"].clone());
    assert_eq!(typers, Some(json!([mallory])), "{typing_now}");
    let messages: Vec<_> = synced["to_device"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["sender"].clone(), e["content"]["n"].clone()))
        .collect();
    assert_eq!(messages, [(json!(mallory), json!(2))]);

    // An invite for someone who has no account here: 404, nothing kept.
    let stored_before = kith.assert_events_verify();
    let ghost = format!("@ghost:{name}");
    let event = NewEvent {
        room_id: Some("!elsewhere".try_into().unwrap()),
        sender: mallory.as_str().try_into().unwrap(),
        kind: TimelineEventType::RoomMember,
        state_key: Some(ghost.clone()),
        content: json!({ "membership": "invite" }),
        prev_events: vec![],
        auth_events: vec![],
        depth: 3,
        origin_server_ts: 1_800_000_000_000,
        redacts: None,
    };
    let invite = peer.keys.build_pdu(&RoomVersionId::V12, event).unwrap();
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        encoded("!elsewhere"),
        encoded(invite.event_id.as_str())
    );
    let body = json!({ "room_version": "12", "event": invite.json, "invite_room_state": [] });
    assert_eq!(
        status(&peer.put(&name, &path, &body).await).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        kith.assert_events_verify(),
        stored_before,
        "the refused invite was kept"
    );
}
