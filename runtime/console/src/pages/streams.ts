// Streams: every stream with offsets and size; one stream browsed by
// offset, followed live (fetch streaming of the API's server-sent events),
// and produced into by hand.

import { StreamEvent, StreamInfo, call, follow, get, seg } from '../api';
import { bytes, errorText, fill, h, notify, num, pretty, table, time } from '../ui';

/** Events kept on screen while following. */
const FOLLOW_KEEP = 200;
const PAGE = 20;

export function eventRow(e: StreamEvent): HTMLElement {
  const headers = { ...(e.headers ?? {}), ...(e.headers_b64 ?? {}) };
  return h(
    'li',
    { class: 'event', 'data-offset': e.offset },
    h(
      'div',
      { class: 'event-head' },
      h('span', { class: 'offset' }, `#${e.offset}`),
      ' ',
      e.key !== undefined ? h('span', { class: 'key' }, 'key ', h('code', {}, e.key)) : e.key_b64 ? h('span', { class: 'key' }, 'key (base64) ', h('code', {}, e.key_b64)) : '',
      ' ',
      h('time', { class: 'muted' }, time(e.timestamp)),
      Object.keys(headers).length ? h('span', { class: 'muted' }, ` headers: ${Object.keys(headers).join(', ')}`) : '',
    ),
    h('pre', { class: 'json' }, e.value !== undefined ? pretty(e.value) : `(base64) ${e.value_b64}`),
  );
}


export async function streams(main: HTMLElement, params: { rest: string[] }, signal: AbortSignal): Promise<void> {
  const name = params.rest[0];
  if (!name) return list(main);
  const info = h('p', {});
  const offsetInput = h('input', { id: 'offset', type: 'number', min: 0, size: 8 });
  const events = h('ol', { id: 'events', class: 'events' });
  const followBtn = h('button', { type: 'button', id: 'follow', 'aria-pressed': 'false' }, 'Follow');
  const produceArea = h('textarea', { id: 'produce-text', rows: 4, spellcheck: 'false', 'aria-label': 'Events to produce' });
  produceArea.value = '{"key": "k", "value": {"hello": "weir"}}';
  fill(
    main,
    h('h1', {}, 'Stream ', h('code', {}, name)),
    info,
    h(
      'form',
      { class: 'actions', id: 'browse' },
      h('label', { for: 'offset' }, 'From offset '),
      offsetInput,
      ' ',
      h('button', { type: 'submit' }, 'Read'),
      ' ',
      h('button', { type: 'button', id: 'prev' }, '← Earlier'),
      ' ',
      h('button', { type: 'button', id: 'next' }, 'Later →'),
      ' ',
      followBtn,
    ),
    events,
    h(
      'section',
      { 'aria-labelledby': 'h-produce' },
      h('h2', { id: 'h-produce' }, 'Produce'),
      h('p', { class: 'muted' }, 'JSON lines or a JSON array of {"key"?, "value", "timestamp"?, "headers"?}.'),
      produceArea,
      h('p', {}, h('button', { type: 'button', id: 'produce' }, 'Produce')),
    ),
  );
  let stream: StreamInfo | undefined;
  const loadInfo = async () => {
    const all = await get<{ streams: StreamInfo[] }>('/v1/streams');
    stream = all.streams.find((s) => s.name === name);
    fill(
      info,
      stream
        ? `Offsets ${num(stream.start_offset)} to ${num(stream.end_offset)} (next), ${bytes(stream.bytes)} in ${stream.segments} segment(s).`
        : 'This stream does not exist yet: producing creates it.',
    );
  };
  let following: AbortController | null = null;
  const stopFollowing = () => {
    following?.abort();
    following = null;
    followBtn.setAttribute('aria-pressed', 'false');
    followBtn.textContent = 'Follow';
  };
  signal.addEventListener('abort', stopFollowing);
  const read = async (offset: number) => {
    stopFollowing();
    try {
      const page = await get<{ events: StreamEvent[]; next_offset: number }>(
        `/v1/streams/${seg(name)}/events?offset=${offset}&limit=${PAGE}`,
      );
      offsetInput.value = String(offset);
      fill(events, page.events.length ? page.events.map(eventRow) : h('li', { class: 'muted' }, 'No events from this offset.'));
    } catch (e) {
      notify(errorText(e), 'error');
    }
  };
  (main.querySelector('#browse') as HTMLFormElement).addEventListener('submit', (e) => {
    e.preventDefault();
    void read(Number(offsetInput.value) || 0);
  });
  main.querySelector('#prev')!.addEventListener('click', () =>
    void read(Math.max(stream?.start_offset ?? 0, (Number(offsetInput.value) || 0) - PAGE)),
  );
  main.querySelector('#next')!.addEventListener('click', () =>
    void read(Math.min(stream?.end_offset ?? 0, (Number(offsetInput.value) || 0) + PAGE)),
  );
  followBtn.addEventListener('click', async () => {
    if (following) return stopFollowing();
    await loadInfo();
    const from = stream ? Math.max(stream.start_offset, stream.end_offset - PAGE) : 0;
    fill(events);
    following = new AbortController();
    followBtn.setAttribute('aria-pressed', 'true');
    followBtn.textContent = 'Stop following';
    const mine = following;
    try {
      await follow(
        name,
        from,
        (e) => {
          events.append(eventRow(e));
          while (events.children.length > FOLLOW_KEEP) events.firstElementChild?.remove();
          offsetInput.value = String(e.offset);
        },
        mine.signal,
      );
    } catch (e) {
      if (!mine.signal.aborted) notify(`The follow ended: ${errorText(e)}`, 'error');
    }
    if (following === mine) stopFollowing();
  });
  main.querySelector('#produce')!.addEventListener('click', async () => {
    try {
      const res = await call<{ count: number; first_offset: number }>(
        'POST',
        `/v1/streams/${seg(name)}/events`,
        produceArea.value,
        'application/x-ndjson',
      );
      notify(`Produced ${res.count} event(s) at offset ${res.first_offset}.`);
      await loadInfo();
    } catch (e) {
      notify(`Not produced: ${errorText(e)}`, 'error');
    }
  });
  await loadInfo();
  if (stream) await read(stream.start_offset);
}

async function list(main: HTMLElement): Promise<void> {
  const all = await get<{ streams: StreamInfo[] }>('/v1/streams');
  const open = h('input', { id: 'stream-name', placeholder: 'stream name', size: 20 });
  const form = h(
    'form',
    { class: 'actions' },
    h('label', { for: 'stream-name' }, 'Open or create '),
    open,
    ' ',
    h('button', { type: 'submit' }, 'Open'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (open.value.trim()) location.hash = `#/streams/${seg(open.value.trim())}`;
  });
  fill(
    main,
    h('h1', {}, 'Streams'),
    form,
    all.streams.length
      ? table(
          ['Stream', 'First offset', 'Next offset', 'Size', 'Segments'],
          all.streams.map((s) => [
            h('a', { href: `#/streams/${seg(s.name)}` }, s.name),
            num(s.start_offset),
            num(s.end_offset),
            bytes(s.bytes),
            String(s.segments),
          ]),
          { id: 'streams' },
        )
      : h('p', { class: 'muted' }, 'No streams yet.'),
  );
}
