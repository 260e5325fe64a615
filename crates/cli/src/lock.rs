//! One writer per mailbox in the embedded mode: a `migrate` holds an exclusive lock on
//! its state file (`STATE.lock`) and one on the source/destination pair (in the user's
//! runtime directory), so a second run on the same state, or on the same mailboxes with
//! another state file, refuses at once instead of appending beside the first.
//! Also owns how the state file is created: 0600, never through a symbolic link.

use anyhow::{Context, bail};
use mailshift_core::endpoint::Endpoint;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Held locks; released when dropped (or when the process dies).
pub struct RunLock {
    _files: Vec<File>,
}

/// Another run holds a lock (exit status 6).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Busy(pub String);

/// Opens (creating 0600 if needed) a file of ours without following a symbolic link.
pub fn private_file(path: &Path) -> anyhow::Result<File> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symbolic link; mailshift does not follow links for its own files: \
             remove it or choose another path",
            path.display()
        );
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The state file, created 0600 (never through a link) before SQLite opens it.
pub fn prepare_state_file(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    private_file(path).map(drop)
}

fn try_lock(path: &Path, what: &str) -> anyhow::Result<File> {
    let mut f = private_file(path)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Busy(format!(
                "another mailshift migrate{} is running on {what}; wait for it to finish (or \
                 stop it) and run again: two runs at once would copy the same messages twice",
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" ({holder})")
                }
            ))
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    f.set_len(0)?;
    let _ = writeln!(f, "pid {}", std::process::id());
    Ok(f)
}

/// Where pair locks live: `$XDG_RUNTIME_DIR/mailshift`, else a private directory in
/// the system's temporary directory.
fn runtime_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    let dir = base.join(format!("mailshift-{uid}"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the lock directory {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

impl RunLock {
    /// Locks the state file and the pair of mailboxes, or says who holds them.
    pub fn acquire(state: &Path, source: &Endpoint, dest: &Endpoint) -> anyhow::Result<RunLock> {
        let mut lock_path = state.as_os_str().to_owned();
        lock_path.push(".lock");
        let state_lock = try_lock(
            Path::new(&lock_path),
            &format!("the state file {}", state.display()),
        )?;
        let key = |e: &Endpoint| {
            format!(
                "{}:{}/{}",
                e.host.trim_end_matches('.').to_ascii_lowercase(),
                e.port,
                e.user.to_lowercase()
            )
        };
        let digest = hex::encode(Sha256::digest(format!("{}\n{}", key(source), key(dest))));
        let mut files = vec![state_lock];
        match runtime_dir() {
            Ok(dir) => files.push(try_lock(
                &dir.join(format!("pair-{}.lock", &digest[..32])),
                &format!("the mailboxes {source} -> {dest}"),
            )?),
            // A read-only container, say: the state file's lock still keeps a second run
            // on the same state out; runs with other state files are not seen.
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "no lock on the pair of mailboxes: only runs on the same state file are kept apart"
            ),
        }
        Ok(RunLock { _files: files })
    }
}
