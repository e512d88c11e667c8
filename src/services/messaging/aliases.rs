//! Room aliases of this server (`#name:server` → room ID).

use kith_storage::catalog;
use ruma::api::federation::query::get_room_information;
use serde::{Deserialize, Serialize};

use super::Messaging;
use crate::services::error::{Error, ErrorKind, Result};

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
            return Err(Error::new(
                ErrorKind::AliasInUse,
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

    /// Every alias of this server, with what it names.
    pub fn local_aliases(&self) -> Result<Vec<(String, Alias)>> {
        Ok(self.storage.scan_prefix(&catalog::ALIAS_ROOMID, &())?)
    }

    /// Points an alias at another room (a room upgrade moves them), keeping its creator.
    pub async fn move_alias(&self, alias: &str, room_id: &ruma::RoomId) -> Result<()> {
        let _guard = self.name_locks.lock(alias).await;
        let Some(mut record) = self.alias(alias)? else {
            return Ok(());
        };
        record.room_id = room_id.to_string();
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

    /// The room an alias names and servers to join it through: ours from the database
    /// (with the servers of its members), another server's asked of it
    /// (`/_matrix/federation/v1/query/directory`). 404 if none.
    pub async fn resolve_alias(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> Result<(ruma::OwnedRoomId, Vec<ruma::OwnedServerName>)> {
        if alias.server_name().as_str() != self.server_name() {
            let client = self.federation()?;
            let request = get_room_information::v1::Request::new(alias.to_owned());
            let found = client
                .send(alias.server_name(), request)
                .await
                .map_err(crate::services::error::remote_error)?;
            return Ok((found.room_id, found.servers));
        }
        let found = self
            .alias(alias.as_str())?
            .ok_or_else(|| Error::not_found("Room alias not found"))?;
        let room_id = ruma::OwnedRoomId::try_from(found.room_id).map_err(Error::internal)?;
        let mut servers =
            vec![ruma::OwnedServerName::try_from(self.server_name()).map_err(Error::internal)?];
        for user in self.joined_members(&room_id)? {
            if !servers.iter().any(|s| s == user.server_name()) {
                servers.push(user.server_name().to_owned());
            }
        }
        Ok((room_id, servers))
    }
}
