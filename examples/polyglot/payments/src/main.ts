// The payments service of examples/order-fulfilment.yaml in TypeScript: a
// port of payments.charge from the Go example services
// (examples/services), on @tasker-run/sdk. Same schemas, same behaviour,
// same flags (as --name value or --name=value), same journal.
//
//   node examples/polyglot/payments/dist/main.js --addr http://127.0.0.1:7420 --flaky 0.3
//
// SIGINT or SIGTERM drains the worker: no new step starts, running steps
// finish (up to --drain) and are reported, and the process exits 0.

import { appendFileSync, existsSync, openSync, closeSync } from "node:fs";
import { performance } from "node:perf_hooks";

import {
  isLogLevel,
  jsonLogger,
  permanent,
  rawJson,
  retryable,
  stringifyJson,
  TaskerStepError,
  Worker,
  type Logger,
  type LogLevel,
  type RawJson,
  type Step,
} from "@tasker-run/sdk";

import { chargeInputSchema, chargeResultSchema } from "./schemas.js";
import { formatDelay, idFor, parseDelay, parseDuration, Rand, unit, type DelayRange } from "./sim.js";

/** The version the service registers its capability with. */
const VERSION = "1.0.0";
const CAPABILITY = "payments.charge";

/** Exit codes, as the Go services'. */
const EXIT_OK = 0;
const EXIT_FAIL = 1;
const EXIT_USAGE = 2;

interface Config {
  addr: string;
  seed: bigint;
  flaky: number;
  failWhile: string;
  delay: DelayRange;
  drainMs: number;
  logFile: string;
  concurrency: number;
  logLevel: LogLevel;
}

const usage = `Usage: node examples/polyglot/payments/dist/main.js [flags]

Runs the example payments service (capability payments.charge) as a Tasker
worker, written in TypeScript on @tasker-run/sdk.

Flags (--name value or --name=value):
  --addr URL          the sidecar; default $TASKER_ADDR, else http://127.0.0.1:7420
  --seed N            seed of the delays and flaky failures; 0 picks one (and logs it)
  --flaky P           share (0 to 1) of attempts that fail with the retryable gateway_unavailable
  --fail-while FILE   while FILE exists, every charge fails with the retryable gateway_unavailable
  --delay D|MIN-MAX   simulated work time, Go durations (default 20ms-80ms)
  --drain D           on SIGINT or SIGTERM, how long running steps get to finish (default 10s)
  --log FILE          append one JSON line per execution to FILE
  --concurrency N     at most N charges at once (default 16)
  --log-level L       debug, info, warn or error (default info)
`;

class UsageError extends Error {}

function parseFlags(args: string[]): Config | "help" {
  const cfg: Config = {
    addr: "",
    seed: 0n,
    flaky: 0,
    failWhile: "",
    delay: { minMs: 20, maxMs: 80 },
    drainMs: 10_000,
    logFile: "",
    concurrency: 16,
    logLevel: "info",
  };
  const names = new Set(["addr", "seed", "flaky", "fail-while", "delay", "drain", "log", "concurrency", "log-level"]);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "-h" || arg === "--help" || arg === "-help") {
      return "help";
    }
    const m = /^--?([a-z-]+)(?:=(.*))?$/s.exec(arg);
    if (!m) {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    }
    const name = m[1]!;
    if (!names.has(name)) {
      throw new UsageError(`unknown flag --${name}`);
    }
    let value = m[2];
    if (value === undefined) {
      if (i + 1 >= args.length) {
        throw new UsageError(`flag needs a value: --${name}`);
      }
      value = args[++i]!;
    }
    try {
      switch (name) {
        case "addr":
          cfg.addr = value;
          break;
        case "seed":
          if (!/^\d+$/.test(value) || BigInt(value) >= 1n << 64n) throw new Error("want an unsigned 64-bit integer");
          cfg.seed = BigInt(value);
          break;
        case "flaky":
          cfg.flaky = Number(value);
          if (value.trim() === "" || !Number.isFinite(cfg.flaky) || cfg.flaky < 0 || cfg.flaky > 1) {
            throw new Error("want a probability from 0 to 1");
          }
          break;
        case "fail-while":
          cfg.failWhile = value;
          break;
        case "delay":
          cfg.delay = parseDelay(value);
          break;
        case "drain":
          cfg.drainMs = parseDuration(value);
          if (cfg.drainMs <= 0) throw new Error("want a positive duration");
          break;
        case "log":
          cfg.logFile = value;
          break;
        case "concurrency":
          cfg.concurrency = Number(value);
          if (!Number.isInteger(cfg.concurrency) || cfg.concurrency < 1) throw new Error("want 1 or more");
          break;
        case "log-level":
          if (!isLogLevel(value)) throw new Error("want debug, info, warn or error");
          cfg.logLevel = value;
          break;
      }
    } catch (err) {
      throw new UsageError(`--${name} ${value}: ${(err as Error).message}`);
    }
  }
  return cfg;
}

/** Go's time.RFC3339Nano in UTC: trailing zeros of the fraction trimmed. */
function rfc3339Nano(ms: number): string {
  return new Date(ms).toISOString().replace(/\.?0+Z$/, "Z");
}

/** One line of the journal: the fields of the Go services' execution. */
interface Execution {
  time: string;
  task_id: string;
  step: string;
  capability: string;
  attempt: number;
  duration_ms: number;
  outcome: string;
  result?: RawJson;
  error?: string;
  pid: number;
}

const OUTCOME_INTERRUPTED = "interrupted";

/** Interrupted marks an execution whose step was aborted during the simulated work, before anything was done. */
class Interrupted extends Error {}

interface ChargeInput {
  order_id: string;
  token: string;
  amount_cents: number | bigint;
  currency: string;
  risk_score?: number | null;
}

/** checkInput enforces the types Go's decoder would, failing with invalid_input. */
function checkInput(v: unknown): ChargeInput {
  const bad = (why: string) => permanent("invalid_input", `decode step input: ${why}`);
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("the input is not an object");
  const o = v as Record<string, unknown>;
  for (const k of ["order_id", "token", "currency"]) {
    if (o[k] !== undefined && o[k] !== null && typeof o[k] !== "string") throw bad(`${k} is not a string`);
  }
  const amount = o.amount_cents ?? 0;
  if (!(typeof amount === "bigint" || (typeof amount === "number" && Number.isInteger(amount)))) {
    throw bad("amount_cents is not an integer");
  }
  if (typeof amount === "bigint" && (amount > 2n ** 63n - 1n || amount < -(2n ** 63n))) {
    throw bad("amount_cents overflows a 64-bit integer");
  }
  if (o.risk_score !== undefined && o.risk_score !== null && typeof o.risk_score !== "number") {
    throw bad("risk_score is not a number");
  }
  return {
    order_id: (o.order_id as string) ?? "",
    token: (o.token as string) ?? "",
    amount_cents: amount,
    currency: (o.currency as string) ?? "",
    risk_score: o.risk_score as number | null | undefined,
  };
}

class Payments {
  private readonly rand: Rand;

  constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {
    this.rand = new Rand(cfg.seed ^ 0x9e3779b97f4a7c15n);
  }

  /** The handler: decode, simulated work, business logic, journal. */
  handle = async (input: unknown, step: Step): Promise<RawJson> => {
    const began = Date.now();
    const t0 = performance.now();
    let res: RawJson | undefined;
    let err: unknown;
    try {
      res = await this.execute(input, step);
    } catch (e) {
      err = e;
    }
    this.record(step, began, performance.now() - t0, res, err);
    if (err !== undefined) throw err;
    return res!;
  };

  private workTimeMs(): number {
    const { minMs, maxMs } = this.cfg.delay;
    return maxMs <= minMs ? minMs : minMs + this.rand.next() * (maxMs - minMs);
  }

  private async execute(raw: unknown, step: Step): Promise<RawJson> {
    const input = checkInput(raw);
    await new Promise<void>((resolve, reject) => {
      if (step.signal.aborted) {
        reject(new Interrupted(`${step.capability}: interrupted before the work was done: ${String(step.signal.reason)}`));
        return;
      }
      const onAbort = () => {
        clearTimeout(t);
        reject(new Interrupted(`${step.capability}: interrupted before the work was done: ${String(step.signal.reason)}`));
      };
      const t = setTimeout(() => {
        step.signal.removeEventListener("abort", onAbort);
        resolve();
      }, this.workTimeMs());
      step.signal.addEventListener("abort", onAbort, { once: true });
    });
    return rawJson(stringifyJson(this.charge(input, step, Date.now())));
  }

  /**
   * charge captures the amount, or holds it for review when the order is
   * risky. The gateway is down while the --fail-while file exists, and
   * for a --flaky share of attempts.
   */
  private charge(input: ChargeInput, step: Step, now: number) {
    switch (input.token) {
      case "tok_declined":
        throw permanent("card_declined", "the issuer declined the card");
      case "tok_no_funds":
        throw permanent("insufficient_funds", "the card has insufficient funds");
    }
    if (input.amount_cents <= 0) {
      throw permanent("card_declined", "the amount must be positive");
    }
    if (this.cfg.failWhile !== "" && existsSync(this.cfg.failWhile)) {
      throw retryable("gateway_unavailable", `the payment gateway is down (simulated: -fail-while ${this.cfg.failWhile} exists)`);
    }
    if (this.cfg.flaky > 0 && unit(this.cfg.seed, CAPABILITY, input.order_id, String(step.attempt)) < this.cfg.flaky) {
      throw retryable("gateway_unavailable", "the payment gateway did not answer (simulated)");
    }
    const status = input.risk_score != null && input.risk_score >= 0.9 ? "pending_review" : "captured";
    return {
      charge_id: idFor("ch_", step.idempotencyKey),
      status,
      amount_cents: input.amount_cents,
      currency: input.currency,
      captured_at: rfc3339Nano(now),
    };
  }

  private record(step: Step, began: number, durMs: number, res: RawJson | undefined, err: unknown): void {
    const e: Execution = {
      time: rfc3339Nano(began),
      task_id: step.taskId,
      step: step.name,
      capability: step.capability,
      attempt: step.attempt,
      duration_ms: Math.round(durMs * 1000) / 1000,
      outcome: "ok",
      result: res,
      error: undefined,
      pid: process.pid,
    };
    const attrs = { task_id: step.taskId, step: step.name, attempt: step.attempt };
    if (err !== undefined) {
      e.outcome = err instanceof Interrupted ? OUTCOME_INTERRUPTED : TaskerStepError.is(err) ? err.code : "error";
      e.result = undefined;
      e.error = TaskerStepError.is(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
      this.log.info("step failed", { ...attrs, code: e.outcome, error: e.error });
    } else {
      this.log.debug("step done", { ...attrs, result: res?.text });
    }
    if (this.cfg.logFile !== "") {
      try {
        // The result is spliced in as the exact bytes sent to the sidecar.
        const { result, error, pid, ...head } = e;
        let line = JSON.stringify(head).slice(0, -1);
        if (result) line += `,"result":${result.text}`;
        if (error !== undefined) line += `,"error":${JSON.stringify(error)}`;
        line += `,"pid":${pid}}\n`;
        appendFileSync(this.cfg.logFile, line);
      } catch (jerr) {
        this.log.error("cannot journal an execution", { error: (jerr as Error).message });
      }
    }
  }
}

async function main(args: string[]): Promise<number> {
  let cfg: Config | "help";
  try {
    cfg = parseFlags(args);
  } catch (err) {
    process.stderr.write(`payments: ${(err as Error).message}\n${usage}`);
    return EXIT_USAGE;
  }
  if (cfg === "help") {
    process.stdout.write(usage);
    return EXIT_OK;
  }
  const log = jsonLogger({ level: cfg.logLevel });
  if (cfg.seed === 0n) {
    cfg.seed = (BigInt(Date.now()) * 1_000_000n + BigInt(Math.floor(Math.random() * 1e6))) & ((1n << 64n) - 1n);
  }
  if (cfg.logFile !== "") {
    try {
      closeSync(openSync(cfg.logFile, "a"));
    } catch (err) {
      log.error("payments service stopped", { error: `execution log: ${(err as Error).message}` });
      return EXIT_FAIL;
    }
  }
  const payments = new Payments(cfg, log);
  const worker = new Worker({ addr: cfg.addr || undefined, logger: log, drainTimeoutMs: cfg.drainMs });
  worker.handle(CAPABILITY, payments.handle, {
    concurrency: cfg.concurrency,
    inputSchema: chargeInputSchema,
    outputSchema: chargeResultSchema,
    version: VERSION,
    description: "Charges the card for an order's total",
  });

  const stop = new AbortController();
  const onSignal = (sig: string) => {
    log.info("signal received; draining", { signal: sig });
    stop.abort();
  };
  process.once("SIGINT", () => onSignal("SIGINT"));
  process.once("SIGTERM", () => onSignal("SIGTERM"));
  log.info("payments service starting", {
    capabilities: CAPABILITY,
    flaky: cfg.flaky,
    fail_while: cfg.failWhile,
    delay: formatDelay(cfg.delay),
    seed: cfg.seed.toString(),
    pid: process.pid,
    lang: "ts",
  });
  try {
    await worker.run(stop.signal);
  } catch (err) {
    log.error("payments service stopped", { error: `worker: ${(err as Error).message}` });
    return EXIT_FAIL;
  }
  log.info("payments service drained; exiting");
  return EXIT_OK;
}

process.exitCode = await main(process.argv.slice(2));
