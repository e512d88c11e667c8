//! Element X's engine against kith: two users sign in with passwords and sync only through
//! simplified sliding sync (`SyncService`, `RoomListService`), as Element X does.
//!
//! Usage: `kith-element-x HOMESERVER ALICE BOB PASSWORD STORE_DIR`. Every step waits, bounded,
//! for what a person would see in the app; the first that does not happen fails the run.
//! Halfway it prints `RESTART` and waits for a line on stdin: the test restarts kith then.
//! Prints `element x test passed` at the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use matrix_sdk::encryption::CrossSigningResetAuthType;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoom;
use matrix_sdk::ruma::api::client::uiaa::{
    AuthData, MatrixUserIdentifier, Password, UserIdentifier,
};
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::events::{
    AnySyncMessageLikeEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::{Client, Room, RoomState};
use matrix_sdk_ui::notification_client::{
    NotificationClient, NotificationEvent, NotificationProcessSetup, NotificationStatus,
};
use matrix_sdk_ui::room_list_service::filters::new_filter_non_left;
use matrix_sdk_ui::sync_service::{State, SyncService};
use matrix_sdk_ui::timeline::{ReactionStatus, RoomExt, Timeline};

/// The longest any one step may take.
const STEP: Duration = Duration::from_secs(30);

/// One signed-in user: the client, its sync service and its live room list (room IDs in
/// the order the app shows them, invites and joined rooms, not left ones).
struct User {
    name: &'static str,
    client: Client,
    sync: Arc<SyncService>,
    list: Arc<Mutex<Vec<(OwnedRoomId, RoomState)>>>,
    password: String,
    /// The rooms on screen (see [`User::open`]).
    open: Mutex<Vec<OwnedRoomId>>,
}

/// Waits until `check` gives `Some`, polling; fails with `what` after [`STEP`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(found) = check().await? {
            println!("ok: {what}");
            return Ok(found);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not within {STEP:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(
    name: &'static str,
    homeserver: &str,
    localpart: &str,
    password: &str,
    store: &std::path::Path,
) -> Result<User> {
    // As Element X: sliding sync discovered from `/versions`, or no sign-in at all.
    let client = Client::builder()
        .homeserver_url(homeserver)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .sqlite_store(store.join(name), None)
        .build()
        .await
        .context("the server offers no native sliding sync")?;
    let login = client
        .matrix_auth()
        .login_username(localpart, password)
        .initial_device_display_name("Element X (kith test)")
        .send()
        .await
        .context("password login")?;
    // Element X iOS signs out when handed a refresh token it did not ask for.
    if login.refresh_token.is_some() {
        bail!("{name}: a refresh token came with a login that did not ask for one");
    }
    println!("ok: {name} signed in with a password, no refresh token");
    let sync = SyncService::builder(client.clone())
        .with_offline_mode()
        .build()
        .await?;
    let sync = Arc::new(sync);
    let list = Arc::new(Mutex::new(Vec::new()));
    let room_list = sync.room_list_service().all_rooms().await?;
    let shown = Arc::clone(&list);
    tokio::spawn(async move {
        let (entries, controller) = room_list.entries_with_dynamic_adapters(100);
        controller.set_filter(Box::new(new_filter_non_left()));
        let mut entries = std::pin::pin!(entries);
        let mut items = imbl::Vector::new();
        while let Some(diffs) = entries.next().await {
            for diff in diffs {
                diff.apply(&mut items);
            }
            let now = items
                .iter()
                .map(|item: &matrix_sdk_ui::room_list_service::RoomListItem| {
                    (item.room_id().to_owned(), item.state())
                })
                .collect();
            *shown.lock().unwrap() = now;
        }
    });
    sync.start().await;
    Ok(User {
        name,
        client,
        sync,
        list,
        password: password.to_owned(),
        open: Mutex::new(Vec::new()),
    })
}

impl User {
    fn id(&self) -> OwnedUserId {
        self.client.user_id().expect("signed in").to_owned()
    }

    fn listed(&self) -> Vec<(OwnedRoomId, RoomState)> {
        self.list.lock().unwrap().clone()
    }

    /// The room's timeline, the room subscribed to as Element X does with the rooms on
    /// screen: the list alone syncs one event per room, so two messages between syncs
    /// leave a gap, and the SDK drops the timeline's older events until paginated back.
    async fn open(&self, room: &RoomId) -> Result<Timeline> {
        let open = {
            let mut open = self.open.lock().unwrap();
            open.push(room.to_owned());
            open.clone()
        };
        let rooms: Vec<&RoomId> = open.iter().map(|id| id.as_ref()).collect();
        // Boxed: these futures are too deep for the compiler's layout query otherwise.
        let service = self.sync.room_list_service();
        Box::pin(service.subscribe_to_rooms(&rooms)).await;
        Ok(Box::pin(self.room(room)?.timeline()).await?)
    }

    fn position(&self, room: &RoomId) -> Option<usize> {
        self.listed().iter().position(|(id, _)| id == room)
    }

    /// Cross-signing as Element X sets it up right after the first sign-in: the upload
    /// asks for the password by user-interactive auth when the server wants it.
    async fn bootstrap_cross_signing(&self) -> Result<()> {
        let encryption = self.client.encryption();
        encryption.wait_for_e2ee_initialization_tasks().await;
        if let Err(error) = encryption.bootstrap_cross_signing(None).await {
            let Some(uiaa) = error.as_uiaa_response() else {
                bail!("{}: cross-signing bootstrap: {error}", self.name);
            };
            encryption
                .bootstrap_cross_signing(Some(self.password_auth(uiaa.session.clone())))
                .await
                .context("cross-signing bootstrap with the password")?;
        }
        let status = encryption.cross_signing_status().await;
        if !status.as_ref().is_some_and(|s| s.is_complete()) {
            bail!("{}: cross-signing is not complete: {status:?}", self.name);
        }
        println!("ok: {} bootstrapped cross-signing", self.name);
        Ok(())
    }

    fn password_auth(&self, session: Option<String>) -> AuthData {
        let localpart = self.id().localpart().to_owned();
        let mut password = Password::new(
            UserIdentifier::Matrix(MatrixUserIdentifier::new(localpart)),
            self.password.clone(),
        );
        password.session = session;
        AuthData::Password(password)
    }

    /// "Reset identity", as Element X offers: new cross-signing keys over the old ones,
    /// which the server lets through only with the password.
    async fn reset_identity(&self) -> Result<()> {
        let encryption = self.client.encryption();
        let Some(handle) = encryption.reset_cross_signing().await? else {
            bail!(
                "{}: new cross-signing keys replaced the old ones without the password",
                self.name
            );
        };
        let CrossSigningResetAuthType::Uiaa(info) = handle.auth_type() else {
            bail!("{}: the reset asks for OAuth, not the password", self.name);
        };
        handle
            .auth(Some(self.password_auth(info.session.clone())))
            .await?;
        println!("ok: {} reset their identity with the password", self.name);
        Ok(())
    }

    /// The message bodies the timeline shows, decrypted, oldest first; fails on one that
    /// could not be decrypted.
    async fn bodies(&self, timeline: &Timeline) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in timeline.items().await {
            let Some(event) = item.as_event() else {
                continue;
            };
            if event.content().as_unable_to_decrypt().is_some() && !event.is_local_echo() {
                // Keys may still be on their way; the caller polls.
                out.push("<unable to decrypt>".to_owned());
            } else if let Some(message) = event.content().as_message() {
                out.push(message.body().to_owned());
            }
        }
        Ok(out)
    }

    async fn wait_for_body(&self, timeline: &Timeline, body: &str) -> Result<()> {
        let what = format!("{} reads {body:?}, decrypted", self.name);
        until(&what, || async {
            let bodies = self.bodies(timeline).await?;
            Ok(bodies.iter().any(|b| b == body).then_some(()))
        })
        .await
    }

    /// The event ID of the newest remote message in the timeline with `body`.
    async fn event_with_body(&self, timeline: &Timeline, body: &str) -> Result<OwnedEventId> {
        let what = format!("{} has {body:?} from the server", self.name);
        until(&what, || async {
            for item in timeline.items().await.iter().rev() {
                let Some(event) = item.as_event() else {
                    continue;
                };
                let matches = event
                    .content()
                    .as_message()
                    .is_some_and(|m| m.body() == body);
                if let (true, Some(id)) = (matches, event.event_id()) {
                    return Ok(Some(id.to_owned()));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn send(&self, timeline: &Timeline, body: &str) -> Result<OwnedEventId> {
        timeline
            .send(RoomMessageEventContent::text_plain(body).into())
            .await?;
        self.event_with_body(timeline, body).await
    }

    /// Keeps the sync service running as Element X does: started again after an error.
    async fn keep_syncing(&self) {
        if matches!(self.sync.state().get(), State::Error(_) | State::Terminated) {
            self.sync.start().await;
        }
    }

    fn room(&self, room: &RoomId) -> Result<Room> {
        self.client
            .get_room(room)
            .with_context(|| format!("{} does not know {room}", self.name))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,matrix_sdk_crypto=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let [_, homeserver, alice, bob, password, store] = &args[..] else {
        bail!("usage: kith-element-x HOMESERVER ALICE BOB PASSWORD STORE_DIR");
    };
    let store = std::path::Path::new(store);
    let alice = sign_in("alice", homeserver, alice, password, store).await?;
    let bob = sign_in("bob", homeserver, bob, password, store).await?;
    alice.bootstrap_cross_signing().await?;
    bob.bootstrap_cross_signing().await?;
    alice.reset_identity().await?;
    // Key backup and recovery, as Element X offers right after sign-in.
    alice
        .client
        .encryption()
        .recovery()
        .enable()
        .await
        .context("enabling recovery (secret storage and key backup)")?;
    until("alice's key backup is on", || async {
        Ok(alice
            .client
            .encryption()
            .backups()
            .are_enabled()
            .await
            .then_some(()))
    })
    .await?;

    // A direct chat: the invite shows in bob's room list, he joins, and they talk
    // encrypted.
    let dm = alice.client.create_dm(&bob.id()).await?;
    let dm_id = dm.room_id().to_owned();
    until("bob's room list shows the invite", || async {
        let listed = bob.listed();
        Ok(listed
            .iter()
            .any(|(id, state)| *id == dm_id && *state == RoomState::Invited)
            .then_some(()))
    })
    .await?;
    bob.room(&dm_id)?.join().await?;
    until("bob's room list shows the chat joined", || async {
        let listed = bob.listed();
        Ok(listed
            .iter()
            .any(|(id, state)| *id == dm_id && *state == RoomState::Joined)
            .then_some(()))
    })
    .await?;
    until("alice sees bob joined", || async {
        Ok((alice.room(&dm_id)?.joined_members_count() == 2).then_some(()))
    })
    .await?;
    let alice_dm = alice.open(&dm_id).await?;
    let bob_dm = bob.open(&dm_id).await?;
    if !alice
        .room(&dm_id)?
        .latest_encryption_state()
        .await?
        .is_encrypted()
    {
        bail!("the direct chat is not encrypted");
    }
    alice.send(&alice_dm, "hello bob").await?;
    bob.wait_for_body(&bob_dm, "hello bob").await?;
    bob.send(&bob_dm, "hello alice").await?;
    alice.wait_for_body(&alice_dm, "hello alice").await?;

    // A third room appears live in bob's list, on top; a message in the chat brings the
    // chat back on top of both lists.
    let mut request = CreateRoom::new();
    request.name = Some("Later".to_owned());
    request.invite = vec![bob.id()];
    let later = alice.client.create_room(request).await?;
    let later_id = later.room_id().to_owned();
    until("bob's list shows the new room first", || async {
        Ok((bob.position(&later_id) == Some(0)).then_some(()))
    })
    .await?;
    bob.room(&later_id)?.join().await?;
    let alice_later = alice.open(&later_id).await?;
    alice.send(&alice_later, "in the other room").await?;
    until("alice's list has the new room first", || async {
        Ok(
            (alice.position(&later_id) == Some(0) && alice.position(&dm_id) == Some(1))
                .then_some(()),
        )
    })
    .await?;
    alice.send(&alice_dm, "back to you").await?;
    bob.wait_for_body(&bob_dm, "back to you").await?;
    until("the chat is first again on both lists", || async {
        let first = |user: &User| user.position(&dm_id) == Some(0);
        Ok((first(&alice) && first(&bob)).then_some(()))
    })
    .await?;

    // Unread counts go up with messages and clear with a read receipt.
    let bob_dm_room = bob.room(&dm_id)?;
    alice.send(&alice_dm, "unread one").await?;
    let last = alice.send(&alice_dm, "unread two").await?;
    bob.wait_for_body(&bob_dm, "unread two").await?;
    until("bob's chat counts unread messages", || async {
        Ok((bob_dm_room.unread_notification_counts().notification_count >= 2).then_some(()))
    })
    .await?;
    // The push a phone would get: the notification client (its own connection, as the
    // iOS notification extension runs it) finds the event, decrypted, in its direct chat.
    let notifications = NotificationClient::new(
        bob.client.clone(),
        NotificationProcessSetup::MultipleProcesses,
    )
    .await?;
    let status = notifications.get_notification(&dm_id, &last).await?;
    let NotificationStatus::Event(item) = status else {
        bail!("the notification client did not find the message: {status:?}");
    };
    let body = match &item.event {
        NotificationEvent::Timeline(event) => match event.as_ref() {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncMessageLikeEvent::Original(message),
            )) => Some(message.content.body().to_owned()),
            _ => None,
        },
        NotificationEvent::Invite(_) => None,
    };
    if body.as_deref() != Some("unread two") || !item.is_direct_message_room {
        bail!(
            "the notification shows {body:?}, direct: {}",
            item.is_direct_message_room
        );
    }
    println!("ok: bob's notification client shows the message, decrypted, in a direct chat");
    bob_dm.send_single_receipt(ReceiptType::Read, last).await?;
    until("bob's unread count clears with his receipt", || async {
        Ok((bob_dm_room.unread_notification_counts().notification_count == 0).then_some(()))
    })
    .await?;

    // Typing shows.
    let (_guard, mut typing) = bob_dm_room.subscribe_to_typing_notifications();
    alice.room(&dm_id)?.typing_notice(true).await?;
    let alice_id = alice.id();
    tokio::time::timeout(STEP, async {
        loop {
            let users = typing.recv().await?;
            if users.contains(&alice_id) {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("bob never saw alice typing")??;
    println!("ok: bob sees alice typing");

    // A reaction toggled on, off and on again ends as one reaction on both sides.
    let hello = bob.event_with_body(&bob_dm, "hello alice").await?;
    let item = until("alice has bob's message", || async {
        let items = alice_dm.items().await;
        Ok(items.iter().find_map(|item| {
            let event = item.as_event()?;
            (event.event_id() == Some(&hello)).then(|| event.identifier())
        }))
    })
    .await?;
    for _ in 0..3 {
        alice_dm.toggle_reaction(&item, "👍").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (user, timeline) in [(&alice, &alice_dm), (&bob, &bob_dm)] {
        let what = format!("{} sees one 👍 from alice, sent", user.name);
        until(&what, || async {
            let items = timeline.items().await;
            let event = items
                .iter()
                .filter_map(|i| i.as_event())
                .find(|e| e.event_id() == Some(&hello));
            let reactions = event.and_then(|e| e.content().reactions().cloned());
            let thumbs = reactions.as_ref().and_then(|r| r.get("👍"));
            let one = thumbs.is_some_and(|by| {
                by.len() == 1
                    && by
                        .get(&alice_id)
                        .is_some_and(|r| matches!(r.status, ReactionStatus::RemoteToRemote(_)))
            });
            Ok(one.then_some(()))
        })
        .await?;
    }

    // kith restarts under the app: syncing goes on (resumed, or started over on
    // M_UNKNOWN_POS), and messages flow again.
    println!("RESTART");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    until("both sync services run again", || async {
        alice.keep_syncing().await;
        bob.keep_syncing().await;
        let running = |u: &User| matches!(u.sync.state().get(), State::Running);
        Ok((running(&alice) && running(&bob)).then_some(()))
    })
    .await?;
    alice.send(&alice_dm, "after the restart").await?;
    bob.wait_for_body(&bob_dm, "after the restart").await?;

    // A kick takes the room out of bob's list.
    later.kick_user(&bob.id(), Some("done")).await?;
    until("the room leaves bob's list after the kick", || async {
        Ok(bob.position(&later_id).is_none().then_some(()))
    })
    .await?;
    if bob.position(&dm_id).is_none() {
        bail!("the chat left bob's list with the other room");
    }
    alice.sync.stop().await;
    bob.sync.stop().await;
    println!("element x test passed");
    Ok(())
}
