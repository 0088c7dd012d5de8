//! The vocabulary tasks, the coordinator and the [`Job`](crate::Job) speak:
//! messages between tasks ([`Msg`] in an [`Envelope`]), checkpoint
//! acknowledgements ([`Ack`]), what the coordinator tells sources
//! ([`Control`]), the shared stop flag and first error ([`Abort`]),
//! state queries ([`Query`], [`StateValue`]) and dead-letter replays
//! ([`Replay`]). A leaf: it holds no task
//! logic, so every other module can use it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_io::Position;
use weir_state::StateSnapshot;
use weir_types::Batch;
use weir_wasm::OperatorState;

use crate::error::EngineError;
use crate::pool::TaskWaker;

/// What travels between task instances.
pub(crate) enum Msg {
    /// Events, which of the consumer's inputs they arrive on (the index in
    /// its document's `input` list), and where they were read when they
    /// come straight from a source.
    Batch {
        batch: Batch,
        input: u32,
        origin: Option<Origin>,
    },
    Watermark(i64),
    /// Checkpoint barrier n.
    Barrier(u64),
    End,
    /// The run stops here (after a stop barrier): no end-of-input work.
    Stop,
    /// A read of an operator's state, from outside the topology.
    Query(Query),
    /// Dead letters fed back into an operator, from outside the topology.
    Replay(Box<Replay>),
}

/// Where the events of a batch sent by a source were read: the source and,
/// for a source that counts its events, each event's offset (its place in
/// the source's input), so that a failure can name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) source: Arc<str>,
    pub(crate) offsets: Option<Offsets>,
}

/// The offsets of a batch's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offsets {
    /// Consecutive, from this one.
    Run(u64),
    /// One per event (a part of a batch split by key).
    Each(Vec<u64>),
}

impl Origin {
    /// The offset of the batch's event `index`, when known.
    pub(crate) fn offset(&self, index: usize) -> Option<u64> {
        match self.offsets.as_ref()? {
            Offsets::Run(first) => Some(first + index as u64),
            Offsets::Each(each) => each.get(index).copied(),
        }
    }

    /// The origin of the events at `kept` (indexes of this batch, in
    /// order), as a batch of their own.
    pub(crate) fn select(&self, kept: impl Iterator<Item = usize>) -> Origin {
        Origin {
            source: self.source.clone(),
            offsets: self
                .offsets
                .as_ref()
                .map(|_| Offsets::Each(kept.filter_map(|i| self.offset(i)).collect())),
        }
    }
}

/// A message and the id of the task instance that sent it.
pub(crate) struct Envelope {
    pub(crate) from: usize,
    pub(crate) msg: Msg,
}

/// The sender id of messages from outside the topology (queries).
pub(crate) const OUTSIDE: usize = usize::MAX;

/// The checkpoint id of acknowledgements sent at the end of the input.
pub(crate) const FINAL: u64 = u64::MAX;

/// A task's acknowledgement of a checkpoint (`FINAL`: its input ended).
pub(crate) enum Ack {
    Source {
        id: u64,
        source: usize,
        position: Position,
        max_ts: i64,
    },
    Task {
        id: u64,
        task: usize,
        watermark: i64,
        /// `(operator, changes)` of each operator of the chain.
        states: Vec<(String, StateSnapshot)>,
        alignment: Duration,
    },
    Sink {
        id: u64,
        sink: usize,
        pending: Batch,
    },
}

/// Where a task acknowledges checkpoints: the coordinator, and the task's
/// index among its kind (sources, chain instances or sinks).
#[derive(Clone)]
pub(crate) struct AckLink {
    pub(crate) index: usize,
    pub(crate) acks: Sender<Ack>,
    /// The coordinator's task.
    pub(crate) coordinator: TaskWaker,
}

impl AckLink {
    pub(crate) fn send(&self, ack: Ack) {
        // The coordinator is gone only when the run is stopping.
        let _ = self.acks.send(ack);
        self.coordinator.wake();
    }
}

/// Tasks to wake when something they poll changes.
#[derive(Default)]
pub(crate) struct Wakers(Mutex<Vec<TaskWaker>>);

impl Wakers {
    pub(crate) fn add(&self, waker: TaskWaker) {
        if let Ok(mut w) = self.0.lock() {
            w.push(waker);
        }
    }

    pub(crate) fn wake_all(&self) {
        let wakers = self.0.lock().map(|w| w.clone()).unwrap_or_default();
        for w in wakers {
            w.wake();
        }
    }
}

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wakers")
    }
}

/// What the coordinator tells sources. Change it through the methods,
/// which wake the sources (they look at it only when they run).
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// The newest checkpoint asked for: sources inject its barrier.
    pub(crate) requested: AtomicU64,
    /// A checkpoint after whose barrier sources stop (0: none).
    pub(crate) stop_at: AtomicU64,
    /// Stop now, no checkpoint (runs without checkpoints).
    pub(crate) stop_now: AtomicBool,
    /// The newest durable checkpoint: sources tell their connector.
    pub(crate) committed: AtomicU64,
    /// Events read and processing-time timers fired, all tasks: unchanged
    /// since a checkpoint means an interval checkpoint has nothing to take.
    /// Counted through [`Control::note_activity`].
    pub(crate) activity: AtomicU64,
    /// The source tasks.
    pub(crate) sources: Wakers,
    /// The checkpoint coordinator (when checkpointing).
    pub(crate) coordinator: Wakers,
    /// The coordinator found an interval with nothing to take and waits
    /// for activity instead of waking every interval: the next
    /// [`Control::note_activity`] wakes it.
    pub(crate) parked: AtomicBool,
    /// Sources that have read all there is for now (or ended).
    pub(crate) caught_up: AtomicUsize,
    /// The coordinator waits for the sources to catch up (to checkpoint
    /// new input at once): the next source that catches up wakes it.
    pub(crate) awaits_caught_up: AtomicBool,
}

impl Control {
    /// Counts `n` events read or timers fired; the first activity after
    /// the coordinator parked wakes it.
    pub(crate) fn note_activity(&self, n: u64) {
        if n == 0 {
            return;
        }
        // SeqCst on both sides (here and in `park`): either the coordinator
        // sees this count after parking, or this sees it parked.
        self.activity.fetch_add(n, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.coordinator.wake_all();
        }
    }

    /// The coordinator parks while the activity count is still `seen`;
    /// `false` (not parked) when activity came meanwhile.
    pub(crate) fn park(&self, seen: u64) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if self.activity.load(Ordering::SeqCst) != seen {
            self.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// A source has read all there is for now (`true`), or has more again.
    pub(crate) fn note_caught_up(&self, caught_up: bool) {
        if !caught_up {
            self.caught_up.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        // SeqCst on both sides, as for `park`: either the coordinator sees
        // this count after asking, or this sees it asking.
        self.caught_up.fetch_add(1, Ordering::SeqCst);
        if self.awaits_caught_up.load(Ordering::SeqCst)
            && self.awaits_caught_up.swap(false, Ordering::SeqCst)
        {
            self.coordinator.wake_all();
        }
    }

    /// Whether all `sources` have caught up; if not, the next one that
    /// catches up wakes the coordinator.
    pub(crate) fn await_caught_up(&self, sources: usize) -> bool {
        self.awaits_caught_up.store(true, Ordering::SeqCst);
        if self.caught_up.load(Ordering::SeqCst) >= sources {
            self.awaits_caught_up.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Asks the sources for checkpoint `id`'s barrier.
    pub(crate) fn request(&self, id: u64) {
        self.requested.store(id, Ordering::SeqCst);
        self.sources.wake_all();
    }

    /// Sources stop after checkpoint `id`'s barrier.
    pub(crate) fn stop_after(&self, id: u64) {
        self.stop_at.store(id, Ordering::SeqCst);
    }

    /// Sources stop now, without a checkpoint.
    pub(crate) fn stop_at_once(&self) {
        self.stop_now.store(true, Ordering::SeqCst);
        self.sources.wake_all();
    }

    /// Checkpoint `id` is durable.
    pub(crate) fn mark_committed(&self, id: u64) {
        self.committed.store(id, Ordering::SeqCst);
        self.sources.wake_all();
    }
}

/// Shared stop flag and first error of a run.
#[derive(Default)]
pub(crate) struct Abort {
    stopped: AtomicBool,
    pub(crate) error: Mutex<Option<EngineError>>,
    /// Every task of the run, woken to see the stop.
    pub(crate) tasks: Wakers,
}

impl Abort {
    pub(crate) fn fail(&self, error: EngineError) {
        if let Ok(mut slot) = self.error.lock()
            && slot.is_none()
        {
            tracing::error!(error = %error, "topology stopping");
            *slot = Some(error);
        }
        self.stopped.store(true, Ordering::SeqCst);
        self.tasks.wake_all();
    }
    /// Stops every task without an error (the run was abandoned).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.tasks.wake_all();
    }
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// The state an operator keeps for one key under one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateValue {
    Value(Vec<u8>),
    /// Map entries, by map key.
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
    List(Vec<Vec<u8>>),
}

/// What a read of one state of one key found, told apart so that a user
/// learns whether the name, the operator or the key was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateRead {
    /// The key's state under that name.
    Found(StateValue),
    /// The operator declares this value state; the key has no value in it.
    NoValue,
    /// The operator declares other value states (`declared`), and holds
    /// no map or list under this name for the key.
    UnknownState { declared: Vec<String> },
    /// The operator declares no value state at all, and holds no map or
    /// list under this name for the key.
    Stateless,
}

impl StateRead {
    /// What reading `name` found (`found`), told apart by the value states
    /// the operator declares.
    pub(crate) fn of(found: Option<StateValue>, name: &str, declared: &[String]) -> StateRead {
        match found {
            Some(v) => StateRead::Found(v),
            None if declared.iter().any(|d| d == name) => StateRead::NoValue,
            None if declared.is_empty() => StateRead::Stateless,
            None => StateRead::UnknownState {
                declared: declared.to_vec(),
            },
        }
    }
}

/// A read of state `state` of `key` in operator `operator`.
pub(crate) struct Query {
    pub(crate) operator: String,
    pub(crate) state: String,
    pub(crate) key: Vec<u8>,
    pub(crate) reply: Sender<Result<Option<StateValue>, String>>,
}

/// Events fed back into operator `operator` on its input `input` (dead
/// letters replayed after a fix). They skip the late-event policy (they
/// are late by nature) and what they emit flows on as usual; the reply
/// says, per event of `batch` in order, the message it failed with again
/// (`None`: it passed).
pub(crate) struct Replay {
    pub(crate) operator: String,
    pub(crate) input: u32,
    pub(crate) batch: Batch,
    pub(crate) reply: Sender<Result<Vec<Option<String>>, String>>,
}

/// Reads state `name` of `key` from an instance's state: its value, else
/// its map entries, else its list; `None` when it has none of them.
pub(crate) fn read_state(
    state: &mut dyn OperatorState,
    name: &str,
    key: &[u8],
) -> Result<Option<StateValue>, String> {
    if let Some(v) = state.value(name, key).map_err(|e| e.0)? {
        return Ok(Some(StateValue::Value(v)));
    }
    let map = state.map(name, key).map_err(|e| e.0)?;
    if !map.is_empty() {
        return Ok(Some(StateValue::Map(map)));
    }
    let list = state.list(name, key).map_err(|e| e.0)?;
    Ok((!list.is_empty()).then_some(StateValue::List(list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_says_whether_the_key_the_name_or_the_operator_was_wrong() {
        let declared = vec!["count".to_string()];
        let value = StateValue::Value(b"3".to_vec());
        assert_eq!(
            StateRead::of(Some(value.clone()), "count", &declared),
            StateRead::Found(value)
        );
        assert_eq!(StateRead::of(None, "count", &declared), StateRead::NoValue);
        assert_eq!(
            StateRead::of(None, "cnt", &declared),
            StateRead::UnknownState { declared }
        );
        assert_eq!(StateRead::of(None, "count", &[]), StateRead::Stateless);
    }
}
