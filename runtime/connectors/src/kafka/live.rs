//! [`LiveShare`]: the partitions a cluster node's running job of one
//! topology reads and commits, changed while it runs, so that a change of
//! assignment moves only the partitions that move (see `docs/cluster.md`,
//! "Tasks").
//!
//! Two sets per input topic, changed by the node in this order:
//! - **reads**: what the job's Kafka sources read. Each source checks
//!   the epoch at every pull, re-assigns its consumer to the new set and
//!   says so ([`LiveShare::wait_read`] waits for every source). A source
//!   keeps the position of a partition it stopped reading, so the next
//!   checkpoint commits how far it got.
//! - **owned**: the partitions whose offsets, changelog rows and event
//!   times a checkpoint's transaction may carry. A partition leaves it
//!   only after the checkpoint that followed its last read committed, and
//!   joins it (its state restored) before it is read.
//!
//! With each new read set come **floors**: per topic, the event time the
//! partitions that joined had reached under their last owner; the
//! source's event time does not fall below it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::group::Assignment;

/// The partitions a node's job reads and commits (see the module doc).
/// Equal only to itself.
#[derive(Debug, Default)]
pub struct LiveShare {
    epoch: AtomicU64,
    inner: Mutex<Inner>,
    applied: Condvar,
}

#[derive(Debug, Default)]
struct Inner {
    reads: Assignment,
    owned: Assignment,
    floors: BTreeMap<String, i64>,
    /// Per registered source: the epoch it applied last.
    readers: BTreeMap<u64, u64>,
    next_reader: u64,
}

impl PartialEq for LiveShare {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for LiveShare {}

/// What a source reads of its topic as of an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reads {
    pub epoch: u64,
    pub partitions: Vec<i32>,
    /// The least event time the source reports (`i64::MIN`: none).
    pub floor: i64,
}

impl LiveShare {
    /// A share whose sources read, and whose checkpoints commit,
    /// `partitions`.
    pub fn new(partitions: Assignment) -> Arc<LiveShare> {
        let share = LiveShare::default();
        share.reset(partitions);
        Arc::new(share)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets both sets to `partitions` and clears the floors (before a job
    /// starts on them).
    pub fn reset(&self, partitions: Assignment) {
        let mut inner = self.inner();
        inner.reads = partitions.clone();
        inner.owned = partitions;
        inner.floors.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The partitions a checkpoint may commit now, by topic.
    pub fn owned(&self) -> Assignment {
        self.inner().owned.clone()
    }

    /// Sets the partitions a checkpoint may commit.
    pub fn set_owned(&self, owned: Assignment) {
        self.inner().owned = owned;
    }

    /// Sets what the sources read, with the event-time floor of each topic
    /// whose partitions joined; answers the epoch to wait for.
    pub fn set_reads(&self, reads: Assignment, floors: BTreeMap<String, i64>) -> u64 {
        let mut inner = self.inner();
        inner.reads = reads;
        for (topic, floor) in floors {
            let at = inner.floors.entry(topic).or_insert(floor);
            *at = (*at).max(floor);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Waits until every registered source read as of `epoch` (or later);
    /// `false` after `limit`.
    pub fn wait_read(&self, epoch: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut inner = self.inner();
        while inner.readers.values().any(|&seen| seen < epoch) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            inner = self
                .applied
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The epoch now: a cheap check before [`LiveShare::reads_of`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A new source of the job: its id, and what it reads of `topic`.
    pub(crate) fn register(&self, topic: &str) -> (u64, Reads) {
        let mut inner = self.inner();
        let id = inner.next_reader;
        inner.next_reader += 1;
        let reads = Self::reads_in(&inner, self.epoch(), topic);
        inner.readers.insert(id, reads.epoch);
        (id, reads)
    }

    /// A source that went away (its job stopped).
    pub(crate) fn unregister(&self, id: u64) {
        self.inner().readers.remove(&id);
        self.applied.notify_all();
    }

    /// What the sources read of `topic` now.
    pub(crate) fn reads_of(&self, topic: &str) -> Reads {
        let inner = self.inner();
        Self::reads_in(&inner, self.epoch(), topic)
    }

    fn reads_in(inner: &Inner, epoch: u64, topic: &str) -> Reads {
        Reads {
            epoch,
            partitions: inner
                .reads
                .get(topic)
                .map(|ps| ps.iter().copied().collect())
                .unwrap_or_default(),
            floor: inner.floors.get(topic).copied().unwrap_or(i64::MIN),
        }
    }

    /// Source `id` reads as of `epoch` now.
    pub(crate) fn applied(&self, id: u64, epoch: u64) {
        if let Some(seen) = self.inner().readers.get_mut(&id) {
            *seen = (*seen).max(epoch);
        }
        self.applied.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn of(topic: &str, ps: &[i32]) -> Assignment {
        Assignment::from([(
            topic.to_string(),
            ps.iter().copied().collect::<BTreeSet<_>>(),
        )])
    }

    #[test]
    fn a_change_of_reads_is_waited_for_until_every_source_applied_it() {
        let share = LiveShare::new(of("in", &[0, 1, 2]));
        let (a, first) = share.register("in");
        let (b, _) = share.register("other");
        assert_eq!(first.partitions, [0, 1, 2]);
        let epoch = share.set_reads(of("in", &[0, 2]), BTreeMap::from([("in".into(), 50)]));
        // Nobody applied it yet.
        assert!(!share.wait_read(epoch, Duration::from_millis(20)));
        let now = share.reads_of("in");
        assert_eq!((now.partitions, now.floor), (vec![0, 2], 50));
        share.applied(a, now.epoch);
        assert!(
            !share.wait_read(epoch, Duration::from_millis(20)),
            "b has not"
        );
        // A source whose job went away does not hold the change up.
        share.unregister(b);
        assert!(share.wait_read(epoch, Duration::from_millis(20)));
        // Owned moves on its own, and a floor never goes back.
        assert_eq!(share.owned(), of("in", &[0, 1, 2]));
        share.set_reads(of("in", &[0]), BTreeMap::from([("in".into(), 10)]));
        assert_eq!(share.reads_of("in").floor, 50);
        share.reset(of("in", &[3]));
        assert_eq!(share.owned(), of("in", &[3]));
        assert_eq!(share.reads_of("in").floor, i64::MIN);
    }
}
