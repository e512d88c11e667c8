//! Profiles: read by anyone signed in, written by their owner; a new name reaches every
//! room the user is in as a new member event.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Server, assert_error};

#[tokio::test]
async fn profiles_are_written_by_their_owner_and_reach_their_rooms() {
    let server = Server::start(&[]);
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let room = server.shared_room(&alice_token, (&bob, &bob_token)).await;
    let since = server.sync(&bob_token, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // New users have their localpart as display name.
    let name_path = format!("/_matrix/client/v3/profile/{alice}/displayname");
    let (status, name) = server.get(&name_path, Some(&bob_token)).await;
    assert_eq!(
        (status, name),
        (StatusCode::OK, json!({ "displayname": "alice" }))
    );

    let (status, _) = server
        .put(
            &name_path,
            Some(&alice_token),
            json!({ "displayname": "Alice Liddell" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let avatar_path = format!("/_matrix/client/v3/profile/{alice}/avatar_url");
    let avatar = json!({ "avatar_url": "mxc://kith.test/abc" });
    let (status, _) = server.put(&avatar_path, Some(&alice_token), avatar).await;
    assert_eq!(status, StatusCode::OK);
    let tz = json!({ "m.tz": "Europe/London" });
    let tz_path = format!("/_matrix/client/v3/profile/{alice}/m.tz");
    let (status, _) = server.put(&tz_path, Some(&alice_token), tz).await;
    assert_eq!(status, StatusCode::OK);
    let (status, whole) = server
        .get(
            &format!("/_matrix/client/v3/profile/{alice}"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        whole,
        json!({ "displayname": "Alice Liddell", "avatar_url": "mxc://kith.test/abc", "m.tz": "Europe/London" })
    );

    // Bob sees the new name and avatar in the room they share, as a member event.
    let update = server.sync(&bob_token, Some(&since), 5000).await;
    let events = update["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let last = events
        .iter()
        .rev()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.as_str())
        .expect("Alice's new member event");
    assert_eq!(last["content"]["displayname"], "Alice Liddell");
    assert_eq!(last["content"]["avatar_url"], "mxc://kith.test/abc");
    assert_eq!(last["content"]["membership"], "join");

    // Removing a field; other users' profiles; unknown users; wrong types.
    let (status, _) = server
        .request(Method::DELETE, &tz_path, Some(&alice_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &server.get(&tz_path, Some(&bob_token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let result = server
        .put(
            &name_path,
            Some(&bob_token),
            json!({ "displayname": "Mallory" }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let ghost = "/_matrix/client/v3/profile/@ghost:kith.test";
    assert_error(
        &server.get(ghost, Some(&bob_token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let result = server
        .put(&name_path, Some(&alice_token), json!({ "displayname": 7 }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .put(
            &avatar_path,
            Some(&alice_token),
            json!({ "avatar_url": "https://not.mxc" }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let huge = json!({ "displayname": "x".repeat(2000) });
    let result = server.put(&name_path, Some(&alice_token), huge).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_PROFILE_TOO_LARGE");
    let (_, name) = server.get(&name_path, Some(&bob_token)).await;
    assert_eq!(name["displayname"], "Alice Liddell");
}
