//! One process at a time per data directory: `weir serve` and `weir run
//! --topology` take an exclusive lock on `<data-dir>/.lock` before they
//! touch streams or state there, so a local run pointed at a live server's
//! directory is refused instead of appending to its streams unseen.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// The lock file's name inside a data directory.
const LOCK_FILE: &str = ".lock";

/// The directories this process holds, with their locked files.
static HELD: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// Locks `dir` for the rest of this process; a second call for the same
/// directory is a no-op (a second lock of the same file from this process
/// would be refused like another process's).
pub(crate) fn hold(dir: &Path) -> Result<()> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(d, _)| d == dir) {
        return Ok(());
    }
    let file = lock(dir)?;
    held.push((dir.to_path_buf(), file));
    Ok(())
}

/// Creates `dir` if needed and locks it for this process (released when the
/// returned file is dropped or the process ends, even by SIGKILL).
pub(crate) fn lock(dir: &Path) -> Result<File> {
    // Owner only: it holds the host secret, state and events.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => bail!(
            "the data directory {} is in use by another weir process (a `weir serve` or \
             `weir run`): stop it, or give this one another --data-dir",
            dir.display()
        ),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another weir process"), "{err}");
        drop(first);
        lock(dir.path()).unwrap();
    }
}
