// Dead letters: the events an operator refused under `on_error:
// dead-letter`, read from the topology's dead-letter stream, with the
// error, operator, key and time the server wrote into their headers.

import { StreamEvent, TopologyStatus, TopologySummary, get, seg } from '../api';
import { every, fill, h, pretty, table, time } from '../ui';

/** Most recent dead letters shown. */
const SHOWN = 100;

export async function deadLetters(main: HTMLElement, params: { rest: string[] }, signal: AbortSignal): Promise<void> {
  const list = await get<{ topologies: TopologySummary[] }>('/v1/topologies');
  const statuses = await Promise.all(list.topologies.map((t) => get<TopologyStatus>(`/v1/topologies/${seg(t.name)}`)));
  const withStream = statuses.filter((s) => s.document.dead_letter_stream);
  const chosen = params.rest[0] ?? withStream[0]?.name;
  const pick = h(
    'nav',
    { 'aria-label': 'Topologies with a dead-letter stream', class: 'actions' },
    withStream.map((s) => [h('a', { href: `#/dead-letters/${seg(s.name)}`, 'aria-current': s.name === chosen ? 'page' : null }, s.name), ' ']).flat(),
  );
  const out = h('div', {});
  fill(
    main,
    h('h1', {}, 'Dead letters'),
    withStream.length
      ? pick
      : h('p', { class: 'muted' }, 'No topology names a dead_letter_stream: set one (and on_error: dead-letter on an operator) to keep the events operators refuse.'),
    out,
  );
  const status = withStream.find((s) => s.name === chosen);
  if (!status) return;
  const stream = status.document.dead_letter_stream!;
  // New dead letters show up as they are committed.
  every(
    3000,
    async () => {
      const info = (await get<{ streams: { name: string; start_offset: number; end_offset: number }[] }>('/v1/streams')).streams.find(
        (s) => s.name === stream,
      );
      if (signal.aborted) return;
      if (!info || info.end_offset === info.start_offset) {
        fill(out, h('p', {}, 'No dead letters in stream ', h('code', {}, stream), '.'));
        return;
      }
      const from = Math.max(info.start_offset, info.end_offset - SHOWN);
      const page = await get<{ events: StreamEvent[] }>(`/v1/streams/${seg(stream)}/events?offset=${from}&limit=${SHOWN}`);
      if (signal.aborted) return;
      const rows = page.events.reverse().map((e) => {
        const hd = e.headers ?? {};
        const at = Number(hd['weir.failed_at']);
        return [
          at ? time(at) : '–',
          hd['weir.operator'] ?? '–',
          h('span', { class: 'error' }, hd['weir.error'] ?? '–'),
          e.key ?? e.key_b64 ?? '',
          h('pre', { class: 'json' }, e.value !== undefined ? pretty(e.value) : `(base64) ${e.value_b64}`),
        ];
      });
      fill(
        out,
        h('p', {}, `${info.end_offset - info.start_offset} held; the newest first, from stream `, h('a', { href: `#/streams/${seg(stream)}` }, stream), '.'),
        table(['Failed at', 'Operator', 'Error', 'Key', 'Event'], rows, { id: 'dead-letters' }),
      );
    },
    signal,
  );
}
