//! The topology executor: sources, chains of operator instances and sinks,
//! each a thread, joined by bounded channels.
//!
//! - Operators connected one-to-one (single input, its producer's only
//!   consumer, same parallelism, no `key_by`) are **chained** into one task:
//!   a batch goes through them with no channel in between.
//! - An edge into a keyed operator **partitions** events by key group
//!   (re-keying by a JSON field first when `key_by: {field}`); an unkeyed
//!   edge between equal parallelisms forwards instance i to instance i, and
//!   otherwise spreads batches round-robin.
//! - Channels hold at most `channel_capacity` batches, so a slow sink slows
//!   the sources (**backpressure**) and memory stays bounded.
//! - Sources emit **watermarks** (highest timestamp − allowed
//!   out-of-orderness − 1); a task's watermark is the minimum over its
//!   inputs; event-time timers fire as it passes them, and processing-time
//!   timers on the wall clock. At the end of the input every event-time
//!   timer fires.
//! - An event an operator fails on is handled by the operator's `on_error`:
//!   `fail` stops the topology, `skip` counts it, `dead-letter` hands it,
//!   with the operator and error, to the dead-letter binding. A trapped
//!   instance is re-created and processing goes on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_topology::{
    ErrorPolicyDoc, KeyBy, LatePolicyDoc, ModuleCheck, Problem, Severity, TopologyDoc,
    validate_topology,
};
use weir_types::{Batch, DEFAULT_KEY_GROUPS, Event, KeyGroupRange, key_group_of};
use weir_wasm::{
    FiredTimer, InstanceError, MemoryState, OperatorInstance, OperatorModule, OperatorState,
    TimeDomain,
};

use crate::call::process_isolated;
use crate::metrics::{InstanceMetrics, MetricsRegistry, MetricsSnapshot};

/// Events of a source, in order; an `Err` stops the topology.
pub type SourceIter = Box<dyn Iterator<Item = Result<Event, String>> + Send>;
/// Where a sink's batches go.
pub type SinkFn = Box<dyn FnMut(&Batch) -> Result<(), String> + Send>;
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

/// Opens the keyed state of one operator instance.
pub trait StateProvider: Send + Sync {
    fn open(
        &self,
        topology: &str,
        operator: &str,
        owned: KeyGroupRange,
    ) -> Result<Box<dyn OperatorState>, String>;
}

/// What the topology's sources read and its sinks write, and where its
/// state lives (in memory when `state` is `None`).
#[derive(Default)]
pub struct Bindings {
    pub sources: HashMap<String, SourceIter>,
    pub sinks: HashMap<String, SinkFn>,
    pub dead_letter: Option<DeadLetterFn>,
    pub state: Option<Box<dyn StateProvider>>,
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
    #[error("a task stopped unexpectedly: {0}")]
    Internal(String),
}

/// What a finished run did, per operator instance and source.
#[derive(Debug, Clone, Default)]
pub struct TopologyReport {
    /// `(operator, instance index, metrics)`.
    pub operators: Vec<(String, usize, MetricsSnapshot)>,
    /// `(source, events read)`.
    pub sources: Vec<(String, u64)>,
}

enum Msg {
    Batch(Batch),
    Watermark(i64),
    End,
}

/// A message and the id of the task instance that sent it.
struct Envelope {
    from: usize,
    msg: Msg,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How a producer's output reaches one consumer.
#[derive(Clone)]
enum RouteKind {
    /// To the consumer instance with the producer's index.
    Forward,
    /// Batches round-robin over the consumer's instances.
    Rebalance,
    /// By key group of the key (or of a JSON field, which becomes the key).
    Keyed {
        field: Option<String>,
        groups: u16,
        /// Consumer instance of each key group.
        owner: Arc<Vec<u16>>,
    },
}

#[derive(Clone)]
struct Route {
    kind: RouteKind,
    targets: Vec<SyncSender<Envelope>>,
}

/// The outputs of one producing task instance.
struct Outputs {
    id: usize,
    index: usize,
    routes: Vec<Route>,
    next: usize,
    metrics: Option<Arc<InstanceMetrics>>,
}

/// The key of `field` in a JSON object value: a string's text, any other
/// value's JSON text; `None` when the value is not an object with it.
fn field_key(value: &[u8], field: &str) -> Option<Vec<u8>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value).ok()?;
    Some(match map.get(field)? {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    })
}

impl Outputs {
    fn send(&self, target: &SyncSender<Envelope>, msg: Msg) -> Result<(), ()> {
        let start = Instant::now();
        let result = target.send(Envelope { from: self.id, msg }).map_err(|_| ());
        if let Some(m) = &self.metrics {
            InstanceMetrics::add(&m.blocked_nanos, start.elapsed().as_nanos() as u64);
        }
        result
    }

    /// Sends a batch along every route. `Err` means a consumer is gone (the
    /// topology is stopping).
    fn batch(&mut self, batch: Batch) -> Result<(), ()> {
        if batch.is_empty() {
            return Ok(());
        }
        let routes = self.routes.clone();
        let last = routes.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (r, route) in routes.iter().enumerate() {
            // The last route takes the batch itself; the others a copy.
            let b = if r == last {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            match &route.kind {
                RouteKind::Forward => {
                    let t = self.index.min(route.targets.len() - 1);
                    self.send(&route.targets[t], Msg::Batch(b))?;
                }
                RouteKind::Rebalance => {
                    let t = self.next % route.targets.len();
                    self.next += 1;
                    self.send(&route.targets[t], Msg::Batch(b))?;
                }
                RouteKind::Keyed {
                    field,
                    groups,
                    owner,
                } => {
                    let mut parts: Vec<Batch> = vec![Batch::default(); route.targets.len()];
                    for e in b.iter() {
                        let rekeyed = field.as_ref().map(|f| field_key(e.value, f));
                        let key: Option<&[u8]> = match &rekeyed {
                            Some(k) => k.as_deref(),
                            None => e.key,
                        };
                        let t = match key {
                            Some(k) => owner[key_group_of(k, *groups).0 as usize] as usize,
                            None => 0,
                        };
                        let part = &mut parts[t];
                        let index = part.len() as u32;
                        part.headers.extend(
                            e.headers
                                .iter()
                                .map(|(_, n, v)| (index, n.clone(), v.clone())),
                        );
                        part.push(key, e.value, e.timestamp);
                    }
                    for (t, part) in parts.into_iter().enumerate() {
                        if !part.is_empty() {
                            self.send(&route.targets[t], Msg::Batch(part))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a watermark or the end to every consumer instance this
    /// producer feeds.
    fn broadcast(&self, make: impl Fn() -> Msg) -> Result<(), ()> {
        for route in &self.routes {
            match route.kind {
                RouteKind::Forward => {
                    let t = self.index.min(route.targets.len() - 1);
                    self.send(&route.targets[t], make())?;
                }
                _ => {
                    for target in &route.targets {
                        self.send(target, make())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Shared stop flag and first error of a run.
#[derive(Default)]
struct Abort {
    stopped: AtomicBool,
    error: Mutex<Option<EngineError>>,
}

impl Abort {
    fn fail(&self, error: EngineError) {
        if let Ok(mut slot) = self.error.lock()
            && slot.is_none()
        {
            tracing::error!(error = %error, "topology stopping");
            *slot = Some(error);
        }
        self.stopped.store(true, Ordering::SeqCst);
    }
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// One operator of a chain in one task instance.
struct ChainOp {
    name: String,
    instance: OperatorInstance,
    policy: ErrorPolicyDoc,
    late: LatePolicyDoc,
    metrics: Arc<InstanceMetrics>,
}

/// The inputs a task instance waits on, for watermarks and the end.
struct InputTracker {
    watermarks: BTreeMap<usize, i64>,
    ended: usize,
}

impl InputTracker {
    fn new(senders: &[usize]) -> Self {
        InputTracker {
            watermarks: senders.iter().map(|&s| (s, i64::MIN)).collect(),
            ended: 0,
        }
    }
    fn watermark(&self) -> i64 {
        self.watermarks.values().copied().min().unwrap_or(i64::MAX)
    }
    fn advance(&mut self, from: usize, wm: i64) {
        if let Some(w) = self.watermarks.get_mut(&from) {
            *w = (*w).max(wm);
        }
    }
    /// Marks an input ended; true when all have.
    fn end(&mut self, from: usize) -> bool {
        self.advance(from, i64::MAX);
        self.ended += 1;
        self.ended >= self.watermarks.len()
    }
}

struct DeadLetters(Option<Mutex<DeadLetterFn>>);

impl DeadLetters {
    fn send(&self, letter: DeadLetter) -> Result<(), EngineError> {
        match &self.0 {
            Some(f) => {
                let mut f = f
                    .lock()
                    .map_err(|_| EngineError::Internal("dead-letter lock poisoned".into()))?;
                f(&letter).map_err(EngineError::DeadLetter)
            }
            None => Err(EngineError::NoDeadLetter),
        }
    }
}

/// Runs `batch` through `ops` from operator `from` on, applying each
/// operator's error policy; returns the last operator's output.
fn run_chain(
    ops: &mut [ChainOp],
    from: usize,
    mut batch: Batch,
    watermark: i64,
    dead: &DeadLetters,
) -> Result<Batch, EngineError> {
    for op in ops.iter_mut().skip(from) {
        if batch.is_empty() {
            break;
        }
        let start = Instant::now();
        InstanceMetrics::add(&op.metrics.events_in, batch.len() as u64);
        let late = batch.timestamps.iter().filter(|&&t| t < watermark).count();
        InstanceMetrics::add(&op.metrics.late, late as u64);
        if late > 0 && op.late != LatePolicyDoc::Keep {
            let mut on_time = Batch::with_capacity(batch.len() - late, batch.values.len());
            for e in batch.iter() {
                if e.timestamp >= watermark {
                    on_time.push_ref(&e);
                } else if op.late == LatePolicyDoc::DeadLetter {
                    InstanceMetrics::add(&op.metrics.dead_lettered, 1);
                    dead.send(DeadLetter {
                        operator: op.name.clone(),
                        error: format!(
                            "late event: timestamp {} is behind the watermark {watermark}",
                            e.timestamp
                        ),
                        failed_at: now_ms(),
                        event: e.to_event(),
                    })?;
                }
            }
            batch = on_time;
            if batch.is_empty() {
                continue;
            }
        }
        let isolated = process_isolated(&mut op.instance, &mut batch, watermark, now_ms())?;
        op.metrics.record_batch(start.elapsed());
        op.metrics.add_guest(op.instance.take_counters());
        InstanceMetrics::add(&op.metrics.errors, isolated.failed.len() as u64);
        for failed in isolated.failed {
            match op.policy {
                ErrorPolicyDoc::Fail => {
                    return Err(EngineError::EventFailed {
                        operator: op.name.clone(),
                        message: failed.message,
                    });
                }
                ErrorPolicyDoc::Skip => {
                    tracing::warn!(operator = %op.name, error = %failed.message, "event skipped");
                }
                ErrorPolicyDoc::DeadLetter => {
                    InstanceMetrics::add(&op.metrics.dead_lettered, 1);
                    dead.send(DeadLetter {
                        operator: op.name.clone(),
                        error: failed.message,
                        failed_at: now_ms(),
                        event: failed.event,
                    })?;
                }
            }
        }
        InstanceMetrics::add(&op.metrics.events_out, isolated.events.len() as u64);
        batch = isolated.events;
    }
    Ok(batch)
}

/// Fires the due timers of every operator of the chain, in chain order
/// (what a timer emits goes through the operators after it); returns the
/// chain's output. Timers see the new watermark `upto` (event time); what
/// they emit travels ahead of it, so the operators after them still see
/// `before`, as a downstream task would.
fn fire_timers(
    ops: &mut [ChainOp],
    domain: TimeDomain,
    upto: i64,
    before: i64,
    dead: &DeadLetters,
) -> Result<Batch, EngineError> {
    let watermark = match domain {
        TimeDomain::EventTime => upto,
        TimeDomain::ProcessingTime => before,
    };
    let mut out = Batch::default();
    for k in 0..ops.len() {
        // Timers may register timers that are already due: bounded rounds.
        for _ in 0..1000 {
            let due = ops[k]
                .instance
                .state_mut()
                .take_due_timers(domain, upto)
                .map_err(|e| InstanceError::State {
                    operator: ops[k].name.clone(),
                    message: e.0,
                })?;
            if due.is_empty() {
                break;
            }
            let timers: Vec<FiredTimer> = due
                .into_iter()
                .map(|(time, key)| FiredTimer { domain, time, key })
                .collect();
            let emitted = match ops[k].instance.on_timer(&timers, watermark, now_ms()) {
                Ok(outcome) => {
                    for f in &outcome.failures {
                        tracing::warn!(operator = %ops[k].name, error = %f.message, "timer failed");
                    }
                    outcome.events
                }
                Err(e) if e.is_guest_fault() && ops[k].policy != ErrorPolicyDoc::Fail => {
                    tracing::warn!(operator = %ops[k].name, error = %e, "timers failed and were dropped");
                    Batch::default()
                }
                Err(e) => return Err(e.into()),
            };
            InstanceMetrics::add(&ops[k].metrics.events_out, emitted.len() as u64);
            let counted = ops[k].instance.take_counters();
            ops[k].metrics.add_guest(counted);
            let rest = run_chain(ops, k + 1, emitted, before, dead)?;
            for e in rest.iter() {
                out.push_ref(&e);
            }
        }
    }
    Ok(out)
}

/// Body of one chain instance's thread.
fn chain_task(
    mut ops: Vec<ChainOp>,
    rx: Receiver<Envelope>,
    mut inputs: InputTracker,
    mut outputs: Outputs,
    dead: Arc<DeadLetters>,
    abort: Arc<Abort>,
) -> Result<(), EngineError> {
    let mut watermark = i64::MIN;
    loop {
        if abort.stopped() {
            return Ok(());
        }
        let envelope = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                let out = fire_timers(
                    &mut ops,
                    TimeDomain::ProcessingTime,
                    now_ms(),
                    watermark,
                    &dead,
                )?;
                if outputs.batch(out).is_err() {
                    return Ok(());
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let sent = match envelope.msg {
            Msg::Batch(batch) => {
                let out = run_chain(&mut ops, 0, batch, watermark, &dead)?;
                outputs.batch(out)
            }
            Msg::Watermark(wm) => {
                inputs.advance(envelope.from, wm);
                let new = inputs.watermark();
                if new > watermark {
                    let before = std::mem::replace(&mut watermark, new);
                    for op in &ops {
                        op.metrics.watermark.store(new, Ordering::Relaxed);
                    }
                    let out = fire_timers(&mut ops, TimeDomain::EventTime, new, before, &dead)?;
                    outputs
                        .batch(out)
                        .and_then(|()| outputs.broadcast(|| Msg::Watermark(new)))
                } else {
                    Ok(())
                }
            }
            Msg::End => {
                if inputs.end(envelope.from) {
                    let out =
                        fire_timers(&mut ops, TimeDomain::EventTime, i64::MAX, watermark, &dead)?;
                    // Bounded input done: make the state durable.
                    for op in ops.iter_mut() {
                        op.instance
                            .state_mut()
                            .flush()
                            .map_err(|e| InstanceError::State {
                                operator: op.name.clone(),
                                message: e.0,
                            })?;
                    }
                    let _ = outputs.batch(out);
                    let _ = outputs.broadcast(|| Msg::End);
                    return Ok(());
                }
                let new = inputs.watermark();
                if new > watermark {
                    let before = std::mem::replace(&mut watermark, new);
                    let out = fire_timers(&mut ops, TimeDomain::EventTime, new, before, &dead)?;
                    outputs
                        .batch(out)
                        .and_then(|()| outputs.broadcast(|| Msg::Watermark(new)))
                } else {
                    Ok(())
                }
            }
        };
        if sent.is_err() {
            return Ok(());
        }
    }
}

fn source_task(
    name: String,
    mut events: SourceIter,
    max_out_of_orderness_ms: i64,
    options: ExecOptions,
    mut outputs: Outputs,
    read: Arc<AtomicU64>,
    abort: Arc<Abort>,
) -> Result<(), EngineError> {
    let batch_size = options.batch_size.max(1);
    let linger = options.linger;
    let mut max_ts = i64::MIN;
    let mut watermark = i64::MIN;
    loop {
        if abort.stopped() {
            return Ok(());
        }
        let mut batch = Batch::with_capacity(batch_size, batch_size * 128);
        let mut done = false;
        let started = Instant::now();
        while batch.len() < batch_size && (batch.is_empty() || started.elapsed() < linger) {
            match events.next() {
                Some(Ok(event)) => {
                    max_ts = max_ts.max(event.timestamp);
                    batch.push_event(&event);
                }
                Some(Err(message)) => {
                    return Err(EngineError::Source {
                        source_name: name,
                        message,
                    });
                }
                None => {
                    done = true;
                    break;
                }
            }
        }
        read.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if outputs.batch(batch).is_err() {
            return Ok(());
        }
        let wm = max_ts
            .saturating_sub(max_out_of_orderness_ms)
            .saturating_sub(1);
        if wm > watermark {
            watermark = wm;
            if outputs.broadcast(|| Msg::Watermark(wm)).is_err() {
                return Ok(());
            }
        }
        if done {
            let _ = outputs.broadcast(|| Msg::End);
            return Ok(());
        }
    }
}

fn sink_task(
    name: String,
    mut sink: SinkFn,
    rx: Receiver<Envelope>,
    mut inputs: InputTracker,
    abort: Arc<Abort>,
) -> Result<(), EngineError> {
    loop {
        if abort.stopped() {
            return Ok(());
        }
        let envelope = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        match envelope.msg {
            Msg::Batch(batch) => sink(&batch).map_err(|message| EngineError::Sink {
                sink: name.clone(),
                message,
            })?,
            Msg::Watermark(wm) => inputs.advance(envelope.from, wm),
            Msg::End => {
                if inputs.end(envelope.from) {
                    return Ok(());
                }
            }
        }
    }
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

/// Runs `doc` to the end of its sources (bounded inputs), blocking.
pub fn run_topology(
    doc: &TopologyDoc,
    modules: &Modules,
    bindings: Bindings,
    options: ExecOptions,
) -> Result<TopologyReport, EngineError> {
    run_topology_observed(doc, modules, bindings, options, &MetricsRegistry::default())
}

/// [`run_topology`], registering every operator instance's metrics in
/// `metrics` so they can be read while the topology runs.
pub fn run_topology_observed(
    doc: &TopologyDoc,
    modules: &Modules,
    mut bindings: Bindings,
    options: ExecOptions,
    metrics: &MetricsRegistry,
) -> Result<TopologyReport, EngineError> {
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
    drop(chain_tx);
    drop(sink_tx);

    // Bindings.
    let source_iters = doc
        .sources
        .iter()
        .map(|s| take_binding(&mut bindings.sources, &s.name, "source"))
        .collect::<Result<Vec<_>, _>>()?;
    let sink_fns = doc
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

    // Operator instances (instantiated before any thread starts, so a bad
    // config fails the run cleanly).
    let mut chain_ops: Vec<Vec<Vec<ChainOp>>> = Vec::new();
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
                let state: Box<dyn OperatorState> = match &bindings.state {
                    Some(provider) => {
                        provider
                            .open(&doc.name, &o.name, range)
                            .map_err(|message| {
                                EngineError::Instance(InstanceError::State {
                                    operator: o.name.clone(),
                                    message,
                                })
                            })?
                    }
                    None => Box::new(MemoryState::new()),
                };
                let instance =
                    OperatorInstance::new(&modules[&o.module], &o.name, &config, state, range)?;
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

    let abort = Arc::new(Abort::default());
    let source_counts: Vec<Arc<AtomicU64>> = doc
        .sources
        .iter()
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (c, (instances, outputs)) in chain_ops.into_iter().zip(chain_outputs).enumerate() {
            for (inst, (ops, mut out)) in instances.into_iter().zip(outputs).enumerate() {
                out.metrics = ops.last().map(|o| o.metrics.clone());
                let rx = chain_rx[c][inst].take();
                let inputs = InputTracker::new(&chain_senders[c][inst]);
                let (dead, abort) = (dead.clone(), abort.clone());
                let name = format!("{}#{inst}", doc.operators[chains[c][0]].name);
                handles.push(std::thread::Builder::new().name(name.clone()).spawn_scoped(
                    scope,
                    move || {
                        let _span = tracing::info_span!("operator_task", task = %name).entered();
                        let Some(rx) = rx else { return };
                        if let Err(e) = chain_task(ops, rx, inputs, out, dead, abort.clone()) {
                            abort.fail(e);
                        }
                    },
                ));
            }
        }
        for (s, (sink, rx)) in sink_fns.into_iter().zip(sink_rx.iter_mut()).enumerate() {
            let rx = rx.take();
            let inputs = InputTracker::new(&sink_senders[s]);
            let abort = abort.clone();
            let name = doc.sinks[s].name.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("sink-{name}"))
                    .spawn_scoped(scope, move || {
                        let Some(rx) = rx else { return };
                        if let Err(e) = sink_task(name, sink, rx, inputs, abort.clone()) {
                            abort.fail(e);
                        }
                    }),
            );
        }
        for (s, (events, out)) in source_iters.into_iter().zip(source_outputs).enumerate() {
            let source = &doc.sources[s];
            let ooo = source
                .watermark
                .map(|w| w.max_out_of_orderness_ms)
                .unwrap_or(0);
            let (abort, read) = (abort.clone(), source_counts[s].clone());
            let name = source.name.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("source-{name}"))
                    .spawn_scoped(scope, move || {
                        if let Err(e) =
                            source_task(name, events, ooo, options, out, read, abort.clone())
                        {
                            abort.fail(e);
                        }
                    }),
            );
        }
        for h in handles {
            match h {
                Ok(h) => {
                    if h.join().is_err() {
                        abort.fail(EngineError::Internal("a task panicked".into()));
                    }
                }
                Err(e) => abort.fail(EngineError::Internal(format!("cannot start a task: {e}"))),
            }
        }
    });
    if let Some(error) = abort.error.lock().ok().and_then(|mut e| e.take()) {
        return Err(error);
    }
    Ok(TopologyReport {
        operators: metrics.snapshot(),
        sources: doc
            .sources
            .iter()
            .zip(&source_counts)
            .map(|(s, c)| (s.name.clone(), c.load(Ordering::Relaxed)))
            .collect(),
    })
}
