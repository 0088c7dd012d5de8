//! [`OperatorInstance`]: one sandboxed instance of an operator module, and
//! the translation between Weir batches and the contract's calls.
//!
//! Calls are built in the newest contract's shapes (`bindings::v0_2`); a
//! component built for an older version is adapted at the call
//! ([`Contract`]): its buffers are moved, not copied, into the old records
//! and back, it sees no input index, everything it emits goes to the main
//! output, and it declares no side outputs and no state TTL.

use foldhash::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap, WasmBacktrace};
use weir_types::{Batch, KeyGroupRange};

use crate::InstanceError;
use crate::bindings::v0_1;
use crate::bindings::v0_2::Operator;
use crate::bindings::v0_2::weir::operator::types::{
    self as wit, CallContext, CallOutput, EventBatch, FiredTimers, Header, OperatorSpec,
    ProcessInput, StateCells, StateChanges, TimerInput,
};
use crate::host::{GuestLog, HostState, LimitHit};
use crate::limits::{EPOCH_TICK, SandboxLimits};
use crate::loader::{ContractPre, OperatorModule};
use crate::secret::RandomSeed;
use crate::state::{OperatorState, TimeDomain, ValueWrite};
use crate::ttl::{Entry, TtlClock, TtlTable};

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
    /// What the call emitted to the main output.
    pub events: Batch,
    /// What it emitted to each side output, in the order the operator
    /// declared them ([`OperatorInstance::outputs`]); empty for an operator
    /// that declared none.
    pub side: Vec<Batch>,
    pub failures: Vec<EventFailure>,
}

/// When a TTL entry's time to live starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlRefresh {
    OnWrite,
    OnReadAndWrite,
}

/// The kind of state a TTL declaration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Value,
    Map,
    List,
}

/// A state whose entries expire, as the operator declared it at `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTtl {
    pub kind: StateKind,
    pub name: String,
    pub ttl_ms: u64,
    pub domain: TimeDomain,
    pub refresh: TtlRefresh,
}

/// A timer that fired, to hand to `on-timer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer {
    pub domain: TimeDomain,
    pub time: i64,
    pub key: Vec<u8>,
}

/// A live instance's exports, by the contract version it was built for.
enum Contract {
    V0_1(v0_1::Operator),
    V0_2(Operator),
}

struct Live {
    store: Store<HostState>,
    bindings: Contract,
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
    /// Declared side outputs, in output order (from `init`).
    outputs: Vec<String>,
    /// Declared state TTLs (from `init`).
    ttls: Vec<StateTtl>,
    /// The clocks of the call in progress, for TTLs.
    call_clock: TtlClock,
    /// TTL value-state cells of the call in progress that the host must
    /// write itself unless the operator does: `(cell, None)` removes an
    /// expired value, `(cell, Some(stamped))` restamps one read with
    /// refresh-on-read.
    cell_fixes: Vec<(usize, Option<Vec<u8>>)>,
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
            outputs: Vec::new(),
            ttls: Vec::new(),
            call_clock: TtlClock::default(),
            cell_fixes: Vec::new(),
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

    /// Names of the side outputs the operator declared at `init`, in output
    /// order (side output `k` of [`CallOutcome::side`] is `outputs()[k]`).
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// The state TTLs the operator declared at `init`.
    pub fn ttls(&self) -> &[StateTtl] {
        &self.ttls
    }

    /// The `weir:operator` version the operator's module was built for.
    pub fn contract_version(&self) -> &'static str {
        self.module.contract_version()
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

    /// Whether an instance is live (not yet started, unloaded, or thrown
    /// away after a trap: the next call starts one).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Drops the live instance, its store and linear memory, keeping its
    /// state: the next call instantiates it again and runs `init`, as after
    /// a trap. Counters and logs not taken yet go with it: take them first.
    pub fn unload(&mut self) {
        if let Some(live) = self.live.take() {
            self.parked = Some(live.store.into_data().state);
        }
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
        let instantiated = match &self.module.pre {
            ContractPre::V0_1(pre) => pre.instantiate(&mut store).map(Contract::V0_1),
            ContractPre::V0_2(pre) => pre.instantiate(&mut store).map(Contract::V0_2),
        };
        let bindings = match instantiated {
            Ok(b) => b,
            Err(err) => {
                let error = self.classify(&err, &store, limits.init_budget);
                self.parked = Some(store.into_data().state);
                return Err(match error {
                    InstanceError::Trap {
                        operator, message, ..
                    } => InstanceError::Instantiate {
                        operator,
                        reason: message,
                    },
                    other => other,
                });
            }
        };
        let init = match &bindings {
            Contract::V0_1(b) => b
                .weir_operator_handler()
                .call_init(&mut store, &self.config)
                .map(|r| {
                    r.map(|spec| OperatorSpec {
                        value_states: spec.value_states,
                        outputs: Vec::new(),
                        ttls: Vec::new(),
                    })
                }),
            Contract::V0_2(b) => b
                .weir_operator_handler()
                .call_init(&mut store, &self.config),
        };
        match init {
            Ok(Ok(spec)) => {
                if let Err(reason) = self.accept_spec(spec) {
                    self.parked = Some(store.into_data().state);
                    return Err(InstanceError::Init {
                        operator: self.operator(),
                        message: reason,
                    });
                }
                store.data_mut().ttls = TtlTable::new(&self.ttls);
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

    /// Takes what `init` declared, after checking it: side output names are
    /// distinct, non-empty and free of `.` (a document reads them as
    /// `operator.output`); a TTL is positive. A re-created instance must
    /// declare what the first one did.
    fn accept_spec(&mut self, spec: OperatorSpec) -> Result<(), String> {
        const MAX_OUTPUTS: usize = 64;
        if spec.outputs.len() > MAX_OUTPUTS {
            return Err(format!(
                "{} side outputs declared; an operator may declare at most {MAX_OUTPUTS}",
                spec.outputs.len()
            ));
        }
        for (i, name) in spec.outputs.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(format!(
                    "side output {name:?} is not a valid name: use 1-128 of A-Z a-z 0-9 _ -"
                ));
            }
            if spec.outputs[..i].contains(name) {
                return Err(format!("side output {name:?} is declared twice"));
            }
        }
        let mut ttls = Vec::with_capacity(spec.ttls.len());
        for t in spec.ttls {
            if t.ttl_ms == 0 {
                return Err(format!(
                    "state {:?} is declared with a TTL of 0 ms; give a positive time to live",
                    t.name
                ));
            }
            ttls.push(StateTtl {
                kind: match t.kind {
                    wit::StateKind::Value => StateKind::Value,
                    wit::StateKind::Map => StateKind::Map,
                    wit::StateKind::List => StateKind::List,
                },
                name: t.name,
                ttl_ms: t.ttl_ms,
                domain: match t.domain {
                    wit::TimeDomain::EventTime => TimeDomain::EventTime,
                    wit::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
                },
                refresh: match t.refresh {
                    wit::TtlRefresh::OnWrite => TtlRefresh::OnWrite,
                    wit::TtlRefresh::OnReadAndWrite => TtlRefresh::OnReadAndWrite,
                },
            });
        }
        if self.restarts > 0
            && (spec.outputs != self.outputs || spec.value_states != self.value_states)
        {
            return Err("the re-created instance declared other value states or side outputs than before; an operator's declarations must not change while it runs".into());
        }
        self.value_states = spec.value_states;
        self.outputs = spec.outputs;
        self.ttls = ttls;
        Ok(())
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
        InstanceError::Trap {
            operator,
            message,
            backtrace: crate::trap::backtrace(&frames),
        }
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
        let clock = self.call_clock;
        let live = self.live()?;
        live.store.data_mut().ttl_clock = clock;
        live.store.data().clock.set(processing_time);
        live.store
            .set_epoch_deadline(ticks(live.store.data().limits.call_budget));
        Ok(live)
    }

    /// Processes `batch` in one `process` call, as coming from the
    /// operator's first (or only) input. The batch's buffers are lent to
    /// the call and given back unchanged.
    pub fn process(
        &mut self,
        batch: &mut Batch,
        watermark: i64,
        processing_time: i64,
    ) -> Result<CallOutcome, InstanceError> {
        self.process_from(0, batch, watermark, processing_time)
    }

    /// Processes `batch`, which came from the operator's input `input` (the
    /// index in its document's `input` list), in one `process` call.
    #[tracing::instrument(skip_all, fields(operator = %self.name, input, events = batch.len()))]
    pub fn process_from(
        &mut self,
        input: u32,
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
        self.call_clock = TtlClock {
            processing: processing_time,
            watermark,
            event: batch.timestamps.iter().copied().max().unwrap_or(i64::MIN),
        };
        let state = self.prefetch(&batch.keys, &slots)?;
        let mut input = ProcessInput {
            context: CallContext {
                watermark,
                processing_time,
            },
            input,
            events: lend(batch),
            key_slots,
            slot_count: slots.len() as u32,
            state,
        };
        let live = self.prepare_call(processing_time)?;
        let result = match &live.bindings {
            Contract::V0_2(b) => b
                .weir_operator_handler()
                .call_process(&mut live.store, &input),
            Contract::V0_1(b) => {
                let old = v0_1::weir::operator::types::ProcessInput {
                    context: old_context(&input.context),
                    events: old_batch(std::mem::replace(&mut input.events, empty_batch())),
                    key_slots: std::mem::take(&mut input.key_slots),
                    slot_count: input.slot_count,
                    state: v0_1::weir::operator::types::StateCells {
                        lens: std::mem::take(&mut input.state.lens),
                        bytes: std::mem::take(&mut input.state.bytes),
                    },
                };
                let result = b
                    .weir_operator_handler()
                    .call_process(&mut live.store, &old);
                input.events = new_batch(old.events);
                result.map(|r| r.map(new_output))
            }
        };
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
        self.call_clock = TtlClock {
            processing: processing_time,
            watermark,
            event: timers.iter().map(|t| t.time).max().unwrap_or(i64::MIN),
        };
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
        let result = match &live.bindings {
            Contract::V0_2(b) => b
                .weir_operator_handler()
                .call_on_timer(&mut live.store, &input),
            Contract::V0_1(b) => {
                use v0_1::weir::operator::types as old;
                let timers = old::TimerInput {
                    context: old_context(&input.context),
                    timers: old::FiredTimers {
                        times: input.timers.times.clone(),
                        domains: input
                            .timers
                            .domains
                            .iter()
                            .map(|d| match d {
                                wit::TimeDomain::EventTime => old::TimeDomain::EventTime,
                                wit::TimeDomain::ProcessingTime => old::TimeDomain::ProcessingTime,
                            })
                            .collect(),
                        key_slots: input.timers.key_slots.clone(),
                    },
                    key_lens: input.key_lens.clone(),
                    keys: input.keys.clone(),
                    state: old::StateCells {
                        lens: input.state.lens.clone(),
                        bytes: input.state.bytes.clone(),
                    },
                };
                let result = b
                    .weir_operator_handler()
                    .call_on_timer(&mut live.store, &timers);
                result.map(|r| r.map(new_output))
            }
        };
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
        self.cell_fixes.clear();
        let ttls: Vec<Option<StateTtl>> = self
            .value_states
            .iter()
            .map(|n| TtlTable::new(&self.ttls).get(StateKind::Value, n).cloned())
            .collect();
        let Self {
            name,
            value_states,
            owned,
            live,
            parked,
            call_clock,
            cell_fixes,
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
            for (state_name, ttl) in value_states.iter().zip(&ttls) {
                let before = cells.bytes.len();
                match state.append_value(state_name, key, &mut cells.bytes) {
                    Ok(true) if ttl.is_some() => {
                        let ttl = ttl.as_ref().unwrap_or_else(|| unreachable!());
                        let cell = cells.lens.len();
                        let live = match ttl.read(call_clock, &cells.bytes[before..]) {
                            Entry::Expired => None,
                            Entry::Live(payload) => Some(payload.to_vec()),
                        };
                        cells.bytes.truncate(before);
                        match live {
                            None => {
                                cells.lens.push(-1);
                                cell_fixes.push((cell, None));
                            }
                            Some(payload) => {
                                cells.lens.push(payload.len() as i32);
                                if ttl.refresh_on_read() {
                                    cell_fixes.push((cell, Some(ttl.stamp(call_clock, &payload))));
                                }
                                cells.bytes.extend_from_slice(&payload);
                            }
                        }
                    }
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
                        backtrace: Vec::new(),
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
            outputs,
        } = output;
        let ops = match &mut self.live {
            Some(live) => live.store.data_mut().pending.take(),
            None => Vec::new(),
        };
        let events = take_batch(events);
        if let Err(e) = events.validate() {
            return Err(invalid(e.to_string()));
        }
        let limit = self.limits().max_output_bytes_per_call;
        let bytes = events.keys.len()
            + events.values.len()
            + events
                .headers
                .iter()
                .map(|(_, name, value)| name.len() + value.len())
                .sum::<usize>();
        if bytes > limit {
            return Err(InstanceError::OutputLimit {
                operator: operator.clone(),
                bytes,
                limit,
            });
        }
        let (events, side) =
            split_outputs(events, &outputs, self.outputs.len()).map_err(invalid)?;
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
        let fixes = std::mem::take(&mut self.cell_fixes);
        let table = TtlTable::new(&self.ttls);
        let Self {
            value_states,
            live,
            parked,
            call_clock,
            ..
        } = self;
        let plain = value_writes(&state, value_states, keys, slots, limit).map_err(invalid)?;
        // TTL value states: what the operator wrote is stored stamped, and
        // cells it left alone get the host's own fix (removal of an expired
        // value, or a refresh-on-read restamp).
        let stamped: Vec<Option<Vec<u8>>> = plain
            .iter()
            .map(|w| {
                let ttl = table.get(StateKind::Value, w.name)?;
                w.value.map(|v| ttl.stamp(call_clock, v))
            })
            .collect();
        let s = value_states.len();
        let mut writes: Vec<ValueWrite<'_>> = plain
            .into_iter()
            .zip(&stamped)
            .map(|(w, st)| ValueWrite {
                value: st.as_deref().or(w.value),
                ..w
            })
            .collect();
        for (cell, value) in &fixes {
            if state.cells.iter().any(|&c| c as usize == *cell) {
                continue;
            }
            let (start, len) = slots[cell / s];
            writes.push(ValueWrite {
                name: &value_states[cell % s],
                key: &keys[start..start + len],
                value: value.as_deref(),
            });
        }
        if !ops.is_empty() || !writes.is_empty() {
            state_of(live, parked)
                .apply(ops, &writes)
                .map_err(|e| InstanceError::State {
                    operator: operator.clone(),
                    message: e.0,
                })?;
        }
        Ok(CallOutcome {
            events,
            side,
            failures,
        })
    }
}

/// Splits what a call emitted by output: `outputs[i]` is event `i`'s
/// output (0 main, `k` side output `k - 1`), or `outputs` is empty and
/// everything is main output. Side outputs come back one batch each
/// (`declared` of them, or none for an operator that declared none).
fn split_outputs(
    events: Batch,
    outputs: &[u32],
    declared: usize,
) -> Result<(Batch, Vec<Batch>), String> {
    if outputs.is_empty() {
        let side = vec![Batch::default(); declared];
        return Ok((events, side));
    }
    if outputs.len() != events.len() {
        return Err(format!(
            "{} output indexes for {} emitted events; give one per event, or none",
            outputs.len(),
            events.len()
        ));
    }
    if let Some(&bad) = outputs.iter().find(|&&o| o as usize > declared) {
        return Err(format!(
            "an event emitted to output {bad}, but the operator declared {declared} side outputs"
        ));
    }
    if outputs.iter().all(|&o| o == 0) {
        return Ok((events, vec![Batch::default(); declared]));
    }
    let mut parts = vec![Batch::default(); declared + 1];
    for (e, &o) in events.iter().zip(outputs) {
        let part = &mut parts[o as usize];
        let index = part.len() as u32;
        part.headers.extend(
            e.headers
                .iter()
                .map(|(_, n, v)| (index, n.clone(), v.clone())),
        );
        part.push(e.key, e.value, e.timestamp);
    }
    let main = parts.remove(0);
    Ok((main, parts))
}

/// A call context in the 0.1.0 contract's shape.
fn old_context(c: &CallContext) -> v0_1::weir::operator::types::CallContext {
    v0_1::weir::operator::types::CallContext {
        watermark: c.watermark,
        processing_time: c.processing_time,
    }
}

fn empty_batch() -> EventBatch {
    EventBatch {
        timestamps: Vec::new(),
        key_lens: Vec::new(),
        keys: Vec::new(),
        value_lens: Vec::new(),
        values: Vec::new(),
        headers: Vec::new(),
    }
}

/// A batch moved into the 0.1.0 contract's shape (only headers are
/// rebuilt, and they are rare).
fn old_batch(b: EventBatch) -> v0_1::weir::operator::types::EventBatch {
    v0_1::weir::operator::types::EventBatch {
        timestamps: b.timestamps,
        key_lens: b.key_lens,
        keys: b.keys,
        value_lens: b.value_lens,
        values: b.values,
        headers: b
            .headers
            .into_iter()
            .map(|h| v0_1::weir::operator::types::Header {
                event: h.event,
                name: h.name,
                value: h.value,
            })
            .collect(),
    }
}

/// A 0.1.0 batch moved into the newest contract's shape.
fn new_batch(b: v0_1::weir::operator::types::EventBatch) -> EventBatch {
    EventBatch {
        timestamps: b.timestamps,
        key_lens: b.key_lens,
        keys: b.keys,
        value_lens: b.value_lens,
        values: b.values,
        headers: b
            .headers
            .into_iter()
            .map(|h| Header {
                event: h.event,
                name: h.name,
                value: h.value,
            })
            .collect(),
    }
}

/// A 0.1.0 call's output in the newest shape: everything to the main output.
fn new_output(o: v0_1::weir::operator::types::CallOutput) -> CallOutput {
    CallOutput {
        events: new_batch(o.events),
        errors: o
            .errors
            .into_iter()
            .map(|e| wit::EventError {
                index: e.index,
                message: e.message,
            })
            .collect(),
        state: StateChanges {
            cells: o.state.cells,
            lens: o.state.lens,
            bytes: o.state.bytes,
        },
        outputs: Vec::new(),
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
