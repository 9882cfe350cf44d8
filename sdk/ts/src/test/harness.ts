// The test harness: a real `tasker agent -dev` on free ports with a
// temporary data dir, for the SDK's tests to run against.

import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { jsonLogger, type Logger } from "../log.js";
import { startDevAgent, type Agent, type Ports } from "../testing.js";

export type { Agent, Ports };

/** sdk/ts, whichever directory the compiled test runs from. */
const pkgDir = resolve(fileURLToPath(new URL(".", import.meta.url)), "../..");

/** The tasker binary: $TASKER_BIN (relative to sdk/ts), default ../../bin/tasker. */
export const taskerBin = resolve(pkgDir, process.env.TASKER_BIN ?? "../../bin/tasker");

/** Starts bin/tasker agent -dev for the SDK's tests. */
export function startAgent(ports?: Ports): Promise<Agent> {
  return startDevAgent({ bin: taskerBin, ports });
}

/** A logger that keeps records in memory (and prints them with TASKER_TEST_LOG=1). */
export function memoryLogger(): Logger & { records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const print = process.env.TASKER_TEST_LOG === "1";
  const log = jsonLogger({
    level: "debug",
    write: (line) => {
      records.push(JSON.parse(line) as Record<string, unknown>);
      if (print) process.stderr.write(line);
    },
  });
  return Object.assign(log, { records });
}

/** Polls cond every 20 ms until it is true, failing after ms. */
export async function eventually(what: string, ms: number, cond: () => boolean | Promise<boolean>): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) {
      throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A one-step workflow manifest running capability: the step's input is
 * {v: <the task input's v>}; stepExtra is more YAML for the step, indented
 * by four spaces.
 */
export function oneStep(name: string, capability: string, stepExtra = ""): string {
  return `name: ${name}
version: 1.0.0
steps:
  - name: run
    capability: ${capability}
    input:
      v: $.input.v
${stepExtra}`;
}
