//! profile-service: public user information, presence and the user directory. Every new
//! user gets a profile through the event log (`user.created`), so account creation and
//! profile creation are decoupled yet nothing is lost if the server stops between them.

pub mod directory;
mod update;

use std::collections::BTreeMap;

use kith_storage::{Batch, Storage, catalog};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::services::error::Result;
use crate::util::StripedLocks;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Other fields (extended profiles, v1.16: `m.tz` and custom ones), as set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
}

/// A new user's profile: the localpart as display name, as Synapse does.
pub fn new_profile(user_id: &str) -> Profile {
    let localpart = user_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default();
    Profile {
        displayname: Some(localpart.to_owned()),
        ..Profile::default()
    }
}

pub fn profile(storage: &Storage, user_id: &str) -> kith_storage::Result<Option<Profile>> {
    storage.get(&catalog::USERID_PROFILE, &user_id)
}

/// The profiles of local users and the user directory built from them (`userid_profile`,
/// `word_userid`).
pub struct Profiles {
    storage: Storage,
    /// Per user, across a profile's read-modify-write and the announcing of it.
    locks: StripedLocks,
}

impl Profiles {
    pub fn new(storage: Storage) -> Profiles {
        Profiles {
            storage,
            locks: StripedLocks::new(16),
        }
    }

    pub fn get(&self, user_id: &str) -> Result<Option<Profile>> {
        Ok(profile(&self.storage, user_id)?)
    }

    /// The `mxc://` URIs local profiles show as avatars.
    pub fn avatar_media(&self) -> Result<std::collections::HashSet<String>> {
        let rows: Vec<(String, Profile)> =
            self.storage.scan_prefix(&catalog::USERID_PROFILE, &())?;
        Ok(rows.into_iter().filter_map(|(_, p)| p.avatar_url).collect())
    }

    /// Users whose name or ID has words starting with the term's (see [`directory::search`]).
    pub fn search(&self, term: &str) -> Result<(Vec<directory::Hit>, bool)> {
        directory::search(&self.storage, term)
    }
}

/// Creates a new user's profile, with the localpart as display name, as Synapse
/// (`user.created`).
pub fn create_for_new_user(
    storage: &Storage,
    user_id: &str,
    batch: &mut Batch,
) -> kith_storage::Result<()> {
    if storage.contains(&catalog::USERID_PROFILE, &user_id)? {
        return Ok(());
    }
    let profile = new_profile(user_id);
    directory::reindex(batch, user_id, None, &profile)?;
    batch.put(&catalog::USERID_PROFILE, &user_id, &profile)
}
