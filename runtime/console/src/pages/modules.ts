// Modules: every module and version with digest, size and the topologies
// that pin it; upload by drag and drop (or the file picker); delete, which
// the server refuses while a topology pins the version.

import { ModuleVersion, TopologyStatus, TopologySummary, call, get, seg } from '../api';
import { bytes, errorText, fill, h, notify, table, time } from '../ui';

/** A module name from a file name: `word_count.wasm` → `word-count`. */
function nameOf(file: string): string {
  return file
    .replace(/\.wasm$/i, '')
    .replace(/[^A-Za-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .toLowerCase();
}

export async function modules(main: HTMLElement, _params: unknown, signal: AbortSignal): Promise<void> {
  const nameInput = h('input', { id: 'module-name', placeholder: 'from the file name', size: 20 });
  const fileInput = h('input', { id: 'module-file', type: 'file', accept: '.wasm,application/wasm' });
  const drop = h(
    'div',
    { id: 'drop', class: 'drop', tabindex: 0, role: 'button', 'aria-label': 'Upload a module: drop a .wasm file here, or press Enter to pick one' },
    h('strong', {}, 'Drop a component (.wasm) here'),
    ' or press Enter to pick one.',
  );
  const listing = h('div', {});
  fill(
    main,
    h('h1', {}, 'Modules'),
    h(
      'section',
      { 'aria-labelledby': 'h-upload' },
      h('h2', { id: 'h-upload' }, 'Upload'),
      h('p', {}, h('label', { for: 'module-name' }, 'Name '), nameInput, ' ', h('label', { for: 'module-file' }, 'File '), fileInput),
      drop,
    ),
    listing,
  );

  const upload = async (file: File) => {
    const name = nameInput.value.trim() || nameOf(file.name);
    drop.classList.add('busy');
    try {
      const v = await call<ModuleVersion>('POST', `/v1/modules/${seg(name)}`, file, 'application/wasm');
      notify(`Uploaded ${file.name} as ${v.reference} (${bytes(v.size)}).`);
      await refresh();
    } catch (e) {
      notify(`Upload of ${file.name} as ${name} refused: ${errorText(e)}`, 'error');
    } finally {
      drop.classList.remove('busy');
    }
  };
  fileInput.addEventListener('change', () => {
    for (const f of fileInput.files ?? []) void upload(f);
    fileInput.value = '';
  });
  drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      fileInput.click();
    }
  });
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    for (const f of e.dataTransfer?.files ?? []) void upload(f);
  });

  const refresh = async () => {
    const [ml, tl] = await Promise.all([
      get<{ modules: ModuleVersion[] }>('/v1/modules'),
      get<{ topologies: TopologySummary[] }>('/v1/topologies'),
    ]);
    // Which topologies pin which version: each topology's pinned references.
    const statuses = await Promise.all(
      tl.topologies.map((t) => get<TopologyStatus>(`/v1/topologies/${seg(t.name)}`)),
    );
    const pinnedBy = new Map<string, string[]>();
    for (const s of statuses) {
      for (const ref of Object.values(s.modules ?? {})) {
        pinnedBy.set(ref, [...(pinnedBy.get(ref) ?? []), s.name]);
      }
    }
    const versions = await Promise.all(
      ml.modules.map((m) => get<{ versions: ModuleVersion[] }>(`/v1/modules/${seg(m.name)}`)),
    );
    if (signal.aborted) return;
    const rows = versions.flatMap((v) => v.versions).map((v) => {
      const users = pinnedBy.get(v.reference) ?? [];
      return [
        h('code', {}, v.reference),
        h('code', { title: v.digest }, v.digest.replace(/^sha256:/, '').slice(0, 12)),
        bytes(v.size),
        v.language ?? h('span', { class: 'muted' }, 'unknown'),
        v.world,
        users.length ? users.map((u, i) => [i ? ', ' : '', h('a', { href: `#/topologies/${seg(u)}` }, u)]).flat() : h('span', { class: 'muted' }, 'none'),
        time(v.created_at),
        h(
          'button',
          {
            type: 'button',
            'data-delete': v.reference,
            onclick: async () => {
              try {
                await call('DELETE', `/v1/modules/${seg(v.name)}/versions/${v.version}`);
                notify(`Deleted ${v.reference}.`);
                await refresh();
              } catch (e) {
                notify(`${v.reference} was not deleted: ${errorText(e)}`, 'error');
              }
            },
          },
          'Delete',
        ),
      ];
    });
    fill(
      listing,
      h('h2', {}, 'Stored'),
      rows.length
        ? table(['Module', 'Digest', 'Size', 'Language', 'World', 'Pinned by', 'Uploaded', ''], rows, { id: 'modules' })
        : h('p', { class: 'muted' }, 'No modules yet.'),
    );
  };
  await refresh();
}
