//! The store data of one operator instance ([`HostState`]) and the host
//! side of the contract's imports: state, timers, context. It also holds
//! the resource limiter that enforces the instance's memory and table caps.
//!
//! The imports are the same in every contract version, so one body serves
//! them all: [`Refusal`] is the version-neutral state error, and
//! `contract_imports!` implements each version's generated host traits on
//! top of the `HostState` methods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};
use weir_types::KeyGroupRange;

use crate::instance::StateKind;
use crate::limits::{MAX_STATE_NAME_BYTES, SandboxLimits};
use crate::secret::RandomSeed;
use crate::state::{OperatorState, PendingWrites, StateOp, TimeDomain};
use crate::stderr::StderrTail;
use crate::ttl::{Entry, TtlClock, TtlTable};

/// Why the limiter stopped a guest; read back after the trap to say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Memory { requested: usize, limit: usize },
    Table { requested: usize, limit: usize },
}

/// Error value the limiter returns to trap the guest.
#[derive(Debug)]
pub(crate) struct LimitExceeded;

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sandbox limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

/// Most log lines of one call kept for [`GuestLog`] readers (all of them
/// still go to the host's log).
pub const MAX_KEPT_LOGS_PER_CALL: usize = 16;

/// A line an operator logged, as kept for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLog {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// Cut at [`SandboxLimits::max_log_bytes`].
    pub message: String,
    /// Wall clock when it was logged, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Store data of one operator instance.
pub struct HostState {
    pub(crate) operator: Arc<str>,
    pub(crate) limits: SandboxLimits,
    pub(crate) limit_hit: Option<LimitHit>,
    /// Linear memory the instance holds, bytes (what it grew to).
    pub(crate) memory_bytes: usize,
    pub(crate) state: Box<dyn OperatorState>,
    pub(crate) pending: PendingWrites,
    /// Set when a write was refused for going over
    /// [`SandboxLimits::max_call_host_bytes`]: the call then fails.
    pub(crate) host_bytes_over: bool,
    /// Key groups this instance owns; state and timers of other keys are
    /// refused.
    pub(crate) owned: KeyGroupRange,
    /// Counters the guest added to since they were last taken.
    pub(crate) counters: BTreeMap<String, u64>,
    /// The first [`MAX_KEPT_LOGS_PER_CALL`] lines logged since they were
    /// last taken.
    pub(crate) logs: Vec<GuestLog>,
    /// WASI with nothing granted: no files, network, environment or args;
    /// clocks pinned to the call's processing time, randomness seeded.
    /// Served only because toolchains import it (Rust's std, Python, JS).
    wasi: WasiCtx,
    table: ResourceTable,
    /// The last of what the guest wrote to stderr, for trap messages.
    pub(crate) stderr: StderrTail,
    /// The host's clock as the guest may see it: the current call's
    /// processing time (ms), so that a replayed call reads the same time.
    pub(crate) clock: CallClock,
    /// The states the operator declared with a time to live, and the
    /// current call's clocks for them (`ttl.rs`).
    pub(crate) ttls: TtlTable,
    pub(crate) ttl_clock: TtlClock,
}

/// WASI's wall and monotonic clocks, pinned to the processing time the host
/// passes with each call (guests get no clock of their own).
#[derive(Debug, Clone, Default)]
pub(crate) struct CallClock(Arc<AtomicI64>);

impl CallClock {
    pub(crate) fn set(&self, processing_time_ms: i64) {
        self.0.fetch_max(processing_time_ms, Ordering::Relaxed);
    }

    fn millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }
}

impl HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.millis())
    }
}

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    /// One nanosecond past the processing time: never zero, since Go's
    /// runtime refuses to start on a monotonic clock that reads zero (it
    /// reads it while instantiated, before any call sets the time).
    fn now(&self) -> u64 {
        self.millis().saturating_mul(1_000_000).saturating_add(1)
    }
}

impl HostState {
    pub(crate) fn new(
        operator: Arc<str>,
        seed: RandomSeed,
        limits: SandboxLimits,
        state: Box<dyn OperatorState>,
        owned: KeyGroupRange,
    ) -> Self {
        let stderr = StderrTail::default();
        let clock = CallClock::default();
        let mut insecure_seed = [0u8; 16];
        insecure_seed.copy_from_slice(&seed.insecure[..16]);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            .secure_random(StdRng::from_seed(seed.secure))
            .insecure_random(StdRng::from_seed(seed.insecure))
            .insecure_random_seed(u128::from_le_bytes(insecure_seed))
            .build();
        HostState {
            operator,
            limits,
            limit_hit: None,
            memory_bytes: 0,
            state,
            pending: PendingWrites::default(),
            host_bytes_over: false,
            owned,
            counters: BTreeMap::new(),
            logs: Vec::new(),
            wasi,
            table: ResourceTable::new(),
            stderr,
            clock,
            ttls: TtlTable::default(),
            ttl_clock: TtlClock::default(),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Refusal> {
        let limit = self.limits.max_state_key_bytes;
        if key.len() > limit {
            return Err(Refusal::TooLarge(limit as u32));
        }
        if !self.owned.owns(key) {
            return Err(Refusal::KeyNotOwned);
        }
        Ok(())
    }

    fn check_value(&self, name: &str, bytes: usize) -> Result<(), Refusal> {
        let limit = self.limits.max_state_value_bytes;
        if bytes > limit || name.len() > limit {
            return Err(Refusal::TooLarge(limit as u32));
        }
        Ok(())
    }

    fn record(&mut self, op: StateOp) -> Result<(), Refusal> {
        let limit = self.limits.max_pending_writes;
        if self.pending.count() >= limit {
            return Err(Refusal::Unavailable(format!(
                "more than {limit} state writes in one call; split the work over more events"
            )));
        }
        if let Some((name, _)) = crate::state::target(&op)
            && name.len() > MAX_STATE_NAME_BYTES
        {
            return Err(Refusal::Unavailable(format!(
                "state name of {} bytes: a state name is at most {MAX_STATE_NAME_BYTES} bytes",
                name.len()
            )));
        }
        let limit = self.limits.max_call_host_bytes;
        let bytes = self.pending.bytes() + crate::state::op_bytes(&op);
        if bytes > limit {
            // The call fails as a whole once it returns (see
            // `OperatorInstance::finish_call`); until then each write is
            // refused, so host memory stays under the cap.
            self.host_bytes_over = true;
            return Err(Refusal::Unavailable(format!(
                "this call's state writes would hold {bytes} bytes, over the limit of {limit} bytes per call; the call fails"
            )));
        }
        self.pending.push(op);
        Ok(())
    }
}

/// One entry of a map state: map key and value.
type MapEntry = (Vec<u8>, Vec<u8>);

/// Why the host refused a state or timer call, whatever the contract
/// version; each version's `state-error` is made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    KeyNotOwned,
    TooLarge(u32),
    Unavailable(String),
}

fn unavailable(err: crate::state::StateStoreError) -> Refusal {
    Refusal::Unavailable(err.0)
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.memory_bytes;
        if desired > limit {
            self.limit_hit = Some(LimitHit::Memory {
                requested: desired,
                limit,
            });
            return Err(LimitExceeded.into());
        }
        self.memory_bytes = self.memory_bytes.saturating_sub(current) + desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.table_elements;
        if desired > limit {
            self.limit_hit = Some(LimitHit::Table {
                requested: desired,
                limit,
            });
            return Err(LimitExceeded.into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}

/// The imports' work, version-neutral: each contract version's host traits
/// call these (see `contract_imports!`).
impl HostState {
    /// `payload` as stored for state `name` of `kind`: stamped when the
    /// state has a TTL.
    fn stored(&self, kind: StateKind, name: &str, payload: Vec<u8>) -> Vec<u8> {
        match self.ttls.get(kind, name) {
            Some(ttl) => ttl.stamp(&self.ttl_clock, &payload),
            None => payload,
        }
    }

    fn value_get(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
        self.check_key(key)?;
        let stored = self
            .pending
            .value(self.state.as_mut(), name, key)
            .map_err(unavailable)?;
        let Some(ttl) = self.ttls.get(StateKind::Value, name).cloned() else {
            return Ok(stored);
        };
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let (name, key) = (name.to_string(), key.to_vec());
        match ttl.read(&self.ttl_clock, &bytes) {
            Entry::Expired => {
                self.record(StateOp::SetValue {
                    name,
                    key,
                    value: None,
                })?;
                Ok(None)
            }
            Entry::Live(payload) => {
                let payload = payload.to_vec();
                if ttl.refresh_on_read() {
                    let value = Some(ttl.stamp(&self.ttl_clock, &payload));
                    self.record(StateOp::SetValue { name, key, value })?;
                }
                Ok(Some(payload))
            }
        }
    }

    fn value_set(
        &mut self,
        name: String,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), Refusal> {
        self.check_key(&key)?;
        self.check_value(&name, value.as_ref().map_or(0, Vec::len))?;
        let value = value.map(|v| self.stored(StateKind::Value, &name, v));
        self.record(StateOp::SetValue { name, key, value })
    }

    fn map_get(
        &mut self,
        name: &str,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal> {
        self.check_key(key)?;
        let stored = self
            .pending
            .map_entry(self.state.as_mut(), name, key, map_key)
            .map_err(unavailable)?;
        let Some(ttl) = self.ttls.get(StateKind::Map, name).cloned() else {
            return Ok(stored);
        };
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let (name, key, map_key) = (name.to_string(), key.to_vec(), map_key.to_vec());
        match ttl.read(&self.ttl_clock, &bytes) {
            Entry::Expired => {
                self.record(StateOp::MapRemove { name, key, map_key })?;
                Ok(None)
            }
            Entry::Live(payload) => {
                let payload = payload.to_vec();
                if ttl.refresh_on_read() {
                    let value = ttl.stamp(&self.ttl_clock, &payload);
                    self.record(StateOp::MapPut {
                        name,
                        key,
                        map_key,
                        value,
                    })?;
                }
                Ok(Some(payload))
            }
        }
    }

    fn map_put(
        &mut self,
        name: String,
        key: Vec<u8>,
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), Refusal> {
        self.check_key(&key)?;
        self.check_value(&name, value.len() + map_key.len())?;
        let value = self.stored(StateKind::Map, &name, value);
        self.record(StateOp::MapPut {
            name,
            key,
            map_key,
            value,
        })
    }

    fn map_remove(&mut self, name: String, key: Vec<u8>, map_key: Vec<u8>) -> Result<(), Refusal> {
        self.check_key(&key)?;
        self.record(StateOp::MapRemove { name, key, map_key })
    }

    fn map_entries(&mut self, name: &str, key: &[u8]) -> Result<Vec<MapEntry>, Refusal> {
        self.check_key(key)?;
        let map = self
            .pending
            .map(self.state.as_mut(), name, key)
            .map_err(unavailable)?;
        let Some(ttl) = self.ttls.get(StateKind::Map, name).cloned() else {
            return Ok(map.into_iter().collect());
        };
        let mut live = Vec::with_capacity(map.len());
        for (map_key, bytes) in map {
            match ttl.read(&self.ttl_clock, &bytes) {
                Entry::Expired => self.record(StateOp::MapRemove {
                    name: name.to_string(),
                    key: key.to_vec(),
                    map_key,
                })?,
                Entry::Live(payload) => {
                    let payload = payload.to_vec();
                    if ttl.refresh_on_read() {
                        self.record(StateOp::MapPut {
                            name: name.to_string(),
                            key: key.to_vec(),
                            map_key: map_key.clone(),
                            value: ttl.stamp(&self.ttl_clock, &payload),
                        })?;
                    }
                    live.push((map_key, payload));
                }
            }
        }
        Ok(live)
    }

    fn map_clear(&mut self, name: String, key: Vec<u8>) -> Result<(), Refusal> {
        self.check_key(&key)?;
        self.record(StateOp::MapClear { name, key })
    }

    fn list_get(&mut self, name: &str, key: &[u8]) -> Result<Vec<Vec<u8>>, Refusal> {
        self.check_key(key)?;
        let items = self
            .pending
            .list(self.state.as_mut(), name, key)
            .map_err(unavailable)?;
        let Some(ttl) = self.ttls.get(StateKind::List, name).cloned() else {
            return Ok(items);
        };
        let mut live = Vec::with_capacity(items.len());
        let mut kept = Vec::with_capacity(items.len());
        for bytes in &items {
            if let Entry::Live(payload) = ttl.read(&self.ttl_clock, bytes) {
                live.push(payload.to_vec());
                kept.push(if ttl.refresh_on_read() {
                    ttl.stamp(&self.ttl_clock, payload)
                } else {
                    bytes.clone()
                });
            }
        }
        // Items expired, or all were restamped: the list is written back.
        if kept.len() < items.len() || ttl.refresh_on_read() {
            self.record(StateOp::ListReplace {
                name: name.to_string(),
                key: key.to_vec(),
                items: kept,
            })?;
        }
        Ok(live)
    }

    fn list_append(&mut self, name: String, key: Vec<u8>, item: Vec<u8>) -> Result<(), Refusal> {
        self.check_key(&key)?;
        self.check_value(&name, item.len())?;
        let item = self.stored(StateKind::List, &name, item);
        self.record(StateOp::ListAppend { name, key, item })
    }

    fn list_replace(
        &mut self,
        name: String,
        key: Vec<u8>,
        items: Vec<Vec<u8>>,
    ) -> Result<(), Refusal> {
        self.check_key(&key)?;
        self.check_value(&name, items.iter().map(Vec::len).sum())?;
        let items = items
            .into_iter()
            .map(|i| self.stored(StateKind::List, &name, i))
            .collect();
        self.record(StateOp::ListReplace { name, key, items })
    }

    fn timer(
        &mut self,
        register: bool,
        domain: TimeDomain,
        key: Vec<u8>,
        time: i64,
    ) -> Result<(), Refusal> {
        self.check_key(&key)?;
        self.record(if register {
            StateOp::RegisterTimer { domain, key, time }
        } else {
            StateOp::DeleteTimer { domain, key, time }
        })
    }

    fn log(&mut self, level: tracing::Level, message: &str) {
        let limit = self.limits.max_log_bytes;
        let mut end = message.len().min(limit);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message[..end];
        let operator = &*self.operator;
        if self.logs.len() < MAX_KEPT_LOGS_PER_CALL {
            self.logs.push(GuestLog {
                level: match level {
                    tracing::Level::TRACE => "trace",
                    tracing::Level::DEBUG => "debug",
                    tracing::Level::INFO => "info",
                    tracing::Level::WARN => "warn",
                    tracing::Level::ERROR => "error",
                },
                message: text.to_string(),
                at_ms: weir_types::now_ms(),
            });
        }
        match level {
            tracing::Level::TRACE => tracing::trace!(target: "weir::guest", operator, "{text}"),
            tracing::Level::DEBUG => tracing::debug!(target: "weir::guest", operator, "{text}"),
            tracing::Level::INFO => tracing::info!(target: "weir::guest", operator, "{text}"),
            tracing::Level::WARN => tracing::warn!(target: "weir::guest", operator, "{text}"),
            tracing::Level::ERROR => tracing::error!(target: "weir::guest", operator, "{text}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        if name.len() <= 128 && (self.counters.len() < 256 || self.counters.contains_key(&name)) {
            let c = self.counters.entry(name).or_default();
            *c = c.saturating_add(delta);
        }
    }
}

/// Implements the generated host traits of contract version `$v` (a module
/// of [`crate::bindings`]) on [`HostState`]'s version-neutral methods.
macro_rules! contract_imports {
    ($v:ident) => {
        const _: () = {
            use crate::bindings::$v::weir::operator::{context, state, timers, types};

            fn refused(r: Refusal) -> state::StateError {
                match r {
                    Refusal::KeyNotOwned => state::StateError::KeyNotOwned,
                    Refusal::TooLarge(limit) => state::StateError::TooLarge(limit),
                    Refusal::Unavailable(why) => state::StateError::Unavailable(why),
                }
            }

            fn domain(d: types::TimeDomain) -> TimeDomain {
                match d {
                    types::TimeDomain::EventTime => TimeDomain::EventTime,
                    types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
                }
            }

            impl types::Host for HostState {}

            impl state::Host for HostState {
                fn value_get(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                ) -> Result<Option<Vec<u8>>, state::StateError> {
                    HostState::value_get(self, &name, &key).map_err(refused)
                }
                fn value_set(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                    value: Option<Vec<u8>>,
                ) -> Result<(), state::StateError> {
                    HostState::value_set(self, name, key, value).map_err(refused)
                }
                fn map_get(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                    map_key: Vec<u8>,
                ) -> Result<Option<Vec<u8>>, state::StateError> {
                    HostState::map_get(self, &name, &key, &map_key).map_err(refused)
                }
                fn map_put(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                    map_key: Vec<u8>,
                    value: Vec<u8>,
                ) -> Result<(), state::StateError> {
                    HostState::map_put(self, name, key, map_key, value).map_err(refused)
                }
                fn map_remove(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                    map_key: Vec<u8>,
                ) -> Result<(), state::StateError> {
                    HostState::map_remove(self, name, key, map_key).map_err(refused)
                }
                fn map_entries(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, state::StateError> {
                    HostState::map_entries(self, &name, &key).map_err(refused)
                }
                fn map_clear(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                ) -> Result<(), state::StateError> {
                    HostState::map_clear(self, name, key).map_err(refused)
                }
                fn list_get(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                ) -> Result<Vec<Vec<u8>>, state::StateError> {
                    HostState::list_get(self, &name, &key).map_err(refused)
                }
                fn list_append(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                    item: Vec<u8>,
                ) -> Result<(), state::StateError> {
                    HostState::list_append(self, name, key, item).map_err(refused)
                }
                fn list_replace(
                    &mut self,
                    name: String,
                    key: Vec<u8>,
                    items: Vec<Vec<u8>>,
                ) -> Result<(), state::StateError> {
                    HostState::list_replace(self, name, key, items).map_err(refused)
                }
            }

            impl timers::Host for HostState {
                fn register(
                    &mut self,
                    d: types::TimeDomain,
                    key: Vec<u8>,
                    time: i64,
                ) -> Result<(), state::StateError> {
                    self.timer(true, domain(d), key, time).map_err(refused)
                }
                fn delete(
                    &mut self,
                    d: types::TimeDomain,
                    key: Vec<u8>,
                    time: i64,
                ) -> Result<(), state::StateError> {
                    self.timer(false, domain(d), key, time).map_err(refused)
                }
            }

            impl context::Host for HostState {
                fn log(&mut self, level: context::LogLevel, message: String) {
                    let level = match level {
                        context::LogLevel::Trace => tracing::Level::TRACE,
                        context::LogLevel::Debug => tracing::Level::DEBUG,
                        context::LogLevel::Info => tracing::Level::INFO,
                        context::LogLevel::Warn => tracing::Level::WARN,
                        context::LogLevel::Error => tracing::Level::ERROR,
                    };
                    HostState::log(self, level, &message);
                }
                fn counter_add(&mut self, name: String, delta: u64) {
                    HostState::counter_add(self, name, delta);
                }
                fn operator_name(&mut self) -> String {
                    self.operator.to_string()
                }
            }
        };
    };
}

contract_imports!(v0_1);
contract_imports!(v0_2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryState;

    fn host() -> HostState {
        let seed = RandomSeed {
            secure: [0; 32],
            insecure: [0; 32],
        };
        HostState::new(
            "op".into(),
            seed,
            SandboxLimits::default(),
            Box::new(MemoryState::new()),
            KeyGroupRange::for_instance(0, 1, 128),
        )
    }

    fn set(name: String) -> StateOp {
        StateOp::SetValue {
            name,
            key: b"k".to_vec(),
            value: Some(b"1".to_vec()),
        }
    }

    #[test]
    fn a_state_name_over_its_bound_is_refused_before_it_is_kept() {
        let mut host = host();
        let err = host
            .record(set("n".repeat(MAX_STATE_NAME_BYTES + 1)))
            .unwrap_err();
        let Refusal::Unavailable(message) = err else {
            panic!("{err:?}");
        };
        assert!(message.contains("at most 1024 bytes"), "{message}");
        assert_eq!(host.pending.count(), 0);
        host.record(set("n".repeat(MAX_STATE_NAME_BYTES))).unwrap();
        assert_eq!(host.pending.count(), 1);
    }
}
