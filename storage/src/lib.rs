//! kith's storage: one RocksDB database with one column family per table.
//!
//! - [`catalog`] declares every table with its key and value layout;
//! - [`codec`] is the one key codec (tuple parts, big-endian integers);
//! - `reads` are the typed reads and prefix scans of [`Storage`];
//! - [`Batch`] groups every multi-key write into one atomic RocksDB `WriteBatch`;
//! - [`stream`] hands out the global stream position and wakes waiters on commit;
//! - [`Waiter`]s are long-polls, woken only by commits that may concern them;
//! - [`schema`] versions the database and runs migrations.
//!
//! This crate knows nothing of HTTP or Matrix: values are serde types chosen by callers.

mod batch;
pub mod catalog;
pub mod codec;
mod db;
mod error;
mod reads;
pub mod schema;
pub mod stats;
pub mod stream;
mod waiters;

pub use batch::Batch;
pub use catalog::Table;
pub use codec::KeyCodec;
pub use db::Storage;
pub use error::{Error, Result};
pub use stats::ReadCounts;
pub use waiters::Waiter;
