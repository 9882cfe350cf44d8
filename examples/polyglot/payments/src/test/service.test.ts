// The payments service as a process against a real `tasker agent -dev`:
// charges, declines, a flaky attempt retried, the journal, the drain.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Client, TaskState, stepResult } from "@tasker-run/sdk";
import { startDevAgent, type Agent } from "@tasker-run/sdk/testing";

import { unit } from "../sim.js";

/** examples/polyglot/payments. */
const pkgDir = resolve(fileURLToPath(new URL(".", import.meta.url)), "../..");
/** $TASKER_BIN relative to this package, default the repository's bin/tasker. */
const bin = resolve(pkgDir, process.env.TASKER_BIN ?? "../../../bin/tasker");

const workflow = `name: pay
version: 1.0.0
steps:
  - name: charge
    capability: payments.charge
    input:
      order_id: $.input.order_id
      token: $.input.token
      amount_cents: $.input.amount_cents
      currency: $.input.currency
      risk_score: $.input.risk_score
    result_schema:
      type: object
      required: [charge_id, status]
      properties:
        charge_id: {type: string}
        status: {enum: [captured, pending_review]}
    retry:
      max_attempts: 5
      retryable: [gateway_unavailable, timeout]
      backoff: {initial: 50ms, max: 100ms}
`;

let agent: Agent;
let dir: string;

before(async () => {
  agent = await startDevAgent({ bin });
  dir = mkdtempSync(join(tmpdir(), "payments-ts-"));
});

after(async () => {
  await agent?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("the payments service charges, declines, retries a flaky attempt, journals and drains", async () => {
  const client = new Client({ addr: agent.addr });
  await client.applyWorkflow(workflow);
  const seed = 42n;
  // An order whose first attempt fails with --flaky 0.5 and whose second does not.
  const flakyOrder = Array.from({ length: 100 }, (_, i) => `ord_f${i}`).find(
    (id) => unit(seed, "payments.charge", id, "1") < 0.5 && unit(seed, "payments.charge", id, "2") >= 0.5,
  )!;
  const [okOrder, riskyOrder] = Array.from({ length: 100 }, (_, i) => `ord_k${i}`).filter((id) => unit(seed, "payments.charge", id, "1") >= 0.5);
  const journal = join(dir, "journal.jsonl");
  const proc = spawn(
    process.execPath,
    [join(pkgDir, "dist/main.js"), "--addr", agent.addr, `--seed=${seed}`, "--flaky", "0.5", "--delay", "1ms-3ms", "--log", journal],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  proc.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((r) => proc.on("exit", (code) => r(code)));
  try {
    const run = async (input: Record<string, unknown>) => {
      const { task } = await client.startTask("pay", input);
      return client.wait(task.id, { timeoutMs: 15_000 });
    };
    const ok = await run({ order_id: okOrder, token: "tok_ok", amount_cents: 1200, currency: "EUR", risk_score: 0.1 });
    assert.equal(ok.state, TaskState.COMPLETE, stderr);
    const res = stepResult(ok, "charge") as Record<string, unknown>;
    assert.match(String(res.charge_id), /^ch_[0-9a-z]+$/);
    assert.equal(res.status, "captured");
    assert.equal(res.amount_cents, 1200);

    const risky = await run({ order_id: riskyOrder, token: "tok_ok", amount_cents: 5, currency: "USD", risk_score: 0.95 });
    assert.equal((stepResult(risky, "charge") as Record<string, unknown>).status, "pending_review");

    const flaky = await run({ order_id: flakyOrder, token: "tok_ok", amount_cents: 7, currency: "GBP", risk_score: null });
    assert.equal(flaky.state, TaskState.COMPLETE);
    assert.equal(flaky.steps[0]!.attempts, 2);

    for (const [token, amount, code] of [
      ["tok_declined", 5, "card_declined"],
      ["tok_no_funds", 5, "insufficient_funds"],
      ["tok_ok", 0, "card_declined"],
    ] as const) {
      const t = await run({ order_id: `${okOrder}-${token}-${amount}`, token, amount_cents: amount, currency: "EUR" });
      assert.equal(t.state, TaskState.ERROR);
      assert.equal(t.steps[0]!.lastError?.code, code);
      assert.equal(t.steps[0]!.attempts, 1);
    }

    const t0 = Date.now();
    proc.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r("no exit within 10s"), 10_000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, stderr);
    assert.ok(Date.now() - t0 < 3_000, `the drain took ${Date.now() - t0} ms`);

    const lines = readFileSync(journal, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 7); // ok, risky, flaky x2, three declines
    const okLine = lines.find((l) => l.task_id === ok.id)!;
    assert.deepEqual(Object.keys(okLine), ["time", "task_id", "step", "capability", "attempt", "duration_ms", "outcome", "result", "pid"]);
    assert.equal(okLine.outcome, "ok");
    assert.equal(okLine.pid, proc.pid);
    // The journal holds the bytes that were sent.
    const rawOk = readFileSync(journal, "utf8").split("\n").find((l) => l.includes(ok.id))!;
    assert.ok(rawOk.includes(`"result":${ok.steps[0]!.resultJson},`), rawOk);
    const flakyLines = lines.filter((l) => l.task_id === flaky.id).map((l) => [l.attempt, l.outcome, "result" in l, typeof l.error]);
    assert.deepEqual(flakyLines, [
      [1, "gateway_unavailable", false, "string"],
      [2, "ok", true, "undefined"],
    ]);
  } finally {
    proc.kill("SIGKILL");
  }
});
