import { useId, useState } from "react";
import type { Json, JsonObject, StepSpec } from "../manifest";

interface Props {
  step: StepSpec;
  capabilities: string[];
  // "$.steps.x.result.y" and "$.input.z": what the input may map.
  suggestions: string[];
  // Field names the capability's input schema declares.
  inputFields: string[];
  problems: string[];
  // Every other step: whether this one depends on it, and whether it may
  // (not when that would close a cycle).
  others: { id: string; checked: boolean; allowed: boolean }[];
  onDepends: (id: string, on: boolean) => void;
  onChange: (step: StepSpec) => void;
  onRename: (name: string) => void;
  onDelete: () => void;
}

// A value written as "$.…" stays a string mapping; anything else that
// parses as JSON is a literal (a number, true, an object); otherwise text.
function parseValue(text: string): Json {
  if (text.startsWith("$.")) return text;
  try {
    return JSON.parse(text) as Json;
  } catch {
    return text;
  }
}

function showValue(v: Json): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

export function StepEditor({ step, capabilities, suggestions, inputFields, problems, others, onDepends, onChange, onRename, onDelete }: Props) {
  const id = useId();
  const [name, setName] = useState(step.name);
  const [newKey, setNewKey] = useState("");
  const input = step.input ?? {};
  const set = (patch: Partial<StepSpec>) => {
    const next: StepSpec = { ...step, ...patch };
    for (const k of Object.keys(patch)) if (patch[k] === undefined) delete next[k];
    onChange(next);
  };
  const setInput = (key: string, value: Json | undefined) => {
    const next: JsonObject = { ...input };
    if (value === undefined) delete next[key];
    else next[key] = value;
    set({ input: Object.keys(next).length ? next : undefined });
  };
  const setMaxAttempts = (text: string) => {
    const retry = { ...(step.retry ?? {}) };
    if (text === "") delete retry.max_attempts;
    else retry.max_attempts = Number(text);
    set({ retry: Object.keys(retry).length ? retry : undefined });
  };
  return (
    <section className="editor" aria-label={`Step ${step.name}`}>
      <h2>Step</h2>
      {problems.length > 0 && (
        <ul className="problems" aria-label="Problems of this step">
          {problems.map((p, i) => (
            <li key={i}>{p}</li>
          ))}
        </ul>
      )}
      <label className="field">
        <span>Name</span>
        <input
          value={name}
          onChange={(e) => setName(e.target.value)}
          onBlur={() => name !== step.name && name && onRename(name)}
          onKeyDown={(e) => e.key === "Enter" && name && onRename(name)}
        />
      </label>
      <label className="field">
        <span>Capability</span>
        <input list={`${id}-caps`} value={step.capability ?? ""} onChange={(e) => set({ capability: e.target.value || undefined })} />
        <datalist id={`${id}-caps`}>
          {capabilities.map((c) => (
            <option key={c} value={c} />
          ))}
        </datalist>
      </label>
      <label className="field">
        <span>Timeout</span>
        <input value={step.timeout ?? ""} placeholder="30s, 5m" onChange={(e) => set({ timeout: e.target.value || undefined })} />
      </label>
      <label className="field">
        <span>Retry: max attempts</span>
        <input type="number" min={1} value={step.retry?.max_attempts ?? ""} onChange={(e) => setMaxAttempts(e.target.value)} />
      </label>
      {others.length > 0 && (
        <fieldset>
          <legend>Depends on</legend>
          {others.map((o) => (
            <label key={o.id} className="check">
              <input type="checkbox" checked={o.checked} disabled={!o.checked && !o.allowed} onChange={(e) => onDepends(o.id, e.target.checked)} /> {o.id}
            </label>
          ))}
        </fieldset>
      )}
      <fieldset>
        <legend>Input mappings</legend>
        <datalist id={`${id}-sugg`}>
          {suggestions.map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
        <datalist id={`${id}-keys`}>
          {inputFields.filter((f) => !(f in input)).map((f) => (
            <option key={f} value={f} />
          ))}
        </datalist>
        {Object.entries(input).map(([k, v]) => v !== undefined && (
          <div className="mapping" key={k}>
            <label className="field">
              <span>{k}</span>
              <input list={`${id}-sugg`} defaultValue={showValue(v)} onBlur={(e) => setInput(k, parseValue(e.target.value))} />
            </label>
            <button type="button" onClick={() => setInput(k, undefined)} aria-label={`Remove input ${k}`}>
              ✕
            </button>
          </div>
        ))}
        <div className="mapping">
          <label className="field">
            <span>New input field</span>
            <input list={`${id}-keys`} value={newKey} onChange={(e) => setNewKey(e.target.value)} />
          </label>
          <button
            type="button"
            disabled={!newKey || newKey in input}
            onClick={() => {
              setInput(newKey, suggestions[0] ?? "");
              setNewKey("");
            }}
          >
            Add input
          </button>
        </div>
      </fieldset>
      <button type="button" className="danger" onClick={onDelete}>
        Delete step
      </button>
    </section>
  );
}
