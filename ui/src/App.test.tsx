import { create } from "@bufbuild/protobuf";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { CapabilitiesResponseSchema, MembersResponseSchema, RaftPeersResponseSchema, BreakersResponseSchema } from "@gen/tasker/v1/cluster_pb.js";
import { ApplyWorkflowResponseSchema, GetTaskResponseSchema, ListTasksResponseSchema, RetryStepResponseSchema, StepState, TaskState } from "@gen/tasker/v1/workflow_pb.js";
import { DiagnoseResponseSchema, StatusResponseSchema } from "@gen/tasker/v1/insight_pb.js";
import { ListProposalsResponseSchema } from "@gen/tasker/v1/proposal_pb.js";
import type { Clients } from "./api";
import { App } from "./App";

const failed = {
  id: "tsk_1",
  workflow: "orders",
  version: "1.0.0",
  state: TaskState.ERROR,
  steps: [
    { name: "validate", capability: "orders.validate", state: StepState.COMPLETE, attempts: 1, maxAttempts: 3, resultJson: '{"ok":true}' },
    { name: "charge", capability: "payments.charge", state: StepState.ERROR, dependsOn: ["validate"], attempts: 3, maxAttempts: 3, lastError: { code: "card_declined", message: "declined", attempt: 3 } },
  ],
};

function fakeClients() {
  const retryStep = vi.fn(async () => create(RetryStepResponseSchema, { task: { ...failed, state: TaskState.IN_PROGRESS } }));
  const clients = {
    workflow: {
      applyWorkflow: async () => create(ApplyWorkflowResponseSchema, {}),
      listTasks: async () => create(ListTasksResponseSchema, { tasks: [failed] }),
      getTask: async () => create(GetTaskResponseSchema, { task: failed }),
      watchTask: async function* () {
        return;
      },
      retryStep,
    },
    cluster: {
      capabilities: async () => create(CapabilitiesResponseSchema, { capabilities: [{ name: "payments.charge", providers: [{ agent: "a1", version: "1.0" }] }] }),
      members: async () => create(MembersResponseSchema, { members: [{ name: "a1", address: "127.0.0.1", status: "alive", role: "server" }] }),
      raftPeers: async () => create(RaftPeersResponseSchema, { leader: "a1", peers: [{ id: "a1", leader: true, voter: true }] }),
      breakers: async () => create(BreakersResponseSchema, { breakers: [{ target: "payments.charge@a1", state: "open" }] }),
    },
    insight: {
      diagnose: async () => create(DiagnoseResponseSchema, { summary: "The card was declined.", findings: [{ step: "charge", class: "permanent", summary: "declined by the issuer", confidence: 0.9 }] }),
    },
    proposal: {
      listProposals: async () => create(ListProposalsResponseSchema, { proposals: [{ id: "prp_1", state: "pending", title: "Raise the timeout", summary: "…" }] }),
    },
  };
  return { clients: clients as unknown as Clients, retryStep };
}

afterEach(() => {
  window.location.hash = "";
});

describe("App", () => {
  it("opens every screen", async () => {
    const { clients } = fakeClients();
    render(<App clients={clients} />);
    expect(await screen.findByRole("button", { name: "Add step payments.charge" })).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Ask" }));
    await screen.findByRole("textbox", { name: "Describe the workflow" });
    fireEvent.click(screen.getByRole("button", { name: "Cluster" }));
    await screen.findByText("127.0.0.1");
    await screen.findByText("payments.charge@a1");
    expect(screen.getByText(/Leader:/).textContent).toContain("a1");
    fireEvent.click(screen.getByRole("button", { name: "Settings" }));
    await screen.findByLabelText(/API token/);
    fireEvent.click(screen.getByRole("button", { name: "Watch" }));
    await screen.findByRole("button", { name: "tsk_1" });
  });

  it("shows a failed task with its diagnosis and proposals, and retries a step", async () => {
    const { clients, retryStep } = fakeClients();
    window.location.hash = "/watch/tsk_1";
    render(<App clients={clients} />);
    await screen.findByText("The card was declined.");
    expect(screen.getByText(/declined by the issuer/)).toBeTruthy();
    expect(screen.getByText(/Raise the timeout/)).toBeTruthy();
    expect(screen.getByText("card_declined: declined")).toBeTruthy();
    expect(screen.getByTestId("node-charge").dataset.state).toBe("ERROR");
    fireEvent.click(screen.getByRole("button", { name: "Retry" }));
    await waitFor(() => expect(retryStep).toHaveBeenCalledWith(expect.objectContaining({ taskId: "tsk_1", step: "charge" })));
    await waitFor(() => expect(screen.getByTestId("node-charge").dataset.state).toBe("ERROR"));
    expect(screen.getByRole("button", { name: "Cancel task" })).toBeTruthy();
  });

  it("hides Ask and Suggest next step without a model, and proposes when approvals are required (Status)", async () => {
    const { clients } = fakeClients();
    (clients.insight as unknown as { status: unknown }).status = async () => create(StatusResponseSchema, { modelConfigured: false, approvalRequired: true });
    render(<App clients={clients} />);
    expect(await screen.findByRole("button", { name: "Propose" })).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Ask" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Suggest next step" })).toBeNull();
  });
  it("offers Suggest next step with a model", async () => {
    const { clients } = fakeClients();
    (clients.insight as unknown as { status: unknown }).status = async () => create(StatusResponseSchema, { modelConfigured: true, model: "m" });
    render(<App clients={clients} />);
    expect(await screen.findByRole("button", { name: "Suggest next step" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Ask" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Save" })).toBeTruthy();
  });
});
