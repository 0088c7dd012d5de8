// A new topology: the document editor with a starting example; apply
// stores it (PUT /v1/topologies/{name}) and opens its page.

import { TopologyStatus, call, seg } from '../api';
import { DocumentEditor } from '../editor';
import { documentName } from '../yaml';
import { h, fill, notify } from '../ui';

const EXAMPLE = `# A topology: sources -> operators -> sinks (JSON or YAML).
name: my-topology
sources:
  - name: in
    stream: input
operators:
  - name: op
    module: my-module
    input: in
    parallelism: 1
sinks:
  - name: out
    stream: output
    input: op
`;

export function newTopology(main: HTMLElement): void {
  const editor = new DocumentEditor(EXAMPLE, 'Topology document (YAML or JSON)');
  const apply = h('button', { type: 'button', id: 'apply' }, 'Apply');
  const validate = h('button', { type: 'button', id: 'validate' }, 'Validate');
  fill(
    main,
    h('h1', {}, 'New topology'),
    h('p', {}, 'Write the document; problems show with their path and line as you type. Apply stores it (stopped).'),
    editor.el,
    h('p', { class: 'actions' }, validate, ' ', apply),
  );
  validate.addEventListener('click', () => void editor.validate());
  apply.addEventListener('click', async () => {
    const name = documentName(editor.text);
    if (!name) {
      editor.show([{ path: 'name', message: 'the document needs a name', severity: 'error' }]);
      return;
    }
    try {
      await call<TopologyStatus>('PUT', `/v1/topologies/${seg(name)}`, editor.text, 'application/yaml');
      notify(`Applied topology ${name}.`);
      location.hash = `#/topologies/${seg(name)}`;
    } catch (e) {
      editor.showError(e);
    }
  });
  void editor.validate();
}
