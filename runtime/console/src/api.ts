// The console's only way to the server: the public REST API, with the
// bearer token (when the server has one) kept in session storage.

const TOKEN_KEY = 'weir.token';

export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function setToken(value: string): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the API: `{ error: { code, message, details } }`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown,
  ) {
    super(message);
  }
}

/** Called on every 401, so the page can ask for the token. */
let onUnauthorized: (message: string) => void = () => {};
export function whenUnauthorized(f: (message: string) => void): void {
  onUnauthorized = f;
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  const t = token();
  if (t) h['Authorization'] = `Bearer ${t}`;
  return h;
}

async function failure(res: Response): Promise<ApiError> {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  let details: unknown = null;
  try {
    const body = await res.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
      details = body.error.details ?? null;
    }
  } catch {
    // not JSON: keep the status line
  }
  if (res.status === 401) onUnauthorized(message);
  return new ApiError(res.status, code, message, details);
}

export async function call<T = any>(
  method: string,
  path: string,
  body?: BodyInit,
  contentType?: string,
): Promise<T> {
  const res = await fetch(path, {
    method,
    headers: headers(contentType ? { 'Content-Type': contentType } : {}),
    body,
  });
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export const get = <T = any>(path: string) => call<T>('GET', path);
export const postJson = <T = any>(path: string, value: unknown) =>
  call<T>('POST', path, JSON.stringify(value), 'application/json');

/** `encodeURIComponent` for one path segment. */
export const seg = encodeURIComponent;

/**
 * Follows a stream from `offset` with `fetch` streaming of the API's
 * server-sent events (EventSource cannot send a bearer token). Calls
 * `onEvent` per event until `signal` aborts; resolves when the server
 * ends the follow.
 */
export async function follow(
  stream: string,
  offset: number,
  onEvent: (event: StreamEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const res = await fetch(`/v1/streams/${seg(stream)}/events?offset=${offset}`, {
    headers: headers({ Accept: 'text/event-stream' }),
    signal,
  });
  if (!res.ok || !res.body) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // Events end with a blank line; lines are `field: value`.
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// ---- shapes of the API's answers (the parts the console reads) ----

export interface StreamEvent {
  offset: number;
  key?: string;
  key_b64?: string;
  value?: unknown;
  value_b64?: string;
  timestamp: number;
  headers?: Record<string, string>;
  headers_b64?: Record<string, string>;
}

export interface Checkpoint {
  id: number;
  savepoint: string | null;
  started_at: number;
  duration_ms: number;
  alignment_ms: number;
  commit_ms: number;
  rows: number;
  bytes: number;
  final: boolean;
}

export interface TopologySummary {
  name: string;
  state: string;
  desired: string;
  operators: number;
  /** Events the operators reading a source received. */
  events_from_sources: number;
  /** Events the operators feeding a sink emitted. */
  events_to_sinks: number;
  errors: number;
  dead_lettered: number;
  last_checkpoint: Checkpoint | null;
  updated_at: number;
  last_error: string | null;
}

export type Inputs = string | string[];

export interface TopologyDocument {
  name: string;
  sources?: { name: string; stream?: string; file?: string }[];
  operators?: {
    name: string;
    module: string;
    parallelism?: number;
    key_by?: unknown;
    input: Inputs;
    config?: unknown;
  }[];
  sinks?: { name: string; stream?: string; file?: string; input: Inputs }[];
  dead_letter_stream?: string;
  [other: string]: unknown;
}

export interface TopologyStatus {
  name: string;
  state: string;
  desired: string;
  document: TopologyDocument;
  modules: Record<string, string>;
  last_error: string | null;
  busy: string | null;
  last_checkpoint: Checkpoint | null;
}

export interface InstanceMetrics {
  operator: string;
  instance: number;
  events_in: number;
  events_out: number;
  errors: number;
  dead_lettered: number;
  late: number;
  watermark: number | null;
  blocked_ms: number;
  latency_counts: number[];
  counters: Record<string, number>;
  /** The newest lines the operator logged, oldest first. */
  logs: GuestLog[];
}

export interface GuestLog {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  message: string;
  /** Wall clock, ms since the Unix epoch. */
  at: number;
}

export interface MetricsSnapshot {
  topology: string;
  state: string;
  taken_at: number;
  chains: string[][];
  latency_bounds_us: number[];
  instances: InstanceMetrics[];
  /** Sources and sinks that keep live figures. */
  endpoints: Endpoint[];
  last_checkpoint: Checkpoint | null;
}

export interface Endpoint {
  name: string;
  /** A stream is split 0; a Kafka topic has one split per partition. */
  splits: { split: number; position: number; end: number | null; lag: number | null }[];
  counters: Record<string, number>;
}

export interface ModuleVersion {
  name: string;
  version: number;
  reference: string;
  digest: string;
  size: number;
  world: string;
  imports: string[];
  exports: string[];
  created_at: number;
  /** Where the component's producers sections say. */
  language: string | null;
  versions?: number;
}

export interface StreamInfo {
  name: string;
  start_offset: number;
  end_offset: number;
  bytes: number;
  segments: number;
}

export interface Problem {
  path: string;
  message: string;
  severity: 'error' | 'warning';
}

export function inputNames(inputs: Inputs): string[] {
  return Array.isArray(inputs) ? inputs : [inputs];
}
