// The topology document editor: a text area with line numbers, checked
// against the server (`POST /v1/topologies/validate`) as one types, every
// problem listed with its path and marked at its line.

import { ApiError, Problem, call } from './api';
import { locate } from './yaml';
import { errorText, fill, h } from './ui';

export class DocumentEditor {
  readonly el: HTMLElement;
  readonly area: HTMLTextAreaElement;
  private readonly gutter: HTMLElement;
  private readonly list: HTMLElement;
  private marked = new Set<number>();
  private timer = 0;
  private checked = 0;

  constructor(text: string, label: string) {
    this.area = h('textarea', {
      id: 'document',
      spellcheck: 'false',
      autocomplete: 'off',
      'aria-label': label,
      'aria-describedby': 'problems',
      wrap: 'off',
    });
    this.area.value = text;
    this.gutter = h('pre', { class: 'gutter', 'aria-hidden': 'true' });
    this.list = h('ul', { id: 'problems', class: 'problems', 'aria-live': 'polite' });
    this.el = h('div', { class: 'editor' }, h('div', { class: 'editor-body' }, this.gutter, this.area), this.list);
    this.area.addEventListener('input', () => {
      this.renderGutter();
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => void this.validate(), 400);
    });
    this.area.addEventListener('scroll', () => {
      this.gutter.scrollTop = this.area.scrollTop;
    });
    this.area.addEventListener('keydown', (e) => {
      // Tab indents (two spaces); Escape then Tab leaves the editor.
      if (e.key === 'Tab' && !e.shiftKey && !this.escaped) {
        e.preventDefault();
        this.area.setRangeText('  ', this.area.selectionStart, this.area.selectionEnd, 'end');
        this.area.dispatchEvent(new Event('input'));
      }
      this.escaped = e.key === 'Escape';
    });
    this.renderGutter();
  }

  private escaped = false;

  get text(): string {
    return this.area.value;
  }

  set text(value: string) {
    this.area.value = value;
    this.renderGutter();
  }

  private renderGutter(): void {
    const n = this.area.value.split('\n').length;
    const rows: (HTMLElement | string)[] = [];
    for (let i = 0; i < n; i++) {
      rows.push(this.marked.has(i) ? h('span', { class: 'bad', 'data-line': i + 1 }, String(i + 1)) : String(i + 1));
      rows.push('\n');
    }
    fill(this.gutter, rows);
  }

  /** Asks the server; shows every problem. Resolves to whether it is valid. */
  async validate(): Promise<boolean> {
    const ticket = ++this.checked;
    try {
      const res = await call<{ valid: boolean; problems: Problem[] }>(
        'POST',
        '/v1/topologies/validate',
        this.area.value,
        'application/yaml',
      );
      if (ticket === this.checked) this.show(res.problems);
      return res.valid;
    } catch (e) {
      if (ticket === this.checked) this.show([{ path: '(document)', message: errorText(e), severity: 'error' }]);
      return false;
    }
  }

  /** Shows problems from an apply that was refused. */
  showError(e: unknown): void {
    const problems = (e instanceof ApiError && (e.details as { problems?: Problem[] } | null)?.problems) || null;
    this.show(problems ?? [{ path: '(document)', message: errorText(e), severity: 'error' }]);
  }

  show(problems: Problem[]): void {
    const text = this.area.value;
    this.marked = new Set();
    const items = problems.map((p) => {
      const line = locate(text, p.path);
      if (line !== null) this.marked.add(line);
      return h(
        'li',
        { class: p.severity, 'data-path': p.path, 'data-line': line === null ? null : line + 1 },
        h(
          'button',
          {
            type: 'button',
            class: 'link',
            title: line === null ? 'not found in the text' : `go to line ${line + 1}`,
            onclick: () => line !== null && this.goTo(line),
          },
          h('code', {}, p.path),
          line === null ? '' : ` (line ${line + 1})`,
        ),
        ` ${p.severity}: ${p.message}`,
      );
    });
    fill(this.list, items.length ? items : h('li', { class: 'ok' }, 'No problems.'));
    this.renderGutter();
  }

  /** Selects line `line` (0-based) and scrolls it into view. */
  goTo(line: number): void {
    const lines = this.area.value.split('\n');
    let start = 0;
    for (let i = 0; i < line; i++) start += lines[i].length + 1;
    this.area.focus();
    this.area.setSelectionRange(start, start + (lines[line]?.length ?? 0));
    const lineHeight = parseFloat(getComputedStyle(this.area).lineHeight) || 18;
    this.area.scrollTop = Math.max(0, (line - 3) * lineHeight);
  }
}
