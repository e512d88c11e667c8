//! `kith admin ...`: talks to the running server's admin API, or, when no server answers,
//! opens the database and performs the operation itself.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Value, json};

use super::ops;
use crate::config::Config;
use crate::services::Services;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user.
    CreateUser {
        /// Localpart (`alice`) or full user ID.
        user: String,
        #[arg(long)]
        password: String,
        /// Make the user a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// Set a user's password and end their sessions.
    ResetPassword {
        user: String,
        #[arg(long)]
        password: String,
        /// Keep the user's sessions.
        #[arg(long)]
        keep_devices: bool,
    },
    /// Deactivate a user: sessions end, the password is forgotten, the name stays taken.
    Deactivate { user: String },
    /// Show a user's account: admin, deactivated, verified email addresses and the
    /// identity providers they sign in with.
    ShowUser { user: String },
    /// Registration tokens.
    #[command(subcommand)]
    Tokens(TokenCommand),
    /// List what users reported (events, rooms, users), oldest first.
    Reports,
    /// Re-check the content hash and signatures of every stored event.
    VerifyEvents,
    /// Replace the server's signing key (with kith stopped): the old one stays published
    /// as retired (`old_verify_keys`), so what it signed still verifies.
    RotateSigningKey,
    /// Delete a room: this server's users leave it, then it is purged from the database
    /// (the other servers in it keep their copies).
    DeleteRoom {
        room: String,
        /// Block it too: no one of this server may join it again.
        #[arg(long)]
        block: bool,
        /// Only move this server's users out; keep its history.
        #[arg(long)]
        keep_history: bool,
    },
    /// Back up the database, the media files and the secrets kept in files into DIR (new
    /// or empty), while kith runs or not.
    Backup { dir: PathBuf },
    /// Restore a backup into the configured data directory, which must be empty (kith
    /// stopped).
    Restore { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List every registration token with its uses.
    List,
    /// Create a registration token.
    Create {
        /// The token (random if omitted).
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows (unlimited if omitted).
        #[arg(long)]
        uses: Option<u32>,
        /// Days until it expires (never if omitted).
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Delete a registration token (the first-start one among them): no registration
    /// can use it any more.
    Delete { token: String },
}

/// Runs the command, printing its JSON result.
pub async fn run(config: Config, mut command: AdminCommand) -> Result<(), String> {
    // The running server resolves paths from its own directory, not the caller's.
    if let AdminCommand::Backup { dir } | AdminCommand::Restore { dir } = &mut command {
        *dir = std::path::absolute(&*dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let result = match over_http(&config, &command).await {
        Ok(value) => value,
        Err(HttpFailure::NotRunning) => directly(config, command).await?,
        Err(HttpFailure::Refused(message)) => return Err(message),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&result).unwrap_or_default()
    );
    // A verification that found bad events fails, so scripts notice.
    match result["failed"].as_array() {
        Some(failed) if !failed.is_empty() => {
            Err(format!("{} events failed verification", failed.len()))
        }
        _ => Ok(()),
    }
}

enum HttpFailure {
    NotRunning,
    Refused(String),
}

fn expiry(days: Option<u64>) -> Option<u64> {
    days.map(|d| crate::util::now_ms() + d * 24 * 3600 * 1000)
}

async fn over_http(config: &Config, command: &AdminCommand) -> Result<Value, HttpFailure> {
    let Ok(secret) = std::fs::read_to_string(config.admin_secret_path()) else {
        return Err(HttpFailure::NotRunning);
    };
    let base = format!("http://{}/_kith/admin/v1", config.listen.client);
    let client = reqwest::Client::new();
    let request = match command {
        AdminCommand::CreateUser { user, password, admin } => client
            .post(format!("{base}/users"))
            .json(&json!({ "user": user, "password": password, "admin": admin })),
        AdminCommand::ResetPassword { user, password, keep_devices } => client
            .post(format!("{base}/users/{}/password", encode(user)))
            .json(&json!({ "password": password, "logout_devices": !keep_devices })),
        AdminCommand::Deactivate { user } => client.post(format!("{base}/users/{}/deactivate", encode(user))),
        AdminCommand::ShowUser { user } => client.get(format!("{base}/users/{}", encode(user))),
        AdminCommand::Tokens(TokenCommand::List) => client.get(format!("{base}/registration_tokens")),
        AdminCommand::Tokens(TokenCommand::Create { token, uses, expires_in_days }) => client
            .post(format!("{base}/registration_tokens"))
            .json(&json!({ "token": token, "uses_allowed": uses, "expiry_time": expiry(*expires_in_days) })),
        AdminCommand::Tokens(TokenCommand::Delete { token }) => {
            client.delete(format!("{base}/registration_tokens/{}", encode(token)))
        }
        AdminCommand::VerifyEvents => client.post(format!("{base}/events/verify")),
        AdminCommand::Reports => client.get(format!("{base}/reports")),
        AdminCommand::DeleteRoom { room, block, keep_history } => client
            .post(format!("{base}/rooms/{}/delete", encode(room)))
            .json(&json!({ "block": block, "purge": !keep_history })),
        // The running server keeps the key it started with: it must not sign with one
        // the database no longer holds. Asked only to learn whether it runs.
        AdminCommand::RotateSigningKey => {
            let why = "the signing key is read when it starts";
            return refused_while_running(&client, config, why).await;
        }
        AdminCommand::Backup { dir } => {
            client.post(format!("{base}/backup")).json(&json!({ "dir": dir }))
        }
        AdminCommand::Restore { .. } => {
            let why = "a restore fills an empty data directory";
            return refused_while_running(&client, config, why).await;
        }
    };
    let response = match request.bearer_auth(secret.trim()).send().await {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Err(HttpFailure::NotRunning),
        Err(e) => return Err(HttpFailure::Refused(e.to_string())),
    };
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| HttpFailure::Refused(e.to_string()))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(HttpFailure::Refused(format!("{status}: {body}")))
    }
}

/// `NotRunning` if nothing answers on the client listener, else refused: `why` kith must be
/// stopped first.
async fn refused_while_running(
    client: &reqwest::Client,
    config: &Config,
    why: &str,
) -> Result<Value, HttpFailure> {
    let probe = format!("http://{}/_matrix/client/versions", config.listen.client);
    match client.get(probe).send().await {
        Err(e) if e.is_connect() => Err(HttpFailure::NotRunning),
        _ => Err(HttpFailure::Refused(format!("stop kith first: {why}"))),
    }
}

fn encode(user: &str) -> String {
    user.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn directly(config: Config, command: AdminCommand) -> Result<Value, String> {
    // Before anything opens (and so creates) the database.
    if let AdminCommand::Restore { dir } = &command {
        let manifest = super::backup::restore(&config, dir).map_err(|e| e.to_string())?;
        return Ok(json!(manifest));
    }
    let services = Services::open(config)?;
    let result = match command {
        AdminCommand::CreateUser {
            user,
            password,
            admin,
        } => ops::create_user(
            &services,
            ops::CreateUser {
                user,
                password,
                admin,
            },
        )
        .await
        .map(|id| json!({ "user_id": id })),
        AdminCommand::ResetPassword {
            user,
            password,
            keep_devices,
        } => {
            let request = ops::ResetPassword {
                password,
                logout_devices: !keep_devices,
            };
            ops::reset_password(&services, &user, request)
                .await
                .map(|()| json!({}))
        }
        AdminCommand::Deactivate { user } => {
            ops::deactivate(&services, &user).await.map(|()| json!({}))
        }
        AdminCommand::ShowUser { user } => ops::show_user(&services, &user),
        AdminCommand::Tokens(TokenCommand::List) => {
            ops::list_tokens(&services).map(|t| json!({ "tokens": t }))
        }
        AdminCommand::Tokens(TokenCommand::Create {
            token,
            uses,
            expires_in_days,
        }) => {
            let request = ops::NewToken {
                token,
                uses_allowed: uses,
                expiry_time: expiry(expires_in_days),
            };
            ops::create_token(&services, request)
                .await
                .map(|t| json!(t))
        }
        AdminCommand::Tokens(TokenCommand::Delete { token }) => {
            ops::delete_token(&services, &token)
                .await
                .map(|()| json!({}))
        }
        AdminCommand::VerifyEvents => services.messaging.verify_all().map(|r| json!(r)),
        AdminCommand::Reports => (services.messaging.reports()).map(|r| json!({ "reports": r })),
        AdminCommand::DeleteRoom {
            room,
            block,
            keep_history,
        } => {
            let room_id = ruma::OwnedRoomId::try_from(room).map_err(|e| e.to_string())?;
            ops::delete_room(&services, room_id, block, !keep_history)
                .await
                .map(|r| json!(r))
        }
        AdminCommand::RotateSigningKey => {
            let key_file = services.config.federation.signing_key_path.as_deref();
            kith_federation::ServerKeys::rotate(
                &services.storage,
                &services.config.server_name,
                key_file,
            )
            .map(|key_id| json!({ "key_id": key_id }))
            .map_err(crate::services::error::Error::internal)
        }
        AdminCommand::Backup { dir } => {
            let taken = super::backup::backup(&services, &dir).await;
            let manifest = taken.map_err(|e| e.to_string())?;
            return Ok(json!(manifest));
        }
        AdminCommand::Restore { .. } => unreachable!("restored before the database opens"),
    };
    result.map_err(|e| e.to_string())
}
