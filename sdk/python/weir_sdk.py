"""Write Weir stream operators in Python.

Subclass `Operator`, implement `process(self, ctx, event)` (and `on_timer`
if you register timers), and end your module with
`Handler = weir_sdk.handler(MyOperator)`. The SDK hides the batch layout of
the `weir:operator@0.2.0` contract (events and the value state of the
batch's keys travel column by column): you see one event at a time (and
which input it came from), typed state stored as JSON (readable by
operators in any language, optionally expiring), and a `Context` to emit
events to the main output or to declared side outputs.

Build: `componentize-py -d <weir>/wit/0.2.0 -w operator componentize app -p . -p <site-packages> -o op.wasm`
with this package installed (`pip install weir-sdk`).
"""

__version__ = "0.2.0"

import json
from itertools import accumulate, count, repeat
from sys import getrefcount

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import context as host_context
from wit_world.imports import state as host_state
from wit_world.imports import timers as host_timers
from wit_world.imports import types

__all__ = [
    "Context", "Event", "EventError", "ListState", "MapState", "Operator",
    "Setup", "Timer", "Ttl", "ValueState", "dumps", "handler", "log",
]

NO_SLOT = 0xFFFFFFFF
# A value state cell not yet cut out of the call's bytes.
_LAZY = object()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _python_encoder(value, _indent):
    return (_ENCODER.encode(value),)


def _c_encoder():
    """`json.dumps(value, separators=(",", ":"), ensure_ascii=False)` costs
    a new JSONEncoder and C encoder per call (about four microseconds):
    this is the C encoder made once, if this CPython has one with the
    signature it is called with here, that answers a 1-tuple of the text
    (CPython 3.12 on) and writes what the Python one does; else the Python
    encoder with the same answer."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _python_encoder
    try:
        # No cycle markers: a cyclic value fails with RecursionError.
        fast = make(None, _ENCODER.default, json.encoder.encode_basestring,
                    None, ":", ",", False, False, True)
        probe = {"a": [1, -2.5, 1e16, "\u00e9\n\"", None, True, {}], "b": {"c": []}}
        text = fast(probe, 0)
        if type(text) is tuple and text == (_ENCODER.encode(probe),):
            return fast
    except Exception:  # another CPython's signature: keep the Python encoder
        pass
    return _python_encoder


# _FAST(value, 0)[0] is the compact JSON text of value.
_FAST = _c_encoder()
_encode_str = json.encoder.encode_basestring


def dumps(value):
    """Compact JSON text, as Weir's Rust SDK writes it."""
    kind = type(value)
    if kind is int:  # not bool, a subclass that JSON writes as true/false
        return b"%d" % value
    if kind is str:
        return _encode_str(value).encode()
    return _FAST(value, 0)[0].encode()


class EventError(Exception):
    """Raise it for an event you cannot handle: that event's output and
    value-state writes are dropped and the host applies the operator's error
    policy (fail, skip, dead-letter) to it alone."""


class Event:
    """One input event. `input` is the index, in the operator's `input`
    list in the topology, of the input it came from (0 with one input)."""

    __slots__ = ("key", "value", "timestamp", "headers", "input")

    def __init__(self, key, value, timestamp, headers, input=0):
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers
        self.input = input

    def json(self):
        try:
            return json.loads(self.value)
        except ValueError as e:
            raise EventError(f"invalid JSON: {e}") from None

    def key_str(self):
        key = self.key
        # decode() without arguments: UTF-8, strict, and no argument parsing.
        return None if key is None else key.decode()

    def value_str(self):
        """The value as text (usually its compact JSON), or an
        `EventError` when it is not UTF-8."""
        try:
            return self.value.decode("utf-8", "strict")
        except UnicodeDecodeError as e:
            raise EventError(f"the event value is not UTF-8: {e}") from None


class _Batch:
    """What the events of one call share: their values, packed, and where
    each ends (None until a value is read: word-count reads none, and
    the ends of a batch are a thousand integers to make); their headers
    (None when no event has any); their input."""

    __slots__ = ("values", "value_lens", "value_ends", "headers", "input")

    def __init__(self, values, value_lens, headers, input):
        self.values = values
        self.value_lens = value_lens
        self.value_ends = None
        self.headers = headers
        self.input = input


class _BatchEvent(Event):
    """An event of a call: its value, headers and input are read from the
    batch when asked for (word-count never cuts a value out). Made with
    `object.__new__` and its slots set in the batch loop: a Python
    `__init__` costs a frame per event."""

    __slots__ = ("_batch", "_i")

    @property
    def value(self):
        batch, i = self._batch, self._i
        ends = batch.value_ends
        if ends is None:
            ends = batch.value_ends = _ends(batch.value_lens)
        end = ends[i]
        return batch.values[end - batch.value_lens[i]:end]

    @property
    def headers(self):
        headers = self._batch.headers
        return () if headers is None else headers[self._i]

    @property
    def input(self):
        return self._batch.input


class Timer:
    __slots__ = ("key", "time", "domain")

    def __init__(self, key, time, domain):
        self.key = key
        self.time = time
        self.domain = domain


class Ttl:
    """How long a state's entries live, given to `Setup.value_state` (and
    `map_state`, `list_state`) as `ttl=`. An entry expires `ms` after it was
    last written (or read too, with `refresh_on_read=True`): in processing
    time (the host's clock) with `Ttl.processing_time(ms)`, in event time
    (against the operator's watermark) with `Ttl.event_time(ms)`. An
    expired entry reads as absent; map entries and list items expire one by
    one."""

    __slots__ = ("ms", "domain", "refresh_on_read")

    def __init__(self, ms, domain, refresh_on_read=False):
        if not isinstance(ms, int) or isinstance(ms, bool) or not 0 < ms < 2**64:
            raise ValueError(f"a TTL is a whole number of milliseconds above 0, not {ms!r}")
        self.ms = ms
        self.domain = domain
        self.refresh_on_read = refresh_on_read

    @classmethod
    def processing_time(cls, ms, refresh_on_read=False):
        return cls(ms, types.TimeDomain.PROCESSING_TIME, refresh_on_read)

    @classmethod
    def event_time(cls, ms, refresh_on_read=False):
        return cls(ms, types.TimeDomain.EVENT_TIME, refresh_on_read)


class ValueState:
    """One JSON value per key; travels with each batch (no host call)."""

    def __init__(self, index):
        self._index = index

    # get and set read the context's cells themselves: they run for most
    # events, and a Python call costs more than their work. An event
    # without a key has slot NO_SLOT, whose cell is past the end of the
    # cells: the IndexError is where such an event is told it needs a key.
    def get(self, ctx, default=None):
        cell = ctx._slot * ctx._state_count + self._index
        try:
            raw = ctx._cells[cell]
        except IndexError:
            ctx._require_key()
            raise
        if raw is _LAZY:
            raw = ctx._cell_bytes[ctx._cell_starts[cell]:ctx._cell_ends[cell]]
        elif raw is None:
            return default
        if raw.isdigit() and (raw[0] != 48 or len(raw) == 1):
            return int(raw)
        return json.loads(raw)

    def set(self, ctx, value):
        cell = ctx._slot * ctx._state_count + self._index
        cells = ctx._cells
        try:
            old = cells[cell]
        except IndexError:
            ctx._require_key()
            raise
        raw = b"%d" % value if type(value) is int else dumps(value)
        undo = ctx._undo
        undo += (cell, old)
        cells[cell] = raw

    def clear(self, ctx):
        ctx._cell_set(self._index, None)


class MapState:
    """Many `key -> value` entries (JSON) per key, through host calls."""

    def __init__(self, name):
        self._name = name

    def get(self, ctx, map_key, default=None):
        raw = host_state.map_get(self._name, ctx._require_key(), dumps(map_key))
        return default if raw is None else json.loads(raw)

    def put(self, ctx, map_key, value):
        host_state.map_put(self._name, ctx._require_key(), dumps(map_key), dumps(value))

    def remove(self, ctx, map_key):
        host_state.map_remove(self._name, ctx._require_key(), dumps(map_key))

    def entries(self, ctx):
        """Every entry of the key's map, ordered by the bytes of the map
        keys' JSON (not by the keys' values: sort them if order matters)."""
        return [(json.loads(k), json.loads(v))
                for k, v in host_state.map_entries(self._name, ctx._require_key())]

    def clear(self, ctx):
        host_state.map_clear(self._name, ctx._require_key())


class ListState:
    """A list of JSON values per key, through host calls."""

    def __init__(self, name):
        self._name = name

    def get(self, ctx):
        return [json.loads(i) for i in host_state.list_get(self._name, ctx._require_key())]

    def append(self, ctx, item):
        host_state.list_append(self._name, ctx._require_key(), dumps(item))

    def replace(self, ctx, items):
        """Replaces the whole list; an empty one clears it."""
        host_state.list_replace(self._name, ctx._require_key(), [dumps(i) for i in items])


class Setup:
    """Declares an operator's state and side outputs in `Operator.__init__`.
    Each state may be given `ttl=Ttl...` to make its entries expire."""

    def __init__(self):
        self.value_states = []
        self.outputs = []
        self.ttls = {}  # (kind, name) -> Ttl

    def _ttl(self, kind, name, ttl):
        if ttl is None:
            self.ttls.pop((kind, name), None)
        elif isinstance(ttl, Ttl):
            self.ttls[(kind, name)] = ttl
        else:
            raise TypeError(f"the ttl of state {name!r} is {ttl!r}: give a Ttl.processing_time(ms) or Ttl.event_time(ms)")

    def value_state(self, name, ttl=None):
        self._ttl(types.StateKind.VALUE, name, ttl)
        if name not in self.value_states:
            self.value_states.append(name)
        return ValueState(self.value_states.index(name))

    def map_state(self, name, ttl=None):
        self._ttl(types.StateKind.MAP, name, ttl)
        return MapState(name)

    def list_state(self, name, ttl=None):
        self._ttl(types.StateKind.LIST, name, ttl)
        return ListState(name)

    def side_output(self, name):
        """Declares side output `name`, written with `ctx.emit_to(name, ...)`.
        A topology reads it as `<operator>.<name>` (`input: fraud.alerts`);
        the operator's own name stays its main output."""
        if name not in self.outputs:
            self.outputs.append(name)

    def _spec(self):
        return types.OperatorSpec(
            value_states=self.value_states,
            outputs=self.outputs,
            ttls=[
                types.StateTtl(
                    kind=kind, name=name, ttl_ms=t.ms, domain=t.domain,
                    refresh=types.TtlRefresh.ON_READ_AND_WRITE if t.refresh_on_read
                    else types.TtlRefresh.ON_WRITE)
                for (kind, name), t in self.ttls.items()
            ],
        )


class Context:
    """What an operator can do while it handles one event or timer."""

    def __init__(self, call, state_count, cells, side_outputs, input=0):
        self._call = call
        self._state_count = state_count
        # The value state cells of the call, slot-major: each one's JSON
        # bytes, None when absent or cleared, _LAZY until read or written
        # (then cut from the call's bytes, from start to end).
        lens = cells.lens
        if lens and min(lens) < 0:
            self._cells = [None if n < 0 else _LAZY for n in lens]
        else:
            self._cells = [_LAZY] * len(lens)
        self._cell_ends = _ends(lens)
        self._cell_starts = [0, *self._cell_ends]
        self._cell_bytes = cells.bytes
        self._side_outputs = side_outputs
        self._input = input
        # cell, what it held before, for every write in the call (flat);
        # a failing event undoes its own, from its mark on.
        self._undo = []
        self.key = None
        self.timestamp = 0
        self._slot = NO_SLOT
        # The output of each emitted event, kept from the first one sent to
        # a side output on (_side); until then all went to the main one.
        self._targets = []
        self._side = False
        # Emitted events as (key or None, value, timestamp): one append per
        # event; _output makes the columns with C-level calls.
        self._out = []
        self._headers = []

    @property
    def watermark(self):
        return self._call.watermark

    @property
    def processing_time(self):
        return self._call.processing_time

    @property
    def input(self):
        """Which of the operator's inputs the current batch came from: its
        index in the topology's `input` list (0 with one input, and while a
        timer fires)."""
        return self._input

    def emit(self, key, value, timestamp=None, headers=()):
        if headers or self._side or type(value) is not bytes or not (key is None or type(key) is bytes):
            self._emit(0, key, value, timestamp, headers)
        else:
            self._out.append((key, value, self.timestamp if timestamp is None else timestamp))

    def emit_to(self, output, key, value, timestamp=None, headers=()):
        """Emits to side output `output` (declared with
        `setup.side_output(output)`) instead of the main output."""
        self._emit(self._side_output(output), key, value, timestamp, headers)

    def emit_json_to(self, output, key, value, timestamp=None):
        self.emit_to(output, key, dumps(value), timestamp)

    def _side_output(self, name):
        try:
            return self._side_outputs.index(name) + 1
        except ValueError:
            raise EventError(
                f"no side output {name!r}: declare it in __init__ with setup.side_output({name!r})"
                f" (declared: {self._side_outputs})") from None

    def _emit(self, target, key, value, timestamp, headers):
        # Bytes-like keys and values are copied now, so that a wrong type
        # fails this event rather than the whole call at its end.
        if type(value) is not bytes:
            value = memoryview(value).tobytes()
        if key is not None and type(key) is not bytes:
            key = memoryview(key).tobytes()
        index = len(self._out)
        if target != 0 and not self._side:
            # Even when it is the call's first event (index 0).
            self._targets = [0] * index
            self._side = True
        if self._side:
            self._targets.append(target)
        for name, hv in headers:
            self._headers.append(types.Header(event=index, name=name, value=bytes(hv)))
        self._out.append((key, value, self.timestamp if timestamp is None else timestamp))

    def emit_json(self, key, value, timestamp=None):
        # The common case without _emit's generality: a dict, the main
        # output, no headers, bytes or no key; its text is kept as str and
        # encoded with the call's other texts in _output.
        if type(value) is dict and (type(key) is bytes or key is None) and not self._side:
            self._out.append((key, _FAST(value, 0)[0], self.timestamp if timestamp is None else timestamp))
        elif self._side or not (key is None or type(key) is bytes):
            self._emit(0, key, dumps(value), timestamp, ())
        else:
            self._out.append((key, dumps(value), self.timestamp if timestamp is None else timestamp))

    def forward(self, event):
        self._emit(0, event.key, event.value, event.timestamp, event.headers)

    def register_timer(self, time, domain=types.TimeDomain.EVENT_TIME):
        host_timers.register(domain, self._require_key(), time)

    def delete_timer(self, time, domain=types.TimeDomain.EVENT_TIME):
        host_timers.delete(domain, self._require_key(), time)

    def _require_key(self):
        if self.key is None:
            raise EventError("state needs a keyed event, and this one has no key: key the operator's input (key_by)")
        return self.key

    def _cell(self, index):
        if self._slot == NO_SLOT:
            self._require_key()
        return self._slot * self._state_count + index

    def _cell_set(self, index, raw):
        cell = self._cell(index)
        self._undo += (cell, self._cells[cell])
        self._cells[cell] = raw

    def _roll_back(self, events, undo):
        """Drops what the failing item emitted and wrote: emitted events
        from `events` on (and their headers), writes from `undo` on."""
        del self._out[events:]
        del self._targets[events:]
        headers = self._headers
        while headers and headers[-1].event >= events:
            headers.pop()
        cells, log = self._cells, self._undo
        for at in range(len(log) - 2, undo - 1, -2):
            cells[log[at]] = log[at + 1]
        del log[undo:]

    def _output(self, errors):
        # Every cell written (and not rolled back), once, with its last value.
        cells = sorted(set(self._undo[::2]))
        raws = list(map(self._cells.__getitem__, cells))
        if None in raws:
            lens = [-1 if raw is None else len(raw) for raw in raws]
            raws = filter(None, raws)
        else:
            lens = list(map(len, raws))
        data = raws
        keys, values, timestamps = zip(*self._out) if self._out else ((), (), ())
        values = _utf8(values)
        if None in keys:
            key_lens = [-1 if k is None else len(k) for k in keys]
            keys = filter(None, keys)
        else:
            key_lens = list(map(len, keys))
        return types.CallOutput(
            events=types.EventBatch(
                timestamps=list(timestamps), key_lens=key_lens, keys=b"".join(keys),
                value_lens=values.lens if type(values) is _Packed else list(map(len, values)),
                values=values.data if type(values) is _Packed else b"".join(values),
                headers=self._headers),
            errors=errors,
            state=types.StateChanges(cells=cells, lens=lens, bytes=b"".join(data)),
            outputs=self._targets if any(self._targets) else [],
        )


def _utf8(values):
    """Emitted values as bytes: emit_json keeps JSON text as str, encoded
    here in one call when all of them are ASCII (then a text's length is
    its byte length)."""
    kinds = set(map(type, values))
    if str not in kinds:
        return values
    if len(kinds) == 1:
        text = "".join(values)
        data = text.encode()
        if len(data) == len(text):
            return _Packed(data, list(map(len, values)))
    return [v.encode() if type(v) is str else v for v in values]


class _Packed:
    """Values already joined, with their byte lengths."""

    __slots__ = ("data", "lens")

    def __init__(self, data, lens):
        self.data = data
        self.lens = lens


def _ends(lens):
    """Where each packed piece ends (a negative length counts as none)."""
    if lens and min(lens) < 0:
        return list(accumulate(map(max, lens, repeat(0))))
    return list(accumulate(lens))


def _split(lens, data):
    """Packed bytes cut by lengths; None where a length is negative."""
    if lens and min(lens) < 0:
        return [None if n < 0 else data[end - n:end] for n, end in zip(lens, _ends(lens))]
    return [data[end - n:end] for n, end in zip(lens, accumulate(lens))]


class Operator:
    """Base class of an operator. `__init__(self, config, setup)` gets the
    topology's config (a dict) and declares state through `setup`."""

    def __init__(self, config, setup):
        pass

    def process(self, ctx, event):
        raise NotImplementedError

    def on_timer(self, ctx, timer):
        pass


def log(level, message):
    """Writes to the host's log; `level` is one of trace, debug, info, warn, error."""
    host_context.log(getattr(host_context.LogLevel, level.upper()), message)


def _describe(e):
    """An event's failure as the host reports it: an `EventError`'s own
    message, any other exception with its type (`KeyError: 'amount'`)."""
    if isinstance(e, EventError):
        return str(e) or "EventError"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def handler(operator_class):
    """The `Handler` class componentize-py exports for `operator_class`."""

    class Handler(exports.Handler):
        operator = None
        state_count = 0
        outputs = []

        def init(self, config):
            setup = Setup()
            try:
                parsed = json.loads(config) if config.strip() else {}
                Handler.operator = operator_class(parsed, setup)
            except Exception as e:  # the operator refused its config
                raise Err(f"invalid config: {e}")
            Handler.state_count = len(setup.value_states)
            Handler.outputs = setup.outputs
            return setup._spec()

        def process(self, input):
            # One pass over the batch in Python: no host call per event, no
            # per-event object but the Event itself.
            ev = input.events
            timestamps = ev.timestamps
            keys = _split(ev.key_lens, ev.keys)
            headers = None
            if ev.headers:
                headers = [()] * len(timestamps)
                for h in ev.headers:
                    if not headers[h.event]:
                        headers[h.event] = []
                    headers[h.event].append((h.name, h.value))
            batch = _Batch(ev.values, ev.value_lens, headers, input.input)
            slots = input.key_slots or repeat(NO_SLOT)
            ctx = Context(input.context, Handler.state_count, input.state, Handler.outputs, input.input)
            call = Handler.operator.process
            emitted, undo = ctx._out, ctx._undo
            errors = []
            new = object.__new__
            # One event object serves every event that the operator does
            # not keep: when its reference count after a call is the one
            # it had when made, nothing else holds it, and it is reused
            # (a new one costs an allocation and a free in the guest).
            # The count is read at one place only, where the first event,
            # fresh, gives the count of an event held by nothing else.
            event = new(_BatchEvent)
            event._batch = batch
            unshared = 0
            for i, key, timestamp, slot in zip(count(), keys, timestamps, slots):
                refs = getrefcount(event)
                if refs != unshared:
                    if unshared:
                        event = new(_BatchEvent)
                        event._batch = batch
                    else:
                        unshared = refs
                ctx.key, ctx._slot, ctx.timestamp = key, slot, timestamp
                event.key, event.timestamp, event._i = key, timestamp, i
                events, writes = len(emitted), len(undo)
                try:
                    call(ctx, event)
                except Exception as e:
                    ctx._roll_back(events, writes)
                    errors.append(types.EventError(index=i, message=_describe(e)))
            return ctx._output(errors)

        def on_timer(self, input):
            slot_keys = _split(input.key_lens, input.keys)
            ctx = Context(input.context, Handler.state_count, input.state, Handler.outputs)
            call = Handler.operator.on_timer
            t = input.timers
            errors = []
            for i, (slot, time, domain) in enumerate(zip(t.key_slots, t.times, t.domains)):
                key = slot_keys[slot]
                ctx.key, ctx._slot, ctx.timestamp = key, slot, time
                events, writes = len(ctx._out), len(ctx._undo)
                try:
                    call(ctx, Timer(key, time, domain))
                except Exception as e:
                    ctx._roll_back(events, writes)
                    errors.append(types.EventError(index=i, message=_describe(e)))
            return ctx._output(errors)

    return Handler
