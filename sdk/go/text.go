// Text as Rust's str methods see it: words split at Unicode white space,
// lowercase by the full mapping with the final-sigma rule, ASCII
// punctuation trimmed. The tables (unicode_tables.go) are generated from
// Rust's own char methods, so Go and Rust operators agree on every code
// point whatever Unicode version Go's own tables follow.

package weir

import (
	"iter"
	"unicode/utf8"
)

type runeRange struct{ first, last rune }

// lowerRun maps first..last, every stride-th code point, to itself plus
// delta.
type lowerRun struct {
	first, last, stride, delta int32
}

// lowerSpecial is a code point whose lowercase is longer than one.
type lowerSpecial struct {
	c     rune
	lower string
}

func inRanges(ranges []runeRange, c rune) bool {
	lo, hi := 0, len(ranges)
	for lo < hi {
		mid := (lo + hi) / 2
		switch {
		case c < ranges[mid].first:
			hi = mid
		case c > ranges[mid].last:
			lo = mid + 1
		default:
			return true
		}
	}
	return false
}

// IsWhiteSpace is Rust's char::is_whitespace.
func IsWhiteSpace(c rune) bool {
	if c < 0x80 {
		return c == ' ' || (c >= '\t' && c <= '\r')
	}
	return inRanges(whiteSpace, c)
}

// Words yields the non-empty pieces of text between white space (Rust's
// str::split_whitespace).
func Words(text string) iter.Seq[string] {
	return func(yield func(string) bool) {
		i := 0
		for i < len(text) {
			for i < len(text) {
				c, n := utf8.DecodeRuneInString(text[i:])
				if !IsWhiteSpace(c) {
					break
				}
				i += n
			}
			start := i
			for i < len(text) {
				c, n := utf8.DecodeRuneInString(text[i:])
				if IsWhiteSpace(c) {
					break
				}
				i += n
			}
			if i > start && !yield(text[start:i]) {
				return
			}
		}
	}
}

func lowerSimple(c rune) rune {
	lo, hi := 0, len(lowerRuns)
	for lo < hi {
		mid := (lo + hi) / 2
		r := &lowerRuns[mid]
		switch {
		case c < r.first:
			hi = mid
		case c > r.last:
			lo = mid + 1
		default:
			if (c-r.first)%r.stride == 0 {
				return c + r.delta
			}
			return c
		}
	}
	return c
}

// ignorableThenCased tells whether the first code point from i on
// (forward or backward) that is not case-ignorable is cased: the test of
// Rust's final-sigma rule.
func ignorableThenCased(text string, i int, forward bool) bool {
	for (forward && i < len(text)) || (!forward && i > 0) {
		var c rune
		var n int
		if forward {
			c, n = utf8.DecodeRuneInString(text[i:])
			i += n
		} else {
			c, n = utf8.DecodeLastRuneInString(text[:i])
			i -= n
		}
		if !inRanges(caseIgnorable, c) {
			return inRanges(cased, c)
		}
	}
	return false
}

// Lowercase is Rust's str::to_lowercase: Unicode's full mapping, with Σ
// as ς at the end of a word.
func Lowercase(text string) string {
	ascii := true
	upper := false
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c >= 0x80 {
			ascii = false
			break
		}
		upper = upper || (c >= 'A' && c <= 'Z')
	}
	if ascii {
		if !upper {
			return text
		}
		out := []byte(text)
		for i, c := range out {
			if c >= 'A' && c <= 'Z' {
				out[i] = c + 'a' - 'A'
			}
		}
		return bytesString(out)
	}
	out := make([]byte, 0, len(text))
	for i := 0; i < len(text); {
		c, n := utf8.DecodeRuneInString(text[i:])
		start := i
		i += n
		if c == 'Σ' {
			final := ignorableThenCased(text, start, false) && !ignorableThenCased(text, i, true)
			if final {
				out = utf8.AppendRune(out, 'ς')
			} else {
				out = utf8.AppendRune(out, 'σ')
			}
			continue
		}
		special := false
		for _, s := range lowerSpecials {
			if s.c == c {
				out = append(out, s.lower...)
				special = true
				break
			}
		}
		if !special {
			out = utf8.AppendRune(out, lowerSimple(c))
		}
	}
	return bytesString(out)
}

func isASCIIPunct(c byte) bool {
	return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~')
}

// TrimASCIIPunct is text without ASCII punctuation at either end.
func TrimASCIIPunct(text string) string {
	for len(text) > 0 && isASCIIPunct(text[0]) {
		text = text[1:]
	}
	for len(text) > 0 && isASCIIPunct(text[len(text)-1]) {
		text = text[:len(text)-1]
	}
	return text
}
