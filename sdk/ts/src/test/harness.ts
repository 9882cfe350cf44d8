// The test harness: a real `tasker agent -dev` on free ports with a
// temporary data dir, for the SDK's tests to run against.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Client } from "../client.js";
import { jsonLogger, type Logger } from "../log.js";

/** sdk/ts, whichever directory the compiled test runs from. */
const pkgDir = resolve(fileURLToPath(new URL(".", import.meta.url)), "../..");

/** The tasker binary: $TASKER_BIN (relative to sdk/ts), default ../../bin/tasker. */
export const taskerBin = resolve(pkgDir, process.env.TASKER_BIN ?? "../../bin/tasker");

export interface Agent {
  addr: string;
  proc: ChildProcess;
  /** The agent's recent output, for failure messages. */
  tail(): string;
  stop(): Promise<void>;
}

/** The agent's ports; 0 picks a free one. */
export interface Ports {
  http: number;
  raft: number;
  rpc: number;
  gossip: number;
}

const portOf = (addr: string | undefined) => Number(/:(\d+)\/?$/.exec(addr ?? "")?.[1] ?? 0);

/**
 * Starts `tasker agent -dev` (on free ports, or on the ports of an earlier
 * start) and waits until it serves (at most 30 s).
 */
export async function startAgent(ports: Ports = { http: 0, raft: 0, rpc: 0, gossip: 0 }): Promise<Agent & { ports: Ports }> {
  const dir = mkdtempSync(join(tmpdir(), "tasker-ts-"));
  const proc = spawn(
    taskerBin,
    [
      "agent", "-dev", "-node", "ts-sdk-test", "-log-format", "json",
      "-http-port", String(ports.http), "-raft-port", String(ports.raft), "-rpc-port", String(ports.rpc), "-gossip-port", String(ports.gossip),
    ],
    { cwd: dir, env: { ...process.env, TMPDIR: dir }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let started: Record<string, string> = {};
  const lines: string[] = [];
  let exited = false;
  proc.on("exit", () => (exited = true));
  const addr = await new Promise<string>((resolveAddr, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "agent started" line within 30s:\n${lines.slice(-20).join("\n")}`)), 30_000);
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line === "") continue;
        lines.push(line);
        if (lines.length > 400) lines.shift();
        if (line.includes('"agent started"')) {
          try {
            const rec = JSON.parse(line) as Record<string, string>;
            if (rec.api) {
              started = rec;
              clearTimeout(timer);
              resolveAddr(rec.api);
            }
          } catch {
            // not JSON: keep looking
          }
        }
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${taskerBin} (build it with make build, or set TASKER_BIN): ${err.message}`));
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the agent exited (${code}) before it started:\n${lines.slice(-20).join("\n")}`));
    });
  });
  // Ready once it answers an API call (the one-server cluster has a leader).
  const c = new Client({ addr });
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      await c.service.listWorkflows({}, { timeoutMs: 2_000 });
      break;
    } catch (err) {
      if (Date.now() > until || exited) {
        proc.kill("SIGKILL");
        throw new Error(`the agent at ${addr} did not serve within 30s: ${String(err)}\n${lines.slice(-20).join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    addr,
    proc,
    ports: { http: portOf(started.api), raft: portOf(started.raft), rpc: portOf(started.rpc), gossip: portOf(started.gossip) },
    tail: () => lines.slice(-40).join("\n"),
    stop: async () => {
      if (!exited) {
        const done = new Promise<void>((r) => proc.once("exit", () => r()));
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
        await done;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
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
