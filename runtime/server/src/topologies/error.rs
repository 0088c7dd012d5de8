//! [`TopologiesError`]: what a topology operation can fail with.

use weir_engine::EngineError;
use weir_topology::{Problem, Severity};

use crate::registry::RegistryError;

/// A topology operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologiesError {
    #[error(
        "{what} name {name:?} is not valid: use 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
    )]
    BadName { what: &'static str, name: String },
    #[error("the topology document ({format}) is not valid: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    #[error("the topology has {} error(s); fix them and apply it again", .0.iter().filter(|p| p.severity == Severity::Error).count())]
    Invalid(Vec<Problem>),
    #[error(
        "the document is named `{doc}` but was sent to /v1/topologies/{path}: make them the same"
    )]
    NameMismatch { doc: String, path: String },
    #[error("no topology named `{0}`: apply one with `weir topology apply FILE`")]
    NotFound(String),
    #[error("topology `{0}` is running: stop it first (`weir topology stop {0}`)")]
    Running(String),
    #[error("topology `{0}` is not running: start it first (`weir topology start {0}`)")]
    NotRunning(String),
    #[error("topology `{topology}` is busy {what}: try again when that is over")]
    Busy { topology: String, what: String },
    #[error("topology `{topology}` has no operator `{operator}` ({hint})")]
    NoSuchOperator {
        topology: String,
        operator: String,
        /// The nearest few names it has.
        hint: String,
    },
    #[error("topology `{topology}` has no savepoint `{name}`")]
    NoSuchSavepoint { topology: String, name: String },
    #[error("topology `{topology}` already has a savepoint `{name}`: pick another name")]
    SavepointExists { topology: String, name: String },
    #[error("topology `{0}` has no checkpoint to write a savepoint from: start it first")]
    NoCheckpoint(String),
    #[error(
        "topology `{0}` is stopped and has no checkpoint to read state from: start it (state is read from the running topology, or from the last checkpoint of a stopped one)"
    )]
    NoState(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("topology `{topology}`: {source}")]
    Engine {
        topology: String,
        #[source]
        source: EngineError,
    },
    #[error("topology `{topology}`: cannot bind {what}: {reason}")]
    Binding {
        topology: String,
        what: String,
        reason: String,
        /// The stream could not be opened or created (I/O), as opposed to
        /// a name that can never be bound.
        io: bool,
    },
    #[error("topology `{topology}`: {message}")]
    BadRange { topology: String, message: String },
    #[error("topology store: {what}: {reason}")]
    Io { what: String, reason: String },
}

impl TopologiesError {
    /// Whether waiting may fix it (a restart may then succeed): an I/O or
    /// engine failure of a run, not a bad document, a missing module or a
    /// state that does not fit the topology.
    pub fn recoverable(&self) -> bool {
        match self {
            TopologiesError::Engine { source, .. } => engine_recoverable(source),
            TopologiesError::Io { .. } | TopologiesError::Binding { io: true, .. } => true,
            _ => false,
        }
    }
}

/// Whether a run that failed with `e` may succeed when started again.
pub(crate) fn engine_recoverable(e: &EngineError) -> bool {
    !matches!(
        e,
        EngineError::Invalid(_)
            | EngineError::Unbound { .. }
            | EngineError::NoDeadLetter
            | EngineError::Restore(_)
            | EngineError::StateMismatch(_)
            | EngineError::Instance(weir_wasm::InstanceError::Init { .. })
    )
}
