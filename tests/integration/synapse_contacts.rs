//! kith and Synapse with contacts: direct chats under `dm_only` (a Synapse user's invite
//! held as a friend request) and under `request` (direct-chat invites are friend requests
//! both ways). Skipped, and saying so, without `KITH_SYNAPSE_PYTHON`.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::Server;
use crate::synapse::{Side, Synapse, chat, has_message};

/// Under `dm_only`: a kith user may invite a Synapse user into a direct chat (Synapse
/// users cannot ask to be friends; the invite is the kith user's own consent), and a
/// Synapse user's direct-chat invite reaches the kith user as a friend request, the invite
/// shown only once it is accepted.
#[tokio::test]
async fn kith_and_synapse_users_start_direct_chats_under_dm_only() {
    use crate::federation::{CONTACTS, contacts_view, lists};
    let (kith, kith_name) = Server::federated(&[(crate::common::POLICY, "dm_only")]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (alice, alice_token) = kith.user("alice").await;
    let (bob, bob_token) = synapse.user("bob").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    chat((&k, &alice_token, &alice), (&s, &bob_token, &bob)).await;

    let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [alice] });
    let (status, created) = s
        .request(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            &bob_token,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", synapse.log());
    let room = created["room_id"].as_str().unwrap().to_owned();
    let asked = k
        .sync_until(&alice_token, "the friend request", |s| {
            contacts_view(s).is_some_and(|v| lists(&v, "incoming", &bob))
        })
        .await;
    assert!(asked["rooms"]["invite"].get(&room).is_none(), "{asked}");
    let (_, requests) = kith
        .get(
            &format!("{CONTACTS}/requests?dir=incoming"),
            Some(&alice_token),
        )
        .await;
    let request_id = requests["requests"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{CONTACTS}/requests/{request_id}/accept");
    let (status, accepted) = kith.post(&path, Some(&alice_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    k.sync_until(&alice_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    k.join(&alice_token, &room).await;
    s.say(&bob_token, &room, "glad you accepted").await;
    k.sync_until(&alice_token, "bob's message", |s| {
        has_message(s, &room, "glad you accepted")
    })
    .await;
}

/// Under `request` (the default): a Synapse user's direct-chat invite reaches the kith
/// user at once and is a friend request, which joining accepts; a kith user's invites to
/// Synapse users are requests the kith side answers from their joining (friends) or
/// rejecting (declined).
#[tokio::test]
async fn kith_and_synapse_users_befriend_by_direct_chat_invites() {
    use crate::dm_requests::{friends, requests};
    let (kith, kith_name) = Server::federated(&[(crate::common::POLICY, "request")]);
    let Some(synapse) = Synapse::start(&[&kith_name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: skipping the Synapse federation test");
        return;
    };
    let (alice, alice_token) = kith.user("alice").await;
    let (bob, bob_token) = synapse.user("bob").await;
    let (carol, carol_token) = synapse.user("carol").await;
    let (dave, dave_token) = synapse.user("dave").await;
    let (k, s) = (Side::Kith(&kith), Side::Synapse(&synapse));
    let direct = |invitee: &str| json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [invitee] });
    let create = |side: &'static str, token: String, body: Value| {
        let side = match side {
            "kith" => &k,
            _ => &s,
        };
        async move {
            let path = "/_matrix/client/v3/createRoom";
            let (status, created) = side.request(Method::POST, path, &token, Some(body)).await;
            assert_eq!(status, StatusCode::OK, "{created}\nlog:\n{}", side.log());
            created["room_id"].as_str().unwrap().to_owned()
        }
    };

    // Synapse → kith: an ordinary invite, shown at once, and an incoming request.
    let room = create("synapse", bob_token.clone(), direct(&alice)).await;
    k.sync_until(&alice_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    let incoming = requests(&kith, &alice_token).await;
    assert_eq!(incoming.len(), 1, "{incoming:?}");
    assert_eq!(incoming[0]["user_id"], bob);
    assert_eq!(incoming[0]["dm_room_id"], room);
    k.join(&alice_token, &room).await;
    let friends_now = friends(&kith, &alice_token).await;
    assert_eq!(friends_now[0]["user_id"], bob, "{friends_now:?}");
    assert_eq!(friends_now[0]["dm_room_id"], room);
    s.say(&bob_token, &room, "friends now").await;
    k.sync_until(&alice_token, "bob's message", |s| {
        has_message(s, &room, "friends now")
    })
    .await;

    // kith → Synapse: a request kith answers from the Synapse user's join...
    let room = create("kith", alice_token.clone(), direct(&carol)).await;
    let outgoing = requests(&kith, &alice_token).await;
    assert_eq!(outgoing[0]["user_id"], carol, "{outgoing:?}");
    assert_eq!(outgoing[0]["dm_room_id"], room);
    s.sync_until(&carol_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    s.join(&carol_token, &room).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !friends(&kith, &alice_token)
        .await
        .iter()
        .any(|f| f["user_id"] == carol)
    {
        assert!(
            Instant::now() < deadline,
            "carol's join not seen:\n{}",
            kith.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(requests(&kith, &alice_token).await.is_empty());

    // ...or from their rejecting it.
    let room = create("kith", alice_token.clone(), direct(&dave)).await;
    s.sync_until(&dave_token, "the invite", |s| {
        s["rooms"]["invite"][&room].is_object()
    })
    .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/leave");
    let (status, left) = s
        .request(Method::POST, &path, &dave_token, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{left}\nlog:\n{}", synapse.log());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !requests(&kith, &alice_token).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "dave's rejection not seen:\n{}",
            kith.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let friends_now = friends(&kith, &alice_token).await;
    assert!(
        !friends_now.iter().any(|f| f["user_id"] == dave),
        "{friends_now:?}"
    );
}
