// What a real sidecar never sends, so the agent tests cannot cover it: a
// step input that is not JSON. An in-memory WorkerService (Connect's
// router transport) stands in for the sidecar here, and only here.

import assert from "node:assert/strict";
import { test } from "node:test";

import { createRouterTransport } from "@connectrpc/connect";

import { discardLogger, Worker, WorkerService, type FailStepRequest } from "../index.js";

test("an input that is not valid JSON fails the attempt with invalid_input, permanent, without calling the handler", async () => {
  const failed: FailStepRequest[] = [];
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const transport = createRouterTransport(({ service }) => {
    service(WorkerService, {
      registerCapabilities: () => ({ workerId: "w-test" }),
      async *pollSteps() {
        yield { assignment: { taskId: "tsk_1", step: "s", capability: "ts.bad", attempt: 1, inputJson: "{not json" } };
        await held; // the stream stays open until the test ends
      },
      failStep: (req) => {
        failed.push(req);
        return {};
      },
    });
  });
  let called = false;
  const w = new Worker({ transport, logger: discardLogger });
  w.handle("ts.bad", () => {
    called = true;
    return {};
  });
  const ctl = new AbortController();
  const running = w.run(ctl.signal);
  const until = Date.now() + 5_000;
  while (failed.length === 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 10));
  }
  ctl.abort();
  release();
  await running;
  assert.equal(called, false);
  assert.equal(failed.length, 1);
  assert.equal(failed[0]!.code, "invalid_input");
  assert.equal(failed[0]!.retryable, false);
  assert.equal(failed[0]!.workerId, "w-test");
  assert.match(failed[0]!.message, /decode step input/);
});
