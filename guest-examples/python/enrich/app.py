"""enrich in Python: the event-time temporal join of the Rust example
(`guest-examples/rust/enrich`), with byte-identical output.

Input 0 carries transactions, input 1 profiles, both keyed by the same key
(e.g. `key_by: {field: user}`). A transaction at time `t` is emitted once
the watermark passes `t`, enriched with the key's profile valid at `t` (the
one with the greatest time `<= t`), as `{"txn":<transaction>,"profile":
<profile or null>}` with the transaction's key and time, so the output is
the same whatever the arrival order within the sources' allowed
out-of-orderness.

State: map `pending` ([time, transaction text] -> how many) holds the
transactions waiting for the watermark, with an event-time timer at each
one's time; map `profiles` (time -> profile text) the profiles that can
still be valid for a transaction to come. Map keys are stored as JSON, so
the host orders entries by those bytes, not by time: `on_timer` sorts them.
"""

import weir_sdk
from weir_sdk import Operator

# The input that carries profiles; every other input carries transactions.
PROFILES = 1


class Enrich(Operator):
    def __init__(self, config, setup):
        self.pending = setup.map_state("pending")
        self.profiles = setup.map_state("profiles")

    def process(self, ctx, event):
        text = event.value_str()
        t = event.timestamp
        if event.input == PROFILES:
            self.profiles.put(ctx, t, text)
            return
        entry = [t, text]
        self.pending.put(ctx, entry, self.pending.get(ctx, entry, 0) + 1)
        ctx.register_timer(t)

    def on_timer(self, ctx, timer):
        # Sorted as the Rust example sorts: by time, then by the text's code
        # points (the order of its UTF-8 bytes).
        due = sorted((t, txn, n) for (t, txn), n in self.pending.entries(ctx) if t <= timer.time)
        profiles = sorted(self.profiles.entries(ctx))
        for t, txn, n in due:
            profile = next((p for pt, p in reversed(profiles) if pt <= t), "null")
            out = f'{{"txn":{txn},"profile":{profile}}}'.encode()
            for _ in range(n):
                ctx.emit(timer.key, out, t)
            self.pending.remove(ctx, [t, txn])
        # Profiles older than the one valid at the timer's time can serve
        # no transaction to come: those are behind the watermark.
        newest = next((pt for pt, _ in reversed(profiles) if pt <= timer.time), None)
        if newest is not None:
            for pt, _ in profiles:
                if pt < newest:
                    self.profiles.remove(ctx, pt)


Handler = weir_sdk.handler(Enrich)
