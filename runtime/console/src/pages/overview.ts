// Overview: topologies with their state, rates, errors, dead letters and
// last checkpoint; modules; streams with sizes; server health.

import { ModuleVersion, StreamInfo, TopologySummary, get, seg } from '../api';
import { ago, badge, every, bytes, fill, h, num, rate, table } from '../ui';

interface Health {
  status: string;
  version: string;
  uptime_s: number;
  running_topologies: number;
}

export async function overview(main: HTMLElement, _params: unknown, signal: AbortSignal): Promise<void> {
  const health = h('section', { 'aria-labelledby': 'h-health' });
  const tops = h('section', { 'aria-labelledby': 'h-topologies' });
  const mods = h('section', { 'aria-labelledby': 'h-modules' });
  const strs = h('section', { 'aria-labelledby': 'h-streams' });
  fill(
    main,
    h('h1', {}, 'Overview'),
    h('div', { class: 'grid' }, health, mods),
    tops,
    strs,
  );
  // Rates come from two polls of the cumulative counters.
  let last: { at: number; rows: Map<string, TopologySummary> } | null = null;
  every(
    2000,
    async () => {
      const [hl, tl, ml, sl] = await Promise.all([
        get<Health>('/healthz'),
        get<{ topologies: TopologySummary[] }>('/v1/topologies'),
        get<{ modules: ModuleVersion[] }>('/v1/modules'),
        get<{ streams: StreamInfo[] }>('/v1/streams'),
      ]);
      if (signal.aborted) return;
      const now = Date.now();
      const before = last;
      last = { at: now, rows: new Map(tl.topologies.map((t) => [t.name, t])) };
      const perSecond = (t: TopologySummary, f: (t: TopologySummary) => number) => {
        const prev = before?.rows.get(t.name);
        if (!prev || t.state !== 'running') return null;
        return Math.max(0, f(t) - f(prev)) / ((now - before!.at) / 1000);
      };
      fill(
        health,
        h('h2', { id: 'h-health' }, 'Server'),
        h(
          'dl',
          { class: 'facts' },
          h('dt', {}, 'Health'),
          h('dd', {}, badge(hl.status)),
          h('dt', {}, 'Version'),
          h('dd', {}, hl.version),
          h('dt', {}, 'Up for'),
          h('dd', {}, `${Math.floor(hl.uptime_s / 60)} min ${hl.uptime_s % 60} s`),
          h('dt', {}, 'Running topologies'),
          h('dd', {}, String(hl.running_topologies)),
        ),
      );
      fill(
        tops,
        h('h2', { id: 'h-topologies' }, 'Topologies'),
        tl.topologies.length === 0
          ? h('p', { class: 'muted' }, 'No topologies yet: ', h('a', { href: '#/new' }, 'write one'), '.')
          : table(
              ['Name', 'State', 'In from sources', 'Out to sinks', 'Errors', 'Dead letters', 'Last checkpoint', 'Last error'],
              tl.topologies.map((t) => [
                h('a', { href: `#/topologies/${seg(t.name)}` }, t.name),
                badge(t.state),
                h('span', { 'data-rate-in': t.name }, rate(perSecond(t, (x) => x.events_from_sources))),
                rate(perSecond(t, (x) => x.events_to_sinks)),
                num(t.errors),
                num(t.dead_lettered),
                t.last_checkpoint ? `#${t.last_checkpoint.id}, ${ago(t.last_checkpoint.started_at)}` : '–',
                t.last_error ? h('span', { class: 'error' }, t.last_error) : '',
              ]),
              { id: 'topologies' },
            ),
      );
      fill(
        mods,
        h('h2', { id: 'h-modules' }, h('a', { href: '#/modules' }, 'Modules')),
        ml.modules.length === 0
          ? h('p', { class: 'muted' }, 'None uploaded: ', h('a', { href: '#/modules' }, 'upload one'), '.')
          : h(
              'ul',
              { class: 'plain' },
              ml.modules.map((m) => h('li', {}, h('code', {}, m.reference), ` ${bytes(m.size)}`)),
            ),
      );
      fill(
        strs,
        h('h2', { id: 'h-streams' }, h('a', { href: '#/streams' }, 'Streams')),
        sl.streams.length === 0
          ? h('p', { class: 'muted' }, 'No streams yet.')
          : table(
              ['Stream', 'Events held', 'Next offset', 'Size'],
              sl.streams.map((s) => [
                h('a', { href: `#/streams/${seg(s.name)}` }, s.name),
                num(s.end_offset - s.start_offset),
                num(s.end_offset),
                bytes(s.bytes),
              ]),
            ),
      );
      // When the overview first shows the server's data (read by the
      // browser test as the overview's time to content).
      if (performance.getEntriesByName('weir-overview-ready').length === 0) performance.mark('weir-overview-ready');
    },
    signal,
  );
}
