import { StepState, type Task } from "@gen/tasker/v1/workflow_pb.js";
import { layout } from "./layout";
import type { StepNodeType } from "./components/StepNode";
import type { Edge } from "@xyflow/react";

export function stepStateName(s: StepState): string {
  return StepState[s] ?? "UNSPECIFIED";
}

// The colour of each state, for the nodes and the legend; the CSS class
// state-<NAME> uses the same colours (styles.css).
export const stateColours: Record<string, string> = {
  UNSPECIFIED: "#9aa3ad",
  PENDING: "#9aa3ad",
  ENQUEUED: "#5b8def",
  IN_PROGRESS: "#2f6fde",
  COMPLETE: "#2e9d55",
  ERROR: "#d64545",
  CANCELLED: "#7a6f62",
  RESOLVED_MANUALLY: "#b07cd8",
};

// taskFlow draws a task's steps as its DAG, each node in its state's
// colour, laid out as the Build canvas lays out the workflow.
export function taskFlow(task: Task): { nodes: StepNodeType[]; edges: Edge[] } {
  const edges: Edge[] = task.steps.flatMap((s) => s.dependsOn.map((d) => ({ id: `${d}->${s.name}`, source: d, target: s.name, animated: s.state === StepState.IN_PROGRESS })));
  const pos = layout(
    task.steps.map((s) => s.name),
    edges,
  );
  const nodes: StepNodeType[] = task.steps.map((s) => {
    const state = stepStateName(s.state);
    return {
      id: s.name,
      type: "step",
      position: pos.get(s.name) ?? { x: 0, y: 0 },
      data: { step: { name: s.name, capability: s.capability }, state, detail: s.maxAttempts ? `${s.attempts}/${s.maxAttempts}` : undefined },
      style: { borderColor: stateColours[state] },
      draggable: false,
      connectable: false,
    };
  });
  return { nodes, edges };
}
