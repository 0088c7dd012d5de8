//! The one error and timer policy, shared by topology tasks (`tasks.rs`)
//! and the single-operator runner (`runner.rs`):
//!
//! - a failure (an event or a fired timer the operator failed on) is judged
//!   by the operator's `on_error` ([`judge`]): stop, skip (logged here,
//!   once), or dead-letter; a failed timer is dead-lettered as an event
//!   with the timer's key and time and an empty value;
//! - timers are fired with failures isolated ([`fire_isolated`]): a call
//!   that fails as a whole is retried one timer at a time, as events are
//!   (`call.rs`);
//! - due timers are taken in rounds ([`TimerRounds`]), since a timer may
//!   register another already due; at most [`MAX_TIMER_ROUNDS`] rounds per
//!   advance, so a guest cannot spin a task.

use std::sync::Mutex;

use weir_io::{DeadLetter, DeadLetterFn, FailureContext, FailureKind};
use weir_topology::ErrorPolicyDoc;
use weir_types::{Batch, Event};
use weir_wasm::{FiredTimer, InstanceError, OperatorInstance, OperatorState, TimeDomain};

use crate::call::{FailedEvent, failure_of};
use crate::error::{EngineError, state_error};

/// Most rounds of due timers fired per watermark advance or tick; timers
/// still due after them fire at the next one.
pub(crate) const MAX_TIMER_ROUNDS: usize = 1_000;

/// The dead-letter output of a run, if one is bound.
pub(crate) struct DeadLetters(pub(crate) Option<Mutex<DeadLetterFn>>);

impl DeadLetters {
    pub(crate) fn send(&self, letter: DeadLetter) -> Result<(), EngineError> {
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

/// A fired timer the operator failed on, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedTimer {
    pub(crate) timer: FiredTimer,
    pub(crate) message: String,
    pub(crate) kind: FailureKind,
    pub(crate) backtrace: Vec<String>,
}

/// What an operator failed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Event(FailedEvent),
    Timer(FailedTimer),
}

impl Failure {
    /// The dead letter of this failure: the event, or for a timer an
    /// event with its key and time, an empty value and a `weir.timer`
    /// header naming its time domain. `context`: what the failing task
    /// knows of where it failed (topology, instance, module, source and
    /// offset); the failure adds its kind and backtrace.
    pub(crate) fn into_dead_letter(
        self,
        operator: &str,
        failed_at: i64,
        mut context: FailureContext,
    ) -> DeadLetter {
        let (event, error, kind, backtrace) = match self {
            Failure::Event(f) => (f.event, f.message, f.kind, f.backtrace),
            Failure::Timer(f) => {
                let domain = match f.timer.domain {
                    TimeDomain::EventTime => "event-time",
                    TimeDomain::ProcessingTime => "processing-time",
                };
                let event = Event {
                    key: Some(f.timer.key),
                    value: Vec::new(),
                    timestamp: f.timer.time,
                    headers: vec![("weir.timer".into(), domain.as_bytes().to_vec())],
                };
                (event, f.message, f.kind, f.backtrace)
            }
        };
        context.kind = kind;
        context.backtrace = backtrace;
        DeadLetter {
            operator: operator.to_string(),
            error,
            failed_at,
            event,
            context,
        }
    }
}

/// What to do with a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Stop the run with it (`on_error: fail`).
    Stop(Failure),
    /// Go on without it (`on_error: skip`); logged at debug (a run reports
    /// it once on stderr, a topology counts it in its errors).
    Skip(Failure),
    /// Hand it to the dead-letter output (`on_error: dead-letter`).
    DeadLetter(Failure),
}

/// Judges `failure` of operator `operator` under `policy`.
pub(crate) fn judge(policy: ErrorPolicyDoc, operator: &str, failure: Failure) -> Verdict {
    match policy {
        ErrorPolicyDoc::Fail => Verdict::Stop(failure),
        ErrorPolicyDoc::Skip => {
            match &failure {
                Failure::Event(f) => {
                    tracing::debug!(operator, event.index = f.index, error = %f.message, "event skipped");
                }
                Failure::Timer(f) => {
                    tracing::debug!(operator, timer.time = f.timer.time, error = %f.message, "timer skipped");
                }
            }
            Verdict::Skip(failure)
        }
        ErrorPolicyDoc::DeadLetter => Verdict::DeadLetter(failure),
    }
}

/// What firing timers produced once failures are isolated.
#[derive(Debug, Default)]
pub(crate) struct FiredTimers {
    pub(crate) events: Batch,
    /// Each declared side output's events, in declaration order.
    pub(crate) side: Vec<Batch>,
    pub(crate) failed: Vec<FailedTimer>,
}

/// Fires `timers`, isolating failing ones: a call that fails as a whole
/// (trap, overrun) is retried one timer at a time (a failed call changed
/// no state). Only an error that is not the guest's fault is returned.
pub(crate) fn fire_isolated(
    instance: &mut OperatorInstance,
    timers: &[FiredTimer],
    watermark: i64,
    now: i64,
) -> Result<FiredTimers, InstanceError> {
    match instance.on_timer(timers, watermark, now) {
        Ok(outcome) => Ok(FiredTimers {
            events: outcome.events,
            side: outcome.side,
            failed: outcome
                .failures
                .into_iter()
                .filter_map(|f| {
                    Some(FailedTimer {
                        timer: timers.get(f.index)?.clone(),
                        message: f.message,
                        kind: FailureKind::GuestError,
                        backtrace: Vec::new(),
                    })
                })
                .collect(),
        }),
        Err(e) if !e.is_guest_fault() => Err(e),
        Err(e) if timers.len() == 1 => {
            let (kind, backtrace) = failure_of(&e);
            Ok(FiredTimers {
                events: Batch::default(),
                side: Vec::new(),
                failed: vec![FailedTimer {
                    timer: timers[0].clone(),
                    message: e.to_string(),
                    kind,
                    backtrace,
                }],
            })
        }
        Err(e) => {
            tracing::debug!(error = %e, timers = timers.len(), "timer call failed; retrying its timers one by one");
            let mut out = FiredTimers::default();
            for timer in timers {
                match instance.on_timer(std::slice::from_ref(timer), watermark, now) {
                    Ok(one) => {
                        out.events.extend_from(&one.events);
                        crate::call::extend_side(&mut out.side, &one.side);
                        out.failed
                            .extend(one.failures.into_iter().map(|f| FailedTimer {
                                timer: timer.clone(),
                                message: f.message,
                                kind: FailureKind::GuestError,
                                backtrace: Vec::new(),
                            }));
                    }
                    Err(e) if !e.is_guest_fault() => return Err(e),
                    Err(e) => {
                        let (kind, backtrace) = failure_of(&e);
                        out.failed.push(FailedTimer {
                            timer: timer.clone(),
                            message: e.to_string(),
                            kind,
                            backtrace,
                        });
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The rounds of due timers of one domain up to one time.
pub(crate) struct TimerRounds {
    domain: TimeDomain,
    upto: i64,
    left: usize,
}

impl TimerRounds {
    pub(crate) fn new(domain: TimeDomain, upto: i64) -> Self {
        TimerRounds {
            domain,
            upto,
            left: MAX_TIMER_ROUNDS,
        }
    }

    /// The next round's due timers, earliest first; `None` when none are
    /// due or the rounds are used up.
    pub(crate) fn next(
        &mut self,
        operator: &str,
        state: &mut dyn OperatorState,
    ) -> Result<Option<Vec<FiredTimer>>, InstanceError> {
        if self.left == 0 {
            return Ok(None);
        }
        let due = state
            .take_due_timers(self.domain, self.upto)
            .map_err(|e| state_error(operator, e))?;
        if due.is_empty() {
            return Ok(None);
        }
        self.left -= 1;
        if self.left == 0 {
            tracing::warn!(
                operator,
                rounds = MAX_TIMER_ROUNDS,
                "timers keep registering timers already due; the rest fire at the next watermark or tick"
            );
        }
        let domain = self.domain;
        Ok(Some(
            due.into_iter()
                .map(|(time, key)| FiredTimer { domain, time, key })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_wasm::{MemoryState, StateOp};

    fn event_failure() -> Failure {
        Failure::Event(FailedEvent {
            index: 2,
            event: Event {
                key: Some(b"k".to_vec()),
                value: b"v".to_vec(),
                timestamp: 5,
                headers: Vec::new(),
            },
            message: "bad".into(),
            kind: FailureKind::GuestError,
            backtrace: Vec::new(),
        })
    }

    fn timer_failure() -> Failure {
        Failure::Timer(FailedTimer {
            timer: FiredTimer {
                domain: TimeDomain::EventTime,
                time: 40,
                key: b"user-1".to_vec(),
            },
            message: "boom".into(),
            kind: FailureKind::Trap,
            backtrace: vec!["sessions::fire".into()],
        })
    }

    #[test]
    fn each_policy_gives_its_verdict_for_events_and_timers_alike() {
        for failure in [event_failure(), timer_failure()] {
            assert_eq!(
                judge(ErrorPolicyDoc::Fail, "op", failure.clone()),
                Verdict::Stop(failure.clone())
            );
            assert_eq!(
                judge(ErrorPolicyDoc::Skip, "op", failure.clone()),
                Verdict::Skip(failure.clone())
            );
            assert_eq!(
                judge(ErrorPolicyDoc::DeadLetter, "op", failure.clone()),
                Verdict::DeadLetter(failure)
            );
        }
    }

    #[test]
    fn a_failed_timer_is_dead_lettered_with_its_key_time_and_domain() {
        let letter = timer_failure().into_dead_letter("sessions", 99, FailureContext::default());
        assert_eq!(letter.operator, "sessions");
        assert_eq!(letter.error, "boom");
        assert_eq!(letter.failed_at, 99);
        assert_eq!(letter.event.key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(letter.event.timestamp, 40);
        assert_eq!(letter.context.kind, FailureKind::Trap);
        assert_eq!(letter.context.backtrace, ["sessions::fire"]);
        assert!(letter.event.value.is_empty());
        assert_eq!(
            letter.event.headers,
            vec![("weir.timer".to_string(), b"event-time".to_vec())]
        );
        let event = event_failure()
            .into_dead_letter("op", 1, FailureContext::default())
            .event;
        assert_eq!(event.value, b"v");
        assert_eq!(event.timestamp, 5);
    }

    #[test]
    fn dead_letters_without_an_output_say_so() {
        let none = DeadLetters(None);
        let err = none
            .send(event_failure().into_dead_letter("op", 0, FailureContext::default()))
            .unwrap_err();
        assert!(matches!(err, EngineError::NoDeadLetter), "{err}");
        let failing: DeadLetterFn = Box::new(|_| Err("disk full".into()));
        let err = DeadLetters(Some(Mutex::new(failing)))
            .send(event_failure().into_dead_letter("op", 0, FailureContext::default()))
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    fn register(state: &mut MemoryState, domain: TimeDomain, time: i64, key: &[u8]) {
        state
            .apply(
                vec![StateOp::RegisterTimer {
                    domain,
                    key: key.to_vec(),
                    time,
                }],
                &[],
            )
            .expect("register");
    }

    #[test]
    fn rounds_take_due_timers_of_their_domain_earliest_first() {
        let mut state = MemoryState::new();
        register(&mut state, TimeDomain::EventTime, 30, b"b");
        register(&mut state, TimeDomain::EventTime, 10, b"a");
        register(&mut state, TimeDomain::EventTime, 99, b"late");
        register(&mut state, TimeDomain::ProcessingTime, 5, b"p");
        let mut rounds = TimerRounds::new(TimeDomain::EventTime, 50);
        let due = rounds.next("op", &mut state).unwrap().expect("due");
        let times: Vec<i64> = due.iter().map(|t| t.time).collect();
        assert_eq!(times, vec![10, 30]);
        assert!(due.iter().all(|t| t.domain == TimeDomain::EventTime));
        assert!(rounds.next("op", &mut state).unwrap().is_none());
    }

    #[test]
    fn rounds_stop_after_the_limit_when_timers_keep_coming_due() {
        let mut state = MemoryState::new();
        let mut rounds = TimerRounds::new(TimeDomain::EventTime, 0);
        let mut taken = 0;
        // Each round re-registers a due timer, as a runaway guest would.
        loop {
            register(&mut state, TimeDomain::EventTime, 0, b"k");
            match rounds.next("op", &mut state).unwrap() {
                Some(_) => taken += 1,
                None => break,
            }
        }
        assert_eq!(taken, MAX_TIMER_ROUNDS);
    }
}
