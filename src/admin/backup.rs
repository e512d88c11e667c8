//! Online backups and their restore. A backup is a RocksDB checkpoint (the database as of
//! one instant, taken while kith runs), then the media files, then the secrets kept in
//! files of their own, with a manifest. Media files are written (and synced) before the
//! records that name them commit, and never changed, so every file the checkpoint names is
//! copied. A restore fills an empty data directory from a backup, kith stopped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::services::Services;

/// The manifest's name in a backup directory.
pub const MANIFEST: &str = "kith-backup.json";

/// What a backup holds, written last (a backup without it is unfinished).
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub kith_version: String,
    pub schema_version: u64,
    pub server_name: String,
    /// When the checkpoint was taken, in milliseconds since the epoch.
    pub created_ms: u64,
    pub media_files: u64,
    pub media_bytes: u64,
    /// Secrets that live in files of their own (`token_secret`, `signing_key`); otherwise
    /// they are in the database.
    pub secret_files: Vec<String>,
}

/// Why a backup or restore did not happen.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was done: the request cannot be carried out as asked.
    Refused(String),
    /// Reading or writing failed part-way.
    Io(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(message) | Failure::Io(message) => f.write_str(message),
        }
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Failure {
    let message = format!("{what} {}", path.display());
    move |e| Failure::Io(format!("{message}: {e}"))
}

/// The secrets kept in files, by the name they have in a backup.
fn secret_files(config: &Config) -> [(&'static str, Option<&PathBuf>); 2] {
    [
        ("token_secret", config.auth.token_secret_path.as_ref()),
        ("signing_key", config.federation.signing_key_path.as_ref()),
    ]
}

/// Whether `path` is missing or an empty directory.
fn empty(path: &Path) -> bool {
    fs::read_dir(path).map_or(!path.exists(), |mut entries| entries.next().is_none())
}

/// Backs the running (or opened) server up into `dir`, which must be missing or empty.
pub async fn backup(services: &Services, dir: &Path) -> Result<Manifest, Failure> {
    let inside = |place: &Path| {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        absolute(dir).starts_with(absolute(place))
    };
    if inside(&services.config.media_path()) || inside(&services.config.database.path) {
        return Err(Failure::Refused(format!(
            "{} is inside the data or media directory: back up elsewhere",
            dir.display()
        )));
    }
    // No purge deletes a file the checkpoint names until the copy is done.
    let _files = services.media.hold_files().await;
    tokio::task::block_in_place(|| copy_out(services, dir))
}

fn copy_out(services: &Services, dir: &Path) -> Result<Manifest, Failure> {
    if !empty(dir) {
        return Err(Failure::Refused(format!(
            "{} is not empty: back up into a new directory",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let created_ms = crate::util::now_ms();
    let db = dir.join("db");
    (services.storage.checkpoint(&db))
        .map_err(|e| Failure::Io(format!("cannot checkpoint the database: {e}")))?;
    let (media_files, media_bytes) = copy_tree(&services.config.media_path(), &dir.join("media"))?;
    let mut secrets = Vec::new();
    for (name, path) in secret_files(&services.config) {
        if let Some(path) = path.filter(|p| p.exists()) {
            fs::create_dir_all(dir.join("secrets")).map_err(io("cannot create", dir))?;
            copy_file(path, &dir.join("secrets").join(name))?;
            secrets.push(name.to_owned());
        }
    }
    let manifest = Manifest {
        kith_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: kith_storage::schema::CURRENT,
        server_name: services.config.server_name.clone(),
        created_ms,
        media_files,
        media_bytes,
        secret_files: secrets,
    };
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_synced(&dir.join(MANIFEST), &text)?;
    Ok(manifest)
}

/// Restores the backup in `dir` into `config`'s data directory (and media directory),
/// which must be empty; kith must not be running on them.
pub fn restore(config: &Config, dir: &Path) -> Result<Manifest, Failure> {
    let manifest_path = dir.join(MANIFEST);
    let text = fs::read(&manifest_path).map_err(|e| {
        Failure::Refused(format!(
            "{} is not a finished kith backup: {e}",
            dir.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| Failure::Refused(format!("{}: {e}", manifest_path.display())))?;
    if manifest.schema_version > kith_storage::schema::CURRENT {
        return Err(Failure::Refused(format!(
            "the backup's database schema ({}) is newer than this kith's ({}): restore it with \
             kith {} or later",
            manifest.schema_version,
            kith_storage::schema::CURRENT,
            manifest.kith_version
        )));
    }
    if manifest.server_name != config.server_name {
        return Err(Failure::Refused(format!(
            "the backup is of {}, the configuration names {}: a server's name cannot change",
            manifest.server_name, config.server_name
        )));
    }
    let (data, media) = (&config.database.path, config.media_path());
    for target in [data, &media] {
        if !empty(target) {
            return Err(Failure::Refused(format!(
                "{} is not empty: restore into a new data directory",
                target.display()
            )));
        }
    }
    let mut secrets = Vec::new();
    for (name, path) in secret_files(config) {
        if manifest.secret_files.iter().any(|n| n == name) {
            let Some(path) = path else {
                return Err(Failure::Refused(format!(
                    "the backup holds the {name} file: set its path in the configuration"
                )));
            };
            if path.exists() {
                return Err(Failure::Refused(format!("{} exists", path.display())));
            }
            secrets.push((dir.join("secrets").join(name), path.clone()));
        }
    }
    copy_tree(&dir.join("db"), &config.db_path())?;
    copy_tree(&dir.join("media"), &media)?;
    for (from, to) in secrets {
        copy_file(&from, &to)?;
    }
    // Opening checks the copy: the schema (a newer one is refused) and every table.
    kith_storage::Storage::open(&config.db_path())
        .map_err(|e| Failure::Io(format!("the restored database does not open: {e}")))?;
    Ok(manifest)
}

/// Copies the files under `from` (one level of subdirectories, as the media store and a
/// checkpoint have) to `to`, leaving out unfinished ones (`.name.tmp`); their count and
/// bytes.
fn copy_tree(from: &Path, to: &Path) -> Result<(u64, u64), Failure> {
    fs::create_dir_all(to).map_err(io("cannot create", to))?;
    let (mut files, mut bytes) = (0, 0);
    let Ok(entries) = fs::read_dir(from) else {
        return Ok((0, 0));
    };
    for entry in entries {
        let entry = entry.map_err(io("cannot read", from))?;
        let name = entry.file_name();
        let kind = entry.file_type().map_err(io("cannot read", from))?;
        // Unfinished files (`.name.tmp`) and links are not the store's.
        if name.to_string_lossy().starts_with('.') || kind.is_symlink() {
            continue;
        }
        let path = entry.path();
        if kind.is_dir() {
            let (n, size) = copy_tree(&path, &to.join(&name))?;
            files += n;
            bytes += size;
        } else {
            bytes += copy_file(&path, &to.join(&name))?;
            files += 1;
        }
    }
    fs::File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync", to))?;
    Ok((files, bytes))
}

fn copy_file(from: &Path, to: &Path) -> Result<u64, Failure> {
    let size = fs::copy(from, to).map_err(io("cannot copy", from))?;
    fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync", to))?;
    Ok(size)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut file = fs::File::create(path).map_err(io("cannot write", path))?;
    (file.write_all(bytes).and_then(|()| file.sync_all())).map_err(io("cannot write", path))
}
