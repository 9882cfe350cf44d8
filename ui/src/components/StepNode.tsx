import { Handle, Position, type Node, type NodeProps } from "@xyflow/react";
import type { StepSpec } from "../manifest";

export interface StepNodeData extends Record<string, unknown> {
  step: StepSpec;
  problems?: string[];
  warnings?: string[];
  // Set on the Watch screen: the step's state, which picks the colour.
  state?: string;
  detail?: string;
}

export type StepNodeType = Node<StepNodeData, "step">;

// StepNode draws one step: its name, its capability, and either its
// problems (Build) or its state (Watch).
export function StepNode({ data, selected }: NodeProps<StepNodeType>) {
  const problems = data.problems ?? [];
  const warnings = data.warnings ?? [];
  const cls = ["step-node", data.state ? `state-${data.state}` : "", problems.length ? "has-problems" : "", selected ? "selected" : ""]
    .filter(Boolean)
    .join(" ");
  return (
    <div className={cls} data-testid={`node-${data.step.name}`} data-state={data.state ?? ""} title={[...problems, ...warnings].join("\n")}>
      <Handle type="target" position={Position.Left} />
      <div className="step-name">{data.step.name}</div>
      <div className="step-cap">{data.step.capability ?? "—"}</div>
      {data.state && <div className="step-state">{data.state.replace(/_/g, " ").toLowerCase()}{data.detail ? ` · ${data.detail}` : ""}</div>}
      {problems.length > 0 && (
        <div className="step-problems" role="note">
          {problems.length} problem{problems.length === 1 ? "" : "s"}
        </div>
      )}
      {warnings.length > 0 && problems.length === 0 && (
        <div className="step-warnings" role="note">
          {warnings.length} warning{warnings.length === 1 ? "" : "s"}
        </div>
      )}
      <Handle type="source" position={Position.Right} />
    </div>
  );
}

export const nodeTypes = { step: StepNode };
