//! The lifecycle of one topology: its [`Phase`], the one function that
//! changes it ([`transition`]), and the [`Owner`] that holds it.
//!
//! Every change of a topology's phase goes through [`transition`], a plain
//! function of the phase and a [`Step`] with no I/O, unit-tested here.
//! The [`Owner`] keeps the phase behind a mutex held for bookkeeping only:
//! an operation claims a step (which may put the topology in a busy phase
//! such as `starting`, or mark it busy for an edit), releases the lock,
//! does its slow work (an engine call, a file write), then completes the
//! claim. Others meanwhile get a "busy" answer at once instead of waiting.
//! A running job is lent out as a [`JobLease`] (state queries, savepoints,
//! metrics); a stop waits until every lease is back before it takes the
//! job, without holding the lock while it waits.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde::Serialize;
use weir_engine::Job;

use super::restart::RestartTrack;

/// Where a topology is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Stopped,
    Starting,
    Running,
    /// A task failed; the topology starts again from its last checkpoint
    /// when its backoff has passed.
    Restarting,
    Stopping,
    /// It failed and will not be restarted by itself (a cause that waiting
    /// does not fix, or its restart attempts are used up); `start` tries
    /// again.
    Failed,
}

impl Phase {
    /// Whether the topology should be running in this phase.
    pub fn wants_running(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running | Phase::Restarting)
    }
}

/// What happens to a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A user (or the boot) starts it.
    Start,
    /// Its job started.
    Started,
    /// Its job could not start; `retry`: the cause may pass by waiting and
    /// a restart attempt is left.
    StartFailed { retry: bool },
    /// A user stops it.
    Stop,
    /// Its job stopped after a stop.
    Stopped,
    /// Its job ended by itself (a task failed); `retry` as above.
    Ended { retry: bool },
    /// Its restart backoff has passed.
    Retry,
    /// A user applies a new document while it does not run.
    Apply,
    /// A user changes what is stored of it while it does not run:
    /// deletes it, exports a savepoint from disk.
    Edit,
}

/// Why a step is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It runs (or is about to): stop it first.
    Running,
    /// It does not run.
    NotRunning,
    /// Another operation is under way; try again when it is over.
    Busy(Phase),
}

/// The phase after `step` from `from`, or why the step is not allowed.
/// This is the only place a phase changes.
pub fn transition(from: Phase, step: Step) -> Result<Phase, Refusal> {
    use Phase as P;
    use Step as S;
    match (from, step) {
        (P::Stopped | P::Failed | P::Restarting, S::Start) => Ok(P::Starting),
        (P::Running, S::Start) => Err(Refusal::Running),
        (P::Starting | P::Stopping, S::Start) => Err(Refusal::Busy(from)),

        (P::Starting, S::Started) => Ok(P::Running),
        (P::Starting, S::StartFailed { retry: true }) => Ok(P::Restarting),
        (P::Starting, S::StartFailed { retry: false }) => Ok(P::Failed),

        (P::Running, S::Stop) => Ok(P::Stopping),
        (P::Restarting | P::Failed, S::Stop) => Ok(P::Stopped),
        (P::Stopped, S::Stop) => Err(Refusal::NotRunning),
        (P::Starting | P::Stopping, S::Stop) => Err(Refusal::Busy(from)),

        (P::Stopping, S::Stopped) => Ok(P::Stopped),

        (P::Running, S::Ended { retry: true }) => Ok(P::Restarting),
        (P::Running, S::Ended { retry: false }) => Ok(P::Failed),

        (P::Restarting, S::Retry) => Ok(P::Starting),

        (P::Stopped | P::Failed, S::Apply) => Ok(P::Stopped),
        (P::Stopped | P::Failed, S::Edit) => Ok(from),
        (P::Running | P::Restarting, S::Apply | S::Edit) => Err(Refusal::Running),
        (P::Starting | P::Stopping, S::Apply | S::Edit) => Err(Refusal::Busy(from)),

        // Outcomes that do not match the phase come from an operation
        // that no longer owns it: they change nothing.
        (_, S::Started | S::StartFailed { .. } | S::Stopped | S::Ended { .. } | S::Retry) => {
            Err(Refusal::Busy(from))
        }
    }
}

/// What an owner holds, behind its mutex.
#[derive(Default)]
pub(crate) struct Slot {
    pub phase: PhaseCell,
    /// An edit under way (`"applying"`, `"deleting"`, ...): steps other
    /// than its own completion are refused while it lasts.
    pub busy: Option<&'static str>,
    /// The job while it runs (shared with the leases given out).
    pub job: Option<Arc<Job>>,
    /// Failures and restart attempts.
    pub restart: RestartTrack,
    /// Deleted: this owner no longer stands for the topology; callers look
    /// it up again.
    pub retired: bool,
}

/// A phase with a default (stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PhaseCell(pub Phase);

impl Default for PhaseCell {
    fn default() -> Self {
        PhaseCell(Phase::Stopped)
    }
}

/// The one owner of a topology's phase and job.
#[derive(Default)]
pub(crate) struct Owner {
    slot: Mutex<Slot>,
    /// Signalled when a lease comes back or a claim completes.
    changed: Condvar,
}

/// A claimed step: the topology is in the claimed phase and busy (others
/// are refused) until [`Claim::finish`], or until the claim is dropped,
/// which puts the phase back.
pub(crate) struct Claim<'a> {
    owner: &'a Owner,
    /// The phase before the claim, restored when it is dropped unfinished.
    before: Phase,
    done: bool,
}

/// A running job lent out; the owner's stop waits until it is back.
pub(crate) struct JobLease<'a> {
    owner: &'a Owner,
    job: Option<Arc<Job>>,
}

impl std::ops::Deref for JobLease<'_> {
    type Target = Job;
    fn deref(&self) -> &Job {
        self.job
            .as_ref()
            .expect("a lease holds its job until dropped")
    }
}

impl Drop for JobLease<'_> {
    fn drop(&mut self) {
        // The job goes back first, then the waiting stop is woken (it
        // checks the count under the lock, so no wake-up is lost).
        drop(self.job.take());
        let _slot = self.owner.lock();
        self.owner.changed.notify_all();
    }
}

/// A claim was refused, or the owner was retired meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    Refused(Refusal),
    /// Another edit is under way.
    Busy(&'static str),
    Retired,
}

impl Owner {
    pub fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase.0
    }

    /// Takes `step` now (when given) and marks the topology busy with
    /// `what` until the claim ends; refused while another claim lasts.
    pub fn claim(&self, step: Option<Step>, what: &'static str) -> Result<Claim<'_>, ClaimError> {
        let mut slot = self.lock();
        if slot.retired {
            return Err(ClaimError::Retired);
        }
        if let Some(other) = slot.busy {
            return Err(ClaimError::Busy(other));
        }
        let before = slot.phase.0;
        if let Some(step) = step {
            slot.phase.0 = transition(before, step).map_err(ClaimError::Refused)?;
        }
        slot.busy = Some(what);
        Ok(Claim {
            owner: self,
            before,
            done: false,
        })
    }

    /// When the job runs no more (it failed or its input ended) and nothing
    /// else holds the topology: claims it for recovery and takes the job.
    pub fn claim_ended_job(&self) -> Option<(Claim<'_>, Arc<Job>)> {
        let mut slot = self.lock();
        if slot.retired || slot.busy.is_some() || slot.phase.0 != Phase::Running {
            return None;
        }
        if !slot.job.as_ref().is_some_and(|j| j.is_finished()) {
            return None;
        }
        let job = slot.job.take()?;
        slot.busy = Some("recovering from a failure");
        Some((
            Claim {
                owner: self,
                before: Phase::Running,
                done: false,
            },
            job,
        ))
    }

    /// When its restart is due at `now`: claims the restart.
    pub fn claim_due_restart(&self, now: std::time::Instant) -> Option<Claim<'_>> {
        {
            let slot = self.lock();
            if slot.phase.0 != Phase::Restarting || !slot.restart.due(now) {
                return None;
            }
        }
        self.claim(Some(Step::Retry), "restarting").ok()
    }

    /// Lends the running job, if it runs.
    pub fn lease(&self) -> Option<JobLease<'_>> {
        let slot = self.lock();
        if slot.phase.0 != Phase::Running {
            return None;
        }
        slot.job.clone().map(|job| JobLease {
            owner: self,
            job: Some(job),
        })
    }

    /// Takes the job out of the slot (at the start of a stop).
    pub fn take_job(&self) -> Option<Arc<Job>> {
        self.lock().job.take()
    }

    /// Waits until no lease of `job` is out, then gives the job back
    /// whole. The lock is not held while waiting.
    pub fn reclaim(&self, mut job: Arc<Job>) -> Job {
        let mut slot = self.lock();
        loop {
            match Arc::try_unwrap(job) {
                Ok(job) => return job,
                Err(shared) => {
                    job = shared;
                    slot = self.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

impl Claim<'_> {
    /// The phase the claim came from.
    #[cfg(test)]
    pub fn before(&self) -> Phase {
        self.before
    }

    /// Completes the claim with `step` (an outcome), changing the slot
    /// with `change` under the same lock; returns the new phase.
    pub fn finish(mut self, step: Option<Step>, change: impl FnOnce(&mut Slot)) -> Phase {
        let mut slot = self.owner.lock();
        if let Some(step) = step {
            match transition(slot.phase.0, step) {
                Ok(next) => slot.phase.0 = next,
                Err(refusal) => {
                    tracing::error!(phase = ?slot.phase.0, ?step, ?refusal, "lifecycle outcome does not match the phase")
                }
            }
        }
        slot.busy = None;
        change(&mut slot);
        self.done = true;
        self.owner.changed.notify_all();
        slot.phase.0
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut slot = self.owner.lock();
        slot.phase.0 = self.before;
        slot.busy = None;
        self.owner.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: [Phase; 6] = [
        Phase::Stopped,
        Phase::Starting,
        Phase::Running,
        Phase::Restarting,
        Phase::Stopping,
        Phase::Failed,
    ];

    #[test]
    fn a_topology_starts_runs_and_stops() {
        let mut p = Phase::Stopped;
        for step in [Step::Start, Step::Started, Step::Stop, Step::Stopped] {
            p = transition(p, step).unwrap();
        }
        assert_eq!(p, Phase::Stopped);
    }

    #[test]
    fn a_failure_restarts_until_the_attempts_are_used_up() {
        let p = transition(Phase::Running, Step::Ended { retry: true }).unwrap();
        assert_eq!(p, Phase::Restarting);
        let p = transition(p, Step::Retry).unwrap();
        assert_eq!(p, Phase::Starting);
        let p = transition(p, Step::StartFailed { retry: true }).unwrap();
        assert_eq!(p, Phase::Restarting);
        let p = transition(p, Step::Retry).unwrap();
        assert_eq!(transition(p, Step::Started), Ok(Phase::Running));
        assert_eq!(
            transition(Phase::Running, Step::Ended { retry: false }),
            Ok(Phase::Failed)
        );
        assert_eq!(
            transition(Phase::Starting, Step::StartFailed { retry: false }),
            Ok(Phase::Failed)
        );
    }

    #[test]
    fn a_user_may_force_a_start_of_a_failed_or_restarting_topology() {
        assert_eq!(transition(Phase::Failed, Step::Start), Ok(Phase::Starting));
        assert_eq!(
            transition(Phase::Restarting, Step::Start),
            Ok(Phase::Starting)
        );
        assert_eq!(
            transition(Phase::Restarting, Step::Stop),
            Ok(Phase::Stopped)
        );
        assert_eq!(transition(Phase::Failed, Step::Stop), Ok(Phase::Stopped));
    }

    #[test]
    fn edits_need_a_topology_that_does_not_run() {
        for p in PHASES {
            let got = transition(p, Step::Edit);
            let applied = transition(p, Step::Apply);
            match p {
                Phase::Stopped | Phase::Failed => {
                    assert_eq!(got, Ok(p));
                    assert_eq!(applied, Ok(Phase::Stopped));
                }
                Phase::Running | Phase::Restarting => {
                    assert_eq!(got, Err(Refusal::Running));
                    assert_eq!(applied, Err(Refusal::Running));
                }
                Phase::Starting | Phase::Stopping => {
                    assert_eq!(got, Err(Refusal::Busy(p)));
                    assert_eq!(applied, Err(Refusal::Busy(p)));
                }
            }
        }
    }

    #[test]
    fn busy_phases_refuse_user_steps_and_never_change_by_them() {
        for busy in [Phase::Starting, Phase::Stopping] {
            for step in [Step::Start, Step::Stop, Step::Apply, Step::Edit] {
                assert_eq!(transition(busy, step), Err(Refusal::Busy(busy)));
            }
        }
        assert_eq!(
            transition(Phase::Running, Step::Start),
            Err(Refusal::Running)
        );
        assert_eq!(
            transition(Phase::Stopped, Step::Stop),
            Err(Refusal::NotRunning)
        );
    }

    #[test]
    fn outcomes_only_apply_to_the_phase_they_complete() {
        for p in PHASES {
            for step in [
                Step::Started,
                Step::StartFailed { retry: true },
                Step::Stopped,
                Step::Ended { retry: true },
                Step::Retry,
            ] {
                let expected_from = match step {
                    Step::Started | Step::StartFailed { .. } => Phase::Starting,
                    Step::Stopped => Phase::Stopping,
                    Step::Ended { .. } => Phase::Running,
                    _ => Phase::Restarting,
                };
                assert_eq!(
                    transition(p, step).is_ok(),
                    p == expected_from,
                    "{p:?} {step:?}"
                );
            }
        }
    }

    #[test]
    fn a_dropped_claim_restores_the_phase_and_an_edit_blocks_others() {
        let owner = Owner::default();
        {
            let claim = owner.claim(Some(Step::Start), "starting").unwrap();
            assert_eq!(claim.before(), Phase::Stopped);
            assert_eq!(owner.phase(), Phase::Starting);
            assert_eq!(
                owner.claim(Some(Step::Stop), "stopping").err(),
                Some(ClaimError::Busy("starting"))
            );
        }
        assert_eq!(owner.phase(), Phase::Stopped);
        let edit = owner.claim(Some(Step::Apply), "applying").unwrap();
        assert_eq!(
            owner.claim(Some(Step::Start), "starting").err(),
            Some(ClaimError::Busy("applying"))
        );
        edit.finish(None, |_| {});
        let start = owner.claim(Some(Step::Start), "starting").unwrap();
        assert_eq!(start.finish(Some(Step::Started), |_| {}), Phase::Running);
        assert_eq!(
            owner.claim(Some(Step::Apply), "applying").err(),
            Some(ClaimError::Refused(Refusal::Running))
        );
        // A running topology without a job lends nothing.
        assert!(owner.lease().is_none());
    }
}
