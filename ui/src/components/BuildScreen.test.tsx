import { create } from "@bufbuild/protobuf";
import { act, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { ReactFlowProvider } from "@xyflow/react";
import { useState } from "react";
import { describe, expect, it, vi } from "vitest";
import { ApplyWorkflowResponseSchema, type ApplyWorkflowRequest } from "@gen/tasker/v1/workflow_pb.js";
import { CapabilitiesResponseSchema } from "@gen/tasker/v1/cluster_pb.js";
import type { Clients } from "../api";
import { importYaml } from "../manifest";
import { canvasFromManifest, type Canvas } from "../graph";
import { BuildScreen } from "./BuildScreen";

const manifest = "name: w\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a}\n- {name: b, capability: x.b, depends_on: [a], retry: {max_attempts: 0}}\n";

function Harness({ clients }: { clients: Clients }) {
  const [canvas, setCanvas] = useState<Canvas>(() => canvasFromManifest(importYaml(manifest)));
  return (
    <ReactFlowProvider>
      <BuildScreen clients={clients} canvas={canvas} setCanvas={(u) => setCanvas(u)} />
    </ReactFlowProvider>
  );
}

describe("Build", () => {
  it("validates with a dry run and shows the problems on their nodes", async () => {
    const applyWorkflow = vi.fn(async (req: Partial<ApplyWorkflowRequest>) => {
      expect(req.validateOnly).toBe(true);
      return create(ApplyWorkflowResponseSchema, {
        problems: [
          { path: "steps[1].retry.max_attempts", message: "must be at least 1" },
          { path: "description", message: "is recommended" },
        ],
      });
    });
    const clients = {
      workflow: { applyWorkflow },
      cluster: { capabilities: async () => create(CapabilitiesResponseSchema, {}) },
    } as unknown as Clients;
    vi.useFakeTimers({ shouldAdvanceTime: true });
    render(<Harness clients={clients} />);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(600);
    });
    vi.useRealTimers();
    await waitFor(() => expect(screen.getByTestId("node-b").textContent).toContain("1 problem"));
    expect(screen.getByTestId("node-b").className).toContain("has-problems");
    expect(screen.getByTestId("node-a").className).not.toContain("has-problems");
    expect(screen.getByText(/is recommended/)).toBeTruthy();
    expect(applyWorkflow).toHaveBeenCalledTimes(1);
    expect(applyWorkflow.mock.calls[0]![0].manifest).toContain("depends_on:");
    expect((screen.getByRole("button", { name: "Save" }) as HTMLButtonElement).disabled).toBe(true);
  });
  it("adds a step from the palette with the keyboard's button", async () => {
    const clients = {
      workflow: { applyWorkflow: async () => create(ApplyWorkflowResponseSchema, {}) },
      cluster: { capabilities: async () => create(CapabilitiesResponseSchema, { capabilities: [{ name: "payments.charge", providers: [{ agent: "a1" }] }] }) },
    } as unknown as Clients;
    render(<Harness clients={clients} />);
    fireEvent.click(await screen.findByRole("button", { name: "Add step payments.charge" }));
    await waitFor(() => expect(screen.getByTestId("node-charge")).toBeTruthy());
    // The new step is selected, in the editor.
    expect((screen.getByRole("textbox", { name: "Name" }) as HTMLInputElement).value).toBe("charge");
    // Dependencies from the keyboard: b may be ticked; the manifest follows.
    fireEvent.click(screen.getByRole("checkbox", { name: "b" }));
    fireEvent.click(screen.getByRole("button", { name: "YAML" }));
    const yaml = (screen.getByRole("textbox", { name: "Manifest (YAML)" }) as HTMLTextAreaElement).value;
    expect(yaml).toContain("- name: charge\n    capability: payments.charge\n    depends_on:\n      - b\n");
  });
  it("refuses a dependency that would close a cycle", async () => {
    const clients = {
      workflow: { applyWorkflow: async () => create(ApplyWorkflowResponseSchema, {}) },
      cluster: { capabilities: async () => create(CapabilitiesResponseSchema, {}) },
    } as unknown as Clients;
    render(<Harness clients={clients} />);
    fireEvent.change(screen.getByRole("combobox", { name: "Select step" }), { target: { value: "a" } });
    // a is b's dependency: b cannot become a's.
    expect((screen.getByRole("checkbox", { name: "b" }) as HTMLInputElement).disabled).toBe(true);
  });
});
