//! Relations: reactions, edits, thread replies and references, paged through `/relations`
//! and `/threads`, and bundled (`unsigned.m.relations`) into the events they relate to
//! wherever those are served: `/event`, `/messages`, `/context`, `/sync`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Server, ageless, assert_error, rand_suffix, urlencode};

/// Sends an event of `kind`; its event ID.
pub(crate) async fn send(
    server: &Server,
    token: &str,
    room: &str,
    kind: &str,
    content: Value,
) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/send/{kind}/{}",
        rand_suffix()
    );
    let (status, sent) = server.put(&path, Some(token), content).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    sent["event_id"].as_str().unwrap().to_owned()
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn edit(of: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text", "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": of },
    })
}

fn reply_in_thread(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                          "m.in_reply_to": { "event_id": root } },
    })
}

fn reaction(to: &str, key: &str) -> Value {
    json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": to, "key": key } })
}

async fn event(server: &Server, token: &str, room: &str, id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{id}");
    let (status, event) = server.get(&path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    event
}

async fn relations(server: &Server, token: &str, room: &str, rest: &str) -> Value {
    let path = format!("/_matrix/client/v1/rooms/{room}/relations/{rest}");
    let (status, page) = server.get(&path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {page}");
    page
}

fn ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn edits_threads_references_and_reactions_are_paged_and_bundled() {
    let server = Server::start(&[]);
    let (_, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (carol, carol_token) = server.user("carol").await;
    let room = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let root = send(&server, &alice_token, &room, "m.room.message", text("root")).await;

    // Edits: the latest of the sender's own counts; someone else's edit does not.
    let first = send(
        &server,
        &alice_token,
        &room,
        "m.room.message",
        edit(&root, "one"),
    )
    .await;
    let second = send(
        &server,
        &alice_token,
        &room,
        "m.room.message",
        edit(&root, "two"),
    )
    .await;
    send(
        &server,
        &bob_token,
        &room,
        "m.room.message",
        edit(&root, "bob's"),
    )
    .await;
    let served = event(&server, &bob_token, &room, &root).await;
    let bundled = &served["unsigned"]["m.relations"];
    assert_eq!(bundled["m.replace"]["event_id"], second, "{served}");
    assert_eq!(
        bundled["m.replace"]["content"]["m.new_content"]["body"],
        "two"
    );

    // A thread: two replies by bob, one by alice.
    let mut replies = Vec::new();
    for (token, body) in [(&bob_token, "r1"), (&alice_token, "r2"), (&bob_token, "r3")] {
        let content = reply_in_thread(&root, body);
        replies.push(send(&server, token, &room, "m.room.message", content).await);
    }
    let reacted = send(
        &server,
        &alice_token,
        &room,
        "m.reaction",
        reaction(&replies[0], "👍"),
    )
    .await;
    send(
        &server,
        &bob_token,
        &room,
        "m.reaction",
        reaction(&root, "🎉"),
    )
    .await;
    let referenced = json!({ "msgtype": "m.text", "body": "see above",
        "m.relates_to": { "rel_type": "m.reference", "event_id": root } });
    let reference = send(&server, &bob_token, &room, "m.room.message", referenced).await;
    // A relation from another room is no relation of this event.
    let elsewhere = server.shared_room(&bob_token, (&carol, &carol_token)).await;
    let stray = json!({ "m.relates_to": { "rel_type": "m.reference", "event_id": root } });
    send(&server, &bob_token, &elsewhere, "m.room.message", stray).await;

    let served = event(&server, &alice_token, &room, &root).await;
    let thread = &served["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 3, "{served}");
    assert_eq!(thread["latest_event"]["event_id"], replies[2]);
    assert_eq!(thread["current_user_participated"], true);
    let chunk = &served["unsigned"]["m.relations"]["m.reference"]["chunk"];
    assert_eq!(chunk, &json!([{ "event_id": reference }]), "{served}");
    assert!(
        served["unsigned"]["m.relations"]
            .get("m.annotation")
            .is_none()
    );

    // /relations: all, by type, by type and event type, paged, recursive.
    let all = relations(&server, &alice_token, &room, &root).await;
    assert_eq!(all["chunk"].as_array().unwrap().len(), 8, "{all}");
    let thread_page = relations(&server, &alice_token, &room, &format!("{root}/m.thread")).await;
    let newest_first: Vec<String> = replies.iter().rev().cloned().collect();
    assert_eq!(ids(&thread_page), newest_first);
    let reactions = format!("{root}/m.annotation/m.reaction");
    assert_eq!(
        ids(&relations(&server, &alice_token, &room, &reactions).await).len(),
        1
    );
    let first_page = relations(
        &server,
        &alice_token,
        &room,
        &format!("{root}/m.thread?limit=2"),
    )
    .await;
    assert_eq!(ids(&first_page), newest_first[..2]);
    let next = first_page["next_batch"].as_str().expect("a next page");
    let rest = format!("{root}/m.thread?limit=2&from={next}");
    let second_page = relations(&server, &alice_token, &room, &rest).await;
    assert_eq!(ids(&second_page), newest_first[2..]);
    assert!(second_page.get("next_batch").is_none(), "{second_page}");
    let forwards = relations(
        &server,
        &alice_token,
        &room,
        &format!("{root}/m.thread?dir=f"),
    )
    .await;
    assert_eq!(ids(&forwards), replies);
    let deep = relations(
        &server,
        &alice_token,
        &room,
        &format!("{root}?recurse=true"),
    )
    .await;
    assert!(ids(&deep).contains(&reacted), "{deep}");
    assert_eq!(deep["recursion_depth"], 3);
    assert!(!ids(&all).contains(&reacted));
    // The thread's replies come with their own relations bundled (nothing here) and the
    // paged edits are the events themselves.
    let edits = relations(&server, &alice_token, &room, &format!("{root}/m.replace")).await;
    assert_eq!(ids(&edits).len(), 3);

    // /threads: the root, for everyone; for carol (no part in it) not among hers.
    let (status, threads) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/threads"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{threads}");
    assert_eq!(ids(&threads), vec![root.clone()]);
    assert_eq!(
        threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"],
        3
    );
    let path = format!("/_matrix/client/v3/rooms/{room}/invite");
    server
        .post(&path, Some(&alice_token), json!({ "user_id": carol }))
        .await;
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&carol_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/_matrix/client/v1/rooms/{room}/threads?include=participated");
    let (_, mine) = server.get(&path, Some(&carol_token)).await;
    assert_eq!(mine["chunk"], json!([]), "{mine}");
    let (_, theirs) = server.get(&path, Some(&bob_token)).await;
    assert_eq!(ids(&theirs), vec![root.clone()]);
    let served = event(&server, &carol_token, &room, &root).await;
    let thread = &served["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["current_user_participated"], false, "{served}");

    // Redacting the latest edit falls back to the one before; a redacted reply no longer
    // counts.
    for redacted in [&second, &replies[2]] {
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/redact/{redacted}/{}",
            rand_suffix()
        );
        let token = if *redacted == second {
            &alice_token
        } else {
            &bob_token
        };
        let (status, _) = server.put(&path, Some(token), json!({})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let served = event(&server, &alice_token, &room, &root).await;
    let bundled = &served["unsigned"]["m.relations"];
    assert_eq!(bundled["m.replace"]["event_id"], first, "{served}");
    assert_eq!(bundled["m.thread"]["count"], 2);
    assert_eq!(bundled["m.thread"]["latest_event"]["event_id"], replies[1]);

    // The same bundle in /messages, /context and /sync.
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    let (_, page) = server.get(&path, Some(&alice_token)).await;
    let in_page = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == root);
    assert_eq!(
        ageless(&in_page.unwrap()["unsigned"]["m.relations"]),
        ageless(bundled)
    );
    let path = format!("/_matrix/client/v3/rooms/{room}/context/{root}?limit=2");
    let (_, context) = server.get(&path, Some(&alice_token)).await;
    assert_eq!(
        ageless(&context["event"]["unsigned"]["m.relations"]),
        ageless(bundled)
    );
    let filter = json!({ "room": { "timeline": { "limit": 50 } } }).to_string();
    let path = format!("/_matrix/client/v3/sync?filter={}", urlencode(&filter));
    let (_, sync) = server.get(&path, Some(&alice_token)).await;
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    let in_sync = timeline
        .iter()
        .find(|e| e["event_id"] == root)
        .expect("root in sync");
    assert_eq!(
        ageless(&in_sync["unsigned"]["m.relations"]),
        ageless(bundled)
    );

    // Bad input.
    let unknown = format!("/_matrix/client/v1/rooms/{room}/relations/$nothing");
    assert_error(
        &server.get(&unknown, Some(&alice_token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let bad = format!("/_matrix/client/v1/rooms/{room}/relations/{root}?from=garbage");
    assert_error(
        &server.get(&bad, Some(&alice_token)).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (_, dave_token) = server.user("dave").await;
    let outsider = format!("/_matrix/client/v1/rooms/{room}/relations/{root}");
    assert_error(
        &server.get(&outsider, Some(&dave_token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let outsider = format!("/_matrix/client/v1/rooms/{room}/threads");
    assert_error(
        &server.get(&outsider, Some(&dave_token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

/// Clients that count threads apart (`unread_thread_notifications`) get the main timeline's
/// unread count and each thread's, and a receipt reads its own thread only.
#[tokio::test]
async fn threads_have_their_own_unread_counts_and_receipts() {
    let server = Server::start(&[]);
    let (_, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let root = send(&server, &alice_token, &room, "m.room.message", text("root")).await;
    let t1 = send(
        &server,
        &alice_token,
        &room,
        "m.room.message",
        reply_in_thread(&root, "t1"),
    )
    .await;
    let t2 = send(
        &server,
        &alice_token,
        &room,
        "m.room.message",
        reply_in_thread(&root, "t2"),
    )
    .await;
    let m1 = send(&server, &alice_token, &room, "m.room.message", text("m1")).await;

    let counts = |threads: bool| {
        let filter = json!({ "room": { "timeline": { "unread_thread_notifications": threads } } });
        let filter = urlencode(&filter.to_string());
        let (server, token, room, root) = (&server, &bob_token, &room, &root);
        async move {
            let (_, sync) = server
                .get(
                    &format!("/_matrix/client/v3/sync?filter={filter}"),
                    Some(token),
                )
                .await;
            let joined = &sync["rooms"]["join"][room];
            let main = joined["unread_notifications"]["notification_count"]
                .as_u64()
                .unwrap_or(0);
            let thread = joined["unread_thread_notifications"][root]["notification_count"]
                .as_u64()
                .unwrap_or(0);
            (main, thread)
        }
    };
    assert_eq!(counts(true).await, (2, 2));
    assert_eq!(counts(false).await.0, 4);
    let receipt = |event: &str, thread: Option<&str>| {
        let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}");
        let body = match thread {
            Some(thread) => json!({ "thread_id": thread }),
            None => json!({}),
        };
        let (server, token) = (&server, &bob_token);
        async move {
            let (status, answer) = server.post(&path, Some(token), body).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    };
    receipt(&t1, Some(&root)).await;
    assert_eq!(counts(true).await, (2, 1));
    receipt(&m1, Some("main")).await;
    assert_eq!(counts(true).await, (0, 1));
    receipt(&t2, None).await;
    assert_eq!(counts(true).await, (0, 0));
    assert_eq!(counts(false).await.0, 0);
}
