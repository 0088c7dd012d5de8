//! How the Wasm host reaches keyed state: through the [`OperatorState`]
//! trait of `weir-state-contract` (`weir-state` implements it on redb;
//! [`MemoryState`] here is the in-memory one used by local runs and
//! tests), and [`PendingWrites`], the writes and timer changes a call
//! makes, applied only when it succeeds.

use std::collections::BTreeMap;

use foldhash::HashMap;

pub use weir_state_contract::{OperatorState, StateOp, StateStoreError, TimeDomain, ValueWrite};

/// A call's writes, kept aside until the call succeeds, and the reads that
/// must see them. Writes are indexed by state name and key, so a read looks
/// only at the writes to what it reads.
#[derive(Debug, Default)]
pub struct PendingWrites {
    ops: Vec<StateOp>,
    /// Bytes the ops hold (names, keys, values).
    bytes: usize,
    /// Indexes into `ops` of the writes to each (name, key).
    by_target: HashMap<String, HashMap<Vec<u8>, Vec<usize>>>,
}

pub(crate) fn target(op: &StateOp) -> Option<(&str, &[u8])> {
    match op {
        StateOp::SetValue { name, key, .. }
        | StateOp::MapPut { name, key, .. }
        | StateOp::MapRemove { name, key, .. }
        | StateOp::MapClear { name, key }
        | StateOp::ListAppend { name, key, .. }
        | StateOp::ListReplace { name, key, .. } => Some((name, key)),
        StateOp::RegisterTimer { .. } | StateOp::DeleteTimer { .. } => None,
    }
}

/// Bytes an op holds in host memory (names, keys, values), roughly.
pub(crate) fn op_bytes(op: &StateOp) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match op {
            StateOp::SetValue { name, key, value } => {
                name.len() + key.len() + value.as_ref().map_or(0, Vec::len)
            }
            StateOp::MapPut {
                name,
                key,
                map_key,
                value,
            } => name.len() + key.len() + map_key.len() + value.len(),
            StateOp::MapRemove { name, key, map_key } => name.len() + key.len() + map_key.len(),
            StateOp::MapClear { name, key } => name.len() + key.len(),
            StateOp::ListAppend { name, key, item } => name.len() + key.len() + item.len(),
            StateOp::ListReplace { name, key, items } => {
                name.len() + key.len() + items.iter().map(|i| i.len() + 24).sum::<usize>()
            }
            StateOp::RegisterTimer { key, .. } | StateOp::DeleteTimer { key, .. } => key.len(),
        }
}

impl PendingWrites {
    /// Bytes the call's writes hold so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, op: StateOp) {
        self.bytes += op_bytes(&op);
        if let Some((name, key)) = target(&op) {
            let keys = match self.by_target.get_mut(name) {
                Some(keys) => keys,
                None => self.by_target.entry(name.to_string()).or_default(),
            };
            match keys.get_mut(key) {
                Some(list) => list.push(self.ops.len()),
                None => {
                    keys.insert(key.to_vec(), vec![self.ops.len()]);
                }
            }
        }
        self.ops.push(op);
    }

    /// How many writes the call made.
    pub fn count(&self) -> usize {
        self.ops.len()
    }

    pub fn take(&mut self) -> Vec<StateOp> {
        self.by_target.clear();
        self.bytes = 0;
        std::mem::take(&mut self.ops)
    }

    pub fn clear(&mut self) {
        self.by_target.clear();
        self.bytes = 0;
        self.ops.clear();
    }

    /// The writes to (name, key), in call order.
    fn writes_to<'a>(&'a self, name: &str, key: &[u8]) -> impl Iterator<Item = &'a StateOp> + 'a {
        self.by_target
            .get(name)
            .and_then(|keys| keys.get(key))
            .into_iter()
            .flatten()
            .map(|&i| &self.ops[i])
    }

    pub fn value(
        &self,
        store: &mut dyn OperatorState,
        name: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateStoreError> {
        let latest = self.writes_to(name, key).fold(None, |latest, op| match op {
            StateOp::SetValue { value, .. } => Some(value.clone()),
            _ => latest,
        });
        match latest {
            Some(v) => Ok(v),
            None => store.value(name, key),
        }
    }

    pub fn map(
        &self,
        store: &mut dyn OperatorState,
        name: &str,
        key: &[u8],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StateStoreError> {
        let mut map = store.map(name, key)?;
        for op in self.writes_to(name, key) {
            apply_map_op(&mut map, op, name, key);
        }
        Ok(map)
    }

    pub fn map_entry(
        &self,
        store: &mut dyn OperatorState,
        name: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateStoreError> {
        let mut entry = store.map_entry(name, key, map_key)?;
        for op in self.writes_to(name, key) {
            match op {
                StateOp::MapPut {
                    map_key: k, value, ..
                } if k == map_key => entry = Some(value.clone()),
                StateOp::MapRemove { map_key: k, .. } if k == map_key => entry = None,
                StateOp::MapClear { .. } => entry = None,
                _ => {}
            }
        }
        Ok(entry)
    }

    pub fn list(
        &self,
        store: &mut dyn OperatorState,
        name: &str,
        key: &[u8],
    ) -> Result<Vec<Vec<u8>>, StateStoreError> {
        let mut list = store.list(name, key)?;
        for op in self.writes_to(name, key) {
            apply_list_op(&mut list, op, name, key);
        }
        Ok(list)
    }
}

fn apply_map_op(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &StateOp, name: &str, key: &[u8]) {
    match op {
        StateOp::MapPut {
            name: n,
            key: k,
            map_key,
            value,
        } if n == name && k == key => {
            map.insert(map_key.clone(), value.clone());
        }
        StateOp::MapRemove {
            name: n,
            key: k,
            map_key,
        } if n == name && k == key => {
            map.remove(map_key);
        }
        StateOp::MapClear { name: n, key: k } if n == name && k == key => map.clear(),
        _ => {}
    }
}

fn apply_list_op(list: &mut Vec<Vec<u8>>, op: &StateOp, name: &str, key: &[u8]) {
    match op {
        StateOp::ListAppend {
            name: n,
            key: k,
            item,
        } if n == name && k == key => list.push(item.clone()),
        StateOp::ListReplace {
            name: n,
            key: k,
            items,
        } if n == name && k == key => *list = items.clone(),
        _ => {}
    }
}

/// Timers registered in a [`MemoryState`], ordered by time then key.
type TimerSet = std::collections::BTreeSet<(i64, Vec<u8>)>;
/// One kind of state: by state name, then by key. Nested so that lookups
/// borrow the name and key instead of allocating a compound key.
type ByNameAndKey<V> = HashMap<String, HashMap<Vec<u8>, V>>;

/// Keyed state and timers in memory: what local runs (`weir run`) and tests
/// use. Nothing is durable.
#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    values: ByNameAndKey<Vec<u8>>,
    maps: ByNameAndKey<BTreeMap<Vec<u8>, Vec<u8>>>,
    lists: ByNameAndKey<Vec<Vec<u8>>>,
    event_timers: TimerSet,
    processing_timers: TimerSet,
}

fn lookup<'a, V>(by: &'a ByNameAndKey<V>, name: &str, key: &[u8]) -> Option<&'a V> {
    by.get(name).and_then(|keys| keys.get(key))
}

fn entry<'a, V: Default>(by: &'a mut ByNameAndKey<V>, name: &str, key: &[u8]) -> &'a mut V {
    if !by.contains_key(name) {
        by.insert(name.to_string(), HashMap::default());
    }
    let keys = by.get_mut(name).expect("inserted above");
    entry_in(keys, key)
}

/// The entry of `key`, created empty if missing; one lookup when present
/// (`entry()` would need an owned key on every call).
fn entry_in<'a, V: Default>(keys: &'a mut HashMap<Vec<u8>, V>, key: &[u8]) -> &'a mut V {
    if keys.contains_key(key) {
        return keys.get_mut(key).expect("present");
    }
    keys.entry(key.to_vec()).or_default()
}

fn remove<V>(by: &mut ByNameAndKey<V>, name: &str, key: &[u8]) {
    if let Some(keys) = by.get_mut(name) {
        keys.remove(key);
    }
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys with a value in value state `name`.
    pub fn value_count(&self, name: &str) -> usize {
        self.values.get(name).map_or(0, HashMap::len)
    }

    fn apply_ops(&mut self, ops: Vec<StateOp>) {
        for op in ops {
            match op {
                StateOp::SetValue {
                    name,
                    key,
                    value: Some(v),
                } => match self.values.get_mut(&name) {
                    Some(keys) => {
                        keys.insert(key, v);
                    }
                    None => {
                        let mut keys = HashMap::default();
                        keys.insert(key, v);
                        self.values.insert(name, keys);
                    }
                },
                StateOp::SetValue {
                    name,
                    key,
                    value: None,
                } => remove(&mut self.values, &name, &key),
                StateOp::MapPut {
                    ref name, ref key, ..
                }
                | StateOp::MapRemove {
                    ref name, ref key, ..
                }
                | StateOp::MapClear { ref name, ref key } => {
                    let map = entry(&mut self.maps, name, key);
                    apply_map_op(map, &op, name, key);
                    if map.is_empty() {
                        remove(&mut self.maps, name, key);
                    }
                }
                StateOp::ListAppend {
                    ref name, ref key, ..
                }
                | StateOp::ListReplace {
                    ref name, ref key, ..
                } => {
                    let list = entry(&mut self.lists, name, key);
                    apply_list_op(list, &op, name, key);
                    if list.is_empty() {
                        remove(&mut self.lists, name, key);
                    }
                }
                StateOp::RegisterTimer { domain, key, time } => {
                    self.timers(domain).insert((time, key));
                }
                StateOp::DeleteTimer { domain, key, time } => {
                    self.timers(domain).remove(&(time, key));
                }
            }
        }
    }

    fn timers(&mut self, domain: TimeDomain) -> &mut TimerSet {
        match domain {
            TimeDomain::EventTime => &mut self.event_timers,
            TimeDomain::ProcessingTime => &mut self.processing_timers,
        }
    }
}

impl OperatorState for MemoryState {
    fn value(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateStoreError> {
        Ok(lookup(&self.values, name, key).cloned())
    }

    fn append_value(
        &mut self,
        name: &str,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateStoreError> {
        Ok(match lookup(&self.values, name, key) {
            Some(v) => {
                out.extend_from_slice(v);
                true
            }
            None => false,
        })
    }

    fn map(
        &mut self,
        name: &str,
        key: &[u8],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StateStoreError> {
        Ok(lookup(&self.maps, name, key).cloned().unwrap_or_default())
    }

    fn map_entry(
        &mut self,
        name: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateStoreError> {
        Ok(lookup(&self.maps, name, key).and_then(|m| m.get(map_key).cloned()))
    }

    fn list(&mut self, name: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, StateStoreError> {
        Ok(lookup(&self.lists, name, key).cloned().unwrap_or_default())
    }

    fn apply(
        &mut self,
        ops: Vec<StateOp>,
        values: &[ValueWrite<'_>],
    ) -> Result<(), StateStoreError> {
        self.apply_ops(ops);
        // Look a state name's map up once per run of writes to it (with one
        // value state, once per call).
        let mut rest = values;
        while let Some(first) = rest.first() {
            let name = first.name;
            let run = rest.iter().take_while(|w| w.name == name).count();
            if !self.values.contains_key(name) {
                self.values.insert(name.to_string(), HashMap::default());
            }
            let keys = self.values.get_mut(name).expect("inserted above");
            for w in &rest[..run] {
                match w.value {
                    // One lookup for a key that has a value already (the
                    // common case: a running aggregate), reusing its buffer.
                    Some(v) => match keys.get_mut(w.key) {
                        Some(slot) => {
                            slot.clear();
                            slot.extend_from_slice(v);
                        }
                        None => {
                            keys.insert(w.key.to_vec(), v.to_vec());
                        }
                    },
                    None => {
                        keys.remove(w.key);
                    }
                }
            }
            rest = &rest[run..];
        }
        Ok(())
    }

    fn take_due_timers(
        &mut self,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StateStoreError> {
        let set = self.timers(domain);
        let later = set.split_off(&(time.saturating_add(1), Vec::new()));
        Ok(std::mem::replace(set, later).into_iter().collect())
    }

    fn next_timer(&mut self, domain: TimeDomain) -> Option<i64> {
        self.timers(domain).first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &str, key: &str, mk: &str, v: &str) -> StateOp {
        StateOp::MapPut {
            name: name.into(),
            key: key.into(),
            map_key: mk.into(),
            value: v.into(),
        }
    }

    #[test]
    fn pending_writes_are_seen_before_they_apply() {
        let mut store = MemoryState::new();
        store
            .apply(vec![put("m", "k", "a", "1"), put("m", "k", "b", "2")], &[])
            .unwrap();
        let mut pending = PendingWrites::default();
        pending.push(StateOp::MapRemove {
            name: "m".into(),
            key: "k".into(),
            map_key: "a".into(),
        });
        pending.push(put("m", "k", "c", "3"));
        pending.push(StateOp::SetValue {
            name: "v".into(),
            key: "k".into(),
            value: Some(b"9".to_vec()),
        });
        let map = pending.map(&mut store, "m", b"k").unwrap();
        assert_eq!(
            map.keys().cloned().collect::<Vec<_>>(),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            pending.map_entry(&mut store, "m", b"k", b"a").unwrap(),
            None
        );
        assert_eq!(
            pending.value(&mut store, "v", b"k").unwrap(),
            Some(b"9".to_vec())
        );
        // The store itself is untouched until the call succeeds.
        assert_eq!(
            store.map_entry("m", b"k", b"a").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(store.value("v", b"k").unwrap(), None);
        store.apply(pending.take(), &[]).unwrap();
        assert_eq!(store.map_entry("m", b"k", b"a").unwrap(), None);
        assert_eq!(store.value("v", b"k").unwrap(), Some(b"9".to_vec()));
    }

    #[test]
    fn due_timers_come_out_in_time_order_once() {
        let mut store = MemoryState::new();
        let reg = |t: i64, k: &str| StateOp::RegisterTimer {
            domain: TimeDomain::EventTime,
            key: k.into(),
            time: t,
        };
        store
            .apply(
                vec![reg(30, "a"), reg(10, "b"), reg(20, "c"), reg(10, "b")],
                &[],
            )
            .unwrap();
        let due = store.take_due_timers(TimeDomain::EventTime, 20).unwrap();
        assert_eq!(due, vec![(10, b"b".to_vec()), (20, b"c".to_vec())]);
        assert!(
            store
                .take_due_timers(TimeDomain::EventTime, 20)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .take_due_timers(TimeDomain::ProcessingTime, 100)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .take_due_timers(TimeDomain::EventTime, i64::MAX)
                .unwrap()
                .len(),
            1
        );
    }
}
