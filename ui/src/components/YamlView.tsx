import { useState } from "react";

interface Props {
  text: string;
  onImport: (text: string) => void;
}

// YamlView shows the manifest the canvas makes, and takes a manifest in:
// edit or paste, then Import replaces the canvas.
export function YamlView({ text, onImport }: Props) {
  const [draft, setDraft] = useState(text);
  const [error, setError] = useState("");
  return (
    <div className="yaml-view">
      <label className="field grow">
        <span>Manifest (YAML)</span>
        <textarea value={draft} onChange={(e) => setDraft(e.target.value)} spellCheck={false} rows={30} />
      </label>
      <div className="row">
        <button
          type="button"
          onClick={() => {
            try {
              onImport(draft);
              setError("");
            } catch (e) {
              setError(e instanceof Error ? e.message : String(e));
            }
          }}
        >
          Import
        </button>
        <button type="button" onClick={() => setDraft(text)}>
          Revert to canvas
        </button>
        <label className="file">
          <span>Open file</span>
          <input type="file" accept=".yaml,.yml,.json" onChange={(e) => void e.target.files?.[0]?.text().then(setDraft)} />
        </label>
        {error && (
          <span role="alert" className="error">
            {error}
          </span>
        )}
      </div>
    </div>
  );
}
