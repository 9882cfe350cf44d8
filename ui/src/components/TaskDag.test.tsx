import { create } from "@bufbuild/protobuf";
import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { StepState, TaskSchema, TaskState } from "@gen/tasker/v1/workflow_pb.js";
import { stateColours, taskFlow } from "../taskdag";
import { TaskDag } from "./TaskView";

const task = create(TaskSchema, {
  id: "t1",
  workflow: "order-fulfilment",
  state: TaskState.ERROR,
  steps: [
    { name: "validate", capability: "orders.validate", state: StepState.COMPLETE, attempts: 1, maxAttempts: 3 },
    { name: "reserve", capability: "inventory.reserve", state: StepState.IN_PROGRESS, dependsOn: ["validate"], attempts: 1, maxAttempts: 3 },
    { name: "charge", capability: "payments.charge", state: StepState.ERROR, dependsOn: ["validate"], attempts: 3, maxAttempts: 3 },
    { name: "ship", capability: "shipping.book", state: StepState.PENDING, dependsOn: ["reserve", "charge"] },
  ],
});

describe("task DAG", () => {
  it("colours each node by its step's state", () => {
    const { nodes, edges } = taskFlow(task);
    const got = Object.fromEntries(nodes.map((n) => [n.id, [n.data.state, n.style?.borderColor]]));
    expect(got).toEqual({
      validate: ["COMPLETE", stateColours.COMPLETE],
      reserve: ["IN_PROGRESS", stateColours.IN_PROGRESS],
      charge: ["ERROR", stateColours.ERROR],
      ship: ["PENDING", stateColours.PENDING],
    });
    expect(edges.map((e) => e.id).sort()).toEqual(["charge->ship", "reserve->ship", "validate->charge", "validate->reserve"]);
    // Dependencies are laid out left of their dependants.
    const x = Object.fromEntries(nodes.map((n) => [n.id, n.position.x]));
    expect(x.validate!).toBeLessThan(x.charge!);
    expect(x.charge!).toBeLessThan(x.ship!);
  });
  it("renders the nodes with their states", () => {
    render(<TaskDag task={task} />);
    for (const [name, state] of [
      ["validate", "COMPLETE"],
      ["charge", "ERROR"],
      ["ship", "PENDING"],
    ]) {
      const node = screen.getByTestId(`node-${name}`);
      expect(node.dataset.state).toBe(state);
      expect(node.className).toContain(`state-${state}`);
    }
    expect(screen.getByText("3/3", { exact: false })).toBeTruthy();
  });
});
