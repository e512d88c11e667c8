//! The schema version and the migrations that bring an older database up to it.
//!
//! A fresh database is stamped with [`CURRENT`]. An older one runs each migration in
//! [`MIGRATIONS`] from its version up, each committing its changes together with the new
//! version number. A newer one is refused, so an old binary never misreads new data.

use crate::{Error, Result, Storage, catalog};

/// The `global_value` key holding the schema version.
pub const VERSION_KEY: &str = "schema_version";

/// The version this build writes.
pub const CURRENT: u64 = 2;

/// A migration from version `n` to `n + 1`: it adds its writes to the batch it is given.
pub type Migration = fn(&Storage, &mut crate::Batch) -> Result<()>;

/// `MIGRATIONS[i]` migrates from version `i + 1` to `i + 2`.
pub const MIGRATIONS: &[Migration] = &[members_by_room];

/// 1 → 2: rooms get their member list (`roomid_userid_membership`), mirrored from the
/// users' memberships.
fn members_by_room(storage: &Storage, batch: &mut crate::Batch) -> Result<()> {
    let rows: Vec<((String, String), serde_json::Value)> =
        storage.scan_prefix(&catalog::USERID_ROOMID_MEMBERSHIP, &())?;
    for ((user, room), membership) in rows {
        batch.put(
            &catalog::ROOMID_USERID_MEMBERSHIP,
            &(room.as_str(), user.as_str()),
            &membership,
        )?;
    }
    Ok(())
}

const _: () = assert!(MIGRATIONS.len() as u64 == CURRENT - 1);

pub(crate) fn migrate(storage: &Storage) -> Result<()> {
    let found: Option<u64> = storage.get(&catalog::GLOBAL_VALUE, &VERSION_KEY)?;
    let mut version = match found {
        None => {
            let mut batch = storage.batch();
            batch.put(&catalog::GLOBAL_VALUE, &VERSION_KEY, &CURRENT)?;
            return storage.commit_blocking(batch);
        }
        Some(0) => return Err(Error::Key("schema version 0 does not exist".into())),
        Some(v) if v > CURRENT => {
            return Err(Error::SchemaTooNew {
                found: v,
                supported: CURRENT,
            });
        }
        Some(v) => v,
    };
    while version < CURRENT {
        let mut batch = storage.batch();
        MIGRATIONS[(version - 1) as usize](storage, &mut batch)?;
        version += 1;
        batch.put(&catalog::GLOBAL_VALUE, &VERSION_KEY, &version)?;
        storage.commit_blocking(batch)?;
        tracing::info!(version, "database migrated");
    }
    Ok(())
}
