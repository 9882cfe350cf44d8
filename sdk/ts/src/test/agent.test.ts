// The SDK against a real `tasker agent -dev` (no fakes): results, errors,
// retries, concurrency, heartbeats, drain, watch and contracts.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  Client,
  Code,
  ConnectError,
  ContractError,
  permanent,
  retryable,
  stepResult,
  TaskState,
  Worker,
  type Handler,
  type HandleOptions,
  type Task,
  type WorkerOptions,
} from "../index.js";
import { eventually, memoryLogger, oneStep, startAgent, type Agent } from "./harness.js";

let agent: Agent;
let client: Client;

before(async () => {
  agent = await startAgent();
  client = new Client({ addr: agent.addr });
});

after(async () => {
  await agent?.stop();
});

const fastRetry = `    retry:
      max_attempts: 3
      backoff: {initial: 50ms, max: 100ms}
`;

/** Runs a worker with one capability in the background. */
function startWorker<In, Out>(capability: string, fn: Handler<In, Out>, opts: HandleOptions = {}, wopts: WorkerOptions = {}) {
  const log = memoryLogger();
  const worker = new Worker({ addr: agent.addr, logger: log, retryMinMs: 50, ...wopts });
  worker.handle(capability, fn, opts);
  const ctl = new AbortController();
  const done = worker.run(ctl.signal);
  return {
    worker,
    log,
    done,
    stop: async () => {
      ctl.abort();
      await done;
    },
  };
}

async function runTask(workflow: string, input: unknown): Promise<Task> {
  const { task } = await client.startTask(workflow, input);
  return client.wait(task.id, { timeoutMs: 20_000 });
}

/** The first step's last error, for assertion messages. */
function errOf(t: Task): string {
  const e = t.steps[0]?.lastError;
  return e ? `${e.code}: ${e.message}` : "no error";
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("a result round-trips: unicode, a bigint beyond 2^53, nested objects; the step carries its fields", async () => {
  await client.applyWorkflow(oneStep("ts-roundtrip", "ts.roundtrip", fastRetry));
  const seen: Array<{ input: unknown; step: Record<string, unknown> }> = [];
  const w = startWorker("ts.roundtrip", async (input: { v: { big: bigint; small: number; s: string } }, step) => {
    seen.push({
      input,
      step: {
        taskId: step.taskId,
        name: step.name,
        capability: step.capability,
        attempt: step.attempt,
        key: step.idempotencyKey,
        workflow: step.workflow,
        version: step.workflowVersion,
        deadline: step.deadline,
        raw: step.rawInput,
        aborted: step.signal.aborted,
      },
    });
    return { echo: input.v, text: "héllo ✓ 🚀 \u2028 \"q\" \\", big: 9007199254740993n, nested: { a: [1, { b: null }], f: 1.5, t: true } };
  });
  try {
    const input = { v: { big: 9007199254740993n, small: 7, s: "ünïcødé 🚀" } };
    const task = await runTask("ts-roundtrip", input);
    assert.equal(task.state, TaskState.COMPLETE, errOf(task));
    const raw = task.steps[0]!.resultJson;
    assert.match(raw, /"big":9007199254740993[,}]/);
    assert.deepEqual(stepResult(task, "run"), {
      echo: { big: 9007199254740993n, small: 7, s: "ünïcødé 🚀" },
      text: "héllo ✓ 🚀 \u2028 \"q\" \\",
      big: 9007199254740993n,
      nested: { a: [1, { b: null }], f: 1.5, t: true },
    });
    assert.equal(seen.length, 1);
    const { input: got, step } = seen[0]!;
    assert.equal(typeof (got as { v: { big: unknown } }).v.big, "bigint");
    assert.equal(typeof (got as { v: { small: unknown } }).v.small, "number");
    assert.equal(step.taskId, task.id);
    assert.equal(step.name, "run");
    assert.equal(step.capability, "ts.roundtrip");
    assert.equal(step.attempt, 1);
    assert.ok(step.key, "idempotency key");
    assert.equal(step.workflow, "ts-roundtrip");
    assert.equal(step.version, "1.0.0");
    assert.ok(step.deadline instanceof Date && step.deadline.getTime() > Date.now() - 60_000);
    assert.match(step.raw as string, /9007199254740993/);
    assert.equal(step.aborted, false);
  } finally {
    await w.stop();
  }
});

test("a permanent error fails the task with its code and is not retried", async () => {
  await client.applyWorkflow(oneStep("ts-permanent", "ts.permanent", fastRetry));
  let calls = 0;
  const w = startWorker("ts.permanent", async () => {
    calls++;
    throw permanent("card_declined", "the issuer declined the card", { details: { issuer: "x" } });
  });
  try {
    const task = await runTask("ts-permanent", { v: 1 });
    assert.equal(task.state, TaskState.ERROR);
    const s = task.steps[0]!;
    assert.equal(s.lastError?.code, "card_declined");
    assert.equal(s.lastError?.message, "the issuer declined the card");
    assert.equal(s.lastError?.retryable, false);
    assert.equal(s.attempts, 1);
    assert.equal(calls, 1);
  } finally {
    await w.stop();
  }
});

test("retryable errors and plain thrown errors are retried", async () => {
  await client.applyWorkflow(oneStep("ts-retry", "ts.retry", fastRetry));
  const attempts: number[] = [];
  const w = startWorker("ts.retry", async (_in, step) => {
    attempts.push(step.attempt);
    if (step.attempt === 1) throw new Error("plain failure"); // code "error", retryable
    if (step.attempt === 2) throw retryable("gateway_unavailable", "try again", { retryAfterMs: 50 });
    return { ok: step.attempt };
  });
  try {
    const task = await runTask("ts-retry", { v: 1 });
    assert.equal(task.state, TaskState.COMPLETE, errOf(task));
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.equal(task.steps[0]!.attempts, 3);
    assert.deepEqual(stepResult(task, "run"), { ok: 3 });
    await eventually("two failures logged", 5_000, () => w.log.records.filter((r) => r.msg === "step failed").length >= 2);
    const failed = w.log.records.filter((r) => r.msg === "step failed").map((r) => [r.code, r.retryable, r.will_retry]);
    assert.deepEqual(failed, [
      ["error", true, true],
      ["gateway_unavailable", true, true],
    ]);
  } finally {
    await w.stop();
  }
});

test("the concurrency limit is respected", async () => {
  await client.applyWorkflow(oneStep("ts-concurrency", "ts.concurrency", fastRetry));
  let now = 0;
  let peak = 0;
  const w = startWorker(
    "ts.concurrency",
    async () => {
      now++;
      peak = Math.max(peak, now);
      await sleep(250);
      now--;
      return {};
    },
    { concurrency: 2 },
  );
  try {
    const tasks = await Promise.all(Array.from({ length: 6 }, (_, i) => runTask("ts-concurrency", { v: i })));
    for (const t of tasks) assert.equal(t.state, TaskState.COMPLETE);
    assert.equal(peak, 2, `peak concurrency ${peak}, want 2`);
  } finally {
    await w.stop();
  }
});

test("heartbeats keep a step past its original timeout", async () => {
  await client.applyWorkflow(oneStep("ts-heartbeat", "ts.heartbeat", "    timeout: 1s\n" + fastRetry));
  let first: number | undefined;
  let last: number | undefined;
  let aborted = false;
  const w = startWorker("ts.heartbeat", async (_in, step) => {
    first = step.deadline?.getTime();
    await sleep(2_500);
    last = step.deadline?.getTime();
    aborted = step.signal.aborted;
    return { slept: 2500 };
  });
  try {
    const task = await runTask("ts-heartbeat", { v: 1 });
    assert.equal(task.state, TaskState.COMPLETE, errOf(task));
    assert.equal(task.steps[0]!.attempts, 1);
    assert.equal(aborted, false);
    assert.ok(first !== undefined && last !== undefined && last - first >= 1_500, `deadline moved from ${first} to ${last}`);
    assert.ok(w.log.records.some((r) => r.msg === "lease extended"));
  } finally {
    await w.stop();
  }
});

test("drain lets a running step finish and report before run() resolves", async () => {
  await client.applyWorkflow(oneStep("ts-drain", "ts.drain", fastRetry));
  let started = false;
  let finishedAt = 0;
  const w = startWorker("ts.drain", async () => {
    started = true;
    await sleep(800);
    finishedAt = Date.now();
    return { drained: true };
  });
  const { task } = await client.startTask("ts-drain", { v: 1 });
  await eventually("the step starts", 10_000, () => started);
  w.worker.stop();
  await w.done;
  const resolvedAt = Date.now();
  assert.ok(finishedAt > 0 && resolvedAt >= finishedAt, "run() resolved before the step finished");
  const done = await client.wait(task.id, { timeoutMs: 10_000 });
  assert.equal(done.state, TaskState.COMPLETE);
  assert.equal(done.steps[0]!.attempts, 1);
  assert.deepEqual(stepResult(done, "run"), { drained: true });
  assert.ok(w.log.records.some((r) => r.msg === "worker drained"));
});

test("a step aborted by the drain timeout is not reported; the sidecar hands it to the next worker", async () => {
  await client.applyWorkflow(oneStep("ts-drain-timeout", "ts.draintimeout", fastRetry));
  let reason: unknown;
  let started = false;
  const w1 = startWorker(
    "ts.draintimeout",
    async (_in, step) => {
      started = true;
      await new Promise((_, reject) => step.signal.addEventListener("abort", () => reject((reason = step.signal.reason))));
      return {};
    },
    {},
    { drainTimeoutMs: 200 },
  );
  const { task } = await client.startTask("ts-drain-timeout", { v: 1 });
  await eventually("the step starts", 10_000, () => started);
  await w1.stop();
  assert.equal((reason as Error)?.name, "DrainTimeoutError");
  assert.ok(w1.log.records.some((r) => typeof r.msg === "string" && r.msg.includes("not reported")));
  const w2 = startWorker("ts.draintimeout", async (_in, step) => ({ attempt: step.attempt }));
  try {
    const done = await client.wait(task.id, { timeoutMs: 20_000 });
    assert.equal(done.state, TaskState.COMPLETE, errOf(done));
    assert.equal(done.steps[0]!.lastError, undefined);
  } finally {
    await w2.stop();
  }
});

test("watchTask yields the task, then its events until it ends", async () => {
  await client.applyWorkflow(oneStep("ts-watch", "ts.watch", fastRetry));
  const w = startWorker("ts.watch", async () => {
    await sleep(200);
    return { watched: true };
  });
  try {
    const { task } = await client.startTask("ts-watch", { v: 1 });
    const types: string[] = [];
    let first = true;
    let last: Task | undefined;
    for await (const msg of client.watchTask(task.id, { signal: AbortSignal.timeout(15_000) })) {
      if (first) {
        assert.equal(msg.event, undefined, "the first message carries no event");
        assert.equal(msg.task.id, task.id);
        first = false;
      } else {
        types.push(msg.event!.type);
      }
      last = msg.task;
    }
    assert.equal(last?.state, TaskState.COMPLETE);
    assert.ok(types.includes("step.completed"), types.join(","));
  } finally {
    await w.stop();
  }
});

test("a result that breaks result_schema is reported as contract_violation", async () => {
  await client.applyWorkflow(
    oneStep(
      "ts-contract",
      "ts.contract",
      `    result_schema:
      type: object
      required: [charge_id]
      properties:
        charge_id: {type: string}
` + fastRetry,
    ),
  );
  const w = startWorker("ts.contract", async () => ({ charge: 5 }));
  try {
    const task = await runTask("ts-contract", { v: 1 });
    assert.equal(task.state, TaskState.ERROR);
    assert.equal(task.steps[0]!.lastError?.code, "contract_violation");
    assert.equal(task.steps[0]!.attempts, 1);
    // The task's state can reach the client before CompleteStep's answer reaches the worker.
    const isRejection = (r: Record<string, unknown>) => typeof r.msg === "string" && r.msg.startsWith("step result REJECTED");
    await eventually("the worker logs the rejection", 5_000, () => w.log.records.some(isRejection));
    const rejected = w.log.records.find(isRejection)!;
    assert.ok(Array.isArray(rejected.violations) && rejected.violations.length > 0, JSON.stringify(rejected));
  } finally {
    await w.stop();
  }
});

test("a result that cannot be encoded as JSON fails with invalid_result, not retried", async () => {
  await client.applyWorkflow(oneStep("ts-invalid-result", "ts.invalidresult", fastRetry));
  const w = startWorker("ts.invalidresult", async () => ({ x: NaN }));
  try {
    const task = await runTask("ts-invalid-result", { v: 1 });
    assert.equal(task.state, TaskState.ERROR);
    assert.equal(task.steps[0]!.lastError?.code, "invalid_result");
    assert.equal(task.steps[0]!.attempts, 1);
  } finally {
    await w.stop();
  }
});

test("startTask with an input that breaks input_schema throws a ContractError with violations", async () => {
  await client.applyWorkflow(`name: ts-input-contract
version: 1.0.0
input_schema:
  type: object
  required: [v]
  properties:
    v: {type: integer}
steps:
  - name: run
    capability: ts.nobody
    input:
      v: $.input.v
`);
  await assert.rejects(client.startTask("ts-input-contract", { v: "not a number" }), (err: unknown) => {
    assert.ok(err instanceof ContractError, String(err));
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.ok(err.violations.some((v) => v.pointer === "/v"), JSON.stringify(err.violations));
    return true;
  });
  await assert.rejects(client.getTask("tsk_does_not_exist"), (err: unknown) => {
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.NotFound);
    return true;
  });
});

test("a registration the sidecar refuses for good rejects run()", async () => {
  const w = new Worker({ addr: agent.addr, logger: memoryLogger() });
  w.handle("ts.refused", async () => ({}), { inputSchema: { type: 5 } });
  const timeout = new AbortController();
  await assert.rejects(
    Promise.race([
      w.run(),
      new Promise((_, reject) => {
        const t = setTimeout(() => reject(new Error("run() still running after 10s")), 10_000);
        timeout.signal.addEventListener("abort", () => clearTimeout(t));
      }),
    ]),
    (err: unknown) => {
      assert.ok(err instanceof ConnectError, String(err));
      assert.equal(err.code, Code.InvalidArgument);
      return true;
    },
  );
  timeout.abort();
});

test("a script that used the client and a worker exits on its own (no HTTP/2 session left referenced)", async () => {
  await client.applyWorkflow(oneStep("ts-exit", "ts.exit", fastRetry));
  const { spawn } = await import("node:child_process");
  const index = new URL("../index.js", import.meta.url).href;
  const script = `
    import { Client, Worker, discardLogger } from ${JSON.stringify(index)};
    const addr = process.argv[1];
    const w = new Worker({ addr, logger: discardLogger });
    w.handle("ts.exit", async () => ({ ok: true }));
    const stop = new AbortController();
    const running = w.run(stop.signal);
    const c = new Client({ addr });
    const { task } = await c.startTask("ts-exit", { v: 1 });
    const done = await c.wait(task.id, { timeoutMs: 10000 });
    for await (const m of c.watchTask(task.id)) { break; }
    stop.abort();
    await running;
    console.log(done.state);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script, agent.addr], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | string>((resolve) => {
    const t = setTimeout(() => {
      child.kill("SIGKILL");
      resolve("still running after 15s");
    }, 15_000);
    child.on("exit", (c) => {
      clearTimeout(t);
      resolve(c ?? -1);
    });
  });
  assert.equal(code, 0, `the script did not exit by itself (output: ${out})`);
  assert.equal(out.trim(), String(TaskState.COMPLETE));
});

test("a worker keeps retrying while the sidecar is unreachable, and stops when asked", async () => {
  const log = memoryLogger();
  const w = new Worker({ addr: "http://127.0.0.1:1", logger: log, retryMinMs: 20, retryMaxMs: 50 });
  w.handle("ts.unreachable", async () => ({}));
  const ctl = new AbortController();
  const running = w.run(ctl.signal);
  await eventually("two failed registrations", 5_000, () => log.records.filter((r) => r.msg === "cannot register with the sidecar; retrying").length >= 2);
  ctl.abort();
  const t0 = Date.now();
  await running;
  assert.ok(Date.now() - t0 < 1_000, "run() took too long to stop");
});

test("200 steps at concurrency 32: all complete, no process warnings (listener leaks)", async () => {
  await client.applyWorkflow(oneStep("ts-load", "ts.load", fastRetry));
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on("warning", onWarning);
  const w = startWorker(
    "ts.load",
    async (input: { v: number }) => {
      await sleep(5);
      return { v: input.v };
    },
    { concurrency: 32 },
  );
  try {
    const t0 = Date.now();
    const tasks = await Promise.all(Array.from({ length: 200 }, (_, i) => runTask("ts-load", { v: i })));
    const ms = Date.now() - t0;
    tasks.forEach((t, i) => {
      assert.equal(t.state, TaskState.COMPLETE, errOf(t));
      assert.deepEqual(stepResult(t, "run"), { v: i });
    });
    assert.deepEqual(warnings, []);
    console.log(`200 one-step tasks in ${ms} ms`);
  } finally {
    process.off("warning", onWarning);
    await w.stop();
  }
});
