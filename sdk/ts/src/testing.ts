// Testing helpers: run a real `tasker agent -dev` (a one-server cluster in
// one process, on free ports, with a temporary data dir) for tests of an
// app's workers and clients. Import from "@tasker-run/sdk/testing".

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Client } from "./client.js";

/** A running dev agent. */
export interface Agent {
  addr: string;
  proc: ChildProcess;
  /** The agent's recent output, for failure messages. */
  tail(): string;
  /** SIGTERM, then SIGKILL after 10 s; removes its directory. */
  stop(): Promise<void>;
  /** The ports it listens on, to start it again on the same ones. */
  ports: Ports;
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
 * start) and waits until it serves (at most 30 s). The binary is opts.bin,
 * else $TASKER_BIN, else `tasker` on the PATH.
 */
export async function startDevAgent(
  opts: { bin?: string; ports?: Ports } = {},
): Promise<Agent> {
  const taskerBin = opts.bin ?? process.env.TASKER_BIN ?? "tasker";
  const ports = opts.ports ?? { http: 0, raft: 0, rpc: 0, gossip: 0 };
  const dir = mkdtempSync(join(tmpdir(), "tasker-ts-"));
  const proc = spawn(
    taskerBin,
    [
      "agent", "-dev", "-node", "dev", "-log-format", "json",
      "-http-port", String(ports.http), "-raft-port", String(ports.raft), "-rpc-port", String(ports.rpc), "-gossip-port", String(ports.gossip),
    ],
    { cwd: dir, env: { ...process.env, TMPDIR: dir }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let started: Record<string, string> = {};
  const lines: string[] = [];
  let exited = false;
  proc.on("exit", () => (exited = true));
  const addr = await new Promise<string>((resolveAddr, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`no "agent started" line within 30s:\n${lines.slice(-20).join("\n")}`));
    }, 30_000);
    // Lines can arrive split across chunks: keep each stream's partial line.
    const partial = { out: "", err: "" };
    const onData = (which: "out" | "err") => (chunk: Buffer) => {
      const parts = (partial[which] + chunk.toString("utf8")).split("\n");
      partial[which] = parts.pop() ?? "";
      for (const line of parts) {
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
    proc.stdout!.on("data", onData("out"));
    proc.stderr!.on("data", onData("err"));
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

