//! [`KeyedState`]: the state of one operator instance, a working set in
//! memory over rows in redb.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;

use redb::{Durability, ReadOnlyTable, ReadableDatabase};
use weir_state_contract::{OperatorState, StateOp, StateStoreError, TimeDomain, ValueWrite};
use weir_types::{KeyGroupRange, key_group_of};

use crate::checkpoint::{RowOp, StateSnapshot, Table};
use crate::held::{KeyTest, holds};
use crate::keys::{self, Kind};
use crate::{STATE, StateDb, StateError, TIMERS, db_err};

/// Memory the working set of one instance may use before clean entries are
/// evicted, and dirty ones call for a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBudget {
    pub bytes: usize,
}

impl Default for StateBudget {
    fn default() -> Self {
        StateBudget { bytes: 64 << 20 }
    }
}

/// A cached item: its data, whether it differs from redb, and its size.
#[derive(Debug)]
struct Entry<T> {
    data: T,
    dirty: bool,
    bytes: usize,
    /// The checkpoint whose commit this entry's last change waits for (0:
    /// none). It stays in memory until then: redb does not have it yet.
    pin: u64,
}

/// What an entry of the working set costs beyond its bytes of name, key
/// and data: the hash map slot, the `Id`'s and the data's heap blocks.
/// Counted so that the budget bounds real memory, not just payload.
const ENTRY_OVERHEAD: usize = 128;
/// The entries of one key's map state.
type MapEntries = BTreeMap<Vec<u8>, Vec<u8>>;

/// What a cached list costs in the working set.
fn list_bytes(name: &str, key: &[u8], items: &[Vec<u8>]) -> usize {
    ENTRY_OVERHEAD + name.len() + key.len() + items.iter().map(|i| i.len() + 4).sum::<usize>()
}

/// What a cached map costs in the working set.
fn map_bytes(name: &str, key: &[u8], data: &MapEntries) -> usize {
    ENTRY_OVERHEAD
        + name.len()
        + key.len()
        + data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

fn domain_code(d: TimeDomain) -> u8 {
    match d {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

/// Cached entries by state name, then key; looked up with borrowed names
/// and keys, so a hit allocates nothing.
struct Cache<T>(HashMap<String, HashMap<Vec<u8>, Entry<T>>>);

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache(HashMap::default())
    }
}

impl<T> Cache<T> {
    fn get(&self, name: &str, key: &[u8]) -> Option<&Entry<T>> {
        self.0.get(name)?.get(key)
    }
    fn get_mut(&mut self, name: &str, key: &[u8]) -> Option<&mut Entry<T>> {
        self.0.get_mut(name)?.get_mut(key)
    }
    fn insert(&mut self, name: &str, key: &[u8], entry: Entry<T>) {
        match self.0.get_mut(name) {
            Some(by_key) => {
                by_key.insert(key.to_vec(), entry);
            }
            None => {
                let mut by_key = HashMap::default();
                by_key.insert(key.to_vec(), entry);
                self.0.insert(name.to_string(), by_key);
            }
        }
    }
    /// Makes room for `additional` more entries under `name`, unless
    /// some are there already (then it grows as it goes).
    fn reserve(&mut self, name: &str, additional: usize) {
        if !self.0.contains_key(name) {
            let mut by_key = HashMap::default();
            by_key.reserve(additional);
            self.0.insert(name.to_string(), by_key);
        }
    }
    /// Caches an entry just read from redb (clean), counting its bytes.
    fn insert_clean(&mut self, cached: &mut usize, name: &str, key: &[u8], data: T, bytes: usize) {
        *cached += bytes;
        self.insert(
            name,
            key,
            Entry {
                data,
                dirty: false,
                bytes,
                pin: 0,
            },
        );
    }
    fn retain(&mut self, mut keep: impl FnMut(&Entry<T>) -> bool) {
        for by_key in self.0.values_mut() {
            by_key.retain(|_, e| keep(e));
        }
    }
    /// Drops the clean entries of keys `drop` names; answers their bytes.
    fn drop_clean(&mut self, drop: &dyn Fn(&[u8]) -> bool) -> usize {
        let mut freed = 0;
        for by_key in self.0.values_mut() {
            by_key.retain(|key, e| {
                let gone = !e.dirty && drop(key);
                if gone {
                    freed += e.bytes;
                }
                !gone
            });
        }
        freed
    }
    /// Every dirty entry, with its name and key.
    fn dirty_mut(&mut self) -> impl Iterator<Item = (&str, &[u8], &mut Entry<T>)> {
        self.0.iter_mut().flat_map(|(name, by_key)| {
            by_key
                .iter_mut()
                .filter(|(_, e)| e.dirty)
                .map(move |(key, e)| (name.as_str(), key.as_slice(), e))
        })
    }
}

fn store_err(e: impl std::fmt::Display) -> StateStoreError {
    StateStoreError(e.to_string())
}

/// Adds to `timers` (by domain code) the timer rows of `scope` in the key
/// groups `owned` whose key `take` accepts.
fn load_timers(
    db: &StateDb,
    scope: &[u8],
    owned: KeyGroupRange,
    timers: &mut [BTreeSet<(i64, Vec<u8>)>; 2],
    take: &dyn Fn(&[u8]) -> bool,
) -> Result<(), StateError> {
    let txn = db.db()?.begin_read().map_err(db_err)?;
    let table = txn.open_table(TIMERS).map_err(db_err)?;
    for group in owned.start..owned.end {
        let (start, end) = keys::group_range(scope, group);
        for row in table
            .range::<&[u8]>(start.as_slice()..end.as_slice())
            .map_err(db_err)?
        {
            let (k, _) = row.map_err(db_err)?;
            if let Some((domain, time, key)) = keys::parse_timer_row(scope.len(), k.value())
                && take(&key)
            {
                timers[usize::from(domain.min(1))].insert((time, key));
            }
        }
    }
    Ok(())
}

/// The keyed state of one operator instance.
pub struct KeyedState {
    db: StateDb,
    scope: Vec<u8>,
    owned: KeyGroupRange,
    budget: StateBudget,
    values: Cache<Option<Vec<u8>>>,
    maps: Cache<MapEntries>,
    lists: Cache<Vec<Vec<u8>>>,
    /// Timers of the owned key groups, by domain code.
    timers: [BTreeSet<(i64, Vec<u8>)>; 2],
    /// Timer changes since the last flush: (added, domain, time, key).
    timer_changes: Vec<(bool, u8, i64, Vec<u8>)>,
    cached_bytes: usize,
    dirty_bytes: usize,
    /// A snapshot to read misses from, renewed after each flush or
    /// checkpoint commit (rows this instance wrote since the snapshot are
    /// still in the working set).
    reader: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    /// The last committed checkpoint when `reader` was opened.
    reader_at: u64,
    /// The database's generation when `reader` was opened.
    reader_generation: u64,
    /// `(committed checkpoint, working set bytes)` after the last eviction
    /// pass that fell short of its target.
    evict_stalled: Option<(u64, usize)>,
    /// Whether changes reach redb only through checkpoints
    /// ([`KeyedState::snapshot`]) rather than [`KeyedState::flush`].
    checkpointed: bool,
    /// Whether the working set holds every row of the owned key groups
    /// (a [`KeyedState::preload`] that fit, and nothing evicted since):
    /// then a miss is an absent entry, answered without a lookup.
    complete: bool,
    /// The keys this node holds (see `held.rs`) as of `held_epoch`: only
    /// their timers are in `timers`.
    held: Option<KeyTest>,
    held_epoch: u64,
    /// A failure to bring memory in line with a change of held keys, seen
    /// where no error could be returned: the next fallible call fails.
    held_failed: Option<String>,
}

/// What [`KeyedState::preload`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preloaded {
    /// Rows read.
    pub rows: u64,
    /// Bytes of the rows' keys and values.
    pub bytes: u64,
    /// Whether every row of the owned key groups fit the budget.
    pub complete: bool,
    /// The time the range scan took (the rest builds the working set).
    pub read: std::time::Duration,
}

impl std::fmt::Debug for KeyedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedState")
            .field("owned", &self.owned)
            .field("cached_bytes", &self.cached_bytes)
            .field("dirty_bytes", &self.dirty_bytes)
            .finish_non_exhaustive()
    }
}

impl KeyedState {
    /// The state of operator `operator` of `topology` for the key groups
    /// in `owned`; loads the timers of those groups.
    pub fn open(
        db: &StateDb,
        topology: &str,
        operator: &str,
        owned: KeyGroupRange,
        budget: StateBudget,
    ) -> Result<KeyedState, StateError> {
        let scope = keys::scope(topology, operator);
        let mut timers: [BTreeSet<(i64, Vec<u8>)>; 2] = Default::default();
        let (held_epoch, held) = db.held_keys().current();
        load_timers(db, &scope, owned, &mut timers, &|key| holds(&held, key))?;
        Ok(KeyedState {
            db: db.clone(),
            scope,
            owned,
            budget,
            values: Cache::default(),
            maps: Cache::default(),
            lists: Cache::default(),
            timers,
            timer_changes: Vec::new(),
            cached_bytes: 0,
            dirty_bytes: 0,
            reader: None,
            reader_at: 0,
            reader_generation: db.generation(),
            evict_stalled: None,
            checkpointed: false,
            complete: false,
            held,
            held_epoch,
            held_failed: None,
        })
    }

    /// Brings memory in line with the keys the node holds, when that
    /// changed since the last call (partitions moved while the job runs):
    /// timers of keys it no longer holds leave memory (their rows stay: the
    /// changelog gave them to the partition's new owner); for keys it
    /// gained, whose rows a restore just wrote, clean cached entries are
    /// dropped, the read snapshot renewed and their timers loaded.
    fn follow_held(&mut self) -> Result<(), StateStoreError> {
        if let Some(failed) = &self.held_failed {
            return Err(StateStoreError(failed.clone()));
        }
        self.sync_held().map_err(|e| {
            let failed = format!("cannot take over the state of keys that moved to this node: {e}");
            self.held_failed = Some(failed.clone());
            StateStoreError(failed)
        })
    }

    fn sync_held(&mut self) -> Result<(), StateError> {
        if self.db.held_keys().epoch() == self.held_epoch {
            return Ok(());
        }
        let (epoch, now) = self.db.held_keys().current();
        let before = std::mem::replace(&mut self.held, now.clone());
        self.held_epoch = epoch;
        for set in &mut self.timers {
            set.retain(|(_, key)| holds(&now, key));
        }
        if before.is_none() {
            // Every key was held: none is gained.
            return Ok(());
        }
        let gained = |key: &[u8]| holds(&now, key) && !holds(&before, key);
        let freed = self.values.drop_clean(&gained)
            + self.maps.drop_clean(&gained)
            + self.lists.drop_clean(&gained);
        self.cached_bytes -= freed.min(self.cached_bytes);
        self.reader = None;
        let mut found: [BTreeSet<(i64, Vec<u8>)>; 2] = Default::default();
        load_timers(&self.db, &self.scope, self.owned, &mut found, &gained)?;
        for (set, more) in self.timers.iter_mut().zip(found) {
            set.extend(more);
        }
        if self.complete {
            // The gained keys' rows are in redb only: read them in, as a
            // start would.
            self.complete = false;
            self.preload()?;
        }
        Ok(())
    }

    /// From now on changes reach redb only in checkpoints: a flush writes
    /// nothing, [`KeyedState::snapshot`] hands them to the checkpoint, and
    /// dirty state past the budget asks for an early checkpoint instead of
    /// spilling (a spill would put uncheckpointed state into redb).
    pub fn checkpointed(mut self) -> Self {
        self.checkpointed = true;
        self
    }

    /// Reads the rows of the owned key groups into the working set, with
    /// one range scan in row order, until it holds the eviction target
    /// (8/10 of the budget). When every row fits, later misses are known
    /// absent without a lookup (until an entry is evicted): after a
    /// restart, every key is in memory before the first event, at the
    /// cost of one sequential read (`weir-bench recovery`). Call it right
    /// after [`KeyedState::open`]; entries already cached are kept.
    pub fn preload(&mut self) -> Result<Preloaded, StateError> {
        let mut done = Preloaded::default();
        if self.owned.start >= self.owned.end {
            self.complete = true;
            done.complete = true;
            return Ok(done);
        }
        let (start, _) = keys::group_range(&self.scope, self.owned.start);
        let (_, end) = keys::group_range(&self.scope, self.owned.end - 1);
        // First every row is copied out of redb into one buffer, up to the
        // budget; then the working set is built from it. Apart, the scan
        // runs as fast as a bare one (`weir-bench state-store`): building
        // entries between page reads left the allocator consolidating
        // freed pages among a million small blocks, at 10x the scan's time.
        let room = (self.budget.bytes / 10 * 8).saturating_sub(self.cached_bytes);
        let mut rows = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut taken = 0usize;
        let mut complete = true;
        let started = std::time::Instant::now();
        {
            let txn = self.db.db()?.begin_read().map_err(db_err)?;
            let table = txn.open_table(STATE).map_err(db_err)?;
            for row in table
                .range::<&[u8]>(start.as_slice()..end.as_slice())
                .map_err(db_err)?
            {
                let (k, v) = row.map_err(db_err)?;
                let (k, v) = (k.value(), v.value());
                // What its entry costs at most: a map counts the overhead
                // once, not per entry.
                taken += ENTRY_OVERHEAD + k.len() + v.len();
                if taken > room {
                    complete = false;
                    break;
                }
                rows.extend_from_slice(k);
                let value_at = rows.len();
                rows.extend_from_slice(v);
                spans.push((value_at, rows.len()));
            }
        }
        done.read = started.elapsed();
        let damaged = |row: &[u8]| {
            StateError::Db(format!(
                "a state row of {} bytes in the owned key groups does not parse: the state database is damaged; restore a savepoint or remove the state",
                row.len()
            ))
        };
        // The map whose entries are being read: its name, key and entries
        // so far (a map's rows are adjacent).
        let mut map: Option<(String, Vec<u8>, MapEntries)> = None;
        let mut at = 0;
        for &(value_at, end) in &spans {
            let (row, value) = (&rows[at..value_at], &rows[value_at..end]);
            at = end;
            let (kind, name, key, map_key) =
                keys::parse_state_row(self.scope.len(), row).ok_or_else(|| damaged(row))?;
            if map.as_ref().is_some_and(|(n, k, _)| {
                kind != Kind::MapEntry || n.as_str() != name || k.as_slice() != key
            }) {
                let (n, k, data) = map.take().expect("checked above");
                self.cache_map(&n, &k, data);
            }
            done.rows += 1;
            done.bytes += (row.len() + value.len()) as u64;
            match kind {
                Kind::Value => {
                    if self.values.get(name, key).is_none() {
                        // Sized once for the rows read, not grown (and
                        // rehashed) twenty times on the way to a million.
                        self.values.reserve(name, spans.len());
                        let bytes = ENTRY_OVERHEAD + name.len() + key.len() + value.len();
                        self.values.insert_clean(
                            &mut self.cached_bytes,
                            name,
                            key,
                            Some(value.to_vec()),
                            bytes,
                        );
                    }
                }
                Kind::List => {
                    if self.lists.get(name, key).is_none() {
                        let items = keys::decode_list(value).ok_or_else(|| damaged(row))?;
                        let bytes = list_bytes(name, key, &items);
                        self.lists
                            .insert_clean(&mut self.cached_bytes, name, key, items, bytes);
                    }
                }
                Kind::MapEntry => {
                    let (_, _, entries) = map
                        .get_or_insert_with(|| (name.to_string(), key.to_vec(), MapEntries::new()));
                    entries.insert(map_key.to_vec(), value.to_vec());
                }
            }
        }
        // A map cut by the budget is not cached in part.
        if let Some((n, k, data)) = map.take()
            && complete
        {
            self.cache_map(&n, &k, data);
        }
        self.complete = complete;
        done.complete = complete;
        Ok(done)
    }

    /// Caches a whole map read by [`KeyedState::preload`], unless cached.
    fn cache_map(&mut self, name: &str, key: &[u8], data: MapEntries) {
        if self.maps.get(name, key).is_some() {
            return;
        }
        let bytes = map_bytes(name, key, &data);
        self.maps
            .insert_clean(&mut self.cached_bytes, name, key, data, bytes);
    }

    fn group(&self, key: &[u8]) -> u16 {
        key_group_of(key, self.owned.groups).0
    }

    fn reader(&mut self) -> Result<&ReadOnlyTable<&'static [u8], &'static [u8]>, StateStoreError> {
        let committed = self.db.committed_checkpoint();
        let generation = self.db.generation();
        if self.reader_at < committed || self.reader_generation != generation {
            // Entries evicted since were committed after this snapshot, or
            // the database was reopened (the old one reads nothing).
            self.reader = None;
        }
        if self.reader.is_none() {
            self.reader_at = committed;
            self.reader_generation = generation;
            let txn = self
                .db
                .db()
                .map_err(store_err)?
                .begin_read()
                .map_err(store_err)?;
            self.reader = Some(txn.open_table(STATE).map_err(store_err)?);
        }
        Ok(self.reader.as_ref().expect("opened above"))
    }

    fn load_value(&mut self, name: &str, key: &[u8]) -> Result<(), StateStoreError> {
        self.follow_held()?;
        if self.values.get(name, key).is_some() {
            return Ok(());
        }
        let data = if self.complete {
            None
        } else {
            let row = keys::state_row(&self.scope, self.group(key), Kind::Value, name, key);
            self.reader()?
                .get(row.as_slice())
                .map_err(store_err)?
                .map(|v| v.value().to_vec())
        };
        let bytes = ENTRY_OVERHEAD + name.len() + key.len() + data.as_ref().map_or(0, Vec::len);
        self.values
            .insert_clean(&mut self.cached_bytes, name, key, data, bytes);
        Ok(())
    }

    fn load_map(&mut self, name: &str, key: &[u8]) -> Result<(), StateStoreError> {
        self.follow_held()?;
        if self.maps.get(name, key).is_some() {
            return Ok(());
        }
        let mut data = BTreeMap::new();
        if !self.complete {
            let prefix = keys::state_row(&self.scope, self.group(key), Kind::MapEntry, name, key);
            let end = keys::prefix_end(&prefix);
            for row in self
                .reader()?
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())
                .map_err(store_err)?
            {
                let (k, v) = row.map_err(store_err)?;
                data.insert(k.value()[prefix.len()..].to_vec(), v.value().to_vec());
            }
        }
        let bytes = map_bytes(name, key, &data);
        self.maps
            .insert_clean(&mut self.cached_bytes, name, key, data, bytes);
        Ok(())
    }

    fn load_list(&mut self, name: &str, key: &[u8]) -> Result<(), StateStoreError> {
        self.follow_held()?;
        if self.lists.get(name, key).is_some() {
            return Ok(());
        }
        let row = keys::state_row(&self.scope, self.group(key), Kind::List, name, key);
        let stored = if self.complete {
            None
        } else {
            self.reader()?.get(row.as_slice()).map_err(store_err)?
        };
        let data = match stored {
            Some(v) => keys::decode_list(v.value())
                .ok_or_else(|| StateStoreError(format!("list state `{name}` is damaged")))?,
            None => Vec::new(),
        };
        let bytes = list_bytes(name, key, &data);
        self.lists
            .insert_clean(&mut self.cached_bytes, name, key, data, bytes);
        Ok(())
    }

    /// Accounts for an entry re-measured from `old` to `new` bytes that is
    /// now dirty.
    fn touched(cached: &mut usize, dirty: &mut usize, was_dirty: bool, old: usize, new: usize) {
        *cached = (*cached + new).saturating_sub(old);
        *dirty = if was_dirty {
            (*dirty + new).saturating_sub(old)
        } else {
            *dirty + new
        };
    }

    /// Evicts clean entries while the working set is over budget.
    fn evict(&mut self) {
        if self.cached_bytes <= self.budget.bytes {
            return;
        }
        let committed = self.db.committed_checkpoint();
        // A pass that could not reach the target (entries waiting for their
        // checkpoint) is not repeated until a checkpoint commits or the
        // working set grows by another tenth of the budget: a pass visits
        // every entry.
        if let Some((at, cached)) = self.evict_stalled
            && at == committed
            && self.cached_bytes < cached + self.budget.bytes / 10
        {
            return;
        }
        let target = self.budget.bytes / 10 * 8;
        let mut freed = 0usize;
        let over = self.cached_bytes - target.min(self.cached_bytes);
        let mut keep = |dirty: bool, pin: u64, bytes: usize| {
            if !dirty && pin <= committed && freed < over {
                freed += bytes;
                false
            } else {
                true
            }
        };
        self.values.retain(|e| keep(e.dirty, e.pin, e.bytes));
        self.maps.retain(|e| keep(e.dirty, e.pin, e.bytes));
        self.lists.retain(|e| keep(e.dirty, e.pin, e.bytes));
        self.cached_bytes -= freed.min(self.cached_bytes);
        if freed > 0 {
            // Evicted rows are in redb only now: misses must look again.
            self.complete = false;
        }
        self.evict_stalled = (freed < over).then_some((committed, self.cached_bytes));
    }

    /// Whether dirty entries alone exceed the budget: the caller should
    /// flush (they cannot be evicted before they are durable).
    pub fn needs_flush(&self) -> bool {
        self.dirty_bytes > self.budget.bytes
    }

    /// Bytes the working set holds (approximately).
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    fn set_value(&mut self, name: &str, key: &[u8], value: Option<&[u8]>) {
        let bytes = ENTRY_OVERHEAD + name.len() + key.len() + value.map_or(0, <[u8]>::len);
        match self.values.get_mut(name, key) {
            Some(e) => {
                Self::touched(
                    &mut self.cached_bytes,
                    &mut self.dirty_bytes,
                    e.dirty,
                    e.bytes,
                    bytes,
                );
                match (&mut e.data, value) {
                    (Some(d), Some(v)) => {
                        d.clear();
                        d.extend_from_slice(v);
                    }
                    (data, v) => *data = v.map(<[u8]>::to_vec),
                }
                e.dirty = true;
                e.bytes = bytes;
            }
            None => {
                self.cached_bytes += bytes;
                self.dirty_bytes += bytes;
                self.values.insert(
                    name,
                    key,
                    Entry {
                        data: value.map(<[u8]>::to_vec),
                        dirty: true,
                        bytes,
                        pin: 0,
                    },
                );
            }
        }
    }

    fn apply_op(&mut self, op: StateOp) -> Result<(), StateStoreError> {
        match op {
            StateOp::SetValue { name, key, value } => self.set_value(&name, &key, value.as_deref()),
            StateOp::MapPut {
                ref name, ref key, ..
            }
            | StateOp::MapRemove {
                ref name, ref key, ..
            }
            | StateOp::MapClear { ref name, ref key } => {
                self.load_map(name, key)?;
                let e = self.maps.get_mut(name, key).expect("loaded above");
                match &op {
                    StateOp::MapPut { map_key, value, .. } => {
                        e.data.insert(map_key.clone(), value.clone());
                    }
                    StateOp::MapRemove { map_key, .. } => {
                        e.data.remove(map_key);
                    }
                    _ => e.data.clear(),
                }
                let bytes = map_bytes(name, key, &e.data);
                Self::touched(
                    &mut self.cached_bytes,
                    &mut self.dirty_bytes,
                    e.dirty,
                    e.bytes,
                    bytes,
                );
                e.dirty = true;
                e.bytes = bytes;
            }
            StateOp::ListAppend {
                ref name, ref key, ..
            }
            | StateOp::ListReplace {
                ref name, ref key, ..
            } => {
                self.load_list(name, key)?;
                let (name_len, key_len) = (name.len(), key.len());
                let e = self.lists.get_mut(name, key).expect("loaded above");
                match op {
                    StateOp::ListAppend { item, .. } => e.data.push(item),
                    StateOp::ListReplace { items, .. } => e.data = items,
                    _ => {}
                }
                // `name` and `key` moved with the op: their lengths are
                // added to the cost of the list under empty ones.
                let bytes = list_bytes("", &[], &e.data) + name_len + key_len;
                Self::touched(
                    &mut self.cached_bytes,
                    &mut self.dirty_bytes,
                    e.dirty,
                    e.bytes,
                    bytes,
                );
                e.dirty = true;
                e.bytes = bytes;
            }
            // A key this node no longer holds (an event read before its
            // partition moved): the change is written, for the new owner,
            // but its timer never fires here.
            StateOp::RegisterTimer { domain, key, time } => {
                let d = domain_code(domain);
                if !holds(&self.held, &key)
                    || self.timers[usize::from(d)].insert((time, key.clone()))
                {
                    self.timer_changes.push((true, d, time, key));
                }
            }
            StateOp::DeleteTimer { domain, key, time } => {
                let d = domain_code(domain);
                if self.timers[usize::from(d)].remove(&(time, key.clone()))
                    || !holds(&self.held, &key)
                {
                    self.timer_changes.push((false, d, time, key));
                }
            }
        }
        Ok(())
    }

    /// The row writes of every dirty entry and timer change, marking them
    /// clean and pinned to checkpoint `pin` (0 when written directly).
    fn take_changes(&mut self, pin: u64) -> Vec<RowOp> {
        let groups = self.owned.groups;
        let scope = &self.scope;
        let row = |kind: Kind, name: &str, key: &[u8]| {
            keys::state_row(scope, key_group_of(key, groups).0, kind, name, key)
        };
        let mut ops = Vec::new();
        for (name, key, e) in self.values.dirty_mut() {
            let row = row(Kind::Value, name, key);
            ops.push(match &e.data {
                Some(v) => RowOp::Put(Table::State, row, v.clone()),
                None => RowOp::Delete(Table::State, row),
            });
            e.dirty = false;
            e.pin = pin;
        }
        for (name, key, e) in self.maps.dirty_mut() {
            let prefix = row(Kind::MapEntry, name, key);
            ops.push(RowOp::DeletePrefix(prefix.clone()));
            for (map_key, value) in &e.data {
                let mut row = prefix.clone();
                row.extend_from_slice(map_key);
                ops.push(RowOp::Put(Table::State, row, value.clone()));
            }
            e.dirty = false;
            e.pin = pin;
        }
        for (name, key, e) in self.lists.dirty_mut() {
            let row = row(Kind::List, name, key);
            ops.push(if e.data.is_empty() {
                RowOp::Delete(Table::State, row)
            } else {
                RowOp::Put(Table::State, row, keys::encode_list(&e.data))
            });
            e.dirty = false;
            e.pin = pin;
        }
        // One op per timer row, its last change: a timer registered and
        // taken again since the last write is deleted, not put and then
        // deleted (the commit sorts rows, unstably).
        let mut last: HashMap<(u8, i64, Vec<u8>), bool> = HashMap::default();
        for (added, domain, time, key) in self.timer_changes.drain(..) {
            last.insert((domain, time, key), added);
        }
        for ((domain, time, key), added) in last {
            let row = keys::timer_row(scope, key_group_of(&key, groups).0, domain, time, &key);
            ops.push(if added {
                RowOp::Put(Table::Timers, row, Vec::new())
            } else {
                RowOp::Delete(Table::Timers, row)
            });
        }
        self.dirty_bytes = 0;
        ops
    }

    /// Writes every dirty entry and timer change in one durable commit (a
    /// state that is [`checkpointed`](Self::checkpointed) leaves that to
    /// checkpoints and writes nothing here).
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.checkpointed {
            return Ok(());
        }
        let mut ops = self.take_changes(0);
        if ops.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        txn.set_two_phase_commit(true);
        crate::checkpoint::write_rows(&txn, &mut ops)?;
        txn.commit().map_err(db_err)?;
        self.reader = None;
        self.evict();
        Ok(())
    }

    /// Takes every change since the last snapshot, for checkpoint
    /// `checkpoint`; the changed entries stay in memory until that
    /// checkpoint commits.
    pub fn snapshot(&mut self, checkpoint: u64) -> StateSnapshot {
        StateSnapshot::new(self.take_changes(checkpoint))
    }
}

impl OperatorState for KeyedState {
    fn value(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateStoreError> {
        self.load_value(name, key)?;
        Ok(self.values.get(name, key).and_then(|e| e.data.clone()))
    }

    fn append_value(
        &mut self,
        name: &str,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateStoreError> {
        self.load_value(name, key)?;
        Ok(
            match self.values.get(name, key).and_then(|e| e.data.as_ref()) {
                Some(v) => {
                    out.extend_from_slice(v);
                    true
                }
                None => false,
            },
        )
    }

    fn map(
        &mut self,
        name: &str,
        key: &[u8],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StateStoreError> {
        self.load_map(name, key)?;
        Ok(self
            .maps
            .get(name, key)
            .map(|e| e.data.clone())
            .unwrap_or_default())
    }

    fn map_entry(
        &mut self,
        name: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateStoreError> {
        self.load_map(name, key)?;
        Ok(self
            .maps
            .get(name, key)
            .and_then(|e| e.data.get(map_key).cloned()))
    }

    fn list(&mut self, name: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, StateStoreError> {
        self.load_list(name, key)?;
        Ok(self
            .lists
            .get(name, key)
            .map(|e| e.data.clone())
            .unwrap_or_default())
    }

    fn apply(
        &mut self,
        ops: Vec<StateOp>,
        values: &[ValueWrite<'_>],
    ) -> Result<(), StateStoreError> {
        self.follow_held()?;
        for op in ops {
            self.apply_op(op)?;
        }
        for w in values {
            self.set_value(w.name, w.key, w.value);
        }
        if self.needs_flush() {
            if self.checkpointed {
                // Cannot spill uncheckpointed state: ask for a checkpoint.
                self.db.request_checkpoint();
            } else {
                // Dirty state past the budget spills to redb.
                self.flush().map_err(store_err)?;
            }
        }
        self.evict();
        Ok(())
    }

    fn take_due_timers(
        &mut self,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StateStoreError> {
        self.follow_held()?;
        let d = domain_code(domain);
        let set = &mut self.timers[usize::from(d)];
        let later = set.split_off(&(time.saturating_add(1), Vec::new()));
        let due: Vec<(i64, Vec<u8>)> = std::mem::replace(set, later).into_iter().collect();
        for (t, key) in &due {
            self.timer_changes.push((false, d, *t, key.clone()));
        }
        Ok(due)
    }

    fn resident_bytes(&self) -> usize {
        self.cached_bytes()
    }

    fn next_timer(&mut self, domain: TimeDomain) -> Option<i64> {
        // A failure here shows at the next fallible call.
        let _ = self.follow_held();
        self.timers[usize::from(domain_code(domain))]
            .first()
            .map(|(t, _)| *t)
    }

    fn flush(&mut self) -> Result<(), StateStoreError> {
        KeyedState::flush(self).map_err(store_err)
    }

    fn snapshot(&mut self, checkpoint: u64) -> Result<StateSnapshot, StateStoreError> {
        Ok(KeyedState::snapshot(self, checkpoint))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn open(db: &StateDb, range: KeyGroupRange) -> KeyedState {
        KeyedState::open(db, "topo", "count", range, StateBudget::default()).unwrap()
    }

    fn set(name: &str, key: &[u8], value: &[u8]) -> ValueWrite<'static> {
        ValueWrite {
            name: Box::leak(name.to_string().into_boxed_str()),
            key: Box::leak(key.to_vec().into_boxed_slice()),
            value: Some(Box::leak(value.to_vec().into_boxed_slice())),
        }
    }

    #[test]
    fn state_survives_reopening_after_a_flush_only() {
        let dir = tempfile::tempdir().unwrap();
        let all = KeyGroupRange::all(128);
        {
            let db = StateDb::open(dir.path()).unwrap();
            let mut s = open(&db, all);
            s.apply(
                vec![
                    StateOp::MapPut {
                        name: "m".into(),
                        key: b"k".to_vec(),
                        map_key: b"a".to_vec(),
                        value: b"1".to_vec(),
                    },
                    StateOp::ListAppend {
                        name: "l".into(),
                        key: b"k".to_vec(),
                        item: b"x".to_vec(),
                    },
                    StateOp::RegisterTimer {
                        domain: TimeDomain::EventTime,
                        key: b"k".to_vec(),
                        time: 42,
                    },
                ],
                &[set("count", b"k", b"7")],
            )
            .unwrap();
            s.flush().unwrap();
            // Written after the flush: lost with the process.
            s.apply(vec![], &[set("count", b"k", b"8")]).unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = open(&db, all);
        assert_eq!(s.value("count", b"k").unwrap(), Some(b"7".to_vec()));
        assert_eq!(s.map_entry("m", b"k", b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.list("l", b"k").unwrap(), vec![b"x".to_vec()]);
        assert_eq!(
            s.take_due_timers(TimeDomain::EventTime, 100).unwrap(),
            vec![(42, b"k".to_vec())]
        );
        // Another operator's state is separate.
        let mut other =
            KeyedState::open(&db, "topo", "other", all, StateBudget::default()).unwrap();
        assert_eq!(other.value("count", b"k").unwrap(), None);
    }

    #[test]
    fn instances_load_only_their_key_groups_timers() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = open(&db, KeyGroupRange::all(128));
        let ops = (0..200)
            .map(|i| StateOp::RegisterTimer {
                domain: TimeDomain::EventTime,
                key: format!("k{i}").into_bytes(),
                time: i,
            })
            .collect();
        s.apply(ops, &[]).unwrap();
        s.flush().unwrap();
        let halves = [
            KeyGroupRange::for_instance(0, 2, 128),
            KeyGroupRange::for_instance(1, 2, 128),
        ];
        let mut total = 0;
        for r in halves {
            let mut part = open(&db, r);
            let due = part
                .take_due_timers(TimeDomain::EventTime, i64::MAX)
                .unwrap();
            assert!(due.iter().all(|(_, k)| r.owns(k)));
            total += due.len();
        }
        assert_eq!(total, 200);
    }

    /// Values of keys `k0..k{n}`, a map and a list, flushed to redb.
    fn fill(db: &StateDb, n: usize, maps: usize) {
        let mut s = open(db, KeyGroupRange::all(128));
        let mut ops = Vec::new();
        for m in 0..maps {
            for e in 0..40 {
                ops.push(StateOp::MapPut {
                    name: "m".into(),
                    key: format!("k{m}").into_bytes(),
                    map_key: format!("e{e}").into_bytes(),
                    value: e.to_string().into_bytes(),
                });
            }
        }
        ops.push(StateOp::ListAppend {
            name: "l".into(),
            key: b"k0".to_vec(),
            item: b"x".to_vec(),
        });
        let writes: Vec<ValueWrite<'static>> = (0..n)
            .map(|i| {
                set(
                    "count",
                    format!("k{i}").as_bytes(),
                    i.to_string().as_bytes(),
                )
            })
            .collect();
        s.apply(ops, &writes).unwrap();
        s.flush().unwrap();
    }

    #[test]
    fn a_preload_reads_only_owned_rows_and_then_needs_no_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        fill(&db, 300, 3);
        let half = KeyGroupRange::for_instance(0, 2, 128);
        let mut s = open(&db, half);
        let loaded = s.preload().unwrap();
        assert!(loaded.complete);
        let owned = |k: &str| half.owns(k.as_bytes());
        let expected = (0..300).filter(|i| owned(&format!("k{i}"))).count()
            + (0..3).filter(|m| owned(&format!("k{m}"))).count() * 40
            + usize::from(owned("k0"));
        assert_eq!(loaded.rows, expected as u64);
        for i in (0..300).filter(|i| owned(&format!("k{i}"))) {
            let key = format!("k{i}");
            assert_eq!(
                s.value("count", key.as_bytes()).unwrap(),
                Some(i.to_string().into_bytes())
            );
        }
        for m in (0..3).filter(|m| owned(&format!("k{m}"))) {
            assert_eq!(s.map("m", format!("k{m}").as_bytes()).unwrap().len(), 40);
        }
        // A row another handle writes behind its back is not looked up:
        // with every owned row in memory, a miss is an absent entry.
        let fresh = (300..).map(|i| format!("k{i}")).find(|k| owned(k)).unwrap();
        let mut other = open(&db, half);
        other
            .apply(vec![], &[set("count", fresh.as_bytes(), b"1")])
            .unwrap();
        other.flush().unwrap();
        assert_eq!(s.value("count", fresh.as_bytes()).unwrap(), None);
        // Not preloaded: the same miss is read from redb.
        assert_eq!(
            open(&db, half).value("count", fresh.as_bytes()).unwrap(),
            Some(b"1".to_vec())
        );
    }

    #[test]
    fn a_preload_past_the_budget_stops_and_lookups_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        fill(&db, 1000, 60);
        let all = KeyGroupRange::all(128);
        let mut s =
            KeyedState::open(&db, "topo", "count", all, StateBudget { bytes: 16 << 10 }).unwrap();
        let loaded = s.preload().unwrap();
        assert!(!loaded.complete);
        assert!(
            loaded.rows > 0 && loaded.rows < 1000 + 60 * 40 + 1,
            "{loaded:?}"
        );
        assert!(s.cached_bytes() <= 16 << 10, "{}", s.cached_bytes());
        // Every value and every whole map reads back: a map cut by the
        // budget was not cached in part.
        for i in 0..1000 {
            assert_eq!(
                s.value("count", format!("k{i}").as_bytes()).unwrap(),
                Some(i.to_string().into_bytes()),
                "k{i}"
            );
        }
        for m in 0..60 {
            assert_eq!(
                s.map("m", format!("k{m}").as_bytes()).unwrap().len(),
                40,
                "k{m}"
            );
        }
        assert_eq!(s.list("l", b"k0").unwrap(), vec![b"x".to_vec()]);
        assert_eq!(s.value("count", b"absent").unwrap(), None);
    }

    #[test]
    fn a_small_budget_spills_and_stays_correct() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = KeyedState::open(
            &db,
            "topo",
            "count",
            KeyGroupRange::all(128),
            StateBudget { bytes: 64 << 10 },
        )
        .unwrap();
        for round in 0..3u64 {
            for chunk in 0..20 {
                let writes: Vec<ValueWrite<'static>> = (0..1000)
                    .map(|i| {
                        let k = format!("key-{}", chunk * 1000 + i);
                        set("count", k.as_bytes(), (round + 1).to_string().as_bytes())
                    })
                    .collect();
                s.apply(vec![], &writes).unwrap();
                assert!(s.cached_bytes() < (64 << 10) * 3, "{}", s.cached_bytes());
            }
        }
        s.flush().unwrap();
        for i in [0, 12_345, 19_999] {
            assert_eq!(
                s.value("count", format!("key-{i}").as_bytes()).unwrap(),
                Some(b"3".to_vec())
            );
        }
    }

    fn timer(key: &[u8], time: i64) -> StateOp {
        StateOp::RegisterTimer {
            domain: TimeDomain::EventTime,
            key: key.to_vec(),
            time,
        }
    }

    fn held(keys: &'static [&'static [u8]]) -> Option<KeyTest> {
        Some(Arc::new(move |k: &[u8]| keys.contains(&k)))
    }

    #[test]
    fn a_timer_of_a_key_no_longer_held_stays_in_redb_and_never_fires_here() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = open(&db, KeyGroupRange::all(128));
        s.apply(vec![timer(b"a", 1), timer(b"b", 2)], &[]).unwrap();
        s.flush().unwrap();
        // Partition of `b` moved away while the job runs.
        db.set_held_keys(held(&[b"a"]));
        assert_eq!(s.next_timer(TimeDomain::EventTime), Some(1));
        // An event of `b` read before the move still registers its timer,
        // for the new owner, but not here.
        s.apply(vec![timer(b"b", 3)], &[]).unwrap();
        let due = s.take_due_timers(TimeDomain::EventTime, i64::MAX).unwrap();
        assert_eq!(due, vec![(1, b"a".to_vec())]);
        assert_eq!(s.next_timer(TimeDomain::EventTime), None);
        s.flush().unwrap();
        // The rows of `b` are all in redb: an instance holding every key
        // finds both (and `a`'s fired timer gone).
        db.set_held_keys(None);
        let mut all = open(&db, KeyGroupRange::all(128));
        let rows = all
            .take_due_timers(TimeDomain::EventTime, i64::MAX)
            .unwrap();
        assert_eq!(rows, vec![(2, b"b".to_vec()), (3, b"b".to_vec())]);
    }

    #[test]
    fn keys_gained_while_running_read_what_was_restored_not_what_was_cached() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        db.set_held_keys(held(&[b"a"]));
        let mut s = open(&db, KeyGroupRange::all(128)).checkpointed();
        assert!(s.preload().unwrap().complete);
        // Known absent while `b` was another node's.
        assert_eq!(s.value("n", b"b").unwrap(), None);
        // A restore writes `b`'s rows from its changelog (here through a
        // second instance of the same database).
        let mut restore = open(&db, KeyGroupRange::all(128));
        restore
            .apply(vec![timer(b"b", 7)], &[set("n", b"b", b"5")])
            .unwrap();
        restore.flush().unwrap();
        assert_eq!(
            s.value("n", b"b").unwrap(),
            None,
            "nothing changes before the move"
        );
        db.set_held_keys(held(&[b"a", b"b"]));
        assert_eq!(s.value("n", b"b").unwrap(), Some(b"5".to_vec()));
        assert_eq!(s.next_timer(TimeDomain::EventTime), Some(7));
        let due = s.take_due_timers(TimeDomain::EventTime, i64::MAX).unwrap();
        assert_eq!(due, vec![(7, b"b".to_vec())]);
    }
}
