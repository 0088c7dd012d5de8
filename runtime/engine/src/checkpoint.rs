//! The checkpoint coordinator: asks sources for barriers (on an interval,
//! on demand, or when an instance's dirty state outgrows its budget),
//! collects every task's acknowledgement and commits the checkpoint in one
//! durable redb commit (state changes, source positions, sink bases and
//! pending output: see `weir_state::StateDb::commit_checkpoint`), then
//! publishes the pending output to exactly-once sinks. Tasks go on
//! processing while it commits. One checkpoint is in flight at a time.
//!
//! Also here: the checkpoint's metadata ([`Meta`]) and reading it back at
//! recovery.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_state::{StateDb, StateSnapshot};
use weir_types::Batch;

use crate::executor::EngineError;
use crate::io::Sink;
use crate::tasks::{Abort, Control, now_ms};

/// The checkpoint id of acknowledgements sent at the end of the input.
pub(crate) const FINAL: u64 = u64::MAX;

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
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: Some(Duration::from_secs(1)),
            retain: 3,
            reset_sources: false,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SourceMeta {
    pub(crate) position: u64,
    pub(crate) max_ts: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OperatorMeta {
    /// The lowest watermark of its instances.
    pub(crate) watermark: i64,
    pub(crate) parallelism: u32,
    /// Value states its module declared.
    pub(crate) value_states: Vec<String>,
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

/// A task's acknowledgement of a checkpoint (`FINAL`: its input ended).
pub(crate) enum Ack {
    Source {
        id: u64,
        source: usize,
        position: u64,
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

/// A chain instance's part of a checkpoint: its watermark and the state
/// changes of each of its operators.
type TaskPart = (i64, Vec<(String, StateSnapshot)>);

/// What each participant contributed to a checkpoint.
#[derive(Default)]
struct Collected {
    sources: Vec<Option<SourceMeta>>,
    tasks: Vec<Option<TaskPart>>,
    sinks: Vec<Option<Batch>>,
    alignment: Duration,
}

impl Collected {
    fn new(sources: usize, tasks: usize, sinks: usize) -> Self {
        Collected {
            sources: vec![None; sources],
            tasks: (0..tasks).map(|_| None).collect(),
            sinks: vec![None; sinks],
            alignment: Duration::ZERO,
        }
    }
    fn complete(&self) -> bool {
        self.sources.iter().all(Option::is_some)
            && self.tasks.iter().all(Option::is_some)
            && self.sinks.iter().all(Option::is_some)
    }
}

/// A checkpoint asked for and not yet committed.
struct InFlight {
    id: u64,
    started: Instant,
    started_at: i64,
    collected: Collected,
    request: Option<Request>,
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
}

impl Coordinator {
    /// Runs until the input ended and the last checkpoint committed, the
    /// run stopped, or it failed.
    pub(crate) fn run(mut self) {
        if let Err(e) = self.run_inner() {
            self.abort.fail(e);
        }
    }

    fn run_inner(&mut self) -> Result<(), EngineError> {
        let (n_sources, n_tasks, n_sinks) =
            (self.source_names.len(), self.tasks.len(), self.sinks.len());
        // What each participant sent at the end of its input.
        let mut ended = Collected::new(n_sources, n_tasks, n_sinks);
        // Positions of ended sources stay valid for every later checkpoint.
        let mut ended_sources: Vec<Option<SourceMeta>> = vec![None; n_sources];
        let mut ended_tasks = vec![false; n_tasks];
        let mut ended_sinks = vec![false; n_sinks];
        let mut in_flight: Option<InFlight> = None;
        let mut queue: VecDeque<Request> = VecDeque::new();
        let mut next_due = self.config.interval.map(|i| Instant::now() + i);
        loop {
            if self.abort.stopped() {
                for r in queue
                    .drain(..)
                    .chain(in_flight.take().and_then(|f| f.request))
                {
                    let _ = r.reply.send(Err("the topology stopped".into()));
                }
                return Ok(());
            }
            while let Ok(r) = self.requests.try_recv() {
                queue.push_back(r);
            }
            // Start a checkpoint when none is in flight and one is due.
            if in_flight.is_none() {
                let due = next_due.is_some_and(|t| Instant::now() >= t);
                let asked = self.db.take_checkpoint_request();
                let request = queue.pop_front();
                if request.is_some() || due || asked {
                    let all_ended = ended_tasks.iter().all(|&e| e) && n_tasks > 0;
                    if !all_ended {
                        in_flight = Some(self.trigger(
                            request,
                            &mut ended,
                            &ended_sources,
                            &ended_tasks,
                            &ended_sinks,
                        ));
                    } else if let Some(r) = request {
                        queue.push_front(r);
                    }
                    next_due = self.config.interval.map(|i| Instant::now() + i);
                }
            }
            match self.acks.recv_timeout(Duration::from_millis(20)) {
                Ok(ack) => self.record(
                    ack,
                    in_flight.as_mut(),
                    &mut ended,
                    &mut ended_sources,
                    &mut ended_tasks,
                    &mut ended_sinks,
                ),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if in_flight.as_ref().is_some_and(|f| f.collected.complete()) {
                let flight = in_flight.take().expect("checked above");
                let stop = flight.request.as_ref().is_some_and(|r| r.stop);
                self.commit(flight, false)?;
                if stop {
                    return Ok(());
                }
            }
            let everything_ended = ended_sources.iter().all(Option::is_some)
                && ended_tasks.iter().all(|&e| e)
                && ended_sinks.iter().all(|&e| e);
            if everything_ended && in_flight.is_none() {
                let id = self.last_id + 1;
                let mut collected =
                    std::mem::replace(&mut ended, Collected::new(n_sources, n_tasks, n_sinks));
                for (s, slot) in collected.sources.iter_mut().enumerate() {
                    *slot = ended_sources[s];
                }
                for slot in collected.tasks.iter_mut() {
                    slot.get_or_insert_with(|| (i64::MAX, Vec::new()));
                }
                for slot in collected.sinks.iter_mut() {
                    slot.get_or_insert_with(Batch::default);
                }
                let flight = InFlight {
                    id,
                    started: Instant::now(),
                    started_at: now_ms(),
                    collected,
                    request: queue.pop_front(),
                };
                self.commit(flight, true)?;
                for r in queue.drain(..) {
                    let _ = r.reply.send(Err("the input ended; the run is over".into()));
                }
                return Ok(());
            }
        }
    }

    /// Asks sources for the next checkpoint's barriers. Participants whose
    /// input already ended count as acknowledged, with what they sent at
    /// their end if no checkpoint committed it yet.
    fn trigger(
        &mut self,
        request: Option<Request>,
        ended: &mut Collected,
        ended_sources: &[Option<SourceMeta>],
        ended_tasks: &[bool],
        ended_sinks: &[bool],
    ) -> InFlight {
        let id = self.last_id + 1;
        self.last_id = id;
        let mut collected =
            Collected::new(ended_sources.len(), ended_tasks.len(), ended_sinks.len());
        for (s, e) in ended_sources.iter().enumerate() {
            collected.sources[s] = *e;
        }
        for (t, &e) in ended_tasks.iter().enumerate() {
            if e {
                collected.tasks[t] = Some(ended.tasks[t].take().unwrap_or((i64::MAX, Vec::new())));
            }
        }
        for (k, &e) in ended_sinks.iter().enumerate() {
            if e {
                collected.sinks[k] = Some(ended.sinks[k].take().unwrap_or_default());
            }
        }
        if request.as_ref().is_some_and(|r| r.stop) {
            self.control.stop_at.store(id, Ordering::SeqCst);
        }
        self.control.requested.store(id, Ordering::SeqCst);
        tracing::debug!(topology = %self.topology, checkpoint = id, "checkpoint triggered");
        InFlight {
            id,
            started: Instant::now(),
            started_at: now_ms(),
            collected,
            request,
        }
    }

    /// Files an acknowledgement: into the checkpoint in flight, or (at the
    /// end of a participant's input) into the one in flight if it still
    /// lacks it, else kept for the last checkpoint.
    fn record(
        &mut self,
        ack: Ack,
        in_flight: Option<&mut InFlight>,
        ended: &mut Collected,
        ended_sources: &mut [Option<SourceMeta>],
        ended_tasks: &mut [bool],
        ended_sinks: &mut [bool],
    ) {
        let mut flight = in_flight;
        match ack {
            Ack::Source {
                id,
                source,
                position,
                max_ts,
            } => {
                let meta = SourceMeta { position, max_ts };
                if id == FINAL {
                    ended_sources[source] = Some(meta);
                }
                if let Some(f) = flight.as_deref_mut()
                    && (f.id == id || id == FINAL)
                    && f.collected.sources[source].is_none()
                {
                    f.collected.sources[source] = Some(meta);
                }
            }
            Ack::Task {
                id,
                task,
                watermark,
                states,
                alignment,
            } => {
                if id == FINAL {
                    ended_tasks[task] = true;
                }
                match flight.as_deref_mut() {
                    Some(f) if (f.id == id || id == FINAL) && f.collected.tasks[task].is_none() => {
                        f.collected.tasks[task] = Some((watermark, states));
                        f.collected.alignment = f.collected.alignment.max(alignment);
                    }
                    _ if id == FINAL => ended.tasks[task] = Some((watermark, states)),
                    _ => tracing::warn!(checkpoint = id, task, "stray checkpoint acknowledgement"),
                }
            }
            Ack::Sink { id, sink, pending } => {
                if id == FINAL {
                    ended_sinks[sink] = true;
                }
                match flight {
                    Some(f) if (f.id == id || id == FINAL) && f.collected.sinks[sink].is_none() => {
                        f.collected.sinks[sink] = Some(pending);
                    }
                    _ if id == FINAL => ended.sinks[sink] = Some(pending),
                    _ => tracing::warn!(checkpoint = id, sink, "stray checkpoint acknowledgement"),
                }
            }
        }
    }

    /// Commits a complete checkpoint, publishes its output, exports the
    /// savepoint it was asked for and answers the request.
    fn commit(&mut self, flight: InFlight, final_: bool) -> Result<(), EngineError> {
        let InFlight {
            id,
            started,
            started_at,
            collected,
            request,
        } = flight;
        let savepoint = request.as_ref().and_then(|r| r.savepoint.clone());
        let mut meta = Meta {
            id,
            topology: self.topology.clone(),
            savepoint: savepoint.as_ref().map(|(n, _)| n.clone()),
            created_at: now_ms(),
            key_groups: self.key_groups,
            final_,
            ..Meta::default()
        };
        for (s, name) in self.source_names.iter().enumerate() {
            meta.sources
                .insert(name.clone(), collected.sources[s].unwrap_or_default());
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
        let mut pending_bytes = Vec::new();
        let mut publish = Vec::new();
        for (k, batch) in collected.sinks.into_iter().enumerate() {
            let batch = batch.unwrap_or_default();
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
                    publish.push((k, batch));
                }
            }
        }
        let meta_bytes = serde_json::to_vec(&meta)
            .map_err(|e| EngineError::Internal(format!("checkpoint metadata: {e}")))?;
        tracing::debug!(topology = %self.topology, checkpoint = id, "checkpoint committing");
        let stats = self
            .db
            .commit_checkpoint(
                id,
                snapshots,
                &meta_bytes,
                &pending_bytes,
                self.config.retain,
            )
            .map_err(EngineError::State)?;
        self.last_id = id;
        for (k, batch) in publish {
            let (name, sink) = &mut self.sinks[k];
            if let Some(sink) = sink {
                sink.write(&batch).map_err(|message| EngineError::Sink {
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
        // Routine, every interval: debug (status and /metrics have them).
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
}
