//! Private files: the data directory is `0700`; the SQLite database, its
//! `-wal` and `-shm` files and the key files are `0600`. New files get these
//! modes from the process umask (`077`, set first thing in `main`) or are
//! created with them; files of an older install are tightened at start-up,
//! with a log line for each change.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_config::Config;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode `0700`, or tightens it.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    }
    tighten(dir, DIR_MODE).map(|_| ())
}

/// Creates `dir` and missing parents with mode `0700`; an existing
/// directory is left as it is (it may be shared, such as `/var/lib`).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Sets `path` to `mode` if group or others have any access to it; `false`
/// if it was already private or does not exist.
pub fn tighten(path: &Path, mode: u32) -> io::Result<bool> {
    let current = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if current & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, Permissions::from_mode(mode))?;
    tracing::info!(
        path = %path.display(),
        from = %format!("{current:04o}"),
        to = %format!("{mode:04o}"),
        "tightened the permissions of a private file"
    );
    Ok(true)
}

/// The SQLite database and its journal files, if the database is SQLite.
pub fn database_files(config: &Config) -> Vec<PathBuf> {
    let Some(db) = berth_meta_sqlite::database_file(config.database.url.expose()) else { return Vec::new() };
    let with = |suffix: &str| {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    vec![with("-wal"), with("-shm"), db]
}

/// Tightens the database, its journal files, the JWT key and the
/// directories that hold them (once they exist). Failures are logged, not
/// fatal: the files belong to the operator.
pub fn secure(config: &Config) {
    let mut files = database_files(config);
    files.extend(config.auth.jwt_key_file.clone());
    for file in &files {
        if let Err(e) = tighten(file, FILE_MODE) {
            tracing::warn!(path = %file.display(), error = %e, "cannot make a private file 0600");
        }
    }
    let mut dirs = vec![config.data_dir.clone()];
    let auth_dir = config.auth.jwt_key_file.as_ref().and_then(|k| k.parent());
    dirs.extend(auth_dir.filter(|d| d.starts_with(&config.data_dir)).map(Path::to_path_buf));
    for dir in &dirs {
        if let Err(e) = tighten(dir, DIR_MODE) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot make a private directory 0700");
        }
    }
}

/// Sets the process umask so that everything Berth creates is private.
#[allow(unsafe_code)]
pub fn private_umask() {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Flushes everything written to the filesystem that holds `dir` (data and
/// metadata, renames included) to stable storage: one `syncfs` after a
/// batch of files instead of an `fsync` per file.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
#[allow(unsafe_code)]
pub fn sync_filesystem(_dir: &Path) -> io::Result<()> {
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    Ok(())
}

/// Makes the entries of `dir` (files created or renamed into it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
