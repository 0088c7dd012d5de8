// JSON as serde_json reads and writes it: its grammar, its three number
// kinds (so equality is serde_json's), its escapes and float text, so that
// Go operators give byte-identical output to Rust ones.

package weir

import (
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Kind is the kind of a JSON value. Numbers keep serde_json's three
// kinds: an integer that fits uint64, a negative one that fits int64, or
// a float.
type Kind uint8

const (
	Null Kind = iota
	Bool
	Uint
	Int
	Float
	String
	Array
	Object
)

// Value is a parsed JSON value; the field of its Kind holds it.
type Value struct {
	Kind  Kind
	Bool  bool
	Uint  uint64
	Int   int64
	Float float64
	Str   string
	// Items of an array.
	Items []Value
	// Members of an object in text order; a repeated name is kept, and
	// lookups, equality and output take its last member (as a map would).
	Members []Member
}

// Member is one member of a JSON object.
type Member struct {
	Name  string
	Value Value
}

// maxJSONDepth is serde_json's nesting limit.
const maxJSONDepth = 128

type jsonError struct {
	what string
	at   int
}

func (e *jsonError) Error() string { return e.what + " at byte " + strconv.Itoa(e.at) }

type parser struct {
	p   []byte
	i   int
	err error
}

// ParseJSON parses the whole of text as JSON (RFC 8259, as serde_json).
// Strings without escapes point into text.
func ParseJSON(text []byte) (*Value, error) {
	ps := parser{p: text}
	v := new(Value)
	if !ps.value(v, 1) {
		return nil, ps.err
	}
	ps.skipSpace()
	if ps.i != len(text) {
		ps.fail("trailing characters")
		return nil, ps.err
	}
	return v, nil
}

func (ps *parser) fail(what string) bool {
	if ps.err == nil {
		ps.err = &jsonError{what, ps.i}
	}
	return false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (ps *parser) skipSpace() {
	for ps.i < len(ps.p) && isSpace(ps.p[ps.i]) {
		ps.i++
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func (ps *parser) value(out *Value, depth int) bool {
	if depth > maxJSONDepth {
		return ps.fail("recursion limit exceeded")
	}
	ps.skipSpace()
	if ps.i >= len(ps.p) {
		return ps.fail("EOF while parsing a value")
	}
	switch c := ps.p[ps.i]; {
	case c == 'n':
		out.Kind = Null
		return ps.literal("null")
	case c == 't':
		out.Kind, out.Bool = Bool, true
		return ps.literal("true")
	case c == 'f':
		out.Kind = Bool
		return ps.literal("false")
	case c == '"':
		out.Kind = String
		return ps.str(&out.Str)
	case c == '[':
		return ps.array(out, depth)
	case c == '{':
		return ps.object(out, depth)
	case c == '-' || (c >= '0' && c <= '9'):
		return ps.number(out)
	default:
		return ps.fail("expected value")
	}
}

func (ps *parser) literal(word string) bool {
	if len(ps.p)-ps.i < len(word) || string(ps.p[ps.i:ps.i+len(word)]) != word {
		return ps.fail("expected value")
	}
	ps.i += len(word)
	return true
}

func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func (ps *parser) hex4() (rune, bool) {
	if len(ps.p)-ps.i < 4 {
		return 0, ps.fail("EOF while parsing a string")
	}
	var v rune
	for range 4 {
		d := hexDigit(ps.p[ps.i])
		ps.i++
		if d < 0 {
			return 0, ps.fail("invalid escape")
		}
		v = v<<4 | rune(d)
	}
	return v, true
}

func (ps *parser) str(out *string) bool {
	ps.i++ // the opening quote
	start := ps.i
	for ps.i < len(ps.p) && ps.p[ps.i] != '"' && ps.p[ps.i] != '\\' && ps.p[ps.i] >= 0x20 {
		ps.i++
	}
	if ps.i >= len(ps.p) {
		return ps.fail("EOF while parsing a string")
	}
	if ps.p[ps.i] == '"' {
		raw := ps.p[start:ps.i]
		if !utf8.Valid(raw) {
			return ps.fail("invalid unicode code point")
		}
		*out = bytesString(raw)
		ps.i++
		return true
	}
	b := append([]byte(nil), ps.p[start:ps.i]...)
	for {
		if ps.i >= len(ps.p) {
			return ps.fail("EOF while parsing a string")
		}
		c := ps.p[ps.i]
		if c == '"' {
			ps.i++
			break
		}
		if c < 0x20 {
			return ps.fail("control character (\\u0000-\\u001F) found while parsing a string")
		}
		ps.i++
		if c != '\\' {
			b = append(b, c)
			continue
		}
		if ps.i >= len(ps.p) {
			return ps.fail("EOF while parsing a string")
		}
		e := ps.p[ps.i]
		ps.i++
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			cp, ok := ps.hex4()
			if !ok {
				return false
			}
			if cp >= 0xDC00 && cp <= 0xDFFF {
				return ps.fail("unexpected end of hex escape")
			}
			if cp >= 0xD800 && cp <= 0xDBFF {
				if len(ps.p)-ps.i < 2 || ps.p[ps.i] != '\\' || ps.p[ps.i+1] != 'u' {
					return ps.fail("lone leading surrogate in hex escape")
				}
				ps.i += 2
				lo, ok := ps.hex4()
				if !ok {
					return false
				}
				if lo < 0xDC00 || lo > 0xDFFF {
					return ps.fail("lone leading surrogate in hex escape")
				}
				cp = 0x10000 + (cp-0xD800)<<10 + (lo - 0xDC00)
			}
			b = utf8.AppendRune(b, cp)
		default:
			return ps.fail("invalid escape")
		}
	}
	if !utf8.Valid(b) {
		return ps.fail("invalid unicode code point")
	}
	*out = bytesString(b)
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (ps *parser) digits() {
	for ps.i < len(ps.p) && isDigit(ps.p[ps.i]) {
		ps.i++
	}
}

func (ps *parser) number(out *Value) bool {
	start := ps.i
	negative := ps.p[ps.i] == '-'
	if negative {
		ps.i++
	}
	if ps.i >= len(ps.p) || !isDigit(ps.p[ps.i]) {
		return ps.fail("invalid number")
	}
	overflow := false
	var sig uint64
	if ps.p[ps.i] == '0' {
		ps.i++
		if ps.i < len(ps.p) && isDigit(ps.p[ps.i]) {
			return ps.fail("invalid number")
		}
	} else {
		for ps.i < len(ps.p) && isDigit(ps.p[ps.i]) {
			d := uint64(ps.p[ps.i] - '0')
			ps.i++
			if sig > (math.MaxUint64-d)/10 {
				overflow = true
			}
			sig = sig*10 + d
		}
	}
	integer := true
	if ps.i < len(ps.p) && ps.p[ps.i] == '.' {
		integer = false
		ps.i++
		if ps.i >= len(ps.p) || !isDigit(ps.p[ps.i]) {
			return ps.fail("invalid number")
		}
		ps.digits()
	}
	if ps.i < len(ps.p) && (ps.p[ps.i] == 'e' || ps.p[ps.i] == 'E') {
		integer = false
		ps.i++
		if ps.i < len(ps.p) && (ps.p[ps.i] == '+' || ps.p[ps.i] == '-') {
			ps.i++
		}
		if ps.i >= len(ps.p) || !isDigit(ps.p[ps.i]) {
			return ps.fail("invalid number")
		}
		ps.digits()
	}
	if integer && !overflow {
		if !negative {
			out.Kind, out.Uint = Uint, sig
			return true
		}
		if sig != 0 && sig <= 1<<63 {
			out.Kind, out.Int = Int, -int64(sig)
			return true
		}
	}
	f, err := strconv.ParseFloat(bytesString(ps.p[start:ps.i]), 64)
	if err != nil && math.IsInf(f, 0) {
		return ps.fail("number out of range")
	}
	out.Kind, out.Float = Float, f
	return true
}

func (ps *parser) array(out *Value, depth int) bool {
	ps.i++
	out.Kind = Array
	ps.skipSpace()
	if ps.i < len(ps.p) && ps.p[ps.i] == ']' {
		ps.i++
		return true
	}
	for {
		out.Items = append(out.Items, Value{})
		if !ps.value(&out.Items[len(out.Items)-1], depth+1) {
			return false
		}
		ps.skipSpace()
		if ps.i < len(ps.p) && ps.p[ps.i] == ',' {
			ps.i++
			continue
		}
		if ps.i < len(ps.p) && ps.p[ps.i] == ']' {
			ps.i++
			return true
		}
		return ps.fail("expected `,` or `]`")
	}
}

func (ps *parser) object(out *Value, depth int) bool {
	ps.i++
	out.Kind = Object
	ps.skipSpace()
	if ps.i < len(ps.p) && ps.p[ps.i] == '}' {
		ps.i++
		return true
	}
	for {
		ps.skipSpace()
		if ps.i >= len(ps.p) || ps.p[ps.i] != '"' {
			return ps.fail("key must be a string")
		}
		out.Members = append(out.Members, Member{})
		m := &out.Members[len(out.Members)-1]
		if !ps.str(&m.Name) {
			return false
		}
		ps.skipSpace()
		if ps.i >= len(ps.p) || ps.p[ps.i] != ':' {
			return ps.fail("expected `:`")
		}
		ps.i++
		if !ps.value(&m.Value, depth+1) {
			return false
		}
		ps.skipSpace()
		if ps.i < len(ps.p) && ps.p[ps.i] == ',' {
			ps.i++
			continue
		}
		if ps.i < len(ps.p) && ps.p[ps.i] == '}' {
			ps.i++
			return true
		}
		return ps.fail("expected `,` or `}`")
	}
}

// bytesString views b as a string without copying; b must not change
// afterwards.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// parseUint reads the plain decimal text of a uint64 (the fast path of
// value state written by SetUint64); false for anything else.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// IsNumber tells whether v is a number of any kind.
func (v *Value) IsNumber() bool { return v.Kind == Uint || v.Kind == Int || v.Kind == Float }

// Float64 is a number as a float64 (serde_json's as_f64); NaN otherwise.
func (v *Value) Float64() float64 {
	switch v.Kind {
	case Uint:
		return float64(v.Uint)
	case Int:
		return float64(v.Int)
	case Float:
		return v.Float
	}
	return math.NaN()
}

// Get is the object's member `name` (the last one if repeated), or nil.
func (v *Value) Get(name string) *Value {
	if v == nil || v.Kind != Object {
		return nil
	}
	for i := len(v.Members) - 1; i >= 0; i-- {
		if v.Members[i].Name == name {
			return &v.Members[i].Value
		}
	}
	return nil
}

// lastOfName tells whether member i is the one a map would keep.
func (v *Value) lastOfName(i int) bool {
	return v.Get(v.Members[i].Name) == &v.Members[i].Value
}

func (v *Value) distinctMembers() int {
	n := 0
	for i := range v.Members {
		if v.lastOfName(i) {
			n++
		}
	}
	return n
}

// Equal is serde_json's `Value == Value`: objects as maps, numbers equal
// only within one kind (so 50 != 50.0).
func (v *Value) Equal(w *Value) bool {
	if v.Kind != w.Kind {
		return false
	}
	switch v.Kind {
	case Null:
		return true
	case Bool:
		return v.Bool == w.Bool
	case Uint:
		return v.Uint == w.Uint
	case Int:
		return v.Int == w.Int
	case Float:
		return v.Float == w.Float
	case String:
		return v.Str == w.Str
	case Array:
		if len(v.Items) != len(w.Items) {
			return false
		}
		for i := range v.Items {
			if !v.Items[i].Equal(&w.Items[i]) {
				return false
			}
		}
		return true
	default:
		if v.distinctMembers() != w.distinctMembers() {
			return false
		}
		for i := range v.Members {
			if !v.lastOfName(i) {
				continue
			}
			other := w.Get(v.Members[i].Name)
			if other == nil || !v.Members[i].Value.Equal(other) {
				return false
			}
		}
		return true
	}
}

// AppendJSON appends the compact JSON text of v, as serde_json writes it.
func (v *Value) AppendJSON(dst []byte) []byte {
	switch v.Kind {
	case Null:
		return append(dst, "null"...)
	case Bool:
		return strconv.AppendBool(dst, v.Bool)
	case Uint:
		return strconv.AppendUint(dst, v.Uint, 10)
	case Int:
		return strconv.AppendInt(dst, v.Int, 10)
	case Float:
		return AppendJSONFloat(dst, v.Float)
	case String:
		return AppendJSONString(dst, v.Str)
	case Array:
		dst = append(dst, '[')
		for i := range v.Items {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = v.Items[i].AppendJSON(dst)
		}
		return append(dst, ']')
	default:
		dst = append(dst, '{')
		first := true
		for i := range v.Members {
			if !v.lastOfName(i) {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = AppendJSONString(dst, v.Members[i].Name)
			dst = append(dst, ':')
			dst = v.Members[i].Value.AppendJSON(dst)
		}
		return append(dst, '}')
	}
}

// AppendJSONString appends s as a JSON string, escaped as serde_json
// does (quote, backslash and control characters only).
func AppendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[run:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		run = i + 1
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"')
}

// AppendJSONFloat appends f as serde_json writes a float: the shortest
// digits that read back the same, `1.0` for integers, an exponent outside
// 1e-5..1e16, and `null` for NaN and infinities (which JSON lacks).
func AppendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	if f == 0 {
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	var buf [32]byte
	// d.ddddde±XX: the shortest digits and the decimal exponent.
	e := strconv.AppendFloat(buf[:0], math.Abs(f), 'e', -1, 64)
	mark := 0
	for e[mark] != 'e' {
		mark++
	}
	exp, _ := strconv.Atoi(string(e[mark+1:]))
	var digits []byte
	for _, c := range e[:mark] {
		if c != '.' {
			digits = append(digits, c)
		}
	}
	if f < 0 {
		dst = append(dst, '-')
	}
	// The decimal point sits after `point` digits.
	point := exp + 1
	switch {
	case len(digits) <= point && point <= 16:
		dst = append(dst, digits...)
		for range point - len(digits) {
			dst = append(dst, '0')
		}
		return append(dst, '.', '0')
	case 0 < point && point <= 16:
		dst = append(dst, digits[:point]...)
		dst = append(dst, '.')
		return append(dst, digits[point:]...)
	case -5 < point && point <= 0:
		dst = append(dst, '0', '.')
		for range -point {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	default:
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		return strconv.AppendInt(dst, int64(exp), 10)
	}
}
