//! The adapter between the control plane and the engine: one running
//! topology ([`Job`]) with the shape of the engine's job API (start,
//! metrics, state queries, stop with an optional savepoint), built on
//! [`weir_engine::run_topology_observed`].
//!
//! What this adapter does itself, until the engine takes it over with
//! aligned checkpoints:
//! - `stream:` sources follow the stream's tail and end when the job is
//!   stopped; the position each reached is written to
//!   `<topology dir>/positions.json` once the topology has drained, so the
//!   next start continues from there;
//! - keyed state lives in `<topology dir>/state.redb` and is made durable
//!   when the topology drains (a clean stop), not periodically;
//! - a state query locks the instance's state between two calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use weir_connectors::{Stream, StreamStore};
use weir_engine::{
    Bindings, DeadLetter, EngineError, ExecOptions, MetricsRegistry, MetricsSnapshot, Modules,
    SinkFn, SourceIter, StateProvider, TopologyReport, run_topology_observed,
};
use weir_state::{KeyedState, StateBudget, StateDb};
use weir_topology::{ErrorPolicyDoc, LatePolicyDoc, TopologyDoc};
use weir_types::{Batch, DEFAULT_KEY_GROUPS, Event, KeyGroupRange};
use weir_wasm::{OperatorState, StateOp, StateStoreError, TimeDomain, ValueWrite};

/// How long a following source waits for its stream to grow before it
/// checks whether the job is stopping.
const FOLLOW_POLL: Duration = Duration::from_millis(5);

/// The open state of one operator instance, shared between the instance
/// (through [`SharedState`]) and state queries.
type InstanceState = Arc<Mutex<KeyedState>>;

#[derive(Default)]
struct StateIndex(Mutex<Vec<(String, KeyGroupRange, InstanceState)>>);

/// Opens each instance's [`KeyedState`] and keeps a handle for queries.
struct SharedStates {
    db: StateDb,
    index: Arc<StateIndex>,
}

impl StateProvider for SharedStates {
    fn open(
        &self,
        topology: &str,
        operator: &str,
        owned: KeyGroupRange,
    ) -> Result<Box<dyn OperatorState>, String> {
        let state = KeyedState::open(&self.db, topology, operator, owned, StateBudget::default())
            .map_err(|e| e.to_string())?;
        let shared = Arc::new(Mutex::new(state));
        self.index
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((operator.to_string(), owned, shared.clone()));
        Ok(Box::new(SharedState(shared)))
    }
}

/// An instance's view of its [`InstanceState`].
struct SharedState(InstanceState);

impl SharedState {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyedState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OperatorState for SharedState {
    fn value(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateStoreError> {
        self.lock().value(name, key)
    }
    fn append_value(
        &mut self,
        name: &str,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateStoreError> {
        self.lock().append_value(name, key, out)
    }
    fn map(
        &mut self,
        name: &str,
        key: &[u8],
    ) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>, StateStoreError> {
        self.lock().map(name, key)
    }
    fn map_entry(
        &mut self,
        name: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateStoreError> {
        self.lock().map_entry(name, key, map_key)
    }
    fn list(&mut self, name: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, StateStoreError> {
        self.lock().list(name, key)
    }
    fn apply(
        &mut self,
        ops: Vec<StateOp>,
        values: &[ValueWrite<'_>],
    ) -> Result<(), StateStoreError> {
        self.lock().apply(ops, values)
    }
    fn take_due_timers(
        &mut self,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StateStoreError> {
        self.lock().take_due_timers(domain, time)
    }
    fn flush(&mut self) -> Result<(), StateStoreError> {
        OperatorState::flush(&mut *self.lock())
    }
}

/// A `stream:` source that follows the tail until the job stops,
/// publishing the offset after the last event it handed out.
fn follow(
    stream: Arc<Stream>,
    from: u64,
    batch: usize,
    stop: Arc<AtomicBool>,
    position: Arc<AtomicU64>,
) -> SourceIter {
    let mut next = from;
    let mut pending = std::collections::VecDeque::<Event>::new();
    Box::new(std::iter::from_fn(move || {
        loop {
            if let Some(e) = pending.pop_front() {
                position.fetch_add(1, Ordering::Relaxed);
                return Some(Ok(e));
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if !stream.wait_for(next, FOLLOW_POLL) {
                continue;
            }
            match stream.read(next, batch) {
                Ok((events, after)) => {
                    next = after;
                    pending.extend(events);
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }))
}

fn stream_sink(stream: Arc<Stream>) -> SinkFn {
    Box::new(move |batch: &Batch| stream.append(batch).map(|_| ()).map_err(|e| e.to_string()))
}

/// A dead letter as an event carrying the failure in `weir.*` headers.
fn dead_letter_batch(letter: &DeadLetter) -> Batch {
    let mut event = letter.event.clone();
    event
        .headers
        .push(("weir.operator".into(), letter.operator.clone().into_bytes()));
    event
        .headers
        .push(("weir.error".into(), letter.error.clone().into_bytes()));
    event.headers.push((
        "weir.failed_at".into(),
        letter.failed_at.to_string().into_bytes(),
    ));
    let mut batch = Batch::default();
    batch.push_event(&event);
    batch
}

/// Why a job could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Binding(String),
    #[error("state: {0}")]
    State(#[from] weir_state::StateError),
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
}

/// One running topology.
pub struct Job {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<TopologyReport, EngineError>>>,
    metrics: Arc<MetricsRegistry>,
    states: Arc<StateIndex>,
    db: StateDb,
    groups: u16,
    positions: Vec<(String, Arc<AtomicU64>)>,
    positions_path: PathBuf,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

fn read_positions(path: &Path) -> HashMap<String, u64> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

impl Job {
    /// Starts `doc` with its state in `dir` (`state.redb`), its `stream:`
    /// sources and sinks bound to `streams`.
    pub fn start(
        doc: TopologyDoc,
        modules: Modules,
        dir: &Path,
        streams: &StreamStore,
        options: ExecOptions,
    ) -> Result<Job, JobError> {
        let db = StateDb::open(dir)?;
        let positions_path = dir.join("positions.json");
        let start_at = read_positions(&positions_path);
        let stop = Arc::new(AtomicBool::new(false));
        let mut bindings = Bindings::default();
        let mut positions = Vec::new();
        for source in &doc.sources {
            let Some(name) = &source.stream else {
                return Err(JobError::Binding(format!(
                    "source `{}` reads a file: the server binds only `stream:` sources",
                    source.name
                )));
            };
            let stream = streams
                .stream(name)
                .map_err(|e| JobError::Binding(e.to_string()))?;
            let info = stream.info();
            let from = start_at
                .get(&source.name)
                .copied()
                .unwrap_or(0)
                .clamp(info.start_offset, info.end_offset);
            let position = Arc::new(AtomicU64::new(from));
            positions.push((source.name.clone(), position.clone()));
            bindings.sources.insert(
                source.name.clone(),
                follow(stream, from, options.batch_size, stop.clone(), position),
            );
        }
        for sink in &doc.sinks {
            let Some(name) = &sink.stream else {
                return Err(JobError::Binding(format!(
                    "sink `{}` writes a file: the server binds only `stream:` sinks",
                    sink.name
                )));
            };
            let stream = streams
                .stream(name)
                .map_err(|e| JobError::Binding(e.to_string()))?;
            bindings
                .sinks
                .insert(sink.name.clone(), stream_sink(stream));
        }
        if doc.operators.iter().any(|o| {
            o.on_error == Some(ErrorPolicyDoc::DeadLetter)
                || o.on_late == Some(LatePolicyDoc::DeadLetter)
        }) {
            let name = doc
                .dead_letter_stream
                .clone()
                .unwrap_or_else(|| format!("{}-dead-letter", doc.name));
            let stream = streams
                .stream(&name)
                .map_err(|e| JobError::Binding(e.to_string()))?;
            bindings.dead_letter = Some(Box::new(move |letter: &DeadLetter| {
                stream
                    .append(&dead_letter_batch(letter))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }));
        }
        let states = Arc::new(StateIndex::default());
        bindings.state = Some(Box::new(SharedStates {
            db: db.clone(),
            index: states.clone(),
        }));
        let metrics = Arc::new(MetricsRegistry::default());
        let groups = doc.key_groups.unwrap_or(DEFAULT_KEY_GROUPS);
        let thread_metrics = metrics.clone();
        let span = tracing::info_span!("topology", topology.name = %doc.name);
        let thread = std::thread::Builder::new()
            .name(format!("weir-job-{}", doc.name))
            .spawn(move || {
                let _span = span.entered();
                run_topology_observed(&doc, &modules, bindings, options, &thread_metrics)
            })
            .map_err(|e| JobError::Io {
                what: "cannot start the topology's thread".into(),
                reason: e.to_string(),
            })?;
        Ok(Job {
            stop,
            thread: Some(thread),
            metrics,
            states,
            db,
            groups,
            positions,
            positions_path,
        })
    }

    /// `(operator, instance, metrics)` of every instance, now.
    pub fn metrics(&self) -> Vec<(String, usize, MetricsSnapshot)> {
        self.metrics.snapshot()
    }

    /// `(source, offset it has read up to)`.
    pub fn positions(&self) -> Vec<(String, u64)> {
        self.positions
            .iter()
            .map(|(n, p)| (n.clone(), p.load(Ordering::Relaxed)))
            .collect()
    }

    /// Whether the topology stopped by itself (it failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Whether the topology has an operator named `operator`.
    pub fn has_operator(&self, operator: &str) -> bool {
        self.states
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(o, _, _)| o == operator)
    }

    /// The value of value state `state` of `operator` for `key`.
    pub fn query_state(
        &self,
        operator: &str,
        state: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, JobError> {
        let group = weir_types::key_group_of(key, self.groups);
        let owner = self
            .states
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(o, range, _)| o == operator && range.start <= group.0 && group.0 < range.end)
            .map(|(_, _, s)| s.clone());
        match owner {
            Some(s) => s
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .value(state, key)
                .map_err(|e| JobError::Binding(e.0)),
            None => Ok(None),
        }
    }

    /// Stops the sources, lets the topology drain, makes its state and
    /// source positions durable, and writes a savepoint to `savepoint`
    /// when given.
    pub fn stop(mut self, savepoint: Option<&Path>) -> Result<TopologyReport, JobError> {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.join()?;
        self.save_positions()?;
        if let Some(path) = savepoint {
            std::fs::copy(&self.positions_path, path.with_extension("positions.json")).map_err(
                |e| JobError::Io {
                    what: format!("cannot write savepoint {}", path.display()),
                    reason: e.to_string(),
                },
            )?;
            self.db.export(path)?;
        }
        Ok(report)
    }

    /// The outcome of a topology that finished by itself.
    pub fn wait(mut self) -> Result<TopologyReport, JobError> {
        self.join()
    }

    fn join(&mut self) -> Result<TopologyReport, JobError> {
        let thread = self.thread.take().ok_or_else(|| JobError::Io {
            what: "topology thread".into(),
            reason: "already joined".into(),
        })?;
        thread
            .join()
            .map_err(|_| EngineError::Internal("the topology's thread panicked".into()))?
            .map_err(JobError::from)
    }

    fn save_positions(&self) -> Result<(), JobError> {
        let map: HashMap<String, u64> = self.positions().into_iter().collect();
        let bytes = serde_json::to_vec(&map).unwrap_or_default();
        crate::fsutil::write_atomically(&self.positions_path, &bytes).map_err(|e| JobError::Io {
            what: format!("cannot write {}", self.positions_path.display()),
            reason: e.to_string(),
        })
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// Prepares `<dir>/state.redb` (and source positions) from a savepoint
/// written by [`Job::stop`].
pub fn restore_savepoint(dir: &Path, savepoint: &Path) -> Result<(), JobError> {
    StateDb::open_from(dir, savepoint)?;
    let positions = savepoint.with_extension("positions.json");
    if positions.is_file() {
        std::fs::copy(&positions, dir.join("positions.json")).map_err(|e| JobError::Io {
            what: format!("cannot restore positions from {}", positions.display()),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}
