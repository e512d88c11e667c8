//! Server-side search (`POST /search`): words of messages, names and topics in the user's
//! rooms, ranked or newest first, with context, profiles, groups and paging.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error, rand_suffix};

async fn search(server: &Server, token: &str, criteria: Value) -> Value {
    search_from(server, token, criteria, None).await
}

async fn search_from(server: &Server, token: &str, criteria: Value, next: Option<&str>) -> Value {
    let path = match next {
        Some(next) => format!("/_matrix/client/v3/search?next_batch={next}"),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    let body = json!({ "search_categories": { "room_events": criteria } });
    let (status, found) = server.post(&path, Some(token), body).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    found["search_categories"]["room_events"].clone()
}

fn bodies(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let content = &r["result"]["content"];
            let text = content["body"].as_str().or(content["name"].as_str());
            text.unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn messages_are_found_by_their_words_in_ones_own_rooms() {
    let server = Server::start(&[]);
    let (alice, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let (_, carol_token) = server.user("carol").await;
    let room = server.shared_room(&token, (&bob, &bob_token)).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/");
    server
        .put(&path, Some(&token), json!({ "name": "Animals" }))
        .await;
    let fox = server.say(&token, &room, "The quick brown fox").await;
    server.say(&bob_token, &room, "A lazy dog sleeps").await;
    let thinking = server
        .say(&bob_token, &room, "quick quick quick thinking")
        .await;
    server.say(&token, &room, "Zoë's café").await;
    let gone = server.say(&token, &room, "quick note to delete").await;
    let redact = format!(
        "/_matrix/client/v3/rooms/{room}/redact/{gone}/{}",
        rand_suffix()
    );
    let (status, _) = server.put(&redact, Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // Someone else's room stays theirs.
    let elsewhere = server.shared_room(&carol_token, (&bob, &bob_token)).await;
    server.say(&carol_token, &elsewhere, "quick secret").await;

    // By rank (the most occurrences first), and newest first.
    let found = search(&server, &token, json!({ "search_term": "quick" })).await;
    assert_eq!(
        bodies(&found),
        ["quick quick quick thinking", "The quick brown fox"]
    );
    assert_eq!(found["count"], 2);
    assert_eq!(found["highlights"], json!(["quick"]));
    let recent = search(
        &server,
        &token,
        json!({ "search_term": "QUICK", "order_by": "recent" }),
    )
    .await;
    assert_eq!(
        bodies(&recent),
        ["quick quick quick thinking", "The quick brown fox"]
    );
    let (_, fox_event) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{fox}"),
            Some(&token),
        )
        .await;
    assert_eq!(
        recent["results"][1]["result"]["event_id"],
        fox_event["event_id"]
    );
    // Every word must be there; accents and case do not matter.
    let both = search(&server, &token, json!({ "search_term": "fox quick" })).await;
    assert_eq!(bodies(&both), ["The quick brown fox"]);
    let cafe = search(&server, &token, json!({ "search_term": "CAFE zoe" })).await;
    assert_eq!(bodies(&cafe), ["Zoë's café"]);
    let named = json!({ "search_term": "animals", "keys": ["content.name"] });
    assert_eq!(bodies(&search(&server, &token, named).await), ["Animals"]);
    let bodies_only = json!({ "search_term": "animals", "keys": ["content.body"] });
    assert_eq!(search(&server, &token, bodies_only).await["count"], 0);
    let bob_sees = search(&server, &bob_token, json!({ "search_term": "quick" })).await;
    assert_eq!(bob_sees["count"], 3, "{bob_sees}");

    // Context, profiles, groups, state.
    let asked = json!({
        "search_term": "thinking",
        "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
        "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        "include_state": true,
    });
    let found = search(&server, &token, asked).await;
    let context = &found["results"][0]["context"];
    assert_eq!(
        context["events_before"][0]["content"]["body"], "A lazy dog sleeps",
        "{found}"
    );
    assert_eq!(context["events_after"][0]["content"]["body"], "Zoë's café");
    assert_eq!(
        context["profile_info"][&bob]["displayname"], "bob",
        "{context}"
    );
    assert_eq!(context["profile_info"][&alice]["displayname"], "alice");
    assert_eq!(found["groups"]["room_id"][&room]["results"][0], thinking);
    assert_eq!(found["groups"]["sender"][&bob]["results"][0], thinking);
    assert!(
        found["state"][&room]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{found}"
    );

    // Paging, a room filter, and bad input.
    let first = search(
        &server,
        &token,
        json!({ "search_term": "quick", "filter": { "limit": 1 } }),
    )
    .await;
    assert_eq!(bodies(&first), ["quick quick quick thinking"]);
    let next = first["next_batch"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = search_from(
        &server,
        &token,
        json!({ "search_term": "quick", "filter": { "limit": 1 } }),
        Some(&next),
    )
    .await;
    assert_eq!(bodies(&second), ["The quick brown fox"]);
    assert!(second.get("next_batch").is_none(), "{second}");
    let none = json!({ "search_term": "quick", "filter": { "rooms": [elsewhere] } });
    assert_eq!(search(&server, &token, none).await["count"], 0);
    let empty = json!({ "search_categories": { "room_events": { "search_term": " !? " } } });
    let refused = server
        .post("/_matrix/client/v3/search", Some(&token), empty)
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let bad = json!({ "search_categories": { "room_events": { "search_term": "quick" } } });
    let refused = server
        .post(
            "/_matrix/client/v3/search?next_batch=x",
            Some(&token),
            bad.clone(),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let anonymous = server
        .request(Method::POST, "/_matrix/client/v3/search", None, Some(bad))
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}
