//! The tasks of a running topology: sources, chains of operator
//! instances, sinks. They talk by [`Msg`]s over bounded channels.
//!
//! Each task is a struct whose [`Task::run_slice`] does a bounded amount of
//! work (a budget of messages or batches, and at most [`SLICE_TIME`]) on
//! the worker pool (`pool.rs`) and never blocks: with nothing to read, or
//! output a full channel did not take (`routes.rs`), it says
//! [`Slice::Wait`] and is woken by a message, room downstream, a timer
//! (processing-time timers, a source's next look) or the coordinator. A
//! task that ends sends its last messages before it says [`Slice::Done`].
//!
//! Checkpoint barriers ([`Msg::Barrier`]) are injected by sources when the
//! coordinator asks (`Control::requested`). A task with several inputs
//! aligns them (`align.rs`), then snapshots its operators' state,
//! acknowledges to the coordinator and forwards the barrier. The end of
//! the input ([`Msg::End`]) fires every event-time timer and then acts as
//! a last barrier (`FINAL`); [`Msg::Stop`] ends a run without that (stop,
//! stop with savepoint). Failures follow the operator's policy
//! (`policy.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_io::{DeadLetter, FailureContext, FailureKind, Next, Position, Sink, Source, SourceWaker};
use weir_topology::{ErrorPolicyDoc, LatePolicyDoc};
use weir_types::{Batch, now_ms};
use weir_wasm::{OperatorInstance, TimeDomain};

use crate::align::{Aligner, InputTracker};
use crate::call::{process_isolated, process_or_defer};
use crate::chan::{Inbox, RecvError};
use crate::error::{EngineError, state_error};
use crate::metrics::{Footprint, InstanceMetrics};
use crate::policy::{DeadLetters, Failure, TimerRounds, Verdict, fire_isolated, judge};
use crate::pool::{Task, TaskWaker};
use crate::protocol::{
    Abort, Ack, AckLink, Control, Envelope, FINAL, Msg, Offsets, Origin, Query, Replay, read_state,
};
use crate::routes::Outputs;
pub(crate) use crate::sched::Slice;

/// A slice ends after this much work even with budget left, so other
/// tasks get their turn (one guest call may still take its whole budget).
const SLICE_TIME: Duration = Duration::from_millis(10);

/// The first pause before an idle source that cannot notify is pulled
/// again; it doubles while the source stays idle, up to [`IDLE_PAUSE_MAX`].
const IDLE_PAUSE_MIN: Duration = Duration::from_millis(1);
const IDLE_PAUSE_MAX: Duration = Duration::from_millis(200);

/// `Done` when a consumer is gone (the topology is stopping).
fn sent(result: Result<(), ()>) -> Slice {
    match result {
        Ok(()) => Slice::More,
        Err(()) => Slice::Done,
    }
}

/// One operator of a chain in one task instance.
pub(crate) struct ChainOp {
    pub(crate) name: String,
    pub(crate) instance: OperatorInstance,
    pub(crate) policy: ErrorPolicyDoc,
    pub(crate) late: LatePolicyDoc,
    pub(crate) metrics: Arc<InstanceMetrics>,
    /// What its dead letters say of where they failed: topology, instance,
    /// module and digest (each letter adds its source, offset and input).
    pub(crate) context: FailureContext,
}

impl ChainOp {
    /// The context of a dead letter of this operator for an event that
    /// came on `input`, at `index` of a batch read from `origin`.
    fn letter_context(&self, input: u32, origin: Option<(&Origin, usize)>) -> FailureContext {
        let mut context = self.context.clone();
        context.input = input;
        if let Some((o, index)) = origin {
            context.source = Some(o.source.to_string());
            context.offset = o.offset(index);
        }
        context
    }

    /// Applies the operator's policy to a failure: an error to stop the
    /// run (naming the event: its source and offset when `origin` says,
    /// and its key), else it was skipped or dead-lettered. `input`: the
    /// input a failed event came on. A replayed event's failure is always
    /// dead-lettered again (the replay reports it; the run goes on).
    fn handle(
        &self,
        failure: Failure,
        dead: &DeadLetters,
        origin: Option<&Origin>,
        input: u32,
        replay: bool,
    ) -> Result<(), EngineError> {
        InstanceMetrics::add(&self.metrics.errors, 1);
        let policy = if replay {
            ErrorPolicyDoc::DeadLetter
        } else {
            self.policy
        };
        match judge(policy, &self.name, failure) {
            Verdict::Stop(Failure::Event(f)) => Err(EngineError::EventFailed {
                operator: self.name.clone(),
                event: describe_event(&f.event, origin.map(|o| (o, f.index))),
                message: f.message,
            }),
            Verdict::Stop(Failure::Timer(f)) => Err(EngineError::TimerFailed {
                operator: self.name.clone(),
                time: f.timer.time,
                message: f.message,
            }),
            Verdict::Skip(_) => Ok(()),
            Verdict::DeadLetter(failure) => {
                InstanceMetrics::add(&self.metrics.dead_lettered, 1);
                let at = match &failure {
                    Failure::Event(f) => origin.map(|o| (o, f.index)),
                    Failure::Timer(_) => None,
                };
                let context = self.letter_context(input, at);
                dead.send(failure.into_dead_letter(&self.name, now_ms(), context))
            }
        }
    }
}

/// What a chain emits: its last operator's main output and side outputs
/// (in declaration order). Side outputs of the operators before the last
/// are read by nobody (the plan ends a chain at an operator whose side
/// outputs are read), so they are dropped.
#[derive(Debug, Default)]
pub(crate) struct Emitted {
    pub(crate) main: Batch,
    pub(crate) side: Vec<Batch>,
}

impl Emitted {
    fn extend(&mut self, other: Emitted) {
        self.main.extend_from(&other.main);
        crate::call::extend_side(&mut self.side, &other.side);
    }
}

/// Longest key a failure message quotes, in characters.
const QUOTED_KEY_CHARS: usize = 64;

/// Which event failed, for a message: its source and offset (when it came
/// straight from a source, at `index` of the batch from `origin`) and key.
fn describe_event(event: &weir_types::Event, origin: Option<(&Origin, usize)>) -> String {
    let key = match &event.key {
        None => "no key".to_string(),
        Some(k) => {
            let text = String::from_utf8_lossy(k);
            let mut quoted: String = text.chars().take(QUOTED_KEY_CHARS).collect();
            if text.chars().count() > QUOTED_KEY_CHARS {
                quoted.push('…');
            }
            format!("key {quoted:?}")
        }
    };
    match origin {
        Some((o, index)) => match o.offset(index) {
            Some(offset) => format!("source `{}` offset {offset}, {key}", o.source),
            None => format!("source `{}`, {key}", o.source),
        },
        None => key,
    }
}

/// How a batch came to a chain.
enum Arrival<'a> {
    /// From upstream; where it was read, when straight from a source.
    Upstream(Option<Origin>),
    /// One event of a batch that failed as a whole, retried on its own at
    /// the operator it failed in (already counted in and found on time
    /// there); where it was read, when straight from a source.
    Retry(Option<Origin>),
    /// Replayed from outside: the first operator's failures are told in
    /// the slots, one per event of the batch.
    Replay(&'a mut [Option<String>]),
}

/// Runs `batch`, which arrived on the chain's input `input`, through `ops`
/// from operator `from` on, applying each operator's late and error
/// policies; returns the last operator's output. Only the first operator
/// sees `input`; the others have one input each. `origin`: where the batch
/// was read, when it comes straight from a source (it names the events the
/// first operator fails on); for a replay, where the first operator's
/// failures are told (the replayed events skip its late policy).
///
/// With `retries`, a batch of several events that fails as a whole in an
/// operator is not retried at once: its events go into `retries`, to be
/// run one by one from that operator ([`Retry`]), and nothing is emitted
/// for it now.
#[allow(clippy::too_many_arguments)]
fn run_chain(
    ops: &mut [ChainOp],
    from: usize,
    input: u32,
    mut batch: Batch,
    watermark: i64,
    dead: &DeadLetters,
    arrival: Arrival<'_>,
    mut retries: Option<&mut VecDeque<Retry>>,
) -> Result<Emitted, EngineError> {
    let (mut origin, mut again, retried) = match arrival {
        Arrival::Upstream(origin) => (origin, None, false),
        Arrival::Retry(origin) => (origin, None, true),
        Arrival::Replay(slots) => (None, Some(slots), false),
    };
    let last = ops.len().saturating_sub(1);
    let mut side = Vec::new();
    for (k, op) in ops.iter_mut().enumerate().skip(from) {
        if batch.is_empty() {
            break;
        }
        let input = if k == from { input } else { 0 };
        let replay = k == from && again.is_some();
        let retry = k == from && retried;
        let start = Instant::now();
        let late = if retry {
            0
        } else {
            InstanceMetrics::add(&op.metrics.events_in, batch.len() as u64);
            batch.timestamps.iter().filter(|&&t| t < watermark).count()
        };
        InstanceMetrics::add(&op.metrics.late, late as u64);
        if late > 0 && op.late != LatePolicyDoc::Keep && !replay {
            let mut on_time = Batch::with_capacity(batch.len() - late, batch.values.len());
            let read_from = origin.take();
            origin = read_from.as_ref().map(|o| {
                let kept = batch.timestamps.iter().enumerate();
                o.select(kept.filter(|(_, t)| **t >= watermark).map(|(i, _)| i))
            });
            for (index, e) in batch.iter().enumerate() {
                if e.timestamp >= watermark {
                    on_time.push_ref(&e);
                } else if op.late == LatePolicyDoc::DeadLetter {
                    InstanceMetrics::add(&op.metrics.dead_lettered, 1);
                    let at = read_from.as_ref().map(|o| (o, index));
                    dead.send(DeadLetter {
                        operator: op.name.clone(),
                        error: format!(
                            "late event: timestamp {} is behind the watermark {watermark}",
                            e.timestamp
                        ),
                        failed_at: now_ms(),
                        event: e.to_event(),
                        context: FailureContext {
                            kind: FailureKind::Late,
                            ..op.letter_context(input, at)
                        },
                    })?;
                }
            }
            batch = on_time;
            if batch.is_empty() {
                continue;
            }
        }
        let isolated = match retries.as_deref_mut() {
            Some(queue) if !replay => {
                match process_or_defer(&mut op.instance, input, &mut batch, watermark, now_ms())? {
                    Some(isolated) => isolated,
                    None => {
                        op.metrics.record_batch(start.elapsed());
                        for (index, event) in batch.iter().enumerate() {
                            let mut one = Batch::with_capacity(1, event.value.len());
                            one.push_ref(&event);
                            queue.push_back(Retry {
                                from: k,
                                input,
                                batch: one,
                                origin: origin.as_ref().map(|o| o.select(std::iter::once(index))),
                            });
                        }
                        return Ok(Emitted::default());
                    }
                }
            }
            _ => process_isolated(&mut op.instance, input, &mut batch, watermark, now_ms())?,
        };
        op.metrics.record_batch(start.elapsed());
        op.metrics.add_guest(op.instance.take_counters());
        op.metrics.add_logs(op.instance.take_logs());
        for failed in isolated.failed {
            if replay && let Some(slot) = again.as_deref_mut().and_then(|s| s.get_mut(failed.index))
            {
                *slot = Some(failed.message.clone());
            }
            op.handle(Failure::Event(failed), dead, origin.as_ref(), input, replay)?;
        }
        let side_events: usize = isolated.side.iter().map(Batch::len).sum();
        InstanceMetrics::add(
            &op.metrics.events_out,
            (isolated.events.len() + side_events) as u64,
        );
        if k == last {
            side = isolated.side;
        }
        batch = isolated.events;
        // What the operator emitted was not read from the source.
        origin = None;
    }
    Ok(Emitted { main: batch, side })
}

/// Fires the due timers of every operator of the chain, in chain order
/// (what a timer emits goes through the operators after it); returns the
/// chain's output and how many timers fired. Timers see the new watermark `upto` (event time); what
/// they emit travels ahead of it, so the operators after them still see
/// `before`, as a downstream task would.
fn fire_timers(
    ops: &mut [ChainOp],
    domain: TimeDomain,
    upto: i64,
    before: i64,
    dead: &DeadLetters,
) -> Result<(Emitted, u64), EngineError> {
    let watermark = match domain {
        TimeDomain::EventTime => upto,
        TimeDomain::ProcessingTime => before,
    };
    let mut out = Emitted::default();
    let mut count = 0u64;
    let last = ops.len().saturating_sub(1);
    for k in 0..ops.len() {
        let (head, rest) = ops.split_at_mut(k + 1);
        let op = &mut head[k];
        let mut rounds = TimerRounds::new(domain, upto);
        while let Some(timers) = rounds.next(&op.name, op.instance.state_mut())? {
            count += timers.len() as u64;
            let fired = fire_isolated(&mut op.instance, &timers, watermark, now_ms())?;
            op.metrics.add_guest(op.instance.take_counters());
            op.metrics.add_logs(op.instance.take_logs());
            for failed in fired.failed {
                op.handle(Failure::Timer(failed), dead, None, 0, false)?;
            }
            let side_events: usize = fired.side.iter().map(Batch::len).sum();
            InstanceMetrics::add(
                &op.metrics.events_out,
                (fired.events.len() + side_events) as u64,
            );
            if k == last {
                out.extend(Emitted {
                    main: fired.events,
                    side: fired.side,
                });
            } else {
                out.extend(run_chain(
                    rest,
                    0,
                    0,
                    fired.events,
                    before,
                    dead,
                    Arrival::Upstream(None),
                    None,
                )?);
            }
        }
    }
    Ok((out, count))
}

/// The takes of every operator's state for checkpoint `id`.
fn snapshot_ops(
    ops: &mut [ChainOp],
    id: u64,
) -> Result<Vec<(String, weir_state::StateSnapshot)>, EngineError> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops.iter_mut() {
        let snapshot = op
            .instance
            .state_mut()
            .snapshot(id)
            .map_err(|e| state_error(&op.name, e))?;
        out.push((op.name.clone(), snapshot));
    }
    Ok(out)
}

/// Answers a state query from the chain's operators.
fn answer(ops: &mut [ChainOp], q: Query) {
    let result = match ops.iter_mut().find(|o| o.name == q.operator) {
        None => Err(format!("operator `{}` is not in this task", q.operator)),
        Some(op) => read_state(op.instance.state_mut(), &q.state, &q.key),
    };
    let _ = q.reply.send(result);
}

/// The next message for a task with inputs: a held one that is free
/// again, else the next received that is not held back.
fn receive(aligner: &mut Aligner, rx: &Inbox) -> Result<Envelope, RecvError> {
    if let Some(e) = aligner.release() {
        return Ok(e);
    }
    loop {
        if let Some(e) = aligner.offer(rx.try_recv()?) {
            return Ok(e);
        }
    }
}

/// How a task that is ending sends its last messages: `Done` once they
/// are all sent (or nobody is left to take them), else `Wait` for room.
fn end(outputs: &mut Outputs) -> Slice {
    match outputs.flush() {
        Ok(false) => Slice::Wait,
        Ok(true) | Err(()) => Slice::Done,
    }
}

/// A task fed by channels (chains and sinks), as [`run_inputs`] drives it.
trait Consumer {
    fn abort(&self) -> &Abort;
    /// Its aligner and inbox.
    fn inputs(&mut self) -> (&mut Aligner, &Inbox);
    /// Its outputs (`None`: a sink, which has none).
    fn outputs(&mut self) -> Option<&mut Outputs>;
    /// Whether it decided to end and is sending its last messages.
    fn ending(&mut self) -> &mut bool;
    fn handle(&mut self, envelope: Envelope) -> Result<Slice, EngineError>;
    /// Retries one event of a failed batch, if any waits (before any new
    /// message is taken).
    fn retry_one(&mut self) -> Option<Result<Slice, EngineError>> {
        None
    }
}

/// One slice of a task fed by channels: sends what waits in its outbox,
/// then handles messages until its inbox is empty (`Wait`), its budget
/// or [`SLICE_TIME`] is used (`More`), output backs up (`Wait` until
/// there is room) or it ends.
fn run_inputs(task: &mut impl Consumer, budget: usize) -> Result<Slice, EngineError> {
    let started = Instant::now();
    let flushed = |task: &mut dyn Consumer| match task.outputs() {
        None => Ok(true),
        Some(out) => out.flush(),
    };
    if *task.ending() {
        return Ok(task.outputs().map_or(Slice::Done, end));
    }
    for _ in 0..budget {
        if task.abort().stopped() {
            return Ok(Slice::Done);
        }
        match flushed(task) {
            Err(()) => return Ok(Slice::Done),
            Ok(false) => return Ok(Slice::Wait),
            Ok(true) => {}
        }
        let handled = match task.retry_one() {
            Some(retried) => retried?,
            None => {
                let (aligner, rx) = task.inputs();
                let envelope = match receive(aligner, rx) {
                    Ok(e) => e,
                    Err(RecvError::Empty) => return Ok(Slice::Wait),
                    Err(RecvError::Closed) => return Ok(Slice::Done),
                };
                task.handle(envelope)?
            }
        };
        if handled == Slice::Done {
            *task.ending() = true;
            return Ok(task.outputs().map_or(Slice::Done, end));
        }
        if started.elapsed() >= SLICE_TIME {
            break;
        }
    }
    Ok(match flushed(task) {
        Err(()) => Slice::Done,
        Ok(false) => Slice::Wait,
        Ok(true) => Slice::More,
    })
}

/// One chain instance: its operators, inputs and outputs.
pub(crate) struct ChainTask {
    pub(crate) ops: Vec<ChainOp>,
    pub(crate) rx: Inbox,
    pub(crate) inputs: InputTracker,
    pub(crate) outputs: Outputs,
    pub(crate) dead: Arc<DeadLetters>,
    pub(crate) abort: Arc<Abort>,
    /// Where fired processing-time timers count as activity.
    pub(crate) control: Arc<Control>,
    /// The task's watermark: restored from a checkpoint, else `i64::MIN`.
    pub(crate) watermark: i64,
    pub(crate) aligner: Aligner,
    pub(crate) checkpoints: Option<AckLink>,
    /// Its own task, woken by the timer thread for processing-time timers.
    pub(crate) waker: TaskWaker,
    pub(crate) ending: bool,
    /// The topology's memory, and this task's part of it as last reported.
    pub(crate) footprint: Arc<Footprint>,
    pub(crate) reported: (u64, u64),
    /// Drops its operators' instances after this long without a message
    /// or timer (`ExecOptions::unload_idle`).
    pub(crate) idle: Option<IdleUnload>,
    /// Events of failed batches still to retry one by one, in order.
    pub(crate) retries: VecDeque<Retry>,
}

/// One event of a batch that failed as a whole in operator `from` of a
/// chain, waiting to be retried on its own. A task retries one such event
/// per turn of its loop (before any new message), so a batch of events
/// that each run to the call budget takes many slices, not one, and the
/// pool's throttle can slow the task between them.
pub(crate) struct Retry {
    from: usize,
    input: u32,
    batch: Batch,
    origin: Option<Origin>,
}

/// When a chain's instances are dropped for being idle: no message
/// handled and no timer fired for `after`. Their state stays in the host;
/// the next call instantiates them again (running `init`), as after a trap.
pub(crate) struct IdleUnload {
    pub(crate) after: Duration,
    /// When the task last handled a message or fired a timer.
    pub(crate) active_at: Instant,
    /// A message or timer since the last slice ended.
    pub(crate) touched: bool,
    /// The wake-up asked for to look again (one at a time).
    pub(crate) look_at: Option<Instant>,
}

impl IdleUnload {
    pub(crate) fn new(after: Duration) -> IdleUnload {
        IdleUnload {
            after,
            active_at: Instant::now(),
            touched: false,
            look_at: None,
        }
    }

    /// At the end of a slice at `now` that left the task `waiting` with
    /// instances `live`: whether to unload them now, and when to be woken
    /// to look again (`None`: no new wake-up needed).
    pub(crate) fn decide(
        &mut self,
        now: Instant,
        waiting: bool,
        live: bool,
    ) -> (bool, Option<Instant>) {
        if std::mem::take(&mut self.touched) {
            self.active_at = now;
        }
        if self.look_at.is_some_and(|t| now >= t) {
            self.look_at = None;
        }
        if !waiting || !live {
            return (false, None);
        }
        let due = self.active_at + self.after;
        if now >= due {
            return (true, None);
        }
        if self.look_at.is_some() {
            return (false, None);
        }
        self.look_at = Some(due);
        (false, Some(due))
    }
}

impl Drop for ChainTask {
    fn drop(&mut self) {
        self.footprint.report(&mut self.reported, (0, 0));
    }
}

impl ChainTask {
    /// Fires the processing-time timers that are due and asks to be woken
    /// when the next one is.
    fn processing_timers(&mut self) -> Result<Slice, EngineError> {
        let next = |ops: &mut [ChainOp]| {
            ops.iter_mut()
                .filter_map(|o| {
                    o.instance
                        .state_mut()
                        .next_timer(TimeDomain::ProcessingTime)
                })
                .min()
        };
        let now = now_ms();
        let Some(mut due) = next(&mut self.ops) else {
            return Ok(Slice::More);
        };
        if due <= now {
            let (out, _) = fire_timers(
                &mut self.ops,
                TimeDomain::ProcessingTime,
                now,
                self.watermark,
                &self.dead,
            )?;
            self.control.note_activity(1);
            if let Some(idle) = &mut self.idle {
                idle.touched = true;
            }
            if self.outputs.emit(out.main, out.side).is_err() {
                return Ok(Slice::Done);
            }
            match next(&mut self.ops) {
                Some(t) => due = t,
                None => return Ok(Slice::More),
            }
        }
        let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(0).max(1);
        self.waker.wake_after(Duration::from_millis(wait));
        Ok(Slice::More)
    }

    /// Raises the watermark to the inputs' minimum, firing the event-time
    /// timers it passes.
    fn advance(&mut self) -> Result<Slice, EngineError> {
        let new = self.inputs.watermark();
        if new <= self.watermark {
            return Ok(Slice::More);
        }
        let before = std::mem::replace(&mut self.watermark, new);
        for op in &self.ops {
            op.metrics.watermark.store(new, Ordering::Relaxed);
        }
        let (out, fired) = fire_timers(
            &mut self.ops,
            TimeDomain::EventTime,
            new,
            before,
            &self.dead,
        )?;
        // Timers that fired may have changed state and emitted output: the
        // next interval checkpoint is taken, even when no event came (a
        // watermark that moves without events: an idle partition left
        // out, a repartition topic's event-time marks).
        self.control.note_activity(fired);
        Ok(sent(self.outputs.emit(out.main, out.side).and_then(|()| {
            self.outputs.broadcast(|| Msg::Watermark(new))
        })))
    }

    /// Snapshots for checkpoint `id`, acknowledges it, forwards the barrier.
    fn checkpoint(&mut self, id: u64, alignment: Duration) -> Result<Slice, EngineError> {
        if let Some(link) = &self.checkpoints {
            let states = snapshot_ops(&mut self.ops, id)?;
            link.send(Ack::Task {
                id,
                task: link.index,
                watermark: self.watermark,
                states,
                alignment,
            });
        }
        Ok(sent(self.outputs.broadcast(|| Msg::Barrier(id))))
    }

    /// Feeds replayed dead letters into their operator, emits what they
    /// produce and replies which failed again.
    fn replay(&mut self, r: Replay) -> Result<Slice, EngineError> {
        let Some(k) = self.ops.iter().position(|o| o.name == r.operator) else {
            let _ = r.reply.send(Err(format!(
                "operator `{}` is not in this task",
                r.operator
            )));
            return Ok(Slice::More);
        };
        let mut again = vec![None; r.batch.len()];
        let out = run_chain(
            &mut self.ops,
            k,
            r.input,
            r.batch,
            self.watermark,
            &self.dead,
            Arrival::Replay(&mut again),
            None,
        )?;
        // State may have changed: the next interval checkpoint is taken.
        self.control.note_activity(1);
        let _ = r.reply.send(Ok(again));
        Ok(sent(self.outputs.emit(out.main, out.side)))
    }

    /// Handles one message.
    fn handle(&mut self, envelope: Envelope) -> Result<Slice, EngineError> {
        if let Some(idle) = &mut self.idle {
            idle.touched = true;
        }
        let from = envelope.from;
        match envelope.msg {
            Msg::Batch {
                batch,
                input,
                origin,
            } => {
                let out = run_chain(
                    &mut self.ops,
                    0,
                    input,
                    batch,
                    self.watermark,
                    &self.dead,
                    Arrival::Upstream(origin),
                    Some(&mut self.retries),
                )?;
                Ok(sent(self.outputs.emit(out.main, out.side)))
            }
            Msg::Replay(r) => self.replay(*r),
            Msg::Watermark(wm) => {
                self.inputs.advance(from, wm);
                self.advance()
            }
            Msg::Barrier(id) => match self.aligner.barrier(from, id, &self.inputs) {
                Some((id, took)) => self.checkpoint(id, took),
                None => Ok(Slice::More),
            },
            Msg::Query(q) => {
                answer(&mut self.ops, q);
                Ok(Slice::More)
            }
            Msg::End | Msg::Stop => {
                let stop = matches!(envelope.msg, Msg::Stop);
                let all_closed = self.inputs.close(from, stop);
                if let Some((id, took)) = self.aligner.aligned(&self.inputs)
                    && self.checkpoint(id, took)? == Slice::Done
                {
                    return Ok(Slice::Done);
                }
                if all_closed && self.inputs.stopping() {
                    let _ = self.outputs.broadcast(|| Msg::Stop);
                    return Ok(Slice::Done);
                }
                if all_closed {
                    self.finish()?;
                    return Ok(Slice::Done);
                }
                self.advance()
            }
        }
    }

    /// Every input ended: fires every event-time timer, makes the state
    /// durable (a last checkpoint acknowledgement, or a flush), ends.
    fn finish(&mut self) -> Result<(), EngineError> {
        let (out, _) = fire_timers(
            &mut self.ops,
            TimeDomain::EventTime,
            i64::MAX,
            self.watermark,
            &self.dead,
        )?;
        if self.outputs.emit(out.main, out.side).is_err() {
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
                    watermark: self.watermark,
                    states,
                    alignment: Duration::ZERO,
                });
            }
            None => {
                for op in self.ops.iter_mut() {
                    op.instance
                        .state_mut()
                        .flush()
                        .map_err(|e| state_error(&op.name, e))?;
                }
            }
        }
        let _ = self.outputs.broadcast(|| Msg::End);
        Ok(())
    }
}

impl ChainTask {
    /// Drops the operators' instances once the task has been idle for
    /// `ExecOptions::unload_idle`, or asks to be woken when it will be.
    fn unload_if_idle(&mut self, waiting: bool) {
        let Some(idle) = &mut self.idle else {
            return;
        };
        let live = self.ops.iter().any(|op| op.instance.is_live());
        match idle.decide(Instant::now(), waiting, live) {
            (true, _) => {
                for op in &mut self.ops {
                    op.metrics.add_guest(op.instance.take_counters());
                    op.metrics.add_logs(op.instance.take_logs());
                    op.instance.unload();
                }
                tracing::debug!(
                    operators = self.ops.len(),
                    "idle: operator instances unloaded"
                );
            }
            (false, Some(at)) => self.waker.wake_at(at),
            (false, None) => {}
        }
    }
}

impl Consumer for ChainTask {
    fn abort(&self) -> &Abort {
        &self.abort
    }
    fn inputs(&mut self) -> (&mut Aligner, &Inbox) {
        (&mut self.aligner, &self.rx)
    }
    fn outputs(&mut self) -> Option<&mut Outputs> {
        Some(&mut self.outputs)
    }
    fn ending(&mut self) -> &mut bool {
        &mut self.ending
    }
    fn handle(&mut self, envelope: Envelope) -> Result<Slice, EngineError> {
        ChainTask::handle(self, envelope)
    }
    fn retry_one(&mut self) -> Option<Result<Slice, EngineError>> {
        let r = self.retries.pop_front()?;
        if let Some(idle) = &mut self.idle {
            idle.touched = true;
        }
        let out = run_chain(
            &mut self.ops,
            r.from,
            r.input,
            r.batch,
            self.watermark,
            &self.dead,
            Arrival::Retry(r.origin),
            Some(&mut self.retries),
        );
        Some(out.map(|out| sent(self.outputs.emit(out.main, out.side))))
    }
}

impl Task for ChainTask {
    fn run_slice(&mut self, budget: usize) -> Result<Slice, EngineError> {
        if !self.ending && !self.abort.stopped() && self.processing_timers()? == Slice::Done {
            return Ok(Slice::Done);
        }
        let slice = run_inputs(self, budget);
        self.unload_if_idle(matches!(slice, Ok(Slice::Wait)));
        let now = self.ops.iter_mut().fold((0, 0), |(wasm, state), op| {
            (
                wasm + op.instance.memory_bytes() as u64,
                state + op.instance.state_mut().resident_bytes() as u64,
            )
        });
        self.footprint.report(&mut self.reported, now);
        slice
    }
}

/// One source and where it starts.
pub(crate) struct SourceTask {
    pub(crate) name: String,
    /// The name again, shared by the origins of the batches it sends.
    pub(crate) origin: Arc<str>,
    pub(crate) source: Box<dyn Source>,
    /// Where the run starts (restored from a checkpoint).
    pub(crate) start: Position,
    /// Events read, counting those before the restored position (the
    /// position of a source that does not report its own).
    pub(crate) count: u64,
    /// The event time reached: the highest timestamp read, or what the
    /// source reports (never lower than the restored one).
    pub(crate) max_ts: i64,
    /// Positions recorded at barriers of checkpoints not yet durable.
    pub(crate) uncommitted: VecDeque<(u64, Position)>,
    pub(crate) max_out_of_orderness_ms: i64,
    /// Most events in a batch.
    pub(crate) batch_size: usize,
    /// Longest a partial batch is held before it is sent.
    pub(crate) linger: Duration,
    pub(crate) outputs: Outputs,
    pub(crate) read: Arc<AtomicU64>,
    pub(crate) abort: Arc<Abort>,
    pub(crate) control: Arc<Control>,
    /// The last checkpoint whose barrier this source injected.
    pub(crate) injected: u64,
    pub(crate) checkpoints: Option<AckLink>,
    /// The last watermark sent; `None` before the first slice (which seeks
    /// to the restored position).
    pub(crate) watermark: Option<i64>,
    /// Its own task: woken by the source when input comes, or by the
    /// timer thread after [`SourceTask::idle_pause`].
    pub(crate) waker: TaskWaker,
    /// The pause before an idle source that cannot notify is pulled again.
    pub(crate) idle_pause: Duration,
    pub(crate) ending: bool,
    /// It read all there was at its last pull (told to `Control`).
    pub(crate) caught_up: bool,
}

impl SourceTask {
    fn watermark_of(&self, max_ts: i64) -> i64 {
        max_ts
            .saturating_sub(self.max_out_of_orderness_ms)
            .saturating_sub(1)
    }

    fn source_error(&self, message: String) -> EngineError {
        EngineError::Source {
            source_name: self.name.clone(),
            message,
        }
    }

    /// Where the source is now, as a checkpoint records it.
    fn position(&self) -> Position {
        self.source
            .position()
            .unwrap_or(Position::Count(self.count))
    }

    /// Tells the source that the newest durable checkpoint it took part
    /// in is committed (a failure to pass that on only warns: the
    /// checkpoint itself is safe).
    fn pass_on_commits(&mut self) {
        let committed = self.control.committed.load(Ordering::SeqCst);
        let mut newest = None;
        while self
            .uncommitted
            .front()
            .is_some_and(|(id, _)| *id <= committed)
        {
            newest = self.uncommitted.pop_front().map(|(_, p)| p);
        }
        if let Some(position) = newest
            && let Err(message) = self.source.committed(&position)
        {
            tracing::warn!(source = %self.name, error = %message, "the source could not record a committed position");
        }
    }

    /// Seeks to the restored position and sends the restored watermark.
    fn start(&mut self) -> Result<Slice, EngineError> {
        if !self.start.is_start() {
            let start = self.start.clone();
            self.source.seek(&start).map_err(|m| self.source_error(m))?;
        }
        let mut watermark = i64::MIN;
        if self.max_ts > i64::MIN {
            watermark = self.watermark_of(self.max_ts);
            if self
                .outputs
                .broadcast(|| Msg::Watermark(watermark))
                .is_err()
            {
                return Ok(Slice::Done);
            }
        }
        self.watermark = Some(watermark);
        // Restored watermarks may fire timers: not an idle interval.
        self.control.note_activity(1);
        Ok(Slice::More)
    }

    /// The source has nothing now: it wakes the task when it has, or the
    /// task looks again after a pause that grows while it stays idle.
    fn sleep(&mut self) {
        if self.source.wake_when_ready(&SourceWaker::new({
            let waker = self.waker.clone();
            move || waker.wake()
        })) {
            return;
        }
        self.waker.wake_after(self.idle_pause);
        self.idle_pause = (self.idle_pause * 2).min(IDLE_PAUSE_MAX);
    }

    /// Injects the barrier of a newly requested checkpoint.
    fn inject(&mut self) -> Slice {
        let Some(link) = &self.checkpoints else {
            return Slice::More;
        };
        let requested = self.control.requested.load(Ordering::SeqCst);
        if requested <= self.injected {
            return Slice::More;
        }
        self.injected = requested;
        if self.outputs.broadcast(|| Msg::Barrier(requested)).is_err() {
            return Slice::Done;
        }
        let position = self.position();
        link.send(Ack::Source {
            id: requested,
            source: link.index,
            position: position.clone(),
            max_ts: self.max_ts,
        });
        self.uncommitted.push_back((requested, position));
        if self.control.stop_at.load(Ordering::SeqCst) == requested {
            let _ = self.outputs.broadcast(|| Msg::Stop);
            return Slice::Done;
        }
        Slice::More
    }

    /// Reads and sends one batch (and the watermark it raises); `Wait`
    /// when the source had nothing.
    fn step(&mut self) -> Result<Slice, EngineError> {
        let batch_size = self.batch_size.max(1);
        let mut batch = Batch::with_capacity(batch_size, batch_size * 128);
        let mut done = false;
        let started = Instant::now();
        // A source that reports its own position (splits) has no single
        // offset per event.
        let origin = Origin {
            source: self.origin.clone(),
            offsets: self
                .source
                .position()
                .is_none()
                .then_some(Offsets::Run(self.count)),
        };
        let mut highest = i64::MIN;
        while batch.len() < batch_size && (batch.is_empty() || started.elapsed() < self.linger) {
            let room = batch_size - batch.len();
            let pulled = self
                .source
                .pull_batch(&mut batch, room, started + self.linger)
                .map_err(|m| self.source_error(m))?;
            self.count += pulled.events as u64;
            highest = highest.max(pulled.highest_ts);
            match pulled.next {
                Next::More => {}
                Next::Idle => break,
                Next::End => {
                    done = true;
                    break;
                }
            }
        }
        // A source of several splits answers the least of its splits'
        // highest timestamps: a split that lags holds the watermark back
        // (its events are not late because another split is ahead).
        let reached = self.source.event_time().unwrap_or(highest);
        self.max_ts = self.max_ts.max(reached);
        let idle = batch.is_empty() && !done;
        self.read.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.control.note_activity(batch.len() as u64);
        // Caught up once a pull finds nothing (or the input ended), behind
        // again when a batch comes: the coordinator checkpoints new input
        // as soon as every source is caught up.
        let caught_up = idle || done;
        if caught_up != self.caught_up {
            self.caught_up = caught_up;
            self.control.note_caught_up(caught_up);
        }
        if self.outputs.batch_from(batch, Some(origin)).is_err() {
            return Ok(Slice::Done);
        }
        let wm = self.watermark_of(self.max_ts);
        if self.watermark.is_none_or(|w| wm > w) {
            self.watermark = Some(wm);
            if self.outputs.broadcast(|| Msg::Watermark(wm)).is_err() {
                return Ok(Slice::Done);
            }
        }
        if done {
            if let Some(link) = &self.checkpoints {
                link.send(Ack::Source {
                    id: FINAL,
                    source: link.index,
                    position: self.position(),
                    max_ts: self.max_ts,
                });
            }
            let _ = self.outputs.broadcast(|| Msg::End);
            return Ok(Slice::Done);
        }
        Ok(if idle { Slice::Wait } else { Slice::More })
    }

    /// Ends the task once its last messages are sent.
    fn end(&mut self) -> Slice {
        self.ending = true;
        end(&mut self.outputs)
    }
}

impl Task for SourceTask {
    fn run_slice(&mut self, budget: usize) -> Result<Slice, EngineError> {
        if self.ending {
            return Ok(end(&mut self.outputs));
        }
        if self.watermark.is_none() && self.start()? == Slice::Done {
            return Ok(self.end());
        }
        let started = Instant::now();
        for _ in 0..budget {
            if self.abort.stopped() {
                return Ok(Slice::Done);
            }
            if self.control.stop_now.load(Ordering::SeqCst) {
                let _ = self.outputs.broadcast(|| Msg::Stop);
                return Ok(self.end());
            }
            match self.outputs.flush() {
                Err(()) => return Ok(Slice::Done),
                // Nothing new is read while output waits (backpressure).
                Ok(false) => return Ok(Slice::Wait),
                Ok(true) => {}
            }
            self.pass_on_commits();
            if self.inject() == Slice::Done {
                return Ok(self.end());
            }
            match self.step()? {
                Slice::Done => return Ok(self.end()),
                Slice::Wait => {
                    self.sleep();
                    return Ok(match self.outputs.flush() {
                        Err(()) => Slice::Done,
                        Ok(_) => Slice::Wait,
                    });
                }
                Slice::More => self.idle_pause = IDLE_PAUSE_MIN,
            }
            if started.elapsed() >= SLICE_TIME {
                break;
            }
        }
        Ok(Slice::More)
    }
}

/// One sink.
pub(crate) struct SinkTask {
    pub(crate) name: String,
    /// Where batches go as they come; `None` when the coordinator publishes
    /// them once their checkpoint commits (exactly-once).
    pub(crate) sink: Option<Box<dyn Sink>>,
    pub(crate) rx: Inbox,
    pub(crate) inputs: InputTracker,
    pub(crate) abort: Arc<Abort>,
    pub(crate) checkpoints: Option<AckLink>,
    /// Output since the last barrier, for the coordinator (exactly-once).
    pub(crate) pending: Batch,
    pub(crate) aligner: Aligner,
    pub(crate) ending: bool,
}

impl SinkTask {
    fn ack(&mut self, id: u64) {
        if let Some(link) = &self.checkpoints {
            link.send(Ack::Sink {
                id,
                sink: link.index,
                pending: std::mem::take(&mut self.pending),
            });
        }
    }

    /// Handles one message.
    fn handle(&mut self, envelope: Envelope) -> Result<Slice, EngineError> {
        match envelope.msg {
            Msg::Batch { batch, .. } => match &mut self.sink {
                Some(sink) => sink.write(&batch).map_err(|message| EngineError::Sink {
                    sink: self.name.clone(),
                    message,
                })?,
                None => self.pending.extend_from(&batch),
            },
            Msg::Watermark(wm) => self.inputs.advance(envelope.from, wm),
            Msg::Barrier(id) => {
                if let Some((id, _)) = self.aligner.barrier(envelope.from, id, &self.inputs) {
                    self.ack(id);
                }
            }
            Msg::Query(q) => {
                let _ = q.reply.send(Err("a sink holds no state".into()));
            }
            Msg::Replay(r) => {
                let _ = r.reply.send(Err("a sink runs no operator".into()));
            }
            Msg::End | Msg::Stop => {
                let stop = matches!(envelope.msg, Msg::Stop);
                let all_closed = self.inputs.close(envelope.from, stop);
                if let Some((id, _)) = self.aligner.aligned(&self.inputs) {
                    self.ack(id);
                }
                if all_closed {
                    if !self.inputs.stopping() {
                        self.ack(FINAL);
                    }
                    return Ok(Slice::Done);
                }
            }
        }
        Ok(Slice::More)
    }
}

impl Consumer for SinkTask {
    fn abort(&self) -> &Abort {
        &self.abort
    }
    fn inputs(&mut self) -> (&mut Aligner, &Inbox) {
        (&mut self.aligner, &self.rx)
    }
    fn outputs(&mut self) -> Option<&mut Outputs> {
        None
    }
    fn ending(&mut self) -> &mut bool {
        &mut self.ending
    }
    fn handle(&mut self, envelope: Envelope) -> Result<Slice, EngineError> {
        SinkTask::handle(self, envelope)
    }
}

impl Task for SinkTask {
    fn run_slice(&mut self, budget: usize) -> Result<Slice, EngineError> {
        run_inputs(self, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_unloaded_only_after_a_whole_idle_period_and_one_look_is_asked_at_a_time() {
        let after = Duration::from_millis(100);
        let mut idle = IdleUnload::new(after);
        let t0 = idle.active_at;
        let ms = |n| t0 + Duration::from_millis(n);
        // Busy slices never unload nor ask for a look.
        idle.touched = true;
        assert_eq!(idle.decide(ms(10), false, true), (false, None));
        // Waiting: one look at the end of the idle period, asked once.
        assert_eq!(idle.decide(ms(20), true, true), (false, Some(ms(110))));
        assert_eq!(idle.decide(ms(30), true, true), (false, None));
        // A message at 50 ms moves the period; the look at 110 ms finds it
        // not over and asks again.
        idle.touched = true;
        assert_eq!(idle.decide(ms(50), true, true), (false, None));
        assert_eq!(idle.decide(ms(110), true, true), (false, Some(ms(150))));
        assert_eq!(idle.decide(ms(150), true, true), (true, None));
        // Nothing live: nothing to do.
        assert_eq!(idle.decide(ms(400), true, false), (false, None));
    }
}
