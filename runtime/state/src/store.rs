//! The redb handle that every clone of a [`StateDb`](crate::StateDb)
//! shares, and its reopening after a failed commit.
//!
//! redb refuses every write (and every read that misses its cache) after
//! an I/O error in a commit, until the database is closed and opened
//! again. [`Store::reopen`] does that in place: the clones held by the
//! checkpoint coordinator and by every operator instance see the new
//! database at their next access, and [`Store::generation`] tells an
//! instance that its read snapshot belongs to the old one.
//!
//! Under `WEIR_FAULT=checkpoint-redb-error[:N]` (see `weir_io::fault`) the
//! database is opened on [`FaultyFile`], a file backend whose sync fails
//! with an injected EIO during a checkpoint commit, so redb fails that
//! commit itself and stays unusable until reopened, as after a real one.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};
use weir_io::fault::{self, FaultPoint};

use crate::{REDB_CACHE_BYTES, STATE, StateError, TIMERS, db_err};

/// How long a reopen waits for the accesses in progress on the old
/// database (each holds it for one `begin_read`/`begin_write` call).
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// The open database of a `state.redb` file.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    /// `None` once a reopen has failed: every access then fails.
    current: RwLock<Option<Arc<Database>>>,
    /// Bumped by each reopen.
    generation: AtomicU64,
    /// Set while a checkpoint commit runs (where the fault point fails).
    in_checkpoint: Arc<AtomicBool>,
    /// See [`StateDb::changelog_lock`](crate::StateDb::changelog_lock).
    pub(crate) changelog_lock: Mutex<()>,
    /// See [`StateDb::set_held_keys`](crate::StateDb::set_held_keys).
    pub(crate) held: crate::held::HeldKeys,
}

impl Store {
    /// Opens (or creates) the database at `path` with its tables.
    pub(crate) fn open(path: &Path) -> Result<Store, StateError> {
        let in_checkpoint = Arc::new(AtomicBool::new(false));
        let db = open_database(path, &in_checkpoint)?;
        Ok(Store {
            path: path.to_path_buf(),
            current: RwLock::new(Some(Arc::new(db))),
            generation: AtomicU64::new(0),
            in_checkpoint,
            changelog_lock: Mutex::new(()),
            held: crate::held::HeldKeys::default(),
        })
    }

    /// The database, for one transaction's start (not to be kept: a
    /// reopen waits until no one holds the old one).
    pub(crate) fn db(&self) -> Result<Arc<Database>, StateError> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.clone().ok_or_else(|| {
            StateError::Db(format!(
                "the state database {} could not be reopened after a failed commit; the run must restart",
                self.path.display()
            ))
        })
    }

    /// How many times the database was reopened.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks the start and end of a checkpoint commit.
    pub(crate) fn in_checkpoint(&self, on: bool) {
        self.in_checkpoint.store(on, Ordering::Release);
    }

    /// Closes the database and opens it again (redb recovers what the
    /// failed commit left). Accesses wait meanwhile: the old database
    /// cannot serve them.
    pub(crate) fn reopen(&self) -> Result<(), StateError> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.take() {
            // Others hold it only inside one call; redb keeps the file
            // locked until the last holder drops it.
            let deadline = Instant::now() + REOPEN_WAIT;
            while Arc::strong_count(&old) > 1 {
                if Instant::now() > deadline {
                    *current = Some(old);
                    return Err(StateError::Db(format!(
                        "the state database {} is still in use {}s after a failed commit; it could not be reopened",
                        self.path.display(),
                        REOPEN_WAIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(old);
        }
        let db = open_database(&self.path, &self.in_checkpoint)?;
        *current = Some(Arc::new(db));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

fn open_database(path: &Path, in_checkpoint: &Arc<AtomicBool>) -> Result<Database, StateError> {
    let open_err = |reason: String| StateError::Open {
        path: path.display().to_string(),
        reason,
    };
    let mut builder = Database::builder();
    builder.set_cache_size(REDB_CACHE_BYTES);
    let db = if fault::is_armed(FaultPoint::CheckpointRedbError) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| open_err(e.to_string()))?;
        let inner = FileBackend::new(file).map_err(|e| open_err(e.to_string()))?;
        builder.create_with_backend(FaultyFile {
            inner,
            in_checkpoint: in_checkpoint.clone(),
        })
    } else {
        builder.create(path)
    }
    .map_err(|e| open_err(e.to_string()))?;
    let txn = db.begin_write().map_err(db_err)?;
    txn.open_table(STATE).map_err(db_err)?;
    txn.open_table(TIMERS).map_err(db_err)?;
    txn.commit().map_err(db_err)?;
    Ok(db)
}

/// A file backend whose sync fails while a checkpoint commits and the
/// `checkpoint-redb-error` fault point has failures left.
#[derive(Debug)]
struct FaultyFile {
    inner: FileBackend,
    in_checkpoint: Arc<AtomicBool>,
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.in_checkpoint.load(Ordering::Acquire) {
            fault::reach(FaultPoint::CheckpointRedbError)?;
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
