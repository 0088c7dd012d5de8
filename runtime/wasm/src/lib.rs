//! weir-wasm: Weir's Wasm host. It runs operator components of the
//! `weir:operator` world (`wit/`) in wasmtime, each instance sandboxed.
//!
//! - [`WasmHost`] owns the one wasmtime `Engine` of the process (Cranelift,
//!   epoch interruption, unused proposals off), the `Linker` with the
//!   contract's imports, and the epoch ticker that enforces time budgets.
//! - [`WasmHost::load`] validates bytes as an operator component (Wasm, a
//!   component not a core module, within size, importing only what the
//!   world offers, exporting its handler) and compiles it once, through an
//!   on-disk cache of precompiled artifacts keyed by digest and engine;
//!   with a [`CompileSandbox`] the compile runs in a child process bounded
//!   in memory and time (`child.rs`).
//! - [`OperatorInstance`] is one running instance in its own `Store`: memory
//!   and table caps, a time budget per call, no ambient capabilities. It
//!   turns a [`weir_types::Batch`] into one `process` call, passing the value
//!   state of the batch's keys in and applying the state changes that come
//!   out only if the call succeeds. A trap or budget overrun is a typed
//!   [`InstanceError`] naming the operator; the next call re-instantiates.
//! - [`OperatorState`] (from `weir-state-contract`, re-exported) is how the
//!   host reaches keyed state; `weir-state` implements it,
//!   [`MemoryState`] is the in-memory one.
//!
//! Not here: routing events to instances, watermarks, checkpoints, durable
//! state (the engine and state crates).

mod cache;
mod child;
mod error;
mod host;
mod instance;
mod limits;
mod loader;
mod producers;
mod secret;
mod shape;
mod state;
mod stderr;
mod trap;
mod ttl;

pub use child::{
    CompileSandbox, DEFAULT_COMPILE_MEMORY_BYTES, DEFAULT_COMPILE_TIMEOUT, EXIT_INVALID,
    serve_compile_request,
};
pub use error::{InstanceError, ModuleError};
pub use host::{GuestLog, HostState, MAX_KEPT_LOGS_PER_CALL};
pub use instance::{
    CallOutcome, EventFailure, FiredTimer, OperatorInstance, StateKind, StateTtl, TtlRefresh,
};
pub use limits::{
    DEFAULT_CALL_BUDGET, DEFAULT_INIT_BUDGET, DEFAULT_MAX_MODULE_BYTES, DEFAULT_MEMORY_BYTES,
    EPOCH_TICK, SandboxLimits,
};
pub use loader::{HostConfig, ModuleInfo, OperatorModule, WasmHost};
pub use producers::source_language;
pub use secret::HostSecret;
pub use shape::{
    DEFAULT_MAX_CODE_BYTES, DEFAULT_MAX_FUNCTION_BODY_BYTES, DEFAULT_MAX_FUNCTION_LOCALS,
    DEFAULT_MAX_FUNCTIONS, ShapeLimits,
};
pub use state::{MemoryState, OperatorState, StateOp, StateStoreError, TimeDomain, ValueWrite};
pub use weir_state_contract::{RowTable, SnapshotRow, StateSnapshot};

/// The newest version of the `weir:operator` package this host implements.
pub const WIT_VERSION: &str = "0.2.0";

/// Every version of the `weir:operator` package this host serves, newest
/// first. A component built for any of them loads; older ones are adapted
/// to the newest (`instance.rs`), never rejected.
pub const WIT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

/// The contract's bindings, one module per version, generated from `wit/`
/// (0.1.0, the root) and `wit/0.2.0/`.
pub mod bindings {
    /// `weir:operator@0.1.0`: one input, one output, no state TTL.
    pub mod v0_1 {
        wasmtime::component::bindgen!({
            world: "operator",
            path: "../../wit",
        });
    }

    /// `weir:operator@0.2.0`: the input index, side outputs, state TTL.
    pub mod v0_2 {
        wasmtime::component::bindgen!({
            world: "operator",
            path: "../../wit/0.2.0",
        });
    }
}

/// The contract's time domain as the (newest) WIT bindings spell it.
pub(crate) fn wit_domain(domain: TimeDomain) -> bindings::v0_2::weir::operator::types::TimeDomain {
    use bindings::v0_2::weir::operator::types::TimeDomain as Wit;
    match domain {
        TimeDomain::EventTime => Wit::EventTime,
        TimeDomain::ProcessingTime => Wit::ProcessingTime,
    }
}
