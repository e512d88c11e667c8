//! The public room directory: rooms made public or published by their admins, listed with
//! what a room list shows, searched and paged; the same asked of another server.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk in {page}"))
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn public_rooms_are_listed_searched_paged_and_published_by_admins() {
    let server = Server::start(&[]);
    let (_, token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let public = json!({
        "visibility": "public", "preset": "public_chat", "name": "Rustaceans",
        "topic": "All about Rust", "room_alias_name": "rust",
    });
    let rust = server.create_room(&token, public).await;
    let private = server
        .create_room(&token, json!({ "name": "Secret plans" }))
        .await;

    // Anyone may read the directory, signed in or not.
    let (status, page) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(room_ids(&page), vec![rust.clone()]);
    let entry = &page["chunk"][0];
    assert_eq!(entry["name"], "Rustaceans");
    assert_eq!(entry["topic"], "All about Rust");
    assert_eq!(entry["join_rule"], "public");
    assert_eq!(entry["num_joined_members"], 1);
    assert_eq!(entry["world_readable"], false);
    assert_eq!(page["total_room_count_estimate"], 1);

    // Publishing: the room's admin may, a member without power may not.
    let list = format!("/_matrix/client/v3/directory/list/room/{private}");
    let (_, visibility) = server.get(&list, None).await;
    assert_eq!(visibility["visibility"], "private");
    let invite = format!("/_matrix/client/v3/rooms/{private}/invite");
    server
        .post(&invite, Some(&token), json!({ "user_id": bob }))
        .await;
    let join = format!("/_matrix/client/v3/rooms/{private}/join");
    server.post(&join, Some(&bob_token), json!({})).await;
    let refused = server
        .put(&list, Some(&bob_token), json!({ "visibility": "public" }))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .put(&list, Some(&token), json!({ "visibility": "public" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, visibility) = server.get(&list, None).await;
    assert_eq!(visibility["visibility"], "public");

    // Biggest first, searched, paged.
    let (_, page) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(room_ids(&page), vec![private.clone(), rust.clone()]);
    let search = json!({ "filter": { "generic_search_term": "rust" } });
    let (status, found) = server
        .post("/_matrix/client/v3/publicRooms", Some(&token), search)
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(room_ids(&found), vec![rust.clone()]);
    let (_, first) = server
        .get("/_matrix/client/v3/publicRooms?limit=1", None)
        .await;
    assert_eq!(room_ids(&first), vec![private.clone()]);
    let next = first["next_batch"].as_str().expect("a next page");
    let path = format!("/_matrix/client/v3/publicRooms?limit=1&since={next}");
    let (_, second) = server.get(&path, None).await;
    assert_eq!(room_ids(&second), vec![rust.clone()]);
    assert!(second.get("next_batch").is_none(), "{second}");

    // Unpublishing takes it out; bad input.
    let (status, _) = server
        .put(&list, Some(&token), json!({ "visibility": "private" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(room_ids(&page), vec![rust.clone()]);
    let bad = server
        .get("/_matrix/client/v3/publicRooms?since=nonsense", None)
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let unknown = "/_matrix/client/v3/directory/list/room/!nothing:kith.test";
    assert_error(
        &server.get(unknown, None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let anonymous = server
        .request(
            Method::POST,
            "/_matrix/client/v3/publicRooms",
            None,
            Some(json!({})),
        )
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn another_servers_directory_is_asked_over_federation() {
    let (a, a_name) = Server::federated(&[]);
    let (b, _) = Server::federated(&[]);
    let (_, alice_token) = a.user("alice").await;
    let (_, bob_token) = b.user("bob").await;
    let public = json!({ "visibility": "public", "preset": "public_chat", "name": "On A" });
    let room = a.create_room(&alice_token, public).await;
    let path = format!("/_matrix/client/v3/publicRooms?server={a_name}");
    // Only signed in (POST) does a server ask another's.
    assert_error(
        &b.get(&path, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let (status, page) = b.post(&path, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(room_ids(&page), vec![room.clone()]);
    assert_eq!(page["chunk"][0]["name"], "On A");
    let search = json!({ "filter": { "generic_search_term": "nothing like it" } });
    let (_, none) = b.post(&path, Some(&bob_token), search).await;
    assert_eq!(room_ids(&none), Vec::<String>::new());
    // Bob joins it from the listing.
    let join = format!("/_matrix/client/v3/join/{room}?server_name={a_name}");
    let (status, joined) = b.post(&join, Some(&bob_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
}
