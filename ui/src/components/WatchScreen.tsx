import { useCallback, useEffect, useState } from "react";
import { ConnectError } from "@connectrpc/connect";
import { TaskState, type Task } from "@gen/tasker/v1/workflow_pb.js";
import type { Clients } from "../api";
import { when } from "../format";
import { TaskView } from "./TaskView";

const states = [TaskState.PENDING, TaskState.IN_PROGRESS, TaskState.COMPLETE, TaskState.ERROR, TaskState.CANCELLED, TaskState.RESOLVED_MANUALLY];

export function taskStateName(s: TaskState): string {
  return (TaskState[s] ?? "UNSPECIFIED").replace(/_/g, " ").toLowerCase();
}

interface Props {
  clients: Clients;
  taskId: string;
  onOpen: (id: string) => void;
}

// WatchScreen lists tasks, filtered by workflow and state, and opens one.
export function WatchScreen({ clients, taskId, onOpen }: Props) {
  const [workflow, setWorkflow] = useState("");
  const [state, setState] = useState<TaskState>(TaskState.UNSPECIFIED);
  const [tasks, setTasks] = useState<Task[]>([]);
  const [next, setNext] = useState("");
  const [error, setError] = useState("");

  const load = useCallback(
    async (pageToken = "") => {
      try {
        const r = await clients.workflow.listTasks({ workflow, state, pageSize: 50, pageToken });
        setTasks((prev) => (pageToken ? [...prev, ...r.tasks] : r.tasks));
        setNext(r.nextPageToken);
        setError("");
      } catch (e) {
        setError(ConnectError.from(e).rawMessage);
      }
    },
    [clients, workflow, state],
  );
  const [auto, setAuto] = useState(true);
  useEffect(() => {
    void load();
  }, [load]);
  // Refresh the first page every few seconds while the list is shown; a
  // list paged further stays as it is, so reading it is not disturbed.
  const paged = tasks.length > 50;
  useEffect(() => {
    if (!auto || taskId || paged) return;
    const t = setInterval(() => void load(), 5000);
    return () => clearInterval(t);
  }, [auto, taskId, paged, load]);

  if (taskId) return <TaskView clients={clients} id={taskId} onBack={() => onOpen("")} />;
  return (
    <section className="watch">
      <StartTask clients={clients} onStarted={onOpen} />
      <h2>Tasks</h2>
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          void load();
        }}
      >
        <label className="field inline">
          <span>Workflow</span>
          <input value={workflow} onChange={(e) => setWorkflow(e.target.value)} />
        </label>
        <label className="field inline">
          <span>State</span>
          <select value={state} onChange={(e) => setState(Number(e.target.value) as TaskState)}>
            <option value={TaskState.UNSPECIFIED}>any</option>
            {states.map((s) => (
              <option key={s} value={s}>
                {taskStateName(s)}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Refresh</button>
        <label className="check">
          <input type="checkbox" checked={auto} onChange={(e) => setAuto(e.target.checked)} /> Refresh every 5 s
        </label>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
      <table>
        <thead>
          <tr>
            <th>Task</th>
            <th>Workflow</th>
            <th>State</th>
            <th>Created</th>
            <th>Ended</th>
          </tr>
        </thead>
        <tbody>
          {tasks.map((t) => (
            <tr key={t.id}>
              <td>
                <button type="button" className="link" onClick={() => onOpen(t.id)}>
                  {t.id}
                </button>
              </td>
              <td>
                {t.namespace ? `${t.namespace}/` : ""}
                {t.workflow} {t.version}
              </td>
              <td>
                <span className={`badge task-${TaskState[t.state]}`}>{taskStateName(t.state)}</span>
              </td>
              <td>{when(t.createdAt)}</td>
              <td>{when(t.endedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {tasks.length === 0 && !error && <p className="muted">No tasks.</p>}
      {next && (
        <button type="button" onClick={() => void load(next)}>
          More
        </button>
      )}
    </section>
  );
}

// StartTask starts a task of a stored workflow with a JSON input
// (StartTask) and opens it.
export function StartTask({ clients, onStarted }: { clients: Clients; onStarted: (id: string) => void }) {
  const [workflow, setWorkflow] = useState("");
  const [namespace, setNamespace] = useState("");
  const [version, setVersion] = useState("");
  const [input, setInput] = useState("{}");
  const [error, setError] = useState("");
  return (
    <details className="start-task">
      <summary>Start a task</summary>
      <form
        aria-label="Start a task"
        onSubmit={(e) => {
          e.preventDefault();
          try {
            JSON.parse(input);
          } catch (err) {
            setError(`Input is not JSON: ${err instanceof Error ? err.message : String(err)}`);
            return;
          }
          setError("");
          clients.workflow
            .startTask({ workflow, namespace, version, inputJson: input })
            .then((r) => r.task && onStarted(r.task.id))
            .catch((err: unknown) => setError(ConnectError.from(err).rawMessage));
        }}
      >
        <div className="row">
          <label className="field inline">
            <span>Workflow</span>
            <input value={workflow} onChange={(e) => setWorkflow(e.target.value)} aria-label="Workflow to start" required />
          </label>
          <label className="field inline">
            <span>Namespace</span>
            <input value={namespace} onChange={(e) => setNamespace(e.target.value)} aria-label="Namespace of the workflow to start" />
          </label>
          <label className="field inline">
            <span>Version</span>
            <input value={version} onChange={(e) => setVersion(e.target.value)} placeholder="latest" aria-label="Version to start" />
          </label>
        </div>
        <label className="field">
          <span>Input (JSON)</span>
          <textarea value={input} onChange={(e) => setInput(e.target.value)} rows={4} spellCheck={false} aria-label="Task input JSON" />
        </label>
        <button type="submit" className="primary" disabled={!workflow}>
          Start task
        </button>
        {error && (
          <span role="alert" className="error">
            {error}
          </span>
        )}
      </form>
    </details>
  );
}
