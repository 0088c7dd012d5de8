"""The SDK's batch layer on a native CPython, without a component: the
bindings componentize-py generates for `wit/0.2.0`, and calls made as the
host makes them (columns in, columns out).

Run: `python3 sdk/python/tests/test_batch.py` (componentize-py from
`target/py-venv`, or the one `COMPONENTIZE_PY` names). The operators'
outputs against Rust's, byte for byte, are the languages test's job; this
checks what the host cannot see: the event objects an operator keeps.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TOOL = os.environ.get("COMPONENTIZE_PY", os.path.join(ROOT, "target/py-venv/bin/componentize-py"))
BINDINGS = tempfile.mkdtemp(prefix="weir-sdk-bindings-")
atexit.register(shutil.rmtree, BINDINGS, ignore_errors=True)
subprocess.run([TOOL, "-d", os.path.join(ROOT, "wit/0.2.0"), "-w", "operator", "bindings", BINDINGS],
               check=True, stdout=subprocess.DEVNULL)
sys.path[:0] = [BINDINGS, os.path.join(ROOT, "sdk/python")]

import weir_sdk  # noqa: E402
from weir_sdk import EventError, Operator  # noqa: E402
from wit_world.imports import types  # noqa: E402


def call(handler, events, cells=None):
    """`process` with `events` as (key or None, value, timestamp), each key
    its own slot, and value state `cells` (key -> JSON bytes) of one state."""
    slots = {}
    key_slots = [weir_sdk.NO_SLOT if k is None else slots.setdefault(k, len(slots)) for k, _, _ in events]
    cells = cells or {}
    state = [cells.get(k) for k in slots]
    return handler.process(types.ProcessInput(
        context=types.CallContext(watermark=0, processing_time=0),
        input=0,
        events=types.EventBatch(
            timestamps=[t for _, _, t in events],
            key_lens=[-1 if k is None else len(k) for k, _, _ in events],
            keys=b"".join(k for k, _, _ in events if k is not None),
            value_lens=[len(v) for _, v, _ in events],
            values=b"".join(v for _, v, _ in events),
            headers=[]),
        key_slots=key_slots, slot_count=len(slots),
        state=types.StateCells(lens=[-1 if s is None else len(s) for s in state],
                               bytes=b"".join(s for s in state if s is not None))))


def emitted(out):
    """The output's events as (key, value, timestamp)."""
    ev, events, at_key, at_value = out.events, [], 0, 0
    for n, m, t in zip(ev.key_lens, ev.value_lens, ev.timestamps):
        key = None if n < 0 else ev.keys[at_key:at_key + n]
        at_key += max(n, 0)
        events.append((key, ev.values[at_value:at_value + m], t))
        at_value += m
    return events


class KeepSome(Operator):
    """Keeps every third event (in a list, a closure or a failed event's
    exception) and emits what the kept ones hold."""

    def __init__(self, config, setup):
        self.kept = []
        self.seen = setup.value_state("seen")

    def process(self, ctx, event):
        t = event.timestamp
        if t % 3 == 0:
            self.kept.append(event)
        elif t % 3 == 1:
            self.kept.append(lambda: event)
        self.seen.set(ctx, self.seen.get(ctx, 0) + 1)
        ctx.emit(event.key, event.value)


class BatchTest(unittest.TestCase):
    def handler(self, operator):
        handler = weir_sdk.handler(operator)()
        handler.init("{}")
        return handler

    def test_an_event_the_operator_keeps_is_never_changed_by_the_events_after_it(self):
        handler = self.handler(KeepSome)
        batch = [(b"k%d" % i, b'{"i":%d}' % i, i) for i in range(40)]
        call(handler, batch)
        kept = [k() if callable(k) else k for k in type(handler).operator.kept]
        self.assertEqual(len(kept), 27)
        for event in kept:
            i = event.timestamp
            self.assertEqual((event.key, event.value, event.key_str()), (b"k%d" % i, b'{"i":%d}' % i, "k%d" % i))
        self.assertEqual(len({id(e) for e in kept}), 27)

    def test_events_kept_from_one_call_survive_the_next_call(self):
        handler = self.handler(KeepSome)
        call(handler, [(b"a", b"1", 0), (b"b", b"2", 2)])
        call(handler, [(b"c", b"3", 3), (b"d", b"4", 5)])
        kept = type(handler).operator.kept
        self.assertEqual([(e.key, e.value, e.timestamp) for e in kept], [(b"a", b"1", 0), (b"c", b"3", 3)])

    def test_a_failing_event_leaves_no_output_and_no_state_change_and_the_next_one_runs(self):
        class FailOdd(Operator):
            def __init__(self, config, setup):
                self.n = setup.value_state("n")

            def process(self, ctx, event):
                self.n.set(ctx, self.n.get(ctx, 0) + 10)
                ctx.emit_json(event.key, {"t": event.timestamp})
                if event.timestamp % 2:
                    raise EventError("odd")

        out = call(self.handler(FailOdd), [(b"a", b"0", 0), (b"a", b"0", 1), (b"b", b"0", 2), (None, b"0", 4)],
                   cells={b"a": b"5"})
        self.assertEqual(emitted(out), [(b"a", b'{"t":0}', 0), (b"b", b'{"t":2}', 2)])
        self.assertEqual([(e.index, e.message) for e in out.errors], [
            (1, "odd"),
            (3, "state needs a keyed event, and this one has no key: key the operator's input (key_by)")])
        self.assertEqual((out.state.cells, out.state.lens, out.state.bytes), ([0, 1], [2, 2], b"1510"))


if __name__ == "__main__":
    unittest.main()
