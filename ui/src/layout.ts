import dagre from "@dagrejs/dagre";

export interface Point {
  x: number;
  y: number;
}

export const nodeWidth = 190;
export const nodeHeight = 64;

// layout places a DAG left to right with dagre: the reading order of a
// workflow is its order of execution.
export function layout(ids: string[], edges: { source: string; target: string }[]): Map<string, Point> {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 70 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const id of ids) g.setNode(id, { width: nodeWidth, height: nodeHeight });
  for (const e of edges) if (ids.includes(e.source) && ids.includes(e.target)) g.setEdge(e.source, e.target);
  dagre.layout(g);
  const out = new Map<string, Point>();
  for (const id of ids) {
    const n = g.node(id);
    out.set(id, { x: n.x - nodeWidth / 2, y: n.y - nodeHeight / 2 });
  }
  return out;
}
