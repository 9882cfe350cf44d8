import type { Edge } from "@xyflow/react";
import { edgeId, manifestToGraph, type Graph, type Manifest } from "./manifest";
import { layout } from "./layout";
import type { StepNodeType } from "./components/StepNode";

// The canvas's state is the graph itself: nodes carry their step, edges
// are the depends_on relations; Graph and the manifest are views of it.
export interface Canvas {
  header: Graph["header"];
  stepsAt: number;
  nodes: StepNodeType[];
  edges: Edge[];
}

export function canvasFromManifest(m: Manifest): Canvas {
  const g = manifestToGraph(m);
  const pos = layout(
    g.nodes.map((n) => n.id),
    g.edges,
  );
  return {
    header: g.header,
    stepsAt: g.stepsAt,
    nodes: g.nodes.map((n) => ({ id: n.id, type: "step", position: pos.get(n.id) ?? { x: 0, y: 0 }, data: { step: n.step } })),
    edges: g.edges.map((e) => ({ id: e.id, source: e.source, target: e.target })),
  };
}

export function canvasGraph(c: Canvas): Graph {
  return {
    header: c.header,
    stepsAt: c.stepsAt,
    nodes: c.nodes.map((n) => ({ id: n.id, step: n.data.step })),
    edges: c.edges.map((e) => ({ id: e.id, source: e.source, target: e.target })),
  };
}

export function newEdge(source: string, target: string): Edge {
  return { id: edgeId(source, target), source, target };
}

// upstream returns every step the given one depends on, directly or not:
// their results are what its input may map.
export function upstream(edges: { source: string; target: string }[], id: string): string[] {
  const seen = new Set<string>();
  const stack = [id];
  while (stack.length > 0) {
    const cur = stack.pop()!;
    for (const e of edges) {
      if (e.target === cur && !seen.has(e.source)) {
        seen.add(e.source);
        stack.push(e.source);
      }
    }
  }
  return [...seen];
}

// wouldCycle refuses an edge that closes a loop: a workflow is a DAG.
export function wouldCycle(edges: { source: string; target: string }[], source: string, target: string): boolean {
  return source === target || upstream(edges, source).includes(target);
}
