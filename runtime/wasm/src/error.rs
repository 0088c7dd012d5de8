//! Errors of loading modules and running instances. Each says whose fault
//! it is through its variant and how to fix it in its message.

use std::time::Duration;

/// A module could not be loaded. Every variant but `Cache`, `Engine` and
/// `CompileProcess` is the uploader's fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    #[error("module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("module is empty: send the bytes of a WebAssembly component")]
    Empty,
    #[error(
        "not a WebAssembly binary (it starts with {prefix}, not the magic bytes \\0asm): send a compiled component, e.g. target/wasm32-wasip2/release/<name>.wasm"
    )]
    NotWasm { prefix: String },
    #[error(
        "this is a core WebAssembly module, not a component: build it as a component (cargo build --target wasm32-wasip2, or `wasm-tools component new`) against the weir:operator world"
    )]
    CoreModule,
    #[error("unsupported WebAssembly version or layer {found}: Weir loads components (layer 1)")]
    UnknownLayer { found: String },
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "the component is too costly to compile: {what}; split the operator, or raise the server's limit"
    )]
    TooComplex { what: String },
    #[error(
        "the component imports `{import}`, which Weir does not offer: operators may import only weir:operator/{{state,timers,context}} (and WASI, granted nothing); rebuild against Weir's wit/"
    )]
    ForbiddenImport { import: String },
    #[error("the component's imports do not match the weir:operator@{wit} world: {reason}")]
    ImportMismatch { wit: &'static str, reason: String },
    #[error(
        "the component does not export a handler this host serves ({wit}; it exports: {found}); implement the `operator` world of Weir's wit/ (wit/0.2.0 for new operators)"
    )]
    MissingExport { wit: &'static str, found: String },
    #[error(
        "the component's `weir:operator/handler@{wit}` export `{function}` does not have the contract's type ({reason}); rebuild it against Weir's wit/ (weir:operator@{wit})"
    )]
    ExportMismatch {
        wit: &'static str,
        function: &'static str,
        reason: String,
    },
    #[error(
        "the component cannot be instantiated ({reason}): its start-up code trapped, ran past the init budget, or outgrew the memory cap"
    )]
    Instantiate { reason: String },
    #[error(
        "compiling the component took longer than {limit:?} and was stopped: the module is too costly to compile; split the operator, or raise the server's --compile-timeout-ms"
    )]
    CompileTimeout { limit: Duration },
    #[error(
        "compiling the component needed more than {limit} bytes of memory and was stopped: the module is too costly to compile; split the operator, or raise the server's --compile-memory-bytes"
    )]
    CompileMemory { limit: u64 },
    #[error("the compiler process failed: {reason}")]
    CompileProcess { reason: String },
    #[error("host secret: {0}")]
    Secret(String),
    #[error("precompile cache: {0}")]
    Cache(String),
    #[error("engine setup failed: {0}")]
    Engine(String),
}

/// An operator instance failed to start or to handle a call. The instance
/// stays usable: after a trap or an overrun the next call starts a fresh
/// one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    #[error("operator `{operator}` rejected its config: {message}")]
    Init { operator: String, message: String },
    #[error("operator `{operator}` could not be instantiated: {reason}")]
    Instantiate { operator: String, reason: String },
    #[error(
        "operator `{operator}` ran longer than its call budget of {budget:?} and was stopped (an endless loop?)"
    )]
    Budget { operator: String, budget: Duration },
    #[error(
        "operator `{operator}` tried to grow its memory to {requested} bytes, over its limit of {limit} bytes, and was stopped"
    )]
    MemoryLimit {
        operator: String,
        requested: usize,
        limit: usize,
    },
    #[error(
        "operator `{operator}` tried to grow a table to {requested} elements, over its limit of {limit}, and was stopped"
    )]
    TableLimit {
        operator: String,
        requested: usize,
        limit: usize,
    },
    #[error("operator `{operator}` trapped: {message}")]
    Trap {
        operator: String,
        message: String,
        /// The guest's frames at the trap, innermost first, demangled, as
        /// its name section names them (empty for a module without one).
        backtrace: Vec<String>,
    },
    #[error(
        "operator `{operator}` handed the host over {limit} bytes of state writes in one call, and the call failed: write less per event, or give it fewer events per call"
    )]
    HostBytes { operator: String, limit: usize },
    #[error(
        "operator `{operator}` emitted {bytes} bytes of events in one call, over its limit of {limit} bytes, and the call failed: emit less per event, or raise the operator's `limits.max_output_bytes_per_call`"
    )]
    OutputLimit {
        operator: String,
        bytes: usize,
        limit: usize,
    },
    #[error("operator `{operator}` failed the batch: {message}")]
    Failed { operator: String, message: String },
    #[error("operator `{operator}` returned an invalid result: {reason}")]
    InvalidOutput { operator: String, reason: String },
    #[error("operator `{operator}`: state store failed: {message}")]
    State { operator: String, message: String },
}

impl InstanceError {
    /// Whether the guest is at fault (as opposed to the host's store).
    pub fn is_guest_fault(&self) -> bool {
        !matches!(self, InstanceError::State { .. })
    }
}
