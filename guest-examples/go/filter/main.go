// filter in Go: passes the events whose JSON object value satisfies
// `<field> <op> <value>` (config `field`, `op` one of gt, lt, eq, ne, and
// `value`), drops the rest. gt/lt compare two numbers numerically or two
// strings by code point; other pairs do not satisfy them. eq/ne compare
// JSON values (numbers numerically). A value that is not an object, or
// lacks the field, does not pass (even for ne); a value that is not JSON
// is an error. The same semantics as guest-examples/rust/filter.
package main

import (
	"errors"

	"weir"
)

type filter struct {
	field string
	op    string
	value *weir.Value
}

func newFilter(config *weir.Value, _ *weir.Setup) (weir.Operator, error) {
	if config.Kind != weir.Object {
		return nil, errors.New("the config must be an object")
	}
	for _, m := range config.Members {
		if m.Name != "field" && m.Name != "op" && m.Name != "value" {
			return nil, errors.New("unknown field `" + m.Name + "`, expected one of `field`, `op`, `value`")
		}
	}
	field, op, value := config.Get("field"), config.Get("op"), config.Get("value")
	if field == nil || field.Kind != weir.String {
		return nil, errors.New("missing field `field` (a string)")
	}
	if op == nil || op.Kind != weir.String {
		return nil, errors.New("missing field `op` (one of gt, lt, eq, ne)")
	}
	if value == nil {
		return nil, errors.New("missing field `value`")
	}
	switch op.Str {
	case "gt", "lt", "eq", "ne":
	default:
		return nil, errors.New("unknown variant `" + op.Str + "`, expected one of `gt`, `lt`, `eq`, `ne`")
	}
	return &filter{field: field.Str, op: op.Str, value: value}, nil
}

// compare is -1, 0 or 1, and false when the pair does not compare.
func compare(a, b *weir.Value) (int, bool) {
	switch {
	case a.IsNumber() && b.IsNumber():
		x, y := a.Float64(), b.Float64()
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		case x == y:
			return 0, true
		}
	case a.Kind == weir.String && b.Kind == weir.String:
		// UTF-8 byte order is code point order.
		switch {
		case a.Str < b.Str:
			return -1, true
		case a.Str > b.Str:
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func equal(a, b *weir.Value) bool {
	if a.IsNumber() && b.IsNumber() {
		c, ok := compare(a, b)
		return ok && c == 0
	}
	return a.Equal(b)
}

func (f *filter) Process(ctx *weir.Context, event *weir.Event) error {
	value, err := event.JSON()
	if err != nil {
		return err
	}
	field := value.Get(f.field)
	if field == nil {
		return nil
	}
	var pass bool
	switch f.op {
	case "gt":
		c, ok := compare(field, f.value)
		pass = ok && c == 1
	case "lt":
		c, ok := compare(field, f.value)
		pass = ok && c == -1
	case "eq":
		pass = equal(field, f.value)
	case "ne":
		pass = !equal(field, f.value)
	}
	if pass {
		ctx.Forward(event)
	}
	return nil
}

func init() { weir.Register(newFilter) }

func main() {}
