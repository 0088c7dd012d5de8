//! weir-state: keyed state on redb.
//!
//! [`StateDb`] is the one redb database of a data directory
//! (`state.redb`). [`KeyedState`] is the state of one operator instance: it
//! implements `OperatorState` (of `weir-state-contract`, the contract it
//! shares with the Wasm host) over an in-memory working set
//! (reads that miss load from redb; writes stay dirty in memory) and
//! [`KeyedState::flush`] writes every dirty entry and timer change in **one
//! durable redb commit** (`Durability::Immediate`, two-phase commit, since
//! keys and values come from untrusted guests). A memory budget evicts clean
//! entries, so state larger than memory works. [`KeyedState::preload`]
//! reads an instance's key groups back in one range scan after a restart.
//! Runs of rows are written through redb cursors, which splice a sorted
//! run into the B-tree a leaf at a time (`checkpoint.rs`).
//!
//! Rows are keyed by topology, operator, **key group**, state kind and
//! name, then key (see `keys.rs`), so the state of a key group is one
//! contiguous range: an instance reads only the groups it owns, and
//! rescaling moves ranges.
//!
//! [`StateDb::commit_checkpoint`] writes a checkpoint: the snapshots of
//! every instance ([`KeyedState::snapshot`], taken when the barrier passes
//! it), the engine's metadata and the sinks' pending output, in one durable
//! commit; [`StateDb::latest_checkpoint`] reads it back at recovery, falling
//! back past a damaged record (`checkpoint.rs`). One database per topology.
//! A checkpoint commit that fails inside redb leaves the database
//! unusable until it is reopened: the store reopens it in place for every
//! clone of the handle (`store.rs`) and hands the commit's changes back
//! ([`CommitFailed`]) for the next checkpoint.
//!
//! On a cluster's node each checkpoint is committed by the node's
//! [`Changelog`] (a Kafka transaction: changelog topics, output, input
//! offsets) before the local commit, and a node that takes a partition
//! over writes the rows read back from it ([`StateDb::apply_changelog`],
//! `changelog.rs`).
//!
//! Not here: when to snapshot and commit (the engine's checkpoint
//! coordinator decides).

mod changelog;
mod checkpoint;
mod held;
mod keyed;
mod keys;
mod store;

pub use changelog::{
    ChangeRecord, Changelog, ChangelogOffset, RestoreBatch, change_records, event_time_record,
};
pub use checkpoint::{Checkpoint, CommitFailed, CommitStats, KeptCheckpoint, StateSnapshot};
pub use held::KeyTest;
pub use keyed::{KeyedState, Preloaded, StateBudget};
pub use weir_state_contract::SnapshotRow;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use redb::{Database, TableDefinition};

use store::Store;

/// Values, map entries and lists, by the row keys of `keys.rs`.
pub(crate) const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keyed_state_v1");
/// Registered timers, by scope, key group, domain, time and key.
pub(crate) const TIMERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("timers_v1");

/// redb's page cache per database. redb's default (1 GiB) would let one
/// topology's cache grow far past its state budget; pages it drops are
/// still in the operating system's page cache, so misses stay cheap
/// (`weir-bench recovery --keys 3000000`: restore 10.4 s against 10.2 s
/// with the default, peak RSS 480 MiB against 713 MiB).
const REDB_CACHE_BYTES: usize = 64 << 20;

/// The state store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("cannot open the state database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("state database: {0}")]
    Db(String),
    /// The reason says what to fix (the brokers, or how the operator is
    /// keyed).
    #[error("the changelog refused the checkpoint (nothing of it is committed): {0}")]
    Changelog(String),
    #[error(
        "checkpoint {id} is damaged ({reason}) and no earlier checkpoint is kept to fall back to: start from a savepoint, or remove the state to start afresh"
    )]
    Damaged { id: u64, reason: String },
}

pub(crate) fn db_err(e: impl std::fmt::Display) -> StateError {
    StateError::Db(e.to_string())
}

/// Checkpoint progress shared by the handles of one database.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    committed: AtomicU64,
    requested: AtomicBool,
}

/// The state database of a topology (`<dir>/state.redb`).
#[derive(Debug, Clone)]
pub struct StateDb {
    store: Arc<Store>,
    pub(crate) progress: Arc<Progress>,
    /// The directory of `state.redb`, for its disk's free space.
    dir: Arc<Path>,
    /// Where committed checkpoints' rows go besides this database (a
    /// cluster node's changelog topics), shared by every clone.
    changelog: Arc<std::sync::RwLock<Option<Arc<dyn Changelog>>>>,
}

/// One file's slot in [`OPEN_STORES`]: its store while a handle holds it.
type StoreSlot = Arc<std::sync::Mutex<std::sync::Weak<Store>>>;

/// The state databases this process has open, by file: redb refuses a
/// second open of a file, and on a cluster's node a standby's tailer
/// writes into the database the topology's job has open, so
/// [`StateDb::open`] of an open file shares its store. Holds no database
/// alive (an entry whose handles all went is dropped at the next open);
/// the list's lock is held only to find a file's slot, the slot's across
/// the open (a repair after a crash may take a while).
static OPEN_STORES: std::sync::Mutex<Vec<(std::path::PathBuf, StoreSlot)>> =
    std::sync::Mutex::new(Vec::new());

/// The store of `path` (`key`: its canonical form): the one this process
/// has open, or a new one; `fresh`: refuse one that is open.
fn shared_store(
    path: &Path,
    key: std::path::PathBuf,
    fresh: bool,
) -> Result<Arc<Store>, StateError> {
    let slot = {
        let mut open = OPEN_STORES.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, slot)| {
            Arc::strong_count(slot) > 1
                || slot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .strong_count()
                    > 0
        });
        match open.iter().find(|(p, _)| *p == key) {
            Some((_, slot)) => slot.clone(),
            None => {
                let slot = StoreSlot::default();
                open.push((key, slot.clone()));
                slot
            }
        }
    };
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(store) = slot.upgrade() {
        if fresh {
            return Err(StateError::Open {
                path: path.display().to_string(),
                reason: "it is open in this process (stop what uses it first)".into(),
            });
        }
        return Ok(store);
    }
    let store = Arc::new(Store::open(path)?);
    *slot = Arc::downgrade(&store);
    Ok(store)
}

impl StateDb {
    /// Opens (or creates) `<data_dir>/state.redb`; a file this process has
    /// open already is shared (its checkpoint bookkeeping and changelog
    /// are per handle set: each `open` starts its own).
    pub fn open(data_dir: &Path) -> Result<StateDb, StateError> {
        let path = data_dir.join("state.redb");
        std::fs::create_dir_all(data_dir).map_err(|e| StateError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        StateDb::open_store(data_dir, false)
    }

    /// [`StateDb::open`]; `fresh`: refuse a file this process has open.
    fn open_store(data_dir: &Path, fresh: bool) -> Result<StateDb, StateError> {
        let path = data_dir.join("state.redb");
        let key = std::fs::canonicalize(data_dir)
            .map(|d| d.join("state.redb"))
            .unwrap_or_else(|_| path.clone());
        let store = shared_store(&path, key, fresh)?;
        Ok(StateDb {
            store,
            progress: Arc::default(),
            dir: data_dir.into(),
            changelog: Arc::default(),
        })
    }

    /// The redb database, for one transaction's start (not to be kept: a
    /// reopen after a failed commit waits for its holders).
    pub(crate) fn db(&self) -> Result<Arc<Database>, StateError> {
        self.store.db()
    }

    /// Closes the database and opens it again, for every clone of this
    /// handle: after a commit failed inside redb, which refuses every
    /// write until then. Read snapshots of the old database are renewed
    /// at their next use ([`StateDb::generation`]).
    pub fn reopen(&self) -> Result<(), StateError> {
        self.store.reopen()
    }

    /// How many times the database was reopened.
    pub(crate) fn generation(&self) -> u64 {
        self.store.generation()
    }

    /// Sets which keys this node holds now, for every handle of the file
    /// (`None`: all of them). Running instances see it at their next
    /// state call (see `held.rs`).
    pub fn set_held_keys(&self, test: Option<KeyTest>) {
        self.store.held.set(test);
    }

    /// The keys this node holds, for the instances.
    pub(crate) fn held_keys(&self) -> &held::HeldKeys {
        &self.store.held
    }

    /// Bytes an unprivileged writer may still use on the database's disk
    /// (the checkpoint coordinator refuses a commit that would not fit:
    /// redb cannot be written again after a failed write until reopened,
    /// see [`StateDb::reopen`]).
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let st = rustix::fs::statvfs(&*self.dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Replaces `<data_dir>/state.redb` by a copy of the savepoint at
    /// `savepoint` (written by [`StateDb::export`]) and opens it.
    pub fn open_from(data_dir: &Path, savepoint: &Path) -> Result<StateDb, StateError> {
        let path = data_dir.join("state.redb");
        let copy_err = |reason: String| StateError::Open {
            path: savepoint.display().to_string(),
            reason,
        };
        if !savepoint.is_file() {
            return Err(copy_err("no such savepoint".into()));
        }
        std::fs::create_dir_all(data_dir).map_err(|e| copy_err(e.to_string()))?;
        let partial = data_dir.join("state.redb.partial");
        std::fs::copy(savepoint, &partial).map_err(|e| copy_err(e.to_string()))?;
        std::fs::rename(&partial, &path).map_err(|e| copy_err(e.to_string()))?;
        let db = StateDb::open_store(data_dir, true)?;
        db.mark_imported()?;
        Ok(db)
    }
}
