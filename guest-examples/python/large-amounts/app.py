"""large-amounts in Python: contract 0.2.0's side outputs and state TTL.

Every event `{"amount": n}` (keyed) goes to the main output as
`{"amount":n,"seen":k}`, `k` counting the key's events while they come
less than `ttl_ms` (config, default 60000) of processing time apart; an
amount above `limit` (config, default 1000) also goes to side output
`alerts`. An event naming another output in `"to"` is sent there too: to
an undeclared one, it fails alone, saying which outputs exist.
"""

import weir_sdk
from weir_sdk import EventError, Operator, Ttl


class LargeAmounts(Operator):
    def __init__(self, config, setup):
        self.limit = config.get("limit", 1000)
        setup.side_output("alerts")
        self.seen = setup.value_state("seen", ttl=Ttl.processing_time(config.get("ttl_ms", 60000)))

    def process(self, ctx, event):
        value = event.json()
        if not isinstance(value, dict) or not isinstance(value.get("amount"), (int, float)):
            raise EventError('expected {"amount": <number>}')
        amount = value["amount"]
        seen = self.seen.get(ctx, 0) + 1
        self.seen.set(ctx, seen)
        out = {"amount": amount, "seen": seen}
        if amount > self.limit:
            ctx.emit_json_to("alerts", event.key, out)
        if "to" in value:
            ctx.emit_json_to(value["to"], event.key, out)
        ctx.emit_json(event.key, out)


Handler = weir_sdk.handler(LargeAmounts)
