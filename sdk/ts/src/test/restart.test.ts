// A worker outlives its sidecar: when the agent restarts (on the same
// ports), the worker registers again and takes new steps.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, TaskState, Worker } from "../index.js";
import { eventually, memoryLogger, oneStep, startAgent } from "./harness.js";

test("the worker reconnects after the sidecar restarts", async () => {
  let agent = await startAgent();
  const log = memoryLogger();
  const w = new Worker({ addr: agent.addr, logger: log, retryMinMs: 50, retryMaxMs: 200 });
  w.handle("ts.restart", async (input: { v: number }) => ({ doubled: input.v * 2 }));
  const ctl = new AbortController();
  const running = w.run(ctl.signal);
  try {
    await eventually("the first registration", 10_000, () => log.records.some((r) => r.msg === "registered with the sidecar"));
    const ports = agent.ports;
    await agent.stop();
    agent = await startAgent(ports); // a new -dev cluster (empty) on the same ports
    await eventually("a registration after the restart", 15_000, () => log.records.filter((r) => r.msg === "registered with the sidecar").length >= 2);
    assert.ok(log.records.some((r) => r.msg === "step stream ended; registering again"));
    const client = new Client({ addr: agent.addr });
    await client.applyWorkflow(oneStep("ts-restart", "ts.restart"));
    const { task } = await client.startTask("ts-restart", { v: 21 });
    const done = await client.wait(task.id, { timeoutMs: 15_000 });
    assert.equal(done.state, TaskState.COMPLETE);
    assert.equal(done.steps[0]!.resultJson, '{"doubled":42}');
  } finally {
    ctl.abort();
    await running;
    await agent.stop();
  }
});
