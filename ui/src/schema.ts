import type { CapabilityProviders } from "@gen/tasker/v1/cluster_pb.js";

// Top-level property names of a JSON Schema, "" or unparsable → none. The
// editor suggests these; the agent checks the real contracts.
export function schemaFields(schemaJson: string | undefined): string[] {
  if (!schemaJson) return [];
  try {
    const s: unknown = JSON.parse(schemaJson);
    if (s && typeof s === "object" && "properties" in s) {
      const props = (s as { properties: unknown }).properties;
      if (props && typeof props === "object") return Object.keys(props);
    }
  } catch {
    // A schema the browser cannot parse suggests nothing.
  }
  return [];
}

// The first provider that says something: providers of one capability
// share its contract, and one with a description has been filled in.
export function describe(c: CapabilityProviders): { description: string; input: string; output: string } {
  const p = c.providers.find((x) => x.description || x.inputSchemaJson || x.outputSchemaJson) ?? c.providers[0];
  return { description: p?.description ?? "", input: p?.inputSchemaJson ?? "", output: p?.outputSchemaJson ?? "" };
}

export function matches(c: CapabilityProviders, query: string): boolean {
  const q = query.trim().toLowerCase();
  if (!q) return true;
  const d = describe(c);
  return c.name.toLowerCase().includes(q) || d.description.toLowerCase().includes(q);
}
