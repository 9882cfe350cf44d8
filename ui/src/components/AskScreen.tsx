import { useState } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import type { GenerateWorkflowResponse } from "@gen/tasker/v1/insight_pb.js";
import type { Clients } from "../api";

interface Props {
  clients: Clients;
  onDraft: (manifest: string) => void;
  // False when InsightService.Status said no model is configured.
  modelConfigured?: boolean;
}

export function noModel(e: unknown): boolean {
  const err = ConnectError.from(e);
  return err.code === Code.FailedPrecondition && err.rawMessage.includes("no language model is configured");
}

// AskScreen asks the agent's language model for a workflow. It is a dry
// run: nothing is filed; the draft goes onto the canvas to be checked and
// saved like any other.
export function AskScreen({ clients, onDraft, modelConfigured }: Props) {
  const [prompt, setPrompt] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [unavailable, setUnavailable] = useState(false);
  const [last, setLast] = useState<GenerateWorkflowResponse | undefined>();

  if (unavailable || modelConfigured === false) {
    return (
      <section className="ask">
        <h2>Ask</h2>
        <p role="status">This agent has no language model configured, so it cannot draft workflows. See docs/ai.md to configure one.</p>
      </section>
    );
  }
  const generate = async () => {
    setBusy(true);
    setError("");
    try {
      const r = await clients.insight.generateWorkflow({ description: prompt, dryRun: true });
      setLast(r);
      if (r.manifest) onDraft(r.manifest);
    } catch (e) {
      if (noModel(e)) setUnavailable(true);
      else setError(ConnectError.from(e).rawMessage);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="ask">
      <h2>Ask</h2>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void generate();
        }}
      >
        <label className="field">
          <span>Describe the workflow</span>
          <textarea value={prompt} onChange={(e) => setPrompt(e.target.value)} rows={6} placeholder="When an order arrives, reserve stock and charge the card in parallel, then ship it and email the customer." />
        </label>
        <button type="submit" className="primary" disabled={busy || !prompt.trim()}>
          {busy ? "Drafting…" : "Draft workflow"}
        </button>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
      {last && (
        <div className="result">
          <p>{last.summary}</p>
          {last.explanation && <p className="muted">{last.explanation}</p>}
          {!last.valid && <p className="error">The draft is not valid yet: {last.problems.join("; ")}</p>}
          {last.missingCapabilities.length > 0 && <p>No agent offers: {last.missingCapabilities.join(", ")}</p>}
          <p className="muted">The draft is on the Build canvas.</p>
        </div>
      )}
    </section>
  );
}
