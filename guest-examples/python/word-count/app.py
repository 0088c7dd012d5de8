"""word-count in Python: the same semantics as the Rust example."""

import weir_sdk
from weir_sdk import EventError, Operator


class WordCount(Operator):
    def __init__(self, config, setup):
        self.count = setup.value_state("count")

    def process(self, ctx, event):
        if event.key is None:
            raise EventError("word-count needs events keyed by a UTF-8 word")
        word = event.key_str()
        n = self.count.get(ctx, 0) + 1
        self.count.set(ctx, n)
        ctx.emit_json(event.key, {"word": word, "count": n}, event.timestamp)


Handler = weir_sdk.handler(WordCount)
