//! [`OperatorInstance`]: one sandboxed instance of an operator module, and
//! the translation between Weir batches and the contract's calls.

use foldhash::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap, WasmBacktrace};
use weir_types::{Batch, KeyGroupRange};

use crate::InstanceError;
use crate::bindings::Operator;
use crate::bindings::weir::operator::types::{
    CallContext, CallOutput, EventBatch, FiredTimers, Header, ProcessInput, StateCells,
    StateChanges, TimerInput,
};
use crate::host::{GuestLog, HostState, LimitHit};
use crate::limits::{EPOCH_TICK, SandboxLimits};
use crate::loader::OperatorModule;
use crate::secret::RandomSeed;
use crate::state::{OperatorState, TimeDomain, ValueWrite};

/// One input of a call that the operator reported as failed; the caller
/// applies the error policy to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFailure {
    /// Index of the event (or timer) in the call's input.
    pub index: usize,
    pub message: String,
}

/// The result of a successful call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub events: Batch,
    pub failures: Vec<EventFailure>,
}

/// A timer that fired, to hand to `on-timer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer {
    pub domain: TimeDomain,
    pub time: i64,
    pub key: Vec<u8>,
}

struct Live {
    store: Store<HostState>,
    bindings: Operator,
}

/// A running operator instance. Calls are synchronous; run them off async
/// I/O threads.
pub struct OperatorInstance {
    name: Arc<str>,
    module: OperatorModule,
    config: String,
    owned: KeyGroupRange,
    /// Seeds of its random sources, the same at every re-instantiation.
    seed: RandomSeed,
    /// Declared value states, in cell order (from `init`).
    value_states: Vec<String>,
    live: Option<Live>,
    /// The state store while no instance is live (after a trap).
    parked: Option<Box<dyn OperatorState>>,
    restarts: u64,
}

impl std::fmt::Debug for OperatorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorInstance")
            .field("name", &self.name)
            .field("value_states", &self.value_states)
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

pub(crate) fn ticks(budget: Duration) -> u64 {
    (budget.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
}

impl OperatorInstance {
    /// Instantiates `module` as operator `name` with its `config` (JSON
    /// text) and calls its `init`; as [`Self::in_topology`] outside any
    /// topology.
    pub fn new(
        module: &OperatorModule,
        name: &str,
        config: &str,
        state: Box<dyn OperatorState>,
        owned: KeyGroupRange,
    ) -> Result<Self, InstanceError> {
        Self::in_topology("", module, name, config, state, owned)
    }

    /// Instantiates `module` as operator `name` of topology `topology`
    /// owning the key groups `owned`, and calls its `init`. Its random
    /// source is seeded from the host secret, the topology, the operator
    /// and `owned`.
    pub fn in_topology(
        topology: &str,
        module: &OperatorModule,
        name: &str,
        config: &str,
        state: Box<dyn OperatorState>,
        owned: KeyGroupRange,
    ) -> Result<Self, InstanceError> {
        let mut instance = OperatorInstance {
            seed: RandomSeed::of(&module.secret, topology, name, owned),
            name: Arc::from(name),
            module: module.clone(),
            config: if config.trim().is_empty() {
                "{}".to_string()
            } else {
                config.to_string()
            },
            owned,
            value_states: Vec::new(),
            live: None,
            parked: Some(state),
            restarts: 0,
        };
        instance.start()?;
        Ok(instance)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Names of the value states the operator declared at `init`.
    pub fn value_states(&self) -> &[String] {
        &self.value_states
    }

    /// How many times the instance was re-created after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    fn limits(&self) -> SandboxLimits {
        self.module.limits
    }

    fn operator(&self) -> String {
        self.name.to_string()
    }

    /// The state store (taken out of the store data, or parked).
    pub fn state_mut(&mut self) -> &mut dyn OperatorState {
        state_of(&mut self.live, &mut self.parked)
    }

    /// Linear memory the live instance holds, bytes (0 while none is live).
    pub fn memory_bytes(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |live| live.store.data().memory_bytes)
    }

    /// Counters the guest added to since the last take.
    pub fn take_counters(&mut self) -> Vec<(String, u64)> {
        match &mut self.live {
            Some(live) => std::mem::take(&mut live.store.data_mut().counters)
                .into_iter()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Lines the guest logged since the last take (at most
    /// [`MAX_KEPT_LOGS_PER_CALL`](crate::host::MAX_KEPT_LOGS_PER_CALL) a
    /// call).
    pub fn take_logs(&mut self) -> Vec<GuestLog> {
        match &mut self.live {
            Some(live) => std::mem::take(&mut live.store.data_mut().logs),
            None => Vec::new(),
        }
    }

    /// Creates the store and instance and runs `init`.
    fn start(&mut self) -> Result<(), InstanceError> {
        let Some(state) = self.parked.take() else {
            return Ok(());
        };
        let limits = self.limits();
        let mut store = Store::new(
            &self.module.engine,
            HostState::new(self.name.clone(), self.seed, limits, state, self.owned),
        );
        store.limiter(|s| s);
        store.data().clock.set(weir_types::now_ms());
        store.set_epoch_deadline(ticks(limits.init_budget));
        let bindings = match self.module.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(err) => {
                let error = self.classify(&err, &store, limits.init_budget);
                self.parked = Some(store.into_data().state);
                return Err(match error {
                    InstanceError::Trap { operator, message } => InstanceError::Instantiate {
                        operator,
                        reason: message,
                    },
                    other => other,
                });
            }
        };
        let init = bindings
            .weir_operator_handler()
            .call_init(&mut store, &self.config);
        match init {
            Ok(Ok(spec)) => {
                self.value_states = spec.value_states;
                self.live = Some(Live { store, bindings });
                Ok(())
            }
            Ok(Err(message)) => {
                self.parked = Some(store.into_data().state);
                Err(InstanceError::Init {
                    operator: self.operator(),
                    message,
                })
            }
            Err(err) => {
                let error = self.classify(&err, &store, limits.init_budget);
                self.parked = Some(store.into_data().state);
                Err(error)
            }
        }
    }

    fn classify(
        &self,
        err: &wasmtime::Error,
        store: &Store<HostState>,
        budget: Duration,
    ) -> InstanceError {
        let operator = self.operator();
        match store.data().limit_hit {
            Some(LimitHit::Memory { requested, limit }) => {
                return InstanceError::MemoryLimit {
                    operator,
                    requested,
                    limit,
                };
            }
            Some(LimitHit::Table { requested, limit }) => {
                return InstanceError::TableLimit {
                    operator,
                    requested,
                    limit,
                };
            }
            None => {}
        }
        if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return InstanceError::Budget { operator, budget };
        }
        let trap = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => err.to_string(),
        };
        let frames: Vec<String> = err
            .downcast_ref::<WasmBacktrace>()
            .map(|trace| {
                trace
                    .frames()
                    .iter()
                    // Nameless frames (a stripped module) say nothing to
                    // a user.
                    .filter_map(|f| f.func_name().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let printed = store.data().stderr.take();
        let message = crate::trap::trap_message(&trap, &frames, &printed);
        InstanceError::Trap { operator, message }
    }

    /// Throws the live instance away after a failure; the next call starts
    /// a fresh one from the same state.
    fn poison(&mut self) {
        if let Some(live) = self.live.take() {
            let mut data = live.store.into_data();
            data.pending.clear();
            self.parked = Some(data.state);
            self.restarts += 1;
        }
    }

    fn live(&mut self) -> Result<&mut Live, InstanceError> {
        if self.live.is_none() {
            self.start()?;
        }
        self.live
            .as_mut()
            .ok_or_else(|| InstanceError::Instantiate {
                operator: self.name.to_string(),
                reason: "instance unavailable".into(),
            })
    }

    /// The live instance, its clock set to the call's processing time and
    /// its deadline one call budget away.
    fn prepare_call(&mut self, processing_time: i64) -> Result<&mut Live, InstanceError> {
        let live = self.live()?;
        live.store.data().clock.set(processing_time);
        live.store
            .set_epoch_deadline(ticks(live.store.data().limits.call_budget));
        Ok(live)
    }

    /// Processes `batch` in one `process` call. The batch's buffers are
    /// lent to the call and given back unchanged.
    #[tracing::instrument(skip_all, fields(operator = %self.name, events = batch.len()))]
    pub fn process(
        &mut self,
        batch: &mut Batch,
        watermark: i64,
        processing_time: i64,
    ) -> Result<CallOutcome, InstanceError> {
        let n = batch.len();
        // Slots exist for value state; an operator without any gets none.
        let (key_slots, slots) = if self.value_states.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            slot_keys(batch)
        };
        let state = self.prefetch(&batch.keys, &slots)?;
        let input = ProcessInput {
            context: CallContext {
                watermark,
                processing_time,
            },
            events: lend(batch),
            key_slots,
            slot_count: slots.len() as u32,
            state,
        };
        let live = self.prepare_call(processing_time)?;
        let result = live
            .bindings
            .weir_operator_handler()
            .call_process(&mut live.store, &input);
        give_back(batch, input.events);
        self.finish_call(result, &batch.keys, &slots, n)
    }

    /// Hands fired timers to `on-timer` in one call.
    #[tracing::instrument(skip_all, fields(operator = %self.name, timers = timers.len()))]
    pub fn on_timer(
        &mut self,
        timers: &[FiredTimer],
        watermark: i64,
        processing_time: i64,
    ) -> Result<CallOutcome, InstanceError> {
        let mut index: HashMap<&[u8], u32> = HashMap::default();
        let mut keys: Vec<u8> = Vec::new();
        let mut slots: Vec<(usize, usize)> = Vec::new();
        let mut fired = FiredTimers {
            times: Vec::with_capacity(timers.len()),
            domains: Vec::with_capacity(timers.len()),
            key_slots: Vec::with_capacity(timers.len()),
        };
        for t in timers {
            let slot = *index.entry(&t.key).or_insert_with(|| {
                slots.push((keys.len(), t.key.len()));
                keys.extend_from_slice(&t.key);
                (slots.len() - 1) as u32
            });
            fired.times.push(t.time);
            fired.domains.push(crate::wit_domain(t.domain));
            fired.key_slots.push(slot);
        }
        let state = self.prefetch(&keys, &slots)?;
        let input = TimerInput {
            context: CallContext {
                watermark,
                processing_time,
            },
            timers: fired,
            key_lens: slots.iter().map(|&(_, len)| len as i32).collect(),
            keys,
            state,
        };
        let live = self.prepare_call(processing_time)?;
        let result = live
            .bindings
            .weir_operator_handler()
            .call_on_timer(&mut live.store, &input);
        self.finish_call(result, &input.keys, &slots, timers.len())
    }

    /// The declared value states of the keys in `slots` (ranges of
    /// `keys`), as the call's state cells.
    fn prefetch(
        &mut self,
        keys: &[u8],
        slots: &[(usize, usize)],
    ) -> Result<StateCells, InstanceError> {
        let mut cells = StateCells {
            lens: Vec::with_capacity(slots.len() * self.value_states.len()),
            bytes: Vec::new(),
        };
        if self.value_states.is_empty() {
            return Ok(cells);
        }
        let Self {
            name,
            value_states,
            owned,
            live,
            parked,
            ..
        } = self;
        let state = state_of(live, parked);
        let check_owner = owned.start != 0 || owned.end != owned.groups;
        for &(start, len) in slots {
            let key = &keys[start..start + len];
            if check_owner && !owned.owns(key) {
                return Err(InstanceError::State {
                    operator: name.to_string(),
                    message: format!(
                        "a batch holds key {:?} of a key group this instance does not own",
                        String::from_utf8_lossy(key)
                    ),
                });
            }
            for state_name in value_states.iter() {
                let before = cells.bytes.len();
                match state.append_value(state_name, key, &mut cells.bytes) {
                    Ok(true) => cells.lens.push((cells.bytes.len() - before) as i32),
                    Ok(false) => cells.lens.push(-1),
                    Err(e) => {
                        return Err(InstanceError::State {
                            operator: name.to_string(),
                            message: e.0,
                        });
                    }
                }
            }
        }
        Ok(cells)
    }

    /// Applies a finished call: state changes and pending writes on
    /// success, nothing (and a fresh instance next time) on a trap.
    fn finish_call(
        &mut self,
        result: wasmtime::Result<Result<CallOutput, String>>,
        keys: &[u8],
        slots: &[(usize, usize)],
        inputs: usize,
    ) -> Result<CallOutcome, InstanceError> {
        let operator = self.operator();
        let over = self
            .live
            .as_mut()
            .is_some_and(|live| std::mem::take(&mut live.store.data_mut().host_bytes_over));
        if over && result.is_ok() {
            if let Some(live) = &mut self.live {
                live.store.data_mut().pending.clear();
            }
            return Err(InstanceError::HostBytes {
                operator,
                limit: self.limits().max_call_host_bytes,
            });
        }
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(message)) => {
                if let Some(live) = &mut self.live {
                    live.store.data_mut().pending.clear();
                }
                return Err(InstanceError::Failed { operator, message });
            }
            Err(err) => {
                let budget = self.limits().call_budget;
                let error = match &self.live {
                    Some(live) => self.classify(&err, &live.store, budget),
                    None => InstanceError::Trap {
                        operator,
                        message: format!("{err:?}"),
                    },
                };
                tracing::debug!(error = %error, "operator instance failed; it will be re-created");
                self.poison();
                return Err(error);
            }
        };
        let invalid = |reason: String| InstanceError::InvalidOutput {
            operator: operator.clone(),
            reason,
        };
        let CallOutput {
            events,
            errors,
            state,
        } = output;
        let ops = match &mut self.live {
            Some(live) => live.store.data_mut().pending.take(),
            None => Vec::new(),
        };
        let events = take_batch(events);
        if let Err(e) = events.validate() {
            return Err(invalid(e.to_string()));
        }
        let mut failures = Vec::with_capacity(errors.len());
        for e in errors {
            if e.index as usize >= inputs {
                return Err(invalid(format!(
                    "error for input {} of a call with {inputs} inputs",
                    e.index
                )));
            }
            failures.push(EventFailure {
                index: e.index as usize,
                message: e.message,
            });
        }
        let limit = self.limits().max_state_value_bytes;
        let Self {
            value_states,
            live,
            parked,
            ..
        } = self;
        let writes = value_writes(&state, value_states, keys, slots, limit).map_err(invalid)?;
        if !ops.is_empty() || !writes.is_empty() {
            state_of(live, parked)
                .apply(ops, &writes)
                .map_err(|e| InstanceError::State {
                    operator: operator.clone(),
                    message: e.0,
                })?;
        }
        Ok(CallOutcome { events, failures })
    }
}

/// The state store, wherever it is: in the live store's data or parked.
fn state_of<'a>(
    live: &'a mut Option<Live>,
    parked: &'a mut Option<Box<dyn OperatorState>>,
) -> &'a mut dyn OperatorState {
    match (live, parked) {
        (Some(live), _) => live.store.data_mut().state.as_mut(),
        (None, Some(parked)) => parked.as_mut(),
        (None, None) => unreachable!("an instance always holds its state store"),
    }
}

/// Checks a call's value-state changes and turns them into writes that
/// borrow the names, the keys and the returned bytes.
fn value_writes<'a>(
    changes: &'a StateChanges,
    names: &'a [String],
    keys: &'a [u8],
    slots: &[(usize, usize)],
    limit: usize,
) -> Result<Vec<ValueWrite<'a>>, String> {
    let s = names.len();
    let cells = slots.len() * s;
    if changes.cells.len() != changes.lens.len() {
        return Err("state changes: cells and lengths differ in count".into());
    }
    let mut writes = Vec::with_capacity(changes.cells.len());
    let mut at = 0usize;
    for (&cell, &len) in changes.cells.iter().zip(&changes.lens) {
        let cell = cell as usize;
        if cell >= cells {
            return Err(format!(
                "state change for cell {cell}, but the call had {cells} cells"
            ));
        }
        let name = &names[cell % s];
        let (start, key_len) = slots[cell / s];
        let value = if len < 0 {
            None
        } else {
            let len = len as usize;
            if len > limit {
                return Err(format!(
                    "value state `{name}` would be {len} bytes, over the limit of {limit} bytes per value; keep large state in map or list state"
                ));
            }
            let Some(bytes) = changes.bytes.get(at..at + len) else {
                return Err("state changes: lengths exceed the bytes sent".into());
            };
            at += len;
            Some(bytes)
        };
        writes.push(ValueWrite {
            name,
            key: &keys[start..start + key_len],
            value,
        });
    }
    if at != changes.bytes.len() {
        return Err("state changes: bytes left over after the last change".into());
    }
    Ok(writes)
}

/// For each event the slot of its key among the batch's distinct keys
/// (`u32::MAX` for none), and each slot's key as a range of `batch.keys`.
fn slot_keys(batch: &Batch) -> (Vec<u32>, Vec<(usize, usize)>) {
    let mut index: HashMap<&[u8], u32> = HashMap::default();
    index.reserve(batch.len());
    let mut slots: Vec<(usize, usize)> = Vec::new();
    let mut key_slots = Vec::with_capacity(batch.len());
    let mut at = 0usize;
    for &len in &batch.key_lens {
        if len < 0 {
            key_slots.push(u32::MAX);
            continue;
        }
        let key = &batch.keys[at..at + len as usize];
        let start = at;
        at += len as usize;
        let slot = *index.entry(key).or_insert_with(|| {
            slots.push((start, key.len()));
            (slots.len() - 1) as u32
        });
        key_slots.push(slot);
    }
    (key_slots, slots)
}

/// Moves a batch's buffers into the contract's record (no copy).
fn lend(batch: &mut Batch) -> EventBatch {
    EventBatch {
        timestamps: std::mem::take(&mut batch.timestamps),
        key_lens: std::mem::take(&mut batch.key_lens),
        keys: std::mem::take(&mut batch.keys),
        value_lens: std::mem::take(&mut batch.value_lens),
        values: std::mem::take(&mut batch.values),
        headers: std::mem::take(&mut batch.headers)
            .into_iter()
            .map(|(event, name, value)| Header { event, name, value })
            .collect(),
    }
}

/// Puts lent buffers back.
fn give_back(batch: &mut Batch, events: EventBatch) {
    *batch = take_batch(events);
}

fn take_batch(events: EventBatch) -> Batch {
    Batch {
        timestamps: events.timestamps,
        key_lens: events.key_lens,
        keys: events.keys,
        value_lens: events.value_lens,
        values: events.values,
        headers: events
            .headers
            .into_iter()
            .map(|h| (h.event, h.name, h.value))
            .collect(),
    }
}
