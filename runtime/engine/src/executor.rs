//! The topology executor: plans a topology (chains, routes) and starts
//! its tasks.
//!
//! - Operators connected one-to-one (single input, its producer's only
//!   consumer, same parallelism, no `key_by`) are **chained** into one task:
//!   a batch goes through them with no channel in between.
//! - An edge into a keyed operator **partitions** events by key group
//!   (re-keying by a JSON field first when `key_by: {field}`); an unkeyed
//!   edge between equal parallelisms forwards instance i to instance i, and
//!   otherwise spreads batches round-robin (`routes.rs`).
//! - Channels hold at most `channel_capacity` batches, so a slow sink slows
//!   the sources (**backpressure**) and memory stays bounded.
//! - Sources emit **watermarks** (highest timestamp − allowed
//!   out-of-orderness − 1); a task's watermark is the minimum over its
//!   inputs; event-time timers fire as it passes them, and processing-time
//!   timers on the wall clock. At the end of the input every event-time
//!   timer fires (`tasks.rs`).
//! - An event an operator fails on is handled by the operator's `on_error`:
//!   `fail` stops the topology, `skip` counts it, `dead-letter` hands it,
//!   with the operator and error, to the dead-letter binding. A trapped
//!   instance is re-created and processing goes on.
//! - With durable state and checkpoints ([`StateConfig`]), a run first
//!   restores the newest checkpoint (state, source positions, watermarks,
//!   sink output) and a coordinator thread takes checkpoints
//!   (`checkpoint.rs`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use weir_state::{KeyedState, StateBudget, StateDb};
use weir_topology::{
    ErrorPolicyDoc, KeyBy, LatePolicyDoc, ModuleCheck, Problem, Severity, TopologyDoc,
    validate_topology,
};
use weir_types::{DEFAULT_KEY_GROUPS, Event, KeyGroupRange};
use weir_wasm::{InstanceError, MemoryState, OperatorInstance, OperatorModule, OperatorState};

use crate::checkpoint::{
    CheckpointConfig, CheckpointInfo, Coordinator, Request, Restored, TaskInfo, restore,
};
use crate::io::{Sink, Source};
use crate::metrics::MetricsRegistry;
use crate::routes::{Outputs, Route, RouteKind};
use crate::tasks::{
    Abort, AckLink, ChainOp, ChainTask, Control, DeadLetters, Envelope, InputTracker, SinkTask,
    SourceTask,
};

/// Where dead letters go.
pub type DeadLetterFn = Box<dyn FnMut(&DeadLetter) -> Result<(), String> + Send>;

/// An event an operator failed on, under `on_error: dead-letter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub operator: String,
    pub error: String,
    /// Wall clock when it failed, ms since the Unix epoch.
    pub failed_at: i64,
    pub event: Event,
}

impl DeadLetter {
    /// The failed event as a one-event batch, carrying the failure in
    /// headers `weir.operator`, `weir.error` and `weir.failed_at`: how dead
    /// letters are written to streams and files.
    pub fn to_batch(&self) -> weir_types::Batch {
        let mut event = self.event.clone();
        event
            .headers
            .push(("weir.operator".into(), self.operator.clone().into_bytes()));
        event
            .headers
            .push(("weir.error".into(), self.error.clone().into_bytes()));
        event.headers.push((
            "weir.failed_at".into(),
            self.failed_at.to_string().into_bytes(),
        ));
        let mut batch = weir_types::Batch::default();
        batch.push_event(&event);
        batch
    }
}

/// What the topology's sources read and its sinks write.
#[derive(Default)]
pub struct Bindings {
    pub sources: HashMap<String, Box<dyn Source>>,
    pub sinks: HashMap<String, Box<dyn Sink>>,
    /// Dead letters are written as they come (at-least-once).
    pub dead_letter: Option<DeadLetterFn>,
}

/// Where operator state lives when it is durable, and how it is
/// checkpointed.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The topology's state database.
    pub db: StateDb,
    /// Memory each instance's working set may use.
    pub budget: StateBudget,
    /// `None`: state is flushed to `db` at the end of a bounded run only
    /// (no recovery); `Some`: checkpoints, recovery, exactly-once sinks.
    pub checkpoints: Option<CheckpointConfig>,
}

/// Sizes of batches and channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// Most events in a batch a source emits.
    pub batch_size: usize,
    /// Most batches waiting in one channel.
    pub channel_capacity: usize,
    /// Longest a source holds a partial batch before sending it, so that a
    /// trickle of events still sees low latency.
    pub linger: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            batch_size: 1024,
            channel_capacity: 8,
            linger: Duration::from_millis(2),
        }
    }
}

/// Why a topology could not run or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("the topology has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("{what} `{name}` is not bound: give it an input or output")]
    Unbound { what: &'static str, name: String },
    #[error("operators use on_error or on_late: dead-letter but no dead-letter output is bound")]
    NoDeadLetter,
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error("operator `{operator}` failed on an event (on_error: fail): {message}")]
    EventFailed { operator: String, message: String },
    #[error("source `{source_name}` failed: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("sink `{sink}` failed: {message}")]
    Sink { sink: String, message: String },
    #[error("dead-letter output failed: {0}")]
    DeadLetter(String),
    #[error("state store: {0}")]
    State(#[from] weir_state::StateError),
    #[error("cannot restore the checkpoint: {0}")]
    Restore(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("a task stopped unexpectedly: {0}")]
    Internal(String),
}

/// What a finished run did, per operator instance and source.
#[derive(Debug, Clone, Default)]
pub struct TopologyReport {
    /// `(operator, instance index, metrics)`.
    pub operators: Vec<(String, usize, crate::MetricsSnapshot)>,
    /// `(source, events read)`.
    pub sources: Vec<(String, u64)>,
    /// The checkpoints the run took.
    pub checkpoints: Vec<CheckpointInfo>,
}

/// The modules of a topology, by the references its operators use.
pub type Modules = HashMap<String, OperatorModule>;

struct ProvidedModules<'a>(&'a Modules);

impl ModuleCheck for ProvidedModules<'_> {
    fn check(&self, module: &str) -> Result<(), String> {
        if self.0.contains_key(module) {
            Ok(())
        } else {
            Err(format!(
                "unknown module {module:?}: upload it, or give a path to a .wasm file"
            ))
        }
    }
}

/// A consumer of a name: an operator chain (by chain index) or a sink.
#[derive(Clone, Copy)]
enum Consumer {
    Chain(usize),
    Sink(usize),
}

/// Takes what `name` is bound to, or says it is unbound.
fn take_binding<T>(
    bound: &mut HashMap<String, T>,
    name: &str,
    what: &'static str,
) -> Result<T, EngineError> {
    bound.remove(name).ok_or_else(|| EngineError::Unbound {
        what,
        name: name.to_string(),
    })
}

/// Runs `doc` to the end of its sources (bounded inputs), blocking, with
/// state in memory.
pub fn run_topology(
    doc: &TopologyDoc,
    modules: &Modules,
    bindings: Bindings,
    options: ExecOptions,
) -> Result<TopologyReport, EngineError> {
    launch(
        doc,
        modules,
        bindings,
        options,
        None,
        Arc::new(MetricsRegistry::default()),
    )?
    .join()
}

/// A started topology: its threads and how to reach them.
pub(crate) struct Launched {
    pub(crate) topology: String,
    pub(crate) key_groups: u16,
    pub(crate) handles: Vec<JoinHandle<()>>,
    pub(crate) abort: Arc<Abort>,
    pub(crate) control: Arc<Control>,
    pub(crate) metrics: Arc<MetricsRegistry>,
    pub(crate) source_counts: Vec<(String, Arc<AtomicU64>)>,
    /// Requests to the checkpoint coordinator (when checkpointing).
    pub(crate) requests: Option<Sender<Request>>,
    pub(crate) history: Arc<Mutex<Vec<CheckpointInfo>>>,
    /// Operator → (parallelism, input channel of each instance of its
    /// chain), for state queries.
    pub(crate) query_routes: HashMap<String, (u16, Vec<SyncSender<Envelope>>)>,
    pub(crate) state: Option<StateConfig>,
}

impl Launched {
    /// Waits for every thread; the first error of the run, or its report.
    pub(crate) fn join(mut self) -> Result<TopologyReport, EngineError> {
        let handles = std::mem::take(&mut self.handles);
        for h in handles {
            if h.join().is_err() {
                self.abort
                    .fail(EngineError::Internal("a task panicked".into()));
            }
        }
        if let Some(error) = self.abort.error.lock().ok().and_then(|mut e| e.take()) {
            return Err(error);
        }
        Ok(TopologyReport {
            operators: self.metrics.snapshot(),
            sources: self
                .source_counts
                .iter()
                .map(|(s, c)| (s.clone(), c.load(std::sync::atomic::Ordering::Relaxed)))
                .collect(),
            checkpoints: self.history.lock().map(|h| h.clone()).unwrap_or_default(),
        })
    }
}

impl Drop for Launched {
    /// A run nobody waits for any more stops (without a last checkpoint).
    fn drop(&mut self) {
        if !self.handles.is_empty() {
            self.control
                .stop_now
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.abort.stop();
        }
    }
}

fn spawn(
    name: String,
    abort: &Arc<Abort>,
    body: impl FnOnce() -> Result<(), EngineError> + Send + 'static,
) -> Result<JoinHandle<()>, EngineError> {
    let abort = abort.clone();
    let span_name = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let _span = tracing::info_span!("task", task = %span_name).entered();
            if let Err(e) = body() {
                abort.fail(e);
            }
        })
        .map_err(|e| EngineError::Internal(format!("cannot start a task: {e}")))
}

/// Checks that a checkpoint fits the topology about to start from it:
/// same key groups, every checkpointed operator still there, and each
/// keeping the value states it had.
fn check_restore(
    restored: &Restored,
    groups: u16,
    declared: &HashMap<String, Vec<String>>,
) -> Result<(), EngineError> {
    let meta = &restored.meta;
    if meta.key_groups != groups {
        return Err(EngineError::Restore(format!(
            "checkpoint {} was taken with {} key groups and the topology has {groups}: key groups cannot change (parallelism can)",
            meta.id, meta.key_groups
        )));
    }
    for (op, saved) in &meta.operators {
        let Some(now) = declared.get(op) else {
            return Err(EngineError::Restore(format!(
                "checkpoint {} holds state of operator `{op}`, which the topology no longer has: keep the operator (same name), or start without the checkpoint",
                meta.id
            )));
        };
        let missing: Vec<&String> = saved
            .value_states
            .iter()
            .filter(|s| !now.contains(s))
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::Restore(format!(
                "operator `{op}`: the checkpoint holds value state {missing:?} but its module now declares {now:?}: a new module version must keep the state names",
            )));
        }
    }
    Ok(())
}

/// Plans `doc`, restores its newest checkpoint (with checkpoints), and
/// starts its threads.
pub(crate) fn launch(
    doc: &TopologyDoc,
    modules: &Modules,
    mut bindings: Bindings,
    options: ExecOptions,
    state: Option<StateConfig>,
    metrics: Arc<MetricsRegistry>,
) -> Result<Launched, EngineError> {
    let problems: Vec<Problem> = validate_topology(doc, &ProvidedModules(modules))
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    if !problems.is_empty() {
        return Err(EngineError::Invalid(problems));
    }
    let groups = doc.key_groups.unwrap_or(DEFAULT_KEY_GROUPS);
    let op_index: HashMap<&str, usize> = doc
        .operators
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name.as_str(), i))
        .collect();
    let parallelism = |i: usize| doc.operators[i].parallelism.unwrap_or(1) as usize;

    // Who reads each name.
    let mut readers: HashMap<&str, Vec<(bool, usize)>> = HashMap::new();
    for (i, o) in doc.operators.iter().enumerate() {
        for input in o.input.names() {
            readers.entry(input).or_default().push((true, i));
        }
    }
    for (i, s) in doc.sinks.iter().enumerate() {
        for input in s.input.names() {
            readers.entry(input).or_default().push((false, i));
        }
    }
    // Chains: an operator joins its input's chain when it is that
    // operator's only reader, reads nothing else, has its parallelism and
    // is not keyed.
    let chained_into = |i: usize| -> Option<usize> {
        let o = &doc.operators[i];
        let inputs = o.input.names();
        if inputs.len() != 1 || o.key_by.is_some() {
            return None;
        }
        let &up = op_index.get(inputs[0])?;
        let only_reader = readers.get(inputs[0]).is_some_and(|r| r.len() == 1);
        (only_reader && parallelism(up) == parallelism(i)).then_some(up)
    };
    let mut chains: Vec<Vec<usize>> = Vec::new();
    let mut chain_of = vec![usize::MAX; doc.operators.len()];
    for i in 0..doc.operators.len() {
        if chained_into(i).is_some() {
            continue;
        }
        let mut chain = vec![i];
        let mut last = i;
        while let Some(&(true, next)) = readers
            .get(doc.operators[last].name.as_str())
            .filter(|r| r.len() == 1)
            .and_then(|r| r.first())
        {
            if chained_into(next) != Some(last) {
                break;
            }
            chain.push(next);
            last = next;
        }
        for &op in &chain {
            chain_of[op] = chains.len();
        }
        chains.push(chain);
    }

    // Channels of every consumer instance.
    let capacity = options.channel_capacity.max(1);
    let mut chain_tx: Vec<Vec<SyncSender<Envelope>>> = Vec::new();
    let mut chain_rx: Vec<Vec<Option<Receiver<Envelope>>>> = Vec::new();
    for chain in &chains {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..parallelism(chain[0]))
            .map(|_| {
                let (tx, rx) = sync_channel(capacity);
                (tx, Some(rx))
            })
            .unzip();
        chain_tx.push(txs);
        chain_rx.push(rxs);
    }
    let mut sink_tx = Vec::new();
    let mut sink_rx = Vec::new();
    for _ in &doc.sinks {
        let (tx, rx) = sync_channel(capacity);
        sink_tx.push(tx);
        sink_rx.push(Some(rx));
    }

    // Producers: sources, then the last operator of each chain; each
    // instance gets an id, and each consumer instance learns its senders.
    let mut next_id = 0usize;
    let mut chain_senders: Vec<Vec<Vec<usize>>> = chains
        .iter()
        .map(|c| vec![Vec::new(); parallelism(c[0])])
        .collect();
    let mut sink_senders: Vec<Vec<usize>> = vec![Vec::new(); doc.sinks.len()];
    let mut make_outputs = |name: &str, producer_parallelism: usize| -> Vec<Outputs> {
        let consumers: Vec<Consumer> = readers
            .get(name)
            .map(|r| {
                r.iter()
                    .filter_map(|&(is_op, i)| {
                        if !is_op {
                            return Some(Consumer::Sink(i));
                        }
                        // Operators chained behind another are fed by it.
                        (chains[chain_of[i]][0] == i).then_some(Consumer::Chain(chain_of[i]))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let routes: Vec<Route> = consumers
            .iter()
            .map(|c| match *c {
                Consumer::Sink(s) => Route {
                    kind: RouteKind::Rebalance,
                    targets: vec![sink_tx[s].clone()],
                },
                Consumer::Chain(c) => {
                    let head = &doc.operators[chains[c][0]];
                    let p = chain_tx[c].len();
                    let kind = match &head.key_by {
                        Some(key_by) => {
                            let mut owner = vec![0u16; groups as usize];
                            for inst in 0..p {
                                let r = KeyGroupRange::for_instance(inst as u16, p as u16, groups);
                                for g in r.start..r.end {
                                    owner[g as usize] = inst as u16;
                                }
                            }
                            RouteKind::Keyed {
                                field: match key_by {
                                    KeyBy::Field { field } => Some(field.clone()),
                                    KeyBy::Key(_) => None,
                                },
                                groups,
                                owner: Arc::new(owner),
                            }
                        }
                        None if p == producer_parallelism => RouteKind::Forward,
                        None => RouteKind::Rebalance,
                    };
                    Route {
                        kind,
                        targets: chain_tx[c].clone(),
                    }
                }
            })
            .collect();
        (0..producer_parallelism)
            .map(|index| {
                let id = next_id;
                next_id += 1;
                for (c, route) in consumers.iter().zip(&routes) {
                    match (*c, &route.kind) {
                        (Consumer::Sink(s), _) => sink_senders[s].push(id),
                        (Consumer::Chain(ch), RouteKind::Forward) => {
                            let t = index.min(chain_senders[ch].len() - 1);
                            chain_senders[ch][t].push(id);
                        }
                        (Consumer::Chain(ch), _) => {
                            for senders in chain_senders[ch].iter_mut() {
                                senders.push(id);
                            }
                        }
                    }
                }
                Outputs {
                    id,
                    index,
                    routes: routes.clone(),
                    next: index,
                    metrics: None,
                }
            })
            .collect()
    };
    let source_outputs: Vec<Outputs> = doc
        .sources
        .iter()
        .map(|s| make_outputs(&s.name, 1).remove(0))
        .collect();
    let chain_outputs: Vec<Vec<Outputs>> = chains
        .iter()
        .map(|c| {
            let last = &doc.operators[*c.last().unwrap_or(&c[0])];
            make_outputs(&last.name, parallelism(c[0]))
        })
        .collect();
    drop(sink_tx);

    // Bindings.
    let mut source_binds: Vec<Box<dyn Source>> = doc
        .sources
        .iter()
        .map(|s| take_binding(&mut bindings.sources, &s.name, "source"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sink_binds: Vec<Box<dyn Sink>> = doc
        .sinks
        .iter()
        .map(|s| take_binding(&mut bindings.sinks, &s.name, "sink"))
        .collect::<Result<Vec<_>, _>>()?;
    let wants_dead_letter = doc.operators.iter().any(|o| {
        o.on_error == Some(ErrorPolicyDoc::DeadLetter)
            || o.on_late == Some(LatePolicyDoc::DeadLetter)
    });
    if wants_dead_letter && bindings.dead_letter.is_none() {
        return Err(EngineError::NoDeadLetter);
    }
    let dead = Arc::new(DeadLetters(bindings.dead_letter.take().map(Mutex::new)));

    let checkpoints = state.as_ref().and_then(|s| s.checkpoints);
    let restored = match (&state, checkpoints) {
        (Some(s), Some(_)) => restore(&s.db)?,
        _ => None,
    };
    if let Some(r) = &restored {
        tracing::info!(topology = %doc.name, checkpoint = r.meta.id, "restoring from checkpoint");
    }

    // Operator instances (instantiated before any thread starts, so a bad
    // config fails the run cleanly).
    let mut chain_ops: Vec<Vec<Vec<ChainOp>>> = Vec::new();
    let mut declared: HashMap<String, Vec<String>> = HashMap::new();
    for chain in &chains {
        let p = parallelism(chain[0]);
        let mut instances = Vec::new();
        for inst in 0..p {
            let mut ops = Vec::new();
            for &i in chain {
                let o = &doc.operators[i];
                let config = o
                    .config
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "{}".into());
                let range = KeyGroupRange::for_instance(inst as u16, p as u16, groups);
                let op_state: Box<dyn OperatorState> = match &state {
                    Some(s) => {
                        let keyed = KeyedState::open(&s.db, &doc.name, &o.name, range, s.budget)?;
                        if s.checkpoints.is_some() {
                            Box::new(keyed.checkpointed())
                        } else {
                            Box::new(keyed)
                        }
                    }
                    None => Box::new(MemoryState::new()),
                };
                let instance =
                    OperatorInstance::new(&modules[&o.module], &o.name, &config, op_state, range)?;
                declared.insert(o.name.clone(), instance.value_states().to_vec());
                let metrics = metrics.register(&o.name, inst);
                ops.push(ChainOp {
                    name: o.name.clone(),
                    instance,
                    policy: o.on_error.unwrap_or_default(),
                    late: o.on_late.unwrap_or_default(),
                    metrics,
                });
            }
            instances.push(ops);
        }
        chain_ops.push(instances);
    }
    if let Some(r) = &restored {
        check_restore(r, groups, &declared)?;
    }
    let restored_meta = restored.as_ref().map(|r| &r.meta);

    // Exactly-once sinks: back to the restored checkpoint, its output
    // published again; under checkpoints the coordinator publishes to them.
    let mut coordinator_sinks: Vec<(String, Option<Box<dyn Sink>>)> = Vec::new();
    let mut task_sinks: Vec<Option<Box<dyn Sink>>> = Vec::new();
    for (s, sink) in doc.sinks.iter().zip(sink_binds.drain(..)) {
        let mut sink = sink;
        if checkpoints.is_some() && sink.exactly_once() {
            if let Some(r) = restored.as_ref().filter(|r| !r.from_savepoint) {
                let base = r.meta.sinks.get(&s.name).copied().unwrap_or(0);
                let empty = weir_types::Batch::default();
                let pending = r.pending.get(&s.name).unwrap_or(&empty);
                sink.recover(base, pending)
                    .map_err(|message| EngineError::Sink {
                        sink: s.name.clone(),
                        message: format!("recovering to checkpoint {}: {message}", r.meta.id),
                    })?;
            }
            coordinator_sinks.push((s.name.clone(), Some(sink)));
            task_sinks.push(None);
        } else {
            coordinator_sinks.push((s.name.clone(), None));
            task_sinks.push(Some(sink));
        }
    }

    let abort = Arc::new(Abort::default());
    let control = Arc::new(Control::default());
    let last_id = restored_meta.map_or(0, |m| m.id);
    control
        .requested
        .store(last_id, std::sync::atomic::Ordering::SeqCst);
    let (ack_tx, ack_rx) = channel();
    let link = |index: usize| {
        checkpoints.map(|_| AckLink {
            index,
            acks: ack_tx.clone(),
        })
    };
    let mut handles = Vec::new();
    let mut task_infos = Vec::new();
    let mut query_routes = HashMap::new();
    for (c, (instances, outputs)) in chain_ops.into_iter().zip(chain_outputs).enumerate() {
        let head = &doc.operators[chains[c][0]];
        let p = instances.len();
        for &op in &chains[c] {
            query_routes.insert(
                doc.operators[op].name.clone(),
                (p as u16, chain_tx[c].clone()),
            );
        }
        // Checkpoints written before the end of input stopped being
        // recorded as i64::MAX hold it still: it is no position to resume
        // from (every new event would be late); the sources' restored
        // watermarks raise the task's again at start.
        let watermark = restored_meta
            .and_then(|m| m.operators.get(&head.name))
            .map_or(i64::MIN, |o| o.watermark);
        let watermark = if watermark == i64::MAX {
            i64::MIN
        } else {
            watermark
        };
        for (inst, (ops, mut out)) in instances.into_iter().zip(outputs).enumerate() {
            out.metrics = ops.last().map(|o| o.metrics.clone());
            let Some(rx) = chain_rx[c][inst].take() else {
                continue;
            };
            task_infos.push(TaskInfo {
                operators: ops
                    .iter()
                    .map(|o| (o.name.clone(), o.instance.value_states().to_vec()))
                    .collect(),
                parallelism: p as u32,
            });
            let task = ChainTask {
                ops,
                rx,
                inputs: InputTracker::new(&chain_senders[c][inst]),
                outputs: out,
                dead: dead.clone(),
                abort: abort.clone(),
                watermark,
                checkpoints: link(task_infos.len() - 1),
            };
            handles.push(spawn(format!("{}#{inst}", head.name), &abort, move || {
                task.run()
            })?);
        }
    }
    drop(chain_tx);
    for (s, (sink, rx)) in task_sinks.into_iter().zip(sink_rx.iter_mut()).enumerate() {
        let Some(rx) = rx.take() else { continue };
        let task = SinkTask {
            name: doc.sinks[s].name.clone(),
            sink,
            rx,
            inputs: InputTracker::new(&sink_senders[s]),
            abort: abort.clone(),
            checkpoints: link(s),
        };
        handles.push(spawn(
            format!("sink-{}", doc.sinks[s].name),
            &abort,
            move || task.run(),
        )?);
    }
    let mut source_counts = Vec::new();
    for (s, (source, out)) in source_binds.drain(..).zip(source_outputs).enumerate() {
        let doc_source = &doc.sources[s];
        let start = restored_meta
            .filter(|_| !checkpoints.is_some_and(|c| c.reset_sources))
            .and_then(|m| m.sources.get(&doc_source.name))
            .copied()
            .unwrap_or(crate::checkpoint::SourceMeta {
                position: 0,
                max_ts: i64::MIN,
            });
        let read = Arc::new(AtomicU64::new(0));
        source_counts.push((doc_source.name.clone(), read.clone()));
        let task = SourceTask {
            name: doc_source.name.clone(),
            source,
            position: start.position,
            max_ts: start.max_ts,
            max_out_of_orderness_ms: doc_source
                .watermark
                .map(|w| w.max_out_of_orderness_ms)
                .unwrap_or(0),
            options,
            outputs: out,
            read,
            abort: abort.clone(),
            control: control.clone(),
            injected: last_id,
            checkpoints: link(s),
        };
        handles.push(spawn(
            format!("source-{}", doc_source.name),
            &abort,
            move || task.run(),
        )?);
    }
    drop(ack_tx);

    let history = Arc::new(Mutex::new(Vec::new()));
    let mut requests = None;
    if let (Some(s), Some(config)) = (&state, checkpoints) {
        let (tx, rx): (Sender<Request>, Receiver<Request>) = channel();
        requests = Some(tx);
        let coordinator = Coordinator {
            topology: doc.name.clone(),
            key_groups: groups,
            db: s.db.clone(),
            config,
            control: control.clone(),
            abort: abort.clone(),
            acks: ack_rx,
            requests: rx,
            history: history.clone(),
            source_names: doc.sources.iter().map(|s| s.name.clone()).collect(),
            tasks: task_infos,
            sinks: coordinator_sinks,
            last_id,
        };
        handles.push(spawn(
            format!("checkpoints-{}", doc.name),
            &abort,
            move || {
                coordinator.run();
                Ok(())
            },
        )?);
    }
    Ok(Launched {
        topology: doc.name.clone(),
        key_groups: groups,
        handles,
        abort,
        control,
        metrics,
        source_counts,
        requests,
        history,
        query_routes,
        state,
    })
}
