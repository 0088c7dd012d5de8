//! The topology executor: validates a document, plans it (`plan.rs`),
//! restores its newest checkpoint, and wires the plan into channels, task
//! instances, and adds the tasks to the worker pool (`pool.rs`). What each
//! part does lives elsewhere: chains and
//! routes in `plan.rs` and `routes.rs`, the tasks in `tasks.rs`, the error
//! policy in `policy.rs`, checkpoints in `checkpoint.rs`.
//!
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
//! - With durable state and checkpoints ([`StateConfig`]), a run first
//!   restores the newest checkpoint (state, source positions, watermarks,
//!   sink output) and a coordinator thread takes checkpoints.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_io::{Bindings, CheckpointRef, FailureContext, Position, Sink, Source};
use weir_state::{KeyedState, StateBudget, StateDb};
use weir_topology::{
    ErrorPolicyDoc, LatePolicyDoc, ModuleCheck, OperatorLimitsDoc, Problem, Severity, TopologyDoc,
    ValidateOptions, validate_topology_with,
};
use weir_types::KeyGroupRange;
use weir_wasm::{MemoryState, OperatorInstance, OperatorModule, OperatorState, SandboxLimits};

use crate::align::{Aligner, InputTracker};
use crate::chan::{Inbox, Outlet};
use crate::checkpoint::{
    Carried, CheckpointConfig, CheckpointInfo, Coordinator, FailedCheckpoints, Request, Restored,
    Summary, TaskInfo, check_restore, lineage_of, restore,
};
use crate::error::EngineError;
use crate::metrics::{Footprint, MetricsRegistry};
use crate::plan::{Consumer, Plan, Producer, plan_topology};
use crate::policy::DeadLetters;
use crate::pool::{Lane, Task, TaskGroup, TaskWaker, WorkerPool};
use crate::protocol::{Abort, AckLink, Control};
use crate::routes::{Outputs, Route};
use crate::tasks::{ChainOp, ChainTask, IdleUnload, SinkTask, SourceTask};
use crate::tracker::SourceMeta;

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
    /// An operator instance that has had no message and no timer for this
    /// long is dropped, freeing its linear memory; its state stays, and the
    /// next event or timer instantiates it again, running `init` (as after
    /// a trap). `None`: instances live as long as the run.
    pub unload_idle: Option<Duration>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            batch_size: 1024,
            channel_capacity: 8,
            linger: Duration::from_millis(2),
            unload_idle: None,
        }
    }
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
        WorkerPool::shared(),
    )?
    .join()
}

/// A started topology: its tasks and how to reach them.
pub(crate) struct Launched {
    pub(crate) topology: String,
    pub(crate) key_groups: u16,
    /// Its tasks on the pool: the run is over when none is left.
    pub(crate) group: Arc<TaskGroup>,
    /// Keeps the pool's threads while the run lives.
    pub(crate) pool: WorkerPool,
    /// The checkpoint coordinator's task, woken by requests.
    pub(crate) coordinator: Option<TaskWaker>,
    /// What its operators hold in memory.
    pub(crate) footprint: Arc<Footprint>,
    /// `(when, its worker time, the pool's)` at the last CPU-share sample,
    /// and that share.
    pub(crate) cpu_window: Mutex<CpuWindow>,
    pub(crate) abort: Arc<Abort>,
    pub(crate) control: Arc<Control>,
    pub(crate) metrics: Arc<MetricsRegistry>,
    pub(crate) source_counts: Vec<(String, Arc<AtomicU64>)>,
    /// Requests to the checkpoint coordinator (when checkpointing).
    pub(crate) requests: Option<Sender<Request>>,
    pub(crate) history: Arc<Mutex<Vec<CheckpointInfo>>>,
    /// Interval checkpoints skipped because nothing had changed.
    pub(crate) skipped: Arc<AtomicU64>,
    /// Checkpoints aborted because their commit failed.
    pub(crate) failed: Arc<FailedCheckpoints>,
    /// Operator → (parallelism, input channel of each instance of its
    /// chain), for state queries.
    pub(crate) query_routes: HashMap<String, (u16, Vec<Outlet>)>,
    /// Operator → the value states its module declared, to tell apart
    /// what a state read that found nothing got wrong.
    pub(crate) declared: HashMap<String, Vec<String>>,
    pub(crate) state: Option<StateConfig>,
}

/// The window a topology's CPU share is measured over.
#[derive(Debug)]
pub(crate) struct CpuWindow {
    pub(crate) at: std::time::Instant,
    pub(crate) own: u64,
    pub(crate) pool: u64,
    pub(crate) share: f64,
}

impl Launched {
    /// Waits for every task; the first error of the run, or its report.
    pub(crate) fn join(self) -> Result<TopologyReport, EngineError> {
        self.group.wait();
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
        if !self.group.is_finished() {
            self.control.stop_at_once();
            self.abort.stop();
        }
    }
}

/// Checks `doc` against the provided modules: every error-level problem.
/// Kafka brokers are not checked here: whoever bound the sources and sinks
/// resolved them (a block without `brokers` took the caller's default).
fn validate(doc: &TopologyDoc, modules: &Modules) -> Result<(), EngineError> {
    let options = ValidateOptions {
        kafka_brokers: true,
        ..ValidateOptions::default()
    };
    let problems: Vec<Problem> = validate_topology_with(doc, &ProvidedModules(modules), options)
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Invalid(problems))
    }
}

/// The operator instances of every chain instance (made before any thread
/// starts, so a bad config fails the run cleanly), and the value states
/// each operator's module declares.
type Instances = (Vec<Vec<Vec<ChainOp>>>, HashMap<String, Vec<String>>);

fn create_instances(
    doc: &TopologyDoc,
    plan: &Plan,
    modules: &Modules,
    state: Option<&StateConfig>,
    metrics: &MetricsRegistry,
) -> Result<Instances, EngineError> {
    let mut chain_ops = Vec::new();
    let mut declared = HashMap::new();
    for chain in &plan.chains {
        let p = chain.parallelism;
        let mut instances = Vec::new();
        for inst in 0..p {
            let range = KeyGroupRange::for_instance(inst as u16, p as u16, plan.key_groups);
            let mut ops = Vec::new();
            for &i in &chain.operators {
                let o = &doc.operators[i];
                let config = o
                    .config
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "{}".into());
                let op_state: Box<dyn OperatorState> = match state {
                    Some(s) => {
                        let mut keyed =
                            KeyedState::open(&s.db, &doc.name, &o.name, range, s.budget)?;
                        // Restored state back in memory in one sequential
                        // read, before the first event (up to the budget).
                        let started = std::time::Instant::now();
                        let loaded = keyed.preload()?;
                        if loaded.rows > 0 {
                            tracing::info!(
                                operator = %o.name,
                                instance = inst,
                                rows = loaded.rows,
                                bytes = loaded.bytes,
                                complete = loaded.complete,
                                ms = started.elapsed().as_millis() as u64,
                                "state preloaded"
                            );
                        }
                        if s.checkpoints.is_some() {
                            Box::new(keyed.checkpointed())
                        } else {
                            Box::new(keyed)
                        }
                    }
                    None => Box::new(MemoryState::new()),
                };
                let module = &modules[&o.module];
                // An operator's own limits: a copy of the module with them.
                let own = o.limits.as_ref().map(|l| {
                    module
                        .clone()
                        .with_limits(sandbox_limits(l, *module.limits()))
                });
                let instance = OperatorInstance::in_topology(
                    &doc.name,
                    own.as_ref().unwrap_or(module),
                    &o.name,
                    &config,
                    op_state,
                    range,
                )?;
                declared.insert(o.name.clone(), instance.value_states().to_vec());
                ops.push(ChainOp {
                    name: o.name.clone(),
                    instance,
                    policy: o.on_error.unwrap_or_default(),
                    late: o.on_late.unwrap_or_default(),
                    metrics: metrics.register(&o.name, inst),
                    context: FailureContext {
                        topology: Some(doc.name.clone()),
                        instance: u32::try_from(inst).ok(),
                        module: Some(module.label().unwrap_or(&o.module).to_string()),
                        digest: Some(module.info().digest.clone()),
                        ..FailureContext::default()
                    },
                });
            }
            instances.push(ops);
        }
        chain_ops.push(instances);
    }
    Ok((chain_ops, declared))
}

/// `base` with the limits an operator's document sets instead (also how
/// the server's flags set its own).
pub fn sandbox_limits(own: &OperatorLimitsDoc, base: SandboxLimits) -> SandboxLimits {
    let bytes = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    SandboxLimits {
        memory_bytes: own
            .memory_mb
            .map_or(base.memory_bytes, |mb| bytes(mb.saturating_mul(1 << 20))),
        call_budget: own
            .call_budget_ms
            .map_or(base.call_budget, Duration::from_millis),
        max_state_value_bytes: own
            .max_state_value_bytes
            .map_or(base.max_state_value_bytes, bytes),
        max_output_bytes_per_call: own
            .max_output_bytes_per_call
            .map_or(base.max_output_bytes_per_call, bytes),
        ..base
    }
}

/// Splits the sinks between the coordinator (exactly-once sinks under
/// checkpoints, cut back to the restored checkpoint with its output
/// published again) and the sink tasks (the rest, written as they come).
type SplitSinks = (
    Vec<(String, Option<Box<dyn Sink>>)>,
    Vec<Option<Box<dyn Sink>>>,
);

fn split_sinks(
    doc: &TopologyDoc,
    sinks: Vec<Box<dyn Sink>>,
    checkpointed: bool,
    restored: Option<&Restored>,
    lineage: &str,
) -> Result<SplitSinks, EngineError> {
    let mut coordinator_sinks = Vec::new();
    let mut task_sinks = Vec::new();
    for (s, mut sink) in doc.sinks.iter().zip(sinks) {
        if checkpointed && sink.exactly_once() {
            if let Some(r) = restored.filter(|r| !r.from_savepoint) {
                let base = r.meta.sinks.get(&s.name).copied().unwrap_or(0);
                let empty = weir_types::Batch::default();
                let pending = r.pending.get(&s.name).unwrap_or(&empty);
                let at = CheckpointRef {
                    lineage: lineage.to_owned(),
                    id: r.meta.id,
                };
                sink.recover(&at, base, pending)
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
    Ok((coordinator_sinks, task_sinks))
}

/// The channels into every consumer instance.
struct Channels {
    /// Per chain, per instance.
    chain_tx: Vec<Vec<Outlet>>,
    chain_rx: Vec<Vec<Inbox>>,
    sink_tx: Vec<Outlet>,
    sink_rx: Vec<Inbox>,
}

impl Channels {
    fn new(plan: &Plan, capacity: usize) -> Self {
        let (chain_tx, chain_rx) = plan
            .chains
            .iter()
            .map(|c| {
                (0..c.parallelism)
                    .map(|_| crate::chan::channel(capacity))
                    .unzip()
            })
            .unzip();
        let (sink_tx, sink_rx) = plan
            .sink_senders
            .iter()
            .map(|_| crate::chan::channel(capacity))
            .unzip();
        Channels {
            chain_tx,
            chain_rx,
            sink_tx,
            sink_rx,
        }
    }

    /// The outputs of each instance of `producer`, whose side outputs are
    /// `declared` (in output order; none for a source). Feeds of side
    /// outputs not declared were refused before ([`check_side_outputs`]).
    fn outputs(&self, producer: &Producer, declared: &[String]) -> Vec<Outputs> {
        let routes: Vec<Route> = producer
            .routes
            .iter()
            .map(|r| Route {
                kind: r.kind.clone(),
                targets: match r.consumer {
                    Consumer::Chain(c) => self.chain_tx[c].clone(),
                    Consumer::Sink(s) => vec![self.sink_tx[s].clone()],
                },
                feeds: r
                    .feeds
                    .iter()
                    .filter_map(|f| {
                        let output = match &f.output {
                            None => 0,
                            Some(name) => declared.iter().position(|d| d == name)? + 1,
                        };
                        Some((output, f.input))
                    })
                    .collect(),
            })
            .collect();
        (0..producer.parallelism)
            .map(|index| Outputs::new(producer.first_id + index, index, routes.clone()))
            .collect()
    }
}

/// Checks that every side output a document reads (`fraud.alerts`) is one
/// its operator declared at `init` (`outputs`: operator → declared side
/// outputs). Validating a document cannot know this, since an operator
/// declares its outputs when it starts (they may depend on its config);
/// so it is checked here, once every instance is made and before any
/// thread starts, with the document path of each bad input.
fn check_side_outputs(
    doc: &TopologyDoc,
    outputs: &HashMap<String, (Vec<String>, &'static str)>,
) -> Result<(), EngineError> {
    let mut problems = Vec::new();
    let readers = doc
        .operators
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("operators[{i}].input"), &o.input))
        .chain(
            doc.sinks
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("sinks[{i}].input"), &s.input)),
        );
    let resolver = doc.inputs_resolver();
    for (path, inputs) in readers {
        let names = inputs.names();
        for (j, name) in names.iter().enumerate() {
            let r = resolver.resolve(name);
            let Some(output) = r.output else { continue };
            let Some((declared, version)) = outputs.get(r.node) else {
                continue;
            };
            if declared.iter().any(|d| d == output) {
                continue;
            }
            let at = match inputs {
                weir_topology::Inputs::One(_) => path.clone(),
                weir_topology::Inputs::Many(_) => format!("{path}[{j}]"),
            };
            let has = if declared.is_empty() {
                format!(
                    "it declares no side outputs (its module is built for weir:operator@{version})"
                )
            } else {
                format!("it declares {declared:?}")
            };
            problems.push(Problem {
                path: at,
                message: format!(
                    "operator {:?} has no side output {output:?}: {has}; read one it declares, or its main output {:?}",
                    r.node, r.node
                ),
                severity: Severity::Error,
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Invalid(problems))
    }
}

/// Plans `doc`, restores its newest checkpoint (with checkpoints), and
/// adds its tasks to `pool`.
pub(crate) fn launch(
    doc: &TopologyDoc,
    modules: &Modules,
    mut bindings: Bindings,
    options: ExecOptions,
    state: Option<StateConfig>,
    metrics: Arc<MetricsRegistry>,
    pool: &WorkerPool,
) -> Result<Launched, EngineError> {
    validate(doc, modules)?;
    let plan = plan_topology(doc);
    let groups = plan.key_groups;
    let channels = Channels::new(&plan, options.channel_capacity);
    let source_outputs: Vec<Outputs> = plan
        .sources
        .iter()
        .flat_map(|p| channels.outputs(p, &[]))
        .collect();

    let sources: Vec<Box<dyn Source>> = doc
        .sources
        .iter()
        .map(|s| take_binding(&mut bindings.sources, &s.name, "source"))
        .collect::<Result<Vec<_>, _>>()?;
    let sinks: Vec<Box<dyn Sink>> = doc
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
    let (chain_ops, declared) = create_instances(doc, &plan, modules, state.as_ref(), &metrics)?;
    // Every operator's declared side outputs (instance 0 speaks for all).
    let side_outputs: HashMap<String, (Vec<String>, &'static str)> = chain_ops
        .iter()
        .filter_map(|instances| instances.first())
        .flatten()
        .map(|op| {
            let i = &op.instance;
            (
                op.name.clone(),
                (i.outputs().to_vec(), i.contract_version()),
            )
        })
        .collect();
    check_side_outputs(doc, &side_outputs)?;
    let chain_outputs: Vec<Vec<Outputs>> = plan
        .chains
        .iter()
        .map(|c| {
            let last = &doc.operators[c.operators[c.operators.len() - 1]].name;
            let declared = side_outputs
                .get(last)
                .map_or(&[][..], |(d, _)| d.as_slice());
            channels.outputs(&c.output, declared)
        })
        .collect();
    let Channels {
        chain_tx,
        chain_rx,
        sink_tx,
        sink_rx,
    } = channels;
    drop(sink_tx);
    if let Some(r) = &restored {
        check_restore(r, groups, &declared)?;
    }
    let restored_meta = restored.as_ref().map(|r| &r.meta);
    let lineage = lineage_of(restored.as_ref());
    let (coordinator_sinks, task_sinks) = split_sinks(
        doc,
        sinks,
        checkpoints.is_some(),
        restored.as_ref(),
        &lineage,
    )?;

    let abort = Arc::new(Abort::default());
    let control = Arc::new(Control::default());
    let group = Arc::new(TaskGroup::default());
    let footprint = Arc::new(Footprint::default());
    let last_id = restored_meta.map_or(0, |m| m.id);
    control
        .requested
        .store(last_id, std::sync::atomic::Ordering::SeqCst);
    control
        .committed
        .store(last_id, std::sync::atomic::Ordering::SeqCst);
    let (ack_tx, ack_rx) = channel();
    let coordinator_waker = pool.waker(Lane::Blocking);
    let link = |index: usize| {
        checkpoints.map(|_| AckLink {
            index,
            acks: ack_tx.clone(),
            coordinator: coordinator_waker.clone(),
        })
    };
    let spawn = |waker: &TaskWaker, name: String, task: Box<dyn Task>| {
        abort.tasks.add(waker.clone());
        pool.spawn(waker, name, task, &group, &abort);
    };
    let mut task_infos = Vec::new();
    let mut query_routes = HashMap::new();
    let chains = plan
        .chains
        .iter()
        .zip(chain_ops)
        .zip(chain_outputs)
        .zip(chain_rx);
    for (c, (((chain, instances), outputs), rxs)) in chains.enumerate() {
        let head = &doc.operators[chain.operators[0]];
        let p = chain.parallelism;
        for &op in &chain.operators {
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
        let instances = instances.into_iter().zip(outputs).zip(rxs);
        for (inst, ((ops, mut out), rx)) in instances.enumerate() {
            let waker = pool.waker(Lane::Compute);
            rx.set_consumer(waker.clone());
            out.waker = Some(waker.clone());
            out.metrics = ops.last().map(|o| o.metrics.clone());
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
                inputs: InputTracker::new(&chain.senders[inst]),
                outputs: out,
                dead: dead.clone(),
                abort: abort.clone(),
                control: control.clone(),
                watermark,
                aligner: Aligner::new(),
                checkpoints: link(task_infos.len() - 1),
                waker: waker.clone(),
                ending: false,
                footprint: footprint.clone(),
                reported: (0, 0),
                idle: options.unload_idle.map(IdleUnload::new),
                retries: std::collections::VecDeque::new(),
            };
            spawn(&waker, format!("{}#{inst}", head.name), Box::new(task));
        }
    }
    drop(chain_tx);
    for (s, (sink, rx)) in task_sinks.into_iter().zip(sink_rx).enumerate() {
        // A sink that writes as batches come waits on its target: it runs
        // on the blocking workers.
        let lane = if sink.is_some() {
            Lane::Blocking
        } else {
            Lane::Compute
        };
        let waker = pool.waker(lane);
        rx.set_consumer(waker.clone());
        let task = SinkTask {
            name: doc.sinks[s].name.clone(),
            sink,
            rx,
            inputs: InputTracker::new(&plan.sink_senders[s]),
            abort: abort.clone(),
            checkpoints: link(s),
            pending: weir_types::Batch::default(),
            aligner: Aligner::new(),
            ending: false,
        };
        spawn(
            &waker,
            format!("sink-{}", doc.sinks[s].name),
            Box::new(task),
        );
    }
    let mut source_counts = Vec::new();
    for (s, (source, mut out)) in sources.into_iter().zip(source_outputs).enumerate() {
        let doc_source = &doc.sources[s];
        let lane = if source.blocking() {
            Lane::Blocking
        } else {
            Lane::Compute
        };
        let waker = pool.waker(lane);
        out.waker = Some(waker.clone());
        control.sources.add(waker.clone());
        let start = restored_meta
            .filter(|_| !checkpoints.is_some_and(|c| c.reset_sources))
            .and_then(|m| m.sources.get(&doc_source.name))
            .cloned()
            .unwrap_or(SourceMeta {
                position: Position::Count(0),
                max_ts: i64::MIN,
            });
        // Event time reached elsewhere (a cluster's changelog), never an
        // end of input.
        let reached = bindings
            .event_times
            .get(&doc_source.name)
            .copied()
            .filter(|&t| t != i64::MAX)
            .unwrap_or(i64::MIN);
        let read = Arc::new(AtomicU64::new(0));
        source_counts.push((doc_source.name.clone(), read.clone()));
        let task = SourceTask {
            name: doc_source.name.clone(),
            origin: Arc::from(doc_source.name.as_str()),
            source,
            count: start.position.count().unwrap_or(0),
            start: start.position,
            max_ts: start.max_ts.max(reached),
            uncommitted: std::collections::VecDeque::new(),
            max_out_of_orderness_ms: doc_source
                .watermark
                .map(|w| w.max_out_of_orderness_ms)
                .unwrap_or(0),
            batch_size: options.batch_size,
            linger: options.linger,
            outputs: out,
            read,
            abort: abort.clone(),
            control: control.clone(),
            injected: last_id,
            checkpoints: link(s),
            watermark: None,
            waker: waker.clone(),
            idle_pause: Duration::from_millis(1),
            caught_up: false,
            ending: false,
        };
        spawn(
            &waker,
            format!("source-{}", doc_source.name),
            Box::new(task),
        );
    }
    drop(ack_tx);

    let history = Arc::new(Mutex::new(Vec::new()));
    let skipped = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(FailedCheckpoints::default());
    let mut requests = None;
    let mut coordinator_task = None;
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
            lineage,
            committed_sources: restored_meta.map(|m| m.sources.clone()).unwrap_or_default(),
            skipped: skipped.clone(),
            failed: failed.clone(),
            carried: Carried::default(),
            summary: Summary::new(std::time::Instant::now()),
        };
        control.coordinator.add(coordinator_waker.clone());
        spawn(
            &coordinator_waker,
            format!("checkpoints-{}", doc.name),
            Box::new(coordinator.into_task(coordinator_waker.clone())),
        );
        coordinator_task = Some(coordinator_waker);
    }
    Ok(Launched {
        topology: doc.name.clone(),
        key_groups: groups,
        group,
        pool: pool.clone(),
        coordinator: coordinator_task,
        footprint,
        cpu_window: Mutex::new(CpuWindow {
            at: std::time::Instant::now(),
            own: 0,
            pool: pool.busy().as_nanos() as u64,
            share: 0.0,
        }),
        abort,
        control,
        metrics,
        source_counts,
        requests,
        history,
        skipped,
        failed,
        query_routes,
        declared,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_own_limits_replace_only_those_it_sets() {
        let base = SandboxLimits::default();
        let own = OperatorLimitsDoc {
            memory_mb: Some(3),
            call_budget_ms: Some(40),
            ..OperatorLimitsDoc::default()
        };
        let limits = sandbox_limits(&own, base);
        assert_eq!(limits.memory_bytes, 3 << 20);
        assert_eq!(limits.call_budget, Duration::from_millis(40));
        assert_eq!(limits.max_state_value_bytes, base.max_state_value_bytes);
        assert_eq!(
            limits.max_output_bytes_per_call,
            base.max_output_bytes_per_call
        );
        assert_eq!(limits.init_budget, base.init_budget);
        // A size past the address space saturates instead of wrapping.
        let huge = OperatorLimitsDoc {
            memory_mb: Some(u64::MAX),
            ..OperatorLimitsDoc::default()
        };
        assert_eq!(sandbox_limits(&huge, base).memory_bytes, usize::MAX);
    }
}
