//! The task threads of a running topology: sources, chains of operator
//! instances, sinks. They talk by [`Msg`]s over bounded channels.
//!
//! Checkpoint barriers ([`Msg::Barrier`]) are injected by sources when the
//! coordinator asks (`Control::requested`). A task with several inputs
//! **aligns** them: once an input delivered barrier n, its later messages
//! are held back until every input has; then the task snapshots its
//! operators' state, acknowledges to the coordinator and forwards the
//! barrier. An input that has ended counts as aligned. The end of the
//! input ([`Msg::End`]) fires every event-time timer and then acts as a
//! last barrier (`FINAL`); [`Msg::Stop`] ends a run without that (stop,
//! stop with savepoint).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_topology::{ErrorPolicyDoc, LatePolicyDoc};
use weir_types::Batch;
use weir_wasm::{FiredTimer, InstanceError, OperatorInstance, TimeDomain};

use crate::call::process_isolated;
use crate::checkpoint::{Ack, FINAL};
use crate::executor::{DeadLetter, DeadLetterFn, EngineError, ExecOptions};
use crate::io::{Pull, Sink, Source};
use crate::job::StateValue;
use crate::metrics::InstanceMetrics;
use crate::routes::Outputs;

pub(crate) enum Msg {
    Batch(Batch),
    Watermark(i64),
    /// Checkpoint barrier n.
    Barrier(u64),
    End,
    /// The run stops here (after a stop barrier): no end-of-input work.
    Stop,
    /// A read of an operator's state, from outside the topology.
    Query(Query),
}

/// A message and the id of the task instance that sent it.
pub(crate) struct Envelope {
    pub(crate) from: usize,
    pub(crate) msg: Msg,
}

/// The sender id of messages from outside the topology (queries).
pub(crate) const OUTSIDE: usize = usize::MAX;

pub(crate) struct Query {
    pub(crate) operator: String,
    pub(crate) state: String,
    pub(crate) key: Vec<u8>,
    pub(crate) reply: Sender<Result<Option<StateValue>, String>>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the coordinator tells sources.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// The newest checkpoint asked for: sources inject its barrier.
    pub(crate) requested: AtomicU64,
    /// A checkpoint after whose barrier sources stop (0: none).
    pub(crate) stop_at: AtomicU64,
    /// Stop now, no checkpoint (runs without checkpoints).
    pub(crate) stop_now: AtomicBool,
}

/// Where a task acknowledges checkpoints: the coordinator, and the task's
/// index among its kind (sources, chain instances or sinks).
#[derive(Clone)]
pub(crate) struct AckLink {
    pub(crate) index: usize,
    pub(crate) acks: Sender<Ack>,
}

impl AckLink {
    fn send(&self, ack: Ack) {
        // The coordinator is gone only when the run is stopping.
        let _ = self.acks.send(ack);
    }
}

/// Shared stop flag and first error of a run.
#[derive(Default)]
pub(crate) struct Abort {
    stopped: AtomicBool,
    pub(crate) error: Mutex<Option<EngineError>>,
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
    }
    /// Stops every task without an error (the run was abandoned).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// One operator of a chain in one task instance.
pub(crate) struct ChainOp {
    pub(crate) name: String,
    pub(crate) instance: OperatorInstance,
    pub(crate) policy: ErrorPolicyDoc,
    pub(crate) late: LatePolicyDoc,
    pub(crate) metrics: Arc<InstanceMetrics>,
}

/// The inputs a task instance waits on, for watermarks, alignment and the
/// end.
pub(crate) struct InputTracker {
    watermarks: BTreeMap<usize, i64>,
    closed: BTreeSet<usize>,
    /// Whether an input stopped (rather than ended).
    stopped: bool,
}

impl InputTracker {
    pub(crate) fn new(senders: &[usize]) -> Self {
        InputTracker {
            watermarks: senders.iter().map(|&s| (s, i64::MIN)).collect(),
            closed: BTreeSet::new(),
            stopped: false,
        }
    }
    fn senders(&self) -> impl Iterator<Item = usize> + '_ {
        self.watermarks.keys().copied()
    }
    fn is_closed(&self, sender: usize) -> bool {
        self.closed.contains(&sender)
    }
    fn stopping(&self) -> bool {
        self.stopped
    }
    fn watermark(&self) -> i64 {
        self.watermarks.values().copied().min().unwrap_or(i64::MAX)
    }
    fn advance(&mut self, from: usize, wm: i64) {
        if let Some(w) = self.watermarks.get_mut(&from) {
            *w = (*w).max(wm);
        }
    }
    /// Marks an input ended (or stopped); true when all are.
    fn close(&mut self, from: usize, stopped: bool) -> bool {
        if !self.watermarks.contains_key(&from) {
            return false;
        }
        self.advance(from, i64::MAX);
        self.closed.insert(from);
        self.stopped |= stopped;
        self.closed.len() >= self.watermarks.len()
    }
}

pub(crate) struct DeadLetters(pub(crate) Option<Mutex<DeadLetterFn>>);

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

/// Holds back the messages of inputs that delivered the barrier being
/// aligned.
struct Aligner {
    id: Option<u64>,
    seen: BTreeSet<usize>,
    started: Instant,
    held: VecDeque<Envelope>,
}

impl Aligner {
    fn new() -> Self {
        Aligner {
            id: None,
            seen: BTreeSet::new(),
            started: Instant::now(),
            held: VecDeque::new(),
        }
    }

    fn blocks(&self, from: usize) -> bool {
        self.id.is_some() && self.seen.contains(&from)
    }

    /// The next message to handle: a held one that is free again, else
    /// the next from `rx` that is not held back.
    fn next(&mut self, rx: &Receiver<Envelope>) -> Result<Envelope, RecvTimeoutError> {
        if let Some(i) = self.held.iter().position(|e| !self.blocks(e.from)) {
            return Ok(self.held.remove(i).expect("position is in range"));
        }
        loop {
            let e = rx.recv_timeout(Duration::from_millis(50))?;
            if self.blocks(e.from) {
                self.held.push_back(e);
            } else {
                return Ok(e);
            }
        }
    }

    /// Barrier `id` arrived from `from`; `Some` when it is aligned.
    fn barrier(&mut self, from: usize, id: u64, inputs: &InputTracker) -> Option<(u64, Duration)> {
        if self.id != Some(id) {
            self.id = Some(id);
            self.seen.clear();
            self.started = Instant::now();
        }
        self.seen.insert(from);
        self.aligned(inputs)
    }

    /// Whether the barrier being aligned has come from every open input.
    fn aligned(&mut self, inputs: &InputTracker) -> Option<(u64, Duration)> {
        let id = self.id?;
        if inputs
            .senders()
            .all(|s| self.seen.contains(&s) || inputs.is_closed(s))
        {
            self.id = None;
            self.seen.clear();
            Some((id, self.started.elapsed()))
        } else {
            None
        }
    }
}

/// The takes of every operator's state for checkpoint `id`.
fn snapshot_ops(
    ops: &mut [ChainOp],
    id: u64,
) -> Result<Vec<(String, weir_state::StateSnapshot)>, EngineError> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops.iter_mut() {
        let taken = op
            .instance
            .state_mut()
            .snapshot(id)
            .map_err(|e| InstanceError::State {
                operator: op.name.clone(),
                message: e.0,
            })?;
        let snapshot = taken.downcast::<weir_state::StateSnapshot>().map_err(|_| {
            EngineError::Internal(format!(
                "operator `{}`: state is not checkpointable",
                op.name
            ))
        })?;
        out.push((op.name.clone(), *snapshot));
    }
    Ok(out)
}

/// Answers a state query from the chain's operators.
fn answer(ops: &mut [ChainOp], q: Query) {
    let result = match ops.iter_mut().find(|o| o.name == q.operator) {
        None => Err(format!("operator `{}` is not in this task", q.operator)),
        Some(op) => crate::job::read_state(op.instance.state_mut(), &q.state, &q.key),
    };
    let _ = q.reply.send(result);
}

/// One chain instance's thread and what it starts from.
pub(crate) struct ChainTask {
    pub(crate) ops: Vec<ChainOp>,
    pub(crate) rx: Receiver<Envelope>,
    pub(crate) inputs: InputTracker,
    pub(crate) outputs: Outputs,
    pub(crate) dead: Arc<DeadLetters>,
    pub(crate) abort: Arc<Abort>,
    /// The watermark restored from a checkpoint (`i64::MIN` otherwise).
    pub(crate) watermark: i64,
    pub(crate) checkpoints: Option<AckLink>,
}

impl ChainTask {
    /// Raises the watermark to the inputs' minimum, firing the event-time
    /// timers it passes.
    fn advance(&mut self, watermark: &mut i64) -> Result<Result<(), ()>, EngineError> {
        let new = self.inputs.watermark();
        if new <= *watermark {
            return Ok(Ok(()));
        }
        let before = std::mem::replace(watermark, new);
        for op in &self.ops {
            op.metrics.watermark.store(new, Ordering::Relaxed);
        }
        let out = fire_timers(
            &mut self.ops,
            TimeDomain::EventTime,
            new,
            before,
            &self.dead,
        )?;
        Ok(self
            .outputs
            .batch(out)
            .and_then(|()| self.outputs.broadcast(|| Msg::Watermark(new))))
    }

    /// Snapshots for checkpoint `id`, acknowledges it, forwards the barrier.
    fn checkpoint(
        &mut self,
        id: u64,
        alignment: Duration,
        watermark: i64,
    ) -> Result<Result<(), ()>, EngineError> {
        if let Some(link) = &self.checkpoints {
            let states = snapshot_ops(&mut self.ops, id)?;
            link.send(Ack::Task {
                id,
                task: link.index,
                watermark,
                states,
                alignment,
            });
        }
        Ok(self.outputs.broadcast(|| Msg::Barrier(id)))
    }

    pub(crate) fn run(mut self) -> Result<(), EngineError> {
        let mut watermark = self.watermark;
        let mut aligner = Aligner::new();
        loop {
            if self.abort.stopped() {
                return Ok(());
            }
            let envelope = match aligner.next(&self.rx) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    let out = fire_timers(
                        &mut self.ops,
                        TimeDomain::ProcessingTime,
                        now_ms(),
                        watermark,
                        &self.dead,
                    )?;
                    if self.outputs.batch(out).is_err() {
                        return Ok(());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let from = envelope.from;
            let sent = match envelope.msg {
                Msg::Batch(batch) => {
                    let out = run_chain(&mut self.ops, 0, batch, watermark, &self.dead)?;
                    self.outputs.batch(out)
                }
                Msg::Watermark(wm) => {
                    self.inputs.advance(from, wm);
                    self.advance(&mut watermark)?
                }
                Msg::Barrier(id) => match aligner.barrier(from, id, &self.inputs) {
                    Some((id, took)) => self.checkpoint(id, took, watermark)?,
                    None => Ok(()),
                },
                Msg::Query(q) => {
                    answer(&mut self.ops, q);
                    Ok(())
                }
                Msg::End | Msg::Stop => {
                    let stop = matches!(envelope.msg, Msg::Stop);
                    let all_closed = self.inputs.close(from, stop);
                    if let Some((id, took)) = aligner.aligned(&self.inputs)
                        && self.checkpoint(id, took, watermark)?.is_err()
                    {
                        return Ok(());
                    }
                    if all_closed && self.inputs.stopping() {
                        let _ = self.outputs.broadcast(|| Msg::Stop);
                        return Ok(());
                    }
                    if all_closed {
                        return self.finish(watermark);
                    }
                    self.advance(&mut watermark)?
                }
            };
            if sent.is_err() {
                return Ok(());
            }
        }
    }

    /// Every input ended: fires every event-time timer, makes the state
    /// durable (a last checkpoint acknowledgement, or a flush), ends.
    fn finish(mut self, watermark: i64) -> Result<(), EngineError> {
        let out = fire_timers(
            &mut self.ops,
            TimeDomain::EventTime,
            i64::MAX,
            watermark,
            &self.dead,
        )?;
        if self.outputs.batch(out).is_err() {
            return Ok(());
        }
        match &self.checkpoints {
            Some(link) => {
                let states = snapshot_ops(&mut self.ops, FINAL)?;
                // The watermark the inputs reached, not the end of input's
                // i64::MAX: a later run over grown input goes on from it
                // instead of finding every new event late.
                link.send(Ack::Task {
                    id: FINAL,
                    task: link.index,
                    watermark,
                    states,
                    alignment: Duration::ZERO,
                });
            }
            None => {
                for op in self.ops.iter_mut() {
                    op.instance
                        .state_mut()
                        .flush()
                        .map_err(|e| InstanceError::State {
                            operator: op.name.clone(),
                            message: e.0,
                        })?;
                }
            }
        }
        let _ = self.outputs.broadcast(|| Msg::End);
        Ok(())
    }
}

/// One source's thread and where it starts.
pub(crate) struct SourceTask {
    pub(crate) name: String,
    pub(crate) source: Box<dyn Source>,
    /// Events read before (restored from a checkpoint).
    pub(crate) position: u64,
    /// Highest timestamp read before.
    pub(crate) max_ts: i64,
    pub(crate) max_out_of_orderness_ms: i64,
    pub(crate) options: ExecOptions,
    pub(crate) outputs: Outputs,
    pub(crate) read: Arc<AtomicU64>,
    pub(crate) abort: Arc<Abort>,
    pub(crate) control: Arc<Control>,
    /// The last checkpoint whose barrier this source injected.
    pub(crate) injected: u64,
    pub(crate) checkpoints: Option<AckLink>,
}

impl SourceTask {
    fn watermark_of(&self, max_ts: i64) -> i64 {
        max_ts
            .saturating_sub(self.max_out_of_orderness_ms)
            .saturating_sub(1)
    }

    pub(crate) fn run(mut self) -> Result<(), EngineError> {
        let source_err = |name: &str, message: String| EngineError::Source {
            source_name: name.to_string(),
            message,
        };
        if self.position > 0 {
            let position = self.position;
            self.source
                .seek(position)
                .map_err(|m| source_err(&self.name, m))?;
        }
        let batch_size = self.options.batch_size.max(1);
        let linger = self.options.linger;
        let mut watermark = i64::MIN;
        if self.max_ts > i64::MIN {
            watermark = self.watermark_of(self.max_ts);
            if self
                .outputs
                .broadcast(|| Msg::Watermark(watermark))
                .is_err()
            {
                return Ok(());
            }
        }
        loop {
            if self.abort.stopped() {
                return Ok(());
            }
            if self.control.stop_now.load(Ordering::SeqCst) {
                let _ = self.outputs.broadcast(|| Msg::Stop);
                return Ok(());
            }
            if let Some(link) = &self.checkpoints {
                let requested = self.control.requested.load(Ordering::SeqCst);
                if requested > self.injected {
                    self.injected = requested;
                    if self.outputs.broadcast(|| Msg::Barrier(requested)).is_err() {
                        return Ok(());
                    }
                    link.send(Ack::Source {
                        id: requested,
                        source: link.index,
                        position: self.position,
                        max_ts: self.max_ts,
                    });
                    if self.control.stop_at.load(Ordering::SeqCst) == requested {
                        let _ = self.outputs.broadcast(|| Msg::Stop);
                        return Ok(());
                    }
                }
            }
            let mut batch = Batch::with_capacity(batch_size, batch_size * 128);
            let mut done = false;
            let started = Instant::now();
            while batch.len() < batch_size && (batch.is_empty() || started.elapsed() < linger) {
                match self.source.pull().map_err(|m| source_err(&self.name, m))? {
                    Pull::Event(event) => {
                        self.position += 1;
                        self.max_ts = self.max_ts.max(event.timestamp);
                        batch.push_event(&event);
                    }
                    Pull::Idle => break,
                    Pull::End => {
                        done = true;
                        break;
                    }
                }
            }
            self.read.fetch_add(batch.len() as u64, Ordering::Relaxed);
            if self.outputs.batch(batch).is_err() {
                return Ok(());
            }
            let wm = self.watermark_of(self.max_ts);
            if wm > watermark {
                watermark = wm;
                if self.outputs.broadcast(|| Msg::Watermark(wm)).is_err() {
                    return Ok(());
                }
            }
            if done {
                if let Some(link) = &self.checkpoints {
                    link.send(Ack::Source {
                        id: FINAL,
                        source: link.index,
                        position: self.position,
                        max_ts: self.max_ts,
                    });
                }
                let _ = self.outputs.broadcast(|| Msg::End);
                return Ok(());
            }
        }
    }
}

/// One sink's thread.
pub(crate) struct SinkTask {
    pub(crate) name: String,
    /// Where batches go as they come; `None` when the coordinator publishes
    /// them once their checkpoint commits (exactly-once).
    pub(crate) sink: Option<Box<dyn Sink>>,
    pub(crate) rx: Receiver<Envelope>,
    pub(crate) inputs: InputTracker,
    pub(crate) abort: Arc<Abort>,
    pub(crate) checkpoints: Option<AckLink>,
}

impl SinkTask {
    fn ack(&self, id: u64, pending: &mut Batch) {
        if let Some(link) = &self.checkpoints {
            link.send(Ack::Sink {
                id,
                sink: link.index,
                pending: std::mem::take(pending),
            });
        }
    }

    pub(crate) fn run(mut self) -> Result<(), EngineError> {
        let mut pending = Batch::default();
        let mut aligner = Aligner::new();
        loop {
            if self.abort.stopped() {
                return Ok(());
            }
            let envelope = match aligner.next(&self.rx) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            match envelope.msg {
                Msg::Batch(batch) => match &mut self.sink {
                    Some(sink) => sink.write(&batch).map_err(|message| EngineError::Sink {
                        sink: self.name.clone(),
                        message,
                    })?,
                    None => pending.extend_from(&batch),
                },
                Msg::Watermark(wm) => self.inputs.advance(envelope.from, wm),
                Msg::Barrier(id) => {
                    if let Some((id, _)) = aligner.barrier(envelope.from, id, &self.inputs) {
                        self.ack(id, &mut pending);
                    }
                }
                Msg::Query(q) => {
                    let _ = q.reply.send(Err("a sink holds no state".into()));
                }
                Msg::End | Msg::Stop => {
                    let stop = matches!(envelope.msg, Msg::Stop);
                    let all_closed = self.inputs.close(envelope.from, stop);
                    if let Some((id, _)) = aligner.aligned(&self.inputs) {
                        self.ack(id, &mut pending);
                    }
                    if all_closed {
                        if !self.inputs.stopping() {
                            self.ack(FINAL, &mut pending);
                        }
                        return Ok(());
                    }
                }
            }
        }
    }
}
