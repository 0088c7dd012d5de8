//! weir-engine: runs Wasm operator instances over streams of events.
//!
//! Today it holds the single-operator runner behind `weir run`
//! ([`run_operator`]): events in batches through one [`OperatorInstance`],
//! a bounded-out-of-orderness watermark, event- and processing-time timers,
//! and the error policy (fail, or skip and report) with poison events
//! isolated by retrying a failed batch one event at a time. Topologies
//! (DAGs, partitioning, channels) build on it.
//!
//! It knows nothing of HTTP or files: events come from an iterator and go to
//! a sink closure.
//!
//! [`OperatorInstance`]: weir_wasm::OperatorInstance

mod call;
mod executor;
mod metrics;
mod runner;

pub use call::{FailedEvent, Isolated, process_isolated};
pub use executor::{
    Bindings, DeadLetter, DeadLetterFn, EngineError, ExecOptions, Modules, SinkFn, SourceIter,
    TopologyReport, run_topology,
};
pub use metrics::{InstanceMetrics, LATENCY_BUCKETS_MICROS, MetricsSnapshot};
pub use runner::{ErrorPolicy, RunError, RunOptions, RunReport, SkippedInput, run_operator};
