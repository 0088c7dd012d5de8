//! The checkpoint coordinator: asks sources for barriers (on an interval,
//! on demand, or when an instance's dirty state outgrows its budget),
//! collects every task's acknowledgement and commits the checkpoint in one
//! durable redb commit (state changes, source positions, sink bases and
//! pending output: see `weir_state::StateDb::commit_checkpoint`), then
//! publishes the pending output to exactly-once sinks. Tasks go on
//! processing while it commits. One checkpoint is in flight at a time.
//!
//! Which participant acknowledged what is the tracker's (`tracker.rs`, no
//! thread); this module is the I/O around it: the coordinator thread, the
//! checkpoint's metadata ([`Meta`]) and reading it back at recovery.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_io::fault::{self, FaultPoint};
use weir_io::{CheckpointRef, Sink};
use weir_state::{CommitFailed, StateDb, StateSnapshot};
use weir_types::{Batch, now_ms};

use crate::error::EngineError;
use crate::pool::{Task, TaskWaker};
use crate::protocol::{Abort, Ack, Control};
use crate::sched::Slice;
use crate::tracker::{InFlight, SourceMeta, Tracker};

/// How often a busy topology's coordinator looks whether a state budget
/// asked for a checkpoint.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Least time between two checkpoints taken because the sources caught up
/// with new input, by default: a trickle of input costs at most this many
/// commits a second.
pub const DEFAULT_IDLE_COMMIT: Duration = Duration::from_millis(100);
/// Interval checkpoints in a row that may fail before the run fails, by
/// default.
pub const DEFAULT_TOLERABLE_FAILED_CHECKPOINTS: u32 = 3;
/// Free bytes a checkpoint commit wants beyond what it writes: redb writes
/// pages copy-on-write, so a commit needs room for new pages before old
/// ones are freed.
const COMMIT_SPACE_MARGIN: u64 = 4 << 20;

/// Checkpoints that failed to commit and were aborted.
#[derive(Debug, Default)]
pub(crate) struct FailedCheckpoints {
    pub(crate) total: AtomicU64,
    pub(crate) in_a_row: AtomicU64,
    /// Why the last one failed.
    pub(crate) last_error: Mutex<Option<String>>,
}

/// What an aborted checkpoint did not commit, carried into the next.
#[derive(Default)]
pub(crate) struct Carried {
    /// State changes, as snapshots of the aborted checkpoints (oldest
    /// first).
    state: Vec<StateSnapshot>,
    /// Output per sink (by index), oldest first.
    outputs: BTreeMap<usize, Batch>,
}

/// The state changes of an aborted checkpoint (`older`) merged under those
/// of the next one (`newer`): a row the newer changes write or remove, or
/// that falls under a prefix they remove, is dropped from the older ones.
pub(crate) fn merge_snapshots(
    older: Vec<StateSnapshot>,
    newer: Vec<StateSnapshot>,
) -> Vec<StateSnapshot> {
    use std::collections::HashSet;
    use weir_state_contract::{RowTable, SnapshotRow};
    if older.is_empty() {
        return newer;
    }
    let mut touched: HashSet<(bool, &[u8])> = HashSet::new();
    let mut prefixes: Vec<&[u8]> = Vec::new();
    let newer_rows: Vec<Vec<SnapshotRow>> =
        newer.into_iter().map(StateSnapshot::into_rows).collect();
    for row in newer_rows.iter().flatten() {
        match row {
            SnapshotRow::Put(t, k, _) | SnapshotRow::Delete(t, k) => {
                touched.insert((*t == RowTable::State, k.as_slice()));
            }
            SnapshotRow::DeletePrefix(p) => prefixes.push(p.as_slice()),
        }
    }
    let overridden = |row: &SnapshotRow| match row {
        SnapshotRow::Put(t, k, _) | SnapshotRow::Delete(t, k) => {
            touched.contains(&(*t == RowTable::State, k.as_slice()))
                || (*t == RowTable::State && prefixes.iter().any(|p| k.starts_with(p)))
        }
        SnapshotRow::DeletePrefix(q) => prefixes.iter().any(|p| q.starts_with(p)),
    };
    let kept: Vec<SnapshotRow> = older
        .into_iter()
        .flat_map(StateSnapshot::into_rows)
        .filter(|row| !overridden(row))
        .collect();
    let mut out = vec![StateSnapshot::new(kept)];
    out.extend(newer_rows.into_iter().map(StateSnapshot::new));
    out
}

/// When to checkpoint and how many to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Time between checkpoints; `None`: only on demand and at the end.
    pub interval: Option<Duration>,
    /// Complete checkpoints kept (for fallback), at least 1.
    pub retain: usize,
    /// On a restore, start every source from its beginning (position 0, no
    /// highest timestamp) while operator state, timers and watermarks of
    /// the checkpoint are kept: "the same state, new input".
    pub reset_sources: bool,
    /// Interval checkpoints in a row that may fail to commit (no space, an
    /// I/O error before the durable commit) before the run fails. A failed
    /// one is aborted: its state changes and output are carried into the
    /// next, sources keep reading.
    pub tolerable_failed: u32,
    /// Once every source has read all there is and something new was read
    /// since the last checkpoint, a checkpoint is taken at once rather than
    /// at the next interval, so exactly-once output becomes visible soon
    /// after input arrives; at most one such checkpoint per this long.
    /// `None`: on the interval only. Without an interval (on demand only)
    /// no checkpoint is taken this way either.
    pub on_idle: Option<Duration>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            on_idle: Some(DEFAULT_IDLE_COMMIT),
            interval: Some(Duration::from_secs(1)),
            retain: 3,
            reset_sources: false,
            tolerable_failed: DEFAULT_TOLERABLE_FAILED_CHECKPOINTS,
        }
    }
}

/// What one completed checkpoint took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub id: u64,
    /// The savepoint it was taken for, if any.
    pub savepoint: Option<String>,
    /// Wall clock when it was asked for, ms since the Unix epoch.
    pub started_at: i64,
    /// From the request to the durable commit, ms.
    pub duration_ms: f64,
    /// The longest barrier alignment of any task, ms.
    pub alignment_ms: f64,
    /// The commit alone, ms.
    pub commit_ms: f64,
    /// State rows written or removed.
    pub rows: u64,
    /// Bytes written: state, metadata, pending output.
    pub bytes: u64,
    /// Whether it was taken at the end of the input.
    pub final_: bool,
}

/// A checkpoint's record, as committed with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) id: u64,
    pub(crate) topology: String,
    /// The run's lineage (see [`CheckpointRef`]); empty in checkpoints
    /// taken before lineages existed.
    #[serde(default)]
    pub(crate) lineage: String,
    pub(crate) savepoint: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) key_groups: u16,
    /// Source name → position and highest timestamp read.
    pub(crate) sources: BTreeMap<String, SourceMeta>,
    /// Sink name → position of its published output before this
    /// checkpoint's pending output.
    pub(crate) sinks: BTreeMap<String, u64>,
    pub(crate) operators: BTreeMap<String, OperatorMeta>,
    #[serde(rename = "final")]
    pub(crate) final_: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OperatorMeta {
    /// The lowest watermark of its instances.
    pub(crate) watermark: i64,
    pub(crate) parallelism: u32,
    /// Value states its module declared.
    pub(crate) value_states: Vec<String>,
}

/// What a checkpoint's record (as handed to a [`weir_state::Changelog`])
/// holds of each source: source name → its position and the event time
/// it had reached (its highest timestamp read; its watermark trails it).
pub fn checkpoint_sources(
    meta: &[u8],
) -> Result<BTreeMap<String, (weir_io::Position, i64)>, String> {
    let meta: Meta = serde_json::from_slice(meta)
        .map_err(|e| format!("a checkpoint record does not parse: {e}"))?;
    Ok(meta
        .sources
        .into_iter()
        .map(|(name, s)| (name, (s.position, s.max_ts)))
        .collect())
}

/// The checkpoint a run starts from.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) meta: Meta,
    /// Sink name → output committed with the checkpoint.
    pub(crate) pending: BTreeMap<String, Batch>,
    /// Imported from a savepoint: this run's sinks start afresh.
    pub(crate) from_savepoint: bool,
}

/// The lineage a run publishes under: the restored checkpoint's, or a new
/// one when the run starts without a checkpoint, from a savepoint (its
/// sinks start afresh) or from a checkpoint taken before lineages.
pub(crate) fn lineage_of(restored: Option<&Restored>) -> String {
    match restored {
        Some(r) if !r.from_savepoint && !r.meta.lineage.is_empty() => r.meta.lineage.clone(),
        _ => new_lineage(),
    }
}

/// A name no other run of this process or machine has: the wall clock in
/// nanoseconds, the process id and a counter.
fn new_lineage() -> String {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{run:x}", std::process::id())
}

/// Reads the newest complete checkpoint of `db` (falling back past damaged
/// records).
pub(crate) fn restore(db: &StateDb) -> Result<Option<Restored>, EngineError> {
    let Some(checkpoint) = db.latest_checkpoint().map_err(EngineError::State)? else {
        return Ok(None);
    };
    let meta: Meta = serde_json::from_slice(&checkpoint.meta).map_err(|e| {
        EngineError::Restore(format!(
            "checkpoint {} has unreadable metadata: {e}",
            checkpoint.id
        ))
    })?;
    let mut pending = BTreeMap::new();
    for (sink, bytes) in checkpoint.pending {
        let batch = Batch::decode(&bytes).ok_or_else(|| {
            EngineError::Restore(format!(
                "checkpoint {}: the pending output of sink `{sink}` is damaged",
                checkpoint.id
            ))
        })?;
        pending.insert(sink, batch);
    }
    Ok(Some(Restored {
        meta,
        pending,
        from_savepoint: checkpoint.from_savepoint,
    }))
}

/// Checks that a checkpoint fits the topology about to start from it:
/// same key groups, every checkpointed operator still there, and each
/// keeping the value states it had.
pub(crate) fn check_restore(
    restored: &Restored,
    groups: u16,
    declared: &HashMap<String, Vec<String>>,
) -> Result<(), EngineError> {
    let meta = &restored.meta;
    let taken = if restored.from_savepoint {
        match &meta.savepoint {
            Some(name) => format!("savepoint `{name}`"),
            None => "the savepoint".to_string(),
        }
    } else {
        format!("checkpoint {}", meta.id)
    };
    if meta.key_groups != groups {
        return Err(EngineError::StateMismatch(format!(
            "{taken} was taken with {} key groups and the topology has {groups}: key groups cannot change (parallelism can)",
            meta.key_groups
        )));
    }
    for (op, saved) in &meta.operators {
        let Some(now) = declared.get(op) else {
            return Err(EngineError::StateMismatch(format!(
                "{taken} holds state of operator `{op}`, which the topology no longer has: keep the operator (same name), or start without it",
            )));
        };
        let missing: Vec<&String> = saved
            .value_states
            .iter()
            .filter(|s| !now.contains(s))
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::StateMismatch(format!(
                "operator `{op}`: {taken} holds value state {missing:?} but its module now declares {now:?}: a new module version must keep the state names (or start without {taken})",
            )));
        }
    }
    Ok(())
}

/// A request to the coordinator.
pub(crate) struct Request {
    /// Savepoint name and file to export to once committed.
    pub(crate) savepoint: Option<(String, PathBuf)>,
    /// Stop the run after this checkpoint.
    pub(crate) stop: bool,
    pub(crate) reply: Sender<Result<CheckpointInfo, String>>,
}

/// A task instance's place in the topology, for the metadata.
pub(crate) struct TaskInfo {
    /// Operators of the chain, with their declared value states.
    pub(crate) operators: Vec<(String, Vec<String>)>,
    pub(crate) parallelism: u32,
}

/// Everything the coordinator thread owns.
pub(crate) struct Coordinator {
    pub(crate) topology: String,
    pub(crate) key_groups: u16,
    pub(crate) db: StateDb,
    pub(crate) config: CheckpointConfig,
    pub(crate) control: Arc<Control>,
    pub(crate) abort: Arc<Abort>,
    pub(crate) acks: Receiver<Ack>,
    pub(crate) requests: Receiver<Request>,
    pub(crate) history: Arc<Mutex<Vec<CheckpointInfo>>>,
    pub(crate) source_names: Vec<String>,
    pub(crate) tasks: Vec<TaskInfo>,
    /// `(name, sink)`; the sink is `Some` when the coordinator publishes
    /// to it (exactly-once).
    pub(crate) sinks: Vec<(String, Option<Box<dyn Sink>>)>,
    /// The last id used (restored or committed).
    pub(crate) last_id: u64,
    /// The run's lineage (see [`CheckpointRef`]), recorded in every
    /// checkpoint.
    pub(crate) lineage: String,
    /// Source positions of the last committed checkpoint.
    pub(crate) committed_sources: BTreeMap<String, SourceMeta>,
    /// Interval checkpoints skipped because nothing had changed.
    pub(crate) skipped: Arc<AtomicU64>,
    pub(crate) failed: Arc<FailedCheckpoints>,
    /// What aborted checkpoints left for the next one to commit.
    pub(crate) carried: Carried,
    /// What the periodic info line sums up.
    pub(crate) summary: Summary,
}

/// How often a running topology logs one info line about its checkpoints
/// (each one alone is a debug line).
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Checkpoints taken and skipped since the last summary line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    since: Instant,
    pub(crate) taken: u64,
    pub(crate) skipped: u64,
    /// Duration of the last one taken, and the longest, ms.
    pub(crate) last_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) bytes: u64,
}

impl Summary {
    pub(crate) fn new(now: Instant) -> Summary {
        Summary {
            since: now,
            taken: 0,
            skipped: 0,
            last_ms: 0.0,
            max_ms: 0.0,
            bytes: 0,
        }
    }

    fn took(&mut self, info: &CheckpointInfo) {
        self.taken += 1;
        self.last_ms = info.duration_ms;
        self.max_ms = self.max_ms.max(info.duration_ms);
        self.bytes += info.bytes;
    }

    /// The period's figures when [`SUMMARY_EVERY`] has passed at `now` and
    /// anything happened (a new period starts either way).
    pub(crate) fn due(&mut self, now: Instant) -> Option<Summary> {
        if now.duration_since(self.since) < SUMMARY_EVERY {
            return None;
        }
        let done = std::mem::replace(self, Summary::new(now));
        (done.taken + done.skipped > 0).then_some(done)
    }
}

/// Whether a complete checkpoint would commit nothing the last one did
/// not: the sources stand where they stood, no state changed (timers are
/// state) and no output waits. An idle topology then costs no commit (no
/// fsync) per interval; its last checkpoint stays the one to restore.
pub(crate) fn nothing_changed(
    last: &BTreeMap<String, SourceMeta>,
    now: &BTreeMap<String, SourceMeta>,
    state_rows: usize,
    pending_outputs: usize,
) -> bool {
    state_rows == 0 && pending_outputs == 0 && last == now
}

/// The coordinator as a task on the pool's blocking workers (its commits
/// wait on fsync): each slice takes what came in (acknowledgements,
/// requests), starts a checkpoint that is due, commits a complete one,
/// and asks to be woken at the next interval. An interval in which nothing
/// happened (no event read, no processing-time timer fired) is skipped
/// without barriers, and the coordinator then parks: no interval wakes it
/// until the next event or timer does (`Control::note_activity`), so an
/// idle topology costs no wake-ups at all. With `on_idle`, new input is
/// checkpointed as soon as every source has caught up with it (woken by
/// `Control::note_caught_up`), at most once per `on_idle`.
pub(crate) struct CoordinatorTask {
    coordinator: Coordinator,
    tracker: Tracker<Request>,
    queue: VecDeque<Request>,
    next_due: Option<Instant>,
    waker: TaskWaker,
    /// `Control::activity` when the last interval checkpoint started.
    activity_at_trigger: Option<u64>,
    /// `Control::activity` at the last slice: changed means the topology
    /// is busy, and a checkpoint asked for by a state budget is looked
    /// for every [`IDLE_WAIT`].
    activity_seen: u64,
    /// Checkpoints when the sources caught up (`CheckpointConfig::on_idle`).
    idle: Option<IdleCommit>,
}

/// When to checkpoint because the sources caught up with new input, so
/// that the checkpoint publishes output sooner than the next interval
/// would: something was read or fired since the last checkpoint started,
/// every source has read all there is, and at least `min_pause` passed
/// since the last interval or idle checkpoint started.
#[derive(Debug)]
struct IdleCommit {
    min_pause: Duration,
    /// When the last interval or idle checkpoint started.
    last_started: Option<Instant>,
}

impl IdleCommit {
    /// When a checkpoint is due, at `now`, given `fresh` (activity since
    /// the last one started) and `caught_up` (every source read all there
    /// is); `None` while either is not so.
    fn due_at(&self, fresh: bool, caught_up: bool, now: Instant) -> Option<Instant> {
        if !(fresh && caught_up) {
            return None;
        }
        Some(match self.last_started {
            Some(t) => (t + self.min_pause).max(now),
            None => now,
        })
    }

    fn started(&mut self, now: Instant) {
        self.last_started = Some(now);
    }
}

impl Coordinator {
    /// The coordinator as a pool task woken by `waker`.
    pub(crate) fn into_task(self, waker: TaskWaker) -> CoordinatorTask {
        let tracker = Tracker::new(
            self.source_names.len(),
            self.tasks.len(),
            self.sinks.len(),
            self.last_id,
        );
        let next_due = self.config.interval.map(|i| Instant::now() + i);
        // A run restored from a checkpoint starts where it stood: its first
        // interval may be skipped when nothing happens.
        let activity_at_trigger = (self.last_id > 0).then_some(0);
        // Checkpoints on demand only (no interval) stay on demand only.
        let on_idle = self.config.interval.and(self.config.on_idle);
        let idle = on_idle.map(|min_pause| IdleCommit {
            min_pause,
            last_started: None,
        });
        CoordinatorTask {
            coordinator: self,
            tracker,
            queue: VecDeque::new(),
            next_due,
            waker,
            activity_at_trigger,
            activity_seen: 0,
            idle,
        }
    }
}

impl Task for CoordinatorTask {
    /// Runs until the input ended and the last checkpoint committed, the
    /// run stopped, or it failed (the pool stops the run on its error).
    fn run_slice(&mut self, _budget: usize) -> Result<Slice, EngineError> {
        let c = &mut self.coordinator;
        let tracker = &mut self.tracker;
        let queue = &mut self.queue;
        if let Some(s) = c.summary.due(Instant::now()) {
            tracing::info!(
                topology = %c.topology,
                taken = s.taken,
                skipped = s.skipped,
                last_ms = s.last_ms,
                max_ms = s.max_ms,
                bytes = s.bytes,
                "checkpoints in the last {} s", SUMMARY_EVERY.as_secs()
            );
        }
        if c.abort.stopped() {
            for r in queue.drain(..).chain(tracker.abandon()) {
                let _ = r.reply.send(Err("the topology stopped".into()));
            }
            return Ok(Slice::Done);
        }
        while let Ok(r) = c.requests.try_recv() {
            queue.push_back(r);
        }
        let now = Instant::now();
        let activity = c.control.activity.load(Ordering::SeqCst);
        let busy = activity != self.activity_seen;
        self.activity_seen = activity;
        // Parked and woken by activity: the intervals start again.
        if self.next_due.is_none() && !c.control.parked.load(Ordering::SeqCst) {
            self.next_due = c.config.interval.map(|i| now + i);
        }
        let fresh = activity != self.activity_at_trigger.unwrap_or(0);
        // Start a checkpoint when none is in flight and one is due.
        if !tracker.in_flight() {
            let due = self.next_due.is_some_and(|t| now >= t);
            let caught_up = c.control.caught_up.load(Ordering::SeqCst) >= c.source_names.len();
            let idle_due = (self.idle.as_ref())
                .and_then(|i| i.due_at(fresh, caught_up, now))
                .is_some_and(|t| now >= t);
            let asked = c.db.take_checkpoint_request();
            let request = queue.pop_front();
            if request.is_some() || due || asked || idle_due {
                let mut parked = false;
                let aborted = c.failed.in_a_row.load(Ordering::Relaxed) > 0;
                if request.is_none()
                    && !asked
                    && !aborted
                    && self.activity_at_trigger == Some(activity)
                {
                    // Nothing read or fired since the last checkpoint
                    // started: it would commit nothing (as `nothing_changed`
                    // would find), so no barrier goes round, and no
                    // interval wakes it until something is read or fires.
                    // After an aborted one, the next carries its changes:
                    // it goes.
                    c.skipped.fetch_add(1, Ordering::Relaxed);
                    c.summary.skipped += 1;
                    parked = c.control.park(activity);
                } else if tracker.can_trigger() {
                    let stop = request.as_ref().is_some_and(|r| r.stop);
                    let interval = request.is_none() && !asked;
                    let id = tracker.trigger(request);
                    if stop {
                        c.control.stop_after(id);
                    }
                    if interval {
                        self.activity_at_trigger = Some(activity);
                        if let Some(idle) = &mut self.idle {
                            idle.started(now);
                        }
                    }
                    c.control.request(id);
                    tracing::debug!(topology = %c.topology, checkpoint = id, "checkpoint triggered");
                } else if let Some(r) = request {
                    queue.push_front(r);
                }
                self.next_due = if parked {
                    None
                } else {
                    c.config.interval.map(|i| now + i)
                };
            }
        }
        loop {
            let got = match c.acks.try_recv() {
                Ok(ack) => {
                    let (id, who) = match &ack {
                        Ack::Source { id, source, .. } => (*id, format!("source {source}")),
                        Ack::Task { id, task, .. } => (*id, format!("task {task}")),
                        Ack::Sink { id, sink, .. } => (*id, format!("sink {sink}")),
                    };
                    if !tracker.record(ack) {
                        tracing::warn!(checkpoint = id, from = %who, "stray checkpoint acknowledgement");
                    }
                    true
                }
                Err(TryRecvError::Empty) => false,
                Err(TryRecvError::Disconnected) => return Ok(Slice::Done),
            };
            if let Some(flight) = tracker.take_complete() {
                let stop = flight.request.as_ref().is_some_and(|r| r.stop);
                let id = flight.id;
                c.commit(flight, false)?;
                tracker.committed(id);
                if stop {
                    return Ok(Slice::Done);
                }
            }
            match tracker.take_final(queue.pop_front()) {
                Ok(flight) => {
                    c.commit(flight, true)?;
                    for r in queue.drain(..) {
                        let _ = r.reply.send(Err("the input ended; the run is over".into()));
                    }
                    return Ok(Slice::Done);
                }
                Err(request) => {
                    if let Some(r) = request {
                        queue.push_front(r);
                    }
                }
            }
            if !got {
                break;
            }
        }
        // Acknowledgements, requests and a stop wake the task; the
        // interval, and while busy a budget's request, need a timer.
        if let Some(due) = self.next_due {
            self.waker.wake_at(due);
        }
        if let Some(idle) = &self.idle
            && !tracker.in_flight()
        {
            let fresh = activity != self.activity_at_trigger.unwrap_or(0);
            let sources = c.source_names.len();
            if !fresh {
                // Nothing new: the next event read or timer fired wakes
                // the coordinator (or one came meanwhile: look at once).
                if !c.control.park(activity) {
                    self.waker.wake();
                }
            } else if c.control.await_caught_up(sources)
                && let Some(at) = idle.due_at(true, true, Instant::now())
            {
                self.waker.wake_at(at);
            }
            // Otherwise new input is being read: a source that catches up
            // wakes the coordinator.
        }
        if busy || (!queue.is_empty() && !tracker.in_flight()) {
            self.waker.wake_after(IDLE_WAIT);
        }
        Ok(Slice::Wait)
    }
}

impl Coordinator {
    /// Commits a complete checkpoint, publishes its output, exports the
    /// savepoint it was asked for and answers the request.
    fn commit(&mut self, flight: InFlight<Request>, final_: bool) -> Result<(), EngineError> {
        let InFlight {
            id,
            started,
            started_at,
            mut collected,
            request,
        } = flight;
        let savepoint = request.as_ref().and_then(|r| r.savepoint.clone());
        let mut meta = Meta {
            id,
            topology: self.topology.clone(),
            lineage: self.lineage.clone(),
            savepoint: savepoint.as_ref().map(|(n, _)| n.clone()),
            created_at: now_ms(),
            key_groups: self.key_groups,
            final_,
            ..Meta::default()
        };
        for (s, name) in self.source_names.iter().enumerate() {
            meta.sources.insert(
                name.clone(),
                collected.sources[s].take().unwrap_or_default(),
            );
        }
        let mut snapshots = Vec::new();
        for (t, slot) in collected.tasks.into_iter().enumerate() {
            let (watermark, states) = slot.unwrap_or((i64::MAX, Vec::new()));
            let info = &self.tasks[t];
            for (op, value_states) in &info.operators {
                let entry = meta
                    .operators
                    .entry(op.clone())
                    .or_insert_with(|| OperatorMeta {
                        watermark: i64::MAX,
                        parallelism: info.parallelism,
                        value_states: value_states.clone(),
                    });
                entry.watermark = entry.watermark.min(watermark);
            }
            snapshots.extend(states.into_iter().map(|(_, s)| s));
        }
        let carried = std::mem::take(&mut self.carried);
        let snapshots = merge_snapshots(carried.state, snapshots);
        let mut carried_outputs = carried.outputs;
        let mut pending_bytes = Vec::new();
        let mut publish = Vec::new();
        for (k, batch) in collected.sinks.into_iter().enumerate() {
            let batch = match carried_outputs.remove(&k) {
                Some(mut older) => {
                    older.extend_from(&batch.unwrap_or_default());
                    older
                }
                None => batch.unwrap_or_default(),
            };
            let (name, sink) = &mut self.sinks[k];
            if let Some(sink) = sink {
                let base = sink.position().map_err(|message| EngineError::Sink {
                    sink: name.clone(),
                    message,
                })?;
                meta.sinks.insert(name.clone(), base);
                if !batch.is_empty() {
                    let mut bytes = Vec::new();
                    batch.encode(&mut bytes);
                    pending_bytes.push((name.clone(), bytes));
                }
                publish.push((k, batch));
            }
        }
        let rows = snapshots.iter().map(StateSnapshot::rows).sum();
        if !final_
            && request.is_none()
            && nothing_changed(
                &self.committed_sources,
                &meta.sources,
                rows,
                pending_bytes.len(),
            )
        {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            self.summary.skipped += 1;
            tracing::trace!(topology = %self.topology, checkpoint = id, "checkpoint skipped: nothing changed");
            return Ok(());
        }
        let meta_bytes = serde_json::to_vec(&meta)
            .map_err(|e| EngineError::Internal(format!("checkpoint metadata: {e}")))?;
        tracing::debug!(topology = %self.topology, checkpoint = id, "checkpoint committing");
        let _ = fault::reach(FaultPoint::CheckpointCommit);
        // Refused before redb writes anything when the disk cannot hold
        // it (a failed redb commit costs a reopen of the database): an
        // interval checkpoint is then aborted and its changes carried, as
        // after a commit that fails inside redb.
        let wanted = 2
            * (snapshots.iter().map(|s| s.bytes() as u64).sum::<u64>()
                + pending_bytes
                    .iter()
                    .map(|(_, b)| b.len() as u64)
                    .sum::<u64>()
                + meta_bytes.len() as u64)
            + COMMIT_SPACE_MARGIN;
        let refused = fault::reach(FaultPoint::CheckpointCommitError)
            .map_err(|e| e.to_string())
            .and_then(|()| match self.db.free_bytes() {
                Ok(free) if free < wanted => Err(format!(
                    "no space for the commit: {free} bytes free on the state database's disk, about {wanted} needed"
                )),
                _ => Ok(()),
            });
        if let Err(why) = refused {
            let tolerable = !final_ && request.is_none();
            return self.abort(id, &why, tolerable, snapshots, publish);
        }
        let stats = match self.db.commit_checkpoint(
            id,
            snapshots,
            &meta_bytes,
            &pending_bytes,
            self.config.retain,
        ) {
            Ok(stats) => stats,
            Err(failed) => match *failed {
                // The database could not be reopened: nothing can be written
                // in this run.
                CommitFailed {
                    error,
                    reopen: Some(reopen),
                    ..
                } => {
                    return Err(EngineError::Checkpoint(format!(
                        "checkpoint {id} could not be committed ({error}) and the state database could not be reopened after it ({reopen})"
                    )));
                }
                // The changelog (a cluster node's Kafka transaction) has
                // the checkpoint and this database does not: carried into
                // the next one its output would be published twice. The
                // run starts again from what the changelog holds.
                CommitFailed {
                    error,
                    committed_outside: true,
                    ..
                } => {
                    return Err(EngineError::Checkpoint(format!(
                        "checkpoint {id} is committed in the changelog but its local commit failed ({error}): the topology restarts from the changelog"
                    )));
                }
                CommitFailed {
                    error, unwritten, ..
                } => {
                    let tolerable = !final_ && request.is_none();
                    return self.abort(id, &error.to_string(), tolerable, vec![unwritten], publish);
                }
            },
        };
        self.control.mark_committed(id);
        self.failed.in_a_row.store(0, Ordering::Relaxed);
        self.committed_sources.clone_from(&meta.sources);
        if publish.iter().any(|(_, batch)| !batch.is_empty()) {
            let _ = fault::reach(FaultPoint::AfterCommitBeforePublish);
        }
        let at = CheckpointRef {
            lineage: self.lineage.clone(),
            id,
        };
        for (k, batch) in publish {
            let (name, sink) = &mut self.sinks[k];
            if let Some(sink) = sink {
                sink.publish(&at, &batch)
                    .map_err(|message| EngineError::Sink {
                        sink: name.clone(),
                        message,
                    })?;
            }
        }
        if let Some((name, path)) = &savepoint {
            let size = self.db.export(path).map_err(EngineError::State)?;
            tracing::info!(topology = %self.topology, savepoint = %name, path = %path.display(), bytes = size, "savepoint written");
        }
        let info = CheckpointInfo {
            id,
            savepoint: savepoint.map(|(n, _)| n),
            started_at,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
            alignment_ms: collected.alignment.as_secs_f64() * 1e3,
            commit_ms: stats.duration.as_secs_f64() * 1e3,
            rows: stats.rows as u64,
            bytes: stats.bytes,
            final_,
        };
        // Routine, every interval: debug (status and /metrics have them,
        // and a line per minute sums them up).
        self.summary.took(&info);
        tracing::debug!(
            topology = %self.topology,
            checkpoint = id,
            duration_ms = info.duration_ms,
            alignment_ms = info.alignment_ms,
            commit_ms = info.commit_ms,
            bytes = info.bytes,
            rows = info.rows,
            "checkpoint complete"
        );
        if let Ok(mut h) = self.history.lock() {
            h.push(info.clone());
            let excess = h.len().saturating_sub(100);
            h.drain(..excess);
        }
        if let Some(r) = request {
            let _ = r.reply.send(Ok(info));
        }
        Ok(())
    }
    /// Aborts checkpoint `id`, whose commit failed (`why`): an interval
    /// checkpoint's state changes and output go into the next one, up to
    /// `checkpoint.tolerable_failed_checkpoints` in a row; past that, or
    /// for a final or requested checkpoint, the run fails.
    fn abort(
        &mut self,
        id: u64,
        why: &str,
        tolerable: bool,
        snapshots: Vec<StateSnapshot>,
        publish: Vec<(usize, Batch)>,
    ) -> Result<(), EngineError> {
        let in_a_row = self.failed.in_a_row.load(Ordering::Relaxed) + 1;
        if !tolerable {
            return Err(EngineError::Checkpoint(format!(
                "checkpoint {id} could not be committed ({why}); it was a final or requested checkpoint, which must commit"
            )));
        }
        if in_a_row > u64::from(self.config.tolerable_failed) {
            return Err(EngineError::Checkpoint(format!(
                "checkpoint {id} could not be committed ({why}); {} in a row failed, over the {} tolerated (checkpoint.tolerable_failed_checkpoints)",
                in_a_row, self.config.tolerable_failed
            )));
        }
        tracing::warn!(topology = %self.topology, checkpoint = id, failed_in_a_row = in_a_row, reason = %why, "checkpoint aborted; its changes go into the next one");
        self.failed.in_a_row.store(in_a_row, Ordering::Relaxed);
        self.failed.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.failed.last_error.lock() {
            *last = Some(format!("checkpoint {id}: {why}"));
        }
        self.carried.state = snapshots;
        for (k, batch) in publish {
            self.carried.outputs.insert(k, batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_io::Position;

    #[test]
    fn a_checkpoint_record_gives_its_sources_positions_and_event_times() {
        let mut meta = Meta::default();
        let at = Position::Splits(BTreeMap::from([(0, 5), (3, 9)]));
        meta.sources.insert(
            "in".into(),
            SourceMeta {
                position: at.clone(),
                max_ts: 1,
            },
        );
        let sources = checkpoint_sources(&serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(sources, BTreeMap::from([("in".to_string(), (at, 1))]));
        let err = checkpoint_sources(b"{").unwrap_err();
        assert!(err.contains("does not parse"), "{err}");
    }

    fn restored(key_groups: u16, operators: &[(&str, &[&str])]) -> Restored {
        Restored {
            meta: Meta {
                id: 7,
                key_groups,
                operators: operators
                    .iter()
                    .map(|(op, states)| {
                        (
                            op.to_string(),
                            OperatorMeta {
                                watermark: 0,
                                parallelism: 1,
                                value_states: states.iter().map(|s| s.to_string()).collect(),
                            },
                        )
                    })
                    .collect(),
                ..Meta::default()
            },
            pending: BTreeMap::new(),
            from_savepoint: false,
        }
    }

    fn declared(ops: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        ops.iter()
            .map(|(op, s)| (op.to_string(), s.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_checkpoint_fits_a_topology_that_keeps_its_operators_and_states() {
        let r = restored(128, &[("count", &["n"])]);
        let now = declared(&[("count", &["n", "added"]), ("new_op", &[])]);
        check_restore(&r, 128, &now).expect("new states and operators are fine");
    }

    #[test]
    fn a_checkpoint_is_refused_when_key_groups_operators_or_states_changed() {
        let r = restored(128, &[("count", &["n"])]);
        let err = check_restore(&r, 64, &declared(&[("count", &["n"])])).unwrap_err();
        assert!(
            err.to_string()
                .contains("128 key groups and the topology has 64"),
            "{err}"
        );
        let err = check_restore(&r, 128, &declared(&[("other", &["n"])])).unwrap_err();
        assert!(
            err.to_string()
                .contains("operator `count`, which the topology no longer has"),
            "{err}"
        );
        let err = check_restore(&r, 128, &declared(&[("count", &["renamed"])])).unwrap_err();
        assert!(
            err.to_string().contains("must keep the state names"),
            "{err}"
        );
        // The user's to fix (an API answers 409), not a failed restore.
        assert!(matches!(err, EngineError::StateMismatch(_)), "{err:?}");
    }

    #[test]
    fn a_summary_is_due_once_a_period_and_only_when_something_happened() {
        let start = Instant::now();
        let mut summary = Summary::new(start);
        let info = |duration_ms: f64| CheckpointInfo {
            id: 1,
            savepoint: None,
            started_at: 0,
            duration_ms,
            alignment_ms: 0.0,
            commit_ms: 0.0,
            rows: 1,
            bytes: 100,
            final_: false,
        };
        summary.took(&info(4.0));
        summary.took(&info(2.0));
        summary.skipped += 3;
        assert_eq!(summary.due(start + SUMMARY_EVERY / 2), None);
        let due = summary.due(start + SUMMARY_EVERY).expect("a period passed");
        assert_eq!((due.taken, due.skipped, due.bytes), (2, 3, 200));
        assert_eq!((due.last_ms, due.max_ms), (2.0, 4.0));
        // A quiet period says nothing; the next one starts afresh.
        assert_eq!(summary.due(start + SUMMARY_EVERY * 2), None);
        summary.skipped += 1;
        let due = summary.due(start + SUMMARY_EVERY * 3).expect("a skip");
        assert_eq!((due.taken, due.skipped), (0, 1));
    }

    fn at(position: u64, max_ts: i64) -> BTreeMap<String, SourceMeta> {
        BTreeMap::from([(
            "in".to_string(),
            SourceMeta {
                position: Position::Count(position),
                max_ts,
            },
        )])
    }

    #[test]
    fn an_idle_checkpoint_is_due_once_new_input_is_read_and_not_before_the_pause() {
        let start = Instant::now();
        let pause = Duration::from_millis(100);
        let mut idle = IdleCommit {
            min_pause: pause,
            last_started: None,
        };
        // Nothing new, or sources still reading: never due.
        assert_eq!(idle.due_at(false, true, start), None);
        assert_eq!(idle.due_at(true, false, start), None);
        // The first: at once.
        assert_eq!(idle.due_at(true, true, start), Some(start));
        // After one started at `start`: not before the pause.
        idle.started(start);
        let soon = start + Duration::from_millis(30);
        assert_eq!(idle.due_at(true, true, soon), Some(start + pause));
        let later = start + Duration::from_millis(400);
        assert_eq!(idle.due_at(true, true, later), Some(later));
        assert_eq!(idle.due_at(false, true, later), None);
    }

    #[test]
    fn a_checkpoint_with_nothing_new_is_skipped() {
        assert!(nothing_changed(&at(5, 9), &at(5, 9), 0, 0));
    }

    #[test]
    fn input_read_state_changed_or_output_waiting_make_a_checkpoint_commit() {
        assert!(!nothing_changed(&at(5, 9), &at(6, 9), 0, 0), "input read");
        assert!(
            !nothing_changed(&at(5, 9), &at(5, 10), 0, 0),
            "event time moved"
        );
        assert!(
            !nothing_changed(&at(5, 9), &at(5, 9), 1, 0),
            "state (or a timer) changed"
        );
        assert!(!nothing_changed(&at(5, 9), &at(5, 9), 0, 1), "output waits");
        assert!(
            !nothing_changed(&BTreeMap::new(), &at(0, i64::MIN), 0, 0),
            "the first checkpoint of a run commits"
        );
    }

    #[test]
    fn checkpoint_metadata_keeps_its_json_shape() {
        // Recovery reads metadata written by earlier versions: the field
        // names are a file format.
        let mut meta = Meta {
            id: 3,
            topology: "t".into(),
            key_groups: 8,
            final_: true,
            ..Meta::default()
        };
        meta.sources.insert(
            "in".into(),
            SourceMeta {
                position: Position::Count(5),
                max_ts: 9,
            },
        );
        meta.sinks.insert("out".into(), 2);
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 3, "topology": "t", "lineage": "", "savepoint": null, "created_at": 0,
                "key_groups": 8, "sources": {"in": {"position": 5, "max_ts": 9}},
                "sinks": {"out": 2}, "operators": {}, "final": true
            })
        );
        let back: Meta = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, meta);
        // Written before lineages: read with an empty one.
        let mut older = json;
        older.as_object_mut().unwrap().remove("lineage");
        assert_eq!(serde_json::from_value::<Meta>(older).unwrap(), meta);
        // Split offsets are an object.
        meta.sources.get_mut("in").unwrap().position =
            Position::Splits(BTreeMap::from([(0, 4), (1, 6)]));
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            json["sources"]["in"]["position"],
            serde_json::json!({"0": 4, "1": 6})
        );
        assert_eq!(serde_json::from_value::<Meta>(json).unwrap(), meta);
    }

    #[test]
    fn an_aborted_checkpoints_changes_go_under_the_next_ones() {
        use weir_state_contract::{RowTable as T, SnapshotRow as R};
        let put = |k: &str, v: &str| R::Put(T::State, k.into(), v.into());
        let older = vec![StateSnapshot::new(vec![
            put("a", "1"),
            put("m/x", "1"),
            put("b", "1"),
            R::Put(T::Timers, b"a".to_vec(), vec![]),
            R::DeletePrefix(b"n/".to_vec()),
        ])];
        let newer = vec![StateSnapshot::new(vec![
            put("a", "2"),
            R::DeletePrefix(b"m/".to_vec()),
            put("m/y", "2"),
            R::Delete(T::Timers, b"a".to_vec()),
        ])];
        let merged: Vec<R> = merge_snapshots(older, newer)
            .into_iter()
            .flat_map(StateSnapshot::into_rows)
            .collect();
        // Older rows the newer ones rewrite, remove or wipe by prefix are
        // gone; the rest stays, before the newer rows.
        assert_eq!(
            merged,
            vec![
                put("b", "1"),
                R::DeletePrefix(b"n/".to_vec()),
                put("a", "2"),
                R::DeletePrefix(b"m/".to_vec()),
                put("m/y", "2"),
                R::Delete(T::Timers, b"a".to_vec()),
            ]
        );
        // Nothing carried: the newer changes as they are.
        let alone = merge_snapshots(Vec::new(), vec![StateSnapshot::new(vec![put("c", "1")])]);
        assert_eq!(alone.len(), 1);
    }
}

/// Property tests of checkpoint records as recovery reads them: whatever
/// metadata and pending output were committed come back from [`restore`]
/// unchanged, and damaged or arbitrary records are errors, never panics.
#[cfg(test)]
mod record_properties {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use weir_types::Event;

    use super::*;
    use weir_io::Position;

    fn meta() -> impl Strategy<Value = Meta> {
        let position = prop_oneof![
            any::<u64>().prop_map(Position::Count),
            btree_map(any::<u32>(), any::<u64>(), 0..4).prop_map(Position::Splits),
        ];
        let source =
            (position, any::<i64>()).prop_map(|(position, max_ts)| SourceMeta { position, max_ts });
        let operator = (any::<i64>(), any::<u32>(), vec(".{1,8}", 0..3)).prop_map(
            |(watermark, parallelism, value_states)| OperatorMeta {
                watermark,
                parallelism,
                value_states,
            },
        );
        (
            any::<u64>(),
            ".{0,16}",
            "[0-9a-f-]{0,24}",
            prop::option::of(".{0,12}"),
            any::<i64>(),
            any::<u16>(),
            btree_map(".{1,10}", source, 0..4),
            btree_map(".{1,10}", any::<u64>(), 0..4),
            btree_map(".{1,10}", operator, 0..4),
            any::<bool>(),
        )
            .prop_map(|m| Meta {
                id: m.0,
                topology: m.1,
                lineage: m.2,
                savepoint: m.3,
                created_at: m.4,
                key_groups: m.5,
                sources: m.6,
                sinks: m.7,
                operators: m.8,
                final_: m.9,
            })
    }

    fn batch() -> impl Strategy<Value = Vec<Event>> {
        let event = (
            prop::option::of(vec(any::<u8>(), 0..16)),
            vec(any::<u8>(), 0..32),
            any::<i64>(),
            vec((".{1,8}", vec(any::<u8>(), 0..8)), 0..3),
        )
            .prop_map(|(key, value, timestamp, headers)| Event {
                key,
                value,
                timestamp,
                headers,
            });
        vec(event, 0..6)
    }

    /// Commits one checkpoint of `meta` and `pending` output, reopens the
    /// database and restores from it.
    fn commit_and_restore(
        meta: &[u8],
        pending: &[(String, Vec<u8>)],
    ) -> Result<Option<Restored>, EngineError> {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        db.commit_checkpoint(1, Vec::new(), meta, pending, 2)
            .unwrap();
        drop(db);
        let db = StateDb::open(dir.path()).unwrap();
        restore(&db)
    }

    proptest! {
        // Each case commits to a real database: few cases, small inputs.
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn a_restored_checkpoint_is_what_was_committed(
            meta in meta(),
            outputs in btree_map("[a-z]{1,8}", batch(), 0..3),
        ) {
            let pending: Vec<(String, Vec<u8>)> = outputs
                .iter()
                .map(|(sink, events)| {
                    let mut bytes = Vec::new();
                    events.iter().cloned().collect::<Batch>().encode(&mut bytes);
                    (sink.clone(), bytes)
                })
                .collect();
            let bytes = serde_json::to_vec(&meta).unwrap();
            let restored = commit_and_restore(&bytes, &pending).unwrap().unwrap();
            prop_assert_eq!(&restored.meta, &meta);
            prop_assert!(!restored.from_savepoint);
            let back: BTreeMap<String, Vec<Event>> = restored
                .pending
                .iter()
                .map(|(sink, batch)| (sink.clone(), batch.iter().map(|e| e.to_event()).collect()))
                .collect();
            prop_assert_eq!(back, outputs);
        }

        #[test]
        fn a_damaged_or_arbitrary_record_is_an_error_not_a_panic(
            meta in meta(),
            flips in vec((any::<prop::sample::Index>(), 1u8..), 1..4),
            junk in vec(any::<u8>(), 0..96),
        ) {
            let mut bytes = serde_json::to_vec(&meta).unwrap();
            for (at, mask) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
            let _ = commit_and_restore(&bytes, &[("out".to_string(), junk.clone())]);
            let _ = commit_and_restore(&junk, &[]);
        }
    }
}
