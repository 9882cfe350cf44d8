import type { Edge } from "@xyflow/react";
import { edgeId, manifestToGraph, type Graph, type Json, type Manifest } from "./manifest";
import { schemaFields } from "./schema";
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

// inputSuggestions lists what a step's input may map: the workflow's input
// fields, and for every upstream step its whole result and each field of
// it, from the step's own result_schema and its capability's output schema
// (outputs: capability → output schema JSON).
export function inputSuggestions(c: Canvas, id: string, outputs: Map<string, string>): string[] {
  const out: string[] = [];
  out.push(...schemaFields(JSON.stringify(c.header.input_schema ?? null)).map((f) => `$.input.${f}`));
  const ups = upstream(c.edges, id);
  // In the manifest's order, so the list reads like the workflow.
  for (const n of c.nodes) {
    if (!ups.includes(n.id)) continue;
    const step = n.data.step;
    const fields = new Set([...schemaFields(JSON.stringify(step.result_schema ?? null)), ...schemaFields(outputs.get(step.capability ?? ""))]);
    out.push(`$.steps.${n.id}.result`, ...[...fields].map((f) => `$.steps.${n.id}.result.${f}`));
  }
  return out;
}

// renameRefs rewrites the mappings that name a renamed step, so that a
// rename does not break the steps that read its result.
export function renameRefs(v: Json | undefined, from: string, to: string): Json | undefined {
  if (typeof v === "string") {
    const prefix = `$.steps.${from}`;
    return v === prefix || v.startsWith(`${prefix}.`) || v.startsWith(`${prefix}[`) ? `$.steps.${to}${v.slice(prefix.length)}` : v;
  }
  if (Array.isArray(v)) return v.map((x) => renameRefs(x, from, to) ?? null);
  if (v && typeof v === "object") {
    const out: { [key: string]: Json | undefined } = {};
    for (const [k, x] of Object.entries(v)) out[k] = renameRefs(x, from, to);
    return out;
  }
  return v;
}
