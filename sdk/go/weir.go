// Package weir writes Weir stream operators in Go.
//
// An operator is a value implementing [Operator]; a package main registers
// how to make one in an init function, and has an empty main:
//
//	type wordCount struct{ count weir.ValueState }
//
//	func (w *wordCount) Process(ctx *weir.Context, event *weir.Event) error {
//		n, err := w.count.GetUint64(ctx, 0)
//		if err != nil {
//			return err
//		}
//		return w.count.SetUint64(ctx, n+1)
//	}
//
//	func init() {
//		weir.Register(func(config *weir.Value, setup *weir.Setup) (weir.Operator, error) {
//			return &wordCount{count: setup.ValueState("count")}, nil
//		})
//	}
//
//	func main() {}
//
// Built with `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared` and
// made a component with the WASI preview1 reactor adapter (README.md).
//
// What this package hides: the batch layout of the `weir:operator`
// contract (events and the value state of the batch's keys travel column
// by column, see wit/types.wit), the canonical ABI, and the bookkeeping
// that makes a failing event leave no output and no value-state change
// behind. It does not hide that map and list state go through host calls:
// prefer [ValueState] on hot paths.
//
// Memory: an [Event]'s bytes, and the strings of a [Value] parsed from
// them, point into the batch the host sent; they stay valid as long as
// they are referenced, but copy them if you change them.
package weir

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// Operator handles events one at a time. A returned error fails that
// event alone: its output and value-state writes are dropped and the host
// applies the operator's error policy to it.
type Operator interface {
	Process(ctx *Context, event *Event) error
}

// TimerOperator is an Operator that registers timers; they fire through
// OnTimer.
type TimerOperator interface {
	Operator
	OnTimer(ctx *Context, timer *Timer) error
}

// InitFunc makes the operator of an instance from the topology's config
// (a JSON object, `{}` when none) and declares its state. An error refuses
// the config; say what is wrong with it.
type InitFunc func(config *Value, setup *Setup) (Operator, error)

var (
	factory    InitFunc
	operator   Operator
	stateCount int
	ctx        Context
)

// Register names the function that makes this component's operator; call
// it from an init function of package main.
func Register(init InitFunc) { factory = init }

// Event is one input event. Its bytes view the batch (see the package
// documentation).
type Event struct {
	// HasKey tells an event without a key from one with an empty key.
	HasKey bool
	Key    []byte
	// Value is compact JSON text on the wire, but any bytes may travel.
	Value []byte
	// Timestamp is the event time in milliseconds since the Unix epoch.
	Timestamp int64
	Headers   []Header
}

// Header is one header of an event.
type Header struct {
	Name  string
	Value []byte
}

// KeyString is the key as text; false without a key or when it is not
// UTF-8.
func (e *Event) KeyString() (string, bool) {
	if !e.HasKey || !utf8.Valid(e.Key) {
		return "", false
	}
	return bytesString(e.Key), true
}

// JSON parses the value as JSON (serde_json's grammar).
func (e *Event) JSON() (*Value, error) {
	v, err := ParseJSON(e.Value)
	if err != nil {
		return nil, errors.New("invalid JSON: " + err.Error())
	}
	return v, nil
}

// TimeDomain is the clock a timer follows.
type TimeDomain uint8

const (
	// EventTime timers fire when the watermark passes their time.
	EventTime TimeDomain = 0
	// ProcessingTime timers fire when the host's wall clock passes it.
	ProcessingTime TimeDomain = 1
)

// Timer is a timer that fired.
type Timer struct {
	Key    []byte
	Time   int64
	Domain TimeDomain
}

// LogLevel is the level of a line in the host's log.
type LogLevel uint8

const (
	Trace LogLevel = iota
	Debug
	Info
	Warn
	Error
)

// StateErrorKind says why the host refused a state call.
type StateErrorKind uint8

const (
	// KeyNotOwned: the key belongs to another instance (see key_by).
	KeyNotOwned StateErrorKind = iota
	// TooLarge: a key, name or value is over Limit bytes.
	TooLarge
	// Unavailable: the host could not reach its store (Reason).
	Unavailable
)

// StateError is a refused state or timer call.
type StateError struct {
	Kind   StateErrorKind
	Limit  uint32
	Reason string
}

func (e *StateError) Error() string {
	switch e.Kind {
	case KeyNotOwned:
		return "state: key not owned by this instance"
	case TooLarge:
		return "state: larger than " + strconv.FormatUint(uint64(e.Limit), 10) + " bytes"
	default:
		return "state unavailable: " + e.Reason
	}
}

var errNeedsKey = errors.New("state needs a keyed event, and this one has no key: key the operator's input (key_by)")

// ---- Setup and state -----------------------------------------------------------

// Setup declares an operator's state, in its InitFunc.
type Setup struct {
	names []string
}

// ValueState is one value per key that travels with each batch (no host
// call); values are bytes, JSON text by convention so that operators in
// every language can read them.
type ValueState struct{ index int }

// MapState is many entries per key, reached through host calls.
type MapState struct{ name string }

// ListState is an ordered list per key, reached through host calls.
type ListState struct{ name string }

// MapEntry is one entry of a key's map.
type MapEntry struct {
	Key, Value []byte
}

// ValueState declares the value state `name` (declaring it twice gives
// the same state).
func (s *Setup) ValueState(name string) ValueState {
	for i, n := range s.names {
		if n == name {
			return ValueState{i}
		}
	}
	s.names = append(s.names, name)
	return ValueState{len(s.names) - 1}
}

// MapState names the map state `name`.
func (s *Setup) MapState(name string) MapState { return MapState{name} }

// ListState names the list state `name`.
func (s *Setup) ListState(name string) ListState { return ListState{name} }

// Get is the current key's value; false when it is not set.
func (s ValueState) Get(c *Context) ([]byte, bool, error) {
	cell, err := c.cellOf(s)
	if err != nil {
		return nil, false, err
	}
	if w := c.writes[cell]; w.len != untouched {
		if w.len < 0 {
			return nil, false, nil
		}
		return c.writeBytes[w.at : w.at+int(w.len)], true, nil
	}
	n := c.cellLens[cell]
	if n < 0 {
		return nil, false, nil
	}
	at := c.cellAt[cell]
	return c.cellBytes[at : at+int(n)], true, nil
}

// Set sets the current key's value (the bytes are copied).
func (s ValueState) Set(c *Context, value []byte) error { return c.writeCell(s, value, true) }

// Clear unsets the current key's value.
func (s ValueState) Clear(c *Context) error { return c.writeCell(s, nil, false) }

// GetUint64 reads the value as a JSON unsigned integer; unset reads as
// fallback.
func (s ValueState) GetUint64(c *Context, fallback uint64) (uint64, error) {
	raw, ok, err := s.Get(c)
	if err != nil || !ok {
		return fallback, err
	}
	if n, ok := parseUint(raw); ok {
		return n, nil
	}
	v, err := ParseJSON(raw)
	if err != nil {
		return 0, errors.New("value state holds invalid JSON: " + err.Error())
	}
	if v.Kind != Uint {
		return 0, errors.New("value state does not hold an unsigned integer")
	}
	return v.Uint, nil
}

// SetUint64 stores n as JSON.
func (s ValueState) SetUint64(c *Context, n uint64) error {
	var text [20]byte
	return s.Set(c, strconv.AppendUint(text[:0], n, 10))
}

// GetJSON parses the value as JSON; nil when it is not set.
func (s ValueState) GetJSON(c *Context) (*Value, error) {
	raw, ok, err := s.Get(c)
	if err != nil || !ok {
		return nil, err
	}
	v, err := ParseJSON(raw)
	if err != nil {
		return nil, errors.New("value state holds invalid JSON: " + err.Error())
	}
	return v, nil
}

// Get is the current key's entry mapKey; false when absent.
func (m MapState) Get(c *Context, mapKey []byte) ([]byte, bool, error) {
	if !c.hasKey {
		return nil, false, errNeedsKey
	}
	return callMapGet(m.name, c.key, mapKey)
}

// Put sets the current key's entry mapKey.
func (m MapState) Put(c *Context, mapKey, value []byte) error {
	if !c.hasKey {
		return errNeedsKey
	}
	return callMapPut(m.name, c.key, mapKey, value)
}

// Remove deletes the current key's entry mapKey.
func (m MapState) Remove(c *Context, mapKey []byte) error {
	if !c.hasKey {
		return errNeedsKey
	}
	return callMapRemove(m.name, c.key, mapKey)
}

// Entries is the current key's whole map, ordered by map key bytes.
func (m MapState) Entries(c *Context) ([]MapEntry, error) {
	if !c.hasKey {
		return nil, errNeedsKey
	}
	return callMapEntries(m.name, c.key)
}

// Clear empties the current key's map.
func (m MapState) Clear(c *Context) error {
	if !c.hasKey {
		return errNeedsKey
	}
	return callMapClear(m.name, c.key)
}

// Get is the current key's list.
func (l ListState) Get(c *Context) ([][]byte, error) {
	if !c.hasKey {
		return nil, errNeedsKey
	}
	return callListGet(l.name, c.key)
}

// Append adds item at the end of the current key's list.
func (l ListState) Append(c *Context, item []byte) error {
	if !c.hasKey {
		return errNeedsKey
	}
	return callListAppend(l.name, c.key, item)
}

// Replace sets the current key's whole list (empty clears it).
func (l ListState) Replace(c *Context, items [][]byte) error {
	if !c.hasKey {
		return errNeedsKey
	}
	return callListReplace(l.name, c.key, items)
}

// ---- The context of a call ----------------------------------------------------

// untouched marks a value-state cell not written in this call.
const untouched = -2

// written is a cell as written in this call: cleared (len -1) or len
// bytes at `at` of the call's written bytes.
type written struct {
	len int32
	at  int
}

type undo struct {
	cell   int
	before written
}

type outputHeader struct {
	event  uint32
	header Header
}

type eventError struct {
	index   uint32
	message string
}

// callOutput is a call's output, column by column, as the host reads it.
type callOutput struct {
	timestamps []int64
	keyLens    []int32
	keys       []byte
	valueLens  []uint32
	values     []byte
	headers    []outputHeader
	errors     []eventError
	cells      []uint32
	lens       []int32
	bytes      []byte
}

// Context is what an operator reaches during one call: emitting, state,
// timers and the call's clocks.
type Context struct {
	watermark      int64
	processingTime int64
	cellLens       []int32
	cellAt         []int
	cellBytes      []byte
	writes         []written
	writeBytes     []byte
	undos          []undo
	hasKey         bool
	key            []byte
	slot           uint32
	out            callOutput
}

const noSlot = 0xFFFFFFFF

// Emit emits an event without a key; the bytes are copied.
func (c *Context) Emit(value []byte, timestamp int64) {
	c.emit(false, nil, value, timestamp, nil)
}

// EmitKeyed emits an event with a key; the bytes are copied.
func (c *Context) EmitKeyed(key, value []byte, timestamp int64) {
	c.emit(true, key, value, timestamp, nil)
}

// EmitEvent emits event as given (key, value, timestamp and headers).
func (c *Context) EmitEvent(event *Event) {
	c.emit(event.HasKey, event.Key, event.Value, event.Timestamp, event.Headers)
}

// Forward emits the event as it came.
func (c *Context) Forward(event *Event) { c.EmitEvent(event) }

func (c *Context) emit(hasKey bool, key, value []byte, timestamp int64, headers []Header) {
	o := &c.out
	event := uint32(len(o.timestamps))
	for _, h := range headers {
		o.headers = append(o.headers, outputHeader{event, Header{h.Name, append([]byte(nil), h.Value...)}})
	}
	o.timestamps = append(o.timestamps, timestamp)
	if hasKey {
		o.keyLens = append(o.keyLens, int32(len(key)))
		o.keys = append(o.keys, key...)
	} else {
		o.keyLens = append(o.keyLens, -1)
	}
	o.valueLens = append(o.valueLens, uint32(len(value)))
	o.values = append(o.values, value...)
}

// Key is the key of the event or timer being handled; false without one.
func (c *Context) Key() ([]byte, bool) { return c.key, c.hasKey }

// Watermark is the event-time watermark of the call (math.MinInt64
// before the first one).
func (c *Context) Watermark() int64 { return c.watermark }

// ProcessingTime is the host's wall clock when the call started, in
// milliseconds since the Unix epoch.
func (c *Context) ProcessingTime() int64 { return c.processingTime }

// RegisterTimer registers a timer of the current key.
func (c *Context) RegisterTimer(domain TimeDomain, time int64) error {
	if !c.hasKey {
		return errNeedsKey
	}
	return callTimer(true, domain, c.key, time)
}

// DeleteTimer deletes a timer of the current key.
func (c *Context) DeleteTimer(domain TimeDomain, time int64) error {
	if !c.hasKey {
		return errNeedsKey
	}
	return callTimer(false, domain, c.key, time)
}

func (c *Context) cellOf(s ValueState) (int, error) {
	if !c.hasKey || c.slot == noSlot {
		return 0, errNeedsKey
	}
	if s.index >= stateCount {
		return 0, errors.New("unknown value state: declare it in the InitFunc")
	}
	return int(c.slot)*stateCount + s.index, nil
}

func (c *Context) writeCell(s ValueState, value []byte, set bool) error {
	cell, err := c.cellOf(s)
	if err != nil {
		return err
	}
	c.undos = append(c.undos, undo{cell, c.writes[cell]})
	w := written{-1, len(c.writeBytes)}
	if set {
		w.len = int32(len(value))
		c.writeBytes = append(c.writeBytes, value...)
	}
	c.writes[cell] = w
	return nil
}

// begin sets the context up for a call over `slots` key slots.
func (c *Context) begin(watermark, processingTime int64, lens []int32, bytes []byte, slots int) error {
	c.watermark, c.processingTime = watermark, processingTime
	o := &c.out
	// The host copied the previous call's output at its post-return.
	o.timestamps, o.keyLens, o.keys = o.timestamps[:0], o.keyLens[:0], o.keys[:0]
	o.valueLens, o.values = o.valueLens[:0], o.values[:0]
	o.headers, o.errors = o.headers[:0], o.errors[:0]
	o.cells, o.lens, o.bytes = o.cells[:0], o.lens[:0], o.bytes[:0]
	cells := slots * stateCount
	if len(lens) != cells {
		return errors.New("malformed input from the host: " + strconv.Itoa(len(lens)) +
			" state cells sent, " + strconv.Itoa(cells) + " expected")
	}
	c.cellLens, c.cellBytes = lens, bytes
	c.cellAt = resize(c.cellAt, cells)
	c.writes = resize(c.writes, cells)
	c.writeBytes = c.writeBytes[:0]
	total := 0
	for i, n := range lens {
		c.cellAt[i] = total
		if n > 0 {
			total += int(n)
		}
		c.writes[i] = written{untouched, 0}
	}
	if total != len(bytes) {
		return errors.New("malformed input from the host: state lengths do not add up to the bytes sent")
	}
	return nil
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

type mark struct{ events, keys, values, headers int }

func (c *Context) mark() mark {
	c.undos = c.undos[:0]
	o := &c.out
	return mark{len(o.timestamps), len(o.keys), len(o.values), len(o.headers)}
}

// fail drops what the failed item emitted and wrote, and records why.
func (c *Context) fail(m mark, index int, err error) {
	o := &c.out
	o.timestamps, o.keyLens, o.valueLens = o.timestamps[:m.events], o.keyLens[:m.events], o.valueLens[:m.events]
	o.keys, o.values, o.headers = o.keys[:m.keys], o.values[:m.values], o.headers[:m.headers]
	for i := len(c.undos) - 1; i >= 0; i-- {
		c.writes[c.undos[i].cell] = c.undos[i].before
	}
	o.errors = append(o.errors, eventError{uint32(index), err.Error()})
}

// finish gathers the value-state changes into the output.
func (c *Context) finish() *callOutput {
	o := &c.out
	for cell, w := range c.writes {
		if w.len == untouched {
			continue
		}
		o.cells = append(o.cells, uint32(cell))
		o.lens = append(o.lens, w.len)
		if w.len > 0 {
			o.bytes = append(o.bytes, c.writeBytes[w.at:w.at+int(w.len)]...)
		}
	}
	c.key, c.hasKey = nil, false
	return o
}

// ---- The handler ---------------------------------------------------------------

func initOperator(config string) ([]string, error) {
	if factory == nil {
		return nil, errors.New("no operator registered: call weir.Register from an init function of package main")
	}
	text := []byte(config)
	if len(trimSpace(text)) == 0 {
		text = []byte("{}")
	}
	parsed, err := ParseJSON(text)
	if err != nil {
		return nil, errors.New("invalid config: " + err.Error())
	}
	setup := Setup{}
	op, err := factory(parsed, &setup)
	if err != nil {
		return nil, errors.New("invalid config: " + err.Error())
	}
	operator, stateCount = op, len(setup.names)
	return setup.names, nil
}

type inputHeader struct {
	event  uint32
	header Header
}

// inputBatch is a `process-input`, its lists viewed in place.
type inputBatch struct {
	watermark, processingTime int64
	timestamps                []int64
	keyLens                   []int32
	keys                      []byte
	valueLens                 []uint32
	values                    []byte
	headers                   []inputHeader
	keySlots                  []uint32
	slotCount                 uint32
	cellLens                  []int32
	cellBytes                 []byte
}

func processBatch(in *inputBatch) (*callOutput, error) {
	if operator == nil {
		return nil, errors.New("process called before a successful init")
	}
	n := len(in.timestamps)
	slotted := len(in.keySlots) != 0
	if len(in.keyLens) != n || len(in.valueLens) != n || (slotted && len(in.keySlots) != n) {
		return nil, errors.New("malformed input from the host: batch columns differ in length")
	}
	keysTotal, valuesTotal := 0, 0
	for i := range n {
		if in.keyLens[i] > 0 {
			keysTotal += int(in.keyLens[i])
		}
		valuesTotal += int(in.valueLens[i])
	}
	if keysTotal != len(in.keys) || valuesTotal != len(in.values) {
		return nil, errors.New("malformed input from the host: key or value lengths do not add up to the bytes sent")
	}
	c := &ctx
	if err := c.begin(in.watermark, in.processingTime, in.cellLens, in.cellBytes, int(in.slotCount)); err != nil {
		return nil, err
	}
	headers := make([]Header, len(in.headers))
	for i, h := range in.headers {
		headers[i] = h.header
	}
	keyAt, valueAt, nextHeader := 0, 0, 0
	var event Event
	for i := range n {
		event = Event{Timestamp: in.timestamps[i]}
		if kl := in.keyLens[i]; kl >= 0 {
			event.HasKey = true
			event.Key = in.keys[keyAt : keyAt+int(kl) : keyAt+int(kl)]
			keyAt += int(kl)
		}
		vl := int(in.valueLens[i])
		event.Value = in.values[valueAt : valueAt+vl : valueAt+vl]
		valueAt += vl
		first := nextHeader
		for nextHeader < len(in.headers) && in.headers[nextHeader].event == uint32(i) {
			nextHeader++
		}
		if nextHeader > first {
			event.Headers = headers[first:nextHeader:nextHeader]
		}
		slot := uint32(noSlot)
		if slotted {
			slot = in.keySlots[i]
			if slot != noSlot && slot >= in.slotCount {
				return nil, errors.New("malformed input from the host: key slot " +
					strconv.FormatUint(uint64(slot), 10) + " of event " + strconv.Itoa(i) + " is out of range")
			}
		}
		c.hasKey, c.key, c.slot = event.HasKey, event.Key, slot
		m := c.mark()
		if err := operator.Process(c, &event); err != nil {
			c.fail(m, i, err)
		}
	}
	return c.finish(), nil
}

// inputTimers is a `timer-input`, its lists viewed in place.
type inputTimers struct {
	watermark, processingTime int64
	times                     []int64
	domains                   []uint8
	keySlots                  []uint32
	keyLens                   []int32
	keys                      []byte
	cellLens                  []int32
	cellBytes                 []byte
}

func fireTimers(in *inputTimers) (*callOutput, error) {
	if operator == nil {
		return nil, errors.New("on-timer called before a successful init")
	}
	n, slots := len(in.times), len(in.keyLens)
	if len(in.domains) != n || len(in.keySlots) != n {
		return nil, errors.New("malformed input from the host: timer columns differ in length")
	}
	keyAt := make([]int, slots+1)
	for s, l := range in.keyLens {
		keyAt[s+1] = keyAt[s] + max(int(l), 0)
	}
	if keyAt[slots] != len(in.keys) {
		return nil, errors.New("malformed input from the host: key lengths do not add up to the bytes sent")
	}
	c := &ctx
	if err := c.begin(in.watermark, in.processingTime, in.cellLens, in.cellBytes, slots); err != nil {
		return nil, err
	}
	handler, _ := operator.(TimerOperator)
	for i := range n {
		slot := in.keySlots[i]
		if int(slot) >= slots || in.keyLens[slot] < 0 {
			return nil, errors.New("malformed input from the host: timer " + strconv.Itoa(i) +
				" has no key in slot " + strconv.FormatUint(uint64(slot), 10))
		}
		if handler == nil {
			continue
		}
		timer := Timer{
			Key:    in.keys[keyAt[slot]:keyAt[slot+1]:keyAt[slot+1]],
			Time:   in.times[i],
			Domain: TimeDomain(in.domains[i]),
		}
		c.hasKey, c.key, c.slot = true, timer.Key, slot
		m := c.mark()
		if err := handler.OnTimer(c, &timer); err != nil {
			c.fail(m, i, err)
		}
	}
	return c.finish(), nil
}
