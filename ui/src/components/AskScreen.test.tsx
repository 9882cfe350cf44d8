import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { GenerateWorkflowResponseSchema } from "@gen/tasker/v1/insight_pb.js";
import type { Clients } from "../api";
import { AskScreen } from "./AskScreen";

function ask(generateWorkflow: (req: unknown) => Promise<unknown>) {
  const onDraft = vi.fn();
  render(<AskScreen clients={{ insight: { generateWorkflow } } as unknown as Clients} onDraft={onDraft} />);
  fireEvent.change(screen.getByRole("textbox", { name: "Describe the workflow" }), { target: { value: "charge then ship" } });
  fireEvent.click(screen.getByRole("button", { name: "Draft workflow" }));
  return onDraft;
}

describe("Ask", () => {
  it("loads a dry-run draft onto the canvas", async () => {
    const gen = vi.fn(async () => create(GenerateWorkflowResponseSchema, { manifest: "name: x\n", valid: true, summary: "Two steps." }));
    const onDraft = ask(gen);
    await waitFor(() => expect(onDraft).toHaveBeenCalledWith("name: x\n"));
    expect(gen).toHaveBeenCalledWith(expect.objectContaining({ description: "charge then ship", dryRun: true }));
    expect(screen.getByText("Two steps.")).toBeTruthy();
  });
  it("hides the prompt when the agent has no model", async () => {
    ask(async () => {
      throw new ConnectError("no language model is configured: set ai_endpoint and ai_model (docs/ai.md); generation needs one", Code.FailedPrecondition);
    });
    await waitFor(() => expect(screen.queryByRole("textbox")).toBeNull());
    expect(screen.getByRole("status").textContent).toContain("no language model configured");
  });
  it("shows other errors and keeps the prompt", async () => {
    ask(async () => {
      throw new ConnectError("no agent offers a capability yet", Code.FailedPrecondition);
    });
    await waitFor(() => expect(screen.getByRole("alert").textContent).toContain("no agent offers"));
    expect(screen.getByRole("textbox")).toBeTruthy();
  });
});
