//! Sandbox limits of an operator instance and of module loading.

use std::time::Duration;

/// Largest module accepted for loading. Components of interpreted
/// languages are large (Python ~18 MB, JavaScript ~12 MB).
pub const DEFAULT_MAX_MODULE_BYTES: usize = 64 << 20;
/// Linear memory an instance may grow to.
/// Default of [`SandboxLimits::max_call_host_bytes`].
pub const DEFAULT_MAX_CALL_HOST_BYTES: usize = 64 << 20;
/// Default of [`SandboxLimits::max_output_bytes_per_call`].
pub const DEFAULT_MAX_OUTPUT_BYTES_PER_CALL: usize = 64 << 20;
/// Longest state name (stored with a 16-bit length; kept short).
pub const MAX_STATE_NAME_BYTES: usize = 1024;
pub const DEFAULT_MEMORY_BYTES: usize = 256 << 20;
/// Wall-clock time one `process` or `on-timer` call may run.
pub const DEFAULT_CALL_BUDGET: Duration = Duration::from_secs(2);
/// Wall-clock time `init` (and instantiation) may run: interpreters start
/// slower than a batch runs.
pub const DEFAULT_INIT_BUDGET: Duration = Duration::from_secs(10);
/// How often the engine's epoch advances; the granularity of budgets.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Caps that keep one operator instance from hurting the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Elements one table may grow to.
    pub table_elements: usize,
    /// Core instances, tables and memories one component may create.
    pub instances: usize,
    pub tables: usize,
    pub memories: usize,
    /// Time one `process`/`on-timer` call may run before it is stopped.
    pub call_budget: Duration,
    /// Time instantiation plus `init` may run.
    pub init_budget: Duration,
    /// Largest state value (or map entry, or list) one write may store.
    pub max_state_value_bytes: usize,
    /// Largest key state may be scoped to.
    pub max_state_key_bytes: usize,
    /// State writes and timer changes one call may make through imports.
    pub max_pending_writes: usize,
    /// Bytes (names, keys, values) of the state writes and timer changes
    /// one call may hand the host: they are held in host memory until the
    /// call ends, which the guest's memory cap does not cover. Over it,
    /// the call fails.
    pub max_call_host_bytes: usize,
    /// Longest log line kept; the rest is cut.
    pub max_log_bytes: usize,
    /// Bytes of events (keys, values, header names and values) one call
    /// may emit; over it, the call fails.
    pub max_output_bytes_per_call: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            table_elements: 100_000,
            instances: 64,
            tables: 64,
            memories: 16,
            call_budget: DEFAULT_CALL_BUDGET,
            init_budget: DEFAULT_INIT_BUDGET,
            max_state_value_bytes: 1 << 20,
            max_state_key_bytes: 64 << 10,
            max_pending_writes: 1_000_000,
            max_call_host_bytes: DEFAULT_MAX_CALL_HOST_BYTES,
            max_log_bytes: 4096,
            max_output_bytes_per_call: DEFAULT_MAX_OUTPUT_BYTES_PER_CALL,
        }
    }
}
