// The topology's DAG: sources, operators (with parallelism, chained ones
// boxed together) and sinks laid out left to right by dagre, drawn as SVG
// once per document; live figures are then written into the drawing.

import dagre from '@dagrejs/dagre';
import { TopologyDocument, inputNames } from './api';
import { s } from './ui';

export type Kind = 'source' | 'operator' | 'sink';

export interface GraphNode {
  name: string;
  kind: Kind;
  parallelism: number;
  /** Module reference, or the stream/file a source or sink binds. */
  detail: string;
}

export interface GraphEdge {
  from: string;
  to: string;
}

/** Nodes and edges of a document, as written. */
export function graphOf(doc: TopologyDocument): { nodes: GraphNode[]; edges: GraphEdge[] } {
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  const binding = (x: { stream?: string; file?: string }) =>
    x.stream ? `stream ${x.stream}` : x.file ? `file ${x.file}` : '';
  for (const src of doc.sources ?? []) nodes.push({ name: src.name, kind: 'source', parallelism: 1, detail: binding(src) });
  for (const op of doc.operators ?? []) {
    nodes.push({ name: op.name, kind: 'operator', parallelism: op.parallelism ?? 1, detail: op.module + (op.key_by ? ' · keyed' : '') });
    for (const i of inputNames(op.input)) edges.push({ from: i, to: op.name });
  }
  for (const sink of doc.sinks ?? []) {
    nodes.push({ name: sink.name, kind: 'sink', parallelism: 1, detail: binding(sink) });
    for (const i of inputNames(sink.input)) edges.push({ from: i, to: sink.name });
  }
  return { nodes, edges };
}

const NODE_W = 210;
const NODE_H = 92;

/** The text slots of a drawn node, filled on every poll. */
export interface NodeView {
  node: GraphNode;
  el: SVGElement;
  box: SVGElement;
  lines: SVGElement[];
}

export interface EdgeView {
  edge: GraphEdge;
  el: SVGElement;
  label: SVGElement;
}

export interface Drawing {
  svg: SVGElement;
  nodes: Map<string, NodeView>;
  edges: EdgeView[];
}

/** Lays out and draws the graph; `chains` groups operators run as one task. */
export function draw(
  graph: { nodes: GraphNode[]; edges: GraphEdge[] },
  chains: string[][],
  onSelect: (name: string) => void,
): Drawing {
  const g = new dagre.graphlib.Graph({ compound: true, multigraph: true });
  g.setGraph({ rankdir: 'LR', nodesep: 28, ranksep: 70, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) g.setNode(n.name, { width: NODE_W, height: NODE_H });
  chains.forEach((chain, i) => {
    if (chain.length < 2) return;
    const id = `chain:${i}`;
    g.setNode(id, { label: id, paddingTop: 22, paddingLeft: 10, paddingRight: 10, paddingBottom: 10 });
    for (const op of chain) if (g.hasNode(op)) g.setParent(op, id);
  });
  graph.edges.forEach((e, i) => {
    if (g.hasNode(e.from) && g.hasNode(e.to)) g.setEdge(e.from, e.to, { width: 60, height: 18, labelpos: 'c' }, `e${i}`);
  });
  dagre.layout(g);
  const size = g.graph();
  const svg = s('svg', {
    class: 'graph',
    id: 'graph',
    viewBox: `0 0 ${Math.ceil(size.width ?? 400)} ${Math.ceil(size.height ?? 200)}`,
    width: Math.ceil(size.width ?? 400),
    height: Math.ceil(size.height ?? 200),
    role: 'group',
    'aria-label': 'Topology graph: sources, operators and sinks',
  });
  svg.append(
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))),
  );
  chains.forEach((chain, i) => {
    if (chain.length < 2) return;
    const c = g.node(`chain:${i}`);
    if (!c) return;
    svg.append(
      s(
        'g',
        { class: 'chain', 'data-chain': chain.join(',') },
        s('rect', { x: c.x - c.width / 2, y: c.y - c.height / 2, width: c.width, height: c.height, rx: 10 }),
        s('text', { x: c.x - c.width / 2 + 10, y: c.y - c.height / 2 + 15 }, `chained: one task`),
      ),
    );
  });
  const edges: EdgeView[] = [];
  graph.edges.forEach((e, i) => {
    const layout = g.edge({ v: e.from, w: e.to, name: `e${i}` });
    if (!layout) return;
    const pts = layout.points;
    const d = pts.map((p: { x: number; y: number }, j: number) => `${j ? 'L' : 'M'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');
    const label = s('text', { x: layout.x ?? pts[1].x, y: (layout.y ?? pts[1].y) - 4, class: 'edge-label', 'text-anchor': 'middle' }, '');
    const el = s('g', { class: 'edge', 'data-edge': `${e.from}->${e.to}` }, s('path', { d, 'marker-end': 'url(#arrow)' }), label);
    svg.append(el);
    edges.push({ edge: e, el, label });
  });
  const nodes = new Map<string, NodeView>();
  for (const n of graph.nodes) {
    const p = g.node(n.name);
    const x = p.x - NODE_W / 2;
    const y = p.y - NODE_H / 2;
    const box = s('rect', { x, y, width: NODE_W, height: NODE_H, rx: 6, class: 'box' });
    const title = s(
      'text',
      { x: x + 10, y: y + 18, class: 'title' },
      n.name,
      n.kind === 'operator' ? s('tspan', { class: 'par' }, `  ×${n.parallelism}`) : '',
    );
    const lines = [0, 1, 2, 3].map((k) => s('text', { x: x + 10, y: y + 35 + k * 15, class: 'line' }, ''));
    lines[0].textContent = `${n.kind} · ${n.detail}`;
    const el = s(
      'g',
      {
        class: `node ${n.kind}`,
        tabindex: 0,
        role: 'button',
        'data-node': n.name,
        'data-kind': n.kind,
        'data-parallelism': n.parallelism,
        'aria-label': `${n.kind} ${n.name}${n.kind === 'operator' ? `, parallelism ${n.parallelism}` : ''}: details`,
      },
      box,
      title,
      lines,
    );
    const open = () => onSelect(n.name);
    el.addEventListener('click', open);
    el.addEventListener('keydown', (ev) => {
      const key = (ev as KeyboardEvent).key;
      if (key === 'Enter' || key === ' ') {
        ev.preventDefault();
        open();
      }
    });
    svg.append(el);
    nodes.set(n.name, { node: n, el, box, lines });
  }
  return { svg, nodes, edges };
}
