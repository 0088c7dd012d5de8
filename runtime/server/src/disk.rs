//! Disk space of the data directory: produce is refused (507) while the
//! free space is under a threshold, so checkpoints still have room, and
//! when a write meets a full disk. Reads go on; nothing needs a restart
//! when space comes back.

use std::path::{Path, PathBuf};

/// Free bytes under which produce is refused, by default.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// The data directory's disk is (nearly) full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data directory {dir} has {free} bytes free, under the {min} kept for checkpoints (--min-free-bytes): free some space; produce resumes by itself"
)]
pub struct DiskFull {
    pub dir: String,
    pub free: u64,
    pub min: u64,
}

/// Watches the free space of one directory.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    dir: PathBuf,
    min_free: u64,
}

impl DiskSpace {
    pub fn new(dir: &Path, min_free: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_path_buf(),
            min_free,
        }
    }

    /// Bytes an unprivileged writer may still use on the directory's
    /// filesystem.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let st = rustix::fs::statvfs(&self.dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Refuses when the free space is under the threshold. A failed
    /// look-up refuses nothing (the write itself will tell).
    pub fn check(&self) -> Result<(), DiskFull> {
        if self.min_free == 0 {
            return Ok(());
        }
        match self.free_bytes() {
            Ok(free) if free < self.min_free => Err(DiskFull {
                dir: self.dir.display().to_string(),
                free,
                min: self.min_free,
            }),
            _ => Ok(()),
        }
    }
}

/// Whether `e` says the disk is full (or the quota used up).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_above_the_free_space_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let free = DiskSpace::new(dir.path(), 1).free_bytes().unwrap();
        assert!(free > 0);
        let full = DiskSpace::new(dir.path(), u64::MAX).check().unwrap_err();
        assert_eq!(full.min, u64::MAX);
        assert!(full.to_string().contains("--min-free-bytes"), "{full}");
        assert_eq!(DiskSpace::new(dir.path(), 0).check(), Ok(()));
        assert_eq!(DiskSpace::new(dir.path(), 1).check(), Ok(()));
    }

    #[test]
    fn enospc_is_a_full_disk_and_other_errors_are_not() {
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(28)));
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(122)));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(5)));
    }
}
