"""{{name}}: upper-cases the ASCII letters of a JSON string value and
counts, per key, the events seen; emits {"seen": n, "text": ...} keyed as
the input. Values that are not strings fail alone."""

import weir_sdk
from weir_sdk import EventError, Operator


class Upper(Operator):
    def __init__(self, config, setup):
        self.seen = setup.value_state("seen")

    def process(self, ctx, event):
        text = event.json()
        if not isinstance(text, str):
            raise EventError("{{name}} expects the value to be a JSON string")
        # Value state needs a keyed input (`key_by` in a topology).
        seen = self.seen.get(ctx, 0) + 1
        self.seen.set(ctx, seen)
        upper = "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)
        ctx.emit_json(event.key, {"seen": seen, "text": upper}, event.timestamp)


Handler = weir_sdk.handler(Upper)
