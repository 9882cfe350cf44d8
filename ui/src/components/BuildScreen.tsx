import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from "react";
import {
  Background,
  Controls,
  ReactFlow,
  addEdge,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type NodeChange,
} from "@xyflow/react";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CapabilityProviders } from "@gen/tasker/v1/cluster_pb.js";
import type { Problem } from "@gen/tasker/v1/workflow_pb.js";
import { ValidationFailureSchema } from "@gen/tasker/v1/workflow_pb.js";
import type { Clients } from "../api";
import { exportYaml, graphToManifest, importYaml, problemsByStep, uniqueStepName, type Json, type StepSpec } from "../manifest";
import { canvasFromManifest, canvasGraph, inputSuggestions, newEdge, renameRefs, wouldCycle, type Canvas } from "../graph";
import { describe, schemaFields } from "../schema";
import { dragType, Palette } from "./Palette";
import { StepEditor } from "./StepEditor";
import { nodeTypes, type StepNodeType } from "./StepNode";
import { YamlView } from "./YamlView";

interface Props {
  clients: Clients;
  canvas: Canvas;
  setCanvas: (update: (c: Canvas) => Canvas) => void;
  // From InsightService.Status: a model can suggest the next step; Save
  // files a proposal instead of applying (approval_required).
  modelConfigured?: boolean;
  approvalRequired?: boolean;
}

export function BuildScreen({ clients, canvas, setCanvas, modelConfigured = false, approvalRequired = false }: Props) {
  const [caps, setCaps] = useState<CapabilityProviders[]>([]);
  const [capsError, setCapsError] = useState("");
  const [problems, setProblems] = useState<Problem[]>([]);
  const [warnings, setWarnings] = useState<string[]>([]);
  const [checking, setChecking] = useState("");
  const [saveNote, setSaveNote] = useState("");
  const [showYaml, setShowYaml] = useState(false);
  const [hint, setHint] = useState("");
  const [suggesting, setSuggesting] = useState(false);
  const [suggestNote, setSuggestNote] = useState("");
  const flow = useReactFlow();
  const wrapper = useRef<HTMLDivElement>(null);

  useEffect(() => {
    clients.cluster
      .capabilities({})
      .then((r) => setCaps(r.capabilities))
      .catch((e: unknown) => setCapsError(`Capabilities: ${ConnectError.from(e).message}`));
  }, [clients]);

  const manifest = useMemo(() => graphToManifest(canvasGraph(canvas)), [canvas]);
  const yamlText = useMemo(() => exportYaml(manifest), [manifest]);

  // Validation as one edits: a dry-run apply, debounced so that typing a
  // name sends one request, not one per key.
  useEffect(() => {
    const ctl = new AbortController();
    const t = setTimeout(() => {
      setChecking("checking…");
      clients.workflow
        .applyWorkflow({ manifest: yamlText, validateOnly: true }, { signal: ctl.signal })
        .then((r) => {
          setProblems(r.problems);
          setWarnings(r.warnings);
          setChecking(r.problems.length ? "" : "valid");
        })
        .catch((e: unknown) => {
          if (ctl.signal.aborted) return;
          setChecking(`could not check: ${ConnectError.from(e).message}`);
        });
    }, 500);
    return () => {
      clearTimeout(t);
      ctl.abort();
    };
  }, [clients, yamlText]);

  const byStep = useMemo(() => problemsByStep(problems, manifest), [problems, manifest]);
  const selected = canvas.nodes.find((n) => n.selected);

  const addStep = useCallback(
    (capability: string, position?: { x: number; y: number }) => {
      setCanvas((c) => {
        const name = uniqueStepName(c.nodes.map((n) => n.id), capability);
        const maxX = c.nodes.reduce((m, n) => Math.max(m, n.position.x), -240);
        const node: StepNodeType = {
          id: name,
          type: "step",
          position: position ?? { x: maxX + 240, y: 40 },
          data: { step: { name, capability } },
          selected: true,
        };
        return { ...c, nodes: [...c.nodes.map((n) => ({ ...n, selected: false })), node] };
      });
    },
    [setCanvas],
  );

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    const cap = e.dataTransfer.getData(dragType);
    if (cap) addStep(cap, flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }));
  };

  const onNodesChange = useCallback(
    (changes: NodeChange<StepNodeType>[]) => setCanvas((c) => {
      const removed = new Set(changes.flatMap((ch) => (ch.type === "remove" ? [ch.id] : [])));
      return {
        ...c,
        nodes: applyNodeChanges(changes, c.nodes),
        edges: removed.size ? c.edges.filter((e) => !removed.has(e.source) && !removed.has(e.target)) : c.edges,
      };
    }),
    [setCanvas],
  );
  const onEdgesChange = useCallback((changes: EdgeChange[]) => setCanvas((c) => ({ ...c, edges: applyEdgeChanges(changes, c.edges) })), [setCanvas]);
  const onConnect = useCallback(
    (conn: Connection) =>
      setCanvas((c) => {
        if (wouldCycle(c.edges, conn.source, conn.target)) return c;
        return { ...c, edges: addEdge(newEdge(conn.source, conn.target), c.edges) };
      }),
    [setCanvas],
  );

  const updateStep = (id: string, step: StepSpec) =>
    setCanvas((c) => ({ ...c, nodes: c.nodes.map((n) => (n.id === id ? { ...n, data: { ...n.data, step } } : n)) }));
  const renameStep = (id: string, name: string) =>
    setCanvas((c) => {
      if (c.nodes.some((n) => n.id === name)) return c;
      const ren = (x: string) => (x === id ? name : x);
      return {
        ...c,
        nodes: c.nodes.map((n) => {
          const step = { ...n.data.step, input: renameRefs(n.data.step.input, id, name) as StepSpec["input"] };
          if (step.input === undefined) delete step.input;
          return n.id === id ? { ...n, id: name, data: { ...n.data, step: { ...step, name } } } : { ...n, data: { ...n.data, step } };
        }),
        edges: c.edges.map((e) => newEdge(ren(e.source), ren(e.target))),
      };
    });
  const deleteStep = (id: string) =>
    setCanvas((c) => ({ ...c, nodes: c.nodes.filter((n) => n.id !== id), edges: c.edges.filter((e) => e.source !== id && e.target !== id) }));
  const setHeader = (key: string, value: string) =>
    setCanvas((c) => {
      const header: { [k: string]: Json | undefined } = { ...c.header };
      if (value) header[key] = value;
      else delete header[key];
      return { ...c, header: header as Canvas["header"] };
    });

  // Suggest next step: the model extends the workflow on the canvas (a dry
  // run, nothing filed); the draft replaces the canvas for review.
  const suggest = async () => {
    setSuggesting(true);
    setSuggestNote("");
    const hdr = canvas.header as { [k: string]: Json | undefined };
    try {
      const r = await clients.insight.generateWorkflow({
        baseManifest: yamlText,
        dryRun: true,
        description: hint.trim(),
        namespace: typeof hdr.namespace === "string" ? hdr.namespace : "",
        name: typeof hdr.name === "string" ? hdr.name : "",
      });
      if (r.manifest) setCanvas(() => canvasFromManifest(importYaml(r.manifest)));
      const parts = [r.explanation || r.summary];
      if (!r.valid && r.problems.length) parts.push(`Not valid yet: ${r.problems.join("; ")}`);
      if (r.missingCapabilities.length) parts.push(`No agent offers: ${r.missingCapabilities.join(", ")}`);
      setSuggestNote(parts.filter(Boolean).join(" "));
    } catch (e) {
      setSuggestNote(`No suggestion: ${ConnectError.from(e).rawMessage}`);
    } finally {
      setSuggesting(false);
    }
  };

  // Propose: with approval_required the manifest is filed as a proposal,
  // create_workflow for a new workflow, update_workflow for a known one.
  const propose = async () => {
    setSaveNote("proposing…");
    const hdr = canvas.header as { [k: string]: Json | undefined };
    const namespace = typeof hdr.namespace === "string" ? hdr.namespace : "";
    const name = typeof hdr.name === "string" ? hdr.name : "";
    try {
      let action = "update_workflow";
      try {
        await clients.workflow.getWorkflow({ namespace, name });
      } catch (e) {
        if (ConnectError.from(e).code !== Code.NotFound) throw e;
        action = "create_workflow";
      }
      const r = await clients.proposal.createProposal({ action, namespace, workflow: name, manifest: yamlText, source: "user" });
      const id = r.proposal?.id ?? "";
      setSaveNote(`Proposed as ${id} (${action}): an operator approves it with "tasker ai proposals approve ${id}" (or ProposalService.ApproveProposal).`);
    } catch (e) {
      setSaveNote(`Not proposed: ${ConnectError.from(e).rawMessage}`);
    }
  };

  const save = async () => {
    if (approvalRequired) return propose();
    setSaveNote("saving…");
    try {
      const r = await clients.workflow.applyWorkflow({ manifest: yamlText });
      const w = r.workflow;
      setSaveNote(r.created ? `Saved ${w?.name} ${w?.version}.` : `${w?.name} ${w?.version} was already stored with this content.`);
    } catch (e) {
      const err = ConnectError.from(e);
      const details = err.findDetails(ValidationFailureSchema);
      if (details.length) setProblems(details.flatMap((d) => d.problems));
      setSaveNote(`Not saved: ${err.rawMessage}`);
    }
  };

  const capNames = caps.map((c) => c.name);
  const capByName = new Map(caps.map((c) => [c.name, describe(c)]));
  const outputs = new Map(caps.map((c) => [c.name, describe(c).output]));
  // Warnings are lines that start with the step's path, "steps[2] (line
  // 40): no agent offers ...": they go on the node as notes, not problems.
  const warnByStep = problemsByStep(
    warnings.map((w) => ({ path: w, message: w })),
    manifest,
  );
  const rfNodes = canvas.nodes.map((n) => {
    const ps = byStep.get(n.id);
    const ws = warnByStep.get(n.id);
    if (!ps && !ws) return n;
    return { ...n, data: { ...n.data, problems: ps?.map((p) => `${p.path}: ${p.message}`), warnings: ws?.map((w) => w.message) } };
  });
  const workflowProblems = byStep.get("") ?? [];
  const h = canvas.header as { [k: string]: Json | undefined };

  return (
    <div className="build">
      <Palette capabilities={caps} onAdd={(c) => addStep(c)} error={capsError} />
      <div className="canvas" ref={wrapper} onDragOver={(e) => e.preventDefault()} onDrop={onDrop} aria-label="Workflow canvas">
        <div className="toolbar">
          {(["name", "namespace", "version"] as const).map((k) => (
            <label className="field inline" key={k}>
              <span>{k}</span>
              <input value={typeof h[k] === "string" ? (h[k] as string) : ""} onChange={(e) => setHeader(k, e.target.value)} />
            </label>
          ))}
          <button type="button" onClick={() => setShowYaml((v) => !v)} aria-pressed={showYaml}>
            YAML
          </button>
          {modelConfigured && (
            <>
              <label className="field inline">
                <span>hint</span>
                <input value={hint} onChange={(e) => setHint(e.target.value)} placeholder="optional: what comes next" aria-label="Next step hint" />
              </label>
              <button type="button" onClick={() => void suggest()} disabled={suggesting}>
                {suggesting ? "Suggesting…" : "Suggest next step"}
              </button>
            </>
          )}
          <button type="button" className="primary" onClick={() => void save()} disabled={problems.length > 0}>
            {approvalRequired ? "Propose" : "Save"}
          </button>
          <span className="status" role="status">
            {problems.length ? `${problems.length} problem${problems.length === 1 ? "" : "s"}` : checking}
            {saveNote && ` · ${saveNote}`}
          </span>
          {suggestNote && <span className="status muted">{suggestNote}</span>}
        </div>
        {showYaml ? (
          <YamlView
            text={yamlText}
            onImport={(text) => {
              const m = importYaml(text);
              setCanvas(() => canvasFromManifest(m));
            }}
          />
        ) : (
          <ReactFlow
            nodes={rfNodes}
            edges={canvas.edges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            fitView
            fitViewOptions={{ maxZoom: 1 }}
            deleteKeyCode={["Delete", "Backspace"]}
          >
            <Background />
            <Controls />
          </ReactFlow>
        )}
      </div>
      <div className="side">
        {selected ? (
          <StepEditor
            key={selected.id}
            step={selected.data.step}
            capabilities={capNames}
            suggestions={inputSuggestions(canvas, selected.id, outputs)}
            inputFields={schemaFields(capByName.get(selected.data.step.capability ?? "")?.input)}
            problems={(byStep.get(selected.id) ?? []).map((p) => `${p.path}: ${p.message}`)}
            others={canvas.nodes
              .filter((n) => n.id !== selected.id)
              .map((n) => ({
                id: n.id,
                checked: canvas.edges.some((e) => e.source === n.id && e.target === selected.id),
                allowed: !wouldCycle(canvas.edges, n.id, selected.id),
              }))}
            onDepends={(dep, on) =>
              setCanvas((c) => ({
                ...c,
                edges: on
                  ? wouldCycle(c.edges, dep, selected.id)
                    ? c.edges
                    : addEdge(newEdge(dep, selected.id), c.edges)
                  : c.edges.filter((e) => !(e.source === dep && e.target === selected.id)),
              }))
            }
            onChange={(s) => updateStep(selected.id, s)}
            onRename={(name) => renameStep(selected.id, name)}
            onDelete={() => deleteStep(selected.id)}
          />
        ) : (
          <section>
            <h2>Workflow</h2>
            <p className="muted">Select a step to edit it (or Tab to a node). Drag from a node's right handle to another node's left handle to make it depend on the first, or tick &ldquo;Depends on&rdquo; in the step's panel.</p>
            <label className="field">
              <span>Add a step (keyboard)</span>
              <select
                value=""
                onChange={(e) => e.target.value && addStep(e.target.value)}
                aria-label="Add step with capability"
              >
                <option value="">Add step…</option>
                {capNames.map((c) => (
                  <option key={c} value={c}>
                    {c}
                  </option>
                ))}
              </select>
            </label>
            <label className="field">
              <span>Select step</span>
              <select
                value=""
                onChange={(e) => {
                  const id = e.target.value;
                  setCanvas((c) => ({ ...c, nodes: c.nodes.map((n) => ({ ...n, selected: n.id === id })) }));
                }}
              >
                <option value="">Select a step…</option>
                {canvas.nodes.map((n) => (
                  <option key={n.id} value={n.id}>
                    {n.id}
                  </option>
                ))}
              </select>
            </label>
          </section>
        )}
        {workflowProblems.length > 0 && (
          <section>
            <h3>Workflow problems</h3>
            <ul className="problems">
              {workflowProblems.map((p, i) => (
                <li key={i}>
                  {p.path ? `${p.path}: ` : ""}
                  {p.message}
                </li>
              ))}
            </ul>
          </section>
        )}
        {warnings.length > 0 && (
          <section>
            <h3>Warnings</h3>
            <ul>
              {warnings.map((w, i) => (
                <li key={i}>{w}</li>
              ))}
            </ul>
          </section>
        )}
      </div>
    </div>
  );
}
