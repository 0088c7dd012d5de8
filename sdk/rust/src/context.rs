//! What an operator works with: [`Setup`] while it starts, [`Context`] for
//! each event: emitting, value state of the current key, timers.

use serde::Serialize;

use crate::bindings::weir::operator::timers;
use crate::bindings::weir::operator::types::{
    CallContext, CallOutput, EventBatch, EventError, Header, StateChanges, StateKind, StateTtl,
    TtlRefresh,
};
use crate::state::{Encoding, ListState, MapState, ValueState};
use crate::{Error, Event, TimeDomain};

/// How long a state's entries live ([`Setup::value_state_ttl`] and its
/// map and list kin). An entry expires `ms` milliseconds after it was last
/// written (or read, with [`Ttl::refresh_on_read`]): in processing time
/// (the host's clock at each call) or in event time (the operator's
/// watermark). An expired entry reads as absent at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    ms: u64,
    domain: TimeDomain,
    refresh: TtlRefresh,
}

impl Ttl {
    /// Entries expire `ms` after their last write, on the host's clock.
    pub fn processing_time(ms: u64) -> Self {
        Ttl {
            ms,
            domain: TimeDomain::ProcessingTime,
            refresh: TtlRefresh::OnWrite,
        }
    }

    /// Entries expire once the watermark passes their last write's event
    /// time (the event's timestamp, or the timer's time) plus `ms`.
    pub fn event_time(ms: u64) -> Self {
        Ttl {
            ms,
            domain: TimeDomain::EventTime,
            refresh: TtlRefresh::OnWrite,
        }
    }

    /// Reading an entry also restarts its time to live.
    pub fn refresh_on_read(self) -> Self {
        Ttl {
            refresh: TtlRefresh::OnReadAndWrite,
            ..self
        }
    }
}

/// Declares an operator's state while it starts ([`crate::Operator::init`]).
#[derive(Debug, Default)]
pub struct Setup {
    pub(crate) value_states: Vec<String>,
    pub(crate) outputs: Vec<String>,
    pub(crate) ttls: Vec<StateTtl>,
}

impl Setup {
    /// Declares side output `name`, written with [`Context::emit_to`]. A
    /// topology reads it as `<operator>.<name>` (`input: fraud.alerts`);
    /// the operator's own name stays its main output. Names are 1-128 of
    /// `A-Z a-z 0-9 _ -`.
    pub fn side_output(&mut self, name: &str) {
        if !self.outputs.iter().any(|o| o == name) {
            self.outputs.push(name.to_string());
        }
    }

    fn ttl(&mut self, kind: StateKind, name: &str, ttl: Ttl) {
        self.ttls.retain(|t| !(t.kind == kind && t.name == name));
        self.ttls.push(StateTtl {
            kind,
            name: name.to_string(),
            ttl_ms: ttl.ms,
            domain: ttl.domain,
            refresh: ttl.refresh,
        });
    }

    /// Declares value state `name` whose values expire after `ttl`.
    pub fn value_state_ttl<T>(&mut self, name: &str, ttl: Ttl) -> ValueState<T> {
        self.ttl(StateKind::Value, name, ttl);
        self.value_state(name)
    }

    /// Declares map state `name` whose entries expire one by one after `ttl`.
    pub fn map_state_ttl<K, V>(&mut self, name: &str, ttl: Ttl) -> MapState<K, V> {
        self.ttl(StateKind::Map, name, ttl);
        self.map_state(name)
    }

    /// Declares list state `name` whose items expire one by one after `ttl`.
    pub fn list_state_ttl<T>(&mut self, name: &str, ttl: Ttl) -> ListState<T> {
        self.ttl(StateKind::List, name, ttl);
        self.list_state(name)
    }

    /// Declares value state `name`: one value of `T` per key. Its values for
    /// the keys of a batch travel with the batch, so reading and writing it
    /// costs no host call.
    pub fn value_state<T>(&mut self, name: &str) -> ValueState<T> {
        self.value_state_encoded(name, Encoding::Json)
    }

    /// Declares value state `name` stored in `encoding`
    /// ([`Encoding::Compact`] for fewer bytes and less work, when only
    /// this Rust operator reads the state). Values written before in the
    /// other encoding still read, so the encoding can change between
    /// versions of an operator.
    pub fn value_state_encoded<T>(&mut self, name: &str, encoding: Encoding) -> ValueState<T> {
        let index = match self.value_states.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.value_states.push(name.to_string());
                self.value_states.len() - 1
            }
        };
        ValueState::new(index, encoding)
    }

    /// Declares map state `name`: many `K → V` entries per key, read and
    /// written through host calls.
    pub fn map_state<K, V>(&mut self, name: &str) -> MapState<K, V> {
        MapState::new(name)
    }

    /// Declares list state `name`: a list of `T` per key, read and written
    /// through host calls.
    pub fn list_state<T>(&mut self, name: &str) -> ListState<T> {
        ListState::new(name)
    }

    /// The operator's name in its topology.
    pub fn operator_name(&self) -> String {
        crate::bindings::weir::operator::context::operator_name()
    }
}

/// Appends a value's bytes to a buffer.
pub(crate) type WriteValue<'a> = dyn Fn(&mut Vec<u8>) -> Result<(), Error> + 'a;

/// A declared value state of one key during a call.
#[derive(Debug)]
pub(crate) enum Cell {
    /// Unchanged since the call started: `len` bytes at `start` of the
    /// input's state bytes.
    Original { start: usize, len: usize },
    /// Absent when the call started and not written since.
    Absent,
    /// Written during this call: `len` bytes at `start` of the context's
    /// scratch buffer (one buffer per call, so writes allocate nothing).
    Written { start: usize, len: usize },
    /// Cleared during this call.
    Cleared,
}

/// Where the output stood before the current event, to drop what a failing
/// event emitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputMark {
    events: usize,
    keys: usize,
    values: usize,
    headers: usize,
}

/// The events a call emits, built column by column.
#[derive(Debug, Default)]
pub(crate) struct Output {
    timestamps: Vec<i64>,
    key_lens: Vec<i32>,
    keys: Vec<u8>,
    value_lens: Vec<u32>,
    values: Vec<u8>,
    headers: Vec<Header>,
    /// Output of each event (0 main, `k` side output `k - 1`); empty while
    /// every event went to the main output.
    outputs: Vec<u32>,
}

impl Output {
    fn with_capacity(events: usize, bytes: usize) -> Self {
        Output {
            timestamps: Vec::with_capacity(events),
            key_lens: Vec::with_capacity(events),
            keys: Vec::new(),
            value_lens: Vec::with_capacity(events),
            values: Vec::with_capacity(bytes),
            headers: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Records the output of the event just pushed.
    fn tag(&mut self, output: u32) {
        if output != 0 && self.outputs.is_empty() {
            self.outputs.resize(self.timestamps.len() - 1, 0);
        }
        if !self.outputs.is_empty() {
            self.outputs.push(output);
        }
    }

    fn push_key(&mut self, key: Option<&[u8]>) {
        match key {
            Some(k) => {
                self.key_lens.push(k.len() as i32);
                self.keys.extend_from_slice(k);
            }
            None => self.key_lens.push(-1),
        }
    }

    pub(crate) fn mark(&self) -> OutputMark {
        OutputMark {
            events: self.timestamps.len(),
            keys: self.keys.len(),
            values: self.values.len(),
            headers: self.headers.len(),
        }
    }

    pub(crate) fn truncate(&mut self, mark: OutputMark) {
        self.timestamps.truncate(mark.events);
        self.key_lens.truncate(mark.events);
        self.value_lens.truncate(mark.events);
        self.keys.truncate(mark.keys);
        self.values.truncate(mark.values);
        self.headers.truncate(mark.headers);
        self.outputs.truncate(mark.events);
    }

    fn into_batch(self) -> (EventBatch, Vec<u32>) {
        let batch = EventBatch {
            timestamps: self.timestamps,
            key_lens: self.key_lens,
            keys: self.keys,
            value_lens: self.value_lens,
            values: self.values,
            headers: self.headers,
        };
        (batch, self.outputs)
    }
}

/// Everything an operator can do while it handles one event or timer:
/// emit events, use the current key's state, register timers.
#[derive(Debug)]
pub struct Context<'a> {
    call: CallContext,
    key: Option<&'a [u8]>,
    /// Slot of the current key among the call's distinct keys; `None` for
    /// an event without a key.
    slot: Option<usize>,
    timestamp: i64,
    state_count: usize,
    state_bytes: &'a [u8],
    cells: Vec<Cell>,
    /// Bytes of the values written during this call; append-only.
    scratch: Vec<u8>,
    /// Cells written by the current event with their previous contents, to
    /// put back if the event fails.
    undo: Vec<(usize, Cell)>,
    pub(crate) output: Output,
    pub(crate) errors: Vec<EventError>,
    /// The input the call's batch came from.
    pub(crate) input: u32,
    /// The declared side outputs, in output order.
    side_outputs: &'a [String],
    /// Where the event being emitted goes (0 main, `k` side output `k-1`).
    target: u32,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        call: CallContext,
        state_count: usize,
        cells: Vec<Cell>,
        state_bytes: &'a [u8],
        expected_events: usize,
        side_outputs: &'a [String],
    ) -> Self {
        Context {
            call,
            key: None,
            slot: None,
            timestamp: 0,
            state_count,
            state_bytes,
            cells,
            scratch: Vec::new(),
            undo: Vec::new(),
            output: Output::with_capacity(expected_events, expected_events * 64),
            errors: Vec::new(),
            input: 0,
            side_outputs,
            target: 0,
        }
    }

    pub(crate) fn begin(&mut self, key: Option<&'a [u8]>, slot: Option<usize>, timestamp: i64) {
        self.key = key;
        self.slot = slot;
        self.timestamp = timestamp;
        self.undo.clear();
    }

    /// Drops what the current event emitted and wrote.
    pub(crate) fn roll_back(&mut self, mark: OutputMark) {
        self.output.truncate(mark);
        while let Some((cell, previous)) = self.undo.pop() {
            self.cells[cell] = previous;
        }
    }

    pub(crate) fn finish(self) -> CallOutput {
        let mut changes = StateChanges {
            cells: Vec::new(),
            lens: Vec::new(),
            bytes: Vec::new(),
        };
        for (index, cell) in self.cells.into_iter().enumerate() {
            match cell {
                Cell::Written { start, len } => {
                    changes.cells.push(index as u32);
                    changes.lens.push(len as i32);
                    changes
                        .bytes
                        .extend_from_slice(&self.scratch[start..start + len]);
                }
                Cell::Cleared => {
                    changes.cells.push(index as u32);
                    changes.lens.push(-1);
                }
                Cell::Original { .. } | Cell::Absent => {}
            }
        }
        let (events, outputs) = self.output.into_batch();
        CallOutput {
            events,
            errors: self.errors,
            state: changes,
            outputs,
        }
    }

    /// Which of the operator's inputs the current batch came from: the
    /// index in its `input` list in the topology (0 for a single input,
    /// and while a timer fires).
    pub fn input(&self) -> u32 {
        self.input
    }

    /// The output index of side output `name`, or an error naming the
    /// declared ones.
    fn side_output(&self, name: &str) -> Result<u32, Error> {
        match self.side_outputs.iter().position(|o| o == name) {
            Some(i) => Ok(i as u32 + 1),
            None => Err(Error::new(format!(
                "no side output {name:?}: declare it in init with setup.side_output({name:?}) (declared: {:?})",
                self.side_outputs
            ))),
        }
    }

    /// Emits an event to side output `output` (declared in `init` with
    /// [`Setup::side_output`]) instead of the main output.
    pub fn emit_to(
        &mut self,
        output: &str,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: i64,
    ) -> Result<(), Error> {
        self.target = self.side_output(output)?;
        let result = self.emit(key, value, timestamp);
        self.target = 0;
        result
    }

    /// Emits an event whose value is `value` as JSON to side output
    /// `output`.
    pub fn emit_json_to<T: Serialize + ?Sized>(
        &mut self,
        output: &str,
        key: Option<&[u8]>,
        value: &T,
        timestamp: i64,
    ) -> Result<(), Error> {
        self.target = self.side_output(output)?;
        let result =
            self.emit_written(key, timestamp, |out| Ok(serde_json::to_writer(out, value)?));
        self.target = 0;
        result
    }

    /// The key of the current event or timer, if it has one.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// Event time of the current event (or the fired timer's time).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The current event-time watermark (milliseconds since the Unix epoch;
    /// `i64::MIN` before the first one).
    pub fn watermark(&self) -> i64 {
        self.call.watermark
    }

    /// The host's wall clock when this call started, in milliseconds since
    /// the Unix epoch.
    pub fn processing_time(&self) -> i64 {
        self.call.processing_time
    }

    /// Emits an event. Every way to emit returns `Result<(), Error>`, so
    /// each reads the same in `process` (`ctx.emit(..)?;`); this one never
    /// fails.
    pub fn emit(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) -> Result<(), Error> {
        self.output.push_key(key);
        self.output.timestamps.push(timestamp);
        self.output.value_lens.push(value.len() as u32);
        self.output.values.extend_from_slice(value);
        self.output.tag(self.target);
        Ok(())
    }

    /// Emits an event whose value is `value` serialised as JSON, written
    /// straight into the call's output buffer.
    pub fn emit_json<T: Serialize + ?Sized>(
        &mut self,
        key: Option<&[u8]>,
        value: &T,
        timestamp: i64,
    ) -> Result<(), Error> {
        self.emit_written(key, timestamp, |out| {
            serde_json::to_writer(out, value)
                .map_err(|e| Error::new(format!("the output cannot be written as JSON: {e}")))
        })
    }

    /// Emits an event whose value `write` appends to the output buffer;
    /// when it fails, nothing is emitted.
    fn emit_written(
        &mut self,
        key: Option<&[u8]>,
        timestamp: i64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let start = self.output.values.len();
        if let Err(err) = write(&mut self.output.values) {
            self.output.values.truncate(start);
            return Err(err);
        }
        let len = self.output.values.len() - start;
        self.output.push_key(key);
        self.output.timestamps.push(timestamp);
        self.output.value_lens.push(len as u32);
        self.output.tag(self.target);
        Ok(())
    }

    /// Emits an event with headers.
    pub fn emit_with_headers(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> Result<(), Error> {
        let index = self.output.timestamps.len() as u32;
        self.output
            .headers
            .extend(headers.iter().map(|(name, value)| Header {
                event: index,
                name: name.to_string(),
                value: value.to_vec(),
            }));
        self.emit(key, value, timestamp)
    }

    /// Emits `value` in place of `event`'s value, keeping its key,
    /// timestamp and headers (a map over values).
    pub fn emit_like(&mut self, event: &Event<'_>, value: &[u8]) -> Result<(), Error> {
        self.copy_headers(event, self.output.timestamps.len() as u32);
        self.emit(event.key, value, event.timestamp)
    }

    /// Like [`Context::emit_like`], with the new value written by `write`
    /// straight into the call's output buffer (it appends the value's bytes
    /// to the `Vec` it is given, and must leave what is already there
    /// alone): no buffer of the operator's own, no copy. When `write`
    /// fails, nothing is emitted.
    pub fn emit_like_with(
        &mut self,
        event: &Event<'_>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let index = self.output.timestamps.len() as u32;
        self.emit_written(event.key, event.timestamp, write)?;
        self.copy_headers(event, index);
        Ok(())
    }

    /// Emits `event` unchanged, headers included.
    pub fn forward(&mut self, event: &Event<'_>) -> Result<(), Error> {
        self.copy_headers(event, self.output.timestamps.len() as u32);
        self.emit(event.key, event.value, event.timestamp)
    }

    /// Gives emitted event `index` `event`'s headers.
    fn copy_headers(&mut self, event: &Event<'_>, index: u32) {
        self.output
            .headers
            .extend(event.headers.iter().map(|h| Header {
                event: index,
                name: h.name.clone(),
                value: h.value.clone(),
            }));
    }

    /// Registers a timer for the current key: `on_timer` is called once the
    /// watermark (event time) or the wall clock (processing time) passes
    /// `time`.
    pub fn register_timer(&mut self, domain: TimeDomain, time: i64) -> Result<(), Error> {
        let key = self.require_key("timers")?;
        Ok(timers::register(domain, key, time)?)
    }

    /// Deletes a timer of the current key registered earlier.
    pub fn delete_timer(&mut self, domain: TimeDomain, time: i64) -> Result<(), Error> {
        let key = self.require_key("timers")?;
        Ok(timers::delete(domain, key, time)?)
    }

    pub(crate) fn require_key(&self, what: &str) -> Result<&'a [u8], Error> {
        self.key.ok_or_else(|| {
            Error::new(format!(
                "{what} need a keyed event, and this one has no key: key the operator's input (key_by)"
            ))
        })
    }

    fn cell_index(&self, state: usize) -> Result<usize, Error> {
        match self.slot {
            Some(slot) => Ok(slot * self.state_count + state),
            None => Err(self.require_key("value state").unwrap_err()),
        }
    }

    /// The current bytes of declared value state `state` for the current key.
    pub(crate) fn value_bytes(&self, state: usize) -> Result<Option<&[u8]>, Error> {
        let index = self.cell_index(state)?;
        Ok(match &self.cells[index] {
            Cell::Original { start, len } => Some(&self.state_bytes[*start..*start + *len]),
            Cell::Written { start, len } => Some(&self.scratch[*start..*start + *len]),
            Cell::Absent | Cell::Cleared => None,
        })
    }

    /// Replaces declared value state `state` of the current key with what
    /// `write` appends to the scratch buffer, or clears it (`write` = None).
    pub(crate) fn set_value_with(
        &mut self,
        state: usize,
        write: Option<&WriteValue<'_>>,
    ) -> Result<(), Error> {
        let index = self.cell_index(state)?;
        let new = match write {
            Some(write) => {
                let start = self.scratch.len();
                if let Err(e) = write(&mut self.scratch) {
                    self.scratch.truncate(start);
                    return Err(e);
                }
                Cell::Written {
                    start,
                    len: self.scratch.len() - start,
                }
            }
            None => Cell::Cleared,
        };
        let previous = std::mem::replace(&mut self.cells[index], new);
        self.undo.push((index, previous));
        Ok(())
    }
}
