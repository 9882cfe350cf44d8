import { create } from "@bufbuild/protobuf";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { ListTasksResponseSchema, StartTaskResponseSchema, TaskState, type ListTasksRequest, type StartTaskRequest } from "@gen/tasker/v1/workflow_pb.js";
import type { Clients } from "../api";
import { StartTask, WatchScreen } from "./WatchScreen";

describe("Watch", () => {
  it("lists tasks with the workflow and state filters and opens one", async () => {
    const listTasks = vi.fn(async (req: Partial<ListTasksRequest>) =>
      create(ListTasksResponseSchema, {
        tasks: [{ id: `tsk_${req.workflow || "all"}`, workflow: req.workflow || "w", state: req.state || TaskState.COMPLETE }],
      }),
    );
    const onOpen = vi.fn();
    render(<WatchScreen clients={{ workflow: { listTasks } } as unknown as Clients} taskId="" onOpen={onOpen} />);
    await screen.findByRole("button", { name: "tsk_all" });
    fireEvent.change(screen.getByRole("textbox", { name: "Workflow" }), { target: { value: "orders" } });
    fireEvent.change(screen.getByRole("combobox", { name: "State" }), { target: { value: String(TaskState.ERROR) } });
    await waitFor(() => expect(listTasks).toHaveBeenLastCalledWith(expect.objectContaining({ workflow: "orders", state: TaskState.ERROR })));
    fireEvent.click(await screen.findByRole("button", { name: "tsk_orders" }));
    expect(onOpen).toHaveBeenCalledWith("tsk_orders");
    expect(document.querySelector(".badge.task-ERROR")?.textContent).toBe("error");
  });

  it("starts a task with a JSON input and opens it", async () => {
    const startTask = vi.fn(async (req: Partial<StartTaskRequest>) => create(StartTaskResponseSchema, { task: { id: "tsk_new", workflow: req.workflow } }));
    const onStarted = vi.fn();
    render(<StartTask clients={{ workflow: { startTask } } as unknown as Clients} onStarted={onStarted} />);
    fireEvent.change(screen.getByRole("textbox", { name: "Workflow to start" }), { target: { value: "orders" } });
    fireEvent.change(screen.getByRole("textbox", { name: "Namespace of the workflow to start" }), { target: { value: "shop" } });
    fireEvent.change(screen.getByRole("textbox", { name: "Task input JSON" }), { target: { value: "{not json" } });
    fireEvent.click(screen.getByRole("button", { name: "Start task" }));
    expect((await screen.findByRole("alert")).textContent).toMatch(/not JSON/);
    expect(startTask).not.toHaveBeenCalled();
    fireEvent.change(screen.getByRole("textbox", { name: "Task input JSON" }), { target: { value: '{"a":1}' } });
    fireEvent.click(screen.getByRole("button", { name: "Start task" }));
    await waitFor(() => expect(onStarted).toHaveBeenCalledWith("tsk_new"));
    expect(startTask).toHaveBeenCalledWith(expect.objectContaining({ workflow: "orders", namespace: "shop", version: "", inputJson: '{"a":1}' }));
  });
});
