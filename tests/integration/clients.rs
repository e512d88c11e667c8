//! Real clients against a real kith: matrix-nio (PyPI), matrix-js-sdk (npm), and a schema
//! check of the contacts API with schemathesis (PyPI); each a script under
//! `tests/clients/` that exits 0 and prints a marker line when every step passed. The Python with matrix-nio is `KITH_TEST_PYTHON` (`.ci/run` sets up
//! `.ci/venv`), else `python3`; the js-sdk's packages are in `tests/clients/js/node_modules`
//! (`.ci/run` installs them with `npm ci`).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{POLICY, Server};

/// The longest any client script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `program args…`, checks that it passed, and returns what it printed.
pub async fn run_client(server: &Server, program: &str, args: &[&str], marker: &str) -> String {
    run_client_within(server, program, args, marker, SCRIPT_TIMEOUT).await
}

/// [`run_client`] with a longer bound, for a script that runs for a set time.
pub async fn run_client_within(
    server: &Server,
    program: &str,
    args: &[&str],
    marker: &str,
    bound: Duration,
) -> String {
    let child = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (`bash .ci/run` installs it)"));
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = match tokio::time::timeout(bound, waiting).await {
        Ok(output) => output.unwrap().expect("client output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("{program} {args:?} took over {bound:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(marker),
        "{program} {args:?} failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    stdout.into_owned()
}

pub fn python() -> String {
    std::env::var("KITH_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test]
async fn matrix_nio_registers_logs_in_refreshes_and_logs_out() {
    let server = Server::start(&[("KITH_REGISTRATION__MODE", "token")]);
    let token = server
        .printed_token()
        .expect("first start prints a registration token");
    let args = ["tests/clients/nio_session.py", &server.base, &token];
    run_client(&server, &python(), &args, "nio session test passed").await;
}

/// Two nio users under the default friendship policy: refused a direct chat as strangers,
/// they find each other, become friends (seen live in sync), then chat in a direct room:
/// invite, join, messages both ways by long-poll, receipts, typing, history back to the
/// room's start, unread counts.
#[tokio::test]
async fn matrix_nio_users_befriend_and_chat_in_a_direct_room() {
    let server = Server::start(&[(POLICY, "dm_only")]);
    let args = ["tests/clients/nio_chat.py", &server.base];
    run_client(&server, &python(), &args, "nio chat test passed").await;
    // The room, its 27 messages and the membership changes, every one a valid signed PDU.
    assert!(server.assert_events_verify() > 30);
}

/// matrix-nio uploads a picture, sets it as avatar, downloads it and gets a thumbnail.
#[tokio::test]
async fn matrix_nio_sets_an_avatar() {
    let server = Server::start(&[]);
    let args = ["tests/clients/nio_avatar.py", &server.base];
    run_client(&server, &python(), &args, "nio avatar test passed").await;
}

/// Under the default policy `request`, matrix-nio users (who know nothing of contacts)
/// befriend by a direct-chat invite and joining, decline by rejecting, cancel by
/// rescinding, and chat; a request made through the contacts API reaches one as a DM invite
/// (`tests/clients/nio_requests.py`).
#[tokio::test]
async fn matrix_nio_users_befriend_by_direct_chat_invites() {
    let server = Server::start(&[(POLICY, "request")]);
    let args = ["tests/clients/nio_requests.py", &server.base];
    run_client(&server, &python(), &args, "nio requests test passed").await;
}

/// matrix-js-sdk with thread support (as Element Web runs it): a reaction, an edit and a
/// thread of replies between two clients, each send resolving, and a fresh client learning
/// them from the server's bundled aggregations, `/threads` and `/relations`
/// (`tests/clients/js/threads.mjs`).
#[tokio::test]
async fn matrix_js_sdk_clients_react_edit_and_reply_in_threads() {
    let server = Server::start(&[]);
    let args = ["tests/clients/js/threads.mjs", &server.base];
    run_client(&server, "node", &args, "js-sdk threads test passed").await;
}

/// matrix-js-sdk's own calls for what Element's screens use: the room directory, search,
/// tags, a space's hierarchy, jumping to a date, a report, a pusher and a room upgrade
/// (`tests/clients/js/room_features.mjs`).
#[tokio::test]
async fn matrix_js_sdk_uses_directory_search_spaces_and_upgrades() {
    let server = Server::start(&[]);
    let args = ["tests/clients/js/room_features.mjs", &server.base];
    run_client(&server, "node", &args, "js-sdk room features test passed").await;
}

/// The contacts API answers as `spec/contacts.yaml` describes it: every operation with good
/// and bad input checked against the documented statuses and schemas, then schemathesis.
#[tokio::test]
async fn contacts_api_matches_its_openapi_description() {
    let server = Server::start(&[(POLICY, "dm_only")]);
    let args = ["tests/clients/contacts_schema.py", &server.base];
    run_client(&server, &python(), &args, "contacts schema test passed").await;
}

/// The whole Client-Server API, fuzzed with schemathesis from the Matrix v1.19 OpenAPI
/// files (every client-server one) as a user with real rooms, events and media: no 500s
/// (but 502/504 for servers that cannot be reached), no dropped connections, every 4xx a
/// Matrix error, and a malformed ID or server name a 400, never a request to another
/// server (`--strict-ids`). Bounded: 150 s of schemathesis, 60 s of edge probes. The seed
/// is fixed, so CI repeats one exploration (run the script by hand for fresh ones).
#[tokio::test]
async fn the_client_server_api_survives_fuzzing() {
    let server = Server::start(&[("KITH_LIMITS__LOGIN_FAILURE_BURST", "1000000")]);
    let args = [
        "tests/clients/fuzz_client_api.py",
        &server.base,
        "--time",
        "150",
        "--probe-time",
        "60",
        "--strict-ids",
        "--seed",
        "17",
    ];
    let bound = Duration::from_secs(600);
    run_client_within(&server, &python(), &args, "client API fuzz passed", bound).await;
    assert!(
        !server.log().contains("panicked"),
        "a request made kith panic"
    );
}

/// Two matrix-js-sdk clients with the Rust crypto (npm `@matrix-org/matrix-sdk-crypto-wasm`)
/// become friends, hold an encrypted direct chat and decrypt each other; a newly logged-in
/// device shows in the other's `device_lists.changed` and decrypts too.
#[tokio::test]
async fn matrix_js_sdk_clients_chat_end_to_end_encrypted() {
    let server = Server::start(&[(POLICY, "dm_only")]);
    let args = ["tests/clients/js/e2ee.mjs", &server.base];
    run_client(&server, "node", &args, "js-sdk e2ee test passed").await;
    assert!(server.assert_events_verify() > 8);
}

/// The same across two kith servers: the friend request, the keys (queried and claimed
/// through bob's server), the room keys (to-device messages as federation EDUs) and bob's
/// new device (announced as `m.device_list_update`) all cross.
#[tokio::test]
async fn matrix_js_sdk_clients_chat_end_to_end_encrypted_across_two_servers() {
    let (a, _) = Server::federated(&[(POLICY, "dm_only")]);
    let (b, _) = Server::federated(&[(POLICY, "dm_only")]);
    let args = ["tests/clients/js/e2ee.mjs", &a.base, &b.base];
    run_client(&a, "node", &args, "js-sdk e2ee test passed").await;
    a.assert_events_verify();
    b.assert_events_verify();
}

/// A matrix-js-sdk client starts, reaches PREPARED, joins a direct room it is invited to
/// and exchanges messages.
#[tokio::test]
async fn matrix_js_sdk_client_starts_and_chats() {
    let server = Server::start(&[]);
    let args = ["tests/clients/js/chat.mjs", &server.base];
    run_client(&server, "node", &args, "js-sdk chat test passed").await;
    assert!(server.assert_events_verify() > 8);
}
