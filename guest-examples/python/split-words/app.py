"""split-words in Python: the same semantics as the Rust example."""

import string

import weir_sdk
from weir_sdk import EventError, Operator


class SplitWords(Operator):
    def process(self, ctx, event):
        text = event.json()
        if not isinstance(text, str):
            raise EventError("split-words expects the value to be a JSON string")
        for piece in text.split():
            word = piece.lower().strip(string.punctuation)
            if word:
                ctx.emit_json(word.encode(), word, event.timestamp)


Handler = weir_sdk.handler(SplitWords)
