//! [`EngineError`]: why a topology could not start or stopped. A leaf: every
//! other module of the engine may use it, it uses none of them.

use weir_topology::Problem;
use weir_wasm::InstanceError;

/// Why a topology could not run or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("the topology has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("{what} `{name}` is not bound: give it an input or output")]
    Unbound { what: &'static str, name: String },
    #[error("operators use on_error or on_late: dead-letter but no dead-letter output is bound")]
    NoDeadLetter,
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(
        "operator `{operator}` failed on an event ({event}; on_error: fail): {message}; use on_error: skip or dead-letter to go on past failing events"
    )]
    EventFailed {
        operator: String,
        /// Which event: its source and offset when it came straight from
        /// a source, and its key.
        event: String,
        message: String,
    },
    #[error(
        "operator `{operator}` failed in a timer at {time} (on_error: fail): {message}; use on_error: skip or dead-letter to go on past failing timers"
    )]
    TimerFailed {
        operator: String,
        time: i64,
        message: String,
    },
    #[error("source `{source_name}` failed: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("sink `{sink}` failed: {message}")]
    Sink { sink: String, message: String },
    #[error("dead-letter output failed: {0}")]
    DeadLetter(String),
    #[error("state store: {0}")]
    State(#[from] weir_state::StateError),
    #[error("cannot restore the checkpoint: {0}")]
    Restore(String),
    /// The checkpoint or savepoint is sound but does not fit the topology
    /// (an operator gone, value states renamed, other key groups): the
    /// user's to fix, not a failure of the run.
    #[error("the state to restore does not fit the topology: {0}")]
    StateMismatch(String),
    #[error("checkpoint failed: {0}")]
    Checkpoint(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("a task stopped unexpectedly: {0}")]
    Internal(String),
}

/// A state-store failure of operator `operator`, as an instance error.
pub(crate) fn state_error(operator: &str, e: weir_wasm::StateStoreError) -> InstanceError {
    InstanceError::State {
        operator: operator.to_string(),
        message: e.0,
    }
}
