//! The loop between the contract's batches and an author's
//! one-event-at-a-time [`Operator`]: splits the columns into events, keeps
//! value state per key slot, rolls back a failing event.

use crate::bindings::weir::operator::types::{
    CallOutput, EventError, Header, OperatorSpec, ProcessInput, StateCells, TimerInput,
};
use crate::context::{Cell, Context};
use crate::{Event, Operator, Setup, Timer};

/// The operator of one instance, from `init` on.
#[derive(Debug)]
pub struct Runtime<T> {
    operator: Option<T>,
    state_count: usize,
    /// The side outputs declared at `init`, in output order.
    outputs: Vec<String>,
}

impl<T> Default for Runtime<T> {
    fn default() -> Self {
        Runtime {
            operator: None,
            state_count: 0,
            outputs: Vec::new(),
        }
    }
}

/// Splits packed bytes by lengths (negative = absent) into ranges, checking
/// that they cover `total` bytes exactly.
fn ranges(lens: &[i32], total: usize, what: &str) -> Result<Vec<Option<(usize, usize)>>, String> {
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(lens.len());
    for &len in lens {
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some((offset, len as usize)));
            offset += len as usize;
        }
    }
    if offset != total {
        return Err(format!(
            "malformed input from the host: {what} lengths add up to {offset} bytes but {total} were sent"
        ));
    }
    Ok(out)
}

/// Checks that lengths add up to the bytes sent.
fn check_total(lens: impl Iterator<Item = usize>, total: usize, what: &str) -> Result<(), String> {
    let sum: usize = lens.sum();
    if sum != total {
        return Err(format!(
            "malformed input from the host: {what} lengths add up to {sum} bytes but {total} were sent"
        ));
    }
    Ok(())
}

fn cells(state: &StateCells, expected: usize) -> Result<Vec<Cell>, String> {
    if state.lens.len() != expected {
        return Err(format!(
            "malformed input from the host: {} state cells sent, {expected} expected",
            state.lens.len()
        ));
    }
    Ok(ranges(&state.lens, state.bytes.len(), "state")?
        .into_iter()
        .map(|r| match r {
            Some((start, len)) => Cell::Original { start, len },
            None => Cell::Absent,
        })
        .collect())
}

fn not_initialised() -> String {
    "the operator was called before init".to_string()
}

impl<T: Operator> Runtime<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn init(&mut self, config: String) -> Result<OperatorSpec, String> {
        // The host sends `{}` when a topology gives no config; an operator
        // whose config is `()` reads that as `null`.
        let text = config.trim();
        let config: T::Config = serde_json::from_str(text)
            .or_else(|err| match text {
                "{}" | "" => serde_json::from_str("null").map_err(|_| err),
                _ => Err(err),
            })
            .map_err(|e| format!("invalid config: {e}"))?;
        let mut setup = Setup::default();
        self.operator = Some(T::init(config, &mut setup)?);
        self.state_count = setup.value_states.len();
        self.outputs = setup.outputs.clone();
        Ok(OperatorSpec {
            value_states: setup.value_states,
            outputs: setup.outputs,
            ttls: setup.ttls,
        })
    }

    pub fn process(&mut self, input: ProcessInput) -> Result<CallOutput, String> {
        let operator = self.operator.as_mut().ok_or_else(not_initialised)?;
        let events = &input.events;
        let n = events.timestamps.len();
        let slotted = !input.key_slots.is_empty();
        if events.key_lens.len() != n
            || events.value_lens.len() != n
            || (slotted && input.key_slots.len() != n)
        {
            return Err("malformed input from the host: batch columns differ in length".into());
        }
        check_total(
            events.key_lens.iter().map(|&l| l.max(0) as usize),
            events.keys.len(),
            "key",
        )?;
        check_total(
            events.value_lens.iter().map(|&l| l as usize),
            events.values.len(),
            "value",
        )?;
        let slot_count = input.slot_count as usize;
        let cells = cells(&input.state, slot_count * self.state_count)?;
        let mut ctx = Context::new(
            input.context,
            self.state_count,
            cells,
            &input.state.bytes,
            n,
            &self.outputs,
        );
        ctx.input = input.input;
        let headers: &[Header] = &events.headers;
        let mut next_header = 0;
        let mut key_at = 0usize;
        let mut value_at = 0usize;
        for i in 0..n {
            let key = match events.key_lens[i] {
                l if l < 0 => None,
                l => {
                    let k = &events.keys[key_at..key_at + l as usize];
                    key_at += l as usize;
                    Some(k)
                }
            };
            let value_len = events.value_lens[i] as usize;
            let value = &events.values[value_at..value_at + value_len];
            value_at += value_len;
            let first_header = next_header;
            while next_header < headers.len() && headers[next_header].event as usize == i {
                next_header += 1;
            }
            let slot = match input.key_slots.get(i).copied().unwrap_or(u32::MAX) {
                u32::MAX => None,
                s if (s as usize) < slot_count => Some(s as usize),
                s => {
                    return Err(format!(
                        "malformed input from the host: key slot {s} of event {i} is out of range"
                    ));
                }
            };
            let event = Event {
                key,
                value,
                timestamp: events.timestamps[i],
                input: input.input,
                headers: &headers[first_header..next_header],
            };
            ctx.begin(key, slot, event.timestamp);
            let mark = ctx.output.mark();
            if let Err(err) = operator.process(&mut ctx, event) {
                ctx.roll_back(mark);
                ctx.errors.push(EventError {
                    index: i as u32,
                    message: err.message().to_string(),
                });
            }
        }
        Ok(ctx.finish())
    }

    pub fn on_timer(&mut self, input: TimerInput) -> Result<CallOutput, String> {
        let operator = self.operator.as_mut().ok_or_else(not_initialised)?;
        let timers = &input.timers;
        let n = timers.times.len();
        if timers.domains.len() != n || timers.key_slots.len() != n {
            return Err("malformed input from the host: timer columns differ in length".into());
        }
        let slot_keys = ranges(&input.key_lens, input.keys.len(), "key")?;
        let slot_count = slot_keys.len();
        let cells = cells(&input.state, slot_count * self.state_count)?;
        let mut ctx = Context::new(
            input.context,
            self.state_count,
            cells,
            &input.state.bytes,
            n,
            &self.outputs,
        );
        for i in 0..n {
            let slot = timers.key_slots[i] as usize;
            let Some(Some((start, len))) = slot_keys.get(slot).copied() else {
                return Err(format!(
                    "malformed input from the host: timer {i} has no key in slot {slot}"
                ));
            };
            let key = &input.keys[start..start + len];
            let timer = Timer {
                key,
                time: timers.times[i],
                domain: timers.domains[i],
            };
            ctx.begin(Some(key), Some(slot), timer.time);
            let mark = ctx.output.mark();
            if let Err(err) = operator.on_timer(&mut ctx, timer) {
                ctx.roll_back(mark);
                ctx.errors.push(EventError {
                    index: i as u32,
                    message: err.message().to_string(),
                });
            }
        }
        Ok(ctx.finish())
    }
}
