// Type declarations of weir.js, so that editors complete and check
// operators written against it (`ctx.emit(...)`, `setup.valueState(...)`).
// Hand-written against weir.js: keep the two in step.

/** Bytes as operators see them. */
export type Bytes = Uint8Array;

/** A value emitted: a string (UTF-8) or bytes as they are. */
export type BytesLike = string | Uint8Array;

/** Thrown for an event the operator cannot handle: that event's output and
 * value-state writes are dropped and the operator's error policy applies. */
export class EventError extends Error {}

export function bytes(value: BytesLike): Bytes;
/** UTF-8 text of `data`; throws EventError when it is not UTF-8. */
export function text(data: Bytes): string;
/** Compact JSON bytes of `value` (JSON.stringify's text). */
export function dumps(value: unknown): Bytes;
/** The pieces of `s` between Unicode white space, as Rust's `split_whitespace`. */
export function words(s: string): string[];
/** Lowercase as Rust's `str::to_lowercase` makes it (final sigma included). */
export function lowercase(s: string): string;
/** `s` without ASCII punctuation at either end. */
export function trimAsciiPunct(s: string): string;
/** Compares by code point, as Rust orders strings: -1, 0 or 1. */
export function compareCodePoints(a: string, b: string): -1 | 0 | 1;

/** A JSON number with serde_json's kind: 'u' and 'i' hold a bigint, 'f' a number. */
export class JsonNumber {
  readonly kind: 'u' | 'i' | 'f';
  readonly value: bigint | number;
  toNumber(): number;
}

/** JSON that keeps serde_json's distinctions: objects as Maps, numbers as JsonNumbers. */
export type ExactJson = null | boolean | string | JsonNumber | ExactJson[] | Map<string, ExactJson>;

export const json: {
  /** Parses JSON text or UTF-8 bytes; throws EventError. */
  parseExact(source: string | Bytes): ExactJson;
  isNumber(v: unknown): v is JsonNumber;
  /** serde_json's `==` (50 != 50.0; objects compared as maps). */
  equal(a: ExactJson, b: ExactJson): boolean;
};

export class Event {
  /** The key, or undefined for an event without one. */
  readonly key: Bytes | undefined;
  /** Compact JSON on the wire, but any bytes may travel. */
  readonly value: Bytes;
  /** Event time in milliseconds since the Unix epoch. */
  readonly timestamp: number;
  readonly headers: Array<[string, Bytes]>;
  /** Which of the operator's inputs the event came from: its index in the
   * operator's `input` list in the topology (0 with one input). */
  readonly input: number;
  /** The value parsed with JSON.parse; throws EventError when it is not JSON. */
  json(): any;
  /** The key as text; undefined without a key or when it is not UTF-8. */
  keyStr(): string | undefined;
  /** The value as text; throws EventError when it is not UTF-8. */
  valueStr(): string;
}

export type TimeDomain = 'event-time' | 'processing-time';

export class Timer {
  readonly key: Bytes | undefined;
  readonly time: number;
  readonly domain: TimeDomain;
}

/** A state's time to live: entries expire `ms` after their last write (or
 * read too, after `refreshOnRead()`), on the host's clock or against the
 * operator's watermark. */
export class Ttl {
  readonly ms: number;
  readonly domain: TimeDomain;
  readonly refreshesOnRead: boolean;
  static processingTime(ms: number): Ttl;
  static eventTime(ms: number): Ttl;
  /** The same TTL, restarted by reads as well as writes. */
  refreshOnRead(): Ttl;
}

/** Options of a state declaration: `ttl` makes its entries expire. */
export interface StateOptions {
  ttl?: Ttl;
}

/** One JSON value per key; travels with each batch (no host call). */
export class ValueState<T = any> {
  get(ctx: Context): T | undefined;
  get(ctx: Context, fallback: T): T;
  set(ctx: Context, value: T): void;
  clear(ctx: Context): void;
}

/** Many `key -> value` entries per key, through host calls; map keys and
 * values are stored as JSON (entries come ordered by the JSON text's bytes). */
export class MapState<T = any, K = any> {
  get(ctx: Context, mapKey: K): T | undefined;
  get(ctx: Context, mapKey: K, fallback: T): T;
  put(ctx: Context, mapKey: K, value: T): void;
  remove(ctx: Context, mapKey: K): void;
  entries(ctx: Context): Array<[K, T]>;
}

/** A list of JSON values per key, through host calls. */
export class ListState<T = any> {
  get(ctx: Context): T[];
  append(ctx: Context, item: T): void;
}

/** Declares an operator's state and side outputs in its constructor. */
export class Setup {
  /** The config exactly as the topology gave it (JSON text). */
  readonly configText: string;
  valueState<T = any>(name: string, options?: StateOptions): ValueState<T>;
  mapState<T = any, K = any>(name: string, options?: StateOptions): MapState<T, K>;
  listState<T = any>(name: string, options?: StateOptions): ListState<T>;
  /** Declares side output `name`, written with `ctx.emitTo(name, ...)`; a
   * topology reads it as `<operator>.<name>`. */
  sideOutput(name: string): void;
}

/** What an operator can do while it handles one event or timer. */
export class Context {
  /** The key of the event or timer being handled. */
  readonly key: Bytes | undefined;
  /** The operator's watermark (ms). */
  readonly watermark: number;
  /** The host's processing time for this call (ms). */
  readonly processingTime: number;
  /** Which of the operator's inputs the current batch came from (0 while a
   * timer fires). */
  readonly input: number;
  /** Emits an event; `timestamp` defaults to the input's. */
  emit(key: BytesLike | undefined, value: BytesLike, timestamp?: number, headers?: Array<[string, BytesLike]>): void;
  /** Emits `value` as compact JSON. */
  emitJson(key: BytesLike | undefined, value: unknown, timestamp?: number): void;
  /** Emits the event as it came. */
  forward(event: Event): void;
  /** Emits to side output `output` (declared with `setup.sideOutput`);
   * throws EventError, naming the declared outputs, when there is none. */
  emitTo(output: string, key: BytesLike | undefined, value: BytesLike, timestamp?: number, headers?: Array<[string, BytesLike]>): void;
  /** Emits `value` as compact JSON to side output `output`. */
  emitJsonTo(output: string, key: BytesLike | undefined, value: unknown, timestamp?: number): void;
  registerTimer(time: number, domain?: TimeDomain): void;
  deleteTimer(time: number, domain?: TimeDomain): void;
}

/** Base class of an operator: its constructor gets the topology's config
 * (JSON.parse'd) and a Setup to declare state. */
export class Operator {
  process(ctx: Context, event: Event): void;
  onTimer(ctx: Context, timer: Timer): void;
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
/** Writes to the host's log. */
export function log(level: LogLevel, message: unknown): void;
/** Adds to the operator's counter `name` in the host's metrics. */
export function counterAdd(name: string, delta?: number): void;

/** The `handler` export componentize-js expects: `export const handler = handler(MyOperator);` */
export function handler(operator: new (config: any, setup: Setup) => Operator): unknown;
