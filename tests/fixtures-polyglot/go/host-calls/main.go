// Test fixture: a Go operator that reaches every host call of the world
// (map and list state, timers, counters, logs, its name) and value state,
// so that the hand-written canonical ABI of sdk/go is checked on each.
//
// Per keyed event whose value is a JSON string s: forwards the event,
// counts it in the host counter `events`, adds one to the value state
// `n`, puts n under s in the map `seen` and reads it back, appends the
// value to the list `log`, registers an event-time timer at timestamp+10
// and emits {"n":…,"got":…,"list":…,"entries":…,"name":…}. The value
// "fail" sets n to 999 and emits, then fails: neither may be seen; "panic"
// panics (the instance traps, with the panic's text). A timer
// at t clears the key's map, replaces its list by two items, deletes the
// key's timer at t+2 and emits {"timer":t,"entries":…,"list":…}.
package main

import (
	"errors"
	"strconv"

	"weir"
)

type hostCalls struct {
	n    weir.ValueState
	seen weir.MapState
	log  weir.ListState
}

func (h *hostCalls) Process(ctx *weir.Context, event *weir.Event) error {
	v, err := event.JSON()
	if err != nil || v.Kind != weir.String {
		return errors.New("host-calls expects a JSON string")
	}
	n, err := h.n.GetUint64(ctx, 0)
	if err != nil {
		return err
	}
	if v.Str == "panic" {
		panic("host-calls panicked on purpose")
	}
	if v.Str == "fail" {
		if err := h.n.SetUint64(ctx, 999); err != nil {
			return err
		}
		ctx.Emit([]byte(`"dropped"`), event.Timestamp)
		return errors.New("failed on purpose")
	}
	ctx.Forward(event)
	weir.CounterAdd("events", 1)
	n++
	if err := h.n.SetUint64(ctx, n); err != nil {
		return err
	}
	text := strconv.AppendUint(nil, n, 10)
	if err := h.seen.Put(ctx, []byte(v.Str), text); err != nil {
		return err
	}
	got, ok, err := h.seen.Get(ctx, []byte(v.Str))
	if err != nil || !ok {
		return errors.New("the map entry just put is missing")
	}
	if err := h.log.Append(ctx, event.Value); err != nil {
		return err
	}
	items, err := h.log.Get(ctx)
	if err != nil {
		return err
	}
	entries, err := h.seen.Entries(ctx)
	if err != nil {
		return err
	}
	if err := ctx.RegisterTimer(weir.EventTime, event.Timestamp+10); err != nil {
		return err
	}
	weir.Log(weir.Info, "host-calls: "+v.Str)
	out := []byte(`{"n":`)
	out = strconv.AppendUint(out, n, 10)
	out = append(out, `,"got":`...)
	out = weir.AppendJSONString(out, string(got))
	out = append(out, `,"list":`...)
	out = strconv.AppendInt(out, int64(len(items)), 10)
	out = append(out, `,"entries":`...)
	out = strconv.AppendInt(out, int64(len(entries)), 10)
	out = append(out, `,"name":`...)
	out = weir.AppendJSONString(out, weir.OperatorName())
	out = append(out, '}')
	ctx.EmitKeyed(event.Key, out, event.Timestamp)
	return nil
}

func (h *hostCalls) OnTimer(ctx *weir.Context, timer *weir.Timer) error {
	if err := h.seen.Remove(ctx, []byte("x")); err != nil {
		return err
	}
	if err := h.seen.Clear(ctx); err != nil {
		return err
	}
	if err := h.log.Replace(ctx, [][]byte{[]byte("1"), []byte("2")}); err != nil {
		return err
	}
	entries, err := h.seen.Entries(ctx)
	if err != nil {
		return err
	}
	items, err := h.log.Get(ctx)
	if err != nil {
		return err
	}
	if err := ctx.DeleteTimer(weir.EventTime, timer.Time+2); err != nil {
		return err
	}
	out := []byte(`{"timer":`)
	out = strconv.AppendInt(out, timer.Time, 10)
	out = append(out, `,"entries":`...)
	out = strconv.AppendInt(out, int64(len(entries)), 10)
	out = append(out, `,"list":`...)
	out = strconv.AppendInt(out, int64(len(items)), 10)
	out = append(out, '}')
	ctx.EmitKeyed(timer.Key, out, timer.Time)
	return nil
}

func init() {
	weir.Register(func(_ *weir.Value, setup *weir.Setup) (weir.Operator, error) {
		return &hostCalls{
			n:    setup.ValueState("n"),
			seen: setup.MapState("seen"),
			log:  setup.ListState("log"),
		}, nil
	})
}

func main() {}
