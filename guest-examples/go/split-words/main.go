// split-words in Go: the value is a JSON string; emits one event per
// word, keyed by the word. Words are the pieces between Unicode white
// space, lowercased, with ASCII punctuation trimmed from both ends; empty
// pieces are dropped. The same semantics as guest-examples/rust/split-words.
package main

import (
	"errors"

	"weir"
)

type splitWords struct {
	// out is reused from word to word: Emit copies what it is given.
	out []byte
}

func (s *splitWords) Process(ctx *weir.Context, event *weir.Event) error {
	text, err := event.JSON()
	if err != nil || text.Kind != weir.String {
		return errors.New("split-words expects the value to be a JSON string")
	}
	for piece := range weir.Words(text.Str) {
		word := weir.TrimASCIIPunct(weir.Lowercase(piece))
		if word == "" {
			continue
		}
		s.out = weir.AppendJSONString(s.out[:0], word)
		ctx.EmitKeyed([]byte(word), s.out, event.Timestamp)
	}
	return nil
}

func init() {
	weir.Register(func(*weir.Value, *weir.Setup) (weir.Operator, error) {
		return &splitWords{}, nil
	})
}

func main() {}
