//go:build wasip1

// The canonical ABI of the `weir:operator` world, written by hand: the
// handler exports, the host imports, `cabi_realloc`, and the layouts of
// the records that cross (see wit/types.wit). Offsets below are those of
// the component model's canonical ABI for these records.

package weir

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"unsafe"
)

// The canonical ABI forbids a component to call out of itself while the
// host runs its cabi_realloc or a post-return function, and Go's collector
// reads the clock (a WASI import) when an allocation starts a cycle. So
// automatic collection is off, and a cycle runs at the start of an export
// once gcEveryBytes were allocated since the last one.
func init() { debug.SetGCPercent(-1) }

const gcEveryBytes = 32 << 20

var (
	allocated     = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocatedAtGC uint64
)

// collectIfDue runs a collection when enough was allocated; only from an
// export's body, where the runtime may call WASI.
func collectIfDue() {
	metrics.Read(allocated)
	if allocated[0].Value.Uint64()-allocatedAtGC < gcEveryBytes {
		return
	}
	runtime.GC()
	metrics.Read(allocated)
	allocatedAtGC = allocated[0].Value.Uint64()
}

// held keeps every buffer the host may read or has written alive until
// the call's post-return: Go's collector does not move objects, but it
// frees those only the host points to.
var held []unsafe.Pointer

func hold(p unsafe.Pointer) {
	if p != nil {
		held = append(held, p)
	}
}

// cabiRealloc is how the host allocates in guest memory (the inputs of a
// call, lists returned by a host call). Sizes are rounded up to 16 bytes
// or more so that Go's allocator aligns them to 8, the ABI's largest.
//
//go:wasmexport cabi_realloc
func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	_ = align
	n := (newSize + 15) &^ 7
	buf := make([]byte, n)
	if old != nil && oldSize > 0 {
		copy(buf, unsafe.Slice((*byte)(old), oldSize))
	}
	p := unsafe.Pointer(unsafe.SliceData(buf))
	hold(p)
	return p
}

// adapterArena is where the WASI preview1 adapter keeps its state and its
// stack. It allocates them on its first call, which Go's runtime makes
// while it starts (clocks, random), before Go can allocate; and it must not
// grow memory itself, since Go takes all memory past its data for its heap.
// So the adapter gets static memory of its own (see cabiReallocAdapter).
var (
	adapterArena [adapterArenaBytes]byte
	adapterUsed  uintptr
)

// adapterArenaBytes: the adapter's 64 KiB stack, its state, and room.
const adapterArenaBytes = 256 << 10

// cabiReallocAdapter is the allocator wit-component hands the adapter
// (and only the adapter): a bump allocator over adapterArena, safe before
// Go's runtime is up. Out of room it returns nil, and the adapter traps.
//
//go:wasmexport cabi_realloc_adapter
func cabiReallocAdapter(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	if old != nil && newSize <= oldSize {
		return old
	}
	base := uintptr(unsafe.Pointer(&adapterArena))
	start := (base + adapterUsed + uintptr(align) - 1) &^ (uintptr(align) - 1)
	end := start + uintptr(newSize)
	if align == 0 || end > base+adapterArenaBytes {
		return nil
	}
	adapterUsed = end - base
	p := unsafe.Pointer(&adapterArena[start-base])
	if old != nil {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(old), oldSize))
	}
	return p
}

func addr(p unsafe.Pointer) uint32 { return uint32(uintptr(p)) }

// pointerAt is the address a of linear memory as a pointer: memory the
// host was given by cabiRealloc, so a live Go object.
func pointerAt(a uint32) unsafe.Pointer {
	p := uintptr(a)
	return *(*unsafe.Pointer)(unsafe.Pointer(&p))
}

func loadU32(base unsafe.Pointer, off uintptr) uint32 {
	return *(*uint32)(unsafe.Add(base, off))
}

func loadI64(base unsafe.Pointer, off uintptr) int64 {
	return *(*int64)(unsafe.Add(base, off))
}

func storeU32(base unsafe.Pointer, off uintptr, v uint32) {
	*(*uint32)(unsafe.Add(base, off)) = v
}

// loadList reads a list's (pointer, length) at base+off.
func loadList(base unsafe.Pointer, off uintptr) (unsafe.Pointer, int) {
	return pointerAt(loadU32(base, off)), int(loadU32(base, off+4))
}

func loadBytes(base unsafe.Pointer, off uintptr) []byte {
	p, n := loadList(base, off)
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(p), n)
}

func loadString(base unsafe.Pointer, off uintptr) string {
	p, n := loadList(base, off)
	if n == 0 {
		return ""
	}
	return unsafe.String((*byte)(p), n)
}

// storeList writes a list's (pointer, length) at base+off and holds the
// elements until post-return.
func storeList(base unsafe.Pointer, off uintptr, p unsafe.Pointer, n int) {
	if n == 0 {
		p = nil
	}
	hold(p)
	storeU32(base, off, addr(p))
	storeU32(base, off+4, uint32(n))
}

func storeBytes(base unsafe.Pointer, off uintptr, b []byte) {
	storeList(base, off, unsafe.Pointer(unsafe.SliceData(b)), len(b))
}

func storeString(base unsafe.Pointer, off uintptr, s string) {
	storeList(base, off, unsafe.Pointer(unsafe.StringData(s)), len(s))
}

func sliceOf[T any](p unsafe.Pointer, n int) []T {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(p), n)
}

// A return area: 8-aligned, large enough for every result of the world.
func newArea(size int) unsafe.Pointer {
	area := make([]uint64, (size+7)/8)
	p := unsafe.Pointer(unsafe.SliceData(area))
	hold(p)
	return p
}

// ---- Exports ----------------------------------------------------------------

// Offsets in `process-input`.
const (
	inWatermark      = 0
	inProcessingTime = 8
	inTimestamps     = 16
	inKeyLens        = 24
	inKeys           = 32
	inValueLens      = 40
	inValues         = 48
	inHeaders        = 56
	inKeySlots       = 64
	inSlotCount      = 72
	inStateLens      = 76
	inStateBytes     = 84
)

// Offsets in `result<call-output, string>` (the call-output at 4).
const (
	outTimestamps = 4
	outKeyLens    = 12
	outKeys       = 20
	outValueLens  = 28
	outValues     = 36
	outHeaders    = 44
	outErrors     = 52
	outCells      = 60
	outLens       = 68
	outBytes      = 76
	outSize       = 84
)

// A header record is 20 bytes: event u32, name (ptr, len), value (ptr, len).
const headerSize = 20

//go:wasmexport weir:operator/handler@0.1.0#init
func exportInit(configPtr unsafe.Pointer, configLen uint32) unsafe.Pointer {
	collectIfDue()
	ret := newArea(12)
	// A copy: the operator may keep parts of its config for good.
	config := string(unsafe.Slice((*byte)(configPtr), configLen))
	names, err := initOperator(config)
	if err != nil {
		*(*uint8)(ret) = 1
		storeString(ret, 4, err.Error())
		return ret
	}
	list := make([]uint32, 2*len(names))
	for i, name := range names {
		hold(unsafe.Pointer(unsafe.StringData(name)))
		list[2*i] = addr(unsafe.Pointer(unsafe.StringData(name)))
		list[2*i+1] = uint32(len(name))
	}
	*(*uint8)(ret) = 0
	storeList(ret, 4, unsafe.Pointer(unsafe.SliceData(list)), len(names))
	return ret
}

//go:wasmexport weir:operator/handler@0.1.0#process
func exportProcess(in unsafe.Pointer) unsafe.Pointer {
	collectIfDue()
	headersPtr, headerCount := loadList(in, inHeaders)
	headers := make([]inputHeader, headerCount)
	for i := range headers {
		h := unsafe.Add(headersPtr, i*headerSize)
		headers[i] = inputHeader{
			event: loadU32(h, 0),
			header: Header{
				Name:  loadString(h, 4),
				Value: loadBytes(h, 12),
			},
		}
	}
	tsPtr, n := loadList(in, inTimestamps)
	klPtr, nk := loadList(in, inKeyLens)
	vlPtr, nv := loadList(in, inValueLens)
	slotPtr, ns := loadList(in, inKeySlots)
	lensPtr, nl := loadList(in, inStateLens)
	batch := inputBatch{
		watermark:      loadI64(in, inWatermark),
		processingTime: loadI64(in, inProcessingTime),
		timestamps:     sliceOf[int64](tsPtr, n),
		keyLens:        sliceOf[int32](klPtr, nk),
		keys:           loadBytes(in, inKeys),
		valueLens:      sliceOf[uint32](vlPtr, nv),
		values:         loadBytes(in, inValues),
		headers:        headers,
		keySlots:       sliceOf[uint32](slotPtr, ns),
		slotCount:      loadU32(in, inSlotCount),
		cellLens:       sliceOf[int32](lensPtr, nl),
		cellBytes:      loadBytes(in, inStateBytes),
	}
	return storeOutput(processBatch(&batch))
}

// `timer-input` flattens to 16 values, the most the ABI passes as
// parameters: context, fired timers (3 lists), key lengths, keys and the
// state cells (2 lists), each list as (address, length). Addresses are
// uint32 here: Go allows a wasmexport 128 bytes of arguments.
//
//go:wasmexport weir:operator/handler@0.1.0#on-timer
func exportOnTimer(watermark, processingTime int64,
	timesAt, timesLen, domainsAt, domainsLen, slotsAt, slotsLen, keyLensAt, keyLensLen,
	keysAt, keysLen, cellLensAt, cellLensLen, cellBytesAt, cellBytesLen uint32) unsafe.Pointer {
	timers := inputTimers{
		watermark:      watermark,
		processingTime: processingTime,
		times:          sliceOf[int64](pointerAt(timesAt), int(timesLen)),
		domains:        sliceOf[uint8](pointerAt(domainsAt), int(domainsLen)),
		keySlots:       sliceOf[uint32](pointerAt(slotsAt), int(slotsLen)),
		keyLens:        sliceOf[int32](pointerAt(keyLensAt), int(keyLensLen)),
		keys:           sliceOf[byte](pointerAt(keysAt), int(keysLen)),
		cellLens:       sliceOf[int32](pointerAt(cellLensAt), int(cellLensLen)),
		cellBytes:      sliceOf[byte](pointerAt(cellBytesAt), int(cellBytesLen)),
	}
	return storeOutput(fireTimers(&timers))
}

// storeOutput lays a call's result out for the host.
func storeOutput(out *callOutput, err error) unsafe.Pointer {
	ret := newArea(outSize)
	if err != nil {
		*(*uint8)(ret) = 1
		storeString(ret, 4, err.Error())
		return ret
	}
	*(*uint8)(ret) = 0
	storeList(ret, outTimestamps, unsafe.Pointer(unsafe.SliceData(out.timestamps)), len(out.timestamps))
	storeList(ret, outKeyLens, unsafe.Pointer(unsafe.SliceData(out.keyLens)), len(out.keyLens))
	storeBytes(ret, outKeys, out.keys)
	storeList(ret, outValueLens, unsafe.Pointer(unsafe.SliceData(out.valueLens)), len(out.valueLens))
	storeBytes(ret, outValues, out.values)
	headers := make([]uint32, 5*len(out.headers))
	for i, h := range out.headers {
		hold(unsafe.Pointer(unsafe.StringData(h.header.Name)))
		hold(unsafe.Pointer(unsafe.SliceData(h.header.Value)))
		headers[5*i] = h.event
		headers[5*i+1] = addr(unsafe.Pointer(unsafe.StringData(h.header.Name)))
		headers[5*i+2] = uint32(len(h.header.Name))
		headers[5*i+3] = addr(unsafe.Pointer(unsafe.SliceData(h.header.Value)))
		headers[5*i+4] = uint32(len(h.header.Value))
	}
	storeList(ret, outHeaders, unsafe.Pointer(unsafe.SliceData(headers)), len(out.headers))
	errors := make([]uint32, 3*len(out.errors))
	for i, e := range out.errors {
		hold(unsafe.Pointer(unsafe.StringData(e.message)))
		errors[3*i] = e.index
		errors[3*i+1] = addr(unsafe.Pointer(unsafe.StringData(e.message)))
		errors[3*i+2] = uint32(len(e.message))
	}
	storeList(ret, outErrors, unsafe.Pointer(unsafe.SliceData(errors)), len(out.errors))
	storeList(ret, outCells, unsafe.Pointer(unsafe.SliceData(out.cells)), len(out.cells))
	storeList(ret, outLens, unsafe.Pointer(unsafe.SliceData(out.lens)), len(out.lens))
	storeBytes(ret, outBytes, out.bytes)
	return ret
}

// After the host has read a call's result: let go of everything held
// (no allocation here: see collectIfDue).
func release() {
	clear(held)
	held = held[:0]
}

//go:wasmexport cabi_post_weir:operator/handler@0.1.0#init
func postInit(unsafe.Pointer) { release() }

//go:wasmexport cabi_post_weir:operator/handler@0.1.0#process
func postProcess(unsafe.Pointer) { release() }

//go:wasmexport cabi_post_weir:operator/handler@0.1.0#on-timer
func postOnTimer(unsafe.Pointer) { release() }

// ---- Imports ----------------------------------------------------------------

//go:wasmimport weir:operator/state@0.1.0 map-get
func hostMapGet(name string, key unsafe.Pointer, keyLen uint32, mapKey unsafe.Pointer, mapKeyLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/state@0.1.0 map-put
func hostMapPut(name string, key unsafe.Pointer, keyLen uint32, mapKey unsafe.Pointer, mapKeyLen uint32, value unsafe.Pointer, valueLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/state@0.1.0 map-remove
func hostMapRemove(name string, key unsafe.Pointer, keyLen uint32, mapKey unsafe.Pointer, mapKeyLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/state@0.1.0 map-entries
func hostMapEntries(name string, key unsafe.Pointer, keyLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/state@0.1.0 map-clear
func hostMapClear(name string, key unsafe.Pointer, keyLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/state@0.1.0 list-get
func hostListGet(name string, key unsafe.Pointer, keyLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/state@0.1.0 list-append
func hostListAppend(name string, key unsafe.Pointer, keyLen uint32, item unsafe.Pointer, itemLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/state@0.1.0 list-replace
func hostListReplace(name string, key unsafe.Pointer, keyLen uint32, items unsafe.Pointer, itemCount uint32, ret unsafe.Pointer)

//go:wasmimport weir:operator/timers@0.1.0 register
func hostTimerRegister(domain uint32, key unsafe.Pointer, keyLen uint32, time int64, ret unsafe.Pointer)

//go:wasmimport weir:operator/timers@0.1.0 delete
func hostTimerDelete(domain uint32, key unsafe.Pointer, keyLen uint32, time int64, ret unsafe.Pointer)

//go:wasmimport weir:operator/context@0.1.0 log
func hostLog(level uint32, message string)

//go:wasmimport weir:operator/context@0.1.0 counter-add
func hostCounterAdd(name string, delta uint64)

//go:wasmimport weir:operator/context@0.1.0 operator-name
func hostOperatorName(ret unsafe.Pointer)

func ptrOf(b []byte) (unsafe.Pointer, uint32) {
	return unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b))
}

// stateResult reads a `result<_, state-error>` (or the error case of any
// state result) from a return area.
func stateResult(ret unsafe.Pointer) error {
	if *(*uint8)(ret) == 0 {
		return nil
	}
	switch *(*uint8)(unsafe.Add(ret, 4)) {
	case 0:
		return &StateError{Kind: KeyNotOwned}
	case 1:
		return &StateError{Kind: TooLarge, Limit: loadU32(ret, 8)}
	default:
		return &StateError{Kind: Unavailable, Reason: loadString(ret, 8)}
	}
}

// optionBytes reads the `ok` case of `result<option<list<u8>>, _>`.
func optionBytes(ret unsafe.Pointer) ([]byte, bool) {
	if *(*uint8)(unsafe.Add(ret, 4)) == 0 {
		return nil, false
	}
	b := loadBytes(ret, 8)
	if b == nil {
		b = []byte{}
	}
	return b, true
}

func callMapGet(name string, key, mapKey []byte) ([]byte, bool, error) {
	ret := newArea(16)
	k, kn := ptrOf(key)
	m, mn := ptrOf(mapKey)
	hostMapGet(name, k, kn, m, mn, ret)
	if err := stateResult(ret); err != nil {
		return nil, false, err
	}
	v, ok := optionBytes(ret)
	return v, ok, nil
}

func callMapPut(name string, key, mapKey, value []byte) error {
	ret := newArea(16)
	k, kn := ptrOf(key)
	m, mn := ptrOf(mapKey)
	v, vn := ptrOf(value)
	hostMapPut(name, k, kn, m, mn, v, vn, ret)
	return stateResult(ret)
}

func callMapRemove(name string, key, mapKey []byte) error {
	ret := newArea(16)
	k, kn := ptrOf(key)
	m, mn := ptrOf(mapKey)
	hostMapRemove(name, k, kn, m, mn, ret)
	return stateResult(ret)
}

func callMapEntries(name string, key []byte) ([]MapEntry, error) {
	ret := newArea(16)
	k, kn := ptrOf(key)
	hostMapEntries(name, k, kn, ret)
	if err := stateResult(ret); err != nil {
		return nil, err
	}
	p, n := loadList(ret, 4)
	entries := make([]MapEntry, n)
	for i := range entries {
		e := unsafe.Add(p, 16*i)
		entries[i] = MapEntry{Key: loadBytes(e, 0), Value: loadBytes(e, 8)}
	}
	return entries, nil
}

func callMapClear(name string, key []byte) error {
	ret := newArea(16)
	k, kn := ptrOf(key)
	hostMapClear(name, k, kn, ret)
	return stateResult(ret)
}

func callListGet(name string, key []byte) ([][]byte, error) {
	ret := newArea(16)
	k, kn := ptrOf(key)
	hostListGet(name, k, kn, ret)
	if err := stateResult(ret); err != nil {
		return nil, err
	}
	p, n := loadList(ret, 4)
	items := make([][]byte, n)
	for i := range items {
		items[i] = loadBytes(unsafe.Add(p, 8*i), 0)
	}
	return items, nil
}

func callListAppend(name string, key, item []byte) error {
	ret := newArea(16)
	k, kn := ptrOf(key)
	v, vn := ptrOf(item)
	hostListAppend(name, k, kn, v, vn, ret)
	return stateResult(ret)
}

func callListReplace(name string, key []byte, items [][]byte) error {
	ret := newArea(16)
	k, kn := ptrOf(key)
	list := make([]uint32, 2*len(items))
	for i, item := range items {
		p, n := ptrOf(item)
		hold(p)
		list[2*i], list[2*i+1] = addr(p), n
	}
	hostListReplace(name, k, kn, unsafe.Pointer(unsafe.SliceData(list)), uint32(len(items)), ret)
	return stateResult(ret)
}

func callTimer(register bool, domain TimeDomain, key []byte, time int64) error {
	ret := newArea(16)
	k, kn := ptrOf(key)
	if register {
		hostTimerRegister(uint32(domain), k, kn, time, ret)
	} else {
		hostTimerDelete(uint32(domain), k, kn, time, ret)
	}
	return stateResult(ret)
}

// Log writes message to the host's log (target `weir::guest`).
func Log(level LogLevel, message string) { hostLog(uint32(level), message) }

// CounterAdd adds delta to the operator's counter `name` in the host's
// metrics.
func CounterAdd(name string, delta uint64) { hostCounterAdd(name, delta) }

// OperatorName is the name this instance has in its topology.
func OperatorName() string {
	ret := newArea(8)
	hostOperatorName(ret)
	return string(loadBytes(ret, 0))
}
