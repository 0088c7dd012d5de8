// Topology documents as YAML text: a block-style writer for documents the
// server returns, and the line of a validation problem's path (such as
// `operators[1].parallelism`) in text a user wrote, block or flow style.

const PLAIN = /^[A-Za-z_/.][A-Za-z0-9_ ./@:+-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|y|n|~)$/i;

function scalar(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const text = String(v);
  const plain =
    PLAIN.test(text) &&
    !RESERVED.test(text) &&
    !text.includes(': ') &&
    !text.includes(' #') &&
    !text.endsWith(' ') &&
    !text.endsWith(':');
  return plain ? text : JSON.stringify(text);
}

function isEmpty(v: unknown): boolean {
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === 'object' && v !== null && Object.keys(v).length === 0;
}

function isScalar(v: unknown): boolean {
  return v === null || typeof v !== 'object' || isEmpty(v);
}

function inline(v: unknown): string {
  if (Array.isArray(v)) return '[]';
  if (typeof v === 'object' && v !== null) return '{}';
  return scalar(v);
}

/**
 * Keys in the order a person writes a topology (the server's JSON has
 * them sorted): names first, then what a node is, what it reads, how it
 * runs; keys not listed keep their order, after these.
 */
const KEY_ORDER = [
  'name',
  'sources',
  'operators',
  'sinks',
  'module',
  'stream',
  'file',
  'input',
  'key_by',
  'parallelism',
  'config',
];

function ordered(v: Record<string, unknown>): [string, unknown][] {
  const rank = (k: string) => {
    const i = KEY_ORDER.indexOf(k);
    return i < 0 ? KEY_ORDER.length : i;
  };
  return Object.entries(v).sort((a, b) => rank(a[0]) - rank(b[0]));
}

/** `value` as block-style YAML (documents are at most 64 levels deep). */
export function toYaml(value: unknown): string {
  const out: string[] = [];
  write(value, 0, out);
  return out.join('\n') + '\n';
}

function write(v: unknown, indent: number, out: string[]): void {
  const pad = ' '.repeat(indent);
  if (Array.isArray(v)) {
    for (const item of v) {
      if (isScalar(item)) {
        out.push(`${pad}- ${inline(item)}`);
      } else if (Array.isArray(item)) {
        out.push(`${pad}-`);
        write(item, indent + 2, out);
      } else {
        // The item's first key goes on the dash line.
        const start = out.length;
        write(item, indent + 2, out);
        out[start] = `${pad}- ${out[start].slice(indent + 2)}`;
      }
    }
    return;
  }
  if (typeof v === 'object' && v !== null) {
    for (const [k, val] of ordered(v as Record<string, unknown>)) {
      if (isScalar(val)) {
        out.push(`${pad}${scalar(k)}: ${inline(val)}`);
      } else {
        out.push(`${pad}${scalar(k)}:`);
        write(val, indent + 2, out);
      }
    }
    return;
  }
  out.push(pad + scalar(v));
}

function segments(path: string): (string | number)[] | null {
  const out: (string | number)[] = [];
  const re = /([^.[\]]+)|\[(\d+)\]/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(path))) out.push(m[2] !== undefined ? Number(m[2]) : m[1]);
  return out.length && !path.startsWith('(') ? out : null;
}

function escapeRe(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function meaningful(line: string): boolean {
  const t = line.trim();
  return t !== '' && !t.startsWith('#');
}

function leading(line: string): number {
  return line.length - line.trimStart().length;
}

/**
 * The 0-based line of `path` in `text`, or the nearest line found on the
 * way (the list item, the section) when the exact one is not written out;
 * `null` when not even the first part is found.
 */
export function locate(text: string, path: string): number | null {
  const segs = segments(path);
  if (!segs) return null;
  const lines = text.split('\n');
  let from = 0;
  let to = lines.length;
  let found: number | null = null;
  for (const seg of segs) {
    if (typeof seg === 'string') {
      const key = new RegExp(`^(\\s*(?:-\\s+)?)(["']?)${escapeRe(seg)}\\2\\s*:`);
      const anyKey = /^(\s*(?:-\s+)?)["']?[^\s:"'#-][^:"']*["']?\s*:/;
      let level = Infinity;
      for (let i = from; i < to; i++) {
        const m = anyKey.exec(lines[i]);
        if (m) level = Math.min(level, m[1].length);
      }
      let at = -1;
      for (let i = from; i < to && at < 0; i++) {
        const m = key.exec(lines[i]);
        if (m && m[1].length === level) at = i;
      }
      if (at < 0) {
        // Flow style (`{ name: a, parallelism: 2 }`): the line that has it.
        const flow = new RegExp(`(^|[{,\\s])["']?${escapeRe(seg)}["']?\\s*:`);
        const start = found ?? from;
        for (let i = start; i < to; i++) if (flow.test(lines[i])) return i;
        return found;
      }
      const indent = level;
      let end = at + 1;
      while (end < to) {
        const l = lines[end];
        if (meaningful(l) && (leading(l) < indent || (leading(l) === indent && !l.trimStart().startsWith('-')))) break;
        end++;
      }
      found = at;
      from = at + 1;
      to = end;
    } else {
      let level = Infinity;
      for (let i = from; i < to; i++) {
        if (/^\s*-(\s|$)/.test(lines[i])) level = Math.min(level, leading(lines[i]));
      }
      const items: number[] = [];
      for (let i = from; i < to; i++) {
        if (/^\s*-(\s|$)/.test(lines[i]) && leading(lines[i]) === level) items.push(i);
      }
      if (seg >= items.length) return found; // flow list `[a, b]` or too few items
      const at = items[seg];
      found = at;
      from = at;
      to = seg + 1 < items.length ? items[seg + 1] : to;
    }
  }
  return found;
}

/** The topology's name in a JSON or YAML document, if it has one. */
export function documentName(text: string): string | null {
  try {
    const doc = JSON.parse(text);
    return typeof doc?.name === 'string' ? doc.name : null;
  } catch {
    const m = /^name\s*:\s*(.+?)\s*(#.*)?$/m.exec(text);
    if (!m) return null;
    return m[1].replace(/^(["'])(.*)\1$/, '$2');
  }
}
