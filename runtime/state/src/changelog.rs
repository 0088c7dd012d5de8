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
//!
//! Not here: Kafka (the server's cluster code and `weir-connectors` read
//! and write the topics).

use std::collections::BTreeMap;

use redb::{Durability, ReadableDatabase, TableDefinition};

use crate::checkpoint::{RowOp, Table, write_rows};
use crate::{StateDb, StateError, TIMERS, db_err, keys};

/// Per keyed operator and changelog partition: the offset up to which
/// this database's rows reflect the changelog (the next offset to read).
const CHANGELOG_OFFSETS: TableDefinition<(&str, u32), u64> =
    TableDefinition::new("changelog_offsets_v1");

const TAG_STATE: u8 = b's';
const TAG_TIMER: u8 = b't';
const TAG_PREFIX: u8 = b'p';

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

/// Records `offsets` and drops the recorded offsets of `forget`'s
/// `(operator, partition)`s in `txn`.
pub(crate) fn record_offsets(
    txn: &redb::WriteTransaction,
    offsets: &[ChangelogOffset],
    forget: &[(String, u32)],
) -> Result<(), StateError> {
    let mut table = txn.open_table(CHANGELOG_OFFSETS).map_err(db_err)?;
    for o in offsets {
        table
            .insert((o.operator.as_str(), o.partition), o.next)
            .map_err(db_err)?;
    }
    for (operator, partition) in forget {
        table
            .remove((operator.as_str(), *partition))
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
/// row only, to apply in batches ([`StateDb::apply_changelog`]).
#[derive(Debug)]
pub struct RestoreBatch {
    scope: Vec<u8>,
    rows: BTreeMap<Slot, RowOp>,
}

impl RestoreBatch {
    pub fn new(topology: &str, operator: &str) -> RestoreBatch {
        RestoreBatch {
            scope: keys::scope(topology, operator),
            rows: BTreeMap::new(),
        }
    }

    /// Rows waiting.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a record read from the changelog, over what came before it.
    /// A record that is not one this module writes is refused (the topic
    /// is not a changelog of this operator).
    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let (&tag, rest) = key
            .split_first()
            .ok_or("a changelog record without a key")?;
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

impl StateDb {
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

    /// Writes `batch`'s rows and records `offsets`, in one durable
    /// commit; `forget` drops the recorded offsets of those
    /// `(operator, partition)`s (their rows here are no longer a copy of
    /// the log up to an offset).
    pub fn apply_changelog(
        &self,
        batch: Option<RestoreBatch>,
        offsets: &[ChangelogOffset],
        forget: &[(String, u32)],
    ) -> Result<(), StateError> {
        let mut txn = self.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        if let Some(batch) = batch {
            let mut ops: Vec<RowOp> = batch.rows.into_values().collect();
            write_rows(&txn, &mut ops)?;
        }
        record_offsets(&txn, offsets, forget)?;
        txn.commit().map_err(db_err)
    }

    /// Removes the timers of `operator` of `topology` whose key `keep`
    /// refuses (keys of partitions another node owns now: their timers
    /// must not fire here); answers how many went.
    pub fn drop_timers(
        &self,
        topology: &str,
        operator: &str,
        keep: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<usize, StateError> {
        let scope = keys::scope(topology, operator);
        let end = keys::prefix_end(&scope);
        let doomed: Vec<Vec<u8>> = {
            let txn = self.db()?.begin_read().map_err(db_err)?;
            let table = match txn.open_table(TIMERS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(db_err(e)),
            };
            let mut doomed = Vec::new();
            for entry in table
                .range::<&[u8]>(scope.as_slice()..end.as_slice())
                .map_err(db_err)?
            {
                let (row, _) = entry.map_err(db_err)?;
                let row = row.value();
                if let Some((_, _, key)) = keys::parse_timer_row(scope.len(), row)
                    && !keep(&key)
                {
                    doomed.push(row.to_vec());
                }
            }
            doomed
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut txn = self.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut table = txn.open_table(TIMERS).map_err(db_err)?;
            for row in &doomed {
                table.remove(row.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(doomed.len())
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
            batch.add(&r.key, r.value.as_deref()).unwrap();
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
        batch.add(&tag(b's', &value_row(b"a")), Some(b"1")).unwrap();
        batch.add(&tag(b's', &value_row(b"a")), Some(b"2")).unwrap();
        batch.add(&tag(b's', &value_row(b"b")), Some(b"1")).unwrap();
        batch.add(&tag(b's', &value_row(b"b")), None).unwrap();
        batch.add(&tag(b's', &entry), Some(b"x")).unwrap();
        batch.add(&tag(b'p', &map), Some(b"")).unwrap();
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
        assert!(batch.add(b"", Some(b"1")).is_err());
        assert!(batch.add(b"x\x00\x03", Some(b"1")).is_err());
        let err = batch.add(b"s\x00", Some(b"1")).unwrap_err();
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

    #[test]
    fn restored_rows_and_offsets_are_durable_and_foreign_timers_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        assert!(db.changelog_offsets("count").unwrap().is_empty());
        let s = scope("topo", "count");
        let mut batch = RestoreBatch::new("topo", "count");
        let mut k = vec![b's'];
        k.extend_from_slice(&value_row(b"a")[s.len()..]);
        batch.add(&k, Some(b"5")).unwrap();
        for key in [&b"mine"[..], b"theirs"] {
            let mut t = vec![b't'];
            t.extend_from_slice(&timer_row(&s, 1, 0, 10, key)[s.len()..]);
            batch.add(&t, Some(b"")).unwrap();
        }
        let at = |partition, next| ChangelogOffset {
            operator: "count".into(),
            partition,
            next,
        };
        db.apply_changelog(Some(batch), &[at(0, 12), at(3, 4)], &[])
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
        assert_eq!(
            db.drop_timers("topo", "count", &mut |k| k == b"mine")
                .unwrap(),
            1
        );
        assert_eq!(
            db.drop_timers("topo", "count", &mut |k| k == b"mine")
                .unwrap(),
            0
        );
        db.apply_changelog(None, &[], &[("count".into(), 3)])
            .unwrap();
        assert_eq!(
            db.changelog_offsets("count").unwrap(),
            BTreeMap::from([(0, 12)])
        );
    }
}
