//! Administration: create users, reset passwords, deactivate users, manage registration
//! tokens. The same operations back the local admin HTTP API (`/_kith/admin/v1`, guarded by
//! the secret in `<data>/admin.secret`) and the `kith admin` command, which calls that API
//! while the server runs and opens the database itself when it does not. Backups are taken
//! either way; a restore only with kith stopped.

pub mod backup;
pub mod cli;
pub mod ops;
pub mod secret;
