//! weir-engine: runs Wasm operator instances over streams of events.
//!
//! - [`Job`]: a topology running in the background (`executor.rs` plans it
//!   and starts its tasks, `tasks.rs` holds the source, chain and sink
//!   threads, `routes.rs` how output reaches consumers): metrics, state
//!   queries, checkpoints and savepoints on demand, stop.
//! - [`run_topology`]: a bounded run with state in memory, blocking.
//! - Checkpoints (`checkpoint.rs`): aligned barriers, one durable commit
//!   per checkpoint, recovery to the newest one, exactly-once sinks.
//! - [`Source`] and [`Sink`] (`io.rs`): what connectors implement.
//! - [`run_operator`]: one [`OperatorInstance`] over a stream of events
//!   (`weir run --module`); [`process_isolated`]: one call with poison
//!   isolation, shared by both.
//!
//! It knows nothing of HTTP or files.
//!
//! [`OperatorInstance`]: weir_wasm::OperatorInstance

mod call;
mod checkpoint;
mod executor;
mod io;
mod job;
mod metrics;
mod routes;
mod runner;
mod tasks;

pub use call::{FailedEvent, Isolated, process_isolated};
pub use checkpoint::{CheckpointConfig, CheckpointInfo};
pub use executor::{
    Bindings, DeadLetter, DeadLetterFn, EngineError, ExecOptions, Modules, StateConfig,
    TopologyReport, run_topology,
};
pub use io::{Pull, Sink, SinkFn, Source, SourceIter, fn_sink, iter_source};
pub use job::{Job, StateValue};
pub use metrics::{InstanceMetrics, LATENCY_BUCKETS_MICROS, MetricsRegistry, MetricsSnapshot};
pub use runner::{ErrorPolicy, RunError, RunOptions, RunReport, SkippedInput, run_operator};
