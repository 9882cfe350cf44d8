import { parse, stringify } from "yaml";

// A manifest is kept as the plain object YAML gives, keys in the order
// they were written, so that an import followed by an export changes
// nothing the editor did not touch. Only the fields the editor knows are
// typed; everything else rides along untouched.
export type Json = null | boolean | number | string | Json[] | JsonObject;
export interface JsonObject {
  [key: string]: Json | undefined;
}

export interface StepSpec {
  name: string;
  capability?: string;
  depends_on?: string[];
  timeout?: string;
  retry?: { max_attempts?: number; [key: string]: Json | undefined };
  input?: JsonObject;
  [key: string]: Json | undefined;
}

export interface Manifest {
  name: string;
  version: string;
  steps: StepSpec[];
  [key: string]: Json | undefined;
}

export function emptyManifest(): Manifest {
  return { name: "new-workflow", version: "0.1.0", steps: [] };
}

// Aliases are expanded (a manifest's anchors are shared contracts, and the
// editor edits each step on its own); the agent reads the expansion the
// same way.
export function importYaml(text: string): Manifest {
  const v: unknown = parse(text, { maxAliasCount: -1 });
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new Error("a manifest is a YAML mapping");
  }
  const m = v as Manifest;
  if (m.steps === undefined) m.steps = [];
  if (!Array.isArray(m.steps)) throw new Error("steps: must be a list");
  return m;
}

export function exportYaml(m: Manifest): string {
  return stringify(m, { lineWidth: 0, aliasDuplicateObjects: false });
}

// The graph the canvas shows: one node per step, one edge per depends_on
// entry, from the dependency to the dependant.
export interface GraphNode {
  id: string;
  step: StepSpec;
}
export interface GraphEdge {
  id: string;
  source: string;
  target: string;
}
export interface Graph {
  // Everything but the steps, in the manifest's key order.
  header: Omit<Manifest, "steps">;
  // The position of "steps" among the manifest's keys.
  stepsAt: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export function edgeId(source: string, target: string): string {
  return `${source}->${target}`;
}

export function manifestToGraph(m: Manifest): Graph {
  const keys = Object.keys(m);
  const header: { [key: string]: unknown } = {};
  for (const k of keys) if (k !== "steps") header[k] = m[k];
  const nodes = m.steps.map((step) => ({ id: step.name, step: structuredClone(step) }));
  const edges: GraphEdge[] = [];
  for (const step of m.steps) {
    for (const dep of step.depends_on ?? []) edges.push({ id: edgeId(dep, step.name), source: dep, target: step.name });
  }
  return { header: header as Omit<Manifest, "steps">, stepsAt: keys.indexOf("steps"), nodes, edges };
}

// graphToManifest writes the edges back into each step's depends_on: the
// canvas's edges are the truth, and a step keeps its dependencies in the
// order it listed them, new ones after.
export function graphToManifest(g: Graph): Manifest {
  const deps = new Map<string, string[]>();
  for (const e of g.edges) deps.set(e.target, [...(deps.get(e.target) ?? []), e.source]);
  const steps = g.nodes.map((n) => {
    const step: StepSpec = { ...n.step, name: n.id };
    const want = deps.get(n.id) ?? [];
    const kept = (n.step.depends_on ?? []).filter((d) => want.includes(d));
    const added = want.filter((d) => !kept.includes(d));
    const all = [...kept, ...added];
    if (all.length > 0) step.depends_on = all;
    else delete step.depends_on;
    return step;
  });
  const out: { [key: string]: unknown } = {};
  const keys = Object.keys(g.header);
  const at = g.stepsAt < 0 ? keys.length : g.stepsAt;
  keys.forEach((k, i) => {
    if (i === at) out.steps = steps;
    out[k] = g.header[k as keyof typeof g.header];
  });
  if (!("steps" in out)) out.steps = steps;
  return out as Manifest;
}

// A problem's path names a step by its index, "steps[2].retry...": the
// step is the node. Problems about the workflow as a whole map to "".
export function problemStep(path: string, m: Manifest): string {
  const match = /^steps\[(\d+)\]/.exec(path);
  if (!match) return "";
  return m.steps[Number(match[1])]?.name ?? "";
}

export interface ProblemLike {
  path: string;
  message: string;
}

export function problemsByStep<P extends ProblemLike>(problems: P[], m: Manifest): Map<string, P[]> {
  const out = new Map<string, P[]>();
  for (const p of problems) {
    const step = problemStep(p.path, m);
    out.set(step, [...(out.get(step) ?? []), p]);
  }
  return out;
}

// uniqueStepName picks a name the manifest does not have yet, from a
// capability ("payments.charge" → "charge", "charge_2"...).
export function uniqueStepName(taken: string[], capability: string): string {
  const names = new Set(taken);
  const base = (capability.split(".").pop() ?? "step").replace(/[^a-z0-9_]/gi, "_").toLowerCase() || "step";
  if (!names.has(base)) return base;
  for (let i = 2; ; i++) if (!names.has(`${base}_${i}`)) return `${base}_${i}`;
}
