//! The real Element Web (1.11.54, Rust crypto) in Chromium, driven by the scripts in
//! `tests/clients/element/` (playwright-core from npm, Debian's `chromium`): two people
//! sign in on Element's own screens and hold an encrypted direct chat, on one kith, across
//! two kith servers, and between kith and Synapse; they use a room as people do, and see
//! one an admin deletes go.
//!
//! Element Web is not on any registry reachable here: `KITH_ELEMENT_WEB` names the
//! directory with its built tarball and `serve.mjs` (`.ci/run` finds the team's copy);
//! without it these tests say so and pass nothing off as checked.

use std::path::PathBuf;

use serde_json::json;

use crate::clients::run_client;
use crate::common::{PASSWORD, Server};
use crate::synapse::Synapse;

const TARBALL: &str = "element-web-1.11.54.tar.gz";

/// Element Web unpacked into a fresh directory, with the path of its `serve.mjs`; `None`
/// (said on stderr) where it is not available.
fn element_web() -> Option<(tempfile::TempDir, PathBuf)> {
    let Some(dir) = std::env::var_os("KITH_ELEMENT_WEB").map(PathBuf::from) else {
        eprintln!("KITH_ELEMENT_WEB is not set: Element Web tests skipped");
        return None;
    };
    let webapp = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(dir.join(TARBALL))
        .arg("-C")
        .arg(webapp.path())
        .status()
        .expect("run tar");
    assert!(
        status.success(),
        "cannot unpack {}",
        dir.join(TARBALL).display()
    );
    Some((webapp, dir.join("serve.mjs")))
}

/// A person's sign-in: the homeserver Element is pointed at, the user ID, the password.
fn person(hs: &str, user: &str) -> serde_json::Value {
    json!({ "hs": hs, "user": user, "password": PASSWORD })
}

/// Runs an Element script (`dm`, `walk`) for alice and bob; `server` is the kith whose log
/// a failure prints.
async fn element(script: &str, server: &Server, alice: serde_json::Value, bob: serde_json::Value) {
    element_with(script, server, (alice, bob), json!({})).await
}

/// [`element`], with more for the script's config (`extra`'s keys).
async fn element_with(
    script: &str,
    server: &Server,
    (alice, bob): (serde_json::Value, serde_json::Value),
    extra: serde_json::Value,
) {
    let Some((webapp, serve)) = element_web() else {
        return;
    };
    let shots = std::env::temp_dir().join(format!("kith-element-{}", crate::common::rand_suffix()));
    let mut config = json!({
        "webapp": webapp.path(),
        "serve": serve,
        "shots": shots,
        "alice": alice,
        "bob": bob,
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    let path = format!("tests/clients/element/{script}.mjs");
    let marker = format!("element {script} test passed");
    let out = run_client(server, "node", &[&path, &config.to_string()], &marker).await;
    println!("{out}");
}

/// Two people on one kith: alice starts an encrypted DM from Element's "Start chat" dialog,
/// bob sees the invite named after her, accepts, and both read each other.
#[tokio::test]
async fn element_web_users_hold_an_encrypted_dm() {
    let server = Server::start(&[]);
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let alice = person(&server.base, &alice);
    let bob = person(&server.base, &bob);
    element("dm", &server, alice, bob).await;
}

/// The same with bob on a second kith server: the invite, its room state, the keys and the
/// messages all cross federation.
#[tokio::test]
async fn element_web_users_on_two_kith_servers_hold_an_encrypted_dm() {
    let (one, _) = Server::federated(&[]);
    let (two, _) = Server::federated(&[]);
    let (alice, _) = one.user("alice").await;
    let (bob, _) = two.user("bob").await;
    let alice = person(&one.base, &alice);
    let bob = person(&two.base, &bob);
    element("dm", &one, alice, bob).await;
}

/// alice on kith, bob on Synapse.
#[tokio::test]
async fn element_web_users_on_kith_and_synapse_hold_an_encrypted_dm() {
    let (kith, name) = Server::federated(&[]);
    let Some(synapse) = Synapse::start(&[&name]).await else {
        eprintln!("KITH_SYNAPSE_PYTHON is not set: the Synapse test is skipped");
        return;
    };
    let (alice, _) = kith.user("alice").await;
    let (bob, _) = synapse.user("bob").await;
    let alice = person(&kith.base, &alice);
    let bob = person(&format!("https://{}", synapse.name), &bob);
    element("dm", &kith, alice, bob).await;
}

/// alice makes a room, invites bob, sets its topic; bob accepts; alice uploads an image;
/// bob reacts, replies and edits his reply; alice renames the room; bob leaves; alice signs
/// out and in again. Each step is checked on the other person's screen.
#[tokio::test]
async fn element_web_users_use_a_room() {
    let server = Server::start(&[]);
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let alice = person(&server.base, &alice);
    let bob = person(&server.base, &bob);
    element("walk", &server, alice, bob).await;
}

/// alice and bob read a room; a server admin deletes it (Synapse's admin API, moving them
/// to a notice room); in Element the room leaves their lists and the notice shows.
#[tokio::test]
async fn element_web_users_see_a_room_deleted() {
    let server = Server::start(&[]);
    let (ok, output) = server.admin(&["create-user", "boss", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{output}");
    let (_, login) = server.login("boss", PASSWORD, json!({})).await;
    let (alice, alice_token) = server.user("alice").await;
    let (bob, bob_token) = server.user("bob").await;
    let body = json!({ "preset": "public_chat", "name": "Doomed" });
    let room = server.create_room(&alice_token, body).await;
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    let (status, joined) = server.post(&join, Some(&bob_token), json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{joined}");
    server
        .say(&alice_token, &room, "written before the shutdown")
        .await;
    let deletion = json!({ "deletion": {
        "base": server.base,
        "token": login["access_token"],
        "room": room,
        "admin": format!("@boss:{}", crate::common::SERVER_NAME),
    }});
    let people = (person(&server.base, &alice), person(&server.base, &bob));
    element_with("shutdown", &server, people, deletion).await;
}
