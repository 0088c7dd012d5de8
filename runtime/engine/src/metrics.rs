//! Per-instance metrics of a running topology: plain atomics that tasks
//! bump and anyone may snapshot while the topology runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_wasm::GuestLog;

/// Upper bounds (µs) of the batch-latency histogram buckets; the last
/// bucket counts everything slower.
pub const LATENCY_BUCKETS_MICROS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Log lines an instance keeps for readers (the newest).
pub const RECENT_GUEST_LOGS: usize = 50;

/// Counters of one operator instance.
#[derive(Debug)]
pub struct InstanceMetrics {
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    /// Events the operator failed on (whatever the policy did with them).
    pub errors: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Events that arrived behind the instance's watermark.
    pub late: AtomicU64,
    /// Time spent blocked sending downstream (backpressure), in ns.
    pub blocked_nanos: AtomicU64,
    pub watermark: AtomicI64,
    latency: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    /// Sum of every batch's processing time, in µs.
    latency_sum_micros: AtomicU64,
    /// Counters the operator itself keeps (`context.counter-add`).
    guest: Mutex<BTreeMap<String, u64>>,
    /// The newest [`RECENT_GUEST_LOGS`] lines the operator logged.
    logs: Mutex<VecDeque<GuestLog>>,
}

impl Default for InstanceMetrics {
    fn default() -> Self {
        InstanceMetrics {
            events_in: AtomicU64::new(0),
            events_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            late: AtomicU64::new(0),
            blocked_nanos: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            latency: Default::default(),
            latency_sum_micros: AtomicU64::new(0),
            guest: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(VecDeque::new()),
        }
    }
}

/// A copy of an instance's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub events_in: u64,
    pub events_out: u64,
    pub errors: u64,
    pub dead_lettered: u64,
    pub late: u64,
    pub blocked: Duration,
    pub watermark: i64,
    /// Batches by processing latency, bucket `i` counting those up to
    /// `LATENCY_BUCKETS_MICROS[i]` µs (the last: slower than every bound).
    pub latency_buckets: Vec<u64>,
    /// Sum of the processing time of every batch counted in
    /// `latency_buckets`.
    pub latency_sum: Duration,
    /// The operator's own counters, by name.
    pub guest_counters: BTreeMap<String, u64>,
    /// The newest lines the operator logged, oldest first.
    pub recent_logs: Vec<GuestLog>,
}

impl InstanceMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_batch(&self, took: Duration) {
        let micros = took.as_micros() as u64;
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Adds what the guest counted.
    pub(crate) fn add_guest(&self, counters: Vec<(String, u64)>) {
        if counters.is_empty() {
            return;
        }
        if let Ok(mut guest) = self.guest.lock() {
            for (name, n) in counters {
                *guest.entry(name).or_default() += n;
            }
        }
    }

    /// Keeps what the guest logged, dropping the oldest past
    /// [`RECENT_GUEST_LOGS`].
    pub(crate) fn add_logs(&self, lines: Vec<GuestLog>) {
        if lines.is_empty() {
            return;
        }
        if let Ok(mut logs) = self.logs.lock() {
            for line in lines {
                if logs.len() == RECENT_GUEST_LOGS {
                    logs.pop_front();
                }
                logs.push_back(line);
            }
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            events_in: self.events_in.load(Ordering::Relaxed),
            events_out: self.events_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            blocked: Duration::from_nanos(self.blocked_nanos.load(Ordering::Relaxed)),
            watermark: self.watermark.load(Ordering::Relaxed),
            latency_buckets: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            latency_sum: Duration::from_micros(self.latency_sum_micros.load(Ordering::Relaxed)),
            guest_counters: self.guest.lock().map(|g| g.clone()).unwrap_or_default(),
            recent_logs: self
                .logs
                .lock()
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// The live metrics of a running topology: the executor registers every
/// operator instance here before it starts, and anyone holding the
/// registry can snapshot them while it runs.
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    instances: Mutex<Vec<(String, usize, Arc<InstanceMetrics>)>>,
}

impl MetricsRegistry {
    pub(crate) fn register(&self, operator: &str, instance: usize) -> Arc<InstanceMetrics> {
        let metrics = Arc::new(InstanceMetrics::default());
        if let Ok(mut all) = self.instances.lock() {
            all.push((operator.to_string(), instance, metrics.clone()));
        }
        metrics
    }

    /// `(operator, instance index, metrics)` of every instance, now.
    pub fn snapshot(&self) -> Vec<(String, usize, MetricsSnapshot)> {
        self.instances
            .lock()
            .map(|all| {
                all.iter()
                    .map(|(o, i, m)| (o.clone(), *i, m.snapshot()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> GuestLog {
        GuestLog {
            level: "info",
            message: format!("line {i}"),
            at_ms: i as i64,
        }
    }

    #[test]
    fn an_instance_keeps_only_its_newest_log_lines() {
        let m = InstanceMetrics::default();
        m.add_logs((0..30).map(line).collect());
        m.add_logs((30..RECENT_GUEST_LOGS + 10).map(line).collect());
        let kept = m.snapshot().recent_logs;
        assert_eq!(kept.len(), RECENT_GUEST_LOGS);
        assert_eq!(kept[0], line(10));
        assert_eq!(kept[RECENT_GUEST_LOGS - 1], line(RECENT_GUEST_LOGS + 9));
    }
}
