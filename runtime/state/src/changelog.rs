//! A cluster's changelogs: the rows of each committed checkpoint as
//! records of a compacted changelog topic per keyed operator, and those
//! records back into rows when a node takes a partition over (see
//! `docs/cluster.md`, "State").
//!
//! - A record's key is a table tag (`s` state, `t` timer, `p` a map's
//!   prefix delete) and the row's key without its scope (topology,
//!   operator: the topic names them); its value is the row's value, or
//!   none (a tombstone) for a delete. Compaction keeps each row's latest
//!   write, so reading a partition from any offset in order and applying
//!   each record over rows that reflect the log before that offset gives
//!   the rows the log ends with.
//! - [`ChangeRecord::state_key`] is the key the row belongs to: the caller
//!   maps it to its partition (the input's partitioner), so the rows of
//!   one partition are exactly the keys of that input partition.
//! - [`Changelog`]: what [`StateDb::commit_checkpoint`] hands each
//!   checkpoint to (its rows, record and pending output) once it is
//!   staged and before the local commit: the changelog commits it first
//!   (a cluster node's Kafka transaction), and a refusal leaves nothing
//!   of it here either. So the local database never holds what the
//!   changelog lacks; it may lack the changelog's newest checkpoint (a
//!   crash between the two commits), which a restore reads back. The
//!   offsets the changelog answers are recorded in the same local commit
//!   (`changelog_offsets_v1`), so a node that gets a partition back reads
//!   only what was written since.
//! - Each source's event time (the highest timestamp it read, which its
//!   watermark trails) goes to the changelog too, as one compacted record
//!   per source in every partition the node holds (tag `w`,
//!   [`event_time_record`]), so a node that takes a partition over starts
//!   its watermark where the old owner's was: late events stay late and
//!   fired windows do not fire again. An end-of-input event time
//!   (`i64::MAX`) is never written: on another node every later event
//!   would be late.
//! - Timers of keys of partitions the node does not hold are **parked**
//!   (`parked_timers_v1`, [`StateDb::park_timers`]): they must not fire
//!   here, yet they are part of the local copy, which stays valid from its
//!   recorded offset; they are moved back when the partition comes back.
//!   A standby's copy ([`RestoreBatch::standby`],
//!   [`StateDb::apply_standby`]) writes its timers there directly.
//!
//! Not here: Kafka (the server's cluster code and `weir-connectors` read
//! and write the topics).

use std::collections::BTreeMap;

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::checkpoint::{RowOp, Table, write_rows};
use crate::{StateDb, StateError, TIMERS, db_err, keys};

/// Per keyed operator and changelog partition: the offset up to which
/// this database's rows reflect the changelog (the next offset to read).
const CHANGELOG_OFFSETS: TableDefinition<(&str, u32), u64> =
    TableDefinition::new("changelog_offsets_v1");
/// Per keyed operator, changelog partition and source: the event time the
/// source had reached, as the changelog up to the recorded offset says.
const CHANGELOG_EVENT_TIMES: TableDefinition<(&str, u32, &str), i64> =
    TableDefinition::new("changelog_event_times_v1");
/// Timers of keys of partitions this node does not hold now: rows as in
/// `timers_v1`, which no instance loads, so they never fire here.
const PARKED_TIMERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parked_timers_v1");

const TAG_STATE: u8 = b's';
const TAG_TIMER: u8 = b't';
const TAG_PREFIX: u8 = b'p';
const TAG_EVENT_TIME: u8 = b'w';

/// The changelog record (key, value) saying that source `source` reached
/// event time `reached` (its highest timestamp read; its watermark trails
/// it): written to each partition the node holds. `None` for `i64::MIN`
/// (nothing read yet) and for `i64::MAX`, an end of input: a node that
/// took the partition over would find every later event late.
pub fn event_time_record(source: &str, reached: i64) -> Option<(Vec<u8>, Vec<u8>)> {
    if reached == i64::MIN || reached == i64::MAX || source.is_empty() {
        return None;
    }
    let mut key = Vec::with_capacity(1 + source.len());
    key.push(TAG_EVENT_TIME);
    key.extend_from_slice(source.as_bytes());
    Some((key, reached.to_be_bytes().to_vec()))
}

/// A source's event time read back from an event-time record's key (after
/// its tag) and value; `None` for a tombstone.
fn parse_event_time(name: &[u8], value: Option<&[u8]>) -> Result<Option<(String, i64)>, String> {
    let source = std::str::from_utf8(name)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or("an event-time record of the changelog names no source")?;
    let Some(value) = value else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        format!(
            "the event-time record of source `{source}` holds {} bytes, not 8",
            value.len()
        )
    })?;
    Ok(Some((source.to_string(), i64::from_be_bytes(bytes))))
}

/// One row of a checkpoint as a changelog record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// The operator whose changelog takes it.
    pub operator: String,
    /// The key the row belongs to (decides its partition).
    pub state_key: Vec<u8>,
    pub key: Vec<u8>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Where a changelog write ended: the next offset of `partition` of
/// `operator`'s changelog after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogOffset {
    pub operator: String,
    pub partition: u32,
    pub next: u64,
}

/// Commits every checkpoint before this database does (a cluster node's
/// Kafka transaction). Called on the checkpoint coordinator's thread with
/// checkpoint `id`'s rows (in commit order), its record (`meta`, the
/// engine's) and its sinks' pending output (sink name, encoded batch);
/// answers where the changelog partitions it wrote end. An error means
/// nothing of the checkpoint is committed there: the local commit does
/// not happen either, and its changes go into the next checkpoint.
pub trait Changelog: Send + Sync + std::fmt::Debug {
    fn commit(
        &self,
        id: u64,
        rows: &[weir_state_contract::SnapshotRow],
        meta: &[u8],
        pending: &[(String, Vec<u8>)],
    ) -> Result<Vec<ChangelogOffset>, String>;
}

/// Records `offsets` in `txn`.
pub(crate) fn record_offsets(
    txn: &redb::WriteTransaction,
    offsets: &[ChangelogOffset],
) -> Result<(), StateError> {
    let mut table = txn.open_table(CHANGELOG_OFFSETS).map_err(db_err)?;
    for o in offsets {
        table
            .insert((o.operator.as_str(), o.partition), o.next)
            .map_err(db_err)?;
    }
    Ok(())
}

/// The scope of a row: `(topology, operator, scope length)`.
fn scope_of(row: &[u8]) -> Option<(&str, &str, usize)> {
    let t_len = usize::from(u16::from_be_bytes(row.get(..2)?.try_into().ok()?));
    let topology = std::str::from_utf8(row.get(2..2 + t_len)?).ok()?;
    let at = 2 + t_len;
    let o_len = usize::from(u16::from_be_bytes(row.get(at..at + 2)?.try_into().ok()?));
    let operator = std::str::from_utf8(row.get(at + 2..at + 2 + o_len)?).ok()?;
    Some((topology, operator, at + 2 + o_len))
}

/// The changelog records of a checkpoint's rows of `topology`, in the
/// order given (a prefix delete before the entries under it: the commit
/// sorts them so). A row that does not parse is an internal error.
pub fn change_records(topology: &str, rows: &[RowOp]) -> Result<Vec<ChangeRecord>, String> {
    let mut out = Vec::with_capacity(rows.len());
    for op in rows {
        let (tag, row, value) = match op {
            RowOp::Put(Table::State, row, v) => (TAG_STATE, row, Some(v.clone())),
            RowOp::Delete(Table::State, row) => (TAG_STATE, row, None),
            RowOp::Put(Table::Timers, row, v) => (TAG_TIMER, row, Some(v.clone())),
            RowOp::Delete(Table::Timers, row) => (TAG_TIMER, row, None),
            RowOp::DeletePrefix(row) => (TAG_PREFIX, row, Some(Vec::new())),
        };
        let bad = || format!("a state row of {topology} does not parse: {row:?}");
        let (t, operator, scope_len) = scope_of(row).ok_or_else(bad)?;
        if t != topology {
            continue;
        }
        let state_key = match tag {
            TAG_TIMER => keys::parse_timer_row(scope_len, row).ok_or_else(bad)?.2,
            _ => keys::parse_state_row(scope_len, row)
                .ok_or_else(bad)?
                .2
                .to_vec(),
        };
        let mut key = Vec::with_capacity(1 + row.len() - scope_len);
        key.push(tag);
        key.extend_from_slice(&row[scope_len..]);
        out.push(ChangeRecord {
            operator: operator.to_string(),
            state_key,
            key,
            value,
        });
    }
    Ok(out)
}

/// The key of a changelog record's row in `(table order, row, kind)`
/// order, as a commit applies them (`checkpoint::op_order`).
type Slot = (u8, Vec<u8>, u8);

/// Rows read back from one operator's changelog, latest write of each
/// row only, to apply in batches ([`StateDb::apply_changelog`],
/// [`StateDb::apply_standby`]).
#[derive(Debug)]
pub struct RestoreBatch {
    operator: String,
    scope: Vec<u8>,
    rows: BTreeMap<Slot, RowOp>,
    /// `(partition, source)` → its event time (`None`: a tombstone).
    event_times: BTreeMap<(u32, String), Option<i64>>,
    /// A standby's copy: timers go to the parked ones.
    parked: bool,
}

impl RestoreBatch {
    /// Rows of partitions this node holds (timers where they fire).
    pub fn new(topology: &str, operator: &str) -> RestoreBatch {
        RestoreBatch {
            operator: operator.to_string(),
            scope: keys::scope(topology, operator),
            rows: BTreeMap::new(),
            event_times: BTreeMap::new(),
            parked: false,
        }
    }

    /// Rows of partitions this node keeps a standby copy of: their timers
    /// are parked (they must not fire here).
    pub fn standby(topology: &str, operator: &str) -> RestoreBatch {
        RestoreBatch {
            parked: true,
            ..RestoreBatch::new(topology, operator)
        }
    }

    /// Rows and event times waiting.
    pub fn len(&self) -> usize {
        self.rows.len() + self.event_times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty batch like this one (same operator and kind).
    pub fn emptied(&self) -> RestoreBatch {
        RestoreBatch {
            operator: self.operator.clone(),
            scope: self.scope.clone(),
            rows: BTreeMap::new(),
            event_times: BTreeMap::new(),
            parked: self.parked,
        }
    }

    /// Adds a record read from `partition` of the changelog, over what
    /// came before it. A record that is not one this module writes is
    /// refused (the topic is not a changelog of this operator).
    pub fn add(&mut self, partition: u32, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let (&tag, rest) = key
            .split_first()
            .ok_or("a changelog record without a key")?;
        if tag == TAG_EVENT_TIME {
            let (source, time) = match parse_event_time(rest, value)? {
                Some((source, time)) => (source, Some(time)),
                None => (String::from_utf8_lossy(rest).into_owned(), None),
            };
            self.event_times.insert((partition, source), time);
            return Ok(());
        }
        let mut row = self.scope.clone();
        row.extend_from_slice(rest);
        let parses = match tag {
            TAG_TIMER => keys::parse_timer_row(self.scope.len(), &row).is_some(),
            TAG_STATE | TAG_PREFIX => keys::parse_state_row(self.scope.len(), &row).is_some(),
            _ => false,
        };
        if !parses {
            return Err(format!(
                "a changelog record whose key is not a state row ({} bytes, tag {tag}): is the topic a Weir changelog of this operator?",
                key.len()
            ));
        }
        match (tag, value) {
            (TAG_PREFIX, _) => {
                let end = keys::prefix_end(&row);
                let doomed: Vec<Slot> = self
                    .rows
                    .range((0, row.clone(), 0)..(0, end, 0))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    self.rows.remove(&k);
                }
                self.rows
                    .insert((0, row.clone(), 0), RowOp::DeletePrefix(row));
            }
            (TAG_STATE, Some(v)) => {
                self.rows.insert(
                    (0, row.clone(), 1),
                    RowOp::Put(Table::State, row, v.to_vec()),
                );
            }
            (TAG_STATE, None) => {
                self.rows
                    .insert((0, row.clone(), 1), RowOp::Delete(Table::State, row));
            }
            (_, Some(v)) => {
                self.rows.insert(
                    (1, row.clone(), 1),
                    RowOp::Put(Table::Timers, row, v.to_vec()),
                );
            }
            (_, None) => {
                self.rows
                    .insert((1, row.clone(), 1), RowOp::Delete(Table::Timers, row));
            }
        }
        Ok(())
    }
}

/// Writes `batch` in `txn`: rows where they go (a standby's timers to
/// the parked ones), event times by operator, partition and source.
fn write_batch(txn: &redb::WriteTransaction, batch: RestoreBatch) -> Result<(), StateError> {
    let RestoreBatch {
        operator,
        rows,
        event_times,
        parked,
        ..
    } = batch;
    let mut ops: Vec<RowOp> = rows.into_values().collect();
    if parked {
        let (timers, rest): (Vec<RowOp>, Vec<RowOp>) = ops.into_iter().partition(|op| {
            matches!(
                op,
                RowOp::Put(Table::Timers, ..) | RowOp::Delete(Table::Timers, _)
            )
        });
        ops = rest;
        // The partition is not held here: a row of its timer still among
        // the live ones (left by the job that held it, not parked yet) is
        // older than this one and goes.
        let mut parked = txn.open_table(PARKED_TIMERS).map_err(db_err)?;
        let mut live = txn.open_table(TIMERS).map_err(db_err)?;
        for op in timers {
            let row = match &op {
                RowOp::Put(_, row, _) | RowOp::Delete(_, row) | RowOp::DeletePrefix(row) => row,
            };
            live.remove(row.as_slice()).map_err(db_err)?;
            match &op {
                RowOp::Put(_, row, v) => parked.insert(row.as_slice(), v.as_slice()).map(drop),
                _ => parked.remove(row.as_slice()).map(drop),
            }
            .map_err(db_err)?;
        }
    }
    write_rows(txn, &mut ops)?;
    if !event_times.is_empty() {
        let mut table = txn.open_table(CHANGELOG_EVENT_TIMES).map_err(db_err)?;
        for ((partition, source), time) in &event_times {
            let key = (operator.as_str(), *partition, source.as_str());
            match time {
                Some(t) => table.insert(key, *t).map(drop),
                None => table.remove(key).map(drop),
            }
            .map_err(db_err)?;
        }
    }
    Ok(())
}

/// Moves the rows of `from` whose key (parsed as a timer row of `scope`)
/// `to_move` picks into `to`; answers how many moved.
fn move_timers(
    txn: &redb::WriteTransaction,
    scope: &[u8],
    from: TableDefinition<&[u8], &[u8]>,
    to: TableDefinition<&[u8], &[u8]>,
    to_move: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<usize, StateError> {
    let end = keys::prefix_end(scope);
    let mut source = txn.open_table(from).map_err(db_err)?;
    let mut moving: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for entry in source
        .range::<&[u8]>(scope..end.as_slice())
        .map_err(db_err)?
    {
        let (row, value) = entry.map_err(db_err)?;
        if let Some((_, _, key)) = keys::parse_timer_row(scope.len(), row.value())
            && to_move(&key)
        {
            moving.push((row.value().to_vec(), value.value().to_vec()));
        }
    }
    let mut target = txn.open_table(to).map_err(db_err)?;
    for (row, value) in &moving {
        source.remove(row.as_slice()).map_err(db_err)?;
        target
            .insert(row.as_slice(), value.as_slice())
            .map_err(db_err)?;
    }
    Ok(moving.len())
}

impl StateDb {
    /// Held by whoever writes changelog records into this database outside
    /// checkpoints (a restore, a standby's tailer), shared by every handle
    /// of the file: a standby's write never lands between the writes of a
    /// restore of the same partition. Only those writers wait on it.
    pub fn changelog_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.store
            .changelog_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or clears) where committed checkpoints' rows go besides this
    /// database, for every clone of this handle.
    pub fn set_changelog(&self, changelog: Option<std::sync::Arc<dyn Changelog>>) {
        *self.changelog.write().unwrap_or_else(|p| p.into_inner()) = changelog;
    }

    pub(crate) fn changelog(&self) -> Option<std::sync::Arc<dyn Changelog>> {
        self.changelog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The recorded changelog offsets of `operator`: partition → the next
    /// offset to read.
    pub fn changelog_offsets(&self, operator: &str) -> Result<BTreeMap<u32, u64>, StateError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = match txn.open_table(CHANGELOG_OFFSETS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = BTreeMap::new();
        for entry in table
            .range((operator, 0)..=(operator, u32::MAX))
            .map_err(db_err)?
        {
            let (k, v) = entry.map_err(db_err)?;
            out.insert(k.value().1, v.value());
        }
        Ok(out)
    }

    /// The event times the changelog of `operator` holds here:
    /// `(partition, source)` → the event time the source had reached.
    pub fn changelog_event_times(
        &self,
        operator: &str,
    ) -> Result<BTreeMap<(u32, String), i64>, StateError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = match txn.open_table(CHANGELOG_EVENT_TIMES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = BTreeMap::new();
        for entry in table.range((operator, 0, "")..).map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let (op, partition, source) = k.value();
            if op != operator {
                break;
            }
            out.insert((partition, source.to_string()), v.value());
        }
        Ok(out)
    }

    /// Writes `batch` and records `offsets`, in one durable commit.
    pub fn apply_changelog(
        &self,
        batch: Option<RestoreBatch>,
        offsets: &[ChangelogOffset],
    ) -> Result<(), StateError> {
        let mut txn = self.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        if let Some(batch) = batch {
            write_batch(&txn, batch)?;
        }
        record_offsets(&txn, offsets)?;
        txn.commit().map_err(db_err)
    }

    /// A standby's write: `batch` (read from the recorded offsets `from`
    /// of its operator's partitions: partition → offset, `None` for none)
    /// and `offsets`, in one durable commit, only if the recorded offsets
    /// are still `from` (checked in the same write transaction, which
    /// redb orders with checkpoint commits). Answers whether it wrote: a
    /// node's own checkpoint or restore of one of the partitions since
    /// makes the batch stale, and it is dropped.
    pub fn apply_standby(
        &self,
        batch: RestoreBatch,
        from: &BTreeMap<u32, Option<u64>>,
        offsets: &[ChangelogOffset],
    ) -> Result<bool, StateError> {
        let mut txn = self.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let same = {
            let table = txn.open_table(CHANGELOG_OFFSETS).map_err(db_err)?;
            let mut same = true;
            for (&partition, &expected) in from {
                let now = table
                    .get((batch.operator.as_str(), partition))
                    .map_err(db_err)?
                    .map(|v| v.value());
                same &= now == expected;
            }
            same
        };
        if !same {
            txn.abort().map_err(db_err)?;
            return Ok(false);
        }
        write_batch(&txn, batch)?;
        record_offsets(&txn, offsets)?;
        txn.commit().map_err(db_err)?;
        Ok(true)
    }

    /// Parks the timers of `operator` of `topology` whose key `held`
    /// refuses (keys of partitions another node holds now: they must not
    /// fire here) and moves back the parked ones whose key it takes, in
    /// one durable commit; answers how many were parked and moved back.
    /// The rows stay a copy of the changelog up to the recorded offsets.
    pub fn park_timers(
        &self,
        topology: &str,
        operator: &str,
        held: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(usize, usize), StateError> {
        let scope = keys::scope(topology, operator);
        let mut txn = self.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let parked = move_timers(&txn, &scope, TIMERS, PARKED_TIMERS, &mut |k| !held(k))?;
        let back = move_timers(&txn, &scope, PARKED_TIMERS, TIMERS, held)?;
        if parked + back == 0 {
            txn.abort().map_err(db_err)?;
        } else {
            txn.commit().map_err(db_err)?;
        }
        Ok((parked, back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Kind, scope, state_row, timer_row};

    fn value_row(key: &[u8]) -> Vec<u8> {
        state_row(&scope("topo", "count"), 3, Kind::Value, "n", key)
    }

    #[test]
    fn rows_become_records_and_come_back_as_the_same_rows() {
        let s = scope("topo", "count");
        let map = state_row(&s, 4, Kind::MapEntry, "m", b"k2");
        let mut entry = map.clone();
        entry.extend_from_slice(b"mk");
        let rows = vec![
            RowOp::Put(Table::State, value_row(b"k1"), b"7".to_vec()),
            RowOp::DeletePrefix(map.clone()),
            RowOp::Put(Table::State, entry.clone(), b"v".to_vec()),
            RowOp::Delete(Table::Timers, timer_row(&s, 3, 0, 99, b"k1")),
            // Another topology's row in the same database: not its log.
            RowOp::Put(
                Table::State,
                state_row(&scope("other", "count"), 3, Kind::Value, "n", b"k1"),
                b"1".to_vec(),
            ),
        ];
        let records = change_records("topo", &rows).unwrap();
        assert_eq!(records.len(), 4);
        let keys: Vec<&[u8]> = records.iter().map(|r| r.state_key.as_slice()).collect();
        assert_eq!(keys, [&b"k1"[..], b"k2", b"k2", b"k1"]);
        assert!(records.iter().all(|r| r.operator == "count"));
        assert_eq!(records[3].value, None);
        let mut batch = RestoreBatch::new("topo", "count");
        for r in &records {
            batch.add(0, &r.key, r.value.as_deref()).unwrap();
        }
        let back: Vec<RowOp> = batch.rows.into_values().collect();
        assert_eq!(back, rows[..4].to_vec());
    }

    #[test]
    fn a_later_write_wins_and_a_prefix_delete_drops_the_entries_before_it() {
        let s = scope("topo", "count");
        let map = state_row(&s, 4, Kind::MapEntry, "m", b"k2");
        let mut entry = map.clone();
        entry.extend_from_slice(b"old");
        let tag = |t: u8, row: &[u8]| {
            let mut k = vec![t];
            k.extend_from_slice(&row[s.len()..]);
            k
        };
        let mut batch = RestoreBatch::new("topo", "count");
        batch
            .add(0, &tag(b's', &value_row(b"a")), Some(b"1"))
            .unwrap();
        batch
            .add(0, &tag(b's', &value_row(b"a")), Some(b"2"))
            .unwrap();
        batch
            .add(0, &tag(b's', &value_row(b"b")), Some(b"1"))
            .unwrap();
        batch.add(0, &tag(b's', &value_row(b"b")), None).unwrap();
        batch.add(0, &tag(b's', &entry), Some(b"x")).unwrap();
        batch.add(0, &tag(b'p', &map), Some(b"")).unwrap();
        let rows: Vec<RowOp> = batch.rows.into_values().collect();
        assert_eq!(
            rows,
            [
                RowOp::Put(Table::State, value_row(b"a"), b"2".to_vec()),
                RowOp::Delete(Table::State, value_row(b"b")),
                RowOp::DeletePrefix(map),
            ]
        );
        // Records that are not a changelog's are refused, not misread.
        let mut batch = RestoreBatch::new("topo", "count");
        assert!(batch.add(0, b"", Some(b"1")).is_err());
        assert!(batch.add(0, b"x\x00\x03", Some(b"1")).is_err());
        let err = batch.add(0, b"s\x00", Some(b"1")).unwrap_err();
        assert!(err.contains("not a state row"), "{err}");
        assert!(batch.is_empty());
    }

    /// A changelog that refuses every write, or takes them and says where
    /// they ended; it notes the newest checkpoint the database had
    /// committed when each came.
    #[derive(Debug)]
    struct Log {
        refuse: bool,
        taken: std::sync::Mutex<Vec<ChangeRecord>>,
        db: std::sync::Mutex<Option<StateDb>>,
        local_then: std::sync::Mutex<Vec<(u64, Option<u64>)>>,
    }

    impl Changelog for Log {
        fn commit(
            &self,
            id: u64,
            rows: &[weir_state_contract::SnapshotRow],
            meta: &[u8],
            _pending: &[(String, Vec<u8>)],
        ) -> Result<Vec<ChangelogOffset>, String> {
            assert_eq!(meta, format!("m{id}").as_bytes());
            if let Some(db) = self.db.lock().unwrap().as_ref() {
                let local = db.latest_checkpoint().unwrap().map(|c| c.id);
                self.local_then.lock().unwrap().push((id, local));
            }
            if self.refuse {
                return Err("the brokers are away".into());
            }
            let records = change_records("topo", rows)?;
            let mut taken = self.taken.lock().unwrap();
            taken.extend(records);
            Ok(vec![ChangelogOffset {
                operator: "count".into(),
                partition: 0,
                next: taken.len() as u64,
            }])
        }
    }

    #[test]
    fn the_changelog_commits_first_and_a_refusal_commits_nothing_here() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let put = |v: &[u8]| {
            crate::StateSnapshot::new(vec![RowOp::Put(Table::State, value_row(b"a"), v.to_vec())])
        };
        let value = |db: &StateDb| {
            let txn = db.db().unwrap().begin_read().unwrap();
            let state = txn.open_table(crate::STATE).unwrap();
            state
                .get(value_row(b"a").as_slice())
                .unwrap()
                .map(|v| v.value().to_vec())
        };
        let log = std::sync::Arc::new(Log {
            refuse: false,
            taken: Default::default(),
            db: std::sync::Mutex::new(Some(db.clone())),
            local_then: Default::default(),
        });
        db.set_changelog(Some(log.clone()));
        db.commit_checkpoint(1, vec![put(b"1")], b"m1", &[], 3)
            .unwrap();
        assert_eq!(log.taken.lock().unwrap().len(), 1);
        assert_eq!(db.changelog_offsets("count").unwrap()[&0], 1);
        db.set_changelog(Some(std::sync::Arc::new(Log {
            refuse: true,
            taken: Default::default(),
            db: Default::default(),
            local_then: Default::default(),
        })));
        let failed = db
            .commit_checkpoint(2, vec![put(b"2")], b"m2", &[], 3)
            .unwrap_err();
        assert!(failed.reopen.is_none());
        assert!(
            failed.error.to_string().contains("brokers are away"),
            "{}",
            failed.error
        );
        // Nothing of checkpoint 2 is here: the next one commits its rows.
        assert_eq!(value(&db).as_deref(), Some(&b"1"[..]));
        assert_eq!(db.latest_checkpoint().unwrap().unwrap().id, 1);
        assert_eq!(failed.unwritten.rows(), 1);
        db.set_changelog(Some(log.clone()));
        db.commit_checkpoint(3, vec![put(b"3")], b"m3", &[], 3)
            .unwrap();
        assert_eq!(value(&db).as_deref(), Some(&b"3"[..]));
        assert_eq!(db.latest_checkpoint().unwrap().unwrap().id, 3);
        assert_eq!(log.taken.lock().unwrap().len(), 2);
        assert!(!failed.committed_outside);
        // Each checkpoint reached the changelog before this database had
        // it: a crash in between leaves the changelog ahead, never behind.
        assert_eq!(*log.local_then.lock().unwrap(), [(1, None), (3, Some(1))]);
        assert_eq!(db.changelog_offsets("count").unwrap()[&0], 2);
    }

    /// The timer rows of `table` under scope `topo`/`count`, by key.
    fn timer_keys(db: &StateDb, table: TableDefinition<&[u8], &[u8]>) -> Vec<Vec<u8>> {
        let s = scope("topo", "count");
        let txn = db.db().unwrap().begin_read().unwrap();
        let Ok(table) = txn.open_table(table) else {
            return Vec::new();
        };
        table
            .iter()
            .unwrap()
            .map(|e| {
                keys::parse_timer_row(s.len(), e.unwrap().0.value())
                    .unwrap()
                    .2
            })
            .collect()
    }

    fn record(tag: u8, row: &[u8]) -> Vec<u8> {
        let s = scope("topo", "count");
        let mut k = vec![tag];
        k.extend_from_slice(&row[s.len()..]);
        k
    }

    fn at(partition: u32, next: u64) -> ChangelogOffset {
        ChangelogOffset {
            operator: "count".into(),
            partition,
            next,
        }
    }

    #[test]
    fn restored_rows_and_offsets_are_durable_and_foreign_timers_are_parked_until_they_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        assert!(db.changelog_offsets("count").unwrap().is_empty());
        let s = scope("topo", "count");
        let mut batch = RestoreBatch::new("topo", "count");
        batch
            .add(0, &record(b's', &value_row(b"a")), Some(b"5"))
            .unwrap();
        for key in [&b"mine"[..], b"theirs"] {
            let t = record(b't', &timer_row(&s, 1, 0, 10, key));
            batch.add(0, &t, Some(b"")).unwrap();
        }
        db.apply_changelog(Some(batch), &[at(0, 12), at(3, 4)])
            .unwrap();
        drop(db);
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(
            db.changelog_offsets("count").unwrap(),
            BTreeMap::from([(0, 12), (3, 4)])
        );
        assert!(db.changelog_offsets("other").unwrap().is_empty());
        let txn = db.db().unwrap().begin_read().unwrap();
        let state = txn.open_table(crate::STATE).unwrap();
        assert_eq!(
            state
                .get(value_row(b"a").as_slice())
                .unwrap()
                .unwrap()
                .value(),
            b"5"
        );
        drop((state, txn));
        // Another node holds `theirs` now: its timer leaves the timers an
        // instance loads, and the offsets stay (nothing is lost here).
        let mine = |k: &[u8]| k == b"mine";
        assert_eq!(
            db.park_timers("topo", "count", &mut |k| mine(k)).unwrap(),
            (1, 0)
        );
        assert_eq!(timer_keys(&db, TIMERS), [b"mine".to_vec()]);
        assert_eq!(timer_keys(&db, PARKED_TIMERS), [b"theirs".to_vec()]);
        assert_eq!(
            db.park_timers("topo", "count", &mut |k| mine(k)).unwrap(),
            (0, 0)
        );
        assert_eq!(db.changelog_offsets("count").unwrap().len(), 2);
        // It comes back: its timer with it, the other one parked.
        assert_eq!(
            db.park_timers("topo", "count", &mut |k| k == b"theirs")
                .unwrap(),
            (1, 1)
        );
        assert_eq!(timer_keys(&db, TIMERS), [b"theirs".to_vec()]);
        assert_eq!(timer_keys(&db, PARKED_TIMERS), [b"mine".to_vec()]);
    }

    #[test]
    fn event_times_round_trip_per_partition_and_an_end_of_input_is_never_written() {
        assert_eq!(event_time_record("in", i64::MAX), None);
        assert_eq!(event_time_record("in", i64::MIN), None);
        assert_eq!(event_time_record("", 5), None);
        let (key, value) = event_time_record("in", -7).unwrap();
        assert_eq!(key, b"win");
        let mut batch = RestoreBatch::new("topo", "count");
        batch.add(2, &key, Some(&value)).unwrap();
        let (key, later) = event_time_record("in", 1_000).unwrap();
        batch.add(2, &key, Some(&later)).unwrap();
        batch.add(3, &key, Some(&value)).unwrap();
        let (other, value) = event_time_record("other", 9).unwrap();
        batch.add(3, &other, Some(&value)).unwrap();
        batch.add(3, &other, None).unwrap();
        // Not an event time: refused, not misread.
        assert!(batch.add(1, b"w", Some(&later)).is_err());
        let err = batch.add(1, &key, Some(b"1234")).unwrap_err();
        assert!(err.contains("4 bytes, not 8"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let (_, old) = event_time_record("other", 3).unwrap();
        let mut first = RestoreBatch::new("topo", "count");
        first.add(3, &other, Some(&old)).unwrap();
        db.apply_changelog(Some(first), &[]).unwrap();
        db.apply_changelog(Some(batch), &[at(2, 5)]).unwrap();
        assert_eq!(
            db.changelog_event_times("count").unwrap(),
            BTreeMap::from([((2, "in".to_string()), 1_000), ((3, "in".to_string()), -7)])
        );
        assert!(db.changelog_event_times("other").unwrap().is_empty());
    }

    #[test]
    fn a_standby_writes_only_over_the_offsets_it_read_from_and_parks_its_timers() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        // The job's handle and the standby's share the open file.
        let standby = StateDb::open(dir.path()).unwrap();
        let s = scope("topo", "count");
        let batch = |v: &[u8]| {
            let mut b = RestoreBatch::standby("topo", "count");
            b.add(1, &record(b's', &value_row(b"a")), Some(v)).unwrap();
            let t = record(b't', &timer_row(&s, 1, 0, 10, b"a"));
            b.add(1, &t, Some(b"")).unwrap();
            b
        };
        // A row of the timer left among the live ones (by the job that
        // held the partition) goes: the standby's copy is newer.
        let mut left = RestoreBatch::new("topo", "count");
        let t = record(b't', &timer_row(&s, 1, 0, 10, b"a"));
        left.add(1, &t, Some(b"")).unwrap();
        db.apply_changelog(Some(left), &[]).unwrap();
        assert_eq!(timer_keys(&db, TIMERS), [b"a".to_vec()]);
        let from = BTreeMap::from([(1, None)]);
        assert!(
            standby
                .apply_standby(batch(b"1"), &from, &[at(1, 3)])
                .unwrap()
        );
        assert_eq!(db.changelog_offsets("count").unwrap()[&1], 3);
        assert!(timer_keys(&db, TIMERS).is_empty());
        assert_eq!(timer_keys(&db, PARKED_TIMERS), [b"a".to_vec()]);
        // The node's own restore (or checkpoint) moved the offset since
        // the standby read: its older batch is dropped.
        db.apply_changelog(None, &[at(1, 9)]).unwrap();
        let stale = BTreeMap::from([(1, Some(3))]);
        assert!(
            !standby
                .apply_standby(batch(b"2"), &stale, &[at(1, 5)])
                .unwrap()
        );
        assert_eq!(db.changelog_offsets("count").unwrap()[&1], 9);
        let txn = db.db().unwrap().begin_read().unwrap();
        let state = txn.open_table(crate::STATE).unwrap();
        let value = state.get(value_row(b"a").as_slice()).unwrap().unwrap();
        assert_eq!(value.value(), b"1");
    }
}
