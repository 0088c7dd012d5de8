//! Restart strategy: when a running topology fails, how long to wait
//! before starting it again from its last checkpoint, and when to give up.
//!
//! [`RestartPolicy`] comes from the topology's `restart:` section over the
//! server's default; [`RestartTrack`] is what the owner remembers of one
//! topology (attempts, the next try, the last failures). The decisions are
//! plain functions of those and the clock, tested here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use weir_topology::RestartDoc;

/// Failures kept per topology for its status.
pub const KEPT_FAILURES: usize = 10;

/// How a topology is restarted after a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// Restarts in a row (without a stable period between them) before
    /// the topology is `failed`; 0: never restart.
    pub max_attempts: u32,
    /// Wait before the first restart.
    pub initial_backoff: Duration,
    /// Longest wait between restarts.
    pub max_backoff: Duration,
    /// Each wait is this many times the previous one.
    pub multiplier: f64,
    /// Running this long without a failure counts as stable: the attempts
    /// and the backoff start over.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
            reset_after: Duration::from_secs(600),
        }
    }
}

impl RestartPolicy {
    /// This policy with the fields `doc` sets replaced.
    pub fn with(self, doc: Option<&RestartDoc>) -> RestartPolicy {
        let Some(doc) = doc else { return self };
        RestartPolicy {
            max_attempts: doc.max_attempts.unwrap_or(self.max_attempts),
            initial_backoff: doc
                .initial_backoff_ms
                .map(Duration::from_millis)
                .unwrap_or(self.initial_backoff),
            max_backoff: doc
                .max_backoff_ms
                .map(Duration::from_millis)
                .unwrap_or(self.max_backoff),
            multiplier: self.multiplier,
            reset_after: doc
                .reset_after_ms
                .map(Duration::from_millis)
                .unwrap_or(self.reset_after),
        }
    }

    /// The wait before restart `attempt` (1-based): exponential, capped,
    /// with up to a fifth taken off at random (`jitter` in 0..1) so that
    /// topologies failing together do not restart together.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let full = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(full * (1.0 - 0.2 * jitter.clamp(0.0, 1.0)))
    }
}

/// One failure of a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    pub cause: String,
}

/// What the owner keeps of a topology's failures and restarts.
#[derive(Debug, Clone, Default)]
pub struct RestartTrack {
    /// Restarts in a row so far.
    pub attempt: u32,
    /// When the next restart is due (while restarting).
    pub next_try: Option<Instant>,
    /// The same, ms since the Unix epoch, for the status.
    pub next_try_ms: Option<i64>,
    /// Since when the current run has been running.
    pub running_since: Option<Instant>,
    /// Restarts since the server started.
    pub restarts_total: u64,
    /// The last [`KEPT_FAILURES`] failures, oldest first.
    pub failures: VecDeque<Failure>,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterFailure {
    /// Restart (attempt n) after this wait.
    Restart { attempt: u32, after: Duration },
    /// Give up: the topology is `failed`.
    GiveUp,
}

impl RestartTrack {
    /// Records a failure with `cause` and decides what follows it.
    /// `recoverable`: waiting may fix it. `now`: the clock.
    pub fn on_failure(
        &mut self,
        policy: &RestartPolicy,
        cause: String,
        recoverable: bool,
        now: Instant,
        now_ms: i64,
        jitter: f64,
    ) -> AfterFailure {
        if self
            .running_since
            .is_some_and(|since| now.saturating_duration_since(since) >= policy.reset_after)
        {
            self.attempt = 0;
        }
        self.running_since = None;
        self.failures.push_back(Failure {
            at_ms: now_ms,
            cause,
        });
        while self.failures.len() > KEPT_FAILURES {
            self.failures.pop_front();
        }
        if !recoverable || self.attempt >= policy.max_attempts {
            self.next_try = None;
            self.next_try_ms = None;
            return AfterFailure::GiveUp;
        }
        self.attempt += 1;
        let after = policy.backoff(self.attempt, jitter);
        self.next_try = Some(now + after);
        self.next_try_ms = Some(now_ms + after.as_millis() as i64);
        AfterFailure::Restart {
            attempt: self.attempt,
            after,
        }
    }

    /// The topology is running now.
    pub fn on_running(&mut self, now: Instant) {
        self.running_since = Some(now);
        self.next_try = None;
        self.next_try_ms = None;
    }

    /// A user started or stopped it: attempts start over.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.next_try = None;
        self.next_try_ms = None;
    }

    /// Whether a restart is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next_try.is_some_and(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            multiplier: 2.0,
            reset_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens_it() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(250));
        assert_eq!(p.backoff(60, 0.0), Duration::from_millis(250));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(80));
        assert!(p.backoff(2, 0.5) < p.backoff(2, 0.0));
    }

    #[test]
    fn attempts_run_out_then_the_topology_gives_up() {
        let p = policy();
        let mut t = RestartTrack::default();
        let now = Instant::now();
        for n in 1..=3 {
            let got = t.on_failure(&p, format!("trap {n}"), true, now, 0, 0.0);
            assert!(matches!(got, AfterFailure::Restart { attempt, .. } if attempt == n));
            assert!(!t.due(now));
            assert!(t.due(now + Duration::from_secs(1)));
        }
        assert_eq!(
            t.on_failure(&p, "trap 4".into(), true, now, 0, 0.0),
            AfterFailure::GiveUp
        );
        assert_eq!(t.failures.len(), 4);
        assert_eq!(t.failures.back().unwrap().cause, "trap 4");
    }

    #[test]
    fn a_cause_that_waiting_cannot_fix_gives_up_at_once() {
        let mut t = RestartTrack::default();
        let got = t.on_failure(
            &policy(),
            "missing module".into(),
            false,
            Instant::now(),
            0,
            0.0,
        );
        assert_eq!(got, AfterFailure::GiveUp);
        assert_eq!(t.attempt, 0);
    }

    #[test]
    fn a_stable_run_resets_the_attempts() {
        let p = policy();
        let mut t = RestartTrack::default();
        let start = Instant::now();
        for _ in 0..3 {
            t.on_failure(&p, "trap".into(), true, start, 0, 0.0);
        }
        t.on_running(start);
        let later = start + Duration::from_secs(11);
        let got = t.on_failure(&p, "trap".into(), true, later, 0, 0.0);
        assert!(matches!(got, AfterFailure::Restart { attempt: 1, .. }));
        // A short run does not.
        t.on_running(later);
        let got = t.on_failure(&p, "trap".into(), true, later, 0, 0.0);
        assert!(matches!(got, AfterFailure::Restart { attempt: 2, .. }));
    }

    #[test]
    fn only_the_last_failures_are_kept() {
        let p = RestartPolicy {
            max_attempts: 100,
            ..policy()
        };
        let mut t = RestartTrack::default();
        for n in 0..25 {
            t.on_failure(&p, format!("{n}"), true, Instant::now(), 0, 0.0);
        }
        assert_eq!(t.failures.len(), KEPT_FAILURES);
        assert_eq!(t.failures.front().unwrap().cause, "15");
    }

    #[test]
    fn a_document_overrides_only_what_it_sets() {
        let doc = RestartDoc {
            max_attempts: Some(2),
            initial_backoff_ms: None,
            max_backoff_ms: Some(1000),
            reset_after_ms: None,
        };
        let p = policy().with(Some(&doc));
        assert_eq!(p.max_attempts, 2);
        assert_eq!(p.initial_backoff, Duration::from_millis(100));
        assert_eq!(p.max_backoff, Duration::from_millis(1000));
        assert_eq!(policy().with(None), policy());
    }
}
