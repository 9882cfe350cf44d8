import { describe, expect, it } from "vitest";
import { importYaml } from "./manifest";
import { canvasFromManifest, inputSuggestions, renameRefs } from "./graph";

const m = importYaml(`name: w
version: 1.0.0
input_schema:
  type: object
  properties: {order_id: {type: string}}
steps:
- name: a
  capability: x.a
  result_schema: {type: object, properties: {own: {type: string}}}
- {name: b, capability: x.b, depends_on: [a]}
- {name: c, capability: x.c, depends_on: [b], input: {v: $.steps.a.result.own, w: [$.steps.a.result], n: 3, z: $.steps.ab.result}}
- {name: d, capability: x.d}
`);
const outputs = new Map([
  ["x.a", '{"type":"object","properties":{"id":{"type":"string"}}}'],
  ["x.b", '{"type":"object","properties":{"total":{"type":"integer"},"id":{}}}'],
]);

describe("input suggestions", () => {
  it.each([
    ["a", ["$.input.order_id"]],
    ["b", ["$.input.order_id", "$.steps.a.result", "$.steps.a.result.own", "$.steps.a.result.id"]],
    ["c", ["$.input.order_id", "$.steps.a.result", "$.steps.a.result.own", "$.steps.a.result.id", "$.steps.b.result", "$.steps.b.result.total", "$.steps.b.result.id"]],
    ["d", ["$.input.order_id"]],
  ])("for %s: the workflow input and every upstream result field", (id, want) => {
    expect(inputSuggestions(canvasFromManifest(m), id, outputs)).toEqual(want);
  });
});

describe("renameRefs", () => {
  it("rewrites the mappings of a renamed step and nothing else", () => {
    expect(renameRefs(m.steps[2]!.input, "a", "first")).toEqual({ v: "$.steps.first.result.own", w: ["$.steps.first.result"], n: 3, z: "$.steps.ab.result" });
  });
});
