//! weir-engine: runs Wasm operator instances over streams of events.
//!
//! - [`run_topology`]: the topology executor (see `executor.rs`): sources,
//!   chains of operator instances and sinks as threads joined by bounded
//!   channels, key-group partitioning, watermarks and timers, error and
//!   lateness policies with dead letters, per-instance metrics
//!   ([`MetricsRegistry`] to read them live).
//! - [`run_operator`]: one [`OperatorInstance`] over a stream of events
//!   (`weir run --module`).
//! - [`process_isolated`]: one call with poison isolation, shared by both.
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
    StateProvider, TopologyReport, run_topology, run_topology_observed,
};
pub use metrics::{InstanceMetrics, LATENCY_BUCKETS_MICROS, MetricsRegistry, MetricsSnapshot};
pub use runner::{ErrorPolicy, RunError, RunOptions, RunReport, SkippedInput, run_operator};
