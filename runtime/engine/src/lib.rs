//! weir-engine: runs Wasm operator instances over streams of events. It
//! knows nothing of HTTP, files or streams (connectors implement [`Source`]
//! and [`Sink`]).
//!
//! - [`Job`]: a topology running in the background: metrics, state
//!   queries, checkpoints and savepoints on demand, stop.
//! - [`run_topology`]: a bounded run with state in memory, blocking.
//! - [`run_operator`]: one [`OperatorInstance`] over a stream of events
//!   (`weir run --module`).
//!
//! Which file owns which job (leaves first, no import circle): the
//! engine's file map in `runtime/README.md`. In short: vocabulary in
//! `error.rs` and `protocol.rs`; decisions as plain values and state
//! machines in `policy.rs`, `align.rs`, `plan.rs`, `tracker.rs`,
//! `routes.rs`, and the scheduler's ready queue in `sched.rs`; tasks in
//! `tasks.rs`; the worker pool that runs them (`pool.rs`) and the channels
//! between them (`chan.rs`); wiring in `executor.rs`, `checkpoint.rs` (the
//! coordinator) and `job.rs`.
//!
//! [`OperatorInstance`]: weir_wasm::OperatorInstance

mod align;
mod call;
mod chan;
mod checkpoint;
mod error;
mod executor;
mod job;
mod metrics;
mod plan;
mod policy;
mod pool;
mod protocol;
mod routes;
mod runner;
mod sched;
mod tasks;
#[cfg(test)]
mod testing;
mod tracker;

pub use call::{FailedEvent, Isolated, process_isolated};
pub use checkpoint::{
    CheckpointConfig, CheckpointInfo, DEFAULT_TOLERABLE_FAILED_CHECKPOINTS, checkpoint_sources,
};
pub use error::EngineError;
pub use executor::{
    ExecOptions, Modules, StateConfig, TopologyReport, run_topology, sandbox_limits,
};
pub use job::{Job, Usage, read_checkpointed_state};
pub use metrics::{InstanceMetrics, LATENCY_BUCKETS_MICROS, MetricsRegistry, MetricsSnapshot};
pub use plan::operator_chains;
pub use pool::{PoolConfig, WorkerPool};
pub use protocol::{StateRead, StateValue};
pub use runner::{
    ErrorPolicy, RunError, RunOptions, RunReport, SIDE_OUTPUT_HEADER, SkippedInput, run_operator,
};
pub use weir_io::{
    Bindings, CheckpointRef, DeadLetter, DeadLetterFn, EndpointSnapshot, EndpointStats,
    FailureContext, FailureKind, Next, Position, Pull, Pulled, Sink, SinkFn, Source, SourceIter,
    SourceWaker, SplitStats, fn_sink, iter_source,
};
