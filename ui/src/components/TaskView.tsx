import { useEffect, useMemo, useState } from "react";
import { ReactFlow, ReactFlowProvider, Background } from "@xyflow/react";
import { ConnectError } from "@connectrpc/connect";
import { StepState, TaskState, type Step, type Task } from "@gen/tasker/v1/workflow_pb.js";
import type { DiagnoseResponse } from "@gen/tasker/v1/insight_pb.js";
import type { Proposal } from "@gen/tasker/v1/proposal_pb.js";
import type { Clients } from "../api";
import { prettyJson, took, when } from "../format";
import { stateColours, stepStateName, taskFlow } from "../taskdag";
import { nodeTypes } from "./StepNode";
import { taskStateName } from "./WatchScreen";

interface Props {
  clients: Clients;
  id: string;
  onBack: () => void;
}

const ended = new Set([TaskState.COMPLETE, TaskState.ERROR, TaskState.CANCELLED, TaskState.RESOLVED_MANUALLY]);

// TaskDag is the task's workflow coloured by step state.
export function TaskDag({ task, onSelect }: { task: Task; onSelect?: (step: string) => void }) {
  const { nodes, edges } = useMemo(() => taskFlow(task), [task]);
  return (
    <div className="task-dag" aria-label="Task steps graph">
      <ReactFlowProvider>
        <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} fitView nodesDraggable={false} nodesConnectable={false} onNodeClick={(_, n) => onSelect?.(n.id)}>
          <Background />
        </ReactFlow>
      </ReactFlowProvider>
      <ul className="legend" aria-label="Legend">
        {Object.entries(stateColours)
          .filter(([k]) => k !== "UNSPECIFIED")
          .map(([k, c]) => (
            <li key={k}>
              <span className="swatch" style={{ background: c }} /> {k.replace(/_/g, " ").toLowerCase()}
            </li>
          ))}
      </ul>
    </div>
  );
}

// TaskView shows one task and follows it live: WatchTask streams every
// change with the task as it is after it, so the view just replaces it.
export function TaskView({ clients, id, onBack }: Props) {
  const [task, setTask] = useState<Task | undefined>();
  const [error, setError] = useState("");
  const [note, setNote] = useState("");
  const [live, setLive] = useState(false);
  const [selected, setSelected] = useState("");
  const [diagnosis, setDiagnosis] = useState<DiagnoseResponse | undefined>();
  const [proposals, setProposals] = useState<Proposal[]>([]);

  useEffect(() => {
    const ctl = new AbortController();
    void (async () => {
      let after = 0n;
      let current: Task | undefined;
      try {
        const r = await clients.workflow.getTask({ id }, { signal: ctl.signal });
        current = r.task;
        setTask(current);
      } catch (e) {
        if (!ctl.signal.aborted) setError(ConnectError.from(e).rawMessage);
        return;
      }
      // Follow until the task ends; a lost stream (a leader change, a
      // restart) resumes after the last event seen, so nothing is missed.
      while (!ctl.signal.aborted && current && !ended.has(current.state)) {
        setLive(true);
        try {
          for await (const ev of clients.workflow.watchTask({ id, afterSequence: after }, { signal: ctl.signal })) {
            if (ev.event) after = ev.event.sequence;
            if (ev.task) {
              current = ev.task;
              setTask(current);
            }
          }
          setError("");
        } catch (e) {
          if (ctl.signal.aborted) return;
          setError(`live updates interrupted, reconnecting: ${ConnectError.from(e).rawMessage}`);
          await new Promise((resolve) => setTimeout(resolve, 2000));
        }
      }
      if (!ctl.signal.aborted) setLive(false);
    })();
    return () => ctl.abort();
  }, [clients, id]);

  const failed = task?.state === TaskState.ERROR;
  useEffect(() => {
    if (!failed || !task) return;
    clients.insight
      .diagnose({ taskId: task.id })
      .then(setDiagnosis)
      .catch((e: unknown) => setNote(`Diagnose: ${ConnectError.from(e).rawMessage}`));
    clients.proposal
      .listProposals({ workflow: task.workflow, namespace: task.namespace })
      .then((r) => setProposals(r.proposals))
      .catch((e: unknown) => setNote(`Proposals: ${ConnectError.from(e).rawMessage}`));
  }, [clients, failed, task?.id, task?.workflow, task?.namespace]); // Not on every task update: once per failed task.

  const act = async (what: string, call: () => Promise<{ task?: Task }>) => {
    try {
      const r = await call();
      if (r.task) setTask(r.task);
      setNote(`${what}: done`);
    } catch (e) {
      setNote(`${what}: ${ConnectError.from(e).rawMessage}`);
    }
  };

  if (!task) {
    return (
      <section>
        <button type="button" onClick={onBack}>
          ← Tasks
        </button>
        {error ? <p role="alert" className="error">{error}</p> : <p>Loading {id}…</p>}
      </section>
    );
  }
  const step = task.steps.find((s) => s.name === selected);
  return (
    <section className="task-view">
      <div className="row">
        <button type="button" onClick={onBack}>
          ← Tasks
        </button>
        <h2>
          {task.workflow} {task.version} · <code>{task.id}</code>
        </h2>
        <span className={`badge task-${TaskState[task.state]}`}>{taskStateName(task.state)}</span>
        {live && <span className="muted">live</span>}
        {!ended.has(task.state) && (
          <button type="button" className="danger" onClick={() => void act("Cancel", () => clients.workflow.cancelTask({ id: task.id, reason: "cancelled from the web UI" }))}>
            Cancel task
          </button>
        )}
      </div>
      {error && <p role="alert" className="error">{error}</p>}
      {note && <p role="status">{note}</p>}
      <TaskDag task={task} onSelect={setSelected} />
      <table>
        <thead>
          <tr>
            <th>Step</th>
            <th>State</th>
            <th>Attempts</th>
            <th>Started</th>
            <th>Took</th>
            <th>Agent</th>
            <th>Error</th>
            <th>Actions</th>
          </tr>
        </thead>
        <tbody>
          {task.steps.map((s) => (
            <tr key={s.name} className={s.name === selected ? "selected" : ""}>
              <td>
                <button type="button" className="link" onClick={() => setSelected(s.name)}>
                  {s.name}
                </button>
              </td>
              <td>
                <span className="badge" style={{ borderColor: stateColours[stepStateName(s.state)] }}>
                  {stepStateName(s.state).replace(/_/g, " ").toLowerCase()}
                </span>
                {s.waiting && <div className="muted small">{s.waiting}</div>}
              </td>
              <td>
                {s.attempts}/{s.maxAttempts}
              </td>
              <td>{when(s.startedAt)}</td>
              <td>{took(s.startedAt, s.endedAt)}</td>
              <td>{s.agent}</td>
              <td>{s.lastError ? `${s.lastError.code}: ${s.lastError.message}` : ""}</td>
              <td>
                <StepActions clients={clients} task={task} step={s} act={act} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {step && (
        <section aria-label={`Step ${step.name} details`}>
          <h3>{step.name}</h3>
          <dl className="facts">
            <dt>Capability</dt>
            <dd>{step.capability}</dd>
            <dt>Ready</dt>
            <dd>{when(step.readyAt)}</dd>
            <dt>Dispatched</dt>
            <dd>{when(step.dispatchedAt)}</dd>
            <dt>Started</dt>
            <dd>{when(step.startedAt)}</dd>
            <dt>Ended</dt>
            <dd>{when(step.endedAt)}</dd>
            <dt>Next attempt</dt>
            <dd>{when(step.nextAttemptAt)}</dd>
            <dt>Worker</dt>
            <dd>{step.worker}</dd>
          </dl>
          {step.resultJson && (
            <>
              <h4>Result</h4>
              <pre>{prettyJson(step.resultJson)}</pre>
            </>
          )}
          {step.lastError && (
            <>
              <h4>Last error (attempt {step.lastError.attempt})</h4>
              <pre>
                {step.lastError.code}: {step.lastError.message}
                {step.lastError.retryable ? " (retryable)" : ""}
              </pre>
            </>
          )}
        </section>
      )}
      <details>
        <summary>Input</summary>
        <pre>{prettyJson(task.inputJson)}</pre>
      </details>
      {failed && (
        <section aria-label="Diagnosis">
          <h3>Diagnosis</h3>
          {diagnosis ? (
            <>
              <p>{diagnosis.summary}</p>
              <ul>
                {diagnosis.findings.map((f, i) => (
                  <li key={i}>
                    <strong>{f.step}</strong> ({f.class}
                    {f.code ? ` ${f.code}` : ""}, confidence {Math.round(f.confidence * 100)}%): {f.summary}
                    {f.remediations.length > 0 && (
                      <ul>
                        {f.remediations.map((r, j) => (
                          <li key={j}>
                            {r.action}: {r.rationale}
                          </li>
                        ))}
                      </ul>
                    )}
                  </li>
                ))}
              </ul>
              {diagnosis.explanation && <p className="muted">{diagnosis.explanation}</p>}
            </>
          ) : (
            <p className="muted">Diagnosing…</p>
          )}
          <h3>Proposals for {task.workflow}</h3>
          {proposals.length === 0 ? (
            <p className="muted">None.</p>
          ) : (
            <ul>
              {proposals.map((p) => (
                <li key={p.id}>
                  <code>{p.id}</code> [{p.state}] {p.title}: {p.summary}
                </li>
              ))}
            </ul>
          )}
        </section>
      )}
    </section>
  );
}

function StepActions({ clients, task, step, act }: { clients: Clients; task: Task; step: Step; act: (what: string, call: () => Promise<{ task?: Task }>) => Promise<void> }) {
  const [resolving, setResolving] = useState(false);
  const [result, setResult] = useState("{}");
  if (step.state !== StepState.ERROR) return null;
  return (
    <div className="actions">
      <button type="button" onClick={() => void act(`Retry ${step.name}`, () => clients.workflow.retryStep({ taskId: task.id, step: step.name, reason: "retried from the web UI" }))}>
        Retry
      </button>
      {resolving ? (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void act(`Resolve ${step.name}`, () => clients.workflow.resolveStep({ taskId: task.id, step: step.name, resultJson: result, reason: "resolved from the web UI" }));
            setResolving(false);
          }}
        >
          <label className="field">
            <span>Result JSON for {step.name}</span>
            <textarea value={result} onChange={(e) => setResult(e.target.value)} rows={3} />
          </label>
          <button type="submit">Resolve</button>
          <button type="button" onClick={() => setResolving(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <button type="button" onClick={() => setResolving(true)}>
          Resolve…
        </button>
      )}
    </div>
  );
}
