// Write Weir stream operators in JavaScript.
//
// Subclass `Operator`, implement `process(ctx, event)` (and `onTimer` if
// you register timers), and end your module with
// `export const handler = weir.handler(MyOperator);`. The SDK hides the
// batch layout of the `weir:operator` contract (events and the value state
// of the batch's keys travel column by column): you see one event at a
// time, typed state stored as JSON (readable by operators in any
// language), and a `Context` to emit events, to the main output or to
// declared side outputs (`setup.sideOutput`, `ctx.emitTo`). `event.input`
// says which of the operator's inputs an event came from; states may expire
// (`setup.valueState(name, { ttl: Ttl.processingTime(ms) })`).
//
// Build with componentize-js against `wit/0.2.0`: see README.md beside this
// file. Built against `wit/` (0.1.0) with the imports below naming
// `@0.1.0`, it makes a 0.1.0 component: inputs are all 0, and side outputs
// and TTLs fail `init`.

import * as hostContext from 'weir:operator/context@0.2.0';
import * as hostState from 'weir:operator/state@0.2.0';
import * as hostTimers from 'weir:operator/timers@0.2.0';

/** The contract the imports above name (rewritten with them). */
const CONTRACT = 'weir:operator@0.2.0';
const CONTRACT_0_1 = CONTRACT.endsWith('@0.1.0');

import { CASED, CASE_IGNORABLE } from './weir_unicode.js';

const NO_SLOT = 0xffffffff;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

/** Throw it for an event you cannot handle: that event's output and
 * value-state writes are dropped and the host applies the operator's error
 * policy (fail, skip, dead-letter) to it alone. Any other exception does
 * the same; this one just says it is meant. */
export class EventError extends Error {}

/** Bytes of a string (UTF-8) or of a Uint8Array as it is. */
export function bytes(value) {
  return typeof value === 'string' ? encoder.encode(value) : value;
}

/** Text of UTF-8 bytes; throws EventError when they are not UTF-8. */
export function text(data) {
  try {
    return strictDecoder.decode(data);
  } catch {
    throw new EventError('invalid UTF-8');
  }
}

/** Compact JSON bytes of a value (JSON.stringify's text). */
export function dumps(value) {
  return encoder.encode(JSON.stringify(value));
}

// ---- Text, as Rust operators see it --------------------------------------

// Unicode White_Space, the set Rust's `char::is_whitespace` uses (JS's `\s`
// differs: it has U+FEFF and lacks U+0085).
const WHITE_SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/u;
const ASCII_PUNCT = /^[!-/:-@[-`{-~]+|[!-/:-@[-`{-~]+$/g;

/** The pieces of `s` between Unicode white space, none empty (as Rust's
 * `str::split_whitespace`). */
export function words(s) {
  return s.split(WHITE_SPACE).filter((w) => w.length > 0);
}

function inRanges(ranges, c) {
  let lo = 0;
  let hi = ranges.length / 2;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (c < ranges[2 * mid]) hi = mid;
    else if (c > ranges[2 * mid + 1]) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Whether the first code point of `points` (from `i`, going `step`) that
 * is not case-ignorable is cased: the test of the final-sigma rule. */
function ignorableThenCased(points, i, step) {
  for (; i >= 0 && i < points.length; i += step) {
    if (!inRanges(CASE_IGNORABLE, points[i])) return inRanges(CASED, points[i]);
  }
  return false;
}

/** The lowercase of `s` as Rust's `str::to_lowercase` makes it: the full
 * mapping, and Σ as ς at the end of a word. */
export function lowercase(s) {
  if (!s.includes('\u03a3')) return s.toLowerCase();
  const points = Array.from(s, (c) => c.codePointAt(0));
  let out = '';
  for (let i = 0; i < points.length; i++) {
    if (points[i] === 0x3a3) {
      const final = ignorableThenCased(points, i - 1, -1) && !ignorableThenCased(points, i + 1, 1);
      out += final ? '\u03c2' : '\u03c3';
    } else {
      out += String.fromCodePoint(points[i]).toLowerCase();
    }
  }
  return out;
}

/** `s` without ASCII punctuation at either end. */
export function trimAsciiPunct(s) {
  return s.replace(ASCII_PUNCT, '');
}

/** Compares strings by code point (as Rust does), not by UTF-16 unit. */
export function compareCodePoints(a, b) {
  const x = a[Symbol.iterator]();
  const y = b[Symbol.iterator]();
  for (;;) {
    const p = x.next();
    const q = y.next();
    if (p.done || q.done) return p.done === q.done ? 0 : p.done ? -1 : 1;
    const d = p.value.codePointAt(0) - q.value.codePointAt(0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
}

// ---- JSON with serde_json's number kinds ----------------------------------

/** A JSON number as serde_json keeps it: an unsigned integer (`'u'`, a
 * BigInt), a negative integer (`'i'`, a BigInt) or a double (`'f'`). */
export class JsonNumber {
  constructor(kind, value) {
    this.kind = kind;
    this.value = value;
  }

  /** As a double (serde_json's `as_f64`). */
  toNumber() {
    return Number(this.value);
  }
}

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);

class ExactParser {
  constructor(s) {
    this.s = s;
    this.i = 0;
  }

  fail(what) {
    throw new EventError(`invalid JSON: ${what} at ${this.i}`);
  }

  ws() {
    while (this.i < this.s.length && ' \t\n\r'.includes(this.s[this.i])) this.i++;
  }

  value(depth) {
    if (depth > 128) this.fail('recursion limit exceeded');
    this.ws();
    const c = this.s[this.i];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [['null', null], ['true', true], ['false', false]]) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    return this.fail(c === undefined ? 'EOF while parsing a value' : 'expected value');
  }

  object(depth) {
    const out = new Map();
    this.i++;
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('key must be a string');
      const key = this.string();
      this.ws();
      if (this.s[this.i++] !== ':') this.fail('expected `:`');
      out.set(key, this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') this.fail('expected `,` or `}`');
    }
  }

  array(depth) {
    const out = [];
    this.i++;
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') this.fail('expected `,` or `]`');
    }
  }

  string() {
    const m = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/.exec(this.s.slice(this.i));
    if (!m) this.fail('invalid string');
    this.i += m[0].length;
    const out = JSON.parse(m[0]);
    // serde_json refuses escaped lone surrogates.
    if (!out.isWellFormed()) this.fail('lone surrogate in hex escape');
    return out;
  }

  number() {
    const m = /^-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.s.slice(this.i));
    if (!m) this.fail('invalid number');
    this.i += m[0].length;
    if (m[1] === undefined && m[2] === undefined) {
      const n = BigInt(m[0]);
      if (n >= 0n && n <= U64_MAX && m[0][0] !== '-') return new JsonNumber('u', n);
      if (n < 0n && n >= I64_MIN) return new JsonNumber('i', n);
    }
    const f = Number(m[0]);
    if (!Number.isFinite(f)) this.fail('number out of range');
    return new JsonNumber('f', f);
  }
}

/** JSON helpers that keep what `JSON.parse` loses: objects are `Map`s,
 * numbers `JsonNumber`s, so `json.equal` is serde_json's `==`. */
export const json = {
  /** Parses JSON text (a string or UTF-8 bytes); throws EventError. */
  parseExact(source) {
    const p = new ExactParser(typeof source === 'string' ? source : text(source));
    const v = p.value(1);
    p.ws();
    if (p.i !== p.s.length) p.fail('trailing characters');
    return v;
  },

  isNumber(v) {
    return v instanceof JsonNumber;
  },

  /** serde_json's `Value == Value`: numbers equal only within one kind
   * (so 50 != 50.0), objects as maps. */
  equal(a, b) {
    if (a instanceof JsonNumber || b instanceof JsonNumber) {
      return a instanceof JsonNumber && b instanceof JsonNumber && a.kind === b.kind && a.value === b.value;
    }
    if (a instanceof Map || b instanceof Map) {
      if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false;
      for (const [k, v] of a) if (!b.has(k) || !json.equal(v, b.get(k))) return false;
      return true;
    }
    if (Array.isArray(a) || Array.isArray(b)) {
      if (!(Array.isArray(a) && Array.isArray(b)) || a.length !== b.length) return false;
      return a.every((v, i) => json.equal(v, b[i]));
    }
    return a === b;
  },
};

// ---- Events, timers, state -------------------------------------------------

/** Headers of an event that has none (shared, so frozen). */
const NO_HEADERS = Object.freeze([]);

/** Event time of item `at` of a list<s64> seen as 32-bit halves, as a
 * Number (correctly rounded past 2^53, as Number(bigint) is), without
 * making a BigInt. */
function timeAt(halves, at) {
  return halves[2 * at + 1] * 4294967296 + (halves[2 * at] >>> 0);
}

/** The 32-bit halves of a BigInt64Array (little-endian: low half first). */
function halvesOf(times) {
  return new Int32Array(times.buffer, times.byteOffset, times.length * 2);
}

/** What the events of one call share: the packed keys (and their text,
 * decoded once when first asked for), the packed values and where each
 * ends, the timestamps as 32-bit halves, the headers (undefined when no
 * event has any) and the input. An event is then four fields: in an
 * interpreter each field stored per event costs. */
class CallBatch {
  constructor(keys, keyEnds, keyLens, values, valueEnds, valueLens, halves, headers, input) {
    this.keys = keys;
    this.keyEnds = keyEnds;
    this.keyLens = keyLens;
    this.values = values;
    this.valueEnds = valueEnds;
    this.valueLens = valueLens;
    this.halves = halves;
    this.headers = headers;
    this.input = input;
    // The keys' text when they are all ASCII (a key's text is then the
    // same range of it), null when not; undefined until asked for.
    this._keyText = undefined;
  }

  keyText() {
    if (this._keyText === undefined) {
      let t = null;
      try {
        t = strictDecoder.decode(this.keys);
      } catch {
        // Some key is not UTF-8: each key is decoded alone.
      }
      this._keyText = t !== null && t.length === this.keys.length ? t : null;
    }
    return this._keyText;
  }
}

export class Event {
  constructor(key, time, batch, at) {
    /** Uint8Array, or undefined for an event without a key. */
    this.key = key;
    /** Event time, milliseconds since the Unix epoch (a Number). */
    this.timestamp = time;
    // The rest is read from the batch when asked for: many operators
    // never read the value. The exact timestamp stays in its halves.
    this._batch = batch;
    this._at = at;
  }

  /** Uint8Array: compact JSON on the wire, but any bytes may travel. */
  get value() {
    const b = this._batch;
    const end = b.valueEnds[this._at];
    return b.values.subarray(end - b.valueLens[this._at], end);
  }

  /** [name, Uint8Array] pairs. */
  get headers() {
    const h = this._batch.headers;
    return h === undefined ? NO_HEADERS : h[this._at];
  }

  /** Which of the operator's inputs the event came from: its index in the
   * operator's `input` list in the topology (0 with one input). */
  get input() {
    return this._batch.input;
  }

  /** The value parsed with JSON.parse; throws EventError when it is not JSON. */
  json() {
    try {
      return JSON.parse(text(this.value));
    } catch (e) {
      throw new EventError(`invalid JSON: ${e.message}`);
    }
  }

  /** The key as text, or undefined without a key or when it is not UTF-8. */
  keyStr() {
    const key = this.key;
    if (key === undefined) return undefined;
    const b = this._batch;
    const all = b._keyText === undefined ? b.keyText() : b._keyText;
    if (all !== null) {
      const at = this._at;
      const end = b.keyEnds[at];
      return all.substring(end - b.keyLens[at], end);
    }
    const ascii = asciiText(key);
    if (ascii !== undefined) return ascii;
    try {
      return strictDecoder.decode(key);
    } catch {
      return undefined;
    }
  }

  /** The value as text; throws EventError when it is not UTF-8. */
  valueStr() {
    return text(this.value);
  }
}

/** The text of `bytes` when they are short ASCII, else undefined: for
 * keys, cheaper than a TextDecoder call. */
function asciiText(bytes) {
  if (bytes.length > 64) return undefined;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] >= 0x80) return undefined;
  return String.fromCharCode.apply(null, bytes);
}

export class Timer {
  constructor(key, time, domain) {
    this.key = key;
    this.time = time;
    /** 'event-time' or 'processing-time'. */
    this.domain = domain;
  }
}

/** A state's time to live: an entry expires `ms` milliseconds after it was
 * last written (or read too, after `.refreshOnRead()`), in processing time
 * (the host's clock at each call) or in event time (the operator's
 * watermark against the event's timestamp or the timer's time). Give it to
 * `setup.valueState`, `mapState` or `listState` as `{ ttl }`. */
export class Ttl {
  constructor(ms, domain, refreshOnRead = false) {
    if (!Number.isSafeInteger(ms) || ms <= 0) {
      throw new Error(`a TTL is a whole number of milliseconds above 0, not ${ms}`);
    }
    this.ms = ms;
    /** 'event-time' or 'processing-time'. */
    this.domain = domain;
    this.refreshesOnRead = refreshOnRead;
  }

  static processingTime(ms) {
    return new Ttl(ms, 'processing-time');
  }

  static eventTime(ms) {
    return new Ttl(ms, 'event-time');
  }

  /** The same TTL, restarted by reads as well as writes. */
  refreshOnRead() {
    return new Ttl(this.ms, this.domain, true);
  }
}

function parseState(raw) {
  return JSON.parse(text(raw));
}

/** JSON text of a value to store (JSON.stringify's; '' for what it
 * cannot write, as `dumps` does). */
function stateText(value) {
  return typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : (JSON.stringify(value) ?? '');
}

/** One JSON value per key; travels with each batch (no host call). */
export class ValueState {
  constructor(index) {
    this._index = index;
  }

  // get and set find the cell themselves: they run for most events, and a
  // call costs more than their work in an interpreter.
  get(_ctx, fallback) {
    const cell = curSlot === NO_SLOT ? cellOf(this._index) : curSlot * curStateCount + this._index;
    const raw = curWritten[cell];
    if (raw === null) return fallback;
    if (raw !== undefined) return JSON.parse(raw);
    // As the call brought it: plain digits (most counters) without the
    // decoder and the parser.
    const n = curCellLens[cell];
    if (n < 0) return fallback;
    const bytes = curCellBytes;
    const end = curCellEnds[cell];
    let k = end - n;
    if (n > 0 && n <= 15 && (bytes[k] !== 48 || n === 1)) {
      let v = 0;
      for (; k < end; k++) {
        const d = bytes[k] - 48;
        if (d < 0 || d > 9) break;
        v = v * 10 + d;
      }
      if (k === end) return v;
    }
    return parseState(bytes.subarray(end - n, end));
  }

  set(_ctx, value) {
    const cell = curSlot === NO_SLOT ? cellOf(this._index) : curSlot * curStateCount + this._index;
    const raw = typeof value === 'number' && isSafeInteger(value) ? toText(value) : stateText(value);
    curUndo[curUndoLen++] = cell;
    curUndo[curUndoLen++] = curWritten[cell];
    curWritten[cell] = raw;
  }

  clear(_ctx) {
    cellSet(this._index, null);
  }
}

function hostCall(f) {
  try {
    return f();
  } catch (e) {
    const err = e && e.payload !== undefined ? e.payload : e;
    const detail = err && err.tag ? `${err.tag}${err.val !== undefined ? `: ${err.val}` : ''}` : String(err);
    throw new EventError(`state call refused: ${detail}`);
  }
}

/** Many `key -> value` entries (JSON) per key, through host calls. */
export class MapState {
  constructor(name) {
    this._name = name;
  }

  get(ctx, mapKey, fallback = undefined) {
    const raw = hostCall(() => hostState.mapGet(this._name, ctx._requireKey(), dumps(mapKey)));
    return raw === undefined ? fallback : parseState(raw);
  }

  put(ctx, mapKey, value) {
    hostCall(() => hostState.mapPut(this._name, ctx._requireKey(), dumps(mapKey), dumps(value)));
  }

  remove(ctx, mapKey) {
    hostCall(() => hostState.mapRemove(this._name, ctx._requireKey(), dumps(mapKey)));
  }

  entries(ctx) {
    return hostCall(() => hostState.mapEntries(this._name, ctx._requireKey())).map(([k, v]) => [
      parseState(k),
      parseState(v),
    ]);
  }
}

/** A list of JSON values per key, through host calls. */
export class ListState {
  constructor(name) {
    this._name = name;
  }

  get(ctx) {
    return hostCall(() => hostState.listGet(this._name, ctx._requireKey())).map(parseState);
  }

  append(ctx, item) {
    hostCall(() => hostState.listAppend(this._name, ctx._requireKey(), dumps(item)));
  }
}

/** Declares an operator's state in its constructor. */
export class Setup {
  constructor(configText) {
    /** The config exactly as the topology gave it (JSON text). */
    this.configText = configText;
    this.valueStates = [];
    this.outputs = [];
    /** 'kind name' -> [kind, name, Ttl], in declaration order. */
    this.ttls = new Map();
  }

  _ttl(kind, name, options) {
    const ttl = options?.ttl;
    if (ttl === undefined || ttl === null) return;
    if (!(ttl instanceof Ttl)) {
      throw new Error(`the ttl of state '${name}' is ${ttl}: give Ttl.processingTime(ms) or Ttl.eventTime(ms)`);
    }
    this.ttls.set(`${kind} ${name}`, [kind, name, ttl]);
  }

  /** Value state `name`; `{ ttl }` makes its values expire. */
  valueState(name, options = undefined) {
    this._ttl('value', name, options);
    if (!this.valueStates.includes(name)) this.valueStates.push(name);
    return new ValueState(this.valueStates.indexOf(name));
  }

  /** Map state `name`; `{ ttl }` makes its entries expire one by one. */
  mapState(name, options = undefined) {
    this._ttl('map', name, options);
    return new MapState(name);
  }

  /** List state `name`; `{ ttl }` makes its items expire one by one. */
  listState(name, options = undefined) {
    this._ttl('list', name, options);
    return new ListState(name);
  }

  /** Declares side output `name`, written with `ctx.emitTo(name, ...)`. A
   * topology reads it as `<operator>.<name>` (`input: fraud.alerts`); the
   * operator's own name stays its main output. */
  sideOutput(name) {
    if (!this.outputs.includes(name)) this.outputs.push(name);
  }

  _spec() {
    if (CONTRACT_0_1) {
      if (this.outputs.length > 0 || this.ttls.size > 0) {
        throw new Error(
          `side outputs and state TTL need contract weir:operator@0.2.0, and this operator is built against ${CONTRACT}: build it against wit/0.2.0`,
        );
      }
      return { valueStates: this.valueStates };
    }
    const ttls = [...this.ttls.values()].map(([kind, name, ttl]) => ({
      kind,
      name,
      ttlMs: BigInt(ttl.ms),
      domain: ttl.domain,
      refresh: ttl.refreshesOnRead ? 'on-read-and-write' : 'on-write',
    }));
    return { valueStates: this.valueStates, outputs: this.outputs, ttls };
  }
}

// ---- The context ------------------------------------------------------------

/** Where each packed piece ends (a negative length counts as none); throws
 * when the lengths do not add up to the bytes sent. */
function ends(lens, data, what) {
  const out = new Uint32Array(lens.length);
  let at = 0;
  for (let i = 0; i < lens.length; i++) {
    const n = lens[i];
    if (n > 0) at += n;
    out[i] = at;
  }
  if (at !== data.length) {
    throw new Error(`malformed input from the host: ${what} lengths add up to ${at} bytes but ${data.length} were sent`);
  }
  return out;
}

function concat(chunks, total) {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Packs emitted pieces (strings, to be UTF-8, or Uint8Arrays; null for
 * no key) into their lengths (-1 for null) and bytes. A run of strings is
 * encoded with one TextEncoder call: when it is ASCII (as many bytes as
 * UTF-16 units), each string's length is its byte length. */
function pack(parts) {
  const n = parts.length;
  const lens = new Int32Array(n);
  const chunks = [];
  let total = 0;
  let i = 0;
  while (i < n) {
    const p = parts[i];
    if (typeof p !== 'string') {
      if (p === null) {
        lens[i] = -1;
      } else {
        lens[i] = p.length;
        chunks.push(p);
        total += p.length;
      }
      i++;
      continue;
    }
    let j = i;
    let units = 0;
    while (j < n && typeof parts[j] === 'string') units += parts[j++].length;
    const run = encoder.encode(j - i === 1 ? p : parts.slice(i, j).join(''));
    if (run.length === units) {
      for (let k = i; k < j; k++) lens[k] = parts[k].length;
      chunks.push(run);
      total += run.length;
    } else {
      for (let k = i; k < j; k++) {
        const data = encoder.encode(parts[k]);
        lens[k] = data.length;
        chunks.push(data);
        total += data.length;
      }
    }
    i = j;
  }
  return [lens, concat(chunks, total)];
}

/** A key or value to emit as it is kept until the call ends: a string or
 * bytes (a Uint8Array, also one the bindings made in their own realm);
 * anything else fails the event now, not the call later. */
function emittable(v, what) {
  if (typeof v === 'string' || ArrayBuffer.isView(v)) return v;
  throw new EventError(`emit needs a string or a Uint8Array as the ${what}, not ${typeof v}`);
}

const EMPTY = Object.freeze([]);

/** What an operator can do while it handles one event or timer. */
// The state of the call being handled lives in the module's bindings, not
// in the Context's properties: StarlingMonkey's interpreter looks every
// property up by name (a profile of word-count spends more time in
// property lookups than in any other engine function), while a module
// binding is read from its slot. One call runs at a time per instance.
/** The key of the event or timer being handled (Uint8Array or undefined). */
let curKey;
/** Its key slot (NO_SLOT without one). */
let curSlot = NO_SLOT;
/** Its index in the call: the default timestamp of what it emits is item
 * `curAt` of `curHalves`, the 32-bit halves of the call's timestamps or
 * timer times; `curTime` is that time as a Number (event.timestamp). */
let curAt = 0;
let curTime = 0;
let curHalves;
/** Value state: the number of declared states, the call's cells (read in
 * place, see ValueState.get), and what the call wrote: cell -> JSON text,
 * null when cleared, undefined while untouched. */
let curStateCount = 0;
let curCellLens;
let curCellBytes;
let curCellEnds;
let curWritten;
/** Pairs (cell, what curWritten held) of every write of the call; a
 * failing item undoes its own, from its mark on. */
let curUndo;
let curUndoLen = 0;
/** Emitted events: how many, timestamps as 32-bit halves (copied without
 * making BigInts), keys and values as strings or Uint8Arrays (see pack),
 * headers, and the output of each (empty while all went to the main one). */
let curEvents = 0;
let curTimes;
let curKeys;
let curValues;
let curHeaders;
let curTargets;
/** Whether some emitted event went to a side output (curTargets filled). */
let curSide = false;
let curTimesCap = 0;

const jsonStringify = JSON.stringify;
const isView = ArrayBuffer.isView;
const isSafeInteger = Number.isSafeInteger;
const toText = String;

export class Context {
  constructor(call, stateCount, cells, sideOutputs = [], input = 0) {
    this._call = call;
    this._sideOutputs = sideOutputs;
    this._input = input;
    curStateCount = stateCount;
    curCellLens = cells.lens;
    curCellBytes = cells.bytes;
    curCellEnds = ends(cells.lens, cells.bytes, 'state');
    // Dense (no holes: reading a hole looks at the prototypes).
    curWritten = new Array(cells.lens.length).fill(undefined);
    curUndo = [];
    curUndoLen = 0;
    curKey = undefined;
    curSlot = NO_SLOT;
    curHalves = EMPTY_HALVES;
    curAt = 0;
    curTime = 0;
    curEvents = 0;
    curTimes = new Int32Array(64);
    curTimesCap = 32;
    curKeys = [];
    curValues = [];
    curHeaders = [];
    curTargets = [];
    curSide = false;
  }

  /** The key of the event or timer being handled (Uint8Array or undefined). */
  get key() {
    return curKey;
  }

  get watermark() {
    return Number(this._call.watermark);
  }

  get processingTime() {
    return Number(this._call.processingTime);
  }

  /** Which of the operator's inputs the current batch came from: its index
   * in the topology's `input` list (0 with one input, and while a timer
   * fires). */
  get input() {
    return this._input;
  }

  /** Emits to side output `output` (declared with `setup.sideOutput`)
   * instead of the main output. */
  emitTo(output, key, value, timestamp = undefined, headers = EMPTY) {
    const target = this._sideOutputs.indexOf(output) + 1;
    if (target === 0) {
      throw new EventError(
        `no side output ${JSON.stringify(output)}: declare it in the constructor with setup.sideOutput(${JSON.stringify(output)}) (declared: ${JSON.stringify(this._sideOutputs)})`,
      );
    }
    emitOne(target, key, emittable(value, 'value'), timestamp, headers, curHalves, curAt);
  }

  /** Emits `value` as JSON text to side output `output`. */
  emitJsonTo(output, key, value, timestamp = undefined) {
    this.emitTo(output, key, JSON.stringify(value) ?? '', timestamp);
  }

  /** Emits an event. `key`, `value`: Uint8Array or string (UTF-8);
   * `timestamp` defaults to the current event's; headers: [name, bytes]. */
  emit(key, value, timestamp, headers) {
    emitOne(0, key, emittable(value, 'value'), timestamp, headers === undefined ? EMPTY : headers, curHalves, curAt);
  }

  /** Emits `value` as JSON text (JSON.stringify). */
  emitJson(key, value, timestamp) {
    emitOne(0, key, jsonStringify(value) ?? '', timestamp, EMPTY, curHalves, curAt);
  }

  /** Emits the event as it came: key, value, timestamp, headers. */
  forward(event) {
    emitOne(0, event.key, event.value, undefined, event.headers, event._batch.halves, event._at);
  }

  registerTimer(time, domain = 'event-time') {
    hostCall(() => hostTimers.register(domain, this._requireKey(), BigInt(time)));
  }

  deleteTimer(time, domain = 'event-time') {
    hostCall(() => hostTimers.delete(domain, this._requireKey(), BigInt(time)));
  }

  _requireKey() {
    return requireKey();
  }
}

function requireKey() {
  if (curKey === undefined) {
    throw new EventError("state needs a keyed event, and this one has no key: key the operator's input (key_by)");
  }
  return curKey;
}

/** The cell of value state `index` for the current key. */
function cellOf(index) {
  if (curSlot === NO_SLOT) {
    requireKey();
    throw new EventError('this event has no key slot for value state');
  }
  return curSlot * curStateCount + index;
}

function cellSet(index, raw) {
  const cell = cellOf(index);
  curUndo[curUndoLen++] = cell;
  curUndo[curUndoLen++] = curWritten[cell];
  curWritten[cell] = raw;
}

function emitOne(target, key, value, timestamp, headers, halves, at) {
  const index = curEvents;
  // The event's own key (the usual case) needs no check.
  if (key !== curKey || key === undefined) {
    if (key === undefined || key === null) key = null;
    else if (typeof key !== 'string' && !isView(key)) emittable(key, 'key');
  }
  curKeys[index] = key;
  curValues[index] = value;
  if (target !== 0 && !curSide) {
    curTargets = new Array(index).fill(0);
    curSide = true;
  }
  if (curSide) curTargets[index] = target;
  if (headers !== EMPTY) {
    for (let h = 0; h < headers.length; h++) {
      curHeaders.push({ event: index, name: headers[h][0], value: bytes(headers[h][1]) });
    }
  }
  let times = curTimes;
  if (index >= curTimesCap) {
    const grown = new Int32Array(times.length * 2);
    grown.set(times);
    curTimes = times = grown;
    curTimesCap = grown.length / 2;
  }
  // The current event's own time (given back as event.timestamp, exact
  // below 2^53) is copied as it came.
  if (timestamp === undefined || (timestamp === curTime && timestamp <= MAX_SAFE && timestamp >= -MAX_SAFE)) {
    times[2 * index] = halves[2 * at];
    times[2 * index + 1] = halves[2 * at + 1];
  } else {
    const t = Math.trunc(Number(timestamp));
    if (isSafeInteger(t)) {
      // Exact in doubles: the halves without a BigInt.
      const high = Math.floor(t / 4294967296);
      times[2 * index] = (t - high * 4294967296) | 0;
      times[2 * index + 1] = high;
    } else {
      new BigInt64Array(times.buffer, 8 * index, 1)[0] = BigInt(t);
    }
  }
  curEvents = index + 1;
}

/** Drops what the failing item emitted and wrote since `events` events
 * were out, `headers` headers and `undo` undo entries. */
function rollBack(events, headers, undo) {
  curEvents = events;
  curKeys.length = events;
  curValues.length = events;
  if (curTargets.length > events) curTargets.length = events;
  curHeaders.length = headers;
  for (let u = curUndoLen - 2; u >= undo; u -= 2) curWritten[curUndo[u]] = curUndo[u + 1];
  curUndo.length = undo;
  curUndoLen = undo;
}

/** The call's output, from what it emitted and wrote. */
function callOutput(errors) {
  const cells = [];
  const texts = [];
  for (let c = 0; c < curWritten.length; c++) {
    const raw = curWritten[c];
    if (raw !== undefined) {
      cells.push(c);
      texts.push(raw);
    }
  }
  const [keyLens, keys] = pack(curKeys);
  const [valueLens, values] = pack(curValues);
  const [stateLens, stateBytes] = pack(texts);
  const output = {
    events: {
      timestamps: new BigInt64Array(curTimes.buffer.slice(0, 8 * curEvents)),
      keyLens,
      keys,
      valueLens: new Uint32Array(valueLens.buffer),
      values,
      headers: curHeaders,
    },
    errors,
    state: { cells: Uint32Array.from(cells), lens: stateLens, bytes: stateBytes },
  };
  if (!CONTRACT_0_1) {
    // Everything on the main output, or rolled back to it: say nothing.
    const side = curSide && curTargets.some((t) => t !== 0);
    output.outputs = Uint32Array.from(side ? curTargets : []);
  }
  // Let the call's buffers go.
  curWritten = curUndo = curKeys = curValues = curHeaders = curTargets = curTimes = undefined;
  curCellLens = curCellBytes = curCellEnds = curKey = undefined;
  return output;
}

const EMPTY_HALVES = new Int32Array(2);
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

// ---- The operator and its handler ------------------------------------------

/** Base class of an operator: `constructor(config, setup)` gets the
 * topology's config (JSON.parse'd; `setup.configText` has the text) and
 * declares state through `setup`. */
export class Operator {
  process(_ctx, _event) {
    throw new Error('implement process(ctx, event)');
  }

  onTimer(_ctx, _timer) {}
}

/** Writes to the host's log: level is trace, debug, info, warn or error. */
export function log(level, message) {
  hostContext.log(level, String(message));
}

/** Adds to the operator's counter `name` in the host's metrics. */
export function counterAdd(name, delta = 1) {
  hostContext.counterAdd(name, BigInt(delta));
}

function messageOf(e) {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

/** The `handler` export componentize-js expects, for `OperatorClass`. */
export function handler(OperatorClass) {
  let operator;
  let stateCount = 0;
  let sideOutputs = [];

  function check(cond, message) {
    if (!cond) throw `malformed input from the host: ${message}`;
  }

  return {
    init(configText) {
      const setup = new Setup(configText.trim() === '' ? '{}' : configText);
      try {
        operator = new OperatorClass(JSON.parse(setup.configText), setup);
      } catch (e) {
        throw `invalid config: ${messageOf(e)}`;
      }
      let spec;
      try {
        spec = setup._spec();
      } catch (e) {
        throw `invalid config: ${messageOf(e)}`;
      }
      stateCount = setup.valueStates.length;
      sideOutputs = setup.outputs;
      return spec;
    },

    // One loop over the batch: no host call, and no object per event but
    // the Event itself.
    process(input) {
      check(operator !== undefined, 'the operator was called before init');
      const ev = input.events;
      const n = ev.timestamps.length;
      const slots = input.keySlots;
      const keyLens = ev.keyLens;
      const valueLens = ev.valueLens;
      check(keyLens.length === n && valueLens.length === n, 'batch columns differ in length');
      check(slots.length === 0 || slots.length === n, 'key slots differ in length from the batch');
      let ctx;
      let keyEnds;
      let valueEnds;
      try {
        keyEnds = ends(keyLens, ev.keys, 'key');
        valueEnds = ends(valueLens, ev.values, 'value');
        ctx = new Context(input.context, stateCount, input.state, sideOutputs, input.input ?? 0);
      } catch (e) {
        throw messageOf(e);
      }
      check(curCellLens.length === input.slotCount * stateCount, 'state cells differ from slots × value states');
      let headers;
      if (ev.headers.length > 0) {
        headers = new Array(n).fill(NO_HEADERS);
        for (const h of ev.headers) {
          if (headers[h.event] === NO_HEADERS) headers[h.event] = [];
          headers[h.event].push([h.name, h.value]);
        }
      }
      const halves = halvesOf(ev.timestamps);
      const slotted = slots.length !== 0;
      const keys = ev.keys;
      const values = ev.values;
      const batch = new CallBatch(keys, keyEnds, keyLens, values, valueEnds, valueLens, halves, headers, ctx._input);
      const errors = [];
      curHalves = halves;
      const op = operator;
      let keyAt = 0;
      for (let i = 0; i < n; i++) {
        const kl = keyLens[i];
        const key = kl < 0 ? undefined : keys.subarray(keyAt, (keyAt += kl));
        const time = halves[2 * i + 1] * 4294967296 + (halves[2 * i] >>> 0);
        const event = new Event(key, time, batch, i);
        curKey = key;
        curSlot = slotted ? slots[i] : NO_SLOT;
        curAt = i;
        curTime = time;
        const events = curEvents;
        const headersOut = curHeaders.length;
        const undo = curUndoLen;
        try {
          op.process(ctx, event);
        } catch (e) {
          rollBack(events, headersOut, undo);
          errors.push({ index: i, message: messageOf(e) });
        }
      }
      return callOutput(errors);
    },

    onTimer(input) {
      check(operator !== undefined, 'the operator was called before init');
      const t = input.timers;
      let ctx;
      let keyEnds;
      try {
        keyEnds = ends(input.keyLens, input.keys, 'key');
        ctx = new Context(input.context, stateCount, input.state, sideOutputs);
      } catch (e) {
        throw messageOf(e);
      }
      const halves = halvesOf(t.times);
      curHalves = halves;
      const errors = [];
      for (let i = 0; i < t.times.length; i++) {
        const slot = t.keySlots[i];
        const kl = input.keyLens[slot];
        check(kl !== undefined && kl >= 0, `timer ${i} has no key in slot ${slot}`);
        const key = input.keys.subarray(keyEnds[slot] - kl, keyEnds[slot]);
        curKey = key;
        curSlot = slot;
        curAt = i;
        curTime = timeAt(halves, i);
        const events = curEvents;
        const headersOut = curHeaders.length;
        const undo = curUndoLen;
        try {
          operator.onTimer(ctx, new Timer(key, timeAt(halves, i), t.domains[i]));
        } catch (e) {
          rollBack(events, headersOut, undo);
          errors.push({ index: i, message: messageOf(e) });
        }
      }
      return callOutput(errors);
    },
  };
}
