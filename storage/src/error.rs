/// What can go wrong below the service layer. None of it is the client's fault, so the
/// gateway maps every variant to a 500 with no detail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("value encoding: {0}")]
    Value(#[from] serde_json::Error),
    #[error("key encoding: {0}")]
    Key(String),
    #[error("database schema version {found} is newer than this kith ({supported}); upgrade kith")]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("the database is in use by another kith process")]
    Locked,
    #[error("blocking task failed: {0}")]
    Join(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
