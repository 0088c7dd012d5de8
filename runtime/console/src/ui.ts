// Small DOM and formatting helpers shared by the pages.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

/** An element with attributes (`on*` ones are listeners) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element, as `h`. */
export function s(tag: string, attrs: Attrs = {}, ...children: (Child | Child[])[]): SVGElement {
  const el = document.createElementNS(SVG, tag) as SVGElement;
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el: Element, attrs: Attrs): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

function append(el: Element, children: (Child | Child[])[]): void {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
}

/** Replaces the children of `el`. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, children);
}

export function num(n: number): string {
  return n.toLocaleString('en-US');
}

export function rate(perSecond: number | null | undefined): string {
  if (perSecond === null || perSecond === undefined || !isFinite(perSecond)) return '–';
  if (perSecond >= 1e6) return (perSecond / 1e6).toFixed(1) + 'M/s';
  if (perSecond >= 1e4) return (perSecond / 1e3).toFixed(1) + 'k/s';
  if (perSecond >= 100) return perSecond.toFixed(0) + '/s';
  return perSecond.toFixed(1) + '/s';
}

export function bytes(n: number): string {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return v.toFixed(v < 10 ? 1 : 0) + ' ' + units[i];
}

export function duration(ms: number): string {
  if (ms < 1000) return Math.round(ms) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  const m = s / 60;
  if (m < 60) return m.toFixed(0) + ' min';
  const hours = m / 60;
  if (hours < 48) return hours.toFixed(0) + ' h';
  return (hours / 24).toFixed(0) + ' d';
}

export function ago(ms: number | null | undefined): string {
  if (!ms) return '–';
  return duration(Math.max(0, Date.now() - ms)) + ' ago';
}

export function time(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** JSON on one line when it is short, indented otherwise. */
export function pretty(value: unknown): string {
  const line = JSON.stringify(value);
  return line !== undefined && line.length <= 80 ? line : JSON.stringify(value, null, 2);
}

/** A state badge. */
export function badge(state: string): HTMLElement {
  return h('span', { class: `badge ${state}` }, state);
}

/** Shows a message in the live region (read out by screen readers). */
export function notify(message: string, kind: 'ok' | 'error' = 'ok'): void {
  const el = document.getElementById('notice');
  if (!el) return;
  noticeAt = Date.now();
  fill(el, h('p', { class: kind }, message));
}

let noticeAt = 0;

/** Clears the message when it is older than a page change's own. */
export function clearOldNotice(): void {
  if (Date.now() - noticeAt > 1500) document.getElementById('notice')?.replaceChildren();
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A table from a header row and body rows. */
export function table(head: string[], rows: (Child | Child[])[][], attrs: Attrs = {}): HTMLTableElement {
  return h(
    'table',
    attrs,
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      {},
      rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))),
    ),
  );
}

/** Calls `f` now and every `ms` until `signal` aborts; a slow call delays the next. */
export function every(ms: number, f: () => Promise<void>, signal: AbortSignal): void {
  const tick = async () => {
    if (signal.aborted) return;
    try {
      await f();
    } catch (e) {
      if (!signal.aborted) notify(errorText(e), 'error');
    }
    if (!signal.aborted) window.setTimeout(tick, ms);
  };
  void tick();
}
