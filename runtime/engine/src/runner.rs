//! The single-operator runner (`weir run --module`): batches, watermark,
//! timers, and the same error and timer policy as topologies
//! (`policy.rs`). It has one output: events an operator sends to a side
//! output come out there too, after the call's main output, each with a
//! header [`SIDE_OUTPUT_HEADER`] naming its side output.

use weir_topology::ErrorPolicyDoc;
use weir_types::{Batch, Event, now_ms};
use weir_wasm::{FiredTimer, InstanceError, OperatorInstance, TimeDomain};

use crate::call::process_isolated;
use crate::policy::{Failure, TimerRounds, Verdict, fire_isolated, judge};

/// The header that marks an event of a side output in the runner's output;
/// its value is the side output's name.
pub const SIDE_OUTPUT_HEADER: &str = "weir-output";

/// What happens to an input the operator fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop with the error.
    #[default]
    Fail,
    /// Report it and go on.
    Skip,
}

impl From<ErrorPolicy> for ErrorPolicyDoc {
    fn from(policy: ErrorPolicy) -> Self {
        match policy {
            ErrorPolicy::Fail => ErrorPolicyDoc::Fail,
            ErrorPolicy::Skip => ErrorPolicyDoc::Skip,
        }
    }
}

/// How to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Events per `process` call.
    pub batch_size: usize,
    pub on_error: ErrorPolicy,
    /// How far behind the highest timestamp seen an event may arrive; the
    /// watermark trails the highest timestamp by this much.
    pub max_out_of_orderness_ms: i64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 1024,
            on_error: ErrorPolicy::Fail,
            max_out_of_orderness_ms: 0,
        }
    }
}

/// An input skipped under [`ErrorPolicy::Skip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedInput {
    /// Index of the event in the input, or `None` for a fired timer.
    pub index: Option<u64>,
    pub timer: Option<FiredTimer>,
    pub message: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub events_in: u64,
    pub events_out: u64,
    pub timers_fired: u64,
    pub skipped: Vec<SkippedInput>,
    /// Times the instance was re-created after a trap or overrun.
    pub restarts: u64,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("event {index} (0-based) failed: {message}")]
    EventFailed { index: u64, message: String },
    #[error("timer at {time} failed: {message}")]
    TimerFailed { time: i64, message: String },
    #[error(transparent)]
    Operator(#[from] InstanceError),
    #[error("output could not be written: {0}")]
    Sink(String),
}

struct Runner<'a, S> {
    instance: &'a mut OperatorInstance,
    sink: S,
    options: RunOptions,
    watermark: i64,
    report: RunReport,
}

impl<S: FnMut(&Batch) -> Result<(), String>> Runner<'_, S> {
    fn emit(&mut self, events: &Batch) -> Result<(), RunError> {
        self.report.events_out += events.len() as u64;
        if events.is_empty() {
            return Ok(());
        }
        (self.sink)(events).map_err(RunError::Sink)
    }

    /// Emits a call's main output, then each side output's events tagged
    /// with [`SIDE_OUTPUT_HEADER`].
    fn emit_all(&mut self, main: &Batch, side: &[Batch]) -> Result<(), RunError> {
        self.emit(main)?;
        for (k, part) in side.iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let name = self.instance.outputs().get(k).cloned().unwrap_or_default();
            let mut tagged = Batch::with_capacity(part.len(), part.values.len());
            for e in part.iter() {
                let index = tagged.len() as u32;
                tagged.push_ref(&e);
                tagged.headers.push((
                    index,
                    SIDE_OUTPUT_HEADER.to_string(),
                    name.as_bytes().to_vec(),
                ));
            }
            self.emit(&tagged)?;
        }
        Ok(())
    }

    /// Applies the policy to a failure. The runner has no dead-letter
    /// output (its policy has no such choice), so only stop and skip occur.
    fn fail(&mut self, failure: Failure) -> Result<(), RunError> {
        match judge(self.options.on_error.into(), self.instance.name(), failure) {
            Verdict::Stop(Failure::Event(f)) => Err(RunError::EventFailed {
                index: f.index as u64,
                message: f.message,
            }),
            Verdict::Stop(Failure::Timer(f)) => Err(RunError::TimerFailed {
                time: f.timer.time,
                message: f.message,
            }),
            Verdict::Skip(failure) | Verdict::DeadLetter(failure) => {
                self.report.skipped.push(match failure {
                    Failure::Event(f) => SkippedInput {
                        index: Some(f.index as u64),
                        timer: None,
                        message: f.message,
                    },
                    Failure::Timer(f) => SkippedInput {
                        index: None,
                        timer: Some(f.timer),
                        message: f.message,
                    },
                });
                Ok(())
            }
        }
    }

    /// Processes one batch whose first event has input index `first`;
    /// failing events are isolated ([`process_isolated`]) and subject to
    /// the policy one by one.
    fn process(&mut self, batch: &mut Batch, first: u64) -> Result<(), RunError> {
        let isolated = process_isolated(self.instance, 0, batch, self.watermark, now_ms())?;
        self.emit_all(&isolated.events, &isolated.side)?;
        for mut f in isolated.failed {
            f.index += first as usize;
            self.fail(Failure::Event(f))?;
        }
        Ok(())
    }

    /// Fires `timers`, isolating failing ones.
    fn fire(&mut self, timers: &[FiredTimer]) -> Result<(), RunError> {
        self.report.timers_fired += timers.len() as u64;
        let fired = fire_isolated(self.instance, timers, self.watermark, now_ms())?;
        self.emit_all(&fired.events, &fired.side)?;
        for f in fired.failed {
            self.fail(Failure::Timer(f))?;
        }
        Ok(())
    }

    /// Fires the timers of `domain` due at `upto`, including ones that
    /// firing registers, in calls of at most a batch.
    fn fire_due(&mut self, domain: TimeDomain, upto: i64) -> Result<(), RunError> {
        let mut rounds = TimerRounds::new(domain, upto);
        loop {
            let name = self.instance.name().to_string();
            let Some(timers) = rounds.next(&name, self.instance.state_mut())? else {
                return Ok(());
            };
            for chunk in timers.chunks(self.options.batch_size.max(1)) {
                self.fire(chunk)?;
            }
        }
    }
}

/// Runs `events` through `instance`, handing each call's output batch to
/// `sink`. After each batch the watermark advances to the highest
/// timestamp seen minus the allowed out-of-orderness (minus one) and due
/// timers fire; at the end of the input the watermark goes to the end of
/// time and every event-time timer fires, as a bounded stream ends in
/// Flink.
#[tracing::instrument(skip_all, fields(operator = %instance.name()))]
pub fn run_operator<I, S>(
    instance: &mut OperatorInstance,
    events: I,
    sink: S,
    options: RunOptions,
) -> Result<RunReport, RunError>
where
    I: IntoIterator<Item = Event>,
    S: FnMut(&Batch) -> Result<(), String>,
{
    let restarts_before = instance.restarts();
    let mut runner = Runner {
        instance,
        sink,
        options,
        watermark: i64::MIN,
        report: RunReport::default(),
    };
    let batch_size = options.batch_size.max(1);
    let mut batch = Batch::with_capacity(batch_size, batch_size * 128);
    let mut first = 0u64;
    let mut max_ts = i64::MIN;
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        batch.clear();
        for event in events.by_ref().take(batch_size) {
            max_ts = max_ts.max(event.timestamp);
            batch.push_event(&event);
        }
        runner.report.events_in += batch.len() as u64;
        runner.process(&mut batch, first)?;
        first += batch.len() as u64;
        let watermark = max_ts
            .saturating_sub(options.max_out_of_orderness_ms)
            .saturating_sub(1);
        if watermark > runner.watermark {
            runner.watermark = watermark;
            runner.fire_due(TimeDomain::EventTime, watermark)?;
        }
        runner.fire_due(TimeDomain::ProcessingTime, now_ms())?;
    }
    runner.watermark = i64::MAX;
    runner.fire_due(TimeDomain::EventTime, i64::MAX)?;
    let mut report = runner.report;
    report.restarts = runner.instance.restarts() - restarts_before;
    Ok(report)
}
