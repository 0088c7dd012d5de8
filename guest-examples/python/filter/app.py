"""filter in Python: the same semantics as the Rust example (config
`field`, `op` one of gt, lt, eq, ne, and `value`)."""

import weir_sdk
from weir_sdk import Operator

OPS = ("gt", "lt", "eq", "ne")


def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compare(a, b):
    """-1, 0, 1, or None when the pair does not compare (as in Rust)."""
    if is_num(a) and is_num(b):
        a, b = float(a), float(b)
    elif not (isinstance(a, str) and isinstance(b, str)):
        return None
    return (a > b) - (a < b)


def same(a, b):
    """JSON equality, telling booleans from numbers and integers from
    floats inside arrays and objects (as serde_json does)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if is_num(a) and is_num(b):
        return type(a) is type(b) and a == b
    return type(a) is type(b) and a == b


def equal(a, b):
    if is_num(a) and is_num(b):
        return compare(a, b) == 0
    return same(a, b)


class Filter(Operator):
    def __init__(self, config, setup):
        unknown = set(config) - {"field", "op", "value"}
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        if config.get("op") not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, not {config.get('op')!r}")
        if "field" not in config or "value" not in config:
            raise ValueError("config needs `field` and `value`")
        self.field, self.op, self.value = config["field"], config["op"], config["value"]

    def process(self, ctx, event):
        value = event.json()
        if not isinstance(value, dict) or self.field not in value:
            return
        got = value[self.field]
        if self.op == "gt":
            keep = compare(got, self.value) == 1
        elif self.op == "lt":
            keep = compare(got, self.value) == -1
        elif self.op == "eq":
            keep = equal(got, self.value)
        else:
            keep = not equal(got, self.value)
        if keep:
            ctx.forward(event)


Handler = weir_sdk.handler(Filter)
