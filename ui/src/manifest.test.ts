import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { exportYaml, graphToManifest, importYaml, manifestToGraph, problemStep, problemsByStep, uniqueStepName } from "./manifest";
import { canvasFromManifest, canvasGraph, wouldCycle } from "./graph";

const examples = join(__dirname, "..", "..", "examples");
const files = readdirSync(examples).filter((f) => f.endsWith(".yaml"));

describe("manifest ↔ graph", () => {
  it("finds the examples", () => {
    expect(files.length).toBeGreaterThanOrEqual(4);
  });
  it.each(files)("%s round-trips through the graph and YAML", (file) => {
    const m = importYaml(readFileSync(join(examples, file), "utf8"));
    const g = manifestToGraph(m);
    expect(g.nodes.map((n) => n.id)).toEqual(m.steps.map((s) => s.name));
    const out = exportYaml(graphToManifest(g));
    const back = importYaml(out);
    expect(back).toEqual(m);
    // Same keys in the same order, at every level.
    expect(JSON.stringify(back)).toBe(JSON.stringify(m));
    // And through the canvas the editor keeps, with positions.
    const viaCanvas = exportYaml(graphToManifest(canvasGraph(canvasFromManifest(m))));
    expect(viaCanvas).toBe(out);
    // Exporting is stable: the export of an import of an export is itself.
    expect(exportYaml(importYaml(out))).toBe(out);
  });
  it("writes edges back as depends_on, keeping the listed order", () => {
    const m = importYaml("name: w\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a}\n- {name: b, capability: x.b}\n- {name: c, capability: x.c, depends_on: [b, a]}\n");
    const g = manifestToGraph(m);
    g.edges = g.edges.filter((e) => e.source !== "b");
    g.edges.push({ id: "b->a", source: "b", target: "a" });
    const out = graphToManifest(g);
    expect(out.steps.map((s) => s.depends_on)).toEqual([["b"], undefined, ["a"]]);
    expect(Object.keys(out)).toEqual(["name", "version", "steps"]);
  });
  it("refuses a cycle", () => {
    const edges = [
      { source: "a", target: "b" },
      { source: "b", target: "c" },
    ];
    expect(wouldCycle(edges, "c", "a")).toBe(true);
    expect(wouldCycle(edges, "a", "c")).toBe(false);
    expect(wouldCycle(edges, "a", "a")).toBe(true);
  });
  it("names new steps after their capability", () => {
    expect(uniqueStepName([], "payments.charge")).toBe("charge");
    expect(uniqueStepName(["charge", "charge_2"], "payments.charge")).toBe("charge_3");
  });
});

describe("problems → nodes", () => {
  const m = importYaml("name: w\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a}\n- {name: b, capability: x.b}\n");
  it.each([
    ["steps[0].capability", "a"],
    ["steps[1].retry.max_attempts", "b"],
    ["steps[1]", "b"],
    ["steps[7].name", ""],
    ["version", ""],
    ["", ""],
  ])("%s → %j", (path, step) => {
    expect(problemStep(path, m)).toBe(step);
  });
  it("groups problems by step", () => {
    const by = problemsByStep(
      [
        { path: "steps[1].timeout", message: "bad" },
        { path: "name", message: "missing" },
        { path: "steps[1].input.x", message: "unknown" },
      ],
      m,
    );
    expect(by.get("b")?.map((p) => p.message)).toEqual(["bad", "unknown"]);
    expect(by.get("")?.map((p) => p.message)).toEqual(["missing"]);
    expect(by.has("a")).toBe(false);
  });
});
