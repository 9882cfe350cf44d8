import { useMemo, useState } from "react";
import type { CapabilityProviders } from "@gen/tasker/v1/cluster_pb.js";
import { describe, matches } from "../schema";

export const dragType = "application/x-tasker-capability";

interface Props {
  capabilities: CapabilityProviders[];
  onAdd: (capability: string) => void;
  error?: string;
}

// Palette lists the cluster's capabilities. Each can be dragged onto the
// canvas or added with its button, which is the keyboard's way in.
export function Palette({ capabilities, onAdd, error }: Props) {
  const [query, setQuery] = useState("");
  const shown = useMemo(() => capabilities.filter((c) => matches(c, query)), [capabilities, query]);
  return (
    <aside className="palette" aria-label="Capabilities">
      <h2>Capabilities</h2>
      <label className="field">
        <span>Search</span>
        <input type="search" value={query} onChange={(e) => setQuery(e.target.value)} placeholder="name or description" />
      </label>
      {error && <p role="alert" className="error">{error}</p>}
      {capabilities.length === 0 && !error && <p className="muted">No agent offers a capability yet.</p>}
      <ul className="cap-list">
        {shown.map((c) => {
          const d = describe(c);
          return (
            <li
              key={c.name}
              className="cap"
              draggable
              onDragStart={(e) => {
                e.dataTransfer.setData(dragType, c.name);
                e.dataTransfer.effectAllowed = "copy";
              }}
            >
              <div className="cap-head">
                <strong>{c.name}</strong>
                <button type="button" onClick={() => onAdd(c.name)} aria-label={`Add step ${c.name}`}>
                  Add step
                </button>
              </div>
              {d.description && <p className="muted">{d.description}</p>}
              <p className="muted small">
                {c.providers.length} provider{c.providers.length === 1 ? "" : "s"}
              </p>
              {(d.input || d.output) && (
                <details>
                  <summary>Schemas</summary>
                  {d.input && (
                    <>
                      <h4>Input</h4>
                      <pre>{pretty(d.input)}</pre>
                    </>
                  )}
                  {d.output && (
                    <>
                      <h4>Output</h4>
                      <pre>{pretty(d.output)}</pre>
                    </>
                  )}
                </details>
              )}
            </li>
          );
        })}
      </ul>
      {capabilities.length > 0 && shown.length === 0 && <p className="muted">Nothing matches “{query}”.</p>}
    </aside>
  );
}

function pretty(json: string): string {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}
