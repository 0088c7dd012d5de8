//! How the sinks outside Weir (PostgreSQL, HTTP) retry: a doubling wait
//! between attempts, up to a cap, for a bounded number of retries. After the
//! last one the sink fails and the topology restarts from its checkpoint.

use std::time::Duration;

/// Retries with a doubling wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Retries after the first attempt (0: fail at once).
    pub retries: u32,
    /// Wait before the first retry.
    pub first: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    /// 8 retries from 100 ms doubling to 5 s: about 16 s of waiting, long
    /// enough for a database restart.
    fn default() -> Self {
        Backoff {
            retries: 8,
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before retry `retry` (0-based), or `None` when retries are
    /// used up.
    pub fn wait(&self, retry: u32) -> Option<Duration> {
        (retry < self.retries).then(|| {
            self.first
                .saturating_mul(2u32.saturating_pow(retry.min(30)))
                .min(self.max)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_then_stop() {
        let b = Backoff {
            retries: 4,
            first: Duration::from_millis(100),
            max: Duration::from_millis(300),
        };
        let waits: Vec<Option<Duration>> = (0..5).map(|r| b.wait(r)).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(waits, [ms(100), ms(200), ms(300), ms(300), None]);
        assert_eq!(Backoff { retries: 0, ..b }.wait(0), None);
    }
}
