//! Checkpoints on redb: one durable commit per checkpoint, holding the
//! state changes of every operator instance, the checkpoint's record (the
//! engine's metadata: source positions, sink bases, watermarks) and the
//! sinks' pending output; recovery that falls back past a damaged record.
//!
//! Each commit first takes a redb *persistent savepoint*: the database as
//! the previous checkpoint left it. If the newest record turns out damaged,
//! that savepoint is restored and the previous checkpoint is used instead.
//! The last `retain` checkpoints keep their records and fallbacks.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::{STATE, StateDb, StateError, TIMERS, db_err, keys};

/// Checkpoint records: id → CRC-32 of the metadata (u32 LE) | metadata.
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints_v1");
/// Output of a checkpoint that sinks publish once it commits: (id, sink)
/// → encoded batch.
const PENDING: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("sink_pending_v1");
/// The redb persistent savepoint taken by each checkpoint's commit (the
/// database before it): id → savepoint id.
const FALLBACKS: TableDefinition<u64, u64> = TableDefinition::new("checkpoint_fallbacks_v1");
/// Checkpoints imported from a savepoint ([`StateDb::open_from`]): their
/// output was published by the run that took them, to its own sinks.
const IMPORTED: TableDefinition<u64, ()> = TableDefinition::new("imported_checkpoints_v1");

pub use weir_state_contract::StateSnapshot;
/// Which table a row belongs to, and one row write of a state change:
/// the state contract's snapshot rows, under this crate's names.
pub(crate) use weir_state_contract::{RowTable as Table, SnapshotRow as RowOp};

/// The order in which a commit applies row writes: by table, then row key,
/// a prefix delete before anything under its prefix.
fn op_order(op: &RowOp) -> (u8, &[u8], u8) {
    match op {
        RowOp::DeletePrefix(k) => (0, k, 0),
        RowOp::Put(Table::State, k, _) | RowOp::Delete(Table::State, k) => (0, k, 1),
        RowOp::Put(Table::Timers, k, _) | RowOp::Delete(Table::Timers, k) => (1, k, 1),
    }
}

/// Applies row writes inside `txn`, sorted first (see [`op_order`]):
/// runs of puts go to [`put_sorted`], deletes one by one. `ops` holds at
/// most one op per row (snapshots do), so an unstable sort serves: a
/// third faster than a stable one on a million rows, the largest part of
/// such a checkpoint's time before it.
pub(crate) fn write_rows(txn: &WriteTransaction, ops: &mut [RowOp]) -> Result<(), StateError> {
    ops.sort_unstable_by(|a, b| op_order(a).cmp(&op_order(b)));
    let mut state = txn.open_table(STATE).map_err(db_err)?;
    let mut timers = txn.open_table(TIMERS).map_err(db_err)?;
    let mut rest: &[RowOp] = ops;
    while let Some(op) = rest.first() {
        if let RowOp::Put(table, _, _) = op {
            let run = rest
                .iter()
                .take_while(|o| matches!(o, RowOp::Put(t, _, _) if t == table))
                .count();
            let rows = rest[..run].iter().filter_map(|o| match o {
                RowOp::Put(_, k, v) => Some((k.as_slice(), v.as_slice())),
                _ => None,
            });
            match table {
                Table::State => put_sorted(&mut state, rows)?,
                Table::Timers => put_sorted(&mut timers, rows)?,
            }
            rest = &rest[run..];
            continue;
        }
        match op {
            RowOp::Delete(Table::State, k) => {
                state.remove(k.as_slice()).map_err(db_err)?;
            }
            RowOp::Delete(Table::Timers, k) => {
                timers.remove(k.as_slice()).map_err(db_err)?;
            }
            RowOp::DeletePrefix(prefix) => {
                let end = keys::prefix_end(prefix);
                state
                    .retain_in::<&[u8], _>(prefix.as_slice()..end.as_slice(), |_, _| false)
                    .map_err(db_err)?;
            }
            RowOp::Put(..) => unreachable!("runs of puts are written above"),
        }
        rest = &rest[1..];
    }
    Ok(())
}

/// A table of byte rows, as `STATE` and `TIMERS` are.
type RowsTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// A cursor run shorter than this means rows that are not new, or fall
/// between rows already there: the next [`PLAIN_ROWS`] are inserted one
/// by one before a cursor is tried again. (Smaller in tests, so that a
/// few rows take every path.)
const SHORT_RUN: usize = if cfg!(test) { 2 } else { 16 };
/// Rows inserted one by one after a short cursor run.
const PLAIN_ROWS: usize = if cfg!(test) { 3 } else { 64 };

/// Writes `rows` into `table`, fastest when they come in ascending key
/// order and are new: a run of keys that fall into one gap between the
/// table's rows goes through one redb cursor, which buffers the run and
/// splices it into the B-tree's leaves a page at a time, where an insert
/// per row rewrites its leaf per row. A row already present ends the run
/// (replacing it through the cursor, a removal and an insert that splice
/// one row each, is ten times slower than `insert`); so do rows out of
/// order or past the gap. After a short run, rows are inserted one by one
/// for a while: `weir-bench state-store` measures each way. Any order is
/// written correctly, the last of equal keys winning.
pub(crate) fn put_sorted<'r>(
    table: &mut RowsTable<'_>,
    rows: impl IntoIterator<Item = (&'r [u8], &'r [u8])>,
) -> Result<(), StateError> {
    let mut rows = rows.into_iter().peekable();
    let mut plain = 0;
    while let Some(&(first, value)) = rows.peek() {
        if plain > 0 {
            table.insert(first, value).map_err(db_err)?;
            rows.next();
            plain -= 1;
            continue;
        }
        let mut cursor = table
            .lower_bound_mut(Bound::Included(first))
            .map_err(db_err)?;
        let mut run = 0;
        while let Some(&(k, v)) = rows.peek() {
            match cursor.insert_before(k, v) {
                Ok(()) => {
                    run += 1;
                    rows.next();
                }
                // Present already, out of order or past the gap.
                Err(redb::CursorError::UnorderedKey) => break,
                Err(e) => return Err(db_err(e)),
            }
        }
        cursor.close().map_err(db_err)?;
        if run < SHORT_RUN {
            // At least the row that ended the run (`first` itself when
            // the run is empty: it is present) goes in by `insert`.
            plain = PLAIN_ROWS;
        }
    }
    Ok(())
}

/// Why [`StateDb::write_checkpoint`] committed nothing here.
enum Unwritten {
    /// The changelog refused the checkpoint; the local transaction was
    /// dropped uncommitted.
    Refused(StateError),
    /// The local commit failed (after the changelog took the checkpoint
    /// when `committed_outside`).
    Failed {
        error: StateError,
        committed_outside: bool,
    },
}

/// Rows a savepoint export copies per cursor run.
const EXPORT_CHUNK_ROWS: usize = 64 * 1024;

/// A checkpoint commit that failed: nothing of it is durable here.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CommitFailed {
    /// Why the commit failed.
    pub error: StateError,
    /// Its state changes, to go into the next checkpoint.
    pub unwritten: StateSnapshot,
    /// Why the database could not be reopened after it (it cannot be
    /// written until the handle is opened anew), if so.
    pub reopen: Option<StateError>,
    /// The changelog ([`Changelog::commit`](crate::Changelog::commit))
    /// committed the checkpoint before the local commit failed: it must
    /// not go into the next one (its output would be published twice);
    /// the run must start again from what the changelog holds.
    pub committed_outside: bool,
}

/// A complete checkpoint as recovery reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: u64,
    /// The engine's metadata, as it was committed.
    pub meta: Vec<u8>,
    /// `(sink, encoded output)` the checkpoint committed for its sinks.
    pub pending: Vec<(String, Vec<u8>)>,
    /// Whether it came from a savepoint: then its sink positions belong to
    /// the run that took it, and this run's sinks start afresh.
    pub from_savepoint: bool,
}

/// A kept checkpoint: its id and metadata, or why its record is damaged.
pub type KeptCheckpoint = (u64, Result<Vec<u8>, String>);

/// What one commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// State rows written or removed.
    pub rows: usize,
    /// Bytes of state, metadata and pending output written.
    pub bytes: u64,
    pub duration: std::time::Duration,
}

fn record(meta: &[u8]) -> Vec<u8> {
    let mut out = crc32fast::hash(meta).to_le_bytes().to_vec();
    out.extend_from_slice(meta);
    out
}

/// The metadata of a record, or why it is damaged.
fn parse_record(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < 4 {
        return Err(format!("record of {} bytes is truncated", bytes.len()));
    }
    let (crc, meta) = bytes.split_at(4);
    let expected = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    let actual = crc32fast::hash(meta);
    if expected != actual {
        return Err(format!(
            "checksum mismatch (stored {expected:08x}, computed {actual:08x})"
        ));
    }
    Ok(meta.to_vec())
}

impl StateDb {
    /// Marks the newest checkpoint as imported from a savepoint and drops
    /// its pending output (published already, by the run that took it).
    pub(crate) fn mark_imported(&self) -> Result<(), StateError> {
        let mut txn = self.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let records = txn.open_table(CHECKPOINTS).map_err(db_err)?;
            let newest = records.last().map_err(db_err)?.map(|(k, _)| k.value());
            if let Some(id) = newest {
                txn.open_table(IMPORTED)
                    .map_err(db_err)?
                    .insert(id, ())
                    .map_err(db_err)?;
                txn.open_table(PENDING)
                    .map_err(db_err)?
                    .retain_in((id, "")..(id + 1, ""), |_, _| false)
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// The id of the last checkpoint committed through this handle (0 when
    /// none).
    pub fn committed_checkpoint(&self) -> u64 {
        self.progress.committed.load(Ordering::Acquire)
    }

    /// Asks the checkpoint coordinator for a checkpoint soon (dirty state
    /// is past an instance's memory budget).
    pub fn request_checkpoint(&self) {
        self.progress.requested.store(true, Ordering::Release);
    }

    /// Whether a checkpoint was asked for since the last call.
    pub fn take_checkpoint_request(&self) -> bool {
        self.progress.requested.swap(false, Ordering::AcqRel)
    }

    /// Commits checkpoint `id` durably in one redb transaction: every
    /// instance's state changes, the metadata and the sinks' pending
    /// output. Keeps the newest `retain` checkpoints (at least one).
    ///
    /// When the commit fails, the database is reopened (redb refuses every
    /// write after a failed commit) and the state changes come back in the
    /// error, for the next checkpoint.
    pub fn commit_checkpoint(
        &self,
        id: u64,
        snapshots: Vec<StateSnapshot>,
        meta: &[u8],
        pending: &[(String, Vec<u8>)],
        retain: usize,
    ) -> Result<CommitStats, Box<CommitFailed>> {
        let started = Instant::now();
        let mut rows = 0;
        let mut state_bytes = 0;
        let mut ops = Vec::with_capacity(snapshots.iter().map(StateSnapshot::rows).sum());
        for snapshot in snapshots {
            rows += snapshot.rows();
            state_bytes += snapshot.bytes() as u64;
            ops.extend(snapshot.into_rows());
        }
        self.store.in_checkpoint(true);
        let written = self.write_checkpoint(id, &mut ops, state_bytes, meta, pending, retain);
        self.store.in_checkpoint(false);
        match written {
            Ok(bytes) => {
                self.progress.committed.store(id, Ordering::Release);
                Ok(CommitStats {
                    rows,
                    bytes,
                    duration: started.elapsed(),
                })
            }
            // The changelog refused the checkpoint: the local transaction
            // was dropped before its commit, so the database is as it was
            // and stays writable.
            Err(Unwritten::Refused(error)) => {
                tracing::warn!(checkpoint = id, %error, "the changelog refused the checkpoint; nothing of it is committed");
                Err(Box::new(CommitFailed {
                    error,
                    unwritten: StateSnapshot::new(ops),
                    reopen: None,
                    committed_outside: false,
                }))
            }
            Err(Unwritten::Failed {
                error,
                committed_outside,
            }) => {
                tracing::warn!(checkpoint = id, %error, committed_outside, "checkpoint commit failed; reopening the state database");
                Err(Box::new(CommitFailed {
                    error,
                    unwritten: StateSnapshot::new(ops),
                    reopen: self.reopen().err(),
                    committed_outside,
                }))
            }
        }
    }

    /// The transaction of [`StateDb::commit_checkpoint`]; returns the
    /// bytes written. With a changelog, the checkpoint is committed there
    /// after everything is staged and before the local commit, so this
    /// database never holds what the changelog does not (it may lack the
    /// newest checkpoint the changelog holds: a restore reads it back).
    fn write_checkpoint(
        &self,
        id: u64,
        ops: &mut [RowOp],
        state_bytes: u64,
        meta: &[u8],
        pending: &[(String, Vec<u8>)],
        retain: usize,
    ) -> Result<u64, Unwritten> {
        let local = |error| Unwritten::Failed {
            error,
            committed_outside: false,
        };
        let mut txn = self
            .db()
            .map_err(local)?
            .begin_write()
            .map_err(|e| local(db_err(e)))?;
        self.stage_checkpoint(&mut txn, id, ops, meta, pending, retain)
            .map_err(local)?;
        let bytes = state_bytes
            + meta.len() as u64
            + pending.iter().map(|(_, o)| o.len() as u64).sum::<u64>();
        let committed_outside = match self.changelog() {
            Some(changelog) => {
                let offsets = changelog
                    .commit(id, ops, meta, pending)
                    .map_err(|reason| Unwritten::Refused(StateError::Changelog(reason)))?;
                crate::changelog::record_offsets(&txn, &offsets).map_err(|error| {
                    Unwritten::Failed {
                        error,
                        committed_outside: true,
                    }
                })?;
                true
            }
            None => false,
        };
        txn.commit().map_err(|e| Unwritten::Failed {
            error: db_err(e),
            committed_outside,
        })?;
        Ok(bytes)
    }

    /// Writes checkpoint `id` into `txn` (not committed).
    fn stage_checkpoint(
        &self,
        txn: &mut redb::WriteTransaction,
        id: u64,
        ops: &mut [RowOp],
        meta: &[u8],
        pending: &[(String, Vec<u8>)],
        retain: usize,
    ) -> Result<(), StateError> {
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        txn.set_two_phase_commit(true);
        // Before any table is opened: the database as the last checkpoint
        // left it, to fall back to if this one's record is damaged.
        let fallback = txn.persistent_savepoint().map_err(db_err)?;
        // Written in key order (`write_rows` sorts): runs of new rows are
        // spliced into the B-tree a leaf at a time. Puts and deletes of
        // one state row never meet in a snapshot (one op per row); a
        // map's prefix delete sorts before the puts of its entries.
        write_rows(txn, ops)?;
        let mut stale_fallbacks = Vec::new();
        {
            let mut records = txn.open_table(CHECKPOINTS).map_err(db_err)?;
            records
                .insert(id, record(meta).as_slice())
                .map_err(db_err)?;
            let mut outputs = txn.open_table(PENDING).map_err(db_err)?;
            for (sink, output) in pending {
                outputs
                    .insert((id, sink.as_str()), output.as_slice())
                    .map_err(db_err)?;
            }
            let mut fallbacks = txn.open_table(FALLBACKS).map_err(db_err)?;
            fallbacks.insert(id, fallback).map_err(db_err)?;

            let ids: Vec<u64> = records
                .iter()
                .map_err(db_err)?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(db_err)?;
            let keep_from = ids[ids.len().saturating_sub(retain.max(1))];
            for old in ids.iter().copied().filter(|&i| i < keep_from) {
                records.remove(old).map_err(db_err)?;
            }
            outputs
                .retain_in((0, "")..(keep_from, ""), |_, _| false)
                .map_err(db_err)?;
            // A fallback of the oldest kept checkpoint leads to one that is
            // gone: drop it with the older ones.
            for row in fallbacks.range(..=keep_from).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                stale_fallbacks.push((k.value(), v.value()));
            }
            for (k, _) in &stale_fallbacks {
                fallbacks.remove(*k).map_err(db_err)?;
            }
        }
        for (_, savepoint) in stale_fallbacks {
            txn.delete_persistent_savepoint(savepoint).map_err(db_err)?;
        }
        Ok(())
    }

    /// The newest complete checkpoint. A damaged record (checksum or
    /// length wrong) is logged and the database is rolled back to the
    /// checkpoint before it, as often as needed.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        loop {
            // The newest record: its id and metadata, or why it is damaged.
            let (id, parsed, fallback) = {
                let txn = self.db()?.begin_read().map_err(db_err)?;
                let records = match txn.open_table(CHECKPOINTS) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(db_err(e)),
                };
                let Some((k, v)) = records.last().map_err(db_err)? else {
                    return Ok(None);
                };
                let id = k.value();
                let parsed = parse_record(v.value());
                let fallback = match &parsed {
                    Ok(_) => None,
                    Err(_) => txn
                        .open_table(FALLBACKS)
                        .map_err(db_err)?
                        .get(id)
                        .map_err(db_err)?
                        .map(|v| v.value()),
                };
                (id, parsed, fallback)
            };
            match parsed {
                Ok(meta) => {
                    let txn = self.db()?.begin_read().map_err(db_err)?;
                    let outputs = txn.open_table(PENDING).map_err(db_err)?;
                    let mut pending = Vec::new();
                    for row in outputs.range((id, "")..(id + 1, "")).map_err(db_err)? {
                        let (k, v) = row.map_err(db_err)?;
                        pending.push((k.value().1.to_string(), v.value().to_vec()));
                    }
                    let from_savepoint = match txn.open_table(IMPORTED) {
                        Ok(t) => t.get(id).map_err(db_err)?.is_some(),
                        Err(redb::TableError::TableDoesNotExist(_)) => false,
                        Err(e) => return Err(db_err(e)),
                    };
                    self.progress.committed.store(id, Ordering::Release);
                    return Ok(Some(Checkpoint {
                        id,
                        meta,
                        pending,
                        from_savepoint,
                    }));
                }
                Err(reason) => {
                    let Some(fallback) = fallback else {
                        return Err(StateError::Damaged { id, reason });
                    };
                    tracing::warn!(
                        checkpoint = id,
                        %reason,
                        "checkpoint record is damaged; falling back to the checkpoint before it"
                    );
                    let mut txn = self.db()?.begin_write().map_err(db_err)?;
                    txn.set_durability(Durability::Immediate).map_err(db_err)?;
                    let savepoint = txn.get_persistent_savepoint(fallback).map_err(db_err)?;
                    txn.restore_savepoint(&savepoint).map_err(db_err)?;
                    txn.delete_persistent_savepoint(fallback).map_err(db_err)?;
                    txn.commit().map_err(db_err)?;
                }
            }
        }
    }

    /// Every kept checkpoint, oldest first: its id and metadata, or why its
    /// record is damaged.
    pub fn checkpoints(&self) -> Result<Vec<KeptCheckpoint>, StateError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let records = match txn.open_table(CHECKPOINTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        records
            .iter()
            .map_err(db_err)?
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                Ok((k.value(), parse_record(v.value())))
            })
            .collect()
    }

    /// Writes the newest checkpoint, the state it holds and its pending
    /// output into a new database at `path` (a savepoint), which
    /// [`StateDb::open_from`] can start another run from. Returns its size.
    pub fn export(&self, path: &Path) -> Result<u64, StateError> {
        let err = |e: String| StateError::Open {
            path: path.display().to_string(),
            reason: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let out = Database::create(&partial).map_err(|e| err(e.to_string()))?;
        let src = self.db()?.begin_read().map_err(db_err)?;
        let mut txn = out.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            for def in [STATE, TIMERS] {
                let from = src.open_table(def).map_err(db_err)?;
                let mut to = txn.open_table(def).map_err(db_err)?;
                // In key order into an empty table: one cursor run, in
                // chunks so that the copy never holds the whole table.
                let mut rows = from.iter().map_err(db_err)?;
                let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(EXPORT_CHUNK_ROWS);
                loop {
                    chunk.clear();
                    for row in rows.by_ref().take(EXPORT_CHUNK_ROWS) {
                        let (k, v) = row.map_err(db_err)?;
                        chunk.push((k.value().to_vec(), v.value().to_vec()));
                    }
                    if chunk.is_empty() {
                        break;
                    }
                    put_sorted(
                        &mut to,
                        chunk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                    )?;
                }
            }
            let records = src.open_table(CHECKPOINTS).map_err(db_err)?;
            let mut to = txn.open_table(CHECKPOINTS).map_err(db_err)?;
            if let Some((k, v)) = records.last().map_err(db_err)? {
                let id = k.value();
                to.insert(id, v.value()).map_err(db_err)?;
                let outputs = src.open_table(PENDING).map_err(db_err)?;
                let mut to = txn.open_table(PENDING).map_err(db_err)?;
                for row in outputs.range((id, "")..(id + 1, "")).map_err(db_err)? {
                    let (k, v) = row.map_err(db_err)?;
                    to.insert(k.value(), v.value()).map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        drop(out);
        std::fs::rename(&partial, path).map_err(|e| err(e.to_string()))?;
        Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use weir_state_contract::{OperatorState, ValueWrite};
    use weir_types::KeyGroupRange;

    use super::*;
    use crate::{KeyedState, StateBudget};

    fn write(state: &mut KeyedState, key: &str, value: &str) {
        state
            .apply(
                vec![],
                &[ValueWrite {
                    name: "count",
                    key: key.as_bytes(),
                    value: Some(value.as_bytes()),
                }],
            )
            .unwrap();
    }

    fn open(db: &StateDb) -> KeyedState {
        KeyedState::open(
            db,
            "t",
            "op",
            KeyGroupRange::all(128),
            StateBudget::default(),
        )
        .unwrap()
        .checkpointed()
    }

    #[test]
    fn a_reopen_while_instances_hold_read_snapshots_serves_every_clone() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = open(&db);
        write(&mut s, "k", "1");
        write(&mut s, "j", "1");
        db.commit_checkpoint(1, vec![s.snapshot(1)], b"m1", &[], 3)
            .unwrap();
        // `r` reads through a snapshot of the database as first opened.
        let mut r = open(&db);
        assert_eq!(r.value("count", b"k").unwrap(), Some(b"1".to_vec()));
        // Reopened through another clone while `r` holds a read snapshot
        // (which must not keep the old database open).
        db.clone().reopen().unwrap();
        assert_eq!(r.value("count", b"j").unwrap(), Some(b"1".to_vec()));
        write(&mut s, "k", "2");
        db.commit_checkpoint(2, vec![s.snapshot(2)], b"m2", &[], 3)
            .unwrap();
        assert_eq!(db.latest_checkpoint().unwrap().unwrap().id, 2);
        assert_eq!(open(&db).value("count", b"k").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn commits_keep_the_newest_and_fall_back_past_a_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(dir.path()).unwrap();
            let mut s = open(&db);
            for id in 1..=4u64 {
                write(&mut s, "k", &id.to_string());
                // Flushing a checkpointed state writes nothing.
                s.flush().unwrap();
                let snap = s.snapshot(id);
                let out = vec![("out".to_string(), format!("o{id}").into_bytes())];
                db.commit_checkpoint(id, vec![snap], format!("m{id}").as_bytes(), &out, 3)
                    .unwrap();
            }
            write(&mut s, "k", "uncommitted");
            let ids: Vec<u64> = db.checkpoints().unwrap().iter().map(|c| c.0).collect();
            assert_eq!(ids, vec![2, 3, 4]);
        }
        let db = StateDb::open(dir.path()).unwrap();
        let latest = db.latest_checkpoint().unwrap().unwrap();
        assert_eq!(latest.id, 4);
        assert_eq!(latest.meta, b"m4");
        assert_eq!(latest.pending, vec![("out".to_string(), b"o4".to_vec())]);
        assert_eq!(open(&db).value("count", b"k").unwrap(), Some(b"4".to_vec()));

        // Damage the newest record: recovery rolls back to checkpoint 3,
        // state included.
        {
            let txn = db.db().unwrap().begin_write().unwrap();
            txn.open_table(CHECKPOINTS)
                .unwrap()
                .insert(4, b"\x00\x00\x00\x00m4".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let latest = db.latest_checkpoint().unwrap().unwrap();
        assert_eq!(latest.id, 3);
        assert_eq!(latest.pending, vec![("out".to_string(), b"o3".to_vec())]);
        assert_eq!(open(&db).value("count", b"k").unwrap(), Some(b"3".to_vec()));
        assert!(db.checkpoints().unwrap().iter().all(|c| c.0 < 4));
    }

    #[test]
    fn a_savepoint_export_starts_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = open(&db);
        write(&mut s, "a", "1");
        db.commit_checkpoint(
            1,
            vec![s.snapshot(1)],
            b"m1",
            &[("o".into(), b"x".to_vec())],
            3,
        )
        .unwrap();
        let path = dir.path().join("sp/first.redb");
        assert!(db.export(&path).unwrap() > 0);
        write(&mut s, "a", "2");
        db.commit_checkpoint(2, vec![s.snapshot(2)], b"m2", &[], 3)
            .unwrap();

        let other = tempfile::tempdir().unwrap();
        let restored = StateDb::open_from(other.path(), &path).unwrap();
        let latest = restored.latest_checkpoint().unwrap().unwrap();
        assert_eq!((latest.id, latest.meta.as_slice()), (1, &b"m1"[..]));
        assert!(latest.from_savepoint && latest.pending.is_empty());
        // A run from the savepoint checkpoints on its own: not imported.
        restored
            .commit_checkpoint(2, vec![], b"m2", &[("o".into(), b"x".to_vec())], 3)
            .unwrap();
        assert!(
            !restored
                .latest_checkpoint()
                .unwrap()
                .unwrap()
                .from_savepoint
        );
        assert_eq!(
            open(&restored).value("count", b"a").unwrap(),
            Some(b"1".to_vec())
        );
    }

    #[test]
    fn pinned_entries_stay_until_their_checkpoint_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = KeyedState::open(
            &db,
            "t",
            "op",
            KeyGroupRange::all(128),
            StateBudget { bytes: 1 << 10 },
        )
        .unwrap()
        .checkpointed();
        for i in 0..200 {
            write(&mut s, &format!("k{i}"), "1");
        }
        // Over budget: a checkpoint is asked for, nothing is spilled.
        assert!(db.take_checkpoint_request());
        let snap = s.snapshot(1);
        assert_eq!(snap.rows(), 200);
        // Not committed yet: reads still see every value.
        write(&mut s, "other", "x");
        assert_eq!(s.value("count", b"k7").unwrap(), Some(b"1".to_vec()));
        db.commit_checkpoint(1, vec![snap], b"m", &[], 2).unwrap();
        write(&mut s, "other", "y");
        assert!(s.cached_bytes() < 2 << 10, "{}", s.cached_bytes());
        assert_eq!(s.value("count", b"k199").unwrap(), Some(b"1".to_vec()));
    }
}

#[cfg(test)]
mod budget_tests {
    use weir_state_contract::{OperatorState, ValueWrite};
    use weir_types::KeyGroupRange;

    use crate::{KeyedState, StateBudget, StateDb};

    /// 1,000,000 keys (about 8 times the budget in working-set bytes)
    /// through a 16 MiB working set, checkpointed whenever the dirty part
    /// outgrows the budget, as the coordinator does. The bench's `recovery`
    /// workload runs the large sizes.
    #[test]
    fn a_million_keys_fit_a_16_mib_budget() {
        const KEYS: u64 = 1_000_000;
        let budget = 16 << 20;
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = KeyedState::open(
            &db,
            "t",
            "count",
            KeyGroupRange::all(128),
            StateBudget { bytes: budget },
        )
        .unwrap()
        .checkpointed();
        let mut id = 0;
        let mut peak = 0;
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(1000);
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(1000);
        for chunk in 0..KEYS / 1000 {
            keys.clear();
            values.clear();
            for i in 0..1000 {
                let k = chunk * 1000 + i;
                keys.push(format!("user-{k:08}").into_bytes());
                values.push(format!("{{\"count\":1,\"sum\":{}}}", k % 101).into_bytes());
            }
            let writes: Vec<ValueWrite<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| ValueWrite {
                    name: "agg",
                    key: k,
                    value: Some(v),
                })
                .collect();
            s.apply(vec![], &writes).unwrap();
            peak = peak.max(s.cached_bytes());
            if db.take_checkpoint_request() {
                id += 1;
                let snap = s.snapshot(id);
                db.commit_checkpoint(id, vec![snap], b"m", &[], 2).unwrap();
            }
        }
        id += 1;
        db.commit_checkpoint(id, vec![s.snapshot(id)], b"m", &[], 2)
            .unwrap();
        assert!(id > 2, "the budget never asked for a checkpoint");
        // Dirty state waits for its checkpoint, so the working set may
        // pass the budget by what one chunk adds, not more.
        assert!(
            peak < budget + (1 << 20),
            "working set peaked at {peak} bytes"
        );
        for k in [0u64, 123_457, KEYS - 1] {
            let key = format!("user-{k:08}");
            let expected = format!("{{\"count\":1,\"sum\":{}}}", k % 101);
            assert_eq!(
                s.value("agg", key.as_bytes()).unwrap(),
                Some(expected.into_bytes()),
                "{key}"
            );
        }
        drop(s);
        drop(db);
        // Everything is in redb after the last commit.
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = KeyedState::open(
            &db,
            "t",
            "count",
            KeyGroupRange::all(128),
            StateBudget { bytes: budget },
        )
        .unwrap();
        let k = KEYS / 3;
        assert_eq!(
            s.value("agg", format!("user-{k:08}").as_bytes()).unwrap(),
            Some(format!("{{\"count\":1,\"sum\":{}}}", k % 101).into_bytes())
        );
    }
}

/// Property tests of the record framing (CRC-32 | metadata) and of a
/// checkpoint's round trip through redb.
#[cfg(test)]
mod record_properties {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;
    use crate::StateDb;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_record_parses_to_the_metadata_it_framed(meta in vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(parse_record(&record(&meta)), Ok(meta));
        }

        #[test]
        fn garbage_is_no_panic_and_a_flipped_bit_is_caught(
            garbage in vec(any::<u8>(), 0..64),
            meta in vec(any::<u8>(), 0..256),
            bit in any::<prop::sample::Index>(),
        ) {
            let _ = parse_record(&garbage);
            let mut framed = record(&meta);
            let i = bit.index(framed.len() * 8);
            framed[i / 8] ^= 1 << (i % 8);
            prop_assert!(parse_record(&framed).is_err());
        }
    }

    proptest! {
        // Each case writes a real database: few cases.
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Rows put in any order, over rows already there, with repeats:
        /// the table ends as a map that took them one by one.
        #[test]
        fn rows_put_in_any_order_land_as_inserted_one_by_one(
            before in btree_map(vec(0u8..4, 0..4), vec(any::<u8>(), 0..3), 0..24),
            puts in vec((vec(0u8..4, 0..4), vec(any::<u8>(), 0..3)), 0..48),
            sort in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = StateDb::open(dir.path()).unwrap();
            let mut puts = puts;
            if sort {
                puts.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let txn = db.db().unwrap().begin_write().unwrap();
            {
                let mut table = txn.open_table(STATE).unwrap();
                for (k, v) in &before {
                    table.insert(k.as_slice(), v.as_slice()).unwrap();
                }
                put_sorted(&mut table, puts.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                    .unwrap();
            }
            txn.commit().unwrap();
            let mut model = before;
            for (k, v) in puts {
                model.insert(k, v);
            }
            let read = db.db().unwrap().begin_read().unwrap();
            let table = read.open_table(STATE).unwrap();
            let rows: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = table
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect();
            prop_assert_eq!(rows, model);
        }
    }

    #[test]
    fn a_timer_added_and_removed_between_writes_is_not_left_behind() {
        use weir_state_contract::{OperatorState, StateOp, TimeDomain};
        use weir_types::KeyGroupRange;
        let dir = tempfile::tempdir().unwrap();
        let all = KeyGroupRange::all(128);
        let register = |key: &[u8], time| StateOp::RegisterTimer {
            domain: TimeDomain::EventTime,
            key: key.to_vec(),
            time,
        };
        {
            let db = StateDb::open(dir.path()).unwrap();
            let mut s = crate::KeyedState::open(&db, "t", "op", all, Default::default()).unwrap();
            // Registered, taken when due and registered again, then taken
            // for good: no timer row may outlive the last change.
            s.apply(vec![register(b"k", 5), register(b"j", 9)], &[])
                .unwrap();
            assert_eq!(
                s.take_due_timers(TimeDomain::EventTime, 5).unwrap().len(),
                1
            );
            s.apply(vec![register(b"k", 5)], &[]).unwrap();
            assert_eq!(
                s.take_due_timers(TimeDomain::EventTime, 5).unwrap().len(),
                1
            );
            s.flush().unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = crate::KeyedState::open(&db, "t", "op", all, Default::default()).unwrap();
        assert_eq!(
            s.take_due_timers(TimeDomain::EventTime, i64::MAX).unwrap(),
            vec![(9, b"j".to_vec())]
        );
    }

    proptest! {
        // Each case commits to a real database: few cases.
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn a_committed_checkpoint_reads_back_as_committed(
            meta in vec(any::<u8>(), 0..2048),
            pending in btree_map("[a-z]{1,8}", vec(any::<u8>(), 0..512), 0..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let pending: Vec<(String, Vec<u8>)> = pending.into_iter().collect();
            let db = StateDb::open(dir.path()).unwrap();
            db.commit_checkpoint(7, Vec::new(), &meta, &pending, 2).unwrap();
            drop(db);
            let back = StateDb::open(dir.path()).unwrap().latest_checkpoint().unwrap().unwrap();
            prop_assert_eq!(back.id, 7);
            prop_assert_eq!(back.meta, meta);
            prop_assert_eq!(back.pending, pending);
            prop_assert!(!back.from_savepoint);
        }
    }
}
