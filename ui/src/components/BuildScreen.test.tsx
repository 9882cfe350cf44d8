import { create } from "@bufbuild/protobuf";
import { act, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { ReactFlowProvider } from "@xyflow/react";
import { useState } from "react";
import { describe, expect, it, vi } from "vitest";
import { ApplyWorkflowResponseSchema, type ApplyWorkflowRequest } from "@gen/tasker/v1/workflow_pb.js";
import { CapabilitiesResponseSchema } from "@gen/tasker/v1/cluster_pb.js";
import { GenerateWorkflowResponseSchema } from "@gen/tasker/v1/insight_pb.js";
import { CreateProposalResponseSchema } from "@gen/tasker/v1/proposal_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Clients } from "../api";
import { importYaml } from "../manifest";
import { canvasFromManifest, type Canvas } from "../graph";
import { BuildScreen } from "./BuildScreen";

const manifest = "name: w\nversion: 1.0.0\nsteps:\n- {name: a, capability: x.a}\n- {name: b, capability: x.b, depends_on: [a], retry: {max_attempts: 0}}\n";

function Harness({ clients, modelConfigured, approvalRequired }: { clients: Clients; modelConfigured?: boolean; approvalRequired?: boolean }) {
  const [canvas, setCanvas] = useState<Canvas>(() => canvasFromManifest(importYaml(manifest)));
  return (
    <ReactFlowProvider>
      <BuildScreen clients={clients} canvas={canvas} setCanvas={(u) => setCanvas(u)} modelConfigured={modelConfigured} approvalRequired={approvalRequired} />
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
  it("has no Suggest next step without a model", async () => {
    const clients = {
      workflow: { applyWorkflow: async () => create(ApplyWorkflowResponseSchema, {}) },
      cluster: { capabilities: async () => create(CapabilitiesResponseSchema, {}) },
    } as unknown as Clients;
    render(<Harness clients={clients} modelConfigured={false} />);
    await screen.findByTestId("node-a");
    expect(screen.queryByRole("button", { name: "Suggest next step" })).toBeNull();
    expect(screen.getByRole("button", { name: "Save" })).toBeTruthy();
  });
  it("suggests the next step and loads the draft on the canvas", async () => {
    const draft = manifest + "- {name: c, capability: x.c, depends_on: [b]}\n";
    const generateWorkflow = vi.fn(async () => create(GenerateWorkflowResponseSchema, { manifest: draft, valid: true, summary: "3 steps", explanation: "Adds c after b." }));
    const clients = {
      workflow: { applyWorkflow: async () => create(ApplyWorkflowResponseSchema, {}) },
      cluster: { capabilities: async () => create(CapabilitiesResponseSchema, {}) },
      insight: { generateWorkflow },
    } as unknown as Clients;
    render(<Harness clients={clients} modelConfigured />);
    fireEvent.change(screen.getByRole("textbox", { name: "Next step hint" }), { target: { value: "then c" } });
    fireEvent.click(screen.getByRole("button", { name: "Suggest next step" }));
    await waitFor(() => expect(screen.getByTestId("node-c")).toBeTruthy());
    expect(generateWorkflow).toHaveBeenCalledWith(expect.objectContaining({ dryRun: true, description: "then c", name: "w" }));
    expect((generateWorkflow.mock.calls[0] as unknown as [{ baseManifest: string }])[0].baseManifest).toContain("capability: x.b");
    expect(screen.getByText("Adds c after b.")).toBeTruthy();
    expect(screen.getByTestId("node-a")).toBeTruthy();
  });
  it("proposes instead of saving when approvals are required", async () => {
    const applyWorkflow = vi.fn(async (req: Partial<ApplyWorkflowRequest>) => {
      expect(req.validateOnly).toBe(true);
      return create(ApplyWorkflowResponseSchema, {});
    });
    const getWorkflow = vi.fn(async () => {
      throw new ConnectError("not found", Code.NotFound);
    });
    const createProposal = vi.fn(async () => create(CreateProposalResponseSchema, { proposal: { id: "p-7", state: "pending" } }));
    const clients = {
      workflow: { applyWorkflow, getWorkflow },
      cluster: { capabilities: async () => create(CapabilitiesResponseSchema, {}) },
      proposal: { createProposal },
    } as unknown as Clients;
    render(<Harness clients={clients} approvalRequired />);
    expect(screen.queryByRole("button", { name: "Save" })).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Propose" }));
    await waitFor(() => expect(screen.getByRole("status").textContent).toContain("Proposed as p-7 (create_workflow)"));
    expect(screen.getByRole("status").textContent).toContain("tasker ai proposals approve p-7");
    expect(createProposal).toHaveBeenCalledWith(expect.objectContaining({ action: "create_workflow", workflow: "w" }));
    expect((createProposal.mock.calls[0] as unknown as [{ manifest: string }])[0].manifest).toContain("name: w");
  });
});
