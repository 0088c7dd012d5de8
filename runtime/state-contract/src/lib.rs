//! weir-state-contract: the contract between the Wasm host and the state
//! stores, so that neither depends on the other.
//!
//! - [`OperatorState`]: what the host needs of an operator instance's keyed
//!   state (reads, applying a call's writes, due timers, flush, snapshot);
//!   `weir-state` implements it on redb, `weir-wasm`'s `MemoryState` in
//!   memory.
//! - [`StateOp`], [`ValueWrite`]: the writes a call makes.
//! - [`TimeDomain`]: event time or processing time, for timers.
//! - [`StateSnapshot`]: what changed since the last checkpoint, as rows the
//!   checkpoint commit writes; typed, so the engine never downcasts.
//!
//! No I/O, no Wasm, no storage here.

use std::collections::BTreeMap;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// The watermark: timestamps carried by events.
    EventTime,
    /// The wall clock of the host.
    ProcessingTime,
}

/// The table a snapshot row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTable {
    /// Values, map entries and lists.
    State,
    /// Registered timers.
    Timers,
}

/// One row write of a state change, its key as the store encoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRow {
    Put(RowTable, Vec<u8>, Vec<u8>),
    Delete(RowTable, Vec<u8>),
    /// Removes every state row starting with the prefix (a map's entries).
    DeletePrefix(Vec<u8>),
}

/// The changes of one operator instance's state since its last snapshot,
/// waiting to be written by a checkpoint commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateSnapshot {
    rows: Vec<SnapshotRow>,
    bytes: usize,
}

impl StateSnapshot {
    pub fn new(rows: Vec<SnapshotRow>) -> Self {
        let bytes = rows
            .iter()
            .map(|row| match row {
                SnapshotRow::Put(_, k, v) => k.len() + v.len(),
                SnapshotRow::Delete(_, k) | SnapshotRow::DeletePrefix(k) => k.len(),
            })
            .sum();
        StateSnapshot { rows, bytes }
    }
    /// Bytes of keys and values it writes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Rows it writes or removes.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }
    /// Its rows, for the commit.
    pub fn into_rows(self) -> Vec<SnapshotRow> {
        self.rows
    }
}

/// The state store could not serve a read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state store failed: {0}")]
pub struct StateStoreError(pub String);

/// One write a call made, in call order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    SetValue {
        name: String,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    MapPut {
        name: String,
        key: Vec<u8>,
        map_key: Vec<u8>,
        value: Vec<u8>,
    },
    MapRemove {
        name: String,
        key: Vec<u8>,
        map_key: Vec<u8>,
    },
    MapClear {
        name: String,
        key: Vec<u8>,
    },
    ListAppend {
        name: String,
        key: Vec<u8>,
        item: Vec<u8>,
    },
    ListReplace {
        name: String,
        key: Vec<u8>,
        items: Vec<Vec<u8>>,
    },
    RegisterTimer {
        domain: TimeDomain,
        key: Vec<u8>,
        time: i64,
    },
    DeleteTimer {
        domain: TimeDomain,
        key: Vec<u8>,
        time: i64,
    },
}

/// A value-state write that came back from a call, borrowed from the call's
/// output so that a store can update in place without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueWrite<'a> {
    pub name: &'a str,
    pub key: &'a [u8],
    /// `None` clears the value.
    pub value: Option<&'a [u8]>,
}

/// Keyed state of one operator instance, as the Wasm host needs it. Reads
/// see only applied writes; [`PendingWrites`] layers a call's own writes on
/// top.
pub trait OperatorState: Send + 'static {
    fn value(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateStoreError>;
    /// Appends the value of `name` for `key` to `out`, returning whether it
    /// has one. The hot path of every call; override it to avoid the copy.
    fn append_value(
        &mut self,
        name: &str,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateStoreError> {
        Ok(match self.value(name, key)? {
            Some(v) => {
                out.extend_from_slice(&v);
                true
            }
            None => false,
        })
    }
    fn map(
        &mut self,
        name: &str,
        key: &[u8],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StateStoreError>;
    fn map_entry(
        &mut self,
        name: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateStoreError>;
    fn list(&mut self, name: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, StateStoreError>;
    /// Applies a successful call's writes, all or nothing: first `ops` (the
    /// writes made through imports, in call order), then `values` (the
    /// call's final value-state changes).
    fn apply(
        &mut self,
        ops: Vec<StateOp>,
        values: &[ValueWrite<'_>],
    ) -> Result<(), StateStoreError>;
    /// Removes and returns the timers of `domain` due at `time` or before,
    /// earliest first.
    fn take_due_timers(
        &mut self,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StateStoreError>;
    /// The earliest timer of `domain` registered, if any: the engine asks
    /// to be woken then (processing time) instead of polling.
    fn next_timer(&mut self, domain: TimeDomain) -> Option<i64>;
    /// Bytes of state the store holds in memory (its working set), for a
    /// topology's footprint; 0 when it cannot tell.
    fn resident_bytes(&self) -> usize {
        0
    }
    /// Makes everything applied so far durable, where the store can (the
    /// in-memory one has nothing to do).
    fn flush(&mut self) -> Result<(), StateStoreError> {
        Ok(())
    }
    /// Takes what changed since the last snapshot, for checkpoint
    /// `checkpoint`, as rows the checkpoint commit writes. Stores that
    /// cannot be checkpointed (the in-memory one) say so.
    fn snapshot(&mut self, checkpoint: u64) -> Result<StateSnapshot, StateStoreError> {
        let _ = checkpoint;
        Err(StateStoreError(
            "this operator's state is kept in memory only and cannot be checkpointed: give the topology a data directory".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_counts_its_rows_and_the_bytes_of_their_keys_and_values() {
        let snapshot = StateSnapshot::new(vec![
            SnapshotRow::Put(RowTable::State, b"key".to_vec(), b"value".to_vec()),
            SnapshotRow::Delete(RowTable::Timers, b"tk".to_vec()),
            SnapshotRow::DeletePrefix(b"p".to_vec()),
        ]);
        assert_eq!(snapshot.rows(), 3);
        assert_eq!(snapshot.bytes(), 3 + 5 + 2 + 1);
        assert_eq!(snapshot.into_rows().len(), 3);
    }

    /// A store that implements only what it must.
    struct Nothing;
    impl OperatorState for Nothing {
        fn value(&mut self, _: &str, _: &[u8]) -> Result<Option<Vec<u8>>, StateStoreError> {
            Ok(Some(b"v".to_vec()))
        }
        fn map(
            &mut self,
            _: &str,
            _: &[u8],
        ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StateStoreError> {
            Ok(BTreeMap::new())
        }
        fn map_entry(
            &mut self,
            _: &str,
            _: &[u8],
            _: &[u8],
        ) -> Result<Option<Vec<u8>>, StateStoreError> {
            Ok(None)
        }
        fn list(&mut self, _: &str, _: &[u8]) -> Result<Vec<Vec<u8>>, StateStoreError> {
            Ok(Vec::new())
        }
        fn apply(&mut self, _: Vec<StateOp>, _: &[ValueWrite<'_>]) -> Result<(), StateStoreError> {
            Ok(())
        }
        fn take_due_timers(
            &mut self,
            _: TimeDomain,
            _: i64,
        ) -> Result<Vec<(i64, Vec<u8>)>, StateStoreError> {
            Ok(Vec::new())
        }
        fn next_timer(&mut self, _: TimeDomain) -> Option<i64> {
            None
        }
    }

    #[test]
    fn the_defaults_copy_values_and_refuse_snapshots_saying_why() {
        let mut out = b"x".to_vec();
        assert!(Nothing.append_value("n", b"k", &mut out).unwrap());
        assert_eq!(out, b"xv");
        let err = Nothing.snapshot(1).unwrap_err();
        assert!(
            err.to_string()
                .contains("give the topology a data directory"),
            "{err}"
        );
    }
}
