//! Room deletions a server admin asks for (Synapse's `DELETE /_synapse/admin/v2/rooms`):
//! block the room, move this server's users out of it (into a notice room, if asked),
//! then purge it. Each runs as a task in the background, its progress stored after every
//! step, so that its status can be asked and a restart resumes it where it was.

use std::sync::Arc;

use kith_storage::catalog;
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde::{Deserialize, Serialize};

use crate::services::error::{Error, Result};
use crate::services::messaging::{NOTICE_MESSAGE, NOTICE_ROOM_NAME};
use crate::services::{AppState, Services};
use crate::util::{now_ms, random_string};

/// What the admin asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletionRequest {
    /// Who asked: a server admin's user ID, or `kith admin`.
    pub requester: String,
    /// Who makes the notice room that the room's joined local users are moved to.
    pub new_room_user_id: Option<OwnedUserId>,
    pub room_name: Option<String>,
    pub message: Option<String>,
    pub block: bool,
    pub purge: bool,
    /// Purge even if some local user could not be moved out.
    pub force_purge: bool,
}

/// What the shutdown did, in Synapse's shape (`shutdown_room`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShutdownResult {
    pub kicked_users: Vec<OwnedUserId>,
    pub failed_to_kick_users: Vec<OwnedUserId>,
    /// The aliases moved to the notice room (none without one).
    pub local_aliases: Vec<String>,
    pub new_room_id: Option<OwnedRoomId>,
}

/// Synapse's task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Scheduled,
    Active,
    Complete,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomDeletion {
    pub room_id: OwnedRoomId,
    pub request: DeletionRequest,
    pub status: Status,
    pub result: ShutdownResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_ms: u64,
    /// The notice room has its message (so a resumed run does not post it again).
    #[serde(default)]
    pub notice_posted: bool,
}

impl RoomDeletion {
    fn unfinished(&self) -> bool {
        matches!(self.status, Status::Scheduled | Status::Active)
    }
}

/// Deletions started here; one room has one unfinished deletion at a time.
#[derive(Default)]
pub struct RoomDeletions {
    starting: tokio::sync::Mutex<()>,
}

/// Every deletion recorded, with its delete ID; one that does not read (written by another
/// version of kith) is passed over with a warning, never in the way of the others.
fn all(services: &Services) -> Result<Vec<(String, RoomDeletion)>> {
    let rows: Vec<(String, serde_json::Value)> = services
        .storage
        .scan_prefix(&catalog::DELETEID_ROOMDELETION, &())?;
    let read = |(id, row): (String, serde_json::Value)| match serde_json::from_value(row) {
        Ok(deletion) => Some((id, deletion)),
        Err(e) => {
            tracing::warn!(delete_id = %id, "a room deletion's record does not read: {e}");
            None
        }
    };
    Ok(rows.into_iter().filter_map(read).collect())
}

/// Every deletion of `room_id` asked for, oldest first, with its delete ID.
pub fn of_room(services: &Services, room_id: &RoomId) -> Result<Vec<(String, RoomDeletion)>> {
    let mut found = all(services)?;
    found.retain(|(_, d)| d.room_id == room_id);
    found.sort_by_key(|(_, d)| d.started_ms);
    Ok(found)
}

pub fn get(services: &Services, delete_id: &str) -> Result<Option<RoomDeletion>> {
    Ok(services
        .storage
        .get(&catalog::DELETEID_ROOMDELETION, &delete_id)?)
}

/// Checks the request and starts the deletion in the background; returns its delete ID.
pub async fn start(
    services: &AppState,
    room_id: OwnedRoomId,
    request: DeletionRequest,
) -> Result<String> {
    let (delete_id, deletion) = schedule(services, room_id, request).await?;
    drop(spawn(services, delete_id.clone(), deletion));
    Ok(delete_id)
}

/// Runs a deletion to its end and returns what the shutdown did (Synapse's `v1` call). It
/// is stored and run like the others: a client that hangs up does not stop it.
pub async fn run_now(
    services: &AppState,
    room_id: OwnedRoomId,
    request: DeletionRequest,
) -> Result<ShutdownResult> {
    let (delete_id, deletion) = schedule(services, room_id, request).await?;
    (spawn(services, delete_id, deletion).await).map_err(Error::internal)?
}

async fn schedule(
    services: &Services,
    room_id: OwnedRoomId,
    request: DeletionRequest,
) -> Result<(String, RoomDeletion)> {
    check(services, &request)?;
    let _starting = services.room_deletions.starting.lock().await;
    if of_room(services, &room_id)?
        .iter()
        .any(|(_, d)| d.unfinished())
    {
        return Err(Error::invalid_param(format!(
            "Purge already in progress for {room_id}"
        )));
    }
    let delete_id = random_string(16);
    let deletion = RoomDeletion {
        room_id,
        request,
        status: Status::Scheduled,
        result: ShutdownResult::default(),
        error: None,
        started_ms: now_ms(),
        notice_posted: false,
    };
    save(services, &delete_id, &deletion).await?;
    Ok((delete_id, deletion))
}

/// Resumes the deletions a previous run left unfinished.
pub fn resume(services: &AppState) -> Result<()> {
    for (delete_id, deletion) in all(services)?.into_iter().filter(|(_, d)| d.unfinished()) {
        tracing::info!(%delete_id, room = %deletion.room_id, "resuming a room deletion");
        spawn(services, delete_id, deletion);
    }
    Ok(())
}

/// A notice room's maker must be an account of this server.
fn check(services: &Services, request: &DeletionRequest) -> Result<()> {
    if let Some(creator) = &request.new_room_user_id {
        let ours = creator.server_name() == services.server_name;
        if !ours || services.auth.account(creator)?.is_none() {
            return Err(Error::invalid_param(format!(
                "{creator} is not a user of this server"
            )));
        }
    }
    Ok(())
}

/// Runs the deletion in a task of its own; its end (status, error) is stored.
fn spawn(
    services: &AppState,
    delete_id: String,
    mut deletion: RoomDeletion,
) -> tokio::task::JoinHandle<Result<ShutdownResult>> {
    let services = Arc::clone(services);
    tokio::spawn(async move {
        let outcome = run(&services, &delete_id, &mut deletion).await;
        match &outcome {
            Ok(()) => deletion.status = Status::Complete,
            Err(e) => {
                let room = &deletion.room_id;
                tracing::warn!(%delete_id, %room, "room deletion failed: {}", e.message());
                deletion.status = Status::Failed;
                deletion.error = Some(e.message());
            }
        }
        save(&services, &delete_id, &deletion).await?;
        outcome.map(|()| deletion.result)
    })
}

async fn save(services: &Services, delete_id: &str, deletion: &RoomDeletion) -> Result<()> {
    let table = &catalog::DELETEID_ROOMDELETION;
    Ok(services.storage.put(table, &delete_id, deletion).await?)
}

/// The steps, each one done again harmlessly if a restart interrupted it.
async fn run(services: &Services, delete_id: &str, deletion: &mut RoomDeletion) -> Result<()> {
    let messaging = &services.messaging;
    let request = deletion.request.clone();
    let room_id = deletion.room_id.clone();
    deletion.status = Status::Active;
    save(services, delete_id, deletion).await?;
    if request.block {
        messaging.block(&room_id, &request.requester).await?;
    }
    if messaging.room(&room_id)?.is_none() && messaging.members(&room_id)?.is_empty() {
        // Nothing of it here (purged already, or never known): blocking was all. A room
        // known only through invites or knocks has members, and goes on.
        return Ok(());
    }
    let creator = request.new_room_user_id.as_deref();
    if let (Some(creator), None) = (creator, &deletion.result.new_room_id) {
        let name = given(&request.room_name).unwrap_or(NOTICE_ROOM_NAME);
        let notice_room = messaging.create_notice_room(creator, name).await?;
        deletion.result.new_room_id = Some(notice_room);
        save(services, delete_id, deletion).await?;
    }
    let notice_room = deletion.result.new_room_id.clone();
    // Again while someone is left whom no pass tried: a join that raced the block.
    for _ in 0..3 {
        let result = &deletion.result;
        let tried = |user: &OwnedUserId| {
            result.kicked_users.contains(user) || result.failed_to_kick_users.contains(user)
        };
        let members: Vec<_> = (messaging.local_members_in(&room_id)?.into_iter())
            .filter(|(user, _)| !tried(user))
            .collect();
        if members.is_empty() {
            break;
        }
        for (user, was) in members {
            let moved = messaging
                .move_out(&user, &room_id, &was, notice_room.as_deref())
                .await;
            match moved {
                Ok(()) => deletion.result.kicked_users.push(user),
                Err(e) => {
                    tracing::warn!(%user, room = %room_id, "cannot move a user out of a room being shut down: {}", e.message());
                    deletion.result.failed_to_kick_users.push(user);
                }
            }
            save(services, delete_id, deletion).await?;
        }
    }
    if let (Some(creator), Some(notice_room)) = (creator, &notice_room) {
        if !deletion.notice_posted {
            let message = given(&request.message).unwrap_or(NOTICE_MESSAGE);
            messaging.post_notice(creator, notice_room, message).await?;
            deletion.notice_posted = true;
            save(services, delete_id, deletion).await?;
        }
        // Added to, not replaced: a resumed run finds those moved before it stopped gone.
        let moved = messaging.move_aliases(&room_id, notice_room).await?;
        deletion.result.local_aliases.extend(moved);
    }
    messaging.unpublish(&room_id).await?;
    save(services, delete_id, deletion).await?;
    if request.purge {
        let events = messaging.purge_room(&room_id, request.force_purge).await?;
        tracing::info!(%delete_id, room = %room_id, events, "room purged");
    }
    Ok(())
}

/// A text the admin gave; an empty one is none, as Synapse reads it.
fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.is_empty())
}
