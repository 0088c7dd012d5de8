// {{name}}: upper-cases the ASCII letters of a JSON string value and
// counts, per key, the events seen; emits {"seen": n, "text": ...} keyed
// as the input. Values that are not strings fail alone.
package main

import (
	"errors"
	"strconv"

	"weir"
)

type upper struct {
	seen weir.ValueState
}

func (u *upper) Process(ctx *weir.Context, event *weir.Event) error {
	text, err := event.JSON()
	if err != nil || text.Kind != weir.String {
		return errors.New("{{name}} expects the value to be a JSON string")
	}
	// Value state needs a keyed input (`key_by` in a topology).
	seen, err := u.seen.GetUint64(ctx, 0)
	if err != nil {
		return err
	}
	seen++
	if err := u.seen.SetUint64(ctx, seen); err != nil {
		return err
	}
	upper := []byte(text.Str)
	for i, c := range upper {
		if c >= 'a' && c <= 'z' {
			upper[i] = c - 'a' + 'A'
		}
	}
	out := strconv.AppendUint([]byte(`{"seen":`), seen, 10)
	out = append(out, `,"text":`...)
	out = weir.AppendJSONString(out, string(upper))
	out = append(out, '}')
	ctx.EmitEvent(&weir.Event{HasKey: event.HasKey, Key: event.Key, Value: out, Timestamp: event.Timestamp})
	return nil
}

func init() {
	// config is the topology's `config` (a JSON object).
	weir.Register(func(config *weir.Value, setup *weir.Setup) (weir.Operator, error) {
		return &upper{seen: setup.ValueState("seen")}, nil
	})
}

func main() {}
