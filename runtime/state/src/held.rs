//! Which keys a cluster node holds now ([`HeldKeys`]): the keys of the
//! input partitions its consumer group gave it (see `docs/cluster.md`,
//! "Tasks"). Only held keys' timers are in an instance's memory, so a
//! timer of a key whose partition went to another node never fires here.
//!
//! When partitions move while the job runs, the node sets a new test; each
//! [`KeyedState`](crate::KeyedState) sees the new epoch at its next state
//! call and brings its memory in line: timers of keys it lost leave it,
//! and for keys it gained (restored from their changelog meanwhile) the
//! working set drops what it cached earlier and loads their timers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Whether a key (an operator's state key) is held here.
pub type KeyTest = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// The node's current [`KeyTest`] (`None`: every key, as on a single
/// server) and an epoch bumped by each change.
#[derive(Default)]
pub(crate) struct HeldKeys {
    epoch: AtomicU64,
    test: RwLock<Option<KeyTest>>,
}

impl std::fmt::Debug for HeldKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKeys")
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl HeldKeys {
    /// Replaces the test; the epoch moves with it under the same lock, so
    /// [`HeldKeys::current`] never pairs a new epoch with an old test.
    pub(crate) fn set(&self, test: Option<KeyTest>) {
        let mut slot = self.test.write().unwrap_or_else(|p| p.into_inner());
        *slot = test;
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The epoch now: a cheap check before [`HeldKeys::current`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The epoch and the test that goes with it.
    pub(crate) fn current(&self) -> (u64, Option<KeyTest>) {
        let slot = self.test.read().unwrap_or_else(|p| p.into_inner());
        (self.epoch(), slot.clone())
    }
}

/// Whether `test` holds `key` (`None` holds every key).
pub(crate) fn holds(test: &Option<KeyTest>, key: &[u8]) -> bool {
    test.as_ref().is_none_or(|t| t(key))
}
