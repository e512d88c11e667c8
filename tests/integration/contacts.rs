//! Contacts: friend requests and friendships, what both users see live, the friendship
//! policy in its three modes, search, and bad input.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{POLICY, Server, assert_error};

const API: &str = "/_matrix/client/unstable/org.kith.contacts/v1";

fn contacts_data(sync: &Value) -> Option<&Value> {
    sync["account_data"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["type"] == "org.kith.contacts")
        .map(|e| &e["content"])
}

async fn ask(
    server: &Server,
    token: &str,
    user: &str,
    message: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({ "user_id": user });
    if let Some(message) = message {
        body["message"] = message.into();
    }
    server
        .post(&format!("{API}/requests"), Some(token), body)
        .await
}

async fn create_dm(server: &Server, token: &str, invitee: &str) -> (StatusCode, Value) {
    let body = json!({ "is_direct": true, "invite": [invitee], "preset": "trusted_private_chat" });
    server
        .post("/_matrix/client/v3/createRoom", Some(token), body)
        .await
}

#[tokio::test]
async fn strangers_become_friends_then_chat_and_unfriending_ends_it() {
    let server = Server::start(&[(POLICY, "dm_only")]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (_, carol_token) = server.user("carol").await;
    let (_, caps) = server
        .get("/_matrix/client/v3/capabilities", Some(&alice_token))
        .await;
    assert_eq!(
        caps["capabilities"]["org.kith.contacts"],
        json!({ "enabled": true, "dm_requires_friendship": "dm_only" })
    );
    let bob_since = server.sync(&bob_token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Alice finds Bob, but may not open a direct chat with a stranger; nothing is created.
    let (status, found) = server
        .post(
            &format!("{API}/search"),
            Some(&alice_token),
            json!({ "search_term": "bo" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["results"][0]["user_id"], bob.as_str());
    assert_eq!(found["results"][0]["relationship"], "none");
    assert_eq!(found["limited"], false);
    let result = create_dm(&server, &alice_token, &bob).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_INVITE_BLOCKED");
    let (_, rooms) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&alice_token))
        .await;
    assert_eq!(rooms["joined_rooms"], json!([]));

    // A request with a message; Bob's client sees it arrive in its sync.
    let (status, sent) = ask(&server, &alice_token, &bob, Some("hi, it's Alice")).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["state"], "pending");
    let request_id = sent["request_id"].as_str().unwrap().to_owned();
    let live = server.sync(&bob_token, Some(&bob_since), 5000).await;
    let view = contacts_data(&live).expect("org.kith.contacts in Bob's sync");
    assert_eq!(view["incoming"][0]["user_id"], alice.as_str());
    assert_eq!(view["incoming"][0]["message"], "hi, it's Alice");
    assert_eq!(view["incoming"][0]["request_id"], request_id.as_str());
    let (_, listed) = server
        .get(&format!("{API}/requests?dir=outgoing"), Some(&alice_token))
        .await;
    assert_eq!(listed["requests"][0]["user_id"], bob.as_str());
    assert_eq!(listed["requests"][0]["dir"], "outgoing");
    let result = ask(&server, &alice_token, &bob, None).await;
    assert_error(
        &result,
        StatusCode::CONFLICT,
        "ORG.KITH.CONTACTS_REQUEST_EXISTS",
    );

    // Only Bob may accept; then they are friends, both views say so.
    let accept = format!("{API}/requests/{request_id}/accept");
    let result = server.post(&accept, Some(&carol_token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server.post(&accept, Some(&alice_token), json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let result = server
        .post(
            &format!("{API}/requests/nope/accept"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, accepted) = server
        .request(Method::POST, &accept, Some(&bob_token), None)
        .await;
    assert_eq!(
        (status, accepted),
        (StatusCode::OK, json!({ "state": "accepted" }))
    );
    let (_, friends) = server
        .get(&format!("{API}/friends"), Some(&alice_token))
        .await;
    assert_eq!(friends["friends"][0]["user_id"], bob.as_str());
    assert!(friends["friends"][0]["since_ts"].is_u64());
    let alice_view = server.sync(&alice_token, None, 0).await;
    let view = contacts_data(&alice_view).unwrap();
    assert_eq!(view["friends"][0]["user_id"], bob.as_str());
    assert_eq!(view["outgoing"], json!([]));
    let result = ask(&server, &bob_token, &alice, None).await;
    assert_error(
        &result,
        StatusCode::CONFLICT,
        "ORG.KITH.CONTACTS_ALREADY_FRIENDS",
    );
    let (_, found) = server
        .post(
            &format!("{API}/search"),
            Some(&alice_token),
            json!({ "search_term": "bob" }),
        )
        .await;
    assert_eq!(found["results"][0]["relationship"], "friend");

    // Friends chat.
    let (status, created) = create_dm(&server, &alice_token, &bob).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let room = created["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    assert_eq!(
        server.post(&join, Some(&bob_token), json!({})).await.0,
        StatusCode::OK
    );
    server.say(&bob_token, &room, "hello friend").await;

    // Unfriended: no more sends into their direct chat, no new one.
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{API}/friends/{alice}"),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let send = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/after");
    let text = json!({ "msgtype": "m.text", "body": "still there?" });
    let result = server.put(&send, Some(&alice_token), text).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let topic = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
    let result = server
        .put(&topic, Some(&alice_token), json!({ "topic": "psst" }))
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &create_dm(&server, &alice_token, &bob).await,
        StatusCode::FORBIDDEN,
        "M_INVITE_BLOCKED",
    );
    let result = server
        .request(
            Method::DELETE,
            &format!("{API}/friends/{alice}"),
            Some(&bob_token),
            None,
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let view = contacts_data(&server.sync(&alice_token, None, 0).await)
        .unwrap()
        .clone();
    assert_eq!(view["friends"], json!([]));

    // Clients may not write the server's account data.
    let path = format!("/_matrix/client/v3/user/{alice}/account_data/org.kith.contacts");
    let result = server
        .put(&path, Some(&alice_token), json!({ "friends": [] }))
        .await;
    assert_error(&result, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
}

#[tokio::test]
async fn declines_cancels_ignores_and_bad_input() {
    let server = Server::start(&[(POLICY, "dm_only")]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (carol, carol_token) = server.user("carol").await;

    // Declined and cancelled requests are gone for both.
    let (_, sent) = ask(&server, &alice_token, &bob, None).await;
    let id = sent["request_id"].as_str().unwrap();
    let result = server
        .post(
            &format!("{API}/requests/{id}/decline"),
            Some(&alice_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, declined) = server
        .post(
            &format!("{API}/requests/{id}/decline"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, declined),
        (StatusCode::OK, json!({ "state": "declined" }))
    );
    let (_, sent) = ask(&server, &alice_token, &carol, None).await;
    let id = sent["request_id"].as_str().unwrap();
    let cancel = format!("{API}/requests/{id}");
    let result = server
        .request(Method::DELETE, &cancel, Some(&carol_token), None)
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .request(Method::DELETE, &cancel, Some(&alice_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&alice_token, &bob_token, &carol_token] {
        let (_, all) = server.get(&format!("{API}/requests"), Some(token)).await;
        assert_eq!(all["requests"], json!([]));
    }

    // Carol ignores Dave: his request looks pending to him and never reaches her.
    let (dave, dave_token) = server.user("dave").await;
    let ignore = json!({ "ignored_users": { dave.clone(): {} } });
    let path = format!("/_matrix/client/v3/user/{carol}/account_data/m.ignored_user_list");
    assert_eq!(
        server.put(&path, Some(&carol_token), ignore).await.0,
        StatusCode::OK
    );
    let (status, sent) = ask(&server, &dave_token, &carol, Some("please")).await;
    assert_eq!(
        (status, &sent["state"]),
        (StatusCode::OK, &json!("pending"))
    );
    let (_, theirs) = server
        .get(&format!("{API}/requests?dir=incoming"), Some(&carol_token))
        .await;
    assert_eq!(theirs["requests"], json!([]));
    let (_, his) = server
        .get(&format!("{API}/requests?dir=outgoing"), Some(&dave_token))
        .await;
    assert_eq!(his["requests"][0]["user_id"], carol.as_str());
    let hidden = sent["request_id"].as_str().unwrap();
    let result = server
        .post(
            &format!("{API}/requests/{hidden}/accept"),
            Some(&carol_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let view = server.sync(&carol_token, None, 0).await;
    assert!(
        contacts_data(&view).is_none_or(|v| v["incoming"] == json!([])),
        "{view}"
    );

    // Bad input, none of which changes anything.
    let result = ask(&server, &alice_token, &alice, None).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = ask(&server, &alice_token, "not a user id", None).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = ask(&server, &alice_token, "@nobody:kith.test", None).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let long = "x".repeat(1001);
    let result = ask(&server, &alice_token, &bob, Some(&long)).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server
        .post(
            &format!("{API}/requests"),
            Some(&alice_token),
            json!({ "user_id": 5 }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .raw(
            Method::POST,
            &format!("{API}/requests"),
            Some(&alice_token),
            b"{".to_vec(),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    let result = server
        .get(&format!("{API}/requests?dir=sideways"), Some(&alice_token))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server.get(&format!("{API}/friends"), None).await;
    assert_error(&result, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let (_, outgoing) = server
        .get(&format!("{API}/requests"), Some(&alice_token))
        .await;
    assert_eq!(outgoing["requests"], json!([]));
}

#[tokio::test]
async fn mutual_requests_at_once_make_one_friendship() {
    let server = Server::start(&[]);
    let mut pairs = Vec::new();
    for i in 0..6 {
        pairs.push((
            server.user(&format!("a{i}")).await,
            server.user(&format!("b{i}")).await,
        ));
    }
    let mut tasks = Vec::new();
    for ((a, a_token), (b, b_token)) in &pairs {
        for (token, target) in [(a_token.clone(), b.clone()), (b_token.clone(), a.clone())] {
            let (http, base) = (server.http.clone(), server.base.clone());
            tasks.push(tokio::spawn(async move {
                let response = http
                    .post(format!("{base}{API}/requests"))
                    .bearer_auth(token)
                    .json(&json!({ "user_id": target }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            }));
        }
    }
    let mut states = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        states.push(body["state"].as_str().unwrap().to_owned());
    }
    // Per pair, one request went out and the other accepted it.
    assert_eq!(
        states.iter().filter(|s| *s == "accepted").count(),
        pairs.len()
    );
    for ((a, a_token), (b, _)) in &pairs {
        let (_, friends) = server.get(&format!("{API}/friends"), Some(a_token)).await;
        assert_eq!(
            friends["friends"],
            json!([{ "user_id": b, "since_ts": friends["friends"][0]["since_ts"] }]),
            "{a}"
        );
        let (_, open) = server.get(&format!("{API}/requests"), Some(a_token)).await;
        assert_eq!(open["requests"], json!([]));
    }
}

#[tokio::test]
async fn the_policy_in_its_three_modes() {
    for mode in ["off", "dm_only", "all_invites"] {
        let server = Server::start(&[(POLICY, mode)]);
        let (_, alice_token) = server.user("alice").await;
        let (bob, _) = server.user("bob").await;
        let (carol, _) = server.user("carol").await;
        let dm = create_dm(&server, &alice_token, &bob).await;
        let group = server
            .post(
                "/_matrix/client/v3/createRoom",
                Some(&alice_token),
                json!({ "invite": [bob, carol], "name": "group" }),
            )
            .await;
        let (_, empty) = server
            .post(
                "/_matrix/client/v3/createRoom",
                Some(&alice_token),
                json!({}),
            )
            .await;
        let room = empty["room_id"].as_str().unwrap();
        let invite = server
            .post(
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                Some(&alice_token),
                json!({ "user_id": bob }),
            )
            .await;
        let outcome = |r: &(StatusCode, Value)| r.0 == StatusCode::OK;
        let expected = match mode {
            "off" => [true, true, true],
            // A group chat is fine; a direct one (or an invite making a room of two) is not.
            "dm_only" => [false, true, false],
            _ => [false, false, false],
        };
        assert_eq!(
            [outcome(&dm), outcome(&group), outcome(&invite)],
            expected,
            "{mode}: {dm:?} {group:?} {invite:?}"
        );
        for blocked in [&dm, &group, &invite].into_iter().filter(|r| !outcome(r)) {
            assert_error(blocked, StatusCode::FORBIDDEN, "M_INVITE_BLOCKED");
        }
        if mode == "off" {
            continue;
        }
        // No way around it: an invitee named twice is one, a made-up one is refused.
        let twice = json!({ "invite": [bob, bob] });
        let result = server
            .post("/_matrix/client/v3/createRoom", Some(&alice_token), twice)
            .await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_INVITE_BLOCKED");
        let ghost = json!({ "invite": [bob, "@ghost:kith.test"] });
        let result = server
            .post("/_matrix/client/v3/createRoom", Some(&alice_token), ghost)
            .await;
        assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
}

/// Two strangers who meet in a public room may talk there: only direct chats need
/// friendship.
#[tokio::test]
async fn strangers_talk_in_a_public_room_of_two() {
    let server = Server::start(&[(POLICY, "dm_only")]);
    let (_, alice_token) = server.user("alice").await;
    let (_, bob_token) = server.user("bob").await;
    let (_, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            json!({ "preset": "public_chat", "invite": [] }),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    assert_eq!(
        server.post(&join, Some(&bob_token), json!({})).await.0,
        StatusCode::OK
    );
    server.say(&bob_token, &room, "hello stranger").await;
    server.say(&alice_token, &room, "hello to you").await;
}

#[tokio::test]
async fn requests_are_rate_limited_and_search_ranks_and_folds_accents() {
    let server = Server::start(&[
        ("KITH_CONTACTS__REQUEST_BURST", "2"),
        ("KITH_CONTACTS__REQUESTS_PER_MINUTE", "0"),
    ]);
    let (_, me) = server.user("searcher").await;
    let (zoe, zoe_token) = server.user("zoe.b").await;
    let (alicia, _) = server.user("alicia").await;
    let (ali, ali_token) = server.user("ali").await;
    let (alina, _) = server.user("x7").await;
    let name = format!("/_matrix/client/v3/profile/{zoe}/displayname");
    server
        .put(
            &name,
            Some(&zoe_token),
            json!({ "displayname": "Zoë Ärger" }),
        )
        .await;
    let name = format!("/_matrix/client/v3/profile/{alina}/displayname");
    let (_, alina_token) = server.login("x7", crate::common::PASSWORD, json!({})).await;
    let alina_token = alina_token["access_token"].as_str().unwrap().to_owned();
    server
        .put(
            &name,
            Some(&alina_token),
            json!({ "displayname": "Alina Ali" }),
        )
        .await;

    let search = |term: &str| {
        let body = json!({ "search_term": term, "limit": 10 });
        let (server, me) = (&server, me.clone());
        async move {
            server
                .post(&format!("{API}/search"), Some(&me), body)
                .await
                .1
        }
    };
    let users = |found: &Value| -> Vec<String> {
        found["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Accents and case fold; words of the display name count.
    assert_eq!(users(&search("ZOE arg").await), [zoe.as_str()]);
    assert_eq!(users(&search("zoë").await), [zoe.as_str()]);
    // A whole-word match ranks before a prefix; then friends before strangers.
    assert_eq!(
        users(&search("ali").await),
        [ali.clone(), alina.clone(), alicia.clone()]
    );
    assert_eq!(
        ask(&server, &ali_token, "@searcher:kith.test", None)
            .await
            .0,
        StatusCode::OK
    );
    let (_, sent) = ask(&server, &me, &alicia, None).await;
    assert_eq!(sent["state"], "pending");
    let found = search("ali").await;
    assert_eq!(found["results"][0]["relationship"], "incoming");
    assert_eq!(found["results"][2]["relationship"], "outgoing");
    assert!(users(&search("nobody").await).is_empty());
    // A full user ID, pasted, finds its user.
    assert_eq!(users(&search(&alicia).await), [alicia.as_str()]);

    // The directory search says the same, under its own key.
    let (status, dir) = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            Some(&me),
            json!({ "search_term": "alicia" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dir["results"][0]["user_id"], alicia.as_str());
    assert_eq!(
        dir["results"][0]["org.kith.contacts.relationship"],
        "outgoing"
    );
    assert_eq!(dir["results"][0]["display_name"], "alicia");

    // Two requests in the burst, then 429 (not counted: the errors before it).
    let (_, sent) = ask(&server, &me, &zoe, None).await;
    assert_eq!(sent["state"], "pending");
    let result = ask(&server, &me, &alina, None).await;
    assert_error(&result, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
}

/// A deactivated account leaves nobody's contacts with anything to act on.
#[tokio::test]
async fn deactivation_ends_friendships_and_requests() {
    let server = Server::start(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (_, bob_token) = server.user("bob").await;
    let (erin, erin_token) = server.user("erin").await;
    let (status, sent) = ask(&server, &erin_token, &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    let pending = sent["request_id"].as_str().unwrap().to_owned();
    let (_, asked) = ask(&server, &bob_token, &erin, None).await;
    let id = asked["request_id"].as_str().unwrap();
    let accept = format!("{API}/requests/{id}/accept");
    assert_eq!(
        server.post(&accept, Some(&erin_token), json!({})).await.0,
        StatusCode::OK
    );

    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "erin" }, "password": crate::common::PASSWORD });
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&erin_token),
            json!({ "auth": auth }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, incoming) = server
        .get(&format!("{API}/requests"), Some(&alice_token))
        .await;
    assert_eq!(incoming["requests"], json!([]));
    let result = server
        .post(
            &format!("{API}/requests/{pending}/accept"),
            Some(&alice_token),
            json!({}),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, friends) = server
        .get(&format!("{API}/friends"), Some(&bob_token))
        .await;
    assert_eq!(friends["friends"], json!([]));
    let view = server.sync(&bob_token, None, 0).await;
    assert_eq!(contacts_data(&view).unwrap()["friends"], json!([]));
}
