//! The single-operator runner: batches, watermark, timers, error policy.

use std::time::{SystemTime, UNIX_EPOCH};

use weir_types::{Batch, Event};
use weir_wasm::{FiredTimer, InstanceError, OperatorInstance, TimeDomain};

use crate::call::process_isolated;

/// What happens to an input the operator fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop with the error.
    #[default]
    Fail,
    /// Report it and go on.
    Skip,
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

    fn fail_event(&mut self, index: u64, message: String) -> Result<(), RunError> {
        match self.options.on_error {
            ErrorPolicy::Fail => Err(RunError::EventFailed { index, message }),
            ErrorPolicy::Skip => {
                tracing::debug!(event.index = index, error = %message, "event skipped");
                self.report.skipped.push(SkippedInput {
                    index: Some(index),
                    timer: None,
                    message,
                });
                Ok(())
            }
        }
    }

    fn fail_timer(&mut self, timer: &FiredTimer, message: String) -> Result<(), RunError> {
        match self.options.on_error {
            ErrorPolicy::Fail => Err(RunError::TimerFailed {
                time: timer.time,
                message,
            }),
            ErrorPolicy::Skip => {
                tracing::debug!(timer.time = timer.time, error = %message, "timer skipped");
                self.report.skipped.push(SkippedInput {
                    index: None,
                    timer: Some(timer.clone()),
                    message,
                });
                Ok(())
            }
        }
    }

    /// Processes one batch whose first event has input index `first`;
    /// failing events are isolated ([`process_isolated`]) and subject to
    /// the policy one by one.
    fn process(&mut self, batch: &mut Batch, first: u64) -> Result<(), RunError> {
        let isolated = process_isolated(self.instance, batch, self.watermark, now_ms())?;
        self.emit(&isolated.events)?;
        for f in isolated.failed {
            self.fail_event(first + f.index as u64, f.message)?;
        }
        Ok(())
    }

    fn fire(&mut self, timers: &[FiredTimer]) -> Result<(), RunError> {
        if timers.is_empty() {
            return Ok(());
        }
        self.report.timers_fired += timers.len() as u64;
        match self.instance.on_timer(timers, self.watermark, now_ms()) {
            Ok(outcome) => {
                self.emit(&outcome.events)?;
                for f in outcome.failures {
                    let timer = timers[f.index].clone();
                    self.fail_timer(&timer, f.message)?;
                }
                Ok(())
            }
            Err(e) if !e.is_guest_fault() => Err(e.into()),
            Err(e) if timers.len() == 1 => match self.options.on_error {
                ErrorPolicy::Fail => Err(e.into()),
                ErrorPolicy::Skip => self.fail_timer(&timers[0], e.to_string()),
            },
            Err(_) => {
                self.report.timers_fired -= timers.len() as u64;
                for t in timers {
                    self.fire(std::slice::from_ref(t))?;
                }
                Ok(())
            }
        }
    }

    /// Fires the timers of `domain` due at `upto`, including ones that
    /// firing registers, in rounds of at most a batch.
    fn fire_due(&mut self, domain: TimeDomain, upto: i64) -> Result<(), RunError> {
        // A timer may register another that is already due; stop after a
        // bounded number of rounds so a guest cannot spin the runner.
        for _ in 0..10_000 {
            let due = self
                .instance
                .state_mut()
                .take_due_timers(domain, upto)
                .map_err(|e| InstanceError::State {
                    operator: self.instance.name().to_string(),
                    message: e.0,
                })?;
            if due.is_empty() {
                return Ok(());
            }
            let timers: Vec<FiredTimer> = due
                .into_iter()
                .map(|(time, key)| FiredTimer { domain, time, key })
                .collect();
            for chunk in timers.chunks(self.options.batch_size.max(1)) {
                self.fire(chunk)?;
            }
        }
        Ok(())
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
