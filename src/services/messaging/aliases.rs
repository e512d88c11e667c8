//! Room aliases of this server (`#name:server` → room ID).

use http::StatusCode;
use kith_storage::catalog;
use serde::{Deserialize, Serialize};

use super::Messaging;
use crate::gateway::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alias {
    pub room_id: String,
    /// Who made it: they (or an admin) may delete it.
    pub creator: String,
}

impl Messaging {
    pub fn alias(&self, alias: &str) -> Result<Option<Alias>> {
        Ok(self.storage.get(&catalog::ALIAS_ROOMID, &alias)?)
    }

    /// Creates an alias; one that exists already is 409, as in Synapse.
    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<()> {
        let _guard = self.name_locks.lock(alias).await;
        if self.alias(alias)?.is_some() {
            return Err(Error::unknown(
                StatusCode::CONFLICT,
                format!("Room alias {alias} already exists"),
            ));
        }
        let record = Alias {
            room_id: room_id.to_owned(),
            creator: creator.to_owned(),
        };
        Ok(self
            .storage
            .put(&catalog::ALIAS_ROOMID, &alias, &record)
            .await?)
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<()> {
        let mut batch = self.storage.batch();
        batch.delete(&catalog::ALIAS_ROOMID, &alias)?;
        Ok(self.storage.commit(batch).await?)
    }
}
