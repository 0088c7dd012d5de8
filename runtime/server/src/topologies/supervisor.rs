//! The supervisor: one thread that looks at every topology when rung (a
//! job ended, a restart was scheduled), when a restart falls due, and once
//! every [`IDLE_LOOK`] besides, and acts when one needs it, each action on
//! its own thread so a slow one never delays another topology. Idle, it
//! costs one look a second, whatever the number of topologies.
//!
//! - A running job that ended by itself (a task failed) is taken back,
//!   its cause recorded, and the restart strategy decides: `restarting`
//!   (after a backoff) or `failed`.
//! - A `restarting` topology whose backoff has passed is started again;
//!   its job restores the last completed checkpoint.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::error::engine_recoverable;
use super::lifecycle::{Owner, Phase, Step};
use super::{DesiredState, StartedBy, Topologies};
use weir_types::now_ms;

/// How often the supervisor looks when nothing rings it.
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// The least time between two looks (a ring that comes while a topology
/// is still busy is looked at again after this).
const MIN_LOOK: Duration = Duration::from_millis(10);

/// What wakes the supervisor before its next look.
#[derive(Default)]
pub(super) struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    /// Wakes the supervisor now.
    pub(super) fn ring(&self) {
        if let Ok(mut rung) = self.rung.lock() {
            *rung = true;
            self.cv.notify_one();
        }
    }

    /// Waits until rung or `timeout` passed.
    fn wait(&self, timeout: Duration) {
        let Ok(rung) = self.rung.lock() else {
            return;
        };
        let (mut rung, _) = self
            .cv
            .wait_timeout_while(rung, timeout, |r| !*r)
            .unwrap_or_else(|p| p.into_inner());
        *rung = false;
    }
}

/// A number in 0..1 that differs from call to call (restart jitter).
pub(super) fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() % 10_000) as f64 / 10_000.0
}

/// What a topology needs now.
enum Needs {
    Recovery,
    Restart,
}

fn needs(owner: &Owner, now: Instant) -> Option<Needs> {
    let slot = owner.lock();
    if slot.busy.is_some() || slot.retired {
        return None;
    }
    match slot.phase.0 {
        Phase::Running if slot.job.as_ref().is_some_and(|j| j.is_finished()) => {
            Some(Needs::Recovery)
        }
        Phase::Restarting if slot.restart.due(now) => Some(Needs::Restart),
        _ => None,
    }
}

/// Starts the supervisor of `topologies`; it ends when they are dropped.
pub(super) fn spawn(topologies: &Arc<Topologies>) {
    let weak: Weak<Topologies> = Arc::downgrade(topologies);
    let spawned = std::thread::Builder::new()
        .name("weir-supervisor".into())
        .spawn(move || {
            let mut wait = MIN_LOOK;
            loop {
                let Some(bell) = weak.upgrade().map(|t| t.bell.clone()) else {
                    return;
                };
                bell.wait(wait);
                let Some(topologies) = weak.upgrade() else {
                    return;
                };
                if topologies.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let now = Instant::now();
                let owners: Vec<(String, Arc<Owner>)> = topologies
                    .owners()
                    .iter()
                    .map(|(n, o)| (n.clone(), o.clone()))
                    .collect();
                // The next look: at the earliest restart due, at most
                // IDLE_LOOK away, at least MIN_LOOK.
                wait = IDLE_LOOK;
                for (name, owner) in owners {
                    if let Some(due) = owner.lock().restart.next_try {
                        wait = wait.min(due.saturating_duration_since(now));
                    }
                    let Some(need) = needs(&owner, now) else {
                        continue;
                    };
                    let topologies = topologies.clone();
                    let _ = std::thread::Builder::new()
                        .name(format!("weir-lifecycle-{name}"))
                        .spawn(move || match need {
                            Needs::Recovery => topologies.recover(&name, &owner),
                            Needs::Restart => topologies.restart(&name, &owner),
                        });
                }
                wait = wait.max(MIN_LOOK);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the topology supervisor: failed topologies will not restart");
    }
}

impl Topologies {
    /// A running job ended by itself: record why and decide what follows.
    fn recover(&self, name: &str, owner: &Owner) {
        let Some((claim, job)) = owner.claim_ended_job() else {
            return;
        };
        let (cause, recoverable) = match owner.reclaim(job).wait() {
            Ok(report) => {
                self.history.remember(name, report.checkpoints);
                ("all its sources ended".to_string(), false)
            }
            Err(e) => (e.to_string(), engine_recoverable(&e)),
        };
        let policy = match self.records.read(name) {
            Ok(mut record) => {
                let policy = self.restart.with(record.doc.restart.as_ref());
                record.last_error = Some(cause.clone());
                record.desired = DesiredState::Running;
                let _ = self.records.write(&record);
                policy
            }
            Err(_) => self.restart,
        };
        let retry = self.after_failure(owner, &policy, &cause, recoverable);
        let phase = claim.finish(Some(Step::Ended { retry }), |_| {});
        // Its restart (if any) is due at a time the supervisor must know.
        self.bell.ring();
        let next_ms = owner.lock().restart.next_try_ms.map(|t| t - now_ms());
        tracing::warn!(topology.name = name, cause = %cause, ?phase, next_try_in_ms = next_ms, "topology failed");
    }

    /// Its backoff has passed: start it again from its last checkpoint.
    fn restart(&self, name: &str, owner: &Owner) {
        let Some(claim) = owner.claim_due_restart(Instant::now()) else {
            return;
        };
        let attempt = {
            let mut slot = owner.lock();
            slot.restart.restarts_total += 1;
            slot.restart.attempt
        };
        tracing::info!(topology.name = name, attempt, "restarting topology");
        // A failure is recorded by `launch` itself.
        let _ = self.launch(name, owner, claim, None, StartedBy::Supervisor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_wakes_the_supervisor_before_its_look_is_due() {
        let bell = Arc::new(Bell::default());
        let ringer = bell.clone();
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ringer.ring();
        });
        bell.wait(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
        // Rung before the wait: not lost.
        bell.ring();
        let started = Instant::now();
        bell.wait(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(10));
        // Not rung: the wait lasts its timeout.
        let started = Instant::now();
        bell.wait(Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
