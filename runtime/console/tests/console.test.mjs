// Browser test of the console against a real `weir serve` with real guest
// modules, in Debian's Chromium driven by playwright-core (no browser
// download). Run by `cargo xtask console-test` (and `cargo xtask test`):
//
//   WEIR_BIN=target/debug/weir WEIR_GUEST_DIR=target/guests \
//   WEIR_SCREENSHOTS=target/console-screenshots node tests/console.test.mjs
//
// It uploads modules through the page (drag and drop, file picker), sees a
// validation problem at its path in the editor, applies and starts a
// word-count topology, produces events, checks the drawn graph against the
// document and that a rate changes between polls, follows the output
// stream, looks up a key's state, sees a dead letter and the refusal to
// delete a pinned module, stops with a savepoint, and asks for the token
// on a server that has one. Screenshots of every page go to
// WEIR_SCREENSHOTS; the overview's first paint and the bundle size are
// printed (and written to report.json there).

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`set ${name} (see the comment at the top of this file)`);
  return v;
};
const WEIR = env('WEIR_BIN');
const GUESTS = env('WEIR_GUEST_DIR');
const SHOTS = env('WEIR_SCREENSHOTS');
const CONSOLE_DIR = process.env.WEIR_CONSOLE_DIR;
const CHROMIUM = process.env.WEIR_CHROMIUM ?? '/usr/bin/chromium';
/** Longest wait for anything the page should show. */
const WAIT_MS = 30_000;

mkdirSync(SHOTS, { recursive: true });
const started = Date.now();
const children = [];
const dirs = [];

/** Starts `weir serve` on a free port; resolves to its URL. */
async function serve(extraEnv = {}) {
  const data = mkdtempSync(join(tmpdir(), 'weir-console-'));
  dirs.push(data);
  const child = spawn(WEIR, ['serve', '--listen', '127.0.0.1:0', '--data-dir', data], {
    env: { ...process.env, WEIR_TOKEN: '', WEIR_LOG: 'warn', ...extraEnv },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const line = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`weir serve exited with ${code} before listening`)));
  });
  const m = /listening on (\S+)/.exec(line);
  if (!m) throw new Error(`weir serve said: ${line}`);
  return m[1];
}

async function api(url, method, path, body, headers = {}) {
  const res = await fetch(url + path, {
    method,
    body,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Waits until `f` returns a truthy value; returns it. */
async function until(what, f, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

const lines = (n, from) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ key: `l${from + i}`, value: `the weir holds the river ${from + i}` })).join('\n');

const DOCUMENT = (parallelism) => `name: word-count
dead_letter_stream: dead
checkpoint:
  interval_ms: 300
sources:
  - name: lines
    stream: lines
operators:
  - name: split
    module: split-words
    input: lines
    on_error: dead-letter
  - name: count
    module: word-count
    input: split
    key_by: key
    parallelism: ${parallelism}
  - name: pass
    module: identity
    input: count
    parallelism: ${parallelism}
sinks:
  - name: out
    stream: counts
    input: pass
`;

async function main() {
  const url = await serve();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  const report = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const outside = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(url)) outside.push(r.url());
    });
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));

    // ---- overview: the real console, not the placeholder; first paint ----
    await page.goto(url + '/');
    await page.waitForSelector('h1:text("Overview")');
    assert.equal(await page.locator('[data-weir-placeholder]').count(), 0, 'the placeholder page was served: build the console');
    await page.waitForSelector('#h-health');
    await page.waitForFunction(() => performance.getEntriesByName('weir-overview-ready').length > 0);
    const paint = await page.evaluate(() => {
      const fcp = performance.getEntriesByName('first-contentful-paint')[0];
      const nav = performance.getEntriesByType('navigation')[0];
      const ready = performance.getEntriesByName('weir-overview-ready')[0];
      return {
        first_contentful_paint_ms: fcp?.startTime ?? null,
        dom_content_loaded_ms: nav?.domContentLoadedEventEnd ?? null,
        data_shown_ms: ready?.startTime ?? null,
      };
    });
    report.overview = paint;
    await shot(page, '1-overview-empty');

    // ---- modules: upload by drag and drop and by the file picker ----
    await page.click('nav a[href="#/modules"]');
    await page.waitForSelector('#drop');
    const splitBytes = readFileSync(join(GUESTS, 'split_words.wasm')).toString('base64');
    const transfer = await page.evaluateHandle(({ b64, name }) => {
      const bin = atob(b64);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], name, { type: 'application/wasm' }));
      return dt;
    }, { b64: splitBytes, name: 'split_words.wasm' });
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: transfer });
    await page.waitForSelector('#modules code:text("split-words@1")', { timeout: WAIT_MS });
    await page.setInputFiles('#module-file', join(GUESTS, 'word_count.wasm'));
    await page.waitForSelector('#modules code:text("word-count@1")', { timeout: WAIT_MS });
    // A third through the API: the one chained after word-count.
    await api(url, 'POST', '/v1/modules/identity', readFileSync(join(GUESTS, 'identity.wasm')), { 'Content-Type': 'application/wasm' });
    const stored = await api(url, 'GET', '/v1/modules');
    assert.deepEqual(stored.modules.map((m) => m.reference).sort(), ['identity@1', 'split-words@1', 'word-count@1']);
    assert.deepEqual(stored.modules.map((m) => m.language), ['Rust', 'Rust', 'Rust']);

    // ---- new topology: a problem at its path first, then apply ----
    await page.click('nav a[href="#/new"]');
    await page.waitForSelector('#document');
    const bad = DOCUMENT(0);
    await page.fill('#document', bad);
    const problem = page.locator('#problems li[data-path="operators[1].parallelism"]');
    await problem.waitFor({ timeout: WAIT_MS });
    const badLine = bad.split('\n').findIndex((l) => l.includes('parallelism: 0')) + 1;
    assert.equal(await problem.getAttribute('data-line'), String(badLine), 'the problem is shown at the line of its path');
    await page.waitForSelector(`.gutter .bad[data-line="${badLine}"]`);
    await problem.locator('button').click();
    const selected = await page.evaluate(() => {
      const a = document.getElementById('document');
      return a.value.slice(a.selectionStart, a.selectionEnd);
    });
    assert.match(selected, /parallelism: 0/, 'clicking the problem selects its line');
    await shot(page, '2-editor-problem');
    // Flow style too: the problem's line is the list item's.
    const flow = [
      'name: word-count',
      'sources: [{ name: lines, stream: lines }]',
      'operators:',
      '  - { name: split, module: split-words, input: lines }',
      '  - { name: count, module: word-count, input: split, key_by: key, parallelism: 0 }',
      'sinks: [{ name: out, stream: counts, input: count }]',
    ].join('\n');
    await page.fill('#document', flow);
    await page.waitForSelector('#problems li[data-path="operators[1].parallelism"][data-line="5"]', { timeout: WAIT_MS });
    await page.fill('#document', DOCUMENT(2));
    await page.waitForSelector('#problems li.ok');
    await page.click('#apply');
    await page.waitForURL(/#\/topologies\/word-count$/);

    // ---- topology: the graph equals the document ----
    await page.waitForSelector('#graph [data-node]');
    const drawn = await page.evaluate(() => ({
      nodes: [...document.querySelectorAll('#graph [data-node]')].map((n) => `${n.dataset.kind}:${n.dataset.node}:${n.dataset.parallelism}`).sort(),
      edges: [...document.querySelectorAll('#graph [data-edge]')].map((e) => e.dataset.edge).sort(),
    }));
    assert.deepEqual(drawn, {
      nodes: ['operator:count:2', 'operator:pass:2', 'operator:split:1', 'sink:out:1', 'source:lines:1'],
      edges: ['count->pass', 'lines->split', 'pass->out', 'split->count'],
    });
    // count and pass run as one task: drawn boxed together.
    await page.waitForSelector('#graph [data-chain="count,pass"]');
    assert.equal(await page.locator('#graph [data-chain]').count(), 1);

    // ---- modules: delete refused while pinned ----
    await page.click('nav a[href="#/modules"]');
    await page.click('[data-delete="word-count@1"]');
    await page.waitForSelector('#notice .error');
    const refusal = await page.textContent('#notice');
    assert.match(refusal, /word-count@1 was not deleted/);
    assert.match(refusal, /word-count/);
    await shot(page, '3-modules');
    await page.goBack();
    await page.waitForURL(/#\/topologies\/word-count$/);

    // ---- start; events through the streams page, then more by the API ----
    await page.click('#start');
    await page.waitForSelector('#state .badge.running', { timeout: WAIT_MS });
    await page.click('nav a[href="#/streams"]');
    await page.fill('#stream-name', 'lines');
    await page.press('#stream-name', 'Enter');
    await page.fill('#produce-text', lines(5, 0) + '\n' + JSON.stringify({ key: 'bad', value: { not: 'a string' } }));
    await page.click('#produce');
    await page.waitForSelector('#notice :text("Produced 6 event(s)")');
    await page.goBack();
    await page.goBack();
    await page.waitForSelector('#graph [data-node="split"]');

    // A rate that changes between two polls: events flow for a while, then stop.
    let produced = 6;
    let producing = true;
    const producer = (async () => {
      while (producing) {
        await api(url, 'POST', '/v1/streams/lines/events', lines(40, produced), { 'Content-Type': 'application/x-ndjson' });
        produced += 40;
        await new Promise((r) => setTimeout(r, 150));
      }
    })();
    const rateOf = () => page.getAttribute('#graph [data-node="split"]', 'data-rate-in');
    const first = await until('a positive rate into split', async () => {
      const r = Number(await rateOf());
      return r > 0 ? r : null;
    });
    await until('an edge rate label', async () => (await page.getAttribute('#graph [data-edge="split->count"]', 'data-rate')) !== '');
    await shot(page, '4-topology-running');
    producing = false;
    await producer;
    const second = await until('the rate into split to change', async () => {
      const r = Number(await rateOf());
      return r !== first ? String(r) : null;
    });
    report.rates = { first, second: Number(second) };
    // The source node shows how far its stream is ahead of it.
    const lag = await until('the source lag on the graph', async () => {
      const v = await page.getAttribute('#graph [data-node="lines"]', 'data-lag');
      return v !== null && v !== '' ? v : null;
    });
    assert.ok(Number(lag) >= 0, `lag ${lag}`);
    assert.match(await page.textContent('#graph [data-node="lines"]'), /lag \d/);

    // A node's instances, opened by keyboard.
    await page.focus('#graph [data-node="count"]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#instances tbody tr:nth-child(2)');
    assert.equal(await page.locator('#instances tbody tr').count(), 2, 'count runs two instances');
    await page.waitForSelector('#checkpoint-chart .uplot', { timeout: WAIT_MS });
    await shot(page, '5-topology-details');

    // ---- follow the output stream ----
    await page.goto(url + '/#/streams/counts');
    await page.waitForSelector('#follow');
    await page.click('#follow');
    await page.waitForSelector('#follow[aria-pressed="true"]');
    const shown = await until('followed events', async () => {
      const n = await page.locator('#events .event').count();
      return n > 0 ? n : null;
    });
    const before = Number(await page.getAttribute('#events .event:last-child', 'data-offset'));
    await api(url, 'POST', '/v1/streams/lines/events', JSON.stringify({ key: 'late', value: 'zebra crossing' }), { 'Content-Type': 'application/x-ndjson' });
    await until('new events while following', async () => Number(await page.getAttribute('#events .event:last-child', 'data-offset')) > before);
    assert.ok((await page.locator('#events .event').count()) > shown);
    await page.waitForSelector('#events pre.json:text("zebra")');
    await shot(page, '6-stream-follow');
    await page.click('#follow');

    // ---- state of a key ----
    await page.goto(url + '/#/state?topology=word-count&operator=count&state=count&key=the');
    await page.waitForSelector('#state-operator option[value="count"]', { state: 'attached' });
    await page.click('form.fields button[type="submit"]');
    const value = Number(await (await page.waitForSelector('#state-value')).textContent());
    assert.ok(value >= 2 * 5, `the count of "the" is at least ten, got ${value}`);
    await shot(page, '7-state');

    // ---- dead letters: the object value split-words refused ----
    await page.click('nav a[href="#/dead-letters"]');
    await page.waitForSelector('#dead-letters', { timeout: WAIT_MS });
    const letter = await page.textContent('#dead-letters tbody tr');
    assert.match(letter, /split/);
    assert.match(letter, /expects the value to be a JSON string/);
    await shot(page, '8-dead-letters');

    // ---- a node's recent logs: an operator that logs the events it refuses ----
    await api(url, 'POST', '/v1/modules/poison-trap', readFileSync(join(GUESTS, 'poison_trap.wasm')), { 'Content-Type': 'application/wasm' });
    const noisy = 'name: noisy\nsources: [{ name: in, stream: noisy-in }]\noperators:\n  - { name: p, module: poison-trap, input: in, key_by: key, on_error: skip }\nsinks: [{ name: out, stream: noisy-out, input: p }]\n';
    await api(url, 'PUT', '/v1/topologies/noisy', noisy, { 'Content-Type': 'application/yaml' });
    await api(url, 'POST', '/v1/topologies/noisy/start');
    await api(url, 'POST', '/v1/streams/noisy-in/events', JSON.stringify({ key: 'k', value: 'bad' }), { 'Content-Type': 'application/x-ndjson' });
    await page.goto(url + '/#/topologies/noisy');
    await page.waitForSelector('#graph [data-node="p"]', { timeout: WAIT_MS });
    await page.focus('#graph [data-node="p"]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#logs td:text("refusing a bad event")', { timeout: WAIT_MS });
    await shot(page, '8b-operator-logs');
    await api(url, 'POST', '/v1/topologies/noisy/stop');

    // ---- stop with a savepoint ----
    await page.goto(url + '/#/topologies/word-count');
    await page.waitForSelector('#state .badge.running');
    await page.fill('#savepoint-name', 'before-upgrade');
    await page.click('#stop-savepoint');
    await page.waitForSelector('#state .badge.stopped', { timeout: WAIT_MS });
    await page.waitForSelector('code.savepoint:text("before-upgrade")', { timeout: WAIT_MS });
    const sps = await api(url, 'GET', '/v1/topologies/word-count/savepoints');
    assert.deepEqual(sps.savepoints.map((s) => s.name), ['before-upgrade']);
    await shot(page, '9-topology-stopped');

    // ---- overview with data ----
    await page.click('nav a[href="#/"]');
    await page.waitForSelector('#topologies a:text("word-count")');
    await page.click('nav a[href="#/streams"]');
    await page.waitForSelector('#streams');
    await shot(page, '10-streams');
    await page.click('nav a[href="#/"]');
    await page.waitForSelector('#topologies a:text("word-count")');
    await shot(page, '11-overview');

    assert.deepEqual(outside, [], 'the console asked for nothing outside the server');
    assert.deepEqual(pageErrors, [], 'no script errors');

    // ---- a server with a token: asked for, kept for the tab ----
    const secured = await serve({ WEIR_TOKEN: 'sesame' });
    const tokenPage = await browser.newPage();
    await tokenPage.goto(secured + '/');
    await tokenPage.waitForSelector('#notice .error:text("needs a token")');
    assert.ok(await tokenPage.evaluate(() => document.activeElement?.id === 'token'), 'the token field has the focus');
    await tokenPage.fill('#token', 'sesame');
    await tokenPage.press('#token', 'Enter');
    await tokenPage.waitForSelector('#h-topologies');
    assert.equal(await tokenPage.evaluate(() => sessionStorage.getItem('weir.token')), 'sesame');
    await tokenPage.close();
  } finally {
    await browser.close();
  }

  if (CONSOLE_DIR) {
    let total = 0;
    const files = {};
    for (const f of readdirSync(join(CONSOLE_DIR, 'assets'))) {
      files[f] = statSync(join(CONSOLE_DIR, 'assets', f)).size;
      total += files[f];
    }
    report.bundle = { assets_bytes: total, files };
  }
  report.seconds = (Date.now() - started) / 1000;
  writeFileSync(join(SHOTS, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  console.log(`console test passed in ${report.seconds.toFixed(1)} s; overview first contentful paint ${report.overview.first_contentful_paint_ms?.toFixed(0)} ms, data shown at ${report.overview.data_shown_ms?.toFixed(0)} ms` +
    (report.bundle ? `; bundle ${report.bundle.assets_bytes} bytes` : '') + `; screenshots in ${SHOTS}`);
}

try {
  await main();
} finally {
  for (const c of children) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
