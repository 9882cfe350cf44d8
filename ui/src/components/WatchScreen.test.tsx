import { create } from "@bufbuild/protobuf";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { ListTasksResponseSchema, TaskState, type ListTasksRequest } from "@gen/tasker/v1/workflow_pb.js";
import type { Clients } from "../api";
import { WatchScreen } from "./WatchScreen";

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
});
