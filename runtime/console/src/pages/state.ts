// State: look up one key of an operator's keyed state (value, map or
// list) in a running topology.

import { TopologyStatus, TopologySummary, get, seg } from '../api';
import { errorText, fill, h, pretty } from '../ui';

export async function stateLookup(main: HTMLElement, params: { query: URLSearchParams }): Promise<void> {
  const q = params.query;
  const topology = h('select', { id: 'state-topology' });
  const operator = h('select', { id: 'state-operator' });
  const stateName = h('input', { id: 'state-name', placeholder: 'as the operator names it', size: 16 });
  const key = h('input', { id: 'state-key', placeholder: 'key (text)', size: 20 });
  const out = h('div', { id: 'state-result', 'aria-live': 'polite' });
  const form = h(
    'form',
    { class: 'fields' },
    h('label', { for: 'state-topology' }, 'Topology'),
    topology,
    h('label', { for: 'state-operator' }, 'Operator'),
    operator,
    h('label', { for: 'state-name' }, 'State'),
    stateName,
    h('label', { for: 'state-key' }, 'Key'),
    key,
    h('span', {}),
    h('button', { type: 'submit' }, 'Look up'),
  );
  fill(main, h('h1', {}, 'State lookup'), h('p', { class: 'muted' }, 'A running topology answers; keys are looked up in the instance that owns them.'), form, out);
  const list = await get<{ topologies: TopologySummary[] }>('/v1/topologies');
  fill(topology, list.topologies.map((t) => h('option', { value: t.name }, `${t.name} (${t.state})`)));
  const loadOperators = async () => {
    if (!topology.value) return;
    const s = await get<TopologyStatus>(`/v1/topologies/${seg(topology.value)}`);
    fill(operator, (s.document.operators ?? []).map((o) => h('option', { value: o.name }, o.name)));
    const wanted = q.get('operator');
    if (wanted) operator.value = wanted;
  };
  topology.addEventListener('change', () => void loadOperators());
  if (q.get('topology')) topology.value = q.get('topology')!;
  stateName.value = q.get('state') ?? '';
  key.value = q.get('key') ?? '';
  await loadOperators();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const path = `/v1/topologies/${seg(topology.value)}/operators/${seg(operator.value)}/state/${seg(stateName.value.trim())}?key=${encodeURIComponent(key.value)}`;
    try {
      const res = await get<Record<string, unknown>>(path);
      const shown =
        res.kind === 'value'
          ? res.value ?? res.value_b64
          : res.kind === 'map'
            ? res.entries
            : res.items;
      fill(
        out,
        h('p', {}, `${res.kind} state `, h('code', {}, String(res.state)), ' of key ', h('code', {}, String(res.key ?? res.key_b64)), ':'),
        h('pre', { class: 'json', id: 'state-value' }, pretty(shown)),
      );
    } catch (err) {
      fill(out, h('p', { class: 'error' }, errorText(err)));
    }
  });
}
