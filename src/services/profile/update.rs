//! Changing a profile: the profile, its directory words and `profile.updated` in one
//! write. Putting a new name or avatar into the user's rooms is messaging's (see
//! [`crate::services::account::set_profile_field`]).

use ruma::UserId;
use serde_json::Value;
use tokio::sync::MutexGuard;

use super::{Profile, Profiles, directory, new_profile, profile};
use crate::events::{self, DomainEvent};
use crate::services::error::{Error, ErrorKind, Result};

/// The most bytes a profile field may hold, as JSON.
const MAX_FIELD_BYTES: usize = 1024;
/// The most bytes a field's name may have, and a whole profile, as the spec sets them.
const MAX_KEY_BYTES: usize = 255;
const MAX_PROFILE_BYTES: usize = 64 * 1024;

fn too_large(message: String) -> Error {
    Error::new(ErrorKind::ProfileTooLarge, message)
}

/// A committed profile change.
pub struct Changed<'a> {
    /// The new profile, if its public part (name, avatar) changed.
    pub public: Option<Profile>,
    /// The user's profile lock, held until the change is announced, so two changes reach
    /// rooms in the order they were made.
    _held: MutexGuard<'a, ()>,
}

impl Profiles {
    /// Sets (`Some`) or removes (`None`) one field of the user's profile.
    pub async fn set_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: Option<Value>,
    ) -> Result<Changed<'_>> {
        if value
            .as_ref()
            .is_some_and(|v| v.to_string().len() > MAX_FIELD_BYTES)
        {
            return Err(too_large(format!(
                "A profile field holds at most {MAX_FIELD_BYTES} bytes"
            )));
        }
        if field.len() > MAX_KEY_BYTES {
            return Err(Error::new(
                ErrorKind::KeyTooLarge,
                format!("A profile field's name has at most {MAX_KEY_BYTES} bytes"),
            ));
        }
        let user = user_id.as_str();
        let held = self.locks.lock(user).await;
        let stored = self.created_profile(user).await?;
        let old = stored.clone().unwrap_or_else(|| new_profile(user));
        let mut new = old.clone();
        let text = |v: Option<Value>| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::bad_json(format!("{field} must be a string"))),
        };
        match field {
            "displayname" => new.displayname = text(value)?.filter(|s| !s.is_empty()),
            "avatar_url" => {
                let url = text(value)?.filter(|s| !s.is_empty());
                if url
                    .as_deref()
                    .is_some_and(|u| !<&ruma::MxcUri>::from(u).is_valid())
                {
                    return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
                }
                new.avatar_url = url;
            }
            _ => match value {
                Some(value) => {
                    new.fields.insert(field.to_owned(), value);
                }
                None => {
                    new.fields.remove(field);
                }
            },
        }
        let size = serde_json::to_vec(&new).map_or(usize::MAX, |v| v.len());
        if size > MAX_PROFILE_BYTES {
            return Err(too_large(format!(
                "A profile holds at most {MAX_PROFILE_BYTES} bytes"
            )));
        }
        let mut batch = self.storage.batch();
        directory::reindex(&mut batch, user, stored.as_ref(), &new)?;
        batch.put(&kith_storage::catalog::USERID_PROFILE, &user, &new)?;
        let public_change = new.displayname != old.displayname || new.avatar_url != old.avatar_url;
        if public_change {
            let updated = DomainEvent::ProfileUpdated {
                user_id: user.to_owned(),
                displayname: new.displayname.clone(),
                avatar_url: new.avatar_url.clone(),
            };
            events::append(&mut batch, updated)?;
        }
        self.storage.commit(batch).await?;
        Ok(Changed {
            public: public_change.then_some(new),
            _held: held,
        })
    }

    /// The user's profile, waiting briefly for the event log to create a new user's, so a
    /// change right after registration neither races the creation nor is undone by it.
    async fn created_profile(&self, user: &str) -> Result<Option<Profile>> {
        for _ in 0..50 {
            if let Some(found) = profile(&self.storage, user)? {
                return Ok(Some(found));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(None)
    }
}
