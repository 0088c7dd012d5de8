// One topology: its live graph (rates, errors, late and dead-lettered
// events, watermark lag and backpressure per node and edge), the
// instances of a chosen node, checkpoint history, the lifecycle buttons,
// and its document, editable and checked before it is applied.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import {
  Checkpoint,
  InstanceMetrics,
  MetricsSnapshot,
  TopologyStatus,
  call,
  get,
  inputNames,
  postJson,
  seg,
} from '../api';
import { DocumentEditor } from '../editor';
import { Drawing, draw, graphOf } from '../graph';
import { toYaml } from '../yaml';
import { ago, badge, bytes, duration, errorText, every, fill, h, notify, num, rate, s, table } from '../ui';

/** One operator's instances summed. */
interface Totals {
  events_in: number;
  events_out: number;
  errors: number;
  dead_lettered: number;
  late: number;
  blocked_ms: number;
  /** Lowest watermark of its instances (what holds event time back). */
  watermark: number | null;
  instances: number;
}

function totals(instances: InstanceMetrics[]): Map<string, Totals> {
  const out = new Map<string, Totals>();
  for (const m of instances) {
    const t = out.get(m.operator) ?? {
      events_in: 0,
      events_out: 0,
      errors: 0,
      dead_lettered: 0,
      late: 0,
      blocked_ms: 0,
      watermark: null,
      instances: 0,
    };
    t.events_in += m.events_in;
    t.events_out += m.events_out;
    t.errors += m.errors;
    t.dead_lettered += m.dead_lettered;
    t.late += m.late;
    t.blocked_ms += m.blocked_ms;
    t.instances += 1;
    if (m.watermark !== null) t.watermark = t.watermark === null ? m.watermark : Math.min(t.watermark, m.watermark);
    out.set(m.operator, t);
  }
  return out;
}

/** Backpressure classes by the share of time spent blocked sending. */
function pressure(share: number | null): string {
  if (share === null) return 'bp-none';
  if (share >= 0.5) return 'bp-high';
  if (share >= 0.1) return 'bp-mid';
  return 'bp-low';
}

export async function topology(main: HTMLElement, params: { rest: string[] }, signal: AbortSignal): Promise<void> {
  const name = params.rest[0];
  const base = `/v1/topologies/${seg(name)}`;
  let status = await get<TopologyStatus>(base);

  const head = h('div', { class: 'topology-head' });
  const controls = h('div', { class: 'actions', id: 'controls' });
  const graphBox = h('div', { class: 'graph-box', id: 'graph-box' });
  const details = h('section', { id: 'details', 'aria-live': 'polite', 'aria-labelledby': 'h-details' });
  const chartBox = h('div', { id: 'checkpoint-chart' });
  const checkpointList = h('div', {});
  const editor = new DocumentEditor(toYaml(status.document), `Document of topology ${name} (YAML or JSON)`);
  const applyBtn = h('button', { type: 'button', id: 'apply' }, 'Apply');
  fill(
    main,
    head,
    controls,
    h('section', { 'aria-labelledby': 'h-graph' }, h('h2', { id: 'h-graph' }, 'Graph'), h('p', { class: 'muted legend' }, 'Per node: events in/out per second, errors, late, dead-lettered, watermark lag; colour: share of time blocked by backpressure (',
      h('span', { class: 'bp-low swatch' }, 'under 10%'), ' ', h('span', { class: 'bp-mid swatch' }, '10–50%'), ' ', h('span', { class: 'bp-high swatch' }, 'over 50%'), '). Tab to a node and press Enter for its instances.'), graphBox),
    details,
    h('section', { 'aria-labelledby': 'h-checkpoints' }, h('h2', { id: 'h-checkpoints' }, 'Checkpoints'), chartBox, checkpointList),
    h(
      'section',
      { 'aria-labelledby': 'h-document' },
      h('h2', { id: 'h-document' }, 'Document'),
      h('p', { class: 'muted' }, 'Edit and apply while stopped; problems show with their path and line as you type.'),
      editor.el,
      h('p', { class: 'actions' }, applyBtn),
    ),
  );

  // ---- lifecycle ----
  const savepointName = h('input', { id: 'savepoint-name', size: 16, 'aria-label': 'Savepoint name' });
  savepointName.value = `sp-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}`;
  const fromSavepoint = h('select', { id: 'from-savepoint', 'aria-label': 'Start from savepoint' });
  const act = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
      notify(`${what}: done.`);
    } catch (e) {
      notify(`${what} failed: ${errorText(e)}`, 'error');
    }
    await refresh();
  };
  const button = (id: string, label: string, f: () => Promise<unknown>) =>
    h('button', { type: 'button', id, onclick: () => void act(label, f) }, label);
  const startBtn = button('start', 'Start', () =>
    postJson(`${base}/start`, fromSavepoint.value ? { savepoint: fromSavepoint.value } : {}),
  );
  const stopBtn = button('stop', 'Stop', () => postJson(`${base}/stop`, {}));
  const stopSpBtn = button('stop-savepoint', 'Stop with savepoint', () =>
    postJson(`${base}/stop`, { savepoint: savepointName.value.trim() }),
  );
  const spBtn = button('savepoint', 'Savepoint now', () => postJson(`${base}/savepoints`, { name: savepointName.value.trim() }));

  // ---- graph ----
  let drawing: Drawing | null = null;
  let drawnFor = '';
  let selected: string | null = null;
  let prev: MetricsSnapshot | null = null;
  let snap: MetricsSnapshot | null = null;

  const redraw = () => {
    const key = JSON.stringify([status.document, snap?.chains ?? []]);
    if (key === drawnFor && drawing) return;
    drawnFor = key;
    drawing = draw(graphOf(status.document), snap?.chains ?? [], (n) => {
      selected = n;
      showDetails();
    });
    fill(graphBox, drawing.svg);
  };

  const perSecond = (f: (t: Totals) => number, now?: Totals, before?: Totals): number | null => {
    if (!now || !before || !snap || !prev || snap.taken_at <= prev.taken_at) return null;
    return Math.max(0, f(now) - f(before)) / ((snap.taken_at - prev.taken_at) / 1000);
  };

  const paint = () => {
    if (!drawing) return;
    const cur = totals(snap?.instances ?? []);
    const old = totals(prev?.instances ?? []);
    const running = status.state === 'running';
    for (const [n, view] of drawing.nodes) {
      const t = cur.get(n);
      const o = old.get(n);
      if (view.node.kind !== 'operator') {
        view.box.setAttribute('class', 'box');
        const ep = (snap?.endpoints ?? []).find((x) => x.name === n);
        const lags = (ep?.splits ?? []).map((s) => s.lag).filter((l): l is number => l !== null);
        const lag = lags.length ? lags.reduce((a, b) => a + b, 0) : null;
        const counted = Object.entries(ep?.counters ?? {}).map(([k, v]) => `${k.replace(/_/g, ' ')} ${num(v)}`);
        view.lines[1].textContent = lag === null ? '' : `lag ${num(lag)}${ep && ep.splits.length > 1 ? ` over ${ep.splits.length} splits` : ''}`;
        view.lines[2].textContent = counted.slice(0, 2).join(' · ');
        view.el.setAttribute('data-lag', lag === null ? '' : String(lag));
        continue;
      }
      const inRate = running ? perSecond((x) => x.events_in, t, o) : null;
      const outRate = running ? perSecond((x) => x.events_out, t, o) : null;
      view.lines[1].textContent = `in ${rate(inRate)} · out ${rate(outRate)}`;
      view.lines[2].textContent = t ? `err ${num(t.errors)} · late ${num(t.late)} · dead ${num(t.dead_lettered)}` : running ? '' : 'not running';
      const lag = t?.watermark !== null && t?.watermark !== undefined && snap ? snap.taken_at - t.watermark : null;
      const blocked =
        t && o && snap && prev && snap.taken_at > prev.taken_at
          ? Math.min(1, (t.blocked_ms - o.blocked_ms) / ((snap.taken_at - prev.taken_at) * t.instances))
          : null;
      view.lines[3].textContent = `wm lag ${lag === null ? '–' : duration(lag)} · blocked ${blocked === null ? '–' : Math.round(blocked * 100) + '%'}`;
      view.box.setAttribute('class', `box ${pressure(running ? blocked : null)}`);
      view.el.setAttribute('data-rate-in', inRate === null ? '' : inRate.toFixed(3));
      view.el.setAttribute('data-events-in', String(t?.events_in ?? 0));
      view.el.setAttribute('data-errors', String(t?.errors ?? 0));
    }
    for (const e of drawing.edges) {
      // An operator's output goes whole to each reader; a source's is
      // known from its reader when that reads nothing else.
      const fromOp = cur.has(e.edge.from) || drawing.nodes.get(e.edge.from)?.node.kind === 'operator';
      let r: number | null = null;
      if (running && fromOp) r = perSecond((x) => x.events_out, cur.get(e.edge.from), old.get(e.edge.from));
      else if (running) {
        const reader = status.document.operators?.find((op) => op.name === e.edge.to);
        if (reader && inputNames(reader.input).length === 1) r = perSecond((x) => x.events_in, cur.get(e.edge.to), old.get(e.edge.to));
      }
      e.label.textContent = r === null ? '' : rate(r);
      e.el.setAttribute('data-rate', r === null ? '' : r.toFixed(3));
    }
    if (selected) showDetails();
  };

  // ---- a node's instances ----
  const showDetails = () => {
    if (!selected || !drawing) {
      fill(details);
      return;
    }
    const view = drawing.nodes.get(selected);
    if (!view) return;
    const n = view.node;
    const mine = (snap?.instances ?? []).filter((m) => m.operator === n.name);
    const bounds = snap?.latency_bounds_us ?? [];
    const counts = mine.reduce<number[]>((acc, m) => m.latency_counts.map((c, i) => c + (acc[i] ?? 0)), []);
    const counters: Record<string, number> = {};
    for (const m of mine) for (const [k, v] of Object.entries(m.counters)) counters[k] = (counters[k] ?? 0) + v;
    const logs = mine
      .flatMap((m) => (m.logs ?? []).map((l) => ({ ...l, instance: m.instance })))
      .sort((a, b) => a.at - b.at)
      .slice(-50);
    fill(
      details,
      h('h2', { id: 'h-details' }, `${n.kind} `, h('code', {}, n.name), n.kind === 'operator' ? ` ×${n.parallelism}` : ''),
      h('p', { class: 'muted' }, n.detail, ' ', h('button', { type: 'button', class: 'link', onclick: () => { selected = null; showDetails(); } }, 'close')),
      n.kind !== 'operator'
        ? h('p', {}, n.detail.startsWith('stream ') ? h('a', { href: `#/streams/${seg(n.detail.slice(7))}` }, `Browse ${n.detail}`) : '')
        : mine.length === 0
          ? h('p', { class: 'muted' }, 'No instances: the topology is not running.')
          : [
              table(
                ['Instance', 'In', 'Out', 'Errors', 'Late', 'Dead letters', 'Watermark', 'Blocked'],
                mine.map((m) => [
                  String(m.instance),
                  num(m.events_in),
                  num(m.events_out),
                  num(m.errors),
                  num(m.late),
                  num(m.dead_lettered),
                  m.watermark === null ? '–' : new Date(m.watermark).toISOString(),
                  duration(m.blocked_ms),
                ]),
                { id: 'instances' },
              ),
              h('h3', {}, 'Batch latency'),
              histogram(bounds, counts),
              h('h3', {}, 'Operator counters'),
              Object.keys(counters).length
                ? table(['Counter', 'Value'], Object.entries(counters).map(([k, v]) => [k, num(v)]))
                : h('p', { class: 'muted' }, 'The operator keeps none.'),
              h('h3', {}, 'Recent logs'),
              logs.length
                ? table(
                    ['Time', 'Instance', 'Level', 'Message'],
                    logs.map((l) => [new Date(l.at).toISOString(), String(l.instance), l.level, l.message]),
                    { id: 'logs' },
                  )
                : h('p', { class: 'muted' }, 'Nothing logged yet.'),
              h('p', {}, h('a', { href: `#/state?topology=${seg(name)}&operator=${seg(n.name)}` }, 'Look up its state')),
            ],
    );
  };

  // ---- checkpoints ----
  let chart: uPlot | null = null;
  const showCheckpoints = async () => {
    const res = await get<{ checkpoints: Checkpoint[]; savepoints: { name: string; bytes: number; created_at: number }[] }>(`${base}/checkpoints`);
    const cps = [...res.checkpoints].sort((a, b) => a.id - b.id);
    const keep = fromSavepoint.value;
    fill(fromSavepoint, h('option', { value: '' }, 'last checkpoint'), res.savepoints.map((sp) => h('option', { value: sp.name }, `savepoint ${sp.name}`)));
    fromSavepoint.value = keep;
    const data: uPlot.AlignedData = [
      cps.map((c) => c.started_at / 1000),
      cps.map((c) => c.duration_ms),
      cps.map((c) => c.alignment_ms),
      cps.map((c) => c.bytes),
    ];
    if (cps.length === 0) {
      chart?.destroy();
      chart = null;
      fill(chartBox, h('p', { class: 'muted' }, 'No checkpoints yet.'));
    } else if (!chart) {
      fill(chartBox);
      chart = new uPlot(
        {
          width: Math.min(900, main.clientWidth - 20),
          height: 220,
          title: 'Checkpoint duration, alignment (ms) and size',
          series: [
            {},
            { label: 'duration ms', stroke: '#2563eb', width: 2 },
            { label: 'alignment ms', stroke: '#d97706', width: 2 },
            { label: 'bytes', stroke: '#059669', width: 1, scale: 'bytes', value: (_u, v) => (v === null ? '–' : bytes(v)) },
          ],
          axes: [{}, { label: 'ms' }, { side: 1, scale: 'bytes', size: 70, values: (_u, vals) => vals.map((v) => bytes(v)), grid: { show: false } }],
        },
        data,
        chartBox,
      );
    } else {
      chart.setData(data);
    }
    const last = cps.slice(-5).reverse();
    fill(
      checkpointList,
      last.length
        ? table(
            ['Id', 'Started', 'Duration', 'Alignment', 'Commit', 'Rows', 'Size', ''],
            last.map((c) => [
              String(c.id),
              ago(c.started_at),
              duration(c.duration_ms),
              duration(c.alignment_ms),
              duration(c.commit_ms),
              num(c.rows),
              bytes(c.bytes),
              c.savepoint ? `savepoint ${c.savepoint}` : c.final ? 'final' : '',
            ]),
            { id: 'checkpoints' },
          )
        : '',
      res.savepoints.length ? h('p', {}, 'Savepoints: ', res.savepoints.map((sp) => h('code', { class: 'savepoint' }, sp.name, ' ')).flat()) : '',
    );
  };

  // ---- header and buttons, from the status ----
  const showHead = () => {
    const running = status.state === 'running';
    fill(
      head,
      h('h1', {}, 'Topology ', h('code', {}, name), ' ', h('span', { id: 'state' }, badge(status.state))),
      status.busy ? h('p', { class: 'muted' }, `Busy: ${status.busy}…`) : '',
      status.last_error ? h('p', { class: 'error' }, 'Last error: ', status.last_error) : '',
      h(
        'p',
        { class: 'muted' },
        status.last_checkpoint ? `Last checkpoint #${status.last_checkpoint.id}, ${ago(status.last_checkpoint.started_at)}. ` : 'No checkpoint yet. ',
        h('a', { href: `#/state?topology=${seg(name)}` }, 'State lookup'),
        status.document.dead_letter_stream ? [' · ', h('a', { href: `#/dead-letters/${seg(name)}` }, 'Dead letters')] : '',
      ),
    );
    for (const b of [stopBtn, stopSpBtn]) b.toggleAttribute('disabled', !running);
    startBtn.toggleAttribute('disabled', running);
    fromSavepoint.toggleAttribute('disabled', running);
    applyBtn.toggleAttribute('disabled', running);
    if (!controls.hasChildNodes()) {
      fill(controls, startBtn, ' ', fromSavepoint, ' ', stopBtn, ' ', h('label', { for: 'savepoint-name' }, 'Savepoint '), savepointName, ' ', spBtn, ' ', stopSpBtn);
    }
  };

  const refresh = async () => {
    const [st, m] = await Promise.all([get<TopologyStatus>(base), get<MetricsSnapshot>(`${base}/metrics`)]);
    if (signal.aborted) return;
    status = st;
    prev = snap && snap.state === m.state ? snap : null;
    snap = m;
    showHead();
    redraw();
    paint();
  };

  applyBtn.addEventListener('click', async () => {
    try {
      const st = await call<TopologyStatus>('PUT', base, editor.text, 'application/yaml');
      notify(`Applied the document of ${st.name}.`);
      editor.show([]);
      await refresh();
    } catch (e) {
      editor.showError(e);
      notify(`Not applied: ${errorText(e)}`, 'error');
    }
  });

  every(1000, refresh, signal);
  every(2000, showCheckpoints, signal);
}

/** The batch-latency histogram as bars, one per bucket. */
function histogram(bounds: number[], counts: number[]): SVGElement {
  const total = counts.reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...counts);
  const w = 36;
  const height = 90;
  const labels = [...bounds.map((b) => (b >= 1000 ? `${b / 1000}ms` : `${b}µs`)), 'more'];
  return s(
    'svg',
    { class: 'histogram', width: counts.length * w + 10, height: height + 30, role: 'img', 'aria-label': `Batch latency histogram of ${total} batches` },
    counts.map((c, i) => {
      const bh = (c / max) * height;
      return s(
        'g',
        {},
        s('rect', { x: 5 + i * w, y: height - bh + 5, width: w - 4, height: Math.max(bh, 0.5) }, s('title', {}, `≤ ${labels[i]}: ${c}`)),
        s('text', { x: 5 + i * w + (w - 4) / 2, y: height + 20, 'text-anchor': 'middle', class: 'tick' }, labels[i]),
      );
    }),
  );
}
