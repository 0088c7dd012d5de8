// The console's shell: hash routes to pages, the token form, polling that
// stops when the page changes.

import './style.css';
import { setToken, token, whenUnauthorized } from './api';
import { clearOldNotice, fill, h, notify } from './ui';
import { overview } from './pages/overview';
import { modules } from './pages/modules';
import { streams } from './pages/streams';
import { stateLookup } from './pages/state';
import { deadLetters } from './pages/deadletters';
import { newTopology } from './pages/new';

/** A page: renders into `main`; its polling stops when `signal` aborts. */
export type Page = (main: HTMLElement, params: Params, signal: AbortSignal) => void | Promise<void>;

export interface Params {
  /** Path segments after the page's name, decoded. */
  rest: string[];
  /** The hash's query (`#/state?topology=t`). */
  query: URLSearchParams;
}

const pages: Record<string, Page | (() => Promise<Page>)> = {
  '': overview,
  modules,
  streams,
  state: stateLookup,
  'dead-letters': deadLetters,
  new: newTopology,
  // The graph and chart libraries load with the topology page only.
  topologies: async () => (await import('./pages/topology')).topology,
};

let current: AbortController | null = null;

async function route(): Promise<void> {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  clearOldNotice();
  const main = document.getElementById('main')!;
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/').map(decodeURIComponent);
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav a')) {
    const target = a.getAttribute('href')!.replace(/^#\/?/, '');
    if (target === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  let page = pages[name];
  if (!page) {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, 'No such page: ', h('a', { href: '#/' }, 'back to the overview')));
    return;
  }
  if (page.length === 0) page = await (page as () => Promise<Page>)();
  if (controller.signal.aborted) return;
  fill(main);
  try {
    await (page as Page)(main, { rest, query: new URLSearchParams(query ?? '') }, controller.signal);
  } catch (e) {
    if (!controller.signal.aborted) notify(e instanceof Error ? e.message : String(e), 'error');
  }
}

function setUpToken(): void {
  const form = document.getElementById('token-form') as HTMLFormElement;
  const input = document.getElementById('token') as HTMLInputElement;
  input.value = token();
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    notify(input.value.trim() ? 'Token kept for this browser tab.' : 'Token cleared.');
    void route();
  });
  whenUnauthorized((message) => {
    form.classList.add('wanted');
    notify(`${message}. Enter the server's token above.`, 'error');
    input.focus();
  });
}

setUpToken();
// The skip link moves the focus without touching the hash (the router's).
document.querySelector('.skip')?.addEventListener('click', (e) => {
  e.preventDefault();
  document.getElementById('main')?.focus();
});
window.addEventListener('hashchange', () => void route());
void route();
