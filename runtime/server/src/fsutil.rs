//! Small file helpers shared by the registry, the topology store and the
//! control plane.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates `dir` (and its missing parents) readable by its owner only
/// (0700): it holds the host secret, state and events. An existing
/// directory keeps its mode.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` through `<path>.partial`, synced, then renamed
/// over it, so a reader sees the old contents or the new, never a part.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
