// word-count in Go: counts events per key in the value state `count`;
// after each event emits {"word": <key>, "count": <new count>} keyed by
// the word. The same semantics as guest-examples/rust/word-count.
package main

import (
	"errors"
	"strconv"

	"weir"
)

type wordCount struct {
	count weir.ValueState
	// out is reused from event to event: Emit copies what it is given.
	out []byte
}

func (w *wordCount) Process(ctx *weir.Context, event *weir.Event) error {
	word, ok := event.KeyString()
	if !ok {
		return errors.New("word-count needs events keyed by a UTF-8 word")
	}
	n, err := w.count.GetUint64(ctx, 0)
	if err != nil {
		return err
	}
	n++
	if err := w.count.SetUint64(ctx, n); err != nil {
		return err
	}
	w.out = append(w.out[:0], `{"word":`...)
	w.out = weir.AppendJSONString(w.out, word)
	w.out = append(w.out, `,"count":`...)
	w.out = strconv.AppendUint(w.out, n, 10)
	w.out = append(w.out, '}')
	ctx.EmitKeyed(event.Key, w.out, event.Timestamp)
	return nil
}

func init() {
	weir.Register(func(_ *weir.Value, setup *weir.Setup) (weir.Operator, error) {
		return &wordCount{count: setup.ValueState("count")}, nil
	})
}

func main() {}
