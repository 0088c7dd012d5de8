//! One operator call with poison isolation: a call that fails as a whole
//! is retried one event at a time (a failed call changed no state, so the
//! retry is exact), so that only the events that fail on their own are
//! reported.

use weir_io::FailureKind;
use weir_types::{Batch, Event};
use weir_wasm::{InstanceError, OperatorInstance};

/// An input event the operator failed on, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEvent {
    /// Index in the call's input batch.
    pub index: usize,
    pub event: Event,
    pub message: String,
    pub kind: FailureKind,
    /// The guest's frames when it trapped.
    pub backtrace: Vec<String>,
}

/// Why a whole call failed, in a dead letter's words: its kind and, for a
/// trap, the guest's backtrace.
pub(crate) fn failure_of(e: &InstanceError) -> (FailureKind, Vec<String>) {
    match e {
        InstanceError::Trap { backtrace, .. } => (FailureKind::Trap, backtrace.clone()),
        InstanceError::Budget { .. } => (FailureKind::OutOfTime, Vec::new()),
        InstanceError::MemoryLimit { .. } | InstanceError::TableLimit { .. } => {
            (FailureKind::MemoryCap, Vec::new())
        }
        InstanceError::HostBytes { .. } | InstanceError::OutputLimit { .. } => {
            (FailureKind::OverLimit, Vec::new())
        }
        InstanceError::InvalidOutput { .. } => (FailureKind::InvalidOutput, Vec::new()),
        _ => (FailureKind::GuestError, Vec::new()),
    }
}

/// What a call produced once failures are isolated.
#[derive(Debug, Default)]
pub struct Isolated {
    /// Main output.
    pub events: Batch,
    /// Each declared side output's events, in declaration order.
    pub side: Vec<Batch>,
    pub failed: Vec<FailedEvent>,
}

/// Appends side outputs `from` to `into`, output by output.
pub(crate) fn extend_side(into: &mut Vec<Batch>, from: &[Batch]) {
    if into.len() < from.len() {
        into.resize_with(from.len(), Batch::default);
    }
    for (to, part) in into.iter_mut().zip(from) {
        to.extend_from(part);
    }
}

/// Processes `batch`, which came from the operator's input `input`,
/// isolating failing events. Only an error that is not the guest's fault
/// (the state store) is returned as an error.
pub fn process_isolated(
    instance: &mut OperatorInstance,
    input: u32,
    batch: &mut Batch,
    watermark: i64,
    now: i64,
) -> Result<Isolated, InstanceError> {
    match instance.process_from(input, batch, watermark, now) {
        Ok(outcome) => Ok(isolated_of(outcome, batch)),
        Err(e) if !e.is_guest_fault() => Err(e),
        Err(e) if batch.len() == 1 => {
            let (kind, backtrace) = failure_of(&e);
            Ok(Isolated {
                events: Batch::default(),
                side: Vec::new(),
                failed: vec![FailedEvent {
                    index: 0,
                    event: batch
                        .iter()
                        .next()
                        .map(|e| e.to_event())
                        .unwrap_or_default(),
                    message: e.to_string(),
                    kind,
                    backtrace,
                }],
            })
        }
        Err(e) => {
            tracing::debug!(error = %e, events = batch.len(), "batch failed; retrying its events one by one");
            let events: Vec<Event> = batch.iter().map(|e| e.to_event()).collect();
            let mut out = Isolated::default();
            for (i, event) in events.iter().enumerate() {
                let mut one = Batch::with_capacity(1, event.value.len());
                one.push_event(event);
                let result = process_isolated(instance, input, &mut one, watermark, now)?;
                for ev in result.events.iter() {
                    out.events.push_ref(&ev);
                }
                extend_side(&mut out.side, &result.side);
                out.failed.extend(result.failed.into_iter().map(|mut f| {
                    f.index = i;
                    f
                }));
            }
            Ok(out)
        }
    }
}

/// A call's outcome, its per-event failures named with their events.
fn isolated_of(outcome: weir_wasm::CallOutcome, batch: &Batch) -> Isolated {
    let failed = if outcome.failures.is_empty() {
        Vec::new()
    } else {
        let events: Vec<Event> = batch.iter().map(|e| e.to_event()).collect();
        outcome
            .failures
            .into_iter()
            .map(|f| FailedEvent {
                index: f.index,
                event: events[f.index].clone(),
                message: f.message,
                kind: FailureKind::GuestError,
                backtrace: Vec::new(),
            })
            .collect()
    };
    Isolated {
        events: outcome.events,
        side: outcome.side,
        failed,
    }
}

/// As [`process_isolated`], except that a batch of several events that
/// fails as a whole is not retried here: `None` tells the caller to retry
/// its events one by one, which a task spreads over slices so that events
/// that each run to the call budget do not hold a worker all at once.
pub(crate) fn process_or_defer(
    instance: &mut OperatorInstance,
    input: u32,
    batch: &mut Batch,
    watermark: i64,
    now: i64,
) -> Result<Option<Isolated>, InstanceError> {
    if batch.len() <= 1 {
        return process_isolated(instance, input, batch, watermark, now).map(Some);
    }
    match instance.process_from(input, batch, watermark, now) {
        Ok(outcome) => Ok(Some(isolated_of(outcome, batch))),
        Err(e) if !e.is_guest_fault() => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, events = batch.len(), "batch failed; its events will be retried one by one");
            Ok(None)
        }
    }
}
